#!/bin/bash
# The Debian package builds out of a copy of the tree, holds what it should, and lintian reports
# no errors. The .deb is left in OUTDIR for the container test (tests/systemd/e2e.sh --deb).
#   deb.sh SOURCE_ROOT OUTDIR
set -euo pipefail
src=${1:?usage: deb.sh SOURCE_ROOT OUTDIR} out=${2:?usage: deb.sh SOURCE_ROOT OUTDIR}

for tool in dpkg-buildpackage dh lintian fakeroot; do
	command -v $tool >/dev/null ||
		{ echo "SKIP: $tool not installed (scripts/install-deps.sh installs it)"; exit 77; }
done

rm -rf "$out"
deb=$("$src/packaging/build-deb.sh" "$out" --nocheck | tail -1)
echo "built $deb"

contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
missing=0
for f in ./usr/sbin/ccsyncd ./usr/bin/ccsyncctl ./etc/ccsync/ccsync.conf \
	./lib/systemd/system/ccsync.service ./lib/systemd/system/ccsync.socket \
	./usr/lib/sysusers.d/ccsync.conf ./usr/lib/tmpfiles.d/ccsync.conf \
	./usr/lib/systemd/catalog/ccsync.catalog ./usr/share/bash-completion/completions/ccsyncctl \
	./usr/share/man/man8/ccsyncd.8.gz ./usr/share/man/man1/ccsyncctl.1.gz \
	./usr/share/man/man5/ccsync.conf.5.gz ./usr/share/doc/ccsync/copyright; do
	grep -qxF "$f" <<<"$contents" || { echo "missing from the package: $f"; missing=1; }
done
((missing == 0)) || exit 1

ctl=$(mktemp -d)
trap 'rm -rf "$ctl"' EXIT
dpkg-deb -e "$deb" "$ctl"
grep -qxF /etc/ccsync/ccsync.conf "$ctl/conffiles" || { echo "ccsync.conf is not a conffile"; exit 1; }
for snippet in "systemd-sysusers" "systemd-tmpfiles" "deb-systemd-helper enable 'ccsync.socket'" \
	"deb-systemd-helper enable 'ccsync.service'"; do
	grep -qF "$snippet" "$ctl/postinst" || { echo "postinst lacks: $snippet"; exit 1; }
done

# lintian: errors fail the test; warnings and info are shown for the reader.
set +e
lint=$(lintian --fail-on error "${deb%.deb}.changes" 2>&1)
rc=$?
set -e
grep -v 'running with root privileges is not recommended' <<<"$lint" || true
((rc == 0)) || { echo "lintian reported errors (rc=$rc)"; exit 1; }
echo "package ok: $(basename "$deb")"
