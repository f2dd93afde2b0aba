/* SPDX-License-Identifier: MIT */
/*
 * The HTTP engine: one curl multi handle driven by the daemon's libuv loop. curl tells us which
 * sockets to watch (one uv_poll_t each) and when to wake it (one uv_timer_t); we only ever call
 * curl_multi_socket_action and drain curl_multi_info_read after every call. Nothing blocks the
 * loop.
 *
 * Policy that callers cannot weaken: HTTPS only, peer and host verification always on (ca_file only
 * replaces the trust store, for tests), no redirects followed (an Authorization header must never
 * travel to another host), connect and total timeouts, a response-size cap, proxy environment
 * variables honoured, idle connections kept alive for reuse.
 *
 * Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_engine;
struct http_transfer;

struct http_options {
	uint32_t connect_timeout_ms;  /* 0 = 10 s */
	uint32_t timeout_ms;	      /* whole transfer; 0 = 120 s */
	size_t max_response_bytes;    /* 0 = 16 MiB */
	const char *ca_file;	      /* NULL or "" = system trust store; copied */
	const char *user_agent;	      /* NULL = "ccsync/<version>"; copied */
};

struct http_request {
	const char *method;	      /* "GET", "POST", "DELETE" */
	const char *url;	      /* https:// only; copied */
	/* NULL-terminated "Name: value" lines, or NULL; copied, and the copies wiped when the
	 * transfer ends (they carry tokens) */
	const char *const *headers;
	const char *body;	      /* borrowed: must stay valid until the callback has run */
	size_t body_len;
	uint32_t timeout_ms;	      /* 0 = the engine's */
};

struct http_result {
	/* 0 when an HTTP response arrived (any status). Otherwise negative errno:
	 * -ETIMEDOUT (connect or total timeout), -ECONNREFUSED, -ECONNRESET (connection dropped or
	 * empty reply), -EHOSTUNREACH (name or route), -EPROTO (certificate verification failed),
	 * -EFBIG (response larger than max_response_bytes), -ECANCELED (engine closing), -ENOMEM,
	 * -EIO (anything else). */
	int error;
	long status;		/* HTTP status, 0 when none */
	int curl_code;		/* CURLcode */
	const char *curl_error;	/* curl's error text ("" if none); borrowed for the callback */
	const char *body;	/* NUL-terminated (body_len excludes it); borrowed */
	size_t body_len;
	const char *content_type; /* borrowed, may be NULL */
	double total_s;		/* transfer time */
};

/*
 * Completion: called exactly once per transfer that http_submit accepted, from the loop (never
 * from inside http_submit), unless the transfer was cancelled with http_cancel. The transfer is
 * gone when this returns.
 */
typedef void (*http_done_fn)(const struct http_result *res, void *userdata);

/*
 * Creates an engine on loop. Returns 0 and *ret (transfer full; release with http_engine_close),
 * or negative errno with a message in err.
 */
int http_engine_new(uv_loop_t *loop, const struct http_options *opts, struct http_engine **ret,
		    char *err, size_t errlen);

/*
 * Shuts down: every transfer still running completes with -ECANCELED (callbacks run before this
 * returns), easy handles are removed and cleaned up, the multi handle is cleaned up, then the timer
 * and socket polls are closed. The engine's memory is freed in the last close callback, so the loop
 * must run once more; on_closed (may be NULL) is called then. Accepts NULL.
 */
void http_engine_close(struct http_engine *e, void (*on_closed)(void *userdata), void *userdata);

/* Replaces the options for transfers started from now on (configuration reload). 0 or -ENOMEM. */
int http_engine_set_options(struct http_engine *e, const struct http_options *opts);

/*
 * Starts a transfer. Returns 0 (the callback will run later; *ret, if not NULL, is a borrowed
 * handle valid until the callback or http_cancel), or negative errno (-EINVAL: not an https URL or
 * unknown method; -ESHUTDOWN: engine closing; -ENOMEM) with a message in err, callback not called.
 */
int http_submit(struct http_engine *e, const struct http_request *req, http_done_fn cb,
		void *userdata, struct http_transfer **ret, char *err, size_t errlen);

/* Stops a transfer at once; its callback is not called. */
void http_cancel(struct http_transfer *t);

/* Transfers started and not yet completed (for tests and status). */
size_t http_engine_active(const struct http_engine *e);

/* Counters for tests and benchmarks: connections curl opened (a proxy for keep-alive reuse). */
uint64_t http_engine_connects(const struct http_engine *e);
