-- ccsync schema, version 1.
-- Times are integer seconds since the Unix epoch, UTC. Booleans are 0/1 integers.
-- Applied by lib/store.c inside one transaction; PRAGMA user_version is set by the store.

-- Upstream data: written by the customer's own system (see schema/README.md for the contract).
-- Profiles carry their attributes as one JSON object rather than one column per attribute:
-- upstream systems add attributes all the time, and a column-per-attribute design would turn each
-- such change into a schema migration of ours. json_extract() reads mapped fields at scan speed.
CREATE TABLE profiles (
	profile_id TEXT PRIMARY KEY NOT NULL CHECK (length(profile_id) BETWEEN 1 AND 256),
	attributes TEXT NOT NULL CHECK (json_valid(attributes) AND json_type(attributes) = 'object'),
	updated_at INTEGER NOT NULL DEFAULT (unixepoch())
) WITHOUT ROWID;

CREATE TABLE segments (
	segment_id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
	description TEXT,
	updated_at INTEGER NOT NULL DEFAULT (unixepoch())
);

-- No foreign key to profiles: upstream writers may load membership and profiles in either order
-- inside their transaction; a member without a profile is reported as a rejected row, not lost.
CREATE TABLE segment_members (
	segment_id INTEGER NOT NULL REFERENCES segments (segment_id) ON DELETE CASCADE,
	profile_id TEXT NOT NULL,
	PRIMARY KEY (segment_id, profile_id)
) WITHOUT ROWID;

-- Upstream announces a finished refresh here (or with `ccsyncctl refresh-done`).
CREATE TABLE upstream_refreshes (
	refresh_id INTEGER PRIMARY KEY,
	finished_at INTEGER NOT NULL DEFAULT (unixepoch()),
	consumed_at INTEGER
);

-- Governance: connections to a Constant Contact account (one API key each).
CREATE TABLE connections (
	connection_id INTEGER PRIMARY KEY,
	name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
	usable_by TEXT NOT NULL DEFAULT 'admins' CHECK (usable_by IN ('admins', 'admins_and_contributors')),
	client_id TEXT NOT NULL CHECK (length(client_id) BETWEEN 1 AND 200),
	auth_flow TEXT NOT NULL DEFAULT 'device' CHECK (auth_flow IN ('device', 'pkce', 'code')),
	consent_by TEXT,
	consent_uid INTEGER,
	consent_at INTEGER,
	auth_state TEXT NOT NULL DEFAULT 'unauthorized'
		CHECK (auth_state IN ('unauthorized', 'authorized', 'needs_reauth')),
	auth_error TEXT,
	created_at INTEGER NOT NULL DEFAULT (unixepoch()),
	updated_at INTEGER NOT NULL DEFAULT (unixepoch()),
	removed_at INTEGER
);
CREATE UNIQUE INDEX connections_live_name ON connections (name) WHERE removed_at IS NULL;

-- Tokens live apart from the connection so that removal is one DELETE (with secure_delete on).
CREATE TABLE connection_tokens (
	connection_id INTEGER PRIMARY KEY REFERENCES connections (connection_id) ON DELETE CASCADE,
	access_token TEXT,
	access_expires_at INTEGER,
	refresh_token TEXT,
	updated_at INTEGER NOT NULL DEFAULT (unixepoch())
);

-- Request budget per API key, persisted so a restart does not forget what was spent today.
CREATE TABLE api_usage (
	client_id TEXT PRIMARY KEY NOT NULL,
	day TEXT NOT NULL,                -- UTC date, YYYY-MM-DD
	requests INTEGER NOT NULL DEFAULT 0,
	paused_until INTEGER             -- set after quota_exceeded: next 00:00 UTC
) WITHOUT ROWID;

CREATE TABLE exports (
	export_id INTEGER PRIMARY KEY,
	name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
	connection_id INTEGER NOT NULL REFERENCES connections (connection_id),
	list_id TEXT NOT NULL CHECK (length(list_id) = 36),
	mode TEXT NOT NULL DEFAULT 'upsert' CHECK (mode IN ('upsert', 'mirror')),
	email_field TEXT NOT NULL CHECK (length(email_field) BETWEEN 1 AND 200),
	first_name_field TEXT,
	last_name_field TEXT,
	follows_refresh INTEGER NOT NULL DEFAULT 1,
	mirror_max_remove_share REAL CHECK (mirror_max_remove_share BETWEEN 0 AND 1),
	enabled INTEGER NOT NULL DEFAULT 1,
	disabled_reason TEXT,
	created_by TEXT,
	created_at INTEGER NOT NULL DEFAULT (unixepoch()),
	updated_at INTEGER NOT NULL DEFAULT (unixepoch()),
	removed_at INTEGER
);
CREATE UNIQUE INDEX exports_live_name ON exports (name) WHERE removed_at IS NULL;
CREATE INDEX exports_connection ON exports (connection_id);

CREATE TABLE export_segments (
	export_id INTEGER NOT NULL REFERENCES exports (export_id) ON DELETE CASCADE,
	segment_id INTEGER NOT NULL REFERENCES segments (segment_id),
	PRIMARY KEY (export_id, segment_id)
) WITHOUT ROWID;

-- Further attribute mappings beyond email/first/last: profile attribute -> CC import key
-- (a standard key such as job_title, or cf:<custom field name>).
CREATE TABLE export_fields (
	export_id INTEGER NOT NULL REFERENCES exports (export_id) ON DELETE CASCADE,
	target TEXT NOT NULL CHECK (length(target) BETWEEN 1 AND 100),
	source_field TEXT NOT NULL CHECK (length(source_field) BETWEEN 1 AND 200),
	PRIMARY KEY (export_id, target)
) WITHOUT ROWID;

-- One row per export. cron NULL = the configuration's default schedule.
-- last_due_at is the last scheduled fire time the daemon handled: it is how a restart knows
-- whether a fire was missed while it was down (catch-up).
CREATE TABLE schedules (
	export_id INTEGER PRIMARY KEY REFERENCES exports (export_id) ON DELETE CASCADE,
	cron TEXT,
	time_zone TEXT,
	last_due_at INTEGER
);

CREATE TABLE runs (
	run_id INTEGER PRIMARY KEY,
	export_id INTEGER NOT NULL REFERENCES exports (export_id),
	state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'succeeded',
		'partially_succeeded', 'failed', 'cancelled', 'interrupted')),
	trigger TEXT NOT NULL CHECK (trigger IN ('schedule', 'demand', 'catch_up', 'refresh', 'resume')),
	dry_run INTEGER NOT NULL DEFAULT 0,
	full_resend INTEGER NOT NULL DEFAULT 0,
	force INTEGER NOT NULL DEFAULT 0,
	requested_by TEXT,
	resumed_from INTEGER REFERENCES runs (run_id),
	queued_at INTEGER NOT NULL DEFAULT (unixepoch()),
	started_at INTEGER,
	finished_at INTEGER,
	selected INTEGER NOT NULL DEFAULT 0,
	sent INTEGER NOT NULL DEFAULT 0,
	rejected INTEGER NOT NULL DEFAULT 0,
	unchanged INTEGER NOT NULL DEFAULT 0,
	removed INTEGER NOT NULL DEFAULT 0,
	pending INTEGER NOT NULL DEFAULT 0,  -- planned for sending, not yet confirmed
	batches_total INTEGER NOT NULL DEFAULT 0,
	batches_done INTEGER NOT NULL DEFAULT 0,
	error TEXT
);
CREATE INDEX runs_export ON runs (export_id, run_id);
CREATE INDEX runs_state ON runs (state) WHERE state IN ('queued', 'running');

CREATE TABLE run_batches (
	run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
	batch_no INTEGER NOT NULL,
	kind TEXT NOT NULL CHECK (kind IN ('import', 'remove')),
	state TEXT NOT NULL DEFAULT 'planned'
		CHECK (state IN ('planned', 'submitted', 'confirmed', 'failed', 'abandoned')),
	contacts INTEGER NOT NULL,
	bytes INTEGER NOT NULL DEFAULT 0,
	activity_id TEXT,
	activity_state TEXT,
	attempts INTEGER NOT NULL DEFAULT 0,
	error_count INTEGER NOT NULL DEFAULT 0,
	correctable_count INTEGER NOT NULL DEFAULT 0,
	cannot_add_count INTEGER NOT NULL DEFAULT 0,
	submitted_at INTEGER,
	finished_at INTEGER,
	error TEXT,
	PRIMARY KEY (run_id, batch_no)
) WITHOUT ROWID;

-- Rejected rows hold personal data: purged after their own (shorter) retention.
CREATE TABLE rejected_rows (
	run_id INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
	seq INTEGER NOT NULL,
	profile_id TEXT,
	email TEXT,
	reason_code TEXT NOT NULL,
	reason TEXT NOT NULL,
	permanent INTEGER NOT NULL DEFAULT 1,
	PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- What ccsync last confirmed in Constant Contact, per export and normalised email.
-- fields_hash covers every mapped value sent; state 'rejected' remembers a permanent rejection of
-- exactly that content so it is not re-sent until it changes. added_by_ccsync guards mirror mode:
-- only contacts ccsync itself put on the list are ever removed from it.
CREATE TABLE sync_state (
	export_id INTEGER NOT NULL REFERENCES exports (export_id) ON DELETE CASCADE,
	email TEXT NOT NULL,
	fields_hash INTEGER NOT NULL,
	state TEXT NOT NULL DEFAULT 'synced' CHECK (state IN ('synced', 'rejected')),
	added_by_ccsync INTEGER NOT NULL DEFAULT 1,
	contact_id TEXT,
	confirmed_run_id INTEGER,
	confirmed_at INTEGER NOT NULL DEFAULT (unixepoch()),
	PRIMARY KEY (export_id, email)
) WITHOUT ROWID;

CREATE TABLE audit_log (
	audit_id INTEGER PRIMARY KEY,
	at INTEGER NOT NULL DEFAULT (unixepoch()),
	uid INTEGER,
	user_name TEXT,
	action TEXT NOT NULL,
	object_type TEXT NOT NULL,
	object_id TEXT,
	before_json TEXT CHECK (before_json IS NULL OR json_valid(before_json)),
	after_json TEXT CHECK (after_json IS NULL OR json_valid(after_json))
);
