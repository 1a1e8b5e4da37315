# syntax=docker/dockerfile:1
#
# Image for both halves of the driver: `proxmox-csi controller` (Deployment)
# and `proxmox-csi node` (DaemonSet). One image keeps the two in lock-step.

# ---- build ------------------------------------------------------------------
# Same Debian release as the runtime stage, so the glibc the binary links
# against is the one it runs with.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes vendored with the build dependencies, so no protobuf-compiler
# package is installed here. The cache mounts keep the crate registry and
# target/ between builds; the binary is copied out because a cache mount is
# not part of the resulting layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin proxmox-csi --no-default-features \
 && install -D -m 0755 target/release/proxmox-csi /out/proxmox-csi

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim
# The node plugin shells out to these when it stages a volume:
#   e2fsprogs      mkfs.ext4, resize2fs
#   xfsprogs       mkfs.xfs, xfs_growfs
#   util-linux     blkid (detects an existing filesystem before formatting)
#   mount          mount, umount
#   cryptsetup-bin cryptsetup, for encrypted volumes
# ca-certificates lets the controller verify a Proxmox API certificate that
# chains to a public CA; a private CA is given with `ca_file` in the config.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      e2fsprogs xfsprogs util-linux mount cryptsetup-bin ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/proxmox-csi /usr/local/bin/proxmox-csi
# The log formatter colours its output even when stderr is not a terminal;
# container logs end up in files and log collectors, where escape codes are
# noise. NO_COLOR turns the colours off.
ENV NO_COLOR=1
# No USER line: the node plugin has to run as root (privileged) to format and
# mount block devices, so the image default stays root. The controller only
# talks HTTPS and gRPC and is run as an unprivileged uid by its manifest.
ENTRYPOINT ["/usr/local/bin/proxmox-csi"]
