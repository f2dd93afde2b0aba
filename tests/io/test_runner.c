/* SPDX-License-Identifier: MIT */
/*
 * The run executor on a real loop, a real database, the real Constant Contact client and the
 * fake Constant Contact over HTTPS (started once, with --no-limits and a short activity delay).
 * Assertions read the fake's list state and statistics and the run history in the database.
 * Every test ends with uv_loop_close() == 0.
 *
 * RUNNER_TEST=<name pattern> runs only the matching tests; RUNNER_DEBUG=1 logs at debug level.
 * Set RUNNER_BENCH_PROFILES=N to run only the full-export measurement with N profiles (e.g.
 * 1000000): it prints the process's CPU time and peak RSS around one full export. Figures, not
 * assertions.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <cmocka.h>

#include "ccapi.h"
#include "ccclient.h"
#include "ccfake.h"
#include "config.h"
#include "log.h"
#include "runner.h"
#include "store-auth.h"
#include "store-data.h"
#include "store-internal.h"
#include "store.h"

static struct fake fake;

struct fx {
	struct tmpdir dir;
	char db[PATH_MAX];
	struct store *s;
	uv_loop_t loop;
	struct config cfg;
	struct ccclient_options opt;
	struct ccclient *c;
	struct runner *r;
	char list_id[64];

	/* the last progress seen */
	bool done;
	int finals;
	struct runner_progress last;
	char error[1024];
	int64_t max_batches_seen;

	/* hooks run from the progress callback */
	int64_t stuck_after_batches;  /* >0: set activity_stuck once that many batches are done */
	bool stuck_set;
	int64_t delete_after_batches; /* >0: delete the list once that many batches are done */
	bool deleted;
	bool cancel_when_sending;
	bool drain_when_stuck;
	bool drained;
};

_printf_(2, 3) static void exec(struct fx *f, const char *fmt, ...)
{
	char sql[4096], *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	if (sqlite3_exec(store_db(f->s), sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

_printf_(2, 3) static int64_t qint(struct fx *f, const char *fmt, ...)
{
	char sql[2048];
	sqlite3_stmt *st;
	int64_t v = -1;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	assert_int_equal(sqlite3_prepare_v2(store_db(f->s), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static long long fstat_(const char *path)
{
	json_t *s = fake_ok(&fake, "GET", "/_fake/stats", NULL);
	long long v = fake_int(s, path);

	json_decref(s);
	return v;
}

static void reset_stats(void)
{
	json_decref(fake_ok(&fake, "POST", "/_fake/stats/reset", "{}"));
}

static void faults(const char *body)
{
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", body));
}

/* The fake's list: member count, and whether email is a member with first_name (NULL: any). */
static json_t *list_state(const char *list_id)
{
	char path[256];

	snprintf(path, sizeof(path), "/_fake/state?list_id=%s", list_id);
	return fake_ok(&fake, "GET", path, NULL);
}

static const char *member_first(json_t *st, const char *email)
{
	json_t *m = json_object_get(st, "members"), *v;
	size_t i;

	json_array_foreach (m, i, v)
		if (streq(json_string_value(json_object_get(v, "email")), email))
			return json_string_value(json_object_get(v, "first_name")) ?: "";
	return NULL;
}

static void on_progress(const struct runner_progress *p, void *userdata)
{
	struct fx *f = userdata;

	f->last = *p;
	f->last.export_name = NULL;
	f->last.error = NULL;
	if (p->counters.batches_total > f->max_batches_seen)
		f->max_batches_seen = p->counters.batches_total;
	if (getenv("RUNNER_TRACE_RSS")) {
		long pages = 0, rss = 0;
		FILE *m = fopen("/proc/self/statm", "r");

		if (m && fscanf(m, "%ld %ld", &pages, &rss) == 2)
			printf("# %s: batches %" PRId64 "/%" PRId64 ", RSS %ld MB\n",
			       runner_phase_to_string(p->phase), p->counters.batches_done,
			       p->counters.batches_total, rss * 4 / 1024);
		if (m)
			fclose(m);
	}
	if (p->final) {
		f->finals++;
		f->done = true;
		snprintf(f->error, sizeof(f->error), "%s", p->error ? p->error : "");
		return;
	}
	/* Test hooks: blocking calls to the fake from a callback are fine in a test. */
	if (f->stuck_after_batches && !f->stuck_set &&
	    p->counters.batches_done >= f->stuck_after_batches) {
		faults("{\"activity_stuck\":true}");
		f->stuck_set = true;
	}
	if (f->delete_after_batches && !f->deleted &&
	    p->counters.batches_done >= f->delete_after_batches) {
		char path[256];

		snprintf(path, sizeof(path), "/_fake/lists/%s", f->list_id);
		json_decref(fake_ok(&fake, "DELETE", path, NULL));
		f->deleted = true;
	}
	if (f->cancel_when_sending && p->phase == RUNNER_PHASE_SENDING &&
	    p->counters.batches_total >= 2) {
		char err[256];

		f->cancel_when_sending = false;
		assert_int_equal(runner_cancel(f->r, p->run_id, "test cancel", err, sizeof(err)),
				 0);
	}
}

static void drained(void *userdata)
{
	((struct fx *)userdata)->drained = true;
}

static void mint(struct fx *f)
{
	json_t *t = fake_ok(&fake, "POST", "/_fake/tokens",
			    "{\"client_id\":\"test-client\",\"public\":true}");

	assert_int_equal(store_auth_save_tokens(
				 f->s, 1, json_string_value(json_object_get(t, "access_token")),
				 store_now() + json_integer_value(json_object_get(t, "expires_in")),
				 json_string_value(json_object_get(t, "refresh_token"))),
			 0);
	json_decref(t);
}

static void runner_start(struct fx *f)
{
	char err[512];

	assert_int_equal(runner_new(&f->loop, f->s, f->db, f->c, &f->cfg, &f->r, err, sizeof(err)),
			 0);
}

static void runner_stop(struct fx *f)
{
	runner_close(f->r, NULL, NULL);
	f->r = NULL;
	(void)uv_run(&f->loop, UV_RUN_DEFAULT);
}

/* n profiles p0000001.. with User<i>@Example.com, F<i>, L<i>, all in segment 1. */
static void load_profiles(struct fx *f, int n)
{
	exec(f, "INSERT OR IGNORE INTO segments (segment_id, name) VALUES (1, 'all');"
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
		"INSERT OR REPLACE INTO profiles (profile_id, attributes) "
		"SELECT printf('p%%07d', i), "
		"json_object('email', printf('User%%d@Example.com', i), "
		"'first', printf('F%%d', i), 'last', printf('L%%d', i), 'job', 'dev') FROM n;"
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
		"INSERT OR IGNORE INTO segment_members SELECT 1, printf('p%%07d', i) FROM n;",
		n, n);
}

static void setup_fx(struct fx *f, const char *mode)
{
	char err[512];
	json_t *l;

	json_decref(fake_ok(&fake, "POST", "/_fake/reset", "{}"));
	tmpdir_make(&f->dir);
	tmpdir_file(&f->dir, "ccsync.db", f->db, sizeof(f->db));
	assert_int_equal(store_open(f->db, STORE_OPEN_CREATE, 5000, &f->s, err, sizeof(err)), 0);
	l = fake_ok(&fake, "POST", "/_fake/lists", "{\"name\":\"Customers\"}");
	snprintf(f->list_id, sizeof(f->list_id), "%s",
		 json_string_value(json_object_get(l, "list_id")));
	json_decref(l);
	exec(f,
	     "INSERT INTO connections (connection_id, name, client_id, auth_flow, consent_by, "
	     "consent_at, auth_state) VALUES (1, 'main', 'test-client', 'device', 'root', "
	     "unixepoch(), 'authorized');"
	     "INSERT INTO segments (segment_id, name) VALUES (1, 'all');"
	     "INSERT INTO exports (export_id, name, connection_id, list_id, mode, email_field, "
	     "first_name_field, last_name_field) VALUES (1, 'customers', 1, '%s', '%s', 'email', "
	     "'first', 'last');"
	     "INSERT INTO export_segments VALUES (1, 1);"
	     "INSERT INTO export_fields VALUES (1, 'job_title', 'job');",
	     f->list_id, mode);
	mint(f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	config_init(&f->cfg);
	snprintf(f->cfg.database, sizeof(f->cfg.database), "%s", f->db);
	snprintf(f->cfg.api_base, sizeof(f->cfg.api_base), "%s", fake.api_base);
	snprintf(f->cfg.auth_base, sizeof(f->cfg.auth_base), "%s", fake.auth_base);
	snprintf(f->cfg.ca_file, sizeof(f->cfg.ca_file), "%s", fake.ca_file);
	f->cfg.poll_initial_ms = 20;
	f->cfg.poll_max_ms = 100;
	f->cfg.batch_max_contacts = 1000;
	f->opt.retry_base_ms = 20;
	f->opt.retry_max_ms = 200;
	f->opt.throttle_base_ms = 50;
	assert_int_equal(ccclient_new(&f->loop, f->s, &f->cfg, &f->opt, &f->c, err, sizeof(err)),
			 0);
	runner_start(f);
}

static int setup_upsert(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	setup_fx(f, "upsert");
	*state = f;
	return 0;
}

static int setup_mirror(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	setup_fx(f, "mirror");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	json_decref(fake_ok(&fake, "DELETE", "/_fake/faults", NULL));
	if (f->r)
		runner_close(f->r, NULL, NULL);
	ccclient_close(f->c, NULL, NULL);
	assert_int_equal(fake_loop_finish(&f->loop), 0);
	store_free(f->s);
	tmpdir_remove(&f->dir);
	free(f);
	return 0;
}

struct opts {
	bool dry, full, force;
	enum store_data_trigger trigger;
};

/* Runs export 1 to its end; returns the run id. */
static int64_t run_export(struct fx *f, const struct opts *o)
{
	struct runner_request req = {
		.export_id = 1,
		.trigger = o && o->trigger ? o->trigger : STORE_DATA_TRIGGER_DEMAND,
		.dry_run = o && o->dry,
		.full = o && o->full,
		.force = o && o->force,
		.requested_by = "tester",
		.progress = on_progress,
		.userdata = f,
	};
	char err[512] = "";
	int64_t id = 0;

	f->done = false;
	f->finals = 0;
	f->error[0] = '\0';
	assert_int_equal(runner_request(f->r, &req, &id, err, sizeof(err)), 0);
	assert_true(id > 0);
	fake_run_until(&f->loop, &f->done);
	assert_int_equal(f->finals, 1);
	assert_int_equal(f->last.run_id, id);
	return id;
}

static void assert_adds_up(const struct store_data_counters *c)
{
	assert_int_equal(c->selected, c->sent + c->rejected + c->unchanged + c->pending);
}

static void assert_db_state(struct fx *f, int64_t run_id, const char *state)
{
	char sql[256];
	sqlite3_stmt *st;

	snprintf(sql, sizeof(sql), "SELECT state FROM runs WHERE run_id = %" PRId64, run_id);
	assert_int_equal(sqlite3_prepare_v2(store_db(f->s), sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), state);
	sqlite3_finalize(st);
}

/* ------------------------------------------------------------------ tests */

static void test_upsert_full_rerun_churn(void **state)
{
	struct fx *f = *state;
	struct opts full = { .full = true };
	json_t *st;
	int64_t id;

	load_profiles(f, 5000);
	reset_stats();
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.selected, 5000);
	assert_int_equal(f->last.counters.sent, 5000);
	assert_int_equal(f->last.counters.pending, 0);
	assert_int_equal(f->last.counters.batches_total, 5);
	assert_int_equal(f->last.counters.batches_done, 5);
	assert_int_equal(f->last.plan_adds, 5000);
	assert_adds_up(&f->last.counters);
	assert_db_state(f, id, "succeeded");
	assert_int_equal(fstat_("imports/accepted"), 5);
	assert_int_equal(fstat_("problems_count"), 0);
	assert_int_equal(qint(f, "SELECT count(*) FROM run_batches WHERE run_id = %" PRId64
			      " AND state = 'confirmed' AND activity_id IS NOT NULL", id), 5);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state WHERE export_id = 1"), 5000);
	st = list_state(f->list_id);
	assert_int_equal(fake_int(st, "count"), 5000);
	assert_string_equal(member_first(st, "user1@example.com"), "F1");
	assert_string_equal(member_first(st, "user5000@example.com"), "F5000");
	json_decref(st);

	/* No change: no import at all. */
	reset_stats();
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.unchanged, 5000);
	assert_int_equal(f->last.counters.sent, 0);
	assert_int_equal(f->last.counters.batches_total, 0);
	assert_int_equal(fstat_("requests_by_kind/import"), 0);

	/* 1% churn: 50 changed names → one import of exactly those. */
	exec(f, "UPDATE profiles SET attributes = json_set(attributes, '$.first', 'New') "
		"WHERE CAST(substr(profile_id, 2) AS INTEGER) %% 100 = 7");
	reset_stats();
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.sent, 50);
	assert_int_equal(f->last.counters.unchanged, 4950);
	assert_int_equal(f->last.plan_updates, 50);
	assert_int_equal(fstat_("requests_by_kind/import"), 1);
	assert_int_equal(fstat_("imports/contacts_received"), 50);
	st = list_state(f->list_id);
	assert_int_equal(fake_int(st, "count"), 5000);
	assert_string_equal(member_first(st, "user107@example.com"), "New");
	assert_string_equal(member_first(st, "user108@example.com"), "F108");
	json_decref(st);

	/* --full re-sends everything. */
	reset_stats();
	(void)run_export(f, &full);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.sent, 5000);
	assert_int_equal(fstat_("imports/contacts_received"), 5000);
	assert_int_equal(fstat_("problems_count"), 0);

	/* The journal-facing history: one run row per run, all final. */
	assert_int_equal(qint(f, "SELECT count(*) FROM runs WHERE state = 'succeeded'"), 4);
}

static void test_rejected_rows_and_cc_errors(void **state)
{
	struct fx *f = *state;
	json_t *st;
	char body[1024];
	int64_t id;

	load_profiles(f, 200);
	/* Local rejections: an invalid email, a missing one, a duplicate of user1. */
	exec(f, "INSERT INTO profiles VALUES ('x-bad', '{\"email\":\"not-an-email\"}', 0),"
		"('x-none', '{\"first\":\"Nobody\"}', 0),"
		"('x-dup', '{\"email\":\" USER1@example.com \"}', 0);"
		"INSERT INTO segment_members VALUES (1, 'x-bad'), (1, 'x-none'), (1, 'x-dup'),"
		"(1, 'x-missing-profile');");
	/* CC-side rejection: two contacts already in their maximum of lists; one unsubscribed. */
	json_decref(fake_ok(&fake, "POST", "/_fake/config", "{\"max_lists_per_contact\":1}"));
	st = fake_ok(&fake, "POST", "/_fake/lists", "{\"name\":\"Other\"}");
	snprintf(body, sizeof(body),
		 "{\"contacts\":[{\"email\":\"user10@example.com\",\"list_ids\":[\"%s\"]},"
		 "{\"email\":\"user11@example.com\",\"list_ids\":[\"%s\"]},"
		 "{\"email\":\"user12@example.com\",\"status\":\"unsubscribed\"}]}",
		 json_string_value(json_object_get(st, "list_id")),
		 json_string_value(json_object_get(st, "list_id")));
	json_decref(st);
	json_decref(fake_ok(&fake, "POST", "/_fake/contacts", body));
	reset_stats();

	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_PARTIALLY_SUCCEEDED);
	assert_int_equal(f->last.counters.selected, 204);
	assert_int_equal(f->last.counters.rejected, 6);
	assert_int_equal(f->last.counters.sent, 198);
	assert_int_equal(f->last.counters.pending, 0);
	assert_int_equal(f->last.cannot_add, 1);
	assert_adds_up(&f->last.counters);
	assert_int_equal(qint(f, "SELECT count(*) FROM rejected_rows WHERE run_id = %" PRId64
			      " AND reason_code = 'duplicate' AND profile_id = 'x-dup'", id), 1);
	assert_int_equal(qint(f, "SELECT count(*) FROM rejected_rows WHERE run_id = %" PRId64
			      " AND reason_code = 'email_invalid' AND profile_id = 'x-bad'", id),
			 1);
	assert_int_equal(qint(f, "SELECT count(*) FROM rejected_rows WHERE run_id = %" PRId64
			      " AND reason_code = 'email_missing'", id), 1);
	assert_int_equal(qint(f, "SELECT count(*) FROM rejected_rows WHERE run_id = %" PRId64
			      " AND reason_code = 'profile_missing'", id), 1);
	assert_int_equal(qint(f, "SELECT count(*) FROM rejected_rows WHERE run_id = %" PRId64
			      " AND reason_code = 'cc_rejected' AND email IN "
			      "('user10@example.com', 'user11@example.com') AND "
			      "reason LIKE '%%already a member%%' AND permanent = 0", id), 2);
	assert_int_equal(qint(f, "SELECT cannot_add_count FROM run_batches WHERE run_id = %"
			      PRId64, id), 1);
	/* Locally rejected rows never reach CC. */
	assert_int_equal(fstat_("imports/contacts_received"), 200);
	st = list_state(f->list_id);
	assert_int_equal(fake_int(st, "count"), 197);
	assert_null(member_first(st, "user10@example.com"));
	json_decref(st);

	/* CC's transient rejections are retried by the next run; nothing else is sent. */
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(fstat_("imports/contacts_received"), 2);
}

static void test_dry_run_cap_consent(void **state)
{
	struct fx *f = *state;
	struct opts dry = { .dry = true };
	int64_t id;

	load_profiles(f, 300);
	reset_stats();
	id = run_export(f, &dry);
	/* A dry run succeeds like a real one: only rejected rows make it partial. */
	assert_int_equal(f->last.state, f->last.counters.rejected > 0 ?
					STORE_DATA_RUN_PARTIALLY_SUCCEEDED :
					STORE_DATA_RUN_SUCCEEDED);
	assert_true(f->last.dry_run);
	assert_int_equal(f->last.plan_adds, 300);
	assert_int_equal(f->last.counters.selected, 300);
	assert_int_equal(f->last.counters.sent, 0);
	assert_adds_up(&f->last.counters);
	assert_int_equal(fstat_("requests_by_kind/import"), 0);
	assert_int_equal(fstat_("requests_by_kind/remove"), 0);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state"), 0);
	(void)id;

	/* The cap fails the run before any request. */
	reset_stats();
	runner_close(f->r, NULL, NULL);
	f->cfg.max_profiles_per_export = 299;
	runner_start(f);
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "300"));
	assert_non_null(strstr(f->error, "299"));
	assert_int_equal(fstat_("requests_total"), 0);
	assert_db_state(f, id, "failed");

	/* No consent: a clear failure, no request either. */
	f->cfg.max_profiles_per_export = 1000000;
	runner_reload(f->r, &f->cfg);
	exec(f, "UPDATE connections SET consent_at = NULL, consent_by = NULL");
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "consent"));
	assert_int_equal(fstat_("requests_total"), 0);
	assert_non_null(strstr(f->error, "main"));
}

static void test_busy_refused(void **state)
{
	struct fx *f = *state;
	struct runner_request req = { .export_id = 1, .trigger = STORE_DATA_TRIGGER_DEMAND,
				      .progress = on_progress, .userdata = f };
	char err[256];
	int64_t id = 0, other = 0;

	load_profiles(f, 100);
	assert_int_equal(runner_request(f->r, &req, &id, err, sizeof(err)), 0);
	req.progress = NULL;
	assert_int_equal(runner_request(f->r, &req, &other, err, sizeof(err)), -EBUSY);
	assert_int_equal(other, id);
	req.trigger = STORE_DATA_TRIGGER_SCHEDULE;
	other = 0;
	assert_int_equal(runner_request(f->r, &req, &other, err, sizeof(err)), -EBUSY);
	assert_int_equal(other, id);
	assert_int_equal(runner_active(f->r), 1);
	f->done = false;
	fake_run_until(&f->loop, &f->done);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(runner_active(f->r), 0);
	assert_int_equal(runner_cancel(f->r, id, NULL, err, sizeof(err)), -EALREADY);
	assert_int_equal(runner_cancel(f->r, 9999, NULL, err, sizeof(err)), -ENOENT);
}

static void test_cancel_mid_run(void **state)
{
	struct fx *f = *state;
	int64_t id;

	load_profiles(f, 5000);
	faults("{\"activity_stuck\":true}");
	f->cancel_when_sending = true;
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_CANCELLED);
	assert_string_equal(f->error, "test cancel");
	assert_db_state(f, id, "cancelled");
	assert_int_equal(qint(f, "SELECT count(*) FROM run_batches WHERE run_id = %" PRId64
			      " AND state NOT IN ('abandoned')", id), 0);
	assert_true(qint(f, "SELECT count(*) FROM run_batches WHERE run_id = %" PRId64
			 " AND activity_id IS NOT NULL", id) >= 1);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state"), 0);

	/* The next run sends everything (nothing was confirmed). */
	json_decref(fake_ok(&fake, "DELETE", "/_fake/faults", NULL));
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.sent, 5000);
}

static void test_failed_activity_retried(void **state)
{
	struct fx *f = *state;
	json_t *st;
	int64_t id;

	load_profiles(f, 3000);
	faults("{\"activity_outcome\":{\"state\":\"failed\",\"count\":1}}");
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "1 of 3 batches failed"));
	assert_int_equal(f->last.counters.sent, 2000);
	assert_int_equal(f->last.counters.pending, 1000);
	assert_adds_up(&f->last.counters);
	assert_int_equal(qint(f, "SELECT count(*) FROM run_batches WHERE run_id = %" PRId64
			      " AND state = 'failed' AND error LIKE '%%failed%%'", id), 1);

	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.sent, 1000);
	assert_int_equal(f->last.counters.unchanged, 2000);
	assert_int_equal(fstat_("imports/contacts_received"), 1000);
	st = list_state(f->list_id);
	assert_int_equal(fake_int(st, "count"), 3000);
	json_decref(st);
}

static void test_list_deleted(void **state)
{
	struct fx *f = *state;
	char path[256];
	int64_t id;

	load_profiles(f, 5000);
	f->delete_after_batches = 1;
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "no longer exists"));
	assert_non_null(strstr(f->error, f->list_id));
	assert_db_state(f, id, "failed");
	assert_true(f->last.counters.pending > 0);

	/* Deleted before the run: fails at the list check, before any import. */
	reset_stats();
	snprintf(path, sizeof(path), "/_fake/lists/%s?mode=hard", f->list_id);
	json_decref(fake_ok(&fake, "DELETE", path, NULL));
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "no longer exists"));
	assert_int_equal(fstat_("requests_by_kind/import"), 0);
}

_printf_(4, 5) static void qtext(struct fx *f, char *buf, size_t len, const char *fmt, ...)
{
	char sql[1024];
	sqlite3_stmt *st;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	buf[0] = '\0';
	assert_int_equal(sqlite3_prepare_v2(store_db(f->s), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
}

static long long list_count(const char *list_id)
{
	json_t *st = list_state(list_id);
	long long n = fake_int(st, "count");

	json_decref(st);
	return n;
}

/* Once CC has processed everything, the export's staging list is empty. */
static void assert_staging_empty(struct fx *f)
{
	char id[64];

	qtext(f, id, sizeof(id), "SELECT list_id FROM mirror_staging WHERE export_id = 1");
	assert_int_equal(strlen(id), 36);
	json_decref(fake_ok(&fake, "POST", "/_fake/drain", "{\"timeout_s\":30}"));
	assert_int_equal(list_count(id), 0);
}

static void test_mirror(void **state)
{
	struct fx *f = *state;
	struct opts force = { .force = true };
	char body[512];
	json_t *st;

	load_profiles(f, 2000);
	/* On the list before ccsync: one outside the segments, one inside (user5). */
	snprintf(body, sizeof(body),
		 "{\"contacts\":[{\"email\":\"outsider@example.com\",\"list_ids\":[\"%s\"]},"
		 "{\"email\":\"user5@example.com\",\"list_ids\":[\"%s\"]}]}",
		 f->list_id, f->list_id);
	json_decref(fake_ok(&fake, "POST", "/_fake/contacts", body));
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(qint(f, "SELECT added_by_ccsync FROM sync_state WHERE "
			      "email = 'user5@example.com'"), 0);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state WHERE added_by_ccsync = 1"),
			 1999);

	/* 100 leave the segment (5%, under the 10% guard), user5 among them. */
	exec(f, "DELETE FROM segment_members WHERE CAST(substr(profile_id, 2) AS INTEGER) <= 100");
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 99);
	assert_int_equal(f->last.counters.selected, 1900);
	assert_int_equal(f->last.counters.unchanged, 1900);
	/* By the staging list: one import of the departed emails, a removal by list, the empty;
	 * no per-contact lookup and no list paging. */
	assert_int_equal(fstat_("requests_by_kind/import"), 1);
	assert_int_equal(fstat_("requests_by_kind/list_create"), 1);
	assert_int_equal(fstat_("requests_by_kind/contacts"), 0);
	assert_int_equal(fstat_("requests_by_kind/remove"), 2);
	assert_staging_empty(f);
	st = list_state(f->list_id);
	assert_int_equal(fake_int(st, "count"), 1902);
	assert_non_null(member_first(st, "outsider@example.com"));
	assert_non_null(member_first(st, "user5@example.com"));
	assert_null(member_first(st, "user6@example.com"));
	assert_non_null(member_first(st, "user101@example.com"));
	json_decref(st);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state"), 1901);

	/* 300 more leave: 300 of 1902 > 10% → refused before anything is sent... */
	exec(f, "DELETE FROM segment_members WHERE CAST(substr(profile_id, 2) AS INTEGER) <= 400");
	exec(f, "UPDATE profiles SET attributes = json_set(attributes, '$.first', 'Z') "
		"WHERE profile_id = 'p0001000'");
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "300"));
	assert_non_null(strstr(f->error, "1902"));
	assert_non_null(strstr(f->error, "--force"));
	assert_int_equal(fstat_("requests_by_kind/import"), 0);
	assert_int_equal(fstat_("requests_by_kind/remove"), 0);
	/* ...and --force removes them. */
	(void)run_export(f, &force);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 300);
	assert_int_equal(f->last.counters.sent, 1);
	st = list_state(f->list_id);
	assert_int_equal(fake_int(st, "count"), 1602);
	assert_non_null(member_first(st, "outsider@example.com"));
	assert_string_equal(member_first(st, "user1000@example.com"), "Z");
	json_decref(st);
	assert_int_equal(fstat_("problems_count"), 0);
}

static void test_drain_and_resume(void **state)
{
	struct fx *f = *state;
	char err[512];
	json_t *st;
	int64_t first, resumed;
	long long imported;

	load_profiles(f, 6000);
	/* Two batches confirm, then CC stops finishing activities: a drain stops mid-run. */
	f->stuck_after_batches = 2;
	reset_stats();
	{
		struct runner_request req = { .export_id = 1, .trigger = STORE_DATA_TRIGGER_DEMAND,
					      .progress = on_progress, .userdata = f };

		assert_int_equal(runner_request(f->r, &req, &first, err, sizeof(err)), 0);
	}
	while (!f->stuck_set || f->max_batches_seen < 4)
		assert_true(uv_run(&f->loop, UV_RUN_ONCE) || f->stuck_set);
	f->done = false;
	runner_drain(f->r, 10000, drained, f);
	fake_run_until(&f->loop, &f->drained);
	assert_true(f->done);
	assert_int_equal(f->last.state, STORE_DATA_RUN_INTERRUPTED);
	assert_db_state(f, first, "interrupted");
	assert_int_equal(qint(f, "SELECT count(*) FROM run_batches WHERE run_id = %" PRId64
			      " AND state = 'confirmed'", first), 2);
	/* Batches CC accepted keep their activity ids, still submitted, for the resume. */
	assert_true(qint(f, "SELECT count(*) FROM run_batches WHERE run_id = %" PRId64
			 " AND state = 'submitted' AND activity_id IS NOT NULL", first) >= 1);
	runner_stop(f);

	/* Next start: recovery resumes the export after CC has caught up. */
	json_decref(fake_ok(&fake, "DELETE", "/_fake/faults", NULL));
	imported = fstat_("imports/contacts_received");
	runner_start(f);
	assert_int_equal(runner_recover(f->r, err, sizeof(err)), 1);
	assert_int_equal(runner_active(f->r), 1);
	resumed = qint(f, "SELECT run_id FROM runs WHERE resumed_from = %" PRId64, first);
	assert_true(resumed > first);
	assert_int_equal(runner_watch(f->r, resumed, on_progress, f), 0);
	f->done = false;
	fake_run_until(&f->loop, &f->done);
	assert_int_equal(f->last.run_id, resumed);
	assert_int_equal(f->last.trigger, STORE_DATA_TRIGGER_RESUME);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	/* Counted once: the 2,000 confirmed by the interrupted run count as sent, not again. */
	assert_int_equal(f->last.counters.selected, 6000);
	assert_int_equal(f->last.counters.sent, 6000);
	assert_int_equal(f->last.counters.unchanged, 0);
	assert_adds_up(&f->last.counters);
	assert_int_equal(fstat_("imports/contacts_received") - imported, 4000);
	st = list_state(f->list_id);
	assert_int_equal(fake_int(st, "count"), 6000);
	json_decref(st);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state"), 6000);

	/* A run left "running" by a crash is interrupted and resumed the same way. */
	exec(f, "UPDATE runs SET state = 'running', finished_at = NULL WHERE run_id = %" PRId64,
	     resumed);
	runner_stop(f);
	runner_start(f);
	assert_int_equal(runner_recover(f->r, err, sizeof(err)), 1);
	assert_db_state(f, resumed, "interrupted");
	while (runner_active(f->r) > 0 && uv_run(&f->loop, UV_RUN_ONCE))
		;
	assert_int_equal(runner_active(f->r), 0);
	assert_int_equal(qint(f, "SELECT sent FROM runs WHERE resumed_from = %" PRId64, resumed),
			 6000);
}


/* Leaves profiles a..b (by number) out of the segment. */
static void leave(struct fx *f, int a, int b)
{
	exec(f, "DELETE FROM segment_members WHERE CAST(substr(profile_id, 2) AS INTEGER) "
		"BETWEEN %d AND %d", a, b);
}

static void assert_on_list(struct fx *f, int n, bool on)
{
	char email[64];
	json_t *st = list_state(f->list_id);

	snprintf(email, sizeof(email), "user%d@example.com", n);
	if (on)
		assert_non_null(member_first(st, email));
	else
		assert_null(member_first(st, email));
	json_decref(st);
}

/*
 * Single-pass mirror runs (a "large" list: the member-page limit is lowered to 0) remove by the
 * staging list; unsubscribed contacts fall back to contact ids; a failure at each step is
 * recorded and repaired by the next run; the guard stops before any removal.
 */
static void test_mirror_staging(void **state)
{
	struct fx *f = *state;
	struct opts force = { .force = true };
	int64_t id;

	runner_stop(f);
	setenv("CCSYNC_TEST_MEMBER_PAGES_MAX", "0", 1);
	runner_start(f);
	load_profiles(f, 400);
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(list_count(f->list_id), 400);

	/* 20 leave (user7 unsubscribed meanwhile), one changes. */
	json_decref(fake_ok(&fake, "POST", "/_fake/contacts",
			    "{\"generate\":{\"count\":1,\"start\":7,\"status\":\"unsubscribed\"}}"));
	leave(f, 1, 20);
	exec(f, "UPDATE profiles SET attributes = json_set(attributes, '$.first', 'Y') "
		"WHERE profile_id = 'p0000100'");
	reset_stats();
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 20);
	assert_int_equal(f->last.counters.sent, 1);
	assert_adds_up(&f->last.counters);
	assert_int_equal(list_count(f->list_id), 380);
	assert_on_list(f, 7, false);
	assert_on_list(f, 21, true);
	assert_int_equal(fstat_("requests_by_kind/import"), 2); /* the change, the staging import */
	/* The fallback for user7 only: one page of the staging list, one lookup by email. */
	assert_int_equal(fstat_("requests_by_kind/contacts"), 2);
	assert_int_equal(qint(f, "SELECT count(*) FROM run_batches WHERE run_id = %" PRId64
			      " AND kind = 'remove' AND state = 'confirmed' AND activity_id IS NOT "
			      "NULL", id), 2);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state"), 380);
	assert_int_equal(qint(f, "SELECT dirty + pending_is_empty FROM mirror_staging"), 2);
	assert_staging_empty(f);

	/* The staging import fails: recorded, nothing removed; the next run repairs. */
	faults("{\"activity_outcome\":{\"state\":\"failed\",\"kind\":\"import\"}}");
	leave(f, 21, 30);
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "staging import failed"));
	assert_int_equal(f->last.counters.removed, 0);
	assert_on_list(f, 21, true);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state"), 380);
	assert_int_equal(qint(f, "SELECT dirty FROM mirror_staging"), 1);
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 10);
	assert_int_equal(fstat_("requests_by_kind/remove"), 3); /* empty first, remove, empty */
	assert_int_equal(fstat_("requests_by_kind/contacts"), 0);
	assert_int_equal(list_count(f->list_id), 370);
	assert_staging_empty(f);

	/* The removal fails: its batch is failed, sync state kept; the next run repairs. */
	faults("{\"activity_outcome\":{\"state\":\"failed\",\"kind\":\"remove\"}}");
	leave(f, 31, 35);
	id = run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "1 of 1 batches failed"));
	assert_int_equal(f->last.counters.removed, 0);
	assert_int_equal(qint(f, "SELECT count(*) FROM run_batches WHERE run_id = %" PRId64
			      " AND kind = 'remove' AND state = 'failed'", id), 1);
	assert_on_list(f, 31, true);
	assert_int_equal(qint(f, "SELECT count(*) FROM sync_state"), 370);
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 5);
	assert_int_equal(list_count(f->list_id), 365);
	assert_staging_empty(f);

	/* The final empty fails (after the run ended): the next run empties first. */
	faults("{\"activity_outcome\":{\"state\":\"failed\",\"kind\":\"remove\","
	       "\"skip\":1}}");
	leave(f, 36, 38);
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 3);
	leave(f, 39, 40);
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 2);
	assert_int_equal(fstat_("requests_by_kind/remove"), 3);
	assert_int_equal(list_count(f->list_id), 360);
	assert_staging_empty(f);

	/* The guard (60 of 360 > 10%) is checked after the upserts, before any removal. */
	leave(f, 41, 100);
	exec(f, "UPDATE profiles SET attributes = json_set(attributes, '$.first', 'Z') "
		"WHERE profile_id = 'p0000200'");
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_FAILED);
	assert_non_null(strstr(f->error, "mirror guard"));
	assert_non_null(strstr(f->error, "1 adds and updates were sent, but nothing was removed"));
	assert_int_equal(fstat_("requests_by_kind/import"), 1);
	assert_int_equal(fstat_("requests_by_kind/remove"), 0);
	assert_on_list(f, 41, true);
	{
		json_t *st = list_state(f->list_id);

		assert_string_equal(member_first(st, "user200@example.com"), "Z");
		json_decref(st);
	}
	(void)run_export(f, &force);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 60);
	assert_int_equal(list_count(f->list_id), 300);
	assert_staging_empty(f);
	assert_int_equal(qint(f, "SELECT count(*) FROM mirror_staging"), 1);

	/* The final empty fails again, and the next run has nobody leaving: it settles the
	 * staging list while it plans (wait, empty), though it removes nothing. */
	faults("{\"activity_outcome\":{\"state\":\"failed\",\"kind\":\"remove\","
	       "\"skip\":1}}");
	leave(f, 101, 102);
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 2);
	assert_int_equal(qint(f, "SELECT dirty FROM mirror_staging"), 1);
	exec(f, "UPDATE profiles SET attributes = json_set(attributes, '$.first', 'W') "
		"WHERE profile_id = 'p0000250'");
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.sent, 1);
	assert_int_equal(f->last.counters.removed, 0);
	assert_int_equal(fstat_("requests_by_kind/remove"), 1); /* the empty only */
	assert_int_equal(qint(f, "SELECT dirty + pending_is_empty FROM mirror_staging"), 0);
	assert_staging_empty(f);
	assert_int_equal(list_count(f->list_id), 298);
	assert_int_equal(fstat_("problems_count"), 0);
	unsetenv("CCSYNC_TEST_MEMBER_PAGES_MAX");
}

/* A database restored from before the staging list existed: CC answers 409 to the creation,
 * the list is found by name, emptied first (its content is unknown) and used. */
static void test_mirror_staging_restored(void **state)
{
	struct fx *f = *state;
	char name[256];

	load_profiles(f, 300);
	(void)run_export(f, NULL);
	leave(f, 1, 5);
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	qtext(f, name, sizeof(name), "SELECT list_id FROM mirror_staging");
	assert_int_equal(strlen(name), 36);
	/* A stale member on the staging list, then the row is lost. */
	{
		char body[256];

		snprintf(body, sizeof(body),
			 "{\"contacts\":[{\"email\":\"user200@example.com\",\"list_ids\":[\"%s\"]}]}",
			 name);
		json_decref(fake_ok(&fake, "POST", "/_fake/drain", "{\"timeout_s\":30}"));
		json_decref(fake_ok(&fake, "POST", "/_fake/contacts", body));
	}
	exec(f, "DELETE FROM mirror_staging");
	leave(f, 6, 8);
	reset_stats();
	(void)run_export(f, NULL);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.removed, 3);
	assert_int_equal(fstat_("status_by_kind/list_create/409"), 1);
	assert_int_equal(fstat_("requests_by_kind/lists"), 1);
	assert_on_list(f, 200, true); /* the stale staging member was not removed */
	assert_int_equal(list_count(f->list_id), 292);
	qtext(f, name + 64, 64, "SELECT list_id FROM mirror_staging");
	assert_string_equal(name, name + 64);
	assert_staging_empty(f);
	assert_int_equal(fstat_("problems_count"), 0);
}

/* ------------------------------------------------------------------ measurement */

static void usage(double *cpu_s, long *rss_kb)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	*cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	*rss_kb = ru.ru_maxrss;
}

static void test_bench_full_export(void **state)
{
	struct fx *f = *state;
	const char *n = getenv("RUNNER_BENCH_PROFILES");
	int profiles = n ? atoi(n) : 100000;
	double cpu0, cpu1;
	long rss0, rss1;
	uint64_t t0, t1;

	f->cfg.batch_max_contacts = 40000;
	runner_close(f->r, NULL, NULL);
	runner_start(f);
	load_profiles(f, profiles);
	usage(&cpu0, &rss0);
	uv_update_time(&f->loop);
	t0 = uv_now(&f->loop);
	(void)run_export(f, NULL);
	uv_update_time(&f->loop);
	t1 = uv_now(&f->loop);
	usage(&cpu1, &rss1);
	assert_int_equal(f->last.state, STORE_DATA_RUN_SUCCEEDED);
	assert_int_equal(f->last.counters.sent, profiles);
	printf("# runner full export: %d profiles, %" PRId64 " batches, wall %.2f s, "
	       "CPU %.2f s (process), peak RSS %ld MB (before: %ld MB)\n",
	       profiles, f->last.counters.batches_total, (double)(t1 - t0) / 1000.0, cpu1 - cpu0,
	       rss1 / 1024, rss0 / 1024);

	/* The same export again, unchanged: no import at all. */
	reset_stats();
	usage(&cpu0, &rss0);
	uv_update_time(&f->loop);
	t0 = uv_now(&f->loop);
	(void)run_export(f, NULL);
	uv_update_time(&f->loop);
	t1 = uv_now(&f->loop);
	usage(&cpu1, &rss1);
	assert_int_equal(f->last.counters.unchanged, profiles);
	assert_int_equal(fstat_("requests_by_kind/import"), 0);
	printf("# runner no-change re-run: wall %.2f s, CPU %.2f s (process), peak RSS %ld MB\n",
	       (double)(t1 - t0) / 1000.0, cpu1 - cpu0, rss1 / 1024);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_upsert_full_rerun_churn, setup_upsert,
						teardown),
		cmocka_unit_test_setup_teardown(test_rejected_rows_and_cc_errors, setup_upsert,
						teardown),
		cmocka_unit_test_setup_teardown(test_dry_run_cap_consent, setup_upsert, teardown),
		cmocka_unit_test_setup_teardown(test_busy_refused, setup_upsert, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_mid_run, setup_upsert, teardown),
		cmocka_unit_test_setup_teardown(test_failed_activity_retried, setup_upsert,
						teardown),
		cmocka_unit_test_setup_teardown(test_list_deleted, setup_upsert, teardown),
		cmocka_unit_test_setup_teardown(test_mirror, setup_mirror, teardown),
		cmocka_unit_test_setup_teardown(test_mirror_staging, setup_mirror, teardown),
		cmocka_unit_test_setup_teardown(test_mirror_staging_restored, setup_mirror,
						teardown),
		cmocka_unit_test_setup_teardown(test_drain_and_resume, setup_upsert, teardown),
	};
	const struct CMUnitTest bench[] = {
		cmocka_unit_test_setup_teardown(test_bench_full_export, setup_upsert, teardown),
	};
	const char *extra[] = { "--no-limits", "--activity-delay-ms", "20", NULL };
	int fails;

	log_setup(LOG_TARGET_STDERR, getenv("RUNNER_DEBUG") ? LOG_DEBUG : LOG_WARNING);
	if (getenv("RUNNER_TEST"))
		cmocka_set_test_filter(getenv("RUNNER_TEST"));
	fake_start(&fake, extra);
	if (getenv("RUNNER_BENCH_PROFILES"))
		fails = cmocka_run_group_tests(bench, NULL, NULL);
	else
		fails = cmocka_run_group_tests(tests, NULL, NULL);
	fake_stop(&fake);
	return fails;
}
