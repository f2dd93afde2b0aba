/* SPDX-License-Identifier: MIT */
/* Store core: open, migrations, version checks, pragmas, snapshots (real SQLite files). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "store-internal.h"
#include "store.h"
#include "test-db.h"
#include "test-helpers.h"

struct fixture {
	struct tmpdir dir;
	char db[PATH_MAX];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	tmpdir_make(&f->dir);
	tmpdir_file(&f->dir, "ccsync.db", f->db, sizeof(f->db));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	tmpdir_remove(&f->dir);
	free(f);
	return 0;
}

static void test_fresh_database_reaches_latest(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char err[512] = "";
	struct stat st;
	int v = -1;

	assert_int_equal(store_open(f->db, STORE_OPEN_CREATE, 1000, &s, err, sizeof(err)), 0);
	assert_int_equal(store_version(s, &v), 0);
	assert_true(store_latest_version() >= 1);
	assert_int_equal(v, store_latest_version());
	store_free(s);

	/* Tokens and personal data: owner-only, whatever the umask. */
	assert_int_equal(stat(f->db, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal((int)test_db_int64(f->db, "PRAGMA user_version"), store_latest_version());
	/* Every table the design names exists. */
	assert_int_equal((int)test_db_int64(f->db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
				 "name IN ('profiles','segments','segment_members','connections',"
				 "'connection_tokens','exports','export_segments','export_fields',"
				 "'schedules','runs','run_batches','rejected_rows','sync_state',"
				 "'audit_log','api_usage','upstream_refreshes')"),
			 16);
}

static void test_reopen_is_idempotent(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char err[512];

	assert_int_equal(store_open(f->db, STORE_OPEN_CREATE, 1000, &s, err, sizeof(err)), 0);
	store_free(s);
	test_db_exec(f->db, "INSERT INTO segments (name) VALUES ('kept')");
	assert_int_equal(store_open(f->db, 0, 1000, &s, err, sizeof(err)), 0);
	store_free(s);
	assert_int_equal((int)test_db_int64(f->db, "SELECT count(*) FROM segments WHERE name = 'kept'"), 1);
}

static void test_missing_without_create(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char err[512] = "";

	assert_int_equal(store_open(f->db, 0, 1000, &s, err, sizeof(err)), -ENOENT);
	assert_null(s);
	assert_non_null(strstr(err, f->db));
}

static void test_newer_database_refused(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char err[512] = "", pragma[64];

	snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", store_latest_version() + 1);
	test_db_exec(f->db, pragma);
	assert_int_equal(store_open(f->db, 0, 1000, &s, err, sizeof(err)), -EPROTO);
	assert_null(s);
	assert_non_null(strstr(err, "newer than this ccsync"));
	/* Refusing must not touch the database. */
	assert_int_equal((int)test_db_int64(f->db, "PRAGMA user_version"), store_latest_version() + 1);
	assert_int_equal((int)test_db_int64(f->db, "SELECT count(*) FROM sqlite_schema"), 0);
}

static void test_garbage_file_refused(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char err[512] = "";
	FILE *fp = fopen(f->db, "w");

	assert_non_null(fp);
	for (int i = 0; i < 512; i++)
		fputs("not a database ", fp);
	fclose(fp);
	assert_true(store_open(f->db, 0, 1000, &s, err, sizeof(err)) < 0);
	assert_null(s);
	assert_non_null(strstr(err, f->db));
}

static void test_failed_migration_rolls_back(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	char err[512] = "";

	/* A table in the way makes migration 1 fail half-way: nothing of it may remain. */
	test_db_exec(f->db, "CREATE TABLE runs (x)");
	assert_true(store_open(f->db, 0, 1000, &s, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "migration"));
	assert_int_equal((int)test_db_int64(f->db, "PRAGMA user_version"), 0);
	assert_int_equal((int)test_db_int64(f->db, "SELECT count(*) FROM sqlite_schema WHERE name = 'profiles'"),
			 0);
}

static void test_pragmas(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	sqlite3_stmt *st;
	char err[512];

	assert_int_equal(store_open(f->db, STORE_OPEN_CREATE, 1000, &s, err, sizeof(err)), 0);
	st = store_prepare(s, "PRAGMA journal_mode");
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	st = store_prepare(s, "PRAGMA foreign_keys");
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 1);
	st = store_prepare(s, "PRAGMA secure_delete");
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 1);
	/* Foreign keys are enforced: an export needs a real connection. */
	st = store_prepare(s, "INSERT INTO exports (name, connection_id, list_id, email_field) "
			      "VALUES ('x', 42, '04fe9a97-a579-43c5-bb1a-58ed29bf0a6a', 'email')");
	assert_int_equal(store_exec_stmt(s, st), -EEXIST);
	store_free(s);
}

static void test_snapshot_isolated_from_writer(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	sqlite3 *writer;
	sqlite3_stmt *st;
	char err[512];
	static const char count_sql[] = "SELECT count(*) FROM segment_members";

	assert_int_equal(store_open(f->db, STORE_OPEN_CREATE, 1000, &s, err, sizeof(err)), 0);
	test_db_exec(f->db, "INSERT INTO segments (segment_id, name) VALUES (1, 's');"
			"INSERT INTO segment_members VALUES (1, 'p1'), (1, 'p2');");

	assert_int_equal(store_begin_read(s), 0);
	assert_true(store_in_transaction(s));

	/* The upstream writer commits while the snapshot is open: WAL lets it, and the
	 * snapshot must not see the change. */
	assert_int_equal(sqlite3_open(f->db, &writer), SQLITE_OK);
	sqlite3_busy_timeout(writer, 1000);
	assert_int_equal(sqlite3_exec(writer, "INSERT INTO segment_members VALUES (1, 'p3');"
					      "DELETE FROM segment_members WHERE profile_id = 'p1';",
				      NULL, NULL, NULL),
			 SQLITE_OK);

	st = store_prepare(s, count_sql);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 2);
	sqlite3_reset(st);
	st = store_prepare(s, "SELECT count(*) FROM segment_members WHERE profile_id = 'p1'");
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 1);
	sqlite3_reset(st);
	assert_int_equal(store_end_read(s), 0);

	st = store_prepare(s, count_sql);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_int_equal(sqlite3_column_int(st, 0), 2); /* p2, p3 */
	sqlite3_reset(st);
	sqlite3_close(writer);
	store_free(s);
}

static void test_write_lock_busy_reported(void **state)
{
	struct fixture *f = *state;
	struct store *s = NULL;
	sqlite3 *writer;
	char err[512];

	assert_int_equal(store_open(f->db, STORE_OPEN_CREATE, 50, &s, err, sizeof(err)), 0);
	assert_int_equal(sqlite3_open(f->db, &writer), SQLITE_OK);
	assert_int_equal(sqlite3_exec(writer, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	/* The upstream writer holds the lock past the busy timeout: a clear -EBUSY, no hang. */
	assert_int_equal(store_begin_write(s), -EBUSY);
	assert_false(store_in_transaction(s));
	assert_int_equal(sqlite3_exec(writer, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(store_begin_write(s), 0);
	assert_int_equal(store_rollback(s), 0);
	sqlite3_close(writer);
	store_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fresh_database_reaches_latest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_is_idempotent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_without_create, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_database_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_file_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_migration_rolls_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pragmas, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_isolated_from_writer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_lock_busy_reported, setup, teardown),
	};
	return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
