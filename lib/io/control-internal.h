/* SPDX-License-Identifier: MIT */
/*
 * Between the control server (control.c: listener, peers, framing, in-order replies, output
 * bounds) and the command handlers (control-handlers.c and one control-<domain>.c per group of
 * commands). The server owns clients and calls; a handler sees a request, answers it at once or
 * turns it into a call that an op completes later. Nothing outside lib/io/control*.c includes this.
 *
 * Loop thread only, like the rest of the control server.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control.h"
#include "ctlproto.h"
#include "store-config.h"

struct control_client;

/* The import a client has open: op-owned session and the bytes it received so far. */
struct control_import {
	void *session;
	uint64_t bytes;
};

typedef void (*control_finish_fn)(struct control_call *call, int r, json_t *result,
				  const char *message);

struct control_call {
	struct control_server *srv;
	struct control_client *client; /* NULL once abandoned */
	int64_t id;
	enum ctlproto_command_id command;
	bool streams;
	struct control_peer peer;
	void *userdata;
	/* what to do with the op's result; NULL: reply with it */
	control_finish_fn finish;
	/* called with each progress object before it is sent; NULL: none */
	void (*progress_hook)(struct control_call *call, json_t *progress);
	/* continuation state, owned by the call */
	struct store_export pending_export;
	bool has_pending_export;
	json_t *before;		/* audit "before" of a pending change */
	json_t *warnings;	/* to hand back with a pending change's reply */
	int64_t object_id;
	/* a run request is audited once accepted: at its first progress or its success */
	json_t *run_audit;
};

/* A request being handled: borrowed from the server for the handler's duration only. */
struct control_request {
	struct control_client *client;
	struct control_server *srv;
	const struct ctlproto_request *req;
	json_t *args;
	const struct control_peer *peer;
	struct control_import *import;
	char *err;
	size_t errlen;
};

/* A handler's return when it handed the request to an op: the op's call replies later. */
#define CONTROL_HANDLER_ASYNC 1

/*
 * Answers a request: 0 with *ret (transfer full) to reply ok, a negative errno with h->err to
 * reply an error, or CONTROL_HANDLER_ASYNC.
 */
typedef int (*control_handler_fn)(struct control_request *h, json_t **ret);

struct control_command {
	control_handler_fn handler;
	enum control_role role; /* the least role that may send it */
};

/* Indexed by enum ctlproto_command_id (control-handlers.c). */
extern const struct control_command control_commands[_CTL_COMMAND_MAX];

/* ---- server side (control.c) ---- */

/* A call for the request, in flight on its client until completed. NULL on OOM. */
struct control_call *control_call_new(struct control_client *c,
				      const struct ctlproto_request *req);
/* Replies with the op's result (stolen) to the client, if it is still there. */
void control_call_reply(struct control_call *call, int r, json_t *result, const char *message);
/* Frees a call an op refused outright: it never reached the op, so nothing was sent for it. */
void control_call_discard(struct control_call *call);
/* Discards the client's open import, if any. */
void control_import_abort(struct control_server *srv, struct control_import *import);

/* ---- shared by the handlers (control-handlers.c) ---- */

/* Arguments, already checked by the codec against the command's specification. */
static inline const char *arg_str(json_t *args, const char *name)
{
	return json_string_value(json_object_get(args, name));
}

static inline bool arg_bool(json_t *args, const char *name, bool def)
{
	json_t *v = json_object_get(args, name);

	return v ? json_is_true(v) : def;
}

static inline int64_t arg_int(json_t *args, const char *name, int64_t def)
{
	json_t *v = json_object_get(args, name);

	return json_is_integer(v) ? json_integer_value(v) : def;
}

bool control_peer_is_admin(const struct control_peer *p);
bool control_peer_may_use(const struct control_peer *p, const char *usable_by);

/* Names end up in tables and log lines: no control characters, no blanks at either end. */
int control_check_printable(const char *what, const char *s, char *err, size_t errlen);

/* "cannot WHAT: <the store's message>", with r (or -EIO) as the error. */
int control_store_failed(struct control_request *h, int r, const char *what);

/* Appends an audit row inside the caller's write transaction. */
int control_audit(struct control_server *srv, const struct control_peer *peer, const char *action,
		  const char *object_type, int64_t object_id, json_t *before, json_t *after);
/* Audit of a request that is not a configuration change (runs, imports): its own transaction. */
void control_audit_now(struct control_server *srv, const struct control_peer *peer,
		       const char *action, const char *object_type, int64_t object_id,
		       json_t *after);

/* Opens the write transaction of a configuration change. */
int control_change_begin(struct control_request *h);
/*
 * Ends a configuration change: its audit row, then the commit, so that no change is ever without
 * its audit row. On failure the caller rolls back.
 */
int control_change_commit(struct control_request *h, const char *action, const char *object_type,
			  int64_t object_id, json_t *before, json_t *after);

/* Appends item (stolen) to *arr; on failure drops the array (NULL), so callers test it once. */
void control_json_append(json_t **arr, json_t *item);

/* Fills h->err with "COMMAND is not available in this daemon build" and returns -EOPNOTSUPP. */
int control_op_missing(struct control_request *h);
/* A call for h's request, completed by finish (NULL: reply with the op's result). */
int control_start_call(struct control_request *h, control_finish_fn finish,
		       struct control_call **ret);
/* After an op refused a call: the error it returned, with a message if it gave none. */
int control_op_refused(struct control_request *h, struct control_call *call, int r);
/*
 * Hands h's request to an op about one object (connection, run, refresh), completed by finish:
 * CONTROL_HANDLER_ASYNC, or the error when op is missing or refused it.
 */
int control_call_op(struct control_request *h,
		    int (*op)(void *ctx, struct control_call *call, int64_t object_id),
		    int64_t object_id, control_finish_fn finish);

/* ---- lookups shared across domains ---- */

/* The named connection; for_use also checks that the peer may use it. */
int control_find_connection(struct control_request *h, const char *name, bool for_use,
			    struct store_connection *ret);
/* The named export, if the peer may use its connection. */
int control_find_export(struct control_request *h, const char *name, struct store_export *ret);

/* ---- handlers ---- */

int control_handle_whoami(struct control_request *h, json_t **ret);
int control_handle_status(struct control_request *h, json_t **ret);
int control_handle_audit(struct control_request *h, json_t **ret);
int control_handle_import(struct control_request *h, json_t **ret);
int control_handle_import_data(struct control_request *h, json_t **ret);
int control_handle_import_end(struct control_request *h, json_t **ret);

int control_handle_connection_add(struct control_request *h, json_t **ret);
int control_handle_connection_list(struct control_request *h, json_t **ret);
int control_handle_connection_show(struct control_request *h, json_t **ret);
int control_handle_connection_edit(struct control_request *h, json_t **ret);
int control_handle_connection_remove(struct control_request *h, json_t **ret);
int control_handle_connection_consent(struct control_request *h, json_t **ret);
int control_handle_connection_authorize(struct control_request *h, json_t **ret);
int control_handle_lists(struct control_request *h, json_t **ret);

int control_handle_export_add(struct control_request *h, json_t **ret);
int control_handle_export_list(struct control_request *h, json_t **ret);
int control_handle_export_show(struct control_request *h, json_t **ret);
int control_handle_export_edit(struct control_request *h, json_t **ret);
int control_handle_export_remove(struct control_request *h, json_t **ret);
int control_handle_export_enable(struct control_request *h, json_t **ret);
int control_handle_export_disable(struct control_request *h, json_t **ret);

int control_handle_run(struct control_request *h, json_t **ret);
int control_handle_cancel(struct control_request *h, json_t **ret);
int control_handle_refresh_done(struct control_request *h, json_t **ret);
int control_handle_runs(struct control_request *h, json_t **ret);
int control_handle_run_show(struct control_request *h, json_t **ret);
int control_handle_rejected(struct control_request *h, json_t **ret);
int control_handle_segments(struct control_request *h, json_t **ret);
