/* SPDX-License-Identifier: MIT */
/*
 * The commands of ccsyncctl. Each builds the request's arguments from the command line, lets the
 * daemon do the work and the checking, and renders the reply. Local checks are limited to the
 * shape of the command line (missing NAME, a number that is not a number): everything about the
 * meaning of a value is the daemon's to judge, so a second client gets the same answers.
 *
 * This file holds what the commands share (ctl-internal.h), the few commands about the daemon
 * itself (status, whoami, audit) and the table of verbs; the rest live in one ctl-<domain>.c per
 * group of commands.
 */
#include "ctl-commands.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctl-internal.h"
#include "ctl-output.h"
#include "util.h"

const struct ctl_verb *ctl_find_verb(const char *group, const char *name)
{
	for (size_t i = 0; i < ctl_n_verbs; i++)
		if (streq_ptr(ctl_verbs[i].group, group) && streq(ctl_verbs[i].name, name))
			return &ctl_verbs[i];
	return NULL;
}

void ctl_verb_help(const struct ctl_verb *v)
{
	printf("Usage: ccsyncctl [--socket=PATH] [--json] %s%s%s %s\n\n%s",
	       v->group ? v->group : "", v->group ? " " : "", v->name, v->synopsis, v->help);
}

_printf_(3, 4) int ctl_usage(const char *group, const char *name, const char *fmt, ...)
{
	va_list ap;

	fputs("ccsyncctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'ccsyncctl %s%s%s --help'.\n", group ? group : "", group ? " " : "",
		name);
	return CTLPROTO_EXIT_USAGE;
}

bool ctl_parse_int(const char *s, int64_t min, int64_t max, int64_t *ret)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return false;
	*ret = v;
	return true;
}

int ctl_set_str(json_t *o, const char *key, const char *value)
{
	return json_object_set_new(o, key, json_string(value)) < 0 ? -ENOMEM : 0;
}

int ctl_bad_option(const char *group, const char *name, char **argv)
{
	return ctl_usage(group, name, "unknown or incomplete option \"%s\"", argv[optind - 1]);
}

int ctl_print_result(struct ctl *ctl, json_t *result)
{
	if (ctl->json)
		ctl_print_json(result);
	json_decref(result);
	return 0;
}

int ctl_no_args_call(struct ctl *ctl, int argc, char **argv, const char *verb,
		     const char *command, json_t **ret)
{
	int c;

	FOR_EACH_OPTION(argc, argv, "", (const struct option[]){ {} }, c)
		return ctl_bad_option(NULL, verb, argv);
	if (optind != argc)
		return ctl_usage(NULL, verb, "unexpected argument \"%s\"", argv[optind]);
	return ctl_call(ctl, command, NULL, NULL, NULL, ret);
}

void ctl_print_table(struct ctl_table *t, const char *empty)
{
	if (t->nrows == 0)
		printf("%s\n", empty);
	else
		ctl_table_print(t, stdout);
	ctl_table_done(t);
}

int ctl_list_names(struct ctl *ctl, const char *command, const char *group, int argc,
		   char **argv, void (*render_table)(json_t *))
{
	static const struct option opts[] = {
		{ "names", no_argument, NULL, 'n' },
		{},
	};
	bool names = false;
	json_t *res = NULL, *e;
	size_t i;
	int c, r;

	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		if (c != 'n')
			return ctl_bad_option(group, "list", argv);
		names = true;
	}
	if (optind != argc)
		return ctl_usage(group, "list", "unexpected argument \"%s\"", argv[optind]);
	r = ctl_call(ctl, command, NULL, NULL, NULL, &res);
	if (r != 0)
		return r;
	if (names) {
		/* For shell completion: names only, whatever --json says. */
		json_array_foreach(res, i, e)
			printf("%s\n", jstr(e, "name"));
	} else if (!ctl->json) {
		render_table(res);
	}
	if (names) {
		json_decref(res);
		return 0;
	}
	return ctl_print_result(ctl, res);
}

int ctl_one_name_with(struct ctl *ctl, int argc, char **argv, const char *group,
		      const char *verb, const char *command, const char *key, const char *option,
		      ctl_progress_fn progress, json_t **ret)
{
	const struct option opts[] = {
		{ option, required_argument, NULL, 'o' },
		{},
	};
	const char *value = NULL;
	json_t *args;
	int c;

	/* Without an option, its entry has no name and ends the table at once. */
	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		if (c != 'o')
			return ctl_bad_option(group, verb, argv);
		value = optarg;
	}
	if (optind + 1 != argc)
		return ctl_usage(group, verb, "expected exactly one NAME");
	args = json_object();
	if (!args || ctl_set_str(args, key, argv[optind]) < 0 ||
	    (value && ctl_set_str(args, option, value) < 0)) {
		json_decref(args);
		return OOM();
	}
	return ctl_call(ctl, command, args, progress, NULL, ret);
}

int ctl_one_name(struct ctl *ctl, int argc, char **argv, const char *group, const char *verb,
		 const char *command, const char *key, json_t **ret)
{
	return ctl_one_name_with(ctl, argc, argv, group, verb, command, key, NULL, NULL, ret);
}

int ctl_paged_call(struct ctl *ctl, int argc, char **argv, const char *verb, const char *key,
		   const char *metavar, json_t **ret)
{
	static const struct option opts[] = {
		{ "limit", required_argument, NULL, 'l' },
		{ "before", required_argument, NULL, 'b' },
		{},
	};
	json_t *args = json_object();
	int64_t v;
	int c, r = 0;

	if (!args)
		return OOM();
	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		const char *option = c == 'l' ? "limit" : "before";

		if (c != 'l' && c != 'b')
			r = ctl_bad_option(NULL, verb, argv);
		else if (!ctl_parse_int(optarg, 1, CTLPROTO_MAX_ID, &v))
			r = ctl_usage(NULL, verb, "--limit and --before expect a positive "
				      "number, not \"%s\"", optarg);
		else if (json_object_set_new(args, option, json_integer(v)) < 0)
			r = OOM();
		if (r != 0)
			goto fail;
	}
	if (!key && optind != argc)
		r = ctl_usage(NULL, verb, "unexpected argument \"%s\"", argv[optind]);
	else if (optind + 1 < argc)
		r = ctl_usage(NULL, verb, "expected at most one %s", metavar);
	else if (optind < argc && ctl_set_str(args, key, argv[optind]) < 0)
		r = OOM();
	if (r != 0)
		goto fail;
	return ctl_call(ctl, verb, args, NULL, NULL, ret);
fail:
	json_decref(args);
	return r;
}

void ctl_print_more(json_t *res, const char *verb)
{
	if (json_is_integer(json_object_get(res, "next_before")))
		printf("More: ccsyncctl %s --before %lld\n", verb,
		       (long long)jint(res, "next_before"));
}

/* ---- the daemon itself ---- */

int ctl_cmd_status(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = ctl_no_args_call(ctl, argc, argv, "status", "status", &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		ctl_print_value(stdout, res, 0);
	return ctl_print_result(ctl, res);
}

int ctl_cmd_whoami(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = ctl_no_args_call(ctl, argc, argv, "whoami", "whoami", &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		printf("%s (uid %lld): %s\n", jstr(res, "user"), (long long)jint(res, "uid"),
		       jstr(res, "role"));
	return ctl_print_result(ctl, res);
}

int ctl_cmd_audit(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "ID", "AT", "USER", "ACTION", "OBJECT" };
	json_t *res = NULL, *e;
	struct ctl_table t;
	size_t i;
	int r = ctl_paged_call(ctl, argc, argv, "audit", NULL, NULL, &res);

	if (r != 0)
		return r;
	if (ctl->json)
		return ctl_print_result(ctl, res);
	ctl_table_init(&t, ELEMENTSOF(headers), headers);
	json_array_foreach(json_object_get(res, "entries"), i, e) {
		char id[32], at[32], user[96], obj[96];
		json_t *uid = json_object_get(e, "uid");

		snprintf(id, sizeof(id), "%lld", (long long)jint(e, "id"));
		snprintf(user, sizeof(user), "%s (%lld)", jstr(e, "user") ?: "?",
			 json_is_integer(uid) ? (long long)json_integer_value(uid) : -1LL);
		snprintf(obj, sizeof(obj), "%s %s", jstr(e, "object_type"),
			 jstr(e, "object_id") ?: "");
		{
			const char *row[] = { id, ctl_format_time(jint(e, "at"), at, sizeof(at)),
					      user, jstr(e, "action"), obj };

			(void)ctl_table_add(&t, row);
		}
	}
	ctl_print_table(&t, "The audit log is empty.");
	ctl_print_more(res, "audit");
	json_decref(res);
	return 0;
}

/* ---- the table of verbs ---- */

#define COMMON_EXIT                                                                                \
	"\nExit status: 0 ok, 1 failed, 2 usage or invalid argument, 3 not found, 4 permission "   \
	"denied,\n5 conflict/busy/precondition not met, 69 ccsyncd unreachable.\n"

const struct ctl_verb ctl_verbs[] = {
	{ "connection", "add", ctl_cmd_connection_add,
	  "NAME --client-id=KEY [--flow=device|pkce|code] "
	  "[--usable-by=admins|admins_and_contributors]",
	  "Adds a connection to a Constant Contact account (admins only). KEY is the API key of\n"
	  "the Constant Contact application. --flow picks how it is authorized (default device);\n"
	  "--usable-by says who may build exports on it (default admins).\n" COMMON_EXIT,
	  "Add a connection to a Constant Contact account" },
	{ "connection", "list", ctl_cmd_connection_list, "[--names]",
	  "Lists connections (contributors see those they may use). --names prints names only.\n"
	  COMMON_EXIT,
	  "List connections" },
	{ "connection", "show", ctl_cmd_connection_show, "NAME",
	  "Shows a connection: flow, authorization state, consent, exports. Tokens are never\n"
	  "shown to anyone.\n" COMMON_EXIT,
	  "Show a connection" },
	{ "connection", "edit", ctl_cmd_connection_edit,
	  "NAME [--name=NEW] [--client-id=KEY] [--flow=F] [--usable-by=U]",
	  "Changes a connection (admins only). A new API key or flow deletes the stored tokens:\n"
	  "authorize it again afterwards.\n" COMMON_EXIT,
	  "Change a connection" },
	{ "connection", "remove", ctl_cmd_connection_remove, "NAME",
	  "Removes a connection at once (admins only): its running exports are cancelled, its\n"
	  "stored tokens deleted, and its exports disabled with the reason recorded.\n"
	  COMMON_EXIT,
	  "Remove a connection" },
	{ "connection", "authorize", ctl_cmd_connection_authorize, "NAME [--code=REDIRECT-URL]",
	  "Authorizes ccsync to use the account (admins only). The device flow shows a code to\n"
	  "enter at Constant Contact and waits; the pkce and code flows print a URL to open, then\n"
	  "take the address you were redirected to with --code.\n" COMMON_EXIT,
	  "Authorize ccsync to use a connection's account" },
	{ "connection", "consent", ctl_cmd_connection_consent, "NAME [--revoke]",
	  "Records that you, by name, agree to send this data to the account (admins only). No\n"
	  "export on the connection runs without it. --revoke withdraws it.\n" COMMON_EXIT,
	  "Record or revoke data-privacy consent" },
	{ NULL, "lists", ctl_cmd_lists, "CONNECTION",
	  "Lists the Constant Contact lists of a connection's account: ID, name, member count.\n"
	  COMMON_EXIT,
	  "List the Constant Contact lists of a connection" },
	{ "export", "add", ctl_cmd_export_add,
	  "NAME --connection=C --list-id=ID --email-field=ATTR --segment=S [--segment=S...]\n"
	  "       [--first-name-field=ATTR] [--last-name-field=ATTR] [--field=TARGET=ATTR...]\n"
	  "       [--mode=upsert|mirror] [--mirror-max-remove-share=0..1] "
	  "[--follows-refresh=yes|no]\n"
	  "       [--cron=EXPR] [--time-zone=ZONE]",
	  "Adds an export of segment members to a Constant Contact list. The list ID is checked\n"
	  "against Constant Contact when it can be reached; every mapped attribute must occur in\n"
	  "the profiles; the segments must exist; --cron and --time-zone override the configured\n"
	  "schedule. TARGET is a Constant Contact import key (job_title, phone, city, ...) or\n"
	  "cf:NAME for a custom field. Saving never runs the export.\n" COMMON_EXIT,
	  "Add an export of segments to a list" },
	{ "export", "list", ctl_cmd_export_list, "[--names]",
	  "Lists exports (contributors see those on connections they may use).\n" COMMON_EXIT,
	  "List exports" },
	{ "export", "show", ctl_cmd_export_show, "NAME",
	  "Shows an export's settings.\n" COMMON_EXIT,
	  "Show an export's settings" },
	{ "export", "edit", ctl_cmd_export_edit,
	  "NAME [--name=NEW] [the options of export add...] [--clear=SETTING...]",
	  "Changes an export. --segment and --field replace the whole list of segments or further\n"
	  "fields. --clear removes first-name-field, last-name-field, fields,\n"
	  "mirror-max-remove-share, cron or time-zone (back to the default). The list and\n"
	  "connection of an export that has run cannot change.\n" COMMON_EXIT,
	  "Change an export" },
	{ "export", "remove", ctl_cmd_export_remove, "NAME",
	  "Removes an export; a run in progress is cancelled. Its run history is kept.\n"
	  COMMON_EXIT,
	  "Remove an export" },
	{ "export", "enable", ctl_cmd_export_enable, "NAME",
	  "Enables an export: it runs on its schedule again.\n" COMMON_EXIT,
	  "Enable an export" },
	{ "export", "disable", ctl_cmd_export_disable, "NAME [--reason=TEXT]",
	  "Disables an export: no scheduled or manual run until enabled.\n" COMMON_EXIT,
	  "Disable an export" },
	{ NULL, "run", ctl_cmd_run, "EXPORT [--follow] [--dry-run] [--full] [--force]",
	  "Runs an export now. --follow shows progress until it ends (a progress bar on a\n"
	  "terminal, one line per update otherwise; with --json, one JSON object per line) and\n"
	  "exits 0 only if the run succeeded (possibly with rejected rows). --dry-run plans "
	  "without\n"
	  "sending; --full resends every contact; --force passes the mirror removal guard.\n"
	  COMMON_EXIT,
	  "Run an export now" },
	{ NULL, "cancel", ctl_cmd_cancel, "RUN", "Cancels a queued or running run.\n" COMMON_EXIT,
	  "Cancel a queued or running run" },
	{ NULL, "refresh-done", ctl_cmd_refresh_done, "",
	  "Tells ccsyncd that upstream finished refreshing the data: every export that follows\n"
	  "refreshes runs.\n" COMMON_EXIT,
	  "Tell ccsyncd that upstream finished a refresh" },
	{ NULL, "runs", ctl_cmd_runs, "[EXPORT] [--limit=N] [--before=RUN]",
	  "Lists runs, newest first (default 20).\n" COMMON_EXIT,
	  "List runs, newest first" },
	{ NULL, "run-show", ctl_cmd_run_show, "RUN", "Shows a run with its batches.\n" COMMON_EXIT,
	  "Show a run with its batches" },
	{ NULL, "rejected", ctl_cmd_rejected, "RUN [--csv|--json]",
	  "Lists the rows a run rejected, with their reasons.\n" COMMON_EXIT,
	  "List the rows a run rejected, with reasons" },
	{ NULL, "status", ctl_cmd_status, "",
	  "Shows the daemon's state: next refresh, running exports, request budget.\n"
	  COMMON_EXIT,
	  "Show the daemon's state" },
	{ NULL, "segments", ctl_cmd_segments, "",
	  "Lists segments with member counts.\n" COMMON_EXIT,
	  "List segments with member counts" },
	{ NULL, "import", ctl_cmd_import,
	  "profiles|segment FILE [--format=csv|jsonl] [--segment=NAME]",
	  "Imports profiles, or the complete membership of a segment, from CSV or JSON Lines\n"
	  "(admins only). FILE - reads standard input. The segment's name defaults to the file's\n"
	  "name without extension. All or nothing: an error names the line and imports nothing.\n"
	  COMMON_EXIT,
	  "Import profiles or a segment's membership" },
	{ NULL, "audit", ctl_cmd_audit, "[--limit=N] [--before=ID]",
	  "Shows the audit log, newest first (admins only).\n" COMMON_EXIT,
	  "Show the audit log" },
	{ NULL, "whoami", ctl_cmd_whoami, "", "Shows your user and role as ccsyncd sees them.\n"
	  COMMON_EXIT,
	  "Show your user and role" },
};

const size_t ctl_n_verbs = ELEMENTSOF(ctl_verbs);
