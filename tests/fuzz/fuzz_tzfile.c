/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: TZif parsing. Feeds the input to tzfile_parse_buffer; when it parses, walks
 * the zone's spans, converts instants to local time and back, and searches cron fire times in the
 * (possibly absurd) zone, checking that each conversion is consistent with the others.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "cron.h"
#include "tzfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const struct tz *tz, int64_t t)
{
	struct tz_span span;
	struct tm tm;
	int64_t first, last;
	int n;

	if (tzfile_span_at(tz, t, &span) != 0 || span.start > t || span.end <= t ||
	    span.offset < -TZ_OFFSET_MAX || span.offset > TZ_OFFSET_MAX)
		abort();
	if (tzfile_utc_to_local(tz, t, &tm) != 0 || tm.tm_gmtoff != span.offset)
		abort();
	/* The instant must be among those the wall time maps back to. */
	n = tzfile_local_to_utc(tz, &tm, &first, &last);
	if (n < 1 || first > t || last < t)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const exprs[] = { "*/7 * * * *", "30 2 * * *", "0 0 29 2 *" };
	struct tz *tz = NULL;
	struct tz_span span;
	int64_t t;

	if (tzfile_parse_buffer(data, size, "fuzz", &tz, NULL, 0) < 0)
		return 0;

	/* A bounded walk over spans from 1900 on, then a few far-apart instants. */
	t = -2208988800;
	for (int i = 0; i < 64 && tzfile_span_at(tz, t, &span) == 0; i++) {
		roundtrip(tz, t);
		roundtrip(tz, span.end - 1 > TZ_UTC_MAX ? TZ_UTC_MAX : span.end - 1);
		t = span.end;
	}
	roundtrip(tz, TZ_UTC_MIN);
	roundtrip(tz, TZ_UTC_MAX);
	roundtrip(tz, 2374531200);	/* 2045: the footer rule in real files */

	for (size_t i = 0; i < sizeof(exprs) / sizeof(exprs[0]); i++) {
		struct cron_expr ce;
		int64_t after = 1767225600, next, again;	/* 2026-01-01 */

		if (cron_parse(exprs[i], &ce, NULL, 0) != 0)
			abort();
		for (int k = 0; k < 4; k++) {
			int r = cron_next(&ce, tz, after, &next);

			if (r == -ERANGE)
				break;
			if (r != 0 || next <= after)
				abort();
			if (cron_next(&ce, tz, next - 1, &again) != 0 || again != next)
				abort();
			after = next;
		}
	}
	tzfile_free(tz);
	return 0;
}
