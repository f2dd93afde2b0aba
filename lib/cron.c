/* SPDX-License-Identifier: MIT */
/*
 * Cron expression parser and next-fire search. A parsed expression is five bitmasks, so matching
 * is a handful of bit tests and the search skips whole months, days and hours with
 * count-trailing-zeros instead of stepping minute by minute.
 *
 * The search runs in two clean halves. First, on the naive wall-clock line (local seconds, no
 * zone): the first matching minute W after the highest wall time the zone's clock has shown so
 * far. Second, in the zone: the first instant at which the clock reaches W or later. Gaps and
 * overlaps need no special cases: a W skipped by a gap is first "reached" at the gap's end, and
 * the high-water mark keeps an overlap from re-firing times already shown. See cron.h for the
 * user-visible rules.
 *
 * Invariant: cron_parse only ever produces masks with bits inside each field's range and at least
 * one bit set in every field, with day-of-week 7 already folded onto 0.
 */
#include "cron.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "tzfile.h"
#include "util.h"

#define SECS_PER_DAY 86400

#define MINUTES_VALID ((UINT64_C(1) << 60) - 1)
#define HOURS_VALID ((UINT32_C(1) << 24) - 1)
#define DAYS_VALID (UINT32_C(0xfffffffe))
#define MONTHS_VALID ((uint16_t)0x1ffe)
#define WEEKDAYS_VALID ((uint8_t)0x7f)

enum field { F_MINUTE, F_HOUR, F_DOM, F_MONTH, F_DOW, F_COUNT };

static const char *const month_names[] = { "jan", "feb", "mar", "apr", "may", "jun",
					   "jul", "aug", "sep", "oct", "nov", "dec" };
static const char *const weekday_names[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat" };

static const struct field_def {
	const char *name;
	int min, max;
	const char *const *names;	/* names[i] stands for min + i */
	size_t n_names;
	const char *hint;		/* what a valid value looks like */
} field_defs[F_COUNT] = {
	[F_MINUTE] = { "minute", 0, 59, NULL, 0, "0-59" },
	[F_HOUR] = { "hour", 0, 23, NULL, 0, "0-23" },
	[F_DOM] = { "day-of-month", 1, 31, NULL, 0, "1-31" },
	[F_MONTH] = { "month", 1, 12, month_names, 12, "1-12 or jan-dec" },
	[F_DOW] = { "day-of-week", 0, 7, weekday_names, 7, "0-7 or sun-sat" },
};

static const struct {
	const char *name;
	const char *expr;
} macros[] = {
	{ "@yearly", "0 0 1 1 *" },	{ "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
	{ "@weekly", "0 0 * * 0" },	{ "@daily", "0 0 * * *" },    { "@midnight", "0 0 * * *" },
	{ "@hourly", "0 * * * *" },
};

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Quotes at most 40 characters of user text into @out, masking control characters and quotes so
 * that an error message stays one readable line. */
static const char *quote(char out[48], const char *s, size_t len)
{
	size_t i, n = len > 40 ? 37 : len;

	for (i = 0; i < n; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
	if (n < len) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
	return out;
}

/*
 * Parses one value (number or name) at *p, advancing *p. Values are bounded before they can
 * overflow: anything with more than four digits is out of range anyway.
 */
static int parse_value(const struct field_def *f, const char **p, const char *end, int *ret,
		       char *err, size_t errlen)
{
	const char *s = *p;
	char q[48];
	int v = 0;

	if (s < end && *s >= '0' && *s <= '9') {
		while (s < end && *s >= '0' && *s <= '9') {
			if (v < 10000)
				v = v * 10 + (*s - '0');
			s++;
		}
		if (v < f->min || v > f->max)
			return set_error(err, errlen, -EINVAL, "%s field \"%s\" out of range %d-%d",
					 f->name, quote(q, *p, (size_t)(s - *p)), f->min, f->max);
		*p = s;
		*ret = v;
		return 0;
	}
	while (s < end && ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z')))
		s++;
	if (s - *p == 3)
		for (size_t i = 0; i < f->n_names; i++)
			if (lower((*p)[0]) == f->names[i][0] && lower((*p)[1]) == f->names[i][1] &&
			    lower((*p)[2]) == f->names[i][2]) {
				*p = s;
				*ret = f->min + (int)i;
				return 0;
			}
	if (s == *p) {
		/* Not even a word: report the single offending character. */
		if (s == end)
			return set_error(err, errlen, -EINVAL, "%s field: missing value (%s)",
					 f->name, f->hint);
		s++;
	}
	return set_error(err, errlen, -EINVAL, "%s field \"%s\" is not a valid value (%s)",
			 f->name, quote(q, *p, (size_t)(s - *p)), f->hint);
}

/* One list element: "*", "N", "N-M", each optionally followed by "/S". */
static int parse_element(const struct field_def *f, const char *s, const char *end,
			 uint64_t *bits, char *err, size_t errlen)
{
	const char *elem = s;
	int lo, hi, step = 1, r;
	bool range = false;
	char q[48], q2[48];

	if (s < end && *s == '*') {
		lo = f->min;
		hi = f->max;
		range = true;
		s++;
	} else {
		r = parse_value(f, &s, end, &lo, err, errlen);
		if (r < 0)
			return r;
		hi = lo;
		if (s < end && *s == '-') {
			s++;
			r = parse_value(f, &s, end, &hi, err, errlen);
			if (r < 0)
				return r;
			/* "mon-sun": 7 is the only sensible reading of a range ending in 0. */
			if (f->max == 7 && hi == 0 && lo > 0)
				hi = 7;
			if (hi < lo)
				return set_error(err, errlen, -EINVAL,
						 "%s field \"%s\": range start is after its end "
						 "(ranges do not wrap around)", f->name,
						 quote(q, elem, (size_t)(end - elem)));
			range = true;
		}
	}
	if (s < end && *s == '/') {
		const char *step_text = ++s;

		if (!range)
			return set_error(err, errlen, -EINVAL,
					 "%s field \"%s\": a step needs \"*\" or a range before "
					 "\"/\" (e.g. \"%d-%d/%s\")", f->name,
					 quote(q, elem, (size_t)(end - elem)), lo, f->max,
					 quote(q2, step_text, (size_t)(end - step_text)));
		step = 0;
		while (s < end && *s >= '0' && *s <= '9') {
			if (step < 10000)
				step = step * 10 + (*s - '0');
			s++;
		}
		if (s == step_text)
			return set_error(err, errlen, -EINVAL,
					 "%s field \"%s\": missing step after \"/\"", f->name,
					 quote(q, elem, (size_t)(end - elem)));
		if (step < 1 || step > f->max)
			return set_error(err, errlen, -EINVAL,
					 "%s field \"%s\": step %.*s out of range 1-%d", f->name,
					 quote(q, elem, (size_t)(end - elem)),
					 (int)(s - step_text > 6 ? 6 : s - step_text), step_text,
					 f->max);
	}
	if (s < end)
		return set_error(err, errlen, -EINVAL,
				 "%s field \"%s\": unexpected character '%c'", f->name,
				 quote(q, elem, (size_t)(end - elem)),
				 *s >= 0x20 && *s < 0x7f ? *s : '?');
	for (int v = lo; v <= hi; v += step)
		*bits |= UINT64_C(1) << v;
	return 0;
}

static int parse_field(enum field which, const char *s, const char *end, uint64_t *ret_bits,
		       char *err, size_t errlen)
{
	const struct field_def *f = &field_defs[which];
	const char *field = s;
	uint64_t bits = 0;
	char q[48];

	for (;;) {
		const char *comma = memchr(s, ',', (size_t)(end - s));
		const char *elem_end = comma ? comma : end;
		int r;

		if (elem_end == s)
			return set_error(err, errlen, -EINVAL,
					 "%s field \"%s\" has an empty list element", f->name,
					 quote(q, field, (size_t)(end - field)));
		r = parse_element(f, s, elem_end, &bits, err, errlen);
		if (r < 0)
			return r;
		if (!comma)
			break;
		s = comma + 1;
	}
	*ret_bits = bits;
	return 0;
}

int cron_parse(const char *expr, struct cron_expr *ret, char *err, size_t errlen)
{
	const char *start[F_COUNT + 1], *end[F_COUNT + 1], *s, *e;
	uint64_t bits[F_COUNT];
	size_t len, n = 0;
	char q[48];
	int r;

	if (!expr)
		return set_error(err, errlen, -EINVAL, "no cron expression");
	len = strnlen(expr, CRON_EXPR_MAX + 1);
	if (len > CRON_EXPR_MAX)
		return set_error(err, errlen, -EINVAL,
				 "cron expression is longer than %d characters", CRON_EXPR_MAX);
	s = expr;
	e = expr + len;
	while (s < e && is_blank(*s))
		s++;
	while (e > s && is_blank(e[-1]))
		e--;
	if (s == e)
		return set_error(err, errlen, -EINVAL,
				 "empty cron expression (expected \"minute hour day-of-month month "
				 "day-of-week\", e.g. \"0 2 * * *\")");

	if (*s == '@') {
		const char *word_end = s;

		while (word_end < e && !is_blank(*word_end))
			word_end++;
		for (size_t i = 0; i < ELEMENTSOF(macros); i++) {
			size_t mlen = strlen(macros[i].name);

			if ((size_t)(word_end - s) != mlen || strncasecmp(s, macros[i].name, mlen))
				continue;
			if (word_end != e)
				return set_error(err, errlen, -EINVAL,
						 "unexpected text after \"%s\": a macro "
						 "replaces all five fields", macros[i].name);
			return cron_parse(macros[i].expr, ret, err, errlen);
		}
		if (word_end - s == 7 && !strncasecmp(s, "@reboot", 7))
			return set_error(err, errlen, -EINVAL,
					 "\"@reboot\" is not supported: exports run on a time "
					 "schedule, not at daemon start");
		return set_error(err, errlen, -EINVAL,
				 "unknown macro \"%s\" (supported: @hourly, @daily, @midnight, "
				 "@weekly, @monthly, @yearly, @annually)",
				 quote(q, s, (size_t)(word_end - s)));
	}

	/* Split first, so that a wrong field count is reported before any field's contents. */
	while (s < e) {
		if (n < ELEMENTSOF(start))
			start[n] = s;
		while (s < e && !is_blank(*s))
			s++;
		if (n < ELEMENTSOF(end))
			end[n] = s;
		n++;
		while (s < e && is_blank(*s))
			s++;
	}
	if (n != F_COUNT)
		return set_error(err, errlen, -EINVAL,
				 "expected 5 fields (minute hour day-of-month month day-of-week), "
				 "got %zu%s", n,
				 n == 6 ? " (seconds and years are not supported)" : "");

	for (int i = 0; i < F_COUNT; i++) {
		r = parse_field((enum field)i, start[i], end[i], &bits[i], err, errlen);
		if (r < 0)
			return r;
	}

	memset(ret, 0, sizeof(*ret));
	ret->minutes = bits[F_MINUTE];
	ret->hours = (uint32_t)bits[F_HOUR];
	ret->days = (uint32_t)bits[F_DOM];
	ret->months = (uint16_t)bits[F_MONTH];
	ret->weekdays = (uint8_t)((bits[F_DOW] | bits[F_DOW] >> 7) & WEEKDAYS_VALID);
	ret->flags = (*start[F_DOM] == '*' ? CRON_DOM_STAR : 0) |
		     (*start[F_DOW] == '*' ? CRON_DOW_STAR : 0);
	return 0;
}

/* --- Matching and search --------------------------------------------------------------------- */

static bool dom_or_dow(const struct cron_expr *ce, bool dom, bool dow)
{
	/* Vixie: only when both fields are restricted does either one suffice. */
	if (!(ce->flags & (CRON_DOM_STAR | CRON_DOW_STAR)))
		return dom || dow;
	return dom && dow;
}

bool cron_matches_local(const struct cron_expr *ce, const struct tm *local)
{
	if (local->tm_min < 0 || local->tm_min > 59 || local->tm_hour < 0 || local->tm_hour > 23 ||
	    local->tm_mday < 1 || local->tm_mday > 31 || local->tm_mon < 0 || local->tm_mon > 11 ||
	    local->tm_wday < 0 || local->tm_wday > 6)
		return false;
	return (ce->minutes >> local->tm_min & 1) && (ce->hours >> local->tm_hour & 1) &&
	       (ce->months >> (local->tm_mon + 1) & 1) &&
	       dom_or_dow(ce, ce->days >> local->tm_mday & 1, ce->weekdays >> local->tm_wday & 1);
}

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int days_in_month(int64_t y, int m)
{
	static const int dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);

	return m == 2 && leap ? 29 : dim[m - 1];
}

/* Bit d set for each day d of the month that matches both day fields (per the Vixie rule). */
static uint64_t month_day_mask(const struct cron_expr *ce, int64_t year, int month)
{
	int64_t first = tzfile_days_from_civil(year, month, 1);
	int first_wday = (int)(first + 4 - floor_div(first + 4, 7) * 7);
	/* The 7-bit weekday pattern repeated nine times: bit k <-> weekday k % 7. */
	uint64_t weekly = ce->weekdays * UINT64_C(0x0102040810204081);
	uint64_t by_dow = (weekly >> first_wday) << 1;
	uint64_t in_month = ((UINT64_C(1) << days_in_month(year, month)) - 1) << 1;
	uint64_t by_dom = ce->days;

	if (!(ce->flags & (CRON_DOM_STAR | CRON_DOW_STAR)))
		return (by_dom | by_dow) & in_month;
	return by_dom & by_dow & in_month;
}

/* Bits of @mask at position @from or above. */
static uint64_t bits_from(uint64_t mask, int from)
{
	return from >= 64 ? 0 : mask & ~((UINT64_C(1) << from) - 1);
}

/*
 * The first matching minute at or after @from on the naive wall-clock line (local seconds; @from
 * on a whole minute). Each step either lands on a match or moves to the next candidate month,
 * day or hour, so a search costs a few dozen iterations at worst.
 */
static int next_wall_match(const struct cron_expr *ce, int64_t from, int64_t *ret_wall)
{
	int64_t days = floor_div(from, SECS_PER_DAY), year, last_year;
	int secs = (int)(from - days * SECS_PER_DAY), month, mday, hour = secs / 3600;
	int minute = secs / 60 % 60;
	uint64_t m;

	tzfile_civil_from_days(days, &year, &month, &mday);
	last_year = year + CRON_SEARCH_YEARS;
	for (;;) {
		if (year > last_year)
			return -ERANGE;
		if (!(ce->months >> month & 1)) {
			m = bits_from(ce->months, month + 1);
			if (m) {
				month = __builtin_ctzll(m);
			} else {
				year++;
				month = __builtin_ctz(ce->months);
			}
			mday = 1;
			hour = minute = 0;
			continue;
		}
		m = bits_from(month_day_mask(ce, year, month), mday);
		if (!m) {
			if (++month > 12) {
				month = 1;
				year++;
			}
			mday = 1;
			hour = minute = 0;
			continue;
		}
		if (__builtin_ctzll(m) != mday) {
			mday = __builtin_ctzll(m);
			hour = minute = 0;
		}
		m = bits_from(ce->hours, hour);
		if (!m) {
			mday++;
			hour = minute = 0;
			continue;
		}
		if (__builtin_ctzll(m) != hour) {
			hour = __builtin_ctzll(m);
			minute = 0;
		}
		m = bits_from(ce->minutes, minute);
		if (!m) {
			hour++;
			minute = 0;
			continue;
		}
		minute = __builtin_ctzll(m);
		*ret_wall = tzfile_days_from_civil(year, month, mday) * SECS_PER_DAY + hour * 3600 +
			    minute * 60;
		return 0;
	}
}

int cron_next(const struct cron_expr *ce, const struct tz *tz, int64_t after_utc,
	      int64_t *ret_next_utc)
{
	struct tz_span span;
	int64_t high, wall, t, u, start;
	int r;

	if (!(ce->minutes & MINUTES_VALID) || !(ce->hours & HOURS_VALID) ||
	    !(ce->months & MONTHS_VALID) ||
	    !((ce->days & DAYS_VALID) | (ce->weekdays & WEEKDAYS_VALID)))
		return -EINVAL;
	r = tzfile_span_at(tz, after_utc, &span);
	if (r < 0)
		return r;

	/*
	 * The high-water mark of the wall clock up to @after_utc: after a fall-back the clock
	 * shows earlier times than it did shortly before. Only the last 2 * TZ_OFFSET_MAX seconds
	 * can matter, as earlier instants' wall times are below the current one.
	 */
	high = after_utc + span.offset;
	for (start = span.start; start > after_utc - 2 * TZ_OFFSET_MAX; start = span.start) {
		if (tzfile_span_at(tz, start - 1, &span) < 0)
			break;
		if (start - 1 + span.offset > high)
			high = start - 1 + span.offset;
	}

	/* Sanitised copy so that stray bits in a hand-made struct cannot index past a field. */
	struct cron_expr clean = {
		.minutes = ce->minutes & MINUTES_VALID,
		.hours = ce->hours & HOURS_VALID,
		.days = ce->days & DAYS_VALID,
		.months = ce->months & MONTHS_VALID,
		.weekdays = ce->weekdays & WEEKDAYS_VALID,
		.flags = ce->flags,
	};
	r = next_wall_match(&clean, floor_div(high, 60) * 60 + 60, &wall);
	if (r < 0)
		return r;

	/* The first instant at which the wall clock reads @wall or later: never before
	 * wall - TZ_OFFSET_MAX, and past @after_utc because @wall is above the high-water mark. */
	t = wall - TZ_OFFSET_MAX > after_utc ? wall - TZ_OFFSET_MAX : after_utc + 1;
	for (;;) {
		r = tzfile_span_at(tz, t, &span);
		if (r < 0)
			return r;
		if (t + span.offset >= wall) {
			u = t;
			break;
		}
		u = wall - span.offset;
		if (u < span.end)
			break;
		t = span.end;
	}
	if (u > TZ_UTC_MAX)
		return -ERANGE;
	*ret_next_utc = u;
	return 0;
}
