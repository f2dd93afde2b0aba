/* SPDX-License-Identifier: MIT */
/*
 * ccsyncctl's output: aligned tables for people, JSON for programs, CSV for spreadsheets, and
 * the small formatting helpers they share. Text that came from data (profile values, reasons)
 * may hold anything; tables print control characters as '?' so no value can drive the terminal.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct ctl_table {
	size_t ncols;
	const char *const *headers;
	char **cells;	/* nrows * ncols strings (owned) */
	size_t nrows, cap;
};

void ctl_table_init(struct ctl_table *t, size_t ncols, const char *const *headers);
/* Adds a row of t->ncols strings (NULL prints "-"); copies them. 0 or -ENOMEM. */
int ctl_table_add(struct ctl_table *t, const char *const *row);
void ctl_table_print(const struct ctl_table *t, FILE *f);
void ctl_table_done(struct ctl_table *t);

/* Pretty JSON (2-space indent) and a newline on stdout; NULL prints null. */
void ctl_print_json(json_t *v);
/* One compact JSON line on stdout (streams such as run --follow --json). */
void ctl_print_json_line(json_t *v);

/* "2024-05-01 14:03" in local time, or "-" for t <= 0. Returns buf. */
const char *ctl_format_time(int64_t t, char *buf, size_t len);
/* "1:02:03" or "2:03" for a duration in seconds. Returns buf. */
const char *ctl_format_duration(int64_t s, char *buf, size_t len);
/* 1234567 -> "1,234,567". Returns buf. */
const char *ctl_format_count(int64_t n, char *buf, size_t len);

/* Writes s as one RFC 4180 CSV field (quoted when needed); NULL writes an empty field. */
void ctl_csv_field(FILE *f, const char *s);

/* Prints a value for people: scalars as text, objects as indented "key: value" lines. */
void ctl_print_value(FILE *f, json_t *v, int indent);
