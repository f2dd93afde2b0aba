#!/usr/bin/python3
"""The daemon's sd_notify protocol, without systemd: this test owns NOTIFY_SOCKET.

Checks READY=1 with a STATUS= line, WATCHDOG=1 keep-alives at half of WATCHDOG_USEC, RELOADING=1
then READY=1 on SIGHUP (a valid configuration is taken, an invalid one rejected while the daemon
keeps running), STOPPING=1 on SIGTERM and exit status 0. Once the control server exists, the
control socket must accept connections by the time READY=1 arrives.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdnotify  # noqa: E402

SOURCE, BUILD = sdnotify.build_paths()
CCSYNCD = os.path.join(BUILD, "daemon", "ccsyncd")
CCSYNCCTL = os.path.join(BUILD, "daemon", "ccsyncctl")
WATCHDOG_USEC = 400000


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="ccsync-notify-")
        self.dir = self.tmp.name
        self.notify = sdnotify.NotifySocket(os.path.join(self.dir, "notify.sock"))
        self.conf = os.path.join(self.dir, "ccsync.conf")
        self.sock = os.path.join(self.dir, "control.sock")
        self.write_conf("[daemon]\nlog_level = info\n")
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, WATCHDOG_USEC=str(WATCHDOG_USEC))
        env.pop("WATCHDOG_PID", None)
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        self.log = open(os.path.join(self.dir, "ccsyncd.log"), "w+")
        self.proc = subprocess.Popen(
            [CCSYNCD, f"--config={self.conf}", f"--database={self.dir}/ccsync.db",
             f"--socket={self.sock}", "--log-target=stderr"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def tearDown(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.notify.close()
        self.tmp.cleanup()

    def write_conf(self, text):
        with open(self.conf + ".new", "w") as f:
            f.write(text)
        os.rename(self.conf + ".new", self.conf)

    def daemon_log(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def test_lifecycle(self):
        ready = self.notify.wait_for("READY", "1", proc=self.proc)
        self.assertTrue(ready.get("STATUS"), f"READY=1 without a STATUS= line: {ready}")
        if sdnotify.control_server_landed(CCSYNCCTL):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.settimeout(5)
                c.connect(self.sock)  # READY=1 only once the control socket listens

        # Keep-alives at half the interval: at least 3 in 4 intervals' time.
        got = self.notify.drain(4 * WATCHDOG_USEC / 1e6)
        n = sum(1 for m in got if m.get("WATCHDOG") == "1")
        self.assertGreaterEqual(n, 3, f"only {n} WATCHDOG=1 in {4 * WATCHDOG_USEC} us: {got}")

        # Reload with a valid configuration.
        self.write_conf("[daemon]\nlog_level = debug\n")
        self.proc.send_signal(signal.SIGHUP)
        self.notify.wait_for("RELOADING", "1", proc=self.proc)
        self.notify.wait_for("READY", "1", proc=self.proc)
        self.assertIsNone(self.proc.poll())

        # Reload with an invalid configuration: rejected, the daemon keeps running.
        self.write_conf("[daemon]\nlog_level = loud\n")
        self.proc.send_signal(signal.SIGHUP)
        self.notify.wait_for("RELOADING", "1", proc=self.proc)
        self.notify.wait_for("READY", "1", proc=self.proc)
        got = self.notify.drain(2 * WATCHDOG_USEC / 1e6)
        self.assertIsNone(self.proc.poll(), "daemon died on an invalid configuration")
        self.assertTrue(any(m.get("WATCHDOG") == "1" for m in got), "loop stopped after reload")
        self.assertIn("loud", self.daemon_log(), "the rejected value is not named in the log")

        # Graceful stop.
        self.proc.send_signal(signal.SIGTERM)
        self.notify.wait_for("STOPPING", "1", timeout=10)
        self.assertEqual(self.proc.wait(timeout=30), 0, self.daemon_log())

    def test_bad_config_fails_before_ready(self):
        self.proc.kill()
        self.proc.wait()
        self.write_conf("[daemon]\nno_such_key = 1\n")
        self.notify.drain(0.05)
        r = subprocess.run([CCSYNCD, f"--config={self.conf}", f"--database={self.dir}/x.db",
                            "--log-target=stderr"],
                           env=dict(os.environ, NOTIFY_SOCKET=self.notify.path),
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn("no_such_key", r.stderr)
        self.assertFalse(any(m.get("READY") == "1" for m in self.notify.drain(0.2)),
                         "READY=1 sent by a daemon that failed to start")


if __name__ == "__main__":
    unittest.main(verbosity=2)
