/* SPDX-License-Identifier: MIT */
/*
 * sd_notify glue. RELOADING=1 carries MONOTONIC_USEC as systemd ≥ 253 expects for Type=notify-reload;
 * older systemd ignores the extra field.
 */
#include "notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <stddef.h>
#include <unistd.h>

static void on_watchdog_timer(uv_timer_t *t)
{
	(void)sd_notify(0, "WATCHDOG=1");
	(void)t;
}

int notify_start(struct notify *n, uv_loop_t *loop)
{
	uint64_t usec = 0;
	int r;

	memset(n, 0, sizeof(*n));
	r = uv_timer_init(loop, &n->watchdog_timer);
	if (r < 0)
		return r;
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		uint64_t half_ms = usec / 2000;

		n->watchdog_usec = usec;
		r = uv_timer_start(&n->watchdog_timer, on_watchdog_timer, half_ms ? half_ms : 1,
				   half_ms ? half_ms : 1);
		if (r < 0)
			return r;
		/* A watchdog timer must not keep an otherwise finished loop alive. */
	}
	uv_unref((uv_handle_t *)&n->watchdog_timer);
	return 0;
}

void notify_close(struct notify *n)
{
	if (n->closing)
		return;
	n->closing = true;
	uv_close((uv_handle_t *)&n->watchdog_timer, NULL);
}

void notify_ready(struct notify *n, const char *status)
{
	snprintf(n->status, sizeof(n->status), "%s", status);
	(void)sd_notifyf(0, "READY=1\nSTATUS=%s\nMAINPID=%lu", status, (unsigned long)getpid());
}

/*
 * STATUS= changes often (every export change, every second of a run) and only ever describes
 * the present, so it is sent without blocking: sd_notify's blocking send would stall the whole
 * loop if the service manager stopped reading, and a dropped status line is replaced by the next.
 */
static void send_nonblocking(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	(void)sendto(fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa,
		     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	close(fd);
}

void notify_status(struct notify *n, const char *status)
{
	char msg[sizeof(n->status) + 8];

	if (strcmp(n->status, status) == 0)
		return;
	snprintf(n->status, sizeof(n->status), "%s", status);
	snprintf(msg, sizeof(msg), "STATUS=%s", status);
	send_nonblocking(msg);
}

void notify_reloading(struct notify *n)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	(void)sd_notifyf(0, "RELOADING=1\nSTATUS=Reloading configuration\nMONOTONIC_USEC=%llu",
			 (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
	n->status[0] = '\0';
}

void notify_stopping(struct notify *n, const char *status)
{
	snprintf(n->status, sizeof(n->status), "%s", status);
	(void)sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status);
}
