/* SPDX-License-Identifier: MIT */
/*
 * Token bucket and daily budget arithmetic (see ratelimit.h). Pure functions of their inputs: the
 * caller supplies the time, so tests need no clock and the daemon can use the loop's monotonic
 * milliseconds for the bucket and wall-clock UTC seconds for the budget (CC resets it at 00:00 UTC,
 * a calendar event that a monotonic clock cannot express).
 *
 * Invariants: 0 <= tokens <= burst; last_ms never moves backwards (a caller's clock that does is
 * treated as standing still); used counts requests of `day` only; paused_until is 0 or a midnight.
 */
#include "ratelimit.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static void refill(struct ratelimit_bucket *b, uint64_t now_ms)
{
	if (now_ms <= b->last_ms)
		return;
	b->tokens += (double)(now_ms - b->last_ms) * b->rate / 1000.0;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	b->last_ms = now_ms;
}

void ratelimit_bucket_init(struct ratelimit_bucket *b, double rate, double burst, uint64_t now_ms)
{
	b->rate = rate > 0 ? rate : 1.0;
	b->burst = burst >= 1.0 ? burst : 1.0;
	b->tokens = b->burst;
	b->last_ms = now_ms;
}

void ratelimit_bucket_set_rate(struct ratelimit_bucket *b, double rate, double burst,
			       uint64_t now_ms)
{
	refill(b, now_ms);
	b->rate = rate > 0 ? rate : 1.0;
	b->burst = burst >= 1.0 ? burst : 1.0;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
}

uint64_t ratelimit_bucket_wait_ms(struct ratelimit_bucket *b, uint64_t now_ms)
{
	double missing, ms;

	refill(b, now_ms);
	/* Tolerate rounding: 0.9999999 tokens after exactly the right wait is one token. */
	if (b->tokens >= 1.0 - 1e-9)
		return 0;
	missing = 1.0 - b->tokens;
	/* The epsilon keeps 1.0000000001 ms of float noise from becoming a 2 ms wait. */
	ms = ceil(missing * 1000.0 / b->rate - 1e-6);
	return ms < 1.0 ? 1 : (uint64_t)ms;
}

uint64_t ratelimit_bucket_take(struct ratelimit_bucket *b, uint64_t now_ms)
{
	uint64_t wait = ratelimit_bucket_wait_ms(b, now_ms);

	if (wait > 0)
		return wait;
	b->tokens -= 1.0;
	if (b->tokens < 0)
		b->tokens = 0;
	return 0;
}

void ratelimit_bucket_drain(struct ratelimit_bucket *b, uint64_t now_ms)
{
	refill(b, now_ms);
	b->tokens = 0;
}

int64_t ratelimit_day_of(int64_t now_s)
{
	int64_t d = now_s / RATELIMIT_DAY_S;

	if (now_s % RATELIMIT_DAY_S < 0)
		d--;
	return d;
}

int64_t ratelimit_next_reset(int64_t now_s)
{
	return (ratelimit_day_of(now_s) + 1) * RATELIMIT_DAY_S;
}

/* Howard Hinnant's days_from_civil / civil_from_days: exact for the proleptic Gregorian calendar
 * without going through gmtime (no global TZ, no time_t range questions). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era;
	unsigned doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = (unsigned)(z - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void ratelimit_day_format(int64_t day, char buf[static 11])
{
	int64_t y;
	unsigned m, d;

	civil_from_days(day, &y, &m, &d);
	if (y < 0 || y > 9999)
		y = m = d = 0; /* outside what the column can say; never a real budget day */
	buf[0] = (char)('0' + y / 1000);
	buf[1] = (char)('0' + y / 100 % 10);
	buf[2] = (char)('0' + y / 10 % 10);
	buf[3] = (char)('0' + y % 10);
	buf[4] = '-';
	buf[5] = (char)('0' + m / 10);
	buf[6] = (char)('0' + m % 10);
	buf[7] = '-';
	buf[8] = (char)('0' + d / 10);
	buf[9] = (char)('0' + d % 10);
	buf[10] = '\0';
}

int ratelimit_day_parse(const char *s, int64_t *ret_day)
{
	static const unsigned mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	unsigned y = 0, m, d;

	if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return -EINVAL;
	for (int i = 0; i < 10; i++) {
		if (i == 4 || i == 7)
			continue;
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
	}
	for (int i = 0; i < 4; i++)
		y = y * 10 + (unsigned)(s[i] - '0');
	m = (unsigned)(s[5] - '0') * 10 + (unsigned)(s[6] - '0');
	d = (unsigned)(s[8] - '0') * 10 + (unsigned)(s[9] - '0');
	if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
		return -EINVAL;
	if (m == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return -EINVAL;
	*ret_day = days_from_civil(y, m, d);
	return 0;
}

void ratelimit_budget_init(struct ratelimit_budget *b, uint32_t limit, int64_t now_s)
{
	memset(b, 0, sizeof(*b));
	b->limit = limit;
	b->day = ratelimit_day_of(now_s);
}

bool ratelimit_budget_roll(struct ratelimit_budget *b, int64_t now_s)
{
	int64_t today = ratelimit_day_of(now_s);
	bool changed = false;

	if (b->day != today) {
		b->day = today;
		b->used = 0;
		changed = true;
	}
	if (b->paused_until && now_s >= b->paused_until) {
		b->paused_until = 0;
		changed = true;
	}
	return changed;
}

bool ratelimit_budget_paused(const struct ratelimit_budget *b, int64_t now_s)
{
	return b->paused_until && now_s < b->paused_until;
}

void ratelimit_budget_pause(struct ratelimit_budget *b, int64_t now_s)
{
	(void)ratelimit_budget_roll(b, now_s);
	b->paused_until = ratelimit_next_reset(now_s);
}

int ratelimit_budget_take(struct ratelimit_budget *b, int64_t now_s)
{
	(void)ratelimit_budget_roll(b, now_s);
	if (ratelimit_budget_paused(b, now_s))
		return -EDQUOT;
	if (b->used >= b->limit) {
		b->paused_until = ratelimit_next_reset(now_s);
		return -EDQUOT;
	}
	b->used++;
	return 0;
}

uint32_t ratelimit_budget_left(const struct ratelimit_budget *b, int64_t now_s)
{
	if (ratelimit_budget_paused(b, now_s))
		return 0;
	if (b->day != ratelimit_day_of(now_s))
		return b->limit;
	return b->used >= b->limit ? 0 : b->limit - b->used;
}
