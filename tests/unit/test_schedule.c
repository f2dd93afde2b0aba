/* SPDX-License-Identifier: MIT */
/* Schedule arithmetic: start/catch-up decisions, the fire heap, and the zone cache. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "cron.h"
#include "schedule.h"
#include "tzfile.h"

/* 2026-06-10 12:00:00 UTC */
#define T0 INT64_C(1781092800)

static struct cron_expr parse(const char *expr)
{
	struct cron_expr c;
	char err[128];

	if (cron_parse(expr, &c, err, sizeof(err)) < 0)
		fail_msg("%s: %s", expr, err);
	return c;
}

static const struct tz *utc(void)
{
	static struct tz *tz;
	char err[128];

	if (!tz)
		assert_int_equal(tzfile_load("UTC", NULL, &tz, err, sizeof(err)), 0);
	return tz;
}

static void test_new_export_gets_no_catch_up(void **state)
{
	struct cron_expr c = parse("0 2 * * *");
	struct schedule_start s;

	(void)state;
	assert_int_equal(schedule_plan_start(&c, utc(), -1, T0, true, &s), 0);
	assert_int_equal(s.missed_due, 0);
	/* next 02:00 UTC after 12:00 is tomorrow */
	assert_int_equal(s.next_due, T0 + 14 * 3600);
}

static void test_missed_fires_collapse_into_one_catch_up(void **state)
{
	struct cron_expr c = parse("0 2 * * *");
	struct schedule_start s;
	/* Down for three days: last handled fire was 3 days ago at 02:00. */
	int64_t last = T0 - 10 * 3600 - 3 * 86400;

	(void)state;
	assert_int_equal(schedule_plan_start(&c, utc(), last, T0, true, &s), 0);
	assert_int_equal(s.missed_due, last + 86400); /* the first missed fire */
	assert_int_equal(s.next_due, T0 + 14 * 3600);

	/* Catch-up off: nothing missed is reported, the next fire is the same. */
	assert_int_equal(schedule_plan_start(&c, utc(), last, T0, false, &s), 0);
	assert_int_equal(s.missed_due, 0);
	assert_int_equal(s.next_due, T0 + 14 * 3600);
}

static void test_nothing_missed(void **state)
{
	struct cron_expr c = parse("0 2 * * *");
	struct schedule_start s;
	int64_t last = T0 - 10 * 3600; /* today's 02:00 was handled */

	(void)state;
	assert_int_equal(schedule_plan_start(&c, utc(), last, T0, true, &s), 0);
	assert_int_equal(s.missed_due, 0);
	assert_int_equal(s.next_due, T0 + 14 * 3600);
}

static void test_never_fires(void **state)
{
	struct cron_expr c = parse("0 0 30 2 *");
	struct schedule_start s;

	(void)state;
	assert_int_equal(schedule_plan_start(&c, utc(), -1, T0, true, &s), -ERANGE);
}

static void test_heap_orders_by_due_then_export(void **state)
{
	struct schedule_heap h;
	struct schedule_item it;
	uint32_t x = 12345;
	int64_t prev_due = -1, prev_id = -1;

	(void)state;
	schedule_heap_init(&h);
	assert_null(schedule_heap_peek(&h));
	assert_false(schedule_heap_pop(&h, &it));
	for (int i = 0; i < 10000; i++) {
		x = x * 1103515245u + 12345u;
		assert_int_equal(schedule_heap_push(&h, (struct schedule_item){ (x >> 16) % 100, i }),
				 0);
	}
	assert_int_equal(h.len, 10000);
	for (int i = 0; i < 10000; i++) {
		assert_true(schedule_heap_pop(&h, &it));
		assert_true(it.due > prev_due || (it.due == prev_due && it.export_id > prev_id));
		prev_due = it.due;
		prev_id = it.export_id;
	}
	assert_false(schedule_heap_pop(&h, &it));
	schedule_heap_done(&h);
}

static void test_zone_cache_shares_and_reports(void **state)
{
	struct schedule_zones *z = schedule_zones_new(NULL);
	char err[256] = "";
	const struct tz *a, *b;

	(void)state;
	assert_non_null(z);
	a = schedule_zones_get(z, "Europe/Rome", err, sizeof(err));
	assert_non_null(a);
	b = schedule_zones_get(z, "Europe/Rome", err, sizeof(err));
	assert_ptr_equal(a, b);
	assert_null(schedule_zones_get(z, "Mars/Olympus_Mons", err, sizeof(err)));
	assert_non_null(strstr(err, "Mars/Olympus_Mons"));
	assert_null(schedule_zones_get(z, "../etc/passwd", err, sizeof(err)));
	schedule_zones_free(z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_export_gets_no_catch_up),
		cmocka_unit_test(test_missed_fires_collapse_into_one_catch_up),
		cmocka_unit_test(test_nothing_missed),
		cmocka_unit_test(test_never_fires),
		cmocka_unit_test(test_heap_orders_by_due_then_export),
		cmocka_unit_test(test_zone_cache_shares_and_reports),
	};
	return cmocka_run_group_tests_name("schedule", tests, NULL, NULL);
}
