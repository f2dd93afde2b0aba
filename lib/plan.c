/* SPDX-License-Identifier: MIT */
/*
 * The plan of a run (rules in plan.h). One pass over the members, in profile_id order, with no
 * sort anywhere:
 *
 *   - each member's attribute document is read once by a small JSON scanner that picks the mapped
 *     top-level keys, normalises the email and decodes the values to CC strings (digest_row);
 *   - a key table holds one 20-byte slot per distinct email: the 64-bit key (SipHash of the
 *     normalised email), the sync-state fields hash and flags of that email, and the ordinal of
 *     the member that won it. It is loaded from sync_state first; a member finds its email's slot
 *     in O(1): no slot or a different hash means send, an equal hash means unchanged (and so on,
 *     see plan.h), an email already won means duplicate. Members come in profile_id order, so the
 *     first member of an email is the one with the lowest profile_id;
 *   - duplicates are counted when met but handed out after the members, once a cheap ids-only
 *     pass has found the winners' profile ids by ordinal (only winners of duplicates are kept);
 *   - in mirror mode a last pass over sync_state hands out the rows whose email no member had.
 *
 * Memory: the key table (about 27 MB for a million emails) and the pending duplicates (8 bytes
 * each); no field value outlives its item. Equal 64-bit keys for different emails (about one
 * chance in 10^7 per run at two million emails) would make the later one a false duplicate, or
 * hide a departure; a sync-state comparison cannot be fooled, as the fields hash covers the email.
 *
 * digest_row() encodes one member into a buffer that handle_keyed()/handle_unkeyed() decode
 * (private to this file):
 *
 *   keyed:    0x01 email 0x00 profile_id 0x00 n value*n
 *   unkeyed:  0x00 reason be16(len) profile_id detail be16(len) raw_email
 *
 * A mapped value is a tag and its payload: VALUE be16(len) bytes (the CC string), ABSENT,
 * NOT_SCALAR kind ('o' or 'a'), INVALID (bad Unicode), TOO_LONG be32(length in characters).
 */
#include "plan.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "email.h"
#include "store-data.h"
#include "utf8.h"
#include "util.h"

#define MAX_TARGETS (PLAN_MAX_FIELDS + 3) /* + email, first_name, last_name */
#define RAW_EMAIL_MAX 254		  /* bytes of an invalid email kept for the report */
#define EMAIL_SCAN_MAX 1024		  /* decoded bytes of an email attribute examined */
#define REASON_MAX 2048

enum digest_class { CLASS_UNKEYED = 0x00, CLASS_KEYED = 0x01 };

enum tag {
	TAG_ABSENT = 0,
	TAG_VALUE = 1,
	TAG_NOT_SCALAR = 2,
	TAG_INVALID = 3,
	TAG_TOO_LONG = 4,
};

/* Detail byte of an unkeyed EMAIL_INVALID digest when the attribute was not a string. */
#define DETAIL_NOT_STRING 0x80

struct target {
	const char *key;
	const char *source;
	size_t source_len;
	int max_len;
};

struct buf {
	unsigned char *data;
	size_t len, cap;
};

/*
 * The key table: open addressing with linear probing. Key 0 marks a free slot. aux packs the
 * flags below and, for an email a member has won, that member's ordinal.
 */
#define AUX_SYNCED (1u << 31)  /* a sync_state row in state synced */
#define AUX_REFUSED (1u << 30) /* a sync_state row in state rejected */
#define AUX_ADDED (1u << 29)   /* added_by_ccsync */
#define AUX_CHAIN (1u << 28)   /* confirmed by a run being resumed */
#define AUX_SEEN (1u << 27)    /* a member has this email */
#define AUX_ORDINAL ((1u << 27) - 1)
#define MAX_MEMBERS AUX_ORDINAL

struct slot {
	uint64_t key;
	uint64_t hash;
	uint32_t aux;
} __attribute__((packed)); /* 20 bytes: one miss per probe, a million emails in 25 MB */

struct keytab {
	struct slot *slots;
	size_t bytes;
	size_t cap, n;
};

struct dup {
	uint32_t loser, winner; /* ordinals */
};

#define PIPELINE 8

/* One member, digested. */
struct pending {
	struct buf buf;
	uint64_t key; /* email key, for keyed digests */
	uint32_t ordinal;
};

enum phase {
	PHASE_MEMBERS,
	PHASE_DUPLICATES,
	PHASE_DEPARTED,
	PHASE_DONE,
};

struct plan {
	struct store *store;
	struct store_data_export *export;
	bool full_resend;
	int64_t *resume_ids;
	size_t n_resume_ids;
	unsigned items;
	uint64_t members_estimate;

	struct target targets[MAX_TARGETS]; /* [0] is email; then send order */
	size_t n_targets;

	/* Members are digested PIPELINE rows ahead of their key table lookup, so that the
	 * prefetch of their slot has long landed when the lookup comes (a miss per member
	 * otherwise dominates the plan's cost). */
	struct pending ring[PIPELINE];
	size_t ring_head, ring_count;
	bool members_end;
	struct pending lookup; /* a duplicate's profile, read again */
	struct buf scratch;    /* decoded email, unescaped keys */

	struct keytab tab;
	struct store_data_member_scan *members;
	struct store_data_sync_scan *sync;    /* keys and hashes, for the key table */
	struct store_data_sync_scan *departs; /* whole rows, for the departed (mirror mode) */
	enum phase phase;
	uint64_t ordinal; /* members read in this pass */

	/* duplicates, resolved after the members */
	struct dup *dups;
	size_t n_dups, cap_dups;
	size_t next_dup;
	uint32_t *winner_ords; /* sorted, unique */
	char **winner_pids;
	size_t n_winners;
	struct store_data_member_scan *ids;
	uint64_t ids_ordinal;

	/* the item handed out */
	struct plan_item item;
	struct plan_field fields[MAX_TARGETS];
	struct buf values;
	char email[EMAIL_MAX_LENGTH + 1];
	char reason[REASON_MAX];

	struct plan_counters counters;
};

/* ---- small helpers --------------------------------------------------------------------------- */

static int buf_reserve(struct buf *b, size_t more)
{
	size_t need = b->len + more;
	unsigned char *n;
	size_t cap;

	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	n = realloc(b->data, cap);
	if (!n)
		return -ENOMEM;
	b->data = n;
	b->cap = cap;
	return 0;
}

static int buf_put(struct buf *b, const void *p, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return -ENOMEM;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static int buf_byte(struct buf *b, unsigned char c)
{
	return buf_put(b, &c, 1);
}

static int buf_be16(struct buf *b, size_t v)
{
	unsigned char tmp[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	return buf_put(b, tmp, 2);
}

static int buf_be32(struct buf *b, uint64_t v)
{
	unsigned char tmp[4];

	if (v > UINT32_MAX)
		v = UINT32_MAX;
	tmp[0] = (unsigned char)(v >> 24);
	tmp[1] = (unsigned char)(v >> 16);
	tmp[2] = (unsigned char)(v >> 8);
	tmp[3] = (unsigned char)v;
	return buf_put(b, tmp, 4);
}

static void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){};
}

/* ---- targets --------------------------------------------------------------------------------- */

/* Constant Contact's contacts_json_import keys and their maxLength
 * (tests/fakecc/cc_v3_subset.json). birthday_month, birthday_day (integers) and anniversary (a
 * date) are left out: ccsync sends strings, and CC refuses a whole activity over a wrongly typed
 * value. */
static const struct {
	const char *key;
	int max_len;
} cc_keys[] = {
	{ "city", 50 },		 { "company_name", 50 },  { "country", 50 },
	{ "email", 50 },	 { "first_name", 50 },	  { "home country", 50 },
	{ "home_city", 50 },	 { "home_phone", 50 },	  { "home_state", 50 },
	{ "home_street", 255 },	 { "home_street2", 255 }, { "home_zip", 50 },
	{ "job_title", 50 },	 { "last_name", 50 },	  { "mobile_phone", 50 },
	{ "other_city", 50 },	 { "other_country", 50 }, { "other_phone", 50 },
	{ "other_state", 50 },	 { "other_street", 255 }, { "other_street2", 255 },
	{ "other_zip", 50 },	 { "phone", 50 },	  { "sms_consent_date", 16 },
	{ "sms_number", 16 },	 { "state", 50 },	  { "street", 255 },
	{ "street2", 255 },	 { "work_city", 50 },	  { "work_country", 50 },
	{ "work_phone", 50 },	 { "work_state", 50 },	  { "work_street", 255 },
	{ "work_street2", 255 }, { "work_zip", 50 },	  { "zip", 50 },
};

#define CUSTOM_FIELD_PREFIX "cf:"
#define CUSTOM_FIELD_NAME_MAX 50
#define CUSTOM_FIELD_MAX_LENGTH 255

static int key_max_length(const char *key)
{
	if (strncmp(key, CUSTOM_FIELD_PREFIX, strlen(CUSTOM_FIELD_PREFIX)) == 0) {
		const char *name = key + strlen(CUSTOM_FIELD_PREFIX);
		size_t n = strlen(name);

		if (n == 0 || n > CUSTOM_FIELD_NAME_MAX)
			return -EINVAL;
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)name[i] <= ' ' || (unsigned char)name[i] >= 0x7f)
				return -EINVAL;
		return CUSTOM_FIELD_MAX_LENGTH;
	}
	for (size_t i = 0; i < ELEMENTSOF(cc_keys); i++)
		if (streq(cc_keys[i].key, key))
			return cc_keys[i].max_len;
	return -EINVAL;
}

static bool reserved_target(const char *t)
{
	return streq(t, "email") || streq(t, "first_name") || streq(t, "last_name");
}

int plan_target_max_length(const char *target)
{
	if (!target || reserved_target(target))
		return -EINVAL;
	return key_max_length(target);
}

int plan_target_check(const char *target, char *err, size_t errlen)
{
	if (!target || !*target)
		return set_error(err, errlen, -EINVAL, "a mapping target is empty");
	if (reserved_target(target))
		return set_error(err, errlen, -EINVAL,
				 "'%s' is mapped with the export's own %s option, not as a further "
				 "field",
				 target, streq(target, "email") ? "email field" : "name field");
	if (plan_target_max_length(target) < 0) {
		if (strncmp(target, CUSTOM_FIELD_PREFIX, strlen(CUSTOM_FIELD_PREFIX)) == 0)
			return set_error(err, errlen, -EINVAL,
					 "'%s': a custom field is 'cf:' followed by 1 to %d "
					 "printable ASCII characters without spaces",
					 target, CUSTOM_FIELD_NAME_MAX);
		return set_error(
			err, errlen, -EINVAL,
			"'%s' is not a Constant Contact import field; use a standard key "
			"such as job_title, phone or street, or cf:<name> for a custom field",
			target);
	}
	return 0;
}

static int check_source(const char *what, const char *source, char *err, size_t errlen)
{
	if (!source || !*source)
		return set_error(err, errlen, -EINVAL, "%s: the profile attribute is empty", what);
	if (strlen(source) > 200)
		return set_error(err, errlen, -EINVAL,
				 "%s: profile attribute names are at most 200 bytes", what);
	return 0;
}

int plan_mapping_check(const struct store_data_export *e, char *err, size_t errlen)
{
	int r;

	r = check_source("email", e->email_field, err, errlen);
	if (r < 0)
		return r;
	if (e->first_name_field &&
	    (r = check_source("first_name", e->first_name_field, err, errlen)) < 0)
		return r;
	if (e->last_name_field &&
	    (r = check_source("last_name", e->last_name_field, err, errlen)) < 0)
		return r;
	if (e->n_fields > PLAN_MAX_FIELDS)
		return set_error(err, errlen, -EINVAL,
				 "export %s maps %zu fields; at most %d are supported",
				 e->name ?: "?", e->n_fields, PLAN_MAX_FIELDS);
	for (size_t i = 0; i < e->n_fields; i++) {
		r = plan_target_check(e->fields[i].target, err, errlen);
		if (r < 0)
			return r;
		r = check_source(e->fields[i].target, e->fields[i].source, err, errlen);
		if (r < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (streq(e->fields[i].target, e->fields[j].target))
				return set_error(err, errlen, -EINVAL,
						 "target '%s' is mapped twice",
						 e->fields[i].target);
	}
	return 0;
}

static int target_cmp(const void *a, const void *b)
{
	return strcmp(((const struct target *)a)->key, ((const struct target *)b)->key);
}

static void add_target(struct plan *p, const char *key, const char *source, int max_len)
{
	p->targets[p->n_targets++] = (struct target){
		.key = key,
		.source = source,
		.source_len = strlen(source),
		.max_len = max_len,
	};
}

/* Send order: email, first_name, last_name, then the other targets in bytewise order. */
static void build_targets(struct plan *p)
{
	const struct store_data_export *e = p->export;
	size_t first_other;

	p->n_targets = 0;
	add_target(p, "email", e->email_field, EMAIL_MAX_LENGTH);
	if (e->first_name_field)
		add_target(p, "first_name", e->first_name_field, 50);
	if (e->last_name_field)
		add_target(p, "last_name", e->last_name_field, 50);
	first_other = p->n_targets;
	for (size_t i = 0; i < e->n_fields; i++)
		add_target(p, e->fields[i].target, e->fields[i].source,
			   key_max_length(e->fields[i].target));
	qsort(p->targets + first_other, p->n_targets - first_other, sizeof(p->targets[0]),
	      target_cmp);
}

/* ---- SipHash-2-4 ----------------------------------------------------------------------------- */

struct siphash {
	uint64_t v0, v1, v2, v3;
	uint64_t tail;
	size_t ntail;
	uint64_t len;
};

#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND(h)                                                                                \
	do {                                                                                       \
		(h)->v0 += (h)->v1;                                                                \
		(h)->v1 = ROTL((h)->v1, 13);                                                       \
		(h)->v1 ^= (h)->v0;                                                                \
		(h)->v0 = ROTL((h)->v0, 32);                                                       \
		(h)->v2 += (h)->v3;                                                                \
		(h)->v3 = ROTL((h)->v3, 16);                                                       \
		(h)->v3 ^= (h)->v2;                                                                \
		(h)->v0 += (h)->v3;                                                                \
		(h)->v3 = ROTL((h)->v3, 21);                                                       \
		(h)->v3 ^= (h)->v0;                                                                \
		(h)->v2 += (h)->v1;                                                                \
		(h)->v1 = ROTL((h)->v1, 17);                                                       \
		(h)->v1 ^= (h)->v2;                                                                \
		(h)->v2 = ROTL((h)->v2, 32);                                                       \
	} while (0)

static uint64_t le64(const unsigned char *p)
{
	uint64_t v;

	/* One unaligned load (the byte loop it replaces was not always merged into one). */
	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

static void siphash_init(struct siphash *h, const char key[16])
{
	uint64_t k0 = le64((const unsigned char *)key), k1 = le64((const unsigned char *)key + 8);

	*h = (struct siphash){
		.v0 = k0 ^ 0x736f6d6570736575ull,
		.v1 = k1 ^ 0x646f72616e646f6dull,
		.v2 = k0 ^ 0x6c7967656e657261ull,
		.v3 = k1 ^ 0x7465646279746573ull,
	};
}

static void siphash_block(struct siphash *h, uint64_t m)
{
	h->v3 ^= m;
	SIPROUND(h);
	SIPROUND(h);
	h->v0 ^= m;
}

static void siphash_update(struct siphash *h, const void *data, size_t n)
{
	const unsigned char *p = data;

	h->len += n;
	while (n > 0 && h->ntail > 0) {
		h->tail |= (uint64_t)*p++ << (8 * h->ntail);
		n--;
		if (++h->ntail == 8) {
			siphash_block(h, h->tail);
			h->tail = 0;
			h->ntail = 0;
		}
	}
	for (; n >= 8; n -= 8, p += 8)
		siphash_block(h, le64(p));
	for (; n > 0; n--)
		h->tail |= (uint64_t)*p++ << (8 * h->ntail++);
}

static uint64_t siphash_final(struct siphash *h)
{
	uint64_t b = (h->len << 56) | h->tail;

	siphash_block(h, b);
	h->v2 ^= 0xff;
	for (int i = 0; i < 4; i++)
		SIPROUND(h);
	return h->v0 ^ h->v1 ^ h->v2 ^ h->v3;
}

static const char hash_key[16] = { 'c', 'c', 's', 'y', 'n', 'c', '-', 'f',
				   'i', 'e', 'l', 'd', 's', '-', 'v', '1' };

/* The canonical encoding of one field (plan.h): key, 0x00, length (4 bytes LE), value. */
static size_t encode_field(unsigned char *out, const struct plan_field *f)
{
	size_t k = strlen(f->key);

	memcpy(out, f->key, k + 1); /* with its NUL: the 0x00 separator */
	out[k + 1] = (unsigned char)f->len;
	out[k + 2] = (unsigned char)(f->len >> 8);
	out[k + 3] = (unsigned char)(f->len >> 16);
	out[k + 4] = (unsigned char)(f->len >> 24);
	memcpy(out + k + 5, f->value, f->len);
	return k + 5 + f->len;
}

uint64_t plan_fields_hash(const struct plan_field *fields, size_t n)
{
	unsigned char buf[2048];
	struct siphash h;
	size_t used = 0;

	/* Encode into a block and hash it in one go (8 bytes per round); flush when full. */
	siphash_init(&h, hash_key);
	for (size_t i = 0; i < n; i++) {
		size_t need = strlen(fields[i].key) + 5 + fields[i].len;

		if (used + need > sizeof(buf)) {
			siphash_update(&h, buf, used);
			used = 0;
		}
		if (need > sizeof(buf)) {
			size_t len = fields[i].len;
			unsigned char n4[4] = { (unsigned char)len, (unsigned char)(len >> 8),
						(unsigned char)(len >> 16),
						(unsigned char)(len >> 24) };

			/* Only a caller's huge field gets here (plan values are at most 1 KiB). */
			siphash_update(&h, fields[i].key, strlen(fields[i].key) + 1);
			siphash_update(&h, n4, sizeof(n4));
			siphash_update(&h, fields[i].value, len);
			continue;
		}
		used += encode_field(buf + used, &fields[i]);
	}
	siphash_update(&h, buf, used);
	return siphash_final(&h);
}

/* ---- JSON scanning --------------------------------------------------------------------------- */

/*
 * A forward-only reader of the top level of an attribute document: it locates members and their
 * values without building a tree (SQLite already guarantees the column holds valid JSON; the
 * reader still refuses anything malformed rather than trusting that).
 */
struct json_member {
	const char *key; /* raw, between the quotes */
	size_t key_len;
	bool key_escaped;
	const char *value; /* raw value text */
	size_t value_len;
};

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* p at the opening quote; returns the position after the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *end, bool *ret_escaped)
{
	const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
	bool escaped = false;

	/* Most strings hold no backslash: then the first quote closes them, and two vectorised
	 * searches beat a byte loop. */
	if (q && !memchr(p + 1, '\\', (size_t)(q - p - 1))) {
		if (ret_escaped)
			*ret_escaped = false;
		return q + 1;
	}
	for (p++; p < end; p++) {
		if (*p == '"') {
			if (ret_escaped)
				*ret_escaped = escaped;
			return p + 1;
		}
		if (*p == '\\') {
			escaped = true;
			if (++p >= end)
				return NULL;
		}
	}
	return NULL;
}

static const char *skip_value(const char *p, const char *end)
{
	size_t depth = 0;

	if (p >= end)
		return NULL;
	switch (*p) {
	case '"':
		return skip_string(p, end, NULL);
	case 't':
		return end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
	case 'f':
		return end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
	case 'n':
		return end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
	case '{':
	case '[':
		/* Nesting is only skipped, never interpreted: count brackets outside strings. */
		while (p < end) {
			if (*p == '"') {
				p = skip_string(p, end, NULL);
				if (!p)
					return NULL;
				continue;
			}
			if (*p == '{' || *p == '[')
				depth++;
			else if (*p == '}' || *p == ']') {
				if (--depth == 0)
					return p + 1;
			}
			p++;
		}
		return NULL;
	default:
		if (*p != '-' && !(*p >= '0' && *p <= '9'))
			return NULL;
		while (p < end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' ||
				   *p == '.' || *p == 'e' || *p == 'E'))
			p++;
		return p;
	}
}

/* Positions *pos after '{'. */
static int json_open(const char **pos, const char *end)
{
	const char *p = skip_ws(*pos, end);

	if (p >= end || *p != '{')
		return -EINVAL;
	*pos = p + 1;
	return 0;
}

/* 1 and the next member, 0 at the closing brace, -EINVAL when malformed. */
static int json_next(const char **pos, const char *end, struct json_member *m)
{
	const char *p = skip_ws(*pos, end), *q;

	if (p < end && *p == ',')
		p = skip_ws(p + 1, end);
	if (p >= end)
		return -EINVAL;
	if (*p == '}')
		return 0;
	if (*p != '"')
		return -EINVAL;
	q = skip_string(p, end, &m->key_escaped);
	if (!q)
		return -EINVAL;
	m->key = p + 1;
	m->key_len = (size_t)(q - p - 2);
	p = skip_ws(q, end);
	if (p >= end || *p != ':')
		return -EINVAL;
	p = skip_ws(p + 1, end);
	q = skip_value(p, end);
	if (!q)
		return -EINVAL;
	m->value = p;
	m->value_len = (size_t)(q - p);
	p = skip_ws(q, end);
	if (p >= end || (*p != ',' && *p != '}'))
		return -EINVAL;
	*pos = p;
	return 1;
}

static int hex4(const char *p, const char *end, uint32_t *ret)
{
	uint32_t v = 0;

	if (end - p < 4)
		return -EINVAL;
	for (int i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (uint32_t)(c - 'A' + 10);
		else
			return -EINVAL;
	}
	*ret = v;
	return 0;
}

static size_t utf8_encode(uint32_t cp, unsigned char out[4])
{
	if (cp < 0x80) {
		out[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (unsigned char)(0xc0 | (cp >> 6));
		out[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (unsigned char)(0xe0 | (cp >> 12));
		out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (unsigned char)(0xf0 | (cp >> 18));
	out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Are all 8 bytes of w printable ASCII other than a backslash (bytes a string run copies as
 * they are)? Word-at-a-time tests: a high bit, a byte below 0x20, a byte equal to '\\'. */
static bool plain8(uint64_t w)
{
	uint64_t bs = w ^ (ONES * '\\');

	return !((w | ((w - ONES * 0x20) & ~w) | ((bs - ONES) & ~bs)) & HIGHS);
}

/*
 * Decodes the JSON string token s (with quotes) into out, appending; counts code points.
 * -EINVAL for text that cannot become a CC string: invalid UTF-8, an escaped NUL, a lone
 * surrogate, a raw control character. Stops early (returning 0) once limit bytes were written,
 * setting *ret_truncated, so over-long values cost no more than the limit. Decoding never grows
 * text (an escape is longer than what it stands for), so the output is reserved once.
 */
static int json_unescape(const char *s, size_t len, struct buf *out, size_t limit,
			 size_t *ret_chars, bool *ret_truncated)
{
	const unsigned char *p = (const unsigned char *)s + 1,
			    *end = (const unsigned char *)s + len - 1;
	size_t chars = 0, start = out->len;
	unsigned char *o;

	*ret_truncated = false;
	if (len < 2 || buf_reserve(out, len) < 0)
		return len < 2 ? -EINVAL : -ENOMEM;
	o = out->data + out->len;
	while (p < end) {
		size_t n;

		if ((size_t)(o - (out->data + start)) >= limit) {
			*ret_truncated = true;
			break;
		}
		/* The common case: a run of plain printable ASCII, copied up to the limit. */
		if (*p >= 0x20 && *p < 0x80 && *p != '\\') {
			size_t room = limit - (size_t)(o - (out->data + start));
			const unsigned char *q = p + 1;

			while (end - q >= 8 && (size_t)(q + 8 - p) <= room && plain8(le64(q)))
				q += 8;
			while (q < end && (size_t)(q - p) < room && *q >= 0x20 && *q < 0x80 &&
			       *q != '\\')
				q++;
			memcpy(o, p, (size_t)(q - p));
			o += q - p;
			chars += (size_t)(q - p);
			p = q;
			continue;
		}
		if (*p == '\\') {
			uint32_t cp, lo;

			if (end - p < 2)
				return -EINVAL;
			switch (p[1]) {
			case '"':
				cp = '"';
				break;
			case '\\':
				cp = '\\';
				break;
			case '/':
				cp = '/';
				break;
			case 'b':
				cp = '\b';
				break;
			case 'f':
				cp = '\f';
				break;
			case 'n':
				cp = '\n';
				break;
			case 'r':
				cp = '\r';
				break;
			case 't':
				cp = '\t';
				break;
			case 'u':
				if (hex4((const char *)p + 2, (const char *)end, &cp) < 0)
					return -EINVAL;
				p += 4;
				if (cp >= 0xdc00 && cp <= 0xdfff)
					return -EINVAL;
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (end - p < 8 || p[2] != '\\' || p[3] != 'u' ||
					    hex4((const char *)p + 4, (const char *)end, &lo) < 0 ||
					    lo < 0xdc00 || lo > 0xdfff)
						return -EINVAL;
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					p += 6;
				}
				if (cp == 0)
					return -EINVAL;
				break;
			default:
				return -EINVAL;
			}
			p += 2;
			o += utf8_encode(cp, o);
			chars++;
			continue;
		}
		if (*p < 0x20)
			return -EINVAL;
		n = utf8_sequence_length(p, (size_t)(end - p));
		if (n == 0)
			return -EINVAL;
		memcpy(o, p, n);
		o += n;
		p += n;
		chars++;
	}
	out->len = (size_t)(o - out->data);
	*ret_chars = chars;
	return 0;
}

/* Does member key k equal source (after unescaping, when the key has escapes)? */
static bool key_matches(struct plan *p, const struct json_member *m, const struct target *t)
{
	size_t chars;
	bool trunc;

	if (!m->key_escaped)
		return m->key_len == t->source_len && memcmp(m->key, t->source, t->source_len) == 0;
	p->scratch.len = 0;
	if (json_unescape(m->key - 1, m->key_len + 2, &p->scratch, t->source_len + 1, &chars,
			  &trunc) < 0)
		return false;
	return p->scratch.len == t->source_len &&
	       memcmp(p->scratch.data, t->source, t->source_len) == 0;
}

/* ---- the key table --------------------------------------------------------------------------- */

/*
 * The email key. Not persisted, so it only has to spread well and stay fixed (a collision, if
 * ever, is then reproducible): 8 bytes at a time, multiply and fold, then a 64-bit finaliser
 * (MurmurHash3's fmix64). An email is at most 50 bytes.
 */
static uint64_t email_key_of(const char *email, size_t len)
{
	const unsigned char *p = (const unsigned char *)email;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ (len * 0xff51afd7ed558ccdull);

	for (; len >= 8; len -= 8, p += 8) {
		h ^= le64(p) * 0xc4ceb9fe1a85ec53ull;
		h = ROTL(h, 29) * 0x9e3779b97f4a7c15ull;
	}
	if (len > 0) {
		uint64_t w = 0;

		for (size_t i = 0; i < len; i++)
			w |= (uint64_t)p[i] << (8 * i);
		h ^= w * 0xc4ceb9fe1a85ec53ull;
		h = ROTL(h, 29) * 0x9e3779b97f4a7c15ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h ? h : 1; /* 0 marks a free slot */
}

static size_t slot_of(const struct keytab *t, uint64_t key)
{
	/* Lemire's multiply-shift: any capacity, no power of two (and no 2x memory) needed. */
	return (size_t)(((unsigned __int128)key * t->cap) >> 64);
}

/* ---- the digest ------------------------------------------------------------------------------ */

static int put_unkeyed(struct buf *d, enum plan_reason reason, const char *pid, size_t pid_len,
		       unsigned char detail, const unsigned char *raw, size_t raw_len)
{
	d->len = 0;
	if (pid_len > 0xffff)
		pid_len = 0xffff;
	if (buf_byte(d, CLASS_UNKEYED) < 0 || buf_byte(d, (unsigned char)reason) < 0 ||
	    buf_be16(d, pid_len) < 0 || buf_put(d, pid, pid_len) < 0 || buf_byte(d, detail) < 0 ||
	    buf_be16(d, raw_len) < 0 || buf_put(d, raw, raw_len) < 0)
		return -ENOMEM;
	return 0;
}

/* Keeps at most RAW_EMAIL_MAX bytes, cut at a character boundary. */
static size_t raw_email_len(const unsigned char *s, size_t n)
{
	if (n <= RAW_EMAIL_MAX)
		return n;
	n = RAW_EMAIL_MAX;
	while (n > 0 && (s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

static bool valid_pid(const char *pid, size_t len)
{
	const unsigned char *p = (const unsigned char *)pid, *end = p + len;

	if (len == 0)
		return false;
	while (p < end) {
		size_t n;

		if (*p == 0)
			return false;
		n = utf8_sequence_length(p, (size_t)(end - p));
		if (n == 0)
			return false;
		p += n;
	}
	return true;
}

static int put_tag(struct buf *d, enum tag tag)
{
	return buf_byte(d, (unsigned char)tag);
}

static int put_too_long(struct buf *d, size_t mark, size_t chars)
{
	d->len = mark;
	return put_tag(d, TAG_TOO_LONG) < 0 || buf_be32(d, chars) < 0 ? -ENOMEM : 0;
}

/* A JSON string value: decoded in place behind a tag and a length patched in afterwards. */
static int put_string(struct buf *d, const struct target *t, const struct json_member *m)
{
	size_t mark = d->len, chars = 0, vlen;
	bool trunc;
	int r;

	if (put_tag(d, TAG_VALUE) < 0 || buf_be16(d, 0) < 0)
		return -ENOMEM;
	r = json_unescape(m->value, m->value_len, d, (size_t)t->max_len * 4 + 4, &chars, &trunc);
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		d->len = mark;
		return put_tag(d, TAG_INVALID);
	}
	if (trunc) {
		/* Over the limit: measure the rest without keeping it, for an exact message. */
		struct buf tmp = {};

		r = json_unescape(m->value, m->value_len, &tmp, SIZE_MAX, &chars, &trunc);
		buf_free(&tmp);
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			d->len = mark;
			return put_tag(d, TAG_INVALID);
		}
	}
	if (chars > (size_t)t->max_len)
		return put_too_long(d, mark, chars);
	vlen = d->len - mark - 3;
	if (vlen == 0) {
		d->len = mark;
		return put_tag(d, TAG_ABSENT);
	}
	d->data[mark + 1] = (unsigned char)(vlen >> 8);
	d->data[mark + 2] = (unsigned char)vlen;
	return 0;
}

/* Appends the tagged value of one mapped attribute (m NULL: the attribute is absent). */
static int put_value(struct buf *d, const struct target *t, const struct json_member *m)
{
	const char *text;
	size_t len;

	if (!m)
		return put_tag(d, TAG_ABSENT);
	switch (m->value[0]) {
	case 'n':
		return put_tag(d, TAG_ABSENT);
	case '{':
	case '[':
		if (put_tag(d, TAG_NOT_SCALAR) < 0 ||
		    buf_byte(d, m->value[0] == '{' ? 'o' : 'a') < 0)
			return -ENOMEM;
		return 0;
	case '"':
		return put_string(d, t, m);
	case 't':
		text = "true";
		len = 4;
		break;
	case 'f':
		text = "false";
		len = 5;
		break;
	default:
		/* A number: its text as written. A number can exceed a short limit, too. */
		text = m->value;
		len = m->value_len;
		if (len > (size_t)t->max_len)
			return put_too_long(d, d->len, len);
	}
	if (put_tag(d, TAG_VALUE) < 0 || buf_be16(d, len) < 0 || buf_put(d, text, len) < 0)
		return -ENOMEM;
	return 0;
}

static int digest_row(struct plan *p, struct pending *out, const char *pid, size_t pid_len,
		      const char *attrs, size_t attrs_len)
{
	struct buf *d = &out->buf;
	const struct json_member *found[MAX_TARGETS];
	struct json_member members[MAX_TARGETS];
	const char *pos = attrs, *end = attrs + attrs_len;
	const struct json_member *em;
	char email[EMAIL_MAX_LENGTH + 1];
	size_t n_found = 0, email_len, chars;
	enum email_reason er;
	bool trunc;
	int r;

	if (!valid_pid(pid, pid_len))
		return put_unkeyed(d, PLAN_REASON_PROFILE_ID_INVALID, pid, strnlen(pid, pid_len), 0,
				   NULL, 0);
	if (!attrs)
		return put_unkeyed(d, PLAN_REASON_PROFILE_MISSING, pid, pid_len, 0, NULL, 0);

	if (json_open(&pos, end) < 0)
		return put_unkeyed(d, PLAN_REASON_ATTRIBUTES_INVALID, pid, pid_len, 0, NULL, 0);
	/* Only the targets in use: clearing all MAX_TARGETS cost more than scanning the row. */
	memset(found, 0, p->n_targets * sizeof(found[0]));
	while (n_found < p->n_targets) {
		struct json_member m;

		r = json_next(&pos, end, &m);
		if (r < 0)
			return put_unkeyed(d, PLAN_REASON_ATTRIBUTES_INVALID, pid, pid_len, 0, NULL,
					   0);
		if (r == 0)
			break;
		for (size_t i = 0; i < p->n_targets; i++) {
			if (found[i] || !key_matches(p, &m, &p->targets[i]))
				continue;
			/* First occurrence wins, like json_extract; one member may feed several
			 * targets mapped from the same attribute. */
			members[i] = m;
			found[i] = &members[i];
			n_found++;
		}
	}

	em = found[0];
	if (!em || em->value[0] == 'n')
		return put_unkeyed(d, PLAN_REASON_EMAIL_MISSING, pid, pid_len, 0, NULL, 0);
	if (em->value[0] != '"') {
		unsigned char kind = em->value[0] == '{'			  ? 'o'
				     : em->value[0] == '['			  ? 'a'
				     : em->value[0] == 't' || em->value[0] == 'f' ? 'b'
										  : 'n';

		return put_unkeyed(d, PLAN_REASON_EMAIL_INVALID, pid, pid_len,
				   DETAIL_NOT_STRING | kind, NULL, 0);
	}
	p->scratch.len = 0;
	r = json_unescape(em->value, em->value_len, &p->scratch, EMAIL_SCAN_MAX, &chars, &trunc);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return put_unkeyed(d, PLAN_REASON_EMAIL_INVALID, pid, pid_len, EMAIL_NON_ASCII,
				   NULL, 0);
	er = trunc ? EMAIL_TOO_LONG
		   : email_normalize((const char *)p->scratch.data, p->scratch.len, email,
				     &email_len);
	if (er == EMAIL_EMPTY)
		return put_unkeyed(d, PLAN_REASON_EMAIL_MISSING, pid, pid_len, 0, NULL, 0);
	if (er != EMAIL_OK)
		return put_unkeyed(d, PLAN_REASON_EMAIL_INVALID, pid, pid_len, (unsigned char)er,
				   p->scratch.data, raw_email_len(p->scratch.data, p->scratch.len));

	/* The key table probe will miss the cache: start the load now, the values below take
	 * longer to decode than the memory takes to answer. */
	out->key = email_key_of(email, email_len);
	if (p->tab.slots)
		__builtin_prefetch(&p->tab.slots[slot_of(&p->tab, out->key)], 1);
	d->len = 0;
	if (buf_byte(d, CLASS_KEYED) < 0 || buf_put(d, email, email_len + 1) < 0 ||
	    buf_put(d, pid, pid_len) < 0 || buf_byte(d, 0) < 0 ||
	    buf_byte(d, (unsigned char)(p->n_targets - 1)) < 0)
		return -ENOMEM;
	for (size_t i = 1; i < p->n_targets; i++) {
		r = put_value(d, &p->targets[i], found[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- decoding a digest ----------------------------------------------------------------------- */

struct reader {
	const unsigned char *p, *end;
};

static int rd_byte(struct reader *r, unsigned char *ret)
{
	if (r->p >= r->end)
		return -EIO;
	*ret = *r->p++;
	return 0;
}

static int rd_be16(struct reader *r, size_t *ret)
{
	unsigned char a, b;

	if (rd_byte(r, &a) < 0 || rd_byte(r, &b) < 0)
		return -EIO;
	*ret = ((size_t)a << 8) | b;
	return 0;
}

static int rd_be32(struct reader *r, uint64_t *ret)
{
	size_t hi, lo;

	if (rd_be16(r, &hi) < 0 || rd_be16(r, &lo) < 0)
		return -EIO;
	*ret = ((uint64_t)hi << 16) | lo;
	return 0;
}

static int rd_bytes(struct reader *r, size_t n, const unsigned char **ret)
{
	if ((size_t)(r->end - r->p) < n)
		return -EIO;
	*ret = r->p;
	r->p += n;
	return 0;
}

/* NUL-terminated string starting at the reader. */
static int rd_cstr(struct reader *r, const char **ret)
{
	const unsigned char *z = memchr(r->p, 0, (size_t)(r->end - r->p));

	if (!z)
		return -EIO;
	*ret = (const char *)r->p;
	r->p = z + 1;
	return 0;
}

static void keytab_free(struct keytab *t)
{
	if (t->slots)
		(void)munmap(t->slots, t->bytes);
	*t = (struct keytab){};
}

static int keytab_alloc(struct keytab *t, size_t cap)
{
	size_t bytes = cap * sizeof(*t->slots);
	void *m;

	/* Anonymous memory comes zeroed, and pages no probe writes are never mapped. Probes land
	 * anywhere in the table: transparent huge pages save most of their TLB misses. */
	m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return -ENOMEM;
	(void)madvise(m, bytes, MADV_HUGEPAGE); /* advice only: fine without */
	t->slots = m;
	t->bytes = bytes;
	t->cap = cap;
	t->n = 0;
	return 0;
}

/* Room for expected emails at a load of 0.8. */
static int keytab_init(struct keytab *t, size_t expected)
{
	return keytab_alloc(t, expected + expected / 4 + 1024);
}

static size_t keytab_probe(const struct keytab *t, uint64_t key)
{
	size_t i = slot_of(t, key);

	while (t->slots[i].key != 0 && t->slots[i].key != key)
		if (++i == t->cap)
			i = 0;
	return i;
}

static int keytab_grow(struct keytab *t)
{
	struct keytab n;

	if (keytab_alloc(&n, t->cap + t->cap / 2) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++) {
		if (!t->slots[i].key)
			continue;
		n.slots[keytab_probe(&n, t->slots[i].key)] = t->slots[i];
		n.n++;
	}
	keytab_free(t);
	*t = n;
	return 0;
}

/*
 * Finds key: 1 and its slot, or (not found) 0 and, when insert is set, the slot of a new entry
 * with aux 0. -ENOMEM when the table had to grow and could not.
 */
static int keytab_find(struct keytab *t, uint64_t key, bool insert, size_t *ret_slot)
{
	size_t i;

	if (insert && (t->n + 1) * 10 > t->cap * 9 && keytab_grow(t) < 0)
		return -ENOMEM;
	i = keytab_probe(t, key);
	*ret_slot = i;
	if (t->slots[i].key == key)
		return 1;
	if (insert) {
		t->slots[i] = (struct slot){ .key = key };
		t->n++;
	}
	return 0;
}

/* ---- the stream ------------------------------------------------------------------------------ */

static const char *const reason_codes[_PLAN_REASON_MAX] = {
	[PLAN_REASON_PROFILE_MISSING] = "profile_missing",
	[PLAN_REASON_PROFILE_ID_INVALID] = "profile_id_invalid",
	[PLAN_REASON_ATTRIBUTES_INVALID] = "attributes_invalid",
	[PLAN_REASON_EMAIL_MISSING] = "email_missing",
	[PLAN_REASON_EMAIL_INVALID] = "email_invalid",
	[PLAN_REASON_FIELD_TOO_LONG] = "field_too_long",
	[PLAN_REASON_FIELD_NOT_SCALAR] = "field_not_scalar",
	[PLAN_REASON_FIELD_INVALID] = "field_invalid",
	[PLAN_REASON_DUPLICATE] = "duplicate",
	[PLAN_REASON_PREVIOUSLY_REJECTED] = "previously_rejected",
};

const char *plan_reason_to_string(enum plan_reason r)
{
	return (unsigned)r < _PLAN_REASON_MAX ? reason_codes[r] : NULL;
}

static bool in_resume_chain(const struct plan *p, int64_t run_id)
{
	for (size_t i = 0; i < p->n_resume_ids; i++)
		if (p->resume_ids[i] == run_id)
			return true;
	return false;
}

_printf_(5, 0) static void fill_reject(struct plan *p, enum plan_reason reason, const char *pid,
				      const char *email, const char *fmt, va_list ap)
{
	vsnprintf(p->reason, sizeof(p->reason), fmt, ap);
	p->item = (struct plan_item){
		.kind = PLAN_ITEM_REJECT,
		.profile_id = pid,
		.email = email,
		.reason = reason,
		.reason_code = reason_codes[reason],
		.reason_text = p->reason,
	};
}

/* Counts a rejection; returns 1 with the item filled in if the caller wants rejects, else 0. */
_printf_(5, 6) static int emit_reject(struct plan *p, enum plan_reason reason, const char *pid,
				      const char *email, const char *fmt, ...)
{
	va_list ap;

	p->counters.rejected++;
	p->counters.rejected_by_reason[reason]++;
	if (!(p->items & PLAN_ITEM_REJECT))
		return 0;
	va_start(ap, fmt);
	fill_reject(p, reason, pid, email, fmt, ap);
	va_end(ap);
	return 1;
}

/* Fills an item for a rejection counted earlier (a duplicate). */
_printf_(5, 6) static void describe_reject(struct plan *p, enum plan_reason reason, const char *pid,
					   const char *email, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fill_reject(p, reason, pid, email, fmt, ap);
	va_end(ap);
}

static const char *json_kind_name(unsigned char k)
{
	switch (k) {
	case 'o':
		return "a JSON object";
	case 'a':
		return "a JSON array";
	case 'b':
		return "a boolean";
	default:
		return "a number";
	}
}

static int handle_unkeyed(struct plan *p, struct reader *rd)
{
	const unsigned char *pidb, *raw;
	unsigned char reason, detail;
	size_t pid_len, raw_len;
	const char *pid, *email = NULL;

	if (rd_byte(rd, &reason) < 0 || reason >= _PLAN_REASON_MAX || rd_be16(rd, &pid_len) < 0 ||
	    rd_bytes(rd, pid_len, &pidb) < 0 || rd_byte(rd, &detail) < 0 ||
	    rd_be16(rd, &raw_len) < 0 || rd_bytes(rd, raw_len, &raw) < 0)
		return -EIO;
	/* Lay out "pid\0raw\0" in the values buffer so both are C strings for the item. */
	p->values.len = 0;
	if (buf_put(&p->values, pidb, pid_len) < 0 || buf_byte(&p->values, 0) < 0 ||
	    buf_put(&p->values, raw, raw_len) < 0 || buf_byte(&p->values, 0) < 0)
		return -ENOMEM;
	pid = (const char *)p->values.data;
	if (raw_len > 0)
		email = (const char *)p->values.data + pid_len + 1;

	switch (reason) {
	case PLAN_REASON_PROFILE_MISSING:
		return emit_reject(p, reason, pid, NULL,
				   "profile '%s' is a member of the export's segments but has no "
				   "profile row",
				   pid);
	case PLAN_REASON_PROFILE_ID_INVALID:
		return emit_reject(
			p, reason, pid, NULL,
			"the profile id contains a NUL byte or is not valid UTF-8; fix it "
			"upstream");
	case PLAN_REASON_ATTRIBUTES_INVALID:
		return emit_reject(p, reason, pid, NULL,
				   "the profile's attributes are not a readable JSON object");
	case PLAN_REASON_EMAIL_MISSING:
		return emit_reject(p, reason, pid, NULL,
				   "no email: attribute '%s' is missing, null or empty",
				   p->targets[0].source);
	case PLAN_REASON_EMAIL_INVALID:
		if (detail & DETAIL_NOT_STRING)
			return emit_reject(
				p, reason, pid, NULL, "email attribute '%s' is %s, not a string",
				p->targets[0].source, json_kind_name(detail & ~DETAIL_NOT_STRING));
		return emit_reject(p, reason, pid, email, "invalid email (%s): %s",
				   email_reason_to_string(detail) ?: "?",
				   email_reason_describe(detail) ?: "?");
	default:
		return -EIO;
	}
}

static int add_dup(struct plan *p, uint32_t loser, uint32_t winner)
{
	if (p->n_dups == p->cap_dups) {
		size_t cap = p->cap_dups ? p->cap_dups * 2 : 256;
		struct dup *d = reallocarray(p->dups, cap, sizeof(*d));

		if (!d)
			return -ENOMEM;
		p->dups = d;
		p->cap_dups = cap;
	}
	p->dups[p->n_dups++] = (struct dup){ loser, winner };
	return 0;
}

static int handle_keyed(struct plan *p, struct reader *rd, uint32_t ordinal, uint64_t key)
{
	const char *email, *pid;
	unsigned char n;
	size_t nf = 0, slot;
	uint64_t hash;
	uint32_t aux;
	bool new_contact;
	char *v;
	int r;

	if (rd_cstr(rd, &email) < 0 || rd_cstr(rd, &pid) < 0 || rd_byte(rd, &n) < 0 ||
	    (size_t)n + 1 != p->n_targets)
		return -EIO;

	r = keytab_find(&p->tab, key, true, &slot);
	if (r < 0)
		return r;
	aux = p->tab.slots[slot].aux;
	if (aux & AUX_SEEN) {
		/* Members come in profile_id order: the email's first member won it. The item
		 * waits until the winners' ids are known (after the members). */
		p->counters.rejected++;
		p->counters.rejected_by_reason[PLAN_REASON_DUPLICATE]++;
		return add_dup(p, ordinal, aux & AUX_ORDINAL);
	}
	p->tab.slots[slot].aux = aux | AUX_SEEN | ordinal;

	/* Fields: decode into the values buffer as C strings, reject on the first bad one. */
	p->values.len = 0;
	if (buf_reserve(&p->values, (size_t)(rd->end - rd->p) + 2 * p->n_targets + 2) < 0)
		return -ENOMEM;
	v = (char *)p->values.data;
	p->fields[nf++] = (struct plan_field){ "email", email, strlen(email) };
	for (size_t i = 1; i < p->n_targets; i++) {
		const struct target *t = &p->targets[i];
		const unsigned char *bytes;
		unsigned char tag, kind;
		uint64_t chars;
		size_t len;

		if (rd_byte(rd, &tag) < 0)
			return -EIO;
		switch (tag) {
		case TAG_ABSENT:
			continue;
		case TAG_VALUE:
			if (rd_be16(rd, &len) < 0 || rd_bytes(rd, len, &bytes) < 0)
				return -EIO;
			memcpy(v, bytes, len);
			v[len] = '\0';
			p->fields[nf++] = (struct plan_field){ t->key, v, len };
			v += len + 1;
			continue;
		case TAG_NOT_SCALAR:
			if (rd_byte(rd, &kind) < 0)
				return -EIO;
			return emit_reject(p, PLAN_REASON_FIELD_NOT_SCALAR, pid, email,
					   "%s (attribute '%s') is %s; only strings, numbers, "
					   "booleans and null can be sent",
					   t->key, t->source, json_kind_name(kind));
		case TAG_INVALID:
			return emit_reject(
				p, PLAN_REASON_FIELD_INVALID, pid, email,
				"%s (attribute '%s') is not valid Unicode text or holds a "
				"NUL character",
				t->key, t->source);
		case TAG_TOO_LONG:
			if (rd_be32(rd, &chars) < 0)
				return -EIO;
			return emit_reject(p, PLAN_REASON_FIELD_TOO_LONG, pid, email,
					   "%s (attribute '%s') is %" PRIu64 " characters long; "
					   "Constant Contact accepts at most %d",
					   t->key, t->source, chars, t->max_len);
		default:
			return -EIO;
		}
	}

	hash = plan_fields_hash(p->fields, nf);
	/* A remembered refusal of a contact ccsync never got onto the list makes it new. */
	new_contact = !(aux & AUX_SYNCED) && !((aux & AUX_REFUSED) && (aux & AUX_ADDED));
	if ((aux & (AUX_SYNCED | AUX_REFUSED)) && p->tab.slots[slot].hash == hash) {
		if ((aux & AUX_SYNCED) && (aux & AUX_CHAIN)) {
			p->counters.already_sent++;
			return 0;
		}
		if (!p->full_resend && (aux & AUX_SYNCED)) {
			p->counters.unchanged++;
			return 0;
		}
		if (!p->full_resend) {
			r = emit_reject(
				p, PLAN_REASON_PREVIOUSLY_REJECTED, pid, email,
				"Constant Contact rejected exactly this content before; it is "
				"not sent again until it changes (or with --full)");
			p->item.fields_hash = hash;
			return r;
		}
	}
	p->counters.to_send++;
	if (new_contact)
		p->counters.to_send_new++;
	if (!(p->items & PLAN_ITEM_SEND))
		return 0;
	p->item = (struct plan_item){
		.kind = PLAN_ITEM_SEND,
		.profile_id = pid,
		.email = email,
		.fields_hash = hash,
		.is_new = new_contact,
		.fields = p->fields,
		.n_fields = nf,
	};
	return 1;
}

static int corrupt(char *err, size_t errlen)
{
	return set_error(err, errlen, -EIO, "internal error: an unreadable plan digest");
}

static int members_next(struct plan *p, char *err, size_t errlen)
{
	const struct store_data_member_row *row;
	int r;

	for (;;) {
		struct pending *m;
		struct reader rd;
		unsigned char cls;

		while (!p->members_end && p->ring_count < PIPELINE) {
			r = store_data_member_scan_next(p->members, &row, err, errlen);
			if (r < 0)
				return r;
			if (r == 0) {
				p->members_end = true;
				break;
			}
			if (p->ordinal >= MAX_MEMBERS)
				return set_error(err, errlen, -E2BIG, "more than %u members",
						 MAX_MEMBERS);
			m = &p->ring[(p->ring_head + p->ring_count) % PIPELINE];
			m->ordinal = (uint32_t)p->ordinal++;
			p->counters.selected++;
			r = digest_row(p, m, row->profile_id, row->profile_id_len, row->attributes,
				       row->attributes_len);
			if (r < 0)
				return set_error(err, errlen, r, "out of memory");
			p->ring_count++;
		}
		if (p->ring_count == 0)
			return 0;
		/* Items point into this slot: it is refilled only at the next call. */
		m = &p->ring[p->ring_head];
		p->ring_head = (p->ring_head + 1) % PIPELINE;
		p->ring_count--;
		rd = (struct reader){ m->buf.data, m->buf.data + m->buf.len };
		if (rd_byte(&rd, &cls) < 0)
			return corrupt(err, errlen);
		r = cls == CLASS_KEYED	   ? handle_keyed(p, &rd, m->ordinal, m->key)
		    : cls == CLASS_UNKEYED ? handle_unkeyed(p, &rd)
					   : -EIO;
		if (r == -EIO)
			return corrupt(err, errlen);
		if (r < 0)
			return set_error(err, errlen, r, "out of memory");
		if (r > 0)
			return 1;
	}
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void winners_free(struct plan *p)
{
	for (size_t i = 0; i < p->n_winners; i++)
		free(p->winner_pids[i]);
	free(p->winner_pids);
	free(p->winner_ords);
	p->winner_pids = NULL;
	p->winner_ords = NULL;
	p->n_winners = 0;
}

/* Sets up the ids-only pass that finds the profile ids of the duplicates and their winners. */
static int dups_prepare(struct plan *p, char *err, size_t errlen)
{
	size_t n = 0;

	p->winner_ords = calloc(p->n_dups, sizeof(*p->winner_ords));
	p->winner_pids = calloc(p->n_dups, sizeof(*p->winner_pids));
	if (!p->winner_ords || !p->winner_pids)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	for (size_t i = 0; i < p->n_dups; i++)
		p->winner_ords[i] = p->dups[i].winner;
	qsort(p->winner_ords, p->n_dups, sizeof(*p->winner_ords), u32_cmp);
	for (size_t i = 0; i < p->n_dups; i++)
		if (n == 0 || p->winner_ords[n - 1] != p->winner_ords[i])
			p->winner_ords[n++] = p->winner_ords[i];
	p->n_winners = n;
	p->next_dup = 0;
	p->ids_ordinal = 0;
	return store_data_member_scan_open(p->store, p->export->export_id, false, -1, &p->ids,
					   err, errlen);
}

static const char *winner_pid(const struct plan *p, uint32_t ordinal)
{
	const uint32_t *w =
		bsearch(&ordinal, p->winner_ords, p->n_winners, sizeof(*p->winner_ords), u32_cmp);

	return w ? p->winner_pids[w - p->winner_ords] : NULL;
}

/* The loser's normalised email, read again from its profile (duplicates are few). */
static int loser_email(struct plan *p, const char *pid, size_t pid_len)
{
	_cleanup_free_ char *attrs = NULL;
	struct reader rd;
	const char *email;
	unsigned char cls;
	int r;

	r = store_data_profile_attributes(p->store, pid, pid_len, &attrs);
	if (r < 0)
		return r;
	r = digest_row(p, &p->lookup, pid, pid_len, attrs, strlen(attrs));
	if (r < 0)
		return r;
	rd = (struct reader){ p->lookup.buf.data, p->lookup.buf.data + p->lookup.buf.len };
	if (rd_byte(&rd, &cls) < 0 || cls != CLASS_KEYED || rd_cstr(&rd, &email) < 0)
		return -EIO;
	snprintf(p->email, sizeof(p->email), "%s", email);
	return 0;
}

static int dups_next(struct plan *p, char *err, size_t errlen)
{
	const struct store_data_member_row *row;
	int r;

	while (p->next_dup < p->n_dups) {
		const struct dup *d = &p->dups[p->next_dup];
		const uint32_t *w;
		uint32_t ordinal;

		r = store_data_member_scan_next(p->ids, &row, err, errlen);
		if (r < 0)
			return r;
		if (r == 0)
			return set_error(err, errlen, -EIO,
					 "internal error: the members changed inside the snapshot");
		ordinal = (uint32_t)p->ids_ordinal++;
		w = bsearch(&ordinal, p->winner_ords, p->n_winners, sizeof(*p->winner_ords),
			    u32_cmp);
		if (w) {
			char *pid = strndup(row->profile_id, row->profile_id_len);

			if (!pid)
				return set_error(err, errlen, -ENOMEM, "out of memory");
			p->winner_pids[w - p->winner_ords] = pid;
		}
		if (ordinal != d->loser)
			continue;
		/* Losers were recorded in member order, so they come up in this order too. */
		p->next_dup++;
		r = loser_email(p, row->profile_id, row->profile_id_len);
		if (r == -EIO || r == -ENOENT)
			return set_error(
				err, errlen, -EIO,
				"internal error: duplicate profile '%.*s' changed inside the "
				"snapshot",
				(int)row->profile_id_len, row->profile_id);
		if (r < 0)
			return set_error(err, errlen, r, "cannot read a duplicate profile: %s",
					 store_errmsg(p->store));
		p->values.len = 0;
		if (buf_put(&p->values, row->profile_id, row->profile_id_len) < 0 ||
		    buf_byte(&p->values, 0) < 0)
			return set_error(err, errlen, -ENOMEM, "out of memory");
		describe_reject(p, PLAN_REASON_DUPLICATE, (const char *)p->values.data, p->email,
				"duplicate email: profile '%s' has the same address and is sent "
				"instead (the lowest profile id wins)",
				winner_pid(p, d->winner) ?: "?");
		return 1;
	}
	return 0;
}

/* Mirror mode: sync rows whose email no member has. */
static int departed_next(struct plan *p, char *err, size_t errlen)
{
	const struct store_data_sync_row *row;
	int r;

	while ((r = store_data_sync_scan_next(p->departs, &row, err, errlen)) > 0) {
		size_t slot;

		if (keytab_find(&p->tab, email_key_of(row->email, row->email_len), false, &slot) >
			    0 &&
		    (p->tab.slots[slot].aux & AUX_SEEN))
			continue;
		/* A refused new contact (rejected, not added by ccsync) never reached the list. */
		if (row->rejected && !row->added_by_ccsync)
			continue;
		p->counters.departed++;
		if (row->added_by_ccsync)
			p->counters.departed_ours++;
		else
			p->counters.departed_not_ours++;
		if (!(p->items & PLAN_ITEM_DEPART))
			continue;
		p->values.len = 0;
		if (buf_put(&p->values, row->email, row->email_len) < 0 ||
		    buf_byte(&p->values, 0) < 0 ||
		    (row->contact_id &&
		     buf_put(&p->values, row->contact_id, strlen(row->contact_id) + 1) < 0))
			return set_error(err, errlen, -ENOMEM, "out of memory");
		p->item = (struct plan_item){
			.kind = PLAN_ITEM_DEPART,
			.email = (const char *)p->values.data,
			.added_by_ccsync = row->added_by_ccsync,
			.contact_id = row->contact_id
					      ? (const char *)p->values.data + row->email_len + 1
					      : NULL,
		};
		return 1;
	}
	return r;
}

int plan_next(struct plan *p, const struct plan_item **ret, char *err, size_t errlen)
{
	int r = 0;

	for (;;) {
		switch (p->phase) {
		case PHASE_MEMBERS:
			r = members_next(p, err, errlen);
			if (r != 0)
				break;
			if (p->counters.selected != p->members_estimate)
				return set_error(err, errlen, -EIO,
						 "internal error: %" PRIu64
						 " members counted, %" PRIu64 " read",
						 p->members_estimate, p->counters.selected);
			p->phase = PHASE_DUPLICATES;
			if (p->n_dups > 0 && (p->items & PLAN_ITEM_REJECT)) {
				r = dups_prepare(p, err, errlen);
				if (r < 0)
					return r;
			}
			continue;
		case PHASE_DUPLICATES:
			if (p->n_dups > 0 && (p->items & PLAN_ITEM_REJECT))
				r = dups_next(p, err, errlen);
			if (r != 0)
				break;
			p->phase = PHASE_DEPARTED;
			continue;
		case PHASE_DEPARTED:
			if (p->export->mirror && !p->departs)
				r = store_data_sync_scan_open(p->store, p->export->export_id,
							      STORE_DATA_SYNC_CONTACT_ID,
							      &p->departs, err, errlen);
			if (r >= 0 && p->export->mirror)
				r = departed_next(p, err, errlen);
			if (r != 0)
				break;
			p->phase = PHASE_DONE;
			continue;
		case PHASE_DONE:
			return 0;
		}
		if (r < 0)
			return r;
		*ret = &p->item;
		return 1;
	}
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

/* Inserts a group of sync rows whose slots were prefetched while the group was read. */
static int load_group(struct plan *p, const struct slot *group, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t slot;
		int r = keytab_find(&p->tab, group[i].key, true, &slot);

		if (r < 0)
			return r;
		if (r > 0)
			continue; /* two stored emails with one key: the first one stands */
		p->tab.slots[slot].hash = group[i].hash;
		p->tab.slots[slot].aux = group[i].aux;
	}
	return 0;
}

/* Fills the key table from sync_state. */
static int load_sync(struct plan *p, char *err, size_t errlen)
{
	const struct store_data_sync_row *row;
	struct slot group[PIPELINE * 4];
	size_t expected, n = 0;
	int r;

	/* Sized without counting sync_state, which would cost a tenth of a no-change plan. Room
	 * for the members, plus an eighth as emails only sync_state has (departed ones) unless
	 * it is empty (a first export: the table stays as small as it can), so that an ordinary
	 * day's churn never grows the table (growing needs old and new at once); it grows in
	 * the rare run where far more contacts departed. */
	store_data_sync_scan_rewind(p->sync);
	r = store_data_sync_scan_next(p->sync, &row, err, errlen);
	if (r < 0)
		return r;
	expected = (size_t)p->members_estimate + (r > 0 ? (size_t)p->members_estimate / 8 : 0);
	if (keytab_init(&p->tab, expected) < 0)
		return set_error(err, errlen, -ENOMEM, "out of memory for %zu emails", expected);
	for (; r > 0; r = store_data_sync_scan_next(p->sync, &row, err, errlen)) {
		struct slot *g = &group[n++];

		g->key = email_key_of(row->email, row->email_len);
		g->hash = row->fields_hash;
		g->aux = (row->rejected ? AUX_REFUSED : AUX_SYNCED) |
			 (row->added_by_ccsync ? AUX_ADDED : 0) |
			 (in_resume_chain(p, row->confirmed_run_id) ? AUX_CHAIN : 0);
		__builtin_prefetch(&p->tab.slots[slot_of(&p->tab, g->key)], 1);
		if (n == ELEMENTSOF(group)) {
			if (load_group(p, group, n) < 0)
				return set_error(err, errlen, -ENOMEM, "out of memory");
			n = 0;
		}
	}
	if (r >= 0 && load_group(p, group, n) < 0)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	store_data_sync_scan_rewind(p->sync);
	return r;
}

static void reset_stream(struct plan *p, unsigned items)
{
	p->items = items ? items : PLAN_ITEMS_ALL;
	p->counters = (struct plan_counters){};
	p->phase = PHASE_MEMBERS;
	p->ordinal = 0;
	p->ring_head = 0;
	p->ring_count = 0;
	p->members_end = false;
	p->n_dups = 0;
	p->next_dup = 0;
	winners_free(p);
	p->ids = store_data_member_scan_free(p->ids);
	p->departs = store_data_sync_scan_free(p->departs);
	keytab_free(&p->tab);
}

int plan_new(struct store *s, int64_t export_id, const struct plan_options *o, struct plan **ret,
	     char *err, size_t errlen)
{
	int64_t members = 0;
	struct plan *p;
	int r;

	if (store_in_transaction(s))
		return set_error(err, errlen, -EBUSY,
				 "the store connection is inside a transaction; a plan needs a "
				 "connection of its own");
	p = calloc(1, sizeof(*p));
	if (!p)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	p->store = s;
	p->full_resend = o && o->full_resend;
	if (o && o->n_resume_run_ids > 0) {
		p->resume_ids = calloc(o->n_resume_run_ids, sizeof(*p->resume_ids));
		if (!p->resume_ids) {
			free(p);
			return set_error(err, errlen, -ENOMEM, "out of memory");
		}
		memcpy(p->resume_ids, o->resume_run_ids,
		       o->n_resume_run_ids * sizeof(*p->resume_ids));
		p->n_resume_ids = o->n_resume_run_ids;
	}
	reset_stream(p, o ? o->items : 0);

	r = store_begin_read(s);
	if (r < 0) {
		free(p->resume_ids);
		free(p);
		return set_error(err, errlen, r, "cannot open a read snapshot: %s",
				 store_errmsg(s));
	}
	r = store_data_export_load(s, export_id, &p->export, err, errlen);
	if (r < 0)
		goto fail;
	r = plan_mapping_check(p->export, err, errlen);
	if (r < 0)
		goto fail;
	build_targets(p);
	r = store_data_member_count(s, export_id, &members);
	if (r < 0) {
		r = set_error(err, errlen, r, "cannot count the export's members: %s",
			      store_errmsg(s));
		goto fail;
	}
	p->members_estimate = (uint64_t)members;
	/* The cap is checked before anything proportional to it is allocated. */
	if (o && o->max_selected && (uint64_t)members > o->max_selected) {
		r = set_error(err, errlen, -E2BIG,
			      "export '%s' selects %" PRId64 " profiles, more than the limit of "
			      "%" PRIu64 " (max_profiles_per_export)",
			      p->export->name ?: "?", members, o->max_selected);
		goto fail;
	}
	if ((uint64_t)members > MAX_MEMBERS) {
		r = set_error(err, errlen, -E2BIG,
			      "export '%s' selects %" PRId64 " profiles; at "
			      "most %u can be planned",
			      p->export->name ?: "?", members, MAX_MEMBERS);
		goto fail;
	}
	r = store_data_sync_scan_open(s, export_id,
				      p->n_resume_ids > 0 ? STORE_DATA_SYNC_RUN_ID : 0, &p->sync, err,
				      errlen);
	if (r < 0)
		goto fail;
	r = load_sync(p, err, errlen);
	if (r < 0)
		goto fail;
	r = store_data_member_scan_open(s, export_id, true, members, &p->members, err, errlen);
	if (r < 0)
		goto fail;
	*ret = p;
	return 0;
fail:
	plan_free(p);
	return r;
}

int plan_rewind(struct plan *p, unsigned items, char *err, size_t errlen)
{
	reset_stream(p, items);
	store_data_member_scan_rewind(p->members);
	return load_sync(p, err, errlen);
}

uint64_t plan_selected(const struct plan *p)
{
	return p->members_estimate;
}

const struct store_data_export *plan_export(const struct plan *p)
{
	return p->export;
}

const struct plan_counters *plan_counters(const struct plan *p)
{
	return &p->counters;
}

struct plan *plan_free(struct plan *p)
{
	if (!p)
		return NULL;
	/* Statements first: an unfinished statement would keep the read transaction busy. */
	store_data_member_scan_free(p->members);
	store_data_member_scan_free(p->ids);
	store_data_sync_scan_free(p->sync);
	store_data_sync_scan_free(p->departs);
	if (store_in_transaction(p->store))
		(void)store_end_read(p->store); /* a read-only transaction: nothing to lose */
	store_data_export_free(p->export);
	free(p->resume_ids);
	free(p->dups);
	winners_free(p);
	keytab_free(&p->tab);
	for (size_t i = 0; i < PIPELINE; i++)
		buf_free(&p->ring[i].buf);
	buf_free(&p->lookup.buf);
	buf_free(&p->scratch);
	buf_free(&p->values);
	free(p);
	return NULL;
}
