/* SPDX-License-Identifier: MIT */
/*
 * The data side of the store on real SQLite files: run state machine, batches and their
 * confirmation (atomic with sync state and counters), rejected rows, recovery, retention,
 * segments, attribute checks, refresh announcements, import staging, and the v1 fixture.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <cmocka.h>

#include "store-data.h"
#include "store-mirror.h"
#include "store.h"
#include "test-db.h"
#include "test-helpers.h"

#define LIST_ID "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"

struct fixture {
	struct tmpdir dir;
	char db[PATH_MAX];
	struct store *s;
	char err[1024];
};

static void raw_exec(struct fixture *f, const char *sql)
{
	test_db_exec(f->db, sql);
}

static int64_t raw_int(struct fixture *f, const char *sql)
{
	return test_db_int64(f->db, sql);
}

static void set_now(int64_t t)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRId64, t);
	setenv("CCSYNC_FAKE_NOW", buf, 1);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	tmpdir_make(&f->dir);
	tmpdir_file(&f->dir, "ccsync.db", f->db, sizeof(f->db));
	if (store_open(f->db, STORE_OPEN_CREATE, 2000, &f->s, f->err, sizeof(f->err)) < 0)
		fail_msg("%s", f->err);
	raw_exec(f,
		 "INSERT INTO connections (connection_id, name, client_id) VALUES (1, 'c', 'id');"
		 "INSERT INTO exports (export_id, name, connection_id, list_id, email_field, mode) "
		 "VALUES (1, 'one', 1, '" LIST_ID "', 'email', 'mirror'),"
		 "       (2, 'two', 1, '" LIST_ID "', 'mail', 'upsert'),"
		 "       (3, 'gone', 1, '" LIST_ID "', 'email', 'upsert');"
		 "UPDATE exports SET removed_at = 1 WHERE export_id = 3;"
		 "INSERT INTO segments (segment_id, name) VALUES (1, 's1'), (2, 's2');"
		 "INSERT INTO export_segments VALUES (1, 2), (1, 1);"
		 "INSERT INTO export_fields VALUES (1, 'job_title', 'title'), (1, 'cf:tier', "
		 "'tier');");
	set_now(1700000000);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	store_free(f->s);
	tmpdir_remove(&f->dir);
	free(f);
	unsetenv("CCSYNC_FAKE_NOW");
	return 0;
}

static int64_t new_run(struct fixture *f, int64_t export_id, bool start)
{
	struct store_data_run_request req = { .export_id = export_id,
					      .trigger = STORE_DATA_TRIGGER_DEMAND,
					      .requested_by = "alice" };
	int64_t id = 0;

	if (store_data_run_create(f->s, &req, &id, f->err, sizeof(f->err)) < 0)
		fail_msg("%s", f->err);
	if (start)
		assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_RUNNING, NULL,
							  f->err, sizeof(f->err)),
				 0);
	return id;
}

static struct store_data_run *get_run(struct fixture *f, int64_t id)
{
	struct store_data_run *r = NULL;

	assert_int_equal(store_data_run_get(f->s, id, &r, f->err, sizeof(f->err)), 0);
	return r;
}

/* ---- runs ------------------------------------------------------------------------------------ */

static void test_run_create_and_state_machine(void **state)
{
	struct fixture *f = *state;
	struct store_data_run *r;
	int64_t id, other = 0;

	id = new_run(f, 1, false);
	r = get_run(f, id);
	assert_int_equal(r->state, STORE_DATA_RUN_QUEUED);
	assert_int_equal(r->trigger, STORE_DATA_TRIGGER_DEMAND);
	assert_string_equal(r->export_name, "one");
	assert_string_equal(r->requested_by, "alice");
	assert_int_equal(r->queued_at, 1700000000);
	assert_int_equal(r->started_at, 0);
	store_data_run_free(r);

	/* One run per export at a time, checked in the creating transaction. */
	assert_int_equal(store_data_run_active(f->s, 1, &other), 1);
	assert_int_equal(other, id);
	struct store_data_run_request req = { .export_id = 1,
					      .trigger = STORE_DATA_TRIGGER_SCHEDULE };
	assert_int_equal(store_data_run_create(f->s, &req, &other, f->err, sizeof(f->err)), -EBUSY);
	assert_non_null(strstr(f->err, "already has run"));
	assert_int_equal(raw_int(f, "SELECT count(*) FROM runs"), 1);
	/* Another export is free to run. */
	assert_int_equal(store_data_run_active(f->s, 2, &other), 0);

	/* Illegal moves change nothing. */
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_SUCCEEDED, NULL, f->err,
						  sizeof(f->err)),
			 -EINVAL);
	assert_non_null(strstr(f->err, "queued"));
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_INTERRUPTED, NULL,
						  f->err, sizeof(f->err)),
			 -EINVAL);
	set_now(1700000010);
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_RUNNING, NULL, f->err,
						  sizeof(f->err)),
			 0);
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_QUEUED, NULL, f->err,
						  sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_RUNNING, NULL, f->err,
						  sizeof(f->err)),
			 -EINVAL);

	/* succeeded needs nothing pending and nothing rejected. */
	assert_int_equal(store_data_run_set_plan(f->s, id, 10, 7, 0, 3, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_SUCCEEDED, NULL, f->err,
						  sizeof(f->err)),
			 -EINVAL);
	assert_non_null(strstr(f->err, "3 pending"));
	set_now(1700000020);
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_FAILED,
						  "cap exceeded: 10 > 5", f->err, sizeof(f->err)),
			 0);
	r = get_run(f, id);
	assert_int_equal(r->state, STORE_DATA_RUN_FAILED);
	assert_int_equal(r->started_at, 1700000010);
	assert_int_equal(r->finished_at, 1700000020);
	assert_string_equal(r->error, "cap exceeded: 10 > 5");
	assert_int_equal(r->counters.selected, 10);
	assert_int_equal(r->counters.unchanged, 7);
	assert_int_equal(r->counters.pending, 3);
	store_data_run_free(r);
	/* Final states are final. */
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_CANCELLED, NULL, f->err,
						  sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(store_data_run_active(f->s, 1, &other), 0);

	/* queued -> cancelled sets finished_at, never started_at. */
	id = new_run(f, 1, false);
	assert_int_equal(store_data_run_set_state(f->s, id, STORE_DATA_RUN_CANCELLED, "by alice",
						  f->err, sizeof(f->err)),
			 0);
	r = get_run(f, id);
	assert_int_equal(r->started_at, 0);
	assert_int_equal(r->finished_at, 1700000020);
	store_data_run_free(r);
	/* set_plan only while running */
	assert_int_equal(store_data_run_set_plan(f->s, id, 1, 1, 0, 0, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(store_data_run_set_state(f->s, 999, STORE_DATA_RUN_RUNNING, NULL, f->err,
						  sizeof(f->err)),
			 -ENOENT);
}

static void test_run_create_refusals(void **state)
{
	struct fixture *f = *state;
	struct store_data_run_request req = { .export_id = 3,
					      .trigger = STORE_DATA_TRIGGER_DEMAND };
	int64_t id = 0, done;

	assert_int_equal(store_data_run_create(f->s, &req, &id, f->err, sizeof(f->err)), -ENOENT);
	assert_non_null(strstr(f->err, "removed"));
	req.export_id = 42;
	assert_int_equal(store_data_run_create(f->s, &req, &id, f->err, sizeof(f->err)), -ENOENT);
	assert_non_null(strstr(f->err, "does not exist"));

	/* Resume only an interrupted run of the same export, and only with trigger resume. */
	done = new_run(f, 1, true);
	assert_int_equal(store_data_run_set_state(f->s, done, STORE_DATA_RUN_FAILED, "x", f->err,
						  sizeof(f->err)),
			 0);
	req = (struct store_data_run_request){ .export_id = 1,
					       .trigger = STORE_DATA_TRIGGER_RESUME,
					       .resumed_from = done };
	assert_int_equal(store_data_run_create(f->s, &req, &id, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "interrupted"));
	req.trigger = STORE_DATA_TRIGGER_DEMAND;
	assert_int_equal(store_data_run_create(f->s, &req, &id, f->err, sizeof(f->err)), -EINVAL);
	req = (struct store_data_run_request){ .export_id = 1,
					       .trigger = STORE_DATA_TRIGGER_RESUME };
	assert_int_equal(store_data_run_create(f->s, &req, &id, f->err, sizeof(f->err)), -EINVAL);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM runs"), 1);
}

static void test_enum_strings(void **state)
{
	for (int i = 0; i < _STORE_DATA_RUN_STATE_MAX; i++)
		assert_int_equal(
			store_data_run_state_from_string(store_data_run_state_to_string(i)), i);
	for (int i = 0; i < _STORE_DATA_TRIGGER_MAX; i++)
		assert_int_equal(store_data_trigger_from_string(store_data_trigger_to_string(i)),
				 i);
	assert_int_equal(store_data_run_state_from_string("bogus"), -EINVAL);
	assert_null(store_data_run_state_to_string(_STORE_DATA_RUN_STATE_MAX));
	assert_true(store_data_run_state_is_final(STORE_DATA_RUN_INTERRUPTED));
	assert_false(store_data_run_state_is_final(STORE_DATA_RUN_RUNNING));
	assert_string_equal(store_data_batch_state_to_string(STORE_DATA_BATCH_ABANDONED),
			    "abandoned");
	assert_string_equal(store_data_batch_kind_to_string(STORE_DATA_BATCH_REMOVE), "remove");
}

static void test_runs_history_queries(void **state)
{
	struct fixture *f = *state;
	struct store_data_run *runs = NULL;
	int64_t ids[5];
	size_t n = 0;

	for (int i = 0; i < 5; i++) {
		ids[i] = new_run(f, i % 2 ? 2 : 1, true);
		if (i < 4)
			assert_int_equal(store_data_run_set_state(f->s, ids[i],
								  STORE_DATA_RUN_CANCELLED, NULL,
								  f->err, sizeof(f->err)),
					 0);
	}
	assert_int_equal(store_data_runs_list(f->s, 0, 0, 3, &runs, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 3);
	assert_int_equal(runs[0].run_id, ids[4]); /* newest first */
	assert_int_equal(runs[2].run_id, ids[2]);
	store_data_runs_free(runs, n);
	/* keyset paging */
	assert_int_equal(
		store_data_runs_list(f->s, 0, ids[2], 10, &runs, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(runs[0].run_id, ids[1]);
	store_data_runs_free(runs, n);
	/* one export */
	assert_int_equal(store_data_runs_list(f->s, 2, 0, 10, &runs, &n, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(n, 2);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(runs[i].export_name, "two");
	store_data_runs_free(runs, n);
	assert_int_equal(store_data_runs_list(f->s, 0, 0, 0, &runs, &n, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(store_data_runs_active(f->s, &runs, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 1);
	assert_int_equal(runs[0].run_id, ids[4]);
	assert_int_equal(runs[0].state, STORE_DATA_RUN_RUNNING);
	store_data_runs_free(runs, n);
	assert_int_equal(store_data_run_get(f->s, 12345, &runs, f->err, sizeof(f->err)), -ENOENT);
}

/* ---- batches --------------------------------------------------------------------------------- */

static void test_batch_lifecycle(void **state)
{
	struct fixture *f = *state;
	struct store_data_batch *b = NULL;
	int64_t run = new_run(f, 1, true);
	size_t n = 0;

	assert_int_equal(store_data_run_set_plan(f->s, run, 3, 0, 0, 3, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_add(f->s, run, 1, STORE_DATA_BATCH_IMPORT, 2, 300, f->err,
					      sizeof(f->err)),
			 0);
	/* Plan totals are absolute: after the first batch (a single-pass run's final totals)
	 * they must still add up and keep what was confirmed. */
	assert_int_equal(store_data_run_set_plan(f->s, run, 3, 0, 0, 2, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_non_null(strstr(f->err, "already has batches"));
	assert_int_equal(store_data_run_set_plan(f->s, run, 3, 1, 0, 2, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_set_plan(f->s, run, 3, 0, 0, 3, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_add(f->s, run, 1, STORE_DATA_BATCH_IMPORT, 2, 300, f->err,
					      sizeof(f->err)),
			 -EEXIST);
	assert_int_equal(store_data_batch_add(f->s, run, 2, STORE_DATA_BATCH_IMPORT, 1, 100, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_add(f->s, run, 0, STORE_DATA_BATCH_IMPORT, 1, 100, f->err,
					      sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(raw_int(f, "SELECT batches_total FROM runs"), 2);

	/* Confirming before submission is refused. */
	struct store_data_sync_entry ok[2] = {
		{ .email = "a@x.org", .fields_hash = 11, .added_by_ccsync = true },
		{ .email = "b@x.org",
		  .fields_hash = 0xfedcba9876543210ull,
		  .added_by_ccsync = false,
		  .contact_id = "cid-b" },
	};
	struct store_data_confirmation c = { .activity_state = "completed",
					     .synced = ok,
					     .n_synced = 2 };
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_non_null(strstr(f->err, "planned"));

	set_now(1700000100);
	assert_int_equal(store_data_batch_submitted(f->s, run, 1, "act-1", f->err, sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_submitted(f->s, run, 1, "act-1b", f->err, sizeof(f->err)),
			 0); /* re-submission after a transient failure */
	assert_int_equal(store_data_batch_submitted(f->s, run, 1, "", f->err, sizeof(f->err)),
			 -EINVAL);

	/* The counts must account for every contact of the batch. */
	c.n_synced = 1;
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_non_null(strstr(f->err, "accounts for 1"));
	assert_int_equal(raw_int(f, "SELECT count(*) FROM sync_state"), 0);

	c.n_synced = 2;
	c.error_count = 0;
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM sync_state WHERE export_id = 1 AND "
				    "confirmed_run_id = (SELECT max(run_id) FROM runs) AND "
				    "state = 'synced'"),
			 2);
	/* The 64-bit hash round-trips through the signed column. */
	assert_int_equal((uint64_t)raw_int(f, "SELECT fields_hash FROM sync_state WHERE "
					      "email = 'b@x.org'"),
			 0xfedcba9876543210ull);
	assert_int_equal(raw_int(f, "SELECT added_by_ccsync FROM sync_state WHERE email='b@x.org'"),
			 0);
	assert_int_equal(raw_int(f, "SELECT sent * 100 + pending * 10 + batches_done FROM runs"),
			 211);

	assert_int_equal(store_data_batch_fail(f->s, run, 2, NULL, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(
		store_data_batch_fail(f->s, run, 2, "activity failed", f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_abandon(f->s, run, 2, NULL, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(store_data_batch_submitted(f->s, run, 2, "act-2", f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(store_data_batch_fail(f->s, run, 7, "x", f->err, sizeof(f->err)), -ENOENT);

	assert_int_equal(store_data_run_batches(f->s, run, &b, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(b[0].state, STORE_DATA_BATCH_CONFIRMED);
	assert_int_equal(b[0].attempts, 2);
	assert_string_equal(b[0].activity_id, "act-1b");
	assert_string_equal(b[0].activity_state, "completed");
	assert_int_equal(b[0].submitted_at, 1700000100);
	assert_int_equal(b[1].state, STORE_DATA_BATCH_FAILED);
	assert_string_equal(b[1].error, "activity failed");
	assert_null(b[1].activity_id);
	store_data_batches_free(b, n);
	assert_int_equal(raw_int(f, "SELECT batches_done FROM runs"), 2);
	/* Contacts refused outside any batch leave pending (not below zero). */
	assert_int_equal(store_data_run_adjust_pending(f->s, run, -2, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(raw_int(f, "SELECT pending FROM runs"), 1);
	assert_int_equal(store_data_run_adjust_pending(f->s, run, -1, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_adjust_pending(f->s, run, 1, f->err, sizeof(f->err)), 0);
	/* A pending contact of the failed batch keeps succeeded out of reach. */
	assert_int_equal(store_data_run_set_state(f->s, run, STORE_DATA_RUN_SUCCEEDED, NULL, f->err,
						  sizeof(f->err)),
			 -EINVAL);
}

static void test_confirm_is_atomic(void **state)
{
	struct fixture *f = *state;
	int64_t run = new_run(f, 1, true);
	struct store_data_sync_entry ok[2] = {
		{ .email = "first@x.org", .fields_hash = 1 },
		{ .email = NULL, .fields_hash = 2 }, /* breaks the confirmation half-way */
	};
	struct store_data_confirmation c = { .synced = ok, .n_synced = 2 };

	assert_int_equal(store_data_batch_add(f->s, run, 1, STORE_DATA_BATCH_IMPORT, 2, 1, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_submitted(f->s, run, 1, "a", f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_false(store_in_transaction(f->s));
	assert_int_equal(raw_int(f, "SELECT count(*) FROM sync_state"), 0);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM run_batches WHERE state = 'submitted'"),
			 1);
	assert_int_equal(raw_int(f, "SELECT sent + batches_done FROM runs"), 0);

	/* Inside a caller's transaction, the failed call is rolled back to its savepoint and
	 * the caller's own earlier work survives. */
	assert_int_equal(store_begin_write(f->s), 0);
	assert_int_equal(store_data_refresh_announce(f->s, NULL), 0);
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_true(store_in_transaction(f->s));
	ok[1].email = "second@x.org";
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_commit(f->s), 0);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM sync_state"), 2);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM upstream_refreshes"), 1);
}

static void test_cc_rejections_remembered(void **state)
{
	struct fixture *f = *state;
	int64_t run = new_run(f, 1, true);
	struct store_data_sync_entry ok[1] = {
		{ .email = "ok@x.org", .fields_hash = 5, .added_by_ccsync = true }
	};
	struct store_data_rejection rej[2] = {
		{ .profile_id = "p2",
		  .email = "bad@x.org",
		  .reason_code = "cc_invalid",
		  .reason = "CC: invalid address",
		  .permanent = true,
		  .fields_hash = 77 },
		{ .profile_id = "p3",
		  .email = "later@x.org",
		  .reason_code = "cc_transient",
		  .reason = "CC: try again",
		  .permanent = false,
		  .fields_hash = 88 },
	};
	struct store_data_confirmation c = {
		.synced = ok, .n_synced = 1, .rejected = rej, .n_rejected = 2, .error_count = 2
	};
	struct store_data_rejected_row *rows = NULL;
	size_t n = 0;

	assert_int_equal(store_data_run_set_plan(f->s, run, 3, 0, 0, 3, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_add(f->s, run, 1, STORE_DATA_BATCH_IMPORT, 3, 1, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_submitted(f->s, run, 1, "a", f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)), 0);
	/* Counters: 1 sent, 2 rejected, nothing pending; rejected equals the rejected rows. */
	assert_int_equal(raw_int(f, "SELECT sent * 100 + rejected * 10 + pending FROM runs"), 120);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM rejected_rows"), 2);
	/* The permanent rejection is remembered with its content hash; the transient is not. */
	assert_int_equal(raw_int(f, "SELECT fields_hash FROM sync_state WHERE email = 'bad@x.org' "
				    "AND state = 'rejected' AND added_by_ccsync = 0"),
			 77);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM sync_state WHERE email = 'later@x.org'"),
			 0);
	assert_int_equal(
		store_data_rejected_page(f->s, run, 0, 10, &rows, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 2);
	assert_string_equal(rows[0].reason_code, "cc_invalid");
	assert_true(rows[0].permanent);
	assert_false(rows[1].permanent);
	assert_string_equal(rows[1].profile_id, "p3");
	store_data_rejected_rows_free(rows, n);
	assert_int_equal(store_data_run_set_state(f->s, run, STORE_DATA_RUN_PARTIALLY_SUCCEEDED,
						  NULL, f->err, sizeof(f->err)),
			 0);

	/* Later the changed contact is accepted: synced, and added_by_ccsync now comes from
	 * the confirmation because the row was a refused new contact. */
	run = new_run(f, 1, true);
	ok[0] = (struct store_data_sync_entry){ .email = "bad@x.org",
						.fields_hash = 78,
						.added_by_ccsync = true };
	c = (struct store_data_confirmation){ .synced = ok, .n_synced = 1 };
	assert_int_equal(store_data_batch_add(f->s, run, 1, STORE_DATA_BATCH_IMPORT, 1, 1, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_submitted(f->s, run, 1, "b", f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_confirm(f->s, run, 1, &c, f->err, sizeof(f->err)), 0);
	assert_int_equal(raw_int(f, "SELECT added_by_ccsync * 1000 + fields_hash FROM sync_state "
				    "WHERE email = 'bad@x.org' AND state = 'synced'"),
			 1078);
	/* ...whereas a synced contact keeps the flag of its first confirmation. */
	ok[0] = (struct store_data_sync_entry){ .email = "ok@x.org",
						.fields_hash = 6,
						.added_by_ccsync = false };
	assert_int_equal(store_data_batch_add(f->s, run, 2, STORE_DATA_BATCH_IMPORT, 1, 1, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_submitted(f->s, run, 2, "c", f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_confirm(f->s, run, 2, &c, f->err, sizeof(f->err)), 0);
	assert_int_equal(raw_int(f, "SELECT added_by_ccsync FROM sync_state WHERE email = "
				    "'ok@x.org'"),
			 1);
}

static void test_removal_confirm(void **state)
{
	struct fixture *f = *state;
	int64_t run = new_run(f, 1, true);
	const char *emails[2] = { "ours@x.org", "theirs@x.org" };

	raw_exec(f,
		 "INSERT INTO sync_state (export_id, email, fields_hash, added_by_ccsync) VALUES "
		 "(1, 'ours@x.org', 1, 1), (1, 'theirs@x.org', 2, 0), (2, 'ours@x.org', 3, 1)");
	assert_int_equal(store_data_batch_add(f->s, run, 1, STORE_DATA_BATCH_REMOVE, 2, 0, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(
		store_data_removal_confirm(f->s, run, 1, emails, 2, f->err, sizeof(f->err)),
		-EINVAL); /* not submitted yet */
	assert_int_equal(store_data_batch_submitted(f->s, run, 1, "rm", f->err, sizeof(f->err)), 0);
	assert_int_equal(
		store_data_removal_confirm(f->s, run, 1, emails, 1, f->err, sizeof(f->err)),
		-EINVAL); /* wrong count */
	assert_int_equal(
		store_data_removal_confirm(f->s, run, 1, emails, 2, f->err, sizeof(f->err)), 0);
	/* Only this export's rows that ccsync added are deleted. */
	assert_int_equal(raw_int(f, "SELECT count(*) FROM sync_state WHERE export_id = 1"), 1);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM sync_state WHERE export_id = 2"), 1);
	assert_int_equal(raw_int(f, "SELECT removed FROM runs"), 2);
	/* An import batch cannot be confirmed as a removal and vice versa. */
	assert_int_equal(store_data_batch_add(f->s, run, 2, STORE_DATA_BATCH_IMPORT, 1, 0, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_submitted(f->s, run, 2, "i", f->err, sizeof(f->err)), 0);
	assert_int_equal(
		store_data_removal_confirm(f->s, run, 2, emails, 1, f->err, sizeof(f->err)),
		-EINVAL);
}

/* ---- rejected rows --------------------------------------------------------------------------- */

static void test_rejected_rows_bulk_and_paging(void **state)
{
	struct fixture *f = *state;
	enum { N = 100000 };
	struct store_data_rejection *rows = calloc(N, sizeof(*rows));
	struct store_data_rejected_row *page = NULL;
	int64_t run = new_run(f, 1, true), after = 0, total = 0;
	char(*pids)[16] = calloc(N, sizeof(*pids));
	size_t n;

	for (int i = 0; i < N; i++) {
		snprintf(pids[i], sizeof(pids[i]), "p%06d", i);
		rows[i] = (struct store_data_rejection){ .profile_id = pids[i],
							 .email = i % 2 ? "x@y.org" : NULL,
							 .reason_code = "email_missing",
							 .reason = "no email",
							 .permanent = true };
	}
	assert_int_equal(store_data_rejected_add(f->s, run, rows, N, f->err, sizeof(f->err)), 0);
	assert_int_equal(raw_int(f, "SELECT rejected FROM runs"), N);
	/* Appending continues the sequence. */
	assert_int_equal(store_data_rejected_add(f->s, run, rows, 3, f->err, sizeof(f->err)), 0);
	assert_int_equal(raw_int(f, "SELECT max(seq) * (count(*) = max(seq)) FROM rejected_rows"),
			 N + 3);
	assert_int_equal(raw_int(f, "SELECT rejected FROM runs"), N + 3);
	/* A row without reason is refused and nothing of the call is kept. */
	rows[1].reason = NULL;
	assert_int_equal(store_data_rejected_add(f->s, run, rows, 2, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_int_equal(raw_int(f, "SELECT rejected FROM runs"), N + 3);
	assert_int_equal(store_data_rejected_add(f->s, 999, rows, 1, f->err, sizeof(f->err)),
			 -ENOENT);

	/* Page through everything. */
	do {
		assert_int_equal(store_data_rejected_page(f->s, run, after, 7000, &page, &n, f->err,
							  sizeof(f->err)),
				 0);
		for (size_t i = 0; i < n; i++) {
			assert_int_equal(page[i].seq, after + 1 + (int64_t)i);
			if (page[i].seq <= N)
				assert_string_equal(page[i].profile_id, pids[page[i].seq - 1]);
		}
		if (n)
			after = page[n - 1].seq;
		total += (int64_t)n;
		store_data_rejected_rows_free(page, n);
	} while (n > 0);
	assert_int_equal(total, N + 3);
	assert_int_equal(
		store_data_rejected_page(f->s, run, 0, 0, &page, &n, f->err, sizeof(f->err)),
		-EINVAL);
	free(rows);
	free(pids);
}

/* ---- recovery and retention ------------------------------------------------------------------ */

static void test_recovery_and_resume_chain(void **state)
{
	struct fixture *f = *state;
	struct store_data_recovery rec = {};
	int64_t running = new_run(f, 1, true), queued = new_run(f, 2, false), resume = 0, again = 0;
	int64_t *chain = NULL;
	size_t n = 0;

	assert_int_equal(store_data_batch_add(f->s, running, 1, STORE_DATA_BATCH_IMPORT, 5, 1,
					      f->err, sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_add(f->s, running, 2, STORE_DATA_BATCH_IMPORT, 5, 1,
					      f->err, sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_submitted(f->s, running, 1, "a1", f->err, sizeof(f->err)),
			 0);
	set_now(1700000500);
	assert_int_equal(store_data_recover(f->s, &rec, f->err, sizeof(f->err)), 0);
	assert_int_equal(rec.n_interrupted, 1);
	assert_int_equal(rec.interrupted[0], running);
	assert_int_equal(rec.n_queued, 1);
	assert_int_equal(rec.queued[0], queued);
	store_data_recovery_done(&rec);
	assert_null(rec.interrupted);

	assert_int_equal(raw_int(f, "SELECT count(*) FROM runs WHERE state = 'interrupted' AND "
				    "finished_at = 1700000500 AND error IS NOT NULL AND "
				    "batches_done = 2"),
			 1);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM run_batches WHERE state = 'abandoned'"),
			 2);
	/* Idempotent: nothing is running any more. */
	assert_int_equal(store_data_recover(f->s, &rec, f->err, sizeof(f->err)), 0);
	assert_int_equal(rec.n_interrupted, 0);
	store_data_recovery_done(&rec);

	/* Resume it, interrupt the resume too, resume again: the chain lists all three. */
	struct store_data_run_request req = { .export_id = 1,
					      .trigger = STORE_DATA_TRIGGER_RESUME,
					      .resumed_from = running };
	assert_int_equal(store_data_run_create(f->s, &req, &resume, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_set_state(f->s, resume, STORE_DATA_RUN_RUNNING, NULL,
						  f->err, sizeof(f->err)),
			 0);
	assert_int_equal(store_data_run_set_state(f->s, resume, STORE_DATA_RUN_INTERRUPTED, NULL,
						  f->err, sizeof(f->err)),
			 0);
	req.resumed_from = resume;
	assert_int_equal(store_data_run_create(f->s, &req, &again, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_resume_chain(f->s, again, &chain, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(chain[0], again);
	assert_int_equal(chain[1], resume);
	assert_int_equal(chain[2], running);
	free(chain);
	assert_int_equal(store_data_run_resume_chain(f->s, 4242, &chain, &n), -ENOENT);
}

static void test_purge(void **state)
{
	struct fixture *f = *state;
	struct store_data_purge_result res = {};
	struct store_data_rejection rj = { .reason_code = "c", .reason = "r" };
	int64_t old, mid, resumer, live;
	struct store_data_run_request req = { .export_id = 1,
					      .trigger = STORE_DATA_TRIGGER_RESUME };

	set_now(1000000);
	old = new_run(f, 1, true);
	live = new_run(f, 2, true); /* never purged while running, however old */
	assert_int_equal(store_data_rejected_add(f->s, old, &rj, 1, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_add(f->s, old, 1, STORE_DATA_BATCH_IMPORT, 1, 1, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(store_data_run_set_state(f->s, old, STORE_DATA_RUN_INTERRUPTED, NULL,
						  f->err, sizeof(f->err)),
			 0);
	set_now(1000000 + 20 * 86400);
	req.resumed_from = old;
	assert_int_equal(store_data_run_create(f->s, &req, &resumer, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_set_state(f->s, resumer, STORE_DATA_RUN_RUNNING, NULL,
						  f->err, sizeof(f->err)),
			 0);
	assert_int_equal(store_data_rejected_add(f->s, resumer, &rj, 1, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_set_state(f->s, resumer, STORE_DATA_RUN_CANCELLED, NULL,
						  f->err, sizeof(f->err)),
			 0);
	set_now(1000000 + 25 * 86400);
	mid = new_run(f, 1, true);
	assert_int_equal(store_data_rejected_add(f->s, mid, &rj, 1, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_set_state(f->s, mid, STORE_DATA_RUN_FAILED, "x", f->err,
						  sizeof(f->err)),
			 0);

	/* 30 days later: runs kept for 15 days, rejected rows for 7. */
	set_now(1000000 + 30 * 86400);
	assert_int_equal(store_data_purge(f->s, 15, 7, &res, f->err, sizeof(f->err)), 0);
	assert_int_equal(res.runs, 1);		/* old */
	assert_int_equal(res.rejected_rows, 1); /* the resumer's; mid finished 5 days ago */
	assert_int_equal(raw_int(f, "SELECT count(*) FROM runs"), 3);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM run_batches"), 0); /* cascaded */
	assert_int_equal(raw_int(f, "SELECT count(*) FROM rejected_rows"), 1);
	/* The kept resumer lost its link to the deleted run, instead of blocking the purge. */
	assert_int_equal(raw_int(f, "SELECT count(*) FROM runs WHERE resumed_from IS NULL"), 3);
	{
		struct store_data_run *r = get_run(f, live);

		assert_int_equal(r->state, STORE_DATA_RUN_RUNNING);
		store_data_run_free(r);
	}
}

/* ---- segments, attributes, refreshes, export definitions ------------------------------------- */

static void test_segments_and_attributes(void **state)
{
	struct fixture *f = *state;
	struct store_data_segment *segs = NULL;
	size_t n = 0, sampled = 0;
	int64_t id = 0;

	raw_exec(f,
		 "INSERT INTO segment_members VALUES (1, 'a'), (1, 'b'), (2, 'a');"
		 "INSERT INTO segments (segment_id, name, description) VALUES (3, 'a-first', 'd');"
		 "INSERT INTO profiles (profile_id, attributes) VALUES "
		 "('a', '{\"email\":\"a@x.org\",\"nothing\":null,\"we.ird\\\"key\":1}'),"
		 "('b', '{\"email\":\"b@x.org\"}'), ('c', '{\"rare\":\"yes\"}');");
	assert_int_equal(store_data_segments_list(f->s, &segs, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 3);
	assert_string_equal(segs[0].name, "a-first");
	assert_string_equal(segs[0].description, "d");
	assert_int_equal(segs[0].members, 0);
	assert_string_equal(segs[1].name, "s1");
	assert_int_equal(segs[1].members, 2);
	assert_null(segs[1].description);
	assert_int_equal(segs[2].members, 1);
	store_data_segments_free(segs, n);
	assert_int_equal(store_data_segment_lookup(f->s, "s2", &id), 0);
	assert_int_equal(id, 2);
	assert_int_equal(store_data_segment_lookup(f->s, "nope", &id), -ENOENT);

	assert_int_equal(store_data_attribute_exists(f->s, "email", 0, &sampled), 1);
	assert_int_equal(sampled, 3);
	assert_int_equal(store_data_attribute_exists(f->s, "mail", 0, NULL), 0);
	assert_int_equal(store_data_attribute_exists(f->s, "nothing", 0, NULL), 0); /* null only */
	assert_int_equal(store_data_attribute_exists(f->s, "we.ird\"key", 0, NULL), 1);
	/* The sample bounds the work: 'rare' lives only in the third profile (by id). */
	assert_int_equal(store_data_attribute_exists(f->s, "rare", 2, &sampled), 0);
	assert_int_equal(sampled, 2);
	assert_int_equal(store_data_attribute_exists(f->s, "rare", 3, NULL), 1);
	assert_int_equal(store_data_attribute_exists(f->s, "", 0, NULL), -EINVAL);
}

static void test_refresh_announcements(void **state)
{
	struct fixture *f = *state;
	int64_t id = 0, count = -1;

	assert_int_equal(store_data_refresh_consume(f->s, &count), 0);
	assert_int_equal(count, 0);
	assert_int_equal(store_data_refresh_announce(f->s, &id), 0);
	assert_true(id > 0);
	/* The upstream writer may announce directly in SQL, as schema/README.md says. */
	raw_exec(f, "INSERT INTO upstream_refreshes DEFAULT VALUES");
	set_now(1700000777);
	assert_int_equal(store_data_refresh_consume(f->s, &count), 0);
	assert_int_equal(count, 2);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM upstream_refreshes WHERE "
				    "consumed_at = 1700000777"),
			 2);
	assert_int_equal(store_data_refresh_consume(f->s, &count), 0);
	assert_int_equal(count, 0);
}

static void test_export_load(void **state)
{
	struct fixture *f = *state;
	struct store_data_export *e = NULL;

	raw_exec(f, "UPDATE exports SET first_name_field = 'fn' WHERE export_id = 1");
	assert_int_equal(store_data_export_load(f->s, 1, &e, f->err, sizeof(f->err)), 0);
	assert_string_equal(e->name, "one");
	assert_true(e->mirror);
	assert_string_equal(e->email_field, "email");
	assert_string_equal(e->first_name_field, "fn");
	assert_null(e->last_name_field);
	assert_int_equal(e->n_fields, 2);
	assert_string_equal(e->fields[0].target, "cf:tier"); /* ordered by target */
	assert_string_equal(e->fields[1].target, "job_title");
	assert_string_equal(e->fields[1].source, "title");
	assert_int_equal(e->n_segments, 2);
	assert_int_equal(e->segment_ids[0], 1);
	assert_int_equal(e->segment_ids[1], 2);
	store_data_export_free(e);
	assert_int_equal(store_data_export_load(f->s, 3, &e, f->err, sizeof(f->err)), -ENOENT);
	assert_non_null(strstr(f->err, "removed"));
	assert_int_equal(store_data_export_load(f->s, 9, &e, f->err, sizeof(f->err)), -ENOENT);
}

static void test_import_staging(void **state)
{
	struct fixture *f = *state;
	struct store_data_import_result res = {};
	int64_t a = 0, b = 0, prev = 0;
	bool own = false;

	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES ('p1', '{\"old\":1}')");
	assert_int_equal(store_data_import_begin(f->s, &a, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_import_begin(f->s, &b, f->err, sizeof(f->err)), 0);
	assert_int_not_equal(a, b);
	assert_int_equal(store_data_import_feed_begin(f->s, &own), 0);
	assert_true(own);
	assert_int_equal(store_data_import_stage(f->s, a, "p1", 2, "{\"new\":true}", NULL, NULL,
						 &prev, f->err, sizeof(f->err)),
			 0);
	/* JSON Lines: the id key is removed by SQLite, numbers keep their text. */
	assert_int_equal(store_data_import_stage(f->s, a, "p2", 3, NULL,
						 "{\"id\":\"p2\", \"n\": 1.50, \"big\": 1e400}",
						 "id", &prev, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(store_data_import_stage(f->s, a, "p1", 9, "{}", NULL, NULL, &prev, f->err,
						 sizeof(f->err)),
			 -EEXIST);
	assert_int_equal(prev, 2);
	/* The same id in another import is independent. */
	assert_int_equal(store_data_import_stage(f->s, b, "p1", 1, NULL, NULL, NULL, &prev, f->err,
						 sizeof(f->err)),
			 0);
	/* Staging took no lock on the main database: a writer gets in meanwhile. */
	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES ('w', '{}')");
	assert_int_equal(store_data_import_feed_end(f->s, own, true), 0);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM profiles"), 2);

	assert_int_equal(store_data_import_apply_profiles(f->s, a, &res, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(res.rows, 2);
	assert_int_equal(res.inserted, 1);
	assert_int_equal(res.updated, 1);
	assert_int_equal(raw_int(f, "SELECT attributes = '{\"new\":true}' FROM profiles WHERE "
				    "profile_id = 'p1'"),
			 1);
	assert_int_equal(raw_int(f,
				 "SELECT attributes = '{\"n\":1.50,\"big\":1e400}' FROM profiles "
				 "WHERE profile_id = 'p2'"),
			 1);

	assert_int_equal(
		store_data_import_apply_segment(f->s, b, "fresh", &res, f->err, sizeof(f->err)), 0);
	assert_true(res.segment_created);
	assert_int_equal(res.rows, 1);
	assert_int_equal(res.without_profile, 0);
	assert_int_equal(store_data_import_discard(f->s, a), 0);
	assert_int_equal(store_data_import_discard(f->s, b), 0);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM segment_members m JOIN segments s USING "
				    "(segment_id) WHERE s.name = 'fresh' AND m.profile_id = 'p1'"),
			 1);
}

/* ---- the plan's member scan ------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Checks a member scan of export 1 against the expected ids (sorted here, bytewise), with
 * attributes exactly for the ids that have a profile ("p..." ids do, "ghost..." ids do not).
 */
static void check_scan(struct fixture *f, char **want, size_t n_want, bool with_attributes)
{
	const struct store_data_member_row *row;
	struct store_data_member_scan *sc = NULL;
	size_t n = 0;
	int r;

	qsort(want, n_want, sizeof(*want), cmp_str);
	assert_int_equal(
		store_data_member_scan_open(f->s, 1, with_attributes, -1, &sc, f->err, sizeof(f->err)),
		0);
	for (int pass = 0; pass < 2; pass++) {
		n = 0;
		while ((r = store_data_member_scan_next(sc, &row, f->err, sizeof(f->err))) > 0) {
			assert_true(n < n_want);
			assert_int_equal(row->profile_id_len, strlen(want[n]));
			assert_memory_equal(row->profile_id, want[n], row->profile_id_len);
			if (with_attributes && want[n][0] == 'p') {
				assert_non_null(row->attributes);
				assert_int_equal(row->attributes_len, strlen(row->attributes));
				assert_non_null(strstr(row->attributes, want[n]));
			} else {
				assert_null(row->attributes);
			}
			n++;
		}
		assert_int_equal(r, 0);
		assert_int_equal(n, n_want);
		assert_int_equal(store_data_member_scan_rewind(sc), 0);
	}
	store_data_member_scan_free(sc);
}

static void test_member_scan(void **state)
{
	struct fixture *f = *state;
	enum { N = 60000 };
	char **want = calloc(N + 10, sizeof(*want));
	int64_t count = 0;
	size_t n = 0;

	/* Profiles p00000..; segment 1: even ones and 5 ghosts; segment 2: multiples of 3. A
	 * profile in both comes out once. */
	raw_exec(f,
		 "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 59999)"
		 "INSERT INTO profiles (profile_id, attributes) "
		 "SELECT printf('p%05d', i), json_object('id', printf('p%05d', i)) FROM g;"
		 "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 59999)"
		 "INSERT INTO segment_members SELECT 1, printf('p%05d', i) FROM g WHERE i % 2 = 0;"
		 "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 59999)"
		 "INSERT INTO segment_members SELECT 2, printf('p%05d', i) FROM g WHERE i % 3 = 0;"
		 "INSERT INTO segment_members VALUES (1, 'ghost1'), (1, 'ghost3'), (1, 'ghost2'),"
		 "(2, 'ghost2'), (1, 'a-ghost'), (2, 'zz-ghost');");
	for (int i = 0; i < N; i++)
		if (i % 2 == 0 || i % 3 == 0)
			assert_true(asprintf(&want[n++], "p%05d", i) > 0);
	want[n++] = strdup("ghost1");
	want[n++] = strdup("ghost2");
	want[n++] = strdup("ghost3");
	want[n++] = strdup("a-ghost");
	want[n++] = strdup("zz-ghost");
	assert_int_equal(store_data_member_count(f->s, 1, &count), 0);
	assert_int_equal(count, (int64_t)n);

	/* 40,005 members of 60,000 profiles: read by a merge join with the profiles table. */
	check_scan(f, want, n, true);
	check_scan(f, want, n, false);
	/* Fewer members: each looked up (the SQL join); same answers. */
	raw_exec(f, "DELETE FROM segment_members WHERE segment_id = 1 AND profile_id LIKE 'p%' AND "
		    "CAST(substr(profile_id, 2) AS INTEGER) >= 600;"
		    "DELETE FROM segment_members WHERE segment_id = 2 AND profile_id LIKE 'p%' AND "
		    "CAST(substr(profile_id, 2) AS INTEGER) >= 600;");
	for (size_t i = 0; i < n; i++)
		free(want[i]);
	n = 0;
	for (int i = 0; i < 600; i++)
		if (i % 2 == 0 || i % 3 == 0)
			assert_true(asprintf(&want[n++], "p%05d", i) > 0);
	want[n++] = strdup("ghost1");
	want[n++] = strdup("ghost2");
	want[n++] = strdup("ghost3");
	want[n++] = strdup("a-ghost");
	want[n++] = strdup("zz-ghost");
	check_scan(f, want, n, true);
	assert_int_equal(store_data_member_count(f->s, 1, &count), 0);
	assert_int_equal(count, (int64_t)n);
	for (size_t i = 0; i < n; i++)
		free(want[i]);
	free(want);

	/* A BLOB id breaks the ordering the scan relies on: a clear error, not a wrong plan. */
	raw_exec(f, "INSERT INTO segment_members VALUES (2, x'7062');");
	{
		const struct store_data_member_row *row;
		struct store_data_member_scan *sc = NULL;
		int r;

		assert_int_equal(
			store_data_member_scan_open(f->s, 1, true, -1, &sc, f->err, sizeof(f->err)),
			0);
		while ((r = store_data_member_scan_next(sc, &row, f->err, sizeof(f->err))) > 0)
			;
		assert_int_equal(r, -EINVAL);
		assert_non_null(strstr(f->err, "BLOB"));
		store_data_member_scan_free(sc);
	}
	{
		char *attrs = NULL;

		assert_int_equal(store_data_profile_attributes(f->s, "p00007", 6, &attrs), 0);
		assert_string_equal(attrs, "{\"id\":\"p00007\"}");
		free(attrs);
		assert_int_equal(store_data_profile_attributes(f->s, "nope", 4, &attrs), -ENOENT);
	}
}

/*
 * 50,000 members among 150,000 profiles: enough members for the merge join, too many profiles
 * for it. The merge gives up after reading twice as many profiles as there are members (two
 * thirds of the way) and looks the rest up; the rows are the same either way, also after a
 * rewind (check_scan reads twice).
 */
static void test_member_scan_gives_up_merge(void **state)
{
	struct fixture *f = *state;
	enum { N = 150000 };
	char **want = calloc(N / 3 + 10, sizeof(*want));
	size_t n = 0;

	raw_exec(f,
		 "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 149999)"
		 "INSERT INTO profiles (profile_id, attributes) "
		 "SELECT printf('p%06d', i), json_object('id', printf('p%06d', i)) FROM g;"
		 "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 149999)"
		 "INSERT INTO segment_members SELECT 1, printf('p%06d', i) FROM g WHERE i % 3 = 0;"
		 "INSERT INTO segment_members VALUES (1, 'ghost1'), (2, 'zz-ghost');");
	for (int i = 0; i < N; i += 3)
		assert_true(asprintf(&want[n++], "p%06d", i) > 0);
	want[n++] = strdup("ghost1");
	want[n++] = strdup("zz-ghost");
	check_scan(f, want, n, true);
	for (size_t i = 0; i < n; i++)
		free(want[i]);
	free(want);
}

/* ---- the v1 fixture -------------------------------------------------------------------------- */

static void test_v1_fixture_upgrades_and_reads(void **state)
{
	struct fixture *f = *state;
	struct store_data_run *runs = NULL;
	struct store_data_segment *segs = NULL;
	struct store_data_export *e = NULL;
	struct store_data_recovery rec = {};
	char src[PATH_MAX], cmd[2 * PATH_MAX + 16];
	struct store *s = NULL;
	int64_t count = 0;
	size_t n = 0;
	int v = 0;

	store_free(f->s);
	f->s = NULL;
	snprintf(src, sizeof(src), "%s/schema-v1.db", CCSYNC_TEST_DATA);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, f->db);
	assert_int_equal(system(cmd), 0);
	if (store_open(f->db, 0, 2000, &s, f->err, sizeof(f->err)) < 0)
		fail_msg("%s", f->err);
	assert_int_equal(store_version(s, &v), 0);
	assert_int_equal(v, store_latest_version());

	assert_int_equal(store_data_runs_list(s, 1, 0, 10, &runs, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 3);
	assert_int_equal(runs[0].state, STORE_DATA_RUN_QUEUED);
	assert_int_equal(runs[0].resumed_from, 2);
	assert_int_equal(runs[2].counters.selected, runs[2].counters.sent +
							    runs[2].counters.rejected +
							    runs[2].counters.unchanged);
	store_data_runs_free(runs, n);
	assert_int_equal(store_data_segments_list(s, &segs, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(segs[0].members, 3);
	store_data_segments_free(segs, n);
	assert_int_equal(store_data_export_load(s, 1, &e, f->err, sizeof(f->err)), 0);
	assert_int_equal(e->n_fields, 2);
	store_data_export_free(e);
	assert_int_equal(store_data_recover(s, &rec, f->err, sizeof(f->err)), 0);
	assert_int_equal(rec.n_queued, 1);
	store_data_recovery_done(&rec);
	assert_int_equal(store_data_refresh_consume(s, &count), 0);
	assert_int_equal(count, 1);
	/* 0002 on top of the v1 data: no staging list yet, one can be recorded. */
	{
		struct store_mirror_staging m = { .dirty = true }, got = { 0 };

		assert_int_equal(store_mirror_staging_get(s, 1, &got, f->err, sizeof(f->err)), 0);
		snprintf(m.list_id, sizeof(m.list_id), "%s", "0f0f0f0f-0000-4000-8000-000000000001");
		assert_int_equal(store_mirror_staging_set(s, 1, &m, f->err, sizeof(f->err)), 0);
		assert_int_equal(store_mirror_staging_get(s, 1, &got, f->err, sizeof(f->err)), 1);
		assert_true(got.dirty);
	}
	store_free(s);
}

/* The staging list state of a mirror export: round trip, pending activity, forget, cascade. */
static void test_mirror_staging_state(void **state)
{
	struct fixture *f = *state;
	struct store_mirror_staging m = { 0 }, got = { 0 };

	assert_int_equal(store_mirror_staging_get(f->s, 1, &got, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_mirror_has_sync_state(f->s, 1), 0);
	snprintf(m.list_id, sizeof(m.list_id), "%s", "0f0f0f0f-0000-4000-8000-000000000001");
	assert_int_equal(store_mirror_staging_set(f->s, 1, &m, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_mirror_staging_get(f->s, 1, &got, f->err, sizeof(f->err)), 1);
	assert_string_equal(got.list_id, m.list_id);
	assert_false(got.dirty);
	assert_string_equal(got.pending_activity_id, "");
	m.dirty = true;
	m.pending_is_empty = true;
	snprintf(m.pending_activity_id, sizeof(m.pending_activity_id), "%s",
		 "4b6b7b1e-0000-4000-8000-0000000000aa");
	assert_int_equal(store_mirror_staging_set(f->s, 1, &m, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_mirror_staging_get(f->s, 1, &got, f->err, sizeof(f->err)), 1);
	assert_true(got.dirty);
	assert_true(got.pending_is_empty);
	assert_string_equal(got.pending_activity_id, m.pending_activity_id);
	/* No pending activity: the flag goes with it. */
	m.pending_activity_id[0] = '\0';
	assert_int_equal(store_mirror_staging_set(f->s, 1, &m, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_mirror_staging_get(f->s, 1, &got, f->err, sizeof(f->err)), 1);
	assert_false(got.pending_is_empty);
	/* A malformed list id is refused by the schema. */
	snprintf(m.list_id, sizeof(m.list_id), "%s", "short");
	assert_true(store_mirror_staging_set(f->s, 1, &m, f->err, sizeof(f->err)) < 0);
	assert_int_equal(store_mirror_staging_forget(f->s, 1, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_mirror_staging_get(f->s, 1, &got, f->err, sizeof(f->err)), 0);
	/* The row goes with its export. */
	snprintf(m.list_id, sizeof(m.list_id), "%s", "0f0f0f0f-0000-4000-8000-000000000001");
	assert_int_equal(store_mirror_staging_set(f->s, 1, &m, f->err, sizeof(f->err)), 0);
	raw_exec(f, "INSERT INTO sync_state (export_id, email, fields_hash) VALUES (1, 'a@b.c', 1)");
	assert_int_equal(store_mirror_has_sync_state(f->s, 1), 1);
	raw_exec(f, "PRAGMA foreign_keys = ON; DELETE FROM sync_state; DELETE FROM runs; "
		    "DELETE FROM export_segments; DELETE FROM export_fields; "
		    "DELETE FROM exports WHERE export_id = 1");
	assert_int_equal(raw_int(f, "SELECT count(*) FROM mirror_staging"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_run_create_and_state_machine, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_create_refusals, setup, teardown),
		cmocka_unit_test(test_enum_strings),
		cmocka_unit_test_setup_teardown(test_runs_history_queries, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_lifecycle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_confirm_is_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cc_rejections_remembered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal_confirm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mirror_staging_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejected_rows_bulk_and_paging, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_recovery_and_resume_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_purge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segments_and_attributes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refresh_announcements, setup, teardown),
		cmocka_unit_test_setup_teardown(test_export_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_staging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_member_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_member_scan_gives_up_merge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_v1_fixture_upgrades_and_reads, setup,
						teardown),
	};
	return cmocka_run_group_tests_name("store-data", tests, NULL, NULL);
}
