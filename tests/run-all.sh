#!/usr/bin/env bash
# Runs every test of proxmox-csi on this machine, installing what it needs:
#   0. cargo fmt --check and cargo clippy --all-targets -D warnings (each counts as one test),
#   1. Debian packages for the node tests and the simulator (mkfs, loop, qemu-img),
#   2. csi-sanity (kubernetes-csi/csi-test) with `go install`,
#   3. `cargo test` (unit, simulator, controller and node tests; node tests need root),
#   4. csi-sanity against `proxmox-csi all` + `pve-sim` per storage type: mount and block volumes
#      on lvmthin and rbd, mount on zfspool, thick lvm, dir (raw and qcow2) and nfs (tests/sanity.sh);
#      and for two tenants at once on one pve-sim (tests/sanity-tenants.sh: scoped privsep tokens,
#      pools, cluster ids; each tenant's run counts, plus the check that no holder is left),
#   5. a Python grpcio client on the CSI socket (grpcio from PyPI into a venv),
#   6. the Helm chart and its monitoring objects (tests/chart.sh: helm lint/template,
#      promtool check/test rules, dashboard and metric-name checks; pinned helm and
#      promtool built with `go install`/`go build` into target/tools),
#   7. the image's binary, built with the Dockerfile's own cargo command, has no simulator,
#      sandbox or bench in it (tests/image/binary.sh),
#   8. the driver under a real Kubernetes, installed with its Helm chart (tests/e2e/kubernetes.sh;
#      builds Kubernetes, etcd and the CSI sidecars from the Go module proxy once, cached in
#      /var/cache/proxmox-csi-e2e),
#   9. a real guest kernel (tests/e2e/qemu.sh): worker VM in QEMU (KVM, else TCG), hot-plug over
#      QMP, node plugin in the guest: csi-sanity's node tests, ext4/xfs online grow, LUKS2, raw
#      block, udev by-id links (installs qemu-system-x86, debootstrap, cpio, socat; the guest
#      is built from Debian packages once and cached under target/e2e).
# Usage: sudo bash tests/run-all.sh        (CI runs exactly this)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SANITY_VERSION=v5.4.0
TOOLS="$ROOT/target/tools"
export PATH="$TOOLS:$HOME/.cargo/bin:/usr/local/go/bin:$PATH"

log() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "run-all.sh must run as root (node tests use loop devices, mkfs and mount)" >&2
    exit 1
fi

install_packages() {
    local want=(e2fsprogs xfsprogs util-linux mount qemu-utils cryptsetup-bin bc curl python3-venv python3-yaml)
    local missing=()
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # The QEMU guest test (and pve-sim's QMP unit test): without recommends, which for
    # qemu-system-x86 would bring a desktop's worth of GUI libraries.
    missing=()
    for p in qemu-system-x86 debootstrap cpio socat; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    [ -e /dev/loop-control ] || modprobe loop || true
}

install_sanity() {
    if [ ! -x "$TOOLS/csi-sanity" ]; then
        log "installing csi-sanity $SANITY_VERSION"
        command -v go >/dev/null || { echo "go is required to install csi-sanity" >&2; exit 1; }
        GOBIN="$TOOLS" go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$SANITY_VERSION"
    fi
}

PASSED=0; FAILED=0; SKIPPED=0
count_cargo() { # sums "test result:" lines of a cargo test log
    local p f i
    p=$(grep -E '^test result:' "$1" | sed -E 's/.* ([0-9]+) passed.*/\1/' | paste -sd+ | bc)
    f=$(grep -E '^test result:' "$1" | sed -E 's/.* ([0-9]+) failed.*/\1/' | paste -sd+ | bc)
    i=$(grep -E '^test result:' "$1" | sed -E 's/.* ([0-9]+) ignored.*/\1/' | paste -sd+ | bc)
    PASSED=$((PASSED + ${p:-0})); FAILED=$((FAILED + ${f:-0})); SKIPPED=$((SKIPPED + ${i:-0}))
}
count_line() { # count_line LABEL LOG: a script's last "LABEL: N passed, N failed" line
    local line
    line=$(grep -E "^$1: [0-9]+ passed, [0-9]+ failed" "$2" | tail -1 || true)
    if [ -z "$line" ]; then FAILED=$((FAILED + 1)); return; fi
    PASSED=$((PASSED + $(sed -E "s/^$1: ([0-9]+) passed.*/\1/" <<<"$line")))
    FAILED=$((FAILED + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")))
}
count_e2e() { # "12 passed, 0 failed, 1 skipped", the last line of tests/e2e/kubernetes.sh
    local line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$1" | tail -1 || true)
    if [ -z "$line" ]; then FAILED=$((FAILED + 1)); return; fi
    read -r p _ f _ i _ <<<"${line//,/}"
    PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + i))
}
count_ginkgo() { # "Ran 60 of 90 Specs" + "SUCCESS! -- 60 Passed | 0 Failed | 0 Pending | 30 Skipped"
    local line
    line=$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "$1" | tail -1 || true)
    if [ -z "$line" ]; then FAILED=$((FAILED + 1)); return; fi
    PASSED=$((PASSED + $(sed -E 's/.* ([0-9]+) Passed.*/\1/' <<<"$line")))
    FAILED=$((FAILED + $(sed -E 's/.* ([0-9]+) Failed.*/\1/' <<<"$line")))
    SKIPPED=$((SKIPPED + $(sed -E 's/.* ([0-9]+) Skipped.*/\1/' <<<"$line")))
}

install_packages
install_sanity
LOG_DIR="$(mktemp -d /tmp/proxmox-csi-tests.XXXXXX)"
START=$(date +%s)

# The Go tools of the later steps (helm, promtool, the Kubernetes components of the end to end)
# and the QEMU test's guest image build in the background, at low priority, while the Rust steps run: much of a cold build is
# module download, and much of the Rust steps is waiting on mkfs, mount and sleeps, so the two
# overlap well on two cores. Each later step builds what is still missing itself (all cached).
log "building the Go tools in the background (log: $LOG_DIR/go-tools.log)"
(
    set +e
    nice -n 10 bash -c "source '$ROOT/tests/tools/ensure.sh'; ensure_helm && ensure_promtool"
    nice -n 10 bash "$ROOT/tests/e2e/guest.sh" "${PROXMOX_CSI_E2E_CACHE:-$ROOT/target/e2e}"
    source "$ROOT/tests/e2e/components.sh"
    e2e_components
) >"$LOG_DIR/go-tools.log" 2>&1 &
GO_TOOLS_PID=$!

log "cargo fmt --check, cargo clippy"
STATUS=0
if cargo fmt --check >/dev/null 2>&1; then PASSED=$((PASSED + 1)); echo "fmt: clean"; else FAILED=$((FAILED + 1)); echo "fmt: cargo fmt --check reports differences"; cargo fmt --check | head -40; fi
if cargo clippy --all-targets -- -D warnings 2>&1 | tail -20; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi

log "building"
cargo build --bins --tests 2>&1 | tail -3

log "cargo test"
if ! cargo test --no-fail-fast 2>&1 | tee "$LOG_DIR/cargo-test.log"; then STATUS=1; fi
count_cargo "$LOG_DIR/cargo-test.log"

# One run per PVE storage type (tests/sanity-sim.yaml): mount and block on lvmthin and rbd,
# mount on the others (~20 s each). Specs a storage type cannot pass for want of a PVE feature
# are skipped by tests/sanity.sh, which prints why.
SANITY_RUNS=${SANITY_RUNS:-"mount:local-lvm block:local-lvm mount:ceph block:ceph mount:local-zfs mount:san mount:local-dir mount:local-dir:qcow2 mount:nfs"}
for run in $SANITY_RUNS; do
    IFS=: read -r access storage format <<<"$run"
    log "csi-sanity ($access volumes on $storage${format:+, $format})"
    LOG="$LOG_DIR/sanity-$storage${format:+-$format}-$access.log"
    if ! bash "$ROOT/tests/sanity.sh" "$access" "$storage" "${format:-raw}" 2>&1 | tee "$LOG"; then STATUS=1; fi
    count_ginkgo "$LOG"
done

log "csi-sanity, two tenants at once on one simulator (tests/sanity-tenants.sh)"
if ! bash "$ROOT/tests/sanity-tenants.sh" mount 2>&1 | tee "$LOG_DIR/sanity-tenants.log"; then STATUS=1; fi
for t in a b; do
    grep "^tenant $t: " "$LOG_DIR/sanity-tenants.log" >"$LOG_DIR/sanity-tenant-$t.log" || true
    count_ginkgo "$LOG_DIR/sanity-tenant-$t.log"
done
if grep -qx "holder VMs left after both runs: 0" "$LOG_DIR/sanity-tenants.log"; then
    PASSED=$((PASSED + 1))
else
    FAILED=$((FAILED + 1))
fi

log "python grpcio client"
if bash "$ROOT/tests/grpc_python.sh" 2>&1 | tee "$LOG_DIR/grpc-python.log"; then
    PASSED=$((PASSED + 1))
else
    FAILED=$((FAILED + 1)); STATUS=1
fi

log "waiting for the background Go builds ($(( $(date +%s) - START )) s so far)"
wait "$GO_TOOLS_PID" || echo "background Go builds failed (see $LOG_DIR/go-tools.log); the next steps build what is missing"
tail -3 "$LOG_DIR/go-tools.log"

log "helm chart and monitoring (helm lint/template, promtool)"
if ! bash "$ROOT/tests/chart.sh" 2>&1 | tee "$LOG_DIR/chart.log"; then STATUS=1; fi
count_line chart "$LOG_DIR/chart.log"

log "the image's binary: built as the Dockerfile builds it, without the simulator"
if ! bash "$ROOT/tests/image/binary.sh" 2>&1 | tee "$LOG_DIR/image-binary.log"; then STATUS=1; fi
count_line "image binary" "$LOG_DIR/image-binary.log"

log "kubernetes end to end (tests/e2e/kubernetes.sh)"
if ! bash "$ROOT/tests/e2e/kubernetes.sh" 2>&1 | tee "$LOG_DIR/e2e-kubernetes.log"; then STATUS=1; fi
count_e2e "$LOG_DIR/e2e-kubernetes.log"

log "real guest kernel: QEMU worker VM (tests/e2e/qemu.sh)"
if ! bash "$ROOT/tests/e2e/qemu.sh" 2>&1 | tee "$LOG_DIR/qemu.log"; then STATUS=1; fi
count_line qemu "$LOG_DIR/qemu.log"

log "summary (logs in $LOG_DIR)"
echo "total: $PASSED passed, $FAILED failed, $SKIPPED skipped ($(( $(date +%s) - START )) s)"
if [ "$FAILED" -gt 0 ]; then STATUS=1; fi
exit $STATUS
