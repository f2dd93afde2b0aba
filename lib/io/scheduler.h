/* SPDX-License-Identifier: MIT */
/*
 * The refresh scheduler: one uv timer armed for the earliest fire over all scheduled exports,
 * re-armed after every fire, on reload, and when the wall clock is set (a timerfd with
 * TFD_TIMER_CANCEL_ON_SET tells us). Between fires the daemon does not wake up at all.
 *
 * Cron expressions are evaluated on the wall clock in each schedule's IANA zone (cron.h states the
 * DST rules); waiting happens on libuv's monotonic timer. A fire handed to the due callback is
 * recorded as the export's last_due_at, which is what lets the next start detect missed fires.
 *
 * Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"

/* A fire: trigger is "schedule" or "catch_up". The callee decides whether a run starts (an
 * export already running is not started twice: see runner.h). */
typedef void (*scheduler_due_fn)(void *ctx, int64_t export_id, const char *trigger,
				 int64_t due_at);
/* Wall clock in milliseconds since the epoch; tests inject their own. */
typedef int64_t (*scheduler_clock_fn)(void *ctx);

struct scheduler_options {
	const char *default_cron;	/* borrowed: copied by scheduler_load */
	const char *default_time_zone;
	bool catch_up;
	const char *zoneinfo_dir;	/* NULL: /usr/share/zoneinfo */
};

struct scheduler;

/*
 * Creates a scheduler on loop reading schedules from store (both borrowed, must outlive it).
 * clock may be NULL (real time). Nothing is armed until scheduler_load. 0 or negative errno.
 */
int scheduler_new(uv_loop_t *loop, struct store *store, scheduler_due_fn due, void *due_ctx,
		  scheduler_clock_fn clock, void *clock_ctx, struct scheduler **ret);

/*
 * (Re)reads every scheduled export and arms the timer. at_start applies the catch-up rule of
 * schedule.h (one catch-up fire per export that missed fires while the daemon was down, when
 * options->catch_up). An invalid default schedule or zone is an error and leaves the previous
 * schedule armed; an export whose own override no longer parses is skipped with a warning.
 * Returns the number of scheduled exports, or a negative errno with a message in err.
 */
int scheduler_load(struct scheduler *sch, const struct scheduler_options *options, bool at_start,
		   char *err, size_t errlen);

/* The earliest pending fire; false when nothing is scheduled. */
bool scheduler_next(const struct scheduler *sch, int64_t *ret_due, int64_t *ret_export_id);
size_t scheduler_count(const struct scheduler *sch);

/* Stops and frees asynchronously: memory goes after the last close callback. NULL is a no-op. */
void scheduler_close(struct scheduler *sch);
