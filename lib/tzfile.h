/* SPDX-License-Identifier: MIT */
/*
 * IANA time zones without process-global state: a reader of TZif files (RFC 8536, versions 1 to 4)
 * and of their POSIX TZ footer rule, plus UTC <-> local wall-clock conversion for one zone. Unlike
 * localtime(3), nothing here touches TZ or tzset(), so the daemon can evaluate any number of zones
 * side by side.
 *
 * A struct tz is immutable once loaded: concurrent readers need no locking.
 *
 * Instants are POSIX seconds (int64_t, leap seconds not counted). The supported range is
 * TZ_UTC_MIN..TZ_UTC_MAX (years 1 to 9999); functions return -ERANGE outside it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define TZ_UTC_MIN (-62135596800LL)	/* 0001-01-01T00:00:00Z */
#define TZ_UTC_MAX 253402300799LL	/* 9999-12-31T23:59:59Z */

/* Offsets beyond +-26 h are rejected as malformed (RFC 8536 section 3.2 bounds them likewise). */
#define TZ_OFFSET_MAX 93599

/* Zone files larger than this are rejected: real ones are under 4 KiB. */
#define TZ_FILE_MAX (256 * 1024)

#define TZ_NAME_MAX 255

struct tz;

/*
 * A stretch of UTC time [start, end) over which the zone's offset is constant. Spans partition
 * time: every instant of a span reports that same span, and each span ends where the next
 * begins. Consecutive spans may share an offset (a transition that only changes the
 * abbreviation, or the hand-over from the file's table to its footer rule). The first and last
 * spans are clipped to a little beyond TZ_UTC_MIN..TZ_UTC_MAX rather than reaching to infinity.
 */
struct tz_span {
	int64_t start;
	int64_t end;
	int32_t offset;		/* seconds east of UTC: local = utc + offset */
	bool is_dst;
};

/*
 * Loads zone @name (e.g. "Europe/Rome") from @zoneinfo_dir (NULL: "/usr/share/zoneinfo").
 * "UTC" and "Etc/UTC" are built in and never touch the file system, so they work without tzdata.
 * A name must be relative and made of [A-Za-z0-9_+-/] without empty components.
 *
 * Returns 0 and stores a new zone in *ret_tz (free it with tzfile_free), or a negative errno with a
 * message in @err: -EINVAL for a bad name or a malformed file, -ENOENT for an unknown zone,
 * -ENOMEM, or whatever open/read reported (e.g. -EACCES).
 */
int tzfile_load(const char *name, const char *zoneinfo_dir, struct tz **ret_tz, char *err,
		size_t errlen);

/*
 * Parses TZif bytes (the whole file). @name is only recorded for tzfile_name() and messages; NULL
 * means "(buffer)". Never reads outside buf[0..len). Returns 0 and a new zone in *ret_tz, or
 * -EINVAL (malformed, message in @err) or -ENOMEM.
 */
int tzfile_parse_buffer(const uint8_t *buf, size_t len, const char *name, struct tz **ret_tz,
			char *err, size_t errlen);

/* Frees a zone; NULL is a no-op. */
void tzfile_free(struct tz *tz);

/* The name the zone was loaded under. Owned by @tz. */
const char *tzfile_name(const struct tz *tz);

/*
 * The span containing @utc. Returns 0, or -ERANGE if @utc is outside TZ_UTC_MIN..TZ_UTC_MAX.
 * Walking spans (next one: tzfile_span_at(tz, span.end)) enumerates the zone's transitions.
 */
int tzfile_span_at(const struct tz *tz, int64_t utc, struct tz_span *ret_span);

/* Offset from UTC, in seconds east, in effect at @utc. Returns 0 or -ERANGE. */
int tzfile_utc_offset(const struct tz *tz, int64_t utc, int32_t *ret_offset);

/*
 * Local wall-clock time at @utc. Fills every field of *ret_local including tm_wday, tm_yday,
 * tm_isdst, tm_gmtoff and tm_zone (which points into @tz: valid until tzfile_free). Returns 0 or
 * -ERANGE.
 */
int tzfile_utc_to_local(const struct tz *tz, int64_t utc, struct tm *ret_local);

/*
 * Maps a local wall-clock time to UTC. Only tm_year, tm_mon, tm_mday, tm_hour, tm_min and tm_sec
 * of @local are read; out-of-range values are normalised arithmetically, as timegm() does
 * (tm_mon = 12 is January of the next year), and tm_isdst is ignored.
 *
 * Returns the number of UTC instants at which the wall clock shows @local: 1 normally, 0 when
 * @local falls into a gap (spring forward), 2 in an overlap (fall back; more only in pathological
 * zones). On success *ret_first and *ret_last receive the earliest and latest of them; in a gap
 * both receive the instant the gap ends, the first at which the wall clock shows a later time.
 * Only instants within TZ_UTC_MIN..TZ_UTC_MAX count; -ERANGE if there are none and no gap end
 * in that range either (a date outside years 1 to 9999, give or take the offset).
 */
int tzfile_local_to_utc(const struct tz *tz, const struct tm *local, int64_t *ret_first,
			int64_t *ret_last);

/*
 * Proleptic Gregorian calendar arithmetic, shared with cron.c. Days are counted from 1970-01-01;
 * @month is 1-12 and @mday 1-31 (not validated: callers pass calendar dates). Valid for any date
 * whose day count fits comfortably in int64_t.
 */
int64_t tzfile_days_from_civil(int64_t year, int month, int mday);
void tzfile_civil_from_days(int64_t days, int64_t *ret_year, int *ret_month, int *ret_mday);
