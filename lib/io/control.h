/* SPDX-License-Identifier: MIT */
/*
 * The control server: ccsyncd's UNIX socket for ccsyncctl (protocol: lib/ctlproto.h and
 * schema/control/README.md). It accepts peers, tells their role from SO_PEERCRED, checks every
 * command against that role, answers configuration commands itself (connections, exports, consent,
 * audit) and hands everything that belongs to another module (runs, Constant Contact calls,
 * status, imports) to the daemon through struct control_ops.
 *
 * Roles: uid 0 and members of admin_group are admins; members of contributor_group are
 * contributors; anyone else receives one "permission_denied" error and is disconnected.
 * Membership is resolved once per connection with getpwuid_r + getgrouplist (plus the peer's own
 * gid); those NSS lookups are assumed to be local and fast (files, systemd-userdb), as they run
 * on the loop thread.
 *
 * Each client's requests are answered strictly in order: the next request is read only after the
 * current one got its final reply, so async ops need no ordering of their own. Bounds: at most
 * CONTROL_MAX_CLIENTS connections, one message per CTLPROTO_MAX_MESSAGE, CONTROL_MAX_OUTPUT bytes
 * queued to a client that does not read (progress is dropped long before that; a final reply
 * that does not fit disconnects the client).
 *
 * Loop thread only, everything here.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "config.h"
#include "store.h"

#define CONTROL_MAX_CLIENTS 256
#define CONTROL_MAX_OUTPUT (8 * 1024 * 1024)
/* Progress messages are dropped (not queued) while this much output is still waiting. */
#define CONTROL_PROGRESS_HIGH_WATER (256 * 1024)

enum control_role {
	CONTROL_ROLE_NONE,
	CONTROL_ROLE_CONTRIBUTOR,
	CONTROL_ROLE_ADMIN,
};

const char *control_role_to_string(enum control_role role);

/* Who is asking, as established at connect time. */
struct control_peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	enum control_role role;
	char user_name[64]; /* from the passwd database, or "uid:N" when there is no entry */
};

/*
 * Resolves the role of uid/gid against the group names (empty name: no such role). Fills *ret
 * (always succeeds: an unknown user is CONTROL_ROLE_NONE unless uid is 0).
 */
void control_resolve_peer(uid_t uid, gid_t gid, pid_t pid, const char *admin_group,
			  const char *contributor_group, struct control_peer *ret);

/*
 * An asynchronous request handed to an op. The op that accepted it (returned 0) must complete it
 * exactly once with control_call_done, from any loop callback or from inside the op itself. The
 * call stays valid until then even if the client disconnects: progress is then discarded and the
 * final reply goes nowhere (control_call_abandoned() tells).
 */
struct control_call;

int64_t control_call_id(const struct control_call *call);
/* Borrowed, valid until control_call_done. */
const struct control_peer *control_call_peer(const struct control_call *call);
/* True once the client has gone (or the server is closing): stop streaming, finish soon. */
bool control_call_abandoned(const struct control_call *call);

/*
 * Streams a progress object (stolen) to the client. 0 when queued, -ENOBUFS when dropped because
 * the client is not reading fast enough (harmless: the next one carries the newer state), or
 * -ECONNRESET when the client has gone.
 */
int control_call_progress(struct control_call *call, json_t *progress);

/*
 * Completes the call: r >= 0 replies ok with result (stolen; NULL sends null), r < 0 replies an
 * error with message (NULL or "": strerror). message must hold no secret. Frees the call.
 */
void control_call_done(struct control_call *call, int r, json_t *result, const char *message);

/* Op-private data on a call (e.g. the run it follows). */
void control_call_set_userdata(struct control_call *call, void *userdata);
void *control_call_get_userdata(const struct control_call *call);

enum control_run_flags {
	CONTROL_RUN_DRY_RUN = 1 << 0,
	CONTROL_RUN_FULL = 1 << 1,   /* resend every contact, ignoring sync state */
	CONTROL_RUN_FORCE = 1 << 2,  /* past the mirror removal-share guard */
	CONTROL_RUN_FOLLOW = 1 << 3, /* stream progress until the run ends */
};

struct control_import_spec {
	const char *kind;	/* "profiles" or "segment" */
	const char *format;	/* "csv" or "jsonl" */
	const char *segment;	/* kind "segment": the segment's name; NULL otherwise */
	const struct control_peer *peer;
};

/*
 * What the control server cannot do itself. The daemon fills this in; any member may be NULL,
 * and the commands that need it then answer "not_supported" (-EOPNOTSUPP, "not available in this
 * daemon build"), never a fake success.
 *
 * Async members take a call and return 0 when they accepted it (then they must complete it with
 * control_call_done exactly once), or a negative errno when they refused it outright (then they
 * must not touch it again; the server replies with that error). Notifications return nothing.
 */
struct control_ops {
	void *ctx;

	/*
	 * Starts a run of the export on demand, with trigger "demand" and requested_by = the peer's
	 * user name. Without CONTROL_RUN_FOLLOW, completes as soon as the run is queued with
	 * {"run_id": N, "state": "queued"}; with it, streams progress objects
	 * {"run_id","state","selected","sent","rejected","unchanged","removed","pending",
	 * "batches_done","batches_total","rate_per_second","eta_seconds"} and completes when the
	 * run ends with the run's final state (run.show's object). The server has checked role,
	 * consent, the export's enabled state and the connection's presence.
	 */
	int (*run_export)(void *ctx, struct control_call *call, int64_t export_id, unsigned flags);

	/* Cancels a queued or running run. Completes with {"run_id", "state"}; -EALREADY when it
	 * has already finished. */
	int (*cancel_run)(void *ctx, struct control_call *call, int64_t run_id);

	/* The connection's Constant Contact lists: completes with an array of
	 * {"list_id","name","membership_count"}. */
	int (*list_cc_lists)(void *ctx, struct control_call *call, int64_t connection_id);

	/*
	 * Checks that list_id exists in the connection's account. Completes with 0 (result ignored)
	 * when it does, -ENOENT when Constant Contact says it does not; any other error (not
	 * authorized, unreachable, quota) means "could not check", and the export is saved with a
	 * warning, since saving must not depend on Constant Contact being reachable.
	 */
	int (*validate_list)(void *ctx, struct control_call *call, int64_t connection_id,
			     const char *list_id);

	/*
	 * Authorization. authorize_start begins the connection's flow: for "device", it streams one
	 * progress {"verification_uri","verification_uri_complete","user_code","expires_at"} and
	 * completes when the user approved (or failed); for "pkce"/"code", it completes at once
	 * with {"authorize_url": URL, "needs_code": true}. authorize_complete exchanges the
	 * redirect URL (or code) the user pasted and completes with {"auth_state": "authorized"}.
	 */
	int (*authorize_start)(void *ctx, struct control_call *call, int64_t connection_id);
	int (*authorize_complete)(void *ctx, struct control_call *call, int64_t connection_id,
				  const char *code);

	/* Daemon state: completes with an object (see schema/control/status.json). */
	int (*status)(void *ctx, struct control_call *call);

	/* The server has recorded a finished upstream refresh (store_data_refresh_announce) as
	 * refresh_id: run every export that follows refreshes now. Completes with
	 * {"runs": [run ids started]}. */
	int (*refresh_done)(void *ctx, struct control_call *call, int64_t refresh_id);

	/* Notifications, after the change has been committed. connection_removed must cancel every
	 * run on the connection and forget its tokens; connection_changed (client_id or flow
	 * changed) forgets cached tokens; export_removed cancels the export's run; config_changed
	 * re-reads schedules. */
	void (*connection_removed)(void *ctx, int64_t connection_id);
	void (*connection_changed)(void *ctx, int64_t connection_id);
	void (*export_removed)(void *ctx, int64_t export_id);
	void (*config_changed)(void *ctx);

	/*
	 * Imports, synchronous and streamed by the client in chunks: import_begin opens a session
	 * (*ret_session, op-owned), import_data pushes raw bytes (any split, also mid-line),
	 * import_end commits and returns a summary object (transfer full), import_abort discards a
	 * session (client gone, protocol error, or a failed import_data/import_end). Nothing may be
	 * visible in the database before import_end succeeds. Errors carry line numbers in err.
	 */
	int (*import_begin)(void *ctx, const struct control_import_spec *spec, void **ret_session,
			    char *err, size_t errlen);
	int (*import_data)(void *ctx, void *session, const void *data, size_t len,
			   json_t **ret_info, char *err, size_t errlen);
	int (*import_end)(void *ctx, void *session, json_t **ret_summary, char *err, size_t errlen);
	void (*import_abort)(void *ctx, void *session);

	/* The client of this call has gone: stop streaming and complete it soon (optional). */
	void (*call_abandoned)(void *ctx, struct control_call *call);
};

struct control_client;

struct control_server {
	uv_loop_t *loop;
	uv_pipe_t listener;
	bool listener_initialized;
	bool bound_path;	/* we bound (and will unlink) the socket file ourselves */
	bool closing;
	const struct config *config; /* borrowed: group names are read at each accept */
	struct store *store;	     /* borrowed */
	struct control_ops ops;
	struct control_client *clients; /* doubly linked */
	size_t n_clients;
	size_t n_calls;		/* calls handed to ops and not yet completed */
	char path[108];
};

/*
 * Starts listening: on the socket-activated fd named "control" when there is one, else by binding
 * config->control_socket (mode 0660, group contributor_group when it exists; a stale socket file is
 * replaced only if nothing answers on it). config and store are borrowed and must outlive the
 * server; ops is copied (ops may be NULL: no ops at all). 0 or negative errno with a message.
 */
int control_server_start(struct control_server *srv, uv_loop_t *loop, const struct config *config,
			 struct store *store, const struct control_ops *ops, char *err,
			 size_t errlen);

/*
 * Stops accepting, disconnects every client (their calls are abandoned; ops still complete them)
 * and unlinks a socket file it bound. Handles close asynchronously: run the loop afterwards.
 * Safe on a server that was never started (zeroed) or is already closing.
 */
void control_server_close(struct control_server *srv);

struct store_data_run;

/*
 * A run as the protocol shows it (runs, run.show, and the final reply of run --follow), so every
 * producer of run objects agrees. New reference, NULL on OOM.
 */
json_t *control_run_json(const struct store_data_run *run);

/* Points the server at a reloaded configuration (borrowed, must outlive the server): group
 * names apply to connections accepted from now on. The socket itself is not re-bound. */
void control_server_reload(struct control_server *srv, const struct config *config);

/* Replaces the ops (e.g. once the runner exists). */
void control_server_set_ops(struct control_server *srv, const struct control_ops *ops);
