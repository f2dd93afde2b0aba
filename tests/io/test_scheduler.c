/* SPDX-License-Identifier: MIT */
/*
 * The scheduler on a real loop and a real database, with an injected wall clock that runs at
 * real speed from a chosen starting point, so fires come within milliseconds instead of minutes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <uv.h>
#include <cmocka.h>

#include "../unit/test-helpers.h"
#include "scheduler.h"
#include "store-internal.h"
#include "store.h"

/* 2026-06-10 11:59:59.800 UTC: 200 ms before a minute boundary. */
#define BASE_MS INT64_C(1781092799800)
#define BOUNDARY INT64_C(1781092800)

struct fire {
	int64_t export_id;
	char trigger[16];
	int64_t due;
};

struct fixture {
	struct tmpdir dir;
	char db[PATH_MAX];
	struct store *store;
	uv_loop_t loop;
	uint64_t start;
	int64_t base_ms;
	struct fire fires[16];
	int nfires;
	int stop_after;
};

static int64_t test_clock(void *ctx)
{
	struct fixture *f = ctx;

	return f->base_ms + (int64_t)(uv_now(&f->loop) - f->start);
}

static void on_due(void *ctx, int64_t export_id, const char *trigger, int64_t due_at)
{
	struct fixture *f = ctx;

	assert_true(f->nfires < 16);
	f->fires[f->nfires].export_id = export_id;
	snprintf(f->fires[f->nfires].trigger, sizeof(f->fires[0].trigger), "%s", trigger);
	f->fires[f->nfires].due = due_at;
	if (++f->nfires == f->stop_after)
		uv_stop(&f->loop);
}

static void exec(struct fixture *f, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(store_db(f->store), sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

static int64_t last_due(struct fixture *f, int64_t export_id)
{
	static const char sql[] = "SELECT coalesce(last_due_at, -1) FROM schedules WHERE export_id = ?1";
	sqlite3_stmt *st = store_prepare(f->store, sql);
	int64_t v = -2;

	sqlite3_bind_int64(st, 1, export_id);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return v;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[512];

	tmpdir_make(&f->dir);
	tmpdir_file(&f->dir, "ccsync.db", f->db, sizeof(f->db));
	assert_int_equal(store_open(f->db, STORE_OPEN_CREATE, 1000, &f->store, err, sizeof(err)), 0);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	uv_update_time(&f->loop);
	f->start = uv_now(&f->loop);
	f->base_ms = BASE_MS;
	exec(f, "INSERT INTO connections (connection_id, name, client_id) VALUES (1, 'c', 'k');"
		"INSERT INTO exports (export_id, name, connection_id, list_id, email_field) VALUES "
		"(1, 'every-minute', 1, '04fe9a97-a579-43c5-bb1a-58ed29bf0a6a', 'email'),"
		"(2, 'nightly-rome', 1, '04fe9a97-a579-43c5-bb1a-58ed29bf0a6a', 'email'),"
		"(3, 'disabled', 1, '04fe9a97-a579-43c5-bb1a-58ed29bf0a6a', 'email');"
		"UPDATE exports SET enabled = 0 WHERE export_id = 3;"
		"INSERT INTO schedules (export_id, cron, time_zone) VALUES (2, '0 2 * * *', 'Europe/Rome');");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	/* Every handle closed: the loop must close cleanly. */
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	store_free(f->store);
	tmpdir_remove(&f->dir);
	free(f);
	return 0;
}

static const struct scheduler_options every_minute = {
	.default_cron = "* * * * *", .default_time_zone = "UTC", .catch_up = true,
};

static void test_fires_on_time_and_records(void **state)
{
	struct fixture *f = *state;
	struct scheduler *sch;
	char err[256] = "";
	int64_t due, id;

	assert_int_equal(scheduler_new(&f->loop, f->store, on_due, f, test_clock, f, &sch), 0);
	assert_int_equal(scheduler_load(sch, &every_minute, true, err, sizeof(err)), 2);
	/* New exports start from now: no catch-up, last_due set to now. */
	assert_int_equal(f->nfires, 0);
	assert_int_equal(last_due(f, 1), BOUNDARY - 1);
	assert_true(scheduler_next(sch, &due, &id));
	assert_int_equal(due, BOUNDARY);
	assert_int_equal(id, 1);

	f->stop_after = 1;
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(f->nfires, 1);
	assert_int_equal(f->fires[0].export_id, 1);
	assert_string_equal(f->fires[0].trigger, "schedule");
	assert_int_equal(f->fires[0].due, BOUNDARY);
	assert_int_equal(last_due(f, 1), BOUNDARY);
	/* Re-armed for the next minute; the Rome export (02:00 CEST = 00:00 UTC) is later. */
	assert_true(scheduler_next(sch, &due, &id));
	assert_int_equal(due, BOUNDARY + 60);
	assert_int_equal(id, 1);
	scheduler_close(sch);
}

static void test_catch_up_once_at_start(void **state)
{
	struct fixture *f = *state;
	struct scheduler *sch;
	char err[256] = "";

	/* The Rome export last ran three days ago: the daemon was down over three fires. */
	exec(f, "UPDATE schedules SET last_due_at = 1780790400 WHERE export_id = 2");
	assert_int_equal(scheduler_new(&f->loop, f->store, on_due, f, test_clock, f, &sch), 0);
	assert_int_equal(scheduler_load(sch, &every_minute, true, err, sizeof(err)), 2);
	assert_int_equal(f->nfires, 1);
	assert_int_equal(f->fires[0].export_id, 2);
	assert_string_equal(f->fires[0].trigger, "catch_up");
	/* 2026-06-08 00:00 UTC = 02:00 CEST, the first fire after the last handled one */
	assert_int_equal(f->fires[0].due, 1780876800);
	assert_int_equal(last_due(f, 2), BOUNDARY - 1);

	/* A reload (not a start) never catches up, and the recorded fire prevents a repeat. */
	assert_int_equal(scheduler_load(sch, &every_minute, false, err, sizeof(err)), 2);
	assert_int_equal(scheduler_load(sch, &every_minute, true, err, sizeof(err)), 2);
	assert_int_equal(f->nfires, 1);
	scheduler_close(sch);
}

static void test_catch_up_off(void **state)
{
	struct fixture *f = *state;
	struct scheduler *sch;
	struct scheduler_options o = every_minute;
	char err[256] = "";

	o.catch_up = false;
	exec(f, "UPDATE schedules SET last_due_at = 1780790400 WHERE export_id = 2");
	assert_int_equal(scheduler_new(&f->loop, f->store, on_due, f, test_clock, f, &sch), 0);
	assert_int_equal(scheduler_load(sch, &o, true, err, sizeof(err)), 2);
	assert_int_equal(f->nfires, 0);
	scheduler_close(sch);
}

static void test_bad_reload_keeps_running_schedule(void **state)
{
	struct fixture *f = *state;
	struct scheduler *sch;
	struct scheduler_options bad = every_minute;
	char err[256] = "";
	int64_t due;

	assert_int_equal(scheduler_new(&f->loop, f->store, on_due, f, test_clock, f, &sch), 0);
	assert_int_equal(scheduler_load(sch, &every_minute, true, err, sizeof(err)), 2);
	bad.default_cron = "61 * * * *";
	assert_int_equal(scheduler_load(sch, &bad, false, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "[schedule] default"));
	bad = every_minute;
	bad.default_time_zone = "Nowhere/Atlantis";
	assert_int_equal(scheduler_load(sch, &bad, false, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "[schedule] time_zone"));
	assert_int_equal(scheduler_count(sch), 2);
	assert_true(scheduler_next(sch, &due, NULL));
	assert_int_equal(due, BOUNDARY);
	scheduler_close(sch);
}

static void test_invalid_override_skipped(void **state)
{
	struct fixture *f = *state;
	struct scheduler *sch;
	char err[256] = "";
	int64_t id;

	exec(f, "UPDATE schedules SET cron = 'not a cron' WHERE export_id = 2");
	assert_int_equal(scheduler_new(&f->loop, f->store, on_due, f, test_clock, f, &sch), 0);
	assert_int_equal(scheduler_load(sch, &every_minute, true, err, sizeof(err)), 1);
	assert_true(scheduler_next(sch, NULL, &id));
	assert_int_equal(id, 1);
	scheduler_close(sch);
}

static void test_empty_schedule_arms_nothing(void **state)
{
	struct fixture *f = *state;
	struct scheduler *sch;
	char err[256] = "";

	exec(f, "UPDATE exports SET enabled = 0");
	assert_int_equal(scheduler_new(&f->loop, f->store, on_due, f, test_clock, f, &sch), 0);
	assert_int_equal(scheduler_load(sch, &every_minute, true, err, sizeof(err)), 0);
	assert_false(scheduler_next(sch, NULL, NULL));
	/* Nothing armed: the loop has no active handle and returns at once. */
	assert_int_equal(uv_run(&f->loop, UV_RUN_NOWAIT), 0);
	scheduler_close(sch);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fires_on_time_and_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_catch_up_once_at_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_catch_up_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_reload_keeps_running_schedule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_override_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_schedule_arms_nothing, setup, teardown),
	};
	return cmocka_run_group_tests_name("scheduler", tests, NULL, NULL);
}
