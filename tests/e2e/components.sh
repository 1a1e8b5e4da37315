#!/usr/bin/env bash
# Builds the Kubernetes side of the end-to-end test from the Go module proxy, once per set of versions:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl, etcd, the kubernetes-csi sidecars
# (csi-provisioner, csi-attacher, csi-resizer, csi-snapshotter, snapshot-controller), the pause binary and
# the VolumeSnapshot CRDs. Everything comes from one Go module that requires all of them, so the shared
# k8s.io libraries are compiled once (a build per component took 2.5x longer on 2 cores).
#
# Sourced by kubernetes.sh; `e2e_components` leaves the binaries in $E2E_BIN and the CRDs in $E2E_CRD.
# The output directory is keyed by a hash of the versions below: changing one rebuilds, a rerun does not.

K8S_VERSION=v1.37.2          # k8s.io/kubernetes; its staging modules are published as v0.37.2
K8S_STAGING=v0.37.2
ETCD_VERSION=v3.6.16
PROVISIONER_VERSION=v6.4.0
ATTACHER_VERSION=v4.13.0
RESIZER_VERSION=v2.3.0
SNAPSHOTTER_VERSION=v8.7.0
PAUSE_VERSION=3.10

E2E_CACHE=${E2E_CACHE:-/var/cache/proxmox-csi-e2e}
E2E_KEY=$(printf '%s ' "$K8S_VERSION" "$ETCD_VERSION" "$PROVISIONER_VERSION" "$ATTACHER_VERSION" \
    "$RESIZER_VERSION" "$SNAPSHOTTER_VERSION" "$PAUSE_VERSION" build-2 | sha256sum | cut -c1-12)
E2E_BIN="$E2E_CACHE/components-$E2E_KEY/bin"
E2E_CRD="$E2E_CACHE/components-$E2E_KEY/crd"
export GOMODCACHE="$E2E_CACHE/go/mod" GOCACHE="$E2E_CACHE/go/build" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

# Prints the non-local replace directives of a module's go.mod (a module's own replace lines do not
# apply to a module that requires it; those pointing into its own tree are served as separate modules).
_foreign_replaces() {
    python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
lines = []
for block in re.findall(r'^replace\s*\(\n(.*?)^\)', text, re.S | re.M):
    lines += block.splitlines()
lines += [l[len('replace '):] for l in text.splitlines() if l.startswith('replace ') and '(' not in l]
for l in lines:
    l = l.split('//')[0].strip()
    if l and '=> ./' not in l and '=> ../' not in l:
        print(l)
PY
}

_gomod_of() { (cd /tmp && go mod download -json "$1@$2") | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])'; }

e2e_components() {
    local want=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl pause csi-provisioner
        csi-attacher csi-resizer csi-snapshotter snapshot-controller)
    local missing=0 b
    for b in "${want[@]}"; do [ -x "$E2E_BIN/$b" ] || missing=1; done
    if [ $missing = 0 ] && ls "$E2E_CRD"/*.yaml >/dev/null 2>&1; then
        echo "components: cached in $E2E_BIN"; return 0
    fi
    command -v go >/dev/null || { echo "components: go is required" >&2; return 1; }
    local mod="$E2E_CACHE/components-$E2E_KEY/module"
    rm -rf "$mod"; mkdir -p "$mod" "$E2E_BIN" "$E2E_CRD"
    local kmod
    kmod=$(_gomod_of k8s.io/kubernetes "$K8S_VERSION") || return 1
    {
        printf 'module proxmox-csi-e2e-components\n\ngo 1.26.0\n\nrequire (\n'
        printf '\tk8s.io/kubernetes %s\n' "$K8S_VERSION"
        printf '\tgithub.com/kubernetes-csi/external-provisioner/v6 %s\n' "$PROVISIONER_VERSION"
        printf '\tgithub.com/kubernetes-csi/external-attacher/v4 %s\n' "$ATTACHER_VERSION"
        printf '\tgithub.com/kubernetes-csi/external-resizer/v2 %s\n' "$RESIZER_VERSION"
        printf '\tgithub.com/kubernetes-csi/external-snapshotter/v8 %s\n' "$SNAPSHOTTER_VERSION"
        # the snapshotter's client/v8 is replaced by ./client in its own tree: require the published one
        printf '\tgithub.com/kubernetes-csi/external-snapshotter/client/v8 %s\n)\n\nreplace (\n' "$SNAPSHOTTER_VERSION"
        # k8s.io/kubernetes points every k8s.io/* library at ./staging: use the published tags instead
        sed -n '/^replace (/,/^)/p' "$kmod" | awk -v v="$K8S_STAGING" '/=> \.\/staging/ {print "\t" $1 " => " $1 " " v}'
        printf ')\n'
    } > "$mod/go.mod"
    local m v gm
    for m in external-provisioner/v6:$PROVISIONER_VERSION external-attacher/v4:$ATTACHER_VERSION \
             external-resizer/v2:$RESIZER_VERSION external-snapshotter/v8:$SNAPSHOTTER_VERSION; do
        gm=$(_gomod_of "github.com/kubernetes-csi/${m%%:*}" "${m##*:}") || return 1
        _foreign_replaces "$gm" | grep -v '^k8s.io/' | sed 's/^/replace /' >> "$mod/go.mod"
    done
    local pkgs=(
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl
        github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
        github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher
        github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer
        github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter
        github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller)
    local p gets=()
    for p in "${pkgs[@]}"; do
        case $p in
            k8s.io/kubernetes/*) gets+=("$p@$K8S_VERSION");;
            *) gets+=("$p");;   # at the version required above
        esac
    done
    ( cd "$mod" && go get "${gets[@]}" ) || return 1
    local ldf="-s -w" vp
    for vp in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldf="$ldf -X $vp.gitVersion=$K8S_VERSION -X $vp.gitMajor=1 -X $vp.gitMinor=37 -X $vp.gitTreeState=clean"
    done
    # one `go build` per binary: the build cache shares the compiled libraries between them
    local out
    for p in "${pkgs[@]}"; do
        out=$(basename "$p")
        case $p in *kubernetes-csi*) v="-X main.version=$(awk -v m="${p%/cmd/*}" '$1==m {print $2}' "$mod/go.mod" | head -1)";; *) v="";; esac
        echo "components: building $out"
        ( cd "$mod" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ldf $v" -o "$E2E_BIN/$out.tmp" "$p" ) || return 1
        mv "$E2E_BIN/$out.tmp" "$E2E_BIN/$out"
    done
    # etcd on its own: k8s.io/kubernetes links the etcd v3.7 libraries, the server we run is v3.6
    local emod="$E2E_CACHE/components-$E2E_KEY/etcd-module"
    rm -rf "$emod"; mkdir -p "$emod"
    printf 'module proxmox-csi-e2e-etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$emod/go.mod"
    echo "components: building etcd"
    ( cd "$emod" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" &&
      CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$E2E_BIN/etcd.tmp" go.etcd.io/etcd/server/v3 ) || return 1
    mv "$E2E_BIN/etcd.tmp" "$E2E_BIN/etcd"
    local kdir cdir
    kdir=$(cd "$mod" && go list -m -f '{{.Dir}}' k8s.io/kubernetes) || return 1
    gcc -Os -static -DVERSION=$PAUSE_VERSION -o "$E2E_BIN/pause" "$kdir/build/pause/linux/pause.c" || return 1
    cdir=$(cd "$mod" && go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8) || return 1
    install -m 0644 "$cdir"/config/crd/snapshot.storage.k8s.io_*.yaml "$E2E_CRD/"
    echo "components: built into $E2E_BIN"
}
