/* SPDX-License-Identifier: MIT */
/*
 * The staging list of a mirror export (schema/0002-mirror-staging.sql): the Constant Contact list
 * ccsync owns per export to remove departed contacts by list instead of by contact id. This file
 * keeps its id and the two facts a crash must not lose: whether the list may hold members
 * (dirty), and the last activity on it that may still be running (pending).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "ccapi.h"
#include "store.h"

struct store_mirror_staging {
	char list_id[CCAPI_ID_LEN + 1];
	bool dirty;
	char pending_activity_id[CCAPI_ID_LEN + 1]; /* "" when none */
	bool pending_is_empty;
};

/* The export's staging list: 1 and *ret filled, 0 when it has none yet, or negative errno. */
int store_mirror_staging_get(struct store *s, int64_t export_id, struct store_mirror_staging *ret,
			     char *err, size_t errlen);

/* Records (creates or replaces) the export's staging list state. 0 or negative errno. */
int store_mirror_staging_set(struct store *s, int64_t export_id,
			     const struct store_mirror_staging *st, char *err, size_t errlen);

/* Forgets the export's staging list (it was deleted in Constant Contact). 0 or negative errno. */
int store_mirror_staging_forget(struct store *s, int64_t export_id, char *err, size_t errlen);

/* 1 when the export has confirmed sync state (it synced before), 0 when not, negative errno. */
int store_mirror_has_sync_state(struct store *s, int64_t export_id);
