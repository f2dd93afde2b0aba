/* SPDX-License-Identifier: MIT */
/* ccsyncctl import: a file sent to the daemon in acknowledged chunks. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ctl-internal.h"
#include "ctl-output.h"
#include "util.h"

static const char *guess_format(const char *path)
{
	const char *dot = strrchr(path, '.');

	if (!dot)
		return NULL;
	if (strcasecmp(dot, ".csv") == 0)
		return "csv";
	if (strcasecmp(dot, ".jsonl") == 0 || strcasecmp(dot, ".ndjson") == 0)
		return "jsonl";
	return NULL;
}

int ctl_cmd_import(struct ctl *ctl, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "segment", required_argument, NULL, 's' },
		{},
	};
	const char *format = NULL, *segment = NULL, *kind, *path;
	_cleanup_free_ unsigned char *buf = NULL;
	_cleanup_free_ char *segment_buf = NULL;
	_cleanup_close_ int fd = -1;
	bool tty = isatty(STDERR_FILENO);
	json_t *args, *res = NULL;
	int c, r;

	FOR_EACH_OPTION(argc, argv, "", opts, c) {
		if (c == 'f')
			format = optarg;
		else if (c == 's')
			segment = optarg;
		else
			return ctl_bad_option(NULL, "import", argv);
	}
	if (optind + 2 != argc)
		return ctl_usage(NULL, "import", "expected profiles|segment and FILE");
	kind = argv[optind];
	path = argv[optind + 1];
	if (!streq(kind, "profiles") && !streq(kind, "segment"))
		return ctl_usage(NULL, "import", "what to import must be \"profiles\" or "
				 "\"segment\", not \"%s\"", kind);
	if (!format)
		format = guess_format(path);
	if (!format)
		return ctl_usage(NULL, "import", "cannot tell the format of \"%s\" from its "
				 "name; give --format=csv or --format=jsonl", path);
	if (streq(kind, "segment") && !segment) {
		const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
		const char *dot = strrchr(base, '.');

		if (streq(path, "-"))
			return ctl_usage(NULL, "import", "--segment=NAME is required when reading "
					 "standard input");
		segment_buf = strndup(base, dot ? (size_t)(dot - base) : strlen(base));
		if (!segment_buf)
			return OOM();
		segment = segment_buf;
	}
	if (streq(kind, "profiles") && segment)
		return ctl_usage(NULL, "import", "--segment is only for \"import segment\"");
	fd = streq(path, "-") ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ctl_fail(errno == ENOENT ? CTLPROTO_EXIT_NOT_FOUND : CTLPROTO_EXIT_FAILED,
				"%s: %s", path, strerror(errno));
	buf = malloc(CTLPROTO_IMPORT_CHUNK);
	if (!buf)
		return OOM();

	args = json_pack("{s:s, s:s}", "kind", kind, "format", format);
	if (!args || (segment && ctl_set_str(args, "segment", segment) < 0)) {
		json_decref(args);
		return OOM();
	}
	r = ctl_call(ctl, "import", args, NULL, NULL, NULL);
	if (r != 0)
		return r;
	for (;;) {
		_cleanup_free_ char *b64 = NULL;
		ssize_t n = read(fd, buf, CTLPROTO_IMPORT_CHUNK);
		json_t *info = NULL;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return ctl_fail(CTLPROTO_EXIT_FAILED, "%s: %s (nothing was imported)", path,
					strerror(errno));
		if (n == 0)
			break;
		b64 = ctlproto_base64_encode(buf, (size_t)n);
		if (!b64)
			return OOM();
		/* One chunk at a time, each acknowledged: the daemon never buffers a file. */
		r = ctl_call(ctl, "import.data", json_pack("{s:s}", "data", b64), NULL, NULL,
			     &info);
		if (r != 0)
			return r;
		if (tty && !ctl->json) {
			char a[32];

			fprintf(stderr, "\r\033[Ksent %s bytes",
				count(jint(info, "bytes"), a, sizeof(a)));
			if (json_is_integer(json_object_get(info, "rows")))
				fprintf(stderr, ", %s rows",
					count(jint(info, "rows"), a, sizeof(a)));
		}
		json_decref(info);
	}
	if (tty && !ctl->json)
		fputc('\n', stderr);
	r = ctl_call(ctl, "import.end", NULL, NULL, NULL, &res);
	if (r != 0)
		return r;
	if (!ctl->json) {
		printf("Imported %s from %s:\n", kind, path);
		ctl_print_value(stdout, res, 2);
	}
	return ctl_print_result(ctl, res);
}
