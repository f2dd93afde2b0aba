/* SPDX-License-Identifier: MIT */
/*
 * curl multi on libuv (see http.h). The skeleton is curl's docs/examples/multi-uv.c with its known
 * flaws fixed: all state hangs off struct http_engine (no globals); curl_multi_info_read is drained
 * after every curl_multi_socket_action, from sockets and from the timer alike; a poll error
 * (status < 0) is passed to curl as CURL_CSELECT_ERR instead of being read as "no events"; every
 * uv_* and curl_* result is checked and an allocation failure in the socket callback fails the
 * transfers (return -1) rather than aborting the daemon; and shutdown removes the easy handles and
 * cleans up the multi handle before the uv handles are closed, because curl_multi_cleanup may
 * still call the socket callback.
 *
 * Lifetimes: a struct http_socket is allocated in the socket callback when curl first asks to
 * watch a socket and freed in its poll's close callback after curl says CURL_POLL_REMOVE. The
 * engine itself is freed in the last close callback (timer and polls), counted in `handles`.
 * User callbacks never run inside a curl callback: only from the info-read drain, or from
 * http_engine_close.
 */
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "log.h"
#include "util.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_TIMEOUT_MS 120000
#define DEFAULT_MAX_RESPONSE (16u * 1024 * 1024)

struct http_socket {
	uv_poll_t poll;
	struct http_engine *e;
	curl_socket_t fd;
	struct http_socket *prev, *next;
	bool closing;
};

struct http_transfer {
	struct http_engine *e;
	struct http_transfer *prev, *next;
	CURL *easy;
	struct curl_slist *headers;
	http_done_fn cb;
	void *userdata;
	char *body;
	size_t body_len, body_cap, max_bytes;
	bool too_big, oom, completing;
	char errbuf[CURL_ERROR_SIZE];
};

struct http_engine {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	char *ca_file;
	char *user_agent;
	uint32_t connect_timeout_ms, timeout_ms;
	size_t max_response_bytes;
	struct http_transfer *transfers;
	struct http_socket *sockets;
	size_t n_active;
	uint64_t connects;
	unsigned handles; /* uv handles whose close callback has not run yet */
	bool closing;
	void (*on_closed)(void *userdata);
	void *on_closed_userdata;
};

static void drain(struct http_engine *e);

static void engine_maybe_free(struct http_engine *e)
{
	void (*on_closed)(void *);
	void *ud;

	if (!e->closing || e->handles > 0)
		return;
	on_closed = e->on_closed;
	ud = e->on_closed_userdata;
	free(e->ca_file);
	free(e->user_agent);
	free(e);
	curl_global_cleanup();
	if (on_closed)
		on_closed(ud);
}

static void on_poll_close(uv_handle_t *h)
{
	struct http_socket *s = container_of((uv_poll_t *)h, struct http_socket, poll);
	struct http_engine *e = s->e;

	free(s);
	e->handles--;
	engine_maybe_free(e);
}

static void on_timer_close(uv_handle_t *h)
{
	struct http_engine *e = container_of((uv_timer_t *)h, struct http_engine, timer);

	e->handles--;
	engine_maybe_free(e);
}

static void socket_close(struct http_socket *s)
{
	struct http_engine *e = s->e;

	if (s->closing)
		return;
	s->closing = true;
	if (s->prev)
		s->prev->next = s->next;
	else
		e->sockets = s->next;
	if (s->next)
		s->next->prev = s->prev;
	(void)uv_poll_stop(&s->poll); /* cannot fail for an initialised poll */
	uv_close((uv_handle_t *)&s->poll, on_poll_close);
}

static void socket_action(struct http_engine *e, curl_socket_t fd, int flags)
{
	int running = 0;
	CURLMcode mc;

	if (!e->multi)
		return;
	mc = curl_multi_socket_action(e->multi, fd, flags, &running);
	if (mc != CURLM_OK)
		log_error("curl_multi_socket_action failed: %s", curl_multi_strerror(mc));
	/* Whatever the return, finished transfers must be collected now: a message left in the
	 * queue would only be seen at the next action, which may never come. */
	drain(e);
}

static void on_uv_poll(uv_poll_t *p, int status, int events)
{
	struct http_socket *s = container_of(p, struct http_socket, poll);
	int flags = 0;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	else {
		if (events & UV_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events & UV_WRITABLE)
			flags |= CURL_CSELECT_OUT;
	}
	socket_action(s->e, s->fd, flags);
}

static void on_uv_timer(uv_timer_t *t)
{
	struct http_engine *e = container_of(t, struct http_engine, timer);

	socket_action(e, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION */
static int cb_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct http_engine *e = userp;
	struct http_socket *s = socketp;
	int events = 0, r;

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			if (e->multi && !e->closing)
				(void)curl_multi_assign(e->multi, fd, NULL);
			socket_close(s);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s) {
			log_error("out of memory watching an HTTP socket");
			return -1;
		}
		s->e = e;
		s->fd = fd;
		r = uv_poll_init_socket(e->loop, &s->poll, fd);
		if (r < 0) {
			log_error("cannot watch HTTP socket %d: %s", (int)fd, uv_strerror(r));
			free(s);
			return -1;
		}
		e->handles++;
		s->next = e->sockets;
		if (s->next)
			s->next->prev = s;
		e->sockets = s;
		if (curl_multi_assign(e->multi, fd, s) != CURLM_OK) {
			socket_close(s);
			return -1;
		}
	}
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		events |= UV_READABLE;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		events |= UV_WRITABLE;
	r = uv_poll_start(&s->poll, events, on_uv_poll);
	if (r < 0) {
		log_error("cannot poll HTTP socket %d: %s", (int)fd, uv_strerror(r));
		return -1;
	}
	return 0;
}

/* CURLMOPT_TIMERFUNCTION */
static int cb_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct http_engine *e = userp;
	int r;

	if (e->closing)
		return 0;
	if (timeout_ms < 0)
		return uv_timer_stop(&e->timer) < 0 ? -1 : 0;
	/* A 0 ms timer fires on the next loop iteration: never call socket_action from inside a
	 * curl callback. */
	r = uv_timer_start(&e->timer, on_uv_timer, (uint64_t)timeout_ms, 0);
	return r < 0 ? -1 : 0;
}

/* CURLOPT_WRITEFUNCTION */
static size_t cb_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct http_transfer *t = userdata;
	size_t n = size * nmemb;

	if (n > t->max_bytes - t->body_len) {
		t->too_big = true;
		return 0; /* CURLE_WRITE_ERROR: aborts the transfer */
	}
	if (t->body_len + n + 1 > t->body_cap) {
		size_t cap = t->body_cap ? t->body_cap : 4096;
		char *p;

		while (cap < t->body_len + n + 1)
			cap *= 2;
		p = realloc(t->body, cap);
		if (!p) {
			t->oom = true;
			return 0;
		}
		t->body = p;
		t->body_cap = cap;
	}
	memcpy(t->body + t->body_len, ptr, n);
	t->body_len += n;
	t->body[t->body_len] = '\0';
	return n;
}

static int error_from_curl(const struct http_transfer *t, CURLcode code)
{
	switch (code) {
	case CURLE_OK:
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_CIPHER:
		return -EPROTO;
	case CURLE_WRITE_ERROR:
		return t->too_big ? -EFBIG : t->oom ? -ENOMEM : -EIO;
	case CURLE_FILESIZE_EXCEEDED:
		return -EFBIG;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR: /* also what a reset during the handshake looks like */
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return -ECONNRESET;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -EINVAL;
	default:
		return -EIO;
	}
}

static void transfer_unlink(struct http_transfer *t)
{
	struct http_engine *e = t->e;

	if (t->prev)
		t->prev->next = t->next;
	else if (e->transfers == t)
		e->transfers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	e->n_active--;
}

static void transfer_free(struct http_transfer *t)
{
	if (t->easy) {
		if (t->e->multi)
			(void)curl_multi_remove_handle(t->e->multi, t->easy);
		curl_easy_cleanup(t->easy);
	}
	/* The header copies carry bearer tokens and Basic credentials. */
	for (struct curl_slist *l = t->headers; l; l = l->next)
		explicit_bzero(l->data, strlen(l->data));
	curl_slist_free_all(t->headers);
	free(t->body);
	free(t);
}

static void transfer_complete(struct http_transfer *t, CURLcode code, int error)
{
	struct http_result res = { 0 };
	long status = 0, connects = 0;
	double total = 0;
	char *ctype = NULL;

	t->completing = true;
	transfer_unlink(t);
	if (t->e->multi && t->easy)
		(void)curl_multi_remove_handle(t->e->multi, t->easy);
	if (t->easy) {
		(void)curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
		(void)curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ctype);
		(void)curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
		if (curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK &&
		    connects > 0)
			t->e->connects += (uint64_t)connects;
	}
	res.error = error ? error : error_from_curl(t, code);
	res.curl_code = code;
	res.status = status;
	if (!t->errbuf[0] && code != CURLE_OK)
		snprintf(t->errbuf, sizeof(t->errbuf), "%s", curl_easy_strerror(code));
	if (res.error == -EFBIG)
		snprintf(t->errbuf, sizeof(t->errbuf),
			 "response larger than the %zu-byte limit (max_response_bytes)",
			 t->max_bytes);
	res.curl_error = t->errbuf;
	res.body = t->body ? t->body : "";
	res.body_len = t->body_len;
	res.content_type = ctype;
	res.total_s = total;
	t->cb(&res, t->userdata);
	transfer_free(t);
}

static void drain(struct http_engine *e)
{
	CURLMsg *msg;
	int left;

	/* A callback may close the engine (multi becomes NULL): stop at once then. */
	while (e->multi && (msg = curl_multi_info_read(e->multi, &left))) {
		CURL *easy = msg->easy_handle;
		CURLcode code = msg->data.result;
		struct http_transfer *t = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		/* msg is invalid after the next multi call: everything needed was copied above. */
		if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t) != CURLE_OK || !t) {
			(void)curl_multi_remove_handle(e->multi, easy);
			curl_easy_cleanup(easy);
			continue;
		}
		transfer_complete(t, code, 0);
	}
}

static int set_options(struct http_engine *e, const struct http_options *o)
{
	char *ca = NULL, *ua = NULL;

	if (o->ca_file && *o->ca_file) {
		ca = strdup(o->ca_file);
		if (!ca)
			return -ENOMEM;
	}
	if (o->user_agent && *o->user_agent)
		ua = strdup(o->user_agent);
	else
		ua = strdup("ccsync/" CCSYNC_VERSION);
	if (!ua) {
		free(ca);
		return -ENOMEM;
	}
	free(e->ca_file);
	free(e->user_agent);
	e->ca_file = ca;
	e->user_agent = ua;
	e->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms
						      : DEFAULT_CONNECT_TIMEOUT_MS;
	e->timeout_ms = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
	e->max_response_bytes = o->max_response_bytes ? o->max_response_bytes
						      : DEFAULT_MAX_RESPONSE;
	return 0;
}

int http_engine_set_options(struct http_engine *e, const struct http_options *opts)
{
	return set_options(e, opts);
}

int http_engine_new(uv_loop_t *loop, const struct http_options *opts, struct http_engine **ret,
		    char *err, size_t errlen)
{
	static const struct http_options none = { 0 };
	struct http_engine *e;
	int r;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return set_error(err, errlen, -EIO, "cannot initialise libcurl");
	e = calloc(1, sizeof(*e));
	if (!e) {
		curl_global_cleanup();
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	e->loop = loop;
	r = set_options(e, opts ? opts : &none);
	if (r < 0)
		goto fail;
	r = uv_timer_init(loop, &e->timer);
	if (r < 0)
		goto fail;
	e->handles = 1;
	e->multi = curl_multi_init();
	if (!e->multi) {
		r = -ENOMEM;
		goto fail_close;
	}
	if (curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, cb_socket) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, cb_timer) != CURLM_OK ||
	    curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e) != CURLM_OK) {
		r = -EIO;
		goto fail_close;
	}
	*ret = e;
	return 0;
fail_close:
	/* The timer is initialised: the engine is freed in its close callback. */
	if (e->multi)
		curl_multi_cleanup(e->multi);
	e->multi = NULL;
	e->closing = true;
	uv_close((uv_handle_t *)&e->timer, on_timer_close);
	return set_error(err, errlen, r, "cannot set up the HTTP engine: %s", strerror(-r));
fail:
	free(e->ca_file);
	free(e->user_agent);
	free(e);
	curl_global_cleanup();
	return set_error(err, errlen, r, "cannot set up the HTTP engine: %s", strerror(-r));
}

void http_engine_close(struct http_engine *e, void (*on_closed)(void *userdata), void *userdata)
{
	if (!e || e->closing)
		return;
	e->closing = true;
	e->on_closed = on_closed;
	e->on_closed_userdata = userdata;
	/* Owners learn that their transfers will never finish. A callback may cancel others (they
	 * leave the list) but cannot start new ones (http_submit refuses while closing). */
	while (e->transfers)
		transfer_complete(e->transfers, CURLE_ABORTED_BY_CALLBACK, -ECANCELED);
	(void)uv_timer_stop(&e->timer);
	/* May call the socket callback for cached connections: keep the polls until after. */
	curl_multi_cleanup(e->multi);
	e->multi = NULL;
	while (e->sockets)
		socket_close(e->sockets);
	uv_close((uv_handle_t *)&e->timer, on_timer_close);
}

static bool valid_method(const char *m)
{
	return m && (streq(m, "GET") || streq(m, "POST") || streq(m, "DELETE") || streq(m, "PUT"));
}

int http_submit(struct http_engine *e, const struct http_request *req, http_done_fn cb,
		void *userdata, struct http_transfer **ret, char *err, size_t errlen)
{
	struct http_transfer *t;
	CURL *c;
	int r = -ENOMEM;

	if (e->closing)
		return set_error(err, errlen, -ESHUTDOWN, "the HTTP engine is shutting down");
	if (!req->url || strncasecmp(req->url, "https://", 8) != 0)
		return set_error(err, errlen, -EINVAL, "only https:// URLs are allowed");
	if (!valid_method(req->method))
		return set_error(err, errlen, -EINVAL, "unsupported HTTP method");
	t = calloc(1, sizeof(*t));
	if (!t)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	t->e = e;
	t->cb = cb;
	t->userdata = userdata;
	t->max_bytes = e->max_response_bytes;
	t->easy = c = curl_easy_init();
	if (!c)
		goto fail;
	for (const char *const *h = req->headers; h && *h; h++) {
		struct curl_slist *l = curl_slist_append(t->headers, *h);

		if (!l)
			goto fail;
		t->headers = l;
	}
	if (streq(req->method, "POST") || streq(req->method, "PUT")) {
		/* No "Expect: 100-continue" round trip before large bodies. */
		struct curl_slist *l = curl_slist_append(t->headers, "Expect:");

		if (!l)
			goto fail;
		t->headers = l;
	}
	r = -EINVAL;
#define SET(opt, val)                                                                              \
	do {                                                                                       \
		if (curl_easy_setopt(c, opt, val) != CURLE_OK)                                     \
			goto fail;                                                                 \
	} while (0)
	SET(CURLOPT_URL, req->url);
	SET(CURLOPT_PRIVATE, t);
	SET(CURLOPT_ERRORBUFFER, t->errbuf);
	SET(CURLOPT_NOSIGNAL, 1L);
	/* The threaded resolver would make curl_easy_cleanup wait for a hanging getaddrinfo, which
	 * stalls the whole loop (and a SIGTERM) while DNS is unreachable. */
	SET(CURLOPT_QUICK_EXIT, 1L);
	/* TLS cannot be turned off: https only, verified, TLS 1.2 or newer. */
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (e->ca_file)
		SET(CURLOPT_CAINFO, e->ca_file);
	SET(CURLOPT_CONNECTTIMEOUT_MS, (long)e->connect_timeout_ms);
	SET(CURLOPT_TIMEOUT_MS, (long)(req->timeout_ms ? req->timeout_ms : e->timeout_ms));
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)e->max_response_bytes);
	SET(CURLOPT_WRITEFUNCTION, cb_write);
	SET(CURLOPT_WRITEDATA, t);
	SET(CURLOPT_USERAGENT, e->user_agent);
	SET(CURLOPT_ACCEPT_ENCODING, ""); /* decoded bytes count against the cap */
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	if (t->headers)
		SET(CURLOPT_HTTPHEADER, t->headers);
	if (streq(req->method, "POST") || streq(req->method, "PUT")) {
		SET(CURLOPT_POST, 1L);
		SET(CURLOPT_POSTFIELDS, req->body ? req->body : "");
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
		if (streq(req->method, "PUT"))
			SET(CURLOPT_CUSTOMREQUEST, "PUT");
	} else if (streq(req->method, "DELETE")) {
		SET(CURLOPT_CUSTOMREQUEST, "DELETE");
	}
#undef SET
	if (curl_multi_add_handle(e->multi, c) != CURLM_OK) {
		r = -EIO;
		goto fail;
	}
	t->next = e->transfers;
	if (t->next)
		t->next->prev = t;
	e->transfers = t;
	e->n_active++;
	if (ret)
		*ret = t;
	return 0;
fail:
	transfer_free(t);
	return set_error(err, errlen, r, "cannot start the HTTP request: %s", strerror(-r));
}

void http_cancel(struct http_transfer *t)
{
	if (!t || t->completing)
		return;
	transfer_unlink(t);
	transfer_free(t);
}

size_t http_engine_active(const struct http_engine *e)
{
	return e->n_active;
}

uint64_t http_engine_connects(const struct http_engine *e)
{
	return e->connects;
}
