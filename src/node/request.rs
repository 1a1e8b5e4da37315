//! Turning CSI requests into checked, typed parameters.
//!
//! Every rule about what a request must contain lives here, so the
//! operation modules work only with values already known to be valid, and
//! every rejection names the offending field. Malformed fields are checked
//! first (InvalidArgument), then whether the volume id is one of ours
//! (NotFound), then whether publish_context agrees with it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::contract::{
    FormatOptions, FS_TYPES, PUBLISH_CONTEXT_WWN, SECRET_ENCRYPTION_PASSPHRASE,
    VOLUME_CONTEXT_ENCRYPTED,
};
use crate::csi;
use crate::volume_id::VolumeId;
use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::AccessType;

use super::device::normalize_wwn;
use super::error::NodeError;
use super::mkfs::FsType;
use super::paths;

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
    /// mkfs sizes from the volume_context, checked against the
    /// capability's filesystem; used only on a blank disk.
    pub format: FormatOptions,
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

/// A volume id this driver made; anything else names no volume here.
pub fn known_volume(value: &str) -> Result<VolumeId, NodeError> {
    VolumeId::parse(value).ok_or_else(|| NodeError::VolumeNotFound(value.to_string()))
}

/// A required path field, checked by `paths::resolve` against the
/// kubelet directory and returned resolved.
pub fn path(kubelet_dir: &Path, field: &str, value: &str) -> Result<PathBuf, NodeError> {
    paths::resolve(kubelet_dir, field, value)
}

/// An optional path field: empty is None, anything else follows [`path`].
pub fn optional_path(
    kubelet_dir: &Path,
    field: &str,
    value: &str,
) -> Result<Option<PathBuf>, NodeError> {
    if value.is_empty() {
        Ok(None)
    } else {
        path(kubelet_dir, field, value).map(Some)
    }
}

/// A required path naming something that must already exist on this node
/// (stats, expand). CSI paths are absolute, so a relative one cannot name
/// a volume here: that is "not found" rather than a malformed request (as
/// csi-sanity expects). Every other rule of [`path`] applies.
pub fn existing_volume_path(
    kubelet_dir: &Path,
    field: &str,
    value: &str,
) -> Result<PathBuf, NodeError> {
    if value.is_empty() {
        return Err(NodeError::invalid(format!("{field} is required")));
    }
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(NodeError::PathNotFound(p.to_path_buf()));
    }
    path(kubelet_dir, field, value)
}

/// The well-formed wwn of publish_context (not yet checked against the id).
pub fn wwn(publish_context: &HashMap<String, String>) -> Result<String, NodeError> {
    match publish_context.get(PUBLISH_CONTEXT_WWN) {
        Some(w) if !w.is_empty() => normalize_wwn(w),
        _ => Err(NodeError::invalid(format!(
            "publish_context[\"{PUBLISH_CONTEXT_WWN}\"] is required (ControllerPublishVolume provides it)"
        ))),
    }
}

/// The WWN the controller attaches `id` with is derived from the id; a
/// publish_context naming another disk would mount that disk as this
/// volume, so it is refused.
pub fn wwn_of(id: &VolumeId, given: &str) -> Result<String, NodeError> {
    let expected = id.wwn().to_ascii_lowercase();
    if given != expected {
        return Err(NodeError::invalid(format!(
            "publish_context[\"{PUBLISH_CONTEXT_WWN}\"] = {given} does not belong to volume_id {id} (its disk has wwn {expected})"
        )));
    }
    Ok(expected)
}

/// Whether volume_context asks for encryption.
pub fn encrypted(volume_context: &HashMap<String, String>) -> Result<bool, NodeError> {
    match volume_context.get(VOLUME_CONTEXT_ENCRYPTED).map(String::as_str) {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(NodeError::invalid(format!(
            "volume_context[\"{VOLUME_CONTEXT_ENCRYPTED}\"] must be \"true\" or \"false\", got {other:?}"
        ))),
    }
}

/// The mkfs sizes a volume_context carries, valid for the filesystem the
/// capability asks for (block access formats nothing, so any valid number
/// passes).
pub fn format_options(
    volume_context: &HashMap<String, String>,
    capability: &Capability,
) -> Result<FormatOptions, NodeError> {
    let field = "volume_context";
    let opts = FormatOptions::parse(volume_context, field).map_err(NodeError::invalid)?;
    if let Access::Mount { fs, .. } = &capability.access {
        opts.check(fs.as_str(), field).map_err(NodeError::invalid)?;
    }
    Ok(opts)
}

/// The passphrase for an encrypted volume, or None for a plain one.
pub fn encryption(
    volume_context: &HashMap<String, String>,
    secrets: &HashMap<String, String>,
) -> Result<Option<Passphrase>, NodeError> {
    if !encrypted(volume_context)? {
        return Ok(None);
    }
    match secrets.get(SECRET_ENCRYPTION_PASSPHRASE) {
        Some(p) if !p.is_empty() => Ok(Some(Passphrase::new(p.clone()))),
        _ => Err(NodeError::invalid(format!(
            "secrets[\"{SECRET_ENCRYPTION_PASSPHRASE}\"] is required for an encrypted volume"
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
                FsType::default_type()
            } else {
                FsType::parse(&m.fs_type).ok_or_else(|| {
                    NodeError::invalid(format!(
                        "{field}.mount.fs_type {:?} is not supported (use one of {})",
                        m.fs_type,
                        FS_TYPES.join(", ")
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
    pub fn from_csi(
        req: &csi::NodeStageVolumeRequest,
        kubelet_dir: &Path,
    ) -> Result<Self, NodeError> {
        let volume_id = volume_id(&req.volume_id)?;
        let staging_path = path(kubelet_dir, "staging_target_path", &req.staging_target_path)?;
        let capability = capability("volume_capability", req.volume_capability.as_ref())?;
        let given_wwn = wwn(&req.publish_context)?;
        let encryption = encryption(&req.volume_context, &req.secrets)?;
        let format = format_options(&req.volume_context, &capability)?;
        let id = known_volume(&volume_id)?;
        Ok(StageRequest {
            wwn: wwn_of(&id, &given_wwn)?,
            volume_id,
            staging_path,
            capability,
            encryption,
            format,
        })
    }
}

impl PublishRequest {
    pub fn from_csi(
        req: &csi::NodePublishVolumeRequest,
        kubelet_dir: &Path,
    ) -> Result<Self, NodeError> {
        let volume_id = volume_id(&req.volume_id)?;
        let staging_path = path(kubelet_dir, "staging_target_path", &req.staging_target_path)?;
        let target_path = path(kubelet_dir, "target_path", &req.target_path)?;
        let capability = capability("volume_capability", req.volume_capability.as_ref())?;
        let given_wwn = wwn(&req.publish_context)?;
        let encrypted = encrypted(&req.volume_context)?;
        let id = known_volume(&volume_id)?;
        Ok(PublishRequest {
            wwn: wwn_of(&id, &given_wwn)?,
            volume_id,
            staging_path,
            target_path,
            capability,
            readonly: req.readonly,
            encrypted,
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
        let ctx = HashMap::from([(VOLUME_CONTEXT_ENCRYPTED.to_string(), "true".to_string())]);
        let e = encryption(&ctx, &HashMap::new()).unwrap_err();
        assert!(e.to_string().contains(SECRET_ENCRYPTION_PASSPHRASE));
        let secrets = HashMap::from([(
            SECRET_ENCRYPTION_PASSPHRASE.to_string(),
            "hunter2".to_string(),
        )]);
        let p = encryption(&ctx, &secrets).unwrap().unwrap();
        assert_eq!(p.expose(), "hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(encryption(&HashMap::new(), &secrets).unwrap().is_none());
        let bad = HashMap::from([(VOLUME_CONTEXT_ENCRYPTED.to_string(), "yes".to_string())]);
        assert_eq!(
            encrypted(&bad).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn wwn_must_belong_to_the_volume() {
        let a = VolumeId::from_volid("r", "z", "s:vm-100000-disk-0", "csi-vol-a").unwrap();
        let b = VolumeId::from_volid("r", "z", "s:vm-100001-disk-0", "csi-vol-b").unwrap();
        assert_eq!(wwn_of(&a, &a.wwn()).unwrap(), a.wwn());
        let e = wwn_of(&a, &b.wwn()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("publish_context[\"wwn\"]"), "{e}");
        let e = known_volume("r/z/s/v").unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.to_string().contains("volume_id"), "{e}");
    }

    #[test]
    fn volume_paths() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path();
        let e = existing_volume_path(k, "volume_path", "some/path").unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = existing_volume_path(k, "volume_path", "").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = existing_volume_path(k, "volume_path", "/etc").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("volume_path"));
        assert!(optional_path(k, "staging_target_path", "")
            .unwrap()
            .is_none());
    }
}
