/* SPDX-License-Identifier: MIT */
/*
 * Logging backend. The target is decided once at start-up: journald is detected the way systemd
 * documents it, by comparing $JOURNAL_STREAM with the device and inode of stderr, so a daemon
 * started by hand from a shell under a journald-managed session still logs to its terminal.
 * Process-wide state is limited to the target and the level, both set before the loop starts.
 */
#include "log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static int max_level = LOG_INFO;
static bool use_journal;

static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_setup(enum log_target target, int level)
{
	if (level >= LOG_EMERG && level <= LOG_DEBUG)
		max_level = level;
	use_journal = target == LOG_TARGET_JOURNAL ||
		      (target == LOG_TARGET_AUTO && stderr_is_journal());
}

int log_get_max_level(void)
{
	return max_level;
}

bool log_to_journal(void)
{
	return use_journal;
}

static const char *const level_names[] = {
	[LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",	[LOG_CRIT] = "crit",
	[LOG_ERR] = "err",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
};

int log_level_from_string(const char *s)
{
	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
		if (streq(s, level_names[i]))
			return (int)i;
	if (streq(s, "error"))
		return LOG_ERR;
	return -EINVAL;
}

const char *log_level_to_string(int level)
{
	if (level < LOG_EMERG || level > LOG_DEBUG)
		return NULL;
	return level_names[level];
}

void log_internal(int level, const struct log_fields *f, const char *file, int line,
		  const char *func, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	int saved_errno = errno;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	if (use_journal) {
		char code_line[32], exp[48], run[48], conn[48], mid[64];
		/* sd_journal_send is variadic, so absent fields become repeated harmless ones. */
		const char *fexp = "CCSYNC=1", *frun = "CCSYNC=1", *fconn = "CCSYNC=1",
			   *fmid = "CCSYNC=1";

		snprintf(code_line, sizeof(code_line), "CODE_LINE=%d", line);
		if (f && f->export_id > 0) {
			snprintf(exp, sizeof(exp), "CCSYNC_EXPORT=%" PRId64, f->export_id);
			fexp = exp;
		}
		if (f && f->run_id > 0) {
			snprintf(run, sizeof(run), "CCSYNC_RUN=%" PRId64, f->run_id);
			frun = run;
		}
		if (f && f->connection_id > 0) {
			snprintf(conn, sizeof(conn), "CCSYNC_CONNECTION=%" PRId64, f->connection_id);
			fconn = conn;
		}
		if (f && f->message_id) {
			snprintf(mid, sizeof(mid), "MESSAGE_ID=%s", f->message_id);
			fmid = mid;
		}
		sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", level, "CODE_FILE=%s", file,
				"%s", code_line, "CODE_FUNC=%s", func, "SYSLOG_IDENTIFIER=ccsyncd",
				"%s", fexp, "%s", frun, "%s", fconn, "%s", fmid, NULL);
	} else {
		char ctx[160] = "";
		size_t n = 0;

		if (f && f->export_id > 0)
			n += (size_t)snprintf(ctx + n, sizeof(ctx) - n, "export=%" PRId64 " ",
					      f->export_id);
		if (f && f->run_id > 0 && n < sizeof(ctx))
			n += (size_t)snprintf(ctx + n, sizeof(ctx) - n, "run=%" PRId64 " ",
					      f->run_id);
		if (f && f->connection_id > 0 && n < sizeof(ctx))
			(void)snprintf(ctx + n, sizeof(ctx) - n, "connection=%" PRId64 " ",
				       f->connection_id);
		fprintf(stderr, "<%d>%s%s\n", level, ctx, msg);
	}
	errno = saved_errno;
}
