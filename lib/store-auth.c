/* SPDX-License-Identifier: MIT */
/*
 * SQL of the Constant Contact client: tokens, per-key request budget, and the auth columns of a
 * connection (see store-auth.h). Writes touch only connection_tokens, api_usage and the
 * auth_state / auth_error / updated_at columns of connections.
 *
 * Removed connections (removed_at set) are invisible here: a refresh that completes after the
 * connection was removed must not resurrect its tokens, so every token write is conditional on the
 * connection being live, inside the same transaction.
 */
#include "store-auth.h"

#include <errno.h>
#include <string.h>

#include "store-internal.h"
#include "util.h"

static const char *const flow_names[] = {
	[STORE_AUTH_FLOW_DEVICE] = "device",
	[STORE_AUTH_FLOW_PKCE] = "pkce",
	[STORE_AUTH_FLOW_CODE] = "code",
};

static const char *const state_names[] = {
	[STORE_AUTH_UNAUTHORIZED] = "unauthorized",
	[STORE_AUTH_AUTHORIZED] = "authorized",
	[STORE_AUTH_NEEDS_REAUTH] = "needs_reauth",
};

const char *store_auth_flow_to_string(enum store_auth_flow f)
{
	return (unsigned)f < ELEMENTSOF(flow_names) ? flow_names[f] : NULL;
}

const char *store_auth_state_to_string(enum store_auth_state s)
{
	return (unsigned)s < ELEMENTSOF(state_names) ? state_names[s] : NULL;
}

static int lookup(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++)
		if (streq(names[i], s))
			return (int)i;
	return -EINVAL;
}

static void wipe_free(char *p)
{
	if (!p)
		return;
	explicit_bzero(p, strlen(p));
	free(p);
}

void store_auth_connection_done(struct store_auth_connection *c)
{
	free(c->name);
	free(c->client_id);
	free(c->auth_error);
	memset(c, 0, sizeof(*c));
}

int store_auth_get_connection(struct store *s, int64_t connection_id,
			      struct store_auth_connection *ret)
{
	static const char SQL[] =
		"SELECT name, client_id, auth_flow, auth_state, auth_error FROM connections "
		"WHERE connection_id = ?1 AND removed_at IS NULL";
	struct store_auth_connection c = { .connection_id = connection_id };
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r, flow, state;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, connection_id);
	r = store_step(s, st);
	if (r <= 0) {
		r = r ?: -ENOENT;
		goto out;
	}
	flow = lookup(flow_names, ELEMENTSOF(flow_names), (const char *)sqlite3_column_text(st, 2));
	state = lookup(state_names, ELEMENTSOF(state_names),
		       (const char *)sqlite3_column_text(st, 3));
	if (flow < 0 || state < 0) {
		r = -EIO; /* the schema's CHECK constraints make this unreachable */
		goto out;
	}
	c.flow = (enum store_auth_flow)flow;
	c.state = (enum store_auth_state)state;
	r = store_column_strdup(st, 0, &c.name);
	if (r >= 0)
		r = store_column_strdup(st, 1, &c.client_id);
	if (r >= 0)
		r = store_column_strdup(st, 4, &c.auth_error);
	if (r >= 0 && (!c.name || !c.client_id))
		r = -EIO;
	if (r >= 0) {
		*ret = c;
		memset(&c, 0, sizeof(c));
	}
out:
	store_auth_connection_done(&c);
	sqlite3_reset(st);
	return r;
}

void store_auth_tokens_done(struct store_auth_tokens *t)
{
	wipe_free(t->access_token);
	wipe_free(t->refresh_token);
	memset(t, 0, sizeof(*t));
}

int store_auth_get_tokens(struct store *s, int64_t connection_id, struct store_auth_tokens *ret)
{
	static const char SQL[] =
		"SELECT access_token, access_expires_at, refresh_token FROM connection_tokens "
		"WHERE connection_id = ?1";
	struct store_auth_tokens t = { 0 };
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, connection_id);
	r = store_step(s, st);
	if (r <= 0) {
		r = r ?: -ENOENT;
		goto out;
	}
	t.access_expires_at = sqlite3_column_int64(st, 1);
	r = store_column_strdup(st, 0, &t.access_token);
	if (r >= 0)
		r = store_column_strdup(st, 2, &t.refresh_token);
	if (r >= 0) {
		*ret = t;
		memset(&t, 0, sizeof(t));
	}
out:
	store_auth_tokens_done(&t);
	/* Reset drops SQLite's copy of the row from the statement's buffers. */
	sqlite3_reset(st);
	return r;
}

static int connection_live(struct store *s, int64_t connection_id)
{
	static const char SQL[] =
		"SELECT 1 FROM connections WHERE connection_id = ?1 AND removed_at IS NULL";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, connection_id);
	r = store_step(s, st);
	r = r > 0 ? 0 : r ?: -ENOENT;
	sqlite3_reset(st);
	return r;
}

static int set_state(struct store *s, int64_t connection_id, enum store_auth_state state,
		     const char *auth_error)
{
	static const char SQL[] =
		"UPDATE connections SET auth_state = ?2, auth_error = ?3, updated_at = unixepoch() "
		"WHERE connection_id = ?1 AND removed_at IS NULL";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, connection_id);
	r = store_bind_text(st, 2, state_names[state]);
	if (r == SQLITE_OK)
		r = store_bind_text(st, 3, auth_error);
	if (r != SQLITE_OK)
		return store_error(s, r) ?: -EIO;
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	return sqlite3_changes(store_db(s)) > 0 ? 0 : -ENOENT;
}

int store_auth_save_tokens(struct store *s, int64_t connection_id, const char *access_token,
			   int64_t access_expires_at, const char *refresh_token)
{
	/* COALESCE keeps the stored refresh token when CC did not send a new one. */
	static const char SQL[] =
		"INSERT INTO connection_tokens (connection_id, access_token, access_expires_at, "
		"refresh_token, updated_at) VALUES (?1, ?2, ?3, ?4, unixepoch()) "
		"ON CONFLICT (connection_id) DO UPDATE SET access_token = excluded.access_token, "
		"access_expires_at = excluded.access_expires_at, "
		"refresh_token = COALESCE(excluded.refresh_token, refresh_token), "
		"updated_at = excluded.updated_at";
	sqlite3_stmt *st;
	int r;

	if (!access_token || !*access_token)
		return -EINVAL;
	if (store_in_transaction(s))
		return -EBUSY;
	r = store_begin_write(s);
	if (r < 0)
		return r;
	r = connection_live(s, connection_id);
	if (r < 0)
		goto fail;
	st = store_prepare(s, SQL);
	if (!st) {
		r = -EIO;
		goto fail;
	}
	sqlite3_bind_int64(st, 1, connection_id);
	sqlite3_bind_int64(st, 3, access_expires_at);
	r = store_bind_text(st, 2, access_token);
	if (r == SQLITE_OK)
		r = store_bind_text(st, 4, refresh_token);
	if (r != SQLITE_OK) {
		r = store_error(s, r) ?: -EIO;
		goto fail;
	}
	r = store_exec_stmt(s, st);
	sqlite3_clear_bindings(st); /* do not keep the token in the statement's bindings */
	if (r < 0)
		goto fail;
	r = set_state(s, connection_id, STORE_AUTH_AUTHORIZED, NULL);
	if (r < 0)
		goto fail;
	return store_commit(s);
fail:
	(void)store_rollback(s); /* the error being returned is the one that matters */
	return r;
}

int store_auth_set_state(struct store *s, int64_t connection_id, enum store_auth_state state,
			 const char *auth_error)
{
	static const char SQL_CLEAR[] =
		"UPDATE connection_tokens SET access_token = NULL, access_expires_at = NULL, "
		"updated_at = unixepoch() WHERE connection_id = ?1";
	bool own_tx = !store_in_transaction(s);
	sqlite3_stmt *st;
	int r;

	if ((unsigned)state >= ELEMENTSOF(state_names))
		return -EINVAL;
	if (own_tx) {
		r = store_begin_write(s);
		if (r < 0)
			return r;
	}
	r = set_state(s, connection_id, state, auth_error);
	if (r < 0)
		goto fail;
	if (state == STORE_AUTH_NEEDS_REAUTH) {
		st = store_prepare(s, SQL_CLEAR);
		if (!st) {
			r = -EIO;
			goto fail;
		}
		sqlite3_bind_int64(st, 1, connection_id);
		r = store_exec_stmt(s, st);
		if (r < 0)
			goto fail;
	}
	return own_tx ? store_commit(s) : 0;
fail:
	if (own_tx)
		(void)store_rollback(s);
	return r;
}

int store_auth_get_usage(struct store *s, const char *client_id, struct store_auth_usage *ret)
{
	static const char SQL[] =
		"SELECT day, requests, paused_until FROM api_usage WHERE client_id = ?1";
	struct store_auth_usage u = { 0 };
	sqlite3_stmt *st = store_prepare(s, SQL);
	const unsigned char *day;
	int64_t requests;
	int r;

	if (!st)
		return -EIO;
	r = store_bind_text(st, 1, client_id);
	if (r != SQLITE_OK) {
		r = store_error(s, r) ?: -EIO;
		goto out;
	}
	r = store_step(s, st);
	if (r <= 0) {
		r = r ?: -ENOENT;
		goto out;
	}
	day = sqlite3_column_text(st, 0);
	requests = sqlite3_column_int64(st, 1);
	snprintf(u.day, sizeof(u.day), "%s", day ? (const char *)day : "");
	u.requests = requests < 0 ? 0 : requests > UINT32_MAX ? UINT32_MAX : (uint32_t)requests;
	u.paused_until = sqlite3_column_int64(st, 2);
	*ret = u;
	r = 0;
out:
	sqlite3_reset(st);
	return r;
}

int store_auth_save_usage(struct store *s, const char *client_id, const struct store_auth_usage *u)
{
	static const char SQL[] =
		"INSERT INTO api_usage (client_id, day, requests, paused_until) "
		"VALUES (?1, ?2, ?3, ?4) "
		"ON CONFLICT (client_id) DO UPDATE SET day = excluded.day, "
		"requests = excluded.requests, paused_until = excluded.paused_until";
	sqlite3_stmt *st = store_prepare(s, SQL);
	int r;

	if (!st)
		return -EIO;
	r = store_bind_text(st, 1, client_id);
	if (r == SQLITE_OK)
		r = store_bind_text(st, 2, u->day);
	if (r == SQLITE_OK)
		r = sqlite3_bind_int64(st, 3, u->requests);
	if (r == SQLITE_OK)
		r = u->paused_until ? sqlite3_bind_int64(st, 4, u->paused_until)
				    : sqlite3_bind_null(st, 4);
	if (r != SQLITE_OK)
		return store_error(s, r) ?: -EIO;
	return store_exec_stmt(s, st);
}
