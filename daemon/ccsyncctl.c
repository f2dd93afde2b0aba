/* SPDX-License-Identifier: MIT */
/*
 * ccsyncctl: the operator's command line. It speaks the control protocol (lib/ctlproto) to
 * ccsyncd over its UNIX socket; it never opens the database itself, so every change goes through
 * the daemon's access checks and audit log.
 */
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "build-config.h"

static void help(void)
{
	printf("Usage: ccsyncctl [--socket=PATH] [--json] COMMAND [ARGS...]\n"
	       "\n"
	       "Controls ccsyncd, the segment-to-Constant-Contact export daemon.\n"
	       "\n"
	       "Options:\n"
	       "  -s, --socket=PATH   control socket (default %s)\n"
	       "  -h, --help          show this help\n"
	       "      --version       show the version\n",
	       CCSYNC_DEFAULT_SOCKET);
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--version") == 0) {
		printf("ccsyncctl %s\n", CCSYNC_VERSION);
		return 0;
	}
	if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		help();
		return 0;
	}
	fprintf(stderr, "ccsyncctl: no command given; try 'ccsyncctl --help'\n");
	return EX_USAGE;
}
