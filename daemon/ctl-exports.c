/* SPDX-License-Identifier: MIT */
/* ccsyncctl export add|list|show|edit|remove|enable|disable. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-internal.h"
#include "ctl-output.h"
#include "util.h"

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
	ctl_print_table(&t, "No exports. Add one with 'ccsyncctl export add'.");
}

int ctl_cmd_export_list(struct ctl *ctl, int argc, char **argv)
{
	return ctl_list_names(ctl, "export.list", "export", argc, argv, export_table);
}

int ctl_cmd_export_show(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int r = ctl_one_name(ctl, argc, argv, "export", "show", "export.show", "export", &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		print_export(res);
	return ctl_print_result(ctl, res);
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
				r = ctl_usage("export", verb, "--field expects TARGET=ATTRIBUTE, "
					      "e.g. --field job_title=title or --field "
					      "cf:tier=tier, not \"%s\"", optarg);
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
				r = ctl_usage("export", verb, "--mirror-max-remove-share expects a "
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
				r = ctl_usage("export", verb, "--follows-refresh expects yes or "
					      "no, not \"%s\"", optarg);
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
				r = ctl_usage("export", verb, "--clear accepts first-name-field, "
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
		if (key && ctl_set_str(args, key, optarg) < 0)
			goto oom;
	}
	if (optind + 1 != argc) {
		r = ctl_usage("export", verb, "expected exactly one NAME");
		goto out;
	}
	if (ctl_set_str(args, edit ? "export" : "name", argv[optind]) < 0)
		goto oom;
	if (fields && json_object_set(args, "fields", fields) < 0)
		goto oom;
	if (segments && json_object_set(args, "segments", segments) < 0)
		goto oom;
	if (!edit && (!json_object_get(args, "connection") || !json_object_get(args, "list_id") ||
		      !json_object_get(args, "email_field") || !segments)) {
		r = ctl_usage("export", verb, "--connection, --list-id, --email-field and at "
			      "least one --segment are required");
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
	r = ctl_print_result(ctl, TAKE_PTR(res));
	goto out;
bad:
	r = ctl_bad_option("export", verb, argv);
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

int ctl_cmd_export_add(struct ctl *ctl, int argc, char **argv)
{
	return export_save(ctl, argc, argv, false);
}

int ctl_cmd_export_edit(struct ctl *ctl, int argc, char **argv)
{
	return export_save(ctl, argc, argv, true);
}

/* export remove, enable, disable: one NAME, at most one option, one line of result. */
static int export_simple(struct ctl *ctl, int argc, char **argv, const char *verb,
			 const char *command, const char *option, const char *done)
{
	json_t *res = NULL;
	int r = ctl_one_name_with(ctl, argc, argv, "export", verb, command, "export", option, NULL,
				  &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		printf("Export \"%s\" %s.\n", jstr(json_object_get(res, "export"), "name"), done);
	return ctl_print_result(ctl, res);
}

int ctl_cmd_export_remove(struct ctl *ctl, int argc, char **argv)
{
	return export_simple(ctl, argc, argv, "remove", "export.remove", NULL,
			     "removed (a run in progress is cancelled)");
}

int ctl_cmd_export_enable(struct ctl *ctl, int argc, char **argv)
{
	return export_simple(ctl, argc, argv, "enable", "export.enable", NULL, "enabled");
}

int ctl_cmd_export_disable(struct ctl *ctl, int argc, char **argv)
{
	return export_simple(ctl, argc, argv, "disable", "export.disable", "reason", "disabled");
}
