//! What the driver can do on each Proxmox storage type, decided before anything is created.
//!
//! PVE answers "can this volume be snapshotted / copied / cloned" per storage plugin and per
//! volume state (pve-storage, each plugin's `volume_has_feature`), and qemu-server refuses a
//! clone up front when a disk lacks the feature (API2/Qemu.pm clone_vm). The driver asks this
//! table first, so a call the storage cannot complete is refused with FailedPrecondition naming
//! the storage type and the missing feature, and never leaves a half-made volume (a holder VM
//! without its disk, a temporary snapshot that cannot be copied). The README's feature matrix
//! is rendered from [`MATRIX`] (a test checks the two agree, and `tests/controller_storage_types.rs`
//! runs every cell against the simulator).
//!
//! Per type (pve-storage 9.1):
//! - lvmthin, rbd: snapshots, and full copies of a snapshot (`copy` in state `snap`).
//! - zfspool: snapshots, but no copy and no clone of a snapshot (ZFSPoolPlugin: copy {base,
//!   current}, clone {base}); a snapshot could only ever be rolled back onto the volume itself
//!   (destroying newer data), which is not a CSI restore. A CSI snapshot there is a full copy
//!   of the detached volume instead ([`SnapshotKind::Copy`], `copy_snapshots.rs`), which any
//!   later restore copies again, whatever the source's state.
//! - lvm (thick): no snapshots of raw volumes (LVMPlugin: snapshot only for qcow2 with
//!   `snapshot-as-volume-chain`): copies, as on ZFS.
//! - dir, nfs and other file storages: raw files have no snapshots (Plugin.pm: snapshot only
//!   for qcow2): copies, as on ZFS; qcow2 images have internal snapshots, taken by `qemu-img`
//!   through the stopped holder VM, which fails while the worker's QEMU has the image open
//!   (QEMU's image locking), so they need the volume detached.
//! - Copies without a snapshot (clones of a volume on storages without usable snapshots) read
//!   the live disk, which is consistent only while no VM writes it: detached only.

use super::cluster::Cluster;
use super::cluster::HeldVolume;
use super::error::{ControllerError, Result};
use super::Controller;

/// A volume operation that depends on the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Create,
    Expand,
    Snapshot,
    /// CreateVolume from a snapshot.
    Restore,
    /// CreateVolume from a volume.
    Clone,
    /// DeleteSnapshot: needs what taking one needs (qemu-img on qcow2).
    DeleteSnapshot,
}

pub const OPS: [Op; 5] = [Op::Create, Op::Expand, Op::Snapshot, Op::Restore, Op::Clone];

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Expand => "expand",
            Op::Snapshot => "snapshot",
            Op::Restore => "restore",
            Op::Clone => "clone",
            Op::DeleteSnapshot => "delete a snapshot of",
        }
    }
}

/// Whether an operation works on a storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Yes,
    /// Only while the volume is attached to no VM.
    Detached,
    /// Refused; the text names the missing PVE feature.
    No(&'static str),
}

impl Support {
    pub fn cell(self) -> &'static str {
        match self {
            Support::Yes => "yes",
            Support::Detached => "detached",
            Support::No(_) => "no",
        }
    }
}

/// One row of the matrix: a storage type and disk format.
pub struct Row {
    pub plugintype: &'static str,
    pub format: &'static str,
    pub ops: [Support; 5],
}

use Support::{Detached, No, Yes};

/// The feature matrix. Order of `ops`: [`OPS`].
pub const MATRIX: &[Row] = &[
    Row {
        plugintype: "lvmthin",
        format: "raw",
        ops: [Yes, Yes, Yes, Yes, Yes],
    },
    Row {
        plugintype: "rbd",
        format: "raw",
        ops: [Yes, Yes, Yes, Yes, Yes],
    },
    Row {
        plugintype: "zfspool",
        format: "raw",
        ops: [Yes, Yes, Detached, Yes, Detached],
    },
    Row {
        plugintype: "lvm",
        format: "raw",
        ops: [Yes, Yes, Detached, Yes, Detached],
    },
    Row {
        plugintype: "dir",
        format: "raw",
        ops: [Yes, Yes, Detached, Yes, Detached],
    },
    Row {
        plugintype: "dir",
        format: "qcow2",
        ops: [Yes, Yes, Detached, Detached, Detached],
    },
    Row {
        plugintype: "nfs",
        format: "raw",
        ops: [Yes, Yes, Detached, Yes, Detached],
    },
    Row {
        plugintype: "nfs",
        format: "qcow2",
        ops: [Yes, Yes, Detached, Detached, Detached],
    },
];

/// What a CSI snapshot is on a storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// A PVE snapshot of the volume's holder (lvmthin, rbd; qcow2 images).
    Native,
    /// A full copy of the detached volume into a snapshot holder of its own: raw disks on
    /// every type but lvmthin and rbd, whose snapshots PVE either cannot copy (zfspool) or
    /// does not have (thick lvm, raw files). PVE copies the current state of a volume on
    /// all of them (`copy` in state `current`), which is the state of the snapshot while no
    /// VM writes the disk.
    Copy,
}

pub fn snapshot_kind(plugintype: &str, format: &str) -> SnapshotKind {
    if format == "raw" && !matches!(plugintype, "lvmthin" | "rbd") {
        SnapshotKind::Copy
    } else {
        SnapshotKind::Native
    }
}

/// Storage types whose volumes are files (`<vmid>/<name>.<format>`), the only ones with a
/// choice of format (qcow2); the others store raw block devices.
pub const FILE_TYPES: &[&str] = &["dir", "nfs", "cifs", "glusterfs", "btrfs", "cephfs"];

pub fn is_file_type(plugintype: &str) -> bool {
    FILE_TYPES.contains(&plugintype)
}

/// The disk formats the driver allocates (`storageFormat`).
pub const FORMATS: &[&str] = &["raw", "qcow2"];

/// Checks a `storageFormat` value: `raw` or `qcow2`.
pub fn parse_format(v: &str) -> Result<String> {
    if FORMATS.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(ControllerError::InvalidArgument(format!(
            "parameters.storageFormat: {v:?} is not one of {}",
            FORMATS.join(", ")
        )))
    }
}

/// qcow2 only on file storages (pve-storage: block plugins allocate raw only).
pub fn check_format(storage: &str, plugintype: &str, format: &str) -> Result<()> {
    if format != "raw" && !is_file_type(plugintype) {
        return Err(ControllerError::InvalidArgument(format!(
            "parameters.storageFormat: {format} needs a file storage ({}); storage {storage:?} is {plugintype}",
            FILE_TYPES.join(", ")
        )));
    }
    Ok(())
}

/// The disk format of a PVE volume name: its extension on file storages, else raw.
pub fn format_of(volname: &str) -> &str {
    match volname.rsplit_once('.') {
        Some((_, ext)) if matches!(ext, "raw" | "qcow2" | "vmdk") => ext,
        _ => "raw",
    }
}

/// What `op` does on a volume of `plugintype` in `format`. Types not in the matrix (cifs,
/// glusterfs, iscsi, …) are treated by PVE's generic rules: file types as dir, others as
/// thick LVM (no snapshots), so nothing is promised that PVE might refuse half-way.
pub fn support(plugintype: &str, format: &str, op: Op) -> Support {
    // Removing a snapshot is always possible where one exists; qcow2 needs the image closed.
    if op == Op::DeleteSnapshot {
        return match support(plugintype, format, Op::Snapshot) {
            Detached => Detached,
            _ => Yes,
        };
    }
    let idx = OPS
        .iter()
        .position(|o| *o == op)
        .expect("every op is in OPS");
    let row = MATRIX
        .iter()
        .find(|r| r.plugintype == plugintype && r.format == format)
        .or_else(|| {
            let like = if is_file_type(plugintype) {
                "dir"
            } else {
                "lvm"
            };
            MATRIX
                .iter()
                .find(|r| r.plugintype == like && r.format == format)
        });
    row.map(|r| r.ops[idx])
        .unwrap_or(No("this disk format on this storage type"))
}

/// The FailedPrecondition for an operation a storage cannot do at all.
pub fn refusal(
    field: &str,
    storage: &str,
    plugintype: &str,
    op: Op,
    missing: &str,
) -> ControllerError {
    ControllerError::FailedPrecondition(format!(
        "{field}: storage {storage:?} ({plugintype}) cannot {}: PVE has no {missing}",
        op.label()
    ))
}

/// The FailedPrecondition for an operation that needs the volume detached.
pub fn refusal_attached(
    field: &str,
    storage: &str,
    plugintype: &str,
    format: &str,
    op: Op,
    vmid: u64,
) -> ControllerError {
    let why = if format == "qcow2" {
        "a qcow2 image open in a running VM's QEMU is locked against qemu-img, which PVE runs for the stopped holder VM"
    } else if op == Op::Snapshot {
        "PVE has no snapshot of this storage type that it can copy, so the snapshot is a full copy of the disk, which is consistent only while no VM writes it"
    } else {
        "without a snapshot the copy reads the live disk, which is consistent only while no VM writes it"
    };
    ControllerError::FailedPrecondition(format!(
        "{field}: storage {storage:?} ({plugintype}, {format}) can {} only a detached volume and it is attached to VM {vmid} ({why}); detach it first",
        op.label()
    ))
}

impl Controller {
    /// The PVE type (`plugintype`) of a storage of this cluster; `unknown` when PVE does not
    /// say, which the matrix treats as a storage without snapshots.
    pub(super) async fn storage_type(&self, cluster: &Cluster, storage: &str) -> Result<String> {
        Ok(cluster
            .image_storages()
            .await?
            .into_iter()
            .find(|s| s.storage == storage)
            .and_then(|s| s.plugintype)
            .unwrap_or_else(|| "unknown".into()))
    }

    /// Refuses `op` on the volume `held` (named by request field `field`) when its storage
    /// cannot do it, or cannot while the volume is attached and it is (its attach record,
    /// verified against the one VM it names). Only reads: nothing is made before this says
    /// yes. Answers what the matrix says (`Yes`, or `Detached` for a detached volume).
    pub(super) async fn require_feature(
        &self,
        cluster: &Cluster,
        field: &str,
        held: &HeldVolume,
        op: Op,
    ) -> Result<Support> {
        let id = &held.id;
        let plugintype = self.storage_type(cluster, &id.storage).await?;
        let format = format_of(&id.volname);
        let s = support(&plugintype, format, op);
        match s {
            Support::Yes => {}
            Support::No(missing) => {
                return Err(refusal(field, &id.storage, &plugintype, op, missing))
            }
            Support::Detached => {
                let volid = id.volid();
                let whereabouts = self.whereabouts(cluster, &held.record(), &volid).await?;
                whereabouts.refuse_if_claimed(&format!("{field} {id}"), None)?;
                if let Some(a) = whereabouts.attachments.first() {
                    return Err(refusal_attached(
                        field,
                        &id.storage,
                        &plugintype,
                        format,
                        op,
                        a.vm.vmid,
                    ));
                }
            }
        }
        Ok(s)
    }
}

/// The matrix as the Markdown table the README shows.
pub fn markdown_table() -> String {
    let mut out = String::from("| storage type | format |");
    for op in OPS {
        out.push_str(&format!(" {} |", op.label()));
    }
    out.push_str("\n|---|---|");
    for _ in OPS {
        out.push_str("---|");
    }
    out.push('\n');
    for r in MATRIX {
        out.push_str(&format!("| {} | {} |", r.plugintype, r.format));
        for s in r.ops {
            out.push_str(&format!(" {} |", s.cell()));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_shows_the_matrix() {
        let readme = include_str!("../../README.md");
        let start = "<!-- feature-matrix:start -->\n";
        let end = "<!-- feature-matrix:end -->";
        let a = readme.find(start).expect("README has the matrix markers") + start.len();
        let b = readme[a..].find(end).expect("end marker") + a;
        assert_eq!(&readme[a..b], markdown_table());
    }

    #[test]
    fn formats_and_types() {
        assert!(parse_format("qcow2").is_ok());
        let e = parse_format("vmdk").unwrap_err().to_string();
        assert!(e.contains("parameters.storageFormat"), "{e}");
        assert!(check_format("local", "dir", "qcow2").is_ok());
        let e = check_format("ceph", "rbd", "qcow2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("storageFormat") && e.contains("rbd"), "{e}");
        assert_eq!(format_of("100/vm-100-disk-0.qcow2"), "qcow2");
        assert_eq!(format_of("vm-100-disk-0"), "raw");
        // Unknown types get the generic rules.
        assert_eq!(support("cifs", "qcow2", Op::Snapshot), Detached);
        assert_eq!(support("iscsi", "raw", Op::Snapshot), Detached);
        assert_eq!(snapshot_kind("iscsi", "raw"), SnapshotKind::Copy);
        assert_eq!(snapshot_kind("zfspool", "raw"), SnapshotKind::Copy);
        assert_eq!(snapshot_kind("rbd", "raw"), SnapshotKind::Native);
        assert_eq!(snapshot_kind("nfs", "qcow2"), SnapshotKind::Native);
    }
}
