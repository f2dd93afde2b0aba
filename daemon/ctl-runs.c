/* SPDX-License-Identifier: MIT */
/* ccsyncctl run, cancel, refresh-done, runs, run-show, rejected, segments. */
#include <getopt.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "ctl-internal.h"
#include "ctl-output.h"
#include "util.h"

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

int ctl_cmd_run(struct ctl *ctl, int argc, char **argv)
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
			return ctl_bad_option(NULL, "run", argv);
		}
	}
	if (optind + 1 != argc)
		return ctl_usage(NULL, "run", "expected exactly one EXPORT");
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
		return ctl_print_result(ctl, res);
	}
	if (!ctl->json)
		print_run(res);
	state = jstr(res, "state");
	r = state && (streq(state, "succeeded") || streq(state, "partially_succeeded")) ? 0 :
		CTLPROTO_EXIT_FAILED;
	ctl_print_result(ctl, res);
	return r;
}

static int run_id_arg(int argc, char **argv, const char *verb, int64_t *ret)
{
	if (optind + 1 != argc)
		return ctl_usage(NULL, verb, "expected exactly one RUN id");
	if (!ctl_parse_int(argv[optind], 1, CTLPROTO_MAX_ID, ret))
		return ctl_usage(NULL, verb, "RUN must be a run id (a positive number), not \"%s\"",
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
		return ctl_bad_option(NULL, verb, argv);
	r = run_id_arg(argc, argv, verb, &id);
	if (r != 0)
		return r;
	*ret_id = id;
	return ctl_call(ctl, command, json_pack("{s:I}", "run", (json_int_t)id), NULL, NULL, ret);
}

int ctl_cmd_cancel(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL;
	int64_t id;
	int r = one_run(ctl, argc, argv, "cancel", "cancel", &id, &res);

	if (r != 0)
		return r;
	if (!ctl->json)
		printf("Run %lld: %s.\n", (long long)id, jstr(res, "state") ?: "cancelling");
	return ctl_print_result(ctl, res);
}

int ctl_cmd_refresh_done(struct ctl *ctl, int argc, char **argv)
{
	json_t *res = NULL, *runs, *v;
	size_t i;
	int r = ctl_no_args_call(ctl, argc, argv, "refresh-done", "refresh_done", &res);

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
	return ctl_print_result(ctl, res);
}

int ctl_cmd_runs(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "RUN", "EXPORT", "STATE", "TRIGGER", "QUEUED",
					       "FINISHED", "SELECTED", "SENT", "REJECTED" };
	json_t *res = NULL, *e;
	struct ctl_table t;
	size_t i;
	int r = ctl_paged_call(ctl, argc, argv, "runs", "export", "EXPORT", &res);

	if (r != 0)
		return r;
	if (ctl->json)
		return ctl_print_result(ctl, res);
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
	ctl_print_table(&t, "No runs.");
	ctl_print_more(res, "runs");
	json_decref(res);
	return 0;
}

int ctl_cmd_run_show(struct ctl *ctl, int argc, char **argv)
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
		return ctl_print_result(ctl, res);
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

int ctl_cmd_rejected(struct ctl *ctl, int argc, char **argv)
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
			return ctl_bad_option(NULL, "rejected", argv);
		}
	}
	if (csv && json) {
		json_decref(all);
		return ctl_usage(NULL, "rejected", "--csv and --json exclude each other");
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
		ctl_print_table(&t, empty);
	}
	json_decref(all);
	return 0;
}

int ctl_cmd_segments(struct ctl *ctl, int argc, char **argv)
{
	static const char *const headers[] = { "NAME", "MEMBERS", "UPDATED", "DESCRIPTION" };
	struct ctl_table t;
	json_t *res = NULL, *e;
	size_t i;
	int r = ctl_no_args_call(ctl, argc, argv, "segments", "segments", &res);

	if (r != 0)
		return r;
	if (ctl->json)
		return ctl_print_result(ctl, res);
	ctl_table_init(&t, ELEMENTSOF(headers), headers);
	json_array_foreach(res, i, e) {
		char m[32], u[32];
		const char *row[] = { jstr(e, "name"), count(jint(e, "members"), m, sizeof(m)),
				      ctl_format_time(jint(e, "updated_at"), u, sizeof(u)),
				      jstr(e, "description") };

		(void)ctl_table_add(&t, row);
	}
	ctl_print_table(&t, "No segments yet.");
	json_decref(res);
	return 0;
}
