/* SPDX-License-Identifier: MIT */
/*
 * Connection commands: add, list, show, edit, remove, consent, authorize, and the Constant Contact
 * lists of a connection. Every change is committed together with its audit row.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control-internal.h"
#include "log.h"
#include "store-auth.h"
#include "util.h"

static json_t *connection_json(const struct store_connection *c, bool admin)
{
	json_t *o, *consent = json_null();

	if (c->consent_by)
		consent = json_pack("{s:s, s:I, s:I}", "by", c->consent_by, "uid",
				    (json_int_t)c->consent_uid, "at", (json_int_t)c->consent_at);
	o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s?, s:b, s:o, s:I, s:I, s:I}",
		      "id", (json_int_t)c->connection_id,
		      "name", c->name,
		      "usable_by", c->usable_by,
		      "auth_flow", c->auth_flow,
		      "auth_state", c->auth_state,
		      "auth_error", c->auth_error,
		      "tokens_stored", c->has_tokens,
		      "consent", consent,
		      "exports", (json_int_t)c->exports,
		      "created_at", (json_int_t)c->created_at,
		      "updated_at", (json_int_t)c->updated_at);
	/* The API key identifies the application: admins manage it, nobody else needs it. */
	if (o && admin && json_object_set_new(o, "client_id", json_string(c->client_id)) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int control_find_connection(struct control_request *h, const char *name, bool for_use,
			    struct store_connection *ret)
{
	int r = store_config_connection_find(h->srv->store, name, ret);

	if (r == -ENOENT)
		return set_error(h->err, h->errlen, -ENOENT,
				 "connection \"%s\" not found (see 'ccsyncctl connection list')",
				 name);
	if (r < 0)
		return control_store_failed(h, r, "read the connection");
	if (for_use && !control_peer_may_use(h->peer, ret->usable_by)) {
		store_connection_done(ret);
		return set_error(h->err, h->errlen, -EACCES,
				 "connection \"%s\" is usable by admins only", name);
	}
	return 0;
}

static int reload_connection_json(struct control_request *h, int64_t id, json_t **ret)
{
	struct store_connection c = {};
	int r = store_config_connection_get(h->srv->store, id, &c);

	if (r < 0)
		return control_store_failed(h, r, "read the connection back");
	*ret = connection_json(&c, true);
	store_connection_done(&c);
	return *ret ? 0 : -ENOMEM;
}

/* The connection a change is about, and its audit "before" (transfer full). */
static int find_connection_to_change(struct control_request *h, struct store_connection *ret,
				     json_t **ret_before)
{
	json_t *before;
	int r;

	r = control_find_connection(h, arg_str(h->args, "connection"), false, ret);
	if (r < 0)
		return r;
	before = connection_json(ret, true);
	if (!before) {
		store_connection_done(ret);
		return -ENOMEM;
	}
	*ret_before = before;
	return 0;
}

static int connection_exists(struct control_request *h, const char *name)
{
	struct store_connection existing = {};

	if (store_config_connection_find(h->srv->store, name, &existing) < 0)
		return 0;
	store_connection_done(&existing);
	return set_error(h->err, h->errlen, -EEXIST, "a connection named \"%s\" already exists",
			 name);
}

int control_handle_connection_add(struct control_request *h, json_t **ret)
{
	const char *name = arg_str(h->args, "name"), *client_id = arg_str(h->args, "client_id");
	json_t *after = NULL;
	int64_t id;
	int r;

	r = control_check_printable("name", name, h->err, h->errlen);
	if (r >= 0)
		r = control_check_printable("client_id", client_id, h->err, h->errlen);
	if (r < 0)
		return r;
	if (strpbrk(client_id, " \t"))
		return set_error(h->err, h->errlen, -EINVAL, "client_id: must not contain blanks "
				 "(it is the API key shown in the Constant Contact developer "
				 "portal)");
	r = connection_exists(h, name);
	if (r >= 0)
		r = control_change_begin(h);
	if (r < 0)
		return r;
	r = store_config_connection_insert(h->srv->store, name, client_id,
					   arg_str(h->args, "auth_flow"),
					   arg_str(h->args, "usable_by"), store_config_now(), &id);
	if (r == -EEXIST) {
		r = set_error(h->err, h->errlen, -EEXIST, "a connection named \"%s\" already "
			      "exists", name);
		goto fail;
	}
	if (r < 0) {
		r = control_store_failed(h, r, "add the connection");
		goto fail;
	}
	r = reload_connection_json(h, id, &after);
	if (r >= 0)
		r = control_change_commit(h, "connection.add", "connection", id, NULL, after);
	if (r < 0)
		goto fail;
	log_info("control: %s added connection \"%s\" (id %lld)", h->peer->user_name, name,
		 (long long)id);
	*ret = json_pack("{s:o}", "connection", after);
	return *ret ? 0 : -ENOMEM;
fail:
	(void)store_rollback(h->srv->store);
	json_decref(after);
	return r;
}

int control_handle_connection_list(struct control_request *h, json_t **ret)
{
	struct store_connection *v = NULL;
	size_t n = 0;
	json_t *arr;
	int r;

	r = store_config_connection_list(h->srv->store, &v, &n);
	if (r < 0)
		return control_store_failed(h, r, "list connections");
	arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		if (control_peer_may_use(h->peer, v[i].usable_by))
			control_json_append(&arr, connection_json(&v[i],
								  control_peer_is_admin(h->peer)));
	store_connection_array_free(v, n);
	if (!arr)
		return -ENOMEM;
	*ret = arr;
	return 0;
}

int control_handle_connection_show(struct control_request *h, json_t **ret)
{
	struct store_connection c = {};
	int r = control_find_connection(h, arg_str(h->args, "connection"), true, &c);

	if (r < 0)
		return r;
	*ret = connection_json(&c, control_peer_is_admin(h->peer));
	store_connection_done(&c);
	return *ret ? 0 : -ENOMEM;
}

int control_handle_connection_edit(struct control_request *h, json_t **ret)
{
	const char *name = arg_str(h->args, "name"), *client_id = arg_str(h->args, "client_id");
	const char *flow = arg_str(h->args, "auth_flow"), *usable = arg_str(h->args, "usable_by");
	struct store_connection c = {};
	json_t *before = NULL, *after = NULL;
	bool key_changed, tokens_deleted = false;
	char *saved[4];
	int r;

	if (!name && !client_id && !flow && !usable)
		return set_error(h->err, h->errlen, -EINVAL, "nothing to change: give at least one "
				 "of name, client_id, auth_flow, usable_by");
	if (name && (r = control_check_printable("name", name, h->err, h->errlen)) < 0)
		return r;
	if (client_id &&
	    (r = control_check_printable("client_id", client_id, h->err, h->errlen)) < 0)
		return r;
	if (client_id && strpbrk(client_id, " \t"))
		return set_error(h->err, h->errlen, -EINVAL, "client_id: must not contain blanks");
	r = find_connection_to_change(h, &c, &before);
	if (r < 0)
		return r;
	key_changed = (client_id && !streq(client_id, c.client_id)) ||
		      (flow && !streq(flow, c.auth_flow));
	/* Point the struct at the request's strings for the update; restore before freeing. */
	saved[0] = c.name, saved[1] = c.client_id, saved[2] = c.auth_flow, saved[3] = c.usable_by;
	if (name && !streq(name, c.name)) {
		r = connection_exists(h, name);
		if (r < 0)
			goto out;
	}
	if (name)
		c.name = (char *)name;
	if (client_id)
		c.client_id = (char *)client_id;
	if (flow)
		c.auth_flow = (char *)flow;
	if (usable)
		c.usable_by = (char *)usable;

	r = control_change_begin(h);
	if (r < 0)
		goto out;
	r = store_config_connection_update(h->srv->store, &c, store_config_now());
	if (r < 0) {
		r = control_store_failed(h, r, "update the connection");
		goto fail;
	}
	if (key_changed) {
		/* Tokens belong to the API key and flow that obtained them: with either changed
		 * they are useless, and keeping them would keep a secret for nothing. */
		r = store_config_connection_delete_tokens(h->srv->store, c.connection_id,
							  &tokens_deleted);
		if (r >= 0)
			r = store_auth_set_state(h->srv->store, c.connection_id,
						 STORE_AUTH_UNAUTHORIZED, NULL);
		if (r < 0) {
			r = control_store_failed(h, r, "reset the connection's authorization");
			goto fail;
		}
	}
	r = reload_connection_json(h, c.connection_id, &after);
	if (r >= 0)
		r = control_change_commit(h, "connection.edit", "connection", c.connection_id,
					  before, after);
	if (r < 0)
		goto fail;
	if (tokens_deleted && store_checkpoint(h->srv->store) < 0)
		log_warning("control: checkpoint after deleting tokens failed: %s, ignoring",
			    store_errmsg(h->srv->store));
	if (key_changed && h->srv->ops.connection_changed)
		h->srv->ops.connection_changed(h->srv->ops.ctx, c.connection_id);
	*ret = json_pack("{s:o, s:b}", "connection", TAKE_PTR(after), "authorization_reset",
			 key_changed);
	r = *ret ? 0 : -ENOMEM;
	goto out;
fail:
	(void)store_rollback(h->srv->store);
out:
	c.name = saved[0], c.client_id = saved[1], c.auth_flow = saved[2], c.usable_by = saved[3];
	store_connection_done(&c);
	json_decref(before);
	json_decref(after);
	return r;
}

int control_handle_connection_remove(struct control_request *h, json_t **ret)
{
	struct store_connection c = {};
	json_t *before = NULL;
	bool tokens_deleted = false;
	int64_t disabled = 0, now = store_config_now();
	char reason[256], day[32];
	struct tm tm;
	time_t t = (time_t)now;
	int r;

	r = find_connection_to_change(h, &c, &before);
	if (r < 0)
		return r;
	gmtime_r(&t, &tm);
	strftime(day, sizeof(day), "%Y-%m-%d %H:%M UTC", &tm);
	snprintf(reason, sizeof(reason), "connection \"%s\" was removed by %s on %s", c.name,
		 h->peer->user_name, day);

	r = control_change_begin(h);
	if (r < 0)
		goto out;
	r = store_config_connection_disable_exports(h->srv->store, c.connection_id, reason, now,
						    &disabled);
	if (r >= 0)
		r = store_config_connection_delete_tokens(h->srv->store, c.connection_id,
							  &tokens_deleted);
	if (r >= 0)
		r = store_config_connection_remove(h->srv->store, c.connection_id, now);
	if (r < 0) {
		r = control_store_failed(h, r, "remove the connection");
		goto fail;
	}
	r = control_change_commit(h, "connection.remove", "connection", c.connection_id, before,
				  NULL);
	if (r < 0)
		goto fail;
	/* secure_delete wiped the pages; the checkpoint makes sure no copy waits in the WAL. */
	if (store_checkpoint(h->srv->store) < 0)
		log_warning("control: checkpoint after removing connection %lld failed: %s, "
			    "ignoring", (long long)c.connection_id, store_errmsg(h->srv->store));
	log_notice("control: %s removed connection \"%s\" (id %lld): %lld export(s) disabled",
		   h->peer->user_name, c.name, (long long)c.connection_id, (long long)disabled);
	if (h->srv->ops.connection_removed)
		h->srv->ops.connection_removed(h->srv->ops.ctx, c.connection_id);
	if (h->srv->ops.config_changed)
		h->srv->ops.config_changed(h->srv->ops.ctx);
	*ret = json_pack("{s:O, s:I, s:b}", "connection", before, "exports_disabled",
			 (json_int_t)disabled, "tokens_deleted", tokens_deleted);
	r = *ret ? 0 : -ENOMEM;
	goto out;
fail:
	(void)store_rollback(h->srv->store);
out:
	store_connection_done(&c);
	json_decref(before);
	return r;
}

int control_handle_connection_consent(struct control_request *h, json_t **ret)
{
	bool revoke = arg_bool(h->args, "revoke", false);
	struct store_connection c = {};
	json_t *before = NULL, *after = NULL;
	int r;

	r = find_connection_to_change(h, &c, &before);
	if (r < 0)
		return r;
	r = control_change_begin(h);
	if (r < 0)
		goto out;
	r = store_config_connection_set_consent(h->srv->store, c.connection_id,
						revoke ? NULL : h->peer->user_name, h->peer->uid,
						store_config_now());
	if (r < 0) {
		r = control_store_failed(h, r, "record the consent");
		goto fail;
	}
	r = reload_connection_json(h, c.connection_id, &after);
	if (r >= 0)
		r = control_change_commit(h, revoke ? "connection.consent_revoke" :
						      "connection.consent",
					  "connection", c.connection_id, before, after);
	if (r < 0)
		goto fail;
	log_notice("control: %s %s data-privacy consent for connection \"%s\"",
		   h->peer->user_name, revoke ? "revoked" : "recorded", c.name);
	*ret = json_pack("{s:o}", "connection", TAKE_PTR(after));
	r = *ret ? 0 : -ENOMEM;
	goto out;
fail:
	(void)store_rollback(h->srv->store);
out:
	store_connection_done(&c);
	json_decref(before);
	json_decref(after);
	return r;
}

static void finish_authorize(struct control_call *call, int r, json_t *result,
			     const char *message)
{
	if (r >= 0) {
		json_t *after = json_pack("{s:O?}", "result", result);

		control_audit_now(call->srv, &call->peer, "connection.authorize", "connection",
				  call->object_id, after);
		json_decref(after);
	}
	control_call_reply(call, r, result, message);
}

int control_handle_connection_authorize(struct control_request *h, json_t **ret)
{
	const char *code = arg_str(h->args, "code");
	struct store_connection c = {};
	struct control_call *call;
	int r;

	r = control_find_connection(h, arg_str(h->args, "connection"), false, &c);
	if (r < 0)
		return r;
	if ((code && !h->srv->ops.authorize_complete) || (!code && !h->srv->ops.authorize_start)) {
		store_connection_done(&c);
		return control_op_missing(h);
	}
	r = control_start_call(h, finish_authorize, &call);
	if (r < 0) {
		store_connection_done(&c);
		return r;
	}
	call->object_id = c.connection_id;
	store_connection_done(&c);
	r = code ? h->srv->ops.authorize_complete(h->srv->ops.ctx, call, call->object_id, code)
		 : h->srv->ops.authorize_start(h->srv->ops.ctx, call, call->object_id);
	if (r < 0)
		return control_op_refused(h, call, r);
	return CONTROL_HANDLER_ASYNC;
}

int control_handle_lists(struct control_request *h, json_t **ret)
{
	struct store_connection c = {};
	int64_t id;
	int r;

	r = control_find_connection(h, arg_str(h->args, "connection"), true, &c);
	if (r < 0)
		return r;
	id = c.connection_id;
	store_connection_done(&c);
	return control_call_op(h, h->srv->ops.list_cc_lists, id, NULL);
}
