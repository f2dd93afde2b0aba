/* SPDX-License-Identifier: MIT */
/*
 * The run executor: takes run requests (schedule, on demand, catch-up, upstream refresh, resume),
 * keeps at most max_concurrent_runs of them running, and drives each one through the steps of
 * ARCHITECTURE.md ("Data flow of a run"): checks → snapshot and plan → cap → list validation
 * → rejected rows → (dry run ends here) → import batches → (mirror) removals → finish.
 *
 * Policies (what callers and operators can rely on):
 *   - One run per export. An on-demand request while the export has a queued or running run is
 *     REFUSED, not queued (-EBUSY and the active run's id). A scheduled, catch-up or refresh
 *     request in that situation is skipped with an info log line (same -EBUSY to the caller).
 *   - The cap (max_profiles_per_export) is checked on the snapshot before any request to Constant
 *     Contact; the mirror removal-share guard is checked once the plan is counted, before the
 *     first import, so a refused run writes nothing to Constant Contact.
 *   - Cancel stops submitting at once and cancels the run's outstanding requests. Activities
 *     Constant Contact already accepted are abandoned (recorded "abandoned" with their activity
 *     id): CC may still apply them, and the next run's plan re-sends whatever is not confirmed.
 *     The run is recorded "cancelled" immediately (a plan step on the thread pool finishes in the
 *     background within about a second per million members).
 *   - A failed, cancelled or timed-out activity fails its batch: its contacts are not confirmed
 *     and are sent again by the next run; the other batches go on, and the run ends "failed"
 *     with the number of failed batches in its error. Contacts CC reports in activity_errors
 *     become rejected rows (permanent for invalid data: not re-sent until they change).
 *   - A dry run counts the plan (selected, unchanged, rejected rows, pending = what it would
 *     send) and names adds, updates and removals in the run's text; it writes nothing to
 *     Constant Contact. It ends partially_succeeded while the store keeps "succeeded" for runs
 *     with nothing pending.
 *   - Mirror mode removes only departed contacts ccsync added. A contact sent as new that was
 *     already on the list (read page by page before the first import, up to 200 pages unless
 *     it is the export's first sync) is recorded as not added by ccsync and is never removed.
 *     Contact ids for removals come from GET /contacts?email= per contact or from paging the
 *     list, whichever takes fewer requests; removals go in activities of at most 500 ids.
 *   - Drain (SIGTERM) stops submitting, lets import/remove requests already on the wire finish
 *     so their activity ids are recorded ("submitted"), stops polling, and records the runs
 *     "interrupted". runner_recover() at the next start resumes every export whose newest run is
 *     interrupted: the resume run first waits for the activities of the interrupted run that were
 *     submitted and never confirmed, then re-plans; contacts confirmed by the interrupted run (or
 *     its own resume chain) count as sent and are not sent again. Contacts of batches that were
 *     accepted by CC but never confirmed are sent once more (an idempotent upsert).
 *
 * CPU work (the plan's sort and scan, batch encoding) runs on the libuv thread pool with a store
 * connection the plan owns; writes go through the loop's store. While batch k uploads and
 * polls, batch k+1 is encoded; at most RUNNER_WINDOW encoded batches are unconfirmed at once, so
 * memory stays bounded whatever the export's size.
 *
 * Loop thread only, everything here.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store-data.h"

struct ccclient;
struct config;
struct store;
struct runner;

/* Encoded-but-unconfirmed import batches per run (memory: about 2 × batch_max_bytes each). */
#define RUNNER_WINDOW 3

enum runner_phase {
	RUNNER_PHASE_QUEUED,
	RUNNER_PHASE_CHECKING, /* export, connection, consent, list */
	RUNNER_PHASE_PLANNING, /* snapshot, plan, rejected rows */
	RUNNER_PHASE_WAITING,  /* resume: waiting for the interrupted run's activities */
	RUNNER_PHASE_SENDING,
	RUNNER_PHASE_REMOVING, /* mirror mode */
	RUNNER_PHASE_FINISHED,
	_RUNNER_PHASE_MAX,
};

const char *runner_phase_to_string(enum runner_phase p);

/* A run's progress; every pointer is borrowed for the duration of the callback only. */
struct runner_progress {
	int64_t run_id;
	int64_t export_id;
	int64_t connection_id;
	const char *export_name;
	enum store_data_trigger trigger;
	bool dry_run;
	enum store_data_run_state state; /* queued, running, or the final state */
	enum runner_phase phase;
	struct store_data_counters counters; /* as recorded in the store */
	/* The plan, once counted (zero before): contacts to add (new), to update (changed), and
	 * departed contacts to remove (mirror). A dry run reports these and sends nothing. */
	uint64_t plan_adds;
	uint64_t plan_updates;
	uint64_t plan_removals;
	int64_t cannot_add;	/* contacts CC did not add to the list (unsubscribed) */
	double rate_per_second; /* contacts confirmed per second since sending started */
	int64_t eta_seconds;	/* -1 when unknown */
	const char *error;	/* final: the error (failed, cancelled, interrupted) or NULL */
	bool final;		/* the last callback of this run */
};

/*
 * Progress callback: called on phase changes, after every confirmed batch, and exactly once with
 * final = true when the run ends (also when the daemon stops: then state may be queued or
 * interrupted). The callee must not free the runner from inside it; it may call runner_request
 * or runner_cancel.
 */
typedef void (*runner_progress_fn)(const struct runner_progress *p, void *userdata);
typedef void (*runner_done_fn)(void *userdata);

/*
 * Creates the executor. loop, store (the loop's connection) and cc are borrowed and must outlive
 * the runner; db_path is copied and used to open one extra store connection per planning run
 * (from a worker thread); cfg values are copied. 0 and *ret (transfer full; release with
 * runner_close) or a negative errno with a message in err.
 */
int runner_new(uv_loop_t *loop, struct store *store, const char *db_path, struct ccclient *cc,
	       const struct config *cfg, struct runner **ret, char *err, size_t errlen);

/* Applies a reloaded configuration to runs started from now on (max_concurrent_runs also to
 * the queue at once). */
void runner_reload(struct runner *r, const struct config *cfg);

struct runner_request {
	int64_t export_id;
	enum store_data_trigger trigger; /* schedule, demand, catch_up, refresh (not resume) */
	bool dry_run;
	bool full;	   /* resend every contact, ignoring sync state */
	bool force;	   /* past the mirror removal-share guard */
	const char *requested_by; /* NULL for the scheduler; copied into the run */
	runner_progress_fn progress; /* may be NULL; see runner_watch */
	void *userdata;
};

/*
 * Queues a run. Returns 0 and its id in *ret_run_id; the run starts from the loop (never inside
 * this call) when a slot is free. Refusals, with a message in err:
 *   -EBUSY       the export already has a queued or running run: *ret_run_id is set to THAT
 *                run's id (the one exception to "ret_ written only on success", so callers can
 *                say which run is in the way);
 *   -ENOENT      no such live export;
 *   -ESHUTDOWN   the runner is draining or closing;
 *   -ENOMEM, -EIO.
 */
int runner_request(struct runner *r, const struct runner_request *req, int64_t *ret_run_id,
		   char *err, size_t errlen);

/*
 * Adds a progress watcher to an active run (e.g. a second `run --follow`). -ENOENT when the run
 * is not active here. runner_unwatch removes it again (before its final callback; afterwards it
 * is already gone): call it when the watcher's memory goes away early.
 */
int runner_watch(struct runner *r, int64_t run_id, runner_progress_fn fn, void *userdata);
void runner_unwatch(struct runner *r, int64_t run_id, runner_progress_fn fn, void *userdata);

/*
 * Cancels a queued or running run with reason (copied; NULL: "cancelled"). 0 when it was
 * cancelled (the final progress callback has run before this returns), -EALREADY when the run
 * exists but already finished, -ENOENT when there is no such run.
 */
int runner_cancel(struct runner *r, int64_t run_id, const char *reason, char *err,
		  size_t errlen);

/*
 * Connection or export removal: cancels every run of the connection / export at once with
 * reason. Call these BEFORE ccclient_forget_connection. Return how many runs were cancelled.
 */
size_t runner_cancel_connection(struct runner *r, int64_t connection_id, const char *reason);
size_t runner_cancel_export(struct runner *r, int64_t export_id, const char *reason);

/*
 * Start-up recovery, once, before the scheduler fires: store_data_recover() (runs found running
 * become interrupted), then a resume run for every live, enabled export whose newest run is an
 * interrupted run that was not a dry run, and adoption of runs still queued in the database.
 * Returns the number of runs queued, or a negative errno with a message in err.
 */
int runner_recover(struct runner *r, char *err, size_t errlen);

/*
 * Graceful stop (SIGTERM): see the header comment. New requests are refused from now on; runs
 * still queued stay queued in the database (they start at the next start). done runs once, from
 * the loop, when every active run has been recorded interrupted (or has finished) and no work is
 * left on the thread pool, or when timeout_ms has passed, after which in-flight requests are
 * cancelled (their batches recorded abandoned) and the runs are recorded interrupted first.
 */
void runner_drain(struct runner *r, uint32_t timeout_ms, runner_done_fn done, void *userdata);

/* Active runs (queued and running) in request order, for STATUS= and `ccsyncctl status`. */
typedef void (*runner_foreach_fn)(const struct runner_progress *p, void *userdata);
size_t runner_foreach(struct runner *r, runner_foreach_fn fn, void *userdata);
size_t runner_active(const struct runner *r);

/*
 * Closes the runner: runs still active are cancelled the way a timed-out drain cancels them
 * (recorded interrupted), handles are closed, and the memory is freed once the last thread-pool
 * job and close callback have run; then on_closed (may be NULL). Close it before the ccclient hub.
 * Accepts NULL.
 */
void runner_close(struct runner *r, runner_done_fn on_closed, void *userdata);
