/* SPDX-License-Identifier: MIT */
/*
 * Streaming CSV / JSON Lines import (rules in importer.h). Bytes go through a small state machine
 * one at a time, so a chunk may end anywhere; a complete record is checked and staged at once, so
 * the first bad record stops the import with its line number while nothing has touched the main
 * database. Memory is bounded by one record (IMPORTER_MAX_RECORD) plus the header.
 *
 * Every error is sticky: after the first one the staged rows are gone, and each later call repeats
 * the same message, so a caller that keeps feeding cannot turn a failed import into a partial one.
 */
#include "importer.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "store-data.h"
#include "utf8.h"
#include "util.h"

#define ERR_MAX 512

static const unsigned char bom[3] = { 0xef, 0xbb, 0xbf };

enum csv_state {
	CSV_FIELD_START,
	CSV_UNQUOTED,
	CSV_QUOTED,
	CSV_QUOTED_QUOTE, /* a quote inside a quoted field: doubled quote or the end */
	CSV_CR,		  /* a CR outside quotes: LF must follow */
};

struct buf {
	char *data;
	size_t len, cap;
};

struct importer {
	struct store *store;
	enum importer_kind kind;
	enum importer_format format;
	char *id_column;
	char *segment_name;
	int64_t import_id;
	bool staged_any;

	int error;
	char errmsg[ERR_MAX];
	bool finished;

	size_t bom_seen; /* leading bytes matched against the BOM so far */
	bool bom_done;
	uint64_t line; /* physical line of the byte being read, 1-based */
	uint64_t record_line;
	int64_t rows;

	/* CSV */
	enum csv_state state;
	struct buf record; /* the current record's fields, each NUL-terminated */
	size_t *ends;	   /* end offset of each field in record */
	bool *quoted;
	size_t n_fields;
	size_t field_start;
	char **columns;
	size_t n_columns;
	size_t id_col;
	uint64_t quote_line; /* where the open quoted field started */

	/* JSON Lines */
	struct buf jline;
};

static int buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		char *d;

		while (cap < b->len + n + 1)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

/* Checks UTF-8; returns SIZE_MAX when valid, else the 0-based byte offset of the first bad byte.
 * *ret_chars (may be NULL) gets the number of characters of valid text. */
static size_t utf8_check(const char *s, size_t len, size_t *ret_chars)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	size_t chars = 0;

	while (p < end) {
		size_t n = utf8_sequence_length(p, (size_t)(end - p));

		if (n == 0)
			return (size_t)(p - (const unsigned char *)s);
		p += n;
		chars++;
	}
	if (ret_chars)
		*ret_chars = chars;
	return SIZE_MAX;
}

/* Records the first error (sticky) and drops whatever was staged. */
_printf_(3, 4) static int fail(struct importer *im, int r, const char *fmt, ...)
{
	va_list ap;

	if (im->error)
		return im->error;
	va_start(ap, fmt);
	vsnprintf(im->errmsg, sizeof(im->errmsg), fmt, ap);
	va_end(ap);
	im->error = r;
	return r;
}

static const char *column_name(struct importer *im, size_t i)
{
	return im->columns && i < im->n_columns ? im->columns[i] : NULL;
}

/* "line N, column C (name)" prefix for an error in field i of the current record. */
static int fail_field(struct importer *im, size_t i, const char *what)
{
	const char *name = column_name(im, i);

	if (name)
		return fail(im, -EINVAL, "line %" PRIu64 ", column %zu (%s): %s", im->record_line,
			    i + 1, name, what);
	return fail(im, -EINVAL, "line %" PRIu64 ", column %zu: %s", im->record_line, i + 1, what);
}

static int check_id(struct importer *im, const char *id, size_t len, size_t col)
{
	size_t chars = 0;

	if (len == 0)
		return col == SIZE_MAX
			       ? fail(im, -EINVAL, "line %" PRIu64 ": the profile id is empty",
				      im->record_line)
			       : fail_field(im, col, "the profile id is empty");
	if (utf8_check(id, len, &chars) != SIZE_MAX)
		return fail(im, -EINVAL, "line %" PRIu64 ": the profile id is not valid UTF-8",
			    im->record_line);
	if (chars > IMPORTER_MAX_ID_LENGTH)
		return fail(im, -EINVAL,
			    "line %" PRIu64 ": the profile id is %zu characters long; at most %d "
			    "are allowed",
			    im->record_line, chars, IMPORTER_MAX_ID_LENGTH);
	return 0;
}

static int stage(struct importer *im, const char *id, const char *attributes, const char *json_line)
{
	char err[ERR_MAX] = "";
	int64_t prev = 0;
	int r;

	if (im->rows >= IMPORTER_MAX_ROWS)
		return fail(im, -EINVAL, "line %" PRIu64 ": more than %d rows; split the file",
			    im->record_line, IMPORTER_MAX_ROWS);
	r = store_data_import_stage(im->store, im->import_id, id, (int64_t)im->record_line,
				    im->kind == IMPORTER_PROFILES ? attributes : NULL,
				    im->kind == IMPORTER_PROFILES ? json_line : NULL, im->id_column,
				    &prev, err, sizeof(err));
	if (r == -EEXIST)
		return fail(im, -EINVAL,
			    "line %" PRIu64 ": profile id '%s' already appeared on line %" PRId64
			    "; each profile may appear once",
			    im->record_line, id, prev);
	if (r < 0)
		return fail(im, r, "line %" PRIu64 ": %s", im->record_line, err);
	im->staged_any = true;
	im->rows++;
	return 0;
}

/* ---- CSV ------------------------------------------------------------------------------------- */

static int csv_header(struct importer *im)
{
	bool have_id = false;

	im->columns = calloc(im->n_fields, sizeof(*im->columns));
	if (!im->columns)
		return fail(im, -ENOMEM, "out of memory");
	for (size_t i = 0; i < im->n_fields; i++) {
		const char *name = im->record.data + (i ? im->ends[i - 1] + 1 : 0);
		size_t len = im->ends[i] - (i ? im->ends[i - 1] + 1 : 0);

		if (len == 0)
			return fail_field(im, i, "a column in the header has no name");
		if (utf8_check(name, len, NULL) != SIZE_MAX)
			return fail_field(im, i, "the column name is not valid UTF-8");
		if (len > IMPORTER_MAX_ATTRIBUTE_NAME)
			return fail_field(im, i, "the column name is longer than 200 bytes");
		for (size_t j = 0; j < i; j++)
			if (streq(im->columns[j], name))
				return fail(im, -EINVAL,
					    "line %" PRIu64
					    ": column '%s' appears twice in the header "
					    "(columns %zu and %zu)",
					    im->record_line, name, j + 1, i + 1);
		im->columns[i] = strdup(name);
		if (!im->columns[i])
			return fail(im, -ENOMEM, "out of memory");
		im->n_columns = i + 1;
		if (streq(name, im->id_column)) {
			im->id_col = i;
			have_id = true;
		}
	}
	if (!have_id)
		return fail(im, -EINVAL,
			    "line %" PRIu64 ": the header has no '%s' column; name the column that "
			    "holds the profile id (--id-column)",
			    im->record_line, im->id_column);
	return 0;
}

static int csv_row(struct importer *im)
{
	_cleanup_free_ char *dump = NULL;
	json_t *obj = NULL;
	const char *id;
	int r;

	if (im->n_fields != im->n_columns)
		return fail(im, -EINVAL,
			    "line %" PRIu64 ": %zu fields, but the header has %zu columns",
			    im->record_line, im->n_fields, im->n_columns);
	for (size_t i = 0; i < im->n_fields; i++) {
		const char *v = im->record.data + (i ? im->ends[i - 1] + 1 : 0);
		size_t len = im->ends[i] - (i ? im->ends[i - 1] + 1 : 0);

		if (utf8_check(v, len, NULL) != SIZE_MAX)
			return fail_field(im, i, "the value is not valid UTF-8");
	}
	id = im->record.data + (im->id_col ? im->ends[im->id_col - 1] + 1 : 0);
	r = check_id(im, id, strlen(id), im->id_col);
	if (r < 0)
		return r;
	if (im->kind == IMPORTER_SEGMENT)
		return stage(im, id, NULL, NULL);

	obj = json_object();
	if (!obj)
		return fail(im, -ENOMEM, "out of memory");
	for (size_t i = 0; i < im->n_fields; i++) {
		const char *v = im->record.data + (i ? im->ends[i - 1] + 1 : 0);
		size_t len = im->ends[i] - (i ? im->ends[i - 1] + 1 : 0);

		if (i == im->id_col || len == 0)
			continue; /* an empty cell leaves the attribute out */
		if (json_object_set_new_nocheck(obj, im->columns[i], json_stringn(v, len)) < 0) {
			json_decref(obj);
			return fail(im, -ENOMEM, "out of memory");
		}
	}
	dump = json_dumps(obj, JSON_COMPACT);
	json_decref(obj);
	if (!dump)
		return fail(im, -ENOMEM, "out of memory");
	return stage(im, id, dump, NULL);
}

static void csv_reset_record(struct importer *im)
{
	im->record.len = 0;
	im->n_fields = 0;
	im->field_start = 0;
	im->state = CSV_FIELD_START;
}

static int csv_end_field(struct importer *im, bool quoted)
{
	if (im->n_fields >= IMPORTER_MAX_FIELDS)
		return fail(im, -EINVAL, "line %" PRIu64 ": more than %d fields", im->record_line,
			    IMPORTER_MAX_FIELDS);
	if (!im->ends) {
		im->ends = calloc(IMPORTER_MAX_FIELDS, sizeof(*im->ends));
		im->quoted = calloc(IMPORTER_MAX_FIELDS, sizeof(*im->quoted));
		if (!im->ends || !im->quoted)
			return fail(im, -ENOMEM, "out of memory");
	}
	im->ends[im->n_fields] = im->record.len;
	im->quoted[im->n_fields] = quoted;
	im->n_fields++;
	/* The terminator keeps every field a C string inside the record. */
	if (buf_add(&im->record, "", 1) < 0)
		return fail(im, -ENOMEM, "out of memory");
	im->field_start = im->record.len;
	return 0;
}

static int csv_end_record(struct importer *im)
{
	int r;

	/* An empty line: one empty, unquoted field. */
	if (im->n_fields == 1 && im->ends[0] == 0 && !im->quoted[0]) {
		csv_reset_record(im);
		return 0;
	}
	r = im->columns ? csv_row(im) : csv_header(im);
	csv_reset_record(im);
	return r;
}

static int csv_append(struct importer *im, char c)
{
	if (im->record.len - im->field_start >= IMPORTER_MAX_VALUE)
		return fail_field(im, im->n_fields, "the value is longer than 64 KiB");
	if (im->record.len >= IMPORTER_MAX_RECORD)
		return fail(im, -EINVAL, "line %" PRIu64 ": the row is longer than 1 MiB",
			    im->record_line);
	if (buf_add(&im->record, &c, 1) < 0)
		return fail(im, -ENOMEM, "out of memory");
	return 0;
}

static int csv_byte(struct importer *im, char c)
{
	if (im->state == CSV_FIELD_START && im->n_fields == 0)
		im->record_line = im->line; /* the first byte of a record */
	switch (im->state) {
	case CSV_FIELD_START:
		if (c == '"') {
			im->state = CSV_QUOTED;
			im->quote_line = im->line;
			return 0;
		}
		if (c == ',')
			return csv_end_field(im, false);
		if (c == '\n')
			return csv_end_field(im, false) ?: csv_end_record(im);
		if (c == '\r') {
			im->state = CSV_CR;
			return csv_end_field(im, false);
		}
		im->state = CSV_UNQUOTED;
		return csv_append(im, c);
	case CSV_UNQUOTED:
		if (c == ',') {
			im->state = CSV_FIELD_START;
			return csv_end_field(im, false);
		}
		if (c == '\n')
			return csv_end_field(im, false) ?: csv_end_record(im);
		if (c == '\r') {
			im->state = CSV_CR;
			return csv_end_field(im, false);
		}
		if (c == '"')
			return fail_field(im, im->n_fields,
					  "a quote inside an unquoted field; quote the whole field "
					  "and double the quote (\"\")");
		return csv_append(im, c);
	case CSV_QUOTED:
		if (c == '"') {
			im->state = CSV_QUOTED_QUOTE;
			return 0;
		}
		return csv_append(im, c);
	case CSV_QUOTED_QUOTE:
		if (c == '"') {
			im->state = CSV_QUOTED;
			return csv_append(im, c);
		}
		if (c == ',') {
			im->state = CSV_FIELD_START;
			return csv_end_field(im, true);
		}
		if (c == '\n')
			return csv_end_field(im, true) ?: csv_end_record(im);
		if (c == '\r') {
			im->state = CSV_CR;
			return csv_end_field(im, true);
		}
		return fail_field(im, im->n_fields,
				  "text after the closing quote of a quoted field");
	case CSV_CR:
		if (c == '\n')
			return csv_end_record(im);
		return fail(im, -EINVAL,
			    "line %" PRIu64 ": a carriage return not followed by a line feed",
			    im->line);
	}
	return 0;
}

static int csv_finish(struct importer *im)
{
	switch (im->state) {
	case CSV_QUOTED:
		return fail(im, -EINVAL,
			    "line %" PRIu64 ": a quoted field starting on line %" PRIu64
			    " is never closed",
			    im->line, im->quote_line);
	case CSV_CR:
		return fail(im, -EINVAL,
			    "line %" PRIu64 ": a carriage return not followed by a line feed",
			    im->line);
	case CSV_FIELD_START:
		if (im->n_fields == 0 && im->record.len == 0)
			return 0; /* the input ended with a line break */
		__attribute__((fallthrough)); /* a last record without a line break */
	case CSV_UNQUOTED:
	case CSV_QUOTED_QUOTE:
		return csv_end_field(im, im->state == CSV_QUOTED_QUOTE) ?: csv_end_record(im);
	}
	return 0;
}

/* ---- JSON Lines ------------------------------------------------------------------------------ */

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

static int jsonl_id(struct importer *im, json_t *v, char *buf, size_t buflen, const char **ret)
{
	double d;

	if (json_is_string(v)) {
		*ret = json_string_value(v);
		return check_id(im, *ret, json_string_length(v), SIZE_MAX);
	}
	if (json_is_real(v)) {
		/* Parsed with JSON_DECODE_INT_AS_REAL so that big numbers elsewhere in the object
		 * do not fail the parse; an id must still be an exact integer. */
		d = json_real_value(v);
		if (d == floor(d) && fabs(d) <= 9007199254740992.0) {
			snprintf(buf, buflen, "%.0f", d);
			*ret = buf;
			return 0;
		}
	}
	return fail(im, -EINVAL,
		    "line %" PRIu64 ": '%s' must be a string or an integer (up to 2^53; write "
		    "larger ids as strings)",
		    im->record_line, im->id_column);
}

static int jsonl_line(struct importer *im, char *s, size_t len)
{
	char idbuf[32];
	const char *key, *id = NULL;
	json_error_t jerr;
	json_t *obj, *v;
	size_t bad, n = 0;
	int r;

	if (len > 0 && s[len - 1] == '\r')
		s[--len] = '\0';
	if (blank(s, len))
		return 0;
	if (memchr(s, 0, len))
		return fail(im, -EINVAL, "line %" PRIu64 ", column %zu: a NUL byte",
			    im->record_line, (size_t)((char *)memchr(s, 0, len) - s) + 1);
	bad = utf8_check(s, len, NULL);
	if (bad != SIZE_MAX)
		return fail(im, -EINVAL, "line %" PRIu64 ", column %zu: invalid UTF-8",
			    im->record_line, bad + 1);
	obj = json_loadb(s, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
	if (!obj)
		return fail(im, -EINVAL, "line %" PRIu64 ", column %d: %s", im->record_line,
			    jerr.column, jerr.text);
	if (!json_is_object(obj)) {
		json_decref(obj);
		return fail(im, -EINVAL, "line %" PRIu64 ": a JSON object is expected",
			    im->record_line);
	}
	v = json_object_get(obj, im->id_column);
	if (!v) {
		json_decref(obj);
		return fail(im, -EINVAL, "line %" PRIu64 ": the object has no '%s' member",
			    im->record_line, im->id_column);
	}
	json_object_foreach(obj, key, v)
	{
		if (++n > IMPORTER_MAX_FIELDS) {
			r = fail(im, -EINVAL, "line %" PRIu64 ": more than %d attributes",
				 im->record_line, IMPORTER_MAX_FIELDS);
			goto out;
		}
		if (strlen(key) == 0 || strlen(key) > IMPORTER_MAX_ATTRIBUTE_NAME) {
			r = fail(im, -EINVAL,
				 "line %" PRIu64 ": attribute names must be 1 to 200 bytes long",
				 im->record_line);
			goto out;
		}
		if (json_is_string(v) && json_string_length(v) > IMPORTER_MAX_VALUE) {
			r = fail(im, -EINVAL,
				 "line %" PRIu64 ": attribute '%s' is longer than 64 KiB",
				 im->record_line, key);
			goto out;
		}
	}
	r = jsonl_id(im, json_object_get(obj, im->id_column), idbuf, sizeof(idbuf), &id);
	if (r >= 0)
		r = stage(im, id, NULL, s);
out:
	json_decref(obj);
	return r;
}

static int jsonl_byte(struct importer *im, char c)
{
	int r;

	if (c != '\n') {
		if (im->jline.len >= IMPORTER_MAX_RECORD)
			return fail(im, -EINVAL, "line %" PRIu64 " is longer than 1 MiB",
				    im->record_line);
		if (buf_add(&im->jline, &c, 1) < 0)
			return fail(im, -ENOMEM, "out of memory");
		return 0;
	}
	r = jsonl_line(im, im->jline.data ?: (char[]){ 0 }, im->jline.len);
	im->jline.len = 0;
	im->record_line = im->line + 1;
	return r;
}

/* ---- API ------------------------------------------------------------------------------------- */

static bool printable_name(const char *s, size_t max_bytes)
{
	size_t n = strlen(s);

	if (n == 0 || n > max_bytes || utf8_check(s, n, NULL) != SIZE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

int importer_new(struct store *s, const struct importer_options *o, struct importer **ret,
		 char *err, size_t errlen)
{
	const char *id = o->id_column ?: "profile_id";
	struct importer *im;
	int r;

	if (o->kind != IMPORTER_PROFILES && o->kind != IMPORTER_SEGMENT)
		return set_error(err, errlen, -EINVAL, "unknown import kind %d", o->kind);
	if (o->format != IMPORTER_CSV && o->format != IMPORTER_JSONL)
		return set_error(err, errlen, -EINVAL, "unknown import format %d", o->format);
	/* The id key goes into a JSON path for JSON Lines: no quotes. */
	if (!printable_name(id, IMPORTER_MAX_ATTRIBUTE_NAME) || strchr(id, '"'))
		return set_error(err, errlen, -EINVAL,
				 "the id column name must be 1 to 200 bytes of printable text "
				 "without '\"'");
	if (o->kind == IMPORTER_SEGMENT) {
		size_t chars = 0;

		/* printable_name also checks UTF-8; the limit is characters, as in the schema. */
		if (!o->segment_name || !printable_name(o->segment_name, SIZE_MAX) ||
		    (utf8_check(o->segment_name, strlen(o->segment_name), &chars), chars) >
			    IMPORTER_MAX_SEGMENT_NAME)
			return set_error(
				err, errlen, -EINVAL,
				"a segment import needs a segment name of 1 to %d printable "
				"characters",
				IMPORTER_MAX_SEGMENT_NAME);
	}

	im = calloc(1, sizeof(*im));
	if (!im)
		return set_error(err, errlen, -ENOMEM, "out of memory");
	im->store = s;
	im->kind = o->kind;
	im->format = o->format;
	im->line = 1;
	im->record_line = 1;
	im->id_column = strdup(id);
	im->segment_name = o->segment_name ? strdup(o->segment_name) : NULL;
	if (!im->id_column || (o->segment_name && !im->segment_name)) {
		importer_free(im);
		return set_error(err, errlen, -ENOMEM, "out of memory");
	}
	r = store_data_import_begin(s, &im->import_id, err, errlen);
	if (r < 0) {
		importer_free(im);
		return r;
	}
	*ret = im;
	return 0;
}

static int feed_byte(struct importer *im, char c)
{
	int r;

	if (c == '\0')
		return fail(im, -EINVAL, "line %" PRIu64 ": a NUL byte; the input must be text",
			    im->line);
	r = im->format == IMPORTER_CSV ? csv_byte(im, c) : jsonl_byte(im, c);
	if (c == '\n')
		im->line++;
	return r;
}

static int feed_bytes(struct importer *im, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (!im->bom_done) {
			/* Hold back a possible byte order mark until it is complete or broken. */
			if (p[i] == bom[im->bom_seen]) {
				if (++im->bom_seen == sizeof(bom))
					im->bom_done = true;
				continue;
			}
			im->bom_done = true;
			for (size_t j = 0; j < im->bom_seen; j++)
				if (feed_byte(im, (char)bom[j]) < 0)
					return im->error;
		}
		if (feed_byte(im, (char)p[i]) < 0)
			return im->error;
	}
	return 0;
}

static int reported(struct importer *im, char *err, size_t errlen)
{
	return set_error(err, errlen, im->error, "%s", im->errmsg);
}

static void drop_staged(struct importer *im)
{
	if (im->staged_any)
		(void)store_data_import_discard(im->store, im->import_id);
	im->staged_any = false;
}

int importer_feed(struct importer *im, const void *buf, size_t len, char *err, size_t errlen)
{
	bool own = false;
	int r;

	if (im->error)
		return reported(im, err, errlen);
	if (im->finished)
		return set_error(err, errlen, -EINVAL, "the import has already finished");
	r = store_data_import_feed_begin(im->store, &own);
	if (r < 0) {
		fail(im, r, "cannot stage the import: %s", store_errmsg(im->store));
		drop_staged(im);
		return reported(im, err, errlen);
	}
	r = feed_bytes(im, buf, len);
	if (store_data_import_feed_end(im->store, own, r >= 0) < 0 && r >= 0)
		r = fail(im, -EIO, "cannot stage the import: %s", store_errmsg(im->store));
	if (r < 0) {
		drop_staged(im);
		return reported(im, err, errlen);
	}
	return 0;
}

int importer_finish(struct importer *im, struct importer_result *ret, char *err, size_t errlen)
{
	struct store_data_import_result res = {};
	char serr[ERR_MAX] = "";
	bool own = false;
	int r;

	if (im->error)
		return reported(im, err, errlen);
	if (im->finished)
		return set_error(err, errlen, -EINVAL, "the import has already finished");
	if (!im->bom_done && im->bom_seen > 0) {
		/* The whole input was a prefix of a byte order mark. */
		im->bom_done = true;
		r = store_data_import_feed_begin(im->store, &own);
		if (r >= 0) {
			for (size_t j = 0; j < im->bom_seen && r >= 0; j++)
				r = feed_byte(im, (char)bom[j]);
			(void)store_data_import_feed_end(im->store, own, r >= 0);
		}
	}
	r = store_data_import_feed_begin(im->store, &own);
	if (r >= 0) {
		r = im->format == IMPORTER_CSV
			    ? csv_finish(im)
			    : (im->jline.len ? jsonl_line(im, im->jline.data, im->jline.len) : 0);
		if (store_data_import_feed_end(im->store, own, r >= 0) < 0 && r >= 0)
			r = -EIO;
	}
	if (r < 0 && !im->error)
		fail(im, r, "cannot stage the import: %s", store_errmsg(im->store));
	if (!im->error && im->rows == 0)
		fail(im, -EINVAL,
		     im->format == IMPORTER_CSV && im->columns
			     ? "the input has a header but no rows"
			     : "the input is empty: no rows to import");
	if (im->error) {
		drop_staged(im);
		return reported(im, err, errlen);
	}

	r = im->kind == IMPORTER_PROFILES
		    ? store_data_import_apply_profiles(im->store, im->import_id, &res, serr,
						       sizeof(serr))
		    : store_data_import_apply_segment(im->store, im->import_id, im->segment_name,
						      &res, serr, sizeof(serr));
	if (r < 0) {
		fail(im, r, "%s", serr);
		drop_staged(im);
		return reported(im, err, errlen);
	}
	drop_staged(im);
	im->finished = true;
	if (ret)
		*ret = (struct importer_result){
			.rows = res.rows,
			.inserted = res.inserted,
			.updated = res.updated,
			.segment_id = res.segment_id,
			.segment_created = res.segment_created,
			.previous_members = res.previous_members,
			.without_profile = res.without_profile,
		};
	return 0;
}

struct importer *importer_free(struct importer *im)
{
	if (!im)
		return NULL;
	drop_staged(im);
	free(im->id_column);
	free(im->segment_name);
	free(im->record.data);
	free(im->ends);
	free(im->quoted);
	for (size_t i = 0; i < im->n_columns; i++)
		free(im->columns[i]);
	free(im->columns);
	free(im->jline.data);
	free(im);
	return NULL;
}
