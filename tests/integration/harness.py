"""Shared harness for ccsync's integration tests, benchmark and reliability suites.

Starts the fake Constant Contact (tests/fakecc) and the real ccsyncd in a private temporary
directory, waits for READY=1 on a NOTIFY_SOCKET of its own (so tests exercise the same readiness
protocol systemd uses), runs ccsyncctl, and gives direct read access to the database.

Environment (set by meson): CCSYNC_BUILD_ROOT, CCSYNC_SOURCE_ROOT.
Only the Python standard library is used.
"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SOURCE_ROOT = os.environ.get("CCSYNC_SOURCE_ROOT",
                             os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_ROOT = os.environ.get("CCSYNC_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
CCSYNCD = os.path.join(BUILD_ROOT, "daemon", "ccsyncd")
CCSYNCCTL = os.path.join(BUILD_ROOT, "daemon", "ccsyncctl")
FAKECC = os.path.join(SOURCE_ROOT, "tests", "fakecc", "fakecc.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls predicate() until it returns a true value; returns it or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class FakeCC:
    """The fake Constant Contact server, as a subprocess, with its /_fake/ control API."""

    def __init__(self, workdir, *extra_args):
        self.dir = os.path.join(workdir, "fakecc")
        os.makedirs(self.dir, exist_ok=True)
        self.log = open(os.path.join(self.dir, "fakecc.log"), "wb")
        self.proc = subprocess.Popen([PYTHON, FAKECC, "--dir", self.dir, *extra_args],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        ready = os.path.join(self.dir, "ready.json")

        def is_ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"fakecc exited with {self.proc.returncode}; see {self.log.name}")
            return os.path.exists(ready)
        wait_for(is_ready, timeout=30, what="fakecc ready.json")
        with open(ready) as f:
            self.info = json.load(f)
        self.port = self.info["port"]
        self.ca_file = self.info["ca_file"]
        self.api_base = self.info["api_base"]
        self.auth_base = self.info["auth_base"]
        self.base = f"https://127.0.0.1:{self.port}"
        self.ssl = ssl.create_default_context(cafile=self.ca_file)

    def call(self, method, path, body=None, expect=(200, 201, 204)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ssl, timeout=60) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        if expect and status not in expect:
            raise AssertionError(f"fakecc {method} {path}: HTTP {status}: {raw[:500]!r}")
        return json.loads(raw) if raw else None

    # Convenience wrappers over the /_fake/ API.
    def create_list(self, name):
        return self.call("POST", "/_fake/lists", {"name": name})

    def mint_tokens(self, client_id="test-client", **kw):
        return self.call("POST", "/_fake/tokens", {"client_id": client_id, **kw})

    def list_members(self, list_id):
        return self.call("GET", f"/_fake/state?list_id={list_id}")["members"]

    def stats(self):
        return self.call("GET", "/_fake/stats")

    def reset_stats(self):
        return self.call("POST", "/_fake/stats/reset", {})

    def faults(self, **faults):
        return self.call("POST", "/_fake/faults", faults)

    def clear_faults(self):
        return self.call("DELETE", "/_fake/faults")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Daemon:
    """A real ccsyncd with its own config, database and control socket in workdir."""

    def __init__(self, workdir, fake=None, config=None, env=None):
        self.workdir = workdir
        self.db_path = os.path.join(workdir, "ccsync.db")
        self.socket_path = os.path.join(workdir, "control.sock")
        self.config_path = os.path.join(workdir, "ccsync.conf")
        self.log_path = os.path.join(workdir, "ccsyncd.log")
        self.fake = fake
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc = None
        self.write_config(config or {})

    def write_config(self, overrides):
        sections = {
            "daemon": {"database": self.db_path, "control_socket": self.socket_path,
                       "log_level": "debug"},
            "schedule": {},
            "export": {},
            "constant_contact": {},
            "history": {},
        }
        if not self.fake:
            # Hermetic: a refused loopback port instead of the real API (and its DNS).
            sections["constant_contact"].update({
                "api_base": "https://127.0.0.1:9/v3",
                "auth_base": "https://127.0.0.1:9/oauth2/default/v1"})
        if self.fake:
            sections["constant_contact"].update({
                "api_base": self.fake.api_base, "auth_base": self.fake.auth_base,
                "ca_file": self.fake.ca_file, "poll_initial_ms": "50", "poll_max_ms": "500"})
        for key, value in overrides.items():
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = str(value)
        with open(self.config_path + ".tmp", "w") as f:
            for section, keys in sections.items():
                f.write(f"[{section}]\n")
                for name, value in keys.items():
                    f.write(f"{name} = {value}\n")
        os.replace(self.config_path + ".tmp", self.config_path)

    def start(self, extra_args=(), wait_ready=True, timeout=20):
        """Starts ccsyncd with a NOTIFY_SOCKET of ours; returns the READY message fields."""
        notify_path = os.path.join(self.workdir, "notify.sock")
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        self.notify.settimeout(0.2)
        self.notifications = []
        self.notify_lock = threading.Lock()
        # Drained continuously, as systemd does: a full datagram queue would block the daemon's
        # sd_notify and with it the whole loop.
        self.notify_thread = threading.Thread(target=self._drain_notify, daemon=True)
        self.notify_thread.start()
        env = dict(self.env, NOTIFY_SOCKET=notify_path)
        self.logf = open(self.log_path, "ab")
        # CCSYNC_VALGRIND=1 (meson test --setup valgrind): ccsyncd under memcheck; any error or
        # leak makes it exit 99, which the tests' exit-status checks then report.
        wrapper = []
        if os.environ.get("CCSYNC_VALGRIND"):
            wrapper = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                       "--errors-for-leak-kinds=definite,indirect", "--track-fds=no",
                       f"--log-file={self.log_path}.valgrind.%p"]
            timeout *= 10
        self.proc = subprocess.Popen([*wrapper, CCSYNCD, "--config", self.config_path,
                                      "--log-target", "stderr", *extra_args],
                                     stdout=self.logf, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            return self.wait_notification("READY=1", timeout=timeout)
        return None

    def _drain_notify(self):
        sock = self.notify
        while True:
            try:
                msg = sock.recv(4096).decode()
            except socket.timeout:
                continue
            except OSError:
                return  # closed by stop()
            fields = dict(line.split("=", 1) for line in msg.splitlines() if "=" in line)
            with self.notify_lock:
                self.notifications.append(fields)

    def wait_notification(self, needle, timeout=20, after=0):
        """Waits for a notification with KEY=VALUE among those received from index after on."""
        key, value = needle.split("=", 1)

        def seen():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ccsyncd exited with {self.proc.returncode}:\n{self.log()}")
            with self.notify_lock:
                for n in self.notifications[after:]:
                    if n.get(key) == value:
                        return n
            return None
        return wait_for(seen, timeout=timeout, interval=0.01, what=needle)

    def ctl(self, *args, uid=None, gid=None, groups=None, check=True, timeout=120, input=None):
        """Runs ccsyncctl against this daemon; returns CompletedProcess (text)."""
        cmd = [CCSYNCCTL, "--socket", self.socket_path, *args]
        kw = {}
        if uid is not None:
            def demote():
                if groups is not None:
                    os.setgroups(groups)
                os.setgid(gid if gid is not None else uid)
                os.setuid(uid)
            kw["preexec_fn"] = demote
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input,
                             env=self.env, **kw)
        if check and res.returncode != 0:
            raise AssertionError(f"ccsyncctl {' '.join(args)} exited {res.returncode}\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def ctl_json(self, *args, **kw):
        res = self.ctl("--json", *args, **kw)
        return json.loads(res.stdout)

    def db(self):
        """A read-write connection to the daemon's database (as the upstream writer would)."""
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql, *params):
        with self.db() as conn:
            return [dict(r) for r in conn.execute(sql, params)]

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ccsyncd did not stop within {timeout}s:\n{self.log()}")
        finally:
            self.logf.close()
            self.notify.close()
        if os.environ.get("CCSYNC_VALGRIND") and self.proc.returncode == 99:
            raise AssertionError(f"valgrind memcheck found errors or leaks in ccsyncd: see "
                                 f"{self.log_path}.valgrind.{self.proc.pid}")
        return self.proc.returncode

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.logf.close()
        self.notify.close()

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


def load_sample_data(db_path, profiles, segments):
    """Writes profiles and segment membership the documented upstream way (schema/README.md):
    one transaction, profiles upserted, membership replaced per segment.

    profiles: iterable of (profile_id, attributes dict); segments: {name: [profile_id, ...]}."""
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        with conn:
            conn.executemany(
                "INSERT INTO profiles (profile_id, attributes, updated_at) VALUES (?, ?, unixepoch()) "
                "ON CONFLICT (profile_id) DO UPDATE SET attributes = excluded.attributes, "
                "updated_at = excluded.updated_at",
                ((pid, json.dumps(attrs)) for pid, attrs in profiles))
            for name, members in segments.items():
                conn.execute("INSERT INTO segments (name) VALUES (?) ON CONFLICT (name) DO UPDATE "
                             "SET updated_at = unixepoch()", (name,))
                sid = conn.execute("SELECT segment_id FROM segments WHERE name = ?",
                                   (name,)).fetchone()[0]
                conn.execute("DELETE FROM segment_members WHERE segment_id = ?", (sid,))
                conn.executemany("INSERT INTO segment_members (segment_id, profile_id) VALUES (?, ?)",
                                 ((sid, pid) for pid in members))
    finally:
        conn.close()


class Workdir:
    """A temporary directory removed at exit unless the test failed and CCSYNC_KEEP is set."""

    def __init__(self, prefix="ccsync-it-"):
        self.path = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.path, 0o755)

    def cleanup(self):
        if not os.environ.get("CCSYNC_KEEP"):
            shutil.rmtree(self.path, ignore_errors=True)
