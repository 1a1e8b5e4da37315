//! The driver against a real guest kernel: the controller on the host, pve-sim hot-plugging
//! into a QEMU worker VM over QMP, the node plugin inside the guest. What the host tests can
//! not run there (LUKS needs device-mapper, online ext4 growth CAP_SYS_RESOURCE, and real
//! by-id links need a udev seeing a real disk arrive) runs here.
//!
//! Started by tests/e2e/qemu.sh, which boots the guest and passes its endpoints in the
//! environment; ignored in a plain `cargo test` (no guest there). Each step prints
//! `step <name> ok|fail <seconds>`, which qemu.sh counts.

use proxmox_csi::csi::controller_client::ControllerClient;
use proxmox_csi::csi::node_client::NodeClient;
use proxmox_csi::csi::volume_capability::access_mode::Mode;
use proxmox_csi::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use proxmox_csi::csi::*;
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;
use tonic::transport::Channel;

const MIB: i64 = 1024 * 1024;
// The driver's wire contract, as a StorageClass and a CO spell it.
const PUBLISH_CONTEXT_WWN: &str = "wwn";
const VOLUME_CONTEXT_ENCRYPTED: &str = "encrypted";
const SECRET_ENCRYPTION_PASSPHRASE: &str = "encryptionPassphrase";
const WORKER: &str = "worker-1";
const KUBELET: &str = "/var/lib/kubelet/e2e";

struct Env {
    ctl: ControllerClient<Channel>,
    node: NodeClient<Channel>,
    gsh: PathBuf,
    failed: Vec<String>,
}

/// A volume this scenario made, with where it is staged and published in the guest.
#[derive(Clone)]
struct Vol {
    id: String,
    cap: VolumeCapability,
    ctx: HashMap<String, String>,
    volume_context: HashMap<String, String>,
    staging: String,
    target: String,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run tests/e2e/qemu.sh"))
}

fn mount_cap(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

impl Env {
    /// Runs a shell script in the guest; Ok(output) when it exits 0.
    fn guest(&self, script: &str) -> anyhow::Result<String> {
        let mut child = Command::new(&self.gsh)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        child.stdin.take().unwrap().write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        anyhow::ensure!(out.status.success(), "guest: `{script}` failed: {text}");
        Ok(text)
    }

    async fn step<F, Fut>(&mut self, name: &str, f: F)
    where
        F: FnOnce(Self) -> Fut,
        Fut: Future<Output = (Self, anyhow::Result<()>)>,
    {
        // Steps own the clients while they run; taking them out keeps the borrow simple.
        let me = Env {
            ctl: self.ctl.clone(),
            node: self.node.clone(),
            gsh: self.gsh.clone(),
            failed: vec![],
        };
        let t0 = Instant::now();
        let (_, r) = f(me).await;
        let secs = t0.elapsed().as_secs_f64();
        match r {
            Ok(()) => println!("step {name:<34} ok   {secs:7.2} s"),
            Err(e) => {
                println!("step {name:<34} fail {secs:7.2} s");
                println!("      {e:#}");
                self.failed.push(name.to_string());
            }
        }
    }

    async fn create(
        &mut self,
        name: &str,
        mib: i64,
        cap: VolumeCapability,
        params: &[(&str, &str)],
    ) -> anyhow::Result<Vol> {
        let mut parameters: HashMap<String, String> =
            HashMap::from([("storage".into(), "local-lvm".into())]);
        for (k, v) in params {
            parameters.insert(k.to_string(), v.to_string());
        }
        let v = self
            .ctl
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: mib * MIB,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap.clone()],
                parameters,
                ..Default::default()
            })
            .await?
            .into_inner()
            .volume
            .unwrap_or_default();
        let ctx = self
            .ctl
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                node_id: WORKER.into(),
                volume_capability: Some(cap.clone()),
                ..Default::default()
            })
            .await?
            .into_inner()
            .publish_context;
        let dir = format!("{KUBELET}/{name}");
        self.guest(&format!("mkdir -p {dir}/staging"))?;
        Ok(Vol {
            id: v.volume_id,
            cap,
            ctx,
            volume_context: v.volume_context,
            staging: format!("{dir}/staging"),
            target: format!("{dir}/target"),
        })
    }

    async fn stage(&mut self, v: &Vol, secrets: &[(&str, &str)]) -> Result<(), tonic::Status> {
        self.node
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: v.id.clone(),
                publish_context: v.ctx.clone(),
                staging_target_path: v.staging.clone(),
                volume_capability: Some(v.cap.clone()),
                secrets: secrets
                    .iter()
                    .map(|(k, s)| (k.to_string(), s.to_string()))
                    .collect(),
                volume_context: v.volume_context.clone(),
            })
            .await
            .map(|_| ())
    }

    async fn publish(&mut self, v: &Vol) -> anyhow::Result<()> {
        self.node
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: v.id.clone(),
                publish_context: v.ctx.clone(),
                staging_target_path: v.staging.clone(),
                target_path: v.target.clone(),
                volume_capability: Some(v.cap.clone()),
                volume_context: v.volume_context.clone(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn unmount(&mut self, v: &Vol) -> anyhow::Result<()> {
        self.node
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                target_path: v.target.clone(),
            })
            .await?;
        self.node
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: v.id.clone(),
                staging_target_path: v.staging.clone(),
            })
            .await?;
        Ok(())
    }

    async fn detach_and_delete(&mut self, v: &Vol) -> anyhow::Result<()> {
        self.ctl
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: v.id.clone(),
                node_id: WORKER.into(),
                ..Default::default()
            })
            .await?;
        self.ctl
            .delete_volume(DeleteVolumeRequest {
                volume_id: v.id.clone(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// The by-id link of a volume in the guest, checked to be udev's: `udevadm info` of the
    /// disk lists it, and sysfs reports the same WWN.
    fn udev_link(&self, v: &Vol) -> anyhow::Result<String> {
        let wwn = v
            .ctx
            .get(PUBLISH_CONTEXT_WWN)
            .ok_or_else(|| anyhow::anyhow!("publish_context has no wwn"))?;
        let link = format!("/dev/disk/by-id/wwn-{wwn}");
        // The first disk also brings its controller (a PCI hot-plug the guest takes a moment
        // to process), so wait for the link as the node plugin does.
        let out = self.guest(&format!(
            "for i in $(seq 600); do [ -e {link} ] && break; sleep 0.1; done; \
             udevadm settle; d=$(readlink -f {link}); test -b \"$d\" && echo \"$d\"; \
             udevadm info --query=symlink --name=\"$d\"; cat /sys/class/block/${{d#/dev/}}/device/wwid"
        ))?;
        let mut lines = out.lines();
        let dev = lines.next().unwrap_or_default().to_string();
        let links = lines.next().unwrap_or_default();
        let wwid = lines.next().unwrap_or_default();
        anyhow::ensure!(
            links
                .split(' ')
                .any(|l| l == format!("disk/by-id/wwn-{wwn}")),
            "udev does not list {link} for {dev}: {links}"
        );
        anyhow::ensure!(
            wwid.contains(&wwn.trim_start_matches("0x").to_string()),
            "sysfs wwid of {dev} is {wwid}, not {wwn}"
        );
        Ok(dev)
    }
}

/// Mount id (first field of mountinfo) of what is mounted at `path` in the guest.
fn mount_id(e: &Env, path: &str) -> anyhow::Result<String> {
    let out = e.guest(&format!(
        "awk '$5 == \"{path}\" {{print $1}}' /proc/self/mountinfo"
    ))?;
    anyhow::ensure!(!out.is_empty(), "nothing is mounted at {path}");
    Ok(out.lines().last().unwrap_or_default().to_string())
}

fn fs_bytes(e: &Env, path: &str) -> anyhow::Result<u64> {
    Ok(e.guest(&format!("df -B1 --output=size {path} | tail -1"))?
        .trim()
        .parse()?)
}

/// Stage, publish, write and checksum, grow online (same mount before and after), verify.
async fn filesystem_flow(e: &mut Env, fs: &str) -> anyhow::Result<Vol> {
    let v = e
        .create(&format!("e2e-{fs}"), 300, mount_cap(fs), &[])
        .await?;
    e.udev_link(&v)?;
    e.stage(&v, &[]).await?;
    e.publish(&v).await?;
    let found = e.guest(&format!("findmnt -n -o FSTYPE {}", v.staging))?;
    anyhow::ensure!(found == fs, "staged {found}, wanted {fs}");
    let sum = e.guest(&format!(
        "head -c 32M /dev/urandom > {t}/data && sync && sha256sum < {t}/data",
        t = v.target
    ))?;
    let before = fs_bytes(e, &v.target)?;
    let id_before = mount_id(e, &v.staging)?;
    let grown = e
        .ctl
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: v.id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 600 * MIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(v.cap.clone()),
            ..Default::default()
        })
        .await?
        .into_inner();
    anyhow::ensure!(grown.node_expansion_required, "no node expansion asked");
    e.node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: v.id.clone(),
            volume_path: v.target.clone(),
            staging_target_path: v.staging.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: grown.capacity_bytes,
                limit_bytes: 0,
            }),
            volume_capability: Some(v.cap.clone()),
            ..Default::default()
        })
        .await?;
    let after = fs_bytes(e, &v.target)?;
    anyhow::ensure!(
        after > before + 250 * MIB as u64,
        "{fs} did not grow: {before} -> {after} bytes"
    );
    // Online: the very mount that was there before the grow is still there.
    let id_after = mount_id(e, &v.staging)?;
    anyhow::ensure!(
        id_before == id_after,
        "{fs} was remounted during the grow (mount {id_before} -> {id_after})"
    );
    let again = e.guest(&format!(
        "echo 3 > /proc/sys/vm/drop_caches; sha256sum < {}/data",
        v.target
    ))?;
    anyhow::ensure!(sum == again, "checksum changed: {sum} -> {again}");
    Ok(v)
}

#[tokio::test]
#[ignore = "needs the QEMU guest that tests/e2e/qemu.sh boots"]
async fn qemu_guest_scenario() {
    let ctl = proxmox_csi::csi_client::connect(env("QEMU_E2E_CONTROLLER").as_ref())
        .await
        .expect("controller socket")
        .controller;
    let node = proxmox_csi::csi_client::connect(env("QEMU_E2E_NODE").as_ref())
        .await
        .expect("node socket")
        .node;
    let mut e = Env {
        ctl,
        node,
        gsh: PathBuf::from(env("QEMU_E2E_GSH")),
        failed: vec![],
    };
    e.guest(&format!("mkdir -p {KUBELET}"))
        .expect("guest shell");
    let vols: std::sync::Arc<std::sync::Mutex<HashMap<&str, Vol>>> = Default::default();

    for fs in ["ext4", "xfs"] {
        let vs = vols.clone();
        e.step(
            &format!("{fs}: stage, checksum, grow online"),
            |mut e| async move {
                let r = filesystem_flow(&mut e, fs).await;
                let r = r.map(|v| {
                    vs.lock().unwrap().insert(fs, v);
                });
                (e, r)
            },
        )
        .await;
    }

    e.step(
        "luks2: stage, wrong passphrase refused",
        |mut e| async move {
            let r = async {
                let v = e
                    .create(
                        "e2e-luks",
                        300,
                        mount_cap("ext4"),
                        &[(VOLUME_CONTEXT_ENCRYPTED, "true")],
                    )
                    .await?;
                anyhow::ensure!(
                    v.volume_context
                        .get(VOLUME_CONTEXT_ENCRYPTED)
                        .map(String::as_str)
                        == Some("true"),
                    "volume_context does not say encrypted: {:?}",
                    v.volume_context
                );
                let dev = e.udev_link(&v)?;
                let good = [(SECRET_ENCRYPTION_PASSPHRASE, "e2e-correct-horse-battery")];
                e.stage(&v, &good).await?;
                e.publish(&v).await?;
                let hdr = e.guest(&format!(
                    "cryptsetup luksDump {dev} | sed -n 's/^Version:\\s*//p'"
                ))?;
                anyhow::ensure!(hdr.trim() == "2", "LUKS header version {hdr}, wanted 2");
                let backing = e.guest(&format!("findmnt -n -o SOURCE {}", v.staging))?;
                anyhow::ensure!(
                    backing.starts_with("/dev/mapper/"),
                    "staged from {backing}, not a device-mapper mapping"
                );
                let sum = e.guest(&format!(
                    "head -c 8M /dev/urandom > {t}/data && sync && sha256sum < {t}/data",
                    t = v.target
                ))?;
                e.unmount(&v).await?;
                let left = e.guest("dmsetup ls --target crypt")?;
                anyhow::ensure!(
                    !left.contains(&backing.trim_start_matches("/dev/mapper/").to_string()),
                    "mapping still open after unstage: {left}"
                );
                let bad = [(SECRET_ENCRYPTION_PASSPHRASE, "not-the-passphrase")];
                match e.stage(&v, &bad).await {
                    Ok(()) => anyhow::bail!("a wrong passphrase was accepted"),
                    Err(s) => {
                        println!("      wrong passphrase: {:?}: {}", s.code(), s.message());
                    }
                }
                let mounted = e.guest(&format!("findmnt -n {} || true", v.staging))?;
                anyhow::ensure!(
                    mounted.is_empty(),
                    "mounted after a refused stage: {mounted}"
                );
                e.stage(&v, &good).await?;
                e.publish(&v).await?;
                let again = e.guest(&format!("sha256sum < {}/data", v.target))?;
                anyhow::ensure!(sum == again, "checksum changed: {sum} -> {again}");
                e.unmount(&v).await?;
                e.detach_and_delete(&v).await
            }
            .await;
            (e, r)
        },
    )
    .await;

    e.step("raw block: publish, write, read back", |mut e| async move {
        let r = async {
            let v = e.create("e2e-block", 64, block_cap(), &[]).await?;
            let dev = e.udev_link(&v)?;
            e.stage(&v, &[]).await?;
            e.publish(&v).await?;
            let same = e.guest(&format!(
                "test -b {t} && [ \"$(stat -c %t:%T {t})\" = \"$(stat -c %t:%T {dev})\" ] && echo same",
                t = v.target
            ))?;
            anyhow::ensure!(same == "same", "{} is not the device {dev}", v.target);
            let sums = e.guest(&format!(
                "head -c 4M /dev/urandom > /tmp/blk && dd if=/tmp/blk of={t} bs=1M oflag=direct status=none && \
                 sha256sum < /tmp/blk && dd if={dev} bs=1M count=4 iflag=direct status=none | sha256sum",
                t = v.target
            ))?;
            let mut l = sums.lines();
            anyhow::ensure!(l.next() == l.next(), "read back differs: {sums}");
            e.unmount(&v).await?;
            e.detach_and_delete(&v).await
        }
        .await;
        (e, r)
    })
    .await;

    let ext4 = vols.lock().unwrap().get("ext4").cloned();
    // PVE does not ask the guest: for a disk on a virtio-scsi controller, QEMU completes
    // device_del at once (qemu-server's qemu_devicedelverify finds it gone on its first look),
    // so a ControllerUnpublish that comes too early takes the disk from under its mount. The
    // CO's ordering (NodeUnstage before ControllerUnpublish) is what protects the data; what is
    // asserted here is that PVE really lets it go, and that the node still cleans up after it.
    e.step("unplug while mounted (PVE lets go)", |mut e| async move {
        let r = async {
            let v = ext4.ok_or_else(|| anyhow::anyhow!("the ext4 step left no volume"))?;
            let dev = e.udev_link(&v)?;
            let r = e
                .ctl
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: v.id.clone(),
                    node_id: WORKER.into(),
                    ..Default::default()
                })
                .await;
            let still = e.guest(&format!(
                "for i in $(seq 100); do [ -b {dev} ] || break; sleep 0.1; done; \
                 test -b {dev} && echo present || echo gone"
            ))?;
            println!(
                "      ControllerUnpublish while mounted: {}; guest disk {dev}: {still}",
                match &r {
                    Ok(_) => "OK".to_string(),
                    Err(s) => format!("{:?}: {}", s.code(), s.message()),
                }
            );
            anyhow::ensure!(
                r.is_ok() && still == "gone",
                "expected PVE to unplug the mounted disk (virtio-scsi does not wait for the guest)"
            );
            let mounted = e.guest(&format!("findmnt -n -o SOURCE {} || true", v.staging))?;
            anyhow::ensure!(!mounted.is_empty(), "the stale mount is already gone");
            // The node unmounts the dead filesystem and the target as usual.
            e.unmount(&v).await?;
            let left = e.guest(&format!("grep ' {}' /proc/mounts || true", v.staging))?;
            anyhow::ensure!(left.is_empty(), "still mounted after unstage: {left}");
            e.ctl
                .delete_volume(DeleteVolumeRequest {
                    volume_id: v.id.clone(),
                    ..Default::default()
                })
                .await?;
            Ok(())
        }
        .await;
        (e, r)
    })
    .await;
    vols.lock().unwrap().remove("ext4");

    e.step("cleanup: nothing left in the guest", |mut e| async move {
        let r = async {
            let left: Vec<Vol> = vols.lock().unwrap().values().cloned().collect();
            for v in &left {
                e.unmount(v).await?;
                e.detach_and_delete(v).await?;
            }
            let state = e.guest(&format!(
                "udevadm settle; ls /dev/disk/by-id 2>/dev/null | grep '^wwn-' || true; \
                 grep ' {KUBELET}' /proc/mounts || true; dmsetup ls --target crypt | grep -v 'No devices' || true"
            ))?;
            anyhow::ensure!(state.is_empty(), "left in the guest: {state}");
            Ok(())
        }
        .await;
        (e, r)
    })
    .await;

    assert!(e.failed.is_empty(), "failed steps: {:?}", e.failed);
}
