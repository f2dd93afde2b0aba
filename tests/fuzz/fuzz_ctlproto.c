/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the control protocol codec. The input is fed to a framer in chunks whose
 * sizes come from the input itself; every line is parsed as a request and as a reply, and its
 * id salvaged. Invariants checked (abort on violation):
 *   - a request that parses re-encodes (ctlproto_request_new + ctlproto_encode) into a line that
 *     parses again to the same command and id, with arguments that are equal;
 *   - an encoded message is one line: it ends in its only newline and stays within the limit;
 *   - a reply that parses re-encodes the same way;
 *   - base64: whatever decodes re-encodes to exactly the same text.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_line(const char *text, size_t len)
{
	if (len == 0 || len > CTLPROTO_MAX_MESSAGE || text[len - 1] != '\n' ||
	    memchr(text, '\n', len - 1) || strlen(text) != len)
		abort();
}

static void request_roundtrip(const char *line, size_t len)
{
	struct ctlproto_request req, again;
	char err[512], *text = NULL;
	size_t tlen;
	json_t *m;
	int r;

	r = ctlproto_parse_request(line, len, &req, err, sizeof(err));
	if (r < 0) {
		if (!err[0] || r == -ENOMEM)
			abort(); /* every rejection must say why */
		(void)ctlproto_salvage_id(line, len);
		return;
	}
	if (req.id < 0 || req.id > CTLPROTO_MAX_ID || !req.command || !json_is_object(req.args))
		abort();
	m = ctlproto_request_new(req.id, req.command->name, json_deep_copy(req.args));
	r = ctlproto_encode(m, &text, &tlen);
	json_decref(m);
	if (r == 0) {
		check_line(text, tlen);
		if (ctlproto_parse_request(text, tlen - 1, &again, err, sizeof(err)) < 0)
			abort();
		if (again.id != req.id || again.command != req.command ||
		    !json_equal(again.args, req.args))
			abort();
		ctlproto_request_done(&again);
	} else if (r != -EMSGSIZE) {
		abort();
	}
	free(text);
	ctlproto_request_done(&req);
}

static void reply_roundtrip(const char *line, size_t len)
{
	struct ctlproto_reply rep, again;
	char err[512], *text = NULL;
	size_t tlen;
	json_t *m = NULL;

	if (ctlproto_parse_reply(line, len, &rep, err, sizeof(err)) < 0)
		return;
	switch (rep.kind) {
	case CTLPROTO_REPLY_OK:
		m = ctlproto_ok_new(rep.id, json_deep_copy(rep.value));
		break;
	case CTLPROTO_REPLY_PROGRESS:
		m = ctlproto_progress_new(rep.id, json_deep_copy(rep.value));
		break;
	case CTLPROTO_REPLY_ERROR:
		m = ctlproto_error_new(rep.id, -rep.error_errno, rep.message);
		break;
	}
	if (ctlproto_encode(m, &text, &tlen) == 0) {
		check_line(text, tlen);
		if (ctlproto_parse_reply(text, tlen - 1, &again, err, sizeof(err)) < 0)
			abort();
		if (again.kind != rep.kind || again.id != rep.id)
			abort();
		if (rep.kind != CTLPROTO_REPLY_ERROR && !json_equal(again.value, rep.value))
			abort();
		if (rep.kind == CTLPROTO_REPLY_ERROR &&
		    (again.error_errno != rep.error_errno ||
		     (rep.message[0] && strcmp(again.message, rep.message))))
			abort();
		ctlproto_reply_done(&again);
	}
	free(text);
	json_decref(m);
	ctlproto_reply_done(&rep);
}

static void base64_roundtrip(const uint8_t *data, size_t size)
{
	unsigned char *dec = NULL;
	size_t len;
	char *enc;

	if (ctlproto_base64_decode((const char *)data, size, &dec, &len) < 0)
		return;
	enc = ctlproto_base64_encode(dec, len);
	if (!enc || strlen(enc) != size || memcmp(enc, data, size) != 0)
		abort();
	free(enc);
	free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctlproto_framer f;
	size_t off = 0, step = size ? (size_t)data[0] % 97 + 1 : 1;

	ctlproto_framer_init(&f);
	while (off < size) {
		size_t n = size - off < step ? size - off : step;
		const char *line;
		size_t len;
		int r;

		if (ctlproto_framer_feed(&f, data + off, n) < 0)
			abort();
		off += n;
		while ((r = ctlproto_framer_next(&f, &line, &len)) == 1) {
			if (memchr(line, '\n', len))
				abort();
			request_roundtrip(line, len);
			reply_roundtrip(line, len);
		}
		if (r < 0)
			break; /* oversized: the stream cannot be resynchronised */
	}
	/* what is left without a newline, as a server would see it at EOF */
	if (ctlproto_framer_pending(&f) > 0 && ctlproto_framer_pending(&f) < CTLPROTO_MAX_MESSAGE)
		request_roundtrip(f.buf + f.start, ctlproto_framer_pending(&f));
	ctlproto_framer_done(&f);
	base64_roundtrip(data, size);
	return 0;
}
