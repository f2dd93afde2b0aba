#!/usr/bin/python3
"""Tests of the fake Constant Contact server itself (stdlib unittest).

    /usr/bin/python3 tests/fakecc/test_fakecc.py [-v]

Starts two fakes as subprocesses (one with --no-limits for functional tests,
one with the real limits) and talks HTTPS to them using the generated CA.
"""

import base64
import hashlib
import http.client
import json
import os
import secrets
import shutil
import socket
import ssl
import sys
import tempfile
import time
import unittest
import urllib.parse
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jsonschema  # noqa: E402

import fakecc_spec  # noqa: E402
from fakecc_client import FakeCC  # noqa: E402

REF_SPEC = os.environ.get("CCSYNC_CC_SPEC",
                          os.path.join(HERE, "..", "..", "..", "shared", "reference",
                                       "cc-v3-openapi.yaml"))
SUBSET = fakecc_spec.load()
F = None        # fake without limits
L = None        # fake with the real limits
TMP = None


def setUpModule():
    global F, L, TMP
    TMP = tempfile.mkdtemp(prefix="fakecc-test-")
    F = FakeCC(os.path.join(TMP, "f"), "--no-limits", "--activity-delay-ms", "60").start()
    L = FakeCC(os.path.join(TMP, "l"), "--activity-delay-ms", "60").start()


def tearDownModule():
    rcs = [F.stop(), L.stop()]
    ready_left = [os.path.exists(os.path.join(TMP, d, "ready.json")) for d in ("f", "l")]
    shutil.rmtree(TMP, ignore_errors=True)
    if rcs != [0, 0] or any(ready_left):
        raise AssertionError("fakes did not exit cleanly on SIGTERM: rc=%s ready.json left=%s"
                             % (rcs, ready_left))


def resp_schema(oid, code):
    return SUBSET["operations"][oid]["responses"][str(code)]


def assert_schema(tc, instance, schema):
    v = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker(formats=["uuid"]))
    errs = [e.message for e in v.iter_errors(instance)]
    tc.assertEqual(errs, [], "response does not match the spec schema")


def pkce_pair():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def uniq(prefix="x"):
    return "%s-%s" % (prefix, secrets.token_hex(4))


class Base(unittest.TestCase):
    fake = None
    TIMES = []

    def run(self, result=None):
        t = time.perf_counter()
        try:
            return super().run(result)
        finally:
            Base.TIMES.append((time.perf_counter() - t, self.id()))

    @classmethod
    def setUpClass(cls):
        cls.fake = F

    def setUp(self):
        st, _ = self.fake.fake("POST", "/reset", {"keep_tokens": True})
        self.assertEqual(st, 200)
        self.tok = self.fake.token()["access_token"]

    def api(self, method, path, body=None, **kw):
        return self.fake.api(method, path, body, token=kw.pop("token", self.tok), **kw)

    def new_list(self, name=None):
        st, lst = self.fake.fake("POST", "/lists", {"name": name or uniq("list")})
        self.assertEqual(st, 201, lst)
        return lst["list_id"]

    def do_import(self, items, list_ids, expect=201):
        st, b, _ = self.api("POST", "/activities/contacts_json_import",
                            {"import_data": items, "list_ids": list_ids})
        self.assertEqual(st, expect, b)
        return b

    def wait(self, activity_id, timeout=10):
        return self.fake.wait_activity(self.tok, activity_id, timeout)

    def members(self, list_id):
        st, s = self.fake.fake("GET", "/state?list_id=" + list_id)
        self.assertEqual(st, 200, s)
        return {m["email"]: m for m in s["members"]}

    def stats(self):
        return self.fake.fake("GET", "/stats")[1]


# ---------------------------------------------------------------------------
class TestStartup(Base):
    def test_ready_json_and_tls(self):
        info = F.info
        for k in ("port", "ca_file", "api_base", "auth_base", "pid"):
            self.assertIn(k, info)
        self.assertEqual(info["api_base"], "https://127.0.0.1:%d/v3" % info["port"])
        self.assertEqual(info["auth_base"], "https://127.0.0.1:%d/oauth2/default/v1" % info["port"])
        self.assertEqual(info["pid"], F.proc.pid)
        # SAN covers both 127.0.0.1 and localhost; hostname verification is on.
        for host in ("127.0.0.1", "localhost"):
            c = http.client.HTTPSConnection(host, info["port"], context=F.ctx, timeout=10)
            c.request("GET", "/_fake/health")
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            r.read()
            c.close()
        # A wrong host name must fail verification.
        ctx = ssl.create_default_context(cafile=info["ca_file"])
        with self.assertRaises(ssl.SSLCertVerificationError):
            with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as s:
                ctx.wrap_socket(s, server_hostname="example.com")
        # TLS < 1.2 refused.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                old.minimum_version = ssl.TLSVersion.TLSv1
                old.maximum_version = ssl.TLSVersion.TLSv1_1
        except (ValueError, ssl.SSLError):
            return
        with self.assertRaises((ssl.SSLError, OSError)):
            with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as s:
                old.wrap_socket(s, server_hostname="127.0.0.1")

    def test_keep_alive_and_content_length(self):
        c = F.connection(new=True)
        socks = set()
        for _ in range(3):
            c.request("GET", "/v3/contact_lists", headers={"Authorization": "Bearer " + self.tok})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertIsNotNone(r.getheader("Content-Length"))
            self.assertEqual(r.getheader("Content-Type"), "application/json")
            r.read()
            socks.add(id(c.sock))
        self.assertEqual(len(socks), 1, "connection was not kept alive")
        c.close()

    def test_chunked_and_expect_continue_upload(self):
        lid = self.new_list()
        body = json.dumps({"import_data": [{"email": "chunk@example.com"}], "list_ids": [lid]}).encode()
        c = F.connection(new=True)
        c.putrequest("POST", "/v3/activities/contacts_json_import")
        c.putheader("Authorization", "Bearer " + self.tok)
        c.putheader("Content-Type", "application/json")
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for i in range(0, len(body), 10):
            part = body[i:i + 10]
            c.send(b"%x\r\n%s\r\n" % (len(part), part))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        self.assertEqual(r.status, 201, r.read())
        r.read()
        c.close()
        # Expect: 100-continue, as libcurl sends for large bodies.
        s = socket.create_connection(("127.0.0.1", F.port), timeout=10)
        ss = F.ctx.wrap_socket(s, server_hostname="127.0.0.1")
        ss.sendall(b"POST /v3/activities/contacts_json_import HTTP/1.1\r\nHost: x\r\n"
                   b"Authorization: Bearer " + self.tok.encode() + b"\r\n"
                   b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body))
        first = ss.recv(100)
        self.assertTrue(first.startswith(b"HTTP/1.1 100"), first)
        ss.sendall(body)
        data = first
        deadline = time.time() + 10
        while b"HTTP/1.1 201" not in data and time.time() < deadline:
            chunk = ss.recv(4096)
            if not chunk:
                break
            data += chunk
        self.assertIn(b"HTTP/1.1 201", data)
        ss.close()

    def test_spec_subset_is_faithful(self):
        if not os.path.exists(REF_SPEC):
            self.skipTest("reference spec not available at %s" % REF_SPEC)
        fresh = fakecc_spec.extract(REF_SPEC)
        self.assertEqual(fresh["operations"], SUBSET["operations"])
        self.assertEqual(fresh["components"], SUBSET["components"])
        self.assertEqual(fresh["x-source"]["sha256"], SUBSET["x-source"]["sha256"])

    def test_unknown_endpoint_is_recorded(self):
        st, b, _ = self.api("GET", "/account/summary")
        self.assertEqual(st, 404)
        st, b, _ = self.api("DELETE", "/contact_lists")
        self.assertEqual(st, 405)
        s = self.stats()
        self.assertIn("GET /v3/account/summary", s["unknown_endpoints"])
        self.assertEqual(s["problems_count"], 2)


# ---------------------------------------------------------------------------
class TestAuth(Base):
    def token_req(self, form, basic=None):
        return self.fake.oauth("POST", "/token", form=form, basic=basic)

    def authorize(self, client_id, redirect="http://127.0.0.1:9/cb", **extra):
        q = {"client_id": client_id, "redirect_uri": redirect, "response_type": "code",
             "scope": "contact_data offline_access", "state": "xyz"}
        q.update(extra)
        st, body, h = self.fake.oauth("GET", "/authorize", query=q)
        self.assertEqual(st, 302, body)
        loc = urllib.parse.urlsplit(h["location"])
        self.assertEqual(loc.scheme + "://" + loc.netloc + loc.path, redirect)
        return {k: v[0] for k, v in urllib.parse.parse_qs(loc.query).items()}

    def test_v3_auth_errors(self):
        st, b, _ = self.fake.api("GET", "/contact_lists")
        self.assertEqual((st, b), (401, {"error_key": "unauthorized", "error_message": "Unauthorized"}))
        st, b, _ = self.fake.api("GET", "/contact_lists", token="nope")
        self.assertEqual(st, 401)
        t = self.fake.token(scope="account_read offline_access")["access_token"]
        st, b, _ = self.fake.api("GET", "/contact_lists", token=t)
        self.assertEqual(st, 403)
        t = self.fake.token(expires_in=1)["access_token"]
        self.fake.fake("POST", "/clock", {"advance_s": 2})
        st, b, _ = self.fake.api("GET", "/contact_lists", token=t)
        self.assertEqual(st, 401)
        # 415 for a non-JSON body
        lid = self.new_list()
        st, b, _ = self.api("POST", "/activities/contacts_json_import",
                            json.dumps({"import_data": [], "list_ids": [lid]}),
                            headers={"Content-Type": "text/plain"})
        self.assertEqual(st, 415)
        self.assertEqual(self.stats()["schema_violations"]["count"], 1)

    def test_code_flow_pkce(self):
        cid = uniq("pkce")
        self.fake.fake("POST", "/clients", {"client_id": cid})          # public client
        verifier, challenge = pkce_pair()
        q = self.authorize(cid, code_challenge=challenge, code_challenge_method="S256")
        self.assertEqual(q["state"], "xyz")
        form = {"grant_type": "authorization_code", "code": q["code"], "client_id": cid,
                "redirect_uri": "http://127.0.0.1:9/cb", "code_verifier": verifier}
        st, tok, h = self.token_req(form)
        self.assertEqual(st, 200, tok)
        assert_schema(self, tok, SUBSET["components"]["AccessTokenResponse"])
        self.assertEqual(tok["token_type"], "Bearer")
        self.assertEqual(tok["expires_in"], 86400)
        self.assertEqual(tok["scope"], "contact_data offline_access")
        for k in ("access_token", "refresh_token", "id_token"):
            self.assertTrue(tok[k])
        self.assertEqual(h.get("cache-control"), "no-store")
        st, b, _ = self.fake.api("GET", "/contact_lists", token=tok["access_token"])
        self.assertEqual(st, 200)
        # single use
        st, b, _ = self.token_req(form)
        self.assertEqual((st, b["error"]), (400, "invalid_grant"))
        # wrong verifier
        q = self.authorize(cid, code_challenge=challenge, code_challenge_method="S256")
        form.update(code=q["code"], code_verifier=pkce_pair()[0])
        st, b, _ = self.token_req(form)
        self.assertEqual((st, b["error"]), (400, "invalid_grant"))
        # plain method refused
        q = self.authorize(cid, code_challenge="abc", code_challenge_method="plain")
        self.assertEqual(q["error"], "invalid_request")

    def test_code_flow_confidential(self):
        q = self.authorize("test-client")
        form = {"grant_type": "authorization_code", "code": q["code"],
                "redirect_uri": "http://127.0.0.1:9/cb"}
        st, b, _ = self.token_req(dict(form, client_id="test-client"))     # no secret
        self.assertEqual((st, b["error"]), (401, "invalid_client"))
        q = self.authorize("test-client")
        st, b, _ = self.token_req(dict(form, code=q["code"]), basic=("test-client", "wrong"))
        self.assertEqual((st, b["error"]), (401, "invalid_client"))
        q = self.authorize("test-client")
        st, b, _ = self.token_req(dict(form, code=q["code"], redirect_uri="http://other/"),
                                  basic=("test-client", "test-secret"))
        self.assertEqual((st, b["error"]), (400, "invalid_grant"))
        q = self.authorize("test-client")
        self.fake.fake("POST", "/clock", {"advance_s": 301})                # code lives 5 min
        st, b, _ = self.token_req(dict(form, code=q["code"]), basic=("test-client", "test-secret"))
        self.assertEqual((st, b["error"]), (400, "invalid_grant"))
        q = self.authorize("test-client", scope="contact_data")
        st, tok, _ = self.token_req(dict(form, code=q["code"]), basic=("test-client", "test-secret"))
        self.assertEqual(st, 200, tok)
        self.assertNotIn("refresh_token", tok, "no offline_access -> no refresh token")
        # query-string parameters on the POST are accepted too
        q = self.authorize("test-client")
        st, tok, _ = self.fake.oauth("POST", "/token", basic=("test-client", "test-secret"),
                                     query=dict(form, code=q["code"]))
        self.assertEqual(st, 200, tok)
        # bad requests
        st, b, _ = self.fake.request("POST", "/oauth2/default/v1/token", {"grant_type": "x"},
                                     {"Authorization": "Basic " + base64.b64encode(b"test-client:test-secret").decode()})
        self.assertEqual(st, 400)
        st, b, _ = self.token_req({"grant_type": "password"}, basic=("test-client", "test-secret"))
        self.assertEqual((st, b["error"]), (400, "unsupported_grant_type"))

    def test_refresh_rotation(self):
        t1 = self.fake.token()
        rt1 = t1["refresh_token"]
        basic = ("test-client", "test-secret")
        st, t2, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": rt1}, basic)
        self.assertEqual(st, 200, t2)
        self.assertNotEqual(t2["refresh_token"], rt1)
        self.assertNotEqual(t2["access_token"], t1["access_token"])
        st, b, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": rt1}, basic)
        self.assertEqual((st, b), (400, {"error": "invalid_grant",
                                         "error_description": "The refresh token is invalid or expired."}))
        st, t3, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": t2["refresh_token"]}, basic)
        self.assertEqual(st, 200, t3)
        # the old access token stays valid until it expires
        st, _, _ = self.fake.api("GET", "/contact_lists", token=t1["access_token"])
        self.assertEqual(st, 200)
        s = self.stats()
        self.assertEqual(s["tokens"]["refresh_reuse"], 1)
        self.assertEqual(s["tokens"]["refreshed"], 2)
        # refresh needs the client secret for a confidential grant
        st, b, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": t3["refresh_token"],
                                   "client_id": "test-client"})
        self.assertEqual((st, b["error"]), (401, "invalid_client"))
        # 180 days idle -> invalid
        self.fake.fake("POST", "/clock", {"advance_s": 181 * 86400})
        st, b, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": t3["refresh_token"]}, basic)
        self.assertEqual((st, b["error"]), (400, "invalid_grant"))

    def test_long_lived_refresh_and_secret_rotation(self):
        cid = uniq("ll")
        self.fake.fake("POST", "/clients", {"client_id": cid, "client_secret": "s1",
                                            "refresh": "long_lived"})
        t = self.fake.token(client_id=cid)
        for _ in range(2):
            st, b, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": t["refresh_token"]},
                                      (cid, "s1"))
            self.assertEqual(st, 200, b)
            self.assertEqual(b["refresh_token"], t["refresh_token"])
        self.fake.fake("POST", "/clients", {"client_id": cid, "client_secret": "s2",
                                            "refresh": "long_lived"})
        st, b, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": t["refresh_token"]},
                                  (cid, "s1"))
        self.assertEqual((st, b["error"]), (401, "invalid_client"))

    def test_fault_expire_tokens_and_revoke_refresh(self):
        t = self.fake.token()
        st, b = self.fake.fake("POST", "/faults", {"expire_tokens": True})
        self.assertEqual(st, 200)
        self.assertGreaterEqual(b["applied"]["expire_tokens"], 1)
        st, _, _ = self.fake.api("GET", "/contact_lists", token=t["access_token"])
        self.assertEqual(st, 401)
        st, t2, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": t["refresh_token"]},
                                   ("test-client", "test-secret"))
        self.assertEqual(st, 200)
        st, _, _ = self.fake.api("GET", "/contact_lists", token=t2["access_token"])
        self.assertEqual(st, 200)
        self.fake.fake("POST", "/faults", {"revoke_refresh": {"client_id": "test-client"}})
        st, b, _ = self.token_req({"grant_type": "refresh_token", "refresh_token": t2["refresh_token"]},
                                  ("test-client", "test-secret"))
        self.assertEqual((st, b["error"]), (400, "invalid_grant"))

    def test_device_flow(self):
        cid = uniq("dev")
        self.fake.fake("POST", "/clients", {"client_id": cid})
        self.fake.fake("POST", "/config", {"device_interval_s": 5})
        st, d, _ = self.fake.oauth("POST", "/device/authorize",
                                   form={"client_id": cid, "scope": "contact_data offline_access"})
        self.assertEqual(st, 200, d)
        for k in ("device_code", "user_code", "verification_uri", "verification_uri_complete",
                  "expires_in", "interval"):
            self.assertIn(k, d)
        self.assertEqual(d["interval"], 5)
        poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": d["device_code"], "client_id": cid}
        st, b, _ = self.token_req(poll)
        self.assertEqual((st, b["error"]), (400, "authorization_pending"))
        st, b, _ = self.token_req(poll)                       # too fast
        self.assertEqual((st, b["error"]), (400, "slow_down"))
        self.fake.fake("POST", "/clock", {"advance_s": 11})   # interval is now 5 + 5
        st, b, _ = self.token_req(poll)
        self.assertEqual((st, b["error"]), (400, "authorization_pending"))
        st, b = self.fake.fake("POST", "/device/approve", {"user_code": d["user_code"]})
        self.assertEqual(st, 200, b)
        self.fake.fake("POST", "/clock", {"advance_s": 11})
        st, tok, _ = self.token_req(poll)
        self.assertEqual(st, 200, tok)
        self.assertIn("refresh_token", tok)
        st, _, _ = self.fake.api("GET", "/contact_lists", token=tok["access_token"])
        self.assertEqual(st, 200)
        # public device grant refreshes with client_id only
        st, t2, _ = self.token_req({"grant_type": "refresh_token", "client_id": cid,
                                    "refresh_token": tok["refresh_token"]})
        self.assertEqual(st, 200, t2)
        self.fake.fake("POST", "/clock", {"advance_s": 11})
        st, b, _ = self.token_req(poll)
        self.assertEqual((st, b["error"]), (400, "invalid_grant"))
        # denied
        st, d, _ = self.fake.oauth("POST", "/device/authorize", form={"client_id": cid, "scope": "contact_data"})
        self.fake.fake("POST", "/device/deny", {"user_code": d["user_code"]})
        st, b, _ = self.token_req(dict(poll, device_code=d["device_code"]))
        self.assertEqual((st, b["error"]), (400, "access_denied"))
        # expired
        st, d, _ = self.fake.oauth("POST", "/device/authorize", form={"client_id": cid, "scope": "contact_data"})
        self.fake.fake("POST", "/clock", {"advance_s": d["expires_in"] + 1})
        st, b, _ = self.token_req(dict(poll, device_code=d["device_code"]))
        self.assertEqual((st, b["error"]), (400, "expired_token"))
        # browser-style approval through verification_uri_complete
        st, d, _ = self.fake.oauth("POST", "/device/authorize", form={"client_id": cid, "scope": "contact_data"})
        path = urllib.parse.urlsplit(d["verification_uri_complete"])
        st, _, _ = self.fake.request("GET", path.path + "?" + path.query)
        self.assertEqual(st, 200)
        self.fake.fake("POST", "/clock", {"advance_s": 11})
        st, tok, _ = self.token_req(dict(poll, device_code=d["device_code"]))
        self.assertEqual(st, 200, tok)
        self.assertNotIn("refresh_token", tok)


# ---------------------------------------------------------------------------
class TestImport(Base):
    def test_import_lifecycle_and_shapes(self):
        lid = self.new_list()
        self.fake.fake("POST", "/config", {"activity_delay_ms": 600})
        self.fake.fake("POST", "/custom_fields", {"label": "Loyalty tier", "type": "string"})
        a = self.do_import([{"email": "Ann@Example.com", "first_name": "Ann", "last_name": "Lee",
                             "cf:Loyalty_tier": "gold", "job_title": "CTO"},
                            {"email": "bo@example.com", "first_name": "Bo"}], [lid])
        assert_schema(self, a, resp_schema("createImportJSONActivity", 201))
        self.assertEqual(a["state"], "initialized")
        self.assertEqual(a["activity_errors"], [])
        self.assertEqual(a["_links"]["self"]["href"], "/v3/activities/" + a["activity_id"])
        self.assertEqual(a["status"]["items_total_count"], 2)
        seen = set()
        deadline = time.time() + 10
        while time.time() < deadline:
            st, g, _ = self.api("GET", a["_links"]["self"]["href"])
            self.assertEqual(st, 200)
            assert_schema(self, g, resp_schema("getActivityById", 200))
            seen.add(g["state"])
            if g["state"] == "completed":
                break
            time.sleep(0.03)
        self.assertEqual(seen, {"initialized", "processing", "completed"})
        self.assertEqual(g["percent_done"], 100)
        self.assertEqual(g["status"], {"items_total_count": 2, "items_completed_count": 2,
                                       "person_count": 2, "error_count": 0, "correctable_count": 0,
                                       "cannot_add_to_list_count": 0})
        m = self.members(lid)
        self.assertEqual(m["ann@example.com"]["first_name"], "Ann")
        self.assertEqual(m["ann@example.com"]["custom_fields"], {"Loyalty_tier": "gold"})
        self.assertEqual(m["bo@example.com"]["last_name"], None)
        st, c, _ = self.api("GET", "/contacts?email=ANN@example.com&include=list_memberships,custom_fields")
        self.assertEqual(st, 200)
        assert_schema(self, c, resp_schema("getAllContacts", 200))
        ann = c["contacts"][0]
        self.assertEqual(ann["email_address"]["address"], "ann@example.com")
        self.assertEqual(ann["email_address"]["permission_to_send"], "implicit")
        self.assertEqual(ann["list_memberships"], [lid])
        self.assertEqual(ann["job_title"], "CTO")
        self.assertEqual(len(ann["custom_fields"]), 1)
        st, one, _ = self.api("GET", "/contacts/%s?include=custom_fields" % ann["contact_id"])
        self.assertEqual(st, 200)
        assert_schema(self, one, resp_schema("getContactById", 200))

    def test_upsert_semantics(self):
        lid = self.new_list()
        self.fake.fake("POST", "/custom_fields", {"label": "tier", "type": "string"})
        st, seed = self.fake.fake("POST", "/contacts", {"contacts": [
            {"email": "unsub@example.com", "status": "unsubscribed", "first_name": "U"},
            {"email": "old@example.com", "first_name": "Old", "last_name": "Name"}]})
        self.assertEqual(st, 201, seed)
        a = self.do_import([
            {"email": "OLD@example.com", "last_name": "New", "first_name": ""},   # "" does not clear
            {"email": "dup@example.com", "first_name": "First", "cf:tier": "a"},
            {"email": "Dup@Example.com", "last_name": "Second"},                 # last wins (whole item)
            {"email": "unsub@example.com", "first_name": "U2"},
            {"email": "not-an-email"},
            {"email": "x@example.com", "cf:nosuchfield": "v", "unknown_key": 1},
            {"first_name": "nobody"},
            {"email": "bday@example.com", "birthday_month": 2},
        ], [lid])
        g = self.wait(a["activity_id"])
        self.assertEqual(g["state"], "completed")
        self.assertEqual(g["status"]["items_total_count"], 8)
        self.assertEqual(g["status"]["person_count"], 4)      # old, dup, unsub, x
        self.assertEqual(g["status"]["correctable_count"], 3)
        self.assertEqual(g["status"]["cannot_add_to_list_count"], 1)
        self.assertIn("not-an-email: invalid email address", g["activity_errors"])
        m = self.members(lid)
        self.assertEqual(set(m), {"old@example.com", "dup@example.com", "x@example.com"})
        self.assertEqual((m["old@example.com"]["first_name"], m["old@example.com"]["last_name"]),
                         ("Old", "New"))
        self.assertEqual((m["dup@example.com"]["first_name"], m["dup@example.com"]["last_name"]),
                         (None, "Second"))
        self.assertEqual(m["dup@example.com"]["custom_fields"], {})
        s = self.stats()
        self.assertEqual(s["unknown_custom_fields"], {"nosuchfield": 1})
        self.assertEqual(s["unknown_import_keys"], {"unknown_key": 1})
        self.assertEqual(s["empty_string_values"], 1)
        self.assertEqual(s["schema_violations"]["count"], 0)
        st, c, _ = self.api("GET", "/contacts?email=unsub@example.com&include=list_memberships")
        self.assertEqual(c["contacts"][0]["first_name"], "U2")
        self.assertEqual(c["contacts"][0]["list_memberships"], [])

    def test_schema_violations(self):
        lid = self.new_list()
        cases = [
            {"import_data": [{"email": "a@example.com"}]},                                  # no list_ids
            {"list_ids": [lid]},                                                            # no import_data
            {"import_data": [], "list_ids": []},                                            # minItems 1
            {"import_data": [], "list_ids": ["not-a-uuid"]},
            {"import_data": [], "list_ids": [lid] * 51},                                    # maxItems 50
            {"import_data": [{"email": "a" * 40 + "@example.com"}], "list_ids": [lid]},     # email > 50
            {"import_data": [{"email": "a@example.com", "first_name": "x" * 51}], "list_ids": [lid]},
            {"import_data": [{"email": "a@example.com", "last_name": None}], "list_ids": [lid]},
            {"import_data": [{"email": "a@example.com", "birthday_month": "2"}], "list_ids": [lid]},
            {"import_data": [{"email": "a@example.com", "cf:x": "y" * 256}], "list_ids": [lid]},
            {"import_data": [dict({"email": "a@example.com"}, **{"cf:f%d" % i: "v" for i in range(26)})],
             "list_ids": [lid]},
            {"import_data": ["a@example.com"], "list_ids": [lid]},
        ]
        for body in cases:
            st, b, _ = self.api("POST", "/activities/contacts_json_import", body)
            self.assertEqual(st, 400, (body, b))
            self.assertIsInstance(b, list)
            self.assertEqual(b[0]["error_key"], "contacts.api.validation.error")
        st, b, _ = self.api("POST", "/activities/contacts_json_import", b"{not json",
                            headers={"Content-Type": "application/json"})
        self.assertEqual(st, 400)
        s = self.stats()
        self.assertEqual(s["schema_violations"]["count"], len(cases) + 1)
        msgs = " | ".join(v["message"] for v in s["schema_violations"]["items"])
        self.assertIn("'list_ids' is a required property", msgs)
        self.assertIn("exceeds maxLength 50", msgs)
        self.assertIn("is not of type 'string'", msgs)
        self.assertEqual(s["problems_count"], len(cases) + 1)
        self.assertEqual(s["imports"]["accepted"], 0)

    def test_40000_limit_and_accept_time(self):
        lid = self.new_list()
        items = [{"email": "c%07d@example.com" % i, "first_name": "F%07d" % i, "last_name": "L%07d" % i}
                 for i in range(40001)]
        body = json.dumps({"import_data": items, "list_ids": [lid]}, separators=(",", ":")).encode()
        st, b, _ = self.api("POST", "/activities/contacts_json_import", body,
                            headers={"Content-Type": "application/json"})
        self.assertEqual(st, 400, b)
        self.assertIn("40001", b[0]["error_message"])
        body = json.dumps({"import_data": items[:40000], "list_ids": [lid]}, separators=(",", ":")).encode()
        self.assertLess(len(body), 4000000)
        t = time.perf_counter()
        st, b, _ = self.api("POST", "/activities/contacts_json_import", body,
                            headers={"Content-Type": "application/json"})
        rtt = time.perf_counter() - t
        self.assertEqual(st, 201, b)
        self.assertLess(rtt, 1.0)
        g = self.wait(b["activity_id"], timeout=20)
        self.assertEqual(g["status"]["person_count"], 40000)
        st, e = self.fake.fake("GET", "/state?format=emails&list_id=" + lid)
        self.assertEqual(e["count"], 40000)
        s = self.stats()
        self.assertEqual(s["max_import_contacts"], 40001)
        self.assertEqual(s["truncations"]["count"], 0)
        print("\n    [perf] 40,000 contacts / %d bytes: client round trip %.0f ms, server accept %.0f ms, "
              "apply %.0f ms" % (len(body), rtt * 1000, s["imports"]["max_accept_ms"],
                                 s["imports"]["max_apply_ms"]), file=sys.stderr)

    def test_4mb_truncation(self):
        lid = self.new_list()
        parts = [json.dumps({"email": "t%06d@example.com" % i, "first_name": "é" * 20,
                             "last_name": "Lastname%06d" % i}, separators=(",", ":"),
                            ensure_ascii=False).encode() for i in range(36000)]
        head = b'{"list_ids":["%s"],"import_data":[' % lid.encode()
        body = head + b",".join(parts) + b"]}"
        self.assertGreater(len(body), 4000000)
        # independent computation of the items wholly inside the first 4,000,000 bytes
        pos = len(head)
        kept = 0
        for p in parts:
            pos += len(p)
            if pos > 4000000:
                break
            kept += 1
            pos += 1
        st, a, _ = self.api("POST", "/activities/contacts_json_import", body,
                            headers={"Content-Type": "application/json"})
        self.assertEqual(st, 201, a)               # silently accepted
        self.assertEqual(a["status"]["items_total_count"], kept)
        g = self.wait(a["activity_id"], timeout=20)
        self.assertEqual(g["state"], "completed")
        self.assertEqual(g["status"]["person_count"], kept)
        st, e = self.fake.fake("GET", "/state?format=emails&list_id=" + lid)
        self.assertEqual(e["count"], kept)
        self.assertIn("t%06d@example.com" % (kept - 1), e["emails"])
        self.assertNotIn("t%06d@example.com" % kept, e["emails"])
        s = self.stats()
        self.assertEqual(s["truncations"]["count"], 1)
        self.assertEqual(s["truncations"]["contacts_dropped"], 36000 - kept)
        self.assertEqual(s["truncations"]["events"][0]["activity_id"], a["activity_id"])
        self.assertTrue(any("truncated" in p for p in s["problems"]))
        st, fa = self.fake.fake("GET", "/activities/" + a["activity_id"])
        self.assertTrue(fa["_fake"]["truncated"])

    def test_unknown_and_deleted_lists(self):
        lid = self.new_list()
        ghost = "11111111-2222-4333-8444-555555555555"
        st, b, _ = self.api("POST", "/activities/contacts_json_import",
                            {"import_data": [{"email": "a@example.com"}], "list_ids": [lid, ghost]})
        self.assertEqual(st, 404, b)
        self.assertIsInstance(b, list)
        self.fake.fake("POST", "/faults", {"unknown_list_status": 400})
        st, b, _ = self.api("POST", "/activities/contacts_json_import",
                            {"import_data": [{"email": "a@example.com"}], "list_ids": [ghost]})
        self.assertEqual(st, 400, b)
        self.fake.fake("DELETE", "/faults")
        # soft delete: GET shows deleted_at, imports 404
        st, _ = self.fake.fake("DELETE", "/lists/" + lid)
        self.assertEqual(st, 200)
        st, g, _ = self.api("GET", "/contact_lists/" + lid)
        self.assertEqual(st, 200)
        self.assertIn("deleted_at", g)
        assert_schema(self, g, resp_schema("getList", 200))
        st, b, _ = self.api("POST", "/activities/contacts_json_import",
                            {"import_data": [{"email": "a@example.com"}], "list_ids": [lid]})
        self.assertEqual(st, 404)
        lid2 = self.new_list()
        self.fake.fake("DELETE", "/lists/%s?mode=hard" % lid2)
        st, g, _ = self.api("GET", "/contact_lists/" + lid2)
        self.assertEqual(st, 404)
        # list deleted while the import is queued: activity completes with an error text
        lid3 = self.new_list()
        self.fake.fake("POST", "/faults", {"activity_stuck": True})
        a = self.do_import([{"email": "late@example.com"}], [lid3])
        self.fake.fake("DELETE", "/lists/" + lid3)
        self.fake.fake("DELETE", "/faults")
        g = self.wait(a["activity_id"])
        self.assertEqual(g["state"], "completed")
        self.assertTrue(any("no longer exists" in e for e in g["activity_errors"]))

    def test_queue_full(self):
        lid = self.new_list()
        self.fake.fake("POST", "/faults", {"activity_stuck": True})
        self.assertEqual(self.fake.fake("GET", "/config")[1]["max_queued_activities"], 1000)
        body = json.dumps({"import_data": [{"email": "q@example.com"}], "list_ids": [lid]}).encode()
        conn = self.fake.connection(new=True)
        h = {"Content-Type": "application/json"}
        for i in range(1000):
            st, b, _ = self.fake.api("POST", "/activities/contacts_json_import", body,
                                     token=self.tok, headers=h, conn=conn)
            self.assertEqual(st, 201, (i, b))
        st, b, _ = self.fake.api("POST", "/activities/remove_list_memberships",
                                 {"source": {"list_ids": [lid]}, "list_ids": [lid]},
                                 token=self.tok, conn=conn)
        self.assertEqual((st, b), (429, [{"error_key": "activities.queue_full",
                                          "error_message": "You exceeded 1,000 queued activities "
                                                           "for this user account."}]))
        conn.close()
        st, act, _ = self.api("GET", "/activities?limit=500")
        self.assertEqual(len(act["activities"]), 500)
        self.assertIn("next", act["_links"])
        self.fake.fake("DELETE", "/faults")
        self.fake.fake("POST", "/clock", {"advance_s": 120})   # 1000 x 60 ms queue
        st, b = self.fake.fake("POST", "/drain", {"timeout_s": 20})
        self.assertEqual(st, 200, b)
        self.assertEqual(self.stats()["http_429"], {"queue_full": 1})

    def test_activity_listing_and_retention(self):
        lid = self.new_list()
        ids = [self.do_import([{"email": "l%d@example.com" % i}], [lid])["activity_id"] for i in range(5)]
        self.fake.fake("POST", "/drain", {})
        st, page, _ = self.api("GET", "/activities?limit=2")
        self.assertEqual(st, 200)
        assert_schema(self, page, resp_schema("getAllActivities", 200))
        got = [a["activity_id"] for a in page["activities"]]
        while "next" in page["_links"]:
            href = page["_links"]["next"]["href"]
            self.assertTrue(href.startswith("/v3/activities?"))
            self.assertIn("next=", href)
            st, page, _ = self.api("GET", href)
            got += [a["activity_id"] for a in page["activities"]]
        self.assertEqual(got, ids[::-1], "newest first, all pages")
        st, page, _ = self.api("GET", "/activities?state=completed&limit=500")
        self.assertEqual(len(page["activities"]), 5)
        st, b, _ = self.api("GET", "/activities?state=initialized")
        self.assertEqual(st, 400)                       # not in the spec's enum
        st, b, _ = self.api("GET", "/activities?limit=501")
        self.assertEqual(st, 400)
        st, b, _ = self.api("GET", "/activities/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12)
        self.assertEqual(st, 404)
        self.fake.fake("POST", "/clock", {"advance_s": 10 * 86400 + 60})
        tok = self.fake.token()["access_token"]
        st, b, _ = self.fake.api("GET", "/activities/" + ids[0], token=tok)
        self.assertEqual(st, 404)
        st, page, _ = self.fake.api("GET", "/activities", token=tok)
        self.assertEqual(page["activities"], [])


# ---------------------------------------------------------------------------
class TestMemberships(Base):
    def seed(self, n, lid):
        st, r = self.fake.fake("POST", "/contacts", {"generate": {"count": n, "list_ids": [lid],
                                                                   "pattern": "m{n}@example.com"}})
        self.assertEqual(st, 201, r)

    def all_ids(self, lid):
        ids = []
        path = "/contacts?lists=%s&limit=500" % lid
        while path:
            st, page, _ = self.api("GET", path)
            self.assertEqual(st, 200, page)
            ids += [c["contact_id"] for c in page["contacts"]]
            path = page["_links"].get("next", {}).get("href")
        return ids

    def test_remove_and_add(self):
        lid = self.new_list()
        lid2 = self.new_list()
        self.seed(1200, lid)
        ids = self.all_ids(lid)
        self.assertEqual(len(ids), 1200)
        self.assertEqual(len(set(ids)), 1200)
        st, a, _ = self.api("POST", "/activities/remove_list_memberships",
                            {"source": {"contact_ids": ids[:500]}, "list_ids": [lid]})
        self.assertEqual(st, 201, a)
        assert_schema(self, a, resp_schema("createListRemoveActivity", 201))
        g = self.wait(a["activity_id"])
        self.assertEqual(g["status"], {"items_total_count": 500, "items_completed_count": 500,
                                       "list_count": 1})
        self.assertEqual(len(self.members(lid)), 700)
        st, b, _ = self.api("POST", "/activities/remove_list_memberships",
                            {"source": {"contact_ids": ids[:501]}, "list_ids": [lid]})
        self.assertEqual(st, 400, b)
        st, b, _ = self.api("POST", "/activities/add_list_memberships",
                            {"source": {"contact_ids": ids[:501]}, "list_ids": [lid2]})
        self.assertEqual(st, 400, b)
        st, b, _ = self.api("POST", "/activities/remove_list_memberships",
                            {"source": {"contact_ids": ids[:2], "list_ids": [lid]}, "list_ids": [lid]})
        self.assertEqual(st, 400, b)
        st, b, _ = self.api("POST", "/activities/remove_list_memberships",
                            {"source": {"contact_ids": ids[:2]}, "list_ids": [lid] * 51})
        self.assertEqual(st, 400, b)
        st, b, _ = self.api("POST", "/activities/add_list_memberships",
                            {"source": {"segment_id": 3}, "list_ids": [lid]})
        self.assertEqual(st, 400, b)
        self.assertEqual(self.stats()["unsupported"], {"source.segment_id": 1})
        st, a, _ = self.api("POST", "/activities/add_list_memberships",
                            {"source": {"contact_ids": ids[:10]}, "list_ids": [lid2]})
        self.assertEqual(st, 201, a)
        self.wait(a["activity_id"])
        self.assertEqual(len(self.members(lid2)), 10)
        # empty a list: source list = target list
        st, a, _ = self.api("POST", "/activities/remove_list_memberships",
                            {"source": {"list_ids": [lid]}, "list_ids": [lid]})
        self.assertEqual(st, 201, a)
        g = self.wait(a["activity_id"])
        self.assertEqual(g["status"]["items_total_count"], 700)
        self.assertEqual(self.members(lid), {})
        st, c, _ = self.api("GET", "/contacts?email=m0@example.com&include=list_memberships")
        self.assertEqual(c["contacts"][0]["list_memberships"], [lid2])
        st, b, _ = self.api("POST", "/activities/remove_list_memberships",
                            {"source": {"contact_ids": ids[:1]},
                             "list_ids": ["11111111-2222-4333-8444-555555555555"]})
        self.assertEqual(st, 404, b)


# ---------------------------------------------------------------------------
class TestListsContactsFields(Base):
    def test_lists(self):
        names = ["a-" + uniq(), "b-" + uniq(), "c-" + uniq()]
        ids = [self.new_list(n) for n in names]
        self.fake.fake("POST", "/contacts", {"contacts": [
            {"email": "u@example.com", "status": "unsubscribed", "list_ids": [ids[0]]},
            {"email": "v@example.com", "list_ids": [ids[0]]}]})
        st, page, _ = self.api("GET", "/contact_lists?limit=2&include_membership_count=all&include_count=true")
        self.assertEqual(st, 200)
        assert_schema(self, page, resp_schema("getAllLists", 200))
        self.assertEqual(page["lists_count"], 3)
        self.assertEqual(page["lists"][0]["membership_count"], 2)
        st, page2, _ = self.api("GET", page["_links"]["next"]["href"])
        self.assertEqual([x["list_id"] for x in page["lists"] + page2["lists"]], ids)
        self.assertNotIn("next", page2["_links"])
        st, g, _ = self.api("GET", "/contact_lists/%s?include_membership_count=active" % ids[0])
        self.assertEqual(g["membership_count"], 1)
        st, g, _ = self.api("GET", "/contact_lists?name=" + urllib.parse.quote(names[1]))
        self.assertEqual([x["list_id"] for x in g["lists"]], [ids[1]])
        st, b, _ = self.api("GET", "/contact_lists?limit=1001")
        self.assertEqual(st, 400)
        st, b, _ = self.api("GET", "/contact_lists?include_membership_count=some")
        self.assertEqual(st, 400)
        st, c, _ = self.api("POST", "/contact_lists", {"name": "new " + names[0]})
        self.assertEqual(st, 201, c)
        assert_schema(self, c, resp_schema("createList", 201))
        st, c, _ = self.api("POST", "/contact_lists", {"name": names[0]})
        self.assertEqual(st, 409)
        st, g, _ = self.api("GET", "/contact_lists/11111111-2222-4333-8444-555555555555")
        self.assertEqual(st, 404)

    def test_contacts_paging_and_filters(self):
        lid = self.new_list()
        other = self.new_list()
        self.fake.fake("POST", "/contacts", {"generate": {"count": 1100, "list_ids": [lid],
                                                          "first_name": "F{n}"}})
        self.fake.fake("POST", "/contacts", {"generate": {"count": 10, "start": 5000, "list_ids": [other],
                                                          "status": "unsubscribed"}})
        seen = []
        path = "/contacts?limit=500&include_count=true"
        while path:
            st, page, _ = self.api("GET", path)
            self.assertEqual(st, 200, page)
            self.assertEqual(page["contacts_count"], 1110)
            seen += [c["email_address"]["address"] for c in page["contacts"]]
            path = page["_links"].get("next", {}).get("href")
        self.assertEqual(len(seen), 1110)
        self.assertEqual(len(set(seen)), 1110)
        st, page, _ = self.api("GET", "/contacts?lists=%s,%s&limit=500&include_count=true" % (lid, other))
        self.assertEqual(page["contacts_count"], 1110)
        st, page, _ = self.api("GET", "/contacts?lists=%s&status=unsubscribed" % other)
        self.assertEqual(len(page["contacts"]), 10)
        st, page, _ = self.api("GET", "/contacts?lists=%s&status=unsubscribed" % lid)
        self.assertEqual(page["contacts"], [])
        st, page, _ = self.api("GET", "/contacts?email=USER7@EXAMPLE.COM")
        self.assertEqual([c["first_name"] for c in page["contacts"]], ["F7"])
        for bad in ("limit=0", "limit=501", "status=gone", "include=everything"):
            st, b, _ = self.api("GET", "/contacts?" + bad)
            self.assertEqual(st, 400, bad)
        st, b, _ = self.api("GET", "/contacts?updated_after=2020-01-01T00:00:00Z")
        self.assertEqual(st, 400)
        self.assertEqual(self.stats()["schema_violations"]["count"], 4)

    def test_custom_fields(self):
        st, f, _ = self.api("POST", "/contact_custom_fields", {"label": "Shoe size", "type": "string"})
        self.assertEqual(st, 201, f)
        self.assertEqual(f["name"], "Shoe_size")
        assert_schema(self, f, resp_schema("createCustomFields", 201))
        st, b, _ = self.api("POST", "/contact_custom_fields", {"label": "Shoe size", "type": "string"})
        self.assertEqual(st, 409)
        st, b, _ = self.api("POST", "/contact_custom_fields", {"label": "no type"})
        self.assertEqual(st, 400)
        for i in range(3):
            self.fake.fake("POST", "/custom_fields", {"label": "f%d" % i})
        st, page, _ = self.api("GET", "/contact_custom_fields?limit=2")
        assert_schema(self, page, resp_schema("getAllCustomFields", 200))
        st, page2, _ = self.api("GET", page["_links"]["next"]["href"])
        self.assertEqual(len(page["custom_fields"]) + len(page2["custom_fields"]), 4)
        st, b, _ = self.api("GET", "/contact_custom_fields?limit=101")
        self.assertEqual(st, 400)


# ---------------------------------------------------------------------------
class TestFaults(Base):
    def test_throttle_storm_and_error_rate(self):
        self.fake.fake("POST", "/faults", {"throttle_storm": 2})
        r = [self.api("GET", "/contact_lists")[:2] for _ in range(3)]
        self.assertEqual(r[0], (429, {"error_key": "throttled", "error_message": "Too Many Requests"}))
        self.assertEqual(r[1][0], 429)
        self.assertEqual(r[2][0], 200)
        self.fake.fake("POST", "/faults", {"error_rate": {"rate": 1.0, "count": 3, "statuses": [503]}})
        r = [self.api("GET", "/contact_lists")[0] for _ in range(4)]
        self.assertEqual(r, [503, 503, 503, 200])

        def run(seed):
            self.fake.fake("POST", "/faults", {"error_rate": {"rate": 0.5, "seed": seed}})
            out = [self.api("GET", "/contact_lists")[0] for _ in range(20)]
            self.fake.fake("DELETE", "/faults")
            return out
        a, b = run(7), run(7)
        self.assertEqual(a, b)
        self.assertTrue(set(a) <= {200, 500, 503} and 200 in a and len(set(a)) > 1, a)
        s = self.stats()
        self.assertEqual(s["injected_5xx"], 3 + 2 * a.count(500) + 2 * a.count(503))
        self.assertEqual(s["http_429"]["throttled"], 2)

    def test_drop_connections_and_latency(self):
        self.fake.fake("POST", "/faults", {"drop_connections": 1})
        c = self.fake.connection(new=True)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
            self.fake.api("GET", "/contact_lists", token=self.tok, conn=c)
        c.close()
        self.assertEqual(self.api("GET", "/contact_lists")[0], 200)
        # drop AFTER processing an import: the activity exists but the client never saw the 201
        lid = self.new_list()
        self.fake.fake("POST", "/faults", {"drop_connections": {
            "count": 1, "when": "after",
            "match": {"method": "POST", "path_prefix": "/v3/activities/contacts_json_import"}}})
        self.assertEqual(self.api("GET", "/contact_lists")[0], 200)     # not matched
        c = self.fake.connection(new=True)
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, ssl.SSLError)):
            self.fake.api("POST", "/activities/contacts_json_import",
                          {"import_data": [{"email": "lost@example.com"}], "list_ids": [lid]},
                          token=self.tok, conn=c)
        c.close()
        st, acts = self.fake.fake("GET", "/activities")
        self.assertEqual(len(acts["activities"]), 1)
        self.assertEqual(self.stats()["injected"]["dropped"], 2)
        self.fake.fake("POST", "/faults", {"latency_ms": 300})
        t = time.perf_counter()
        self.assertEqual(self.api("GET", "/contact_lists")[0], 200)
        self.assertGreaterEqual(time.perf_counter() - t, 0.3)
        st, _ = self.fake.fake("DELETE", "/faults")
        t = time.perf_counter()
        self.api("GET", "/contact_lists")
        self.assertLess(time.perf_counter() - t, 0.3)

    def test_activity_outcomes_and_stuck(self):
        lid = self.new_list()
        self.fake.fake("POST", "/faults", {"activity_outcome": {"state": "failed", "count": 1,
                                                                 "errors": ["Import failed: boom"]}})
        a = self.do_import([{"email": "f1@example.com"}], [lid])
        b = self.do_import([{"email": "f2@example.com"}], [lid])
        ga, gb = self.wait(a["activity_id"]), self.wait(b["activity_id"])
        self.assertEqual((ga["state"], ga["activity_errors"]), ("failed", ["Import failed: boom"]))
        self.assertEqual(gb["state"], "completed")
        self.assertEqual(set(self.members(lid)), {"f2@example.com"})
        items = [{"email": "t%d@example.com" % i} for i in range(10)]
        self.fake.fake("POST", "/faults", {"activity_outcome": {"state": "timed_out",
                                                                 "applied_fraction": 0.5}})
        g = self.wait(self.do_import(items, [lid])["activity_id"])
        self.assertEqual(g["state"], "timed_out")
        self.assertEqual(g["percent_done"], 50)
        self.assertEqual(len(self.members(lid)), 6)
        self.fake.fake("POST", "/faults", {"activity_outcome": {"state": "cancelled"}})
        g = self.wait(self.do_import(items, [lid])["activity_id"])
        self.assertEqual(g["state"], "cancelled")
        self.assertTrue(g["activity_errors"])
        self.fake.fake("POST", "/faults", {"activity_stuck": True})
        a = self.do_import([{"email": "stuck@example.com"}], [lid])
        self.fake.fake("POST", "/clock", {"advance_s": 3600})
        st, g, _ = self.api("GET", "/activities/" + a["activity_id"])
        self.assertEqual(g["state"], "processing")
        self.assertNotIn("stuck@example.com", self.members(lid))
        self.fake.fake("DELETE", "/faults")
        self.assertEqual(self.wait(a["activity_id"])["state"], "completed")
        self.assertIn("stuck@example.com", self.members(lid))

    def test_activity_outcome_by_kind_and_skip(self):
        """kind limits the fault to one activity kind; skip passes over the first ones."""
        lid, src = self.new_list(), self.new_list()
        self.fake.fake("POST", "/faults", {"activity_outcome": {"state": "failed", "kind": "remove",
                                                                 "skip": 1}})
        imp = self.do_import([{"email": "k1@example.com"}], [src, lid])
        self.assertEqual(self.wait(imp["activity_id"])["state"], "completed")
        body = {"source": {"list_ids": [src]}, "list_ids": [src]}
        st, r1, _ = self.api("POST", "/activities/remove_list_memberships", body)
        st, r2, _ = self.api("POST", "/activities/remove_list_memberships",
                             {"source": {"list_ids": [lid]}, "list_ids": [lid]})
        self.assertEqual(self.wait(r1["activity_id"])["state"], "completed")
        self.assertEqual(self.wait(r2["activity_id"])["state"], "failed")
        self.assertEqual(self.members(src), {})
        self.assertEqual(list(self.members(lid)), ["k1@example.com"])
        st, b = self.fake.fake("POST", "/faults", {"activity_outcome": {"kind": "x"}})
        self.assertEqual(st, 400)

    def test_error_after_processing_and_authorize_outcome(self):
        lid = self.new_list()
        self.fake.fake("POST", "/faults", {"error_rate": {
            "rate": 1.0, "count": 1, "statuses": [500], "when": "after",
            "match": {"method": "POST", "path_prefix": "/v3/activities/"}}})
        st, b, _ = self.api("POST", "/activities/contacts_json_import",
                            {"import_data": [{"email": "twice@example.com"}], "list_ids": [lid]})
        self.assertEqual(st, 500)
        self.assertEqual(b[0]["error_key"], "server_error")
        self.fake.fake("POST", "/drain", {})
        self.assertIn("twice@example.com", self.members(lid))        # it was processed anyway
        self.fake.fake("POST", "/faults", {"authorize_outcome": "access_denied"})
        st, body, h = self.fake.oauth("GET", "/authorize", query={
            "client_id": "test-client", "redirect_uri": "http://127.0.0.1:9/cb",
            "response_type": "code", "scope": "contact_data", "state": "s1"})
        self.assertEqual(st, 302)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(h["location"]).query)
        self.assertEqual((q["error"], q["state"]), (["access_denied"], ["s1"]))
        self.assertNotIn("code", q)

    def test_bad_fault_spec(self):
        st, b = self.fake.fake("POST", "/faults", {"nonsense": 1})
        self.assertEqual(st, 400)
        st, b = self.fake.fake("POST", "/faults", {"error_rate": {"rate": 2}})
        self.assertEqual(st, 400)
        st, b = self.fake.fake("GET", "/faults")
        self.assertEqual(b, {})


# ---------------------------------------------------------------------------
class TestLimits(Base):
    @classmethod
    def setUpClass(cls):
        cls.fake = L

    def test_rps_per_api_key_and_quota_accounting(self):
        self.fake.fake("POST", "/clients", {"client_id": "other", "client_secret": "o"})
        tok_b = self.fake.token(client_id="other")["access_token"]
        codes = [self.api("GET", "/contact_lists")[0] for _ in range(10)]
        self.assertEqual(codes[:4], [200] * 4)
        self.assertIn(429, codes)
        st, b, _ = self.api("GET", "/contact_lists")
        if st == 429:
            self.assertEqual(b, {"error_key": "throttled", "error_message": "Too Many Requests"})
        st, _, _ = self.fake.api("GET", "/contact_lists", token=tok_b)   # other key unaffected
        self.assertEqual(st, 200)
        time.sleep(1.1)
        self.assertEqual(self.api("GET", "/contact_lists")[0], 200)
        s = self.stats()
        ok = s["status_by_kind"]["lists"].get("200", 0)
        state = self.fake.fake("GET", "/state")[1]
        self.assertEqual(state["quota_used"]["test-client"] + state["quota_used"]["other"], ok,
                         "429s must not count against the daily quota")
        self.assertGreaterEqual(s["http_429"]["throttled"], 1)

    def test_daily_quota(self):
        self.fake.fake("POST", "/faults", {"quota_exhausted": {"client_id": "test-client"}})
        st, b, _ = self.api("GET", "/contact_lists")
        self.assertEqual((st, b), (429, {"error_key": "quota_exceeded", "error_message": "Limit Exceeded"}))
        now = self.fake.fake("GET", "/clock")[1]["now_epoch"]
        to_midnight = 86400 - (now % 86400) + 1
        self.fake.fake("POST", "/clock", {"advance_s": to_midnight})
        st, b, _ = self.api("GET", "/contact_lists")
        self.assertEqual(st, 200, b)
        self.assertEqual(self.stats()["http_429"]["quota_exceeded"], 1)

    def test_token_endpoint_rps(self):
        cid = uniq("tr")
        self.fake.fake("POST", "/clients", {"client_id": cid, "client_secret": "s"})
        t = self.fake.token(client_id=cid)
        form = {"grant_type": "refresh_token", "refresh_token": t["refresh_token"]}
        st1, b1, _ = self.fake.oauth("POST", "/token", form=form, basic=(cid, "s"))
        self.assertEqual(st1, 200, b1)
        st2, b2, _ = self.fake.oauth("POST", "/token", form=dict(form, refresh_token=b1["refresh_token"]),
                                     basic=(cid, "s"))
        self.assertEqual(st2, 429, b2)
        time.sleep(1.05)
        st3, b3, _ = self.fake.oauth("POST", "/token", form=dict(form, refresh_token=b1["refresh_token"]),
                                     basic=(cid, "s"))
        self.assertEqual(st3, 200, b3)
        self.assertEqual(self.stats()["http_429"]["token_endpoint"], 1)


def _report_times():
    if os.environ.get("FAKECC_TEST_TIMES"):
        for t, name in sorted(Base.TIMES, reverse=True)[:10]:
            print("    %6.2f s  %s" % (t, name), file=sys.stderr)


if __name__ == "__main__":
    import atexit
    atexit.register(_report_times)
    unittest.main(verbosity=int(os.environ.get("FAKECC_TEST_VERBOSITY", "1")))
