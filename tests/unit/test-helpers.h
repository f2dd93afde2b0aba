/* SPDX-License-Identifier: MIT */
/* Helpers shared by the cmocka unit tests: temporary directories that clean themselves up. */
#pragma once

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tmpdir {
	char path[PATH_MAX];
};

static inline void tmpdir_make(struct tmpdir *t)
{
	const char *base = getenv("TMPDIR");

	snprintf(t->path, sizeof(t->path), "%s/ccsync-test-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(t->path)) {
		perror("mkdtemp");
		abort();
	}
}

static inline void tmpdir_remove(struct tmpdir *t)
{
	char cmd[PATH_MAX + 16];

	if (!t->path[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->path);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", t->path);
	t->path[0] = '\0';
}

static inline void tmpdir_file(const struct tmpdir *t, const char *name, char *buf, size_t len)
{
	if ((size_t)snprintf(buf, len, "%s/%s", t->path, name) >= len)
		abort(); /* test paths are short; a truncated one would test the wrong file */
}
