/* SPDX-License-Identifier: MIT */
/* Configuration: defaults, every key type, and one precise error per kind of mistake. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <syslog.h>
#include <cmocka.h>

#include "config.h"
#include "test-helpers.h"

static void test_defaults(void **state)
{
	struct config c;
	char err[256];

	(void)state;
	config_init(&c);
	assert_string_equal(c.database, "/var/lib/ccsync/ccsync.db");
	assert_string_equal(c.control_socket, "/run/ccsync/control.sock");
	assert_string_equal(c.admin_group, "ccsync-admin");
	assert_string_equal(c.contributor_group, "ccsync");
	assert_int_equal(c.max_profiles_per_export, 1000000);
	assert_true(c.mirror_max_remove_share > 0.0999 && c.mirror_max_remove_share < 0.1001);
	assert_int_equal(c.batch_max_contacts, 40000);
	assert_int_equal(c.batch_max_bytes, 4000000);
	assert_int_equal(c.daily_request_budget, 10000);
	assert_string_equal(c.default_schedule, "0 2 * * *");
	assert_true(c.catch_up);
	assert_int_equal(config_validate(&c, err, sizeof(err)), 0);
}

static void test_all_types_parse(void **state)
{
	struct config c;
	char err[256] = "";
	static const char text[] =
		"# comment\n"
		"[daemon]\n"
		"database = /srv/cc.db\n"
		"log_level = debug\n"
		"max_concurrent_runs = 8\n"
		"[schedule]\n"
		"default = 30 1 * * 1-5\n"
		"time_zone = Europe/Rome\n"
		"catch_up = no\n"
		"[export]\n"
		"max_profiles_per_export = 2000000\n"
		"mirror_max_remove_share = 0.25\n"
		"[constant_contact]\n"
		"requests_per_second = 10\n"
		"ca_file = /tmp/ca.pem\n";

	(void)state;
	config_init(&c);
	assert_int_equal(config_load_string(&c, text, "t.conf", err, sizeof(err)), 0);
	assert_string_equal(c.database, "/srv/cc.db");
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.max_concurrent_runs, 8);
	assert_string_equal(c.default_schedule, "30 1 * * 1-5");
	assert_string_equal(c.time_zone, "Europe/Rome");
	assert_false(c.catch_up);
	assert_int_equal(c.max_profiles_per_export, 2000000);
	assert_true(c.mirror_max_remove_share > 0.2499 && c.mirror_max_remove_share < 0.2501);
	assert_true(c.requests_per_second > 9.99 && c.requests_per_second < 10.01);
	assert_string_equal(c.ca_file, "/tmp/ca.pem");
	/* Untouched keys keep their defaults. */
	assert_int_equal(c.batch_max_contacts, 40000);
}

struct bad_case {
	const char *text;
	const char *expect; /* fragment of the one-line error */
};

static void test_bad_configs(void **state)
{
	static const struct bad_case cases[] = {
		{ "[daemon]\nbogus = 1\n", "t.conf:2: [daemon] bogus: unknown key" },
		{ "[nosuch]\nkey = 1\n", "t.conf:2: [nosuch] key: unknown key" },
		{ "[daemon]\nmax_concurrent_runs = 0\n", "t.conf:2: [daemon] max_concurrent_runs: \"0\" is not a whole number from 1 to 64" },
		{ "[daemon]\nmax_concurrent_runs = 12abc\n", "t.conf:2: [daemon] max_concurrent_runs: \"12abc\"" },
		{ "[daemon]\nmax_concurrent_runs = -3\n", "max_concurrent_runs: \"-3\"" },
		{ "[daemon]\nmax_concurrent_runs = 99999999999999999999\n", "max_concurrent_runs" },
		{ "[export]\nmirror_max_remove_share = 1.5\n", "t.conf:2: [export] mirror_max_remove_share: \"1.5\" is not a number from 0 to 1" },
		{ "[export]\nmirror_max_remove_share = nan\n", "mirror_max_remove_share: \"nan\"" },
		{ "[schedule]\ncatch_up = maybe\n", "t.conf:2: [schedule] catch_up: \"maybe\" is not a boolean" },
		{ "[daemon]\nlog_level = loud\n", "t.conf:2: [daemon] log_level: \"loud\" is not a log level" },
		{ "[daemon]\n\n\nthis line is wrong\n", "t.conf:4: syntax error" },
		{ "[daemon\nx=1\n", "t.conf:1: syntax error" },
		{ "\n[constant_contact]\nrequests_per_second = fast\n", "t.conf:3: [constant_contact] requests_per_second" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config c;
		char err[512] = "";

		config_init(&c);
		assert_int_equal(config_load_string(&c, cases[i].text, "t.conf", err, sizeof(err)),
				 -EINVAL);
		if (!strstr(err, cases[i].expect))
			fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, cases[i].expect);
		assert_null(strchr(err, '\n'));
	}
}

static void test_too_long_value(void **state)
{
	struct config c;
	char err[512] = "";
	char text[400];

	(void)state;
	snprintf(text, sizeof(text), "[daemon]\nadmin_group = %0100d\n", 7);
	config_init(&c);
	assert_int_equal(config_load_string(&c, text, "t.conf", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "t.conf:2: [daemon] admin_group: value too long (at most 63 bytes)"));
	assert_string_equal(c.admin_group, "ccsync-admin");

	/* A line longer than the parser's buffer is refused, not split into two lines. */
	char longline[600];
	snprintf(longline, sizeof(longline), "[daemon]\ndatabase = /%0400d\n", 1);
	assert_int_equal(config_load_string(&c, longline, "t.conf", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "t.conf:2: line too long"));
}

static void test_cross_field_validation(void **state)
{
	struct config c;
	char err[512] = "";

	(void)state;
	config_init(&c);
	c.poll_initial_ms = 60000;
	c.poll_max_ms = 1000;
	assert_int_equal(config_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "poll_initial_ms"));

	config_init(&c);
	snprintf(c.api_base, sizeof(c.api_base), "http://api.example");
	assert_int_equal(config_validate(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "https://"));

	config_init(&c);
	snprintf(c.database, sizeof(c.database), "relative.db");
	assert_int_equal(config_validate(&c, err, sizeof(err)), -EINVAL);
}

static void test_file_errors(void **state)
{
	struct tmpdir t;
	struct config c;
	char path[PATH_MAX], err[512] = "";
	FILE *f;

	(void)state;
	tmpdir_make(&t);
	tmpdir_file(&t, "missing.conf", path, sizeof(path));
	config_init(&c);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, path));

	tmpdir_file(&t, "bad.conf", path, sizeof(path));
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[history]\nrun_retention_days = 30\nrejected_retention_days = x\n", f);
	fclose(f);
	assert_int_equal(config_load(&c, path, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, ":3: [history] rejected_retention_days"));
	assert_non_null(strstr(err, path));
	tmpdir_remove(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_all_types_parse),
		cmocka_unit_test(test_bad_configs),
		cmocka_unit_test(test_too_long_value),
		cmocka_unit_test(test_cross_field_validation),
		cmocka_unit_test(test_file_errors),
	};
	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
