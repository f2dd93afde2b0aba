"""State, routes, limits, faults and statistics of the fake Constant Contact V3 API.

HTTP-agnostic: App.handle(Request) -> Response.  fakecc.py does the HTTPS part.
See README.md for the behaviour this implements and the documented choices.
"""

import base64
import bisect
import collections
import datetime
import hashlib
import hmac
import heapq
import json
import random
import re
import secrets
import sys
import threading
import time
import urllib.parse
import uuid

DAY = 86400.0

DEFAULT_CONFIG = {
    # rate limits (per API key = client_id)
    "limits_enabled": True,
    "rps": 4.0,                     # token bucket refill rate
    "burst": None,                  # bucket size; None = same as rps
    "daily_quota": 10000,           # requests per UTC day (fake clock)
    "token_rps": 1.0,               # token + device/authorize endpoint, per client
    # bulk activities
    "activity_delay_ms": 200,       # queue wait (25%) + processing (75%) per activity
    "max_queued_activities": 1000,  # non-terminal activities per account
    "activity_retention_s": 10 * DAY,
    "max_import_contacts": 40000,
    "import_truncate_bytes": 4000000,
    "max_body_bytes": 64 * 1024 * 1024,
    "max_activity_errors": 1000,    # cap on activity_errors strings per activity
    "unknown_list_status": 404,     # 404 or 400 for an unknown/deleted list id in a bulk POST
    "max_lists_per_contact": 50,
    "max_lists": 1000,
    "max_custom_fields": 100,
    # OAuth2
    "access_token_ttl_s": 86400,
    "auth_code_ttl_s": 300,
    "refresh_idle_ttl_s": 180 * DAY,
    "device_code_ttl_s": 600,
    "device_interval_s": 5,
    "device_slow_down_increment_s": 5,
}

TERMINAL = ("completed", "cancelled", "failed", "timed_out")
PERMISSIONS = ("implicit", "explicit", "not_set", "pending_confirmation",
               "temp_hold", "unsubscribed")

EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
ANNIV_RE = re.compile(
    r"^(?:\d{1,2}/\d{1,2}/\d{4}|\d{4}/\d{1,2}/\d{1,2}|\d{4}-\d{1,2}-\d{1,2}|\d{1,2}-\d{1,2}-\d{4})$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
PKCE_VERIFIER_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")

# Import keys that map to contact fields the fake stores (everything else that
# the spec declares is stored verbatim in Contact.extra).
NAME_KEYS = ("first_name", "last_name")


def iso(t):
    dt = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (int(t * 1000) % 1000)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def new_uuid():
    return str(uuid.uuid4())


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "client")

    def __init__(self, method, path, query, headers, body, client=None):
        self.method = method
        self.path = path
        self.query = query          # dict name -> list of values
        self.headers = headers      # case-insensitive mapping (email.message.Message)
        self.body = body            # bytes
        self.client = client

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[-1] if v else default

    def header(self, name, default=None):
        v = self.headers.get(name)
        return default if v is None else v


class Response:
    __slots__ = ("status", "body", "headers", "drop", "delay_s", "kind")

    def __init__(self, status, obj=None, headers=None, raw=None, ctype="application/json"):
        self.status = status
        if raw is not None:
            self.body = raw
        elif obj is None:
            self.body = b""
        else:
            self.body = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        self.headers = list(headers or [])
        if self.body or status not in (204, 302):
            self.headers.append(("Content-Type", ctype))
        self.drop = False
        self.delay_s = 0.0
        self.kind = None


def api_error(status, key, message):
    """CC's general error format: an ARRAY of {error_key, error_message}."""
    return Response(status, [{"error_key": key, "error_message": message}])


def api_errors(status, key, messages):
    return Response(status, [{"error_key": key, "error_message": m} for m in messages])


def gw_error(status, key, message):
    """Gateway-level errors (401, 403, 429 rate limits): a single OBJECT."""
    return Response(status, {"error_key": key, "error_message": message})


def oauth_error(status, error, desc, headers=None):
    h = [("Cache-Control", "no-store"), ("Pragma", "no-cache")] + list(headers or [])
    return Response(status, {"error": error, "error_description": desc}, headers=h)


class Contact:
    """One contact.  Kept small: 1,000,000 of them must fit comfortably.
    List memberships live only in CList.members and custom-field values only
    in App.cf_values (column store), so there is no per-contact dict/list."""
    __slots__ = ("seq", "email", "first_name", "last_name", "perm", "deleted",
                 "extra", "created", "updated")

    def __init__(self, seq, email, now):
        self.seq = seq
        self.email = email
        self.first_name = None
        self.last_name = None
        self.perm = "implicit"
        self.deleted = None
        self.extra = None
        self.created = now
        self.updated = now


class CList:
    __slots__ = ("list_id", "name", "description", "favorite", "created", "updated",
                 "deleted", "members", "_sorted")

    def __init__(self, name, description, favorite, now):
        self.list_id = new_uuid()
        self.name = name
        self.description = description
        self.favorite = favorite
        self.created = now
        self.updated = now
        self.deleted = None
        self.members = {}       # contact seq -> None (insertion ordered)
        self._sorted = None     # cached sorted(members) for cursor paging

    def add(self, seq):
        if seq not in self.members:
            self.members[seq] = None
            self._sorted = None
            return True
        return False

    def remove(self, seq):
        if seq in self.members:
            del self.members[seq]
            self._sorted = None
            return True
        return False

    def sorted_members(self):
        if self._sorted is None:
            self._sorted = sorted(self.members)
        return self._sorted


class Activity:
    __slots__ = ("id", "seq", "kind", "client_id", "created", "start", "complete",
                 "final_state", "finished_at", "status", "errors", "payload", "list_ids",
                 "outcome", "truncated", "body_bytes", "items_sent", "applied_items",
                 "work", "pos", "ctx", "apply_s", "suppressed", "source")

    def __init__(self, kind, seq, client_id, now):
        self.id = new_uuid()
        self.seq = seq
        self.kind = kind
        self.client_id = client_id
        self.created = now
        self.start = now
        self.complete = now
        self.final_state = None
        self.finished_at = None
        self.status = {}
        self.errors = []
        self.payload = None
        self.source = None
        self.list_ids = []
        self.outcome = None
        self.truncated = False
        self.body_bytes = 0
        self.items_sent = 0
        self.applied_items = 0
        self.work = None        # prepared work items (see App._prepare)
        self.pos = 0
        self.ctx = None
        self.apply_s = 0.0
        self.suppressed = 0


class Bucket:
    __slots__ = ("tokens", "last")

    def __init__(self, cap):
        self.tokens = cap
        self.last = time.monotonic()


class Stats:
    MAX_LIST = 1000

    def __init__(self):
        self.reset()

    def reset(self):
        self.started = time.time()
        self.requests_total = 0
        self.by_kind = collections.Counter()
        self.status_by_kind = collections.defaultdict(collections.Counter)
        self.status = collections.Counter()
        self.http_429 = collections.Counter()
        self.http_401 = 0
        self.http_403 = 0
        self.http_415 = 0
        self.injected = collections.Counter()
        self.bytes_received = 0
        self.imports = {"accepted": 0, "contacts_received": 0, "contacts_imported": 0,
                        "max_body_bytes": 0, "max_contacts": 0,
                        "max_accept_ms": 0.0, "total_accept_ms": 0.0,
                        "max_apply_ms": 0.0, "total_apply_ms": 0.0, "applied": 0}
        self.truncations = {"count": 0, "contacts_dropped": 0, "events": []}
        self.violations = []
        self.violation_count = 0
        self.problems = []
        self.unknown_custom_fields = collections.Counter()
        self.unknown_import_keys = collections.Counter()
        self.empty_string_values = 0
        self.unknown_endpoints = collections.Counter()
        self.unsupported = collections.Counter()
        self.tokens = collections.Counter()
        self.activities = collections.Counter()
        self.max_queue_depth = 0

    def problem(self, text):
        if len(self.problems) < self.MAX_LIST:
            self.problems.append(text)

    def violation(self, now, method, path, kind, messages):
        self.violation_count += 1
        msg = "; ".join(messages)
        if len(self.violations) < self.MAX_LIST:
            self.violations.append({"at": iso(now), "method": method, "path": path,
                                    "kind": kind, "message": msg})
        self.problem("schema violation: %s %s: %s" % (method, path, msg[:500]))

    def as_json(self):
        return {
            "since": iso(self.started),
            "requests_total": self.requests_total,
            "requests_by_kind": dict(self.by_kind),
            "status_by_kind": {k: {str(s): n for s, n in v.items()}
                               for k, v in self.status_by_kind.items()},
            "responses_by_status": {str(k): v for k, v in self.status.items()},
            "http_429": dict(self.http_429),
            "http_429_total": sum(self.http_429.values()),
            "http_401": self.http_401,
            "http_403": self.http_403,
            "http_415": self.http_415,
            "injected": dict(self.injected),
            "injected_5xx": self.injected.get("5xx", 0),
            "bytes_received": self.bytes_received,
            "imports": dict(self.imports),
            "max_import_body_bytes": self.imports["max_body_bytes"],
            "max_import_contacts": self.imports["max_contacts"],
            "truncations": self.truncations,
            "schema_violations": {"count": self.violation_count, "items": self.violations},
            "unknown_custom_fields": dict(self.unknown_custom_fields),
            "unknown_import_keys": dict(self.unknown_import_keys),
            "empty_string_values": self.empty_string_values,
            "unknown_endpoints": dict(self.unknown_endpoints),
            "unsupported": dict(self.unsupported),
            "tokens": dict(self.tokens),
            "activities": dict(self.activities),
            "max_queue_depth": self.max_queue_depth,
            "problems": list(self.problems),
            "problems_count": len(self.problems),
        }


def _as_count(v, default=1):
    if isinstance(v, bool):
        return default if v else 0
    if isinstance(v, int):
        return v
    if isinstance(v, dict):
        return int(v.get("count", default))
    raise ValueError("expected a count")


class App:
    V3 = "/v3"
    AUTH = "/oauth2/default/v1"

    def __init__(self, validators, config=None):
        self.val = validators
        self.cfg = dict(DEFAULT_CONFIG)
        if config:
            self.cfg.update(config)
        self.base_cfg = dict(self.cfg)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.stopping = False
        self.base_url = "https://127.0.0.1"
        self.jwt_key = secrets.token_bytes(32)
        self.clock_offset = 0.0
        self.inflight = 0       # import POSTs being parsed (the worker yields to them)
        self.stats = Stats()
        self.clients = {}
        self._reset_data(keep_tokens=False)
        self.register_client("test-client", "test-secret", "rotating")
        self._build_routes()

    # ------------------------------------------------------------------ basics
    def now(self):
        return time.time() + self.clock_offset

    def _reset_data(self, keep_tokens):
        if not keep_tokens:
            self.access = {}
            self.grants = {}
            self.refresh_index = {}
            self.retired_refresh = {}
            self.codes = {}
            self.devices = {}
            self.user_codes = {}
        self.buckets = {}
        self.token_buckets = {}
        self.quota = {}
        self.lists = {}
        self.list_names = {}
        self.contacts = []
        self.by_email = {}
        self.cid_prefix = str(uuid.uuid4())[:24]
        self.custom_fields = {}
        self.cf_by_name = {}
        self.cf_values = {}     # custom_field_id -> {contact seq: value}
        self.activities = {}
        self.act_list = []
        self.pending = collections.deque()
        self.sched_tail = 0.0
        self.faults = {}

    def contact_id(self, c):
        return "%s%012x" % (self.cid_prefix, c.seq)

    def contact_by_id(self, cid):
        if not isinstance(cid, str) or len(cid) != 36 or not cid.startswith(self.cid_prefix):
            return None
        try:
            seq = int(cid[24:], 16)
        except ValueError:
            return None
        if 0 <= seq < len(self.contacts):
            return self.contacts[seq]
        return None

    def limits_on(self):
        return bool(self.cfg["limits_enabled"])

    # ------------------------------------------------------------------ routing
    def _build_routes(self):
        V, A = self.V3, self.AUTH
        r = []

        def add(method, pattern, kind, fn, group):
            r.append((method, re.compile("^" + pattern + "$"), kind, fn, group))

        add("POST", V + "/activities/contacts_json_import", "import", self.v3_import, "v3")
        add("POST", V + "/activities/remove_list_memberships", "remove", self.v3_remove, "v3")
        add("POST", V + "/activities/add_list_memberships", "add", self.v3_add, "v3")
        add("GET", V + "/activities", "activity_list", self.v3_activity_list, "v3")
        add("GET", V + "/activities/([^/]+)", "activity_get", self.v3_activity_get, "v3")
        add("GET", V + "/contact_lists", "lists", self.v3_lists, "v3")
        add("POST", V + "/contact_lists", "list_create", self.v3_list_create, "v3")
        add("GET", V + "/contact_lists/([^/]+)", "list_get", self.v3_list_get, "v3")
        add("GET", V + "/contacts", "contacts", self.v3_contacts, "v3")
        add("GET", V + "/contacts/([^/]+)", "contact_get", self.v3_contact_get, "v3")
        add("GET", V + "/contact_custom_fields", "custom_fields", self.v3_custom_fields, "v3")
        add("POST", V + "/contact_custom_fields", "custom_field_create", self.v3_custom_field_create, "v3")
        add("POST", A + "/token", "token", self.oauth_token, "oauth")
        add("POST", A + "/device/authorize", "device_authorize", self.oauth_device_authorize, "oauth")
        add("GET", A + "/authorize", "authorize", self.oauth_authorize, "oauth")
        add("GET", "/activate", "activate", self.oauth_activate, "oauth")
        F = "/_fake"
        add("GET", F + "/health", "fake", self.f_health, "fake")
        add("GET", F + "/config", "fake", self.f_config_get, "fake")
        add("POST", F + "/config", "fake", self.f_config_set, "fake")
        add("GET", F + "/clients", "fake", self.f_clients_get, "fake")
        add("POST", F + "/clients", "fake", self.f_clients_post, "fake")
        add("POST", F + "/tokens", "fake", self.f_tokens, "fake")
        add("POST", F + "/device/approve", "fake", self.f_device_approve, "fake")
        add("POST", F + "/device/deny", "fake", self.f_device_deny, "fake")
        add("GET", F + "/lists", "fake", self.f_lists_get, "fake")
        add("POST", F + "/lists", "fake", self.f_lists_post, "fake")
        add("DELETE", F + "/lists/([^/]+)", "fake", self.f_lists_delete, "fake")
        add("POST", F + "/contacts", "fake", self.f_contacts_post, "fake")
        add("POST", F + "/custom_fields", "fake", self.f_custom_fields_post, "fake")
        add("GET", F + "/state", "fake", self.f_state, "fake")
        add("GET", F + "/stats", "fake", self.f_stats, "fake")
        add("POST", F + "/drain", "fake", self.f_drain, "fake")
        add("POST", F + "/stats/reset", "fake", self.f_stats_reset, "fake")
        add("GET", F + "/faults", "fake", self.f_faults_get, "fake")
        add("POST", F + "/faults", "fake", self.f_faults_post, "fake")
        add("DELETE", F + "/faults", "fake", self.f_faults_delete, "fake")
        add("GET", F + "/clock", "fake", self.f_clock_get, "fake")
        add("POST", F + "/clock", "fake", self.f_clock_post, "fake")
        add("GET", F + "/activities", "fake", self.f_activities, "fake")
        add("GET", F + "/activities/([^/]+)", "fake", self.f_activity, "fake")
        add("POST", F + "/reset", "fake", self.f_reset, "fake")
        self.routes = r

    def route(self, method, path):
        path_known = False
        for m, rx, kind, fn, group in self.routes:
            mo = rx.match(path)
            if mo:
                path_known = True
                if m == method:
                    return kind, fn, group, mo.groups()
        return ("method_not_allowed" if path_known else "unknown"), None, None, ()

    def handle(self, req):
        """Entry point.  Never raises (returns a 500 on internal bugs)."""
        try:
            resp = self._handle(req)
        except Exception as e:  # a bug in the fake: say so loudly
            import traceback
            traceback.print_exc()
            with self.lock:
                self.stats.problem("fake internal error on %s %s: %r" % (req.method, req.path, e))
            resp = api_error(500, "fakecc.internal_error", "fake bug: %r" % (e,))
            resp.kind = "error"
        return resp

    def _handle(self, req):
        kind, fn, group, args = self.route(req.method, req.path)
        fake = group == "fake" or req.path.startswith("/_fake/")
        with self.lock:
            if not fake:
                self.stats.requests_total += 1
                self.stats.by_kind[kind] += 1
                self.stats.bytes_received += len(req.body)
            pre = None if fake else self._faults_before(req)
        if pre is not None:
            resp = pre
        elif fn is None and fake:
            resp = Response(404, {"error": "no such fake control endpoint: %s %s" % (req.method, req.path)})
        elif fn is None:
            with self.lock:
                if kind == "unknown":
                    self.stats.unknown_endpoints["%s %s" % (req.method, req.path)] += 1
                    self.stats.problem("unknown endpoint: %s %s" % (req.method, req.path))
                    resp = api_error(404, "not_found", "The requested resource was not found.")
                else:
                    self.stats.unknown_endpoints["%s %s" % (req.method, req.path)] += 1
                    self.stats.problem("method not allowed: %s %s" % (req.method, req.path))
                    resp = api_error(405, "method_not_allowed", "Method not supported on the resource.")
        elif group == "v3":
            resp = self._v3(req, kind, fn, args)
        elif group == "oauth":
            resp = fn(req, *args)
        else:
            resp = fn(req, *args)
        if not fake:
            with self.lock:
                if pre is None:
                    resp = self._faults_after(req, resp)
                self.stats.status[resp.status] += 1
                self.stats.status_by_kind[kind][resp.status] += 1
                if resp.status == 401:
                    self.stats.http_401 += 1
                elif resp.status == 403:
                    self.stats.http_403 += 1
                elif resp.status == 415:
                    self.stats.http_415 += 1
                lat = self._fault_active("latency_ms", req)
                if lat:
                    resp.delay_s = lat["ms"] / 1000.0
                    self.stats.injected["latency"] += 1
        resp.kind = kind
        return resp

    # ------------------------------------------------------------------ faults
    def _match(self, fault, req):
        m = fault.get("match") or {}
        prefix = m.get("path_prefix", "/v3/")
        if not req.path.startswith(prefix):
            return False
        meth = m.get("method")
        return not meth or meth.upper() == req.method

    def _fault_active(self, name, req):
        f = self.faults.get(name)
        if not f or not self._match(f, req):
            return None
        return f

    def _consume(self, name, req):
        """Return the fault dict if it fires for this request (count decremented)."""
        f = self._fault_active(name, req)
        if f is None:
            return None
        if f.get("count") is not None:
            if f["count"] <= 0:
                return None
            f["count"] -= 1
            if f["count"] <= 0:
                del self.faults[name]
        return f

    def _faults_before(self, req):
        f = self.faults.get("drop_connections")
        if f and f.get("when", "before") == "before" and self._consume("drop_connections", req):
            self.stats.injected["dropped"] += 1
            r = Response(0)
            r.drop = True
            return r
        if self._consume("throttle_storm", req):
            self.stats.injected["throttle"] += 1
            self.stats.http_429["throttled"] += 1
            return gw_error(429, "throttled", "Too Many Requests")
        f = self.faults.get("error_rate")
        if f and f.get("when", "before") == "before":
            r = self._error_rate(req)
            if r is not None:
                return r
        return None

    def _error_rate(self, req):
        f = self._fault_active("error_rate", req)
        if f is None:
            return None
        if f["rng"].random() >= f["rate"]:
            return None
        if self._consume("error_rate", req) is None:
            return None
        st = f["rng"].choice(f["statuses"])
        self.stats.injected["5xx"] += 1
        self.stats.injected[str(st)] += 1
        if st == 503:
            return api_error(503, "service_unavailable", "Our internal service is temporarily unavailable.")
        return api_error(st, "server_error", "There was a problem with our internal service.")

    def _faults_after(self, req, resp):
        f = self.faults.get("drop_connections")
        if f and f.get("when") == "after" and self._consume("drop_connections", req):
            self.stats.injected["dropped"] += 1
            resp.drop = True
            return resp
        f = self.faults.get("error_rate")
        if f and f.get("when") == "after":
            r = self._error_rate(req)
            if r is not None:
                return r
        return resp

    # ------------------------------------------------------------------ /v3 gate
    def _v3(self, req, kind, fn, args):
        auth = req.header("Authorization", "")
        tok = None
        if auth[:7].lower() == "bearer ":
            tok_s = auth[7:].strip()
        else:
            tok_s = None
        with self.lock:
            now = self.now()
            if tok_s:
                tok = self.access.get(tok_s)
            if tok is None or now >= tok["exp"]:
                return gw_error(401, "unauthorized", "Unauthorized")
            client = self.clients.get(tok["client_id"])
            if client is None or not client["active"]:
                return gw_error(403, "forbidden", "Forbidden: the application is deactivated.")
            if self.limits_on():
                if not self._take(self.buckets, tok["client_id"], self.cfg["rps"],
                                  self.cfg["burst"] or self.cfg["rps"]):
                    self.stats.http_429["throttled"] += 1
                    return gw_error(429, "throttled", "Too Many Requests")
                if not self._quota_take(tok["client_id"], now):
                    self.stats.http_429["quota_exceeded"] += 1
                    return gw_error(429, "quota_exceeded", "Limit Exceeded")
            if "contact_data" not in tok["scope"]:
                return gw_error(403, "forbidden", "Forbidden: the access token lacks the contact_data scope.")
            if req.method in ("POST", "PUT", "PATCH"):
                ct = (req.header("Content-Type") or "").split(";")[0].strip().lower()
                if ct != "application/json":
                    self.stats.violation(now, req.method, req.path, "content_type",
                                         ["Content-Type %r is not application/json"
                                          % req.header("Content-Type")])
                    return api_error(415, "unsupported_media_type",
                                     "Content-Type must be application/json")
        return fn(req, tok, *args)

    def _take(self, table, key, rate, cap):
        b = table.get(key)
        if b is None:
            b = table[key] = Bucket(cap)
        t = time.monotonic()
        b.tokens = min(cap, b.tokens + (t - b.last) * rate)
        b.last = t
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False

    @staticmethod
    def _day(now):
        return int(now // DAY)

    def _quota_take(self, client_id, now):
        day = self._day(now)
        q = self.quota.get(client_id)
        if q is None or q[0] != day:
            q = self.quota[client_id] = [day, 0]
        if q[1] >= self.cfg["daily_quota"]:
            return False
        q[1] += 1
        return True

    def _violation(self, req, kind, messages, status=400):
        with self.lock:
            self.stats.violation(self.now(), req.method, req.path, kind, messages)
        return api_errors(status, "contacts.api.validation.error", messages)

    def _unsupported(self, req, what):
        with self.lock:
            self.stats.unsupported[what] += 1
            self.stats.problem("unsupported by the fake: %s (%s %s)" % (what, req.method, req.path))
        return api_error(400, "contacts.api.validation.error", "fakecc does not implement %s" % what)

    def _query(self, req, oid):
        q = {k: v[-1] for k, v in req.query.items()}
        errs = self.val.query_errors(oid, q)
        return q, errs

    def _parse_json_body(self, req, oid):
        try:
            data = json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as e:
            return None, self._violation(req, oid, ["Malformed JSON: %s" % e])
        errs = self.val.body_errors(oid, data)
        if errs:
            return None, self._violation(req, oid, errs)
        return data, None

    def _check_lists(self, req, list_ids):
        missing = [l for l in list_ids if l not in self.lists or self.lists[l].deleted]
        if not missing:
            return None
        st = int(self.faults.get("unknown_list_status", {}).get("status")
                 or self.cfg["unknown_list_status"])
        self.stats.activities["rejected_unknown_list"] += 1
        if st == 404:
            return api_errors(404, "contacts.api.not_found",
                              ["list_id %s was not found" % l for l in missing])
        return api_errors(400, "contacts.api.validation.error",
                          ["list_id %s is not a valid list" % l for l in missing])

    def _queue_full(self):
        if len(self.pending) >= self.cfg["max_queued_activities"]:
            self.stats.http_429["queue_full"] += 1
            return api_error(429, "activities.queue_full",
                             "You exceeded 1,000 queued activities for this user account.")
        return None

    # ------------------------------------------------------------------ imports
    @staticmethod
    def count_items_in_prefix(prefix):
        """How many import_data items lie wholly inside `prefix` (bytes)?"""
        s = prefix.decode("utf-8", "ignore")
        dec = json.JSONDecoder()
        n = len(s)
        ws = " \t\r\n"

        def skip(i):
            while i < n and s[i] in ws:
                i += 1
            return i
        i = skip(0)
        if i >= n or s[i] != "{":
            return 0
        i += 1
        try:
            while True:
                i = skip(i)
                if i >= n or s[i] == "}":
                    return 0
                key, i = dec.raw_decode(s, i)
                i = skip(i)
                if i >= n or s[i] != ":":
                    return 0
                i = skip(i + 1)
                if key == "import_data":
                    if i >= n or s[i] != "[":
                        return 0
                    i += 1
                    count = 0
                    while True:
                        i = skip(i)
                        if i >= n or s[i] == "]":
                            return count
                        try:
                            _, i = dec.raw_decode(s, i)
                        except ValueError:
                            return count
                        count += 1
                        i = skip(i)
                        if i < n and s[i] == ",":
                            i += 1
                else:
                    _, i = dec.raw_decode(s, i)
                    i = skip(i)
                    if i < n and s[i] == ",":
                        i += 1
        except (ValueError, IndexError):
            return 0

    def v3_import(self, req, tok):
        with self.lock:
            self.inflight += 1
        try:
            return self._v3_import(req, tok)
        finally:
            with self.cond:
                self.inflight -= 1
                self.cond.notify_all()

    def _v3_import(self, req, tok):
        t0 = time.perf_counter()
        oid = "createImportJSONActivity"
        body = req.body
        with self.lock:
            im = self.stats.imports
            im["max_body_bytes"] = max(im["max_body_bytes"], len(body))
        data, err = self._parse_json_body(req, oid)
        if err:
            return err
        items = data["import_data"]
        n = len(items)
        with self.lock:
            im["max_contacts"] = max(im["max_contacts"], n)
            im["contacts_received"] += n
        if n > self.cfg["max_import_contacts"]:
            return self._violation(req, oid, [
                "import_data contains %d contacts; the maximum is %d"
                % (n, self.cfg["max_import_contacts"])])
        errs, unknown, cf_names, empty = self.val.item_checker.check(items)
        if errs:
            return self._violation(req, oid, errs)
        kept = n
        truncated = len(body) > self.cfg["import_truncate_bytes"]
        if truncated:
            kept = min(n, self.count_items_in_prefix(body[:self.cfg["import_truncate_bytes"]]))
        with self.lock:
            now = self.now()
            r = self._check_lists(req, data["list_ids"])
            if r:
                return r
            r = self._queue_full()
            if r:
                return r
            for k, c in unknown.items():
                self.stats.unknown_import_keys[k] += c
            self.stats.empty_string_values += empty
            a = self._new_activity("import", tok["client_id"], now)
            a.payload = items[:kept] if truncated else items
            a.list_ids = list(dict.fromkeys(data["list_ids"]))
            a.body_bytes = len(body)
            a.items_sent = n
            a.status = {"items_total_count": kept, "items_completed_count": 0,
                        "person_count": 0, "error_count": 0, "correctable_count": 0,
                        "cannot_add_to_list_count": 0}
            if truncated:
                a.truncated = True
                tr = self.stats.truncations
                tr["count"] += 1
                tr["contacts_dropped"] += n - kept
                if len(tr["events"]) < Stats.MAX_LIST:
                    tr["events"].append({"activity_id": a.id, "body_bytes": len(body),
                                         "contacts_sent": n, "contacts_imported": kept})
                self.stats.problem(
                    "import body of %d bytes > %d: silently truncated to %d of %d contacts (activity %s)"
                    % (len(body), self.cfg["import_truncate_bytes"], kept, n, a.id))
            im["accepted"] += 1
            ms = (time.perf_counter() - t0) * 1000.0
            im["max_accept_ms"] = max(im["max_accept_ms"], round(ms, 2))
            im["total_accept_ms"] = round(im["total_accept_ms"] + ms, 2)
            return Response(201, self._activity_json(a, now, initial=True))

    def _new_activity(self, kind, client_id, now):
        seq = len(self.act_list)
        a = Activity(kind, seq, client_id, now)
        d = self.cfg["activity_delay_ms"] / 1000.0
        begin = max(now, self.sched_tail)
        a.start = begin + 0.25 * d
        a.complete = begin + d
        self.sched_tail = a.complete
        of = self.faults.get("activity_outcome")
        if of and of.get("kind") not in (None, kind):
            of = None
        if of and of.get("skip", 0) > 0:
            of["skip"] -= 1
            of = None
        if of and of.get("count", 1) > 0:
            a.outcome = {"state": of["state"], "errors": list(of.get("errors") or []),
                         "applied_fraction": float(of.get("applied_fraction", 0.0))}
            of["count"] = of.get("count", 1) - 1
            if of["count"] <= 0:
                del self.faults["activity_outcome"]
        self.activities[a.id] = a
        self.act_list.append(a)
        self.pending.append(a)
        self.stats.activities["created_" + kind] += 1
        self.stats.max_queue_depth = max(self.stats.max_queue_depth, len(self.pending))
        self.cond.notify_all()
        return a

    # ------------------------------------------------------------------ activity engine
    #
    # Activities of the (single) account are processed serially, like a queue:
    # activity k starts 25% of --activity-delay-ms after max(its creation, the
    # scheduled end of activity k-1) and is scheduled to end one full delay
    # after that point.  Only the background worker applies activities, in
    # slices of CHUNK items, yielding to request threads between slices (and
    # pausing while an import POST is being parsed), so accepting a 4 MB import
    # stays fast even while a previous one is being applied.  An activity is
    # reported "completed" only once it is both fully applied and past its
    # scheduled end; if the worker lags, readers simply see "processing".
    CHUNK = 2000

    def _work_once(self):
        """One bounded slice of activity work.  Returns seconds to wait (0 = go on)."""
        if not self.pending or "activity_stuck" in self.faults:
            return 1.0
        a = self.pending[0]
        now = self.now()
        if now < a.start:
            return min(1.0, a.start - now)
        if self.inflight:
            return 0.002
        t0 = time.perf_counter()
        try:
            if a.work is None:
                self._prepare(a, now)
                return 0.0
            if a.pos < len(a.work):
                self._step(a, now)
                return 0.0
        finally:
            a.apply_s += time.perf_counter() - t0
        if now < a.complete:
            return min(1.0, a.complete - now)
        self._finish(a, now)
        self.pending.popleft()
        self.cond.notify_all()
        return 0.0

    def worker(self):
        """Background thread applying activities (see above)."""
        while True:
            with self.cond:
                if self.stopping:
                    return
                try:
                    wait = self._work_once()
                except Exception as e:  # never let the engine die silently
                    import traceback
                    traceback.print_exc()
                    self.stats.problem("fake internal error in activity worker: %r" % (e,))
                    a = self.pending.popleft()
                    a.final_state = "failed"
                    a.finished_at = self.now()
                    wait = 0.0
                if wait > 0:
                    self.cond.wait(wait)
                    continue
            time.sleep(0.0002)

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def _add_err(self, a, text):
        if len(a.errors) < self.cfg["max_activity_errors"]:
            a.errors.append(text)
        else:
            a.suppressed += 1

    def _prepare(self, a, now):
        frac = 1.0
        if a.outcome:
            frac = max(0.0, min(1.0, a.outcome["applied_fraction"]))
        if a.kind == "import":
            self._prepare_import(a, frac)
        else:
            self._prepare_membership(a, frac)
        a.pos = 0

    def _prepare_import(self, a, frac):
        items = a.payload or []
        a.payload = None
        if frac < 1.0:
            items = items[:int(len(items) * frac)]
        lists = []
        for lid in a.list_ids:
            L = self.lists.get(lid)
            if L is None or L.deleted:
                self._add_err(a, "list_id %s no longer exists; contacts were not added to it" % lid)
            else:
                lists.append(L)
        last = {}
        correctable = errors = 0
        email_re = EMAIL_RE.match
        for it in items:
            e = it.get("email")
            if e is None:
                if "sms_number" in it:
                    errors += 1
                    self._add_err(a, "%s: SMS-only contacts are not supported by fakecc"
                                  % it.get("sms_number"))
                else:
                    correctable += 1
                    self._add_err(a, "(no email): missing minimal contact information")
                continue
            if not email_re(e):
                correctable += 1
                self._add_err(a, "%s: invalid email address" % e)
                continue
            if "birthday_month" in it or "birthday_day" in it:
                bm, bd = it.get("birthday_month"), it.get("birthday_day")
                if bm is None or bd is None or not (1 <= bm <= 12) or not (1 <= bd <= 31):
                    correctable += 1
                    self._add_err(a, "%s: invalid birthday" % e)
                    continue
            an = it.get("anniversary")
            if an and not ANNIV_RE.match(an):
                correctable += 1
                self._add_err(a, "%s: invalid anniversary date" % e)
                continue
            last[e.lower()] = it        # last duplicate (case-insensitive) wins
        a.work = list(last.items())
        a.ctx = {"lists": lists, "correctable": correctable, "errors": errors,
                 "cannot_add": 0, "items": len(items)}

    def _prepare_membership(self, a, frac):
        p = a.payload
        a.payload = None
        src = p["source"]
        a.source = {k: (len(v) if k == "contact_ids" else v) for k, v in src.items()}
        seqs = []
        if "contact_ids" in src:
            seen = set()
            for cid in src["contact_ids"]:
                c = self.contact_by_id(cid)
                if c is not None and c.seq not in seen:
                    seen.add(c.seq)
                    seqs.append(c.seq)
        elif "list_ids" in src:
            seen = {}
            for lid in src["list_ids"]:
                L = self.lists.get(lid)
                if L is not None and not L.deleted:
                    seen.update(L.members)
            seqs = list(seen)
        elif src.get("all_active_contacts"):
            seqs = [c.seq for c in self.contacts if c.deleted is None and c.perm != "unsubscribed"]
        excl = set()
        for cid in (p.get("exclude") or {}).get("contact_ids", []):
            c = self.contact_by_id(cid)
            if c is not None:
                excl.add(c.seq)
        if excl:
            seqs = [s for s in seqs if s not in excl]
        if frac < 1.0:
            seqs = seqs[:int(len(seqs) * frac)]
        targets = []
        for lid in a.list_ids:
            L = self.lists.get(lid)
            if L is None or L.deleted:
                self._add_err(a, "list_id %s no longer exists" % lid)
            else:
                targets.append(L)
        a.work = seqs
        a.ctx = {"targets": targets}
        a.status["items_total_count"] = len(seqs)

    def _step(self, a, now):
        lo = a.pos
        hi = min(len(a.work), lo + self.CHUNK)
        if a.kind == "import":
            self._step_import(a, lo, hi, now)
        else:
            self._step_membership(a, lo, hi, now)
        a.pos = hi

    def _step_import(self, a, lo, hi, now):
        ctx = a.ctx
        lists = [L for L in ctx["lists"] if not L.deleted]
        by_email = self.by_email
        contacts = self.contacts
        cf_by_name = self.cf_by_name
        unknown_cf = self.stats.unknown_custom_fields
        known = self.val.item_checker.known
        max_lists = self.cfg["max_lists_per_contact"]
        check_cap = len(self.lists) > max_lists
        cf_values = self.cf_values
        intern = sys.intern
        cannot_add = 0
        for el, it in a.work[lo:hi]:
            c = by_email.get(el)
            if c is None:
                c = Contact(len(contacts), el, now)
                contacts.append(c)
                by_email[el] = c
            elif c.deleted is not None:
                # Documented choice: an import revives a deleted contact.
                c.deleted = None
            for k, v in it.items():
                if v == "":
                    continue            # documented choice: "" never clears a field
                if k == "first_name":
                    c.first_name = v
                elif k == "last_name":
                    c.last_name = v
                elif k == "email":
                    continue
                elif k[:3] == "cf:":
                    f = cf_by_name.get(k[3:])
                    if f is None:
                        unknown_cf[k[3:]] += 1
                        continue
                    cf_values[f["custom_field_id"]][c.seq] = intern(v) if len(v) <= 64 else v
                elif k in known:
                    if c.extra is None:
                        c.extra = {}
                    c.extra[k] = v
            c.updated = now
            if c.perm == "unsubscribed":
                cannot_add += 1
                continue
            seq = c.seq
            for L in lists:
                m = L.members
                if seq in m:
                    continue
                if check_cap and self._list_count(seq) >= max_lists:
                    ctx["errors"] += 1
                    self._add_err(a, "%s: contact is already a member of %d lists" % (el, max_lists))
                    break
                m[seq] = None
                L._sorted = None
        ctx["cannot_add"] += cannot_add
        for L in lists:
            L.updated = now

    def _list_count(self, seq):
        return sum(1 for L in self.lists.values() if seq in L.members)

    def _step_membership(self, a, lo, hi, now):
        contacts = self.contacts
        chunk = a.work[lo:hi]
        max_lists = self.cfg["max_lists_per_contact"]
        check_cap = len(self.lists) > max_lists
        for L in a.ctx["targets"]:
            if L.deleted:
                continue
            m = L.members
            if a.kind == "remove":
                for s in chunk:
                    if s in m:
                        del m[s]
            else:
                for s in chunk:
                    c = contacts[s]
                    if c.deleted is not None or c.perm == "unsubscribed" or s in m:
                        continue
                    if check_cap and self._list_count(s) >= max_lists:
                        continue
                    m[s] = None
            L._sorted = None
            L.updated = now

    def _finish(self, a, now):
        st = a.status
        if a.kind == "import":
            ctx = a.ctx
            st["items_completed_count"] = ctx["items"]
            st["person_count"] = len(a.work)
            st["correctable_count"] = ctx["correctable"]
            st["error_count"] = ctx["errors"]
            st["cannot_add_to_list_count"] = ctx["cannot_add"]
            a.applied_items = ctx["items"]
            im = self.stats.imports
            im["applied"] += 1
            im["contacts_imported"] += len(a.work)
            ms = a.apply_s * 1000.0
            im["max_apply_ms"] = max(im["max_apply_ms"], round(ms, 2))
            im["total_apply_ms"] = round(im["total_apply_ms"] + ms, 2)
        else:
            st["items_completed_count"] = len(a.work)
            a.applied_items = len(a.work)
        if a.suppressed:
            a.errors.append("... %d more errors not listed" % a.suppressed)
        if a.outcome:
            a.final_state = a.outcome["state"]
            a.errors.extend(a.outcome["errors"])
        else:
            a.final_state = "completed"
        a.finished_at = now
        a.work = None
        a.ctx = None
        self.stats.activities[a.final_state] += 1

    def _activity_state(self, a, now):
        if a.final_state:
            return a.final_state
        if now < a.start or (self.pending and self.pending[0] is not a):
            return "initialized"        # still waiting in the account's queue
        return "processing"

    def _activity_json(self, a, now, initial=False):
        state = "initialized" if initial else self._activity_state(a, now)
        st = dict(a.status)
        if state == "initialized":
            pct = 0
            st["items_completed_count"] = 0
        elif state == "processing":
            span = max(1e-6, a.complete - a.start)
            time_pct = (now - a.start) / span * 100
            work_pct = 99.0 * a.pos / len(a.work) if a.work else (99.0 if a.work is not None else 0.0)
            pct = max(0, min(99, int(min(time_pct, work_pct))))
            st["items_completed_count"] = int(st.get("items_total_count", 0) * pct / 100)
        elif state == "completed":
            pct = 100
        else:
            tot = st.get("items_total_count", 0) or 0
            pct = int(100 * a.applied_items / tot) if tot else 0
        if a.kind != "import":
            st["list_count"] = len(a.list_ids)
        out = {"activity_id": a.id, "state": state, "created_at": iso(a.created)}
        upd = a.created
        if not initial and state != "initialized":
            out["started_at"] = iso(a.start)
            upd = max(upd, min(now, a.complete))
        if a.final_state:
            out["completed_at"] = iso(a.finished_at)
            upd = a.finished_at
        out["updated_at"] = iso(upd)
        out["percent_done"] = pct
        out["activity_errors"] = list(a.errors) if a.final_state else []
        out["status"] = st
        out["_links"] = {"self": {"href": "/v3/activities/%s" % a.id}}
        return out

    def _visible(self, a, now):
        return now - a.created <= self.cfg["activity_retention_s"]

    # ------------------------------------------------------------------ /v3 activities
    def v3_activity_get(self, req, tok, aid):
        with self.lock:
            now = self.now()
            a = self.activities.get(aid)
            if a is None or not self._visible(a, now):
                return api_error(404, "contacts.api.not_found",
                                 "Resource not found for the activity_id provided")
            return Response(200, self._activity_json(a, now))

    def v3_activity_list(self, req, tok):
        oid = "getAllActivities"
        q, errs = self._query(req, oid)
        if errs:
            return self._violation(req, "query", errs)
        limit = int(q.get("limit", 50))
        state = q.get("state")
        cursor = q.get("next")
        with self.lock:
            now = self.now()
            idx = len(self.act_list) - 1
            if cursor is not None:
                try:
                    idx = int(cursor) - 1
                except ValueError:
                    return self._violation(req, "query", ["next is not a valid cursor"])
            out = []
            last_seq = None
            more = False
            while idx >= 0:
                a = self.act_list[idx]
                idx -= 1
                if not self._visible(a, now):
                    break       # older ones are even older
                if state and self._activity_state(a, now) != state:
                    continue
                if len(out) >= limit:
                    more = True
                    break
                out.append(self._activity_json(a, now))
                last_seq = a.seq
            body = {"activities": out, "_links": {}}
            if more:
                params = [(k, v) for k, v in q.items() if k != "next"]
                params.append(("next", str(last_seq)))
                body["_links"]["next"] = {"href": "/v3/activities?" + urllib.parse.urlencode(params)}
            return Response(200, body)

    # ------------------------------------------------------------------ /v3 membership activities
    def _membership(self, req, tok, oid, kind):
        data, err = self._parse_json_body(req, oid)
        if err:
            return err
        src = data["source"]
        present = [k for k in src if k in ("contact_ids", "list_ids", "all_active_contacts",
                                           "segment_id", "tag_ids", "engagement_level",
                                           "new_subscriber")
                   and not (k == "all_active_contacts" and src[k] is False)]
        if len(present) != 1:
            return self._violation(req, oid, [
                "source must contain exactly one of contact_ids, list_ids, all_active_contacts, "
                "segment_id, tag_ids, engagement_level (got %s)" % (", ".join(present) or "none")])
        if present[0] not in ("contact_ids", "list_ids", "all_active_contacts"):
            return self._unsupported(req, "source.%s" % present[0])
        if src.get(present[0]) == []:
            return self._violation(req, oid, ["source.%s must not be empty" % present[0]])
        if data.get("exclude") and present[0] == "contact_ids":
            return self._violation(req, oid, [
                "exclude is only valid with source.all_active_contacts or source.list_ids"])
        with self.lock:
            now = self.now()
            r = self._check_lists(req, data["list_ids"] + src.get("list_ids", []))
            if r:
                return r
            r = self._queue_full()
            if r:
                return r
            a = self._new_activity(kind, tok["client_id"], now)
            a.payload = data
            a.list_ids = list(dict.fromkeys(data["list_ids"]))
            total = len(src.get("contact_ids", [])) if "contact_ids" in src else 0
            a.status = {"items_total_count": total, "items_completed_count": 0,
                        "list_count": len(a.list_ids)}
            return Response(201, self._activity_json(a, now, initial=True))

    def v3_remove(self, req, tok):
        return self._membership(req, tok, "createListRemoveActivity", "remove")

    def v3_add(self, req, tok):
        return self._membership(req, tok, "createListAddActivity", "add")

    # ------------------------------------------------------------------ /v3 lists
    def _list_json(self, L, count_mode=None):
        o = {"list_id": L.list_id, "name": L.name, "description": L.description,
             "favorite": L.favorite, "created_at": iso(L.created), "updated_at": iso(L.updated)}
        if L.deleted:
            o["deleted_at"] = iso(L.deleted)
        if count_mode == "all":
            o["membership_count"] = len(L.members)
        elif count_mode == "active":
            cs = self.contacts
            o["membership_count"] = sum(1 for s in L.members
                                        if cs[s].deleted is None and cs[s].perm != "unsubscribed")
        return o

    @staticmethod
    def _enc_cursor(d):
        return b64url(json.dumps(d, separators=(",", ":")).encode())

    @staticmethod
    def _dec_cursor(s):
        try:
            return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
        except Exception:
            return None

    def v3_lists(self, req, tok):
        oid = "getAllLists"
        q, errs = self._query(req, oid)
        if errs:
            return self._violation(req, "query", errs)
        limit = int(q.get("limit", 50))
        mode = q.get("include_membership_count")
        status = q.get("status", "active")
        name = q.get("name")
        if q.get("channel_type", "email") != "email":
            return self._unsupported(req, "channel_type=sms")
        off = 0
        if "cursor" in q:
            c = self._dec_cursor(q["cursor"])
            if not isinstance(c, dict) or not isinstance(c.get("offset"), int):
                return self._violation(req, "query", ["cursor is not valid"])
            off = c["offset"]
        with self.lock:
            ls = list(self.lists.values())          # creation order
            if status == "active":
                ls = [L for L in ls if not L.deleted]
            elif status == "deleted":
                ls = [L for L in ls if L.deleted]
            if name is not None:
                ls = [L for L in ls if L.name == name]
            page = ls[off:off + limit]
            body = {"lists": [self._list_json(L, mode) for L in page]}
            if q.get("include_count") == "true":
                body["lists_count"] = len(ls)
            body["_links"] = {}
            if off + limit < len(ls):
                params = [(k, v) for k, v in q.items() if k != "cursor"]
                params.append(("cursor", self._enc_cursor({"offset": off + limit})))
                body["_links"]["next"] = {"href": "/v3/contact_lists?" + urllib.parse.urlencode(params)}
            return Response(200, body)

    def v3_list_get(self, req, tok, list_id):
        q, errs = self._query(req, "getList")
        if errs:
            return self._violation(req, "query", errs)
        with self.lock:
            L = self.lists.get(list_id)
            if L is None:
                return api_error(404, "contacts.api.not_found", "The requested resource was not found.")
            return Response(200, self._list_json(L, q.get("include_membership_count")))

    def _create_list(self, name, description="", favorite=False):
        if name in self.list_names:
            return None, api_error(409, "contacts.api.conflict",
                                   "A contact list named %r already exists." % name)
        if sum(1 for L in self.lists.values() if not L.deleted) >= self.cfg["max_lists"]:
            return None, api_error(400, "contacts.api.validation.error",
                                   "The account already has %d contact lists." % self.cfg["max_lists"])
        L = CList(name, description, favorite, self.now())
        self.lists[L.list_id] = L
        self.list_names[name] = L.list_id
        return L, None

    def v3_list_create(self, req, tok):
        data, err = self._parse_json_body(req, "createList")
        if err:
            return err
        with self.lock:
            L, err = self._create_list(data["name"], data.get("description", ""),
                                       bool(data.get("favorite", False)))
            if err:
                return err
            return Response(201, self._list_json(L))

    # ------------------------------------------------------------------ /v3 contacts
    _STATUS_ALL = ("all",)

    def _status_pred(self, statuses):
        if not statuses:
            return lambda c: c.deleted is None
        ss = set(statuses)
        if "all" in ss:
            return lambda c: True
        perms = ss & set(PERMISSIONS)
        want_active = "active" in ss
        want_deleted = "deleted" in ss

        def pred(c):
            if c.deleted is not None:
                return want_deleted
            if want_active and c.perm != "unsubscribed":
                return True
            return c.perm in perms
        return pred

    def _contact_lists(self, c):
        s = c.seq
        return [L.list_id for L in self.lists.values() if s in L.members]

    def _contact_json(self, c, includes):
        ea = {"address": c.email, "permission_to_send": c.perm,
              "created_at": iso(c.created), "updated_at": iso(c.updated),
              "opt_in_source": "Account", "confirm_status": "off"}
        if c.perm in ("implicit", "explicit"):
            ea["opt_in_date"] = iso(c.created)
        if c.perm == "unsubscribed":
            ea["opt_out_source"] = "Contact"
            ea["opt_out_date"] = iso(c.updated)
        o = {"contact_id": self.contact_id(c), "email_address": ea}
        if c.first_name is not None:
            o["first_name"] = c.first_name
        if c.last_name is not None:
            o["last_name"] = c.last_name
        ex = c.extra or {}
        for k in ("job_title", "company_name", "birthday_month", "birthday_day", "anniversary"):
            if k in ex:
                o[k] = ex[k]
        o["create_source"] = "Account"
        o["update_source"] = "Account"
        o["created_at"] = iso(c.created)
        o["updated_at"] = iso(c.updated)
        if c.deleted is not None:
            o["deleted_at"] = iso(c.deleted)[:10]
        if "list_memberships" in includes:
            o["list_memberships"] = self._contact_lists(c)
        if "custom_fields" in includes:
            s = c.seq
            o["custom_fields"] = [{"custom_field_id": k, "value": col[s]}
                                  for k, col in self.cf_values.items() if s in col]
        if "phone_numbers" in includes:
            phones = []
            for key, kind in (("phone", "other"), ("home_phone", "home"), ("work_phone", "work"),
                              ("mobile_phone", "mobile"), ("other_phone", "other")):
                if key in ex:
                    phones.append({"phone_number": ex[key][:25], "kind": kind})
            o["phone_numbers"] = phones[:3]
        if "street_addresses" in includes:
            addrs = []
            for pre, kind in (("", "home"), ("home_", "home"), ("work_", "work"), ("other_", "other")):
                ckey = "home country" if pre == "home_" else pre + "country"
                vals = {f: ex.get(pre + f) for f in ("street", "street2", "city", "state", "zip")}
                if any(vals.values()) or ex.get(ckey):
                    street = " ".join(x for x in (vals["street"], vals["street2"]) if x)
                    a = {"kind": kind}
                    if street:
                        a["street"] = street
                    for f, tgt in (("city", "city"), ("state", "state"), ("zip", "postal_code")):
                        if vals[f]:
                            a[tgt] = vals[f]
                    if ex.get(ckey):
                        a["country"] = ex[ckey]
                    addrs.append(a)
            o["street_addresses"] = addrs[:3]
        if "taggings" in includes:
            o["taggings"] = []
        if "notes" in includes:
            o["notes"] = []
        return o

    _CONTACT_UNSUPPORTED = ("segment_id", "tags", "updated_after", "updated_before",
                            "created_after", "created_before", "optout_after", "optout_before",
                            "sms_status")

    def v3_contacts(self, req, tok):
        oid = "getAllContacts"
        q, errs = self._query(req, oid)
        if errs:
            return self._violation(req, "query", errs)
        for k in self._CONTACT_UNSUPPORTED:
            if k in q:
                return self._unsupported(req, "GET /v3/contacts?%s" % k)
        limit = int(q.get("limit", 50))
        includes = set(q["include"].split(",")) if q.get("include") else set()
        statuses = q["status"].split(",") if q.get("status") else []
        pred = self._status_pred(statuses)
        list_ids = [x for x in q["lists"].split(",") if x] if q.get("lists") else []
        if len(list_ids) > 25:
            return self._violation(req, "query", ["lists accepts at most 25 list ids"])
        after = -1
        if "cursor" in q:
            c = self._dec_cursor(q["cursor"])
            if not isinstance(c, dict) or not isinstance(c.get("after"), int):
                return self._violation(req, "query", ["cursor is not valid"])
            after = c["after"]
        with self.lock:
            cs = self.contacts
            if "email" in q:
                hit = self.by_email.get(q["email"].lower())
                if hit is not None and list_ids and not any(
                        lid in self.lists and hit.seq in self.lists[lid].members for lid in list_ids):
                    hit = None
                found = [hit.seq] if hit is not None else []
                seq_iter = iter([x for x in found if x > after])
                total_iter = lambda: iter(found)
            elif list_ids:
                arrays = []
                for lid in list_ids:
                    L = self.lists.get(lid)
                    if L is None:
                        continue
                    arrays.append(L.sorted_members())

                def tail(arr, start_after):
                    return (arr[i] for i in range(bisect.bisect_right(arr, start_after), len(arr)))

                def merged(start_after):
                    if not arrays:
                        return iter([])
                    if len(arrays) == 1:
                        return tail(arrays[0], start_after)
                    its = [tail(arr, start_after) for arr in arrays]
                    prev = None

                    def gen():
                        nonlocal prev
                        for s in heapq.merge(*its):
                            if s != prev:
                                prev = s
                                yield s
                    return gen()
                seq_iter = merged(after)
                total_iter = lambda: merged(-1)
            else:
                seq_iter = iter(range(after + 1, len(cs)))
                total_iter = lambda: iter(range(len(cs)))
            out = []
            last = None
            more = False
            for s in seq_iter:
                c = cs[s]
                if not pred(c):
                    continue
                if len(out) >= limit:
                    more = True
                    break
                out.append(self._contact_json(c, includes))
                last = s
            body = {"contacts": out}
            if q.get("include_count") == "true":
                body["contacts_count"] = sum(1 for s in total_iter() if pred(cs[s]))
            body["_links"] = {}
            if more:
                params = [(k, v) for k, v in q.items() if k != "cursor"]
                params.append(("cursor", self._enc_cursor({"after": last})))
                body["_links"]["next"] = {"href": "/v3/contacts?" + urllib.parse.urlencode(params)}
            return Response(200, body)

    def v3_contact_get(self, req, tok, contact_id):
        q, errs = self._query(req, "getContactById")
        if errs:
            return self._violation(req, "query", errs)
        includes = set(q["include"].split(",")) if q.get("include") else set()
        with self.lock:
            c = self.contact_by_id(contact_id)
            if c is None:
                return api_error(404, "contacts.api.not_found", "contact_id %s was not found" % contact_id)
            return Response(200, self._contact_json(c, includes))

    # ------------------------------------------------------------------ /v3 custom fields
    def _cf_json(self, f):
        return dict(f, created_at=iso(f["created_at"]), updated_at=iso(f["updated_at"]))

    def _create_cf(self, label, ftype):
        name = label.replace(" ", "_")
        if name.lower() in {n.lower() for n in self.cf_by_name}:
            return None, api_error(409, "contacts.api.conflict",
                                   "A custom field named %r already exists." % name)
        if len(self.custom_fields) >= self.cfg["max_custom_fields"]:
            return None, api_error(400, "contacts.api.validation.error",
                                   "The account already has %d custom fields." % self.cfg["max_custom_fields"])
        now = self.now()
        f = {"custom_field_id": new_uuid(), "label": label, "name": name, "type": ftype,
             "version": 1, "created_at": now, "updated_at": now}
        self.custom_fields[f["custom_field_id"]] = f
        self.cf_by_name[name] = f
        self.cf_values[f["custom_field_id"]] = {}
        return f, None

    def v3_custom_fields(self, req, tok):
        q, errs = self._query(req, "getAllCustomFields")
        if errs:
            return self._violation(req, "query", errs)
        limit = int(q.get("limit", 50))
        off = 0
        if "cursor" in q:
            c = self._dec_cursor(q["cursor"])
            if not isinstance(c, dict) or not isinstance(c.get("offset"), int):
                return self._violation(req, "query", ["cursor is not valid"])
            off = c["offset"]
        with self.lock:
            fs = sorted(self.custom_fields.values(), key=lambda f: (f["created_at"], f["custom_field_id"]))
            body = {"custom_fields": [self._cf_json(f) for f in fs[off:off + limit]], "_links": {}}
            if off + limit < len(fs):
                params = [(k, v) for k, v in q.items() if k != "cursor"]
                params.append(("cursor", self._enc_cursor({"offset": off + limit})))
                body["_links"]["next"] = {"href": "/v3/contact_custom_fields?" + urllib.parse.urlencode(params)}
            return Response(200, body)

    def v3_custom_field_create(self, req, tok):
        data, err = self._parse_json_body(req, "createCustomFields")
        if err:
            return err
        with self.lock:
            f, err = self._create_cf(data["label"], data["type"])
            if err:
                return err
            return Response(201, self._cf_json(f))

    # ------------------------------------------------------------------ OAuth2
    def register_client(self, client_id, secret, refresh="rotating", active=True):
        if refresh not in ("rotating", "long_lived"):
            raise ValueError("refresh must be rotating or long_lived")
        self.clients[client_id] = {"client_id": client_id, "client_secret": secret,
                                   "refresh": refresh, "active": bool(active)}
        return self.clients[client_id]

    def _jwt(self, payload):
        h = b64url(json.dumps({"kid": "fakecc", "alg": "HS256", "typ": "JWT"}).encode())
        p = b64url(json.dumps(payload, separators=(",", ":")).encode())
        sig = hmac.new(self.jwt_key, (h + "." + p).encode(), hashlib.sha256).digest()
        return h + "." + p + "." + b64url(sig)

    def _new_grant(self, client_id, scope, public):
        g = {"grant_id": secrets.token_hex(8), "client_id": client_id, "scope": list(scope),
             "public": public, "rt": None, "rt_used": None, "revoked": False}
        self.grants[g["grant_id"]] = g
        return g

    def _issue(self, g, ttl=None, rotate=False):
        now = self.now()
        ttl = int(ttl if ttl is not None else self.cfg["access_token_ttl_s"])
        scope = g["scope"]
        iss = self.base_url + "/oauth2/default"
        at = self._jwt({"ver": 1, "jti": "AT." + secrets.token_urlsafe(16), "iss": iss,
                        "aud": "https://api.cc.email/v3", "iat": int(now), "exp": int(now + ttl),
                        "cid": g["client_id"], "uid": "fakecc-user", "scp": scope,
                        "sub": "fakecc-user@example.com", "platform_user_id": "fakecc-user"})
        self.access[at] = {"client_id": g["client_id"], "scope": set(scope), "exp": now + ttl,
                           "grant_id": g["grant_id"]}
        out = {"token_type": "Bearer", "expires_in": ttl, "access_token": at,
               "scope": " ".join(scope)}
        if "offline_access" in scope:
            client = self.clients[g["client_id"]]
            if g["rt"] is None or (rotate and client["refresh"] == "rotating"):
                if g["rt"] is not None:
                    self.refresh_index.pop(g["rt"], None)
                    self.retired_refresh[g["rt"]] = g["grant_id"]
                    self.stats.tokens["refresh_rotated"] += 1
                g["rt"] = secrets.token_urlsafe(32)
                self.refresh_index[g["rt"]] = g["grant_id"]
            g["rt_used"] = now
            out["refresh_token"] = g["rt"]
        out["id_token"] = self._jwt({"ver": 1, "jti": "ID." + secrets.token_urlsafe(8),
                                     "iss": iss, "aud": g["client_id"], "iat": int(now),
                                     "exp": int(now + 3600), "sub": "fakecc-user",
                                     "amr": ["pwd"], "auth_time": int(now)})
        self.stats.tokens["issued"] += 1
        return out

    def _token_ok(self, body):
        return Response(200, body, headers=[("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    def _form(self, req):
        params = {k: v[-1] for k, v in req.query.items()}
        ct = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if req.body:
            if ct != "application/x-www-form-urlencoded":
                return None, oauth_error(400, "invalid_request",
                                         "The request body must be application/x-www-form-urlencoded.")
            try:
                form = urllib.parse.parse_qs(req.body.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError:
                return None, oauth_error(400, "invalid_request", "Malformed form body.")
            params.update({k: v[-1] for k, v in form.items()})
        return params, None

    def _client_auth(self, req, params):
        """Returns (client_id, secret_or_None, error_response)."""
        auth = req.header("Authorization", "")
        cid, secret = params.get("client_id"), params.get("client_secret")
        if auth[:6].lower() == "basic ":
            try:
                dec = base64.b64decode(auth[6:].strip()).decode("utf-8")
                bcid, bsec = dec.split(":", 1)
                bcid, bsec = urllib.parse.unquote(bcid), urllib.parse.unquote(bsec)
            except Exception:
                return None, None, oauth_error(401, "invalid_client", "Client authentication failed.",
                                               [("WWW-Authenticate", 'Basic realm="fakecc"')])
            if cid and cid != bcid:
                return None, None, oauth_error(400, "invalid_request", "client_id mismatch.")
            cid, secret = bcid, bsec
        if not cid:
            return None, None, oauth_error(401, "invalid_client", "Client authentication failed.")
        return cid, secret, None

    def _token_limit(self, cid):
        if self.limits_on() and not self._take(self.token_buckets, cid, self.cfg["token_rps"],
                                               max(1.0, self.cfg["token_rps"])):
            self.stats.http_429["token_endpoint"] += 1
            return gw_error(429, "throttled", "Too Many Requests")
        return None

    INVALID_RT = "The refresh token is invalid or expired."

    def oauth_token(self, req):
        params, err = self._form(req)
        if err:
            return err
        cid, secret, err = self._client_auth(req, params)
        if err:
            return err
        with self.lock:
            now = self.now()
            r = self._token_limit(cid)
            if r:
                return r
            client = self.clients.get(cid)
            if client is None or not client["active"] or (
                    secret is not None and secret != client["client_secret"]):
                self.stats.tokens["invalid_client"] += 1
                return oauth_error(401, "invalid_client", "Client authentication failed.",
                                   [("WWW-Authenticate", 'Basic realm="fakecc"')])
            authed = secret is not None
            gt = params.get("grant_type")
            self.stats.tokens["grant:" + str(gt)] += 1
            if gt == "authorization_code":
                return self._grant_code(params, client, authed, now)
            if gt == "refresh_token":
                return self._grant_refresh(params, client, authed, now)
            if gt == "urn:ietf:params:oauth:grant-type:device_code":
                return self._grant_device(params, client, now)
            if not gt:
                return oauth_error(400, "invalid_request", "grant_type is required.")
            return oauth_error(400, "unsupported_grant_type",
                               "The authorization grant type is not supported by the authorization server.")

    def _invalid_grant(self, desc):
        self.stats.tokens["invalid_grant"] += 1
        return oauth_error(400, "invalid_grant", desc)

    def _grant_code(self, p, client, authed, now):
        code = p.get("code")
        c = self.codes.get(code) if code else None
        if c is None or c["used"] or now > c["exp"] or c["client_id"] != client["client_id"]:
            if c is not None:
                c["used"] = True
            return self._invalid_grant("The authorization code is invalid or has expired.")
        c["used"] = True
        if p.get("redirect_uri") != c["redirect_uri"]:
            return self._invalid_grant("The 'redirect_uri' does not match the redirection URI "
                                       "used in the authorization request.")
        verifier = p.get("code_verifier")
        if c["challenge"]:
            if not verifier or not PKCE_VERIFIER_RE.match(verifier):
                return self._invalid_grant("PKCE verification failed.")
            calc = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
            if not hmac.compare_digest(calc, c["challenge"]):
                return self._invalid_grant("PKCE verification failed.")
            public = not authed
        else:
            if verifier:
                return self._invalid_grant("PKCE verification failed.")
            if client["client_secret"] is not None and not authed:
                return oauth_error(401, "invalid_client", "Client authentication failed.")
            public = False
        g = self._new_grant(client["client_id"], c["scope"], public)
        return self._token_ok(self._issue(g))

    def _grant_refresh(self, p, client, authed, now):
        rt = p.get("refresh_token")
        if not rt:
            return oauth_error(400, "invalid_request", "refresh_token is required.")
        gid = self.refresh_index.get(rt)
        if gid is None:
            if rt in self.retired_refresh:
                self.stats.tokens["refresh_reuse"] += 1
                self.stats.problem("rotated-out refresh token re-used by client %s" % client["client_id"])
            return self._invalid_grant(self.INVALID_RT)
        g = self.grants[gid]
        if g["revoked"] or g["client_id"] != client["client_id"]:
            return self._invalid_grant(self.INVALID_RT)
        if now - g["rt_used"] > self.cfg["refresh_idle_ttl_s"]:
            return self._invalid_grant(self.INVALID_RT)
        if not g["public"] and client["client_secret"] is not None and not authed:
            return oauth_error(401, "invalid_client", "Client authentication failed.")
        if "scope" in p and p["scope"]:
            req_scope = p["scope"].split()
            if not set(req_scope) <= set(g["scope"]):
                return oauth_error(400, "invalid_scope", "The requested scope is invalid.")
        self.stats.tokens["refreshed"] += 1
        return self._token_ok(self._issue(g, rotate=True))

    def _grant_device(self, p, client, now):
        dc = p.get("device_code")
        d = self.devices.get(dc) if dc else None
        if d is None or d["client_id"] != client["client_id"] or d["status"] == "used":
            return self._invalid_grant("The device code is invalid or has expired.")
        if now > d["exp"]:
            self.stats.tokens["device_expired_token"] += 1
            return oauth_error(400, "expired_token", "The device code has expired.")
        if d["status"] == "denied":
            self.stats.tokens["device_access_denied"] += 1
            return oauth_error(400, "access_denied", "The resource owner denied the request.")
        last = d["last_poll"]
        d["last_poll"] = now
        if d["status"] == "pending":
            if last is not None and now - last < d["interval"]:
                d["interval"] += self.cfg["device_slow_down_increment_s"]
                self.stats.tokens["device_slow_down"] += 1
                return oauth_error(400, "slow_down", "The client is polling too frequently.")
            self.stats.tokens["device_authorization_pending"] += 1
            return oauth_error(400, "authorization_pending",
                               "The device authorization is pending. Please try again later.")
        d["status"] = "used"
        g = self._new_grant(client["client_id"], d["scope"], True)
        return self._token_ok(self._issue(g))

    def oauth_device_authorize(self, req):
        params, err = self._form(req)
        if err:
            return err
        cid, secret, err = self._client_auth(req, params)
        if err:
            return err
        with self.lock:
            r = self._token_limit(cid)
            if r:
                return r
            client = self.clients.get(cid)
            if client is None or not client["active"] or (
                    secret is not None and secret != client["client_secret"]):
                return oauth_error(401, "invalid_client", "Client authentication failed.")
            now = self.now()
            dc = secrets.token_urlsafe(32)
            alphabet = "BCDFGHJKLMNPQRSTVWXZ"
            uc = "".join(secrets.choice(alphabet) for _ in range(4)) + "-" + \
                "".join(secrets.choice(alphabet) for _ in range(4))
            ttl = int(self.cfg["device_code_ttl_s"])
            interval = int(self.cfg["device_interval_s"])
            self.devices[dc] = {"client_id": cid, "scope": (params.get("scope") or "").split(),
                                "user_code": uc, "exp": now + ttl, "interval": interval,
                                "last_poll": None, "status": "pending"}
            self.user_codes[uc] = dc
            self.stats.tokens["device_authorize"] += 1
            vu = self.base_url + "/activate"
            return self._token_ok({"device_code": dc, "user_code": uc, "verification_uri": vu,
                                   "verification_uri_complete": vu + "?user_code=" + uc,
                                   "expires_in": ttl, "interval": interval})

    def _device_decide(self, user_code, approve):
        dc = self.user_codes.get((user_code or "").upper())
        d = self.devices.get(dc) if dc else None
        if d is None or d["status"] != "pending" or self.now() > d["exp"]:
            return False
        d["status"] = "approved" if approve else "denied"
        return True

    def oauth_activate(self, req):
        uc = req.q("user_code")
        with self.lock:
            ok = self._device_decide(uc, req.q("deny") is None)
        text = ("Device %s. You may close this window.\n" % ("approved" if ok else "NOT found or expired"))
        return Response(200 if ok else 400, raw=text.encode(), ctype="text/plain; charset=utf-8")

    def oauth_authorize(self, req):
        p = {k: v[-1] for k, v in req.query.items()}
        cid = p.get("client_id")
        ru = p.get("redirect_uri")
        with self.lock:
            client = self.clients.get(cid) if cid else None
            if client is None or not client["active"]:
                return Response(400, raw=b"invalid client_id\n", ctype="text/plain; charset=utf-8")
            if not ru or not ru.lower().startswith(("http://", "https://")):
                return Response(400, raw=b"invalid redirect_uri\n", ctype="text/plain; charset=utf-8")

            def redirect(params):
                if p.get("state") is not None:
                    params["state"] = p["state"]
                sep = "&" if "?" in ru else "?"
                return Response(302, headers=[("Location", ru + sep + urllib.parse.urlencode(params))])
            if p.get("response_type") != "code":
                return redirect({"error": "unsupported_response_type",
                                 "error_description": "response_type must be code"})
            chal, meth = p.get("code_challenge"), p.get("code_challenge_method")
            if chal and meth != "S256":
                return redirect({"error": "invalid_request",
                                 "error_description": "code_challenge_method must be S256"})
            f = self.faults.get("authorize_outcome")
            if f:
                return redirect({"error": f.get("error", "access_denied"),
                                 "error_description": "The resource owner or authorization server denied the request."})
            code = secrets.token_urlsafe(24)
            self.codes[code] = {"client_id": cid, "redirect_uri": ru,
                                "scope": (p.get("scope") or "").split(),
                                "challenge": chal, "exp": self.now() + self.cfg["auth_code_ttl_s"],
                                "used": False}
            self.stats.tokens["codes_issued"] += 1
            return redirect({"code": code})

    # ------------------------------------------------------------------ /_fake control API
    def _fake_json(self, req):
        if not req.body:
            return {}, None
        try:
            d = json.loads(req.body)
        except ValueError as e:
            return None, Response(400, {"error": "malformed JSON: %s" % e})
        if not isinstance(d, dict):
            return None, Response(400, {"error": "expected a JSON object"})
        return d, None

    def f_health(self, req):
        return Response(200, {"ok": True})

    def f_config_get(self, req):
        with self.lock:
            return Response(200, dict(self.cfg))

    def f_config_set(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        with self.lock:
            bad = [k for k in d if k not in DEFAULT_CONFIG]
            if bad:
                return Response(400, {"error": "unknown config keys: %s" % bad})
            self.cfg.update(d)
            self.cond.notify_all()
            return Response(200, dict(self.cfg))

    def f_clients_get(self, req):
        with self.lock:
            return Response(200, {"clients": list(self.clients.values())})

    def f_clients_post(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        if not d.get("client_id"):
            return Response(400, {"error": "client_id is required"})
        with self.lock:
            try:
                c = self.register_client(d["client_id"], d.get("client_secret"),
                                         d.get("refresh", "rotating"), d.get("active", True))
            except ValueError as e:
                return Response(400, {"error": str(e)})
            return Response(201, c)

    def f_tokens(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        cid = d.get("client_id", "test-client")
        with self.lock:
            if cid not in self.clients:
                return Response(400, {"error": "unknown client_id %r" % cid})
            scope = (d.get("scope") or "contact_data offline_access").split()
            g = self._new_grant(cid, scope, bool(d.get("public", False)))
            out = self._issue(g, ttl=d.get("expires_in"))
            out["grant_id"] = g["grant_id"]
            return Response(201, out)

    def f_device_approve(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        approve = d.get("action", "approve") != "deny"
        with self.lock:
            if not self._device_decide(d.get("user_code"), approve):
                return Response(404, {"error": "no pending device authorization for that user_code"})
            return Response(200, {"ok": True, "user_code": d.get("user_code"),
                                  "status": "approved" if approve else "denied"})

    def f_device_deny(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        with self.lock:
            if not self._device_decide(d.get("user_code"), False):
                return Response(404, {"error": "no pending device authorization for that user_code"})
            return Response(200, {"ok": True, "user_code": d.get("user_code"), "status": "denied"})

    def f_lists_get(self, req):
        with self.lock:
            return Response(200, {"lists": [self._list_json(L, "all") for L in self.lists.values()]})

    def f_lists_post(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        if not isinstance(d.get("name"), str) or not d["name"]:
            return Response(400, {"error": "name is required"})
        with self.lock:
            L, e = self._create_list(d["name"], d.get("description", ""), bool(d.get("favorite", False)))
            if e:
                return e
            return Response(201, self._list_json(L, "all"))

    def f_lists_delete(self, req, list_id):
        mode = req.q("mode", "soft")
        with self.lock:
            L = self.lists.get(list_id)
            if L is None:
                return Response(404, {"error": "no such list"})
            L.members = {}
            L._sorted = None
            if self.list_names.get(L.name) == list_id:
                del self.list_names[L.name]
            if mode == "hard":
                del self.lists[list_id]
            else:
                L.deleted = self.now()
                L.updated = L.deleted
            return Response(200, {"ok": True, "list_id": list_id, "mode": mode})

    def _seed_one(self, email, fields, now):
        el = email.lower()
        c = self.by_email.get(el)
        created = c is None
        if created:
            c = Contact(len(self.contacts), el, now)
            self.contacts.append(c)
            self.by_email[el] = c
        if "first_name" in fields:
            c.first_name = fields["first_name"]
        if "last_name" in fields:
            c.last_name = fields["last_name"]
        st = fields.get("status")
        if st:
            if st == "deleted":
                c.deleted = now
            else:
                if st not in PERMISSIONS:
                    raise ValueError("status must be one of %s or deleted" % (PERMISSIONS,))
                c.perm = st
                c.deleted = None
        if fields.get("deleted"):
            c.deleted = now
        for name, v in (fields.get("custom_fields") or {}).items():
            f = self.cf_by_name.get(name)
            if f is None:
                raise ValueError("unknown custom field %r (create it first)" % name)
            self.cf_values[f["custom_field_id"]][c.seq] = str(v)
        for k, v in (fields.get("extra") or {}).items():
            if c.extra is None:
                c.extra = {}
            c.extra[k] = v
        for lid in fields.get("list_ids") or []:
            self.lists[lid].add(c.seq)
        c.updated = now
        return c, created

    def f_contacts_post(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        with self.lock:
            now = self.now()
            created = updated = 0
            out = []
            try:
                for fields in d.get("contacts") or []:
                    for lid in fields.get("list_ids") or []:
                        if lid not in self.lists:
                            raise ValueError("unknown list_id %s" % lid)
                    c, new = self._seed_one(fields["email"], fields, now)
                    created += new
                    updated += not new
                    if len(out) < 1000:
                        out.append({"email": c.email, "contact_id": self.contact_id(c)})
                gen = d.get("generate")
                if gen:
                    n = int(gen["count"])
                    start = int(gen.get("start", 0))
                    pat = gen.get("pattern", "user{n}@example.com")
                    fnp, lnp = gen.get("first_name"), gen.get("last_name")
                    lids = gen.get("list_ids") or []
                    for lid in lids:
                        if lid not in self.lists:
                            raise ValueError("unknown list_id %s" % lid)
                    Ls = [self.lists[l] for l in lids]
                    perm = gen.get("status", "implicit")
                    if perm not in PERMISSIONS:
                        raise ValueError("bad status")
                    by_email, contacts = self.by_email, self.contacts
                    for i in range(start, start + n):
                        el = pat.format(n=i).lower()
                        c = by_email.get(el)
                        if c is None:
                            c = Contact(len(contacts), el, now)
                            contacts.append(c)
                            by_email[el] = c
                            created += 1
                        else:
                            updated += 1
                        c.perm = perm
                        if fnp is not None:
                            c.first_name = fnp.format(n=i)
                        if lnp is not None:
                            c.last_name = lnp.format(n=i)
                        for L in Ls:
                            L.members[c.seq] = None
                    for L in Ls:
                        L._sorted = None
            except (KeyError, ValueError, TypeError) as e:
                return Response(400, {"error": "bad contact seed: %r" % (e,)})
            return Response(201, {"created": created, "updated": updated, "contacts": out})

    def f_custom_fields_post(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        if not d.get("label"):
            return Response(400, {"error": "label is required"})
        with self.lock:
            f, e = self._create_cf(d["label"], d.get("type", "string"))
            if e:
                return e
            return Response(201, self._cf_json(f))

    def f_state(self, req):
        """GET /_fake/state[?list_id=ID[&format=members|rows|emails][&include_extra=1]]

        The member snapshot is taken under the lock; JSON encoding happens
        after releasing it, so the fake keeps serving while 1M members are
        serialised."""
        list_id = req.q("list_id")
        fmt = req.q("format", "emails" if req.q("emails_only") else "members")
        if fmt not in ("members", "rows", "emails"):
            return Response(400, {"error": "format must be members, rows or emails"})
        extra = req.q("include_extra") not in (None, "", "0", "false")
        if list_id:
            with self.lock:
                L = self.lists.get(list_id)
                if L is None:
                    return Response(404, {"error": "no such list"})
                cs = self.contacts
                head = {"list_id": list_id, "name": L.name, "deleted": L.deleted is not None,
                        "count": len(L.members)}
                if fmt == "emails":
                    head["emails"] = [cs[s].email for s in L.members]
                elif fmt == "rows":
                    cfn = {fid: f["name"] for fid, f in self.custom_fields.items()}
                    head["columns"] = ["email", "first_name", "last_name", "status", "custom_fields"]
                    cols = [(cfn[fid], col) for fid, col in self.cf_values.items() if col]
                    if cols:
                        head["rows"] = [
                            [c.email, c.first_name, c.last_name,
                             "deleted" if c.deleted is not None else c.perm,
                             {n: col[c.seq] for n, col in cols if c.seq in col}]
                            for c in map(cs.__getitem__, L.members)]
                    else:
                        head["rows"] = [
                            [c.email, c.first_name, c.last_name,
                             "deleted" if c.deleted is not None else c.perm, {}]
                            for c in map(cs.__getitem__, L.members)]
                else:
                    cfn = {fid: f["name"] for fid, f in self.custom_fields.items()}
                    cols = [(cfn[fid], col) for fid, col in self.cf_values.items() if col]
                    members = []
                    app = members.append
                    for s in L.members:
                        c = cs[s]
                        m = {"email": c.email, "first_name": c.first_name,
                             "last_name": c.last_name,
                             "status": "deleted" if c.deleted is not None else c.perm,
                             "custom_fields": {n: col[s] for n, col in cols if s in col}}
                        if extra and c.extra:
                            m["extra"] = dict(c.extra)
                        app(m)
                    head["members"] = members
            return Response(200, head)
        with self.lock:
            now = self.now()
            by_state = collections.Counter(self._activity_state(a, now) for a in self.act_list)
            return Response(200, {
                "now": iso(now), "clock_offset_s": self.clock_offset,
                "contacts": len(self.contacts),
                "lists": [{"list_id": L.list_id, "name": L.name, "deleted": L.deleted is not None,
                           "member_count": len(L.members)} for L in self.lists.values()],
                "custom_fields": [{"custom_field_id": f["custom_field_id"], "name": f["name"],
                                   "label": f["label"], "type": f["type"]}
                                  for f in self.custom_fields.values()],
                "activities": {"total": len(self.act_list), "queued": len(self.pending),
                               "by_state": dict(by_state)},
                "quota_used": {cid: q[1] for cid, q in self.quota.items() if q[0] == self._day(now)},
            })

    def f_drain(self, req):
        """POST /_fake/drain {"timeout_s": 30} - wait until no activity is queued or
        processing (returns 200 {"idle": true} or 408 {"idle": false})."""
        d, err = self._fake_json(req)
        if err:
            return err
        deadline = time.monotonic() + float(d.get("timeout_s", 30))
        with self.cond:
            while self.pending and "activity_stuck" not in self.faults:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.5))
            idle = not self.pending
            return Response(200 if idle else 408, {"idle": idle, "queued": len(self.pending)})

    def f_stats(self, req):
        with self.lock:
            return Response(200, self.stats.as_json())

    def f_stats_reset(self, req):
        with self.lock:
            self.stats.reset()
            return Response(200, {"ok": True})

    def _faults_json(self):
        out = {}
        for k, v in self.faults.items():
            out[k] = {kk: vv for kk, vv in v.items() if kk != "rng"}
        return out

    def f_faults_get(self, req):
        with self.lock:
            return Response(200, self._faults_json())

    def f_faults_post(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        with self.lock:
            try:
                applied = self._set_faults(d)
            except (KeyError, ValueError, TypeError) as e:
                return Response(400, {"error": "bad fault spec: %r" % (e,)})
            self.cond.notify_all()
            return Response(200, {"faults": self._faults_json(), "applied": applied})

    def _set_faults(self, d):
        known = {"throttle_storm", "error_rate", "drop_connections", "latency_ms", "expire_tokens",
                 "revoke_refresh", "activity_outcome", "activity_stuck", "quota_exhausted",
                 "unknown_list_status", "authorize_outcome"}
        bad = set(d) - known
        if bad:
            raise ValueError("unknown faults %s" % sorted(bad))
        applied = {}
        now = self.now()
        for name, v in d.items():
            if v is None or v is False:
                self.faults.pop(name, None)
                continue
            match = v.get("match") if isinstance(v, dict) else None
            if name == "throttle_storm":
                self.faults[name] = {"count": _as_count(v), "match": match}
            elif name == "drop_connections":
                when = v.get("when", "before") if isinstance(v, dict) else "before"
                if when not in ("before", "after"):
                    raise ValueError("when must be before or after")
                self.faults[name] = {"count": _as_count(v), "when": when, "match": match}
            elif name == "error_rate":
                if not isinstance(v, dict):
                    v = {"rate": float(v)}
                rate = float(v.get("rate", 1.0))
                if not 0.0 <= rate <= 1.0:
                    raise ValueError("rate must be within 0..1")
                statuses = [int(s) for s in v.get("statuses", [500, 503])]
                if any(s not in (500, 502, 503, 504) for s in statuses):
                    raise ValueError("statuses must be 5xx")
                when = v.get("when", "before")
                if when not in ("before", "after"):
                    raise ValueError("when must be before or after")
                self.faults[name] = {"rate": rate, "seed": v.get("seed", 0), "statuses": statuses,
                                     "count": v.get("count"), "when": when, "match": match,
                                     "rng": random.Random(v.get("seed", 0))}
            elif name == "latency_ms":
                ms = v.get("ms") if isinstance(v, dict) else v
                self.faults[name] = {"ms": float(ms), "match": match}
            elif name == "expire_tokens":
                cid = v.get("client_id") if isinstance(v, dict) else None
                n = 0
                for t in self.access.values():
                    if (cid is None or t["client_id"] == cid) and t["exp"] > now:
                        t["exp"] = now - 1
                        n += 1
                applied[name] = n
            elif name == "revoke_refresh":
                cid = v.get("client_id") if isinstance(v, dict) else None
                n = 0
                for g in self.grants.values():
                    if cid is None or g["client_id"] == cid:
                        if not g["revoked"]:
                            n += 1
                        g["revoked"] = True
                applied[name] = n
            elif name == "activity_outcome":
                st = v.get("state", "failed")
                if st not in ("failed", "timed_out", "cancelled", "completed"):
                    raise ValueError("state must be failed, timed_out, cancelled or completed")
                errs = v.get("errors")
                if errs is None:
                    errs = {"failed": ["The activity failed to complete."],
                            "timed_out": ["The activity timed out before completing."],
                            "cancelled": ["The activity was cancelled."],
                            "completed": []}[st]
                kind = v.get("kind")
                if kind not in (None, "import", "remove", "add"):
                    raise ValueError("kind must be import, remove or add")
                self.faults[name] = {"state": st, "count": int(v.get("count", 1)),
                                     "kind": kind, "skip": int(v.get("skip", 0)),
                                     "errors": list(errs),
                                     "applied_fraction": float(v.get("applied_fraction", 0.0))}
            elif name == "activity_stuck":
                self.faults[name] = {"on": True}
            elif name == "quota_exhausted":
                cid = v.get("client_id") if isinstance(v, dict) else None
                day = self._day(now)
                cids = [cid] if cid else list(self.clients)
                for c in cids:
                    self.quota[c] = [day, self.cfg["daily_quota"]]
                applied[name] = cids
            elif name == "unknown_list_status":
                st = v.get("status") if isinstance(v, dict) else v
                if int(st) not in (400, 404):
                    raise ValueError("unknown_list_status must be 400 or 404")
                self.faults[name] = {"status": int(st)}
            elif name == "authorize_outcome":
                err = v.get("error") if isinstance(v, dict) else (v if isinstance(v, str) else "access_denied")
                self.faults[name] = {"error": err}
        return applied

    def f_faults_delete(self, req):
        with self.lock:
            self.faults = {}
            self.cond.notify_all()
            return Response(200, {"faults": {}})

    def f_clock_get(self, req):
        with self.lock:
            return Response(200, {"offset_s": self.clock_offset, "now": iso(self.now()),
                                  "now_epoch": self.now()})

    def f_clock_post(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        with self.lock:
            if "offset_s" in d:
                self.clock_offset = float(d["offset_s"])
            if "advance_s" in d:
                self.clock_offset += float(d["advance_s"])
            self.cond.notify_all()
            return Response(200, {"offset_s": self.clock_offset, "now": iso(self.now()),
                                  "now_epoch": self.now()})

    def _fake_activity(self, a, now):
        o = self._activity_json(a, now)
        o["_fake"] = {"kind": a.kind, "client_id": a.client_id, "seq": a.seq,
                      "truncated": a.truncated, "body_bytes": a.body_bytes,
                      "contacts_sent": a.items_sent, "applied_items": a.applied_items,
                      "list_ids": a.list_ids, "scheduled_start": iso(a.start),
                      "scheduled_complete": iso(a.complete),
                      "forced_outcome": a.outcome["state"] if a.outcome else None,
                      "source": a.source}
        return o

    def f_activities(self, req):
        with self.lock:
            now = self.now()
            return Response(200, {"activities": [self._fake_activity(a, now) for a in self.act_list]})

    def f_activity(self, req, aid):
        with self.lock:
            now = self.now()
            a = self.activities.get(aid)
            if a is None:
                return Response(404, {"error": "no such activity"})
            return Response(200, self._fake_activity(a, now))

    def f_reset(self, req):
        d, err = self._fake_json(req)
        if err:
            return err
        with self.lock:
            self._reset_data(keep_tokens=d.get("keep_tokens", True))
            self.clock_offset = 0.0
            self.stats.reset()
            if d.get("config_defaults", True):
                self.cfg = dict(self.base_cfg)
            self.cond.notify_all()
            return Response(200, {"ok": True})
