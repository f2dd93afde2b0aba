/* SPDX-License-Identifier: MIT */
/* store-config: every query on connections, exports and the audit log, against real SQLite
 * files, including the invariants callers rely on (soft removal frees names, no statement left
 * running, tokens gone from the file). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <cmocka.h>

#include "store-config.h"
#include "store-internal.h"
#include "store.h"
#include "test-fixture.h"
#include "test-helpers.h"

#define LIST_A "0b1c3f4a-8a51-11ee-9f4c-fa163e0b7c29"
#define LIST_B "9d7f2c10-8a51-11ee-9f4c-fa163e0b7c29"
#define NOW 1700000000

/* No statement of ours may be left mid-step: it would hold a read transaction open. */
static void assert_no_busy_statements(struct store *s)
{
	for (sqlite3_stmt *st = sqlite3_next_stmt(store_db(s), NULL); st;
	     st = sqlite3_next_stmt(store_db(s), st))
		if (sqlite3_stmt_busy(st))
			fail_msg("statement still running: %s", sqlite3_sql(st));
	assert_false(store_in_transaction(s));
}

static int64_t add_connection(struct store *s, const char *name)
{
	int64_t id = 0;

	assert_int_equal(store_config_connection_insert(s, name, "key-1", NULL, NULL, NOW, &id), 0);
	assert_true(id > 0);
	return id;
}

static void test_connection_insert_get_find(void **state)
{
	struct store_fixture *f = *state;
	struct store_connection c = {};
	int64_t id, id2;

	id = add_connection(f->s, "main");
	assert_int_equal(store_config_connection_get(f->s, id, &c), 0);
	assert_int_equal(c.connection_id, id);
	assert_string_equal(c.name, "main");
	assert_string_equal(c.client_id, "key-1");
	assert_string_equal(c.auth_flow, "device"); /* schema defaults */
	assert_string_equal(c.usable_by, "admins");
	assert_string_equal(c.auth_state, "unauthorized");
	assert_null(c.consent_by);
	assert_null(c.auth_error);
	assert_false(c.has_tokens);
	assert_int_equal(c.exports, 0);
	assert_int_equal(c.created_at, NOW);
	assert_int_equal(c.updated_at, NOW);
	store_connection_done(&c);

	assert_int_equal(store_config_connection_insert(f->s, "second", "key-2", "pkce",
							"admins_and_contributors", NOW, &id2), 0);
	assert_int_equal(store_config_connection_find(f->s, "second", &c), 0);
	assert_int_equal(c.connection_id, id2);
	assert_string_equal(c.auth_flow, "pkce");
	assert_string_equal(c.usable_by, "admins_and_contributors");
	store_connection_done(&c);

	assert_int_equal(store_config_connection_find(f->s, "nope", &c), -ENOENT);
	assert_int_equal(store_config_connection_get(f->s, 9999, &c), -ENOENT);
	/* A live name is unique. */
	assert_int_equal(store_config_connection_insert(f->s, "main", "k", NULL, NULL, NOW, &id2),
			 -EEXIST);
	assert_int_equal(test_store_int64(f->s, "SELECT count(*) FROM connections"), 2);
	assert_no_busy_statements(f->s);
}

static void test_connection_list_update(void **state)
{
	struct store_fixture *f = *state;
	struct store_connection *v = NULL, c = {};
	size_t n = 99;
	int64_t a, b;

	assert_int_equal(store_config_connection_list(f->s, &v, &n), 0);
	assert_int_equal(n, 0);
	store_connection_array_free(v, n);

	b = add_connection(f->s, "beta");
	a = add_connection(f->s, "alpha");
	assert_int_equal(store_config_connection_list(f->s, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "alpha"); /* by name */
	assert_string_equal(v[1].name, "beta");
	store_connection_array_free(v, n);

	assert_int_equal(store_config_connection_get(f->s, a, &c), 0);
	free(c.name);
	c.name = strdup("gamma");
	free(c.client_id);
	c.client_id = strdup("key-9");
	free(c.auth_flow);
	c.auth_flow = strdup("code");
	free(c.usable_by);
	c.usable_by = strdup("admins_and_contributors");
	assert_int_equal(store_config_connection_update(f->s, &c, NOW + 5), 0);
	store_connection_done(&c);
	assert_int_equal(store_config_connection_get(f->s, a, &c), 0);
	assert_string_equal(c.name, "gamma");
	assert_string_equal(c.client_id, "key-9");
	assert_string_equal(c.auth_flow, "code");
	assert_string_equal(c.usable_by, "admins_and_contributors");
	assert_int_equal(c.updated_at, NOW + 5);
	assert_int_equal(c.created_at, NOW);

	/* renaming onto a live name conflicts and changes nothing */
	free(c.name);
	c.name = strdup("beta");
	assert_int_equal(store_config_connection_update(f->s, &c, NOW + 6), -EEXIST);
	store_connection_done(&c);
	assert_int_equal(store_config_connection_get(f->s, a, &c), 0);
	assert_string_equal(c.name, "gamma");
	c.connection_id = 4242;
	assert_int_equal(store_config_connection_update(f->s, &c, NOW + 6), -ENOENT);
	store_connection_done(&c);
	(void)b;
	assert_no_busy_statements(f->s);
}

static void test_connection_consent(void **state)
{
	struct store_fixture *f = *state;
	struct store_connection c = {};
	int64_t id = add_connection(f->s, "main");

	assert_int_equal(store_config_connection_set_consent(f->s, id, "alice", 1001, NOW + 60), 0);
	assert_int_equal(store_config_connection_get(f->s, id, &c), 0);
	assert_string_equal(c.consent_by, "alice");
	assert_int_equal(c.consent_uid, 1001);
	assert_int_equal(c.consent_at, NOW + 60);
	assert_int_equal(c.updated_at, NOW + 60);
	store_connection_done(&c);

	assert_int_equal(store_config_connection_set_consent(f->s, id, NULL, 0, NOW + 70), 0);
	assert_int_equal(store_config_connection_get(f->s, id, &c), 0);
	assert_null(c.consent_by);
	assert_int_equal(test_store_int64(f->s, "SELECT consent_uid IS NULL AND consent_at IS NULL "
				   "FROM connections"), 1);
	store_connection_done(&c);
	assert_int_equal(store_config_connection_set_consent(f->s, 777, "x", 1, NOW), -ENOENT);
}

static void test_connection_tokens_and_removal(void **state)
{
	struct store_fixture *f = *state;
	struct store_connection c = {};
	bool deleted = true;
	int64_t id = add_connection(f->s, "main"), again, count = -1;
	char sql[256];

	/* Tokens written the way store-auth does, directly. */
	snprintf(sql, sizeof(sql), "INSERT INTO connection_tokens (connection_id, access_token, "
		 "refresh_token) VALUES (%lld, 'SECRET-ACCESS-TOKEN', 'SECRET-REFRESH-TOKEN')",
		 (long long)id);
	test_store_exec(f->s, sql);
	assert_int_equal(store_config_connection_get(f->s, id, &c), 0);
	assert_true(c.has_tokens);
	store_connection_done(&c);

	assert_int_equal(store_begin_write(f->s), 0);
	assert_int_equal(store_config_connection_delete_tokens(f->s, id, &deleted), 0);
	assert_true(deleted);
	assert_int_equal(store_config_connection_disable_exports(f->s, id, "gone", NOW, &count), 0);
	assert_int_equal(count, 0);
	assert_int_equal(store_config_connection_remove(f->s, id, NOW + 1), 0);
	assert_int_equal(store_commit(f->s), 0);
	assert_int_equal(store_checkpoint(f->s), 0);
	assert_int_equal(test_store_int64(f->s, "SELECT count(*) FROM connection_tokens"), 0);
	assert_int_equal(store_config_connection_delete_tokens(f->s, id, &deleted), 0);
	assert_false(deleted);

	/* Removed: invisible, twice-removal is not found, and the name is free again. */
	assert_int_equal(store_config_connection_get(f->s, id, &c), -ENOENT);
	assert_int_equal(store_config_connection_find(f->s, "main", &c), -ENOENT);
	assert_int_equal(store_config_connection_remove(f->s, id, NOW + 2), -ENOENT);
	assert_int_equal(test_store_int64(f->s, "SELECT removed_at FROM connections"), NOW + 1);
	again = add_connection(f->s, "main");
	assert_true(again != id);

	/* secure_delete plus the checkpoint: no copy of a token in the files. */
	{
		char path[PATH_MAX + 8];

		for (int k = 0; k < 2; k++) {
			FILE *fp;
			char *buf;
			long len;

			snprintf(path, sizeof(path), "%s%s", f->db, k ? "-wal" : "");
			fp = fopen(path, "rb");
			if (!fp)
				continue; /* no WAL file at all is fine too */
			fseek(fp, 0, SEEK_END);
			len = ftell(fp);
			fseek(fp, 0, SEEK_SET);
			buf = malloc((size_t)len + 1);
			assert_int_equal(fread(buf, 1, (size_t)len, fp), (size_t)len);
			fclose(fp);
			for (long i = 0; i + 12 <= len; i++)
				if (memcmp(buf + i, "SECRET-", 7) == 0)
					fail_msg("token bytes left in %s at %ld", path, i);
			free(buf);
		}
	}
	assert_no_busy_statements(f->s);
}

static int64_t add_segment(struct store *s, const char *name)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "INSERT INTO segments (name) VALUES ('%s')", name);
	test_store_exec(s, sql);
	return sqlite3_last_insert_rowid(store_db(s));
}

static void make_export(struct store_export *e, const char *name, int64_t conn,
			struct store_export_segment *segs, size_t nsegs,
			struct store_export_field *fields, size_t nfields)
{
	memset(e, 0, sizeof(*e));
	e->name = (char *)name;
	e->connection_id = conn;
	e->list_id = (char *)LIST_A;
	e->mode = (char *)"upsert";
	e->email_field = (char *)"email";
	e->first_name_field = (char *)"first";
	e->follows_refresh = true;
	e->created_by = (char *)"alice";
	e->segments = segs;
	e->n_segments = nsegs;
	e->fields = fields;
	e->n_fields = nfields;
}

static void test_export_insert_get_list(void **state)
{
	struct store_fixture *f = *state;
	int64_t conn = add_connection(f->s, "main");
	struct store_export_segment segs[] = { { add_segment(f->s, "vip") },
					       { add_segment(f->s, "all") } };
	struct store_export_field fields[] = { { (char *)"job_title", (char *)"title" },
					       { (char *)"cf:tier", (char *)"tier" } };
	struct store_export e, got = {}, *v = NULL;
	struct store_connection c = {};
	int64_t id = 0, id2 = 0;
	size_t n = 0;

	make_export(&e, "weekly", conn, segs, 2, fields, 2);
	e.cron = (char *)"0 3 * * 1";
	e.time_zone = (char *)"Europe/Rome";
	e.has_mirror_share = true;
	e.mirror_max_remove_share = 0.25;
	assert_int_equal(store_config_export_insert(f->s, &e, NOW, &id), 0);

	assert_int_equal(store_config_export_get(f->s, id, &got), 0);
	assert_string_equal(got.name, "weekly");
	assert_int_equal(got.connection_id, conn);
	assert_string_equal(got.connection_name, "main");
	assert_string_equal(got.connection_usable_by, "admins");
	assert_false(got.connection_removed);
	assert_string_equal(got.list_id, LIST_A);
	assert_string_equal(got.mode, "upsert");
	assert_string_equal(got.email_field, "email");
	assert_string_equal(got.first_name_field, "first");
	assert_null(got.last_name_field);
	assert_true(got.follows_refresh);
	assert_true(got.has_mirror_share);
	assert_true(got.mirror_max_remove_share > 0.2499 && got.mirror_max_remove_share < 0.2501);
	assert_true(got.enabled);
	assert_null(got.disabled_reason);
	assert_string_equal(got.created_by, "alice");
	assert_string_equal(got.cron, "0 3 * * 1");
	assert_string_equal(got.time_zone, "Europe/Rome");
	assert_int_equal(got.n_segments, 2);
	assert_string_equal(got.segments[0].name, "all"); /* by name */
	assert_string_equal(got.segments[1].name, "vip");
	assert_int_equal(got.n_fields, 2);
	assert_string_equal(got.fields[0].target, "cf:tier"); /* by target */
	assert_string_equal(got.fields[0].source_field, "tier");
	assert_string_equal(got.fields[1].target, "job_title");
	assert_int_equal(got.created_at, NOW);
	store_export_done(&got);
	assert_int_equal(test_store_int64(f->s, "SELECT last_due_at IS NULL FROM schedules"), 1);

	assert_int_equal(store_config_connection_get(f->s, conn, &c), 0);
	assert_int_equal(c.exports, 1);
	store_connection_done(&c);

	/* second export with no override and no mirror share */
	make_export(&e, "another", conn, segs, 1, NULL, 0);
	assert_int_equal(store_config_export_insert(f->s, &e, NOW, &id2), 0);
	assert_int_equal(store_config_export_find(f->s, "another", &got), 0);
	assert_int_equal(got.export_id, id2);
	assert_null(got.cron);
	assert_null(got.time_zone);
	assert_false(got.has_mirror_share);
	assert_int_equal(got.n_fields, 0);
	assert_int_equal(got.n_segments, 1);
	store_export_done(&got);

	assert_int_equal(store_config_export_insert(f->s, &e, NOW, &id2), -EEXIST);
	assert_int_equal(store_config_export_find(f->s, "missing", &got), -ENOENT);

	assert_int_equal(store_config_export_list(f->s, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(v[0].name, "another");
	assert_string_equal(v[1].name, "weekly");
	assert_int_equal(v[1].n_segments, 2);
	assert_int_equal(v[1].n_fields, 2);
	store_export_array_free(v, n);
	assert_no_busy_statements(f->s);
}

static void test_export_update(void **state)
{
	struct store_fixture *f = *state;
	int64_t conn = add_connection(f->s, "main"), conn2 = add_connection(f->s, "other");
	struct store_export_segment segs[] = { { add_segment(f->s, "a") },
					       { add_segment(f->s, "b") } };
	struct store_export_field fields[] = { { (char *)"city", (char *)"town" } };
	struct store_export e, got = {};
	int64_t id = 0;

	make_export(&e, "x", conn, segs, 2, fields, 1);
	e.cron = (char *)"0 1 * * *";
	assert_int_equal(store_config_export_insert(f->s, &e, NOW, &id), 0);

	/* The scheduler handled a fire: a changed cron moves it to now, an unchanged one not. */
	test_store_exec(f->s, "UPDATE schedules SET last_due_at = 1600000000");
	make_export(&e, "y", conn2, &segs[1], 1, NULL, 0);
	e.export_id = id;
	e.list_id = (char *)LIST_B;
	e.mode = (char *)"mirror";
	e.first_name_field = NULL;
	e.last_name_field = (char *)"last";
	e.follows_refresh = false;
	e.cron = (char *)"0 1 * * *";
	e.created_by = (char *)"mallory"; /* not rewritten */
	assert_int_equal(store_config_export_update(f->s, &e, NOW + 10), 0);
	assert_int_equal(test_store_int64(f->s, "SELECT last_due_at FROM schedules"), 1600000000);
	assert_int_equal(store_config_export_get(f->s, id, &got), 0);
	assert_string_equal(got.name, "y");
	assert_int_equal(got.connection_id, conn2);
	assert_string_equal(got.connection_name, "other");
	assert_string_equal(got.list_id, LIST_B);
	assert_string_equal(got.mode, "mirror");
	assert_null(got.first_name_field);
	assert_string_equal(got.last_name_field, "last");
	assert_false(got.follows_refresh);
	assert_string_equal(got.created_by, "alice");
	assert_int_equal(got.n_segments, 1);
	assert_string_equal(got.segments[0].name, "b");
	assert_int_equal(got.n_fields, 0);
	assert_int_equal(got.updated_at, NOW + 10);
	store_export_done(&got);

	e.cron = (char *)"*/5 * * * *";
	e.time_zone = (char *)"UTC";
	assert_int_equal(store_config_export_update(f->s, &e, NOW + 20), 0);
	assert_int_equal(test_store_int64(f->s, "SELECT last_due_at FROM schedules"), NOW + 20);
	assert_int_equal(test_store_int64(f->s, "SELECT count(*) FROM schedules"), 1);

	e.export_id = 9999;
	assert_int_equal(store_config_export_update(f->s, &e, NOW), -ENOENT);
	assert_no_busy_statements(f->s);
}

static void test_export_enable_remove_and_connection_cascade(void **state)
{
	struct store_fixture *f = *state;
	int64_t conn = add_connection(f->s, "main"), id = 0, id2 = 0, count = 0;
	struct store_export_segment segs[] = { { add_segment(f->s, "a") } };
	struct store_export e, got = {};
	struct store_connection c = {};

	make_export(&e, "x", conn, segs, 1, NULL, 0);
	assert_int_equal(store_config_export_insert(f->s, &e, NOW, &id), 0);
	make_export(&e, "z", conn, segs, 1, NULL, 0);
	assert_int_equal(store_config_export_insert(f->s, &e, NOW, &id2), 0);

	assert_int_equal(store_config_export_set_enabled(f->s, id, false, "holiday", NOW + 1), 0);
	assert_int_equal(store_config_export_get(f->s, id, &got), 0);
	assert_false(got.enabled);
	assert_string_equal(got.disabled_reason, "holiday");
	store_export_done(&got);
	assert_int_equal(store_config_export_set_enabled(f->s, id, true, "ignored", NOW + 2), 0);
	assert_int_equal(store_config_export_get(f->s, id, &got), 0);
	assert_true(got.enabled);
	assert_null(got.disabled_reason);
	store_export_done(&got);

	assert_int_equal(store_config_export_remove(f->s, id2, NOW + 3), 0);
	assert_int_equal(store_config_export_get(f->s, id2, &got), -ENOENT);
	assert_int_equal(store_config_export_remove(f->s, id2, NOW + 3), -ENOENT);
	assert_int_equal(store_config_export_set_enabled(f->s, id2, true, NULL, NOW), -ENOENT);
	make_export(&e, "z", conn, segs, 1, NULL, 0); /* the name is free again */
	assert_int_equal(store_config_export_insert(f->s, &e, NOW, &id2), 0);

	/* connection removal: every live export disabled with the reason, flagged removed */
	assert_int_equal(store_config_connection_disable_exports(f->s, conn, "connection gone",
								 NOW + 4, &count), 0);
	assert_int_equal(count, 2);
	assert_int_equal(store_config_connection_remove(f->s, conn, NOW + 4), 0);
	assert_int_equal(store_config_export_get(f->s, id, &got), 0);
	assert_false(got.enabled);
	assert_true(got.connection_removed);
	assert_string_equal(got.disabled_reason, "connection gone");
	store_export_done(&got);
	assert_int_equal(store_config_connection_get(f->s, conn, &c), -ENOENT);
	assert_no_busy_statements(f->s);
}

static void test_audit(void **state)
{
	struct store_fixture *f = *state;
	struct store_audit_entry e = {
		.at = NOW,
		.has_uid = true,
		.uid = 1001,
		.user_name = (char *)"alice",
		.action = (char *)"connection.add",
		.object_type = (char *)"connection",
		.object_id = (char *)"1",
		.after_json = (char *)"{\"name\":\"main\"}",
	}, *v = NULL;
	int64_t ids[5];
	size_t n = 0;

	for (int i = 0; i < 5; i++) {
		e.at = NOW + i;
		assert_int_equal(store_config_audit_add(f->s, &e, &ids[i]), 0);
	}
	e.has_uid = false;
	e.before_json = (char *)"{not json";
	assert_int_equal(store_config_audit_add(f->s, &e, &ids[0]), -EINVAL);
	assert_int_equal(test_store_int64(f->s, "SELECT count(*) FROM audit_log"), 5);

	assert_int_equal(store_config_audit_list(f->s, 0, 3, &v, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(v[0].audit_id, ids[4]); /* newest first */
	assert_int_equal(v[2].audit_id, ids[2]);
	assert_int_equal(v[0].at, NOW + 4);
	assert_true(v[0].has_uid);
	assert_int_equal(v[0].uid, 1001);
	assert_string_equal(v[0].user_name, "alice");
	assert_string_equal(v[0].action, "connection.add");
	assert_string_equal(v[0].object_type, "connection");
	assert_string_equal(v[0].object_id, "1");
	assert_null(v[0].before_json);
	assert_string_equal(v[0].after_json, "{\"name\":\"main\"}");
	store_audit_entry_array_free(v, n);

	assert_int_equal(store_config_audit_list(f->s, ids[2], 10, &v, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(v[0].audit_id, ids[1]);
	assert_int_equal(v[1].audit_id, ids[0]);
	store_audit_entry_array_free(v, n);
	assert_no_busy_statements(f->s);
}

static void test_now(void **state)
{
	(void)state;
	setenv("CCSYNC_FAKE_NOW", "1234567", 1);
	assert_int_equal(store_config_now(), 1234567);
	unsetenv("CCSYNC_FAKE_NOW");
	assert_true(store_config_now() > 1600000000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_connection_insert_get_find,
						store_fixture_setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_connection_list_update,
						store_fixture_setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_connection_consent,
						store_fixture_setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_connection_tokens_and_removal,
						store_fixture_setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_export_insert_get_list,
						store_fixture_setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_export_update,
						store_fixture_setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_export_enable_remove_and_connection_cascade,
						store_fixture_setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_audit,
						store_fixture_setup, store_fixture_teardown),
		cmocka_unit_test(test_now),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
