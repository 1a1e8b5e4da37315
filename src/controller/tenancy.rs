//! Which holder VMs belong to this controller, when several Kubernetes clusters share one
//! Proxmox cluster.
//!
//! A controller started with a cluster id (`--cluster-id`) names its holders
//! `csi-vol-<cluster id>-<...>` and tags them `csi-cluster-<cluster id>` next to
//! `proxmox-csi`. Every listing and scan of holders goes through [`Tenancy::owns`], so
//! another cluster's holders are never found, counted, waited for or touched: their volume
//! ids resolve to nothing (NotFound). The holder name is part of the tag in a volume id, so
//! two clusters creating a volume of the same name get different ids too.
//!
//! Holders made before cluster ids existed carry no cluster tag. A controller without a
//! cluster id owns exactly those; one with a cluster id owns them as well unless
//! `claim_legacy` is off (a second cluster joining a Proxmox cluster whose first cluster
//! was upgraded from an id-less version; see docs/upgrade.md).
//!
//! `pool` is the PVE resource pool holders are created and cloned into (PVE's `pool`
//! parameter), so a token with ACLs on `/pool/<pool>` has the privileges on every holder.

use crate::pve::types::VmResource;
use crate::volume_id::{holder_name, HOLDER_PREFIX, HOLDER_TAG, SNAPSHOT_HOLDER_PREFIX};

/// Prefix of the tag that names a holder's cluster.
pub const CLUSTER_TAG_PREFIX: &str = "csi-cluster-";

/// Longest cluster id: `csi-vol-<id>-pvc-<uuid>` must stay a valid DNS label (63 bytes).
pub const MAX_CLUSTER_ID: usize = 14;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    pub cluster_id: Option<String>,
    /// Also own holders that carry no cluster tag (see the module comment).
    pub claim_legacy: bool,
    pub pool: Option<String>,
}

/// A cluster id must be usable in a PVE tag and a VM name: lower-case letters, digits and
/// `-`, starting with a letter or digit, at most [`MAX_CLUSTER_ID`] bytes.
pub fn validate_cluster_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CLUSTER_ID
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !id.ends_with('-')
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cluster id {id:?}: use 1 to {MAX_CLUSTER_ID} lower-case letters, digits and '-' (not at either end)"
        ))
    }
}

/// A PVE pool id as pve-access-control verify_poolname accepts it (no nesting here).
pub fn validate_pool(pool: &str) -> Result<(), String> {
    let ok = pool.starts_with(|c: char| c.is_ascii_alphabetic())
        && pool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "pool {pool:?}: PVE pool ids start with a letter and hold only letters, digits, '.', '-', '_'"
        ))
    }
}

/// The cluster id in a VM's tags, if any.
pub fn cluster_of(vm: &VmResource) -> Option<&str> {
    vm.tags
        .as_deref()?
        .split([';', ',', ' '])
        .find_map(|t| t.strip_prefix(CLUSTER_TAG_PREFIX))
}

impl Tenancy {
    /// The holder VM name for a CSI volume name.
    pub fn holder_name(&self, csi_name: &str) -> String {
        let plain = holder_name(csi_name);
        match &self.cluster_id {
            None => plain,
            Some(id) => {
                let rest = plain.strip_prefix(HOLDER_PREFIX).expect("holder prefix");
                format!("{HOLDER_PREFIX}{id}-{rest}")
            }
        }
    }

    /// The PVE `tags` value of a holder.
    pub fn holder_tags(&self) -> String {
        match &self.cluster_id {
            None => HOLDER_TAG.to_string(),
            Some(id) => format!("{HOLDER_TAG};{CLUSTER_TAG_PREFIX}{id}"),
        }
    }

    /// The name of the snapshot holder of copy snapshot `copy_name` (`copy_snap_name`).
    pub fn snapshot_holder_name(&self, copy_name: &str) -> String {
        match &self.cluster_id {
            None => format!("{SNAPSHOT_HOLDER_PREFIX}{copy_name}"),
            Some(id) => format!("{SNAPSHOT_HOLDER_PREFIX}{id}-{copy_name}"),
        }
    }

    /// Is `vm` a snapshot holder of this controller's cluster (tagged, named as one)?
    /// One cut off before it was marked carries the tags its clone copied from the
    /// volume's holder, the holder and cluster tags among them, so it is found too.
    pub fn owns_snapshot_holder(&self, vm: &VmResource) -> bool {
        super::cluster::is_snapshot_holder(vm) && self.same_cluster(vm)
    }

    /// Is `vm` a holder of this controller's cluster?
    pub fn owns(&self, vm: &VmResource) -> bool {
        super::cluster::is_holder(vm) && self.same_cluster(vm)
    }

    fn same_cluster(&self, vm: &VmResource) -> bool {
        match (cluster_of(vm), self.cluster_id.as_deref()) {
            (Some(theirs), Some(ours)) => theirs == ours,
            (None, None) => true,
            (None, Some(_)) => self.claim_legacy,
            (Some(_), None) => false,
        }
    }

    /// What PVE's create and clone check for a new holder (qemu-server create_vm,
    /// clone_vm): VM.Allocate on the new VM or on the pool it goes into.
    pub fn allocate_need(&self, vmid: u64) -> String {
        match &self.pool {
            Some(p) => format!("VM.Allocate on /pool/{p}"),
            None => format!("VM.Allocate on /vms/{vmid}"),
        }
    }

    /// Options added to a holder's create or clone: its pool.
    pub fn placement_params(&self) -> Vec<(String, String)> {
        match &self.pool {
            Some(p) => vec![("pool".to_string(), p.clone())],
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, tags: &str) -> VmResource {
        serde_json::from_value(serde_json::json!({
            "vmid": 100000, "node": "pve1", "type": "qemu", "name": name, "tags": tags,
        }))
        .unwrap()
    }

    #[test]
    fn names_tags_and_ownership() {
        let pvc = "pvc-0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b";
        let a = Tenancy {
            cluster_id: Some("alpha".into()),
            claim_legacy: true,
            pool: None,
        };
        let b = Tenancy {
            cluster_id: Some("beta-2".into()),
            claim_legacy: false,
            pool: Some("k8s-b".into()),
        };
        let legacy = Tenancy::default();
        assert_eq!(a.holder_name(pvc), format!("csi-vol-alpha-{pvc}"));
        assert_eq!(legacy.holder_name(pvc), format!("csi-vol-{pvc}"));
        assert!(a
            .holder_name(&"x".repeat(100))
            .starts_with("csi-vol-alpha-h"));
        // The longest id still gives a DNS label.
        let longest = Tenancy {
            cluster_id: Some("a".repeat(MAX_CLUSTER_ID)),
            ..Default::default()
        };
        assert!(longest.holder_name(pvc).len() <= 63);
        assert_eq!(a.holder_tags(), "proxmox-csi;csi-cluster-alpha");

        let of_a = vm(&a.holder_name(pvc), &a.holder_tags());
        let of_b = vm(&b.holder_name(pvc), &b.holder_tags());
        let old = vm(&legacy.holder_name(pvc), "proxmox-csi");
        let worker = vm("worker-1", "csi-cluster-alpha");
        assert!(a.owns(&of_a) && !a.owns(&of_b) && a.owns(&old) && !a.owns(&worker));
        assert!(b.owns(&of_b) && !b.owns(&of_a) && !b.owns(&old));
        assert!(legacy.owns(&old) && !legacy.owns(&of_a) && !legacy.owns(&of_b));
        assert_eq!(
            b.placement_params(),
            vec![("pool".to_string(), "k8s-b".to_string())]
        );

        // Snapshot holders: the cluster's, never holders, and a DNS label at the longest id.
        let copy = crate::volume_id::copy_snap_name("snap-1");
        let snap_a = vm(&a.snapshot_holder_name(&copy), &a.holder_tags());
        let snap_b = vm(&b.snapshot_holder_name(&copy), &b.holder_tags());
        assert_eq!(
            snap_a.name.as_deref(),
            Some(&*format!("csi-snap-alpha-{copy}"))
        );
        assert!(a.owns_snapshot_holder(&snap_a) && !a.owns_snapshot_holder(&snap_b));
        assert!(!a.owns(&snap_a) && !a.owns_snapshot_holder(&of_a));
        assert!(longest.snapshot_holder_name(&copy).len() <= 63);
    }

    #[test]
    fn validation() {
        for good in ["a", "prod-1", "0x", &"a".repeat(MAX_CLUSTER_ID)] {
            assert!(validate_cluster_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Prod",
            "a_b",
            "a.b",
            &"a".repeat(MAX_CLUSTER_ID + 1),
        ] {
            assert!(validate_cluster_id(bad).is_err(), "{bad}");
        }
        assert!(validate_pool("k8s-a.pool_1").is_ok());
        assert!(validate_pool("1pool").is_err() && validate_pool("a/b").is_err());
    }
}
