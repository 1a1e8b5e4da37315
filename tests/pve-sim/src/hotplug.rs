//! Host-side stand-in for QEMU disk hot-plug: applied disks of running VMs become loop devices,
//! published under `<data>/guests/<vmid>/disk/by-id/` the way a guest's udev names them.

use super::config::HotplugMode;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct Attachment {
    dev: String,
    links: Vec<PathBuf>,
}

pub struct Hotplug {
    mode: HotplugMode,
    data_dir: PathBuf,
    attached: Mutex<HashMap<(u32, String), Attachment>>,
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
        }
    }

    pub fn by_id_dir(&self, vmid: u32) -> PathBuf {
        self.data_dir
            .join("guests")
            .join(vmid.to_string())
            .join("disk")
            .join("by-id")
    }

    /// Makes the image visible in the guest. qcow2 images get no device (loop needs raw).
    pub fn plug(
        &self,
        vmid: u32,
        key: &str,
        image: &Path,
        format: &str,
        wwn: Option<&str>,
        serial: Option<&str>,
    ) -> Result<(), String> {
        if self.mode == HotplugMode::None || format != "raw" {
            return Ok(());
        }
        self.unplug(vmid, key);
        let dev = losetup(&["--find", "--show", &image.to_string_lossy()])?;
        let dir = self.by_id_dir(vmid);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        if let Some(w) = wwn {
            names.push(format!("wwn-{}", w.to_ascii_lowercase()));
        }
        if let Some(s) = serial {
            names.push(format!("scsi-0QEMU_QEMU_HARDDISK_{s}"));
        }
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
        self.attached
            .lock()
            .unwrap()
            .insert((vmid, key.to_string()), Attachment { dev, links });
        Ok(())
    }

    pub fn unplug(&self, vmid: u32, key: &str) {
        let a = self
            .attached
            .lock()
            .unwrap()
            .remove(&(vmid, key.to_string()));
        if let Some(a) = a {
            for l in &a.links {
                let _ = std::fs::remove_file(l);
            }
            if let Err(e) = losetup(&["-d", &a.dev]) {
                tracing::warn!("detaching {}: {e}", a.dev);
            }
        }
    }

    /// After a resize: let the loop device pick up the new image size.
    pub fn refresh(&self, vmid: u32, key: &str) -> Result<(), String> {
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
        let _ = std::fs::remove_dir_all(self.data_dir.join("guests"));
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
    }
}
