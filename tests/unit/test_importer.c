/* SPDX-License-Identifier: MIT */
/*
 * The streaming importer on real SQLite files: RFC 4180 CSV and JSON Lines, any chunking, every
 * documented error with its line (and column), all-or-nothing, segment membership replacement,
 * and no lock on the main database while the input streams in.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <cmocka.h>

#include "importer.h"
#include "store-internal.h"
#include "store.h"
#include "test-db.h"
#include "test-fixture.h"
#include "test-helpers.h"

static void raw_exec(struct store_fixture *f, const char *sql)
{
	test_db_exec(f->db, sql);
}

static int64_t raw_int(struct store_fixture *f, const char *sql)
{
	return test_db_int64(f->db, sql);
}

/* The attribute document of a profile, or "(none)". Static buffer: one use per statement. */
static const char *attributes(struct store_fixture *f, const char *pid)
{
	static char buf[4096];
	sqlite3 *db;
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT attributes FROM profiles WHERE "
					    "profile_id = ?1",
					    -1, &st, NULL),
			 SQLITE_OK);
	sqlite3_bind_text(st, 1, pid, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		snprintf(buf, sizeof(buf), "%s", sqlite3_column_text(st, 0));
	else
		snprintf(buf, sizeof(buf), "(none)");
	sqlite3_finalize(st);
	sqlite3_close(db);
	return buf;
}

/* Rows left in this connection's staging table (a TEMP table: only visible from f->s). */
static int64_t staged(struct store_fixture *f)
{
	sqlite3_stmt *st = store_prepare(f->s, "SELECT count(*) FROM temp.ccsync_import_staging");
	int64_t n;

	if (!st)
		return 0; /* never created */
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	n = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return n;
}

static int setup(void **state)
{
	store_fixture_setup(state);
	raw_exec(*state, "INSERT INTO profiles (profile_id, attributes) VALUES "
			 "('keep', '{\"email\":\"keep@x.org\"}')");
	return 0;
}

/* Runs a whole import, feeding len bytes in chunks of chunk (0: all at once). */
static int import(struct store_fixture *f, const struct importer_options *o, const char *in,
		  size_t len, size_t chunk, struct importer_result *res)
{
	struct importer *im = NULL;
	int r;

	f->err[0] = '\0';
	r = importer_new(f->s, o, &im, f->err, sizeof(f->err));
	if (r < 0)
		return r;
	if (chunk == 0)
		chunk = len ? len : 1;
	for (size_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;

		r = importer_feed(im, in + off, n, f->err, sizeof(f->err));
		if (r < 0)
			break;
	}
	if (r >= 0)
		r = importer_finish(im, res, f->err, sizeof(f->err));
	importer_free(im);
	assert_false(store_in_transaction(f->s));
	return r;
}

static const struct importer_options csv_profiles = { IMPORTER_PROFILES, IMPORTER_CSV, NULL, NULL };
static const struct importer_options jsonl_profiles = { IMPORTER_PROFILES, IMPORTER_JSONL, NULL,
							NULL };

/* ---- CSV ------------------------------------------------------------------------------------- */

static const char csv_sample[] = "\xef\xbb\xbfprofile_id,email,note,city\r\n"
				 "p1,ann@x.org,\"Hello, \"\"world\"\"\",Rome\r\n"
				 "\r\n"
				 "p2,bob@x.org,\"two\nlines\",\r\n"
				 "p3,\"\",plain,\"Mil\xc3\xa1n\"";

static void check_sample(struct store_fixture *f)
{
	assert_string_equal(attributes(f, "p1"),
			    "{\"email\":\"ann@x.org\",\"note\":\"Hello, \\\"world\\\"\","
			    "\"city\":\"Rome\"}");
	assert_string_equal(attributes(f, "p2"),
			    "{\"email\":\"bob@x.org\",\"note\":\"two\\nlines\"}");
	assert_string_equal(attributes(f, "p3"), "{\"note\":\"plain\",\"city\":\"Mil\xc3\xa1n\"}");
}

static void test_csv_profiles(void **state)
{
	struct store_fixture *f = *state;
	struct importer_result res = {};

	assert_int_equal(import(f, &csv_profiles, csv_sample, sizeof(csv_sample) - 1, 0, &res), 0);
	assert_int_equal(res.rows, 3);
	assert_int_equal(res.inserted, 3);
	assert_int_equal(res.updated, 0);
	check_sample(f);
	assert_string_equal(attributes(f, "keep"), "{\"email\":\"keep@x.org\"}");
	assert_int_equal(staged(f), 0);

	/* Re-import: each listed profile's document is replaced as a whole. */
	static const char again[] = "profile_id,email\np1,new@x.org\np9,nine@x.org\n";
	assert_int_equal(import(f, &csv_profiles, again, sizeof(again) - 1, 0, &res), 0);
	assert_int_equal(res.inserted, 1);
	assert_int_equal(res.updated, 1);
	assert_string_equal(attributes(f, "p1"), "{\"email\":\"new@x.org\"}");
	assert_int_equal(raw_int(f, "SELECT count(*) FROM profiles"), 5);
}

static void test_csv_any_chunking(void **state)
{
	struct store_fixture *f = *state;
	struct importer_result res = {};
	static const size_t chunks[] = { 1, 2, 3, 7, 64 };

	/* Chunk boundaries fall inside the BOM, a CRLF, quotes and a UTF-8 sequence. */
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
		raw_exec(f, "DELETE FROM profiles WHERE profile_id <> 'keep'");
		assert_int_equal(import(f, &csv_profiles, csv_sample, sizeof(csv_sample) - 1,
					chunks[i], &res),
				 0);
		assert_int_equal(res.rows, 3);
		check_sample(f);
	}
}

static void test_csv_id_column_option(void **state)
{
	struct store_fixture *f = *state;
	struct importer_options o = { IMPORTER_PROFILES, IMPORTER_CSV, "customer", NULL };
	static const char in[] = "email,customer,profile_id\na@x.org,c-1,ignored\n";
	struct importer_result res = {};

	assert_int_equal(import(f, &o, in, sizeof(in) - 1, 0, &res), 0);
	/* Another column that happens to be called profile_id is just an attribute. */
	assert_string_equal(attributes(f, "c-1"),
			    "{\"email\":\"a@x.org\",\"profile_id\":\"ignored\"}");
}

struct bad_case {
	const char *input;
	size_t len; /* 0: strlen */
	const char *error;
};

static void expect_failures(struct store_fixture *f, const struct importer_options *o,
			    const struct bad_case *cases, size_t n)
{
	int64_t before = raw_int(f, "SELECT count(*) FROM profiles");

	for (size_t i = 0; i < n; i++) {
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].input);
		struct importer_result res = {};

		/* Whole, then byte by byte (big inputs in pages: the same code paths). */
		for (size_t pass = 0; pass <= 1; pass++) {
			size_t chunk = pass == 0 ? 0 : len < 4096 ? 1 : 4096;
			int r = import(f, o, cases[i].input, len, chunk, &res);

			if (r != -EINVAL || !strstr(f->err, cases[i].error))
				fail_msg("case %zu (chunk %zu): r=%d, error '%s', expected '%s'", i,
					 chunk, r, f->err, cases[i].error);
			assert_int_equal(raw_int(f, "SELECT count(*) FROM profiles"), before);
			assert_int_equal(staged(f), 0);
		}
	}
}

static void test_csv_errors_name_the_line(void **state)
{
	struct store_fixture *f = *state;
	static char long_id[400], long_name[300];
	const struct bad_case cases[] = {
		{ "profile_id,a\np1,x\np2,y,z\n", 0,
		  "line 3: 3 fields, but the header has 2 columns" },
		{ "profile_id,a\np1,\"x\ny\"\np2,b,c\n", 0, "line 4: 3 fields" },
		{ "profile_id,a\np1\n", 0, "line 2: 1 fields, but the header has 2" },
		{ "profile_id,a\np1,ab\"c\n", 0,
		  "line 2, column 2 (a): a quote inside an unquoted field" },
		{ "profile_id,a\np1,\"ab\"c\n", 0,
		  "line 2, column 2 (a): text after the closing quote" },
		{ "profile_id,a\np1,\"abc\np2,x\n", 0,
		  "a quoted field starting on line 2 is never closed" },
		{ "profile_id,a\rp1,x\n", 0,
		  "line 1: a carriage return not followed by a line feed" },
		{ "profile_id,a\np1,\xff\n", 0,
		  "line 2, column 2 (a): the value is not valid UTF-8" },
		{ "profile_id,a\np1,\xc0\xaf\n", 0, "not valid UTF-8" },     /* overlong '/' */
		{ "profile_id,a\np1,\xed\xa0\x80\n", 0, "not valid UTF-8" }, /* a surrogate */
		{ "profile_id,a\np1,x\0y\n", 20, "line 2: a NUL byte" },
		{ "profile_id\np1\np2\np1\n", 0,
		  "line 4: profile id 'p1' already appeared on line 2" },
		{ "profile_id,a,a\np1,x,y\n", 0, "column 'a' appears twice" },
		{ "id,a\n1,x\n", 0, "the header has no 'profile_id' column" },
		{ "", 0, "the input is empty" },
		{ "\xef\xbb\xbf", 0, "the input is empty" },
		/* A partial BOM is just bytes: here a header naming one column badly. */
		{ "\xef\xbb", 0, "line 1, column 1: the column name is not valid UTF-8" },
		{ "\n\n", 0, "the input is empty" },
		{ "profile_id,a\n", 0, "the input has a header but no rows" },
		{ "profile_id,a\n,x\n", 0,
		  "line 2, column 1 (profile_id): the profile id is empty" },
		{ long_id, 0, "at most 256 are allowed" },
		{ "profile_id,,a\np,x,y\n", 0, "a column in the header has no name" },
		{ long_name, 0, "longer than 200 bytes" },
	};

	snprintf(long_id, sizeof(long_id), "profile_id\n%0257d\n", 0);
	snprintf(long_name, sizeof(long_name), "profile_id,%0201d\np,x\n", 0);
	expect_failures(f, &csv_profiles, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_csv_limits(void **state)
{
	struct store_fixture *f = *state;
	size_t big = 2 * 1024 * 1024;
	char *in = malloc(big);
	struct importer_result res = {};
	size_t n;

	/* A value over 64 KiB. */
	n = (size_t)snprintf(in, big, "profile_id,a\np1,");
	memset(in + n, 'v', 70000);
	n += 70000;
	in[n++] = '\n';
	assert_int_equal(import(f, &csv_profiles, in, n, 0, &res), -EINVAL);
	assert_non_null(strstr(f->err, "line 2, column 2 (a): the value is longer than 64 KiB"));

	/* More than 1,000 columns. */
	n = (size_t)snprintf(in, big, "profile_id");
	for (int i = 0; i < 1000; i++)
		n += (size_t)snprintf(in + n, big - n, ",c%d", i);
	in[n++] = '\n';
	assert_int_equal(import(f, &csv_profiles, in, n, 0, &res), -EINVAL);
	assert_non_null(strstr(f->err, "line 1: more than 1000 fields"));

	/* A row over 1 MiB made of values under the value limit. */
	n = (size_t)snprintf(in, big, "profile_id");
	for (int i = 0; i < 20; i++)
		n += (size_t)snprintf(in + n, big - n, ",c%d", i);
	n += (size_t)snprintf(in + n, big - n, "\np1");
	for (int i = 0; i < 20; i++) {
		in[n++] = ',';
		memset(in + n, 'w', 60000);
		n += 60000;
	}
	in[n++] = '\n';
	assert_int_equal(import(f, &csv_profiles, in, n, 4096, &res), -EINVAL);
	assert_non_null(strstr(f->err, "line 2: the row is longer than 1 MiB"));
	assert_int_equal(raw_int(f, "SELECT count(*) FROM profiles"), 1);
	free(in);
}

static void test_all_or_nothing_and_sticky_error(void **state)
{
	struct store_fixture *f = *state;
	struct importer *im = NULL;
	char *in = malloc(64 * 1024), err2[1024];
	size_t n = (size_t)snprintf(in, 64 * 1024, "profile_id,email\nkeep,changed@x.org\n");
	struct importer_result res = {};

	for (int i = 0; i < 1000; i++)
		n += (size_t)snprintf(in + n, 64 * 1024 - n, "n%04d,n%d@x.org\n", i, i);
	n += (size_t)snprintf(in + n, 64 * 1024 - n, "bad,\"unterminated\n");

	assert_int_equal(importer_new(f->s, &csv_profiles, &im, f->err, sizeof(f->err)), 0);
	/* 1,000 good rows are staged... */
	assert_int_equal(importer_feed(im, in, n - 20, f->err, sizeof(f->err)), 0);
	assert_true(staged(f) > 900);
	assert_int_equal(importer_feed(im, in + n - 20, 20, f->err, sizeof(f->err)), 0);
	/* ...and the last one fails at the end: nothing at all is imported. */
	assert_int_equal(importer_finish(im, &res, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "line 1003"));
	assert_int_equal(staged(f), 0);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM profiles"), 1);
	assert_string_equal(attributes(f, "keep"), "{\"email\":\"keep@x.org\"}");
	/* Every later call repeats the same error. */
	assert_int_equal(importer_feed(im, "x\n", 2, err2, sizeof(err2)), -EINVAL);
	assert_string_equal(err2, f->err);
	assert_int_equal(importer_finish(im, &res, err2, sizeof(err2)), -EINVAL);
	assert_string_equal(err2, f->err);
	importer_free(im);
	free(in);
}

/* ---- JSON Lines ------------------------------------------------------------------------------ */

static void test_jsonl_profiles(void **state)
{
	struct store_fixture *f = *state;
	static const char in[] =
		"{\"profile_id\":\"p1\", \"n\": 0.1, \"big\": 12345678901234567890, "
		"\"nested\": {\"a\": [1, 2]}, \"t\": true, \"z\": null, \"s\": \"caf\\u00e9\"}\r\n"
		"\n"
		"   \n"
		"{\"email\":\"x@y.org\",\"profile_id\":42}\n"
		"{\"profile_id\":\"only\"}";
	struct importer_result res = {};

	for (size_t chunk = 0; chunk <= 5; chunk += 5) {
		raw_exec(f, "DELETE FROM profiles WHERE profile_id <> 'keep'");
		assert_int_equal(import(f, &jsonl_profiles, in, sizeof(in) - 1, chunk, &res), 0);
		assert_int_equal(res.rows, 3);
		/* Numbers stay exactly as written; the id member is removed. */
		assert_string_equal(
			attributes(f, "p1"),
			"{\"n\":0.1,\"big\":12345678901234567890,\"nested\":{\"a\":[1,2]},"
			"\"t\":true,\"z\":null,\"s\":\"caf\\u00e9\"}");
		assert_string_equal(attributes(f, "42"), "{\"email\":\"x@y.org\"}");
		assert_string_equal(attributes(f, "only"), "{}");
	}
}

static void test_jsonl_errors(void **state)
{
	struct store_fixture *f = *state;
	static char too_long[1100000];
	const struct bad_case cases[] = {
		{ "[1,2]\n", 0, "line 1: a JSON object is expected" },
		{ "{\"profile_id\":\"a\"}\n{\"profile_id\":\n", 0, "line 2, column" },
		{ "{\"profile_id\":\"a\",\"k\":1,\"k\":2}\n", 0, "line 1, column" },
		{ "{\"email\":\"a@b.co\"}\n", 0, "line 1: the object has no 'profile_id' member" },
		{ "{\"profile_id\":1.5}\n", 0, "must be a string or an integer" },
		{ "{\"profile_id\":true}\n", 0, "must be a string or an integer" },
		{ "{\"profile_id\":\"\"}\n", 0, "line 1: the profile id is empty" },
		{ "{\"profile_id\":\"a\"}\n{\"profile_id\":\"b\",\"v\":\"\xff\"}\n", 0,
		  "line 2, column 24: invalid UTF-8" },
		{ "{\"profile_id\":\"a\",\"v\":\"x\0\"}\n", 27, "line 1: a NUL byte" },
		{ "{\"profile_id\":\"a\",\"v\":\"\\u0000\"}\n", 0, "line 1, column" },
		{ "{\"profile_id\":\"a\"}\n{\"profile_id\":\"a\"}\n", 0,
		  "line 2: profile id 'a' already appeared on line 1" },
		{ "{\"profile_id\":\"a\",\"\":1}\n", 0, "attribute names must be 1 to 200 bytes" },
		{ "\n  \n", 0, "the input is empty" },
		{ too_long, 0, "line 1 is longer than 1 MiB" },
	};

	memset(too_long, ' ', sizeof(too_long) - 2);
	too_long[0] = '{';
	too_long[sizeof(too_long) - 2] = '}';
	expect_failures(f, &jsonl_profiles, cases, sizeof(cases) / sizeof(cases[0]));
}

/* ---- segments -------------------------------------------------------------------------------- */

static void test_segment_import_replaces_membership(void **state)
{
	struct store_fixture *f = *state;
	struct importer_options o = { IMPORTER_SEGMENT, IMPORTER_CSV, NULL, "vip" };
	struct importer_result res = {};
	static const char csv[] = "name,profile_id\nx,b\ny,c\nz,ghost\n";
	static const char bad[] = "profile_id\nb\nb\n";
	static const char jsonl[] = "{\"profile_id\":\"a\",\"extra\":[1]}\n{\"profile_id\":7}\n";

	raw_exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES ('a', '{}'), ('b', '{}'),"
		    "('c', '{}');"
		    "INSERT INTO segments (segment_id, name) VALUES (5, 'vip');"
		    "INSERT INTO segment_members VALUES (5, 'a'), (5, 'b');");
	assert_int_equal(import(f, &o, csv, sizeof(csv) - 1, 0, &res), 0);
	assert_int_equal(res.segment_id, 5);
	assert_false(res.segment_created);
	assert_int_equal(res.rows, 3);
	assert_int_equal(res.previous_members, 2);
	assert_int_equal(res.without_profile, 1);
	assert_int_equal(raw_int(f, "SELECT group_concat(profile_id, ',') = 'b,c,ghost' FROM "
				    "(SELECT profile_id FROM segment_members WHERE segment_id = 5 "
				    "ORDER BY profile_id)"),
			 1);
	/* Profiles are untouched by a segment import. */
	assert_string_equal(attributes(f, "b"), "{}");

	/* A failing segment import leaves the old membership as it was. */
	assert_int_equal(import(f, &o, bad, sizeof(bad) - 1, 0, &res), -EINVAL);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM segment_members WHERE segment_id = 5"),
			 3);

	o = (struct importer_options){ IMPORTER_SEGMENT, IMPORTER_JSONL, NULL, "brand new" };
	assert_int_equal(import(f, &o, jsonl, sizeof(jsonl) - 1, 3, &res), 0);
	assert_true(res.segment_created);
	assert_int_equal(res.without_profile, 1); /* "7" */
	assert_int_equal(raw_int(f, "SELECT count(*) FROM segment_members m JOIN segments s USING "
				    "(segment_id) WHERE s.name = 'brand new'"),
			 2);
}

static void test_options_checked(void **state)
{
	struct store_fixture *f = *state;
	struct importer *im = NULL;
	char name[300];
	struct importer_options o = { IMPORTER_SEGMENT, IMPORTER_CSV, NULL, NULL };

	assert_int_equal(importer_new(f->s, &o, &im, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "segment name"));
	memset(name, 's', 201);
	name[201] = 0;
	o.segment_name = name;
	assert_int_equal(importer_new(f->s, &o, &im, f->err, sizeof(f->err)), -EINVAL);
	o = (struct importer_options){ IMPORTER_PROFILES, IMPORTER_CSV, "a\"b", NULL };
	assert_int_equal(importer_new(f->s, &o, &im, f->err, sizeof(f->err)), -EINVAL);
	o = (struct importer_options){ IMPORTER_PROFILES, IMPORTER_CSV, "", NULL };
	assert_int_equal(importer_new(f->s, &o, &im, f->err, sizeof(f->err)), -EINVAL);
	o = (struct importer_options){ 7, IMPORTER_CSV, NULL, NULL };
	assert_int_equal(importer_new(f->s, &o, &im, f->err, sizeof(f->err)), -EINVAL);
	assert_null(im);
}

static void test_streaming_takes_no_database_lock(void **state)
{
	struct store_fixture *f = *state;
	struct importer *im = NULL;
	struct importer_result res = {};
	sqlite3 *writer;

	assert_int_equal(importer_new(f->s, &csv_profiles, &im, f->err, sizeof(f->err)), 0);
	assert_int_equal(
		importer_feed(im, "profile_id,email\nu1,a@x.org\n", 28, f->err, sizeof(f->err)), 0);
	/* Between chunks the upstream writer (no busy timeout) writes freely. */
	assert_int_equal(sqlite3_open(f->db, &writer), SQLITE_OK);
	assert_int_equal(
		sqlite3_exec(writer,
			     "BEGIN IMMEDIATE; INSERT INTO profiles (profile_id, attributes) "
			     "VALUES ('w', '{}'); COMMIT;",
			     NULL, NULL, NULL),
		SQLITE_OK);
	assert_int_equal(importer_feed(im, "u2,b@x.org\n", 11, f->err, sizeof(f->err)), 0);
	assert_int_equal(importer_finish(im, &res, f->err, sizeof(f->err)), 0);
	assert_int_equal(res.inserted, 2);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM profiles"), 4);
	/* After finishing, feeding is an error. */
	assert_int_equal(importer_feed(im, "x", 1, f->err, sizeof(f->err)), -EINVAL);
	importer_free(im);
	sqlite3_close(writer);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_csv_profiles, setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_csv_any_chunking,
						setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_csv_id_column_option,
						setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_csv_errors_name_the_line,
						setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_csv_limits, setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_all_or_nothing_and_sticky_error, setup,
						store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_jsonl_profiles, setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_jsonl_errors, setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_segment_import_replaces_membership, setup,
						store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_options_checked,
						setup, store_fixture_teardown),
		cmocka_unit_test_setup_teardown(test_streaming_takes_no_database_lock, setup,
						store_fixture_teardown),
	};
	return cmocka_run_group_tests_name("importer", tests, NULL, NULL);
}
