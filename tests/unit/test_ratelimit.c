/* SPDX-License-Identifier: MIT */
/* Token bucket and daily budget arithmetic, driven by explicit clocks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ratelimit.h"

/* 2024-03-10 23:59:58 UTC */
#define T0 INT64_C(1710115198)

static void test_bucket_spacing(void **state)
{
	struct ratelimit_bucket b;
	uint64_t now = 1000;
	int sent = 0;

	(void)state;
	ratelimit_bucket_init(&b, 4.0, 1.0, now);
	assert_int_equal(ratelimit_bucket_take(&b, now), 0);
	/* Empty now: the next token is due in exactly 250 ms. */
	assert_int_equal(ratelimit_bucket_take(&b, now), 250);
	assert_int_equal(ratelimit_bucket_take(&b, now + 249), 1);
	assert_int_equal(ratelimit_bucket_take(&b, now + 250), 0);
	/* Over 10 simulated seconds, following the returned waits, exactly 40 requests go out. */
	ratelimit_bucket_init(&b, 4.0, 1.0, 0);
	for (now = 0; now < 10000;) {
		uint64_t w = ratelimit_bucket_take(&b, now);

		if (w == 0) {
			sent++;
			continue;
		}
		now += w;
	}
	assert_int_equal(sent, 40);
}

static void test_bucket_burst_and_drain(void **state)
{
	struct ratelimit_bucket b;

	(void)state;
	ratelimit_bucket_init(&b, 2.0, 3.0, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(ratelimit_bucket_take(&b, 0), 0);
	assert_int_equal(ratelimit_bucket_take(&b, 0), 500);
	/* A long idle period refills only up to the burst. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(ratelimit_bucket_take(&b, 100000), 0);
	assert_true(ratelimit_bucket_take(&b, 100000) > 0);
	ratelimit_bucket_init(&b, 2.0, 3.0, 0);
	ratelimit_bucket_drain(&b, 0);
	assert_int_equal(ratelimit_bucket_wait_ms(&b, 0), 500);
	/* A clock that goes backwards is treated as standing still. */
	assert_int_equal(ratelimit_bucket_wait_ms(&b, 400), 100);
	assert_int_equal(ratelimit_bucket_wait_ms(&b, 10), 100);
}

static void test_bucket_fractional_rate(void **state)
{
	struct ratelimit_bucket b;

	(void)state;
	ratelimit_bucket_init(&b, 0.5, 0.2, 0); /* burst below 1 is raised to 1 */
	assert_true(b.burst == 1.0);
	assert_int_equal(ratelimit_bucket_take(&b, 0), 0);
	assert_int_equal(ratelimit_bucket_take(&b, 0), 2000);
	ratelimit_bucket_set_rate(&b, 4.0, 1.0, 1000); /* half a token kept */
	assert_int_equal(ratelimit_bucket_wait_ms(&b, 1000), 125);
}

static void test_days(void **state)
{
	char buf[11];
	int64_t d;

	(void)state;
	assert_int_equal(ratelimit_day_of(0), 0);
	assert_int_equal(ratelimit_day_of(86399), 0);
	assert_int_equal(ratelimit_day_of(86400), 1);
	assert_int_equal(ratelimit_day_of(-1), -1);
	assert_int_equal(ratelimit_next_reset(T0), T0 + 2);
	assert_int_equal(ratelimit_next_reset(T0 + 2), T0 + 2 + 86400);
	ratelimit_day_format(ratelimit_day_of(T0), buf);
	assert_string_equal(buf, "2024-03-10");
	ratelimit_day_format(0, buf);
	assert_string_equal(buf, "1970-01-01");
	assert_int_equal(ratelimit_day_parse("2024-03-10", &d), 0);
	assert_int_equal(d, ratelimit_day_of(T0));
	assert_int_equal(ratelimit_day_parse("2024-02-29", &d), 0);
	assert_int_equal(ratelimit_day_parse("2023-02-29", &d), -EINVAL);
	assert_int_equal(ratelimit_day_parse("2100-02-29", &d), -EINVAL);
	assert_int_equal(ratelimit_day_parse("2000-02-29", &d), 0);
	assert_int_equal(ratelimit_day_parse("2024-13-01", &d), -EINVAL);
	assert_int_equal(ratelimit_day_parse("2024-3-10", &d), -EINVAL);
	assert_int_equal(ratelimit_day_parse("2024-03-10x", &d), -EINVAL);
	assert_int_equal(ratelimit_day_parse(NULL, &d), -EINVAL);
	/* Round trip over four centuries of days. */
	for (int64_t day = -1000; day < 150000; day += 37) {
		int64_t back;

		ratelimit_day_format(day, buf);
		assert_int_equal(ratelimit_day_parse(buf, &back), 0);
		assert_int_equal(back, day);
	}
}

static void test_budget(void **state)
{
	struct ratelimit_budget b;

	(void)state;
	ratelimit_budget_init(&b, 3, T0);
	assert_int_equal(ratelimit_budget_left(&b, T0), 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(ratelimit_budget_take(&b, T0), 0);
	assert_int_equal(ratelimit_budget_left(&b, T0), 0);
	assert_false(ratelimit_budget_paused(&b, T0));
	/* The fourth request is refused and pauses the key until midnight UTC. */
	assert_int_equal(ratelimit_budget_take(&b, T0), -EDQUOT);
	assert_true(ratelimit_budget_paused(&b, T0));
	assert_int_equal(b.paused_until, T0 + 2);
	assert_int_equal(ratelimit_budget_take(&b, T0 + 1), -EDQUOT);
	/* At 00:00:00 UTC everything is available again. */
	assert_true(ratelimit_budget_roll(&b, T0 + 2));
	assert_false(ratelimit_budget_paused(&b, T0 + 2));
	assert_int_equal(b.used, 0);
	assert_int_equal(ratelimit_budget_left(&b, T0 + 2), 3);
	assert_int_equal(ratelimit_budget_take(&b, T0 + 2), 0);
	assert_false(ratelimit_budget_roll(&b, T0 + 3));
}

static void test_budget_pause_from_server(void **state)
{
	struct ratelimit_budget b;

	(void)state;
	ratelimit_budget_init(&b, 10000, T0 - 3600);
	assert_int_equal(ratelimit_budget_take(&b, T0 - 3600), 0);
	ratelimit_budget_pause(&b, T0 - 3600);
	assert_int_equal(ratelimit_budget_left(&b, T0 - 3600), 0);
	assert_int_equal(ratelimit_budget_take(&b, T0), -EDQUOT);
	assert_int_equal(b.used, 1);
	assert_int_equal(ratelimit_budget_take(&b, T0 + 2), 0);
	assert_int_equal(b.used, 1);
	/* A budget remembered from an earlier day counts as fresh. */
	b.day -= 1;
	b.used = 10000;
	assert_int_equal(ratelimit_budget_left(&b, T0 + 2), 10000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_spacing),
		cmocka_unit_test(test_bucket_burst_and_drain),
		cmocka_unit_test(test_bucket_fractional_rate),
		cmocka_unit_test(test_days),
		cmocka_unit_test(test_budget),
		cmocka_unit_test(test_budget_pause_from_server),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
