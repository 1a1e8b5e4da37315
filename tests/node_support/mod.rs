//! Shared fixtures for the node integration tests: a loop device backed by
//! a sparse file, exposed through a private by-id directory the way udev
//! would expose a Proxmox SCSI disk.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proxmox_csi::csi;
use proxmox_csi::node::NodeConfig;
use proxmox_csi::volume_id::VolumeId;

use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};

pub const MIB: u64 = 1 << 20;

/// Reports a skipped test. Written straight to stderr because the test
/// harness swallows `eprintln!` output of passing tests, and a skip must
/// never be mistaken for a pass.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}

/// Mount and loop tests need root; everything else would be pretending.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        skip(test, "needs root for loop devices and mount(2)");
        false
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub struct Disk {
    /// The fixture's directory, also the kubelet directory of its config.
    pub root: tempfile::TempDir,
    pub image: PathBuf,
    pub loopdev: PathBuf,
    pub device_dir: PathBuf,
    /// A real volume id of this driver, unique to this disk.
    pub volume_id: String,
    /// The WWN derived from `volume_id`, as the controller attaches it.
    pub wwn: String,
}

/// A fresh volume id of this driver, as CreateVolume would make one.
pub fn new_volume_id() -> VolumeId {
    let vmid = 100_000 + rand::random::<u32>() % 900_000;
    VolumeId::from_volid(
        "region1",
        "zone-a",
        &format!("local-lvm:vm-{vmid}-disk-0"),
        &format!("csi-vol-test-{:016x}", rand::random::<u64>()),
    )
    .expect("valid volid")
}

impl Disk {
    /// A blank sparse disk of `size` bytes for a new volume id, attached as
    /// a loop device and linked as `<device_dir>/wwn-<wwn>`.
    pub fn new(size: u64) -> Disk {
        Disk::for_volume(size, new_volume_id())
    }

    pub fn for_volume(size: u64, id: VolumeId) -> Disk {
        let root = tempfile::Builder::new()
            .prefix("node-test-")
            .tempdir()
            .expect("tempdir");
        let image = root.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size)
            .unwrap();
        let loopdev = PathBuf::from(run(
            "losetup",
            &["--find", "--show", image.to_str().unwrap()],
        ));
        let device_dir = root.path().join("by-id");
        std::fs::create_dir(&device_dir).unwrap();
        let wwn = id.wwn();
        std::os::unix::fs::symlink(&loopdev, device_dir.join(format!("wwn-{wwn}"))).unwrap();
        Disk {
            root,
            image,
            loopdev,
            device_dir,
            volume_id: id.to_string(),
            wwn,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn config(&self) -> NodeConfig {
        let mut cfg = NodeConfig::new("test-node");
        cfg.device_dir = self.device_dir.clone();
        cfg.device_wait = Duration::from_secs(2);
        cfg.kubelet_dir = self.root.path().to_path_buf();
        cfg
    }

    pub fn publish_context(&self) -> HashMap<String, String> {
        HashMap::from([
            ("wwn".to_string(), self.wwn.clone()),
            ("bus".to_string(), "scsi3".to_string()),
        ])
    }

    /// SHA-256 of the whole device, to assert that nothing was written.
    pub fn checksum(&self) -> Vec<u8> {
        use sha2::Digest;
        let mut f = std::fs::File::open(&self.loopdev).unwrap();
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; MIB as usize];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.finalize().to_vec()
    }

    pub fn first_mib(&self) -> Vec<u8> {
        let mut f = std::fs::File::open(&self.loopdev).unwrap();
        let mut buf = vec![0u8; MIB as usize];
        f.read_exact(&mut buf).unwrap();
        buf
    }

    pub fn write_at(&self, offset: u64, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.loopdev)
            .unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
    }

    /// Grows the backing file and tells the loop driver, standing in for
    /// Proxmox resizing the disk plus a SCSI rescan.
    pub fn grow(&self, new_size: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.image)
            .unwrap()
            .set_len(new_size)
            .unwrap();
        run("losetup", &["-c", self.loopdev.to_str().unwrap()]);
    }

    pub fn mkfs(&self, tool: &str) {
        run(tool, &[self.loopdev.to_str().unwrap()]);
    }

    pub fn blkid_type(&self) -> Option<String> {
        let out = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "TYPE"])
            .arg(&self.loopdev)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!s.is_empty()).then_some(s)
    }
}

impl Drop for Disk {
    /// Unmounts everything under the fixture (deepest first, lazily so a
    /// busy mount cannot wedge the test run) and detaches the loop device,
    /// also when the test panicked.
    fn drop(&mut self) {
        let root = std::fs::canonicalize(self.root.path())
            .unwrap_or_else(|_| self.root.path().to_path_buf());
        if let Ok(entries) = proxmox_csi::node::mountinfo::read() {
            let mut points: Vec<PathBuf> = entries
                .into_iter()
                .map(|m| m.mount_point)
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for p in points {
                let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        // An encrypted test that panicked may leave its mapping open on
        // this loop device; close it so the detach can complete.
        let name = proxmox_csi::node::crypt::mapping_name(&self.volume_id);
        if let Ok(dm) = std::fs::canonicalize(proxmox_csi::node::crypt::mapping_path(&name)) {
            let dm = dm.file_name().unwrap().to_string_lossy().into_owned();
            let ours = self
                .loopdev
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if proxmox_csi::node::crypt::mapping_parent(Path::new("/sys/class/block"), &dm)
                .map(|(_, s)| s)
                == Some(ours)
            {
                let _ = Command::new("cryptsetup").arg("close").arg(&name).status();
            }
        }
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .status();
    }
}

pub fn mount_cap(fs: &str, mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn block_cap(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn stage_request(
    disk: &Disk,
    staging: &Path,
    cap: csi::VolumeCapability,
) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: disk.volume_id.clone(),
        publish_context: disk.publish_context(),
        staging_target_path: staging.to_string_lossy().into_owned(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

pub fn publish_request(
    disk: &Disk,
    staging: &Path,
    target: &Path,
    cap: csi::VolumeCapability,
    readonly: bool,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: disk.volume_id.clone(),
        publish_context: disk.publish_context(),
        staging_target_path: staging.to_string_lossy().into_owned(),
        target_path: target.to_string_lossy().into_owned(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

pub fn is_mountpoint(p: &Path) -> bool {
    proxmox_csi::node::mountinfo::mount_at(p).unwrap().is_some()
}
