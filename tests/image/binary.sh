#!/usr/bin/env bash
# The image's binary carries the driver only. Builds proxmox-csi with exactly the `cargo build`
# command of the Dockerfile's build stage (read from the Dockerfile, so the two cannot drift),
# then checks that nothing of the simulator, the sandbox or the bench is in it: no pve_sim
# symbol or source path, no simulator route, no sandbox/bench subcommand. The same checks run
# on the default (dev) build first and must find all of it there, so they can fail.
# Usage: bash tests/image/binary.sh     (prints "image binary: N passed, N failed")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

PASSED=0; FAILED=0
check() { # check NAME CMD...: counts one test
    local name="$1"; shift
    if "$@"; then PASSED=$((PASSED + 1)); echo "PASS  $name"; else FAILED=$((FAILED + 1)); echo "FAIL  $name"; fi
}

# The build stage's cargo command: from `cargo build` to the end of its line, without the
# trailing `\` continuation.
BUILD_CMD=$(sed -n '/^FROM .* AS build/,/^FROM /p' Dockerfile | grep -o 'cargo build[^\\&]*' | head -1 | sed 's/[[:space:]]*$//')
check "Dockerfile has a cargo build command" test -n "$BUILD_CMD"
check "Dockerfile builds without the dev feature" grep -q -- '--no-default-features' <<<"$BUILD_CMD"
check "Dockerfile installs the binary it builds" grep -q 'install .*target/release/proxmox-csi' Dockerfile

# Markers of the test world in a binary: the simulator crate's symbols and source paths,
# one of its control routes, the sandbox and bench modules.
has_sim() { grep -a -q -e 'pve_sim' -e 'tests/pve-sim/src' -e '/_sim/faults' "$1"; }
has_devtools() { grep -a -q -e 'src/sandbox' -e 'src/bench' "$1"; }
lacks() { ! "$1" "$2"; }
subcommands() { "$1" --help | sed -n '/^Commands:/,/^$/p' | awk 'NR>1 && NF {print $1}' | sort | tr '\n' ' '; }

echo "==> default build (with dev tools): the checks must find them"
cargo build --bin proxmox-csi 2>&1 | tail -1
DEV="$ROOT/target/debug/proxmox-csi"
check "dev build: simulator found" has_sim "$DEV"
check "dev build: sandbox/bench found" has_devtools "$DEV"
check "dev build: sandbox subcommand listed" grep -q sandbox <<<"$(subcommands "$DEV")"

echo "==> image build: $BUILD_CMD"
start=$(date +%s)
eval "$BUILD_CMD" 2>&1 | tail -1
echo "built in $(( $(date +%s) - start )) s"
IMG="$ROOT/target/release/proxmox-csi"
echo "size: $(stat -c %s "$IMG") bytes"
check "image binary: no simulator code" lacks has_sim "$IMG"
check "image binary: no sandbox/bench code" lacks has_devtools "$IMG"
check "image binary: subcommands are all controller doctor help node" test "$(subcommands "$IMG")" = "all controller doctor help node "
out=$("$IMG" sandbox 2>&1 || true)
check "image binary: 'sandbox' is refused" grep -q "unrecognized subcommand 'sandbox'" <<<"$out"

echo "image binary: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
