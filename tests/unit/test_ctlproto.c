/* SPDX-License-Identifier: MIT */
/* Control protocol codec: framing, strict request and reply parsing, encoding, errors, base64,
 * and agreement between the command table and the JSON Schemas in schema/control/. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ctlproto.h"
#include "util.h"

/* ---- framing ---- */

static void test_framer_splits_and_joins(void **state)
{
	struct ctlproto_framer f;
	const char *line;
	size_t len;

	(void)state;
	ctlproto_framer_init(&f);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 0);
	assert_int_equal(ctlproto_framer_feed(&f, "{\"a\":", 5), 0);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 0);
	assert_int_equal(ctlproto_framer_pending(&f), 5);
	assert_int_equal(ctlproto_framer_feed(&f, "1}\n{}\r\n\nx", 9), 0);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 1);
	assert_int_equal(len, 7);
	assert_memory_equal(line, "{\"a\":1}", 7);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 1);
	assert_int_equal(len, 3); /* the \r stays: JSON reads it as blank */
	assert_memory_equal(line, "{}\r", 3);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 1);
	assert_int_equal(len, 0);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 0);
	assert_int_equal(ctlproto_framer_pending(&f), 1);
	ctlproto_framer_done(&f);
}

static void test_framer_space_commit(void **state)
{
	struct ctlproto_framer f;
	const char *line;
	size_t len, avail = 0;
	char *p;

	(void)state;
	ctlproto_framer_init(&f);
	p = ctlproto_framer_space(&f, 16, &avail);
	assert_non_null(p);
	assert_true(avail >= 16);
	memcpy(p, "hello\nwor", 9);
	ctlproto_framer_commit(&f, 9);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 1);
	assert_int_equal(len, 5);
	/* Space after a consumed line reuses the buffer from its start. */
	p = ctlproto_framer_space(&f, 16, &avail);
	memcpy(p, "ld\n", 3);
	ctlproto_framer_commit(&f, 3);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 1);
	assert_int_equal(len, 5);
	assert_memory_equal(line, "world", 5);
	ctlproto_framer_done(&f);
}

static void test_framer_limit(void **state)
{
	struct ctlproto_framer f;
	const char *line;
	size_t len;
	char *big = malloc(CTLPROTO_MAX_MESSAGE + 1);

	(void)state;
	assert_non_null(big);
	/* The largest message: MAX - 1 bytes and its newline. */
	memset(big, 'x', CTLPROTO_MAX_MESSAGE - 1);
	big[CTLPROTO_MAX_MESSAGE - 1] = '\n';
	ctlproto_framer_init(&f);
	assert_int_equal(ctlproto_framer_feed(&f, big, CTLPROTO_MAX_MESSAGE), 0);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 1);
	assert_int_equal(len, CTLPROTO_MAX_MESSAGE - 1);
	ctlproto_framer_done(&f);

	/* One byte more, with or without the newline already there, is over. */
	memset(big, 'x', CTLPROTO_MAX_MESSAGE);
	big[CTLPROTO_MAX_MESSAGE] = '\n';
	ctlproto_framer_init(&f);
	assert_int_equal(ctlproto_framer_feed(&f, big, CTLPROTO_MAX_MESSAGE - 1), 0);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), 0);
	assert_int_equal(ctlproto_framer_feed(&f, big, 1), 0);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), -EMSGSIZE);
	ctlproto_framer_done(&f);
	ctlproto_framer_init(&f);
	assert_int_equal(ctlproto_framer_feed(&f, big, CTLPROTO_MAX_MESSAGE + 1), 0);
	assert_int_equal(ctlproto_framer_next(&f, &line, &len), -EMSGSIZE);
	ctlproto_framer_done(&f);
	free(big);
}

/* ---- requests ---- */

static int parse(const char *text, struct ctlproto_request *req, char *err, size_t errlen)
{
	return ctlproto_parse_request(text, strlen(text), req, err, errlen);
}

/* Parses a request that must fail with r and an error message containing needle. */
static void expect_reject(const char *text, int r, const char *needle)
{
	struct ctlproto_request req = {};
	char err[512] = "";
	int got = parse(text, &req, err, sizeof(err));

	if (got != r || !strstr(err, needle))
		fail_msg("%s\n  -> %d \"%s\"; wanted %d containing \"%s\"", text, got, err, r,
			 needle);
	assert_null(req.args);
}

static void test_request_valid(void **state)
{
	struct ctlproto_request req = {};
	char err[256] = "";

	(void)state;
	assert_int_equal(parse("{\"version\":1,\"id\":7,\"command\":\"connection.add\","
			       "\"args\":{\"name\":\"main\",\"client_id\":\"k\","
			       "\"auth_flow\":\"pkce\"}}", &req, err, sizeof(err)), 0);
	assert_int_equal(req.id, 7);
	assert_int_equal(req.command->id, CTL_CONNECTION_ADD);
	assert_string_equal(json_string_value(json_object_get(req.args, "auth_flow")), "pkce");
	ctlproto_request_done(&req);

	/* args may be left out for commands without required ones; they read as {} */
	assert_int_equal(parse(" {\"command\":\"status\",\"id\":0,\"version\":1} ", &req, err,
			       sizeof(err)), 0);
	assert_int_equal(req.command->id, CTL_STATUS);
	assert_true(json_is_object(req.args));
	assert_int_equal(json_object_size(req.args), 0);
	ctlproto_request_done(&req);

	/* the largest id */
	assert_int_equal(parse("{\"version\":1,\"id\":9007199254740991,\"command\":\"whoami\"}",
			       &req, err, sizeof(err)), 0);
	assert_int_equal(req.id, CTLPROTO_MAX_ID);
	ctlproto_request_done(&req);
}

static void test_request_envelope_errors(void **state)
{
	(void)state;
	expect_reject("", -EBADMSG, "malformed JSON");
	expect_reject("{\"version\":1,", -EBADMSG, "malformed JSON");
	expect_reject("[1,2]", -EBADMSG, "must be a JSON object");
	expect_reject("\"x\"", -EBADMSG, "malformed JSON");
	expect_reject("{\"version\":1,\"version\":1,\"id\":1,\"command\":\"status\"}", -EBADMSG,
		      "duplicate");
	expect_reject("{\"id\":1,\"command\":\"status\"}", -EBADMSG, "version: missing");
	expect_reject("{\"version\":\"1\",\"id\":1,\"command\":\"status\"}", -EBADMSG,
		      "version: expected an integer, got a string");
	expect_reject("{\"version\":2,\"id\":1,\"command\":\"status\"}", -EPROTO,
		      "unsupported protocol version 2");
	expect_reject("{\"version\":1,\"command\":\"status\"}", -EBADMSG, "id: missing");
	expect_reject("{\"version\":1,\"id\":-1,\"command\":\"status\"}", -EBADMSG,
		      "id: out of range");
	expect_reject("{\"version\":1,\"id\":9007199254740992,\"command\":\"status\"}", -EBADMSG,
		      "id: out of range");
	expect_reject("{\"version\":1,\"id\":1.5,\"command\":\"status\"}", -EBADMSG,
		      "id: expected an integer, got a number");
	expect_reject("{\"version\":1,\"id\":1}", -EBADMSG, "command: missing");
	expect_reject("{\"version\":1,\"id\":1,\"command\":3}", -EBADMSG,
		      "command: expected a string, got an integer");
	expect_reject("{\"version\":1,\"id\":1,\"command\":\"rm -rf\"}", -EBADRQC,
		      "unknown command \"rm -rf\"");
	expect_reject("{\"version\":1,\"id\":1,\"command\":\"status\",\"extra\":true}", -EBADMSG,
		      "unknown member \"extra\"");
	expect_reject("{\"version\":1,\"id\":1,\"command\":\"status\",\"args\":[]}", -EINVAL,
		      "args: expected an object, got an array");
	/* NUL inside a string, invalid UTF-8, a lone surrogate: jansson refuses all three */
	expect_reject("{\"version\":1,\"id\":1,\"command\":\"sta\\u0000tus\"}", -EBADMSG,
		      "malformed JSON");
	expect_reject("{\"version\":1,\"id\":1,\"command\":\"\xff\xfe\"}", -EBADMSG,
		      "malformed JSON");
	expect_reject("{\"version\":1,\"id\":1,\"command\":\"\\ud800\"}", -EBADMSG,
		      "malformed JSON");
}

static void test_request_too_long(void **state)
{
	struct ctlproto_request req = {};
	char err[256] = "";
	size_t n = CTLPROTO_MAX_MESSAGE;
	char *big = malloc(n);

	(void)state;
	assert_non_null(big);
	memset(big, ' ', n);
	assert_int_equal(ctlproto_parse_request(big, n, &req, err, sizeof(err)), -EMSGSIZE);
	assert_non_null(strstr(err, "message too long"));
	free(big);
}

#define REQ(cmd, args) "{\"version\":1,\"id\":5,\"command\":\"" cmd "\",\"args\":" args "}"

static void test_request_argument_errors(void **state)
{
	(void)state;
	expect_reject(REQ("connection.add", "{\"name\":\"x\"}"), -EINVAL,
		      "args.client_id: missing (required by connection.add)");
	expect_reject(REQ("connection.add", "{\"name\":\"x\",\"client_id\":\"k\",\"colour\":1}"),
		      -EINVAL, "args: unknown member \"colour\" for connection.add (known: name, "
		      "client_id, auth_flow, usable_by)");
	expect_reject(REQ("connection.add", "{\"name\":7,\"client_id\":\"k\"}"), -EINVAL,
		      "args.name: expected a string, got an integer");
	expect_reject(REQ("connection.add", "{\"name\":\"\",\"client_id\":\"k\"}"), -EINVAL,
		      "args.name: must not be empty");
	expect_reject(REQ("connection.add", "{\"name\":null,\"client_id\":\"k\"}"), -EINVAL,
		      "args.name: must not be null");
	expect_reject(REQ("connection.add", "{\"name\":\"x\",\"client_id\":\"k\","
			  "\"auth_flow\":\"telepathy\"}"), -EINVAL,
		      "args.auth_flow: must be one of device, pkce, code");
	expect_reject(REQ("connection.add", "{\"name\":\"x\",\"client_id\":\"k\","
			  "\"usable_by\":\"everyone\"}"), -EINVAL,
		      "args.usable_by: must be one of admins, admins_and_contributors");
	expect_reject(REQ("run", "{\"export\":\"e\",\"follow\":\"yes\"}"), -EINVAL,
		      "args.follow: expected a boolean, got a string");
	expect_reject(REQ("cancel", "{\"run\":0}"), -EINVAL, "args.run: 0 is out of range");
	expect_reject(REQ("cancel", "{\"run\":\"12\"}"), -EINVAL,
		      "args.run: expected an integer, got a string");
	expect_reject(REQ("audit", "{\"limit\":100000}"), -EINVAL, "args.limit: 100000 is out "
		      "of range 1..1000");
	expect_reject(REQ("export.add", "{\"name\":\"e\",\"connection\":\"c\",\"list_id\":\"l\","
			  "\"email_field\":\"m\",\"segments\":[]}"), -EINVAL,
		      "args.segments: must not be empty");
	expect_reject(REQ("export.add", "{\"name\":\"e\",\"connection\":\"c\",\"list_id\":\"l\","
			  "\"email_field\":\"m\",\"segments\":[\"a\",2]}"), -EINVAL,
		      "args.segments[1]: expected a string, got an integer");
	expect_reject(REQ("export.add", "{\"name\":\"e\",\"connection\":\"c\",\"list_id\":\"l\","
			  "\"email_field\":\"m\",\"segments\":[\"a\"],\"fields\":{\"city\":1}}"),
		      -EINVAL, "args.fields.city: expected a string, got an integer");
	expect_reject(REQ("export.add", "{\"name\":\"e\",\"connection\":\"c\",\"list_id\":\"l\","
			  "\"email_field\":\"m\",\"segments\":[\"a\"],"
			  "\"mirror_max_remove_share\":1.5}"), -EINVAL,
		      "args.mirror_max_remove_share: 1.5 is out of range 0..1");
	expect_reject(REQ("export.add", "{\"name\":\"e\",\"connection\":\"c\",\"list_id\":\"l\","
			  "\"email_field\":\"m\",\"segments\":[\"a\"],\"cron\":null}"), -EINVAL,
		      "args.cron: must not be null");
	/* edit: the same members, optional, and null clears */
	struct ctlproto_request req = {};
	char err[256] = "";

	assert_int_equal(parse(REQ("export.edit", "{\"export\":\"e\",\"cron\":null,"
				   "\"first_name_field\":null}"), &req, err, sizeof(err)), 0);
	ctlproto_request_done(&req);
	expect_reject(REQ("export.edit", "{\"export\":\"e\",\"mode\":null}"), -EINVAL,
		      "args.mode: must not be null");
}

static void test_request_string_length_in_characters(void **state)
{
	struct ctlproto_request req = {};
	char err[256] = "", text[2048];
	char name[1024] = "";
	size_t o = 0;

	(void)state;
	/* 100 two-byte characters: 200 bytes, but within the 100-character limit */
	for (int i = 0; i < 100; i++)
		o += (size_t)snprintf(name + o, sizeof(name) - o, "\xc3\xa9");
	snprintf(text, sizeof(text), REQ("connection.add", "{\"name\":\"%s\",\"client_id\":\"k\"}"),
		 name);
	assert_int_equal(parse(text, &req, err, sizeof(err)), 0);
	ctlproto_request_done(&req);
	snprintf(text, sizeof(text),
		 REQ("connection.add", "{\"name\":\"%sx\",\"client_id\":\"k\"}"), name);
	expect_reject(text, -EINVAL, "args.name: too long (101 characters, at most 100)");
}

static void test_salvage_id(void **state)
{
	(void)state;
	const char *bad_args = REQ("cancel", "{\"run\":\"x\"}");

	assert_int_equal(ctlproto_salvage_id(bad_args, strlen(bad_args)), 5);
	assert_int_equal(ctlproto_salvage_id("{\"id\":-4}", 9), -1);
	assert_int_equal(ctlproto_salvage_id("{\"id\":", 6), -1);
	assert_int_equal(ctlproto_salvage_id("[]", 2), -1);
}

/* ---- encoding and replies ---- */

static void test_encode_one_line(void **state)
{
	json_t *m = ctlproto_ok_new(3, json_pack("{s:s}", "text", "two\nlines\r\u2028"));
	char *text = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(ctlproto_encode(m, &text, &len), 0);
	assert_int_equal(len, strlen(text));
	assert_int_equal(text[len - 1], '\n');
	assert_null(memchr(text, '\n', len - 1));
	assert_string_equal(text, "{\"id\":3,\"ok\":{\"text\":\"two\\nlines\\r\u2028\"}}\n");
	free(text);
	json_decref(m);
}

static void test_encode_too_large(void **state)
{
	char *big = malloc(CTLPROTO_MAX_MESSAGE);
	char *text = NULL;
	size_t len;
	json_t *m;

	(void)state;
	assert_non_null(big);
	memset(big, 'a', CTLPROTO_MAX_MESSAGE - 1);
	big[CTLPROTO_MAX_MESSAGE - 1] = '\0';
	m = ctlproto_ok_new(1, json_string(big));
	assert_int_equal(ctlproto_encode(m, &text, &len), -EMSGSIZE);
	assert_null(text);
	json_decref(m);
	free(big);
}

static void roundtrip(json_t *msg, struct ctlproto_reply *rep)
{
	char *text = NULL, err[256] = "";
	size_t len;

	assert_int_equal(ctlproto_encode(msg, &text, &len), 0);
	json_decref(msg);
	if (ctlproto_parse_reply(text, len - 1, rep, err, sizeof(err)) < 0)
		fail_msg("%s: %s", text, err);
	free(text);
}

static void test_reply_roundtrip(void **state)
{
	struct ctlproto_reply rep;

	(void)state;
	roundtrip(ctlproto_error_new(9, -ENOENT, "export \"x\" not found"), &rep);
	assert_int_equal(rep.kind, CTLPROTO_REPLY_ERROR);
	assert_int_equal(rep.id, 9);
	assert_string_equal(rep.code, "not_found");
	assert_int_equal(rep.error_errno, ENOENT);
	assert_string_equal(rep.message, "export \"x\" not found");
	ctlproto_reply_done(&rep);

	roundtrip(ctlproto_error_new(-1, -EACCES, NULL), &rep);
	assert_int_equal(rep.id, -1);
	assert_string_equal(rep.code, "permission_denied");
	assert_string_equal(rep.message, strerror(EACCES));
	ctlproto_reply_done(&rep);

	roundtrip(ctlproto_progress_new(4, json_pack("{s:i}", "sent", 10)), &rep);
	assert_int_equal(rep.kind, CTLPROTO_REPLY_PROGRESS);
	assert_int_equal(json_integer_value(json_object_get(rep.value, "sent")), 10);
	ctlproto_reply_done(&rep);

	roundtrip(ctlproto_ok_new(4, NULL), &rep);
	assert_int_equal(rep.kind, CTLPROTO_REPLY_OK);
	assert_true(json_is_null(rep.value));
	ctlproto_reply_done(&rep);

	/* a request builder's output is a valid request */
	{
		json_t *m = ctlproto_request_new(12, "export.show",
						 json_pack("{s:s}", "export", "weekly"));
		struct ctlproto_request req;
		char *text = NULL, err[256];
		size_t len;

		assert_int_equal(ctlproto_encode(m, &text, &len), 0);
		assert_int_equal(ctlproto_parse_request(text, len - 1, &req, err, sizeof(err)), 0);
		assert_int_equal(req.id, 12);
		assert_int_equal(req.command->id, CTL_EXPORT_SHOW);
		ctlproto_request_done(&req);
		free(text);
		json_decref(m);
	}
}

static void test_reply_rejects(void **state)
{
	static const char *const bad[] = {
		"{\"id\":1}",
		"{\"id\":1,\"ok\":1,\"error\":{}}",
		"{\"ok\":1}",
		"{\"id\":\"1\",\"ok\":1}",
		"{\"id\":1,\"ok\":1,\"x\":2}",
		"{\"id\":1,\"progress\":[]}",
		"{\"id\":1,\"error\":{\"code\":\"x\",\"errno\":2}}",
		"{\"id\":1,\"error\":{\"code\":\"x\",\"errno\":0,\"message\":\"m\"}}",
		"{\"id\":1,\"error\":{\"code\":\"x\",\"errno\":2,\"message\":\"m\",\"more\":1}}",
		"{\"id\":1,\"error\":\"boom\"}",
		"{\"id\":1,\"ok\":1,\"ok\":2}",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ctlproto_reply rep;
		char err[256] = "";

		int r = ctlproto_parse_reply(bad[i], strlen(bad[i]), &rep, err, sizeof(err));

		if (r != -EBADMSG)
			fail_msg("accepted: %s", bad[i]);
		assert_true(err[0] != '\0');
	}
}

static void test_error_codes(void **state)
{
	static const struct {
		int r;
		const char *code;
		int exit_status;
	} cases[] = {
		{ -EINVAL, "invalid_argument", CTLPROTO_EXIT_USAGE },
		{ -EBADRQC, "unknown_command", CTLPROTO_EXIT_USAGE },
		{ -ENOENT, "not_found", CTLPROTO_EXIT_NOT_FOUND },
		{ -EACCES, "permission_denied", CTLPROTO_EXIT_DENIED },
		{ -EPERM, "permission_denied", CTLPROTO_EXIT_DENIED },
		{ -EEXIST, "conflict", CTLPROTO_EXIT_CONFLICT },
		{ -EBUSY, "busy", CTLPROTO_EXIT_CONFLICT },
		{ -ENOKEY, "precondition_failed", CTLPROTO_EXIT_CONFLICT },
		{ -EOPNOTSUPP, "not_supported", CTLPROTO_EXIT_FAILED },
		{ -EBADMSG, "protocol_error", CTLPROTO_EXIT_FAILED },
		{ -EMSGSIZE, "too_large", CTLPROTO_EXIT_FAILED },
		{ -ETIMEDOUT, "unavailable", CTLPROTO_EXIT_FAILED },
		{ -EIO, "failed", CTLPROTO_EXIT_FAILED },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_string_equal(ctlproto_error_code(cases[i].r), cases[i].code);
		assert_int_equal(ctlproto_exit_status(cases[i].code), cases[i].exit_status);
	}
	assert_int_equal(ctlproto_exit_status(NULL), CTLPROTO_EXIT_FAILED);
	assert_int_equal(ctlproto_exit_status("something_new"), CTLPROTO_EXIT_FAILED);
}

/* ---- base64 ---- */

static void test_base64_vectors(void **state)
{
	static const char *const vectors[][2] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		char *enc = ctlproto_base64_encode(vectors[i][0], strlen(vectors[i][0]));
		unsigned char *dec = NULL;
		size_t len = 99;

		assert_string_equal(enc, vectors[i][1]);
		assert_int_equal(ctlproto_base64_decode(enc, strlen(enc), &dec, &len), 0);
		assert_int_equal(len, strlen(vectors[i][0]));
		assert_memory_equal(dec, vectors[i][0], len);
		free(enc);
		free(dec);
	}
}

static void test_base64_rejects(void **state)
{
	static const char *const bad[] = {
		"Zg=", "Zg", "Z===", "Zm9v!A==", "Zg==Zg==", "Zh==", "Zm9=", "====", "Zm 9v",
		"Zm9vY===",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		unsigned char *dec = NULL;
		size_t len;

		if (ctlproto_base64_decode(bad[i], strlen(bad[i]), &dec, &len) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_null(dec);
	}
}

static void test_base64_binary_roundtrip(void **state)
{
	unsigned char data[1000];
	uint32_t x = 12345;

	(void)state;
	for (size_t n = 0; n < sizeof(data); n += 37) {
		unsigned char *dec = NULL;
		size_t len;
		char *enc;

		for (size_t i = 0; i < n; i++) {
			x = x * 1103515245u + 12345u;
			data[i] = (unsigned char)(x >> 16);
		}
		enc = ctlproto_base64_encode(data, n);
		assert_non_null(enc);
		assert_int_equal(strlen(enc), (n + 2) / 3 * 4);
		assert_int_equal(ctlproto_base64_decode(enc, strlen(enc), &dec, &len), 0);
		assert_int_equal(len, n);
		assert_memory_equal(dec, data, n);
		free(enc);
		free(dec);
	}
}

/* ---- the schemas describe exactly the codec's table ---- */

static const char *schema_type(enum ctlproto_arg_type t)
{
	switch (t) {
	case CTLPROTO_ARG_STRING:
		return "string";
	case CTLPROTO_ARG_INTEGER:
		return "integer";
	case CTLPROTO_ARG_BOOLEAN:
		return "boolean";
	case CTLPROTO_ARG_NUMBER:
		return "number";
	case CTLPROTO_ARG_STRING_ARRAY:
		return "array";
	case CTLPROTO_ARG_STRING_MAP:
	default:
		return "object";
	}
}

/* "type" is a string, or ["string", "null"] for nullable members. */
static bool type_matches(json_t *type, const struct ctlproto_arg *a)
{
	if (a->flags & CTLPROTO_NULLABLE)
		return json_is_array(type) && json_array_size(type) == 2 &&
		       streq_ptr(json_string_value(json_array_get(type, 0)),
				 schema_type(a->type)) &&
		       streq_ptr(json_string_value(json_array_get(type, 1)), "null");
	return json_is_string(type) && strcmp(json_string_value(type), schema_type(a->type)) == 0;
}

static void test_schemas_match_table(void **state)
{
	const char *root = getenv("CCSYNC_SOURCE_ROOT");

	(void)state;
	if (!root)
		skip();
	for (int c = 0; c < _CTL_COMMAND_MAX; c++) {
		const struct ctlproto_command *cmd = ctlproto_command_get(c);
		json_t *schema, *props, *args, *required, *cmd_const;
		json_error_t jerr;
		char path[4096];
		size_t nreq = 0;

		snprintf(path, sizeof(path), "%s/schema/control/%s.json", root, cmd->name);
		schema = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
		if (!schema)
			fail_msg("%s: %s (line %d)", path, jerr.text, jerr.line);
		cmd_const = json_object_get(json_object_get(json_object_get(schema, "properties"),
							    "command"), "const");
		if (!json_is_string(cmd_const) || strcmp(json_string_value(cmd_const), cmd->name))
			fail_msg("%s: properties.command.const is not \"%s\"", path, cmd->name);
		args = json_object_get(json_object_get(schema, "properties"), "args");
		if (!json_is_false(json_object_get(args, "additionalProperties")))
			fail_msg("%s: args must set additionalProperties: false", path);
		props = json_object_get(args, "properties");
		if (json_object_size(props) != cmd->n_args)
			fail_msg("%s: %zu args in the schema, %zu in the codec", path,
				 json_object_size(props), cmd->n_args);
		for (size_t i = 0; i < cmd->n_args; i++) {
			const struct ctlproto_arg *a = &cmd->args[i];
			const char *const *choices = ctlproto_arg_choices(a);
			json_t *p = json_object_get(props, a->name);

			if (!p)
				fail_msg("%s: no schema for args.%s", path, a->name);
			if (!type_matches(json_object_get(p, "type"), a))
				fail_msg("%s: args.%s has the wrong type", path, a->name);
			if (a->type == CTLPROTO_ARG_STRING && a->max_len !=
			    (size_t)json_integer_value(json_object_get(p, "maxLength")))
				fail_msg("%s: args.%s maxLength differs", path, a->name);
			if (a->type == CTLPROTO_ARG_INTEGER &&
			    (json_number_value(json_object_get(p, "minimum")) != a->min ||
			     json_number_value(json_object_get(p, "maximum")) != a->max))
				fail_msg("%s: args.%s range differs", path, a->name);
			if (choices) {
				json_t *e = json_object_get(p, "enum");
				size_t n = 0;

				while (choices[n])
					n++;
				if (json_array_size(e) != n)
					fail_msg("%s: args.%s enum differs", path, a->name);
				for (size_t j = 0; j < n; j++)
					if (!streq_ptr(json_string_value(json_array_get(e, j)),
						       choices[j]))
						fail_msg("%s: args.%s enum differs", path, a->name);
			}
			if (a->flags & CTLPROTO_REQUIRED)
				nreq++;
		}
		required = json_object_get(args, "required");
		if (json_array_size(required) != nreq)
			fail_msg("%s: %zu required args in the schema, %zu in the codec", path,
				 json_array_size(required), nreq);
		for (size_t i = 0; i < json_array_size(required); i++) {
			const char *name = json_string_value(json_array_get(required, i));
			bool ok = false;

			for (size_t j = 0; j < cmd->n_args; j++)
				ok = ok || (strcmp(cmd->args[j].name, name) == 0 &&
					    (cmd->args[j].flags & CTLPROTO_REQUIRED));
			if (!ok)
				fail_msg("%s: \"%s\" is required in the schema only", path, name);
		}
		json_decref(schema);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_framer_splits_and_joins),
		cmocka_unit_test(test_framer_space_commit),
		cmocka_unit_test(test_framer_limit),
		cmocka_unit_test(test_request_valid),
		cmocka_unit_test(test_request_envelope_errors),
		cmocka_unit_test(test_request_too_long),
		cmocka_unit_test(test_request_argument_errors),
		cmocka_unit_test(test_request_string_length_in_characters),
		cmocka_unit_test(test_salvage_id),
		cmocka_unit_test(test_encode_one_line),
		cmocka_unit_test(test_encode_too_large),
		cmocka_unit_test(test_reply_roundtrip),
		cmocka_unit_test(test_reply_rejects),
		cmocka_unit_test(test_error_codes),
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_rejects),
		cmocka_unit_test(test_base64_binary_roundtrip),
		cmocka_unit_test(test_schemas_match_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
