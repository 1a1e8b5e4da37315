//! ControllerPublishVolume / ControllerUnpublishVolume: hot-plug a disk into
//! the worker VM and out again, and ValidateVolumeCapabilities.

use super::cluster::{owner_vmid, Cluster};
use super::error::{ControllerError, PveContext, Result};
use super::params::{check_capabilities, check_capability, drive_options};
use super::{required, Controller};
use crate::csi::*;
use crate::pve::drive::{Drive, SCSI_SLOTS};
use crate::pve::types::VmResource;
use crate::volume_id::VolumeId;
use std::collections::HashMap;

/// Keys of the publish context the node reads.
pub const CTX_WWN: &str = "wwn";
pub const CTX_BUS: &str = "bus";

impl Controller {
    /// Parse a volume id of this driver and find its cluster; NotFound otherwise.
    fn volume_cluster(&self, raw: &str) -> Result<(VolumeId, &Cluster)> {
        let id = VolumeId::parse(raw)
            .ok_or_else(|| ControllerError::NotFound(format!("volume_id {raw:?}: no such volume (not an id of this driver)")))?;
        let cluster = self
            .cluster(&id.region)
            .ok_or_else(|| ControllerError::NotFound(format!("volume_id {raw:?}: region {:?} is not configured", id.region)))?;
        Ok((id, cluster))
    }

    /// The volume must exist and be held by one of our holder VMs: a forged
    /// id must not get another VM's disk attached to a worker.
    async fn require_volume(&self, cluster: &Cluster, id: &VolumeId) -> Result<super::holder::HeldVolume> {
        self.held(cluster, id)
            .await?
            .ok_or_else(|| ControllerError::NotFound(format!("volume_id {id}: volume {} does not exist", id.volid())))
    }

    async fn require_vm(&self, cluster: &Cluster, node_id: &str) -> Result<VmResource> {
        cluster.find_vm(node_id).await?.ok_or_else(|| {
            ControllerError::NotFound(format!("node_id {node_id:?}: no VM with that name in cluster {}", cluster.region))
        })
    }

    pub async fn publish_volume(&self, req: ControllerPublishVolumeRequest) -> Result<ControllerPublishVolumeResponse> {
        let raw = required(&req.volume_id, "volume_id")?;
        let node_id = required(&req.node_id, "node_id")?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| ControllerError::InvalidArgument("volume_capability: required".into()))?;
        check_capability(cap, "volume_capability")?;
        let (id, cluster) = self.volume_cluster(raw)?;
        let held = self.require_volume(cluster, &id).await?;
        let vm = self.require_vm(cluster, node_id).await?;
        let _guard = self.begin(raw)?;

        let volid = id.volid();
        // A disk on node-local storage can only be used by VMs on that node.
        let storages = cluster.image_storages().await?;
        let shared = storages.iter().any(|s| s.storage == id.storage && s.shared);
        if !shared && vm.node != id.zone {
            return Err(ControllerError::FailedPrecondition(format!(
                "volume {raw} is on storage {} local to node {}, but VM {} ({node_id}) runs on node {}",
                id.storage, id.zone, vm.vmid, vm.node
            )));
        }
        // Single-node volumes: refuse while another VM holds the disk.
        for (_, a) in cluster.attachments_of(std::slice::from_ref(&volid)).await? {
            if a.vm.vmid != vm.vmid {
                return Err(ControllerError::FailedPrecondition(format!(
                    "volume {raw} is published to VM {} ({}) as {}; unpublish it there first",
                    a.vm.vmid,
                    a.vm.name.as_deref().unwrap_or("?"),
                    a.slot
                )));
            }
        }

        let mut options = drive_options(&req.volume_context)?;
        // I/O limits (VolumeAttributesClass) travel with the volume, in its holder.
        for (k, v) in super::params::io_limits_of(&held.drive) {
            if let Some(v) = v {
                options.push((k, v));
            }
        }
        let _vm_lock = cluster.lock_vm(vm.vmid).await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_attach(cluster, &vm, &id, req.readonly, &options).await {
                Err(ControllerError::Pve { source, context }) if source.is_contention() => {
                    if attempt >= self.opts.config_attempts {
                        return Err(ControllerError::Aborted(format!("{context}: {source} (gave up after {attempt} attempts)")));
                    }
                    tracing::warn!(vmid = vm.vmid, attempt, error = %source, "VM config busy, retrying");
                    tokio::time::sleep(self.opts.config_retry_delay).await;
                }
                other => return other,
            }
        }
    }

    async fn try_attach(
        &self,
        cluster: &Cluster,
        vm: &VmResource,
        id: &VolumeId,
        readonly: bool,
        options: &[(&'static str, String)],
    ) -> Result<ControllerPublishVolumeResponse> {
        let volid = id.volid();
        let client = &cluster.client;
        let cfg = client.vm_config(&vm.node, vm.vmid, false).await.ctx(|| format!("reading config of VM {}", vm.vmid))?;
        let context = |slot: &str| ControllerPublishVolumeResponse {
            publish_context: HashMap::from([(CTX_WWN.to_string(), id.wwn()), (CTX_BUS.to_string(), slot.to_string())]),
        };

        if let Some((slot, drive)) = cfg.drives().find(|(_, d)| d.volume == volid) {
            if drive.flag("ro") != readonly {
                return Err(ControllerError::AlreadyExists(format!(
                    "volume {id} is already published to this node with readonly={}",
                    drive.flag("ro")
                )));
            }
            let slot = slot.to_string();
            self.confirm_applied(cluster, vm, &slot, &volid).await?;
            return Ok(context(&slot));
        }

        let holders: std::collections::HashSet<u64> = cluster.holders().await?.iter().map(|h| h.vmid).collect();
        let attached = cfg.drives().filter(|(_, d)| owner_vmid(&d.volume).is_some_and(|o| holders.contains(&o))).count() as u32;
        if attached >= self.opts.max_volumes_per_vm {
            return Err(ControllerError::ResourceExhausted(format!(
                "VM {} already has {attached} volumes of this driver attached (limit {})",
                vm.vmid, self.opts.max_volumes_per_vm
            )));
        }
        let slot = (0..SCSI_SLOTS)
            .map(|n| format!("scsi{n}"))
            .find(|k| cfg.get(k).is_none())
            .ok_or_else(|| ControllerError::ResourceExhausted(format!("VM {} has no free scsi slot", vm.vmid)))?;

        let mut drive = Drive::new(&volid).with("wwn", id.wwn()).with("serial", id.serial());
        for (k, v) in options {
            drive.set(k, v.clone());
        }
        if readonly {
            drive.set("ro", "1");
        }
        let mut params = vec![(slot.clone(), drive.to_string())];
        if let Some(d) = cfg.digest() {
            // PVE refuses the edit if someone changed the config since our read.
            params.push(("digest".into(), d.to_string()));
        }
        client
            .update_vm_config(&vm.node, vm.vmid, &params, self.opts.task_timeout)
            .await
            .ctx(|| format!("attaching {volid} to VM {} as {slot}", vm.vmid))?;
        self.confirm_applied(cluster, vm, &slot, &volid).await?;
        tracing::info!(volume = %id, vmid = vm.vmid, %slot, "volume attached");
        Ok(context(&slot))
    }

    /// A config change PVE could not hot-plug stays pending and the guest
    /// never sees the disk. Check the running view; revert if still pending.
    async fn confirm_applied(&self, cluster: &Cluster, vm: &VmResource, slot: &str, volid: &str) -> Result<()> {
        let client = &cluster.client;
        let current = client.vm_config(&vm.node, vm.vmid, true).await.ctx(|| format!("reading running config of VM {}", vm.vmid))?;
        if current.get(slot).and_then(Drive::parse).is_some_and(|d| d.volume == volid) {
            return Ok(());
        }
        let revert = vec![("revert".to_string(), slot.to_string())];
        if let Err(e) = client.update_vm_config(&vm.node, vm.vmid, &revert, self.opts.task_timeout).await {
            tracing::warn!(vmid = vm.vmid, slot, error = %e, "reverting pending attach failed");
        }
        Err(ControllerError::FailedPrecondition(format!(
            "VM {} did not hot-plug {volid} into {slot} (the change stayed pending and was reverted); \
             the VM must be running with 'disk' in its hotplug option",
            vm.vmid
        )))
    }

    pub async fn unpublish_volume(&self, req: ControllerUnpublishVolumeRequest) -> Result<()> {
        let raw = required(&req.volume_id, "volume_id")?;
        let node_id = required(&req.node_id, "node_id")?;
        let (id, cluster) = self.volume_cluster(raw)?;
        let vm = self.require_vm(cluster, node_id).await?;
        let _guard = self.begin(raw)?;
        let _vm_lock = cluster.lock_vm(vm.vmid).await;
        let volid = id.volid();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_detach(cluster, &vm, &volid).await {
                Err(ControllerError::Pve { source, context }) if source.is_contention() => {
                    if attempt >= self.opts.config_attempts {
                        return Err(ControllerError::Aborted(format!("{context}: {source} (gave up after {attempt} attempts)")));
                    }
                    tokio::time::sleep(self.opts.config_retry_delay).await;
                }
                other => return other,
            }
        }
    }

    async fn try_detach(&self, cluster: &Cluster, vm: &VmResource, volid: &str) -> Result<()> {
        let client = &cluster.client;
        let cfg = client.vm_config(&vm.node, vm.vmid, false).await.ctx(|| format!("reading config of VM {}", vm.vmid))?;
        let slots = cfg.slots_with_volume(volid);
        if slots.is_empty() {
            return Ok(()); // not attached: nothing to do
        }
        // unlink only drops a volume owned by another vmid from the config;
        // the disk itself is kept (our disks are owned by owner_vmid).
        client.unlink(&vm.node, vm.vmid, &slots).await.ctx(|| format!("detaching {volid} from VM {}", vm.vmid))?;
        let after = client.vm_config(&vm.node, vm.vmid, false).await.ctx(|| format!("reading config of VM {}", vm.vmid))?;
        if !after.slots_with_volume(volid).is_empty() {
            return Err(ControllerError::Unavailable(format!(
                "VM {} has not released {volid} yet (hot-unplug pending in the guest); retry",
                vm.vmid
            )));
        }
        tracing::info!(volid, vmid = vm.vmid, "volume detached");
        Ok(())
    }

    pub async fn validate_volume_capabilities(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse> {
        let raw = required(&req.volume_id, "volume_id")?;
        if req.volume_capabilities.is_empty() {
            return Err(ControllerError::InvalidArgument("volume_capabilities: at least one is required".into()));
        }
        let (id, cluster) = self.volume_cluster(raw)?;
        self.require_volume(cluster, &id).await?;
        match check_capabilities(&req.volume_capabilities) {
            Ok(()) => Ok(ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            }),
            // Unsupported capabilities are an answer, not an error.
            Err(e) => Ok(ValidateVolumeCapabilitiesResponse { confirmed: None, message: e.to_string() }),
        }
    }
}
