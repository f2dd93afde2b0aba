/* SPDX-License-Identifier: MIT */
/*
 * The fake Constant Contact (tests/fakecc/fakecc.py) as a subprocess of a cmocka io test, and a
 * blocking client for its /_fake/ control API. Blocking is fine here: these calls run between
 * loop iterations of the test, never inside a callback of the code under test.
 */
#pragma once

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "../unit/test-helpers.h"

extern char **environ;

struct fake {
	struct tmpdir dir;
	pid_t pid;
	int port;
	char ca_file[PATH_MAX];
	char api_base[256];
	char auth_base[256];
	char base[256];
};

static inline void fake_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Starts the fake with extra command line arguments (NULL-terminated, may be NULL). */
static inline void fake_start(struct fake *f, const char *const *extra)
{
	const char *root = getenv("CCSYNC_SOURCE_ROOT");
	char script[PATH_MAX], ready[PATH_MAX], log[PATH_MAX];
	const char *argv[32];
	posix_spawn_file_actions_t fa;
	json_error_t je;
	json_t *j = NULL;
	int n = 0, status;

	memset(f, 0, sizeof(*f));
	tmpdir_make(&f->dir);
	snprintf(script, sizeof(script), "%s/tests/fakecc/fakecc.py", root ? root : ".");
	tmpdir_file(&f->dir, "ready.json", ready, sizeof(ready));
	tmpdir_file(&f->dir, "fakecc.log", log, sizeof(log));
	argv[n++] = "/usr/bin/python3";
	argv[n++] = script;
	argv[n++] = "--dir";
	argv[n++] = f->dir.path;
	argv[n++] = "--port";
	argv[n++] = "0";
	for (int i = 0; extra && extra[i] && n < 30; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	if (posix_spawn(&f->pid, argv[0], &fa, NULL, (char *const *)argv, environ) != 0) {
		perror("posix_spawn fakecc");
		abort();
	}
	posix_spawn_file_actions_destroy(&fa);
	/* Waiting for a subprocess to come up, not a timing assertion. */
	for (int i = 0; i < 3000; i++) {
		j = json_load_file(ready, 0, &je);
		if (j)
			break;
		if (waitpid(f->pid, &status, WNOHANG) == f->pid) {
			fprintf(stderr, "fakecc exited early; see %s\n", log);
			abort();
		}
		fake_sleep_ms(20);
	}
	if (!j) {
		fprintf(stderr, "fakecc did not become ready; see %s\n", log);
		abort();
	}
	f->port = (int)json_integer_value(json_object_get(j, "port"));
	snprintf(f->ca_file, sizeof(f->ca_file), "%s",
		 json_string_value(json_object_get(j, "ca_file")));
	snprintf(f->api_base, sizeof(f->api_base), "%s",
		 json_string_value(json_object_get(j, "api_base")));
	snprintf(f->auth_base, sizeof(f->auth_base), "%s",
		 json_string_value(json_object_get(j, "auth_base")));
	snprintf(f->base, sizeof(f->base), "https://127.0.0.1:%d", f->port);
	json_decref(j);
}

static inline void fake_stop(struct fake *f)
{
	int status;

	if (f->pid > 0) {
		kill(f->pid, SIGTERM);
		(void)waitpid(f->pid, &status, 0);
		f->pid = 0;
	}
	tmpdir_remove(&f->dir);
}

struct fake_buf {
	char *p;
	size_t n;
};

static size_t fake_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct fake_buf *b = ud;
	size_t k = size * nmemb;
	char *p = realloc(b->p, b->n + k + 1);

	if (!p)
		return 0;
	memcpy(p + b->n, ptr, k);
	b->p = p;
	b->n += k;
	b->p[b->n] = '\0';
	return k;
}

/* Blocking request to the fake; returns the HTTP status and the parsed body in *ret (or NULL). */
static inline long fake_call(struct fake *f, const char *method, const char *path,
			     const char *body, json_t **ret)
{
	struct fake_buf b = { 0 };
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	char url[1024];
	long status = 0;
	CURL *c = curl_easy_init();

	snprintf(url, sizeof(url), "%s%s", f->base, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CAINFO, f->ca_file);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fake_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
	if (body)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	if (ret)
		*ret = b.p ? json_loads(b.p, 0, NULL) : NULL;
	free(b.p);
	return status;
}

/* Like fake_call, but the call must succeed; returns the body (caller decrefs). */
static inline json_t *fake_ok(struct fake *f, const char *method, const char *path,
			      const char *body)
{
	json_t *j = NULL;
	long st = fake_call(f, method, path, body, &j);

	if (st < 200 || st >= 300) {
		char *d = j ? json_dumps(j, 0) : NULL;

		fprintf(stderr, "fakecc %s %s -> %ld %s\n", method, path, st, d ? d : "");
		free(d);
		abort();
	}
	return j;
}

/* Where a GET of url redirects to (not followed), into buf. Returns the HTTP status. */
static inline long fake_redirect(struct fake *f, const char *url, char *buf, size_t len)
{
	struct fake_buf b = { 0 };
	char *loc = NULL;
	long status = 0;
	CURL *c = curl_easy_init();

	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CAINFO, f->ca_file);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fake_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	buf[0] = '\0';
	if (curl_easy_perform(c) == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc)
			snprintf(buf, len, "%s", loc);
	}
	curl_easy_cleanup(c);
	free(b.p);
	return status;
}

/* Integer at a '/'-separated path inside a JSON object (missing = 0). */
static inline long long fake_int(json_t *j, const char *path)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *k = strtok_r(buf, "/", &save); k && j; k = strtok_r(NULL, "/", &save))
		j = json_object_get(j, k);
	return j ? json_integer_value(j) : 0;
}

/* Runs the loop until *done is set; a stuck test is reported, not waited for forever. */
static inline void fake_run_until(uv_loop_t *loop, const bool *done)
{
	time_t start = time(NULL);

	while (!*done) {
		if (!uv_run(loop, UV_RUN_ONCE) && !*done) {
			fprintf(stderr, "loop ran dry before the test's condition was met\n");
			abort();
		}
		if (time(NULL) - start > 240) {
			fprintf(stderr, "test stuck for 240 s\n");
			abort();
		}
	}
}

/* Runs the loop until nothing is left (after closing everything) and closes it. */
static inline int fake_loop_finish(uv_loop_t *loop)
{
	(void)uv_run(loop, UV_RUN_DEFAULT);
	return uv_loop_close(loop);
}
