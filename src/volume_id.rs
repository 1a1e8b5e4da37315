//! The CSI volume id, and the names and disk identities derived from it.
//!
//! A volume id is `<region>/<zone>/<storage>/<volname>`: the cluster, the PVE
//! node the disk was allocated on, the storage id, and PVE's volume name
//! (which may itself contain `/`, e.g. `9999/vm-9999-csi-x.raw` on a dir
//! storage). Everything the controller needs to find the disk again is in
//! the id, so no state is kept outside Proxmox. The volume name carries the
//! vmid of the holder VM that owns the disk (`vm-<holder>-disk-0`).

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
    pub volname: String,
}

impl VolumeId {
    /// Parse an id; `None` when it is not one of ours (callers answer NotFound).
    pub fn parse(s: &str) -> Option<VolumeId> {
        let mut it = s.splitn(4, '/');
        let region = it.next()?;
        let zone = it.next()?;
        let storage = it.next()?;
        let volname = it.next()?;
        let ok = |p: &str| !p.is_empty() && !p.contains(char::is_whitespace) && !p.contains(':');
        if !(ok(region) && ok(zone) && ok(storage) && !volname.is_empty()) || volname.contains(char::is_whitespace) {
            return None;
        }
        Some(VolumeId { region: region.into(), zone: zone.into(), storage: storage.into(), volname: volname.into() })
    }

    /// Build from a PVE volid (`<storage>:<volname>`).
    pub fn from_volid(region: &str, zone: &str, volid: &str) -> Option<VolumeId> {
        let (storage, volname) = volid.split_once(':')?;
        Some(VolumeId { region: region.into(), zone: zone.into(), storage: storage.into(), volname: volname.into() })
    }

    /// PVE's volume id.
    pub fn volid(&self) -> String {
        format!("{}:{}", self.storage, self.volname)
    }

    /// Where the volume can be used: its region, and its zone unless the
    /// storage is shared by every node of the cluster.
    pub fn topology(&self, shared: bool) -> crate::csi::Topology {
        let mut segments = std::collections::HashMap::from([(TOPOLOGY_REGION.to_string(), self.region.clone())]);
        if !shared {
            segments.insert(TOPOLOGY_ZONE.to_string(), self.zone.clone());
        }
        crate::csi::Topology { segments }
    }

    /// The WWN the disk is attached with. Derived from the volume (never the
    /// slot) so the node can tell this disk from every other one, even after
    /// detach/attach cycles land it in different slots. NAA type 5, 64 bit.
    pub fn wwn(&self) -> String {
        let h = hash_hex(&self.volid());
        format!("0x5{}", &h[..15])
    }

    /// The SCSI serial (max 20 bytes in the guest), also derived from the volume.
    pub fn serial(&self) -> String {
        let h = hash_hex(&self.volid());
        format!("csi-{}", &h[..16])
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.region, self.zone, self.storage, self.volname)
    }
}

fn hash_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Prefix of the name of every holder VM (the stopped VM that owns one volume).
pub const HOLDER_PREFIX: &str = "csi-vol-";

/// The holder VM name for a CSI volume name. Deterministic, so a repeated
/// CreateVolume finds the volume it made before without any other state.
/// Kubernetes names (`pvc-<uuid>`) stay readable in the PVE UI; any other
/// name (up to 128 bytes of anything) is hashed, which also keeps it a
/// valid DNS name as PVE requires.
pub fn holder_name(csi_name: &str) -> String {
    let is_pvc = csi_name.len() == 40
        && csi_name.starts_with("pvc-")
        && csi_name[4..].chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-');
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

/// The disk of holder `vmid`, as PVE names a VM's first disk.
pub fn holder_disk(vmid: u64, file_based: bool) -> String {
    if file_based {
        format!("vm-{vmid}-disk-0.raw")
    } else {
        format!("vm-{vmid}-disk-0")
    }
}

/// A CSI snapshot id: `<volume id>@<PVE snapshot name>`.
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
            && snap.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return None;
        }
        Some(SnapshotId { volume: VolumeId::parse(vol)?, snapname: snap.to_string() })
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
        let id = VolumeId::parse("sim/pve1/local/9999/vm-9999-csi-ha.raw").unwrap();
        assert_eq!(id.zone, "pve1");
        assert_eq!(id.volid(), "local:9999/vm-9999-csi-ha.raw");
        assert_eq!(id.to_string(), "sim/pve1/local/9999/vm-9999-csi-ha.raw");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "abc", "a/b/c", "a//c/d", "a/b/c/", "a b/c/d/e", "a/b/st:x/v"] {
            assert!(VolumeId::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn wwn_depends_on_volume_only() {
        let a = VolumeId::parse("r/z1/s/vm-9999-csi-a").unwrap();
        let a2 = VolumeId::parse("r/z2/s/vm-9999-csi-a").unwrap();
        let b = VolumeId::parse("r/z1/s/vm-9999-csi-b").unwrap();
        assert_eq!(a.wwn(), a2.wwn());
        assert_ne!(a.wwn(), b.wwn());
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
        assert_eq!(holder_disk(100001, true), "vm-100001-disk-0.raw");
    }

    #[test]
    fn snapshot_ids() {
        let s = snap_name("snapshot-1");
        assert!(s.len() <= 40 && s.starts_with('s'));
        let id = SnapshotId::parse(&format!("sim/pve1/local-lvm/vm-100000-disk-0@{s}")).unwrap();
        assert_eq!(id.volume.volname, "vm-100000-disk-0");
        assert_eq!(id.to_string(), format!("sim/pve1/local-lvm/vm-100000-disk-0@{s}"));
        assert!(SnapshotId::parse("sim/pve1/x/v").is_none());
        assert!(SnapshotId::parse("sim/pve1/x/v@Bad").is_none());
        assert!(SnapshotId::parse("junk@s1").is_none());
    }
}
