/* SPDX-License-Identifier: MIT */
/*
 * SQL for connections, exports (with segments, field mappings and schedule override) and the
 * audit log. Every statement is a static const array so store_prepare can cache it by address.
 *
 * Invariants: every SELECT is reset before its function returns, so no read transaction outlives
 * a call (a lingering one would pin the WAL and block checkpoints); no query ever selects a token
 * column; writes never run outside the caller's transaction except where the caller chose
 * autocommit.
 */
#include "store-config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"
#include "util.h"

/* ---- helpers ---- */

static int grow(void **v, size_t *cap, size_t n, size_t elem)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return 0;
	ncap = *cap ? *cap * 2 : 8;
	if (ncap > SIZE_MAX / elem)
		return -ENOMEM;
	p = realloc(*v, ncap * elem);
	if (!p)
		return -ENOMEM;
	memset((char *)p + *cap * elem, 0, (ncap - *cap) * elem);
	*v = p;
	*cap = ncap;
	return 0;
}

/* Runs a write that must touch exactly one live row: -ENOENT otherwise. */
static int step_one_row(struct store *s, sqlite3_stmt *st)
{
	int r = store_exec_stmt(s, st);

	if (r < 0)
		return r;
	return sqlite3_changes(store_db(s)) == 1 ? 0 : -ENOENT;
}

/* Reads the current row of st into *ret (a struct of the caller's row type); cleans up after itself
 * on failure. */
typedef int (*read_row_fn)(sqlite3_stmt *st, void *ret);

/* Steps st for its one row and resets it: -ENOENT when there is none. */
static int read_one_row(struct store *s, sqlite3_stmt *st, read_row_fn read_row, void *ret)
{
	int rc = sqlite3_step(st), r;

	if (rc == SQLITE_ROW)
		r = read_row(st, ret);
	else if (rc == SQLITE_DONE)
		r = -ENOENT;
	else
		r = store_error(s, rc) ?: -EIO;
	sqlite3_reset(st);
	return r;
}

/*
 * Steps st to its end, reading each row into a new element (elem bytes) of a growing array, and
 * resets it. *ret and *ret_n are set on failure too, to the rows read so far: the caller frees
 * them with its array free either way.
 */
static int read_rows(struct store *s, sqlite3_stmt *st, size_t elem, read_row_fn read_row,
		     void **ret, size_t *ret_n)
{
	void *v = NULL;
	size_t n = 0, cap = 0;
	int rc, r = 0;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		r = grow(&v, &cap, n, elem);
		if (r < 0)
			break;
		r = read_row(st, (char *)v + n * elem);
		if (r < 0)
			break;
		n++;
	}
	if (r >= 0 && rc != SQLITE_DONE)
		r = store_error(s, rc) ?: -EIO;
	sqlite3_reset(st);
	*ret = v;
	*ret_n = n;
	return r;
}

/* Runs an UPDATE of one live row, ?1 its id and ?2 the time: -ENOENT when there is no such row. */
static int update_one_row(struct store *s, const char *sql, int64_t id, int64_t now)
{
	sqlite3_stmt *st = store_prepare(s, sql);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, now);
	return step_one_row(s, st);
}

/* Runs a statement whose only parameter ?1 is an id. */
static int exec_with_id(struct store *s, const char *sql, int64_t id)
{
	sqlite3_stmt *st = store_prepare(s, sql);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	return store_exec_stmt(s, st);
}

static int bind_opt_int(sqlite3_stmt *st, int idx, bool set, int64_t v)
{
	return set ? sqlite3_bind_int64(st, idx, v) : sqlite3_bind_null(st, idx);
}

int64_t store_config_now(void)
{
	return store_now();
}

/* ---- connections ---- */

void store_connection_done(struct store_connection *c)
{
	if (!c)
		return;
	free(c->name);
	free(c->usable_by);
	free(c->client_id);
	free(c->auth_flow);
	free(c->consent_by);
	free(c->auth_state);
	free(c->auth_error);
	memset(c, 0, sizeof(*c));
}

void store_connection_array_free(struct store_connection *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_connection_done(&v[i]);
	free(v);
}

#define CONNECTION_COLUMNS                                                                         \
	"SELECT c.connection_id, c.name, c.usable_by, c.client_id, c.auth_flow, c.consent_by, "    \
	"coalesce(c.consent_uid, -1), coalesce(c.consent_at, 0), c.auth_state, c.auth_error, "     \
	"EXISTS (SELECT 1 FROM connection_tokens t WHERE t.connection_id = c.connection_id "       \
	"AND (t.access_token IS NOT NULL OR t.refresh_token IS NOT NULL)), "                       \
	"(SELECT count(*) FROM exports e WHERE e.connection_id = c.connection_id "                 \
	"AND e.removed_at IS NULL), c.created_at, c.updated_at FROM connections c "                \
	"WHERE c.removed_at IS NULL "

static int read_connection(sqlite3_stmt *st, void *ret)
{
	struct store_connection c = {
		.connection_id = sqlite3_column_int64(st, 0),
		.consent_uid = sqlite3_column_int64(st, 6),
		.consent_at = sqlite3_column_int64(st, 7),
		.has_tokens = sqlite3_column_int(st, 10) != 0,
		.exports = sqlite3_column_int64(st, 11),
		.created_at = sqlite3_column_int64(st, 12),
		.updated_at = sqlite3_column_int64(st, 13),
	};

	if (store_column_strdup(st, 1, &c.name) < 0 ||
	    store_column_strdup(st, 2, &c.usable_by) < 0 ||
	    store_column_strdup(st, 3, &c.client_id) < 0 ||
	    store_column_strdup(st, 4, &c.auth_flow) < 0 ||
	    store_column_strdup(st, 5, &c.consent_by) < 0 ||
	    store_column_strdup(st, 8, &c.auth_state) < 0 ||
	    store_column_strdup(st, 9, &c.auth_error) < 0) {
		store_connection_done(&c);
		return -ENOMEM;
	}
	*(struct store_connection *)ret = c;
	return 0;
}

int store_config_connection_insert(struct store *s, const char *name, const char *client_id,
				   const char *auth_flow, const char *usable_by, int64_t now,
				   int64_t *ret_id)
{
	static const char SQL[] =
		"INSERT INTO connections (name, client_id, auth_flow, usable_by, created_at, "
		"updated_at) VALUES (?1, ?2, coalesce(?3, 'device'), coalesce(?4, 'admins'), ?5, "
		"?5)";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	store_bind_text(st, 1, name);
	store_bind_text(st, 2, client_id);
	store_bind_text(st, 3, auth_flow);
	store_bind_text(st, 4, usable_by);
	sqlite3_bind_int64(st, 5, now);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	*ret_id = sqlite3_last_insert_rowid(store_db(s));
	return 0;
}

int store_config_connection_get(struct store *s, int64_t connection_id,
				struct store_connection *ret)
{
	static const char SQL[] = CONNECTION_COLUMNS "AND c.connection_id = ?1";
	sqlite3_stmt *st = store_prepare(s, SQL);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, connection_id);
	return read_one_row(s, st, read_connection, ret);
}

int store_config_connection_find(struct store *s, const char *name, struct store_connection *ret)
{
	static const char SQL[] = CONNECTION_COLUMNS "AND c.name = ?1";
	sqlite3_stmt *st = store_prepare(s, SQL);

	if (!st)
		return -EIO;
	store_bind_text(st, 1, name);
	return read_one_row(s, st, read_connection, ret);
}

int store_config_connection_list(struct store *s, struct store_connection **ret, size_t *ret_n)
{
	static const char SQL[] = CONNECTION_COLUMNS "ORDER BY c.name";
	sqlite3_stmt *st = store_prepare(s, SQL);
	struct store_connection *v;
	size_t n;
	int r;

	if (!st)
		return -EIO;
	r = read_rows(s, st, sizeof(*v), read_connection, (void **)&v, &n);
	if (r < 0) {
		store_connection_array_free(v, n);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int store_config_connection_update(struct store *s, const struct store_connection *c, int64_t now)
{
	static const char SQL[] =
		"UPDATE connections SET name = ?2, client_id = ?3, auth_flow = ?4, usable_by = ?5, "
		"updated_at = ?6 WHERE connection_id = ?1 AND removed_at IS NULL";
	sqlite3_stmt *st = store_prepare(s, SQL);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, c->connection_id);
	store_bind_text(st, 2, c->name);
	store_bind_text(st, 3, c->client_id);
	store_bind_text(st, 4, c->auth_flow);
	store_bind_text(st, 5, c->usable_by);
	sqlite3_bind_int64(st, 6, now);
	return step_one_row(s, st);
}

int store_config_connection_set_consent(struct store *s, int64_t connection_id,
					const char *user_name, int64_t uid, int64_t at)
{
	static const char SQL[] =
		"UPDATE connections SET consent_by = ?2, consent_uid = ?3, consent_at = ?4, "
		"updated_at = coalesce(?4, ?5) WHERE connection_id = ?1 AND removed_at IS NULL";
	sqlite3_stmt *st = store_prepare(s, SQL);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, connection_id);
	store_bind_text(st, 2, user_name);
	bind_opt_int(st, 3, user_name, uid);
	bind_opt_int(st, 4, user_name, at);
	sqlite3_bind_int64(st, 5, at);
	return step_one_row(s, st);
}

int store_config_connection_remove(struct store *s, int64_t connection_id, int64_t now)
{
	static const char SQL[] =
		"UPDATE connections SET removed_at = ?2, updated_at = ?2 "
		"WHERE connection_id = ?1 AND removed_at IS NULL";

	return update_one_row(s, SQL, connection_id, now);
}

int store_config_connection_delete_tokens(struct store *s, int64_t connection_id,
					  bool *ret_deleted)
{
	static const char SQL[] = "DELETE FROM connection_tokens WHERE connection_id = ?1";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, connection_id);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	*ret_deleted = sqlite3_changes(store_db(s)) > 0;
	return 0;
}

int store_config_connection_disable_exports(struct store *s, int64_t connection_id,
					    const char *reason, int64_t now, int64_t *ret_count)
{
	static const char SQL[] =
		"UPDATE exports SET enabled = 0, disabled_reason = ?2, updated_at = ?3 "
		"WHERE connection_id = ?1 AND removed_at IS NULL";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, connection_id);
	store_bind_text(st, 2, reason);
	sqlite3_bind_int64(st, 3, now);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	*ret_count = sqlite3_changes(store_db(s));
	return 0;
}

/* ---- exports ---- */

void store_export_done(struct store_export *e)
{
	if (!e)
		return;
	free(e->name);
	free(e->connection_name);
	free(e->connection_usable_by);
	free(e->list_id);
	free(e->mode);
	free(e->email_field);
	free(e->first_name_field);
	free(e->last_name_field);
	free(e->disabled_reason);
	free(e->created_by);
	free(e->cron);
	free(e->time_zone);
	for (size_t i = 0; i < e->n_segments; i++)
		free(e->segments[i].name);
	free(e->segments);
	for (size_t i = 0; i < e->n_fields; i++) {
		free(e->fields[i].target);
		free(e->fields[i].source_field);
	}
	free(e->fields);
	memset(e, 0, sizeof(*e));
}

void store_export_array_free(struct store_export *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_export_done(&v[i]);
	free(v);
}

#define EXPORT_COLUMNS                                                                             \
	"SELECT e.export_id, e.name, e.connection_id, c.name, c.usable_by, "                       \
	"c.removed_at IS NOT NULL, e.list_id, e.mode, e.email_field, e.first_name_field, "         \
	"e.last_name_field, e.follows_refresh, e.mirror_max_remove_share, e.enabled, "             \
	"e.disabled_reason, e.created_by, sc.cron, sc.time_zone, e.created_at, e.updated_at "     \
	"FROM exports e JOIN connections c ON c.connection_id = e.connection_id "                 \
	"LEFT JOIN schedules sc ON sc.export_id = e.export_id WHERE e.removed_at IS NULL "

static int read_export(sqlite3_stmt *st, void *ret)
{
	struct store_export e = {
		.export_id = sqlite3_column_int64(st, 0),
		.connection_id = sqlite3_column_int64(st, 2),
		.connection_removed = sqlite3_column_int(st, 5) != 0,
		.follows_refresh = sqlite3_column_int(st, 11) != 0,
		.has_mirror_share = sqlite3_column_type(st, 12) != SQLITE_NULL,
		.mirror_max_remove_share = sqlite3_column_double(st, 12),
		.enabled = sqlite3_column_int(st, 13) != 0,
		.created_at = sqlite3_column_int64(st, 18),
		.updated_at = sqlite3_column_int64(st, 19),
	};

	if (store_column_strdup(st, 1, &e.name) < 0 ||
	    store_column_strdup(st, 3, &e.connection_name) < 0 ||
	    store_column_strdup(st, 4, &e.connection_usable_by) < 0 ||
	    store_column_strdup(st, 6, &e.list_id) < 0 ||
	    store_column_strdup(st, 7, &e.mode) < 0 ||
	    store_column_strdup(st, 8, &e.email_field) < 0 ||
	    store_column_strdup(st, 9, &e.first_name_field) < 0 ||
	    store_column_strdup(st, 10, &e.last_name_field) < 0 ||
	    store_column_strdup(st, 14, &e.disabled_reason) < 0 ||
	    store_column_strdup(st, 15, &e.created_by) < 0 ||
	    store_column_strdup(st, 16, &e.cron) < 0 ||
	    store_column_strdup(st, 17, &e.time_zone) < 0) {
		store_export_done(&e);
		return -ENOMEM;
	}
	*(struct store_export *)ret = e;
	return 0;
}

static int read_export_segment(sqlite3_stmt *st, void *ret)
{
	struct store_export_segment *seg = ret;

	seg->segment_id = sqlite3_column_int64(st, 0);
	return store_column_strdup(st, 1, &seg->name);
}

static int read_export_field(sqlite3_stmt *st, void *ret)
{
	struct store_export_field f = {};

	if (store_column_strdup(st, 0, &f.target) < 0 ||
	    store_column_strdup(st, 1, &f.source_field) < 0) {
		free(f.target);
		return -ENOMEM;
	}
	*(struct store_export_field *)ret = f;
	return 0;
}

/* Fills segments and fields of an export whose main row has been read. */
static int export_load_children(struct store *s, struct store_export *e)
{
	static const char SQL_SEGMENTS[] =
		"SELECT es.segment_id, sg.name FROM export_segments es "
		"JOIN segments sg ON sg.segment_id = es.segment_id WHERE es.export_id = ?1 "
		"ORDER BY sg.name";
	static const char SQL_FIELDS[] =
		"SELECT target, source_field FROM export_fields WHERE export_id = ?1 "
		"ORDER BY target";
	sqlite3_stmt *st;
	int r;

	st = store_prepare(s, SQL_SEGMENTS);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, e->export_id);
	r = read_rows(s, st, sizeof(*e->segments), read_export_segment, (void **)&e->segments,
		      &e->n_segments);
	if (r < 0)
		return r;
	st = store_prepare(s, SQL_FIELDS);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, e->export_id);
	return read_rows(s, st, sizeof(*e->fields), read_export_field, (void **)&e->fields,
			 &e->n_fields);
}

static int export_one(struct store *s, sqlite3_stmt *st, struct store_export *ret)
{
	struct store_export e = {};
	int r = read_one_row(s, st, read_export, &e);

	if (r < 0)
		return r;
	r = export_load_children(s, &e);
	if (r < 0) {
		store_export_done(&e);
		return r;
	}
	*ret = e;
	return 0;
}

int store_config_export_get(struct store *s, int64_t export_id, struct store_export *ret)
{
	static const char SQL[] = EXPORT_COLUMNS "AND e.export_id = ?1";
	sqlite3_stmt *st = store_prepare(s, SQL);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, export_id);
	return export_one(s, st, ret);
}

int store_config_export_find(struct store *s, const char *name, struct store_export *ret)
{
	static const char SQL[] = EXPORT_COLUMNS "AND e.name = ?1";
	sqlite3_stmt *st = store_prepare(s, SQL);

	if (!st)
		return -EIO;
	store_bind_text(st, 1, name);
	return export_one(s, st, ret);
}

int store_config_export_list(struct store *s, struct store_export **ret, size_t *ret_n)
{
	static const char SQL[] = EXPORT_COLUMNS "ORDER BY e.name";
	sqlite3_stmt *st = store_prepare(s, SQL);
	struct store_export *v;
	size_t n;
	int r;

	if (!st)
		return -EIO;
	r = read_rows(s, st, sizeof(*v), read_export, (void **)&v, &n);
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = export_load_children(s, &v[i]);
	if (r < 0) {
		store_export_array_free(v, n);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static int bind_export_columns(sqlite3_stmt *st, const struct store_export *e)
{
	/* ?2..?10 in the order both INSERT and UPDATE use */
	store_bind_text(st, 2, e->name);
	sqlite3_bind_int64(st, 3, e->connection_id);
	store_bind_text(st, 4, e->list_id);
	store_bind_text(st, 5, e->mode ? e->mode : "upsert");
	store_bind_text(st, 6, e->email_field);
	store_bind_text(st, 7, e->first_name_field);
	store_bind_text(st, 8, e->last_name_field);
	sqlite3_bind_int(st, 9, e->follows_refresh);
	if (e->has_mirror_share)
		sqlite3_bind_double(st, 10, e->mirror_max_remove_share);
	else
		sqlite3_bind_null(st, 10);
	return 0;
}

static int export_write_children(struct store *s, const struct store_export *e, int64_t id,
				 int64_t now)
{
	static const char SQL_DEL_SEGMENTS[] = "DELETE FROM export_segments WHERE export_id = ?1";
	static const char SQL_DEL_FIELDS[] = "DELETE FROM export_fields WHERE export_id = ?1";
	static const char SQL_SEGMENT[] =
		"INSERT INTO export_segments (export_id, segment_id) VALUES (?1, ?2)";
	static const char SQL_FIELD[] =
		"INSERT INTO export_fields (export_id, target, source_field) VALUES (?1, ?2, ?3)";
	static const char SQL_SCHEDULE[] =
		"INSERT INTO schedules (export_id, cron, time_zone) VALUES (?1, ?2, ?3) "
		"ON CONFLICT (export_id) DO UPDATE SET cron = excluded.cron, "
		"time_zone = excluded.time_zone, last_due_at = CASE WHEN last_due_at IS NOT NULL "
		"AND (cron IS NOT excluded.cron OR time_zone IS NOT excluded.time_zone) THEN ?4 "
		"ELSE last_due_at END";
	sqlite3_stmt *st;
	int r;

	r = exec_with_id(s, SQL_DEL_SEGMENTS, id);
	if (r >= 0)
		r = exec_with_id(s, SQL_DEL_FIELDS, id);
	if (r < 0)
		return r;
	for (size_t i = 0; i < e->n_segments; i++) {
		st = store_prepare(s, SQL_SEGMENT);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, e->segments[i].segment_id);
		r = store_exec_stmt(s, st);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < e->n_fields; i++) {
		st = store_prepare(s, SQL_FIELD);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, id);
		store_bind_text(st, 2, e->fields[i].target);
		store_bind_text(st, 3, e->fields[i].source_field);
		r = store_exec_stmt(s, st);
		if (r < 0)
			return r;
	}
	st = store_prepare(s, SQL_SCHEDULE);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, id);
	store_bind_text(st, 2, e->cron);
	store_bind_text(st, 3, e->time_zone);
	sqlite3_bind_int64(st, 4, now);
	return store_exec_stmt(s, st);
}

int store_config_export_insert(struct store *s, const struct store_export *e, int64_t now,
			       int64_t *ret_id)
{
	static const char SQL[] =
		"INSERT INTO exports (name, connection_id, list_id, mode, email_field, "
		"first_name_field, last_name_field, follows_refresh, mirror_max_remove_share, "
		"enabled, created_by, created_at, updated_at) "
		"VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11, ?12, ?12)";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int64_t id;
	int r;

	if (!st)
		return -EIO;
	bind_export_columns(st, e);
	store_bind_text(st, 11, e->created_by);
	sqlite3_bind_int64(st, 12, now);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	id = sqlite3_last_insert_rowid(store_db(s));
	r = export_write_children(s, e, id, now);
	if (r < 0)
		return r;
	*ret_id = id;
	return 0;
}

int store_config_export_update(struct store *s, const struct store_export *e, int64_t now)
{
	static const char SQL[] =
		"UPDATE exports SET name = ?2, connection_id = ?3, list_id = ?4, mode = ?5, "
		"email_field = ?6, first_name_field = ?7, last_name_field = ?8, follows_refresh "
		"= ?9, "
		"mirror_max_remove_share = ?10, updated_at = ?11 "
		"WHERE export_id = ?1 AND removed_at IS NULL";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, e->export_id);
	bind_export_columns(st, e);
	sqlite3_bind_int64(st, 11, now);
	r = step_one_row(s, st);
	if (r < 0)
		return r;
	return export_write_children(s, e, e->export_id, now);
}

int store_config_export_set_enabled(struct store *s, int64_t export_id, bool enabled,
				    const char *reason, int64_t now)
{
	static const char SQL[] =
		"UPDATE exports SET enabled = ?2, disabled_reason = ?3, updated_at = ?4 "
		"WHERE export_id = ?1 AND removed_at IS NULL";
	sqlite3_stmt *st = store_prepare(s, SQL);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, export_id);
	sqlite3_bind_int(st, 2, enabled);
	store_bind_text(st, 3, enabled ? NULL : reason);
	sqlite3_bind_int64(st, 4, now);
	return step_one_row(s, st);
}

int store_config_export_remove(struct store *s, int64_t export_id, int64_t now)
{
	static const char SQL[] =
		"UPDATE exports SET removed_at = ?2, updated_at = ?2 "
		"WHERE export_id = ?1 AND removed_at IS NULL";

	return update_one_row(s, SQL, export_id, now);
}

/* ---- audit log ---- */

void store_audit_entry_done(struct store_audit_entry *e)
{
	if (!e)
		return;
	free(e->user_name);
	free(e->action);
	free(e->object_type);
	free(e->object_id);
	free(e->before_json);
	free(e->after_json);
	memset(e, 0, sizeof(*e));
}

void store_audit_entry_array_free(struct store_audit_entry *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		store_audit_entry_done(&v[i]);
	free(v);
}

int store_config_audit_add(struct store *s, const struct store_audit_entry *e, int64_t *ret_id)
{
	static const char SQL[] =
		"INSERT INTO audit_log (at, uid, user_name, action, object_type, object_id, "
		"before_json, after_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, e->at);
	bind_opt_int(st, 2, e->has_uid, e->uid);
	store_bind_text(st, 3, e->user_name);
	store_bind_text(st, 4, e->action);
	store_bind_text(st, 5, e->object_type);
	store_bind_text(st, 6, e->object_id);
	store_bind_text(st, 7, e->before_json);
	store_bind_text(st, 8, e->after_json);
	r = store_exec_stmt(s, st);
	if (r == -EEXIST) /* the only CHECKs are json_valid() and NOT NULL */
		return -EINVAL;
	if (r < 0)
		return r;
	*ret_id = sqlite3_last_insert_rowid(store_db(s));
	return 0;
}

static int read_audit_entry(sqlite3_stmt *st, void *ret)
{
	struct store_audit_entry e = {
		.audit_id = sqlite3_column_int64(st, 0),
		.at = sqlite3_column_int64(st, 1),
		.has_uid = sqlite3_column_type(st, 2) != SQLITE_NULL,
		.uid = sqlite3_column_int64(st, 2),
	};

	if (store_column_strdup(st, 3, &e.user_name) < 0 ||
	    store_column_strdup(st, 4, &e.action) < 0 ||
	    store_column_strdup(st, 5, &e.object_type) < 0 ||
	    store_column_strdup(st, 6, &e.object_id) < 0 ||
	    store_column_strdup(st, 7, &e.before_json) < 0 ||
	    store_column_strdup(st, 8, &e.after_json) < 0) {
		store_audit_entry_done(&e);
		return -ENOMEM;
	}
	*(struct store_audit_entry *)ret = e;
	return 0;
}

int store_config_audit_list(struct store *s, int64_t before, size_t limit,
			    struct store_audit_entry **ret, size_t *ret_n)
{
	static const char SQL[] =
		"SELECT audit_id, at, uid, user_name, action, object_type, object_id, before_json, "
		"after_json FROM audit_log WHERE audit_id < ?1 ORDER BY audit_id DESC LIMIT ?2";
	sqlite3_stmt *st = store_prepare(s, SQL);
	struct store_audit_entry *v;
	size_t n;
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, before > 0 ? before : INT64_MAX);
	sqlite3_bind_int64(st, 2, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
	r = read_rows(s, st, sizeof(*v), read_audit_entry, (void **)&v, &n);
	if (r < 0) {
		store_audit_entry_array_free(v, n);
		return r;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}
