/* SPDX-License-Identifier: MIT */
/*
 * Export commands: add, edit (laid over the current export and validated as a whole), list,
 * show, remove, enable, disable. A new or changed list ID is checked against Constant Contact
 * through the validate_list op before the export is saved.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "control-internal.h"
#include "cron.h"
#include "log.h"
#include "plan.h"
#include "store-data.h"
#include "tzfile.h"
#include "util.h"

static json_t *export_json(const struct store_export *e)
{
	json_t *o, *segments = json_array(), *fields = json_object(), *schedule;

	for (size_t i = 0; segments && i < e->n_segments; i++)
		if (json_array_append_new(segments, json_string(e->segments[i].name)) < 0) {
			json_decref(segments);
			segments = NULL;
		}
	for (size_t i = 0; fields && i < e->n_fields; i++)
		if (json_object_set_new(fields, e->fields[i].target,
					json_string(e->fields[i].source_field)) < 0) {
			json_decref(fields);
			fields = NULL;
		}
	schedule = json_pack("{s:s?, s:s?}", "cron", e->cron, "time_zone", e->time_zone);
	o = json_pack("{s:I, s:s, s:s, s:b, s:s, s:s, s:s, s:s?, s:s?, s:o?, s:o?, s:b, s:o, "
		      "s:o?, s:b, s:s?, s:s?, s:I, s:I}",
		      "id", (json_int_t)e->export_id,
		      "name", e->name,
		      "connection", e->connection_name,
		      "connection_removed", e->connection_removed,
		      "list_id", e->list_id,
		      "mode", e->mode,
		      "email_field", e->email_field,
		      "first_name_field", e->first_name_field,
		      "last_name_field", e->last_name_field,
		      "fields", fields,
		      "segments", segments,
		      "follows_refresh", e->follows_refresh,
		      "mirror_max_remove_share", e->has_mirror_share ?
			      json_real(e->mirror_max_remove_share) : json_null(),
		      "schedule", schedule,
		      "enabled", e->enabled,
		      "disabled_reason", e->disabled_reason,
		      "created_by", e->created_by,
		      "created_at", (json_int_t)e->created_at,
		      "updated_at", (json_int_t)e->updated_at);
	return o;
}

/* The export as export.add arguments: the base that export.edit's arguments are laid over. */
static json_t *export_as_args(const struct store_export *e)
{
	json_t *a = json_object(), *segments = json_array(), *fields = json_object();

	if (!a || !segments || !fields)
		goto oom;
	for (size_t i = 0; i < e->n_segments; i++)
		if (json_array_append_new(segments, json_string(e->segments[i].name)) < 0)
			goto oom;
	for (size_t i = 0; i < e->n_fields; i++)
		if (json_object_set_new(fields, e->fields[i].target,
					json_string(e->fields[i].source_field)) < 0)
			goto oom;
	if (json_object_set_new(a, "name", json_string(e->name)) < 0 ||
	    json_object_set_new(a, "connection", json_string(e->connection_name)) < 0 ||
	    json_object_set_new(a, "list_id", json_string(e->list_id)) < 0 ||
	    json_object_set_new(a, "email_field", json_string(e->email_field)) < 0 ||
	    json_object_set_new(a, "mode", json_string(e->mode)) < 0 ||
	    json_object_set_new(a, "follows_refresh", json_boolean(e->follows_refresh)) < 0 ||
	    json_object_set_new(a, "segments", segments) < 0)
		goto oom_a;
	segments = NULL;
	if (json_object_set_new(a, "fields", fields) < 0)
		goto oom_a;
	fields = NULL;
	if ((e->first_name_field &&
	     json_object_set_new(a, "first_name_field", json_string(e->first_name_field)) < 0) ||
	    (e->last_name_field &&
	     json_object_set_new(a, "last_name_field", json_string(e->last_name_field)) < 0) ||
	    (e->has_mirror_share &&
	     json_object_set_new(a, "mirror_max_remove_share",
				 json_real(e->mirror_max_remove_share)) < 0) ||
	    (e->cron && json_object_set_new(a, "cron", json_string(e->cron)) < 0) ||
	    (e->time_zone && json_object_set_new(a, "time_zone", json_string(e->time_zone)) < 0))
		goto oom_a;
	return a;
oom:
	json_decref(segments);
	json_decref(fields);
oom_a:
	json_decref(a);
	return NULL;
}

static bool is_uuid(const char *s)
{
	static const char pattern[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";

	if (strlen(s) != sizeof(pattern) - 1)
		return false;
	for (size_t i = 0; pattern[i]; i++) {
		if (pattern[i] == '-') {
			if (s[i] != '-')
				return false;
		} else if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i]) {
			return false;
		}
	}
	return true;
}

/* Targets are checked by the plan's own rules, so a saved mapping is one the runner can send. */
static int check_target(const char *target, char *err, size_t errlen)
{
	char msg[512];

	if (plan_target_check(target, msg, sizeof(msg)) < 0)
		return set_error(err, errlen, -EINVAL, "fields: %s", msg);
	return 0;
}

static int dup_opt(const char *s, char **ret)
{
	*ret = NULL;
	if (!s)
		return 0;
	*ret = strdup(s);
	return *ret ? 0 : -ENOMEM;
}

/* A profile attribute that no profile has is almost surely a typo: refuse it by name. */
static int check_field(struct control_request *h, const char *what, const char *field)
{
	size_t sampled = 0;
	int r;

	r = control_check_printable(what, field, h->err, h->errlen);
	if (r < 0)
		return r;
	r = store_data_attribute_exists(h->srv->store, field, 0, &sampled);
	if (r < 0)
		return control_store_failed(h, r, "look up profile attributes");
	if (r == 0 && sampled == 0)
		return set_error(h->err, h->errlen, -EINVAL,
				 "%s: there are no profiles yet, so \"%s\" cannot be checked; load "
				 "profiles first (upstream writer or 'ccsyncctl import profiles')",
				 what, field);
	if (r == 0)
		return set_error(h->err, h->errlen, -EINVAL,
				 "%s: no profile has an attribute named \"%s\" (looked at %zu "
				 "profiles; names are case-sensitive)", what, field, sampled);
	return 0;
}

/*
 * Builds a complete export from add-shaped arguments (already checked by the codec against
 * export.add's specification): resolves the connection and segments, checks every field against
 * the profiles, parses the schedule. Nothing is written.
 */
static int export_from_args(struct control_request *h, json_t *a, int64_t export_id,
			    struct store_export *ret)
{
	struct store_export e = { .export_id = export_id };
	struct store_connection conn = {};
	const char *name = arg_str(a, "name"), *list_id = arg_str(a, "list_id");
	const char *cron = arg_str(a, "cron"), *zone = arg_str(a, "time_zone");
	json_t *segments = json_object_get(a, "segments"), *fields = json_object_get(a, "fields");
	json_t *share = json_object_get(a, "mirror_max_remove_share");
	struct store_export other = {};
	const char *key;
	json_t *v;
	size_t i;
	int r;

	r = control_check_printable("name", name, h->err, h->errlen);
	if (r < 0)
		return r;
	r = store_config_export_find(h->srv->store, name, &other);
	if (r == 0) {
		bool same = other.export_id == export_id;

		store_export_done(&other);
		if (!same)
			return set_error(h->err, h->errlen, -EEXIST,
					 "an export named \"%s\" already exists", name);
	} else if (r != -ENOENT) {
		return control_store_failed(h, r, "read exports");
	}
	if (!is_uuid(list_id))
		return set_error(h->err, h->errlen, -EINVAL, "list_id: \"%.40s\" is not a list ID; "
				 "list IDs are UUIDs such as 0b1c3f4a-8a51-11ee-9f4c-fa163e0b7c29 "
				 "(see 'ccsyncctl lists CONNECTION')", list_id);
	r = control_find_connection(h, arg_str(a, "connection"), true, &conn);
	if (r < 0)
		return r;
	e.connection_id = conn.connection_id;
	r = dup_opt(conn.name, &e.connection_name);
	store_connection_done(&conn);
	if (r < 0)
		goto oom;

	r = check_field(h, "email_field", arg_str(a, "email_field"));
	if (r >= 0 && arg_str(a, "first_name_field"))
		r = check_field(h, "first_name_field", arg_str(a, "first_name_field"));
	if (r >= 0 && arg_str(a, "last_name_field"))
		r = check_field(h, "last_name_field", arg_str(a, "last_name_field"));
	if (r < 0)
		goto fail;
	json_object_foreach(fields, key, v) {
		r = check_target(key, h->err, h->errlen);
		if (r < 0)
			goto fail;
		r = check_field(h, "fields", json_string_value(v));
		if (r < 0)
			goto fail;
	}

	if (cron) {
		struct cron_expr ce;
		char msg[256];

		r = cron_parse(cron, &ce, msg, sizeof(msg));
		if (r < 0) {
			r = set_error(h->err, h->errlen, -EINVAL, "cron: %s", msg);
			goto fail;
		}
	}
	if (zone) {
		struct tz *tz = NULL;
		char msg[256];

		r = tzfile_load(zone, CCSYNC_ZONEINFO_DIR, &tz, msg, sizeof(msg));
		if (r < 0) {
			r = set_error(h->err, h->errlen, -EINVAL, "time_zone: %s", msg);
			goto fail;
		}
		tzfile_free(tz);
	}

	e.segments = calloc(json_array_size(segments) ?: 1, sizeof(*e.segments));
	if (!e.segments)
		goto oom;
	json_array_foreach(segments, i, v) {
		const char *sname = json_string_value(v);
		int64_t sid;
		bool dup = false;

		r = store_data_segment_lookup(h->srv->store, sname, &sid);
		if (r == -ENOENT) {
			r = set_error(h->err, h->errlen, -ENOENT, "segment \"%s\" does not exist "
				      "(see 'ccsyncctl segments')", sname);
			goto fail;
		}
		if (r < 0) {
			r = control_store_failed(h, r, "look up segments");
			goto fail;
		}
		for (size_t j = 0; j < e.n_segments; j++)
			dup = dup || e.segments[j].segment_id == sid;
		if (dup)
			continue;
		e.segments[e.n_segments].segment_id = sid;
		if (dup_opt(sname, &e.segments[e.n_segments].name) < 0)
			goto oom;
		e.n_segments++;
	}
	e.fields = calloc(json_object_size(fields) ?: 1, sizeof(*e.fields));
	if (!e.fields)
		goto oom;
	json_object_foreach(fields, key, v) {
		struct store_export_field *f = &e.fields[e.n_fields++];

		if (dup_opt(key, &f->target) < 0 ||
		    dup_opt(json_string_value(v), &f->source_field) < 0)
			goto oom;
	}

	e.follows_refresh = arg_bool(a, "follows_refresh", true);
	e.has_mirror_share = share != NULL;
	e.mirror_max_remove_share = share ? json_number_value(share) : 0;
	if (dup_opt(name, &e.name) < 0 || dup_opt(list_id, &e.list_id) < 0 ||
	    dup_opt(arg_str(a, "mode") ?: "upsert", &e.mode) < 0 ||
	    dup_opt(arg_str(a, "email_field"), &e.email_field) < 0 ||
	    dup_opt(arg_str(a, "first_name_field"), &e.first_name_field) < 0 ||
	    dup_opt(arg_str(a, "last_name_field"), &e.last_name_field) < 0 ||
	    dup_opt(cron, &e.cron) < 0 || dup_opt(zone, &e.time_zone) < 0 ||
	    dup_opt(h->peer->user_name, &e.created_by) < 0)
		goto oom;
	*ret = e;
	return 0;
oom:
	r = -ENOMEM;
fail:
	store_export_done(&e);
	return r;
}

int control_find_export(struct control_request *h, const char *name, struct store_export *ret)
{
	int r = store_config_export_find(h->srv->store, name, ret);

	if (r == -ENOENT)
		return set_error(h->err, h->errlen, -ENOENT,
				 "export \"%s\" not found (see 'ccsyncctl export list')", name);
	if (r < 0)
		return control_store_failed(h, r, "read the export");
	if (!control_peer_may_use(h->peer, ret->connection_usable_by)) {
		r = set_error(h->err, h->errlen, -EACCES, "export \"%s\" uses connection \"%s\", "
			      "which is usable by admins only", name, ret->connection_name);
		store_export_done(ret);
		return r;
	}
	return 0;
}

/*
 * Writes a built export (insert when export_id is 0) with its audit row. *ret_result is
 * {"export": ..., "warnings": [...]}. Used directly and as the continuation of validate_list.
 */
static int export_save(struct control_server *srv, const struct control_peer *peer,
		       struct store_export *e, json_t *before, json_t *warnings,
		       json_t **ret_result, char *err, size_t errlen)
{
	struct store_export saved = {};
	json_t *after = NULL;
	bool insert = e->export_id == 0;
	int64_t id = e->export_id;
	int r;

	r = store_begin_write(srv->store);
	if (r < 0)
		goto fail_store;
	r = insert ? store_config_export_insert(srv->store, e, store_config_now(), &id)
		   : store_config_export_update(srv->store, e, store_config_now());
	if (r == -EEXIST) {
		/* Checked before; only a concurrent change of the same name gets here. */
		r = set_error(err, errlen, -EEXIST, "an export named \"%s\" already exists",
			      e->name);
		goto fail;
	}
	if (r == -ENOENT) {
		r = set_error(err, errlen, -ENOENT, "export \"%s\" was removed meanwhile", e->name);
		goto fail;
	}
	if (r < 0)
		goto fail_store;
	r = store_config_export_get(srv->store, id, &saved);
	if (r < 0)
		goto fail_store;
	after = export_json(&saved);
	store_export_done(&saved);
	if (!after) {
		r = -ENOMEM;
		goto fail;
	}
	r = control_audit(srv, peer, insert ? "export.add" : "export.edit", "export", id, before,
			  after);
	if (r < 0)
		goto fail_store;
	r = store_commit(srv->store);
	if (r < 0)
		goto fail_store;
	log_info("control: %s %s export \"%s\" (id %lld)", peer->user_name,
		 insert ? "added" : "changed", e->name, (long long)id);
	if (srv->ops.config_changed)
		srv->ops.config_changed(srv->ops.ctx);
	*ret_result = json_pack("{s:o, s:O}", "export", after, "warnings", warnings);
	return *ret_result ? 0 : -ENOMEM;
fail_store:
	r = set_error(err, errlen, r < 0 ? r : -EIO, "cannot save the export: %s",
		      store_errmsg(srv->store));
fail:
	(void)store_rollback(srv->store);
	json_decref(after);
	return r;
}

/* The export is saved anyway, since saving must not depend on Constant Contact being reachable. */
static void warn_list_not_checked(json_t *warnings, const char *why)
{
	char w[512];

	snprintf(w, sizeof(w), "list ID not checked against Constant Contact: %s", why);
	(void)json_array_append_new(warnings, json_string(w));
}

static void finish_export_save(struct control_call *call, int r, json_t *result,
			       const char *message)
{
	char err[512] = "";
	json_t *reply = NULL;

	json_decref(result);
	if (!call->client || call->srv->closing)
		return; /* nobody to confirm it to: a save nobody sees would surprise */
	if (r == -ENOENT) {
		snprintf(err, sizeof(err), "list_id: Constant Contact has no list %s in the "
			 "account of connection \"%s\"%s%s (see 'ccsyncctl lists %s')",
			 call->pending_export.list_id, call->pending_export.connection_name,
			 message && *message ? ": " : "", message ? message : "",
			 call->pending_export.connection_name);
		control_call_reply(call, -EINVAL, NULL, err);
		return;
	}
	if (r < 0)
		warn_list_not_checked(call->warnings, message && *message ? message : strerror(-r));
	r = export_save(call->srv, &call->peer, &call->pending_export, call->before,
			call->warnings, &reply, err, sizeof(err));
	if (r < 0)
		control_call_reply(call, r, NULL, err);
	else
		control_call_reply(call, 0, reply, NULL);
}

/* Shared tail of export.add and export.edit: validate the list when we can, then save. */
static int export_validate_and_save(struct control_request *h, struct store_export *e,
				    json_t *before, bool list_changed, json_t **ret)
{
	json_t *warnings = json_array();
	struct control_call *call;
	int r;

	if (!warnings)
		return -ENOMEM;
	if (list_changed && h->srv->ops.validate_list) {
		r = control_start_call(h, finish_export_save, &call);
		if (r < 0) {
			json_decref(warnings);
			return r;
		}
		call->pending_export = *e;
		call->has_pending_export = true;
		memset(e, 0, sizeof(*e));
		call->before = json_incref(before);
		call->warnings = warnings;
		r = h->srv->ops.validate_list(h->srv->ops.ctx, call,
					      call->pending_export.connection_id,
					      call->pending_export.list_id);
		if (r < 0) {
			/* Could not even ask: save anyway, as when Constant Contact is down. */
			*e = call->pending_export;
			memset(&call->pending_export, 0, sizeof(call->pending_export));
			call->has_pending_export = false;
			warnings = json_incref(call->warnings);
			control_call_discard(call);
			warn_list_not_checked(warnings, strerror(-r));
		} else {
			return CONTROL_HANDLER_ASYNC;
		}
	} else if (list_changed) {
		warn_list_not_checked(warnings, "not available in this daemon build");
	}
	r = export_save(h->srv, h->peer, e, before, warnings, ret, h->err, h->errlen);
	json_decref(warnings);
	return r;
}

int control_handle_export_add(struct control_request *h, json_t **ret)
{
	struct store_export e = {};
	int r;

	r = export_from_args(h, h->args, 0, &e);
	if (r < 0)
		return r;
	r = export_validate_and_save(h, &e, NULL, true, ret);
	store_export_done(&e);
	return r;
}

int control_handle_export_edit(struct control_request *h, json_t **ret)
{
	struct store_export cur = {}, e = {};
	json_t *merged = NULL, *before = NULL, *v;
	const char *key;
	bool list_changed, any = false;
	int r;

	r = control_find_export(h, arg_str(h->args, "export"), &cur);
	if (r < 0)
		return r;
	merged = export_as_args(&cur);
	before = export_json(&cur);
	if (!merged || !before) {
		r = -ENOMEM;
		goto out;
	}
	json_object_foreach(h->args, key, v) {
		if (streq(key, "export"))
			continue;
		any = true;
		if (json_is_null(v)) {
			(void)json_object_del(merged, key); /* -1 only when absent already */
			continue;
		}
		if (json_object_set(merged, key, v) < 0) {
			r = -ENOMEM;
			goto out;
		}
	}
	if (!any) {
		r = set_error(h->err, h->errlen, -EINVAL, "nothing to change: give at least one "
			      "setting to change");
		goto out;
	}
	/* Laid over the current export, the arguments must make a complete, valid export. */
	r = ctlproto_validate_args(ctlproto_command_get(CTL_EXPORT_ADD), merged, h->err,
				   h->errlen);
	if (r < 0)
		goto out;
	r = export_from_args(h, merged, cur.export_id, &e);
	if (r < 0)
		goto out;
	list_changed = !streq(e.list_id, cur.list_id) || e.connection_id != cur.connection_id;
	if (list_changed) {
		struct store_data_run *runs = NULL;
		size_t n = 0;

		r = store_data_runs_list(h->srv->store, cur.export_id, 0, 1, &runs, &n, NULL, 0);
		if (r < 0) {
			r = control_store_failed(h, r, "read the export's runs");
			goto out;
		}
		store_data_runs_free(runs, n);
		/* Sync state records what this export put on *its* list; against another list
		 * (or account) it would be wrong in both directions, and mirror mode acts on it. */
		if (n > 0) {
			r = set_error(h->err, h->errlen, -EEXIST, "export \"%s\" has already run "
				      "against list %s: its sync state belongs to that list; add a "
				      "new export for the other list (and remove this one) instead",
				      cur.name, cur.list_id);
			goto out;
		}
	}
	r = export_validate_and_save(h, &e, before, list_changed, ret);
out:
	store_export_done(&cur);
	store_export_done(&e);
	json_decref(merged);
	json_decref(before);
	return r;
}

int control_handle_export_list(struct control_request *h, json_t **ret)
{
	struct store_export *v = NULL;
	size_t n = 0;
	json_t *arr;
	int r;

	r = store_config_export_list(h->srv->store, &v, &n);
	if (r < 0)
		return control_store_failed(h, r, "list exports");
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		if (control_peer_may_use(h->peer, v[i].connection_usable_by))
			control_json_append(&arr, export_json(&v[i]));
	store_export_array_free(v, n);
	if (!arr)
		return -ENOMEM;
	*ret = arr;
	return 0;
}

int control_handle_export_show(struct control_request *h, json_t **ret)
{
	struct store_export e = {};
	int r = control_find_export(h, arg_str(h->args, "export"), &e);

	if (r < 0)
		return r;
	*ret = export_json(&e);
	store_export_done(&e);
	return *ret ? 0 : -ENOMEM;
}

/* export.remove, export.enable, export.disable: one row change plus audit. */
static int export_change(struct control_request *h, enum ctlproto_command_id cmd, json_t **ret)
{
	struct store_export e = {}, after_e = {};
	json_t *before = NULL, *after = NULL;
	const char *reason = arg_str(h->args, "reason");
	char reason_buf[600];
	int r;

	r = control_find_export(h, arg_str(h->args, "export"), &e);
	if (r < 0)
		return r;
	if (cmd == CTL_EXPORT_ENABLE && e.connection_removed) {
		r = set_error(h->err, h->errlen, -ENOKEY, "export \"%s\" cannot be enabled: its "
			      "connection \"%s\" was removed; point it at another connection first "
			      "(export edit --connection)", e.name, e.connection_name);
		goto out;
	}
	before = export_json(&e);
	if (!before) {
		r = -ENOMEM;
		goto out;
	}
	if (cmd == CTL_EXPORT_DISABLE) {
		snprintf(reason_buf, sizeof(reason_buf), "disabled by %s%s%s", h->peer->user_name,
			 reason && *reason ? ": " : "", reason ? reason : "");
		r = control_check_printable("reason", reason_buf, h->err, h->errlen);
		if (r < 0)
			goto out;
	}
	r = control_change_begin(h);
	if (r < 0)
		goto out;
	if (cmd == CTL_EXPORT_REMOVE)
		r = store_config_export_remove(h->srv->store, e.export_id, store_config_now());
	else
		r = store_config_export_set_enabled(h->srv->store, e.export_id,
						    cmd == CTL_EXPORT_ENABLE, reason_buf,
						    store_config_now());
	if (r < 0) {
		r = control_store_failed(h, r, "change the export");
		goto fail;
	}
	if (cmd != CTL_EXPORT_REMOVE) {
		r = store_config_export_get(h->srv->store, e.export_id, &after_e);
		if (r < 0) {
			r = control_store_failed(h, r, "read the export back");
			goto fail;
		}
		after = export_json(&after_e);
		store_export_done(&after_e);
		if (!after) {
			r = -ENOMEM;
			goto fail;
		}
	}
	r = control_change_commit(h, h->req->command->name, "export", e.export_id, before, after);
	if (r < 0)
		goto fail;
	log_info("control: %s: %s export \"%s\" (id %lld)", h->req->command->name,
		 h->peer->user_name, e.name, (long long)e.export_id);
	if (cmd == CTL_EXPORT_REMOVE && h->srv->ops.export_removed)
		h->srv->ops.export_removed(h->srv->ops.ctx, e.export_id);
	if (h->srv->ops.config_changed)
		h->srv->ops.config_changed(h->srv->ops.ctx);
	*ret = json_pack("{s:O}", "export", after ? after : before);
	r = *ret ? 0 : -ENOMEM;
	goto out;
fail:
	(void)store_rollback(h->srv->store);
out:
	store_export_done(&e);
	json_decref(before);
	json_decref(after);
	return r;
}

int control_handle_export_remove(struct control_request *h, json_t **ret)
{
	return export_change(h, CTL_EXPORT_REMOVE, ret);
}

int control_handle_export_enable(struct control_request *h, json_t **ret)
{
	return export_change(h, CTL_EXPORT_ENABLE, ret);
}

int control_handle_export_disable(struct control_request *h, json_t **ret)
{
	return export_change(h, CTL_EXPORT_DISABLE, ret);
}
