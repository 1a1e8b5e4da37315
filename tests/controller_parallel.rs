//! Creates run in parallel: each claims its own vmid without a lock around
//! the create, and a vmid another writer takes first is given up for the
//! next one.

mod support;

use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use proxmox_csi::csi::*;
use proxmox_csi::volume_id::VolumeId;
use pve_sim::{Fault, FaultAction, HotplugMode};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use support::*;

fn create(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 16 << 20,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })),
        }],
        parameters: HashMap::from([("storage".into(), "shared".into())]),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_creates_each_get_their_own_holder() {
    let t = start_sim(HotplugMode::None, |cfg| cfg.task_ms = 100).await;
    let c = Arc::new(controller_with(&t.url, |o| o.storage_concurrency = 8));
    let calls = (0..8).map(|i| {
        let c = c.clone();
        tokio::spawn(async move { c.create_volume(create(&format!("pvc-par-{i}"))).await })
    });
    let mut holders = HashSet::new();
    for r in futures::future::join_all(calls).await {
        let v = r.unwrap().unwrap().volume.unwrap();
        let id = VolumeId::parse(&v.volume_id).unwrap();
        let h = c
            .cluster("sim")
            .unwrap()
            .holder_of(&id)
            .await
            .unwrap()
            .expect("holder");
        assert!(holders.insert(h.vmid), "vmid {} given twice", h.vmid);
    }
    assert_eq!(holders.len(), 8);
    assert_eq!(c.all_volumes().await.unwrap().len(), 8);
}

#[tokio::test]
async fn a_vmid_taken_by_another_writer_is_skipped() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    // The driver's create waits; meanwhile someone else creates the VM it chose.
    t.sim
        .faults()
        .add(Fault {
            method: Some("POST".into()),
            path_regex: "^/nodes/[^/]+/qemu$".into(),
            action: FaultAction::DelayMs(500),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let cluster = c.cluster("sim").unwrap();
    let (created, ()) = tokio::join!(c.create_volume(create("pvc-race")), async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let p = vec![
            ("vmid".to_string(), "100000".to_string()),
            ("name".to_string(), "someone-else".to_string()),
        ];
        let _: serde_json::Value = cluster.client.post("/nodes/pve1/qemu", &p).await.unwrap();
    });
    let v = created.unwrap().volume.unwrap();
    let id = VolumeId::parse(&v.volume_id).unwrap();
    let h = cluster.holder_of(&id).await.unwrap().expect("holder");
    assert_ne!(h.vmid, 100000, "the other writer's VM is not the holder");
    let vms = cluster.client.vms().await.unwrap();
    let other = vms.iter().find(|v| v.vmid == 100000).expect("other VM");
    assert_eq!(other.name.as_deref(), Some("someone-else"));
}
