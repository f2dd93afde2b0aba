"""Small stdlib-only helper to start fakecc and talk to it (used by test_fakecc.py;
usable by other Python test drivers).

    with FakeCC(tmpdir, "--no-limits") as fake:
        tok = fake.fake("POST", "/tokens", {"client_id": "test-client"})[1]
        st, body, hdrs = fake.api("GET", "/contact_lists", token=tok["access_token"])
"""

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class FakeCC:
    def __init__(self, directory, *args, timeout=20.0, stderr=None):
        self.dir = os.path.abspath(directory)
        self.args = list(args)
        self.timeout = timeout
        self.proc = None
        self.info = None
        self.ctx = None
        self._conn = None
        self._stderr = stderr

    # -- lifecycle
    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        ready = os.path.join(self.dir, "ready.json")
        if os.path.exists(ready):
            os.unlink(ready)
        self.proc = subprocess.Popen(
            [PYTHON, os.path.join(HERE, "fakecc.py"), "--dir", self.dir, "--exit-with-parent"]
            + self.args, stderr=self._stderr)
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("fakecc exited with %s" % self.proc.returncode)
            try:
                with open(ready) as f:
                    self.info = json.load(f)
                break
            except (FileNotFoundError, ValueError):
                time.sleep(0.02)
        else:
            self.stop()
            raise RuntimeError("fakecc did not become ready")
        self.ctx = ssl.create_default_context(cafile=self.info["ca_file"])
        return self

    def stop(self):
        if self._conn:
            self._conn.close()
            self._conn = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- HTTP
    @property
    def port(self):
        return self.info["port"]

    def connection(self, new=False):
        if new:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
        if self._conn is None:
            self._conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                     timeout=30)
        return self._conn

    def request(self, method, path, body=None, headers=None, conn=None):
        """Raw request; returns (status, raw_bytes, headers dict lower-cased)."""
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):
            c = conn or self.connection()
            try:
                c.request(method, path, body=body, headers=h)
                r = c.getresponse()
                data = r.read()
                return r.status, data, {k.lower(): v for k, v in r.getheaders()}
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                if conn is not None or attempt:
                    raise
                self._conn.close()
                self._conn = None

    @staticmethod
    def _decode(data):
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    def fake(self, method, path, body=None):
        st, data, h = self.request(method, "/_fake" + path, body)
        return st, self._decode(data)

    def api(self, method, path, body=None, token=None, headers=None, conn=None):
        h = {"Accept": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        if not path.startswith("/v3"):
            path = "/v3" + path
        st, data, rh = self.request(method, path, body, h, conn=conn)
        return st, self._decode(data), rh

    def oauth(self, method, path, form=None, basic=None, query=None, conn=None):
        h = {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if basic:
            h["Authorization"] = "Basic " + base64.b64encode(
                ("%s:%s" % basic).encode()).decode()
        p = "/oauth2/default/v1" + path
        if query:
            p += "?" + urllib.parse.urlencode(query)
        st, data, rh = self.request(method, p, body, h, conn=conn)
        return st, self._decode(data), rh

    # -- conveniences
    def token(self, client_id="test-client", scope=None, expires_in=None):
        b = {"client_id": client_id}
        if scope is not None:
            b["scope"] = scope
        if expires_in is not None:
            b["expires_in"] = expires_in
        st, body = self.fake("POST", "/tokens", b)
        assert st == 201, (st, body)
        return body

    def wait_activity(self, token, activity_id, timeout=10.0):
        deadline = time.time() + timeout
        while True:
            st, a, _ = self.api("GET", "/activities/" + activity_id, token=token)
            if st == 200 and a["state"] in ("completed", "failed", "timed_out", "cancelled"):
                return a
            if time.time() > deadline:
                raise TimeoutError("activity %s still %s" % (activity_id, a))
            time.sleep(0.02)
