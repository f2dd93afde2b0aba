/* SPDX-License-Identifier: MIT */
/*
 * The run executor (see runner.h for the policies callers rely on).
 *
 * A run is a small state machine on the loop plus a "planner" that the libuv thread pool drives
 * one step at a time. The planner owns a store connection of its own and the plan (which keeps
 * a read transaction open on it for the run's snapshot); a step is one bounded unit of CPU work:
 * open the plan, collect the next chunk of rejected rows, or encode the next import batch. At
 * most one step per run is on the pool at a time, and the loop touches the planner only between
 * steps, so the planner needs no lock; the one field both sides touch concurrently is the atomic
 * cancel flag that makes a running step return early.
 *
 * Dry runs, and mirror runs of small lists or first syncs, read the plan twice (the others once,
 * see RUNNER_SINGLE_PASS): pass 1 returns the rejected rows (written to the run in chunks) and,
 * in mirror mode, the departed contacts ccsync added (spooled to an unlinked temporary file, so
 * a large removal does not sit in memory while the imports run); once pass 1 has ended, the
 * plan's counters are complete and are recorded (store_data_run_set_plan) before any batch is
 * confirmed, which is what keeps selected = sent + rejected + unchanged + pending true at every
 * moment. Pass 2 returns the contacts to send, and each step fills one batch with the ccapi
 * encoder. The loop records the batch, posts it, records the activity id before polling, and
 * confirms it in one store transaction.
 *
 * Lifetime. A run is referenced by the runner's list of active runs, by each outstanding client
 * request, and by a pool step in flight; it is freed at the last reference, so a cancelled run
 * whose step is still on the pool lingers (unlisted) until the step returns. Client requests use
 * three cancellation owners: the run itself (checks, lookups, the resume wait), post_owner (the
 * import and removal POSTs) and wait_owner (activity polling), so a drain can stop polling while
 * POSTs already on the wire finish and get their activity ids recorded.
 *
 * Loop thread only, except the planner_* step functions, which run on a pool thread.
 */
#include "runner.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ccapi.h"
#include "ccclient.h"
#include "config.h"
#include "log.h"
#include "plan.h"
#include "store-config.h"
#include "store-data.h"
#include "store-mirror.h"
#include "store.h"
#include "util.h"

#define REJECT_CHUNK 2000	 /* rejected rows per store_data_rejected_add */
#define LOOKUP_PARALLEL 4	 /* contact-by-email lookups in flight per run */
#define MEMBER_PAGES_MAX 200	 /* list pages read to tell pre-existing members (mirror) */
#define NO_STRING UINT32_MAX

/*
 * A run that is not dry reads its plan once, sending as it goes, and saves the second scan
 * (about 1 s of CPU per million members). Its final plan totals are recorded after the first
 * batches may have been confirmed; store_data_run_set_plan accepts them as long as they account
 * for those confirmations. Dry runs keep two passes (the report needs the whole plan first), and
 * so do mirror runs that read the list's members before the first import (a first sync, or a
 * list of at most MEMBER_PAGES_MAX pages; see pass1_next). A single-pass mirror run checks the
 * removal guard after its imports, before its first removal.
 */
#define RUNNER_SINGLE_PASS true

/* ------------------------------------------------------------------ small helpers */

/* Strings of one batch or chunk, addressed by offset so the buffer may grow. */
struct arena {
	char *buf;
	size_t len, cap;
};

static int arena_add(struct arena *a, const char *s, uint32_t *ret)
{
	size_t n;

	if (!s) {
		*ret = NO_STRING;
		return 0;
	}
	n = strlen(s) + 1;
	if (a->len + n > UINT32_MAX - 1)
		return -E2BIG;
	if (a->len + n > a->cap) {
		size_t cap = a->cap ? a->cap : 4096;
		char *buf;

		while (cap < a->len + n)
			cap *= 2;
		buf = realloc(a->buf, cap);
		if (!buf)
			return -ENOMEM;
		a->buf = buf;
		a->cap = cap;
	}
	memcpy(a->buf + a->len, s, n);
	*ret = (uint32_t)a->len;
	a->len += n;
	return 0;
}

static const char *arena_str(const struct arena *a, uint32_t off)
{
	return off == NO_STRING ? NULL : a->buf + off;
}

static void arena_done(struct arena *a)
{
	free(a->buf);
	*a = (struct arena){ 0 };
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t n;
	void *q;

	if (need <= *cap)
		return 0;
	n = *cap ? *cap * 2 : 256;
	while (n < need)
		n *= 2;
	q = realloc(*p, n * size);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}

/* FNV-1a: only to tell list members apart in a compact set; collisions err on "member". */
static uint64_t email_hash(const char *s)
{
	uint64_t h = UINT64_C(1469598103934665603);

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
	return h;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ structures */

/* A contact of an import batch; strings in the batch's arena. */
struct bcontact {
	uint32_t email;
	uint32_t profile_id;
	uint64_t hash;
	bool is_new;
};

/* A contact the encoder refused although the plan accepted it (rare: e.g. a birthday field). */
struct breject {
	uint32_t email;
	uint32_t profile_id;
	uint32_t code;
	uint32_t reason;
	uint64_t hash;
};

enum batch_stage {
	BATCH_ENCODED,
	BATCH_POSTING,
	BATCH_WAITING,
};

struct run;

struct batch {
	struct batch *next;
	struct run *run;
	enum store_data_batch_kind kind;
	enum batch_stage stage;
	int64_t batch_no;
	int64_t contacts; /* as recorded: encoded + refused (import), emails (remove) */
	char activity_id[CCAPI_ID_LEN + 1];

	/* import */
	char *body;
	size_t len;
	struct bcontact *c;
	size_t n_c, cap_c;
	struct breject *rej;
	size_t n_rej, cap_rej;
	struct arena s;

	/* remove: borrowed from run->departed; n_ids = 0 for a removal by the staging list */
	const char **ids;
	size_t n_ids;
	const char **emails;
	size_t n_emails;
};

struct departed {
	char *email;
	char *contact_id; /* NULL until looked up */
	struct run *run;  /* set on the loop once loaded: the lookup callback's way back */
	bool staged;	  /* seen on the staging list (read only when the fallback needs it) */
};

/* The removal step of a mirror run, in order (see staging_start). */
enum stage {
	STG_NONE,	 /* no staging list involved (contact-id removals only) */
	STG_PREP,	 /* creating the staging list, or settling what an earlier run left */
	STG_READY,	 /* settled while the plan still runs: empty, nothing pending on it */
	STG_IMPORT,	 /* importing the departed emails into the staging list */
	STG_LIST_REMOVE, /* removing the staging list's members from the exported list */
	STG_FALLBACK,	 /* departed contacts the import did not stage: by contact id */
	STG_EMPTY,	 /* emptying the staging list */
	STG_DONE,	 /* the final empty was accepted; waiting for the last imports, if any */
};

enum step {
	STEP_PLAN,
	STEP_PASS1,
	STEP_ENCODE,
	STEP_CLOSE,
	_STEP_MAX,
};

/* Rejected row of a chunk, by arena offset (the arena may move while the chunk fills). */
struct creject {
	uint32_t profile_id, email, code, reason;
	uint64_t hash;
	bool permanent;
};

struct planner {
	/* inputs, set before the first step */
	const char *db_path; /* borrowed from the runner */
	int64_t export_id;
	bool full, mirror;
	bool single; /* one pass returning sends and rejections together (see pass1_next) */
	char list_id[CCAPI_ID_LEN + 1];
	uint32_t max_contacts, max_bytes;
	uint64_t max_selected;
	int64_t *resume_ids;
	size_t n_resume_ids;

	atomic_bool cancel;
	uint64_t cpu_ns[_STEP_MAX]; /* thread CPU per kind of step, for the debug summary */

	/* state */
	enum step step;
	struct store *store;
	struct plan *plan;
	struct ccapi_import *enc;
	struct batch *building;
	FILE *spool;
	bool rewound, exhausted;
	struct ccapi_field extra[PLAN_MAX_FIELDS + 3];

	/* outputs of the last step */
	int r;
	char err[512];
	uint64_t selected;
	struct plan_counters counters;
	bool pass1_done;
	struct creject *crej;
	size_t n_crej, cap_crej;
	struct arena crej_s;
	struct batch *out;
	struct departed *departed;
	size_t n_departed;
};

struct watcher {
	struct watcher *next;
	runner_progress_fn fn;
	void *userdata;
	bool removed;
};

enum stop_kind {
	STOP_NONE,
	STOP_FAIL,
	STOP_INTERRUPT,
	STOP_CANCEL,
};

struct run {
	struct runner *runner;
	struct run *prev, *next; /* the runner's active runs */
	bool linked;
	unsigned refs;

	int64_t run_id, export_id, connection_id, resumed_from;
	char *export_name;
	enum store_data_trigger trigger;
	bool dry_run, full, force, mirror;
	double max_remove_share;
	char list_id[CCAPI_ID_LEN + 1];
	enum store_data_run_state state;
	enum runner_phase phase;
	struct watcher *watchers;
	unsigned emitting;

	enum stop_kind stop;
	char *stop_msg;
	bool finalized;
	char *final_error; /* for the final progress */

	unsigned n_requests;
	bool work_active;
	uv_work_t work;
	struct planner pl;
	char post_owner, wait_owner; /* distinct addresses: client cancellation groups */

	/* plan */
	struct plan_counters pc;
	int64_t list_membership;
	uint64_t *members; /* sorted email hashes of the list's members before the run (mirror) */
	size_t n_members, cap_members;
	char *page_next;

	/* sending */
	struct batch *batches; /* posted or waiting */
	unsigned n_unconfirmed;
	int64_t batch_no;
	unsigned n_failed, n_batches;
	char *first_batch_error;
	int64_t cannot_add;
	unsigned n_resume_waits;
	bool single, plan_final;
	bool plan_closing, plan_closed; /* STEP_CLOSE queued / done */
	int64_t confirmed_synced, confirmed_rejected, plan_rejected;

	/* mirror removals */
	struct departed *departed;
	size_t n_departed, next_lookup, n_lookups, next_chunk;
	const char **found_ids, **found_emails, **missing_emails;
	size_t n_found, n_missing;

	/* mirror removals through the staging list */
	enum stage stage;
	bool removals_planned; /* the stage's removal batches are all cut (removals_done may act) */
	bool staging_wanted;   /* the plan ended with departed contacts and the guard let them go */
	struct store_mirror_staging staging;
	size_t staging_next;			/* next departed contact to import */
	int64_t staging_persons, staging_cannot_add; /* summed over the staging imports */

	uint64_t confirm_cpu_ns; /* loop CPU in batch confirmation (debug summary) */

	/* progress */
	struct store_data_counters counters;
	uint64_t send_start_ms;
	int64_t sent_at_start;
};

struct settings {
	uint32_t max_concurrent;
	uint32_t max_profiles;
	double mirror_share;
	uint32_t batch_max_contacts;
	uint32_t batch_max_bytes;
	uint32_t run_retention_days;
	uint32_t rejected_retention_days;
	/* MEMBER_PAGES_MAX; the tests lower it (CCSYNC_TEST_MEMBER_PAGES_MAX) to reach the
	 * large-list rules with a few hundred contacts. */
	uint64_t member_pages_max;
};

struct runner {
	uv_loop_t *loop;
	struct store *store;
	struct ccclient *cc;
	char *db_path;
	struct settings cfg;

	struct run *head, *tail; /* active runs (queued, running), in request order */
	unsigned n_running;
	unsigned n_allocated; /* run structs alive, linked or lingering */

	uv_timer_t kick;
	/*
	 * Ends of runs the store refused to record (database locked past the busy timeout, disk
	 * full): retried from the kick timer every second, so the history never shows a finished run
	 * as running and the export is not blocked by it.
	 */
	struct unrecorded_end {
		int64_t run_id;
		enum store_data_run_state state;
		char error[1024];
	} unrecorded[16];
	size_t n_unrecorded;
	uv_timer_t drain_timer;
	unsigned pending_closes;
	bool draining, drain_timed_out, closing;
	runner_done_fn drain_done;
	void *drain_userdata;
	runner_done_fn on_closed;
	void *closed_userdata;
};

static const char *const phase_names[_RUNNER_PHASE_MAX] = {
	[RUNNER_PHASE_QUEUED] = "queued",     [RUNNER_PHASE_CHECKING] = "checking",
	[RUNNER_PHASE_PLANNING] = "planning", [RUNNER_PHASE_WAITING] = "waiting",
	[RUNNER_PHASE_SENDING] = "sending",   [RUNNER_PHASE_REMOVING] = "removing",
	[RUNNER_PHASE_FINISHED] = "finished",
};

const char *runner_phase_to_string(enum runner_phase p)
{
	if ((unsigned)p >= _RUNNER_PHASE_MAX)
		return NULL;
	return phase_names[p];
}

static void run_check_done(struct run *run);
static void run_stop(struct run *run, enum stop_kind kind, int r, const char *fmt, ...)
	_printf_(4, 5);
static void send_pump(struct run *run);
static void remove_pump(struct run *run);
static void removals_done(struct run *run);
static int staging_record(struct run *run, const char *pending, bool is_empty, bool dirty);
static void staging_prepare_early(struct run *run);
static void runner_kick(struct runner *r);
static void on_kick(uv_timer_t *t);
static void runner_maybe_done(struct runner *r);
static void on_handle_closed(uv_handle_t *h);

/* ------------------------------------------------------------------ batches */

static struct batch *batch_free(struct batch *b)
{
	if (!b)
		return NULL;
	free(b->body);
	free(b->c);
	free(b->rej);
	arena_done(&b->s);
	free(b->ids);
	free(b->emails);
	free(b);
	return NULL;
}

static void batches_free_list(struct batch *b)
{
	while (b) {
		struct batch *next = b->next;

		batch_free(b);
		b = next;
	}
}

/* ------------------------------------------------------------------ planner (pool thread) */

static void planner_reject_add(struct planner *pl, const char *profile_id, const char *email,
			       const char *code, const char *reason, uint64_t hash, bool permanent)
{
	struct creject *c;

	if (pl->r < 0)
		return;
	pl->r = grow((void **)&pl->crej, &pl->cap_crej, pl->n_crej + 1, sizeof(*pl->crej));
	if (pl->r < 0)
		return;
	c = &pl->crej[pl->n_crej];
	*c = (struct creject){ .hash = hash, .permanent = permanent };
	if ((pl->r = arena_add(&pl->crej_s, profile_id, &c->profile_id)) < 0 ||
	    (pl->r = arena_add(&pl->crej_s, email, &c->email)) < 0 ||
	    (pl->r = arena_add(&pl->crej_s, code, &c->code)) < 0 ||
	    (pl->r = arena_add(&pl->crej_s, reason, &c->reason)) < 0)
		return;
	pl->n_crej++;
}

static void planner_step_plan(struct planner *pl)
{
	struct plan_options o = {
		.full_resend = pl->full,
		.resume_run_ids = pl->resume_ids,
		.n_resume_run_ids = pl->n_resume_ids,
		.items = (pl->single ? PLAN_ITEM_SEND : 0) | PLAN_ITEM_REJECT |
			 (pl->mirror ? PLAN_ITEM_DEPART : 0),
		.max_selected = pl->max_selected,
	};
	const char *list_ids[1] = { pl->list_id };
	char inner[384];
	int r;

	r = store_open(pl->db_path, STORE_OPEN_ONE_THREAD, 5000, &pl->store, inner, sizeof(inner));
	if (r < 0) {
		pl->r = set_error(pl->err, sizeof(pl->err), r, "opening the database: %s", inner);
		return;
	}
	r = plan_new(pl->store, pl->export_id, &o, &pl->plan, inner, sizeof(inner));
	if (r == -E2BIG) {
		pl->r = set_error(pl->err, sizeof(pl->err), r, "%s", inner);
		return;
	}
	if (r < 0) {
		pl->r = set_error(pl->err, sizeof(pl->err), r, "planning failed: %s", inner);
		return;
	}
	pl->selected = plan_selected(pl->plan);
	pl->rewound = pl->single;
	r = ccapi_import_begin(list_ids, 1, pl->max_contacts, pl->max_bytes, &pl->enc, inner,
			       sizeof(inner));
	if (r < 0) {
		pl->r = set_error(pl->err, sizeof(pl->err), r, "batch encoder: %s", inner);
		return;
	}
	if (pl->mirror) {
		/* Unlinked at once by tmpfile(): nothing to clean up after a crash. */
		pl->spool = tmpfile();
		if (!pl->spool) {
			pl->r = set_error(pl->err, sizeof(pl->err), -errno,
					  "cannot create a temporary file for departed "
					  "contacts: %m");
			return;
		}
	}
}

static int spool_put(FILE *f, const char *s)
{
	uint32_t n = s ? (uint32_t)strlen(s) : UINT32_MAX;

	if (fwrite(&n, sizeof(n), 1, f) != 1 || (s && n && fwrite(s, n, 1, f) != 1))
		return -EIO;
	return 0;
}

static int spool_get(FILE *f, char **ret)
{
	uint32_t n;
	char *s;

	if (fread(&n, sizeof(n), 1, f) != 1)
		return feof(f) ? 0 : -EIO;
	if (n == UINT32_MAX) {
		*ret = NULL;
		return 1;
	}
	s = malloc((size_t)n + 1);
	if (!s)
		return -ENOMEM;
	if (n && fread(s, n, 1, f) != 1) {
		free(s);
		return -EIO;
	}
	s[n] = '\0';
	*ret = s;
	return 1;
}

/* Spools a departed contact ccsync added (a removal candidate); 0 or negative errno (pl->r). */
static int planner_spool_depart(struct planner *pl, const struct plan_item *it)
{
	if (!it->added_by_ccsync || !pl->spool)
		return 0;
	if (spool_put(pl->spool, it->email) < 0 || spool_put(pl->spool, it->contact_id) < 0)
		return pl->r = set_error(pl->err, sizeof(pl->err), -EIO,
					 "writing departed contacts to a temporary file: %m");
	return 0;
}

/* At the end of the plan: the departed contacts are complete on disk. */
static int planner_spool_flush(struct planner *pl)
{
	if (pl->spool && fflush(pl->spool) != 0)
		return pl->r = set_error(pl->err, sizeof(pl->err), -EIO,
					 "writing departed contacts to a temporary file: %m");
	return 0;
}

static void planner_step_pass1(struct planner *pl)
{
	const struct plan_item *it;
	char inner[384];
	int r;

	pl->n_crej = 0;
	pl->crej_s.len = 0;
	while (pl->n_crej < REJECT_CHUNK) {
		if (atomic_load(&pl->cancel)) {
			pl->r = -ECANCELED;
			return;
		}
		r = plan_next(pl->plan, &it, inner, sizeof(inner));
		if (r < 0) {
			pl->r = set_error(pl->err, sizeof(pl->err), r, "planning failed: %s",
					  inner);
			return;
		}
		if (r == 0) {
			pl->pass1_done = true;
			pl->counters = *plan_counters(pl->plan);
			planner_spool_flush(pl);
			return;
		}
		if (it->kind == PLAN_ITEM_REJECT) {
			planner_reject_add(pl, it->profile_id, it->email, it->reason_code,
					   it->reason_text, it->fields_hash,
					   it->reason != PLAN_REASON_PROFILE_MISSING);
			if (pl->r < 0) {
				set_error(pl->err, sizeof(pl->err), pl->r, "out of memory");
				return;
			}
		} else if (it->kind == PLAN_ITEM_DEPART && planner_spool_depart(pl, it) < 0) {
			return;
		}
	}
}

static const char *encoder_reason_code(int r)
{
	switch (r) {
	case -E2BIG:
		return "contact_too_large";
	case -EMSGSIZE:
		return "field_too_long";
	default:
		return "field_invalid";
	}
}

/*
 * Encodes one plan item into b. 0 added; -ENOSPC batch full (b unchanged); another negative
 * errno: the encoder refused this contact (message in err) or ran out of memory (-ENOMEM).
 */
static int batch_encode(struct planner *pl, struct batch *b, const struct plan_item *it, char *err,
			size_t errlen)
{
	const char *first = NULL, *last = NULL;
	size_t n_extra = 0;
	struct bcontact *c;
	int r;

	for (size_t i = 1; i < it->n_fields; i++) {
		const struct plan_field *f = &it->fields[i];

		if (streq(f->key, "first_name"))
			first = f->value;
		else if (streq(f->key, "last_name"))
			last = f->value;
		else if (n_extra < ELEMENTSOF(pl->extra))
			pl->extra[n_extra++] = (struct ccapi_field){ f->key, f->value };
	}
	r = ccapi_import_add(pl->enc, it->email, first, last, pl->extra, n_extra, err, errlen);
	if (r < 0)
		return r;
	if (grow((void **)&b->c, &b->cap_c, b->n_c + 1, sizeof(*b->c)) < 0)
		return -ENOMEM;
	c = &b->c[b->n_c];
	*c = (struct bcontact){ .hash = it->fields_hash, .is_new = it->is_new };
	if (arena_add(&b->s, it->email, &c->email) < 0 ||
	    arena_add(&b->s, it->profile_id, &c->profile_id) < 0)
		return -ENOMEM;
	b->n_c++;
	return 0;
}

static int batch_refuse(struct batch *b, const struct plan_item *it, int why, const char *reason)
{
	struct breject *x;

	if (grow((void **)&b->rej, &b->cap_rej, b->n_rej + 1, sizeof(*b->rej)) < 0)
		return -ENOMEM;
	x = &b->rej[b->n_rej];
	*x = (struct breject){ .hash = it->fields_hash };
	if (arena_add(&b->s, it->email, &x->email) < 0 ||
	    arena_add(&b->s, it->profile_id, &x->profile_id) < 0 ||
	    arena_add(&b->s, encoder_reason_code(why), &x->code) < 0 ||
	    arena_add(&b->s, reason, &x->reason) < 0)
		return -ENOMEM;
	b->n_rej++;
	return 0;
}

/*
 * A batch sized for a full load up front: growing by doubling would leave up to half of each
 * array unused, times the window of batches in flight.
 */
static struct batch *batch_new(const struct planner *pl)
{
	size_t n = pl->max_contacts ? pl->max_contacts : 1;
	struct batch *b;

	if (n > CCAPI_IMPORT_MAX_CONTACTS)
		n = CCAPI_IMPORT_MAX_CONTACTS;
	b = calloc(1, sizeof(*b));
	if (!b)
		return NULL;
	b->c = malloc(n * sizeof(*b->c));
	/* ~32 bytes of email and profile id per contact; the arena grows if that is short. */
	b->s.buf = malloc(n * 32);
	if (!b->c || !b->s.buf)
		return batch_free(b);
	b->cap_c = n;
	b->s.cap = n * 32;
	return b;
}

static int batch_seal(struct planner *pl, struct batch *b)
{
	return ccapi_import_finish(pl->enc, &b->body, &b->len);
}

/* Seals *cur as the batch to hand out (*done) and opens the next one in *cur. */
static int batch_cut(struct planner *pl, struct batch **cur, struct batch **done)
{
	int r = batch_seal(pl, *cur);

	if (r < 0)
		return r;
	*done = *cur;
	*cur = batch_new(pl);
	return *cur ? 0 : -ENOMEM;
}

/*
 * Fills the next batch. A batch is cut when the encoder says it is full; the contact that did
 * not fit opens the next batch, which stays in pl->building for the next step. Contacts the
 * encoder refuses ride along in the batch being returned as rejections, so that every batch that
 * reaches the loop has at least one contact to send whenever the plan has any.
 */
static void planner_step_encode(struct planner *pl)
{
	struct batch *cur = pl->building, *done = NULL;
	const struct plan_item *it;
	char inner[384];
	int r;

	pl->building = NULL;
	pl->out = NULL;
	pl->n_crej = 0;
	pl->crej_s.len = 0;
	if (!pl->rewound) {
		r = plan_rewind(pl->plan, PLAN_ITEM_SEND, inner, sizeof(inner));
		if (r < 0) {
			pl->r = set_error(pl->err, sizeof(pl->err), r, "planning failed: %s",
					  inner);
			return;
		}
		pl->rewound = true;
	}
	if (!cur) {
		cur = batch_new(pl);
		if (!cur)
			goto oom;
	}
	for (;;) {
		if (atomic_load(&pl->cancel)) {
			pl->r = -ECANCELED;
			goto fail;
		}
		r = plan_next(pl->plan, &it, inner, sizeof(inner));
		if (r < 0) {
			pl->r = set_error(pl->err, sizeof(pl->err), r, "planning failed: %s",
					  inner);
			goto fail;
		}
		if (r == 0) {
			pl->exhausted = true;
			pl->pass1_done = true;
			pl->counters = *plan_counters(pl->plan);
			if (planner_spool_flush(pl) < 0)
				goto fail;
			break;
		}
		if (it->kind == PLAN_ITEM_DEPART) {
			/* The single pass of a mirror run (two-pass runs spool in pass 1). */
			if (planner_spool_depart(pl, it) < 0)
				goto fail;
			/* Every member is read: the contacts encoded so far go out now, so that
			 * their import runs while the rest of sync_state is searched for the
			 * departed, instead of after it. */
			if (!done && cur->n_c > 0) {
				if (batch_cut(pl, &cur, &done) < 0)
					goto oom;
				break;
			}
			continue;
		}
		if (it->kind == PLAN_ITEM_REJECT) {
			planner_reject_add(pl, it->profile_id, it->email, it->reason_code,
					   it->reason_text, it->fields_hash,
					   it->reason != PLAN_REASON_PROFILE_MISSING);
			if (pl->r < 0)
				goto oom;
			/* Bounded memory: hand a full chunk over even mid-batch. */
			if (pl->n_crej >= REJECT_CHUNK && !done)
				break;
			continue;
		}
		r = batch_encode(pl, cur, it, inner, sizeof(inner));
		if (r == -ENOSPC && !done) {
			if (batch_cut(pl, &cur, &done) < 0)
				goto oom;
			r = batch_encode(pl, cur, it, inner, sizeof(inner));
		}
		if (r == 0) {
			if (done)
				break;
			continue;
		}
		if (r == -ENOMEM)
			goto oom;
		r = batch_refuse(done ? done : cur, it, r, inner);
		if (r < 0)
			goto oom;
	}
	/* Unless the plan ended, we stopped at a cut: cur holds the contact that did not fit
	 * and opens the next batch. */
	if (pl->exhausted) {
		if (done) {
			/* cur got no contact since the cut; its refusals went to done. */
			cur = batch_free(cur);
		} else if (cur->n_c > 0) {
			r = batch_seal(pl, cur);
			if (r < 0)
				goto oom;
			done = TAKE_PTR(cur);
		} else if (cur->n_rej > 0) {
			done = TAKE_PTR(cur); /* refused contacts only: no request to make */
		} else {
			cur = batch_free(cur);
		}
	}
	pl->building = cur;
	pl->out = done;
	return;
oom:
	pl->r = set_error(pl->err, sizeof(pl->err), -ENOMEM, "out of memory while encoding");
fail:
	batch_free(cur);
	batch_free(done);
}

static int cmp_departed(const void *a, const void *b)
{
	return strcmp(((const struct departed *)a)->email, ((const struct departed *)b)->email);
}

static void planner_release(struct planner *pl)
{
	pl->plan = plan_free(pl->plan);
	pl->store = store_free(pl->store);
	pl->enc = ccapi_import_free(pl->enc);
	pl->building = batch_free(pl->building);
}

/* Ends the snapshot and loads the spooled departed contacts, sorted by email. */
static void planner_step_close(struct planner *pl)
{
	size_t cap = 0;

	planner_release(pl);
	if (!pl->spool)
		return;
	rewind(pl->spool);
	for (;;) {
		char *email = NULL, *id = NULL;
		int r = spool_get(pl->spool, &email);

		if (r > 0)
			r = spool_get(pl->spool, &id);
		if (r <= 0) {
			free(email);
			if (r < 0)
				pl->r = set_error(pl->err, sizeof(pl->err), r,
						  "reading departed contacts back: %s",
						  strerror(-r));
			break;
		}
		if (!email || grow((void **)&pl->departed, &cap, pl->n_departed + 1,
				   sizeof(*pl->departed)) < 0) {
			free(email);
			free(id);
			pl->r = set_error(pl->err, sizeof(pl->err), email ? -ENOMEM : -EIO,
					  "reading departed contacts back failed");
			break;
		}
		pl->departed[pl->n_departed++] = (struct departed){ email, id };
	}
	fclose(pl->spool);
	pl->spool = NULL;
	if (pl->n_departed > 1)
		qsort(pl->departed, pl->n_departed, sizeof(*pl->departed), cmp_departed);
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_work(uv_work_t *w)
{
	struct run *run = container_of(w, struct run, work);
	struct planner *pl = &run->pl;
	uint64_t t0 = thread_cpu_ns();

	pl->r = 0;
	pl->err[0] = '\0';
	switch (pl->step) {
	case STEP_PLAN:
		planner_step_plan(pl);
		break;
	case STEP_PASS1:
		planner_step_pass1(pl);
		break;
	case STEP_ENCODE:
		planner_step_encode(pl);
		break;
	case STEP_CLOSE:
		planner_step_close(pl);
		break;
	default:
		break;
	}
	pl->cpu_ns[pl->step] += thread_cpu_ns() - t0;
}

/* ------------------------------------------------------------------ run lifetime */

static void departed_free(struct departed *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(d[i].email);
		free(d[i].contact_id);
	}
	free(d);
}

static void run_free(struct run *run)
{
	struct runner *r = run->runner;
	struct watcher *w;

	planner_release(&run->pl);
	if (run->pl.spool)
		fclose(run->pl.spool);
	batch_free(run->pl.out);
	free(run->pl.crej);
	arena_done(&run->pl.crej_s);
	departed_free(run->pl.departed, run->pl.n_departed);
	free(run->pl.resume_ids);
	batches_free_list(run->batches);
	departed_free(run->departed, run->n_departed);
	free(run->found_ids);
	free(run->found_emails);
	free(run->missing_emails);
	free(run->members);
	free(run->page_next);
	while ((w = run->watchers)) {
		run->watchers = w->next;
		free(w);
	}
	free(run->export_name);
	free(run->stop_msg);
	free(run->final_error);
	free(run->first_batch_error);
	free(run);
	r->n_allocated--;
	runner_maybe_done(r);
}

static void run_unref(struct run *run)
{
	if (--run->refs == 0)
		run_free(run);
}

static void run_link(struct runner *r, struct run *run)
{
	run->prev = r->tail;
	run->next = NULL;
	if (r->tail)
		r->tail->next = run;
	else
		r->head = run;
	r->tail = run;
	run->linked = true;
	run->refs++;
}

static void run_unlink(struct run *run)
{
	struct runner *r = run->runner;

	if (!run->linked)
		return;
	if (run->prev)
		run->prev->next = run->next;
	else
		r->head = run->next;
	if (run->next)
		run->next->prev = run->prev;
	else
		r->tail = run->prev;
	run->prev = run->next = NULL;
	run->linked = false;
	run_unref(run);
}

static struct run *run_find(struct runner *r, int64_t run_id)
{
	for (struct run *run = r->head; run; run = run->next)
		if (run->run_id == run_id)
			return run;
	return NULL;
}

static struct log_fields run_fields(const struct run *run, const char *message_id)
{
	return (struct log_fields){ .export_id = run->export_id, .run_id = run->run_id,
				    .connection_id = run->connection_id,
				    .message_id = message_id };
}

/* Compound literals cannot be macro arguments (their commas split them): a helper instead. */
#define run_log(run, level, mid, ...)                                                              \
	do {                                                                                       \
		struct log_fields run_log_f_ = run_fields((run), (mid));                           \
		log_full((level), &run_log_f_, __VA_ARGS__);                                       \
	} while (0)

static struct ccclient_call run_call(struct run *run, const void *owner)
{
	return (struct ccclient_call){ .connection_id = run->connection_id, .owner = owner,
				       .run_id = run->run_id, .export_id = run->export_id };
}

/* Every accepted client request holds a reference until its callback. */
static void request_begin(struct run *run)
{
	run->n_requests++;
	run->refs++;
}

/* Returns true when the run is finished and the callback should stop. */
static bool request_end(struct run *run)
{
	run->n_requests--;
	return run->finalized;
}

/* A request the client refused outright (r < 0, message in err): undoes request_begin and stops
 * the run with "<what>: <err>". */
static void request_refused(struct run *run, int r, const char *what, const char *err)
{
	request_end(run);
	run_unref(run);
	run_stop(run, STOP_FAIL, r, "%s: %s", what, err);
}

/* Requests the page run->page_next (NULL: the first) of list_id's members, for cb. */
static void list_page_fetch(struct run *run, const char *list_id, ccclient_done_fn cb,
			    const char *what)
{
	struct ccclient_call call = run_call(run, run);
	char err[512];
	int r;

	request_begin(run);
	r = ccclient_contacts_by_list(run->runner->cc, &call, list_id, run->page_next, cb, run,
				      err, sizeof(err));
	if (r < 0)
		request_refused(run, r, what, err);
}

/* Keeps a page's next link in run->page_next: 1 when there is one, 0 at the last page, or
 * -ENOMEM (the run stopped). */
static int page_advance(struct run *run, const char *next)
{
	free(run->page_next);
	run->page_next = next ? strdup(next) : NULL;
	if (next && !run->page_next) {
		run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
		return -ENOMEM;
	}
	return next ? 1 : 0;
}

/* ------------------------------------------------------------------ progress */

static void run_refresh_counters(struct run *run)
{
	struct store_data_run *sr = NULL;

	if (store_data_run_get(run->runner->store, run->run_id, &sr, NULL, 0) >= 0) {
		run->counters = sr->counters;
		store_data_run_free(sr);
	}
}

static void run_fill_progress(struct run *run, struct runner_progress *p)
{
	uint64_t now = uv_now(run->runner->loop);

	*p = (struct runner_progress){
		.run_id = run->run_id,
		.export_id = run->export_id,
		.connection_id = run->connection_id,
		.export_name = run->export_name,
		.trigger = run->trigger,
		.dry_run = run->dry_run,
		.state = run->state,
		.phase = run->phase,
		.counters = run->counters,
		.plan_adds = run->pc.to_send_new,
		.plan_updates = run->pc.to_send - run->pc.to_send_new,
		.plan_removals = run->pc.departed_ours,
		.cannot_add = run->cannot_add,
		.eta_seconds = -1,
		.error = run->final_error,
		.final = run->finalized,
	};
	if (run->send_start_ms && now > run->send_start_ms) {
		double secs = (double)(now - run->send_start_ms) / 1000.0;
		int64_t done = run->counters.sent - run->sent_at_start;

		p->rate_per_second = done > 0 ? (double)done / secs : 0;
		if (p->rate_per_second > 0 && !run->finalized)
			p->eta_seconds = (int64_t)((double)run->counters.pending /
						   p->rate_per_second + 0.999);
	}
}

static void run_emit(struct run *run)
{
	struct runner_progress p;
	struct watcher **pw;

	if (!run->watchers)
		return;
	run_fill_progress(run, &p);
	run->refs++;
	run->emitting++;
	for (struct watcher *w = run->watchers; w; w = w->next) {
		/* A watcher may cancel the run: nothing older than its final state goes out. */
		if (w->removed || (run->finalized && !p.final))
			continue;
		w->fn(&p, w->userdata);
	}
	run->emitting--;
	if (!run->emitting) {
		for (pw = &run->watchers; *pw;) {
			struct watcher *w = *pw;

			if (w->removed || run->finalized) {
				*pw = w->next;
				free(w);
			} else {
				pw = &w->next;
			}
		}
	}
	run_unref(run);
}

static void run_set_phase(struct run *run, enum runner_phase phase)
{
	run->phase = phase;
	run_refresh_counters(run);
	run_emit(run);
}

/* ------------------------------------------------------------------ finishing */

static void run_finalize(struct run *run)
{
	struct runner *r = run->runner;
	enum store_data_run_state to;
	const char *msg = NULL, *mid;
	char buf[1024];
	struct log_fields f;
	int level, rr;

	if (run->finalized)
		return;
	run_refresh_counters(run);
	switch (run->stop) {
	case STOP_CANCEL:
		to = STORE_DATA_RUN_CANCELLED;
		msg = run->stop_msg;
		break;
	case STOP_INTERRUPT:
		to = STORE_DATA_RUN_INTERRUPTED;
		msg = run->stop_msg;
		break;
	case STOP_FAIL:
		to = STORE_DATA_RUN_FAILED;
		msg = run->stop_msg;
		break;
	default:
		if (run->n_failed > 0) {
			to = STORE_DATA_RUN_FAILED;
			snprintf(buf, sizeof(buf),
				 "%u of %u batches failed (first: %s); their contacts were not "
				 "confirmed and are sent (or removed) again by the next run",
				 run->n_failed, run->n_batches,
				 run->first_batch_error ? run->first_batch_error : "unknown error");
			msg = buf;
		} else if (run->counters.rejected > 0) {
			to = STORE_DATA_RUN_PARTIALLY_SUCCEEDED;
		} else {
			to = STORE_DATA_RUN_SUCCEEDED;
		}
		if (run->dry_run) {
			snprintf(buf, sizeof(buf),
				 "dry run: would add %" PRIu64 ", update %" PRIu64 " and remove %"
				 PRIu64 " contacts (%" PRId64 " rejected rows); nothing was sent",
				 run->pc.to_send_new, run->pc.to_send - run->pc.to_send_new,
				 run->pc.departed_ours, run->counters.rejected);
			msg = buf;
		}
	}
	if (run->state == STORE_DATA_RUN_QUEUED && to != STORE_DATA_RUN_CANCELLED) {
		/* Only a drain or close ends a queued run without cancelling it: it stays queued in
		 * the database and starts at the next start. */
		to = STORE_DATA_RUN_QUEUED;
	} else {
		char inner[256];

		rr = store_data_run_set_state(r->store, run->run_id, to, msg, inner, sizeof(inner));
		if (rr < 0) {
			run_log(run, LOG_ERR, NULL,
				 "Recording the end of run %" PRId64 " failed: %s; retrying",
				 run->run_id, inner);
			if (r->n_unrecorded < ELEMENTSOF(r->unrecorded)) {
				struct unrecorded_end *u = &r->unrecorded[r->n_unrecorded++];

				u->run_id = run->run_id;
				u->state = to;
				snprintf(u->error, sizeof(u->error), "%s", msg ? msg : "");
				if (!r->draining && !r->closing)
					(void)uv_timer_start(&r->kick, on_kick, 1000, 0);
			}
		}
	}
	if (run->state == STORE_DATA_RUN_RUNNING && r->n_running > 0)
		r->n_running--;
	run->state = to;
	run->finalized = true;
	run->phase = RUNNER_PHASE_FINISHED;
	if (msg) {
		free(run->final_error);
		run->final_error = strdup(msg);
	}
	run_refresh_counters(run);

	switch (to) {
	case STORE_DATA_RUN_SUCCEEDED:
		level = LOG_INFO, mid = CCSYNC_MSG_RUN_SUCCEEDED;
		break;
	case STORE_DATA_RUN_PARTIALLY_SUCCEEDED:
		level = LOG_WARNING, mid = CCSYNC_MSG_RUN_PARTIAL;
		break;
	case STORE_DATA_RUN_FAILED:
		level = LOG_ERR, mid = CCSYNC_MSG_RUN_FAILED;
		break;
	case STORE_DATA_RUN_CANCELLED:
		level = LOG_NOTICE, mid = CCSYNC_MSG_RUN_CANCELLED;
		break;
	case STORE_DATA_RUN_INTERRUPTED:
		level = LOG_WARNING, mid = CCSYNC_MSG_RUN_INTERRUPTED;
		break;
	default:
		level = -1, mid = NULL;
	}
	if (level >= 0) {
		const struct store_data_counters *c = &run->counters;

		f = run_fields(run, mid);
		log_full(level, &f,
			 "Run %" PRId64 " of export \"%s\" %s%s: selected %" PRId64
			 ", sent %" PRId64 ", rejected %" PRId64 ", unchanged %" PRId64
			 ", removed %" PRId64 ", pending %" PRId64 ", not added (unsubscribed) %"
			 PRId64 "%s%s",
			 run->run_id, run->export_name ? run->export_name : "?",
			 store_data_run_state_to_string(to), run->dry_run ? " (dry run)" : "",
			 c->selected, c->sent, c->rejected, c->unchanged, c->removed, c->pending,
			 run->cannot_add, msg ? ": " : "", msg ? msg : "");
		/* Only read when a step is not running (finalize may race a cancelled step). */
		if (!run->work_active)
			run_log(run, LOG_DEBUG, NULL,
				"Run %" PRId64 ": %u batches; CPU: plan %.3f s, pass 1 %.3f s, "
				"pass 2 and encoding %.3f s, confirmation %.3f s",
				run->run_id, run->n_batches,
				(double)run->pl.cpu_ns[STEP_PLAN] / 1e9,
				(double)run->pl.cpu_ns[STEP_PASS1] / 1e9,
				(double)run->pl.cpu_ns[STEP_ENCODE] / 1e9,
				(double)run->confirm_cpu_ns / 1e9);
		if (r->cfg.run_retention_days > 0 || r->cfg.rejected_retention_days > 0) {
			struct store_data_purge_result pr = { 0 };
			char inner[256];

			if (store_data_purge(r->store, r->cfg.run_retention_days,
					     r->cfg.rejected_retention_days, &pr, inner,
					     sizeof(inner)) < 0)
				log_warning("Purging old run history failed: %s, ignoring", inner);
			else if (pr.runs || pr.rejected_rows)
				log_debug("Purged %" PRId64 " old runs and %" PRId64
					  " rejected rows", pr.runs, pr.rejected_rows);
		}
	}
	/* Stop any step still on the pool; its results are discarded when it returns. */
	atomic_store(&run->pl.cancel, true);
	run->refs++;
	run_emit(run);
	run_unlink(run);
	run_unref(run);
	runner_kick(r);
	runner_maybe_done(r);
}

/* Finalizes a stopping run once nothing it waits for is outstanding. */
static void run_check_done(struct run *run)
{
	if (run->finalized || run->stop == STOP_NONE)
		return;
	if (run->n_requests > 0)
		return;
	run_finalize(run);
}

_printf_(4, 0) static void run_stop_v(struct run *run, enum stop_kind kind, int r, const char *fmt,
				      va_list ap)
{
	struct runner *rn = run->runner;
	char buf[1024];

	(void)r;
	if (run->finalized)
		return;
	/* The first failure's message stays; cancel and interrupt outrank a failure. */
	if (run->stop != STOP_NONE && kind <= run->stop)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	if (kind == STOP_FAIL) {
		struct log_fields f = run_fields(run, NULL);

		log_full(LOG_DEBUG, &f, "Run %" PRId64 " stops: %s", run->run_id, buf);
	}
	free(run->stop_msg);
	run->stop_msg = strdup(buf);
	run->stop = kind;
	atomic_store(&run->pl.cancel, true);
	run->refs++;
	/* Lookups, list reads and resume waits are never worth finishing. */
	ccclient_cancel_owner(rn->cc, run);
	if (kind >= STOP_INTERRUPT)
		ccclient_cancel_owner(rn->cc, &run->wait_owner);
	if (kind == STOP_CANCEL || (kind == STOP_INTERRUPT && rn->drain_timed_out))
		ccclient_cancel_owner(rn->cc, &run->post_owner);
	run_check_done(run);
	run_unref(run);
}

static void run_stop(struct run *run, enum stop_kind kind, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	run_stop_v(run, kind, r, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------ pool dispatch */

static void on_work_done(uv_work_t *w, int status);

static void run_queue_step(struct run *run, enum step step)
{
	int r;

	run->pl.step = step;
	run->work_active = true;
	run->refs++;
	r = uv_queue_work(run->runner->loop, &run->work, on_work, on_work_done);
	if (r < 0) {
		run->work_active = false;
		run->refs--;
		run_stop(run, STOP_FAIL, r, "cannot queue work on the thread pool: %s",
			 uv_strerror(r));
	}
}

/* ------------------------------------------------------------------ checks and list */

static void pass1_next(struct run *run);
static void resume_wait_start(struct run *run);

static void on_list(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;

	if (request_end(run) || run->stop != STOP_NONE)
		goto out;
	if (res->error == -ENOENT) {
		run_stop(run, STOP_FAIL, res->error,
			 "Constant Contact list %s of export \"%s\" no longer exists (deleted or "
			 "unknown in the account); edit the export to use an existing list",
			 run->list_id, run->export_name);
		goto out;
	}
	if (res->error < 0) {
		run_stop(run, STOP_FAIL, res->error, "checking list %s failed: %s", run->list_id,
			 res->message[0] ? res->message : strerror(-res->error));
		goto out;
	}
	run->list_membership = res->list ? res->list->membership_count : -1;
	if (run->resumed_from)
		resume_wait_start(run);
	else
		pass1_next(run);
out:
	run_check_done(run);
	run_unref(run);
}

static void list_check(struct run *run)
{
	struct ccclient_call call = run_call(run, run);
	char err[512];
	int r;

	run_set_phase(run, RUNNER_PHASE_CHECKING);
	request_begin(run);
	r = ccclient_list_get(run->runner->cc, &call, run->list_id, on_list, run, err, sizeof(err));
	if (r < 0) {
		request_end(run);
		run_unref(run);
		run_stop(run, STOP_FAIL, r, "checking list %s failed: %s", run->list_id, err);
	}
}

/* ------------------------------------------------------------------ resume */

static void on_resume_wait(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;

	if (request_end(run))
		goto out;
	if (res->error < 0 && res->error != -ECANCELED)
		run_log(run, LOG_INFO, NULL,
			 "Run %" PRId64 ": an activity of interrupted run %" PRId64
			 " ended without success (%s); its contacts are sent again",
			 run->run_id, run->resumed_from,
			 res->message[0] ? res->message : strerror(-res->error));
	if (--run->n_resume_waits == 0 && run->stop == STOP_NONE)
		pass1_next(run);
out:
	run_check_done(run);
	run_unref(run);
}

/*
 * A resumed run first lets the accepted activities of the runs it resumes finish (the whole
 * resume chain: a resume can itself be interrupted): an import still queued at CC would
 * otherwise apply after ours and could put older field values back. Their contacts are not
 * confirmed by this (a batch's contacts are not stored), so the new plan sends them again.
 */
static void resume_wait_start(struct run *run)
{
	struct ccclient_call call = run_call(run, run);
	char err[512];
	int r;

	run->n_resume_waits = 1; /* held until every wait is submitted */
	run_set_phase(run, RUNNER_PHASE_WAITING);
	/* resume_ids[0] is this run itself. */
	for (size_t k = 1; k < run->pl.n_resume_ids && run->stop == STOP_NONE; k++) {
		struct store_data_batch *b = NULL;
		size_t n = 0;

		r = store_data_run_batches(run->runner->store, run->pl.resume_ids[k], &b, &n, err,
					   sizeof(err));
		if (r < 0) {
			run_stop(run, STOP_FAIL, r, "reading the interrupted run's batches: %s",
				 err);
			break;
		}
		for (size_t i = 0; i < n && run->stop == STOP_NONE; i++) {
			if (!b[i].activity_id || (b[i].state != STORE_DATA_BATCH_SUBMITTED &&
						  b[i].state != STORE_DATA_BATCH_ABANDONED))
				continue;
			run->n_resume_waits++;
			request_begin(run);
			r = ccclient_activity_wait(run->runner->cc, &call, b[i].activity_id, 0,
						   on_resume_wait, run, err, sizeof(err));
			if (r < 0) {
				request_end(run);
				run_unref(run);
				run->n_resume_waits--;
				run_log(run, LOG_INFO, NULL,
					"Run %" PRId64 ": not waiting for activity %s: %s",
					run->run_id, b[i].activity_id, err);
			}
		}
		store_data_batches_free(b, n);
	}
	if (--run->n_resume_waits == 0 && run->stop == STOP_NONE)
		pass1_next(run);
}

/* ------------------------------------------------------------------ pass 1 */

static void sending_start(struct run *run);
static int record_plan_totals(struct run *run, char *err, size_t errlen);

/*
 * After the checks: an upsert run reads its plan once, sending as it goes (the plan's sort is
 * the largest CPU cost of a run, so it is paid once). A dry run or a mirror run first counts the
 * whole plan (pass 1: rejected rows, departed contacts, the removal guard) and only then sends
 * (pass 2, a second sort), so that a refused run writes nothing to Constant Contact.
 */
static void pass1_next(struct run *run)
{
	char err[512];
	int r;

	if (run->single && run->mirror && run->list_membership > 0 &&
	    ((uint64_t)run->list_membership + CCAPI_PAGE_LIMIT - 1) / CCAPI_PAGE_LIMIT <=
		    run->runner->cfg.member_pages_max) {
		/* A small list's members are read before the first import when the plan adds
		 * anyone, which only a complete plan tells: two passes (cheap at this size). */
		run->single = run->pl.single = false;
		run->pl.rewound = false;
	}
	if (!run->single) {
		run_set_phase(run, RUNNER_PHASE_PLANNING);
		run_queue_step(run, STEP_PASS1);
		return;
	}
	r = record_plan_totals(run, err, sizeof(err));
	if (r < 0) {
		run_stop(run, STOP_FAIL, r, "recording the plan failed: %s", err);
		return;
	}
	sending_start(run);
}

static void members_start(struct run *run);

static void sending_start(struct run *run)
{
	run_set_phase(run, RUNNER_PHASE_SENDING);
	run->send_start_ms = uv_now(run->runner->loop);
	run->sent_at_start = run->counters.sent;
	staging_prepare_early(run);
	/* Nothing to send: skip the second pass (and its sort) altogether. */
	if (!run->single && run->pc.to_send == 0)
		run->pl.exhausted = true;
	send_pump(run);
}

/*
 * The removal-share guard: true when it stopped the run. Upserts are harmless, so a single-pass
 * mirror run checks it only before its first removal request, after its imports.
 */
static bool removal_guard_trips(struct run *run)
{
	const struct plan_counters *pc = &run->pc;
	char sent[160];
	double share;

	if (!run->mirror || pc->departed_ours == 0 || run->force)
		return false;
	share = run->list_membership > 0 ?
			(double)pc->departed_ours / (double)run->list_membership : 1.0;
	if (share <= run->max_remove_share)
		return false;
	if (run->n_batches > 0)
		snprintf(sent, sizeof(sent),
			 "its %" PRIu64 " adds and updates were sent, but nothing was removed",
			 pc->to_send);
	else
		snprintf(sent, sizeof(sent), "nothing was sent");
	run_stop(run, STOP_FAIL, -EPERM,
		 "mirror guard: the run would remove %" PRIu64 " of the list's %" PRId64
		 " contacts (%.1f%%), more than the allowed %.1f%%; %s. Check the export's "
		 "segments, or run it with --force",
		 pc->departed_ours, run->list_membership > 0 ? run->list_membership : 0,
		 share * 100.0, run->max_remove_share * 100.0, sent);
	return true;
}

static void pass1_done(struct run *run)
{
	const struct plan_counters *pc = &run->pc;
	char err[512];
	int rr;

	run->plan_final = true;
	rr = record_plan_totals(run, err, sizeof(err));
	if (rr < 0) {
		run_stop(run, STOP_FAIL, rr, "recording the plan failed: %s", err);
		return;
	}
	run_refresh_counters(run);
	if (removal_guard_trips(run))
		return;
	if (run->dry_run) {
		run_finalize(run);
		return;
	}
	if (run->mirror && pc->to_send_new > 0 && run->list_membership > 0)
		members_start(run);
	else
		sending_start(run);
}

/*
 * Records the plan's totals. The single pass of an upsert run learns them only at its end, while
 * batches are already being confirmed: until then pending holds everything not yet accounted for
 * (so the counters add up at every moment); at the end the real totals replace it, taking into
 * account what was confirmed meanwhile.
 */
static int record_plan_totals(struct run *run, char *err, size_t errlen)
{
	const struct plan_counters *pc = &run->pc;
	int64_t done = run->confirmed_synced + run->confirmed_rejected;

	if (!run->plan_final)
		return store_data_run_set_plan(run->runner->store, run->run_id,
					       (int64_t)run->pl.selected, 0, run->confirmed_synced,
					       (int64_t)run->pl.selected - done -
						       run->plan_rejected,
					       err, errlen);
	return store_data_run_set_plan(run->runner->store, run->run_id, (int64_t)pc->selected,
				       (int64_t)pc->unchanged,
				       (int64_t)pc->already_sent + run->confirmed_synced,
				       (int64_t)pc->to_send - done, err, errlen);
}

/* Writes the rejected rows a step collected (and, in a single pass, the updated totals) in one
 * transaction. 0 or negative errno (the run has been stopped). */
static int flush_rejections(struct run *run)
{
	struct store *s = run->runner->store;
	struct planner *pl = &run->pl;
	struct store_data_rejection *rows;
	bool final_now = run->single && pl->pass1_done && !run->plan_final;
	char err[512];
	int r;

	if (pl->n_crej == 0 && !final_now)
		return 0;
	rows = calloc(pl->n_crej ? pl->n_crej : 1, sizeof(*rows));
	if (!rows) {
		run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < pl->n_crej; i++) {
		const struct creject *c = &pl->crej[i];

		rows[i] = (struct store_data_rejection){
			.profile_id = arena_str(&pl->crej_s, c->profile_id),
			.email = arena_str(&pl->crej_s, c->email),
			.reason_code = arena_str(&pl->crej_s, c->code),
			.reason = arena_str(&pl->crej_s, c->reason),
			.permanent = c->permanent,
			.fields_hash = c->hash,
		};
	}
	r = store_begin_write(s);
	if (r >= 0 && pl->n_crej > 0)
		r = store_data_rejected_add(s, run->run_id, rows, pl->n_crej, err, sizeof(err));
	else if (r < 0)
		snprintf(err, sizeof(err), "%s", store_errmsg(s));
	if (r >= 0 && run->single) {
		run->plan_rejected += (int64_t)pl->n_crej;
		if (final_now) {
			run->pc = pl->counters;
			run->plan_final = true;
		}
		r = record_plan_totals(run, err, sizeof(err));
	}
	if (r >= 0) {
		r = store_commit(s);
		if (r < 0)
			snprintf(err, sizeof(err), "%s", store_errmsg(s));
	}
	if (r < 0)
		(void)store_rollback(s);
	free(rows);
	pl->n_crej = 0;
	if (r < 0) {
		run_stop(run, STOP_FAIL, r, "recording rejected rows failed: %s", err);
		return r;
	}
	return 0;
}

static void on_pass1(struct run *run)
{
	struct planner *pl = &run->pl;

	if (flush_rejections(run) < 0)
		return;
	if (!pl->pass1_done) {
		run_queue_step(run, STEP_PASS1);
		return;
	}
	run->pc = pl->counters;
	/* The buffers of pass 1 are not needed any more. */
	free(pl->crej);
	pl->crej = NULL;
	pl->cap_crej = 0;
	arena_done(&pl->crej_s);
	pass1_done(run);
}

/* ------------------------------------------------------------------ list members (mirror) */

/*
 * Mirror mode removes only contacts ccsync added to the list. A contact the plan sends as new
 * may already be on the list (added by hand or by a sign-up form): reading the list's members
 * before the first import tells those apart, at one request per 500 members. Above
 * MEMBER_PAGES_MAX pages this is only done while the export has no sync state yet (its first
 * run, when the list's pre-existing members matter most); later joins of such a large list are
 * taken as ccsync's (documented limitation).
 */
static void on_members_page(const struct ccclient_result *res, void *userdata);

/* Common head of the list page callbacks: the page, or NULL when the run stopped (meanwhile or
 * now, on an error named by what). */
static const struct ccapi_contact_page *page_result(struct run *run,
						    const struct ccclient_result *res,
						    const char *what)
{
	if (request_end(run) || run->stop != STOP_NONE)
		return NULL;
	if (res->error < 0 || !res->contacts) {
		run_stop(run, STOP_FAIL, res->error < 0 ? res->error : -EBADMSG, "%s: %s", what,
			 res->message[0] ? res->message : strerror(-res->error));
		return NULL;
	}
	return res->contacts;
}

static void members_fetch(struct run *run)
{
	list_page_fetch(run, run->list_id, on_members_page, "reading the list's members failed");
}

static void on_members_page(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;
	const struct ccapi_contact_page *pg = page_result(run, res,
							 "reading the list's members failed");
	int r;

	if (!pg)
		goto out;
	for (size_t i = 0; i < pg->n; i++) {
		if (!pg->contacts[i].email)
			continue;
		if (grow((void **)&run->members, &run->cap_members, run->n_members + 1,
			 sizeof(*run->members)) < 0) {
			run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
			goto out;
		}
		run->members[run->n_members++] = email_hash(pg->contacts[i].email);
	}
	r = page_advance(run, pg->next);
	if (r != 0) {
		if (r > 0)
			members_fetch(run);
		goto out;
	}
	qsort(run->members, run->n_members, sizeof(*run->members), cmp_u64);
	sending_start(run);
out:
	run_check_done(run);
	run_unref(run);
}

static void members_start(struct run *run)
{
	const struct plan_counters *pc = &run->pc;
	uint64_t pages = ((uint64_t)run->list_membership + CCAPI_PAGE_LIMIT - 1) / CCAPI_PAGE_LIMIT;
	bool first_sync = pc->unchanged == 0 && pc->already_sent == 0 && pc->departed == 0 &&
			  pc->to_send == pc->to_send_new;

	if (pages > run->runner->cfg.member_pages_max && !first_sync) {
		sending_start(run);
		return;
	}
	members_fetch(run);
}

static bool was_member(const struct run *run, const char *email)
{
	uint64_t h;

	if (!run->n_members)
		return false;
	h = email_hash(email);
	return bsearch(&h, run->members, run->n_members, sizeof(h), cmp_u64) != NULL;
}

/* ------------------------------------------------------------------ import batches */

static void batch_unlist(struct run *run, struct batch *b)
{
	for (struct batch **pb = &run->batches; *pb; pb = &(*pb)->next)
		if (*pb == b) {
			*pb = b->next;
			break;
		}
	run->n_unconfirmed--;
	batch_free(b);
}

static void batch_record_failure(struct run *run, struct batch *b, const char *fmt, ...)
	_printf_(3, 4);
static void batch_record_failure(struct run *run, struct batch *b, const char *fmt, ...)
{
	char msg[768], err[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (store_data_batch_fail(run->runner->store, run->run_id, b->batch_no, msg, err,
				  sizeof(err)) < 0)
		log_warning("Recording batch %" PRId64 " of run %" PRId64 " as failed: %s",
			    b->batch_no, run->run_id, err);
	run->n_failed++;
	if (!run->first_batch_error)
		run->first_batch_error = strdup(msg);
}

static void batch_record_abandoned(struct run *run, struct batch *b, const char *why)
{
	char err[256];

	if (store_data_batch_abandon(run->runner->store, run->run_id, b->batch_no, why, err,
				     sizeof(err)) < 0)
		log_warning("Recording batch %" PRId64 " of run %" PRId64 " as abandoned: %s",
			    b->batch_no, run->run_id, err);
}

/* What happens to a batch whose request was cancelled depends on why the run stops. */
static void batch_cancelled(struct run *run, struct batch *b)
{
	if (b->stage == BATCH_WAITING && run->stop == STOP_INTERRUPT) {
		/* Stays submitted with its activity id: the resume run waits for it. */
		return;
	}
	if (run->stop == STOP_CANCEL || run->stop == STOP_INTERRUPT)
		batch_record_abandoned(run, b,
				       b->stage == BATCH_WAITING ?
					       "abandoned: the run stopped while Constant Contact "
					       "processed it; it may still be applied" :
					       "abandoned: the run stopped before Constant Contact "
					       "answered; it may still be applied");
	else
		batch_record_failure(run, b, "request cancelled");
}

static void on_batch_wait(const struct ccclient_result *res, void *userdata);

static void batch_wait(struct run *run, struct batch *b)
{
	struct ccclient_call call = run_call(run, &run->wait_owner);
	char err[512];
	int r;

	b->stage = BATCH_WAITING;
	request_begin(run);
	r = ccclient_activity_wait(run->runner->cc, &call, b->activity_id, 0, on_batch_wait, b, err,
				   sizeof(err));
	if (r < 0) {
		request_end(run);
		run_unref(run);
		batch_record_failure(run, b, "polling activity %s failed: %s", b->activity_id, err);
		batch_unlist(run, b);
	}
}

static void on_batch_posted(const struct ccclient_result *res, void *userdata)
{
	struct batch *b = userdata;
	struct run *run = b->run;
	char err[512];
	int r;

	if (request_end(run)) {
		batch_unlist(run, b);
		goto out;
	}
	if (res->error == -ECANCELED) {
		batch_cancelled(run, b);
		batch_unlist(run, b);
		goto out;
	}
	if (res->error < 0 || !res->activity) {
		int e = res->error < 0 ? res->error : -EBADMSG;
		const char *what = b->kind == STORE_DATA_BATCH_IMPORT ? "import" : "removal";
		int64_t no = b->batch_no;

		batch_record_failure(run, b, "%s request failed: %s", what,
				     res->message[0] ? res->message : strerror(-e));
		batch_unlist(run, b);
		if (e == -ENOENT)
			run_stop(run, STOP_FAIL, e,
				 "Constant Contact list %s of export \"%s\" no longer exists (it "
				 "was deleted during the run); edit the export to use an existing "
				 "list",
				 run->list_id, run->export_name);
		else
			run_stop(run, STOP_FAIL, e, "%s batch %" PRId64 " failed: %s", what, no,
				 res->message[0] ? res->message : strerror(-e));
		goto out;
	}
	snprintf(b->activity_id, sizeof(b->activity_id), "%s", res->activity->activity_id);
	r = store_data_batch_submitted(run->runner->store, run->run_id, b->batch_no,
				       b->activity_id, err, sizeof(err));
	if (r < 0) {
		/* Without the id on disk a crash could not find the activity again: stop here. */
		batch_unlist(run, b);
		run_stop(run, STOP_FAIL, r, "recording activity %s failed: %s",
			 res->activity->activity_id, err);
		goto out;
	}
	/* A removal by the staging list reads it: the next emptying waits for it. */
	if (b->kind == STORE_DATA_BATCH_REMOVE && b->n_ids == 0 &&
	    staging_record(run, b->activity_id, false, true) < 0) {
		batch_unlist(run, b);
		goto out;
	}
	if (run->stop == STOP_INTERRUPT || run->stop == STOP_CANCEL) {
		if (run->stop == STOP_CANCEL)
			batch_record_abandoned(run, b, "abandoned: the run was cancelled; Constant "
						       "Contact may still apply it");
		batch_unlist(run, b);
		goto out;
	}
	batch_wait(run, b);
	run_refresh_counters(run);
	run_emit(run);
out:
	if (!run->finalized && run->stop == STOP_NONE) {
		if (run->phase == RUNNER_PHASE_REMOVING)
			remove_pump(run);
		else
			send_pump(run);
	}
	run_check_done(run);
	run_unref(run);
}

static void batch_post(struct run *run, struct batch *b)
{
	struct ccclient_call call = run_call(run, &run->post_owner);
	char err[512];
	int r;

	b->stage = BATCH_POSTING;
	request_begin(run);
	r = ccclient_import(run->runner->cc, &call, TAKE_PTR(b->body), b->len, on_batch_posted, b,
			    err, sizeof(err));
	if (r < 0) {
		int64_t no = b->batch_no;

		request_end(run);
		run_unref(run);
		batch_record_failure(run, b, "import request refused: %s", err);
		batch_unlist(run, b);
		run_stop(run, STOP_FAIL, r, "import batch %" PRId64 " refused: %s", no, err);
	}
}

/* A contact CC reported in activity_errors: permanent when the data itself is wrong. */
static bool cc_reason_permanent(const char *reason)
{
	return strstr(reason, "invalid") || strstr(reason, "missing") || strstr(reason, "format");
}

static const struct batch *cmp_batch;

static int cmp_contact_email(const void *a, const void *b)
{
	const struct bcontact *x = &cmp_batch->c[*(const uint32_t *)a];
	const struct bcontact *y = &cmp_batch->c[*(const uint32_t *)b];

	return strcmp(arena_str(&cmp_batch->s, x->email), arena_str(&cmp_batch->s, y->email));
}

static int cmp_key_email(const void *key, const void *elem)
{
	const struct bcontact *y = &cmp_batch->c[*(const uint32_t *)elem];

	return strcmp(key, arena_str(&cmp_batch->s, y->email));
}

/*
 * Confirms an import batch: maps CC's per-contact errors ("<email>: reason") back to the batch's
 * contacts, then commits sync state, rejected rows and counters in one transaction. Returns 0,
 * or -EREMOTEIO when the activity reports that the list was gone (nothing was added).
 */
static int batch_confirm(struct run *run, struct batch *b, const struct ccapi_activity *a,
			 char *err, size_t errlen)
{
	_cleanup_free_ struct store_data_sync_entry *synced = NULL;
	_cleanup_free_ struct store_data_rejection *rejected = NULL;
	_cleanup_free_ const char **reason = NULL;
	_cleanup_free_ uint32_t *idx = NULL;
	struct store_data_confirmation conf;
	size_t n_s = 0, n_r = 0, unmapped = 0;
	int r;

	reason = calloc(b->n_c ? b->n_c : 1, sizeof(*reason));
	synced = calloc(b->n_c ? b->n_c : 1, sizeof(*synced));
	rejected = calloc(b->n_c + b->n_rej + 1, sizeof(*rejected));
	if (!reason || !synced || !rejected)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	if (a->n_errors > 0) {
		idx = malloc(b->n_c * sizeof(*idx));
		if (!idx)
			return set_error(err, errlen, -ENOMEM, "out of memory");
		for (size_t i = 0; i < b->n_c; i++)
			idx[i] = (uint32_t)i;
		cmp_batch = b;
		qsort(idx, b->n_c, sizeof(*idx), cmp_contact_email);
		for (size_t i = 0; i < a->n_errors; i++) {
			const struct ccapi_activity_error *e = &a->errors[i];
			uint32_t *hit;

			if (!e->email) {
				if (e->raw && strstr(e->raw, "no longer exists"))
					return set_error(err, errlen, -EREMOTEIO,
							 "Constant Contact did not add the "
							 "contacts: %s",
							 e->raw);
				unmapped++;
				continue;
			}
			hit = bsearch(e->email, idx, b->n_c, sizeof(*idx), cmp_key_email);
			if (!hit) {
				unmapped++;
				continue;
			}
			reason[*hit] = e->reason ? e->reason : e->raw;
		}
		cmp_batch = NULL;
	}
	for (size_t i = 0; i < b->n_c; i++) {
		const struct bcontact *c = &b->c[i];
		const char *email = arena_str(&b->s, c->email);

		if (reason[i]) {
			rejected[n_r++] = (struct store_data_rejection){
				.profile_id = arena_str(&b->s, c->profile_id),
				.email = email,
				.reason_code = "cc_rejected",
				.reason = reason[i],
				.permanent = cc_reason_permanent(reason[i]),
				.fields_hash = c->hash,
			};
			continue;
		}
		synced[n_s++] = (struct store_data_sync_entry){
			.email = email,
			.fields_hash = c->hash,
			.added_by_ccsync = c->is_new && !was_member(run, email),
		};
	}
	for (size_t i = 0; i < b->n_rej; i++) {
		const struct breject *x = &b->rej[i];

		rejected[n_r++] = (struct store_data_rejection){
			.profile_id = arena_str(&b->s, x->profile_id),
			.email = arena_str(&b->s, x->email),
			.reason_code = arena_str(&b->s, x->code),
			.reason = arena_str(&b->s, x->reason),
			.permanent = true,
			.fields_hash = x->hash,
		};
	}
	if (unmapped > 0)
		run_log(run, LOG_WARNING, NULL,
			 "Run %" PRId64 ": %zu errors of activity %s name no contact of the batch; "
			 "those contacts are recorded as sent, ignoring",
			 run->run_id, unmapped, b->activity_id);
	conf = (struct store_data_confirmation){
		.activity_state = a->state_name[0] ? a->state_name : "completed",
		.error_count = a->error_count > 0 ? a->error_count : 0,
		.correctable_count = a->correctable_count > 0 ? a->correctable_count : 0,
		.cannot_add_count =
			a->cannot_add_to_list_count > 0 ? a->cannot_add_to_list_count : 0,
		.synced = synced,
		.n_synced = n_s,
		.rejected = rejected,
		.n_rejected = n_r,
	};
	r = store_data_batch_confirm(run->runner->store, run->run_id, b->batch_no, &conf, err,
				     errlen);
	if (r >= 0) {
		run->cannot_add += conf.cannot_add_count;
		run->confirmed_synced += (int64_t)n_s;
		run->confirmed_rejected += (int64_t)n_r;
	}
	return r;
}

static int removal_confirm(struct run *run, struct batch *b, char *err, size_t errlen)
{
	return store_data_removal_confirm(run->runner->store, run->run_id, b->batch_no, b->emails,
					  b->n_emails, err, errlen);
}

static void on_batch_wait(const struct ccclient_result *res, void *userdata)
{
	struct batch *b = userdata;
	struct run *run = b->run;
	char err[512];
	uint64_t t0;
	int r;

	if (request_end(run)) {
		batch_unlist(run, b);
		goto out;
	}
	if (res->error == -ECANCELED) {
		batch_cancelled(run, b);
		batch_unlist(run, b);
		goto out;
	}
	if (res->error < 0 || !res->activity) {
		const char *state = res->activity && res->activity->state_name[0] ?
					    res->activity->state_name : NULL;

		if (res->error == -EREMOTEIO && res->message[0])
			batch_record_failure(run, b, "%s", res->message);
		else if (res->error == -EREMOTEIO)
			batch_record_failure(run, b, "activity %s ended %s", b->activity_id,
					     state ? state : "without success");
		else if (res->error == -ETIME)
			batch_record_failure(run, b, "activity %s did not finish in time; Constant "
					     "Contact may still apply it", b->activity_id);
		else
			batch_record_failure(run, b, "waiting for activity %s failed: %s",
					     b->activity_id,
					     res->message[0] ? res->message :
							       strerror(-(res->error ? res->error :
										       EBADMSG)));
		batch_unlist(run, b);
		goto out;
	}
	t0 = thread_cpu_ns();
	if (b->kind == STORE_DATA_BATCH_IMPORT)
		r = batch_confirm(run, b, res->activity, err, sizeof(err));
	else
		r = removal_confirm(run, b, err, sizeof(err));
	run->confirm_cpu_ns += thread_cpu_ns() - t0;
	if (r == -EREMOTEIO) {
		batch_record_failure(run, b, "%s", err);
		batch_unlist(run, b);
		run_stop(run, STOP_FAIL, -ENOENT,
			 "Constant Contact list %s of export \"%s\" no longer exists (it was "
			 "deleted during the run); edit the export to use an existing list",
			 run->list_id, run->export_name);
		goto out;
	}
	if (r < 0) {
		batch_record_failure(run, b, "confirming activity %s failed: %s", b->activity_id,
				     err);
		batch_unlist(run, b);
		run_stop(run, STOP_FAIL, r, "recording a confirmed batch failed: %s", err);
		goto out;
	}
	batch_unlist(run, b);
	run_refresh_counters(run);
	run_emit(run);
out:
	if (!run->finalized && run->stop == STOP_NONE) {
		if (run->phase == RUNNER_PHASE_REMOVING)
			remove_pump(run);
		else
			send_pump(run);
	}
	run_check_done(run);
	run_unref(run);
}

static void send_pump(struct run *run)
{
	if (run->stop != STOP_NONE || run->finalized || run->work_active)
		return;
	if (!run->pl.exhausted) {
		if (run->n_unconfirmed < RUNNER_WINDOW)
			run_queue_step(run, STEP_ENCODE);
		return;
	}
	if (!run->plan_closing) {
		/* Every batch is posted: end the snapshot and load the departed contacts now, so
		 * that a mirror run's removal step overlaps the confirmation of its imports. */
		run->plan_closing = true;
		run_queue_step(run, STEP_CLOSE);
		return;
	}
	if (run->plan_closed && run->n_unconfirmed == 0 && run->phase == RUNNER_PHASE_SENDING &&
	    run->stage != STG_PREP)
		run_finalize(run);
}

/* Refused contacts but no contact to send at all: record them outside any batch. */
static void record_refused_only(struct run *run, struct batch *b)
{
	_cleanup_free_ struct store_data_rejection *rows = calloc(b->n_rej, sizeof(*rows));
	char err[512];
	int r;

	if (!rows) {
		run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
		return;
	}
	for (size_t i = 0; i < b->n_rej; i++)
		rows[i] = (struct store_data_rejection){
			.profile_id = arena_str(&b->s, b->rej[i].profile_id),
			.email = arena_str(&b->s, b->rej[i].email),
			.reason_code = arena_str(&b->s, b->rej[i].code),
			.reason = arena_str(&b->s, b->rej[i].reason),
			.permanent = true,
		};
	r = store_data_rejected_add(run->runner->store, run->run_id, rows, b->n_rej, err,
				    sizeof(err));
	/* No batch carries them, so the plan totals take them out of pending instead. */
	if (r >= 0) {
		run->confirmed_rejected += (int64_t)b->n_rej;
		r = record_plan_totals(run, err, sizeof(err));
	}
	if (r < 0)
		run_stop(run, STOP_FAIL, r, "recording refused contacts failed: %s", err);
}

static void on_encoded(struct run *run)
{
	struct batch *b = TAKE_PTR(run->pl.out);
	char err[512];
	int r;

	if (flush_rejections(run) < 0) {
		batch_free(b);
		return;
	}
	if (!b) {
		send_pump(run);
		return;
	}
	if (b->n_c == 0) {
		record_refused_only(run, b);
		batch_free(b);
		send_pump(run);
		return;
	}
	b->run = run;
	b->kind = STORE_DATA_BATCH_IMPORT;
	b->batch_no = ++run->batch_no;
	b->contacts = (int64_t)(b->n_c + b->n_rej);
	r = store_data_batch_add(run->runner->store, run->run_id, b->batch_no,
				 STORE_DATA_BATCH_IMPORT, b->contacts, (int64_t)b->len, err,
				 sizeof(err));
	if (r < 0) {
		batch_free(b);
		run_stop(run, STOP_FAIL, r, "recording a batch failed: %s", err);
		return;
	}
	run->n_batches++;
	b->next = run->batches;
	run->batches = b;
	run->n_unconfirmed++;
	batch_post(run, b);
	/* Encode the next batch while this one uploads. */
	send_pump(run);
}

/* ------------------------------------------------------------------ mirror removals */

static void removals_plan(struct run *run);

static void on_lookup(const struct ccclient_result *res, void *userdata);

/* Contact ids by email, LOOKUP_PARALLEL at a time (the limiter paces them anyway). */
static void lookup_pump(struct run *run)
{
	while (run->stop == STOP_NONE && run->n_lookups < LOOKUP_PARALLEL &&
	       run->next_lookup < run->n_departed) {
		struct departed *d = &run->departed[run->next_lookup++];
		struct ccclient_call call = run_call(run, run);
		char err[512];
		int r;

		if (d->contact_id)
			continue;
		run->n_lookups++;
		request_begin(run);
		r = ccclient_contact_by_email(run->runner->cc, &call, d->email, on_lookup, d, err,
					      sizeof(err));
		if (r < 0) {
			run->n_lookups--;
			request_end(run);
			run_unref(run);
			run_stop(run, STOP_FAIL, r, "looking up contacts to remove failed: %s",
				 err);
			return;
		}
	}
	if (run->stop == STOP_NONE && run->n_lookups == 0 && run->next_lookup >= run->n_departed)
		removals_plan(run);
}

static void on_lookup(const struct ccclient_result *res, void *userdata)
{
	struct departed *d = userdata;
	struct run *run = d->run;

	run->n_lookups--;
	if (request_end(run) || run->stop != STOP_NONE)
		goto out;
	if (res->error < 0 && res->error != -ENOENT) {
		run_stop(run, STOP_FAIL, res->error, "looking up contacts to remove failed: %s",
			 res->message[0] ? res->message : strerror(-res->error));
		goto out;
	}
	if (res->error == 0 && res->contacts && res->contacts->n > 0) {
		d->contact_id = strdup(res->contacts->contacts[0].contact_id);
		if (!d->contact_id) {
			run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
			goto out;
		}
	}
	lookup_pump(run);
out:
	run_check_done(run);
	run_unref(run);
}

static int cmp_departed_key(const void *key, const void *elem)
{
	return strcmp(key, ((const struct departed *)elem)->email);
}

static void on_removal_page(const struct ccclient_result *res, void *userdata);

static void removal_page_fetch(struct run *run)
{
	list_page_fetch(run, run->list_id, on_removal_page,
			"reading the list to find contacts to remove");
}

static void on_removal_page(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;
	const struct ccapi_contact_page *pg =
		page_result(run, res, "reading the list to find contacts to remove");
	int r;

	if (!pg)
		goto out;
	for (size_t i = 0; i < pg->n; i++) {
		struct departed *d;

		if (!pg->contacts[i].email)
			continue;
		d = bsearch(pg->contacts[i].email, run->departed, run->n_departed,
			    sizeof(*run->departed), cmp_departed_key);
		if (!d || d->contact_id)
			continue;
		d->contact_id = strdup(pg->contacts[i].contact_id);
		if (!d->contact_id) {
			run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
			goto out;
		}
	}
	r = page_advance(run, pg->next);
	if (r > 0)
		removal_page_fetch(run);
	else if (r == 0)
		removals_plan(run);
out:
	run_check_done(run);
	run_unref(run);
}

/*
 * Contact ids: sync_state rarely knows them (imports do not return ids), so they are looked up,
 * whichever way costs fewer requests: one GET /contacts?email= per departed contact, or the
 * list's members page by page (500 per request).
 */
static void removals_start(struct run *run)
{
	size_t missing = 0;
	uint64_t pages;

	run_set_phase(run, RUNNER_PHASE_REMOVING);
	for (size_t i = 0; i < run->n_departed; i++) {
		run->departed[i].run = run;
		if (!run->departed[i].contact_id)
			missing++;
	}
	pages = run->list_membership >= 0 ?
			((uint64_t)run->list_membership + CCAPI_PAGE_LIMIT - 1) / CCAPI_PAGE_LIMIT :
			UINT64_MAX;
	if (missing == 0 || run->list_membership == 0) {
		removals_plan(run);
	} else if (missing <= pages) {
		lookup_pump(run);
	} else {
		free(run->page_next);
		run->page_next = NULL;
		removal_page_fetch(run);
	}
}

/* Cuts the removal batches: ≤ 500 contact ids each. Departed contacts CC no longer has on the
 * list ride along in the first batch, so their sync state is cleared with it. */
static void removals_plan(struct run *run)
{
	size_t n = run->n_departed;

	run->found_ids = calloc(n ? n : 1, sizeof(char *));
	run->found_emails = calloc(n ? n : 1, sizeof(char *));
	run->missing_emails = calloc(n ? n : 1, sizeof(char *));
	if (!run->found_ids || !run->found_emails || !run->missing_emails) {
		run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct departed *d = &run->departed[i];

		if (d->contact_id && ccapi_id_valid(d->contact_id)) {
			run->found_ids[run->n_found] = d->contact_id;
			run->found_emails[run->n_found++] = d->email;
		} else {
			run->missing_emails[run->n_missing++] = d->email;
		}
	}
	if (run->n_found == 0 && run->n_missing > 0)
		run_log(run, LOG_INFO, NULL,
			 "Run %" PRId64 ": none of the %zu departed contacts is in Constant "
			 "Contact any more; nothing to remove",
			 run->run_id, run->n_missing);
	run->next_chunk = 0;
	run->removals_planned = true;
	remove_pump(run);
}

static void remove_post(struct run *run, struct batch *b)
{
	struct ccclient_call call = run_call(run, &run->post_owner);
	char err[512];
	int r;

	b->stage = BATCH_POSTING;
	request_begin(run);
	if (b->n_ids > 0)
		r = ccclient_remove_from_list(run->runner->cc, &call, b->ids, b->n_ids,
					      run->list_id, on_batch_posted, b, err, sizeof(err));
	else
		r = ccclient_remove_list_members(run->runner->cc, &call, run->staging.list_id,
						 run->list_id, on_batch_posted, b, err,
						 sizeof(err));
	if (r < 0) {
		int64_t no = b->batch_no;

		request_end(run);
		run_unref(run);
		batch_record_failure(run, b, "removal request refused: %s", err);
		batch_unlist(run, b);
		run_stop(run, STOP_FAIL, r, "removal batch %" PRId64 " refused: %s", no, err);
	}
}

/* Records removal batch b (its emails and ids set; transfer full) and posts it. 0, or negative
 * errno with the run stopped. */
static int removal_batch_send(struct run *run, struct batch *b)
{
	char err[512];
	int r;

	b->run = run;
	b->kind = STORE_DATA_BATCH_REMOVE;
	b->batch_no = ++run->batch_no;
	b->contacts = (int64_t)b->n_emails;
	r = store_data_batch_add(run->runner->store, run->run_id, b->batch_no,
				 STORE_DATA_BATCH_REMOVE, b->contacts, 0, err, sizeof(err));
	if (r < 0) {
		batch_free(b);
		run_stop(run, STOP_FAIL, r, "recording a removal batch failed: %s", err);
		return r;
	}
	run->n_batches++;
	b->next = run->batches;
	run->batches = b;
	run->n_unconfirmed++;
	remove_post(run, b);
	return 0;
}

static void remove_pump(struct run *run)
{
	while (run->stop == STOP_NONE && !run->finalized && run->n_unconfirmed < RUNNER_WINDOW &&
	       run->next_chunk < run->n_found) {
		size_t k = run->n_found - run->next_chunk;
		bool first = run->next_chunk == 0;
		struct batch *b;

		if (k > CCAPI_REMOVE_MAX_CONTACTS)
			k = CCAPI_REMOVE_MAX_CONTACTS;
		b = calloc(1, sizeof(*b));
		if (b) {
			b->n_emails = k + (first ? run->n_missing : 0);
			b->ids = calloc(k, sizeof(char *));
			b->emails = calloc(b->n_emails, sizeof(char *));
		}
		if (!b || !b->ids || !b->emails) {
			batch_free(b);
			run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
			return;
		}
		b->n_ids = k;
		for (size_t i = 0; i < k; i++) {
			b->ids[i] = run->found_ids[run->next_chunk + i];
			b->emails[i] = run->found_emails[run->next_chunk + i];
		}
		for (size_t i = k; i < b->n_emails; i++)
			b->emails[i] = run->missing_emails[i - k];
		run->next_chunk += k;
		if (removal_batch_send(run, b) < 0)
			return;
	}
	if (run->stop == STOP_NONE && !run->finalized && run->n_unconfirmed == 0 &&
	    run->next_chunk >= run->n_found)
		removals_done(run);
}

/* ------------------------------------------------------------------ mirror removals by staging list */

/*
 * Constant Contact removes list members only by contact id or by list, and imports return no
 * ids. So a mirror run imports the departed emails (the email key only: no contact data
 * changes) into a list ccsync owns per export, removes that list's members from the exported
 * list, then empties it: about six requests, whatever the number of departures. The table
 * mirror_staging keeps what a crash must not lose: the list may hold members (dirty, set before
 * the first staging import, cleared only when an empty completed), and the last activity on the
 * list (pending), which the next use waits for. A run ends once its final empty is accepted; the
 * next run settles it. Unsubscribed contacts are not added to a list by an import: when the
 * imports report fewer contacts staged than sent, the staging list is read to tell which, and
 * the others are removed by contact id (the lookup path above).
 */
static void staging_settle(struct run *run);
static void staging_import_next(struct run *run);
static void staging_remove(struct run *run);

/* Records the staging list's state (0, or negative errno with the run stopped). */
static int staging_record(struct run *run, const char *pending, bool is_empty, bool dirty)
{
	struct store_mirror_staging *m = &run->staging;
	char err[512];
	int r;

	snprintf(m->pending_activity_id, sizeof(m->pending_activity_id), "%s",
		 pending ? pending : "");
	m->pending_is_empty = is_empty;
	m->dirty = dirty;
	r = store_mirror_staging_set(run->runner->store, run->export_id, m, err, sizeof(err));
	if (r < 0)
		run_stop(run, STOP_FAIL, r, "%s", err);
	return r;
}

/* The name of the export's staging list: unique per export and stable (a restored database
 * finds its list again by name after a 409). */
static void staging_name(const struct run *run, char *buf, size_t len)
{
	snprintf(buf, len, "ccsync staging \u2013 %.100s (%" PRId64 "-%.8s)",
		 run->export_name ? run->export_name : "?", run->export_id, run->list_id);
}

/* Common head of the staging callbacks: false when the run stopped meanwhile. */
static bool staging_result_ok(struct run *run, const struct ccclient_result *res, const char *what)
{
	if (request_end(run) || run->stop != STOP_NONE)
		return false;
	if (res->error < 0) {
		run_stop(run, STOP_FAIL, res->error,
			 "%s (staging list %s of export \"%s\"): %s; nothing was removed by this "
			 "run, the next run repairs the staging list first",
			 what, run->staging.list_id[0] ? run->staging.list_id : "not created",
			 run->export_name, res->message[0] ? res->message : strerror(-res->error));
		return false;
	}
	return true;
}

static void on_staging_found(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;
	char name[256];

	if (!staging_result_ok(run, res, "finding the staging list by name failed"))
		goto out;
	staging_name(run, name, sizeof(name));
	for (size_t i = 0; res->lists && i < res->lists->n; i++) {
		if (!res->lists->lists[i].name || !streq(res->lists->lists[i].name, name))
			continue;
		snprintf(run->staging.list_id, sizeof(run->staging.list_id), "%s",
			 res->lists->lists[i].list_id);
		/* Its content is unknown (e.g. a restored database): empty it first. */
		if (staging_record(run, NULL, false, true) >= 0)
			staging_settle(run);
		goto out;
	}
	run_stop(run, STOP_FAIL, -ENOENT,
		 "Constant Contact refused to create the staging list \"%s\" (name taken) but "
		 "does not list it; nothing was removed",
		 name);
out:
	run_check_done(run);
	run_unref(run);
}

static void on_staging_created(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;
	struct ccclient_call call = run_call(run, run);
	char name[256], err[512];
	int r;

	if (res->error == -EEXIST && !request_end(run) && run->stop == STOP_NONE) {
		staging_name(run, name, sizeof(name));
		request_begin(run);
		r = ccclient_list_find(run->runner->cc, &call, name, on_staging_found, run, err,
				       sizeof(err));
		if (r < 0)
			request_refused(run, r, "finding the staging list failed", err);
		goto out;
	}
	if (res->error == -EEXIST || !staging_result_ok(run, res, "creating the staging list failed"))
		goto out;
	if (!res->list) {
		run_stop(run, STOP_FAIL, -EBADMSG, "creating the staging list: no list in the answer");
		goto out;
	}
	snprintf(run->staging.list_id, sizeof(run->staging.list_id), "%s", res->list->list_id);
	run_log(run, LOG_INFO, NULL, "Export \"%s\": created its staging list %s",
		run->export_name, run->staging.list_id);
	if (staging_record(run, NULL, false, false) >= 0)
		staging_settle(run);
out:
	run_check_done(run);
	run_unref(run);
}

static void staging_create(struct run *run)
{
	struct ccclient_call call = run_call(run, &run->post_owner);
	char name[256], desc[512], err[512];
	int r;

	staging_name(run, name, sizeof(name));
	snprintf(desc, sizeof(desc),
		 "Owned by ccsync to remove contacts from list %s (mirror export \"%.100s\"). Do not "
		 "use, edit or delete it: ccsync empties it after each run.",
		 run->list_id, run->export_name ? run->export_name : "?");
	request_begin(run);
	r = ccclient_list_create(run->runner->cc, &call, name, desc, on_staging_created, run, err,
				 sizeof(err));
	if (r < 0)
		request_refused(run, r, "creating the staging list failed", err);
}

/* Waits for activity id (an empty or an import of the staging list) to end. */
static void staging_wait(struct run *run, const char *id, ccclient_done_fn cb)
{
	struct ccclient_call call = run_call(run, &run->wait_owner);
	char err[512];
	int r;

	request_begin(run);
	r = ccclient_activity_wait(run->runner->cc, &call, id, 0, cb, run, err, sizeof(err));
	if (r < 0)
		request_refused(run, r, "waiting for a staging list activity failed", err);
}

/* The pending activity ended (or CC forgot it): an empty that completed leaves the list clean,
 * anything else leaves it as dirty as it was. */
static void on_staging_settled(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;
	struct store_mirror_staging *m = &run->staging;

	if (request_end(run) || run->stop != STOP_NONE)
		goto out;
	if (res->error < 0 && res->error != -EREMOTEIO && res->error != -ENOENT) {
		run_stop(run, STOP_FAIL, res->error,
			 "waiting for the last activity on the staging list %s failed: %s; nothing "
			 "was removed by this run",
			 m->list_id, res->message[0] ? res->message : strerror(-res->error));
		goto out;
	}
	if (staging_record(run, NULL, false, m->dirty && !(m->pending_is_empty && res->error == 0)) <
	    0)
		goto out;
	staging_settle(run);
out:
	run_check_done(run);
	run_unref(run);
}

static void on_staging_empty_posted(const struct ccclient_result *res, void *userdata);

static void staging_empty(struct run *run)
{
	struct ccclient_call call = run_call(run, &run->post_owner);
	char err[512];
	int r;

	request_begin(run);
	r = ccclient_remove_list_members(run->runner->cc, &call, run->staging.list_id,
					 run->staging.list_id, on_staging_empty_posted, run, err,
					 sizeof(err));
	if (r < 0)
		request_refused(run, r, "emptying the staging list failed", err);
}

static void on_staging_empty_posted(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;

	if (!staging_result_ok(run, res, "emptying the staging list failed") || !res->activity)
		goto out;
	if (staging_record(run, res->activity->activity_id, true, true) < 0)
		goto out;
	if (run->stage == STG_EMPTY) {
		/* Done: the next run waits for this empty. */
		run->stage = STG_DONE;
		run->removals_planned = true;
		removals_done(run);
	} else
		staging_wait(run, res->activity->activity_id, on_staging_settled);
out:
	run_check_done(run);
	run_unref(run);
}

/* Brings the staging list to "empty, nothing running on it", then imports. */
static void staging_settle(struct run *run)
{
	const struct store_mirror_staging *m = &run->staging;

	if (m->pending_activity_id[0])
		staging_wait(run, m->pending_activity_id, on_staging_settled);
	else if (m->dirty)
		staging_empty(run);
	else if (run->staging_wanted)
		staging_import_next(run);
	else {
		/* Settled ahead of the plan's end: on_closed_plan goes on from here, or the run
		 * ends without departures (send_pump waits for this). */
		run->stage = STG_READY;
		send_pump(run);
	}
}

/* Finds or creates the staging list and settles what an earlier run left on it. */
static void staging_prepare(struct run *run)
{
	char err[512];
	int r;

	run->stage = STG_PREP;
	r = store_mirror_staging_get(run->runner->store, run->export_id, &run->staging, err,
				     sizeof(err));
	if (r < 0)
		run_stop(run, STOP_FAIL, r, "%s", err);
	else if (r == 0)
		staging_create(run);
	else
		staging_settle(run);
}

/*
 * A mirror run that has synced before will most likely have departures. Settling the staging
 * list (creating it, waiting for the last run's empty) while the plan scans takes those requests
 * off the run's critical path: the limiter's tokens refill during the scan anyway. Nothing is
 * removed from the exported list before the plan ends and the removal guard has spoken.
 */
static void staging_prepare_early(struct run *run)
{
	if (!run->mirror || run->dry_run || run->stage != STG_NONE ||
	    store_mirror_has_sync_state(run->runner->store, run->export_id) <= 0)
		return;
	staging_prepare(run);
}

static void staging_start(struct run *run)
{
	run_set_phase(run, RUNNER_PHASE_REMOVING);
	run->staging_wanted = true;
	for (size_t i = 0; i < run->n_departed; i++)
		run->departed[i].run = run;
	if (run->stage == STG_READY)
		staging_import_next(run);
	else if (run->stage == STG_NONE)
		staging_prepare(run);
	/* else STG_PREP: staging_settle imports once the list is settled */
}

static void on_staging_imported(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;
	const struct ccapi_activity *a = res->activity;

	if (!staging_result_ok(run, res, "the staging import failed") || !a)
		goto out;
	run->staging_persons += a->person_count >= 0 ? a->person_count : 0;
	run->staging_cannot_add += a->cannot_add_to_list_count > 0 ? a->cannot_add_to_list_count :
								       0;
	staging_import_next(run);
out:
	run_check_done(run);
	run_unref(run);
}

static void on_staging_import_posted(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;

	if ((res->error == -ENOENT || res->error == -EINVAL) && run->stop == STOP_NONE &&
	    !run->finalized) {
		/* CC answers 404 or 400 for an unknown list: most likely someone deleted it.
		 * Forgetting it is safe either way: the next run creates one, or finds this one
		 * by name (409) and empties it first. */
		(void)store_mirror_staging_forget(run->runner->store, run->export_id, NULL, 0);
	}
	if (!staging_result_ok(run, res, "the staging import failed") || !res->activity)
		goto out;
	if (staging_record(run, res->activity->activity_id, false, true) >= 0)
		staging_wait(run, res->activity->activity_id, on_staging_imported);
out:
	run_check_done(run);
	run_unref(run);
}

/* Imports the next ≤ 40,000 departed emails (< 4,000,000 bytes) into the staging list; one at a
 * time, so the one pending activity is all a crash has to remember. */
static void staging_import_next(struct run *run)
{
	const char *list_ids[1] = { run->staging.list_id };
	struct ccclient_call call = run_call(run, &run->post_owner);
	struct runner *rn = run->runner;
	struct ccapi_import *enc = NULL;
	char *body = NULL;
	size_t len = 0;
	char err[512];
	int r;

	if (run->staging_next >= run->n_departed) {
		staging_remove(run);
		return;
	}
	run->stage = STG_IMPORT;
	if (run->staging_next == 0 && staging_record(run, NULL, false, true) < 0)
		return;
	r = ccapi_import_begin(list_ids, 1, rn->cfg.batch_max_contacts, rn->cfg.batch_max_bytes,
			       &enc, err, sizeof(err));
	while (r >= 0 && run->staging_next < run->n_departed) {
		r = ccapi_import_add(enc, run->departed[run->staging_next].email, NULL, NULL, NULL,
				     0, err, sizeof(err));
		if (r == -ENOSPC) {
			r = 0;
			break;
		}
		/* A refused email is left out; the short count sends it to the fallback. */
		if (r < 0 && r != -ENOMEM)
			r = 0;
		run->staging_next++;
	}
	if (r >= 0 && ccapi_import_count(enc) == 0) {
		ccapi_import_free(enc);
		staging_import_next(run);
		return;
	}
	if (r >= 0)
		r = ccapi_import_finish(enc, &body, &len);
	ccapi_import_free(enc);
	if (r < 0) {
		run_stop(run, STOP_FAIL, r, "encoding the staging import failed: %s",
			 r == -ENOMEM ? "out of memory" : err);
		return;
	}
	request_begin(run);
	r = ccclient_import(rn->cc, &call, body, len, on_staging_import_posted, run, err,
			    sizeof(err));
	if (r < 0)
		request_refused(run, r, "the staging import was refused", err);
}

/* Posts the removal of the staging list's members from the exported list, recorded as a remove
 * batch whose emails are the staged departed contacts (their sync state goes on confirmation). */
static void staging_list_remove(struct run *run, bool all)
{
	struct batch *b;
	size_t n = 0;

	run->stage = STG_LIST_REMOVE;
	b = calloc(1, sizeof(*b));
	if (b)
		b->emails = calloc(run->n_departed ? run->n_departed : 1, sizeof(char *));
	if (!b || !b->emails) {
		batch_free(b);
		run_stop(run, STOP_FAIL, -ENOMEM, "out of memory");
		return;
	}
	for (size_t i = 0; i < run->n_departed; i++) {
		run->departed[i].staged |= all;
		if (run->departed[i].staged)
			b->emails[n++] = run->departed[i].email;
	}
	run->removals_planned = true;
	if (n == 0) {
		batch_free(b);
		removals_done(run);
		return;
	}
	b->n_emails = n;
	(void)removal_batch_send(run, b); /* on failure the run has stopped */
}

static void on_staged_page(const struct ccclient_result *res, void *userdata);

static void staged_page_fetch(struct run *run)
{
	list_page_fetch(run, run->staging.list_id, on_staged_page,
			"reading the staging list failed");
}

/* A page of the staging list's members: those departed contacts are staged (and their ids
 * known); the others need the fallback. */
static void on_staged_page(const struct ccclient_result *res, void *userdata)
{
	struct run *run = userdata;
	const struct ccapi_contact_page *pg = res->contacts;
	int r;

	if (!staging_result_ok(run, res, "reading the staging list failed"))
		goto out;
	for (size_t i = 0; pg && i < pg->n; i++) {
		struct departed *d;

		if (!pg->contacts[i].email)
			continue;
		d = bsearch(pg->contacts[i].email, run->departed, run->n_departed,
			    sizeof(*run->departed), cmp_departed_key);
		if (d)
			d->staged = true;
	}
	r = page_advance(run, pg ? pg->next : NULL);
	if (r > 0)
		staged_page_fetch(run);
	else if (r == 0)
		staging_list_remove(run, false);
out:
	run_check_done(run);
	run_unref(run);
}

static void staging_remove(struct run *run)
{
	uint64_t staged = run->staging_persons > run->staging_cannot_add ?
				  (uint64_t)(run->staging_persons - run->staging_cannot_add) : 0;

	if (staged >= run->n_departed && run->staging_cannot_add == 0) {
		staging_list_remove(run, true);
		return;
	}
	run_log(run, LOG_INFO, NULL,
		"Run %" PRId64 ": %" PRIu64 " of %zu departed contacts reached the staging list "
		"(%" PRId64 " not added, e.g. unsubscribed); the others are removed by contact id",
		run->run_id, staged, run->n_departed, run->staging_cannot_add);
	free(run->page_next);
	run->page_next = NULL;
	staged_page_fetch(run);
}

/* Keeps the departed contacts not yet handled (not staged) for the contact-id removal. */
static size_t departed_keep_unstaged(struct run *run)
{
	size_t n = 0;

	for (size_t i = 0; i < run->n_departed; i++) {
		struct departed *d = &run->departed[i];

		if (d->staged) {
			free(d->email);
			free(d->contact_id);
			continue;
		}
		run->departed[n++] = *d;
	}
	run->n_departed = n;
	return n;
}

/* Every removal batch of the current stage has ended. */
static void removals_done(struct run *run)
{
	/* Imports still in flight call back here through remove_pump when confirmed. */
	if (run->n_unconfirmed > 0 || !run->removals_planned)
		return;
	run->removals_planned = false;
	if (run->stage == STG_NONE || run->stage == STG_DONE || run->n_failed > 0) {
		/* A failed removal leaves the staging list dirty: the next run empties it. */
		run_finalize(run);
		return;
	}
	if (run->stage == STG_LIST_REMOVE && departed_keep_unstaged(run) > 0) {
		run->stage = STG_FALLBACK;
		removals_start(run);
		return;
	}
	run->stage = STG_EMPTY;
	staging_empty(run);
}

/* ------------------------------------------------------------------ pool results */

static void on_closed_plan(struct run *run)
{
	struct planner *pl = &run->pl;

	run->departed = TAKE_PTR(pl->departed);
	run->n_departed = pl->n_departed;
	pl->n_departed = 0;
	run->plan_closed = true;
	if (!run->mirror || run->n_failed > 0 || run->n_departed == 0)
		send_pump(run); /* finishes once the imports in flight are confirmed */
	else if (!removal_guard_trips(run))
		staging_start(run);
}

static void on_planned(struct run *run)
{
	struct runner *r = run->runner;
	uint64_t selected = run->pl.selected;

	if (r->cfg.max_profiles > 0 && selected > r->cfg.max_profiles) {
		run_stop(run, STOP_FAIL, -EFBIG,
			 "export \"%s\" selects %" PRIu64 " profiles, more than "
			 "max_profiles_per_export (%" PRIu32 "); nothing was sent",
			 run->export_name, selected, r->cfg.max_profiles);
		return;
	}
	list_check(run);
}

static void on_work_done(uv_work_t *w, int status)
{
	struct run *run = container_of(w, struct run, work);
	struct planner *pl = &run->pl;

	run->work_active = false;
	if (run->finalized || run->stop != STOP_NONE) {
		pl->out = batch_free(pl->out);
		goto out;
	}
	if (status < 0) {
		run_stop(run, STOP_FAIL, status, "thread-pool work failed: %s",
			 uv_strerror(status));
		goto out;
	}
	if (pl->r == -E2BIG && pl->step == STEP_PLAN) {
		/* plan.c names the count and the cap. */
		run_stop(run, STOP_FAIL, pl->r, "%s; nothing was sent", pl->err);
		goto out;
	}
	if (pl->r < 0) {
		run_stop(run, STOP_FAIL, pl->r, "%s", pl->err[0] ? pl->err : strerror(-pl->r));
		goto out;
	}
	switch (pl->step) {
	case STEP_PLAN:
		on_planned(run);
		break;
	case STEP_PASS1:
		on_pass1(run);
		break;
	case STEP_ENCODE:
		on_encoded(run);
		break;
	case STEP_CLOSE:
		on_closed_plan(run);
		break;
	default:
		break;
	}
out:
	run_check_done(run);
	runner_maybe_done(run->runner);
	run_unref(run);
}

/* ------------------------------------------------------------------ starting a run */

static void run_start(struct run *run)
{
	struct runner *r = run->runner;
	struct store_export e = { 0 };
	struct store_connection c = { 0 };
	struct log_fields f;
	char err[512];
	int rr;

	rr = store_data_run_set_state(r->store, run->run_id, STORE_DATA_RUN_RUNNING, NULL, err,
				      sizeof(err));
	if (rr < 0) {
		/* Not startable (e.g. cancelled from another connection): forget it. */
		log_warning("Cannot start run %" PRId64 ": %s", run->run_id, err);
		run->stop = STOP_CANCEL;
		run->finalized = true;
		run->phase = RUNNER_PHASE_FINISHED;
		run->refs++;
		run_emit(run);
		run_unlink(run);
		run_unref(run);
		return;
	}
	run->state = STORE_DATA_RUN_RUNNING;
	r->n_running++;
	f = run_fields(run, CCSYNC_MSG_RUN_STARTED);
	log_full(LOG_INFO, &f, "Run %" PRId64 " of export \"%s\" started (trigger %s%s%s%s)",
		 run->run_id, run->export_name ? run->export_name : "?",
		 store_data_trigger_to_string(run->trigger), run->dry_run ? ", dry run" : "",
		 run->full ? ", full" : "", run->force ? ", forced" : "");
	run->refs++;
	run_set_phase(run, RUNNER_PHASE_CHECKING);

	rr = store_config_export_get(r->store, run->export_id, &e);
	if (rr < 0) {
		run_stop(run, STOP_FAIL, rr, "export %" PRId64 " no longer exists", run->export_id);
		goto out;
	}
	run->connection_id = e.connection_id;
	run->mirror = e.mode && streq(e.mode, "mirror");
	run->max_remove_share = e.has_mirror_share ? e.mirror_max_remove_share :
						     r->cfg.mirror_share;
	snprintf(run->list_id, sizeof(run->list_id), "%s", e.list_id ? e.list_id : "");
	if (!e.enabled) {
		run_stop(run, STOP_FAIL, -EPERM, "export \"%s\" is disabled%s%s", e.name,
			 e.disabled_reason ? ": " : "", e.disabled_reason ? e.disabled_reason : "");
		goto out;
	}
	rr = store_config_connection_get(r->store, e.connection_id, &c);
	if (rr < 0 || e.connection_removed) {
		run_stop(run, STOP_FAIL, -ENOENT, "the connection of export \"%s\" was removed",
			 e.name);
		goto out;
	}
	if (c.consent_at <= 0) {
		run_stop(run, STOP_FAIL, -EPERM,
			 "connection \"%s\" has no data-privacy consent: an admin must record "
			 "it (ccsyncctl connection consent) before profiles are sent to Constant "
			 "Contact",
			 c.name);
		goto out;
	}
	if (!c.auth_state || !streq(c.auth_state, "authorized")) {
		run_stop(run, STOP_FAIL, -ENOKEY,
			 "connection \"%s\" is not authorized (%s%s%s): run ccsyncctl connection "
			 "authorize",
			 c.name, c.auth_state ? c.auth_state : "unknown",
			 c.auth_error ? ": " : "", c.auth_error ? c.auth_error : "");
		goto out;
	}
	if (!ccapi_id_valid(run->list_id)) {
		run_stop(run, STOP_FAIL, -EINVAL, "export \"%s\" has an invalid list id", e.name);
		goto out;
	}
	if (run->resumed_from) {
		rr = store_data_run_resume_chain(r->store, run->run_id, &run->pl.resume_ids,
						 &run->pl.n_resume_ids);
		if (rr < 0) {
			run_stop(run, STOP_FAIL, rr, "reading the runs to resume failed");
			goto out;
		}
	}
	run->pl.db_path = r->db_path;
	run->pl.export_id = run->export_id;
	run->pl.full = run->full;
	run->pl.mirror = run->mirror;
	/* A mirror export's first sync keeps two passes: it reads the list's pre-existing
	 * members before the first import whenever the plan adds anyone (see members_start). */
	run->single = run->pl.single =
		RUNNER_SINGLE_PASS && !run->dry_run &&
		(!run->mirror || store_mirror_has_sync_state(r->store, run->export_id) > 0);
	snprintf(run->pl.list_id, sizeof(run->pl.list_id), "%s", run->list_id);
	run->pl.max_contacts = r->cfg.batch_max_contacts;
	run->pl.max_bytes = r->cfg.batch_max_bytes;
	run->pl.max_selected = r->cfg.max_profiles;
	run_set_phase(run, RUNNER_PHASE_PLANNING);
	run_queue_step(run, STEP_PLAN);
out:
	store_export_done(&e);
	store_connection_done(&c);
	run_check_done(run);
	run_unref(run);
}

static void on_kick(uv_timer_t *t)
{
	struct runner *r = container_of(t, struct runner, kick);
	struct run *run, *next;

	if (r->draining || r->closing)
		return;
	for (size_t i = 0; i < r->n_unrecorded;) {
		struct unrecorded_end *u = &r->unrecorded[i];
		char inner[256];

		int rr = store_data_run_set_state(r->store, u->run_id, u->state,
						  u->error[0] ? u->error : NULL, inner,
						  sizeof(inner));

		/* -EINVAL: already final (e.g. recorded by a later request); -ENOENT: purged. */
		if (rr >= 0 || rr == -EINVAL || rr == -ENOENT) {
			log_full(LOG_NOTICE, NULL, "Recorded the end of run %" PRId64 " (%s)",
				 u->run_id, store_data_run_state_to_string(u->state) ?: "?");
			r->unrecorded[i] = r->unrecorded[--r->n_unrecorded];
			continue;
		}
		i++;
	}
	for (run = r->head; run && r->n_running < r->cfg.max_concurrent; run = next) {
		next = run->next;
		if (run->state != STORE_DATA_RUN_QUEUED || run->finalized)
			continue;
		/* run_start may finish the run (and unlink it) before it returns. */
		run->refs++;
		run_start(run);
		next = run->linked ? run->next : r->head;
		run_unref(run);
	}
	if (r->n_unrecorded > 0 && !r->draining && !r->closing)
		(void)uv_timer_start(&r->kick, on_kick, 1000, 0);
}

static void runner_kick(struct runner *r)
{
	if (r->draining || r->closing)
		return;
	(void)uv_timer_start(&r->kick, on_kick, 0, 0);
}

/* ------------------------------------------------------------------ public API */

static void settings_from(struct settings *s, const struct config *cfg)
{
	*s = (struct settings){
		.max_concurrent = cfg->max_concurrent_runs ? cfg->max_concurrent_runs : 1,
		.max_profiles = cfg->max_profiles_per_export,
		.mirror_share = cfg->mirror_max_remove_share,
		.batch_max_contacts = cfg->batch_max_contacts,
		.batch_max_bytes = cfg->batch_max_bytes,
		.run_retention_days = cfg->run_retention_days,
		.rejected_retention_days = cfg->rejected_retention_days,
		.member_pages_max = MEMBER_PAGES_MAX,
	};
	if (getenv("CCSYNC_TEST_MEMBER_PAGES_MAX"))
		s->member_pages_max = strtoull(getenv("CCSYNC_TEST_MEMBER_PAGES_MAX"), NULL, 10);
}

int runner_new(uv_loop_t *loop, struct store *store, const char *db_path, struct ccclient *cc,
	       const struct config *cfg, struct runner **ret, char *err, size_t errlen)
{
	struct runner *r;
	int rr;

	r = calloc(1, sizeof(*r));
	if (!r)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	r->db_path = strdup(db_path);
	if (!r->db_path) {
		free(r);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	r->loop = loop;
	r->store = store;
	r->cc = cc;
	settings_from(&r->cfg, cfg);
	rr = uv_timer_init(loop, &r->kick);
	if (rr < 0) {
		free(r->db_path);
		free(r);
		return set_error(err, errlen, rr, "timer: %s", uv_strerror(rr));
	}
	rr = uv_timer_init(loop, &r->drain_timer);
	if (rr < 0) {
		/* The kick timer is initialized: it has to be closed, and r freed after that. */
		r->pending_closes = 1;
		r->closing = true;
		r->kick.data = r;
		uv_close((uv_handle_t *)&r->kick, on_handle_closed);
		return set_error(err, errlen, rr, "timer: %s", uv_strerror(rr));
	}
	*ret = r;
	return 0;
}

void runner_reload(struct runner *r, const struct config *cfg)
{
	settings_from(&r->cfg, cfg);
	runner_kick(r);
}

static int run_add(struct runner *r, int64_t run_id, const struct store_data_run *sr,
		   runner_progress_fn fn, void *userdata, struct run **ret)
{
	struct store_export e = { 0 };
	struct run *run;

	run = calloc(1, sizeof(*run));
	if (!run)
		return -ENOMEM;
	run->runner = r;
	run->run_id = run_id;
	run->export_id = sr->export_id;
	run->trigger = sr->trigger;
	run->dry_run = sr->dry_run;
	run->full = sr->full_resend;
	run->force = sr->force;
	run->resumed_from = sr->resumed_from;
	run->state = STORE_DATA_RUN_QUEUED;
	run->phase = RUNNER_PHASE_QUEUED;
	run->counters = sr->counters;
	atomic_init(&run->pl.cancel, false);
	if (store_config_export_get(r->store, sr->export_id, &e) >= 0) {
		run->connection_id = e.connection_id;
		run->export_name = e.name ? strdup(e.name) : NULL;
		store_export_done(&e);
	} else if (sr->export_name) {
		run->export_name = strdup(sr->export_name);
	}
	if (fn) {
		struct watcher *w = calloc(1, sizeof(*w));

		if (!w) {
			free(run->export_name);
			free(run);
			return -ENOMEM;
		}
		*w = (struct watcher){ .fn = fn, .userdata = userdata };
		run->watchers = w;
	}
	r->n_allocated++;
	run_link(r, run);
	if (ret)
		*ret = run;
	return 0;
}

int runner_request(struct runner *r, const struct runner_request *req, int64_t *ret_run_id,
		   char *err, size_t errlen)
{
	struct store_data_run_request q = {
		.export_id = req->export_id,
		.trigger = req->trigger,
		.dry_run = req->dry_run,
		.full_resend = req->full,
		.force = req->force,
		.requested_by = req->requested_by,
	};
	struct store_data_run sr = { 0 };
	int64_t run_id, active;
	char inner[512];
	int rr;

	if (r->draining || r->closing)
		return set_error(err, errlen, -ESHUTDOWN, "ccsyncd is stopping");
	if (req->trigger == STORE_DATA_TRIGGER_RESUME)
		return set_error(err, errlen, -EINVAL, "resume runs are started by recovery only");
	rr = store_data_run_create(r->store, &q, &run_id, inner, sizeof(inner));
	if (rr == -EBUSY && store_data_run_active(r->store, req->export_id, &active) > 0) {
		struct run *stale = run_find(r, active);

		/* A run whose end could not be recorded (disk full, database locked) still reads
		 * as active in the database though it is over: record its end now, or the export
		 * would refuse every run until a restart (tests/reliability test_disk_full). */
		if (!stale || stale->finalized) {
			enum store_data_run_state to = stale ? stale->state : STORE_DATA_RUN_FAILED;
			const char *why = stale && stale->final_error ? stale->final_error :
					  "the end of the run could not be recorded";

			if (store_data_run_set_state(r->store, active, to, why, inner,
						     sizeof(inner)) >= 0)
				rr = store_data_run_create(r->store, &q, &run_id, inner,
							   sizeof(inner));
			else
				log_full(LOG_WARNING, NULL, "Recording the end of run %" PRId64
					 " failed again: %s", active, inner);
		}
	}
	if (rr == -EBUSY && store_data_run_active(r->store, req->export_id, &active) > 0) {
		struct log_fields fields = { .export_id = req->export_id, .run_id = active };

		if (req->trigger != STORE_DATA_TRIGGER_DEMAND)
			log_full(LOG_INFO, &fields,
				 "Export %" PRId64 ": %s run skipped, run %" PRId64
				 " is still active",
				 req->export_id, store_data_trigger_to_string(req->trigger),
				 active);
		*ret_run_id = active;
		return set_error(err, errlen, -EBUSY,
				 "export already has an active run (run %" PRId64 "); a new "
				 "request is refused, not queued",
				 active);
	}
	if (rr < 0)
		return set_error(err, errlen, rr, "%s", inner);
	sr = (struct store_data_run){ .export_id = req->export_id, .trigger = req->trigger,
				      .dry_run = req->dry_run, .full_resend = req->full,
				      .force = req->force };
	rr = run_add(r, run_id, &sr, req->progress, req->userdata, NULL);
	if (rr < 0) {
		(void)store_data_run_set_state(r->store, run_id, STORE_DATA_RUN_CANCELLED,
					       "out of memory", NULL, 0);
		return set_error(err, errlen, rr, "out of memory");
	}
	runner_kick(r);
	*ret_run_id = run_id;
	return 0;
}

int runner_watch(struct runner *r, int64_t run_id, runner_progress_fn fn, void *userdata)
{
	struct run *run = run_find(r, run_id);
	struct watcher *w;

	if (!run || run->finalized)
		return -ENOENT;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct watcher){ .next = run->watchers, .fn = fn, .userdata = userdata };
	run->watchers = w;
	return 0;
}

void runner_unwatch(struct runner *r, int64_t run_id, runner_progress_fn fn, void *userdata)
{
	struct run *run = run_find(r, run_id);

	if (!run)
		return;
	for (struct watcher **pw = &run->watchers; *pw; pw = &(*pw)->next) {
		struct watcher *w = *pw;

		if (w->fn != fn || w->userdata != userdata || w->removed)
			continue;
		if (run->emitting) {
			w->removed = true;
		} else {
			*pw = w->next;
			free(w);
		}
		return;
	}
}

static void run_cancel(struct run *run, const char *reason)
{
	const char *why = reason ? reason : "cancelled";

	run->refs++;
	if (run->state == STORE_DATA_RUN_QUEUED) {
		run->stop = STOP_CANCEL;
		free(run->stop_msg);
		run->stop_msg = strdup(why);
		run_finalize(run);
	} else {
		run_stop(run, STOP_CANCEL, -ECANCELED, "%s", why);
		/* Cancel is final now: recorded even while a pool step is still running. */
		if (!run->finalized)
			run_finalize(run);
	}
	run_unref(run);
}

int runner_cancel(struct runner *r, int64_t run_id, const char *reason, char *err,
		  size_t errlen)
{
	struct run *run = run_find(r, run_id);
	struct store_data_run *sr = NULL;

	if (!run || run->finalized) {
		if (store_data_run_get(r->store, run_id, &sr, NULL, 0) < 0)
			return set_error(err, errlen, -ENOENT, "no run %" PRId64, run_id);
		store_data_run_free(sr);
		return set_error(err, errlen, -EALREADY, "run %" PRId64 " has already finished",
				 run_id);
	}
	run_cancel(run, reason);
	return 0;
}

static size_t cancel_matching(struct runner *r, int64_t connection_id, int64_t export_id,
			      const char *reason)
{
	size_t n = 0;
	bool again = true;

	/* Cancelling unlinks runs: restart the scan after each one. */
	while (again) {
		again = false;
		for (struct run *run = r->head; run; run = run->next) {
			if (run->finalized)
				continue;
			if ((connection_id && run->connection_id == connection_id) ||
			    (export_id && run->export_id == export_id)) {
				run_cancel(run, reason);
				n++;
				again = true;
				break;
			}
		}
	}
	return n;
}

size_t runner_cancel_connection(struct runner *r, int64_t connection_id, const char *reason)
{
	return cancel_matching(r, connection_id, 0, reason ? reason : "the connection was removed");
}

size_t runner_cancel_export(struct runner *r, int64_t export_id, const char *reason)
{
	return cancel_matching(r, 0, export_id, reason ? reason : "the export was removed");
}

int runner_recover(struct runner *r, char *err, size_t errlen)
{
	struct store_data_recovery rec = { 0 };
	struct store_export *exports = NULL;
	size_t n_exports = 0;
	char inner[512];
	int rr, queued = 0;

	rr = store_data_recover(r->store, &rec, inner, sizeof(inner));
	if (rr < 0)
		return set_error(err, errlen, rr, "run recovery failed: %s", inner);
	for (size_t i = 0; i < rec.n_interrupted; i++) {
		struct log_fields fields = { .run_id = rec.interrupted[i],
					     .message_id = CCSYNC_MSG_RUN_INTERRUPTED };

		log_full(LOG_WARNING, &fields,
			 "Run %" PRId64 " was interrupted by the previous stop of ccsyncd",
			 rec.interrupted[i]);
	}
	for (size_t i = 0; i < rec.n_queued; i++) {
		struct store_data_run *sr = NULL;

		if (store_data_run_get(r->store, rec.queued[i], &sr, inner, sizeof(inner)) < 0)
			continue;
		if (run_add(r, sr->run_id, sr, NULL, NULL, NULL) >= 0)
			queued++;
		store_data_run_free(sr);
	}
	store_data_recovery_done(&rec);

	rr = store_config_export_list(r->store, &exports, &n_exports);
	if (rr < 0)
		return set_error(err, errlen, rr, "listing exports for recovery failed: %s",
				 store_errmsg(r->store));
	for (size_t i = 0; i < n_exports; i++) {
		const struct store_export *e = &exports[i];
		struct store_data_run *runs = NULL;
		struct store_data_run_request q;
		struct log_fields fields;
		size_t n_runs = 0;
		int64_t run_id;
		struct store_data_run sr;

		if (!e->enabled || e->connection_removed)
			continue;
		if (store_data_runs_list(r->store, e->export_id, 0, 1, &runs, &n_runs, inner,
					 sizeof(inner)) < 0 || n_runs == 0) {
			store_data_runs_free(runs, n_runs);
			continue;
		}
		if (runs[0].state != STORE_DATA_RUN_INTERRUPTED || runs[0].dry_run) {
			store_data_runs_free(runs, n_runs);
			continue;
		}
		q = (struct store_data_run_request){
			.export_id = e->export_id,
			.trigger = STORE_DATA_TRIGGER_RESUME,
			.full_resend = runs[0].full_resend,
			.force = runs[0].force,
			.requested_by = runs[0].requested_by,
			.resumed_from = runs[0].run_id,
		};
		rr = store_data_run_create(r->store, &q, &run_id, inner, sizeof(inner));
		if (rr < 0) {
			log_warning("Export \"%s\": cannot resume run %" PRId64 ": %s", e->name,
				    runs[0].run_id, inner);
			store_data_runs_free(runs, n_runs);
			continue;
		}
		fields = (struct log_fields){ .export_id = e->export_id, .run_id = run_id };
		log_full(LOG_INFO, &fields,
			 "Export \"%s\": run %" PRId64 " resumes interrupted run %" PRId64, e->name,
			 run_id, runs[0].run_id);
		sr = (struct store_data_run){ .export_id = e->export_id,
					      .trigger = STORE_DATA_TRIGGER_RESUME,
					      .full_resend = q.full_resend, .force = q.force,
					      .resumed_from = q.resumed_from };
		if (run_add(r, run_id, &sr, NULL, NULL, NULL) >= 0)
			queued++;
		store_data_runs_free(runs, n_runs);
	}
	store_export_array_free(exports, n_exports);
	runner_kick(r);
	return queued;
}

size_t runner_foreach(struct runner *r, runner_foreach_fn fn, void *userdata)
{
	struct runner_progress p;
	size_t n = 0;

	for (struct run *run = r->head; run; run = run->next) {
		if (run->finalized)
			continue;
		run_fill_progress(run, &p);
		fn(&p, userdata);
		n++;
	}
	return n;
}

size_t runner_active(const struct runner *r)
{
	size_t n = 0;

	for (const struct run *run = r->head; run; run = run->next)
		n += !run->finalized;
	return n;
}

/* ------------------------------------------------------------------ drain and close */

static void on_handle_closed(uv_handle_t *h)
{
	struct runner *r = h->data;

	r->pending_closes--;
	runner_maybe_done(r);
}

/* Drain completes when no run is running and no pool step is left; close when that and the
 * handles are closed. */
static void runner_maybe_done(struct runner *r)
{
	bool idle = r->n_allocated == 0;

	if (r->draining && r->drain_done) {
		bool running = false;

		for (struct run *run = r->head; run; run = run->next)
			running |= !run->finalized && run->state == STORE_DATA_RUN_RUNNING;
		if (!running && r->n_allocated == 0) {
			runner_done_fn done = r->drain_done;

			r->drain_done = NULL;
			uv_timer_stop(&r->drain_timer);
			done(r->drain_userdata);
		}
	}
	if (r->closing && idle && r->pending_closes == 0) {
		runner_done_fn cb = r->on_closed;
		void *ud = r->closed_userdata;

		free(r->db_path);
		free(r);
		if (cb)
			cb(ud);
	}
}

/* Drops queued runs from memory (they stay queued in the database). */
static void drop_queued(struct runner *r)
{
	bool again = true;

	while (again) {
		again = false;
		for (struct run *run = r->head; run; run = run->next) {
			if (run->finalized || run->state != STORE_DATA_RUN_QUEUED)
				continue;
			free(run->stop_msg);
			run->stop_msg = strdup("ccsyncd stopped before the run started; it starts "
					       "at the next start");
			run->stop = STOP_INTERRUPT;
			run_finalize(run);
			again = true;
			break;
		}
	}
}

static void interrupt_all(struct runner *r)
{
	bool again = true;

	while (again) {
		again = false;
		for (struct run *run = r->head; run; run = run->next) {
			if (run->finalized || run->stop >= STOP_INTERRUPT)
				continue;
			run_stop(run, STOP_INTERRUPT, -ESHUTDOWN,
				 "ccsyncd was stopped during the run; the next start resumes it");
			again = true;
			break;
		}
	}
}

static void on_drain_timeout(uv_timer_t *t)
{
	struct runner *r = container_of(t, struct runner, drain_timer);

	r->drain_timed_out = true;
	/* POSTs still on the wire are given up: their batches are recorded abandoned. */
	for (struct run *run = r->head; run;) {
		struct run *next;

		run->refs++;
		if (!run->finalized) {
			ccclient_cancel_owner(r->cc, &run->post_owner);
			run_check_done(run);
		}
		next = run->linked ? run->next : r->head;
		run_unref(run);
		run = next;
	}
	runner_maybe_done(r);
}

void runner_drain(struct runner *r, uint32_t timeout_ms, runner_done_fn done, void *userdata)
{
	r->draining = true;
	r->drain_done = done;
	r->drain_userdata = userdata;
	uv_timer_stop(&r->kick);
	drop_queued(r);
	interrupt_all(r);
	if (r->drain_done)
		(void)uv_timer_start(&r->drain_timer, on_drain_timeout, timeout_ms, 0);
	runner_maybe_done(r);
}

void runner_close(struct runner *r, runner_done_fn on_closed, void *userdata)
{
	if (!r || r->closing)
		return;
	if (!r->draining)
		runner_drain(r, 0, NULL, NULL);
	if (!r->drain_timed_out)
		on_drain_timeout(&r->drain_timer);
	r->drain_done = NULL;
	r->closing = true;
	r->on_closed = on_closed;
	r->closed_userdata = userdata;
	r->pending_closes = 2;
	r->kick.data = r;
	r->drain_timer.data = r;
	uv_close((uv_handle_t *)&r->kick, on_handle_closed);
	uv_close((uv_handle_t *)&r->drain_timer, on_handle_closed);
}
