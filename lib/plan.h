/* SPDX-License-Identifier: MIT */
/*
 * A run's plan: which of an export's segment members become Constant Contact contacts to send,
 * which are unchanged since the last confirmed send, which are rejected (and why), and, in mirror
 * mode, which previously synced contacts have departed from the segments.
 *
 * The plan is a stream. plan_new() pins one read snapshot of the database; plan_next() then reads
 * the members in profile_id order (no sort), one item at a time. The only state that grows with
 * the export is a table of 20 bytes per distinct email (64-bit email key, sync-state fields hash,
 * flags), about 27 MB for a million emails: no contact's field values are held beyond its item.
 * The run executor drives plan_next() batch by batch and hands each contact's fields to the CC
 * batch encoder.
 *
 * Mapping. The email target takes exports.email_field; first_name / last_name take the optional
 * first_name_field / last_name_field; every export_fields row maps a profile attribute (source) to
 * a CC import key (target): a standard key such as job_title or street, or "cf:<name>" for a
 * custom field. Sources name top-level keys of the profile's JSON attribute document, matched
 * exactly; when a document repeats a key, the first occurrence counts (as in SQLite's
 * json_extract).
 *
 * Attribute values → CC strings:
 *   JSON string    its text, unescaped (UTF-8); "" counts as no value
 *   JSON number    its text exactly as written upstream ("42", "-1.50", "1e3")
 *   true / false   "true" / "false"
 *   null, absent   no value: the key is left out of the contact, so CC keeps what it has
 *   object, array  the row is rejected (field_not_scalar)
 * Strings with invalid UTF-8, an escaped NUL or a lone surrogate are rejected (field_invalid).
 * Length limits are CC's import maxLength in characters (code points): 50 for email, names and
 * most keys, 255 for cf: keys and street keys, 16 for sms_number and sms_consent_date.
 * The email attribute must be a JSON string; see email.h for normalisation and validation.
 *
 * Dedup. Members are deduplicated by normalised email: among the members sharing one, the one with
 * the lowest profile_id (bytewise, SQLite's BINARY order) wins, whatever happens to it next
 * (e.g. it may itself be rejected for an over-long field); every other one is rejected as a
 * duplicate naming the winner. The rule depends only on the snapshot, never on insertion order.
 * Emails are compared through a 64-bit hash of the normalised address: two with equal keys
 * (about one chance in 10^7 per run with two million addresses) would make the later one a false
 * duplicate, or hide a departure; a sync-state comparison cannot be fooled by it, since the field
 * hash covers the email itself.
 *
 * Order. Members in profile_id order (each member's send, unchanged or rejection in place), then
 * the duplicates in profile_id order, then (mirror mode) the departed contacts in email order.
 * The same snapshot and options always give the same sequence, so a resumed run re-plans the
 * same way.
 *
 * Field hash. 64-bit SipHash-2-4 with the fixed key "ccsync-fields-v1" over the canonical
 * encoding of the contact as sent: for each field present, in send order (email, first_name,
 * last_name, then the other targets in bytewise target order), the target's bytes, a 0x00 byte,
 * the value's length as 4 bytes little-endian, and the value's bytes. Absent fields contribute
 * nothing; target names make the encoding unambiguous, and a mapping change changes the hash (so
 * the contact is re-sent with its new field). Stored in sync_state.fields_hash as a signed 64-bit
 * integer with the same bits. The encoding and key are persistent: changing them re-sends every
 * contact once.
 *
 * Diff against sync_state (rows of this export, keyed by normalised email):
 *   no row                                   → send (new)
 *   synced, confirmed by a run being resumed,
 *     same hash                              → already sent (counted as sent, not in the stream)
 *   synced, same hash, not full resend       → unchanged
 *   rejected (CC refused it), same hash,
 *     not full resend                        → rejected: previously_rejected
 *   anything else                            → send (changed; "new" when the row only
 *                                              remembers CC refusing a contact ccsync never
 *                                              got onto the list)
 *
 * Counters (struct plan_counters), complete once plan_next() returned 0:
 *   selected = to_send + already_sent + rejected + unchanged
 * Every distinct member profile counts exactly once in selected and in exactly one of the other
 * four. Departed contacts (mirror mode only) are not members and stand outside that sum:
 *   departed = departed_ours + departed_not_ours
 * where a departed contact is a sync_state row whose email no member has any more (a member
 * rejected for an over-long field or as a duplicate still "has" its email, so it is not
 * departed), except rows that only remember CC refusing a contact ccsync never got onto the list
 * (state rejected, added_by_ccsync = 0); departed_ours are the rows with added_by_ccsync = 1
 * (removal candidates) and departed_not_ours the contacts that were on the list before ccsync and
 * are kept. A run's `removed` counter is the number of departed_ours whose removal CC confirmed.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store-data.h"
#include "store.h"

#define PLAN_MAX_FIELDS 100	  /* export_fields rows per export (CC allows 100 custom fields) */
#define PLAN_MAX_FIELD_LENGTH 255 /* largest CC maxLength of any key we send */

enum plan_reason {
	PLAN_REASON_PROFILE_MISSING,	/* a segment member without a profile row */
	PLAN_REASON_PROFILE_ID_INVALID, /* a profile id with a NUL byte or invalid UTF-8 */
	PLAN_REASON_ATTRIBUTES_INVALID, /* an attribute document that is not a JSON object */
	PLAN_REASON_EMAIL_MISSING,	/* email attribute absent, null or empty */
	PLAN_REASON_EMAIL_INVALID,	/* see email.h; the reason text names the rule */
	PLAN_REASON_FIELD_TOO_LONG,
	PLAN_REASON_FIELD_NOT_SCALAR,
	PLAN_REASON_FIELD_INVALID,
	PLAN_REASON_DUPLICATE,
	PLAN_REASON_PREVIOUSLY_REJECTED,
	_PLAN_REASON_MAX,
};

/* Stable codes stored in rejected_rows.reason_code ("profile_missing", "duplicate", ...). */
const char *plan_reason_to_string(enum plan_reason r);

enum plan_item_kind {
	PLAN_ITEM_SEND = 1 << 0,
	PLAN_ITEM_REJECT = 1 << 1,
	PLAN_ITEM_DEPART = 1 << 2,
};
#define PLAN_ITEMS_ALL (PLAN_ITEM_SEND | PLAN_ITEM_REJECT | PLAN_ITEM_DEPART)

struct plan_field {
	const char *key;   /* CC import key: "email", "first_name", "job_title", "cf:tier", ... */
	const char *value; /* UTF-8, NUL-terminated, never empty */
	size_t len;	   /* bytes */
};

/* One plan item. Every pointer is borrowed from the plan and valid until its next call. */
struct plan_item {
	enum plan_item_kind kind;
	const char *profile_id; /* SEND, REJECT; NULL for DEPART */
	/* SEND, DEPART: the normalised email. REJECT: normalised when it was valid, else the
	 * attribute's text as found (NULL when missing or not a string). */
	const char *email;
	/* SEND: the hash to record when CC confirms the contact. REJECT: the hash of the content
	 * for previously_rejected, else 0. */
	uint64_t fields_hash;

	/* SEND */
	/* Not known to be on the list (no sync_state row, or only CC's refusal of a contact
	 * ccsync never got onto it): an add rather than an update. */
	bool is_new;
	const struct plan_field *fields; /* email first; fields without a value are left out */
	size_t n_fields;

	/* REJECT */
	enum plan_reason reason;
	const char *reason_code; /* plan_reason_to_string(reason) */
	const char *reason_text; /* one sentence for the operator */

	/* DEPART */
	bool added_by_ccsync;	/* true: a removal candidate; false: kept, ccsync did not add it */
	const char *contact_id; /* NULL when sync_state does not know it */
};

struct plan_options {
	bool full_resend; /* send every valid winner, even unchanged or previously rejected ones */
	/* Runs whose confirmed contacts count as already sent: store_data_run_resume_chain() of
	 * the run being executed. Borrowed; may be NULL/0. */
	const int64_t *resume_run_ids;
	size_t n_resume_run_ids;
	/* PLAN_ITEM_* kinds plan_next returns (0 = all); the others are only counted. */
	unsigned items;
	/* 0, or max_profiles_per_export: plan_new fails with -E2BIG when more members are
	 * selected, before allocating anything in proportion to them. */
	uint64_t max_selected;
};

struct plan_counters {
	uint64_t selected;
	uint64_t to_send;
	uint64_t to_send_new; /* of to_send: no synced sync_state row */
	uint64_t already_sent;
	uint64_t unchanged;
	uint64_t rejected;
	uint64_t rejected_by_reason[_PLAN_REASON_MAX];
	uint64_t departed; /* mirror mode only; 0 in upsert mode */
	uint64_t departed_ours;
	uint64_t departed_not_ours;
};

struct plan;

/*
 * Starts the plan of export_id on s: opens a read transaction (the run's snapshot), loads and
 * checks the export's mapping, counts the members (plan_selected, for the cap check) and loads the
 * export's sync state into the key table. The members themselves are read by plan_next.
 *
 * s must not be inside a transaction, and it stays inside the plan's read transaction until
 * plan_free(): a connection with an open read transaction cannot write, so give a plan a store
 * connection of its own (store_open on the same path) and write run state through another. Use
 * one thread at a time per plan; the plan touches nothing but its connection, so it may run on a
 * worker thread. A long-lived snapshot delays WAL checkpoints (the WAL grows by what upstream
 * writes meanwhile) but never blocks writers.
 *
 * -EBUSY if s is inside a transaction, -ENOENT if the export does not exist or was removed,
 * -EINVAL with the problem in err if its mapping is invalid (unknown target, over-long or
 * duplicate key, more than PLAN_MAX_FIELDS fields), -E2BIG when more members than
 * o->max_selected are selected (err says how many), other negative errnos from the store.
 */
int plan_new(struct store *s, int64_t export_id, const struct plan_options *o, struct plan **ret,
	     char *err, size_t errlen);

/* Ends the read transaction and frees everything. NULL-safe; returns NULL. */
struct plan *plan_free(struct plan *p);

/* Distinct member profiles in the snapshot; known as soon as plan_new returned. */
uint64_t plan_selected(const struct plan *p);

/* The export the plan was made for (borrowed). */
const struct store_data_export *plan_export(const struct plan *p);

/*
 * Advances to the next item of a kind in the options' mask: returns 1 and the item in *ret (valid
 * until the next call), 0 at the end of the plan, or a negative errno.
 */
int plan_next(struct plan *p, const struct plan_item **ret, char *err, size_t errlen);

/* Counters so far; complete (and adding up as described above) once plan_next returned 0. */
const struct plan_counters *plan_counters(const struct plan *p);

/*
 * Starts the stream over in the same snapshot, returning kinds in items (0 = all) this time, e.g.
 * a first pass for the counters and rejected rows and a second for sending. Reloads the key
 * table; on failure the plan can only be freed.
 */
int plan_rewind(struct plan *p, unsigned items, char *err, size_t errlen);

/*
 * Mapping checks, shared with `export add|edit`: the CC maxLength of a target (50, 255, 16), or
 * -EINVAL if target is not an import key ccsync sends. email, first_name and last_name are
 * targets of their own export columns and are refused here (as export_fields targets).
 */
int plan_target_max_length(const char *target);
int plan_target_check(const char *target, char *err, size_t errlen);

/* Checks a whole export definition the way plan_new does; 0 or -EINVAL with the problem in err. */
int plan_mapping_check(const struct store_data_export *e, char *err, size_t errlen);

/* The field hash of a contact given in send order (see above). */
uint64_t plan_fields_hash(const struct plan_field *fields, size_t n);
