//! `proxmox-csi bench`: the driver's own latency and throughput against the
//! built-in Proxmox VE simulator. N volumes, P at a time, each taken through
//! the full CSI lifecycle over the real gRPC client on a unix socket; every
//! call is timed and failures are counted. Set-up is the sandbox's.

mod lifecycle;
pub mod report;

use crate::controller::ControllerOptions;
use crate::csi::{
    ControllerUnpublishVolumeRequest, DeleteSnapshotRequest, DeleteVolumeRequest,
    ListSnapshotsRequest, ListVolumesRequest,
};
use crate::csi_client::CsiClients;
use crate::sandbox::harness::{
    check_clean, default_fs_type, mount_cap, start_driver, start_sim, WORKER,
};
use lifecycle::{Clients, Plan, Volume};
use pve_sim::{HotplugMode, SimConfig};
use report::{Report, RunInfo};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Volumes taken through the whole lifecycle.
    #[arg(long, default_value_t = 20)]
    pub volumes: usize,
    /// Volumes in flight at once. At most 24: every volume attaches to
    /// worker-1 and the controller allows 24 attached volumes per VM.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Simulator storage: local-lvm (thin LVM, with snapshots), local or shared (dir).
    #[arg(long, default_value = "local-lvm")]
    pub storage: String,
    /// Filesystem [default: xfs when mkfs.xfs is installed, else ext4].
    #[arg(long, value_parser = ["ext4", "xfs"])]
    pub fs_type: Option<String>,
    /// Size of each volume in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Latency the simulator adds to every PVE task, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub sim_task_ms: u64,
    /// Controller calls only: no stage/publish, no loop devices, no root needed.
    #[arg(long)]
    pub controller_only: bool,
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// Run the benchmark, print the report on stdout (progress goes to stderr)
/// and return the exit code: 1 if any call failed or anything was left behind.
pub async fn main(args: BenchArgs) -> anyhow::Result<i32> {
    let report = run(&args).await?;
    let text = if args.output == "json" {
        serde_json::to_string_pretty(&report.to_json())? + "\n"
    } else {
        report.to_text()
    };
    // A closed pipe (`bench | head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(report.exit_code())
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.volumes > 0 && args.parallel > 0,
        "--volumes and --parallel must be at least 1"
    );
    if !args.controller_only && !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("bench needs root for the node calls (loop devices, mkfs, mount): run it as root, or with --controller-only");
    }
    let max = ControllerOptions::default().max_volumes_per_vm as usize;
    if args.parallel > max {
        eprintln!("--parallel {} clamped to {max}: every volume attaches to worker-1, and the controller allows {max} attached volumes per VM", args.parallel);
    }
    let parallel = args.parallel.min(max).min(args.volumes);

    let tmp = tempfile::Builder::new()
        .prefix("proxmox-csi-bench.")
        .tempdir()?;
    let data_dir = tmp.path().to_path_buf();
    let mut cfg = SimConfig::default_for(data_dir.join("sim"));
    cfg.task_ms = args.sim_task_ms;
    if args.controller_only {
        cfg.hotplug = HotplugMode::None;
    }
    let Some(kind) = cfg.storage(&args.storage).map(|s| s.kind.clone()) else {
        let known: Vec<&str> = cfg.storages.iter().map(|s| s.id.as_str()).collect();
        anyhow::bail!(
            "the simulator has no storage '{}' (it has {})",
            args.storage,
            known.join(", ")
        );
    };
    let fs_type = args.fs_type.clone().unwrap_or_else(default_fs_type);
    let info = RunInfo {
        volumes: args.volumes,
        parallel,
        storage: args.storage.clone(),
        fs_type: (!args.controller_only).then(|| fs_type.clone()),
        size_mib: args.size_mib,
        sim_task_ms: args.sim_task_ms,
        snapshots: kind == "lvmthin",
    };
    let plan = Arc::new(Plan {
        storage: args.storage.clone(),
        size_bytes: args.size_mib << 20,
        cap: mount_cap(&fs_type),
        node_ops: !args.controller_only,
        snapshots: info.snapshots,
        dir: data_dir.join("volumes"),
    });

    let (sim, base_url) = start_sim(cfg).await?;
    // The volumes' staging and target paths live below data_dir, which
    // stands in for the kubelet directory.
    let mut c = start_driver(&sim, &base_url, &data_dir.join("csi.sock"), &data_dir).await?;
    eprintln!(
        "proxmox-csi bench: simulator at {base_url}, driver on {}; {} volumes, {parallel} at a time",
        data_dir.join("csi.sock").display(),
        args.volumes
    );
    let mut report = Report::new(info);
    let leftovers = measure(&mut report, &c, &plan, parallel).await;
    report.cleanup = clean_up(&mut c, leftovers, &data_dir)
        .await
        .map_err(|e| format!("{e:#}"));
    sim.detach_all();
    Ok(report)
}

/// All volumes through `parallel` workers; fills the report, returns the
/// volumes whose tear-down failed.
async fn measure(
    report: &mut Report,
    c: &CsiClients,
    plan: &Arc<Plan>,
    parallel: usize,
) -> Vec<Volume> {
    let total = report.info.volumes;
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let (mut clients, plan, next, done) =
            (Clients::new(c), plan.clone(), next.clone(), done.clone());
        workers.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return out;
                }
                let name = format!("bench-{:04}", i + 1);
                let t = Instant::now();
                let (samples, leftover) = lifecycle::run(&mut clients, &plan, &name).await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                match samples
                    .iter()
                    .find_map(|s| s.error.as_ref().map(|e| (s.op, e)))
                {
                    None => eprintln!("[{n:>4}/{total}] {name} ok   {ms:>9.1} ms"),
                    Some((op, e)) => eprintln!(
                        "[{n:>4}/{total}] {name} FAIL {ms:>9.1} ms  {}: {e}",
                        op.name()
                    ),
                }
                out.push((samples, leftover));
            }
        });
    }
    let mut leftovers = Vec::new();
    while let Some(r) = workers.join_next().await {
        // A panicking worker would lose its volumes' figures; make that loud.
        let r = r.expect("bench worker panicked");
        for (samples, leftover) in r {
            if samples.iter().all(|s| s.error.is_none()) {
                report.volumes_ok += 1;
            }
            samples.iter().for_each(|s| report.add(s));
            leftovers.extend(leftover);
        }
    }
    report.wall_seconds = start.elapsed().as_secs_f64();
    leftovers
}

/// Second pass, not measured: delete the snapshots still listed (a failed
/// CreateSnapshot may have made one the run never learned of), try the failed
/// tear-downs again, then detach and delete any volume still listed (a failed
/// CreateVolume may have made one the run never learned of); then check that
/// no volume, snapshot, loop device or mount is left. Ok says what the second
/// pass had to do.
async fn clean_up(
    c: &mut CsiClients,
    leftovers: Vec<Volume>,
    data_dir: &Path,
) -> anyhow::Result<String> {
    let snaps = c
        .controller
        .list_snapshots(ListSnapshotsRequest::default())
        .await?
        .into_inner()
        .entries;
    for s in snaps.iter().filter_map(|e| e.snapshot.as_ref()) {
        let req = DeleteSnapshotRequest {
            snapshot_id: s.snapshot_id.clone(),
            secrets: Default::default(),
        };
        let _ = c.controller.delete_snapshot(req).await;
    }
    let mut clients = Clients::new(c);
    for v in &leftovers {
        lifecycle::teardown(&mut clients, v, &mut Vec::new()).await;
    }
    let strays = c
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await?
        .into_inner()
        .entries;
    for v in strays.iter().filter_map(|e| e.volume.as_ref()) {
        let req = ControllerUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: WORKER.into(),
            secrets: Default::default(),
        };
        let _ = c.controller.controller_unpublish_volume(req).await;
        let _ = c
            .controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: v.volume_id.clone(),
                secrets: Default::default(),
            })
            .await;
    }
    let left = c
        .controller
        .list_snapshots(ListSnapshotsRequest::default())
        .await?
        .into_inner()
        .entries
        .len();
    anyhow::ensure!(left == 0, "{left} snapshots still listed");
    check_clean(c, data_dir).await?;
    Ok(match (snaps.len(), leftovers.len(), strays.len()) {
        (0, 0, 0) => "ok (no volume, snapshot, loop device or mount left)".into(),
        (s, v, d) => format!(
            "ok after a second pass ({s} stray snapshots deleted, tear-down of {v} volumes retried, {d} stray volumes deleted): no volume, snapshot, loop device or mount left"
        ),
    })
}
