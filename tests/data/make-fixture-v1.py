#!/usr/bin/env python3
"""Writes tests/data/schema-v1.db: a database at schema version 1 with a little data in every table.

It is the released v1 format frozen in a file, so later migrations can be tested against what real
installations hold (fwupd's history_v*.db idea). Regenerate only if 0001-initial.sql itself is
corrected before release; once released, the fixture must never change.

    python3 tests/data/make-fixture-v1.py [OUTPUT]

Only the Python standard library is used. Times are fixed so the file is reproducible; the
tokens are obviously fake.
"""
import json
import os
import sqlite3
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "schema", "0001-initial.sql")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "schema-v1.db")
T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def main():
    if os.path.exists(OUT):
        os.unlink(OUT)
    db = sqlite3.connect(OUT, isolation_level=None)
    db.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
    db.execute("PRAGMA foreign_keys = ON")
    with open(SCHEMA, encoding="utf-8") as f:
        schema = f.read()
    db.execute("BEGIN")
    for stmt in split_sql(schema):
        db.execute(stmt)
    db.execute("PRAGMA user_version = 1")

    profiles = [
        ("p1", {"email": "Ann@Example.org", "first": "Ann", "last": "Lee", "tier": "gold"}),
        ("p2", {"email": "bob@example.org", "first": "Bob", "score": 42, "vip": True}),
        ("p3", {"email": "not-an-email", "first": "Cy"}),
        ("p4", {"email": "ann@example.org ", "first": "Annie"}),
    ]
    db.executemany("INSERT INTO profiles (profile_id, attributes, updated_at) VALUES (?, ?, ?)",
                   [(pid, json.dumps(a), T0) for pid, a in profiles])
    db.execute("INSERT INTO segments (segment_id, name, description, updated_at) VALUES "
               "(1, 'customers', 'all paying customers', ?), (2, 'newsletter', NULL, ?)", (T0, T0))
    db.executemany("INSERT INTO segment_members (segment_id, profile_id) VALUES (?, ?)",
                   [(1, "p1"), (1, "p2"), (1, "p3"), (2, "p2"), (2, "p4"), (2, "p-gone")])
    db.execute("INSERT INTO upstream_refreshes (refresh_id, finished_at, consumed_at) VALUES "
               "(1, ?, ?), (2, ?, NULL)", (T0, T0 + 60, T0 + 3600))

    db.execute("INSERT INTO connections (connection_id, name, usable_by, client_id, auth_flow, "
               "consent_by, consent_uid, consent_at, auth_state, created_at, updated_at) VALUES "
               "(1, 'main account', 'admins_and_contributors', 'fixture-client-id', 'device', "
               "'alice', 1000, ?, 'authorized', ?, ?)", (T0, T0, T0))
    db.execute("INSERT INTO connection_tokens (connection_id, access_token, access_expires_at, "
               "refresh_token, updated_at) VALUES (1, 'fixture-access-token', ?, "
               "'fixture-refresh-token', ?)", (T0 + 86400, T0))
    db.execute("INSERT INTO api_usage (client_id, day, requests, paused_until) VALUES "
               "('fixture-client-id', '2023-11-14', 17, NULL)")

    db.execute("INSERT INTO exports (export_id, name, connection_id, list_id, mode, email_field, "
               "first_name_field, last_name_field, follows_refresh, mirror_max_remove_share, "
               "enabled, created_by, created_at, updated_at) VALUES "
               "(1, 'customers to CC', 1, '04fe9a97-a579-43c5-bb1a-58ed29bf0a6a', 'mirror', "
               "'email', 'first', 'last', 1, 0.1, 1, 'alice', ?, ?)", (T0, T0))
    db.execute("INSERT INTO export_segments (export_id, segment_id) VALUES (1, 1), (1, 2)")
    db.execute("INSERT INTO export_fields (export_id, target, source_field) VALUES "
               "(1, 'cf:tier', 'tier'), (1, 'job_title', 'title')")
    db.execute("INSERT INTO schedules (export_id, cron, time_zone, last_due_at) VALUES "
               "(1, '0 2 * * *', 'Europe/Rome', ?)", (T0,))

    db.execute("INSERT INTO runs (run_id, export_id, state, trigger, requested_by, queued_at, "
               "started_at, finished_at, selected, sent, rejected, unchanged, removed, pending, "
               "batches_total, batches_done, error) VALUES "
               "(1, 1, 'partially_succeeded', 'schedule', NULL, ?, ?, ?, 5, 2, 3, 0, 0, 0, 1, 1, "
               "NULL), "
               "(2, 1, 'interrupted', 'demand', 'alice', ?, ?, ?, 5, 0, 3, 2, 0, 0, 0, 0, "
               "'the daemon stopped during the run')",
               (T0, T0 + 1, T0 + 30, T0 + 100, T0 + 101, T0 + 200))
    db.execute("INSERT INTO runs (run_id, export_id, state, trigger, resumed_from, queued_at) "
               "VALUES (3, 1, 'queued', 'resume', 2, ?)", (T0 + 300,))
    db.execute("INSERT INTO run_batches (run_id, batch_no, kind, state, contacts, bytes, "
               "activity_id, activity_state, attempts, error_count, submitted_at, finished_at) "
               "VALUES (1, 1, 'import', 'confirmed', 2, 512, "
               "'4b6b7b1e-0000-4000-8000-000000000001', 'completed', 1, 0, ?, ?)",
               (T0 + 2, T0 + 20))
    db.executemany("INSERT INTO rejected_rows (run_id, seq, profile_id, email, reason_code, "
                   "reason, permanent) VALUES (1, ?, ?, ?, ?, ?, 1)",
                   [(1, "p3", "not-an-email", "email_invalid", "invalid email (no_at)"),
                    (2, "p4", "ann@example.org", "duplicate", "duplicate email: profile 'p1'"),
                    (3, "p-gone", None, "profile_missing", "no profile row")])
    db.executemany("INSERT INTO sync_state (export_id, email, fields_hash, state, "
                   "added_by_ccsync, contact_id, confirmed_run_id, confirmed_at) VALUES "
                   "(1, ?, ?, ?, ?, ?, 1, ?)",
                   [("ann@example.org", 1234567890123, "synced", 1, None, T0 + 20),
                    ("bob@example.org", -42, "synced", 0, "c0ffee00-0000-4000-8000-000000000002",
                     T0 + 20),
                    ("old@example.org", 7, "rejected", 0, None, T0 + 20)])
    db.execute("INSERT INTO audit_log (at, uid, user_name, action, object_type, object_id, "
               "before_json, after_json) VALUES (?, 1000, 'alice', 'export.add', 'export', '1', "
               "NULL, ?)", (T0, json.dumps({"name": "customers to CC"})))
    db.execute("COMMIT")
    db.execute("VACUUM")
    db.close()


def split_sql(text):
    """Splits the migration into statements (it has no triggers, so ';' at line end suffices)."""
    stmt, out = [], []
    for line in text.splitlines():
        if line.strip().startswith("--") and not stmt:
            continue
        stmt.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(stmt))
            stmt = []
    return out


if __name__ == "__main__":
    main()
