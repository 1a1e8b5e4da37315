//! PVE requests per CSI call, counted at the PVE client, at two cluster
//! sizes: a call that reads every VM or every holder costs more with more of
//! them, which on a real cluster (tens of milliseconds a request, three
//! pveproxy workers) turns one VolumeSnapshot into seconds. Every call but
//! the List pages must cost the same at both sizes and stay within its
//! budget; a List page costs in proportion to its page size.

mod support;

use proxmox_csi::controller::Controller;
use proxmox_csi::csi::*;
use proxmox_csi::volume_id::{TOPOLOGY_REGION, TOPOLOGY_ZONE};
use pve_sim::HotplugMode;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const MIB: i64 = 1 << 20;
/// Entries per List page in the measurements.
const PAGE: i32 = 5;
/// Entries per ListSnapshots page (fewer snapshots than volumes exist).
const SNAPSHOT_PAGE: i32 = 2;

/// How long the controller's shared /cluster/resources view lives here;
/// every measured call starts after it ran out, so none is helped by the
/// view of the call before.
const VIEW_TTL: Duration = Duration::from_millis(200);

/// Counts PVE requests by (method, path) until taken.
#[derive(Default)]
struct Counter {
    seen: Mutex<Vec<String>>,
}

impl proxmox_csi::pve::Observer for Counter {
    fn request(&self, method: &str, path: &str, _: Option<u16>, _: Duration) {
        self.seen.lock().unwrap().push(format!("{method} {path}"));
    }
    fn task(&self, _: &str, _: &str, _: Duration) {}
}

impl Counter {
    /// The requests since the last take; then waits out the shared view.
    fn take(&self) -> Vec<String> {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        std::thread::sleep(VIEW_TTL + Duration::from_millis(50));
        seen
    }
}

fn create(name: &str) -> CreateVolumeRequest {
    create_on(name, "local-lvm")
}

/// On `local` (raw files) a snapshot is a copy snapshot.
fn create_on(name: &str, storage: &str) -> CreateVolumeRequest {
    let t = Topology {
        segments: HashMap::from([
            (TOPOLOGY_REGION.into(), "sim".into()),
            (TOPOLOGY_ZONE.into(), "pve1".into()),
        ]),
    };
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 16 * MIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![ext4_writer()],
        parameters: HashMap::from([("storage".into(), storage.into())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        }),
        ..Default::default()
    }
}

fn publish(vol: &str, node: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    }
}

fn snapshot(name: &str, vol: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        source_volume_id: vol.into(),
        name: name.into(),
        ..Default::default()
    }
}

/// Worker VMs `worker-1..=w`, alternating between the two nodes; the
/// odd-numbered ones run on pve1, where the measured volume lives.
fn workers(cfg: &mut pve_sim::SimConfig, w: u32) {
    let template = cfg.vms[0].clone();
    cfg.vms = (1..=w)
        .map(|i| {
            let vmid = 100 + i;
            let mut vm = template.clone();
            vm.vmid = vmid;
            vm.name = format!("worker-{i}");
            vm.node = if i % 2 == 1 { "pve1" } else { "pve2" }.into();
            vm.config.insert("name".into(), vm.name.clone());
            vm.config.insert(
                "scsi0".into(),
                format!("local:{vmid}/vm-{vmid}-disk-0.raw,size=32G"),
            );
            vm.config.insert(
                "net0".into(),
                format!(
                    "virtio=BC:24:11:00:{:02X}:{:02X},bridge=vmbr0",
                    vmid / 256,
                    vmid % 256
                ),
            );
            vm
        })
        .collect();
}

/// Requests per call at one size: `n` volumes exist before the measured
/// ones (every third attached to a worker on pve1, every fourth with a
/// snapshot, every fifth on raw files with a copy snapshot), `w` worker VMs.
async fn measure(n: usize, w: u32) -> BTreeMap<&'static str, Vec<String>> {
    let t = start_sim(HotplugMode::None, |cfg| workers(cfg, w)).await;
    let counter = Arc::new(Counter::default());
    let c = Controller::new_observed(
        &cluster_config(&t.url),
        proxmox_csi::controller::ControllerOptions {
            task_timeout: Duration::from_secs(10),
            config_retry_delay: Duration::from_millis(50),
            resources_ttl: VIEW_TTL,
            ..Default::default()
        },
        counter.clone(),
    )
    .unwrap();
    let pve1_workers: Vec<String> = (1..=w)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("worker-{i}"))
        .collect();
    for i in 0..n {
        // Every fifth on raw files, with a copy snapshot (taken while detached).
        let copies = i % 5 == 1;
        let storage = if copies { "local" } else { "local-lvm" };
        let v = c
            .create_volume(create_on(&format!("pvc-existing-{i}"), storage))
            .await
            .unwrap()
            .volume
            .unwrap();
        if copies {
            c.create_snapshot(snapshot(&format!("copy-existing-{i}"), &v.volume_id))
                .await
                .unwrap();
        }
        if i % 3 == 0 {
            let node = &pve1_workers[(i / 3) % pve1_workers.len()];
            c.publish_volume(publish(&v.volume_id, node)).await.unwrap();
        }
        if i % 4 == 0 && !copies {
            c.create_snapshot(snapshot(&format!("snap-existing-{i}"), &v.volume_id))
                .await
                .unwrap();
        }
    }
    counter.take();

    let mut out = BTreeMap::new();
    let vol = c
        .create_volume(create("pvc-measured"))
        .await
        .unwrap()
        .volume
        .unwrap();
    out.insert("CreateVolume", counter.take());
    let node = pve1_workers.last().unwrap().clone();
    c.publish_volume(publish(&vol.volume_id, &node))
        .await
        .unwrap();
    out.insert("ControllerPublishVolume", counter.take());
    c.publish_volume(publish(&vol.volume_id, &node))
        .await
        .unwrap();
    out.insert("ControllerPublishVolume (again)", counter.take());
    c.get_volume(ControllerGetVolumeRequest {
        volume_id: vol.volume_id.clone(),
    })
    .await
    .unwrap();
    out.insert("ControllerGetVolume", counter.take());
    c.expand_volume(ControllerExpandVolumeRequest {
        volume_id: vol.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: 32 * MIB,
            limit_bytes: 0,
        }),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    })
    .await
    .unwrap();
    out.insert("ControllerExpandVolume", counter.take());
    let snap = c
        .create_snapshot(snapshot("snap-measured", &vol.volume_id))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    out.insert("CreateSnapshot", counter.take());
    let restored = c
        .create_volume(CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(volume_content_source::Type::Snapshot(
                    volume_content_source::SnapshotSource {
                        snapshot_id: snap.snapshot_id.clone(),
                    },
                )),
            }),
            ..create("pvc-restored")
        })
        .await
        .unwrap()
        .volume
        .unwrap();
    out.insert("CreateVolume (restore)", counter.take());

    let page = c
        .list_volumes(ListVolumesRequest {
            max_entries: PAGE,
            starting_token: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), PAGE as usize);
    out.insert("ListVolumes (first page)", counter.take());
    let page2 = c
        .list_volumes(ListVolumesRequest {
            max_entries: PAGE,
            starting_token: page.next_token.clone(),
        })
        .await
        .unwrap();
    assert_eq!(page2.entries.len(), PAGE as usize);
    out.insert("ListVolumes (next page)", counter.take());
    let snaps = c
        .list_snapshots(ListSnapshotsRequest {
            max_entries: SNAPSHOT_PAGE,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(snaps.entries.len(), SNAPSHOT_PAGE as usize);
    out.insert("ListSnapshots (first page)", counter.take());
    c.list_snapshots(ListSnapshotsRequest {
        max_entries: SNAPSHOT_PAGE,
        starting_token: snaps.next_token.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    out.insert("ListSnapshots (next page)", counter.take());
    c.list_snapshots(ListSnapshotsRequest {
        source_volume_id: vol.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    out.insert("ListSnapshots (by source)", counter.take());

    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    out.insert("DeleteSnapshot", counter.take());
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: vol.volume_id.clone(),
        node_id: node.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    out.insert("ControllerUnpublishVolume", counter.take());
    c.delete_volume(DeleteVolumeRequest {
        volume_id: vol.volume_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    out.insert("DeleteVolume", counter.take());
    c.delete_volume(DeleteVolumeRequest {
        volume_id: restored.volume_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    counter.take();

    // Copy snapshots: a detached volume on raw files.
    let raw = c
        .create_volume(create_on("pvc-measured-raw", "local"))
        .await
        .unwrap()
        .volume
        .unwrap();
    counter.take();
    let copy = c
        .create_snapshot(snapshot("copy-measured", &raw.volume_id))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    assert!(copy.snapshot_id.contains("@c"), "{copy:?}");
    out.insert("CreateSnapshot (copy)", counter.take());
    let from_copy = c
        .create_volume(CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(volume_content_source::Type::Snapshot(
                    volume_content_source::SnapshotSource {
                        snapshot_id: copy.snapshot_id.clone(),
                    },
                )),
            }),
            ..create_on("pvc-from-copy", "local")
        })
        .await
        .unwrap()
        .volume
        .unwrap();
    out.insert("CreateVolume (restore from a copy)", counter.take());
    c.list_snapshots(ListSnapshotsRequest {
        source_volume_id: raw.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    out.insert("ListSnapshots (by source, a copy)", counter.take());
    c.list_snapshots(ListSnapshotsRequest {
        snapshot_id: copy.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    out.insert("ListSnapshots (by id, a copy)", counter.take());
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: copy.snapshot_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    out.insert("DeleteSnapshot (copy)", counter.take());
    for v in [&raw, &from_copy] {
        c.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap();
    }
    counter.take();
    out
}

/// Budgets from the issue; calls not named have none beyond "the same at
/// both sizes".
fn budget(call: &str) -> Option<usize> {
    Some(match call {
        "CreateSnapshot" => 8,
        "CreateSnapshot (copy)" => 12,
        "ControllerPublishVolume" => 12,
        "ControllerExpandVolume" => 8,
        "DeleteVolume" => 8,
        _ => return None,
    })
}

/// Requests of a call with each waited-for task counted once: how often a
/// task is polled depends on how long it runs, not on the cluster.
fn shape(requests: &[String]) -> usize {
    let mut tasks = std::collections::HashSet::new();
    requests
        .iter()
        .filter(|r| !r.contains("/tasks/") || tasks.insert(r.as_str()))
        .count()
}

/// The page size of a List page measurement.
fn page_size(call: &str) -> Option<usize> {
    if call.starts_with("ListVolumes") {
        Some(PAGE as usize)
    } else if call.starts_with("ListSnapshots (first") || call.starts_with("ListSnapshots (next") {
        Some(SNAPSHOT_PAGE as usize)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_per_call_do_not_grow_with_the_cluster() {
    let small = measure(10, 2).await;
    let large = measure(40, 15).await;
    println!(
        "{:<34} {:>10} {:>10}   (all requests, task polls included)",
        "call", "N=10,W=2", "N=40,W=15"
    );
    for (call, s) in &small {
        println!(
            "{call:<34} {:>10} {:>10}   ({} / {})",
            shape(s),
            shape(&large[call]),
            s.len(),
            large[call].len()
        );
    }
    for (call, s) in &large {
        let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
        for r in s {
            *by_path
                .entry(r.split('?').next().unwrap_or(r).to_string())
                .or_default() += 1;
        }
        println!("-- {call} at N=40,W=15: {by_path:?}");
    }
    let mut failures = Vec::new();
    for (call, s) in &small {
        let (a, b) = (shape(s), shape(&large[call]));
        let resources = large[call]
            .iter()
            .filter(|r| r.starts_with("GET /cluster/resources"))
            .count();
        if resources > 1 {
            failures.push(format!(
                "{call}: reads /cluster/resources {resources} times"
            ));
        }
        if let Some(page) = page_size(call) {
            // A page costs in proportion to the page, never to the cluster:
            // a constant plus a few requests per entry.
            let bound = 6 + 3 * page;
            if b > bound {
                failures.push(format!(
                    "{call}: {b} requests at N=40 for a page of {page} (bound {bound})"
                ));
            }
            continue;
        }
        if a != b {
            failures.push(format!(
                "{call}: {a} requests at N=10,W=2 but {b} at N=40,W=15"
            ));
        }
        if let Some(max) = budget(call) {
            if b > max {
                failures.push(format!("{call}: {b} requests, budget {max}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
