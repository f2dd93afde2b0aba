/* SPDX-License-Identifier: MIT */
/*
 * Email normalisation and validation (rules in email.h). A valid address is recognised and
 * lower-cased in one pass over the trimmed input (normalize_valid); any other input goes through
 * the rules one by one (check_rules), and the first rule broken, in their order, is the reason
 * reported, so a given input always yields the same reason. Nothing is allocated and nothing
 * outside the input and the output buffer is touched.
 */
#include "email.h"

#include <stdint.h>

static const char *const reason_codes[_EMAIL_REASON_MAX] = {
	[EMAIL_OK] = "ok",
	[EMAIL_EMPTY] = "empty",
	[EMAIL_TOO_LONG] = "too_long",
	[EMAIL_NON_ASCII] = "non_ascii",
	[EMAIL_BAD_CHARACTER] = "bad_character",
	[EMAIL_NO_AT] = "no_at",
	[EMAIL_MULTIPLE_AT] = "multiple_at",
	[EMAIL_LOCAL_EMPTY] = "local_empty",
	[EMAIL_LOCAL_DOTS] = "local_dots",
	[EMAIL_DOMAIN_EMPTY] = "domain_empty",
	[EMAIL_DOMAIN_NO_DOT] = "domain_no_dot",
	[EMAIL_DOMAIN_LABEL] = "domain_label",
	[EMAIL_DOMAIN_HYPHEN] = "domain_hyphen",
	[EMAIL_DOMAIN_TLD] = "domain_tld",
};

static const char *const reason_texts[_EMAIL_REASON_MAX] = {
	[EMAIL_OK] = "the address is valid",
	[EMAIL_EMPTY] = "the address is empty",
	[EMAIL_TOO_LONG] = "the address is longer than 50 characters, the most Constant Contact "
			   "accepts",
	[EMAIL_NON_ASCII] =
		"the address contains non-ASCII characters; write an international "
		"domain in its ASCII form (xn--...), a non-ASCII local part cannot be sent",
	[EMAIL_BAD_CHARACTER] = "the address contains a space, a control character or a character "
				"not allowed in that position",
	[EMAIL_NO_AT] = "the address has no '@'",
	[EMAIL_MULTIPLE_AT] = "the address has more than one '@' (quoted local parts are not "
			      "supported)",
	[EMAIL_LOCAL_EMPTY] = "nothing before the '@'",
	[EMAIL_LOCAL_DOTS] = "the part before the '@' starts or ends with a dot or has two dots in "
			     "a row",
	[EMAIL_DOMAIN_EMPTY] = "nothing after the '@'",
	[EMAIL_DOMAIN_NO_DOT] = "the domain has no dot",
	[EMAIL_DOMAIN_LABEL] = "the domain starts or ends with a dot or has two dots in a row",
	[EMAIL_DOMAIN_HYPHEN] = "a part of the domain starts or ends with a hyphen",
	[EMAIL_DOMAIN_TLD] = "the domain's last part is all digits (IP addresses are not accepted)",
};

const char *email_reason_to_string(enum email_reason r)
{
	if ((unsigned)r >= _EMAIL_REASON_MAX)
		return NULL;
	return reason_codes[r];
}

const char *email_reason_describe(enum email_reason r)
{
	if ((unsigned)r >= _EMAIL_REASON_MAX)
		return NULL;
	return reason_texts[r];
}

/* Character classes of the 7-bit range, so that the checks are one lookup per byte. */
enum {
	C_SPACE = 1 << 0, /* trimmed: space, \t, \n, \v, \f, \r */
	C_ALNUM = 1 << 1,
	C_ATEXT = 1 << 2, /* RFC 5322 atext without the dot, which has rules of its own */
	C_UPPER = 1 << 3,
	C_DIGIT = 1 << 4,
};

/* clang-format off */
static const unsigned char classes[128] = {
	['\t'] = C_SPACE, ['\n'] = C_SPACE, ['\v'] = C_SPACE, ['\f'] = C_SPACE, ['\r'] = C_SPACE,
	[' '] = C_SPACE,
	['!'] = C_ATEXT, ['#'] = C_ATEXT, ['$'] = C_ATEXT, ['%'] = C_ATEXT, ['&'] = C_ATEXT,
	['\''] = C_ATEXT, ['*'] = C_ATEXT, ['+'] = C_ATEXT, ['-'] = C_ATEXT, ['/'] = C_ATEXT,
	['='] = C_ATEXT, ['?'] = C_ATEXT, ['^'] = C_ATEXT, ['_'] = C_ATEXT, ['`'] = C_ATEXT,
	['{'] = C_ATEXT, ['|'] = C_ATEXT, ['}'] = C_ATEXT, ['~'] = C_ATEXT,
#define D(c) [c] = C_ALNUM | C_ATEXT | C_DIGIT
	D('0'), D('1'), D('2'), D('3'), D('4'), D('5'), D('6'), D('7'), D('8'), D('9'),
#undef D
#define L(c) [c] = C_ALNUM | C_ATEXT
	L('a'), L('b'), L('c'), L('d'), L('e'), L('f'), L('g'), L('h'), L('i'), L('j'), L('k'),
	L('l'), L('m'), L('n'), L('o'), L('p'), L('q'), L('r'), L('s'), L('t'), L('u'), L('v'),
	L('w'), L('x'), L('y'), L('z'),
#undef L
#define U(c) [c] = C_ALNUM | C_ATEXT | C_UPPER
	U('A'), U('B'), U('C'), U('D'), U('E'), U('F'), U('G'), U('H'), U('I'), U('J'), U('K'),
	U('L'), U('M'), U('N'), U('O'), U('P'), U('Q'), U('R'), U('S'), U('T'), U('U'), U('V'),
	U('W'), U('X'), U('Y'), U('Z'),
#undef U
};
/* clang-format on */

static bool is_space(unsigned char c)
{
	return c < 0x80 && (classes[c] & C_SPACE);
}

static bool is_alnum(unsigned char c)
{
	return c < 0x80 && (classes[c] & C_ALNUM);
}

static bool is_atext(unsigned char c)
{
	return c < 0x80 && (classes[c] & C_ATEXT);
}

static unsigned char lower(unsigned char c)
{
	return c < 0x80 && (classes[c] & C_UPPER) ? c + ('a' - 'A') : c;
}

static enum email_reason check_local(const unsigned char *p, size_t n)
{
	if (n == 0)
		return EMAIL_LOCAL_EMPTY;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '.') {
			if (i == 0 || i == n - 1 || p[i - 1] == '.')
				return EMAIL_LOCAL_DOTS;
		} else if (!is_atext(p[i])) {
			return EMAIL_BAD_CHARACTER;
		}
	}
	return EMAIL_OK;
}

static enum email_reason check_domain(const unsigned char *p, size_t n)
{
	size_t label_start = 0, dots = 0;
	bool all_digits = true;

	if (n == 0)
		return EMAIL_DOMAIN_EMPTY;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || p[i] == '.') {
			size_t len = i - label_start;

			if (len == 0)
				return EMAIL_DOMAIN_LABEL;
			if (p[label_start] == '-' || p[i - 1] == '-')
				return EMAIL_DOMAIN_HYPHEN;
			if (i < n) {
				dots++;
				label_start = i + 1;
				all_digits = true;
			}
			continue;
		}
		if (p[i] == '-')
			all_digits = false;
		else if (!is_alnum(p[i]))
			return EMAIL_BAD_CHARACTER;
		else if (!(classes[p[i]] & C_DIGIT))
			all_digits = false;
	}
	if (dots == 0)
		return EMAIL_DOMAIN_NO_DOT;
	if (all_digits)
		return EMAIL_DOMAIN_TLD;
	return EMAIL_OK;
}

/*
 * One pass for the addresses that pass every rule, which are nearly all of them: true when the
 * trimmed input (len > 0) is a valid address, with its normalised form in buf. False says only
 * "not obviously valid": the rule checks below then find the reason, in their order (this pass
 * cannot tell which rule an address breaks first).
 */
static bool normalize_valid(const unsigned char *p, size_t len, unsigned char *buf)
{
	size_t i, label_start, dots = 0;
	bool all_digits = true;

	if (len > EMAIL_MAX_LENGTH || p[0] == '.')
		return false;
	for (i = 0; i < len && p[i] != '@'; i++) {
		if (p[i] == '.') {
			if (p[i - 1] == '.')
				return false;
		} else if (!is_atext(p[i])) {
			return false;
		}
		buf[i] = lower(p[i]);
	}
	if (i == 0 || i + 1 >= len || p[i - 1] == '.')
		return false;
	buf[i++] = '@';
	for (label_start = i; i < len; i++) {
		if (p[i] == '.') {
			if (i == label_start || p[i - 1] == '-')
				return false;
			dots++;
			label_start = i + 1;
			all_digits = true;
		} else if (p[i] == '-') {
			if (i == label_start)
				return false;
			all_digits = false;
		} else if (!is_alnum(p[i])) {
			return false; /* also a second '@' */
		} else if (!(classes[p[i]] & C_DIGIT)) {
			all_digits = false;
		}
		buf[i] = lower(p[i]);
	}
	if (label_start == len || p[len - 1] == '-' || dots == 0 || all_digits)
		return false;
	buf[len] = '\0';
	return true;
}

/* The rules in order, on the trimmed input (len > 0): the first one broken, or EMAIL_OK with the
 * normalised address in buf. */
static enum email_reason check_rules(const unsigned char *p, size_t len, unsigned char *buf)
{
	size_t at = SIZE_MAX, ats = 0;
	enum email_reason r;

	/* Character classes before length: "non-ASCII" tells the operator more than "too long"
	 * for an address that is both. One pass; the first non-ASCII byte wins over any bad
	 * character, so that rule does not depend on where the two happen to be. */
	{
		enum email_reason bad = EMAIL_OK;

		for (size_t i = 0; i < len; i++) {
			if (p[i] >= 0x80)
				return EMAIL_NON_ASCII;
			if (p[i] <= ' ' || p[i] == 0x7f)
				bad = EMAIL_BAD_CHARACTER;
			else if (p[i] == '@' && ats++ == 0)
				at = i;
		}
		if (bad != EMAIL_OK)
			return bad;
	}
	if (len > EMAIL_MAX_LENGTH)
		return EMAIL_TOO_LONG;
	if (ats == 0)
		return EMAIL_NO_AT;
	if (ats > 1)
		return EMAIL_MULTIPLE_AT;

	for (size_t i = 0; i < len; i++)
		buf[i] = lower(p[i]);
	buf[len] = '\0';

	r = check_local(buf, at);
	if (r != EMAIL_OK)
		return r;
	return check_domain(buf + at + 1, len - at - 1);
}

enum email_reason email_normalize(const char *in, size_t len, char *out, size_t *ret_len)
{
	const unsigned char *p = (const unsigned char *)in;
	unsigned char buf[EMAIL_MAX_LENGTH + 1];

	while (len > 0 && is_space(p[0])) {
		p++;
		len--;
	}
	while (len > 0 && is_space(p[len - 1]))
		len--;
	if (len == 0)
		return EMAIL_EMPTY;
	if (!normalize_valid(p, len, buf)) {
		enum email_reason r = check_rules(p, len, buf);

		if (r != EMAIL_OK)
			return r;
	}
	if (out)
		memcpy(out, buf, len + 1);
	if (ret_len)
		*ret_len = len;
	return EMAIL_OK;
}
