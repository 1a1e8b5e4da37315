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
    Redirect {
        method: String,
        path: String,
        status: u16,
        location: String,
    },
    /// The answer was not what the API schema says it returns.
    #[error("Proxmox API {method} {path}: unexpected response: {detail}")]
    Decode {
        method: String,
        path: String,
        detail: String,
    },
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

/// What a permission error names: the ACL path and the privilege (any one of several,
/// when PVE lists more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingPrivilege {
    pub path: String,
    pub privileges: Vec<String>,
}

impl std::fmt::Display for MissingPrivilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.privileges.as_slice() {
            [one] => write!(f, "{one} on {}", self.path),
            many => write!(f, "one of {} on {}", many.join(", "), self.path),
        }
    }
}

fn fmt_param_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join("; "))
}

/// What a PVE error means to the driver. PVE reports most failures as HTTP
/// 500 (or a failed task) with a text; this is the one place those texts are
/// read, so callers decide on kinds, never on wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PveErrorKind {
    /// A config/storage lock could not be had in time, the VM is locked for
    /// another operation, or the config changed under us (digest). Retrying
    /// can succeed.
    Contention,
    /// PVE could not be reached or could not answer now.
    Unavailable,
    /// The token or user lacks a privilege (401/403).
    Permission,
    /// The VM, volume or storage addressed does not exist.
    NotFound,
    /// What was to be created exists already (VM id taken, snapshot name used).
    AlreadyExists,
    /// The storage cannot do this for this volume (no snapshots on raw files, ...).
    FeatureUnavailable,
    /// A resize asked for a smaller size than the disk has.
    ShrinkRefused,
    /// The storage has no room for the size asked (or the size is beyond
    /// what it can hold at all).
    NoSpace,
    /// QEMU could not hot-plug or hot-unplug a device; the change stays
    /// pending in the VM config. Retrying later can succeed.
    Hotplug,
    /// QEMU still holds an object of this disk slot (the throttle group a
    /// hot-unplug the guest did not acknowledge leaves behind), so no disk
    /// can be hot-plugged into that slot until the VM restarts. Another slot
    /// works.
    SlotUnusable,
    /// PVE refused the parameters (400).
    InvalidParameter,
    /// Anything else.
    Other,
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

    /// The message with PVE's per-parameter texts, which is where PVE puts
    /// e.g. "VM 100 already exists" or a hot-plug failure.
    fn full_text(&self) -> String {
        match self {
            PveError::Api {
                message,
                param_errors,
                ..
            } if !param_errors.is_empty() => {
                format!("{message}{}", fmt_param_errors(param_errors))
            }
            other => other.message(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            PveError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Classify by status and PVE's texts (qemu-server, pve-storage and
    /// pve-common wording). Order matters: a hot-plug failure arrives as a
    /// 400 parameter exception, a missing VM as a 500.
    pub fn kind(&self) -> PveErrorKind {
        let m = self.full_text();
        if (m.contains("can't lock file") && m.contains("got timeout"))
            || m.contains("got lock request timeout")
            || m.contains("is locked (")
            || m.contains("checksum mismatch")
            || m.contains("file change by other user")
        {
            return PveErrorKind::Contention;
        }
        // QEMU's object-add of qemu-server Blockdev::attach's throttle group.
        if m.contains("attempt to add duplicate property 'throttle-drive-") {
            return PveErrorKind::SlotUnusable;
        }
        if m.contains("hotplug problem")
            || m.contains("still busy in guest")
            || m.contains("can't unplug")
        {
            return PveErrorKind::Hotplug;
        }
        match self {
            PveError::Transport { .. } | PveError::TaskTimeout { .. } => {
                return PveErrorKind::Unavailable
            }
            PveError::Api {
                status: 502..=504 | 595 | 596,
                ..
            } => return PveErrorKind::Unavailable,
            PveError::Api {
                status: 401 | 403, ..
            } => return PveErrorKind::Permission,
            // A worker that runs a privilege check itself dies with raise_perm_exc's text.
            PveError::TaskFailed { exitstatus, .. }
                if exitstatus.starts_with("Permission check failed") =>
            {
                return PveErrorKind::Permission
            }
            _ => {}
        }
        if m.contains("does not exist")
            || m.contains("no such volume")
            || m.contains("unable to find configuration file")
            || m.contains("no such logical volume")
            || m.contains("dataset does not exist")
            || matches!(self, PveError::Api { status: 404, .. })
        {
            return PveErrorKind::NotFound;
        }
        if m.contains("already exists") || m.contains("already used") {
            return PveErrorKind::AlreadyExists;
        }
        // qemu-server clone_vm: "Full|Linked clone feature is not supported for [a snapshot of] …".
        if m.contains("feature is not available") || m.contains("clone feature is not supported") {
            return PveErrorKind::FeatureUnavailable;
        }
        if m.contains("shrinking disks is not supported") {
            return PveErrorKind::ShrinkRefused;
        }
        if m.contains("File too large")
            || m.contains("Insufficient free space")
            || m.contains("No space left on device")
            || m.contains("not enough space")
        {
            return PveErrorKind::NoSpace;
        }
        if matches!(self, PveError::Api { status: 400, .. }) {
            return PveErrorKind::InvalidParameter;
        }
        PveErrorKind::Other
    }

    /// Another writer holds the VM config, or the VM is locked for a
    /// backup/migration/snapshot. Waiting and trying again can succeed.
    pub fn is_contention(&self) -> bool {
        self.kind() == PveErrorKind::Contention
    }

    /// The request could not reach PVE or PVE could not answer now.
    pub fn is_unavailable(&self) -> bool {
        self.kind() == PveErrorKind::Unavailable
    }

    pub fn is_permission(&self) -> bool {
        self.kind() == PveErrorKind::Permission
    }

    /// For a [`PveErrorKind::Permission`] error, what PVE says is missing: pve-common
    /// Exception::raise_perm_exc writes "Permission check failed (<what>)", and
    /// pve-access-control RPCEnvironment::check/check_any put "<path>, <priv>" (or
    /// "<path>, <priv>|<priv>" for any of several) there. None when PVE gave no path
    /// (a bare "Permission check failed", or another text such as "pool 'x' does not exist").
    pub fn missing_privilege(&self) -> Option<MissingPrivilege> {
        if self.kind() != PveErrorKind::Permission {
            return None;
        }
        let m = self.full_text();
        let what = m
            .trim()
            .strip_prefix("Permission check failed (")?
            .strip_suffix(')')?;
        let (path, privs) = what.split_once(", ")?;
        let ok = path.starts_with('/')
            && !privs.is_empty()
            && privs
                .split('|')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
        ok.then(|| MissingPrivilege {
            path: path.to_string(),
            privileges: privs.split('|').map(str::to_string).collect(),
        })
    }

    /// PVE reports a missing volume/VM/storage as a plain 500 with a text.
    pub fn is_not_found(&self) -> bool {
        self.kind() == PveErrorKind::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str, params: &[(&str, &str)]) -> PveError {
        PveError::Api {
            method: "POST".into(),
            path: "/x".into(),
            status,
            message: message.into(),
            param_errors: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn missing_privileges_from_403() {
        let e = api(
            403,
            "Permission check failed (/vms/100, VM.Config.Disk)\n",
            &[],
        );
        let m = e.missing_privilege().unwrap();
        assert_eq!(
            (m.path.as_str(), m.privileges.clone()),
            ("/vms/100", vec!["VM.Config.Disk".to_string()])
        );
        assert_eq!(m.to_string(), "VM.Config.Disk on /vms/100");
        let any = api(
            403,
            "Permission check failed (/storage/s, Datastore.Audit|Datastore.AllocateSpace)",
            &[],
        );
        assert_eq!(
            any.missing_privilege().unwrap().to_string(),
            "one of Datastore.Audit, Datastore.AllocateSpace on /storage/s"
        );
        for bare in [
            "Permission check failed",
            "Permission check failed (pool 'p' does not exist)",
            "Permission check failed (user != root@pam)",
        ] {
            let e = api(403, bare, &[]);
            assert_eq!(e.kind(), PveErrorKind::Permission, "{bare}");
            assert!(e.missing_privilege().is_none(), "{bare}");
        }
        // A task that died on a privilege check is the same error.
        let t = PveError::TaskFailed {
            upid: "UPID:x".into(),
            exitstatus: "Permission check failed (/storage/s, Datastore.AllocateSpace)".into(),
        };
        assert_eq!(t.kind(), PveErrorKind::Permission);
        assert_eq!(t.missing_privilege().unwrap().path, "/storage/s");
        assert_ne!(
            api(500, "permission check in text only", &[]).kind(),
            PveErrorKind::Permission
        );
    }

    #[test]
    fn kinds_from_pve_texts() {
        use PveErrorKind::*;
        let cases = [
            (
                api(
                    500,
                    "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout",
                    &[],
                ),
                Contention,
            ),
            (api(500, "VM is locked (clone)", &[]), Contention),
            (
                api(
                    400,
                    "Parameter verification failed.",
                    &[("scsi3", "hotplug problem - unplug failed\n")],
                ),
                Hotplug,
            ),
            (
                api(
                    400,
                    "Parameter verification failed.",
                    &[("vmid", "VM 100000 already exists")],
                ),
                AlreadyExists,
            ),
            (
                api(500, "snapshot name 'x' already used", &[]),
                AlreadyExists,
            ),
            (
                api(500, "snapshot feature is not available", &[]),
                FeatureUnavailable,
            ),
            (
                api(
                    500,
                    "Full clone feature is not supported for a snapshot of 'local-zfs:vm-100-disk-0' (scsi0)",
                    &[],
                ),
                FeatureUnavailable,
            ),
            (
                api(500, "shrinking disks is not supported", &[]),
                ShrinkRefused,
            ),
            (
                api(
                    500,
                    "Configuration file 'nodes/pve1/qemu-server/5.conf' does not exist",
                    &[],
                ),
                NotFound,
            ),
            (api(403, "Permission check failed", &[]), Permission),
            (api(502, "Bad Gateway", &[]), Unavailable),
            (
                api(400, "Parameter verification failed.", &[("size", "bad")]),
                InvalidParameter,
            ),
            (
                api(
                    500,
                    "lvextend failed: Insufficient free space: 1 extents needed",
                    &[],
                ),
                NoSpace,
            ),
            (api(500, "something else", &[]), Other),
            // pve-storage cluster_lock_storage, shared (pmxcfs) and local (flock).
            (
                api(
                    500,
                    "cfs-lock 'storage-shared' error: got lock request timeout",
                    &[],
                ),
                Contention,
            ),
            (
                api(
                    500,
                    "can't lock file '/var/lock/pve-manager/pve-storage-local' - got timeout",
                    &[],
                ),
                Contention,
            ),
            (
                PveError::TaskFailed {
                    upid: "UPID:x".into(),
                    exitstatus: "clone failed: cfs-lock 'storage-rbd' error: got lock request timeout".into(),
                },
                Contention,
            ),
            // The config flock taken in the qmconfig worker: a failed task.
            (
                PveError::TaskFailed {
                    upid: "UPID:x".into(),
                    exitstatus: "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout".into(),
                },
                Contention,
            ),
            (
                api(
                    400,
                    "Parameter verification failed.",
                    &[(
                        "scsi1",
                        "hotplug problem - error on hot-unplugging device 'scsi1' - still busy in guest?\n",
                    )],
                ),
                Hotplug,
            ),
            (
                api(
                    400,
                    "Parameter verification failed.",
                    &[("scsi0", "hotplug problem - can't unplug bootdisk 'scsi0'\n")],
                ),
                Hotplug,
            ),
            (
                PveError::TaskFailed {
                    upid: "UPID:x".into(),
                    exitstatus: "400 Parameter verification failed. scsi1: hotplug problem - attempt to add duplicate property 'throttle-drive-scsi1' to object (type 'container')".into(),
                },
                SlotUnusable,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.kind(), want, "{e}");
        }
    }
}
