//! ControllerExpandVolume: grow the disk through the VM that has it.
//!
//! Attached to a worker, the resize goes through that VM so QEMU tells the
//! guest the new size at once (the node then grows the filesystem). Not
//! attached, it goes through the volume's stopped holder VM.

use super::cluster::HOLDER_SLOT;
use super::error::{ControllerError, Result};
use super::lookup::disk_key;
use super::params::size_for;
use super::{required, Controller};
use crate::csi::{
    volume_capability::AccessType, ControllerExpandVolumeRequest, ControllerExpandVolumeResponse,
};
use crate::pve::PveErrorKind;

impl Controller {
    /// ControllerExpandVolume. Idempotent: a disk already at or above the
    /// size asked answers with its size; never shrinks.
    pub async fn expand_volume(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse> {
        let raw = required(&req.volume_id, "volume_id")?;
        let range = req
            .capacity_range
            .as_ref()
            .ok_or_else(|| ControllerError::InvalidArgument("capacity_range: required".into()))?;
        let want = size_for(Some(range))?;
        let (id, cluster) = self.volume_cluster("volume_id", raw)?;
        let _guard = self.begin(&disk_key(&id))?;
        let held = self.require_volume(cluster, &id).await?;
        let id = held.id.clone();
        // Block volumes need nothing from the node beyond the new device size.
        let block = matches!(
            req.volume_capability
                .as_ref()
                .and_then(|c| c.access_type.as_ref()),
            Some(AccessType::Block(_))
        );
        if held.size >= want {
            return Ok(ControllerExpandVolumeResponse {
                capacity_bytes: held.size as i64,
                node_expansion_required: !block,
            });
        }
        let volid = id.volid();
        // Through the VM that runs with the disk, so QEMU tells its guest.
        let whereabouts = self.whereabouts(cluster, &held.record(), &volid).await?;
        whereabouts.refuse_if_claimed(&format!("volume {id}"), None)?;
        let (vm, slot) = match whereabouts.attachments.iter().find(|a| a.running) {
            Some(a) => (a.vm.clone(), a.slot.clone()),
            None => (held.holder.clone(), HOLDER_SLOT.to_string()),
        };
        let _vm_lock = cluster.lock_vm(vm.vmid).await;
        let grown = self
            .retry_contended(|| async {
                match cluster
                    .client
                    .resize(&vm.node, vm.vmid, &slot, want, self.opts.task_timeout)
                    .await
                {
                    Ok(()) => Ok(()),
                    // Grown concurrently past `want` by someone else: not an error.
                    Err(e) if e.kind() == PveErrorKind::ShrinkRefused => Ok(()),
                    Err(e) if e.kind() == PveErrorKind::NoSpace => {
                        Err(ControllerError::OutOfRange(format!(
                            "capacity_range: storage {} cannot hold {want} bytes for {volid}: {}",
                            id.storage,
                            e.message().trim()
                        )))
                    }
                    Err(e) => Err(ControllerError::Pve {
                        context: format!("growing {volid} via VM {} {slot}", vm.vmid),
                        source: Box::new(e),
                    }),
                }
            })
            .await;
        grown?;
        let after = cluster
            .find_volume(&id.zone, &id.storage, &volid)
            .await?
            .and_then(|i| i.size)
            .ok_or_else(|| {
                ControllerError::Aborted(format!(
                    "{volid} is not listed by its storage after growing; retry"
                ))
            })?;
        if after < want {
            return Err(ControllerError::Internal(format!(
                "{volid} is {after} bytes after growing to {want}"
            )));
        }
        tracing::info!(volume = %id, from = held.size, to = after, via = vm.vmid, "volume expanded");
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: after as i64,
            node_expansion_required: !block,
        })
    }
}
