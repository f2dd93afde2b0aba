#!/usr/bin/env python3
"""Security checks through the real daemon (issue 8); roles and the raw socket are covered by
tests/integration/test_control.py. Here: file modes of the database (+ -wal/-shm) and socket,
no token or secret in any log line (debug level, a whole run with a token refresh), error or
--json output, core dumps disabled (PR_SET_DUMPABLE 0), TLS verification cannot be turned off
(http:// refused; a wrong CA fails the run with a TLS error).
"""
import json
import os
import stat
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relkit  # noqa: E402


class SecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = relkit.Workdir(prefix="ccsync-sec-")
        cls.template = os.path.join(cls.w.path, "template.db")
        relkit.make_template(cls.template, 3000, 500)
        cls.fake = relkit.FakeCC(cls.w.path, "--no-limits", "--activity-delay-ms", "100")

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()
        cls.w.cleanup()

    def test_modes_secrets_and_dumpable(self):
        env = relkit.Env(os.path.join(self.w.path, "a"), self.fake, self.template).setup()
        d = env.daemon
        outputs = []
        env.start_run()
        env.wait_terminal()
        # A refresh mid-life: expire the access token, run again.
        self.fake.faults(expire_tokens=True)
        self.fake.call("POST", "/_fake/lists", {"name": "second"})
        rid = env.start_run()["run_id"]
        env.wait_terminal(rid)
        self.assertGreaterEqual(self.fake.stats()["tokens"]["refreshed"], 1)
        secrets = {env.tokens["access_token"], env.tokens["refresh_token"]}
        for row in d.query("SELECT access_token, refresh_token FROM connection_tokens"):
            secrets |= {row["access_token"], row["refresh_token"]}
        secrets.discard(None)
        for args in (["status"], ["connection", "list"], ["connection", "show", "conn"],
                     ["export", "show", "exp"], ["runs", "exp"], ["run-show", str(rid)],
                     ["audit", "--limit", "1000"], ["lists", "conn"]):
            for j in (["--json"], []):
                res = d.ctl(*j, *args, check=False)
                outputs += [res.stdout, res.stderr]
        res = d.ctl("connection", "show", "nope", check=False)
        outputs += [res.stdout, res.stderr]
        outputs.append(d.log())
        outputs += [r["error"] or "" for r in env.runs()]
        blob = "\n".join(outputs)
        for s in secrets:
            self.assertNotIn(s, blob)
            self.assertNotIn(s[:24], blob)   # nor a prefix of it
        self.assertNotIn("test-secret", blob)
        # File modes.
        self.assertEqual(stat.S_IMODE(os.stat(d.socket_path).st_mode), 0o660)
        for suffix in ("", "-wal", "-shm"):
            p = d.db_path + suffix
            if os.path.exists(p):
                self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o600, p)
        # Core dumps off: a non-dumpable process's /proc/PID files belong to root; so run a
        # second daemon as an unprivileged user and look.
        d.stop()
        if os.geteuid() == 0:
            wd = os.path.join(self.w.path, "nobody")
            os.makedirs(wd)
            os.chown(wd, 65534, 65534)
            d2 = relkit.Daemon(wd, fake=self.fake)
            os.chown(d2.config_path, 65534, 65534)
            import pwd
            d2.env["HOME"] = "/"
            orig = subprocess.Popen

            def as_nobody(*a, **kw):
                kw["user"], kw["group"], kw["extra_groups"] = 65534, 65534, []
                return orig(*a, **kw)
            subprocess.Popen = as_nobody
            try:
                d2.start(wait_ready=False)   # (our notify socket is not nobody's to write)
            finally:
                subprocess.Popen = orig
            try:
                relkit.wait_for(lambda: os.path.exists(d2.socket_path) or d2.proc.poll(),
                                timeout=30, what="nobody's daemon listening")
                self.assertIsNone(d2.proc.poll(), d2.log())
                st = os.stat(f"/proc/{d2.proc.pid}/status")
                self.assertEqual(st.st_uid, 0, "ccsyncd is dumpable (PR_SET_DUMPABLE not 0)")
                del pwd
            finally:
                d2.proc.terminate()
                d2.proc.wait(timeout=30)

    def test_redirect_to_another_host_not_followed(self):
        """api_base answers every request with 302 to another host; that host must see no
        request at all (so no token), and the run fails with a clear error."""
        import http.server
        import ssl
        import threading
        seen = []

        class Catch(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
            do_POST = do_GET

            def log_message(self, *a):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(self.fake.dir, "server.pem"),
                            os.path.join(self.fake.dir, "server.key"))
        catcher = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Catch)
        catcher.socket = ctx.wrap_socket(catcher.socket, server_side=True)
        target = f"https://localhost:{catcher.server_address[1]}"

        class Redirect(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(302)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
            do_POST = do_GET

            def log_message(self, *a):
                pass

        redir = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
        redir.socket = ctx.wrap_socket(redir.socket, server_side=True)
        servers = [catcher, redir]
        for srv in servers:
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            env = relkit.Env(os.path.join(self.w.path, "redirect"), self.fake, self.template,
                             config={"constant_contact.api_base":
                                     f"https://127.0.0.1:{redir.server_address[1]}/v3"})
            env.daemon.start()
            env.list_id = "0b1c3f4a-8a51-11ee-9f4c-fa163e0b7c29"
            env.daemon.ctl("connection", "add", "conn", "--client-id", relkit.CLIENT_ID)
            env.daemon.ctl("connection", "consent", "conn")
            env.authorize("conn")
            env.daemon.ctl("export", "add", "exp", "--connection", "conn", "--list-id",
                           env.list_id, "--email-field", "email", "--segment", "all",
                           check=False)
            if env.daemon.query("SELECT 1 FROM exports"):
                rid = env.start_run()["run_id"]
                env.wait_terminal(rid)
                run = env.runs()[-1]
                self.assertEqual(run["state"], "failed", run)
                self.assertTrue(run["error"], run)
            self.assertEqual(seen, [], "a redirect to another host was followed")
            self.assertTrue(env.status_ok())
            env.daemon.stop()
        finally:
            for srv in servers:
                srv.shutdown()
                srv.server_close()

    def test_tls_cannot_be_turned_off(self):
        wd = os.path.join(self.w.path, "http")
        os.makedirs(wd)
        d = relkit.Daemon(wd, fake=self.fake, config={
            "constant_contact.api_base": f"http://127.0.0.1:{self.fake.port}/v3"})
        res = subprocess.run([relkit.CCSYNCD, "--config", d.config_path, "--check-config"],
                             capture_output=True, text=True)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("https", (res.stdout + res.stderr).lower())
        # A wrong CA: the run fails with a TLS error, nothing sent.
        other = os.path.join(self.w.path, "other-ca.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", other + ".key",
                        "-out", other, "-subj", "/CN=other", "-days", "2"],
                       check=True, capture_output=True)
        env = relkit.Env(os.path.join(self.w.path, "wrongca"), self.fake, self.template,
                         config={"constant_contact.ca_file": other})
        env.daemon.start()
        env.list_id = self.fake.create_list("wrong-ca")["list_id"]
        env.daemon.ctl("connection", "add", "conn", "--client-id", relkit.CLIENT_ID)
        env.daemon.ctl("connection", "consent", "conn")
        env.authorize("conn")
        res = env.daemon.ctl("export", "add", "exp", "--connection", "conn", "--list-id",
                             env.list_id, "--email-field", "email", "--segment", "all",
                             check=False)
        if res.returncode == 0:
            rid = env.start_run()["run_id"]
            env.wait_terminal(rid)
            run = env.runs()[-1]
            self.assertEqual(run["state"], "failed", run)
            err = run["error"].lower()
        else:
            err = res.stderr.lower()
        self.assertRegex(err, "tls|ssl|certificate", err)
        self.assertEqual(self.fake.list_members(env.list_id), [])
        self.assertTrue(env.status_ok())
        env.daemon.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
