//! Where a volume is attached, recorded in its holder VM.
//!
//! PVE cannot say which VMs use a disk without reading every VM's config,
//! which made every publish, expand and delete cost a request per VM in the
//! cluster. So the holder's description starts with a record naming the worker
//! VM the volume was last published to (or `none`), written before the
//! hot-plug with PVE's digest check, so that of two writers only one wins.
//! Every call verifies the record against the one VM it names:
//!
//! - the VM has the disk (applied or pending): the volume is attached there;
//! - the VM is gone or lacks the disk: the record is stale (a publish that
//!   stopped between recording and hot-plug, or a detach whose record update
//!   was lost) — unless it was written less than the claim lease ago, when a
//!   publish there may still be under way (another controller process, as
//!   this one serializes calls per disk) and calls that would act on the
//!   volume elsewhere answer Aborted until it has run out;
//! - a holder without the line (made before records were kept) is looked up
//!   the old way, by reading every VM, and gets the line at its next publish.
//!
//! A publish re-reads the record after its hot-plug and takes the disk out
//! again if another writer replaced it meanwhile, so a publish slower than
//! the lease cannot leave the disk in two VMs either. The record covers what
//! this driver does: a driver volume attached by hand is not seen.

use super::cluster::{attachments_in, Attachment, Cluster};
use super::error::{ControllerError, PveContext, Result};
use super::Controller;
use crate::pve::types::VmResource;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A holder's description starts with the record: `RECORD_KEY value RECORD_END`.
pub const RECORD_KEY: &str = "proxmox-csi-attached:";
const RECORD_END: char = ';';

/// What a holder's description says about where its volume is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachRecord {
    /// No record line: a holder from before records were kept.
    Unknown,
    /// Attached to no VM.
    Detached,
    /// Published to `vmid`, recorded at `since` (Unix seconds).
    At { vmid: u64, since: u64 },
}

impl AttachRecord {
    /// The record at the start of a holder's description; a malformed one
    /// counts as none. Only the start is read: the CSI name further on
    /// cannot pose as a record.
    pub fn parse(description: &str) -> AttachRecord {
        let Some((value, _)) = description
            .strip_prefix(RECORD_KEY)
            .and_then(|rest| rest.split_once(RECORD_END))
        else {
            return AttachRecord::Unknown;
        };
        let words: Vec<&str> = value.split_whitespace().collect();
        match words.as_slice() {
            ["none"] => AttachRecord::Detached,
            ["vm", vmid, "since", since] => match (vmid.parse(), since.parse()) {
                (Ok(vmid), Ok(since)) => AttachRecord::At { vmid, since },
                _ => AttachRecord::Unknown,
            },
            _ => AttachRecord::Unknown,
        }
    }

    fn prefix(&self) -> String {
        match self {
            AttachRecord::Unknown => String::new(),
            AttachRecord::Detached => format!("{RECORD_KEY} none{RECORD_END} "),
            AttachRecord::At { vmid, since } => {
                format!("{RECORD_KEY} vm {vmid} since {since}{RECORD_END} ")
            }
        }
    }

    /// `description` with its record replaced by this one (the rest kept
    /// as it is). One line: PVE's UI shows it whole.
    pub fn apply(&self, description: &str) -> String {
        let rest = description
            .strip_prefix(RECORD_KEY)
            .and_then(|r| r.split_once(RECORD_END))
            .map(|(_, r)| r.trim_start())
            .unwrap_or(description);
        format!("{}{rest}", self.prefix())
    }

    /// A claim for `vmid` made now.
    pub fn at_now(vmid: u64) -> AttachRecord {
        AttachRecord::At {
            vmid,
            since: now_secs(),
        }
    }

    pub fn names(&self, vmid: u64) -> bool {
        matches!(self, AttachRecord::At { vmid: v, .. } if *v == vmid)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where a volume is attached, as verified.
#[derive(Debug, Clone)]
pub struct Whereabouts {
    /// VMs that have the disk, applied or pending.
    pub attachments: Vec<Attachment>,
    /// The record names this VM, which does not have the disk, and was
    /// written less than the lease ago: a publish there may be under way.
    pub claimed_by: Option<u64>,
}

impl Whereabouts {
    /// Aborted while a publish to another VM than `except` may be under way.
    pub fn refuse_if_claimed(&self, what: &str, except: Option<u64>) -> Result<()> {
        match self.claimed_by {
            Some(vmid) if Some(vmid) != except => Err(ControllerError::Aborted(format!(
                "{what}: a publish to VM {vmid} was recorded moments ago and may still be under way; retry"
            ))),
            _ => Ok(()),
        }
    }
}

impl Controller {
    /// Where the volume `volid` of `holder` is attached, from its `record`
    /// verified against the one VM it names (every VM for a holder without
    /// a record). Costs one VM read when the record names a VM, none when it
    /// says none.
    pub(super) async fn whereabouts(
        &self,
        cluster: &Cluster,
        record: &AttachRecord,
        volid: &str,
    ) -> Result<Whereabouts> {
        let volids = [volid.to_string()];
        let (vmid, since) = match record {
            AttachRecord::Detached => {
                return Ok(Whereabouts {
                    attachments: vec![],
                    claimed_by: None,
                })
            }
            AttachRecord::Unknown => {
                let attachments = cluster
                    .attachments_of(&volids)
                    .await?
                    .into_iter()
                    .map(|(_, a)| a)
                    .collect();
                return Ok(Whereabouts {
                    attachments,
                    claimed_by: None,
                });
            }
            AttachRecord::At { vmid, since } => (*vmid, *since),
        };
        let vm: Option<VmResource> = cluster
            .client
            .vms()
            .await
            .ctx(|| format!("listing VMs of cluster {}", cluster.region))?
            .into_iter()
            .find(|v| v.vmid == vmid);
        let attachments = match &vm {
            None => vec![],
            Some(vm) => match cluster.client.vm_slots(&vm.node, vm.vmid).await {
                Ok(slots) => attachments_in(vm, &slots, &volids)
                    .into_iter()
                    .map(|(_, a)| a)
                    .collect(),
                Err(e) if e.is_not_found() => vec![],
                Err(e) => {
                    return Err(ControllerError::Pve {
                        context: format!("reading config of VM {vmid}"),
                        source: Box::new(e),
                    })
                }
            },
        };
        let fresh = now_secs().saturating_sub(since) < self.opts.attach_claim_lease.as_secs();
        let claimed_by = (attachments.is_empty() && fresh && vm.is_some()).then_some(vmid);
        Ok(Whereabouts {
            attachments,
            claimed_by,
        })
    }

    /// The holder's description and config digest, read now.
    pub(super) async fn holder_record(
        &self,
        cluster: &Cluster,
        holder: &VmResource,
    ) -> Result<(String, Option<String>)> {
        let cfg = cluster
            .client
            .vm_config(&holder.node, holder.vmid, false)
            .await
            .ctx(|| format!("reading config of holder VM {}", holder.vmid))?;
        Ok((
            cfg.get("description").unwrap_or_default().to_string(),
            cfg.digest().map(str::to_string),
        ))
    }

    /// Write `record` into the holder's description, refused by PVE if the
    /// config changed since `digest` was read (Aborted then: another writer
    /// got there first, and the caller's decisions may no longer hold).
    pub(super) async fn write_record(
        &self,
        cluster: &Cluster,
        holder: &VmResource,
        description: &str,
        digest: Option<&str>,
        record: &AttachRecord,
    ) -> Result<()> {
        let mut set = vec![("description".to_string(), record.apply(description))];
        if let Some(d) = digest {
            set.push(("digest".to_string(), d.to_string()));
        }
        match cluster
            .client
            .set_vm_config_sync(&holder.node, holder.vmid, &set)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_contention() => Err(ControllerError::Aborted(format!(
                "holder VM {} changed while recording where its volume is attached ({e}); retry",
                holder.vmid
            ))),
            Err(e) => Err(ControllerError::Pve {
                context: format!(
                    "recording where the volume of holder VM {} is attached",
                    holder.vmid
                ),
                source: Box::new(e),
            }),
        }
    }

    /// After a detach from `vmid`: the record no longer names it. A record
    /// naming another VM is left alone. Best effort against a concurrent
    /// change: a record left naming `vmid` is found stale later.
    pub(super) async fn clear_record(&self, cluster: &Cluster, holder: &VmResource, vmid: u64) {
        let outcome = self
            .retry_contended(|| async {
                let (description, digest) = self.holder_record(cluster, holder).await?;
                let record = AttachRecord::parse(&description);
                if !(record.names(vmid) || record == AttachRecord::Unknown) {
                    return Ok(());
                }
                let mut set = vec![(
                    "description".to_string(),
                    AttachRecord::Detached.apply(&description),
                )];
                if let Some(d) = digest {
                    set.push(("digest".to_string(), d));
                }
                cluster
                    .client
                    .set_vm_config_sync(&holder.node, holder.vmid, &set)
                    .await
                    .ctx(|| format!("clearing the attach record of holder VM {}", holder.vmid))
            })
            .await;
        if let Err(e) = outcome {
            tracing::warn!(holder = holder.vmid, error = %e, "attach record not cleared; it is found stale later");
        }
    }
}

/// How long a record naming a VM without the disk is taken as a publish
/// under way: longer than a publish takes between recording and hot-plug.
pub fn default_claim_lease(task_timeout: Duration) -> Duration {
    task_timeout * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_descriptions() {
        let base =
            "proxmox-csi volume pvc-1. Holds the disk; never start or delete this VM by hand.";
        assert_eq!(AttachRecord::parse(base), AttachRecord::Unknown);
        let d = AttachRecord::Detached.apply(base);
        assert!(d.ends_with(base), "{d}");
        assert_eq!(AttachRecord::parse(&d), AttachRecord::Detached);
        let at = AttachRecord::At {
            vmid: 115,
            since: 1_700_000_000,
        };
        let a = at.apply(&d);
        assert_eq!(AttachRecord::parse(&a), at);
        assert_eq!(a, format!("{RECORD_KEY} vm 115 since 1700000000; {base}"));
        assert!(!a.chars().any(|c| c.is_control()));
        assert!(at.names(115) && !at.names(116));
        assert_eq!(AttachRecord::Detached.apply(&a), d);
        assert_eq!(
            AttachRecord::parse(&format!("{RECORD_KEY} vm x since 1; {base}")),
            AttachRecord::Unknown
        );
        // A CSI name cannot pose as a record: only the start is read.
        let forged = format!("proxmox-csi volume {RECORD_KEY} none; x");
        assert_eq!(AttachRecord::parse(&forged), AttachRecord::Unknown);
    }
}
