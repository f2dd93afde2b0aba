#!/usr/bin/env python3
"""The control socket and ccsyncctl against a running ccsyncd, as root, as a non-root admin, as a
contributor and as a stranger (throw-away users and groups made with useradd/groupadd, removed
afterwards). Every command's answer is checked, and so is the database afterwards: a refused or
invalid command must change nothing, an accepted one exactly what it says, with its audit row.

Raw-socket tests feed the daemon malformed, oversized, truncated, interleaved and abandoned
messages and check that it answers clearly and keeps serving everyone else.

Ops of other modules (runner, Constant Contact client, importer, status) are not wired into the
daemon yet; test_unwired_ops_say_not_available asserts that the commands needing them say so,
and every other test holds whether they are wired or not.
"""
import json
import os
import random
import socket
import stat
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, Workdir, load_sample_data, wait_for  # noqa: E402

OK, FAILED, USAGE, NOT_FOUND, DENIED, CONFLICT, UNREACHABLE = 0, 1, 2, 3, 4, 5, 69
LIST_A = "0b1c3f4a-8a51-11ee-9f4c-fa163e0b7c29"
LIST_B = "9d7f2c10-8a51-11ee-9f4c-fa163e0b7c29"
ACCESS_TOKEN = "AT-secret-7f3a9c21d4e8b6"
REFRESH_TOKEN = "RT-secret-0c5e1b9a2f7d33"


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Accounts:
    """Throw-away groups and users; everything made is removed again."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}{random.randrange(1000):03d}"
        self.admin_group = f"ccta{tag}"
        self.contributor_group = f"cctc{tag}"
        self.groups = []
        self.users = []
        for g in (self.admin_group, self.contributor_group):
            run(["groupadd", g])
            self.groups.append(g)
        # Admins are members of both groups: the socket's group is the contributor group.
        self.admin = self.user(f"ccua{tag}", [self.admin_group, self.contributor_group])
        self.contributor = self.user(f"ccuc{tag}", [self.contributor_group])
        self.stranger = self.user(f"ccus{tag}", [])

    def user(self, name, groups):
        cmd = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        if groups:
            cmd += ["-G", ",".join(groups)]
        run(cmd + [name])
        self.users.append(name)
        import pwd
        pw = pwd.getpwnam(name)
        return {"name": name, "uid": pw.pw_uid, "gid": pw.pw_gid,
                "groups": os.getgrouplist(name, pw.pw_gid)}

    def remove(self):
        for u in self.users:
            subprocess.run(["userdel", u], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for g in self.groups:
            subprocess.run(["groupdel", g], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


class ControlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.accounts = Accounts()
        cls.workdir = Workdir()
        cls.daemon = Daemon(cls.workdir.path, config={
            "daemon.admin_group": cls.accounts.admin_group,
            "daemon.contributor_group": cls.accounts.contributor_group,
        })
        cls.daemon.start()
        cls.json_outputs = []
        load_sample_data(cls.daemon.db_path, [
            ("p1", {"email": "ann@example.com", "first": "Ann", "last": "Lee", "title": "CEO"}),
            ("p2", {"email": "bob@example.com", "first": "Bob", "tier": "gold"}),
            ("p3", {"email": "cy@example.com"}),
        ], {"vip": ["p1", "p2"], "all": ["p1", "p2", "p3"]})

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.daemon.proc and cls.daemon.proc.poll() is None:
                cls.daemon.stop()
        finally:
            cls.accounts.remove()
            cls.workdir.cleanup()

    # ---- helpers ----

    def who(self, role):
        if role == "root":
            return {}
        u = getattr(self.accounts, role)
        return {"uid": u["uid"], "gid": u["gid"], "groups": u["groups"]}

    def ctl(self, role, *args, expect=OK, json_out=False, input=None):
        """Runs ccsyncctl as role, asserts its exit status, returns (stdout, stderr) or JSON."""
        full = (["--json"] if json_out else []) + list(args)
        res = self.daemon.ctl(*full, check=False, input=input, **self.who(role))
        if res.returncode != expect:
            self.fail(f"ccsyncctl {' '.join(full)} as {role}: exit {res.returncode}, wanted "
                      f"{expect}\nstdout: {res.stdout}\nstderr: {res.stderr}")
        if json_out:
            self.json_outputs.append(res.stdout)
        if json_out and expect == OK:
            return json.loads(res.stdout)
        return res.stdout, res.stderr

    def q(self, sql, *params):
        return self.daemon.query(sql, *params)

    def q1(self, sql, *params):
        rows = self.q(sql, *params)
        return next(iter(rows[0].values())) if rows else None

    def snapshot(self):
        """The configuration tables, to prove that a refused command changed nothing."""
        snap = {}
        for table in ("connections", "connection_tokens", "exports", "export_segments",
                      "export_fields", "schedules", "audit_log", "upstream_refreshes"):
            snap[table] = self.q(f"SELECT * FROM {table} ORDER BY 1")
        # Which runs exist, not how far they got: runs started earlier (refresh-done) go on
        # changing state in the background while a refused command is checked.
        snap["runs"] = self.q("SELECT run_id, export_id, trigger, dry_run, full_resend, force "
                              "FROM runs ORDER BY 1")
        return snap

    def assert_refused(self, role, *args, expect, message=None):
        before = self.snapshot()
        _, err = self.ctl(role, *args, expect=expect)
        self.assertEqual(self.snapshot(), before, f"{args} as {role} changed the database")
        self.assertTrue(err.startswith("ccsyncctl: "), err)
        if message:
            self.assertIn(message, err)
        return err

    def add_connection(self, name, usable_by="admins", role="root", consent=False):
        args = ["connection", "add", name, "--client-id", f"key-{name}"]
        if usable_by != "admins":
            args += ["--usable-by", usable_by]
        out = self.ctl(role, *args, json_out=True)
        cid = out["connection"]["id"]
        if consent:
            self.ctl("root", "connection", "consent", name)
        return cid

    def add_export(self, name, connection, role="root", *extra):
        out = self.ctl(role, "export", "add", name, "--connection", connection, "--list-id",
                       LIST_A, "--email-field", "email", "--segment", "vip", *extra,
                       json_out=True)
        return out["export"]["id"]

    def last_audit(self):
        return self.q("SELECT * FROM audit_log ORDER BY audit_id DESC LIMIT 1")[0]

    def raw(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # blocking connect: with a timeout, a full listen backlog fails at once with EAGAIN
        s.connect(self.daemon.socket_path)
        s.settimeout(30)
        return s

    @staticmethod
    def read_lines(s, n):
        buf, lines = b"", []
        while len(lines) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf and len(lines) < n:
                line, buf = buf.split(b"\n", 1)
                lines.append(json.loads(line))
        return lines

    @staticmethod
    def read_to_eof(s):
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
        return [json.loads(x) for x in buf.split(b"\n") if x]

    @staticmethod
    def req(rid, command, **args):
        return (json.dumps({"version": 1, "id": rid, "command": command, "args": args}) +
                "\n").encode()

    # ---- socket and roles ----

    def test_socket_file_mode_and_group(self):
        st = os.stat(self.daemon.socket_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        import grp
        self.assertEqual(st.st_gid, grp.getgrnam(self.accounts.contributor_group).gr_gid)

    def test_whoami_roles(self):
        self.assertEqual(self.ctl("root", "whoami", json_out=True)["role"], "admin")
        me = self.ctl("admin", "whoami", json_out=True)
        self.assertEqual((me["role"], me["user"], me["uid"]),
                         ("admin", self.accounts.admin["name"], self.accounts.admin["uid"]))
        me = self.ctl("contributor", "whoami", json_out=True)
        self.assertEqual((me["role"], me["user"]), ("contributor",
                                                    self.accounts.contributor["name"]))
        # A stranger cannot even open the socket (0660, group = contributors) ...
        _, err = self.ctl("stranger", "whoami", expect=DENIED)
        self.assertIn("cannot connect", err)

    def test_stranger_refused_by_peer_credentials(self):
        # ... and where the socket is wider open (a site's own choice), the daemon refuses the
        # peer itself, once, by its credentials.
        os.chmod(self.daemon.socket_path, 0o666)
        try:
            before = self.snapshot()
            _, err = self.ctl("stranger", "connection", "add", "x", "--client-id", "k",
                              expect=DENIED)
            self.assertIn("permission denied", err)
            self.assertIn(self.accounts.stranger["name"], err)
            _, err = self.ctl("stranger", "export", "list", expect=DENIED)
            self.assertEqual(self.snapshot(), before)
        finally:
            os.chmod(self.daemon.socket_path, 0o660)

    # ---- connections ----

    def test_connection_lifecycle_and_roles(self):
        cid = self.add_connection("conn-life")
        row = self.q("SELECT * FROM connections WHERE connection_id = ?", cid)[0]
        self.assertEqual((row["name"], row["client_id"], row["auth_flow"], row["usable_by"]),
                         ("conn-life", "key-conn-life", "device", "admins"))
        audit = self.last_audit()
        self.assertEqual((audit["uid"], audit["user_name"], audit["action"], audit["object_id"]),
                         (0, "root", "connection.add", str(cid)))
        self.assertIsNone(audit["before_json"])
        self.assertEqual(json.loads(audit["after_json"])["name"], "conn-life")

        # contributors and strangers cannot touch connections
        for role in ("contributor",):
            self.assert_refused(role, "connection", "add", "c-x", "--client-id", "k",
                                expect=DENIED, message="needs the admin role")
            self.assert_refused(role, "connection", "edit", "conn-life", "--name", "y",
                                expect=DENIED)
            self.assert_refused(role, "connection", "remove", "conn-life", expect=DENIED)
            self.assert_refused(role, "connection", "consent", "conn-life", expect=DENIED)
            self.assert_refused(role, "connection", "authorize", "conn-life", expect=DENIED)
            self.assert_refused(role, "connection", "show", "conn-life", expect=DENIED,
                                message="usable by admins only")
        self.assert_refused("stranger", "connection", "list", expect=DENIED)

        # a non-root admin: audited under its own name
        self.ctl("admin", "connection", "edit", "conn-life", "--name", "conn-life2",
                 "--usable-by", "admins_and_contributors")
        audit = self.last_audit()
        self.assertEqual((audit["uid"], audit["user_name"], audit["action"]),
                         (self.accounts.admin["uid"], self.accounts.admin["name"],
                          "connection.edit"))
        self.assertEqual(json.loads(audit["before_json"])["name"], "conn-life")
        self.assertEqual(json.loads(audit["after_json"])["name"], "conn-life2")
        self.assertEqual(self.q1("SELECT usable_by FROM connections WHERE connection_id = ?",
                                 cid), "admins_and_contributors")

        # now contributors may see it, without the API key
        listed = self.ctl("contributor", "connection", "list", json_out=True)
        mine = [c for c in listed if c["name"] == "conn-life2"]
        self.assertEqual(len(mine), 1)
        self.assertNotIn("client_id", mine[0])
        self.assertNotIn("conn-life2", [c["name"] for c in listed if c["usable_by"] == "admins"])
        self.assertTrue(all(c["usable_by"] == "admins_and_contributors" for c in listed))
        shown = self.ctl("contributor", "connection", "show", "conn-life2", json_out=True)
        self.assertNotIn("client_id", shown)
        self.assertEqual(self.ctl("root", "connection", "show", "conn-life2",
                                  json_out=True)["client_id"], "key-conn-life")
        out, _ = self.ctl("contributor", "connection", "list", "--names")
        self.assertIn("conn-life2", out.split("\n"))

        # bad input: clear errors, nothing changed
        self.add_connection("conn-other")
        self.assert_refused("root", "connection", "edit", "conn-life2", "--name", "conn-other",
                            expect=CONFLICT, message="already exists")
        self.assert_refused("root", "connection", "add", "conn-other", "--client-id", "k",
                            expect=CONFLICT, message="already exists")
        self.assert_refused("root", "connection", "edit", "conn-life2", expect=USAGE,
                            message="nothing to change")
        self.assert_refused("root", "connection", "edit", "nope", "--name", "x",
                            expect=NOT_FOUND, message='connection "nope" not found')
        self.assert_refused("root", "connection", "add", "x", "--client-id", "k",
                            "--flow", "telepathy", expect=USAGE, message="must be one of")
        self.assert_refused("root", "connection", "add", "x", expect=USAGE,
                            message="--client-id")
        self.assert_refused("root", "connection", "add", "a" * 101, "--client-id", "k",
                            expect=USAGE, message="too long")
        self.assert_refused("root", "connection", "add", "bad\x1bname", "--client-id", "k",
                            expect=USAGE, message="control characters")
        self.assert_refused("root", "connection", "add", "x", "--client-id", "has blank",
                            expect=USAGE, message="blanks")

    def test_consent(self):
        self.add_connection("conn-consent")
        out, _ = self.ctl("admin", "connection", "consent", "conn-consent")
        self.assertIn("recorded", out)
        row = self.q("SELECT * FROM connections WHERE name = 'conn-consent'")[0]
        self.assertEqual((row["consent_by"], row["consent_uid"]),
                         (self.accounts.admin["name"], self.accounts.admin["uid"]))
        self.assertIsNotNone(row["consent_at"])
        self.assertEqual(self.last_audit()["action"], "connection.consent")
        shown = self.ctl("root", "connection", "show", "conn-consent", json_out=True)
        self.assertEqual(shown["consent"]["by"], self.accounts.admin["name"])
        self.ctl("root", "connection", "consent", "conn-consent", "--revoke")
        row = self.q("SELECT * FROM connections WHERE name = 'conn-consent'")[0]
        self.assertIsNone(row["consent_by"])
        self.assertIsNone(row["consent_uid"])
        self.assertEqual(self.last_audit()["action"], "connection.consent_revoke")

    def test_authorize_and_lists_access(self):
        self.add_connection("conn-auth", usable_by="admins_and_contributors")
        self.assert_refused("contributor", "connection", "authorize", "conn-auth",
                            expect=DENIED)
        self.assert_refused("root", "connection", "authorize", "nope", expect=NOT_FOUND)
        self.assert_refused("root", "lists", "nope", expect=NOT_FOUND)
        self.add_connection("conn-auth-admins")
        self.assert_refused("contributor", "lists", "conn-auth-admins", expect=DENIED)
        self.assert_refused("stranger", "lists", "conn-auth", expect=DENIED)

    def test_edit_key_resets_authorization(self):
        cid = self.add_connection("conn-key")
        with self.daemon.db() as db:
            db.execute("INSERT INTO connection_tokens (connection_id, access_token, "
                       "refresh_token) VALUES (?, ?, ?)", (cid, ACCESS_TOKEN, REFRESH_TOKEN))
            db.execute("UPDATE connections SET auth_state = 'authorized' WHERE "
                       "connection_id = ?", (cid,))
        out = self.ctl("root", "connection", "edit", "conn-key", "--client-id", "new-key",
                       json_out=True)
        self.assertTrue(out["authorization_reset"])
        self.assertEqual(self.q1("SELECT count(*) FROM connection_tokens WHERE "
                                 "connection_id = ?", cid), 0)
        self.assertEqual(self.q1("SELECT auth_state FROM connections WHERE connection_id = ?",
                                 cid), "unauthorized")
        # a rename keeps the authorization
        with self.daemon.db() as db:
            db.execute("INSERT INTO connection_tokens (connection_id, access_token) "
                       "VALUES (?, ?)", (cid, ACCESS_TOKEN))
        out = self.ctl("root", "connection", "edit", "conn-key", "--name", "conn-key2",
                       json_out=True)
        self.assertFalse(out["authorization_reset"])
        self.assertEqual(self.q1("SELECT count(*) FROM connection_tokens WHERE "
                                 "connection_id = ?", cid), 1)

    def test_connection_remove_stops_everything(self):
        cid = self.add_connection("conn-rm", usable_by="admins_and_contributors",
                                  consent=True)
        e1 = self.add_export("exp-rm-1", "conn-rm")
        e2 = self.add_export("exp-rm-2", "conn-rm", "contributor")
        with self.daemon.db() as db:
            db.execute("INSERT INTO connection_tokens (connection_id, access_token, "
                       "refresh_token) VALUES (?, ?, ?)", (cid, ACCESS_TOKEN, REFRESH_TOKEN))
        self.assertTrue(self.ctl("root", "connection", "show", "conn-rm",
                                 json_out=True)["tokens_stored"])
        self.assert_refused("contributor", "connection", "remove", "conn-rm", expect=DENIED)

        out = self.ctl("root", "connection", "remove", "conn-rm", json_out=True)
        self.assertEqual(out["exports_disabled"], 2)
        self.assertTrue(out["tokens_deleted"])
        self.assertIsNotNone(self.q1("SELECT removed_at FROM connections WHERE "
                                     "connection_id = ?", cid))
        self.assertEqual(self.q1("SELECT count(*) FROM connection_tokens WHERE "
                                 "connection_id = ?", cid), 0)
        for eid in (e1, e2):
            row = self.q("SELECT enabled, disabled_reason FROM exports WHERE export_id = ?",
                         eid)[0]
            self.assertEqual(row["enabled"], 0)
            self.assertIn('connection "conn-rm" was removed by root', row["disabled_reason"])
        self.assertEqual(self.last_audit()["action"], "connection.remove")
        # no copy of a token anywhere in the database files
        for suffix in ("", "-wal"):
            path = self.daemon.db_path + suffix
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data = f.read()
                self.assertNotIn(ACCESS_TOKEN.encode(), data, path)
                self.assertNotIn(REFRESH_TOKEN.encode(), data, path)
        # every use stops: runs refused, re-enabling refused, the connection is gone
        self.assert_refused("root", "run", "exp-rm-1", expect=CONFLICT,
                            message="was removed")
        self.assert_refused("root", "export", "enable", "exp-rm-1", expect=CONFLICT,
                            message="was removed")
        self.assert_refused("root", "connection", "show", "conn-rm", expect=NOT_FOUND)
        shown = self.ctl("root", "export", "show", "exp-rm-1", json_out=True)
        self.assertTrue(shown["connection_removed"])
        # and the name is free again
        self.add_connection("conn-rm")

    # ---- exports ----

    def test_export_add_and_validation(self):
        self.add_connection("conn-exp", usable_by="admins_and_contributors")
        self.add_connection("conn-exp-admins")
        out = self.ctl("contributor", "export", "add", "exp-a", "--connection", "conn-exp",
                       "--list-id", LIST_A, "--email-field", "email", "--first-name-field",
                       "first", "--last-name-field", "last", "--field", "job_title=title",
                       "--field", "cf:tier=tier", "--segment", "vip", "--segment", "all",
                       "--cron", "30 4 * * 1-5", "--time-zone", "Europe/Rome",
                       "--mode", "mirror", "--mirror-max-remove-share", "0.2",
                       "--follows-refresh", "no", json_out=True)
        e = out["export"]
        # Constant Contact cannot be reached from here: saved, with a warning saying so
        self.assertEqual(len(out["warnings"]), 1)
        self.assertTrue(out["warnings"][0].startswith(
            "list ID not checked against Constant Contact: "), out["warnings"])
        row = self.q("SELECT * FROM exports WHERE export_id = ?", e["id"])[0]
        self.assertEqual((row["name"], row["list_id"], row["mode"], row["email_field"],
                          row["first_name_field"], row["last_name_field"],
                          row["follows_refresh"], row["enabled"], row["created_by"]),
                         ("exp-a", LIST_A, "mirror", "email", "first", "last", 0, 1,
                          self.accounts.contributor["name"]))
        self.assertAlmostEqual(row["mirror_max_remove_share"], 0.2)
        self.assertEqual(sorted(r["name"] for r in self.q(
            "SELECT s.name FROM export_segments es JOIN segments s USING (segment_id) "
            "WHERE export_id = ?", e["id"])), ["all", "vip"])
        self.assertEqual({r["target"]: r["source_field"] for r in self.q(
            "SELECT * FROM export_fields WHERE export_id = ?", e["id"])},
            {"job_title": "title", "cf:tier": "tier"})
        sched = self.q("SELECT * FROM schedules WHERE export_id = ?", e["id"])[0]
        self.assertEqual((sched["cron"], sched["time_zone"]), ("30 4 * * 1-5", "Europe/Rome"))
        audit = self.last_audit()
        self.assertEqual((audit["action"], audit["uid"], audit["object_id"]),
                         ("export.add", self.accounts.contributor["uid"], str(e["id"])))
        # saving never runs an export
        self.assertEqual(self.q1("SELECT count(*) FROM runs WHERE export_id = ?", e["id"]), 0)

        bad = [
            (["--list-id", "not-a-uuid"], USAGE, "is not a list ID"),
            (["--email-field", "mail"], USAGE, 'no profile has an attribute named "mail"'),
            (["--first-name-field", "nickname"], USAGE, "first_name_field"),
            (["--field", "city=town"], USAGE, '"town"'),
            (["--field", "colour=first"], USAGE, "not a Constant Contact import field"),
            (["--field", "email=first"], USAGE, "own email field option"),
            (["--field", "broken"], USAGE, "TARGET=ATTRIBUTE"),
            (["--segment", "nope"], NOT_FOUND, 'segment "nope" does not exist'),
            (["--cron", "61 * * * *"], USAGE, 'minute field "61"'),
            (["--cron", "@reboot"], USAGE, "cron"),
            (["--time-zone", "Mars/Olympus"], USAGE, "time_zone"),
            (["--time-zone", "../../etc/passwd"], USAGE, "time_zone"),
            (["--mode", "sideways"], USAGE, "must be one of upsert, mirror"),
            (["--mirror-max-remove-share", "1.5"], USAGE, "out of range 0..1"),
            (["--mirror-max-remove-share", "lots"], USAGE, "between 0 and 1"),
            (["--follows-refresh", "maybe"], USAGE, "yes or no"),
            (["--connection", "nope"], NOT_FOUND, 'connection "nope" not found'),
        ]
        for extra, status, message in bad:
            base = {"--connection": "conn-exp", "--list-id": LIST_B, "--email-field": "email",
                    "--segment": "vip"}
            args = []
            extra_keys = {extra[i] for i in range(0, len(extra), 2)}
            for k, v in base.items():
                if k not in extra_keys:
                    args += [k, v]
            with self.subTest(extra=extra):
                self.assert_refused("contributor", "export", "add", "exp-bad", *args, *extra,
                                    expect=status, message=message)
        self.assert_refused("contributor", "export", "add", "exp-a", "--connection",
                            "conn-exp", "--list-id", LIST_B, "--email-field", "email",
                            "--segment", "vip", expect=CONFLICT, message="already exists")
        self.assert_refused("contributor", "export", "add", "exp-b", "--connection",
                            "conn-exp", expect=USAGE, message="required")
        # contributors cannot use admin-only connections
        self.assert_refused("contributor", "export", "add", "exp-c", "--connection",
                            "conn-exp-admins", "--list-id", LIST_A, "--email-field", "email",
                            "--segment", "vip", expect=DENIED,
                            message="usable by admins only")
        self.assert_refused("stranger", "export", "add", "exp-c", "--connection",
                            "conn-exp", "--list-id", LIST_A, "--email-field", "email",
                            "--segment", "vip", expect=DENIED)

    def test_export_visibility_edit_enable_remove(self):
        self.add_connection("conn-vis", usable_by="admins_and_contributors")
        self.add_connection("conn-vis-admins")
        shared = self.add_export("exp-shared", "conn-vis", "contributor")
        self.add_export("exp-secret", "conn-vis-admins")

        names = [e["name"] for e in self.ctl("contributor", "export", "list", json_out=True)]
        self.assertIn("exp-shared", names)
        self.assertNotIn("exp-secret", names)
        out, _ = self.ctl("root", "export", "list", "--names")
        self.assertIn("exp-secret", out.split("\n"))
        self.assertIn("exp-shared", out.split("\n"))
        out, _ = self.ctl("root", "export", "list")
        self.assertIn("exp-secret", out)
        self.assertTrue(out.startswith("NAME"))
        for verb in ("show", "remove", "enable", "disable"):
            self.assert_refused("contributor", "export", verb, "exp-secret", expect=DENIED)
        self.assert_refused("contributor", "export", "edit", "exp-secret", "--cron",
                            "0 1 * * *", expect=DENIED)
        self.assert_refused("contributor", "export", "show", "exp-none", expect=NOT_FOUND)

        # edit: a schedule override, then cleared again
        self.ctl("contributor", "export", "edit", "exp-shared", "--cron", "15 6 * * *",
                 "--field", "job_title=title")
        self.assertEqual(self.q1("SELECT cron FROM schedules WHERE export_id = ?", shared),
                         "15 6 * * *")
        self.assertEqual(self.q1("SELECT source_field FROM export_fields WHERE export_id = ?",
                                 shared), "title")
        audit = self.last_audit()
        self.assertEqual(audit["action"], "export.edit")
        self.assertIsNone(json.loads(audit["before_json"])["schedule"]["cron"])
        self.assertEqual(json.loads(audit["after_json"])["schedule"]["cron"], "15 6 * * *")
        self.ctl("contributor", "export", "edit", "exp-shared", "--clear", "cron",
                 "--clear", "fields")
        self.assertIsNone(self.q1("SELECT cron FROM schedules WHERE export_id = ?", shared))
        self.assertEqual(self.q1("SELECT count(*) FROM export_fields WHERE export_id = ?",
                                 shared), 0)
        self.assert_refused("contributor", "export", "edit", "exp-shared", expect=USAGE,
                            message="nothing to change")
        self.assert_refused("contributor", "export", "edit", "exp-shared", "--clear",
                            "email-field", expect=USAGE, message="--clear accepts")
        self.assert_refused("contributor", "export", "edit", "exp-shared", "--connection",
                            "conn-vis-admins", expect=DENIED)
        self.assert_refused("contributor", "export", "edit", "exp-shared", "--name",
                            "exp-secret", expect=CONFLICT)
        # the list of an export that has run cannot change: its sync state belongs to it
        with self.daemon.db() as db:
            db.execute("INSERT INTO runs (export_id, state, trigger) VALUES (?, 'succeeded', "
                       "'demand')", (shared,))
        self.assert_refused("contributor", "export", "edit", "exp-shared", "--list-id",
                            LIST_B, expect=CONFLICT, message="has already run")
        self.ctl("contributor", "export", "edit", "exp-shared", "--name", "exp-shared2")
        self.assertEqual(self.q1("SELECT name FROM exports WHERE export_id = ?", shared),
                         "exp-shared2")

        self.ctl("contributor", "export", "disable", "exp-shared2", "--reason", "holiday")
        row = self.q("SELECT enabled, disabled_reason FROM exports WHERE export_id = ?",
                     shared)[0]
        self.assertEqual(row["enabled"], 0)
        self.assertIn("holiday", row["disabled_reason"])
        self.assertIn(self.accounts.contributor["name"], row["disabled_reason"])
        self.ctl("contributor", "export", "enable", "exp-shared2")
        row = self.q("SELECT enabled, disabled_reason FROM exports WHERE export_id = ?",
                     shared)[0]
        self.assertEqual((row["enabled"], row["disabled_reason"]), (1, None))

        self.ctl("contributor", "export", "remove", "exp-shared2")
        self.assertIsNotNone(self.q1("SELECT removed_at FROM exports WHERE export_id = ?",
                                     shared))
        self.assertEqual(self.last_audit()["action"], "export.remove")
        self.assert_refused("contributor", "export", "show", "exp-shared2", expect=NOT_FOUND)
        self.add_export("exp-shared2", "conn-vis", "contributor")  # name free again

    # ---- runs ----

    def test_run_checks(self):
        self.add_connection("conn-run", usable_by="admins_and_contributors")
        self.add_export("exp-run", "conn-run", "contributor")
        self.assert_refused("contributor", "run", "exp-run", expect=CONFLICT,
                            message="no data-privacy consent")
        self.ctl("root", "connection", "consent", "conn-run")
        self.ctl("root", "export", "disable", "exp-run")
        self.assert_refused("contributor", "run", "exp-run", expect=CONFLICT,
                            message="is disabled")
        self.assert_refused("contributor", "run", "nope", expect=NOT_FOUND)
        self.assert_refused("stranger", "run", "exp-run", expect=DENIED)
        self.add_connection("conn-run-admins", consent=True)
        self.add_export("exp-run-admins", "conn-run-admins")
        self.assert_refused("contributor", "run", "exp-run-admins", expect=DENIED)
        self.assert_refused("root", "run", "exp-run-admins", "--bogus", expect=USAGE)

    def test_history_queries(self):
        self.add_connection("conn-hist", usable_by="admins_and_contributors")
        self.add_connection("conn-hist-admins")
        shared = self.add_export("exp-hist", "conn-hist")
        secret = self.add_export("exp-hist-admins", "conn-hist-admins")
        with self.daemon.db() as db:
            cur = db.execute("INSERT INTO runs (export_id, state, trigger, requested_by, "
                             "selected, sent, rejected, batches_total, batches_done, "
                             "finished_at) VALUES (?, 'partially_succeeded', 'demand', "
                             "'alice', 2503, 3, 2500, 1, 1, unixepoch())", (shared,))
            run_shared = cur.lastrowid
            db.execute("INSERT INTO run_batches (run_id, batch_no, kind, state, contacts, "
                       "activity_id) VALUES (?, 1, 'import', 'confirmed', 3, 'act-1')",
                       (run_shared,))
            db.executemany("INSERT INTO rejected_rows (run_id, seq, profile_id, email, "
                           "reason_code, reason) VALUES (?, ?, ?, ?, 'email_invalid', ?)",
                           ((run_shared, i, f"p{i}", f"x{i}@bad,\"q\"", f"bad email {i}")
                            for i in range(1, 2501)))
            cur = db.execute("INSERT INTO runs (export_id, state, trigger) VALUES "
                             "(?, 'running', 'schedule')", (secret,))
            run_secret = cur.lastrowid

        runs = self.ctl("contributor", "runs", json_out=True)["runs"]
        ids = [r["id"] for r in runs]
        self.assertIn(run_shared, ids)
        self.assertNotIn(run_secret, ids)
        self.assertIn(run_secret, [r["id"] for r in self.ctl("root", "runs",
                                                             json_out=True)["runs"]])
        only = self.ctl("root", "runs", "exp-hist", json_out=True)["runs"]
        self.assertEqual([r["id"] for r in only], [run_shared])
        self.assertEqual(only[0]["state"], "partially_succeeded")
        self.assert_refused("contributor", "runs", "exp-hist-admins", expect=DENIED)

        shown = self.ctl("contributor", "run-show", str(run_shared), json_out=True)
        self.assertEqual((shown["sent"], shown["rejected"], shown["requested_by"]),
                         (3, 2500, "alice"))
        self.assertEqual(shown["batches"][0]["activity_id"], "act-1")
        out, _ = self.ctl("contributor", "run-show", str(run_shared))
        self.assertIn("partially_succeeded", out)
        self.assert_refused("contributor", "run-show", str(run_secret), expect=DENIED)
        self.assert_refused("root", "run-show", "999999", expect=NOT_FOUND)
        self.assert_refused("root", "run-show", "abc", expect=USAGE)

        rows = self.ctl("contributor", "rejected", str(run_shared), json_out=True)
        self.assertEqual(len(rows), 2500)  # every page
        self.assertEqual(rows[0]["reason"], "bad email 1")
        out, _ = self.ctl("contributor", "rejected", str(run_shared), "--csv")
        lines = out.splitlines()
        self.assertEqual(lines[0], "seq,profile_id,email,reason_code,reason,permanent")
        self.assertEqual(lines[1], '1,p1,"x1@bad,""q""",email_invalid,bad email 1,yes')
        self.assertEqual(len(lines), 2501)
        out, _ = self.ctl("contributor", "rejected", str(run_shared))
        self.assertIn("email_invalid", out)
        self.assert_refused("contributor", "rejected", str(run_secret), expect=DENIED)

        # cancel: the run is checked here, the cancelling is the runner's
        self.assert_refused("contributor", "cancel", str(run_secret), expect=DENIED)
        self.assert_refused("root", "cancel", str(run_shared), expect=CONFLICT,
                            message="already finished")
        self.assert_refused("root", "cancel", "424242", expect=NOT_FOUND)

    def test_segments_refresh_status_import_audit(self):
        segs = {s["name"]: s["members"] for s in self.ctl("contributor", "segments",
                                                          json_out=True)}
        self.assertEqual((segs["vip"], segs["all"]), (2, 3))
        out, _ = self.ctl("contributor", "segments")
        self.assertIn("vip", out)
        self.assert_refused("stranger", "segments", expect=DENIED)

        before = self.q1("SELECT count(*) FROM upstream_refreshes")
        out = self.ctl("contributor", "refresh-done", json_out=True)
        self.assertEqual(self.q1("SELECT count(*) FROM upstream_refreshes"), before + 1)
        self.assertEqual(self.q1("SELECT max(refresh_id) FROM upstream_refreshes"),
                         out["refresh_id"])
        audit = self.last_audit()
        self.assertEqual((audit["action"], audit["object_id"]),
                         ("refresh_done", str(out["refresh_id"])))

        self.assert_refused("stranger", "status", expect=DENIED)
        path = os.path.join(self.workdir.path, "profiles.csv")
        with open(path, "w") as f:
            f.write("profile_id,email\nz1,z1@example.com\n")
        os.chmod(path, 0o644)
        self.assert_refused("contributor", "import", "profiles", path, expect=DENIED)
        self.assert_refused("root", "import", "profiles",
                            os.path.join(self.workdir.path, "missing.csv"), expect=NOT_FOUND)
        self.assert_refused("root", "import", "things", path, expect=USAGE)

        entries = self.ctl("root", "audit", "--limit", "5", json_out=True)
        self.assertEqual(len(entries["entries"]), 5)
        self.assertEqual(entries["entries"][0]["action"], "refresh_done")
        older = self.ctl("root", "audit", "--before", str(entries["next_before"]),
                         json_out=True)
        self.assertTrue(all(e["id"] < entries["next_before"] for e in older["entries"]))
        out, _ = self.ctl("admin", "audit")
        self.assertIn("refresh_done", out)
        self.assert_refused("contributor", "audit", expect=DENIED)
        self.assert_refused("stranger", "audit", expect=DENIED)

    def test_cli_follow_rendering(self):
        """ccsyncctl's side of run --follow, against a scripted peer speaking the protocol:
        line-wise progress when not on a terminal, a progress bar on one, JSON Lines with
        --json, and the exit status from the run's final state."""
        import pty
        import threading

        path = os.path.join(self.workdir.path, "scripted.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)
        seen = []

        def serve(final_state):
            conn, _ = srv.accept()
            with conn:
                buf = b""
                while b"\n" not in buf:
                    buf += conn.recv(65536)
                req = json.loads(buf.split(b"\n")[0])
                seen.append(req)
                rid = req["id"]
                for sent in (0, 40, 100):
                    conn.sendall(json.dumps({"id": rid, "progress": {
                        "run_id": 12, "state": "running", "sent": sent, "pending": 100 - sent,
                        "rejected": 1, "batches_done": sent // 40, "batches_total": 3,
                        "rate_per_second": 20.0, "eta_seconds": (100 - sent) // 20}}).encode()
                        + b"\n")
                conn.sendall(json.dumps({"id": rid, "ok": {
                    "id": 12, "export": "e", "state": final_state, "trigger": "demand",
                    "sent": 100, "selected": 101, "rejected": 1, "unchanged": 0, "removed": 0,
                    "pending": 0, "batches_done": 3, "batches_total": 3}}).encode() + b"\n")

        from harness import CCSYNCCTL
        try:
            t = threading.Thread(target=serve, args=("partially_succeeded",))
            t.start()
            res = subprocess.run([CCSYNCCTL, "--socket", path, "run", "e", "--follow",
                                  "--dry-run"], capture_output=True, text=True, timeout=60)
            t.join()
            self.assertEqual(res.returncode, OK, res.stderr)
            self.assertEqual(seen[-1]["args"], {"export": "e", "follow": True, "dry_run": True,
                                                "full": False, "force": False})
            lines = res.stdout.splitlines()
            self.assertEqual(lines[0], "run 12: running, sent 0 of 100, rejected 1, batches "
                             "0/3, rate 20/s, ETA 0:05")
            self.assertEqual(lines[2], "run 12: running, sent 100 of 100, rejected 1, batches "
                             "2/3, rate 20/s, ETA 0:00")
            self.assertIn("State:      partially_succeeded", res.stdout)

            t = threading.Thread(target=serve, args=("failed",))
            t.start()
            res = subprocess.run([CCSYNCCTL, "--socket", path, "--json", "run", "e",
                                  "--follow"], capture_output=True, text=True, timeout=60)
            t.join()
            self.assertEqual(res.returncode, FAILED)
            progress = [json.loads(x) for x in res.stdout.splitlines()[:3]]
            self.assertEqual([p["sent"] for p in progress], [0, 40, 100])

            # on a terminal: one redrawn progress bar line
            t = threading.Thread(target=serve, args=("succeeded",))
            t.start()
            master, slave = pty.openpty()
            proc = subprocess.Popen([CCSYNCCTL, "--socket", path, "run", "e", "--follow"],
                                    stdin=slave, stdout=slave, stderr=slave)
            os.close(slave)
            out = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            os.close(master)
            self.assertEqual(proc.wait(timeout=60), OK)
            t.join()
            text = out.decode(errors="replace")
            self.assertIn("[############..................] 40/100 contacts  20/s  ETA 0:03",
                          text)
            self.assertIn("[##############################] 100/100 contacts", text)
            self.assertIn("\r", text)
        finally:
            srv.close()

    def test_socket_activation(self):
        """With a socket handed over under the name "control" (as ccsync.socket does), the
        daemon serves that fd, binds nothing itself, and leaves the socket file to its owner."""
        import shutil
        activate = shutil.which("systemd-socket-activate")
        if not activate:
            self.skipTest("systemd-socket-activate is not installed")
        from harness import CCSYNCD, CCSYNCCTL
        sub = os.path.join(self.workdir.path, "activation")
        os.makedirs(sub)
        d = Daemon(sub)  # only for its configuration file
        listen = os.path.join(sub, "activated.sock")
        log = open(os.path.join(sub, "daemon.log"), "wb")
        proc = subprocess.Popen([activate, "-l", listen, "--fdname=control", CCSYNCD,
                                 "--config", d.config_path, "--log-target", "stderr"],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: os.path.exists(listen), timeout=20, what="the activation socket")
            res = subprocess.run([CCSYNCCTL, "--socket", listen, "--json", "whoami"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(res.returncode, OK, res.stderr)
            self.assertEqual(json.loads(res.stdout)["role"], "admin")
            self.assertFalse(os.path.exists(d.socket_path))  # nothing bound by the daemon
        finally:
            proc.terminate()
            status = proc.wait(timeout=30)
            log.close()
        with open(os.path.join(sub, "daemon.log"), errors="replace") as f:
            text = f.read()
        self.assertEqual(status, 0, text)
        self.assertIn("listening on the socket-activated fd", text)
        self.assertTrue(os.path.exists(listen))  # the socket's owner removes it, not us

    def test_help_and_usage(self):
        for args in (["--help"], ["connection", "add", "--help"], ["run", "--help"],
                     ["export", "--help"], ["rejected", "--help"]):
            out, _ = self.ctl("contributor", *args)
            self.assertIn("Usage: ccsyncctl", out)
        _, err = self.ctl("root", "frobnicate", expect=USAGE)
        self.assertIn("unknown command", err)
        self.ctl("root", expect=USAGE)
        res = subprocess.run([self.daemon_ctl_path(), "--socket", "/nonexistent/sock", "whoami"],
                             capture_output=True, text=True)
        self.assertEqual(res.returncode, UNREACHABLE)
        self.assertIn("cannot reach ccsyncd", res.stderr)

    def daemon_ctl_path(self):
        from harness import CCSYNCCTL
        return CCSYNCCTL

    # ---- raw protocol ----

    def test_raw_malformed_messages(self):
        s = self.raw()
        s.sendall(b'{"version":1,"id":1,"command":"whoami"\n'              # truncated JSON
                  b'{"version":1,"version":1,"id":2,"command":"whoami"}\n'  # duplicate key
                  b'{"version":1,"id":3,"command":"cancel","args":{"run":"x"}}\n'
                  b'{"version":1,"id":4,"command":"launch"}\n'
                  b'{"version":7,"id":5,"command":"whoami"}\n'
                  b'{"version":1,"id":6,"command":"whoami","extra":1}\n'
                  b'[1,2,3]\n'
                  b'{"version":1,"id":8,"command":"sta\xff"}\n'
                  b'{"version":1,"id":9,"command":"whoami"}\n')
        r = self.read_lines(s, 9)
        self.assertEqual(len(r), 9)
        self.assertEqual((r[0]["id"], r[0]["error"]["code"]), (None, "protocol_error"))
        self.assertIn("malformed JSON", r[0]["error"]["message"])
        self.assertIn("duplicate", r[1]["error"]["message"])
        self.assertEqual((r[2]["id"], r[2]["error"]["code"]), (3, "invalid_argument"))
        self.assertIn("args.run: expected an integer, got a string", r[2]["error"]["message"])
        self.assertEqual((r[3]["id"], r[3]["error"]["code"]), (4, "unknown_command"))
        self.assertIn("unsupported protocol version 7", r[4]["error"]["message"])
        self.assertIn('unknown member "extra"', r[5]["error"]["message"])
        self.assertIn("must be a JSON object", r[6]["error"]["message"])
        self.assertEqual(r[7]["error"]["code"], "protocol_error")
        self.assertEqual((r[8]["id"], r[8]["ok"]["role"]), (9, "admin"))
        s.close()

    def test_raw_oversized_message_closes_only_that_client(self):
        other = self.raw()
        s = self.raw()
        try:
            s.sendall(b'{"version":1,"id":1,"command":"whoami","args":{"x":"' +
                      b"a" * (1024 * 1024 + 10))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon may hang up while we are still sending: what it said stays
        replies = self.read_to_eof(s)
        self.assertEqual(len(replies), 1)
        self.assertEqual((replies[0]["id"], replies[0]["error"]["code"]), (None, "too_large"))
        self.assertIn("longer than 1048576 bytes", replies[0]["error"]["message"])
        s.close()
        other.sendall(self.req(2, "whoami"))
        self.assertEqual(self.read_lines(other, 1)[0]["ok"]["role"], "admin")
        other.close()

    def test_raw_truncated_message(self):
        s = self.raw()
        s.sendall(self.req(1, "whoami") + b'{"version":1,"id":2,"comm')
        s.shutdown(socket.SHUT_WR)
        replies = self.read_to_eof(s)
        self.assertEqual(len(replies), 2)
        self.assertEqual(replies[0]["id"], 1)
        self.assertEqual(replies[1]["error"]["code"], "protocol_error")
        self.assertIn("truncated", replies[1]["error"]["message"])
        s.close()

    def test_raw_interleaved_clients(self):
        a, b = self.raw(), self.raw()
        whole = self.req(11, "segments")
        a.sendall(whole[:17])
        b.sendall(self.req(21, "whoami") + self.req(22, "export.list") +
                  self.req(23, "connection.list"))
        rb = self.read_lines(b, 3)
        self.assertEqual([x["id"] for x in rb], [21, 22, 23])
        a.sendall(whole[17:40])
        b.sendall(self.req(24, "whoami"))
        self.assertEqual(self.read_lines(b, 1)[0]["id"], 24)
        a.sendall(whole[40:])
        ra = self.read_lines(a, 1)
        self.assertEqual(ra[0]["id"], 11)
        self.assertIn("ok", ra[0])
        a.close()
        b.close()

    def daemon_fds(self):
        return len(os.listdir(f"/proc/{self.daemon.proc.pid}/fd"))

    def test_raw_abandoned_clients_cost_nothing(self):
        self.assertTrue(self.try_whoami())
        baseline = self.daemon_fds()
        # Clients that leave with requests unanswered, replies unread, or mid-message.
        for i in range(40):
            s = self.raw()
            s.sendall(self.req(1, "export.list") * 20 + b'{"version":1,"id":9,')
            s.close()
        s = self.raw()
        s.sendall(self.req(1, "whoami") * 5000)  # 5000 replies nobody reads
        s.close()
        s = self.raw()
        s.sendall(self.req(1, "run", export="nope", follow=True))
        s.close()
        # still serving, and no client is left behind
        s = self.raw()
        s.sendall(self.req(7, "whoami"))
        self.assertEqual(self.read_lines(s, 1)[0]["id"], 7)
        s.close()
        self.assertIsNone(self.daemon.proc.poll())
        wait_for(lambda: self.daemon_fds() <= baseline, timeout=20,
                 what="the daemon to release every abandoned client's socket")

    def test_raw_client_limit(self):
        held = []
        try:
            for _ in range(256 + 4):
                held.append(self.raw())
            # the connections past the limit are told so and closed; the others are served
            refused = 0
            for s in held[-4:]:
                replies = self.read_to_eof(s)
                if replies and replies[0]["error"]["code"] == "busy":
                    refused += 1
            self.assertEqual(refused, 4)
            held[0].sendall(self.req(1, "whoami"))
            self.assertEqual(self.read_lines(held[0], 1)[0]["id"], 1)
        finally:
            for s in held:
                s.close()
        s = wait_for(lambda: self.try_whoami(), timeout=20, what="a free client slot")
        self.assertTrue(s)

    def try_whoami(self):
        s = self.raw()
        try:
            s.sendall(self.req(1, "whoami"))
            r = self.read_lines(s, 1)
            return bool(r) and "ok" in r[0]
        finally:
            s.close()

    # ---- secrets ----

    def test_zz_no_token_in_any_output(self):
        # Runs last (by name): every --json output of this class, and the daemon's log.
        cid = self.add_connection("conn-secret", consent=True)
        with self.daemon.db() as db:
            db.execute("INSERT INTO connection_tokens (connection_id, access_token, "
                       "refresh_token) VALUES (?, ?, ?)", (cid, ACCESS_TOKEN, REFRESH_TOKEN))
        self.add_export("exp-secret-t", "conn-secret")
        for args in (["connection", "list"], ["connection", "show", "conn-secret"],
                     ["export", "show", "exp-secret-t"], ["audit", "--limit", "1000"],
                     ["export", "list"]):
            self.ctl("root", *args, json_out=True)
        self.ctl("root", "connection", "remove", "conn-secret", json_out=True)
        self.ctl("root", "audit", "--limit", "1000", json_out=True)
        blob = "\n".join(self.json_outputs)
        self.assertGreater(len(self.json_outputs), 20)
        self.assertIn("tokens_stored", blob)
        for secret in (ACCESS_TOKEN, REFRESH_TOKEN):
            self.assertNotIn(secret, blob)
            self.assertNotIn(secret, self.daemon.log())
            for row in self.q("SELECT before_json, after_json FROM audit_log"):
                self.assertNotIn(secret, json.dumps(row))

    def test_zzz_clean_stop(self):
        # Last of all: with clients come and gone, the daemon stops cleanly (under ASan this
        # includes "no leak"), and takes its socket file with it.
        self.assertTrue(self.try_whoami())
        self.assertEqual(self.daemon.stop(), 0, self.daemon.log()[-4000:])
        self.assertFalse(os.path.exists(self.daemon.socket_path))


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("skipping: creating test users and groups needs root")
        sys.exit(77)
    unittest.main(verbosity=2)
