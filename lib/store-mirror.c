/* SPDX-License-Identifier: MIT */
/* See store-mirror.h. */
#include "store-mirror.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store-internal.h"
#include "util.h"

static int sql_fail(struct store *s, int r, char *err, size_t errlen, const char *what)
{
	return set_error(err, errlen, r < 0 ? r : -EIO, "%s: %s", what, store_errmsg(s));
}

int store_mirror_staging_get(struct store *s, int64_t export_id, struct store_mirror_staging *ret,
			     char *err, size_t errlen)
{
	static const char sql[] = "SELECT list_id, dirty, pending_activity_id, pending_is_empty "
				  "FROM mirror_staging WHERE export_id = ?1";
	sqlite3_stmt *st = store_prepare(s, sql);
	struct store_mirror_staging m = { 0 };
	const char *t;
	int r;

	if (!st)
		return sql_fail(s, -EIO, err, errlen, "reading the staging list");
	sqlite3_bind_int64(st, 1, export_id);
	r = store_step(s, st);
	if (r <= 0) {
		sqlite3_reset(st);
		return r < 0 ? sql_fail(s, r, err, errlen, "reading the staging list") : 0;
	}
	t = (const char *)sqlite3_column_text(st, 0);
	snprintf(m.list_id, sizeof(m.list_id), "%s", t ? t : "");
	m.dirty = sqlite3_column_int(st, 1) != 0;
	t = (const char *)sqlite3_column_text(st, 2);
	snprintf(m.pending_activity_id, sizeof(m.pending_activity_id), "%s", t ? t : "");
	m.pending_is_empty = sqlite3_column_int(st, 3) != 0;
	sqlite3_reset(st);
	*ret = m;
	return 1;
}

int store_mirror_staging_set(struct store *s, int64_t export_id,
			     const struct store_mirror_staging *m, char *err, size_t errlen)
{
	static const char sql[] =
		"INSERT INTO mirror_staging (export_id, list_id, dirty, pending_activity_id, "
		"pending_is_empty, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
		"ON CONFLICT (export_id) DO UPDATE SET list_id = excluded.list_id, "
		"dirty = excluded.dirty, pending_activity_id = excluded.pending_activity_id, "
		"pending_is_empty = excluded.pending_is_empty, updated_at = excluded.updated_at";
	sqlite3_stmt *st = store_prepare(s, sql);
	int r;

	if (!st)
		return sql_fail(s, -EIO, err, errlen, "recording the staging list");
	sqlite3_bind_int64(st, 1, export_id);
	store_bind_text(st, 2, m->list_id);
	sqlite3_bind_int(st, 3, m->dirty);
	store_bind_text(st, 4, m->pending_activity_id[0] ? m->pending_activity_id : NULL);
	sqlite3_bind_int(st, 5, m->pending_activity_id[0] && m->pending_is_empty);
	sqlite3_bind_int64(st, 6, store_now());
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_fail(s, r, err, errlen, "recording the staging list");
	return 0;
}

int store_mirror_staging_forget(struct store *s, int64_t export_id, char *err, size_t errlen)
{
	static const char sql[] = "DELETE FROM mirror_staging WHERE export_id = ?1";
	sqlite3_stmt *st = store_prepare(s, sql);
	int r;

	if (!st)
		return sql_fail(s, -EIO, err, errlen, "forgetting the staging list");
	sqlite3_bind_int64(st, 1, export_id);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_fail(s, r, err, errlen, "forgetting the staging list");
	return 0;
}

int store_mirror_has_sync_state(struct store *s, int64_t export_id)
{
	static const char sql[] = "SELECT EXISTS (SELECT 1 FROM sync_state "
				  "WHERE export_id = ?1 AND state = 'synced')";
	sqlite3_stmt *st = store_prepare(s, sql);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, export_id);
	r = store_step(s, st);
	if (r > 0)
		r = sqlite3_column_int(st, 0) != 0;
	sqlite3_reset(st);
	return r;
}
