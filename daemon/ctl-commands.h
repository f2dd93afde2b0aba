/* SPDX-License-Identifier: MIT */
/*
 * ccsyncctl's commands: each one parses its own options, sends one or a few requests through
 * ctl-client, and prints the answer as a table, as text or (--json) as JSON. The table of verbs
 * doubles as the source of every --help text.
 */
#pragma once

#include <stddef.h>

#include "ctl-client.h"

struct ctl_verb {
	const char *group;	/* "connection", "export", or NULL for a top-level command */
	const char *name;
	int (*run)(struct ctl *ctl, int argc, char **argv); /* argv[0] is the verb */
	const char *synopsis;	/* arguments after the command words */
	const char *help;	/* what it does, its options */
	const char *summary;	/* one line for the command list of ccsyncctl --help */
};

extern const struct ctl_verb ctl_verbs[];
extern const size_t ctl_n_verbs;

/* The verb group/name (group NULL for top-level commands), or NULL. */
const struct ctl_verb *ctl_find_verb(const char *group, const char *name);

/* Prints the --help text of a verb. */
void ctl_verb_help(const struct ctl_verb *v);
