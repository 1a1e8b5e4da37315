#!/usr/bin/env bash
# End to end with a real guest kernel: pve-sim runs worker VM 101 (worker-1) as a QEMU process
# (KVM when /dev/kvm works, else TCG) and hot-plugs disks into it over QMP the way qemu-server
# does; the node plugin runs inside the guest, where udev makes /dev/disk/by-id; the controller
# runs on the host against pve-sim (and, for csi-sanity, in the guest too). Then:
#   1. csi-sanity's Node Service tests, target and staging paths made inside the guest,
#   2. the scenario in tests/qemu_guest.rs (ext4/xfs stage, checksum, online grow, LUKS2,
#      raw block, unplug while mounted, udev-made links only).
# Prints each step's duration and the accelerator, and ends with "qemu: N passed, N failed".
# The guest (Debian kernel + debootstrap root) is built once and cached (tests/e2e/guest.sh).
# Usage: sudo bash tests/e2e/qemu.sh   (after `cargo build --bins`; installs qemu-system-x86,
#        debootstrap, cpio and socat with apt if missing)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/target/debug"
SANITY="${CSI_SANITY:-$ROOT/target/tools/csi-sanity}"
CACHE="${PROXMOX_CSI_E2E_CACHE:-$ROOT/target/e2e}"
WORK="$(mktemp -d /tmp/proxmox-csi-qemu.XXXXXX)"
PORT=$((20000 + RANDOM % 10000))
NODE_PORT=$((PORT + 10000))
SHELL_PORT=$((PORT + 20000))
PIDS=()
PASSED=0
FAILED=0
T_START=$(date +%s.%N)

step_start() { STEP_NAME="$1"; STEP_T0=$(date +%s.%N); echo "--> $1"; }
step_end() { # step_end ok|fail
    local secs
    secs=$(echo "$(date +%s.%N) - $STEP_T0" | bc)
    printf 'step %-34s %-4s %7.2f s\n' "$STEP_NAME" "$1" "$secs"
    if [ "$1" = ok ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
}

cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # pve-sim quits its QEMU on SIGTERM; one that survived a crash is killed by its pid file.
    for pidf in "$WORK"/sim/qemu/*/qemu.pid; do
        [ -f "$pidf" ] && kill -9 "$(cat "$pidf")" 2>/dev/null || true
    done
    grep -F "$WORK" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    # The logs of the last run stay for a look afterwards.
    rm -rf "$CACHE/last-run" && mkdir -p "$CACHE/last-run"
    cp "$WORK"/*.log "$WORK"/sim/qemu/*/console.log "$CACHE/last-run/" 2>/dev/null || true
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v cpio >/dev/null || need+=(cpio)
command -v socat >/dev/null || need+=(socat)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- the guest image (cached) and this run's initramfs (node plugin + /init on top)
step_start "guest image (build or cache)"
GUEST=$(bash "$ROOT/tests/e2e/guest.sh" "$CACHE")
step_end ok
mkdir -p "$WORK/overlay/opt/proxmox-csi"
install -m 0755 "$ROOT/tests/e2e/guest-init.sh" "$WORK/overlay/init"
cp "$BIN/proxmox-csi" "$WORK/overlay/opt/proxmox-csi/"
# Each archive compressed on its own: the kernel unpacks concatenated gzip archives in turn.
(cd "$WORK/overlay" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$WORK/overlay.cpio.gz"
cat "$GUEST/base.cpio.gz" "$WORK/overlay.cpio.gz" >"$WORK/initrd"
rm -rf "$WORK/overlay" "$WORK/overlay.cpio.gz"

# KVM when it really runs a Linux guest: /dev/kvm can be there (nested virtualization) and
# still not get a kernel past its real-mode setup. The probe boots the kernel alone (it panics
# at once for want of a root file system) and looks for its banner on the serial console.
ACCEL="${QEMU_ACCEL:-}"
if [ -z "$ACCEL" ]; then
    step_start "KVM probe"
    ACCEL=tcg
    if [ -e /dev/kvm ]; then
        timeout 20 qemu-system-x86_64 -machine pc -nodefaults -display none -m 256 -accel kvm -cpu host \
            -kernel "$GUEST/vmlinuz" -append "console=ttyS0 panic=-1" -serial "file:$WORK/kvm-probe.log" \
            -no-reboot -monitor none >/dev/null 2>&1 || true
        if grep -q "Linux version" "$WORK/kvm-probe.log" 2>/dev/null; then ACCEL=kvm; fi
    fi
    step_end ok
    if [ "$ACCEL" = tcg ]; then
        if [ -e /dev/kvm ]; then why="/dev/kvm is there but the kernel did not start under KVM in 20 s"
        else why="no /dev/kvm"; fi
        echo "accelerator: TCG ($why)"
    fi
fi

# ---- pve-sim with VM 101 in QEMU
cat >"$WORK/sim.yaml" <<YAML
nodes: [pve1, pve2]
vms:
  - vmid: 101
    name: worker-1
    node: pve1
    config:
      scsihw: virtio-scsi-pci
      hotplug: network,disk,usb
      memory: "1536"
      cores: "2"
qemu:
  kernel: $GUEST/vmlinuz
  initrd: $WORK/initrd
  append: "quiet csi.node=worker-1 csi.region=sim csi.zone=pve1 csi.maxvolumes=4 csi.pve=http://10.0.2.2:$PORT/api2/json csi.token=csi@pve!csi csi.secret=sim-secret"
  memory_mib: 1536
  accel: $ACCEL
  vms:
    - vmid: 101
      hostfwd: ["tcp:127.0.0.1:$NODE_PORT-:10000", "tcp:127.0.0.1:$SHELL_PORT-:10022"]
YAML
step_start "boot worker VM (QEMU)"
"$BIN/pve-sim" --listen "127.0.0.1:$PORT" --data-dir "$WORK/sim" --config "$WORK/sim.yaml" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
booted=
for _ in $(seq 1500); do
    if grep -q "guest: ready" "$WORK/sim/qemu/101/console.log" 2>/dev/null; then booted=1; break; fi
    kill -0 "${PIDS[0]}" 2>/dev/null || break
    if [ -f "$WORK/sim/qemu/101/qemu.pid" ] && ! kill -0 "$(cat "$WORK/sim/qemu/101/qemu.pid")" 2>/dev/null; then break; fi
    sleep 0.2
done
ACCEL=$(cat "$WORK/sim/qemu/101/accel" 2>/dev/null || echo "?")
if [ -z "$booted" ]; then
    step_end fail
    echo "---- simulator log ----"; tail -n 40 "$WORK/sim.log"
    echo "---- guest console ----"; tail -n 60 "$WORK/sim/qemu/101/console.log" 2>/dev/null || true
    exit 1
fi
step_end ok
echo "accelerator: $ACCEL ($(grep -o 'guest: ready.*' "$WORK/sim/qemu/101/console.log"))"

# Host side of the guest's node plugin: a unix socket like the kubelet's.
socat "UNIX-LISTEN:$WORK/node.sock,fork" "TCP:127.0.0.1:$NODE_PORT" &
PIDS+=($!)
cat >"$WORK/config.yaml" <<YAML
clusters:
  - region: sim
    url: http://127.0.0.1:$PORT/api2/json
    token_id: "csi@pve!csi"
    token_secret: sim-secret
    allow_http: true
YAML
"$BIN/proxmox-csi" controller --endpoint "unix://$WORK/controller.sock" --config "$WORK/config.yaml" \
    --max-volumes-per-node 4 >"$WORK/controller.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/controller.sock" ] && [ -S "$WORK/node.sock" ] && break; sleep 0.1; done

# csi-sanity makes its target and staging paths with these, inside the guest.
GSH="$WORK/gsh"
cat >"$GSH" <<EOF
#!/bin/sh
# Runs the shell script on stdin in the guest; prints its output, exits with its status.
out=\$(socat -t 600 - TCP:127.0.0.1:$SHELL_PORT)
printf '%s\n' "\$out" | sed '\$d'
rc=\$(printf '%s\n' "\$out" | tail -n1 | sed -n 's/^rc=//p')
exit "\${rc:-1}"
EOF
printf '#!/bin/sh\necho "mkdir -p \\"$1\\" && echo \\"$1\\"" | %s\n' "$GSH" >"$WORK/mkpath"
printf '#!/bin/sh\necho "rm -rf \\"$1\\"" | %s\n' "$GSH" >"$WORK/rmpath"
printf '#!/bin/sh\necho "if [ -d \\"$1\\" ]; then echo directory; elif [ -f \\"$1\\" ]; then echo file; elif [ -e \\"$1\\" ]; then echo other; else echo not_found; fi" | %s\n' "$GSH" >"$WORK/checkpath"
chmod +x "$GSH" "$WORK/mkpath" "$WORK/rmpath" "$WORK/checkpath"
echo "uname -r; ls /dev/disk/by-id 2>/dev/null | wc -l" | "$GSH" >/dev/null

cat >"$WORK/params.yaml" <<YAML
storage: local-lvm
YAML
step_start "csi-sanity Node Service (in guest)"
rc=0
# One endpoint, as in tests/sanity.sh: csi-sanity asks that endpoint's Identity whether there is
# a controller, so the guest runs `proxmox-csi all` (its controller reaches pve-sim through
# QEMU's user network); the scenario below uses the host's controller instead.
"$SANITY" --csi.endpoint="$WORK/node.sock" \
    --csi.mountdir=/var/lib/kubelet/sanity/mnt --csi.stagingdir=/var/lib/kubelet/sanity/staging \
    --csi.createmountpathcmd="$WORK/mkpath" --csi.createstagingpathcmd="$WORK/mkpath" \
    --csi.removemountpathcmd="$WORK/rmpath" --csi.removestagingpathcmd="$WORK/rmpath" \
    --csi.checkpathcmd="$WORK/checkpath" \
    --csi.testvolumesize=1073741824 --csi.testvolumeexpandsize=2147483648 \
    --csi.testvolumeparameters="$WORK/params.yaml" --csi.testnodevolumeattachlimit \
    --ginkgo.focus='Node Service' --ginkgo.timeout=15m --ginkgo.no-color >"$WORK/sanity.log" 2>&1 || rc=$?
line=$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "$WORK/sanity.log" | tail -1 || true)
echo "csi-sanity: ${line:-no result line}"
if [ $rc -eq 0 ] && [ -n "$line" ]; then step_end ok; else
    step_end fail
    grep -E '^\s*\[FAIL\]|Expected|to equal|rpc error' "$WORK/sanity.log" | head -30 || true
fi

# ---- the scenario (tests/qemu_guest.rs)
export QEMU_E2E_CONTROLLER="$WORK/controller.sock" QEMU_E2E_NODE="$WORK/node.sock" \
    QEMU_E2E_GSH="$GSH" QEMU_E2E_SIM="http://127.0.0.1:$PORT"
(cd "$ROOT" && cargo test -q --test qemu_guest -- --ignored --nocapture --test-threads=1) \
    >"$WORK/scenario.log" 2>&1 || true
grep -E '^(step |      )' "$WORK/scenario.log" || true
sp=$(grep -cE '^step .* ok ' "$WORK/scenario.log" || true)
sf=$(grep -cE '^step .* fail ' "$WORK/scenario.log" || true)
PASSED=$((PASSED + sp)); FAILED=$((FAILED + sf))
if ! grep -q 'test result: ok' "$WORK/scenario.log"; then
    [ "$sf" -gt 0 ] || FAILED=$((FAILED + 1))
    echo "---- scenario log (tail) ----"; grep -vE '^step ' "$WORK/scenario.log" | tail -n 40
fi

# ---- nothing left behind: stop everything, then check
step_start "teardown (no QEMU, socket or mount left)"
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()
left=
for pidf in "$WORK"/sim/qemu/*/qemu.pid; do
    [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null && left="QEMU $(cat "$pidf") still runs"
done
grep -qF "$WORK" /proc/self/mounts && left="$left; mounts below $WORK"
if [ -z "$left" ]; then step_end ok; else echo "$left"; step_end fail; fi
if [ "$FAILED" -gt 0 ]; then
    echo "---- controller log (tail) ----"; tail -n 30 "$WORK/controller.log"
    echo "---- simulator log (tail) ----"; tail -n 30 "$WORK/sim.log"
fi

printf 'accelerator: %s, total %.1f s\n' "$ACCEL" "$(echo "$(date +%s.%N) - $T_START" | bc)"
echo "qemu: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
