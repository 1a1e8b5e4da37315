//! Step 4: the storages volumes will be allocated on exist, hold disk images, and have room.

use super::report::Recorder;
use crate::pve::types::StorageResource;
use std::collections::BTreeSet;

/// Storage ids to check: those asked for, or every storage that can hold disk images.
pub(crate) fn select(all: &[StorageResource], requested: &[String]) -> Vec<String> {
    if !requested.is_empty() {
        let mut seen = BTreeSet::new();
        return requested
            .iter()
            .filter(|s| seen.insert(s.as_str()))
            .cloned()
            .collect();
    }
    let ids: BTreeSet<&str> = all
        .iter()
        .filter(|s| s.holds_images())
        .map(|s| s.storage.as_str())
        .collect();
    ids.into_iter().map(str::to_string).collect()
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn free(s: &StorageResource) -> u64 {
    s.maxdisk.unwrap_or(0).saturating_sub(s.disk.unwrap_or(0))
}

/// One check per storage; `entries` are its per-node rows from /cluster/resources.
pub(crate) fn check(rec: &mut Recorder, id: &str, all: &[StorageResource]) {
    let name = format!("storage {id}");
    let entries: Vec<&StorageResource> = all.iter().filter(|s| s.storage == id).collect();
    let Some(first) = entries.first() else {
        // PVE hides storages the caller may not audit, so "absent" can also mean "not visible".
        rec.fail(
            name,
            format!(
                "does not exist (or is hidden: the token needs Datastore.Audit on /storage/{id})"
            ),
        );
        return;
    };
    let kind = first.plugintype.as_deref().unwrap_or("unknown");
    if !entries.iter().any(|s| s.holds_images()) {
        let content = first.content.as_deref().unwrap_or("");
        rec.fail(
            name,
            format!(
                "type {kind}: content {content:?} lacks images; add 'Disk image' to its content"
            ),
        );
        return;
    }
    let up: Vec<&&StorageResource> = entries.iter().filter(|s| s.is_available()).collect();
    let down: Vec<&str> = entries
        .iter()
        .filter(|s| !s.is_available())
        .map(|s| s.node.as_str())
        .collect();
    let space = if first.shared {
        let nodes: Vec<&str> = entries.iter().map(|s| s.node.as_str()).collect();
        let f = up.first().map(|s| free(s)).unwrap_or(0);
        format!("shared, on {}: {} free", nodes.join(", "), gib(f))
    } else {
        let per: Vec<String> = up
            .iter()
            .map(|s| format!("{}: {} free", s.node, gib(free(s))))
            .collect();
        format!("node-local, {}", per.join(", "))
    };
    let detail = format!("type {kind}, {space}");
    if up.is_empty() {
        rec.fail(name, format!("{detail}; not available on any node"));
    } else if !down.is_empty() {
        rec.warn(
            name,
            format!("{detail}; not available on {}", down.join(", ")),
        );
    } else if up.iter().any(|s| free(s) == 0) {
        rec.warn(name, format!("{detail}; full on some node"));
    } else {
        rec.pass(name, detail);
    }
}
