//! Worker VMs backed by a real QEMU process: a disk change of the running VM is done over QMP
//! in the order qemu-server does it, so a real guest kernel sees the disk arrive (udev makes its
//! by-id links), leave and grow. Everything here follows qemu-server's src/PVE/QemuServer.pm
//! (vm_deviceplug, vm_deviceunplug, qemu_driveadd, qemu_drivedel, qemu_devicedelverify,
//! qemu_findorcreatescsihw, qemu_deletescsihw, vm_devices_list), QemuServer/DriveDevice.pm
//! (scsihw_infos, print_drivedevice_full), QemuServer/PCI.pm (the controller addresses),
//! QemuServer/QMPHelpers.pm (qemu_deviceadd/qemu_devicedel go through HMP) and
//! QemuServer/Blockdev.pm (resize: block_resize with the size padded to 1 KiB).
//! The machine is QEMU's default `pc` at the installed QEMU's version, below 10.0, so drives take
//! qemu-server's legacy path: HMP `drive_add`/`drive_del`, not `blockdev-add`.

use crate::config::QemuConfig;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One QMP connection (capabilities negotiated), answering one command at a time.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(sock: &Path, wait: Duration) -> Result<Qmp, String> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("QMP socket {}: {e}", sock.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(90)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        q.read_message()?; // the greeting
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read_message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?;
        if n == 0 {
            return Err("QMP: QEMU closed the monitor".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line}"))
    }

    /// Runs a command and returns its `return` value; asynchronous events are skipped.
    fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        let msg = json!({"execute": cmd, "arguments": args});
        writeln!(self.writer, "{msg}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let m = self.read_message()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("error");
                return Err(format!("{cmd}: {desc}"));
            }
        }
    }

    /// qemu-server's `hmp_cmd`: an HMP command line through `human-monitor-command`.
    fn hmp(&mut self, line: &str) -> Result<String, String> {
        let r = self.execute("human-monitor-command", json!({"command-line": line}))?;
        Ok(r.as_str().unwrap_or_default().to_string())
    }
}

/// Which accelerator ran the guest, as `query-kvm` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

struct Guest {
    child: Child,
    qmp: Qmp,
    /// `virtio-scsi-pci` (one controller `scsihw0`) or `virtio-scsi-single` (one controller per
    /// disk, `virtioscsiN` behind bridge `pci.3`).
    scsihw: String,
    /// Image of each plugged drive, for block_resize.
    images: HashMap<String, PathBuf>,
}

/// The QEMU-backed VMs of one simulator.
pub struct Guests {
    guests: Mutex<HashMap<u32, Guest>>,
}

/// /dev/kvm usable by this process? (QEMU would fail with `-accel kvm` otherwise.)
fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn controller_of(scsihw: &str, index: u32) -> (String, u32) {
    // DriveDevice.pm scsihw_infos: virtio-scsi-single has one disk per controller, other
    // virtio-scsi controllers 256.
    if scsihw == "virtio-scsi-single" {
        (format!("virtioscsi{index}"), index)
    } else {
        (format!("scsihw{}", index / 256), index / 256)
    }
}

fn scsi_index(key: &str) -> Result<u32, String> {
    key.strip_prefix("scsi")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("can't hotplug device '{key}'\n"))
}

impl Guest {
    /// qemu-server vm_devices_list: qdev ids from query-pci (through bridges) and the drive ids
    /// of query-block's devices.
    fn devices(&mut self) -> Result<BTreeSet<String>, String> {
        let mut out = BTreeSet::new();
        let pci = self.qmp.execute("query-pci", json!({}))?;
        let mut todo: Vec<Value> = pci
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|b| b["devices"].as_array().cloned().unwrap_or_default())
            .collect();
        while let Some(d) = todo.pop() {
            if let Some(id) = d["qdev_id"].as_str().filter(|s| !s.is_empty()) {
                out.insert(id.to_string());
            }
            if let Some(sub) = d["pci_bridge"]["devices"].as_array() {
                todo.extend(sub.iter().cloned());
            }
        }
        let blocks = self.qmp.execute("query-block", json!({}))?;
        for b in blocks.as_array().into_iter().flatten() {
            if let Some(q) = b["qdev"].as_str() {
                // A QOM path (/machine/peripheral/scsi1) or the bare id.
                let id = q.rsplit('/').next().unwrap_or(q);
                if !id.is_empty() && b["inserted"].is_object() {
                    out.insert(id.to_string());
                }
            }
        }
        Ok(out)
    }

    fn device_add(&mut self, spec: &str) -> Result<(), String> {
        // QMPHelpers.pm qemu_deviceadd: "device_add driver=<spec>" over HMP; HMP reports
        // failures as text, not as a QMP error.
        let out = self.qmp.hmp(&format!("device_add driver={spec}"))?;
        if out.trim().is_empty() {
            Ok(())
        } else {
            Err(out.trim().to_string())
        }
    }

    fn device_del(&mut self, id: &str) -> Result<(), String> {
        let out = self.qmp.hmp(&format!("device_del {id}"))?;
        if out.trim().is_empty() {
            Ok(())
        } else {
            Err(out.trim().to_string())
        }
    }

    /// qemu_devicedelverify: device_del is asynchronous, so poll the device list once a second;
    /// still there after `timeout` seconds is PVE's "still busy in guest?" error.
    fn devicedel_verify(&mut self, id: &str, timeout: u64) -> Result<(), String> {
        for i in 0..=timeout {
            if !self.devices()?.contains(id) {
                return Ok(());
            }
            if i < timeout {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Err(crate::hotplug::still_busy_error(id))
    }

    /// qemu_findorcreatescsihw, then vm_deviceplug's controller branch with PCI.pm's address.
    fn find_or_create_controller(&mut self, index: u32) -> Result<String, String> {
        let (id, n) = controller_of(&self.scsihw, index);
        if self.devices()?.contains(&id) {
            return Ok(id);
        }
        let spec = if self.scsihw == "virtio-scsi-single" {
            // PCI.pm: virtioscsiN sits in slot N+1 of bridge pci.3 (started with the VM).
            format!("virtio-scsi-pci,id={id},bus=pci.3,addr=0x{:x}", n + 1)
        } else {
            // PCI.pm: scsihw0 at bus 0 slot 5; further controllers are not modelled.
            if n != 0 {
                return Err(format!("can't hotplug device '{id}'\n"));
            }
            format!("virtio-scsi-pci,id={id},bus=pci.0,addr=0x5")
        };
        self.device_add(&spec)?;
        // vm_deviceplug verifies a new controller (qemu_deviceaddverify: 6 tries, 1 s apart).
        for _ in 0..=5 {
            if self.devices()?.contains(&id) {
                return Ok(id);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        Err(format!("error on hotplug device '{id}'\n"))
    }

    fn drive_del(&mut self, key: &str) -> Result<(), String> {
        // qemu_drivedel: empty output is success; "Device ... not found" means QEMU already
        // dropped the drive together with its device.
        let out = self.qmp.hmp(&format!("drive_del drive-{key}"))?;
        let out = out.trim();
        if out.is_empty() || (out.contains("Device '") && out.contains("not found")) {
            Ok(())
        } else {
            Err(format!("deleting drive {key} failed : {out}\n"))
        }
    }

    /// vm_deviceplug, `scsiN` branch.
    fn plug(
        &mut self,
        key: &str,
        image: &Path,
        wwn: Option<&str>,
        serial: Option<&str>,
    ) -> Result<(), String> {
        let index = scsi_index(key)?;
        if self.devices()?.contains(key) {
            return Ok(());
        }
        let controller = self.find_or_create_controller(index)?;
        // qemu_driveadd, legacy path: drive_add with print_drive_commandline_full's options
        // (raw, cache=none for direct-capable storages, detect-zeroes on). aio: qemu-server
        // picks io_uring where QEMU has it; threads here, which needs nothing of the host kernel.
        let drive = format!(
            "file={},if=none,id=drive-{key},format=raw,cache=none,aio=threads,detect-zeroes=on",
            image.display()
        );
        let out = self.qmp.hmp(&format!(
            "drive_add auto \"{}\"",
            drive.replace('\\', "\\\\")
        ))?;
        if !out.contains("OK") {
            return Err(format!("adding drive failed: {}\n", out.trim()));
        }
        // print_drivedevice_full for a virtio-scsi controller: channel 0, scsi-id 0, lun = the
        // drive index; wwn on the device, serial too (DriveDevice.pm).
        let mut dev = format!(
            "scsi-hd,bus={controller}.0,channel=0,scsi-id=0,lun={index},drive=drive-{key},id={key}"
        );
        if let Some(w) = wwn {
            dev.push_str(&format!(",wwn={w}"));
        }
        if let Some(s) = serial {
            dev.push_str(&format!(",serial={s}"));
        }
        if let Err(e) = self.device_add(&dev) {
            // vm_deviceplug: a failed device_add deletes the drive it added, then dies.
            if let Err(e2) = self.drive_del(key) {
                tracing::warn!("{e2}");
            }
            return Err(format!("{e}\n"));
        }
        self.images.insert(key.to_string(), image.to_path_buf());
        Ok(())
    }

    /// vm_deviceunplug, `scsiN` branch: device_del, verify, drive_del, then the controller when
    /// it serves no disk any more (qemu_deletescsihw; its verify waits 15 s).
    fn unplug(&mut self, key: &str, timeout: u64) -> Result<(), String> {
        let index = scsi_index(key)?;
        if !self.devices()?.contains(key) {
            self.images.remove(key);
            return Ok(());
        }
        self.device_del(key)?;
        self.devicedel_verify(key, timeout)?;
        self.drive_del(key)?;
        self.images.remove(key);
        let (controller, _) = controller_of(&self.scsihw, index);
        let devices = self.devices()?;
        let serves_other = devices.iter().any(|d| {
            d.strip_prefix("scsi")
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|i| controller_of(&self.scsihw, i).0 == controller)
        });
        if !serves_other && devices.contains(&controller) {
            self.device_del(&controller)?;
            self.devicedel_verify(&controller, 15)?;
        }
        Ok(())
    }

    /// Blockdev.pm resize: block_resize of the drive's inserted node, size padded to 1 KiB.
    fn resize(&mut self, key: &str) -> Result<(), String> {
        let Some(image) = self.images.get(key).cloned() else {
            return Ok(());
        };
        let size = std::fs::metadata(&image)
            .map_err(|e| format!("{}: {e}", image.display()))?
            .len();
        let size = size + (1024 - size % 1024) % 1024;
        let blocks = self.qmp.execute("query-block", json!({}))?;
        let node = blocks
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["device"].as_str() == Some(&format!("drive-{key}")))
            .and_then(|b| b["inserted"]["node-name"].as_str().map(str::to_string))
            .ok_or_else(|| format!("no block node inserted for drive '{key}'\n"))?;
        self.qmp
            .execute("block_resize", json!({"node-name": node, "size": size}))?;
        Ok(())
    }
}

impl Guests {
    /// Starts one QEMU per configured VM (`scsihw` from its config). The guest boots in the
    /// background; disks can be plugged before it is up (the kernel finds them when it scans).
    pub fn start(
        cfg: &QemuConfig,
        data_dir: &Path,
        scsihw_of: impl Fn(u32) -> String,
    ) -> Result<Guests, String> {
        let mut guests = HashMap::new();
        for vm in &cfg.vms {
            let dir = data_dir.join("qemu").join(vm.vmid.to_string());
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let accel = match cfg.accel.as_str() {
                "kvm" => Accel::Kvm,
                "tcg" => Accel::Tcg,
                _ if kvm_usable() => Accel::Kvm,
                _ => Accel::Tcg,
            };
            let scsihw = scsihw_of(vm.vmid);
            let sock = dir.join("qmp.sock");
            let mut cmd = Command::new(&cfg.binary);
            cmd.arg("-name")
                .arg(format!("vm{}", vm.vmid))
                .args(["-machine", "pc", "-nodefaults", "-no-user-config"])
                .args(["-display", "none", "-smp", "2"])
                .arg("-m")
                .arg(cfg.memory_mib.to_string())
                .arg("-accel")
                .arg(accel.name())
                .args(["-cpu", if accel == Accel::Kvm { "host" } else { "max" }])
                .arg("-serial")
                .arg(format!("file:{}", dir.join("console.log").display()))
                .arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", sock.display()))
                .arg("-pidfile")
                .arg(dir.join("qemu.pid"))
                .args(["-no-reboot"]);
            // Without a kernel the VM stays in its firmware: a guest that never answers a
            // PCI unplug request (the unit test's "still busy in guest?").
            if !cfg.kernel.as_os_str().is_empty() {
                cmd.arg("-kernel")
                    .arg(&cfg.kernel)
                    .arg("-initrd")
                    .arg(&cfg.initrd)
                    .arg("-append")
                    .arg(format!(
                        "console=ttyS0 panic=-1 {} {}",
                        cfg.append, vm.append
                    ));
            }
            if scsihw == "virtio-scsi-single" {
                // PCI.pm: the bridge virtio-scsi-single controllers hang off, as at VM start.
                cmd.args([
                    "-device",
                    "pci-bridge,id=pci.3,chassis_nr=3,bus=pci.0,addr=0x5",
                ]);
            }
            let fwd: String = vm.hostfwd.iter().map(|f| format!(",hostfwd={f}")).collect();
            cmd.arg("-netdev")
                .arg(format!("user,id=net0{fwd}"))
                .args(["-device", "virtio-net-pci,netdev=net0,bus=pci.0,addr=0x12"]);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
                std::fs::File::create(dir.join("qemu.stderr"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            );
            // Dies with the simulator, however it ends.
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("starting {}: {e}", cfg.binary.display()))?;
            let mut qmp = match Qmp::connect(&sock, Duration::from_secs(20)) {
                Ok(q) => q,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err = std::fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
                    return Err(format!("VM {}: {e} {}", vm.vmid, err.trim()));
                }
            };
            let kvm = qmp.execute("query-kvm", json!({}))?;
            let ran = if kvm["enabled"].as_bool() == Some(true) {
                Accel::Kvm
            } else {
                Accel::Tcg
            };
            let _ = std::fs::write(dir.join("accel"), ran.name());
            tracing::info!(
                "VM {} runs in QEMU (pid {}, {})",
                vm.vmid,
                child.id(),
                ran.name()
            );
            guests.insert(
                vm.vmid,
                Guest {
                    child,
                    qmp,
                    scsihw,
                    images: HashMap::new(),
                },
            );
        }
        Ok(Guests {
            guests: Mutex::new(guests),
        })
    }

    pub fn has(&self, vmid: u32) -> bool {
        self.guests.lock().unwrap().contains_key(&vmid)
    }

    fn with<T>(
        &self,
        vmid: u32,
        f: impl FnOnce(&mut Guest) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut g = self.guests.lock().unwrap();
        let guest = g
            .get_mut(&vmid)
            .ok_or_else(|| format!("VM {vmid} has no QEMU"))?;
        f(guest)
    }

    pub fn plug(
        &self,
        vmid: u32,
        key: &str,
        image: &Path,
        wwn: Option<&str>,
        serial: Option<&str>,
    ) -> Result<(), String> {
        self.with(vmid, |g| g.plug(key, image, wwn, serial))
    }

    /// `verify`: qemu_devicedelverify's wait for the disk (`unplug_verify_ms`, PVE: 5 s).
    pub fn unplug(&self, vmid: u32, key: &str, verify: Duration) -> Result<(), String> {
        let t = verify.as_millis().div_ceil(1000) as u64;
        self.with(vmid, |g| g.unplug(key, t))
    }

    pub fn resize(&self, vmid: u32, key: &str) -> Result<(), String> {
        self.with(vmid, |g| g.resize(key))
    }

    /// Stops every QEMU (`quit`, then a kill if it lingers).
    pub fn shutdown(&self) {
        let mut g = self.guests.lock().unwrap();
        for (vmid, mut guest) in g.drain() {
            let _ = guest.qmp.execute("quit", json!({}));
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match guest.child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() >= deadline => {
                        let _ = guest.child.kill();
                        let _ = guest.child.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            tracing::info!("VM {vmid}: QEMU stopped");
        }
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QemuVm;

    fn qemu_installed() -> bool {
        std::env::var_os("PATH").is_some_and(|p| {
            std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").exists())
        })
    }

    fn block_size(g: &Guests, vmid: u32, key: &str) -> Option<u64> {
        g.with(vmid, |g| g.qmp.execute("query-block", json!({})))
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["device"].as_str() == Some(&format!("drive-{key}")))
            .and_then(|b| b["inserted"]["image"]["virtual-size"].as_u64())
    }

    /// A VM without an operating system: the disk's device_del completes at once (a SCSI
    /// unplug needs no guest), but nobody ejects the PCI controller, so qemu_deletescsihw's
    /// verify ends in "still busy in guest?" after its 15 s.
    #[test]
    fn plug_resize_and_unplug_over_qmp() {
        if !qemu_installed() {
            eprintln!("SKIP plug_resize_and_unplug_over_qmp: qemu-system-x86_64 is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let cfg = QemuConfig {
            accel: "tcg".into(),
            memory_mib: 128,
            vms: vec![QemuVm {
                vmid: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        let g = Guests::start(&cfg, dir.path(), |_| "virtio-scsi-pci".into()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("qemu/7/accel")).unwrap(),
            "tcg"
        );
        g.plug(7, "scsi1", &image, Some("0x5000000000000001"), Some("abc"))
            .unwrap();
        let devices = g.with(7, |g| g.devices()).unwrap();
        assert!(
            devices.contains("scsi1") && devices.contains("scsihw0"),
            "{devices:?}"
        );
        // Plugging what is there is a no-op, as vm_deviceplug's first check.
        g.plug(7, "scsi1", &image, None, None).unwrap();
        assert_eq!(block_size(&g, 7, "scsi1"), Some(16 << 20));

        std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap()
            .set_len((32 << 20) + 100)
            .unwrap();
        g.resize(7, "scsi1").unwrap();
        // Padded up to whole KiB, as Blockdev.pm resize does.
        assert_eq!(block_size(&g, 7, "scsi1"), Some((32 << 20) + 1024));

        let err = g.unplug(7, "scsi1", Duration::from_secs(5)).unwrap_err();
        assert_eq!(
            err,
            "error on hot-unplugging device 'scsihw0' - still busy in guest?"
        );
        let devices = g.with(7, |g| g.devices()).unwrap();
        assert!(!devices.contains("scsi1"), "{devices:?}");
        assert!(devices.contains("scsihw0"), "{devices:?}");
        g.shutdown();
    }
}
