#!/bin/bash
# Installs everything ccsync needs to build, test and run its demo on Debian 12 (as root).
# Idempotent: packages already present are left alone, and apt is asked only when one is missing.
set -euo pipefail

packages=(
	# build
	build-essential meson ninja-build pkg-config python3
	libuv1-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev libsystemd-dev libinih-dev
	# tests, fake Constant Contact, fuzzing, docs
	libcmocka-dev clang python3-yaml python3-jsonschema openssl sqlite3 tzdata ca-certificates
	scdoc valgrind systemd
	# packaging checks
	debhelper devscripts lintian fakeroot rpm procps
)
if [[ "${CCSYNC_WITH_CONTAINER_DEPS:-1}" == 1 ]]; then
	# real-systemd end-to-end test (systemd-nspawn over a debootstrapped Debian 12 root)
	packages+=(systemd-container debootstrap iproute2 zstd)
fi

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
		exit 1
	fi
	echo "install-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: all build, test and demo dependencies present"
