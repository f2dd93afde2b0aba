/* SPDX-License-Identifier: MIT */
/*
 * The configuration side of the store: connections (all but their auth_state/auth_error columns,
 * which store-auth owns), the deletion of a removed connection's tokens, exports with their
 * segments, field mappings and schedule override, and the audit log.
 *
 * These functions are single statements or small groups of statements; they open no transaction
 * of their own. The caller (the control server) wraps a change and its audit entry in one
 * store_begin_write/store_commit so that no change is ever recorded without its audit row, or the
 * other way round. No token value is ever read here: only whether a connection has tokens.
 *
 * Connections and exports are removed softly (removed_at): run history keeps referring to them,
 * and their names become free for reuse. "Live" below means not removed.
 *
 * Structs returned by the getters own their strings; release them with the matching _done or
 * _array_free function. Errors are negative errno values (see store_error); -ENOENT when the
 * object does not exist or is removed, -EEXIST when a live object already has the name.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/*
 * The store's clock (seconds since the epoch; CCSYNC_FAKE_NOW overrides it in tests), for the
 * "now" arguments below, so that every time stamp of a change comes from one source.
 */
int64_t store_config_now(void);

/* ---- connections ---- */

struct store_connection {
	int64_t connection_id;
	char *name;
	char *usable_by;	/* "admins" or "admins_and_contributors" */
	char *client_id;	/* the API key: an identifier, not a secret, but admins-only */
	char *auth_flow;	/* "device", "pkce" or "code" */
	char *consent_by;	/* user name of who consented; NULL: no consent */
	int64_t consent_uid;
	int64_t consent_at;
	char *auth_state;	/* read only here */
	char *auth_error;	/* read only here; may be NULL */
	bool has_tokens;	/* a token row with an access or refresh token exists */
	int64_t exports;	/* live exports that use the connection */
	int64_t created_at;
	int64_t updated_at;
};

void store_connection_done(struct store_connection *c);
void store_connection_array_free(struct store_connection *v, size_t n);

/* Adds a connection. auth_flow/usable_by NULL take the schema defaults. 0 and its id, -EEXIST. */
int store_config_connection_insert(struct store *s, const char *name, const char *client_id,
				   const char *auth_flow, const char *usable_by, int64_t now,
				   int64_t *ret_id);

/* One live connection by id or by name. 0 and *ret (caller releases), or -ENOENT. */
int store_config_connection_get(struct store *s, int64_t connection_id,
				struct store_connection *ret);
int store_config_connection_find(struct store *s, const char *name, struct store_connection *ret);

/* All live connections by name. 0 and an array (possibly empty, *ret may be NULL). */
int store_config_connection_list(struct store *s, struct store_connection **ret, size_t *ret_n);

/* Writes name, client_id, auth_flow and usable_by of c->connection_id. 0, -ENOENT, -EEXIST. */
int store_config_connection_update(struct store *s, const struct store_connection *c, int64_t now);

/* Records consent by user_name/uid at time at; user_name NULL revokes it. 0 or -ENOENT. */
int store_config_connection_set_consent(struct store *s, int64_t connection_id,
					const char *user_name, int64_t uid, int64_t at);

/* Marks the connection removed. 0 or -ENOENT. */
int store_config_connection_remove(struct store *s, int64_t connection_id, int64_t now);

/*
 * Deletes the connection's stored tokens (secure_delete is on). Call store_checkpoint after the
 * transaction commits so no copy stays in the WAL. 0 and whether a row was deleted.
 */
int store_config_connection_delete_tokens(struct store *s, int64_t connection_id,
					  bool *ret_deleted);

/* Disables every live export of the connection with reason. 0 and how many were changed. */
int store_config_connection_disable_exports(struct store *s, int64_t connection_id,
					    const char *reason, int64_t now, int64_t *ret_count);

/* ---- exports ---- */

struct store_export_segment {
	int64_t segment_id;
	char *name;
};

struct store_export_field {
	char *target;		/* CC import key: a standard key or "cf:<custom field>" */
	char *source_field;	/* profile attribute */
};

struct store_export {
	int64_t export_id;
	char *name;
	int64_t connection_id;
	char *connection_name;		/* read only */
	char *connection_usable_by;	/* read only */
	bool connection_removed;	/* read only */
	char *list_id;
	char *mode;			/* "upsert" or "mirror" */
	char *email_field;
	char *first_name_field;		/* NULL: not mapped */
	char *last_name_field;
	bool follows_refresh;
	bool has_mirror_share;		/* false: the configuration's default applies */
	double mirror_max_remove_share;
	bool enabled;
	char *disabled_reason;
	char *created_by;
	char *cron;			/* NULL: the configuration's default schedule */
	char *time_zone;		/* NULL: the configuration's default zone */
	struct store_export_segment *segments; /* by name */
	size_t n_segments;
	struct store_export_field *fields;     /* by target */
	size_t n_fields;
	int64_t created_at;
	int64_t updated_at;
};

void store_export_done(struct store_export *e);
void store_export_array_free(struct store_export *v, size_t n);

/*
 * Adds an export from e (export_id, connection_* and timestamps are ignored; segments are read by
 * segment_id), with its segments, fields and schedule row, enabled. 0 and its id, -EEXIST.
 */
int store_config_export_insert(struct store *s, const struct store_export *e, int64_t now,
			       int64_t *ret_id);

/*
 * Rewrites e->export_id from e: every column that insert writes except created_by, and replaces
 * segments and fields. A changed cron or zone moves last_due_at to now when it was set, so the
 * scheduler does not count fires of the old schedule as missed. 0, -ENOENT, -EEXIST.
 */
int store_config_export_update(struct store *s, const struct store_export *e, int64_t now);

/* One live export by id or name, with segments and fields. 0 and *ret, or -ENOENT. */
int store_config_export_get(struct store *s, int64_t export_id, struct store_export *ret);
int store_config_export_find(struct store *s, const char *name, struct store_export *ret);

/* Live exports by name, with segments and fields. 0 and an array (possibly empty). */
int store_config_export_list(struct store *s, struct store_export **ret, size_t *ret_n);

/* Enables (reason cleared) or disables with reason (may be NULL). 0 or -ENOENT. */
int store_config_export_set_enabled(struct store *s, int64_t export_id, bool enabled,
				    const char *reason, int64_t now);

/* Marks the export removed. 0 or -ENOENT. */
int store_config_export_remove(struct store *s, int64_t export_id, int64_t now);

/* ---- audit log ---- */

struct store_audit_entry {
	int64_t audit_id;	/* set by the store */
	int64_t at;
	bool has_uid;
	int64_t uid;
	char *user_name;
	char *action;		/* e.g. "connection.add" */
	char *object_type;	/* "connection", "export", "run", "data", ... */
	char *object_id;	/* may be NULL */
	char *before_json;	/* NULL or a JSON text without secrets */
	char *after_json;
};

void store_audit_entry_done(struct store_audit_entry *e);
void store_audit_entry_array_free(struct store_audit_entry *v, size_t n);

/* Appends an entry (audit_id ignored). 0 and the new audit_id; -EINVAL for invalid JSON. */
int store_config_audit_add(struct store *s, const struct store_audit_entry *e, int64_t *ret_id);

/*
 * Entries with audit_id < before (before <= 0: from the newest), newest first, at most limit.
 * 0 and an array (possibly empty).
 */
int store_config_audit_list(struct store *s, int64_t before, size_t limit,
			    struct store_audit_entry **ret, size_t *ret_n);
