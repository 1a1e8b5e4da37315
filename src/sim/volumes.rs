//! `dir` storage semantics: volume naming, image files under `<storage>/images/<vmid>/`, sizes.

use super::config::{SimConfig, StorageConfig};
use super::error::{ApiError, ApiResult};
use regex::Regex;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A parsed dir-storage volume name `<vmid>/<file>.<fmt>`.
#[derive(Debug, Clone)]
pub struct VolName {
    pub owner: u32,
    pub file: String,
    pub format: String,
}

pub fn split_volid(volid: &str) -> ApiResult<(&str, &str)> {
    if !super::formats::volid_ok(volid) {
        return Err(ApiError::internal(format!("unable to parse volume ID '{volid}'")));
    }
    Ok(volid.split_once(':').expect("checked by volid_ok"))
}

pub fn parse_volname(volname: &str) -> ApiResult<VolName> {
    static R: OnceLock<Regex> = OnceLock::new();
    let re = R.get_or_init(|| Regex::new(r"^(\d+)/([^/\s]+\.(raw|qcow2|vmdk))$").unwrap());
    let c = re
        .captures(volname)
        .ok_or_else(|| ApiError::internal(format!("unable to parse directory volume name '{volname}'")))?;
    Ok(VolName {
        owner: c[1].parse().map_err(|_| ApiError::internal(format!("unable to parse directory volume name '{volname}'")))?,
        file: c[2].to_string(),
        format: c[3].to_string(),
    })
}

pub fn storage<'a>(cfg: &'a SimConfig, id: &str) -> ApiResult<&'a StorageConfig> {
    cfg.storage(id).ok_or_else(|| ApiError::internal(format!("storage '{id}' does not exist")))
}

pub fn check_available(st: &StorageConfig, node: &str) -> ApiResult<()> {
    if st.available_on(node) {
        Ok(())
    } else {
        Err(ApiError::internal(format!("storage '{}' is not available on node '{node}'", st.id)))
    }
}

pub fn image_path(cfg: &SimConfig, st: &StorageConfig, node: &str, v: &VolName) -> PathBuf {
    st.dir(&cfg.data_dir, node).join("images").join(v.owner.to_string()).join(&v.file)
}

/// Resolves a volume id to its image file as seen from `node`.
pub fn resolve(cfg: &SimConfig, node: &str, volid: &str) -> ApiResult<(PathBuf, VolName)> {
    let (sid, volname) = split_volid(volid)?;
    let st = storage(cfg, sid)?;
    let v = parse_volname(volname)?;
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
        let out = std::process::Command::new("qemu-img")
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

/// Lists the images of a storage from the files on disk, as the dir plugin does.
pub fn list_images(cfg: &SimConfig, st: &StorageConfig, node: &str) -> Vec<ImageInfo> {
    let mut res = Vec::new();
    let images = st.dir(&cfg.data_dir, node).join("images");
    let Ok(owners) = std::fs::read_dir(&images) else { return res };
    for o in owners.flatten() {
        let oname = o.file_name().to_string_lossy().into_owned();
        let Ok(owner) = oname.parse::<u32>() else { continue };
        let Ok(files) = std::fs::read_dir(o.path()) else { continue };
        for f in files.flatten() {
            let fname = f.file_name().to_string_lossy().into_owned();
            let Ok(v) = parse_volname(&format!("{owner}/{fname}")) else { continue };
            let Some((size, used, ctime)) = size_info(&f.path(), &v.format) else { continue };
            res.push(ImageInfo { volid: format!("{}:{owner}/{fname}", st.id), owner, format: v.format, size, used, ctime });
        }
    }
    res.sort_by(|a, b| a.volid.cmp(&b.volid));
    res
}

/// Creates a sparse image of `size_kib` KiB. Errors carry PVE's texts.
pub fn alloc(cfg: &SimConfig, st: &StorageConfig, node: &str, vmid: u32, name: &str, fmt: &str, size_kib: u64) -> ApiResult<String> {
    if !name.starts_with(&format!("vm-{vmid}-")) && !name.starts_with(&format!("base-{vmid}-")) {
        return Err(ApiError::internal(format!("illegal name '{name}' - should be 'vm-{vmid}-*'")));
    }
    static R: OnceLock<Regex> = OnceLock::new();
    let re = R.get_or_init(|| Regex::new(r"^[^/\s]+\.(raw|qcow2|vmdk|subvol)$").unwrap());
    let Some(c) = re.captures(name) else {
        return Err(ApiError::internal(format!("unable to parse volume filename '{name}'")));
    };
    let namefmt = &c[1];
    if namefmt != fmt {
        return Err(ApiError::internal(format!("illegal name '{name}' - wrong extension for format ('{namefmt} != '{fmt}')")));
    }
    let dir = st.dir(&cfg.data_dir, node).join("images").join(vmid.to_string());
    let path = dir.join(name);
    if path.exists() {
        return Err(ApiError::internal(format!("disk image '{}' already exists", path.display())));
    }
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(format!("unable to create image dir - {e}")))?;
    let res = match fmt {
        "raw" => std::fs::File::create_new(&path).and_then(|f| f.set_len(size_kib * 1024)).map_err(|e| e.to_string()),
        "qcow2" | "vmdk" => run_qemu_img(&["create", "-f", fmt, &path.to_string_lossy(), &format!("{size_kib}K")]),
        _ => Err(format!("unsupported format '{fmt}'")),
    };
    if let Err(e) = res {
        let _ = std::fs::remove_file(&path);
        return Err(ApiError::internal(format!("unable to create image: {e}")));
    }
    Ok(format!("{}:{vmid}/{name}", st.id))
}

fn run_qemu_img(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("qemu-img").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Grows an image to `bytes`.
pub fn grow(path: &Path, format: &str, bytes: u64) -> Result<(), String> {
    if format == "raw" {
        let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| e.to_string())?;
        f.set_len(bytes).map_err(|e| e.to_string())
    } else {
        run_qemu_img(&["resize", "-f", format, &path.to_string_lossy(), &bytes.to_string()])
    }
}

/// Removes an image; Ok(false) if it did not exist (PVE only warns then).
pub fn free(path: &Path) -> Result<bool, String> {
    if !path.exists() {
        return Ok(false);
    }
    std::fs::remove_file(path).map_err(|e| format!("unlink '{}' failed - {e}", path.display()))?;
    // PVE also drops the per-VM directory once it is empty.
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(true)
}
