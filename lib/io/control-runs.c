/* SPDX-License-Identifier: MIT */
/*
 * Run commands: run (on demand, optionally followed), cancel, refresh_done, and the history:
 * runs, run.show, rejected, segments. Contributors see runs of the exports they may use only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control-internal.h"
#include "log.h"
#include "store-data.h"
#include "util.h"

static json_t *time_json(int64_t t)
{
	return t > 0 ? json_integer(t) : json_null();
}

/*
 * Who asked for which run goes to the audit log once the runner took the request: at its first
 * progress message or at its success, whichever comes first, with the run id when known. A
 * refused request changed nothing and is not audited.
 */
static void audit_run_request(struct control_call *call, json_t *source)
{
	json_t *after = TAKE_PTR(call->run_audit);
	json_t *run_id = json_object_get(source, "run_id");

	if (!after)
		return; /* audited already */
	if (json_is_integer(run_id))
		(void)json_object_set(after, "run_id", run_id);
	control_audit_now(call->srv, &call->peer, "run", "export", call->object_id, after);
	json_decref(after);
}

static void finish_run(struct control_call *call, int r, json_t *result, const char *message)
{
	if (r >= 0)
		audit_run_request(call, result);
	control_call_reply(call, r, result, message);
}

int control_handle_run(struct control_request *h, json_t **ret)
{
	struct store_export e = {};
	struct store_connection conn = {};
	struct control_call *call;
	struct control_server *srv = h->srv;
	unsigned flags = 0;
	int64_t export_id;
	int r;

	r = control_find_export(h, arg_str(h->args, "export"), &e);
	if (r < 0)
		return r;
	export_id = e.export_id;
	if (e.connection_removed) {
		r = set_error(h->err, h->errlen, -ENOKEY, "export \"%s\" cannot run: its "
			      "connection \"%s\" was removed", e.name, e.connection_name);
		goto out;
	}
	if (!e.enabled) {
		r = set_error(h->err, h->errlen, -EBUSY, "export \"%s\" is disabled (%s); enable "
			      "it first with 'ccsyncctl export enable %s'", e.name,
			      e.disabled_reason ? e.disabled_reason : "no reason given", e.name);
		goto out;
	}
	r = store_config_connection_get(srv->store, e.connection_id, &conn);
	if (r < 0) {
		r = control_store_failed(h, r, "read the export's connection");
		goto out;
	}
	if (!conn.consent_by) {
		r = set_error(h->err, h->errlen, -ENOKEY, "export \"%s\" cannot run: connection "
			      "\"%s\" has no data-privacy consent recorded; an admin must run "
			      "'ccsyncctl connection consent %s' first", e.name, conn.name,
			      conn.name);
		goto out;
	}
	if (!srv->ops.run_export) {
		r = control_op_missing(h);
		goto out;
	}
	if (arg_bool(h->args, "dry_run", false))
		flags |= CONTROL_RUN_DRY_RUN;
	if (arg_bool(h->args, "full", false))
		flags |= CONTROL_RUN_FULL;
	if (arg_bool(h->args, "force", false))
		flags |= CONTROL_RUN_FORCE;
	if (arg_bool(h->args, "follow", false))
		flags |= CONTROL_RUN_FOLLOW;
	r = control_start_call(h, finish_run, &call);
	if (r < 0)
		goto out;
	call->object_id = export_id;
	call->run_audit = json_pack("{s:b, s:b, s:b, s:b}", "dry_run",
				    !!(flags & CONTROL_RUN_DRY_RUN), "full",
				    !!(flags & CONTROL_RUN_FULL), "force",
				    !!(flags & CONTROL_RUN_FORCE), "follow",
				    !!(flags & CONTROL_RUN_FOLLOW));
	call->progress_hook = audit_run_request;
	if (!call->run_audit) {
		control_call_discard(call);
		r = -ENOMEM;
		goto out;
	}
	r = srv->ops.run_export(srv->ops.ctx, call, export_id, flags);
	if (r < 0) {
		r = control_op_refused(h, call, r);
		goto out;
	}
	r = CONTROL_HANDLER_ASYNC;
out:
	store_export_done(&e);
	store_connection_done(&conn);
	return r;
}

static void finish_refresh_done(struct control_call *call, int r, json_t *result,
				const char *message)
{
	json_t *reply;

	if (r < 0) {
		json_decref(result);
		control_call_reply(call, r, NULL, message);
		return;
	}
	reply = json_pack("{s:I, s:O?}", "refresh_id", (json_int_t)call->object_id, "runs",
			  json_object_get(result, "runs"));
	json_decref(result);
	control_call_reply(call, reply ? 0 : -ENOMEM, reply, NULL);
}

int control_handle_refresh_done(struct control_request *h, json_t **ret)
{
	json_t *after = NULL;
	int64_t refresh_id;
	int r;

	r = control_change_begin(h);
	if (r < 0)
		return r;
	r = store_data_refresh_announce(h->srv->store, &refresh_id);
	if (r < 0) {
		r = control_store_failed(h, r, "record the refresh");
		goto fail;
	}
	after = json_pack("{s:I}", "refresh_id", (json_int_t)refresh_id);
	r = after ? control_change_commit(h, "refresh_done", "refresh", refresh_id, NULL, after)
		  : control_store_failed(h, -ENOMEM, "write the audit log");
	json_decref(after);
	if (r < 0)
		goto fail;
	log_info("control: %s announced a finished upstream refresh (id %lld)",
		 h->peer->user_name, (long long)refresh_id);
	if (!h->srv->ops.refresh_done) {
		/* Recorded like an upstream writer's own announcement: that is all there is to do
		 * until a runner exists to act on it. "runs": null says nothing was started. */
		*ret = json_pack("{s:I, s:n}", "refresh_id", (json_int_t)refresh_id, "runs");
		return *ret ? 0 : -ENOMEM;
	}
	return control_call_op(h, h->srv->ops.refresh_done, refresh_id, finish_refresh_done);
fail:
	(void)store_rollback(h->srv->store);
	return r;
}

json_t *control_run_json(const struct store_data_run *r)
{
	const struct store_data_counters *k = &r->counters;

	return json_pack("{s:I, s:I, s:s?, s:s, s:s, s:b, s:b, s:b, s:s?, s:o, s:I, s:o, s:o, "
			 "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s?}",
			 "id", (json_int_t)r->run_id,
			 "export_id", (json_int_t)r->export_id,
			 "export", r->export_name,
			 "state", store_data_run_state_to_string(r->state) ?: "unknown",
			 "trigger", store_data_trigger_to_string(r->trigger) ?: "unknown",
			 "dry_run", r->dry_run,
			 "full", r->full_resend,
			 "force", r->force,
			 "requested_by", r->requested_by,
			 "resumed_from", time_json(r->resumed_from),
			 "queued_at", (json_int_t)r->queued_at,
			 "started_at", time_json(r->started_at),
			 "finished_at", time_json(r->finished_at),
			 "selected", (json_int_t)k->selected,
			 "sent", (json_int_t)k->sent,
			 "rejected", (json_int_t)k->rejected,
			 "unchanged", (json_int_t)k->unchanged,
			 "removed", (json_int_t)k->removed,
			 "pending", (json_int_t)k->pending,
			 "batches_total", (json_int_t)k->batches_total,
			 "batches_done", (json_int_t)k->batches_done,
			 "error", r->error);
}

/* "cannot WHAT: " and the run store's own message, or the database's when it gave none. */
static int data_failed(struct control_request *h, int r, const char *what, const char *msg)
{
	return set_error(h->err, h->errlen, r, "cannot %s: %s", what,
			 msg[0] ? msg : store_errmsg(h->srv->store));
}

/* Contributors see runs of the exports they may use, and nothing of the others. */
static int check_export_access(struct control_request *h, int64_t export_id, const char *what)
{
	struct store_export e = {};
	int r;

	if (control_peer_is_admin(h->peer))
		return 0;
	r = store_config_export_get(h->srv->store, export_id, &e);
	if (r == -ENOENT)
		return set_error(h->err, h->errlen, -EACCES, "%s belongs to a removed export, "
				 "which only admins may inspect", what);
	if (r < 0)
		return control_store_failed(h, r, "read the export");
	r = control_peer_may_use(h->peer, e.connection_usable_by) ? 0 :
		set_error(h->err, h->errlen, -EACCES, "%s belongs to export \"%s\", whose "
			  "connection \"%s\" is usable by admins only", what, e.name,
			  e.connection_name);
	store_export_done(&e);
	return r;
}

static int get_run(struct control_request *h, int64_t run_id, struct store_data_run **ret)
{
	char what[64], msg[256] = "";
	int r;

	r = store_data_run_get(h->srv->store, run_id, ret, msg, sizeof(msg));
	if (r == -ENOENT)
		return set_error(h->err, h->errlen, -ENOENT, "run %lld not found (see 'ccsyncctl "
				 "runs')", (long long)run_id);
	if (r < 0) {
		snprintf(what, sizeof(what), "read run %lld", (long long)run_id);
		return data_failed(h, r, what, msg);
	}
	snprintf(what, sizeof(what), "run %lld", (long long)run_id);
	r = check_export_access(h, (*ret)->export_id, what);
	if (r < 0)
		*ret = store_data_run_free(*ret);
	return r;
}

int control_handle_runs(struct control_request *h, json_t **ret)
{
	const char *name = arg_str(h->args, "export");
	struct store_data_run *runs = NULL;
	struct store_export e = {};
	size_t n = 0;
	int64_t export_id = 0, limit = arg_int(h->args, "limit", 20);
	char msg[256] = "";
	json_t *arr;
	int r;

	if (name) {
		r = control_find_export(h, name, &e);
		if (r < 0)
			return r;
		export_id = e.export_id;
		store_export_done(&e);
	}
	r = store_data_runs_list(h->srv->store, export_id, arg_int(h->args, "before", 0),
				 (size_t)limit, &runs, &n, msg, sizeof(msg));
	if (r < 0)
		return data_failed(h, r, "list runs", msg);
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		if (name || check_export_access(h, runs[i].export_id, "") >= 0)
			control_json_append(&arr, control_run_json(&runs[i]));
	h->err[0] = '\0';
	*ret = arr ? json_pack("{s:o, s:o}", "runs", arr, "next_before",
			       n == (size_t)limit ? json_integer(runs[n - 1].run_id) : json_null())
		   : NULL;
	store_data_runs_free(runs, n);
	return *ret ? 0 : -ENOMEM;
}

static json_t *batch_json(const struct store_data_batch *b)
{
	return json_pack("{s:I, s:s, s:s, s:I, s:I, s:s?, s:s?, s:I, s:I, s:I, s:I, s:o, s:o, "
			 "s:s?}",
			 "batch", (json_int_t)b->batch_no,
			 "kind", store_data_batch_kind_to_string(b->kind) ?: "?",
			 "state", store_data_batch_state_to_string(b->state) ?: "?",
			 "contacts", (json_int_t)b->contacts,
			 "bytes", (json_int_t)b->bytes,
			 "activity_id", b->activity_id,
			 "activity_state", b->activity_state,
			 "attempts", (json_int_t)b->attempts,
			 "error_count", (json_int_t)b->error_count,
			 "correctable_count", (json_int_t)b->correctable_count,
			 "cannot_add_count", (json_int_t)b->cannot_add_count,
			 "submitted_at", time_json(b->submitted_at),
			 "finished_at", time_json(b->finished_at),
			 "error", b->error);
}

int control_handle_run_show(struct control_request *h, json_t **ret)
{
	struct store_data_run *run = NULL;
	struct store_data_batch *b = NULL;
	size_t n = 0;
	char msg[256] = "";
	json_t *o, *arr;
	int r;

	r = get_run(h, arg_int(h->args, "run", 0), &run);
	if (r < 0)
		return r;
	r = store_data_run_batches(h->srv->store, run->run_id, &b, &n, msg, sizeof(msg));
	if (r < 0) {
		store_data_run_free(run);
		return data_failed(h, r, "read the run's batches", msg);
	}
	o = control_run_json(run);
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		control_json_append(&arr, batch_json(&b[i]));
	store_data_batches_free(b, n);
	store_data_run_free(run);
	if (!o || !arr || json_object_set_new(o, "batches", arr) < 0) {
		json_decref(o);
		return -ENOMEM;
	}
	*ret = o;
	return 0;
}

int control_handle_rejected(struct control_request *h, json_t **ret)
{
	struct store_data_run *run = NULL;
	struct store_data_rejected_row *rows = NULL;
	int64_t limit = arg_int(h->args, "limit", 1000);
	size_t n = 0;
	char msg[256] = "";
	json_t *arr;
	int r;

	r = get_run(h, arg_int(h->args, "run", 0), &run);
	if (r < 0)
		return r;
	r = store_data_rejected_page(h->srv->store, run->run_id, arg_int(h->args, "after", 0),
				     (size_t)limit, &rows, &n, msg, sizeof(msg));
	if (r < 0) {
		store_data_run_free(run);
		return data_failed(h, r, "read rejected rows", msg);
	}
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		control_json_append(&arr, json_pack("{s:I, s:s?, s:s?, s:s, s:s, s:b}",
						    "seq", (json_int_t)rows[i].seq,
						    "profile_id", rows[i].profile_id,
						    "email", rows[i].email,
						    "reason_code", rows[i].reason_code,
						    "reason", rows[i].reason,
						    "permanent", rows[i].permanent));
	*ret = arr ? json_pack("{s:I, s:o, s:o}", "run_id", (json_int_t)run->run_id, "rows", arr,
			       "next_after", n == (size_t)limit ? json_integer(rows[n - 1].seq)
								: json_null())
		   : NULL;
	store_data_rejected_rows_free(rows, n);
	store_data_run_free(run);
	return *ret ? 0 : -ENOMEM;
}

int control_handle_segments(struct control_request *h, json_t **ret)
{
	struct store_data_segment *v = NULL;
	size_t n = 0;
	char msg[256] = "";
	json_t *arr;
	int r;

	r = store_data_segments_list(h->srv->store, &v, &n, msg, sizeof(msg));
	if (r < 0)
		return data_failed(h, r, "list segments", msg);
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		control_json_append(&arr, json_pack("{s:I, s:s, s:s?, s:I, s:I}",
						    "id", (json_int_t)v[i].segment_id,
						    "name", v[i].name,
						    "description", v[i].description,
						    "members", (json_int_t)v[i].members,
						    "updated_at", (json_int_t)v[i].updated_at));
	store_data_segments_free(v, n);
	*ret = arr;
	return arr ? 0 : -ENOMEM;
}

static void finish_cancel(struct control_call *call, int r, json_t *result, const char *message)
{
	if (r >= 0)
		control_audit_now(call->srv, &call->peer, "run.cancel", "run", call->object_id,
				  result);
	control_call_reply(call, r, result, message);
}

int control_handle_cancel(struct control_request *h, json_t **ret)
{
	struct store_data_run *run = NULL;
	int64_t run_id;
	int r;

	r = get_run(h, arg_int(h->args, "run", 0), &run);
	if (r < 0)
		return r;
	run_id = run->run_id;
	if (store_data_run_state_is_final(run->state)) {
		r = set_error(h->err, h->errlen, -EALREADY, "run %lld has already finished (%s)",
			      (long long)run_id, store_data_run_state_to_string(run->state));
		store_data_run_free(run);
		return r;
	}
	store_data_run_free(run);
	return control_call_op(h, h->srv->ops.cancel_run, run_id, finish_cancel);
}
