//! Storage back-ends as files: volume naming, image files, sizes and snapshots.
//!
//! Two layouts cover the simulated PVE storage types:
//! - file storages (`dir`, `nfs`): volumes `<vmid>/<name>.<raw|qcow2|vmdk>` at
//!   `<path>/images/<vmid>/<name>`; only qcow2 images can be snapshotted (qemu-img internal
//!   snapshots), as in PVE (Storage/Plugin.pm).
//! - block storages (`lvmthin`, `lvm`, `zfspool`, `rbd`): volumes `vm-<vmid>-<name>` (raw only)
//!   at `<path>/<name>`; snapshots, where the type has them (not `lvm`), are sparse copies
//!   `<path>/snap_<volume>_<snap>`, standing in for thin LV, ZFS and RBD snapshots.
//!
//! What each type may do with a volume is in `features.rs`.

use super::config::{SimConfig, StorageConfig};
use super::error::{ApiError, ApiResult};
use regex::Regex;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A parsed volume name of some storage.
#[derive(Debug, Clone)]
pub struct VolName {
    pub owner: u32,
    /// File name inside the storage's image directory.
    pub file: String,
    pub format: String,
    /// Storage type the name belongs to.
    pub kind: String,
    /// A template's volume (`base-…`), read-only in PVE.
    pub base: bool,
}

/// Storage types whose volumes are block devices named `vm-<vmid>-…` (no per-VM directory,
/// no file extension, raw only).
pub fn is_block(kind: &str) -> bool {
    matches!(kind, "lvmthin" | "lvm" | "zfspool" | "rbd")
}

pub fn split_volid(volid: &str) -> ApiResult<(&str, &str)> {
    if !super::formats::volid_ok(volid) {
        return Err(ApiError::internal(format!(
            "unable to parse volume ID '{volid}'"
        )));
    }
    Ok(volid.split_once(':').expect("checked by volid_ok"))
}

fn dir_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^(\d+)/([^/\s]+\.(raw|qcow2|vmdk))$").unwrap())
}

fn block_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^((vm|base)-(\d+)-\S+)$").unwrap())
}

/// A block storage's volume name. Each plugin's parse_volname, without the
/// `base-…/vm-…` names of linked clones (the simulator makes none):
/// LvmThinPlugin (`vm-`/`base-`), LVMPlugin (`vm-` only), ZFSPoolPlugin and RBDPlugin
/// (`vm-`/`base-`); the texts are theirs.
fn parse_block_volname(kind: &str, volname: &str) -> ApiResult<VolName> {
    let what = match kind {
        "zfspool" => "zfs",
        "rbd" => "rbd",
        _ => "lvm",
    };
    let bad = || ApiError::internal(format!("unable to parse {what} volume name '{volname}'"));
    let c = block_re()
        .captures(volname)
        .filter(|_| !volname.contains('/'))
        .filter(|c| kind != "lvm" || &c[2] == "vm")
        .ok_or_else(bad)?;
    Ok(VolName {
        owner: c[3].parse().map_err(|_| bad())?,
        file: c[1].to_string(),
        format: "raw".into(),
        kind: kind.into(),
        base: &c[2] == "base",
    })
}

pub fn parse_volname(kind: &str, volname: &str) -> ApiResult<VolName> {
    if is_block(kind) {
        return parse_block_volname(kind, volname);
    }
    let bad = || ApiError::internal(format!("unable to parse directory volume name '{volname}'"));
    let c = dir_re().captures(volname).ok_or_else(bad)?;
    Ok(VolName {
        owner: c[1].parse().map_err(|_| bad())?,
        file: c[2].to_string(),
        format: c[3].to_string(),
        kind: kind.into(),
        base: c[2].starts_with("base-"),
    })
}

/// The volume name (part after `storage:`) of a parsed volume.
pub fn volname_of(v: &VolName) -> String {
    if is_block(&v.kind) {
        v.file.clone()
    } else {
        format!("{}/{}", v.owner, v.file)
    }
}

pub fn storage<'a>(cfg: &'a SimConfig, id: &str) -> ApiResult<&'a StorageConfig> {
    cfg.storage(id)
        .ok_or_else(|| ApiError::internal(format!("storage '{id}' does not exist")))
}

pub fn check_available(st: &StorageConfig, node: &str) -> ApiResult<()> {
    if st.available_on(node) {
        Ok(())
    } else {
        Err(ApiError::internal(format!(
            "storage '{}' is not available on node '{node}'",
            st.id
        )))
    }
}

fn image_dir(cfg: &SimConfig, st: &StorageConfig, node: &str, owner: u32) -> PathBuf {
    let base = st.dir(&cfg.data_dir, node);
    if is_block(&st.kind) {
        base
    } else {
        base.join("images").join(owner.to_string())
    }
}

pub fn image_path(cfg: &SimConfig, st: &StorageConfig, node: &str, v: &VolName) -> PathBuf {
    image_dir(cfg, st, node, v.owner).join(&v.file)
}

/// Resolves a volume id to its image file as seen from `node`.
pub fn resolve(cfg: &SimConfig, node: &str, volid: &str) -> ApiResult<(PathBuf, VolName)> {
    let (sid, volname) = split_volid(volid)?;
    let st = storage(cfg, sid)?;
    let v = parse_volname(&st.kind, volname)?;
    Ok((image_path(cfg, st, node, &v), v))
}

/// Virtual size, allocated bytes and ctime; None if the image does not exist.
pub fn size_info(path: &Path, format: &str) -> Option<(u64, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).ok()?;
    let used = md.blocks() * 512;
    let size = if format == "raw" {
        md.len()
    } else {
        // `-U` (force-share): sizes of images a running VM holds open are read too.
        let out = Command::new("qemu-img")
            .args(["info", "-U", "--output=json", "-f", format])
            .arg(path)
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get("virtual-size")?.as_u64()?
    };
    Some((size, used, md.ctime()))
}

/// One entry of a storage content listing.
pub struct ImageInfo {
    pub volid: String,
    pub owner: u32,
    pub format: String,
    pub size: u64,
    pub used: u64,
    pub ctime: i64,
}

fn dir_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    rd.flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}

/// Lists the images of a storage from the files on disk, as the storage plugins do.
pub fn list_images(cfg: &SimConfig, st: &StorageConfig, node: &str) -> Vec<ImageInfo> {
    let base = st.dir(&cfg.data_dir, node);
    let mut candidates: Vec<(String, PathBuf)> = Vec::new();
    if is_block(&st.kind) {
        candidates = dir_entries(&base)
            .into_iter()
            .filter(|(n, p)| p.is_file() && !n.starts_with("snap_"))
            .collect();
    } else {
        for (owner, opath) in dir_entries(&base.join("images")) {
            for (f, p) in dir_entries(&opath) {
                candidates.push((format!("{owner}/{f}"), p));
            }
        }
    }
    let mut res: Vec<ImageInfo> = candidates
        .into_iter()
        .filter_map(|(volname, path)| {
            let v = parse_volname(&st.kind, &volname).ok()?;
            let (size, used, ctime) = size_info(&path, &v.format)?;
            Some(ImageInfo {
                volid: format!("{}:{volname}", st.id),
                owner: v.owner,
                format: v.format,
                size,
                used,
                ctime,
            })
        })
        .collect();
    res.sort_by(|a, b| a.volid.cmp(&b.volid));
    res
}

/// Next free `vm-<vmid>-disk-N` volume name.
pub fn free_name(cfg: &SimConfig, st: &StorageConfig, node: &str, vmid: u32, fmt: &str) -> String {
    let dir = image_dir(cfg, st, node, vmid);
    let ext = if is_block(&st.kind) {
        String::new()
    } else {
        format!(".{fmt}")
    };
    (0..)
        .map(|i| format!("vm-{vmid}-disk-{i}{ext}"))
        .find(|n| !dir.join(n).exists())
        .expect("unbounded")
}

/// Longest LV name LVM accepts (lvm2 lib/misc/lvm-string.h NAME_LEN 128, NUL included).
pub const LVM_NAME_MAX: usize = 127;

/// What a block plugin's alloc_image refuses, with its texts.
fn check_block_alloc(
    st: &StorageConfig,
    vmid: u32,
    name: &str,
    fmt: &str,
    exists: bool,
) -> ApiResult<()> {
    let kind = st.kind.as_str();
    // LVMPlugin alloc_lvm_image: qcow2 on thick LVM only with `snapshot-as-volume-chain`,
    // which the simulated storages do not have.
    if kind == "lvm" && fmt == "qcow2" {
        return Err(ApiError::internal(
            "snapshot-as-volume-chain option need to be enabled to use qcow2 format",
        ));
    }
    // LvmThinPlugin/LVMPlugin alloc_image: "unsupported format"; ZFSPoolPlugin alloc_image: the
    // same for anything but raw (and subvol, a container's); RBDPlugin alloc_image ignores
    // the format and makes a raw image.
    if fmt != "raw" && kind != "rbd" {
        return Err(ApiError::internal(format!("unsupported format '{fmt}'")));
    }
    // LvmThinPlugin/ZFSPoolPlugin/RBDPlugin alloc_image: "illegal name"; LVMPlugin's
    // verify_volname_format -> parse_volname refuses a name without `vm-<digits>-`.
    if !name.starts_with(&format!("vm-{vmid}-")) {
        if kind == "lvm" && !block_re().is_match(name) {
            return Err(ApiError::internal(format!(
                "unable to parse lvm volume name '{name}'"
            )));
        }
        return Err(ApiError::internal(format!(
            "illegal name '{name}' - should be 'vm-{vmid}-*'"
        )));
    }
    if name.contains('/') {
        return Err(ApiError::internal(format!(
            "unable to parse {} volume name '{name}'",
            match kind {
                "zfspool" => "zfs",
                "rbd" => "rbd",
                _ => "lvm",
            }
        )));
    }
    if exists {
        // The tools' own words, wrapped by each plugin's run_command errmsg
        // (LVMPlugin lvcreate, RBDPlugin alloc_image) or zfs_request ("zfs error: ").
        return Err(ApiError::internal(match kind {
            "zfspool" => format!(
                "zfs error: cannot create 'rpool/data/{name}': dataset already exists"
            ),
            "rbd" => format!("rbd create '{name}' error: rbd: create error: (17) File exists"),
            _ => format!(
                "lvcreate 'pve/{name}' error:   Logical Volume \"{name}\" already exists in volume group \"pve\""
            ),
        }));
    }
    // LVM's validate_name refuses names of NAME_LEN (128) or more; lvcreate then says
    // "Logical volume name ... is invalid." and pve-storage LVMPlugin::lvcreate wraps it
    // in its run_command errmsg.
    if matches!(kind, "lvmthin" | "lvm") && name.len() > LVM_NAME_MAX {
        return Err(ApiError::internal(format!(
            "lvcreate 'pve/{name}' error:   Logical volume name \"{name}\" is invalid."
        )));
    }
    Ok(())
}

/// Creates a sparse image of `size_kib` KiB. Errors carry PVE's texts.
pub fn alloc(
    cfg: &SimConfig,
    st: &StorageConfig,
    node: &str,
    vmid: u32,
    name: &str,
    fmt: &str,
    size_kib: u64,
) -> ApiResult<String> {
    let dir = image_dir(cfg, st, node, vmid);
    let path = dir.join(name);
    // Only the block plugins insist on the owner prefix; the dir plugin takes any file name.
    if is_block(&st.kind) {
        check_block_alloc(st, vmid, name, fmt, path.exists())?;
    } else {
        static R: OnceLock<Regex> = OnceLock::new();
        let re = R.get_or_init(|| Regex::new(r"^[^/\s]+\.(raw|qcow2|vmdk|subvol)$").unwrap());
        let Some(c) = re.captures(name) else {
            return Err(ApiError::internal(format!(
                "unable to parse volume filename '{name}'"
            )));
        };
        let namefmt = &c[1];
        if namefmt != fmt {
            return Err(ApiError::internal(format!(
                "illegal name '{name}' - wrong extension for format ('{namefmt} != '{fmt}')"
            )));
        }
        if path.exists() {
            return Err(ApiError::internal(format!(
                "disk image '{}' already exists",
                path.display()
            )));
        }
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| ApiError::internal(format!("unable to create image dir - {e}")))?;
    if let Err(e) = create_image(&path, fmt, st.round_size(size_kib * 1024)) {
        let _ = std::fs::remove_file(&path);
        return Err(ApiError::internal(format!("unable to create image: {e}")));
    }
    let volname = if is_block(&st.kind) {
        name.to_string()
    } else {
        format!("{vmid}/{name}")
    };
    Ok(format!("{}:{volname}", st.id))
}

fn create_image(path: &Path, fmt: &str, bytes: u64) -> Result<(), String> {
    match fmt {
        "raw" => std::fs::File::create_new(path)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| e.to_string()),
        "qcow2" | "vmdk" => run(Command::new("qemu-img")
            .args(["create", "-f", fmt])
            .arg(path)
            .arg(bytes.to_string())),
        _ => Err(format!("unsupported format '{fmt}'")),
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Grows an image to `bytes`.
pub fn grow(path: &Path, format: &str, bytes: u64) -> Result<(), String> {
    if format == "raw" {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        f.set_len(bytes).map_err(|e| e.to_string())
    } else {
        run(Command::new("qemu-img")
            .args(["resize", "-f", format])
            .arg(path)
            .arg(bytes.to_string()))
    }
}

fn snap_path(path: &Path, snap: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("snap_{name}_{snap}"))
}

/// Removes an image (and, for block storages, its snapshots); Ok(false) if it did not exist (PVE only
/// warns then).
pub fn free(path: &Path) -> Result<bool, String> {
    if !path.exists() {
        return Ok(false);
    }
    std::fs::remove_file(path).map_err(|e| format!("unlink '{}' failed - {e}", path.display()))?;
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let prefix = format!("snap_{}_", name.to_string_lossy());
        for (n, p) in dir_entries(dir) {
            if n.starts_with(&prefix) {
                let _ = std::fs::remove_file(p);
            }
        }
        // dir storage drops the per-VM directory once it is empty.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(true)
}

/// Whether PVE can snapshot this volume on its storage (qemu-server QemuConfig has_feature
/// 'snapshot' -> the plugin's volume_has_feature).
pub fn can_snapshot(v: &VolName) -> bool {
    use super::features::{has, Feature, State};
    has(
        &v.kind,
        &v.format,
        Feature::Snapshot,
        State::of(v.base, false),
    )
}

fn sparse_copy(from: &Path, to: &Path) -> Result<(), String> {
    // In place (same inode) so loop devices on `to` keep seeing the data.
    run(Command::new("cp").arg("--sparse=always").arg(from).arg(to))
}

pub fn snapshot(path: &Path, v: &VolName, snap: &str) -> Result<(), String> {
    if is_block(&v.kind) {
        sparse_copy(path, &snap_path(path, snap))
    } else {
        run(Command::new("qemu-img")
            .args(["snapshot", "-c", snap])
            .arg(path))
    }
}

/// The snapshots of a block volume taken after `snap` (by the time their copies were made,
/// as `zfs list -s creation` orders them for ZFSPoolPlugin volume_rollback_is_possible).
pub fn newer_snapshots(path: &Path, snap: &str) -> Vec<String> {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(at) = mtime(&snap_path(path, snap)) else {
        return vec![];
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return vec![];
    };
    let prefix = format!("snap_{}_", name.to_string_lossy());
    let mut out: Vec<String> = dir_entries(dir)
        .into_iter()
        .filter_map(|(n, p)| {
            let s = n.strip_prefix(&prefix)?.to_string();
            (s != snap && mtime(&p)? > at).then_some(s)
        })
        .collect();
    out.sort();
    out
}

pub fn rollback(path: &Path, v: &VolName, snap: &str) -> Result<(), String> {
    if is_block(&v.kind) {
        sparse_copy(&snap_path(path, snap), path)
    } else {
        run(Command::new("qemu-img")
            .args(["snapshot", "-a", snap])
            .arg(path))
    }
}

pub fn delete_snapshot(path: &Path, v: &VolName, snap: &str) -> Result<(), String> {
    if is_block(&v.kind) {
        std::fs::remove_file(snap_path(path, snap)).map_err(|e| e.to_string())
    } else {
        run(Command::new("qemu-img")
            .args(["snapshot", "-d", snap])
            .arg(path))
    }
}

/// Full copy of a volume (optionally as of a snapshot) into a new image file.
pub fn copy_image(
    src: &Path,
    sv: &VolName,
    snap: Option<&str>,
    dst: &Path,
    dst_fmt: &str,
) -> Result<(), String> {
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let from = match snap {
        Some(s) if is_block(&sv.kind) => snap_path(src, s),
        _ => src.to_path_buf(),
    };
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", &sv.format, "-O", dst_fmt]);
    if let (Some(s), false) = (snap, is_block(&sv.kind)) {
        cmd.arg("-l").arg(format!("snapshot.name={s}"));
    }
    run(cmd.arg(&from).arg(dst))
}
