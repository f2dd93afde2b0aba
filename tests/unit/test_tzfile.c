/* SPDX-License-Identifier: MIT */
/*
 * tzfile: TZif parsing (real tzdata files, hand-built files, every kind of corruption), zone
 * name validation, UTC <-> local conversion around real DST changes, and a cross-check of
 * offsets, DST flags and abbreviations against glibc for a set of awkward zones.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "test-helpers.h"
#include "tzfile.h"

#define ZONEINFO "/usr/share/zoneinfo"

static int64_t utc(int y, int mo, int d, int h, int mi, int s)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
			 .tm_hour = h, .tm_min = mi, .tm_sec = s };

	return (int64_t)timegm(&tm);
}

static struct tm wall(int y, int mo, int d, int h, int mi)
{
	return (struct tm){ .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
			    .tm_hour = h, .tm_min = mi };
}

static struct tz *load(const char *name)
{
	struct tz *tz = NULL;
	char err[256] = "";
	int r = tzfile_load(name, NULL, &tz, err, sizeof(err));

	if (r < 0)
		fail_msg("tzfile_load(%s): %d %s", name, r, err);
	return tz;
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, cap, f);
	fclose(f);
	assert_true(n > 0 && n < cap);
	return n;
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* --- A TZif writer for hand-made files ------------------------------------------------------ */

struct ttype {
	int32_t offset;
	uint8_t is_dst;
	uint8_t abbr;
};

struct tzif_spec {
	char version;			/* 0 for version 1, else '2', '3', ... */
	size_t n_times;
	const int64_t *times;
	const uint8_t *idx;
	size_t n_types;
	const struct ttype *types;
	const char *chars;		/* abbreviations, NUL-separated */
	size_t n_chars;
	uint32_t leapcnt;		/* written as zero-filled records */
	const char *footer;		/* NULL: none at all */
};

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	return put32(put32(p, (uint32_t)(v >> 32)), (uint32_t)v);
}

static uint8_t *put_block(uint8_t *p, const struct tzif_spec *s, int time_size)
{
	memcpy(p, "TZif", 4);
	p[4] = (uint8_t)s->version;
	memset(p + 5, 0, 15);
	p = put32(p + 20, 0);			/* isutcnt */
	p = put32(p, 0);			/* isstdcnt */
	p = put32(p, s->leapcnt);
	p = put32(p, (uint32_t)s->n_times);
	p = put32(p, (uint32_t)s->n_types);
	p = put32(p, (uint32_t)s->n_chars);
	for (size_t i = 0; i < s->n_times; i++)
		p = time_size == 8 ? put64(p, (uint64_t)s->times[i])
				   : put32(p, (uint32_t)(int32_t)s->times[i]);
	for (size_t i = 0; i < s->n_times; i++)
		*p++ = s->idx[i];
	for (size_t i = 0; i < s->n_types; i++) {
		p = put32(p, (uint32_t)s->types[i].offset);
		*p++ = s->types[i].is_dst;
		*p++ = s->types[i].abbr;
	}
	memcpy(p, s->chars, s->n_chars);
	p += s->n_chars;
	memset(p, 0, s->leapcnt * (size_t)(time_size + 4));
	p += s->leapcnt * (size_t)(time_size + 4);
	return p;
}

static size_t build_tzif(const struct tzif_spec *s, uint8_t *buf)
{
	uint8_t *p = put_block(buf, s, 4);

	if (s->version != 0) {
		p = put_block(p, s, 8);
		if (s->footer)
			p += sprintf((char *)p, "\n%s\n", s->footer);
	}
	return (size_t)(p - buf);
}

/* Rome-like: CET/CEST with one transition each way in 2026 and the real footer rule. */
static const int64_t rome_times[] = { 1774746000 /* 2026-03-29T01:00Z */,
				      1792890000 /* 2026-10-25T01:00Z */ };
static const uint8_t rome_idx[] = { 1, 0 };
static const struct ttype rome_types[] = { { 3600, 0, 0 }, { 7200, 1, 4 } };

static struct tzif_spec rome_spec(void)
{
	return (struct tzif_spec){
		.version = '2', .n_times = 2, .times = rome_times, .idx = rome_idx,
		.n_types = 2, .types = rome_types, .chars = "CET\0CEST", .n_chars = 9,
		.footer = "CET-1CEST,M3.5.0,M10.5.0/3",
	};
}

static int parse(const uint8_t *buf, size_t len, struct tz **ret, char *err, size_t errlen)
{
	return tzfile_parse_buffer(buf, len, "test", ret, err, errlen);
}

/* --- Tests ------------------------------------------------------------------------------------ */

static void test_utc_builtin(void **state)
{
	struct tz *tz = NULL;
	struct tm tm;
	int32_t off = -1;
	char err[128] = "";

	/* Works even where the zone directory does not exist. */
	assert_int_equal(tzfile_load("UTC", "/nonexistent", &tz, err, sizeof(err)), 0);
	assert_string_equal(tzfile_name(tz), "UTC");
	assert_int_equal(tzfile_utc_offset(tz, utc(2026, 7, 1, 12, 0, 0), &off), 0);
	assert_int_equal(off, 0);
	assert_int_equal(tzfile_utc_to_local(tz, utc(2026, 3, 29, 2, 30, 15), &tm), 0);
	assert_int_equal(tm.tm_year, 126);
	assert_int_equal(tm.tm_mon, 2);
	assert_int_equal(tm.tm_mday, 29);
	assert_int_equal(tm.tm_hour, 2);
	assert_int_equal(tm.tm_min, 30);
	assert_int_equal(tm.tm_sec, 15);
	assert_int_equal(tm.tm_wday, 0);
	assert_int_equal(tm.tm_yday, 87);
	assert_int_equal(tm.tm_isdst, 0);
	assert_string_equal(tm.tm_zone, "UTC");
	tzfile_free(tz);

	assert_int_equal(tzfile_load("Etc/UTC", "/nonexistent", &tz, err, sizeof(err)), 0);
	assert_int_equal(tzfile_utc_offset(tz, 0, &off), 0);
	assert_int_equal(off, 0);
	tzfile_free(tz);
	tzfile_free(NULL);
}

static void test_bad_names(void **state)
{
	static const struct {
		const char *name;
		const char *fragment;
	} cases[] = {
		{ "", "empty time zone name" },
		{ "/etc/passwd", "relative path" },
		{ "../etc/passwd", "may only contain" },
		{ "Europe/../../etc/shadow", "may only contain" },
		{ "Europe/./Rome", "may only contain" },
		{ "Europe//Rome", "empty components" },
		{ "Europe/Rome/", "empty components" },
		{ "Europe Rome", "may only contain" },
		{ "Europe\\Rome", "may only contain" },
		{ "Europe/Rome\n", "may only contain" },
		{ "Ünïcode", "may only contain" },
	};
	char longname[TZ_NAME_MAX + 2], err[256];
	struct tz *tz = NULL;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		assert_int_equal(tzfile_load(cases[i].name, NULL, &tz, err, sizeof(err)), -EINVAL);
		if (!strstr(err, cases[i].fragment))
			fail_msg("name \"%s\": message \"%s\" lacks \"%s\"", cases[i].name, err,
				 cases[i].fragment);
		assert_null(tz);
		/* Never echo raw control characters into a log line. */
		assert_null(strchr(err, '\n'));
	}
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(tzfile_load(longname, NULL, &tz, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "longer than 255"));
	assert_int_equal(tzfile_load(NULL, NULL, &tz, err, sizeof(err)), -EINVAL);
	/* A NULL or tiny error buffer is fine. */
	assert_int_equal(tzfile_load("", NULL, &tz, NULL, 0), -EINVAL);
	assert_int_equal(tzfile_load("", NULL, &tz, err, 1), -EINVAL);
	assert_string_equal(err, "");
}

static void test_missing_and_not_a_zone(void **state)
{
	struct tz *tz = NULL;
	char err[512];
	struct tmpdir t;
	char path[PATH_MAX];

	assert_int_equal(tzfile_load("Nowhere/Atlantis", NULL, &tz, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "unknown time zone \"Nowhere/Atlantis\""));
	assert_int_equal(tzfile_load("Europe/Rome", "/nonexistent", &tz, err, sizeof(err)),
			 -ENOENT);
	/* A file standing where a directory component should be. */
	assert_int_equal(tzfile_load("Asia/Kathmandu/x", NULL, &tz, err, sizeof(err)), -ENOENT);
	assert_int_equal(tzfile_load("Europe", NULL, &tz, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "region directory"));
	assert_null(tz);

	tmpdir_make(&t);
	tmpdir_file(&t, "Fifo", path, sizeof(path));
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(tzfile_load("Fifo", t.path, &tz, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a regular file"));
	tmpdir_remove(&t);
}

static void test_zoneinfo_dir_override(void **state)
{
	uint8_t buf[512];
	struct tzif_spec s = rome_spec();
	size_t len = build_tzif(&s, buf);
	struct tmpdir t;
	char path[PATH_MAX], err[256];
	struct tz *tz = NULL;
	int32_t off;

	tmpdir_make(&t);
	tmpdir_file(&t, "Test", path, sizeof(path));
	assert_int_equal(mkdir(path, 0700), 0);
	tmpdir_file(&t, "Test/Ro_me-1+x", path, sizeof(path));
	write_file(path, buf, len);
	assert_int_equal(tzfile_load("Test/Ro_me-1+x", t.path, &tz, err, sizeof(err)), 0);
	assert_string_equal(tzfile_name(tz), "Test/Ro_me-1+x");
	assert_int_equal(tzfile_utc_offset(tz, rome_times[0], &off), 0);
	assert_int_equal(off, 7200);
	tzfile_free(tz);

	/* Too large: the first TZ_FILE_MAX bytes would parse; the excess must not be ignored. */
	{
		uint8_t *big = calloc(1, TZ_FILE_MAX + 1);

		assert_non_null(big);
		memcpy(big, buf, len);
		write_file(path, big, TZ_FILE_MAX + 1);
		free(big);
	}
	assert_int_equal(tzfile_load("Test/Ro_me-1+x", t.path, &tz, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "too large"));
	tmpdir_remove(&t);
}

static void test_builtin_file_layouts(void **state)
{
	uint8_t buf[1024];
	struct tzif_spec s = rome_spec();
	struct tz *tz = NULL;
	struct tm tm;
	int32_t off;
	char err[256];
	size_t len;

	/* Version 1: 32-bit times only, no footer; the last type holds forever. */
	s.version = 0;
	len = build_tzif(&s, buf);
	assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), 0);
	assert_int_equal(tzfile_utc_offset(tz, utc(2040, 7, 1, 0, 0, 0), &off), 0);
	assert_int_equal(off, 3600);
	assert_int_equal(tzfile_utc_offset(tz, utc(2026, 7, 1, 0, 0, 0), &off), 0);
	assert_int_equal(off, 7200);
	/* Before the first transition: type 0. */
	assert_int_equal(tzfile_utc_offset(tz, utc(1900, 1, 1, 0, 0, 0), &off), 0);
	assert_int_equal(off, 3600);
	tzfile_free(tz);

	/* Version 3 with the footer: beyond the last transition the rule decides. */
	s = rome_spec();
	s.version = '3';
	len = build_tzif(&s, buf);
	assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), 0);
	assert_int_equal(tzfile_utc_to_local(tz, utc(2040, 7, 1, 0, 0, 0), &tm), 0);
	assert_int_equal(tm.tm_gmtoff, 7200);
	assert_int_equal(tm.tm_isdst, 1);
	assert_string_equal(tm.tm_zone, "CEST");
	assert_int_equal(tzfile_utc_to_local(tz, utc(2040, 12, 1, 0, 0, 0), &tm), 0);
	assert_int_equal(tm.tm_gmtoff, 3600);
	assert_string_equal(tm.tm_zone, "CET");
	tzfile_free(tz);

	/* An empty footer: no rule, the last transition's type holds. */
	s.footer = "";
	len = build_tzif(&s, buf);
	assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), 0);
	assert_int_equal(tzfile_utc_offset(tz, utc(2040, 7, 1, 0, 0, 0), &off), 0);
	assert_int_equal(off, 3600);
	tzfile_free(tz);

	/* Permanent DST spelled as a rule (RFC 8536 section 3.3.1). */
	s = rome_spec();
	s.n_times = 0;
	s.footer = "EST5EDT,0/0,J365/25";
	len = build_tzif(&s, buf);
	assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), 0);
	for (int m = 1; m <= 12; m++) {
		assert_int_equal(tzfile_utc_offset(tz, utc(2030, m, 1, 0, 0, 0), &off), 0);
		assert_int_equal(off, -4 * 3600);
	}
	tzfile_free(tz);

	/* Extended rule times: negative and beyond 24 h (RFC 8536), as America/Nuuk uses. */
	s.footer = "<-02>2<-01>,M3.5.0/-1,M10.5.0/0";
	len = build_tzif(&s, buf);
	assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), 0);
	/* 2030-03-31 is the last Sunday of March; -1:00 on it is 03-30 23:00 local, 01:00Z. */
	assert_int_equal(tzfile_utc_offset(tz, utc(2030, 3, 31, 0, 59, 59), &off), 0);
	assert_int_equal(off, -7200);
	assert_int_equal(tzfile_utc_offset(tz, utc(2030, 3, 31, 1, 0, 0), &off), 0);
	assert_int_equal(off, -3600);
	tzfile_free(tz);

	/* Julian-day form: J60 is March 1 in every year, leap or not. */
	s.footer = "AAA-1BBB,J60/0,300/0";
	len = build_tzif(&s, buf);
	assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), 0);
	assert_int_equal(tzfile_utc_offset(tz, utc(2028, 2, 29, 22, 59, 59), &off), 0);
	assert_int_equal(off, 3600);
	assert_int_equal(tzfile_utc_offset(tz, utc(2028, 2, 29, 23, 0, 0), &off), 0);
	assert_int_equal(off, 7200);
	tzfile_free(tz);
}

static void test_malformed(void **state)
{
	static const char *const bad_footers[] = {
		"CET",				/* no offset */
		"CE-1",				/* name too short */
		"CET-25",			/* offset hours */
		"CET-1:60",			/* offset minutes */
		"CET-1CEST",			/* DST without a rule */
		"CET-1CEST,M3.5.0",		/* one date */
		"CET-1CEST,M13.5.0,M10.5.0/3",	/* month */
		"CET-1CEST,M3.6.0,M10.5.0/3",	/* week */
		"CET-1CEST,M3.5.7,M10.5.0/3",	/* weekday */
		"CET-1CEST,J0,J365",		/* Julian day 0 */
		"CET-1CEST,366,J365",		/* day 366 */
		"CET-1CEST,M3.5.0/168,M10.5.0",	/* hours beyond 167 */
		"CET-1CEST,M3.5.0,M10.5.0/3x",	/* trailing garbage */
		"<CET-1",			/* unterminated quote */
		"<+1>-1",			/* quoted name too short */
		"CET-1\tCEST,M3.5.0,M10.5.0",	/* control character */
	};
	uint8_t buf[2048], copy[2048];
	struct tzif_spec s = rome_spec();
	struct ttype types[2];
	int64_t times[2];
	uint8_t idx[2];
	struct tz *tz = NULL;
	char err[256];
	size_t len;

#define EXPECT_EINVAL(fragment)                                                                    \
	do {                                                                                       \
		err[0] = '\0';                                                                     \
		len = build_tzif(&s, buf);                                                         \
		assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), -EINVAL);                 \
		if (!strstr(err, fragment))                                                        \
			fail_msg("message \"%s\" lacks \"%s\"", err, fragment);                    \
		assert_null(tz);                                                                   \
		s = rome_spec();                                                                   \
	} while (0)

	memcpy(types, rome_types, sizeof(types));
	memcpy(times, rome_times, sizeof(times));
	memcpy(idx, rome_idx, sizeof(idx));

	s.n_types = 0;
	EXPECT_EINVAL("malformed TZif header");
	s.types = types;
	types[1].offset = 26 * 3600;
	EXPECT_EINVAL("local time type 1");
	types[1] = rome_types[1];
	s.types = types;
	types[0].abbr = 9;
	EXPECT_EINVAL("abbreviation index 9");
	types[0] = rome_types[0];
	s.types = types;
	types[0].is_dst = 2;
	EXPECT_EINVAL("DST flag 2");
	types[0] = rome_types[0];
	s.chars = "CET\0CESTX";	/* last abbreviation not NUL-terminated */
	s.n_chars = 9;
	s.types = types;
	types[1].abbr = 4;
	EXPECT_EINVAL("abbreviation index 4");
	s.idx = idx;
	idx[1] = 2;
	EXPECT_EINVAL("uses type 2");
	idx[1] = 0;
	s.times = times;
	times[1] = times[0];
	EXPECT_EINVAL("transition 1 is not after transition 0");
	times[1] = rome_times[1];
	s.leapcnt = 1;
	EXPECT_EINVAL("leap-second");
	s.footer = NULL;
	EXPECT_EINVAL("missing TZ string footer");
	for (size_t i = 0; i < sizeof(bad_footers) / sizeof(bad_footers[0]); i++) {
		s.footer = bad_footers[i];
		EXPECT_EINVAL("malformed TZ string footer");
	}
	{
		char longf[300];

		memset(longf, 'A', sizeof(longf) - 1);
		longf[sizeof(longf) - 1] = '\0';
		s.footer = longf;
		EXPECT_EINVAL("longer than 256");
	}

	/* Bad magic, counts that overrun the data, and every truncation of a valid file. */
	len = build_tzif(&s, buf);
	memcpy(copy, buf, len);
	copy[0] = 'X';
	assert_int_equal(parse(copy, len, &tz, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a TZif file"));
	memcpy(copy, buf, len);
	copy[35] = 0xff;	/* v1 timecnt */
	assert_int_equal(parse(copy, len, &tz, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "truncated TZif data"));
	for (size_t cut = 0; cut < len; cut++) {
		assert_int_equal(parse(buf, cut, &tz, err, sizeof(err)), -EINVAL);
		assert_null(tz);
	}
	assert_int_equal(parse(NULL, 0, &tz, err, sizeof(err)), -EINVAL);
	assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), 0);
	tzfile_free(tz);
#undef EXPECT_EINVAL
}

static void test_real_file_truncations(void **state)
{
	uint8_t *buf = malloc(65536);
	struct tz *tz = NULL;
	char err[256];
	size_t len;

	assert_non_null(buf);
	len = read_file(ZONEINFO "/Europe/Rome", buf, 65536);
	assert_int_equal(parse(buf, len, &tz, err, sizeof(err)), 0);
	tzfile_free(tz);
	for (size_t cut = 0; cut < len; cut++)
		assert_int_equal(parse(buf, cut, &tz, err, sizeof(err)), -EINVAL);
	/* Flipping each byte must never crash (errors and odd-but-valid zones are both fine). */
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0xa5;
		if (parse(buf, len, &tz, err, sizeof(err)) == 0) {
			int32_t off;

			assert_int_equal(tzfile_utc_offset(tz, utc(2026, 6, 1, 0, 0, 0), &off), 0);
			tzfile_free(tz);
		}
		buf[i] ^= 0xa5;
	}
	free(buf);
}

static void test_leap_second_zone_rejected(void **state)
{
	struct tz *tz = NULL;
	char err[256];

	if (access(ZONEINFO "/right/Europe/Rome", R_OK) != 0)
		skip();
	assert_int_equal(tzfile_load("right/Europe/Rome", NULL, &tz, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "leap-second"));
}

static void assert_offset(const struct tz *tz, int64_t t, int32_t expected)
{
	int32_t off;

	assert_int_equal(tzfile_utc_offset(tz, t, &off), 0);
	if (off != expected)
		fail_msg("%s at %lld: offset %d, expected %d", tzfile_name(tz), (long long)t, off,
			 expected);
}

static void assert_local_to_utc(const struct tz *tz, struct tm local, int count, int64_t first,
				int64_t last)
{
	int64_t f = -1, l = -1;
	int r = tzfile_local_to_utc(tz, &local, &f, &l);

	if (r != count || f != first || l != last)
		fail_msg("%s %04d-%02d-%02d %02d:%02d: got %d [%lld, %lld], "
			 "expected %d [%lld, %lld]", tzfile_name(tz), local.tm_year + 1900,
			 local.tm_mon + 1, local.tm_mday, local.tm_hour, local.tm_min, r,
			 (long long)f, (long long)l, count, (long long)first, (long long)last);
}

static void test_dst_changes(void **state)
{
	struct tz *rome = load("Europe/Rome"), *ny = load("America/New_York");
	struct tz *lh = load("Australia/Lord_Howe"), *ktm = load("Asia/Kathmandu");
	struct tm tm;

	/* Rome 2026: 02:00 CET -> 03:00 CEST on 29 Mar, 03:00 CEST -> 02:00 CET on 25 Oct. */
	assert_offset(rome, utc(2026, 3, 29, 0, 59, 59), 3600);
	assert_offset(rome, utc(2026, 3, 29, 1, 0, 0), 7200);
	assert_offset(rome, utc(2026, 10, 25, 0, 59, 59), 7200);
	assert_offset(rome, utc(2026, 10, 25, 1, 0, 0), 3600);
	assert_local_to_utc(rome, wall(2026, 3, 29, 2, 30), 0, utc(2026, 3, 29, 1, 0, 0),
			    utc(2026, 3, 29, 1, 0, 0));
	assert_local_to_utc(rome, wall(2026, 3, 29, 3, 0), 1, utc(2026, 3, 29, 1, 0, 0),
			    utc(2026, 3, 29, 1, 0, 0));
	assert_local_to_utc(rome, wall(2026, 3, 29, 1, 59), 1, utc(2026, 3, 29, 0, 59, 0),
			    utc(2026, 3, 29, 0, 59, 0));
	assert_local_to_utc(rome, wall(2026, 10, 25, 2, 30), 2, utc(2026, 10, 25, 0, 30, 0),
			    utc(2026, 10, 25, 1, 30, 0));
	assert_local_to_utc(rome, wall(2026, 10, 25, 3, 0), 1, utc(2026, 10, 25, 2, 0, 0),
			    utc(2026, 10, 25, 2, 0, 0));
	/* 2045 lies beyond the file's transitions: the footer rule decides (26 Mar, 29 Oct). */
	assert_offset(rome, utc(2045, 3, 26, 0, 59, 59), 3600);
	assert_offset(rome, utc(2045, 3, 26, 1, 0, 0), 7200);
	assert_offset(rome, utc(2045, 10, 29, 0, 59, 59), 7200);
	assert_offset(rome, utc(2045, 10, 29, 1, 0, 0), 3600);
	assert_local_to_utc(rome, wall(2045, 3, 26, 2, 15), 0, utc(2045, 3, 26, 1, 0, 0),
			    utc(2045, 3, 26, 1, 0, 0));

	/* New York 2026: 8 Mar 02:00 EST -> 03:00 EDT, 1 Nov 02:00 EDT -> 01:00 EST. */
	assert_local_to_utc(ny, wall(2026, 3, 8, 2, 0), 0, utc(2026, 3, 8, 7, 0, 0),
			    utc(2026, 3, 8, 7, 0, 0));
	assert_local_to_utc(ny, wall(2026, 11, 1, 1, 30), 2, utc(2026, 11, 1, 5, 30, 0),
			    utc(2026, 11, 1, 6, 30, 0));
	assert_int_equal(tzfile_utc_to_local(ny, utc(2026, 11, 1, 6, 30, 0), &tm), 0);
	assert_int_equal(tm.tm_hour, 1);
	assert_int_equal(tm.tm_isdst, 0);
	assert_string_equal(tm.tm_zone, "EST");
	assert_int_equal(tm.tm_gmtoff, -5 * 3600);
	assert_offset(ny, utc(2045, 7, 4, 12, 0, 0), -4 * 3600);
	assert_offset(ny, utc(2045, 12, 25, 12, 0, 0), -5 * 3600);

	/* Lord Howe: 30-minute DST. 4 Oct 2026 02:00 -> 02:30, 5 Apr 2026 02:00 -> 01:30. */
	assert_local_to_utc(lh, wall(2026, 10, 4, 2, 15), 0, utc(2026, 10, 3, 15, 30, 0),
			    utc(2026, 10, 3, 15, 30, 0));
	assert_local_to_utc(lh, wall(2026, 4, 5, 1, 45), 2, utc(2026, 4, 4, 14, 45, 0),
			    utc(2026, 4, 4, 15, 15, 0));
	assert_offset(lh, utc(2045, 1, 1, 0, 0, 0), 11 * 3600);
	assert_offset(lh, utc(2045, 7, 1, 0, 0, 0), 10 * 3600 + 1800);

	/* Kathmandu: +05:45 all year; normalisation of out-of-range fields like timegm(). */
	assert_offset(ktm, utc(2026, 6, 1, 0, 0, 0), 5 * 3600 + 45 * 60);
	assert_local_to_utc(ktm, wall(2026, 13, 1, 5, 45), 1, utc(2027, 1, 1, 0, 0, 0),
			    utc(2027, 1, 1, 0, 0, 0));
	assert_local_to_utc(ktm, wall(2026, 1, 0, 24, 45), 1, utc(2025, 12, 31, 19, 0, 0),
			    utc(2025, 12, 31, 19, 0, 0));

	tzfile_free(rome);
	tzfile_free(ny);
	tzfile_free(lh);
	tzfile_free(ktm);
}

static void test_ranges(void **state)
{
	struct tz *rome = load("Europe/Rome");
	struct tz_span span;
	struct tm tm;
	int32_t off;
	int64_t f, l;

	assert_int_equal(tzfile_utc_offset(rome, TZ_UTC_MAX + 1, &off), -ERANGE);
	assert_int_equal(tzfile_utc_offset(rome, TZ_UTC_MIN - 1, &off), -ERANGE);
	assert_int_equal(tzfile_utc_offset(rome, INT64_MIN, &off), -ERANGE);
	assert_int_equal(tzfile_span_at(rome, INT64_MAX, &span), -ERANGE);
	assert_int_equal(tzfile_utc_to_local(rome, TZ_UTC_MAX, &tm), 0);
	assert_int_equal(tm.tm_year + 1900, 10000);	/* 9999-12-31T23:59:59Z is 00:59 CET */
	assert_int_equal(tzfile_utc_to_local(rome, TZ_UTC_MIN, &tm), 0);
	tm = wall(10001, 1, 1, 0, 0);
	assert_int_equal(tzfile_local_to_utc(rome, &tm, &f, &l), -ERANGE);
	/* The ends of the range convert both ways, though their wall times lie beyond it. */
	assert_int_equal(tzfile_utc_to_local(rome, TZ_UTC_MAX, &tm), 0);
	assert_int_equal(tzfile_local_to_utc(rome, &tm, &f, &l), 1);
	assert_int_equal(f, TZ_UTC_MAX);
	tm = wall(10000, 1, 1, 1, 0);	/* one second past the end */
	assert_int_equal(tzfile_local_to_utc(rome, &tm, &f, &l), -ERANGE);
	tm = (struct tm){ .tm_year = 2026 - 1900, .tm_mday = 1, .tm_sec = INT32_MAX };
	assert_int_equal(tzfile_local_to_utc(rome, &tm, &f, &l), 1);
	tm = (struct tm){ .tm_year = INT32_MAX, .tm_mon = INT32_MAX, .tm_mday = INT32_MAX };
	assert_int_equal(tzfile_local_to_utc(rome, &tm, &f, &l), -ERANGE);
	tm = (struct tm){ .tm_year = INT32_MIN, .tm_mon = INT32_MIN, .tm_mday = INT32_MIN };
	assert_int_equal(tzfile_local_to_utc(rome, &tm, &f, &l), -ERANGE);
	tzfile_free(rome);
}

static void test_span_walk(void **state)
{
	struct tz *rome = load("Europe/Rome");
	struct tz_span span;
	int64_t t = utc(2026, 1, 1, 0, 0, 0);
	int64_t changes[8];
	int32_t prev;
	int n = 0;

	assert_int_equal(tzfile_span_at(rome, t, &span), 0);
	assert_int_equal(span.offset, 3600);
	assert_false(span.is_dst);
	prev = span.offset;
	while (span.end < utc(2027, 1, 1, 0, 0, 0)) {
		assert_int_equal(tzfile_span_at(rome, span.end, &span), 0);
		if (span.offset != prev && n < 8)
			changes[n++] = span.start;
		prev = span.offset;
	}
	assert_int_equal(n, 2);
	assert_int_equal(changes[0], utc(2026, 3, 29, 1, 0, 0));
	assert_int_equal(changes[1], utc(2026, 10, 25, 1, 0, 0));
	tzfile_free(rome);
}

/* Footer-only zones: spans must tile time exactly, whatever the rule, and convert both ways. */
static void test_rule_spans_tile(void **state)
{
	static const char *const footers[] = {
		"CET-1CEST,M3.5.0,M10.5.0/3",
		"AEST-10AEDT,M10.1.0,M4.1.0/3",		/* southern: DST across New Year */
		"IST-1GMT0,M10.5.0,M3.5.0/1",		/* Dublin: negative DST */
		"EST5EDT,0/0,J365/25",			/* permanent DST */
		"CET+2EST,M3.4.0,M3.5.0/3",		/* some years have no transitions */
		"<-02>2<-01>,M3.5.0/-1,M10.5.0/0",
		"XXX-14YYY-14:30,J1/0,J365/167",
	};
	uint8_t buf[512];

	for (size_t i = 0; i < sizeof(footers) / sizeof(footers[0]); i++) {
		struct tzif_spec s = rome_spec();
		struct tz *tz = NULL;
		struct tz_span span, prev;
		char err[256];
		int64_t t = utc(1990, 1, 1, 0, 0, 0);

		s.n_times = 0;
		s.footer = footers[i];
		if (parse(buf, build_tzif(&s, buf), &tz, err, sizeof(err)) != 0)
			fail_msg("\"%s\": %s", footers[i], err);
		assert_int_equal(tzfile_span_at(tz, t, &prev), 0);
		while (prev.end < utc(2060, 1, 1, 0, 0, 0)) {
			struct tm tm;
			int64_t f, l;

			assert_int_equal(tzfile_span_at(tz, prev.end, &span), 0);
			assert_true(span.start == prev.end && span.end > span.start);
			/* Every instant of a span reports that same span. */
			assert_int_equal(tzfile_span_at(tz, span.end - 1, &prev), 0);
			if (prev.start != span.start || prev.end != span.end ||
			    prev.offset != span.offset)
				fail_msg("\"%s\": span [%lld, %lld) %d, at its end [%lld, %lld) %d",
					 footers[i], (long long)span.start, (long long)span.end,
					 span.offset, (long long)prev.start, (long long)prev.end,
					 prev.offset);
			assert_int_equal(tzfile_utc_to_local(tz, span.start, &tm), 0);
			assert_true(tzfile_local_to_utc(tz, &tm, &f, &l) >= 1);
			assert_true(f <= span.start && l >= span.start);
			prev = span;
		}
		tzfile_free(tz);
	}
}

/*
 * glibc's localtime_r is an independent implementation reading the same files, so agreement on
 * every transition (and between them) from 1900 to 2100 checks both the TZif and the footer code.
 * setenv("TZ") is fine in this test process; the library itself never touches it.
 */
static void test_against_glibc(void **state)
{
	static const char *const zones[] = {
		"Europe/Rome", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
		"Europe/Dublin", "America/Nuuk", "Antarctica/Troll", "Africa/Casablanca",
		"Pacific/Apia", "Pacific/Chatham", "America/Santiago", "Asia/Tehran",
		"America/St_Johns", "Pacific/Kiritimati", "America/Sao_Paulo", "Australia/Sydney",
		"Europe/London", "Asia/Gaza", "America/Havana", "Pacific/Norfolk",
	};
	int64_t lo = utc(1900, 1, 1, 0, 0, 0), hi = utc(2100, 1, 1, 0, 0, 0);
	long checked = 0;

	for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
		struct tz *tz = load(zones[z]);
		char tzenv[128];
		struct tz_span span;
		int64_t t;

		snprintf(tzenv, sizeof(tzenv), ":%s", zones[z]);
		setenv("TZ", tzenv, 1);
		tzset();
		for (t = lo; t < hi; ) {
			int64_t probes[3];

			assert_int_equal(tzfile_span_at(tz, t, &span), 0);
			probes[0] = t;
			probes[1] = span.end - 1;
			probes[2] = t + 86400 * 3 + 1234;
			for (int i = 0; i < 3; i++) {
				time_t tt = (time_t)probes[i];
				struct tm want, got;

				if (probes[i] >= hi || probes[i] < lo)
					continue;
				assert_non_null(localtime_r(&tt, &want));
				assert_int_equal(tzfile_utc_to_local(tz, probes[i], &got), 0);
				if (want.tm_gmtoff != got.tm_gmtoff ||
				    want.tm_isdst != got.tm_isdst ||
				    strcmp(want.tm_zone, got.tm_zone) != 0 ||
				    want.tm_year != got.tm_year || want.tm_yday != got.tm_yday ||
				    want.tm_mon != got.tm_mon || want.tm_mday != got.tm_mday ||
				    want.tm_hour != got.tm_hour || want.tm_min != got.tm_min ||
				    want.tm_sec != got.tm_sec || want.tm_wday != got.tm_wday)
					fail_msg("%s at %lld: glibc %ld %d %s %04d-%02d-%02d "
						 "%02d:%02d:%02d, tzfile %ld %d %s %04d-%02d-%02d "
						 "%02d:%02d:%02d", zones[z], (long long)probes[i],
						 want.tm_gmtoff, want.tm_isdst, want.tm_zone,
						 want.tm_year + 1900, want.tm_mon + 1, want.tm_mday,
						 want.tm_hour, want.tm_min, want.tm_sec,
						 got.tm_gmtoff, got.tm_isdst, got.tm_zone,
						 got.tm_year + 1900, got.tm_mon + 1, got.tm_mday,
						 got.tm_hour, got.tm_min, got.tm_sec);
				checked++;
			}
			/* Step to the next span, but sample long spans every few days too. */
			t = span.end < t + 86400 * 7 ? span.end : t + 86400 * 7;
		}
		tzfile_free(tz);
	}
	unsetenv("TZ");
	assert_true(checked > 100000);
}

static void test_local_roundtrip(void **state)
{
	static const char *const zones[] = { "Europe/Rome", "America/New_York",
					     "Australia/Lord_Howe", "Europe/Dublin" };

	/* Every UTC instant maps to a wall time whose UTC instants include it. */
	for (size_t z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
		struct tz *tz = load(zones[z]);

		for (int64_t t = utc(2026, 1, 1, 0, 0, 0); t < utc(2027, 1, 1, 0, 0, 0);
		     t += 977) {
			struct tm tm;
			int64_t f, l;
			int n;

			assert_int_equal(tzfile_utc_to_local(tz, t, &tm), 0);
			n = tzfile_local_to_utc(tz, &tm, &f, &l);
			assert_true(n == 1 || n == 2);
			assert_true(f == t || l == t);
		}
		tzfile_free(tz);
	}
}

static void test_calendar_helpers(void **state)
{
	int64_t y;
	int m, d;

	assert_int_equal(tzfile_days_from_civil(1970, 1, 1), 0);
	assert_int_equal(tzfile_days_from_civil(2000, 3, 1), 11017);
	assert_int_equal(tzfile_days_from_civil(1, 1, 1), -719162);
	for (int64_t days = -800000; days < 3000000; days += 13) {
		time_t tt = (time_t)(days * 86400);
		struct tm g;

		gmtime_r(&tt, &g);
		tzfile_civil_from_days(days, &y, &m, &d);
		assert_int_equal(y, g.tm_year + 1900);
		assert_int_equal(m, g.tm_mon + 1);
		assert_int_equal(d, g.tm_mday);
		assert_int_equal(tzfile_days_from_civil(y, m, d), days);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utc_builtin),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_missing_and_not_a_zone),
		cmocka_unit_test(test_zoneinfo_dir_override),
		cmocka_unit_test(test_builtin_file_layouts),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_real_file_truncations),
		cmocka_unit_test(test_leap_second_zone_rejected),
		cmocka_unit_test(test_dst_changes),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_span_walk),
		cmocka_unit_test(test_rule_spans_tile),
		cmocka_unit_test(test_against_glibc),
		cmocka_unit_test(test_local_roundtrip),
		cmocka_unit_test(test_calendar_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
