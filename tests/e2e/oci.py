#!/usr/bin/env python3
"""Writes a single-layer OCI image layout as a tar archive that `ctr images import` reads.

No Docker engine and no registry exist on the test machine, so the e2e images are written here:
a root filesystem (a directory tree, or single files) becomes one gzip layer, with an image
config carrying the entrypoint and environment.

  oci.py --out IMG.tar --ref NAME:TAG --entrypoint '["/bin/x"]' [--env K=V ...]
         [--rootfs DIR] [--file SRC=DEST ...] [--symlink DEST=TARGET ...] [--user UID]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def zero_owner(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    ti.mtime = 0
    ti.uname = ti.gname = ""
    return ti


def build_layer(args) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        if args.rootfs:
            # sorted walk: the same tree gives the same layer digest
            root = args.rootfs
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in [""] + sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                    path = os.path.join(dirpath, name) if name else dirpath
                    rel = os.path.relpath(path, root)
                    if rel == ".":
                        continue
                    ti = zero_owner(t.gettarinfo(path, rel))
                    if ti.isreg():
                        with open(path, "rb") as f:
                            t.addfile(ti, f)
                    elif ti.isdir() or ti.issym() or ti.islnk() or ti.ischr() or ti.isblk() or ti.isfifo():
                        t.addfile(ti)
        made = set()
        for src, dst in args.file + args.symlink:
            parts = dst.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    t.addfile(zero_owner(ti))
        if not args.rootfs:
            for d, mode in (("tmp", 0o1777), ("etc", 0o755)):
                if d not in made:
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode = tarfile.DIRTYPE, mode
                    t.addfile(zero_owner(ti))
        for src, dst in args.file:
            ti = zero_owner(t.gettarinfo(src, dst.strip("/")))
            ti.uid = ti.gid = 0
            with open(src, "rb") as f:
                t.addfile(ti, f)
        for dst, target in args.symlink:
            ti = tarfile.TarInfo(dst.strip("/"))
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            t.addfile(zero_owner(ti))
    return buf.getvalue()


def pair(s: str):
    a, sep, b = s.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected A=B, got {s!r}")
    return (a, b)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--entrypoint", required=True, type=json.loads)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--user", default="")
    p.add_argument("--rootfs")
    p.add_argument("--file", action="append", default=[], type=pair)
    p.add_argument("--symlink", action="append", default=[], type=pair)
    args = p.parse_args()

    raw = build_layer(args)
    layer = gzip.compress(raw, compresslevel=1, mtime=0)
    env = list(args.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    cfg = {"Entrypoint": args.entrypoint, "Env": env, "WorkingDir": "/"}
    if args.user:
        cfg["User"] = args.user
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [digest(raw)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/e2e/oci.py"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": args.ref,
                            "org.opencontainers.image.ref.name": args.ref.rsplit(":", 1)[1]},
        }],
    }, sort_keys=True).encode()
    with tarfile.open(args.out + ".tmp", "w") as t:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(zero_owner(ti), io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for blob in (config, manifest, layer):
            add("blobs/sha256/" + digest(blob)[7:], blob)
        add("index.json", index)
    os.replace(args.out + ".tmp", args.out)
    print(args.ref, digest(manifest))


if __name__ == "__main__":
    main()
