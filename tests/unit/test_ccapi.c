/* SPDX-License-Identifier: MIT */
/*
 * Constant Contact wire format: the import encoder (exact bytes, limits, escaping, UTF-8), request
 * bodies, OAuth helpers against published test vectors, and every response parser, including
 * hostile and malformed inputs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ccapi.h"
#include "utf8.h"
#include "util.h"

#define L1 "04fe9a97-a579-43c5-bb1a-58ed29bf0a6a"
#define L2 "11111111-2222-3333-4444-555555555555"
#define A1 "4e1b9b6e-6a0b-11ee-8c99-0242ac120002"
#define NOW INT64_C(1700000000)

static json_t *load(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);

	if (!j)
		fail_msg("bad test JSON: %s", e.text);
	return j;
}

static struct ccapi_import *begin1(uint32_t max_contacts, uint32_t max_bytes)
{
	const char *ids[] = { L1 };
	struct ccapi_import *b = NULL;
	char err[256];

	assert_int_equal(ccapi_import_begin(ids, 1, max_contacts, max_bytes, &b, err, sizeof(err)),
			 0);
	return b;
}

static void test_ids_and_utf8(void **state)
{
	(void)state;
	assert_true(ccapi_id_valid(L1));
	assert_true(ccapi_id_valid("ABCDEF01-2345-6789-abcd-ef0123456789"));
	assert_false(ccapi_id_valid("04fe9a97-a579-43c5-bb1a-58ed29bf0a6"));
	assert_false(ccapi_id_valid("04fe9a97-a579-43c5-bb1a-58ed29bf0a6aa"));
	assert_false(ccapi_id_valid("04fe9a97_a579-43c5-bb1a-58ed29bf0a6a"));
	assert_false(ccapi_id_valid("04fe9a97-a579-43c5-bb1a-58ed29bf0a6g"));
	assert_false(ccapi_id_valid(NULL));
	assert_true(utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 16));
	assert_false(utf8_valid("\xc0\xaf", 2));		/* overlong '/' */
	assert_false(utf8_valid("\xe0\x80\xaf", 3));	/* overlong */
	assert_false(utf8_valid("\xed\xa0\x80", 3));	/* surrogate */
	assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
	assert_false(utf8_valid("\xc3", 1));		/* truncated */
	assert_false(utf8_valid("\x80", 1));		/* stray continuation */
	assert_false(utf8_valid("\xff", 1));
	assert_true(utf8_valid("\xf4\x8f\xbf\xbf", 4));	/* U+10FFFF */
}

static void test_import_exact_body(void **state)
{
	const char *ids[] = { L1, L2 };
	struct ccapi_field extra[] = {
		{ "job_title", "CEO \"quoted\" \\ back" },
		{ "cf:tier", "gold\n\t\x01" },
		{ "birthday_month", "7" },
		{ "birthday_day", "31" },
		{ "city", "" },	     /* empty: left out */
		{ "company_name", NULL }, /* absent: left out */
	};
	struct ccapi_import *b = NULL;
	char err[256], *body = NULL;
	size_t len = 0, predicted;

	(void)state;
	assert_int_equal(ccapi_import_begin(ids, 2, 40000, 4000000, &b, err, sizeof(err)), 0);
	assert_int_equal(ccapi_import_add(b, "ann@example.com", "Ann", "L\xc3\xa9" "e", extra,
					  ELEMENTSOF(extra), err, sizeof(err)), 0);
	assert_int_equal(ccapi_import_add(b, "bo@example.com", NULL, "", NULL, 0, err, sizeof(err)),
			 0);
	assert_int_equal(ccapi_import_count(b), 2);
	predicted = ccapi_import_size(b);
	assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
	assert_int_equal(len, predicted);
	assert_int_equal(strlen(body), len);
	assert_string_equal(body,
		"{\"import_data\":[{\"email\":\"ann@example.com\",\"first_name\":\"Ann\","
		"\"last_name\":\"L\xc3\xa9" "e\",\"job_title\":\"CEO \\\"quoted\\\" \\\\ back\","
		"\"cf:tier\":\"gold\\n\\t\\u0001\",\"birthday_month\":7,\"birthday_day\":31},"
		"{\"email\":\"bo@example.com\"}],"
		"\"list_ids\":[\"" L1 "\",\"" L2 "\"]}");
	/* It is JSON, and decodes to what went in. */
	{
		json_t *j = load(body);
		json_t *c0 = json_array_get(json_object_get(j, "import_data"), 0);

		assert_string_equal(json_string_value(json_object_get(c0, "cf:tier")),
				    "gold\n\t\x01");
		assert_string_equal(json_string_value(json_object_get(c0, "job_title")),
				    "CEO \"quoted\" \\ back");
		assert_int_equal(json_integer_value(json_object_get(c0, "birthday_month")), 7);
		json_decref(j);
	}
	free(body);
	/* The encoder is reusable and empty after finish. */
	assert_int_equal(ccapi_import_count(b), 0);
	assert_int_equal(ccapi_import_finish(b, &body, &len), -ENODATA);
	assert_int_equal(ccapi_import_add(b, "c@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
	assert_string_equal(body, "{\"import_data\":[{\"email\":\"c@example.com\"}],"
				  "\"list_ids\":[\"" L1 "\",\"" L2 "\"]}");
	free(body);
	ccapi_import_free(b);
}

static void test_import_bad_input_changes_nothing(void **state)
{
	struct ccapi_import *b = begin1(40000, 4000000);
	struct ccapi_field bad_key[] = { { "favourite_colour", "red" } };
	struct ccapi_field bad_utf8[] = { { "job_title", "bad \xc0\xaf" } };
	struct ccapi_field bad_day[] = { { "birthday_day", "32" } };
	struct ccapi_field bad_month[] = { { "birthday_month", "7x" } };
	struct ccapi_field dup_email[] = { { "email", "x@example.com" } };
	struct ccapi_field long_cf[] = { { "cf:notes", NULL } };
	char fifty[51], err[256], *body;
	char cf[300];
	size_t size0, len;

	(void)state;
	assert_int_equal(ccapi_import_add(b, "a@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	size0 = ccapi_import_size(b);
	assert_int_equal(ccapi_import_add(b, "", NULL, NULL, NULL, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(ccapi_import_add(b, NULL, NULL, NULL, NULL, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(ccapi_import_add(b, "b@example.com", NULL, NULL, bad_key, 1, err,
					  sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "favourite_colour"));
	assert_int_equal(ccapi_import_add(b, "b@example.com", NULL, NULL, bad_utf8, 1, err,
					  sizeof(err)), -EILSEQ);
	assert_null(strstr(err, "bad")); /* the value is not echoed */
	assert_int_equal(ccapi_import_add(b, "b\xff@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), -EILSEQ);
	assert_int_equal(ccapi_import_add(b, "b@example.com", "\xed\xa0\x80", NULL, NULL, 0, err,
					  sizeof(err)), -EILSEQ);
	assert_int_equal(ccapi_import_add(b, "b@example.com", NULL, NULL, bad_day, 1, err,
					  sizeof(err)), -EINVAL);
	assert_int_equal(ccapi_import_add(b, "b@example.com", NULL, NULL, bad_month, 1, err,
					  sizeof(err)), -EINVAL);
	assert_int_equal(ccapi_import_add(b, "b@example.com", NULL, NULL, dup_email, 1, err,
					  sizeof(err)), -EINVAL);
	/* Length limits count characters, not bytes: 50 two-byte characters fit. */
	memset(fifty, 'a', 50);
	fifty[50] = '\0';
	{
		char name[101], name51[103];

		for (int i = 0; i < 50; i++)
			memcpy(name + 2 * i, "\xc3\xa9", 2);
		name[100] = '\0';
		memcpy(name51, name, 100);
		memcpy(name51 + 100, "\xc3\xa9", 3);
		assert_int_equal(ccapi_import_add(b, "n@example.com", name, NULL, NULL, 0, err,
						  sizeof(err)), 0);
		size0 = ccapi_import_size(b);
		assert_int_equal(ccapi_import_add(b, "n2@example.com", name51, NULL, NULL, 0, err,
						  sizeof(err)), -EMSGSIZE);
	}
	{
		char email51[64];

		snprintf(email51, sizeof(email51), "%s@x.example", fifty); /* 60 chars */
		assert_int_equal(ccapi_import_add(b, email51, NULL, NULL, NULL, 0, err,
						  sizeof(err)), -EMSGSIZE);
	}
	memset(cf, 'x', 256);
	cf[256] = '\0';
	long_cf[0].value = cf;
	assert_int_equal(ccapi_import_add(b, "b@example.com", NULL, NULL, long_cf, 1, err,
					  sizeof(err)), -EMSGSIZE);
	assert_int_equal(ccapi_import_count(b), 2);
	assert_int_equal(ccapi_import_size(b), size0);
	assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
	json_decref(load(body));
	free(body);
	ccapi_import_free(b);
}

static void test_import_count_limit(void **state)
{
	struct ccapi_import *b = begin1(3, 4000000);
	char err[256], email[32], *body;
	size_t len;

	(void)state;
	for (int i = 0; i < 3; i++) {
		snprintf(email, sizeof(email), "u%d@example.com", i);
		assert_int_equal(ccapi_import_add(b, email, NULL, NULL, NULL, 0, err, sizeof(err)),
				 0);
	}
	assert_int_equal(ccapi_import_add(b, "u3@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), -ENOSPC);
	assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
	free(body);
	assert_int_equal(ccapi_import_add(b, "u3@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	ccapi_import_free(b);
}

static void test_import_byte_limit_is_exact(void **state)
{
	/* Body of one contact "x@example.com": measure it, then allow exactly that many bytes. */
	struct ccapi_import *probe = begin1(40000, 4000000), *b;
	char err[256], *body;
	size_t one, two, len;

	(void)state;
	assert_int_equal(ccapi_import_add(probe, "x@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	one = ccapi_import_size(probe);
	assert_int_equal(ccapi_import_add(probe, "y@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	two = ccapi_import_size(probe);
	ccapi_import_free(probe);

	b = begin1(40000, (uint32_t)two);
	assert_int_equal(ccapi_import_add(b, "x@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	assert_int_equal(ccapi_import_add(b, "y@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	assert_int_equal(ccapi_import_size(b), two);
	assert_int_equal(ccapi_import_add(b, "z@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), -ENOSPC);
	assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
	assert_int_equal(len, two);
	free(body);
	ccapi_import_free(b);

	b = begin1(40000, (uint32_t)two - 1);
	assert_int_equal(ccapi_import_add(b, "x@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), 0);
	assert_int_equal(ccapi_import_add(b, "y@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), -ENOSPC);
	ccapi_import_free(b);

	/* A contact that cannot fit even alone is -E2BIG, not -ENOSPC (which would loop). */
	b = begin1(40000, (uint32_t)one - 1);
	assert_int_equal(ccapi_import_add(b, "x@example.com", NULL, NULL, NULL, 0, err,
					  sizeof(err)), -E2BIG);
	assert_int_equal(ccapi_import_count(b), 0);
	ccapi_import_free(b);
}

static void test_import_begin_errors(void **state)
{
	const char *bad[] = { "not-a-uuid" };
	const char *many[51];
	struct ccapi_import *b = NULL;
	char err[256];

	(void)state;
	assert_int_equal(ccapi_import_begin(bad, 1, 10, 10000, &b, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "list id #1"));
	assert_int_equal(ccapi_import_begin(bad, 0, 10, 10000, &b, err, sizeof(err)), -EINVAL);
	for (int i = 0; i < 51; i++)
		many[i] = L1;
	assert_int_equal(ccapi_import_begin(many, 51, 10, 10000, &b, err, sizeof(err)), -EINVAL);
	assert_null(b);
	assert_int_equal(ccapi_import_begin(many, 50, 10, 10000, &b, err, sizeof(err)), 0);
	ccapi_import_free(b);
}

static void test_import_keys(void **state)
{
	(void)state;
	assert_int_equal(ccapi_import_key_valid("job_title"), 50);
	assert_int_equal(ccapi_import_key_valid("home_street"), 255);
	assert_int_equal(ccapi_import_key_valid("home country"), 50);
	assert_int_equal(ccapi_import_key_valid("sms_number"), 16);
	assert_int_equal(ccapi_import_key_valid("cf:tier"), 255);
	assert_true(ccapi_import_key_valid("birthday_day") > 0);
	assert_int_equal(ccapi_import_key_valid("cf:"), -EINVAL);
	assert_int_equal(ccapi_import_key_valid("cf:a\"b"), -EINVAL);
	assert_int_equal(ccapi_import_key_valid("Job_Title"), -EINVAL);
	assert_int_equal(ccapi_import_key_valid("custom"), -EINVAL);
	assert_int_equal(ccapi_import_key_valid(NULL), -EINVAL);
}

static double cpu_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * One million realistic contacts split into batches: no batch over either limit, every contact
 * in exactly one batch, and the encoder's CPU time printed (not asserted: shared machines). The
 * test data is generated first so that only the encoder is timed.
 */
#define MILLION 1000000

static void test_import_million(void **state)
{
	struct ccapi_import *b = begin1(40000, 4000000);
	struct ccapi_field extra[2] = { { "job_title", NULL }, { "cf:tier", "gold" } };
	size_t total = 0, batches = 0, max_len = 0, max_count = 0, bytes = 0, len;
	char *emails = malloc((size_t)MILLION * 40), *firsts = malloc((size_t)MILLION * 16);
	char err[256], *body;
	double t0, spent = 0;

	(void)state;
	assert_non_null(emails);
	assert_non_null(firsts);
	for (int i = 0; i < MILLION; i++) {
		snprintf(emails + (size_t)i * 40, 40, "customer.%07d@example-shop.com", i);
		snprintf(firsts + (size_t)i * 16, 16, "Zo\xc3\xab%d", i % 1000);
	}
	t0 = cpu_seconds();
	for (int i = 0; i < MILLION; i++) {
		const char *email = emails + (size_t)i * 40, *first = firsts + (size_t)i * 16;
		int r;

		extra[0].value = i % 7 ? "Buyer" : "Head \"of\" stuff";
		r = ccapi_import_add(b, email, first, "M\xc3\xbcller", extra, 2, err, sizeof(err));
		if (r == -ENOSPC) {
			size_t n = ccapi_import_count(b);

			assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
			spent += cpu_seconds() - t0;
			if (len > max_len)
				max_len = len;
			if (n > max_count)
				max_count = n;
			total += n;
			bytes += len;
			batches++;
			if (batches == 1) {
				json_t *j = load(body);

				assert_int_equal(json_array_size(json_object_get(j, "import_data")),
						 n);
				json_decref(j);
			}
			free(body);
			t0 = cpu_seconds();
			r = ccapi_import_add(b, email, first, "M\xc3\xbcller", extra, 2, err,
					     sizeof(err));
		}
		assert_int_equal(r, 0);
	}
	total += ccapi_import_count(b);
	assert_int_equal(ccapi_import_finish(b, &body, &len), 0);
	spent += cpu_seconds() - t0;
	bytes += len;
	batches++;
	free(body);
	free(emails);
	free(firsts);
	assert_int_equal(total, MILLION);
	assert_true(max_len <= 4000000);
	assert_true(max_count <= 40000);
	printf("# import encoder: %d contacts (email, first, last, job_title, cf:tier), "
	       "%zu batches, %zu bytes, largest %zu bytes / %zu contacts, %.3f s CPU\n",
	       MILLION, batches, bytes, max_len, max_count, spent);
	ccapi_import_free(b);
}

static void test_remove_body(void **state)
{
	const char *ids[501];
	const char *lists[] = { L2 };
	char err[256], *body = NULL;
	size_t len = 0;

	(void)state;
	for (int i = 0; i < 501; i++)
		ids[i] = A1;
	assert_int_equal(ccapi_remove_body(ids, 2, lists, 1, &body, &len, err, sizeof(err)), 0);
	assert_string_equal(body, "{\"source\":{\"contact_ids\":[\"" A1 "\",\"" A1 "\"]},"
				  "\"list_ids\":[\"" L2 "\"]}");
	assert_int_equal(len, strlen(body));
	free(body);
	assert_int_equal(ccapi_remove_body(ids, 500, lists, 1, &body, &len, err, sizeof(err)), 0);
	json_decref(load(body));
	free(body);
	body = NULL;
	assert_int_equal(ccapi_remove_body(ids, 501, lists, 1, &body, &len, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(ccapi_remove_body(ids, 0, lists, 1, &body, &len, err, sizeof(err)),
			 -EINVAL);
	ids[3] = "nope";
	assert_int_equal(ccapi_remove_body(ids, 4, lists, 1, &body, &len, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "#4"));
	assert_null(body);
}

static void test_form_and_basic(void **state)
{
	char *form = NULL, *esc, *basic;

	(void)state;
	assert_int_equal(ccapi_form_add(&form, "grant_type", "refresh_token"), 0);
	assert_int_equal(ccapi_form_add(&form, "scope", "contact_data offline_access"), 0);
	assert_int_equal(ccapi_form_add(&form, "x", "a&b=c/\xc3\xa9~"), 0);
	assert_string_equal(form, "grant_type=refresh_token&scope=contact_data%20offline_access"
				  "&x=a%26b%3Dc%2F%C3%A9~");
	free(form);
	esc = ccapi_url_escape("");
	assert_string_equal(esc, "");
	free(esc);
	basic = ccapi_basic_auth("test-client", "test-secret");
	assert_string_equal(basic, "Basic dGVzdC1jbGllbnQ6dGVzdC1zZWNyZXQ=");
	free(basic);
	/* RFC 6749 2.3.1: the parts are form-encoded first ("a:b" -> "a%3Ab"). */
	basic = ccapi_basic_auth("a:b", "c");
	assert_string_equal(basic, "Basic YSUzQWI6Yw==");
	free(basic);
}

static void hex(const uint8_t *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_sha256_and_pkce(void **state)
{
	uint8_t d[32];
	char h[65], ch[CCAPI_PKCE_CHALLENGE_LEN + 1];
	char *million = malloc(1000000);

	(void)state;
	ccapi_sha256("", 0, d);
	hex(d, 32, h);
	assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	ccapi_sha256("abc", 3, d);
	hex(d, 32, h);
	assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	ccapi_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, d);
	hex(d, 32, h);
	assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	assert_non_null(million);
	memset(million, 'a', 1000000);
	ccapi_sha256(million, 1000000, d);
	hex(d, 32, h);
	assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(million);
	/* RFC 7636 appendix B */
	ccapi_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", ch);
	assert_string_equal(ch, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void test_random_token(void **state)
{
	char a[CCAPI_PKCE_VERIFIER_LEN + 1], b[CCAPI_PKCE_VERIFIER_LEN + 1];

	(void)state;
	assert_int_equal(ccapi_random_token(a, CCAPI_PKCE_VERIFIER_LEN), 0);
	assert_int_equal(ccapi_random_token(b, CCAPI_PKCE_VERIFIER_LEN), 0);
	assert_int_equal(strlen(a), CCAPI_PKCE_VERIFIER_LEN);
	assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				   "0123456789-._~"), CCAPI_PKCE_VERIFIER_LEN);
	assert_string_not_equal(a, b);
}

static void test_authorize_url_and_redirect(void **state)
{
	char *url = NULL, *code = NULL, err[256];

	(void)state;
	assert_int_equal(ccapi_authorize_url("https://auth.example/oauth2/default/v1", "cid",
					     "https://localhost/cb?x=1", "st4te", "CHAL", &url, err,
					     sizeof(err)), 0);
	assert_string_equal(url, "https://auth.example/oauth2/default/v1/authorize?client_id=cid"
				 "&redirect_uri=https%3A%2F%2Flocalhost%2Fcb%3Fx%3D1"
				 "&response_type=code&scope=contact_data%20offline_access"
				 "&state=st4te&code_challenge=CHAL&code_challenge_method=S256");
	free(url);
	assert_int_equal(ccapi_authorize_url("https://a/v1/", "cid", "https://l/cb", "s", NULL,
					     &url, err, sizeof(err)), 0);
	assert_null(strstr(url, "code_challenge"));
	assert_non_null(strstr(url, "https://a/v1/authorize?"));
	free(url);
	assert_int_equal(ccapi_authorize_url("http://a", "cid", "https://l/cb", "s", NULL, &url,
					     err, sizeof(err)), -EINVAL);
	assert_int_equal(ccapi_authorize_url("https://a", "cid", "has space", "s", NULL, &url,
					     err, sizeof(err)), -EINVAL);

	assert_int_equal(ccapi_redirect_parse("https://l/cb?x=1&code=ab%2Bc+d&state=st4te#frag",
					      "st4te", &code, err, sizeof(err)), 0);
	assert_string_equal(code, "ab+c d");
	free(code);
	code = NULL;
	assert_int_equal(ccapi_redirect_parse("https://l/cb?code=abc&state=other", "st4te", &code,
					      err, sizeof(err)), -EPERM);
	assert_int_equal(ccapi_redirect_parse("https://l/cb?code=abc", "st4te", &code, err,
					      sizeof(err)), -EPERM);
	assert_int_equal(ccapi_redirect_parse("https://l/cb?error=access_denied&"
					      "error_description=The+user+said+no&state=st4te",
					      "st4te", &code, err, sizeof(err)), -EACCES);
	assert_non_null(strstr(err, "access_denied: The user said no"));
	assert_int_equal(ccapi_redirect_parse("https://l/cb?state=st4te", "st4te", &code, err,
					      sizeof(err)), -EINVAL);
	assert_int_equal(ccapi_redirect_parse("abc", "st4te", &code, err, sizeof(err)), -EINVAL);
	assert_int_equal(ccapi_redirect_parse("https://l/cb?code=a%zz&state=st4te", "st4te", &code,
					      err, sizeof(err)), -EINVAL);
	assert_int_equal(ccapi_redirect_parse("https://l/cb?code=a%00&state=st4te", "st4te", &code,
					      err, sizeof(err)), -EINVAL);
	assert_null(code);
}

static void test_parse_token(void **state)
{
	struct ccapi_token t = { 0 };
	char err[256];
	json_t *j;

	(void)state;
	j = load("{\"access_token\":\"AT.1\",\"refresh_token\":\"RT.1\",\"token_type\":\"Bearer\","
		 "\"expires_in\":86400,\"scope\":\"contact_data offline_access\"}");
	assert_int_equal(ccapi_parse_token(j, NOW, &t, err, sizeof(err)), 0);
	assert_string_equal(t.access_token, "AT.1");
	assert_string_equal(t.refresh_token, "RT.1");
	assert_int_equal(t.expires_at, NOW + 86400);
	ccapi_token_done(&t);
	json_decref(j);
	/* expires_in given as an absolute epoch (as the spec describes it) */
	j = load("{\"access_token\":\"AT.2\",\"token_type\":\"bearer\",\"expires_in\":1700086400}");
	assert_int_equal(ccapi_parse_token(j, 1700000000, &t, err, sizeof(err)), 0);
	assert_int_equal(t.expires_at, 1700086400);
	assert_null(t.refresh_token);
	ccapi_token_done(&t);
	json_decref(j);
	/* absent: one hour; tiny: one minute */
	j = load("{\"access_token\":\"AT.3\"}");
	assert_int_equal(ccapi_parse_token(j, NOW, &t, err, sizeof(err)), 0);
	assert_int_equal(t.expires_at, NOW + 3600);
	ccapi_token_done(&t);
	json_decref(j);
	j = load("{\"access_token\":\"AT.3\",\"expires_in\":0}");
	assert_int_equal(ccapi_parse_token(j, NOW, &t, err, sizeof(err)), 0);
	assert_int_equal(t.expires_at, NOW + 60);
	ccapi_token_done(&t);
	json_decref(j);
	j = load("{\"access_token\":\"AT\",\"token_type\":\"mac\"}");
	assert_int_equal(ccapi_parse_token(j, 50, &t, err, sizeof(err)), -EBADMSG);
	json_decref(j);
	j = load("{\"access_token\":\"\"}");
	assert_int_equal(ccapi_parse_token(j, 50, &t, err, sizeof(err)), -EBADMSG);
	json_decref(j);
	j = load("{\"access_token\":\"has space\"}");
	assert_int_equal(ccapi_parse_token(j, 50, &t, err, sizeof(err)), -EBADMSG);
	assert_null(strstr(err, "has space")); /* never echoed */
	json_decref(j);
	j = load("[1]");
	assert_int_equal(ccapi_parse_token(j, 50, &t, err, sizeof(err)), -EBADMSG);
	json_decref(j);
}

static void test_parse_device(void **state)
{
	struct ccapi_device_auth d = { 0 };
	char err[256];
	json_t *j;

	(void)state;
	j = load("{\"device_code\":\"DC\",\"user_code\":\"BCDF-GHJK\",\"verification_uri\":"
		 "\"https://x/activate\",\"verification_uri_complete\":\"https://x/activate?u=1\","
		 "\"expires_in\":600,\"interval\":7}");
	assert_int_equal(ccapi_parse_device_auth(j, NOW, &d, err, sizeof(err)), 0);
	assert_string_equal(d.user_code, "BCDF-GHJK");
	assert_string_equal(d.verification_uri_complete, "https://x/activate?u=1");
	assert_int_equal(d.expires_at, NOW + 600);
	assert_int_equal(d.interval_s, 7);
	ccapi_device_auth_done(&d);
	json_decref(j);
	j = load("{\"device_code\":\"DC\",\"user_code\":\"U\",\"verification_url\":\"https://x\"}");
	assert_int_equal(ccapi_parse_device_auth(j, NOW, &d, err, sizeof(err)), 0);
	assert_int_equal(d.interval_s, 5);
	assert_int_equal(d.expires_at, NOW + 600);
	assert_null(d.verification_uri_complete);
	ccapi_device_auth_done(&d);
	json_decref(j);
	j = load("{\"user_code\":\"U\",\"verification_uri\":\"https://x\"}");
	assert_int_equal(ccapi_parse_device_auth(j, 100, &d, err, sizeof(err)), -EBADMSG);
	json_decref(j);
}

static void test_parse_error(void **state)
{
	struct ccapi_error e;
	json_t *j;

	(void)state;
	j = load("[{\"error_key\":\"contacts.api.validation.error\",\"error_message\":\"one\"},"
		 "{\"error_key\":\"x\",\"error_message\":\"two\\nlines\"}]");
	assert_int_equal(ccapi_parse_error(j, &e), 0);
	assert_string_equal(e.key, "contacts.api.validation.error");
	assert_string_equal(e.message, "one; two lines");
	json_decref(j);
	j = load("{\"error_key\":\"throttled\",\"error_message\":\"Too Many Requests\"}");
	assert_int_equal(ccapi_parse_error(j, &e), 0);
	assert_string_equal(e.key, "throttled");
	assert_string_equal(e.message, "Too Many Requests");
	json_decref(j);
	j = load("{\"error\":\"invalid_grant\",\"error_description\":\"The refresh token is "
		 "invalid or expired.\"}");
	assert_int_equal(ccapi_parse_error(j, &e), 0);
	assert_string_equal(e.key, "invalid_grant");
	assert_string_equal(e.message, "The refresh token is invalid or expired.");
	json_decref(j);
	j = load("{\"message\":\"x\"}");
	assert_int_equal(ccapi_parse_error(j, &e), -ENOMSG);
	assert_string_equal(e.key, "");
	json_decref(j);
	j = load("[1,2,{\"a\":1}]");
	assert_int_equal(ccapi_parse_error(j, &e), -ENOMSG);
	json_decref(j);
	assert_int_equal(ccapi_parse_error(NULL, &e), -ENOMSG);
}

static void test_parse_activity(void **state)
{
	struct ccapi_activity a = { 0 };
	char err[256];
	json_t *j;

	(void)state;
	j = load("{\"activity_id\":\"" A1 "\",\"state\":\"completed\",\"percent_done\":100,"
		 "\"activity_errors\":[\"Bad@Example.com: invalid email address\","
		 "\"The activity failed: odd: thing\",{\"message\":\"x@y.z: obj form\"},7],"
		 "\"status\":{\"items_total_count\":3,\"person_count\":3,\"error_count\":1,"
		 "\"correctable_count\":1,\"cannot_add_to_list_count\":0}}");
	assert_int_equal(ccapi_parse_activity(j, &a, err, sizeof(err)), 0);
	assert_string_equal(a.activity_id, A1);
	assert_int_equal(a.state, CCAPI_ACTIVITY_COMPLETED);
	assert_true(ccapi_activity_state_terminal(a.state));
	assert_int_equal(a.percent_done, 100);
	assert_int_equal(a.person_count, 3);
	assert_int_equal(a.correctable_count, 1);
	assert_int_equal(a.cannot_add_to_list_count, 0);
	assert_int_equal(a.list_count, -1);
	assert_int_equal(a.n_errors, 3);
	assert_string_equal(a.errors[0].email, "bad@example.com");
	assert_string_equal(a.errors[0].reason, "invalid email address");
	assert_null(a.errors[1].email);
	assert_string_equal(a.errors[1].reason, "The activity failed: odd: thing");
	assert_string_equal(a.errors[1].raw, "The activity failed: odd: thing");
	assert_string_equal(a.errors[2].email, "x@y.z");
	ccapi_activity_done(&a);
	json_decref(j);

	j = load("{\"activity_id\":\"" A1 "\",\"state\":\"time_out\",\"percent_done\":400}");
	assert_int_equal(ccapi_parse_activity(j, &a, err, sizeof(err)), 0);
	assert_int_equal(a.state, CCAPI_ACTIVITY_TIMED_OUT);
	assert_int_equal(a.percent_done, 100);
	ccapi_activity_done(&a);
	json_decref(j);
	j = load("{\"activity_id\":\"" A1 "\",\"state\":\"brand_new\"}");
	assert_int_equal(ccapi_parse_activity(j, &a, err, sizeof(err)), 0);
	assert_int_equal(a.state, CCAPI_ACTIVITY_UNKNOWN);
	assert_false(ccapi_activity_state_terminal(a.state));
	assert_string_equal(a.state_name, "brand_new");
	ccapi_activity_done(&a);
	json_decref(j);
	j = load("{\"activity_id\":\"nope\",\"state\":\"completed\"}");
	assert_int_equal(ccapi_parse_activity(j, &a, err, sizeof(err)), -EBADMSG);
	json_decref(j);
	j = load("{\"activity_id\":\"" A1 "\",\"state\":3}");
	assert_int_equal(ccapi_parse_activity(j, &a, err, sizeof(err)), -EBADMSG);
	json_decref(j);
}

static void test_parse_pages(void **state)
{
	struct ccapi_activity_page ap = { 0 };
	struct ccapi_list_page lp = { 0 }, all = { 0 };
	struct ccapi_list l = { 0 };
	struct ccapi_contact_page cp = { 0 };
	struct ccapi_custom_field_page fp = { 0 };
	size_t skipped = 9;
	char err[256];
	json_t *j;

	(void)state;
	j = load("{\"activities\":[{\"activity_id\":\"" A1 "\",\"state\":\"processing\"},"
		 "{\"activity_id\":\"bad\",\"state\":\"processing\"}],"
		 "\"_links\":{\"next\":{\"href\":\"/v3/activities?next=2\"}}}");
	assert_int_equal(ccapi_parse_activity_page(j, &ap, &skipped, err, sizeof(err)), 0);
	assert_int_equal(ap.n, 1);
	assert_int_equal(skipped, 1);
	assert_string_equal(ap.next, "/v3/activities?next=2");
	ccapi_activity_page_done(&ap);
	json_decref(j);

	j = load("{\"list_id\":\"" L1 "\",\"name\":\"Newsletter\\u0007\",\"membership_count\":12,"
		 "\"deleted_at\":\"2024-01-01T00:00:00Z\"}");
	assert_int_equal(ccapi_parse_list(j, &l, err, sizeof(err)), 0);
	assert_string_equal(l.name, "Newsletter ");
	assert_int_equal(l.membership_count, 12);
	assert_true(l.deleted);
	ccapi_list_done(&l);
	json_decref(j);
	j = load("{\"list_id\":\"" L1 "\",\"name\":\"N\",\"deleted_at\":null}");
	assert_int_equal(ccapi_parse_list(j, &l, err, sizeof(err)), 0);
	assert_false(l.deleted);
	assert_int_equal(l.membership_count, -1);
	ccapi_list_done(&l);
	json_decref(j);

	j = load("{\"lists\":[{\"list_id\":\"" L1 "\",\"name\":\"A\",\"membership_count\":1}],"
		 "\"_links\":{\"next\":{\"href\":\"/v3/contact_lists?cursor=x\"}}}");
	assert_int_equal(ccapi_parse_list_page(j, &lp, err, sizeof(err)), 0);
	assert_int_equal(ccapi_list_page_append(&all, &lp), 0);
	ccapi_list_page_done(&lp);
	assert_int_equal(ccapi_parse_list_page(j, &lp, err, sizeof(err)), 0);
	assert_int_equal(ccapi_list_page_append(&all, &lp), 0);
	assert_int_equal(lp.n, 0);
	ccapi_list_page_done(&lp);
	assert_int_equal(all.n, 2);
	assert_string_equal(all.lists[1].name, "A");
	ccapi_list_page_done(&all);
	json_decref(j);

	j = load("{\"contacts\":[{\"contact_id\":\"" A1 "\",\"email_address\":{\"address\":"
		 "\"Ann@Example.COM\"}},{\"contact_id\":\"x\"},{\"contact_id\":\"" L2 "\"}],"
		 "\"_links\":{\"next\":{\"href\":\"https://evil.example/steal\"}}}");
	assert_int_equal(ccapi_parse_contact_page(j, &cp, err, sizeof(err)), 0);
	assert_int_equal(cp.n, 2);
	assert_string_equal(cp.contacts[0].email, "ann@example.com");
	assert_null(cp.contacts[1].email);
	/* Parsers keep the link; the client decides whether it is on the API host. */
	assert_string_equal(cp.next, "https://evil.example/steal");
	ccapi_contact_page_done(&cp);
	json_decref(j);
	j = load("{\"contacts\":[],\"_links\":{\"next\":{\"href\":\"/v3/x y\"}}}");
	assert_int_equal(ccapi_parse_contact_page(j, &cp, err, sizeof(err)), 0);
	assert_null(cp.next); /* whitespace in a link: dropped */
	ccapi_contact_page_done(&cp);
	json_decref(j);

	j = load("{\"custom_fields\":[{\"custom_field_id\":\"" A1 "\",\"name\":\"tier\","
		 "\"label\":\"Tier\",\"type\":\"string\"},{\"custom_field_id\":\"" L2 "\"}]}");
	assert_int_equal(ccapi_parse_custom_field_page(j, &fp, err, sizeof(err)), 0);
	assert_int_equal(fp.n, 1);
	assert_string_equal(fp.fields[0].name, "tier");
	assert_null(fp.next);
	ccapi_custom_field_page_done(&fp);
	json_decref(j);

	j = load("{\"lists\":{}}");
	assert_int_equal(ccapi_parse_list_page(j, &lp, err, sizeof(err)), -EBADMSG);
	json_decref(j);
}

static void test_json_parse(void **state)
{
	char err[256];
	json_t *j = NULL;

	(void)state;
	assert_int_equal(ccapi_json_parse("{\"a\":1}", 7, &j, err, sizeof(err)), 0);
	json_decref(j);
	assert_int_equal(ccapi_json_parse("{\"a\":1,\"a\":2}", 13, &j, err, sizeof(err)),
			 -EBADMSG);
	assert_int_equal(ccapi_json_parse("\"str\"", 5, &j, err, sizeof(err)), -EBADMSG);
	assert_int_equal(ccapi_json_parse("<html>", 6, &j, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "not valid JSON"));
	assert_int_equal(ccapi_json_parse("", 0, &j, err, sizeof(err)), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ids_and_utf8),
		cmocka_unit_test(test_import_exact_body),
		cmocka_unit_test(test_import_bad_input_changes_nothing),
		cmocka_unit_test(test_import_count_limit),
		cmocka_unit_test(test_import_byte_limit_is_exact),
		cmocka_unit_test(test_import_begin_errors),
		cmocka_unit_test(test_import_keys),
		cmocka_unit_test(test_import_million),
		cmocka_unit_test(test_remove_body),
		cmocka_unit_test(test_form_and_basic),
		cmocka_unit_test(test_sha256_and_pkce),
		cmocka_unit_test(test_random_token),
		cmocka_unit_test(test_authorize_url_and_redirect),
		cmocka_unit_test(test_parse_token),
		cmocka_unit_test(test_parse_device),
		cmocka_unit_test(test_parse_error),
		cmocka_unit_test(test_parse_activity),
		cmocka_unit_test(test_parse_pages),
		cmocka_unit_test(test_json_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
