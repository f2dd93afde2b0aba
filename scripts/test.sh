#!/bin/bash
# The README's test command: installs what is needed, builds with warnings as errors and runs
# every suite (unit, integration, fuzz smoke runs, systemd checks).
# Usage: scripts/test.sh [BUILD_DIR] [extra meson setup args...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true

scripts/install-deps.sh
if [[ ! -f "$build/build.ninja" ]]; then
	meson setup "$build" -Dwerror=true "$@"
fi
meson compile -C "$build"
meson test -C "$build" --print-errorlogs --num-processes 2
