//! The controller's error type and its one mapping to gRPC status codes.

use crate::pve::{PveError, PveErrorKind};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    OutOfRange(String),
    /// Another operation on the same volume/VM is in progress; retry later.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    /// PVE hid something for want of a privilege (see visibility.rs).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{context}: {source}")]
    Pve {
        context: String,
        #[source]
        source: Box<PveError>,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, ControllerError>;

/// Adds what the driver was doing to a PVE error.
pub trait PveContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> PveContext<T> for std::result::Result<T, PveError> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| ControllerError::Pve {
            context: context(),
            source: Box::new(source),
        })
    }
}

fn pve_code(e: &PveError) -> Code {
    match e.kind() {
        PveErrorKind::Contention => Code::Aborted,
        // The change stays pending in PVE; a later retry can complete it.
        PveErrorKind::Hotplug | PveErrorKind::SlotUnusable | PveErrorKind::Unavailable => {
            Code::Unavailable
        }
        PveErrorKind::Permission => Code::PermissionDenied,
        PveErrorKind::NotFound => Code::NotFound,
        PveErrorKind::AlreadyExists => Code::AlreadyExists,
        PveErrorKind::FeatureUnavailable => Code::FailedPrecondition,
        PveErrorKind::InvalidParameter => Code::InvalidArgument,
        PveErrorKind::ShrinkRefused => Code::OutOfRange,
        PveErrorKind::NoSpace => Code::ResourceExhausted,
        PveErrorKind::Other => Code::Internal,
    }
}

/// A PermissionDenied message leads with what is missing, so the operator can grant it
/// (docs/runbook.md has the table of privileges per RPC).
fn permission_text(e: &ControllerError) -> Option<String> {
    let ControllerError::Pve { context, source } = e else {
        return None;
    };
    if source.kind() != PveErrorKind::Permission {
        return None;
    }
    Some(match source.missing_privilege() {
        Some(m) => format!("{context}: the Proxmox token lacks {m} ({source})"),
        None => format!("{context}: Proxmox refused the token ({source})"),
    })
}

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Status {
        let code = match &e {
            ControllerError::InvalidArgument(_) => Code::InvalidArgument,
            ControllerError::NotFound(_) => Code::NotFound,
            ControllerError::AlreadyExists(_) => Code::AlreadyExists,
            ControllerError::FailedPrecondition(_) => Code::FailedPrecondition,
            ControllerError::ResourceExhausted(_) => Code::ResourceExhausted,
            ControllerError::OutOfRange(_) => Code::OutOfRange,
            ControllerError::Aborted(_) => Code::Aborted,
            ControllerError::Unavailable(_) => Code::Unavailable,
            ControllerError::PermissionDenied(_) => Code::PermissionDenied,
            ControllerError::Pve { source, .. } => pve_code(source),
            ControllerError::Internal(_) => Code::Internal,
        };
        Status::new(code, permission_text(&e).unwrap_or_else(|| e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn api(status: u16, message: &str) -> PveError {
        PveError::Api {
            method: "POST".into(),
            path: "/x".into(),
            status,
            message: message.into(),
            param_errors: BTreeMap::new(),
        }
    }

    #[test]
    fn lock_timeouts_are_aborted() {
        let e = ControllerError::Pve {
            context: "attach".into(),
            source: Box::new(api(
                500,
                "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout",
            )),
        };
        let s: Status = e.into();
        assert_eq!(s.code(), Code::Aborted);
        assert!(s.message().contains("attach") && s.message().contains("lock-101"));
        let s: Status = ControllerError::Pve {
            context: "x".into(),
            source: Box::new(api(500, "VM is locked (backup)")),
        }
        .into();
        assert_eq!(s.code(), Code::Aborted);
    }

    #[test]
    fn permission_and_bad_params() {
        let s: Status = ControllerError::Pve {
            context: "x".into(),
            source: Box::new(api(
                403,
                "Permission check failed (/storage/local, Datastore.AllocateSpace)",
            )),
        }
        .into();
        assert_eq!(s.code(), Code::PermissionDenied);
        let s: Status = ControllerError::Pve {
            context: "x".into(),
            source: Box::new(api(400, "Parameter verification failed.")),
        }
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: Status = ControllerError::Pve {
            context: "x".into(),
            source: Box::new(api(502, "Bad Gateway")),
        }
        .into();
        assert_eq!(s.code(), Code::Unavailable);
    }
}
