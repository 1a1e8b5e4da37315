//! Validation of what a CreateVolume / Publish request asks for: StorageClass
//! parameters, capabilities, sizes. Every error names the field at fault.

use super::error::{ControllerError, Result};
use crate::csi::{
    volume_capability, volume_capability::access_mode::Mode, CapacityRange, VolumeCapability,
};
use std::collections::HashMap;

/// Parameters a StorageClass may set, after validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeParams {
    /// PVE storage id the disk is allocated on.
    pub storage: String,
    /// Drive cache mode (`none`, `writethrough`, `writeback`, `directsync`, `unsafe`).
    pub cache: Option<String>,
    /// Report the disk as an SSD to the guest.
    pub ssd: bool,
    /// Pass discard/TRIM from the guest to the storage.
    pub discard: bool,
    /// Include the disk in PVE VM backups (off: volumes have their own lifecycle).
    pub backup: bool,
    /// LUKS-encrypt the volume on the node (passphrase from the node-stage secret).
    pub encrypted: bool,
    /// Give the disk its own QEMU I/O thread (takes effect on workers whose
    /// `scsihw` is `virtio-scsi-single`; PVE ignores it elsewhere).
    pub iothread: bool,
    /// QEMU's asynchronous I/O mode for the disk; None = PVE's choice.
    pub aio: Option<String>,
    /// mkfs block and inode size for the node to format with.
    pub format: FormatOptions,
    /// Disk format (`storageFormat`): raw, or qcow2 on file storages; None = raw.
    pub disk_format: Option<String>,
}

const CACHE_MODES: &[&str] = &["none", "writethrough", "writeback", "unsafe", "directsync"];
/// PVE's drive `aio` values (qemu-server PVE/QemuServer/Drive.pm, the `aio` enum).
const AIO_MODES: &[&str] = &["native", "threads", "io_uring"];
/// Cache modes that open the image without O_DIRECT. QEMU refuses
/// `aio=native` without it (qemu-server Drive.pm aio_cmdline_option picks
/// native only when the cache is direct), so such a pair is refused here
/// rather than at hot-plug time.
const BUFFERED_CACHE_MODES: &[&str] = &["writethrough", "writeback", "unsafe"];
/// The keys [`parse_volume_params`] knows, for its error message.
const KNOWN_PARAMETERS: &str =
    "storage, storageFormat, cache, ssd, discard, backup, encrypted, iothread, aio, blockSize, inodeSize";

/// Keys the Kubernetes provisioner adds itself; not ours to judge.
const K8S_PREFIX: &str = "csi.storage.k8s.io/";

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ControllerError::InvalidArgument(format!(
            "parameters.{key}: {v:?} is not a boolean (true/false)"
        ))),
    }
}

pub fn parse_volume_params(
    params: &HashMap<String, String>,
    default_storage: Option<&str>,
) -> Result<VolumeParams> {
    let mut out = VolumeParams {
        discard: true,
        ..Default::default()
    };
    let mut storage = default_storage.map(str::to_string);
    let mut keys: Vec<_> = params.keys().collect();
    keys.sort();
    for key in keys {
        let v = params[key].trim();
        match key.as_str() {
            "storage" => storage = Some(v.to_string()),
            "cache" => {
                if !CACHE_MODES.contains(&v) {
                    return Err(ControllerError::InvalidArgument(format!(
                        "parameters.cache: {v:?} is not one of {}",
                        CACHE_MODES.join(", ")
                    )));
                }
                out.cache = Some(v.to_string());
            }
            "ssd" => out.ssd = parse_bool(key, v)?,
            "discard" => out.discard = parse_bool(key, v)?,
            "backup" => out.backup = parse_bool(key, v)?,
            "encrypted" => out.encrypted = parse_bool(key, v)?,
            "iothread" => out.iothread = parse_bool(key, v)?,
            "aio" => {
                if !AIO_MODES.contains(&v) {
                    return Err(ControllerError::InvalidArgument(format!(
                        "parameters.aio: {v:?} is not one of {}",
                        AIO_MODES.join(", ")
                    )));
                }
                out.aio = Some(v.to_string());
            }
            // Read together below, once both are known.
            k if k == VOLUME_CONTEXT_BLOCK_SIZE || k == VOLUME_CONTEXT_INODE_SIZE => {}
            "storageFormat" => out.disk_format = Some(super::features::parse_format(v)?),
            // The filesystem is chosen by the node from the volume capability.
            "fsType" | "fstype" => {}
            k if k.starts_with(K8S_PREFIX) => {}
            k => {
                return Err(ControllerError::InvalidArgument(format!(
                    "parameters.{k}: unknown parameter (known: {KNOWN_PARAMETERS})"
                )))
            }
        }
    }
    out.format =
        FormatOptions::parse(params, "parameters").map_err(ControllerError::InvalidArgument)?;
    check_aio_cache(out.aio.as_deref(), out.cache.as_deref(), "parameters")?;
    out.storage = match storage {
        Some(s) if !s.is_empty() => s,
        _ => {
            return Err(ControllerError::InvalidArgument(
                "parameters.storage: required (the Proxmox storage id to allocate disks on)".into(),
            ))
        }
    };
    if !out
        .storage
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ControllerError::InvalidArgument(format!(
            "parameters.storage: {:?} is not a valid storage id",
            out.storage
        )));
    }
    Ok(out)
}

impl VolumeParams {
    /// What the volume carries in its volume_context, so ControllerPublish
    /// (which gets the context, not the StorageClass) can set the drive options
    /// and the node knows whether to use LUKS.
    pub fn to_context(&self) -> HashMap<String, String> {
        let mut ctx = HashMap::from([
            ("storage".to_string(), self.storage.clone()),
            ("ssd".to_string(), self.ssd.to_string()),
            ("discard".to_string(), self.discard.to_string()),
            ("backup".to_string(), self.backup.to_string()),
        ]);
        if let Some(c) = &self.cache {
            ctx.insert("cache".into(), c.clone());
        }
        if self.encrypted {
            ctx.insert(VOLUME_CONTEXT_ENCRYPTED.into(), "true".into());
        }
        if self.iothread {
            ctx.insert("iothread".into(), "true".into());
        }
        if let Some(a) = &self.aio {
            ctx.insert("aio".into(), a.clone());
        }
        self.format.to_context(&mut ctx);
        ctx
    }

    /// Checks the mkfs sizes against the filesystem each mount capability
    /// will carry (its fs_type, else the StorageClass's
    /// `csi.storage.k8s.io/fstype`, else the default), so a size mkfs would
    /// refuse fails CreateVolume instead of every NodeStage.
    pub fn check_format(
        &self,
        caps: &[VolumeCapability],
        params: &HashMap<String, String>,
    ) -> Result<()> {
        let class_fs = params
            .get("csi.storage.k8s.io/fstype")
            .map(String::as_str)
            .filter(|f| !f.is_empty());
        for cap in caps {
            if let Some(volume_capability::AccessType::Mount(m)) = &cap.access_type {
                let fs = Some(m.fs_type.as_str())
                    .filter(|f| !f.is_empty())
                    .or(class_fs)
                    .unwrap_or(DEFAULT_FS_TYPE);
                self.format
                    .check(fs, "parameters")
                    .map_err(ControllerError::InvalidArgument)?;
            }
        }
        Ok(())
    }
}

/// Drive options (`key`, `value` in PVE's spelling) for a volume_context.
/// Unknown keys are left alone: a statically provisioned PV may carry others.
pub fn drive_options(ctx: &HashMap<String, String>) -> Result<Vec<(&'static str, String)>> {
    let field = |k: &str| format!("volume_context.{k}");
    let flag = |k: &str| -> Result<Option<bool>> {
        ctx.get(k)
            .map(|v| {
                parse_bool(k, v).map_err(|_| {
                    ControllerError::InvalidArgument(format!(
                        "{}: {v:?} is not a boolean",
                        field(k)
                    ))
                })
            })
            .transpose()
    };
    let mut out = vec![(
        "backup",
        if flag("backup")?.unwrap_or(false) {
            "1"
        } else {
            "0"
        }
        .to_string(),
    )];
    if let Some(c) = ctx.get("cache") {
        if !CACHE_MODES.contains(&c.as_str()) {
            return Err(ControllerError::InvalidArgument(format!(
                "{}: {c:?} is not one of {}",
                field("cache"),
                CACHE_MODES.join(", ")
            )));
        }
        out.push(("cache", c.clone()));
    }
    if flag("discard")?.unwrap_or(true) {
        out.push(("discard", "on".into()));
    }
    if flag("ssd")?.unwrap_or(false) {
        out.push(("ssd", "1".into()));
    }
    if flag("iothread")?.unwrap_or(false) {
        out.push(("iothread", "1".into()));
    }
    if let Some(a) = ctx.get("aio") {
        if !AIO_MODES.contains(&a.as_str()) {
            return Err(ControllerError::InvalidArgument(format!(
                "{}: {a:?} is not one of {}",
                field("aio"),
                AIO_MODES.join(", ")
            )));
        }
        check_aio_cache(
            Some(a),
            ctx.get("cache").map(String::as_str),
            "volume_context",
        )?;
        out.push(("aio", a.clone()));
    }
    Ok(out)
}

/// Mutable parameters (VolumeAttributesClass): I/O limits QEMU applies to
/// the disk, changeable while it is in use. CSI key, PVE drive option, and
/// whether the value may have a fraction.
pub const IO_LIMITS: &[(&str, &str, bool)] = &[
    ("iopsRead", "iops_rd", false),
    ("iopsWrite", "iops_wr", false),
    ("mbpsRead", "mbps_rd", true),
    ("mbpsWrite", "mbps_wr", true),
];

/// Validated I/O limits: PVE option and value, `None` = no limit (given as 0).
pub type IoLimits = Vec<(&'static str, Option<String>)>;

pub fn parse_io_limits(params: &HashMap<String, String>) -> Result<IoLimits> {
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let v = params[key].trim();
        let Some((_, pve, fractional)) = IO_LIMITS.iter().find(|(k, _, _)| k == key) else {
            let known: Vec<&str> = IO_LIMITS.iter().map(|(k, _, _)| *k).collect();
            return Err(ControllerError::InvalidArgument(format!(
                "mutable_parameters.{key}: unknown parameter (known: {})",
                known.join(", ")
            )));
        };
        let bad = || {
            ControllerError::InvalidArgument(format!(
                "mutable_parameters.{key}: {v:?} is not a non-negative {}",
                if *fractional { "number" } else { "integer" }
            ))
        };
        let value = if *fractional {
            let f: f64 = v.parse().map_err(|_| bad())?;
            if !f.is_finite() || f < 0.0 {
                return Err(bad());
            }
            (f > 0.0).then(|| v.to_string())
        } else {
            let n: u64 = v.parse().map_err(|_| bad())?;
            (n > 0).then(|| n.to_string())
        };
        out.push((*pve, value));
    }
    Ok(out)
}

/// Set (or, for 0, clear) the limits on a drive entry.
pub fn apply_io_limits(drive: &mut crate::pve::drive::Drive, limits: &IoLimits) {
    for (key, value) in limits {
        match value {
            Some(v) => drive.set(key, v.clone()),
            None => drive.remove(key),
        }
    }
}

/// The limits a drive entry carries, to copy from the holder to a worker.
pub fn io_limits_of(drive: &crate::pve::drive::Drive) -> IoLimits {
    IO_LIMITS
        .iter()
        .map(|(_, pve, _)| (*pve, drive.get(pve).map(str::to_string)))
        .collect()
}

use crate::contract::{
    FormatOptions, DEFAULT_FS_TYPE, FS_TYPES, VOLUME_CONTEXT_BLOCK_SIZE, VOLUME_CONTEXT_ENCRYPTED,
    VOLUME_CONTEXT_INODE_SIZE,
};

/// Refuses `aio=native` with a cache mode that does not open the image
/// with O_DIRECT; `field` names the map the values came from.
fn check_aio_cache(aio: Option<&str>, cache: Option<&str>, field: &str) -> Result<()> {
    match (aio, cache) {
        (Some("native"), Some(cache)) if BUFFERED_CACHE_MODES.contains(&cache) => {
            Err(ControllerError::InvalidArgument(format!(
                "{field}.aio: native needs the image opened with O_DIRECT, which cache {cache:?} \
                 does not do (use cache none or directsync, or aio io_uring or threads)"
            )))
        }
        _ => Ok(()),
    }
}

/// Whether a drive's `iothread=1` takes effect on a worker with this
/// `scsihw`: qemu-server gives SCSI disks an I/O thread only on
/// virtio-scsi-single and otherwise warns and ignores the flag
/// (PVE/QemuServer.pm, the SCSI branch of print_drivedevice_full).
pub fn iothread_effective(scsihw: Option<&str>) -> bool {
    scsihw == Some("virtio-scsi-single")
}

/// A Proxmox disk attaches to one VM at a time, so only single-node modes.
fn mode_supported(mode: Mode) -> bool {
    matches!(
        mode,
        Mode::SingleNodeWriter
            | Mode::SingleNodeReaderOnly
            | Mode::SingleNodeSingleWriter
            | Mode::SingleNodeMultiWriter
    )
}

/// Check one capability; `field` is the name to report (e.g. `volume_capabilities[1]`).
pub fn check_capability(cap: &VolumeCapability, field: &str) -> Result<()> {
    let mode = cap.access_mode.as_ref().ok_or_else(|| {
        ControllerError::InvalidArgument(format!("{field}.access_mode: required"))
    })?;
    let mode = Mode::try_from(mode.mode).unwrap_or(Mode::Unknown);
    if mode == Mode::Unknown {
        return Err(ControllerError::InvalidArgument(format!(
            "{field}.access_mode.mode: required"
        )));
    }
    if !mode_supported(mode) {
        return Err(ControllerError::InvalidArgument(format!(
            "{field}.access_mode.mode: {} is not supported: a Proxmox disk attaches to one VM at a time",
            mode.as_str_name()
        )));
    }
    match &cap.access_type {
        None => Err(ControllerError::InvalidArgument(format!(
            "{field}.access_type: block or mount is required"
        ))),
        Some(volume_capability::AccessType::Block(_)) => Ok(()),
        Some(volume_capability::AccessType::Mount(m)) => {
            if !m.fs_type.is_empty() && !FS_TYPES.contains(&m.fs_type.as_str()) {
                return Err(ControllerError::InvalidArgument(format!(
                    "{field}.mount.fs_type: {:?} is not supported (supported: {})",
                    m.fs_type,
                    FS_TYPES.join(", ")
                )));
            }
            Ok(())
        }
    }
}

pub fn check_capabilities(caps: &[VolumeCapability]) -> Result<()> {
    if caps.is_empty() {
        return Err(ControllerError::InvalidArgument(
            "volume_capabilities: at least one is required".into(),
        ));
    }
    for (i, c) in caps.iter().enumerate() {
        check_capability(c, &format!("volume_capabilities[{i}]"))?;
    }
    Ok(())
}

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// Size when the request gives none.
pub const DEFAULT_SIZE: u64 = GIB;

/// The size to allocate: the required size rounded up to whole MiB (every
/// PVE storage type can allocate that exactly), within the limit.
pub fn size_for(range: Option<&CapacityRange>) -> Result<u64> {
    let (required, limit) = range
        .map(|r| (r.required_bytes, r.limit_bytes))
        .unwrap_or((0, 0));
    if required < 0 || limit < 0 {
        return Err(ControllerError::InvalidArgument(
            "capacity_range: sizes must not be negative".into(),
        ));
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit > 0 && required > limit {
        return Err(ControllerError::InvalidArgument(format!(
            "capacity_range: required_bytes {required} exceeds limit_bytes {limit}"
        )));
    }
    let size = if required == 0 {
        if limit > 0 && limit < DEFAULT_SIZE {
            limit / MIB * MIB
        } else {
            DEFAULT_SIZE
        }
    } else {
        required.div_ceil(MIB) * MIB
    };
    if size == 0 || (limit > 0 && size > limit) {
        return Err(ControllerError::OutOfRange(format!(
            "capacity_range: no whole-MiB size fits between required_bytes {required} and limit_bytes {limit}"
        )));
    }
    Ok(size)
}

/// The smallest filesystem mkfs.xfs makes (xfsprogs 5.19 and later refuse
/// anything below 300 MiB).
pub const XFS_MIN_SIZE: u64 = 300 * MIB;

/// `size`, raised to the minimum of the filesystem the volume will carry,
/// so NodeStage never meets a disk its mkfs refuses. OutOfRange when the
/// range's limit leaves no room for that minimum.
pub fn fs_minimum(
    caps: &[VolumeCapability],
    params: &HashMap<String, String>,
    size: u64,
    range: Option<&CapacityRange>,
) -> Result<u64> {
    let xfs = params.get("csi.storage.k8s.io/fstype").is_some_and(|f| f == "xfs")
        || caps.iter().any(|c| matches!(&c.access_type, Some(volume_capability::AccessType::Mount(m)) if m.fs_type == "xfs"));
    if !xfs || size >= XFS_MIN_SIZE {
        return Ok(size);
    }
    let limit = range.map(|r| r.limit_bytes.max(0) as u64).unwrap_or(0);
    if limit > 0 && limit < XFS_MIN_SIZE {
        return Err(ControllerError::OutOfRange(format!(
            "capacity_range: limit_bytes {limit} is below {XFS_MIN_SIZE} bytes, the smallest xfs filesystem mkfs.xfs makes"
        )));
    }
    tracing::info!(
        asked = size,
        given = XFS_MIN_SIZE,
        "raising an xfs volume to the smallest size mkfs.xfs accepts"
    );
    Ok(XFS_MIN_SIZE)
}

/// Whether an existing disk of `size` satisfies the range (idempotent create).
pub fn size_fits(size: u64, range: Option<&CapacityRange>) -> bool {
    let (required, limit) = range
        .map(|r| (r.required_bytes.max(0) as u64, r.limit_bytes.max(0) as u64))
        .unwrap_or((0, 0));
    size >= required && (limit == 0 || size <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};

    fn cap(mode: Mode, fs: Option<&str>) -> VolumeCapability {
        VolumeCapability {
            access_mode: Some(AccessMode { mode: mode as i32 }),
            access_type: Some(match fs {
                Some(f) => AccessType::Mount(MountVolume {
                    fs_type: f.into(),
                    ..Default::default()
                }),
                None => AccessType::Block(BlockVolume {}),
            }),
        }
    }

    #[test]
    fn params_need_storage_and_reject_unknown_keys() {
        let mut p = HashMap::new();
        let e = parse_volume_params(&p, None).unwrap_err();
        assert!(e.to_string().contains("parameters.storage"));
        assert_eq!(
            parse_volume_params(&p, Some("local")).unwrap().storage,
            "local"
        );
        p.insert("storage".into(), "shared".into());
        p.insert("csi.storage.k8s.io/pvc/name".into(), "x".into());
        p.insert("cache".into(), "writeback".into());
        let v = parse_volume_params(&p, Some("local")).unwrap();
        assert_eq!(v.storage, "shared");
        assert_eq!(v.cache.as_deref(), Some("writeback"));
        p.insert("stroage".into(), "x".into());
        assert!(parse_volume_params(&p, None)
            .unwrap_err()
            .to_string()
            .contains("parameters.stroage"));
        let mut p = HashMap::new();
        p.insert("storage".into(), "a".into());
        p.insert("ssd".into(), "maybe".into());
        assert!(parse_volume_params(&p, None)
            .unwrap_err()
            .to_string()
            .contains("parameters.ssd"));
    }

    #[test]
    fn context_round_trips_into_drive_options() {
        let mut p = HashMap::new();
        p.insert("storage".to_string(), "s".to_string());
        p.insert("cache".to_string(), "writeback".to_string());
        p.insert("ssd".to_string(), "true".to_string());
        p.insert("discard".to_string(), "false".to_string());
        let v = parse_volume_params(&p, None).unwrap();
        let opts = drive_options(&v.to_context()).unwrap();
        assert_eq!(
            opts,
            vec![
                ("backup", "0".to_string()),
                ("cache", "writeback".to_string()),
                ("ssd", "1".to_string())
            ]
        );
        // A context without our keys (static PV) gets the defaults.
        let opts = drive_options(&HashMap::new()).unwrap();
        assert_eq!(
            opts,
            vec![("backup", "0".to_string()), ("discard", "on".to_string())]
        );
        let bad = HashMap::from([("cache".to_string(), "fast".to_string())]);
        assert!(drive_options(&bad)
            .unwrap_err()
            .to_string()
            .contains("volume_context.cache"));
        assert!(!v.to_context().contains_key("encrypted"));
    }

    #[test]
    fn iothread_aio_and_format_sizes() {
        let p = |kv: &[(&str, &str)]| -> HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([("storage".to_string(), "s".to_string())])
                .collect()
        };
        let v = parse_volume_params(
            &p(&[
                ("iothread", "true"),
                ("aio", "io_uring"),
                ("blockSize", "2048"),
                ("inodeSize", "512"),
            ]),
            None,
        )
        .unwrap();
        assert!(v.iothread);
        assert_eq!(v.aio.as_deref(), Some("io_uring"));
        assert_eq!(v.format.block_size, Some(2048));
        let ctx = v.to_context();
        assert_eq!(ctx["blockSize"], "2048");
        assert_eq!(ctx["inodeSize"], "512");
        let opts = drive_options(&ctx).unwrap();
        assert!(opts.contains(&("iothread", "1".to_string())), "{opts:?}");
        assert!(opts.contains(&("aio", "io_uring".to_string())), "{opts:?}");
        // Off by default: no key in the context, no drive option.
        let plain = parse_volume_params(&p(&[]), None).unwrap();
        assert!(!plain.to_context().contains_key("iothread"));
        assert!(!drive_options(&plain.to_context())
            .unwrap()
            .iter()
            .any(|(k, _)| *k == "iothread" || *k == "aio"));

        for (kv, field) in [
            (vec![("aio", "posix")], "parameters.aio"),
            (vec![("iothread", "2")], "parameters.iothread"),
            (vec![("blockSize", "4k")], "parameters.blockSize"),
            (
                vec![("aio", "native"), ("cache", "writeback")],
                "parameters.aio",
            ),
        ] {
            let e = parse_volume_params(&p(&kv), None).unwrap_err();
            assert!(
                matches!(&e, ControllerError::InvalidArgument(m) if m.starts_with(field)),
                "{kv:?}: {e}"
            );
        }
        // native is fine with a direct cache mode.
        assert!(parse_volume_params(&p(&[("aio", "native"), ("cache", "none")]), None).is_ok());
        let bad_ctx = HashMap::from([
            ("aio".to_string(), "native".to_string()),
            ("cache".to_string(), "unsafe".to_string()),
        ]);
        assert!(drive_options(&bad_ctx)
            .unwrap_err()
            .to_string()
            .contains("volume_context.aio"));

        // The sizes are checked against the filesystem each capability asks for.
        let v = parse_volume_params(&p(&[("inodeSize", "256")]), None).unwrap();
        let ext4 = [cap(Mode::SingleNodeWriter, Some("ext4"))];
        let xfs = [cap(Mode::SingleNodeWriter, Some("xfs"))];
        let unnamed = [cap(Mode::SingleNodeWriter, Some(""))];
        let block = [cap(Mode::SingleNodeWriter, None)];
        let no_class = HashMap::new();
        assert!(v.check_format(&ext4, &no_class).is_ok());
        assert!(v.check_format(&block, &no_class).is_ok());
        let e = v.check_format(&xfs, &no_class).unwrap_err();
        assert!(e.to_string().contains("parameters.inodeSize"), "{e}");
        assert!(v.check_format(&unnamed, &no_class).is_ok(), "default ext4");
        let xfs_class =
            HashMap::from([("csi.storage.k8s.io/fstype".to_string(), "xfs".to_string())]);
        assert!(v.check_format(&unnamed, &xfs_class).is_err());
        assert!(iothread_effective(Some("virtio-scsi-single")));
        assert!(!iothread_effective(Some("virtio-scsi-pci")));
        assert!(!iothread_effective(None));
    }

    #[test]
    fn io_limits() {
        let p = HashMap::from([
            ("iopsRead".to_string(), "500".to_string()),
            ("mbpsWrite".to_string(), "12.5".to_string()),
        ]);
        let l = parse_io_limits(&p).unwrap();
        assert_eq!(
            l,
            vec![
                ("iops_rd", Some("500".to_string())),
                ("mbps_wr", Some("12.5".to_string()))
            ]
        );
        let mut d = crate::pve::drive::Drive::new("s:v")
            .with("iops_rd", "1")
            .with("backup", "0");
        apply_io_limits(&mut d, &l);
        assert_eq!(d.to_string(), "s:v,iops_rd=500,backup=0,mbps_wr=12.5");
        apply_io_limits(
            &mut d,
            &parse_io_limits(&HashMap::from([("iopsRead".to_string(), "0".to_string())])).unwrap(),
        );
        assert_eq!(d.get("iops_rd"), None, "0 lifts the limit");
        for (k, v) in [
            ("XXX_FakeKey", "1"),
            ("iopsRead", "-1"),
            ("iopsRead", "1.5"),
            ("mbpsRead", "fast"),
        ] {
            let e = parse_io_limits(&HashMap::from([(k.to_string(), v.to_string())])).unwrap_err();
            assert!(
                e.to_string().contains(&format!("mutable_parameters.{k}")),
                "{e}"
            );
        }
    }

    #[test]
    fn capabilities() {
        assert!(check_capabilities(&[]).is_err());
        assert!(check_capabilities(&[
            cap(Mode::SingleNodeWriter, Some("ext4")),
            cap(Mode::SingleNodeReaderOnly, None)
        ])
        .is_ok());
        let e = check_capabilities(&[cap(Mode::MultiNodeMultiWriter, None)]).unwrap_err();
        assert!(e
            .to_string()
            .contains("volume_capabilities[0].access_mode.mode"));
        let e = check_capabilities(&[cap(Mode::SingleNodeWriter, Some("btrfs"))]).unwrap_err();
        assert!(e.to_string().contains("fs_type"));
        let no_type = VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
            access_type: None,
        };
        assert!(check_capabilities(&[no_type])
            .unwrap_err()
            .to_string()
            .contains("access_type"));
    }

    #[test]
    fn sizes() {
        let r = |req: i64, lim: i64| {
            Some(CapacityRange {
                required_bytes: req,
                limit_bytes: lim,
            })
        };
        assert_eq!(size_for(None).unwrap(), GIB);
        assert_eq!(size_for(r(GIB as i64, 0).as_ref()).unwrap(), GIB);
        assert_eq!(size_for(r(1, 0).as_ref()).unwrap(), MIB);
        assert_eq!(
            size_for(r(0, 100 * MIB as i64).as_ref()).unwrap(),
            100 * MIB
        );
        assert!(matches!(
            size_for(r(5, 10).as_ref()),
            Err(ControllerError::OutOfRange(_))
        ));
        assert!(matches!(
            size_for(r(10, 5).as_ref()),
            Err(ControllerError::InvalidArgument(_))
        ));
        assert!(size_fits(GIB, r(GIB as i64, 0).as_ref()));
        assert!(!size_fits(GIB, r(2 * GIB as i64, 0).as_ref()));
        assert!(!size_fits(2 * GIB, r(0, GIB as i64).as_ref()));
    }
}
