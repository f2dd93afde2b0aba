/* SPDX-License-Identifier: MIT */
/*
 * ccsyncctl's side of the control protocol: one blocking connection to ccsyncd, requests with
 * increasing ids, progress messages handed to a callback, the final reply returned. Errors are
 * printed here, once, and turned into ccsyncctl's documented exit status (ctlproto.h).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "ctlproto.h"
#include "util.h"

struct ctl {
	const char *socket_path;
	bool json;		/* --json: machine-readable output */
	int fd;			/* -1 until connected */
	int64_t next_id;
	struct ctlproto_framer in;
};

void ctl_init(struct ctl *ctl, const char *socket_path);
void ctl_done(struct ctl *ctl);

/* Progress callback: return 0 to go on, or an exit status > 0 to stop waiting. */
typedef int (*ctl_progress_fn)(struct ctl *ctl, json_t *progress, void *userdata);

/*
 * Sends one request (args stolen; NULL: {}), connecting first if needed, and waits for its final
 * reply. Returns 0 and the ok value in *ret_result (transfer full; may be NULL if the caller does
 * not want it), or an exit status > 0 after printing the reason on stderr:
 * CTLPROTO_EXIT_USAGE for arguments the codec rejects locally, CTLPROTO_EXIT_UNREACHABLE when
 * ccsyncd cannot be reached, or the status of the daemon's error code.
 */
int ctl_call(struct ctl *ctl, const char *command, json_t *args, ctl_progress_fn progress,
	     void *userdata, json_t **ret_result);

/* Prints "ccsyncctl: message" on stderr and returns status (for one-line error returns). */
_printf_(2, 3) int ctl_fail(int status, const char *fmt, ...);
