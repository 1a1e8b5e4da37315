#!/usr/bin/env bash
# csi-sanity against the real binaries: pve-sim (Proxmox API simulator with
# loop-device hot-plug) and `proxmox-csi all` acting as VM worker-1 on node pve1.
# Usage: sudo bash tests/sanity.sh mount|block [STORAGE [FORMAT]]   (after `cargo build --bins`)
# STORAGE is a storage id of tests/sanity-sim.yaml (default local-lvm): local-lvm (lvmthin),
# ceph (rbd), local-zfs (zfspool), san (thick lvm), local-dir (dir), nfs (nfs); FORMAT raw or qcow2.
# SANITY_ARGS adds csi-sanity flags (e.g. --ginkgo.v to see which specs are skipped and why: the six
# every run skips are the GroupController specs, a service this driver does not offer).
set -euo pipefail
ACCESS="${1:-mount}"
STORAGE="${2:-local-lvm}"
FORMAT="${3:-raw}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/debug"
SANITY="${CSI_SANITY:-$ROOT/target/tools/csi-sanity}"
WORK="$(mktemp -d /tmp/proxmox-csi-sanity.XXXXXX)"
PORT=$((20000 + RANDOM % 20000))
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # Anything a failed run left mounted or attached under the work dir.
    grep -F "$WORK" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    losetup -a 2>/dev/null | grep -F "$WORK" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/pve-sim" --listen "127.0.0.1:$PORT" --data-dir "$WORK/sim" --config "$ROOT/tests/sanity-sim.yaml" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    curl -fsS -o /dev/null -H 'Authorization: PVEAPIToken=csi@pve!csi=sim-secret' "http://127.0.0.1:$PORT/api2/json/version" && break
    sleep 0.2
done

cat >"$WORK/config.yaml" <<YAML
clusters:
  - region: sim
    url: http://127.0.0.1:$PORT/api2/json
    token_id: "csi@pve!csi"
    token_secret: sim-secret
    allow_http: true
YAML
cat >"$WORK/params.yaml" <<YAML
storage: $STORAGE
storageFormat: $FORMAT
YAML

# Every storage type runs every spec. Snapshots on zfspool, thick lvm and raw files are full
# copies of a detached volume (README "Storage types", copy snapshots), which csi-sanity's
# snapshot specs are: they snapshot volumes they never publish. Specs a type could not pass for
# a missing PVE feature would be skipped here (--ginkgo.skip), naming the feature.
SKIP=""
cat >"$WORK/mutable.yaml" <<YAML
iopsRead: "1000"
mbpsWrite: "50"
YAML

# The node plugin only works below its kubelet directory, so csi-sanity's
# mount and staging directories live below the one it is given.
KUBELET="$WORK/kubelet"
mkdir -p "$KUBELET"
"$BIN/proxmox-csi" all --endpoint "unix://$WORK/csi.sock" --config "$WORK/config.yaml" \
    --node-id worker-1 --region sim --zone pve1 --device-dir "$WORK/sim/guests/101/disk/by-id" \
    --kubelet-dir "$KUBELET" \
    --device-wait 10 --max-volumes-per-node 4 --node-max-volumes 4 >"$WORK/driver.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/csi.sock" ] && break; sleep 0.1; done

rc=0
"$SANITY" --csi.endpoint="$WORK/csi.sock" \
    --csi.mountdir="$KUBELET/mnt" --csi.stagingdir="$KUBELET/staging" \
    --csi.testvolumesize=1073741824 --csi.testvolumeexpandsize=2147483648 \
    --csi.testvolumeparameters="$WORK/params.yaml" \
    --csi.testvolumemutableparameters="$WORK/mutable.yaml" \
    --csi.testvolumeaccesstype="$ACCESS" --csi.testnodevolumeattachlimit \
    ${SKIP:+--ginkgo.skip="$SKIP"} \
    --ginkgo.timeout=20m --ginkgo.no-color ${SANITY_ARGS:-} || rc=$?
if [ $rc -ne 0 ]; then
    echo "---- driver log (tail) ----"; tail -n 60 "$WORK/driver.log"
    echo "---- simulator log (tail) ----"; tail -n 40 "$WORK/sim.log"
fi
exit $rc
