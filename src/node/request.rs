//! Turning CSI requests into checked, typed parameters.
//!
//! Every rule about what a request must contain lives here, so the
//! operation modules work only with values already known to be valid, and
//! every rejection names the offending field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::csi;
use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::AccessType;

use super::device::normalize_wwn;
use super::error::NodeError;
use super::mkfs::FsType;

/// publish_context key carrying the disk's WWN (set by the controller).
pub const CTX_WWN: &str = "wwn";
/// volume_context key that asks for LUKS encryption (`"true"`).
pub const CTX_ENCRYPTED: &str = "encrypted";
/// Secret holding the LUKS passphrase of an encrypted volume.
pub const SECRET_PASSPHRASE: &str = "encryptionPassphrase";

/// A LUKS passphrase. Debug output is redacted so it cannot leak through
/// logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(String);

impl Passphrase {
    pub fn new(s: impl Into<String>) -> Self {
        Passphrase(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Mount { fs: FsType, flags: Vec<String> },
    Block,
}

/// How the workload may use the volume on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// SINGLE_NODE_WRITER / SINGLE_NODE_MULTI_WRITER: any number of
    /// publications, writable.
    MultiWriter,
    /// SINGLE_NODE_SINGLE_WRITER: at most one publication on the node.
    SingleWriter,
    /// SINGLE_NODE_READER_ONLY: every mount is read-only.
    ReadOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub access: Access,
    pub sharing: Sharing,
}

#[derive(Debug, Clone)]
pub struct StageRequest {
    pub volume_id: String,
    pub wwn: String,
    pub staging_path: PathBuf,
    pub capability: Capability,
    /// Set for encrypted volumes.
    pub encryption: Option<Passphrase>,
}

#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub volume_id: String,
    pub wwn: String,
    pub staging_path: PathBuf,
    pub target_path: PathBuf,
    pub capability: Capability,
    pub readonly: bool,
    /// The volume's data lives in a LUKS mapping opened at stage time.
    pub encrypted: bool,
}

pub fn volume_id(value: &str) -> Result<String, NodeError> {
    if value.is_empty() {
        return Err(NodeError::invalid("volume_id is required"));
    }
    Ok(value.to_string())
}

/// A required path field; CSI paths are absolute in the plugin's namespace.
pub fn path(field: &str, value: &str) -> Result<PathBuf, NodeError> {
    if value.is_empty() {
        return Err(NodeError::invalid(format!("{field} is required")));
    }
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(NodeError::invalid(format!(
            "{field} must be an absolute path, got {value:?}"
        )));
    }
    Ok(p.to_path_buf())
}

/// A required path naming something that must already exist on this node
/// (stats, expand). CSI paths are absolute, so a relative one cannot name
/// a volume here: that is "not found" rather than a malformed request.
pub fn existing_volume_path(field: &str, value: &str) -> Result<PathBuf, NodeError> {
    if value.is_empty() {
        return Err(NodeError::invalid(format!("{field} is required")));
    }
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(NodeError::PathNotFound(p.to_path_buf()));
    }
    Ok(p.to_path_buf())
}

pub fn wwn(publish_context: &HashMap<String, String>) -> Result<String, NodeError> {
    match publish_context.get(CTX_WWN) {
        Some(w) if !w.is_empty() => normalize_wwn(w),
        _ => Err(NodeError::invalid(format!(
            "publish_context[\"{CTX_WWN}\"] is required (ControllerPublishVolume provides it)"
        ))),
    }
}

/// Whether volume_context asks for encryption.
pub fn encrypted(volume_context: &HashMap<String, String>) -> Result<bool, NodeError> {
    match volume_context.get(CTX_ENCRYPTED).map(String::as_str) {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(NodeError::invalid(format!(
            "volume_context[\"{CTX_ENCRYPTED}\"] must be \"true\" or \"false\", got {other:?}"
        ))),
    }
}

/// The passphrase for an encrypted volume, or None for a plain one.
pub fn encryption(
    volume_context: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
) -> Result<Option<Passphrase>, NodeError> {
    if !encrypted(volume_context)? {
        return Ok(None);
    }
    match secrets.get(SECRET_PASSPHRASE) {
        Some(p) if !p.is_empty() => Ok(Some(Passphrase::new(p.clone()))),
        _ => Err(NodeError::invalid(format!(
            "secrets[\"{SECRET_PASSPHRASE}\"] is required for an encrypted volume"
        ))),
    }
}

pub fn capability(
    field: &str,
    cap: Option<&csi::VolumeCapability>,
) -> Result<Capability, NodeError> {
    let cap = cap.ok_or_else(|| NodeError::invalid(format!("{field} is required")))?;
    let access = match &cap.access_type {
        Some(AccessType::Block(_)) => Access::Block,
        Some(AccessType::Mount(m)) => {
            let fs = if m.fs_type.is_empty() {
                FsType::DEFAULT
            } else {
                FsType::parse(&m.fs_type).ok_or_else(|| {
                    NodeError::invalid(format!(
                        "{field}.mount.fs_type {:?} is not supported (use ext4 or xfs)",
                        m.fs_type
                    ))
                })?
            };
            Access::Mount {
                fs,
                flags: m.mount_flags.clone(),
            }
        }
        None => {
            return Err(NodeError::invalid(format!(
                "{field}.access_type must be mount or block"
            )))
        }
    };
    let mode = cap
        .access_mode
        .as_ref()
        .map(|m| m.mode())
        .unwrap_or(Mode::Unknown);
    let sharing = match mode {
        Mode::SingleNodeWriter | Mode::SingleNodeMultiWriter => Sharing::MultiWriter,
        Mode::SingleNodeSingleWriter => Sharing::SingleWriter,
        Mode::SingleNodeReaderOnly => Sharing::ReadOnly,
        // A Proxmox disk is attached to one VM at a time, and ext4/xfs are
        // not cluster filesystems, so multi-node modes cannot be honoured.
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter => {
            return Err(NodeError::Precondition(format!(
                "{field}.access_mode {} is not supported: volumes attach to a single node",
                mode.as_str_name()
            )))
        }
        Mode::Unknown => {
            return Err(NodeError::invalid(format!(
                "{field}.access_mode is required"
            )))
        }
    };
    Ok(Capability { access, sharing })
}

impl StageRequest {
    pub fn from_csi(req: &csi::NodeStageVolumeRequest) -> Result<Self, NodeError> {
        Ok(StageRequest {
            volume_id: volume_id(&req.volume_id)?,
            staging_path: path("staging_target_path", &req.staging_target_path)?,
            capability: capability("volume_capability", req.volume_capability.as_ref())?,
            wwn: wwn(&req.publish_context)?,
            encryption: encryption(&req.volume_context, &req.secrets)?,
        })
    }
}

impl PublishRequest {
    pub fn from_csi(req: &csi::NodePublishVolumeRequest) -> Result<Self, NodeError> {
        Ok(PublishRequest {
            volume_id: volume_id(&req.volume_id)?,
            staging_path: path("staging_target_path", &req.staging_target_path)?,
            target_path: path("target_path", &req.target_path)?,
            capability: capability("volume_capability", req.volume_capability.as_ref())?,
            wwn: wwn(&req.publish_context)?,
            readonly: req.readonly,
            encrypted: encrypted(&req.volume_context)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use csi::volume_capability::{AccessMode, MountVolume};

    fn mount_cap(fs: &str, mode: Mode) -> csi::VolumeCapability {
        csi::VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                ..Default::default()
            })),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn fs_type_rules() {
        let c = capability(
            "volume_capability",
            Some(&mount_cap("", Mode::SingleNodeWriter)),
        )
        .unwrap();
        assert_eq!(
            c.access,
            Access::Mount {
                fs: FsType::Ext4,
                flags: vec![]
            }
        );
        let c = capability(
            "volume_capability",
            Some(&mount_cap("xfs", Mode::SingleNodeWriter)),
        )
        .unwrap();
        assert_eq!(
            c.access,
            Access::Mount {
                fs: FsType::Xfs,
                flags: vec![]
            }
        );
        let e = capability(
            "volume_capability",
            Some(&mount_cap("btrfs", Mode::SingleNodeWriter)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("volume_capability.mount.fs_type"));
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn access_mode_rules() {
        let e = capability("volume_capability", Some(&mount_cap("", Mode::Unknown))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = capability(
            "volume_capability",
            Some(&mount_cap("", Mode::MultiNodeMultiWriter)),
        )
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        let c = capability(
            "volume_capability",
            Some(&mount_cap("", Mode::SingleNodeSingleWriter)),
        )
        .unwrap();
        assert_eq!(c.sharing, Sharing::SingleWriter);
        assert!(capability("volume_capability", None)
            .unwrap_err()
            .to_string()
            .contains("volume_capability"));
    }

    #[test]
    fn wwn_required() {
        let e = wwn(&HashMap::new()).unwrap_err();
        assert!(e.to_string().contains("publish_context[\"wwn\"]"));
        let ctx = HashMap::from([("wwn".to_string(), "0x5000C500AABBCCDD".to_string())]);
        assert_eq!(wwn(&ctx).unwrap(), "0x5000c500aabbccdd");
    }

    #[test]
    fn encryption_needs_a_passphrase_and_hides_it() {
        let ctx = HashMap::from([(CTX_ENCRYPTED.to_string(), "true".to_string())]);
        let e = encryption(&ctx, &HashMap::new()).unwrap_err();
        assert!(e.to_string().contains(SECRET_PASSPHRASE));
        let secrets = HashMap::from([(SECRET_PASSPHRASE.to_string(), "hunter2".to_string())]);
        let p = encryption(&ctx, &secrets).unwrap().unwrap();
        assert_eq!(p.expose(), "hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(encryption(&HashMap::new(), &secrets).unwrap().is_none());
        let bad = HashMap::from([(CTX_ENCRYPTED.to_string(), "yes".to_string())]);
        assert_eq!(
            encrypted(&bad).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn paths_must_be_absolute() {
        assert!(path("target_path", "")
            .unwrap_err()
            .to_string()
            .contains("target_path"));
        assert!(path("target_path", "rel/x").is_err());
        assert!(path("target_path", "/abs").is_ok());
        let e = existing_volume_path("volume_path", "some/path").unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = existing_volume_path("volume_path", "").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
