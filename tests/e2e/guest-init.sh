#!/bin/sh
# /init of the QEMU test guest (tests/e2e/guest.sh packs it): mounts the kernel file systems,
# loads the storage modules, starts udev (which makes /dev/disk/by-id from what QEMU reports),
# brings up the user-mode network and starts the node plugin. Two forwarders make the guest
# reachable from the host through QEMU's hostfwd: port 10000 is the node plugin's CSI socket,
# port 10022 runs a shell script sent by the test (its output, then "rc=N"). The guest has no
# other users; the ports are forwarded on the host's loopback only.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/lib/kubelet /csi
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/cryptsetup /run/udev
say() { echo "guest: $*" >/dev/console; }

for m in $(cat /etc/guest-modules); do modprobe "$m" 2>/dev/null || true; done
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=30

# udev gives the NIC its predictable name (ens18 and the like): take whatever is not lo.
NIC=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set lo up
ip addr add 10.0.2.15/24 dev "$NIC"
ip link set "$NIC" up
ip route add default via 10.0.2.2

arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p" | tail -1; }
NODE_ID=$(arg csi.node)
REGION=$(arg csi.region)
ZONE=$(arg csi.zone)
MAXV=$(arg csi.maxvolumes)
PVE=$(arg csi.pve)
if [ -n "$PVE" ]; then
    # Controller too (as in tests/sanity.sh), talking to the simulator on the host through
    # QEMU's user network (10.0.2.2 is the host's loopback).
    cat >/run/csi-config.yaml <<YAML
clusters:
  - region: ${REGION:-sim}
    url: $PVE
    token_id: "$(arg csi.token)"
    token_secret: "$(arg csi.secret)"
    allow_http: true
YAML
    MODE="all --config /run/csi-config.yaml --max-volumes-per-node ${MAXV:-24}"
else
    MODE=node
fi
# shellcheck disable=SC2086
/opt/proxmox-csi/proxmox-csi $MODE --endpoint unix:///csi/csi.sock --node-id "${NODE_ID:-worker-1}" \
    --region "${REGION:-sim}" --zone "${ZONE:-pve1}" --node-max-volumes "${MAXV:-24}" \
    --device-wait 30 >/run/node.log 2>&1 &
socat TCP-LISTEN:10000,fork,reuseaddr UNIX-CONNECT:/csi/csi.sock &
socat -t 3600 TCP-LISTEN:10022,fork,reuseaddr SYSTEM:'sh -s 2>&1; echo rc=$?' &
for _ in $(seq 100); do [ -S /csi/csi.sock ] && break; sleep 0.1; done
say "ready kernel=$(uname -r) node=${NODE_ID:-worker-1} mode=${MODE%% *}"
while true; do sleep 3600; done
