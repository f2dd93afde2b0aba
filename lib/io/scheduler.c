/* SPDX-License-Identifier: MIT */
/*
 * See scheduler.h. Entries (export id, parsed cron, zone) live in an array sorted by export id;
 * the heap holds (due, export id) pairs. A reload builds a complete new state and swaps it in only
 * when it is valid, so a bad configuration never leaves the daemon with no schedule.
 *
 * Several fires of one export that fall due together (the loop was busy, the clock jumped
 * forward) produce one fire: the next fire is always computed after "now", never after the fire
 * just handled.
 */
#include "scheduler.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "cron.h"
#include "log.h"
#include "schedule.h"
#include "store-schedule.h"
#include "util.h"

struct entry {
	int64_t export_id;
	struct cron_expr cron;
	const struct tz *tz; /* borrowed from the zone cache of the same generation */
};

struct generation {
	struct entry *entries;
	size_t len, cap;
	struct schedule_heap heap;
	struct schedule_zones *zones;
};

struct scheduler {
	uv_loop_t *loop;
	struct store *store;
	scheduler_due_fn due;
	void *due_ctx;
	scheduler_clock_fn clock;
	void *clock_ctx;
	struct generation gen;
	uv_timer_t timer;
	uv_poll_t clock_poll;
	int clock_fd;
	int pending_closes;
	bool clock_poll_active;
	bool closing;
};

static int64_t real_clock_ms(void *ctx)
{
	struct timespec ts;

	(void)ctx;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void generation_done(struct generation *g)
{
	free(g->entries);
	schedule_heap_done(&g->heap);
	schedule_zones_free(g->zones);
	memset(g, 0, sizeof(*g));
}

static const struct entry *find_entry(const struct generation *g, int64_t export_id)
{
	size_t lo = 0, hi = g->len;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (g->entries[mid].export_id == export_id)
			return &g->entries[mid];
		if (g->entries[mid].export_id < export_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static void arm(struct scheduler *sch);

/*
 * The clock was set: a timerfd armed far in the future with TFD_TIMER_CANCEL_ON_SET becomes
 * readable (read fails with ECANCELED). Re-arm it and recompute the timer from the new time.
 */
static int clock_watch_arm(int fd)
{
	struct itimerspec its = { .it_value = { .tv_sec = INT32_MAX } };

	if (timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0)
		return -errno;
	return 0;
}

static void on_clock_set(uv_poll_t *p, int status, int events)
{
	struct scheduler *sch = container_of(p, struct scheduler, clock_poll);
	uint64_t expirations;

	(void)events;
	if (status < 0)
		return;
	if (read(sch->clock_fd, &expirations, sizeof(expirations)) < 0 && errno != ECANCELED &&
	    errno != EAGAIN)
		log_warning("Reading the clock-change timer failed: %m, ignoring");
	if (clock_watch_arm(sch->clock_fd) < 0)
		log_warning("Re-arming the clock-change timer failed: %m, ignoring");
	log_info("System clock was set; re-arming the refresh schedule");
	arm(sch);
}

static void on_timer(uv_timer_t *t)
{
	struct scheduler *sch = container_of(t, struct scheduler, timer);
	int64_t now_ms = sch->clock(sch->clock_ctx);
	const struct schedule_item *top;

	while ((top = schedule_heap_peek(&sch->gen.heap)) && top->due * 1000 <= now_ms) {
		struct schedule_item item;
		const struct entry *e;
		int64_t next;
		int r;

		schedule_heap_pop(&sch->gen.heap, &item);
		e = find_entry(&sch->gen, item.export_id);
		if (!e)
			continue;
		/* Re-queue before the callback: it may reload the schedule, which replaces the
		 * entries and the heap this loop is reading. */
		r = cron_next(&e->cron, e->tz, now_ms / 1000, &next);
		if (r == 0 && schedule_heap_push(&sch->gen.heap,
						 (struct schedule_item){ next, e->export_id }) < 0)
			log_error("Out of memory re-scheduling export %" PRId64, e->export_id);
		r = store_schedule_set_last_due(sch->store, item.export_id, item.due);
		if (r < 0)
			log_warning("Recording the fire of export %" PRId64 " failed (%s), a restart "
				    "may run it again as a catch-up", item.export_id,
				    store_errmsg(sch->store));
		sch->due(sch->due_ctx, item.export_id, "schedule", item.due);
		if (sch->closing)
			return; /* the callback may shut the daemon down */
	}
	arm(sch);
}

static void arm(struct scheduler *sch)
{
	const struct schedule_item *top = schedule_heap_peek(&sch->gen.heap);
	int64_t delay;

	if (sch->closing)
		return;
	uv_timer_stop(&sch->timer);
	if (!top)
		return;
	delay = top->due * 1000 - sch->clock(sch->clock_ctx);
	if (delay < 0)
		delay = 0;
	(void)uv_timer_start(&sch->timer, on_timer, (uint64_t)delay, 0);
}

int scheduler_new(uv_loop_t *loop, struct store *store, scheduler_due_fn due, void *due_ctx,
		  scheduler_clock_fn clock, void *clock_ctx, struct scheduler **ret)
{
	struct scheduler *sch = calloc(1, sizeof(*sch));
	int r;

	if (!sch)
		return -ENOMEM;
	sch->loop = loop;
	sch->store = store;
	sch->due = due;
	sch->due_ctx = due_ctx;
	sch->clock = clock ? clock : real_clock_ms;
	sch->clock_ctx = clock_ctx;
	sch->clock_fd = -1;
	r = uv_timer_init(loop, &sch->timer);
	if (r < 0) {
		free(sch);
		return r;
	}
	sch->pending_closes = 1;
	/* Only the real clock can be "set"; an injected test clock has no such event. */
	if (!clock) {
		sch->clock_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
		if (sch->clock_fd >= 0 && clock_watch_arm(sch->clock_fd) == 0 &&
		    uv_poll_init(loop, &sch->clock_poll, sch->clock_fd) == 0) {
			sch->pending_closes++;
			sch->clock_poll_active = true;
			(void)uv_poll_start(&sch->clock_poll, UV_READABLE, on_clock_set);
		} else {
			log_warning("Cannot watch for system clock changes (%m); schedules follow "
				    "the clock only at their next fire, ignoring");
		}
	}
	*ret = sch;
	return 0;
}

struct load_ctx {
	struct scheduler *sch;
	struct generation *gen;
	const struct cron_expr *default_cron;
	const struct tz *default_tz;
	const struct scheduler_options *options;
	bool at_start;
	int64_t now;
	char *err;
	size_t errlen;
};

static int load_row(void *ctx, const struct store_schedule_row *row)
{
	struct load_ctx *lc = ctx;
	struct generation *g = lc->gen;
	struct schedule_start start;
	struct entry e = { .export_id = row->export_id };
	char err[256];
	int r;

	e.cron = *lc->default_cron;
	e.tz = lc->default_tz;
	if (row->cron && cron_parse(row->cron, &e.cron, err, sizeof(err)) < 0) {
		log_warning("Export %" PRId64 ": schedule \"%s\" is invalid (%s); not scheduled, "
			    "fix it with ccsyncctl export edit", row->export_id, row->cron, err);
		return 0;
	}
	if (row->time_zone) {
		e.tz = schedule_zones_get(g->zones, row->time_zone, err, sizeof(err));
		if (!e.tz) {
			log_warning("Export %" PRId64 ": time zone \"%s\": %s; not scheduled",
				    row->export_id, row->time_zone, err);
			return 0;
		}
	}
	r = schedule_plan_start(&e.cron, e.tz, row->last_due_at, lc->now,
				lc->at_start && lc->options->catch_up, &start);
	if (r == -ERANGE) {
		log_warning("Export %" PRId64 ": schedule never fires; not scheduled",
			    row->export_id);
		return 0;
	}
	if (r < 0)
		return r;
	if (g->len == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 64;
		struct entry *entries = realloc(g->entries, cap * sizeof(*entries));

		if (!entries)
			return -ENOMEM;
		g->entries = entries;
		g->cap = cap;
	}
	g->entries[g->len++] = e;
	r = schedule_heap_push(&g->heap, (struct schedule_item){ start.next_due, e.export_id });
	if (r < 0)
		return r;
	if (start.missed_due) {
		/* Recorded before the callback: a crash during the catch-up run must not produce a
		 * second catch-up at the next start. */
		(void)store_schedule_set_last_due(lc->sch->store, e.export_id, lc->now);
		log_info("Export %" PRId64 " missed its refresh while ccsyncd was down; "
			 "starting one catch-up run", e.export_id);
		lc->sch->due(lc->sch->due_ctx, e.export_id, "catch_up", start.missed_due);
	} else if (row->last_due_at < 0) {
		(void)store_schedule_set_last_due(lc->sch->store, e.export_id, lc->now);
	}
	return 0;
}

int scheduler_load(struct scheduler *sch, const struct scheduler_options *options, bool at_start,
		   char *err, size_t errlen)
{
	struct generation next = { 0 };
	struct cron_expr default_cron;
	const struct tz *default_tz;
	char inner[256];
	struct load_ctx lc;
	int r;

	if (cron_parse(options->default_cron, &default_cron, inner, sizeof(inner)) < 0)
		return set_error(err, errlen, -EINVAL, "[schedule] default: %s", inner);
	schedule_heap_init(&next.heap);
	next.zones = schedule_zones_new(options->zoneinfo_dir);
	if (!next.zones)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	default_tz = schedule_zones_get(next.zones, options->default_time_zone, inner,
					sizeof(inner));
	if (!default_tz) {
		generation_done(&next);
		return set_error(err, errlen, -EINVAL, "[schedule] time_zone: %s", inner);
	}
	lc = (struct load_ctx){ sch, &next, &default_cron, default_tz, options, at_start,
				sch->clock(sch->clock_ctx) / 1000, err, errlen };
	r = store_schedule_foreach(sch->store, load_row, &lc);
	if (r < 0) {
		generation_done(&next);
		return set_error(err, errlen, r, "reading the export schedules failed: %s",
				 r == -ENOMEM ? "out of memory" : store_errmsg(sch->store));
	}
	generation_done(&sch->gen);
	sch->gen = next;
	arm(sch);
	return (int)sch->gen.len;
}

bool scheduler_next(const struct scheduler *sch, int64_t *ret_due, int64_t *ret_export_id)
{
	const struct schedule_item *top = schedule_heap_peek(&sch->gen.heap);

	if (!top)
		return false;
	if (ret_due)
		*ret_due = top->due;
	if (ret_export_id)
		*ret_export_id = top->export_id;
	return true;
}

size_t scheduler_count(const struct scheduler *sch)
{
	return sch->gen.len;
}

static void on_closed(uv_handle_t *h)
{
	struct scheduler *sch = h->data;

	if (--sch->pending_closes > 0)
		return;
	if (sch->clock_fd >= 0)
		close(sch->clock_fd);
	generation_done(&sch->gen);
	free(sch);
}

void scheduler_close(struct scheduler *sch)
{
	if (!sch || sch->closing)
		return;
	sch->closing = true;
	sch->timer.data = sch;
	uv_close((uv_handle_t *)&sch->timer, on_closed);
	if (sch->clock_poll_active) {
		sch->clock_poll.data = sch;
		uv_close((uv_handle_t *)&sch->clock_poll, on_closed);
	}
}
