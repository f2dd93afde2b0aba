/* SPDX-License-Identifier: MIT */
/*
 * cron: the parser's accept/reject table, the Vixie day rule, fixed fire times across real DST
 * changes (Rome, New York, Lord Howe, Kathmandu, UTC, and 2045 where the footer rule applies),
 * and a property test that checks cron_next against a brute-force minute-by-minute oracle.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cron.h"
#include "tzfile.h"

static int64_t utc(int y, int mo, int d, int h, int mi)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
			 .tm_hour = h, .tm_min = mi };

	return (int64_t)timegm(&tm);
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

static const char *fmt_utc(int64_t t, char buf[32])
{
	time_t tt = (time_t)t;
	struct tm g;

	gmtime_r(&tt, &g);
	strftime(buf, 32, "%Y-%m-%dT%H:%MZ", &g);
	return buf;
}

/* "*" when every value lo..hi is set, else the values as a comma list. */
static const char *render(uint64_t mask, int lo, int hi, char *buf, size_t len)
{
	size_t n = 0;
	bool all = true;

	buf[0] = '\0';
	for (int v = lo; v <= hi; v++)
		all = all && (mask >> v & 1);
	if (all)
		return strcpy(buf, "*");
	for (int v = lo; v <= hi; v++)
		if (mask >> v & 1)
			n += (size_t)snprintf(buf + n, len - n, "%s%d", n ? "," : "", v);
	return buf;
}

/* --- Parser ----------------------------------------------------------------------------------- */

static void test_parse_accept(void **state)
{
	static const struct {
		const char *expr;
		const char *min, *hour, *dom, *mon, *dow;
	} cases[] = {
		{ "* * * * *", "*", "*", "*", "*", "*" },
		{ "*/15 * * * *", "0,15,30,45", "*", "*", "*", "*" },
		{ "0 2 * * *", "0", "2", "*", "*", "*" },
		{ "1-30/5 * * * *", "1,6,11,16,21,26", "*", "*", "*", "*" },
		{ "0,30 9-17 * * mon-fri", "0,30", "9,10,11,12,13,14,15,16,17", "*", "*",
		  "1,2,3,4,5" },
		{ "0 0 1 jan *", "0", "0", "1", "1", "*" },
		{ "0 0 * JAN,Jul,dEc *", "0", "0", "*", "1,7,12", "*" },
		{ "0 0 * * 7", "0", "0", "*", "*", "0" },
		{ "0 0 * * 0,7", "0", "0", "*", "*", "0" },
		{ "0 0 * * 5-7", "0", "0", "*", "*", "0,5,6" },
		{ "0 0 * * sun-sat", "0", "0", "*", "*", "*" },
		{ "0 0 * * mon-sun", "0", "0", "*", "*", "*" },
		{ "0 0 * * SAT-SUN", "0", "0", "*", "*", "0,6" },
		{ "59 23 31 12 *", "59", "23", "31", "12", "*" },
		{ "  0   2\t* *  *  ", "0", "2", "*", "*", "*" },
		{ "@hourly", "0", "*", "*", "*", "*" },
		{ "@daily", "0", "0", "*", "*", "*" },
		{ "@midnight", "0", "0", "*", "*", "*" },
		{ "@weekly", "0", "0", "*", "*", "0" },
		{ "@monthly", "0", "0", "1", "*", "*" },
		{ "@yearly", "0", "0", "1", "1", "*" },
		{ "@annually", "0", "0", "1", "1", "*" },
		{ " @DAILY ", "0", "0", "*", "*", "*" },
		{ "*/7 * * * *", "0,7,14,21,28,35,42,49,56", "*", "*", "*", "*" },
		{ "*/59 */23 */31 */12 */7", "0,59", "0,23", "1", "1", "0" },
		{ "0 */6 * * *", "0", "0,6,12,18", "*", "*", "*" },
		{ "0 0 */2 * *", "0", "0", "1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31", "*", "*" },
		{ "0 0 1-31/10 * *", "0", "0", "1,11,21,31", "*", "*" },
		{ "5,10-12,20-30/5 * * * *", "5,10,11,12,20,25,30", "*", "*", "*", "*" },
		{ "0 0 * feb-apr/2 *", "0", "0", "*", "2,4", "*" },
		{ "00 002 * * *", "0", "2", "*", "*", "*" },
		{ "0 0 * * */2", "0", "0", "*", "*", "0,2,4,6" },
		{ "0 0 * * 1-7/2", "0", "0", "*", "*", "0,1,3,5" },
		{ "0 0 29 2 *", "0", "0", "29", "2", "*" },
		{ "0 0 30 2 *", "0", "0", "30", "2", "*" },
		{ "0-59 0-23 1-31 1-12 0-6", "*", "*", "*", "*", "*" },
	};
	char err[256], b[200];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cron_expr ce;
		int r;

		err[0] = '\0';
		r = cron_parse(cases[i].expr, &ce, err, sizeof(err));
		if (r != 0)
			fail_msg("\"%s\": %d %s", cases[i].expr, r, err);
		assert_string_equal(render(ce.minutes, 0, 59, b, sizeof(b)), cases[i].min);
		assert_string_equal(render(ce.hours, 0, 23, b, sizeof(b)), cases[i].hour);
		assert_string_equal(render(ce.days, 1, 31, b, sizeof(b)), cases[i].dom);
		assert_string_equal(render(ce.months, 1, 12, b, sizeof(b)), cases[i].mon);
		assert_string_equal(render(ce.weekdays, 0, 6, b, sizeof(b)), cases[i].dow);
		/* No stray bits outside the fields' ranges. */
		assert_int_equal(ce.minutes >> 60, 0);
		assert_int_equal(ce.hours >> 24, 0);
		assert_int_equal(ce.days & 1, 0);
		assert_int_equal(ce.months & 0xe001, 0);
		assert_int_equal(ce.weekdays & 0x80, 0);
	}
}

static void test_parse_reject(void **state)
{
	char too_long[CRON_EXPR_MAX + 2];
	const struct {
		const char *expr;
		const char *fragment;
	} cases[] = {
		{ "", "empty cron expression" },
		{ " \t ", "empty cron expression" },
		{ "* * * *",
		  "expected 5 fields (minute hour day-of-month month day-of-week), got 4" },
		{ "* * * * * *", "got 6 (seconds and years are not supported)" },
		{ "0\n0 * * *", "got 4" },
		{ "61 * * * *", "minute field \"61\" out of range 0-59" },
		{ "* 24 * * *", "hour field \"24\" out of range 0-23" },
		{ "* * 0 * *", "day-of-month field \"0\" out of range 1-31" },
		{ "* * 32 * *", "day-of-month field \"32\" out of range 1-31" },
		{ "* * * 13 *", "month field \"13\" out of range 1-12" },
		{ "* * * 0 *", "month field \"0\" out of range 1-12" },
		{ "* * * * 8", "day-of-week field \"8\" out of range 0-7" },
		{ "1-61 * * * *", "minute field \"61\" out of range 0-59" },
		{ "99999999999999999999 * * * *",
		  "minute field \"99999999999999999999\" out of range 0-59" },
		{ "* * * foo *", "month field \"foo\" is not a valid value (1-12 or jan-dec)" },
		{ "* * * * monday",
		  "day-of-week field \"monday\" is not a valid value (0-7 or sun-sat)" },
		{ "* mon * * *", "hour field \"mon\" is not a valid value (0-23)" },
		{ "* * * * jan", "day-of-week field \"jan\" is not a valid value" },
		{ "0 0 L * *", "day-of-month field \"L\" is not a valid value (1-31)" },
		{ "0 0 ? * *", "day-of-month field \"?\" is not a valid value" },
		{ "-1 * * * *", "minute field \"-\" is not a valid value" },
		{ "1,,2 * * * *", "minute field \"1,,2\" has an empty list element" },
		{ "1, * * * *", "minute field \"1,\" has an empty list element" },
		{ "* * ,1 * *", "day-of-month field \",1\" has an empty list element" },
		{ "5-1 * * * *", "minute field \"5-1\": range start is after its end" },
		{ "0 0 * * fri-mon",
		  "day-of-week field \"fri-mon\": range start is after its end" },
		{ "*/0 * * * *", "minute field \"*/0\": step 0 out of range 1-59" },
		{ "*/60 * * * *", "minute field \"*/60\": step 60 out of range 1-59" },
		{ "0 0 * * mon-fri/8", "day-of-week field \"mon-fri/8\": step 8 out of range 1-7" },
		{ "5/15 * * * *",
		  "minute field \"5/15\": a step needs \"*\" or a range before \"/\" "
		  "(e.g. \"5-59/15\")" },
		{ "*/ * * * *", "minute field \"*/\": missing step after \"/\"" },
		{ "1- * * * *", "minute field: missing value (0-59)" },
		{ "1x * * * *", "minute field \"1x\": unexpected character 'x'" },
		{ "*5 * * * *", "minute field \"*5\": unexpected character '5'" },
		{ "0 0 * * 1-2-3", "day-of-week field \"1-2-3\": unexpected character '-'" },
		{ "*/5/5 * * * *", "unexpected character '/'" },
		{ "0 \x01 * * *", "hour field \"?\" is not a valid value" },
		{ "@reboot", "\"@reboot\" is not supported" },
		{ "@fortnightly", "unknown macro \"@fortnightly\" (supported: @hourly" },
		{ "@daily 0", "unexpected text after \"@daily\"" },
		{ too_long, "cron expression is longer than 256 characters" },
	};
	char err[256];

	memset(too_long, ' ', sizeof(too_long) - 1);
	too_long[sizeof(too_long) - 1] = '\0';
	too_long[0] = '*';
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cron_expr ce = { .minutes = 42 };

		err[0] = '\0';
		assert_int_equal(cron_parse(cases[i].expr, &ce, err, sizeof(err)), -EINVAL);
		if (!strstr(err, cases[i].fragment))
			fail_msg("\"%s\": message \"%s\" lacks \"%s\"", cases[i].expr, err,
				 cases[i].fragment);
		/* Out-params stay untouched on failure. */
		assert_int_equal(ce.minutes, 42);
	}
	assert_int_equal(cron_parse(NULL, &(struct cron_expr){ 0 }, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "no cron expression");
	/* No buffer, or a tiny one, is fine. */
	assert_int_equal(cron_parse("61 * * * *", &(struct cron_expr){ 0 }, NULL, 0), -EINVAL);
	assert_int_equal(cron_parse("61 * * * *", &(struct cron_expr){ 0 }, err, 4), -EINVAL);
	assert_string_equal(err, "min");
}

static void test_star_flags(void **state)
{
	struct cron_expr ce;

	assert_int_equal(cron_parse("0 0 * * 1", &ce, NULL, 0), 0);
	assert_int_equal(ce.flags, CRON_DOM_STAR);
	assert_int_equal(cron_parse("0 0 1 * *", &ce, NULL, 0), 0);
	assert_int_equal(ce.flags, CRON_DOW_STAR);
	assert_int_equal(cron_parse("0 0 */2 * 1", &ce, NULL, 0), 0);
	assert_int_equal(ce.flags, CRON_DOM_STAR);
	assert_int_equal(cron_parse("0 0 1-31 * 0-6", &ce, NULL, 0), 0);
	assert_int_equal(ce.flags, 0);
}

static struct tm day(int y, int mo, int d, int h, int mi)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
			 .tm_hour = h, .tm_min = mi };
	time_t t = timegm(&tm);

	gmtime_r(&t, &tm);	/* fills tm_wday */
	return tm;
}

static bool matches(const char *expr, struct tm tm)
{
	struct cron_expr ce;

	assert_int_equal(cron_parse(expr, &ce, NULL, 0), 0);
	return cron_matches_local(&ce, &tm);
}

static void test_matches_vixie_day_rule(void **state)
{
	/* 2026-04-13 is a Monday, 2026-04-17 a Friday. */
	assert_true(matches("0 0 13 * fri", day(2026, 4, 13, 0, 0)));
	assert_true(matches("0 0 13 * fri", day(2026, 4, 17, 0, 0)));
	assert_false(matches("0 0 13 * fri", day(2026, 4, 14, 0, 0)));
	/* A "*" field on either side means AND. */
	assert_true(matches("0 0 */2 * fri", day(2026, 4, 17, 0, 0)));
	assert_false(matches("0 0 */2 * fri", day(2026, 4, 10, 0, 0)));
	assert_false(matches("0 0 */2 * fri", day(2026, 4, 13, 0, 0)));
	assert_true(matches("0 0 * * 7", day(2026, 4, 12, 0, 0)));
	assert_false(matches("0 0 * * 7", day(2026, 4, 13, 0, 0)));
	assert_true(matches("0 0 13 * *", day(2026, 4, 13, 0, 0)));
	assert_false(matches("0 0 13 * *", day(2026, 4, 17, 0, 0)));
	assert_true(matches("30 9-17/2 * jul *", day(2026, 7, 1, 13, 30)));
	assert_false(matches("30 9-17/2 * jul *", day(2026, 7, 1, 14, 30)));
	assert_false(matches("30 9-17/2 * jul *", day(2026, 7, 1, 13, 31)));
	assert_false(matches("30 9-17/2 * jul *", day(2026, 8, 1, 13, 30)));
	/* Nonsense fields never match. */
	assert_false(matches("* * * * *", (struct tm){ .tm_mday = 0 }));
	assert_false(matches("* * * * *", (struct tm){ .tm_mday = 1, .tm_hour = 24 }));
}

/* --- Fixed fire times ------------------------------------------------------------------------- */

static void expect_fires(const char *zone, const char *expr, int64_t after,
			 const int64_t *want, size_t n)
{
	struct tz *tz = load(zone);
	struct cron_expr ce;
	char err[256], a[32], b[32];

	if (cron_parse(expr, &ce, err, sizeof(err)) < 0)
		fail_msg("\"%s\": %s", expr, err);
	for (size_t i = 0; i < n; i++) {
		int64_t next = -1;
		int r = cron_next(&ce, tz, after, &next);

		if (r < 0 || next != want[i])
			fail_msg("%s \"%s\" fire %zu after %s: got %d %s, expected %s", zone, expr,
				 i, fmt_utc(after, a), r, r < 0 ? "-" : fmt_utc(next, b),
				 fmt_utc(want[i], a));
		after = next;
	}
	tzfile_free(tz);
}

#define EXPECT_FIRES(zone, expr, after, ...)                                                       \
	do {                                                                                       \
		const int64_t want_[] = { __VA_ARGS__ };                                           \
		expect_fires(zone, expr, after, want_, sizeof(want_) / sizeof(want_[0]));          \
	} while (0)

static void test_rome_2026(void **state)
{
	/* 29 Mar: 02:00 CET -> 03:00 CEST. The 02:00 run happens once, at 03:00 CEST. */
	EXPECT_FIRES("Europe/Rome", "0 2 * * *", utc(2026, 3, 27, 12, 0),
		     utc(2026, 3, 28, 1, 0), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0));
	/* Several skipped matches and the match at the gap's end collapse into one fire. */
	EXPECT_FIRES("Europe/Rome", "*/30 * * * *", utc(2026, 3, 29, 0, 15),
		     utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30));
	EXPECT_FIRES("Europe/Rome", "0 2,3 * * *", utc(2026, 3, 28, 12, 0),
		     utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 1, 0));

	/* 25 Oct: 03:00 CEST -> 02:00 CET. 02:30 happens twice; the job runs at the first. */
	EXPECT_FIRES("Europe/Rome", "30 2 * * *", utc(2026, 10, 24, 12, 0),
		     utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30));
	/* Asked from inside the repeated hour, the second 02:30 still does not fire. */
	EXPECT_FIRES("Europe/Rome", "30 2 * * *", utc(2026, 10, 25, 1, 15),
		     utc(2026, 10, 26, 1, 30));
	EXPECT_FIRES("Europe/Rome", "30 2 * * *", utc(2026, 10, 25, 0, 30),
		     utc(2026, 10, 26, 1, 30));
	/* Sub-hourly schedules pause while the clock replays 02:00-02:59. */
	EXPECT_FIRES("Europe/Rome", "*/30 * * * *", utc(2026, 10, 24, 23, 45),
		     utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 0),
		     utc(2026, 10, 25, 2, 30));
}

static void test_new_york_2026(void **state)
{
	/* 8 Mar: 02:00 EST -> 03:00 EDT. */
	EXPECT_FIRES("America/New_York", "0 2 * * *", utc(2026, 3, 7, 0, 0),
		     utc(2026, 3, 7, 7, 0), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 0));
	EXPECT_FIRES("America/New_York", "30 2 * * *", utc(2026, 3, 7, 12, 0),
		     utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30));
	/* 1 Nov: 02:00 EDT -> 01:00 EST. 01:30 fires at its EDT occurrence only. */
	EXPECT_FIRES("America/New_York", "30 1 * * *", utc(2026, 10, 31, 12, 0),
		     utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30));
	/* 02:00 is first shown in EST (EDT jumps back from 01:59:59 to 01:00). */
	EXPECT_FIRES("America/New_York", "0 2 * * *", utc(2026, 10, 31, 12, 0),
		     utc(2026, 11, 1, 7, 0), utc(2026, 11, 2, 7, 0));
	EXPECT_FIRES("America/New_York", "0 * * * *", utc(2026, 11, 1, 4, 30),
		     utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 7, 0), utc(2026, 11, 1, 8, 0));
}

static void test_odd_offsets(void **state)
{
	/* Lord Howe, +10:30 / +11: 4 Oct 2026 02:00 -> 02:30; 5 Apr 2026 02:00 -> 01:30. */
	EXPECT_FIRES("Australia/Lord_Howe", "0 2 * * *", utc(2026, 10, 2, 12, 0),
		     utc(2026, 10, 2, 15, 30), utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 0));
	EXPECT_FIRES("Australia/Lord_Howe", "15 2 * * *", utc(2026, 10, 3, 12, 0),
		     utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15));
	EXPECT_FIRES("Australia/Lord_Howe", "45 1 * * *", utc(2026, 4, 3, 12, 0),
		     utc(2026, 4, 3, 14, 45), utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15));
	/* Kathmandu, +05:45 all year. */
	EXPECT_FIRES("Asia/Kathmandu", "0 9 * * *", utc(2026, 6, 1, 0, 0),
		     utc(2026, 6, 1, 3, 15), utc(2026, 6, 2, 3, 15));
	EXPECT_FIRES("Asia/Kathmandu", "*/30 * * * *", utc(2026, 6, 1, 0, 0),
		     utc(2026, 6, 1, 0, 15), utc(2026, 6, 1, 0, 45), utc(2026, 6, 1, 1, 15));
	EXPECT_FIRES("Asia/Kathmandu", "0 0 1 * *", utc(2026, 6, 1, 0, 0),
		     utc(2026, 6, 30, 18, 15), utc(2026, 7, 31, 18, 15));
}

static void test_utc(void **state)
{
	struct tz *tz = load("UTC");
	struct cron_expr ce;
	int64_t next = 0;

	EXPECT_FIRES("UTC", "*/15 * * * *", utc(2026, 1, 1, 0, 0),
		     utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 0, 45),
		     utc(2026, 1, 1, 1, 0));
	EXPECT_FIRES("UTC", "59 23 31 12 *", utc(2026, 1, 1, 0, 0),
		     utc(2026, 12, 31, 23, 59), utc(2027, 12, 31, 23, 59));
	EXPECT_FIRES("UTC", "0 0 29 2 *", utc(2026, 1, 1, 0, 0),
		     utc(2028, 2, 29, 0, 0), utc(2032, 2, 29, 0, 0));
	/* Vixie OR: the 13th (a Monday) and every Friday; "*" in day-of-month: AND. */
	EXPECT_FIRES("UTC", "0 0 13 * fri", utc(2026, 4, 1, 0, 0),
		     utc(2026, 4, 3, 0, 0), utc(2026, 4, 10, 0, 0), utc(2026, 4, 13, 0, 0),
		     utc(2026, 4, 17, 0, 0), utc(2026, 4, 24, 0, 0), utc(2026, 5, 1, 0, 0));
	EXPECT_FIRES("UTC", "0 0 */2 * fri", utc(2026, 4, 1, 0, 0),
		     utc(2026, 4, 3, 0, 0), utc(2026, 4, 17, 0, 0), utc(2026, 5, 1, 0, 0),
		     utc(2026, 5, 15, 0, 0));
	EXPECT_FIRES("UTC", "@weekly", utc(2026, 4, 1, 0, 0),
		     utc(2026, 4, 5, 0, 0), utc(2026, 4, 12, 0, 0));
	EXPECT_FIRES("UTC", "@yearly", utc(2026, 4, 1, 0, 0),
		     utc(2027, 1, 1, 0, 0), utc(2028, 1, 1, 0, 0));

	/* Strictly after: a fire instant itself is not returned again. */
	assert_int_equal(cron_parse("0 12 * * *", &ce, NULL, 0), 0);
	assert_int_equal(cron_next(&ce, tz, utc(2026, 5, 5, 12, 0) - 1, &next), 0);
	assert_int_equal(next, utc(2026, 5, 5, 12, 0));
	assert_int_equal(cron_next(&ce, tz, utc(2026, 5, 5, 12, 0), &next), 0);
	assert_int_equal(next, utc(2026, 5, 6, 12, 0));

	/* Never: Feb 30. Out of range: the search start, or a fire after 9999. */
	next = 7;
	assert_int_equal(cron_parse("0 0 30 2 *", &ce, NULL, 0), 0);
	assert_int_equal(cron_next(&ce, tz, utc(2026, 1, 1, 0, 0), &next), -ERANGE);
	assert_int_equal(next, 7);
	assert_int_equal(cron_parse("0 0 1 1 *", &ce, NULL, 0), 0);
	assert_int_equal(cron_next(&ce, tz, utc(9999, 6, 1, 0, 0), &next), -ERANGE);
	assert_int_equal(cron_next(&ce, tz, TZ_UTC_MAX + 1, &next), -ERANGE);
	assert_int_equal(cron_next(&ce, tz, INT64_MIN, &next), -ERANGE);
	assert_int_equal(cron_next(&ce, tz, TZ_UTC_MIN, &next), 0);
	assert_int_equal(next, utc(2, 1, 1, 0, 0));
	/* A hand-made expression with an empty field is refused, not searched forever. */
	assert_int_equal(cron_next(&(struct cron_expr){ 0 }, tz, 0, &next), -EINVAL);
	tzfile_free(tz);
}

static void test_footer_2045(void **state)
{
	/* Beyond the transitions stored in the files, the POSIX footer rule decides. */
	EXPECT_FIRES("Europe/Rome", "0 2 * * *", utc(2045, 3, 25, 12, 0),
		     utc(2045, 3, 26, 1, 0), utc(2045, 3, 27, 0, 0));
	EXPECT_FIRES("Europe/Rome", "30 2 * * *", utc(2045, 10, 28, 12, 0),
		     utc(2045, 10, 29, 0, 30), utc(2045, 10, 30, 1, 30));
	EXPECT_FIRES("America/New_York", "0 2 * * *", utc(2045, 3, 11, 12, 0),
		     utc(2045, 3, 12, 7, 0), utc(2045, 3, 13, 6, 0));
	EXPECT_FIRES("America/New_York", "30 1 * * *", utc(2045, 11, 4, 12, 0),
		     utc(2045, 11, 5, 5, 30), utc(2045, 11, 6, 6, 30));
	/* 1 Oct 2045 (first Sunday): 02:00 +1030 -> 02:30 +11. */
	EXPECT_FIRES("Australia/Lord_Howe", "0 2 * * *", utc(2045, 9, 29, 12, 0),
		     utc(2045, 9, 29, 15, 30), utc(2045, 9, 30, 15, 30), utc(2045, 10, 1, 15, 0));
}

/* --- Property test: cron_next against a brute-force oracle ------------------------------------ */

/* Per UTC minute: the zone's wall-clock minute (minutes since the epoch, naive) and its fields. */
struct minute {
	int64_t wall;
	struct tm tm;
};

struct table {
	const char *zone;
	struct tz *tz;
	int64_t first;		/* UTC of entry 0: two days of warm-up before @from */
	int64_t from, to;	/* fires are compared in (from, to) */
	size_t n;
	struct minute *m;
};

static void wall_fields(int64_t wall_min, struct tm *tm)
{
	time_t t = (time_t)(wall_min * 60);

	/* libc's calendar, not ours: the oracle shares only the UTC offsets with the code. */
	gmtime_r(&t, tm);
}

static void table_build(struct table *t, const char *zone, int year)
{
	t->zone = zone;
	t->tz = load(zone);
	t->from = utc(year, 1, 1, 0, 0);
	t->to = utc(year + 1, 1, 1, 0, 0);
	t->first = t->from - 2 * 86400;
	t->n = (size_t)((t->to - t->first) / 60);
	t->m = malloc(t->n * sizeof(*t->m));
	assert_non_null(t->m);
	for (size_t i = 0; i < t->n; i++) {
		int64_t u = t->first + (int64_t)i * 60;
		int32_t off;

		assert_int_equal(tzfile_utc_offset(t->tz, u, &off), 0);
		assert_int_equal(off % 60, 0);	/* the scan assumes whole-minute offsets */
		t->m[i].wall = (u + off) / 60;
		wall_fields(t->m[i].wall, &t->m[i].tm);
	}
}

/*
 * The DST rules of cron.h, applied directly: track the highest wall minute shown so far; when
 * the clock moves past it, fire if the new minute matches or any minute it skipped did.
 */
static size_t oracle(const struct table *t, const struct cron_expr *ce, int64_t *fires,
		     size_t cap)
{
	int64_t high = t->m[0].wall;
	size_t n = 0;

	for (size_t i = 1; i < t->n; i++) {
		int64_t w = t->m[i].wall, u = t->first + (int64_t)i * 60;
		bool fire;

		if (w <= high)
			continue;
		fire = cron_matches_local(ce, &t->m[i].tm);
		for (int64_t s = high + 1; !fire && s < w; s++) {
			struct tm tm;

			wall_fields(s, &tm);
			fire = cron_matches_local(ce, &tm);
		}
		high = w;
		if (fire && u > t->from && u < t->to) {
			assert_true(n < cap);
			fires[n++] = u;
		}
	}
	return n;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static int rnd(uint64_t *s, int lo, int hi)
{
	return lo + (int)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* One list element for a field lo..hi; @hot biases single values towards DST-relevant ones. */
static int gen_element(uint64_t *s, char *out, int lo, int hi, const int *hot, int n_hot,
		       const char *const *names)
{
	int a = rnd(s, lo, hi), b = rnd(s, lo, hi), kind = rnd(s, 0, 9);
	char va[16], vb[16];

	if (hot && rnd(s, 0, 1))
		a = hot[rnd(s, 0, n_hot - 1)];
	if (a > b) {
		int tmp = a;

		a = b;
		b = tmp;
	}
	if (names && rnd(s, 0, 2) == 0 && a - lo < 7 && b - lo < 7) {
		snprintf(va, sizeof(va), "%s", names[a - lo]);
		snprintf(vb, sizeof(vb), "%s", names[b - lo]);
	} else {
		snprintf(va, sizeof(va), "%d", a);
		snprintf(vb, sizeof(vb), "%d", b);
	}
	switch (kind) {
	case 0:
		return sprintf(out, "*/%d", rnd(s, 1, hi < 12 ? hi : 12));
	case 1:
	case 2:
		return sprintf(out, "%s-%s", va, vb);
	case 3:
		return sprintf(out, "%s-%s/%d", va, vb, rnd(s, 1, 5));
	default:
		return sprintf(out, "%s", va);
	}
}

static int gen_field(uint64_t *s, char *out, int star_pct, int lo, int hi, const int *hot,
		     int n_hot, const char *const *names)
{
	int n = 0, parts;

	if (rnd(s, 0, 99) < star_pct)
		return sprintf(out, "*");
	parts = rnd(s, 0, 4) == 0 ? rnd(s, 2, 3) : 1;
	for (int i = 0; i < parts; i++) {
		if (i)
			out[n++] = ',';
		n += gen_element(s, out + n, lo, hi, hot, n_hot, names);
	}
	return n;
}

static void gen_expr(uint64_t *s, char *out)
{
	static const int hot_minutes[] = { 0, 15, 30, 45, 59 };
	static const int hot_hours[] = { 0, 1, 2, 3 };
	static const int hot_days[] = { 1, 4, 5, 8, 25, 29, 31 };
	static const int hot_months[] = { 3, 4, 10, 11 };
	static const char *const months[] = { "jan", "FEB", "Mar", "apr", "may", "jun", "jul" };
	static const char *const days[] = { "sun", "Mon", "TUE", "wed", "thu", "fri", "sat" };
	int n = 0;

	n += gen_field(s, out + n, 10, 0, 59, hot_minutes, 5, NULL);
	out[n++] = ' ';
	n += gen_field(s, out + n, 35, 0, 23, hot_hours, 4, NULL);
	out[n++] = ' ';
	n += gen_field(s, out + n, 65, 1, 31, hot_days, 7, NULL);
	out[n++] = ' ';
	n += gen_field(s, out + n, 55, 1, 12, hot_months, 4, months);
	out[n++] = ' ';
	gen_field(s, out + n, 60, 0, 7, NULL, 0, days);
}

static void test_property_against_oracle(void **state)
{
	static const char *const fixed[] = {
		"0 2 * * *",	   "30 2 * * *",     "* 2 * * *",	   "*/15 * * * *",
		"0 * * * *",	   "15,45 1-3 * * *", "0 0 13 * fri",	   "59 23 31 12 *",
		"0 0 29 2 *",	   "0 0 30 2 *",     "*/7 2 * mar,oct sun", "45 1 * * *",
		"* * * * *",	   "30 1,2 * * sun",
	};
	enum { N_RANDOM = 48, CAP = 600000 };
	struct table tables[4];
	int64_t *want = malloc(CAP * sizeof(*want)), *got = malloc(CAP * sizeof(*got));
	size_t n_exprs = 0, total_fires = 0;
	uint64_t seed = 20260329;
	char exprs[sizeof(fixed) / sizeof(fixed[0]) + N_RANDOM][128];
	char a[32], b[32];

	assert_non_null(want);
	assert_non_null(got);
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		snprintf(exprs[n_exprs++], sizeof(exprs[0]), "%s", fixed[i]);
	for (int i = 0; i < N_RANDOM; i++)
		gen_expr(&seed, exprs[n_exprs++]);

	table_build(&tables[0], "Europe/Rome", 2026);
	table_build(&tables[1], "America/New_York", 2026);
	table_build(&tables[2], "Australia/Lord_Howe", 2026);
	table_build(&tables[3], "Australia/Lord_Howe", 2045);	/* footer rule */

	for (size_t z = 0; z < 4; z++) {
		const struct table *t = &tables[z];

		for (size_t e = 0; e < n_exprs; e++) {
			struct cron_expr ce;
			char err[256];
			size_t n_want, n_got = 0;
			int64_t after = t->from, next;
			int r;

			if (cron_parse(exprs[e], &ce, err, sizeof(err)) < 0)
				fail_msg("generated \"%s\": %s", exprs[e], err);
			n_want = oracle(t, &ce, want, CAP);
			for (;;) {
				r = cron_next(&ce, t->tz, after, &next);
				if (r == -ERANGE || (r == 0 && next >= t->to))
					break;
				assert_int_equal(r, 0);
				assert_true(next > after);
				assert_true(n_got < CAP);
				got[n_got++] = next;
				after = next;
			}
			for (size_t i = 0; i < n_want || i < n_got; i++) {
				if (i < n_want && i < n_got && want[i] == got[i])
					continue;
				fail_msg("%s %s \"%s\": fire %zu: oracle %s, cron_next %s "
					 "(%zu vs %zu fires)", t->zone, fmt_utc(t->from, b),
					 exprs[e], i, i < n_want ? fmt_utc(want[i], a) : "none",
					 i < n_got ? fmt_utc(got[i], b) : "none", n_want, n_got);
			}
			total_fires += n_got;
		}
	}
	/* Guard against a vacuous pass. */
	assert_true(total_fires > 100000);
	for (size_t z = 0; z < 4; z++) {
		tzfile_free(tables[z].tz);
		free(tables[z].m);
	}
	free(want);
	free(got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_accept),
		cmocka_unit_test(test_parse_reject),
		cmocka_unit_test(test_star_flags),
		cmocka_unit_test(test_matches_vixie_day_rule),
		cmocka_unit_test(test_rome_2026),
		cmocka_unit_test(test_new_york_2026),
		cmocka_unit_test(test_odd_offsets),
		cmocka_unit_test(test_utc),
		cmocka_unit_test(test_footer_2045),
		cmocka_unit_test(test_property_against_oracle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
