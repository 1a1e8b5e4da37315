//! Host-side stand-in for QEMU disk hot-plug: applied disks of running VMs become loop devices
//! (qcow2 images through a storage daemon's raw export, `rawview.rs`),
//! published under `<data>/guests/<vmid>/disk/by-id/` the way a guest's udev names them, with
//! the guest's sysfs identity under `<data>/guests/<vmid>/sys/block/<dev>/device/`.
//!
//! The unplug rules are qemu-server's (QemuServer::vm_deviceunplug for scsiN/virtioN):
//! device_del, then qemu_devicedelverify polls the device list for 5 s and dies
//! "error on hot-unplugging device '<id>' - still busy in guest?"; only after a verified removal
//! does qemu_drivedel run, which is what drops the drive's throttle group (Blockdev::detach).
//! The "guest" here is the host: a loop device that is mounted or held open has not been
//! released. That is the pessimistic guest: a real QEMU removes a scsi-hd on a shared
//! virtio-scsi controller at once, mounted or not (seen in tests/e2e/qemu.sh); "still busy"
//! there needs a PCI device the guest does not give up (a virtio-scsi-single controller,
//! virtio-blk). The driver must handle both outcomes, so the loop model keeps the stricter one.
//! These rules are plain functions over a device path so that a QEMU-backed guest
//! can answer the same questions from QMP instead.
//! VMs configured to run in a real QEMU (`qemu.rs`) are handed to it: there the device list
//! comes from QMP and the guest's own udev makes the links.

use super::config::HotplugMode;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Attachment {
    dev: String,
    links: Vec<PathBuf>,
    /// The guest-visible sysfs directory of the device.
    sysfs: Option<PathBuf>,
    /// device_del was sent but the guest never released the device: QEMU removes it once
    /// the guest lets go, without qemu-server's drive cleanup.
    unplug_requested: bool,
}

pub struct Hotplug {
    mode: HotplugMode,
    data_dir: PathBuf,
    attached: Mutex<HashMap<(u32, String), Attachment>>,
    /// Throttle groups (`throttle-drive-<key>`) a device removal without qemu_drivedel left in
    /// the running QEMU; they live until the VM stops.
    leftover_throttle: Mutex<HashSet<(u32, String)>>,
    /// The raw views of hot-plugged qcow2 images (`rawview.rs`), by slot.
    views: Mutex<HashMap<(u32, String), super::rawview::RawView>>,
    qemu: Option<super::qemu::Guests>,
}

/// qemu-server QemuServer/Blockdev.pm throttle_group_id.
pub fn throttle_group_id(key: &str) -> String {
    format!("throttle-drive-{key}")
}

/// QEMU's object-add error for an id already in use (Blockdev::attach adds the drive's
/// throttle group first; its `object-del` of a left-over group fails while the old drive
/// still uses it).
pub fn duplicate_throttle_error(key: &str) -> String {
    format!(
        "attempt to add duplicate property '{}' to object (type 'container')",
        throttle_group_id(key)
    )
}

/// qemu-server QemuServer::qemu_devicedelverify's failure text.
pub fn still_busy_error(key: &str) -> String {
    format!("error on hot-unplugging device '{key}' - still busy in guest?")
}

/// Whether the guest still uses a block device: it is mounted or claimed exclusively (an
/// O_EXCL open fails with EBUSY), or some process holds it open.
pub fn device_busy(dev: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let excl = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_excl())
        .open(dev);
    match excl {
        // EBUSY: mounted, or claimed by a holder.
        Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => return true,
        Err(_) => return false, // gone already
        Ok(f) => drop(f),
    }
    held_open(dev)
}

fn libc_o_excl() -> i32 {
    nix::fcntl::OFlag::O_EXCL.bits()
}

/// Scans /proc/<pid>/fd for a descriptor of `dev`.
fn held_open(dev: &Path) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t == dev) {
                return true;
            }
        }
    }
    false
}

/// Waits up to `verify` for the guest to release `dev` (qemu_devicedelverify's polling).
pub fn wait_released(dev: &Path, verify: Duration) -> bool {
    let deadline = Instant::now() + verify;
    loop {
        if !device_busy(dev) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn losetup(args: &[&str]) -> Result<String, String> {
    let out = Command::new("losetup")
        .args(args)
        .output()
        .map_err(|e| format!("losetup: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "losetup {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Hotplug {
    pub fn new(mode: HotplugMode, data_dir: PathBuf) -> Self {
        Hotplug {
            mode,
            data_dir,
            attached: Mutex::new(HashMap::new()),
            leftover_throttle: Mutex::new(HashSet::new()),
            views: Mutex::new(HashMap::new()),
            qemu: None,
        }
    }

    pub fn set_qemu(&mut self, guests: super::qemu::Guests) {
        self.qemu = Some(guests);
    }

    /// The QEMU backend, when `vmid` runs in one.
    fn qemu_for(&self, vmid: u32) -> Option<&super::qemu::Guests> {
        self.qemu.as_ref().filter(|q| q.has(vmid))
    }

    /// Where the guest's sysfs block directories appear (`<dev>/device/wwid`, `vendor`).
    pub fn sys_block_dir(&self, vmid: u32) -> PathBuf {
        self.data_dir
            .join("guests")
            .join(vmid.to_string())
            .join("sys")
            .join("block")
    }

    pub fn by_id_dir(&self, vmid: u32) -> PathBuf {
        self.data_dir
            .join("guests")
            .join(vmid.to_string())
            .join("disk")
            .join("by-id")
    }

    /// Makes the image visible in the guest. A qcow2 image is opened by a storage daemon whose
    /// raw FUSE export backs the loop device (`rawview.rs`); other formats get no device.
    pub fn plug(
        &self,
        vmid: u32,
        key: &str,
        image: &Path,
        format: &str,
        wwn: Option<&str>,
        serial: Option<&str>,
    ) -> Result<(), String> {
        if let Some(q) = self.qemu_for(vmid) {
            return match format {
                "raw" => q.plug(vmid, key, image, wwn, serial),
                _ => Ok(()),
            };
        }
        let slot = (vmid, key.to_string());
        if self.leftover_throttle.lock().unwrap().contains(&slot) {
            return Err(duplicate_throttle_error(key));
        }
        if self.mode == HotplugMode::None || !matches!(format, "raw" | "qcow2") {
            return Ok(());
        }
        self.unplug(vmid, key);
        let backing = if format == "raw" {
            image.to_path_buf()
        } else {
            let dir = self
                .data_dir
                .join("guests")
                .join(vmid.to_string())
                .join("views");
            let view = super::rawview::RawView::start(image, format, &dir, key)?;
            let file = view.file.clone();
            self.views.lock().unwrap().insert(slot.clone(), view);
            file
        };
        let dev = match losetup(&["--find", "--show", &backing.to_string_lossy()]) {
            Ok(d) => d,
            Err(e) => {
                self.drop_view(vmid, key);
                return Err(e);
            }
        };
        let dir = self.by_id_dir(vmid);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        if let Some(w) = wwn {
            names.push(format!("wwn-{}", w.to_ascii_lowercase()));
        }
        // udev names a QEMU scsi-hd by its serial; without one QEMU reports the drive id
        // (`drive-<key>`) as the device identification, hence the by-id name.
        match serial {
            Some(s) => names.push(format!("scsi-0QEMU_QEMU_HARDDISK_{s}")),
            None if key.starts_with("scsi") => {
                names.push(format!("scsi-0QEMU_QEMU_HARDDISK_drive-{key}"))
            }
            None => {}
        }
        let sysfs = self.write_sysfs(vmid, &dev, wwn);
        let mut links = Vec::new();
        for n in names {
            let l = dir.join(n);
            let _ = std::fs::remove_file(&l);
            if let Err(e) = std::os::unix::fs::symlink(&dev, &l) {
                let _ = losetup(&["-d", &dev]);
                return Err(format!("cannot link {}: {e}", l.display()));
            }
            links.push(l);
        }
        self.attached.lock().unwrap().insert(
            slot,
            Attachment {
                dev,
                links,
                sysfs,
                unplug_requested: false,
            },
        );
        Ok(())
    }

    /// The identity a QEMU scsi-hd shows the guest in sysfs: `wwid` `naa.<wwn>` when the drive
    /// has a wwn, vendor `QEMU` (SCSI INQUIRY pads it to 8 bytes), model `QEMU HARDDISK`.
    fn write_sysfs(&self, vmid: u32, dev: &str, wwn: Option<&str>) -> Option<PathBuf> {
        let name = Path::new(dev).file_name()?.to_string_lossy().into_owned();
        let dir = self.sys_block_dir(vmid).join(&name);
        let device = dir.join("device");
        std::fs::create_dir_all(&device).ok()?;
        let _ = std::fs::write(device.join("vendor"), "QEMU    \n");
        let _ = std::fs::write(device.join("model"), "QEMU HARDDISK   \n");
        if let Some(w) = wwn {
            let hex = w.trim_start_matches("0x").to_ascii_lowercase();
            let _ = std::fs::write(device.join("wwid"), format!("naa.{hex}\n"));
        }
        Some(dir)
    }

    /// Hot-unplug as qemu-server's vm_deviceunplug does it: a device the guest still uses is
    /// waited for `verify`, then refused (the device stays, its delete stays pending). A device
    /// whose earlier device_del the guest has since honoured is gone without the drive
    /// cleanup, leaving its throttle group behind. Ok when the device is (now) gone.
    pub fn unplug_verified(&self, vmid: u32, key: &str, verify: Duration) -> Result<(), String> {
        if let Some(q) = self.qemu_for(vmid) {
            return q.unplug(vmid, key, verify);
        }
        let slot = (vmid, key.to_string());
        let Some(a) = self.attached.lock().unwrap().get(&slot).cloned() else {
            return Ok(());
        };
        let dev = PathBuf::from(&a.dev);
        if a.unplug_requested && !device_busy(&dev) {
            // vm_deviceunplug returns early for a device no longer in the list: no drivedel.
            self.unplug(vmid, key);
            self.leftover_throttle.lock().unwrap().insert(slot);
            return Ok(());
        }
        if !wait_released(&dev, verify) {
            if let Some(a) = self.attached.lock().unwrap().get_mut(&slot) {
                a.unplug_requested = true;
            }
            return Err(still_busy_error(key));
        }
        self.unplug(vmid, key);
        Ok(())
    }

    /// The VM's QEMU is gone (stop, destroy): so are the throttle groups it had left.
    pub fn vm_stopped(&self, vmid: u32) {
        self.leftover_throttle
            .lock()
            .unwrap()
            .retain(|(v, _)| *v != vmid);
    }

    pub fn unplug(&self, vmid: u32, key: &str) {
        if let Some(q) = self.qemu_for(vmid) {
            if let Err(e) = q.unplug(vmid, key, Duration::from_secs(5)) {
                tracing::warn!("VM {vmid}: unplugging {key}: {}", e.trim_end());
            }
            return;
        }
        let a = self
            .attached
            .lock()
            .unwrap()
            .remove(&(vmid, key.to_string()));
        if let Some(a) = a {
            for l in &a.links {
                let _ = std::fs::remove_file(l);
            }
            if let Some(d) = &a.sysfs {
                let _ = std::fs::remove_dir_all(d);
            }
            if let Err(e) = losetup(&["-d", &a.dev]) {
                tracing::warn!("detaching {}: {e}", a.dev);
            }
        }
        self.drop_view(vmid, key);
    }

    /// Closes the qcow2 view of a slot, if it has one (the image's lock goes with it).
    fn drop_view(&self, vmid: u32, key: &str) {
        let v = self.views.lock().unwrap().remove(&(vmid, key.to_string()));
        if let Some(mut v) = v {
            v.stop();
        }
    }

    /// Grows a hot-plugged qcow2 image through its open view (QMP `block_resize`, as
    /// qemu-server's qemu_block_resize does for a running VM; `qemu-img resize` would meet
    /// the image lock). Ok(false) when the slot has no view: the caller grows the file.
    pub fn grow_open(&self, vmid: u32, key: &str, bytes: u64) -> Result<bool, String> {
        let views = self.views.lock().unwrap();
        match views.get(&(vmid, key.to_string())) {
            Some(v) => v.resize(bytes).map(|_| true),
            None => Ok(false),
        }
    }

    /// After a resize: let the loop device pick up the new image size.
    pub fn refresh(&self, vmid: u32, key: &str) -> Result<(), String> {
        if let Some(q) = self.qemu_for(vmid) {
            return q.resize(vmid, key);
        }
        let dev = self
            .attached
            .lock()
            .unwrap()
            .get(&(vmid, key.to_string()))
            .map(|a| a.dev.clone());
        match dev {
            Some(d) => losetup(&["-c", &d]).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Drops loop devices left by an earlier run over images below the data dir, and the
    /// guest link dirs, so the caller can re-plug from the persisted state.
    pub fn cleanup_stale(&self) {
        // qcow2 views an earlier run left mounted (its daemons died with it).
        let guests = self.data_dir.join("guests");
        if let Ok(m) = std::fs::read_to_string("/proc/self/mounts") {
            for p in m.lines().filter_map(|l| l.split_whitespace().nth(1)) {
                if Path::new(p).starts_with(&guests) {
                    let _ = Command::new("umount").arg("-l").arg(p).status();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&guests);
        if self.mode == HotplugMode::None {
            return;
        }
        let Ok(out) = losetup(&["-J", "-l"]) else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
            return;
        };
        let Some(devs) = v.get("loopdevices").and_then(|d| d.as_array()) else {
            return;
        };
        let root = std::fs::canonicalize(&self.data_dir).unwrap_or(self.data_dir.clone());
        for d in devs {
            let back = d.get("back-file").and_then(|b| b.as_str()).unwrap_or("");
            let back = back.trim_end_matches(" (deleted)");
            if Path::new(back).starts_with(&root) || Path::new(back).starts_with(&self.data_dir) {
                if let Some(name) = d.get("name").and_then(|n| n.as_str()) {
                    let _ = losetup(&["-d", name]);
                }
            }
        }
    }

    /// Detaches everything this instance attached (shutdown, tests).
    pub fn detach_all(&self) {
        let keys: Vec<(u32, String)> = self.attached.lock().unwrap().keys().cloned().collect();
        for (vmid, key) in keys {
            self.unplug(vmid, &key);
        }
        if let Some(q) = &self.qemu {
            q.shutdown();
        }
    }
}
