/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the configuration file parser. The daemon refuses to start on a bad file, so
 * the parser's promise is a precise first error, and these invariants check it on any input:
 *  - the result is 0 or -EINVAL, never a crash or another code;
 *  - an error message starts with "<name>:<line>: " where line lies inside the input;
 *  - the error names the FIRST bad line: the text before that line parses cleanly;
 *  - parsing is deterministic and idempotent: the same text over the defaults, or again over its
 *    own result, yields the same configuration, and every string field stays NUL-terminated;
 *  - config_validate on the result answers 0 or -EINVAL with a message.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NAME "fuzz.conf"

static void check_terminated(const char *field, size_t size)
{
	if (memchr(field, '\0', size) == NULL)
		abort();
}

static void check_strings(const struct config *c)
{
	check_terminated(c->database, sizeof(c->database));
	check_terminated(c->control_socket, sizeof(c->control_socket));
	check_terminated(c->admin_group, sizeof(c->admin_group));
	check_terminated(c->contributor_group, sizeof(c->contributor_group));
	check_terminated(c->default_schedule, sizeof(c->default_schedule));
	check_terminated(c->time_zone, sizeof(c->time_zone));
	check_terminated(c->api_base, sizeof(c->api_base));
	check_terminated(c->auth_base, sizeof(c->auth_base));
	check_terminated(c->ca_file, sizeof(c->ca_file));
	check_terminated(c->client_secret_file, sizeof(c->client_secret_file));
	check_terminated(c->redirect_uri, sizeof(c->redirect_uri));
}

/* The line number an error message names, or -1 when it does not start with "NAME:<n>: ". */
static long error_line(const char *msg)
{
	const char *p = msg + strlen(NAME);
	char *end;
	long line;

	if (strncmp(msg, NAME ":", strlen(NAME) + 1) != 0)
		return -1;
	p++;
	if (*p < '0' || *p > '9')
		return -1;
	line = strtol(p, &end, 10);
	if (end[0] != ':' || end[1] != ' ' || end[2] == '\0')
		return -1;
	return line;
}

/* Bytes of text up to and including its n-th newline (all of it when it has fewer). */
static size_t prefix_of_lines(const char *text, long n)
{
	const char *p = text;

	for (long i = 0; i < n; i++) {
		const char *nl = strchr(p, '\n');

		if (!nl)
			return strlen(text);
		p = nl + 1;
	}
	return (size_t)(p - text);
}

static void check_error(const char *text, const char *err)
{
	long lines = 1, line = error_line(err);
	size_t keep;
	char *prefix, err2[512];
	struct config c;

	for (const char *p = text; *p; p++)
		lines += *p == '\n';
	if (line < 1 || line > lines)
		abort();
	keep = prefix_of_lines(text, line - 1);
	prefix = malloc(keep + 1);
	if (!prefix)
		return;
	memcpy(prefix, text, keep);
	prefix[keep] = '\0';
	config_init(&c);
	if (config_load_string(&c, prefix, NAME, err2, sizeof(err2)) != 0)
		abort();
	free(prefix);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config *first, *second;
	char err[512] = "", err2[512] = "";
	char *text;
	int r, r2;

	if (size > 64 * 1024)
		return 0;
	text = malloc(size + 1);
	first = malloc(sizeof(*first));
	second = malloc(sizeof(*second));
	if (!text || !first || !second)
		goto out;
	memcpy(text, data, size);
	text[size] = '\0';

	config_init(first);
	r = config_load_string(first, text, NAME, err, sizeof(err));
	config_init(second);
	r2 = config_load_string(second, text, NAME, err2, sizeof(err2));
	if (r != r2 || strcmp(err, err2) != 0 || memcmp(first, second, sizeof(*first)) != 0)
		abort();
	check_strings(first);

	if (r == -EINVAL) {
		check_error(text, err);
	} else if (r == 0) {
		/* Applying the same file twice (a reload over the running configuration) changes
		 * nothing. */
		if (config_load_string(second, text, NAME, err2, sizeof(err2)) != 0 ||
		    memcmp(first, second, sizeof(*first)) != 0)
			abort();
		err[0] = '\0';
		r = config_validate(first, err, sizeof(err));
		if (r != 0 && (r != -EINVAL || err[0] == '\0'))
			abort();
	} else {
		abort();
	}
out:
	free(text);
	free(first);
	free(second);
	return 0;
}
