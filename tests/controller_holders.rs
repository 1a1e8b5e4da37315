//! The holder-VM model against the simulator: every volume is owned by a
//! stopped, tagged VM; expansion, snapshots, restore and clone go through it.

mod support;

use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::csi::*;
use proxmox_csi::volume_id::HOLDER_TAG;
use proxmox_csi::volume_id::{VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use pve_sim::HotplugMode;
use std::collections::HashMap;
use support::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn create(name: &str, storage: &str, size: i64, zone: Option<&str>) -> CreateVolumeRequest {
    let mut r = CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![ext4_writer()],
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

fn code(e: ControllerError) -> (Code, String) {
    let s: tonic::Status = e.into();
    (s.code(), s.message().to_string())
}

fn publish(vol: &str, node: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    }
}

#[tokio::test]
async fn volume_is_owned_by_a_stopped_tagged_holder_vm() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-h", "local-lvm", 64 * MIB, Some("pve2")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let id = VolumeId::parse(&v.volume_id).unwrap();
    assert_eq!(id.zone, "pve2");
    let cluster = c.cluster("sim").unwrap();
    let holder = cluster
        .holder_of(&id)
        .await
        .unwrap()
        .expect("holder exists");
    assert_eq!(holder.node, "pve2");
    assert!(holder.has_tag(HOLDER_TAG));
    assert_eq!(holder.status.as_deref(), Some("stopped"));
    assert!(holder.vmid >= 100_000);
    assert_eq!(id.volname, format!("vm-{}-disk-0", holder.vmid));
    // Protected: removing the holder by hand (UI, API) is refused by PVE.
    let e = cluster
        .client
        .destroy_vm("pve2", holder.vmid, std::time::Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(e.message().contains("protection mode enabled"), "{e}");
    // Deleting the volume removes the holder and the disk.
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    assert!(cluster.holder_of(&id).await.unwrap().is_none());
    assert!(cluster
        .find_volume("pve2", "local-lvm", &id.volid())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn forged_ids_never_touch_other_vms_disks() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    // worker-2's own OS disk, addressed as if it were a volume of this driver.
    let forged = "sim/pve2/local/0a1b2c3d/102/vm-102-disk-0.raw";
    let (k, m) = code(
        c.publish_volume(publish(forged, "worker-2"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound, "{m}");
    c.delete_volume(DeleteVolumeRequest {
        volume_id: forged.into(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    let cfg = c
        .cluster("sim")
        .unwrap()
        .client
        .vm_config("pve2", 102, false)
        .await
        .unwrap();
    assert!(
        cfg.get("scsi0")
            .unwrap()
            .starts_with("local:102/vm-102-disk-0.raw"),
        "worker-2 untouched"
    );
    let r = c
        .expand_volume(ControllerExpandVolumeRequest {
            volume_id: forged.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 64 << 30,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r.unwrap_err()).0, Code::NotFound);
}

#[tokio::test]
async fn expand_offline_through_the_holder_and_online_through_the_worker() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-x", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let grow = |to: i64| ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: to,
            limit_bytes: 0,
        }),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    };
    let r = c.expand_volume(grow(128 * MIB)).await.unwrap();
    assert_eq!(r.capacity_bytes, 128 * MIB);
    assert!(r.node_expansion_required);
    // Same size again: nothing to do, same answer.
    assert_eq!(
        c.expand_volume(grow(128 * MIB))
            .await
            .unwrap()
            .capacity_bytes,
        128 * MIB
    );
    // Smaller: a no-op, never a shrink.
    assert_eq!(
        c.expand_volume(grow(64 * MIB))
            .await
            .unwrap()
            .capacity_bytes,
        128 * MIB
    );
    let slot = c
        .publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap()
        .publish_context["bus"]
        .clone();
    let r = c.expand_volume(grow(256 * MIB)).await.unwrap();
    assert_eq!(r.capacity_bytes, 256 * MIB);
    // Through the worker: its drive entry shows the new size.
    let cfg = c
        .cluster("sim")
        .unwrap()
        .client
        .vm_config("pve1", 101, true)
        .await
        .unwrap();
    assert!(
        cfg.get(&slot).unwrap().contains("size=256M"),
        "{:?}",
        cfg.get(&slot)
    );
    let (k, _) = code(
        c.expand_volume(ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument);
}

#[tokio::test]
async fn snapshots_restore_and_clone() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-s", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let snap = |name: &str, src: &str| CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: src.into(),
        ..Default::default()
    };
    let s1 = c
        .create_snapshot(snap("snap-1", &v.volume_id))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    assert!(s1.ready_to_use);
    assert_eq!(s1.source_volume_id, v.volume_id);
    assert_eq!(s1.size_bytes, 64 * MIB);
    assert!(s1.creation_time.unwrap().seconds > 0);
    // Idempotent; same name for another volume is a conflict.
    let again = c
        .create_snapshot(snap("snap-1", &v.volume_id))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    assert_eq!(again.snapshot_id, s1.snapshot_id);
    let other = c
        .create_volume(create("pvc-s2", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (k, m) = code(
        c.create_snapshot(snap("snap-1", &other.volume_id))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::AlreadyExists, "{m}");
    // Listing by id, by source, and all.
    let list = |sid: &str, src: &str| ListSnapshotsRequest {
        snapshot_id: sid.into(),
        source_volume_id: src.into(),
        ..Default::default()
    };
    assert_eq!(
        c.list_snapshots(list(&s1.snapshot_id, ""))
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
    assert_eq!(
        c.list_snapshots(list("", &v.volume_id))
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
    assert_eq!(
        c.list_snapshots(list("", &other.volume_id))
            .await
            .unwrap()
            .entries
            .len(),
        0
    );
    assert_eq!(
        c.list_snapshots(list("", "")).await.unwrap().entries.len(),
        1
    );
    assert_eq!(
        c.list_snapshots(list("sim/pve1/local-lvm/vm-1-disk-0@sdeadbeef", ""))
            .await
            .unwrap()
            .entries
            .len(),
        0
    );
    // The volume cannot go while a snapshot depends on it.
    let (k, m) = code(
        c.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");

    // Restore into a new, larger volume.
    let mut r = create("pvc-restored", "local-lvm", 128 * MIB, Some("pve1"));
    r.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: s1.snapshot_id.clone(),
            },
        )),
    });
    let restored = c.create_volume(r.clone()).await.unwrap().volume.unwrap();
    assert_eq!(restored.capacity_bytes, 128 * MIB);
    assert_ne!(restored.volume_id, v.volume_id);
    assert!(restored.content_source.is_some());
    assert_eq!(
        c.create_volume(r).await.unwrap().volume.unwrap().volume_id,
        restored.volume_id,
        "idempotent restore"
    );
    // Unknown snapshot: NotFound.
    let mut r = create("pvc-nosnap", "local-lvm", 64 * MIB, Some("pve1"));
    r.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: format!("{}@s{}", v.volume_id, "0".repeat(32)),
            },
        )),
    });
    assert_eq!(
        code(c.create_volume(r).await.unwrap_err()).0,
        Code::NotFound
    );

    // Clone of a volume (goes through a temporary snapshot, which is gone afterwards).
    let mut r = create("pvc-clone", "local-lvm", 64 * MIB, Some("pve1"));
    r.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: v.volume_id.clone(),
            },
        )),
    });
    let clone = c.create_volume(r).await.unwrap().volume.unwrap();
    assert_eq!(clone.capacity_bytes, 64 * MIB);
    assert_eq!(
        c.list_snapshots(list("", &v.volume_id))
            .await
            .unwrap()
            .entries
            .len(),
        1,
        "temporary snapshot removed"
    );
    let cluster = c.cluster("sim").unwrap();
    let h = cluster
        .holder_of(&VolumeId::parse(&v.volume_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cluster
            .client
            .snapshots(&h.node, h.vmid)
            .await
            .unwrap()
            .len(),
        1
    );

    // Delete the snapshot (twice: idempotent), then the volume can go.
    let del = DeleteSnapshotRequest {
        snapshot_id: s1.snapshot_id.clone(),
        secrets: Default::default(),
    };
    c.delete_snapshot(del.clone()).await.unwrap();
    c.delete_snapshot(del).await.unwrap();
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    // The restored volume and the clone are independent of the deleted source.
    let all = c.all_volumes().await.unwrap();
    let ids: Vec<String> = all.iter().map(|f| f.id.to_string()).collect();
    assert!(
        ids.contains(&restored.volume_id)
            && ids.contains(&clone.volume_id)
            && !ids.contains(&v.volume_id),
        "{ids:?}"
    );
}

#[tokio::test]
async fn snapshot_on_a_storage_without_snapshots_is_refused_clearly_while_attached() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-dir", "shared", 64 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    // Raw files have no snapshots: a snapshot is a copy, only of a detached volume.
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    let (k, m) = code(
        c.create_snapshot(CreateSnapshotRequest {
            name: "s".into(),
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert!(m.contains("shared") && m.contains("detach"), "{m}");
    let (k, _) = code(
        c.create_snapshot(CreateSnapshotRequest {
            name: "s".into(),
            source_volume_id: "sim/pve1/x/vm-5-disk-0".into(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
    let (k, _) = code(
        c.create_snapshot(CreateSnapshotRequest {
            name: "".into(),
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::InvalidArgument);
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "worker-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Detached: the snapshot is a copy.
    let snap = c
        .create_snapshot(CreateSnapshotRequest {
            name: "s".into(),
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .snapshot
        .unwrap();
    assert!(snap.snapshot_id.starts_with(&format!("{}@c", v.volume_id)));
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
    // An unattached volume on such a storage can still be cloned (nothing writes to it).
    let mut r = create("pvc-dir-clone", "shared", 64 * MIB, None);
    r.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: v.volume_id.clone(),
            },
        )),
    });
    c.create_volume(r.clone()).await.unwrap();
    // Attached, it cannot be copied consistently.
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    r.name = "pvc-dir-clone-2".into();
    let (k, m) = code(c.create_volume(r).await.unwrap_err());
    assert_eq!(k, Code::FailedPrecondition, "{m}");
}

/// The controller died after creating the holder VM but before giving it its
/// disk. The retried CreateVolume must not be stuck on the leftover.
#[tokio::test]
async fn create_recovers_from_a_holder_left_without_disk() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let name = "pvc-0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b";
    let cluster = c.cluster("sim").unwrap();
    let opts = vec![
        ("name".to_string(), format!("csi-vol-{name}")),
        ("tags".to_string(), HOLDER_TAG.to_string()),
    ];
    cluster
        .client
        .create_vm("pve1", 100_000, &opts, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let v = c
        .create_volume(create(name, "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(v.capacity_bytes, 64 * MIB);
    let holders: Vec<_> = cluster
        .holders()
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.name.as_deref() == Some(&format!("csi-vol-{name}")))
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    // A holder that holds some other disk is never removed automatically.
    let other = "pvc-1f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b";
    let opts = vec![
        ("name".to_string(), format!("csi-vol-{other}")),
        ("tags".to_string(), HOLDER_TAG.to_string()),
        ("scsi1".to_string(), "local-lvm:1".to_string()),
    ];
    cluster
        .client
        .create_vm("pve1", 100_500, &opts, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let (k, m) = code(
        c.create_volume(create(other, "local-lvm", 64 * MIB, Some("pve1")))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    assert!(cluster
        .holders()
        .await
        .unwrap()
        .iter()
        .any(|h| h.vmid == 100_500));
}

/// PVE fails a task half-way (storage error during a clone, a resize, a
/// snapshot). The driver reports PVE's text, leaves nothing behind, and the
/// retry works once PVE is healthy again.
#[tokio::test]
async fn failed_pve_tasks_leave_nothing_behind() {
    use pve_sim::{Fault, FaultAction};
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-f", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let s = c
        .create_snapshot(CreateSnapshotRequest {
            name: "f-snap".into(),
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .snapshot
        .unwrap();
    // Only the writes start tasks; GETs on the same paths must not use up the fault.
    let fail = |path: &str, text: &str| Fault {
        method: Some(
            if path.contains("resize") {
                "PUT"
            } else {
                "POST"
            }
            .into(),
        ),
        path_regex: path.into(),
        action: FaultAction::TaskError(text.into()),
        count: Some(1),
        skip: None,
    };
    let holders_before = c.cluster("sim").unwrap().holders().await.unwrap().len();

    // Clone task dies: no half-made holder stays around.
    t.sim
        .faults()
        .add(fail(
            "/qemu/\\d+/clone$",
            "clone failed: lvcreate 'pve/vm-100002-disk-0' error: out of space",
        ))
        .unwrap();
    let mut r = create("pvc-f-restored", "local-lvm", 64 * MIB, Some("pve1"));
    r.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: s.snapshot_id.clone(),
            },
        )),
    });
    let (k, m) = code(c.create_volume(r.clone()).await.unwrap_err());
    assert!(
        m.contains("out of space"),
        "PVE's reason reaches the CO: {k:?} {m}"
    );
    assert_eq!(
        c.cluster("sim").unwrap().holders().await.unwrap().len(),
        holders_before,
        "no leftover holder"
    );
    let in_range = c
        .cluster("sim")
        .unwrap()
        .client
        .vms()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.vmid >= 100_000)
        .count();
    assert_eq!(in_range, holders_before, "no half-made VM either");
    c.create_volume(r).await.unwrap();

    // Resize task dies: the size stays, the error says why.
    t.sim
        .faults()
        .add(fail("/qemu/\\d+/resize$", "lvextend failed"))
        .unwrap();
    let grow = ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: 128 * MIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let (_, m) = code(c.expand_volume(grow.clone()).await.unwrap_err());
    assert!(m.contains("lvextend failed"), "{m}");
    let got = c
        .get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(got.volume.unwrap().capacity_bytes, 64 * MIB);
    assert_eq!(
        c.expand_volume(grow).await.unwrap().capacity_bytes,
        128 * MIB
    );

    // Snapshot task dies: no snapshot is listed.
    t.sim
        .faults()
        .add(fail("/qemu/\\d+/snapshot$", "snapshot failed"))
        .unwrap();
    let req = CreateSnapshotRequest {
        name: "f-snap-2".into(),
        source_volume_id: v.volume_id.clone(),
        ..Default::default()
    };
    assert!(c.create_snapshot(req.clone()).await.is_err());
    let listed = c
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.entries.len(), 1, "only the first snapshot");
    c.create_snapshot(req).await.unwrap();
}

/// Holder vmids are reused once free. An id of a deleted volume must never
/// name the newer volume that got the same vmid: a late retry of the old
/// DeleteVolume would otherwise delete someone else's data.
#[tokio::test]
async fn ids_of_deleted_volumes_never_name_a_newer_volume() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let old = c
        .create_volume(create("pvc-old", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    c.delete_volume(DeleteVolumeRequest {
        volume_id: old.volume_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    let new = c
        .create_volume(create("pvc-new", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (o, n) = (
        VolumeId::parse(&old.volume_id).unwrap(),
        VolumeId::parse(&new.volume_id).unwrap(),
    );
    assert_eq!(
        o.volid(),
        n.volid(),
        "the vmid (and so the PVE volume) was reused"
    );
    assert_ne!(old.volume_id, new.volume_id);
    assert_ne!(o.wwn(), n.wwn());
    // The late retry of the old delete is a no-op; the new volume survives.
    c.delete_volume(DeleteVolumeRequest {
        volume_id: old.volume_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    assert_eq!(
        code(
            c.publish_volume(publish(&old.volume_id, "worker-1"))
                .await
                .unwrap_err()
        )
        .0,
        Code::NotFound
    );
    let got = c
        .get_volume(ControllerGetVolumeRequest {
            volume_id: new.volume_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(got.volume.unwrap().capacity_bytes, 64 * MIB);
}

/// I/O limits from a VolumeAttributesClass: set at create, kept in the
/// holder, copied to the worker on attach, changed live on the worker.
#[tokio::test]
async fn io_limits_follow_the_volume_and_change_live() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let mut r = create("pvc-qos", "shared", 64 * MIB, None);
    r.mutable_parameters = HashMap::from([
        ("iopsRead".into(), "500".into()),
        ("mbpsWrite".into(), "20".into()),
    ]);
    let v = c.create_volume(r).await.unwrap().volume.unwrap();
    let slot = c
        .publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap()
        .publish_context["bus"]
        .clone();
    let client = &c.cluster("sim").unwrap().client;
    let drive = |cfg: &proxmox_csi::pve::types::VmConfig| {
        proxmox_csi::pve::drive::Drive::parse(cfg.get(&slot).unwrap()).unwrap()
    };
    let cfg = client.vm_config("pve1", 101, true).await.unwrap();
    assert_eq!(drive(&cfg).get("iops_rd"), Some("500"));
    assert_eq!(drive(&cfg).get("mbps_wr"), Some("20"));
    // Changed while attached: applied to the running disk, not left pending.
    let modify = |p: &[(&str, &str)]| ControllerModifyVolumeRequest {
        volume_id: v.volume_id.clone(),
        mutable_parameters: p
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    c.modify_volume(modify(&[("iopsRead", "0"), ("iopsWrite", "300")]))
        .await
        .unwrap();
    let cfg = client.vm_config("pve1", 101, true).await.unwrap();
    assert_eq!(drive(&cfg).get("iops_rd"), None);
    assert_eq!(drive(&cfg).get("iops_wr"), Some("300"));
    assert_eq!(
        drive(&cfg).get("mbps_wr"),
        Some("20"),
        "untouched limits stay"
    );
    // Detach and attach again: the limits come back from the holder.
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "worker-1".into(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    let slot2 = c
        .publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap()
        .publish_context["bus"]
        .clone();
    let cfg = client.vm_config("pve1", 101, true).await.unwrap();
    let d = proxmox_csi::pve::drive::Drive::parse(cfg.get(&slot2).unwrap()).unwrap();
    assert_eq!((d.get("iops_wr"), d.get("iops_rd")), (Some("300"), None));
    // Errors name the field.
    let (k, m) = code(
        c.modify_volume(modify(&[("XXX_FakeKey", "1")]))
            .await
            .unwrap_err(),
    );
    assert!(
        k == Code::InvalidArgument && m.contains("mutable_parameters.XXX_FakeKey"),
        "{m}"
    );
    let (k, _) = code(
        c.modify_volume(ControllerModifyVolumeRequest {
            volume_id: "non-existing-volume-id".into(),
            ..Default::default()
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(k, Code::NotFound);
}

/// Changing I/O limits must not re-plug the disk under a mounted filesystem:
/// the guest keeps the same device.
#[tokio::test]
async fn io_limit_change_keeps_the_guest_device() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP io_limit_change_keeps_the_guest_device: needs root (loop devices)");
        return;
    }
    let t = start_sim(HotplugMode::Loop, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-qos-loop", "shared", 16 * MIB, None))
        .await
        .unwrap()
        .volume
        .unwrap();
    let wwn = c
        .publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap()
        .publish_context["wwn"]
        .clone();
    let link = t.sim.guest_by_id_dir(101).join(format!("wwn-{wwn}"));
    let before = std::fs::read_link(&link).unwrap();
    c.modify_volume(ControllerModifyVolumeRequest {
        volume_id: v.volume_id.clone(),
        mutable_parameters: HashMap::from([("iopsWrite".into(), "100".into())]),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        before,
        "same device after the change"
    );
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "worker-1".into(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    assert!(!link.exists());
}

/// The token the README (and `doctor`) asks for is enough, and one privilege
/// less is refused by PVE with its name: creating a holder VM sets its name,
/// tags and description (VM.Config.Options).
#[tokio::test]
async fn documented_privileges_are_sufficient_and_needed() {
    use pve_sim::TokenConfig;
    use std::collections::BTreeMap;
    let vms = [
        "VM.Allocate",
        "VM.Audit",
        "VM.Config.Disk",
        "VM.Config.Options",
        "VM.Snapshot",
        "VM.Clone",
    ];
    // No Datastore.Allocate: workers use holders' disks through check_volume_access.
    let storage = ["Datastore.AllocateSpace", "Datastore.Audit"];
    let token = |skip: &str| {
        let keep = |l: &[&str]| {
            l.iter()
                .filter(|p| **p != skip)
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        };
        TokenConfig {
            id: "csi@pve!csi".into(),
            secret: "sim-secret".into(),
            privs: Some(vec![]),
            acl: BTreeMap::from([
                ("/vms".to_string(), keep(&vms)),
                ("/storage".to_string(), keep(&storage)),
            ]),
            privsep: true,
        }
    };
    let t = start_sim(HotplugMode::None, |c| c.tokens = vec![token("")]).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-perm", "local-lvm", 64 * MIB, Some("pve1")))
        .await
        .unwrap()
        .volume
        .unwrap();
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    let s = c
        .create_snapshot(CreateSnapshotRequest {
            name: "perm-snap".into(),
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: s.snapshot.unwrap().snapshot_id,
        secrets: Default::default(),
    })
    .await
    .unwrap();
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "worker-1".into(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    c.delete_volume(DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();

    let t = start_sim(HotplugMode::None, |c| {
        c.tokens = vec![token("VM.Config.Options")]
    })
    .await;
    let c = controller(&t.url);
    let (k, m) = code(
        c.create_volume(create("pvc-perm", "local-lvm", 64 * MIB, Some("pve1")))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::PermissionDenied, "{m}");
    assert!(m.contains("VM.Config.Options"), "{m}");
    assert!(
        c.cluster("sim")
            .unwrap()
            .holders()
            .await
            .unwrap()
            .is_empty(),
        "nothing half-made"
    );
}
