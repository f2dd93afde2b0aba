/* SPDX-License-Identifier: MIT */
/*
 * Start-up, the loop, reload and shutdown. Errors before READY=1 are fatal (exit 78 for the
 * configuration, 1 otherwise); errors while running belong to the job that hit them.
 *
 * Shutdown order (libuv handles must be closed before the loop is, curl handles before their
 * sockets): the service stops accepting commands and scheduling, drains running exports within
 * shutdown_timeout_s, closes the client; then signals and the watchdog timer close, the loop runs
 * until every close callback has fired, and uv_loop_close() must return 0.
 */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "build-config.h"
#include "cron.h"
#include "log.h"
#include "tzfile.h"
#include "util.h"

int daemon_load_config(const struct daemon_options *opts, struct config *c, char *err,
		       size_t errlen)
{
	struct cron_expr cron;
	struct tz *tz = NULL;
	char inner[256];
	int r;

	config_init(c);
	r = config_load(c, opts->config_path, err, errlen);
	if (r == -ENOENT && !opts->config_explicit)
		r = 0; /* every key has a default; the packaged file only documents them */
	if (r < 0)
		return r;
	if (opts->database)
		snprintf(c->database, sizeof(c->database), "%s", opts->database);
	if (opts->socket)
		snprintf(c->control_socket, sizeof(c->control_socket), "%s", opts->socket);
	if (opts->log_level >= 0)
		c->log_level = opts->log_level;
	r = config_validate(c, err, errlen);
	if (r < 0)
		return r;
	/* The schedule is configuration too: a typo must stop the start, not the first fire. */
	if (cron_parse(c->default_schedule, &cron, inner, sizeof(inner)) < 0)
		return set_error(err, errlen, -EINVAL, "%s: [schedule] default: %s",
				 opts->config_path, inner);
	if (tzfile_load(c->time_zone, NULL, &tz, inner, sizeof(inner)) < 0)
		return set_error(err, errlen, -EINVAL, "%s: [schedule] time_zone: %s",
				 opts->config_path, inner);
	tzfile_free(tz);
	return 0;
}

static void on_service_stopped(void *userdata)
{
	struct daemon *d = userdata;

	uv_stop(&d->loop);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (d->stopping)
		return;
	d->stopping = true;
	log_notice("Received %s, stopping (running exports get up to %u s to checkpoint)",
		   strsignal(signum), d->config->shutdown_timeout_s);
	notify_stopping(&d->notify, "Stopping");
	uv_signal_stop(&d->sigterm);
	uv_signal_stop(&d->sigint);
	uv_signal_stop(&d->sighup);
	if (d->service_started)
		service_stop(&d->service, d->config->shutdown_timeout_s * 1000u, on_service_stopped,
			     d);
	else
		uv_stop(&d->loop);
}

static void on_reload_signal(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;
	struct config *next = d->config == &d->configs[0] ? &d->configs[1] : &d->configs[0];
	char err[1024], line[256];
	int r;

	(void)signum;
	notify_reloading(&d->notify);
	r = daemon_load_config(d->options, next, err, sizeof(err));
	if (r >= 0) {
		/* The database and socket are bound at start; changing them needs a restart. */
		if (!streq(next->database, d->config->database) ||
		    !streq(next->control_socket, d->config->control_socket))
			log_warning("database and control_socket changes take effect at the next "
				    "restart, ignoring");
		snprintf(next->database, sizeof(next->database), "%s", d->config->database);
		snprintf(next->control_socket, sizeof(next->control_socket), "%s",
			 d->config->control_socket);
		r = service_reload(&d->service, next, err, sizeof(err));
	}
	if (r < 0) {
		log_error("Reload rejected, keeping the running configuration: %s", err);
	} else {
		control_server_reload(&d->service.control, next);
		d->config = next;
		log_setup(log_to_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR,
			  d->config->log_level);
		log_info("Configuration reloaded from %s", d->options->config_path);
	}
	service_status_line(&d->service, line, sizeof(line));
	notify_ready(&d->notify, line);
}

static int signals_start(struct daemon *d)
{
	int r;

	d->sigterm.data = d->sigint.data = d->sighup.data = d;
	if ((r = uv_signal_init(&d->loop, &d->sigterm)) < 0 ||
	    (r = uv_signal_init(&d->loop, &d->sigint)) < 0 ||
	    (r = uv_signal_init(&d->loop, &d->sighup)) < 0)
		return r;
	if ((r = uv_signal_start(&d->sigterm, on_stop_signal, SIGTERM)) < 0 ||
	    (r = uv_signal_start(&d->sigint, on_stop_signal, SIGINT)) < 0 ||
	    (r = uv_signal_start(&d->sighup, on_reload_signal, SIGHUP)) < 0)
		return r;
	return 0;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int daemon_main(const struct daemon_options *opts)
{
	static struct daemon d; /* static: large, and there is exactly one */
	char err[1024], line[256];
	int r, status = 1;

	d.options = opts;
	d.config = &d.configs[0];
	signal(SIGPIPE, SIG_IGN);
	r = daemon_load_config(opts, d.config, err, sizeof(err));
	if (r < 0) {
		/* Before anything else starts, and on stderr too, so `systemctl status` shows it. */
		log_crit("%s", err);
		return EX_CONFIG;
	}
	log_setup(log_to_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR, d.config->log_level);

	r = store_open(d.config->database, STORE_OPEN_CREATE, 5000, &d.store, err, sizeof(err));
	if (r < 0) {
		log_crit("%s", err);
		return r == -EPROTO ? EX_CONFIG : 1;
	}
	if (opts->check_only) {
		int v = 0;
		(void)store_version(d.store, &v);
		printf("configuration %s: ok\ndatabase %s: ok (schema version %d)\n",
		       opts->config_path, d.config->database, v);
		store_free(d.store);
		return 0;
	}

	r = uv_loop_init(&d.loop);
	if (r < 0) {
		log_crit("Cannot initialise the event loop: %s", uv_strerror(r));
		goto out_store;
	}
	r = signals_start(&d);
	if (r >= 0)
		r = notify_start(&d.notify, &d.loop);
	if (r < 0) {
		log_crit("Cannot set up signal handling: %s", uv_strerror(r));
		goto out_loop;
	}
	d.service_started = true;
	r = service_start(&d.service, &d.loop, d.config, d.store, &d.notify, err, sizeof(err));
	if (r < 0) {
		log_crit("%s", err);
		d.stopping = true;
		service_stop(&d.service, 0, on_service_stopped, &d);
		(void)uv_run(&d.loop, UV_RUN_DEFAULT);
		goto out_loop;
	}

	service_status_line(&d.service, line, sizeof(line));
	notify_ready(&d.notify, line);
	log_info("ccsyncd %s started (database %s)", CCSYNC_VERSION, d.config->database);
	(void)uv_run(&d.loop, UV_RUN_DEFAULT);
	status = 0;

out_loop:
	notify_close(&d.notify);
	uv_walk(&d.loop, close_walk_cb, NULL);
	(void)uv_run(&d.loop, UV_RUN_DEFAULT);
	r = uv_loop_close(&d.loop);
	if (r < 0) {
		log_error("Event loop closed with handles still open: %s", uv_strerror(r));
		status = 1;
	}
out_store:
	store_free(d.store);
	if (status == 0)
		log_info("ccsyncd stopped");
	return status;
}
