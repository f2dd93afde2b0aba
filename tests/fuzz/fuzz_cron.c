/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: cron expressions. Parses the input as an expression; when it parses, asks
 * for next fire times in UTC and in Europe/Rome (when tzdata is present) from instants around
 * DST changes and at the end of the supported range, and checks the search's invariants: the fire
 * is strictly later, asking again from just before it or from halfway returns the same fire,
 * and in UTC the fire's wall time matches the expression.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"
#include "tzfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tz *zone(const char *name)
{
	struct tz *tz = NULL;

	/* Loaded once per process and kept: the fuzzer runs millions of inputs. */
	if (tzfile_load(name, NULL, &tz, NULL, 0) < 0)
		return NULL;
	return tz;
}

static void check(const struct cron_expr *ce, const struct tz *tz, bool is_utc, int64_t after)
{
	int64_t next, again;
	struct tm tm;
	int r = cron_next(ce, tz, after, &next);

	if (r == -ERANGE)
		return;
	if (r != 0 || next <= after)
		abort();
	if (cron_next(ce, tz, next - 1, &again) != 0 || again != next)
		abort();
	if (cron_next(ce, tz, after + (next - after) / 2, &again) != 0 || again != next)
		abort();
	if (tzfile_utc_to_local(tz, next, &tm) != 0)
		abort();
	if (!cron_matches_local(ce, &tm)) {
		struct tz_span span;

		/* Only a gap's end may fire without matching (a skipped time collapsed onto it). */
		if (is_utc || tzfile_span_at(tz, next, &span) != 0 || span.start != next)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tz *utc, *rome;
	static const int64_t instants[] = {
		0,			/* 1970-01-01 */
		1774744200,		/* 2026-03-29T00:30Z, before Rome's spring gap */
		1792888200,		/* 2026-10-25T00:30Z, inside Rome's repeated hour */
		2374531200,		/* 2045-03-31, footer rule territory */
		TZ_UTC_MAX - 86400 * 40,
	};
	struct cron_expr ce;
	char *expr;

	if (!utc) {
		utc = zone("UTC");
		rome = zone("Europe/Rome");
		if (!utc)
			abort();
	}
	if (size > CRON_EXPR_MAX + 16)
		return 0;
	expr = malloc(size + 1);
	if (!expr)
		return 0;
	memcpy(expr, data, size);
	expr[size] = '\0';
	if (cron_parse(expr, &ce, (char[128]){ 0 }, 128) == 0) {
		for (size_t i = 0; i < sizeof(instants) / sizeof(instants[0]); i++) {
			check(&ce, utc, true, instants[i]);
			if (rome)
				check(&ce, rome, false, instants[i]);
		}
	}
	free(expr);
	return 0;
}
