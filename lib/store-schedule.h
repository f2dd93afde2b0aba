/* SPDX-License-Identifier: MIT */
/*
 * The scheduler's SQL: which exports are scheduled (enabled, not removed), with their schedule
 * override, and the last fire each one handled. The override columns themselves are edited
 * through store-config (ccsyncctl export edit); this file only reads them.
 */
#pragma once

#include <stdint.h>

#include "store.h"

struct store_schedule_row {
	int64_t export_id;
	const char *cron;	/* NULL: the configured default (borrowed, valid during the callback) */
	const char *time_zone;	/* NULL: the configured default */
	int64_t last_due_at;	/* -1: never scheduled */
};

typedef int (*store_schedule_fn)(void *ctx, const struct store_schedule_row *row);

/* Calls fn for every scheduled export, in export_id order; a negative return stops and is
 * returned. 0 or negative errno. */
int store_schedule_foreach(struct store *s, store_schedule_fn fn, void *ctx);

/* Records that the fire at due_at was handled for the export. 0 or negative errno. */
int store_schedule_set_last_due(struct store *s, int64_t export_id, int64_t due_at);
