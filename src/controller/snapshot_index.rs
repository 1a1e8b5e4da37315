//! Which holder has which CSI snapshot, readable from the VM listing.
//!
//! A CSI snapshot name is unique across volumes, and ListSnapshots pages
//! over every snapshot; PVE only lists snapshots per VM, which made both
//! cost a request per volume. So each CSI snapshot is also a tag of its
//! holder (`proxmox-csi-<snapname>`, the PVE snapshot name derived from the
//! CSI name by `snap_name`), and `/cluster/resources` — read once per call
//! anyway — lists the tags of every holder. The tag is added before the
//! snapshot is taken and removed after it is deleted, so it never misses a
//! snapshot; a tag without a snapshot (a create cut off before PVE took it,
//! or tags a clone copied from its source) is checked against the holder's
//! snapshot list where it matters and skipped.
//!
//! Holders carry `SNAPSHOT_INDEX_TAG` once all their CSI snapshots are
//! tagged; holders without it (made before the index) are read the old way,
//! snapshot list by snapshot list, until their next CreateSnapshot tags them.
//!
//! Tags need `VM.Config.Options` on the holder, like its description, and
//! datacenter `user-tag-access` letting the driver's user create tags (PVE's
//! default `free`).

use super::cluster::{is_holder, Cluster};
use super::error::{ControllerError, Result};
use super::Controller;
use crate::pve::types::VmResource;
use crate::volume_id::HOLDER_TAG;

/// Marks a holder whose CSI snapshots are all tagged.
pub const SNAPSHOT_INDEX_TAG: &str = "proxmox-csi-snaptags";

/// Tags a holder is created with: `base` (the holder tag, and the cluster's
/// tag when it has an id: `Tenancy::holder_tags`) and the index mark.
pub fn holder_tags(base: &str) -> String {
    format!("{base};{SNAPSHOT_INDEX_TAG}")
}

/// The tag naming the PVE snapshot `snapname` of a holder.
pub fn snapshot_tag(snapname: &str) -> String {
    format!("{HOLDER_TAG}-{snapname}")
}

fn split_tags(tags: Option<&str>) -> Vec<String> {
    tags.unwrap_or("")
        .split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// The PVE snapshot names a holder's tags name (CSI snapshots only).
pub fn tagged_snapshots(vm: &VmResource) -> Vec<String> {
    split_tags(vm.tags.as_deref())
        .iter()
        .filter_map(|t| t.strip_prefix(&format!("{HOLDER_TAG}-")))
        .filter(|s| super::snapshots::is_ours(s))
        .map(str::to_string)
        .collect()
}

/// The copy snapshots (`copy_snapshots.rs`) a holder's tags name.
pub fn tagged_copies(tags: Option<&str>) -> Vec<String> {
    split_tags(tags)
        .iter()
        .filter_map(|t| t.strip_prefix(&format!("{HOLDER_TAG}-")))
        .filter(|s| crate::volume_id::is_copy_snap_name(s))
        .map(str::to_string)
        .collect()
}

pub fn is_indexed(vm: &VmResource) -> bool {
    vm.has_tag(SNAPSHOT_INDEX_TAG)
}

/// `tags` with `add` added and `remove` removed, in PVE's `;` form.
pub fn edit_tags(tags: Option<&str>, add: &[String], remove: &[String]) -> String {
    let mut out: Vec<String> = split_tags(tags)
        .into_iter()
        .filter(|t| !remove.contains(t))
        .collect();
    for a in add {
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out.join(";")
}

impl Controller {
    /// Another holder than `holder` that has the snapshot `snapname` (the
    /// CSI name's), if any: from the tags, confirmed by that holder's
    /// snapshot list; holders without the index are listed one by one.
    pub(super) async fn snapshot_elsewhere(
        &self,
        cluster: &Cluster,
        holder: &VmResource,
        snapname: &str,
    ) -> Result<Option<u64>> {
        let tag = snapshot_tag(snapname);
        for other in cluster.holders().await? {
            if other.vmid == holder.vmid || !is_holder(&other) {
                continue;
            }
            if is_indexed(&other) && !other.has_tag(&tag) {
                continue;
            }
            let snaps = cluster.holder_snapshots(&other).await?;
            if snaps.iter().any(|s| s.name == snapname) {
                return Ok(Some(other.vmid));
            }
        }
        Ok(None)
    }

    /// Tag `h` with `add` (and the index marker) and drop `remove`, under
    /// the `digest` its `tags` were read with: Aborted if the holder
    /// changed meanwhile.
    pub(super) async fn retag_holder(
        &self,
        cluster: &Cluster,
        h: &VmResource,
        tags: Option<&str>,
        digest: Option<&str>,
        add: &[String],
        remove: &[String],
    ) -> Result<()> {
        let mut add = add.to_vec();
        add.push(SNAPSHOT_INDEX_TAG.to_string());
        let new = edit_tags(tags, &add, remove);
        if new == edit_tags(tags, &[], &[]) {
            return Ok(());
        }
        let mut set = vec![("tags".to_string(), new)];
        if let Some(d) = digest {
            set.push(("digest".to_string(), d.to_string()));
        }
        match cluster
            .client
            .set_vm_config_sync(&h.node, h.vmid, &set)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_contention() => Err(ControllerError::Aborted(format!(
                "holder VM {} changed while its snapshot tags were updated ({e}); retry",
                h.vmid
            ))),
            Err(e) => Err(ControllerError::Pve {
                context: format!("updating the snapshot tags of holder VM {}", h.vmid),
                source: Box::new(e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_name_snapshots_and_edit_in_place() {
        let snap = crate::volume_id::snap_name("snap-1");
        let tag = snapshot_tag(&snap);
        let tags = edit_tags(Some("proxmox-csi"), std::slice::from_ref(&tag), &[]);
        assert_eq!(tags, format!("proxmox-csi;{tag}"));
        let vm = VmResource {
            vmid: 100000,
            name: Some("csi-vol-x".into()),
            node: "pve1".into(),
            kind: "qemu".into(),
            status: None,
            template: false,
            tags: Some(format!("{tags};proxmox-csi-by-hand;other")),
            lock: None,
        };
        assert_eq!(tagged_snapshots(&vm), vec![snap.clone()]);
        assert!(!is_indexed(&vm));
        assert_eq!(
            edit_tags(vm.tags.as_deref(), &[], &[tag]),
            "proxmox-csi;proxmox-csi-by-hand;other"
        );
        assert_eq!(holder_tags(HOLDER_TAG), "proxmox-csi;proxmox-csi-snaptags");
    }
}
