/* SPDX-License-Identifier: MIT */
/*
 * The Constant Contact client. One struct ccclient per daemon (the hub) owns the HTTP engine and,
 * per API key (client_id), one limiter shared by every connection using that key: a token bucket
 * at requests_per_second, a daily budget of daily_request_budget requests persisted in api_usage,
 * and a FIFO of requests waiting for a token (woken by a timer exactly when one is due). The token
 * endpoint has its own 1 request/second bucket per key.
 *
 * Per connection the hub keeps the OAuth2 tokens (read from connection_tokens), refreshes them
 * before expiry and once on a 401, one refresh at a time per connection, and commits a rotated
 * refresh token to the database before the new access token is used. A refresh token CC refuses
 * marks the connection needs_reauth (logged once, never retried); its requests then fail with
 * -EKEYREVOKED until the connection is authorized again.
 *
 * Retries: 429 throttled (and queue-full) back off and retry; 5xx and network errors retry with
 * jittered exponential backoff, at most max_retries times; 401 refreshes once and retries once;
 * 429 quota_exceeded pauses the key until 00:00 UTC; any other 4xx fails with CC's own message.
 *
 * Every request belongs to a connection and to an owner (any pointer, e.g. the run); all requests
 * of an owner or of a connection can be cancelled at once. Each accepted request completes exactly
 * once through its callback, with -ECANCELED if it was cancelled.
 *
 * Loop thread only. No token or secret ever appears in a log line or in a result message.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "ccapi.h"

struct ccclient;
struct config;
struct store;

/*
 * Internal timing knobs. Zero fields take the defaults (in brackets); the daemon passes NULL,
 * tests shrink them.
 */
struct ccclient_options {
	uint32_t retry_base_ms;		/* first backoff after a 5xx/network error [1000] */
	uint32_t retry_max_ms;		/* backoff cap [60000] */
	uint32_t throttle_base_ms;	/* first backoff after 429 throttled/queue full [1000] */
	uint32_t refresh_margin_s;	/* refresh when the token expires within this [300] */
	uint32_t pending_auth_ttl_s;	/* life of an authorize URL's verifier/state [600] */
};

enum ccclient_flags {
	/* When the key's daily budget is spent, wait until 00:00 UTC instead of failing with
	 * -EDQUOT. */
	CCCLIENT_WAIT_QUOTA = 1 << 0,
};

/* Who is asking: the connection whose tokens and key are used, and correlation for logs. */
struct ccclient_call {
	int64_t connection_id;
	const void *owner;	/* cancellation group (ccclient_cancel_owner); may be NULL */
	int64_t run_id;		/* log correlation only; 0 = none */
	int64_t export_id;	/* log correlation only; 0 = none */
	unsigned flags;		/* enum ccclient_flags */
};

/*
 * Outcome of a request, borrowed for the duration of the callback.
 *
 * error is 0 or a negative errno:
 *   -ECANCELED    cancelled (owner, connection forgotten, client closing);
 *   -EKEYREVOKED  the connection needs re-authorization (auth_state needs_reauth);
 *   -ENOKEY       the connection has never been authorized;
 *   -EDQUOT       the key's daily budget is spent (paused_until says until when);
 *   -EACCES       401 after a refresh, or 403 (missing scope/privilege, app deactivated);
 *   -ENOENT       404, or a list that exists with deleted_at;
 *   -EINVAL       other 4xx (CC's message in message);
 *   -EBUSY        still throttled (429) after max_retries;
 *   -EIO          still 5xx after max_retries;
 *   -ETIMEDOUT, -ECONNRESET, -ECONNREFUSED, -EHOSTUNREACH  network, after max_retries;
 *   -EPROTO       TLS failure (not retried: a wrong certificate does not fix itself);
 *   -EBADMSG      a 2xx body that is not what the API documents;
 *   -EFBIG        response larger than max_response_bytes;
 *   -ETIME        activity wait: not terminal within the timeout;
 *   -EREMOTEIO    activity wait: the activity ended failed, cancelled or timed_out;
 *   -EACCES/-ETIME/-EPERM from the authorization flows (denied, expired, state mismatch).
 */
struct ccclient_result {
	int error;
	long http_status;		/* last HTTP status seen, 0 if none */
	char error_key[96];		/* CC's error_key / OAuth error, "" if none */
	char message[1024];		/* what went wrong, for humans; "" on success */
	char curl_error[256];		/* transport detail, "" if none */
	unsigned attempts;		/* HTTP attempts made for this request */
	int64_t paused_until;		/* -EDQUOT: epoch seconds when the key resumes */
	const json_t *json;		/* parsed body of the last response, or NULL */

	/* Typed payload: only the member matching the call is set (may also be set on error). */
	const struct ccapi_activity *activity;		/* import, remove, activity get/wait */
	const struct ccapi_activity_page *activities;	/* activity list */
	const struct ccapi_list *list;			/* list get */
	const struct ccapi_list_page *lists;		/* lists (all pages) */
	const struct ccapi_contact_page *contacts;	/* contacts by list / by email */
	const struct ccapi_custom_field_page *custom_fields; /* custom fields (all pages) */
};

typedef void (*ccclient_done_fn)(const struct ccclient_result *res, void *userdata);

/*
 * Creates the hub. store and cfg are borrowed: store must outlive the hub; the cfg values are
 * copied. opts may be NULL. Returns 0 and *ret (transfer full; release with ccclient_close), or
 * negative errno with a message.
 */
int ccclient_new(uv_loop_t *loop, struct store *store, const struct config *cfg,
		 const struct ccclient_options *opts, struct ccclient **ret, char *err,
		 size_t errlen);

/*
 * Cancels every request (callbacks run with -ECANCELED before this returns), closes the HTTP
 * engine and the timers. Memory is freed after the last close callback, then on_closed (may be
 * NULL) runs; the loop must run for that. Accepts NULL.
 */
void ccclient_close(struct ccclient *c, void (*on_closed)(void *userdata), void *userdata);

/* Applies a reloaded configuration (rates, budget, timeouts, URLs, CA) to requests sent from now
 * on. 0 or negative errno with a message; on error nothing changes. */
int ccclient_reload(struct ccclient *c, const struct config *cfg, char *err, size_t errlen);

/*
 * Cancels every queued or in-flight request of owner. Their callbacks run with -ECANCELED before
 * this returns; requests submitted from inside those callbacks are not affected.
 */
void ccclient_cancel_owner(struct ccclient *c, const void *owner);

/*
 * Cancels every request of the connection (-ECANCELED, as above) and forgets its cached tokens,
 * pending authorization and device flow. Call it when a connection is removed or its client_id or
 * flow changes; the next request reloads the connection from the database.
 */
void ccclient_forget_connection(struct ccclient *c, int64_t connection_id);

/*
 * Endpoints. Each returns 0 when the request was accepted (cb runs exactly once, later, never from
 * inside this call), or a negative errno with a message in err when it was refused outright (cb is
 * not called): -EINVAL (bad argument), -ENOENT (no such live connection), -ENOKEY, -EKEYREVOKED,
 * -EDQUOT (key paused and no CCCLIENT_WAIT_QUOTA), -ESHUTDOWN (closing), -ENOMEM, -EIO (database).
 */

/* POST /activities/contacts_json_import with a body from ccapi_import_finish (transfer full: freed
 * by the client, also when this fails). Result: activity (state initialized). */
int ccclient_import(struct ccclient *c, const struct ccclient_call *call, char *body, size_t len,
		    ccclient_done_fn cb, void *userdata, char *err, size_t errlen);

/* POST /activities/remove_list_memberships: 1..500 contact ids from list_id. Result: activity. */
int ccclient_remove_from_list(struct ccclient *c, const struct ccclient_call *call,
			      const char *const *contact_ids, size_t n, const char *list_id,
			      ccclient_done_fn cb, void *userdata, char *err, size_t errlen);

/* POST /activities/remove_list_memberships with source {"list_ids":[source_list_id]}: removes every
 * member of source_list_id from list_id (source = list_id empties it). Result: activity. */
int ccclient_remove_list_members(struct ccclient *c, const struct ccclient_call *call,
				 const char *source_list_id, const char *list_id,
				 ccclient_done_fn cb, void *userdata, char *err, size_t errlen);

/* GET /activities/{id}. Result: activity. */
int ccclient_activity_get(struct ccclient *c, const struct ccclient_call *call,
			  const char *activity_id, ccclient_done_fn cb, void *userdata, char *err,
			  size_t errlen);

/* One page of GET /activities (newest first, 500 per page); next = a previous page's next, or
 * NULL for the first. Result: activities. */
int ccclient_activities(struct ccclient *c, const struct ccclient_call *call, const char *next,
			ccclient_done_fn cb, void *userdata, char *err, size_t errlen);

/*
 * Waits for an activity to reach a terminal state, polling with backoff from poll_initial_ms to
 * poll_max_ms. Waits of one connection that fall due together are served by one GET /activities
 * instead of one GET per activity. timeout_s = 0 means activity_timeout_s. Result: activity (the
 * last state seen); error 0 when completed, -EREMOTEIO when failed/cancelled/timed_out, -ETIME
 * when the timeout passed first, -ENOENT when CC no longer knows the activity.
 */
int ccclient_activity_wait(struct ccclient *c, const struct ccclient_call *call,
			   const char *activity_id, uint32_t timeout_s, ccclient_done_fn cb,
			   void *userdata, char *err, size_t errlen);

/* GET /contact_lists/{id}?include_membership_count=all. Result: list; a list with deleted_at
 * completes with -ENOENT ("... was deleted") and list set. */
int ccclient_list_get(struct ccclient *c, const struct ccclient_call *call, const char *list_id,
		      ccclient_done_fn cb, void *userdata, char *err, size_t errlen);

/* GET /contact_lists, every page, with membership counts. Result: lists. */
int ccclient_lists(struct ccclient *c, const struct ccclient_call *call, ccclient_done_fn cb,
		   void *userdata, char *err, size_t errlen);

/* POST /contact_lists (name 1..255 bytes, unique in the account). Result: list; -EEXIST when a
 * list of that name exists (HTTP 409). */
int ccclient_list_create(struct ccclient *c, const struct ccclient_call *call, const char *name,
			 const char *description, ccclient_done_fn cb, void *userdata, char *err,
			 size_t errlen);

/* GET /contact_lists?name=<exact name>, every page. Result: lists (0 or 1 entries in practice). */
int ccclient_list_find(struct ccclient *c, const struct ccclient_call *call, const char *name,
		       ccclient_done_fn cb, void *userdata, char *err, size_t errlen);

/* One page (500) of GET /contacts?lists=<list_id>&status=all; next as for ccclient_activities.
 * Result: contacts (contact_id + email, for mapping emails to ids before a removal). */
int ccclient_contacts_by_list(struct ccclient *c, const struct ccclient_call *call,
			      const char *list_id, const char *next, ccclient_done_fn cb,
			      void *userdata, char *err, size_t errlen);

/* GET /contacts?email=<email>&status=all. Result: contacts (0 or 1 entries). */
int ccclient_contact_by_email(struct ccclient *c, const struct ccclient_call *call,
			      const char *email, ccclient_done_fn cb, void *userdata, char *err,
			      size_t errlen);

/* GET /contact_custom_fields, every page. Result: custom_fields. */
int ccclient_custom_fields(struct ccclient *c, const struct ccclient_call *call,
			   ccclient_done_fn cb, void *userdata, char *err, size_t errlen);

/*
 * Authorization. These work on connections in any auth_state; success stores the tokens, sets
 * auth_state 'authorized' and clears auth_error.
 */

/* What to show the user during the device flow; borrowed for the callback. */
struct ccclient_device_code {
	const char *user_code;
	const char *verification_uri;
	const char *verification_uri_complete; /* may be NULL */
	int64_t expires_at;
};

typedef void (*ccclient_device_fn)(const struct ccclient_device_code *code, void *userdata);

/*
 * Device authorization flow (connections with auth_flow 'device'): requests a user code, calls
 * on_code once with it, then polls the token endpoint honouring interval and slow_down until the
 * user approves (on_done with 0), denies (-EACCES), the code expires (-ETIME), or it is cancelled.
 * One flow per connection at a time (-EBUSY otherwise).
 */
int ccclient_device_authorize(struct ccclient *c, const struct ccclient_call *call,
			      ccclient_device_fn on_code, ccclient_done_fn on_done, void *userdata,
			      char *err, size_t errlen);

/*
 * Authorization code flow (auth_flow 'pkce': S256 challenge, no secret; 'code': client secret,
 * no PKCE). Returns the URL the user opens in a browser (transfer full). The verifier and state
 * stay in memory only, for pending_auth_ttl_s; a new call replaces them.
 */
int ccclient_authorize_url(struct ccclient *c, int64_t connection_id, const char *redirect_uri,
			   char **ret_url, char *err, size_t errlen);

/*
 * Exchanges the redirect URL the user pasted (checked against the pending state) for tokens.
 * Refused with -ENOENT when no authorize URL is pending (or it expired), -EPERM on a state
 * mismatch, -EACCES when the URL carries an OAuth error such as access_denied.
 */
int ccclient_authorize_finish(struct ccclient *c, const struct ccclient_call *call,
			      const char *redirect_url, ccclient_done_fn cb, void *userdata,
			      char *err, size_t errlen);

/* Budget of one API key, for `ccsyncctl status`. */
struct ccclient_usage {
	uint32_t used_today;
	uint32_t budget;
	uint32_t left;
	int64_t paused_until;	/* epoch seconds; 0 = not paused */
	size_t queued;		/* requests waiting for a token */
	size_t in_flight;
};

/* Reads the key's usage (from memory, or from the database for a key not used since start). */
int ccclient_usage(struct ccclient *c, const char *client_id, struct ccclient_usage *ret);

/* Same, for the key of a connection. -ENOENT for an unknown connection. */
int ccclient_usage_for_connection(struct ccclient *c, int64_t connection_id,
				  struct ccclient_usage *ret);
