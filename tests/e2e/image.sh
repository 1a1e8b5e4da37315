#!/usr/bin/env bash
# Container images for the end-to-end test, made without a Docker engine or a registry:
#   driver_image   the driver image from the Dockerfile's own steps: its build-stage `cargo build`
#                  command is run as written, its runtime-stage apt packages are installed into a
#                  debootstrap'ed Debian of the runtime stage's release (minbase), and its COPY
#                  destination, ENV and ENTRYPOINT go into the image. Nothing is restated here, so
#                  the Dockerfile and this image cannot drift apart.
#   binary_image   a one-binary image (the kubernetes-csi sidecars, pause, busybox).
# Images are OCI-layout tar files (tests/e2e/oci.py) for `ctr images import`.
# Sourced; needs ROOT (the repository) and E2E_CACHE.

IMAGE_DIR="${E2E_CACHE:?}/images"

# The Dockerfile facts the image is built from, printed as shell assignments:
#   DF_CARGO (build command), DF_ARTIFACT (the binary it installs), DF_DEST (runtime COPY target),
#   DF_RELEASE (runtime stage's Debian suite), DF_PACKAGES, DF_ENV (K=V ...), DF_ENTRYPOINT (JSON)
dockerfile_facts() {
    python3 - "$1" <<'PY'
import json, re, shlex, sys
text = open(sys.argv[1]).read()
# join continuation lines, drop comments
lines, cur = [], ""
for raw in text.splitlines():
    s = raw.strip()
    if s.startswith("#") and not cur:
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    cur += s
    if cur:
        lines.append(cur)
    cur = ""
stages, stage = [], None
for l in lines:
    word, _, rest = l.partition(" ")
    word = word.upper()
    if word == "FROM":
        stage = {"from": rest.split()[0], "name": rest.split()[-1] if " AS " in rest.upper() else "", "cmds": []}
        stages.append(stage)
    elif stage is not None:
        stage["cmds"].append((word, rest.strip()))
def fail(msg):
    sys.exit("Dockerfile: " + msg)
build = next((s for s in stages if s["name"] == "build"), None) or fail("no stage named build")
runtime = stages[-1]
cargo = artifact = None
for word, rest in build["cmds"]:
    if word != "RUN":
        continue
    for part in re.split(r"\s*&&\s*", rest):
        part = re.sub(r"--mount=\S+\s*", "", part).strip()
        if part.startswith("cargo build"):
            cargo = part
        m = re.match(r"install\s.*\s(\S+)\s+(\S+)$", part)
        if m:
            artifact = m.group(1)
cargo or fail("no `cargo build` in the build stage")
artifact or fail("no `install ... target/... /out/...` in the build stage")
packages = None
for word, rest in runtime["cmds"]:
    if word == "RUN" and "apt-get install" in rest:
        seg = next(p for p in re.split(r"\s*&&\s*", rest) if "apt-get install" in p)
        packages = [w for w in seg.split()[2:] if not w.startswith("-") and w != "install"]
packages or fail("no apt-get install in the runtime stage")
m = re.match(r"debian:(\w+)", runtime["from"]) or fail("runtime stage is not FROM debian:<suite>")
dest = next((rest.split()[-1] for w, rest in runtime["cmds"] if w == "COPY" and "--from=build" in rest), None) or fail("no COPY --from=build")
env = []
for w, rest in runtime["cmds"]:
    if w == "ENV":
        env += shlex.split(rest) if "=" in rest.split()[0] else ["%s=%s" % tuple(rest.split(None, 1))]
entry = next((rest for w, rest in runtime["cmds"] if w == "ENTRYPOINT"), None) or fail("no ENTRYPOINT")
json.loads(entry)
out = {"DF_CARGO": cargo, "DF_ARTIFACT": artifact, "DF_DEST": dest, "DF_RELEASE": m.group(1),
       "DF_PACKAGES": " ".join(packages), "DF_ENV": " ".join(env), "DF_ENTRYPOINT": entry}
for k, v in out.items():
    print("%s=%s" % (k, shlex.quote(v)))
PY
}

# A Debian root filesystem with the runtime packages, cached per suite + package list.
_runtime_rootfs() { # suite "pkgs"
    local key dir
    key=$(printf '%s %s' "$1" "$2" | sha256sum | cut -c1-12)
    dir="$IMAGE_DIR/rootfs-$1-$key"
    if [ ! -f "$dir.done" ]; then
        command -v debootstrap >/dev/null || { echo "image: debootstrap is required" >&2; return 1; }
        rm -rf "$dir"; mkdir -p "$IMAGE_DIR"
        echo "image: debootstrap $1 (minbase) + $2" >&2
        debootstrap --variant=minbase --include="${2// /,}" "$1" "$dir" http://deb.debian.org/debian >"$dir.log" 2>&1 \
            || { tail -20 "$dir.log" >&2; return 1; }
        # what the Dockerfile's `rm -rf /var/lib/apt/lists/*` and a slim base leave out
        rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
        touch "$dir.done"
    fi
    echo "$dir"
}

# driver_image OUT.tar REF: builds the binary with the Dockerfile's cargo command and packs the image.
driver_image() {
    local out=$1 ref=$2 facts
    facts=$(dockerfile_facts "$ROOT/Dockerfile") || return 1
    eval "$facts"
    echo "image: $DF_CARGO" >&2
    ( cd "$ROOT" && $DF_CARGO ) >&2 || return 1
    local rootfs stage
    rootfs=$(_runtime_rootfs "$DF_RELEASE" "$DF_PACKAGES") || return 1
    # the image's tree: the cached rootfs plus the binary, copied so the cache stays clean
    stage="$IMAGE_DIR/driver-stage"
    rm -rf "$stage"; cp -a "$rootfs" "$stage"
    install -D -m 0755 "$ROOT/$DF_ARTIFACT" "$stage$DF_DEST"
    local envargs=() e
    for e in $DF_ENV; do envargs+=(--env "$e"); done
    python3 "$ROOT/tests/e2e/oci.py" --out "$out" --ref "$ref" --entrypoint "$DF_ENTRYPOINT" \
        "${envargs[@]}" --rootfs "$stage" >&2 || return 1
    rm -rf "$stage"
}

# binary_image OUT.tar REF BINARY [ENTRYPOINT_JSON]: one static binary at /<name>.
binary_image() {
    local out=$1 ref=$2 bin=$3 name
    name=$(basename "$bin")
    python3 "$ROOT/tests/e2e/oci.py" --out "$out" --ref "$ref" --entrypoint "${4:-[\"/$name\"]}" \
        --file "$bin=/$name" >/dev/null
}
