/* SPDX-License-Identifier: MIT */
/*
 * The plan on real SQLite files: mapping and value conversion, every rejection reason, dedup
 * determinism, the diff against sync state (unchanged, changed, remembered rejections, full
 * resend, resume counting), the mirror departed set, snapshot isolation from a committing upstream
 * writer, and a 100,000-profile correctness check whose expectations come from the generator's
 * model, not from the plan.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <cmocka.h>

#include "email.h"
#include "plan.h"
#include "store-data.h"
#include "store.h"
#include "test-db.h"
#include "test-helpers.h"
#include "util.h"

#define LIST_ID "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"

struct fixture {
	struct tmpdir dir;
	char db[PATH_MAX];
	struct store *s; /* the plan's connection */
	struct store *w; /* the daemon's writing connection */
	char err[1024];
};

struct item_copy {
	enum plan_item_kind kind;
	char *pid;
	char *email;
	char *fields; /* "key=value|key=value" */
	uint64_t hash;
	bool is_new;
	enum plan_reason reason;
	char *reason_code;
	char *reason_text;
	bool added;
	char *contact_id;
};

struct result {
	struct item_copy *items;
	size_t n;
	struct plan_counters c;
	uint64_t selected_early;
};

static void raw_exec(struct fixture *f, const char *sql)
{
	test_db_exec(f->db, sql);
}

static int64_t raw_int(struct fixture *f, const char *sql)
{
	return test_db_int64(f->db, sql);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	tmpdir_make(&f->dir);
	tmpdir_file(&f->dir, "ccsync.db", f->db, sizeof(f->db));
	if (store_open(f->db, STORE_OPEN_CREATE, 2000, &f->s, f->err, sizeof(f->err)) < 0 ||
	    store_open(f->db, 0, 2000, &f->w, f->err, sizeof(f->err)) < 0)
		fail_msg("%s", f->err);
	raw_exec(f,
		 "INSERT INTO connections (connection_id, name, client_id) VALUES (1, 'c', 'id');"
		 "INSERT INTO exports (export_id, name, connection_id, list_id, email_field, "
		 "first_name_field, last_name_field, mode) VALUES "
		 "(1, 'one', 1, '" LIST_ID "', 'email', 'fn', 'ln', 'upsert');"
		 "INSERT INTO segments (segment_id, name) VALUES (1, 's1'), (2, 's2'), (3, 's3');"
		 "INSERT INTO export_segments VALUES (1, 1), (1, 2);");
	*state = f;
	return 0;
}

static void result_done(struct result *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->items[i].pid);
		free(r->items[i].email);
		free(r->items[i].fields);
		free(r->items[i].reason_code);
		free(r->items[i].reason_text);
		free(r->items[i].contact_id);
	}
	free(r->items);
	*r = (struct result){};
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	store_free(f->s);
	store_free(f->w);
	tmpdir_remove(&f->dir);
	free(f);
	return 0;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static char *fields_text(const struct plan_item *it)
{
	size_t len = 1;
	char *s;

	for (size_t i = 0; i < it->n_fields; i++)
		len += strlen(it->fields[i].key) + it->fields[i].len + 2;
	s = calloc(1, len);
	for (size_t i = 0; i < it->n_fields; i++) {
		if (i)
			strcat(s, "|");
		strcat(s, it->fields[i].key);
		strcat(s, "=");
		assert_int_equal(strlen(it->fields[i].value), it->fields[i].len);
		assert_true(it->fields[i].len > 0);
		strcat(s, it->fields[i].value);
	}
	return s;
}

static void collect(struct fixture *f, struct plan *p, struct result *res)
{
	const struct plan_item *it;
	size_t cap = 0;
	int r;

	*res = (struct result){ .selected_early = plan_selected(p) };
	while ((r = plan_next(p, &it, f->err, sizeof(f->err))) > 0) {
		struct item_copy *c;

		if (res->n == cap) {
			cap = cap ? cap * 2 : 64;
			res->items = realloc(res->items, cap * sizeof(*res->items));
		}
		c = &res->items[res->n++];
		*c = (struct item_copy){
			.kind = it->kind,
			.pid = dup_or_null(it->profile_id),
			.email = dup_or_null(it->email),
			.hash = it->fields_hash,
			.is_new = it->is_new,
			.reason = it->reason,
			.reason_code = dup_or_null(it->reason_code),
			.reason_text = dup_or_null(it->reason_text),
			.added = it->added_by_ccsync,
			.contact_id = it->kind == PLAN_ITEM_DEPART ? dup_or_null(it->contact_id)
								   : NULL,
		};
		if (it->kind == PLAN_ITEM_SEND) {
			c->fields = fields_text(it);
			/* The hash handed out is the hash of exactly the fields handed out. */
			assert_int_equal(it->fields_hash,
					 plan_fields_hash(it->fields, it->n_fields));
			assert_string_equal(it->fields[0].key, "email");
			assert_string_equal(it->fields[0].value, it->email);
		}
		if (it->kind == PLAN_ITEM_REJECT) {
			assert_non_null(it->reason_text);
			assert_string_equal(it->reason_code, plan_reason_to_string(it->reason));
		}
	}
	if (r < 0)
		fail_msg("plan_next: %s", f->err);
	assert_int_equal(plan_next(p, &it, f->err, sizeof(f->err)), 0); /* stays at the end */
	res->c = *plan_counters(p);
	/* The counters always add up, and selected was known before the stream started. */
	assert_int_equal(res->c.selected,
			 res->c.to_send + res->c.already_sent + res->c.rejected + res->c.unchanged);
	assert_int_equal(res->c.departed, res->c.departed_ours + res->c.departed_not_ours);
	assert_int_equal(res->selected_early, res->c.selected);
	{
		uint64_t sum = 0;

		for (int i = 0; i < _PLAN_REASON_MAX; i++)
			sum += res->c.rejected_by_reason[i];
		assert_int_equal(sum, res->c.rejected);
	}
}

static void plan_all(struct fixture *f, const struct plan_options *o, struct result *res)
{
	struct plan *p = NULL;

	if (plan_new(f->s, 1, o, &p, f->err, sizeof(f->err)) < 0)
		fail_msg("plan_new: %s", f->err);
	collect(f, p, res);
	plan_free(p);
	assert_false(store_in_transaction(f->s));
}

static const struct item_copy *find(const struct result *r, const char *pid)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->items[i].pid && streq(r->items[i].pid, pid))
			return &r->items[i];
	fail_msg("no item for profile %s", pid);
	return NULL;
}

static const struct item_copy *find_email(const struct result *r, enum plan_item_kind kind,
					  const char *email)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->items[i].kind == kind && r->items[i].email &&
		    streq(r->items[i].email, email))
			return &r->items[i];
	return NULL;
}

/* 1 / 0: a DEPART item for email with added_by_ccsync true / false; -1: none. */
static int departed(const struct result *r, const char *email)
{
	const struct item_copy *it = find_email(r, PLAN_ITEM_DEPART, email);

	return it ? it->added : -1;
}

static void members(struct fixture *f, int seg, const char *const *pids, size_t n)
{
	char sql[512];

	for (size_t i = 0; i < n; i++) {
		snprintf(sql, sizeof(sql), "INSERT INTO segment_members VALUES (%d, '%s')", seg,
			 pids[i]);
		raw_exec(f, sql);
	}
}

/* Plays the run executor: confirms every SEND item of res in one batch of a new run. */
static int64_t confirm_sends(struct fixture *f, const struct result *res, int64_t run,
			     int64_t batch_no, size_t first, size_t count)
{
	struct store_data_sync_entry *e = calloc(res->n + 1, sizeof(*e));
	struct store_data_confirmation c = { .activity_state = "completed", .synced = e };
	size_t seen = 0;

	if (!run) {
		struct store_data_run_request req = { .export_id = 1,
						      .trigger = STORE_DATA_TRIGGER_DEMAND };

		assert_int_equal(store_data_run_create(f->w, &req, &run, f->err, sizeof(f->err)),
				 0);
		assert_int_equal(store_data_run_set_state(f->w, run, STORE_DATA_RUN_RUNNING, NULL,
							  f->err, sizeof(f->err)),
				 0);
	}
	for (size_t i = 0; i < res->n; i++) {
		if (res->items[i].kind != PLAN_ITEM_SEND)
			continue;
		if (seen++ < first || c.n_synced >= count)
			continue;
		e[c.n_synced++] = (struct store_data_sync_entry){ .email = res->items[i].email,
								  .fields_hash = res->items[i].hash,
								  .added_by_ccsync = true };
	}
	assert_int_equal(store_data_batch_add(f->w, run, batch_no, STORE_DATA_BATCH_IMPORT,
					      (int64_t)c.n_synced, 1, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(
		store_data_batch_submitted(f->w, run, batch_no, "act", f->err, sizeof(f->err)), 0);
	if (store_data_batch_confirm(f->w, run, batch_no, &c, f->err, sizeof(f->err)) < 0)
		fail_msg("confirm: %s", f->err);
	free(e);
	return run;
}

static void finish_run(struct fixture *f, int64_t run)
{
	assert_int_equal(store_data_run_set_state(f->w, run, STORE_DATA_RUN_CANCELLED, NULL, f->err,
						  sizeof(f->err)),
			 0);
}

/* ---- mapping and values ---------------------------------------------------------------------- */

static void test_sends_new_contacts_with_mapping(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "p1", "p2" };
	struct result r;

	raw_exec(f, "INSERT INTO export_fields VALUES (1, 'job_title', 'title'), (1, 'cf:tier', "
		    "'tier');"
		    "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('p2', '{\"email\":\"bob@example.org\",\"fn\":\"Bob\"}'),"
		    "('p1', '{\"email\":\" Ann@Example.ORG \",\"fn\":\"Ann\",\"ln\":\"Lee\","
		    "\"title\":\"Eng\",\"tier\":\"gold\",\"other\":\"x\"}')");
	members(f, 1, pids, 2);
	plan_all(f, NULL, &r);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.items[0].kind, PLAN_ITEM_SEND);
	assert_string_equal(r.items[0].pid, "p1");
	assert_string_equal(r.items[0].email, "ann@example.org");
	/* Send order: email, first_name, last_name, then the other targets bytewise. */
	assert_string_equal(r.items[0].fields, "email=ann@example.org|first_name=Ann|last_name=Lee|"
					       "cf:tier=gold|job_title=Eng");
	assert_true(r.items[0].is_new);
	assert_string_equal(r.items[1].fields, "email=bob@example.org|first_name=Bob");
	assert_int_equal(r.c.selected, 2);
	assert_int_equal(r.c.to_send, 2);
	assert_int_equal(r.c.to_send_new, 2);
	assert_int_equal(r.c.departed, 0);
	result_done(&r);
}

static void test_value_mapping(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8" };
	struct result r;

	raw_exec(f, "INSERT INTO export_fields VALUES (1, 'cf:a', 'a'), (1, 'cf:b', 'b'),"
		    "(1, 'cf:c', 'c'), (1, 'cf:d', 'd'), (1, 'cf:e', 'e'), (1, 'cf:f', 'f'),"
		    "(1, 'cf:g', 'g'), (1, 'cf:h', 'h');"
		    "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('v1', '{\"email\":\"v@x.org\",\"a\":\"caf\\u00e9 \\ud83d\\ude00\\n\","
		    "\"b\":1.50,\"c\":1e3,\"d\":true,\"e\":false,\"f\":null,\"g\":\"\",\"h\":-0}'),"
		    "('v2', '{\"email\":\"o@x.org\",\"a\":{\"x\":[1,\"}\"]}}'),"
		    "('v3', '{\"email\":\"r@x.org\",\"b\":[1,2]}'),"
		    "('v4', '{\"email\":\"s@x.org\",\"a\":\"\\ud800 lone\"}'),"
		    "('v5', '{\"email\":\"z@x.org\",\"a\":\"x\\u0000y\"}'),"
		    "('v6', '{\"email\":\"d@x.org\",\"a\":\"first\",\"a\":\"second\"}'),"
		    "('v7', '{\"em\\u0061il\":\"k@x.org\", \"b\" : \"spaced\" }'),"
		    "('v8', '{\"meta\":{\"email\":\"no@x.org\"},\"a\":\"x\"}')");
	members(f, 1, pids, 8);
	plan_all(f, NULL, &r);
	assert_string_equal(find(&r, "v1")->fields,
			    "email=v@x.org|cf:a=caf\xc3\xa9 \xf0\x9f\x98\x80\n|cf:b=1.50|cf:c=1e3|"
			    "cf:d=true|cf:e=false|cf:h=-0");
	assert_int_equal(find(&r, "v2")->reason, PLAN_REASON_FIELD_NOT_SCALAR);
	assert_non_null(
		strstr(find(&r, "v2")->reason_text, "cf:a (attribute 'a') is a JSON object"));
	assert_int_equal(find(&r, "v3")->reason, PLAN_REASON_FIELD_NOT_SCALAR);
	assert_non_null(strstr(find(&r, "v3")->reason_text, "JSON array"));
	assert_int_equal(find(&r, "v4")->reason, PLAN_REASON_FIELD_INVALID);
	assert_int_equal(find(&r, "v5")->reason, PLAN_REASON_FIELD_INVALID);
	assert_string_equal(find(&r, "v6")->fields, "email=d@x.org|cf:a=first");
	assert_string_equal(find(&r, "v7")->fields, "email=k@x.org|cf:b=spaced");
	/* Only top-level keys map: a nested "email" is not the email. */
	assert_int_equal(find(&r, "v8")->reason, PLAN_REASON_EMAIL_MISSING);
	assert_int_equal(r.c.to_send, 3);
	assert_int_equal(r.c.rejected, 5);
	result_done(&r);
}

static void test_every_rejection_reason(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = {
		"r-missing", "r-noemail", "r-null",  "r-blank",	 "r-bad", "r-num",
		"r-long",    "r-cf255",	  "r-cf256", "r-multi",	 "r-obj", "r-inv",
		"r-dup1",    "r-dup2",	  "r-prev",  "r-nonstr",
	};
	struct plan_field prev_fields[] = { { "email", "prev@x.org", 10 } };
	struct store_data_rejection rows[32];
	char sql[4096], s51[52], s255[256], s256[257], multi[101];
	int64_t run = 0;
	struct result r;
	size_t nrows = 0;

	memset(s51, 'a', 51), s51[51] = 0;
	memset(s255, 'b', 255), s255[255] = 0;
	memset(s256, 'c', 256), s256[256] = 0;
	for (int i = 0; i < 50; i++)
		memcpy(multi + 2 * i, "\xc3\xa9", 2);
	multi[100] = 0;
	raw_exec(f, "INSERT INTO export_fields VALUES (1, 'cf:notes', 'notes')");
	snprintf(sql, sizeof(sql),
		 "INSERT INTO profiles (profile_id, attributes) VALUES "
		 "('r-noemail', '{}'), ('r-null', '{\"email\":null}'),"
		 "('r-blank', '{\"email\":\"  \"}'), ('r-bad', '{\"email\":\"not-an-email\"}'),"
		 "('r-num', '{\"email\":42}'), ('r-nonstr', '{\"email\":[\"a@b.co\"]}'),"
		 "('r-long', '{\"email\":\"l@x.org\",\"fn\":\"%s\"}'),"
		 "('r-cf255', '{\"email\":\"c@x.org\",\"notes\":\"%s\"}'),"
		 "('r-cf256', '{\"email\":\"d@x.org\",\"notes\":\"%s\"}'),"
		 "('r-multi', '{\"email\":\"m@x.org\",\"fn\":\"%s\"}'),"
		 "('r-obj', '{\"email\":\"o@x.org\",\"ln\":{}}'),"
		 "('r-inv', '{\"email\":\"i@x.org\",\"ln\":\"\\udfff\"}'),"
		 "('r-dup1', '{\"email\":\"same@x.org\"}'), ('r-dup2', "
		 "'{\"email\":\"SAME@x.org\"}'),"
		 "('r-prev', '{\"email\":\"prev@x.org\"}')",
		 s51, s255, s256, multi);
	raw_exec(f, sql);
	members(f, 1, pids, sizeof(pids) / sizeof(pids[0]));
	/* A profile id that is not UTF-8, and a document the CHECK would refuse (written with
	 * checks off, as a broken upstream could): the plan must cope with both. */
	raw_exec(
		f,
		"INSERT INTO profiles VALUES (CAST(x'72ff' AS TEXT), '{\"email\":\"u@x.org\"}', 0);"
		"INSERT INTO segment_members VALUES (1, CAST(x'72ff' AS TEXT));"
		"PRAGMA ignore_check_constraints = ON;"
		"INSERT INTO profiles VALUES ('r-broken', '{\"email\":\"b@x.org\"', 0);"
		"INSERT INTO segment_members VALUES (1, 'r-broken');");
	/* CC refused exactly r-prev's content in an earlier run. */
	snprintf(sql, sizeof(sql),
		 "INSERT INTO sync_state (export_id, email, fields_hash, state, added_by_ccsync, "
		 "confirmed_run_id) VALUES (1, 'prev@x.org', %" PRId64 ", 'rejected', 0, 7)",
		 (int64_t)plan_fields_hash(prev_fields, 1));
	raw_exec(f, sql);

	plan_all(f, NULL, &r);
	assert_int_equal(find(&r, "r-missing")->reason, PLAN_REASON_PROFILE_MISSING);
	assert_int_equal(find(&r, "r-noemail")->reason, PLAN_REASON_EMAIL_MISSING);
	assert_non_null(strstr(find(&r, "r-noemail")->reason_text, "attribute 'email'"));
	assert_int_equal(find(&r, "r-null")->reason, PLAN_REASON_EMAIL_MISSING);
	assert_int_equal(find(&r, "r-blank")->reason, PLAN_REASON_EMAIL_MISSING);
	assert_int_equal(find(&r, "r-bad")->reason, PLAN_REASON_EMAIL_INVALID);
	assert_string_equal(find(&r, "r-bad")->email, "not-an-email");
	assert_non_null(strstr(find(&r, "r-bad")->reason_text, "no_at"));
	assert_int_equal(find(&r, "r-num")->reason, PLAN_REASON_EMAIL_INVALID);
	assert_non_null(strstr(find(&r, "r-num")->reason_text, "is a number, not a string"));
	assert_null(find(&r, "r-num")->email);
	assert_non_null(strstr(find(&r, "r-nonstr")->reason_text, "JSON array"));
	assert_int_equal(find(&r, "r-long")->reason, PLAN_REASON_FIELD_TOO_LONG);
	assert_non_null(strstr(find(&r, "r-long")->reason_text,
			       "first_name (attribute 'fn') is 51 characters long; Constant "
			       "Contact accepts at most 50"));
	assert_string_equal(find(&r, "r-long")->email, "l@x.org");
	assert_int_equal(find(&r, "r-cf255")->kind, PLAN_ITEM_SEND);
	assert_int_equal(find(&r, "r-cf256")->reason, PLAN_REASON_FIELD_TOO_LONG);
	assert_non_null(strstr(find(&r, "r-cf256")->reason_text, "256 characters"));
	/* Limits count characters: 50 two-byte characters fit. */
	assert_int_equal(find(&r, "r-multi")->kind, PLAN_ITEM_SEND);
	assert_int_equal(find(&r, "r-obj")->reason, PLAN_REASON_FIELD_NOT_SCALAR);
	assert_int_equal(find(&r, "r-inv")->reason, PLAN_REASON_FIELD_INVALID);
	assert_int_equal(find(&r, "r-dup1")->kind, PLAN_ITEM_SEND);
	assert_int_equal(find(&r, "r-dup2")->reason, PLAN_REASON_DUPLICATE);
	assert_non_null(strstr(find(&r, "r-dup2")->reason_text, "profile 'r-dup1'"));
	assert_int_equal(find(&r, "r-prev")->reason, PLAN_REASON_PREVIOUSLY_REJECTED);
	assert_int_equal(find(&r, "r-prev")->hash, plan_fields_hash(prev_fields, 1));
	assert_non_null(strstr(find(&r, "r-prev")->reason_text, "until it changes"));
	assert_int_equal(find(&r, "r-broken")->reason, PLAN_REASON_ATTRIBUTES_INVALID);
	assert_int_equal(r.c.rejected_by_reason[PLAN_REASON_PROFILE_ID_INVALID], 1);
	for (int i = 0; i < _PLAN_REASON_MAX; i++)
		if (r.c.rejected_by_reason[i] == 0)
			fail_msg("reason %s never seen", plan_reason_to_string(i));
	assert_int_equal(r.c.to_send, 3);
	assert_int_equal(r.c.selected, sizeof(pids) / sizeof(pids[0]) + 2);

	/* Every rejected item fits the rejected_rows table as the runner will write it. */
	for (size_t i = 0; i < r.n; i++)
		if (r.items[i].kind == PLAN_ITEM_REJECT)
			rows[nrows++] =
				(struct store_data_rejection){ .profile_id = r.items[i].pid,
							       .email = r.items[i].email,
							       .reason_code =
								       r.items[i].reason_code,
							       .reason = r.items[i].reason_text,
							       .permanent = true };
	{
		struct store_data_run_request req = { .export_id = 1,
						      .trigger = STORE_DATA_TRIGGER_DEMAND };

		assert_int_equal(store_data_run_create(f->w, &req, &run, f->err, sizeof(f->err)),
				 0);
	}
	assert_int_equal(store_data_rejected_add(f->w, run, rows, nrows, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(raw_int(f, "SELECT count(DISTINCT reason_code) FROM rejected_rows"),
			 _PLAN_REASON_MAX);
	result_done(&r);
}

/* ---- dedup ----------------------------------------------------------------------------------- */

static void test_dedup_is_deterministic(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "p2", "p10", "p1", "q" };
	static const char *const insert_a =
		"INSERT INTO profiles (profile_id, attributes) VALUES "
		"('p2', '{\"email\":\"Ann@X.org\"}'), ('p10', '{\"email\":\"ann@x.org \"}'),"
		"('p1', '{\"email\":\" ANN@x.ORG\",\"fn\":\"%s\"}'), ('q', "
		"'{\"email\":\"q@x.org\"}')";
	static const char *const insert_b =
		"INSERT INTO profiles (profile_id, attributes) VALUES "
		"('q', '{\"email\":\"q@x.org\"}'), ('p1', '{\"email\":\" "
		"ANN@x.ORG\",\"fn\":\"%s\"}'),"
		"('p10', '{\"email\":\"ann@x.org \"}'), ('p2', '{\"email\":\"Ann@X.org\"}')";
	char sql[1024], long_name[60];
	struct result r1, r2;

	memset(long_name, 'n', 55);
	long_name[55] = 0;
	snprintf(sql, sizeof(sql), insert_a, long_name);
	raw_exec(f, sql);
	members(f, 2, pids, 4);
	members(f, 1, pids + 2, 1);
	plan_all(f, NULL, &r1);
	/* The lowest profile id (bytewise) wins even though it is rejected itself; the others
	 * are duplicates naming it, handed out after the members in profile id order. */
	assert_int_equal(r1.n, 4);
	assert_string_equal(r1.items[0].pid, "p1");
	assert_int_equal(r1.items[0].reason, PLAN_REASON_FIELD_TOO_LONG);
	assert_string_equal(r1.items[1].pid, "q");
	assert_int_equal(r1.items[1].kind, PLAN_ITEM_SEND);
	assert_string_equal(r1.items[2].pid, "p10");
	assert_int_equal(r1.items[2].reason, PLAN_REASON_DUPLICATE);
	assert_non_null(strstr(r1.items[2].reason_text, "'p1'"));
	assert_string_equal(r1.items[2].email, "ann@x.org");
	assert_string_equal(r1.items[3].pid, "p2");
	assert_int_equal(r1.items[3].reason, PLAN_REASON_DUPLICATE);
	assert_int_equal(r1.c.selected, 4);
	assert_int_equal(r1.c.rejected_by_reason[PLAN_REASON_DUPLICATE], 2);

	/* Written in a different order and with different membership order: the same plan. */
	raw_exec(f, "DELETE FROM profiles; DELETE FROM segment_members;");
	snprintf(sql, sizeof(sql), insert_b, long_name);
	raw_exec(f, sql);
	members(f, 1, pids, 4);
	plan_all(f, NULL, &r2);
	assert_int_equal(r1.n, r2.n);
	for (size_t i = 0; i < r1.n; i++) {
		assert_string_equal(r1.items[i].pid, r2.items[i].pid);
		assert_int_equal(r1.items[i].kind, r2.items[i].kind);
		assert_string_equal(r1.items[i].reason_text ?: "", r2.items[i].reason_text ?: "");
	}
	result_done(&r1);
	result_done(&r2);
}

static void test_members_of_all_segments_once(void **state)
{
	struct fixture *f = *state;
	static const char *const both[] = { "a", "b" };
	static const char *const other[] = { "c" };
	struct result r;

	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('a', '{\"email\":\"a@x.org\"}'), ('b', '{\"email\":\"b@x.org\"}'),"
		    "('c', '{\"email\":\"c@x.org\"}')");
	members(f, 1, both, 2);
	members(f, 2, both, 1);
	members(f, 3, other, 1); /* segment 3 is not the export's */
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.selected, 2);
	assert_int_equal(r.c.to_send, 2);
	assert_null(find_email(&r, PLAN_ITEM_SEND, "c@x.org"));
	result_done(&r);
}

/* ---- diff ------------------------------------------------------------------------------------ */

static void test_diff_against_sync_state(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "a", "b", "c" };
	struct plan_options full = { .full_resend = true };
	struct result r;
	int64_t run;

	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('a', '{\"email\":\"a@x.org\",\"fn\":\"A\"}'),"
		    "('b', '{\"email\":\"b@x.org\",\"fn\":\"B\"}'),"
		    "('c', '{\"email\":\"c@x.org\",\"fn\":\"C\"}')");
	members(f, 1, pids, 3);
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.to_send, 3);
	run = confirm_sends(f, &r, 0, 1, 0, SIZE_MAX);
	finish_run(f, run);
	result_done(&r);

	/* Nothing changed: nothing to send. */
	plan_all(f, NULL, &r);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.c.unchanged, 3);
	result_done(&r);

	/* One change: one update. Whitespace-only email changes are no change at all. */
	raw_exec(f, "UPDATE profiles SET attributes = '{\"email\":\"b@x.org\",\"fn\":\"Bea\"}' "
		    "WHERE profile_id = 'b';"
		    "UPDATE profiles SET attributes = '{\"email\":\" C@X.ORG\",\"fn\":\"C\"}' "
		    "WHERE profile_id = 'c'");
	plan_all(f, NULL, &r);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.items[0].pid, "b");
	assert_false(r.items[0].is_new);
	assert_string_equal(r.items[0].fields, "email=b@x.org|first_name=Bea");
	assert_int_equal(r.c.unchanged, 2);
	assert_int_equal(r.c.to_send_new, 0);
	result_done(&r);

	/* --full sends everything. */
	plan_all(f, &full, &r);
	assert_int_equal(r.c.to_send, 3);
	assert_int_equal(r.c.unchanged, 0);
	result_done(&r);

	/* A mapping change changes every hash: everyone is re-sent with the new field. */
	raw_exec(f, "INSERT INTO export_fields VALUES (1, 'job_title', 'fn')");
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.to_send, 3);
	assert_string_equal(find(&r, "a")->fields, "email=a@x.org|first_name=A|job_title=A");
	result_done(&r);
}

static void test_previously_rejected_until_changed(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "a" };
	struct plan_options full = { .full_resend = true };
	struct store_data_rejection rej;
	struct store_data_confirmation c = { .rejected = &rej, .n_rejected = 1 };
	struct store_data_run_request req = { .export_id = 1,
					      .trigger = STORE_DATA_TRIGGER_DEMAND };
	struct result r;
	int64_t run = 0;

	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('a', '{\"email\":\"a@x.org\",\"fn\":\"A\"}')");
	members(f, 1, pids, 1);
	plan_all(f, NULL, &r);
	/* Constant Contact refuses the contact permanently. */
	rej = (struct store_data_rejection){ .profile_id = "a",
					     .email = r.items[0].email,
					     .reason_code = "cc_rejected",
					     .reason = "suppressed",
					     .permanent = true,
					     .fields_hash = r.items[0].hash };
	assert_int_equal(store_data_run_create(f->w, &req, &run, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_set_state(f->w, run, STORE_DATA_RUN_RUNNING, NULL, f->err,
						  sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_add(f->w, run, 1, STORE_DATA_BATCH_IMPORT, 1, 1, f->err,
					      sizeof(f->err)),
			 0);
	assert_int_equal(store_data_batch_submitted(f->w, run, 1, "x", f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_batch_confirm(f->w, run, 1, &c, f->err, sizeof(f->err)), 0);
	finish_run(f, run);
	result_done(&r);

	/* Same content: not re-sent, reported again. */
	plan_all(f, NULL, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.items[0].reason, PLAN_REASON_PREVIOUSLY_REJECTED);
	assert_int_equal(r.c.to_send, 0);
	result_done(&r);
	/* --full tries again. */
	plan_all(f, &full, &r);
	assert_int_equal(r.c.to_send, 1);
	assert_true(r.items[0].is_new); /* never reached the list */
	result_done(&r);
	/* Changed content is sent. */
	raw_exec(f, "UPDATE profiles SET attributes = '{\"email\":\"a@x.org\",\"fn\":\"Al\"}'");
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.to_send, 1);
	assert_int_equal(r.items[0].kind, PLAN_ITEM_SEND);
	result_done(&r);
}

static void test_resume_counts_confirmed_as_sent(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "a", "b", "c", "d" };
	struct store_data_recovery rec = {};
	struct store_data_run_request req = { .export_id = 1,
					      .trigger = STORE_DATA_TRIGGER_RESUME };
	struct plan_options o = {};
	struct result r, first;
	int64_t run, resume = 0, *chain = NULL;
	size_t n = 0;

	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('a', '{\"email\":\"a@x.org\"}'), ('b', '{\"email\":\"b@x.org\"}'),"
		    "('c', '{\"email\":\"c@x.org\"}'), ('d', '{\"email\":\"d@x.org\"}')");
	members(f, 1, pids, 4);
	plan_all(f, NULL, &first);
	/* The first batch (a, b) is confirmed, then the daemon dies. */
	run = confirm_sends(f, &first, 0, 1, 0, 2);
	assert_int_equal(store_data_recover(f->w, &rec, f->err, sizeof(f->err)), 0);
	store_data_recovery_done(&rec);
	req.resumed_from = run;
	assert_int_equal(store_data_run_create(f->w, &req, &resume, f->err, sizeof(f->err)), 0);
	assert_int_equal(store_data_run_resume_chain(f->w, resume, &chain, &n), 0);

	o.resume_run_ids = chain;
	o.n_resume_run_ids = n;
	plan_all(f, &o, &r);
	assert_int_equal(r.c.already_sent, 2);
	assert_int_equal(r.c.to_send, 2);
	assert_int_equal(r.c.unchanged, 0);
	assert_string_equal(r.items[0].pid, "c");
	assert_string_equal(r.items[1].pid, "d");
	result_done(&r);

	/* Without the chain the same contacts would look unchanged. */
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.unchanged, 2);
	assert_int_equal(r.c.already_sent, 0);
	result_done(&r);

	/* A contact confirmed by the interrupted run but changed since is sent again. */
	raw_exec(f, "UPDATE profiles SET attributes = '{\"email\":\"a@x.org\",\"fn\":\"new\"}' "
		    "WHERE profile_id = 'a'");
	plan_all(f, &o, &r);
	assert_int_equal(r.c.already_sent, 1);
	assert_int_equal(r.c.to_send, 3);
	result_done(&r);
	result_done(&first);
	free(chain);
}

static void test_mirror_departed_set(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "stay", "dup1", "dup2", "long" };
	struct result r;
	char sql[1024];

	snprintf(sql, sizeof(sql),
		 "UPDATE exports SET mode = 'mirror';"
		 "INSERT INTO profiles (profile_id, attributes) VALUES "
		 "('stay', '{\"email\":\"stay@x.org\"}'), ('dup1', '{\"email\":\"dup@x.org\"}'),"
		 "('dup2', '{\"email\":\"DUP@x.org\"}'),"
		 "('long', '{\"email\":\"long@x.org\",\"fn\":\"%0100d\"}');"
		 "INSERT INTO sync_state (export_id, email, fields_hash, state, added_by_ccsync, "
		 "contact_id) VALUES "
		 "(1, 'a-gone-ours@x.org', 1, 'synced', 1, 'cid-1'),"
		 "(1, 'gone-theirs@x.org', 2, 'synced', 0, NULL),"
		 "(1, 'gone-refused@x.org', 3, 'rejected', 0, NULL),"
		 "(1, 'gone-refused-ours@x.org', 4, 'rejected', 1, NULL),"
		 "(1, 'long@x.org', 5, 'synced', 1, NULL),"
		 "(1, 'dup@x.org', 6, 'synced', 1, NULL),"
		 "(1, 'zz-last-gone@x.org', 7, 'synced', 1, NULL);"
		 "INSERT INTO sync_state (export_id, email, fields_hash) VALUES "
		 "(2, 'other-export@x.org', 8)",
		 0);
	raw_exec(f, "INSERT INTO exports (export_id, name, connection_id, list_id, email_field) "
		    "VALUES (2, 'two', 1, '" LIST_ID "', 'email')");
	raw_exec(f, sql);
	members(f, 1, pids, 4);
	plan_all(f, NULL, &r);

	assert_int_equal(r.c.departed, 4);
	assert_int_equal(r.c.departed_ours, 3);
	assert_int_equal(r.c.departed_not_ours, 1);
	assert_int_equal(departed(&r, "a-gone-ours@x.org"), 1);
	assert_int_equal(departed(&r, "gone-theirs@x.org"), 0);
	assert_int_equal(departed(&r, "gone-refused-ours@x.org"), 1);
	assert_int_equal(departed(&r, "zz-last-gone@x.org"), 1);
	/* Never on the list; still a member (rejected or duplicate); another export's row. */
	assert_int_equal(departed(&r, "gone-refused@x.org"), -1);
	assert_int_equal(departed(&r, "long@x.org"), -1);
	assert_int_equal(departed(&r, "dup@x.org"), -1);
	assert_int_equal(departed(&r, "other-export@x.org"), -1);
	/* Departed contacts are not selected members. */
	assert_int_equal(r.c.selected, 4);
	/* They come last, in email order. */
	for (size_t i = 1; i < r.n; i++) {
		if (r.items[i - 1].kind == PLAN_ITEM_DEPART)
			assert_int_equal(r.items[i].kind, PLAN_ITEM_DEPART);
		if (r.items[i].kind == PLAN_ITEM_DEPART && r.items[i - 1].kind == PLAN_ITEM_DEPART)
			assert_true(strcmp(r.items[i - 1].email, r.items[i].email) < 0);
	}
	assert_int_equal(r.items[r.n - 1].kind, PLAN_ITEM_DEPART);
	assert_string_equal(r.items[r.n - 1].email, "zz-last-gone@x.org");
	result_done(&r);

	/* Upsert mode never removes: no departed set at all. */
	raw_exec(f, "UPDATE exports SET mode = 'upsert' WHERE export_id = 1");
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.departed, 0);
	assert_int_equal(departed(&r, "a-gone-ours@x.org"), -1);
	result_done(&r);
}

/* ---- what the faster scan must not change ---------------------------------------------------- */

/*
 * The string decoder copies plain ASCII 8 bytes at a time and finds a string's end with a quote
 * search: values where a run of plain text meets an escape, a non-ASCII character, the end of
 * the string or the length limit at every offset around a word boundary decode exactly as they
 * did byte by byte.
 */
static void test_string_runs_and_limits(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "r1", "r2", "r3", "r4", "r5", "r6" };
	char sql[4096], want[512], run[64];
	struct result r;

	raw_exec(f, "INSERT INTO export_fields VALUES (1, 'cf:a', 'a'), (1, 'street', 's')");
	for (int n = 0; n <= 17; n++) {
		/* n plain bytes, then an escape, a non-ASCII character, an escaped quote. */
		memset(run, 'x', (size_t)n);
		run[n] = 0;
		raw_exec(f, "DELETE FROM profiles; DELETE FROM segment_members;");
		snprintf(sql, sizeof(sql),
			 "INSERT INTO profiles (profile_id, attributes) VALUES "
			 "('r1', '{\"email\":\"r1@x.org\",\"a\":\"%s\\n%s\"}'),"
			 "('r2', '{\"email\":\"r2@x.org\",\"a\":\"%s\u00e9%s\"}'),"
			 "('r3', '{\"email\":\"r3@x.org\",\"a\":\"%s\\\"%s\",\"s\":\"%s\"}'),"
			 "('r4', '{\"email\":\"r4@x.org\",\"fn\":\"%s%s%s%s\"}'),"
			 "('r5', '{\"email\":\"r5@x.org\",\"s\":\"%s\\u0041\"}'),"
			 "('r6', '{\"e\\u006dail\":\"r6@x.org\",\"a\":\"%s\"}')",
			 run, run, run, run, run, run, run, run, run, run, run, run, run);
		raw_exec(f, sql);
		members(f, 1, pids, 6);
		plan_all(f, NULL, &r);
		snprintf(want, sizeof(want), "email=r1@x.org|cf:a=%s\n%s", run, run);
		assert_string_equal(find(&r, "r1")->fields, want);
		snprintf(want, sizeof(want), "email=r2@x.org|cf:a=%s\xc3\xa9%s", run, run);
		assert_string_equal(find(&r, "r2")->fields, want);
		snprintf(want, sizeof(want), "email=r3@x.org|cf:a=%s\"%s%s", run, run,
			 n ? "|street=" : "");
		if (n)
			strcat(want, run);
		assert_string_equal(find(&r, "r3")->fields, want);
		/* first_name: at most 50 characters; 4n of them. */
		if (4 * n <= 50) {
			snprintf(want, sizeof(want), "email=r4@x.org%s%s%s%s%s", n ? "|first_name=" : "",
				 run, run, run, run);
			assert_string_equal(find(&r, "r4")->fields, want);
		} else {
			assert_int_equal(find(&r, "r4")->reason, PLAN_REASON_FIELD_TOO_LONG);
			snprintf(want, sizeof(want), "is %d characters long", 4 * n);
			assert_non_null(strstr(find(&r, "r4")->reason_text, want));
		}
		snprintf(want, sizeof(want), "email=r5@x.org|street=%sA", run);
		assert_string_equal(find(&r, "r5")->fields, want);
		snprintf(want, sizeof(want), "email=r6@x.org%s%s", n ? "|cf:a=" : "", run);
		assert_string_equal(find(&r, "r6")->fields, want);
		result_done(&r);
	}
}

/*
 * After a confirmed export, a change of any one mapped field (email, first_name, last_name, a
 * further field) is sent, and only that profile; an unmapped attribute's change is not.
 */
static void test_each_mapped_field_change_is_sent(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "e", "f", "l", "t", "u" };
	static const char *const changes[][2] = {
		{ "e", "{\"email\":\"e2@x.org\",\"fn\":\"F\",\"ln\":\"L\",\"t\":\"T\",\"u\":1}" },
		{ "f", "{\"email\":\"f@x.org\",\"fn\":\"F2\",\"ln\":\"L\",\"t\":\"T\",\"u\":1}" },
		{ "l", "{\"email\":\"l@x.org\",\"fn\":\"F\",\"ln\":null,\"t\":\"T\",\"u\":1}" },
		{ "t", "{\"email\":\"t@x.org\",\"fn\":\"F\",\"ln\":\"L\",\"t\":7,\"u\":1}" },
		{ "u", "{\"email\":\"u@x.org\",\"fn\":\"F\",\"ln\":\"L\",\"t\":\"T\",\"u\":2}" },
	};
	char sql[512];
	struct result r;
	int64_t run;

	raw_exec(f, "INSERT INTO export_fields VALUES (1, 'job_title', 't');");
	for (size_t i = 0; i < ELEMENTSOF(pids); i++) {
		snprintf(sql, sizeof(sql),
			 "INSERT INTO profiles (profile_id, attributes) VALUES ('%s', "
			 "'{\"email\":\"%s@x.org\",\"fn\":\"F\",\"ln\":\"L\",\"t\":\"T\",\"u\":1}')",
			 pids[i], pids[i]);
		raw_exec(f, sql);
	}
	members(f, 1, pids, ELEMENTSOF(pids));
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.to_send, 5);
	run = confirm_sends(f, &r, 0, 1, 0, SIZE_MAX);
	finish_run(f, run);
	result_done(&r);

	for (size_t i = 0; i < ELEMENTSOF(changes); i++) {
		snprintf(sql, sizeof(sql), "UPDATE profiles SET attributes = '%s' WHERE "
			 "profile_id = '%s'", changes[i][1], changes[i][0]);
		raw_exec(f, sql);
		plan_all(f, NULL, &r);
		if (streq(changes[i][0], "u")) {
			assert_int_equal(r.n, 0);
			assert_int_equal(r.c.unchanged, 5);
		} else {
			assert_int_equal(r.n, 1);
			assert_string_equal(r.items[0].pid, changes[i][0]);
			assert_int_equal(r.items[0].kind, PLAN_ITEM_SEND);
			/* A new address is a new contact; the others update one. */
			assert_int_equal(r.items[0].is_new, streq(changes[i][0], "e"));
			assert_int_equal(r.c.unchanged, 4);
			run = confirm_sends(f, &r, 0, 1, 0, SIZE_MAX);
			finish_run(f, run);
		}
		result_done(&r);
	}
}

/*
 * Membership changes after a confirmed mirror export: a joining member is sent as new, a
 * leaving one departs (with its contact id), and when a duplicate's winner leaves, the next
 * lowest profile id takes the address over and is sent as an update of it.
 */
static void test_join_leave_and_dedup_winner_change(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "a", "b1", "b2", "c" };
	const struct item_copy *it;
	struct result r;
	int64_t run;

	raw_exec(f, "UPDATE exports SET mode = 'mirror';"
		    "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('a', '{\"email\":\"a@x.org\"}'),"
		    "('b1', '{\"email\":\"b@x.org\",\"fn\":\"One\"}'),"
		    "('b2', '{\"email\":\"B@x.org\",\"fn\":\"Two\"}'),"
		    "('c', '{\"email\":\"c@x.org\"}'), ('d', '{\"email\":\"d@x.org\"}')");
	members(f, 1, pids, ELEMENTSOF(pids));
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.to_send, 3);
	assert_int_equal(r.c.rejected_by_reason[PLAN_REASON_DUPLICATE], 1);
	run = confirm_sends(f, &r, 0, 1, 0, SIZE_MAX);
	finish_run(f, run);
	result_done(&r);
	raw_exec(f, "UPDATE sync_state SET contact_id = 'cid-c' WHERE email = 'c@x.org'");

	/* d joins, c leaves, b1 (the winner of b@x.org) leaves. */
	raw_exec(f, "INSERT INTO segment_members VALUES (2, 'd');"
		    "DELETE FROM segment_members WHERE profile_id IN ('c', 'b1')");
	plan_all(f, NULL, &r);
	it = find(&r, "d");
	assert_int_equal(it->kind, PLAN_ITEM_SEND);
	assert_true(it->is_new);
	it = find(&r, "b2");
	assert_int_equal(it->kind, PLAN_ITEM_SEND);
	assert_false(it->is_new);
	assert_string_equal(it->fields, "email=b@x.org|first_name=Two");
	assert_int_equal(departed(&r, "c@x.org"), 1);
	it = find_email(&r, PLAN_ITEM_DEPART, "c@x.org");
	assert_string_equal(it && it->contact_id ? it->contact_id : "(none)", "cid-c");
	assert_int_equal(r.c.departed, 1);
	assert_int_equal(r.c.unchanged, 1); /* a */
	assert_int_equal(r.c.rejected, 0);
	result_done(&r);
}

/*
 * The key table is sized from the members alone (sync_state is not counted): a mirror export
 * whose segment shrank to a few members of thousands of synced contacts grows the table while
 * loading, and still finds every departure.
 */
static void test_key_table_grows_for_many_departed(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "k1", "k2" };
	struct result r;

	raw_exec(f, "UPDATE exports SET mode = 'mirror';"
		    "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('k1', '{\"email\":\"gone-00007@x.org\"}'), ('k2', '{\"email\":\"k2@x.org\"}');"
		    "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 4999)"
		    "INSERT INTO sync_state (export_id, email, fields_hash) "
		    "SELECT 1, printf('gone-%05d@x.org', i), i FROM g;");
	members(f, 1, pids, 2);
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.selected, 2);
	assert_int_equal(r.c.departed, 4999);
	assert_int_equal(r.c.departed_ours, 4999);
	assert_int_equal(departed(&r, "gone-00007@x.org"), -1);
	assert_int_equal(departed(&r, "gone-04999@x.org"), 1);
	assert_int_equal(find(&r, "k1")->kind, PLAN_ITEM_SEND); /* hash 7 is not its hash */
	assert_false(find(&r, "k1")->is_new);
	assert_true(find(&r, "k2")->is_new);
	result_done(&r);
}

/* ---- snapshot, rewind, options --------------------------------------------------------------- */

static void test_snapshot_isolated_from_upstream_writer(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "a", "b" };
	const struct plan_item *it;
	struct plan *p = NULL;
	sqlite3 *writer;
	struct result r;
	int n = 0;

	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('a', '{\"email\":\"a@x.org\"}'), ('b', '{\"email\":\"b@x.org\"}')");
	members(f, 1, pids, 2);
	assert_int_equal(plan_new(f->s, 1, NULL, &p, f->err, sizeof(f->err)), 0);

	/* The upstream writer replaces membership and rewrites a profile while the plan is
	 * open, the documented way (BEGIN IMMEDIATE, one short transaction). No busy timeout:
	 * the plan must not block it at all. */
	assert_int_equal(sqlite3_open(f->db, &writer), SQLITE_OK);
	assert_int_equal(
		sqlite3_exec(writer,
			     "BEGIN IMMEDIATE;"
			     "INSERT INTO profiles (profile_id, attributes) VALUES "
			     "('c', '{\"email\":\"c@x.org\"}');"
			     "UPDATE profiles SET attributes = '{\"email\":\"new@x.org\"}' "
			     "WHERE profile_id = 'a';"
			     "DELETE FROM segment_members WHERE segment_id = 1;"
			     "INSERT INTO segment_members VALUES (1, 'a'), (1, 'c');"
			     "INSERT INTO upstream_refreshes DEFAULT VALUES;"
			     "COMMIT;",
			     NULL, NULL, NULL),
		SQLITE_OK);
	assert_int_equal(plan_next(p, &it, f->err, sizeof(f->err)), 1);
	assert_string_equal(it->email, "a@x.org");
	/* ...and again in the middle of the stream. */
	assert_int_equal(sqlite3_exec(writer, "DELETE FROM segment_members", NULL, NULL, NULL),
			 SQLITE_OK);
	while (plan_next(p, &it, f->err, sizeof(f->err)) > 0)
		n++;
	assert_int_equal(n, 1);
	assert_int_equal(plan_counters(p)->selected, 2);
	/* A rewind re-reads the same snapshot. */
	assert_int_equal(plan_rewind(p, 0, f->err, sizeof(f->err)), 0);
	collect(f, p, &r);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.items[0].email, "a@x.org");
	assert_string_equal(r.items[1].email, "b@x.org");
	result_done(&r);
	plan_free(p);
	sqlite3_close(writer);

	/* The next plan sees the writer's final state. */
	plan_all(f, NULL, &r);
	assert_int_equal(r.c.selected, 0);
	result_done(&r);
}

static void test_rewind_and_item_mask(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "a", "b", "c", "nope" };
	struct plan_options o = { .items = PLAN_ITEM_REJECT };
	struct plan *p = NULL;
	struct result rej, send, all;

	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('a', '{\"email\":\"a@x.org\"}'), ('b', '{\"email\":\"bad\"}'),"
		    "('c', '{\"email\":\"c@x.org\"}')");
	members(f, 1, pids, 4);
	plan_all(f, NULL, &all);
	assert_int_equal(plan_new(f->s, 1, &o, &p, f->err, sizeof(f->err)), 0);
	collect(f, p, &rej);
	assert_int_equal(plan_rewind(p, PLAN_ITEM_SEND, f->err, sizeof(f->err)), 0);
	collect(f, p, &send);
	plan_free(p);

	assert_int_equal(rej.n, 2);
	assert_int_equal(send.n, 2);
	for (size_t i = 0; i < rej.n; i++)
		assert_int_equal(rej.items[i].kind, PLAN_ITEM_REJECT);
	for (size_t i = 0; i < send.n; i++)
		assert_int_equal(send.items[i].kind, PLAN_ITEM_SEND);
	/* Counters are complete whatever the mask. */
	assert_memory_equal(&rej.c, &all.c, sizeof(all.c));
	assert_memory_equal(&send.c, &all.c, sizeof(all.c));
	/* Members in profile id order, each in place. */
	assert_int_equal(all.n, 4);
	assert_string_equal(all.items[0].pid, "a");
	assert_int_equal(all.items[0].kind, PLAN_ITEM_SEND);
	assert_string_equal(all.items[1].pid, "b");
	assert_int_equal(all.items[1].reason, PLAN_REASON_EMAIL_INVALID);
	assert_string_equal(all.items[2].pid, "c");
	assert_string_equal(all.items[3].pid, "nope");
	assert_int_equal(all.items[3].reason, PLAN_REASON_PROFILE_MISSING);
	result_done(&rej);
	result_done(&send);
	result_done(&all);
}

static void test_mapping_checks(void **state)
{
	struct fixture *f = *state;
	struct plan *p = NULL;

	assert_int_equal(plan_target_max_length("job_title"), 50);
	assert_int_equal(plan_target_max_length("street"), 255);
	assert_int_equal(plan_target_max_length("sms_number"), 16);
	assert_int_equal(plan_target_max_length("cf:loyalty_tier"), 255);
	assert_int_equal(plan_target_max_length("cf:"), -EINVAL);
	assert_int_equal(plan_target_max_length("cf:has space"), -EINVAL);
	assert_int_equal(plan_target_max_length("email"), -EINVAL);
	assert_int_equal(plan_target_max_length("first_name"), -EINVAL);
	assert_int_equal(plan_target_max_length("birthday_day"), -EINVAL);
	assert_int_equal(plan_target_max_length("jobtitle"), -EINVAL);
	assert_int_equal(plan_target_check("last_name", f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "own name field option"));
	assert_int_equal(plan_target_check("jobtitle", f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "'jobtitle' is not a Constant Contact import field"));

	raw_exec(f, "INSERT INTO export_fields VALUES (1, 'shoe_size', 'shoe')");
	assert_int_equal(plan_new(f->s, 1, NULL, &p, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "shoe_size"));
	assert_null(p);
	assert_false(store_in_transaction(f->s)); /* the snapshot was released */
	assert_int_equal(plan_new(f->s, 99, NULL, &p, f->err, sizeof(f->err)), -ENOENT);
	assert_int_equal(store_begin_write(f->s), 0);
	assert_int_equal(plan_new(f->s, 1, NULL, &p, f->err, sizeof(f->err)), -EBUSY);
	assert_int_equal(store_rollback(f->s), 0);
}

static void test_fields_hash_known_answers(void **state)
{
	struct fixture *f = *state;
	static const char *const pids[] = { "k" };
	/* Computed with an independent Python SipHash-2-4 (checked against the reference
	 * vectors of the SipHash paper) over the encoding documented in plan.h. These pin the
	 * persistent format: if they change, every contact is re-sent once. */
	struct plan_field a[] = { { "email", "ann@example.org", 15 },
				  { "first_name", "Ann", 3 },
				  { "cf:tier", "gold", 4 } };
	struct plan_field b[] = { { "email", "b@x.co", 6 },
				  { "job_title", "Ing\xc3\xa9nieur \xe2\x98\x83", 14 } };
	struct result r;

	assert_int_equal(plan_fields_hash(a, 3), 0x7655b933fe8557c6ull);
	assert_int_equal(plan_fields_hash(a, 1), 0x5d504fef29b245aaull);
	assert_int_equal(plan_fields_hash(b, 2), 0x97eb2eedc9541de3ull);

	raw_exec(f, "INSERT INTO export_fields VALUES (1, 'cf:tier', 'tier');"
		    "INSERT INTO profiles (profile_id, attributes) VALUES "
		    "('k', '{\"tier\":\"gold\",\"fn\":\"Ann\",\"email\":\"ANN@example.org\"}')");
	members(f, 1, pids, 1);
	plan_all(f, NULL, &r);
	assert_int_equal(r.items[0].hash, 0x7655b933fe8557c6ull);
	result_done(&r);
}

/* ---- 100,000 profiles ------------------------------------------------------------------------ */

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

enum email_rule { RULE_OK, RULE_NONE, RULE_INVALID, RULE_DUP_OF_PREVIOUS };

static enum email_rule rule_for(int i)
{
	if (i % 250 == 42)
		return RULE_NONE;
	if (i % 100 == 7)
		return RULE_INVALID;
	if (i % 100 == 13)
		return RULE_DUP_OF_PREVIOUS;
	return RULE_OK;
}

static void attributes_for(int i, int generation, char *buf, size_t len)
{
	int fn_version = (generation > 0 && i % 100 == 50) ? 2 : 1;

	switch (rule_for(i)) {
	case RULE_NONE:
		snprintf(buf, len, "{\"fn\":\"F%d\"}", i);
		break;
	case RULE_INVALID:
		snprintf(buf, len, "{\"email\":\"bad-%d\",\"fn\":\"F%d\"}", i, i);
		break;
	case RULE_DUP_OF_PREVIOUS:
		snprintf(buf, len, "{\"email\":\"  USER%d@Example.com\",\"fn\":\"dup\"}", i - 1);
		break;
	default:
		snprintf(buf, len, "{\"email\":\"User%d@Example.com\",\"fn\":\"F%d v%d\",\"x\":%d}",
			 i, i, fn_version, i);
	}
}

static void generate(struct fixture *f, int from, int to, int generation, bool members_too)
{
	sqlite3 *db;
	sqlite3_stmt *ins, *mem;
	char pid[32], attrs[256];

	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "INSERT INTO profiles (profile_id, attributes) VALUES "
					    "(?1, ?2) ON CONFLICT (profile_id) DO UPDATE SET "
					    "attributes = excluded.attributes",
					    -1, &ins, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "INSERT OR IGNORE INTO segment_members VALUES "
					    "(1, ?1)",
					    -1, &mem, NULL),
			 SQLITE_OK);
	for (int i = from; i < to; i++) {
		snprintf(pid, sizeof(pid), "p%06d", i);
		attributes_for(i, generation, attrs, sizeof(attrs));
		sqlite3_bind_text(ins, 1, pid, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 2, attrs, -1, SQLITE_STATIC);
		assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
		sqlite3_reset(ins);
		if (members_too) {
			sqlite3_bind_text(mem, 1, pid, -1, SQLITE_STATIC);
			assert_int_equal(sqlite3_step(mem), SQLITE_DONE);
			sqlite3_reset(mem);
		}
	}
	sqlite3_finalize(ins);
	sqlite3_finalize(mem);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void test_large_plan_correctness(void **state)
{
	struct fixture *f = *state;
	enum { N = 100000, GHOSTS = 500, NEW = 1000 };
	uint64_t missing = 0, invalid = 0, dups = 0, sendable = 0, changed = 0, left = 0;
	struct result r;
	int64_t run;
	size_t sends = 0;

	raw_exec(f, "UPDATE exports SET mode = 'mirror'");
	generate(f, 0, N, 0, true);
	raw_exec(f, "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < 499) "
		    "INSERT INTO segment_members SELECT 2, 'ghost' || i FROM g");
	for (int i = 0; i < N; i++) {
		switch (rule_for(i)) {
		case RULE_NONE:
			missing++;
			break;
		case RULE_INVALID:
			invalid++;
			break;
		case RULE_DUP_OF_PREVIOUS:
			/* Only a duplicate when the previous profile has that email. */
			if (rule_for(i - 1) == RULE_OK)
				dups++;
			else
				sendable++;
			break;
		default:
			sendable++;
		}
	}

	plan_all(f, NULL, &r);
	assert_int_equal(r.c.selected, N + GHOSTS);
	assert_int_equal(r.c.rejected_by_reason[PLAN_REASON_PROFILE_MISSING], GHOSTS);
	assert_int_equal(r.c.rejected_by_reason[PLAN_REASON_EMAIL_MISSING], missing);
	assert_int_equal(r.c.rejected_by_reason[PLAN_REASON_EMAIL_INVALID], invalid);
	assert_int_equal(r.c.rejected_by_reason[PLAN_REASON_DUPLICATE], dups);
	assert_int_equal(r.c.to_send, sendable);
	assert_int_equal(r.c.to_send_new, sendable);
	/* Members come in strictly increasing profile id order; sent emails are unique. */
	{
		const char *last = "";
		char **emails = calloc(r.n, sizeof(*emails));

		for (size_t i = 0; i < r.n; i++) {
			if (r.items[i].kind == PLAN_ITEM_REJECT &&
			    r.items[i].reason == PLAN_REASON_DUPLICATE)
				continue; /* handed out after the members */
			assert_true(strcmp(last, r.items[i].pid) < 0);
			last = r.items[i].pid;
			if (r.items[i].kind == PLAN_ITEM_SEND)
				emails[sends++] = r.items[i].email;
		}
		assert_int_equal(sends, sendable);
		qsort(emails, sends, sizeof(*emails), str_cmp);
		for (size_t i = 1; i < sends; i++)
			assert_true(strcmp(emails[i - 1], emails[i]) < 0);
		free(emails);
	}
	/* Confirm in batches of 40,000, as the executor would. */
	run = 0;
	for (size_t first = 0, batch = 1; first < sends; first += 40000, batch++)
		run = confirm_sends(f, &r, run, (int64_t)batch, first, 40000);
	finish_run(f, run);
	result_done(&r);

	/* Upstream churn: 1% changed, 0.5% left the segment, 1,000 new profiles. */
	generate(f, 0, N, 1, false);
	raw_exec(f, "DELETE FROM segment_members WHERE segment_id = 1 AND "
		    "CAST(substr(profile_id, 2) AS INTEGER) % 200 = 99");
	generate(f, N, N + NEW, 0, true);
	for (int i = 0; i < N; i++) {
		bool sent_before = rule_for(i) == RULE_OK || (rule_for(i) == RULE_DUP_OF_PREVIOUS &&
							      rule_for(i - 1) != RULE_OK);

		if (!sent_before)
			continue;
		if (i % 200 == 99)
			left++;
		else if (i % 100 == 50 && rule_for(i) == RULE_OK)
			changed++;
	}
	{
		uint64_t new_sendable = 0;

		for (int i = N; i < N + NEW; i++)
			if (rule_for(i) == RULE_OK ||
			    (rule_for(i) == RULE_DUP_OF_PREVIOUS && rule_for(i - 1) != RULE_OK))
				new_sendable++;
		plan_all(f, NULL, &r);
		assert_int_equal(r.c.to_send, changed + new_sendable);
		assert_int_equal(r.c.to_send_new, new_sendable);
		assert_int_equal(r.c.unchanged, sendable - changed - left);
		assert_int_equal(r.c.departed_ours, left);
		assert_int_equal(r.c.departed_not_ours, 0);
	}
	result_done(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sends_new_contacts_with_mapping, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_value_mapping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_every_rejection_reason, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dedup_is_deterministic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_members_of_all_segments_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_diff_against_sync_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_previously_rejected_until_changed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_resume_counts_confirmed_as_sent, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_mirror_departed_set, setup, teardown),
		cmocka_unit_test_setup_teardown(test_string_runs_and_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_each_mapped_field_change_is_sent, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_join_leave_and_dedup_winner_change, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_key_table_grows_for_many_departed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_isolated_from_upstream_writer, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rewind_and_item_mask, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mapping_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fields_hash_known_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_plan_correctness, setup, teardown),
	};
	return cmocka_run_group_tests_name("plan", tests, NULL, NULL);
}
