//! Controller logic against the in-process PVE simulator (config-only hot-plug,
//! so these run without root): idempotency, error codes, placement, attach
//! bookkeeping, and behaviour under injected PVE faults.

mod support;

use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::csi::volume_capability::AccessType;
use proxmox_csi::csi::*;
use proxmox_csi::pve::drive::Drive;
use proxmox_csi::volume_id::{VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use pve_sim::faults::{Fault, FaultAction};
use pve_sim::HotplugMode;
use std::collections::HashMap;
use support::*;
use tonic::Code;

const GIB: i64 = 1 << 30;

fn create_req(name: &str, storage: &str, size: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![ext4_writer()],
        parameters: HashMap::from([("storage".into(), storage.into())]),
        ..Default::default()
    }
}

fn in_zone(mut req: CreateVolumeRequest, zone: &str) -> CreateVolumeRequest {
    let t = Topology {
        segments: HashMap::from([
            (TOPOLOGY_REGION.into(), "sim".into()),
            (TOPOLOGY_ZONE.into(), zone.into()),
        ]),
    };
    req.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![t.clone()],
        preferred: vec![t],
    });
    req
}

fn publish_req(vol: &str, node: &str, readonly: bool) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        volume_capability: Some(block_writer()),
        readonly,
        ..Default::default()
    }
}

fn code(e: ControllerError) -> (Code, String) {
    let s: tonic::Status = e.into();
    (s.code(), s.message().to_string())
}

/// Does a worker config reference any volume of this driver (owned by a holder VM)?
fn has_driver_volume(cfg: &HashMap<String, String>) -> bool {
    cfg.iter()
        .any(|(k, v)| k != "scsi0" && v.contains("vm-1000"))
}

async fn vm_config(t: &TestSim, node: &str, vmid: u64, current: bool) -> HashMap<String, String> {
    let c = controller(&t.url);
    let cfg = c
        .cluster("sim")
        .unwrap()
        .client
        .vm_config(node, vmid, current)
        .await
        .unwrap();
    cfg.entries.into_iter().collect()
}

#[tokio::test]
async fn create_is_idempotent_by_name_and_checks_size() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let a = c
        .create_volume(create_req("pvc-a", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(a.capacity_bytes, GIB);
    let again = c
        .create_volume(create_req("pvc-a", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(again.volume_id, a.volume_id);
    let (code_, msg) = code(
        c.create_volume(create_req("pvc-a", "shared", 2 * GIB))
            .await
            .unwrap_err(),
    );
    assert_eq!(code_, Code::AlreadyExists, "{msg}");
    // One disk on the storage, not two.
    assert_eq!(c.all_volumes().await.unwrap().len(), 1);
    // Shared storage: reachable from every node of the region.
    let topo = &a.accessible_topology[0].segments;
    assert_eq!(topo.get(TOPOLOGY_REGION).map(String::as_str), Some("sim"));
    assert!(!topo.contains_key(TOPOLOGY_ZONE));
}

#[tokio::test]
async fn create_places_local_volumes_by_topology_and_rounds_sizes() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(in_zone(
            create_req("pvc-z", "local", 5 * (1 << 20) + 1),
            "pve2",
        ))
        .await
        .unwrap()
        .volume
        .unwrap();
    let id = VolumeId::parse(&v.volume_id).unwrap();
    assert_eq!(id.zone, "pve2");
    assert_eq!(v.capacity_bytes, 6 << 20, "rounded up to whole MiB");
    assert_eq!(
        v.accessible_topology[0]
            .segments
            .get(TOPOLOGY_ZONE)
            .map(String::as_str),
        Some("pve2")
    );
    // The image really exists with that size.
    let info = c
        .cluster("sim")
        .unwrap()
        .client
        .volume_info("pve2", "local", &id.volid())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.size, 6 << 20);
}

#[tokio::test]
async fn create_rejects_bad_input_with_named_fields() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let mut r = create_req("x", "shared", GIB);
    r.parameters.clear();
    let (k, m) = code(c.create_volume(r).await.unwrap_err());
    assert_eq!(k, Code::InvalidArgument);
    assert!(m.contains("parameters.storage"), "{m}");
    let (k, m) = code(
        c.create_volume(create_req("", "shared", GIB))
            .await
            .unwrap_err(),
    );
    assert!(k == Code::InvalidArgument && m.contains("name"), "{m}");
    let mut r = create_req("x", "shared", GIB);
    r.volume_capabilities.clear();
    let (k, m) = code(c.create_volume(r).await.unwrap_err());
    assert!(
        k == Code::InvalidArgument && m.contains("volume_capabilities"),
        "{m}"
    );
    let (k, m) = code(
        c.create_volume(create_req("x", "nosuchstorage", GIB))
            .await
            .unwrap_err(),
    );
    assert!(
        k == Code::InvalidArgument && m.contains("nosuchstorage"),
        "{k:?} {m}"
    );
    let (k, m) = code(
        c.create_volume(in_zone(create_req("x", "local", GIB), "pve9"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::ResourceExhausted, "{m}");
    assert!(
        c.all_volumes().await.unwrap().is_empty(),
        "no disk allocated by rejected requests"
    );
}

#[tokio::test]
async fn publish_attaches_with_volume_wwn_and_is_idempotent() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create_req("pvc-p", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    let ctx = c
        .publish_volume(publish_req(&v.volume_id, "worker-1", false))
        .await
        .unwrap()
        .publish_context;
    let id = VolumeId::parse(&v.volume_id).unwrap();
    assert_eq!(ctx["wwn"], id.wwn());
    let slot = ctx["bus"].clone();
    let cfg = vm_config(&t, "pve1", 101, true).await;
    let drive = Drive::parse(&cfg[&slot]).unwrap();
    assert_eq!(drive.volume, id.volid());
    assert_eq!(drive.get("wwn"), Some(id.wwn().as_str()));
    assert_eq!(
        cfg["scsi0"].split(',').next(),
        Some("local:101/vm-101-disk-0.raw"),
        "OS disk untouched"
    );
    // Same call again: same slot, no second attachment.
    let again = c
        .publish_volume(publish_req(&v.volume_id, "worker-1", false))
        .await
        .unwrap()
        .publish_context;
    assert_eq!(again, ctx);
    let cfg = vm_config(&t, "pve1", 101, false).await;
    assert_eq!(
        cfg.values().filter(|v| v.starts_with(&id.volid())).count(),
        1
    );
    // readonly flipped: incompatible.
    let (k, m) = code(
        c.publish_volume(publish_req(&v.volume_id, "worker-1", true))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::AlreadyExists, "{m}");
    // Another node while attached here: refused, and the disk stays where it is.
    let (k, m) = code(
        c.publish_volume(publish_req(&v.volume_id, "worker-2", false))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert!(m.contains("101"), "{m}");
    // ListVolumes shows where it is published.
    let l = c.list_volumes(ListVolumesRequest::default()).await.unwrap();
    assert_eq!(
        l.entries[0].status.as_ref().unwrap().published_node_ids,
        vec!["worker-1".to_string()]
    );
}

#[tokio::test]
async fn publish_errors() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(in_zone(create_req("pvc-l", "local", GIB), "pve2"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (k, m) = code(
        c.publish_volume(publish_req(&v.volume_id, "worker-1", false))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        k,
        Code::FailedPrecondition,
        "local disk of pve2 to a VM on pve1: {m}"
    );
    let (k, m) = code(
        c.publish_volume(publish_req(&v.volume_id, "no-such-vm", false))
            .await
            .unwrap_err(),
    );
    assert!(k == Code::NotFound && m.contains("node_id"), "{m}");
    let (k, _) = code(
        c.publish_volume(publish_req("garbage", "worker-1", false))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
    let (k, _) = code(
        c.publish_volume(publish_req(
            "sim/pve1/shared/100099/vm-100099-disk-0.raw",
            "worker-1",
            false,
        ))
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
    let mut r = publish_req(&v.volume_id, "worker-2", false);
    r.volume_capability = None;
    let (k, m) = code(c.publish_volume(r).await.unwrap_err());
    assert!(
        k == Code::InvalidArgument && m.contains("volume_capability"),
        "{m}"
    );
    // The local disk on pve2 attaches to the VM on pve2.
    c.publish_volume(publish_req(&v.volume_id, "worker-2", false))
        .await
        .unwrap();
}

#[tokio::test]
async fn delete_refuses_attached_volumes_and_is_idempotent() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create_req("pvc-d", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    c.publish_volume(publish_req(&v.volume_id, "worker-1", false))
        .await
        .unwrap();
    let del = || DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        secrets: Default::default(),
    };
    assert!(has_driver_volume(&vm_config(&t, "pve1", 101, false).await));
    let (k, m) = code(c.delete_volume(del()).await.unwrap_err());
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert_eq!(
        c.all_volumes().await.unwrap().len(),
        1,
        "attached disk kept"
    );
    let un = ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "worker-1".into(),
        secrets: Default::default(),
    };
    c.unpublish_volume(un.clone()).await.unwrap();
    c.unpublish_volume(un).await.unwrap(); // idempotent
    let cfg = vm_config(&t, "pve1", 101, false).await;
    assert!(!has_driver_volume(&cfg), "detached: {cfg:?}");
    c.delete_volume(del()).await.unwrap();
    c.delete_volume(del()).await.unwrap(); // already gone: still OK
    assert!(c.all_volumes().await.unwrap().is_empty());
    c.delete_volume(DeleteVolumeRequest {
        volume_id: "not-an-id".into(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    let (k, _) = code(
        c.delete_volume(DeleteVolumeRequest::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument);
}

#[tokio::test]
async fn list_volumes_pages_with_tokens() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    for i in 0..5 {
        c.create_volume(create_req(&format!("pvc-list-{i}"), "shared", 1 << 20))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .list_volumes(ListVolumesRequest {
                max_entries: 2,
                starting_token: token.clone(),
            })
            .await
            .unwrap();
        assert!(r.entries.len() <= 2);
        seen.extend(
            r.entries
                .iter()
                .map(|e| e.volume.as_ref().unwrap().volume_id.clone()),
        );
        if r.next_token.is_empty() {
            break;
        }
        token = r.next_token;
    }
    assert_eq!(seen.len(), 5);
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), 5);
    let (k, _) = code(
        c.list_volumes(ListVolumesRequest {
            max_entries: 0,
            starting_token: "bogus".into(),
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::Aborted);
}

#[tokio::test]
async fn capacity_follows_storage_and_topology() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let seg = |z: &str| {
        Some(Topology {
            segments: HashMap::from([(TOPOLOGY_ZONE.into(), z.into())]),
        })
    };
    let req = |z| GetCapacityRequest {
        parameters: HashMap::from([("storage".into(), "local".into())]),
        accessible_topology: seg(z),
        ..Default::default()
    };
    let one = c.get_capacity(req("pve1")).await.unwrap();
    assert!(one.available_capacity > 0);
    let all = c
        .get_capacity(GetCapacityRequest {
            parameters: HashMap::from([("storage".into(), "local".into())]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.available_capacity,
        2 * one.available_capacity,
        "two nodes with their own 'local'"
    );
    let none = c.get_capacity(req("pve9")).await.unwrap();
    assert_eq!(none.available_capacity, 0);
}

#[tokio::test]
async fn publish_retries_through_a_config_lock_then_gives_up() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller_with(&t.url, |o| o.config_attempts = 3);
    let v = c
        .create_volume(create_req("pvc-lock", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    let lock_err = |count| Fault {
        method: Some("POST".into()),
        path_regex: "/qemu/101/config$".into(),
        action: FaultAction::Error {
            status: 500,
            message: "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout".into(),
        },
        count,
        skip: None,
    };
    // Two lock timeouts, then PVE is free again: the publish gets through.
    t.sim.faults().add(lock_err(Some(2))).unwrap();
    c.publish_volume(publish_req(&v.volume_id, "worker-1", false))
        .await
        .unwrap();
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "worker-1".into(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    // Locked for good: Aborted (the CO retries later), and nothing attached.
    t.sim.faults().add(lock_err(None)).unwrap();
    let (k, m) = code(
        c.publish_volume(publish_req(&v.volume_id, "worker-1", false))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::Aborted, "{m}");
    t.sim.faults().clear();
    let cfg = vm_config(&t, "pve1", 101, false).await;
    assert!(!has_driver_volume(&cfg), "{cfg:?}");
}

#[tokio::test]
async fn publish_to_vm_without_disk_hotplug_is_reverted() {
    let t = start_sim(HotplugMode::None, |cfg| {
        for vm in &mut cfg.vms {
            if vm.vmid == 101 {
                vm.config.insert("hotplug".into(), "network,usb".into());
            }
        }
    })
    .await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create_req("pvc-hp", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (k, m) = code(
        c.publish_volume(publish_req(&v.volume_id, "worker-1", false))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert!(m.contains("hotplug"), "{m}");
    let pending = vm_config(&t, "pve1", 101, false).await;
    assert!(
        !has_driver_volume(&pending),
        "pending change reverted: {pending:?}"
    );
}

#[tokio::test]
async fn failed_allocation_task_leaves_nothing() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    t.sim
        .faults()
        .add(Fault {
            method: Some("POST".into()),
            path_regex: "/storage/shared/content$".into(),
            action: FaultAction::Error {
                status: 500,
                message: "storage 'shared' is not online".into(),
            },
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let (k, m) = code(
        c.create_volume(create_req("pvc-f", "shared", GIB))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::Internal, "{m}");
    assert!(m.contains("not online"), "PVE's text reaches the CO: {m}");
    assert!(c.all_volumes().await.unwrap().is_empty());
    // The retry succeeds.
    c.create_volume(create_req("pvc-f", "shared", GIB))
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_operations_on_one_volume_are_aborted() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = std::sync::Arc::new(controller(&t.url));
    let v = c
        .create_volume(create_req("pvc-c", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    t.sim
        .faults()
        .add(Fault {
            method: Some("POST".into()),
            path_regex: "/qemu/101/config$".into(),
            action: FaultAction::DelayMs(800),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let c1 = c.clone();
    let id = v.volume_id.clone();
    let first =
        tokio::spawn(async move { c1.publish_volume(publish_req(&id, "worker-1", false)).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (k, m) = code(
        c.publish_volume(publish_req(&v.volume_id, "worker-1", false))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::Aborted, "{m}");
    first.await.unwrap().unwrap();
}

#[tokio::test]
async fn get_volume_reports_publications_and_unknown_ids() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create_req("pvc-g", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    let get = |id: &str| ControllerGetVolumeRequest {
        volume_id: id.into(),
    };
    let r = c.get_volume(get(&v.volume_id)).await.unwrap();
    assert_eq!(r.volume.unwrap().capacity_bytes, GIB);
    assert!(r.status.unwrap().published_node_ids.is_empty());
    c.publish_volume(publish_req(&v.volume_id, "worker-1", false))
        .await
        .unwrap();
    let r = c.get_volume(get(&v.volume_id)).await.unwrap();
    assert_eq!(
        r.status.unwrap().published_node_ids,
        vec!["worker-1".to_string()]
    );
    let (k, _) = code(
        c.get_volume(get("sim/pve1/shared/100099/vm-100099-disk-0.raw"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
    let (k, _) = code(c.get_volume(get("")).await.unwrap_err());
    assert_eq!(k, Code::InvalidArgument);
}

/// The controller dies (its call is dropped) while PVE is applying the
/// attach. The retry must find the half-done work and finish it: one
/// attachment, same slot, no second disk entry.
#[tokio::test]
async fn publish_cancelled_mid_call_is_completed_by_the_retry() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = std::sync::Arc::new(controller(&t.url));
    let v = c
        .create_volume(create_req("pvc-k", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    // PVE is slow to report the task done; the caller dies while it waits.
    t.sim
        .faults()
        .add(Fault {
            method: Some("GET".into()),
            path_regex: "/tasks/.*/status$".into(),
            action: FaultAction::DelayMs(2000),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let c1 = c.clone();
    let id = v.volume_id.clone();
    let call =
        tokio::spawn(async move { c1.publish_volume(publish_req(&id, "worker-1", false)).await });
    // Kill the call once PVE has the change but the driver still waits for the task.
    let volid = VolumeId::parse(&v.volume_id).unwrap().volid();
    let mut seen = false;
    for _ in 0..100 {
        if vm_config(&t, "pve1", 101, false)
            .await
            .values()
            .any(|x| x.starts_with(&volid))
        {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(seen, "the attach never reached PVE");
    call.abort();
    assert!(
        call.await.unwrap_err().is_cancelled(),
        "the call was still waiting for its task"
    );
    let cfg = vm_config(&t, "pve1", 101, false).await;
    let slots: Vec<_> = cfg
        .iter()
        .filter(|(_, x)| x.starts_with(&volid))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(slots.len(), 1, "{cfg:?}");
    // The in-flight guard died with the call, so the retry is not Aborted.
    let ctx = c
        .publish_volume(publish_req(&v.volume_id, "worker-1", false))
        .await
        .unwrap()
        .publish_context;
    assert_eq!(ctx["bus"], slots[0]);
    let cfg = vm_config(&t, "pve1", 101, false).await;
    assert_eq!(cfg.values().filter(|x| x.starts_with(&volid)).count(), 1);
}

#[tokio::test]
async fn storage_class_drive_options_reach_the_vm_config() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let mut req = create_req("pvc-o", "shared", GIB);
    req.parameters.insert("cache".into(), "writeback".into());
    req.parameters.insert("ssd".into(), "true".into());
    req.parameters.insert("backup".into(), "true".into());
    req.parameters.insert("iothread".into(), "true".into());
    req.parameters.insert("aio".into(), "threads".into());
    let v = c.create_volume(req).await.unwrap().volume.unwrap();
    let mut p = publish_req(&v.volume_id, "worker-1", false);
    p.volume_context = v.volume_context.clone();
    let slot = c.publish_volume(p).await.unwrap().publish_context["bus"].clone();
    let cfg = vm_config(&t, "pve1", 101, true).await;
    let d = Drive::parse(&cfg[&slot]).unwrap();
    assert_eq!(d.get("cache"), Some("writeback"));
    assert_eq!(d.get("ssd"), Some("1"));
    assert_eq!(d.get("discard"), Some("on"));
    assert_eq!(d.get("backup"), Some("1"));
    assert_eq!(d.get("iothread"), Some("1"));
    assert_eq!(d.get("aio"), Some("threads"));
    // A malformed context (hand-written static PV) is refused before PVE is touched.
    let v2 = c
        .create_volume(create_req("pvc-o2", "shared", GIB))
        .await
        .unwrap()
        .volume
        .unwrap();
    let mut p = publish_req(&v2.volume_id, "worker-1", false);
    p.volume_context.insert("cache".into(), "turbo".into());
    let (k, m) = code(c.publish_volume(p).await.unwrap_err());
    assert!(
        k == Code::InvalidArgument && m.contains("volume_context.cache"),
        "{m}"
    );
}

#[tokio::test]
async fn mkfs_sizes_the_filesystem_refuses_fail_create_before_a_holder_exists() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let mut req = create_req("pvc-fmt", "shared", GIB);
    if let Some(AccessType::Mount(m)) = &mut req.volume_capabilities[0].access_type {
        m.fs_type = "xfs".into();
    }
    // 256-byte inodes are fine for ext4 but below what xfs with checksums takes.
    req.parameters.insert("inodeSize".into(), "256".into());
    let (k, m) = code(c.create_volume(req.clone()).await.unwrap_err());
    assert!(
        k == Code::InvalidArgument && m.contains("parameters.inodeSize"),
        "{k:?} {m}"
    );
    let l = c.list_volumes(ListVolumesRequest::default()).await.unwrap();
    assert!(l.entries.is_empty(), "nothing was created");
    // The same size with ext4 is made, and travels to the node in the context.
    if let Some(AccessType::Mount(m)) = &mut req.volume_capabilities[0].access_type {
        m.fs_type = "ext4".into();
    }
    let v = c.create_volume(req).await.unwrap().volume.unwrap();
    assert_eq!(v.volume_context["inodeSize"], "256");
}
