/* SPDX-License-Identifier: MIT */
/*
 * UTF-8 well-formedness (RFC 3629, Unicode table 3-7): no overlong forms, no surrogates, nothing
 * above U+10FFFF. One definition for every module that takes text from outside (imports, profile
 * attributes, the wire), inline because the import encoder runs it over every byte it sends.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Length of the well-formed sequence at p (avail >= 1 bytes readable), or 0 if ill-formed. */
static inline size_t utf8_sequence_length(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return avail >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;

		if (avail < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80)
			return 0;
		return 3;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;

		if (avail < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		return 4;
	}
	return 0;
}

static inline bool utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < len;) {
		size_t k = utf8_sequence_length(p + i, len - i);

		if (!k)
			return false;
		i += k;
	}
	return true;
}
