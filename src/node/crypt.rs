//! LUKS encryption of a volume: format (blank disks only), open, close and
//! resize through cryptsetup, with the passphrase passed on stdin.

use std::path::{Path, PathBuf};

use sha2::Digest;

use super::cmd;
use super::device;
use super::error::NodeError;
use super::probe::{self, Content};
use super::request::Passphrase;

const MAPPER_DIR: &str = "/dev/mapper";

/// The device-mapper name for a volume. Volume ids contain `/` and can be
/// long, neither of which dm names allow, so a digest stands in for them;
/// the prefix marks mappings this driver owns.
pub fn mapping_name(volume_id: &str) -> String {
    let digest = sha2::Sha256::digest(volume_id.as_bytes());
    format!("csi-{}", &hex::encode(digest)[..32])
}

pub fn mapping_path(name: &str) -> PathBuf {
    Path::new(MAPPER_DIR).join(name)
}

/// cryptsetup needs a working device-mapper; without it `open` fails after
/// the disk may already have been formatted, so check before touching it.
/// Opening the control node is the real test: it also makes the kernel
/// load dm_mod on demand where that is possible, which a look at
/// /proc/misc alone would miss.
pub fn device_mapper_available() -> Result<(), NodeError> {
    let control = Path::new(MAPPER_DIR).join("control");
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&control)
    {
        Ok(_) => Ok(()),
        Err(e) => Err(NodeError::Precondition(format!(
            "device-mapper is not available on this node (opening {}: {e}); \
             encrypted volumes need the dm_mod and dm_crypt kernel modules",
            control.display()
        ))),
    }
}

/// Opens (formatting first if the disk is blank) the LUKS container on
/// `disk` as `/dev/mapper/<name>` and returns that path.
pub async fn open(
    disk: &Path,
    name: &str,
    passphrase: &Passphrase,
    sys_block_dir: &Path,
) -> Result<PathBuf, NodeError> {
    let mapped = mapping_path(name);
    if mapped.exists() {
        ensure_backed_by(&mapped, disk, sys_block_dir)?;
        return Ok(mapped);
    }
    device_mapper_available()?;
    let mut formatted = false;
    match probe::probe(disk).await? {
        Content::Luks => {}
        Content::Blank => {
            format(disk, passphrase).await?;
            formatted = true;
        }
        other => {
            return Err(NodeError::NotBlank {
                device: disk.to_path_buf(),
                found: other.describe(),
            })
        }
    }
    let dev = disk.to_string_lossy();
    let out = cmd::run_with_input(
        "cryptsetup",
        &["open", "--type", "luks", "--key-file=-", &dev, name],
        Some(passphrase.expose().as_bytes()),
    )
    .await?;
    if !out.success() {
        // cryptsetup's exit code 2 means the key did not unlock any slot.
        if out.code == Some(2) {
            return Err(NodeError::Precondition(format!(
                "the passphrase does not unlock {}",
                disk.display()
            )));
        }
        if out.stderr.contains("device-mapper") {
            return Err(NodeError::Precondition(format!(
                "device-mapper is not usable on this node: {}",
                out.stderr.trim()
            )));
        }
        return Err(out.into_error("cryptsetup open"));
    }
    device::ensure_block_device(&mapped)?;
    if formatted {
        // A new container's plaintext is the disk's zeros decrypted: noise, which the blank
        // check before mkfs would rightly refuse. Zero what it looks at, once, right after
        // creating the container. (Interrupted between luksFormat and here, the next stage
        // finds a container that is not blank and refuses it: nothing is lost.)
        zero_probe_window(&mapped)?;
    }
    Ok(mapped)
}

/// Writes zeros over the ranges `probe` reads (start and end of the device) and syncs.
fn zero_probe_window(dev: &Path) -> Result<(), NodeError> {
    use std::io::{Seek, SeekFrom, Write};
    let io = |e| NodeError::io(format!("zeroing the start and end of {}", dev.display()), e);
    let size = device::block_size(dev)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(io)?;
    let head = probe::BLANK_CHECK_BYTES.min(size);
    let tail_start = size.saturating_sub(probe::BLANK_CHECK_END_BYTES).max(head);
    for (start, len) in [(0, head), (tail_start, size - tail_start)] {
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        f.write_all(&vec![0u8; len as usize]).map_err(io)?;
    }
    f.sync_all().map_err(io)
}

/// Creates a LUKS2 container on `disk`. Callers must have established
/// that the disk is blank.
pub async fn format(disk: &Path, passphrase: &Passphrase) -> Result<(), NodeError> {
    tracing::info!(device = %disk.display(), "creating LUKS container on blank device");
    let dev = disk.to_string_lossy();
    let out = cmd::run_with_input(
        "cryptsetup",
        // 64 MiB for argon2id instead of cryptsetup's up-to-1-GiB default:
        // the same memory is needed at every open, and the node plugin
        // usually runs under a small memory limit that the default would
        // exceed. Passphrases here are generated secrets, not human-chosen,
        // so key-derivation hardness matters little.
        &[
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "65536",
            "--key-file=-",
            &dev,
        ],
        Some(passphrase.expose().as_bytes()),
    )
    .await?;
    if !out.success() {
        return Err(out.into_error("cryptsetup luksFormat"));
    }
    Ok(())
}

/// Closes the mapping if it is open; absent is success so unstage retries
/// converge.
pub async fn close(name: &str) -> Result<(), NodeError> {
    if !mapping_path(name).exists() {
        return Ok(());
    }
    cmd::run_ok("cryptsetup", &["close", name]).await?;
    Ok(())
}

/// Grows an open mapping to the (already grown) disk. LUKS2 normally holds
/// the volume key in the kernel keyring, so the passphrase is optional.
pub async fn resize(name: &str, passphrase: Option<&Passphrase>) -> Result<(), NodeError> {
    let input = passphrase.map(|p| p.expose().as_bytes());
    let args: &[&str] = if input.is_some() {
        &["resize", "--key-file=-", name]
    } else {
        &["resize", name]
    };
    let out = cmd::run_with_input("cryptsetup", args, input).await?;
    if !out.success() {
        return Err(out.into_error("cryptsetup resize"));
    }
    Ok(())
}

/// If `kernel_name` (e.g. `dm-2`) is a mapping, its dm name and the one
/// device beneath it.
pub fn mapping_parent(sys_block_dir: &Path, kernel_name: &str) -> Option<(String, String)> {
    let base = sys_block_dir.join(kernel_name);
    let name = std::fs::read_to_string(base.join("dm").join("name"))
        .ok()?
        .trim()
        .to_string();
    let mut slaves = std::fs::read_dir(base.join("slaves")).ok()?;
    let slave = slaves
        .next()?
        .ok()?
        .file_name()
        .to_string_lossy()
        .into_owned();
    Some((name, slave))
}

/// An existing mapping must sit on this volume's disk; a leftover mapping
/// over some other disk must not be handed out under this volume's name.
fn ensure_backed_by(mapped: &Path, disk: &Path, sys_block_dir: &Path) -> Result<(), NodeError> {
    let resolved = std::fs::canonicalize(mapped)
        .map_err(|e| NodeError::io(format!("resolving {}", mapped.display()), e))?;
    let dm = resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let disk_name = std::fs::canonicalize(disk)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    match mapping_parent(sys_block_dir, &dm) {
        Some((_, slave)) if slave == disk_name => Ok(()),
        other => Err(NodeError::Incompatible(format!(
            "{} is open on {} rather than {}",
            mapped.display(),
            other
                .map(|(_, s)| s)
                .unwrap_or_else(|| "an unknown device".into()),
            disk.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_names_are_stable_and_dm_safe() {
        let a = mapping_name("region1/zone-a/local-lvm/vm-100-disk-1");
        assert_eq!(a, mapping_name("region1/zone-a/local-lvm/vm-100-disk-1"));
        assert_ne!(a, mapping_name("region1/zone-a/local-lvm/vm-100-disk-2"));
        assert!(a.starts_with("csi-") && a.len() == 36 && !a.contains('/'));
    }
}
