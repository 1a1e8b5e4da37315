//! The CSI volume id, and the names and disk identities derived from it.
//!
//! A volume id is `<region>/<zone>/<storage>/<volname>`: the cluster, the PVE
//! node the disk was allocated on, the storage id, and PVE's volume name
//! (which may itself contain `/`, e.g. `9999/vm-9999-csi-x.raw` on a dir
//! storage). Everything the controller needs to find the disk again is in
//! the id, so no state is kept outside Proxmox.

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

/// Prefix of every disk name the driver allocates, given the owner vmid.
pub fn disk_prefix(owner_vmid: u64) -> String {
    format!("vm-{owner_vmid}-csi-")
}

/// The PVE disk name for a CSI volume name. Deterministic, so a repeated
/// CreateVolume finds the disk it made before without any other state.
/// Kubernetes names (`pvc-<uuid>`) stay readable in the PVE UI; any other
/// name (up to 128 bytes of anything) is hashed into `h<hex>`.
pub fn disk_name(owner_vmid: u64, csi_name: &str) -> String {
    let prefix = disk_prefix(owner_vmid);
    let is_pvc = csi_name.len() == 40
        && csi_name.starts_with("pvc-")
        && csi_name[4..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase() || c == '-');
    if is_pvc {
        format!("{prefix}{csi_name}")
    } else {
        format!("{prefix}h{}", &hash_hex(csi_name)[..32])
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
    fn disk_names() {
        let pvc = "pvc-0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(disk_name(9999, pvc), format!("vm-9999-csi-{pvc}"));
        let long = "x".repeat(128);
        let n = disk_name(9999, &long);
        assert!(n.starts_with("vm-9999-csi-h") && n.len() == "vm-9999-csi-h".len() + 32);
        assert_ne!(disk_name(9999, "a"), disk_name(9999, "b"));
        assert_eq!(disk_name(9999, "a"), disk_name(9999, "a"));
        // Upper-case uuid is not the canonical form: hashed, so no two names map to one disk.
        assert!(disk_name(9999, &pvc.to_uppercase()).contains("-csi-h"));
    }
}
