/* SPDX-License-Identifier: MIT */
/*
 * Store functions of the Constant Contact client: OAuth2 tokens (connection_tokens), the daily
 * request budget per API key (api_usage), a connection's client_id and flow, and its auth_state /
 * auth_error. Nothing else of a connection is written here; connection CRUD lives elsewhere.
 *
 * Every write is one statement or one short transaction of its own, committed on return: the
 * client relies on a rotated refresh token being durable before it uses the new access token.
 * Token strings are wiped from memory when released.
 */
#pragma once

#include <stdint.h>

#include "store.h"

enum store_auth_flow {
	STORE_AUTH_FLOW_DEVICE,
	STORE_AUTH_FLOW_PKCE,
	STORE_AUTH_FLOW_CODE,
};

enum store_auth_state {
	STORE_AUTH_UNAUTHORIZED,
	STORE_AUTH_AUTHORIZED,
	STORE_AUTH_NEEDS_REAUTH,
};

const char *store_auth_flow_to_string(enum store_auth_flow f);
const char *store_auth_state_to_string(enum store_auth_state s);

struct store_auth_connection {
	int64_t connection_id;
	char *name;
	char *client_id;
	enum store_auth_flow flow;
	enum store_auth_state state;
	char *auth_error;	/* NULL if none */
};

/* Reads a live (not removed) connection. 0, -ENOENT, or negative errno (store_errmsg). */
int store_auth_get_connection(struct store *s, int64_t connection_id,
			      struct store_auth_connection *ret);
void store_auth_connection_done(struct store_auth_connection *c);

struct store_auth_tokens {
	char *access_token;	 /* NULL if none */
	int64_t access_expires_at;
	char *refresh_token;	 /* NULL if none */
};

/* Reads the tokens of a connection. 0, -ENOENT (no row), or negative errno. */
int store_auth_get_tokens(struct store *s, int64_t connection_id, struct store_auth_tokens *ret);
/* Wipes and frees the strings; accepts a zeroed struct. */
void store_auth_tokens_done(struct store_auth_tokens *t);

/*
 * Saves new tokens for a live connection and marks it authorized (auth_error cleared), in one
 * transaction. refresh_token NULL keeps the stored one (CC sends none for long-lived tokens).
 * Must not be called inside another transaction (-EBUSY then). 0, -ENOENT (connection missing or
 * removed), or negative errno.
 */
int store_auth_save_tokens(struct store *s, int64_t connection_id, const char *access_token,
			   int64_t access_expires_at, const char *refresh_token);

/*
 * Sets auth_state (and auth_error, NULL to clear) of a live connection. For needs_reauth the
 * stored access token is cleared too, so nothing uses it again. 0, -ENOENT, or negative errno.
 */
int store_auth_set_state(struct store *s, int64_t connection_id, enum store_auth_state state,
			 const char *auth_error);

struct store_auth_usage {
	char day[11];		/* "YYYY-MM-DD", UTC */
	uint32_t requests;
	int64_t paused_until;	/* 0 = not paused */
};

/* Reads the budget row of an API key. 0, -ENOENT (none yet), or negative errno. */
int store_auth_get_usage(struct store *s, const char *client_id, struct store_auth_usage *ret);
/* Writes it (insert or replace). 0 or negative errno. */
int store_auth_save_usage(struct store *s, const char *client_id, const struct store_auth_usage *u);
