//! ControllerPublishVolume / ControllerUnpublishVolume: hot-plug a disk into
//! the worker VM and out again, and ValidateVolumeCapabilities.

use super::attach_record::AttachRecord;
use super::cluster::{owner_vmid, Cluster};
use super::error::{ControllerError, PveContext, Result};
use super::lookup::disk_key;
use super::params::{check_capabilities, check_capability, drive_options};
use super::{required, Controller};
use crate::contract::{PUBLISH_CONTEXT_BUS, PUBLISH_CONTEXT_WWN};
use crate::csi::*;
use crate::pve::drive::{Drive, SCSI_SLOTS};
use crate::pve::types::{SlotView, VmResource};
use crate::pve::PveErrorKind;
use crate::volume_id::VolumeId;
use std::collections::HashMap;

/// How often, and how far apart, the running config is read before a disk
/// not in it counts as not hot-plugged.
const CONFIRM_POLLS: u32 = 4;
const CONFIRM_PAUSE: std::time::Duration = std::time::Duration::from_millis(150);
/// How many slots one attach skips when QEMU refuses them as still in use.
const MAX_UNUSABLE_SLOTS: usize = 3;

impl Controller {
    /// Hot-plug the volume into the node's VM.
    ///
    /// Idempotent: a volume already in the VM (applied, or with its
    /// hot-unplug still pending, which is then reverted) answers with the
    /// slot it has. A disk is never in two VMs: any other VM that has it,
    /// applied or pending, makes this FailedPrecondition.
    pub async fn publish_volume(
        &self,
        req: ControllerPublishVolumeRequest,
    ) -> Result<ControllerPublishVolumeResponse> {
        let raw = required(&req.volume_id, "volume_id")?;
        let node_id = required(&req.node_id, "node_id")?;
        let cap = req.volume_capability.as_ref().ok_or_else(|| {
            ControllerError::InvalidArgument("volume_capability: required".into())
        })?;
        check_capability(cap, "volume_capability")?;
        let (id, cluster) = self.volume_cluster("volume_id", raw)?;
        let _guard = self.begin(&disk_key(&id))?;
        let held = self.require_volume(cluster, &id).await?;
        let vm = self.require_vm(cluster, node_id).await?;
        let id = held.id.clone();

        let volid = id.volid();
        // A disk on node-local storage can only be used by VMs on that node.
        if vm.node != id.zone && !cluster.is_shared(&id.storage).await? {
            return Err(ControllerError::FailedPrecondition(format!(
                "volume {id} is on storage {} local to node {}, but VM {} ({node_id}) runs on node {}",
                id.storage, id.zone, vm.vmid, vm.node
            )));
        }
        // Single-node volumes: refuse while another VM has the disk, also
        // while its hot-unplug there is still pending (the guest has it).
        // Where it is comes from the holder's record, verified (attach_record).
        let record = held.record();
        let whereabouts = self.whereabouts(cluster, &record, &volid).await?;
        for a in &whereabouts.attachments {
            if a.vm.vmid != vm.vmid {
                let how = if a.pending && a.running {
                    " (its hot-unplug there is still pending)"
                } else {
                    ""
                };
                return Err(ControllerError::FailedPrecondition(format!(
                    "volume {id} is published to VM {} ({}) as {}{how}; unpublish it there first",
                    a.vm.vmid,
                    a.vm.name.as_deref().unwrap_or("?"),
                    a.slot
                )));
            }
        }
        whereabouts.refuse_if_claimed(&format!("volume {id}"), Some(vm.vmid))?;
        let already = whereabouts.attachments.iter().any(|a| a.vm.vmid == vm.vmid);
        // Read before the record is written (a write drops the shared view).
        let holders: std::collections::HashSet<u64> =
            cluster.holders().await?.iter().map(|h| h.vmid).collect();
        // Recorded before the hot-plug, under the holder's digest: of two
        // publishes of this volume to different VMs only one gets here.
        if !record.names(vm.vmid) {
            self.write_record(
                cluster,
                &held.holder,
                &held.description,
                held.digest.as_deref(),
                &AttachRecord::at_now(vm.vmid),
            )
            .await?;
        }

        let mut options = drive_options(&req.volume_context)?;
        // I/O limits (VolumeAttributesClass) travel with the volume, in its holder.
        for (k, v) in super::params::io_limits_of(&held.drive) {
            if let Some(v) = v {
                options.push((k, v));
            }
        }
        let _vm_lock = cluster.lock_vm(vm.vmid).await;
        let attached = self
            .retry_contended(|| {
                self.try_attach(cluster, &vm, &id, req.readonly, &options, &holders)
            })
            .await;
        let response = match attached {
            Ok(r) => r,
            Err(e) => {
                if !already {
                    self.release_if_absent(cluster, &held.holder, &vm, &volid)
                        .await;
                }
                return Err(e);
            }
        };
        if !already {
            // Another writer may have recorded another VM while this
            // hot-plug ran (possible only past the claim lease): then it is
            // that VM's, and ours is taken out again.
            let (description, _) = self.holder_record(cluster, &held.holder).await?;
            if !AttachRecord::parse(&description).names(vm.vmid) {
                tracing::warn!(volume = %id, vmid = vm.vmid, "attach record changed during the hot-plug; detaching again");
                self.retry_contended(|| self.try_detach(cluster, &vm, &volid))
                    .await?;
                return Err(ControllerError::Aborted(format!(
                    "volume {id} was claimed for another VM while it was hot-plugged into VM {}; detached again, retry",
                    vm.vmid
                )));
            }
        }
        Ok(response)
    }

    /// A publish to `vm` failed: if the VM has no trace of the disk, its
    /// record goes, so publishes elsewhere need not wait for the lease.
    async fn release_if_absent(
        &self,
        cluster: &Cluster,
        holder: &VmResource,
        vm: &VmResource,
        volid: &str,
    ) {
        match cluster.client.vm_slots(&vm.node, vm.vmid).await {
            Ok(slots) if !slots.iter().any(|s| s.holds(volid)) => {
                self.clear_record(cluster, holder, vm.vmid).await
            }
            _ => {}
        }
    }

    async fn try_attach(
        &self,
        cluster: &Cluster,
        vm: &VmResource,
        id: &VolumeId,
        readonly: bool,
        options: &[(&'static str, String)],
        holders: &std::collections::HashSet<u64>,
    ) -> Result<ControllerPublishVolumeResponse> {
        let volid = id.volid();
        let client = &cluster.client;
        let cfg = client
            .vm_config(&vm.node, vm.vmid, false)
            .await
            .ctx(|| format!("reading config of VM {}", vm.vmid))?;
        let slots = client
            .vm_slots(&vm.node, vm.vmid)
            .await
            .ctx(|| format!("reading pending config of VM {}", vm.vmid))?;
        let context = |slot: &str| ControllerPublishVolumeResponse {
            publish_context: HashMap::from([
                (PUBLISH_CONTEXT_WWN.to_string(), id.wwn()),
                (PUBLISH_CONTEXT_BUS.to_string(), slot.to_string()),
            ]),
        };

        if let Some(s) = slots.iter().find(|s| s.holds(&volid)) {
            let drive = s
                .current
                .iter()
                .chain(s.pending.iter())
                .find(|d| d.volume == volid)
                .expect("holds it");
            if drive.flag("ro") != readonly {
                return Err(ControllerError::AlreadyExists(format!(
                    "volume {id} is already published to this node with readonly={}",
                    drive.flag("ro")
                )));
            }
            if s.delete {
                // An unpublish left its hot-unplug pending: the guest still
                // has the disk, so keep it by cancelling the removal.
                let revert = vec![("revert".to_string(), s.slot.clone())];
                client
                    .update_vm_config(&vm.node, vm.vmid, &revert, self.opts.task_timeout)
                    .await
                    .ctx(|| {
                        format!(
                            "cancelling the pending removal of {volid} from VM {}",
                            vm.vmid
                        )
                    })?;
            }
            self.confirm_applied(cluster, vm, &s.slot, &volid).await?;
            return Ok(context(&s.slot));
        }

        let attached = slots
            .iter()
            .filter(|s| {
                s.current
                    .iter()
                    .chain(s.pending.iter())
                    .any(|d| owner_vmid(&d.volume).is_some_and(|o| holders.contains(&o)))
            })
            .count() as u32;
        if attached >= self.opts.max_volumes_per_vm {
            return Err(ControllerError::ResourceExhausted(format!(
                "VM {} already has {attached} volumes of this driver attached (limit {})",
                vm.vmid, self.opts.max_volumes_per_vm
            )));
        }
        let mut drive = Drive::new(&volid)
            .with("wwn", id.wwn())
            .with("serial", id.serial());
        for (k, v) in options {
            drive.set(k, v.clone());
        }
        if readonly {
            drive.set("ro", "1");
        }
        if drive.flag("iothread") && !super::params::iothread_effective(cfg.get("scsihw")) {
            tracing::warn!(
                vm = vm.vmid,
                scsihw = cfg.get("scsihw").unwrap_or("lsi"),
                "iothread asked for, but PVE gives SCSI disks an I/O thread only on \
                 virtio-scsi-single controllers: attaching without one"
            );
        }
        // Slots QEMU refused because it still holds an object of them (see
        // PveErrorKind::SlotUnusable): skipped for the rest of this attempt.
        let mut unusable: Vec<String> = Vec::new();
        let mut cfg = cfg;
        let slot = loop {
            // Free: neither in the config nor in its applied or pending views.
            let slot = (0..SCSI_SLOTS)
                .map(|n| format!("scsi{n}"))
                .find(|k| {
                    cfg.get(k).is_none()
                        && !slots.iter().any(|s| &s.slot == k)
                        && !unusable.contains(k)
                })
                .ok_or_else(|| {
                    ControllerError::ResourceExhausted(format!(
                        "VM {} has no free scsi slot",
                        vm.vmid
                    ))
                })?;
            let mut params = vec![(slot.clone(), drive.to_string())];
            if let Some(d) = cfg.digest() {
                // PVE refuses the edit if someone changed the config since our read.
                params.push(("digest".into(), d.to_string()));
            }
            let Err(e) = client
                .update_vm_config(&vm.node, vm.vmid, &params, self.opts.task_timeout)
                .await
            else {
                break slot;
            };
            let kind = e.kind();
            if matches!(kind, PveErrorKind::Hotplug | PveErrorKind::SlotUnusable) {
                // PVE wrote the disk to the pending section and QEMU refused
                // it: take it out again, so nothing half-attached stays.
                self.revert_pending(cluster, vm, &slot).await;
            }
            if kind == PveErrorKind::SlotUnusable && unusable.len() < MAX_UNUSABLE_SLOTS {
                tracing::warn!(vmid = vm.vmid, %slot, error = %e, "slot unusable until the VM restarts; trying the next one");
                unusable.push(slot);
                // The revert changed the config: a fresh digest for the next try.
                cfg = client
                    .vm_config(&vm.node, vm.vmid, false)
                    .await
                    .ctx(|| format!("reading config of VM {}", vm.vmid))?;
                continue;
            }
            return Err(ControllerError::Pve {
                context: format!("attaching {volid} to VM {} as {slot}", vm.vmid),
                source: Box::new(e),
            });
        };
        self.confirm_applied(cluster, vm, &slot, &volid).await?;
        tracing::info!(volume = %id, vmid = vm.vmid, %slot, "volume attached");
        Ok(context(&slot))
    }

    async fn revert_pending(&self, cluster: &Cluster, vm: &VmResource, slot: &str) {
        let revert = vec![("revert".to_string(), slot.to_string())];
        if let Err(e) = cluster
            .client
            .update_vm_config(&vm.node, vm.vmid, &revert, self.opts.task_timeout)
            .await
        {
            tracing::warn!(vmid = vm.vmid, slot, error = %e, "reverting a pending attach failed");
        }
    }

    /// A config change PVE could not hot-plug stays pending and the guest
    /// never sees the disk. Check the running view; revert if still pending.
    async fn confirm_applied(
        &self,
        cluster: &Cluster,
        vm: &VmResource,
        slot: &str,
        volid: &str,
    ) -> Result<()> {
        let client = &cluster.client;
        // A config task of an earlier, cut-off attempt may still be applying
        // it: give PVE a moment before calling it pending for good.
        for wait in 0..CONFIRM_POLLS {
            let current = client
                .vm_config(&vm.node, vm.vmid, true)
                .await
                .ctx(|| format!("reading running config of VM {}", vm.vmid))?;
            if current
                .get(slot)
                .and_then(Drive::parse)
                .is_some_and(|d| d.volume == volid)
            {
                return Ok(());
            }
            if wait + 1 < CONFIRM_POLLS {
                tokio::time::sleep(CONFIRM_PAUSE).await;
            }
        }
        self.revert_pending(cluster, vm, slot).await;
        Err(ControllerError::FailedPrecondition(format!(
            "VM {} did not hot-plug {volid} into {slot} (the change stayed pending and was reverted); \
             the VM must be running with 'disk' in its hotplug option",
            vm.vmid
        )))
    }

    /// Hot-unplug the volume from the node's VM.
    ///
    /// Touches only a disk owned by the holder VM the id names (tag and, for
    /// node-local storage, zone checked): a stale id of a deleted volume whose
    /// vmid was reused, or a forged one naming a VM's own disk, is an OK
    /// no-op. OK means the running VM no longer has the disk; while its
    /// hot-unplug is pending the answer is Unavailable, and a retry asks PVE
    /// to unplug again.
    pub async fn unpublish_volume(&self, req: ControllerUnpublishVolumeRequest) -> Result<()> {
        let raw = required(&req.volume_id, "volume_id")?;
        let node_id = required(&req.node_id, "node_id")?;
        let Some(id) = VolumeId::parse(raw) else {
            return Ok(());
        };
        let Some(cluster) = self.cluster(&id.region) else {
            return Ok(());
        };
        let _guard = self.begin(&disk_key(&id))?;
        let vm = self.require_vm(cluster, node_id).await?;
        let Some(holder) = self.canonical_holder(cluster, &id).await? else {
            tracing::info!(volume = %id, "unpublish of an id that names no volume of this driver: nothing to do");
            return Ok(());
        };
        // The holder owns the disk (its vmid is in the volume name) and is
        // no node (require_vm), so the disk is never the target VM's own.
        let volid = id.volid();
        tracing::debug!(volume = %id, holder = holder.vmid, vmid = vm.vmid, "detaching");
        let _vm_lock = cluster.lock_vm(vm.vmid).await;
        self.retry_contended(|| self.try_detach(cluster, &vm, &volid))
            .await?;
        // Only once the VM no longer has the disk: while its hot-unplug is
        // pending the record keeps naming it.
        self.clear_record(cluster, &holder, vm.vmid).await;
        Ok(())
    }

    async fn try_detach(&self, cluster: &Cluster, vm: &VmResource, volid: &str) -> Result<()> {
        let client = &cluster.client;
        let read = || async {
            client
                .vm_slots(&vm.node, vm.vmid)
                .await
                .ctx(|| format!("reading pending config of VM {}", vm.vmid))
        };
        let views: Vec<SlotView> = read()
            .await?
            .into_iter()
            .filter(|s| s.holds(volid))
            .collect();
        if views.is_empty() {
            return Ok(()); // not attached: nothing to do
        }
        // unlink drops the whole slot: never one whose running disk is
        // another (ours only waits there as someone's pending change).
        if let Some(s) = views
            .iter()
            .find(|s| s.current.as_ref().is_some_and(|d| d.volume != volid))
        {
            return Err(ControllerError::FailedPrecondition(format!(
                "VM {} runs {} in {}, where {volid} is only pending; refusing to detach the slot",
                vm.vmid,
                s.current.as_ref().map(|d| d.volume.as_str()).unwrap_or(""),
                s.slot
            )));
        }
        let slots: Vec<String> = views.into_iter().map(|s| s.slot).collect();
        // unlink only drops a volume owned by another vmid from the config;
        // the disk itself is kept (it is owned by its holder VM).
        client
            .unlink(&vm.node, vm.vmid, &slots)
            .await
            .ctx(|| format!("detaching {volid} from VM {}", vm.vmid))?;
        let still: Vec<SlotView> = read()
            .await?
            .into_iter()
            .filter(|s| s.holds(volid))
            .collect();
        if let Some(s) = still.first() {
            return Err(ControllerError::Unavailable(format!(
                "VM {} still has {volid} in {} (hot-unplug pending: the guest has not released the disk); retry",
                vm.vmid, s.slot
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
            return Err(ControllerError::InvalidArgument(
                "volume_capabilities: at least one is required".into(),
            ));
        }
        let (id, cluster) = self.volume_cluster("volume_id", raw)?;
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
            Err(e) => Ok(ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message: e.to_string(),
            }),
        }
    }
}
