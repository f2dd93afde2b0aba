#!/bin/bash
# Real-systemd end-to-end test of the ccsync package: boots Debian 12 with systemd as PID 1 in a
# systemd-nspawn container, installs the .deb there and runs e2e-inner.sh (as e2e.service) against
# it. Works on hosts whose own PID 1 is not systemd (see /work/shared/systemd-testing.md).
#
#   tests/systemd/e2e.sh [--deb FILE] [--out DIR] [--testlog FILE] [--keep]
#
# --deb   use this package instead of building one (packaging/build-deb.sh, out of a copy of the
#         tree, tests skipped: the suites ran already)
# --out   where the artifacts go (e2e.log, console.log, ccsync.journal.txt, journal/); default a
#         new directory under /tmp
# --testlog  write the verdict as one meson testlog.json line (name "systemd / e2e"), so .ci/run
#         can count it with the meson suites
# --keep  keep the unpacked root for inspection
# Env: CCSYNC_CI_CACHE (default /var/cache/ccsync-ci) caches the debootstrapped root (rootfs.sh).
#
# Exit status: the test's (0 pass, 1 fail); 77 with a message where this host cannot run nspawn.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
deb='' out='' testlog='' keep=0
while (($#)); do
	case $1 in
	--deb) deb=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--testlog) testlog=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	*) echo "usage: e2e.sh [--deb FILE] [--out DIR] [--testlog FILE] [--keep]" >&2; exit 2 ;;
	esac
done
t_start=$(date +%s)
t() { echo "[e2e +$(($(date +%s) - t_start))s] $*"; }
write_testlog() { # write_testlog RC: the verdict for --testlog, once
	[[ -n $testlog && -z ${testlog_written:-} ]] || return 0
	testlog_written=1
	local result=OK
	(($1 == 77)) && result=SKIP
	(($1 != 0 && $1 != 77)) && result=FAIL
	mkdir -p "$(dirname "$testlog")"
	printf '{"name": "systemd / e2e", "suite": ["systemd"], "result": "%s", "returncode": %d, "duration": %d}\n' \
		"$result" "$1" $(($(date +%s) - t_start)) >"$testlog"
}
verdict() { write_testlog "$1"; exit "$1"; }
# Any other exit (a failed step under set -e) is a failure, and recorded as one.
trap 'write_testlog $?' EXIT
skip() { echo "SKIP: e2e: $*"; verdict 77; }

if [[ -n $deb ]]; then
	deb=$(realpath -e "$deb") || { echo "e2e: --deb: no such file" >&2; verdict 1; }
fi

# 1. Can this host run a container with systemd inside at all?
[[ $(id -u) == 0 ]] || skip "needs root (systemd-nspawn boots a container)"
if [[ -d /sys/fs/cgroup/unified ]]; then
	cg_roots=(/sys/fs/cgroup/systemd /sys/fs/cgroup/unified) # hybrid layout
else
	cg_roots=(/sys/fs/cgroup)                                # pure cgroup v2
fi
for r in "${cg_roots[@]}"; do
	[[ -w $r/cgroup.procs ]] || skip "cgroup hierarchy $r is not writable (unprivileged container?)"
done
unshare --mount --pid --fork true 2>/dev/null || skip "cannot create mount/PID namespaces here"
missing=()
for tool in systemd-nspawn debootstrap zstd dpkg-buildpackage; do
	command -v $tool >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
	echo "e2e: missing ${missing[*]}: run scripts/install-deps.sh (as root)" >&2
	verdict 1
fi

work=$(mktemp -d /tmp/ccsync-e2e.XXXXXX)
out=${out:-$work/out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out"/{e2e.log,console.log,dpkg.log,fakecc.log,ccsync.journal.txt,ccsync.conf.orig,journal}
root=$work/root
machine=ccsync-e2e-$$
cg=ccsync-e2e-$$

cleanup() {
	local rc=$?
	write_testlog "$rc"
	# Anything left in our cgroups is the container's (only if nspawn died hard): kill it.
	local r f p
	for r in "${cg_roots[@]}"; do
		[[ -d $r/$cg ]] || continue
		while read -r f; do
			while read -r p; do
				[[ $p == "$BASHPID" ]] || kill -KILL "$p" 2>/dev/null || true
			done <"$f"
		done < <(find "$r/$cg" -name cgroup.procs)
		echo "$BASHPID" >"$r/cgroup.procs"
	done
	sleep 0.2
	for r in "${cg_roots[@]}"; do
		[[ -d $r/$cg ]] && find "$r/$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
	if ((keep)); then
		echo "e2e: root kept at $root"
	else
		rm -rf "$root"
	fi
	rm -rf "$work/deb"
	rmdir "$work" 2>/dev/null || true # empty unless the artifacts went there
}
trap cleanup EXIT

# 2. The package (built from a copy of the tree) and the root (cached).
if [[ -z $deb ]]; then
	t "building the .deb (packaging/build-deb.sh --nocheck)"
	deb=$("$src/packaging/build-deb.sh" "$work/deb" --nocheck | tail -1)
fi
t "package: $(basename "$deb")"
t "preparing the root"
"$here/rootfs.sh" "$root"

install -D -m644 "$deb" "$root/opt/ccsync-e2e/$(basename "$deb")"
cp -r "$src/tests/fakecc" "$root/opt/ccsync-e2e/fakecc"
rm -rf "$root/opt/ccsync-e2e/fakecc/__pycache__"
install -D -m755 "$here/e2e-inner.sh" "$root/usr/local/bin/ccsync-e2e"
install -D -m644 "$here/e2e.service" "$root/etc/systemd/system/e2e.service"
mkdir -p "$root/out"

# 3. Boot. nspawn's own cgroups go below ours (--keep-unit), so the cleanup finds them all.
t "booting the container ($machine)"
for r in "${cg_roots[@]}"; do
	mkdir -p "$r/$cg"
	echo "$BASHPID" >"$r/$cg/cgroup.procs"
done
set +e
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 timeout -k 15 300 \
	unshare --mount --propagation private sh -c '
	mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn &&
	exec systemd-nspawn --quiet --directory="$1" --machine="$2" --register=no --keep-unit \
		--console=read-only --volatile=overlay --bind="$3":/out \
		--boot systemd.wants=e2e.service systemd.mask=console-getty.service \
		systemd.show_status=no' _ "$root" "$machine" "$out" >"$out/console.log" 2>&1
rc=$?
set -e
for r in "${cg_roots[@]}"; do echo "$BASHPID" >"$r/cgroup.procs"; done

grep -E '^(PASS|FAIL|SKIP|RESULT|===|systemctl |socket-activated|watchdog restart|systemd-analyze)' \
	"$out/e2e.log" 2>/dev/null || { echo "e2e: no e2e.log; console:"; tail -40 "$out/console.log"; }
t "container exit status $rc; artifacts in $out (journalctl -D $out/journal -u ccsync)"
if ((rc != 0)) && [[ -f $out/e2e.log ]] && ! grep -q '^RESULT' "$out/e2e.log"; then
	echo "e2e: the test did not finish; last lines of the console:"
	tail -20 "$out/console.log"
fi
((rc == 0)) || rc=1
verdict $rc
