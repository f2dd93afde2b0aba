/* SPDX-License-Identifier: MIT */
/*
 * Schedule arithmetic for the refresh scheduler, without a loop: which fire comes next for each
 * export, what was missed while the daemon was down, and a min-heap that keeps the earliest fire
 * of thousands of exports at hand so the loop arms exactly one timer.
 *
 * Catch-up rule: at start, an export whose first fire after its last handled fire (last_due) lies
 * in the past missed at least one fire. With catch-up on, it gets exactly one catch-up run, however
 * many fires were missed; either way its next fire is the first one after now. An export that has
 * never been scheduled (no last_due) starts from now and gets no catch-up: saving an export never
 * runs it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cron.h"
#include "tzfile.h"

struct schedule_start {
	int64_t missed_due; /* the first missed fire, or 0: nothing missed (or catch-up off) */
	int64_t next_due;   /* first fire strictly after now */
};

/*
 * Start-of-life decision for one export. last_due < 0 means never scheduled.
 * Returns 0, or -ERANGE when the expression never fires within cron's search horizon.
 */
int schedule_plan_start(const struct cron_expr *cron, const struct tz *tz, int64_t last_due,
			int64_t now, bool catch_up, struct schedule_start *ret);

/* Loaded zones by name, so 10,000 exports in the same zone share one parsed file. */
struct schedule_zones;
struct schedule_zones *schedule_zones_new(const char *zoneinfo_dir);
struct schedule_zones *schedule_zones_free(struct schedule_zones *z);
/* Borrowed zone, valid until schedule_zones_free; NULL with a message in err on failure. */
const struct tz *schedule_zones_get(struct schedule_zones *z, const char *name, char *err,
				    size_t errlen);

struct schedule_item {
	int64_t due;
	int64_t export_id;
};

/* Binary min-heap on (due, export_id): ties fire in export order, deterministically. */
struct schedule_heap {
	struct schedule_item *items;
	size_t len, cap;
};

void schedule_heap_init(struct schedule_heap *h);
void schedule_heap_done(struct schedule_heap *h);
void schedule_heap_clear(struct schedule_heap *h);
int schedule_heap_push(struct schedule_heap *h, struct schedule_item item); /* 0 or -ENOMEM */
/* The earliest item, or NULL when empty (borrowed, valid until the next heap call). */
const struct schedule_item *schedule_heap_peek(const struct schedule_heap *h);
bool schedule_heap_pop(struct schedule_heap *h, struct schedule_item *ret);
