//! Named string formats (`pve-node`, `pve-storage-id`, ...) that PVE checks with code rather
//! than a pattern. Unknown format names are accepted: the simulator only rejects what it knows
//! PVE rejects.

use regex::Regex;
use std::sync::OnceLock;

fn re(cell: &'static OnceLock<Regex>, pat: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pat).expect("static regex"))
}

fn storage_id_ok(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^(?i)[a-z][a-z0-9\-_.]*[a-z0-9]$").is_match(s)
}

fn configid_ok(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^(?i)[a-z][a-z0-9_-]+$").is_match(s)
}

pub fn volid_ok(s: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    re(&R, r"^(?i)([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$").is_match(s)
}

/// PVE's list splitting: separators are NUL, comma, semicolon and whitespace.
pub fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == '\0' || c == ',' || c == ';' || c.is_whitespace())
        .filter(|p| !p.is_empty())
}

pub fn check(format: &str, v: &str) -> Result<(), String> {
    match format {
        "pve-node" => {
            static R: OnceLock<Regex> = OnceLock::new();
            if !re(&R, r"^(?i)[a-z0-9]([a-z0-9\-]*[a-z0-9])?$").is_match(v) {
                return Err("value does not look like a valid node name".into());
            }
        }
        "pve-storage-id" if !storage_id_ok(v) => {
            return Err(format!("storage ID '{v}' contains illegal characters"));
        }
        "pve-configid" if !configid_ok(v) => {
            return Err(format!("invalid configuration ID '{v}'"));
        }
        "pve-configid-list" => {
            for id in split_list(v) {
                if !configid_ok(id) {
                    return Err(format!("invalid configuration ID '{id}'"));
                }
            }
        }
        "pve-volume-id" if !volid_ok(v) => {
            return Err(format!("unable to parse volume ID '{v}'"));
        }
        "pve-volume-id-or-qm-path" | "pve-volume-id-or-absolute-path" => {
            let special = v == "none" || v == "cdrom" || v.starts_with('/');
            if !special && !volid_ok(v) {
                return Err(format!("unable to parse volume ID '{v}'"));
            }
        }
        // pve-common JSONSchema::pve_verify_dns_name (VM `name`).
        "dns-name" => {
            static R: OnceLock<Regex> = OnceLock::new();
            let label = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?";
            if !re(&R, &format!(r"^({label}\.)*{label}$")).is_match(v) {
                return Err("value does not look like a valid DNS name".into());
            }
        }
        // pve-common JSONSchema: `-list` formats check every split_list element with the base
        // format; pve_verify_tag matches $PVE_TAG_RE.
        "pve-tag-list" | "pve-tag" => {
            static R: OnceLock<Regex> = OnceLock::new();
            let tag = re(&R, r"^(?i)[a-z0-9_][a-z0-9_\-+.]*$");
            for t in split_list(v) {
                if !tag.is_match(t) {
                    return Err("invalid characters in tag".into());
                }
            }
        }
        "disk-size" => {
            static R: OnceLock<Regex> = OnceLock::new();
            if !re(&R, r"^\d+(\.\d+)?[KMGT]?$").is_match(v) {
                return Err(format!("unable to parse size '{v}'"));
            }
        }
        "urlencoded" => {
            static R: OnceLock<Regex> = OnceLock::new();
            if !re(&R, r"^[-%a-zA-Z0-9_.!~*'()]*$").is_match(v) {
                return Err(format!("invalid urlencoded string: {v}"));
            }
        }
        "pve-storage-content" | "pve-storage-content-list" => {
            const KNOWN: &[&str] = &[
                "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import", "none",
            ];
            for c in split_list(v) {
                if !KNOWN.contains(&c) {
                    return Err(format!("invalid content type '{c}'"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}
