//! ControllerExpandVolume: grow the disk through the VM that has it.
//!
//! Attached to a worker, the resize goes through that VM so QEMU tells the
//! guest the new size at once (the node then grows the filesystem). Not
//! attached, it goes through the volume's stopped holder VM.

use super::error::{ControllerError, Result};
use super::holder::HOLDER_SLOT;
use super::params::size_for;
use super::{required, Controller};
use crate::csi::{volume_capability::AccessType, ControllerExpandVolumeRequest, ControllerExpandVolumeResponse};
use crate::volume_id::VolumeId;

impl Controller {
    pub async fn expand_volume(&self, req: ControllerExpandVolumeRequest) -> Result<ControllerExpandVolumeResponse> {
        let raw = required(&req.volume_id, "volume_id")?;
        let range = req
            .capacity_range
            .as_ref()
            .ok_or_else(|| ControllerError::InvalidArgument("capacity_range: required".into()))?;
        let want = size_for(Some(range))?;
        let id = VolumeId::parse(raw).ok_or_else(|| ControllerError::NotFound(format!("volume_id {raw:?}: no such volume")))?;
        let cluster = self
            .cluster(&id.region)
            .ok_or_else(|| ControllerError::NotFound(format!("volume_id {raw:?}: region {:?} is not configured", id.region)))?;
        let _guard = self.begin(raw)?;
        let held = self.held(cluster, &id).await?.ok_or_else(|| ControllerError::NotFound(format!("volume_id {raw}: no such volume")))?;
        // Block volumes need nothing from the node beyond the new device size.
        let block = matches!(req.volume_capability.as_ref().and_then(|c| c.access_type.as_ref()), Some(AccessType::Block(_)));
        if held.size >= want {
            return Ok(ControllerExpandVolumeResponse { capacity_bytes: held.size as i64, node_expansion_required: !block });
        }
        let volid = id.volid();
        let users = cluster.attachments_of(std::slice::from_ref(&volid)).await?;
        let (vm, slot) = match users.first() {
            Some((_, a)) => (a.vm.clone(), a.slot.clone()),
            None => (held.holder.clone(), HOLDER_SLOT.to_string()),
        };
        let _vm_lock = cluster.lock_vm(vm.vmid).await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match cluster.client.resize(&vm.node, vm.vmid, &slot, want, self.opts.task_timeout).await {
                Ok(()) => break,
                Err(e) if e.is_contention() && attempt < self.opts.config_attempts => {
                    tokio::time::sleep(self.opts.config_retry_delay).await;
                }
                Err(e) if e.message().contains("shrinking disks is not supported") => {
                    // Grown concurrently past `want` by someone else: not an error.
                    break;
                }
                Err(e) => return Err(ControllerError::Pve { context: format!("growing {volid} via VM {} {slot}", vm.vmid), source: Box::new(e) }),
            }
        }
        let after = cluster
            .find_volume(&id.zone, &id.storage, &volid)
            .await?
            .and_then(|i| i.size)
            .ok_or_else(|| ControllerError::Internal(format!("{volid} vanished while growing")))?;
        if after < want {
            return Err(ControllerError::Internal(format!("{volid} is {after} bytes after growing to {want}")));
        }
        tracing::info!(volume = %raw, from = held.size, to = after, via = vm.vmid, "volume expanded");
        Ok(ControllerExpandVolumeResponse { capacity_bytes: after as i64, node_expansion_required: !block })
    }
}
