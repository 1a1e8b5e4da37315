//! From a caller's volume id to the PVE disk it names, canonically.
//!
//! Ids come from the CO and may be stale (the volume was deleted and its
//! vmid reused) or forged (naming another VM's disk, another zone, another
//! tag). Every RPC resolves them here, the same way: the holder VM must
//! exist with the tag of the id, own the disk the id names, and — for a
//! node-local storage — run on the id's zone. Anything else is no volume of
//! ours. The in-flight keys live here too, so every call that touches one
//! PVE disk takes the same key whatever spelling of the id it got.

use super::cluster::Cluster;
use super::cluster::{is_holder, HeldVolume};
use super::error::{ControllerError, Result};
use super::Controller;
use crate::pve::types::VmResource;
use crate::volume_id::{shorten, VolumeId};
use std::sync::Arc;

/// The in-flight key of a PVE disk. The zone is not part of it: on a shared
/// storage ids that differ only in the zone name the same disk.
pub fn disk_key(id: &VolumeId) -> String {
    format!("disk {}/{}", id.region, id.volid())
}

/// The in-flight key of a CSI name (CreateVolume, CreateSnapshot).
pub fn name_key(kind: &str, name: &str) -> String {
    format!("{kind} name {name}")
}

impl Controller {
    /// Parse a volume id of this driver and find its cluster; NotFound otherwise.
    pub(super) fn volume_cluster(
        &self,
        field: &str,
        raw: &str,
    ) -> Result<(VolumeId, &Arc<Cluster>)> {
        let id = VolumeId::parse(raw).ok_or_else(|| {
            ControllerError::NotFound(format!(
                "{field} \"{}\": no such volume (not an id of this driver)",
                shorten(raw)
            ))
        })?;
        let cluster = self.cluster(&id.region).ok_or_else(|| {
            ControllerError::NotFound(format!(
                "{field} \"{}\": region {:?} is not configured",
                shorten(raw),
                id.region
            ))
        })?;
        Ok((id, cluster))
    }

    /// The holder VM of `id` if the id names its disk canonically (see the
    /// module comment); None for a stale or forged id.
    pub(super) async fn canonical_holder(
        &self,
        cluster: &Cluster,
        id: &VolumeId,
    ) -> Result<Option<VmResource>> {
        let Some(holder) = cluster.holder_of(id).await? else {
            return Ok(None);
        };
        if holder.node != id.zone && !cluster.is_shared(&id.storage).await? {
            // A node-local disk lives where its holder is; the same name on
            // another node's storage is some other disk.
            return Ok(None);
        }
        Ok(Some(holder))
    }

    /// The volume `id` through its holder; None when either is gone or the
    /// id does not name it canonically. The returned id is the canonical one
    /// (zone = the holder's node).
    pub(super) async fn held(
        &self,
        cluster: &Cluster,
        id: &VolumeId,
    ) -> Result<Option<HeldVolume>> {
        let Some(holder) = self.canonical_holder(cluster, id).await? else {
            return Ok(None);
        };
        let Some(held) = cluster.held_volume(&holder, "").await? else {
            return Ok(None);
        };
        Ok((held.id.volid() == id.volid() && held.id.tag == id.tag).then_some(held))
    }

    /// The volume must exist and be held by one of our holder VMs: a forged
    /// id must not get another VM's disk attached to a worker.
    pub(super) async fn require_volume(
        &self,
        cluster: &Cluster,
        id: &VolumeId,
    ) -> Result<HeldVolume> {
        self.held(cluster, id).await?.ok_or_else(|| {
            ControllerError::NotFound(format!(
                "volume_id \"{}\": no such volume",
                shorten(&id.to_string())
            ))
        })
    }

    /// The worker VM of a Kubernetes node. A holder VM is never a node: its
    /// own disk must not be detached or another attached to it.
    pub(super) async fn require_vm(&self, cluster: &Cluster, node_id: &str) -> Result<VmResource> {
        let vm = cluster.find_vm(node_id).await?.ok_or_else(|| {
            ControllerError::NotFound(format!(
                "node_id \"{}\": no VM with that name in cluster {} (PVE lists only VMs the token has VM.Audit on)",
                shorten(node_id),
                cluster.region
            ))
        })?;
        if is_holder(&vm) || cluster.tenancy.owns_snapshot_holder(&vm) {
            return Err(ControllerError::NotFound(format!(
                "node_id {node_id:?}: VM {} is a holder VM of this driver, not a Kubernetes node",
                vm.vmid
            )));
        }
        Ok(vm)
    }
}
