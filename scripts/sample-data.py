#!/usr/bin/env python3
"""Writes deterministic sample profiles and segments into a ccsync database, the way an upstream
system does it (schema/README.md): short write transactions, profiles upserted as JSON attribute
documents, each segment's membership replaced in the same transaction.

The database must exist (ccsyncd creates and migrates it; `ccsyncd --check-config --database PATH`
does just that and exits).

Examples:
  sample-data.py --db ccsync.db --profiles 1000 --segment vip=0.3 --segment newsletter=1.0
  sample-data.py --db ccsync.db --profiles 1000000 --segment all=1.0 --churn 0.01 --churn-seed 2

Profile i is the same on every call with the same --seed: email user<i>@example.com (a few are
deliberately invalid when --bad-every is set), first/last name, city, tier. --churn F changes the
names of a fraction F of profiles, removes F/10 from each segment and adds F/10 new profiles to
it, deterministically for a given --churn-seed, so benchmark re-runs are comparable.
"""
import argparse
import json
import random
import sqlite3
import sys

FIRST = ["Ann", "Bo", "Chiara", "Dmitri", "Eve", "Farah", "Gus", "Hana", "Ivo", "Jia", "Kofi",
         "Lena", "Mateo", "Nia", "Oskar", "Priya", "Quinn", "Rosa", "Sven", "Tara"]
LAST = ["Lee", "Rossi", "Novak", "Okafor", "Silva", "Kim", "Müller", "Haddad", "Larsen", "Tanaka",
        "Moreau", "Costa", "Byrne", "Ivanova", "Nguyen", "Schmidt", "Ali", "Dubois", "Kowalski"]
CITY = ["Rome", "Lisbon", "Oslo", "Accra", "Kyoto", "Lima", "Cork", "Graz", "Pune", "Quito"]
TIER = ["bronze", "silver", "gold"]


def profile(i, bad_every, generation=0):
    """Attributes of profile i; generation > 0 models an upstream change of the name fields."""
    email = f"user{i}@example.com"
    if bad_every and i % bad_every == bad_every - 1:
        email = f"user{i}.example.com"  # no @: must be rejected with a reason, never dropped
    first = FIRST[i % len(FIRST)]
    if generation:
        first = f"{first}-{generation}"
    return {
        "email": email,
        "first_name": first,
        "last_name": LAST[(i // len(FIRST)) % len(LAST)],
        "city": CITY[i % len(CITY)],
        "tier": TIER[i % len(TIER)],
        "score": i % 100,
    }


def members(n, fraction, salt):
    """Deterministic subset of range(n) of about fraction * n profiles."""
    if fraction >= 1.0:
        return range(n)
    rng = random.Random(salt)
    return sorted(rng.sample(range(n), int(n * fraction)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--profiles", type=int, default=1000)
    ap.add_argument("--segment", action="append", default=[],
                    help="NAME=FRACTION (repeatable); default all=1.0")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bad-every", type=int, default=0,
                    help="make every Nth email invalid (0: none)")
    ap.add_argument("--churn", type=float, default=0.0)
    ap.add_argument("--churn-seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=50000, help="rows per write transaction")
    args = ap.parse_args()

    segments = []
    for spec in args.segment or ["all=1.0"]:
        name, _, frac = spec.partition("=")
        try:
            fraction = float(frac)
        except ValueError:
            sys.exit(f"--segment {spec!r}: expected NAME=FRACTION, e.g. vip=0.25")
        if not name or not 0.0 < fraction <= 1.0:
            sys.exit(f"--segment {spec!r}: FRACTION must be in (0, 1]")
        segments.append((name, fraction))

    conn = sqlite3.connect(args.db, timeout=60, isolation_level=None)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < 1:
        sys.exit(f"{args.db}: not a ccsync database (run ccsyncd once, or "
                 f"`ccsyncd --check-config --database {args.db}`, to create it)")
    conn.execute("PRAGMA journal_mode = WAL")

    n = args.profiles
    changed = set()
    extra = []
    if args.churn:
        rng = random.Random(args.churn_seed)
        changed = set(rng.sample(range(n), int(n * args.churn)))
        extra = list(range(n, n + int(n * args.churn / 10)))

    upsert = ("INSERT INTO profiles (profile_id, attributes, updated_at) VALUES (?, ?, unixepoch()) "
              "ON CONFLICT (profile_id) DO UPDATE SET attributes = excluded.attributes, "
              "updated_at = excluded.updated_at WHERE attributes IS NOT excluded.attributes")
    ids = list(range(n)) + extra
    for start in range(0, len(ids), args.batch):
        chunk = ids[start:start + args.batch]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(upsert, ((f"p{i:08d}", json.dumps(
            profile(i, args.bad_every, args.churn_seed if i in changed else 0),
            separators=(",", ":"))) for i in chunk))
        conn.execute("COMMIT")

    for name, fraction in segments:
        base = list(members(n, fraction, f"{args.seed}:{name}"))
        if args.churn:
            rng = random.Random(f"{args.churn_seed}:{name}")
            leave = set(rng.sample(base, int(len(base) * args.churn / 10)))
            base = [i for i in base if i not in leave] + extra
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO segments (name) VALUES (?) ON CONFLICT (name) DO UPDATE "
                     "SET updated_at = unixepoch()", (name,))
        sid = conn.execute("SELECT segment_id FROM segments WHERE name = ?", (name,)).fetchone()[0]
        conn.execute("DELETE FROM segment_members WHERE segment_id = ?", (sid,))
        conn.executemany("INSERT INTO segment_members (segment_id, profile_id) VALUES (?, ?)",
                         ((sid, f"p{i:08d}") for i in base))
        conn.execute("COMMIT")
        print(f"segment {name}: {len(base)} members")
    print(f"profiles: {n + len(extra)} written ({len(changed)} changed, {len(extra)} new)")
    conn.close()


if __name__ == "__main__":
    main()
