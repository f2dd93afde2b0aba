/* SPDX-License-Identifier: MIT */
/*
 * The daemon's composition root: one struct that owns the loop and every long-lived part, built
 * in daemon_main and torn down in reverse order. Loop thread only.
 */
#pragma once

#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "notify.h"
#include "service.h"
#include "store.h"

struct daemon_options {
	const char *config_path;
	bool config_explicit; /* a missing explicit file is an error; the default may be absent */
	const char *database;
	const char *socket;
	int log_level; /* -1: from the configuration */
	bool check_only;
};

struct daemon {
	uv_loop_t loop;
	/* Two buffers: a reload is parsed into the spare one and becomes current only when every
	 * part accepted it, while the running parts keep pointing at the current one. */
	struct config configs[2];
	struct config *config;
	const struct daemon_options *options;
	struct store *store;
	struct notify notify;
	struct service service;
	bool service_started;
	uv_signal_t sigterm, sigint, sighup;
	bool stopping;
};

/* Runs the daemon to completion; returns the process exit status. */
int daemon_main(const struct daemon_options *opts);

/* Reads and validates the configuration named by opts into c. 0 or negative errno + message. */
int daemon_load_config(const struct daemon_options *opts, struct config *c, char *err,
		       size_t errlen);
