/* SPDX-License-Identifier: MIT */
/*
 * The commands of ccsyncctl. Each builds the request's arguments from the command line, lets the
 * daemon do the work and the checking, and renders the reply. Local checks are limited to the
 * shape of the command line (missing NAME, a number that is not a number): everything about the
 * meaning of a value is the daemon's to judge, so a second client gets the same answers.
 */
#include "ctl-commands.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

_printf_(3, 4) static int usage(const char *group, const char *name, const char *fmt, ...)
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

/* Parses a whole decimal number in [min, max]. */
static bool parse_int(const char *s, int64_t min, int64_t max, int64_t *ret)
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

static bool parse_yes_no(const char *s, bool *ret)
{
	if (streq(s, "yes") || streq(s, "true") || streq(s, "1")) {
		*ret = true;
		return true;
	}
	if (streq(s, "no") || streq(s, "false") || streq(s, "0")) {
		*ret = false;
		return true;
	}
	return false;
}

static int set_str(json_t *o, const char *key, const char *value)
{
	return json_object_set_new(o, key, json_string(value)) < 0 ? -ENOMEM : 0;
}

static const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static int64_t jint(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static const char *count(int64_t n, char *buf, size_t len)
{
	return ctl_format_count(n, buf, len);
}

#define OOM() ctl_fail(CTLPROTO_EXIT_FAILED, "out of memory")

/* Runs getopt_long over a verb's argv; positional arguments end up in argv[optind..]. */
#define FOR_EACH_OPTION(argc, argv, shortopts, longopts, c)                                       \
	for (optind = 0, opterr = 0;                                                               \
	     ((c) = getopt_long(argc, argv, shortopts, longopts, NULL)) >= 0;)

static int bad_option(const char *group, const char *name, char **argv)
{
	return usage(group, name, "unknown or incomplete option \"%s\"", argv[optind - 1]);
}

static int print_result(struct ctl *ctl, json_t *result)
{
	if (ctl->json)
		ctl_print_json(result);
	json_decref(result);
	return 0;
}

static int no_args_call(struct ctl *ctl, int argc, char **argv, const char *verb,
			const char *command, json_t **ret)
{
	int c;

	FOR_EACH_OPTION(argc, argv, "", (const struct option[]){ {} }, c)
		return bad_option(NULL, verb, argv);
	if (optind != argc)
		return usage(NULL, verb, "unexpected argument \"%s\"", argv[optind]);
	return ctl_call(ctl, command, NULL, NULL, NULL, ret);
}

/* Prints the table, or the line `empty` when it has no rows, and frees it. */
static void print_table(struct ctl_table *t, const char *empty)
{
	if (t->nrows == 0)
		printf("%s\n", empty);
	else
		ctl_table_print(t, stdout);
	ctl_table_done(t);
}

/* ---- connections ---- */

static const char *consent_text(json_t *c, char *buf, size_t len)
{
	json_t *consent = json_object_get(c, "consent");
	char t[32];

	if (!json_is_object(consent)) {
		snprintf(buf, len, "none");
		return buf;
	}
	snprintf(buf, len, "%s %s", jstr(consent, "by"),
		 ctl_format_time(jint(consent, "at"), t, sizeof(t)));
	return buf;
}

static void print_connection(json_t *c)
{
	char buf[128];

	printf("Name:         %s\n", jstr(c, "name"));
	printf("Id:           %lld\n", (long long)jint(c, "id"));
	if (jstr(c, "client_id"))
		printf("API key:      %s\n", jstr(c, "client_id"));
	printf("Usable by:    %s\n", jstr(c, "usable_by"));
	printf("Auth flow:    %s\n", jstr(c, "auth_flow"));
	printf("Auth state:   %s%s%s\n", jstr(c, "auth_state"), jstr(c, "auth_error") ? " - " : "",
	       jstr(c, "auth_error") ? jstr(c, "auth_error") : "");
	printf("Consent:      %s\n", consent_text(c, buf, sizeof(buf)));
	printf("Exports:      %lld\n", (long long)jint(c, "exports"));
	printf("Created:      %s\n", ctl_format_time(jint(c, "created_at"), buf, sizeof(buf)));
	printf("Updated:      %s\n", ctl_format_time(jint(c, "updated_at"), buf, sizeof(buf)));
}

static int cmd_connection_add(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "client-id", required_argument, NULL, 'k' },
		{ "flow", required_argument, NULL, 'f' },
		{ "usable-by", required_argument, NULL, 'u' },
		{},
	};
	const char *client_id = NULL, *flow = NULL, *usable = NULL;
	json_t *args, *res = NULL;
	int c, r;

	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		switch (c) {
		case 'k':
			client_id = optarg;
			break;
		case 'f':
			flow = optarg;
			break;
		case 'u':
			usable = optarg;
			break;
		default:
			return bad_option("connection", "add", argv);
		}
	}
	if (optind + 1 != argc)
		return usage("connection", "add", "expected exactly one NAME");
	if (!client_id)
		return usage("connection", "add", "--client-id=KEY is required (the API key of "
			     "your Constant Contact application)");
	args = json_object();
	if (!args || set_str(args, "name", argv[optind]) < 0 ||
	    set_str(args, "client_id", client_id) < 0 ||
	    (flow && set_str(args, "auth_flow", flow) < 0) ||
	    (usable && set_str(args, "usable_by", usable) < 0)) {
		json_decref(args);
		return OOM();
	}
	r = ctl_call(ctl, "connection.add", args, NULL, NULL, &res);
	if (r != 0)
		return r;
	if (!ctl->json) {
		json_t *conn = json_object_get(res, "connection");

		printf("Connection \"%s\" added (id %lld).\n", jstr(conn, "name"),
		       (long long)jint(conn, "id"));
		printf("Next: record data-privacy consent with 'ccsyncctl connection consent %s' "
		       "and authorize it with 'ccsyncctl connection authorize %s'.\n",
		       jstr(conn, "name"), jstr(conn, "name"));
	}
	return print_result(ctl, res);
}

static int list_names(struct ctl *ctl, const char *command, const char *group, int argc,
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
			return bad_option(group, "list", argv);
		names = true;
	}
	if (optind != argc)
		return usage(group, "list", "unexpected argument \"%s\"", argv[optind]);
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
	return print_result(ctl, res);
}

static void connection_table(json_t *res)
{
	static const char *const headers[] = { "NAME", "USABLE BY", "FLOW", "AUTH", "CONSENT",
					       "EXPORTS" };
	struct ctl_table t;
	json_t *e;
	size_t i;

	ctl_table_init(&t, ELEMENTSOF(headers), headers);
	json_array_foreach(res, i, e) {
		char consent[128], n[32];
		const char *row[] = { jstr(e, "name"), jstr(e, "usable_by"), jstr(e, "auth_flow"),
				      jstr(e, "auth_state"),
				      consent_text(e, consent, sizeof(consent)),
				      count(jint(e, "exports"), n, sizeof(n)) };

		(void)ctl_table_add(&t, row);
	}
	print_table(&t, "No connections. Add one with 'ccsyncctl connection add'.");
}

static int cmd_connection_list(struct ctl *ctl, int argc, char **argv)
{
	return list_names(ctl, "connection.list", "connection", argc, argv, connection_table);
}

/*
 * Verbs whose only argument is one NAME, sent as key, and that take at most one option: --OPTION
 * VALUE, sent under the option's own name (option NULL: none).
 */
static int one_name_with(struct ctl *ctl, int argc, char **argv, const char *group,
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
			return bad_option(group, verb, argv);
		value = optarg;
	}
	if (optind + 1 != argc)
		return usage(group, verb, "expected exactly one NAME");
	args = json_object();
	if (!args || set_str(args, key, argv[optind]) < 0 ||
	    (value && set_str(args, option, value) < 0)) {
		json_decref(args);
		return OOM();
	}
	return ctl_call(ctl, command, args, progress, NULL, ret);
}

static int one_name(struct ctl *ctl, int argc, char **argv, const char *group, const char *verb,
		    const char *command, const char *key, json_t **ret)
{
	return one_name_with(ctl, argc, argv, group, verb, command, key, NULL, NULL, ret);
}

static int cmd_connection_show(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = one_name(ctl, argc, argv, "connection", "show", "connection.show", "connection",
			 &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		print_connection(res);
	return print_result(ctl, res);
}

static int cmd_connection_edit(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "client-id", required_argument, NULL, 'k' },
		{ "flow", required_argument, NULL, 'f' },
		{ "usable-by", required_argument, NULL, 'u' },
		{},
	};
	json_t *args = json_object(), *res = NULL;
	int c, r;

	if (!args)
		return OOM();
	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		const char *key = c == 'n' ? "name" : c == 'k' ? "client_id" :
				  c == 'f' ? "auth_flow" : c == 'u' ? "usable_by" : NULL;

		if (!key) {
			json_decref(args);
			return bad_option("connection", "edit", argv);
		}
		if (set_str(args, key, optarg) < 0) {
			json_decref(args);
			return OOM();
		}
	}
	if (optind + 1 != argc) {
		json_decref(args);
		return usage("connection", "edit", "expected exactly one NAME");
	}
	if (set_str(args, "connection", argv[optind]) < 0) {
		json_decref(args);
		return OOM();
	}
	r = ctl_call(ctl, "connection.edit", args, NULL, NULL, &res);
	if (r != 0)
		return r;
	if (!ctl->json) {
		printf("Connection \"%s\" changed.\n",
		       jstr(json_object_get(res, "connection"), "name"));
		if (json_is_true(json_object_get(res, "authorization_reset")))
			printf("Its API key or flow changed: stored tokens were deleted; "
			       "authorize it "
			       "again with 'ccsyncctl connection authorize %s'.\n",
			       jstr(json_object_get(res, "connection"), "name"));
	}
	return print_result(ctl, res);
}

static int cmd_connection_remove(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = one_name(ctl, argc, argv, "connection", "remove", "connection.remove",
			 "connection", &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		printf("Connection \"%s\" removed: %lld export(s) disabled, stored tokens %s, its "
		       "runs cancelled.\n", jstr(json_object_get(res, "connection"), "name"),
		       (long long)jint(res, "exports_disabled"),
		       json_is_true(json_object_get(res, "tokens_deleted")) ? "deleted" :
									      "(none) deleted");
	return print_result(ctl, res);
}

static int cmd_connection_consent(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "revoke", no_argument, NULL, 'r' },
		{},
	};
	bool revoke = false;
	json_t *args, *res = NULL;
	int c, r;

	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		if (c != 'r')
			return bad_option("connection", "consent", argv);
		revoke = true;
	}
	if (optind + 1 != argc)
		return usage("connection", "consent", "expected exactly one NAME");
	args = json_pack("{s:s, s:b}", "connection", argv[optind], "revoke", revoke);
	if (!args)
		return OOM();
	r = ctl_call(ctl, "connection.consent", args, NULL, NULL, &res);
	if (r != 0)
		return r;
	if (!ctl->json) {
		json_t *conn = json_object_get(res, "connection");
		char buf[128];

		if (revoke)
			printf("Consent for connection \"%s\" revoked: its exports will not run.\n",
			       jstr(conn, "name"));
		else
			printf("Consent for connection \"%s\" recorded: %s.\n", jstr(conn, "name"),
			       consent_text(conn, buf, sizeof(buf)));
	}
	return print_result(ctl, res);
}

static int on_authorize_progress(struct ctl *ctl, json_t *p, void *userdata)
{
	char t[32];

	(void)userdata;
	if (ctl->json) {
		ctl_print_json_line(p);
		return 0;
	}
	if (jstr(p, "verification_uri")) {
		printf("To authorize, open %s\nand enter the code %s", jstr(p, "verification_uri"),
		       jstr(p, "user_code") ? jstr(p, "user_code") : "?");
		if (jint(p, "expires_at") > 0)
			printf(" (valid until %s)", ctl_format_time(jint(p, "expires_at"), t,
								  sizeof(t)));
		printf(".\n");
		if (jstr(p, "verification_uri_complete"))
			printf("Or open directly: %s\n", jstr(p, "verification_uri_complete"));
		printf("Waiting for the approval...\n");
	} else {
		ctl_print_value(stdout, p, 0);
	}
	fflush(stdout);
	return 0;
}

static int cmd_connection_authorize(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = one_name_with(ctl, argc, argv, "connection", "authorize", "connection.authorize",
			      "connection", "code", on_authorize_progress, &res);

	if (r != 0)
		return r;
	if (!ctl->json) {
		if (jstr(res, "authorize_url")) {
			printf("Open this URL in a browser and approve the access:\n%s\n",
			       jstr(res, "authorize_url"));
			printf("Then paste the address you were redirected to:\n"
			       "  ccsyncctl connection authorize %s --code 'REDIRECT-URL'\n",
			       argv[optind]);
		} else {
			printf("Connection \"%s\" is authorized.\n", argv[optind]);
		}
	}
	return print_result(ctl, res);
}

static int cmd_lists(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "LIST ID", "NAME", "MEMBERS" };
	struct ctl_table t;
	json_t *res = NULL, *e;
	size_t i;
	int r = one_name(ctl, argc, argv, NULL, "lists", "lists", "connection", &res);

	if (r != 0)
		return r;
	if (ctl->json)
		return print_result(ctl, res);
	ctl_table_init(&t, ELEMENTSOF(headers), headers);
	json_array_foreach(res, i, e) {
		char n[32];
		const char *row[] = { jstr(e, "list_id"), jstr(e, "name"),
				      json_is_integer(json_object_get(e, "membership_count")) ?
					      count(jint(e, "membership_count"), n, sizeof(n)) :
					      NULL };

		(void)ctl_table_add(&t, row);
	}
	ctl_table_print(&t, stdout);
	ctl_table_done(&t);
	json_decref(res);
	return 0;
}

/* ---- exports ---- */

static const char *schedule_text(json_t *e, char *buf, size_t len)
{
	json_t *s = json_object_get(e, "schedule");
	const char *cron = jstr(s, "cron"), *zone = jstr(s, "time_zone");

	snprintf(buf, len, "%s%s%s", cron ? cron : "default", zone ? " " : "", zone ? zone : "");
	return buf;
}

static const char *segments_text(json_t *e, char *buf, size_t len)
{
	json_t *v;
	size_t i, off = 0;

	buf[0] = '\0';
	json_array_foreach(json_object_get(e, "segments"), i, v)
		if (off < len)
			off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? "," : "",
						json_string_value(v));
	return buf;
}

static void print_export(json_t *e)
{
	json_t *fields = json_object_get(e, "fields"), *v;
	const char *key;
	char buf[1024];

	printf("Name:            %s\n", jstr(e, "name"));
	printf("Id:              %lld\n", (long long)jint(e, "id"));
	printf("Connection:      %s%s\n", jstr(e, "connection"),
	       json_is_true(json_object_get(e, "connection_removed")) ? " (removed)" : "");
	printf("List ID:         %s\n", jstr(e, "list_id"));
	printf("Mode:            %s\n", jstr(e, "mode"));
	printf("Segments:        %s\n", segments_text(e, buf, sizeof(buf)));
	printf("Email field:     %s\n", jstr(e, "email_field"));
	printf("First name:      %s\n", jstr(e, "first_name_field") ?: "-");
	printf("Last name:       %s\n", jstr(e, "last_name_field") ?: "-");
	json_object_foreach(fields, key, v)
		printf("Field:           %s <- %s\n", key, json_string_value(v));
	printf("Schedule:        %s\n", schedule_text(e, buf, sizeof(buf)));
	printf("Follows refresh: %s\n",
	       json_is_true(json_object_get(e, "follows_refresh")) ? "yes" : "no");
	if (json_is_number(json_object_get(e, "mirror_max_remove_share")))
		printf("Max removals:    %g of the list per run\n",
		       json_number_value(json_object_get(e, "mirror_max_remove_share")));
	printf("Enabled:         %s%s%s\n",
	       json_is_true(json_object_get(e, "enabled")) ? "yes" : "no",
	       jstr(e, "disabled_reason") ? " - " : "",
	       jstr(e, "disabled_reason") ? jstr(e, "disabled_reason") : "");
	printf("Created:         %s by %s\n", ctl_format_time(jint(e, "created_at"), buf,
							      sizeof(buf)),
	       jstr(e, "created_by") ?: "-");
	printf("Updated:         %s\n", ctl_format_time(jint(e, "updated_at"), buf, sizeof(buf)));
}

static void export_table(json_t *res)
{
	static const char *const headers[] = { "NAME", "CONNECTION", "LIST ID", "MODE",
					       "SEGMENTS", "SCHEDULE", "ENABLED" };
	struct ctl_table t;
	json_t *e;
	size_t i;

	ctl_table_init(&t, ELEMENTSOF(headers), headers);
	json_array_foreach(res, i, e) {
		char seg[256], sched[300];
		const char *row[] = { jstr(e, "name"), jstr(e, "connection"), jstr(e, "list_id"),
				      jstr(e, "mode"), segments_text(e, seg, sizeof(seg)),
				      schedule_text(e, sched, sizeof(sched)),
				      json_is_true(json_object_get(e, "enabled")) ? "yes" : "no" };

		(void)ctl_table_add(&t, row);
	}
	print_table(&t, "No exports. Add one with 'ccsyncctl export add'.");
}

static int cmd_export_list(struct ctl *ctl, int argc, char **argv)
{
	return list_names(ctl, "export.list", "export", argc, argv, export_table);
}

static int cmd_export_show(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = one_name(ctl, argc, argv, "export", "show", "export.show", "export", &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		print_export(res);
	return print_result(ctl, res);
}

static const char *const clearable[] = {
	"first-name-field", "last-name-field", "fields", "mirror-max-remove-share", "cron",
	"time-zone", NULL,
};

/* export add and export edit: the same options, edit adds --name and --clear. */
static int export_save(struct ctl *ctl, int argc, char **argv, bool edit)
{
	static const struct option opts[] = {
		{ "connection", required_argument, NULL, 'c' },
		{ "list-id", required_argument, NULL, 'l' },
		{ "email-field", required_argument, NULL, 'e' },
		{ "first-name-field", required_argument, NULL, 'F' },
		{ "last-name-field", required_argument, NULL, 'L' },
		{ "field", required_argument, NULL, 'x' },
		{ "segment", required_argument, NULL, 's' },
		{ "mode", required_argument, NULL, 'm' },
		{ "mirror-max-remove-share", required_argument, NULL, 'M' },
		{ "follows-refresh", required_argument, NULL, 'R' },
		{ "cron", required_argument, NULL, 'C' },
		{ "time-zone", required_argument, NULL, 'Z' },
		{ "name", required_argument, NULL, 'n' },
		{ "clear", required_argument, NULL, 'X' },
		{},
	};
	const char *verb = edit ? "edit" : "add";
	json_t *args = json_object(), *fields = NULL, *segments = NULL, *res = NULL;
	int c, r = 0;

	if (!args)
		return OOM();
	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		const char *key = NULL;

		switch (c) {
		case 'c':
			key = "connection";
			break;
		case 'l':
			key = "list_id";
			break;
		case 'e':
			key = "email_field";
			break;
		case 'F':
			key = "first_name_field";
			break;
		case 'L':
			key = "last_name_field";
			break;
		case 'm':
			key = "mode";
			break;
		case 'C':
			key = "cron";
			break;
		case 'Z':
			key = "time_zone";
			break;
		case 'n':
			if (!edit)
				goto bad;
			key = "name";
			break;
		case 'x': {
			const char *eq = strchr(optarg, '=');
			_cleanup_free_ char *target = NULL;

			if (!eq || eq == optarg || !eq[1]) {
				r = usage("export", verb, "--field expects TARGET=ATTRIBUTE, e.g. "
					  "--field job_title=title or --field cf:tier=tier, not "
					  "\"%s\"", optarg);
				goto out;
			}
			target = strndup(optarg, (size_t)(eq - optarg));
			if (!fields)
				fields = json_object();
			if (!target || !fields ||
			    json_object_set_new(fields, target, json_string(eq + 1)) < 0)
				goto oom;
			break;
		}
		case 's':
			if (!segments)
				segments = json_array();
			if (!segments || json_array_append_new(segments, json_string(optarg)) < 0)
				goto oom;
			break;
		case 'M': {
			char *end;
			double d;

			errno = 0;
			d = strtod(optarg, &end);
			if (errno || end == optarg || *end || !isfinite(d)) {
				r = usage("export", verb, "--mirror-max-remove-share expects a "
					  "number between 0 and 1, not \"%s\"", optarg);
				goto out;
			}
			if (json_object_set_new(args, "mirror_max_remove_share", json_real(d)) < 0)
				goto oom;
			break;
		}
		case 'R': {
			bool b;

			if (!parse_yes_no(optarg, &b)) {
				r = usage("export", verb, "--follows-refresh expects yes or no, "
					  "not \"%s\"", optarg);
				goto out;
			}
			if (json_object_set_new(args, "follows_refresh", json_boolean(b)) < 0)
				goto oom;
			break;
		}
		case 'X': {
			bool known = false;
			char key_buf[64];

			if (!edit)
				goto bad;
			for (size_t i = 0; clearable[i]; i++)
				known = known || streq(clearable[i], optarg);
			if (!known) {
				r = usage("export", verb, "--clear accepts first-name-field, "
					  "last-name-field, fields, mirror-max-remove-share, "
					  "cron or "
					  "time-zone, not \"%s\"", optarg);
				goto out;
			}
			snprintf(key_buf, sizeof(key_buf), "%s", optarg);
			for (char *p = key_buf; *p; p++)
				if (*p == '-')
					*p = '_';
			if (json_object_set_new(args, key_buf, json_null()) < 0)
				goto oom;
			break;
		}
		default:
			goto bad;
		}
		if (key && set_str(args, key, optarg) < 0)
			goto oom;
	}
	if (optind + 1 != argc) {
		r = usage("export", verb, "expected exactly one NAME");
		goto out;
	}
	if (set_str(args, edit ? "export" : "name", argv[optind]) < 0)
		goto oom;
	if (fields && json_object_set(args, "fields", fields) < 0)
		goto oom;
	if (segments && json_object_set(args, "segments", segments) < 0)
		goto oom;
	if (!edit && (!json_object_get(args, "connection") || !json_object_get(args, "list_id") ||
		      !json_object_get(args, "email_field") || !segments)) {
		r = usage("export", verb, "--connection, --list-id, --email-field and at least one "
			  "--segment are required");
		goto out;
	}
	r = ctl_call(ctl, edit ? "export.edit" : "export.add", json_incref(args), NULL, NULL,
		     &res);
	if (r != 0)
		goto out;
	{
		json_t *w;
		size_t i;

		json_array_foreach(json_object_get(res, "warnings"), i, w)
			fprintf(stderr, "ccsyncctl: warning: %s\n", json_string_value(w));
	}
	if (!ctl->json) {
		json_t *e = json_object_get(res, "export");

		printf("Export \"%s\" %s (id %lld). Saving does not run it: it runs %s.\n",
		       jstr(e, "name"), edit ? "changed" : "added", (long long)jint(e, "id"),
		       json_is_true(json_object_get(e, "enabled")) ?
			       "on its schedule, after upstream refreshes if it follows them, "
			       "and on "
			       "'ccsyncctl run'" : "only once enabled");
	}
	r = print_result(ctl, TAKE_PTR(res));
	goto out;
bad:
	r = bad_option("export", verb, argv);
	goto out;
oom:
	r = OOM();
out:
	json_decref(args);
	json_decref(fields);
	json_decref(segments);
	json_decref(res);
	return r;
}

static int cmd_export_add(struct ctl *ctl, int argc, char **argv)
{
	return export_save(ctl, argc, argv, false);
}

static int cmd_export_edit(struct ctl *ctl, int argc, char **argv)
{
	return export_save(ctl, argc, argv, true);
}

/* export remove, enable, disable: one NAME, at most one option, one line of result. */
static int export_simple(struct ctl *ctl, int argc, char **argv, const char *verb,
			 const char *command, const char *option, const char *done)
{
	json_t *res = NULL;
	int r = one_name_with(ctl, argc, argv, "export", verb, command, "export", option, NULL,
			      &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		printf("Export \"%s\" %s.\n", jstr(json_object_get(res, "export"), "name"), done);
	return print_result(ctl, res);
}

static int cmd_export_remove(struct ctl *ctl, int argc, char **argv)
{
	return export_simple(ctl, argc, argv, "remove", "export.remove", NULL,
			     "removed (a run in progress is cancelled)");
}

static int cmd_export_enable(struct ctl *ctl, int argc, char **argv)
{
	return export_simple(ctl, argc, argv, "enable", "export.enable", NULL, "enabled");
}

static int cmd_export_disable(struct ctl *ctl, int argc, char **argv)
{
	return export_simple(ctl, argc, argv, "disable", "export.disable", "reason", "disabled");
}

/* ---- runs ---- */

struct follow_state {
	bool tty;
	bool drew;
	int64_t last_sent;
	struct timespec last_ts;
	double rate;
	char last_line[256];
};

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int on_run_progress(struct ctl *ctl, json_t *p, void *userdata)
{
	struct follow_state *fs = userdata;
	int64_t sent = jint(p, "sent"), pending = jint(p, "pending"), total = sent + pending;
	double rate = json_number_value(json_object_get(p, "rate_per_second"));
	json_t *eta_v = json_object_get(p, "eta_seconds");
	char a[32], b[32], eta[32], line[256];
	int64_t eta_s = -1;

	if (ctl->json) {
		ctl_print_json_line(p);
		return 0;
	}
	/* The daemon's rate comes from the shared rate limiter; without one, measure it here. */
	if (rate <= 0) {
		double t = now_seconds();

		if (fs->last_ts.tv_sec && t > (double)fs->last_ts.tv_sec)
			fs->rate = (double)(sent - fs->last_sent) /
				   (t - (double)fs->last_ts.tv_sec -
				    (double)fs->last_ts.tv_nsec / 1e9);
		fs->last_sent = sent;
		clock_gettime(CLOCK_MONOTONIC, &fs->last_ts);
		rate = fs->rate;
	}
	if (json_is_number(eta_v))
		eta_s = (int64_t)json_number_value(eta_v);
	else if (rate > 0)
		eta_s = (int64_t)((double)pending / rate);
	if (eta_s >= 0)
		ctl_format_duration(eta_s, eta, sizeof(eta));
	else
		snprintf(eta, sizeof(eta), "-");
	if (fs->tty) {
		char bar[31];
		int fill = total > 0 ? (int)(30 * sent / total) : 0;

		for (int i = 0; i < 30; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[30] = '\0';
		fprintf(stderr, "\r\033[K%s [%s] %s/%s contacts  %.0f/s  ETA %s",
			jstr(p, "state") ?: "?", bar, count(sent, a, sizeof(a)),
			count(total, b, sizeof(b)), rate > 0 ? rate : 0.0, eta);
		fs->drew = true;
		return 0;
	}
	snprintf(line, sizeof(line), "run %lld: %s, sent %lld of %lld, rejected %lld, batches "
		 "%lld/%lld, rate %.0f/s, ETA %s", (long long)jint(p, "run_id"),
		 jstr(p, "state") ?: "?", (long long)sent, (long long)total,
		 (long long)jint(p, "rejected"), (long long)jint(p, "batches_done"),
		 (long long)jint(p, "batches_total"), rate > 0 ? rate : 0.0, eta);
	if (!streq(line, fs->last_line)) {
		printf("%s\n", line);
		fflush(stdout);
		snprintf(fs->last_line, sizeof(fs->last_line), "%s", line);
	}
	return 0;
}

static void print_run(json_t *run)
{
	char buf[64], a[32];

	printf("Run:        %lld (export %s)\n", (long long)jint(run, "id"),
	       jstr(run, "export") ?: "?");
	printf("State:      %s%s%s\n", jstr(run, "state"), jstr(run, "error") ? " - " : "",
	       jstr(run, "error") ?: "");
	printf("Trigger:    %s%s%s%s by %s\n", jstr(run, "trigger"),
	       json_is_true(json_object_get(run, "dry_run")) ? ", dry run" : "",
	       json_is_true(json_object_get(run, "full")) ? ", full resend" : "",
	       json_is_true(json_object_get(run, "force")) ? ", forced" : "",
	       jstr(run, "requested_by") ?: "the scheduler");
	printf("Queued:     %s\n", ctl_format_time(jint(run, "queued_at"), buf, sizeof(buf)));
	printf("Started:    %s\n", ctl_format_time(jint(run, "started_at"), buf, sizeof(buf)));
	printf("Finished:   %s\n", ctl_format_time(jint(run, "finished_at"), buf, sizeof(buf)));
	printf("Selected:   %s\n", count(jint(run, "selected"), a, sizeof(a)));
	printf("Sent:       %s\n", count(jint(run, "sent"), a, sizeof(a)));
	printf("Unchanged:  %s\n", count(jint(run, "unchanged"), a, sizeof(a)));
	printf("Rejected:   %s\n", count(jint(run, "rejected"), a, sizeof(a)));
	printf("Removed:    %s\n", count(jint(run, "removed"), a, sizeof(a)));
	printf("Pending:    %s\n", count(jint(run, "pending"), a, sizeof(a)));
	printf("Batches:    %lld of %lld done\n", (long long)jint(run, "batches_done"),
	       (long long)jint(run, "batches_total"));
}

static int cmd_run(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "follow", no_argument, NULL, 'f' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "full", no_argument, NULL, 'F' },
		{ "force", no_argument, NULL, 'x' },
		{},
	};
	struct follow_state fs = { .tty = isatty(STDERR_FILENO) && isatty(STDOUT_FILENO) };
	bool follow = false, dry = false, full = false, force = false;
	json_t *args, *res = NULL;
	const char *state;
	int c, r;

	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		switch (c) {
		case 'f':
			follow = true;
			break;
		case 'n':
			dry = true;
			break;
		case 'F':
			full = true;
			break;
		case 'x':
			force = true;
			break;
		default:
			return bad_option(NULL, "run", argv);
		}
	}
	if (optind + 1 != argc)
		return usage(NULL, "run", "expected exactly one EXPORT");
	args = json_pack("{s:s, s:b, s:b, s:b, s:b}", "export", argv[optind], "follow", follow,
			 "dry_run", dry, "full", full, "force", force);
	if (!args)
		return OOM();
	r = ctl_call(ctl, "run", args, on_run_progress, &fs, &res);
	if (fs.drew)
		fputc('\n', stderr);
	if (r != 0)
		return r;
	if (!follow) {
		if (!ctl->json)
			printf("Run %lld of export \"%s\" %s. Follow it with 'ccsyncctl run-show "
			       "%lld'.\n", (long long)jint(res, "run_id"), argv[optind],
			       jstr(res, "state") ?: "queued", (long long)jint(res, "run_id"));
		return print_result(ctl, res);
	}
	if (!ctl->json)
		print_run(res);
	state = jstr(res, "state");
	r = state && (streq(state, "succeeded") || streq(state, "partially_succeeded")) ? 0 :
		CTLPROTO_EXIT_FAILED;
	print_result(ctl, res);
	return r;
}

static int run_id_arg(int argc, char **argv, const char *verb, int64_t *ret)
{
	if (optind + 1 != argc)
		return usage(NULL, verb, "expected exactly one RUN id");
	if (!parse_int(argv[optind], 1, CTLPROTO_MAX_ID, ret))
		return usage(NULL, verb, "RUN must be a run id (a positive number), not \"%s\"",
			     argv[optind]);
	return 0;
}

/* Verbs whose only argument is one RUN id, sent as "run". */
static int one_run(struct ctl *ctl, int argc, char **argv, const char *verb, const char *command,
		   int64_t *ret_id, json_t **ret)
{
	int64_t id;
	int c, r;

	FOR_EACH_OPTION(argc, argv, "", (const struct option[]){ {} }, c)
		return bad_option(NULL, verb, argv);
	r = run_id_arg(argc, argv, verb, &id);
	if (r != 0)
		return r;
	*ret_id = id;
	return ctl_call(ctl, command, json_pack("{s:I}", "run", (json_int_t)id), NULL, NULL, ret);
}

static int cmd_cancel(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int64_t id;
	int r = one_run(ctl, argc, argv, "cancel", "cancel", &id, &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		printf("Run %lld: %s.\n", (long long)id, jstr(res, "state") ?: "cancelling");
	return print_result(ctl, res);
}

static int cmd_refresh_done(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL, *runs, *v;
	size_t i;
	int r = no_args_call(ctl, argc, argv, "refresh-done", "refresh_done", &res);

	if (r != 0)
		return r;
	if (!ctl->json) {
		runs = json_object_get(res, "runs");
		printf("Refresh %lld recorded.", (long long)jint(res, "refresh_id"));
		if (json_is_array(runs) && json_array_size(runs) == 0)
			printf(" No export follows refreshes.");
		else if (json_is_array(runs)) {
			printf(" Started runs:");
			json_array_foreach(runs, i, v)
				printf(" %lld", (long long)json_integer_value(v));
			printf(".");
		}
		printf("\n");
	}
	return print_result(ctl, res);
}

/* The request arguments of runs and audit from their paging options, --limit N and --before ID. */
static int paging_args(int argc, char **argv, const char *verb, json_t **ret)
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
		const char *key = c == 'l' ? "limit" : "before";

		if (c != 'l' && c != 'b')
			r = bad_option(NULL, verb, argv);
		else if (!parse_int(optarg, 1, CTLPROTO_MAX_ID, &v))
			r = usage(NULL, verb, "--limit and --before expect a positive number, not "
				  "\"%s\"", optarg);
		else if (json_object_set_new(args, key, json_integer(v)) < 0)
			r = OOM();
		if (r != 0) {
			json_decref(args);
			return r;
		}
	}
	*ret = args;
	return 0;
}

/* "More: ccsyncctl VERB --before ID" when the reply says there is another page. */
static void print_more(json_t *res, const char *verb)
{
	if (json_is_integer(json_object_get(res, "next_before")))
		printf("More: ccsyncctl %s --before %lld\n", verb,
		       (long long)jint(res, "next_before"));
}

static int cmd_runs(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "RUN", "EXPORT", "STATE", "TRIGGER", "QUEUED",
					       "FINISHED", "SELECTED", "SENT", "REJECTED" };
	json_t *args = NULL, *res = NULL, *e;
	struct ctl_table t;
	size_t i;
	int r = paging_args(argc, argv, "runs", &args);

	if (r != 0)
		return r;
	if (optind + 1 < argc) {
		json_decref(args);
		return usage(NULL, "runs", "expected at most one EXPORT");
	}
	if (optind < argc && set_str(args, "export", argv[optind]) < 0) {
		json_decref(args);
		return OOM();
	}
	r = ctl_call(ctl, "runs", args, NULL, NULL, &res);
	if (r != 0)
		return r;
	if (ctl->json)
		return print_result(ctl, res);
	ctl_table_init(&t, ELEMENTSOF(headers), headers);
	json_array_foreach(json_object_get(res, "runs"), i, e) {
		char id[32], q[32], f[32], s1[32], s2[32], s3[32];
		const char *row[] = { count(jint(e, "id"), id, sizeof(id)), jstr(e, "export"),
				      jstr(e, "state"), jstr(e, "trigger"),
				      ctl_format_time(jint(e, "queued_at"), q, sizeof(q)),
				      ctl_format_time(jint(e, "finished_at"), f, sizeof(f)),
				      count(jint(e, "selected"), s1, sizeof(s1)),
				      count(jint(e, "sent"), s2, sizeof(s2)),
				      count(jint(e, "rejected"), s3, sizeof(s3)) };

		snprintf(id, sizeof(id), "%lld", (long long)jint(e, "id"));
		(void)ctl_table_add(&t, row);
	}
	print_table(&t, "No runs.");
	print_more(res, "runs");
	json_decref(res);
	return 0;
}

static int cmd_run_show(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "BATCH", "KIND", "STATE", "CONTACTS", "ACTIVITY",
					       "ERRORS" };
	struct ctl_table t;
	json_t *res = NULL, *b;
	int64_t id;
	size_t i;
	int r = one_run(ctl, argc, argv, "run-show", "run.show", &id, &res);

	if (r != 0)
		return r;
	if (ctl->json)
		return print_result(ctl, res);
	print_run(res);
	ctl_table_init(&t, ELEMENTSOF(headers), headers);
	json_array_foreach(json_object_get(res, "batches"), i, b) {
		char n[32], k[32], e[32];
		const char *row[] = { count(jint(b, "batch"), n, sizeof(n)), jstr(b, "kind"),
				      jstr(b, "state"), count(jint(b, "contacts"), k, sizeof(k)),
				      jstr(b, "activity_id"),
				      count(jint(b, "error_count"), e, sizeof(e)) };

		(void)ctl_table_add(&t, row);
	}
	if (t.nrows > 0) {
		printf("\n");
		ctl_table_print(&t, stdout);
	}
	ctl_table_done(&t);
	json_decref(res);
	return 0;
}

static int cmd_rejected(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "csv", no_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{},
	};
	static const char *const headers[] = { "SEQ", "PROFILE", "EMAIL", "REASON CODE", "REASON" };
	bool csv = false, json = ctl->json;
	json_t *all = json_array();
	struct ctl_table t;
	int64_t id, after = 0;
	int c, r;

	if (!all)
		return OOM();
	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		if (c == 'c') {
			csv = true;
		} else if (c == 'j') {
			json = true;
		} else {
			json_decref(all);
			return bad_option(NULL, "rejected", argv);
		}
	}
	if (csv && json) {
		json_decref(all);
		return usage(NULL, "rejected", "--csv and --json exclude each other");
	}
	r = run_id_arg(argc, argv, "rejected", &id);
	if (r != 0) {
		json_decref(all);
		return r;
	}
	/* All pages: the daemon pages to keep each reply under the message limit. */
	for (;;) {
		json_t *res = NULL, *next;

		r = ctl_call(ctl, "rejected", json_pack("{s:I, s:I}", "run", (json_int_t)id,
							"after", (json_int_t)after),
			     NULL, NULL, &res);
		if (r != 0) {
			json_decref(all);
			return r;
		}
		json_array_extend(all, json_object_get(res, "rows"));
		next = json_object_get(res, "next_after");
		after = json_is_integer(next) ? json_integer_value(next) : 0;
		json_decref(res);
		if (after == 0)
			break;
	}
	if (json) {
		ctl_print_json(all);
	} else if (csv) {
		json_t *e;
		size_t i;

		printf("seq,profile_id,email,reason_code,reason,permanent\n");
		json_array_foreach(all, i, e) {
			printf("%lld,", (long long)jint(e, "seq"));
			ctl_csv_field(stdout, jstr(e, "profile_id"));
			fputc(',', stdout);
			ctl_csv_field(stdout, jstr(e, "email"));
			fputc(',', stdout);
			ctl_csv_field(stdout, jstr(e, "reason_code"));
			fputc(',', stdout);
			ctl_csv_field(stdout, jstr(e, "reason"));
			printf(",%s\n",
			       json_is_true(json_object_get(e, "permanent")) ? "yes" : "no");
		}
	} else {
		char empty[64];
		json_t *e;
		size_t i;

		ctl_table_init(&t, ELEMENTSOF(headers), headers);
		json_array_foreach(all, i, e) {
			char seq[32];
			const char *row[] = { count(jint(e, "seq"), seq, sizeof(seq)),
					      jstr(e, "profile_id"), jstr(e, "email"),
					      jstr(e, "reason_code"), jstr(e, "reason") };

			snprintf(seq, sizeof(seq), "%lld", (long long)jint(e, "seq"));
			(void)ctl_table_add(&t, row);
		}
		snprintf(empty, sizeof(empty), "Run %lld has no rejected rows.", (long long)id);
		print_table(&t, empty);
	}
	json_decref(all);
	return 0;
}

static int cmd_status(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = no_args_call(ctl, argc, argv, "status", "status", &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		ctl_print_value(stdout, res, 0);
	return print_result(ctl, res);
}

static int cmd_whoami(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = no_args_call(ctl, argc, argv, "whoami", "whoami", &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		printf("%s (uid %lld): %s\n", jstr(res, "user"), (long long)jint(res, "uid"),
		       jstr(res, "role"));
	return print_result(ctl, res);
}

static int cmd_segments(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "NAME", "MEMBERS", "UPDATED", "DESCRIPTION" };
	struct ctl_table t;
	json_t *res = NULL, *e;
	size_t i;
	int r = no_args_call(ctl, argc, argv, "segments", "segments", &res);

	if (r != 0)
		return r;
	if (ctl->json)
		return print_result(ctl, res);
	ctl_table_init(&t, ELEMENTSOF(headers), headers);
	json_array_foreach(res, i, e) {
		char m[32], u[32];
		const char *row[] = { jstr(e, "name"), count(jint(e, "members"), m, sizeof(m)),
				      ctl_format_time(jint(e, "updated_at"), u, sizeof(u)),
				      jstr(e, "description") };

		(void)ctl_table_add(&t, row);
	}
	print_table(&t, "No segments yet.");
	json_decref(res);
	return 0;
}

static int cmd_audit(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "ID", "AT", "USER", "ACTION", "OBJECT" };
	json_t *args = NULL, *res = NULL, *e;
	struct ctl_table t;
	size_t i;
	int r = paging_args(argc, argv, "audit", &args);

	if (r != 0)
		return r;
	if (optind != argc) {
		json_decref(args);
		return usage(NULL, "audit", "unexpected argument \"%s\"", argv[optind]);
	}
	r = ctl_call(ctl, "audit", args, NULL, NULL, &res);
	if (r != 0)
		return r;
	if (ctl->json)
		return print_result(ctl, res);
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
	print_table(&t, "The audit log is empty.");
	print_more(res, "audit");
	json_decref(res);
	return 0;
}

/* ---- import ---- */

static const char *guess_format(const char *path)
{
	const char *dot = strrchr(path, '.');

	if (!dot)
		return NULL;
	if (strcasecmp(dot, ".csv") == 0)
		return "csv";
	if (strcasecmp(dot, ".jsonl") == 0 || strcasecmp(dot, ".ndjson") == 0)
		return "jsonl";
	return NULL;
}

static int cmd_import(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "segment", required_argument, NULL, 's' },
		{},
	};
	const char *format = NULL, *segment = NULL, *kind, *path;
	_cleanup_free_ unsigned char *buf = NULL;
	_cleanup_free_ char *segment_buf = NULL;
	_cleanup_close_ int fd = -1;
	bool tty = isatty(STDERR_FILENO);
	json_t *args, *res = NULL;
	int c, r;

	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		if (c == 'f')
			format = optarg;
		else if (c == 's')
			segment = optarg;
		else
			return bad_option(NULL, "import", argv);
	}
	if (optind + 2 != argc)
		return usage(NULL, "import", "expected profiles|segment and FILE");
	kind = argv[optind];
	path = argv[optind + 1];
	if (!streq(kind, "profiles") && !streq(kind, "segment"))
		return usage(NULL, "import", "what to import must be \"profiles\" or \"segment\", "
			     "not \"%s\"", kind);
	if (!format)
		format = guess_format(path);
	if (!format)
		return usage(NULL, "import", "cannot tell the format of \"%s\" from its name; give "
			     "--format=csv or --format=jsonl", path);
	if (streq(kind, "segment") && !segment) {
		const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
		const char *dot = strrchr(base, '.');

		if (streq(path, "-"))
			return usage(NULL, "import", "--segment=NAME is required when reading "
				     "standard input");
		segment_buf = strndup(base, dot ? (size_t)(dot - base) : strlen(base));
		if (!segment_buf)
			return OOM();
		segment = segment_buf;
	}
	if (streq(kind, "profiles") && segment)
		return usage(NULL, "import", "--segment is only for \"import segment\"");
	fd = streq(path, "-") ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ctl_fail(errno == ENOENT ? CTLPROTO_EXIT_NOT_FOUND : CTLPROTO_EXIT_FAILED,
				"%s: %s", path, strerror(errno));
	buf = malloc(CTLPROTO_IMPORT_CHUNK);
	if (!buf)
		return OOM();

	args = json_pack("{s:s, s:s}", "kind", kind, "format", format);
	if (!args || (segment && set_str(args, "segment", segment) < 0)) {
		json_decref(args);
		return OOM();
	}
	r = ctl_call(ctl, "import", args, NULL, NULL, NULL);
	if (r != 0)
		return r;
	for (;;) {
		_cleanup_free_ char *b64 = NULL;
		ssize_t n = read(fd, buf, CTLPROTO_IMPORT_CHUNK);
		json_t *info = NULL;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ctl_fail(CTLPROTO_EXIT_FAILED, "%s: %s (nothing was imported)", path,
					strerror(errno));
		if (n == 0)
			break;
		b64 = ctlproto_base64_encode(buf, (size_t)n);
		if (!b64)
			return OOM();
		/* One chunk at a time, each acknowledged: the daemon never buffers a file. */
		r = ctl_call(ctl, "import.data", json_pack("{s:s}", "data", b64), NULL, NULL,
			     &info);
		if (r != 0)
			return r;
		if (tty && !ctl->json) {
			char a[32];

			fprintf(stderr, "\r\033[Ksent %s bytes",
				count(jint(info, "bytes"), a, sizeof(a)));
			if (json_is_integer(json_object_get(info, "rows")))
				fprintf(stderr, ", %s rows",
					count(jint(info, "rows"), a, sizeof(a)));
		}
		json_decref(info);
	}
	if (tty && !ctl->json)
		fputc('\n', stderr);
	r = ctl_call(ctl, "import.end", NULL, NULL, NULL, &res);
	if (r != 0)
		return r;
	if (!ctl->json) {
		printf("Imported %s from %s:\n", kind, path);
		ctl_print_value(stdout, res, 2);
	}
	return print_result(ctl, res);
}

/* ---- the table of verbs ---- */

#define COMMON_EXIT                                                                                \
	"\nExit status: 0 ok, 1 failed, 2 usage or invalid argument, 3 not found, 4 permission "   \
	"denied,\n5 conflict/busy/precondition not met, 69 ccsyncd unreachable.\n"

const struct ctl_verb ctl_verbs[] = {
	{ "connection", "add", cmd_connection_add,
	  "NAME --client-id=KEY [--flow=device|pkce|code] "
	  "[--usable-by=admins|admins_and_contributors]",
	  "Adds a connection to a Constant Contact account (admins only). KEY is the API key of\n"
	  "the Constant Contact application. --flow picks how it is authorized (default device);\n"
	  "--usable-by says who may build exports on it (default admins).\n" COMMON_EXIT,
	  "Add a connection to a Constant Contact account" },
	{ "connection", "list", cmd_connection_list, "[--names]",
	  "Lists connections (contributors see those they may use). --names prints names only.\n"
	  COMMON_EXIT,
	  "List connections" },
	{ "connection", "show", cmd_connection_show, "NAME",
	  "Shows a connection: flow, authorization state, consent, exports. Tokens are never\n"
	  "shown to anyone.\n" COMMON_EXIT,
	  "Show a connection" },
	{ "connection", "edit", cmd_connection_edit,
	  "NAME [--name=NEW] [--client-id=KEY] [--flow=F] [--usable-by=U]",
	  "Changes a connection (admins only). A new API key or flow deletes the stored tokens:\n"
	  "authorize it again afterwards.\n" COMMON_EXIT,
	  "Change a connection" },
	{ "connection", "remove", cmd_connection_remove, "NAME",
	  "Removes a connection at once (admins only): its running exports are cancelled, its\n"
	  "stored tokens deleted, and its exports disabled with the reason recorded.\n"
	  COMMON_EXIT,
	  "Remove a connection" },
	{ "connection", "authorize", cmd_connection_authorize, "NAME [--code=REDIRECT-URL]",
	  "Authorizes ccsync to use the account (admins only). The device flow shows a code to\n"
	  "enter at Constant Contact and waits; the pkce and code flows print a URL to open, then\n"
	  "take the address you were redirected to with --code.\n" COMMON_EXIT,
	  "Authorize ccsync to use a connection's account" },
	{ "connection", "consent", cmd_connection_consent, "NAME [--revoke]",
	  "Records that you, by name, agree to send this data to the account (admins only). No\n"
	  "export on the connection runs without it. --revoke withdraws it.\n" COMMON_EXIT,
	  "Record or revoke data-privacy consent" },
	{ NULL, "lists", cmd_lists, "CONNECTION",
	  "Lists the Constant Contact lists of a connection's account: ID, name, member count.\n"
	  COMMON_EXIT,
	  "List the Constant Contact lists of a connection" },
	{ "export", "add", cmd_export_add,
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
	{ "export", "list", cmd_export_list, "[--names]",
	  "Lists exports (contributors see those on connections they may use).\n" COMMON_EXIT,
	  "List exports" },
	{ "export", "show", cmd_export_show, "NAME", "Shows an export's settings.\n" COMMON_EXIT,
	  "Show an export's settings" },
	{ "export", "edit", cmd_export_edit,
	  "NAME [--name=NEW] [the options of export add...] [--clear=SETTING...]",
	  "Changes an export. --segment and --field replace the whole list of segments or further\n"
	  "fields. --clear removes first-name-field, last-name-field, fields,\n"
	  "mirror-max-remove-share, cron or time-zone (back to the default). The list and\n"
	  "connection of an export that has run cannot change.\n" COMMON_EXIT,
	  "Change an export" },
	{ "export", "remove", cmd_export_remove, "NAME",
	  "Removes an export; a run in progress is cancelled. Its run history is kept.\n"
	  COMMON_EXIT,
	  "Remove an export" },
	{ "export", "enable", cmd_export_enable, "NAME",
	  "Enables an export: it runs on its schedule again.\n" COMMON_EXIT,
	  "Enable an export" },
	{ "export", "disable", cmd_export_disable, "NAME [--reason=TEXT]",
	  "Disables an export: no scheduled or manual run until enabled.\n" COMMON_EXIT,
	  "Disable an export" },
	{ NULL, "run", cmd_run, "EXPORT [--follow] [--dry-run] [--full] [--force]",
	  "Runs an export now. --follow shows progress until it ends (a progress bar on a\n"
	  "terminal, one line per update otherwise; with --json, one JSON object per line) and\n"
	  "exits 0 only if the run succeeded (possibly with rejected rows). --dry-run plans "
	  "without\n"
	  "sending; --full resends every contact; --force passes the mirror removal guard.\n"
	  COMMON_EXIT,
	  "Run an export now" },
	{ NULL, "cancel", cmd_cancel, "RUN", "Cancels a queued or running run.\n" COMMON_EXIT,
	  "Cancel a queued or running run" },
	{ NULL, "refresh-done", cmd_refresh_done, "",
	  "Tells ccsyncd that upstream finished refreshing the data: every export that follows\n"
	  "refreshes runs.\n" COMMON_EXIT,
	  "Tell ccsyncd that upstream finished a refresh" },
	{ NULL, "runs", cmd_runs, "[EXPORT] [--limit=N] [--before=RUN]",
	  "Lists runs, newest first (default 20).\n" COMMON_EXIT,
	  "List runs, newest first" },
	{ NULL, "run-show", cmd_run_show, "RUN", "Shows a run with its batches.\n" COMMON_EXIT,
	  "Show a run with its batches" },
	{ NULL, "rejected", cmd_rejected, "RUN [--csv|--json]",
	  "Lists the rows a run rejected, with their reasons.\n" COMMON_EXIT,
	  "List the rows a run rejected, with reasons" },
	{ NULL, "status", cmd_status, "",
	  "Shows the daemon's state: next refresh, running exports, request budget.\n"
	  COMMON_EXIT,
	  "Show the daemon's state" },
	{ NULL, "segments", cmd_segments, "", "Lists segments with member counts.\n" COMMON_EXIT,
	  "List segments with member counts" },
	{ NULL, "import", cmd_import, "profiles|segment FILE [--format=csv|jsonl] [--segment=NAME]",
	  "Imports profiles, or the complete membership of a segment, from CSV or JSON Lines\n"
	  "(admins only). FILE - reads standard input. The segment's name defaults to the file's\n"
	  "name without extension. All or nothing: an error names the line and imports nothing.\n"
	  COMMON_EXIT,
	  "Import profiles or a segment's membership" },
	{ NULL, "audit", cmd_audit, "[--limit=N] [--before=ID]",
	  "Shows the audit log, newest first (admins only).\n" COMMON_EXIT,
	  "Show the audit log" },
	{ NULL, "whoami", cmd_whoami, "", "Shows your user and role as ccsyncd sees them.\n"
	  COMMON_EXIT,
	  "Show your user and role" },
};

const size_t ctl_n_verbs = ELEMENTSOF(ctl_verbs);
