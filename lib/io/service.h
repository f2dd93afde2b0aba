/* SPDX-License-Identifier: MIT */
/*
 * The running service: owns the Constant Contact client, the runner, the scheduler and the control
 * server, connects them (scheduler fires and control commands start runs; removals cancel them),
 * and implements the control socket's operations. daemon.c only creates it, forwards reloads and
 * stops it; tests can run a whole service on a loop of their own.
 *
 * Start order: client, runner (recovers interrupted runs), scheduler (may fire catch-ups into the
 * runner), pending upstream refreshes, then the control socket, so a client that connects sees a
 * complete service. Stop order is the reverse, with the runner drained within a time bound.
 *
 * Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "control.h"
#include "notify.h"
#include "store.h"

struct ccclient;
struct runner;
struct scheduler;

struct service {
	uv_loop_t *loop;
	const struct config *config; /* borrowed; replaced by service_reload */
	struct store *store;	     /* borrowed */
	struct notify *notify;	     /* borrowed; NULL: no service manager notifications */
	struct ccclient *cc;
	struct runner *runner;
	struct scheduler *scheduler;
	struct control_server control;
	uv_timer_t status_timer; /* refreshes STATUS= once a second while runs are active */
	bool status_timer_ready;
	int pending_closes;
	bool stopping;
	void (*on_stopped)(void *userdata);
	void *on_stopped_userdata;
};

/*
 * Starts everything on loop. config, store and notify are borrowed and must outlive the service.
 * Returns 0, or a negative errno with a message (nothing is left running then: call service_stop
 * anyway, it copes with a half-started service).
 */
int service_start(struct service *svc, uv_loop_t *loop, const struct config *config,
		  struct store *store, struct notify *notify, char *err, size_t errlen);

/*
 * Applies a new configuration (borrowed, replaces the old pointer on success): schedules, rates,
 * timeouts. On error nothing changes and the message says why. Database and socket paths need a
 * restart and are not looked at.
 */
int service_reload(struct service *svc, const struct config *config, char *err, size_t errlen);

/*
 * Stops accepting commands and scheduling, drains running exports for at most timeout_ms (their
 * in-flight batches are checkpointed and resumed at the next start), closes every handle, then
 * calls on_stopped. Run the loop until then. Safe to call once, also after a failed start.
 */
void service_stop(struct service *svc, uint32_t timeout_ms, void (*on_stopped)(void *userdata),
		  void *userdata);

/* One-line state for STATUS= and logs, e.g. "Idle; next refresh 2026-12-01 02:00 UTC". */
void service_status_line(struct service *svc, char *buf, size_t len);
