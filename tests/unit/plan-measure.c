/* SPDX-License-Identifier: MIT */
/*
 * Measures the data side of a full export at scale; not a test (no assertions on time).
 *
 *   plan-measure [DATABASE [PROFILES]]     (defaults: /tmp/ccsync-plan-measure.db, 1000000)
 *
 * Builds (once) a database of PROFILES profiles with 5 attributes each, 3 of them mapped (email,
 * first and last name) and 2 not (city, plan), all members of one segment. Then each phase runs
 * in a child process of its own, so that its CPU time and peak RSS (getrusage RUSAGE_SELF) are
 * its own:
 *
 *   open          store_open only: the baseline to subtract
 *   plan          plan_new + every item of a first run (everything new)
 *   plan+confirm  the executor's data path: a counting pass (rejections only), the totals
 *                 recorded, then a second pass streaming the contacts to send on one
 *                 connection while every 40,000 are confirmed (store_data_batch_confirm,
 *                 sync state and counters in one transaction) on a second
 *   unchanged     a re-plan with nothing changed
 *   churn 1%      a re-plan after upstream changed 1% of the profiles
 */
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "email.h"
#include "plan.h"
#include "store-data.h"
#include "store.h"

#define BATCH 40000

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "plan-measure: %s: %s\n", what, detail);
	exit(1);
}

static void exec_sql(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		die(sql, msg);
}

static void generate(const char *path, long n)
{
	struct store *s = NULL;
	char err[512], pid[32], attrs[256];
	sqlite3_stmt *p, *m;
	sqlite3 *db;

	if (store_open(path, STORE_OPEN_CREATE, 5000, &s, err, sizeof(err)) < 0)
		die("store_open", err);
	store_free(s);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		die("open", path);
	exec_sql(db,
		 "BEGIN IMMEDIATE;"
		 "INSERT INTO connections (connection_id, name, client_id) VALUES (1, 'c', 'x');"
		 "INSERT INTO exports (export_id, name, connection_id, list_id, email_field, "
		 "first_name_field, last_name_field) VALUES (1, 'measure', 1, "
		 "'04fe9a97-a579-43c5-bb1a-58ed29bf0a6a', 'email', 'first', 'last');"
		 "INSERT INTO segments (segment_id, name) VALUES (1, 'all');"
		 "INSERT INTO export_segments VALUES (1, 1);");
	if (sqlite3_prepare_v2(db, "INSERT INTO profiles (profile_id, attributes) VALUES (?1, ?2)",
			       -1, &p, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "INSERT INTO segment_members VALUES (1, ?1)", -1, &m, NULL) !=
		    SQLITE_OK)
		die("prepare", sqlite3_errmsg(db));
	for (long i = 0; i < n; i++) {
		/* Ids and emails in unrelated orders, as in real data. */
		long e = (i * 7919) % n;

		snprintf(pid, sizeof(pid), "cust-%08ld", i);
		snprintf(attrs, sizeof(attrs),
			 "{\"email\":\"Customer.%ld@Example.com\",\"first\":\"First%ld\","
			 "\"last\":\"Last%ld\",\"city\":\"City %ld\",\"plan\":\"gold\"}",
			 e, i, i, i % 1000);
		sqlite3_bind_text(p, 1, pid, -1, SQLITE_STATIC);
		sqlite3_bind_text(p, 2, attrs, -1, SQLITE_STATIC);
		sqlite3_bind_text(m, 1, pid, -1, SQLITE_STATIC);
		if (sqlite3_step(p) != SQLITE_DONE || sqlite3_step(m) != SQLITE_DONE)
			die("insert", sqlite3_errmsg(db));
		sqlite3_reset(p);
		sqlite3_reset(m);
	}
	sqlite3_finalize(p);
	sqlite3_finalize(m);
	exec_sql(db, "COMMIT; PRAGMA wal_checkpoint(TRUNCATE);");
	sqlite3_close(db);
}

static void churn(const char *path, long n)
{
	sqlite3 *db;
	char sql[256];

	if (sqlite3_open(path, &db) != SQLITE_OK)
		die("open", path);
	snprintf(sql, sizeof(sql),
		 "UPDATE profiles SET attributes = json_set(attributes, '$.first', 'Changed') "
		 "WHERE CAST(substr(profile_id, 6) AS INTEGER) %% 100 = 42 AND %ld > 0",
		 n);
	exec_sql(db, sql);
	sqlite3_close(db);
}

static double seconds(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void report(const char *phase, const struct timespec *t0, uint64_t items, const char *extra)
{
	struct rusage ru;
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	getrusage(RUSAGE_SELF, &ru);
	printf("%-13s cpu %6.2f s (user %5.2f, sys %4.2f)  wall %6.2f s  peak RSS %6.1f MiB  "
	       "%9" PRIu64 " items  %s\n",
	       phase, seconds(ru.ru_utime) + seconds(ru.ru_stime), seconds(ru.ru_utime),
	       seconds(ru.ru_stime),
	       (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9,
	       (double)ru.ru_maxrss / 1024.0, items, extra);
	fflush(stdout);
}

static struct store *open_store(const char *path)
{
	struct store *s = NULL;
	char err[512];

	if (store_open(path, 0, 5000, &s, err, sizeof(err)) < 0)
		die("store_open", err);
	return s;
}

static void phase_plan(const char *path, const char *name)
{
	struct timespec t0;
	const struct plan_item *it;
	struct plan *p = NULL;
	struct store *s;
	char err[512], extra[256];
	uint64_t items = 0;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	s = open_store(path);
	if (plan_new(s, 1, NULL, &p, err, sizeof(err)) < 0)
		die("plan_new", err);
	while ((r = plan_next(p, &it, err, sizeof(err))) > 0)
		items++;
	if (r < 0)
		die("plan_next", err);
	snprintf(extra, sizeof(extra),
		 "(selected %" PRIu64 ", send %" PRIu64 ", unchanged %" PRIu64 ", rejected %" PRIu64
		 ")",
		 plan_counters(p)->selected, plan_counters(p)->to_send, plan_counters(p)->unchanged,
		 plan_counters(p)->rejected);
	plan_free(p);
	store_free(s);
	report(name, &t0, items, extra);
}

/* The executor's data path: stream the plan, confirm every BATCH contacts on a second
 * connection (the plan's connection holds the snapshot and cannot write). */
static void phase_plan_confirm(const char *path)
{
	struct store_data_run_request req = { .export_id = 1,
					      .trigger = STORE_DATA_TRIGGER_DEMAND };
	struct store_data_sync_entry *batch = calloc(BATCH, sizeof(*batch));
	char(*emails)[EMAIL_MAX_LENGTH + 1] = calloc(BATCH, sizeof(*emails));
	const struct plan_item *it;
	struct store *s, *w;
	struct plan *p = NULL;
	struct timespec t0;
	int64_t run = 0, batch_no = 0;
	uint64_t items = 0;
	char err[512];
	size_t n = 0;
	int r;

	if (!batch || !emails)
		die("calloc", "out of memory");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	s = open_store(path);
	w = open_store(path);
	if (store_data_run_create(w, &req, &run, err, sizeof(err)) < 0 ||
	    store_data_run_set_state(w, run, STORE_DATA_RUN_RUNNING, NULL, err, sizeof(err)) < 0)
		die("run", err);
	{
		struct plan_options o = { .items = PLAN_ITEM_REJECT };
		const struct plan_counters *c;

		if (plan_new(s, 1, &o, &p, err, sizeof(err)) < 0)
			die("plan_new", err);
		while ((r = plan_next(p, &it, err, sizeof(err))) > 0)
			; /* a real executor stores these with store_data_rejected_add */
		if (r < 0)
			die("plan_next", err);
		c = plan_counters(p);
		if (store_data_run_set_plan(w, run, (int64_t)c->selected, (int64_t)c->unchanged,
					    (int64_t)c->already_sent, (int64_t)c->to_send, err,
					    sizeof(err)) < 0)
			die("set_plan", err);
		if (plan_rewind(p, PLAN_ITEM_SEND, err, sizeof(err)) < 0)
			die("plan_rewind", err);
	}
	for (;;) {
		r = plan_next(p, &it, err, sizeof(err));
		if (r < 0)
			die("plan_next", err);
		if (r > 0 && it->kind == PLAN_ITEM_SEND) {
			snprintf(emails[n], sizeof(emails[n]), "%s", it->email);
			batch[n] = (struct store_data_sync_entry){ .email = emails[n],
								   .fields_hash = it->fields_hash,
								   .added_by_ccsync = true };
			n++;
			items++;
		}
		if (n == BATCH || (r == 0 && n > 0)) {
			struct store_data_confirmation c = { .synced = batch, .n_synced = n };

			batch_no++;
			if (store_data_batch_add(w, run, batch_no, STORE_DATA_BATCH_IMPORT,
						 (int64_t)n, 0, err, sizeof(err)) < 0 ||
			    store_data_batch_submitted(w, run, batch_no, "measure", err,
						       sizeof(err)) < 0 ||
			    store_data_batch_confirm(w, run, batch_no, &c, err, sizeof(err)) < 0)
				die("confirm", err);
			n = 0;
		}
		if (r == 0)
			break;
	}
	plan_free(p);
	if (store_data_run_set_state(w, run, STORE_DATA_RUN_SUCCEEDED, NULL, err, sizeof(err)) < 0)
		die("finish", err);
	store_free(s);
	store_free(w);
	free(batch);
	free(emails);
	report("plan+confirm", &t0, items, "(sync state committed per 40,000-contact batch)");
}

static void phase_open(const char *path)
{
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	store_free(open_store(path));
	report("open", &t0, 0, "(baseline)");
}

static void in_child(void (*fn)(const char *), const char *path)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		die("fork", strerror(errno));
	if (pid == 0) {
		fn(path);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("phase", "a child failed");
}

static void plan_first(const char *path)
{
	phase_plan(path, "plan");
}

static void plan_unchanged(const char *path)
{
	phase_plan(path, "unchanged");
}

static void plan_churn(const char *path)
{
	phase_plan(path, "churn 1%");
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/tmp/ccsync-plan-measure.db";
	long n = argc > 2 ? strtol(argv[2], NULL, 10) : 1000000;
	struct stat st;
	char wal[4096];

	if (n <= 0)
		die("PROFILES", "must be a positive number");
	if (stat(path, &st) == 0) {
		/* Start from a database without sync state, whatever an earlier run left. */
		unlink(path);
		snprintf(wal, sizeof(wal), "%s-wal", path);
		unlink(wal);
		snprintf(wal, sizeof(wal), "%s-shm", path);
		unlink(wal);
	}
	printf("generating %ld profiles in %s ...\n", n, path);
	fflush(stdout);
	generate(path, n);
	in_child(phase_open, path);
	in_child(plan_first, path);
	in_child(phase_plan_confirm, path);
	in_child(plan_unchanged, path);
	churn(path, n);
	in_child(plan_churn, path);
	return 0;
}
