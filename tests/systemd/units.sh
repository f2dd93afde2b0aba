#!/bin/bash
# Static checks of the generated units (suite "systemd"):
#   units.sh verify   SERVICE SOCKET CCSYNCD MANDIR...  systemd-analyze verify, failing on ANY output
#   units.sh security SERVICE MAX                       systemd-analyze security --offline, exposure <= MAX
# systemd-analyze verify exits 0 on "Unknown key" and "Failed to parse" warnings, so any output at
# all is a failure. It also insists that ExecStart= is executable, so the unit is checked with
# ExecStart= pointing at the freshly built ccsyncd; with the built man pages on MANPATH it also
# checks that every Documentation=man:... page exists.
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
command -v systemd-analyze >/dev/null || skip "systemd-analyze not installed (package systemd)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case ${1:-} in
verify)
	# meson passes built targets relative to the build directory: make every path absolute.
	service=$(realpath -e "$2") socket=$(realpath -e "$3") ccsyncd=$(realpath -e "$4")
	shift 4
	pages=()
	for page in "$@"; do pages+=("$(realpath -e "$page")"); done
	set -- "${pages[@]}"
	sed "s|^ExecStart=.*/ccsyncd\b|ExecStart=$ccsyncd|" "$service" >"$tmp/ccsync.service"
	grep -q "^ExecStart=$ccsyncd" "$tmp/ccsync.service" || { echo "no ExecStart= line to rewrite"; exit 1; }
	cp "$socket" "$tmp/ccsync.socket"
	man_opt=--man=no
	if command -v man >/dev/null && (($#)); then
		# Documentation=man:... must resolve against the pages this build generated.
		for page in "$@"; do
			install -D -m644 "$page" "$tmp/man/man${page##*.}/$(basename "$page")"
		done
		export MANPATH=$tmp/man
		man_opt=--man=yes
	fi
	cd "$tmp"
	set +e
	out=$(systemd-analyze verify "$man_opt" ./ccsync.service ./ccsync.socket 2>&1)
	rc=$?
	set -e
	if ((rc != 0)) || [[ -n $out ]]; then
		echo "systemd-analyze verify (rc=$rc) reported:"
		echo "$out"
		exit 1
	fi
	echo "systemd-analyze verify $man_opt: ccsync.service ccsync.socket clean"
	;;
security)
	service=$(realpath -e "$2") max=$3
	cp "$service" "$tmp/ccsync.service"
	cd "$tmp"
	# --threshold is exposure x 10 on a 0..100 scale; the command fails above it.
	threshold=$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 }')
	set +e
	out=$(systemd-analyze security --offline=yes --no-pager --threshold="$threshold" \
		./ccsync.service 2>&1)
	rc=$?
	set -e
	echo "$out" | grep -v '^✓' || true
	if ((rc != 0)); then
		echo "exposure above $max (systemd-analyze security rc=$rc)"
		exit 1
	fi
	# Any warning other than the table (e.g. an unparsable directive) is a failure too.
	if echo "$out" | grep -v -E '^(✓|✗|  NAME|→|$)' | grep -q .; then
		echo "unexpected output from systemd-analyze security"
		exit 1
	fi
	;;
*)
	echo "usage: units.sh verify SERVICE SOCKET CCSYNCD [MANPAGE...] | security SERVICE MAX" >&2
	exit 2
	;;
esac
