/* SPDX-License-Identifier: MIT */
/*
 * The control server: listener, clients, roles, framing and dispatch. What each command does is
 * in the handlers (control-handlers.c, control-connections.c, control-exports.c, control-runs.c),
 * reached through control-internal.h; ops of other modules through struct control_ops.
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

#include "control-internal.h"
#include "ctlproto.h"
#include "log.h"
#include "util.h"

#define READ_CHUNK (64 * 1024)

struct control_client {
	struct control_client *prev, *next;
	struct control_server *srv;
	uv_pipe_t pipe;
	uv_shutdown_t shutdown_req;
	struct control_peer peer;
	struct ctlproto_framer in;
	struct control_call *call;	/* the request in flight, or NULL */
	struct control_import import;	/* while an import is open */
	bool reading;
	bool eof;
	bool dispatching;		/* inside client_process: no re-entry */
	bool finishing;			/* shutting down after the last reply */
	bool closing;
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

void control_import_abort(struct control_server *srv, struct control_import *import)
{
	if (!import->session)
		return;
	if (srv->ops.import_abort)
		srv->ops.import_abort(srv->ops.ctx, import->session);
	import->session = NULL;
}

static void client_close(struct control_client *c)
{
	struct control_server *srv = c->srv;
	struct control_call *call;

	if (c->closing)
		return;
	c->closing = true;
	control_import_abort(srv, &c->import);
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

int control_call_progress(struct control_call *call, json_t *progress)
{
	if (call->progress_hook)
		call->progress_hook(call, progress);
	if (!call->client || call->client->closing || call->client->finishing) {
		json_decref(progress);
		return -ECONNRESET;
	}
	return client_send(call->client, ctlproto_progress_new(call->id, progress), true);
}

struct control_call *control_call_new(struct control_client *c, const struct ctlproto_request *req)
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

void control_call_reply(struct control_call *call, int r, json_t *result, const char *message)
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
	(call->finish ? call->finish : control_call_reply)(call, r, result, message);
	call_free(call);
}

void control_call_discard(struct control_call *call)
{
	call_free(call);
}

/* ---- dispatch ---- */

static void handle_line(struct control_client *c, const char *line, size_t len)
{
	struct ctlproto_request req = {};
	const struct control_command *entry;
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
	if (c->import.session && req.command->id != CTL_IMPORT_DATA &&
	    req.command->id != CTL_IMPORT_END) {
		control_import_abort(c->srv, &c->import);
		send_error(c, req.id, -EBUSY, "an import was open on this connection and has been "
			   "abandoned (nothing imported): only import.data and import.end may "
			   "follow import");
		goto out;
	}
	entry = &control_commands[req.command->id];
	if (c->peer.role < entry->role) {
		snprintf(err, sizeof(err), "permission denied: %s needs the %s role (%s is %s)",
			 req.command->name, control_role_to_string(entry->role), c->peer.user_name,
			 control_role_to_string(c->peer.role));
		send_error(c, req.id, -EACCES, err);
		goto out;
	}
	{
		struct control_request h = {
			.client = c,
			.srv = c->srv,
			.req = &req,
			.args = req.args,
			.peer = &c->peer,
			.import = &c->import,
			.err = err,
			.errlen = sizeof(err),
		};

		r = entry->handler(&h, &result);
	}
	if (r == CONTROL_HANDLER_ASYNC)
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
