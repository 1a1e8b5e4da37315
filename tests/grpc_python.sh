#!/usr/bin/env bash
# Python grpcio (default options: the socket path as :authority) calls `proxmox-csi node`
# over its unix socket. grpcio comes from PyPI into a venv under target/tools (Debian's
# python3-grpcio is older than 1.57, which sends "localhost" and so would prove nothing).
# Usage: bash tests/grpc_python.sh   (after `cargo build --bins`; needs python3-venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/target/tools/pyvenv"
WORK="$(mktemp -d /tmp/proxmox-csi-grpcio.XXXXXX)"
PID=
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import grpc' 2>/dev/null; then
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'grpcio>=1.57'
fi
"$ROOT/target/debug/proxmox-csi" node --endpoint "unix://$WORK/csi.sock" --node-id worker-1 \
    --region sim --zone pve1 --device-dir "$WORK" >"$WORK/driver.log" 2>&1 &
PID=$!
for _ in $(seq 50); do [ -S "$WORK/csi.sock" ] && break; sleep 0.1; done
if ! "$VENV/bin/python" "$ROOT/tests/grpc_python.py" "$WORK/csi.sock"; then
    echo "---- driver log ----"; cat "$WORK/driver.log"
    exit 1
fi
