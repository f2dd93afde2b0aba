/* SPDX-License-Identifier: MIT */
/*
 * The control protocol codec, shared by ccsyncd's control server and ccsyncctl: framing of
 * newline-delimited JSON, strict parsing of requests and replies, the command table with each
 * command's argument specification, error codes, and base64 for the bytes of an import.
 *
 * The wire format is documented in schema/control/README.md (one JSON Schema per message type
 * beside it). In short: every message is one JSON object on one line, at most
 * CTLPROTO_MAX_MESSAGE bytes including the newline.
 *   request   {"version":1,"id":N,"command":"export.add","args":{...}}
 *   success   {"id":N,"ok":VALUE}
 *   failure   {"id":N,"error":{"code":"not_found","errno":2,"message":"..."}}
 *   progress  {"id":N,"progress":{...}}    (zero or more before the final reply)
 * "id" is null in a reply only when the request it answers could not be read at all.
 *
 * Nothing here does I/O or logs; every function is pure and safe to call from any thread.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTLPROTO_VERSION 1
/* One message, newline included. Requests and replies alike: large results are paged. */
#define CTLPROTO_MAX_MESSAGE (1024 * 1024)
/* Largest request id: 2^53 - 1, so ids survive JavaScript and Python float round trips. */
#define CTLPROTO_MAX_ID 9007199254740991LL
/* Raw bytes per import.data message: base64 of this plus the envelope stays far below the limit. */
#define CTLPROTO_IMPORT_CHUNK (512 * 1024)

/* ---- framing ---- */

/*
 * Splits a byte stream into lines. Bytes are appended with ctlproto_framer_feed (or written into
 * ctlproto_framer_space and committed), complete lines are taken with ctlproto_framer_next.
 */
struct ctlproto_framer {
	char *buf;
	size_t start;	/* first byte not yet returned as a line */
	size_t len;	/* bytes in buf */
	size_t cap;
	size_t scanned; /* bytes after start known to hold no newline */
};

void ctlproto_framer_init(struct ctlproto_framer *f);
void ctlproto_framer_done(struct ctlproto_framer *f);

/* Appends bytes. 0 or -ENOMEM (nothing appended). */
int ctlproto_framer_feed(struct ctlproto_framer *f, const void *data, size_t len);

/*
 * Makes room for at least want bytes and returns where to write them (borrowed, valid until the
 * next framer call); commit what was actually written with ctlproto_framer_commit. NULL on OOM.
 */
char *ctlproto_framer_space(struct ctlproto_framer *f, size_t want, size_t *ret_avail);
void ctlproto_framer_commit(struct ctlproto_framer *f, size_t n);

/*
 * The next complete line, without its newline (a trailing '\r' is kept: JSON treats it as
 * blank). Returns 1 and the line (borrowed: valid until the next framer call), 0 when no complete
 * line is buffered yet, or -EMSGSIZE when the pending line is already longer than
 * CTLPROTO_MAX_MESSAGE - 1 bytes without a newline (the stream cannot be resynchronised).
 */
int ctlproto_framer_next(struct ctlproto_framer *f, const char **ret_line, size_t *ret_len);

/* Bytes buffered and not yet returned as lines (a partial line, or lines not yet taken). */
size_t ctlproto_framer_pending(const struct ctlproto_framer *f);

/* ---- commands ---- */

enum ctlproto_command_id {
	CTL_WHOAMI,
	CTL_CONNECTION_ADD,
	CTL_CONNECTION_LIST,
	CTL_CONNECTION_SHOW,
	CTL_CONNECTION_EDIT,
	CTL_CONNECTION_REMOVE,
	CTL_CONNECTION_CONSENT,
	CTL_CONNECTION_AUTHORIZE,
	CTL_LISTS,
	CTL_EXPORT_ADD,
	CTL_EXPORT_LIST,
	CTL_EXPORT_SHOW,
	CTL_EXPORT_EDIT,
	CTL_EXPORT_REMOVE,
	CTL_EXPORT_ENABLE,
	CTL_EXPORT_DISABLE,
	CTL_RUN,
	CTL_CANCEL,
	CTL_REFRESH_DONE,
	CTL_RUNS,
	CTL_RUN_SHOW,
	CTL_REJECTED,
	CTL_STATUS,
	CTL_SEGMENTS,
	CTL_IMPORT,
	CTL_IMPORT_DATA,
	CTL_IMPORT_END,
	CTL_AUDIT,
	_CTL_COMMAND_MAX,
};

enum ctlproto_arg_type {
	CTLPROTO_ARG_STRING,
	CTLPROTO_ARG_INTEGER,
	CTLPROTO_ARG_BOOLEAN,
	CTLPROTO_ARG_NUMBER,
	CTLPROTO_ARG_STRING_ARRAY, /* array of strings, each within max_len */
	CTLPROTO_ARG_STRING_MAP,   /* object whose values are strings, each within max_len */
};

enum ctlproto_arg_flags {
	CTLPROTO_REQUIRED = 1 << 0,
	CTLPROTO_NULLABLE = 1 << 1, /* null is accepted: "clear this setting" (edit commands) */
};

struct ctlproto_arg {
	const char *name;
	enum ctlproto_arg_type type;
	unsigned flags;
	/* strings: length in characters (code points), 1..max_len unless min is 0; arrays and maps:
	 * max_len bounds each string and max_items the element count */
	size_t min_len, max_len, max_items;
	double min, max; /* integers and numbers, inclusive */
};

struct ctlproto_command {
	enum ctlproto_command_id id;
	const char *name; /* wire name, e.g. "export.add" */
	const struct ctlproto_arg *args;
	size_t n_args;
	bool streams; /* may send progress messages before its final reply */
};

/* The command with this wire name, or NULL. Returned pointers are static. */
const struct ctlproto_command *ctlproto_command_find(const char *name);
/* The command with this id, or NULL when id is out of range. */
const struct ctlproto_command *ctlproto_command_get(enum ctlproto_command_id id);
/* The accepted values of an enumerated string argument (NULL-terminated, static), or NULL. */
const char *const *ctlproto_arg_choices(const struct ctlproto_arg *a);

/*
 * Checks args (a JSON object) against the command's specification: unknown fields, missing
 * required fields, wrong types, out-of-range values, each named in the message ("args.list_id:
 * expected a string, got an integer"). 0 or -EINVAL with a message in err.
 */
int ctlproto_validate_args(const struct ctlproto_command *cmd, json_t *args, char *err,
			   size_t errlen);

/* ---- requests ---- */

struct ctlproto_request {
	int64_t id;
	const struct ctlproto_command *command;
	json_t *args; /* a new reference, never NULL: {} when the request had no "args" */
};

/*
 * Parses and validates one request line (without its newline): duplicate keys, unknown members,
 * wrong types, unknown commands, unsupported versions and bad arguments are errors naming the
 * member. Returns 0 and fills *ret (release with ctlproto_request_done), -EMSGSIZE if the line is
 * over the limit, -EPROTO for an unsupported version, -EBADMSG for malformed JSON or a bad
 * envelope, -EINVAL for bad arguments of a known command, -ENOMEM; message in err.
 */
int ctlproto_parse_request(const char *line, size_t len, struct ctlproto_request *ret, char *err,
			   size_t errlen);
void ctlproto_request_done(struct ctlproto_request *r);

/*
 * Best effort: the "id" of a line that failed to parse, so the error reply can still be matched
 * to the request. -1 when there is none to be found.
 */
int64_t ctlproto_salvage_id(const char *line, size_t len);

/* ---- building messages (all return new references, NULL on OOM; args/result are stolen) ---- */

json_t *ctlproto_request_new(int64_t id, const char *command, json_t *args);
json_t *ctlproto_ok_new(int64_t id, json_t *result);
/* id < 0 writes "id": null. r is a negative errno; message must hold no secret. */
json_t *ctlproto_error_new(int64_t id, int r, const char *message);
json_t *ctlproto_progress_new(int64_t id, json_t *progress);

/*
 * Serialises a message as one compact line with its newline. Returns 0 and the text in *ret
 * (transfer full, NUL-terminated; *ret_len counts the newline, not the NUL), -EMSGSIZE if it would
 * exceed CTLPROTO_MAX_MESSAGE, or -ENOMEM.
 */
int ctlproto_encode(json_t *msg, char **ret, size_t *ret_len);

/* ---- replies (client side) ---- */

enum ctlproto_reply_kind {
	CTLPROTO_REPLY_OK,
	CTLPROTO_REPLY_ERROR,
	CTLPROTO_REPLY_PROGRESS,
};

struct ctlproto_reply {
	enum ctlproto_reply_kind kind;
	int64_t id;		/* -1: "id" was null */
	json_t *root;		/* owned; the members below point into it */
	json_t *value;		/* ok value or progress object (borrowed) */
	const char *code;	/* error only */
	const char *message;	/* error only */
	int error_errno;	/* error only: positive errno */
};

/* Parses a reply line. 0 and *ret (release with ctlproto_reply_done), -EBADMSG or -ENOMEM. */
int ctlproto_parse_reply(const char *line, size_t len, struct ctlproto_reply *ret, char *err,
			 size_t errlen);
void ctlproto_reply_done(struct ctlproto_reply *r);

/* ---- error codes ---- */

/* The protocol's error code for a negative errno ("not_found", "permission_denied", ...). */
const char *ctlproto_error_code(int r);

/*
 * ccsyncctl's exit status for an error code: 2 invalid argument, 3 not found, 4 permission
 * denied, 5 conflict / busy / precondition failed, 1 anything else.
 */
int ctlproto_exit_status(const char *code);

#define CTLPROTO_EXIT_OK 0
#define CTLPROTO_EXIT_FAILED 1
#define CTLPROTO_EXIT_USAGE 2
#define CTLPROTO_EXIT_NOT_FOUND 3
#define CTLPROTO_EXIT_DENIED 4
#define CTLPROTO_EXIT_CONFLICT 5
#define CTLPROTO_EXIT_UNREACHABLE 69

/* ---- base64 (RFC 4648, with padding) for import.data ---- */

/* NUL-terminated encoding (transfer full), or NULL on OOM. */
char *ctlproto_base64_encode(const void *data, size_t len);
/* Decodes strictly (no blanks, padding required). 0 and a buffer (transfer full), -EINVAL or
 * -ENOMEM. *ret is NUL-terminated for convenience; *ret_len excludes the NUL. */
int ctlproto_base64_decode(const char *text, size_t len, unsigned char **ret, size_t *ret_len);
