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
//!   current}, clone {base}); a snapshot could only ever be rolled back onto the volume itself,
//!   which is not a CSI restore, so CreateSnapshot is refused rather than leaving a snapshot
//!   that can never be restored.
//! - lvm (thick): no snapshots of raw volumes (LVMPlugin: snapshot only for qcow2 with
//!   `snapshot-as-volume-chain`).
//! - dir, nfs and other file storages: raw files have no snapshots (Plugin.pm: snapshot only
//!   for qcow2); qcow2 images have internal snapshots, taken by `qemu-img` through the stopped
//!   holder VM, which fails while the worker's QEMU has the image open (QEMU's image locking),
//!   so they need the volume detached.
//! - Copies without a snapshot (clones of a volume on storages without usable snapshots) read
//!   the live disk, which is consistent only while no VM writes it: detached only.

use super::cluster::Cluster;
use super::error::{ControllerError, Result};
use super::Controller;
use crate::volume_id::VolumeId;

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

const NO_RAW_SNAPSHOTS: &str =
    "snapshots of raw disks (pve-storage volume_has_feature: snapshot only for qcow2)";
const ZFS_NO_SNAP_COPY: &str =
    "copies of a snapshot (ZFSPoolPlugin volume_has_feature: no copy or clone of a snapshot, so a snapshot could never be restored)";
const NO_SNAPSHOT_TO_RESTORE: &str = "snapshots, so there is nothing to restore";

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
        ops: [
            Yes,
            Yes,
            No(ZFS_NO_SNAP_COPY),
            No(ZFS_NO_SNAP_COPY),
            Detached,
        ],
    },
    Row {
        plugintype: "lvm",
        format: "raw",
        ops: [
            Yes,
            Yes,
            No(NO_RAW_SNAPSHOTS),
            No(NO_SNAPSHOT_TO_RESTORE),
            Detached,
        ],
    },
    Row {
        plugintype: "dir",
        format: "raw",
        ops: [
            Yes,
            Yes,
            No(NO_RAW_SNAPSHOTS),
            No(NO_SNAPSHOT_TO_RESTORE),
            Detached,
        ],
    },
    Row {
        plugintype: "dir",
        format: "qcow2",
        ops: [Yes, Yes, Detached, Detached, Detached],
    },
    Row {
        plugintype: "nfs",
        format: "raw",
        ops: [
            Yes,
            Yes,
            No(NO_RAW_SNAPSHOTS),
            No(NO_SNAPSHOT_TO_RESTORE),
            Detached,
        ],
    },
    Row {
        plugintype: "nfs",
        format: "qcow2",
        ops: [Yes, Yes, Detached, Detached, Detached],
    },
];

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

    /// Refuses `op` on the volume `id` (named by request field `field`) when its storage
    /// cannot do it, or cannot while the volume is attached and it is. Only reads: nothing
    /// is made before this says yes. Answers what the matrix says (`Yes`, or `Detached` for a
    /// detached volume).
    pub(super) async fn require_feature(
        &self,
        cluster: &Cluster,
        field: &str,
        id: &VolumeId,
        op: Op,
    ) -> Result<Support> {
        let plugintype = self.storage_type(cluster, &id.storage).await?;
        let format = format_of(&id.volname);
        let s = support(&plugintype, format, op);
        match s {
            Support::Yes => {}
            Support::No(missing) => {
                return Err(refusal(field, &id.storage, &plugintype, op, missing))
            }
            Support::Detached => {
                if let Some((_, a)) = cluster
                    .attachments_of(std::slice::from_ref(&id.volid()))
                    .await?
                    .first()
                {
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
        assert!(matches!(support("iscsi", "raw", Op::Snapshot), No(_)));
    }
}
