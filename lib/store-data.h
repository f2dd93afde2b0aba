/* SPDX-License-Identifier: MIT */
/*
 * The store's data side: upstream data (profiles, segments, membership, refresh announcements),
 * what a run reads (its export's definition, member and sync-state scans), and what a run writes
 * (the run row, its batches, rejected rows, sync state), plus history queries and retention.
 * The CRUD of exports, connections and schedules lives in store-config.h.
 *
 * Transactions. Every writing function here is atomic: when the connection is not inside a
 * transaction it runs in one write transaction of its own (BEGIN IMMEDIATE ... COMMIT, rolled back
 * on any failure); when the caller already holds a write transaction it joins it, so the caller
 * can compose several calls into one commit. Reading functions do the same with no transaction.
 *
 * Time stamps are store_now() (CCSYNC_FAKE_NOW in tests), integer seconds since the epoch; 0 in
 * a struct below means "not set" (SQL NULL).
 *
 * Errors: negative errno with a message in err (err may be NULL): -ENOENT (no such run, batch,
 * export, segment), -EINVAL (an illegal state transition or inconsistent arguments: nothing is
 * written), -EBUSY (locked past the busy timeout, or the export already has an active run),
 * -ENOMEM, -EIO (SQLite failure; store_errmsg has detail).
 *
 * Structures returned through ret_* are allocated (transfer full) and released with the matching
 * *_free; structures passed in are borrowed for the duration of the call.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* ------------------------------------------------------------------------------------------ */
/* Runs                                                                                       */

enum store_data_run_state {
	STORE_DATA_RUN_QUEUED,
	STORE_DATA_RUN_RUNNING,
	STORE_DATA_RUN_SUCCEEDED,
	STORE_DATA_RUN_PARTIALLY_SUCCEEDED,
	STORE_DATA_RUN_FAILED,
	STORE_DATA_RUN_CANCELLED,
	STORE_DATA_RUN_INTERRUPTED,
	_STORE_DATA_RUN_STATE_MAX,
	_STORE_DATA_RUN_STATE_INVALID = -22, /* -EINVAL */
};

enum store_data_trigger {
	STORE_DATA_TRIGGER_SCHEDULE,
	STORE_DATA_TRIGGER_DEMAND,
	STORE_DATA_TRIGGER_CATCH_UP,
	STORE_DATA_TRIGGER_REFRESH,
	STORE_DATA_TRIGGER_RESUME,
	_STORE_DATA_TRIGGER_MAX,
	_STORE_DATA_TRIGGER_INVALID = -22,
};

/* The strings are the values stored in runs.state / runs.trigger. */
const char *store_data_run_state_to_string(enum store_data_run_state s);
enum store_data_run_state store_data_run_state_from_string(const char *s);
const char *store_data_trigger_to_string(enum store_data_trigger t);
enum store_data_trigger store_data_trigger_from_string(const char *s);
/* True for succeeded, partially_succeeded, failed, cancelled and interrupted. */
bool store_data_run_state_is_final(enum store_data_run_state s);

/*
 * A run's counters. While a run sends, selected = sent + rejected + unchanged + pending; when it
 * finished with every batch confirmed, pending is 0 and selected = sent + rejected + unchanged.
 * removed (mirror mode) counts confirmed removals of departed contacts: those are not selected
 * (they are no longer in the export's segments), so removed stands outside that sum.
 */
struct store_data_counters {
	int64_t selected;
	int64_t sent;
	int64_t rejected;
	int64_t unchanged;
	int64_t removed;
	int64_t pending;
	int64_t batches_total;
	int64_t batches_done; /* batches in a final state: confirmed, failed or abandoned */
};

struct store_data_run {
	int64_t run_id;
	int64_t export_id;
	char *export_name; /* the export's name at query time */
	enum store_data_run_state state;
	enum store_data_trigger trigger;
	bool dry_run;
	bool full_resend;
	bool force;
	char *requested_by;   /* NULL for the scheduler */
	int64_t resumed_from; /* 0: not a resume */
	int64_t queued_at;
	int64_t started_at;
	int64_t finished_at;
	struct store_data_counters counters;
	char *error; /* NULL unless the run failed or was interrupted/cancelled with a reason */
};

struct store_data_run_request {
	int64_t export_id;
	enum store_data_trigger trigger;
	bool dry_run;
	bool full_resend;
	bool force;
	const char *requested_by; /* NULL allowed */
	int64_t resumed_from;	  /* required (an interrupted run of the same export) iff resume */
};

/*
 * Queues a run. Refuses with -EBUSY (err names the run) when the export already has a queued or
 * running run, -ENOENT when the export does not exist or was removed, -EINVAL when resumed_from is
 * not an interrupted run of the same export (or is given without trigger resume, or vice versa).
 */
int store_data_run_create(struct store *s, const struct store_data_run_request *req,
			  int64_t *ret_run_id, char *err, size_t errlen);

/*
 * Moves a run along the state machine of ARCHITECTURE.md:
 *   queued  -> running | cancelled
 *   running -> succeeded | partially_succeeded | failed | cancelled | interrupted
 * Anything else is -EINVAL and changes nothing. Entering running sets started_at; entering a final
 * state sets finished_at and the error text (NULL keeps none). succeeded additionally requires
 * pending = 0 and rejected = 0 (use partially_succeeded when rows were rejected).
 */
int store_data_run_set_state(struct store *s, int64_t run_id, enum store_data_run_state to,
			     const char *error, char *err, size_t errlen);

/*
 * Records a running run's plan totals: selected, unchanged, sent (contacts already confirmed by
 * the runs it resumes) and pending (contacts to send). rejected is not set here: it grows with
 * every store_data_rejected_add, so it always equals the run's rejected rows. Only while running.
 * The totals are absolute: once a batch exists (a single-pass run records its final totals at
 * the end of the plan, while batches are being confirmed) they must account for the
 * confirmations so far — sent no lower than the run's sent, and selected = unchanged + sent +
 * pending + the run's rejected — or -EINVAL.
 */
int store_data_run_set_plan(struct store *s, int64_t run_id, int64_t selected, int64_t unchanged,
			    int64_t already_sent, int64_t pending, char *err, size_t errlen);

/*
 * Adds delta (usually negative) to a running run's pending counter, e.g. for contacts the batch
 * encoder refused after the plan was recorded (record them with store_data_rejected_add in the
 * same write transaction, so that the sum holds at every commit). -EINVAL if pending would drop
 * below zero or the run is not running.
 */
int store_data_run_adjust_pending(struct store *s, int64_t run_id, int64_t delta, char *err,
				  size_t errlen);

int store_data_run_get(struct store *s, int64_t run_id, struct store_data_run **ret, char *err,
		       size_t errlen);
struct store_data_run *store_data_run_free(struct store_data_run *r); /* NULL-safe, returns NULL */

/*
 * History, newest first: runs of export_id (0 = every export) with run_id < before_run_id
 * (0 = from the newest), at most limit (1..1000) of them. An empty result is not an error.
 */
int store_data_runs_list(struct store *s, int64_t export_id, int64_t before_run_id, size_t limit,
			 struct store_data_run **ret_runs, size_t *ret_n, char *err, size_t errlen);
void store_data_runs_free(struct store_data_run *runs, size_t n);

/* Runs queued or running, oldest first (for `status` and the scheduler). */
int store_data_runs_active(struct store *s, struct store_data_run **ret_runs, size_t *ret_n,
			   char *err, size_t errlen);

/*
 * "One run per export at a time": returns 1 and the active (queued or running) run's id, or 0
 * when the export has none (ret_run_id untouched).
 */
int store_data_run_active(struct store *s, int64_t export_id, int64_t *ret_run_id);

/*
 * The runs whose confirmed contacts a resumed run counts as sent: run_id itself followed by its
 * resumed_from chain (newest first, at most 64 links). *ret_ids is allocated.
 */
int store_data_run_resume_chain(struct store *s, int64_t run_id, int64_t **ret_ids, size_t *ret_n);

struct store_data_recovery {
	int64_t *interrupted; /* run ids found running and now interrupted */
	size_t n_interrupted;
	int64_t *queued; /* run ids still queued, oldest first; the caller starts or cancels them */
	size_t n_queued;
};

/*
 * Start-up recovery, in one transaction: every run left running becomes interrupted (finished_at
 * now, error "the daemon stopped during the run"), and its planned or submitted batches become
 * abandoned (the resume run re-plans their contacts; an import is an idempotent upsert). Queued
 * runs are only reported. Free the result with store_data_recovery_done.
 */
int store_data_recover(struct store *s, struct store_data_recovery *ret, char *err, size_t errlen);
void store_data_recovery_done(struct store_data_recovery *r);

/* ------------------------------------------------------------------------------------------ */
/* Batches                                                                                    */

enum store_data_batch_kind {
	STORE_DATA_BATCH_IMPORT,
	STORE_DATA_BATCH_REMOVE,
	_STORE_DATA_BATCH_KIND_MAX,
	_STORE_DATA_BATCH_KIND_INVALID = -22,
};

enum store_data_batch_state {
	STORE_DATA_BATCH_PLANNED,
	STORE_DATA_BATCH_SUBMITTED,
	STORE_DATA_BATCH_CONFIRMED,
	STORE_DATA_BATCH_FAILED,
	STORE_DATA_BATCH_ABANDONED,
	_STORE_DATA_BATCH_STATE_MAX,
	_STORE_DATA_BATCH_STATE_INVALID = -22,
};

const char *store_data_batch_kind_to_string(enum store_data_batch_kind k);
const char *store_data_batch_state_to_string(enum store_data_batch_state s);

struct store_data_batch {
	int64_t run_id;
	int64_t batch_no;
	enum store_data_batch_kind kind;
	enum store_data_batch_state state;
	int64_t contacts;
	int64_t bytes;
	char *activity_id;
	char *activity_state;
	int64_t attempts;
	int64_t error_count;
	int64_t correctable_count;
	int64_t cannot_add_count;
	int64_t submitted_at;
	int64_t finished_at;
	char *error;
};

/*
 * Records batch batch_no (≥ 1) of a running run as planned, with its contact count and encoded
 * size, and counts it in runs.batches_total. -EEXIST if that number is taken.
 */
int store_data_batch_add(struct store *s, int64_t run_id, int64_t batch_no,
			 enum store_data_batch_kind kind, int64_t contacts, int64_t bytes,
			 char *err, size_t errlen);

/*
 * planned|submitted -> submitted with the activity id Constant Contact returned (a re-submission
 * after a transient failure replaces it); counts an attempt and sets submitted_at. Record this
 * before polling, so a crash never loses the id of an accepted activity.
 */
int store_data_batch_submitted(struct store *s, int64_t run_id, int64_t batch_no,
			       const char *activity_id, char *err, size_t errlen);

/* One contact of a confirmed import batch that Constant Contact accepted. */
struct store_data_sync_entry {
	const char *email; /* normalised */
	uint64_t fields_hash;
	bool added_by_ccsync;	/* false when the contact was on the list before ccsync sent it */
	const char *contact_id; /* NULL when unknown; an existing value is kept */
};

/* A rejected row: from the plan (data problems) or from Constant Contact (activity errors). */
struct store_data_rejection {
	const char *profile_id; /* NULL allowed */
	const char *email;	/* NULL allowed */
	const char *reason_code;
	const char *reason;
	bool permanent;	      /* false: transient, the contact is retried on the next run */
	uint64_t fields_hash; /* batch confirmation only: the content CC refused (see below) */
};

struct store_data_confirmation {
	const char *activity_state; /* CC's final state, e.g. "completed" */
	int64_t error_count;
	int64_t correctable_count;
	int64_t cannot_add_count;
	const struct store_data_sync_entry *synced;
	size_t n_synced;
	const struct store_data_rejection *rejected;
	size_t n_rejected;
};

/*
 * submitted -> confirmed for an import batch, in ONE transaction with everything that follows from
 * it, so a crash can never separate them:
 *   - sync_state upserted for every synced contact (state synced, its fields hash,
 *     confirmed_run_id = run_id); added_by_ccsync is taken from the entry only when the row is new
 *     or was a remembered rejection, otherwise the first confirmation's value is kept;
 *   - every rejected contact becomes a rejected row; a permanent one also upserts sync_state with
 *     state rejected and its fields_hash, so the same content is not re-sent until it changes;
 *   - the run's counters: sent += n_synced, rejected += n_rejected, pending -= both,
 *     batches_done += 1.
 * -EINVAL (nothing written) if the batch is not a submitted import batch or n_synced + n_rejected
 * differs from the batch's contact count.
 */
int store_data_batch_confirm(struct store *s, int64_t run_id, int64_t batch_no,
			     const struct store_data_confirmation *c, char *err, size_t errlen);

/*
 * submitted -> confirmed for a remove batch (mirror mode): deletes the sync_state rows of the
 * removed emails (only rows ccsync added: added_by_ccsync = 1) and adds the number deleted to
 * runs.removed, in one transaction. -EINVAL if the batch is not a submitted remove batch or
 * n differs from its contact count. removed grows by n: it counts what CC confirmed removing.
 */
int store_data_removal_confirm(struct store *s, int64_t run_id, int64_t batch_no,
			       const char *const *emails, size_t n, char *err, size_t errlen);

/* planned|submitted -> failed (error required) or abandoned (error optional); counters unchanged
 * except batches_done, so a run ending with such batches shows their contacts as pending. */
int store_data_batch_fail(struct store *s, int64_t run_id, int64_t batch_no, const char *error,
			  char *err, size_t errlen);
int store_data_batch_abandon(struct store *s, int64_t run_id, int64_t batch_no, const char *error,
			     char *err, size_t errlen);

/* A run's batches in batch_no order. */
int store_data_run_batches(struct store *s, int64_t run_id, struct store_data_batch **ret,
			   size_t *ret_n, char *err, size_t errlen);
void store_data_batches_free(struct store_data_batch *b, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* Rejected rows                                                                              */

/*
 * Appends n rejected rows to a run (sequence numbers continue after the run's last row) and adds
 * n to runs.rejected, atomically. One prepared statement stepped n times inside one transaction:
 * 100,000 rows cost well under a second. Rows with a NULL reason_code or reason are -EINVAL.
 */
int store_data_rejected_add(struct store *s, int64_t run_id,
			    const struct store_data_rejection *rows, size_t n, char *err,
			    size_t errlen);

struct store_data_rejected_row {
	int64_t seq;
	char *profile_id;
	char *email;
	char *reason_code;
	char *reason;
	bool permanent;
};

/* One page of a run's rejected rows with seq > after_seq, in seq order, at most limit (1..10000).
 */
int store_data_rejected_page(struct store *s, int64_t run_id, int64_t after_seq, size_t limit,
			     struct store_data_rejected_row **ret, size_t *ret_n, char *err,
			     size_t errlen);
void store_data_rejected_rows_free(struct store_data_rejected_row *rows, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* Retention                                                                                  */

struct store_data_purge_result {
	int64_t runs;	       /* finished runs deleted, with their batches and rejected rows */
	int64_t rejected_rows; /* rejected rows deleted from runs that are kept */
};

/*
 * Deletes finished runs whose finished_at is more than run_retention_days old, and the rejected
 * rows (personal data) of runs finished more than rejected_retention_days ago. Queued and running
 * runs are never touched; a kept run's resumed_from link to a deleted run is cleared.
 */
int store_data_purge(struct store *s, uint32_t run_retention_days, uint32_t rejected_retention_days,
		     struct store_data_purge_result *ret, char *err, size_t errlen);

/* ------------------------------------------------------------------------------------------ */
/* Segments, profiles and upstream refreshes                                                  */

struct store_data_segment {
	int64_t segment_id;
	char *name;
	char *description; /* NULL allowed */
	int64_t members;
	int64_t updated_at;
};

/* Every segment, by name, with its member count. */
int store_data_segments_list(struct store *s, struct store_data_segment **ret, size_t *ret_n,
			     char *err, size_t errlen);
void store_data_segments_free(struct store_data_segment *segs, size_t n);

/* -ENOENT when no segment has that name. */
int store_data_segment_lookup(struct store *s, const char *name, int64_t *ret_segment_id);

#define STORE_DATA_ATTRIBUTE_SAMPLE 10000

/*
 * Does any profile carry attribute name (a top-level key of the attribute document, matched
 * exactly) with a non-null value? Looks at no more than sample profiles (0 = the default
 * STORE_DATA_ATTRIBUTE_SAMPLE), so the check stays cheap on a million profiles; a rare attribute
 * may therefore be missed, and callers should word a negative answer as "not found in the first N
 * profiles". Returns 1 found, 0 not found; *ret_sampled (may be NULL) = profiles looked at.
 */
int store_data_attribute_exists(struct store *s, const char *name, size_t sample,
				size_t *ret_sampled);

/* `ccsyncctl refresh-done`: records that upstream finished a refresh. */
int store_data_refresh_announce(struct store *s, int64_t *ret_refresh_id);

/*
 * Marks every unconsumed refresh announcement consumed (consumed_at = now) and returns how many
 * there were (0: nothing to do). The caller runs the exports that follow the refresh when > 0.
 */
int store_data_refresh_consume(struct store *s, int64_t *ret_count);

/* ------------------------------------------------------------------------------------------ */
/* What a plan reads                                                                          */

struct store_data_export_field {
	char *target; /* CC import key: job_title, cf:<name>, ... */
	char *source; /* profile attribute */
};

struct store_data_export {
	int64_t export_id;
	char *name;
	bool mirror;
	char *email_field;
	char *first_name_field;			/* NULL: not mapped */
	char *last_name_field;			/* NULL: not mapped */
	struct store_data_export_field *fields; /* ordered by target */
	size_t n_fields;
	int64_t *segment_ids; /* ascending */
	size_t n_segments;
};

/* Reads an export's definition (read-only; store-config owns its CRUD). -ENOENT if it does not
 * exist or was removed. */
int store_data_export_load(struct store *s, int64_t export_id, struct store_data_export **ret,
			   char *err, size_t errlen);
struct store_data_export *store_data_export_free(struct store_data_export *e);

/* One member of an export's segments; strings borrowed until the next scan call. */
struct store_data_member_row {
	const char *profile_id; /* not NUL-terminated when it holds NUL bytes: use the length */
	size_t profile_id_len;
	const char *attributes; /* the JSON document; NULL when the member has no profile row */
	size_t attributes_len;
};

struct store_data_member_scan;

/*
 * Opens a scan over the distinct members of export_id's segments in profile_id order (BINARY),
 * with their attribute documents (or, with_attributes false, ids only: attributes NULL). No sort
 * is involved: each segment's members are read along its primary key and merged, a profile in
 * several segments coming out once. Use inside a read transaction for a consistent snapshot; the
 * scan owns its statements, so several scans may coexist on one connection. members is
 * store_data_member_count() when the caller has it (it picks the join method), else -1.
 */
int store_data_member_scan_open(struct store *s, int64_t export_id, bool with_attributes,
				int64_t members, struct store_data_member_scan **ret, char *err,
				size_t errlen);
/* 1 and the next member, 0 at the end, or a negative errno. */
int store_data_member_scan_next(struct store_data_member_scan *sc,
				const struct store_data_member_row **ret, char *err, size_t errlen);
int store_data_member_scan_rewind(struct store_data_member_scan *sc);
struct store_data_member_scan *store_data_member_scan_free(struct store_data_member_scan *sc);

/* Distinct members of the export's segments (cheap with one segment: a range count). */
int store_data_member_count(struct store *s, int64_t export_id, int64_t *ret_count);
/* A profile's attribute document (allocated), -ENOENT when there is no such profile. */
int store_data_profile_attributes(struct store *s, const char *profile_id, size_t len,
				  char **ret_attributes);

/* One sync_state row; strings borrowed until the next scan call. */
struct store_data_sync_row {
	const char *email;
	size_t email_len;
	uint64_t fields_hash;
	bool rejected; /* state = 'rejected' */
	bool added_by_ccsync;
	int64_t confirmed_run_id; /* 0 if NULL */
	const char *contact_id;	  /* NULL allowed */
};

struct store_data_sync_scan;

/* Optional columns of a sync-state scan (the others are always read). */
enum {
	STORE_DATA_SYNC_RUN_ID = 1 << 0,     /* confirmed_run_id; else 0 in every row */
	STORE_DATA_SYNC_CONTACT_ID = 1 << 1, /* contact_id and confirmed_run_id; else NULL */
};

/* An export's sync_state rows in email order (BINARY collation; the primary key's order),
 * reading the optional columns in columns (STORE_DATA_SYNC_*). */
int store_data_sync_scan_open(struct store *s, int64_t export_id, unsigned columns,
			      struct store_data_sync_scan **ret, char *err, size_t errlen);
int store_data_sync_scan_next(struct store_data_sync_scan *sc,
			      const struct store_data_sync_row **ret, char *err, size_t errlen);
int store_data_sync_scan_rewind(struct store_data_sync_scan *sc);
struct store_data_sync_scan *store_data_sync_scan_free(struct store_data_sync_scan *sc);

/* ------------------------------------------------------------------------------------------ */
/* Import staging (used by importer.c)                                                       */

/*
 * An import stages its rows in a TEMP table of this connection (on disk unless temp_store says
 * otherwise), with no lock on the main database, and applies them in one write transaction at the
 * end. Several imports may stage on one connection at once; each has its own import id.
 * Staging calls must not run inside another caller's transaction.
 */
int store_data_import_begin(struct store *s, int64_t *ret_import_id, char *err, size_t errlen);

/*
 * Brackets the staging calls of one chunk of input in one (deferred) transaction that writes only
 * TEMP tables, so no lock on the main database is taken; a no-op when the connection is already in
 * a transaction. feed_end commits (commit true) or rolls back what feed_begin opened (own true).
 */
int store_data_import_feed_begin(struct store *s, bool *ret_own);
int store_data_import_feed_end(struct store *s, bool own, bool commit);

/*
 * Stages one row. attributes is a JSON object text (profiles), or NULL (segment members).
 * For JSON Lines input pass the whole line as json_line with id_key, and attributes NULL: SQLite
 * removes the id key and keeps every number exactly as written. Returns 0, or -EEXIST when the
 * profile id is already staged, with the line that staged it in *ret_previous_line.
 */
int store_data_import_stage(struct store *s, int64_t import_id, const char *profile_id,
			    int64_t line, const char *attributes, const char *json_line,
			    const char *id_key, int64_t *ret_previous_line, char *err,
			    size_t errlen);

struct store_data_import_result {
	int64_t rows;
	int64_t inserted;	  /* profiles: new profiles */
	int64_t updated;	  /* profiles: replaced attribute documents */
	int64_t previous_members; /* segment: members before the import */
	int64_t without_profile;  /* segment: members with no profile row (yet) */
	bool segment_created;	  /* segment: it did not exist */
	int64_t segment_id;
};

/* Applies the staged rows in one write transaction: profiles are inserted or have their attribute
 * document replaced (updated_at = now); other profiles are untouched. */
int store_data_import_apply_profiles(struct store *s, int64_t import_id,
				     struct store_data_import_result *ret, char *err,
				     size_t errlen);

/* Applies the staged ids as the complete membership of segment name (created if missing), in one
 * write transaction. */
int store_data_import_apply_segment(struct store *s, int64_t import_id, const char *segment_name,
				    struct store_data_import_result *ret, char *err, size_t errlen);

/* Drops an import's staged rows (after apply, or to abandon it). */
int store_data_import_discard(struct store *s, int64_t import_id);
