//! Holder VMs: every volume is the first disk of its own stopped VM.
//!
//! PVE has no storage-level resize, snapshot or clone; those exist only for
//! disks of a VM. A holder VM per volume makes them available whether or not
//! the volume is attached to a worker, and snapshots taken through it use the
//! storage's own copy-on-write (lvmthin, rbd; `features.rs`). The holder is never
//! started; workers attach the disk as a foreign volume, so detaching from a
//! worker can never free it. Holders carry the `proxmox-csi` tag, a
//! `csi-vol-` name and a description that says what they are.

use super::attach_record::AttachRecord;
use super::cluster::{Cluster, Creating, HeldVolume, HOLDER_SLOT};
use super::error::{ControllerError, PveContext, Result};
use super::Controller;
use crate::params;
use crate::pve::drive::Drive;
use crate::pve::types::{StorageResource, VmResource};
use crate::pve::PveErrorKind;
use crate::volume_id::holder_disk;

/// The PVE description of a holder. The CSI name may hold any character
/// (CSI only bounds its length): control characters are escaped so they
/// never reach PVE's config file or UI as such.
pub fn holder_description(csi_name: &str) -> String {
    format!(
        "proxmox-csi volume {}. Holds the disk; never start or delete this VM by hand.",
        csi_name.escape_debug()
    )
}

/// The listing entry of a holder this controller just made (its VM now
/// exists with these), without listing the cluster again.
pub(super) fn made_holder(vmid: u64, name: &str, node: &str, tags: String) -> VmResource {
    VmResource {
        vmid,
        name: Some(name.to_string()),
        node: node.to_string(),
        kind: "qemu".into(),
        status: Some("stopped".into()),
        template: false,
        tags: Some(tags),
        lock: None,
    }
}

impl Controller {
    /// The holder named `name`, from one listing of the cluster's VMs that
    /// also shows no creation is under way. A VM in the holder range that
    /// PVE is still creating or cloning, and not for this process, is what
    /// an earlier controller that died mid-create leaves: its task goes on,
    /// and its name only shows once the task ends, so a create now could
    /// make a second holder for the same volume. Aborted until it is done.
    /// One listing for both questions: with two, the task could end between
    /// them, and the holder would be seen neither as being made nor as made.
    pub(super) async fn find_holder_when_settled(
        &self,
        cluster: &Cluster,
        name: &str,
    ) -> Result<Option<VmResource>> {
        self.find_vm_when_settled(cluster, name, |v| cluster.tenancy.owns(v))
            .await
    }

    /// [`Controller::find_holder_when_settled`] for VMs that `accept` accepts (holders,
    /// or snapshot holders).
    pub(super) async fn find_vm_when_settled(
        &self,
        cluster: &Cluster,
        name: &str,
        accept: impl Fn(&VmResource) -> bool,
    ) -> Result<Option<VmResource>> {
        let vms = cluster
            .client
            .vms()
            .await
            .ctx(|| "listing VMs".to_string())?;
        let ours = cluster
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let unsettled = vms.iter().filter(|v| {
            v.vmid >= self.opts.holder_vmid_base
                && matches!(v.lock.as_deref(), Some("create" | "clone"))
                && !ours.contains(&v.vmid)
        });
        for vm in unsettled {
            if self.is_foreign_creation(cluster, vm).await? {
                continue;
            }
            return Err(ControllerError::Aborted(format!(
                "VM {} is still being created by an earlier request (lock: {}); retry when it is done",
                vm.vmid,
                vm.lock.as_deref().unwrap_or("")
            )));
        }
        let mut found: Vec<VmResource> = vms
            .into_iter()
            .filter(|v| accept(v) && v.name.as_deref() == Some(name))
            .collect();
        found.sort_by_key(|v| v.vmid);
        Ok(found.into_iter().next())
    }

    /// With a cluster id, a VM being created by another principal (another Kubernetes
    /// cluster's controller, with its own token) is not ours to wait for. Only positive
    /// evidence counts: running tasks that could be making it, all by other principals and
    /// none by us (a create's task names the new vmid; a clone's names its source, so for a
    /// clone every running clone of the node counts). Our own tasks are always visible to
    /// us; others' only with Sys.Audit on the node, else we wait as before. Without a
    /// cluster id every such VM may be ours.
    async fn is_foreign_creation(&self, cluster: &Cluster, vm: &VmResource) -> Result<bool> {
        if cluster.tenancy.cluster_id.is_none() {
            return Ok(false);
        }
        let (vmid, kind) = match vm.lock.as_deref() {
            Some("clone") => (None, Some("qmclone")),
            _ => (Some(vm.vmid), Some("qmcreate")),
        };
        let listed = cluster.client.active_task_users(&vm.node, vmid, kind).await;
        let users = match listed {
            Ok(u) => u,
            // No view of the node's tasks: err on the side of waiting.
            Err(e) if e.kind() == PveErrorKind::Permission => return Ok(false),
            Err(e) => {
                return Err(ControllerError::Pve {
                    context: format!("listing the tasks of VM {}", vm.vmid),
                    source: Box::new(e),
                })
            }
        };
        let me = cluster.client.principal();
        Ok(!users.is_empty() && users.iter().all(|u| u != me))
    }

    /// Lowest free vmid at or above the configured base, marked as being
    /// created by this process until the guard drops: two creates of this
    /// controller never pick the same id, and need no lock for it. Another
    /// writer can still take the id first; PVE then refuses ours as existing
    /// and the caller claims again, skipping `skip`.
    pub(super) async fn claim_vmid<'c>(
        &self,
        cluster: &'c Cluster,
        skip: &[u64],
    ) -> Result<(u64, Creating<'c>)> {
        let vms = cluster
            .client
            .vms()
            .await
            .ctx(|| "listing VMs".to_string())?;
        let mut used: std::collections::HashSet<u64> = vms
            .iter()
            .map(|v| v.vmid)
            .chain(skip.iter().copied())
            .collect();
        // Ids PVE said are taken by VMs this token cannot see (other tenants' VMs).
        used.extend(
            cluster
                .hidden_taken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter(),
        );
        cluster
            .claim_free(self.opts.holder_vmid_base, &used)
            .ok_or_else(|| {
                ControllerError::ResourceExhausted("no free VM id for a holder VM".into())
            })
    }

    /// Create a holder VM on `target.node` owning a new disk of `size` bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_holder(
        &self,
        cluster: &Cluster,
        target: &StorageResource,
        name: &str,
        csi_name: &str,
        size: u64,
        backup: bool,
        format: &str,
    ) -> Result<HeldVolume> {
        let t = self.opts.task_timeout;
        let mut taken: Vec<u64> = Vec::new();
        let (vmid, _creating) = loop {
            // Creates of other volumes run in parallel: each claims its own id.
            let (vmid, creating) = self.claim_vmid(cluster, &taken).await?;
            let mut opts = params![
                ("name", name),
                ("tags", cluster.holder_tags()),
                (
                    "description",
                    AttachRecord::Detached.apply(&holder_description(csi_name))
                ),
                ("onboot", 0),
                // PVE then refuses "Remove" on the holder (and with it the volume) from the UI or API.
                ("protection", 1)
            ];
            opts.extend(cluster.tenancy.placement_params());
            match cluster.client.create_vm(&target.node, vmid, &opts, t).await {
                Ok(()) => break (vmid, creating),
                // Someone else took the id between our list and the create, or it belongs
                // to a VM this token cannot list: remembered, so the next pick skips it.
                Err(e) if e.kind() == PveErrorKind::AlreadyExists && taken.len() < 32 => {
                    cluster.note_hidden_vmid(vmid);
                    taken.push(vmid);
                    continue;
                }
                Err(e) => {
                    // PVE's create refuses a missing VM.Allocate without naming it.
                    let need = if e.is_permission() && e.missing_privilege().is_none() {
                        format!(" (needs {})", cluster.tenancy.allocate_need(vmid))
                    } else {
                        String::new()
                    };
                    return Err(ControllerError::Pve {
                        context: format!("creating holder VM {vmid} on {}{need}", target.node),
                        source: Box::new(e),
                    });
                }
            }
        };
        let filename = holder_disk(vmid, target.is_file_based().then_some(format));
        // PVE allocates under the storage's lock: a bounded number at a time
        // from here, and a lock timeout (nothing was allocated) is retried.
        let allocated = self
            .retry_contended(|| async {
                let _permit = self
                    .storage_limit
                    .acquire(&cluster.region, &target.storage)
                    .await;
                cluster
                    .client
                    .alloc_disk(
                        &target.node,
                        &target.storage,
                        vmid,
                        &filename,
                        size / 1024,
                        format,
                    )
                    .await
                    .map_err(|e| ControllerError::Pve {
                        context: format!(
                            "allocating {filename} on {}/{}",
                            target.node, target.storage
                        ),
                        source: Box::new(e),
                    })
            })
            .await;
        let volid = match allocated {
            Ok(v) => v,
            Err(e) => {
                self.discard_holder(cluster, &target.node, vmid).await;
                return Err(e);
            }
        };
        let drive = Drive::new(&volid).with("backup", if backup { "1" } else { "0" });
        let set = vec![(HOLDER_SLOT.to_string(), drive.to_string())];
        if let Err(e) = cluster
            .client
            .update_vm_config(&target.node, vmid, &set, t)
            .await
        {
            self.discard_holder(cluster, &target.node, vmid).await;
            return Err(ControllerError::Pve {
                context: format!("adding {volid} to holder VM {vmid}"),
                source: Box::new(e),
            });
        }
        let holder = made_holder(vmid, name, &target.node, cluster.holder_tags());
        let zone = if target.shared {
            holder.node.clone()
        } else {
            target.node.clone()
        };
        cluster.held_volume(&holder, &zone).await?.ok_or_else(|| {
            ControllerError::Internal(format!("volume {volid} vanished right after allocation"))
        })
    }

    /// Best-effort removal of a half-created holder (it owns at most a new, empty disk).
    async fn discard_holder(&self, cluster: &Cluster, node: &str, vmid: u64) {
        if let Err(e) = self.unprotect_and_destroy(cluster, node, vmid).await {
            tracing::warn!(vmid, error = %e, "could not remove half-created holder VM");
        }
    }

    /// Holders are created protected; the driver lifts that only right
    /// before it destroys one, after all its own checks passed.
    pub(super) async fn unprotect_and_destroy(
        &self,
        cluster: &Cluster,
        node: &str,
        vmid: u64,
    ) -> Result<()> {
        let t = self.opts.task_timeout;
        // PUT, PVE's synchronous config API (qemu-server API2/Qemu.pm
        // update_vm): `protection` needs no hot-plug or allocation, so there
        // is no worker task to wait for.
        let unprotect = params![("delete", "protection")];
        cluster
            .client
            .set_vm_config_sync(node, vmid, &unprotect)
            .await
            .ctx(|| format!("lifting protection of holder VM {vmid}"))?;
        cluster
            .client
            .destroy_vm(node, vmid, t)
            .await
            .ctx(|| format!("destroying holder VM {vmid}"))
    }

    /// Make a holder made by a clone look like one made by create.
    pub(super) async fn mark_holder(&self, cluster: &Cluster, node: &str, vmid: u64) -> Result<()> {
        // Also drops the snapshot tags a clone copies from its source.
        // Neither option needs a hot-plug or an allocation: the synchronous
        // PUT (see unprotect_and_destroy), no task to wait for.
        let mark = params![("tags", cluster.holder_tags()), ("protection", 1)];
        cluster
            .client
            .set_vm_config_sync(node, vmid, &mark)
            .await
            .ctx(|| format!("marking holder VM {vmid}"))
    }

    /// Destroy a holder and with it the volume. Only a VM that is provably
    /// ours and holds exactly this volume is destroyed: a forged volume id
    /// must never take a real VM's disks with it.
    pub(super) async fn destroy_holder(
        &self,
        cluster: &Cluster,
        holder: &VmResource,
        volid: &str,
    ) -> Result<()> {
        if !cluster.tenancy.owns(holder) {
            return Err(ControllerError::FailedPrecondition(format!(
                "VM {} is not a holder VM of this driver",
                holder.vmid
            )));
        }
        let cfg = cluster
            .client
            .vm_config(&holder.node, holder.vmid, false)
            .await
            .ctx(|| format!("reading config of holder VM {}", holder.vmid))?;
        let held = cfg
            .get(HOLDER_SLOT)
            .and_then(Drive::parse)
            .map(|d| d.volume);
        if held.as_deref() != Some(volid) {
            return Err(ControllerError::FailedPrecondition(format!(
                "holder VM {} holds {:?}, not {volid}; refusing to destroy it",
                holder.vmid, held
            )));
        }
        let others: Vec<String> = cfg
            .drives()
            .filter(|(k, _)| *k != HOLDER_SLOT)
            .map(|(k, d)| format!("{k}={}", d.volume))
            .collect();
        if !others.is_empty() {
            return Err(ControllerError::FailedPrecondition(format!(
                "holder VM {} has other disks ({}); refusing to destroy it",
                holder.vmid,
                others.join(", ")
            )));
        }
        self.unprotect_and_destroy(cluster, &holder.node, holder.vmid)
            .await
    }
}
