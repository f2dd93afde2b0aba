/* SPDX-License-Identifier: MIT */
/*
 * Rate-limit arithmetic for Constant Contact API keys, with no clock of its own: every function
 * takes the time from its caller, so the same code runs under the daemon's monotonic loop clock,
 * under a wall clock for the daily budget, and under fixed numbers in the unit tests.
 *
 * Two mechanisms, both per API key (client_id), because CC counts per key, not per account:
 *  - a token bucket: `rate` tokens per second up to `burst`, one token per request;
 *  - a daily budget: at most `limit` requests per UTC day (CC resets at 00:00:00 UTC), and a pause
 *    until the next reset once CC answers quota_exceeded or the local budget runs out.
 * Persisting the budget is the caller's job (lib/store-auth.h); this module only computes.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define RATELIMIT_DAY_S 86400

struct ratelimit_bucket {
	double rate;	 /* tokens per second, > 0 */
	double burst;	 /* capacity, >= 1 */
	double tokens;	 /* current fill, 0..burst */
	uint64_t last_ms; /* time of the last refill, caller's monotonic milliseconds */
};

/* Starts full. rate > 0; burst below 1 is raised to 1 (a bucket must hold one request). */
void ratelimit_bucket_init(struct ratelimit_bucket *b, double rate, double burst, uint64_t now_ms);

/* Changes rate/burst keeping the current fill (clamped); for configuration reloads. */
void ratelimit_bucket_set_rate(struct ratelimit_bucket *b, double rate, double burst,
			       uint64_t now_ms);

/*
 * Takes one token if one is available at now_ms and returns 0; otherwise takes nothing and returns
 * the number of milliseconds (>= 1) until the next token is due.
 */
uint64_t ratelimit_bucket_take(struct ratelimit_bucket *b, uint64_t now_ms);

/* Milliseconds until a token is available (0 = now), without taking one. */
uint64_t ratelimit_bucket_wait_ms(struct ratelimit_bucket *b, uint64_t now_ms);

/* Empties the bucket: after the server said "throttled", our idea of its state was optimistic. */
void ratelimit_bucket_drain(struct ratelimit_bucket *b, uint64_t now_ms);

struct ratelimit_budget {
	uint32_t limit;	      /* requests per UTC day */
	int64_t day;	      /* UTC day number (days since the epoch) that `used` counts */
	uint32_t used;	      /* requests spent on `day` */
	int64_t paused_until; /* epoch seconds; 0 = not paused */
};

/* UTC day number of an epoch time (floor division, so times before 1970 work too). */
int64_t ratelimit_day_of(int64_t now_s);
/* Epoch seconds of the next 00:00:00 UTC strictly after now_s. */
int64_t ratelimit_next_reset(int64_t now_s);

/* Formats a day number as "YYYY-MM-DD" (buf must hold 11 bytes). */
void ratelimit_day_format(int64_t day, char buf[static 11]);
/* Parses "YYYY-MM-DD" (a real calendar date) into a day number; 0 or -EINVAL. */
int ratelimit_day_parse(const char *s, int64_t *ret_day);

/* An empty budget for today. */
void ratelimit_budget_init(struct ratelimit_budget *b, uint32_t limit, int64_t now_s);

/*
 * Brings a budget to now_s: a new UTC day zeroes `used`, and an expired pause is lifted. Returns
 * true when anything changed (the caller then persists it).
 */
bool ratelimit_budget_roll(struct ratelimit_budget *b, int64_t now_s);

/*
 * Spends one request. Returns 0, or -EDQUOT when the key is paused or the budget is spent; in the
 * latter case the key is paused until the next reset (check paused_until to log it once).
 */
int ratelimit_budget_take(struct ratelimit_budget *b, int64_t now_s);

/* Pauses the key until the next 00:00 UTC (CC said quota_exceeded). */
void ratelimit_budget_pause(struct ratelimit_budget *b, int64_t now_s);

/* Requests left today (0 while paused). */
uint32_t ratelimit_budget_left(const struct ratelimit_budget *b, int64_t now_s);

bool ratelimit_budget_paused(const struct ratelimit_budget *b, int64_t now_s);
