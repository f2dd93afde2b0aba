#!/usr/bin/env python3
"""The bad-input catalogue (tests/reliability/BAD-INPUTS.md): each case gets a clear message and
changes nothing (the configuration and data tables are compared before and after). Cases already
covered by tests/integration/test_control.py are listed in the catalogue, not repeated here."""
import json
import os
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relkit  # noqa: E402

TABLES = ("connections", "connection_tokens", "exports", "export_segments", "export_fields",
          "schedules", "runs", "profiles", "segments", "segment_members")


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.w = relkit.Workdir(prefix="ccsync-bad-")
        cls.template = os.path.join(cls.w.path, "template.db")
        relkit.make_template(cls.template, 50, 10)
        cls.fake = relkit.FakeCC(cls.w.path, "--no-limits")
        cls.env = relkit.Env(os.path.join(cls.w.path, "d"), cls.fake, cls.template).setup()
        cls.d = cls.env.daemon

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()
        cls.fake.stop()
        cls.w.cleanup()

    def snapshot(self):
        return {t: self.d.query(f"SELECT * FROM {t} ORDER BY 1") for t in TABLES}

    def refused(self, *args, message, input=None, expect_rc=None):
        before = self.snapshot()
        res = self.d.ctl(*args, check=False, input=input)
        self.assertNotEqual(res.returncode, 0, (args, res.stdout))
        if expect_rc is not None:
            self.assertEqual(res.returncode, expect_rc, res.stderr)
        self.assertRegex(res.stderr, message)
        self.assertTrue(res.stderr.startswith("ccsyncctl: "), res.stderr)
        self.assertEqual(self.snapshot(), before, f"{args} changed the database")
        self.assertTrue(self.env.status_ok())
        return res.stderr

    def import_file(self, name, data, kind="profiles", message=".", fmt=None):
        path = os.path.join(self.w.path, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
        extra = [f"--format={fmt}"] if fmt else []
        return self.refused("import", kind, path, *extra, message=message)

    # ---- CSV / JSON Lines ----
    def test_csv_ragged_row(self):
        self.import_file("ragged.csv", b"profile_id,email\nr1,r1@example.com\nr2\n",
                         message="line 3")

    def test_csv_too_many_fields(self):
        self.import_file("long.csv", b"profile_id,email\nr1,r1@example.com,extra,more\n",
                         message="line 2")

    def test_csv_unterminated_quote_embedded_newline(self):
        self.import_file("nl.csv", b'profile_id,email\nr1,"r1@exa\nmple.com\n', message="line")

    def test_invalid_utf8(self):
        self.import_file("utf8.csv", b"profile_id,email\nr1,r\xff\xfe@example.com\n",
                         message="UTF-8|utf-8")

    def test_nul_byte(self):
        self.import_file("nul.csv", b"profile_id,email\nr1,r1\x00@example.com\n",
                         message="NUL|nul|line 2")

    def test_jsonl_wrong_types_and_missing_fields(self):
        for name, data in (("types1.jsonl", b'{"profile_id": [1], "email": "a@b.com"}\n'),
                           ("types2.jsonl", b'{"profile_id": 1.5, "email": "a@b.com"}\n'),
                           ("notobj.jsonl", b'[1, 2]\n'),
                           ("missing.jsonl", b'{"email": "a@b.com"}\n'),
                           ("dupkey.jsonl", b'{"profile_id": "d", "profile_id": "e"}\n')):
            with self.subTest(name=name):
                self.import_file(name, data, fmt="jsonl", message="line 1")

    def test_enormous_value(self):
        self.import_file("huge.jsonl", b'{"profile_id":"h1","attributes":{"email":"' +
                         b"a" * (8 << 20) + b'@x.com"}}\n', fmt="jsonl", message=".")

    def test_segment_import_unknown_segment_column(self):
        self.import_file("seg.csv", b"member\nx\n", kind="segment",
                         message="profile_id|column")

    # ---- command arguments ----
    def test_list_id_not_uuid(self):
        self.refused("export", "add", "x1", "--connection", "conn", "--list-id", "not-a-uuid",
                     "--email-field", "email", "--segment", "all", message="UUID|uuid")

    def test_enormous_name(self):
        self.refused("export", "add", "n" * 100000, "--connection", "conn", "--list-id",
                     self.env.list_id, "--email-field", "email", "--segment", "all",
                     message="name|long|characters")

    def test_name_with_control_chars(self):
        self.refused("connection", "add", "bad\x01name", "--client-id", "k",
                     message="name|character")

    def test_cron_out_of_range(self):
        for cron in ("0 24 * * *", "0 0 32 * *", "0 0 * 13 *", "0 0 * * 8", "*/0 * * * *"):
            with self.subTest(cron=cron):
                self.refused("export", "edit", "exp", "--cron", cron, message="cron|field")

    # ---- raw protocol ----
    def test_raw_nul_and_huge_number(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.d.socket_path)
        s.settimeout(30)
        before = self.snapshot()
        s.sendall(b'{"version":1,"id":1,"command":"who\\u0000ami"}\n'
                  b'{"version":1,"id":99999999999999999999999,"command":"whoami"}\n'
                  b'{"version":1,"id":3,"command":"run-show","args":{"run":1e400}}\n')
        buf = b""
        while buf.count(b"\n") < 3:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        lines = [json.loads(x) for x in buf.split(b"\n") if x]
        self.assertEqual(len(lines), 3, buf)
        for r in lines:
            self.assertIn("error", r, r)
            self.assertTrue(r["error"]["message"])
        self.assertEqual(self.snapshot(), before)

    # ---- configuration ----
    def test_bad_config_values(self):
        cases = {
            "constant_contact.request_timeout_ms": "-5",
            "constant_contact.batch_max_contacts": "40001",
            "constant_contact.requests_per_second": "fast",
            "daemon.log_level": "chatty",
            "schedule.default": "99 * * * *",
            "schedule.time_zone": "Nowhere/Here",
            "export.mirror_max_remove_share": "2",
            "constant_contact.api_base": "ftp://example.com/v3",
        }
        for key, value in cases.items():
            with self.subTest(key=key):
                wd = os.path.join(self.w.path, "cfg-" + key.replace(".", "-"))
                os.makedirs(wd)
                dd = relkit.Daemon(wd, fake=self.fake, config={key: value})
                res = subprocess.run([relkit.CCSYNCD, "--config", dd.config_path,
                                      "--check-config"], capture_output=True, text=True)
                self.assertNotEqual(res.returncode, 0, (key, value))
                out = res.stdout + res.stderr
                self.assertIn(key.split(".", 1)[1], out, out)
                self.assertRegex(out, r"ccsync\.conf|\[", out)   # names the file or section
                self.assertFalse(os.path.exists(dd.db_path), "a refused config created a DB")


if __name__ == "__main__":
    unittest.main(verbosity=2)
