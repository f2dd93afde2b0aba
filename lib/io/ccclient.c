/* SPDX-License-Identifier: MIT */
/*
 * The Constant Contact client hub (see ccclient.h).
 *
 * Every user call becomes one struct req that lives until its callback has run. A request moves
 * between a few places, and is in exactly one of them at a time (r->state):
 *   QUEUED    in its key's FIFO (api or token endpoint), waiting for a bucket token;
 *   WAIT_TOKEN in its connection's list of requests waiting for a token refresh;
 *   TIMER     sleeping on the hub's timer heap (retry backoff, device-flow poll interval);
 *   INFLIGHT  an HTTP transfer is running;
 *   WAITER    an activity wait, idle between polls (timer armed) or part of a running poll.
 * detach() takes a request out of wherever it is, which is what makes cancellation exact: a
 * cancelled request is detached first and completed once, and nothing can complete it again.
 *
 * Time: bucket and backoff use the loop's monotonic milliseconds (uv_now); the daily budget uses
 * wall-clock UTC seconds because CC resets it at 00:00 UTC. All timers share one uv_timer_t
 * driven by a min-heap, so the hub has exactly two uv handles (that timer and the HTTP engine's),
 * and keys, connections and requests can be freed synchronously.
 *
 * Re-entrancy: user callbacks may submit, cancel or close. Code that completes several requests
 * first detaches them all onto a private list, then calls back one by one, and loops that call
 * back re-read their queue heads each time and stop when the hub is closing.
 *
 * Secrets (access, refresh and device tokens, code verifier, client secret) live only in
 * connection state, in request bodies and in header strings that are wiped when freed; messages
 * and logs are built from CC's error text and our own words only.
 */
#include "ccclient.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "ratelimit.h"
#include "store-auth.h"
#include "store-internal.h"
#include "utf8.h"
#include "util.h"

#define SECRET_FILE_MAX 4096

/* ------------------------------------------------------------------ intrusive lists */

struct link {
	struct link *prev, *next;
};

static void list_init(struct link *h)
{
	h->prev = h->next = h;
}

static bool list_empty(const struct link *h)
{
	return h->next == h;
}

static void list_del(struct link *l)
{
	if (!l->next)
		return;
	l->prev->next = l->next;
	l->next->prev = l->prev;
	l->prev = l->next = NULL;
}

static void list_add_tail(struct link *h, struct link *l)
{
	l->prev = h->prev;
	l->next = h;
	h->prev->next = l;
	h->prev = l;
}

static void list_add_head(struct link *h, struct link *l)
{
	l->next = h->next;
	l->prev = h;
	h->next->prev = l;
	h->next = l;
}

/* ------------------------------------------------------------------ types */

struct tnode {
	uint64_t due;
	size_t idx; /* position in the heap; SIZE_MAX when not armed */
	void (*fire)(struct tnode *n);
};

enum op {
	OP_IMPORT,
	OP_REMOVE,
	OP_ACTIVITY_GET,
	OP_ACTIVITIES,
	OP_LIST_GET,
	OP_LIST_CREATE,
	OP_LISTS,
	OP_CONTACTS,
	OP_CUSTOM_FIELDS,
	OP_POLL_ONE,  /* internal: GET /activities/{id} for one waiter */
	OP_POLL_MANY, /* internal: GET /activities for several waiters */
	OP_WAIT,      /* activity wait: no HTTP of its own */
	OP_REFRESH,   /* internal: refresh_token grant */
	OP_DEVICE,    /* device authorization, then polling the token endpoint */
	OP_CODE,      /* authorization_code grant */
};

/* R_DYING: detached and on a private list, about to be completed by whoever detached it; nothing
 * else (cancel, close) may touch it. */
enum rstate { R_NEW, R_QUEUED, R_WAIT_TOKEN, R_TIMER, R_INFLIGHT, R_WAITER, R_DYING, R_DONE };

struct key {
	struct ccclient *c;
	struct key *next;
	char *client_id;
	struct ratelimit_bucket bucket;	      /* API requests */
	struct ratelimit_bucket token_bucket; /* token endpoint: 1/s */
	struct ratelimit_budget budget;
	struct link api_q, token_q;
	struct tnode api_tn, token_tn;
	int64_t quota_logged_until;
	size_t in_flight;
};

struct conn {
	struct ccclient *c;
	struct conn *next;
	int64_t id;
	char *name;
	char *client_id;
	enum store_auth_flow flow;
	enum store_auth_state state;
	struct key *key;
	char *access_token;
	int64_t access_expires_at;
	int64_t access_obtained_at; /* 0 when loaded from the database */
	uint64_t token_gen;	    /* bumped whenever access_token changes */
	struct req *refresh;	    /* the single refresh in flight */
	struct req *device;	    /* the device flow in progress */
	struct link waiting;	    /* requests waiting for a token */
	struct link waiters;	    /* activity waits */
	/* pending authorization-code flow: in memory only */
	char *pending_verifier;
	char *pending_state;
	char *pending_redirect;
	int64_t pending_expires_at;
};

struct req {
	struct ccclient *c;
	struct conn *conn;
	struct link all; /* c->reqs */
	struct link q;	 /* the queue of r->state */
	enum op op;
	enum rstate state;
	const void *owner;
	int64_t run_id, export_id;
	unsigned flags;
	bool internal;
	bool token_endpoint;
	bool basic_auth;
	ccclient_done_fn cb;
	ccclient_device_fn on_code;
	void *userdata;
	uint64_t seq;

	const char *method;
	char *url;
	char *body;
	size_t body_len;

	struct http_transfer *xfer;
	struct tnode tn;
	unsigned attempts, net_retries, throttle_retries;
	bool refreshed;
	uint64_t gen_used;

	long http_status;
	char error_key[96];
	char message[1024];
	char curl_error[256];
	int64_t paused_until;
	json_t *json;

	struct ccapi_activity activity;
	struct ccapi_activity_page activities;
	struct ccapi_list list;
	struct ccapi_list_page lists;
	struct ccapi_contact_page contacts;
	struct ccapi_custom_field_page fields;

	/* OP_WAIT */
	char activity_id[CCAPI_ID_LEN + 1];
	uint64_t deadline_ms, delay_ms, poll_seq;
	bool by_id, polling, gather;

	/* OP_DEVICE */
	struct ccapi_device_auth device;
	bool device_polling;
};

struct ccclient {
	uv_loop_t *loop;
	struct store *store;
	struct config cfg;
	struct ccclient_options opt;
	struct http_engine *http;
	uv_timer_t timer;
	struct tnode **heap;
	size_t heap_n, heap_cap;
	struct link reqs;
	struct key *keys;
	struct conn *conns;
	char api_origin[512];
	uint64_t seq;
	uint64_t rng;
	bool closing;
	unsigned pending_close;
	void (*on_closed)(void *userdata);
	void *on_closed_userdata;
};

static void req_complete(struct req *r, int error);
static void victim_add(struct link *victims, struct req *r);
static void complete_victims(struct link *victims, int error);
static void key_pump(struct key *k);
static void key_pump_tokens(struct key *k);
static void conn_refresh(struct conn *cn);
static void waiter_poll(struct conn *cn);
static void req_send(struct req *r);

/* ------------------------------------------------------------------ helpers */

static void wipe_free(char *p)
{
	if (!p)
		return;
	explicit_bzero(p, strlen(p));
	free(p);
}

_printf_(3, 4) static void set_msg(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static uint64_t rng_next(struct ccclient *c)
{
	/* xorshift64*: jitter only, no security role */
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * 0x2545f4914f6cdd1dull;
}

/* Jittered exponential backoff: attempt n (1-based) waits a uniform time in [d/2, d], where
 * d = base * 2^(n-1) capped at max. Jitter spreads the retries of many requests that failed
 * together instead of sending them back in one burst. */
static uint64_t backoff_ms(struct ccclient *c, uint32_t base, unsigned n)
{
	uint64_t d = base;

	for (unsigned i = 1; i < n && d < c->opt.retry_max_ms; i++)
		d *= 2;
	if (d > c->opt.retry_max_ms)
		d = c->opt.retry_max_ms;
	if (d < 2)
		return d ? d : 1;
	return d / 2 + rng_next(c) % (d / 2 + 1);
}

static void fields_for(const struct req *r, struct log_fields *f, const char *message_id)
{
	*f = (struct log_fields){
		.export_id = r->export_id,
		.run_id = r->run_id,
		.connection_id = r->conn ? r->conn->id : 0,
		.message_id = message_id,
	};
}

static void fmt_time(int64_t t, char buf[static 32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, 32, "%" PRId64, t);
}

/* ------------------------------------------------------------------ timer heap */

static bool tnode_armed(const struct tnode *n)
{
	return n->idx != SIZE_MAX;
}

static void heap_set(struct ccclient *c, size_t i, struct tnode *n)
{
	c->heap[i] = n;
	n->idx = i;
}

static void heap_up(struct ccclient *c, size_t i)
{
	struct tnode *n = c->heap[i];

	while (i > 0) {
		size_t p = (i - 1) / 2;

		if (c->heap[p]->due <= n->due)
			break;
		heap_set(c, i, c->heap[p]);
		i = p;
	}
	heap_set(c, i, n);
}

static void heap_down(struct ccclient *c, size_t i)
{
	struct tnode *n = c->heap[i];

	for (;;) {
		size_t l = 2 * i + 1, m = i;
		struct tnode *best = n;

		if (l < c->heap_n && c->heap[l]->due < best->due)
			best = c->heap[l], m = l;
		if (l + 1 < c->heap_n && c->heap[l + 1]->due < best->due)
			best = c->heap[l + 1], m = l + 1;
		if (m == i)
			break;
		heap_set(c, i, best);
		i = m;
	}
	heap_set(c, i, n);
}

static void hub_timer_update(struct ccclient *c);

static void timer_disarm(struct ccclient *c, struct tnode *n)
{
	size_t i = n->idx;
	struct tnode *last;

	if (!tnode_armed(n))
		return;
	n->idx = SIZE_MAX;
	last = c->heap[--c->heap_n];
	if (i < c->heap_n) {
		heap_set(c, i, last);
		heap_up(c, i);
		heap_down(c, last->idx);
	}
	hub_timer_update(c);
}

/* Returns 0 or -ENOMEM. */
static int timer_arm(struct ccclient *c, struct tnode *n, uint64_t due)
{
	if (tnode_armed(n))
		timer_disarm(c, n);
	if (c->heap_n == c->heap_cap) {
		size_t cap = c->heap_cap ? c->heap_cap * 2 : 64;
		struct tnode **h = realloc(c->heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		c->heap = h;
		c->heap_cap = cap;
	}
	n->due = due;
	heap_set(c, c->heap_n++, n);
	heap_up(c, n->idx);
	hub_timer_update(c);
	return 0;
}

static void on_hub_timer(uv_timer_t *t)
{
	struct ccclient *c = container_of(t, struct ccclient, timer);
	uint64_t now = uv_now(c->loop);

	while (!c->closing && c->heap_n && c->heap[0]->due <= now) {
		struct tnode *n = c->heap[0];

		timer_disarm(c, n);
		n->fire(n);
	}
	hub_timer_update(c);
}

static void hub_timer_update(struct ccclient *c)
{
	uint64_t now, due;

	if (c->closing || !c->heap_n) {
		(void)uv_timer_stop(&c->timer);
		return;
	}
	now = uv_now(c->loop);
	due = c->heap[0]->due;
	/* uv_timer_start cannot fail on an initialised timer with a callback. */
	(void)uv_timer_start(&c->timer, on_hub_timer, due > now ? due - now : 0, 0);
}

/* ------------------------------------------------------------------ keys */

static void on_key_api_timer(struct tnode *n)
{
	key_pump(container_of(n, struct key, api_tn));
}

static void on_key_token_timer(struct tnode *n)
{
	key_pump_tokens(container_of(n, struct key, token_tn));
}

static void key_save_usage(struct key *k)
{
	struct store_auth_usage u = { .requests = k->budget.used,
				      .paused_until = k->budget.paused_until };
	int r;

	ratelimit_day_format(k->budget.day, u.day);
	r = store_auth_save_usage(k->c->store, k->client_id, &u);
	if (r < 0)
		log_warning("Cannot record the request count of API key %s: %s, ignoring",
			    k->client_id, store_errmsg(k->c->store));
}

static struct key *key_get(struct ccclient *c, const char *client_id)
{
	struct store_auth_usage u;
	int64_t now = store_now(), day;
	struct key *k;

	for (k = c->keys; k; k = k->next)
		if (streq(k->client_id, client_id))
			return k;
	k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->client_id = strdup(client_id);
	if (!k->client_id) {
		free(k);
		return NULL;
	}
	k->c = c;
	list_init(&k->api_q);
	list_init(&k->token_q);
	k->api_tn = (struct tnode){ .idx = SIZE_MAX, .fire = on_key_api_timer };
	k->token_tn = (struct tnode){ .idx = SIZE_MAX, .fire = on_key_token_timer };
	/* Burst 1: requests go out evenly spaced. CC's own window is undocumented; a burst of
	 * rps requests followed by network jitter is exactly what earns a 429. */
	ratelimit_bucket_init(&k->bucket, c->cfg.requests_per_second, 1, uv_now(c->loop));
	/* CC allows the token endpoint 1 request/second and measures on arrival; spacing sends
	 * 1.11 s apart absorbs the jitter between our clock and theirs. */
	ratelimit_bucket_init(&k->token_bucket, 0.9, 1, uv_now(c->loop));
	ratelimit_budget_init(&k->budget, c->cfg.daily_request_budget, now);
	if (store_auth_get_usage(c->store, client_id, &u) >= 0 &&
	    ratelimit_day_parse(u.day, &day) >= 0) {
		k->budget.day = day;
		k->budget.used = u.requests;
		k->budget.paused_until = u.paused_until;
		(void)ratelimit_budget_roll(&k->budget, now);
	}
	k->next = c->keys;
	c->keys = k;
	return k;
}

/* Fails the queued requests of a paused key that may not wait for the reset. */
static void key_fail_unwaiting(struct key *k)
{
	struct link victims;
	char when[32];

	fmt_time(k->budget.paused_until, when);
	list_init(&victims);
	for (struct link *l = k->api_q.next, *nx; l != &k->api_q; l = nx) {
		struct req *r = container_of(l, struct req, q);

		nx = l->next;
		if (r->flags & CCCLIENT_WAIT_QUOTA)
			continue;
		victim_add(&victims, r);
		r->paused_until = k->budget.paused_until;
		set_msg(r->message, sizeof(r->message),
			"the daily request budget of API key %s is exhausted; requests resume "
			"at %s", k->client_id, when);
	}
	complete_victims(&victims, -EDQUOT);
}

/* Logs the pause once per pause and fails the queued requests that may not wait for it. */
static void key_quota_exhausted(struct key *k, const struct req *by, bool from_cc)
{
	struct log_fields f;
	char when[32];

	key_save_usage(k);
	if (k->quota_logged_until != k->budget.paused_until) {
		k->quota_logged_until = k->budget.paused_until;
		fmt_time(k->budget.paused_until, when);
		fields_for(by, &f, CCSYNC_MSG_QUOTA_EXHAUSTED);
		log_full(LOG_WARNING, &f,
			 "%s of API key %s is exhausted (%u requests today); its requests are "
			 "paused until %s",
			 from_cc ? "Constant Contact's daily request quota"
				 : "The daily request budget",
			 k->client_id, k->budget.used, when);
	}
	key_fail_unwaiting(k);
}

/* ------------------------------------------------------------------ connections */

static struct conn *conn_find(struct ccclient *c, int64_t id)
{
	for (struct conn *cn = c->conns; cn; cn = cn->next)
		if (cn->id == id)
			return cn;
	return NULL;
}

static void conn_clear_pending(struct conn *cn)
{
	wipe_free(cn->pending_verifier);
	wipe_free(cn->pending_state);
	free(cn->pending_redirect);
	cn->pending_verifier = cn->pending_state = cn->pending_redirect = NULL;
	cn->pending_expires_at = 0;
}

static void conn_set_access(struct conn *cn, const char *token, int64_t expires_at,
			    int64_t obtained_at)
{
	wipe_free(cn->access_token);
	cn->access_token = token ? strdup(token) : NULL;
	cn->access_expires_at = cn->access_token ? expires_at : 0;
	cn->access_obtained_at = obtained_at;
	cn->token_gen++;
}

static void conn_free(struct conn *cn)
{
	wipe_free(cn->access_token);
	conn_clear_pending(cn);
	free(cn->name);
	free(cn->client_id);
	free(cn);
}

/*
 * Finds or loads a live connection. Returns 0 and the connection, or a negative errno with a
 * message (-ENOENT: no such live connection).
 */
static int conn_get(struct ccclient *c, int64_t id, struct conn **ret, char *err, size_t errlen)
{
	struct store_auth_connection sc = { 0 };
	struct store_auth_tokens t = { 0 };
	struct conn *cn = conn_find(c, id);
	int r;

	if (cn) {
		*ret = cn;
		return 0;
	}
	r = store_auth_get_connection(c->store, id, &sc);
	if (r == -ENOENT)
		return set_error(err, errlen, r, "connection %" PRId64 " does not exist", id);
	if (r < 0)
		return set_error(err, errlen, r, "cannot read connection %" PRId64 ": %s", id,
				 store_errmsg(c->store));
	cn = calloc(1, sizeof(*cn));
	if (!cn) {
		store_auth_connection_done(&sc);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	cn->c = c;
	cn->id = id;
	cn->name = TAKE_PTR(sc.name);
	cn->client_id = TAKE_PTR(sc.client_id);
	cn->flow = sc.flow;
	cn->state = sc.state;
	list_init(&cn->waiting);
	list_init(&cn->waiters);
	store_auth_connection_done(&sc);
	cn->key = key_get(c, cn->client_id);
	if (!cn->key) {
		conn_free(cn);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	r = store_auth_get_tokens(c->store, id, &t);
	if (r < 0 && r != -ENOENT) {
		conn_free(cn);
		return set_error(err, errlen, r, "cannot read the tokens of connection %" PRId64
				 ": %s", id, store_errmsg(c->store));
	}
	if (r >= 0 && t.access_token) {
		conn_set_access(cn, t.access_token, t.access_expires_at, 0);
		if (!cn->access_token) {
			store_auth_tokens_done(&t);
			conn_free(cn);
			return set_error(err, errlen, -ENOMEM, "out of memory");
		}
	}
	store_auth_tokens_done(&t);
	cn->next = c->conns;
	c->conns = cn;
	*ret = cn;
	return 0;
}

/* Whether the cached access token can be sent now without refreshing first. */
static bool conn_token_ok(const struct conn *cn)
{
	int64_t now = store_now(), margin = cn->c->opt.refresh_margin_s;

	if (!cn->access_token)
		return false;
	/* Never more than half the token's life: a token issued for less than the margin must
	 * still be used, or every request would refresh. */
	if (cn->access_obtained_at && (cn->access_expires_at - cn->access_obtained_at) / 2 < margin)
		margin = (cn->access_expires_at - cn->access_obtained_at) / 2;
	return cn->access_expires_at - margin > now;
}

/* ------------------------------------------------------------------ request lifecycle */

static void req_free(struct req *r)
{
	json_decref(r->json);
	free(r->url);
	if (r->token_endpoint)
		wipe_free(r->body); /* a refresh token, device code or code verifier */
	else
		free(r->body);
	ccapi_activity_done(&r->activity);
	ccapi_activity_page_done(&r->activities);
	ccapi_list_done(&r->list);
	ccapi_list_page_done(&r->lists);
	ccapi_contact_page_done(&r->contacts);
	ccapi_custom_field_page_done(&r->fields);
	ccapi_device_auth_done(&r->device);
	free(r);
}

/* Takes r out of whatever queue, timer or transfer holds it. */
static void detach(struct req *r)
{
	struct ccclient *c = r->c;

	switch (r->state) {
	case R_QUEUED:
	case R_WAIT_TOKEN:
	case R_DYING:
		list_del(&r->q);
		break;
	case R_TIMER:
		timer_disarm(c, &r->tn);
		break;
	case R_INFLIGHT:
		http_cancel(r->xfer);
		r->xfer = NULL;
		r->conn->key->in_flight--;
		break;
	case R_WAITER:
		list_del(&r->q);
		timer_disarm(c, &r->tn);
		break;
	case R_NEW:
	case R_DONE:
		break;
	}
	r->state = R_NEW;
}

static void victim_add(struct link *victims, struct req *r)
{
	detach(r);
	r->state = R_DYING;
	list_add_tail(victims, &r->q);
}

static void complete_victims(struct link *victims, int error)
{
	while (!list_empty(victims)) {
		struct req *r = container_of(victims->next, struct req, q);

		list_del(&r->q);
		r->state = R_NEW;
		req_complete(r, error);
	}
}

static void requeue(struct req *r, bool front)
{
	struct key *k = r->conn->key;
	struct link *q = r->token_endpoint ? &k->token_q : &k->api_q;
	struct tnode *tn = r->token_endpoint ? &k->token_tn : &k->api_tn;

	if (r->c->closing) {
		/* Closed while this request was being handled: nothing will run it again. */
		r->state = R_NEW;
		set_msg(r->message, sizeof(r->message), "cancelled: the client is shutting down");
		req_complete(r, -ECANCELED);
		return;
	}
	if (front)
		list_add_head(q, &r->q);
	else
		list_add_tail(q, &r->q);
	r->state = R_QUEUED;
	/* Work is never done inside a caller's call: the pump runs from the timer. */
	if (!tnode_armed(tn) || tn->due > uv_now(r->c->loop))
		(void)timer_arm(r->c, tn, uv_now(r->c->loop));
}

static void on_req_timer(struct tnode *n)
{
	struct req *r = container_of(n, struct req, tn);

	r->state = R_NEW;
	requeue(r, true);
}

static void sleep_then_requeue(struct req *r, uint64_t delay_ms)
{
	if (r->c->closing) {
		requeue(r, true); /* completes it */
		return;
	}
	r->tn.fire = on_req_timer;
	r->state = R_TIMER;
	if (timer_arm(r->c, &r->tn, uv_now(r->c->loop) + delay_ms) < 0) {
		r->state = R_NEW;
		set_msg(r->message, sizeof(r->message), "out of memory");
		req_complete(r, -ENOMEM);
	}
}

static struct req *req_new(struct ccclient *c, struct conn *cn, const struct ccclient_call *call,
			   enum op op)
{
	struct req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->c = c;
	r->conn = cn;
	r->op = op;
	r->seq = ++c->seq;
	r->tn.idx = SIZE_MAX;
	if (call) {
		r->owner = call->owner;
		r->run_id = call->run_id;
		r->export_id = call->export_id;
		r->flags = call->flags;
	}
	list_add_tail(&c->reqs, &r->all);
	return r;
}

static void internal_done(struct req *r, int error);

static void req_complete(struct req *r, int error)
{
	struct ccclient_result res = { 0 };

	list_del(&r->all);
	r->state = R_DONE;
	if (r->op == OP_DEVICE && r->conn->device == r)
		r->conn->device = NULL;
	if (error && !r->message[0])
		set_msg(r->message, sizeof(r->message), "%s", strerror(-error));
	if (r->internal) {
		internal_done(r, error);
		req_free(r);
		return;
	}
	res.error = error;
	res.http_status = r->http_status;
	res.attempts = r->attempts;
	res.paused_until = error == -EDQUOT ? r->paused_until : 0;
	res.json = r->json;
	memcpy(res.error_key, r->error_key, sizeof(res.error_key));
	if (error) {
		memcpy(res.message, r->message, sizeof(res.message));
		memcpy(res.curl_error, r->curl_error, sizeof(res.curl_error));
	}
	switch (r->op) {
	case OP_IMPORT:
	case OP_REMOVE:
	case OP_ACTIVITY_GET:
	case OP_WAIT:
		res.activity = r->activity.activity_id[0] ? &r->activity : NULL;
		break;
	case OP_ACTIVITIES:
		res.activities = &r->activities;
		break;
	case OP_LIST_GET:
	case OP_LIST_CREATE:
		res.list = r->list.list_id[0] ? &r->list : NULL;
		break;
	case OP_LISTS:
		res.lists = &r->lists;
		break;
	case OP_CONTACTS:
		res.contacts = &r->contacts;
		break;
	case OP_CUSTOM_FIELDS:
		res.custom_fields = &r->fields;
		break;
	default:
		break;
	}
	if (r->cb)
		r->cb(&res, r->userdata);
	req_free(r);
}

/* Completes r with error; fmt sets the message. */
_printf_(3, 4) static void req_fail(struct req *r, int error, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
	req_complete(r, error);
}

/* ------------------------------------------------------------------ authorization state */

/* Fails every request of cn that is not running (and every activity wait): the connection can no
 * longer make requests. Authorization flows and the refresh itself are left alone. */
static void conn_fail_all(struct conn *cn, int error, const char *message)
{
	struct ccclient *c = cn->c;
	struct link victims;

	list_init(&victims);
	for (struct link *l = c->reqs.next, *nx; l != &c->reqs; l = nx) {
		struct req *r = container_of(l, struct req, all);

		nx = l->next;
		if (r->conn != cn || r->op == OP_DEVICE || r->op == OP_CODE || r == cn->refresh)
			continue;
		if (r->state != R_QUEUED && r->state != R_WAIT_TOKEN && r->state != R_TIMER &&
		    r->state != R_WAITER)
			continue;
		victim_add(&victims, r);
		set_msg(r->message, sizeof(r->message), "%s", message);
	}
	complete_victims(&victims, error);
}

static void reauth_message(const struct conn *cn, char *buf, size_t len)
{
	set_msg(buf, len,
		"connection '%s' needs re-authorization (an administrator must run 'ccsyncctl "
		"connection authorize %s')",
		cn->name, cn->name);
}

/* The refresh token is gone for good: record it once, fail what is queued, never retry. */
static void conn_needs_reauth(struct conn *cn, const struct req *by, const char *why)
{
	struct ccclient *c = cn->c;
	char msg[1024];

	set_msg(msg, sizeof(msg), "%s; an administrator must authorize connection '%s' again "
		"('ccsyncctl connection authorize %s')", why, cn->name, cn->name);
	if (cn->state != STORE_AUTH_NEEDS_REAUTH) {
		struct log_fields f;
		int r;

		cn->state = STORE_AUTH_NEEDS_REAUTH;
		conn_set_access(cn, NULL, 0, 0);
		r = store_auth_set_state(c->store, cn->id, STORE_AUTH_NEEDS_REAUTH, msg);
		fields_for(by, &f, CCSYNC_MSG_NEEDS_REAUTH);
		f.connection_id = cn->id;
		log_full(LOG_ERR, &f, "Connection '%s' needs re-authorization: %s", cn->name, why);
		if (r < 0)
			log_error("Cannot record that connection '%s' needs re-authorization: %s",
				  cn->name, store_errmsg(c->store));
	}
	conn_fail_all(cn, -EKEYREVOKED, msg);
}

static int read_client_secret(struct ccclient *c, char **ret, char *err, size_t errlen)
{
	_cleanup_free_ char *path = NULL;
	_cleanup_fclose_ FILE *f = NULL;
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	char buf[SECRET_FILE_MAX + 1];
	size_t n;
	int r;

	if (c->cfg.client_secret_file[0]) {
		path = strdup(c->cfg.client_secret_file);
	} else if (dir && *dir) {
		if (asprintf(&path, "%s/cc-client-secret", dir) < 0)
			path = NULL;
	} else {
		return set_error(err, errlen, -ENOKEY,
				 "this connection uses the 'code' flow, which needs the "
				 "application's client secret: set [constant_contact] "
				 "client_secret_file, or pass the systemd credential "
				 "cc-client-secret (LoadCredential=)");
	}
	if (!path)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	f = fopen(path, "re");
	if (!f) {
		r = -errno;
		return set_error(err, errlen, -ENOKEY, "cannot read the client secret file %s: %s",
				 path, strerror(-r));
	}
	n = fread(buf, 1, sizeof(buf), f);
	if (n > SECRET_FILE_MAX) {
		explicit_bzero(buf, sizeof(buf));
		return set_error(err, errlen, -ENOKEY, "the client secret file %s is too large",
				 path);
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
			 buf[n - 1] == '\t'))
		n--;
	buf[n] = '\0';
	if (n == 0 || strlen(buf) != n) {
		explicit_bzero(buf, sizeof(buf));
		return set_error(err, errlen, -ENOKEY, "the client secret file %s is empty or "
				 "not text", path);
	}
	*ret = strdup(buf);
	explicit_bzero(buf, sizeof(buf));
	if (!*ret)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	return 0;
}

/* Form fields every token request of cn carries: client_id for public clients. */
static int token_form_start(struct conn *cn, char **form)
{
	if (cn->flow == STORE_AUTH_FLOW_CODE)
		return 0; /* authenticated with Basic instead */
	return ccapi_form_add(form, "client_id", cn->client_id);
}

static struct req *token_req_new(struct conn *cn, const struct ccclient_call *call, enum op op,
				 const char *endpoint)
{
	struct ccclient *c = cn->c;
	struct req *r = req_new(c, cn, call, op);

	if (!r)
		return NULL;
	r->token_endpoint = true;
	r->basic_auth = cn->flow == STORE_AUTH_FLOW_CODE;
	r->method = "POST";
	if (asprintf(&r->url, "%s/%s", c->cfg.auth_base, endpoint) < 0) {
		r->url = NULL;
		list_del(&r->all);
		req_free(r);
		return NULL;
	}
	return r;
}

/* Fails the requests waiting for cn's token with the same error and message. */
_printf_(3, 4) static void fail_waiting(struct conn *cn, int error, const char *fmt, ...)
{
	struct link victims;
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	list_init(&victims);
	while (!list_empty(&cn->waiting)) {
		struct req *w = container_of(cn->waiting.next, struct req, q);

		victim_add(&victims, w);
		memcpy(w->message, msg, sizeof(w->message));
	}
	complete_victims(&victims, error);
}

/* Starts the single refresh of cn, unless one is running. */
static void conn_refresh(struct conn *cn)
{
	struct ccclient *c = cn->c;
	struct store_auth_tokens t = { 0 };
	char *form = NULL;
	struct req *r;
	int ret;

	if (cn->refresh)
		return;
	if (cn->state == STORE_AUTH_NEEDS_REAUTH) {
		char msg[512];

		reauth_message(cn, msg, sizeof(msg));
		conn_fail_all(cn, -EKEYREVOKED, msg);
		return;
	}
	ret = store_auth_get_tokens(c->store, cn->id, &t);
	if (ret < 0 && ret != -ENOENT) {
		fail_waiting(cn, -EIO, "cannot read the tokens of connection '%s': %s", cn->name,
			     store_errmsg(c->store));
		return;
	}
	if (!t.refresh_token) {
		store_auth_tokens_done(&t);
		conn_needs_reauth(cn, NULL, "no refresh token is stored for it");
		return;
	}
	r = token_req_new(cn, NULL, OP_REFRESH, "token");
	ret = r ? token_form_start(cn, &form) : -ENOMEM;
	if (ret >= 0)
		ret = ccapi_form_add(&form, "grant_type", "refresh_token");
	if (ret >= 0)
		ret = ccapi_form_add(&form, "refresh_token", t.refresh_token);
	store_auth_tokens_done(&t);
	if (ret < 0 || !r) {
		wipe_free(form);
		if (r) {
			list_del(&r->all);
			req_free(r);
		}
		fail_waiting(cn, -ENOMEM, "out of memory");
		return;
	}
	r->internal = true;
	r->body = form;
	r->body_len = strlen(form);
	/* Log correlation: the refresh happens on behalf of the first waiting request. */
	if (!list_empty(&cn->waiting)) {
		struct req *w = container_of(cn->waiting.next, struct req, q);

		r->run_id = w->run_id;
		r->export_id = w->export_id;
	}
	cn->refresh = r;
	requeue(r, false);
}

/* Stores tokens from a token response, then (only then) makes them current. */
static int conn_take_tokens(struct conn *cn, struct req *r)
{
	struct ccclient *c = cn->c;
	struct ccapi_token tok = { 0 };
	int64_t now = store_now();
	char err[256];
	int ret;

	ret = ccapi_parse_token(r->json, now, &tok, err, sizeof(err));
	if (ret < 0) {
		set_msg(r->message, sizeof(r->message), "unusable token response: %s", err);
		return ret;
	}
	/* The old refresh token may already be dead (rotation): the new one must be durable
	 * before anything relies on it, so a crash cannot strand the connection. */
	ret = store_auth_save_tokens(c->store, cn->id, tok.access_token, tok.expires_at,
				     tok.refresh_token);
	if (ret < 0) {
		set_msg(r->message, sizeof(r->message),
			"cannot store the new tokens of connection '%s': %s", cn->name,
			ret == -ENOENT ? "the connection was removed" : store_errmsg(c->store));
		log_error("Cannot store the new tokens of connection '%s': %s", cn->name,
			  ret == -ENOENT ? "the connection was removed" : store_errmsg(c->store));
		ccapi_token_done(&tok);
		return ret == -ENOENT ? -ENOENT : -EIO;
	}
	conn_set_access(cn, tok.access_token, tok.expires_at, now);
	cn->state = STORE_AUTH_AUTHORIZED;
	ccapi_token_done(&tok);
	return cn->access_token ? 0 : -ENOMEM;
}

static void refresh_done(struct req *r, int error)
{
	struct conn *cn = r->conn;
	struct key *k = cn->key;
	struct link victims;

	if (cn->refresh == r)
		cn->refresh = NULL;
	if (error == 0) {
		/* Back to the front of the queue, in their original order. */
		while (!list_empty(&cn->waiting)) {
			struct req *w = container_of(cn->waiting.prev, struct req, q);

			list_del(&w->q);
			list_add_head(&k->api_q, &w->q);
			w->state = R_QUEUED;
		}
		(void)timer_arm(cn->c, &k->api_tn, uv_now(cn->c->loop));
		return;
	}
	list_init(&victims);
	while (!list_empty(&cn->waiting)) {
		struct req *w = container_of(cn->waiting.next, struct req, q);

		victim_add(&victims, w);
		set_msg(w->message, sizeof(w->message), "refreshing the access token failed: %s",
			r->message);
		memcpy(w->curl_error, r->curl_error, sizeof(w->curl_error));
		memcpy(w->error_key, r->error_key, sizeof(w->error_key));
		w->http_status = r->http_status;
	}
	complete_victims(&victims, error == -EKEYREVOKED ? -EKEYREVOKED : error);
}

/* ------------------------------------------------------------------ the pumps */

static void key_pump(struct key *k)
{
	struct ccclient *c = k->c;

	while (!c->closing && !list_empty(&k->api_q)) {
		struct req *r = container_of(k->api_q.next, struct req, q);
		struct conn *cn = r->conn;
		int64_t now_s = store_now();
		uint64_t wait;

		if (cn->state == STORE_AUTH_NEEDS_REAUTH) {
			detach(r);
			reauth_message(cn, r->message, sizeof(r->message));
			req_complete(r, -EKEYREVOKED);
			continue;
		}
		if (!conn_token_ok(cn)) {
			list_del(&r->q);
			r->state = R_WAIT_TOKEN;
			list_add_tail(&cn->waiting, &r->q);
			conn_refresh(cn);
			continue;
		}
		if (ratelimit_budget_roll(&k->budget, now_s))
			key_save_usage(k);
		if (!ratelimit_budget_paused(&k->budget, now_s) &&
		    ratelimit_budget_left(&k->budget, now_s) == 0) {
			(void)ratelimit_budget_take(&k->budget, now_s); /* pauses the key */
			key_quota_exhausted(k, r, false);
			continue;
		}
		if (ratelimit_budget_paused(&k->budget, now_s)) {
			char when[32];

			if (r->flags & CCCLIENT_WAIT_QUOTA) {
				uint64_t ms = (uint64_t)(k->budget.paused_until - now_s) * 1000;

				/* Nothing may sit behind the head until midnight without
				 * having asked to. */
				key_fail_unwaiting(k);
				if (!c->closing)
					(void)timer_arm(c, &k->api_tn, uv_now(c->loop) + ms);
				break;
			}
			detach(r);
			r->paused_until = k->budget.paused_until;
			fmt_time(r->paused_until, when);
			req_fail(r, -EDQUOT, "the daily request budget of API key %s is exhausted; "
				 "requests resume at %s", k->client_id, when);
			continue;
		}
		wait = ratelimit_bucket_take(&k->bucket, uv_now(c->loop));
		if (wait) {
			(void)timer_arm(c, &k->api_tn, uv_now(c->loop) + wait);
			break;
		}
		(void)ratelimit_budget_take(&k->budget, now_s);
		key_save_usage(k);
		list_del(&r->q);
		r->state = R_NEW;
		req_send(r);
	}
}

static void key_pump_tokens(struct key *k)
{
	struct ccclient *c = k->c;

	while (!c->closing && !list_empty(&k->token_q)) {
		struct req *r = container_of(k->token_q.next, struct req, q);
		uint64_t wait = ratelimit_bucket_take(&k->token_bucket, uv_now(c->loop));

		if (wait) {
			(void)timer_arm(c, &k->token_tn, uv_now(c->loop) + wait);
			break;
		}
		list_del(&r->q);
		r->state = R_NEW;
		req_send(r);
	}
}

/* ------------------------------------------------------------------ sending */

static void on_http_done(const struct http_result *hr, void *userdata);

/* Path of a URL without its query string: for debug logs (queries can hold email addresses). */
static void url_path(const char *url, char *buf, size_t len)
{
	const char *p = strstr(url, "://");

	p = p ? strchr(p + 3, '/') : NULL;
	set_msg(buf, len, "%.*s", (int)strcspn(p ? p : "/", "?"), p ? p : "/");
}

static void req_send(struct req *r)
{
	struct ccclient *c = r->c;
	struct conn *cn = r->conn;
	_cleanup_free_ char *secret = NULL;
	char *auth = NULL;
	const char *headers[6];
	struct http_request hreq = { 0 };
	size_t nh = 0;
	char err[256];
	int ret;

	headers[nh++] = "Accept: application/json";
	if (r->token_endpoint) {
		headers[nh++] = "Content-Type: application/x-www-form-urlencoded";
		if (r->basic_auth) {
			_cleanup_free_ char *basic = NULL;

			ret = read_client_secret(c, &secret, err, sizeof(err));
			if (ret < 0) {
				req_fail(r, ret, "%s", err);
				return;
			}
			basic = ccapi_basic_auth(cn->client_id, secret);
			explicit_bzero(secret, strlen(secret));
			if (!basic || asprintf(&auth, "Authorization: %s", basic) < 0)
				auth = NULL;
			if (basic)
				explicit_bzero(basic, strlen(basic));
			if (!auth) {
				req_fail(r, -ENOMEM, "out of memory");
				return;
			}
			headers[nh++] = auth;
		}
	} else {
		headers[nh++] = "Cache-Control: no-cache";
		if (r->body)
			headers[nh++] = "Content-Type: application/json";
		if (asprintf(&auth, "Authorization: Bearer %s", cn->access_token) < 0) {
			req_fail(r, -ENOMEM, "out of memory");
			return;
		}
		headers[nh++] = auth;
		r->gen_used = cn->token_gen;
	}
	headers[nh] = NULL;
	hreq.method = r->method;
	hreq.url = r->url;
	hreq.headers = headers;
	hreq.body = r->body;
	hreq.body_len = r->body_len;
	r->attempts++;
	ret = http_submit(c->http, &hreq, on_http_done, r, &r->xfer, err, sizeof(err));
	wipe_free(auth);
	if (ret < 0) {
		r->xfer = NULL;
		req_fail(r, ret, "%s", err);
		return;
	}
	r->state = R_INFLIGHT;
	cn->key->in_flight++;
}

/* ------------------------------------------------------------------ responses */

static bool transport_retryable(int error)
{
	return error == -ETIMEDOUT || error == -ECONNRESET || error == -ECONNREFUSED ||
	       error == -EHOSTUNREACH || error == -EIO;
}

static void retry_or_fail(struct req *r, int error, bool throttled)
{
	struct ccclient *c = r->c;
	unsigned *n = throttled ? &r->throttle_retries : &r->net_retries;
	uint32_t base = throttled ? c->opt.throttle_base_ms : c->opt.retry_base_ms;
	char what[600];

	if (*n < c->cfg.max_retries) {
		struct log_fields f;
		char path[128];

		++*n;
		fields_for(r, &f, NULL);
		url_path(r->url, path, sizeof(path));
		log_full(LOG_DEBUG, &f, "%s %s: %s; retry %u of %u", r->method, path,
			 r->message[0] ? r->message : strerror(-error), *n, c->cfg.max_retries);
		r->message[0] = '\0';
		sleep_then_requeue(r, backoff_ms(c, base, *n));
		return;
	}
	set_msg(what, sizeof(what), "%s", r->message[0] ? r->message : strerror(-error));
	req_fail(r, error, "%s (gave up after %u attempts)", what, r->attempts);
}

static int errno_for_status(long status)
{
	switch (status) {
	case 401:
	case 403:
		return -EACCES;
	case 404:
	case 410:
		return -ENOENT;
	case 409:
		return -EEXIST;
	case 413:
		return -E2BIG;
	default:
		return -EINVAL;
	}
}

/* The next page of a collection, on the API's own host only: a link elsewhere would carry our
 * bearer token to it. */
static int next_url(struct req *r, const char *href)
{
	struct ccclient *c = r->c;
	size_t on = strlen(c->api_origin);
	char *u = NULL;

	if (href[0] == '/' && href[1] != '/') {
		if (asprintf(&u, "%s%s", c->api_origin, href) < 0)
			return -ENOMEM;
	} else if (strncmp(href, c->api_origin, on) == 0 && href[on] == '/') {
		u = strdup(href);
		if (!u)
			return -ENOMEM;
	} else {
		return -EBADMSG;
	}
	free(r->url);
	r->url = u;
	return 0;
}

static void handle_device_phase(struct req *r);

static void handle_success(struct req *r)
{
	struct conn *cn = r->conn;
	char err[256];
	int ret = 0;

	err[0] = '\0';
	if (!r->json && r->op != OP_WAIT) {
		req_fail(r, -EBADMSG, "Constant Contact answered HTTP %ld without a JSON body",
			 r->http_status);
		return;
	}
	switch (r->op) {
	case OP_IMPORT:
	case OP_REMOVE:
	case OP_ACTIVITY_GET:
	case OP_POLL_ONE:
		ccapi_activity_done(&r->activity);
		ret = ccapi_parse_activity(r->json, &r->activity, err, sizeof(err));
		break;
	case OP_ACTIVITIES:
	case OP_POLL_MANY:
		ccapi_activity_page_done(&r->activities);
		ret = ccapi_parse_activity_page(r->json, &r->activities, NULL, err, sizeof(err));
		break;
	case OP_LIST_GET:
	case OP_LIST_CREATE:
		ccapi_list_done(&r->list);
		ret = ccapi_parse_list(r->json, &r->list, err, sizeof(err));
		if (ret >= 0 && r->list.deleted) {
			req_fail(r, -ENOENT, "Constant Contact list %s (\"%s\") has been deleted",
				 r->list.list_id, r->list.name);
			return;
		}
		break;
	case OP_CONTACTS:
		ccapi_contact_page_done(&r->contacts);
		ret = ccapi_parse_contact_page(r->json, &r->contacts, err, sizeof(err));
		break;
	case OP_LISTS:
	case OP_CUSTOM_FIELDS: {
		struct ccapi_list_page lp = { 0 };
		struct ccapi_custom_field_page fp = { 0 };
		const char *next;

		if (r->op == OP_LISTS) {
			ret = ccapi_parse_list_page(r->json, &lp, err, sizeof(err));
			if (ret >= 0)
				ret = ccapi_list_page_append(&r->lists, &lp);
			next = lp.next;
		} else {
			ret = ccapi_parse_custom_field_page(r->json, &fp, err, sizeof(err));
			if (ret >= 0)
				ret = ccapi_custom_field_page_append(&r->fields, &fp);
			next = fp.next;
		}
		/* 1000 lists and 100 custom fields are CC's maxima: 20 pages is plenty. */
		if (ret >= 0 && next && r->attempts < 20 + r->net_retries + r->throttle_retries) {
			ret = next_url(r, next);
			ccapi_list_page_done(&lp);
			ccapi_custom_field_page_done(&fp);
			if (ret < 0) {
				req_fail(r, ret, ret == -EBADMSG ? "refusing to follow a next link "
					 "that leaves the API host" : "out of memory");
				return;
			}
			requeue(r, false);
			return;
		}
		ccapi_list_page_done(&lp);
		ccapi_custom_field_page_done(&fp);
		break;
	}
	case OP_REFRESH:
	case OP_CODE:
		ret = conn_take_tokens(cn, r);
		if (ret < 0) {
			req_complete(r, ret);
			return;
		}
		break;
	case OP_DEVICE:
		handle_device_phase(r);
		return;
	case OP_WAIT:
		break;
	}
	if (ret < 0) {
		req_fail(r, ret, "unexpected response from Constant Contact: %s", err);
		return;
	}
	req_complete(r, 0);
}

static void handle_token_error(struct req *r, const struct ccapi_error *e)
{
	struct conn *cn = r->conn;
	long st = r->http_status;
	char why[700];

	if (st == 429 || st >= 500) {
		if (st == 429)
			ratelimit_bucket_drain(&cn->key->token_bucket, uv_now(r->c->loop));
		set_msg(r->message, sizeof(r->message), "token endpoint answered HTTP %ld%s%s", st,
			e->message[0] ? ": " : "", e->message);
		retry_or_fail(r, st == 429 ? -EBUSY : -EIO, st == 429);
		return;
	}
	set_msg(why, sizeof(why), "%s%s%s", e->key[0] ? e->key : "HTTP error",
		e->message[0] ? ": " : "", e->message);
	switch (r->op) {
	case OP_REFRESH:
		if (streq(e->key, "invalid_grant") || streq(e->key, "invalid_client") ||
		    streq(e->key, "unauthorized_client") || st == 401) {
			char what[800];

			if (streq(e->key, "invalid_client") || st == 401)
				set_msg(what, sizeof(what),
					"Constant Contact refused the application's credentials "
					"(%s); check the client secret", why);
			else
				set_msg(what, sizeof(what),
					"Constant Contact refused its refresh token (%s)", why);
			conn_needs_reauth(cn, r, what);
			req_fail(r, -EKEYREVOKED, "%s", what);
			return;
		}
		req_fail(r, -EACCES, "refreshing the access token failed (%s)", why);
		return;
	case OP_DEVICE:
		if (!r->device_polling) {
			req_fail(r, st == 401 ? -EACCES : -EINVAL,
				 "the device authorization request was refused (%s)", why);
			return;
		}
		if (streq(e->key, "authorization_pending") || streq(e->key, "slow_down")) {
			if (streq(e->key, "slow_down"))
				r->device.interval_s += 5; /* RFC 8628 §3.5 */
			r->message[0] = '\0';
			r->error_key[0] = '\0';
			handle_device_phase(r);
			return;
		}
		if (streq(e->key, "expired_token")) {
			req_fail(r, -ETIME, "the user code expired before it was approved; start "
				 "the authorization again");
			return;
		}
		if (streq(e->key, "access_denied")) {
			req_fail(r, -EACCES, "the authorization was denied in the browser");
			return;
		}
		req_fail(r, -EACCES, "device authorization failed (%s)", why);
		return;
	case OP_CODE:
		req_fail(r, -EACCES, "the authorization code was refused (%s); codes are "
			 "single-use and expire after 5 minutes, so start again with a new "
			 "authorize URL", why);
		return;
	default:
		req_fail(r, -EINVAL, "%s", why);
	}
}

static void handle_api_error(struct req *r, const struct ccapi_error *e)
{
	struct ccclient *c = r->c;
	struct conn *cn = r->conn;
	struct key *k = cn->key;
	long st = r->http_status;
	char detail[700];

	set_msg(detail, sizeof(detail), "%s%s%s", e->key, e->key[0] && e->message[0] ? ": " : "",
		e->message);
	if (st == 401) {
		if (cn->state == STORE_AUTH_NEEDS_REAUTH) {
			reauth_message(cn, r->message, sizeof(r->message));
			req_complete(r, -EKEYREVOKED);
			return;
		}
		if (!r->refreshed) {
			r->refreshed = true;
			if (cn->token_gen != r->gen_used && cn->access_token) {
				requeue(r, true); /* someone refreshed meanwhile */
				return;
			}
			if (c->closing) {
				requeue(r, true); /* completes it */
				return;
			}
			conn_set_access(cn, NULL, 0, 0);
			r->state = R_WAIT_TOKEN;
			list_add_tail(&cn->waiting, &r->q);
			conn_refresh(cn);
			return;
		}
		req_fail(r, -EACCES, "Constant Contact rejected the access token even after a "
			 "refresh (%s)", detail);
		return;
	}
	if (st == 429) {
		if (streq(e->key, "quota_exceeded")) {
			ratelimit_budget_pause(&k->budget, store_now());
			r->paused_until = k->budget.paused_until;
			key_quota_exhausted(k, r, true);
			if (r->flags & CCCLIENT_WAIT_QUOTA) {
				requeue(r, true);
				return;
			}
			req_fail(r, -EDQUOT, "Constant Contact's daily request quota for API key "
				 "%s is exhausted (%s)", k->client_id, detail);
			return;
		}
		/* throttled, or the 1,000 queued activities limit: slow the whole key down. */
		ratelimit_bucket_drain(&k->bucket, uv_now(c->loop));
		set_msg(r->message, sizeof(r->message), "Constant Contact answered 429 (%s)",
			detail);
		retry_or_fail(r, -EBUSY, true);
		return;
	}
	if (st >= 500) {
		set_msg(r->message, sizeof(r->message), "Constant Contact answered HTTP %ld (%s)",
			st, detail[0] ? detail : "no details");
		retry_or_fail(r, -EIO, false);
		return;
	}
	req_fail(r, errno_for_status(st), "Constant Contact refused the request (HTTP %ld): %s", st,
		 detail[0] ? detail : "no details given");
}

static void on_http_done(const struct http_result *hr, void *userdata)
{
	struct req *r = userdata;
	struct ccclient *c = r->c;
	struct ccapi_error e;
	struct log_fields f;
	char path[128];

	r->xfer = NULL;
	/* Owned by this call stack until it is queued, put to sleep or completed: callbacks run
	 * meanwhile (other requests failing) may cancel or close, and must not free it. */
	r->state = R_DYING;
	r->conn->key->in_flight--;
	r->http_status = hr->status;
	json_decref(r->json);
	r->json = NULL;
	r->error_key[0] = '\0';
	set_msg(r->curl_error, sizeof(r->curl_error), "%s", hr->error ? hr->curl_error : "");
	fields_for(r, &f, NULL);
	url_path(r->url, path, sizeof(path));
	log_full(LOG_DEBUG, &f, "%s %s -> %ld%s%s (attempt %u, %.3f s)", r->method, path,
		 hr->status, hr->error ? ", " : "", hr->error ? hr->curl_error : "", r->attempts,
		 hr->total_s);
	if (hr->error) {
		if (hr->error == -ECANCELED) {
			req_fail(r, -ECANCELED, "cancelled: the client is shutting down");
		} else if (hr->error == -EPROTO) {
			req_fail(r, -EPROTO, "TLS failure talking to %s: %s (check the server "
				 "certificate and [constant_contact] ca_file)", c->api_origin,
				 hr->curl_error);
		} else if (transport_retryable(hr->error)) {
			set_msg(r->message, sizeof(r->message),
				"no response from Constant Contact: %s", hr->curl_error);
			retry_or_fail(r, hr->error, false);
		} else {
			req_fail(r, hr->error, "HTTP request failed: %s", hr->curl_error);
		}
		return;
	}
	if (hr->body_len)
		(void)ccapi_json_parse(hr->body, hr->body_len, &r->json, NULL, 0);
	if (hr->status >= 200 && hr->status < 300) {
		handle_success(r);
		return;
	}
	if (ccapi_parse_error(r->json, &e) < 0)
		memset(&e, 0, sizeof(e));
	memcpy(r->error_key, e.key, sizeof(r->error_key) < sizeof(e.key) ? sizeof(r->error_key)
									   : sizeof(e.key));
	r->error_key[sizeof(r->error_key) - 1] = '\0';
	if (r->token_endpoint)
		handle_token_error(r, &e);
	else
		handle_api_error(r, &e);
}

/* ------------------------------------------------------------------ device flow */

static void device_wait(struct req *r)
{
	if (store_now() >= r->device.expires_at) {
		req_fail(r, -ETIME, "the user code expired before it was approved; start the "
			 "authorization again");
		return;
	}
	sleep_then_requeue(r, (uint64_t)r->device.interval_s * 1000);
}

/* After a token-endpoint answer that moves the device flow on (2xx, pending or slow_down). */
static void handle_device_phase(struct req *r)
{
	struct ccclient_device_code code = { 0 };
	char user_code[80], uri[1024], uri_complete[1024];
	ccclient_device_fn on_code;
	char err[256], *form = NULL;
	void *userdata;
	int ret;

	if (r->device_polling && r->http_status >= 200 && r->http_status < 300) {
		ret = conn_take_tokens(r->conn, r);
		req_complete(r, ret < 0 ? ret : 0);
		return;
	}
	if (r->device_polling) {
		device_wait(r);
		return;
	}
	ret = ccapi_parse_device_auth(r->json, store_now(), &r->device, err, sizeof(err));
	if (ret < 0) {
		req_fail(r, ret, "unexpected device authorization response: %s", err);
		return;
	}
	ret = token_form_start(r->conn, &form);
	if (ret >= 0)
		ret = ccapi_form_add(&form, "grant_type",
				     "urn:ietf:params:oauth:grant-type:device_code");
	if (ret >= 0)
		ret = ccapi_form_add(&form, "device_code", r->device.device_code);
	free(r->url);
	r->url = NULL;
	if (ret >= 0 && asprintf(&r->url, "%s/token", r->c->cfg.auth_base) < 0) {
		r->url = NULL;
		ret = -ENOMEM;
	}
	if (ret < 0) {
		wipe_free(form);
		req_fail(r, -ENOMEM, "out of memory");
		return;
	}
	wipe_free(r->body);
	r->body = form;
	r->body_len = strlen(form);
	r->device_polling = true;
	/* Copies: the user's callback may cancel the flow, which frees r. */
	set_msg(user_code, sizeof(user_code), "%s", r->device.user_code);
	set_msg(uri, sizeof(uri), "%s", r->device.verification_uri);
	set_msg(uri_complete, sizeof(uri_complete), "%s",
		r->device.verification_uri_complete ? r->device.verification_uri_complete : "");
	code.user_code = user_code;
	code.verification_uri = uri;
	code.verification_uri_complete = uri_complete[0] ? uri_complete : NULL;
	code.expires_at = r->device.expires_at;
	on_code = r->on_code;
	userdata = r->userdata;
	device_wait(r);
	if (on_code)
		on_code(&code, userdata);
}

/* ------------------------------------------------------------------ activity waits */

static void on_waiter_timer(struct tnode *n)
{
	struct req *w = container_of(n, struct req, tn);

	waiter_poll(w->conn);
}

static int waiter_arm(struct req *w, uint64_t due)
{
	w->tn.fire = on_waiter_timer;
	return timer_arm(w->c, &w->tn, due);
}

static struct req *poll_req_new(struct conn *cn, enum op op, const char *activity_id,
				const struct req *first)
{
	struct ccclient *c = cn->c;
	struct req *r = req_new(c, cn, NULL, op);
	int ret;

	if (!r)
		return NULL;
	r->internal = true;
	r->method = "GET";
	r->run_id = first->run_id;
	r->export_id = first->export_id;
	if (op == OP_POLL_ONE)
		ret = asprintf(&r->url, "%s/activities/%s", c->cfg.api_base, activity_id);
	else
		ret = asprintf(&r->url, "%s/activities?limit=%d", c->cfg.api_base,
			       CCAPI_PAGE_LIMIT);
	if (ret < 0) {
		r->url = NULL;
		list_del(&r->all);
		req_free(r);
		return NULL;
	}
	requeue(r, false);
	return r;
}

static void waiter_poll(struct conn *cn)
{
	struct ccclient *c = cn->c;
	uint64_t now = uv_now(c->loop);
	struct req *many_first = NULL, *p;
	struct link victims, oom;
	size_t n_many = 0;

	list_init(&victims);
	list_init(&oom);
	for (struct link *l = cn->waiters.next, *nx; l != &cn->waiters; l = nx) {
		struct req *w = container_of(l, struct req, q);

		nx = l->next;
		w->gather = false;
		if (w->polling || (tnode_armed(&w->tn) && w->tn.due > now + c->cfg.poll_initial_ms))
			continue;
		if (now >= w->deadline_ms) {
			victim_add(&victims, w);
			set_msg(w->message, sizeof(w->message),
				"activity %s did not finish in time (last state: %s)",
				w->activity_id,
				w->activity.state_name[0] ? w->activity.state_name : "unknown");
			continue;
		}
		timer_disarm(c, &w->tn);
		if (w->by_id) {
			p = poll_req_new(cn, OP_POLL_ONE, w->activity_id, w);
			if (!p) {
				victim_add(&oom, w);
				continue;
			}
			w->polling = true;
			w->poll_seq = p->seq;
			continue;
		}
		w->gather = true;
		if (!many_first)
			many_first = w;
		n_many++;
	}
	if (n_many) {
		/* Several activities due together: one GET /activities (newest first, 500 per
		 * page) instead of one request each. Those not on that page are then fetched by
		 * id. */
		p = poll_req_new(cn, n_many == 1 ? OP_POLL_ONE : OP_POLL_MANY,
				 many_first->activity_id, many_first);
		for (struct link *l = cn->waiters.next, *nx; l != &cn->waiters; l = nx) {
			struct req *w = container_of(l, struct req, q);

			nx = l->next;
			if (!w->gather)
				continue;
			w->gather = false;
			if (!p) {
				victim_add(&oom, w);
				continue;
			}
			w->polling = true;
			w->poll_seq = p->seq;
		}
	}
	complete_victims(&oom, -ENOMEM);
	complete_victims(&victims, -ETIME);
}

static void poll_done(struct req *r, int error)
{
	struct conn *cn = r->conn;
	struct ccclient *c = r->c;
	uint64_t now = uv_now(c->loop);
	struct link ok, remote, failed;

	list_init(&ok);
	list_init(&remote);
	list_init(&failed);
	for (struct link *l = cn->waiters.next, *nx; l != &cn->waiters; l = nx) {
		struct req *w = container_of(l, struct req, q);
		struct ccapi_activity *a = NULL;

		nx = l->next;
		if (!w->polling || w->poll_seq != r->seq)
			continue;
		w->polling = false;
		if (error) {
			victim_add(&failed, w);
			memcpy(w->message, r->message, sizeof(w->message));
			memcpy(w->error_key, r->error_key, sizeof(w->error_key));
			memcpy(w->curl_error, r->curl_error, sizeof(w->curl_error));
			w->http_status = r->http_status;
			continue;
		}
		if (r->op == OP_POLL_ONE && streq(r->activity.activity_id, w->activity_id))
			a = &r->activity;
		for (size_t i = 0; !a && r->op == OP_POLL_MANY && i < r->activities.n; i++)
			if (streq(r->activities.activities[i].activity_id, w->activity_id))
				a = &r->activities.activities[i];
		w->attempts++;
		w->http_status = r->http_status;
		if (!a) {
			/* Not among the newest activities: ask for it by id, now. */
			w->by_id = true;
			if (waiter_arm(w, now) < 0)
				victim_add(&failed, w);
			continue;
		}
		ccapi_activity_done(&w->activity);
		w->activity = *a;
		memset(a, 0, sizeof(*a));
		if (w->activity.state == CCAPI_ACTIVITY_COMPLETED) {
			victim_add(&ok, w);
		} else if (ccapi_activity_state_terminal(w->activity.state)) {
			victim_add(&remote, w);
			set_msg(w->message, sizeof(w->message), "activity %s ended %s%s%s",
				w->activity_id, w->activity.state_name,
				w->activity.n_errors ? ": " : "",
				w->activity.n_errors ? w->activity.errors[0].raw : "");
		} else {
			w->delay_ms = w->delay_ms * 2 > c->cfg.poll_max_ms ? c->cfg.poll_max_ms
									  : w->delay_ms * 2;
			if (waiter_arm(w, now + w->delay_ms) < 0)
				victim_add(&failed, w);
		}
	}
	complete_victims(&ok, 0);
	complete_victims(&remote, -EREMOTEIO);
	complete_victims(&failed, error ? error : -ENOMEM);
}

static void internal_done(struct req *r, int error)
{
	switch (r->op) {
	case OP_REFRESH:
		refresh_done(r, error);
		break;
	case OP_POLL_ONE:
	case OP_POLL_MANY:
		poll_done(r, error);
		break;
	default:
		break;
	}
}

/* ------------------------------------------------------------------ public: lifecycle */

static void origin_of(const char *url, char *buf, size_t len)
{
	const char *p = strstr(url, "://");
	size_t n = p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);

	set_msg(buf, len, "%.*s", (int)n, url);
}

static void apply_options(struct ccclient *c, const struct ccclient_options *o)
{
	static const struct ccclient_options none = { 0 };

	if (!o)
		o = &none;
	c->opt.retry_base_ms = o->retry_base_ms ? o->retry_base_ms : 1000;
	c->opt.retry_max_ms = o->retry_max_ms ? o->retry_max_ms : 60000;
	c->opt.throttle_base_ms = o->throttle_base_ms ? o->throttle_base_ms : 1000;
	c->opt.refresh_margin_s = o->refresh_margin_s ? o->refresh_margin_s : 300;
	c->opt.pending_auth_ttl_s = o->pending_auth_ttl_s ? o->pending_auth_ttl_s : 600;
}

static void http_options_from(const struct config *cfg, struct http_options *o)
{
	*o = (struct http_options){
		.connect_timeout_ms = cfg->connect_timeout_ms,
		.timeout_ms = cfg->request_timeout_ms,
		.max_response_bytes = cfg->max_response_bytes,
		.ca_file = cfg->ca_file,
	};
}

int ccclient_new(uv_loop_t *loop, struct store *store, const struct config *cfg,
		 const struct ccclient_options *opts, struct ccclient **ret, char *err,
		 size_t errlen)
{
	struct http_options ho;
	struct ccclient *c;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	c->loop = loop;
	c->store = store;
	c->cfg = *cfg;
	apply_options(c, opts);
	origin_of(c->cfg.api_base, c->api_origin, sizeof(c->api_origin));
	list_init(&c->reqs);
	if (getrandom(&c->rng, sizeof(c->rng), GRND_NONBLOCK) != sizeof(c->rng) || !c->rng)
		c->rng = (uint64_t)uv_hrtime() | 1;
	http_options_from(cfg, &ho);
	r = http_engine_new(loop, &ho, &c->http, err, errlen);
	if (r < 0) {
		free(c);
		return r;
	}
	r = uv_timer_init(loop, &c->timer);
	if (r < 0) {
		/* Nothing else to unwind: the engine frees itself after its close callbacks. */
		http_engine_close(c->http, NULL, NULL);
		free(c);
		return set_error(err, errlen, r, "cannot create a timer: %s", uv_strerror(r));
	}
	*ret = c;
	return 0;
}

static void hub_free(struct ccclient *c)
{
	void (*on_closed)(void *) = c->on_closed;
	void *ud = c->on_closed_userdata;

	while (c->conns) {
		struct conn *cn = c->conns;

		c->conns = cn->next;
		conn_free(cn);
	}
	while (c->keys) {
		struct key *k = c->keys;

		c->keys = k->next;
		free(k->client_id);
		free(k);
	}
	free(c->heap);
	free(c);
	if (on_closed)
		on_closed(ud);
}

static void on_close_step(struct ccclient *c)
{
	if (--c->pending_close == 0)
		hub_free(c);
}

static void on_engine_closed(void *userdata)
{
	on_close_step(userdata);
}

static void on_timer_closed(uv_handle_t *h)
{
	on_close_step(container_of((uv_timer_t *)h, struct ccclient, timer));
}

/* Detaches every request matching (owner, cn) onto victims; internal ones are freed at once. */
static void collect(struct ccclient *c, bool all, const void *owner, const struct conn *cn,
		    struct link *victims)
{
	for (struct link *l = c->reqs.next, *nx; l != &c->reqs; l = nx) {
		struct req *r = container_of(l, struct req, all);

		nx = l->next;
		if (r->state == R_DYING || r->state == R_DONE)
			continue;
		if (!all && cn && r->conn != cn)
			continue;
		if (!all && !cn && (r->internal || r->owner != owner))
			continue;
		if (r->internal) {
			detach(r);
			if (r->conn->refresh == r)
				r->conn->refresh = NULL;
			list_del(&r->all);
			req_free(r);
			continue;
		}
		victim_add(victims, r);
		set_msg(r->message, sizeof(r->message), "cancelled");
	}
}

void ccclient_close(struct ccclient *c, void (*on_closed)(void *userdata), void *userdata)
{
	struct link victims;

	if (!c || c->closing)
		return;
	list_init(&victims);
	collect(c, true, NULL, NULL, &victims);
	c->closing = true;
	complete_victims(&victims, -ECANCELED);
	/* Callbacks cannot have added work (submits are refused while closing). */
	c->on_closed = on_closed;
	c->on_closed_userdata = userdata;
	c->pending_close = 2;
	c->heap_n = 0;
	(void)uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	http_engine_close(c->http, on_engine_closed, c);
}

int ccclient_reload(struct ccclient *c, const struct config *cfg, char *err, size_t errlen)
{
	struct http_options ho;
	uint64_t now = uv_now(c->loop);
	int r;

	http_options_from(cfg, &ho);
	r = http_engine_set_options(c->http, &ho);
	if (r < 0)
		return set_error(err, errlen, r, "out of memory");
	c->cfg = *cfg;
	origin_of(c->cfg.api_base, c->api_origin, sizeof(c->api_origin));
	for (struct key *k = c->keys; k; k = k->next) {
		ratelimit_bucket_set_rate(&k->bucket, cfg->requests_per_second, 1, now);
		k->budget.limit = cfg->daily_request_budget;
		(void)timer_arm(c, &k->api_tn, now);
	}
	return 0;
}

void ccclient_cancel_owner(struct ccclient *c, const void *owner)
{
	struct link victims;

	list_init(&victims);
	collect(c, false, owner, NULL, &victims);
	complete_victims(&victims, -ECANCELED);
}

void ccclient_forget_connection(struct ccclient *c, int64_t connection_id)
{
	struct conn *cn = conn_find(c, connection_id), **pp;
	struct link victims;

	if (!cn)
		return;
	list_init(&victims);
	collect(c, false, NULL, cn, &victims);
	/* Unlinked before the callbacks: a request submitted from one of them reloads the
	 * connection from the database instead of reusing this one. */
	for (pp = &c->conns; *pp; pp = &(*pp)->next)
		if (*pp == cn) {
			*pp = cn->next;
			break;
		}
	complete_victims(&victims, -ECANCELED);
	conn_free(cn);
}

/* ------------------------------------------------------------------ public: endpoints */

/* The connection a request is for, unless the client is stopping. */
static int conn_open(struct ccclient *c, int64_t connection_id, struct conn **ret, char *err,
		     size_t errlen)
{
	if (c->closing)
		return set_error(err, errlen, -ESHUTDOWN,
				 "the Constant Contact client is stopping");
	return conn_get(c, connection_id, ret, err, errlen);
}

static int call_conn(struct ccclient *c, const struct ccclient_call *call, struct conn **ret,
		     char *err, size_t errlen)
{
	if (!call)
		return set_error(err, errlen, -EINVAL, "no connection given");
	return conn_open(c, call->connection_id, ret, err, errlen);
}

static int check_call(struct ccclient *c, const struct ccclient_call *call, struct conn **ret,
		      char *err, size_t errlen)
{
	struct conn *cn;
	char when[32];
	int r;

	r = call_conn(c, call, &cn, err, errlen);
	if (r < 0)
		return r;
	if (cn->state == STORE_AUTH_NEEDS_REAUTH) {
		char msg[512];

		reauth_message(cn, msg, sizeof(msg));
		return set_error(err, errlen, -EKEYREVOKED, "%s", msg);
	}
	if (cn->state == STORE_AUTH_UNAUTHORIZED && !cn->access_token)
		return set_error(err, errlen, -ENOKEY,
				 "connection '%s' is not authorized yet: run 'ccsyncctl connection "
				 "authorize %s'", cn->name, cn->name);
	(void)ratelimit_budget_roll(&cn->key->budget, store_now());
	if (ratelimit_budget_paused(&cn->key->budget, store_now()) &&
	    !(call->flags & CCCLIENT_WAIT_QUOTA)) {
		fmt_time(cn->key->budget.paused_until, when);
		return set_error(err, errlen, -EDQUOT,
				 "the daily request budget of API key %s is exhausted; requests "
				 "resume at %s", cn->key->client_id, when);
	}
	*ret = cn;
	return 0;
}

/* Takes url and body (transfer full, also on failure). */
static int api_start(struct ccclient *c, const struct ccclient_call *call, enum op op,
		     const char *method, char *url, char *body, size_t body_len,
		     ccclient_done_fn cb, void *userdata, char *err, size_t errlen)
{
	struct conn *cn;
	struct req *r;
	int ret;

	if (!url) {
		free(body);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	ret = check_call(c, call, &cn, err, errlen);
	if (ret < 0) {
		free(url);
		free(body);
		return ret;
	}
	r = req_new(c, cn, call, op);
	if (!r) {
		free(url);
		free(body);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	r->method = method;
	r->url = url;
	r->body = body;
	r->body_len = body_len;
	r->cb = cb;
	r->userdata = userdata;
	requeue(r, false);
	return 0;
}

static char *url_fmt(const char *fmt, ...) _printf_(1, 2);
static char *url_fmt(const char *fmt, ...)
{
	va_list ap;
	char *u;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&u, fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : u;
}

int ccclient_import(struct ccclient *c, const struct ccclient_call *call, char *body, size_t len,
		    ccclient_done_fn cb, void *userdata, char *err, size_t errlen)
{
	if (!body || len == 0) {
		free(body);
		return set_error(err, errlen, -EINVAL, "empty import body");
	}
	return api_start(c, call, OP_IMPORT, "POST",
			 url_fmt("%s/activities/contacts_json_import", c->cfg.api_base), body, len,
			 cb, userdata, err, errlen);
}

int ccclient_remove_from_list(struct ccclient *c, const struct ccclient_call *call,
			      const char *const *contact_ids, size_t n, const char *list_id,
			      ccclient_done_fn cb, void *userdata, char *err, size_t errlen)
{
	char *body = NULL;
	size_t len = 0;
	int r;

	r = ccapi_remove_body(contact_ids, n, &list_id, 1, &body, &len, err, errlen);
	if (r < 0)
		return r;
	return api_start(c, call, OP_REMOVE, "POST",
			 url_fmt("%s/activities/remove_list_memberships", c->cfg.api_base), body,
			 len, cb, userdata, err, errlen);
}

int ccclient_remove_list_members(struct ccclient *c, const struct ccclient_call *call,
				 const char *source_list_id, const char *list_id,
				 ccclient_done_fn cb, void *userdata, char *err, size_t errlen)
{
	char *body = NULL;
	size_t len = 0;
	int r;

	r = ccapi_remove_by_list_body(&source_list_id, 1, &list_id, 1, &body, &len, err, errlen);
	if (r < 0)
		return r;
	return api_start(c, call, OP_REMOVE, "POST",
			 url_fmt("%s/activities/remove_list_memberships", c->cfg.api_base), body,
			 len, cb, userdata, err, errlen);
}

int ccclient_activity_get(struct ccclient *c, const struct ccclient_call *call,
			  const char *activity_id, ccclient_done_fn cb, void *userdata, char *err,
			  size_t errlen)
{
	if (!ccapi_id_valid(activity_id))
		return set_error(err, errlen, -EINVAL, "not a Constant Contact activity id");
	return api_start(c, call, OP_ACTIVITY_GET, "GET",
			 url_fmt("%s/activities/%s", c->cfg.api_base, activity_id), NULL, 0, cb,
			 userdata, err, errlen);
}

static char *page_url(struct ccclient *c, const char *next, const char *first_fmt, ...)
	_printf_(3, 4);
static char *page_url(struct ccclient *c, const char *next, const char *first_fmt, ...)
{
	struct req tmp = { .c = c };
	va_list ap;
	char *u;
	int r;

	if (next) {
		if (next_url(&tmp, next) < 0)
			return NULL;
		return tmp.url;
	}
	va_start(ap, first_fmt);
	r = vasprintf(&u, first_fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : u;
}

int ccclient_activities(struct ccclient *c, const struct ccclient_call *call, const char *next,
			ccclient_done_fn cb, void *userdata, char *err, size_t errlen)
{
	char *url = page_url(c, next, "%s/activities?limit=%d", c->cfg.api_base, CCAPI_PAGE_LIMIT);

	if (!url && next)
		return set_error(err, errlen, -EINVAL, "next link does not belong to the API host");
	return api_start(c, call, OP_ACTIVITIES, "GET", url, NULL, 0, cb, userdata, err, errlen);
}

int ccclient_activity_wait(struct ccclient *c, const struct ccclient_call *call,
			   const char *activity_id, uint32_t timeout_s, ccclient_done_fn cb,
			   void *userdata, char *err, size_t errlen)
{
	uint64_t now = uv_now(c->loop);
	struct conn *cn;
	struct req *w;
	int r;

	if (!ccapi_id_valid(activity_id))
		return set_error(err, errlen, -EINVAL, "not a Constant Contact activity id");
	r = check_call(c, call, &cn, err, errlen);
	if (r < 0)
		return r;
	w = req_new(c, cn, call, OP_WAIT);
	if (!w)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	w->cb = cb;
	w->userdata = userdata;
	memcpy(w->activity_id, activity_id, sizeof(w->activity_id));
	w->deadline_ms = now + (uint64_t)(timeout_s ? timeout_s : c->cfg.activity_timeout_s) * 1000;
	w->delay_ms = c->cfg.poll_initial_ms;
	w->state = R_WAITER;
	list_add_tail(&cn->waiters, &w->q);
	if (waiter_arm(w, now + w->delay_ms) < 0) {
		detach(w);
		list_del(&w->all);
		req_free(w);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	return 0;
}

int ccclient_list_get(struct ccclient *c, const struct ccclient_call *call, const char *list_id,
		      ccclient_done_fn cb, void *userdata, char *err, size_t errlen)
{
	if (!ccapi_id_valid(list_id))
		return set_error(err, errlen, -EINVAL,
				 "not a Constant Contact list id (a UUID such as "
				 "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a)");
	return api_start(c, call, OP_LIST_GET, "GET",
			 url_fmt("%s/contact_lists/%s?include_membership_count=all",
				 c->cfg.api_base, list_id),
			 NULL, 0, cb, userdata, err, errlen);
}

int ccclient_lists(struct ccclient *c, const struct ccclient_call *call, ccclient_done_fn cb,
		   void *userdata, char *err, size_t errlen)
{
	return api_start(c, call, OP_LISTS, "GET",
			 url_fmt("%s/contact_lists?limit=%d&include_membership_count=all",
				 c->cfg.api_base, CCAPI_PAGE_LIMIT),
			 NULL, 0, cb, userdata, err, errlen);
}

int ccclient_list_create(struct ccclient *c, const struct ccclient_call *call, const char *name,
			 const char *description, ccclient_done_fn cb, void *userdata, char *err,
			 size_t errlen)
{
	char *body = NULL;
	size_t len = 0;
	int r;

	r = ccapi_list_create_body(name, description, &body, &len, err, errlen);
	if (r < 0)
		return r;
	return api_start(c, call, OP_LIST_CREATE, "POST", url_fmt("%s/contact_lists", c->cfg.api_base),
			 body, len, cb, userdata, err, errlen);
}

int ccclient_list_find(struct ccclient *c, const struct ccclient_call *call, const char *name,
		       ccclient_done_fn cb, void *userdata, char *err, size_t errlen)
{
	_cleanup_free_ char *e = NULL;

	if (!name || !*name || !utf8_valid(name, strlen(name)))
		return set_error(err, errlen, -EINVAL, "not a list name");
	e = ccapi_url_escape(name);
	if (!e)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	return api_start(c, call, OP_LISTS, "GET",
			 url_fmt("%s/contact_lists?name=%s&limit=%d&include_membership_count=all",
				 c->cfg.api_base, e, CCAPI_PAGE_LIMIT),
			 NULL, 0, cb, userdata, err, errlen);
}

int ccclient_contacts_by_list(struct ccclient *c, const struct ccclient_call *call,
			      const char *list_id, const char *next, ccclient_done_fn cb,
			      void *userdata, char *err, size_t errlen)
{
	char *url;

	if (!ccapi_id_valid(list_id))
		return set_error(err, errlen, -EINVAL, "not a Constant Contact list id");
	url = page_url(c, next, "%s/contacts?lists=%s&status=all&limit=%d", c->cfg.api_base,
		       list_id, CCAPI_PAGE_LIMIT);
	if (!url && next)
		return set_error(err, errlen, -EINVAL, "next link does not belong to the API host");
	return api_start(c, call, OP_CONTACTS, "GET", url, NULL, 0, cb, userdata, err, errlen);
}

int ccclient_contact_by_email(struct ccclient *c, const struct ccclient_call *call,
			      const char *email, ccclient_done_fn cb, void *userdata, char *err,
			      size_t errlen)
{
	_cleanup_free_ char *e = NULL;

	if (!email || !*email || strlen(email) > 320 || !utf8_valid(email, strlen(email)))
		return set_error(err, errlen, -EINVAL, "not an email address");
	e = ccapi_url_escape(email);
	if (!e)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	return api_start(c, call, OP_CONTACTS, "GET",
			 url_fmt("%s/contacts?email=%s&status=all", c->cfg.api_base, e), NULL, 0,
			 cb, userdata, err, errlen);
}

int ccclient_custom_fields(struct ccclient *c, const struct ccclient_call *call,
			   ccclient_done_fn cb, void *userdata, char *err, size_t errlen)
{
	return api_start(c, call, OP_CUSTOM_FIELDS, "GET",
			 url_fmt("%s/contact_custom_fields?limit=100", c->cfg.api_base), NULL, 0,
			 cb, userdata, err, errlen);
}

/* ------------------------------------------------------------------ public: authorization */

int ccclient_device_authorize(struct ccclient *c, const struct ccclient_call *call,
			      ccclient_device_fn on_code, ccclient_done_fn on_done, void *userdata,
			      char *err, size_t errlen)
{
	struct conn *cn;
	char *form = NULL;
	struct req *r;
	int ret;

	ret = call_conn(c, call, &cn, err, errlen);
	if (ret < 0)
		return ret;
	if (cn->flow != STORE_AUTH_FLOW_DEVICE)
		return set_error(err, errlen, -EINVAL,
				 "connection '%s' is set up for the '%s' flow, not 'device'",
				 cn->name, store_auth_flow_to_string(cn->flow));
	if (cn->device)
		return set_error(err, errlen, -EBUSY,
				 "a device authorization of connection '%s' is already waiting for "
				 "approval", cn->name);
	r = token_req_new(cn, call, OP_DEVICE, "device/authorize");
	if (!r)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	ret = ccapi_form_add(&form, "client_id", cn->client_id);
	if (ret >= 0)
		ret = ccapi_form_add(&form, "scope", CCAPI_OAUTH_SCOPE);
	if (ret < 0) {
		free(form);
		list_del(&r->all);
		req_free(r);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	r->basic_auth = false; /* device flow apps are public clients */
	r->body = form;
	r->body_len = strlen(form);
	r->on_code = on_code;
	r->cb = on_done;
	r->userdata = userdata;
	cn->device = r;
	requeue(r, false);
	return 0;
}

int ccclient_authorize_url(struct ccclient *c, int64_t connection_id, const char *redirect_uri,
			   char **ret_url, char *err, size_t errlen)
{
	char verifier[CCAPI_PKCE_VERIFIER_LEN + 1], state[CCAPI_STATE_LEN + 1];
	char challenge[CCAPI_PKCE_CHALLENGE_LEN + 1];
	_cleanup_free_ char *secret = NULL;
	char *url = NULL, *v = NULL, *s = NULL, *ru = NULL;
	struct conn *cn;
	bool pkce;
	int r;

	r = conn_open(c, connection_id, &cn, err, errlen);
	if (r < 0)
		return r;
	if (cn->flow == STORE_AUTH_FLOW_DEVICE)
		return set_error(err, errlen, -EINVAL,
				 "connection '%s' is set up for the 'device' flow, which needs no "
				 "redirect URL", cn->name);
	pkce = cn->flow == STORE_AUTH_FLOW_PKCE;
	if (!pkce) {
		/* Fail now rather than after the user has approved in the browser. */
		r = read_client_secret(c, &secret, err, errlen);
		if (r < 0)
			return r;
		explicit_bzero(secret, strlen(secret));
	}
	r = ccapi_random_token(state, CCAPI_STATE_LEN);
	if (r >= 0 && pkce)
		r = ccapi_random_token(verifier, CCAPI_PKCE_VERIFIER_LEN);
	if (r < 0)
		return set_error(err, errlen, r, "cannot get random bytes: %s", strerror(-r));
	if (pkce)
		ccapi_pkce_challenge(verifier, challenge);
	r = ccapi_authorize_url(c->cfg.auth_base, cn->client_id, redirect_uri, state,
				pkce ? challenge : NULL, &url, err, errlen);
	if (r >= 0) {
		v = pkce ? strdup(verifier) : NULL;
		s = strdup(state);
		ru = strdup(redirect_uri);
		if ((pkce && !v) || !s || !ru)
			r = set_error(err, errlen, -ENOMEM, "out of memory");
	}
	explicit_bzero(verifier, sizeof(verifier));
	explicit_bzero(state, sizeof(state));
	if (r < 0) {
		wipe_free(v);
		wipe_free(s);
		free(ru);
		free(url);
		return r;
	}
	conn_clear_pending(cn);
	cn->pending_verifier = v;
	cn->pending_state = s;
	cn->pending_redirect = ru;
	cn->pending_expires_at = store_now() + c->opt.pending_auth_ttl_s;
	*ret_url = url;
	return 0;
}

int ccclient_authorize_finish(struct ccclient *c, const struct ccclient_call *call,
			      const char *redirect_url, ccclient_done_fn cb, void *userdata,
			      char *err, size_t errlen)
{
	_cleanup_free_ char *code = NULL;
	char *form = NULL;
	struct conn *cn;
	struct req *r;
	int ret;

	ret = call_conn(c, call, &cn, err, errlen);
	if (ret < 0)
		return ret;
	if (!cn->pending_state || store_now() >= cn->pending_expires_at) {
		conn_clear_pending(cn);
		return set_error(err, errlen, -ENOENT,
				 "no authorization of connection '%s' is pending (or it expired): "
				 "ask for a new authorize URL first", cn->name);
	}
	ret = ccapi_redirect_parse(redirect_url, cn->pending_state, &code, err, errlen);
	if (ret == -EACCES)
		conn_clear_pending(cn); /* the user said no: this state is spent */
	if (ret < 0)
		return ret;
	r = token_req_new(cn, call, OP_CODE, "token");
	ret = r ? token_form_start(cn, &form) : -ENOMEM;
	if (ret >= 0)
		ret = ccapi_form_add(&form, "grant_type", "authorization_code");
	if (ret >= 0)
		ret = ccapi_form_add(&form, "code", code);
	if (ret >= 0)
		ret = ccapi_form_add(&form, "redirect_uri", cn->pending_redirect);
	if (ret >= 0 && cn->pending_verifier)
		ret = ccapi_form_add(&form, "code_verifier", cn->pending_verifier);
	explicit_bzero(code, strlen(code));
	if (ret < 0) {
		wipe_free(form);
		if (r) {
			list_del(&r->all);
			req_free(r);
		}
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	conn_clear_pending(cn); /* codes and verifiers are single-use */
	r->body = form;
	r->body_len = strlen(form);
	r->cb = cb;
	r->userdata = userdata;
	requeue(r, false);
	return 0;
}

/* ------------------------------------------------------------------ public: status */

static void usage_from_key(struct key *k, struct ccclient_usage *u)
{
	int64_t now = store_now();
	size_t q = 0;

	(void)ratelimit_budget_roll(&k->budget, now);
	for (struct link *l = k->api_q.next; l != &k->api_q; l = l->next)
		q++;
	for (struct link *l = k->token_q.next; l != &k->token_q; l = l->next)
		q++;
	*u = (struct ccclient_usage){
		.used_today = k->budget.used,
		.budget = k->budget.limit,
		.left = ratelimit_budget_left(&k->budget, now),
		.paused_until =
			ratelimit_budget_paused(&k->budget, now) ? k->budget.paused_until : 0,
		.queued = q,
		.in_flight = k->in_flight,
	};
}

int ccclient_usage(struct ccclient *c, const char *client_id, struct ccclient_usage *ret)
{
	struct ratelimit_budget b;
	struct store_auth_usage u;
	int64_t now = store_now(), day;
	int r;

	for (struct key *k = c->keys; k; k = k->next)
		if (streq(k->client_id, client_id)) {
			usage_from_key(k, ret);
			return 0;
		}
	ratelimit_budget_init(&b, c->cfg.daily_request_budget, now);
	r = store_auth_get_usage(c->store, client_id, &u);
	if (r < 0 && r != -ENOENT)
		return r;
	if (r >= 0 && ratelimit_day_parse(u.day, &day) >= 0) {
		b.day = day;
		b.used = u.requests;
		b.paused_until = u.paused_until;
		(void)ratelimit_budget_roll(&b, now);
	}
	*ret = (struct ccclient_usage){
		.used_today = b.used,
		.budget = b.limit,
		.left = ratelimit_budget_left(&b, now),
		.paused_until = ratelimit_budget_paused(&b, now) ? b.paused_until : 0,
	};
	return 0;
}

int ccclient_usage_for_connection(struct ccclient *c, int64_t connection_id,
				  struct ccclient_usage *ret)
{
	struct store_auth_connection sc = { 0 };
	struct conn *cn = conn_find(c, connection_id);
	int r;

	if (cn)
		return ccclient_usage(c, cn->client_id, ret);
	r = store_auth_get_connection(c->store, connection_id, &sc);
	if (r < 0)
		return r;
	r = ccclient_usage(c, sc.client_id, ret);
	store_auth_connection_done(&sc);
	return r;
}
