//! The rules for node paths (staging_target_path, target_path,
//! volume_path). The CO names them, but the plugin runs as root with
//! bidirectional mount propagation: a path that escapes the kubelet
//! directory would let a request mount over, unmount or delete anything on
//! the host. So every path must be absolute, free of `..`, and, once the
//! symlinks of its existing part are resolved, strictly below the
//! (canonicalized) kubelet directory. Checking happens before anything is
//! touched, and the operations then work on the resolved path.

use std::path::{Component, Path, PathBuf};

use super::error::NodeError;

/// The kubelet's root directory (`--root-dir` of the kubelet).
pub const DEFAULT_KUBELET_DIR: &str = "/var/lib/kubelet";

/// The canonical form of the kubelet directory, which must exist.
pub fn kubelet_root(kubelet_dir: &Path) -> Result<PathBuf, NodeError> {
    std::fs::canonicalize(kubelet_dir).map_err(|e| {
        NodeError::Precondition(format!(
            "kubelet directory {} (--kubelet-dir) cannot be resolved: {e}",
            kubelet_dir.display()
        ))
    })
}

/// Checks `value` (the request field `field`) against the rules above and
/// returns it resolved. An empty value is "required"; every other
/// violation is InvalidArgument naming the field.
pub fn resolve(kubelet_dir: &Path, field: &str, value: &str) -> Result<PathBuf, NodeError> {
    if value.is_empty() {
        return Err(NodeError::invalid(format!("{field} is required")));
    }
    let p = Path::new(value);
    if !p.is_absolute() {
        return Err(NodeError::invalid(format!(
            "{field} must be an absolute path, got {value:?}"
        )));
    }
    check_lexical(field, value)?;
    let root = kubelet_root(kubelet_dir)?;
    let resolved = resolve_existing(field, p)?;
    if resolved == root || !resolved.starts_with(&root) {
        return Err(NodeError::invalid(format!(
            "{field} {value:?} resolves to {}, which is not below the kubelet directory {}",
            resolved.display(),
            root.display()
        )));
    }
    Ok(resolved)
}

/// `..` components (and NUL bytes) are refused outright: whether they
/// escape depends on symlinks further up, and no CO sends them.
fn check_lexical(field: &str, value: &str) -> Result<(), NodeError> {
    if value.contains('\0') {
        return Err(NodeError::invalid(format!("{field} contains a NUL byte")));
    }
    if Path::new(value)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(NodeError::invalid(format!(
            "{field} {value:?} must not contain `..` components"
        )));
    }
    Ok(())
}

/// Canonicalizes the longest existing prefix of `p` and appends the rest.
/// The rest does not exist, so it holds no symlinks, and it has no `..`.
/// A dangling symlink in the path is refused: creating the path would
/// follow it to wherever it points.
fn resolve_existing(field: &str, p: &Path) -> Result<PathBuf, NodeError> {
    let mut prefix = p.to_path_buf();
    let mut tail: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::canonicalize(&prefix) {
            Ok(c) => {
                let mut out = c;
                out.extend(tail.iter().rev());
                return Ok(out);
            }
            Err(e) => {
                // A symlink that cannot be resolved (dangling, or pointing
                // into a dead mount) is never followed.
                if let Ok(m) = std::fs::symlink_metadata(&prefix) {
                    if m.file_type().is_symlink() {
                        return Err(NodeError::invalid(format!(
                            "{field}: {} is a symlink that cannot be resolved ({e})",
                            prefix.display()
                        )));
                    }
                }
                // Not found, or a dead filesystem (EIO, ENOTCONN) at its own
                // mount point, which must stay reachable for unmounting:
                // resolve the parent instead.
                match (
                    prefix.file_name().map(|n| n.to_os_string()),
                    prefix.parent(),
                ) {
                    (Some(name), Some(parent)) => {
                        tail.push(name);
                        prefix = parent.to_path_buf();
                    }
                    _ => {
                        return Err(NodeError::invalid(format!(
                            "{field} {} cannot be resolved: {e}",
                            p.display()
                        )))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<PathBuf, NodeError>) -> tonic::Code {
        r.unwrap_err().code()
    }

    #[test]
    fn rules() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let k = dir.path();
        let s = |p: &Path| p.to_string_lossy().into_owned();

        assert_eq!(
            resolve(k, "target_path", &s(&k.join("pods/a/mount"))).unwrap(),
            root.join("pods/a/mount")
        );
        let e = resolve(k, "target_path", "").unwrap_err();
        assert!(e.to_string().contains("target_path is required"));
        let e = resolve(k, "target_path", "rel/x").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.to_string().contains("target_path"));
        assert_eq!(
            code(resolve(k, "target_path", &format!("{}/../../../etc", s(k)))),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(resolve(k, "staging_target_path", "/etc")),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(resolve(k, "target_path", "/")),
            tonic::Code::InvalidArgument
        );
        // The kubelet directory itself is not a target.
        assert_eq!(
            code(resolve(k, "target_path", &s(k))),
            tonic::Code::InvalidArgument
        );
        // A symlink out of the kubelet directory, at the end or in between.
        std::os::unix::fs::symlink("/etc", k.join("link")).unwrap();
        let e = resolve(k, "target_path", &s(&k.join("link"))).unwrap_err();
        assert!(e.to_string().contains("/etc"), "{e}");
        assert_eq!(
            code(resolve(k, "target_path", &s(&k.join("link/new/dir")))),
            tonic::Code::InvalidArgument
        );
        // Dangling symlinks are not followed.
        std::os::unix::fs::symlink("/nonexistent-csi-test", k.join("dangling")).unwrap();
        assert_eq!(
            code(resolve(k, "target_path", &s(&k.join("dangling/x")))),
            tonic::Code::InvalidArgument
        );
        // A symlink that stays inside is fine and resolved.
        std::fs::create_dir(k.join("real")).unwrap();
        std::os::unix::fs::symlink(k.join("real"), k.join("inside")).unwrap();
        assert_eq!(
            resolve(k, "target_path", &s(&k.join("inside/t"))).unwrap(),
            root.join("real/t")
        );
        // A missing kubelet directory is the node's problem, not the request's.
        let e = resolve(&k.join("missing"), "target_path", &s(&k.join("missing/x"))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }
}
