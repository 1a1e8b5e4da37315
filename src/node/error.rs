//! The node plugin's single error type and its one mapping to gRPC status.

use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A request field is missing or malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),

    #[error("an operation on volume {0} is already in progress")]
    Busy(String),

    #[error("disk with wwn {wwn} did not appear as {link} within {waited:?}")]
    DeviceNotFound {
        wwn: String,
        link: PathBuf,
        waited: Duration,
    },

    #[error("{0} does not exist")]
    PathNotFound(PathBuf),

    /// The volume id is not one this driver makes, so it names no volume.
    #[error("volume_id {0:?} is not a volume of this driver")]
    VolumeNotFound(String),

    /// The request asks for a size this node cannot provide.
    #[error("{0}")]
    OutOfRange(String),

    #[error("{path} is not a block device")]
    NotBlockDevice { path: PathBuf },

    /// The by-id link resolves to a disk whose identity disagrees with the
    /// requested wwn, e.g. a stale link left behind after a detach.
    #[error("{device} reports wwid {found:?} but wwn {wwn} was requested; refusing to use it")]
    WrongDisk {
        device: PathBuf,
        wwn: String,
        found: String,
    },

    /// The device carries data we must not overwrite or cannot use.
    #[error("{device} is not blank ({found}); refusing to format it")]
    NotBlank { device: PathBuf, found: String },

    #[error(
        "{device} holds a {found} filesystem but {wanted} was requested; leaving it untouched"
    )]
    FsTypeMismatch {
        device: PathBuf,
        found: String,
        wanted: String,
    },

    /// The target is already in use in a way incompatible with the request.
    #[error("{0}")]
    Incompatible(String),

    /// A prerequisite step (e.g. staging) has not happened or the request
    /// asks for something this node cannot provide.
    #[error("{0}")]
    Precondition(String),

    #[error("{tool} failed ({status}): {output}")]
    Tool {
        tool: String,
        status: String,
        output: String,
    },

    #[error("{op} {path}: {errno}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        errno: nix::errno::Errno,
    },

    /// A bug or crash inside the plugin (e.g. a panicked task).
    #[error("internal error: {0}")]
    Internal(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl NodeError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        NodeError::InvalidArgument(msg.into())
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NodeError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            NodeError::InvalidArgument(_) => Code::InvalidArgument,
            NodeError::Busy(_) => Code::Aborted,
            NodeError::DeviceNotFound { .. }
            | NodeError::PathNotFound(_)
            | NodeError::VolumeNotFound(_) => Code::NotFound,
            NodeError::OutOfRange(_) => Code::OutOfRange,
            NodeError::NotBlockDevice { .. }
            | NodeError::WrongDisk { .. }
            | NodeError::NotBlank { .. }
            | NodeError::FsTypeMismatch { .. }
            | NodeError::Precondition(_) => Code::FailedPrecondition,
            NodeError::Incompatible(_) => Code::AlreadyExists,
            NodeError::Tool { .. }
            | NodeError::Sys { .. }
            | NodeError::Io { .. }
            | NodeError::Internal(_) => Code::Internal,
        }
    }
}

impl From<NodeError> for Status {
    fn from(err: NodeError) -> Status {
        Status::new(err.code(), err.to_string())
    }
}
