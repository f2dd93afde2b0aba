#!/usr/bin/python3
"""fakecc - a faithful fake of the Constant Contact V3 API (+ its OAuth2 server).

Usage:
  /usr/bin/python3 tests/fakecc/fakecc.py --dir DIR [--port 0] [--rps 4]
      [--daily-quota 10000] [--token-rps 1] [--activity-delay-ms 200] [--no-limits]

Serves HTTPS on 127.0.0.1 with a throw-away CA created in DIR, writes
DIR/ready.json when listening, exits cleanly on SIGTERM/SIGINT.
See README.md in this directory.
"""

import argparse
import gc
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fakecc_app  # noqa: E402
import fakecc_spec  # noqa: E402


# --------------------------------------------------------------------------- TLS material
def _run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), r.stderr.decode(errors="replace")))


def ensure_certs(d):
    """Create DIR/ca.pem (+ca.key) and DIR/server.pem (+server.key) unless present.

    ECDSA P-256, SAN = IP:127.0.0.1, DNS:localhost.  Files are produced in a
    temporary directory inside DIR and renamed into place (server files
    first, CA last), so a concurrent reader never sees a half-written file.
    """
    names = ("ca.pem", "ca.key", "server.pem", "server.key")
    if all(os.path.exists(os.path.join(d, n)) for n in names):
        return
    tmp = tempfile.mkdtemp(prefix=".certs-", dir=d)
    try:
        ext = os.path.join(tmp, "server.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                    "subjectKeyIdentifier=hash\n"
                    "authorityKeyIdentifier=keyid,issuer\n")
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", "ca.key"], tmp)
        _run(["openssl", "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
              "-subj", "/CN=ccsync fakecc throw-away test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign",
              "-out", "ca.pem"], tmp)
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", "server.key"], tmp)
        _run(["openssl", "req", "-new", "-key", "server.key", "-subj", "/CN=127.0.0.1",
              "-out", "server.csr"], tmp)
        serial = "0x" + os.urandom(12).hex()
        _run(["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-set_serial", serial, "-days", "825", "-sha256", "-extfile", ext,
              "-out", "server.pem"], tmp)
        for n in ("server.key", "server.pem", "ca.key", "ca.pem"):
            os.replace(os.path.join(tmp, n), os.path.join(d, n))
    finally:
        for n in os.listdir(tmp):
            os.unlink(os.path.join(tmp, n))
        os.rmdir(tmp)


def make_ssl_context(d):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.path.join(d, "server.pem"), os.path.join(d, "server.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


# --------------------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakecc/1.0"
    sys_version = ""
    timeout = 120           # idle keep-alive connections are closed after this

    def setup(self):
        super().setup()
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            self._handshake_failed = True
        else:
            self._handshake_failed = False

    def handle(self):
        if self._handshake_failed:
            return
        super().handle()

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("fakecc: %s - %s\n" % (self.address_string(), fmt % args))

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        maxb = self.server.app.cfg["max_body_bytes"]
        if "chunked" in te:
            parts = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:         # trailers
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    break
                total += size
                if total > maxb:
                    return None
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
            return b"".join(parts)
        n = self.headers.get("Content-Length")
        if not n:
            return b""
        n = int(n)
        if n < 0:
            raise ValueError("negative Content-Length")
        if n > maxb:
            return None
        body = self.rfile.read(n) if n else b""
        if len(body) != n:
            raise ConnectionError("client closed the connection mid-body")
        return body

    def _dispatch(self):
        app = self.server.app
        # Large uploads: make the activity worker yield while we read and parse,
        # so a 4 MB import is not slowed down by GIL contention.
        big = int(self.headers.get("Content-Length") or 0) > 65536 or \
            "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if big:
            with app.lock:
                app.inflight += 1
        try:
            self._dispatch2()
        finally:
            if big:
                with app.cond:
                    app.inflight -= 1
                    app.cond.notify_all()

    def _dispatch2(self):
        try:
            body = self._read_body()
        except (ValueError, ConnectionError, OSError):
            self.close_connection = True
            return
        if body is None:
            self._send(fakecc_app.api_error(413, "payload_too_large", "Request body too large"))
            self.close_connection = True
            return
        u = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        req = fakecc_app.Request(self.command, u.path, query, self.headers, body,
                                 self.client_address)
        resp = self.server.app.handle(req)
        if resp.delay_s:
            time.sleep(resp.delay_s)
        if resp.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(resp)

    def _send(self, resp):
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if resp.body and self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, ssl_ctx, app, verbose=False):
        self.ssl_ctx = ssl_ctx
        self.app = app
        self.verbose = verbose
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The TLS handshake happens in the connection's own thread (Handler.setup).
        return self.ssl_ctx.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        et, ev = sys.exc_info()[:2]
        if isinstance(ev, (ConnectionError, ssl.SSLError, socket.timeout, TimeoutError)):
            return
        super().handle_error(request, client_address)


def write_ready(d, info):
    path = os.path.join(d, "ready.json")
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "w") as f:
        json.dump(info, f)
        f.write("\n")
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Fake Constant Contact V3 API for tests.")
    p.add_argument("--dir", required=True, help="state dir: CA, cert, ready.json")
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any)")
    p.add_argument("--rps", type=float, default=4.0, help="per-API-key requests/second (burst = rps)")
    p.add_argument("--daily-quota", type=int, default=10000, help="per-API-key requests per UTC day")
    p.add_argument("--token-rps", type=float, default=1.0, help="token endpoint requests/second per client")
    p.add_argument("--activity-delay-ms", type=int, default=200,
                   help="time from accepting a bulk activity to its completion (serial per account)")
    p.add_argument("--no-limits", action="store_true",
                   help="disable rps, daily quota and token-endpoint limits")
    p.add_argument("--spec", default=None,
                   help="spec file: the vendored cc_v3_subset.json (default) or a full OpenAPI .yaml")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when the parent process goes away")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # 1,000,000 long-lived contact objects: keep the cyclic GC from repeatedly
    # traversing them (full collections took ~1 s each); young generations are
    # still collected.  And hand the GIL over faster, so request threads are
    # not starved by the activity worker.
    gc.set_threshold(100000, 50, 1000000)
    gc.freeze()
    sys.setswitchinterval(0.001)
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    try:
        os.unlink(os.path.join(d, "ready.json"))
    except FileNotFoundError:
        pass
    ensure_certs(d)
    validators = fakecc_spec.Validators(fakecc_spec.load(args.spec))
    app = fakecc_app.App(validators, {
        "limits_enabled": not args.no_limits, "rps": args.rps, "daily_quota": args.daily_quota,
        "token_rps": args.token_rps, "activity_delay_ms": args.activity_delay_ms})
    server = Server(("127.0.0.1", args.port), Handler, make_ssl_context(d), app, args.verbose)
    port = server.server_address[1]
    base = "https://127.0.0.1:%d" % port
    app.base_url = base

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    worker = threading.Thread(target=app.worker, name="activities", daemon=True)
    worker.start()
    srv = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                           name="http", daemon=True)
    srv.start()
    write_ready(d, {"port": port, "ca_file": os.path.join(d, "ca.pem"),
                    "api_base": base + "/v3", "auth_base": base + "/oauth2/default/v1",
                    "fake_base": base + "/_fake", "pid": os.getpid()})
    ppid = os.getppid()
    while not stop.wait(0.25):
        if args.exit_with_parent and os.getppid() != ppid:
            break
    server.shutdown()
    server.server_close()
    app.stop()
    try:
        os.unlink(os.path.join(d, "ready.json"))
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
