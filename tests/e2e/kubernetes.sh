#!/usr/bin/env bash
# End to end under a real Kubernetes: the driver installed with its own Helm chart on a one-node
# control plane + kubelet on 127.0.0.1 (tests/e2e/cluster.sh), pve-sim as the Proxmox VE, images
# built here without a Docker engine (tests/e2e/image.sh). Every step is checked from the API
# server and from pve-sim's state; the run ends with "N passed, N failed, N skipped".
#
#   sudo bash tests/e2e/kubernetes.sh
#
# Needs root, apt (Debian 12), Go and the Go module proxy, Rust. Builds are cached in
# $E2E_CACHE (default /var/cache/proxmox-csi-e2e), keyed by the versions in components.sh; state
# lives in $E2E_STATE (default /tmp/proxmox-csi-e2e) and is removed at the end, as is everything
# started, mounted, attached or put in a cgroup. E2E_KEEP=1 leaves the cluster running on failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"
E2E="$ROOT/tests/e2e"
# shellcheck source=/dev/null
source "$E2E/components.sh"; source "$E2E/image.sh"; source "$E2E/cluster.sh"; source "$ROOT/tests/tools/ensure.sh"

[ "$(id -u)" = 0 ] || { echo "kubernetes.sh must run as root (kubelet, containerd, mounts, loop devices)" >&2; exit 1; }

PASSED=0; FAILED=0; SKIPPED=0; T0=$(date +%s); STEP_T=$T0; TIMES=()
E2E_LOGS=${E2E_LOGS:-/tmp/proxmox-csi-e2e-logs}
NS=csi-proxmox; DRIVER=csi.proxmox-csi.dev; SIM_PORT=28006; SIM="$S/sim"
TOKEN='PVEAPIToken=csi@pve!csi=sim-secret'
# the worker VM the kubelet's node is (name = node name), on PVE node pve1
WORKER_VMID=101

phase() { TIMES+=("$1 $(( $(date +%s) - PHASE_T ))s"); PHASE_T=$(date +%s); }
PHASE_T=$T0
ok() { PASSED=$((PASSED + 1)); printf 'PASS [%3ss] %s\n' "$(( $(date +%s) - STEP_T ))" "$1"; }
bad() { FAILED=$((FAILED + 1)); printf 'FAIL [%3ss] %s\n' "$(( $(date +%s) - STEP_T ))" "$1"; }
step() { # description cmd... : one asserted step; its output goes to steps.log, shown on failure
    local d=$1; shift; STEP_T=$(date +%s)
    echo "== $d" >>"$S/logs/steps.log"
    if "$@" >>"$S/logs/steps.log" 2>&1; then ok "$d"; else bad "$d"; tail -n 4 "$S/logs/steps.log" | sed 's/^/     /'; fi
}
skip() { SKIPPED=$((SKIPPED + 1)); echo "SKIP $1"; }
die() { echo "e2e: $*" >&2; bad "$*"; finish; }

k() { "$E2E_BIN/kubectl" "$@"; }
# until SECONDS cmd... : retries every half second
until_ok() { local t=$1 i; shift; for ((i = 0; i < t * 2; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1; }
pve() { curl -sf -H "Authorization: $TOKEN" "http://127.0.0.1:$SIM_PORT/api2/json$1"; }
sim_ctl() { curl -sf -X "$1" -H 'Content-Type: application/json' ${3:+-d "$3"} "http://127.0.0.1:$SIM_PORT$2"; }
worker_config() { pve "/nodes/pve1/qemu/$WORKER_VMID/config" | jq -c .data; }
holders() { pve "/cluster/resources?type=vm" | jq -r '.data[] | select((.tags // "") | split(";") | index("proxmox-csi")) | "\(.vmid) \(.name)"'; }
pv_of() { k -n "$NS" get pvc "$1" -o jsonpath='{.spec.volumeName}'; }
handle_of() { k get pv "$1" -o jsonpath='{.spec.csi.volumeHandle}'; }
va_of() { k get volumeattachment -o json | jq -r --arg pv "$1" '.items[] | select(.spec.source.persistentVolumeName == $pv) | .metadata.name'; }
# the pod's container log, read from kubelet's podLogsDir (the API server cannot reach kubelet's name)
pod_log() { cat "$S/pod-logs/${NS}_$1_"*/*/0.log 2>/dev/null | sed -E 's/^[^ ]+ [^ ]+ [^ ]+ //'; }
log_has() { pod_log "$1" | grep -qE "$2"; }
size_kb() { pod_log "$1" | sed -n 's/^df=[^ ]* \([0-9]*\) .*/\1/p' | tail -1; }
# the PVE volume name (vm-<holder>-disk-0) of a PV: the last part of its volume id
volname_of() { handle_of "$1" | awk -F/ '{print $NF}'; }
drive_of() { worker_config | jq -r --arg v "$1" 'to_entries[] | select((.value|tostring) | test(":" + $v + ",")) | .value'; }

# conditions polled by until_ok
csinode_has_driver() { k get csinode "$E2E_NODE" -o jsonpath='{.spec.drivers[*].name}' | grep -qw "$DRIVER"; }
none_of() { local out; out=$(k get "$@" -o name) || return 1; [ -z "$out" ]; }
no_holders() { local h; h=$(holders) || return 1; [ -z "$h" ]; }
no_disks() { [ "$(pve /nodes/pve1/storage/local-lvm/content | jq '.data | length')" = 0 ]; }
no_data_disks() { [ "$(worker_config | jq '[keys[] | select(test("^scsi([1-9]|[12][0-9]|30)$"))] | length')" = 0 ]; }
faults_fired() { [ "$(sim_ctl GET /_sim/faults | jq '.data | length')" = 0 ]; }
vol1_is_2g() { drive_of "$VOL1" | grep -q 'size=2G'; }
pod1_grown() { local n; n=$(size_kb pod1); [ -n "$n" ] && [ "$n" -gt $((SIZE1 * 3 / 2)) ]; }

finish() {
    trap - EXIT INT TERM
    if [ -n "${TEARDOWN_DONE:-}" ]; then
        :
    elif [ "${E2E_KEEP:-0}" = 1 ] && [ "$FAILED" -gt 0 ]; then
        echo "E2E_KEEP=1: cluster left running (KUBECONFIG=$KUBECONFIG)"
    else
        teardown_all
    fi
    phase teardown
    echo; echo "phases: ${TIMES[*]}"; echo "e2e wall: $(( $(date +%s) - T0 ))s"
    echo "logs: $E2E_LOGS"
    echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    [ "$FAILED" = 0 ]; exit $?
}

teardown_all() {
    if [ -x "$E2E_BIN/kubectl" ] && k get --raw /readyz >/dev/null 2>&1; then
        k delete pod --all -n "$NS" --wait=false >/dev/null 2>&1
        "$HELM" uninstall proxmox-csi -n "$NS" --wait --timeout 60s >/dev/null 2>&1
    fi
    cluster_down
    _stop pve-sim
    # loop devices the simulator attached (it detaches them on exit; a crash would not)
    losetup -a 2>/dev/null | grep -F "$SIM/" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null
    [ -n "${MADE_UDEV:-}" ] && rmdir /run/udev 2>/dev/null
    # logs outlive the state dir
    rm -rf "$E2E_LOGS"; mkdir -p "$E2E_LOGS"
    cp -a "$S/logs" "$E2E_LOGS/" 2>/dev/null; cp -a "$S/pod-logs" "$E2E_LOGS/" 2>/dev/null
    rm -rf "$S"
}

trap 'die interrupted' INT TERM
trap finish EXIT

# ---- 1. what the test needs -------------------------------------------------------------------
echo "== installing and building (cache: $E2E_CACHE)"
want=(containerd runc containernetworking-plugins busybox-static debootstrap openssl curl jq
      e2fsprogs xfsprogs util-linux mount cryptsetup-bin dmsetup)
missing=()
for p in "${want[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]}"
fi
phase packages
HELM=$(ensure_helm) || die "helm $HELM_VERSION"
e2e_components || die "building the Kubernetes components"
phase components
( cd "$ROOT" && cargo build --bin pve-sim 2>&1 | tail -1 ) && [ -x "$ROOT/target/debug/pve-sim" ] || die "building pve-sim"
phase pve-sim

# ---- 2. images --------------------------------------------------------------------------------
mkdir -p "$IMAGE_DIR"
APP_VERSION=$(awk -F'"' '/^appVersion:/ {print $2}' "$ROOT/charts/proxmox-csi/Chart.yaml")
DRIVER_REF="$(awk '/^image:/ {f=1} f && /repository:/ {print $2; exit}' "$ROOT/charts/proxmox-csi/values.yaml"):$APP_VERSION"
driver_image "$IMAGE_DIR/driver.tar" "$DRIVER_REF" || die "driver image"
declare -A SIDECAR_BIN=([provisioner]=csi-provisioner [attacher]=csi-attacher [resizer]=csi-resizer [snapshotter]=csi-snapshotter)
declare -A SIDECAR_VER=([provisioner]=$PROVISIONER_VERSION [attacher]=$ATTACHER_VERSION [resizer]=$RESIZER_VERSION [snapshotter]=$SNAPSHOTTER_VERSION)
IMAGES=("$IMAGE_DIR/driver.tar")
for s in "${!SIDECAR_BIN[@]}"; do
    ref=$("$HELM" show values "$ROOT/charts/proxmox-csi" | awk -v s="  $s:" '$0 == s {f=1} f && /image:/ {print $2; exit}')
    binary_image "$IMAGE_DIR/$s.tar" "$ref" "$E2E_BIN/${SIDECAR_BIN[$s]}"; IMAGES+=("$IMAGE_DIR/$s.tar")
done
SNAPCTL_REF="registry.k8s.io/sig-storage/snapshot-controller:$SNAPSHOTTER_VERSION"
binary_image "$IMAGE_DIR/snapshot-controller.tar" "$SNAPCTL_REF" "$E2E_BIN/snapshot-controller"
binary_image "$IMAGE_DIR/pause.tar" "registry.k8s.io/pause:$PAUSE_VERSION" "$E2E_BIN/pause"
bb=(); for a in sh sha256sum dd df sleep cat cut tail head blockdev mkdir wc stat sync; do bb+=(--symlink "/bin/$a=busybox"); done
python3 "$E2E/oci.py" --out "$IMAGE_DIR/busybox.tar" --ref docker.io/library/busybox:e2e --entrypoint '["/bin/sh"]' \
    --file /bin/busybox=/bin/busybox "${bb[@]}" >/dev/null || die "busybox image"
IMAGES+=("$IMAGE_DIR/snapshot-controller.tar" "$IMAGE_DIR/pause.tar" "$IMAGE_DIR/busybox.tar")
phase images

echo "== checks before start"
STEP_T=$(date +%s)
# Dockerfile, chart and image agree: the image's entrypoint, env, binary and packages are the
# Dockerfile's; its name is the chart's repository:appVersion; the binary's version is appVersion.
eval "$(dockerfile_facts "$ROOT/Dockerfile")"
if python3 "$E2E/check_image.py" "$IMAGE_DIR/driver.tar" "$DRIVER_REF" "$DF_ENTRYPOINT" "$DF_ENV" \
        "${DF_DEST#/}" "$ROOT/$DF_ARTIFACT" "$DF_PACKAGES" \
   && [ "$("$ROOT/$DF_ARTIFACT" --version | awk '{print $2}')" = "$APP_VERSION" ] \
   && "$HELM" template t "$ROOT/charts/proxmox-csi" --set config.existingSecret=x | grep -q "image: $DRIVER_REF\$"; then
    ok "driver image = Dockerfile (entrypoint, env, binary, packages) = chart ($DRIVER_REF)"
else bad "driver image, Dockerfile and chart disagree"; fi
STEP_T=$(date +%s); bad_tags=""
for s in "${!SIDECAR_BIN[@]}"; do
    ref=$("$HELM" show values "$ROOT/charts/proxmox-csi" | awk -v s="  $s:" '$0 == s {f=1} f && /image:/ {print $2; exit}')
    [ "${ref##*:}" = "${SIDECAR_VER[$s]}" ] || bad_tags+=" $s:${ref##*:}!=${SIDECAR_VER[$s]}"
done
if [ -z "$bad_tags" ]; then ok "chart sidecar tags = built versions"; else bad "chart sidecar tags:$bad_tags"; fi

# ---- 3. pve-sim and the cluster -----------------------------------------------------------------
echo "== starting"
# what an interrupted earlier run may have left (by its pid files and below its state dir only)
[ -d "$S" ] && { cluster_down; _stop pve-sim; rm -rf "$S"; }
mkdir -p "$S/run" "$S/logs" "$SIM"
cat >"$S/sim.yaml" <<YAML
cluster_name: sim
nodes: [pve1, pve2]
storages:
  - {id: local, type: dir}
  - {id: local-lvm, type: lvmthin, nodes: [pve1]}
vms:
  - vmid: $WORKER_VMID
    name: $E2E_NODE
    node: pve1
    status: running
    config: {scsihw: virtio-scsi-single, hotplug: "network,disk,usb", scsi0: "local:$WORKER_VMID/vm-$WORKER_VMID-disk-0.raw,size=8G"}
tokens:
  - {id: "csi@pve!csi", secret: sim-secret}
hotplug: loop
YAML
_start pve-sim "$ROOT/target/debug/pve-sim" --listen "127.0.0.1:$SIM_PORT" --data-dir "$SIM" --config "$S/sim.yaml"
until_ok 20 pve /version || die "pve-sim did not answer"
cluster_up || die "cluster start (logs: $S/logs)"
phase cluster-up
for img in "${IMAGES[@]}"; do e2e_ctr images import "$img" >/dev/null || die "import $img"; done
phase import

# ---- 4. install: CRDs, snapshot-controller, the chart ---------------------------------------------
[ -d /run/udev ] || { mkdir -p /run/udev && MADE_UDEV=1; }   # the chart mounts the host's udev db
k apply -f "$E2E_CRD" >/dev/null && k wait --for=condition=Established crd --all --timeout=60s >/dev/null || die "snapshot CRDs"
k create namespace "$NS" >/dev/null
sed -e "s#@IMAGE@#$SNAPCTL_REF#" -e "s#@NS@#$NS#" "$E2E/snapshot-controller.yaml" | k apply -f - >/dev/null || die "snapshot-controller"
cat >"$S/values.yaml" <<YAML
image: {pullPolicy: Never}
sidecars: {pullPolicy: Never, logLevel: 4}
healthProbe: builtin
apiServer: {host: 127.0.0.1, port: "6443"}
logLevel: "info,proxmox_csi=debug"
config:
  clusters:
    - {region: sim, url: "http://127.0.0.1:$SIM_PORT/api2/json", token_id: "csi@pve!csi", token_secret: sim-secret, allow_http: true, timeout_seconds: 30}
metrics: {enabled: true, port: 9810}
controller: {hostNetwork: true, taskTimeout: 60}
node:
  hostNetwork: true
  metricsPort: 9811
  registration: builtin
  kubeletDir: $S/kubelet
  deviceDir: $SIM/guests/$WORKER_VMID/disk/by-id
  deviceWait: 30
  topologyFromNodeLabels: false
  region: sim
  zone: pve1
  extraVolumes: [{name: sim-guests, hostPath: {path: $SIM/guests, type: DirectoryOrCreate}}]
  extraVolumeMounts: [{name: sim-guests, mountPath: $SIM/guests}]
storageClasses:
  - {name: proxmox-thin, fsType: xfs, allowVolumeExpansion: true, parameters: {storage: local-lvm}}
snapshotClass: {enabled: true, name: proxmox-snapshot, deletionPolicy: Delete}
YAML
STEP_T=$(date +%s)
if "$HELM" install proxmox-csi "$ROOT/charts/proxmox-csi" -n "$NS" -f "$S/values.yaml" >"$S/logs/helm.log" 2>&1; then
    ok "helm install charts/proxmox-csi (node.registration=builtin, healthProbe=builtin)"
else cat "$S/logs/helm.log"; die "helm install"; fi
step "controller Deployment available (driver + 4 sidecars, one Pod)" \
    k -n "$NS" rollout status deploy/proxmox-csi-controller --timeout=180s
step "node DaemonSet ready (driver only, no registrar or liveness sidecar)" \
    k -n "$NS" rollout status ds/proxmox-csi-node --timeout=120s
step "snapshot-controller ready" k -n "$NS" rollout status deploy/snapshot-controller --timeout=120s
step "kubelet registered the driver through the built-in registration (CSINode)" \
    until_ok 60 csinode_has_driver
STEP_T=$(date +%s)
if [ "$(k get csinode "$E2E_NODE" -o json | jq -r --arg d "$DRIVER" '.spec.drivers[] | select(.name==$d) | "\(.nodeID) \(.topologyKeys|sort|join(","))"')" \
     = "$E2E_NODE topology.kubernetes.io/region,topology.kubernetes.io/zone" ]; then
    ok "CSINode: node id $E2E_NODE and topology keys region, zone"
else bad "CSINode driver entry: $(k get csinode "$E2E_NODE" -o jsonpath='{.spec.drivers}')"; fi
step "registration socket at <kubelet dir>/plugins_registry/$DRIVER-reg.sock" test -S "$S/kubelet/plugins_registry/$DRIVER-reg.sock"
phase install

# ---- 5. the scenario --------------------------------------------------------------------------
echo "== scenario"
pod() { # name pvc script [block]
    local vol="volumeMounts: [{name: v, mountPath: /data}]"
    [ "${4:-}" = block ] && vol="volumeDevices: [{name: v, devicePath: /dev/xvda}]"
    cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $NS}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: c
      image: docker.io/library/busybox:e2e
      imagePullPolicy: Never
      command: ["/bin/sh", "-c", "$3"]
      $vol
  volumes: [{name: v, persistentVolumeClaim: {claimName: $2}}]
YAML
}
pvc() { # name size [mode] [extra spec yaml]
    cat <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1, namespace: $NS}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: proxmox-thin
  volumeMode: ${3:-Filesystem}
  resources: {requests: {storage: $2}}
  ${4:-}
YAML
}
kn() { k -n "$NS" "$@"; }
# sync before the sha is printed: a snapshot is crash-consistent, so the data must be on the disk
WRITER='dd if=/dev/urandom of=/data/blob bs=1M count=16 2>/dev/null; sync; sha256sum /data/blob | cut -d\" \" -f1 > /data/blob.sha; sync; echo sha=$(cat /data/blob.sha); while true; do echo df=$(df -k /data | tail -1); sleep 2; done'
READER='echo sha=$(sha256sum /data/blob | cut -d\" \" -f1); while true; do echo df=$(df -k /data | tail -1); sleep 2; done'

{ pvc pvc1 1Gi; echo ---; pod pod1 pvc1 "$WRITER"; } | k apply -f - >/dev/null
step "pvc1 Bound (WaitForFirstConsumer: CreateVolume once pod1 is scheduled)" \
    kn wait --for=jsonpath='{.status.phase}'=Bound pvc/pvc1 --timeout=120s
PV1=$(pv_of pvc1); VOL1=$(volname_of "$PV1")
STEP_T=$(date +%s)
if [ -n "$VOL1" ] && holders | grep -q "csi-vol-$PV1"; then ok "pve-sim: holder VM csi-vol-$PV1 owns $VOL1 on local-lvm"; else bad "no holder VM for $PV1 ($(holders | tr '\n' ' '))"; fi
until_ok 60 test -n "$(va_of "$PV1")"; VA1=$(va_of "$PV1")
step "VolumeAttachment $VA1 attached (ControllerPublish)" k wait --for=jsonpath='{.status.attached}'=true "volumeattachment/$VA1" --timeout=120s
STEP_T=$(date +%s)
D1=$(drive_of "$VOL1")
if [[ "$D1" == *"wwn=0x5"* ]]; then ok "pve-sim: $VOL1 in worker VM $WORKER_VMID's config ($D1)"; else bad "worker config lacks $VOL1: $(worker_config)"; fi
step "pod1 Running with the volume (NodeStage: format, mount; NodePublish)" kn wait --for=condition=Ready pod/pod1 --timeout=180s
step "pod1 wrote 16 MiB and recorded its sha256" until_ok 30 log_has pod1 '^sha=[0-9a-f]{64}$'
SHA1=$(pod_log pod1 | sed -n 's/^sha=//p' | head -1)
SIZE1=$(size_kb pod1)

cat <<YAML | k apply -f - >/dev/null
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap1, namespace: $NS}
spec: {volumeSnapshotClassName: proxmox-snapshot, source: {persistentVolumeClaimName: pvc1}}
YAML
step "VolumeSnapshot snap1 readyToUse (CreateSnapshot)" kn wait --for=jsonpath='{.status.readyToUse}'=true volumesnapshot/snap1 --timeout=120s
HOLDER1=$(holders | awk -v n="csi-vol-$PV1" '$2 == n {print $1}')
STEP_T=$(date +%s)
SNAPS=$(pve "/nodes/pve1/qemu/$HOLDER1/snapshot" | jq -r '[.data[] | select(.name != "current")] | length')
if [ "${SNAPS:-0}" = 1 ]; then ok "pve-sim: holder VM $HOLDER1 has the snapshot"; else bad "holder $HOLDER1 snapshots: $SNAPS"; fi

{ pvc pvc2 2Gi Filesystem "dataSource: {name: snap1, kind: VolumeSnapshot, apiGroup: snapshot.storage.k8s.io}"; echo ---; pod pod2 pvc2 "$READER"; } | k apply -f - >/dev/null
step "pvc2 restored from snap1 at 2Gi Bound" kn wait --for=jsonpath='{.status.phase}'=Bound pvc/pvc2 --timeout=120s
step "pod2 Running on the restored volume" kn wait --for=condition=Ready pod/pod2 --timeout=180s
step "pod2 reads the same sha256 as pod1 wrote" until_ok 30 log_has pod2 "^sha=$SHA1\$"
STEP_T=$(date +%s); until_ok 20 test -n "$(size_kb pod2)"; SIZE2=$(size_kb pod2)
if [ -n "$SIZE2" ] && [ -n "$SIZE1" ] && [ "$SIZE2" -gt $((SIZE1 * 3 / 2)) ]; then
    ok "pod2 sees the larger filesystem (${SIZE2} KiB > ${SIZE1} KiB)"
else bad "restored filesystem not grown: pod1 ${SIZE1:-?} KiB, pod2 ${SIZE2:-?} KiB"; fi

kn patch pvc pvc1 --type=merge -p '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}' >/dev/null
step "PV of pvc1 2Gi (ControllerExpandVolume, online)" k wait --for=jsonpath='{.spec.capacity.storage}'=2Gi "pv/$PV1" --timeout=120s
step "pvc1 status.capacity 2Gi (NodeExpandVolume)" kn wait --for=jsonpath='{.status.capacity.storage}'=2Gi pvc/pvc1 --timeout=120s
step "pve-sim: $VOL1 is 2G in the worker's config" until_ok 20 vol1_is_2g
step "pod1 sees the grown filesystem" until_ok 30 pod1_grown

cat <<YAML | k apply -f - >/dev/null
apiVersion: storage.k8s.io/v1
kind: VolumeAttributesClass
metadata: {name: limited}
driverName: $DRIVER
parameters: {iopsRead: "2000", mbpsWrite: "100"}
YAML
kn patch pvc pvc1 --type=merge -p '{"spec":{"volumeAttributesClassName":"limited"}}' >/dev/null
step "pvc1 currentVolumeAttributesClassName limited (ControllerModifyVolume)" \
    kn wait --for=jsonpath='{.status.currentVolumeAttributesClassName}'=limited pvc/pvc1 --timeout=120s
STEP_T=$(date +%s); D1=$(drive_of "$VOL1")
if [[ "$D1" == *iops_rd=2000* && "$D1" == *mbps_wr=100* ]]; then ok "pve-sim: the running drive's limits changed ($D1)"; else bad "drive limits not applied: $D1"; fi

BLOCKER='echo size=$(blockdev --getsize64 /dev/xvda); dd if=/dev/urandom of=/tmp/x bs=1M count=4 2>/dev/null; dd if=/tmp/x of=/dev/xvda bs=1M 2>/dev/null; echo w=$(sha256sum /tmp/x | cut -c1-64); echo r=$(dd if=/dev/xvda bs=1M count=4 2>/dev/null | sha256sum | cut -c1-64); sleep 100000'
{ pvc pvc3 1Gi Block; echo ---; pod pod3 pvc3 "$BLOCKER" block; } | k apply -f - >/dev/null
step "volumeMode Block: pod3 Running with the raw device" kn wait --for=condition=Ready pod/pod3 --timeout=180s
STEP_T=$(date +%s); until_ok 30 log_has pod3 '^r='
W=$(pod_log pod3 | sed -n 's/^w=//p'); R=$(pod_log pod3 | sed -n 's/^r=//p')
if [ -n "$W" ] && [ "$W" = "$R" ] && log_has pod3 '^size=1073741824$'; then ok "Block: 1 GiB device, 4 MiB written and read back"; else bad "Block: $(pod_log pod3 | head -3 | tr '\n' ' ')"; fi

# LUKS on the node: a StorageClass with encrypted=true and the passphrase in a node-stage Secret;
# the disk in pve-sim must carry a LUKS header, and the pod must read back what it wrote.
encrypted_step() {
    cat <<YAML | k apply -f - >/dev/null
apiVersion: v1
kind: Secret
metadata: {name: luks, namespace: $NS}
stringData: {encryptionPassphrase: e2e-passphrase-0123456789}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: proxmox-crypt}
provisioner: $DRIVER
volumeBindingMode: WaitForFirstConsumer
parameters:
  storage: local-lvm
  encrypted: "true"
  csi.storage.k8s.io/node-stage-secret-name: luks
  csi.storage.k8s.io/node-stage-secret-namespace: $NS
YAML
    { pvc pvc6 1Gi | sed 's/proxmox-thin/proxmox-crypt/'; echo ---; pod pod6 pvc6 "$WRITER"; } | k apply -f - >/dev/null
    step "encrypted: pod6 Running on a LUKS volume" kn wait --for=condition=Ready pod/pod6 --timeout=180s
    step "encrypted: pod6 wrote and hashed its file" until_ok 30 log_has pod6 '^sha=[0-9a-f]{64}$'
    local vol6 file
    vol6=$(volname_of "$(pv_of pvc6)")
    file=$(losetup -a | grep -F "$vol6" | sed -E 's/.*\((.*)\).*/\1/' | head -1)
    step "encrypted: the disk in pve-sim starts with a LUKS header" sh -c "[ \"\$(head -c 4 '$file')\" = LUKS ]"
    kn delete pod pod6 --wait=true --timeout=120s >/dev/null; kn delete pvc pvc6 --wait=false >/dev/null
}
if ! dmsetup targets 2>/dev/null | grep -qw crypt; then
    skip "encrypted StorageClass: the kernel has no device-mapper crypt target (dmsetup targets: $(dmsetup targets 2>&1 | head -1))"
else
    encrypted_step
fi

# ---- 6. failures through Kubernetes -----------------------------------------------------------
echo "== failures"
# The holder VM's create request hangs 20 s in pve-sim; meanwhile the controller Pod is deleted.
sim_ctl POST /_sim/faults '{"method":"POST","path_regex":"^/nodes/[^/]+/qemu$","action":{"delay_ms":20000},"count":1}' >/dev/null
{ pvc pvc4 1Gi; echo ---; pod pod4 pvc4 'sleep 100000'; } | k apply -f - >/dev/null
STEP_T=$(date +%s)
if until_ok 60 faults_fired; then
    OLD=$(kn get pod -l app.kubernetes.io/component=controller -o jsonpath='{.items[0].metadata.name}')
    kn delete pod "$OLD" --wait=false >/dev/null
    ok "controller Pod $OLD deleted while CreateVolume of pvc4 was in flight"
else bad "CreateVolume of pvc4 never reached pve-sim"; fi
step "replacement controller available" kn rollout status deploy/proxmox-csi-controller --timeout=180s
step "pvc4 Bound after the restart" kn wait --for=jsonpath='{.status.phase}'=Bound pvc/pvc4 --timeout=180s
PV4=$(pv_of pvc4)
STEP_T=$(date +%s); sleep 5
N4=$(holders | grep -c "csi-vol-$PV4")
NALL=$(holders | wc -l); NPV=$(k get pv -o name | wc -l)
if [ "$N4" = 1 ] && [ "$NALL" = "$NPV" ]; then ok "exactly one volume for pvc4 (holder VMs: $NALL = PVs: $NPV)"; else bad "pvc4 holders $N4, all holders $NALL, PVs $NPV: $(holders | tr '\n' ' ')"; fi
step "pod4 Running" kn wait --for=condition=Ready pod/pod4 --timeout=180s

# The next hot-plug into the worker fails once in QEMU (pve-sim); the attacher must report it, then attach.
sim_ctl POST /_sim/faults "{\"method\":\"POST\",\"path_regex\":\"^/nodes/pve1/qemu/$WORKER_VMID/config\$\",\"action\":{\"hotplug_error\":\"injected: device_add failed\"},\"count\":1}" >/dev/null
# every VolumeAttachment change, so a short-lived attachError is not missed between polls
k get volumeattachment --watch -o jsonpath='{.metadata.name} {.status.attachError.message}{"\n"}' >"$S/logs/va-watch.log" 2>&1 &
VA_WATCH=$!
{ pvc pvc5 1Gi; echo ---; pod pod5 pvc5 'sleep 100000'; } | k apply -f - >/dev/null
kn wait --for=jsonpath='{.status.phase}'=Bound pvc/pvc5 --timeout=120s >/dev/null; PV5=$(pv_of pvc5)
until_ok 60 test -n "$(va_of "$PV5")"; VA5=$(va_of "$PV5")
k wait --for=jsonpath='{.status.attached}'=true "volumeattachment/$VA5" --timeout=120s >/dev/null
kill "$VA_WATCH" 2>/dev/null; wait "$VA_WATCH" 2>/dev/null
STEP_T=$(date +%s); ERR5=$(grep "^$VA5 .*injected" "$S/logs/va-watch.log" | head -1 | cut -d' ' -f2-)
if [ -n "$ERR5" ]; then ok "VolumeAttachment $VA5 showed the hot-plug error ($ERR5)"
else bad "no attach error seen on $VA5 (fault left in pve-sim: $(sim_ctl GET /_sim/faults | jq -c .data))"; fi
step "VolumeAttachment $VA5 attached on retry" k wait --for=jsonpath='{.status.attached}'=true "volumeattachment/$VA5" --timeout=120s
step "pod5 Running" kn wait --for=condition=Ready pod/pod5 --timeout=180s
phase scenario

# ---- 7. teardown: nothing left ----------------------------------------------------------------
echo "== teardown"
kn delete pod pod1 pod2 pod3 pod4 pod5 --wait=false >/dev/null
step "pods deleted (NodeUnpublish, NodeUnstage)" kn wait --for=delete pod/pod1 pod/pod2 pod/pod3 pod/pod4 pod/pod5 --timeout=180s
step "VolumeAttachments gone (ControllerUnpublish)" until_ok 120 none_of volumeattachment
step "pve-sim: no data disk left in the worker's config" until_ok 30 no_data_disks
kn delete volumesnapshot snap1 --wait=false >/dev/null
step "VolumeSnapshotContent deleted (DeleteSnapshot)" until_ok 120 none_of volumesnapshotcontent
kn delete pvc pvc1 pvc2 pvc3 pvc4 pvc5 --wait=false >/dev/null
step "PVs deleted (DeleteVolume)" until_ok 180 none_of pv
step "pve-sim: no holder VM left" until_ok 30 no_holders
step "pve-sim: no disk left on local-lvm" no_disks
step "no loop device of pve-sim attached" sh -c "! losetup -a | grep -qF '$SIM/'"
step "no CSI mount left (kubelet's volume and staging dirs)" sh -c "! grep -E ' $S/kubelet/(pods|plugins)/' /proc/self/mounts | grep -qE 'kubernetes.io~csi|/csi/$DRIVER/|volumeDevices'"
step "no kubelet volume dir left" sh -c "[ -z \"\$(find $S/kubelet/pods -path '*kubernetes.io~csi/*' 2>/dev/null)\" ]"
STEP_T=$(date +%s)
if "$HELM" uninstall proxmox-csi -n "$NS" --wait --timeout 120s >/dev/null 2>&1 && kn delete deploy snapshot-controller --wait >/dev/null 2>&1 \
   && until_ok 60 none_of pods -n "$NS"; then ok "helm uninstall: no Pod left"; else bad "helm uninstall"; fi
step "registration socket removed by the node plugin on shutdown" sh -c "! test -e '$S/kubelet/plugins_registry/$DRIVER-reg.sock'"
teardown_all
STEP_T=$(date +%s); left=""
pgrep -f "^$E2E_BIN/" >/dev/null && left+=" kubernetes"
pgrep -f "containerd --config $S/" >/dev/null && left+=" containerd"
pgrep -f "pve-sim --listen 127.0.0.1:$SIM_PORT" >/dev/null && left+=" pve-sim"
pgrep -f "containerd-shim.*$S/" >/dev/null && left+=" shims"
grep -qF " $S" /proc/self/mounts && left+=" mounts"
ls -d /sys/fs/cgroup/*/kubepods* >/dev/null 2>&1 && left+=" cgroups"
if [ -z "$left" ]; then ok "nothing left running, mounted, attached or in cgroups"; else bad "left behind:$left"; fi
TEARDOWN_DONE=1
finish
