#!/bin/bash
# The README's demo: installs what it needs, builds, and runs ccsync's main job end to end on an
# embedded default — sample profiles in segments, the local fake Constant Contact (HTTPS, real
# limits), the real ccsyncd, a connection authorized through the OAuth device flow, an export,
# its run, a re-run with no change, and the history. Everything lives in a temporary directory
# and is stopped at the end. It checks its own results: a failed step fails the script.
#
# Environment: CCSYNC_DEMO_PROFILES (default 5000), CCSYNC_KEEP=1 keeps the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
profiles=${CCSYNC_DEMO_PROFILES:-5000}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Installing dependencies and building"
CCSYNC_WITH_CONTAINER_DEPS=0 scripts/install-deps.sh
[[ -f build-demo/build.ninja ]] || meson setup build-demo --buildtype=release >/dev/null
meson compile -C build-demo >/dev/null
ccsyncd=$root/build-demo/daemon/ccsyncd
ctl() { "$root/build-demo/daemon/ccsyncctl" --socket "$work/control.sock" "$@"; }

work=$(mktemp -d /tmp/ccsync-demo.XXXXXX)
fake_pid= daemon_pid= auth_pid=
cleanup() {
	[[ -n $auth_pid ]] && kill "$auth_pid" 2>/dev/null || true
	[[ -n $daemon_pid ]] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" || true
	[[ -n $fake_pid ]] && kill -TERM "$fake_pid" 2>/dev/null && wait "$fake_pid" || true
	if [[ -n ${CCSYNC_KEEP:-} ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

say "Starting the fake Constant Contact (HTTPS on 127.0.0.1, 4 requests/s, 10,000/day)"
/usr/bin/python3 tests/fakecc/fakecc.py --dir "$work/fakecc" --activity-delay-ms 300 \
	>"$work/fakecc.log" 2>&1 &
fake_pid=$!
for _ in $(seq 100); do [[ -f $work/fakecc/ready.json ]] && break; sleep 0.1; done
fake() { # METHOD PATH [JSON]: the fake's test-control API (what Constant Contact's UI would be)
	curl -sf --cacert "$work/fakecc/ca.pem" -X "$1" -H 'Content-Type: application/json' \
		${3:+--data "$3"} "https://127.0.0.1:$port$2"
}
port=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' \
	"$work/fakecc/ready.json")
list_id=$(fake POST /_fake/lists '{"name":"Demo newsletter"}' |
	/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["list_id"])')
echo "fake Constant Contact on port $port; list \"Demo newsletter\" is $list_id"

cat >"$work/ccsync.conf" <<EOF
[daemon]
database = $work/ccsync.db
control_socket = $work/control.sock
[constant_contact]
api_base = https://127.0.0.1:$port/v3
auth_base = https://127.0.0.1:$port/oauth2/default/v1
ca_file = $work/fakecc/ca.pem
poll_initial_ms = 200
poll_max_ms = 1000
EOF

say "Writing $profiles sample profiles into segments (the upstream writer's path)"
"$ccsyncd" --config "$work/ccsync.conf" --check-config
/usr/bin/python3 scripts/sample-data.py --db "$work/ccsync.db" --profiles "$profiles" \
	--segment newsletter=1.0 --segment vip=0.2 --bad-every 500

say "Starting ccsyncd"
"$ccsyncd" --config "$work/ccsync.conf" --log-target stderr >"$work/ccsyncd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.1; done
ctl status

say "Adding a connection, recording data-privacy consent, authorizing (device flow)"
ctl connection add demo --client-id test-client --flow device
ctl connection consent demo
ctl connection authorize demo >"$work/authorize.out" 2>&1 &
auth_pid=$!
for _ in $(seq 100); do grep -q 'code' "$work/authorize.out" 2>/dev/null && break; sleep 0.1; done
cat "$work/authorize.out"
user_code=$(grep -oE '[A-Z0-9]{4}-[A-Z0-9]{4}' "$work/authorize.out" | head -1)
echo "(the demo approves code $user_code in the fake's browser page)"
fake POST /_fake/device/approve "{\"user_code\":\"$user_code\"}" >/dev/null
wait "$auth_pid"
auth_pid=
cat "$work/authorize.out" | tail -n 1
ctl lists demo

say "Adding an export: segment \"newsletter\" -> list \"Demo newsletter\""
ctl export add newsletter --connection demo --list-id "$list_id" --email-field email \
	--first-name-field first_name --last-name-field last_name --field city=city \
	--segment newsletter

say "Running it"
ctl run newsletter --follow

say "Running it again: nothing changed, so nothing is sent"
ctl run newsletter --follow

say "Run history"
ctl runs newsletter
first_run=$(ctl --json runs newsletter | /usr/bin/python3 -c \
	'import json,sys; print(min(r["id"] for r in json.load(sys.stdin)["runs"]))')
ctl run-show "$first_run"
echo
echo "Rejected rows of run $first_run (first 5):"
ctl rejected "$first_run" | head -n 6

say "Checking Constant Contact's side"
members=$(fake GET "/_fake/state?list_id=$list_id&format=emails" |
	/usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["count"])')
expected=$((profiles - profiles / 500))
echo "list \"Demo newsletter\" holds $members contacts; the segment has $expected valid emails"
if [[ $members -ne $expected ]]; then
	echo "demo: FAILED: the list does not match the segment" >&2
	exit 1
fi
echo "demo: ok"
