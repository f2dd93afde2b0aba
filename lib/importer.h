/* SPDX-License-Identifier: MIT */
/*
 * `ccsyncctl import profiles|segment FILE`: a streaming, push-style importer for users without an
 * upstream writer of their own. The control server feeds it the chunks it receives, in any sizes
 * (a record may be split anywhere, even inside a UTF-8 sequence), then finishes it.
 *
 * All or nothing. Rows are parsed, checked and staged as they arrive (store_data_import_stage: a
 * TEMP table, no lock on the main database); the first error stops the import, drops what was
 * staged and names the line (and column) and what is wrong. importer_finish() applies everything
 * in ONE write transaction, so either the whole file is in the database or none of it is.
 *
 * Formats
 *   CSV (RFC 4180): a header row naming the columns, then one row per profile. Fields may be
 *   quoted ("..."), quoted fields may hold commas, line breaks and doubled quotes (""). Lines end
 *   in CRLF or LF; a UTF-8 byte order mark at the start is skipped; empty lines are skipped. A
 *   quote inside an unquoted field, text after a closing quote and an unterminated quote are
 *   errors, as is a row with a different number of fields than the header (a "ragged" row).
 *   One column holds the profile id (options.id_column, default "profile_id"); for profiles,
 *   every other column is an attribute whose value is the cell's text, and an empty cell leaves
 *   the attribute out. For a segment only the id column is read; other columns are ignored.
 *
 *   JSON Lines: one JSON object per line (blank lines skipped), with the id under
 *   options.id_column as a string or an integer. For profiles, the object's other members are the
 *   attributes, stored exactly as written (numbers keep their text); duplicate keys are errors.
 *
 * Semantics
 *   profiles: each profile in the file is inserted, or has its whole attribute document replaced
 *             (updated_at = now); profiles not in the file are untouched.
 *   segment:  the ids become the complete membership of the named segment (created if missing),
 *             in one transaction; ids without a profile row are accepted and counted (the plan
 *             reports them as rejected rows until their profile arrives).
 *
 * Limits (errors when exceeded): a record (CSV row, JSON line) IMPORTER_MAX_RECORD bytes, a value
 * IMPORTER_MAX_VALUE bytes, IMPORTER_MAX_FIELDS columns or attributes, IMPORTER_MAX_ROWS rows, a
 * profile id 1..256 characters, an attribute name 1..200 bytes. Input must be UTF-8 without NUL
 * bytes; duplicate profile ids and empty input (no rows) are errors.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define IMPORTER_MAX_RECORD (1024 * 1024)
#define IMPORTER_MAX_VALUE (64 * 1024)
#define IMPORTER_MAX_FIELDS 1000
#define IMPORTER_MAX_ROWS 10000000
#define IMPORTER_MAX_ID_LENGTH 256	/* characters, as profiles.profile_id's CHECK */
#define IMPORTER_MAX_ATTRIBUTE_NAME 200 /* bytes, as export_fields.source_field */
#define IMPORTER_MAX_SEGMENT_NAME 200	/* characters, as segments.name */

enum importer_kind {
	IMPORTER_PROFILES,
	IMPORTER_SEGMENT,
};

enum importer_format {
	IMPORTER_CSV,
	IMPORTER_JSONL,
};

struct importer_options {
	enum importer_kind kind;
	enum importer_format format;
	const char *id_column;	  /* NULL = "profile_id" */
	const char *segment_name; /* required for IMPORTER_SEGMENT */
};

struct importer_result {
	int64_t rows;
	int64_t inserted;	  /* profiles */
	int64_t updated;	  /* profiles */
	int64_t segment_id;	  /* segment */
	bool segment_created;	  /* segment */
	int64_t previous_members; /* segment */
	int64_t without_profile;  /* segment */
};

struct importer;

/*
 * Starts an import on s (borrowed; it must outlive the importer and must not be inside a
 * transaction between importer calls). -EINVAL for bad options (unknown kind or format, id column
 * or segment name empty or too long).
 */
int importer_new(struct store *s, const struct importer_options *o, struct importer **ret,
		 char *err, size_t errlen);

/*
 * Consumes len bytes. 0 on success; on the first error a negative errno (-EINVAL for bad input,
 * with "line N[, column C (name)]: problem" in err), the staged rows are dropped, and every later
 * call returns the same error.
 */
int importer_feed(struct importer *im, const void *buf, size_t len, char *err, size_t errlen);

/*
 * Ends the input (a last record without a line break counts), checks it was not empty, and
 * applies it in one write transaction. 0 and the counts in *ret (may be NULL), or a negative errno
 * with nothing applied.
 */
int importer_finish(struct importer *im, struct importer_result *ret, char *err, size_t errlen);

/* Drops anything staged and frees. NULL-safe; returns NULL. */
struct importer *importer_free(struct importer *im);
