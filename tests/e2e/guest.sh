#!/usr/bin/env bash
# Builds (once) the worker-VM guest the QEMU end-to-end test boots: a Debian kernel from
# linux-image-amd64 and an initramfs holding a debootstrap minbase root with udev, cryptsetup,
# e2fsprogs, xfsprogs, socat and the kernel modules the guest needs.
# The node plugin binary and /init (tests/e2e/guest-init.sh) are not part of the cached image
# (they change with every build): the caller appends them as a second cpio archive, which the
# kernel unpacks over the first.
# The cache is keyed by the versions apt would install, so a Debian point release rebuilds it.
# Usage: bash tests/e2e/guest.sh CACHE_DIR   -> prints the directory holding vmlinuz and base.cpio.gz
set -euo pipefail
CACHE="${1:?usage: guest.sh CACHE_DIR}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=(udev dmsetup kmod cryptsetup-bin e2fsprogs xfsprogs util-linux mount socat iproute2 procps)
SELF_HASH=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)

# The kernel package linux-image-amd64 depends on names the versioned image.
KPKG=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -1)
[ -n "$KPKG" ] || { echo "guest.sh: apt knows no linux-image-amd64 (run apt-get update)" >&2; exit 1; }
VERSIONS=$(apt-cache show --no-all-versions "$KPKG" "${PACKAGES[@]}" |
    awk '/^Package: /{p=$2} /^Version: /{print p "=" $2}')
KEY=$(printf '%s\n%s\n' "$SELF_HASH" "$VERSIONS" | sha256sum | cut -c1-16)
OUT="$CACHE/guest-$KEY"
if [ -s "$OUT/base.cpio.gz" ] && [ -s "$OUT/vmlinuz" ]; then
    echo "$OUT"
    exit 0
fi

echo "guest.sh: building the guest ($KPKG, cache key $KEY)" >&2
mkdir -p "$CACHE"
BUILD="$(mktemp -d "$CACHE/build.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT
ROOTFS="$BUILD/root"

include=$(IFS=,; echo "${PACKAGES[*]}")
debootstrap --variant=minbase --include="$include" "$SUITE" "$ROOTFS" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1 ||
    { tail -30 "$BUILD/debootstrap.log" >&2; exit 1; }

# The kernel: unpacked, not installed (no initramfs-tools, no bootloader in the guest).
(cd "$BUILD" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" >/dev/null)
dpkg-deb -x "$BUILD"/linux-image-*.deb "$BUILD/kernel"
KVER=$(ls "$BUILD/kernel/lib/modules")
cp "$BUILD/kernel/boot/vmlinuz-$KVER" "$BUILD/vmlinuz"

# Only the modules the guest needs, with their dependencies, resolved by the guest's own kmod
# (the host may have none): the whole tree goes in, depmod and modprobe --show-depends run in
# the root, and every module not listed is dropped again.
MODULES=(virtio_pci virtio_scsi virtio_net sd_mod scsi_mod dm_mod dm_crypt ext4 xfs
    crc32c_generic crc32c_intel aesni_intel xts cbc sha256_generic algif_skcipher af_packet)
mkdir -p "$ROOTFS/lib/modules"
cp -a "$BUILD/kernel/lib/modules/$KVER" "$ROOTFS/lib/modules/"
chroot "$ROOTFS" depmod "$KVER"
for m in "${MODULES[@]}"; do
    chroot "$ROOTFS" modprobe -S "$KVER" --show-depends "$m" 2>/dev/null || true
done | awk '$1 == "insmod" {print $2}' | sort -u >"$BUILD/keep"
find "$ROOTFS/lib/modules/$KVER/kernel" -name '*.ko*' | sed "s|^$ROOTFS||" | sort >"$BUILD/all"
comm -23 "$BUILD/all" "$BUILD/keep" | sed "s|^|$ROOTFS|" | xargs -r rm -f
chroot "$ROOTFS" depmod "$KVER"
printf '%s\n' "${MODULES[@]}" >"$ROOTFS/etc/guest-modules"

# Nothing of apt's caches or docs is needed at run time.
rm -rf "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/{doc,man,info,locale}/*
printf '%s\n' "$VERSIONS" >"$ROOTFS/etc/guest-versions"

(cd "$ROOTFS" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$BUILD/base.cpio.gz"
mkdir -p "$OUT"
mv "$BUILD/vmlinuz" "$BUILD/base.cpio.gz" "$OUT/"
printf '%s\n' "$VERSIONS" >"$OUT/versions"
echo "$OUT"
