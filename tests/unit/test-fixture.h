/* SPDX-License-Identifier: MIT */
/*
 * The usual fixture of store-level unit tests: a fresh store (all migrations applied) in a
 * temporary directory of its own, and SQL through the store's own connection. Include after
 * <cmocka.h>.
 */
#pragma once

#include <limits.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdlib.h>

#include "store-internal.h"
#include "store.h"
#include "test-helpers.h"

struct store_fixture {
	struct tmpdir dir;
	char db[PATH_MAX];	/* the database file, for connections of a test's own */
	struct store *s;
	char err[1024];		/* for the calls under test */
};

/* cmocka setup: *state becomes a struct store_fixture. */
static inline int store_fixture_setup(void **state)
{
	struct store_fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	tmpdir_make(&f->dir);
	tmpdir_file(&f->dir, "ccsync.db", f->db, sizeof(f->db));
	if (store_open(f->db, STORE_OPEN_CREATE, 2000, &f->s, f->err, sizeof(f->err)) < 0)
		fail_msg("%s", f->err);
	*state = f;
	return 0;
}

static inline int store_fixture_teardown(void **state)
{
	struct store_fixture *f = *state;

	store_free(f->s);
	tmpdir_remove(&f->dir);
	free(f);
	return 0;
}

/* Runs sql on the store's own connection; fails the test on error. */
static inline void test_store_exec(struct store *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(store_db(s), sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

/* The first column of the first row of sql, which must return a row, on the store's connection. */
static inline int64_t test_store_int64(struct store *s, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v;

	assert_int_equal(sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}
