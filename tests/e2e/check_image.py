#!/usr/bin/env python3
"""Checks that an OCI-layout image tar is what the Dockerfile describes.

  check_image.py IMAGE.tar REF ENTRYPOINT_JSON "ENV K=V ..." BIN_PATH_IN_IMAGE LOCAL_BIN "PKG ..."

REF is the image name (the chart's repository:tag); the entrypoint and env must equal the
Dockerfile's; the binary in the image must be byte-identical to LOCAL_BIN (what the Dockerfile's
cargo command built); every apt package of the runtime stage must be installed in the image.
Prints each difference and exits 1 if there is any.
"""
import gzip, hashlib, io, json, sys, tarfile

img, ref, entry, env, binpath, localbin, pkgs = sys.argv[1:8]
errors = []
with tarfile.open(img) as t:
    blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":", 1)[1]).read()
    index = json.load(t.extractfile("index.json"))
    m = index["manifests"][0]
    name = m.get("annotations", {}).get("io.containerd.image.name")
    if name != ref:
        errors.append(f"image name {name!r} != chart {ref!r}")
    manifest = json.loads(blob(m["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))["config"]
    if config.get("Entrypoint") != json.loads(entry):
        errors.append(f"entrypoint {config.get('Entrypoint')} != Dockerfile {entry}")
    for e in env.split():
        if e not in config.get("Env", []):
            errors.append(f"ENV {e} of the Dockerfile missing from the image")
    want = hashlib.sha256(open(localbin, "rb").read()).hexdigest()
    got, status = None, ""
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer["digest"])))) as lt:
            for member in lt:
                if member.name == binpath and member.isreg():
                    got = hashlib.sha256(lt.extractfile(member).read()).hexdigest()
                    if not member.mode & 0o111:
                        errors.append(f"{binpath} is not executable")
                elif member.name == "var/lib/dpkg/status":
                    status = lt.extractfile(member).read().decode()
    if got != want:
        errors.append(f"{binpath} in the image ({got}) is not {localbin} ({want})")
    installed = set()
    for para in status.split("\n\n"):
        fields = dict(l.split(": ", 1) for l in para.splitlines() if ": " in l and not l.startswith(" "))
        if fields.get("Status", "").endswith(" installed"):
            installed.add(fields.get("Package"))
    for p in pkgs.split():
        if p not in installed:
            errors.append(f"package {p} of the Dockerfile not installed in the image")
for e in errors:
    print("image check:", e)
sys.exit(1 if errors else 0)
