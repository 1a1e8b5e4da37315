//! Label values with bounded cardinality: ids never become label values, since every
//! distinct value is a new time series kept for as long as the process lives.

/// Path segments of the PVE API that name a collection: the segment after one of
/// them is an id of that kind and is replaced by the placeholder.
fn id_after(segment: &str) -> Option<&'static str> {
    Some(match segment {
        "nodes" => "{node}",
        "storage" => "{storage}",
        "content" => "{volume}",
        "qemu" | "lxc" => "{vmid}",
        "tasks" => "{upid}",
        "pools" => "{pool}",
        "snapshot" => "{snapshot}",
        _ => return None,
    })
}

/// Fixed words of the PVE API paths the driver uses (plus close relatives). A segment
/// that is neither one of these nor in an id position becomes `{other}`, so an
/// unforeseen path can never leak an id into a label.
const LITERALS: &[&str] = &[
    "access",
    "ticket",
    "permissions",
    "version",
    "cluster",
    "resources",
    "nextid",
    "nodes",
    "storage",
    "content",
    "status",
    "qemu",
    "lxc",
    "config",
    "pending",
    "unlink",
    "resize",
    "move_disk",
    "tasks",
    "log",
    "pools",
    "snapshot",
    "current",
    "agent",
];

/// `/nodes/pve1/qemu/101/config` → `/nodes/{node}/qemu/{vmid}/config`.
pub fn pve_path_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::with_capacity(path.len());
    let mut placeholder: Option<&'static str> = None;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if let Some(p) = placeholder.take() {
            out.push_str(p);
        } else if LITERALS.contains(&segment) {
            out.push_str(segment);
            placeholder = id_after(segment);
        } else {
            out.push_str("{other}");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The RPC name from a gRPC path: `/csi.v1.Controller/CreateVolume` → `CreateVolume`.
/// Anything that does not look like a method name (the socket is open to any local
/// client) is folded into `other`.
pub fn grpc_method(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or_default();
    if is_identifier(name, 64) {
        name
    } else {
        "other"
    }
}

/// The task type of a UPID (`qmconfig`, `imgdel`, …) or `other` if it is not a plain word.
pub fn task_type(t: &str) -> &str {
    if is_identifier(t, 32) {
        t
    } else {
        "other"
    }
}

fn is_identifier(s: &str, max_len: usize) -> bool {
    !s.is_empty()
        && s.len() <= max_len
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The name of a gRPC status code as tonic spells it (`Ok`, `InvalidArgument`, …),
/// from the numeric `grpc-status` value; unparsable values are `Unknown`, as the
/// gRPC spec says a client must treat them.
pub fn grpc_code_name(value: &[u8]) -> String {
    let code = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Unknown);
    format!("{code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_every_path_the_client_builds() {
        let cases = [
            ("/version", "/version"),
            ("/cluster/resources", "/cluster/resources"),
            ("/access/ticket", "/access/ticket"),
            (
                "/nodes/pve1/storage/local-lvm/status",
                "/nodes/{node}/storage/{storage}/status",
            ),
            (
                "/nodes/pve1/storage/local-lvm/content",
                "/nodes/{node}/storage/{storage}/content",
            ),
            (
                "/nodes/pve-2/storage/local/content/local%3A9999%2Fvm-9999-csi-a.raw",
                "/nodes/{node}/storage/{storage}/content/{volume}",
            ),
            (
                "/nodes/pve1/qemu/101/config",
                "/nodes/{node}/qemu/{vmid}/config",
            ),
            (
                "/nodes/pve1/qemu/101/unlink",
                "/nodes/{node}/qemu/{vmid}/unlink",
            ),
            (
                "/nodes/pve1/qemu/101/resize",
                "/nodes/{node}/qemu/{vmid}/resize",
            ),
            (
                "/nodes/pve1/tasks/UPID%3Apve1%3A00%3A01%3Aqm%3A101%3Aa%40b%21c%3A/status",
                "/nodes/{node}/tasks/{upid}/status",
            ),
        ];
        for (path, want) in cases {
            assert_eq!(pve_path_template(path), want, "{path}");
        }
    }

    #[test]
    fn ids_named_like_api_words_are_still_ids() {
        // A node called "storage" or a storage called "content" stays a placeholder.
        assert_eq!(
            pve_path_template("/nodes/storage/storage/content/status"),
            "/nodes/{node}/storage/{storage}/status"
        );
    }

    #[test]
    fn unknown_segments_never_leak() {
        assert_eq!(
            pve_path_template("/nodes/pve1/qemu/101/firewall/rules/3"),
            "/nodes/{node}/qemu/{vmid}/{other}/{other}/{other}"
        );
        assert_eq!(
            pve_path_template("/cluster/resources?type=vm"),
            "/cluster/resources"
        );
        assert_eq!(pve_path_template("//version/"), "/version");
        assert_eq!(pve_path_template(""), "/");
    }

    #[test]
    fn grpc_method_is_the_last_segment() {
        assert_eq!(
            grpc_method("/csi.v1.Controller/CreateVolume"),
            "CreateVolume"
        );
        assert_eq!(grpc_method("/csi.v1.Identity/Probe"), "Probe");
        assert_eq!(grpc_method("/csi.v1.Node/"), "other");
        assert_eq!(grpc_method("/x/a b"), "other");
        assert_eq!(grpc_method(&format!("/x/{}", "A".repeat(100))), "other");
    }

    #[test]
    fn task_types_are_bounded() {
        assert_eq!(task_type("qmconfig"), "qmconfig");
        assert_eq!(task_type("imgdel"), "imgdel");
        assert_eq!(task_type("a/b"), "other");
        assert_eq!(task_type(""), "other");
    }

    #[test]
    fn grpc_code_names() {
        assert_eq!(grpc_code_name(b"0"), "Ok");
        assert_eq!(grpc_code_name(b"3"), "InvalidArgument");
        assert_eq!(grpc_code_name(b"9"), "FailedPrecondition");
        assert_eq!(grpc_code_name(b"16"), "Unauthenticated");
        assert_eq!(grpc_code_name(b"99"), "Unknown");
        assert_eq!(grpc_code_name(b"x"), "Unknown");
    }
}
