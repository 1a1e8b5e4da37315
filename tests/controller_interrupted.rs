//! Every multi-step controller operation, cut off after each of its PVE
//! requests — the driver killed there (its runtime torn down, PVE's tasks
//! going on), or the caller giving up there (the CO's deadline) — and then
//! asked again as a CO would: the retry must give the answer an
//! uninterrupted call gives, and once the test undoes the operation nothing
//! may be left (holder VMs, snapshot holders, disks, snapshots, worker disk
//! slots, pending changes).

mod support;

use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::controller::service::ControllerService;
use proxmox_csi::controller::Controller;
use proxmox_csi::csi::controller_server::Controller as _;
use proxmox_csi::csi::*;
use pve_sim::{Fault, FaultAction, HotplugMode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tonic::{Code, Request, Status};

const MIB: i64 = 1 << 20;
const NAME: &str = "pvc-0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b";
const SOURCE: &str = "pvc-1f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Create,
    Clone,
    Restore,
    Snapshot,
    /// A snapshot on raw files (storage `local`): a copy into a snapshot holder.
    CopySnapshot,
    /// A restore from such a copy, to a larger size.
    CopyRestore,
    Expand,
    Publish,
    Unpublish,
    Delete,
}

/// What an operation answered, without what differs between runs (times).
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Volume(String, i64, Option<VolumeContentSource>),
    Snapshot(String, String, i64, bool),
    Published(HashMap<String, String>),
    Expanded(i64, bool),
    Done,
}

/// Ids the set-up made for the operation to work on.
#[derive(Debug, Clone, Default)]
struct World {
    volume: String,
    snapshot: String,
}

fn create_req(name: &str, size: i64, source: Option<VolumeContentSource>) -> CreateVolumeRequest {
    create_req_on("local-lvm", name, size, source)
}

/// The storage of the volumes an operation works on: copy snapshots need one whose
/// snapshots PVE cannot copy (`local`: raw files).
fn storage_of(op: Op) -> &'static str {
    match op {
        Op::CopySnapshot | Op::CopyRestore => "local",
        _ => "local-lvm",
    }
}

fn create_req_on(
    storage: &str,
    name: &str,
    size: i64,
    source: Option<VolumeContentSource>,
) -> CreateVolumeRequest {
    let t = Topology {
        segments: HashMap::from([
            ("topology.kubernetes.io/region".into(), "sim".into()),
            ("topology.kubernetes.io/zone".into(), "pve1".into()),
        ]),
    };
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![ext4_writer()],
        parameters: HashMap::from([("storage".into(), storage.into())]),
        mutable_parameters: HashMap::from([("iopsRead".into(), "500".into())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        }),
        volume_content_source: source,
        ..Default::default()
    }
}

fn from_volume(id: &str) -> VolumeContentSource {
    VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: id.into(),
            },
        )),
    }
}

fn from_snapshot(id: &str) -> VolumeContentSource {
    VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: id.into(),
            },
        )),
    }
}

fn publish_req(vol: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: "worker-1".into(),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    }
}

fn unpublish_req(vol: &str) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: vol.into(),
        node_id: "worker-1".into(),
        secrets: Default::default(),
    }
}

fn expand_req(vol: &str) -> ControllerExpandVolumeRequest {
    ControllerExpandVolumeRequest {
        volume_id: vol.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 128 * MIB,
            limit_bytes: 0,
        }),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    }
}

fn snapshot_req(vol: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        source_volume_id: vol.into(),
        name: "snapshot-1".into(),
        ..Default::default()
    }
}

fn snap_answer(s: Snapshot) -> Answer {
    Answer::Snapshot(
        s.snapshot_id,
        s.source_volume_id,
        s.size_bytes,
        s.ready_to_use,
    )
}

fn vol_answer(v: Volume) -> Answer {
    Answer::Volume(v.volume_id, v.capacity_bytes, v.content_source)
}

/// What the operation needs in place before it runs.
async fn setup(op: Op, c: &Controller) -> World {
    let mut w = World::default();
    if op == Op::Create {
        return w;
    }
    w.volume = c
        .create_volume(create_req_on(storage_of(op), SOURCE, 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    match op {
        // Cloned while in use: through the temporary snapshot.
        Op::Clone | Op::Expand | Op::Unpublish => {
            c.publish_volume(publish_req(&w.volume)).await.unwrap();
        }
        Op::Restore | Op::CopyRestore => {
            w.snapshot = c
                .create_snapshot(snapshot_req(&w.volume))
                .await
                .unwrap()
                .snapshot
                .unwrap()
                .snapshot_id;
        }
        _ => {}
    }
    w
}

/// The operation, called directly (the retrying CO's view).
async fn call(c: &Controller, op: Op, w: &World) -> Result<Answer, ControllerError> {
    Ok(match op {
        Op::Create => vol_answer(
            c.create_volume(create_req(NAME, 64 * MIB, None))
                .await?
                .volume
                .unwrap(),
        ),
        Op::Clone => vol_answer(
            c.create_volume(create_req(NAME, 128 * MIB, Some(from_volume(&w.volume))))
                .await?
                .volume
                .unwrap(),
        ),
        Op::Restore | Op::CopyRestore => vol_answer(
            c.create_volume(create_req_on(
                storage_of(op),
                NAME,
                128 * MIB,
                Some(from_snapshot(&w.snapshot)),
            ))
            .await?
            .volume
            .unwrap(),
        ),
        Op::Snapshot | Op::CopySnapshot => snap_answer(
            c.create_snapshot(snapshot_req(&w.volume))
                .await?
                .snapshot
                .unwrap(),
        ),
        Op::Expand => {
            let r = c.expand_volume(expand_req(&w.volume)).await?;
            Answer::Expanded(r.capacity_bytes, r.node_expansion_required)
        }
        Op::Publish => Answer::Published(
            c.publish_volume(publish_req(&w.volume))
                .await?
                .publish_context,
        ),
        Op::Unpublish => {
            c.unpublish_volume(unpublish_req(&w.volume)).await?;
            Answer::Done
        }
        Op::Delete => {
            c.delete_volume(DeleteVolumeRequest {
                volume_id: w.volume.clone(),
                secrets: Default::default(),
            })
            .await?;
            Answer::Done
        }
    })
}

/// The operation through the gRPC service, as the CO's first call makes it.
async fn call_service(s: ControllerService, op: Op, w: World) -> Result<Answer, Status> {
    Ok(match op {
        Op::Create => vol_answer(
            s.create_volume(Request::new(create_req(NAME, 64 * MIB, None)))
                .await?
                .into_inner()
                .volume
                .unwrap(),
        ),
        Op::Clone => vol_answer(
            s.create_volume(Request::new(create_req(
                NAME,
                128 * MIB,
                Some(from_volume(&w.volume)),
            )))
            .await?
            .into_inner()
            .volume
            .unwrap(),
        ),
        Op::Restore | Op::CopyRestore => vol_answer(
            s.create_volume(Request::new(create_req_on(
                storage_of(op),
                NAME,
                128 * MIB,
                Some(from_snapshot(&w.snapshot)),
            )))
            .await?
            .into_inner()
            .volume
            .unwrap(),
        ),
        Op::Snapshot | Op::CopySnapshot => snap_answer(
            s.create_snapshot(Request::new(snapshot_req(&w.volume)))
                .await?
                .into_inner()
                .snapshot
                .unwrap(),
        ),
        Op::Expand => {
            let r = s
                .controller_expand_volume(Request::new(expand_req(&w.volume)))
                .await?
                .into_inner();
            Answer::Expanded(r.capacity_bytes, r.node_expansion_required)
        }
        Op::Publish => Answer::Published(
            s.controller_publish_volume(Request::new(publish_req(&w.volume)))
                .await?
                .into_inner()
                .publish_context,
        ),
        Op::Unpublish => {
            s.controller_unpublish_volume(Request::new(unpublish_req(&w.volume)))
                .await?;
            Answer::Done
        }
        Op::Delete => {
            s.delete_volume(Request::new(DeleteVolumeRequest {
                volume_id: w.volume.clone(),
                secrets: Default::default(),
            }))
            .await?;
            Answer::Done
        }
    })
}

fn retryable(code: Code) -> bool {
    matches!(code, Code::Aborted | Code::Unavailable)
}

/// Ask again while the answer is "busy, retry", as the CO does.
async fn retry(c: &Controller, op: Op, w: &World, why: &str) -> Answer {
    let start = Instant::now();
    loop {
        match call(c, op, w).await {
            Ok(a) => return a,
            Err(e) => {
                let s = Status::from(e);
                assert!(
                    retryable(s.code()),
                    "{op:?} {why}: retry answered {:?}: {}",
                    s.code(),
                    s.message()
                );
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{op:?} {why}: still {:?} after 20 s: {}",
                    s.code(),
                    s.message()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Undo the set-up and the operation with ordinary calls.
async fn teardown(c: &Controller, op: Op, w: &World, answer: &Answer) {
    let del = |id: String| DeleteVolumeRequest {
        volume_id: id,
        secrets: Default::default(),
    };
    if let Answer::Volume(id, ..) = answer {
        c.delete_volume(del(id.clone())).await.unwrap();
    }
    if let Answer::Snapshot(id, ..) = answer {
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: id.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap();
    }
    if !w.snapshot.is_empty() {
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: w.snapshot.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap();
    }
    if matches!(op, Op::Clone | Op::Expand | Op::Publish) {
        c.unpublish_volume(unpublish_req(&w.volume)).await.unwrap();
    }
    if !w.volume.is_empty() && op != Op::Delete {
        c.delete_volume(del(w.volume.clone())).await.unwrap();
    }
}

/// Nothing of the driver's left on the simulator: only the two workers,
/// their OS disks, and their configs as they came.
async fn assert_clean(c: &Controller, why: &str) {
    let client = &c.cluster("sim").unwrap().client;
    let vms = client.vms().await.unwrap();
    let ids: Vec<u64> = vms.iter().map(|v| v.vmid).collect();
    assert_eq!(ids.len(), 2, "{why}: VMs left: {vms:?}");
    for (node, vmid) in [("pve1", 101u64), ("pve2", 102)] {
        let slots = client.vm_slots(node, vmid).await.unwrap();
        let names: Vec<&str> = slots.iter().map(|s| s.slot.as_str()).collect();
        assert_eq!(
            names,
            vec!["scsi0"],
            "{why}: disk slots of VM {vmid}: {slots:?}"
        );
        assert!(
            slots.iter().all(|s| !s.is_pending()),
            "{why}: pending on VM {vmid}: {slots:?}"
        );
    }
    for node in ["pve1", "pve2"] {
        for storage in ["local", "local-lvm", "shared"] {
            let items = client.storage_content(node, storage, None).await.unwrap();
            let extra: Vec<&str> = items
                .iter()
                .map(|i| i.volid.as_str())
                .filter(|v| !v.contains("vm-101-disk-0") && !v.contains("vm-102-disk-0"))
                .collect();
            assert!(
                extra.is_empty(),
                "{why}: left on {node}/{storage}: {extra:?}"
            );
        }
    }
}

/// The answer and the PVE request count of an uninterrupted run.
async fn clean_run(op: Op) -> (Answer, u64) {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let w = setup(op, &c).await;
    let before = t.sim.faults().seen();
    let a = call(&c, op, &w)
        .await
        .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    let n = t.sim.faults().seen() - before;
    if op == Op::CopySnapshot {
        assert!(
            matches!(&a, Answer::Snapshot(id, _, _, true) if id.contains("@c")),
            "a copy snapshot: {a:?}"
        );
    }
    if op == Op::CopyRestore {
        assert!(w.snapshot.contains("@c"), "from a copy: {}", w.snapshot);
    }
    teardown(&c, op, &w, &a).await;
    assert_clean(&c, &format!("{op:?} uninterrupted")).await;
    eprintln!("{op:?}: {n} PVE requests uninterrupted");
    (a, n)
}

fn hang_after(k: u64) -> Fault {
    Fault {
        method: None,
        path_regex: ".*".into(),
        action: FaultAction::Hang,
        count: None,
        skip: Some(k as u32),
    }
}

async fn wait_for(sim: &pve_sim::Sim, count: u64, done: impl Fn() -> bool) {
    let start = Instant::now();
    while sim.faults().seen() < count && !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the operation never reached request {count}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The driver dies after each request of `op` in turn.
async fn killed_at_every_step(op: Op) {
    let (clean, n) = clean_run(op).await;
    for k in 0..n {
        let why = format!("killed after request {k} of {n}");
        let t = start_sim(HotplugMode::None, |_| {}).await;
        let setup_controller = controller(&t.url);
        let w = setup(op, &setup_controller).await;
        let base = t.sim.faults().seen();
        t.sim.faults().add(hang_after(k)).unwrap();
        // The driver under test runs in a runtime of its own, so it can die.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let service = ControllerService {
            inner: Arc::new(controller(&t.url)),
        };
        let running = rt.spawn(call_service(service, op, w.clone()));
        wait_for(&t.sim, base + k + 1, || running.is_finished()).await;
        rt.shutdown_background();
        t.sim.faults().clear();
        let c = controller(&t.url);
        let a = retry(&c, op, &w, &why).await;
        assert_eq!(a, clean, "{op:?} {why}: the retry answered differently");
        teardown(&c, op, &w, &a).await;
        assert_clean(&c, &format!("{op:?} {why}")).await;
    }
}

/// The caller gives up after some requests of `op`; the work goes on, a
/// retry meanwhile is told to wait, a retry after gets the same answer.
async fn cancelled_midway(op: Op) {
    let (clean, n) = clean_run(op).await;
    for k in [1, n / 2, n.saturating_sub(1)] {
        let why = format!("cancelled after request {k} of {n}");
        let t = start_sim(HotplugMode::None, |_| {}).await;
        let c = Arc::new(controller(&t.url));
        let w = setup(op, &c).await;
        let base = t.sim.faults().seen();
        t.sim
            .faults()
            .add(Fault {
                method: None,
                path_regex: ".*".into(),
                action: FaultAction::DelayMs(20),
                count: None,
                skip: None,
            })
            .unwrap();
        let service = ControllerService { inner: c.clone() };
        let caller = tokio::spawn(call_service(service.clone(), op, w.clone()));
        wait_for(&t.sim, base + k, || caller.is_finished()).await;
        caller.abort();
        let start = Instant::now();
        let a = loop {
            match call_service(service.clone(), op, w.clone()).await {
                Ok(a) => break a,
                Err(s) => {
                    assert!(
                        retryable(s.code()),
                        "{op:?} {why}: {:?}: {}",
                        s.code(),
                        s.message()
                    );
                    assert!(
                        start.elapsed() < Duration::from_secs(20),
                        "{op:?} {why}: never finished"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        t.sim.faults().clear();
        assert_eq!(a, clean, "{op:?} {why}: the retry answered differently");
        teardown(&c, op, &w, &a).await;
        assert_clean(&c, &format!("{op:?} {why}")).await;
    }
}

macro_rules! interrupted {
    ($($killed:ident, $cancelled:ident => $op:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $killed() {
            killed_at_every_step($op).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $cancelled() {
            cancelled_midway($op).await;
        }
    )*};
}

interrupted! {
    create_killed_at_every_step, create_cancelled => Op::Create;
    clone_killed_at_every_step, clone_cancelled => Op::Clone;
    restore_larger_killed_at_every_step, restore_larger_cancelled => Op::Restore;
    snapshot_killed_at_every_step, snapshot_cancelled => Op::Snapshot;
    copy_snapshot_killed_at_every_step, copy_snapshot_cancelled => Op::CopySnapshot;
    copy_restore_killed_at_every_step, copy_restore_cancelled => Op::CopyRestore;
    expand_killed_at_every_step, expand_cancelled => Op::Expand;
    publish_killed_at_every_step, publish_cancelled => Op::Publish;
    unpublish_killed_at_every_step, unpublish_cancelled => Op::Unpublish;
    delete_killed_at_every_step, delete_cancelled => Op::Delete;
}
