//! What each storage type can do with a volume, by feature and by the volume's state, as
//! pve-storage's plugins answer `volume_has_feature`. qemu-server asks it before a snapshot
//! (pve-guest-common AbstractConfig::snapshot_prepare -> has_feature 'snapshot') and before a
//! clone (API2/Qemu.pm clone_vm: 'copy' for a full clone, 'clone' for a linked one), so the
//! simulator's handlers ask here and refuse with PVE's texts.
//!
//! The tables are those of pve-storage 9.1:
//! - dir/nfs: Storage/Plugin.pm volume_has_feature (by format; DirPlugin and NFSPlugin inherit it)
//! - lvmthin: Storage/LvmThinPlugin.pm volume_has_feature (raw only)
//! - lvm: Storage/LVMPlugin.pm volume_has_feature (by format; raw has no snapshot at all,
//!   qcow2 on LVM needs `snapshot-as-volume-chain`, which the simulator does not model)
//! - zfspool: Storage/ZFSPoolPlugin.pm volume_has_feature (no copy and no clone of a snapshot)
//! - rbd: Storage/RBDPlugin.pm volume_has_feature

/// A volume's state for a feature question: `snap` when asked about one of its snapshots,
/// `base` for a template's volume (`base-…`), else `current` (pve-storage, every plugin's
/// volume_has_feature: `$key = $snapname ? 'snap' : ($isBase ? 'base' : 'current')`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Current,
    Snap,
    Base,
}

impl State {
    pub fn of(is_base: bool, snap: bool) -> State {
        match (snap, is_base) {
            (true, _) => State::Snap,
            (false, true) => State::Base,
            (false, false) => State::Current,
        }
    }
}

/// The features the driver's calls depend on (PVE has also `template`, `sparseinit`,
/// `replicate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Snapshot,
    /// Linked clone (copy-on-write child).
    Clone,
    /// Full copy.
    Copy,
    Rename,
}

impl Feature {
    pub fn parse(s: &str) -> Option<Feature> {
        Some(match s {
            "snapshot" => Feature::Snapshot,
            "clone" => Feature::Clone,
            "copy" => Feature::Copy,
            "rename" => Feature::Rename,
            _ => return None,
        })
    }
}

/// `volume_has_feature` for a volume of storage type `kind` in `format`.
pub fn has(kind: &str, format: &str, feature: Feature, state: State) -> bool {
    use Feature::*;
    use State::*;
    match kind {
        // Storage/ZFSPoolPlugin.pm volume_has_feature: snapshot {current, snap}, clone {base},
        // copy {base, current}, rename {current}.
        "zfspool" => matches!(
            (feature, state),
            (Snapshot, Current | Snap) | (Clone, Base) | (Copy, Base | Current) | (Rename, Current)
        ),
        // Storage/RBDPlugin.pm volume_has_feature: snapshot {current, snap}, clone {base, snap},
        // copy {base, current, snap}, rename {current}.
        "rbd" => matches!(
            (feature, state),
            (Snapshot, Current | Snap)
                | (Clone, Base | Snap)
                | (Copy, Base | Current | Snap)
                | (Rename, Current)
        ),
        // Storage/LvmThinPlugin.pm volume_has_feature: snapshot {current}, clone {base, snap},
        // copy {base, current, snap}, rename {current}.
        "lvmthin" => matches!(
            (feature, state),
            (Snapshot, Current)
                | (Clone, Base | Snap)
                | (Copy, Base | Current | Snap)
                | (Rename, Current)
        ),
        // Storage/LVMPlugin.pm volume_has_feature: copy {base, current: raw+qcow2; snap: qcow2},
        // rename {current: raw+qcow2}, snapshot {current, snap: qcow2}; no clone ("fixme").
        "lvm" => match (feature, state) {
            (Copy, Base | Current) | (Rename, Current) => matches!(format, "raw" | "qcow2"),
            (Copy, Snap) | (Snapshot, Current | Snap) => format == "qcow2",
            _ => false,
        },
        // Storage/Plugin.pm volume_has_feature (dir, nfs, cifs, …): snapshot {current, snap:
        // qcow2}, clone {base: qcow2, raw, vmdk}, copy {base, current: qcow2, raw, vmdk; snap:
        // qcow2}, rename {current: qcow2, raw, vmdk}.
        _ => match (feature, state) {
            (Snapshot, Current | Snap) | (Copy, Snap) => format == "qcow2",
            (Clone, Base) | (Copy, Base | Current) | (Rename, Current) => {
                matches!(format, "qcow2" | "raw" | "vmdk")
            }
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zfs_cannot_copy_or_clone_a_snapshot() {
        assert!(has("zfspool", "raw", Feature::Snapshot, State::Current));
        assert!(!has("zfspool", "raw", Feature::Copy, State::Snap));
        assert!(!has("zfspool", "raw", Feature::Clone, State::Snap));
        assert!(has("zfspool", "raw", Feature::Copy, State::Current));
    }

    #[test]
    fn raw_lvm_and_raw_files_have_no_snapshots() {
        assert!(!has("lvm", "raw", Feature::Snapshot, State::Current));
        assert!(!has("dir", "raw", Feature::Snapshot, State::Current));
        assert!(has("dir", "qcow2", Feature::Snapshot, State::Current));
        assert!(has("dir", "qcow2", Feature::Copy, State::Snap));
        assert!(has("rbd", "raw", Feature::Copy, State::Snap));
        assert!(has("lvmthin", "raw", Feature::Copy, State::Snap));
    }
}
