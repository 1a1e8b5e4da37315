//! The CSI volume id, and the names and disk identities derived from it.
//!
//! A volume id is `<region>/<zone>/<storage>/<tag>/<volname>`: the cluster,
//! the PVE node the disk was allocated on, the storage id, a tag naming the
//! holder VM, and PVE's volume name (which may itself contain `/`, e.g.
//! `100000/vm-100000-disk-0.raw` on a dir storage). Everything the controller
//! needs to find the disk again is in the id, so no state is kept outside
//! Proxmox. The volume name carries the vmid of the holder VM that owns the
//! disk (`vm-<holder>-disk-0`); vmids are reused once free, so the tag (a
//! hash of the holder's name) is what keeps an old id from ever naming a
//! newer volume that got the same vmid.

use sha2::{Digest, Sha256};
use std::fmt;

/// Topology key for the PVE cluster (a region of the configuration file).
pub const TOPOLOGY_REGION: &str = "topology.kubernetes.io/region";
/// Topology key for the PVE node.
pub const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId {
    pub region: String,
    pub zone: String,
    pub storage: String,
    /// `holder_tag` of the holder VM's name.
    pub tag: String,
    pub volname: String,
}

/// 8 hex digits identifying a holder VM by name (see the module comment).
pub fn holder_tag(holder_name: &str) -> String {
    hash_hex(holder_name)[..8].to_string()
}

impl VolumeId {
    /// Parse an id; `None` when it is not one of ours (callers answer NotFound).
    pub fn parse(s: &str) -> Option<VolumeId> {
        // Ours are well below this (PVE volume names are short); longer ones
        // were never issued.
        if s.len() > MAX_ID_LEN {
            return None;
        }
        let mut it = s.splitn(5, '/');
        let region = it.next()?;
        let zone = it.next()?;
        let storage = it.next()?;
        let tag = it.next()?;
        let volname = it.next()?;
        let ok = |p: &str| !p.is_empty() && !p.contains(char::is_whitespace) && !p.contains(':');
        let tag_ok = tag.len() == 8
            && tag
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if !(ok(region) && ok(zone) && ok(storage) && tag_ok && !volname.is_empty())
            || volname.contains(char::is_whitespace)
        {
            return None;
        }
        Some(VolumeId {
            region: region.into(),
            zone: zone.into(),
            storage: storage.into(),
            tag: tag.into(),
            volname: volname.into(),
        })
    }

    /// Build from a PVE volid (`<storage>:<volname>`) and the holder's name.
    pub fn from_volid(
        region: &str,
        zone: &str,
        volid: &str,
        holder_name: &str,
    ) -> Option<VolumeId> {
        let (storage, volname) = volid.split_once(':')?;
        Some(VolumeId {
            region: region.into(),
            zone: zone.into(),
            storage: storage.into(),
            tag: holder_tag(holder_name),
            volname: volname.into(),
        })
    }

    /// PVE's volume id.
    pub fn volid(&self) -> String {
        format!("{}:{}", self.storage, self.volname)
    }

    /// Where the volume can be used: its region, and its zone unless the
    /// storage is shared by every node of the cluster.
    pub fn topology(&self, shared: bool) -> crate::csi::Topology {
        let mut segments =
            std::collections::HashMap::from([(TOPOLOGY_REGION.to_string(), self.region.clone())]);
        if !shared {
            segments.insert(TOPOLOGY_ZONE.to_string(), self.zone.clone());
        }
        crate::csi::Topology { segments }
    }

    /// The WWN the disk is attached with. Derived from the volume (never the
    /// slot) so the node can tell this disk from every other one, even after
    /// detach/attach cycles land it in different slots. NAA type 5, 64 bit.
    /// The tag is part of it, so a later volume that reuses the vmid (and so
    /// the volid) still gets a different WWN.
    pub fn wwn(&self) -> String {
        let h = hash_hex(&self.identity());
        format!("0x5{}", &h[..15])
    }

    /// The SCSI serial (max 20 bytes in the guest), also derived from the volume.
    pub fn serial(&self) -> String {
        let h = hash_hex(&self.identity());
        format!("csi-{}", &h[..16])
    }

    fn identity(&self) -> String {
        format!("{}#{}", self.volid(), self.tag)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.region, self.zone, self.storage, self.tag, self.volname
        )
    }
}

fn hash_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The longest volume id this driver issues or accepts.
pub const MAX_ID_LEN: usize = 512;

/// At most this many bytes of a caller's text go into an error message: a
/// 1 MiB id must not come back as a 2 MiB error.
pub const MAX_ECHO: usize = 256;

/// A caller-supplied text for a message: cut to [`MAX_ECHO`] bytes (on a
/// character boundary) and with control characters escaped.
pub fn shorten(s: &str) -> String {
    let mut end = s.len().min(MAX_ECHO);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = s[..end].chars().flat_map(char::escape_debug).collect();
    if end < s.len() {
        out.push_str(&format!("…({} bytes)", s.len()));
    }
    out
}

/// Prefix of the name of every holder VM (the stopped VM that owns one volume).
pub const HOLDER_PREFIX: &str = "csi-vol-";
/// The PVE tag every holder VM carries.
pub const HOLDER_TAG: &str = "proxmox-csi";

/// The holder VM name for a CSI volume name. Deterministic, so a repeated
/// CreateVolume finds the volume it made before without any other state.
/// Kubernetes names (`pvc-<uuid>`) stay readable in the PVE UI; any other
/// name (up to 128 bytes of anything) is hashed, which also keeps it a
/// valid DNS name as PVE requires.
pub fn holder_name(csi_name: &str) -> String {
    let is_pvc = csi_name.len() == 40
        && csi_name.starts_with("pvc-")
        && csi_name[4..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-');
    if is_pvc {
        format!("{HOLDER_PREFIX}{csi_name}")
    } else {
        format!("{HOLDER_PREFIX}h{}", &hash_hex(csi_name)[..32])
    }
}

/// The PVE snapshot name for a CSI snapshot name (`pve-configid`: starts
/// with a letter, at most 40 characters).
pub fn snap_name(csi_name: &str) -> String {
    format!("s{}", &hash_hex(csi_name)[..32])
}

/// Prefix of the name of every snapshot holder: the stopped VM that owns a
/// full copy of a volume, taken as a CSI snapshot on storages whose own
/// snapshots PVE cannot copy (see `controller::copy_snapshots`). Not a
/// holder prefix: a snapshot holder is never a volume.
pub const SNAPSHOT_HOLDER_PREFIX: &str = "csi-snap-";

/// The name a copy snapshot goes by in its snapshot id and tags: `c` and
/// the same 32 hex digits as `snap_name`, so the two kinds never collide
/// and an id says which kind it names without asking PVE.
pub fn copy_snap_name(csi_name: &str) -> String {
    format!("c{}", &snap_name(csi_name)[1..])
}

/// Whether `name` is a copy snapshot's name (`c` + 32 hex digits).
pub fn is_copy_snap_name(name: &str) -> bool {
    name.len() == 33
        && name.starts_with('c')
        && name[1..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// The disk of holder `vmid`, as PVE names a VM's first disk.
/// The holder's disk name: with the format's extension on file storages
/// (`Some(format)`), bare on block storages.
pub fn holder_disk(vmid: u64, file_format: Option<&str>) -> String {
    match file_format {
        Some(f) => format!("vm-{vmid}-disk-0.{f}"),
        None => format!("vm-{vmid}-disk-0"),
    }
}

/// A CSI snapshot id: `<volume id>@<PVE snapshot name>` for a PVE snapshot
/// of the volume's holder, `<volume id>@c<32 hex>` for a copy snapshot (a
/// snapshot holder; see [`copy_snap_name`]). Both parse the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotId {
    pub volume: VolumeId,
    pub snapname: String,
}

impl SnapshotId {
    pub fn parse(s: &str) -> Option<SnapshotId> {
        let (vol, snap) = s.rsplit_once('@')?;
        let ok = snap.len() <= 40
            && snap.starts_with(|c: char| c.is_ascii_lowercase())
            && snap
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return None;
        }
        Some(SnapshotId {
            volume: VolumeId::parse(vol)?,
            snapname: snap.to_string(),
        })
    }
}

impl SnapshotId {
    /// A copy snapshot (a snapshot holder), not a PVE snapshot of the volume's holder.
    pub fn is_copy(&self) -> bool {
        is_copy_snap_name(&self.snapname)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.volume, self.snapname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_slash_in_volname() {
        let id = VolumeId::parse("sim/pve1/local/0a1b2c3d/100000/vm-100000-disk-0.raw").unwrap();
        assert_eq!(id.zone, "pve1");
        assert_eq!(id.tag, "0a1b2c3d");
        assert_eq!(id.volid(), "local:100000/vm-100000-disk-0.raw");
        assert_eq!(
            id.to_string(),
            "sim/pve1/local/0a1b2c3d/100000/vm-100000-disk-0.raw"
        );
        let built = VolumeId::from_volid(
            "sim",
            "pve1",
            "local:100000/vm-100000-disk-0.raw",
            "csi-vol-x",
        )
        .unwrap();
        assert_eq!(VolumeId::parse(&built.to_string()).unwrap(), built);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "a/b/c",
            "a//c/0a1b2c3d/v",
            "a/b/c/0a1b2c3d/",
            "a b/c/d/0a1b2c3d/e",
            "a/b/st:x/0a1b2c3d/v",
            "a/b/c/notatag0/v",
            "a/b/c/0A1B2C3D/v",
            "sim/pve1/local/100000/vm-100000-disk-0.raw",
        ] {
            assert!(VolumeId::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn wwn_depends_on_volume_and_holder_only() {
        let a = VolumeId::from_volid("r", "z1", "s:vm-100000-disk-0", "csi-vol-a").unwrap();
        let a2 = VolumeId::from_volid("r", "z2", "s:vm-100000-disk-0", "csi-vol-a").unwrap();
        let b = VolumeId::from_volid("r", "z1", "s:vm-100001-disk-0", "csi-vol-b").unwrap();
        // Same vmid reused by a later volume of another name: another disk, another WWN.
        let reused = VolumeId::from_volid("r", "z1", "s:vm-100000-disk-0", "csi-vol-c").unwrap();
        assert_eq!(a.wwn(), a2.wwn());
        assert_ne!(a.wwn(), b.wwn());
        assert_ne!(a.wwn(), reused.wwn());
        assert_ne!(a.to_string(), reused.to_string());
        assert_eq!(a.wwn().len(), 18);
        assert!(a.wwn().starts_with("0x5"));
        assert!(a.serial().len() <= 20);
    }

    #[test]
    fn holder_names() {
        let pvc = "pvc-0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(holder_name(pvc), format!("csi-vol-{pvc}"));
        let long = "x".repeat(128);
        let n = holder_name(&long);
        assert!(n.starts_with("csi-vol-h") && n.len() == "csi-vol-h".len() + 32);
        assert_ne!(holder_name("a"), holder_name("b"));
        assert_eq!(holder_name("a"), holder_name("a"));
        // Upper-case uuid is not the canonical form: hashed, so no two names map to one holder.
        assert!(holder_name(&pvc.to_uppercase()).starts_with("csi-vol-h"));
        assert_eq!(holder_disk(100001, Some("raw")), "vm-100001-disk-0.raw");
    }

    #[test]
    fn snapshot_ids() {
        let s = snap_name("snapshot-1");
        assert!(s.len() <= 40 && s.starts_with('s'));
        let id = SnapshotId::parse(&format!("sim/pve1/local-lvm/0a1b2c3d/vm-100000-disk-0@{s}"))
            .unwrap();
        assert_eq!(id.volume.volname, "vm-100000-disk-0");
        assert_eq!(
            id.to_string(),
            format!("sim/pve1/local-lvm/0a1b2c3d/vm-100000-disk-0@{s}")
        );
        assert!(SnapshotId::parse("sim/pve1/x/v").is_none());
        assert!(SnapshotId::parse("sim/pve1/x/v@Bad").is_none());
        assert!(SnapshotId::parse("junk@s1").is_none());
        assert!(!id.is_copy());
        let c = copy_snap_name("snapshot-1");
        assert_eq!(c[1..], s[1..]);
        let copy = SnapshotId::parse(&format!("sim/pve1/local-zfs/0a1b2c3d/vm-100000-disk-0@{c}"))
            .unwrap();
        assert!(copy.is_copy() && is_copy_snap_name(&c) && !is_copy_snap_name(&s));
    }
}
