/* SPDX-License-Identifier: MIT */
/*
 * The control server on a real loop, a real socket and a real database, with fake ops standing
 * in for the runner, the Constant Contact client and the importer. A client thread speaks raw
 * protocol lines with blocking I/O while the test thread runs the loop; the loop ends when the
 * client is done and every handle is closed, and must then close cleanly (uv_loop_close == 0),
 * which together with ASan proves that abandoned calls and departed clients leave nothing behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <uv.h>
#include <cmocka.h>

#include "../unit/test-helpers.h"
#include "config.h"
#include "control.h"
#include "ctlproto.h"
#include "store-config.h"
#include "store-internal.h"
#include "store.h"
#include "util.h"

#define LIST_ID "0b1c3f4a-8a51-11ee-9f4c-fa163e0b7c29"
#define MAX_LINES 4096

struct fixture;

/* What the client thread does: send `send` (any number of lines), read `expect` lines (or to
 * EOF when expect is 0), optionally hang up after `hangup_after` lines; then run `then`. */
struct script {
	const char *send;
	size_t expect;
	size_t hangup_after;
	bool no_read;	     /* send, wait for the loop's go-ahead, then read up to the reply */
	const char *then_send; /* a second connection afterwards */
	size_t then_expect;
};

struct fixture {
	struct tmpdir dir;
	char db[PATH_MAX];
	struct config cfg;
	struct store *store;
	uv_loop_t loop;
	uv_async_t done_async;
	uv_async_t go_async;
	uv_timer_t timer;
	struct control_server srv;
	struct control_ops ops;
	pthread_t thread;
	struct script script;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool go;
	/* what the client saw */
	char *lines[MAX_LINES];
	size_t n_lines;
	char *lines2[16];
	size_t n_lines2;
	bool saw_eof;
	/* what the fake ops saw */
	struct control_call *held;
	int deferred_r;
	json_t *deferred_result;
	int abandoned;
	int progress_after_abandon;
	int dropped_at;
	int64_t removed_connection;
	int config_changed;
	int import_aborts;
	struct fake_import *import;
};

struct fake_import {
	size_t bytes;
	size_t newlines;
};

static void exec(struct fixture *f, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(store_db(f->store), sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
}

static int64_t query_int(struct fixture *f, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v = -1;

	assert_int_equal(sqlite3_prepare_v2(store_db(f->store), sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	tmpdir_make(&f->dir);
	tmpdir_file(&f->dir, "ccsync.db", f->db, sizeof(f->db));
	config_init(&f->cfg);
	tmpdir_file(&f->dir, "control.sock", f->cfg.control_socket, sizeof(f->cfg.control_socket));
	if (store_open(f->db, STORE_OPEN_CREATE, 1000, &f->store, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	/* One consented connection with tokens, one export, data the export checks refer to. */
	exec(f, "INSERT INTO profiles (profile_id, attributes) VALUES "
		"('p1', '{\"email\":\"a@example.com\",\"first\":\"A\"}');"
		"INSERT INTO segments (name) VALUES ('s');"
		"INSERT INTO connections (name, client_id, consent_by, consent_uid, consent_at) "
		"VALUES ('c', 'key', 'alice', 1001, 1);"
		"INSERT INTO connection_tokens (connection_id, access_token, refresh_token) "
		"VALUES (1, 'AT', 'RT');"
		"INSERT INTO exports (name, connection_id, list_id, email_field) "
		"VALUES ('e1', 1, '" LIST_ID "', 'email');"
		"INSERT INTO export_segments VALUES (1, 1);");
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	for (size_t i = 0; i < f->n_lines; i++)
		free(f->lines[i]);
	for (size_t i = 0; i < f->n_lines2; i++)
		free(f->lines2[i]);
	json_decref(f->deferred_result);
	store_free(f->store);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	tmpdir_remove(&f->dir);
	free(f);
	return 0;
}

/* ---- the client thread ---- */

static int client_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		abort(); /* cmocka's asserts are not for other threads */
	return fd;
}

static void client_send(int fd, const char *text)
{
	size_t len = strlen(text);

	while (len > 0) {
		ssize_t n = send(fd, text, len, MSG_NOSIGNAL);

		if (n <= 0)
			return; /* the server may hang up first; what it said is still readable */
		text += n;
		len -= (size_t)n;
	}
}

/* Reads lines into out until max lines, EOF or (stop_at_final) a line that is not progress;
 * returns the count, sets *eof. */
static size_t client_read(int fd, char **out, size_t max, bool stop_at_final, bool *eof)
{
	struct ctlproto_framer fr;
	size_t n = 0;

	ctlproto_framer_init(&fr);
	*eof = false;
	while (n < max) {
		const char *line;
		size_t len, avail;
		char *p;
		ssize_t got;

		if (ctlproto_framer_next(&fr, &line, &len) == 1) {
			/* not strndup: the line is not NUL-terminated, and ASan's strict string
			 * checks hold that against strndup */
			out[n] = malloc(len + 1);
			memcpy(out[n], line, len);
			out[n++][len] = '\0';
			if (stop_at_final && !strstr(out[n - 1], "\"progress\":"))
				break;
			continue;
		}
		p = ctlproto_framer_space(&fr, 65536, &avail);
		got = recv(fd, p, avail, 0);
		if (got <= 0) {
			*eof = true;
			break;
		}
		ctlproto_framer_commit(&fr, (size_t)got);
	}
	ctlproto_framer_done(&fr);
	return n;
}

static void *client_main(void *p)
{
	struct fixture *f = p;
	int fd = client_connect(f->cfg.control_socket);
	size_t want;

	client_send(fd, f->script.send);
	if (f->script.no_read) {
		/* Let the server fill its output while we are not reading. */
		pthread_mutex_lock(&f->lock);
		while (!f->go)
			pthread_cond_wait(&f->cond, &f->lock);
		pthread_mutex_unlock(&f->lock);
	}
	want = f->script.hangup_after ? f->script.hangup_after :
	       f->script.expect ? f->script.expect : MAX_LINES;
	f->n_lines = client_read(fd, f->lines, want, f->script.no_read, &f->saw_eof);
	close(fd);
	if (f->script.then_send) {
		bool eof;

		fd = client_connect(f->cfg.control_socket);
		client_send(fd, f->script.then_send);
		f->n_lines2 = client_read(fd, f->lines2, f->script.then_expect, false, &eof);
		close(fd);
	}
	uv_async_send(&f->done_async);
	return NULL;
}

/* ---- the loop side ---- */

static void on_done(uv_async_t *a)
{
	struct fixture *f = a->data;

	control_server_close(&f->srv);
	uv_close((uv_handle_t *)&f->done_async, NULL);
	uv_close((uv_handle_t *)&f->go_async, NULL);
	if (!uv_is_closing((uv_handle_t *)&f->timer))
		uv_close((uv_handle_t *)&f->timer, NULL);
}

static void on_go(uv_async_t *a)
{
	(void)a;
}

static void run(struct fixture *f, const struct script *s)
{
	char err[256] = "";

	f->script = *s;
	f->ops.ctx = f;
	assert_int_equal(uv_async_init(&f->loop, &f->done_async, on_done), 0);
	assert_int_equal(uv_async_init(&f->loop, &f->go_async, on_go), 0);
	assert_int_equal(uv_timer_init(&f->loop, &f->timer), 0);
	f->done_async.data = f->timer.data = f;
	if (control_server_start(&f->srv, &f->loop, &f->cfg, f->store, &f->ops, err,
				 sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(pthread_create(&f->thread, NULL, client_main, f), 0);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(pthread_join(f->thread, NULL), 0);
	assert_null(f->held); /* every call an op took was completed */
	assert_int_equal(f->srv.n_calls, 0);
	assert_int_equal(f->srv.n_clients, 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
}

static json_t *line_json(const char *line)
{
	json_t *v = json_loads(line, 0, NULL);

	if (!v)
		fail_msg("not JSON: %s", line);
	return v;
}

/* Asserts that line is the final reply of id: ok (code NULL) or an error with that code. */
static void assert_reply(const char *line, int64_t id, const char *code)
{
	json_t *v = line_json(line);
	json_t *jid = json_object_get(v, "id");

	if (id < 0 ? !json_is_null(jid) : json_integer_value(jid) != id)
		fail_msg("wanted id %lld: %s", (long long)id, line);
	if (code) {
		const char *got = json_string_value(json_object_get(json_object_get(v, "error"),
								    "code"));
		if (!got || strcmp(got, code) != 0)
			fail_msg("wanted error %s: %s", code, line);
	} else if (!json_object_get(v, "ok")) {
		fail_msg("wanted ok: %s", line);
	}
	json_decref(v);
}

static bool is_progress(const char *line, int64_t id)
{
	json_t *v = line_json(line);
	bool r = json_object_get(v, "progress") &&
		 json_integer_value(json_object_get(v, "id")) == id;

	json_decref(v);
	return r;
}

static void on_deferred(uv_timer_t *t)
{
	struct fixture *f = t->data;
	struct control_call *call = f->held;

	f->held = NULL;
	if (call)
		control_call_done(call, f->deferred_r, TAKE_PTR(f->deferred_result), "deferred");
}

static void defer(struct fixture *f, struct control_call *call, int r, json_t *result)
{
	f->held = call;
	f->deferred_r = r;
	f->deferred_result = result;
	assert_int_equal(uv_timer_start(&f->timer, on_deferred, 0, 0), 0);
}

/* ---- fake ops ---- */

#define RUN_E1(id)                                                                                 \
	"{\"version\":1,\"id\":" #id ",\"command\":\"run\",\"args\":{\"export\":\"e1\"}}\n"

static int fake_run_streams(void *ctx, struct control_call *call, int64_t export_id,
			    unsigned flags)
{
	struct fixture *f = ctx;

	assert_int_equal(export_id, 1);
	assert_true(flags & CONTROL_RUN_FOLLOW);
	assert_true(flags & CONTROL_RUN_DRY_RUN);
	assert_string_equal(control_call_peer(call)->user_name, "root");
	assert_int_equal(control_call_progress(call, json_pack("{s:i}", "sent", 1)), 0);
	assert_int_equal(control_call_progress(call, json_pack("{s:i}", "sent", 2)), 0);
	defer(f, call, 0, json_pack("{s:i, s:s}", "run_id", 7, "state", "succeeded"));
	return 0;
}

static void test_pipelined_requests_answered_in_order(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		.send = "{\"version\":1,\"id\":1,\"command\":\"run\",\"args\":{\"export\":\"e1\","
			"\"follow\":true,\"dry_run\":true}}\n"
			"{\"version\":1,\"id\":2,\"command\":\"whoami\"}\n"
			"\n"
			"{\"version\":1,\"id\":3,\"command\":\"status\"}\n"
			"{\"version\":1,\"id\":4,\"command\":\"export.show\","
			"\"args\":{\"export\":\"e1\"}}\n",
		.expect = 6,
	};

	f->ops.run_export = fake_run_streams;
	run(f, &s);
	assert_int_equal(f->n_lines, 6);
	assert_true(is_progress(f->lines[0], 1));
	assert_true(is_progress(f->lines[1], 1));
	assert_reply(f->lines[2], 1, NULL);
	assert_reply(f->lines[3], 2, NULL);
	assert_reply(f->lines[4], 3, "not_supported"); /* no status op: said, not faked */
	assert_reply(f->lines[5], 4, NULL);
	/* the run request was audited with who asked */
	assert_int_equal(query_int(f, "SELECT count(*) FROM audit_log WHERE action = 'run' AND "
				   "user_name = 'root' AND object_id = '1'"), 1);
}

static int fake_run_holds(void *ctx, struct control_call *call, int64_t export_id, unsigned flags)
{
	struct fixture *f = ctx;

	assert_int_equal(control_call_progress(call, json_pack("{s:i}", "sent", 1)), 0);
	f->held = call;
	return 0;
}

static void fake_abandoned(void *ctx, struct control_call *call)
{
	struct fixture *f = ctx;

	assert_ptr_equal(call, f->held);
	assert_true(control_call_abandoned(call));
	f->abandoned++;
	if (control_call_progress(call, json_pack("{s:i}", "sent", 2)) == -ECONNRESET)
		f->progress_after_abandon++;
	f->held = NULL;
	control_call_done(call, 0, json_pack("{s:i}", "run_id", 7), NULL);
}

static void test_disconnect_mid_stream(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		.send = "{\"version\":1,\"id\":1,\"command\":\"run\",\"args\":{\"export\":\"e1\","
			"\"follow\":true}}\n",
		.hangup_after = 1,
		.then_send = "{\"version\":1,\"id\":9,\"command\":\"whoami\"}\n",
		.then_expect = 1,
	};

	f->ops.run_export = fake_run_holds;
	f->ops.call_abandoned = fake_abandoned;
	run(f, &s);
	assert_int_equal(f->n_lines, 1);
	assert_true(is_progress(f->lines[0], 1));
	assert_int_equal(f->abandoned, 1);
	assert_int_equal(f->progress_after_abandon, 1);
	/* and the daemon kept serving */
	assert_int_equal(f->n_lines2, 1);
	assert_reply(f->lines2[0], 9, NULL);
}

static void on_close_server(uv_timer_t *t)
{
	struct fixture *f = t->data;

	control_server_close(&f->srv);
}

static int fake_run_then_close(void *ctx, struct control_call *call, int64_t export_id,
			       unsigned flags)
{
	struct fixture *f = ctx;

	f->held = call;
	assert_int_equal(uv_timer_start(&f->timer, on_close_server, 0, 0), 0);
	return 0;
}

static void test_server_close_abandons_calls(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		.send = RUN_E1(1),
	};
	struct stat st;

	f->ops.run_export = fake_run_then_close;
	f->ops.call_abandoned = fake_abandoned;
	run(f, &s);
	assert_int_equal(f->abandoned, 1);
	assert_int_equal(f->n_lines, 0); /* no reply: the server went away */
	assert_true(f->saw_eof);
	/* the socket file we bound is gone */
	assert_int_equal(stat(f->cfg.control_socket, &st), -1);
}

static int fake_run_floods(void *ctx, struct control_call *call, int64_t export_id,
			   unsigned flags)
{
	struct fixture *f = ctx;
	char blob[4096];

	memset(blob, 'x', sizeof(blob) - 1);
	blob[sizeof(blob) - 1] = '\0';
	/* The client does not read: progress must be dropped once output backs up, long before
	 * memory grows with it. */
	for (int i = 0; i < 100000; i++) {
		int r = control_call_progress(call, json_pack("{s:i, s:s}", "i", i, "blob", blob));

		if (r == -ENOBUFS) {
			f->dropped_at = i;
			break;
		}
		assert_int_equal(r, 0);
	}
	defer(f, call, 0, json_pack("{s:i}", "run_id", 7));
	pthread_mutex_lock(&f->lock);
	f->go = true;
	pthread_cond_signal(&f->cond);
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static void test_slow_reader_bounded(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		.send = "{\"version\":1,\"id\":1,\"command\":\"run\",\"args\":{\"export\":\"e1\","
			"\"follow\":true}}\n",
		.no_read = true,
		.expect = MAX_LINES,
	};

	f->ops.run_export = fake_run_floods;
	/* the loop must not end before the client has read everything: closing happens on done */
	run(f, &s);
	assert_true(f->dropped_at > 0);
	/* at most the high-water mark plus what the kernel buffers, in 4 KiB messages */
	assert_true(f->dropped_at < 2000);
	assert_true(f->n_lines >= 2);
	/* every progress line that arrived was one the op was told had been queued */
	assert_true(f->n_lines - 1 <= (size_t)f->dropped_at);
	assert_reply(f->lines[f->n_lines - 1], 1, NULL);
}

static int fake_refuse(void *ctx, struct control_call *call, int64_t export_id, unsigned flags)
{
	return -EBUSY; /* "already running": refused, the call untouched */
}

static int run_attempts;

/* Refuses, then fails from inside the op, then succeeds from inside the op. */
static int fake_run_sync(void *ctx, struct control_call *call, int64_t export_id, unsigned flags)
{
	switch (run_attempts++) {
	case 0:
		return -EBUSY;
	case 1:
		control_call_done(call, -EBUSY, NULL, "run 4 is in the way");
		return 0;
	default:
		control_call_done(call, 0, json_pack("{s:i, s:s}", "run_id", 5, "state", "queued"),
				  NULL);
		return 0;
	}
}

static int fake_status_sync(void *ctx, struct control_call *call)
{
	/* completed from inside the op itself */
	control_call_done(call, 0, json_pack("{s:s}", "state", "idle"), NULL);
	return 0;
}

static void test_refused_and_synchronous_ops(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		.send = RUN_E1(1)
			"{\"version\":1,\"id\":2,\"command\":\"status\"}\n"
			"{\"version\":1,\"id\":3,\"command\":\"status\"}\n"
			RUN_E1(4) RUN_E1(5),
		.expect = 5,
	};

	run_attempts = 0;
	f->ops.run_export = fake_run_sync;
	f->ops.status = fake_status_sync;
	run(f, &s);
	assert_reply(f->lines[0], 1, "busy");
	assert_reply(f->lines[1], 2, NULL);
	assert_reply(f->lines[2], 3, NULL);
	assert_non_null(strstr(f->lines[1], "\"idle\""));
	assert_reply(f->lines[3], 4, "busy");
	assert_non_null(strstr(f->lines[3], "run 4 is in the way"));
	assert_reply(f->lines[4], 5, NULL);
	/* only the run that was accepted is audited, with its id */
	assert_int_equal(query_int(f, "SELECT count(*) FROM audit_log WHERE action = 'run'"), 1);
	assert_int_equal(query_int(f, "SELECT json_extract(after_json, '$.run_id') FROM audit_log "
				   "WHERE action = 'run'"), 5);
}

static int validate_result;

static int fake_validate(void *ctx, struct control_call *call, int64_t connection_id,
			 const char *list_id)
{
	struct fixture *f = ctx;

	assert_int_equal(connection_id, 1);
	assert_string_equal(list_id, LIST_ID);
	defer(f, call, validate_result, NULL);
	return 0;
}

#define EXPORT_ADD(id, name)                                                                       \
	"{\"version\":1,\"id\":" #id ",\"command\":\"export.add\",\"args\":{\"name\":\"" name      \
	"\",\"connection\":\"c\",\"list_id\":\"" LIST_ID "\",\"email_field\":\"email\","         \
	"\"segments\":[\"s\"]}}\n"

static void test_list_validation_continuation(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		.send = EXPORT_ADD(1, "e2"),
		.expect = 1,
	};

	f->ops.validate_list = fake_validate;
	validate_result = -ENOENT; /* Constant Contact says: no such list */
	run(f, &s);
	assert_reply(f->lines[0], 1, "invalid_argument");
	assert_non_null(strstr(f->lines[0], "has no list"));
	assert_int_equal(query_int(f, "SELECT count(*) FROM exports WHERE name = 'e2'"), 0);
}

static void test_list_validation_unreachable_saves_with_warning(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		.send = EXPORT_ADD(1, "e2") EXPORT_ADD(2, "e3"),
		.expect = 2,
	};
	json_t *v;

	f->ops.validate_list = fake_validate;
	validate_result = -ETIMEDOUT;
	run(f, &s);
	assert_reply(f->lines[0], 1, NULL);
	v = line_json(f->lines[0]);
	assert_int_equal(json_array_size(json_object_get(json_object_get(v, "ok"), "warnings")), 1);
	json_decref(v);
	assert_reply(f->lines[1], 2, NULL);
	assert_int_equal(query_int(f, "SELECT count(*) FROM exports WHERE name IN ('e2','e3')"), 2);
	assert_int_equal(query_int(f, "SELECT count(*) FROM audit_log WHERE action = 'export.add'"),
			 2);
}

static void fake_removed(void *ctx, int64_t connection_id)
{
	struct fixture *f = ctx;

	/* Told after the commit: the tokens are already gone when runs are cancelled. */
	assert_int_equal(query_int(f, "SELECT count(*) FROM connection_tokens"), 0);
	f->removed_connection = connection_id;
}

static void fake_config_changed(void *ctx)
{
	struct fixture *f = ctx;

	f->config_changed++;
}

static void test_connection_remove_notifies(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		.send = "{\"version\":1,\"id\":1,\"command\":\"connection.remove\","
			"\"args\":{\"connection\":\"c\"}}\n"
			RUN_E1(2),
		.expect = 2,
	};

	f->ops.connection_removed = fake_removed;
	f->ops.config_changed = fake_config_changed;
	f->ops.run_export = fake_refuse; /* must not even be asked */
	run(f, &s);
	assert_reply(f->lines[0], 1, NULL);
	assert_reply(f->lines[1], 2, "precondition_failed");
	assert_int_equal(f->removed_connection, 1);
	assert_int_equal(f->config_changed, 1);
	assert_int_equal(query_int(f, "SELECT enabled FROM exports WHERE name = 'e1'"), 0);
	assert_int_equal(query_int(f, "SELECT count(*) FROM connections WHERE removed_at IS NULL"),
			 0);
}

/* ---- imports ---- */

static int fake_import_begin(void *ctx, const struct control_import_spec *spec, void **ret,
			     char *err, size_t errlen)
{
	struct fixture *f = ctx;
	struct fake_import *im = calloc(1, sizeof(*im));

	assert_string_equal(spec->kind, "profiles");
	assert_string_equal(spec->format, "csv");
	assert_null(f->import);
	f->import = im;
	*ret = im;
	return 0;
}

static int fake_import_data(void *ctx, void *session, const void *data, size_t len, json_t **info,
			    char *err, size_t errlen)
{
	struct fake_import *im = session;

	im->bytes += len;
	for (size_t i = 0; i < len; i++)
		im->newlines += ((const char *)data)[i] == '\n';
	if (memchr(data, '!', len))
		return set_error(err, errlen, -EINVAL, "line %zu: bad row", im->newlines);
	*info = json_pack("{s:I}", "rows", (json_int_t)im->newlines);
	return 0;
}

static int fake_import_end(void *ctx, void *session, json_t **ret, char *err, size_t errlen)
{
	struct fixture *f = ctx;
	struct fake_import *im = session;

	*ret = json_pack("{s:I}", "rows", (json_int_t)im->newlines);
	free(im);
	f->import = NULL;
	return 0;
}

static void fake_import_abort(void *ctx, void *session)
{
	struct fixture *f = ctx;

	assert_ptr_equal(session, f->import);
	free(session);
	f->import = NULL;
	f->import_aborts++;
}

#define IMPORT(id) "{\"version\":1,\"id\":" #id ",\"command\":\"import\",\"args\":{\"kind\":" \
		   "\"profiles\",\"format\":\"csv\"}}\n"
#define DATA(id, b64) "{\"version\":1,\"id\":" #id ",\"command\":\"import.data\",\"args\":" \
		      "{\"data\":\"" b64 "\"}}\n"
#define END(id) "{\"version\":1,\"id\":" #id ",\"command\":\"import.end\"}\n"

static void test_import_session(void **state)
{
	struct fixture *f = *state;
	static const struct script s = {
		/* "a,b\n" and "c,d\n" in two chunks; then a bad chunk; then an interruption */
		.send = IMPORT(1) DATA(2, "YSxiCg==") DATA(3, "YyxkCg==") END(4)
			END(5)
			IMPORT(6) DATA(7, "not base64!") DATA(8, "YSxiCg==")
			IMPORT(9) DATA(10, "IQo=")
			IMPORT(11) "{\"version\":1,\"id\":12,\"command\":\"whoami\"}\n"
			IMPORT(13) DATA(14, "YSxiCg=="),
		.expect = 14,
	};
	json_t *v;

	f->ops.import_begin = fake_import_begin;
	f->ops.import_data = fake_import_data;
	f->ops.import_end = fake_import_end;
	f->ops.import_abort = fake_import_abort;
	run(f, &s);
	assert_reply(f->lines[0], 1, NULL);
	assert_reply(f->lines[1], 2, NULL);
	v = line_json(f->lines[2]);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "ok"), "bytes")), 8);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "ok"), "rows")), 2);
	json_decref(v);
	assert_reply(f->lines[3], 4, NULL);
	assert_non_null(strstr(f->lines[3], "\"rows\":2"));
	assert_reply(f->lines[4], 5, "invalid_argument"); /* nothing open any more */
	assert_reply(f->lines[5], 6, NULL);
	assert_reply(f->lines[6], 7, "invalid_argument"); /* bad base64 abandons the import */
	assert_reply(f->lines[7], 8, "invalid_argument");
	assert_reply(f->lines[8], 9, NULL);
	assert_reply(f->lines[9], 10, "invalid_argument"); /* the importer's own error */
	assert_non_null(strstr(f->lines[9], "line 1: bad row"));
	assert_reply(f->lines[10], 11, NULL);
	assert_reply(f->lines[11], 12, "busy"); /* another command abandons the open import */
	assert_reply(f->lines[12], 13, NULL);
	assert_reply(f->lines[13], 14, NULL);
	/* 3 abandoned above, the last one by the client hanging up */
	assert_int_equal(f->import_aborts, 4);
	assert_null(f->import);
	assert_int_equal(query_int(f, "SELECT count(*) FROM audit_log WHERE action = 'import'"), 1);
}

/* ---- listener ---- */

static void test_listener_socket_file(void **state)
{
	struct fixture *f = *state;
	struct control_server other;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char err[512] = "", stale[PATH_MAX];
	struct stat st;
	int fd;

	/* A stale socket (nobody listening) is replaced. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(strlen(f->cfg.control_socket) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, f->cfg.control_socket, strlen(f->cfg.control_socket));
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(control_server_start(&f->srv, &f->loop, &f->cfg, f->store, NULL, err,
					      sizeof(err)), 0);
	assert_int_equal(stat(f->cfg.control_socket, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0660);

	/* A live one is not: a second daemon must not steal the first one's socket. */
	assert_int_equal(control_server_start(&other, &f->loop, &f->cfg, f->store, NULL, err,
					      sizeof(err)), -EADDRINUSE);
	assert_non_null(strstr(err, "another process is listening"));
	assert_int_equal(stat(f->cfg.control_socket, &st), 0); /* still there */

	control_server_close(&f->srv);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	assert_int_equal(stat(f->cfg.control_socket, &st), -1);

	/* A file that is not a socket is never removed. */
	snprintf(stale, sizeof(stale), "%s", f->cfg.control_socket);
	fd = open(stale, O_CREAT | O_WRONLY, 0600);
	close(fd);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(control_server_start(&other, &f->loop, &f->cfg, f->store, NULL, err,
					      sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "is not a socket"));
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	assert_int_equal(stat(stale, &st), 0);
	assert_true(S_ISREG(st.st_mode));
}

static void test_resolve_peer(void **state)
{
	struct control_peer p;

	(void)state;
	control_resolve_peer(0, 0, 1, "no-such-group-ccsync", "", &p);
	assert_int_equal(p.role, CONTROL_ROLE_ADMIN); /* root is always admin */
	assert_string_equal(p.user_name, "root");

	/* no passwd entry: named by uid; the peer's own gid still counts */
	control_resolve_peer(54321, 0, 1, "no-such-group-ccsync", "root", &p);
	assert_string_equal(p.user_name, "uid:54321");
	assert_int_equal(p.role, CONTROL_ROLE_CONTRIBUTOR);
	control_resolve_peer(54321, 0, 1, "root", "root", &p);
	assert_int_equal(p.role, CONTROL_ROLE_ADMIN); /* admin wins over contributor */
	control_resolve_peer(54321, 54321, 1, "root", "root", &p);
	assert_int_equal(p.role, CONTROL_ROLE_NONE);
	control_resolve_peer(54321, 0, 1, "", "", &p);
	assert_int_equal(p.role, CONTROL_ROLE_NONE); /* empty group names grant nothing */
	assert_string_equal(control_role_to_string(CONTROL_ROLE_NONE), "none");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pipelined_requests_answered_in_order, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_disconnect_mid_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_close_abandons_calls, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_reader_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_and_synchronous_ops, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_validation_continuation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_validation_unreachable_saves_with_warning,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_connection_remove_notifies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listener_socket_file, setup, teardown),
		cmocka_unit_test(test_resolve_peer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
