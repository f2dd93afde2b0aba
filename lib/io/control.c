/* SPDX-License-Identifier: MIT */
/*
 * The control server: listener, clients, request dispatch, roles, and the commands that the
 * configuration side answers itself. Ops of other modules are reached through struct control_ops.
 *
 * Life of a client: accepted -> credentials read (SO_PEERCRED) and role resolved -> requests read
 * line by line and answered one at a time -> closed on EOF, on a write error, on an oversized
 * message, or when the server closes. A request that needs an op becomes a struct control_call;
 * while it is in flight the client's further input is buffered (reading pauses once a message's
 * worth is waiting), so replies always come in request order.
 *
 * Memory: a client is freed in its close callback only; a call is freed when its op completes it,
 * which may be after its client has gone (it is then "abandoned": call->client is NULL and nothing
 * is sent). The server itself is embedded in its owner and never freed here.
 *
 * Invariants: every change to the configuration is committed together with its audit row; no
 * reply ever holds a token (none is ever read here); a client never gets more than one final
 * reply per request; a stranger gets exactly one error and nothing else.
 */
#include "control.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "cron.h"
#include "ctlproto.h"
#include "log.h"
#include "plan.h"
#include "store-auth.h"
#include "store-config.h"
#include "store-data.h"
#include "tzfile.h"
#include "util.h"

#define READ_CHUNK (64 * 1024)
#define AUDIT_DEFAULT_LIMIT 50

struct control_client {
	struct control_client *prev, *next;
	struct control_server *srv;
	uv_pipe_t pipe;
	uv_shutdown_t shutdown_req;
	struct control_peer peer;
	struct ctlproto_framer in;
	struct control_call *call;	/* the request in flight, or NULL */
	void *import_session;		/* op-owned, while an import is open */
	uint64_t import_bytes;
	bool reading;
	bool eof;
	bool dispatching;		/* inside client_process: no re-entry */
	bool finishing;			/* shutting down after the last reply */
	bool closing;
};

typedef void (*call_finish_fn)(struct control_call *call, int r, json_t *result,
			       const char *message);

struct control_call {
	struct control_server *srv;
	struct control_client *client; /* NULL once abandoned */
	int64_t id;
	enum ctlproto_command_id command;
	bool streams;
	struct control_peer peer;
	void *userdata;
	/* what to do with the op's result; NULL: reply with it */
	call_finish_fn finish;
	/* continuation state, owned by the call */
	struct store_export pending_export;
	bool has_pending_export;
	json_t *before;		/* audit "before" of a pending change */
	json_t *warnings;	/* to hand back with a pending change's reply */
	int64_t object_id;
	/* a run request is audited once accepted: at its first progress or its success */
	json_t *run_audit;
};

struct out_req {
	uv_write_t req;
	size_t len;
	char data[];
};

static void client_process(struct control_client *c);
static void client_close(struct control_client *c);
static void client_start_reading(struct control_client *c);

/* ---- roles ---- */

const char *control_role_to_string(enum control_role role)
{
	switch (role) {
	case CONTROL_ROLE_ADMIN:
		return "admin";
	case CONTROL_ROLE_CONTRIBUTOR:
		return "contributor";
	case CONTROL_ROLE_NONE:
	default:
		return "none";
	}
}

static bool group_gid(const char *name, gid_t *ret)
{
	struct group grp, *res = NULL;
	_cleanup_free_ char *buf = NULL;
	size_t len = 4096;

	if (!name || !*name)
		return false;
	for (;;) {
		int r;

		free(buf);
		buf = malloc(len);
		if (!buf)
			return false;
		r = getgrnam_r(name, &grp, buf, len, &res);
		if (r == ERANGE && len < 1024 * 1024) {
			len *= 2;
			continue;
		}
		if (r != 0 || !res)
			return false;
		*ret = grp.gr_gid;
		return true;
	}
}

void control_resolve_peer(uid_t uid, gid_t gid, pid_t pid, const char *admin_group,
			  const char *contributor_group, struct control_peer *ret)
{
	struct control_peer p = { .uid = uid, .gid = gid, .pid = pid, .role = CONTROL_ROLE_NONE };
	struct passwd pw, *pwres = NULL;
	_cleanup_free_ char *buf = NULL;
	_cleanup_free_ gid_t *groups = NULL;
	int ngroups = 0;
	size_t len = 4096;
	gid_t admin_gid = 0, contrib_gid = 0;
	bool have_admin = group_gid(admin_group, &admin_gid);
	bool have_contrib = group_gid(contributor_group, &contrib_gid);

	for (;;) {
		int r;

		free(buf);
		buf = malloc(len);
		if (!buf)
			break;
		r = getpwuid_r(uid, &pw, buf, len, &pwres);
		if (r == ERANGE && len < 1024 * 1024) {
			len *= 2;
			continue;
		}
		break;
	}
	if (pwres) {
		snprintf(p.user_name, sizeof(p.user_name), "%s", pw.pw_name);
		ngroups = 64;
		for (;;) {
			int n = ngroups;
			gid_t *g = realloc(groups, sizeof(gid_t) * (size_t)n);

			if (!g) {
				ngroups = 0;
				break;
			}
			groups = g;
			if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) >= 0) {
				ngroups = n;
				break;
			}
			if (n <= ngroups || n > 65536) {
				ngroups = 0;
				break;
			}
			ngroups = n;
		}
	} else {
		snprintf(p.user_name, sizeof(p.user_name), "uid:%u", (unsigned)uid);
	}

	if (uid == 0) {
		p.role = CONTROL_ROLE_ADMIN;
	} else {
		bool admin = have_admin && gid == admin_gid;
		bool contrib = have_contrib && gid == contrib_gid;

		for (int i = 0; i < ngroups; i++) {
			admin = admin || (have_admin && groups[i] == admin_gid);
			contrib = contrib || (have_contrib && groups[i] == contrib_gid);
		}
		p.role = admin ? CONTROL_ROLE_ADMIN :
			 contrib ? CONTROL_ROLE_CONTRIBUTOR : CONTROL_ROLE_NONE;
	}
	*ret = p;
}

/* ---- output ---- */

static void on_write_done(uv_write_t *req, int status)
{
	struct out_req *w = container_of(req, struct out_req, req);
	struct control_client *c = req->handle->data;

	free(w);
	if (status < 0 && c && !c->closing) {
		log_debug("control: write to uid %u failed: %s", (unsigned)c->peer.uid,
			  uv_strerror(status));
		client_close(c);
	}
}

static int64_t message_id(json_t *msg)
{
	json_t *id = json_object_get(msg, "id");

	return json_is_integer(id) ? json_integer_value(id) : -1;
}

/*
 * Queues msg (stolen) to the client. Progress (droppable) is skipped while output backs up; a
 * final reply that cannot be queued disconnects the client, since the protocol has no way to
 * skip one.
 */
static int client_send(struct control_client *c, json_t *msg, bool droppable)
{
	_cleanup_free_ char *text = NULL;
	struct out_req *w;
	size_t len, queued;
	uv_buf_t buf;
	int r;

	if (!msg) {
		if (!droppable && !c->closing) {
			log_error("control: out of memory building a reply, disconnecting uid %u",
				  (unsigned)c->peer.uid);
			client_close(c);
		}
		return -ENOMEM;
	}
	if (c->closing) {
		json_decref(msg);
		return -ECONNRESET;
	}
	queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
	if (droppable && queued > CONTROL_PROGRESS_HIGH_WATER) {
		json_decref(msg);
		return -ENOBUFS;
	}
	r = ctlproto_encode(msg, &text, &len);
	if (r == -EMSGSIZE && !droppable) {
		int64_t id = message_id(msg);

		json_decref(msg);
		msg = ctlproto_error_new(id, -EMSGSIZE, "the reply would exceed the message size "
					 "limit; ask for a smaller page (--limit)");
		r = msg ? ctlproto_encode(msg, &text, &len) : -ENOMEM;
	}
	json_decref(msg);
	if (r < 0) {
		if (!droppable) {
			log_error("control: cannot encode a reply: %s, disconnecting uid %u",
				  strerror(-r), (unsigned)c->peer.uid);
			client_close(c);
		}
		return r;
	}
	if (queued + len > CONTROL_MAX_OUTPUT) {
		if (droppable)
			return -ENOBUFS;
		log_warning("control: uid %u does not read its replies (%zu bytes queued), "
			    "disconnecting", (unsigned)c->peer.uid, queued);
		client_close(c);
		return -ENOBUFS;
	}
	w = malloc(sizeof(*w) + len);
	if (!w) {
		if (!droppable)
			client_close(c);
		return -ENOMEM;
	}
	memcpy(w->data, text, len);
	w->len = len;
	buf = uv_buf_init(w->data, (unsigned)len);
	r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_write_done);
	if (r < 0) {
		free(w);
		client_close(c);
		return r;
	}
	return 0;
}

static void send_ok(struct control_client *c, int64_t id, json_t *result)
{
	(void)client_send(c, ctlproto_ok_new(id, result), false);
}

static void send_error(struct control_client *c, int64_t id, int r, const char *message)
{
	(void)client_send(c, ctlproto_error_new(id, r, message), false);
}

/* ---- client lifetime ---- */

static void on_client_closed(uv_handle_t *h)
{
	struct control_client *c = h->data;
	struct control_server *srv = c->srv;

	if (c->prev)
		c->prev->next = c->next;
	else
		srv->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->n_clients--;
	ctlproto_framer_done(&c->in);
	free(c);
}

static void client_abort_import(struct control_client *c)
{
	struct control_server *srv = c->srv;

	if (!c->import_session)
		return;
	if (srv->ops.import_abort)
		srv->ops.import_abort(srv->ops.ctx, c->import_session);
	c->import_session = NULL;
}

static void client_close(struct control_client *c)
{
	struct control_server *srv = c->srv;
	struct control_call *call;

	if (c->closing)
		return;
	c->closing = true;
	client_abort_import(c);
	call = c->call;
	if (call) {
		call->client = NULL;
		c->call = NULL;
		if (srv->ops.call_abandoned)
			srv->ops.call_abandoned(srv->ops.ctx, call);
	}
	uv_close((uv_handle_t *)&c->pipe, on_client_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct control_client *c = req->data;

	(void)status; /* closing either way */
	client_close(c);
}

/* Lets queued replies drain, then closes. */
static void client_finish(struct control_client *c)
{
	int r;

	if (c->closing || c->finishing)
		return;
	if (c->call) {
		client_close(c);
		return;
	}
	c->finishing = true;
	if (c->reading) {
		(void)uv_read_stop((uv_stream_t *)&c->pipe);
		c->reading = false;
	}
	c->shutdown_req.data = c;
	r = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->pipe, on_shutdown);
	if (r < 0)
		client_close(c);
}

/* ---- calls ---- */

int64_t control_call_id(const struct control_call *call)
{
	return call->id;
}

const struct control_peer *control_call_peer(const struct control_call *call)
{
	return &call->peer;
}

bool control_call_abandoned(const struct control_call *call)
{
	return !call->client || call->srv->closing;
}

void control_call_set_userdata(struct control_call *call, void *userdata)
{
	call->userdata = userdata;
}

void *control_call_get_userdata(const struct control_call *call)
{
	return call->userdata;
}

static void audit_run_request(struct control_call *call, json_t *source);

int control_call_progress(struct control_call *call, json_t *progress)
{
	if (call->run_audit)
		audit_run_request(call, progress);
	if (!call->client || call->client->closing || call->client->finishing) {
		json_decref(progress);
		return -ECONNRESET;
	}
	return client_send(call->client, ctlproto_progress_new(call->id, progress), true);
}

static struct control_call *call_new(struct control_client *c, const struct ctlproto_request *req)
{
	struct control_call *call = calloc(1, sizeof(*call));

	if (!call)
		return NULL;
	call->srv = c->srv;
	call->client = c;
	call->id = req->id;
	call->command = req->command->id;
	call->streams = req->command->streams;
	call->peer = c->peer;
	c->call = call;
	c->srv->n_calls++;
	return call;
}

static void call_free(struct control_call *call)
{
	struct control_client *c = call->client;

	if (c)
		c->call = NULL;
	call->srv->n_calls--;
	if (call->has_pending_export)
		store_export_done(&call->pending_export);
	json_decref(call->before);
	json_decref(call->warnings);
	json_decref(call->run_audit);
	free(call);
	/* The client may now read its next request; from inside dispatch, the loop there does. */
	if (c && !c->closing && !c->dispatching)
		client_process(c);
}

static void call_reply(struct control_call *call, int r, json_t *result, const char *message)
{
	if (!call->client) {
		json_decref(result);
		return;
	}
	if (r < 0) {
		json_decref(result);
		send_error(call->client, call->id, r, message);
	} else {
		send_ok(call->client, call->id, result);
	}
}

void control_call_done(struct control_call *call, int r, json_t *result, const char *message)
{
	(call->finish ? call->finish : call_reply)(call, r, result, message);
	call_free(call);
}

/* A call an op refused outright: it never reached the op, so nothing was sent for it. */
static void call_discard(struct control_call *call)
{
	call_free(call);
}

/* ---- helpers for handlers ---- */

#define HANDLER_ASYNC 1

struct handler_ctx {
	struct control_client *client;
	struct control_server *srv;
	const struct ctlproto_request *req;
	json_t *args;
	const struct control_peer *peer;
	char *err;
	size_t errlen;
};

static const char *arg_str(json_t *args, const char *name)
{
	return json_string_value(json_object_get(args, name));
}

static bool arg_bool(json_t *args, const char *name, bool def)
{
	json_t *v = json_object_get(args, name);

	return v ? json_is_true(v) : def;
}

static int64_t arg_int(json_t *args, const char *name, int64_t def)
{
	json_t *v = json_object_get(args, name);

	return json_is_integer(v) ? json_integer_value(v) : def;
}

static bool is_admin(const struct control_peer *p)
{
	return p->role == CONTROL_ROLE_ADMIN;
}

static bool usable_by_peer(const struct control_peer *p, const char *usable_by)
{
	return is_admin(p) || streq_ptr(usable_by, "admins_and_contributors");
}

/* Names end up in tables and log lines: no control characters. */
static int check_printable(const char *what, const char *s, char *err, size_t errlen)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return set_error(err, errlen, -EINVAL,
					 "%s: must not contain control characters", what);
	if (s[0] == ' ' || (s[0] && s[strlen(s) - 1] == ' '))
		return set_error(err, errlen, -EINVAL,
				 "%s: must not begin or end with a blank", what);
	return 0;
}

static int store_failed(struct handler_ctx *h, int r, const char *what)
{
	return set_error(h->err, h->errlen, r < 0 ? r : -EIO, "cannot %s: %s", what,
			 store_errmsg(h->srv->store));
}

static char *json_text(json_t *v)
{
	return v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

/* Appends an audit row inside the caller's write transaction. */
static int audit(struct control_server *srv, const struct control_peer *peer, const char *action,
		 const char *object_type, int64_t object_id, json_t *before, json_t *after)
{
	_cleanup_free_ char *b = json_text(before), *a = json_text(after);
	char idbuf[32];
	struct store_audit_entry e = {
		.at = store_config_now(),
		.has_uid = true,
		.uid = peer->uid,
		.user_name = (char *)peer->user_name,
		.action = (char *)action,
		.object_type = (char *)object_type,
		.object_id = object_id > 0 ? idbuf : NULL,
		.before_json = b,
		.after_json = a,
	};
	int64_t id;

	if ((before && !b) || (after && !a))
		return -ENOMEM;
	snprintf(idbuf, sizeof(idbuf), "%lld", (long long)object_id);
	return store_config_audit_add(srv->store, &e, &id);
}

/* Audit of a request that is not a configuration change (runs, imports): its own transaction. */
static void audit_now(struct control_server *srv, const struct control_peer *peer,
		      const char *action, const char *object_type, int64_t object_id, json_t *after)
{
	/* An op may call back from inside its own transaction: the row then joins it. */
	bool own = !store_in_transaction(srv->store);
	int r = own ? store_begin_write(srv->store) : 0;

	if (r >= 0)
		r = audit(srv, peer, action, object_type, object_id, NULL, after);
	if (r >= 0 && own)
		r = store_commit(srv->store);
	if (r < 0) {
		if (own)
			(void)store_rollback(srv->store);
		log_error("control: cannot write the audit entry for %s by %s: %s", action,
			  peer->user_name, store_errmsg(srv->store));
	}
}

static json_t *time_json(int64_t t)
{
	return t > 0 ? json_integer(t) : json_null();
}

/* ---- connections ---- */

static json_t *connection_json(const struct store_connection *c, bool admin)
{
	json_t *o, *consent = json_null();

	if (c->consent_by)
		consent = json_pack("{s:s, s:I, s:I}", "by", c->consent_by, "uid",
				    (json_int_t)c->consent_uid, "at", (json_int_t)c->consent_at);
	o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s?, s:b, s:o, s:I, s:I, s:I}",
		      "id", (json_int_t)c->connection_id,
		      "name", c->name,
		      "usable_by", c->usable_by,
		      "auth_flow", c->auth_flow,
		      "auth_state", c->auth_state,
		      "auth_error", c->auth_error,
		      "tokens_stored", c->has_tokens,
		      "consent", consent,
		      "exports", (json_int_t)c->exports,
		      "created_at", (json_int_t)c->created_at,
		      "updated_at", (json_int_t)c->updated_at);
	/* The API key identifies the application: admins manage it, nobody else needs it. */
	if (o && admin && json_object_set_new(o, "client_id", json_string(c->client_id)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int find_connection(struct handler_ctx *h, const char *name, bool for_use,
			   struct store_connection *ret)
{
	int r = store_config_connection_find(h->srv->store, name, ret);

	if (r == -ENOENT)
		return set_error(h->err, h->errlen, -ENOENT,
				 "connection \"%s\" not found (see 'ccsyncctl connection list')",
				 name);
	if (r < 0)
		return store_failed(h, r, "read the connection");
	if (for_use && !usable_by_peer(h->peer, ret->usable_by)) {
		store_connection_done(ret);
		return set_error(h->err, h->errlen, -EACCES,
				 "connection \"%s\" is usable by admins only", name);
	}
	return 0;
}

static int reload_connection_json(struct handler_ctx *h, int64_t id, json_t **ret)
{
	struct store_connection c = {};
	int r = store_config_connection_get(h->srv->store, id, &c);

	if (r < 0)
		return store_failed(h, r, "read the connection back");
	*ret = connection_json(&c, true);
	store_connection_done(&c);
	return *ret ? 0 : -ENOMEM;
}

static int handle_connection_add(struct handler_ctx *h, json_t **ret)
{
	const char *name = arg_str(h->args, "name"), *client_id = arg_str(h->args, "client_id");
	struct store_connection existing = {};
	json_t *after = NULL;
	int64_t id;
	int r;

	r = check_printable("name", name, h->err, h->errlen);
	if (r >= 0)
		r = check_printable("client_id", client_id, h->err, h->errlen);
	if (r < 0)
		return r;
	if (strpbrk(client_id, " \t"))
		return set_error(h->err, h->errlen, -EINVAL, "client_id: must not contain blanks "
				 "(it is the API key shown in the Constant Contact developer "
				 "portal)");
	if (store_config_connection_find(h->srv->store, name, &existing) == 0) {
		store_connection_done(&existing);
		return set_error(h->err, h->errlen, -EEXIST, "a connection named \"%s\" already "
				 "exists", name);
	}
	r = store_begin_write(h->srv->store);
	if (r < 0)
		return store_failed(h, r, "start a transaction");
	r = store_config_connection_insert(h->srv->store, name, client_id,
					   arg_str(h->args, "auth_flow"),
					   arg_str(h->args, "usable_by"), store_config_now(), &id);
	if (r == -EEXIST) {
		r = set_error(h->err, h->errlen, -EEXIST, "a connection named \"%s\" already "
			      "exists", name);
		goto fail;
	}
	if (r < 0) {
		r = store_failed(h, r, "add the connection");
		goto fail;
	}
	r = reload_connection_json(h, id, &after);
	if (r < 0)
		goto fail;
	r = audit(h->srv, h->peer, "connection.add", "connection", id, NULL, after);
	if (r < 0) {
		r = store_failed(h, r, "write the audit log");
		goto fail;
	}
	r = store_commit(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "commit");
		goto fail;
	}
	log_info("control: %s added connection \"%s\" (id %lld)", h->peer->user_name, name,
		 (long long)id);
	*ret = json_pack("{s:o}", "connection", after);
	return *ret ? 0 : -ENOMEM;
fail:
	(void)store_rollback(h->srv->store);
	json_decref(after);
	return r;
}

static int handle_connection_list(struct handler_ctx *h, json_t **ret)
{
	struct store_connection *v = NULL;
	size_t n = 0;
	json_t *arr;
	int r;

	r = store_config_connection_list(h->srv->store, &v, &n);
	if (r < 0)
		return store_failed(h, r, "list connections");
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		if (!usable_by_peer(h->peer, v[i].usable_by))
			continue;
		if (json_array_append_new(arr, connection_json(&v[i], is_admin(h->peer))) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	store_connection_array_free(v, n);
	if (!arr)
		return -ENOMEM;
	*ret = arr;
	return 0;
}

static int handle_connection_show(struct handler_ctx *h, json_t **ret)
{
	struct store_connection c = {};
	int r = find_connection(h, arg_str(h->args, "connection"), true, &c);

	if (r < 0)
		return r;
	*ret = connection_json(&c, is_admin(h->peer));
	store_connection_done(&c);
	return *ret ? 0 : -ENOMEM;
}

static int handle_connection_edit(struct handler_ctx *h, json_t **ret)
{
	const char *name = arg_str(h->args, "name"), *client_id = arg_str(h->args, "client_id");
	const char *flow = arg_str(h->args, "auth_flow"), *usable = arg_str(h->args, "usable_by");
	struct store_connection c = {}, other = {};
	json_t *before = NULL, *after = NULL;
	bool key_changed, tokens_deleted = false;
	char *saved[4];
	int r;

	if (!name && !client_id && !flow && !usable)
		return set_error(h->err, h->errlen, -EINVAL, "nothing to change: give at least one "
				 "of name, client_id, auth_flow, usable_by");
	if ((name && (r = check_printable("name", name, h->err, h->errlen)) < 0) ||
	    (client_id && (r = check_printable("client_id", client_id, h->err, h->errlen)) < 0))
		return r;
	if (client_id && strpbrk(client_id, " \t"))
		return set_error(h->err, h->errlen, -EINVAL, "client_id: must not contain blanks");
	r = find_connection(h, arg_str(h->args, "connection"), false, &c);
	if (r < 0)
		return r;
	if (name && !streq(name, c.name) &&
	    store_config_connection_find(h->srv->store, name, &other) == 0) {
		store_connection_done(&other);
		store_connection_done(&c);
		return set_error(h->err, h->errlen, -EEXIST, "a connection named \"%s\" already "
				 "exists", name);
	}
	before = connection_json(&c, true);
	if (!before) {
		store_connection_done(&c);
		return -ENOMEM;
	}
	key_changed = (client_id && !streq(client_id, c.client_id)) ||
		      (flow && !streq(flow, c.auth_flow));
	/* Point the struct at the request's strings for the update; restore before freeing. */
	saved[0] = c.name, saved[1] = c.client_id, saved[2] = c.auth_flow, saved[3] = c.usable_by;
	if (name)
		c.name = (char *)name;
	if (client_id)
		c.client_id = (char *)client_id;
	if (flow)
		c.auth_flow = (char *)flow;
	if (usable)
		c.usable_by = (char *)usable;

	r = store_begin_write(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "start a transaction");
		goto out;
	}
	r = store_config_connection_update(h->srv->store, &c, store_config_now());
	if (r < 0) {
		r = store_failed(h, r, "update the connection");
		goto fail;
	}
	if (key_changed) {
		/* Tokens belong to the API key and flow that obtained them: with either changed
		 * they are useless, and keeping them would keep a secret for nothing. */
		r = store_config_connection_delete_tokens(h->srv->store, c.connection_id,
							  &tokens_deleted);
		if (r >= 0)
			r = store_auth_set_state(h->srv->store, c.connection_id,
						 STORE_AUTH_UNAUTHORIZED, NULL);
		if (r < 0) {
			r = store_failed(h, r, "reset the connection's authorization");
			goto fail;
		}
	}
	r = reload_connection_json(h, c.connection_id, &after);
	if (r < 0)
		goto fail;
	r = audit(h->srv, h->peer, "connection.edit", "connection", c.connection_id, before, after);
	if (r < 0) {
		r = store_failed(h, r, "write the audit log");
		goto fail;
	}
	r = store_commit(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "commit");
		goto fail;
	}
	if (tokens_deleted && store_checkpoint(h->srv->store) < 0)
		log_warning("control: checkpoint after deleting tokens failed: %s, ignoring",
			    store_errmsg(h->srv->store));
	if (key_changed && h->srv->ops.connection_changed)
		h->srv->ops.connection_changed(h->srv->ops.ctx, c.connection_id);
	*ret = json_pack("{s:o, s:b}", "connection", after, "authorization_reset", key_changed);
	after = NULL;
	r = *ret ? 0 : -ENOMEM;
	goto out;
fail:
	(void)store_rollback(h->srv->store);
out:
	c.name = saved[0], c.client_id = saved[1], c.auth_flow = saved[2], c.usable_by = saved[3];
	store_connection_done(&c);
	json_decref(before);
	json_decref(after);
	return r;
}

static int handle_connection_remove(struct handler_ctx *h, json_t **ret)
{
	struct store_connection c = {};
	json_t *before = NULL;
	bool tokens_deleted = false;
	int64_t disabled = 0, now = store_config_now();
	char reason[256], day[32];
	struct tm tm;
	time_t t = (time_t)now;
	int r;

	r = find_connection(h, arg_str(h->args, "connection"), false, &c);
	if (r < 0)
		return r;
	before = connection_json(&c, true);
	if (!before) {
		store_connection_done(&c);
		return -ENOMEM;
	}
	gmtime_r(&t, &tm);
	strftime(day, sizeof(day), "%Y-%m-%d %H:%M UTC", &tm);
	snprintf(reason, sizeof(reason), "connection \"%s\" was removed by %s on %s", c.name,
		 h->peer->user_name, day);

	r = store_begin_write(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "start a transaction");
		goto out;
	}
	r = store_config_connection_disable_exports(h->srv->store, c.connection_id, reason, now,
						    &disabled);
	if (r >= 0)
		r = store_config_connection_delete_tokens(h->srv->store, c.connection_id,
							  &tokens_deleted);
	if (r >= 0)
		r = store_config_connection_remove(h->srv->store, c.connection_id, now);
	if (r < 0) {
		r = store_failed(h, r, "remove the connection");
		goto fail;
	}
	r = audit(h->srv, h->peer, "connection.remove", "connection", c.connection_id, before,
		  NULL);
	if (r < 0) {
		r = store_failed(h, r, "write the audit log");
		goto fail;
	}
	r = store_commit(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "commit");
		goto fail;
	}
	/* secure_delete wiped the pages; the checkpoint makes sure no copy waits in the WAL. */
	if (store_checkpoint(h->srv->store) < 0)
		log_warning("control: checkpoint after removing connection %lld failed: %s, "
			    "ignoring", (long long)c.connection_id, store_errmsg(h->srv->store));
	log_notice("control: %s removed connection \"%s\" (id %lld): %lld export(s) disabled",
		   h->peer->user_name, c.name, (long long)c.connection_id, (long long)disabled);
	if (h->srv->ops.connection_removed)
		h->srv->ops.connection_removed(h->srv->ops.ctx, c.connection_id);
	if (h->srv->ops.config_changed)
		h->srv->ops.config_changed(h->srv->ops.ctx);
	*ret = json_pack("{s:O, s:I, s:b}", "connection", before, "exports_disabled",
			 (json_int_t)disabled, "tokens_deleted", tokens_deleted);
	r = *ret ? 0 : -ENOMEM;
	goto out;
fail:
	(void)store_rollback(h->srv->store);
out:
	store_connection_done(&c);
	json_decref(before);
	return r;
}

static int handle_connection_consent(struct handler_ctx *h, json_t **ret)
{
	bool revoke = arg_bool(h->args, "revoke", false);
	struct store_connection c = {};
	json_t *before = NULL, *after = NULL;
	int r;

	r = find_connection(h, arg_str(h->args, "connection"), false, &c);
	if (r < 0)
		return r;
	before = connection_json(&c, true);
	if (!before) {
		store_connection_done(&c);
		return -ENOMEM;
	}
	r = store_begin_write(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "start a transaction");
		goto out;
	}
	r = store_config_connection_set_consent(h->srv->store, c.connection_id,
						revoke ? NULL : h->peer->user_name, h->peer->uid,
						store_config_now());
	if (r < 0) {
		r = store_failed(h, r, "record the consent");
		goto fail;
	}
	r = reload_connection_json(h, c.connection_id, &after);
	if (r < 0)
		goto fail;
	r = audit(h->srv, h->peer, revoke ? "connection.consent_revoke" : "connection.consent",
		  "connection", c.connection_id, before, after);
	if (r < 0) {
		r = store_failed(h, r, "write the audit log");
		goto fail;
	}
	r = store_commit(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "commit");
		goto fail;
	}
	log_notice("control: %s %s data-privacy consent for connection \"%s\"",
		   h->peer->user_name, revoke ? "revoked" : "recorded", c.name);
	*ret = json_pack("{s:o}", "connection", after);
	after = NULL;
	r = *ret ? 0 : -ENOMEM;
	goto out;
fail:
	(void)store_rollback(h->srv->store);
out:
	store_connection_done(&c);
	json_decref(before);
	json_decref(after);
	return r;
}

static const char *op_missing(struct handler_ctx *h)
{
	snprintf(h->err, h->errlen, "%s is not available in this daemon build",
		 h->req->command->name);
	return h->err;
}

#define REQUIRE_OP(h, op)                                                                          \
	do {                                                                                       \
		if (!(h)->srv->ops.op) {                                                           \
			op_missing(h);                                                             \
			return -EOPNOTSUPP;                                                        \
		}                                                                                  \
	} while (0)

static void finish_authorize(struct control_call *call, int r, json_t *result,
			     const char *message)
{
	if (r >= 0) {
		json_t *after = json_pack("{s:O?}", "result", result);

		audit_now(call->srv, &call->peer, "connection.authorize", "connection",
			  call->object_id, after);
		json_decref(after);
	}
	call_reply(call, r, result, message);
}

static int start_call(struct handler_ctx *h, call_finish_fn finish, struct control_call **ret)
{
	struct control_call *call = call_new(h->client, h->req);

	if (!call)
		return -ENOMEM;
	call->finish = finish;
	*ret = call;
	return 0;
}

/* After an op refused a call: the error it returned, with a message if it gave none. */
static int op_refused(struct handler_ctx *h, struct control_call *call, int r)
{
	call_discard(call);
	if (!h->err[0])
		snprintf(h->err, h->errlen, "%s failed: %s", h->req->command->name, strerror(-r));
	return r;
}

static int handle_connection_authorize(struct handler_ctx *h, json_t **ret)
{
	const char *code = arg_str(h->args, "code");
	struct store_connection c = {};
	struct control_call *call;
	int r;

	r = find_connection(h, arg_str(h->args, "connection"), false, &c);
	if (r < 0)
		return r;
	if ((code && !h->srv->ops.authorize_complete) || (!code && !h->srv->ops.authorize_start)) {
		store_connection_done(&c);
		op_missing(h);
		return -EOPNOTSUPP;
	}
	r = start_call(h, finish_authorize, &call);
	if (r < 0) {
		store_connection_done(&c);
		return r;
	}
	call->object_id = c.connection_id;
	store_connection_done(&c);
	r = code ? h->srv->ops.authorize_complete(h->srv->ops.ctx, call, call->object_id, code)
		 : h->srv->ops.authorize_start(h->srv->ops.ctx, call, call->object_id);
	if (r < 0)
		return op_refused(h, call, r);
	return HANDLER_ASYNC;
}

static int handle_lists(struct handler_ctx *h, json_t **ret)
{
	struct store_connection c = {};
	struct control_call *call;
	int64_t id;
	int r;

	r = find_connection(h, arg_str(h->args, "connection"), true, &c);
	if (r < 0)
		return r;
	id = c.connection_id;
	store_connection_done(&c);
	REQUIRE_OP(h, list_cc_lists);
	r = start_call(h, NULL, &call);
	if (r < 0)
		return r;
	r = h->srv->ops.list_cc_lists(h->srv->ops.ctx, call, id);
	if (r < 0)
		return op_refused(h, call, r);
	return HANDLER_ASYNC;
}

/* ---- exports ---- */

static json_t *export_json(const struct store_export *e)
{
	json_t *o, *segments = json_array(), *fields = json_object(), *schedule;

	for (size_t i = 0; segments && i < e->n_segments; i++)
		if (json_array_append_new(segments, json_string(e->segments[i].name)) < 0) {
			json_decref(segments);
			segments = NULL;
		}
	for (size_t i = 0; fields && i < e->n_fields; i++)
		if (json_object_set_new(fields, e->fields[i].target,
					json_string(e->fields[i].source_field)) < 0) {
			json_decref(fields);
			fields = NULL;
		}
	schedule = json_pack("{s:s?, s:s?}", "cron", e->cron, "time_zone", e->time_zone);
	o = json_pack("{s:I, s:s, s:s, s:b, s:s, s:s, s:s, s:s?, s:s?, s:o?, s:o?, s:b, s:o, "
		      "s:o?, s:b, s:s?, s:s?, s:I, s:I}",
		      "id", (json_int_t)e->export_id,
		      "name", e->name,
		      "connection", e->connection_name,
		      "connection_removed", e->connection_removed,
		      "list_id", e->list_id,
		      "mode", e->mode,
		      "email_field", e->email_field,
		      "first_name_field", e->first_name_field,
		      "last_name_field", e->last_name_field,
		      "fields", fields,
		      "segments", segments,
		      "follows_refresh", e->follows_refresh,
		      "mirror_max_remove_share", e->has_mirror_share ?
			      json_real(e->mirror_max_remove_share) : json_null(),
		      "schedule", schedule,
		      "enabled", e->enabled,
		      "disabled_reason", e->disabled_reason,
		      "created_by", e->created_by,
		      "created_at", (json_int_t)e->created_at,
		      "updated_at", (json_int_t)e->updated_at);
	return o;
}

/* The export as export.add arguments: the base that export.edit's arguments are laid over. */
static json_t *export_as_args(const struct store_export *e)
{
	json_t *a = json_object(), *segments = json_array(), *fields = json_object();

	if (!a || !segments || !fields)
		goto oom;
	for (size_t i = 0; i < e->n_segments; i++)
		if (json_array_append_new(segments, json_string(e->segments[i].name)) < 0)
			goto oom;
	for (size_t i = 0; i < e->n_fields; i++)
		if (json_object_set_new(fields, e->fields[i].target,
					json_string(e->fields[i].source_field)) < 0)
			goto oom;
	if (json_object_set_new(a, "name", json_string(e->name)) < 0 ||
	    json_object_set_new(a, "connection", json_string(e->connection_name)) < 0 ||
	    json_object_set_new(a, "list_id", json_string(e->list_id)) < 0 ||
	    json_object_set_new(a, "email_field", json_string(e->email_field)) < 0 ||
	    json_object_set_new(a, "mode", json_string(e->mode)) < 0 ||
	    json_object_set_new(a, "follows_refresh", json_boolean(e->follows_refresh)) < 0 ||
	    json_object_set_new(a, "segments", segments) < 0)
		goto oom_a;
	segments = NULL;
	if (json_object_set_new(a, "fields", fields) < 0)
		goto oom_a;
	fields = NULL;
	if ((e->first_name_field &&
	     json_object_set_new(a, "first_name_field", json_string(e->first_name_field)) < 0) ||
	    (e->last_name_field &&
	     json_object_set_new(a, "last_name_field", json_string(e->last_name_field)) < 0) ||
	    (e->has_mirror_share &&
	     json_object_set_new(a, "mirror_max_remove_share",
				 json_real(e->mirror_max_remove_share)) < 0) ||
	    (e->cron && json_object_set_new(a, "cron", json_string(e->cron)) < 0) ||
	    (e->time_zone && json_object_set_new(a, "time_zone", json_string(e->time_zone)) < 0))
		goto oom_a;
	return a;
oom:
	json_decref(segments);
	json_decref(fields);
oom_a:
	json_decref(a);
	return NULL;
}

static bool is_uuid(const char *s)
{
	static const char pattern[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	if (strlen(s) != sizeof(pattern) - 1)
		return false;
	for (size_t i = 0; pattern[i]; i++) {
		if (pattern[i] == '-') {
			if (s[i] != '-')
				return false;
		} else if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i]) {
			return false;
		}
	}
	return true;
}

/* Targets are checked by the plan's own rules, so a saved mapping is one the runner can send. */
static int check_target(const char *target, char *err, size_t errlen)
{
	char msg[512];

	if (plan_target_check(target, msg, sizeof(msg)) < 0)
		return set_error(err, errlen, -EINVAL, "fields: %s", msg);
	return 0;
}

static int dup_opt(const char *s, char **ret)
{
	*ret = NULL;
	if (!s)
		return 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

/* A profile attribute that no profile has is almost surely a typo: refuse it by name. */
static int check_field(struct handler_ctx *h, const char *what, const char *field)
{
	size_t sampled = 0;
	int r;

	r = check_printable(what, field, h->err, h->errlen);
	if (r < 0)
		return r;
	r = store_data_attribute_exists(h->srv->store, field, 0, &sampled);
	if (r < 0)
		return store_failed(h, r, "look up profile attributes");
	if (r == 0 && sampled == 0)
		return set_error(h->err, h->errlen, -EINVAL,
				 "%s: there are no profiles yet, so \"%s\" cannot be checked; load "
				 "profiles first (upstream writer or 'ccsyncctl import profiles')",
				 what, field);
	if (r == 0)
		return set_error(h->err, h->errlen, -EINVAL,
				 "%s: no profile has an attribute named \"%s\" (looked at %zu "
				 "profiles; names are case-sensitive)", what, field, sampled);
	return 0;
}

/*
 * Builds a complete export from add-shaped arguments (already checked by the codec against
 * export.add's specification): resolves the connection and segments, checks every field against
 * the profiles, parses the schedule. Nothing is written.
 */
static int export_from_args(struct handler_ctx *h, json_t *a, int64_t export_id,
			    struct store_export *ret)
{
	struct store_export e = { .export_id = export_id };
	struct store_connection conn = {};
	const char *name = arg_str(a, "name"), *list_id = arg_str(a, "list_id");
	const char *cron = arg_str(a, "cron"), *zone = arg_str(a, "time_zone");
	json_t *segments = json_object_get(a, "segments"), *fields = json_object_get(a, "fields");
	json_t *share = json_object_get(a, "mirror_max_remove_share");
	struct store_export other = {};
	const char *key;
	json_t *v;
	size_t i;
	int r;

	r = check_printable("name", name, h->err, h->errlen);
	if (r < 0)
		return r;
	r = store_config_export_find(h->srv->store, name, &other);
	if (r == 0) {
		bool same = other.export_id == export_id;

		store_export_done(&other);
		if (!same)
			return set_error(h->err, h->errlen, -EEXIST,
					 "an export named \"%s\" already exists", name);
	} else if (r != -ENOENT) {
		return store_failed(h, r, "read exports");
	}
	if (!is_uuid(list_id))
		return set_error(h->err, h->errlen, -EINVAL, "list_id: \"%.40s\" is not a list ID; "
				 "list IDs are UUIDs such as 0b1c3f4a-8a51-11ee-9f4c-fa163e0b7c29 "
				 "(see 'ccsyncctl lists CONNECTION')", list_id);
	r = find_connection(h, arg_str(a, "connection"), true, &conn);
	if (r < 0)
		return r;
	e.connection_id = conn.connection_id;
	r = dup_opt(conn.name, &e.connection_name);
	store_connection_done(&conn);
	if (r < 0)
		goto oom;

	r = check_field(h, "email_field", arg_str(a, "email_field"));
	if (r >= 0 && arg_str(a, "first_name_field"))
		r = check_field(h, "first_name_field", arg_str(a, "first_name_field"));
	if (r >= 0 && arg_str(a, "last_name_field"))
		r = check_field(h, "last_name_field", arg_str(a, "last_name_field"));
	if (r < 0)
		goto fail;
	json_object_foreach(fields, key, v) {
		r = check_target(key, h->err, h->errlen);
		if (r < 0)
			goto fail;
		r = check_field(h, "fields", json_string_value(v));
		if (r < 0)
			goto fail;
	}

	if (cron) {
		struct cron_expr ce;
		char msg[256];

		r = cron_parse(cron, &ce, msg, sizeof(msg));
		if (r < 0) {
			r = set_error(h->err, h->errlen, -EINVAL, "cron: %s", msg);
			goto fail;
		}
	}
	if (zone) {
		struct tz *tz = NULL;
		char msg[256];

		r = tzfile_load(zone, CCSYNC_ZONEINFO_DIR, &tz, msg, sizeof(msg));
		if (r < 0) {
			r = set_error(h->err, h->errlen, -EINVAL, "time_zone: %s", msg);
			goto fail;
		}
		tzfile_free(tz);
	}

	e.segments = calloc(json_array_size(segments) ?: 1, sizeof(*e.segments));
	if (!e.segments)
		goto oom;
	json_array_foreach(segments, i, v) {
		const char *sname = json_string_value(v);
		int64_t sid;
		bool dup = false;

		r = store_data_segment_lookup(h->srv->store, sname, &sid);
		if (r == -ENOENT) {
			r = set_error(h->err, h->errlen, -ENOENT, "segment \"%s\" does not exist "
				      "(see 'ccsyncctl segments')", sname);
			goto fail;
		}
		if (r < 0) {
			r = store_failed(h, r, "look up segments");
			goto fail;
		}
		for (size_t j = 0; j < e.n_segments; j++)
			dup = dup || e.segments[j].segment_id == sid;
		if (dup)
			continue;
		e.segments[e.n_segments].segment_id = sid;
		if (dup_opt(sname, &e.segments[e.n_segments].name) < 0)
			goto oom;
		e.n_segments++;
	}
	e.fields = calloc(json_object_size(fields) ?: 1, sizeof(*e.fields));
	if (!e.fields)
		goto oom;
	json_object_foreach(fields, key, v) {
		struct store_export_field *f = &e.fields[e.n_fields++];

		if (dup_opt(key, &f->target) < 0 ||
		    dup_opt(json_string_value(v), &f->source_field) < 0)
			goto oom;
	}

	e.follows_refresh = arg_bool(a, "follows_refresh", true);
	e.has_mirror_share = share != NULL;
	e.mirror_max_remove_share = share ? json_number_value(share) : 0;
	if (dup_opt(name, &e.name) < 0 || dup_opt(list_id, &e.list_id) < 0 ||
	    dup_opt(arg_str(a, "mode") ?: "upsert", &e.mode) < 0 ||
	    dup_opt(arg_str(a, "email_field"), &e.email_field) < 0 ||
	    dup_opt(arg_str(a, "first_name_field"), &e.first_name_field) < 0 ||
	    dup_opt(arg_str(a, "last_name_field"), &e.last_name_field) < 0 ||
	    dup_opt(cron, &e.cron) < 0 || dup_opt(zone, &e.time_zone) < 0 ||
	    dup_opt(h->peer->user_name, &e.created_by) < 0)
		goto oom;
	*ret = e;
	return 0;
oom:
	r = -ENOMEM;
fail:
	store_export_done(&e);
	return r;
}

static int find_export(struct handler_ctx *h, const char *name, struct store_export *ret)
{
	int r = store_config_export_find(h->srv->store, name, ret);

	if (r == -ENOENT)
		return set_error(h->err, h->errlen, -ENOENT,
				 "export \"%s\" not found (see 'ccsyncctl export list')", name);
	if (r < 0)
		return store_failed(h, r, "read the export");
	if (!usable_by_peer(h->peer, ret->connection_usable_by)) {
		r = set_error(h->err, h->errlen, -EACCES, "export \"%s\" uses connection \"%s\", "
			      "which is usable by admins only", name, ret->connection_name);
		store_export_done(ret);
		return r;
	}
	return 0;
}

/*
 * Writes a built export (insert when export_id is 0) with its audit row. *ret_result is
 * {"export": ..., "warnings": [...]}. Used directly and as the continuation of validate_list.
 */
static int export_save(struct control_server *srv, const struct control_peer *peer,
		       struct store_export *e, json_t *before, json_t *warnings,
		       json_t **ret_result, char *err, size_t errlen)
{
	struct store_export saved = {};
	json_t *after = NULL;
	bool insert = e->export_id == 0;
	int64_t id = e->export_id;
	int r;

	r = store_begin_write(srv->store);
	if (r < 0)
		goto fail_store;
	r = insert ? store_config_export_insert(srv->store, e, store_config_now(), &id)
		   : store_config_export_update(srv->store, e, store_config_now());
	if (r == -EEXIST) {
		/* Checked before; only a concurrent change of the same name gets here. */
		r = set_error(err, errlen, -EEXIST, "an export named \"%s\" already exists",
			      e->name);
		goto fail;
	}
	if (r == -ENOENT) {
		r = set_error(err, errlen, -ENOENT, "export \"%s\" was removed meanwhile", e->name);
		goto fail;
	}
	if (r < 0)
		goto fail_store;
	r = store_config_export_get(srv->store, id, &saved);
	if (r < 0)
		goto fail_store;
	after = export_json(&saved);
	store_export_done(&saved);
	if (!after) {
		r = -ENOMEM;
		goto fail;
	}
	r = audit(srv, peer, insert ? "export.add" : "export.edit", "export", id, before, after);
	if (r < 0)
		goto fail_store;
	r = store_commit(srv->store);
	if (r < 0)
		goto fail_store;
	log_info("control: %s %s export \"%s\" (id %lld)", peer->user_name,
		 insert ? "added" : "changed", e->name, (long long)id);
	if (srv->ops.config_changed)
		srv->ops.config_changed(srv->ops.ctx);
	*ret_result = json_pack("{s:o, s:O}", "export", after, "warnings", warnings);
	return *ret_result ? 0 : -ENOMEM;
fail_store:
	r = set_error(err, errlen, r < 0 ? r : -EIO, "cannot save the export: %s",
		      store_errmsg(srv->store));
fail:
	(void)store_rollback(srv->store);
	json_decref(after);
	return r;
}

static void finish_export_save(struct control_call *call, int r, json_t *result,
			       const char *message)
{
	char err[512] = "";
	json_t *reply = NULL;

	json_decref(result);
	if (!call->client || call->srv->closing)
		return; /* nobody to confirm it to: a save nobody sees would surprise */
	if (r == -ENOENT) {
		snprintf(err, sizeof(err), "list_id: Constant Contact has no list %s in the "
			 "account of connection \"%s\"%s%s (see 'ccsyncctl lists %s')",
			 call->pending_export.list_id, call->pending_export.connection_name,
			 message && *message ? ": " : "", message ? message : "",
			 call->pending_export.connection_name);
		send_error(call->client, call->id, -EINVAL, err);
		return;
	}
	if (r < 0) {
		char w[512];

		snprintf(w, sizeof(w), "list ID not checked against Constant Contact: %s",
			 message && *message ? message : strerror(-r));
		(void)json_array_append_new(call->warnings, json_string(w));
	}
	r = export_save(call->srv, &call->peer, &call->pending_export, call->before,
			call->warnings, &reply, err, sizeof(err));
	if (r < 0)
		send_error(call->client, call->id, r, err);
	else
		send_ok(call->client, call->id, reply);
}

/* Shared tail of export.add and export.edit: validate the list when we can, then save. */
static int export_validate_and_save(struct handler_ctx *h, struct store_export *e,
				    json_t *before, bool list_changed, json_t **ret)
{
	json_t *warnings = json_array();
	struct control_call *call;
	int r;

	if (!warnings)
		return -ENOMEM;
	if (list_changed && h->srv->ops.validate_list) {
		r = start_call(h, finish_export_save, &call);
		if (r < 0) {
			json_decref(warnings);
			return r;
		}
		call->pending_export = *e;
		call->has_pending_export = true;
		memset(e, 0, sizeof(*e));
		call->before = json_incref(before);
		call->warnings = warnings;
		r = h->srv->ops.validate_list(h->srv->ops.ctx, call,
					      call->pending_export.connection_id,
					      call->pending_export.list_id);
		if (r < 0) {
			/* Could not even ask: save anyway, as when Constant Contact is down. */
			char w[512];

			*e = call->pending_export;
			memset(&call->pending_export, 0, sizeof(call->pending_export));
			call->has_pending_export = false;
			warnings = json_incref(call->warnings);
			call_discard(call);
			snprintf(w, sizeof(w), "list ID not checked against Constant Contact: %s",
				 strerror(-r));
			(void)json_array_append_new(warnings, json_string(w));
		} else {
			return HANDLER_ASYNC;
		}
	} else if (list_changed) {
		(void)json_array_append_new(warnings, json_string(
			"list ID not checked against Constant Contact: not available in this "
			"daemon build"));
	}
	r = export_save(h->srv, h->peer, e, before, warnings, ret, h->err, h->errlen);
	json_decref(warnings);
	return r;
}

static int handle_export_add(struct handler_ctx *h, json_t **ret)
{
	struct store_export e = {};
	int r;

	r = export_from_args(h, h->args, 0, &e);
	if (r < 0)
		return r;
	r = export_validate_and_save(h, &e, NULL, true, ret);
	store_export_done(&e);
	return r;
}

static int handle_export_edit(struct handler_ctx *h, json_t **ret)
{
	struct store_export cur = {}, e = {};
	json_t *merged = NULL, *before = NULL, *v;
	const char *key;
	bool list_changed, any = false;
	int r;

	r = find_export(h, arg_str(h->args, "export"), &cur);
	if (r < 0)
		return r;
	merged = export_as_args(&cur);
	before = export_json(&cur);
	if (!merged || !before) {
		r = -ENOMEM;
		goto out;
	}
	json_object_foreach(h->args, key, v) {
		if (streq(key, "export"))
			continue;
		any = true;
		if (json_is_null(v)) {
			(void)json_object_del(merged, key); /* -1 only when absent already */
			continue;
		}
		if (json_object_set(merged, key, v) < 0) {
			r = -ENOMEM;
			goto out;
		}
	}
	if (!any) {
		r = set_error(h->err, h->errlen, -EINVAL, "nothing to change: give at least one "
			      "setting to change");
		goto out;
	}
	/* Laid over the current export, the arguments must make a complete, valid export. */
	r = ctlproto_validate_args(ctlproto_command_get(CTL_EXPORT_ADD), merged, h->err,
				   h->errlen);
	if (r < 0)
		goto out;
	r = export_from_args(h, merged, cur.export_id, &e);
	if (r < 0)
		goto out;
	list_changed = !streq(e.list_id, cur.list_id) || e.connection_id != cur.connection_id;
	if (list_changed) {
		struct store_data_run *runs = NULL;
		size_t n = 0;

		r = store_data_runs_list(h->srv->store, cur.export_id, 0, 1, &runs, &n, NULL, 0);
		if (r < 0) {
			r = store_failed(h, r, "read the export's runs");
			goto out;
		}
		store_data_runs_free(runs, n);
		/* Sync state records what this export put on *its* list; against another list
		 * (or account) it would be wrong in both directions, and mirror mode acts on it. */
		if (n > 0) {
			r = set_error(h->err, h->errlen, -EEXIST, "export \"%s\" has already run "
				      "against list %s: its sync state belongs to that list; add a "
				      "new export for the other list (and remove this one) instead",
				      cur.name, cur.list_id);
			goto out;
		}
	}
	r = export_validate_and_save(h, &e, before, list_changed, ret);
out:
	store_export_done(&cur);
	store_export_done(&e);
	json_decref(merged);
	json_decref(before);
	return r;
}

static int handle_export_list(struct handler_ctx *h, json_t **ret)
{
	struct store_export *v = NULL;
	size_t n = 0;
	json_t *arr;
	int r;

	r = store_config_export_list(h->srv->store, &v, &n);
	if (r < 0)
		return store_failed(h, r, "list exports");
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		if (!usable_by_peer(h->peer, v[i].connection_usable_by))
			continue;
		if (json_array_append_new(arr, export_json(&v[i])) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	store_export_array_free(v, n);
	if (!arr)
		return -ENOMEM;
	*ret = arr;
	return 0;
}

static int handle_export_show(struct handler_ctx *h, json_t **ret)
{
	struct store_export e = {};
	int r = find_export(h, arg_str(h->args, "export"), &e);

	if (r < 0)
		return r;
	*ret = export_json(&e);
	store_export_done(&e);
	return *ret ? 0 : -ENOMEM;
}

/* export.remove, export.enable, export.disable: one row change plus audit. */
static int export_change(struct handler_ctx *h, enum ctlproto_command_id cmd, json_t **ret)
{
	struct store_export e = {}, after_e = {};
	json_t *before = NULL, *after = NULL;
	const char *reason = arg_str(h->args, "reason");
	char reason_buf[600];
	int r;

	r = find_export(h, arg_str(h->args, "export"), &e);
	if (r < 0)
		return r;
	if (cmd == CTL_EXPORT_ENABLE && e.connection_removed) {
		r = set_error(h->err, h->errlen, -ENOKEY, "export \"%s\" cannot be enabled: its "
			      "connection \"%s\" was removed; point it at another connection first "
			      "(export edit --connection)", e.name, e.connection_name);
		goto out;
	}
	before = export_json(&e);
	if (!before) {
		r = -ENOMEM;
		goto out;
	}
	if (cmd == CTL_EXPORT_DISABLE) {
		snprintf(reason_buf, sizeof(reason_buf), "disabled by %s%s%s", h->peer->user_name,
			 reason && *reason ? ": " : "", reason ? reason : "");
		r = check_printable("reason", reason_buf, h->err, h->errlen);
		if (r < 0)
			goto out;
	}
	r = store_begin_write(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "start a transaction");
		goto out;
	}
	if (cmd == CTL_EXPORT_REMOVE)
		r = store_config_export_remove(h->srv->store, e.export_id, store_config_now());
	else
		r = store_config_export_set_enabled(h->srv->store, e.export_id,
						    cmd == CTL_EXPORT_ENABLE, reason_buf,
						    store_config_now());
	if (r < 0) {
		r = store_failed(h, r, "change the export");
		goto fail;
	}
	if (cmd != CTL_EXPORT_REMOVE) {
		r = store_config_export_get(h->srv->store, e.export_id, &after_e);
		if (r < 0) {
			r = store_failed(h, r, "read the export back");
			goto fail;
		}
		after = export_json(&after_e);
		store_export_done(&after_e);
		if (!after) {
			r = -ENOMEM;
			goto fail;
		}
	}
	r = audit(h->srv, h->peer, h->req->command->name, "export", e.export_id, before, after);
	if (r < 0) {
		r = store_failed(h, r, "write the audit log");
		goto fail;
	}
	r = store_commit(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "commit");
		goto fail;
	}
	log_info("control: %s: %s export \"%s\" (id %lld)", h->req->command->name,
		 h->peer->user_name, e.name, (long long)e.export_id);
	if (cmd == CTL_EXPORT_REMOVE && h->srv->ops.export_removed)
		h->srv->ops.export_removed(h->srv->ops.ctx, e.export_id);
	if (h->srv->ops.config_changed)
		h->srv->ops.config_changed(h->srv->ops.ctx);
	*ret = json_pack("{s:O}", "export", after ? after : before);
	r = *ret ? 0 : -ENOMEM;
	goto out;
fail:
	(void)store_rollback(h->srv->store);
out:
	store_export_done(&e);
	json_decref(before);
	json_decref(after);
	return r;
}

static int handle_export_remove(struct handler_ctx *h, json_t **ret)
{
	return export_change(h, CTL_EXPORT_REMOVE, ret);
}

static int handle_export_enable(struct handler_ctx *h, json_t **ret)
{
	return export_change(h, CTL_EXPORT_ENABLE, ret);
}

static int handle_export_disable(struct handler_ctx *h, json_t **ret)
{
	return export_change(h, CTL_EXPORT_DISABLE, ret);
}

/* ---- runs ---- */

/*
 * Who asked for which run goes to the audit log once the runner took the request: at its first
 * progress message or at its success, whichever comes first, with the run id when known. A
 * refused request changed nothing and is not audited.
 */
static void audit_run_request(struct control_call *call, json_t *source)
{
	json_t *after = TAKE_PTR(call->run_audit);
	json_t *run_id = json_object_get(source, "run_id");

	if (json_is_integer(run_id))
		(void)json_object_set(after, "run_id", run_id);
	audit_now(call->srv, &call->peer, "run", "export", call->object_id, after);
	json_decref(after);
}

static void finish_run(struct control_call *call, int r, json_t *result, const char *message)
{
	if (r >= 0 && call->run_audit)
		audit_run_request(call, result);
	call_reply(call, r, result, message);
}

static int handle_run(struct handler_ctx *h, json_t **ret)
{
	struct store_export e = {};
	struct store_connection conn = {};
	struct control_call *call;
	struct control_server *srv = h->srv;
	unsigned flags = 0;
	int64_t export_id;
	int r;

	r = find_export(h, arg_str(h->args, "export"), &e);
	if (r < 0)
		return r;
	export_id = e.export_id;
	if (e.connection_removed) {
		r = set_error(h->err, h->errlen, -ENOKEY, "export \"%s\" cannot run: its "
			      "connection \"%s\" was removed", e.name, e.connection_name);
		goto out;
	}
	if (!e.enabled) {
		r = set_error(h->err, h->errlen, -EBUSY, "export \"%s\" is disabled (%s); enable "
			      "it first with 'ccsyncctl export enable %s'", e.name,
			      e.disabled_reason ? e.disabled_reason : "no reason given", e.name);
		goto out;
	}
	r = store_config_connection_get(srv->store, e.connection_id, &conn);
	if (r < 0) {
		r = store_failed(h, r, "read the export's connection");
		goto out;
	}
	if (!conn.consent_by) {
		r = set_error(h->err, h->errlen, -ENOKEY, "export \"%s\" cannot run: connection "
			      "\"%s\" has no data-privacy consent recorded; an admin must run "
			      "'ccsyncctl connection consent %s' first", e.name, conn.name,
			      conn.name);
		goto out;
	}
	if (!srv->ops.run_export) {
		op_missing(h);
		r = -EOPNOTSUPP;
		goto out;
	}
	if (arg_bool(h->args, "dry_run", false))
		flags |= CONTROL_RUN_DRY_RUN;
	if (arg_bool(h->args, "full", false))
		flags |= CONTROL_RUN_FULL;
	if (arg_bool(h->args, "force", false))
		flags |= CONTROL_RUN_FORCE;
	if (arg_bool(h->args, "follow", false))
		flags |= CONTROL_RUN_FOLLOW;
	r = start_call(h, finish_run, &call);
	if (r < 0)
		goto out;
	call->object_id = export_id;
	call->run_audit = json_pack("{s:b, s:b, s:b, s:b}", "dry_run",
				    !!(flags & CONTROL_RUN_DRY_RUN), "full",
				    !!(flags & CONTROL_RUN_FULL), "force",
				    !!(flags & CONTROL_RUN_FORCE), "follow",
				    !!(flags & CONTROL_RUN_FOLLOW));
	if (!call->run_audit) {
		call_discard(call);
		r = -ENOMEM;
		goto out;
	}
	r = srv->ops.run_export(srv->ops.ctx, call, export_id, flags);
	if (r < 0) {
		r = op_refused(h, call, r);
		goto out;
	}
	r = HANDLER_ASYNC;
out:
	store_export_done(&e);
	store_connection_done(&conn);
	return r;
}

/* ---- requests that touch no configuration ---- */

static int handle_whoami(struct handler_ctx *h, json_t **ret)
{
	*ret = json_pack("{s:I, s:I, s:s, s:s}", "uid", (json_int_t)h->peer->uid, "gid",
			 (json_int_t)h->peer->gid, "user", h->peer->user_name, "role",
			 control_role_to_string(h->peer->role));
	return *ret ? 0 : -ENOMEM;
}

static int simple_op(struct handler_ctx *h, int (*op)(void *, struct control_call *),
		     call_finish_fn finish)
{
	struct control_call *call;
	int r;

	if (!op) {
		op_missing(h);
		return -EOPNOTSUPP;
	}
	r = start_call(h, finish, &call);
	if (r < 0)
		return r;
	r = op(h->srv->ops.ctx, call);
	if (r < 0)
		return op_refused(h, call, r);
	return HANDLER_ASYNC;
}

static int handle_status(struct handler_ctx *h, json_t **ret)
{
	return simple_op(h, h->srv->ops.status, NULL);
}

static void finish_refresh_done(struct control_call *call, int r, json_t *result,
				const char *message)
{
	json_t *reply;

	if (r < 0) {
		json_decref(result);
		call_reply(call, r, NULL, message);
		return;
	}
	reply = json_pack("{s:I, s:O?}", "refresh_id", (json_int_t)call->object_id, "runs",
			  json_object_get(result, "runs"));
	json_decref(result);
	call_reply(call, reply ? 0 : -ENOMEM, reply, NULL);
}

static int handle_refresh_done(struct handler_ctx *h, json_t **ret)
{
	struct control_call *call;
	json_t *after = NULL;
	int64_t refresh_id;
	int r;

	r = store_begin_write(h->srv->store);
	if (r < 0)
		return store_failed(h, r, "start a transaction");
	r = store_data_refresh_announce(h->srv->store, &refresh_id);
	if (r < 0) {
		r = store_failed(h, r, "record the refresh");
		goto fail;
	}
	after = json_pack("{s:I}", "refresh_id", (json_int_t)refresh_id);
	r = after ? audit(h->srv, h->peer, "refresh_done", "refresh", refresh_id, NULL, after)
		  : -ENOMEM;
	json_decref(after);
	if (r < 0) {
		r = store_failed(h, r, "write the audit log");
		goto fail;
	}
	r = store_commit(h->srv->store);
	if (r < 0) {
		r = store_failed(h, r, "commit");
		goto fail;
	}
	log_info("control: %s announced a finished upstream refresh (id %lld)",
		 h->peer->user_name, (long long)refresh_id);
	if (!h->srv->ops.refresh_done) {
		/* Recorded like an upstream writer's own announcement: that is all there is to do
		 * until a runner exists to act on it. "runs": null says nothing was started. */
		*ret = json_pack("{s:I, s:n}", "refresh_id", (json_int_t)refresh_id, "runs");
		return *ret ? 0 : -ENOMEM;
	}
	r = start_call(h, finish_refresh_done, &call);
	if (r < 0)
		return r;
	call->object_id = refresh_id;
	r = h->srv->ops.refresh_done(h->srv->ops.ctx, call, refresh_id);
	if (r < 0)
		return op_refused(h, call, r);
	return HANDLER_ASYNC;
fail:
	(void)store_rollback(h->srv->store);
	return r;
}

static int handle_audit(struct handler_ctx *h, json_t **ret)
{
	struct store_audit_entry *v = NULL;
	size_t n = 0;
	int64_t limit = arg_int(h->args, "limit", AUDIT_DEFAULT_LIMIT);
	json_t *arr, *o;
	int r;

	r = store_config_audit_list(h->srv->store, arg_int(h->args, "before", 0), (size_t)limit,
				    &v, &n);
	if (r < 0)
		return store_failed(h, r, "read the audit log");
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		json_t *before = v[i].before_json ? json_loads(v[i].before_json, 0, NULL) : NULL;
		json_t *after = v[i].after_json ? json_loads(v[i].after_json, 0, NULL) : NULL;

		o = json_pack("{s:I, s:I, s:o, s:s?, s:s, s:s, s:s?, s:o, s:o}",
			      "id", (json_int_t)v[i].audit_id,
			      "at", (json_int_t)v[i].at,
			      "uid", v[i].has_uid ? json_integer(v[i].uid) : json_null(),
			      "user", v[i].user_name,
			      "action", v[i].action,
			      "object_type", v[i].object_type,
			      "object_id", v[i].object_id,
			      "before", before ? before : json_null(),
			      "after", after ? after : json_null());
		if (json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	o = n == (size_t)limit && n > 0 ? json_integer(v[n - 1].audit_id) : json_null();
	store_audit_entry_array_free(v, n);
	if (!arr) {
		json_decref(o);
		return -ENOMEM;
	}
	*ret = json_pack("{s:o, s:o}", "entries", arr, "next_before", o);
	return *ret ? 0 : -ENOMEM;
}

/* ---- imports ---- */

static int handle_import(struct handler_ctx *h, json_t **ret)
{
	const char *kind = arg_str(h->args, "kind"), *segment = arg_str(h->args, "segment");
	struct control_import_spec spec = {
		.kind = kind,
		.format = arg_str(h->args, "format"),
		.segment = segment,
		.peer = h->peer,
	};
	void *session = NULL;
	int r;

	if (!h->srv->ops.import_begin || !h->srv->ops.import_data || !h->srv->ops.import_end ||
	    !h->srv->ops.import_abort) {
		op_missing(h);
		return -EOPNOTSUPP;
	}
	if (streq(kind, "segment") && !segment)
		return set_error(h->err, h->errlen, -EINVAL, "args.segment: required when "
				 "importing a segment (the segment's name)");
	if (streq(kind, "profiles") && segment)
		return set_error(h->err, h->errlen, -EINVAL, "args.segment: only for kind "
				 "\"segment\"");
	if (segment) {
		r = check_printable("segment", segment, h->err, h->errlen);
		if (r < 0)
			return r;
	}
	r = h->srv->ops.import_begin(h->srv->ops.ctx, &spec, &session, h->err, h->errlen);
	if (r < 0)
		return r;
	h->client->import_session = session;
	h->client->import_bytes = 0;
	*ret = json_pack("{s:s, s:i}", "import", "open", "chunk_bytes", CTLPROTO_IMPORT_CHUNK);
	return *ret ? 0 : -ENOMEM;
}

static int handle_import_data(struct handler_ctx *h, json_t **ret)
{
	json_t *data = json_object_get(h->args, "data"), *info = NULL;
	_cleanup_free_ unsigned char *bytes = NULL;
	size_t len;
	int r;

	if (!h->client->import_session)
		return set_error(h->err, h->errlen, -EINVAL, "no import is open on this "
				 "connection; send \"import\" first");
	r = ctlproto_base64_decode(json_string_value(data), json_string_length(data), &bytes, &len);
	if (r < 0) {
		client_abort_import(h->client);
		return set_error(h->err, h->errlen, r, "args.data: %s; the import was abandoned, "
				 "nothing was imported", r == -EINVAL ? "not valid base64" :
				 "out of memory");
	}
	r = h->srv->ops.import_data(h->srv->ops.ctx, h->client->import_session, bytes, len, &info,
				    h->err, h->errlen);
	if (r < 0) {
		client_abort_import(h->client);
		return r;
	}
	h->client->import_bytes += len;
	if (!info)
		info = json_object();
	if (info && json_object_set_new(info, "bytes",
					json_integer((json_int_t)h->client->import_bytes)) < 0) {
		json_decref(info);
		info = NULL;
	}
	*ret = info;
	return info ? 0 : -ENOMEM;
}

static int handle_import_end(struct handler_ctx *h, json_t **ret)
{
	json_t *summary = NULL;
	void *session = h->client->import_session;
	int r;

	if (!session)
		return set_error(h->err, h->errlen, -EINVAL, "no import is open on this "
				 "connection; send \"import\" first");
	h->client->import_session = NULL;
	r = h->srv->ops.import_end(h->srv->ops.ctx, session, &summary, h->err, h->errlen);
	if (r < 0) {
		h->srv->ops.import_abort(h->srv->ops.ctx, session);
		return r;
	}
	audit_now(h->srv, h->peer, "import", "data", 0, summary);
	*ret = summary ? summary : json_object();
	return *ret ? 0 : -ENOMEM;
}

/* ---- dispatch ---- */

typedef int (*handler_fn)(struct handler_ctx *h, json_t **ret);

struct command_entry {
	handler_fn handler;
	enum control_role role; /* the least role that may send it */
};

static int handle_segments(struct handler_ctx *h, json_t **ret);
static int handle_runs(struct handler_ctx *h, json_t **ret);
static int handle_run_show(struct handler_ctx *h, json_t **ret);
static int handle_rejected(struct handler_ctx *h, json_t **ret);
static int handle_cancel(struct handler_ctx *h, json_t **ret);

static const struct command_entry command_table[_CTL_COMMAND_MAX] = {
	[CTL_WHOAMI] = { handle_whoami, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_CONNECTION_ADD] = { handle_connection_add, CONTROL_ROLE_ADMIN },
	[CTL_CONNECTION_LIST] = { handle_connection_list, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_CONNECTION_SHOW] = { handle_connection_show, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_CONNECTION_EDIT] = { handle_connection_edit, CONTROL_ROLE_ADMIN },
	[CTL_CONNECTION_REMOVE] = { handle_connection_remove, CONTROL_ROLE_ADMIN },
	[CTL_CONNECTION_CONSENT] = { handle_connection_consent, CONTROL_ROLE_ADMIN },
	[CTL_CONNECTION_AUTHORIZE] = { handle_connection_authorize, CONTROL_ROLE_ADMIN },
	[CTL_LISTS] = { handle_lists, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_ADD] = { handle_export_add, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_LIST] = { handle_export_list, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_SHOW] = { handle_export_show, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_EDIT] = { handle_export_edit, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_REMOVE] = { handle_export_remove, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_ENABLE] = { handle_export_enable, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_DISABLE] = { handle_export_disable, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_RUN] = { handle_run, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_CANCEL] = { handle_cancel, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_REFRESH_DONE] = { handle_refresh_done, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_RUNS] = { handle_runs, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_RUN_SHOW] = { handle_run_show, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_REJECTED] = { handle_rejected, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_STATUS] = { handle_status, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_SEGMENTS] = { handle_segments, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_IMPORT] = { handle_import, CONTROL_ROLE_ADMIN },
	[CTL_IMPORT_DATA] = { handle_import_data, CONTROL_ROLE_ADMIN },
	[CTL_IMPORT_END] = { handle_import_end, CONTROL_ROLE_ADMIN },
	[CTL_AUDIT] = { handle_audit, CONTROL_ROLE_ADMIN },
};

static void handle_line(struct control_client *c, const char *line, size_t len)
{
	struct ctlproto_request req = {};
	const struct command_entry *entry;
	char err[1024] = "";
	json_t *result = NULL;
	int r;

	if (len == 0 || (len == 1 && line[0] == '\r'))
		return; /* blank lines are keep-alives for hand-typed sessions */
	r = ctlproto_parse_request(line, len, &req, err, sizeof(err));
	if (r < 0) {
		send_error(c, ctlproto_salvage_id(line, len), r, err);
		return;
	}
	if (c->import_session && req.command->id != CTL_IMPORT_DATA &&
	    req.command->id != CTL_IMPORT_END) {
		client_abort_import(c);
		send_error(c, req.id, -EBUSY, "an import was open on this connection and has been "
			   "abandoned (nothing imported): only import.data and import.end may "
			   "follow import");
		goto out;
	}
	entry = &command_table[req.command->id];
	if (c->peer.role < entry->role) {
		snprintf(err, sizeof(err), "permission denied: %s needs the %s role (%s is %s)",
			 req.command->name, control_role_to_string(entry->role), c->peer.user_name,
			 control_role_to_string(c->peer.role));
		send_error(c, req.id, -EACCES, err);
		goto out;
	}
	{
		struct handler_ctx h = {
			.client = c,
			.srv = c->srv,
			.req = &req,
			.args = req.args,
			.peer = &c->peer,
			.err = err,
			.errlen = sizeof(err),
		};

		r = entry->handler(&h, &result);
	}
	if (r == HANDLER_ASYNC)
		goto out;
	if (r < 0) {
		json_decref(result);
		send_error(c, req.id, r, err);
	} else {
		send_ok(c, req.id, result);
	}
out:
	ctlproto_request_done(&req);
}

static void client_process(struct control_client *c)
{
	const char *line;
	size_t len;
	int r;

	if (c->dispatching || c->closing || c->finishing)
		return;
	c->dispatching = true;
	while (!c->closing && !c->call) {
		r = ctlproto_framer_next(&c->in, &line, &len);
		if (r == 0)
			break;
		if (r < 0) {
			char msg[128];

			snprintf(msg, sizeof(msg), "message longer than %d bytes; closing the "
				 "connection", CTLPROTO_MAX_MESSAGE);
			send_error(c, -1, -EMSGSIZE, msg);
			c->dispatching = false;
			client_finish(c);
			return;
		}
		handle_line(c, line, len);
	}
	c->dispatching = false;
	if (c->closing)
		return;
	if (c->call) {
		/* Busy: keep listening for a hang-up, but stop buffering a flood. */
		if (c->reading && ctlproto_framer_pending(&c->in) > CTLPROTO_MAX_MESSAGE) {
			(void)uv_read_stop((uv_stream_t *)&c->pipe);
			c->reading = false;
		}
		return;
	}
	if (c->eof) {
		if (ctlproto_framer_pending(&c->in) > 0)
			send_error(c, -1, -EBADMSG, "truncated message: the connection was closed "
				   "before the end of the line");
		client_finish(c);
		return;
	}
	if (!c->reading)
		client_start_reading(c);
}

/* ---- run history and segments (lib/store-data.h) ---- */

json_t *control_run_json(const struct store_data_run *r)
{
	const struct store_data_counters *k = &r->counters;

	return json_pack("{s:I, s:I, s:s?, s:s, s:s, s:b, s:b, s:b, s:s?, s:o, s:I, s:o, s:o, "
			 "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s?}",
			 "id", (json_int_t)r->run_id,
			 "export_id", (json_int_t)r->export_id,
			 "export", r->export_name,
			 "state", store_data_run_state_to_string(r->state) ?: "unknown",
			 "trigger", store_data_trigger_to_string(r->trigger) ?: "unknown",
			 "dry_run", r->dry_run,
			 "full", r->full_resend,
			 "force", r->force,
			 "requested_by", r->requested_by,
			 "resumed_from", time_json(r->resumed_from),
			 "queued_at", (json_int_t)r->queued_at,
			 "started_at", time_json(r->started_at),
			 "finished_at", time_json(r->finished_at),
			 "selected", (json_int_t)k->selected,
			 "sent", (json_int_t)k->sent,
			 "rejected", (json_int_t)k->rejected,
			 "unchanged", (json_int_t)k->unchanged,
			 "removed", (json_int_t)k->removed,
			 "pending", (json_int_t)k->pending,
			 "batches_total", (json_int_t)k->batches_total,
			 "batches_done", (json_int_t)k->batches_done,
			 "error", r->error);
}

/* Contributors see runs of the exports they may use, and nothing of the others. */
static int check_export_access(struct handler_ctx *h, int64_t export_id, const char *what)
{
	struct store_export e = {};
	int r;

	if (is_admin(h->peer))
		return 0;
	r = store_config_export_get(h->srv->store, export_id, &e);
	if (r == -ENOENT)
		return set_error(h->err, h->errlen, -EACCES, "%s belongs to a removed export, "
				 "which only admins may inspect", what);
	if (r < 0)
		return store_failed(h, r, "read the export");
	r = usable_by_peer(h->peer, e.connection_usable_by) ? 0 :
		set_error(h->err, h->errlen, -EACCES, "%s belongs to export \"%s\", whose "
			  "connection \"%s\" is usable by admins only", what, e.name,
			  e.connection_name);
	store_export_done(&e);
	return r;
}

static int get_run(struct handler_ctx *h, int64_t run_id, struct store_data_run **ret)
{
	char what[64], msg[256] = "";
	int r;

	r = store_data_run_get(h->srv->store, run_id, ret, msg, sizeof(msg));
	if (r == -ENOENT)
		return set_error(h->err, h->errlen, -ENOENT, "run %lld not found (see 'ccsyncctl "
				 "runs')", (long long)run_id);
	if (r < 0)
		return set_error(h->err, h->errlen, r, "cannot read run %lld: %s",
				 (long long)run_id, msg[0] ? msg : store_errmsg(h->srv->store));
	snprintf(what, sizeof(what), "run %lld", (long long)run_id);
	r = check_export_access(h, (*ret)->export_id, what);
	if (r < 0)
		*ret = store_data_run_free(*ret);
	return r;
}

static int handle_runs(struct handler_ctx *h, json_t **ret)
{
	const char *name = arg_str(h->args, "export");
	struct store_data_run *runs = NULL;
	struct store_export e = {};
	size_t n = 0;
	int64_t export_id = 0, limit = arg_int(h->args, "limit", 20);
	char msg[256] = "";
	json_t *arr;
	int r;

	if (name) {
		r = find_export(h, name, &e);
		if (r < 0)
			return r;
		export_id = e.export_id;
		store_export_done(&e);
	}
	r = store_data_runs_list(h->srv->store, export_id, arg_int(h->args, "before", 0),
				 (size_t)limit, &runs, &n, msg, sizeof(msg));
	if (r < 0)
		return set_error(h->err, h->errlen, r, "cannot list runs: %s",
				 msg[0] ? msg : store_errmsg(h->srv->store));
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		if (!name && check_export_access(h, runs[i].export_id, "") < 0)
			continue;
		if (json_array_append_new(arr, control_run_json(&runs[i])) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	h->err[0] = '\0';
	*ret = arr ? json_pack("{s:o, s:o}", "runs", arr, "next_before",
			       n == (size_t)limit ? json_integer(runs[n - 1].run_id) : json_null())
		   : NULL;
	store_data_runs_free(runs, n);
	return *ret ? 0 : -ENOMEM;
}

static int handle_run_show(struct handler_ctx *h, json_t **ret)
{
	struct store_data_run *run = NULL;
	struct store_data_batch *b = NULL;
	size_t n = 0;
	char msg[256] = "";
	json_t *o, *arr;
	int r;

	r = get_run(h, arg_int(h->args, "run", 0), &run);
	if (r < 0)
		return r;
	r = store_data_run_batches(h->srv->store, run->run_id, &b, &n, msg, sizeof(msg));
	if (r < 0) {
		store_data_run_free(run);
		return set_error(h->err, h->errlen, r, "cannot read the run's batches: %s",
				 msg[0] ? msg : store_errmsg(h->srv->store));
	}
	o = control_run_json(run);
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		json_t *bj = json_pack("{s:I, s:s, s:s, s:I, s:I, s:s?, s:s?, s:I, s:I, s:I, s:I, "
				       "s:o, s:o, s:s?}",
				       "batch", (json_int_t)b[i].batch_no,
				       "kind", store_data_batch_kind_to_string(b[i].kind) ?: "?",
				       "state", store_data_batch_state_to_string(b[i].state) ?: "?",
				       "contacts", (json_int_t)b[i].contacts,
				       "bytes", (json_int_t)b[i].bytes,
				       "activity_id", b[i].activity_id,
				       "activity_state", b[i].activity_state,
				       "attempts", (json_int_t)b[i].attempts,
				       "error_count", (json_int_t)b[i].error_count,
				       "correctable_count", (json_int_t)b[i].correctable_count,
				       "cannot_add_count", (json_int_t)b[i].cannot_add_count,
				       "submitted_at", time_json(b[i].submitted_at),
				       "finished_at", time_json(b[i].finished_at),
				       "error", b[i].error);

		if (json_array_append_new(arr, bj) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	store_data_batches_free(b, n);
	store_data_run_free(run);
	if (!o || !arr || json_object_set_new(o, "batches", arr) < 0) {
		json_decref(o);
		return -ENOMEM;
	}
	*ret = o;
	return 0;
}

static int handle_rejected(struct handler_ctx *h, json_t **ret)
{
	struct store_data_run *run = NULL;
	struct store_data_rejected_row *rows = NULL;
	int64_t limit = arg_int(h->args, "limit", 1000);
	size_t n = 0;
	char msg[256] = "";
	json_t *arr;
	int r;

	r = get_run(h, arg_int(h->args, "run", 0), &run);
	if (r < 0)
		return r;
	r = store_data_rejected_page(h->srv->store, run->run_id, arg_int(h->args, "after", 0),
				     (size_t)limit, &rows, &n, msg, sizeof(msg));
	if (r < 0) {
		store_data_run_free(run);
		return set_error(h->err, h->errlen, r, "cannot read rejected rows: %s",
				 msg[0] ? msg : store_errmsg(h->srv->store));
	}
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		json_t *o = json_pack("{s:I, s:s?, s:s?, s:s, s:s, s:b}",
				      "seq", (json_int_t)rows[i].seq,
				      "profile_id", rows[i].profile_id,
				      "email", rows[i].email,
				      "reason_code", rows[i].reason_code,
				      "reason", rows[i].reason,
				      "permanent", rows[i].permanent);

		if (json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	*ret = arr ? json_pack("{s:I, s:o, s:o}", "run_id", (json_int_t)run->run_id, "rows", arr,
			       "next_after", n == (size_t)limit ? json_integer(rows[n - 1].seq)
								: json_null())
		   : NULL;
	store_data_rejected_rows_free(rows, n);
	store_data_run_free(run);
	return *ret ? 0 : -ENOMEM;
}

static int handle_segments(struct handler_ctx *h, json_t **ret)
{
	struct store_data_segment *v = NULL;
	size_t n = 0;
	char msg[256] = "";
	json_t *arr;
	int r;

	r = store_data_segments_list(h->srv->store, &v, &n, msg, sizeof(msg));
	if (r < 0)
		return set_error(h->err, h->errlen, r, "cannot list segments: %s",
				 msg[0] ? msg : store_errmsg(h->srv->store));
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		json_t *o = json_pack("{s:I, s:s, s:s?, s:I, s:I}",
				      "id", (json_int_t)v[i].segment_id,
				      "name", v[i].name,
				      "description", v[i].description,
				      "members", (json_int_t)v[i].members,
				      "updated_at", (json_int_t)v[i].updated_at);

		if (json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	store_data_segments_free(v, n);
	*ret = arr;
	return arr ? 0 : -ENOMEM;
}

static void finish_cancel(struct control_call *call, int r, json_t *result, const char *message)
{
	if (r >= 0)
		audit_now(call->srv, &call->peer, "run.cancel", "run", call->object_id, result);
	call_reply(call, r, result, message);
}

static int handle_cancel(struct handler_ctx *h, json_t **ret)
{
	struct store_data_run *run = NULL;
	struct control_call *call;
	int64_t run_id;
	int r;

	r = get_run(h, arg_int(h->args, "run", 0), &run);
	if (r < 0)
		return r;
	run_id = run->run_id;
	if (store_data_run_state_is_final(run->state)) {
		r = set_error(h->err, h->errlen, -EALREADY, "run %lld has already finished (%s)",
			      (long long)run_id, store_data_run_state_to_string(run->state));
		store_data_run_free(run);
		return r;
	}
	store_data_run_free(run);
	REQUIRE_OP(h, cancel_run);
	r = start_call(h, finish_cancel, &call);
	if (r < 0)
		return r;
	call->object_id = run_id;
	r = h->srv->ops.cancel_run(h->srv->ops.ctx, call, run_id);
	if (r < 0)
		return op_refused(h, call, r);
	return HANDLER_ASYNC;
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	struct control_client *c = handle->data;
	size_t avail = 0;
	char *p;

	(void)suggested;
	p = ctlproto_framer_space(&c->in, READ_CHUNK, &avail);
	/* A zero-length buffer makes libuv report UV_ENOBUFS, which closes the client. */
	*buf = uv_buf_init(p, p ? (unsigned)(avail < READ_CHUNK ? avail : READ_CHUNK) : 0);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
	struct control_client *c = stream->data;

	(void)buf;
	if (nread > 0) {
		ctlproto_framer_commit(&c->in, (size_t)nread);
		client_process(c);
		return;
	}
	if (nread == 0)
		return;
	if (nread != UV_EOF) {
		log_debug("control: read from uid %u failed: %s", (unsigned)c->peer.uid,
			  uv_strerror((int)nread));
		client_close(c);
		return;
	}
	c->eof = true;
	(void)uv_read_stop(stream);
	c->reading = false;
	/* A streaming call has nobody left to stream to; anything else may still be answered to
	 * a client that only shut down its sending side. */
	if (c->call && c->call->streams) {
		client_close(c);
		return;
	}
	client_process(c);
}

static void client_start_reading(struct control_client *c)
{
	int r = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);

	if (r < 0) {
		log_debug("control: cannot read from uid %u: %s", (unsigned)c->peer.uid,
			  uv_strerror(r));
		client_close(c);
		return;
	}
	c->reading = true;
}

/* ---- accepting ---- */

static void on_connection(uv_stream_t *server, int status)
{
	struct control_server *srv = server->data;
	struct control_client *c;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	uv_os_fd_t fd;
	int r;

	if (status < 0) {
		log_warning("control: accepting a connection failed: %s, ignoring",
			    uv_strerror(status));
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		log_error("control: out of memory accepting a connection");
		return;
	}
	c->srv = srv;
	ctlproto_framer_init(&c->in);
	r = uv_pipe_init(srv->loop, &c->pipe, 0);
	if (r < 0) {
		log_error("control: cannot set up a client: %s", uv_strerror(r));
		free(c);
		return;
	}
	c->pipe.data = c;
	c->next = srv->clients;
	if (srv->clients)
		srv->clients->prev = c;
	srv->clients = c;
	srv->n_clients++;
	r = uv_accept(server, (uv_stream_t *)&c->pipe);
	if (r >= 0)
		r = uv_fileno((uv_handle_t *)&c->pipe, &fd);
	if (r >= 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		r = -errno;
	if (r < 0) {
		log_warning("control: cannot accept a connection: %s, ignoring", strerror(-r));
		client_close(c);
		return;
	}
	control_resolve_peer(cred.uid, cred.gid, cred.pid, srv->config->admin_group,
			     srv->config->contributor_group, &c->peer);
	if (c->peer.role == CONTROL_ROLE_NONE) {
		char msg[256];

		log_info("control: refused uid %u (%s, pid %d): in neither %s nor %s",
			 (unsigned)cred.uid, c->peer.user_name, (int)cred.pid,
			 srv->config->admin_group, srv->config->contributor_group);
		snprintf(msg, sizeof(msg), "permission denied: %s is in neither group \"%s\" nor "
			 "group \"%s\"", c->peer.user_name, srv->config->admin_group,
			 srv->config->contributor_group);
		send_error(c, -1, -EACCES, msg);
		client_finish(c);
		return;
	}
	if (srv->n_clients > CONTROL_MAX_CLIENTS) {
		log_warning("control: %zu clients connected, refusing uid %u", srv->n_clients - 1,
			    (unsigned)cred.uid);
		send_error(c, -1, -EUSERS, "too many clients are connected; try again later");
		client_finish(c);
		return;
	}
	log_debug("control: uid %u (%s) connected as %s", (unsigned)cred.uid, c->peer.user_name,
		  control_role_to_string(c->peer.role));
	client_start_reading(c);
}

/* ---- listening ---- */

static int take_activated_fd(char *err, size_t errlen)
{
	char **names = NULL;
	int n, fd = -ENOENT;

	n = sd_listen_fds_with_names(0, &names);
	if (n < 0)
		return set_error(err, errlen, n, "cannot read socket activation fds: %s",
				 strerror(-n));
	for (int i = 0; i < n; i++) {
		if (names && names[i] && streq(names[i], "control") && fd == -ENOENT)
			fd = SD_LISTEN_FDS_START + i;
	}
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	if (fd >= 0 && sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
		return set_error(err, errlen, -EINVAL, "the socket-activated fd named \"control\" "
				 "is not a listening UNIX stream socket");
	return fd;
}

/* Removes a socket file left by a daemon that died, but never one that is in use. */
static int remove_stale_socket(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : set_error(err, errlen, -errno, "%s: %s", path,
						       strerror(errno));
	if (!S_ISSOCK(st.st_mode))
		return set_error(err, errlen, -EEXIST, "%s exists and is not a socket; refusing to "
				 "replace it", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return set_error(err, errlen, -errno, "socket: %s", strerror(errno));
	memcpy(sa.sun_path, path, strlen(path));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return set_error(err, errlen, -EADDRINUSE, "%s: another process is listening on it "
				 "(is ccsyncd already running?)", path);
	if (errno != ECONNREFUSED)
		return set_error(err, errlen, -errno, "%s: cannot tell whether it is in use: %s",
				 path, strerror(errno));
	if (unlink(path) < 0 && errno != ENOENT)
		return set_error(err, errlen, -errno, "%s: cannot remove the stale socket: %s",
				 path, strerror(errno));
	return 0;
}

static int bind_socket(struct control_server *srv, char *err, size_t errlen)
{
	const char *path = srv->config->control_socket;
	mode_t old_umask;
	gid_t gid;
	int r;

	if (strlen(path) >= sizeof(srv->path))
		return set_error(err, errlen, -ENAMETOOLONG, "control_socket %s: longer than %zu "
				 "bytes", path, sizeof(srv->path) - 1);
	r = remove_stale_socket(path, err, errlen);
	if (r < 0)
		return r;
	/* Never world-accessible, not even for the moment between bind() and chmod(). */
	old_umask = umask(0117);
	r = uv_pipe_bind(&srv->listener, path);
	umask(old_umask);
	if (r < 0)
		return set_error(err, errlen, r, "cannot bind %s: %s", path, uv_strerror(r));
	snprintf(srv->path, sizeof(srv->path), "%s", path);
	srv->bound_path = true;
	if (chmod(path, 0660) < 0)
		return set_error(err, errlen, -errno, "chmod %s: %s", path, strerror(errno));
	/* As ccsync.socket does with SocketGroup=: contributors (and admins, who are members of
	 * both groups) reach the socket through its group. */
	if (group_gid(srv->config->contributor_group, &gid) && chown(path, (uid_t)-1, gid) < 0)
		log_warning("control: cannot give %s to group %s: %s; only its owner can connect",
			    path, srv->config->contributor_group, strerror(errno));
	return 0;
}

int control_server_start(struct control_server *srv, uv_loop_t *loop, const struct config *config,
			 struct store *store, const struct control_ops *ops, char *err,
			 size_t errlen)
{
	int fd, r;

	memset(srv, 0, sizeof(*srv));
	srv->loop = loop;
	srv->config = config;
	srv->store = store;
	if (ops)
		srv->ops = *ops;
	fd = take_activated_fd(err, errlen);
	if (fd < 0 && fd != -ENOENT)
		return fd;
	r = uv_pipe_init(loop, &srv->listener, 0);
	if (r < 0)
		return set_error(err, errlen, r, "cannot set up the control socket: %s",
				 uv_strerror(r));
	srv->listener_initialized = true;
	srv->listener.data = srv;
	if (fd >= 0) {
		r = uv_pipe_open(&srv->listener, fd);
		if (r < 0) {
			r = set_error(err, errlen, r, "cannot use the socket-activated control "
				      "socket: %s", uv_strerror(r));
			goto fail;
		}
	} else {
		r = bind_socket(srv, err, errlen);
		if (r < 0)
			goto fail;
	}
	r = uv_listen((uv_stream_t *)&srv->listener, 128, on_connection);
	if (r < 0) {
		r = set_error(err, errlen, r, "cannot listen on the control socket: %s",
			      uv_strerror(r));
		goto fail;
	}
	log_info("control: listening on %s%s", fd >= 0 ? "the socket-activated fd" : srv->path,
		 fd >= 0 ? " (control)" : "");
	return 0;
fail:
	control_server_close(srv);
	return r;
}

void control_server_reload(struct control_server *srv, const struct config *config)
{
	srv->config = config;
}

void control_server_set_ops(struct control_server *srv, const struct control_ops *ops)
{
	if (ops)
		srv->ops = *ops;
	else
		memset(&srv->ops, 0, sizeof(srv->ops));
}

void control_server_close(struct control_server *srv)
{
	if (srv->closing)
		return;
	srv->closing = true;
	if (srv->listener_initialized && !uv_is_closing((uv_handle_t *)&srv->listener))
		uv_close((uv_handle_t *)&srv->listener, NULL);
	if (srv->bound_path) {
		/* Only our own file: a second daemon started by mistake must not remove the
		 * socket of the one that runs. bound_path is set only after our bind succeeded. */
		if (unlink(srv->path) < 0 && errno != ENOENT)
			log_warning("control: cannot remove %s: %s, ignoring", srv->path,
				    strerror(errno));
		srv->bound_path = false;
	}
	for (struct control_client *c = srv->clients; c; c = c->next)
		client_close(c);
}
