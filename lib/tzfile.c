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
	char kind;		/* 'J': Jn (1-365, Feb 29 never counted), 'D': n (0-365), 'M': Mm.w.d */
	int day;		/* J and D: n; M: weekday d (0 = Sunday) */
	int week;		/* M: 1-5, 5 meaning the last */
	int month;		/* M: 1-12 */
	int32_t time;		/* seconds after local midnight, +-RULE_HOURS_MAX hours */
};

struct rule {
	int32_t std_offset;	/* seconds east of UTC, i.e. the negated POSIX offset */
	int32_t dst_offset;
	bool has_dst;
	char std_abbr[ABBR_MAX + 1];
	char dst_abbr[ABBR_MAX + 1];
	struct rule_date start;	/* into DST, at a wall time in standard time */
	struct rule_date end;	/* out of DST, at a wall time in DST */
};

struct tz {
	char *name;
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
				 "zone \"%s\": truncated TZif header (%zu bytes left, need %d)", name,
				 left, TZIF_HEADER_LEN);
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
				 "zone \"%s\": malformed TZif header (indicator counts do not match "
				 "type count)", name);
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
				 "supported; use the POSIX zone of the same name", tz->name);

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
					 "after transition %u)", tz->name, i, i - 1);
	}
	q = p + (size_t)h->timecnt * time_size;
	for (uint32_t i = 0; i < h->timecnt; i++) {
		if (q[i] >= h->typecnt)
			return set_error(err, errlen, -EINVAL,
					 "zone \"%s\": malformed TZif data (transition %u uses "
					 "type %u of %u)", tz->name, i, q[i], h->typecnt);
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
					 "offset %d, DST flag %u, abbreviation index %u)", tz->name,
					 i, offset, t[4], desig);
		tz->types[i] = (struct tz_type){ offset, t[4] == 1, tz->chars + desig };
	}
	q += h->charcnt;
	for (uint32_t i = 0; i < h->isstdcnt + h->isutcnt; i++)
		if (q[i] > 1)
			return set_error(err, errlen, -EINVAL,
					 "zone \"%s\": malformed TZif data (standard/UT indicator "
					 "%u is %u)", tz->name, i, q[i]);
	return 0;
}

/* Parses [+-]hh[:mm[:ss]] with hh <= max_hours. */
static const char *parse_hms(const char *s, int max_hours, int32_t *ret)
{
	int sign = 1, h = 0, m = 0, sec = 0, digits;

	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	for (digits = 0; *s >= '0' && *s <= '9'; digits++)
		h = h * 10 + (*s++ - '0');
	if (digits < 1 || digits > 3 || h > max_hours)
		return NULL;
	if (*s == ':') {
		s++;
		if (s[0] < '0' || s[0] > '5' || s[1] < '0' || s[1] > '9')
			return NULL;
		m = (s[0] - '0') * 10 + (s[1] - '0');
		s += 2;
		if (*s == ':') {
			s++;
			if (s[0] < '0' || s[0] > '5' || s[1] < '0' || s[1] > '9')
				return NULL;
			sec = (s[0] - '0') * 10 + (s[1] - '0');
			s += 2;
		}
	}
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

static const char *parse_number(const char *s, int min, int max, int *ret)
{
	int v = 0, digits;

	for (digits = 0; *s >= '0' && *s <= '9'; digits++)
		v = v * 10 + (*s++ - '0');
	if (digits < 1 || digits > 3 || v < min || v > max)
		return NULL;
	*ret = v;
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
				 tz->name);
	len = (size_t)(nl - (p + 1));
	if (len > FOOTER_MAX)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": TZ string footer longer than %d bytes", tz->name,
				 FOOTER_MAX);
	memcpy(buf, p + 1, len);
	buf[len] = '\0';
	if (len == 0)
		return 0;	/* no rule: the last transition's type holds forever */
	if (strlen(buf) != len || !parse_posix_tz(buf, &tz->rule) ||
	    tz->rule.std_offset < -TZ_OFFSET_MAX || tz->rule.std_offset > TZ_OFFSET_MAX ||
	    tz->rule.dst_offset < -TZ_OFFSET_MAX || tz->rule.dst_offset > TZ_OFFSET_MAX)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": malformed TZ string footer \"%s\"", tz->name,
				 sanitize(tmp, buf));
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
	char tmp[64];
	int r;

	if (!buf && len > 0)
		return set_error(err, errlen, -EINVAL, "no TZif data");
	tz = calloc(1, sizeof(*tz));
	if (!tz)
		return -ENOMEM;
	tz->name = strdup(name ? sanitize(tmp, name) : "(buffer)");
	if (!tz->name)
		return -ENOMEM;
	if (len > TZ_FILE_MAX)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": TZif data too large (%zu bytes, limit %d)", tz->name,
				 len, TZ_FILE_MAX);

	/* Peek at the version first: it decides whether the first block is used. */
	r = parse_header(buf, len, len > 4 && buf[4] == 0, &h, tz->name, err, errlen);
	if (r < 0)
		return r;
	off = TZIF_HEADER_LEN;
	size = block_size(&h, 4);
	if (size > len - off)
		return set_error(err, errlen, -EINVAL,
				 "zone \"%s\": truncated TZif data (version 1 block needs %llu "
				 "bytes, %zu left)", tz->name, (unsigned long long)size, len - off);
	if (h.version == 0) {
		r = parse_block(tz, buf + off, &h, 4, err, errlen);
	} else {
		/* Version 2+: the version 1 block only serves readers without 64-bit times. */
		off += (size_t)size;
		r = parse_header(buf + off, len - off, true, &h, tz->name, err, errlen);
		if (r < 0)
			return r;
		off += TZIF_HEADER_LEN;
		size = block_size(&h, 8);
		if (size > len - off)
			return set_error(err, errlen, -EINVAL,
					 "zone \"%s\": truncated TZif data (64-bit block needs %llu "
					 "bytes, %zu left)", tz->name, (unsigned long long)size,
					 len - off);
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
