//! Data safety of the controller against stale, forged and racing requests
//! and against PVE's failed hot-unplugs: every call touches only the disk
//! the id names canonically, and a disk counts as attached while any VM
//! still runs with it.

mod support;

use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::controller::Controller;
use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use proxmox_csi::csi::*;
use proxmox_csi::volume_id::{VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use pve_sim::{Fault, FaultAction, HotplugMode};
use std::collections::HashMap;
use std::sync::Arc;
use support::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn cap(fs: &str) -> VolumeCapability {
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

fn create(name: &str, storage: &str, size: i64, zone: Option<&str>) -> CreateVolumeRequest {
    let mut r = CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap("ext4")],
        parameters: HashMap::from([("storage".into(), storage.into())]),
        ..Default::default()
    };
    if let Some(z) = zone {
        let t = Topology {
            segments: HashMap::from([
                (TOPOLOGY_REGION.into(), "sim".into()),
                (TOPOLOGY_ZONE.into(), z.into()),
            ]),
        };
        r.accessibility_requirements = Some(TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        });
    }
    r
}

fn publish(vol: &str, node: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        volume_capability: Some(cap("ext4")),
        ..Default::default()
    }
}

fn unpublish(vol: &str, node: &str) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        secrets: Default::default(),
    }
}

fn delete(vol: &str) -> DeleteVolumeRequest {
    DeleteVolumeRequest {
        volume_id: vol.into(),
        secrets: Default::default(),
    }
}

fn code(e: ControllerError) -> (Code, String) {
    let s: tonic::Status = e.into();
    (s.code(), s.message().to_string())
}

/// The slots of a VM's running (applied) config that hold `volid`.
async fn running_slots(c: &Controller, node: &str, vmid: u64, volid: &str) -> Vec<String> {
    c.cluster("sim")
        .unwrap()
        .client
        .vm_config(node, vmid, true)
        .await
        .unwrap()
        .slots_with_volume(volid)
}

/// Every id that differs from a real one in one part must not detach it.
fn with_part(id: &VolumeId, part: &str, value: &str) -> String {
    let mut f = id.clone();
    match part {
        "zone" => f.zone = value.into(),
        "tag" => f.tag = value.into(),
        _ => unreachable!(),
    }
    f.to_string()
}

#[tokio::test]
async fn unpublish_touches_only_a_disk_its_holder_owns() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    // A volume, deleted; its vmid goes to the next volume, which is attached.
    let old = c
        .create_volume(create("pvc-old", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    c.delete_volume(delete(&old.volume_id)).await.unwrap();
    let new = c
        .create_volume(create("pvc-new", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (old_id, new_id) = (
        VolumeId::parse(&old.volume_id).unwrap(),
        VolumeId::parse(&new.volume_id).unwrap(),
    );
    assert_eq!(old_id.volid(), new_id.volid(), "the vmid was reused");
    c.publish_volume(publish(&new.volume_id, "worker-1"))
        .await
        .unwrap();

    // The late unpublish of the deleted volume: OK, and the new one stays.
    c.unpublish_volume(unpublish(&old.volume_id, "worker-1"))
        .await
        .unwrap();
    assert_eq!(
        running_slots(&c, "pve1", 101, &new_id.volid()).await.len(),
        1,
        "new volume detached by a stale id"
    );
    // The new id with a wrong tag or a wrong zone (node-local storage).
    for forged in [
        with_part(&new_id, "tag", "0a1b2c3d"),
        with_part(&new_id, "zone", "pve2"),
    ] {
        c.unpublish_volume(unpublish(&forged, "worker-1"))
            .await
            .unwrap();
        assert_eq!(
            running_slots(&c, "pve1", 101, &new_id.volid()).await.len(),
            1,
            "detached through {forged}"
        );
    }
    // Forged ids naming the workers' own OS disks, on their own and on the other VM.
    for (forged, node) in [
        ("sim/pve1/local/0a1b2c3d/101/vm-101-disk-0.raw", "worker-1"),
        ("sim/pve2/local/0a1b2c3d/102/vm-102-disk-0.raw", "worker-2"),
        ("sim/pve1/local/0a1b2c3d/102/vm-102-disk-0.raw", "worker-1"),
    ] {
        c.unpublish_volume(unpublish(forged, node)).await.unwrap();
    }
    let cluster = c.cluster("sim").unwrap();
    for (node, vmid) in [("pve1", 101), ("pve2", 102)] {
        let cfg = cluster.client.vm_config(node, vmid, true).await.unwrap();
        assert!(
            cfg.get("scsi0")
                .unwrap()
                .starts_with(&format!("local:{vmid}/vm-{vmid}-disk-0.raw")),
            "OS disk of {vmid} touched"
        );
    }
    // The real id detaches it.
    c.unpublish_volume(unpublish(&new.volume_id, "worker-1"))
        .await
        .unwrap();
    assert!(running_slots(&c, "pve1", 101, &new_id.volid())
        .await
        .is_empty());
}

#[tokio::test]
async fn a_holder_vm_is_never_a_node() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let a = c
        .create_volume(create("pvc-a", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let b = c
        .create_volume(create("pvc-b", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let cluster = c.cluster("sim").unwrap();
    let holder_a = cluster
        .holder_of(&VolumeId::parse(&a.volume_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let holder_name = holder_a.name.clone().unwrap();
    let (k, m) = code(
        c.publish_volume(publish(&b.volume_id, &holder_name))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound, "{m}");
    let (k, m) = code(
        c.unpublish_volume(unpublish(&a.volume_id, &holder_name))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound, "{m}");
    let cfg = cluster
        .client
        .vm_config(&holder_a.node, holder_a.vmid, false)
        .await
        .unwrap();
    assert!(
        cfg.get("scsi0").is_some() && cfg.drives().count() == 1,
        "holder config changed: {cfg:?}"
    );
}

/// PVE leaves a failed hot-unplug pending and the disk in the running VM.
/// Until the running VM lets it go, unpublish is not OK, publishing it
/// elsewhere and deleting it are refused.
#[tokio::test]
async fn a_failed_hot_unplug_is_never_reported_as_success() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-busy", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let volid = VolumeId::parse(&v.volume_id).unwrap().volid();
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    t.sim
        .faults()
        .add(Fault {
            method: Some("PUT".into()),
            path_regex: "/qemu/101/unlink$".into(),
            action: FaultAction::HotplugError(
                "unplug of scsi1 timed out - still busy in guest?".into(),
            ),
            count: Some(2),
            skip: None,
        })
        .unwrap();
    for attempt in 0..2 {
        let (k, m) = code(
            c.unpublish_volume(unpublish(&v.volume_id, "worker-1"))
                .await
                .unwrap_err(),
        );
        assert_eq!(k, Code::Unavailable, "attempt {attempt}: {m}");
        assert!(m.contains("still busy in guest"), "PVE's text missing: {m}");
        assert_eq!(
            running_slots(&c, "pve1", 101, &volid).await.len(),
            1,
            "the guest still has the disk"
        );
        let (k, m) = code(
            c.publish_volume(publish(&v.volume_id, "worker-2"))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            k,
            Code::FailedPrecondition,
            "published into a second VM: {m}"
        );
        let (k, m) = code(c.delete_volume(delete(&v.volume_id)).await.unwrap_err());
        assert_eq!(k, Code::FailedPrecondition, "deleted while in use: {m}");
        let g = c
            .get_volume(ControllerGetVolumeRequest {
                volume_id: v.volume_id.clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            g.status.unwrap().published_node_ids,
            vec!["worker-1".to_string()]
        );
    }
    // PVE can unplug it now: the retry completes the detach.
    c.unpublish_volume(unpublish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    assert!(running_slots(&c, "pve1", 101, &volid).await.is_empty());
    assert!(c
        .cluster("sim")
        .unwrap()
        .client
        .vm_slots("pve1", 101)
        .await
        .unwrap()
        .iter()
        .all(|s| !s.holds(&volid)));
    c.publish_volume(publish(&v.volume_id, "worker-2"))
        .await
        .unwrap();
}

/// Publishing back to the VM whose unplug is pending keeps the disk where
/// the guest has it (the pending removal is cancelled), in the same slot.
#[tokio::test]
async fn publish_to_the_vm_with_a_pending_unplug_keeps_the_disk() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-back", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let volid = VolumeId::parse(&v.volume_id).unwrap().volid();
    let slot = c
        .publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap()
        .publish_context["bus"]
        .clone();
    t.sim
        .faults()
        .add(Fault {
            method: Some("PUT".into()),
            path_regex: "/qemu/101/unlink$".into(),
            action: FaultAction::HotplugError("busy".into()),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    assert_eq!(
        code(
            c.unpublish_volume(unpublish(&v.volume_id, "worker-1"))
                .await
                .unwrap_err()
        )
        .0,
        Code::Unavailable
    );
    let again = c
        .publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    assert_eq!(again.publish_context["bus"], slot);
    let slots = c
        .cluster("sim")
        .unwrap()
        .client
        .vm_slots("pve1", 101)
        .await
        .unwrap();
    let s: Vec<_> = slots.iter().filter(|s| s.holds(&volid)).collect();
    assert_eq!(s.len(), 1);
    assert!(
        !s[0].delete && s[0].pending.is_none(),
        "pending change left: {:?}",
        s[0]
    );
}

/// A hot-plug QEMU refuses leaves nothing pending, and is retryable.
#[tokio::test]
async fn a_failed_hot_plug_is_retryable_and_leaves_nothing_pending() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-plug", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let volid = VolumeId::parse(&v.volume_id).unwrap().volid();
    t.sim
        .faults()
        .add(Fault {
            method: Some("POST".into()),
            path_regex: "/qemu/101/config$".into(),
            action: FaultAction::HotplugError("device_add failed".into()),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let (k, m) = code(
        c.publish_volume(publish(&v.volume_id, "worker-1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::Unavailable, "{m}");
    let slots = c
        .cluster("sim")
        .unwrap()
        .client
        .vm_slots("pve1", 101)
        .await
        .unwrap();
    assert!(
        slots.iter().all(|s| !s.holds(&volid)),
        "left pending: {slots:?}"
    );
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    assert_eq!(running_slots(&c, "pve1", 101, &volid).await.len(), 1);
}

/// On shared storage ids that differ in the zone name one disk: published
/// at once to two VMs, at most one gets it.
#[tokio::test]
async fn zone_spellings_of_one_disk_share_one_lock() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = Arc::new(controller(&t.url));
    let v = c
        .create_volume(create("pvc-shared", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let id = VolumeId::parse(&v.volume_id).unwrap();
    let other_zone = if id.zone == "pve1" { "pve2" } else { "pve1" };
    let swapped = with_part(&id, "zone", other_zone);
    // Slow the attach down so the two calls overlap.
    t.sim
        .faults()
        .add(Fault {
            method: Some("POST".into()),
            path_regex: "/qemu/10[12]/config$".into(),
            action: FaultAction::DelayMs(300),
            count: None,
            skip: None,
        })
        .unwrap();
    let (a, b) = tokio::join!(
        c.publish_volume(publish(&v.volume_id, "worker-1")),
        c.publish_volume(publish(&swapped, "worker-2"))
    );
    assert!(a.is_err() || b.is_err(), "one disk published to two VMs");
    let in1 = running_slots(&c, "pve1", 101, &id.volid()).await.len();
    let in2 = running_slots(&c, "pve2", 102, &id.volid()).await.len();
    assert!(
        in1 + in2 <= 1,
        "disk in worker-1 {in1}x and worker-2 {in2}x"
    );
    for e in [a.err(), b.err()].into_iter().flatten() {
        let (k, m) = code(e);
        assert!(
            matches!(k, Code::Aborted | Code::FailedPrecondition),
            "{k:?}: {m}"
        );
    }
}

/// On node-local storage an id with another zone names no volume, for
/// every call alike: Get says NotFound, Delete deletes nothing.
#[tokio::test]
async fn a_zone_swapped_local_id_is_no_volume_for_any_call() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-local", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let id = VolumeId::parse(&v.volume_id).unwrap();
    let swapped = with_part(&id, "zone", "pve2");
    let (k, _) = code(
        c.get_volume(ControllerGetVolumeRequest {
            volume_id: swapped.clone(),
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
    let (k, _) = code(
        c.publish_volume(publish(&swapped, "worker-2"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
    let grow = ControllerExpandVolumeRequest {
        volume_id: swapped.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: 128 * MIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    assert_eq!(
        code(c.expand_volume(grow).await.unwrap_err()).0,
        Code::NotFound
    );
    c.delete_volume(delete(&swapped)).await.unwrap();
    // Still there under its real id.
    let g = c
        .get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(g.volume.unwrap().capacity_bytes, 64 * MIB);
}

/// CreateSnapshot and DeleteVolume of one volume never interleave: a
/// snapshot reported ready is never destroyed by a delete racing it.
#[tokio::test]
async fn create_snapshot_and_delete_volume_do_not_interleave() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = Arc::new(controller(&t.url));
    let v = c
        .create_volume(create("pvc-snap", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    t.sim
        .faults()
        .add(Fault {
            method: Some("POST".into()),
            path_regex: "/snapshot$".into(),
            action: FaultAction::DelayMs(400),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let snap = CreateSnapshotRequest {
        source_volume_id: v.volume_id.clone(),
        name: "snap-race".into(),
        ..Default::default()
    };
    let c2 = c.clone();
    let creating = tokio::spawn(async move { c2.create_snapshot(snap).await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (k, m) = code(c.delete_volume(delete(&v.volume_id)).await.unwrap_err());
    assert_eq!(k, Code::Aborted, "{m}");
    let s = creating.await.unwrap().unwrap().snapshot.unwrap();
    assert!(s.ready_to_use);
    let (k, m) = code(c.delete_volume(delete(&v.volume_id)).await.unwrap_err());
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let listed = c
        .list_snapshots(ListSnapshotsRequest {
            snapshot_id: s.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.entries.len(),
        1,
        "the snapshot reported ready is gone"
    );
}

#[tokio::test]
async fn bad_sizes_names_and_ids_get_clear_answers() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    // xfs below its minimum: raised to it, or OutOfRange when the limit forbids.
    let mut r = create("pvc-xfs", "local-lvm", 64 * MIB, Some("pve1"));
    r.volume_capabilities = vec![cap("xfs")];
    let v = c.create_volume(r.clone()).await.unwrap().volume.unwrap();
    assert_eq!(v.capacity_bytes, 300 * MIB);
    assert_eq!(
        c.create_volume(r).await.unwrap().volume.unwrap().volume_id,
        v.volume_id,
        "idempotent"
    );
    let mut r = create("pvc-xfs-small", "local-lvm", 64 * MIB, Some("pve1"));
    r.volume_capabilities = vec![cap("xfs")];
    r.capacity_range = Some(CapacityRange {
        required_bytes: 64 * MIB,
        limit_bytes: 100 * MIB,
    });
    let (k, m) = code(c.create_volume(r).await.unwrap_err());
    assert_eq!(k, Code::OutOfRange, "{m}");
    assert!(m.contains("xfs"), "{m}");

    // Growing far past what the storage can hold: OutOfRange, not Internal.
    let d = c
        .create_volume(create("pvc-dir", "local", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let grow = ControllerExpandVolumeRequest {
        volume_id: d.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: 1 << 62,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let (k, m) = code(c.expand_volume(grow).await.unwrap_err());
    assert_eq!(k, Code::OutOfRange, "{m}");

    // A 1 MiB id is not echoed whole.
    let huge = format!("sim/pve1/local/0a1b2c3d/{}", "x".repeat(1 << 20));
    let (k, m) = code(
        c.publish_volume(publish(&huge, "worker-1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
    assert!(m.len() < 4096, "error of {} bytes", m.len());
    let (k, m) = code(
        c.publish_volume(publish(
            &format!("bad id {}", "y".repeat(1 << 20)),
            "worker-1",
        ))
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
    assert!(m.len() < 4096, "error of {} bytes", m.len());

    // Control characters of a CSI name never reach PVE's config.
    let name = "pvc-\u{0}nul-\u{1b}[31mesc";
    let v = c
        .create_volume(create(name, "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let id = VolumeId::parse(&v.volume_id).unwrap();
    let cluster = c.cluster("sim").unwrap();
    let h = cluster.holder_of(&id).await.unwrap().unwrap();
    let desc = cluster
        .client
        .vm_config(&h.node, h.vmid, false)
        .await
        .unwrap()
        .get("description")
        .unwrap()
        .to_string();
    assert!(!desc.chars().any(|ch| ch.is_control()), "{desc:?}");
    assert!(desc.contains("\\u{1b}"), "{desc:?}");
}

/// A holder whose disk entry names a disk its storage does not list is in
/// the middle of a create or delete: a create of that name is retryable.
#[tokio::test]
async fn a_holder_between_states_answers_aborted() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-half", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let id = VolumeId::parse(&v.volume_id).unwrap();
    let cluster = c.cluster("sim").unwrap();
    // The disk goes away under the holder, as during a destroy task.
    cluster
        .client
        .free_volume(
            &id.zone,
            &id.storage,
            &id.volid(),
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    let (k, m) = code(
        c.create_volume(create("pvc-half", "shared", 64 * MIB, None))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::Aborted, "{m}");
}

/// unlink drops a whole slot: a slot whose running disk is another volume,
/// with ours only pending there, is never unlinked for ours.
#[tokio::test]
async fn unpublish_never_drops_a_slot_running_another_disk() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let a = c
        .create_volume(create("pvc-pa", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let b = c
        .create_volume(create("pvc-pb", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (a_id, b_id) = (
        VolumeId::parse(&a.volume_id).unwrap(),
        VolumeId::parse(&b.volume_id).unwrap(),
    );
    let slot = c
        .publish_volume(publish(&b.volume_id, "worker-1"))
        .await
        .unwrap()
        .publish_context["bus"]
        .clone();
    // Someone asks PVE to put A into B's slot; QEMU refuses, so A waits there as pending.
    t.sim
        .faults()
        .add(Fault {
            method: Some("POST".into()),
            path_regex: "/qemu/101/config$".into(),
            action: FaultAction::HotplugError("busy".into()),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let set = vec![(slot.clone(), a_id.volid())];
    let cluster = c.cluster("sim").unwrap();
    assert!(cluster
        .client
        .update_vm_config("pve1", 101, &set, std::time::Duration::from_secs(5))
        .await
        .is_err());
    let (k, m) = code(
        c.unpublish_volume(unpublish(&a.volume_id, "worker-1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert_eq!(
        running_slots(&c, "pve1", 101, &b_id.volid()).await,
        vec![slot],
        "B was detached"
    );
}

/// DeleteVolume removes only the temporary snapshots it names itself; a
/// snapshot taken by hand with a similar name keeps the volume.
#[tokio::test]
async fn delete_keeps_a_hand_made_snapshot_named_like_a_temporary_one() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-hand", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let cluster = c.cluster("sim").unwrap();
    let h = cluster
        .holder_of(&VolumeId::parse(&v.volume_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    cluster
        .client
        .create_snapshot(
            &h.node,
            h.vmid,
            "clone_by_hand",
            "admin",
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    let (k, m) = code(c.delete_volume(delete(&v.volume_id)).await.unwrap_err());
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let snaps = cluster.client.snapshots(&h.node, h.vmid).await.unwrap();
    assert!(snaps.iter().any(|s| s.name == "clone_by_hand"), "{snaps:?}");
}
