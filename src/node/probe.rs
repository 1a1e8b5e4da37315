//! Deciding what is on a device before anything writes to it.
//!
//! The rule this module serves: a device is only ever formatted when it is
//! verifiably blank. Anything blkid recognises, on the whole device or at
//! a common partition start (a partition whose table was wiped still holds
//! its filesystem), and any non-zero data at the start or at the end of the
//! disk, counts as "in use".

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::cmd;
use super::device;
use super::error::NodeError;

/// How much of the disk start must be zero for it to count as blank: the
/// first MiB holds every partition table and the signatures of a
/// filesystem, LVM label or LUKS header written to the whole disk, and the
/// second MiB the start of a partition at the usual 1 MiB alignment.
pub const BLANK_CHECK_BYTES: u64 = 2 << 20;
/// How much of the disk end must be zero: the backup GPT (last 33
/// sectors), md superblocks 0.90/1.0 (last 64-128 KiB) and ZFS labels L2
/// and L3 (last 512 KiB) all live there.
pub const BLANK_CHECK_END_BYTES: u64 = 1 << 20;
/// Where partitions usually start: sector 63 (old DOS alignment) and 1 MiB
/// (everything since). blkid is asked to probe at each.
pub const PARTITION_OFFSETS: [u64; 2] = [63 * 512, 1 << 20];

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
        Some(0) => return Ok(classify(&parse_export(&out.stdout))),
        Some(BLKID_NOTHING_FOUND) => {}
        Some(BLKID_AMBIVALENT) => {
            return Ok(Content::Other("several conflicting signatures".into()))
        }
        _ => return Err(out.into_error("blkid")),
    }
    let size = device::block_size(device)?;
    for offset in PARTITION_OFFSETS.into_iter().filter(|&o| o < size) {
        let off = offset.to_string();
        let out = cmd::run("blkid", &["-p", "-O", &off, "-o", "export", &dev]).await?;
        let found = match out.code {
            Some(0) => classify(&parse_export(&out.stdout)).describe(),
            Some(BLKID_AMBIVALENT) => "several conflicting signatures".into(),
            Some(BLKID_NOTHING_FOUND) => continue,
            _ => return Err(out.into_error("blkid")),
        };
        return Ok(Content::Other(format!(
            "{found} at byte offset {offset}, where a partition would start"
        )));
    }
    match first_non_zero(device, size)? {
        None => Ok(Content::Blank),
        Some(offset) => Ok(Content::Other(format!(
            "no known signature, but non-zero data at byte offset {offset}"
        ))),
    }
}

/// The offset of the first non-zero byte in the checked windows (the
/// first [`BLANK_CHECK_BYTES`] and the last [`BLANK_CHECK_END_BYTES`] of
/// a device of `size` bytes), None if they are all zero.
fn first_non_zero(device: &Path, size: u64) -> Result<Option<u64>, NodeError> {
    let ctx = || format!("reading {}", device.display());
    let mut file = std::fs::File::open(device).map_err(|e| NodeError::io(ctx(), e))?;
    let head = BLANK_CHECK_BYTES.min(size);
    let tail_start = size.saturating_sub(BLANK_CHECK_END_BYTES).max(head);
    for (start, len) in [(0, head), (tail_start, size - tail_start)] {
        if len == 0 {
            continue;
        }
        file.seek(SeekFrom::Start(start))
            .map_err(|e| NodeError::io(ctx(), e))?;
        let mut buf = Vec::with_capacity(len as usize);
        (&mut file)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| NodeError::io(ctx(), e))?;
        if let Some(i) = buf.iter().position(|&b| b != 0) {
            return Ok(Some(start + i as u64));
        }
    }
    Ok(None)
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
