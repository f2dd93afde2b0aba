#!/usr/bin/python3
"""Socket activation as ccsync.socket does it, without systemd: systemd-socket-activate listens
on the control socket (fd name "control") and starts ccsyncd on the first connection, which is
the first ccsyncctl call. The daemon must take the inherited socket, answer, stop cleanly on
SIGTERM, and leave the socket file in place (it belongs to the socket unit, not to the daemon).

Skips (77) until "ccsyncctl status" exists.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdnotify  # noqa: E402

SOURCE, BUILD = sdnotify.build_paths()
CCSYNCD = os.path.join(BUILD, "daemon", "ccsyncd")
CCSYNCCTL = os.path.join(BUILD, "daemon", "ccsyncctl")
ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"


class SocketActivationTest(unittest.TestCase):
    def test_first_ccsyncctl_call_starts_the_daemon(self):
        with tempfile.TemporaryDirectory(prefix="ccsync-activate-") as d:
            notify = sdnotify.NotifySocket(os.path.join(d, "notify.sock"))
            sock = os.path.join(d, "control.sock")
            conf = os.path.join(d, "ccsync.conf")
            open(conf, "w").close()
            log = open(os.path.join(d, "ccsyncd.log"), "w+")
            # The daemon's own --socket names a path it must NOT bind: it has to use the fd.
            proc = subprocess.Popen(
                [ACTIVATE, "-l", sock, "--fdname=control", f"--setenv=NOTIFY_SOCKET={notify.path}",
                 CCSYNCD, f"--config={conf}", f"--database={d}/ccsync.db",
                 f"--socket={d}/not-this.sock", "--log-target=stderr"],
                stdout=log, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 10
                while not os.path.exists(sock):
                    self.assertLess(time.monotonic(), deadline, "activation socket never appeared")
                    self.assertIsNone(proc.poll(), "systemd-socket-activate exited")
                    time.sleep(0.02)
                self.assertEqual(notify.drain(0.2), [], "daemon started before any connection")

                # The first call, as bash completion makes it, starts the daemon.
                r = subprocess.run([CCSYNCCTL, f"--socket={sock}", "connection", "list",
                                    "--names"], capture_output=True, text=True, timeout=20)
                self.assertEqual(r.returncode, 0, f"ccsyncctl: {r.stdout}{r.stderr}")
                ready = notify.wait_for("READY", "1", proc=proc)
                self.assertTrue(ready.get("STATUS"))
                self.assertFalse(os.path.exists(f"{d}/not-this.sock"),
                                 "daemon bound its own socket although one was passed in")

                # A second call reaches the same daemon.
                r = subprocess.run([CCSYNCCTL, f"--socket={sock}", "status"],
                                   capture_output=True, text=True, timeout=20)
                if "not available in this daemon build" in r.stderr:
                    sys.stderr.write("note: 'status' is not wired into the daemon yet\n")
                else:
                    self.assertEqual(r.returncode, 0, f"ccsyncctl status: {r.stdout}{r.stderr}")

                proc.send_signal(signal.SIGTERM)  # after exec(), this is ccsyncd itself
                notify.wait_for("STOPPING", "1")
                self.assertEqual(proc.wait(timeout=30), 0)
                self.assertTrue(os.path.exists(sock),
                                "daemon unlinked the socket it was given by the service manager")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.seek(0)
                sys.stderr.write(log.read())
                log.close()
                notify.close()


if __name__ == "__main__":
    if not os.access(ACTIVATE, os.X_OK):
        print("SKIP: systemd-socket-activate not installed (package systemd)")
        sys.exit(sdnotify.SKIP)
    if not sdnotify.control_server_landed(CCSYNCCTL):
        print("SKIP: ccsyncctl has no 'status' command yet (control server, issue 5); "
              "socket activation is tested once it lands")
        sys.exit(sdnotify.SKIP)
    unittest.main(verbosity=2)
