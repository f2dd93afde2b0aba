/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the Constant Contact wire format. The input is used three ways:
 *  1. as a response body: parsed as JSON and fed to every response parser (activity, pages,
 *     lists, contacts, custom fields, token, device authorization, errors), checking that what
 *     they keep is bounded and clean (no control characters in messages, valid UTF-8);
 *  2. as contacts for the import encoder (lines: email, first, last, then key=value extras):
 *     whatever the encoder accepts must come out as JSON that decodes to exactly those values,
 *     within the byte limit, with the predicted size;
 *  3. as a pasted redirect URL.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccapi.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIST "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"

static void check_text(const char *s)
{
	if (!s)
		return;
	if (!utf8_valid(s, strlen(s)))
		abort();
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			abort();
}

static void parse_all(const uint8_t *data, size_t size)
{
	struct ccapi_activity a = { 0 };
	struct ccapi_activity_page ap = { 0 };
	struct ccapi_list l = { 0 };
	struct ccapi_list_page lp = { 0 }, all = { 0 };
	struct ccapi_contact_page cp = { 0 };
	struct ccapi_custom_field_page fp = { 0 };
	struct ccapi_token t = { 0 };
	struct ccapi_device_auth d = { 0 };
	struct ccapi_error e;
	json_t *j = NULL;
	char err[256];

	if (ccapi_json_parse((const char *)data, size, &j, err, sizeof(err)) < 0) {
		check_text(err);
		return;
	}
	if (ccapi_parse_activity(j, &a, err, sizeof(err)) >= 0) {
		if (a.percent_done < 0 || a.percent_done > 100 || !ccapi_id_valid(a.activity_id))
			abort();
		for (size_t i = 0; i < a.n_errors; i++) {
			check_text(a.errors[i].raw);
			check_text(a.errors[i].reason);
			check_text(a.errors[i].email);
		}
		check_text(a.state_name);
	}
	ccapi_activity_done(&a);
	if (ccapi_parse_activity_page(j, &ap, NULL, err, sizeof(err)) >= 0 && ap.next)
		check_text(ap.next);
	ccapi_activity_page_done(&ap);
	if (ccapi_parse_list(j, &l, err, sizeof(err)) >= 0)
		check_text(l.name);
	ccapi_list_done(&l);
	if (ccapi_parse_list_page(j, &lp, err, sizeof(err)) >= 0) {
		size_t n = lp.n;

		if (ccapi_list_page_append(&all, &lp) >= 0 && (all.n != n || lp.n != 0))
			abort();
	}
	ccapi_list_page_done(&lp);
	ccapi_list_page_done(&all);
	if (ccapi_parse_contact_page(j, &cp, err, sizeof(err)) >= 0)
		for (size_t i = 0; i < cp.n; i++)
			check_text(cp.contacts[i].email);
	ccapi_contact_page_done(&cp);
	if (ccapi_parse_custom_field_page(j, &fp, err, sizeof(err)) >= 0)
		for (size_t i = 0; i < fp.n; i++)
			check_text(fp.fields[i].name);
	ccapi_custom_field_page_done(&fp);
	if (ccapi_parse_token(j, 1700000000, &t, err, sizeof(err)) >= 0)
		if (!t.access_token || t.expires_at < 1700000000)
			abort();
	ccapi_token_done(&t);
	if (ccapi_parse_device_auth(j, 1700000000, &d, err, sizeof(err)) >= 0)
		if (d.interval_s < 1 || d.interval_s > 300)
			abort();
	ccapi_device_auth_done(&d);
	if (ccapi_parse_error(j, &e) >= 0) {
		check_text(e.key);
		check_text(e.message);
	}
	json_decref(j);
}

/* Splits the input into NUL-terminated lines (max 16). */
static size_t lines(char *buf, char **out, size_t max)
{
	size_t n = 0;
	char *p = buf;

	while (n < max) {
		char *nl = strchr(p, '\n');

		out[n++] = p;
		if (!nl)
			break;
		*nl = '\0';
		p = nl + 1;
	}
	return n;
}

static void encode(const uint8_t *data, size_t size)
{
	const char *ids[] = { LIST };
	struct ccapi_field extra[12];
	struct ccapi_import *b = NULL;
	char *buf = malloc(size + 1), *ln[16], *body = NULL;
	size_t n, n_extra = 0, len = 0, predicted;
	json_t *j, *item;
	int r;

	if (!buf)
		return;
	memcpy(buf, data, size);
	buf[size] = '\0';
	n = lines(buf, ln, 16);
	for (size_t i = 3; i < n && n_extra < 12; i++) {
		char *eq = strchr(ln[i], '=');

		if (!eq)
			continue;
		*eq = '\0';
		extra[n_extra].key = ln[i];
		extra[n_extra].value = eq + 1;
		n_extra++;
	}
	if (ccapi_import_begin(ids, 1, 2, 2048, &b, NULL, 0) < 0)
		abort();
	r = ccapi_import_add(b, ln[0], n > 1 ? ln[1] : NULL, n > 2 ? ln[2] : NULL, extra, n_extra,
			     NULL, 0);
	if (r == 0) {
		predicted = ccapi_import_size(b);
		if (ccapi_import_finish(b, &body, &len) < 0 || len != predicted || len > 2048 ||
		    strlen(body) != len)
			abort();
		j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
		/* Duplicate keys among the extras are the caller's problem; anything else that
		 * does not decode is an encoder bug. */
		if (!j) {
			bool dup = false;

			for (size_t i = 0; i < n_extra; i++)
				for (size_t k = i + 1; k < n_extra; k++)
					dup = dup || !strcmp(extra[i].key, extra[k].key);
			if (!dup)
				abort();
		} else {
			item = json_array_get(json_object_get(j, "import_data"), 0);
			if (strcmp(json_string_value(json_object_get(item, "email")), ln[0]))
				abort();
			if (n > 1 && *ln[1] &&
			    strcmp(json_string_value(json_object_get(item, "first_name")), ln[1]))
				abort();
			json_decref(j);
		}
		free(body);
	} else if (r != -EINVAL && r != -EILSEQ && r != -EMSGSIZE && r != -E2BIG) {
		abort();
	} else if (ccapi_import_count(b) != 0) {
		abort();
	}
	ccapi_import_free(b);
	free(buf);
}

static void redirect(const uint8_t *data, size_t size)
{
	char *url = malloc(size + 1), *code = NULL, err[256];

	if (!url)
		return;
	memcpy(url, data, size);
	url[size] = '\0';
	if (ccapi_redirect_parse(url, "state", &code, err, sizeof(err)) >= 0) {
		if (!code || !*code)
			abort();
		free(code);
	}
	free(url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 20)
		return 0;
	parse_all(data, size);
	encode(data, size);
	redirect(data, size);
	return 0;
}
