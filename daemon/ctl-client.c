/* SPDX-License-Identifier: MIT */
/*
 * The transport of ccsyncctl: connect, write a request line, read reply lines until the final
 * one. Blocking I/O is right here: the CLI does one thing at a time, and a progress stream is
 * just more lines to read.
 *
 * A daemon that refuses the peer (not in the groups) answers once with id null and closes; the
 * request may then fail to send (EPIPE), so a failed write is not reported before the reply that
 * explains it has been read.
 */
#include "ctl-client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util.h"

void ctl_init(struct ctl *ctl, const char *socket_path)
{
	memset(ctl, 0, sizeof(*ctl));
	ctl->socket_path = socket_path;
	ctl->fd = -1;
	ctl->next_id = 1;
	ctlproto_framer_init(&ctl->in);
}

void ctl_done(struct ctl *ctl)
{
	if (ctl->fd >= 0)
		(void)close(ctl->fd);
	ctl->fd = -1;
	ctlproto_framer_done(&ctl->in);
}

int ctl_fail(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("ccsyncctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

static int ctl_connect(struct ctl *ctl)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(ctl->socket_path) >= sizeof(sa.sun_path))
		return ctl_fail(CTLPROTO_EXIT_USAGE, "socket path too long: %s", ctl->socket_path);
	memcpy(sa.sun_path, ctl->socket_path, strlen(ctl->socket_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return ctl_fail(CTLPROTO_EXIT_FAILED, "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		(void)close(fd);
		if (e == EACCES || e == EPERM)
			return ctl_fail(CTLPROTO_EXIT_DENIED,
					"cannot connect to %s: %s (your user must be in the group "
					"that owns the socket, normally \"ccsync\")",
					ctl->socket_path, strerror(e));
		return ctl_fail(CTLPROTO_EXIT_UNREACHABLE,
				"cannot reach ccsyncd at %s: %s (is ccsync.socket or "
				"ccsync.service "
				"running? use --socket for another path)",
				ctl->socket_path, strerror(e));
	}
	ctl->fd = fd;
	return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The next line from the daemon: 1 and the line, 0 at EOF, or negative errno. */
static int read_line(struct ctl *ctl, const char **ret_line, size_t *ret_len)
{
	for (;;) {
		size_t avail = 0;
		ssize_t n;
		char *p;
		int r = ctlproto_framer_next(&ctl->in, ret_line, ret_len);

		if (r != 0)
			return r;
		p = ctlproto_framer_space(&ctl->in, 65536, &avail);
		if (!p)
			return -ENOMEM;
		n = read(ctl->fd, p, avail);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		ctlproto_framer_commit(&ctl->in, (size_t)n);
	}
}

int ctl_call(struct ctl *ctl, const char *command, json_t *args, ctl_progress_fn progress,
	     void *userdata, json_t **ret_result)
{
	const struct ctlproto_command *cmd = ctlproto_command_find(command);
	_cleanup_free_ char *text = NULL;
	char err[1024];
	json_t *msg;
	int64_t id;
	size_t len;
	int r, write_error = 0;

	if (!args)
		args = json_object();
	if (!cmd || !args) {
		json_decref(args);
		return ctl_fail(CTLPROTO_EXIT_FAILED, "internal error: cannot build %s", command);
	}
	/* The daemon checks again; checking here answers bad input without a round trip and
	 * with the same wording. */
	r = ctlproto_validate_args(cmd, args, err, sizeof(err));
	if (r < 0) {
		json_decref(args);
		return ctl_fail(CTLPROTO_EXIT_USAGE, "%s", err);
	}
	if (ctl->fd < 0) {
		r = ctl_connect(ctl);
		if (r != 0) {
			json_decref(args);
			return r;
		}
	}
	id = ctl->next_id++;
	msg = ctlproto_request_new(id, command, args);
	r = ctlproto_encode(msg, &text, &len);
	json_decref(msg);
	if (r == -EMSGSIZE)
		return ctl_fail(CTLPROTO_EXIT_USAGE, "the request is larger than the protocol's "
				"limit of %d bytes", CTLPROTO_MAX_MESSAGE);
	if (r < 0)
		return ctl_fail(CTLPROTO_EXIT_FAILED, "cannot encode the request: %s",
				strerror(-r));
	write_error = write_all(ctl->fd, text, len);

	for (;;) {
		struct ctlproto_reply rep;
		const char *line;
		size_t llen;

		r = read_line(ctl, &line, &llen);
		if (r == 0)
			return ctl_fail(CTLPROTO_EXIT_UNREACHABLE, "ccsyncd closed the connection "
					"without answering%s%s", write_error ? ": " : "",
					write_error ? strerror(-write_error) : "");
		if (r < 0)
			return ctl_fail(r == -EMSGSIZE ? CTLPROTO_EXIT_FAILED :
					CTLPROTO_EXIT_UNREACHABLE,
					"reading from ccsyncd failed: %s", strerror(-r));
		r = ctlproto_parse_reply(line, llen, &rep, err, sizeof(err));
		if (r < 0)
			return ctl_fail(CTLPROTO_EXIT_FAILED, "unreadable reply from ccsyncd: %s",
					err);
		if (rep.id != id && rep.id >= 0) {
			ctlproto_reply_done(&rep);
			continue; /* a stale reply of an earlier request: not ours to show */
		}
		if (rep.kind == CTLPROTO_REPLY_PROGRESS) {
			r = progress ? progress(ctl, rep.value, userdata) : 0;
			ctlproto_reply_done(&rep);
			if (r != 0)
				return r;
			continue;
		}
		if (rep.kind == CTLPROTO_REPLY_ERROR) {
			r = ctl_fail(ctlproto_exit_status(rep.code), "%s", rep.message);
			ctlproto_reply_done(&rep);
			return r;
		}
		if (ret_result)
			*ret_result = json_incref(rep.value);
		ctlproto_reply_done(&rep);
		return 0;
	}
}
