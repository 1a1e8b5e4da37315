//! Deciding what is on a device before anything writes to it.
//!
//! The rule this module serves: a device is only ever formatted when it is
//! verifiably blank. Anything blkid recognises, and any non-zero data at
//! the start of the disk, counts as "in use".

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::cmd;
use super::error::NodeError;

/// How much of the disk start must be zero for it to count as blank. Every
/// partition table and filesystem we know puts its signature in the first
/// MiB, so leftover data there is a strong sign the disk is not fresh.
pub const BLANK_CHECK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// No signature and all zeros at the start: safe to format.
    Blank,
    /// A filesystem of this blkid type (`ext4`, `xfs`, ...).
    Filesystem(String),
    /// A partition table of this type (`dos`, `gpt`).
    PartitionTable(String),
    /// A LUKS container, i.e. an encrypted volume.
    Luks,
    /// Something else (LUKS, swap, LVM, RAID member, conflicting
    /// signatures, or unrecognised data); described for the error message.
    Other(String),
}

impl Content {
    pub fn describe(&self) -> String {
        match self {
            Content::Blank => "blank".into(),
            Content::Filesystem(t) => format!("{t} filesystem"),
            Content::PartitionTable(t) => format!("{t} partition table"),
            Content::Luks => "LUKS encrypted container".into(),
            Content::Other(what) => what.clone(),
        }
    }
}

/// blkid's documented exit code for "no signature found".
const BLKID_NOTHING_FOUND: i32 = 2;
/// blkid's exit code when signatures contradict each other.
const BLKID_AMBIVALENT: i32 = 8;

pub async fn probe(device: &Path) -> Result<Content, NodeError> {
    let dev = device.to_string_lossy();
    // -p bypasses blkid's cache so a stale cache entry can never make a
    // used disk look blank.
    let out = cmd::run("blkid", &["-p", "-o", "export", &dev]).await?;
    match out.code {
        Some(0) => Ok(classify(&parse_export(&out.stdout))),
        Some(BLKID_NOTHING_FOUND) => {
            if starts_with_zeros(device)? {
                Ok(Content::Blank)
            } else {
                Ok(Content::Other(format!(
                    "no known signature, but non-zero data in the first {} KiB",
                    BLANK_CHECK_BYTES / 1024
                )))
            }
        }
        Some(BLKID_AMBIVALENT) => Ok(Content::Other("several conflicting signatures".into())),
        _ => Err(out.into_error("blkid")),
    }
}

/// `KEY=value` lines of `blkid -o export`.
pub fn parse_export(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub fn classify(tags: &BTreeMap<String, String>) -> Content {
    if let Some(pt) = tags.get("PTTYPE") {
        return Content::PartitionTable(pt.clone());
    }
    let ty = tags.get("TYPE").cloned();
    if ty.as_deref() == Some("crypto_LUKS") {
        return Content::Luks;
    }
    match (ty, tags.get("USAGE").map(String::as_str)) {
        (Some(t), Some("filesystem")) => Content::Filesystem(t),
        (Some(t), usage) => Content::Other(format!(
            "{t} signature (usage {})",
            usage.unwrap_or("unknown")
        )),
        (None, _) => Content::Other(format!("unrecognised signature {tags:?}")),
    }
}

fn starts_with_zeros(device: &Path) -> Result<bool, NodeError> {
    let ctx = || format!("reading {}", device.display());
    let file = std::fs::File::open(device).map_err(|e| NodeError::io(ctx(), e))?;
    let mut buf = Vec::with_capacity(BLANK_CHECK_BYTES);
    // A device smaller than the window is fine: only what exists is checked.
    file.take(BLANK_CHECK_BYTES as u64)
        .read_to_end(&mut buf)
        .map_err(|e| NodeError::io(ctx(), e))?;
    Ok(buf.iter().all(|&b| b == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_blkid_output() {
        let fs = parse_export(
            "DEVNAME=/dev/sdb\nUUID=abc\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n",
        );
        assert_eq!(classify(&fs), Content::Filesystem("ext4".into()));
        let pt = parse_export("DEVNAME=/dev/sdb\nPTUUID=1234\nPTTYPE=dos\n");
        assert_eq!(classify(&pt), Content::PartitionTable("dos".into()));
        let luks = parse_export("TYPE=crypto_LUKS\nUSAGE=crypto\nVERSION=2\n");
        assert_eq!(classify(&luks), Content::Luks);
        let swap = parse_export("TYPE=swap\nUSAGE=other\n");
        assert!(matches!(classify(&swap), Content::Other(_)));
    }
}
