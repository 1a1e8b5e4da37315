#!/usr/bin/env bash
# Two Kubernetes clusters on one Proxmox cluster: csi-sanity runs twice at the same time
# against one pve-sim, once per tenant, each through its own `proxmox-csi all` with its own
# --cluster-id, pool and privilege-separated token holding only the tenant ACLs (pool,
# storage, own worker VM; tests/sanity-tenants-sim.yaml). csi-sanity's ListVolumes and
# pagination tests count volumes, so a tenant seeing the other's holders fails them; after
# the runs every holder left would be a leak, and there must be none.
# Usage: sudo bash tests/sanity-tenants.sh [mount|block]   (after `cargo build --bins`)
set -euo pipefail
ACCESS="${1:-mount}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/debug"
SANITY="${CSI_SANITY:-$ROOT/target/tools/csi-sanity}"
WORK="$(mktemp -d /tmp/proxmox-csi-tenants.XXXXXX)"
PORT=$((20000 + RANDOM % 20000))
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    grep -F "$WORK" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    losetup -a 2>/dev/null | grep -F "$WORK" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null || true
    if [ -n "${KEEP_LOGS:-}" ]; then cp -r "$WORK/a" "$WORK/b" "$WORK/sim.log" "$KEEP_LOGS/" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN/pve-sim" --listen "127.0.0.1:$PORT" --data-dir "$WORK/sim" --config "$ROOT/tests/sanity-tenants-sim.yaml" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
API="http://127.0.0.1:$PORT/api2/json"
ADMIN='Authorization: PVEAPIToken=csi@pve!csi=sim-secret'
for _ in $(seq 50); do
    curl -fsS -o /dev/null -H "$ADMIN" "$API/version" && break
    sleep 0.2
done

cat >"$WORK/params.yaml" <<YAML
storage: local-lvm
YAML
cat >"$WORK/mutable.yaml" <<YAML
iopsRead: "1000"
mbpsWrite: "50"
YAML

# start_tenant NAME NODE_ID VMID CLAIM_LEGACY
start_tenant() {
    local t="$1" node="$2" vmid="$3" legacy="$4"
    mkdir -p "$WORK/$t/kubelet"
    cat >"$WORK/$t/config.yaml" <<YAML
clusters:
  - region: sim
    url: $API
    token_id: "kube-$t@pve!csi"
    token_secret: secret-$t
    allow_http: true
    pool: k8s-$t
YAML
    "$BIN/proxmox-csi" all --endpoint "unix://$WORK/$t/csi.sock" --config "$WORK/$t/config.yaml" \
        --cluster-id "$t" --claim-legacy-holders "$legacy" \
        --node-id "$node" --region sim --zone pve1 --device-dir "$WORK/sim/guests/$vmid/disk/by-id" \
        --kubelet-dir "$WORK/$t/kubelet" \
        --device-wait 10 --max-volumes-per-node 4 --node-max-volumes 4 >"$WORK/$t/driver.log" 2>&1 &
    PIDS+=($!)
}
# Tenant a is the upgraded first cluster (it would own id-less holders); b joined later.
start_tenant a worker-1 101 true
start_tenant b worker-b1 103 false
for t in a b; do
    for _ in $(seq 50); do [ -S "$WORK/$t/csi.sock" ] && break; sleep 0.1; done
done

run_sanity() {
    local t="$1"
    "$SANITY" --csi.endpoint="$WORK/$t/csi.sock" \
        --csi.mountdir="$WORK/$t/kubelet/mnt" --csi.stagingdir="$WORK/$t/kubelet/staging" \
        --csi.testvolumesize=1073741824 --csi.testvolumeexpandsize=2147483648 \
        --csi.testvolumeparameters="$WORK/params.yaml" \
        --csi.testvolumemutableparameters="$WORK/mutable.yaml" \
        --csi.testvolumeaccesstype="$ACCESS" --csi.testnodevolumeattachlimit \
        --ginkgo.timeout=20m --ginkgo.no-color >"$WORK/$t/sanity.log" 2>&1
}
rc=0
run_sanity a & SA=$!
run_sanity b & SB=$!
wait $SA || rc=1
wait $SB || rc=1
for t in a b; do
    echo "---- tenant $t: csi-sanity ----"
    # Prefixed so a summary can count each tenant's run.
    grep -E "^Ran [0-9]+ of|Passed \| [0-9]+ Failed|^\[FAIL\]|FAIL!" "$WORK/$t/sanity.log" | sed "s/^/tenant $t: /" || true
done
# Every holder was destroyed again, and none was ever outside its tenant's pool.
LEFT=$(curl -fsS -H "$ADMIN" "$API/cluster/resources?type=vm" | python3 -c '
import json, sys
vms = json.load(sys.stdin)["data"]
print(sum(1 for v in vms if (v.get("name") or "").startswith("csi-vol-")))')
echo "holder VMs left after both runs: $LEFT"
if [ "$LEFT" != 0 ]; then rc=1; fi
if [ $rc -ne 0 ]; then
    for t in a b; do
        echo "---- tenant $t: csi-sanity failures ----"; grep -B2 -A20 "\[FAIL\]" "$WORK/$t/sanity.log" | head -80 || true
        echo "---- tenant $t: driver log (tail) ----"; tail -n 40 "$WORK/$t/driver.log"
    done
    echo "---- simulator log (tail) ----"; tail -n 40 "$WORK/sim.log"
fi
exit $rc
