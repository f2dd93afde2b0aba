/* SPDX-License-Identifier: MIT */
/*
 * Service manager notifications (sd_notify): READY, STATUS, RELOADING, STOPPING and the watchdog
 * keep-alive. The watchdog is a loop timer at half the interval systemd asks for, so a loop that
 * stops turning stops the keep-alives and systemd restarts the daemon. Without a service manager
 * ($NOTIFY_SOCKET unset) every call is a cheap no-op. Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct notify {
	uv_timer_t watchdog_timer;
	uint64_t watchdog_usec; /* 0 = no watchdog requested */
	char status[256];	/* last STATUS= sent, to skip identical updates */
	bool closing;
};

/* Starts the watchdog timer when systemd requested one. 0 or negative errno. */
int notify_start(struct notify *n, uv_loop_t *loop);
/* Closes the timer; the loop must run once more for the close callback. */
void notify_close(struct notify *n);

void notify_ready(struct notify *n, const char *status);
void notify_status(struct notify *n, const char *status);
void notify_reloading(struct notify *n);
void notify_stopping(struct notify *n, const char *status);
