//! `proxmox-csi sandbox`: the whole driver against the built-in Proxmox VE
//! simulator on this machine. Provisions a volume, hot-plugs it into the
//! simulated VM (a real loop device), formats, mounts, writes and reads back
//! data, then tears everything down and checks nothing was left behind.

pub(crate) mod harness;

use crate::controller::features::{support, Op, Support};
use crate::csi::volume_capability::AccessType;
use crate::csi::*;
use crate::csi_client::CsiClients;
use harness::{check_clean, mount_cap, start_driver, start_sim, worker_topology, TOKEN_ID, WORKER};
use pve_sim::SimConfig;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The simulated cluster's storages beyond the simulator's default three (`local` dir,
/// `shared` dir, `local-lvm` lvmthin): one of each other PVE storage type the driver knows.
const EXTRA_STORAGES: &[(&str, &str, bool)] = &[
    ("local-zfs", "zfspool", false),
    ("ceph", "rbd", true),
    ("san", "lvm", true),
    ("nfs", "nfs", true),
];

/// The simulator layout of the sandbox, and the (id, type) of the storage `want` names (an id
/// or a type); an unknown one is an error listing the choices.
fn sim_layout(data_dir: PathBuf, want: &str) -> anyhow::Result<(SimConfig, String, String)> {
    let mut cfg = SimConfig::default_for(data_dir);
    for (id, kind, shared) in EXTRA_STORAGES {
        cfg.storages.push(pve_sim::StorageConfig {
            id: (*id).into(),
            kind: (*kind).into(),
            shared: *shared,
            ..Default::default()
        });
    }
    // A type names its first storage (`dir` -> `local`).
    let st = cfg
        .storages
        .iter()
        .find(|s| s.id == want)
        .or_else(|| cfg.storages.iter().find(|s| s.kind == want))
        .ok_or_else(|| {
            let known: Vec<String> = cfg
                .storages
                .iter()
                .map(|s| format!("{} ({})", s.id, s.kind))
                .collect();
            anyhow::anyhow!(
                "--storage {want:?}: not a storage id or type of the sandbox; one of {}",
                known.join(", ")
            )
        })?;
    let (id, kind) = (st.id.clone(), st.kind.clone());
    Ok((cfg, id, kind))
}

pub struct SandboxOptions {
    /// Where the simulator keeps disks and the driver its socket; a temp dir when None.
    pub data_dir: Option<PathBuf>,
    /// Size of the demo volume.
    pub size_bytes: u64,
    /// Bytes written through the mounted filesystem and read back.
    pub write_bytes: u64,
    /// Filesystem to format with (ext4 or xfs); None picks one.
    pub fs_type: Option<String>,
    /// Storage id or PVE storage type of the demo volume (see `sim_layout`).
    pub storage: String,
}

struct Progress {
    n: usize,
    total: usize,
}

impl Progress {
    async fn step<T, F>(&mut self, title: &str, f: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        self.n += 1;
        print!("[{:>2}/{}] {title:<72}", self.n, self.total);
        let _ = std::io::stdout().flush();
        let start = Instant::now();
        let r = f.await;
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        match &r {
            Ok(_) => println!(" ok   {ms:>8.1} ms"),
            Err(e) => println!(" FAIL {ms:>8.1} ms\n        {e:#}"),
        }
        r
    }

    fn note(&self, text: &str) {
        println!("        {text}");
    }
}

/// Write `len` bytes of a repeatable pattern, fsync, drop caches' relevance by
/// reading back through a fresh handle, and compare digests.
fn write_and_verify(dir: &Path, len: u64) -> anyhow::Result<String> {
    let path = dir.join("sandbox-data.bin");
    let mut hasher = Sha256::new();
    {
        let mut f = std::fs::File::create(&path)?;
        let mut block = vec![0u8; 1 << 20];
        let mut written = 0u64;
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        while written < len {
            for chunk in block.chunks_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
            }
            let n = (len - written).min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            hasher.update(&block[..n]);
            written += n as u64;
        }
        f.sync_all()?;
    }
    let want = hex::encode(hasher.finalize());
    let mut got = Sha256::new();
    let mut f = std::fs::File::open(&path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.update(&buf[..n]);
    }
    let got = hex::encode(got.finalize());
    anyhow::ensure!(got == want, "read back {got}, wrote {want}");
    Ok(want)
}

pub async fn run(opts: SandboxOptions) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("the sandbox needs root: it attaches loop devices, runs mkfs and mounts (try: sudo proxmox-csi sandbox)");
    }
    let tmp;
    let data_dir = match &opts.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            // Node paths must be absolute.
            std::fs::canonicalize(d)?
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("proxmox-csi-sandbox.")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    println!(
        "proxmox-csi sandbox: driver + Proxmox VE simulator in {}",
        data_dir.display()
    );
    let fs_type = opts
        .fs_type
        .clone()
        .unwrap_or_else(harness::default_fs_type);
    let sim_dir = data_dir.join("sim");
    let (sim_cfg, storage, kind) = sim_layout(sim_dir.clone(), &opts.storage)?;
    // Snapshot and restore run while the volume is mounted: only where the type takes
    // snapshots of an attached volume and restores them (README "Storage types").
    let no_snapshots = [Op::Snapshot, Op::Restore]
        .into_iter()
        .map(|op| (op, support(&kind, "raw", op)))
        .find(|(_, s)| *s != Support::Yes);
    let mut p = Progress {
        n: 0,
        total: if no_snapshots.is_some() {
            19 - SNAPSHOT_STEPS
        } else {
            19
        },
    };

    // 1. Simulator.
    let (sim, base_url) = p
        .step(
            "start Proxmox VE simulator (cluster sim, nodes pve1+pve2)",
            start_sim(sim_cfg),
        )
        .await?;
    p.note(&format!("API at {base_url}, token {TOKEN_ID}"));

    // 2. Driver.
    let socket = data_dir.join("csi.sock");
    let mut c: CsiClients = p
        .step(
            "start driver (controller + node as VM worker-1)",
            start_driver(&sim, &base_url, &socket, &data_dir),
        )
        .await?;

    let info = p
        .step("Probe + GetPluginInfo", async {
            let ready = c.identity.probe(ProbeRequest {}).await?.into_inner().ready;
            anyhow::ensure!(ready == Some(true), "probe not ready");
            Ok(c.identity
                .get_plugin_info(GetPluginInfoRequest {})
                .await?
                .into_inner())
        })
        .await?;
    p.note(&format!("{} {}", info.name, info.vendor_version));

    let cap = mount_cap(&fs_type);
    let volume = p
        .step(
            &format!(
                "CreateVolume {} MiB on {kind} storage '{storage}'",
                opts.size_bytes >> 20
            ),
            async {
                let topo = worker_topology();
                let req = CreateVolumeRequest {
                    name: "sandbox-volume".into(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: opts.size_bytes as i64,
                        limit_bytes: 0,
                    }),
                    volume_capabilities: vec![cap.clone()],
                    parameters: HashMap::from([("storage".into(), storage.clone())]),
                    accessibility_requirements: Some(TopologyRequirement {
                        requisite: vec![topo.clone()],
                        preferred: vec![topo],
                    }),
                    ..Default::default()
                };
                Ok(c.controller
                    .create_volume(req)
                    .await?
                    .into_inner()
                    .volume
                    .unwrap_or_default())
            },
        )
        .await?;
    p.note(&format!(
        "volume_id {} ({} bytes)",
        volume.volume_id, volume.capacity_bytes
    ));
    let vid = volume.volume_id.clone();

    let device_dir = sim.guest_by_id_dir(harness::WORKER_VMID);
    if let Some((op, s)) = no_snapshots {
        let why = match s {
            Support::Detached => format!("{kind} can {} only a detached volume", op.label()),
            Support::No(missing) => format!("{kind} cannot {}: PVE has no {missing}", op.label()),
            Support::Yes => unreachable!("only a missing feature skips"),
        };
        p.note(&format!("snapshot and restore steps skipped: {why}"));
    }
    let snapshots = no_snapshots.is_none().then_some(storage.as_str());
    let result = lifecycle(
        &mut p,
        &mut c,
        &vid,
        &cap,
        &data_dir,
        &device_dir,
        &opts,
        snapshots,
    )
    .await;

    // Tear-down runs whatever happened above, so a failed demo leaves nothing
    // behind. The simulator is the sandbox's own, so all in it may go.
    for dir in [data_dir.clone(), data_dir.join("restored")] {
        let staging = dir.join("staging");
        let target = dir.join("target");
        for v in c
            .controller
            .list_volumes(ListVolumesRequest::default())
            .await
            .map(|r| r.into_inner().entries)
            .unwrap_or_default()
        {
            let Some(v) = v.volume else { continue };
            let _ = unmount_from_worker(&mut c, &v.volume_id, &staging, &target).await;
        }
    }
    for s in c
        .controller
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .map(|r| r.into_inner().entries)
        .unwrap_or_default()
    {
        if let Some(s) = s.snapshot {
            let _ = c
                .controller
                .delete_snapshot(DeleteSnapshotRequest {
                    snapshot_id: s.snapshot_id,
                    secrets: Default::default(),
                })
                .await;
        }
    }
    p.step(
        "ControllerUnpublishVolume (hot-unplug from worker-1)",
        async {
            c.controller
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: vid.clone(),
                    node_id: WORKER.into(),
                    secrets: Default::default(),
                })
                .await?;
            Ok(())
        },
    )
    .await?;
    p.step("DeleteVolume", async {
        c.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: vid.clone(),
                secrets: Default::default(),
            })
            .await?;
        Ok(())
    })
    .await?;
    p.step(
        "check: no volume, loop device or mount left",
        check_clean(&mut c, &data_dir),
    )
    .await?;
    sim.detach_all();
    result?;
    println!("sandbox finished: every step passed");
    Ok(())
}

/// The part between create and delete; errors here still get cleaned up.
/// Stage and publish a volume on worker-1; returns its target path.
async fn mount_on_worker(
    p: &mut Progress,
    c: &mut CsiClients,
    vid: &str,
    cap: &VolumeCapability,
    dir: &Path,
    what: &str,
) -> anyhow::Result<(HashMap<String, String>, PathBuf, PathBuf)> {
    let ctx = p
        .step(
            &format!("ControllerPublishVolume {what}(hot-plug into worker-1)"),
            async {
                let req = ControllerPublishVolumeRequest {
                    volume_id: vid.into(),
                    node_id: WORKER.into(),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                };
                Ok(c.controller
                    .controller_publish_volume(req)
                    .await?
                    .into_inner()
                    .publish_context)
            },
        )
        .await?;
    p.note(&format!("publish_context {ctx:?}"));
    let staging = dir.join("staging");
    let target = dir.join("target");
    let fs = match &cap.access_type {
        Some(AccessType::Mount(m)) => m.fs_type.clone(),
        _ => String::new(),
    };
    p.step(
        &format!("NodeStage + NodePublish {what}(wwn lookup, mkfs.{fs} if blank)"),
        async { stage_and_publish(c, vid, cap, &ctx, &staging, &target).await },
    )
    .await?;
    Ok((ctx, staging, target))
}

async fn unmount_from_worker(
    c: &mut CsiClients,
    vid: &str,
    staging: &Path,
    target: &Path,
) -> anyhow::Result<()> {
    c.node
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: vid.into(),
            target_path: target.to_string_lossy().into(),
        })
        .await?;
    c.node
        .node_unstage_volume(NodeUnstageVolumeRequest {
            volume_id: vid.into(),
            staging_target_path: staging.to_string_lossy().into(),
        })
        .await?;
    anyhow::ensure!(!target.exists(), "target {} still exists", target.display());
    Ok(())
}

/// This host refused to grow the mounted ext4 (no CAP_SYS_RESOURCE): say so,
/// unmount, check and grow the filesystem on the device, mount it again.
async fn grow_ext4_offline(
    c: &mut CsiClients,
    vid: &str,
    cap: &VolumeCapability,
    ctx: &HashMap<String, String>,
    staging: &Path,
    target: &Path,
    device_dir: &Path,
) -> anyhow::Result<()> {
    unmount_from_worker(c, vid, staging, target).await?;
    let wwn = ctx
        .get(crate::contract::PUBLISH_CONTEXT_WWN)
        .ok_or_else(|| anyhow::anyhow!("publish_context has no wwn"))?;
    let device = std::fs::canonicalize(device_dir.join(format!("wwn-{wwn}")))?;
    for (tool, args) in [("e2fsck", vec!["-f", "-y"]), ("resize2fs", vec![])] {
        let out = tokio::process::Command::new(tool)
            .args(&args)
            .arg(&device)
            .output()
            .await?;
        // e2fsck exits 1 when it fixed something, which is fine here.
        let ok = out.status.success() || (tool == "e2fsck" && out.status.code() == Some(1));
        anyhow::ensure!(
            ok,
            "{tool} {}: {}",
            device.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    stage_and_publish(c, vid, cap, ctx, staging, target).await
}

/// NodeStageVolume then NodePublishVolume, as kubelet calls them.
async fn stage_and_publish(
    c: &mut CsiClients,
    vid: &str,
    cap: &VolumeCapability,
    ctx: &HashMap<String, String>,
    staging: &Path,
    target: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(staging)?;
    let req = NodeStageVolumeRequest {
        volume_id: vid.into(),
        publish_context: ctx.clone(),
        staging_target_path: staging.to_string_lossy().into(),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    };
    c.node.node_stage_volume(req).await?;
    let req = NodePublishVolumeRequest {
        volume_id: vid.into(),
        publish_context: ctx.clone(),
        staging_target_path: staging.to_string_lossy().into(),
        target_path: target.to_string_lossy().into(),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    };
    c.node.node_publish_volume(req).await?;
    Ok(())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

async fn bytes_total(c: &mut CsiClients, vid: &str, target: &Path) -> anyhow::Result<VolumeUsage> {
    let r = c
        .node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: vid.into(),
            volume_path: target.to_string_lossy().into(),
            staging_target_path: String::new(),
        })
        .await?
        .into_inner();
    Ok(r.usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Bytes as i32)
        .cloned()
        .unwrap_or_default())
}

/// The part between create and delete; errors here still get cleaned up.
/// Steps of the snapshot and restore part of the lifecycle.
const SNAPSHOT_STEPS: usize = 6;

/// The demo on the mounted volume; the snapshot and restore steps (SNAPSHOT_STEPS of them)
/// only with `snapshots` = the storage to restore to.
#[allow(clippy::too_many_arguments)]
async fn lifecycle(
    p: &mut Progress,
    c: &mut CsiClients,
    vid: &str,
    cap: &VolumeCapability,
    data_dir: &Path,
    device_dir: &Path,
    opts: &SandboxOptions,
    snapshots: Option<&str>,
) -> anyhow::Result<()> {
    let (ctx, staging, target) = mount_on_worker(p, c, vid, cap, data_dir, "").await?;
    let digest = p
        .step(
            &format!(
                "write {} MiB through the mount, fsync, read back",
                opts.write_bytes >> 20
            ),
            async {
                let t = target.clone();
                let n = opts.write_bytes;
                tokio::task::spawn_blocking(move || write_and_verify(&t, n)).await?
            },
        )
        .await?;
    p.note(&format!("sha256 {digest}"));
    let usage = p
        .step("NodeGetVolumeStats", async {
            let bytes = bytes_total(c, vid, &target).await?;
            anyhow::ensure!(
                bytes.used as u64 >= opts.write_bytes,
                "used {} < written {}",
                bytes.used,
                opts.write_bytes
            );
            Ok(bytes)
        })
        .await?;
    p.note(&format!(
        "used {} MiB of {} MiB",
        usage.used >> 20,
        usage.total >> 20
    ));

    let snapshot = match snapshots {
        None => None,
        Some(_) => Some(
            p.step(
                "CreateSnapshot (storage snapshot via the holder VM)",
                async {
                    let req = CreateSnapshotRequest {
                        source_volume_id: vid.into(),
                        name: "sandbox-snapshot".into(),
                        ..Default::default()
                    };
                    Ok(c.controller
                        .create_snapshot(req)
                        .await?
                        .into_inner()
                        .snapshot
                        .unwrap_or_default())
                },
            )
            .await?,
        ),
    };
    if let Some(s) = &snapshot {
        p.note(&format!("snapshot_id {}", s.snapshot_id));
    }

    let grown = opts.size_bytes * 2;
    let after = p
        .step(
            &format!(
                "ControllerExpandVolume + NodeExpandVolume to {} MiB (online)",
                grown >> 20
            ),
            async {
                let req = ControllerExpandVolumeRequest {
                    volume_id: vid.into(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: grown as i64,
                        limit_bytes: 0,
                    }),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                };
                let r = c
                    .controller
                    .controller_expand_volume(req)
                    .await?
                    .into_inner();
                anyhow::ensure!(
                    r.capacity_bytes as u64 == grown,
                    "controller reports {} bytes",
                    r.capacity_bytes
                );
                let req = NodeExpandVolumeRequest {
                    volume_id: vid.into(),
                    volume_path: target.to_string_lossy().into(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: grown as i64,
                        limit_bytes: 0,
                    }),
                    staging_target_path: staging.to_string_lossy().into(),
                    volume_capability: Some(cap.clone()),
                    ..Default::default()
                };
                let mut offline = false;
                if let Err(e) = c.node.node_expand_volume(req).await {
                    // ext4 grows online only for holders of CAP_SYS_RESOURCE; where
                    // the host withholds it, grow it the way an admin would: offline.
                    if !e.message().contains("CAP_SYS_RESOURCE") {
                        return Err(e.into());
                    }
                    grow_ext4_offline(c, vid, cap, &ctx, &staging, &target, device_dir).await?;
                    offline = true;
                }
                let after = bytes_total(c, vid, &target).await?;
                anyhow::ensure!(
                    after.total > usage.total + (opts.size_bytes as i64) / 2,
                    "filesystem is {} bytes after expansion",
                    after.total
                );
                Ok((after, offline))
            },
        )
        .await?;
    let (after, offline) = after;
    if offline {
        p.note("this host refuses to grow a mounted ext4 (no CAP_SYS_RESOURCE): unmounted, grown with e2fsck + resize2fs, mounted again");
    }
    p.note(&format!("filesystem now {} MiB", after.total >> 20));
    if let (Some(snapshot), Some(storage)) = (snapshot, snapshots) {
        restore(p, c, cap, data_dir, opts, &snapshot, storage, &digest).await?;
    }
    p.step(
        "NodeUnpublishVolume + NodeUnstageVolume",
        unmount_from_worker(c, vid, &staging, &target),
    )
    .await?;
    Ok(())
}

/// CreateVolume from the snapshot, mount it, compare the data, remove both.
#[allow(clippy::too_many_arguments)]
async fn restore(
    p: &mut Progress,
    c: &mut CsiClients,
    cap: &VolumeCapability,
    data_dir: &Path,
    opts: &SandboxOptions,
    snapshot: &Snapshot,
    storage: &str,
    digest: &str,
) -> anyhow::Result<()> {
    let restore_dir = data_dir.join("restored");
    let restored = p
        .step(
            "CreateVolume from the snapshot (full clone of the holder)",
            async {
                let req = CreateVolumeRequest {
                    name: "sandbox-restored".into(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: opts.size_bytes as i64,
                        limit_bytes: 0,
                    }),
                    volume_capabilities: vec![cap.clone()],
                    parameters: HashMap::from([("storage".into(), storage.into())]),
                    volume_content_source: Some(VolumeContentSource {
                        r#type: Some(volume_content_source::Type::Snapshot(
                            volume_content_source::SnapshotSource {
                                snapshot_id: snapshot.snapshot_id.clone(),
                            },
                        )),
                    }),
                    ..Default::default()
                };
                Ok(c.controller
                    .create_volume(req)
                    .await?
                    .into_inner()
                    .volume
                    .unwrap_or_default())
            },
        )
        .await?;
    let rid = restored.volume_id.clone();
    p.note(&format!("volume_id {rid}"));
    let (_, rstaging, rtarget) =
        mount_on_worker(p, c, &rid, cap, &restore_dir, "of the restore ").await?;
    let check = p
        .step(
            "restored data equals what was written before the snapshot",
            async {
                let f = rtarget.join("sandbox-data.bin");
                let got = tokio::task::spawn_blocking(move || sha256_file(&f)).await??;
                anyhow::ensure!(got == digest, "restored file has sha256 {got}");
                Ok(())
            },
        )
        .await;
    let cleanup = p
        .step("remove the restore and the snapshot", async {
            unmount_from_worker(c, &rid, &rstaging, &rtarget).await?;
            c.controller
                .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                    volume_id: rid.clone(),
                    node_id: WORKER.into(),
                    secrets: Default::default(),
                })
                .await?;
            c.controller
                .delete_volume(DeleteVolumeRequest {
                    volume_id: rid.clone(),
                    secrets: Default::default(),
                })
                .await?;
            c.controller
                .delete_snapshot(DeleteSnapshotRequest {
                    snapshot_id: snapshot.snapshot_id.clone(),
                    secrets: Default::default(),
                })
                .await?;
            Ok(())
        })
        .await;
    check?;
    cleanup?;
    Ok(())
}
