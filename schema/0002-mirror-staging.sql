-- ccsync schema, version 2: the staging list of mirror exports (ccsync-internal, not part of the
-- upstream contract). Applied by lib/store.c inside one transaction, like 0001.
--
-- A mirror run removes departed contacts by importing their emails into a Constant Contact list
-- that ccsync owns (one per export) and removing that list's members from the exported list.
-- dirty: the staging list may hold members (set before a staging import, cleared only after an
-- empty activity completed). pending_activity_id: the last activity ccsync started that reads or
-- writes the staging list; the next use waits for it to end first. pending_is_empty: that
-- activity empties the staging list (its completion makes the list clean).
CREATE TABLE mirror_staging (
	export_id INTEGER PRIMARY KEY REFERENCES exports (export_id) ON DELETE CASCADE,
	list_id TEXT NOT NULL CHECK (length(list_id) = 36),
	dirty INTEGER NOT NULL DEFAULT 0 CHECK (dirty IN (0, 1)),
	pending_activity_id TEXT CHECK (length(pending_activity_id) = 36),
	pending_is_empty INTEGER NOT NULL DEFAULT 0 CHECK (pending_is_empty IN (0, 1)),
	updated_at INTEGER NOT NULL DEFAULT (unixepoch())
);
