/* SPDX-License-Identifier: MIT */
/*
 * Email normalisation and validation: the identity of a contact. Two profiles are the same
 * Constant Contact contact exactly when their normalised addresses are byte-equal, and sync state
 * is keyed by the normalised address, so these rules are part of the persistent format: changing
 * them makes stored sync rows look like departed contacts. Pure functions, no allocation.
 *
 * Normalisation
 *   1. Leading and trailing ASCII whitespace (space, \t, \n, \v, \f, \r) is removed.
 *   2. ASCII letters are lower-cased in the domain AND in the local part. RFC 5321 lets a mail
 *      server treat local parts case-sensitively, but Constant Contact matches addresses
 *      case-insensitively and stores them lower-cased: "Ann@x.org" and "ann@x.org" are one CC
 *      contact. Keeping the local part's case would make them two ccsync contacts that overwrite
 *      each other in CC, defeat deduplication, and make every case change look like a new
 *      contact. Nothing else is rewritten (no dot or "+tag" folding: those are provider rules,
 *      and CC treats such addresses as distinct).
 *
 * Validation (after normalisation) is a practical RFC 5321 subset:
 *   - at most EMAIL_MAX_LENGTH (50) bytes: Constant Contact's import schema caps email at 50;
 *   - exactly one '@' (quoted local parts and address literals such as [192.0.2.1] are refused);
 *   - a non-empty local part of RFC 5322 atext (letters, digits, !#$%&'*+/=?^_`{|}~-) and
 *     dots, no leading, trailing or doubled dot (RFC 5321's 64-byte local-part limit and 63-byte
 *     label limit cannot be reached within 50 bytes, so they need no rule of their own);
 *   - domain of at least two dot-separated labels, each of letters, digits or hyphens, not
 *     starting or ending with a hyphen; the last label (TLD) is not all digits;
 *   - ASCII only. Internationalised addresses given as UTF-8 are REFUSED, not converted: ccsync
 *     has no IDNA library, a UTF-8 local part needs SMTPUTF8 end to end, and a wrong conversion
 *     would silently address mail to somebody else. Upstream can send the domain in its ASCII
 *     form ("xn--..."), which is accepted like any other label.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define EMAIL_MAX_LENGTH 50 /* bytes of a normalised address (CC import maxLength) */

/* Why an address was refused. EMAIL_OK is 0; every other value is a rejection. */
enum email_reason {
	EMAIL_OK = 0,
	EMAIL_EMPTY,	     /* nothing but whitespace */
	EMAIL_TOO_LONG,	     /* over EMAIL_MAX_LENGTH bytes after trimming */
	EMAIL_NON_ASCII,     /* a byte >= 0x80 (IDN / SMTPUTF8 not supported) */
	EMAIL_BAD_CHARACTER, /* space, control character, or a character not allowed where it is */
	EMAIL_NO_AT,
	EMAIL_MULTIPLE_AT,
	EMAIL_LOCAL_EMPTY,
	EMAIL_LOCAL_DOTS, /* leading, trailing or consecutive dots in the local part */
	EMAIL_DOMAIN_EMPTY,
	EMAIL_DOMAIN_NO_DOT,
	EMAIL_DOMAIN_LABEL,  /* empty label: leading, trailing or doubled dot */
	EMAIL_DOMAIN_HYPHEN, /* a label starting or ending with '-' */
	EMAIL_DOMAIN_TLD,    /* all-numeric last label (looks like an IP address) */
	_EMAIL_REASON_MAX,
};

/*
 * Normalises and validates the len bytes at in (need not be NUL-terminated; embedded NULs are
 * refused as EMAIL_BAD_CHARACTER). On EMAIL_OK the normalised address is written to out as a
 * NUL-terminated string and its length to *ret_len (both may be NULL to only validate); out must
 * hold EMAIL_MAX_LENGTH + 1 bytes. On a rejection out and *ret_len are left untouched.
 * The reason is always about the trimmed input, so it can be shown next to the raw value.
 */
enum email_reason email_normalize(const char *in, size_t len, char *out, size_t *ret_len);

/* Convenience for NUL-terminated input. */
static inline bool email_is_valid(const char *s)
{
	return email_normalize(s, strlen(s), NULL, NULL) == EMAIL_OK;
}

/*
 * Stable machine-readable code ("ok", "empty", "too_long", "non_ascii", ...): it is stored in
 * rejected rows and printed by `ccsyncctl rejected --json`, so never rename one. NULL if r is out
 * of range.
 */
const char *email_reason_to_string(enum email_reason r);

/* One human sentence saying what is wrong and, where useful, what to do. NULL if out of range. */
const char *email_reason_describe(enum email_reason r);
