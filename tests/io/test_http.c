/* SPDX-License-Identifier: MIT */
/*
 * The HTTP engine on a real libuv loop against the fake Constant Contact over HTTPS: plain
 * requests, keep-alive reuse, TLS verification (wrong CA), https-only, no redirects (and no
 * token sent to the redirect target), response cap, timeouts, dropped connections, cancellation
 * and shutdown with transfers in flight. Every test ends with uv_loop_close() == 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "ccfake.h"
#include "http.h"

static struct fake fake;
static char token_header[8192];

struct done {
	bool done;
	int calls;
	int error;
	long status;
	char body[4096];
	char curl_error[256];
};

static void on_done(const struct http_result *res, void *userdata)
{
	struct done *d = userdata;

	d->calls++;
	d->done = true;
	d->error = res->error;
	d->status = res->status;
	snprintf(d->body, sizeof(d->body), "%s", res->body);
	snprintf(d->curl_error, sizeof(d->curl_error), "%s", res->curl_error);
}

struct resubmit {
	struct done d;
	struct http_engine *e;
	int submit_result;
};

/* A callback run by http_engine_close that tries to start new work. */
static void on_done_resubmit(const struct http_result *res, void *userdata)
{
	struct resubmit *rs = userdata;
	struct http_request req = { .method = "GET", .url = "https://127.0.0.1/" };
	char err[256];

	on_done(res, &rs->d);
	rs->submit_result = http_submit(rs->e, &req, on_done, &rs->d, NULL, err, sizeof(err));
}

static int group_setup(void **state)
{
	json_t *t;

	(void)state;
	fake_start(&fake, NULL);
	/* The engine has no rate limiter of its own (ccclient does): the fake's 4 rps would only
	 * add 429s to tests about transport behaviour. */
	json_decref(fake_ok(&fake, "POST", "/_fake/config", "{\"limits_enabled\":false}"));
	t = fake_ok(&fake, "POST", "/_fake/tokens", "{\"client_id\":\"test-client\"}");
	snprintf(token_header, sizeof(token_header), "Authorization: Bearer %s",
		 json_string_value(json_object_get(t, "access_token")));
	json_decref(t);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	fake_stop(&fake);
	return 0;
}

static int setup(void **state)
{
	(void)state;
	json_decref(fake_ok(&fake, "DELETE", "/_fake/faults", NULL));
	json_decref(fake_ok(&fake, "POST", "/_fake/stats/reset", "{}"));
	return 0;
}

static struct http_engine *engine(uv_loop_t *loop, const char *ca_file, size_t max_bytes)
{
	struct http_options o = { .ca_file = ca_file, .max_response_bytes = max_bytes,
				  .timeout_ms = 30000 };
	struct http_engine *e = NULL;
	char err[256];

	assert_int_equal(uv_loop_init(loop), 0);
	assert_int_equal(http_engine_new(loop, &o, &e, err, sizeof(err)), 0);
	return e;
}

static void get(struct http_engine *e, uv_loop_t *loop, const char *path, struct done *d,
		uint32_t timeout_ms)
{
	const char *headers[] = { token_header, "Accept: application/json", NULL };
	struct http_request req = { .method = "GET", .headers = headers,
				    .timeout_ms = timeout_ms };
	char url[512], err[256];

	snprintf(url, sizeof(url), "%s%s", fake.base, path);
	req.url = url;
	memset(d, 0, sizeof(*d));
	assert_int_equal(http_submit(e, &req, on_done, d, NULL, err, sizeof(err)), 0);
	/* Never synchronous. */
	assert_int_equal(d->calls, 0);
	fake_run_until(loop, &d->done);
}

static void finish(struct http_engine *e, uv_loop_t *loop)
{
	http_engine_close(e, NULL, NULL);
	assert_int_equal(fake_loop_finish(loop), 0);
}

static void test_get_and_keepalive(void **state)
{
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	struct done d;
	json_t *stats;

	(void)state;
	for (int i = 0; i < 5; i++) {
		get(e, &loop, "/v3/contact_lists?limit=10", &d, 0);
		assert_int_equal(d.error, 0);
		assert_int_equal(d.status, 200);
		assert_non_null(strstr(d.body, "\"lists\""));
		assert_int_equal(d.calls, 1);
	}
	/* Five sequential requests, one TCP+TLS connection. */
	assert_int_equal(http_engine_connects(e), 1);
	assert_int_equal(http_engine_active(e), 0);
	stats = fake_ok(&fake, "GET", "/_fake/stats", NULL);
	assert_int_equal(fake_int(stats, "requests_by_kind/lists"), 5);
	json_decref(stats);
	finish(e, &loop);
}

static void test_parallel(void **state)
{
	const char *headers[] = { token_header, NULL };
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	struct done d[12];
	char url[512], err[256];
	bool all = false;

	(void)state;
	snprintf(url, sizeof(url), "%s/v3/contact_custom_fields", fake.base);
	memset(d, 0, sizeof(d));
	for (int i = 0; i < 12; i++) {
		struct http_request req = { .method = "GET", .url = url, .headers = headers };

		assert_int_equal(http_submit(e, &req, on_done, &d[i], NULL, err, sizeof(err)), 0);
	}
	assert_int_equal(http_engine_active(e), 12);
	while (!all) {
		assert_true(uv_run(&loop, UV_RUN_ONCE) || true);
		all = true;
		for (int i = 0; i < 12; i++)
			all = all && d[i].done;
	}
	for (int i = 0; i < 12; i++) {
		assert_int_equal(d[i].calls, 1);
		assert_int_equal(d[i].status, 200);
	}
	finish(e, &loop);
}

static void test_post_body(void **state)
{
	const char *headers[] = { "Content-Type: application/json", NULL };
	const char body[] = "{\"name\":\"http-test-list\"}";
	struct http_request req = { .method = "POST", .headers = headers, .body = body,
				    .body_len = sizeof(body) - 1 };
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	char url[512], err[256];
	struct done d = { 0 };
	json_t *j;

	(void)state;
	snprintf(url, sizeof(url), "%s/_fake/lists", fake.base);
	req.url = url;
	assert_int_equal(http_submit(e, &req, on_done, &d, NULL, err, sizeof(err)), 0);
	fake_run_until(&loop, &d.done);
	assert_int_equal(d.error, 0);
	assert_int_equal(d.status, 201);
	j = json_loads(d.body, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "name")), "http-test-list");
	json_decref(j);
	finish(e, &loop);
}

static void test_wrong_ca(void **state)
{
	uv_loop_t loop;
	struct http_engine *e;
	struct done d;

	(void)state;
	/* The system trust store does not know the fake's private CA. */
	e = engine(&loop, NULL, 0);
	get(e, &loop, "/v3/contact_lists", &d, 0);
	assert_int_equal(d.error, -EPROTO);
	assert_int_equal(d.status, 0);
	assert_non_null(strstr(d.curl_error, "certificate"));
	finish(e, &loop);
	/* Neither does an unrelated CA bundle. */
	e = engine(&loop, "/etc/ssl/certs/ca-certificates.crt", 0);
	get(e, &loop, "/v3/contact_lists", &d, 0);
	assert_int_equal(d.error, -EPROTO);
	finish(e, &loop);
}

static void test_https_only(void **state)
{
	struct http_request req = { .method = "GET", .url = "http://127.0.0.1:1/v3" };
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	struct done d = { 0 };
	char err[256];

	(void)state;
	assert_int_equal(http_submit(e, &req, on_done, &d, NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "https"));
	req.url = "ftp://127.0.0.1/x";
	assert_int_equal(http_submit(e, &req, on_done, &d, NULL, err, sizeof(err)), -EINVAL);
	req.url = "https://127.0.0.1/x";
	req.method = "TRACE";
	assert_int_equal(http_submit(e, &req, on_done, &d, NULL, err, sizeof(err)), -EINVAL);
	assert_int_equal(d.calls, 0);
	finish(e, &loop);
}

static void test_redirect_not_followed(void **state)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	char path[512];
	struct done d;
	int lfd, cfd;
	json_t *stats;

	(void)state;
	/* Another host (same address, other port): it must see no connection at all. */
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	/* The fake's authorize endpoint answers 302 to the redirect_uri. */
	snprintf(path, sizeof(path),
		 "/oauth2/default/v1/authorize?client_id=test-client&response_type=code&"
		 "scope=contact_data&state=s&"
		 "redirect_uri=https%%3A%%2F%%2F127.0.0.1%%3A%d%%2Fsteal",
		 ntohs(sa.sin_port));
	get(e, &loop, path, &d, 0);
	assert_int_equal(d.error, 0);
	assert_int_equal(d.status, 302);
	cfd = accept(lfd, NULL, NULL);
	assert_int_equal(cfd, -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	close(lfd);
	/* Same host, other path: not followed either (no second request with our token). */
	get(e, &loop,
	    "/oauth2/default/v1/authorize?client_id=test-client&response_type=code&state=s&"
	    "redirect_uri=https%3A%2F%2F127.0.0.1%2Fv3%2Fcontact_lists", &d, 0);
	assert_int_equal(d.status, 302);
	stats = fake_ok(&fake, "GET", "/_fake/stats", NULL);
	assert_int_equal(fake_int(stats, "requests_by_kind/authorize"), 2);
	assert_int_equal(fake_int(stats, "requests_by_kind/lists"), 0);
	json_decref(stats);
	finish(e, &loop);
}

static void test_response_cap(void **state)
{
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 256);
	struct done d;
	json_t *cfg = fake_ok(&fake, "GET", "/_fake/config", NULL);
	char *dump = json_dumps(cfg, JSON_COMPACT);

	(void)state;
	assert_true(strlen(dump) > 256);
	free(dump);
	json_decref(cfg);
	get(e, &loop, "/_fake/config", &d, 0);
	assert_int_equal(d.error, -EFBIG);
	assert_non_null(strstr(d.curl_error, "256"));
	finish(e, &loop);
}

static void test_timeout(void **state)
{
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	struct done d;

	(void)state;
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"latency_ms\":{\"ms\":3000}}"));
	get(e, &loop, "/v3/contact_lists", &d, 300);
	assert_int_equal(d.error, -ETIMEDOUT);
	assert_int_equal(d.calls, 1);
	finish(e, &loop);
}

static void test_dropped_connection(void **state)
{
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	struct done d;

	(void)state;
	json_decref(fake_ok(&fake, "POST", "/_fake/faults",
			    "{\"drop_connections\":{\"count\":1}}"));
	get(e, &loop, "/v3/contact_lists", &d, 0);
	assert_int_equal(d.error, -ECONNRESET);
	assert_int_equal(d.status, 0);
	/* The engine carries on with a new connection. */
	get(e, &loop, "/v3/contact_lists", &d, 0);
	assert_int_equal(d.error, 0);
	assert_int_equal(d.status, 200);
	finish(e, &loop);
}

static void test_cancel_and_close_in_flight(void **state)
{
	const char *headers[] = { token_header, NULL };
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	struct http_request req = { .method = "GET", .headers = headers };
	struct http_transfer *t = NULL;
	struct done a = { 0 };
	struct resubmit b = { .e = e };
	char url[512], err[256];

	(void)state;
	json_decref(fake_ok(&fake, "POST", "/_fake/faults", "{\"latency_ms\":{\"ms\":2000}}"));
	snprintf(url, sizeof(url), "%s/v3/contact_lists", fake.base);
	req.url = url;
	assert_int_equal(http_submit(e, &req, on_done, &a, &t, err, sizeof(err)), 0);
	assert_int_equal(http_submit(e, &req, on_done_resubmit, &b, NULL, err, sizeof(err)), 0);
	/* Let both get onto the wire. */
	for (int i = 0; i < 20; i++)
		(void)uv_run(&loop, UV_RUN_NOWAIT);
	http_cancel(t);
	assert_int_equal(http_engine_active(e), 1);
	/* Closing completes what is left with -ECANCELED, exactly once, before returning. */
	http_engine_close(e, NULL, NULL);
	assert_int_equal(b.d.calls, 1);
	assert_int_equal(b.d.error, -ECANCELED);
	assert_int_equal(b.submit_result, -ESHUTDOWN);
	assert_int_equal(fake_loop_finish(&loop), 0);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.d.calls, 1);
}

static void on_closed(void *ud)
{
	*(bool *)ud = true;
}

static void test_close_callback(void **state)
{
	uv_loop_t loop;
	struct http_engine *e = engine(&loop, fake.ca_file, 0);
	bool closed = false;

	(void)state;
	http_engine_close(e, on_closed, &closed);
	assert_false(closed); /* freed only after the close callbacks */
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_true(closed);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_get_and_keepalive, setup),
		cmocka_unit_test_setup(test_parallel, setup),
		cmocka_unit_test_setup(test_post_body, setup),
		cmocka_unit_test_setup(test_wrong_ca, setup),
		cmocka_unit_test_setup(test_https_only, setup),
		cmocka_unit_test_setup(test_redirect_not_followed, setup),
		cmocka_unit_test_setup(test_response_cap, setup),
		cmocka_unit_test_setup(test_timeout, setup),
		cmocka_unit_test_setup(test_dropped_connection, setup),
		cmocka_unit_test_setup(test_cancel_and_close_in_flight, setup),
		cmocka_unit_test_setup(test_close_callback, setup),
	};

	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
