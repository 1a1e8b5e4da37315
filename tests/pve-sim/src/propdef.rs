//! Resolving a parameter name to its schema definition, including PVE's indexed families
//! (`scsi[n]` covers scsi0..scsi30).

use serde_json::Value;

/// Highest index + 1 for each indexed family, as PVE defines them.
fn family_size(prefix: &str) -> u32 {
    match prefix {
        "scsi" => 31,
        "virtio" => 16,
        "sata" => 6,
        "ide" => 4,
        "net" => 32,
        "unused" => 256,
        "usb" => 14,
        "serial" => 4,
        "parallel" => 3,
        "hostpci" => 16,
        "ipconfig" => 32,
        "numa" => 8,
        "virtiofs" => 10,
        "mp" => 256,
        "dev" => 256,
        "link" => 8,
        _ => 256,
    }
}

/// Splits `scsi12` into (`scsi`, 12).
pub fn split_indexed(name: &str) -> Option<(&str, u32)> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 || digits == name.len() {
        return None;
    }
    let (p, n) = name.split_at(name.len() - digits);
    if n.len() > 1 && n.starts_with('0') {
        return None;
    }
    Some((p, n.parse().ok()?))
}

pub fn lookup<'a>(props: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = props.get(name) {
        return Some(v);
    }
    let (prefix, idx) = split_indexed(name)?;
    let v = props.get(&format!("{prefix}[n]"))?;
    (idx < family_size(prefix)).then_some(v)
}
