/* SPDX-License-Identifier: MIT */
/*
 * What every command handler shares (arguments, role checks, audit rows, handing a request to an
 * op) and the command table: which handler answers a command and the least role that may send
 * it. Also the few commands that belong to no domain: whoami, status, audit, imports.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control-internal.h"
#include "log.h"
#include "util.h"

#define AUDIT_DEFAULT_LIMIT 50

bool control_peer_is_admin(const struct control_peer *p)
{
	return p->role == CONTROL_ROLE_ADMIN;
}

bool control_peer_may_use(const struct control_peer *p, const char *usable_by)
{
	return control_peer_is_admin(p) || streq_ptr(usable_by, "admins_and_contributors");
}

int control_check_printable(const char *what, const char *s, char *err, size_t errlen)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return set_error(err, errlen, -EINVAL,
					 "%s: must not contain control characters", what);
	if (s[0] == ' ' || (s[0] && s[strlen(s) - 1] == ' '))
		return set_error(err, errlen, -EINVAL,
				 "%s: must not begin or end with a blank", what);
	return 0;
}

int control_store_failed(struct control_request *h, int r, const char *what)
{
	return set_error(h->err, h->errlen, r < 0 ? r : -EIO, "cannot %s: %s", what,
			 store_errmsg(h->srv->store));
}

static char *json_text(json_t *v)
{
	return v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

int control_audit(struct control_server *srv, const struct control_peer *peer, const char *action,
		  const char *object_type, int64_t object_id, json_t *before, json_t *after)
{
	_cleanup_free_ char *b = json_text(before), *a = json_text(after);
	char idbuf[32];
	struct store_audit_entry e = {
		.at = store_config_now(),
		.has_uid = true,
		.uid = peer->uid,
		.user_name = (char *)peer->user_name,
		.action = (char *)action,
		.object_type = (char *)object_type,
		.object_id = object_id > 0 ? idbuf : NULL,
		.before_json = b,
		.after_json = a,
	};
	int64_t id;

	if ((before && !b) || (after && !a))
		return -ENOMEM;
	snprintf(idbuf, sizeof(idbuf), "%lld", (long long)object_id);
	return store_config_audit_add(srv->store, &e, &id);
}

void control_audit_now(struct control_server *srv, const struct control_peer *peer,
		       const char *action, const char *object_type, int64_t object_id,
		       json_t *after)
{
	/* An op may call back from inside its own transaction: the row then joins it. */
	bool own = !store_in_transaction(srv->store);
	int r = own ? store_begin_write(srv->store) : 0;

	if (r >= 0)
		r = control_audit(srv, peer, action, object_type, object_id, NULL, after);
	if (r >= 0 && own)
		r = store_commit(srv->store);
	if (r < 0) {
		if (own)
			(void)store_rollback(srv->store);
		log_error("control: cannot write the audit entry for %s by %s: %s", action,
			  peer->user_name, store_errmsg(srv->store));
	}
}

/* ---- configuration changes ---- */

int control_change_begin(struct control_request *h)
{
	int r = store_begin_write(h->srv->store);

	return r < 0 ? control_store_failed(h, r, "start a transaction") : 0;
}

int control_change_commit(struct control_request *h, const char *action, const char *object_type,
			  int64_t object_id, json_t *before, json_t *after)
{
	int r = control_audit(h->srv, h->peer, action, object_type, object_id, before, after);

	if (r < 0)
		return control_store_failed(h, r, "write the audit log");
	r = store_commit(h->srv->store);
	if (r < 0)
		return control_store_failed(h, r, "commit");
	return 0;
}

void control_json_append(json_t **arr, json_t *item)
{
	if (!*arr) {
		json_decref(item);
		return;
	}
	if (json_array_append_new(*arr, item) < 0) {
		json_decref(*arr);
		*arr = NULL;
	}
}

/* ---- handing requests to ops ---- */

int control_op_missing(struct control_request *h)
{
	snprintf(h->err, h->errlen, "%s is not available in this daemon build",
		 h->req->command->name);
	return -EOPNOTSUPP;
}

int control_start_call(struct control_request *h, control_finish_fn finish,
		       struct control_call **ret)
{
	struct control_call *call = control_call_new(h->client, h->req);

	if (!call)
		return -ENOMEM;
	call->finish = finish;
	*ret = call;
	return 0;
}

int control_op_refused(struct control_request *h, struct control_call *call, int r)
{
	control_call_discard(call);
	if (!h->err[0])
		snprintf(h->err, h->errlen, "%s failed: %s", h->req->command->name, strerror(-r));
	return r;
}

int control_call_op(struct control_request *h,
		    int (*op)(void *ctx, struct control_call *call, int64_t object_id),
		    int64_t object_id, control_finish_fn finish)
{
	struct control_call *call;
	int r;

	if (!op)
		return control_op_missing(h);
	r = control_start_call(h, finish, &call);
	if (r < 0)
		return r;
	call->object_id = object_id;
	r = op(h->srv->ops.ctx, call, object_id);
	if (r < 0)
		return control_op_refused(h, call, r);
	return CONTROL_HANDLER_ASYNC;
}

/* ---- requests that touch no configuration ---- */

int control_handle_whoami(struct control_request *h, json_t **ret)
{
	*ret = json_pack("{s:I, s:I, s:s, s:s}", "uid", (json_int_t)h->peer->uid, "gid",
			 (json_int_t)h->peer->gid, "user", h->peer->user_name, "role",
			 control_role_to_string(h->peer->role));
	return *ret ? 0 : -ENOMEM;
}

int control_handle_status(struct control_request *h, json_t **ret)
{
	struct control_call *call;
	int r;

	if (!h->srv->ops.status)
		return control_op_missing(h);
	r = control_start_call(h, NULL, &call);
	if (r < 0)
		return r;
	r = h->srv->ops.status(h->srv->ops.ctx, call);
	if (r < 0)
		return control_op_refused(h, call, r);
	return CONTROL_HANDLER_ASYNC;
}

int control_handle_audit(struct control_request *h, json_t **ret)
{
	struct store_audit_entry *v = NULL;
	size_t n = 0;
	int64_t limit = arg_int(h->args, "limit", AUDIT_DEFAULT_LIMIT);
	json_t *arr, *o;
	int r;

	r = store_config_audit_list(h->srv->store, arg_int(h->args, "before", 0), (size_t)limit,
				    &v, &n);
	if (r < 0)
		return control_store_failed(h, r, "read the audit log");
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++) {
		json_t *before = v[i].before_json ? json_loads(v[i].before_json, 0, NULL) : NULL;
		json_t *after = v[i].after_json ? json_loads(v[i].after_json, 0, NULL) : NULL;

		o = json_pack("{s:I, s:I, s:o, s:s?, s:s, s:s, s:s?, s:o, s:o}",
			      "id", (json_int_t)v[i].audit_id,
			      "at", (json_int_t)v[i].at,
			      "uid", v[i].has_uid ? json_integer(v[i].uid) : json_null(),
			      "user", v[i].user_name,
			      "action", v[i].action,
			      "object_type", v[i].object_type,
			      "object_id", v[i].object_id,
			      "before", before ? before : json_null(),
			      "after", after ? after : json_null());
		if (json_array_append_new(arr, o) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	o = n == (size_t)limit && n > 0 ? json_integer(v[n - 1].audit_id) : json_null();
	store_audit_entry_array_free(v, n);
	if (!arr) {
		json_decref(o);
		return -ENOMEM;
	}
	*ret = json_pack("{s:o, s:o}", "entries", arr, "next_before", o);
	return *ret ? 0 : -ENOMEM;
}

/* ---- imports ---- */

int control_handle_import(struct control_request *h, json_t **ret)
{
	const char *kind = arg_str(h->args, "kind"), *segment = arg_str(h->args, "segment");
	struct control_import_spec spec = {
		.kind = kind,
		.format = arg_str(h->args, "format"),
		.segment = segment,
		.peer = h->peer,
	};
	void *session = NULL;
	int r;

	if (!h->srv->ops.import_begin || !h->srv->ops.import_data || !h->srv->ops.import_end ||
	    !h->srv->ops.import_abort)
		return control_op_missing(h);
	if (streq(kind, "segment") && !segment)
		return set_error(h->err, h->errlen, -EINVAL, "args.segment: required when "
				 "importing a segment (the segment's name)");
	if (streq(kind, "profiles") && segment)
		return set_error(h->err, h->errlen, -EINVAL, "args.segment: only for kind "
				 "\"segment\"");
	if (segment) {
		r = control_check_printable("segment", segment, h->err, h->errlen);
		if (r < 0)
			return r;
	}
	r = h->srv->ops.import_begin(h->srv->ops.ctx, &spec, &session, h->err, h->errlen);
	if (r < 0)
		return r;
	h->import->session = session;
	h->import->bytes = 0;
	*ret = json_pack("{s:s, s:i}", "import", "open", "chunk_bytes", CTLPROTO_IMPORT_CHUNK);
	return *ret ? 0 : -ENOMEM;
}

int control_handle_import_data(struct control_request *h, json_t **ret)
{
	json_t *data = json_object_get(h->args, "data"), *info = NULL;
	_cleanup_free_ unsigned char *bytes = NULL;
	size_t len;
	int r;

	if (!h->import->session)
		return set_error(h->err, h->errlen, -EINVAL, "no import is open on this "
				 "connection; send \"import\" first");
	r = ctlproto_base64_decode(json_string_value(data), json_string_length(data), &bytes, &len);
	if (r < 0) {
		control_import_abort(h->srv, h->import);
		return set_error(h->err, h->errlen, r, "args.data: %s; the import was abandoned, "
				 "nothing was imported", r == -EINVAL ? "not valid base64" :
				 "out of memory");
	}
	r = h->srv->ops.import_data(h->srv->ops.ctx, h->import->session, bytes, len, &info,
				    h->err, h->errlen);
	if (r < 0) {
		control_import_abort(h->srv, h->import);
		return r;
	}
	h->import->bytes += len;
	if (!info)
		info = json_object();
	if (info && json_object_set_new(info, "bytes",
					json_integer((json_int_t)h->import->bytes)) < 0) {
		json_decref(info);
		info = NULL;
	}
	*ret = info;
	return info ? 0 : -ENOMEM;
}

int control_handle_import_end(struct control_request *h, json_t **ret)
{
	json_t *summary = NULL;
	void *session = h->import->session;
	int r;

	if (!session)
		return set_error(h->err, h->errlen, -EINVAL, "no import is open on this "
				 "connection; send \"import\" first");
	h->import->session = NULL;
	r = h->srv->ops.import_end(h->srv->ops.ctx, session, &summary, h->err, h->errlen);
	if (r < 0) {
		h->srv->ops.import_abort(h->srv->ops.ctx, session);
		return r;
	}
	control_audit_now(h->srv, h->peer, "import", "data", 0, summary);
	*ret = summary ? summary : json_object();
	return *ret ? 0 : -ENOMEM;
}

/* ---- dispatch ---- */

const struct control_command control_commands[_CTL_COMMAND_MAX] = {
	[CTL_WHOAMI] = { control_handle_whoami, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_CONNECTION_ADD] = { control_handle_connection_add, CONTROL_ROLE_ADMIN },
	[CTL_CONNECTION_LIST] = { control_handle_connection_list, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_CONNECTION_SHOW] = { control_handle_connection_show, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_CONNECTION_EDIT] = { control_handle_connection_edit, CONTROL_ROLE_ADMIN },
	[CTL_CONNECTION_REMOVE] = { control_handle_connection_remove, CONTROL_ROLE_ADMIN },
	[CTL_CONNECTION_CONSENT] = { control_handle_connection_consent, CONTROL_ROLE_ADMIN },
	[CTL_CONNECTION_AUTHORIZE] = { control_handle_connection_authorize, CONTROL_ROLE_ADMIN },
	[CTL_LISTS] = { control_handle_lists, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_ADD] = { control_handle_export_add, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_LIST] = { control_handle_export_list, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_SHOW] = { control_handle_export_show, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_EDIT] = { control_handle_export_edit, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_REMOVE] = { control_handle_export_remove, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_ENABLE] = { control_handle_export_enable, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_EXPORT_DISABLE] = { control_handle_export_disable, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_RUN] = { control_handle_run, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_CANCEL] = { control_handle_cancel, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_REFRESH_DONE] = { control_handle_refresh_done, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_RUNS] = { control_handle_runs, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_RUN_SHOW] = { control_handle_run_show, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_REJECTED] = { control_handle_rejected, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_STATUS] = { control_handle_status, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_SEGMENTS] = { control_handle_segments, CONTROL_ROLE_CONTRIBUTOR },
	[CTL_IMPORT] = { control_handle_import, CONTROL_ROLE_ADMIN },
	[CTL_IMPORT_DATA] = { control_handle_import_data, CONTROL_ROLE_ADMIN },
	[CTL_IMPORT_END] = { control_handle_import_end, CONTROL_ROLE_ADMIN },
	[CTL_AUDIT] = { control_handle_audit, CONTROL_ROLE_ADMIN },
};
