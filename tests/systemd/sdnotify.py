"""Helpers for the systemd suite: a NOTIFY_SOCKET the test owns, and the daemon under it.

Only the Python standard library; the environment comes from meson (CCSYNC_BUILD_ROOT,
CCSYNC_SOURCE_ROOT) or from the command line of the individual test.
"""
import os
import socket
import subprocess
import time

EX_USAGE = 64
SKIP = 77


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notification socket."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []  # every datagram, each as a dict (later keys of one datagram win)

    def close(self):
        self.sock.close()

    def _recv(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        fields = {}
        for line in data.decode().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value
        self.messages.append(fields)
        return fields

    def wait_for(self, key, value=None, timeout=10.0, proc=None):
        """Returns the first new datagram carrying key (=value); raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {key}{'=' + value if value else ''} within {timeout}s; "
                                   f"got {self.messages}")
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode} while waiting for {key}")
            msg = self._recv(min(left, 0.2))
            if msg is not None and key in msg and (value is None or msg[key] == value):
                return msg

    def drain(self, seconds):
        """Collects datagrams for the given time; returns them."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is not None:
                got.append(msg)
        return got


def control_server_landed(ccsyncctl):
    """True once ccsyncctl knows "status" (before that it answers every command with EX_USAGE)."""
    r = subprocess.run([ccsyncctl, "--socket=/nonexistent/ccsync.sock", "status"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
    return r.returncode != EX_USAGE


def build_paths():
    source = os.environ.get("CCSYNC_SOURCE_ROOT",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    build = os.environ.get("CCSYNC_BUILD_ROOT", os.path.join(source, "build"))
    return source, build
