#!/usr/bin/python3
"""Measure fakecc's own performance (figures quoted in README.md).

    /usr/bin/python3 tests/fakecc/bench_fakecc.py [--contacts 1000000] [--keep DIR]

Runs the fake WITH the default limits (4 req/s, 10,000/day) and pushes
N contacts as imports of 40,000 contacts (each body just under 4,000,000
bytes) into one list, paced at 4 requests/s like a well-behaved client, then
times GET /_fake/state for the whole list and a full /v3/contacts?lists= walk.
"""

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from fakecc_client import FakeCC  # noqa: E402


def rss_mb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class Pacer:
    def __init__(self, rps):
        self.gap = 1.0 / rps
        self.next = time.monotonic()

    def wait(self):
        now = time.monotonic()
        if now < self.next:
            time.sleep(self.next - now)
        self.next = max(now, self.next) + self.gap


def body_for(start, n, list_id):
    items = []
    for i in range(start, start + n):
        items.append({"email": "c%07d@example.com" % i,
                      "first_name": "F%07d" % i,
                      "last_name": "L%07d" % i,
                      "cf:tier": "gold"})
    b = json.dumps({"import_data": items, "list_ids": [list_id]}, separators=(",", ":")).encode()
    assert len(b) <= 4000000, len(b)
    return b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=1000000)
    ap.add_argument("--per-import", type=int, default=40000)
    ap.add_argument("--keep", default=None)
    a = ap.parse_args()
    d = a.keep or tempfile.mkdtemp(prefix="fakecc-bench-")
    with FakeCC(d, "--activity-delay-ms", "200") as fake:
        tok = fake.token()["access_token"]
        pacer = Pacer(4.0)
        st, lst = fake.fake("POST", "/lists", {"name": "bench"})
        lid = lst["list_id"]
        fake.fake("POST", "/custom_fields", {"label": "tier", "type": "string"})
        sizes = []
        rtts = []
        acts = []
        t0 = time.time()
        for start in range(0, a.contacts, a.per_import):
            n = min(a.per_import, a.contacts - start)
            body = body_for(start, n, lid)
            sizes.append(len(body))
            pacer.wait()
            t = time.perf_counter()
            st, resp, _ = fake.api("POST", "/activities/contacts_json_import", body,
                                   token=tok, headers={"Content-Type": "application/json"})
            rtts.append(time.perf_counter() - t)
            assert st == 201, (st, resp)
            acts.append(resp["activity_id"])
        t_submit = time.time() - t0
        # poll all activities with the list endpoint (1 request per poll)
        while True:
            pacer.wait()
            st, lst_, _ = fake.api("GET", "/activities?limit=500", token=tok)
            assert st == 200, (st, lst_)
            states = {x["activity_id"]: x["state"] for x in lst_["activities"]}
            if all(states.get(x) == "completed" for x in acts):
                break
        t_done = time.time() - t0
        st, stats = fake.fake("GET", "/stats")
        t = time.perf_counter()
        st, raw, _ = fake.request("GET", "/_fake/state?list_id=" + lid)
        t_state = time.perf_counter() - t
        t = time.perf_counter()
        state = json.loads(raw)
        t_state_parse = time.perf_counter() - t
        assert state["count"] == a.contacts, state["count"]
        assert len(state["members"]) == a.contacts
        assert state["members"][-1]["custom_fields"] == {"tier": "gold"}, state["members"][-1]
        t = time.perf_counter()
        st, raw, _ = fake.request("GET", "/_fake/state?format=rows&list_id=" + lid)
        t_state_rows = time.perf_counter() - t
        t = time.perf_counter()
        st, em = fake.fake("GET", "/state?format=emails&list_id=" + lid)
        t_state_emails = time.perf_counter() - t
        # walk one page of /v3/contacts by list, then time a deep page
        fake.fake("POST", "/config", {"limits_enabled": False})
        t = time.perf_counter()
        st, page, _ = fake.api("GET", "/contacts?lists=%s&limit=500&include=list_memberships,custom_fields" % lid,
                               token=tok)
        t_page1 = time.perf_counter() - t
        t = time.perf_counter()
        st, page2, _ = fake.api("GET", page["_links"]["next"]["href"], token=tok)
        t_page2 = time.perf_counter() - t
        rss = rss_mb(fake.proc.pid)
        im = stats["imports"]
        print(json.dumps({
            "contacts": a.contacts, "imports": len(acts),
            "body_bytes_max": max(sizes), "body_bytes_min": min(sizes),
            "client_rtt_ms_max": round(max(rtts) * 1000, 1),
            "client_rtt_ms_avg": round(sum(rtts) / len(rtts) * 1000, 1),
            "server_accept_ms_max": im["max_accept_ms"],
            "server_accept_ms_avg": round(im["total_accept_ms"] / max(1, im["accepted"]), 1),
            "server_apply_ms_max": im["max_apply_ms"],
            "server_apply_ms_avg": round(im["total_apply_ms"] / max(1, im["applied"]), 1),
            "submit_s": round(t_submit, 2), "all_completed_s": round(t_done, 2),
            "http_429": stats["http_429"], "problems": stats["problems_count"],
            "fake_state_members_fetch_s": round(t_state, 2),
            "fake_state_members_client_json_parse_s": round(t_state_parse, 2),
            "fake_state_rows_fetch_s": round(t_state_rows, 2),
            "fake_state_emails_only_s": round(t_state_emails, 2),
            "contacts_page1_ms": round(t_page1 * 1000, 1),
            "contacts_page2_ms": round(t_page2 * 1000, 1),
            "fake_rss_mb": round(rss),
        }, indent=1))


if __name__ == "__main__":
    main()
