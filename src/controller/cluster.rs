//! One Proxmox cluster as the controller sees it: its client, where its
//! storages are, which VM is which Kubernetes node, and a lock per VM so
//! this controller never races itself on a VM config, and how it reads the
//! holder VMs that own the volumes (creating and removing them is holder.rs).

use super::error::{ControllerError, PveContext, Result};
use crate::pve::drive::Drive;
use crate::pve::types::{ContentItem, SlotView, StorageResource, VmResource};
use crate::pve::PveClient;
use crate::volume_id::{holder_tag, VolumeId, HOLDER_PREFIX, HOLDER_TAG};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Cluster {
    pub region: String,
    pub client: PveClient,
    /// Which holders are this controller's, and the pool they go into.
    pub tenancy: super::tenancy::Tenancy,
    vm_locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Holder vmids this process is creating or cloning right now.
    pub(crate) creating: Mutex<std::collections::HashSet<u64>>,
    /// Vmids PVE refused as taken that the VM listing does not show (VMs this
    /// token has no VM.Audit on); never picked again by this process.
    pub(crate) hidden_taken: Mutex<std::collections::HashSet<u64>>,
}

/// A disk slot of a VM that holds a given volume.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub vm: VmResource,
    pub slot: String,
    pub drive: crate::pve::drive::Drive,
    /// In the VM's applied config: a running VM's guest has the disk.
    pub running: bool,
    /// A hot-plug or hot-unplug of this slot is still pending in PVE.
    pub pending: bool,
}

impl Cluster {
    pub fn new(region: String, client: PveClient) -> Cluster {
        Cluster {
            region,
            client,
            tenancy: Default::default(),
            vm_locks: Mutex::new(HashMap::new()),
            creating: Mutex::new(Default::default()),
            hidden_taken: Mutex::new(Default::default()),
        }
    }

    pub(crate) fn note_hidden_vmid(&self, vmid: u64) {
        self.hidden_taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vmid);
    }

    /// The `tags` a holder of this cluster is created (or, after a clone,
    /// re-marked) with: the holder and cluster tags and the snapshot-index mark.
    pub(super) fn holder_tags(&self) -> String {
        super::snapshot_index::holder_tags(&self.tenancy.holder_tags())
    }

    pub fn with_tenancy(mut self, tenancy: super::tenancy::Tenancy) -> Cluster {
        self.tenancy = tenancy;
        self
    }

    /// Serialize this controller's config edits of one VM. Other writers
    /// (people, other tools) are caught by PVE's digest check instead.
    pub async fn lock_vm(&self, vmid: u64) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.vm_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(vmid).or_default().clone()
        };
        m.lock_owned().await
    }

    /// The VM running the Kubernetes node `node_id` (its PVE VM name).
    pub async fn find_vm(&self, node_id: &str) -> Result<Option<VmResource>> {
        let vms = self
            .client
            .vms()
            .await
            .ctx(|| format!("listing VMs of cluster {}", self.region))?;
        let mut matches: Vec<VmResource> = vms
            .into_iter()
            .filter(|v| !v.template && v.name.as_deref() == Some(node_id))
            .collect();
        if matches.len() > 1 {
            let ids: Vec<String> = matches.iter().map(|v| v.vmid.to_string()).collect();
            return Err(ControllerError::FailedPrecondition(format!(
                "node_id {node_id:?}: several VMs of cluster {} carry that name ({}); VM names of Kubernetes nodes must be unique",
                self.region,
                ids.join(", ")
            )));
        }
        Ok(matches.pop())
    }

    /// Look a volume up in its storage's content list. This, not
    /// `GET .../content/{volume}`, is the existence check: for a missing
    /// volume PVE answers that call with storage-specific texts ("no format",
    /// "no such logical volume", ...) that cannot all be told from real errors.
    pub async fn find_volume(
        &self,
        node: &str,
        storage: &str,
        volid: &str,
    ) -> Result<Option<ContentItem>> {
        let owner = owner_vmid(volid);
        let items = self
            .client
            .storage_content(node, storage, owner)
            .await
            .ctx(|| format!("listing storage {storage} on {node}"))?;
        Ok(items.into_iter().find(|i| i.volid == volid))
    }

    /// Storages with disk images, one entry per (node, storage).
    pub async fn image_storages(&self) -> Result<Vec<StorageResource>> {
        let all = self
            .client
            .storages()
            .await
            .ctx(|| format!("listing storages of cluster {}", self.region))?;
        Ok(all.into_iter().filter(|s| s.holds_images()).collect())
    }

    /// Whether `storage` is shared by the nodes of this cluster (PVE's `shared`).
    pub async fn is_shared(&self, storage: &str) -> Result<bool> {
        Ok(self
            .image_storages()
            .await?
            .iter()
            .any(|s| s.storage == storage && s.shared))
    }

    /// Every slot of every VM that holds `volid`, applied or pending: a
    /// disk waiting to be hot-plugged is as good as attached, and one whose
    /// hot-unplug is pending is still in the guest (PVE keeps it in the
    /// running VM until the unplug succeeds). The VM that owns a volume (its
    /// holder) does not count as an attachment.
    pub async fn attachments_of(&self, volids: &[String]) -> Result<Vec<(String, Attachment)>> {
        let vms = self
            .client
            .vms()
            .await
            .ctx(|| format!("listing VMs of cluster {}", self.region))?;
        // Holder VMs only ever hold their own disk, and there is one per
        // volume: reading their configs would make every publish and delete
        // cost a request per volume in the cluster.
        let vms: Vec<VmResource> = vms
            .into_iter()
            .filter(|vm| !is_holder(vm) && !is_snapshot_holder(vm))
            .collect();
        let views =
            futures::future::join_all(vms.iter().map(|vm| async move {
                (vm.clone(), self.client.vm_slots(&vm.node, vm.vmid).await)
            }))
            .await;
        let mut out = Vec::new();
        for (vm, slots) in views {
            let slots = match slots {
                Ok(s) => s,
                // A VM deleted between the list and the read holds nothing.
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    return Err(ControllerError::Pve {
                        context: format!("reading config of VM {}", vm.vmid),
                        source: Box::new(e),
                    })
                }
            };
            out.extend(attachments_in(&vm, &slots, volids));
        }
        Ok(out)
    }
}

/// The slots of `vm` that hold one of `volids` as a foreign disk.
pub fn attachments_in(
    vm: &VmResource,
    slots: &[SlotView],
    volids: &[String],
) -> Vec<(String, Attachment)> {
    let mut out = Vec::new();
    for s in slots {
        for volid in volids {
            if !s.holds(volid) || owner_vmid(volid) == Some(vm.vmid) {
                continue;
            }
            let drive = s
                .current
                .iter()
                .chain(s.pending.iter())
                .find(|d| &d.volume == volid)
                .cloned()
                .expect("holds it");
            let running = s.current.as_ref().is_some_and(|d| &d.volume == volid);
            out.push((
                volid.clone(),
                Attachment {
                    vm: vm.clone(),
                    slot: s.slot.clone(),
                    drive,
                    running,
                    pending: s.is_pending(),
                },
            ));
        }
    }
    out
}

/// The vmid in a PVE disk name (`vm-<vmid>-...`, possibly behind `<vmid>/`).
pub fn owner_vmid(volid: &str) -> Option<u64> {
    let volname = volid.split_once(':').map(|(_, v)| v).unwrap_or(volid);
    let base = volname.rsplit('/').next().unwrap_or(volname);
    base.strip_prefix("vm-")?.split('-').next()?.parse().ok()
}

/// The holder's slot for its volume.
pub const HOLDER_SLOT: &str = "scsi0";

/// A volume as found through its holder.
#[derive(Debug, Clone)]
pub struct HeldVolume {
    pub holder: VmResource,
    pub id: VolumeId,
    pub size: u64,
    /// The holder's drive entry: where the volume's I/O limits are kept.
    pub drive: Drive,
    /// The holder's description (it carries the attach record) and the
    /// config digest it was read with.
    pub description: String,
    pub digest: Option<String>,
    /// The holder's tags as of that read (they index its snapshots).
    pub tags: Option<String>,
}

impl HeldVolume {
    /// Where the holder says the volume is attached (see `attach_record`).
    pub fn record(&self) -> super::attach_record::AttachRecord {
        super::attach_record::AttachRecord::parse(&self.description)
    }
}

pub fn is_holder(vm: &VmResource) -> bool {
    vm.has_tag(HOLDER_TAG)
        && vm
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(HOLDER_PREFIX))
}

/// A snapshot holder of any cluster (`copy_snapshots.rs`): it too holds only its own disk.
pub fn is_snapshot_holder(vm: &VmResource) -> bool {
    vm.has_tag(HOLDER_TAG)
        && vm
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with(crate::volume_id::SNAPSHOT_HOLDER_PREFIX))
}

impl Cluster {
    /// The holders of this controller's cluster (see tenancy.rs); other clusters' holders
    /// are not listed, so nothing that starts from this list can touch them.
    pub async fn holders(&self) -> Result<Vec<VmResource>> {
        let vms = self
            .client
            .vms()
            .await
            .ctx(|| format!("listing VMs of cluster {}", self.region))?;
        Ok(vms.into_iter().filter(|v| self.tenancy.owns(v)).collect())
    }

    pub async fn find_holder(&self, name: &str) -> Result<Option<VmResource>> {
        let mut found: Vec<VmResource> = self
            .holders()
            .await?
            .into_iter()
            .filter(|v| v.name.as_deref() == Some(name))
            .collect();
        found.sort_by_key(|v| v.vmid);
        Ok(found.into_iter().next())
    }

    /// The holder that owns the volume `id`, if it still exists: the vmid
    /// from the volume name and the tag from the holder's name must both match.
    pub async fn holder_of(&self, id: &VolumeId) -> Result<Option<VmResource>> {
        let Some(vmid) = owner_vmid(&id.volid()) else {
            return Ok(None);
        };
        Ok(self.holders().await?.into_iter().find(|v| {
            v.vmid == vmid && v.name.as_deref().map(holder_tag).as_deref() == Some(id.tag.as_str())
        }))
    }

    /// Snapshots of a holder; none when the holder vanished meanwhile (a
    /// volume deleted while another call walks the list).
    pub async fn holder_snapshots(
        &self,
        holder: &VmResource,
    ) -> Result<Vec<crate::pve::types::SnapshotInfo>> {
        match self.client.snapshots(&holder.node, holder.vmid).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(ControllerError::Pve {
                context: format!("listing snapshots of holder VM {}", holder.vmid),
                source: Box::new(e),
            }),
        }
    }

    /// The volume in the holder's slot, with its size.
    pub async fn held_volume(
        &self,
        holder: &VmResource,
        zone_hint: &str,
    ) -> Result<Option<HeldVolume>> {
        let cfg = match self
            .client
            .vm_config(&holder.node, holder.vmid, false)
            .await
        {
            Ok(c) => c,
            // Deleted since it was listed: it holds nothing any more.
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => {
                return Err(ControllerError::Pve {
                    context: format!("reading config of holder VM {}", holder.vmid),
                    source: Box::new(e),
                })
            }
        };
        let Some(drive) = cfg.get(HOLDER_SLOT).and_then(Drive::parse) else {
            return Ok(None);
        };
        let Some((storage, _)) = drive.volume.split_once(':') else {
            return Ok(None);
        };
        // For a node-local storage the disk is where the holder is; a shared
        // one is reachable from there too.
        let node = if zone_hint.is_empty() {
            holder.node.as_str()
        } else {
            zone_hint
        };
        let Some(item) = self.find_volume(node, storage, &drive.volume).await? else {
            return Ok(None);
        };
        let id = VolumeId::from_volid(
            &self.region,
            node,
            &drive.volume,
            holder.name.as_deref().unwrap_or(""),
        )
        .expect("has a colon");
        Ok(Some(HeldVolume {
            holder: holder.clone(),
            id,
            size: item.size.unwrap_or(0),
            drive,
            description: cfg.get("description").unwrap_or_default().to_string(),
            digest: cfg.digest().map(str::to_string),
            tags: cfg.get("tags").map(str::to_string),
        }))
    }
}

/// Marks a vmid as being set up by this process until dropped.
pub struct Creating<'a> {
    cluster: &'a Cluster,
    vmid: u64,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.cluster
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.vmid);
    }
}

impl Cluster {
    /// The lowest id at or above `base` that is neither `used` nor being
    /// created by this process, marked as being created (one step under
    /// the set's lock, so concurrent claims get different ids).
    pub(super) fn claim_free(
        &self,
        base: u64,
        used: &std::collections::HashSet<u64>,
    ) -> Option<(u64, Creating<'_>)> {
        let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        let vmid = (base..)
            .take(1_000_000)
            .find(|id| !used.contains(id) && !creating.contains(id))?;
        creating.insert(vmid);
        Some((
            vmid,
            Creating {
                cluster: self,
                vmid,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_from_volume_names() {
        assert_eq!(
            super::owner_vmid("local:100000/vm-100000-disk-0.raw"),
            Some(100000)
        );
        assert_eq!(super::owner_vmid("lvm:vm-101-disk-0"), Some(101));
        assert_eq!(super::owner_vmid("lvm:base-101-disk-0"), None);
    }
}
