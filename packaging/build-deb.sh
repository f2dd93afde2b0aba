#!/bin/bash
# Builds the Debian package out of a copy of the source tree, so the checkout stays untouched:
#   packaging/build-deb.sh OUTDIR [--nocheck]
# The copy holds the files git knows or would add (tracked and untracked, not ignored), with
# packaging/debian as debian/. OUTDIR receives the .deb, .changes and .buildinfo files; the last
# line printed is the path of the .deb. --nocheck skips the test suites (DEB_BUILD_OPTIONS and
# DEB_BUILD_PROFILES nocheck), for callers that have just run them.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: build-deb.sh OUTDIR [--nocheck]}
nocheck=0
[[ ${2:-} == --nocheck ]] && nocheck=1
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(sed -n "s/^\s*version: '\([^']*\)'.*/\1/p" "$src/meson.build" | head -1)
work=$(mktemp -d /tmp/ccsync-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree=$work/ccsync-$version
mkdir -p "$tree"

if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# Tracked files that were deleted in the working tree are left out.
	(cd "$src" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 -I{} sh -c '[ -e "$1" ] && printf "%s\0" "$1"' _ {}) |
		tar -C "$src" --null -T - -cf - | tar -C "$tree" -xf -
else
	tar -C "$src" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$tree" -xf -
fi
rm -rf "$tree/debian"
cp -r "$tree/packaging/debian" "$tree/debian"

opts=(-b -us -uc)
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-} parallel=$(nproc)"
if ((nocheck)); then
	opts+=(-Pnocheck)
	DEB_BUILD_OPTIONS+=" nocheck"
fi
log=$work/dpkg-buildpackage.log
if ! (cd "$tree" && dpkg-buildpackage "${opts[@]}") >"$log" 2>&1; then
	tail -40 "$log"
	cp "$log" "$out/"
	echo "build-deb: dpkg-buildpackage failed (log: $out/dpkg-buildpackage.log)" >&2
	exit 1
fi
cp "$log" "$out/"
for f in "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo; do
	[[ -e $f ]] && cp "$f" "$out/"
done
for deb in "$out"/ccsync_"$version"-*_*.deb; do
	echo "$deb"
done
