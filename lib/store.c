/* SPDX-License-Identifier: MIT */
/*
 * Store core: open, pragmas, migrations, transactions and the statement cache the domain files
 * build on. Statements are prepared lazily and cached by the address of their SQL text, so each
 * domain file keeps its SQL next to the code that uses it without a shared registry to edit.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "store-internal.h"
#include "store-migrations.h"
#include "util.h"

#define STMT_CACHE_SIZE 512 /* power of two; far above the number of distinct statements */

struct stmt_slot {
	const char *sql;
	sqlite3_stmt *stmt;
};

struct store {
	sqlite3 *db;
	char *path;
	char errmsg[512];
	struct stmt_slot cache[STMT_CACHE_SIZE];
};

int store_error(struct store *s, int rc)
{
	int primary = rc & 0xff;

	if (s && s->db)
		snprintf(s->errmsg, sizeof(s->errmsg), "%s", sqlite3_errmsg(s->db));
	switch (primary) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_NOTFOUND:
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_TOOBIG:
	case SQLITE_RANGE:
	case SQLITE_MISMATCH:
		return -EINVAL;
	default:
		return -EIO;
	}
}

const char *store_errmsg(const struct store *s)
{
	return s->errmsg;
}

sqlite3 *store_db(struct store *s)
{
	return s->db;
}

const char *store_path(const struct store *s)
{
	return s->path;
}

int64_t store_now(void)
{
	const char *fake = getenv("CCSYNC_FAKE_NOW");

	if (fake && *fake)
		return strtoll(fake, NULL, 10);
	return (int64_t)time(NULL);
}

sqlite3_stmt *store_prepare(struct store *s, const char *sql)
{
	uintptr_t h = ((uintptr_t)sql >> 3) * 0x9e3779b97f4a7c15ull;
	size_t i = (size_t)(h >> 20) & (STMT_CACHE_SIZE - 1);
	int rc;

	for (size_t probe = 0; probe < STMT_CACHE_SIZE; probe++, i = (i + 1) & (STMT_CACHE_SIZE - 1)) {
		struct stmt_slot *slot = &s->cache[i];

		if (slot->sql == sql) {
			sqlite3_reset(slot->stmt);
			sqlite3_clear_bindings(slot->stmt);
			return slot->stmt;
		}
		if (slot->sql)
			continue;
		rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &slot->stmt, NULL);
		if (rc != SQLITE_OK) {
			store_error(s, rc);
			slot->stmt = NULL;
			return NULL;
		}
		slot->sql = sql;
		return slot->stmt;
	}
	snprintf(s->errmsg, sizeof(s->errmsg), "statement cache full");
	return NULL;
}

int store_step(struct store *s, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return store_error(s, rc) ?: -EIO;
}

int store_exec_stmt(struct store *s, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	int r = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : store_error(s, rc);

	sqlite3_reset(st);
	return r;
}

int store_bind_text(sqlite3_stmt *st, int idx, const char *text)
{
	if (!text)
		return sqlite3_bind_null(st, idx);
	return sqlite3_bind_text(st, idx, text, -1, SQLITE_TRANSIENT);
}

int store_column_strdup(sqlite3_stmt *st, int col, char **ret)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	if (!t) {
		*ret = NULL;
		return 0;
	}
	*ret = strdup((const char *)t);
	return *ret ? 0 : -ENOMEM;
}

static int exec_sql(struct store *s, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		snprintf(s->errmsg, sizeof(s->errmsg), "%s", msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return store_error(s, rc) ?: -EIO;
	}
	return 0;
}

int store_latest_version(void)
{
	return store_migrations_count;
}

int store_version(struct store *s, int *ret_version)
{
	sqlite3_stmt *st = store_prepare(s, "PRAGMA user_version");
	int rc;

	if (!st)
		return -EIO;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		int r = store_error(s, rc);
		sqlite3_reset(st);
		return r ?: -EIO;
	}
	*ret_version = sqlite3_column_int(st, 0);
	sqlite3_reset(st);
	return 0;
}

static int migrate(struct store *s, char *err, size_t errlen)
{
	int version, r;

	r = store_begin_write(s);
	if (r < 0)
		return set_error(err, errlen, r, "%s: cannot lock the database for migration: %s",
				 s->path, s->errmsg);
	r = store_version(s, &version);
	if (r < 0)
		goto fail;
	if (version > store_migrations_count) {
		store_rollback(s);
		return set_error(err, errlen, -EPROTO,
				 "%s: database schema version %d is newer than this ccsync (which knows "
				 "versions up to %d); install the ccsync release that wrote it, or restore "
				 "a backup made before the upgrade",
				 s->path, version, store_migrations_count);
	}
	for (int i = version; i < store_migrations_count; i++) {
		const struct store_migration *m = &store_migrations[i];
		char pragma[64];

		r = exec_sql(s, m->sql);
		if (r < 0) {
			store_rollback(s);
			return set_error(err, errlen, r, "%s: migration %s failed: %s", s->path,
					 m->name, s->errmsg);
		}
		/* PRAGMA takes no parameters; the value is our own integer, not input. */
		snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", m->version);
		r = exec_sql(s, pragma);
		if (r < 0)
			goto fail;
	}
	r = store_commit(s);
	if (r < 0)
		goto fail;
	return 0;
fail:
	store_rollback(s);
	return set_error(err, errlen, r, "%s: migration failed: %s", s->path, s->errmsg);
}

static int create_private_file(const char *path, char *err, size_t errlen)
{
	/* Create with 0600 before SQLite sees the path: the database holds OAuth tokens and personal
	 * data, and SQLite gives its -wal/-shm files the mode of the main file. */
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

	if (fd < 0)
		return set_error(err, errlen, -errno, "%s: cannot create the database: %s", path,
				 strerror(errno));
	close(fd);
	return 0;
}

int store_open(const char *path, unsigned flags, int busy_timeout_ms, struct store **ret,
	       char *err, size_t errlen)
{
	struct store *s = NULL;
	struct stat st;
	int r, rc;

	if (stat(path, &st) < 0) {
		if (errno != ENOENT || !(flags & STORE_OPEN_CREATE))
			return set_error(err, errlen, -errno, "%s: %s", path, strerror(errno));
		r = create_private_file(path, err, errlen);
		if (r < 0)
			return r;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	s->path = strdup(path);
	if (!s->path) {
		r = set_error(err, errlen, -ENOMEM, "out of memory");
		goto fail;
	}
	rc = sqlite3_open_v2(path, &s->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW |
				     (flags & STORE_OPEN_ONE_THREAD ? SQLITE_OPEN_NOMUTEX : 0),
			     NULL);
	if (rc != SQLITE_OK) {
		r = store_error(s, rc);
		r = set_error(err, errlen, r ?: -EIO, "%s: cannot open the database: %s", path,
			      s->errmsg);
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, busy_timeout_ms > 0 ? busy_timeout_ms : 5000);
	r = exec_sql(s, "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; "
			"PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;");
	if (r < 0) {
		r = set_error(err, errlen, r, "%s: not a usable SQLite database: %s", path,
			      s->errmsg);
		goto fail;
	}
	if (!(flags & STORE_OPEN_NO_MIGRATE)) {
		r = migrate(s, err, errlen);
		if (r < 0)
			goto fail;
	}
	*ret = s;
	return 0;
fail:
	store_free(s);
	return r;
}

struct store *store_free(struct store *s)
{
	if (!s)
		return NULL;
	for (size_t i = 0; i < STMT_CACHE_SIZE; i++)
		sqlite3_finalize(s->cache[i].stmt);
	if (s->db)
		sqlite3_close(s->db);
	free(s->path);
	free(s);
	return NULL;
}

bool store_in_transaction(const struct store *s)
{
	return !sqlite3_get_autocommit(s->db);
}

int store_begin_read(struct store *s)
{
	sqlite3_stmt *st;
	int r;

	r = exec_sql(s, "BEGIN DEFERRED");
	if (r < 0)
		return r;
	/* A deferred transaction takes its snapshot at the first read; read now so the snapshot
	 * is the state at the start of the run, not at whatever query happens to come first. */
	st = store_prepare(s, "SELECT count(*) FROM sqlite_schema");
	if (!st || sqlite3_step(st) != SQLITE_ROW) {
		r = st ? store_error(s, sqlite3_errcode(s->db)) : -EIO;
		if (st)
			sqlite3_reset(st);
		(void)exec_sql(s, "ROLLBACK");
		return r ?: -EIO;
	}
	sqlite3_reset(st);
	return 0;
}

int store_end_read(struct store *s)
{
	return exec_sql(s, "COMMIT");
}

int store_begin_write(struct store *s)
{
	return exec_sql(s, "BEGIN IMMEDIATE");
}

int store_commit(struct store *s)
{
	return exec_sql(s, "COMMIT");
}

int store_rollback(struct store *s)
{
	if (sqlite3_get_autocommit(s->db))
		return 0;
	return exec_sql(s, "ROLLBACK");
}

int store_checkpoint(struct store *s)
{
	return exec_sql(s, "PRAGMA wal_checkpoint(TRUNCATE)");
}
