#!/usr/bin/env bash
# A one-node Kubernetes on 127.0.0.1 for the end-to-end test: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd and kubelet as host processes, state under
# $E2E_STATE. Sourced by kubernetes.sh: cluster_up / cluster_down.
#
# What this machine kind needs (each is why a line below exists):
# - cgroup v1 hierarchies with an empty cgroup2: kubelet 1.37 runs only with failCgroupV1: false
#   and the cgroupfs driver;
# - no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj, so containerd restricts it;
# - kubelet would rewrite host sysctls (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops):
#   it runs in its own mount namespace where those files are bind-mounted over (the host's mounts
#   are private here, so nothing leaks out). The state dir is an rshared bind mount, a peer in
#   both namespaces: kubelet's tmpfs volumes (service account tokens) reach containerd, and the
#   node plugin's mounts (Bidirectional) reach kubelet;
# - no pod network on purpose: a loopback-only CNI makes the node Ready, every Pod uses
#   hostNetwork, and the API server reaches kubelet by the name "localhost"-resolvable hostname.

E2E_STATE=${E2E_STATE:-/tmp/proxmox-csi-e2e}
E2E_NODE=${E2E_NODE:-worker-1}
S=$E2E_STATE
export KUBECONFIG="$S/admin.kubeconfig"

_start() { # name cmd... : background process with a pid file and a log
    local n=$1; shift
    setsid "$@" >"$S/logs/$n.log" 2>&1 </dev/null &
    echo $! >"$S/run/$n.pid"
}

_wait() { # seconds what cmd...
    local t=$1 what=$2 i; shift 2
    for ((i = 0; i < t * 4; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    echo "cluster: timeout waiting for $what" >&2; return 1
}

_pki() {
    local p=$S/pki; mkdir -p "$p"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$p/ca.key" -out "$p/ca.crt" -days 30 -subj /CN=e2e-ca 2>/dev/null
    local spec n cn o san
    for spec in "apiserver|kube-apiserver||IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes.default.svc" \
                "admin|admin|system:masters|" \
                "kubelet|system:node:$E2E_NODE|system:nodes|IP:127.0.0.1,DNS:localhost,DNS:$E2E_NODE"; do
        IFS='|' read -r n cn o san <<<"$spec"
        openssl req -newkey rsa:2048 -nodes -keyout "$p/$n.key" -out "$p/$n.csr" -subj "/CN=$cn${o:+/O=$o}" 2>/dev/null
        { echo "extendedKeyUsage=serverAuth,clientAuth"; [ -n "$san" ] && echo "subjectAltName=$san"; } >"$p/$n.ext"
        openssl x509 -req -in "$p/$n.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 30 \
            -extfile "$p/$n.ext" -out "$p/$n.crt" 2>/dev/null
    done
    openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
    openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
    local who
    for who in admin kubelet; do
        cat >"$S/$who.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://127.0.0.1:6443", certificate-authority: $p/ca.crt}}]
users: [{name: $who, user: {client-certificate: $p/$who.crt, client-key: $p/$who.key}}]
contexts: [{name: e2e, context: {cluster: e2e, user: $who}}]
current-context: e2e
KC
    done
}

_configs() {
    cat >"$S/containerd.toml" <<EOT
version = 2
root = "$S/containerd/root"
state = "$S/containerd/state"
[grpc]
  address = "$S/containerd/containerd.sock"
[ttrpc]
  address = "$S/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:$PAUSE_VERSION"
  enable_cdi = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$S/cni"
EOT
    mkdir -p "$S/cni"
    echo '{"cniVersion":"1.0.0","name":"loopback-only","plugins":[{"type":"loopback"}]}' >"$S/cni/10-loopback.conflist"
    cat >"$S/kubelet.yaml" <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$S/containerd/containerd.sock
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $S/pki/ca.crt}}
authorization: {mode: Webhook}
tlsCertFile: $S/pki/kubelet.crt
tlsPrivateKeyFile: $S/pki/kubelet.key
failSwapOn: false
podLogsDir: $S/pod-logs
resolvConf: /etc/resolv.conf
staticPodPath: ""
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
syncFrequency: 10s
EOT
}

# cluster_up: everything up and the node Ready. Needs E2E_BIN (components.sh).
cluster_up() {
    local B=$E2E_BIN
    mkdir -p "$S"/{run,logs,data,kubelet/plugins_registry,pod-logs,containerd}
    # rshared bind of the state dir: kubelet's namespace (slave) sees the plugin's mounts
    mountpoint -q "$S" || { mount --bind "$S" "$S" && mount --make-rshared "$S"; } || return 1
    _pki; _configs
    _start etcd "$B/etcd" --name e2e --data-dir "$S/data/etcd" --unsafe-no-fsync \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster e2e=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
    _wait 30 etcd curl -sf http://127.0.0.1:2381/health || return 1
    local P=$S/pki
    _start kube-apiserver "$B/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=6443 --endpoint-reconciler-type=none \
        --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" --client-ca-file="$P/ca.crt" \
        --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$P/sa.pub" \
        --service-account-signing-key-file="$P/sa.key" --service-cluster-ip-range=10.96.0.0/24 \
        --authorization-mode=Node,RBAC --allow-privileged=true \
        --kubelet-client-certificate="$P/admin.crt" --kubelet-client-key="$P/admin.key" \
        --kubelet-preferred-address-types=Hostname --profiling=false
    _wait 60 kube-apiserver "$B/kubectl" get --raw /readyz || return 1
    _start kube-controller-manager "$B/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
        --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
        --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false --use-service-account-credentials \
        --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
        --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key"
    _start kube-scheduler "$B/kube-scheduler" --kubeconfig="$KUBECONFIG" --authentication-kubeconfig="$KUBECONFIG" \
        --authorization-kubeconfig="$KUBECONFIG" --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false
    _start containerd /usr/bin/containerd --config "$S/containerd.toml"
    _wait 30 containerd test -S "$S/containerd/containerd.sock" || return 1
    local sys=$S/run/sysctl; mkdir -p "$sys"
    echo 1 >"$sys/overcommit_memory"; echo 10 >"$sys/panic"; echo 1 >"$sys/panic_on_oops"
    _start kubelet unshare -m --propagation unchanged sh -c "
        mount --bind $sys/overcommit_memory /proc/sys/vm/overcommit_memory &&
        mount --bind $sys/panic /proc/sys/kernel/panic &&
        mount --bind $sys/panic_on_oops /proc/sys/kernel/panic_on_oops &&
        exec $B/kubelet --config=$S/kubelet.yaml --kubeconfig=$S/kubelet.kubeconfig \
            --hostname-override=$E2E_NODE --root-dir=$S/kubelet --v=2"
    _wait 60 kubelet curl -sf http://127.0.0.1:10248/healthz || return 1
    _wait 90 "node $E2E_NODE Ready" "$B/kubectl" wait --for=condition=Ready "node/$E2E_NODE" --timeout=1s
}

# ctr on the test's containerd
e2e_ctr() { ctr -a "$S/containerd/containerd.sock" -n k8s.io "$@"; }

_stop() { # name: TERM, then KILL after 10 s; only the pid we started
    local f=$S/run/$1.pid p i
    [ -f "$f" ] || return 0
    p=$(cat "$f")
    if kill -0 "$p" 2>/dev/null; then
        kill "$p" 2>/dev/null
        for ((i = 0; i < 40; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
    fi
    rm -f "$f"
}

# cluster_down: stops what cluster_up started (by pid file), unmounts what is left below the
# state dir and removes the Pods' cgroups. Safe to call twice and after a failed start.
cluster_down() {
    _stop kubelet
    if [ -S "$S/containerd/containerd.sock" ] && [ -f "$S/run/containerd.pid" ]; then
        local c
        for c in $(e2e_ctr tasks ls -q 2>/dev/null); do e2e_ctr tasks kill -s SIGKILL "$c" >/dev/null 2>&1; done
        sleep 1
        for c in $(e2e_ctr tasks ls -q 2>/dev/null); do e2e_ctr tasks delete -f "$c" >/dev/null 2>&1; done
        for c in $(e2e_ctr containers ls -q 2>/dev/null); do e2e_ctr containers delete "$c" >/dev/null 2>&1; done
    fi
    local n
    for n in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do _stop "$n"; done
    # Shims of Pod sandboxes kubelet had not yet removed outlive containerd: they are ours (their
    # -address is our containerd's socket), their tasks are gone; stop them.
    local shim
    for ((n = 0; n < 20; n++)); do pgrep -f "containerd-shim.*-address $S/containerd/" >/dev/null || break; sleep 0.25; done
    for shim in $(pgrep -f "containerd-shim.*-address $S/containerd/"); do kill "$shim" 2>/dev/null; done
    for ((n = 0; n < 20; n++)); do pgrep -f "containerd-shim.*-address $S/containerd/" >/dev/null || break; sleep 0.25; done
    local m
    for m in $(awk '{print $2}' /proc/self/mounts | grep -F "$S/" | sort -r); do umount -l "$m" 2>/dev/null; done
    mountpoint -q "$S" && umount -l "$S"
    local cg
    for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
        [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}
