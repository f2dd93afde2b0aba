/* SPDX-License-Identifier: MIT */
/* See store-schedule.h. */
#include "store-schedule.h"

#include <errno.h>

#include "store-internal.h"

int store_schedule_foreach(struct store *s, store_schedule_fn fn, void *ctx)
{
	static const char sql[] =
		"SELECT e.export_id, s.cron, s.time_zone, coalesce(s.last_due_at, -1) "
		"FROM exports e LEFT JOIN schedules s ON s.export_id = e.export_id "
		"WHERE e.enabled = 1 AND e.removed_at IS NULL ORDER BY e.export_id";
	sqlite3_stmt *st = store_prepare(s, sql);
	int rc, r = 0;

	if (!st)
		return -EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_schedule_row row = {
			.export_id = sqlite3_column_int64(st, 0),
			.cron = (const char *)sqlite3_column_text(st, 1),
			.time_zone = (const char *)sqlite3_column_text(st, 2),
			.last_due_at = sqlite3_column_int64(st, 3),
		};

		r = fn(ctx, &row);
		if (r < 0)
			break;
	}
	if (r >= 0 && rc != SQLITE_DONE)
		r = store_error(s, rc);
	sqlite3_reset(st);
	return r < 0 ? r : 0;
}

int store_schedule_set_last_due(struct store *s, int64_t export_id, int64_t due_at)
{
	static const char sql[] =
		"INSERT INTO schedules (export_id, last_due_at) VALUES (?1, ?2) "
		"ON CONFLICT (export_id) DO UPDATE SET last_due_at = excluded.last_due_at";
	sqlite3_stmt *st = store_prepare(s, sql);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, export_id);
	sqlite3_bind_int64(st, 2, due_at);
	return store_exec_stmt(s, st);
}
