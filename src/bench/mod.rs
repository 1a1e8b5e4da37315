//! `proxmox-csi bench`: the driver's own latency and throughput against the
//! built-in Proxmox VE simulator. N volumes, P at a time, each taken through
//! the full CSI lifecycle over the real gRPC client on a unix socket; every
//! call is timed and failures are counted. Set-up is the sandbox's.
//!
//! At scale: `--existing` volumes and `--workers` VMs are in the cluster before
//! anything is timed, and the simulator's latency model (request latency, API
//! workers, task durations) is switched on only after they are made. What each
//! call costs PVE (requests, response bytes) is counted on the simulator when
//! one call runs at a time. After the lifecycle, a page or two of each List
//! call and a phase of parallel CreateVolume calls.

mod lifecycle;
mod populate;
mod probes;
pub mod report;

use crate::controller::ControllerOptions;
use crate::csi::{
    ControllerUnpublishVolumeRequest, DeleteSnapshotRequest, DeleteVolumeRequest,
    ListSnapshotsRequest, ListVolumesRequest,
};
use crate::csi_client::CsiClients;
use crate::sandbox::harness::{
    check_clean, default_fs_type, mount_cap, start_driver, start_sim, WORKER, WORKER_VMID,
};
use lifecycle::{Clients, Plan, Volume};
use pve_sim::{parse_task_type_ms, HotplugMode, LatencyModel, SimConfig};
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
    /// Volumes in flight at once. At most 24 per worker VM they attach to
    /// (the controller allows 24 attached volumes per VM). PVE requests per
    /// call are counted only with 1.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Volumes already in the cluster before anything is timed (made through
    /// the driver, 8 at a time, with the latency model off).
    #[arg(long, default_value_t = 0)]
    pub existing: usize,
    /// Worker VMs in the cluster (worker-1 .. worker-W). With --controller-only
    /// the publishes go round them; with node calls they all go to worker-1,
    /// the VM the node plugin runs as.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// CreateVolume calls of the parallel-create phase (0: none).
    #[arg(long, default_value_t = 16)]
    pub burst_creates: usize,
    /// CreateVolume calls in flight at once in that phase.
    #[arg(long, default_value_t = 8)]
    pub burst_parallel: usize,
    /// Simulator storage: local-lvm (thin LVM, with snapshots), local or shared (dir).
    #[arg(long, default_value = "local-lvm")]
    pub storage: String,
    /// Filesystem [default: xfs when mkfs.xfs is installed, else ext4].
    #[arg(long, value_parser = ["ext4", "xfs"])]
    pub fs_type: Option<String>,
    /// Size of each volume in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Latency model: how long every PVE task runs, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub sim_task_ms: u64,
    /// Latency model: how long PVE tasks of one type run, `TYPE=MS`
    /// (`qmcreate`, `qmclone`, `qmdestroy`, `qmconfig`, `qmsnapshot`, `resize`, ...);
    /// repeatable, wins over --sim-task-ms for that type.
    #[arg(long, value_name = "TYPE=MS", value_parser = parse_task_type_ms)]
    pub sim_task_type_ms: Vec<(String, u64)>,
    /// Latency model: time every PVE API request spends in service, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub sim_request_ms: u64,
    /// Latency model: at most this many PVE API requests in service at once
    /// (pveproxy's default: 3 workers); 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub sim_max_workers: usize,
    /// Controller calls only: no stage/publish, no loop devices, no root needed.
    #[arg(long)]
    pub controller_only: bool,
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// Parallelism of making and removing the existing volumes.
const POPULATE_PARALLEL: usize = 8;

/// The name of worker VM `i` (0-based) and its vmid.
fn worker(i: usize) -> (String, u32) {
    (format!("worker-{}", i + 1), WORKER_VMID + i as u32)
}

/// Worker VMs worker-1 .. worker-`n`, all on worker-1's node (the run's
/// volumes are made there, on a node-local storage), alike but for name, vmid
/// and MAC.
fn add_workers(cfg: &mut SimConfig, n: usize) -> anyhow::Result<()> {
    let Some(first) = cfg.vms.iter().find(|v| v.vmid == WORKER_VMID).cloned() else {
        anyhow::bail!("the simulator's default layout has no VM {WORKER_VMID}");
    };
    cfg.vms
        .retain(|v| v.vmid != WORKER_VMID && !v.name.starts_with("worker-"));
    for i in 0..n {
        let (name, vmid) = worker(i);
        let mut vm = first.clone();
        vm.vmid = vmid;
        vm.name = name.clone();
        vm.config.insert("name".into(), name);
        for v in vm.config.values_mut() {
            *v = v.replace(
                &format!("{WORKER_VMID}/vm-{WORKER_VMID}-"),
                &format!("{vmid}/vm-{vmid}-"),
            );
        }
        vm.config.insert(
            "net0".into(),
            format!(
                "virtio=BC:24:11:00:{:02X}:{:02X},bridge=vmbr0",
                vmid / 256 % 256,
                vmid % 256
            ),
        );
        cfg.vms.push(vm);
    }
    Ok(())
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
        args.volumes > 0 && args.parallel > 0 && args.workers > 0,
        "--volumes, --parallel and --workers must be at least 1"
    );
    anyhow::ensure!(
        args.burst_parallel > 0,
        "--burst-parallel must be at least 1"
    );
    if !args.controller_only && !nix::unistd::Uid::effective().is_root() {
        anyhow::bail!("bench needs root for the node calls (loop devices, mkfs, mount): run it as root, or with --controller-only");
    }
    // Publishes go round the workers only when there is no node plugin to follow them.
    let targets = if args.controller_only {
        args.workers
    } else {
        1
    };
    let max = ControllerOptions::default().max_volumes_per_vm as usize * targets;
    if args.parallel > max {
        let to = if targets == 1 {
            "every volume attaches to worker-1".to_string()
        } else {
            format!("the volumes attach to {targets} workers")
        };
        eprintln!("--parallel {} clamped to {max}: {to}, and the controller allows {} attached volumes per VM", args.parallel, max / targets);
    }
    let parallel = args.parallel.min(max).min(args.volumes);

    let tmp = tempfile::Builder::new()
        .prefix("proxmox-csi-bench.")
        .tempdir()?;
    let data_dir = tmp.path().to_path_buf();
    let mut cfg = SimConfig::default_for(data_dir.join("sim"));
    add_workers(&mut cfg, args.workers)?;
    // Off while the cluster is populated; on from the first timed call.
    let model = LatencyModel {
        request_ms: args.sim_request_ms,
        max_workers: args.sim_max_workers,
        task_ms: args.sim_task_ms,
        task_type_ms: args.sim_task_type_ms.iter().cloned().collect(),
    };
    if args.controller_only {
        cfg.hotplug = HotplugMode::None;
    }
    // Room for every volume of the run (the default 100 GiB holds 100 of 1 GiB).
    let all = (args.existing + args.burst_creates + args.volumes) as u64;
    let room = all * ((args.size_mib + 64) << 20);
    for st in cfg.storages.iter_mut() {
        st.capacity = st.capacity.max(2 * room);
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
        existing: args.existing,
        workers: args.workers,
        sim_request_ms: args.sim_request_ms,
        sim_max_workers: args.sim_max_workers,
        sim_task_type_ms: model.task_type_ms.clone(),
        counted: parallel == 1,
    };
    let mut plan = Plan {
        storage: args.storage.clone(),
        size_bytes: args.size_mib << 20,
        cap: mount_cap(&fs_type),
        node_ops: !args.controller_only,
        snapshots: info.snapshots,
        dir: data_dir.join("volumes"),
        expand_bytes: (args.size_mib + 64) << 20,
        meter: None,
    };

    let (sim, base_url) = start_sim(cfg).await?;
    plan.meter = Some(sim.clone());
    // The volumes' staging and target paths live below data_dir, which
    // stands in for the kubelet directory.
    let mut c = start_driver(&sim, &base_url, &data_dir.join("csi.sock"), &data_dir).await?;
    eprintln!(
        "proxmox-csi bench: simulator at {base_url}, driver on {}; {} volumes, {parallel} at a time",
        data_dir.join("csi.sock").display(),
        args.volumes
    );
    let mut report = Report::new(info);
    let t = Instant::now();
    let existing = populate(&c, &plan, args.existing).await?;
    report.populate_seconds = t.elapsed().as_secs_f64();

    sim.set_latency(model);
    // Counted per call only when calls do not overlap.
    let counted = Arc::new(Plan {
        meter: plan.meter.clone().filter(|_| parallel == 1),
        ..plan.clone()
    });
    let leftovers = measure(&mut report, &c, &counted, parallel, targets).await;
    let mut s = Vec::new();
    probes::list_pages(&mut Clients::new(&c), &plan, &mut s).await;
    s.iter().for_each(|x| report.add(x));
    let made = burst(&mut report, &c, &plan, args).await;
    sim.set_latency(LatencyModel::default());

    let failed = remove(&c, existing.into_iter().chain(made).collect()).await;
    report.cleanup = clean_up(&mut c, &plan, leftovers, &data_dir)
        .await
        .map(|how| match failed {
            0 => how,
            n => format!("{how} ({n} DeleteVolume calls of existing or parallel-created volumes failed and were retried)"),
        })
        .map_err(|e| format!("{e:#}"));
    sim.detach_all();
    Ok(report)
}

/// Makes `n` volumes (bench-existing-NNNN) with the latency model off;
/// their ids. Any failure ends the run: a cluster short of volumes would
/// measure something else.
async fn populate(c: &CsiClients, plan: &Plan, n: usize) -> anyhow::Result<Vec<String>> {
    if n == 0 {
        return Ok(vec![]);
    }
    eprintln!("proxmox-csi bench: making {n} existing volumes, {POPULATE_PARALLEL} at a time");
    let names = (1..=n).map(|i| format!("bench-existing-{i:04}")).collect();
    let plan = Arc::new(Plan {
        meter: None,
        ..plan.clone()
    });
    let (ids, samples) =
        populate::create_many(&Clients::new(c), &plan, names, POPULATE_PARALLEL).await;
    if let Some(e) = samples.iter().find_map(|s| s.error.as_ref()) {
        // Remove what was made before giving up.
        remove(c, ids).await;
        anyhow::bail!("making the existing volumes failed: CreateVolume: {e}");
    }
    Ok(ids)
}

/// The parallel-create phase: `--burst-creates` CreateVolume calls,
/// `--burst-parallel` at a time, under the latency model. The ids made.
async fn burst(report: &mut Report, c: &CsiClients, plan: &Plan, args: &BenchArgs) -> Vec<String> {
    let n = args.burst_creates;
    report.burst.creates = n;
    report.burst.parallel = args.burst_parallel.min(n);
    if n == 0 {
        return vec![];
    }
    let names = (1..=n).map(|i| format!("bench-burst-{i:04}")).collect();
    let plan = Arc::new(Plan {
        meter: None,
        ..plan.clone()
    });
    let t = Instant::now();
    let (ids, samples) =
        populate::create_many(&Clients::new(c), &plan, names, args.burst_parallel).await;
    report.burst.wall_seconds = t.elapsed().as_secs_f64();
    samples.iter().for_each(|s| report.add_burst(s));
    eprintln!(
        "proxmox-csi bench: {n} parallel creates in {:.2} s",
        report.burst.wall_seconds
    );
    ids
}

/// Deletes `ids`, several at a time (latency model off); how many calls failed.
/// A volume whose delete failed is still listed and the clean-up tries again.
async fn remove(c: &CsiClients, ids: Vec<String>) -> usize {
    populate::delete_many(&Clients::new(c), ids, POPULATE_PARALLEL)
        .await
        .iter()
        .filter(|s| s.error.is_some())
        .count()
}

/// All volumes through `parallel` workers; fills the report, returns the
/// volumes whose tear-down failed.
async fn measure(
    report: &mut Report,
    c: &CsiClients,
    plan: &Arc<Plan>,
    parallel: usize,
    targets: usize,
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
                let (node_id, _) = worker(i % targets);
                let t = Instant::now();
                let (samples, leftover) =
                    lifecycle::run(&mut clients, &plan, &name, &node_id).await;
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
    plan: &Plan,
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
        lifecycle::teardown(&mut clients, plan, v, &mut Vec::new()).await;
    }
    let strays = c
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await?
        .into_inner()
        .entries;
    for e in &strays {
        let Some(v) = &e.volume else { continue };
        // From wherever it is published (worker-1 when the driver does not say).
        let mut nodes: Vec<String> = e
            .status
            .as_ref()
            .map(|s| s.published_node_ids.clone())
            .unwrap_or_default();
        if nodes.is_empty() {
            nodes.push(WORKER.into());
        }
        for node_id in nodes {
            let req = ControllerUnpublishVolumeRequest {
                volume_id: v.volume_id.clone(),
                node_id,
                secrets: Default::default(),
            };
            let _ = c.controller.controller_unpublish_volume(req).await;
        }
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
