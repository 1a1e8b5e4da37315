#!/usr/bin/env bash
# Pinned developer tools, built from the Go module proxy and cached in target/tools.
# Source this file, then call the function for the tool you need:
#   source tests/tools/ensure.sh; ensure_helm; ensure_promtool
# Each function is a no-op when the pinned version is already there, prints the
# path of the binary on stdout (HELM="$(ensure_helm)"), puts target/tools first on
# PATH when called in the current shell (ensure_helm >/dev/null; helm version), and
# fails (non-zero) if Go is missing or the build fails.
# Versions are pinned here once, so every script that uses a tool gets the same one.

HELM_MODULE=helm.sh/helm/v3
HELM_VERSION=v3.22.0
# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`):
# helm's Makefile derives it from its k8s.io/client-go (v0.37.0 in v3.22.0's go.mod, so
# 1.37); a plain `go install` would leave the source default of 1.20, which this
# chart's kubeVersion (>=1.25) refuses.
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=37
PROMETHEUS_MODULE=github.com/prometheus/prometheus
PROMETHEUS_VERSION=v0.316.0

_ensure_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$_ensure_root/target/tools}"

_ensure_path() {
    case ":$PATH:" in
        *":$TOOLS_DIR:"*) ;;
        *) export PATH="$TOOLS_DIR:$PATH" ;;
    esac
}

_ensure_go() {
    if ! command -v go >/dev/null 2>&1; then
        [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
    fi
    command -v go >/dev/null 2>&1 || { echo "go is required to build $1" >&2; return 1; }
}

# A tool is current when its stamp file names the pinned version: the binaries'
# own --version output depends on build flags and is not a reliable check.
_ensure_current() { # name version
    [ -x "$TOOLS_DIR/$1" ] && [ "$(cat "$TOOLS_DIR/.$1.version" 2>/dev/null)" = "$2" ]
}

ensure_helm() {
    local stamp="$HELM_VERSION k8s-$HELM_K8S_MAJOR.$HELM_K8S_MINOR"
    if ! _ensure_current helm "$stamp"; then
        _ensure_go helm || return 1
        mkdir -p "$TOOLS_DIR"
        echo "building helm $HELM_VERSION into $TOOLS_DIR" >&2
        # The same -X variables helm's Makefile sets for a release build.
        local ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
        local pkg
        for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
            ldflags+=" -X $pkg.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
        done
        GOBIN="$TOOLS_DIR" CGO_ENABLED=0 go install -ldflags "$ldflags" \
            "$HELM_MODULE/cmd/helm@$HELM_VERSION" >&2 || return 1
        echo "$stamp" >"$TOOLS_DIR/.helm.version"
    fi
    _ensure_path
    echo "$TOOLS_DIR/helm"
}

# promtool lives in the prometheus module. It is built inside a throw-away wrapper
# module that requires the pinned version (the same code, resolved as a dependency)
# rather than with `go install mod@version`, which refuses any module whose go.mod
# has replace directives, as some prometheus releases have had.
ensure_promtool() {
    if ! _ensure_current promtool "$PROMETHEUS_VERSION"; then
        _ensure_go promtool || return 1
        mkdir -p "$TOOLS_DIR"
        echo "building promtool ($PROMETHEUS_MODULE $PROMETHEUS_VERSION) into $TOOLS_DIR" >&2
        local dir rc=0
        dir="$(mktemp -d /tmp/promtool-build.XXXXXX)"
        (
            set -e
            cd "$dir"
            go mod init promtool-build >/dev/null 2>&1
            go get "$PROMETHEUS_MODULE/cmd/promtool@$PROMETHEUS_VERSION"
            CGO_ENABLED=0 go build -o "$TOOLS_DIR/promtool" \
                -ldflags "-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
                "$PROMETHEUS_MODULE/cmd/promtool"
        ) >&2 || rc=$?
        rm -rf "$dir"
        [ "$rc" = 0 ] || return "$rc"
        echo "$PROMETHEUS_VERSION" >"$TOOLS_DIR/.promtool.version"
    fi
    _ensure_path
    echo "$TOOLS_DIR/promtool"
}
