#!/bin/sh
# Installs what anodet needs on a Debian machine: Deno (from npm) and, when no GPU adapter is
# found, Mesa's software Vulkan driver (lavapipe). Runs as root without sudo (as in containers),
# or as a user with sudo. `sh setup.sh --print` prints the commands instead of running them.
set -eu

print_only=false
[ "${1:-}" = "--print" ] && print_only=true

if [ "$(id -u)" = 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "setup.sh: run as root, or install sudo (apt-get needs root)" >&2
  exit 1
fi

run() {
  if $print_only; then echo "$*"; else "$@"; fi
}

run $as_root apt-get update
# Debian's nodejs brings npm as its own package; NodeSource's nodejs has npm built in and
# conflicts with Debian's, so npm is only installed when it is missing.
if ! command -v npm >/dev/null 2>&1; then
  run $as_root apt-get install -y nodejs npm
fi
if ! command -v deno >/dev/null 2>&1; then
  run $as_root npm install -g deno
fi
# Without a GPU driver there is no WebGPU adapter; lavapipe runs everything on the CPU instead.
if ! command -v deno >/dev/null 2>&1 ||
  ! XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} deno eval \
    'Deno.exit((await navigator.gpu?.requestAdapter()) ? 0 : 1)' >/dev/null 2>&1; then
  run $as_root apt-get install -y mesa-vulkan-drivers
fi
$print_only || echo "setup.sh: ready; try: deno task train carpet"
