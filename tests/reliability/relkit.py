"""Shared set-up for the reliability suite (tests/reliability): a fake Constant Contact, a data
set written once by scripts/sample-data.py into a template database, and a real ccsyncd on a copy
of it with an authorized connection and one export of segment 'all' to one list.

Only the Python standard library; builds on tests/integration/harness.py.
"""
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import (CCSYNCCTL, CCSYNCD, PYTHON, SOURCE_ROOT, Daemon, FakeCC, Workdir,  # noqa: E402,F401
                     wait_for)

SAMPLE_DATA = os.path.join(SOURCE_ROOT, "scripts", "sample-data.py")
CLIENT_ID = "test-client"
TERMINAL = ("succeeded", "partially_succeeded", "failed", "cancelled", "interrupted")


def make_template(path, profiles, bad_every=500):
    """A migrated database holding `profiles` sample profiles, all in segment 'all'."""
    conf = path + ".conf"
    with open(conf, "w") as f:
        f.write(f"[daemon]\ndatabase = {path}\ncontrol_socket = {path}.sock\n")
    subprocess.run([CCSYNCD, "--config", conf, "--check-config"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([PYTHON, SAMPLE_DATA, "--db", path, "--profiles", str(profiles),
                    "--segment", "all=1.0", "--bad-every", str(bad_every)], check=True,
                   stdout=subprocess.DEVNULL)
    os.unlink(conf)


def expected_emails(db_path):
    """The segment's valid emails as the fake stores them (lower case), by the daemon's own
    verdict: every selected profile not rejected. Computed from the template data."""
    import sqlite3
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(
            "SELECT json_extract(p.attributes, '$.email') FROM profiles p "
            "JOIN segment_members m USING (profile_id) JOIN segments s USING (segment_id) "
            "WHERE s.name = 'all'").fetchall()
    finally:
        conn.close()
    return rows


class Env:
    """One fake + one daemon on a fresh copy of a template database."""

    def __init__(self, workdir, fake, template=None, config=None, env=None):
        self.fake = fake
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.daemon = Daemon(workdir, fake=fake, config=config or {}, env=env)
        if template:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.daemon.db_path + suffix):
                    os.unlink(self.daemon.db_path + suffix)
            shutil.copyfile(template, self.daemon.db_path)
            os.chmod(self.daemon.db_path, 0o600)
        self.list_id = None

    def setup(self, export="exp", list_name="reliability", start=True):
        """Starts the daemon, adds an authorized connection and an export to a new list."""
        if start:
            self.daemon.start()
        self.list_id = self.fake.create_list(list_name)["list_id"]
        self.daemon.ctl("connection", "add", "conn", "--client-id", CLIENT_ID)
        self.daemon.ctl("connection", "consent", "conn")
        self.authorize("conn")
        self.daemon.ctl("export", "add", export, "--connection", "conn", "--list-id",
                        self.list_id, "--email-field", "email", "--first-name-field",
                        "first_name", "--last-name-field", "last_name", "--segment", "all")
        return self

    def authorize(self, name):
        """Tokens minted by the fake written as the device flow would have left them."""
        tok = self.fake.mint_tokens(CLIENT_ID, public=True)  # a device-flow grant
        self.tokens = tok
        with self.daemon.db() as db:
            cid = db.execute("SELECT connection_id FROM connections WHERE name = ?",
                             (name,)).fetchone()[0]
            db.execute("INSERT OR REPLACE INTO connection_tokens (connection_id, access_token, "
                       "access_expires_at, refresh_token) VALUES (?, ?, unixepoch() + ?, ?)",
                       (cid, tok["access_token"], tok["expires_in"], tok["refresh_token"]))
            db.execute("UPDATE connections SET auth_state = 'authorized', auth_error = NULL "
                       "WHERE connection_id = ?", (cid,))

    # ---- runs ----

    def runs(self):
        return self.daemon.query("SELECT * FROM runs ORDER BY run_id")

    def start_run(self, export="exp"):
        out = self.daemon.ctl_json("run", export)
        return out

    def wait_terminal(self, run_id=None, timeout=600):
        """Waits until no run is queued/running (and, if given, run_id is terminal)."""
        def done():
            rows = self.runs()
            if not rows:
                return None
            if any(r["state"] in ("queued", "running") for r in rows):
                return None
            if run_id is not None and not any(r["run_id"] == run_id and r["state"] in TERMINAL
                                              for r in rows):
                return None
            return rows
        return wait_for(done, timeout=timeout, interval=0.1, what="runs terminal")

    def list_emails(self):
        st = self.fake.call("GET", f"/_fake/state?list_id={self.list_id}&format=emails")
        return st

    def status_ok(self):
        res = self.daemon.ctl("status", check=False, timeout=60)
        return res.returncode == 0

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.daemon.proc.pid}/fd"))

    def rss_kb(self):
        with open(f"/proc/{self.daemon.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def instrumented():
    """'valgrind', 'asan' or None: the slower builds get shorter campaigns (CI time)."""
    if os.environ.get("CCSYNC_VALGRIND"):
        return "valgrind"
    try:
        with open(CCSYNCD, "rb") as f:
            if b"__asan_init" in f.read():
                return "asan"
    except OSError:
        pass
    return None
