//! Storage back-ends as files: volume naming, image files, sizes and snapshots.
//!
//! Two PVE storage types are simulated:
//! - `dir`: volumes `<vmid>/<name>.<raw|qcow2|vmdk>` at `<path>/images/<vmid>/<name>`; only
//!   qcow2 images can be snapshotted (qemu-img internal snapshots), as in PVE.
//! - `lvmthin`: volumes `vm-<vmid>-<name>` (raw only) at `<path>/<name>`; snapshots are sparse
//!   copies `<path>/snap_<volume>_<snap>`, standing in for thin LV snapshots.

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

fn lvm_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^((?:vm|base)-(\d+)-\S+)$").unwrap())
}

pub fn parse_volname(kind: &str, volname: &str) -> ApiResult<VolName> {
    if kind == "lvmthin" {
        let c = lvm_re()
            .captures(volname)
            .filter(|_| !volname.contains('/'))
            .ok_or_else(|| {
                ApiError::internal(format!("unable to parse lvm volume name '{volname}'"))
            })?;
        return Ok(VolName {
            owner: c[2].parse().map_err(|_| {
                ApiError::internal(format!("unable to parse lvm volume name '{volname}'"))
            })?,
            file: c[1].to_string(),
            format: "raw".into(),
            kind: kind.into(),
        });
    }
    let bad = || ApiError::internal(format!("unable to parse directory volume name '{volname}'"));
    let c = dir_re().captures(volname).ok_or_else(bad)?;
    Ok(VolName {
        owner: c[1].parse().map_err(|_| bad())?,
        file: c[2].to_string(),
        format: c[3].to_string(),
        kind: kind.into(),
    })
}

/// The volume name (part after `storage:`) of a parsed volume.
pub fn volname_of(v: &VolName) -> String {
    if v.kind == "lvmthin" {
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
    if st.kind == "lvmthin" {
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
        let out = Command::new("qemu-img")
            .args(["info", "--output=json", "-f", format])
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
    if st.kind == "lvmthin" {
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
    let ext = if st.kind == "lvmthin" {
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
    // Only LVM-like plugins insist on the owner prefix; the dir plugin takes any file name.
    if st.kind == "lvmthin" {
        if fmt != "raw" {
            return Err(ApiError::internal(format!("unsupported format '{fmt}'")));
        }
        if !name.starts_with(&format!("vm-{vmid}-")) {
            return Err(ApiError::internal(format!(
                "illegal name '{name}' - should be 'vm-{vmid}-*'"
            )));
        }
        if name.contains('/') {
            return Err(ApiError::internal(format!(
                "unable to parse lvm volume name '{name}'"
            )));
        }
        if path.exists() {
            return Err(ApiError::internal(format!(
                "lvcreate 'pve/{name}' error:   Logical Volume \"{name}\" already exists in volume group \"pve\""
            )));
        }
        // LVM's validate_name refuses names of NAME_LEN (128) or more; lvcreate then says
        // "Logical volume name ... is invalid." and pve-storage LVMPlugin::lvcreate wraps it
        // in its run_command errmsg.
        if name.len() > LVM_NAME_MAX {
            return Err(ApiError::internal(format!(
                "lvcreate 'pve/{name}' error:   Logical volume name \"{name}\" is invalid."
            )));
        }
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
    let volname = if st.kind == "lvmthin" {
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

/// Removes an image (and, for lvmthin, its snapshots); Ok(false) if it did not exist (PVE only
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

/// Whether PVE can snapshot this volume on its storage.
pub fn can_snapshot(v: &VolName) -> bool {
    v.kind == "lvmthin" || v.format == "qcow2"
}

fn sparse_copy(from: &Path, to: &Path) -> Result<(), String> {
    // In place (same inode) so loop devices on `to` keep seeing the data.
    run(Command::new("cp").arg("--sparse=always").arg(from).arg(to))
}

pub fn snapshot(path: &Path, v: &VolName, snap: &str) -> Result<(), String> {
    if v.kind == "lvmthin" {
        sparse_copy(path, &snap_path(path, snap))
    } else {
        run(Command::new("qemu-img")
            .args(["snapshot", "-c", snap])
            .arg(path))
    }
}

pub fn rollback(path: &Path, v: &VolName, snap: &str) -> Result<(), String> {
    if v.kind == "lvmthin" {
        sparse_copy(&snap_path(path, snap), path)
    } else {
        run(Command::new("qemu-img")
            .args(["snapshot", "-a", snap])
            .arg(path))
    }
}

pub fn delete_snapshot(path: &Path, v: &VolName, snap: &str) -> Result<(), String> {
    if v.kind == "lvmthin" {
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
    let from = match (snap, sv.kind.as_str()) {
        (Some(s), "lvmthin") => snap_path(src, s),
        _ => src.to_path_buf(),
    };
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", &sv.format, "-O", dst_fmt]);
    if let (Some(s), false) = (snap, sv.kind == "lvmthin") {
        cmd.arg("-l").arg(format!("snapshot.name={s}"));
    }
    run(cmd.arg(&from).arg(dst))
}
