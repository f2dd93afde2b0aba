/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for email_normalize: any bytes in, and for every accepted address the
 * documented invariants out (aborting otherwise): at most 50 bytes, ASCII, no upper case or
 * whitespace, exactly one '@' with text on both sides, and normalising again is the identity.
 * A refusal must name a known reason and leave the output untouched.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "email.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[EMAIL_MAX_LENGTH + 1], again[EMAIL_MAX_LENGTH + 1];
	size_t len = SIZE_MAX, len2 = 0, ats = 0;
	enum email_reason r;

	memset(out, 0x5a, sizeof(out));
	r = email_normalize((const char *)data, size, out, &len);
	if (r != EMAIL_OK) {
		if (!email_reason_to_string(r) || !email_reason_describe(r))
			abort();
		if (len != SIZE_MAX || out[0] != 0x5a)
			abort();
		return 0;
	}
	if (len == 0 || len > EMAIL_MAX_LENGTH || strlen(out) != len)
		abort();
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)out[i];

		if (c >= 0x80 || c <= ' ' || c == 0x7f || (c >= 'A' && c <= 'Z'))
			abort();
		if (c == '@')
			ats++;
	}
	if (ats != 1 || out[0] == '@' || out[len - 1] == '@')
		abort();
	if (email_normalize(out, len, again, &len2) != EMAIL_OK || len2 != len ||
	    memcmp(out, again, len) != 0)
		abort();
	return 0;
}
