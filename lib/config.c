/* SPDX-License-Identifier: MIT */
/*
 * Configuration parsing on top of libinih. A table maps each "section.key" to a typed field and a
 * range, so adding a key is one line and every key gets the same strict number parsing (no
 * trailing garbage, no overflow, no negative values slipping through strtoul).
 *
 * inih reports the line of the first handler failure; the handler records the first message, so
 * the user sees exactly one precise error.
 */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "build-config.h"
#include "log.h"
#include "util.h"

enum key_type { KEY_STRING, KEY_U32, KEY_DOUBLE, KEY_BOOL, KEY_LOG_LEVEL };

struct key {
	const char *section;
	const char *name;
	enum key_type type;
	size_t offset;
	size_t size; /* string buffer size */
	double min, max;
};

#define STR(sec, key, field) { sec, key, KEY_STRING, offsetof(struct config, field), \
			       sizeof(((struct config *)0)->field), 0, 0 }
#define U32(sec, key, field, lo, hi) { sec, key, KEY_U32, offsetof(struct config, field), 0, lo, hi }
#define DBL(sec, key, field, lo, hi) { sec, key, KEY_DOUBLE, offsetof(struct config, field), 0, lo, hi }
#define BOOL(sec, key, field) { sec, key, KEY_BOOL, offsetof(struct config, field), 0, 0, 0 }

static const struct key keys[] = {
	STR("daemon", "database", database),
	STR("daemon", "control_socket", control_socket),
	STR("daemon", "admin_group", admin_group),
	STR("daemon", "contributor_group", contributor_group),
	{ "daemon", "log_level", KEY_LOG_LEVEL, offsetof(struct config, log_level), 0, 0, 0 },
	U32("daemon", "max_concurrent_runs", max_concurrent_runs, 1, 64),
	U32("daemon", "shutdown_timeout_s", shutdown_timeout_s, 1, 3600),
	STR("schedule", "default", default_schedule),
	STR("schedule", "time_zone", time_zone),
	BOOL("schedule", "catch_up", catch_up),
	U32("export", "max_profiles_per_export", max_profiles_per_export, 1, 100000000),
	DBL("export", "mirror_max_remove_share", mirror_max_remove_share, 0.0, 1.0),
	STR("constant_contact", "api_base", api_base),
	STR("constant_contact", "auth_base", auth_base),
	STR("constant_contact", "ca_file", ca_file),
	STR("constant_contact", "client_secret_file", client_secret_file),
	STR("constant_contact", "redirect_uri", redirect_uri),
	DBL("constant_contact", "requests_per_second", requests_per_second, 0.01, 1000.0),
	U32("constant_contact", "daily_request_budget", daily_request_budget, 1, 100000000),
	U32("constant_contact", "connect_timeout_ms", connect_timeout_ms, 100, 600000),
	U32("constant_contact", "request_timeout_ms", request_timeout_ms, 100, 3600000),
	U32("constant_contact", "max_response_bytes", max_response_bytes, 1024, 1073741824),
	U32("constant_contact", "batch_max_contacts", batch_max_contacts, 1, 40000),
	U32("constant_contact", "batch_max_bytes", batch_max_bytes, 1024, 4000000),
	U32("constant_contact", "poll_initial_ms", poll_initial_ms, 10, 3600000),
	U32("constant_contact", "poll_max_ms", poll_max_ms, 10, 3600000),
	U32("constant_contact", "activity_timeout_s", activity_timeout_s, 1, 864000),
	U32("constant_contact", "max_retries", max_retries, 0, 100),
	U32("history", "run_retention_days", run_retention_days, 1, 36500),
	U32("history", "rejected_retention_days", rejected_retention_days, 1, 36500),
};

void config_init(struct config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->database, sizeof(c->database), "%s", CCSYNC_DEFAULT_DB);
	snprintf(c->control_socket, sizeof(c->control_socket), "%s", CCSYNC_DEFAULT_SOCKET);
	snprintf(c->admin_group, sizeof(c->admin_group), "ccsync-admin");
	snprintf(c->contributor_group, sizeof(c->contributor_group), "ccsync");
	c->log_level = LOG_INFO;
	c->max_concurrent_runs = 4;
	c->shutdown_timeout_s = 60;
	snprintf(c->default_schedule, sizeof(c->default_schedule), "0 2 * * *");
	snprintf(c->time_zone, sizeof(c->time_zone), "UTC");
	c->catch_up = true;
	c->max_profiles_per_export = 1000000;
	c->mirror_max_remove_share = 0.10;
	snprintf(c->api_base, sizeof(c->api_base), "https://api.cc.email/v3");
	snprintf(c->auth_base, sizeof(c->auth_base),
		 "https://authz.constantcontact.com/oauth2/default/v1");
	/* Constant Contact only redirects to URIs registered with the application; the user pastes
	 * the URL the browser ends on, so nothing needs to listen there. */
	snprintf(c->redirect_uri, sizeof(c->redirect_uri), "https://localhost/ccsync/callback");
	c->requests_per_second = 4.0;
	c->daily_request_budget = 10000;
	c->connect_timeout_ms = 10000;
	c->request_timeout_ms = 120000;
	c->max_response_bytes = 16u * 1024 * 1024;
	/* CC documents 40,000 contacts and "less than 4 MB": stay strictly inside both. */
	c->batch_max_contacts = 40000;
	c->batch_max_bytes = 4000000;
	c->poll_initial_ms = 2000;
	c->poll_max_ms = 30000;
	c->activity_timeout_s = 3600;
	c->max_retries = 6;
	c->run_retention_days = 90;
	c->rejected_retention_days = 14;
}

struct parse_state {
	struct config *config;
	const char *name;
	char *err;
	size_t errlen;
	int line;	/* line inih is parsing: counted by our reader, inih does not say */
	int fail_line;	/* line of the first handler failure, 0 if none */
	bool too_long;
	/* input: exactly one of these */
	FILE *file;
	const char *text;
};

/*
 * Line reader for ini_parse_stream. Counting lines here is what lets the handler's errors name
 * their line; a line longer than inih's buffer would otherwise be split silently into two.
 */
static char *read_line(char *buf, int size, void *stream)
{
	struct parse_state *st = stream;
	size_t n;

	if (st->file) {
		if (!fgets(buf, size, st->file))
			return NULL;
		n = strlen(buf);
		if (n == (size_t)size - 1 && buf[n - 1] != '\n' && !feof(st->file))
			st->too_long = true;
	} else {
		const char *nl;

		if (!st->text || !*st->text)
			return NULL;
		nl = strchr(st->text, '\n');
		n = nl ? (size_t)(nl - st->text) + 1 : strlen(st->text);
		if (n > (size_t)size - 1) {
			n = (size_t)size - 1;
			st->too_long = true;
		}
		memcpy(buf, st->text, n);
		buf[n] = '\0';
		st->text += n;
	}
	st->line++;
	if (st->too_long) {
		/* Stop inih here: feed it a line it rejects, then end of input. */
		snprintf(buf, (size_t)size, "=\n");
		st->file = NULL;
		st->text = "";
	}
	return buf;
}

static int parse_u32(const char *v, double lo, double hi, uint32_t *ret)
{
	char *end;
	unsigned long long n;

	if (*v == '\0' || *v == '-' || *v == '+')
		return -EINVAL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || *end != '\0' || (double)n < lo || (double)n > hi)
		return -ERANGE;
	*ret = (uint32_t)n;
	return 0;
}

static int parse_double(const char *v, double lo, double hi, double *ret)
{
	char *end;
	double d;

	if (*v == '\0')
		return -EINVAL;
	errno = 0;
	d = strtod(v, &end);
	if (errno || *end != '\0' || !isfinite(d) || d < lo || d > hi)
		return -ERANGE;
	*ret = d;
	return 0;
}

static int parse_bool(const char *v, bool *ret)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };

	for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	return -EINVAL;
}

static int fail(struct parse_state *st, const char *section, const char *name, const char *what)
{
	/* inih keeps going after a failure; the first message is the one worth reading. The line
	 * number is prepended by finish() once inih reports it. */
	if (!st->fail_line) {
		set_error(st->err, st->errlen, -EINVAL, "%s:%d: [%s] %s: %s", st->name, st->line,
			  section, name, what);
		st->fail_line = st->line;
	}
	return 0;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *st = user;
	char *base = (char *)st->config;
	char what[200];

	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		const struct key *k = &keys[i];

		if (!streq(k->section, section) || !streq(k->name, name))
			continue;
		switch (k->type) {
		case KEY_STRING:
			if (strlen(value) >= k->size) {
				snprintf(what, sizeof(what), "value too long (at most %zu bytes)",
					 k->size - 1);
				return fail(st, section, name, what);
			}
			memcpy(base + k->offset, value, strlen(value) + 1);
			return 1;
		case KEY_U32: {
			uint32_t v;
			if (parse_u32(value, k->min, k->max, &v) < 0) {
				snprintf(what, sizeof(what),
					 "\"%.40s\" is not a whole number from %.0f to %.0f", value,
					 k->min, k->max);
				return fail(st, section, name, what);
			}
			memcpy(base + k->offset, &v, sizeof(v));
			return 1;
		}
		case KEY_DOUBLE: {
			double v;
			if (parse_double(value, k->min, k->max, &v) < 0) {
				snprintf(what, sizeof(what), "\"%.40s\" is not a number from %g to %g",
					 value, k->min, k->max);
				return fail(st, section, name, what);
			}
			memcpy(base + k->offset, &v, sizeof(v));
			return 1;
		}
		case KEY_BOOL: {
			bool v;
			if (parse_bool(value, &v) < 0) {
				snprintf(what, sizeof(what),
					 "\"%.40s\" is not a boolean (yes/no, true/false, 1/0, on/off)",
					 value);
				return fail(st, section, name, what);
			}
			memcpy(base + k->offset, &v, sizeof(v));
			return 1;
		}
		case KEY_LOG_LEVEL: {
			int lvl = log_level_from_string(value);
			if (lvl < 0) {
				snprintf(what, sizeof(what),
					 "\"%.40s\" is not a log level (debug, info, notice, warning, err, crit)",
					 value);
				return fail(st, section, name, what);
			}
			memcpy(base + k->offset, &lvl, sizeof(lvl));
			return 1;
		}
		}
	}
	return fail(st, section, name, "unknown key (see ccsync.conf(5) for the valid keys)");
}

static int parse(struct parse_state *st)
{
	int line = ini_parse_stream(read_line, st, on_key, st);

	if (line == 0)
		return 0;
	if (line < 0)
		return set_error(st->err, st->errlen, -EIO, "%s: cannot read the file", st->name);
	if (st->too_long && line == st->line)
		return set_error(st->err, st->errlen, -EINVAL,
				 "%s:%d: line too long (at most %d characters)", st->name, line,
				 INI_MAX_LINE - 2);
	if (line == st->fail_line)
		return -EINVAL; /* the handler's message already names file and line */
	return set_error(st->err, st->errlen, -EINVAL,
			 "%s:%d: syntax error (expected [section] or key = value)", st->name, line);
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	struct parse_state st = { .config = c, .name = path, .err = err, .errlen = errlen };

	if (!f) {
		int r = -errno;
		return set_error(err, errlen, r, "%s: %s", path, strerror(-r));
	}
	st.file = f;
	return parse(&st);
}

int config_load_string(struct config *c, const char *text, const char *name, char *err,
		       size_t errlen)
{
	struct parse_state st = { .config = c, .name = name, .err = err, .errlen = errlen };

	st.text = text;
	return parse(&st);
}

int config_validate(const struct config *c, char *err, size_t errlen)
{
	if (c->poll_initial_ms > c->poll_max_ms)
		return set_error(err, errlen, -EINVAL,
				 "[constant_contact] poll_initial_ms (%u) is larger than poll_max_ms (%u)",
				 c->poll_initial_ms, c->poll_max_ms);
	if (c->rejected_retention_days > c->run_retention_days)
		return set_error(err, errlen, -EINVAL,
				 "[history] rejected_retention_days (%u) exceeds run_retention_days (%u): "
				 "rejected rows are kept no longer than their run",
				 c->rejected_retention_days, c->run_retention_days);
	if (c->database[0] != '/' || c->control_socket[0] != '/')
		return set_error(err, errlen, -EINVAL,
				 "[daemon] database and control_socket must be absolute paths");
	if (strncmp(c->api_base, "https://", 8) != 0 || strncmp(c->auth_base, "https://", 8) != 0)
		return set_error(err, errlen, -EINVAL,
				 "[constant_contact] api_base and auth_base must be https:// URLs "
				 "(TLS cannot be turned off)");
	return 0;
}
