//! The controller ↔ node contract: every key and value one side writes and
//! the other reads. This module is the one place both sides read them from,
//! so a rename cannot silently break the hand-over between
//! ControllerPublishVolume and NodeStageVolume.

/// publish_context key: the WWN (`0x5` + 15 hex digits) the disk is
/// hot-plugged with. Derived from the volume id (`VolumeId::wwn`), so the
/// node can check it instead of trusting it.
pub const PUBLISH_CONTEXT_WWN: &str = "wwn";
/// publish_context key: the worker VM's bus slot (`scsiN`), informational.
pub const PUBLISH_CONTEXT_BUS: &str = "bus";
/// volume_context key asking for LUKS encryption on the node (`"true"`).
pub const VOLUME_CONTEXT_ENCRYPTED: &str = "encrypted";
/// Node-stage secret key holding the LUKS passphrase.
pub const SECRET_ENCRYPTION_PASSPHRASE: &str = "encryptionPassphrase";
/// Filesystems the node formats and mounts (`csi.storage.k8s.io/fstype`).
pub const FS_TYPES: &[&str] = &["ext4", "xfs"];
/// Used when a mount capability leaves fs_type empty.
pub const DEFAULT_FS_TYPE: &str = "ext4";
