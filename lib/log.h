/* SPDX-License-Identifier: MIT */
/*
 * The one logging path of ccsync. Under journald (stderr is the journal stream named in
 * $JOURNAL_STREAM) entries go through sd_journal_send with structured fields; otherwise they go to
 * stderr as "<N>message" lines, which journald and syslog-style collectors understand.
 *
 * Rules: lib/ code logs at debug at most and returns errors to its caller; daemon code logs once,
 * where an error is handled. Never pass a token, secret or password to these functions: nothing
 * here can tell a secret from other text, so the only defence is not to hand one over.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <syslog.h>

#include "util.h"

/* Correlation fields for a log line; zero/NULL members are left out of the entry. */
struct log_fields {
	int64_t export_id;
	int64_t run_id;
	int64_t connection_id;
	const char *message_id; /* 32 hex digits, a catalogued event (see systemd/ccsync.catalog) */
};

enum log_target {
	LOG_TARGET_AUTO,    /* journal when stderr is the journal stream, stderr otherwise */
	LOG_TARGET_STDERR,
	LOG_TARGET_JOURNAL,
};

void log_setup(enum log_target target, int max_level);
int log_get_max_level(void);
bool log_to_journal(void);
int log_level_from_string(const char *s); /* LOG_DEBUG..LOG_EMERG, or -EINVAL */
const char *log_level_to_string(int level);

_printf_(6, 7) void log_internal(int level, const struct log_fields *fields, const char *file,
				 int line, const char *func, const char *fmt, ...);

/* Arguments are not evaluated below the configured level (redis serverLog). */
#define log_full(level, fields, ...)                                                               \
	do {                                                                                       \
		if ((level) <= log_get_max_level())                                                \
			log_internal((level), (fields), __FILE__, __LINE__, __func__, __VA_ARGS__); \
	} while (0)

#define log_debug(...) log_full(LOG_DEBUG, NULL, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, NULL, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, NULL, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, NULL, __VA_ARGS__)
#define log_crit(...) log_full(LOG_CRIT, NULL, __VA_ARGS__)

/* Logs and returns r (a negative errno), so handlers can "return log_error_errno(r, ...)". */
#define log_error_errno(r, ...)                                                                    \
	({                                                                                         \
		int log_r_ = (r);                                                                  \
		log_full(LOG_ERR, NULL, __VA_ARGS__);                                              \
		log_r_ < 0 ? log_r_ : -log_r_;                                                     \
	})

/* Catalogued event ids (systemd/ccsync.catalog explains each for `journalctl -x`). */
#define CCSYNC_MSG_RUN_STARTED "3c1a0e6e2f5b4d0c9a3e8f1b7d2c6a01"
#define CCSYNC_MSG_RUN_SUCCEEDED "3c1a0e6e2f5b4d0c9a3e8f1b7d2c6a02"
#define CCSYNC_MSG_RUN_PARTIAL "3c1a0e6e2f5b4d0c9a3e8f1b7d2c6a03"
#define CCSYNC_MSG_RUN_FAILED "3c1a0e6e2f5b4d0c9a3e8f1b7d2c6a04"
#define CCSYNC_MSG_NEEDS_REAUTH "3c1a0e6e2f5b4d0c9a3e8f1b7d2c6a05"
#define CCSYNC_MSG_QUOTA_EXHAUSTED "3c1a0e6e2f5b4d0c9a3e8f1b7d2c6a06"
#define CCSYNC_MSG_RUN_CANCELLED "3c1a0e6e2f5b4d0c9a3e8f1b7d2c6a07"
#define CCSYNC_MSG_RUN_INTERRUPTED "3c1a0e6e2f5b4d0c9a3e8f1b7d2c6a08"
