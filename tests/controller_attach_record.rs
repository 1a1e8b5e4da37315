//! The attach record in a holder's description: publish writes it before
//! the hot-plug under PVE's digest check, every call verifies it against
//! the one VM it names, a stale one is repaired, a fresh one naming a VM
//! without the disk (a publish cut off or still under way) holds off
//! publishes elsewhere, and two controllers racing never put a disk into
//! two VMs.

mod support;

use proxmox_csi::controller::attach_record::AttachRecord;
use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::controller::Controller;
use proxmox_csi::csi::*;
use proxmox_csi::volume_id::VolumeId;
use pve_sim::{Fault, FaultAction, HotplugMode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tonic::Code;

fn create(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 16 << 20,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![ext4_writer()],
        parameters: HashMap::from([("storage".into(), "shared".into())]),
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

fn unpublish(vol: &str, node: &str) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        secrets: Default::default(),
    }
}

fn code(e: ControllerError) -> (Code, String) {
    let s: tonic::Status = e.into();
    (s.code(), s.message().to_string())
}

/// The holder's (node, vmid, description).
async fn holder(c: &Controller, vol: &str) -> (String, u64, String) {
    let cluster = c.cluster("sim").unwrap();
    let h = cluster
        .holder_of(&VolumeId::parse(vol).unwrap())
        .await
        .unwrap()
        .unwrap();
    let cfg = cluster
        .client
        .vm_config(&h.node, h.vmid, false)
        .await
        .unwrap();
    (
        h.node,
        h.vmid,
        cfg.get("description").unwrap_or_default().to_string(),
    )
}

async fn set_record(c: &Controller, vol: &str, record: AttachRecord) {
    let (node, vmid, description) = holder(c, vol).await;
    let p = vec![("description".to_string(), record.apply(&description))];
    c.cluster("sim")
        .unwrap()
        .client
        .set_vm_config_sync(&node, vmid, &p)
        .await
        .unwrap();
}

/// The VMs (worker-1 = 101 on pve1, worker-2 = 102 on pve2) whose config
/// has the volume, applied or pending.
async fn vms_with(c: &Controller, vol: &str) -> Vec<u64> {
    let volid = VolumeId::parse(vol).unwrap().volid();
    let client = &c.cluster("sim").unwrap().client;
    let mut out = Vec::new();
    for (node, vmid) in [("pve1", 101), ("pve2", 102)] {
        let slots = client.vm_slots(node, vmid).await.unwrap();
        if slots.iter().any(|s| s.holds(&volid)) {
            out.push(vmid);
        }
    }
    out
}

fn backdated(vmid: u64) -> AttachRecord {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    AttachRecord::At {
        vmid,
        since: now - 3600,
    }
}

#[tokio::test]
async fn publish_records_and_unpublish_clears() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-rec"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (_, _, d) = holder(&c, &v.volume_id).await;
    assert_eq!(AttachRecord::parse(&d), AttachRecord::Detached, "{d}");
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    let (_, _, d) = holder(&c, &v.volume_id).await;
    assert!(AttachRecord::parse(&d).names(101), "{d}");
    assert!(d.contains("proxmox-csi volume pvc-rec"), "{d}");
    c.unpublish_volume(unpublish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    let (_, _, d) = holder(&c, &v.volume_id).await;
    assert_eq!(AttachRecord::parse(&d), AttachRecord::Detached, "{d}");
}

/// A publish cut off between recording and hot-plug leaves a record naming
/// a VM without the disk. Fresh, it holds off a publish elsewhere (it may be
/// another controller's publish still under way); the retry to the same VM
/// completes; once older than the lease it is repaired.
#[tokio::test]
async fn a_fresh_record_without_the_disk_holds_off_other_vms_until_the_lease() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-cut"))
        .await
        .unwrap()
        .volume
        .unwrap();
    set_record(&c, &v.volume_id, AttachRecord::at_now(102)).await;
    let (k, m) = code(
        c.publish_volume(publish(&v.volume_id, "worker-1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::Aborted, "{m}");
    assert!(m.contains("VM 102"), "{m}");
    let (k, m) = code(
        c.delete_volume(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap_err(),
    );
    assert_eq!(
        k,
        Code::Aborted,
        "delete while a publish may be under way: {m}"
    );
    assert!(vms_with(&c, &v.volume_id).await.is_empty());
    // The retry of the cut-off publish itself goes through.
    c.publish_volume(publish(&v.volume_id, "worker-2"))
        .await
        .unwrap();
    assert_eq!(vms_with(&c, &v.volume_id).await, vec![102]);
    c.unpublish_volume(unpublish(&v.volume_id, "worker-2"))
        .await
        .unwrap();

    // Older than the lease: stale, repaired by the next publish.
    set_record(&c, &v.volume_id, backdated(102)).await;
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    assert_eq!(vms_with(&c, &v.volume_id).await, vec![101]);
    let (_, _, d) = holder(&c, &v.volume_id).await;
    assert!(AttachRecord::parse(&d).names(101), "{d}");
}

/// A record naming a VM that has the disk is believed whatever its age; one
/// naming a VM that lost the disk (detached by hand) or no longer exists is
/// stale.
#[tokio::test]
async fn records_are_verified_against_the_vm_they_name() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-ver"))
        .await
        .unwrap()
        .volume
        .unwrap();
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    set_record(&c, &v.volume_id, backdated(101)).await;
    let (k, m) = code(
        c.publish_volume(publish(&v.volume_id, "worker-2"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let g = c
        .get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(g.status.unwrap().published_node_ids, vec!["worker-1"]);

    // Detached by hand: the record still names 101, which no longer has it.
    let cluster = c.cluster("sim").unwrap();
    let volid = VolumeId::parse(&v.volume_id).unwrap().volid();
    let slots: Vec<String> = cluster
        .client
        .vm_slots("pve1", 101)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.holds(&volid))
        .map(|s| s.slot)
        .collect();
    cluster.client.unlink("pve1", 101, &slots).await.unwrap();
    let g = c
        .get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await
        .unwrap();
    assert!(g.status.unwrap().published_node_ids.is_empty());
    c.publish_volume(publish(&v.volume_id, "worker-2"))
        .await
        .unwrap();
    assert_eq!(vms_with(&c, &v.volume_id).await, vec![102]);
    c.unpublish_volume(unpublish(&v.volume_id, "worker-2"))
        .await
        .unwrap();

    // A record naming a VM that does not exist.
    set_record(&c, &v.volume_id, AttachRecord::at_now(4242)).await;
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    assert_eq!(vms_with(&c, &v.volume_id).await, vec![101]);
}

/// A holder from before records (no record at all) is looked up by reading
/// every VM, so an attachment it has is still seen; its next publish
/// writes the record.
#[tokio::test]
async fn a_holder_without_a_record_is_looked_up_the_old_way() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-old"))
        .await
        .unwrap()
        .volume
        .unwrap();
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    let (node, vmid, d) = holder(&c, &v.volume_id).await;
    let bare = d.split_once("; ").unwrap().1.to_string();
    assert_eq!(AttachRecord::parse(&bare), AttachRecord::Unknown);
    c.cluster("sim")
        .unwrap()
        .client
        .set_vm_config_sync(&node, vmid, &vec![("description".into(), bare)])
        .await
        .unwrap();
    let (k, m) = code(
        c.publish_volume(publish(&v.volume_id, "worker-2"))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::FailedPrecondition, "{m}");
    let all = c.all_volumes().await.unwrap();
    assert_eq!(all[0].published_to, vec!["worker-1"]);
    c.publish_volume(publish(&v.volume_id, "worker-1"))
        .await
        .unwrap();
    let (_, _, d) = holder(&c, &v.volume_id).await;
    assert!(AttachRecord::parse(&d).names(101), "{d}");
}

/// Two controller processes (separate in-flight keys) publish one volume to
/// two VMs at once, again and again: the holder's digest lets one record
/// win, and the disk is never in both VMs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_controllers_racing_never_put_a_disk_into_two_vms() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let a = Arc::new(controller(&t.url));
    let b = Arc::new(controller(&t.url));
    let v = a
        .create_volume(create("pvc-duel"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let mut wins = 0;
    for round in 0..6 {
        let (ra, rb) = tokio::join!(
            a.publish_volume(publish(&v.volume_id, "worker-1")),
            b.publish_volume(publish(&v.volume_id, "worker-2"))
        );
        let on = vms_with(&a, &v.volume_id).await;
        assert!(on.len() <= 1, "round {round}: disk in {on:?}");
        match (ra.is_ok(), rb.is_ok()) {
            (true, true) => panic!("round {round}: both publishes succeeded"),
            (true, false) => assert_eq!(on, vec![101], "round {round}"),
            (false, true) => assert_eq!(on, vec![102], "round {round}"),
            (false, false) => {}
        }
        wins += usize::from(ra.is_ok() || rb.is_ok());
        for (ctl, node) in [(&a, "worker-1"), (&b, "worker-2")] {
            ctl.unpublish_volume(unpublish(&v.volume_id, node))
                .await
                .unwrap();
        }
        assert!(vms_with(&a, &v.volume_id).await.is_empty());
    }
    assert!(wins > 0, "no publish ever succeeded");
}

/// A record replaced during the hot-plug (another writer, past the lease)
/// makes the publish take its disk out again.
#[tokio::test]
async fn a_record_replaced_during_the_hot_plug_takes_the_disk_out_again() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-late"))
        .await
        .unwrap()
        .volume
        .unwrap();
    t.sim
        .faults()
        .add(Fault {
            method: Some("POST".into()),
            path_regex: "/qemu/101/config$".into(),
            action: FaultAction::DelayMs(600),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let (r, ()) = tokio::join!(c.publish_volume(publish(&v.volume_id, "worker-1")), async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        set_record(&c, &v.volume_id, AttachRecord::at_now(102)).await;
    });
    let (k, m) = code(r.unwrap_err());
    assert_eq!(k, Code::Aborted, "{m}");
    assert!(vms_with(&c, &v.volume_id).await.is_empty());
}
