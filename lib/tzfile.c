/* SPDX-License-Identifier: MIT */
/*
 * TZif reader (RFC 8536 and its successor RFC 9636) and POSIX TZ rule evaluator. A loaded zone is
 * an ascending array of transition instants, each naming a local time type (offset, DST flag,
 * abbreviation), plus an optional footer rule that governs every instant after the last
 * transition. Everything is validated while parsing, so lookups never need to re-check: types
 * referenced by transitions exist, abbreviations are NUL-terminated inside the copied string table,
 * transitions strictly ascend, every offset lies within +-TZ_OFFSET_MAX.
 *
 * That offset bound is what keeps the conversions cheap and overflow-free: any UTC instant whose
 * wall clock reads L lies within L +- TZ_OFFSET_MAX, so local -> UTC only inspects the few spans
 * in that window. Spans are clipped to SPAN_MIN..SPAN_MAX, which leaves room for that window
 * around the public range without int64 overflow even for files with transitions at -2^63.
 *
 * Input bytes are untrusted (the parser is fuzzed): every read is bounds-checked against the
 * buffer and all counts are bounded by the file size before any multiplication.
 */
#include "tzfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define SECS_PER_DAY 86400
#define DEFAULT_ZONEINFO_DIR "/usr/share/zoneinfo"

/* Margins of eight days keep every internal window (at most +-2 * TZ_OFFSET_MAX) in range. */
#define SPAN_MIN (TZ_UTC_MIN - 8 * SECS_PER_DAY)
#define SPAN_MAX (TZ_UTC_MAX + 8 * SECS_PER_DAY)

#define TZIF_HEADER_LEN 44
#define ABBR_MAX 32
#define FOOTER_MAX 256
#define RULE_HOURS_MAX 167	/* RFC 8536 section 3.3.1 extension of POSIX's 24 */

struct tz_type {
	int32_t offset;
	bool is_dst;
	const char *abbr;	/* points into struct tz.chars */
};

/* When a rule transition happens: a day of the year plus a local time of day. */
struct rule_date {
	char kind;		/* 'J': Jn (1-365, no Feb 29), 'D': n (0-365), 'M': Mm.w.d */
	int day;		/* J and D: n; M: weekday d (0 = Sunday) */
	int week;		/* M: 1-5, 5 meaning the last */
	int month;		/* M: 1-12 */
	int32_t time;		/* seconds after local midnight, +-RULE_HOURS_MAX hours */
};

struct rule {
	int32_t std_offset;	/* seconds east of UTC, i.e. the negated POSIX offset */
	int32_t dst_offset;
	bool has_dst;
	bool always_dst;	/* has_dst, but no year has a transition: DST forever */
	char std_abbr[ABBR_MAX + 1];
	char dst_abbr[ABBR_MAX + 1];
	struct rule_date start;	/* into DST, at a wall time in standard time */
	struct rule_date end;	/* out of DST, at a wall time in DST */
};

struct tz {
	char *name;
	char label[64];		/* the name made safe to quote in error messages */
	size_t n_times;
	int64_t *times;		/* strictly ascending */
	uint8_t *time_types;	/* index into types for each transition */
	size_t n_types;		/* >= 1; types[0] applies before the first transition */
	struct tz_type *types;
	char *chars;		/* abbreviation table, with one extra NUL appended */
	bool has_rule;
	struct rule rule;
};

static void tzfile_freep(struct tz **tz)
{
	tzfile_free(*tz);
}

struct tzif_header {
	char version;		/* 0 for version 1, else the ASCII digit */
	uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static bool is_leap(int64_t y)
{
	return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

static int days_in_month(int64_t y, int m)
{
	static const int dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Howard Hinnant's days_from_civil / civil_from_days: exact, branch-light, valid for all int64
 * years whose day count fits. */
int64_t tzfile_days_from_civil(int64_t year, int month, int mday)
{
	int64_t y = year - (month <= 2);
	int64_t era = floor_div(y, 400);
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + mday - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

	return era * 146097 + doe - 719468;
}

void tzfile_civil_from_days(int64_t days, int64_t *ret_year, int *ret_month, int *ret_mday)
{
	int64_t z = days + 719468;
	int64_t era = floor_div(z, 146097);
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	int month = (int)(mp < 10 ? mp + 3 : mp - 9);

	*ret_mday = (int)(doy - (153 * mp + 2) / 5 + 1);
	*ret_month = month;
	*ret_year = yoe + era * 400 + (month <= 2);
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday_of_days(int64_t days)
{
	return (int)(days + 4 - floor_div(days + 4, 7) * 7);
}

/* Copies at most 48 characters of untrusted text for an error message, masking anything that
 * could garble a log line or a terminal. */
static const char *sanitize(char out[64], const char *in)
{
	size_t i;

	for (i = 0; in[i] && i < 48; i++)
		out[i] = (in[i] >= 0x20 && in[i] < 0x7f && in[i] != '"') ? in[i] : '?';
	if (in[i]) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
	return out;
}

/* --- POSIX TZ rule arithmetic ---------------------------------------------------------- */

/* The UTC instant at which @d happens in @year, its wall time being read at @offset. */
static int64_t rule_instant(const struct rule_date *d, int64_t year, int32_t offset)
{
	int64_t jan1 = tzfile_days_from_civil(year, 1, 1), day;

	switch (d->kind) {
	case 'J':
		day = jan1 + d->day - 1 + (is_leap(year) && d->day >= 60);
		break;
	case 'D':
		day = jan1 + d->day;
		break;
	default: {
		int64_t first = tzfile_days_from_civil(year, d->month, 1);
		int mday = 1 + (d->day - weekday_of_days(first) + 7) % 7 + (d->week - 1) * 7;

		while (mday > days_in_month(year, d->month))
			mday -= 7;
		day = first + mday - 1;
		break;
	}
	}
	return day * SECS_PER_DAY + d->time - offset;
}

struct rule_event {
	int64_t at;
	bool to_dst;
};

/*
 * The rule's transitions in @year; none when DST covers the whole year (RFC 8536 section 3.3.1:
 * "EST5EDT,0/0,J365/25" is permanent DST), which is also what tzcode concludes.
 */
static size_t rule_year_events(const struct rule *r, int64_t year, struct rule_event *ev)
{
	int64_t start = rule_instant(&r->start, year, r->std_offset);
	int64_t end = rule_instant(&r->end, year, r->dst_offset);
	int64_t year_secs = (is_leap(year) ? 366 : 365) * (int64_t)SECS_PER_DAY;

	if (end < start) {
		ev[0] = (struct rule_event){ end, false };
		ev[1] = (struct rule_event){ start, true };
		return 2;
	}
	if (start < end && end - start < year_secs) {
		ev[0] = (struct rule_event){ start, true };
		ev[1] = (struct rule_event){ end, false };
		return 2;
	}
	return 0;
}

/* --- TZif parsing ------------------------------------------------------------------------- */

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* @used: the block will be parsed, not merely skipped (zic -b slim writes an empty-ish one). */
static int parse_header(const uint8_t *p, size_t left, bool used, struct tzif_header *h,
			const char *name, char *err, size_t errlen)
{
	if (left < TZIF_HEADER_LEN)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": truncated TZif header (%zu bytes left, need %d)",
				 name, left, TZIF_HEADER_LEN);
	if (memcmp(p, "TZif", 4) != 0)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": not a TZif file (bad magic)", name);
	h->version = (char)p[4];
	h->isutcnt = get_be32(p + 20);
	h->isstdcnt = get_be32(p + 24);
	h->leapcnt = get_be32(p + 28);
	h->timecnt = get_be32(p + 32);
	h->typecnt = get_be32(p + 36);
	h->charcnt = get_be32(p + 40);
	if (!used)
		return 0;
	if (h->typecnt == 0 || h->typecnt > 256 || h->charcnt == 0)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": malformed TZif header (%u types, %u abbreviation "
				 "bytes)", name, h->typecnt, h->charcnt);
	if ((h->isutcnt != 0 && h->isutcnt != h->typecnt) ||
	    (h->isstdcnt != 0 && h->isstdcnt != h->typecnt))
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": malformed TZif header (indicator counts do not "
				 "match type count)", name);
	return 0;
}

/* Size of a data block; uint64_t cannot overflow from six 32-bit counts times at most 12. */
static uint64_t block_size(const struct tzif_header *h, unsigned time_size)
{
	return (uint64_t)h->timecnt * (time_size + 1) + (uint64_t)h->typecnt * 6 + h->charcnt +
	       (uint64_t)h->leapcnt * (time_size + 4) + h->isstdcnt + h->isutcnt;
}

static int parse_block(struct tz *tz, const uint8_t *p, const struct tzif_header *h,
		       unsigned time_size, char *err, size_t errlen)
{
	const uint8_t *q;

	if (h->leapcnt != 0)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": leap-second TZif files (\"right/\" zones) are not "
				 "supported; use the POSIX zone of the same name", tz->label);

	tz->n_times = h->timecnt;
	tz->n_types = h->typecnt;
	tz->times = malloc(sizeof(*tz->times) * (h->timecnt ? h->timecnt : 1));
	tz->time_types = malloc(h->timecnt ? h->timecnt : 1);
	tz->types = malloc(sizeof(*tz->types) * h->typecnt);
	tz->chars = malloc((size_t)h->charcnt + 1);
	if (!tz->times || !tz->time_types || !tz->types || !tz->chars)
		return -ENOMEM;

	for (uint32_t i = 0; i < h->timecnt; i++) {
		const uint8_t *t = p + (size_t)i * time_size;

		tz->times[i] = time_size == 8 ? (int64_t)get_be64(t) : (int32_t)get_be32(t);
		if (i > 0 && tz->times[i] <= tz->times[i - 1])
			return set_error(err, errlen, -EINVAL,
					 "zone \"%s\": malformed TZif data (transition %u is not "
					 "after transition %u)", tz->label, i, i - 1);
	}
	q = p + (size_t)h->timecnt * time_size;
	for (uint32_t i = 0; i < h->timecnt; i++) {
		if (q[i] >= h->typecnt)
			return set_error(err, errlen, -EINVAL,
					 "zone \"%s\": malformed TZif data (transition %u uses "
					 "type %u of %u)", tz->label, i, q[i], h->typecnt);
		tz->time_types[i] = q[i];
	}
	q += h->timecnt;

	const uint8_t *types = q;
	q += (size_t)h->typecnt * 6;
	memcpy(tz->chars, q, h->charcnt);
	tz->chars[h->charcnt] = '\0';
	for (uint32_t i = 0; i < h->typecnt; i++) {
		const uint8_t *t = types + (size_t)i * 6;
		int32_t offset = (int32_t)get_be32(t);
		uint8_t desig = t[5];

		if (offset < -TZ_OFFSET_MAX || offset > TZ_OFFSET_MAX || t[4] > 1 ||
		    desig >= h->charcnt || !memchr(tz->chars + desig, '\0', h->charcnt - desig))
			return set_error(err, errlen, -EINVAL,
					 "zone \"%s\": malformed TZif data (local time type %u: "
					 "offset %d, DST flag %u, abbreviation index %u)",
					 tz->label, i, offset, t[4], desig);
		tz->types[i] = (struct tz_type){ offset, t[4] == 1, tz->chars + desig };
	}
	q += h->charcnt;
	for (uint32_t i = 0; i < h->isstdcnt + h->isutcnt; i++)
		if (q[i] > 1)
			return set_error(err, errlen, -EINVAL,
					 "zone \"%s\": malformed TZif data (standard/UT indicator "
					 "%u is %u)", tz->label, i, q[i]);
	return 0;
}

static const char *parse_number(const char *s, int min, int max, int *ret)
{
	int v = 0, digits;

	/* Longer numbers are rejected below; stop accumulating before they overflow. */
	for (digits = 0; *s >= '0' && *s <= '9'; digits++, s++)
		if (digits < 4)
			v = v * 10 + (*s - '0');
	if (digits < 1 || digits > 3 || v < min || v > max)
		return NULL;
	*ret = v;
	return s;
}

/* Parses [+-]hh[:mm[:ss]] with hh <= max_hours. */
static const char *parse_hms(const char *s, int max_hours, int32_t *ret)
{
	int sign = 1, h, m = 0, sec = 0;

	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	if (!(s = parse_number(s, 0, max_hours, &h)))
		return NULL;
	if (*s == ':' && !(s = parse_number(s + 1, 0, 59, &m)))
		return NULL;
	if (*s == ':' && !(s = parse_number(s + 1, 0, 59, &sec)))
		return NULL;
	*ret = sign * (h * 3600 + m * 60 + sec);
	return s;
}

/* A POSIX abbreviation: 3+ letters, or <...> quoting letters, digits and signs. */
static const char *parse_abbr(const char *s, char out[ABBR_MAX + 1])
{
	const char *start;
	size_t len;

	if (*s == '<') {
		start = ++s;
		while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		       (*s >= '0' && *s <= '9') || *s == '+' || *s == '-')
			s++;
		if (*s != '>')
			return NULL;
		len = (size_t)(s++ - start);
	} else {
		start = s;
		while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'))
			s++;
		len = (size_t)(s - start);
	}
	if (len < 3 || len > ABBR_MAX)
		return NULL;
	memcpy(out, start, len);
	out[len] = '\0';
	return s;
}

static const char *parse_rule_date(const char *s, struct rule_date *d)
{
	if (*s == 'J') {
		d->kind = 'J';
		s = parse_number(s + 1, 1, 365, &d->day);
	} else if (*s == 'M') {
		d->kind = 'M';
		s = parse_number(s + 1, 1, 12, &d->month);
		if (!s || *s++ != '.')
			return NULL;
		s = parse_number(s, 1, 5, &d->week);
		if (!s || *s++ != '.')
			return NULL;
		s = parse_number(s, 0, 6, &d->day);
	} else {
		d->kind = 'D';
		s = parse_number(s, 0, 365, &d->day);
	}
	if (!s)
		return NULL;
	d->time = 2 * 3600;
	if (*s == '/')
		s = parse_hms(s + 1, RULE_HOURS_MAX, &d->time);
	return s;
}

/* std offset [dst [offset] ,start[/time],end[/time]], as in POSIX with the RFC 8536 extensions. */
static bool parse_posix_tz(const char *s, struct rule *r)
{
	int32_t v;

	s = parse_abbr(s, r->std_abbr);
	if (!s || !(s = parse_hms(s, 24, &v)))
		return false;
	r->std_offset = -v;
	if (*s == '\0')
		return true;
	if (!(s = parse_abbr(s, r->dst_abbr)))
		return false;
	r->has_dst = true;
	r->dst_offset = r->std_offset + 3600;
	if (*s != ',') {
		if (!(s = parse_hms(s, 24, &v)))
			return false;
		r->dst_offset = -v;
	}
	/* A DST rule without dates would need an implementation-defined default; zic never
	 * writes one, so it can only be corruption. */
	if (*s++ != ',' || !(s = parse_rule_date(s, &r->start)) || *s++ != ',' ||
	    !(s = parse_rule_date(s, &r->end)))
		return false;
	return *s == '\0';
}

static int parse_footer(struct tz *tz, const uint8_t *p, size_t left, char *err, size_t errlen)
{
	const uint8_t *nl;
	char buf[FOOTER_MAX + 1], tmp[64];
	size_t len;

	if (left < 2 || p[0] != '\n' || !(nl = memchr(p + 1, '\n', left - 1)))
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": missing TZ string footer (truncated TZif file?)",
				 tz->label);
	len = (size_t)(nl - (p + 1));
	if (len > FOOTER_MAX)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": TZ string footer longer than %d bytes", tz->label,
				 FOOTER_MAX);
	memcpy(buf, p + 1, len);
	buf[len] = '\0';
	if (len == 0)
		return 0;	/* no rule: the last transition's type holds forever */
	if (strlen(buf) != len || !parse_posix_tz(buf, &tz->rule) ||
	    tz->rule.std_offset < -TZ_OFFSET_MAX || tz->rule.std_offset > TZ_OFFSET_MAX ||
	    tz->rule.dst_offset < -TZ_OFFSET_MAX || tz->rule.dst_offset > TZ_OFFSET_MAX)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": malformed TZ string footer \"%s\"", tz->label,
				 sanitize(tmp, buf));
	/* Settled once here, so that lookups never scan centuries for a transition that never
	 * comes; the calendar repeats every 400 years. */
	if (tz->rule.has_dst) {
		struct rule_event ev[2];

		tz->rule.always_dst = true;
		for (int64_t y = 2000; y < 2400 && tz->rule.always_dst; y++)
			tz->rule.always_dst = rule_year_events(&tz->rule, y, ev) == 0;
	}
	tz->has_rule = true;
	return 0;
}

int tzfile_parse_buffer(const uint8_t *buf, size_t len, const char *name, struct tz **ret_tz,
			char *err, size_t errlen)
{
	_cleanup_(tzfile_freep) struct tz *tz = NULL;
	struct tzif_header h;
	uint64_t size;
	size_t off;
	int r;

	if (!buf && len > 0)
		return set_error(err, errlen, -EINVAL, "no TZif data");
	tz = calloc(1, sizeof(*tz));
	if (!tz)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	tz->name = strdup(name ? name : "(buffer)");
	if (!tz->name)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	sanitize(tz->label, tz->name);
	if (len > TZ_FILE_MAX)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": TZif data too large (%zu bytes, limit %d)",
				 tz->label, len, TZ_FILE_MAX);

	/* Peek at the version first: it decides whether the first block is used. */
	r = parse_header(buf, len, len > 4 && buf[4] == 0, &h, tz->label, err, errlen);
	if (r < 0)
		return r;
	off = TZIF_HEADER_LEN;
	size = block_size(&h, 4);
	if (size > len - off)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": truncated TZif data (version 1 block needs %llu "
				 "bytes, %zu left)", tz->label, (unsigned long long)size,
				 len - off);
	if (h.version == 0) {
		r = parse_block(tz, buf + off, &h, 4, err, errlen);
	} else {
		/* Version 2+: the version 1 block only serves readers without 64-bit times. */
		off += (size_t)size;
		r = parse_header(buf + off, len - off, true, &h, tz->label, err, errlen);
		if (r < 0)
			return r;
		off += TZIF_HEADER_LEN;
		size = block_size(&h, 8);
		if (size > len - off)
			return set_error(err, errlen, -EINVAL,
					 "zone \"%s\": truncated TZif data (64-bit block needs "
					 "%llu bytes, %zu left)", tz->label,
					 (unsigned long long)size, len - off);
		r = parse_block(tz, buf + off, &h, 8, err, errlen);
		if (r >= 0)
			r = parse_footer(tz, buf + off + size, len - off - size, err, errlen);
	}
	if (r == -ENOMEM)
		return set_error(err, errlen, r, "out of memory");
	if (r < 0)
		return r;
	*ret_tz = TAKE_PTR(tz);
	return 0;
}

/* --- Evaluation ---------------------------------------------------------------------------- */

/*
 * The footer rule's span around @utc. As in tzcode, a year whose rule dates give no transitions
 * simply keeps the previous state, and only a rule without transitions in any year means
 * permanent DST. Since the Gregorian calendar repeats every 400 years, looking that far in
 * either direction settles it. A year's transitions can land up to 167 h + 26 h outside that
 * calendar year, so after the first year with a hit, its neighbour is examined as well.
 */
static void rule_span(const struct tz *tz, int64_t utc, struct tz_span *span, const char **abbr)
{
	const struct rule *r = &tz->rule;
	struct rule_event ev[2];
	int64_t year, last_at = INT64_MIN, next_at = INT64_MAX, last_year = 0, stop;
	bool dst = true;
	int month, mday;

	if (!r->has_dst || r->always_dst) {
		*span = (struct tz_span){ SPAN_MIN, SPAN_MAX,
					  r->has_dst ? r->dst_offset : r->std_offset, r->has_dst };
		*abbr = r->has_dst ? r->dst_abbr : r->std_abbr;
		return;
	}
	tzfile_civil_from_days(floor_div(utc, SECS_PER_DAY), &year, &month, &mday);

	stop = year - 400;
	for (int64_t y = year + 1; y >= stop; y--) {
		size_t n = rule_year_events(r, y, ev);

		for (size_t i = 0; i < n; i++) {
			/* Of simultaneous events the later year's wins, wherever we start. */
			if (ev[i].at > utc || ev[i].at < last_at ||
			    (ev[i].at == last_at && y < last_year))
				continue;
			if (last_at == INT64_MIN)
				stop = y - 1;
			last_at = ev[i].at;
			last_year = y;
			dst = ev[i].to_dst;
		}
	}
	stop = year + 400;
	for (int64_t y = year - 1; y <= stop; y++) {
		size_t n = rule_year_events(r, y, ev);

		for (size_t i = 0; i < n; i++) {
			if (ev[i].at <= utc || ev[i].at >= next_at)
				continue;
			if (next_at == INT64_MAX)
				stop = y + 1;
			next_at = ev[i].at;
		}
	}
	/* Defensive only: with always_dst false, periodicity guarantees a hit both ways. */
	if (last_at == INT64_MIN)
		last_at = SPAN_MIN;
	if (next_at == INT64_MAX)
		next_at = SPAN_MAX;
	*span = (struct tz_span){ last_at, next_at, dst ? r->dst_offset : r->std_offset, dst };
	*abbr = dst ? r->dst_abbr : r->std_abbr;
}

/* Callers keep SPAN_MIN <= utc < SPAN_MAX. */
static void span_at(const struct tz *tz, int64_t utc, struct tz_span *span, const char **abbr)
{
	size_t lo = 0, hi = tz->n_times;
	const struct tz_type *type;

	/* lo = number of transitions at or before utc */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (tz->times[mid] <= utc)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == tz->n_times && tz->has_rule) {
		rule_span(tz, utc, span, abbr);
		if (lo > 0 && span->start < tz->times[lo - 1])
			span->start = tz->times[lo - 1];
	} else {
		type = &tz->types[lo == 0 ? 0 : tz->time_types[lo - 1]];
		span->start = lo == 0 ? SPAN_MIN : tz->times[lo - 1];
		span->end = lo == tz->n_times ? SPAN_MAX : tz->times[lo];
		span->offset = type->offset;
		span->is_dst = type->is_dst;
		*abbr = type->abbr;
	}
	if (span->start < SPAN_MIN)
		span->start = SPAN_MIN;
	if (span->end > SPAN_MAX)
		span->end = SPAN_MAX;
}

int tzfile_span_at(const struct tz *tz, int64_t utc, struct tz_span *ret_span)
{
	const char *abbr;

	if (utc < TZ_UTC_MIN || utc > TZ_UTC_MAX)
		return -ERANGE;
	span_at(tz, utc, ret_span, &abbr);
	return 0;
}

int tzfile_utc_offset(const struct tz *tz, int64_t utc, int32_t *ret_offset)
{
	struct tz_span span;
	int r = tzfile_span_at(tz, utc, &span);

	if (r < 0)
		return r;
	*ret_offset = span.offset;
	return 0;
}

int tzfile_utc_to_local(const struct tz *tz, int64_t utc, struct tm *ret_local)
{
	struct tz_span span;
	const char *abbr;
	int64_t local, days, secs, year;
	int month, mday;

	if (utc < TZ_UTC_MIN || utc > TZ_UTC_MAX)
		return -ERANGE;
	span_at(tz, utc, &span, &abbr);
	local = utc + span.offset;
	days = floor_div(local, SECS_PER_DAY);
	secs = local - days * SECS_PER_DAY;
	tzfile_civil_from_days(days, &year, &month, &mday);
	*ret_local = (struct tm){
		.tm_sec = (int)(secs % 60),
		.tm_min = (int)(secs / 60 % 60),
		.tm_hour = (int)(secs / 3600),
		.tm_mday = mday,
		.tm_mon = month - 1,
		.tm_year = (int)(year - 1900),
		.tm_wday = weekday_of_days(days),
		.tm_yday = (int)(days - tzfile_days_from_civil(year, 1, 1)),
		.tm_isdst = span.is_dst,
		.tm_gmtoff = span.offset,
		.tm_zone = abbr,
	};
	return 0;
}

int tzfile_local_to_utc(const struct tz *tz, const struct tm *local, int64_t *ret_first,
			int64_t *ret_last)
{
	int64_t year = (int64_t)local->tm_year + 1900 + floor_div(local->tm_mon, 12);
	int month = (int)(local->tm_mon - floor_div(local->tm_mon, 12) * 12) + 1;
	int64_t wall, first = 0, last = 0, gap_end = INT64_MAX, t;
	struct tz_span span;
	const char *abbr;
	bool outside = false;
	int count = 0;

	/* Checked before the arithmetic below so that huge tm fields cannot overflow it. */
	if (year < 0 || year > 10000)
		return -ERANGE;
	wall = (tzfile_days_from_civil(year, month, 1) + local->tm_mday - 1) * SECS_PER_DAY +
	       (int64_t)local->tm_hour * 3600 + (int64_t)local->tm_min * 60 + local->tm_sec;
	if (wall < TZ_UTC_MIN - TZ_OFFSET_MAX || wall > TZ_UTC_MAX + TZ_OFFSET_MAX)
		return -ERANGE;

	for (t = wall - TZ_OFFSET_MAX; t <= wall + TZ_OFFSET_MAX; t = span.end) {
		int64_t u;

		span_at(tz, t, &span, &abbr);
		u = wall - span.offset;
		if (u >= span.start && u < span.end) {
			if (u < TZ_UTC_MIN || u > TZ_UTC_MAX) {
				outside = true;
			} else {
				if (count++ == 0)
					first = u;
				last = u;
			}
		}
		/* The first instant in this span whose wall clock reads later than @wall. */
		if (gap_end == INT64_MAX) {
			u = t + span.offset > wall ? t : wall - span.offset + 1;
			if (u < span.end)
				gap_end = u;
		}
	}
	if (count == 0) {
		if (outside || gap_end < TZ_UTC_MIN || gap_end > TZ_UTC_MAX)
			return -ERANGE;
		first = last = gap_end;
	}
	*ret_first = first;
	*ret_last = last;
	return count;
}

/* --- Loading ------------------------------------------------------------------------------- */

static int validate_name(const char *name, char *err, size_t errlen)
{
	size_t len = strnlen(name, TZ_NAME_MAX + 1);
	char tmp[64];

	if (len == 0)
		return set_error(err, errlen, -EINVAL, "empty time zone name");
	if (len > TZ_NAME_MAX)
		return set_error(err, errlen, -EINVAL, "time zone name \"%s\" is longer than %d "
				 "characters", sanitize(tmp, name), TZ_NAME_MAX);
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '+' || c == '-' || c == '/'))
			return set_error(err, errlen, -EINVAL,
					 "time zone name \"%s\" may only contain letters, digits "
					 "and \"_+-/\" (e.g. \"Europe/Rome\")",
					 sanitize(tmp, name));
		if (c == '/' && (i == 0 || i == len - 1 || name[i + 1] == '/'))
			return set_error(err, errlen, -EINVAL,
					 "time zone name \"%s\" must be a relative path without "
					 "empty components (e.g. \"Europe/Rome\")",
					 sanitize(tmp, name));
	}
	return 0;
}

static int load_utc(const char *name, struct tz **ret_tz, char *err, size_t errlen)
{
	_cleanup_(tzfile_freep) struct tz *tz = calloc(1, sizeof(*tz));

	if (!tz)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	tz->name = strdup(name);
	tz->types = calloc(1, sizeof(*tz->types));
	tz->chars = strdup("UTC");
	if (!tz->name || !tz->types || !tz->chars)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	sanitize(tz->label, tz->name);
	tz->n_types = 1;
	tz->types[0] = (struct tz_type){ 0, false, tz->chars };
	*ret_tz = TAKE_PTR(tz);
	return 0;
}

int tzfile_load(const char *name, const char *zoneinfo_dir, struct tz **ret_tz, char *err,
		size_t errlen)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ uint8_t *buf = NULL;
	char path[PATH_MAX];
	struct stat st;
	size_t len = 0;
	int r;

	if (!name)
		return set_error(err, errlen, -EINVAL, "no time zone name");
	r = validate_name(name, err, errlen);
	if (r < 0)
		return r;
	/* Built in so that the default zone works in minimal containers without tzdata. */
	if (streq(name, "UTC") || streq(name, "Etc/UTC"))
		return load_utc(name, ret_tz, err, errlen);

	if (!zoneinfo_dir)
		zoneinfo_dir = DEFAULT_ZONEINFO_DIR;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", zoneinfo_dir, name) >= sizeof(path))
		return set_error(err, errlen, -EINVAL, "time zone \"%s\": path too long", name);

	/* O_NONBLOCK: a FIFO planted under the zone directory must not hang the daemon. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		if (r == -ENOENT || r == -ENOTDIR)
			return set_error(err, errlen, -ENOENT,
					 "unknown time zone \"%s\" (no file %s)", name, path);
		return set_error(err, errlen, r, "time zone \"%s\": cannot open %s: %s", name,
				 path, strerror(-r));
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		return set_error(err, errlen, r, "time zone \"%s\": cannot stat %s: %s", name, path,
				 strerror(-r));
	}
	if (S_ISDIR(st.st_mode))
		return set_error(err, errlen, -EINVAL,
				 "time zone \"%s\" is a region directory, not a zone (e.g. "
				 "\"Europe/Rome\")", name);
	if (!S_ISREG(st.st_mode))
		return set_error(err, errlen, -EINVAL, "time zone \"%s\": %s is not a regular file",
				 name, path);

	/* One byte beyond the limit tells "too large" apart from "exactly at the limit". */
	buf = malloc(TZ_FILE_MAX + 1);
	if (!buf)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	while (len < TZ_FILE_MAX + 1) {
		ssize_t n = read(fd, buf + len, TZ_FILE_MAX + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			return set_error(err, errlen, r, "time zone \"%s\": cannot read %s: %s",
					 name, path, strerror(-r));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	return tzfile_parse_buffer(buf, len, name, ret_tz, err, errlen);
}

void tzfile_free(struct tz *tz)
{
	if (!tz)
		return;
	free(tz->name);
	free(tz->times);
	free(tz->time_types);
	free(tz->types);
	free(tz->chars);
	free(tz);
}

const char *tzfile_name(const struct tz *tz)
{
	return tz->name;
}
