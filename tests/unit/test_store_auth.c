/* SPDX-License-Identifier: MIT */
/* store-auth: tokens, per-key usage and the auth columns of connections, on a real database. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <cmocka.h>

#include "store-auth.h"
#include "store-internal.h"
#include "test-fixture.h"
#include "test-helpers.h"

static char *query_text(struct store_fixture *f, const char *sql)
{
	sqlite3_stmt *st;
	char *v = NULL;

	assert_int_equal(sqlite3_prepare_v2(store_db(f->s), sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	if (sqlite3_column_text(st, 0))
		v = strdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return v;
}

static int setup(void **state)
{
	struct store_fixture *f;

	store_fixture_setup(state);
	f = *state;
	test_store_exec(f->s, "INSERT INTO connections (connection_id, name, client_id, auth_flow, "
			"usable_by, created_at, updated_at) VALUES (1, 'main', 'key-1', "
			"'pkce', 'admins_and_contributors', 100, 100)");
	test_store_exec(f->s, "INSERT INTO connections (connection_id, name, client_id, "
			"removed_at) VALUES (2, 'gone', 'key-2', 500)");
	return 0;
}

static void test_connection(void **state)
{
	struct store_fixture *f = *state;
	struct store_auth_connection c = { 0 };

	assert_int_equal(store_auth_get_connection(f->s, 1, &c), 0);
	assert_int_equal(c.connection_id, 1);
	assert_string_equal(c.name, "main");
	assert_string_equal(c.client_id, "key-1");
	assert_int_equal(c.flow, STORE_AUTH_FLOW_PKCE);
	assert_int_equal(c.state, STORE_AUTH_UNAUTHORIZED);
	assert_null(c.auth_error);
	store_auth_connection_done(&c);
	assert_int_equal(store_auth_get_connection(f->s, 2, &c), -ENOENT); /* removed */
	assert_int_equal(store_auth_get_connection(f->s, 3, &c), -ENOENT);
	assert_string_equal(store_auth_flow_to_string(STORE_AUTH_FLOW_DEVICE), "device");
	assert_string_equal(store_auth_state_to_string(STORE_AUTH_NEEDS_REAUTH), "needs_reauth");
}

static void test_tokens(void **state)
{
	struct store_fixture *f = *state;
	struct store_auth_tokens t = { 0 };
	struct store_auth_connection c = { 0 };
	char *before, *after;

	assert_int_equal(store_auth_get_tokens(f->s, 1, &t), -ENOENT);
	test_store_exec(f->s, "UPDATE connections SET auth_state = 'needs_reauth', "
			"auth_error = 'old' WHERE connection_id = 1");
	before = query_text(f, "SELECT name || usable_by || client_id || auth_flow || created_at "
			       "FROM connections WHERE connection_id = 1");
	assert_int_equal(store_auth_save_tokens(f->s, 1, "AT1", 1000, "RT1"), 0);
	assert_int_equal(store_auth_get_tokens(f->s, 1, &t), 0);
	assert_string_equal(t.access_token, "AT1");
	assert_string_equal(t.refresh_token, "RT1");
	assert_int_equal(t.access_expires_at, 1000);
	store_auth_tokens_done(&t);
	assert_null(t.access_token);
	/* Saving marks the connection authorized and clears the old error... */
	assert_int_equal(store_auth_get_connection(f->s, 1, &c), 0);
	assert_int_equal(c.state, STORE_AUTH_AUTHORIZED);
	assert_null(c.auth_error);
	store_auth_connection_done(&c);
	assert_true(test_store_int64(f->s, "SELECT updated_at FROM connections "
				     "WHERE connection_id = 1") > 100);
	/* ...and touches no other column of the connection. */
	after = query_text(f, "SELECT name || usable_by || client_id || auth_flow || created_at "
			      "FROM connections WHERE connection_id = 1");
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* A response without a refresh token (long-lived tokens) keeps the stored one. */
	assert_int_equal(store_auth_save_tokens(f->s, 1, "AT2", 2000, NULL), 0);
	assert_int_equal(store_auth_get_tokens(f->s, 1, &t), 0);
	assert_string_equal(t.access_token, "AT2");
	assert_string_equal(t.refresh_token, "RT1");
	store_auth_tokens_done(&t);

	/* Removed or missing connections get nothing written. */
	assert_int_equal(store_auth_save_tokens(f->s, 2, "X", 1, "Y"), -ENOENT);
	assert_int_equal(store_auth_save_tokens(f->s, 9, "X", 1, "Y"), -ENOENT);
	assert_int_equal(test_store_int64(f->s, "SELECT count(*) FROM connection_tokens"), 1);
	assert_int_equal(store_auth_save_tokens(f->s, 1, "", 1, "Y"), -EINVAL);

	/* Inside someone else's transaction the write would not be durable on return. */
	assert_int_equal(store_begin_write(f->s), 0);
	assert_int_equal(store_auth_save_tokens(f->s, 1, "AT3", 3000, "RT3"), -EBUSY);
	assert_int_equal(store_rollback(f->s), 0);
	assert_int_equal(store_auth_get_tokens(f->s, 1, &t), 0);
	assert_string_equal(t.access_token, "AT2");
	store_auth_tokens_done(&t);
}

static void test_state(void **state)
{
	struct store_fixture *f = *state;
	struct store_auth_connection c = { 0 };
	struct store_auth_tokens t = { 0 };
	char *err;

	assert_int_equal(store_auth_save_tokens(f->s, 1, "AT1", 1000, "RT1"), 0);
	test_store_exec(f->s, "UPDATE connections SET updated_at = 5 WHERE connection_id = 1");
	assert_int_equal(store_auth_set_state(f->s, 1, STORE_AUTH_NEEDS_REAUTH,
					      "refresh token refused"), 0);
	assert_int_equal(store_auth_get_connection(f->s, 1, &c), 0);
	assert_int_equal(c.state, STORE_AUTH_NEEDS_REAUTH);
	assert_string_equal(c.auth_error, "refresh token refused");
	store_auth_connection_done(&c);
	assert_true(test_store_int64(f->s, "SELECT updated_at FROM connections "
				     "WHERE connection_id = 1") > 5);
	/* The access token is dropped so nothing uses it again; the refresh token stays for the
	 * record (it is replaced by the next authorization). */
	assert_int_equal(store_auth_get_tokens(f->s, 1, &t), 0);
	assert_null(t.access_token);
	store_auth_tokens_done(&t);
	assert_int_equal(store_auth_set_state(f->s, 1, STORE_AUTH_AUTHORIZED, NULL), 0);
	err = query_text(f, "SELECT auth_error FROM connections WHERE connection_id = 1");
	assert_null(err);
	assert_int_equal(store_auth_set_state(f->s, 2, STORE_AUTH_AUTHORIZED, NULL), -ENOENT);
	assert_int_equal(store_auth_set_state(f->s, 1, (enum store_auth_state)7, NULL), -EINVAL);
}

static void test_usage(void **state)
{
	struct store_fixture *f = *state;
	struct store_auth_usage u = { .day = "2024-03-10", .requests = 42, .paused_until = 0 };
	struct store_auth_usage back;

	assert_int_equal(store_auth_get_usage(f->s, "key-1", &back), -ENOENT);
	assert_int_equal(store_auth_save_usage(f->s, "key-1", &u), 0);
	assert_int_equal(store_auth_get_usage(f->s, "key-1", &back), 0);
	assert_string_equal(back.day, "2024-03-10");
	assert_int_equal(back.requests, 42);
	assert_int_equal(back.paused_until, 0);
	assert_int_equal(test_store_int64(f->s, "SELECT paused_until IS NULL FROM api_usage"), 1);
	u.requests = 10000;
	u.paused_until = 1710115200;
	assert_int_equal(store_auth_save_usage(f->s, "key-1", &u), 0);
	assert_int_equal(store_auth_get_usage(f->s, "key-1", &back), 0);
	assert_int_equal(back.requests, 10000);
	assert_int_equal(back.paused_until, 1710115200);
	assert_int_equal(test_store_int64(f->s, "SELECT count(*) FROM api_usage"), 1);
	assert_int_equal(store_auth_get_usage(f->s, "key-2", &back), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_connection, setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_tokens, setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_state, setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_usage, setup, store_fixture_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
