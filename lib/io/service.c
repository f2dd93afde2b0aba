/* SPDX-License-Identifier: MIT */
/*
 * See service.h. This file is glue: every decision about a run belongs to the runner, every
 * request to the client, every access check to the control server. What lives here is how they
 * reach one another, and the translation of runner progress into control-protocol JSON.
 *
 * A `run --follow` call is tied to its run with runner_watch; when the client goes away the
 * watch is dropped and the call completed, and the run goes on untouched.
 */
#include "service.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "build-config.h"
#include "ccclient.h"
#include "importer.h"
#include "log.h"
#include "runner.h"
#include "scheduler.h"
#include "store-config.h"
#include "store-data.h"
#include "util.h"

/* ---- run progress as protocol JSON ---- */

static json_t *progress_json(const struct runner_progress *p)
{
	const struct store_data_counters *k = &p->counters;

	return json_pack("{s:I, s:I, s:s?, s:s, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
			 "s:I, s:I, s:I, s:I, s:f, s:I, s:s?}",
			 "run_id", (json_int_t)p->run_id,
			 "export_id", (json_int_t)p->export_id,
			 "export", p->export_name,
			 "state", store_data_run_state_to_string(p->state) ?: "unknown",
			 "phase", runner_phase_to_string(p->phase) ?: "unknown",
			 "dry_run", p->dry_run,
			 "selected", (json_int_t)k->selected,
			 "sent", (json_int_t)k->sent,
			 "rejected", (json_int_t)k->rejected,
			 "unchanged", (json_int_t)k->unchanged,
			 "removed", (json_int_t)k->removed,
			 "pending", (json_int_t)k->pending,
			 "batches_done", (json_int_t)k->batches_done,
			 "batches_total", (json_int_t)k->batches_total,
			 "plan_adds", (json_int_t)p->plan_adds,
			 "plan_updates", (json_int_t)p->plan_updates,
			 "plan_removals", (json_int_t)p->plan_removals,
			 "cannot_add", (json_int_t)p->cannot_add,
			 "rate_per_second", p->rate_per_second,
			 "eta_seconds", (json_int_t)p->eta_seconds,
			 "error", p->error);
}

/* The run as `run-show` prints it, from the store (the source of truth once a run ended). */
static int run_result(struct service *svc, int64_t run_id, json_t **ret, char *err, size_t errlen)
{
	struct store_data_run *run = NULL;
	int r = store_data_run_get(svc->store, run_id, &run, err, errlen);

	if (r < 0)
		return r;
	*ret = control_run_json(run);
	store_data_run_free(run);
	return *ret ? 0 : set_error(err, errlen, -ENOMEM, "out of memory");
}

/* ---- status ---- */

static void on_status_timer(uv_timer_t *t);

struct status_acc {
	char *buf;
	size_t len, used;
	size_t runs;
};

static void append_run_status(const struct runner_progress *p, void *userdata)
{
	struct status_acc *a = userdata;
	int n;

	if (a->used >= a->len)
		return;
	if (p->counters.pending > 0 || p->counters.sent > 0)
		n = snprintf(a->buf + a->used, a->len - a->used, "%s%s %" PRId64 "/%" PRId64,
			     a->runs ? ", " : "", p->export_name ? p->export_name : "?",
			     p->counters.sent, p->counters.sent + p->counters.pending);
	else
		n = snprintf(a->buf + a->used, a->len - a->used, "%s%s %s", a->runs ? ", " : "",
			     p->export_name ? p->export_name : "?",
			     runner_phase_to_string(p->phase) ?: "");
	if (n > 0)
		a->used += (size_t)n;
	a->runs++;
}

void service_status_line(struct service *svc, char *buf, size_t len)
{
	int64_t due, export_id;
	size_t active = svc->runner ? runner_active(svc->runner) : 0;

	if (svc->stopping) {
		snprintf(buf, len, "Stopping");
		return;
	}
	if (active > 0) {
		struct status_acc a = { buf, len, 0, 0 };
		int n = snprintf(buf, len, "Running %zu export%s: ", active, active == 1 ? "" : "s");

		a.used = n > 0 ? (size_t)n : 0;
		runner_foreach(svc->runner, append_run_status, &a);
		return;
	}
	if (svc->scheduler && scheduler_next(svc->scheduler, &due, &export_id)) {
		struct tm tm;
		time_t t = (time_t)due;
		char when[32];

		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", &tm);
		snprintf(buf, len, "Idle; next refresh %s (export %" PRId64 ", %zu scheduled)", when,
			 export_id, scheduler_count(svc->scheduler));
		return;
	}
	snprintf(buf, len, "Idle; no export scheduled");
}

static void update_status(struct service *svc)
{
	char line[256];

	if (!svc->notify)
		return;
	service_status_line(svc, line, sizeof(line));
	notify_status(svc->notify, line);
	/* Tick only while something moves: an idle daemon must not wake up for its status. */
	if (svc->status_timer_ready && !svc->stopping) {
		if (runner_active(svc->runner) > 0) {
			if (!uv_is_active((uv_handle_t *)&svc->status_timer))
				(void)uv_timer_start(&svc->status_timer, on_status_timer, 1000, 1000);
		} else {
			uv_timer_stop(&svc->status_timer);
		}
	}
}

static void on_status_timer(uv_timer_t *t)
{
	update_status(container_of(t, struct service, status_timer));
}

static void on_any_run_progress(const struct runner_progress *p, void *userdata)
{
	struct service *svc = userdata;

	if (p->final)
		update_status(svc);
}

/* ---- starting runs ---- */

static int start_run(struct service *svc, int64_t export_id, enum store_data_trigger trigger,
		     unsigned flags, const char *requested_by, int64_t *ret_run_id, char *err,
		     size_t errlen)
{
	struct runner_request req = {
		.export_id = export_id,
		.trigger = trigger,
		.dry_run = flags & CONTROL_RUN_DRY_RUN,
		.full = flags & CONTROL_RUN_FULL,
		.force = flags & CONTROL_RUN_FORCE,
		.requested_by = requested_by,
		.progress = on_any_run_progress,
		.userdata = svc,
	};
	int r = runner_request(svc->runner, &req, ret_run_id, err, errlen);

	if (r >= 0)
		update_status(svc);
	return r;
}

static void on_scheduled(void *ctx, int64_t export_id, const char *trigger, int64_t due_at)
{
	struct service *svc = ctx;
	enum store_data_trigger t = store_data_trigger_from_string(trigger);
	int64_t run_id = 0;
	char err[512];
	int r;

	(void)due_at;
	if (svc->stopping)
		return;
	r = start_run(svc, export_id, t < 0 ? STORE_DATA_TRIGGER_SCHEDULE : t, 0, NULL, &run_id,
		      err, sizeof(err));
	if (r < 0) {
		struct log_fields f = { .export_id = export_id };
		log_full(r == -EBUSY || r == -EALREADY ? LOG_NOTICE : LOG_WARNING, &f,
			 "Scheduled %s run of export %" PRId64 " not started: %s", trigger,
			 export_id, err);
	}
}

/* Runs every enabled export that follows upstream refreshes; returns the run ids started. */
static json_t *run_refresh_followers(struct service *svc, const char *why)
{
	struct store_export *exports = NULL;
	size_t n = 0;
	json_t *ids = json_array();
	int r;

	if (!ids)
		return NULL;
	r = store_config_export_list(svc->store, &exports, &n);
	if (r < 0) {
		log_error("Listing exports for the upstream refresh failed: %s",
			  store_errmsg(svc->store));
		return ids;
	}
	for (size_t i = 0; i < n; i++) {
		int64_t run_id;
		char err[512];

		if (!exports[i].enabled || !exports[i].follows_refresh)
			continue;
		r = start_run(svc, exports[i].export_id, STORE_DATA_TRIGGER_REFRESH, 0, NULL,
			      &run_id, err, sizeof(err));
		if (r < 0) {
			struct log_fields f = { .export_id = exports[i].export_id };
			log_full(LOG_NOTICE, &f, "Export %s not started after %s: %s",
				 exports[i].name, why, err);
			continue;
		}
		(void)json_array_append_new(ids, json_integer(run_id));
	}
	store_export_array_free(exports, n);
	return ids;
}

/* ---- control operations ---- */

struct follow {
	struct service *svc;
	struct control_call *call;
	int64_t run_id;
};

static void on_follow_progress(const struct runner_progress *p, void *userdata)
{
	struct follow *fw = userdata;
	json_t *result = NULL;
	char err[512];
	int r;

	if (!p->final) {
		(void)control_call_progress(fw->call, progress_json(p));
		return;
	}
	runner_unwatch(fw->svc->runner, fw->run_id, on_follow_progress, fw);
	r = run_result(fw->svc, fw->run_id, &result, err, sizeof(err));
	control_call_set_userdata(fw->call, NULL);
	control_call_done(fw->call, r, result, r < 0 ? err : NULL);
	free(fw);
}

static int op_run_export(void *ctx, struct control_call *call, int64_t export_id, unsigned flags)
{
	struct service *svc = ctx;
	const struct control_peer *peer = control_call_peer(call);
	struct follow *fw;
	int64_t run_id = 0;
	char err[512];
	int r;

	r = start_run(svc, export_id, STORE_DATA_TRIGGER_DEMAND, flags, peer->user_name, &run_id,
		      err, sizeof(err));
	if (r < 0) {
		control_call_done(call, r, NULL, err);
		return 0;
	}
	if (!(flags & CONTROL_RUN_FOLLOW)) {
		control_call_done(call, 0,
				  json_pack("{s:I, s:s}", "run_id", (json_int_t)run_id, "state",
					    "queued"),
				  NULL);
		return 0;
	}
	fw = calloc(1, sizeof(*fw));
	if (!fw) {
		control_call_done(call, -ENOMEM, NULL, "out of memory");
		return 0;
	}
	*fw = (struct follow){ svc, call, run_id };
	control_call_set_userdata(call, fw);
	r = runner_watch(svc->runner, run_id, on_follow_progress, fw);
	if (r < 0) {
		/* Already finished (e.g. failed its checks at once): answer with the record. */
		json_t *result = NULL;

		control_call_set_userdata(call, NULL);
		free(fw);
		r = run_result(svc, run_id, &result, err, sizeof(err));
		control_call_done(call, r, result, r < 0 ? err : NULL);
	}
	return 0;
}

static void op_call_abandoned(void *ctx, struct control_call *call)
{
	struct service *svc = ctx;
	struct follow *fw = control_call_get_userdata(call);

	if (!fw)
		return;
	runner_unwatch(svc->runner, fw->run_id, on_follow_progress, fw);
	control_call_set_userdata(call, NULL);
	control_call_done(call, -ECONNRESET, NULL, "client disconnected; the run goes on");
	free(fw);
}

static int op_cancel_run(void *ctx, struct control_call *call, int64_t run_id)
{
	struct service *svc = ctx;
	struct store_data_run *run = NULL;
	char err[512];
	int r;

	r = runner_cancel(svc->runner, run_id, "cancelled by an operator", err, sizeof(err));
	if (r < 0) {
		control_call_done(call, r, NULL, err);
		return 0;
	}
	r = store_data_run_get(svc->store, run_id, &run, err, sizeof(err));
	if (r < 0) {
		control_call_done(call, r, NULL, err);
		return 0;
	}
	control_call_done(call, 0,
			  json_pack("{s:I, s:s}", "run_id", (json_int_t)run_id, "state",
				    store_data_run_state_to_string(run->state) ?: "unknown"),
			  NULL);
	store_data_run_free(run);
	update_status(svc);
	return 0;
}

static void on_lists(const struct ccclient_result *res, void *userdata)
{
	struct control_call *call = userdata;
	json_t *arr;

	if (res->error < 0 || !res->lists) {
		control_call_done(call, res->error < 0 ? res->error : -EBADMSG, NULL, res->message);
		return;
	}
	arr = json_array();
	for (size_t i = 0; arr && i < res->lists->n; i++) {
		const struct ccapi_list *l = &res->lists->lists[i];

		(void)json_array_append_new(arr, json_pack("{s:s, s:s?, s:I, s:b}", "list_id",
							   l->list_id, "name", l->name,
							   "membership_count",
							   (json_int_t)l->membership_count,
							   "deleted", l->deleted));
	}
	control_call_done(call, arr ? 0 : -ENOMEM, arr, arr ? NULL : "out of memory");
}

static int op_list_cc_lists(void *ctx, struct control_call *call, int64_t connection_id)
{
	struct service *svc = ctx;
	struct ccclient_call cc = { .connection_id = connection_id };
	char err[512];
	int r = ccclient_lists(svc->cc, &cc, on_lists, call, err, sizeof(err));

	if (r < 0)
		control_call_done(call, r, NULL, err);
	return 0;
}

/*
 * Saving an export checks its list against Constant Contact "where reachable": the check gets a
 * bounded time, so a save never hangs on an unreachable API; past it the export is saved with a
 * warning (the control server treats every error but -ENOENT as "could not check").
 */
#define VALIDATE_LIST_TIMEOUT_MS 10000

struct validation {
	struct control_call *call;
	uv_timer_t timer;
	bool timed_out;
	struct service *svc;
};

static void on_validation_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_validate_list(const struct ccclient_result *res, void *userdata)
{
	struct validation *v = userdata;

	uv_timer_stop(&v->timer);
	if (v->timed_out)
		control_call_done(v->call, -ETIMEDOUT, NULL,
				  "Constant Contact did not answer within 10 s");
	else
		control_call_done(v->call, res->error, NULL, res->error < 0 ? res->message : NULL);
	uv_close((uv_handle_t *)&v->timer, on_validation_closed);
}

static void on_validation_timeout(uv_timer_t *t)
{
	struct validation *v = t->data;

	v->timed_out = true;
	/* Completes on_validate_list synchronously with -ECANCELED. */
	ccclient_cancel_owner(v->svc->cc, v);
}

static int op_validate_list(void *ctx, struct control_call *call, int64_t connection_id,
			    const char *list_id)
{
	struct service *svc = ctx;
	struct validation *v = calloc(1, sizeof(*v));
	struct ccclient_call cc = { .connection_id = connection_id, .owner = v };
	char err[512];
	int r;

	if (!v || uv_timer_init(svc->loop, &v->timer) < 0) {
		free(v);
		control_call_done(call, -ENOMEM, NULL, "out of memory");
		return 0;
	}
	v->call = call;
	v->svc = svc;
	v->timer.data = v;
	r = ccclient_list_get(svc->cc, &cc, list_id, on_validate_list, v, err, sizeof(err));
	if (r < 0) {
		control_call_done(call, r, NULL, err);
		uv_close((uv_handle_t *)&v->timer, on_validation_closed);
		return 0;
	}
	(void)uv_timer_start(&v->timer, on_validation_timeout, VALIDATE_LIST_TIMEOUT_MS, 0);
	return 0;
}

static void on_device_code(const struct ccclient_device_code *code, void *userdata)
{
	struct control_call *call = userdata;

	(void)control_call_progress(call,
				    json_pack("{s:s, s:s?, s:s, s:I}", "verification_uri",
					      code->verification_uri, "verification_uri_complete",
					      code->verification_uri_complete, "user_code",
					      code->user_code, "expires_at",
					      (json_int_t)code->expires_at));
}

static void on_authorized(const struct ccclient_result *res, void *userdata)
{
	struct control_call *call = userdata;

	if (res->error < 0) {
		control_call_done(call, res->error, NULL, res->message);
		return;
	}
	control_call_done(call, 0, json_pack("{s:s}", "auth_state", "authorized"), NULL);
}

static int op_authorize_start(void *ctx, struct control_call *call, int64_t connection_id)
{
	struct service *svc = ctx;
	struct ccclient_call cc = { .connection_id = connection_id };
	struct store_connection conn = { 0 };
	_cleanup_free_ char *url = NULL;
	char err[512];
	int r;

	r = store_config_connection_get(svc->store, connection_id, &conn);
	if (r < 0) {
		control_call_done(call, r, NULL, "no such connection");
		return 0;
	}
	if (streq(conn.auth_flow, "device")) {
		r = ccclient_device_authorize(svc->cc, &cc, on_device_code, on_authorized, call, err,
					      sizeof(err));
		if (r < 0)
			control_call_done(call, r, NULL, err);
	} else {
		r = ccclient_authorize_url(svc->cc, connection_id, svc->config->redirect_uri, &url,
					   err, sizeof(err));
		if (r < 0)
			control_call_done(call, r, NULL, err);
		else
			control_call_done(call, 0,
					  json_pack("{s:s, s:b, s:s}", "authorize_url", url,
						    "needs_code", 1, "redirect_uri",
						    svc->config->redirect_uri),
					  NULL);
	}
	store_connection_done(&conn);
	return 0;
}

static int op_authorize_complete(void *ctx, struct control_call *call, int64_t connection_id,
				 const char *code)
{
	struct service *svc = ctx;
	struct ccclient_call cc = { .connection_id = connection_id };
	char err[512];
	int r = ccclient_authorize_finish(svc->cc, &cc, code, on_authorized, call, err,
					  sizeof(err));

	if (r < 0)
		control_call_done(call, r, NULL, err);
	return 0;
}

static void append_run(const struct runner_progress *p, void *userdata)
{
	(void)json_array_append_new(userdata, progress_json(p));
}

static json_t *api_keys_json(struct service *svc)
{
	struct store_connection *conns = NULL;
	size_t n = 0;
	json_t *keys = json_array();

	if (!keys || store_config_connection_list(svc->store, &conns, &n) < 0)
		return keys;
	for (size_t i = 0; i < n; i++) {
		struct ccclient_usage u;
		bool seen = false;

		for (size_t j = 0; j < i; j++)
			seen = seen || streq(conns[j].client_id, conns[i].client_id);
		if (seen || ccclient_usage(svc->cc, conns[i].client_id, &u) < 0)
			continue;
		/* The API key identifies the application; it is not a secret, but only the
		 * connections list shows it in full. */
		(void)json_array_append_new(keys,
			json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "connection", conns[i].name,
				  "used_today", (json_int_t)u.used_today, "budget",
				  (json_int_t)u.budget, "left", (json_int_t)u.left, "paused_until",
				  (json_int_t)u.paused_until, "queued", (json_int_t)u.queued,
				  "in_flight", (json_int_t)u.in_flight));
	}
	store_connection_array_free(conns, n);
	return keys;
}

static int op_status(void *ctx, struct control_call *call)
{
	struct service *svc = ctx;
	json_t *runs = json_array(), *result;
	int64_t due = 0, export_id = 0;
	bool scheduled = scheduler_next(svc->scheduler, &due, &export_id);
	char line[256];

	service_status_line(svc, line, sizeof(line));
	if (runs)
		runner_foreach(svc->runner, append_run, runs);
	result = json_pack("{s:s, s:s, s:s, s:o, s:I, s:o, s:o}",
			   "state", svc->stopping ? "stopping" :
				    runner_active(svc->runner) ? "running" : "idle",
			   "status", line,
			   "version", CCSYNC_VERSION,
			   "next_refresh", scheduled ?
				json_pack("{s:I, s:I}", "at", (json_int_t)due, "export_id",
					  (json_int_t)export_id) : json_null(),
			   "scheduled_exports", (json_int_t)scheduler_count(svc->scheduler),
			   "runs", runs ? runs : json_array(),
			   "api_keys", api_keys_json(svc));
	control_call_done(call, result ? 0 : -ENOMEM, result, result ? NULL : "out of memory");
	return 0;
}

static int op_refresh_done(void *ctx, struct control_call *call, int64_t refresh_id)
{
	struct service *svc = ctx;
	int64_t consumed = 0;
	json_t *ids;

	(void)refresh_id;
	(void)store_data_refresh_consume(svc->store, &consumed);
	ids = run_refresh_followers(svc, "the upstream refresh");
	control_call_done(call, ids ? 0 : -ENOMEM, ids ? json_pack("{s:o}", "runs", ids) : NULL,
			  ids ? NULL : "out of memory");
	return 0;
}

static void reload_schedule(struct service *svc)
{
	struct scheduler_options so = {
		.default_cron = svc->config->default_schedule,
		.default_time_zone = svc->config->time_zone,
		.catch_up = svc->config->catch_up,
	};
	char err[512];

	if (scheduler_load(svc->scheduler, &so, false, err, sizeof(err)) < 0)
		log_error("Re-reading the export schedules failed, keeping the previous ones: %s",
			  err);
	update_status(svc);
}

static void op_connection_removed(void *ctx, int64_t connection_id)
{
	struct service *svc = ctx;
	size_t n = runner_cancel_connection(svc->runner, connection_id,
					    "the connection was removed");
	struct log_fields f = { .connection_id = connection_id };

	ccclient_forget_connection(svc->cc, connection_id);
	log_full(LOG_NOTICE, &f, "Connection %" PRId64 " removed; %zu run%s cancelled, tokens "
		 "deleted", connection_id, n, n == 1 ? "" : "s");
	reload_schedule(svc);
}

static void op_connection_changed(void *ctx, int64_t connection_id)
{
	struct service *svc = ctx;

	ccclient_forget_connection(svc->cc, connection_id);
}

static void op_export_removed(void *ctx, int64_t export_id)
{
	struct service *svc = ctx;

	(void)runner_cancel_export(svc->runner, export_id, "the export was removed");
	reload_schedule(svc);
}

static void op_config_changed(void *ctx)
{
	reload_schedule(ctx);
}

static int op_import_begin(void *ctx, const struct control_import_spec *spec, void **ret_session,
			   char *err, size_t errlen)
{
	struct service *svc = ctx;
	struct importer_options o = {
		.kind = streq(spec->kind, "segment") ? IMPORTER_SEGMENT : IMPORTER_PROFILES,
		.format = streq(spec->format, "jsonl") ? IMPORTER_JSONL : IMPORTER_CSV,
		.segment_name = spec->segment,
	};
	struct importer *im = NULL;
	int r = importer_new(svc->store, &o, &im, err, errlen);

	if (r < 0)
		return r;
	*ret_session = im;
	return 0;
}

static int op_import_data(void *ctx, void *session, const void *data, size_t len,
			  json_t **ret_info, char *err, size_t errlen)
{
	(void)ctx;
	*ret_info = NULL;
	return importer_feed(session, data, len, err, errlen);
}

static int op_import_end(void *ctx, void *session, json_t **ret_summary, char *err,
			 size_t errlen)
{
	struct importer_result res = { 0 };
	int r;

	(void)ctx;
	r = importer_finish(session, &res, err, errlen);
	/* On failure the session stays the control server's: it calls import_abort, which frees
	 * it (control.h). Freeing it here too was a double free that killed the daemon on any
	 * import that failed at its end, e.g. an unterminated quoted CSV field
	 * (tests/reliability/test_bad_inputs.py). */
	if (r < 0)
		return r;
	importer_free(session);
	*ret_summary = json_pack("{s:I, s:I, s:I, s:I, s:b, s:I, s:I}", "rows",
				 (json_int_t)res.rows, "inserted", (json_int_t)res.inserted,
				 "updated", (json_int_t)res.updated, "segment_id",
				 (json_int_t)res.segment_id, "segment_created", res.segment_created,
				 "previous_members", (json_int_t)res.previous_members,
				 "without_profile", (json_int_t)res.without_profile);
	return *ret_summary ? 0 : set_error(err, errlen, -ENOMEM, "out of memory");
}

static void op_import_abort(void *ctx, void *session)
{
	(void)ctx;
	importer_free(session);
}

/* ---- lifecycle ---- */

int service_start(struct service *svc, uv_loop_t *loop, const struct config *config,
		  struct store *store, struct notify *notify, char *err, size_t errlen)
{
	const struct control_ops ops = {
		.ctx = svc,
		.run_export = op_run_export,
		.cancel_run = op_cancel_run,
		.list_cc_lists = op_list_cc_lists,
		.validate_list = op_validate_list,
		.authorize_start = op_authorize_start,
		.authorize_complete = op_authorize_complete,
		.status = op_status,
		.refresh_done = op_refresh_done,
		.connection_removed = op_connection_removed,
		.connection_changed = op_connection_changed,
		.export_removed = op_export_removed,
		.config_changed = op_config_changed,
		.import_begin = op_import_begin,
		.import_data = op_import_data,
		.import_end = op_import_end,
		.import_abort = op_import_abort,
		.call_abandoned = op_call_abandoned,
	};
	struct scheduler_options so = {
		.default_cron = config->default_schedule,
		.default_time_zone = config->time_zone,
		.catch_up = config->catch_up,
	};
	int64_t refreshes = 0;
	int r;

	memset(svc, 0, sizeof(*svc));
	svc->loop = loop;
	svc->config = config;
	svc->store = store;
	svc->notify = notify;

	r = uv_timer_init(loop, &svc->status_timer);
	if (r < 0)
		return set_error(err, errlen, r, "cannot create the status timer: %s",
				 uv_strerror(r));
	svc->status_timer_ready = true;
	r = ccclient_new(loop, store, config, NULL, &svc->cc, err, errlen);
	if (r < 0)
		return r;
	r = runner_new(loop, store, config->database, svc->cc, config, &svc->runner, err, errlen);
	if (r < 0)
		return r;
	r = runner_recover(svc->runner, err, errlen);
	if (r < 0)
		return r;
	r = scheduler_new(loop, store, on_scheduled, svc, NULL, NULL, &svc->scheduler);
	if (r < 0)
		return set_error(err, errlen, r, "cannot create the scheduler: %s", strerror(-r));
	r = scheduler_load(svc->scheduler, &so, true, err, errlen);
	if (r < 0)
		return r;
	log_info("%d export%s scheduled", r, r == 1 ? "" : "s");
	/* Refreshes upstream announced in the database while the daemon was down. */
	if (store_data_refresh_consume(store, &refreshes) == 0 && refreshes > 0)
		json_decref(run_refresh_followers(svc, "an upstream refresh announced while "
						  "ccsyncd was down"));
	r = control_server_start(&svc->control, loop, config, store, &ops, err, errlen);
	if (r < 0)
		return r;
	update_status(svc);
	return 0;
}

int service_reload(struct service *svc, const struct config *config, char *err, size_t errlen)
{
	struct scheduler_options so = {
		.default_cron = config->default_schedule,
		.default_time_zone = config->time_zone,
		.catch_up = config->catch_up,
	};
	int r;

	/* The schedule is the part a typo can break: try it first, it swaps only when valid. */
	r = scheduler_load(svc->scheduler, &so, false, err, errlen);
	if (r < 0)
		return r;
	r = ccclient_reload(svc->cc, config, err, errlen);
	if (r < 0)
		return r;
	runner_reload(svc->runner, config);
	svc->config = config;
	update_status(svc);
	return 0;
}

static void closed_one(struct service *svc)
{
	if (--svc->pending_closes > 0)
		return;
	if (svc->on_stopped)
		svc->on_stopped(svc->on_stopped_userdata);
}

static void on_status_timer_closed(uv_handle_t *h)
{
	closed_one(h->data);
}

static void on_client_closed(void *userdata)
{
	struct service *svc = userdata;

	svc->cc = NULL;
	closed_one(svc);
}

/* The last link of the stop chain: runner drained and closed -> client closed. */
static void close_client(struct service *svc)
{
	if (svc->cc)
		ccclient_close(svc->cc, on_client_closed, svc);
	else
		closed_one(svc);
}

static void on_runner_closed(void *userdata)
{
	struct service *svc = userdata;

	svc->runner = NULL;
	close_client(svc);
}

static void on_drained(void *userdata)
{
	struct service *svc = userdata;

	runner_close(svc->runner, on_runner_closed, svc);
}

void service_stop(struct service *svc, uint32_t timeout_ms, void (*on_stopped)(void *userdata),
		  void *userdata)
{
	svc->stopping = true;
	svc->on_stopped = on_stopped;
	svc->on_stopped_userdata = userdata;
	/* Two things finish asynchronously: the status timer, and the chain runner -> client
	 * (the runner's drain may still need the client for in-flight activities). */
	svc->pending_closes = 2;

	control_server_close(&svc->control);
	scheduler_close(svc->scheduler);
	svc->scheduler = NULL;
	if (svc->status_timer_ready) {
		svc->status_timer.data = svc;
		uv_close((uv_handle_t *)&svc->status_timer, on_status_timer_closed);
	} else {
		closed_one(svc);
	}
	if (svc->runner)
		runner_drain(svc->runner, timeout_ms, on_drained, svc);
	else
		close_client(svc);
}
