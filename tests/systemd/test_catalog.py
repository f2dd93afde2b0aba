#!/usr/bin/python3
"""The journal catalog: journalctl compiles it without a word of complaint, and it explains
exactly the MESSAGE_IDs defined in lib/log.h, each with a subject, a source and a text."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdnotify  # noqa: E402

SOURCE, BUILD = sdnotify.build_paths()
CATALOG = os.path.join(SOURCE, "systemd", "ccsync.catalog")
LOG_H = os.path.join(SOURCE, "lib", "log.h")


def defined_ids():
    with open(LOG_H) as f:
        return dict((v, k) for k, v in
                    re.findall(r'#define\s+(CCSYNC_MSG_\w+)\s+"([0-9a-f]{32})"', f.read()))


def catalog_entries():
    """{id: (header dict, body text)} parsed the way journalctl reads the file."""
    entries, cur = {}, None
    with open(CATALOG) as f:
        for line in f.read().splitlines():
            m = re.match(r"^-- ([0-9a-f]{32})(?: .*)?$", line)
            if m:
                cur = m.group(1)
                entries[cur] = ({}, [])
                in_header = True
                continue
            if cur is None or (line.startswith("#") and in_header):
                continue
            header, body = entries[cur]
            if in_header and line == "":
                in_header = False
            elif in_header:
                key, _, value = line.partition(": ")
                header[key] = value
            else:
                body.append(line)
    return {k: (h, "\n".join(b).strip()) for k, (h, b) in entries.items()}


class CatalogTest(unittest.TestCase):
    def test_ids_match_log_h(self):
        ids = defined_ids()
        self.assertGreaterEqual(len(ids), 6, "lib/log.h defines no MESSAGE_IDs?")
        entries = catalog_entries()
        self.assertEqual(sorted(entries), sorted(ids),
                         "catalog entries and CCSYNC_MSG_* of lib/log.h differ")
        for mid, (header, body) in entries.items():
            with self.subTest(id=ids[mid]):
                self.assertTrue(header.get("Subject", "").startswith("ccsync "), header)
                self.assertEqual(header.get("Defined-By"), "ccsync")
                self.assertIn("Documentation", header)
                self.assertGreater(len(body), 100, "the text should say what to do")

    @unittest.skipUnless(shutil.which("journalctl"), "journalctl not installed")
    def test_journalctl_compiles_it(self):
        with tempfile.TemporaryDirectory(prefix="ccsync-catalog-") as root:
            d = os.path.join(root, "usr", "lib", "systemd", "catalog")
            os.makedirs(d)
            shutil.copy(CATALOG, d)
            r = subprocess.run(["journalctl", f"--root={root}", "--update-catalog"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))
            r = subprocess.run(["journalctl", f"--root={root}", "--list-catalog"],
                               capture_output=True, text=True, timeout=60, check=True)
            listed = set(line.split()[0] for line in r.stdout.splitlines() if line.strip())
            self.assertEqual(listed, set(defined_ids()))
            for mid in defined_ids():
                r = subprocess.run(["journalctl", f"--root={root}", "--dump-catalog", mid],
                                   capture_output=True, text=True, timeout=60, check=True)
                self.assertIn("Defined-By: ccsync", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
