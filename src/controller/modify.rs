//! ControllerModifyVolume: I/O limits from a VolumeAttributesClass.
//!
//! The limits live in the holder's drive entry, so they survive detach and
//! reattach; a worker that has the volume gets them too, and QEMU applies
//! changed limits to a running disk in place.

use super::cluster::Cluster;
use super::cluster::{HeldVolume, HOLDER_SLOT};
use super::error::{ControllerError, PveContext, Result};
use super::lookup::disk_key;
use super::params::{apply_io_limits, parse_io_limits, IoLimits};
use super::{required, Controller};
use crate::csi::{ControllerModifyVolumeRequest, ControllerModifyVolumeResponse};
use crate::pve::drive::Drive;

impl Controller {
    pub async fn modify_volume(
        &self,
        req: ControllerModifyVolumeRequest,
    ) -> Result<ControllerModifyVolumeResponse> {
        let raw = required(&req.volume_id, "volume_id")?;
        let limits = parse_io_limits(&req.mutable_parameters)?;
        let (id, cluster) = self.volume_cluster("volume_id", raw)?;
        let _guard = self.begin(&disk_key(&id))?;
        let held = self.require_volume(cluster, &id).await?;
        if limits.is_empty() {
            return Ok(ControllerModifyVolumeResponse {});
        }
        self.store_limits(cluster, &held, &limits).await?;
        let volid = id.volid();
        let whereabouts = self.whereabouts(cluster, &held.record(), &volid).await?;
        for a in whereabouts.attachments {
            let _vm_lock = cluster.lock_vm(a.vm.vmid).await;
            self.retry_contended(|| self.limit_attached(cluster, &a.vm, &a.slot, &volid, &limits))
                .await?;
        }
        tracing::info!(volume = %raw, ?limits, "I/O limits changed");
        Ok(ControllerModifyVolumeResponse {})
    }

    /// Record the limits in the holder's drive entry (the holder is stopped,
    /// so the change applies at once).
    pub(super) async fn store_limits(
        &self,
        cluster: &Cluster,
        held: &HeldVolume,
        limits: &IoLimits,
    ) -> Result<()> {
        let mut drive = held.drive.clone();
        apply_io_limits(&mut drive, limits);
        let h = &held.holder;
        let set = vec![(HOLDER_SLOT.to_string(), drive.to_string())];
        cluster
            .client
            .update_vm_config(&h.node, h.vmid, &set, self.opts.task_timeout)
            .await
            .ctx(|| format!("storing I/O limits of {} in holder VM {}", held.id, h.vmid))
    }

    async fn limit_attached(
        &self,
        cluster: &Cluster,
        vm: &crate::pve::types::VmResource,
        slot: &str,
        volid: &str,
        limits: &IoLimits,
    ) -> Result<()> {
        let client = &cluster.client;
        let cfg = client
            .vm_config(&vm.node, vm.vmid, false)
            .await
            .ctx(|| format!("reading config of VM {}", vm.vmid))?;
        let Some(mut drive) = cfg
            .get(slot)
            .and_then(Drive::parse)
            .filter(|d| d.volume == volid)
        else {
            return Ok(()); // detached meanwhile: the holder has the limits for next time
        };
        apply_io_limits(&mut drive, limits);
        let mut set = vec![(slot.to_string(), drive.to_string())];
        if let Some(d) = cfg.digest() {
            set.push(("digest".into(), d.to_string()));
        }
        client
            .update_vm_config(&vm.node, vm.vmid, &set, self.opts.task_timeout)
            .await
            .ctx(|| format!("changing I/O limits of {volid} on VM {}", vm.vmid))?;
        let current = client
            .vm_config(&vm.node, vm.vmid, true)
            .await
            .ctx(|| format!("reading running config of VM {}", vm.vmid))?;
        let applied = current
            .get(slot)
            .and_then(Drive::parse)
            .is_some_and(|d| limits.iter().all(|(k, v)| d.get(k) == v.as_deref()));
        if !applied {
            return Err(ControllerError::FailedPrecondition(format!(
                "VM {} did not apply the new I/O limits of {volid} to the running disk (the change is pending until the VM restarts)",
                vm.vmid
            )));
        }
        Ok(())
    }
}
