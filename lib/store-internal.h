/* SPDX-License-Identifier: MIT */
/* Shared by the store's domain files only; nothing outside lib/store*.c includes this. */
#pragma once

#include <sqlite3.h>

#include "store.h"

/*
 * Returns the prepared statement for sql, preparing it on first use and caching it by the address
 * of the string: pass string literals or static const arrays only. The statement is reset and its
 * bindings cleared, ready to bind. NULL on failure (message in store_errmsg).
 */
sqlite3_stmt *store_prepare(struct store *s, const char *sql);

/* Maps a SQLite result code to a negative errno and records sqlite3_errmsg for store_errmsg. */
int store_error(struct store *s, int rc);

/* Steps once: 1 on a row, 0 when done, negative errno on failure; the caller resets. */
int store_step(struct store *s, sqlite3_stmt *st);

/* Steps a statement that returns no rows, resets it; 0 or negative errno. */
int store_exec_stmt(struct store *s, sqlite3_stmt *st);

/* Binds text, or NULL when text is NULL. */
int store_bind_text(sqlite3_stmt *st, int idx, const char *text);

/* Copies column text (NULL stays NULL). Returns -ENOMEM only on allocation failure. */
int store_column_strdup(sqlite3_stmt *st, int col, char **ret);

sqlite3 *store_db(struct store *s);

/* Current time, overridable in tests through CCSYNC_FAKE_NOW (seconds since the epoch). */
int64_t store_now(void);
