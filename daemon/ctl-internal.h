/* SPDX-License-Identifier: MIT */
/*
 * Between the table of verbs and the command-line helpers (ctl-commands.c) and the commands
 * themselves (ctl-commands.c and one ctl-<domain>.c per group of commands). Nothing outside
 * daemon/ctl-*.c includes this.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl-client.h"
#include "ctl-output.h"
#include "util.h"

/* ---- reading replies ---- */

static inline const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static inline int64_t jint(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static inline const char *count(int64_t n, char *buf, size_t len)
{
	return ctl_format_count(n, buf, len);
}

/* ---- the command line (ctl-commands.c) ---- */

#define OOM() ctl_fail(CTLPROTO_EXIT_FAILED, "out of memory")

/* Runs getopt_long over a verb's argv; positional arguments end up in argv[optind..]. */
#define FOR_EACH_OPTION(argc, argv, shortopts, longopts, c)                                       \
	for (optind = 0, opterr = 0;                                                               \
	     ((c) = getopt_long(argc, argv, shortopts, longopts, NULL)) >= 0;)

/* Prints "ccsyncctl: message" and the verb's --help hint on stderr; returns the usage status. */
_printf_(3, 4) int ctl_usage(const char *group, const char *name, const char *fmt, ...);
/* The option getopt stopped at (argv[optind - 1]) as unknown or incomplete: ctl_usage. */
int ctl_bad_option(const char *group, const char *name, char **argv);

/* Parses a whole decimal number in [min, max]. */
bool ctl_parse_int(const char *s, int64_t min, int64_t max, int64_t *ret);
/* o[key] = value as a JSON string: 0 or -ENOMEM. */
int ctl_set_str(json_t *o, const char *key, const char *value);

/* ---- calls and their output (ctl-commands.c) ---- */

/* Prints the result with --json, then frees it; returns 0. */
int ctl_print_result(struct ctl *ctl, json_t *result);
/* Prints the table, or the line `empty` when it has no rows, and frees it. */
void ctl_print_table(struct ctl_table *t, const char *empty);

/* Verbs without arguments or options: sends command, its result in *ret. */
int ctl_no_args_call(struct ctl *ctl, int argc, char **argv, const char *verb,
		     const char *command, json_t **ret);
/* GROUP list [--names]: names only, or render_table (without --json), or the JSON. */
int ctl_list_names(struct ctl *ctl, const char *command, const char *group, int argc,
		   char **argv, void (*render_table)(json_t *));
/*
 * Verbs whose only argument is one NAME, sent as key, and that take at most one option: --OPTION
 * VALUE, sent under the option's own name (option NULL: none).
 */
int ctl_one_name_with(struct ctl *ctl, int argc, char **argv, const char *group,
		      const char *verb, const char *command, const char *key, const char *option,
		      ctl_progress_fn progress, json_t **ret);
int ctl_one_name(struct ctl *ctl, int argc, char **argv, const char *group, const char *verb,
		 const char *command, const char *key, json_t **ret);
/*
 * The paged listings (runs, audit): --limit N and --before ID, and at most one argument, sent as
 * key and called metavar in the usage error (key NULL: none). Sends the command named verb.
 */
int ctl_paged_call(struct ctl *ctl, int argc, char **argv, const char *verb, const char *key,
		   const char *metavar, json_t **ret);
/* "More: ccsyncctl VERB --before ID" when the reply says there is another page. */
void ctl_print_more(json_t *res, const char *verb);

/* ---- the commands, in the table of verbs (ctl-commands.c) ---- */

int ctl_cmd_status(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_whoami(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_audit(struct ctl *ctl, int argc, char **argv);

int ctl_cmd_connection_add(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_connection_list(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_connection_show(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_connection_edit(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_connection_remove(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_connection_consent(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_connection_authorize(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_lists(struct ctl *ctl, int argc, char **argv);

int ctl_cmd_export_add(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_export_list(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_export_show(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_export_edit(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_export_remove(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_export_enable(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_export_disable(struct ctl *ctl, int argc, char **argv);

int ctl_cmd_run(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_cancel(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_refresh_done(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_runs(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_run_show(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_rejected(struct ctl *ctl, int argc, char **argv);
int ctl_cmd_segments(struct ctl *ctl, int argc, char **argv);

int ctl_cmd_import(struct ctl *ctl, int argc, char **argv);
