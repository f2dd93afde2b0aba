#!/bin/bash
# Prints the path of a fresh Debian 12 root for the real-systemd e2e test, unpacked into the empty
# directory $1 from a cached tarball, or debootstrapped (and then cached) on the first run.
#
# The cache key is the ISO week (a weekly refresh picks up security updates) plus a hash of the
# package list, so changing the list below invalidates the cache by itself.
#   usage: rootfs.sh DIR          env: CCSYNC_CI_CACHE (default /var/cache/ccsync-ci)
set -euo pipefail

root=${1:?usage: rootfs.sh DIR}
cache=${CCSYNC_CI_CACHE:-/var/cache/ccsync-ci}
suite=bookworm

# systemd as PID 1; procps for ExecReload's /bin/kill; the daemon's runtime libraries (so the
# .deb installs with plain dpkg -i, no apt lists needed); python3 + yaml + jsonschema + openssl
# for the fake Constant Contact.
packages=(systemd systemd-sysv dbus procps
	  libuv1 libcurl4 libjansson4 libsqlite3-0 libinih1 ca-certificates
	  python3 python3-yaml python3-jsonschema openssl)

key=$(printf '%s\n' "$suite" "${packages[@]}" | sha256sum | cut -c1-10)
tarball=$cache/rootfs-$suite-$(date +%G-W%V)-$key.tar.zst

mkdir -p "$cache" "$root"
if [[ -s $tarball ]]; then
	zstd -dcq "$tarball" | tar -C "$root" -xf -
	echo "rootfs: unpacked $tarball" >&2
	exit 0
fi

mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}
echo "rootfs: debootstrap $suite from $mirror (cold cache, about a minute)" >&2
log=$(mktemp /tmp/ccsync-debootstrap.XXXXXX.log)
if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
	"$suite" "$root" "$mirror" >"$log" 2>&1; then
	tail -20 "$log" >&2
	echo "rootfs: debootstrap failed (full log: $log)" >&2
	exit 1
fi
rm -f "$log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/journal/* \
	"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
: >"$root/etc/machine-id" # a fresh machine id at every boot
# Write the tarball under a temporary name and rename it: a concurrent run never sees half of it.
tmp=$(mktemp "$cache/.rootfs.XXXXXX")
tar -C "$root" -cf - . | zstd -T0 -q -f -o "$tmp"
mv -f "$tmp" "$tarball"
find "$cache" -maxdepth 1 -name "rootfs-$suite-*.tar.zst" ! -path "$tarball" -delete
echo "rootfs: cached $tarball ($(du -h "$tarball" | cut -f1))" >&2
