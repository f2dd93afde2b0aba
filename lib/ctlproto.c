/* SPDX-License-Identifier: MIT */
/*
 * The control protocol codec. Parsing is deliberately strict and hand-written rather than left to
 * json_unpack: every rejection names the member at fault ("args.segments[2]: expected a string"),
 * because the person reading the message is an operator at a terminal, not a protocol engineer.
 *
 * The command table below is the single source of truth for argument names, types and limits.
 * The JSON Schemas in schema/control/ describe the same thing for other clients; a unit test
 * checks that the two agree, so neither can drift silently.
 *
 * Invariants: no function reads outside the buffer it is given (lines may hold NUL bytes and
 * invalid UTF-8; jansson rejects both), nothing is ever written into err that the peer did not
 * send or that the table does not hold, and encoded messages never exceed CTLPROTO_MAX_MESSAGE.
 */
#include "ctlproto.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ---- framing ---- */

void ctlproto_framer_init(struct ctlproto_framer *f)
{
	memset(f, 0, sizeof(*f));
}

void ctlproto_framer_done(struct ctlproto_framer *f)
{
	free(f->buf);
	memset(f, 0, sizeof(*f));
}

static int framer_reserve(struct ctlproto_framer *f, size_t want)
{
	size_t need, cap;
	char *p;

	/* Reclaim the consumed prefix first: lines are short-lived, so this keeps the buffer at
	 * about one message no matter how long the connection lives. */
	if (f->start > 0) {
		memmove(f->buf, f->buf + f->start, f->len - f->start);
		f->len -= f->start;
		f->start = 0;
	}
	if (want > SIZE_MAX - f->len)
		return -ENOMEM;
	need = f->len + want;
	if (need <= f->cap)
		return 0;
	cap = f->cap ? f->cap : 4096;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = realloc(f->buf, cap);
	if (!p)
		return -ENOMEM;
	f->buf = p;
	f->cap = cap;
	return 0;
}

int ctlproto_framer_feed(struct ctlproto_framer *f, const void *data, size_t len)
{
	int r;

	if (len == 0)
		return 0;
	r = framer_reserve(f, len);
	if (r < 0)
		return r;
	memcpy(f->buf + f->len, data, len);
	f->len += len;
	return 0;
}

char *ctlproto_framer_space(struct ctlproto_framer *f, size_t want, size_t *ret_avail)
{
	if (framer_reserve(f, want) < 0)
		return NULL;
	*ret_avail = f->cap - f->len;
	return f->buf + f->len;
}

void ctlproto_framer_commit(struct ctlproto_framer *f, size_t n)
{
	f->len += n;
}

int ctlproto_framer_next(struct ctlproto_framer *f, const char **ret_line, size_t *ret_len)
{
	size_t avail = f->len - f->start;
	const char *p = f->buf + f->start;
	const char *nl;

	if (avail == 0)
		return 0;
	nl = memchr(p + f->scanned, '\n', avail - f->scanned);
	if (!nl) {
		f->scanned = avail;
		return avail >= CTLPROTO_MAX_MESSAGE ? -EMSGSIZE : 0;
	}
	if ((size_t)(nl - p) >= CTLPROTO_MAX_MESSAGE)
		return -EMSGSIZE;
	*ret_line = p;
	*ret_len = (size_t)(nl - p);
	f->start += *ret_len + 1;
	f->scanned = 0;
	return 1;
}

size_t ctlproto_framer_pending(const struct ctlproto_framer *f)
{
	return f->len - f->start;
}

/* ---- the command table ---- */

#define NAME_MAX_CHARS 100
#define FIELD_MAX_CHARS 200

static const char *const auth_flows[] = { "device", "pkce", "code", NULL };
static const char *const usable_bys[] = { "admins", "admins_and_contributors", NULL };
static const char *const modes[] = { "upsert", "mirror", NULL };
static const char *const import_kinds[] = { "profiles", "segment", NULL };
static const char *const import_formats[] = { "csv", "jsonl", NULL };

#define STRING(n, fl, lo, hi) { .name = n, .type = CTLPROTO_ARG_STRING, .flags = fl, \
				.min_len = lo, .max_len = hi }
#define INTEGER(n, fl, lo, hi) { .name = n, .type = CTLPROTO_ARG_INTEGER, .flags = fl, \
				 .min = lo, .max = hi }
#define BOOLEAN(n) { .name = n, .type = CTLPROTO_ARG_BOOLEAN }
#define ID_MAX ((double)CTLPROTO_MAX_ID)

/* Enumerated strings carry their choices in the table through this side array, looked up by
 * name: keeping struct ctlproto_arg free of it keeps the public struct simple. */
struct arg_choices {
	const char *name;
	const char *const *choices;
};

static const struct arg_choices choices_table[] = {
	{ "auth_flow", auth_flows },
	{ "usable_by", usable_bys },
	{ "mode", modes },
	{ "kind", import_kinds },
	{ "format", import_formats },
};

static const struct ctlproto_arg args_none[] = { { NULL } };

static const struct ctlproto_arg args_connection_add[] = {
	STRING("name", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
	STRING("client_id", CTLPROTO_REQUIRED, 1, FIELD_MAX_CHARS),
	STRING("auth_flow", 0, 1, 16),
	STRING("usable_by", 0, 1, 32),
};

static const struct ctlproto_arg args_connection[] = {
	STRING("connection", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
};

static const struct ctlproto_arg args_connection_edit[] = {
	STRING("connection", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
	STRING("name", 0, 1, NAME_MAX_CHARS),
	STRING("client_id", 0, 1, FIELD_MAX_CHARS),
	STRING("auth_flow", 0, 1, 16),
	STRING("usable_by", 0, 1, 32),
};

static const struct ctlproto_arg args_connection_consent[] = {
	STRING("connection", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
	BOOLEAN("revoke"),
};

static const struct ctlproto_arg args_connection_authorize[] = {
	STRING("connection", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
	STRING("code", 0, 1, 8192),
};

/* export.add and export.edit share their members; edit makes them optional and nullable. */
#define EXPORT_ARGS(req, nul)                                                                     \
	STRING("connection", req, 1, NAME_MAX_CHARS),                                              \
	STRING("list_id", req, 1, FIELD_MAX_CHARS),                                                \
	STRING("email_field", req, 1, FIELD_MAX_CHARS),                                            \
	STRING("first_name_field", nul, 1, FIELD_MAX_CHARS),                                       \
	STRING("last_name_field", nul, 1, FIELD_MAX_CHARS),                                        \
	{ .name = "fields", .type = CTLPROTO_ARG_STRING_MAP, .flags = nul, .min_len = 1,           \
	  .max_len = FIELD_MAX_CHARS, .max_items = 100 },                                          \
	{ .name = "segments", .type = CTLPROTO_ARG_STRING_ARRAY, .flags = req, .min_len = 1,       \
	  .max_len = FIELD_MAX_CHARS, .max_items = 1000 },                                         \
	STRING("mode", 0, 1, 16),                                                                  \
	{ .name = "mirror_max_remove_share", .type = CTLPROTO_ARG_NUMBER, .flags = nul, .min = 0,  \
	  .max = 1 },                                                                              \
	BOOLEAN("follows_refresh"),                                                                \
	STRING("cron", nul, 1, 256),                                                               \
	STRING("time_zone", nul, 1, 255)

static const struct ctlproto_arg args_export_add[] = {
	STRING("name", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
	EXPORT_ARGS(CTLPROTO_REQUIRED, 0),
};

static const struct ctlproto_arg args_export_edit[] = {
	STRING("export", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
	STRING("name", 0, 1, NAME_MAX_CHARS),
	EXPORT_ARGS(0, CTLPROTO_NULLABLE),
};

static const struct ctlproto_arg args_export[] = {
	STRING("export", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
};

static const struct ctlproto_arg args_export_disable[] = {
	STRING("export", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
	STRING("reason", 0, 0, 500),
};

static const struct ctlproto_arg args_run[] = {
	STRING("export", CTLPROTO_REQUIRED, 1, NAME_MAX_CHARS),
	BOOLEAN("follow"),
	BOOLEAN("dry_run"),
	BOOLEAN("full"),
	BOOLEAN("force"),
};

static const struct ctlproto_arg args_run_id[] = {
	INTEGER("run", CTLPROTO_REQUIRED, 1, ID_MAX),
};

static const struct ctlproto_arg args_runs[] = {
	STRING("export", 0, 1, NAME_MAX_CHARS),
	INTEGER("before", 0, 1, ID_MAX),
	INTEGER("limit", 0, 1, 1000),
};

static const struct ctlproto_arg args_rejected[] = {
	INTEGER("run", CTLPROTO_REQUIRED, 1, ID_MAX),
	INTEGER("after", 0, 0, ID_MAX),
	INTEGER("limit", 0, 1, 5000),
};

static const struct ctlproto_arg args_import[] = {
	STRING("kind", CTLPROTO_REQUIRED, 1, 16),
	STRING("format", CTLPROTO_REQUIRED, 1, 16),
	STRING("segment", 0, 1, FIELD_MAX_CHARS),
};

static const struct ctlproto_arg args_import_data[] = {
	STRING("data", CTLPROTO_REQUIRED, 1, CTLPROTO_MAX_MESSAGE),
};

static const struct ctlproto_arg args_audit[] = {
	INTEGER("before", 0, 1, ID_MAX),
	INTEGER("limit", 0, 1, 1000),
};

#define CMD(i, n, a, s)                                                                            \
	[i] = { .id = i, .name = n, .args = a, .n_args = ELEMENTSOF(a), .streams = s }
#define CMD0(i, n, s) [i] = { .id = i, .name = n, .args = args_none, .n_args = 0, .streams = s }

static const struct ctlproto_command commands[_CTL_COMMAND_MAX] = {
	CMD0(CTL_WHOAMI, "whoami", false),
	CMD(CTL_CONNECTION_ADD, "connection.add", args_connection_add, false),
	CMD0(CTL_CONNECTION_LIST, "connection.list", false),
	CMD(CTL_CONNECTION_SHOW, "connection.show", args_connection, false),
	CMD(CTL_CONNECTION_EDIT, "connection.edit", args_connection_edit, false),
	CMD(CTL_CONNECTION_REMOVE, "connection.remove", args_connection, false),
	CMD(CTL_CONNECTION_CONSENT, "connection.consent", args_connection_consent, false),
	CMD(CTL_CONNECTION_AUTHORIZE, "connection.authorize", args_connection_authorize, true),
	CMD(CTL_LISTS, "lists", args_connection, false),
	CMD(CTL_EXPORT_ADD, "export.add", args_export_add, false),
	CMD0(CTL_EXPORT_LIST, "export.list", false),
	CMD(CTL_EXPORT_SHOW, "export.show", args_export, false),
	CMD(CTL_EXPORT_EDIT, "export.edit", args_export_edit, false),
	CMD(CTL_EXPORT_REMOVE, "export.remove", args_export, false),
	CMD(CTL_EXPORT_ENABLE, "export.enable", args_export, false),
	CMD(CTL_EXPORT_DISABLE, "export.disable", args_export_disable, false),
	CMD(CTL_RUN, "run", args_run, true),
	CMD(CTL_CANCEL, "cancel", args_run_id, false),
	CMD0(CTL_REFRESH_DONE, "refresh_done", false),
	CMD(CTL_RUNS, "runs", args_runs, false),
	CMD(CTL_RUN_SHOW, "run.show", args_run_id, false),
	CMD(CTL_REJECTED, "rejected", args_rejected, false),
	CMD0(CTL_STATUS, "status", false),
	CMD0(CTL_SEGMENTS, "segments", false),
	CMD(CTL_IMPORT, "import", args_import, true),
	CMD(CTL_IMPORT_DATA, "import.data", args_import_data, false),
	CMD0(CTL_IMPORT_END, "import.end", false),
	CMD(CTL_AUDIT, "audit", args_audit, false),
};

const struct ctlproto_command *ctlproto_command_find(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(commands); i++)
		if (streq(commands[i].name, name))
			return &commands[i];
	return NULL;
}

const struct ctlproto_command *ctlproto_command_get(enum ctlproto_command_id id)
{
	return (unsigned)id < ELEMENTSOF(commands) ? &commands[id] : NULL;
}

const char *const *ctlproto_arg_choices(const struct ctlproto_arg *a)
{
	for (size_t i = 0; i < ELEMENTSOF(choices_table); i++)
		if (streq(choices_table[i].name, a->name))
			return choices_table[i].choices;
	return NULL;
}

/* ---- argument validation ---- */

static const char *type_name(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
	default:
		return "null";
	}
}

static size_t utf8_chars(const char *s, size_t len)
{
	size_t n = 0;

	/* jansson guarantees valid UTF-8: counting the bytes that do not continue a sequence
	 * counts code points, the unit JSON Schema's maxLength and SQLite's length() use. */
	for (size_t i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			n++;
	return n;
}

static int check_string(const char *path, const struct ctlproto_arg *a, json_t *v, char *err,
			size_t errlen)
{
	const char *s = json_string_value(v);
	size_t bytes = json_string_length(v);
	size_t n;

	if (memchr(s, '\0', bytes))
		return set_error(err, errlen, -EINVAL, "%s: must not contain NUL characters", path);
	n = utf8_chars(s, bytes);
	if (n < a->min_len)
		return set_error(err, errlen, -EINVAL, "%s: must not be empty", path);
	if (n > a->max_len)
		return set_error(err, errlen, -EINVAL, "%s: too long (%zu characters, at most %zu)",
				 path, n, a->max_len);
	return 0;
}

static int check_choice(const char *path, const struct ctlproto_arg *a, const char *s, char *err,
			size_t errlen)
{
	const char *const *choices = ctlproto_arg_choices(a);
	char list[256] = "";
	size_t off = 0;

	if (!choices)
		return 0;
	for (size_t i = 0; choices[i]; i++)
		if (streq(choices[i], s))
			return 0;
	for (size_t i = 0; choices[i] && off < sizeof(list); i++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "",
					choices[i]);
	/* The offending value is not echoed: it may be long, and the choices say all there is. */
	return set_error(err, errlen, -EINVAL, "%s: must be one of %s", path, list);
}

static int check_arg(const struct ctlproto_arg *a, json_t *v, char *err, size_t errlen)
{
	char path[128];
	int r;

	snprintf(path, sizeof(path), "args.%s", a->name);
	if (json_is_null(v)) {
		if (a->flags & CTLPROTO_NULLABLE)
			return 0;
		return set_error(err, errlen, -EINVAL, "%s: must not be null", path);
	}
	switch (a->type) {
	case CTLPROTO_ARG_STRING:
		if (!json_is_string(v))
			break;
		r = check_string(path, a, v, err, errlen);
		if (r < 0)
			return r;
		return check_choice(path, a, json_string_value(v), err, errlen);
	case CTLPROTO_ARG_INTEGER: {
		double d;

		if (!json_is_integer(v))
			break;
		d = (double)json_integer_value(v);
		if (d < a->min || d > a->max)
			return set_error(err, errlen, -EINVAL,
					 "%s: %lld is out of range %.0f..%.0f", path,
					 (long long)json_integer_value(v), a->min, a->max);
		return 0;
	}
	case CTLPROTO_ARG_BOOLEAN:
		if (!json_is_boolean(v))
			break;
		return 0;
	case CTLPROTO_ARG_NUMBER: {
		double d;

		if (!json_is_number(v))
			break;
		d = json_number_value(v);
		if (!isfinite(d) || d < a->min || d > a->max)
			return set_error(err, errlen, -EINVAL, "%s: %g is out of range %g..%g",
					 path, d, a->min, a->max);
		return 0;
	}
	case CTLPROTO_ARG_STRING_ARRAY: {
		size_t i;
		json_t *e;

		if (!json_is_array(v))
			break;
		if ((a->flags & CTLPROTO_REQUIRED) && json_array_size(v) == 0)
			return set_error(err, errlen, -EINVAL, "%s: must not be empty", path);
		if (json_array_size(v) > a->max_items)
			return set_error(err, errlen, -EINVAL, "%s: too many items (%zu, at most "
							       "%zu)",
					 path, json_array_size(v), a->max_items);
		json_array_foreach(v, i, e) {
			char item[256];

			snprintf(item, sizeof(item), "%s[%zu]", path, i);
			if (!json_is_string(e))
				return set_error(err, errlen, -EINVAL, "%s: expected a string, "
								       "got %s",
						 item, type_name(e));
			r = check_string(item, a, e, err, errlen);
			if (r < 0)
				return r;
		}
		return 0;
	}
	case CTLPROTO_ARG_STRING_MAP: {
		const char *key;
		json_t *e;

		if (!json_is_object(v))
			break;
		if (json_object_size(v) > a->max_items)
			return set_error(err, errlen, -EINVAL, "%s: too many members (%zu, at "
							       "most %zu)",
					 path, json_object_size(v), a->max_items);
		json_object_foreach(v, key, e) {
			char item[256];
			size_t klen = strlen(key);
			size_t kchars = utf8_chars(key, klen);

			if (kchars == 0 || kchars > a->max_len)
				return set_error(err, errlen, -EINVAL,
						 "%s: member names must be 1 to %zu characters",
						 path, a->max_len);
			/* Keys were checked for length above, so they fit the message. */
			snprintf(item, sizeof(item), "%s.%.100s", path, key);
			if (!json_is_string(e))
				return set_error(err, errlen, -EINVAL, "%s: expected a string, "
								       "got %s",
						 item, type_name(e));
			r = check_string(item, a, e, err, errlen);
			if (r < 0)
				return r;
		}
		return 0;
	}
	}
	return set_error(err, errlen, -EINVAL, "%s: expected %s, got %s", path,
			 a->type == CTLPROTO_ARG_STRING	   ? "a string" :
			 a->type == CTLPROTO_ARG_INTEGER   ? "an integer" :
			 a->type == CTLPROTO_ARG_BOOLEAN   ? "a boolean" :
			 a->type == CTLPROTO_ARG_NUMBER	   ? "a number" :
			 a->type == CTLPROTO_ARG_STRING_ARRAY ? "an array of strings" :
							      "an object of strings",
			 type_name(v));
}

static const struct ctlproto_arg *find_arg(const struct ctlproto_command *cmd, const char *name)
{
	for (size_t i = 0; i < cmd->n_args; i++)
		if (streq(cmd->args[i].name, name))
			return &cmd->args[i];
	return NULL;
}

static int unknown_member(const struct ctlproto_command *cmd, const char *key, char *err,
			  size_t errlen)
{
	char known[512] = "";
	size_t off = 0;

	for (size_t i = 0; i < cmd->n_args && off < sizeof(known); i++)
		off += (size_t)snprintf(known + off, sizeof(known) - off, "%s%s", i ? ", " : "",
					cmd->args[i].name);
	/* Unknown names are echoed only when short: a hostile key makes no message. */
	if (strlen(key) <= 64)
		return set_error(err, errlen, -EINVAL, "args: unknown member \"%s\" for %s "
						       "(known: %s)",
				 key, cmd->name, cmd->n_args ? known : "none");
	return set_error(err, errlen, -EINVAL, "args: unknown member for %s (known: %s)",
			 cmd->name, cmd->n_args ? known : "none");
}

int ctlproto_validate_args(const struct ctlproto_command *cmd, json_t *args, char *err,
			   size_t errlen)
{
	const char *key;
	json_t *v;
	int r;

	if (!json_is_object(args))
		return set_error(err, errlen, -EINVAL, "args: expected an object, got %s",
				 type_name(args));
	json_object_foreach(args, key, v) {
		const struct ctlproto_arg *a = find_arg(cmd, key);

		if (!a)
			return unknown_member(cmd, key, err, errlen);
		r = check_arg(a, v, err, errlen);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < cmd->n_args; i++)
		if ((cmd->args[i].flags & CTLPROTO_REQUIRED) &&
		    !json_object_get(args, cmd->args[i].name))
			return set_error(err, errlen, -EINVAL, "args.%s: missing (required by %s)",
					 cmd->args[i].name, cmd->name);
	return 0;
}

/* ---- requests ---- */

static int load_object(const char *line, size_t len, json_t **ret, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root;

	if (len >= CTLPROTO_MAX_MESSAGE)
		return set_error(err, errlen, -EMSGSIZE, "message too long (%zu bytes, at most %d)",
				 len + 1, CTLPROTO_MAX_MESSAGE);
	root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return set_error(err, errlen, -EBADMSG, "malformed JSON at column %d: %s",
				 jerr.column, jerr.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return set_error(err, errlen, -EBADMSG, "a message must be a JSON object");
	}
	*ret = root;
	return 0;
}

static int get_id(json_t *v, int64_t *ret, char *err, size_t errlen)
{
	if (!v)
		return set_error(err, errlen, -EBADMSG, "id: missing");
	if (!json_is_integer(v))
		return set_error(err, errlen, -EBADMSG, "id: expected an integer, got %s",
				 type_name(v));
	if (json_integer_value(v) < 0 || json_integer_value(v) > CTLPROTO_MAX_ID)
		return set_error(err, errlen, -EBADMSG, "id: out of range 0..%lld",
				 (long long)CTLPROTO_MAX_ID);
	*ret = json_integer_value(v);
	return 0;
}

int ctlproto_parse_request(const char *line, size_t len, struct ctlproto_request *ret, char *err,
			   size_t errlen)
{
	json_t *root = NULL, *v, *args;
	const struct ctlproto_command *cmd;
	const char *key, *name;
	int64_t id;
	int r;

	r = load_object(line, len, &root, err, errlen);
	if (r < 0)
		return r;
	json_object_foreach(root, key, v) {
		if (!streq(key, "version") && !streq(key, "id") && !streq(key, "command") &&
		    !streq(key, "args")) {
			r = strlen(key) <= 64 ? set_error(err, errlen, -EBADMSG,
							  "unknown member \"%s\" (a request has "
							  "version, id, command and args)", key)
					      : set_error(err, errlen, -EBADMSG,
							  "unknown member (a request has version, "
							  "id, command and args)");
			goto fail;
		}
	}
	v = json_object_get(root, "version");
	if (!v) {
		r = set_error(err, errlen, -EBADMSG, "version: missing (this ccsyncd speaks %d)",
			      CTLPROTO_VERSION);
		goto fail;
	}
	if (!json_is_integer(v)) {
		r = set_error(err, errlen, -EBADMSG, "version: expected an integer, got %s",
			      type_name(v));
		goto fail;
	}
	if (json_integer_value(v) != CTLPROTO_VERSION) {
		r = set_error(err, errlen, -EPROTO,
			      "unsupported protocol version %lld (this ccsyncd speaks version %d)",
			      (long long)json_integer_value(v), CTLPROTO_VERSION);
		goto fail;
	}
	r = get_id(json_object_get(root, "id"), &id, err, errlen);
	if (r < 0)
		goto fail;
	v = json_object_get(root, "command");
	if (!v) {
		r = set_error(err, errlen, -EBADMSG, "command: missing");
		goto fail;
	}
	if (!json_is_string(v)) {
		r = set_error(err, errlen, -EBADMSG, "command: expected a string, got %s",
			      type_name(v));
		goto fail;
	}
	name = json_string_value(v);
	cmd = ctlproto_command_find(name);
	if (!cmd) {
		r = strlen(name) <= 64 && !memchr(name, '\0', json_string_length(v))
			    ? set_error(err, errlen, -EBADRQC, "unknown command \"%s\"", name)
			    : set_error(err, errlen, -EBADRQC, "unknown command");
		goto fail;
	}
	args = json_object_get(root, "args");
	if (args) {
		json_incref(args);
	} else {
		args = json_object();
		if (!args) {
			r = set_error(err, errlen, -ENOMEM, "out of memory");
			goto fail;
		}
	}
	r = ctlproto_validate_args(cmd, args, err, errlen);
	if (r < 0) {
		json_decref(args);
		goto fail;
	}
	json_decref(root);
	ret->id = id;
	ret->command = cmd;
	ret->args = args;
	return 0;
fail:
	json_decref(root);
	return r;
}

void ctlproto_request_done(struct ctlproto_request *r)
{
	json_decref(r->args);
	r->args = NULL;
}

int64_t ctlproto_salvage_id(const char *line, size_t len)
{
	json_t *root = NULL;
	int64_t id = -1;

	if (load_object(line, len, &root, NULL, 0) < 0)
		return -1;
	if (get_id(json_object_get(root, "id"), &id, NULL, 0) < 0)
		id = -1;
	json_decref(root);
	return id;
}

/* ---- building ---- */

static json_t *id_value(int64_t id)
{
	return id >= 0 ? json_integer(id) : json_null();
}

json_t *ctlproto_request_new(int64_t id, const char *command, json_t *args)
{
	json_t *m = json_object();

	if (!m || json_object_set_new(m, "version", json_integer(CTLPROTO_VERSION)) < 0 ||
	    json_object_set_new(m, "id", json_integer(id)) < 0 ||
	    json_object_set_new(m, "command", json_string(command)) < 0 ||
	    json_object_set_new(m, "args", args ? args : json_object()) < 0) {
		json_decref(m);
		return NULL;
	}
	return m;
}

/* Every reply is {"id": …, <kind>: value}; value is consumed in every case (json_object_set_new
 * steals its reference even when it fails). */
static json_t *reply_new(int64_t id, const char *kind, json_t *value)
{
	json_t *m = json_object();

	/* "id" goes first: replies read naturally in a log or a terminal. */
	if (!m || json_object_set_new(m, "id", id_value(id)) < 0) {
		json_decref(value);
		json_decref(m);
		return NULL;
	}
	if (!value || json_object_set_new(m, kind, value) < 0) {
		json_decref(m);
		return NULL;
	}
	return m;
}

json_t *ctlproto_ok_new(int64_t id, json_t *result)
{
	return reply_new(id, "ok", result ? result : json_null());
}

json_t *ctlproto_error_new(int64_t id, int r, const char *message)
{
	json_t *e = json_object();

	if (r >= 0)
		r = -EIO; /* a caller bug, but still an error reply rather than a success */
	if (!e || json_object_set_new(e, "code", json_string(ctlproto_error_code(r))) < 0 ||
	    json_object_set_new(e, "errno", json_integer(-r)) < 0 ||
	    json_object_set_new(e, "message", json_string(message && *message ? message :
							  strerror(-r))) < 0) {
		json_decref(e);
		return NULL;
	}
	return reply_new(id, "error", e);
}

json_t *ctlproto_progress_new(int64_t id, json_t *progress)
{
	return reply_new(id, "progress", progress ? progress : json_object());
}

int ctlproto_encode(json_t *msg, char **ret, size_t *ret_len)
{
	char *s, *line;
	size_t len;

	if (!msg)
		return -ENOMEM;
	/* Compact output escapes every control character inside strings, so the only newline in
	 * the line is the terminator we add. */
	s = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!s)
		return -ENOMEM;
	len = strlen(s);
	if (len + 1 > CTLPROTO_MAX_MESSAGE) {
		free(s);
		return -EMSGSIZE;
	}
	line = realloc(s, len + 2);
	if (!line) {
		free(s);
		return -ENOMEM;
	}
	line[len] = '\n';
	line[len + 1] = '\0';
	*ret = line;
	*ret_len = len + 1;
	return 0;
}

/* ---- replies ---- */

int ctlproto_parse_reply(const char *line, size_t len, struct ctlproto_reply *ret, char *err,
			 size_t errlen)
{
	struct ctlproto_reply rep = { .id = -1 };
	json_t *root = NULL, *v, *e;
	const char *key;
	int kinds = 0, r;

	r = load_object(line, len, &root, err, errlen);
	if (r < 0)
		return r;
	json_object_foreach(root, key, v) {
		if (streq(key, "id"))
			continue;
		if (streq(key, "ok")) {
			rep.kind = CTLPROTO_REPLY_OK;
		} else if (streq(key, "error")) {
			rep.kind = CTLPROTO_REPLY_ERROR;
		} else if (streq(key, "progress")) {
			rep.kind = CTLPROTO_REPLY_PROGRESS;
		} else {
			r = set_error(err, errlen, -EBADMSG, "reply: unknown member");
			goto fail;
		}
		rep.value = v;
		kinds++;
	}
	if (kinds != 1) {
		r = set_error(err, errlen, -EBADMSG,
			      "reply: needs exactly one of \"ok\", \"error\" or \"progress\"");
		goto fail;
	}
	v = json_object_get(root, "id");
	if (!v) {
		r = set_error(err, errlen, -EBADMSG, "reply: id missing");
		goto fail;
	}
	if (!json_is_null(v)) {
		r = get_id(v, &rep.id, err, errlen);
		if (r < 0)
			goto fail;
	}
	if (rep.kind == CTLPROTO_REPLY_PROGRESS && !json_is_object(rep.value)) {
		r = set_error(err, errlen, -EBADMSG, "reply: progress must be an object");
		goto fail;
	}
	if (rep.kind == CTLPROTO_REPLY_ERROR) {
		json_t *code, *eno, *msg;

		e = rep.value;
		code = json_object_get(e, "code");
		eno = json_object_get(e, "errno");
		msg = json_object_get(e, "message");
		if (!json_is_object(e) || json_object_size(e) != 3 || !json_is_string(code) ||
		    !json_is_integer(eno) || !json_is_string(msg) || json_integer_value(eno) <= 0 ||
		    json_integer_value(eno) > 4095) {
			r = set_error(err, errlen, -EBADMSG,
				      "reply: error must be {\"code\", \"errno\", \"message\"}");
			goto fail;
		}
		rep.code = json_string_value(code);
		rep.message = json_string_value(msg);
		rep.error_errno = (int)json_integer_value(eno);
	}
	rep.root = root;
	*ret = rep;
	return 0;
fail:
	json_decref(root);
	return r;
}

void ctlproto_reply_done(struct ctlproto_reply *r)
{
	json_decref(r->root);
	memset(r, 0, sizeof(*r));
}

/* ---- error codes ---- */

const char *ctlproto_error_code(int r)
{
	switch (-r) {
	case EBADMSG:
	case EPROTO:
		return "protocol_error";
	case EMSGSIZE:
		return "too_large";
	case EBADRQC:
		return "unknown_command";
	case EINVAL:
	case ERANGE:
	case EDOM:
		return "invalid_argument";
	case ENOENT:
	case ESRCH:
		return "not_found";
	case EACCES:
	case EPERM:
		return "permission_denied";
	case EEXIST:
		return "conflict";
	case EBUSY:
	case EAGAIN:
	case EALREADY:
	case EUSERS:
		return "busy";
	case ENOKEY:
	case EKEYREJECTED:
	case EKEYEXPIRED:
		return "precondition_failed";
	case EOPNOTSUPP:
	case ENOSYS:
		return "not_supported";
	case ECANCELED:
		return "cancelled";
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ECONNREFUSED:
	case ETIMEDOUT:
	case ECONNRESET:
		return "unavailable";
	default:
		return "failed";
	}
}

int ctlproto_exit_status(const char *code)
{
	if (!code)
		return CTLPROTO_EXIT_FAILED;
	if (streq(code, "invalid_argument") || streq(code, "unknown_command"))
		return CTLPROTO_EXIT_USAGE;
	if (streq(code, "not_found"))
		return CTLPROTO_EXIT_NOT_FOUND;
	if (streq(code, "permission_denied"))
		return CTLPROTO_EXIT_DENIED;
	if (streq(code, "conflict") || streq(code, "busy") || streq(code, "precondition_failed"))
		return CTLPROTO_EXIT_CONFLICT;
	return CTLPROTO_EXIT_FAILED;
}

/* ---- base64 ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ctlproto_base64_encode(const void *data, size_t len)
{
	const unsigned char *in = data;
	size_t out_len, o = 0;
	char *out;

	if (len >= SIZE_MAX / 2)
		return NULL;
	out_len = (len + 2) / 3 * 4;
	out = malloc(out_len + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < len)
			v |= in[i + 2];
		out[o++] = b64[(v >> 18) & 63];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? b64[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int ctlproto_base64_decode(const char *text, size_t len, unsigned char **ret, size_t *ret_len)
{
	_cleanup_free_ unsigned char *out = NULL;
	size_t o = 0;

	if (len % 4 != 0)
		return -EINVAL;
	out = malloc(len / 4 * 3 + 1);
	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		int a = b64_value(text[i]), b = b64_value(text[i + 1]);
		int c = b64_value(text[i + 2]), d = b64_value(text[i + 3]);

		if (a < 0 || b < 0)
			return -EINVAL;
		if (c < 0 || d < 0) {
			/* Padding only at the very end, and only as "xx==" or "xxx=". */
			if (!last || text[i + 3] != '=' || (c < 0 && text[i + 2] != '='))
				return -EINVAL;
			if (c < 0) {
				if (b & 15) /* non-canonical: the unused bits must be zero */
					return -EINVAL;
				out[o++] = (unsigned char)(a << 2 | b >> 4);
				break;
			}
			if (c & 3)
				return -EINVAL;
			out[o++] = (unsigned char)(a << 2 | b >> 4);
			out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
			break;
		}
		out[o++] = (unsigned char)(a << 2 | b >> 4);
		out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
		out[o++] = (unsigned char)((c & 3) << 6 | d);
	}
	out[o] = '\0';
	*ret_len = o;
	*ret = TAKE_PTR(out);
	return 0;
}
