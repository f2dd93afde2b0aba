/* SPDX-License-Identifier: MIT */
/*
 * Constant Contact V3 wire format, with no I/O: request bodies (the streaming bulk-import encoder,
 * membership removal), OAuth2 request pieces (form encoding, PKCE, authorize URL, redirect URL
 * parsing), and parsers for every response body the client reads (activities, lists, contacts,
 * custom fields, tokens, device authorization, both error-body shapes).
 *
 * Everything parsed here comes from the network and is treated as hostile: parsers never trust a
 * type, length or count, copy what they keep, and are fuzzed (tests/fuzz/fuzz_ccapi.c). Strings a
 * parser keeps for messages are cleaned of control characters and bounded.
 *
 * Parsers take a borrowed json_t and return 0, -EBADMSG when the body does not have the expected
 * shape (message in err), or -ENOMEM. Results are owned by the caller and released with the
 * matching *_done() function, which accepts a zeroed struct.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CCAPI_IMPORT_MAX_CONTACTS 40000	/* documented per-request maximum */
#define CCAPI_IMPORT_MAX_BYTES 4000000	/* "less than 4 MB": CC truncates silently above */
#define CCAPI_MAX_LIST_IDS 50		/* list_ids per import or membership activity */
#define CCAPI_REMOVE_MAX_CONTACTS 500	/* contact_ids per remove_list_memberships */
#define CCAPI_PAGE_LIMIT 500		/* largest page: /contacts, /activities, /contact_lists */
#define CCAPI_ID_LEN 36			/* UUID, 8-4-4-4-12 */

/* ------------------------------------------------------------------ identifiers, JSON */

/* True for a 36-character 8-4-4-4-12 hexadecimal UUID (list, contact, activity ids). */
bool ccapi_id_valid(const char *s);

/*
 * Parses a response body. Rejects duplicate keys and anything but an object or an array at the
 * top. Returns 0 and *ret (transfer full), or -EBADMSG with the reason in err.
 */
int ccapi_json_parse(const char *body, size_t len, json_t **ret, char *err, size_t errlen);

/* ------------------------------------------------------------------ bulk import encoder */

/*
 * Streaming encoder of POST /activities/contacts_json_import bodies:
 *   {"import_data":[{"email":...,...},...],"list_ids":["..."]}
 * Contacts are written straight into one buffer, JSON-escaped by hand (no jansson per contact);
 * the byte count includes the closing bytes, so ccapi_import_size() is exactly the length that
 * ccapi_import_finish() returns. A contact that would push the batch past max_contacts or
 * max_bytes is refused whole, leaving the batch as it was.
 */
struct ccapi_import;

/* One extra import property: a standard key (job_title, city, ...) or "cf:<custom field name>". */
struct ccapi_field {
	const char *key;
	const char *value;
};

/*
 * Starts an encoder for batches that add every contact to list_ids (1..50 valid UUIDs, copied).
 * max_contacts is clamped to 1..40000 and max_bytes to 64..4000000. Returns 0 and *ret (transfer
 * full), -EINVAL with a message, or -ENOMEM.
 */
int ccapi_import_begin(const char *const *list_ids, size_t n_list_ids, uint32_t max_contacts,
		       uint32_t max_bytes, struct ccapi_import **ret, char *err, size_t errlen);
struct ccapi_import *ccapi_import_free(struct ccapi_import *b); /* accepts NULL, returns NULL */

/*
 * Appends one contact. email is required; first_name/last_name may be NULL (or "": left out, since
 * CC's handling of empty values is undocumented); extra may be NULL when n_extra is 0, and a NULL
 * or empty extra value is left out too. Returns:
 *   0        added;
 *   -ENOSPC  the batch is full (count or bytes): finish it and add this contact to the next one;
 *   -E2BIG   this contact alone exceeds max_bytes: it can never be sent, reject the row;
 *   -EILSEQ  a key or value is not valid UTF-8 (never sent);
 *   -EMSGSIZE a value is longer than CC's documented maximum for its key (email 50, names 50,
 *            cf: 255, ... characters), which CC would reject;
 *   -EINVAL  empty email, a key that is not an import property (see ccapi_import_key_valid), or a
 *            birthday_month/birthday_day that is not a whole number in range (sent as integers);
 *   -ENOMEM.
 * On any error the batch is unchanged; err says which field failed, without echoing its value.
 */
int ccapi_import_add(struct ccapi_import *b, const char *email, const char *first_name,
		     const char *last_name, const struct ccapi_field *extra, size_t n_extra,
		     char *err, size_t errlen);

size_t ccapi_import_count(const struct ccapi_import *b);
/* Exact length of the body ccapi_import_finish() would return now. */
size_t ccapi_import_size(const struct ccapi_import *b);

/*
 * Hands out the body of the current batch (NUL-terminated; *ret_len excludes the NUL; transfer
 * full) and empties the encoder for the next batch with the same list ids. -ENODATA when the batch
 * has no contact, -ENOMEM.
 */
int ccapi_import_finish(struct ccapi_import *b, char **ret_body, size_t *ret_len);

/*
 * Whether key is an import property CC documents (email, first_name, job_title, home_city, ...,
 * cf:<name>). Returns the property's documented maximum length in characters (> 0), or -EINVAL.
 * "email" is accepted here but must go through the email parameter of ccapi_import_add.
 */
int ccapi_import_key_valid(const char *key);

/* ------------------------------------------------------------------ other request bodies */

/*
 * Body of POST /activities/remove_list_memberships:
 *   {"source":{"contact_ids":[...]},"list_ids":[...]}
 * 1..500 contact ids and 1..50 list ids, all valid UUIDs. Returns 0 with *ret_body (transfer full,
 * NUL-terminated) and *ret_len, -EINVAL with a message, or -ENOMEM.
 */
int ccapi_remove_body(const char *const *contact_ids, size_t n_contacts,
		      const char *const *list_ids, size_t n_lists, char **ret_body, size_t *ret_len,
		      char *err, size_t errlen);

/*
 * Body of POST /activities/remove_list_memberships with a list as the source (every member of the
 * source lists is removed from the target lists; source = target empties a list):
 *   {"source":{"list_ids":[...]},"list_ids":[...]}
 * 1..50 of each (CC documents 100 source lists now, 50 before: the lower one). As above.
 */
int ccapi_remove_by_list_body(const char *const *source_list_ids, size_t n_source,
			      const char *const *list_ids, size_t n_lists, char **ret_body,
			      size_t *ret_len, char *err, size_t errlen);

#define CCAPI_LIST_NAME_MAX 255 /* createList name maxLength */

/*
 * Body of POST /contact_lists: {"name":...,"favorite":false[,"description":...]}. name is 1..255
 * bytes of UTF-8. Returns 0 with *ret_body (transfer full) and *ret_len, -EINVAL, or -ENOMEM.
 */
int ccapi_list_create_body(const char *name, const char *description, char **ret_body,
			   size_t *ret_len, char *err, size_t errlen);

/*
 * application/x-www-form-urlencoded and query-string building. *buf is a malloc'd string (NULL to
 * start), grown as needed; pairs are joined with '&'. Returns 0 or -ENOMEM.
 */
int ccapi_form_add(char **buf, const char *key, const char *value);
/* Percent-encodes s (RFC 3986 unreserved characters stay). Returns a new string or NULL on OOM. */
char *ccapi_url_escape(const char *s);

/* "Basic base64(client_id:secret)" header value (transfer full; NULL on OOM). Caller wipes it. */
char *ccapi_basic_auth(const char *client_id, const char *secret);

/* ------------------------------------------------------------------ OAuth2 helpers */

#define CCAPI_PKCE_VERIFIER_LEN 64 /* characters; RFC 7636 allows 43..128 */
#define CCAPI_PKCE_CHALLENGE_LEN 43
#define CCAPI_STATE_LEN 32
#define CCAPI_OAUTH_SCOPE "contact_data offline_access"

/* Fills buf with len random characters from the RFC 7636 unreserved set, NUL-terminated
 * (buf holds len + 1). Uses getrandom(); 0 or negative errno. */
int ccapi_random_token(char *buf, size_t len);

/* base64url(SHA-256(verifier)) without padding, NUL-terminated, into challenge[44]. */
void ccapi_pkce_challenge(const char *verifier,
			  char challenge[static CCAPI_PKCE_CHALLENGE_LEN + 1]);

/* SHA-256 of data (exposed for the unit tests' known-answer vectors). */
void ccapi_sha256(const void *data, size_t len, uint8_t out[static 32]);

/*
 * The browser URL of the authorization-code flow:
 *   <auth_base>/authorize?client_id=&redirect_uri=&response_type=code&scope=&state=
 *   [&code_challenge=&code_challenge_method=S256]
 * challenge may be NULL (confidential "code" flow). Returns 0 and *ret_url (transfer full).
 */
int ccapi_authorize_url(const char *auth_base, const char *client_id, const char *redirect_uri,
			const char *state, const char *challenge, char **ret_url, char *err,
			size_t errlen);

/*
 * Reads the redirect URL the user pasted after approving in the browser. Checks that it carries
 * expected_state (constant-time compare) and returns the authorization code (transfer full).
 * -EACCES when the URL reports an OAuth error (access_denied, ...: its text in err), -EPERM on a
 * state mismatch, -EINVAL when it is not a redirect URL with a code.
 */
int ccapi_redirect_parse(const char *url, const char *expected_state, char **ret_code, char *err,
			 size_t errlen);

struct ccapi_token {
	char *access_token;
	char *refresh_token;	/* NULL when the response carried none (long-lived: keep the old) */
	int64_t expires_at;	/* epoch seconds */
	char *scope;		/* may be NULL */
};

/*
 * Parses a token endpoint success body. expires_in is read as a lifetime in seconds; a value that
 * is itself later than now_s is taken as an absolute epoch time (the spec describes it so). A
 * missing expires_in means one hour. Requires a non-empty access_token and token_type Bearer
 * (case-insensitive) when present.
 */
int ccapi_parse_token(const json_t *body, int64_t now_s, struct ccapi_token *ret, char *err,
		      size_t errlen);
void ccapi_token_done(struct ccapi_token *t); /* wipes the secrets before freeing */

struct ccapi_device_auth {
	char *device_code;		/* secret: never logged */
	char *user_code;
	char *verification_uri;
	char *verification_uri_complete; /* may be NULL */
	int64_t expires_at;		/* epoch seconds (default: now + 600) */
	uint32_t interval_s;		/* polling interval (default 5) */
};

int ccapi_parse_device_auth(const json_t *body, int64_t now_s, struct ccapi_device_auth *ret,
			    char *err, size_t errlen);
void ccapi_device_auth_done(struct ccapi_device_auth *d);

/* ------------------------------------------------------------------ errors */

struct ccapi_error {
	char key[96];	    /* error_key, or the OAuth "error" code; "" when none */
	char message[512];  /* error_message(s) joined with "; ", or error_description */
};

/*
 * Reads an error body: an array of {error_key, error_message} (general API errors), a single such
 * object (gateway errors: 401, 429), or an OAuth {error, error_description}. Returns 0, or
 * -ENOMSG when body is none of these (ret is then zeroed). Text is cleaned and truncated.
 */
int ccapi_parse_error(const json_t *body, struct ccapi_error *ret);

/* ------------------------------------------------------------------ activities */

enum ccapi_activity_state {
	CCAPI_ACTIVITY_UNKNOWN,	/* a state this client does not know: treat as still running */
	CCAPI_ACTIVITY_INITIALIZED,
	CCAPI_ACTIVITY_PROCESSING,
	CCAPI_ACTIVITY_COMPLETED,
	CCAPI_ACTIVITY_CANCELLED,
	CCAPI_ACTIVITY_FAILED,
	CCAPI_ACTIVITY_TIMED_OUT,
};

const char *ccapi_activity_state_to_string(enum ccapi_activity_state s);
bool ccapi_activity_state_terminal(enum ccapi_activity_state s);

/*
 * One entry of activity_errors. CC reports problems as plain strings; the fake (and, as far as we
 * know, CC) writes per-contact ones as "<email>: <reason>". email is set (lower-cased) when the
 * text starts with one blank-free word followed by ": " (a malformed address included), so the
 * runner can map it back to the row it sent; raw always holds the whole (cleaned) text.
 */
struct ccapi_activity_error {
	char *email;	/* NULL when the text is not per-contact */
	char *reason;	/* text after "<email>: ", or the whole text */
	char *raw;
};

struct ccapi_activity {
	char activity_id[CCAPI_ID_LEN + 1];
	enum ccapi_activity_state state;
	char state_name[32];	/* as sent, for messages ("" if missing) */
	int percent_done;	/* 0..100 */
	/* status counters; -1 when absent */
	int64_t items_total_count;
	int64_t items_completed_count;
	int64_t person_count;
	int64_t error_count;
	int64_t correctable_count;
	int64_t cannot_add_to_list_count;
	int64_t list_count;
	struct ccapi_activity_error *errors;
	size_t n_errors;
};

/* Parses one activity object (201 of a bulk POST, or GET /activities/{id}). Requires a valid
 * activity_id and a string state. */
int ccapi_parse_activity(const json_t *body, struct ccapi_activity *ret, char *err, size_t errlen);
void ccapi_activity_done(struct ccapi_activity *a);

struct ccapi_activity_page {
	struct ccapi_activity *activities;
	size_t n;
	char *next; /* _links.next.href (relative, "/v3/..."), NULL on the last page */
};

/* GET /activities. Entries that fail to parse are skipped (counted in *ret_skipped if not NULL). */
int ccapi_parse_activity_page(const json_t *body, struct ccapi_activity_page *ret,
			      size_t *ret_skipped, char *err, size_t errlen);
void ccapi_activity_page_done(struct ccapi_activity_page *p);

/* ------------------------------------------------------------------ lists, contacts, fields */

struct ccapi_list {
	char list_id[CCAPI_ID_LEN + 1];
	char *name;
	int64_t membership_count; /* -1 when absent */
	bool deleted;		  /* deleted_at present and not null */
};

/* GET /contact_lists/{id}. */
int ccapi_parse_list(const json_t *body, struct ccapi_list *ret, char *err, size_t errlen);
void ccapi_list_done(struct ccapi_list *l);

struct ccapi_list_page {
	struct ccapi_list *lists;
	size_t n;
	char *next;
};

/* GET /contact_lists. */
int ccapi_parse_list_page(const json_t *body, struct ccapi_list_page *ret, char *err,
			  size_t errlen);
void ccapi_list_page_done(struct ccapi_list_page *p);
/* Moves the entries of from to the end of to (for collecting all pages); 0 or -ENOMEM. */
int ccapi_list_page_append(struct ccapi_list_page *to, struct ccapi_list_page *from);

struct ccapi_contact {
	char contact_id[CCAPI_ID_LEN + 1];
	char *email;	/* email_address.address, lower-cased; NULL if absent */
};

struct ccapi_contact_page {
	struct ccapi_contact *contacts;
	size_t n;
	char *next;
};

/* GET /contacts. Entries without a valid contact_id are skipped. */
int ccapi_parse_contact_page(const json_t *body, struct ccapi_contact_page *ret, char *err,
			     size_t errlen);
void ccapi_contact_page_done(struct ccapi_contact_page *p);

struct ccapi_custom_field {
	char custom_field_id[CCAPI_ID_LEN + 1];
	char *name;  /* the key after "cf:" in imports */
	char *label;
	char *type;
};

struct ccapi_custom_field_page {
	struct ccapi_custom_field *fields;
	size_t n;
	char *next;
};

/* GET /contact_custom_fields. */
int ccapi_parse_custom_field_page(const json_t *body, struct ccapi_custom_field_page *ret,
				  char *err, size_t errlen);
void ccapi_custom_field_page_done(struct ccapi_custom_field_page *p);
int ccapi_custom_field_page_append(struct ccapi_custom_field_page *to,
				   struct ccapi_custom_field_page *from);
