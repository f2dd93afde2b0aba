/* SPDX-License-Identifier: MIT */
/*
 * SQL of the data side (see store-data.h): upstream data, run history, batches, rejected rows,
 * sync state, retention, the plan's scans and import staging.
 *
 * Invariants kept here rather than trusted to callers:
 *   - a run moves only along the state machine of ARCHITECTURE.md, and an export has at most one
 *     queued or running run (checked inside the write transaction that creates one);
 *   - runs.rejected always equals the number of the run's rejected rows, and a batch's
 *     confirmation, its sync-state rows and the run's counters are one commit;
 *   - every statement is reset when its function returns (a statement left on a row would keep a
 *     read snapshot open and make later reads on this connection stale).
 *
 * Write functions are atomic: they own a BEGIN IMMEDIATE transaction, or, inside a caller's write
 * transaction, a SAVEPOINT that is rolled back on failure, so a failed call never leaves half of
 * itself in the caller's transaction either.
 */
#include "store-data.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "store-internal.h"
#include "util.h"

#define SECONDS_PER_DAY 86400
#define RESUME_CHAIN_MAX 64

static void stmt_resetp(sqlite3_stmt **st)
{
	if (*st)
		sqlite3_reset(*st);
}
#define _cleanup_reset_ _cleanup_(stmt_resetp)

static sqlite3_stmt *prepare(struct store *s, const char *sql, int *r)
{
	sqlite3_stmt *st = store_prepare(s, sql);

	if (!st)
		*r = -EIO;
	return st;
}

static int sql_error(struct store *s, char *err, size_t errlen, int r, const char *what)
{
	return set_error(err, errlen, r, "%s: %s", what, store_errmsg(s));
}

static int dup_column(sqlite3_stmt *st, int col, char **ret)
{
	return store_column_strdup(st, col, ret);
}

/* ---- transactions ---------------------------------------------------------------------------- */

struct tx {
	bool own;
};

static const char SQL_SAVEPOINT[] = "SAVEPOINT store_data";
static const char SQL_RELEASE[] = "RELEASE store_data";
static const char SQL_ROLLBACK_TO[] = "ROLLBACK TO store_data";

static int exec_simple(struct store *s, const char *sql)
{
	sqlite3_stmt *st = store_prepare(s, sql);

	if (!st)
		return -EIO;
	return store_exec_stmt(s, st);
}

static int tx_begin(struct store *s, struct tx *t, char *err, size_t errlen)
{
	int r;

	t->own = !store_in_transaction(s);
	r = t->own ? store_begin_write(s) : exec_simple(s, SQL_SAVEPOINT);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot start a write transaction");
	return 0;
}

/* Commits (or rolls back when r < 0) and returns r, or the commit's error. */
static int tx_end(struct store *s, struct tx *t, int r, char *err, size_t errlen)
{
	int q;

	if (t->own) {
		if (r < 0) {
			(void)store_rollback(s); /* the original error is the one worth reporting */
			return r;
		}
		q = store_commit(s);
		if (q < 0) {
			(void)store_rollback(s);
			return sql_error(s, err, errlen, q, "cannot commit");
		}
		return r;
	}
	if (r < 0) {
		(void)exec_simple(s, SQL_ROLLBACK_TO);
		(void)exec_simple(s, SQL_RELEASE);
		return r;
	}
	q = exec_simple(s, SQL_RELEASE);
	if (q < 0)
		return sql_error(s, err, errlen, q, "cannot release savepoint");
	return r;
}

/* ---- enums ----------------------------------------------------------------------------------- */

static const char *const run_states[_STORE_DATA_RUN_STATE_MAX] = {
	[STORE_DATA_RUN_QUEUED] = "queued",
	[STORE_DATA_RUN_RUNNING] = "running",
	[STORE_DATA_RUN_SUCCEEDED] = "succeeded",
	[STORE_DATA_RUN_PARTIALLY_SUCCEEDED] = "partially_succeeded",
	[STORE_DATA_RUN_FAILED] = "failed",
	[STORE_DATA_RUN_CANCELLED] = "cancelled",
	[STORE_DATA_RUN_INTERRUPTED] = "interrupted",
};

static const char *const triggers[_STORE_DATA_TRIGGER_MAX] = {
	[STORE_DATA_TRIGGER_SCHEDULE] = "schedule", [STORE_DATA_TRIGGER_DEMAND] = "demand",
	[STORE_DATA_TRIGGER_CATCH_UP] = "catch_up", [STORE_DATA_TRIGGER_REFRESH] = "refresh",
	[STORE_DATA_TRIGGER_RESUME] = "resume",
};

static const char *const batch_kinds[_STORE_DATA_BATCH_KIND_MAX] = {
	[STORE_DATA_BATCH_IMPORT] = "import",
	[STORE_DATA_BATCH_REMOVE] = "remove",
};

static const char *const batch_states[_STORE_DATA_BATCH_STATE_MAX] = {
	[STORE_DATA_BATCH_PLANNED] = "planned",	    [STORE_DATA_BATCH_SUBMITTED] = "submitted",
	[STORE_DATA_BATCH_CONFIRMED] = "confirmed", [STORE_DATA_BATCH_FAILED] = "failed",
	[STORE_DATA_BATCH_ABANDONED] = "abandoned",
};

static int lookup(const char *const *table, int n, const char *s)
{
	if (!s)
		return -EINVAL;
	for (int i = 0; i < n; i++)
		if (streq(table[i], s))
			return i;
	return -EINVAL;
}

const char *store_data_run_state_to_string(enum store_data_run_state s)
{
	return (unsigned)s < _STORE_DATA_RUN_STATE_MAX ? run_states[s] : NULL;
}

enum store_data_run_state store_data_run_state_from_string(const char *s)
{
	return lookup(run_states, _STORE_DATA_RUN_STATE_MAX, s);
}

const char *store_data_trigger_to_string(enum store_data_trigger t)
{
	return (unsigned)t < _STORE_DATA_TRIGGER_MAX ? triggers[t] : NULL;
}

enum store_data_trigger store_data_trigger_from_string(const char *s)
{
	return lookup(triggers, _STORE_DATA_TRIGGER_MAX, s);
}

const char *store_data_batch_kind_to_string(enum store_data_batch_kind k)
{
	return (unsigned)k < _STORE_DATA_BATCH_KIND_MAX ? batch_kinds[k] : NULL;
}

const char *store_data_batch_state_to_string(enum store_data_batch_state s)
{
	return (unsigned)s < _STORE_DATA_BATCH_STATE_MAX ? batch_states[s] : NULL;
}

bool store_data_run_state_is_final(enum store_data_run_state s)
{
	return s != STORE_DATA_RUN_QUEUED && s != STORE_DATA_RUN_RUNNING &&
	       (unsigned)s < _STORE_DATA_RUN_STATE_MAX;
}

/* ---- runs ------------------------------------------------------------------------------------ */

#define RUN_COLUMNS                                                                                \
	"r.run_id, r.export_id, e.name, r.state, r.trigger, r.dry_run, r.full_resend, r.force, "   \
	"r.requested_by, r.resumed_from, r.queued_at, r.started_at, r.finished_at, r.selected, "   \
	"r.sent, r.rejected, r.unchanged, r.removed, r.pending, r.batches_total, "                 \
	"r.batches_done, r.error FROM runs AS r LEFT JOIN exports AS e USING (export_id) "

static void run_done(struct store_data_run *r)
{
	free(r->export_name);
	free(r->requested_by);
	free(r->error);
}

static int run_from_row(sqlite3_stmt *st, struct store_data_run *r)
{
	*r = (struct store_data_run){
		.run_id = sqlite3_column_int64(st, 0),
		.export_id = sqlite3_column_int64(st, 1),
		.state = store_data_run_state_from_string((const char *)sqlite3_column_text(st, 3)),
		.trigger = store_data_trigger_from_string((const char *)sqlite3_column_text(st, 4)),
		.dry_run = sqlite3_column_int(st, 5),
		.full_resend = sqlite3_column_int(st, 6),
		.force = sqlite3_column_int(st, 7),
		.resumed_from = sqlite3_column_int64(st, 9),
		.queued_at = sqlite3_column_int64(st, 10),
		.started_at = sqlite3_column_int64(st, 11),
		.finished_at = sqlite3_column_int64(st, 12),
		.counters = {
			.selected = sqlite3_column_int64(st, 13),
			.sent = sqlite3_column_int64(st, 14),
			.rejected = sqlite3_column_int64(st, 15),
			.unchanged = sqlite3_column_int64(st, 16),
			.removed = sqlite3_column_int64(st, 17),
			.pending = sqlite3_column_int64(st, 18),
			.batches_total = sqlite3_column_int64(st, 19),
			.batches_done = sqlite3_column_int64(st, 20),
		},
	};
	if (dup_column(st, 2, &r->export_name) < 0 || dup_column(st, 8, &r->requested_by) < 0 ||
	    dup_column(st, 21, &r->error) < 0) {
		run_done(r);
		return -ENOMEM;
	}
	return 0;
}

/* Collects every row of a prepared RUN_COLUMNS query. */
static int collect_runs(struct store *s, sqlite3_stmt *st, struct store_data_run **ret_runs,
			size_t *ret_n, char *err, size_t errlen)
{
	struct store_data_run *runs = NULL;
	size_t n = 0, cap = 0;
	int r;

	while ((r = store_step(s, st)) > 0) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct store_data_run *nr = reallocarray(runs, ncap, sizeof(*runs));

			if (!nr) {
				r = -ENOMEM;
				break;
			}
			runs = nr;
			cap = ncap;
		}
		r = run_from_row(st, &runs[n]);
		if (r < 0)
			break;
		n++;
	}
	sqlite3_reset(st);
	if (r < 0) {
		store_data_runs_free(runs, n);
		return r == -ENOMEM ? set_error(err, errlen, r, "out of memory")
				    : sql_error(s, err, errlen, r, "cannot read runs");
	}
	*ret_runs = runs;
	*ret_n = n;
	return 0;
}

void store_data_runs_free(struct store_data_run *runs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		run_done(&runs[i]);
	free(runs);
}

struct store_data_run *store_data_run_free(struct store_data_run *r)
{
	if (r) {
		run_done(r);
		free(r);
	}
	return NULL;
}

int store_data_run_get(struct store *s, int64_t run_id, struct store_data_run **ret, char *err,
		       size_t errlen)
{
	static const char SQL[] = "SELECT " RUN_COLUMNS "WHERE r.run_id = ?1";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	_cleanup_free_ struct store_data_run *run = NULL;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot read run");
	sqlite3_bind_int64(st, 1, run_id);
	r = store_step(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot read run");
	if (r == 0)
		return set_error(err, errlen, -ENOENT, "run %" PRId64 " does not exist", run_id);
	run = malloc(sizeof(*run));
	if (!run || run_from_row(st, run) < 0)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	*ret = TAKE_PTR(run);
	return 0;
}

int store_data_runs_list(struct store *s, int64_t export_id, int64_t before_run_id, size_t limit,
			 struct store_data_run **ret_runs, size_t *ret_n, char *err, size_t errlen)
{
	static const char SQL[] =
		"SELECT " RUN_COLUMNS
		"WHERE (?1 = 0 OR r.export_id = ?1) AND (?2 = 0 OR r.run_id < ?2) "
		"ORDER BY r.run_id DESC LIMIT ?3";
	sqlite3_stmt *st;
	int r = 0;

	if (limit < 1 || limit > 1000)
		return set_error(err, errlen, -EINVAL, "limit must be between 1 and 1000");
	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot list runs");
	sqlite3_bind_int64(st, 1, export_id);
	sqlite3_bind_int64(st, 2, before_run_id);
	sqlite3_bind_int64(st, 3, (int64_t)limit);
	return collect_runs(s, st, ret_runs, ret_n, err, errlen);
}

int store_data_runs_active(struct store *s, struct store_data_run **ret_runs, size_t *ret_n,
			   char *err, size_t errlen)
{
	static const char SQL[] =
		"SELECT " RUN_COLUMNS "WHERE r.state IN ('queued', 'running') ORDER BY r.run_id";
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot list active runs");
	return collect_runs(s, st, ret_runs, ret_n, err, errlen);
}

int store_data_run_active(struct store *s, int64_t export_id, int64_t *ret_run_id)
{
	static const char SQL[] = "SELECT run_id FROM runs WHERE export_id = ?1 AND "
				  "state IN ('queued', 'running') ORDER BY run_id LIMIT 1";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, export_id);
	r = store_step(s, st);
	if (r > 0 && ret_run_id)
		*ret_run_id = sqlite3_column_int64(st, 0);
	return r;
}

/* Export state for run creation: 1 live, 0 removed, -ENOENT missing. */
static int export_live(struct store *s, int64_t export_id)
{
	static const char SQL[] = "SELECT removed_at IS NULL FROM exports WHERE export_id = ?1";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, export_id);
	r = store_step(s, st);
	if (r <= 0)
		return r < 0 ? r : -ENOENT;
	return sqlite3_column_int(st, 0);
}

/* Reads a run's export and state; -ENOENT when there is no such run. */
static int run_state(struct store *s, int64_t run_id, int64_t *ret_export_id,
		     enum store_data_run_state *ret_state)
{
	static const char SQL[] = "SELECT export_id, state FROM runs WHERE run_id = ?1";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, run_id);
	r = store_step(s, st);
	if (r <= 0)
		return r < 0 ? r : -ENOENT;
	if (ret_export_id)
		*ret_export_id = sqlite3_column_int64(st, 0);
	if (ret_state)
		*ret_state =
			store_data_run_state_from_string((const char *)sqlite3_column_text(st, 1));
	return 0;
}

static int run_create_locked(struct store *s, const struct store_data_run_request *req,
			     int64_t *ret_run_id, char *err, size_t errlen)
{
	static const char SQL[] =
		"INSERT INTO runs (export_id, trigger, dry_run, full_resend, force, requested_by, "
		"resumed_from, queued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
	enum store_data_run_state prev_state;
	int64_t active, prev_export;
	sqlite3_stmt *st;
	int r = 0;

	r = export_live(s, req->export_id);
	if (r < 0 && r != -ENOENT)
		return sql_error(s, err, errlen, r, "cannot read the export");
	if (r <= 0)
		return set_error(err, errlen, -ENOENT, "export %" PRId64 " %s", req->export_id,
				 r == 0 ? "has been removed" : "does not exist");
	r = store_data_run_active(s, req->export_id, &active);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot read runs");
	if (r > 0)
		return set_error(err, errlen, -EBUSY,
				 "export %" PRId64 " already has run %" PRId64
				 " queued or running; one run per export at a time",
				 req->export_id, active);
	if (req->resumed_from) {
		r = run_state(s, req->resumed_from, &prev_export, &prev_state);
		if (r == -ENOENT || (r == 0 && (prev_export != req->export_id ||
						prev_state != STORE_DATA_RUN_INTERRUPTED)))
			return set_error(err, errlen, -EINVAL,
					 "run %" PRId64
					 " is not an interrupted run of export %" PRId64
					 "; only those can be resumed",
					 req->resumed_from, req->export_id);
		if (r < 0)
			return sql_error(s, err, errlen, r, "cannot read runs");
	}

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot create run");
	sqlite3_bind_int64(st, 1, req->export_id);
	sqlite3_bind_text(st, 2, triggers[req->trigger], -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, req->dry_run);
	sqlite3_bind_int(st, 4, req->full_resend);
	sqlite3_bind_int(st, 5, req->force);
	store_bind_text(st, 6, req->requested_by);
	if (req->resumed_from)
		sqlite3_bind_int64(st, 7, req->resumed_from);
	sqlite3_bind_int64(st, 8, store_now());
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot create run");
	*ret_run_id = sqlite3_last_insert_rowid(store_db(s));
	return 0;
}

int store_data_run_create(struct store *s, const struct store_data_run_request *req,
			  int64_t *ret_run_id, char *err, size_t errlen)
{
	struct tx t;
	int64_t id = 0;
	int r;

	if ((unsigned)req->trigger >= _STORE_DATA_TRIGGER_MAX)
		return set_error(err, errlen, -EINVAL, "unknown run trigger %d", req->trigger);
	if ((req->trigger == STORE_DATA_TRIGGER_RESUME) != (req->resumed_from != 0))
		return set_error(err, errlen, -EINVAL,
				 "a run resumes another run exactly when its trigger is 'resume'");
	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	r = tx_end(s, &t, run_create_locked(s, req, &id, err, errlen), err, errlen);
	if (r < 0)
		return r;
	*ret_run_id = id;
	return 0;
}

static bool transition_allowed(enum store_data_run_state from, enum store_data_run_state to)
{
	switch (from) {
	case STORE_DATA_RUN_QUEUED:
		return to == STORE_DATA_RUN_RUNNING || to == STORE_DATA_RUN_CANCELLED;
	case STORE_DATA_RUN_RUNNING:
		return store_data_run_state_is_final(to);
	default:
		return false;
	}
}

static int run_set_state_locked(struct store *s, int64_t run_id, enum store_data_run_state to,
				const char *error, char *err, size_t errlen)
{
	/* A dry run's pending counter is what it would have sent, not unfinished work. */
	static const char SQL_COUNTS[] =
		"SELECT CASE WHEN dry_run THEN 0 ELSE pending END, rejected FROM runs "
		"WHERE run_id = ?1";
	static const char SQL[] =
		"UPDATE runs SET state = ?2, "
		"started_at = CASE WHEN ?2 = 'running' THEN ?3 ELSE started_at END, "
		"finished_at = CASE WHEN ?2 = 'running' THEN finished_at ELSE ?3 END, "
		"error = coalesce(?4, error) WHERE run_id = ?1";
	enum store_data_run_state from;
	sqlite3_stmt *st;
	int r = 0;

	r = run_state(s, run_id, NULL, &from);
	if (r == -ENOENT)
		return set_error(err, errlen, r, "run %" PRId64 " does not exist", run_id);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot read run");
	if (!transition_allowed(from, to))
		return set_error(err, errlen, -EINVAL, "run %" PRId64 " is %s; it cannot become %s",
				 run_id,
				 store_data_run_state_to_string(from) ?: "in an unknown state",
				 run_states[to]);
	if (to == STORE_DATA_RUN_SUCCEEDED) {
		_cleanup_reset_ sqlite3_stmt *c = prepare(s, SQL_COUNTS, &r);

		if (!c)
			return sql_error(s, err, errlen, r, "cannot read run");
		sqlite3_bind_int64(c, 1, run_id);
		r = store_step(s, c);
		if (r <= 0)
			return sql_error(s, err, errlen, r ?: -EIO, "cannot read run");
		if (sqlite3_column_int64(c, 0) != 0 || sqlite3_column_int64(c, 1) != 0)
			return set_error(err, errlen, -EINVAL,
					 "run %" PRId64 " has %" PRId64 " pending and %" PRId64
					 " rejected contacts; it cannot be marked succeeded",
					 run_id, (int64_t)sqlite3_column_int64(c, 0),
					 (int64_t)sqlite3_column_int64(c, 1));
	}
	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot update run");
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_text(st, 2, run_states[to], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, store_now());
	store_bind_text(st, 4, error);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot update run");
	return 0;
}

int store_data_run_set_state(struct store *s, int64_t run_id, enum store_data_run_state to,
			     const char *error, char *err, size_t errlen)
{
	struct tx t;
	int r;

	if ((unsigned)to >= _STORE_DATA_RUN_STATE_MAX)
		return set_error(err, errlen, -EINVAL, "unknown run state %d", to);
	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	return tx_end(s, &t, run_set_state_locked(s, run_id, to, error, err, errlen), err, errlen);
}

/* Fails unless the run exists and is running. */
static int require_running(struct store *s, int64_t run_id, int64_t *ret_export_id, char *err,
			   size_t errlen)
{
	enum store_data_run_state state;
	int r = run_state(s, run_id, ret_export_id, &state);

	if (r == -ENOENT)
		return set_error(err, errlen, r, "run %" PRId64 " does not exist", run_id);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot read run");
	if (state != STORE_DATA_RUN_RUNNING)
		return set_error(err, errlen, -EINVAL, "run %" PRId64 " is %s, not running", run_id,
				 store_data_run_state_to_string(state) ?: "in an unknown state");
	return 0;
}

static int run_set_plan_locked(struct store *s, int64_t run_id, const int64_t v[4], char *err,
			       size_t errlen)
{
	static const char SQL[] = "UPDATE runs SET selected = ?2, unchanged = ?3, sent = ?4, "
				  "pending = ?5 WHERE run_id = ?1";
	static const char SQL_BATCHES[] = "SELECT batches_total, sent, rejected FROM runs "
					  "WHERE run_id = ?1";
	sqlite3_stmt *st;
	int r;

	r = require_running(s, run_id, NULL, err, errlen);
	if (r < 0)
		return r;
	/* The totals are absolute. Once batches exist, confirmations have moved sent and
	 * pending, so new totals (a single-pass run learns its final ones only at the end of
	 * the plan) must already account for them: sent may only grow, and selected must
	 * still cover sent + rejected + unchanged + pending. */
	st = prepare(s, SQL_BATCHES, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot record the plan");
	sqlite3_bind_int64(st, 1, run_id);
	r = store_step(s, st);
	if (r > 0 && sqlite3_column_int64(st, 0) > 0 &&
	    (v[2] < sqlite3_column_int64(st, 1) ||
	     v[0] != v[1] + v[2] + v[3] + sqlite3_column_int64(st, 2)))
		r = set_error(err, errlen, -EINVAL,
			      "run %" PRId64 " already has batches; new plan totals must keep "
			      "its confirmed contacts and add up",
			      run_id);
	sqlite3_reset(st);
	if (r < 0)
		return r == -EINVAL ? r : sql_error(s, err, errlen, r, "cannot record the plan");
	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot record the plan");
	sqlite3_bind_int64(st, 1, run_id);
	for (int i = 0; i < 4; i++)
		sqlite3_bind_int64(st, 2 + i, v[i]);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot record the plan");
	return 0;
}

int store_data_run_set_plan(struct store *s, int64_t run_id, int64_t selected, int64_t unchanged,
			    int64_t already_sent, int64_t pending, char *err, size_t errlen)
{
	const int64_t v[4] = { selected, unchanged, already_sent, pending };
	struct tx t;
	int r;

	if (selected < 0 || unchanged < 0 || already_sent < 0 || pending < 0)
		return set_error(err, errlen, -EINVAL, "plan totals cannot be negative");
	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	return tx_end(s, &t, run_set_plan_locked(s, run_id, v, err, errlen), err, errlen);
}

static int adjust_pending_locked(struct store *s, int64_t run_id, int64_t delta, char *err,
				 size_t errlen)
{
	static const char SQL[] = "UPDATE runs SET pending = pending + ?2 "
				  "WHERE run_id = ?1 AND pending + ?2 >= 0";
	sqlite3_stmt *st;
	int r;

	r = require_running(s, run_id, NULL, err, errlen);
	if (r < 0)
		return r;
	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot update the run");
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, delta);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot update the run");
	if (sqlite3_changes(store_db(s)) == 0)
		return set_error(err, errlen, -EINVAL,
				 "run %" PRId64 " has fewer pending contacts than %" PRId64, run_id,
				 -delta);
	return 0;
}

int store_data_run_adjust_pending(struct store *s, int64_t run_id, int64_t delta, char *err,
				  size_t errlen)
{
	struct tx t;
	int r;

	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	return tx_end(s, &t, adjust_pending_locked(s, run_id, delta, err, errlen), err, errlen);
}

int store_data_run_resume_chain(struct store *s, int64_t run_id, int64_t **ret_ids, size_t *ret_n)
{
	static const char SQL[] = "SELECT resumed_from FROM runs WHERE run_id = ?1";
	_cleanup_free_ int64_t *ids = calloc(RESUME_CHAIN_MAX, sizeof(*ids));
	int64_t id = run_id;
	size_t n = 0;
	int r = 0;

	if (!ids)
		return -ENOMEM;
	while (id != 0 && n < RESUME_CHAIN_MAX) {
		_cleanup_reset_ sqlite3_stmt *st = prepare(s, SQL, &r);

		if (!st)
			return r;
		sqlite3_bind_int64(st, 1, id);
		r = store_step(s, st);
		if (r < 0)
			return r;
		if (r == 0)
			return n == 0 ? -ENOENT : -EIO; /* a dangling link: purge clears them */
		ids[n++] = id;
		id = sqlite3_column_int64(st, 0);
	}
	*ret_ids = TAKE_PTR(ids);
	*ret_n = n;
	return 0;
}

static int collect_ids(struct store *s, sqlite3_stmt *st, int64_t **ret, size_t *ret_n)
{
	_cleanup_free_ int64_t *ids = NULL;
	size_t n = 0, cap = 0;
	int r;

	while ((r = store_step(s, st)) > 0) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			int64_t *ni = reallocarray(ids, ncap, sizeof(*ids));

			if (!ni) {
				r = -ENOMEM;
				break;
			}
			ids = ni;
			cap = ncap;
		}
		ids[n++] = sqlite3_column_int64(st, 0);
	}
	sqlite3_reset(st);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(ids);
	*ret_n = n;
	return 0;
}

static int recover_locked(struct store *s, struct store_data_recovery *rec, int64_t now)
{
	static const char SQL_RUNNING[] =
		"SELECT run_id FROM runs WHERE state = 'running' ORDER BY run_id";
	static const char SQL_QUEUED[] =
		"SELECT run_id FROM runs WHERE state = 'queued' ORDER BY run_id";
	static const char SQL_BATCHES[] =
		"UPDATE run_batches SET state = 'abandoned', finished_at = ?2, "
		"error = coalesce(error, 'the daemon stopped before the batch was confirmed; the "
		"resume run re-plans its contacts') WHERE run_id = ?1 AND state IN ('planned', "
		"'submitted')";
	static const char SQL_RUN[] =
		"UPDATE runs SET state = 'interrupted', finished_at = ?2, batches_done = "
		"batches_done + ?3, error = coalesce(error, 'the daemon stopped during the run') "
		"WHERE run_id = ?1";
	/* A drained stop (SIGTERM) leaves the batches CC was processing 'submitted' in the
	 * interrupted run, for the resume run to wait for: settle them in the history as well. */
	static const char SQL_LEFT_RUNS[] =
		"UPDATE runs SET batches_done = batches_done + (SELECT count(*) FROM run_batches b "
		"WHERE b.run_id = runs.run_id AND b.state IN ('planned', 'submitted')) "
		"WHERE state = 'interrupted' AND run_id IN (SELECT run_id FROM run_batches "
		"WHERE state IN ('planned', 'submitted'))";
	static const char SQL_LEFT_BATCHES[] =
		"UPDATE run_batches SET state = 'abandoned', finished_at = ?1, "
		"error = coalesce(error, 'the daemon stopped before the batch was confirmed; the "
		"resume run re-plans its contacts') WHERE state IN ('planned', 'submitted') AND "
		"run_id IN (SELECT run_id FROM runs WHERE state = 'interrupted')";
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL_LEFT_RUNS, &r);
	if (!st)
		return r;
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	st = prepare(s, SQL_LEFT_BATCHES, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, now);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;

	st = prepare(s, SQL_RUNNING, &r);
	if (!st)
		return r;
	r = collect_ids(s, st, &rec->interrupted, &rec->n_interrupted);
	if (r < 0)
		return r;
	for (size_t i = 0; i < rec->n_interrupted; i++) {
		int abandoned;

		st = prepare(s, SQL_BATCHES, &r);
		if (!st)
			return r;
		sqlite3_bind_int64(st, 1, rec->interrupted[i]);
		sqlite3_bind_int64(st, 2, now);
		r = store_exec_stmt(s, st);
		if (r < 0)
			return r;
		abandoned = sqlite3_changes(store_db(s));
		st = prepare(s, SQL_RUN, &r);
		if (!st)
			return r;
		sqlite3_bind_int64(st, 1, rec->interrupted[i]);
		sqlite3_bind_int64(st, 2, now);
		sqlite3_bind_int(st, 3, abandoned);
		r = store_exec_stmt(s, st);
		if (r < 0)
			return r;
	}
	st = prepare(s, SQL_QUEUED, &r);
	if (!st)
		return r;
	return collect_ids(s, st, &rec->queued, &rec->n_queued);
}

int store_data_recover(struct store *s, struct store_data_recovery *ret, char *err, size_t errlen)
{
	struct store_data_recovery rec = {};
	struct tx t;
	int r;

	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	r = recover_locked(s, &rec, store_now());
	if (r < 0)
		r = sql_error(s, err, errlen, r, "start-up recovery failed");
	r = tx_end(s, &t, r, err, errlen);
	if (r < 0) {
		store_data_recovery_done(&rec);
		return r;
	}
	*ret = rec;
	return 0;
}

void store_data_recovery_done(struct store_data_recovery *r)
{
	free(r->interrupted);
	free(r->queued);
	*r = (struct store_data_recovery){};
}

/* ---- batches --------------------------------------------------------------------------------- */

struct batch_head {
	int64_t export_id;
	enum store_data_batch_kind kind;
	enum store_data_batch_state state;
	int64_t contacts;
};

static int batch_head(struct store *s, int64_t run_id, int64_t batch_no, struct batch_head *ret,
		      char *err, size_t errlen)
{
	static const char SQL[] =
		"SELECT r.export_id, b.kind, b.state, b.contacts FROM run_batches AS b "
		"JOIN runs AS r USING (run_id) WHERE b.run_id = ?1 AND b.batch_no = ?2";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot read batch");
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, batch_no);
	r = store_step(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot read batch");
	if (r == 0)
		return set_error(err, errlen, -ENOENT, "run %" PRId64 " has no batch %" PRId64,
				 run_id, batch_no);
	ret->export_id = sqlite3_column_int64(st, 0);
	ret->kind = lookup(batch_kinds, _STORE_DATA_BATCH_KIND_MAX,
			   (const char *)sqlite3_column_text(st, 1));
	ret->state = lookup(batch_states, _STORE_DATA_BATCH_STATE_MAX,
			    (const char *)sqlite3_column_text(st, 2));
	ret->contacts = sqlite3_column_int64(st, 3);
	return 0;
}

static int batch_refuse(char *err, size_t errlen, int64_t run_id, int64_t batch_no,
			const struct batch_head *h, const char *what)
{
	return set_error(err, errlen, -EINVAL,
			 "batch %" PRId64 " of run %" PRId64 " is a %s batch in state %s; %s",
			 batch_no, run_id, store_data_batch_kind_to_string(h->kind) ?: "?",
			 store_data_batch_state_to_string(h->state) ?: "?", what);
}

static int batch_add_locked(struct store *s, int64_t run_id, int64_t batch_no,
			    enum store_data_batch_kind kind, int64_t contacts, int64_t bytes,
			    char *err, size_t errlen)
{
	static const char SQL[] = "INSERT INTO run_batches (run_id, batch_no, kind, contacts, "
				  "bytes) VALUES (?1, ?2, ?3, ?4, ?5)";
	static const char SQL_RUN[] =
		"UPDATE runs SET batches_total = batches_total + 1 WHERE run_id = ?1";
	sqlite3_stmt *st;
	int r;

	r = require_running(s, run_id, NULL, err, errlen);
	if (r < 0)
		return r;
	st = prepare(s, SQL, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, batch_no);
	sqlite3_bind_text(st, 3, batch_kinds[kind], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, contacts);
	sqlite3_bind_int64(st, 5, bytes);
	r = store_exec_stmt(s, st);
	if (r == -EEXIST)
		return set_error(err, errlen, r, "run %" PRId64 " already has a batch %" PRId64,
				 run_id, batch_no);
	if (r < 0)
		goto sql_fail;
	st = prepare(s, SQL_RUN, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, run_id);
	r = store_exec_stmt(s, st);
	if (r < 0)
		goto sql_fail;
	return 0;
sql_fail:
	return sql_error(s, err, errlen, r ?: -EIO, "cannot add batch");
}

int store_data_batch_add(struct store *s, int64_t run_id, int64_t batch_no,
			 enum store_data_batch_kind kind, int64_t contacts, int64_t bytes,
			 char *err, size_t errlen)
{
	struct tx t;
	int r;

	if ((unsigned)kind >= _STORE_DATA_BATCH_KIND_MAX || batch_no < 1 || contacts < 0 ||
	    bytes < 0)
		return set_error(err, errlen, -EINVAL,
				 "invalid batch (kind %d, number %" PRId64 ", %" PRId64
				 " contacts, %" PRId64 " bytes)",
				 kind, batch_no, contacts, bytes);
	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	return tx_end(s, &t,
		      batch_add_locked(s, run_id, batch_no, kind, contacts, bytes, err, errlen),
		      err, errlen);
}

static int batch_submitted_locked(struct store *s, int64_t run_id, int64_t batch_no,
				  const char *activity_id, char *err, size_t errlen)
{
	static const char SQL[] =
		"UPDATE run_batches SET state = 'submitted', activity_id = ?3, "
		"attempts = attempts + 1, submitted_at = ?4 WHERE run_id = ?1 AND batch_no = ?2";
	struct batch_head h;
	sqlite3_stmt *st;
	int r;

	r = batch_head(s, run_id, batch_no, &h, err, errlen);
	if (r < 0)
		return r;
	if (h.state != STORE_DATA_BATCH_PLANNED && h.state != STORE_DATA_BATCH_SUBMITTED)
		return batch_refuse(err, errlen, run_id, batch_no, &h, "it cannot be submitted");
	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot record the submission");
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, batch_no);
	sqlite3_bind_text(st, 3, activity_id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, store_now());
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot record the submission");
	return 0;
}

int store_data_batch_submitted(struct store *s, int64_t run_id, int64_t batch_no,
			       const char *activity_id, char *err, size_t errlen)
{
	struct tx t;
	int r;

	if (!activity_id || !*activity_id)
		return set_error(err, errlen, -EINVAL, "an activity id is required");
	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	return tx_end(s, &t, batch_submitted_locked(s, run_id, batch_no, activity_id, err, errlen),
		      err, errlen);
}

/* Appends rejected rows and counts them in runs.rejected; runs inside the caller's transaction. */
static int rejected_insert(struct store *s, int64_t run_id, const struct store_data_rejection *rows,
			   size_t n, char *err, size_t errlen)
{
	static const char SQL_SEQ[] =
		"SELECT coalesce(max(seq), 0) FROM rejected_rows WHERE run_id = ?1";
	static const char SQL[] =
		"INSERT INTO rejected_rows (run_id, seq, profile_id, email, reason_code, reason, "
		"permanent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
	static const char SQL_RUN[] = "UPDATE runs SET rejected = rejected + ?2 WHERE run_id = ?1";
	sqlite3_stmt *st;
	int64_t seq;
	int r = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!rows[i].reason_code || !rows[i].reason)
			return set_error(err, errlen, -EINVAL,
					 "rejected row %zu has no reason code or reason", i);
	st = prepare(s, SQL_SEQ, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot record rejected rows");
	sqlite3_bind_int64(st, 1, run_id);
	r = store_step(s, st);
	seq = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (r <= 0)
		return sql_error(s, err, errlen, r ?: -EIO, "cannot record rejected rows");

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot record rejected rows");
	sqlite3_bind_int64(st, 1, run_id);
	for (size_t i = 0; i < n; i++) {
		sqlite3_bind_int64(st, 2, ++seq);
		store_bind_text(st, 3, rows[i].profile_id);
		store_bind_text(st, 4, rows[i].email);
		sqlite3_bind_text(st, 5, rows[i].reason_code, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 6, rows[i].reason, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int(st, 7, rows[i].permanent);
		r = store_exec_stmt(s, st);
		if (r < 0)
			return sql_error(s, err, errlen, r, "cannot record rejected rows");
	}
	st = prepare(s, SQL_RUN, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot record rejected rows");
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, (int64_t)n);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot record rejected rows");
	return 0;
}

int store_data_rejected_add(struct store *s, int64_t run_id,
			    const struct store_data_rejection *rows, size_t n, char *err,
			    size_t errlen)
{
	struct tx t;
	int r;

	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	r = run_state(s, run_id, NULL, NULL);
	if (r == -ENOENT)
		r = set_error(err, errlen, r, "run %" PRId64 " does not exist", run_id);
	else if (r < 0)
		r = sql_error(s, err, errlen, r, "cannot read run");
	else
		r = rejected_insert(s, run_id, rows, n, err, errlen);
	return tx_end(s, &t, r, err, errlen);
}

static int sync_entry_cmp(const void *a, const void *b)
{
	return strcmp((*(const struct store_data_sync_entry *const *)a)->email,
		      (*(const struct store_data_sync_entry *const *)b)->email);
}

static int confirm_locked(struct store *s, int64_t run_id, int64_t batch_no,
			  const struct store_data_confirmation *c, char *err, size_t errlen)
{
	static const char SQL_SYNCED[] =
		"INSERT INTO sync_state (export_id, email, fields_hash, state, added_by_ccsync, "
		"contact_id, confirmed_run_id, confirmed_at) "
		"VALUES (?1, ?2, ?3, 'synced', ?4, ?5, ?6, ?7) "
		"ON CONFLICT (export_id, email) DO UPDATE SET "
		"fields_hash = excluded.fields_hash, state = 'synced', "
		"added_by_ccsync = CASE WHEN sync_state.state = 'rejected' AND "
		"sync_state.added_by_ccsync = 0 THEN excluded.added_by_ccsync "
		"ELSE sync_state.added_by_ccsync END, "
		"contact_id = coalesce(excluded.contact_id, sync_state.contact_id), "
		"confirmed_run_id = excluded.confirmed_run_id, "
		"confirmed_at = excluded.confirmed_at";
	/* A refused new contact is not on the list: added_by_ccsync 0 keeps it out of the mirror
	 * departed set. A refused update of a contact ccsync had added keeps its flag, so it is
	 * still removed if it leaves the segments. */
	static const char SQL_REFUSED[] =
		"INSERT INTO sync_state (export_id, email, fields_hash, state, added_by_ccsync, "
		"confirmed_run_id, confirmed_at) VALUES (?1, ?2, ?3, 'rejected', 0, ?4, ?5) "
		"ON CONFLICT (export_id, email) DO UPDATE SET "
		"fields_hash = excluded.fields_hash, state = 'rejected', "
		"confirmed_run_id = excluded.confirmed_run_id, confirmed_at = "
		"excluded.confirmed_at";
	static const char SQL_BATCH[] =
		"UPDATE run_batches SET state = 'confirmed', activity_state = ?3, error_count = "
		"?4, "
		"correctable_count = ?5, cannot_add_count = ?6, finished_at = ?7 "
		"WHERE run_id = ?1 AND batch_no = ?2";
	static const char SQL_RUN[] = "UPDATE runs SET sent = sent + ?2, pending = pending - ?3, "
				      "batches_done = batches_done + 1 WHERE run_id = ?1";
	_cleanup_free_ const struct store_data_sync_entry **order = NULL;
	int64_t now = store_now();
	struct batch_head h;
	sqlite3_stmt *st;
	int r = 0;

	r = batch_head(s, run_id, batch_no, &h, err, errlen);
	if (r < 0)
		return r;
	if (h.kind != STORE_DATA_BATCH_IMPORT || h.state != STORE_DATA_BATCH_SUBMITTED)
		return batch_refuse(err, errlen, run_id, batch_no, &h,
				    "only a submitted import batch can be confirmed");
	if ((int64_t)(c->n_synced + c->n_rejected) != h.contacts)
		return set_error(err, errlen, -EINVAL,
				 "batch %" PRId64 " of run %" PRId64 " has %" PRId64
				 " contacts, but its confirmation accounts for %zu",
				 batch_no, run_id, h.contacts, c->n_synced + c->n_rejected);

	for (size_t i = 0; i < c->n_synced; i++)
		if (!c->synced[i].email)
			return set_error(err, errlen, -EINVAL, "synced contact %zu has no email",
					 i);
	/* Upsert in email order: a batch's contacts are spread over the whole sync_state B-tree,
	 * and visiting its pages in order instead of at random more than halves the cost. */
	order = calloc(c->n_synced ? c->n_synced : 1, sizeof(*order));
	if (!order)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	for (size_t i = 0; i < c->n_synced; i++)
		order[i] = &c->synced[i];
	qsort(order, c->n_synced, sizeof(*order), sync_entry_cmp);

	st = prepare(s, SQL_SYNCED, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, h.export_id);
	sqlite3_bind_int64(st, 6, run_id);
	sqlite3_bind_int64(st, 7, now);
	for (size_t i = 0; i < c->n_synced; i++) {
		const struct store_data_sync_entry *e = order[i];

		sqlite3_bind_text(st, 2, e->email, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, (int64_t)e->fields_hash);
		sqlite3_bind_int(st, 4, e->added_by_ccsync);
		store_bind_text(st, 5, e->contact_id);
		r = store_exec_stmt(s, st);
		if (r < 0)
			goto sql_fail;
	}

	st = prepare(s, SQL_REFUSED, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, h.export_id);
	sqlite3_bind_int64(st, 4, run_id);
	sqlite3_bind_int64(st, 5, now);
	for (size_t i = 0; i < c->n_rejected; i++) {
		const struct store_data_rejection *e = &c->rejected[i];

		if (!e->permanent || !e->email)
			continue; /* transient: retried next run, nothing to remember */
		sqlite3_bind_text(st, 2, e->email, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, (int64_t)e->fields_hash);
		r = store_exec_stmt(s, st);
		if (r < 0)
			goto sql_fail;
	}
	r = rejected_insert(s, run_id, c->rejected, c->n_rejected, err, errlen);
	if (r < 0)
		return r;

	st = prepare(s, SQL_BATCH, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, batch_no);
	store_bind_text(st, 3, c->activity_state);
	sqlite3_bind_int64(st, 4, c->error_count);
	sqlite3_bind_int64(st, 5, c->correctable_count);
	sqlite3_bind_int64(st, 6, c->cannot_add_count);
	sqlite3_bind_int64(st, 7, now);
	r = store_exec_stmt(s, st);
	if (r < 0)
		goto sql_fail;

	st = prepare(s, SQL_RUN, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, (int64_t)c->n_synced);
	sqlite3_bind_int64(st, 3, (int64_t)(c->n_synced + c->n_rejected));
	r = store_exec_stmt(s, st);
	if (r < 0)
		goto sql_fail;
	return 0;
sql_fail:
	return sql_error(s, err, errlen, r ?: -EIO, "cannot confirm batch");
}

int store_data_batch_confirm(struct store *s, int64_t run_id, int64_t batch_no,
			     const struct store_data_confirmation *c, char *err, size_t errlen)
{
	struct tx t;
	int r;

	if ((c->n_synced && !c->synced) || (c->n_rejected && !c->rejected))
		return set_error(err, errlen, -EINVAL, "confirmation without its contacts");
	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	return tx_end(s, &t, confirm_locked(s, run_id, batch_no, c, err, errlen), err, errlen);
}

static int removal_locked(struct store *s, int64_t run_id, int64_t batch_no,
			  const char *const *emails, size_t n, char *err, size_t errlen)
{
	static const char SQL_DELETE[] = "DELETE FROM sync_state WHERE export_id = ?1 AND "
					 "email = ?2 AND added_by_ccsync = 1";
	static const char SQL_BATCH[] = "UPDATE run_batches SET state = 'confirmed', "
					"finished_at = ?3 WHERE run_id = ?1 AND batch_no = ?2";
	static const char SQL_RUN[] = "UPDATE runs SET removed = removed + ?2, "
				      "batches_done = batches_done + 1 WHERE run_id = ?1";
	struct batch_head h;
	sqlite3_stmt *st;
	int r = 0;

	r = batch_head(s, run_id, batch_no, &h, err, errlen);
	if (r < 0)
		return r;
	if (h.kind != STORE_DATA_BATCH_REMOVE || h.state != STORE_DATA_BATCH_SUBMITTED)
		return batch_refuse(err, errlen, run_id, batch_no, &h,
				    "only a submitted remove batch can be confirmed as removed");
	if ((int64_t)n != h.contacts)
		return set_error(err, errlen, -EINVAL,
				 "batch %" PRId64 " of run %" PRId64 " has %" PRId64
				 " contacts, but its confirmation names %zu",
				 batch_no, run_id, h.contacts, n);
	st = prepare(s, SQL_DELETE, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, h.export_id);
	for (size_t i = 0; i < n; i++) {
		if (!emails[i])
			return set_error(err, errlen, -EINVAL, "removed contact %zu has no email",
					 i);
		sqlite3_bind_text(st, 2, emails[i], -1, SQLITE_TRANSIENT);
		r = store_exec_stmt(s, st);
		if (r < 0)
			goto sql_fail;
	}
	st = prepare(s, SQL_BATCH, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, batch_no);
	sqlite3_bind_int64(st, 3, store_now());
	r = store_exec_stmt(s, st);
	if (r < 0)
		goto sql_fail;
	st = prepare(s, SQL_RUN, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, (int64_t)n);
	r = store_exec_stmt(s, st);
	if (r < 0)
		goto sql_fail;
	return 0;
sql_fail:
	return sql_error(s, err, errlen, r ?: -EIO, "cannot confirm removal");
}

int store_data_removal_confirm(struct store *s, int64_t run_id, int64_t batch_no,
			       const char *const *emails, size_t n, char *err, size_t errlen)
{
	struct tx t;
	int r;

	if (n && !emails)
		return set_error(err, errlen, -EINVAL, "removal confirmation without its emails");
	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	return tx_end(s, &t, removal_locked(s, run_id, batch_no, emails, n, err, errlen), err,
		      errlen);
}

static int batch_end_locked(struct store *s, int64_t run_id, int64_t batch_no,
			    enum store_data_batch_state to, const char *error, char *err,
			    size_t errlen)
{
	static const char SQL[] = "UPDATE run_batches SET state = ?3, error = ?4, finished_at = ?5 "
				  "WHERE run_id = ?1 AND batch_no = ?2";
	static const char SQL_RUN[] =
		"UPDATE runs SET batches_done = batches_done + 1 WHERE run_id = ?1";
	struct batch_head h;
	sqlite3_stmt *st;
	int r;

	r = batch_head(s, run_id, batch_no, &h, err, errlen);
	if (r < 0)
		return r;
	if (h.state != STORE_DATA_BATCH_PLANNED && h.state != STORE_DATA_BATCH_SUBMITTED)
		return batch_refuse(err, errlen, run_id, batch_no, &h, "it has already ended");
	st = prepare(s, SQL, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, batch_no);
	sqlite3_bind_text(st, 3, batch_states[to], -1, SQLITE_STATIC);
	store_bind_text(st, 4, error);
	sqlite3_bind_int64(st, 5, store_now());
	r = store_exec_stmt(s, st);
	if (r < 0)
		goto sql_fail;
	st = prepare(s, SQL_RUN, &r);
	if (!st)
		goto sql_fail;
	sqlite3_bind_int64(st, 1, run_id);
	r = store_exec_stmt(s, st);
	if (r < 0)
		goto sql_fail;
	return 0;
sql_fail:
	return sql_error(s, err, errlen, r ?: -EIO, "cannot end batch");
}

static int batch_end(struct store *s, int64_t run_id, int64_t batch_no,
		     enum store_data_batch_state to, const char *error, char *err, size_t errlen)
{
	struct tx t;
	int r;

	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	return tx_end(s, &t, batch_end_locked(s, run_id, batch_no, to, error, err, errlen), err,
		      errlen);
}

int store_data_batch_fail(struct store *s, int64_t run_id, int64_t batch_no, const char *error,
			  char *err, size_t errlen)
{
	if (!error || !*error)
		return set_error(err, errlen, -EINVAL, "a failed batch needs an error text");
	return batch_end(s, run_id, batch_no, STORE_DATA_BATCH_FAILED, error, err, errlen);
}

int store_data_batch_abandon(struct store *s, int64_t run_id, int64_t batch_no, const char *error,
			     char *err, size_t errlen)
{
	return batch_end(s, run_id, batch_no, STORE_DATA_BATCH_ABANDONED, error, err, errlen);
}

static void batch_done(struct store_data_batch *b)
{
	free(b->activity_id);
	free(b->activity_state);
	free(b->error);
}

void store_data_batches_free(struct store_data_batch *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		batch_done(&b[i]);
	free(b);
}

int store_data_run_batches(struct store *s, int64_t run_id, struct store_data_batch **ret,
			   size_t *ret_n, char *err, size_t errlen)
{
	static const char SQL[] =
		"SELECT batch_no, kind, state, contacts, bytes, activity_id, activity_state, "
		"attempts, error_count, correctable_count, cannot_add_count, submitted_at, "
		"finished_at, error FROM run_batches WHERE run_id = ?1 ORDER BY batch_no";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	struct store_data_batch *b = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot read batches");
	sqlite3_bind_int64(st, 1, run_id);
	while ((r = store_step(s, st)) > 0) {
		struct store_data_batch *e;

		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct store_data_batch *nb = reallocarray(b, ncap, sizeof(*b));

			if (!nb) {
				r = -ENOMEM;
				break;
			}
			b = nb;
			cap = ncap;
		}
		e = &b[n];
		*e = (struct store_data_batch){
			.run_id = run_id,
			.batch_no = sqlite3_column_int64(st, 0),
			.kind = lookup(batch_kinds, _STORE_DATA_BATCH_KIND_MAX,
				       (const char *)sqlite3_column_text(st, 1)),
			.state = lookup(batch_states, _STORE_DATA_BATCH_STATE_MAX,
					(const char *)sqlite3_column_text(st, 2)),
			.contacts = sqlite3_column_int64(st, 3),
			.bytes = sqlite3_column_int64(st, 4),
			.attempts = sqlite3_column_int64(st, 7),
			.error_count = sqlite3_column_int64(st, 8),
			.correctable_count = sqlite3_column_int64(st, 9),
			.cannot_add_count = sqlite3_column_int64(st, 10),
			.submitted_at = sqlite3_column_int64(st, 11),
			.finished_at = sqlite3_column_int64(st, 12),
		};
		if (dup_column(st, 5, &e->activity_id) < 0 ||
		    dup_column(st, 6, &e->activity_state) < 0 ||
		    dup_column(st, 13, &e->error) < 0) {
			batch_done(e);
			r = -ENOMEM;
			break;
		}
		n++;
	}
	if (r < 0) {
		store_data_batches_free(b, n);
		return r == -ENOMEM ? set_error(err, errlen, r, "out of memory")
				    : sql_error(s, err, errlen, r, "cannot read batches");
	}
	*ret = b;
	*ret_n = n;
	return 0;
}

/* ---- rejected rows --------------------------------------------------------------------------- */

static void rejected_row_done(struct store_data_rejected_row *row)
{
	free(row->profile_id);
	free(row->email);
	free(row->reason_code);
	free(row->reason);
}

void store_data_rejected_rows_free(struct store_data_rejected_row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++)
		rejected_row_done(&rows[i]);
	free(rows);
}

int store_data_rejected_page(struct store *s, int64_t run_id, int64_t after_seq, size_t limit,
			     struct store_data_rejected_row **ret, size_t *ret_n, char *err,
			     size_t errlen)
{
	static const char SQL[] =
		"SELECT seq, profile_id, email, reason_code, reason, permanent FROM rejected_rows "
		"WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	struct store_data_rejected_row *rows = NULL;
	size_t n = 0;
	int r = 0;

	if (limit < 1 || limit > 10000)
		return set_error(err, errlen, -EINVAL, "page size must be between 1 and 10000");
	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot read rejected rows");
	rows = calloc(limit, sizeof(*rows));
	if (!rows)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	sqlite3_bind_int64(st, 1, run_id);
	sqlite3_bind_int64(st, 2, after_seq);
	sqlite3_bind_int64(st, 3, (int64_t)limit);
	while ((r = store_step(s, st)) > 0) {
		struct store_data_rejected_row *row = &rows[n];

		row->seq = sqlite3_column_int64(st, 0);
		row->permanent = sqlite3_column_int(st, 5);
		if (dup_column(st, 1, &row->profile_id) < 0 || dup_column(st, 2, &row->email) < 0 ||
		    dup_column(st, 3, &row->reason_code) < 0 ||
		    dup_column(st, 4, &row->reason) < 0) {
			rejected_row_done(row);
			r = -ENOMEM;
			break;
		}
		n++;
	}
	if (r < 0) {
		store_data_rejected_rows_free(rows, n);
		return r == -ENOMEM ? set_error(err, errlen, r, "out of memory")
				    : sql_error(s, err, errlen, r, "cannot read rejected rows");
	}
	*ret = rows;
	*ret_n = n;
	return 0;
}

/* ---- retention ------------------------------------------------------------------------------- */

static int purge_locked(struct store *s, int64_t runs_cutoff, int64_t rejected_cutoff,
			struct store_data_purge_result *res)
{
	static const char SQL_UNLINK[] =
		"UPDATE runs SET resumed_from = NULL WHERE resumed_from IN (SELECT run_id FROM "
		"runs "
		"WHERE state NOT IN ('queued', 'running') AND finished_at < ?1)";
	static const char SQL_RUNS[] = "DELETE FROM runs WHERE state NOT IN ('queued', 'running') "
				       "AND finished_at < ?1";
	static const char SQL_REJECTED[] =
		"DELETE FROM rejected_rows WHERE run_id IN (SELECT run_id FROM runs WHERE "
		"state NOT IN ('queued', 'running') AND finished_at < ?1)";
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL_UNLINK, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, runs_cutoff);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	st = prepare(s, SQL_RUNS, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, runs_cutoff);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	res->runs = sqlite3_changes(store_db(s));
	st = prepare(s, SQL_REJECTED, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, rejected_cutoff);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	res->rejected_rows = sqlite3_changes(store_db(s));
	return 0;
}

int store_data_purge(struct store *s, uint32_t run_retention_days, uint32_t rejected_retention_days,
		     struct store_data_purge_result *ret, char *err, size_t errlen)
{
	struct store_data_purge_result res = {};
	int64_t now = store_now();
	struct tx t;
	int r;

	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	r = purge_locked(s, now - (int64_t)run_retention_days * SECONDS_PER_DAY,
			 now - (int64_t)rejected_retention_days * SECONDS_PER_DAY, &res);
	if (r < 0)
		r = sql_error(s, err, errlen, r, "cannot purge history");
	r = tx_end(s, &t, r, err, errlen);
	if (r < 0)
		return r;
	if (ret)
		*ret = res;
	return 0;
}

/* ---- segments, profiles, refreshes ----------------------------------------------------------- */

static void segment_done(struct store_data_segment *g)
{
	free(g->name);
	free(g->description);
}

void store_data_segments_free(struct store_data_segment *segs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		segment_done(&segs[i]);
	free(segs);
}

int store_data_segments_list(struct store *s, struct store_data_segment **ret, size_t *ret_n,
			     char *err, size_t errlen)
{
	static const char SQL[] =
		"SELECT g.segment_id, g.name, g.description, g.updated_at, "
		"(SELECT count(*) FROM segment_members AS m WHERE m.segment_id = g.segment_id) "
		"FROM segments AS g ORDER BY g.name";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	struct store_data_segment *segs = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot list segments");
	while ((r = store_step(s, st)) > 0) {
		struct store_data_segment *g;

		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct store_data_segment *ng = reallocarray(segs, ncap, sizeof(*segs));

			if (!ng) {
				r = -ENOMEM;
				break;
			}
			segs = ng;
			cap = ncap;
		}
		g = &segs[n];
		*g = (struct store_data_segment){
			.segment_id = sqlite3_column_int64(st, 0),
			.updated_at = sqlite3_column_int64(st, 3),
			.members = sqlite3_column_int64(st, 4),
		};
		if (dup_column(st, 1, &g->name) < 0 || dup_column(st, 2, &g->description) < 0) {
			segment_done(g);
			r = -ENOMEM;
			break;
		}
		n++;
	}
	if (r < 0) {
		store_data_segments_free(segs, n);
		return r == -ENOMEM ? set_error(err, errlen, r, "out of memory")
				    : sql_error(s, err, errlen, r, "cannot list segments");
	}
	*ret = segs;
	*ret_n = n;
	return 0;
}

int store_data_segment_lookup(struct store *s, const char *name, int64_t *ret_segment_id)
{
	static const char SQL[] = "SELECT segment_id FROM segments WHERE name = ?1";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	r = store_step(s, st);
	if (r <= 0)
		return r < 0 ? r : -ENOENT;
	*ret_segment_id = sqlite3_column_int64(st, 0);
	return 0;
}

int store_data_attribute_exists(struct store *s, const char *name, size_t sample,
				size_t *ret_sampled)
{
	/* json_each compares decoded keys, so any attribute name works without JSON-path quoting.
	 */
	static const char SQL[] =
		"SELECT (SELECT count(*) FROM (SELECT 1 FROM profiles LIMIT ?2)), "
		"EXISTS (SELECT 1 FROM (SELECT attributes FROM profiles LIMIT ?2) AS p, "
		"json_each(p.attributes) AS j WHERE j.key = ?1 AND j.type <> 'null')";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	int r = 0;

	if (!name || !*name)
		return -EINVAL;
	if (sample == 0)
		sample = STORE_DATA_ATTRIBUTE_SAMPLE;
	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, (int64_t)sample);
	r = store_step(s, st);
	if (r <= 0)
		return r < 0 ? r : -EIO;
	if (ret_sampled)
		*ret_sampled = (size_t)sqlite3_column_int64(st, 0);
	return sqlite3_column_int(st, 1) ? 1 : 0;
}

int store_data_refresh_announce(struct store *s, int64_t *ret_refresh_id)
{
	static const char SQL[] = "INSERT INTO upstream_refreshes (finished_at) VALUES (?1)";
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, store_now());
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	if (ret_refresh_id)
		*ret_refresh_id = sqlite3_last_insert_rowid(store_db(s));
	return 0;
}

int store_data_refresh_consume(struct store *s, int64_t *ret_count)
{
	static const char SQL[] =
		"UPDATE upstream_refreshes SET consumed_at = ?1 WHERE consumed_at IS NULL";
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, store_now());
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	if (ret_count)
		*ret_count = sqlite3_changes(store_db(s));
	return 0;
}

/* ---- export definition ----------------------------------------------------------------------- */

struct store_data_export *store_data_export_free(struct store_data_export *e)
{
	if (!e)
		return NULL;
	free(e->name);
	free(e->email_field);
	free(e->first_name_field);
	free(e->last_name_field);
	for (size_t i = 0; i < e->n_fields; i++) {
		free(e->fields[i].target);
		free(e->fields[i].source);
	}
	free(e->fields);
	free(e->segment_ids);
	free(e);
	return NULL;
}

static int export_load_fields(struct store *s, struct store_data_export *e)
{
	static const char SQL[] = "SELECT target, source_field FROM export_fields "
				  "WHERE export_id = ?1 ORDER BY target";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	size_t cap = 0;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, e->export_id);
	while ((r = store_step(s, st)) > 0) {
		struct store_data_export_field *f;

		if (e->n_fields == cap) {
			size_t ncap = cap ? cap * 2 : 8;
			f = reallocarray(e->fields, ncap, sizeof(*f));
			if (!f)
				return -ENOMEM;
			e->fields = f;
			cap = ncap;
		}
		f = &e->fields[e->n_fields];
		*f = (struct store_data_export_field){};
		e->n_fields++;
		if (dup_column(st, 0, &f->target) < 0 || dup_column(st, 1, &f->source) < 0)
			return -ENOMEM;
	}
	return r;
}

static int export_load_segments(struct store *s, struct store_data_export *e)
{
	static const char SQL[] = "SELECT segment_id FROM export_segments WHERE export_id = ?1 "
				  "ORDER BY segment_id";
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, e->export_id);
	return collect_ids(s, st, &e->segment_ids, &e->n_segments);
}

int store_data_export_load(struct store *s, int64_t export_id, struct store_data_export **ret,
			   char *err, size_t errlen)
{
	static const char SQL[] =
		"SELECT name, mode, email_field, first_name_field, last_name_field, "
		"removed_at IS NOT NULL FROM exports WHERE export_id = ?1";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	struct store_data_export *e = NULL;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot read export");
	sqlite3_bind_int64(st, 1, export_id);
	r = store_step(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot read export");
	if (r == 0 || sqlite3_column_int(st, 5))
		return set_error(err, errlen, -ENOENT, "export %" PRId64 " %s", export_id,
				 r == 0 ? "does not exist" : "has been removed");
	e = calloc(1, sizeof(*e));
	if (!e)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	e->export_id = export_id;
	e->mirror = streq_ptr((const char *)sqlite3_column_text(st, 1), "mirror");
	if (dup_column(st, 0, &e->name) < 0 || dup_column(st, 2, &e->email_field) < 0 ||
	    dup_column(st, 3, &e->first_name_field) < 0 ||
	    dup_column(st, 4, &e->last_name_field) < 0) {
		store_data_export_free(e);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	sqlite3_reset(st);
	r = export_load_fields(s, e);
	if (r >= 0)
		r = export_load_segments(s, e);
	if (r < 0) {
		store_data_export_free(e);
		return r == -ENOMEM ? set_error(err, errlen, r, "out of memory")
				    : sql_error(s, err, errlen, r, "cannot read export");
	}
	*ret = e;
	return 0;
}

/* ---- the plan's scans ------------------------------------------------------------------------ */

/*
 * Members are read in profile_id order without any sort: each of the export's segments is walked
 * along its primary key (segment_id, profile_id) by a cursor of its own, and the cursors are
 * merged here, a profile that is in several segments coming out once. (SQL's DISTINCT over
 * several segments, followed by ORDER BY, would sort every member and its attribute document.)
 *
 * Attribute documents come one of three ways. Few members: each segment cursor joins its
 * members' profiles in SQL. Many: one more cursor walks the profiles table in profile_id order
 * alongside the members (a merge join: about half the cost of a B-tree search per member). That
 * pays only while the members are a large part of all profiles, but counting the profiles to
 * find out would read the whole table once more (as much I/O as the join itself): instead the
 * merge gives up once it has read more than twice as many profiles as there are members, and
 * looks the remaining members up one by one. All three give the same rows.
 */
static const char SQL_SEGMENT_MEMBERS[] =
	"SELECT m.profile_id, p.attributes FROM segment_members AS m "
	"LEFT JOIN profiles AS p ON p.profile_id = m.profile_id "
	"WHERE m.segment_id = ?1 ORDER BY m.profile_id";
static const char SQL_SEGMENT_MEMBER_IDS[] =
	"SELECT profile_id, NULL FROM segment_members WHERE segment_id = ?1 ORDER BY profile_id";
static const char SQL_ALL_PROFILES[] =
	"SELECT profile_id, attributes FROM profiles ORDER BY profile_id";
static const char SQL_PROFILE_LOOKUP[] = "SELECT attributes FROM profiles WHERE profile_id = ?1";

/* Below this many members a merge join cannot win much; above, it is tried (see above). */
#define MERGE_JOIN_MIN_MEMBERS 50000

struct member_cursor {
	sqlite3_stmt *st;
	bool done;
	bool must_step;	 /* on the profile returned last (or not started) */
	const char *pid; /* current row, valid until the cursor steps */
	size_t pid_len;
};

struct store_data_member_scan {
	struct store *store;
	struct member_cursor *cursors;
	size_t n_cursors;
	struct member_cursor profiles; /* merge join: every profile; st NULL otherwise */
	uint64_t merge_budget;	       /* profiles the merge may read before it gives up */
	uint64_t merge_read;
	sqlite3_stmt *lookup; /* after giving up: one profile at a time */
	struct store_data_member_row row;
};

/* BINARY collation: bytes, then length. */
static int pid_cmp(const char *a, size_t an, const char *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);

	if (c)
		return c;
	return an < bn ? -1 : an > bn;
}

/* 1 on a row, 0 at the end. Ids are TEXT by the column's affinity; only a BLOB written on
 * purpose escapes it, and it would break the merge's ordering, so it is refused. */
static int cursor_step(struct store *s, struct member_cursor *c)
{
	int r = store_step(s, c->st);

	if (r < 0)
		return r;
	if (r == 0) {
		c->done = true;
		return 0;
	}
	if (sqlite3_column_type(c->st, 0) != SQLITE_TEXT)
		return -EMEDIUMTYPE;
	c->pid = (const char *)sqlite3_column_text(c->st, 0);
	c->pid_len = (size_t)sqlite3_column_bytes(c->st, 0);
	if (!c->pid)
		return -ENOMEM;
	return 1;
}

static int scan_error(struct store *s, char *err, size_t errlen, int r)
{
	if (r == -EMEDIUMTYPE)
		return set_error(err, errlen, -EINVAL,
				 "a profile id is stored as a BLOB, not as text; the upstream "
				 "writer must store ids as text (see schema/README.md)");
	return sql_error(s, err, errlen, r, "member scan failed");
}

struct store_data_member_scan *store_data_member_scan_free(struct store_data_member_scan *sc)
{
	if (!sc)
		return NULL;
	for (size_t i = 0; i < sc->n_cursors; i++)
		sqlite3_finalize(sc->cursors[i].st);
	sqlite3_finalize(sc->profiles.st);
	sqlite3_finalize(sc->lookup);
	free(sc->cursors);
	free(sc);
	return NULL;
}

static int prepare_cursor(struct store *s, struct member_cursor *c, const char *sql)
{
	int rc = sqlite3_prepare_v3(store_db(s), sql, -1, SQLITE_PREPARE_PERSISTENT, &c->st, NULL);

	c->must_step = true;
	return rc == SQLITE_OK ? 0 : store_error(s, rc) ?: -EIO;
}

int store_data_member_scan_open(struct store *s, int64_t export_id, bool with_attributes,
				int64_t members, struct store_data_member_scan **ret, char *err,
				size_t errlen)
{
	static const char SQL_SEGMENTS[] =
		"SELECT segment_id FROM export_segments WHERE export_id = ?1 ORDER BY segment_id";
	struct store_data_member_scan *sc;
	_cleanup_free_ int64_t *ids = NULL;
	bool merge = false;
	size_t n = 0;
	sqlite3_stmt *q;
	int r = 0;

	q = prepare(s, SQL_SEGMENTS, &r);
	if (!q)
		return sql_error(s, err, errlen, r, "cannot read the export's segments");
	sqlite3_bind_int64(q, 1, export_id);
	r = collect_ids(s, q, &ids, &n);
	/* Counting a million members costs as much as a tenth of the plan: a caller that counted
	 * them already (plan_new, for the cap) passes its count. */
	if (r >= 0 && with_attributes && members < 0)
		r = store_data_member_count(s, export_id, &members);
	merge = with_attributes && members >= MERGE_JOIN_MIN_MEMBERS;
	if (r < 0)
		return r == -ENOMEM
			       ? set_error(err, errlen, r, "out of memory")
			       : sql_error(s, err, errlen, r, "cannot read the export's segments");
	sc = calloc(1, sizeof(*sc));
	if (sc)
		sc->cursors = calloc(n ? n : 1, sizeof(*sc->cursors));
	if (!sc || !sc->cursors) {
		store_data_member_scan_free(sc);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	sc->store = s;
	for (size_t i = 0; i < n; i++) {
		struct member_cursor *c = &sc->cursors[i];

		r = prepare_cursor(s, c,
				   with_attributes && !merge ? SQL_SEGMENT_MEMBERS
							     : SQL_SEGMENT_MEMBER_IDS);
		if (r >= 0 && sqlite3_bind_int64(c->st, 1, ids[i]) != SQLITE_OK)
			r = -EIO;
		if (r < 0)
			break;
		sc->n_cursors++;
	}
	if (r >= 0 && merge) {
		r = prepare_cursor(s, &sc->profiles, SQL_ALL_PROFILES);
		sc->merge_budget = 2 * (uint64_t)members;
	}
	if (r < 0) {
		store_data_member_scan_free(sc);
		return sql_error(s, err, errlen, r, "cannot prepare the member scan");
	}
	*ret = sc;
	return 0;
}

/* After the merge gave up: the attributes of pid, if that profile exists. */
static int lookup_profile(struct store_data_member_scan *sc, const char *pid, size_t len)
{
	int r;

	if (!sc->lookup) {
		r = sqlite3_prepare_v3(store_db(sc->store), SQL_PROFILE_LOOKUP, -1,
				       SQLITE_PREPARE_PERSISTENT, &sc->lookup, NULL);
		if (r != SQLITE_OK)
			return store_error(sc->store, r) ?: -EIO;
	}
	sqlite3_reset(sc->lookup);
	if (sqlite3_bind_text(sc->lookup, 1, pid, (int)len, SQLITE_TRANSIENT) != SQLITE_OK)
		return -ENOMEM;
	r = store_step(sc->store, sc->lookup);
	if (r <= 0 || sqlite3_column_type(sc->lookup, 0) == SQLITE_NULL)
		return r < 0 ? r : 0;
	sc->row.attributes = (const char *)sqlite3_column_text(sc->lookup, 0);
	sc->row.attributes_len = (size_t)sqlite3_column_bytes(sc->lookup, 0);
	return sc->row.attributes ? 0 : -ENOMEM;
}

/* Merge join: moves the profiles cursor to pid; the attributes if that profile exists. */
static int merge_profile(struct store_data_member_scan *sc, const char *pid, size_t len)
{
	struct member_cursor *c = &sc->profiles;
	int r;

	if (sc->merge_read > sc->merge_budget)
		return lookup_profile(sc, pid, len);
	for (;;) {
		if (c->must_step) {
			if (++sc->merge_read > sc->merge_budget) {
				/* Far more profiles than members: searching beats walking. */
				sqlite3_reset(c->st);
				return lookup_profile(sc, pid, len);
			}
			c->must_step = false;
			r = cursor_step(sc->store, c);
			if (r == -EMEDIUMTYPE) {
				/* A BLOB id can never equal a member's text id: skip it. */
				c->must_step = true;
				continue;
			}
			if (r < 0)
				return r;
		}
		if (c->done)
			return 0;
		r = pid_cmp(c->pid, c->pid_len, pid, len);
		if (r > 0)
			return 0;
		if (r == 0)
			break;
		c->must_step = true;
	}
	if (sqlite3_column_type(c->st, 1) != SQLITE_NULL) {
		sc->row.attributes = (const char *)sqlite3_column_text(c->st, 1);
		sc->row.attributes_len = (size_t)sqlite3_column_bytes(c->st, 1);
		if (!sc->row.attributes)
			return -ENOMEM;
	}
	return 0;
}

int store_data_member_scan_next(struct store_data_member_scan *sc,
				const struct store_data_member_row **ret, char *err, size_t errlen)
{
	struct member_cursor *min = NULL;
	int r;

	/* Step every cursor that was on the profile returned last (all of them, at the start). */
	for (size_t i = 0; i < sc->n_cursors; i++) {
		struct member_cursor *c = &sc->cursors[i];

		if (c->done || !c->must_step)
			continue;
		c->must_step = false;
		r = cursor_step(sc->store, c);
		if (r < 0)
			return scan_error(sc->store, err, errlen, r);
	}
	for (size_t i = 0; i < sc->n_cursors; i++) {
		struct member_cursor *c = &sc->cursors[i];

		if (!c->done && (!min || pid_cmp(c->pid, c->pid_len, min->pid, min->pid_len) < 0))
			min = c;
	}
	if (!min)
		return 0;
	for (size_t i = 0; i < sc->n_cursors; i++) {
		struct member_cursor *c = &sc->cursors[i];

		if (!c->done && pid_cmp(c->pid, c->pid_len, min->pid, min->pid_len) == 0)
			c->must_step = true;
	}
	sc->row = (struct store_data_member_row){
		.profile_id = min->pid,
		.profile_id_len = min->pid_len,
	};
	if (sc->profiles.st) {
		r = merge_profile(sc, min->pid, min->pid_len);
		if (r < 0)
			return scan_error(sc->store, err, errlen, r);
	} else if (sqlite3_column_type(min->st, 1) != SQLITE_NULL) {
		sc->row.attributes = (const char *)sqlite3_column_text(min->st, 1);
		sc->row.attributes_len = (size_t)sqlite3_column_bytes(min->st, 1);
		if (!sc->row.attributes)
			return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	*ret = &sc->row;
	return 1;
}

int store_data_member_scan_rewind(struct store_data_member_scan *sc)
{
	for (size_t i = 0; i < sc->n_cursors; i++) {
		sqlite3_reset(sc->cursors[i].st);
		sc->cursors[i].done = false;
		sc->cursors[i].must_step = true;
		sc->cursors[i].pid = NULL;
	}
	if (sc->profiles.st) {
		sqlite3_reset(sc->profiles.st);
		sc->profiles.done = false;
		sc->profiles.must_step = true;
		sc->profiles.pid = NULL;
		/* Once given up, the merge stays given up: the same snapshot, the same sizes. */
		if (sc->merge_read <= sc->merge_budget)
			sc->merge_read = 0;
	}
	if (sc->lookup)
		sqlite3_reset(sc->lookup);
	sc->row = (struct store_data_member_row){};
	return 0;
}

int store_data_member_count(struct store *s, int64_t export_id, int64_t *ret_count)
{
	static const char SQL[] =
		"SELECT count(*) FROM (SELECT DISTINCT profile_id FROM segment_members WHERE "
		"segment_id IN (SELECT segment_id FROM export_segments WHERE export_id = ?1))";
	static const char SQL_ONE[] =
		"SELECT count(*) FROM segment_members WHERE segment_id = "
		"(SELECT segment_id FROM export_segments WHERE export_id = ?1)";
	static const char SQL_SEGMENTS[] =
		"SELECT count(*) FROM export_segments WHERE export_id = ?1";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	int64_t segments;
	int r = 0;

	/* One segment: members are distinct by the primary key, and counting them is a range
	 * count; several: the DISTINCT costs a temporary B-tree of profile ids. */
	st = prepare(s, SQL_SEGMENTS, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, export_id);
	r = store_step(s, st);
	if (r <= 0)
		return r ?: -EIO;
	segments = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	st = prepare(s, segments == 1 ? SQL_ONE : SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, export_id);
	r = store_step(s, st);
	if (r <= 0)
		return r ?: -EIO;
	*ret_count = sqlite3_column_int64(st, 0);
	return 0;
}

int store_data_profile_attributes(struct store *s, const char *profile_id, size_t len,
				  char **ret_attributes)
{
	static const char SQL[] = "SELECT attributes FROM profiles WHERE profile_id = ?1";
	_cleanup_reset_ sqlite3_stmt *st = NULL;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_text(st, 1, profile_id, (int)len, SQLITE_TRANSIENT);
	r = store_step(s, st);
	if (r <= 0)
		return r < 0 ? r : -ENOENT;
	return store_column_strdup(st, 0, ret_attributes);
}

struct store_data_sync_scan {
	struct store *store;
	sqlite3_stmt *st;
	unsigned columns; /* STORE_DATA_SYNC_* */
	struct store_data_sync_row row;
};

/* Each optional column costs a tenth of the scan, which the plan pays for a million rows: only
 * the columns asked for are read (the plan's key table needs neither, unless it resumes). */
static const char SQL_SYNC_SCAN[] =
	"SELECT email, fields_hash, state = 'rejected', added_by_ccsync, confirmed_run_id, "
	"contact_id FROM sync_state WHERE export_id = ?1 ORDER BY email";
static const char SQL_SYNC_SCAN_RUN_ID[] =
	"SELECT email, fields_hash, state = 'rejected', added_by_ccsync, confirmed_run_id "
	"FROM sync_state WHERE export_id = ?1 ORDER BY email";
static const char SQL_SYNC_SCAN_KEYS[] =
	"SELECT email, fields_hash, state = 'rejected', added_by_ccsync "
	"FROM sync_state WHERE export_id = ?1 ORDER BY email";

int store_data_sync_scan_open(struct store *s, int64_t export_id, unsigned columns,
			      struct store_data_sync_scan **ret, char *err, size_t errlen)
{
	struct store_data_sync_scan *sc;
	int rc, r;

	sc = calloc(1, sizeof(*sc));
	if (!sc)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	sc->store = s;
	sc->columns = columns;
	rc = sqlite3_prepare_v3(store_db(s),
				columns & STORE_DATA_SYNC_CONTACT_ID ? SQL_SYNC_SCAN
				: columns & STORE_DATA_SYNC_RUN_ID   ? SQL_SYNC_SCAN_RUN_ID
								     : SQL_SYNC_SCAN_KEYS,
				-1, SQLITE_PREPARE_PERSISTENT, &sc->st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(sc->st, 1, export_id);
	if (rc != SQLITE_OK) {
		r = store_error(s, rc) ?: -EIO;
		store_data_sync_scan_free(sc);
		return sql_error(s, err, errlen, r, "cannot prepare the sync-state scan");
	}
	*ret = sc;
	return 0;
}

int store_data_sync_scan_next(struct store_data_sync_scan *sc,
			      const struct store_data_sync_row **ret, char *err, size_t errlen)
{
	int r = store_step(sc->store, sc->st);

	if (r < 0)
		return sql_error(sc->store, err, errlen, r, "sync-state scan failed");
	if (r == 0)
		return 0;
	sc->row = (struct store_data_sync_row){
		.email = (const char *)sqlite3_column_text(sc->st, 0),
		.email_len = (size_t)sqlite3_column_bytes(sc->st, 0),
		.fields_hash = (uint64_t)sqlite3_column_int64(sc->st, 1),
		.rejected = sqlite3_column_int(sc->st, 2),
		.added_by_ccsync = sqlite3_column_int(sc->st, 3),
	};
	if (sc->columns & (STORE_DATA_SYNC_RUN_ID | STORE_DATA_SYNC_CONTACT_ID))
		sc->row.confirmed_run_id = sqlite3_column_int64(sc->st, 4);
	if (sc->columns & STORE_DATA_SYNC_CONTACT_ID)
		sc->row.contact_id = (const char *)sqlite3_column_text(sc->st, 5);
	if (!sc->row.email)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	*ret = &sc->row;
	return 1;
}

int store_data_sync_scan_rewind(struct store_data_sync_scan *sc)
{
	sqlite3_reset(sc->st);
	return 0;
}

struct store_data_sync_scan *store_data_sync_scan_free(struct store_data_sync_scan *sc)
{
	if (sc) {
		sqlite3_finalize(sc->st);
		free(sc);
	}
	return NULL;
}

/* ---- import staging -------------------------------------------------------------------------- */

static const char SQL_STAGING_CREATE[] =
	"CREATE TEMP TABLE IF NOT EXISTS ccsync_import_staging ("
	"import_id INTEGER NOT NULL, profile_id TEXT NOT NULL, line INTEGER NOT NULL, "
	"attributes TEXT, PRIMARY KEY (import_id, profile_id)) WITHOUT ROWID";

int store_data_import_begin(struct store *s, int64_t *ret_import_id, char *err, size_t errlen)
{
	static int64_t last_import_id;
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL_STAGING_CREATE, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot create the import staging table");
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot create the import staging table");
	*ret_import_id = __atomic_add_fetch(&last_import_id, 1, __ATOMIC_RELAXED);
	return 0;
}

static const char SQL_FEED_BEGIN[] = "BEGIN DEFERRED";
static const char SQL_FEED_COMMIT[] = "COMMIT";
static const char SQL_FEED_ROLLBACK[] = "ROLLBACK";

int store_data_import_feed_begin(struct store *s, bool *ret_own)
{
	int r;

	/* Deferred, and only TEMP tables are written until apply: no lock on the main database
	 * is taken, so the upstream writer and the daemon's own writes carry on meanwhile. */
	if (store_in_transaction(s)) {
		*ret_own = false;
		return 0;
	}
	r = exec_simple(s, SQL_FEED_BEGIN);
	if (r < 0)
		return r;
	*ret_own = true;
	return 0;
}

int store_data_import_feed_end(struct store *s, bool own, bool commit)
{
	int r;

	if (!own)
		return 0;
	if (!commit) {
		(void)exec_simple(s, SQL_FEED_ROLLBACK);
		return 0;
	}
	r = exec_simple(s, SQL_FEED_COMMIT);
	if (r < 0)
		(void)exec_simple(s, SQL_FEED_ROLLBACK);
	return r;
}

int store_data_import_stage(struct store *s, int64_t import_id, const char *profile_id,
			    int64_t line, const char *attributes, const char *json_line,
			    const char *id_key, int64_t *ret_previous_line, char *err,
			    size_t errlen)
{
	static const char SQL[] =
		"INSERT INTO temp.ccsync_import_staging (import_id, profile_id, line, attributes) "
		"VALUES (?1, ?2, ?3, CASE WHEN ?5 IS NULL THEN ?4 "
		"ELSE json_remove(?5, '$.\"' || ?6 || '\"') END) "
		"ON CONFLICT (import_id, profile_id) DO NOTHING";
	static const char SQL_LINE[] = "SELECT line FROM temp.ccsync_import_staging "
				       "WHERE import_id = ?1 AND profile_id = ?2";
	_cleanup_reset_ sqlite3_stmt *q = NULL;
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return sql_error(s, err, errlen, r, "cannot stage row");
	sqlite3_bind_int64(st, 1, import_id);
	sqlite3_bind_text(st, 2, profile_id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 3, line);
	store_bind_text(st, 4, attributes);
	store_bind_text(st, 5, json_line);
	store_bind_text(st, 6, id_key);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return sql_error(s, err, errlen, r, "cannot stage row");
	if (sqlite3_changes(store_db(s)) > 0)
		return 0;
	q = prepare(s, SQL_LINE, &r);
	if (!q)
		return sql_error(s, err, errlen, r, "cannot stage row");
	sqlite3_bind_int64(q, 1, import_id);
	sqlite3_bind_text(q, 2, profile_id, -1, SQLITE_TRANSIENT);
	r = store_step(s, q);
	if (r <= 0)
		return sql_error(s, err, errlen, r ?: -EIO, "cannot stage row");
	if (ret_previous_line)
		*ret_previous_line = sqlite3_column_int64(q, 0);
	return -EEXIST;
}

static int apply_profiles_locked(struct store *s, int64_t import_id,
				 struct store_data_import_result *res)
{
	static const char SQL_COUNT[] =
		"SELECT count(*), count(p.profile_id) FROM temp.ccsync_import_staging AS g "
		"LEFT JOIN main.profiles AS p ON p.profile_id = g.profile_id WHERE g.import_id = "
		"?1";
	static const char SQL[] =
		"INSERT INTO main.profiles (profile_id, attributes, updated_at) "
		"SELECT profile_id, attributes, ?2 FROM temp.ccsync_import_staging "
		"WHERE import_id = ?1 ORDER BY profile_id "
		"ON CONFLICT (profile_id) DO UPDATE SET attributes = excluded.attributes, "
		"updated_at = excluded.updated_at";
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL_COUNT, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, import_id);
	r = store_step(s, st);
	if (r > 0) {
		res->rows = sqlite3_column_int64(st, 0);
		res->updated = sqlite3_column_int64(st, 1);
		res->inserted = res->rows - res->updated;
	}
	sqlite3_reset(st);
	if (r <= 0)
		return r ?: -EIO;
	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, import_id);
	sqlite3_bind_int64(st, 2, store_now());
	return store_exec_stmt(s, st);
}

int store_data_import_apply_profiles(struct store *s, int64_t import_id,
				     struct store_data_import_result *ret, char *err, size_t errlen)
{
	struct store_data_import_result res = {};
	struct tx t;
	int r;

	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	r = apply_profiles_locked(s, import_id, &res);
	if (r < 0)
		r = sql_error(s, err, errlen, r, "cannot import profiles");
	r = tx_end(s, &t, r, err, errlen);
	if (r < 0)
		return r;
	if (ret)
		*ret = res;
	return 0;
}

static int apply_segment_locked(struct store *s, int64_t import_id, const char *name,
				struct store_data_import_result *res)
{
	static const char SQL_CREATE[] =
		"INSERT INTO segments (name, updated_at) VALUES (?1, ?2) "
		"ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at";
	static const char SQL_PREVIOUS[] =
		"SELECT count(*) FROM segment_members WHERE segment_id = ?1";
	static const char SQL_DELETE[] = "DELETE FROM segment_members WHERE segment_id = ?1";
	static const char SQL_INSERT[] =
		"INSERT INTO segment_members (segment_id, profile_id) "
		"SELECT ?1, profile_id FROM temp.ccsync_import_staging WHERE import_id = ?2 "
		"ORDER BY profile_id";
	static const char SQL_COUNTS[] =
		"SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM main.profiles "
		"AS p WHERE p.profile_id = g.profile_id)) FROM temp.ccsync_import_staging AS g "
		"WHERE g.import_id = ?1";
	sqlite3_stmt *st;
	int64_t id;
	int r = 0;

	r = store_data_segment_lookup(s, name, &id);
	if (r < 0 && r != -ENOENT)
		return r;
	res->segment_created = r == -ENOENT;
	st = prepare(s, SQL_CREATE, &r);
	if (!st)
		return r;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 2, store_now());
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	r = store_data_segment_lookup(s, name, &id);
	if (r < 0)
		return r;
	res->segment_id = id;

	st = prepare(s, SQL_PREVIOUS, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, id);
	r = store_step(s, st);
	res->previous_members = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	if (r <= 0)
		return r ?: -EIO;

	st = prepare(s, SQL_COUNTS, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, import_id);
	r = store_step(s, st);
	res->rows = sqlite3_column_int64(st, 0);
	res->without_profile = sqlite3_column_int64(st, 1);
	sqlite3_reset(st);
	if (r <= 0)
		return r ?: -EIO;

	st = prepare(s, SQL_DELETE, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, id);
	r = store_exec_stmt(s, st);
	if (r < 0)
		return r;
	st = prepare(s, SQL_INSERT, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_int64(st, 2, import_id);
	return store_exec_stmt(s, st);
}

int store_data_import_apply_segment(struct store *s, int64_t import_id, const char *segment_name,
				    struct store_data_import_result *ret, char *err, size_t errlen)
{
	struct store_data_import_result res = {};
	struct tx t;
	int r;

	r = tx_begin(s, &t, err, errlen);
	if (r < 0)
		return r;
	r = apply_segment_locked(s, import_id, segment_name, &res);
	if (r < 0)
		r = sql_error(s, err, errlen, r, "cannot import the segment");
	r = tx_end(s, &t, r, err, errlen);
	if (r < 0)
		return r;
	if (ret)
		*ret = res;
	return 0;
}

int store_data_import_discard(struct store *s, int64_t import_id)
{
	static const char SQL[] = "DELETE FROM temp.ccsync_import_staging WHERE import_id = ?1";
	sqlite3_stmt *st;
	int r = 0;

	st = prepare(s, SQL, &r);
	if (!st)
		return r;
	sqlite3_bind_int64(st, 1, import_id);
	return store_exec_stmt(s, st);
}
