/* SPDX-License-Identifier: MIT */
/* ccsyncctl connection add|list|show|edit|remove|consent|authorize, and lists. */
#include <getopt.h>
#include <stdio.h>

#include "ctl-internal.h"
#include "ctl-output.h"
#include "util.h"

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

/*
 * connection add and connection edit: the same options, under their request names; edit adds
 * --name. Two option tables, so that add's getopt sees no --name at all.
 */
static int connection_save(struct ctl *ctl, int argc, char **argv, bool edit)
{
	static const struct option add_opts[] = {
		{ "client-id", required_argument, NULL, 'k' },
		{ "flow", required_argument, NULL, 'f' },
		{ "usable-by", required_argument, NULL, 'u' },
		{},
	};
	static const struct option edit_opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "client-id", required_argument, NULL, 'k' },
		{ "flow", required_argument, NULL, 'f' },
		{ "usable-by", required_argument, NULL, 'u' },
		{},
	};
	const char *verb = edit ? "edit" : "add";
	json_t *args = json_object(), *res = NULL, *conn;
	int c, r;

	if (!args)
		return OOM();
	FOR_EACH_OPTION(argc, argv, "", edit ? edit_opts : add_opts, c) {
		const char *key = c == 'n' ? "name" : c == 'k' ? "client_id" :
				  c == 'f' ? "auth_flow" : c == 'u' ? "usable_by" : NULL;

		if (!key) {
			json_decref(args);
			return ctl_bad_option("connection", verb, argv);
		}
		if (ctl_set_str(args, key, optarg) < 0) {
			json_decref(args);
			return OOM();
		}
	}
	if (optind + 1 != argc) {
		json_decref(args);
		return ctl_usage("connection", verb, "expected exactly one NAME");
	}
	if (!edit && !json_object_get(args, "client_id")) {
		json_decref(args);
		return ctl_usage("connection", "add", "--client-id=KEY is required (the API key of "
				 "your Constant Contact application)");
	}
	if (ctl_set_str(args, edit ? "connection" : "name", argv[optind]) < 0) {
		json_decref(args);
		return OOM();
	}
	r = ctl_call(ctl, edit ? "connection.edit" : "connection.add", args, NULL, NULL, &res);
	if (r != 0)
		return r;
	conn = json_object_get(res, "connection");
	if (!ctl->json && !edit) {
		printf("Connection \"%s\" added (id %lld).\n", jstr(conn, "name"),
		       (long long)jint(conn, "id"));
		printf("Next: record data-privacy consent with 'ccsyncctl connection consent %s' "
		       "and authorize it with 'ccsyncctl connection authorize %s'.\n",
		       jstr(conn, "name"), jstr(conn, "name"));
	} else if (!ctl->json) {
		printf("Connection \"%s\" changed.\n", jstr(conn, "name"));
		if (json_is_true(json_object_get(res, "authorization_reset")))
			printf("Its API key or flow changed: stored tokens were deleted; "
			       "authorize it again with 'ccsyncctl connection authorize %s'.\n",
			       jstr(conn, "name"));
	}
	return ctl_print_result(ctl, res);
}

int ctl_cmd_connection_add(struct ctl *ctl, int argc, char **argv)
{
	return connection_save(ctl, argc, argv, false);
}

int ctl_cmd_connection_edit(struct ctl *ctl, int argc, char **argv)
{
	return connection_save(ctl, argc, argv, true);
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
	ctl_print_table(&t, "No connections. Add one with 'ccsyncctl connection add'.");
}

int ctl_cmd_connection_list(struct ctl *ctl, int argc, char **argv)
{
	return ctl_list_names(ctl, "connection.list", "connection", argc, argv, connection_table);
}

int ctl_cmd_connection_show(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = ctl_one_name(ctl, argc, argv, "connection", "show", "connection.show", "connection",
			     &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		print_connection(res);
	return ctl_print_result(ctl, res);
}

int ctl_cmd_connection_remove(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = ctl_one_name(ctl, argc, argv, "connection", "remove", "connection.remove",
			     "connection", &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		printf("Connection \"%s\" removed: %lld export(s) disabled, stored tokens %s, its "
		       "runs cancelled.\n", jstr(json_object_get(res, "connection"), "name"),
		       (long long)jint(res, "exports_disabled"),
		       json_is_true(json_object_get(res, "tokens_deleted")) ? "deleted" :
									      "(none) deleted");
	return ctl_print_result(ctl, res);
}

int ctl_cmd_connection_consent(struct ctl *ctl, int argc, char **argv)
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
			return ctl_bad_option("connection", "consent", argv);
		revoke = true;
	}
	if (optind + 1 != argc)
		return ctl_usage("connection", "consent", "expected exactly one NAME");
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
	return ctl_print_result(ctl, res);
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

int ctl_cmd_connection_authorize(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = ctl_one_name_with(ctl, argc, argv, "connection", "authorize",
				  "connection.authorize", "connection", "code",
				  on_authorize_progress, &res);

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
	return ctl_print_result(ctl, res);
}

int ctl_cmd_lists(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "LIST ID", "NAME", "MEMBERS" };
	struct ctl_table t;
	json_t *res = NULL, *e;
	size_t i;
	int r = ctl_one_name(ctl, argc, argv, NULL, "lists", "lists", "connection", &res);

	if (r != 0)
		return r;
	if (ctl->json)
		return ctl_print_result(ctl, res);
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
