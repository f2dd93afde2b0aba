/* SPDX-License-Identifier: MIT */
/*
 * The daemon's configuration: /etc/ccsync/ccsync.conf, INI syntax parsed by libinih. Every key has
 * a default (config_init), so an empty or absent file is a valid configuration. Unknown sections or
 * keys and malformed values are errors that name the file, line and key: a typo must never be
 * silently ignored in a daemon that runs unattended for months. See packaging/ccsync.conf.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_PATH_MAX 4096

struct config {
	/* [daemon] */
	char database[CONFIG_PATH_MAX];
	char control_socket[CONFIG_PATH_MAX];
	char admin_group[64];
	char contributor_group[64];
	int log_level;			 /* syslog priority */
	uint32_t max_concurrent_runs;	 /* runs of different exports in flight at once */
	uint32_t shutdown_timeout_s;	 /* graceful drain bound on SIGTERM */

	/* [schedule] */
	char default_schedule[128];	 /* cron expression */
	char time_zone[64];		 /* IANA zone name the cron expressions are read in */
	bool catch_up;			 /* one catch-up run at start for fires missed while down */

	/* [export] */
	uint32_t max_profiles_per_export;
	double mirror_max_remove_share;	 /* 0..1 */

	/* [constant_contact] */
	char api_base[512];
	char auth_base[512];
	char ca_file[CONFIG_PATH_MAX];	 /* empty = system trust store; only tests set this */
	char client_secret_file[CONFIG_PATH_MAX]; /* empty = $CREDENTIALS_DIRECTORY/cc-client-secret */
	char redirect_uri[512];		 /* registered redirect URI of the pkce/code flows */
	double requests_per_second;
	uint32_t daily_request_budget;
	uint32_t connect_timeout_ms;
	uint32_t request_timeout_ms;
	uint32_t max_response_bytes;
	uint32_t batch_max_contacts;
	uint32_t batch_max_bytes;
	uint32_t poll_initial_ms;
	uint32_t poll_max_ms;
	uint32_t activity_timeout_s;
	uint32_t max_retries;

	/* [history] */
	uint32_t run_retention_days;
	uint32_t rejected_retention_days;
};

/* Fills every field with its documented default. */
void config_init(struct config *c);

/*
 * Parses path over the current contents of c. Returns 0, -ENOENT if the file does not exist (c
 * untouched beyond what was parsed), or -EINVAL with "path:line: key: problem" in err.
 * A missing file is the caller's decision: the default path may be absent, an explicit one may not.
 */
int config_load(struct config *c, const char *path, char *err, size_t errlen);

/* Parses INI text held in memory (tests, fuzzing); name is used in messages. */
int config_load_string(struct config *c, const char *text, const char *name, char *err,
		       size_t errlen);

/* Cross-field checks that need the whole file (e.g. poll_initial_ms <= poll_max_ms). */
int config_validate(const struct config *c, char *err, size_t errlen);
