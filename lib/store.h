/* SPDX-License-Identifier: MIT */
/*
 * The store: ccsync's one SQLite database. Every SQL statement of the project lives in lib/store*.c
 * (this core plus one file per domain: store-catalog.c, store-runs.c, ...), prepared once and
 * cached, bound with parameters, never assembled from strings.
 *
 * Opening applies the embedded migrations (schema/NNNN-*.sql) forward-only in one transaction and
 * refuses a database written by a newer ccsync. The database runs in WAL mode so the upstream
 * writer and the daemon never block each other's reads; writes use BEGIN IMMEDIATE and a busy
 * timeout. Token rows are deleted with secure_delete on, so removed secrets do not linger in free
 * pages.
 *
 * A struct store is used from one thread at a time (the loop thread in ccsyncd).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;

enum store_open_flags {
	STORE_OPEN_CREATE = 1 << 0,   /* create the file (mode 0600) if missing */
	STORE_OPEN_NO_MIGRATE = 1 << 1, /* open as is; used by tests that inspect old versions */
	/* The connection is used by one thread at a time (a plan's): SQLite skips its
	 * per-connection mutex, which a row-by-row scan otherwise takes for every column read. */
	STORE_OPEN_ONE_THREAD = 1 << 2,
};

/*
 * Opens (and migrates) the database at path. Returns 0 and a new store in *ret (transfer full),
 * or a negative errno with a message in err: -ENOENT (missing and not creating), -EPROTO (newer
 * schema than this binary), -EACCES, -EIO (corrupt or unreadable), -EBUSY (locked past timeout).
 */
int store_open(const char *path, unsigned flags, int busy_timeout_ms, struct store **ret,
	       char *err, size_t errlen);
struct store *store_free(struct store *s); /* accepts NULL, returns NULL */

int store_latest_version(void);
int store_version(struct store *s, int *ret_version);
const char *store_path(const struct store *s);

/* Last SQLite error text of this store (valid until the next store call). */
const char *store_errmsg(const struct store *s);

/*
 * Transactions. store_begin_read starts a read transaction and pins its snapshot at once, so
 * everything read until store_end_read sees one consistent state of the database even while the
 * upstream writer commits. store_begin_write takes the write lock up front (BEGIN IMMEDIATE).
 */
int store_begin_read(struct store *s);
int store_end_read(struct store *s);
int store_begin_write(struct store *s);
int store_commit(struct store *s);
int store_rollback(struct store *s); /* safe to call when no transaction is open */
bool store_in_transaction(const struct store *s);

/* Runs PRAGMA wal_checkpoint(TRUNCATE): after deleting secrets, so no copy stays in the WAL. */
int store_checkpoint(struct store *s);
