/* SPDX-License-Identifier: MIT */
/*
 * ccsyncctl: the operator's command line. It speaks the control protocol (lib/ctlproto) to
 * ccsyncd over its UNIX socket; it never opens the database itself, so every change goes through
 * the daemon's access checks and audit log. This file handles the global options and picks the
 * command; the commands live in ctl-commands.c (the table of verbs) and ctl-<domain>.c.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "ctl-commands.h"
#include "util.h"

static void help(void)
{
	const char *group = "";

	printf("Usage: ccsyncctl [--socket=PATH] [--json] COMMAND [ARGS...]\n"
	       "\n"
	       "Controls ccsyncd, the segment-to-Constant-Contact export daemon.\n"
	       "\n"
	       "Commands:\n");
	for (size_t i = 0; i < ctl_n_verbs; i++) {
		const struct ctl_verb *v = &ctl_verbs[i];

		if (v->group && !streq(group, v->group))
			group = v->group;
		char cmd[64];

		snprintf(cmd, sizeof cmd, "%s%s%s", v->group ? v->group : "", v->group ? " " : "",
			 v->name);
		printf("  %-20s  %s\n", cmd, v->summary ? v->summary : "");
	}
	printf("\n"
	       "Options:\n"
	       "  -s, --socket=PATH   control socket (default %s)\n"
	       "      --json          machine-readable output (allowed anywhere on the line)\n"
	       "  -h, --help          show this help; COMMAND --help shows the command's\n"
	       "      --version       show the version\n"
	       "\n"
	       "Exit status: 0 ok, 1 failed, 2 usage or invalid argument, 3 not found,\n"
	       "4 permission denied, 5 conflict/busy/precondition not met, 69 ccsyncd "
	       "unreachable.\n"
	       "See ccsyncctl(1).\n",
	       CCSYNC_DEFAULT_SOCKET);
}

static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (streq(argv[i], "--"))
			return false;
		if (streq(argv[i], "--help") || streq(argv[i], "-h"))
			return true;
	}
	return false;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{},
	};
	const char *socket_path = getenv("CCSYNC_SOCKET") ?: CCSYNC_DEFAULT_SOCKET;
	const struct ctl_verb *verb;
	bool json = false;
	struct ctl ctl;
	int c, n, r;

	/* --json may come anywhere ("ccsyncctl export list --json"): take it out first. */
	n = 1;
	for (int i = 1; i < argc; i++) {
		if (streq(argv[i], "--"))
			for (; i < argc; i++)
				argv[n++] = argv[i];
		else if (streq(argv[i], "--json"))
			json = true;
		else
			argv[n++] = argv[i];
		if (i >= argc)
			break;
	}
	argc = n;
	argv[argc] = NULL;

	/* "+": stop at the command, whose own options follow. */
	while ((c = getopt_long(argc, argv, "+s:h", options, NULL)) >= 0) {
		switch (c) {
		case 's':
			socket_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			help();
			return 0;
		case 'V':
			printf("ccsyncctl %s (control protocol version %d)\n", CCSYNC_VERSION,
			       CTLPROTO_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'ccsyncctl --help'.\n");
			return CTLPROTO_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "ccsyncctl: no command given; try 'ccsyncctl --help'\n");
		return CTLPROTO_EXIT_USAGE;
	}
	verb = ctl_find_verb(NULL, argv[optind]);
	if (!verb && optind + 1 < argc && !streq(argv[optind + 1], "--help") &&
	    !streq(argv[optind + 1], "-h")) {
		verb = ctl_find_verb(argv[optind], argv[optind + 1]);
		if (verb)
			optind++;
	}
	if (!verb) {
		bool group = false;

		for (size_t i = 0; i < ctl_n_verbs; i++)
			group = group || streq_ptr(ctl_verbs[i].group, argv[optind]);
		if (group) {
			printf("Usage: ccsyncctl %s VERB ...\n\nVerbs:\n", argv[optind]);
			for (size_t i = 0; i < ctl_n_verbs; i++)
				if (streq_ptr(ctl_verbs[i].group, argv[optind]))
					printf("  %s %s\n", ctl_verbs[i].name,
					       ctl_verbs[i].synopsis);
			return wants_help(argc, argv) ? 0 : CTLPROTO_EXIT_USAGE;
		}
		fprintf(stderr, "ccsyncctl: unknown command \"%s\"; try 'ccsyncctl --help'\n",
			argv[optind]);
		return CTLPROTO_EXIT_USAGE;
	}
	if (wants_help(argc - optind, argv + optind)) {
		ctl_verb_help(verb);
		return 0;
	}
	/* A daemon that hangs up must not kill us before we have said why. */
	signal(SIGPIPE, SIG_IGN);
	ctl_init(&ctl, socket_path);
	ctl.json = json;
	r = verb->run(&ctl, argc - optind, argv + optind);
	ctl_done(&ctl);
	fflush(stdout);
	return r;
}
