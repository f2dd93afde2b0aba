/* SPDX-License-Identifier: MIT */
/* Email normalisation and validation: every rule, every reason, and the persistent identity. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "email.h"

static void assert_normalizes(const char *in, const char *want)
{
	char out[EMAIL_MAX_LENGTH + 1];
	size_t len = 0;
	enum email_reason r = email_normalize(in, strlen(in), out, &len);

	if (r != EMAIL_OK)
		fail_msg("'%s' refused: %s", in, email_reason_to_string(r));
	assert_string_equal(out, want);
	assert_int_equal(len, strlen(want));
}

static void assert_refused(const char *in, size_t len, enum email_reason want)
{
	char out[EMAIL_MAX_LENGTH + 1];
	size_t got_len = 12345;
	enum email_reason r;

	memset(out, 'Z', sizeof(out));
	r = email_normalize(in, len, out, &got_len);
	if (r != want)
		fail_msg("'%.*s': expected %s, got %s", (int)len, in, email_reason_to_string(want),
			 email_reason_to_string(r));
	/* A refusal leaves the outputs alone. */
	assert_int_equal(got_len, 12345);
	for (size_t i = 0; i < sizeof(out); i++)
		assert_int_equal(out[i], 'Z');
}

#define REFUSED(s, reason) assert_refused((s), strlen(s), (reason))

static void test_trims_and_lowercases(void **state)
{
	assert_normalizes("ann@example.org", "ann@example.org");
	assert_normalizes("  Ann@Example.ORG\t\r\n", "ann@example.org");
	assert_normalizes("\v\fBOB.Smith+News@Mail.Example.Co.UK ",
			  "bob.smith+news@mail.example.co.uk");
	/* No provider folding: dots and +tags stay (CC treats them as distinct addresses). */
	assert_normalizes("a.b+c@gmail.com", "a.b+c@gmail.com");
	assert_normalizes("A.B@GMAIL.COM", "a.b@gmail.com");
}

static void test_accepts_practical_addresses(void **state)
{
	static const char *const ok[] = {
		"a@b.co",
		"o'neil@example.ie",
		"first_last-x@sub-domain.example.com",
		"!#$%&'*+/=?^_`{|}~-@example.com",
		"user@xn--bcher-kva.de", /* an IDN in its ASCII form */
		"1234@123.example.com",	 /* digits in labels, not in the TLD */
		"x@a-b.c-d.io",
	};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_true(email_is_valid(ok[i]));
		assert_normalizes(ok[i], ok[i]);
	}
}

static void test_length_limit_is_50_bytes(void **state)
{
	char s[64];

	/* 38 + "@example.com" (12) = 50: the largest accepted. */
	memset(s, 'a', 38);
	strcpy(s + 38, "@example.com");
	assert_int_equal(strlen(s), 50);
	assert_normalizes(s, s);
	/* One more: too long. Trimmed whitespace does not count. */
	memset(s, 'a', 39);
	strcpy(s + 39, "@example.com");
	REFUSED(s, EMAIL_TOO_LONG);
	memset(s, 'a', 38);
	strcpy(s + 38, "@example.com   ");
	assert_true(email_is_valid(s));
}

static void test_every_reason(void **state)
{
	REFUSED("", EMAIL_EMPTY);
	REFUSED(" \t\r\n", EMAIL_EMPTY);
	REFUSED("jö@example.com", EMAIL_NON_ASCII);
	REFUSED("user@bücher.de", EMAIL_NON_ASCII);
	REFUSED("a b@example.com", EMAIL_BAD_CHARACTER);
	REFUSED("a\x01@example.com", EMAIL_BAD_CHARACTER);
	REFUSED("a(b)@example.com", EMAIL_BAD_CHARACTER);
	REFUSED("\"a b\"@example.com", EMAIL_BAD_CHARACTER);
	REFUSED("a@exa_mple.com", EMAIL_BAD_CHARACTER);
	REFUSED("a@[192.0.2.1]", EMAIL_BAD_CHARACTER);
	REFUSED("a@exa\x7fmple.com", EMAIL_BAD_CHARACTER);
	REFUSED("example.com", EMAIL_NO_AT);
	REFUSED("a@b@example.com", EMAIL_MULTIPLE_AT);
	REFUSED("@example.com", EMAIL_LOCAL_EMPTY);
	REFUSED(".a@example.com", EMAIL_LOCAL_DOTS);
	REFUSED("a.@example.com", EMAIL_LOCAL_DOTS);
	REFUSED("a..b@example.com", EMAIL_LOCAL_DOTS);
	REFUSED("a@", EMAIL_DOMAIN_EMPTY);
	REFUSED("a@localhost", EMAIL_DOMAIN_NO_DOT);
	REFUSED("a@.example.com", EMAIL_DOMAIN_LABEL);
	REFUSED("a@example..com", EMAIL_DOMAIN_LABEL);
	REFUSED("a@example.com.", EMAIL_DOMAIN_LABEL);
	REFUSED("a@-example.com", EMAIL_DOMAIN_HYPHEN);
	REFUSED("a@example-.com", EMAIL_DOMAIN_HYPHEN);
	REFUSED("a@example.c-", EMAIL_DOMAIN_HYPHEN);
	REFUSED("a@192.0.2.1", EMAIL_DOMAIN_TLD);
	REFUSED("a@example.123", EMAIL_DOMAIN_TLD);
}

static void test_embedded_nul_refused(void **state)
{
	static const char s[] = "a\0b@example.com";

	assert_refused(s, sizeof(s) - 1, EMAIL_BAD_CHARACTER);
	/* Input need not be terminated: only len bytes are read. */
	assert_int_equal(email_normalize("a@b.co@@@", 6, NULL, NULL), EMAIL_OK);
}

static void test_reason_strings(void **state)
{
	for (int i = 0; i < _EMAIL_REASON_MAX; i++) {
		const char *code = email_reason_to_string(i), *text = email_reason_describe(i);

		assert_non_null(code);
		assert_non_null(text);
		assert_true(strlen(text) > 10);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(code, email_reason_to_string(j));
	}
	assert_null(email_reason_to_string(_EMAIL_REASON_MAX));
	assert_null(email_reason_describe(-1));
	assert_string_equal(email_reason_to_string(EMAIL_TOO_LONG), "too_long");
}

static void test_idempotent(void **state)
{
	static const char *const in[] = { " Mixed.Case+Tag@Example.Org ", "x@Y.z1", "A@B.CO" };

	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char once[EMAIL_MAX_LENGTH + 1], twice[EMAIL_MAX_LENGTH + 1];
		size_t n1, n2;

		assert_int_equal(email_normalize(in[i], strlen(in[i]), once, &n1), EMAIL_OK);
		assert_int_equal(email_normalize(once, n1, twice, &n2), EMAIL_OK);
		assert_string_equal(once, twice);
		assert_int_equal(n1, n2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trims_and_lowercases),
		cmocka_unit_test(test_accepts_practical_addresses),
		cmocka_unit_test(test_length_limit_is_50_bytes),
		cmocka_unit_test(test_every_reason),
		cmocka_unit_test(test_embedded_nul_refused),
		cmocka_unit_test(test_reason_strings),
		cmocka_unit_test(test_idempotent),
	};
	return cmocka_run_group_tests_name("email", tests, NULL, NULL);
}
