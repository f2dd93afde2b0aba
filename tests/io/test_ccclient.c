/* SPDX-License-Identifier: MIT */
/*
 * The Constant Contact client on a real loop, a real database and the fake Constant Contact over
 * HTTPS. Every endpoint, every limit (40,000 contacts / 4 MB split, 500 ids, rps, daily budget
 * persisted across a restart, token endpoint 1/s) and every fault of issue 3 (429 storm, 5xx,
 * dropped connections, timeouts, token expiry, revoked refresh token, failed and stuck
 * activities, deleted list), asserting the client's outcome and the fake's resulting state; the
 * three OAuth flows; cancellation; and that no token or secret reaches a log line or a message.
 * Every test ends with uv_loop_close() == 0.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <cmocka.h>

#include "ccapi.h"
#include "ccclient.h"
#include "ccfake.h"
#include "config.h"
#include "log.h"
#include "store-auth.h"
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
	char access[4096], refresh[4096];
	char list_id[64];
};

struct res {
	bool done;
	int calls;
	int error;
	long status;
	unsigned attempts;
	char message[1024];
	char key[96];
	int64_t paused_until;
	char activity_id[64];
	enum ccapi_activity_state state;
	size_t n_errors;
	char err0_email[256];
	char err0_raw[512];
	int64_t person_count;
	size_t n;
	char next[2048];
	char (*ids)[40];
	char (*emails)[80];
	int64_t membership_count;
	char name[256];
	char list_id[40];
	bool json;
};

/* Every result message seen, for the secret check. */
static char all_messages[65536];

static void on_res(const struct ccclient_result *r, void *ud)
{
	struct res *x = ud;

	x->calls++;
	x->done = true;
	x->error = r->error;
	x->status = r->http_status;
	x->attempts = r->attempts;
	x->paused_until = r->paused_until;
	x->json = r->json != NULL;
	snprintf(x->message, sizeof(x->message), "%s", r->message);
	snprintf(x->key, sizeof(x->key), "%s", r->error_key);
	if (strlen(all_messages) + strlen(r->message) + 2 < sizeof(all_messages)) {
		strcat(all_messages, r->message);
		strcat(all_messages, "\n");
	}
	if (r->activity) {
		snprintf(x->activity_id, sizeof(x->activity_id), "%s", r->activity->activity_id);
		x->state = r->activity->state;
		x->n_errors = r->activity->n_errors;
		x->person_count = r->activity->person_count;
		if (r->activity->n_errors) {
			snprintf(x->err0_email, sizeof(x->err0_email), "%s",
				 r->activity->errors[0].email ? r->activity->errors[0].email : "");
			snprintf(x->err0_raw, sizeof(x->err0_raw), "%s",
				 r->activity->errors[0].raw);
		}
	}
	if (r->list) {
		snprintf(x->list_id, sizeof(x->list_id), "%s", r->list->list_id);
		snprintf(x->name, sizeof(x->name), "%s", r->list->name);
		x->membership_count = r->list->membership_count;
	}
	if (r->lists) {
		x->n = r->lists->n;
		if (x->n)
			snprintf(x->list_id, sizeof(x->list_id), "%s", r->lists->lists[0].list_id);
	}
	if (r->custom_fields)
		x->n = r->custom_fields->n;
	if (r->activities) {
		x->n = r->activities->n;
		free(x->ids);
		x->ids = calloc(x->n + 1, sizeof(*x->ids));
		for (size_t i = 0; i < x->n; i++)
			snprintf(x->ids[i], sizeof(x->ids[i]), "%s",
				 r->activities->activities[i].activity_id);
	}
	if (r->contacts) {
		x->n = r->contacts->n;
		snprintf(x->next, sizeof(x->next), "%s",
			 r->contacts->next ? r->contacts->next : "");
		free(x->ids);
		free(x->emails);
		x->ids = calloc(x->n + 1, sizeof(*x->ids));
		x->emails = calloc(x->n + 1, sizeof(*x->emails));
		for (size_t i = 0; i < x->n; i++) {
			const struct ccapi_contact *ct = &r->contacts->contacts[i];

			snprintf(x->ids[i], sizeof(x->ids[i]), "%s", ct->contact_id);
			snprintf(x->emails[i], sizeof(x->emails[i]), "%s",
				 ct->email ? ct->email : "");
		}
	}
}

static void res_reset(struct res *x)
{
	free(x->ids);
	free(x->emails);
	memset(x, 0, sizeof(*x));
}

static void wait_res(struct fx *f, struct res *x)
{
	fake_run_until(&f->loop, &x->done);
	assert_int_equal(x->calls, 1);
}

static void wait_all(struct fx *f, struct res *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fake_run_until(&f->loop, &x[i].done);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(x[i].calls, 1);
}

_printf_(2, 3) static void exec(struct fx *f, const char *fmt, ...)
{
	char sql[2048], *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	if (sqlite3_exec(store_db(f->s), sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

static char *query_text(struct fx *f, const char *sql)
{
	sqlite3_stmt *st;
	char *v = NULL;

	assert_int_equal(sqlite3_prepare_v2(store_db(f->s), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		v = strdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return v;
}

static int64_t query_int(struct fx *f, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(store_db(f->s), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Mints a public grant at the fake and stores it for connection id. */
static void mint(struct fx *f, int64_t id, int expires_in, char *access, char *refresh)
{
	const char *at, *rt;
	char body[128];
	int64_t exp;
	json_t *t;

	if (expires_in)
		snprintf(body, sizeof(body), "{\"client_id\":\"test-client\",\"public\":true,"
			 "\"expires_in\":%d}", expires_in);
	else
		snprintf(body, sizeof(body), "{\"client_id\":\"test-client\",\"public\":true}");
	t = fake_ok(&fake, "POST", "/_fake/tokens", body);
	at = json_string_value(json_object_get(t, "access_token"));
	rt = json_string_value(json_object_get(t, "refresh_token"));
	exp = store_now() + json_integer_value(json_object_get(t, "expires_in"));
	assert_int_equal(store_auth_save_tokens(f->s, id, at, exp, rt), 0);
	if (access)
		snprintf(access, 4096, "%s", at);
	if (refresh)
		snprintf(refresh, 4096, "%s", rt);
	json_decref(t);
}

static void client_start(struct fx *f)
{
	char err[512];

	assert_int_equal(ccclient_new(&f->loop, f->s, &f->cfg, &f->opt, &f->c, err, sizeof(err)),
			 0);
}

static void client_stop(struct fx *f)
{
	ccclient_close(f->c, NULL, NULL);
	f->c = NULL;
	/* The loop stays usable: run it until the client's handles are closed. */
	(void)uv_run(&f->loop, UV_RUN_DEFAULT);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[512];
	json_t *l;

	json_decref(fake_ok(&fake, "POST", "/_fake/reset", "{}"));
	tmpdir_make(&f->dir);
	tmpdir_file(&f->dir, "ccsync.db", f->db, sizeof(f->db));
	assert_int_equal(store_open(f->db, STORE_OPEN_CREATE, 5000, &f->s, err, sizeof(err)), 0);
	exec(f, "INSERT INTO connections (connection_id, name, client_id, auth_flow) VALUES "
		"(1, 'main', 'test-client', 'device'), (2, 'dev', 'test-client', 'device'), "
		"(3, 'web', 'test-client', 'pkce'), (4, 'conf', 'test-client', 'code'), "
		"(5, 'second', 'test-client', 'device'), (6, 'third', 'test-client', 'device')");
	mint(f, 1, 0, f->access, f->refresh);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	config_init(&f->cfg);
	snprintf(f->cfg.api_base, sizeof(f->cfg.api_base), "%s", fake.api_base);
	snprintf(f->cfg.auth_base, sizeof(f->cfg.auth_base), "%s", fake.auth_base);
	snprintf(f->cfg.ca_file, sizeof(f->cfg.ca_file), "%s", fake.ca_file);
	f->cfg.poll_initial_ms = 50;
	f->cfg.poll_max_ms = 400;
	f->cfg.request_timeout_ms = 20000;
	f->opt.retry_base_ms = 20;
	f->opt.retry_max_ms = 300;
	f->opt.throttle_base_ms = 100;
	l = fake_ok(&fake, "POST", "/_fake/lists", "{\"name\":\"Customers\"}");
	snprintf(f->list_id, sizeof(f->list_id), "%s",
		 json_string_value(json_object_get(l, "list_id")));
	json_decref(l);
	client_start(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f->c)
		ccclient_close(f->c, NULL, NULL);
	assert_int_equal(fake_loop_finish(&f->loop), 0);
	store_free(f->s);
	tmpdir_remove(&f->dir);
	free(f);
	return 0;
}

static const struct ccclient_call main_call = { .connection_id = 1, .run_id = 7, .export_id = 3 };

static json_t *stats(void)
{
	return fake_ok(&fake, "GET", "/_fake/stats", NULL);
}

static long long fake_stat(const char *path)
{
	json_t *s = stats();
	long long v = fake_int(s, path);

	json_decref(s);
	return v;
}

static long long list_count(const char *list_id)
{
	char path[256];
	json_t *j;
	long long n;

	snprintf(path, sizeof(path), "/_fake/state?list_id=%s&format=emails", list_id);
	j = fake_ok(&fake, "GET", path, NULL);
	n = fake_int(j, "count");
	json_decref(j);
	return n;
}

/* Encodes contacts [from, to) with the pattern and sends every batch; returns the batches sent
 * and their activity ids. */
static size_t import_range(struct fx *f, struct ccapi_import *b, int from, int to,
			   const char *street, char ids[][40], size_t max_ids)
{
	struct ccapi_field extra[] = { { "home_street", street } };
	size_t n_extra = street ? 1 : 0;
	struct res r[16];
	size_t n = 0;
	char email[64], err[256], *body;
	size_t len;

	memset(r, 0, sizeof(r));
	for (int i = from; i <= to; i++) {
		int ret = 0;

		if (i < to) {
			snprintf(email, sizeof(email), "u%06d@example.com", i);
			ret = ccapi_import_add(b, email, "F", "L", extra, n_extra, err,
					       sizeof(err));
		}
		if (ret == -ENOSPC || (i == to && ccapi_import_count(b))) {
			assert_true(n < 16 && n < max_ids);
			assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
			assert_int_equal(ccclient_import(f->c, &main_call, body, len, on_res, &r[n],
							 err, sizeof(err)), 0);
			n++;
			if (i < to) {
				ret = ccapi_import_add(b, email, "F", "L", extra, n_extra, err,
						       sizeof(err));
				assert_int_equal(ret, 0);
			}
		} else {
			assert_int_equal(ret, 0);
		}
	}
	wait_all(f, r, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(r[i].error, 0);
		assert_int_equal(r[i].state, CCAPI_ACTIVITY_INITIALIZED);
		snprintf(ids[i], 40, "%s", r[i].activity_id);
	}
	return n;
}

static void wait_activity(struct fx *f, const char *id, uint32_t timeout_s, struct res *x)
{
	char err[256];

	res_reset(x);
	assert_int_equal(ccclient_activity_wait(f->c, &main_call, id, timeout_s, on_res, x, err,
						sizeof(err)), 0);
	wait_res(f, x);
}

/* ------------------------------------------------------------------ endpoints */

static void test_list_get_and_deleted(void **state)
{
	struct fx *f = *state;
	struct res x = { 0 };
	char err[512], path[256];

	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	assert_int_equal(x.calls, 0); /* never from inside the call */
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_string_equal(x.name, "Customers");
	assert_int_equal(x.membership_count, 0);
	/* An unknown id: CC's own 404 message. */
	res_reset(&x);
	assert_int_equal(ccclient_list_get(f->c, &main_call, "00000000-0000-4000-8000-000000000000",
					   on_res, &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -ENOENT);
	assert_int_equal(x.status, 404);
	assert_non_null(strstr(x.message, "HTTP 404"));
	/* A deleted list is invalid, even though CC may answer 200 with deleted_at. */
	snprintf(path, sizeof(path), "/_fake/lists/%s", f->list_id);
	json_decref(fake_ok(&fake, "DELETE", path, NULL));
	res_reset(&x);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -ENOENT);
	assert_non_null(strstr(x.message, "deleted"));
	/* Bad input: refused at once, nothing sent. */
	assert_int_equal(ccclient_list_get(f->c, &main_call, "nope", on_res, &x, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "UUID"));
	assert_int_equal(fake_stat("requests_by_kind/list_get"), 3);
	res_reset(&x);
}

static void test_lists_paging(void **state)
{
	struct fx *f = *state;
	struct res x = { 0 };
	char err[256], body[64];

	for (int i = 0; i < 505; i++) {
		snprintf(body, sizeof(body), "{\"name\":\"list %d\"}", i);
		json_decref(fake_ok(&fake, "POST", "/_fake/lists", body));
	}
	assert_int_equal(ccclient_lists(f->c, &main_call, on_res, &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.n, 506);
	assert_int_equal(fake_stat("requests_by_kind/lists"), 2);
	res_reset(&x);
}

static void test_custom_fields_paging(void **state)
{
	struct fx *f = *state;
	struct res x = { 0 };
	char err[256], body[64];

	json_decref(fake_ok(&fake, "POST", "/_fake/config", "{\"max_custom_fields\":150}"));
	for (int i = 0; i < 120; i++) {
		snprintf(body, sizeof(body), "{\"label\":\"Field %d\"}", i);
		json_decref(fake_ok(&fake, "POST", "/_fake/custom_fields", body));
	}
	assert_int_equal(ccclient_custom_fields(f->c, &main_call, on_res, &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.n, 120);
	assert_int_equal(fake_stat("requests_by_kind/custom_fields"), 2);
	res_reset(&x);
}

static void test_import_and_wait(void **state)
{
	struct fx *f = *state;
	const char *lists[] = { f->list_id };
	struct ccapi_field extra[] = { { "cf:tier", "gold" }, { "job_title", "Chef" } };
	struct ccapi_import *b = NULL;
	struct res x = { 0 };
	char err[256], *body, path[256], id[64];
	size_t len;
	json_t *st, *members;

	json_decref(fake_ok(&fake, "POST", "/_fake/custom_fields", "{\"label\":\"tier\"}"));
	assert_int_equal(ccapi_import_begin(lists, 1, 40000, 4000000, &b, err, sizeof(err)), 0);
	assert_int_equal(ccapi_import_add(b, "ann@example.com", "Ann", "L\xc3\xa9", extra, 2, err,
					  sizeof(err)), 0);
	assert_int_equal(ccapi_import_add(b, "bo@example.com", "Bo", NULL, NULL, 0, err,
					  sizeof(err)), 0);
	assert_int_equal(ccapi_import_add(b, "not-an-email", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
	ccapi_import_free(b);
	assert_int_equal(ccclient_import(f->c, &main_call, body, len, on_res, &x, err, sizeof(err)),
			 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.status, 201);
	assert_int_equal(x.state, CCAPI_ACTIVITY_INITIALIZED);
	assert_true(ccapi_id_valid(x.activity_id));
	snprintf(id, sizeof(id), "%s", x.activity_id);
	wait_activity(f, id, 0, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.state, CCAPI_ACTIVITY_COMPLETED);
	/* The per-contact problem maps back to its row. */
	assert_int_equal(x.n_errors, 1);
	assert_string_equal(x.err0_email, "not-an-email");
	assert_non_null(strstr(x.err0_raw, "invalid email address"));
	/* The same through a single GET /activities/{id}. */
	res_reset(&x);
	assert_int_equal(ccclient_activity_get(f->c, &main_call, id, on_res, &x, err, sizeof(err)),
			 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_string_equal(x.activity_id, id);
	assert_int_equal(x.state, CCAPI_ACTIVITY_COMPLETED);
	assert_int_equal(x.person_count, 2);
	assert_int_equal(x.n_errors, 1);
	assert_int_equal(ccclient_activity_get(f->c, &main_call, "x", on_res, &x, err, sizeof(err)),
			 -EINVAL);
	/* What CC now holds. */
	snprintf(path, sizeof(path), "/_fake/state?list_id=%s", f->list_id);
	st = fake_ok(&fake, "GET", path, NULL);
	members = json_object_get(st, "members");
	assert_int_equal(json_array_size(members), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *m = json_array_get(members, i);
		const char *e = json_string_value(json_object_get(m, "email"));

		if (streq(e, "ann@example.com")) {
			assert_string_equal(json_string_value(json_object_get(m, "last_name")),
					    "L\xc3\xa9");
			assert_string_equal(json_string_value(json_object_get(
				json_object_get(m, "custom_fields"), "tier")), "gold");
		} else {
			assert_string_equal(e, "bo@example.com");
		}
	}
	json_decref(st);
	assert_int_equal(fake_stat("schema_violations/count"), 0);
	res_reset(&x);
}

static void test_import_split_limits(void **state)
{
	struct fx *f = *state;
	const char *lists[] = { f->list_id };
	struct ccapi_import *b = NULL;
	char err[256], ids[16][40], street[256];
	size_t n1, n2;
	struct res x = { 0 };
	json_t *s;

	memset(street, 's', 255);
	street[255] = '\0';
	assert_int_equal(ccapi_import_begin(lists, 1, f->cfg.batch_max_contacts,
					    f->cfg.batch_max_bytes, &b, err, sizeof(err)), 0);
	/* Short contacts: the 40,000 count limit cuts first. */
	n1 = import_range(f, b, 0, 80001, NULL, ids, 16);
	assert_int_equal(n1, 3);
	/* Long contacts: the 4,000,000-byte limit cuts first. */
	n2 = import_range(f, b, 100000, 130000, street, ids + n1, 16 - n1);
	assert_true(n2 >= 3);
	ccapi_import_free(b);
	for (size_t i = 0; i < n1 + n2; i++) {
		wait_activity(f, ids[i], 0, &x);
		assert_int_equal(x.error, 0);
	}
	s = stats();
	assert_int_equal(fake_int(s, "truncations/count"), 0);
	assert_true(fake_int(s, "max_import_body_bytes") < 4000000);
	assert_true(fake_int(s, "max_import_body_bytes") > 3900000);
	assert_int_equal(fake_int(s, "max_import_contacts"), 40000);
	assert_int_equal(fake_int(s, "imports/contacts_received"), 80001 + 30000);
	assert_int_equal(fake_int(s, "schema_violations/count"), 0);
	json_decref(s);
	assert_int_equal(list_count(f->list_id), 80001 + 30000);
	res_reset(&x);
}

static void test_contacts_and_removal(void **state)
{
	struct fx *f = *state;
	char body[512], err[256], (*all)[40] = calloc(700, sizeof(*all));
	const char *ptrs[501];
	struct res x = { 0 }, rm[2] = { { 0 } };
	size_t n = 0;

	snprintf(body, sizeof(body), "{\"generate\":{\"count\":600,"
		 "\"pattern\":\"m{n}@example.com\",\"list_ids\":[\"%s\"]}}", f->list_id);
	json_decref(fake_ok(&fake, "POST", "/_fake/contacts", body));
	assert_int_equal(list_count(f->list_id), 600);
	/* Page through the list's members: 500 + 100. */
	assert_int_equal(ccclient_contacts_by_list(f->c, &main_call, f->list_id, NULL, on_res, &x,
						   err, sizeof(err)), 0);
	for (;;) {
		char next[2048];

		wait_res(f, &x);
		assert_int_equal(x.error, 0);
		for (size_t i = 0; i < x.n; i++) {
			assert_true(ccapi_id_valid(x.ids[i]));
			assert_non_null(strstr(x.emails[i], "@example.com"));
			memcpy(all[n++], x.ids[i], 40);
		}
		if (!x.next[0])
			break;
		snprintf(next, sizeof(next), "%s", x.next);
		res_reset(&x);
		assert_int_equal(ccclient_contacts_by_list(f->c, &main_call, f->list_id, next,
							   on_res, &x, err, sizeof(err)), 0);
	}
	assert_int_equal(n, 600);
	assert_int_equal(fake_stat("requests_by_kind/contacts"), 2);
	/* At most 500 ids per removal. */
	for (size_t i = 0; i < 501; i++)
		ptrs[i] = all[i];
	assert_int_equal(ccclient_remove_from_list(f->c, &main_call, ptrs, 501, f->list_id, on_res,
						   &rm[0], err, sizeof(err)), -EINVAL);
	assert_int_equal(ccclient_remove_from_list(f->c, &main_call, ptrs, 500, f->list_id, on_res,
						   &rm[0], err, sizeof(err)), 0);
	for (size_t i = 0; i < 100; i++)
		ptrs[i] = all[500 + i];
	assert_int_equal(ccclient_remove_from_list(f->c, &main_call, ptrs, 100, f->list_id, on_res,
						   &rm[1], err, sizeof(err)), 0);
	wait_all(f, rm, 2);
	for (int i = 0; i < 2; i++) {
		char id[64];

		assert_int_equal(rm[i].error, 0);
		snprintf(id, sizeof(id), "%s", rm[i].activity_id);
		wait_activity(f, id, 0, &x);
		assert_int_equal(x.error, 0);
	}
	assert_int_equal(list_count(f->list_id), 0);
	assert_int_equal(fake_stat("schema_violations/count"), 0);
	/* Lookup by email (the contacts still exist, only their membership went). */
	res_reset(&x);
	assert_int_equal(ccclient_contact_by_email(f->c, &main_call, "M7@Example.com", on_res, &x,
						   err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.n, 1);
	assert_string_equal(x.emails[0], "m7@example.com");
	res_reset(&x);
	assert_int_equal(ccclient_contact_by_email(f->c, &main_call, "nobody@example.com", on_res,
						   &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.n, 0);
	res_reset(&x);
	free(all);
}

/* The staging list's requests: create (409 when the name exists), find by exact name, and
 * removals with a list as the source (from another list, and of a list from itself). */
static void test_staging_list_requests(void **state)
{
	static const char name[] = "ccsync staging \u2013 \"Q\" \u00e9xport (1-abcdef01)";
	struct fx *f = *state;
	struct res x = { 0 };
	char err[256], staging[40], body[512], path[128], id[64];
	json_t *a, *src;

	assert_int_equal(ccclient_list_create(f->c, &main_call, name, "Do not use", on_res, &x,
					      err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.status, 201);
	assert_string_equal(x.name, name);
	assert_true(ccapi_id_valid(x.list_id));
	snprintf(staging, sizeof(staging), "%s", x.list_id);
	res_reset(&x);
	assert_int_equal(ccclient_list_create(f->c, &main_call, name, NULL, on_res, &x, err,
					      sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -EEXIST);
	assert_int_equal(x.status, 409);
	res_reset(&x);
	assert_int_equal(ccclient_list_find(f->c, &main_call, name, on_res, &x, err, sizeof(err)),
			 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.n, 1);
	assert_string_equal(x.list_id, staging);
	res_reset(&x);
	assert_int_equal(ccclient_list_find(f->c, &main_call, "ccsync staging", on_res, &x, err,
					    sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.n, 0); /* exact names only */
	res_reset(&x);
	assert_int_equal(ccclient_list_create(f->c, &main_call, "", NULL, on_res, &x, err,
					      sizeof(err)), -EINVAL);

	/* 30 contacts on both lists, 5 on the exported list only. */
	snprintf(body, sizeof(body), "{\"generate\":{\"count\":30,\"pattern\":\"s{n}@example.com\","
		 "\"list_ids\":[\"%s\",\"%s\"]}}", staging, f->list_id);
	json_decref(fake_ok(&fake, "POST", "/_fake/contacts", body));
	snprintf(body, sizeof(body), "{\"generate\":{\"count\":5,\"pattern\":\"k{n}@example.com\","
		 "\"list_ids\":[\"%s\"]}}", f->list_id);
	json_decref(fake_ok(&fake, "POST", "/_fake/contacts", body));
	assert_int_equal(ccclient_remove_list_members(f->c, &main_call, staging, f->list_id, on_res,
						      &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	snprintf(id, sizeof(id), "%s", x.activity_id);
	wait_activity(f, id, 0, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(list_count(f->list_id), 5);
	assert_int_equal(list_count(staging), 30);
	snprintf(path, sizeof(path), "/_fake/activities/%s", id);
	a = fake_ok(&fake, "GET", path, NULL);
	src = json_object_get(json_object_get(json_object_get(a, "_fake"), "source"), "list_ids");
	assert_non_null(src);
	assert_int_equal(json_array_size(src), 1);
	assert_string_equal(json_string_value(json_array_get(src, 0)), staging);
	json_decref(a);
	/* Empty the staging list: source = target. */
	res_reset(&x);
	assert_int_equal(ccclient_remove_list_members(f->c, &main_call, staging, staging, on_res,
						      &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	snprintf(id, sizeof(id), "%s", x.activity_id);
	wait_activity(f, id, 0, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(list_count(staging), 0);
	assert_int_equal(list_count(f->list_id), 5);
	assert_int_equal(ccclient_remove_list_members(f->c, &main_call, "nope", staging, on_res, &x,
						      err, sizeof(err)), -EINVAL);
	assert_int_equal(fake_stat("schema_violations/count"), 0);
	assert_int_equal(fake_stat("problems_count"), 0);
	assert_int_equal(fake_stat("requests_by_kind/list_create"), 2);
	assert_int_equal(fake_stat("requests_by_kind/remove"), 2);
	res_reset(&x);
}

static void test_batched_activity_polling(void **state)
{
	struct fx *f = *state;
	const char *lists[] = { f->list_id };
	struct ccapi_import *b = NULL;
	char err[256], ids[3][40];
	struct res w[3] = { { 0 } }, x = { 0 };

	/* Activities that stay in progress until released, so every poll round sees all three. */
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"activity_stuck\":{}}"));
	assert_int_equal(ccapi_import_begin(lists, 1, 1, 4000000, &b, err, sizeof(err)), 0);
	assert_int_equal(import_range(f, b, 0, 3, NULL, ids, 3), 3);
	ccapi_import_free(b);
	/* The list endpoint shows them, newest first. */
	assert_int_equal(ccclient_activities(f->c, &main_call, NULL, on_res, &x, err, sizeof(err)),
			 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.n, 3);
	assert_string_equal(x.ids[0], ids[2]);
	json_decref(fake_ok(&fake, "POST", "/_fake/stats/reset", "{}"));
	for (int i = 0; i < 3; i++)
		assert_int_equal(ccclient_activity_wait(f->c, &main_call, ids[i], 0, on_res, &w[i],
							err, sizeof(err)), 0);
	/* Three waits, polled together: one GET /activities per round, never one per activity. */
	while (fake_stat("requests_by_kind/activity_list") < 3)
		(void)uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(fake_stat("requests_by_kind/activity_get"), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(w[i].calls, 0);
	json_decref(fake_ok(&fake, "DELETE", "/_fake/faults", NULL));
	wait_all(f, w, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(w[i].error, 0);
		assert_int_equal(w[i].state, CCAPI_ACTIVITY_COMPLETED);
		assert_string_equal(w[i].activity_id, ids[i]);
	}
	assert_int_equal(list_count(f->list_id), 3);
	res_reset(&x);
	for (int i = 0; i < 3; i++)
		res_reset(&w[i]);
}

/* ------------------------------------------------------------------ limits */

static void test_rate_limit(void **state)
{
	struct fx *f = *state;
	struct res x[12];
	char err[256];

	/* A fake that throttles any burst above 2: only evenly spaced requests pass. */
	json_decref(fake_ok(&fake, "POST", "/_fake/config", "{\"rps\":4,\"burst\":2}"));
	memset(x, 0, sizeof(x));
	for (int i = 0; i < 12; i++)
		assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x[i], err,
						   sizeof(err)), 0);
	wait_all(f, x, 12);
	for (int i = 0; i < 12; i++) {
		assert_int_equal(x[i].error, 0);
		assert_int_equal(x[i].attempts, 1);
	}
	assert_int_equal(fake_stat("http_429_total"), 0);
	assert_int_equal(fake_stat("requests_by_kind/list_get"), 12);
}

static void test_daily_budget_persisted(void **state)
{
	struct fx *f = *state;
	struct ccclient_usage u;
	struct res x = { 0 };
	char err[512], *day;

	f->cfg.daily_request_budget = 5;
	client_stop(f);
	client_start(f);
	for (int i = 0; i < 3; i++) {
		res_reset(&x);
		assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
						   sizeof(err)), 0);
		wait_res(f, &x);
		assert_int_equal(x.error, 0);
	}
	assert_int_equal(query_int(f, "SELECT requests FROM api_usage WHERE client_id = "
				      "'test-client'"), 3);
	/* A restart remembers what was spent today. */
	client_stop(f);
	client_start(f);
	assert_int_equal(ccclient_usage(f->c, "test-client", &u), 0);
	assert_int_equal(u.used_today, 3);
	assert_int_equal(u.left, 2);
	for (int i = 0; i < 3; i++) {
		res_reset(&x);
		assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
						   sizeof(err)), 0);
		wait_res(f, &x);
		assert_int_equal(x.error, i < 2 ? 0 : -EDQUOT);
	}
	assert_int_equal(x.paused_until % 86400, 0);
	assert_true(x.paused_until > store_now());
	assert_non_null(strstr(x.message, "budget"));
	/* Now refused at submit time; the fake saw exactly the budget. */
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), -EDQUOT);
	assert_non_null(strstr(err, "resume at"));
	assert_int_equal(fake_stat("requests_by_kind/list_get"), 5);
	assert_int_equal(ccclient_usage_for_connection(f->c, 1, &u), 0);
	assert_int_equal(u.used_today, 5);
	assert_int_equal(u.left, 0);
	assert_int_equal(u.paused_until, x.paused_until);
	assert_int_equal(query_int(f, "SELECT paused_until FROM api_usage"), x.paused_until);
	day = query_text(f, "SELECT day FROM api_usage");
	assert_non_null(day);
	assert_int_equal(strlen(day), 10);
	free(day);
	/* Persisted pause survives a restart too. */
	client_stop(f);
	client_start(f);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), -EDQUOT);
	res_reset(&x);
}

static void test_quota_exceeded_from_cc(void **state)
{
	struct fx *f = *state;
	struct ccclient_call waiting = main_call;
	struct res x = { 0 }, w = { 0 };
	long long before;
	char err[512];

	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"quota_exhausted\":{}}"));
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -EDQUOT);
	assert_string_equal(x.key, "quota_exceeded");
	assert_true(x.paused_until > store_now());
	assert_int_equal(query_int(f, "SELECT paused_until FROM api_usage"), x.paused_until);
	before = fake_stat("requests_total");
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), -EDQUOT);
	/* A request allowed to wait for the reset stays queued; cancelling it ends it. */
	waiting.flags = CCCLIENT_WAIT_QUOTA;
	waiting.owner = &w;
	assert_int_equal(ccclient_list_get(f->c, &waiting, f->list_id, on_res, &w, err,
					   sizeof(err)), 0);
	for (int i = 0; i < 20; i++)
		(void)uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(w.calls, 0);
	ccclient_cancel_owner(f->c, &w);
	assert_int_equal(w.calls, 1);
	assert_int_equal(w.error, -ECANCELED);
	assert_int_equal(fake_stat("requests_total"), before);
	res_reset(&x);
	res_reset(&w);
}

/* ------------------------------------------------------------------ faults */

static void test_throttle_storm(void **state)
{
	struct fx *f = *state;
	struct res x = { 0 };
	char err[256];

	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"throttle_storm\":{\"count\":3}}"));
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(x.attempts, 4);
	assert_int_equal(fake_stat("injected/throttle"), 3);
	/* A storm longer than max_retries ends in -EBUSY with CC's words. */
	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"throttle_storm\":{\"count\":100}}"));
	f->cfg.max_retries = 2;
	assert_int_equal(ccclient_reload(f->c, &f->cfg, err, sizeof(err)), 0);
	res_reset(&x);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -EBUSY);
	assert_int_equal(x.attempts, 3);
	assert_non_null(strstr(x.message, "Too Many Requests"));
	res_reset(&x);
}

static void test_server_errors(void **state)
{
	struct fx *f = *state;
	struct res x[20];
	char err[256];

	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"error_rate\":{\"rate\":0.3,\"seed\":7}}"));
	memset(x, 0, sizeof(x));
	for (int i = 0; i < 20; i++)
		assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x[i], err,
						   sizeof(err)), 0);
	wait_all(f, x, 20);
	for (int i = 0; i < 20; i++)
		assert_int_equal(x[i].error, 0);
	assert_true(fake_stat("injected_5xx") > 0);
	/* Always failing: bounded retries, then CC's status in the message. */
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"error_rate\":{\"rate\":1.0}}"));
	res_reset(&x[0]);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x[0], err,
					   sizeof(err)), 0);
	wait_res(f, &x[0]);
	assert_int_equal(x[0].error, -EIO);
	assert_int_equal(x[0].attempts, f->cfg.max_retries + 1);
	assert_non_null(strstr(x[0].message, "HTTP 50"));
	assert_non_null(strstr(x[0].message, "gave up"));
}

static void test_dropped_connections(void **state)
{
	struct fx *f = *state;
	const char *lists[] = { f->list_id };
	struct ccapi_import *b = NULL;
	char err[256], ids[2][40];
	struct res x = { 0 };

	/* The response to the import is lost after CC accepted it: the retry imports again,
	 * which converges (upsert by email). */
	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"drop_connections\":{\"count\":1,\"when\":\"after\","
			    "\"match\":{\"method\":\"POST\"}}}"));
	assert_int_equal(ccapi_import_begin(lists, 1, 40000, 4000000, &b, err, sizeof(err)), 0);
	assert_int_equal(import_range(f, b, 0, 50, NULL, ids, 2), 1);
	ccapi_import_free(b);
	wait_activity(f, ids[0], 0, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(fake_stat("injected/dropped"), 1);
	assert_int_equal(fake_stat("requests_by_kind/import"), 2);
	assert_int_equal(list_count(f->list_id), 50);
	/* Dropped before CC saw it. */
	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"drop_connections\":{\"count\":2}}"));
	res_reset(&x);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	/* curl itself may retry once on a reused connection that died: count the drops. */
	assert_true(x.attempts >= 2);
	assert_int_equal(fake_stat("injected/dropped"), 3);
	res_reset(&x);
}

static void test_timeouts(void **state)
{
	struct fx *f = *state;
	struct res x = { 0 };
	char err[256];

	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"latency_ms\":{\"ms\":1500}}"));
	f->cfg.request_timeout_ms = 300;
	f->cfg.max_retries = 1;
	assert_int_equal(ccclient_reload(f->c, &f->cfg, err, sizeof(err)), 0);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -ETIMEDOUT);
	assert_int_equal(x.attempts, 2);
	assert_non_null(strstr(x.message, "no response"));
	/* Slow but within the limit: fine. */
	f->cfg.request_timeout_ms = 10000;
	assert_int_equal(ccclient_reload(f->c, &f->cfg, err, sizeof(err)), 0);
	res_reset(&x);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	res_reset(&x);
}

static void test_token_expired_midway(void **state)
{
	struct fx *f = *state;
	struct res x[5];
	char err[256], *rt, *at;

	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"expire_tokens\":{}}"));
	memset(x, 0, sizeof(x));
	for (int i = 0; i < 5; i++)
		assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x[i], err,
						   sizeof(err)), 0);
	wait_all(f, x, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(x[i].error, 0);
	/* One refresh for all of them (single flight), after the first 401. */
	assert_int_equal(fake_stat("tokens/refreshed"), 1);
	assert_true(fake_stat("http_401") >= 1);
	/* The rotated refresh token is what the database holds now. */
	rt = query_text(f, "SELECT refresh_token FROM connection_tokens WHERE connection_id = 1");
	at = query_text(f, "SELECT access_token FROM connection_tokens WHERE connection_id = 1");
	assert_string_not_equal(rt, f->refresh);
	assert_string_not_equal(at, f->access);
	assert_int_equal(query_int(f, "SELECT count(*) FROM connections WHERE auth_state = "
				      "'authorized' AND connection_id = 1"), 1);
	free(rt);
	free(at);
	for (int i = 0; i < 5; i++)
		res_reset(&x[i]);
}

static void test_refresh_before_expiry(void **state)
{
	struct fx *f = *state;
	struct res x = { 0 };
	char err[256];

	/* Expiring within the margin: refreshed first, so CC never sees the old token fail. */
	mint(f, 1, 120, NULL, NULL);
	client_stop(f);
	client_start(f);
	json_decref(fake_ok(&fake, "POST", "/_fake/stats/reset", "{}"));
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(fake_stat("tokens/refreshed"), 1);
	assert_int_equal(fake_stat("http_401"), 0);
	assert_true(query_int(f, "SELECT access_expires_at FROM connection_tokens WHERE "
				 "connection_id = 1") > store_now() + 3600);
	res_reset(&x);
}

static void test_refresh_revoked(void **state)
{
	struct fx *f = *state;
	struct res x[3];
	char err[512], *msg;

	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"revoke_refresh\":{},\"expire_tokens\":{}}"));
	memset(x, 0, sizeof(x));
	for (int i = 0; i < 3; i++)
		assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x[i], err,
						   sizeof(err)), 0);
	wait_all(f, x, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(x[i].error, -EKEYREVOKED);
		assert_non_null(strstr(x[i].message, "authorize"));
	}
	assert_int_equal(query_int(f, "SELECT count(*) FROM connections WHERE connection_id = 1 "
				      "AND auth_state = 'needs_reauth'"), 1);
	msg = query_text(f, "SELECT auth_error FROM connections WHERE connection_id = 1");
	assert_non_null(strstr(msg, "invalid_grant"));
	assert_non_null(strstr(msg, "ccsyncctl connection authorize main"));
	free(msg);
	/* Never retried in a loop: further requests are refused without touching CC. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x[0], err,
						   sizeof(err)), -EKEYREVOKED);
	for (int i = 0; i < 10; i++)
		(void)uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_int_equal(fake_stat("tokens/grant:refresh_token"), 1);
	/* A restart reads the state from the database. */
	client_stop(f);
	client_start(f);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x[0], err,
					   sizeof(err)), -EKEYREVOKED);
	assert_int_equal(fake_stat("tokens/grant:refresh_token"), 1);
	for (int i = 0; i < 3; i++)
		res_reset(&x[i]);
}

static void test_token_endpoint_rate(void **state)
{
	struct fx *f = *state;
	struct ccclient_call calls[3] = { main_call, main_call, main_call };
	struct res x[3];
	char err[256];

	mint(f, 5, 0, NULL, NULL);
	mint(f, 6, 0, NULL, NULL);
	calls[1].connection_id = 5;
	calls[2].connection_id = 6;
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"expire_tokens\":{}}"));
	memset(x, 0, sizeof(x));
	for (int i = 0; i < 3; i++)
		assert_int_equal(ccclient_list_get(f->c, &calls[i], f->list_id, on_res, &x[i], err,
						   sizeof(err)), 0);
	wait_all(f, x, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(x[i].error, 0);
	/* Three refreshes for one API key, none refused by the token endpoint's 1/s limit. */
	assert_int_equal(fake_stat("tokens/refreshed"), 3);
	assert_int_equal(fake_stat("http_429/token_endpoint"), 0);
}

static void test_activity_failed_and_stuck(void **state)
{
	struct fx *f = *state;
	const char *lists[] = { f->list_id };
	struct ccapi_import *b = NULL;
	char err[256], ids[2][40];
	struct res x = { 0 };

	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"activity_outcome\":{\"state\":\"failed\",\"count\":1}}"));
	assert_int_equal(ccapi_import_begin(lists, 1, 40000, 4000000, &b, err, sizeof(err)), 0);
	assert_int_equal(import_range(f, b, 0, 5, NULL, ids, 2), 1);
	wait_activity(f, ids[0], 0, &x);
	assert_int_equal(x.error, -EREMOTEIO);
	assert_int_equal(x.state, CCAPI_ACTIVITY_FAILED);
	assert_non_null(strstr(x.message, "failed"));
	assert_true(x.n_errors >= 1);
	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"activity_outcome\":{\"state\":\"timed_out\",\"count\":1}}"));
	assert_int_equal(import_range(f, b, 5, 10, NULL, ids, 2), 1);
	wait_activity(f, ids[0], 0, &x);
	assert_int_equal(x.error, -EREMOTEIO);
	assert_int_equal(x.state, CCAPI_ACTIVITY_TIMED_OUT);
	/* Never finishing: the wait gives up at its timeout with the last state seen. */
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"activity_stuck\":{}}"));
	assert_int_equal(import_range(f, b, 10, 15, NULL, ids, 2), 1);
	wait_activity(f, ids[0], 1, &x);
	assert_int_equal(x.error, -ETIME);
	assert_non_null(strstr(x.message, ids[0]));
	ccapi_import_free(b);
	res_reset(&x);
}

static void test_import_to_deleted_list(void **state)
{
	struct fx *f = *state;
	const char *lists[] = { f->list_id };
	struct ccapi_import *b = NULL;
	struct res x = { 0 };
	char err[256], path[256], *body;
	size_t len;

	snprintf(path, sizeof(path), "/_fake/lists/%s", f->list_id);
	json_decref(fake_ok(&fake, "DELETE", path, NULL));
	assert_int_equal(ccapi_import_begin(lists, 1, 40000, 4000000, &b, err, sizeof(err)), 0);
	assert_int_equal(ccapi_import_add(b, "a@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
	ccapi_import_free(b);
	assert_int_equal(ccclient_import(f->c, &main_call, body, len, on_res, &x, err, sizeof(err)),
			 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -ENOENT);
	assert_int_equal(x.attempts, 1); /* a 4xx is not retried */
	assert_non_null(strstr(x.message, f->list_id));
	assert_int_equal(list_count(f->list_id), 0);
	res_reset(&x);
}

static void test_wrong_ca(void **state)
{
	struct fx *f = *state;
	struct res x = { 0 };
	char err[256];

	snprintf(f->cfg.ca_file, sizeof(f->cfg.ca_file), "/etc/ssl/certs/ca-certificates.crt");
	assert_int_equal(ccclient_reload(f->c, &f->cfg, err, sizeof(err)), 0);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -EPROTO);
	assert_int_equal(x.attempts, 1);
	assert_non_null(strstr(x.message, "TLS"));
	assert_non_null(strstr(x.message, "certificate"));
	assert_non_null(strstr(x.message, "ca_file"));
	res_reset(&x);
}

/* ------------------------------------------------------------------ cancellation */

static void test_cancel_owner_and_forget(void **state)
{
	struct fx *f = *state;
	struct ccclient_call a = main_call, b = main_call, other = main_call;
	struct res ra[6], rb[2], ro[2];
	char err[256];
	int owner_a, owner_b;

	mint(f, 5, 0, NULL, NULL);
	a.owner = &owner_a;
	b.owner = &owner_b;
	other.connection_id = 5;
	other.owner = &owner_b;
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"latency_ms\":{\"ms\":300}}"));
	memset(ra, 0, sizeof(ra));
	memset(rb, 0, sizeof(rb));
	memset(ro, 0, sizeof(ro));
	for (int i = 0; i < 5; i++)
		assert_int_equal(ccclient_list_get(f->c, &a, f->list_id, on_res, &ra[i], err,
						   sizeof(err)), 0);
	assert_int_equal(ccclient_activity_wait(f->c, &a, "00000000-0000-4000-8000-000000000001",
						0, on_res, &ra[5], err, sizeof(err)), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(ccclient_list_get(f->c, &b, f->list_id, on_res, &rb[i], err,
						   sizeof(err)), 0);
	/* Let some get onto the wire, others stay queued behind the bucket. */
	for (int i = 0; i < 30; i++)
		(void)uv_run(&f->loop, UV_RUN_NOWAIT);
	ccclient_cancel_owner(f->c, &owner_a);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(ra[i].calls, 1);
		assert_int_equal(ra[i].error, -ECANCELED);
	}
	wait_all(f, rb, 2);
	for (int i = 0; i < 2; i++)
		assert_int_equal(rb[i].error, 0);
	for (int i = 0; i < 6; i++)
		assert_int_equal(ra[i].calls, 1); /* exactly once */
	/* Forgetting a connection cancels its requests and nobody else's. */
	rb[0] = (struct res){ 0 };
	assert_int_equal(ccclient_list_get(f->c, &b, f->list_id, on_res, &rb[0], err, sizeof(err)),
			 0);
	assert_int_equal(ccclient_list_get(f->c, &other, f->list_id, on_res, &ro[0], err,
					   sizeof(err)), 0);
	ccclient_forget_connection(f->c, 1);
	assert_int_equal(rb[0].calls, 1);
	assert_int_equal(rb[0].error, -ECANCELED);
	wait_res(f, &ro[0]);
	assert_int_equal(ro[0].error, 0);
	/* Closing with work queued: every callback exactly once, then the loop closes clean. */
	for (int i = 0; i < 3; i++) {
		ra[i] = (struct res){ 0 };
		assert_int_equal(ccclient_list_get(f->c, &a, f->list_id, on_res, &ra[i], err,
						   sizeof(err)), 0);
	}
	ccclient_close(f->c, NULL, NULL);
	f->c = NULL;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ra[i].calls, 1);
		assert_int_equal(ra[i].error, -ECANCELED);
	}
}

static void test_unauthorized_connection(void **state)
{
	struct fx *f = *state;
	struct ccclient_call c2 = { .connection_id = 2 }, c9 = { .connection_id = 99 };
	struct res x = { 0 };
	char err[512];

	assert_int_equal(ccclient_list_get(f->c, &c2, f->list_id, on_res, &x, err, sizeof(err)),
			 -ENOKEY);
	assert_non_null(strstr(err, "ccsyncctl connection authorize dev"));
	assert_int_equal(ccclient_list_get(f->c, &c9, f->list_id, on_res, &x, err, sizeof(err)),
			 -ENOENT);
	assert_int_equal(x.calls, 0);
	assert_int_equal(fake_stat("requests_total"), 0);
}

/* ------------------------------------------------------------------ authorization flows */

/* Userdata of a device flow: the result first, so on_res can take the same pointer. */
struct dflow {
	struct res x;
	const char *action;
	char user_code[64];
	int codes;
};

static void on_code(const struct ccclient_device_code *code, void *ud)
{
	struct dflow *d = ud;
	char body[256];

	d->codes++;
	snprintf(d->user_code, sizeof(d->user_code), "%s", code->user_code);
	assert_non_null(strstr(code->verification_uri, "/activate"));
	assert_true(code->expires_at > store_now());
	if (d->action) {
		snprintf(body, sizeof(body), "{\"user_code\":\"%s\",\"action\":\"%s\"}",
			 code->user_code, d->action);
		json_decref(fake_ok(&fake, "POST", "/_fake/device/approve", body));
	}
}

static void device_flow(struct fx *f, const char *action, int *ret_error, int *ret_codes)
{
	struct ccclient_call c2 = { .connection_id = 2 };
	struct dflow d = { .action = action };
	char err[256];

	assert_int_equal(ccclient_device_authorize(f->c, &c2, on_code, on_res, &d, err,
						   sizeof(err)), 0);
	assert_int_equal(ccclient_device_authorize(f->c, &c2, on_code, on_res, &d, err,
						   sizeof(err)), -EBUSY);
	wait_res(f, &d.x);
	*ret_error = d.x.error;
	*ret_codes = d.codes;
	res_reset(&d.x);
}

static void test_device_flow(void **state)
{
	struct fx *f = *state;
	struct ccclient_call c2 = { .connection_id = 2 }, c3 = { .connection_id = 3 };
	struct res x = { 0 };
	int error, codes;
	char err[256];

	json_decref(fake_ok(&fake, "POST", "/_fake/config", "{\"device_interval_s\":1}"));
	assert_int_equal(ccclient_device_authorize(f->c, &c3, on_code, on_res, &x, err,
						   sizeof(err)), -EINVAL);
	device_flow(f, "approve", &error, &codes);
	assert_int_equal(error, 0);
	assert_int_equal(codes, 1);
	assert_int_equal(query_int(f, "SELECT count(*) FROM connections WHERE connection_id = 2 "
				      "AND auth_state = 'authorized'"), 1);
	assert_int_equal(query_int(f, "SELECT refresh_token IS NOT NULL FROM connection_tokens "
				      "WHERE connection_id = 2"), 1);
	/* The new connection works. */
	assert_int_equal(ccclient_list_get(f->c, &c2, f->list_id, on_res, &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(fake_stat("tokens/device_authorize"), 1);
	/* Denied in the browser. */
	device_flow(f, "deny", &error, &codes);
	assert_int_equal(error, -EACCES);
	res_reset(&x);
}

static void test_device_flow_slow_down_and_expiry(void **state)
{
	struct fx *f = *state;
	struct ccclient_call c2 = { .connection_id = 2 };
	struct dflow d = { .action = NULL };
	char err[256], body[256];
	int error, codes;

	json_decref(fake_ok(&fake, "POST", "/_fake/config", "{\"device_interval_s\":1}"));
	assert_int_equal(ccclient_device_authorize(f->c, &c2, on_code, on_res, &d, err,
						   sizeof(err)), 0);
	while (!d.codes)
		(void)uv_run(&f->loop, UV_RUN_ONCE);
	/* Once we have polled, turn the fake's clock back: our next poll, though a full
	 * interval later, looks too early to it, and it answers slow_down. */
	while (fake_stat("tokens/device_authorization_pending") == 0)
		(void)uv_run(&f->loop, UV_RUN_ONCE);
	json_decref(fake_ok(&fake, "POST", "/_fake/clock", "{\"offset_s\":-30}"));
	while (fake_stat("tokens/device_slow_down") == 0)
		(void)uv_run(&f->loop, UV_RUN_ONCE);
	json_decref(fake_ok(&fake, "POST", "/_fake/clock", "{\"offset_s\":0}"));
	snprintf(body, sizeof(body), "{\"user_code\":\"%s\"}", d.user_code);
	json_decref(fake_ok(&fake, "POST", "/_fake/device/approve", body));
	wait_res(f, &d.x);
	assert_int_equal(d.x.error, 0);
	assert_int_equal(fake_stat("tokens/device_slow_down"), 1);
	res_reset(&d.x);
	/* A code nobody approves expires. */
	json_decref(fake_ok(&fake, "POST", "/_fake/config",
			    "{\"device_interval_s\":1,\"device_code_ttl_s\":2}"));
	device_flow(f, NULL, &error, &codes);
	assert_int_equal(error, -ETIME);
	assert_int_equal(codes, 1);
}

static void test_pkce_flow(void **state)
{
	struct fx *f = *state;
	struct ccclient_call c3 = { .connection_id = 3 };
	char *url = NULL, loc[4096], tampered[4096], err[512];
	struct res x = { 0 };

	assert_int_equal(ccclient_authorize_url(f->c, 3, "https://localhost/cb", &url, err,
						sizeof(err)), 0);
	assert_non_null(strstr(url, "code_challenge_method=S256"));
	assert_non_null(strstr(url, "client_id=test-client"));
	/* The user approves in a browser; CC redirects with code and state. */
	assert_int_equal(fake_redirect(&fake, url, loc, sizeof(loc)), 302);
	free(url);
	assert_non_null(strstr(loc, "code="));
	/* A URL from another authorization (state differs) is refused, and changes nothing. */
	snprintf(tampered, sizeof(tampered), "%s", loc);
	*strstr(tampered, "state=") = '\0';
	strcat(tampered, "state=forged");
	assert_int_equal(ccclient_authorize_finish(f->c, &c3, tampered, on_res, &x, err,
						   sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "state"));
	assert_int_equal(ccclient_authorize_finish(f->c, &c3, loc, on_res, &x, err, sizeof(err)),
			 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(query_int(f, "SELECT count(*) FROM connections WHERE connection_id = 3 "
				      "AND auth_state = 'authorized'"), 1);
	/* Single use. */
	assert_int_equal(ccclient_authorize_finish(f->c, &c3, loc, on_res, &x, err, sizeof(err)),
			 -ENOENT);
	res_reset(&x);
	assert_int_equal(ccclient_list_get(f->c, &c3, f->list_id, on_res, &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	res_reset(&x);
}

static void test_code_flow_with_secret(void **state)
{
	struct fx *f = *state;
	struct ccclient_call c4 = { .connection_id = 4 };
	char *url = NULL, loc[4096], err[512], secret_path[PATH_MAX];
	struct res x = { 0 };
	FILE *sf;

	/* No secret configured: refused before the user goes to the browser. */
	unsetenv("CREDENTIALS_DIRECTORY");
	assert_int_equal(ccclient_authorize_url(f->c, 4, "https://localhost/cb", &url, err,
						sizeof(err)), -ENOKEY);
	assert_non_null(strstr(err, "client_secret_file"));
	/* From a systemd credential. */
	tmpdir_file(&f->dir, "cc-client-secret", secret_path, sizeof(secret_path));
	sf = fopen(secret_path, "we");
	assert_non_null(sf);
	fputs("test-secret\n", sf);
	fclose(sf);
	setenv("CREDENTIALS_DIRECTORY", f->dir.path, 1);
	assert_int_equal(ccclient_authorize_url(f->c, 4, "https://localhost/cb", &url, err,
						sizeof(err)), 0);
	assert_null(strstr(url, "code_challenge"));
	assert_int_equal(fake_redirect(&fake, url, loc, sizeof(loc)), 302);
	free(url);
	assert_int_equal(ccclient_authorize_finish(f->c, &c4, loc, on_res, &x, err, sizeof(err)),
			 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(query_int(f, "SELECT count(*) FROM connections WHERE connection_id = 4 "
				      "AND auth_state = 'authorized'"), 1);
	/* The secret is never stored. */
	assert_int_equal(query_int(f, "SELECT count(*) FROM connections, connection_tokens WHERE "
				      "instr(connections.name || client_id || coalesce(auth_error, "
				      "''), 'test-secret') OR instr(coalesce(access_token, '') || "
				      "coalesce(refresh_token, ''), 'test-secret')"), 0);
	/* Refreshing a confidential client's token authenticates with the secret too. */
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"expire_tokens\":{}}"));
	res_reset(&x);
	assert_int_equal(ccclient_list_get(f->c, &c4, f->list_id, on_res, &x, err, sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	assert_int_equal(fake_stat("tokens/refreshed"), 1);
	unsetenv("CREDENTIALS_DIRECTORY");
	res_reset(&x);
}

/* ------------------------------------------------------------------ no secrets anywhere */

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "re");
	char *buf;
	long n;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	return buf;
}

static void test_no_secrets_in_logs(void **state)
{
	struct fx *f = *state;
	struct ccclient_call c4 = { .connection_id = 4 };
	char log_path[PATH_MAX], secret_path[PATH_MAX], err[512], *url = NULL, loc[4096];
	char *logs, *new_at, *new_rt, *at4, *rt4;
	struct res x = { 0 };
	int saved, fd, error, codes;
	FILE *sf;

	all_messages[0] = '\0';
	tmpdir_file(&f->dir, "log.txt", log_path, sizeof(log_path));
	fflush(stderr);
	saved = dup(2);
	fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	dup2(fd, 2);
	close(fd);
	log_setup(LOG_TARGET_STDERR, LOG_DEBUG);

	/* Refresh after a 401, the code flow with a secret, the device flow, a revoked refresh
	 * token, a TLS failure: everything that handles secrets, at debug level. */
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"expire_tokens\":{}}"));
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	tmpdir_file(&f->dir, "secret", secret_path, sizeof(secret_path));
	sf = fopen(secret_path, "we");
	fputs("test-secret", sf);
	fclose(sf);
	snprintf(f->cfg.client_secret_file, sizeof(f->cfg.client_secret_file), "%s", secret_path);
	assert_int_equal(ccclient_reload(f->c, &f->cfg, err, sizeof(err)), 0);
	assert_int_equal(ccclient_authorize_url(f->c, 4, "https://localhost/cb", &url, err,
						sizeof(err)), 0);
	assert_int_equal(fake_redirect(&fake, url, loc, sizeof(loc)), 302);
	free(url);
	res_reset(&x);
	assert_int_equal(ccclient_authorize_finish(f->c, &c4, loc, on_res, &x, err, sizeof(err)),
			 0);
	wait_res(f, &x);
	assert_int_equal(x.error, 0);
	json_decref(fake_ok(&fake, "POST", "/_fake/config", "{\"device_interval_s\":1}"));
	device_flow(f, "approve", &error, &codes);
	assert_int_equal(error, 0);
	new_at = query_text(f, "SELECT access_token FROM connection_tokens "
			       "WHERE connection_id = 1");
	new_rt = query_text(f, "SELECT refresh_token FROM connection_tokens "
			       "WHERE connection_id = 1");
	at4 = query_text(f, "SELECT access_token FROM connection_tokens WHERE connection_id = 4");
	rt4 = query_text(f, "SELECT refresh_token FROM connection_tokens WHERE connection_id = 4");
	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"revoke_refresh\":{},\"expire_tokens\":{}}"));
	res_reset(&x);
	assert_int_equal(ccclient_list_get(f->c, &main_call, f->list_id, on_res, &x, err,
					   sizeof(err)), 0);
	wait_res(f, &x);
	assert_int_equal(x.error, -EKEYREVOKED);
	strcat(all_messages, err);

	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	log_setup(LOG_TARGET_STDERR, LOG_WARNING);
	logs = slurp(log_path);
	/* The log did record the work (so the check below is not vacuous)... */
	assert_non_null(strstr(logs, "/token -> 200"));
	assert_non_null(strstr(logs, "/contact_lists/"));
	assert_non_null(strstr(logs, "needs re-authorization"));
	/* ...and no secret: not the tokens, not the secret, no bearer or basic credentials, no
	 * JWT (every access token of the fake starts with eyJ), no authorization code. */
	{
		const char *secrets[] = { f->access, f->refresh, new_at, new_rt, at4, rt4,
					  "test-secret", "Bearer ", "Basic ", "eyJ",
					  strstr(loc, "code=") + 5 };

		for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
			char needle[64];

			assert_non_null(secrets[i]);
			/* A distinctive prefix is enough to find any copy. */
			snprintf(needle, sizeof(needle), "%.24s", secrets[i]);
			if (strchr(needle, '&'))
				*strchr(needle, '&') = '\0';
			if (strstr(logs, needle) || strstr(all_messages, needle))
				fail_msg("secret #%zu leaked", i);
		}
	}
	free(logs);
	free(new_at);
	free(new_rt);
	free(at4);
	free(rt4);
	res_reset(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_list_get_and_deleted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lists_paging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_custom_fields_paging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_and_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_split_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staging_list_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_contacts_and_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batched_activity_polling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_daily_budget_persisted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quota_exceeded_from_cc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_throttle_storm, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dropped_connections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timeouts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_expired_midway, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refresh_before_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refresh_revoked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_endpoint_rate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_activity_failed_and_stuck, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_to_deleted_list, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_owner_and_forget, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unauthorized_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_device_flow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_device_flow_slow_down_and_expiry, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pkce_flow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_code_flow_with_secret, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_secrets_in_logs, setup, teardown),
	};
	int fails;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	log_setup(LOG_TARGET_STDERR, LOG_WARNING);
	fake_start(&fake, NULL);
	fails = cmocka_run_group_tests(tests, NULL, NULL);
	fake_stop(&fake);
	return fails;
}
