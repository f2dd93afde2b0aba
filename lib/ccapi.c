/* SPDX-License-Identifier: MIT */
/*
 * Constant Contact V3 wire format (see ccapi.h): request bodies and response parsing, no I/O.
 *
 * The import encoder is the hot path of a million-contact export: it appends bytes to one buffer
 * with a table-driven JSON escaper that validates UTF-8 as it copies, and checks the batch limits
 * on the exact bytes written (closing bytes included), rolling a contact back whole when it does
 * not fit. Everything else is cold and favours obviousness: jansson for parsing, with every value
 * type-checked, every string cleaned of control characters and bounded before it is kept, because
 * it came from the network and may end up in a log line or a user's terminal.
 *
 * The PKCE and Basic-auth helpers need SHA-256 and base64; they are small enough to carry here
 * rather than pulling a crypto library into a daemon that otherwise has none.
 */
#include "ccapi.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "utf8.h"
#include "util.h"

#define MAX_KEPT_TEXT 1000	  /* bytes kept of any string from a response */
#define MAX_ACTIVITY_ERRORS 10000 /* activity_errors entries kept per activity */
#define MAX_PAGE_ENTRIES 10000	  /* entries kept per page (CC's pages hold at most 1000) */
#define MAX_HREF 4096

/* ------------------------------------------------------------------ small helpers */

bool ccapi_id_valid(const char *s)
{
	if (!s)
		return false;
	for (int i = 0; i < CCAPI_ID_LEN; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
		} else if (!isxdigit((unsigned char)s[i])) {
			return false;
		}
	}
	return s[CCAPI_ID_LEN] == '\0';
}

/*
 * Copies network text for keeping: control characters become spaces, invalid UTF-8 becomes '?',
 * and the result is cut (on a character boundary) at max bytes. NULL on OOM.
 */
static char *clean_text(const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s), o = 0;
	char *out = malloc((n < max ? n : max) + 1);

	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_sequence_length(p + i, n - i);

		if (!k) {
			if (o + 1 > max)
				break;
			out[o++] = '?';
			i++;
			continue;
		}
		if (o + k > max)
			break;
		if (k == 1)
			out[o] = p[i] < 0x20 || p[i] == 0x7f ? ' ' : (char)p[i];
		else
			memcpy(out + o, p + i, k);
		o += k;
		i += k;
	}
	out[o] = '\0';
	return out;
}

static void clean_into(char *dst, size_t dstlen, const char *s)
{
	_cleanup_free_ char *c = clean_text(s, dstlen - 1);

	snprintf(dst, dstlen, "%s", c ? c : "");
}

static void ascii_lower(char *s)
{
	for (; s && *s; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

int ccapi_json_parse(const char *body, size_t len, json_t **ret, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j;

	if (!body || len == 0)
		return set_error(err, errlen, -EBADMSG,
				 "empty response body where JSON was expected");
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j) {
		char what[160];

		clean_into(what, sizeof(what), jerr.text);
		return set_error(err, errlen, -EBADMSG,
				 "response is not valid JSON (%s at byte %d)", what, jerr.position);
	}
	if (!json_is_object(j) && !json_is_array(j)) {
		json_decref(j);
		return set_error(err, errlen, -EBADMSG,
				 "response JSON is neither an object nor an array");
	}
	*ret = j;
	return 0;
}

/* ------------------------------------------------------------------ growable buffer */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t more)
{
	size_t need, cap;
	char *p;

	if (more > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	need = b->len + more + 1;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Callers reserve first: these never fail. */
static inline void put(struct buf *b, const char *s, size_t n)
{
	memcpy(b->p + b->len, s, n);
	b->len += n;
}
#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

static int buf_add(struct buf *b, const char *s, size_t n)
{
	int r = buf_reserve(b, n);

	if (r < 0)
		return r;
	put(b, s, n);
	b->p[b->len] = '\0';
	return 0;
}

/* ------------------------------------------------------------------ JSON string escaping */

/* 0: copy; 1: escape; 2: first byte of a multi-byte UTF-8 sequence (or an invalid byte). */
static const unsigned char esc_class[256] = {
	[0x00 ... 0x1f] = 1, ['"'] = 1, ['\\'] = 1, [0x80 ... 0xff] = 2,
};

/*
 * Writes s as a JSON string (quotes included). The caller reserved 6 * strlen(s) + 2 bytes.
 * Returns the number of characters (code points) in s, or -EILSEQ.
 */
static long put_json_string(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	char *o = b->p + b->len;
	long chars = 0;
	size_t i = 0;

	*o++ = '"';
	while (i < n) {
		size_t start = i;

		while (i < n && esc_class[p[i]] == 0)
			i++;
		memcpy(o, p + start, i - start);
		o += i - start;
		chars += (long)(i - start);
		if (i >= n)
			break;
		if (esc_class[p[i]] == 1) {
			unsigned char c = p[i++];

			*o++ = '\\';
			switch (c) {
			case '"':
				*o++ = '"';
				break;
			case '\\':
				*o++ = '\\';
				break;
			case '\n':
				*o++ = 'n';
				break;
			case '\r':
				*o++ = 'r';
				break;
			case '\t':
				*o++ = 't';
				break;
			case '\b':
				*o++ = 'b';
				break;
			case '\f':
				*o++ = 'f';
				break;
			default:
				*o++ = 'u';
				*o++ = '0';
				*o++ = '0';
				*o++ = hex[c >> 4];
				*o++ = hex[c & 15];
			}
			chars++;
		} else {
			size_t k = utf8_sequence_length(p + i, n - i);

			if (!k)
				return -EILSEQ;
			memcpy(o, p + i, k);
			o += k;
			i += k;
			chars++;
		}
	}
	*o++ = '"';
	b->len = (size_t)(o - b->p);
	return chars;
}

/* ------------------------------------------------------------------ import keys */

struct import_key {
	const char *name;
	int max; /* characters; 0 = integer-valued */
	int lo, hi;
};

/* Sorted by name (strcmp order) for bsearch. From the spec's import item schema. */
static const struct import_key import_keys[] = {
	{ "anniversary", 50, 0, 0 }, /* the spec gives no maximum; formats are at most 10 */
	{ "birthday_day", 0, 1, 31 },
	{ "birthday_month", 0, 1, 12 },
	{ "city", 50, 0, 0 },
	{ "company_name", 50, 0, 0 },
	{ "country", 50, 0, 0 },
	{ "email", 50, 0, 0 },
	{ "first_name", 50, 0, 0 },
	{ "home country", 50, 0, 0 }, /* sic: the spec's key has a space */
	{ "home_city", 50, 0, 0 },
	{ "home_phone", 50, 0, 0 },
	{ "home_state", 50, 0, 0 },
	{ "home_street", 255, 0, 0 },
	{ "home_street2", 255, 0, 0 },
	{ "home_zip", 50, 0, 0 },
	{ "job_title", 50, 0, 0 },
	{ "last_name", 50, 0, 0 },
	{ "mobile_phone", 50, 0, 0 },
	{ "other_city", 50, 0, 0 },
	{ "other_country", 50, 0, 0 },
	{ "other_phone", 50, 0, 0 },
	{ "other_state", 50, 0, 0 },
	{ "other_street", 255, 0, 0 },
	{ "other_street2", 255, 0, 0 },
	{ "other_zip", 50, 0, 0 },
	{ "phone", 50, 0, 0 },
	{ "sms_consent_date", 16, 0, 0 },
	{ "sms_number", 16, 0, 0 },
	{ "state", 50, 0, 0 },
	{ "street", 255, 0, 0 },
	{ "street2", 255, 0, 0 },
	{ "work_city", 50, 0, 0 },
	{ "work_country", 50, 0, 0 },
	{ "work_phone", 50, 0, 0 },
	{ "work_state", 50, 0, 0 },
	{ "work_street", 255, 0, 0 },
	{ "work_street2", 255, 0, 0 },
	{ "work_zip", 50, 0, 0 },
};

#define CF_MAX_CHARS 255
#define CF_NAME_MAX 50

static int key_cmp(const void *k, const void *e)
{
	return strcmp(k, ((const struct import_key *)e)->name);
}

static const struct import_key *import_key_find(const char *key)
{
	return bsearch(key, import_keys, ELEMENTSOF(import_keys), sizeof(import_keys[0]), key_cmp);
}

static bool cf_key_valid(const char *key)
{
	size_t n;

	if (strncmp(key, "cf:", 3) != 0)
		return false;
	n = strlen(key + 3);
	if (n == 0 || n > CF_NAME_MAX * 4 || !utf8_valid(key + 3, n))
		return false;
	for (const char *p = key + 3; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
			return false;
	return true;
}

int ccapi_import_key_valid(const char *key)
{
	const struct import_key *k;

	if (!key)
		return -EINVAL;
	if (cf_key_valid(key))
		return CF_MAX_CHARS;
	k = import_key_find(key);
	if (!k)
		return -EINVAL;
	return k->max ? k->max : 2;
}

/* ------------------------------------------------------------------ import encoder */

static const char import_head[] = "{\"import_data\":[";

struct ccapi_import {
	struct buf b;		/* head + contacts so far, without the closing bytes */
	char *tail;		/* ],"list_ids":[...]} */
	size_t tail_len;
	size_t count;
	uint32_t max_contacts;
	uint32_t max_bytes;
};

int ccapi_import_begin(const char *const *list_ids, size_t n_list_ids, uint32_t max_contacts,
		       uint32_t max_bytes, struct ccapi_import **ret, char *err, size_t errlen)
{
	_cleanup_free_ struct ccapi_import *b = NULL;
	struct buf tail = { 0 };
	int r;

	if (n_list_ids < 1 || n_list_ids > CCAPI_MAX_LIST_IDS)
		return set_error(err, errlen, -EINVAL, "an import needs 1 to %d list ids, not %zu",
				 CCAPI_MAX_LIST_IDS, n_list_ids);
	for (size_t i = 0; i < n_list_ids; i++)
		if (!ccapi_id_valid(list_ids[i]))
			return set_error(err, errlen, -EINVAL,
					 "list id #%zu is not a Constant Contact list id (a UUID "
					 "such as 04fe9a97-a579-43c5-bb1a-58ed29bf0a6a)", i + 1);
	b = calloc(1, sizeof(*b));
	if (!b)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	b->max_contacts = max_contacts < 1 ? 1 : max_contacts > CCAPI_IMPORT_MAX_CONTACTS
			  ? CCAPI_IMPORT_MAX_CONTACTS : max_contacts;
	b->max_bytes = max_bytes < 64 ? 64 : max_bytes > CCAPI_IMPORT_MAX_BYTES
		       ? CCAPI_IMPORT_MAX_BYTES : max_bytes;
	r = buf_add(&tail, "],\"list_ids\":[", 14);
	for (size_t i = 0; r >= 0 && i < n_list_ids; i++) {
		r = buf_reserve(&tail, CCAPI_ID_LEN + 3);
		if (r < 0)
			break;
		if (i)
			PUT_LIT(&tail, ",");
		PUT_LIT(&tail, "\"");
		put(&tail, list_ids[i], CCAPI_ID_LEN);
		PUT_LIT(&tail, "\"");
	}
	if (r >= 0)
		r = buf_add(&tail, "]}", 2);
	if (r >= 0)
		r = buf_add(&b->b, import_head, sizeof(import_head) - 1);
	if (r < 0) {
		free(tail.p);
		free(b->b.p);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	b->tail = tail.p;
	b->tail_len = tail.len;
	*ret = TAKE_PTR(b);
	return 0;
}

struct ccapi_import *ccapi_import_free(struct ccapi_import *b)
{
	if (!b)
		return NULL;
	free(b->b.p);
	free(b->tail);
	free(b);
	return NULL;
}

size_t ccapi_import_count(const struct ccapi_import *b)
{
	return b->count;
}

size_t ccapi_import_size(const struct ccapi_import *b)
{
	return b->b.len + b->tail_len;
}

/* Writes ,"key":"value" (leading comma included); value checked against the key's limits. */
static int put_member(struct buf *b, const char *key, size_t keylen, const char *value,
		      const struct import_key *k, char *err, size_t errlen)
{
	size_t vlen = strlen(value);
	long chars;
	int r;

	r = buf_reserve(b, 6 * keylen + 6 * vlen + 8);
	if (r < 0)
		return set_error(err, errlen, r, "out of memory");
	PUT_LIT(b, ",");
	if (put_json_string(b, key, keylen) < 0)
		return set_error(err, errlen, -EILSEQ, "import key is not valid UTF-8");
	PUT_LIT(b, ":");
	if (k && k->max == 0) {
		/* birthday_month/day are integers in the schema: send them as numbers. */
		char *end;
		long v;

		errno = 0;
		v = strtol(value, &end, 10);
		if (errno || end == value || *end || !isdigit((unsigned char)value[0]) ||
		    v < k->lo || v > k->hi)
			return set_error(err, errlen, -EINVAL,
					 "%s must be a whole number from %d to %d", k->name, k->lo,
					 k->hi);
		b->len += (size_t)snprintf(b->p + b->len, b->cap - b->len, "%ld", v);
		return 0;
	}
	chars = put_json_string(b, value, vlen);
	if (chars < 0)
		return set_error(err, errlen, -EILSEQ, "value of %.100s is not valid UTF-8", key);
	if (chars > (k ? k->max : CF_MAX_CHARS))
		return set_error(err, errlen, -EMSGSIZE,
				 "value of %.100s has %ld characters; Constant Contact accepts at "
				 "most %d", key, chars, k ? k->max : CF_MAX_CHARS);
	return 0;
}

int ccapi_import_add(struct ccapi_import *b, const char *email, const char *first_name,
		     const char *last_name, const struct ccapi_field *extra, size_t n_extra,
		     char *err, size_t errlen)
{
	static const struct import_key email_key = { "email", 50, 0, 0 };
	static const struct import_key name_key = { "name", 50, 0, 0 };
	size_t mark = b->b.len;
	size_t elen;
	long chars;
	int r;

	if (b->count >= b->max_contacts)
		return set_error(err, errlen, -ENOSPC, "batch holds %zu contacts, its maximum",
				 b->count);
	if (!email || !*email)
		return set_error(err, errlen, -EINVAL, "contact has no email address");
	elen = strlen(email);
	r = buf_reserve(&b->b, 6 * elen + 16);
	if (r < 0)
		return set_error(err, errlen, r, "out of memory");
	if (b->count)
		PUT_LIT(&b->b, ",");
	PUT_LIT(&b->b, "{\"email\":");
	chars = put_json_string(&b->b, email, elen);
	if (chars < 0) {
		r = set_error(err, errlen, -EILSEQ, "email address is not valid UTF-8");
		goto fail;
	}
	if (chars > email_key.max) {
		r = set_error(err, errlen, -EMSGSIZE,
			      "email address has %ld characters; Constant Contact imports accept "
			      "at most %d", chars, email_key.max);
		goto fail;
	}
	if (first_name && *first_name) {
		r = put_member(&b->b, "first_name", 10, first_name, &name_key, err, errlen);
		if (r < 0)
			goto fail;
	}
	if (last_name && *last_name) {
		r = put_member(&b->b, "last_name", 9, last_name, &name_key, err, errlen);
		if (r < 0)
			goto fail;
	}
	for (size_t i = 0; i < n_extra; i++) {
		const char *key = extra[i].key;
		const struct import_key *k;

		if (!extra[i].value || !*extra[i].value)
			continue;
		if (!key) {
			r = set_error(err, errlen, -EINVAL, "import field #%zu has no key", i + 1);
			goto fail;
		}
		k = import_key_find(key);
		if (!k && !cf_key_valid(key)) {
			r = set_error(err, errlen, -EINVAL,
				      "\"%.100s\" is not a Constant Contact import field (use a "
				      "standard key such as job_title, or cf:<custom field name>)",
				      utf8_valid(key, strlen(key)) ? key : "(invalid UTF-8)");
			goto fail;
		}
		if (k && (streq(key, "email") || streq(key, "first_name") ||
			  streq(key, "last_name"))) {
			r = set_error(err, errlen, -EINVAL,
				      "%s is set through its own mapping, not as an extra field",
				      key);
			goto fail;
		}
		r = put_member(&b->b, key, strlen(key), extra[i].value, k, err, errlen);
		if (r < 0)
			goto fail;
	}
	r = buf_reserve(&b->b, 1);
	if (r < 0) {
		r = set_error(err, errlen, r, "out of memory");
		goto fail;
	}
	PUT_LIT(&b->b, "}");
	if (b->b.len + b->tail_len > b->max_bytes) {
		if (b->count == 0)
			r = set_error(err, errlen, -E2BIG,
				      "contact needs %zu bytes, more than a batch may hold (%u)",
				      b->b.len + b->tail_len, b->max_bytes);
		else
			r = set_error(err, errlen, -ENOSPC, "batch would exceed %u bytes",
				      b->max_bytes);
		goto fail;
	}
	b->count++;
	return 0;
fail:
	b->b.len = mark;
	return r;
}

int ccapi_import_finish(struct ccapi_import *b, char **ret_body, size_t *ret_len)
{
	size_t len = b->b.len + b->tail_len;
	struct buf next = { 0 };
	char *out;

	if (b->count == 0)
		return -ENODATA;
	/* The next batch's buffer first, so that a failure leaves this batch intact; pre-sized
	 * for a batch like this one (one allocation instead of a dozen). */
	if (buf_reserve(&next, len) < 0 || buf_reserve(&b->b, b->tail_len) < 0) {
		free(next.p);
		return -ENOMEM;
	}
	put(&next, import_head, sizeof(import_head) - 1);
	/* Hand out the buffer itself: no copy of up to 4 MB. */
	memcpy(b->b.p + b->b.len, b->tail, b->tail_len);
	b->b.p[len] = '\0';
	out = b->b.p;
	b->b = next;
	b->count = 0;
	*ret_body = out;
	*ret_len = len;
	return 0;
}

/* ------------------------------------------------------------------ other bodies */

static int put_id_array(struct buf *b, const char *const *ids, size_t n)
{
	int r = buf_reserve(b, n * (CCAPI_ID_LEN + 3) + 2);

	if (r < 0)
		return r;
	PUT_LIT(b, "[");
	for (size_t i = 0; i < n; i++) {
		if (i)
			PUT_LIT(b, ",");
		PUT_LIT(b, "\"");
		put(b, ids[i], CCAPI_ID_LEN);
		PUT_LIT(b, "\"");
	}
	PUT_LIT(b, "]");
	b->p[b->len] = '\0';
	return 0;
}

/* {"source":{"<source_key>":[ids]},"list_ids":[lists]}: the one shape of both removal kinds. */
static int remove_body(const char *source_key, const char *what, const char *const *ids, size_t n,
		       size_t max, const char *const *list_ids, size_t n_lists, char **ret_body,
		       size_t *ret_len, char *err, size_t errlen)
{
	struct buf b = { 0 };
	int r;

	if (n < 1 || n > max)
		return set_error(err, errlen, -EINVAL,
				 "a membership removal takes 1 to %zu %s, not %zu", max, what, n);
	if (n_lists < 1 || n_lists > CCAPI_MAX_LIST_IDS)
		return set_error(err, errlen, -EINVAL,
				 "a membership removal takes 1 to %d list ids, not %zu",
				 CCAPI_MAX_LIST_IDS, n_lists);
	for (size_t i = 0; i < n; i++)
		if (!ccapi_id_valid(ids[i]))
			return set_error(err, errlen, -EINVAL,
					 "%s #%zu is not a Constant Contact id (UUID)", what, i + 1);
	for (size_t i = 0; i < n_lists; i++)
		if (!ccapi_id_valid(list_ids[i]))
			return set_error(err, errlen, -EINVAL,
					 "list id #%zu is not a Constant Contact id (UUID)", i + 1);
	r = buf_add(&b, "{\"source\":{\"", 12);
	if (r >= 0)
		r = buf_add(&b, source_key, strlen(source_key));
	if (r >= 0)
		r = buf_add(&b, "\":", 2);
	if (r >= 0)
		r = put_id_array(&b, ids, n);
	if (r >= 0)
		r = buf_add(&b, "},\"list_ids\":", 13);
	if (r >= 0)
		r = put_id_array(&b, list_ids, n_lists);
	if (r >= 0)
		r = buf_add(&b, "}", 1);
	if (r < 0) {
		free(b.p);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	*ret_body = b.p;
	*ret_len = b.len;
	return 0;
}

int ccapi_remove_body(const char *const *contact_ids, size_t n_contacts,
		      const char *const *list_ids, size_t n_lists, char **ret_body, size_t *ret_len,
		      char *err, size_t errlen)
{
	return remove_body("contact_ids", "contact ids", contact_ids, n_contacts,
			   CCAPI_REMOVE_MAX_CONTACTS, list_ids, n_lists, ret_body, ret_len, err,
			   errlen);
}

int ccapi_remove_by_list_body(const char *const *source_list_ids, size_t n_source,
			      const char *const *list_ids, size_t n_lists, char **ret_body,
			      size_t *ret_len, char *err, size_t errlen)
{
	return remove_body("list_ids", "source list ids", source_list_ids, n_source,
			   CCAPI_MAX_LIST_IDS, list_ids, n_lists, ret_body, ret_len, err, errlen);
}

int ccapi_list_create_body(const char *name, const char *description, char **ret_body,
			   size_t *ret_len, char *err, size_t errlen)
{
	json_t *o;
	char *s;

	if (!name || !*name || strlen(name) > CCAPI_LIST_NAME_MAX ||
	    !utf8_valid(name, strlen(name)) ||
	    (description && !utf8_valid(description, strlen(description))))
		return set_error(err, errlen, -EINVAL,
				 "a list name is 1 to %d bytes of UTF-8", CCAPI_LIST_NAME_MAX);
	o = json_pack("{s:s, s:b}", "name", name, "favorite", 0);
	if (o && description &&
	    json_object_set_new(o, "description", json_string(description)) < 0)
		o = (json_decref(o), NULL);
	s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	*ret_body = s;
	*ret_len = strlen(s);
	return 0;
}

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static int escape_into(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	int r = buf_reserve(b, 3 * n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (unreserved(c)) {
			b->p[b->len++] = (char)c;
		} else {
			b->p[b->len++] = '%';
			b->p[b->len++] = hex[c >> 4];
			b->p[b->len++] = hex[c & 15];
		}
	}
	b->p[b->len] = '\0';
	return 0;
}

char *ccapi_url_escape(const char *s)
{
	struct buf b = { 0 };

	if (buf_reserve(&b, 0) < 0 || escape_into(&b, s) < 0) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

int ccapi_form_add(char **buf, const char *key, const char *value)
{
	struct buf b = { .p = *buf, .len = *buf ? strlen(*buf) : 0 };
	int r;

	b.cap = b.p ? b.len + 1 : 0;
	r = buf_reserve(&b, 1);
	if (r >= 0 && b.len)
		b.p[b.len++] = '&';
	if (r >= 0)
		r = escape_into(&b, key);
	if (r >= 0)
		r = buf_add(&b, "=", 1);
	if (r >= 0)
		r = escape_into(&b, value ? value : "");
	if (b.p)
		b.p[b.len] = '\0';
	*buf = b.p; /* realloc may have moved it even on a later failure */
	return r;
}

/* ------------------------------------------------------------------ base64, SHA-256 */

static size_t base64_encode(const uint8_t *in, size_t n, char *out, bool url)
{
	static const char std[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	static const char safe[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *alpha = url ? safe : std;
	size_t o = 0, i = 0;

	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = alpha[v >> 18 & 63];
		out[o++] = alpha[v >> 12 & 63];
		out[o++] = alpha[v >> 6 & 63];
		out[o++] = alpha[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);

		out[o++] = alpha[v >> 18 & 63];
		out[o++] = alpha[v >> 12 & 63];
		if (i + 1 < n)
			out[o++] = alpha[v >> 6 & 63];
		else if (!url)
			out[o++] = '=';
		if (!url)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

char *ccapi_basic_auth(const char *client_id, const char *secret)
{
	/* RFC 6749 §2.3.1: both parts form-urlencoded before base64. */
	_cleanup_free_ char *id = ccapi_url_escape(client_id);
	_cleanup_free_ char *sec = ccapi_url_escape(secret);
	_cleanup_free_ char *plain = NULL;
	char *out;
	size_t n;

	if (!id || !sec)
		goto fail;
	n = strlen(id) + 1 + strlen(sec);
	plain = malloc(n + 1);
	if (!plain)
		goto fail;
	snprintf(plain, n + 1, "%s:%s", id, sec);
	out = malloc(6 + (n + 2) / 3 * 4 + 1);
	if (!out)
		goto fail;
	memcpy(out, "Basic ", 6);
	base64_encode((const uint8_t *)plain, n, out + 6, false);
	explicit_bzero(plain, n);
	explicit_bzero(sec, strlen(sec));
	return out;
fail:
	if (plain)
		explicit_bzero(plain, strlen(plain));
	if (sec)
		explicit_bzero(sec, strlen(sec));
	return NULL;
}

struct sha256 {
	uint32_t h[8];
	uint8_t block[64];
	size_t fill;
	uint64_t total;
};

static const uint32_t sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

static inline uint32_t ror(uint32_t x, unsigned n)
{
	return x >> n | x << (32 - n);
}

static void sha256_block(struct sha256 *s, const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
	e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) +
			      sha_k[i] + w[i];
		uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));

		h = g, g = f, f = e, e = d + t1;
		d = c, c = b, b = a, a = t1 + t2;
	}
	s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
	s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

void ccapi_sha256(const void *data, size_t len, uint8_t out[static 32])
{
	static const uint32_t init[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					  0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	const uint8_t *p = data;
	struct sha256 s = { .total = len };
	uint64_t bits;

	memcpy(s.h, init, sizeof(init));
	for (; len >= 64; len -= 64, p += 64)
		sha256_block(&s, p);
	memcpy(s.block, p, len);
	s.fill = len;
	s.block[s.fill++] = 0x80;
	if (s.fill > 56) {
		memset(s.block + s.fill, 0, 64 - s.fill);
		sha256_block(&s, s.block);
		s.fill = 0;
	}
	memset(s.block + s.fill, 0, 56 - s.fill);
	bits = s.total * 8;
	for (int i = 0; i < 8; i++)
		s.block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
	sha256_block(&s, s.block);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(s.h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(s.h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(s.h[i] >> 8);
		out[4 * i + 3] = (uint8_t)s.h[i];
	}
	explicit_bzero(&s, sizeof(s)); /* it hashed a PKCE verifier */
}

void ccapi_pkce_challenge(const char *verifier, char challenge[static CCAPI_PKCE_CHALLENGE_LEN + 1])
{
	uint8_t digest[32];

	ccapi_sha256(verifier, strlen(verifier), digest);
	base64_encode(digest, sizeof(digest), challenge, true);
}

int ccapi_random_token(char *buf, size_t len)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";
	uint8_t rnd[256];
	size_t o = 0;

	while (o < len) {
		ssize_t n = getrandom(rnd, sizeof(rnd), 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* 66 symbols: reject bytes >= 198 (3 * 66) so every symbol is equally likely. */
		for (ssize_t i = 0; i < n && o < len; i++)
			if (rnd[i] < 198)
				buf[o++] = alpha[rnd[i] % 66];
	}
	buf[len] = '\0';
	explicit_bzero(rnd, sizeof(rnd));
	return 0;
}

/* ------------------------------------------------------------------ OAuth2 URLs */

int ccapi_authorize_url(const char *auth_base, const char *client_id, const char *redirect_uri,
			const char *state, const char *challenge, char **ret_url, char *err,
			size_t errlen)
{
	_cleanup_free_ char *q = NULL;
	struct buf b = { 0 };
	int r;

	if (!auth_base || strncmp(auth_base, "https://", 8) != 0)
		return set_error(err, errlen, -EINVAL, "auth_base must be an https:// URL");
	if (!redirect_uri || !*redirect_uri || strpbrk(redirect_uri, " \t\r\n\"<>"))
		return set_error(err, errlen, -EINVAL,
				 "the redirect URI must be the one registered for the application "
				 "in the Constant Contact developer portal");
	r = ccapi_form_add(&q, "client_id", client_id);
	if (r >= 0)
		r = ccapi_form_add(&q, "redirect_uri", redirect_uri);
	if (r >= 0)
		r = ccapi_form_add(&q, "response_type", "code");
	if (r >= 0)
		r = ccapi_form_add(&q, "scope", CCAPI_OAUTH_SCOPE);
	if (r >= 0)
		r = ccapi_form_add(&q, "state", state);
	if (r >= 0 && challenge) {
		r = ccapi_form_add(&q, "code_challenge", challenge);
		if (r >= 0)
			r = ccapi_form_add(&q, "code_challenge_method", "S256");
	}
	if (r >= 0)
		r = buf_add(&b, auth_base, strlen(auth_base));
	if (r >= 0 && b.len && b.p[b.len - 1] == '/')
		b.len--;
	if (r >= 0)
		r = buf_add(&b, "/authorize?", 11);
	if (r >= 0)
		r = buf_add(&b, q, strlen(q));
	if (r < 0) {
		free(b.p);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	*ret_url = b.p;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes [s, s+n) ('+' is a space, as in forms). NULL on OOM, a bad escape or a NUL. */
static char *url_unescape(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	size_t o = 0;

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;

		if (s[i] != '%') {
			out[o++] = s[i] == '+' ? ' ' : s[i];
			continue;
		}
		if (n - i < 3)
			goto bad;
		hi = hexval(s[i + 1]);
		lo = hexval(s[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			goto bad;
		out[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[o] = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

static bool consttime_streq(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	unsigned char d = na != nb;

	for (size_t i = 0; i < na && i < nb; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

int ccapi_redirect_parse(const char *url, const char *expected_state, char **ret_code, char *err,
			 size_t errlen)
{
	_cleanup_free_ char *code = NULL, *state = NULL, *error = NULL, *desc = NULL;
	const char *q, *end;
	int r = 0;

	if (!url || !(q = strchr(url, '?')))
		return set_error(err, errlen, -EINVAL,
				 "this is not the redirect URL: paste the whole address the "
				 "browser was sent to after approving (it contains "
				 "?code=...&state=...)");
	q++;
	end = q + strcspn(q, "#");
	while (q < end && r >= 0) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(pe - q));
		char **slot = NULL;

		if (eq) {
			size_t kn = (size_t)(eq - q);

			if (kn == 4 && !memcmp(q, "code", 4))
				slot = &code;
			else if (kn == 5 && !memcmp(q, "state", 5))
				slot = &state;
			else if (kn == 5 && !memcmp(q, "error", 5))
				slot = &error;
			else if (kn == 17 && !memcmp(q, "error_description", 17))
				slot = &desc;
		}
		if (slot) {
			free(*slot);
			*slot = url_unescape(eq + 1, (size_t)(pe - eq - 1));
			if (!*slot)
				r = set_error(err, errlen, -EINVAL,
					      "the redirect URL is malformed (bad %%-escape)");
		}
		q = amp ? amp + 1 : end;
	}
	if (r < 0)
		return r;
	if (error) {
		_cleanup_free_ char *e = clean_text(error, 100);
		_cleanup_free_ char *d = desc ? clean_text(desc, 300) : NULL;

		return set_error(err, errlen, -EACCES, "authorization was not granted: %s%s%s",
				 e ? e : "error", d ? ": " : "", d ? d : "");
	}
	if (!code || !*code)
		return set_error(err, errlen, -EINVAL,
				 "the redirect URL carries no authorization code (code=...)");
	if (!state || !expected_state || !consttime_streq(state, expected_state))
		return set_error(err, errlen, -EPERM,
				 "the redirect URL does not belong to this authorization (state "
				 "mismatch): start again with a fresh authorize URL");
	*ret_code = TAKE_PTR(code);
	return 0;
}

/* ------------------------------------------------------------------ JSON field access */

/* A string member, cleaned and bounded (transfer full); NULL if absent/not a string (or OOM:
 * *oom set). */
static char *get_text(const json_t *o, const char *key, size_t max, bool *oom)
{
	json_t *v = json_object_get(o, key);
	char *s;

	if (!json_is_string(v))
		return NULL;
	s = clean_text(json_string_value(v), max);
	if (!s)
		*oom = true;
	return s;
}

/* A string member copied verbatim (secrets: must not be altered); NULL if absent. */
static char *get_secret(const json_t *o, const char *key, bool *oom)
{
	json_t *v = json_object_get(o, key);
	const char *s;
	char *c;

	if (!json_is_string(v))
		return NULL;
	s = json_string_value(v);
	if (!*s || strlen(s) != json_string_length(v) || strlen(s) > 16384)
		return NULL; /* empty, embedded NUL, or absurd: not a usable token */
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return NULL; /* tokens are printable ASCII, or they cannot go in a header */
	c = strdup(s);
	if (!c)
		*oom = true;
	return c;
}

static int64_t get_int(const json_t *o, const char *key, int64_t dflt)
{
	json_t *v = json_object_get(o, key);

	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v)) {
		double d = json_real_value(v);

		if (d > -9e18 && d < 9e18)
			return (int64_t)d;
	}
	return dflt;
}

static void copy_id(char dst[static CCAPI_ID_LEN + 1], const json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	dst[0] = '\0';
	if (json_is_string(v) && ccapi_id_valid(json_string_value(v)))
		memcpy(dst, json_string_value(v), CCAPI_ID_LEN + 1);
}

static char *get_next(const json_t *o, bool *oom)
{
	json_t *links = json_object_get(o, "_links");
	json_t *next = json_object_get(links, "next");
	json_t *href = json_object_get(next, "href");
	const char *s;
	char *c;

	if (!json_is_string(href))
		return NULL;
	s = json_string_value(href);
	if (!*s || strlen(s) > MAX_HREF || strlen(s) != json_string_length(href))
		return NULL;
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return NULL;
	c = strdup(s);
	if (!c)
		*oom = true;
	return c;
}

/* ------------------------------------------------------------------ tokens */

void ccapi_token_done(struct ccapi_token *t)
{
	if (t->access_token)
		explicit_bzero(t->access_token, strlen(t->access_token));
	if (t->refresh_token)
		explicit_bzero(t->refresh_token, strlen(t->refresh_token));
	free(t->access_token);
	free(t->refresh_token);
	free(t->scope);
	memset(t, 0, sizeof(*t));
}

int ccapi_parse_token(const json_t *body, int64_t now_s, struct ccapi_token *ret, char *err,
		      size_t errlen)
{
	struct ccapi_token t = { 0 };
	json_t *tt;
	bool oom = false;
	int64_t exp;
	int r;

	if (!json_is_object(body))
		return set_error(err, errlen, -EBADMSG, "token response is not a JSON object");
	tt = json_object_get(body, "token_type");
	if (tt && (!json_is_string(tt) || strcasecmp(json_string_value(tt), "bearer") != 0))
		return set_error(err, errlen, -EBADMSG,
				 "token response has a token_type other than Bearer");
	t.access_token = get_secret(body, "access_token", &oom);
	t.refresh_token = get_secret(body, "refresh_token", &oom);
	t.scope = get_text(body, "scope", 500, &oom);
	if (oom) {
		r = set_error(err, errlen, -ENOMEM, "out of memory");
		goto fail;
	}
	if (!t.access_token) {
		r = set_error(err, errlen, -EBADMSG,
			      "token response carries no usable access_token");
		goto fail;
	}
	exp = get_int(body, "expires_in", 3600);
	/* The spec calls expires_in an epoch timestamp, OAuth a lifetime: a value later than now
	 * can only be the former. A lifetime under a minute is raised to one so that a token is
	 * used at least once instead of being refreshed in a loop. */
	if (exp > now_s)
		t.expires_at = exp;
	else
		t.expires_at = now_s + (exp < 60 ? 60 : exp);
	*ret = t;
	return 0;
fail:
	ccapi_token_done(&t);
	return r;
}

void ccapi_device_auth_done(struct ccapi_device_auth *d)
{
	if (d->device_code)
		explicit_bzero(d->device_code, strlen(d->device_code));
	free(d->device_code);
	free(d->user_code);
	free(d->verification_uri);
	free(d->verification_uri_complete);
	memset(d, 0, sizeof(*d));
}

int ccapi_parse_device_auth(const json_t *body, int64_t now_s, struct ccapi_device_auth *ret,
			    char *err, size_t errlen)
{
	struct ccapi_device_auth d = { 0 };
	bool oom = false;
	int64_t exp, interval;
	int r;

	if (!json_is_object(body))
		return set_error(err, errlen, -EBADMSG,
				 "device authorization response is not a JSON object");
	d.device_code = get_secret(body, "device_code", &oom);
	d.user_code = get_text(body, "user_code", 64, &oom);
	d.verification_uri = get_text(body, "verification_uri", 1000, &oom);
	if (!d.verification_uri) /* the name some servers used before RFC 8628 settled it */
		d.verification_uri = get_text(body, "verification_url", 1000, &oom);
	d.verification_uri_complete = get_text(body, "verification_uri_complete", 1000, &oom);
	if (oom) {
		r = set_error(err, errlen, -ENOMEM, "out of memory");
		goto fail;
	}
	if (!d.device_code || !d.user_code || !*d.user_code || !d.verification_uri ||
	    !*d.verification_uri) {
		r = set_error(err, errlen, -EBADMSG,
			      "device authorization response lacks device_code, user_code or "
			      "verification_uri");
		goto fail;
	}
	exp = get_int(body, "expires_in", 600);
	d.expires_at = exp > now_s ? exp : now_s + (exp < 1 ? 600 : exp);
	interval = get_int(body, "interval", 5);
	d.interval_s = interval < 1 ? 1 : interval > 300 ? 300 : (uint32_t)interval;
	*ret = d;
	return 0;
fail:
	ccapi_device_auth_done(&d);
	return r;
}

/* ------------------------------------------------------------------ errors */

static void append_msg(char *dst, size_t dstlen, const char *msg)
{
	size_t n = strlen(dst);
	_cleanup_free_ char *c = clean_text(msg, dstlen);

	if (!c || !*c || n + 3 >= dstlen)
		return;
	snprintf(dst + n, dstlen - n, "%s%s", n ? "; " : "", c);
}

int ccapi_parse_error(const json_t *body, struct ccapi_error *ret)
{
	struct ccapi_error e = { { 0 } };
	json_t *key, *msg;

	memset(ret, 0, sizeof(*ret));
	if (json_is_array(body)) {
		size_t i;
		json_t *it;

		json_array_foreach(body, i, it) {
			if (i >= 20)
				break;
			key = json_object_get(it, "error_key");
			msg = json_object_get(it, "error_message");
			if (!json_is_string(key) && !json_is_string(msg))
				continue;
			if (!e.key[0] && json_is_string(key))
				clean_into(e.key, sizeof(e.key), json_string_value(key));
			if (json_is_string(msg))
				append_msg(e.message, sizeof(e.message), json_string_value(msg));
		}
		if (!e.key[0] && !e.message[0])
			return -ENOMSG;
		*ret = e;
		return 0;
	}
	if (!json_is_object(body))
		return -ENOMSG;
	key = json_object_get(body, "error_key");
	msg = json_object_get(body, "error_message");
	if (json_is_string(key) || json_is_string(msg)) {
		if (json_is_string(key))
			clean_into(e.key, sizeof(e.key), json_string_value(key));
		if (json_is_string(msg))
			append_msg(e.message, sizeof(e.message), json_string_value(msg));
		*ret = e;
		return 0;
	}
	key = json_object_get(body, "error");
	msg = json_object_get(body, "error_description");
	if (json_is_string(key)) {
		clean_into(e.key, sizeof(e.key), json_string_value(key));
		if (json_is_string(msg))
			append_msg(e.message, sizeof(e.message), json_string_value(msg));
		*ret = e;
		return 0;
	}
	return -ENOMSG;
}

/* ------------------------------------------------------------------ activities */

static const char *const activity_states[] = {
	[CCAPI_ACTIVITY_UNKNOWN] = "unknown",
	[CCAPI_ACTIVITY_INITIALIZED] = "initialized",
	[CCAPI_ACTIVITY_PROCESSING] = "processing",
	[CCAPI_ACTIVITY_COMPLETED] = "completed",
	[CCAPI_ACTIVITY_CANCELLED] = "cancelled",
	[CCAPI_ACTIVITY_FAILED] = "failed",
	[CCAPI_ACTIVITY_TIMED_OUT] = "timed_out",
};

const char *ccapi_activity_state_to_string(enum ccapi_activity_state s)
{
	return (unsigned)s < ELEMENTSOF(activity_states) ? activity_states[s] : "unknown";
}

bool ccapi_activity_state_terminal(enum ccapi_activity_state s)
{
	return s == CCAPI_ACTIVITY_COMPLETED || s == CCAPI_ACTIVITY_CANCELLED ||
	       s == CCAPI_ACTIVITY_FAILED || s == CCAPI_ACTIVITY_TIMED_OUT;
}

static enum ccapi_activity_state activity_state_from(const char *s)
{
	for (size_t i = 1; i < ELEMENTSOF(activity_states); i++)
		if (streq(s, activity_states[i]))
			return (enum ccapi_activity_state)i;
	if (streq(s, "time_out")) /* the spec's description spells it so */
		return CCAPI_ACTIVITY_TIMED_OUT;
	return CCAPI_ACTIVITY_UNKNOWN;
}

static void activity_error_done(struct ccapi_activity_error *e)
{
	free(e->email);
	free(e->reason);
	free(e->raw);
}

void ccapi_activity_done(struct ccapi_activity *a)
{
	for (size_t i = 0; i < a->n_errors; i++)
		activity_error_done(&a->errors[i]);
	free(a->errors);
	memset(a, 0, sizeof(*a));
}

/*
 * "<email>: <reason>": the part before the first ": " is taken as the address the contact was
 * sent with when it is one word (no blank), so rejected malformed addresses map back too; prose
 * such as "The activity failed: ..." has blanks and stays whole.
 */
static int split_activity_error(struct ccapi_activity_error *e)
{
	const char *sep = strstr(e->raw, ": ");
	size_t n;

	if (sep) {
		n = (size_t)(sep - e->raw);
		if (n >= 1 && n <= 254 && strcspn(e->raw, " \t") >= n) {
			e->email = strndup(e->raw, n);
			e->reason = strdup(sep + 2);
			if (!e->email || !e->reason)
				return -ENOMEM;
			ascii_lower(e->email);
			return 0;
		}
	}
	e->reason = strdup(e->raw);
	return e->reason ? 0 : -ENOMEM;
}

int ccapi_parse_activity(const json_t *body, struct ccapi_activity *ret, char *err, size_t errlen)
{
	struct ccapi_activity a = { 0 };
	json_t *state, *status, *errs, *it;
	size_t i;
	int r;

	if (!json_is_object(body))
		return set_error(err, errlen, -EBADMSG, "activity is not a JSON object");
	copy_id(a.activity_id, body, "activity_id");
	if (!a.activity_id[0])
		return set_error(err, errlen, -EBADMSG, "activity has no valid activity_id");
	state = json_object_get(body, "state");
	if (!json_is_string(state))
		return set_error(err, errlen, -EBADMSG, "activity %s has no state", a.activity_id);
	clean_into(a.state_name, sizeof(a.state_name), json_string_value(state));
	a.state = activity_state_from(json_string_value(state));
	a.percent_done = (int)get_int(body, "percent_done", 0);
	if (a.percent_done < 0 || a.percent_done > 100)
		a.percent_done = a.percent_done < 0 ? 0 : 100;
	status = json_object_get(body, "status");
	a.items_total_count = get_int(status, "items_total_count", -1);
	a.items_completed_count = get_int(status, "items_completed_count", -1);
	a.person_count = get_int(status, "person_count", -1);
	a.error_count = get_int(status, "error_count", -1);
	a.correctable_count = get_int(status, "correctable_count", -1);
	a.cannot_add_to_list_count = get_int(status, "cannot_add_to_list_count", -1);
	a.list_count = get_int(status, "list_count", -1);
	errs = json_object_get(body, "activity_errors");
	if (json_is_array(errs) && json_array_size(errs) > 0) {
		size_t n = json_array_size(errs);

		if (n > MAX_ACTIVITY_ERRORS)
			n = MAX_ACTIVITY_ERRORS;
		a.errors = calloc(n, sizeof(*a.errors));
		if (!a.errors) {
			r = set_error(err, errlen, -ENOMEM, "out of memory");
			goto fail;
		}
		json_array_foreach(errs, i, it) {
			struct ccapi_activity_error *e;
			const char *text = NULL;

			if (i >= n)
				break;
			/* Plain strings in practice; the spec's ActivityErrors {message} too. */
			if (json_is_string(it))
				text = json_string_value(it);
			else if (json_is_string(json_object_get(it, "message")))
				text = json_string_value(json_object_get(it, "message"));
			if (!text)
				continue;
			e = &a.errors[a.n_errors++];
			e->raw = clean_text(text, MAX_KEPT_TEXT);
			if (!e->raw || split_activity_error(e) < 0) {
				r = set_error(err, errlen, -ENOMEM, "out of memory");
				goto fail;
			}
		}
	}
	*ret = a;
	return 0;
fail:
	ccapi_activity_done(&a);
	return r;
}

void ccapi_activity_page_done(struct ccapi_activity_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		ccapi_activity_done(&p->activities[i]);
	free(p->activities);
	free(p->next);
	memset(p, 0, sizeof(*p));
}

/* Shared walk over a page's array member: calls parse_one per element into an array of size
 * elem_size; failures of one element (other than -ENOMEM) skip it. */
typedef int (*parse_one_fn)(const json_t *item, void *out, char *err, size_t errlen);

static int parse_page(const json_t *body, const char *member, size_t elem_size, parse_one_fn one,
		      void **ret_items, size_t *ret_n, char **ret_next, size_t *ret_skipped,
		      char *err, size_t errlen)
{
	json_t *arr, *it;
	char *items = NULL;
	size_t n = 0, skipped = 0, i, cap;
	bool oom = false;
	char *next;

	if (!json_is_object(body))
		return set_error(err, errlen, -EBADMSG, "response is not a JSON object");
	arr = json_object_get(body, member);
	if (!json_is_array(arr))
		return set_error(err, errlen, -EBADMSG, "response has no \"%s\" array", member);
	cap = json_array_size(arr);
	if (cap > MAX_PAGE_ENTRIES)
		cap = MAX_PAGE_ENTRIES;
	if (cap) {
		items = calloc(cap, elem_size);
		if (!items)
			return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	json_array_foreach(arr, i, it) {
		int r;

		if (n >= cap)
			break;
		r = one(it, items + n * elem_size, NULL, 0);
		if (r == -ENOMEM) {
			oom = true;
			break;
		}
		if (r < 0)
			skipped++;
		else
			n++;
	}
	next = oom ? NULL : get_next(body, &oom);
	if (oom) {
		/* The caller's done function frees what was parsed. */
		*ret_items = items;
		*ret_n = n;
		*ret_next = NULL;
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	*ret_items = items;
	*ret_n = n;
	*ret_next = next;
	if (ret_skipped)
		*ret_skipped = skipped;
	return 0;
}

static int parse_activity_one(const json_t *it, void *out, char *err, size_t errlen)
{
	return ccapi_parse_activity(it, out, err, errlen);
}

int ccapi_parse_activity_page(const json_t *body, struct ccapi_activity_page *ret,
			      size_t *ret_skipped, char *err, size_t errlen)
{
	struct ccapi_activity_page p = { 0 };
	void *items = NULL;
	int r;

	r = parse_page(body, "activities", sizeof(struct ccapi_activity), parse_activity_one,
		       &items, &p.n, &p.next, ret_skipped, err, errlen);
	p.activities = items;
	if (r < 0) {
		ccapi_activity_page_done(&p);
		return r;
	}
	*ret = p;
	return 0;
}

/* ------------------------------------------------------------------ lists */

void ccapi_list_done(struct ccapi_list *l)
{
	free(l->name);
	memset(l, 0, sizeof(*l));
}

int ccapi_parse_list(const json_t *body, struct ccapi_list *ret, char *err, size_t errlen)
{
	struct ccapi_list l = { .membership_count = -1 };
	json_t *del;
	bool oom = false;

	if (!json_is_object(body))
		return set_error(err, errlen, -EBADMSG, "list is not a JSON object");
	copy_id(l.list_id, body, "list_id");
	if (!l.list_id[0])
		return set_error(err, errlen, -EBADMSG, "list has no valid list_id");
	l.name = get_text(body, "name", 255, &oom);
	if (oom)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	if (!l.name) {
		l.name = strdup("");
		if (!l.name)
			return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	l.membership_count = get_int(body, "membership_count", -1);
	if (l.membership_count < -1)
		l.membership_count = -1;
	del = json_object_get(body, "deleted_at");
	l.deleted = del && !json_is_null(del) && !(json_is_string(del) && !*json_string_value(del));
	*ret = l;
	return 0;
}

void ccapi_list_page_done(struct ccapi_list_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		ccapi_list_done(&p->lists[i]);
	free(p->lists);
	free(p->next);
	memset(p, 0, sizeof(*p));
}

static int parse_list_one(const json_t *it, void *out, char *err, size_t errlen)
{
	return ccapi_parse_list(it, out, err, errlen);
}

int ccapi_parse_list_page(const json_t *body, struct ccapi_list_page *ret, char *err,
			  size_t errlen)
{
	struct ccapi_list_page p = { 0 };
	void *items = NULL;
	int r;

	r = parse_page(body, "lists", sizeof(struct ccapi_list), parse_list_one, &items, &p.n,
		       &p.next, NULL, err, errlen);
	p.lists = items;
	if (r < 0) {
		ccapi_list_page_done(&p);
		return r;
	}
	*ret = p;
	return 0;
}

static int append_items(void **to, size_t *to_n, void **from, size_t *from_n, size_t elem)
{
	char *p;

	if (*from_n == 0)
		return 0;
	if (*to_n > SIZE_MAX / elem - *from_n)
		return -ENOMEM;
	p = realloc(*to, (*to_n + *from_n) * elem);
	if (!p)
		return -ENOMEM;
	memcpy(p + *to_n * elem, *from, *from_n * elem);
	*to = p;
	*to_n += *from_n;
	free(*from);
	*from = NULL;
	*from_n = 0;
	return 0;
}

int ccapi_list_page_append(struct ccapi_list_page *to, struct ccapi_list_page *from)
{
	void *t = to->lists, *f = from->lists;
	int r = append_items(&t, &to->n, &f, &from->n, sizeof(struct ccapi_list));

	to->lists = t;
	from->lists = f;
	return r;
}

/* ------------------------------------------------------------------ contacts */

void ccapi_contact_page_done(struct ccapi_contact_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->contacts[i].email);
	free(p->contacts);
	free(p->next);
	memset(p, 0, sizeof(*p));
}

static int parse_contact_one(const json_t *it, void *out, char *err, size_t errlen)
{
	struct ccapi_contact *c = out;
	bool oom = false;

	if (!json_is_object(it))
		return -EBADMSG;
	copy_id(c->contact_id, it, "contact_id");
	if (!c->contact_id[0])
		return -EBADMSG;
	c->email = get_text(json_object_get(it, "email_address"), "address", 320, &oom);
	if (oom)
		return -ENOMEM;
	ascii_lower(c->email);
	return 0;
}

int ccapi_parse_contact_page(const json_t *body, struct ccapi_contact_page *ret, char *err,
			     size_t errlen)
{
	struct ccapi_contact_page p = { 0 };
	void *items = NULL;
	int r;

	r = parse_page(body, "contacts", sizeof(struct ccapi_contact), parse_contact_one, &items,
		       &p.n, &p.next, NULL, err, errlen);
	p.contacts = items;
	if (r < 0) {
		ccapi_contact_page_done(&p);
		return r;
	}
	*ret = p;
	return 0;
}

/* ------------------------------------------------------------------ custom fields */

static void custom_field_done(struct ccapi_custom_field *f)
{
	free(f->name);
	free(f->label);
	free(f->type);
}

void ccapi_custom_field_page_done(struct ccapi_custom_field_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		custom_field_done(&p->fields[i]);
	free(p->fields);
	free(p->next);
	memset(p, 0, sizeof(*p));
}

static int parse_custom_field_one(const json_t *it, void *out, char *err, size_t errlen)
{
	struct ccapi_custom_field *f = out;
	bool oom = false;

	if (!json_is_object(it))
		return -EBADMSG;
	copy_id(f->custom_field_id, it, "custom_field_id");
	f->name = get_text(it, "name", 255, &oom);
	f->label = get_text(it, "label", 255, &oom);
	f->type = get_text(it, "type", 64, &oom);
	if (oom || !f->custom_field_id[0] || !f->name) {
		custom_field_done(f);
		memset(f, 0, sizeof(*f));
		return oom ? -ENOMEM : -EBADMSG;
	}
	return 0;
}

int ccapi_parse_custom_field_page(const json_t *body, struct ccapi_custom_field_page *ret,
				  char *err, size_t errlen)
{
	struct ccapi_custom_field_page p = { 0 };
	void *items = NULL;
	int r;

	r = parse_page(body, "custom_fields", sizeof(struct ccapi_custom_field),
		       parse_custom_field_one, &items, &p.n, &p.next, NULL, err, errlen);
	p.fields = items;
	if (r < 0) {
		ccapi_custom_field_page_done(&p);
		return r;
	}
	*ret = p;
	return 0;
}

int ccapi_custom_field_page_append(struct ccapi_custom_field_page *to,
				   struct ccapi_custom_field_page *from)
{
	void *t = to->fields, *f = from->fields;
	int r = append_items(&t, &to->n, &f, &from->n, sizeof(struct ccapi_custom_field));

	to->fields = t;
	from->fields = f;
	return r;
}
