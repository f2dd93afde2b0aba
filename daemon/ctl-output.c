/* SPDX-License-Identifier: MIT */
/*
 * Output helpers of ccsyncctl. Widths are counted in UTF-8 code points, which is right for the
 * names and identifiers these tables hold (wide CJK glyphs would need wcwidth, which would tie
 * the output to the caller's locale for little gain).
 */
#include "ctl-output.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

void ctl_table_init(struct ctl_table *t, size_t ncols, const char *const *headers)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
	t->headers = headers;
}

int ctl_table_add(struct ctl_table *t, const char *const *row)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **p = realloc(t->cells, cap * t->ncols * sizeof(char *));

		if (!p)
			return -ENOMEM;
		t->cells = p;
		t->cap = cap;
	}
	for (size_t i = 0; i < t->ncols; i++) {
		char *s = strdup(row[i] ? row[i] : "-");

		if (!s) {
			for (size_t j = 0; j < i; j++)
				free(t->cells[t->nrows * t->ncols + j]);
			return -ENOMEM;
		}
		/* Data may hold anything; a table must not let it move the cursor. */
		for (char *p = s; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
		t->cells[t->nrows * t->ncols + i] = s;
	}
	t->nrows++;
	return 0;
}

static size_t text_width(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

void ctl_table_print(const struct ctl_table *t, FILE *f)
{
	_cleanup_free_ size_t *w = calloc(t->ncols, sizeof(size_t));

	if (!w)
		return;
	for (size_t c = 0; c < t->ncols; c++) {
		w[c] = text_width(t->headers[c]);
		for (size_t r = 0; r < t->nrows; r++) {
			size_t n = text_width(t->cells[r * t->ncols + c]);

			if (n > w[c])
				w[c] = n;
		}
	}
	for (size_t r = 0; r <= t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const char *s = r == 0 ? t->headers[c] : t->cells[(r - 1) * t->ncols + c];

			fputs(s, f);
			if (c + 1 < t->ncols)
				fprintf(f, "%*s", (int)(w[c] - text_width(s) + 2), "");
		}
		fputc('\n', f);
	}
}

void ctl_table_done(struct ctl_table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	memset(t, 0, sizeof(*t));
}

void ctl_print_json(json_t *v)
{
	if (!v || json_dumpf(v, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY) < 0)
		fputs("null", stdout);
	fputc('\n', stdout);
}

void ctl_print_json_line(json_t *v)
{
	if (!v || json_dumpf(v, stdout, JSON_COMPACT | JSON_ENCODE_ANY) < 0)
		fputs("null", stdout);
	fputc('\n', stdout);
	fflush(stdout);
}

const char *ctl_format_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || !localtime_r(&tt, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M", &tm) == 0)
		snprintf(buf, len, "-");
	return buf;
}

const char *ctl_format_duration(int64_t s, char *buf, size_t len)
{
	if (s < 0)
		s = 0;
	if (s >= 3600)
		snprintf(buf, len, "%lld:%02lld:%02lld", (long long)(s / 3600),
			 (long long)(s / 60 % 60), (long long)(s % 60));
	else
		snprintf(buf, len, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
	return buf;
}

const char *ctl_format_count(int64_t n, char *buf, size_t len)
{
	char digits[32];
	size_t nd, o = 0;
	bool neg = n < 0;

	snprintf(digits, sizeof(digits), "%llu",
		 neg ? 0ull - (unsigned long long)n : (unsigned long long)n);
	nd = strlen(digits);
	if (len == 0)
		return buf;
	if (neg && o + 1 < len)
		buf[o++] = '-';
	for (size_t i = 0; i < nd && o + 1 < len; i++) {
		if (i > 0 && (nd - i) % 3 == 0 && o + 2 < len)
			buf[o++] = ',';
		buf[o++] = digits[i];
	}
	buf[o] = '\0';
	return buf;
}

void ctl_csv_field(FILE *f, const char *s)
{
	if (!s)
		return;
	if (!strpbrk(s, ",\"\r\n")) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

void ctl_print_value(FILE *f, json_t *v, int indent)
{
	const char *key;
	json_t *e, *item;
	size_t i;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		json_object_foreach(v, key, e) {
			fprintf(f, "%*s%s:", indent, "", key);
			if (json_is_object(e) && json_object_size(e) > 0) {
				fputc('\n', f);
				ctl_print_value(f, e, indent + 2);
			} else if (json_is_array(e) && json_array_size(e) > 0 &&
				   !json_is_string(json_array_get(e, 0))) {
				fputc('\n', f);
				json_array_foreach(e, i, item) {
					fprintf(f, "%*s-\n", indent + 2, "");
					ctl_print_value(f, item, indent + 4);
				}
			} else if (json_is_object(e)) {
				fputs(" -\n", f);
			} else {
				fputc(' ', f);
				ctl_print_value(f, e, 0);
			}
		}
		return;
	case JSON_ARRAY:
		json_array_foreach(v, i, e) {
			if (i)
				fputs(", ", f);
			if (json_is_string(e))
				fputs(json_string_value(e), f);
			else
				ctl_print_value(f, e, 0);
		}
		if (indent == 0)
			fputc('\n', f);
		return;
	case JSON_STRING:
		fprintf(f, "%s\n", json_string_value(v));
		return;
	case JSON_INTEGER:
		fprintf(f, "%lld\n", (long long)json_integer_value(v));
		return;
	case JSON_REAL:
		fprintf(f, "%g\n", json_real_value(v));
		return;
	case JSON_TRUE:
		fputs("yes\n", f);
		return;
	case JSON_FALSE:
		fputs("no\n", f);
		return;
	case JSON_NULL:
	default:
		fputs("-\n", f);
		return;
	}
}
