/* SPDX-License-Identifier: MIT */
/*
 * Cron expressions: the classic five fields "minute hour day-of-month month day-of-week", read in
 * a time zone, and the search for the next fire time.
 *
 * Syntax (Vixie cron): each field is a comma-separated list of "*", "N", "N-M", or either of the
 * first and last followed by a step "/S" ("*" then "/15": every 15 minutes; "1-30/5"). Month and
 * day-of-week also accept case-insensitive three-letter names (jan-dec, sun-sat), in ranges too.
 * Day-of-week 0 and 7 are both Sunday, and a range ending in Sunday ("mon-sun") means up to 7.
 * A step needs "*" or a range before it: "5/15" is rejected (write "5-59/15"), as are reversed
 * ranges ("5-1"), steps of 0 or above the field's maximum, and anything else out of range. Fields
 * are separated by blanks. The macros @hourly, @daily, @midnight, @weekly, @monthly, @yearly and
 * @annually stand for the usual expressions; @reboot is not a schedule and is rejected.
 *
 * Days (Vixie rule): if both day-of-month and day-of-week are restricted, a day matches when
 * EITHER matches ("0 0 13 * fri" fires on every 13th and every Friday). A field counts as
 * unrestricted when it starts with "*", so a stepped "*" in day-of-month still combines with
 * day-of-week by AND, as in Vixie cron and cronie.
 *
 * Time zones and DST: a schedule fires at every instant at which the zone's local wall clock
 * first reaches a matching minute. Consequently:
 *  - a matching wall time skipped by a spring-forward gap fires once, at the first instant after
 *    the gap (like cronie/Vixie cron for jobs in the skipped hour); several skipped matches
 *    collapse into that one fire, together with a match at the gap's end itself. In Europe/Rome,
 *    "0 2 * * *" fires on 2026-03-29 at 03:00 CEST (01:00 UTC);
 *  - a matching wall time repeated by a fall-back overlap fires only at its first occurrence, and
 *    nothing fires while the clock replays times it has already shown: "30 2 * * *" fires on
 *    2026-10-25 at 02:30 CEST only, and an every-15-minutes schedule pauses for the repeated
 *    hour.
 * So no daily job runs twice or is lost on a DST change. Formally, with H(t) the latest wall time
 * shown at or before instant t, a fire happens at t for every matching minute W with
 * H(t - 1 s) < W <= H(t).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct tz;

/* The longest expression accepted, without the terminating NUL. */
#define CRON_EXPR_MAX 256

/* How far cron_next() searches before concluding that an expression never fires. */
#define CRON_SEARCH_YEARS 5

#define CRON_DOM_STAR (1u << 0)	/* day-of-month field starts with "*" */
#define CRON_DOW_STAR (1u << 1)	/* day-of-week field starts with "*" */

/* A parsed expression: a plain value (bitmasks), no allocation, freely copyable. */
struct cron_expr {
	uint64_t minutes;	/* bit n: minute n, 0-59 */
	uint32_t hours;		/* bit n: hour n, 0-23 */
	uint32_t days;		/* bit n: day of month n, 1-31 */
	uint16_t months;	/* bit n: month n, 1-12 */
	uint8_t weekdays;	/* bit n: weekday n, 0 (Sunday) - 6 */
	uint8_t flags;		/* CRON_DOM_STAR | CRON_DOW_STAR */
};

/*
 * Parses @expr (at most CRON_EXPR_MAX characters; leading and trailing blanks are ignored).
 * Returns 0 and fills *ret, or -EINVAL with a message in @err that names the field and the
 * offending text, e.g. 'minute field "61" out of range 0-59'.
 */
int cron_parse(const char *expr, struct cron_expr *ret, char *err, size_t errlen);

/*
 * The first fire time of @ce in zone @tz strictly after @after_utc (see DST rules above).
 * Fire times fall on whole local minutes, so they are whole UTC minutes unless the zone's offset
 * has seconds (historical local mean time). Returns 0 and stores it in *ret_next_utc, or -ERANGE
 * if @after_utc is outside TZ_UTC_MIN..TZ_UTC_MAX or nothing fires within CRON_SEARCH_YEARS
 * years (e.g. "0 0 30 2 *").
 */
int cron_next(const struct cron_expr *ce, const struct tz *tz, int64_t after_utc,
	      int64_t *ret_next_utc);

/*
 * Whether the wall-clock minute in @local matches @ce: reads tm_min, tm_hour, tm_mday, tm_mon
 * and tm_wday (which must be consistent with the date; tzfile_utc_to_local sets it). Out-of-range
 * fields never match.
 */
bool cron_matches_local(const struct cron_expr *ce, const struct tm *local);
