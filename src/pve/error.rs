//! Errors from talking to a Proxmox VE API, with the classification the
//! driver needs to choose a gRPC code and whether a retry can help.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// PVE answered with an HTTP error status.
    #[error("Proxmox API {method} {path}: HTTP {status}: {message}{}", fmt_param_errors(.param_errors))]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
        /// Per-parameter messages PVE returns with "Parameter verification failed."
        param_errors: BTreeMap<String, String>,
    },
    /// The request never got an answer (connect, TLS, timeout).
    #[error("Proxmox API {method} {path}: {source}")]
    Transport {
        method: String,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// PVE (or something in front of it) answered with a redirect, which is
    /// never followed: credentials must not go to another address.
    #[error("Proxmox API {method} {path}: HTTP {status} redirect to {location:?} refused; credentials are never sent to another address, set url to the real PVE API address")]
    Redirect { method: String, path: String, status: u16, location: String },
    /// The answer was not what the API schema says it returns.
    #[error("Proxmox API {method} {path}: unexpected response: {detail}")]
    Decode { method: String, path: String, detail: String },
    /// A worker task (UPID) ended with an error exit status.
    #[error("Proxmox task {upid} failed: {exitstatus}")]
    TaskFailed { upid: String, exitstatus: String },
    /// A worker task was still running when we stopped waiting.
    #[error("Proxmox task {upid} still running after {waited_secs}s")]
    TaskTimeout { upid: String, waited_secs: u64 },
    /// Local configuration problem (bad URL, unreadable CA file, ...).
    #[error("Proxmox client configuration: {0}")]
    Config(String),
}

fn fmt_param_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join("; "))
}

impl PveError {
    /// The text PVE gave, whether from the HTTP answer or a failed task.
    pub fn message(&self) -> String {
        match self {
            PveError::Api { message, .. } => message.clone(),
            PveError::TaskFailed { exitstatus, .. } => exitstatus.clone(),
            other => other.to_string(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Another writer holds the VM config, or the VM is locked for a
    /// backup/migration/snapshot. Waiting and trying again can succeed.
    pub fn is_contention(&self) -> bool {
        let m = self.message();
        (m.contains("can't lock file") && m.contains("got timeout"))
            || m.contains("is locked (")
            || m.contains("checksum mismatch")
            || m.contains("file change by other user")
    }

    /// The request could not reach PVE or PVE could not answer now.
    pub fn is_unavailable(&self) -> bool {
        match self {
            PveError::Transport { .. } | PveError::TaskTimeout { .. } => true,
            PveError::Api { status, .. } => matches!(status, 502..=504) || *status == 595 || *status == 596,
            _ => false,
        }
    }

    pub fn is_permission(&self) -> bool {
        matches!(self, PveError::Api { status: 401 | 403, .. })
    }

    /// PVE reports a missing volume/VM/storage as a plain 500 with a text;
    /// these are the texts it uses for the objects the driver asks about.
    pub fn is_not_found(&self) -> bool {
        let m = self.message();
        m.contains("does not exist")
            || m.contains("no such volume")
            || m.contains("unable to find configuration file")
            || m.contains("no such logical volume")
            || m.contains("dataset does not exist")
            || matches!(self, PveError::Api { status: 404, .. })
    }
}
