//! A token scoped to one tenant: ACLs only on /pool/<pool>, /storage/<id> and the worker VM.
//! With all of them every controller RPC works; with any one privilege removed, doctor names
//! it and the first RPC that needs it fails PermissionDenied naming it (docs/runbook.md has
//! the same table).

mod support;

use proxmox_csi::config::ConfigFile;
use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::controller::{Controller, ControllerOptions};
use proxmox_csi::csi::*;
use proxmox_csi::doctor::{self, DoctorOptions, Status};
use proxmox_csi::volume_id::{TOPOLOGY_REGION, TOPOLOGY_ZONE};
use pve_sim::{HotplugMode, PoolConfig, TokenConfig, UserConfig, VmConfig};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use support::*;
use tonic::Code;

const MIB: i64 = 1 << 20;
const POOL: &str = "k8s-a";
const STORAGE: &str = "local-lvm";
/// worker-1 in the simulator's default layout.
const WORKER: &str = "/vms/101";

/// (ACL path, privilege) the tenant's role needs: the table of docs/runbook.md.
fn needed() -> Vec<(String, &'static str)> {
    let pool = format!("/pool/{POOL}");
    let storage = format!("/storage/{STORAGE}");
    let mut out = Vec::new();
    for (p, _) in proxmox_csi::doctor::HOLDER_PRIVS {
        out.push((pool.clone(), *p));
    }
    for (p, _) in proxmox_csi::doctor::STORAGE_PRIVS {
        out.push((storage.clone(), *p));
    }
    for (p, _) in proxmox_csi::doctor::VM_PRIVS {
        out.push((WORKER.to_string(), *p));
    }
    out
}

fn acl_without(skip: Option<(&str, &str)>) -> BTreeMap<String, Vec<String>> {
    let mut acl: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, p) in needed() {
        if skip == Some((path.as_str(), p)) {
            continue;
        }
        acl.entry(path).or_default().push(p.to_string());
    }
    acl
}

/// A simulator with the tenant's pool, its user (holding the full role) and its
/// privilege-separated token (holding the role minus `skip`).
async fn tenant_sim(skip: Option<(&str, &str)>) -> TestSim {
    start_sim(HotplugMode::None, |c| {
        // Another tenant's VMs in the holder range, invisible to this token: creates and
        // clones that pick their ids are refused by PVE and must move on.
        for vmid in [100_000, 100_002] {
            c.vms.push(VmConfig {
                vmid,
                name: format!("other-tenant-{vmid}"),
                node: "pve2".into(),
                status: "stopped".into(),
                ..Default::default()
            });
        }
        c.pools = vec![PoolConfig {
            poolid: POOL.into(),
            ..Default::default()
        }];
        c.users.push(UserConfig {
            userid: "kube-a@pve".into(),
            password: "unused".into(),
            privs: Some(vec![]),
            acl: acl_without(None),
        });
        c.tokens = vec![TokenConfig {
            id: "kube-a@pve!csi".into(),
            secret: "tenant-secret".into(),
            privs: Some(vec![]),
            acl: acl_without(skip),
            privsep: true,
        }];
    })
    .await
}

fn tenant_config(url: &str) -> ConfigFile {
    let mut cfg = cluster_config(url);
    cfg.clusters[0].token_id = Some("kube-a@pve!csi".into());
    cfg.clusters[0].token_secret = Some("tenant-secret".into());
    cfg.clusters[0].pool = Some(POOL.into());
    cfg
}

fn tenant_controller(url: &str) -> Controller {
    let opts = ControllerOptions {
        task_timeout: Duration::from_secs(10),
        config_retry_delay: Duration::from_millis(50),
        cluster_id: Some("a".into()),
        ..Default::default()
    };
    Controller::new(&tenant_config(url), opts).unwrap()
}

fn create(name: &str, source: Option<VolumeContentSource>) -> CreateVolumeRequest {
    let t = Topology {
        segments: HashMap::from([
            (TOPOLOGY_REGION.into(), "sim".into()),
            (TOPOLOGY_ZONE.into(), "pve1".into()),
        ]),
    };
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 64 * MIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![ext4_writer()],
        parameters: HashMap::from([("storage".into(), STORAGE.into())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        }),
        volume_content_source: source,
        ..Default::default()
    }
}

/// The first RPC of the sequence that failed, with its code and message.
type Failure = (&'static str, Code, String);

fn fail(rpc: &'static str) -> impl FnOnce(ControllerError) -> Failure {
    move |e| {
        let s: tonic::Status = e.into();
        (rpc, s.code(), s.message().to_string())
    }
}

/// Every controller RPC once, in the order a workload meets them.
async fn exercise(c: &Controller) -> Result<(), Failure> {
    let v = c
        .create_volume(create("pvc-acl", None))
        .await
        .map_err(fail("CreateVolume"))?
        .volume
        .unwrap();
    c.publish_volume(ControllerPublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "worker-1".into(),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    })
    .await
    .map_err(fail("ControllerPublishVolume"))?;
    let s = c
        .create_snapshot(CreateSnapshotRequest {
            name: "acl-snap".into(),
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .map_err(fail("CreateSnapshot"))?
        .snapshot
        .unwrap();
    let listed = c
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: v.volume_id.clone(),
            ..Default::default()
        })
        .await
        .map_err(fail("ListSnapshots"))?;
    assert_eq!(listed.entries.len(), 1);
    let source = VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: s.snapshot_id.clone(),
            },
        )),
    };
    let restored = c
        .create_volume(create("pvc-acl-restored", Some(source)))
        .await
        .map_err(fail("CreateVolume (from snapshot)"))?
        .volume
        .unwrap();
    c.expand_volume(ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: 128 * MIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    })
    .await
    .map_err(fail("ControllerExpandVolume"))?;
    let all = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .map_err(fail("ListVolumes"))?;
    assert_eq!(all.entries.len(), 2);
    c.get_capacity(GetCapacityRequest {
        parameters: HashMap::from([("storage".into(), STORAGE.into())]),
        ..Default::default()
    })
    .await
    .map_err(fail("GetCapacity"))?;
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: v.volume_id.clone(),
        node_id: "worker-1".into(),
        secrets: Default::default(),
    })
    .await
    .map_err(fail("ControllerUnpublishVolume"))?;
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: s.snapshot_id,
        secrets: Default::default(),
    })
    .await
    .map_err(fail("DeleteSnapshot"))?;
    for id in [v.volume_id, restored.volume_id] {
        c.delete_volume(DeleteVolumeRequest {
            volume_id: id,
            secrets: Default::default(),
        })
        .await
        .map_err(fail("DeleteVolume"))?;
    }
    Ok(())
}

fn doctor_opts() -> DoctorOptions {
    DoctorOptions {
        storages: vec![STORAGE.into()],
        node_ids: vec!["worker-1".into()],
    }
}

#[tokio::test]
async fn pool_storage_and_worker_acls_are_enough() {
    let t = tenant_sim(None).await;
    let report = doctor::run(&tenant_config(&t.url), &doctor_opts()).await;
    let text = report.to_text();
    assert!(
        report
            .checks
            .iter()
            .all(|c| c.status == Status::Pass || c.name == "tls"),
        "{text}"
    );
    assert!(
        report.find(&format!("privileges /pool/{POOL}")).is_some(),
        "{text}"
    );
    let c = tenant_controller(&t.url);
    exercise(&c).await.unwrap_or_else(|f| panic!("{f:?}"));
    // Every holder went into the pool and left it again when destroyed; the other
    // tenant's VMs are untouched.
    let state = t.sim.state_json();
    for vmid in ["100000", "100002"] {
        assert!(state["vms"][vmid].is_object(), "{vmid} gone: {state}");
    }
    assert_eq!(
        state["pools"][POOL]["vms"],
        serde_json::json!([]),
        "{state}"
    );
}

#[tokio::test]
async fn an_unknown_pool_is_named_by_doctor_and_create() {
    let t = tenant_sim(None).await;
    let mut cfg = tenant_config(&t.url);
    cfg.clusters[0].pool = Some("k8s-typo".into());
    let report = doctor::run(&cfg, &doctor_opts()).await;
    let text = report.to_text();
    let check = report
        .find("pool k8s-typo")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(check.status, Status::Fail, "{text}");
    assert!(check.detail.contains("pveum pool add k8s-typo"), "{text}");
    assert!(
        report.find(&format!("pool {POOL}")).is_none(),
        "only the configured pool is checked"
    );
    let opts = ControllerOptions {
        task_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let c = Controller::new(&cfg, opts).unwrap();
    let (rpc, code, msg) = exercise(&c).await.unwrap_err();
    assert_eq!(
        (rpc, code),
        ("CreateVolume", Code::PermissionDenied),
        "{msg}"
    );
    assert!(msg.contains("pool 'k8s-typo' does not exist"), "{msg}");
}

#[tokio::test]
async fn each_missing_privilege_is_named_by_doctor_and_the_first_rpc_needing_it() {
    let mut seen = Vec::new();
    for (path, privilege) in needed() {
        let t = tenant_sim(Some((&path, privilege))).await;
        let report = doctor::run(&tenant_config(&t.url), &doctor_opts()).await;
        let text = report.to_text();
        let named = format!("{privilege} on {path}");
        // A worker the token cannot audit is hidden from it, so doctor cannot know its
        // vmid; it says the VM is invisible and names the privilege.
        let worker_hidden = path == WORKER && privilege == "VM.Audit";
        let doctor_names_it = report
            .failures()
            .any(|c| c.detail.contains(&named) || (worker_hidden && c.detail.contains("VM.Audit")));
        assert!(doctor_names_it, "doctor does not name {named}:\n{text}");

        let c = tenant_controller(&t.url);
        let (rpc, code, msg) = match exercise(&c).await {
            Ok(()) => panic!("every RPC worked without {named}"),
            Err(f) => f,
        };
        assert!(msg.contains(privilege), "{rpc} without {named}: {msg}");
        if worker_hidden {
            // PVE's listing hides the worker: the node is not found, and the message says why.
            assert_eq!(code, Code::NotFound, "{rpc} without {named}: {msg}");
        } else {
            assert_eq!(code, Code::PermissionDenied, "{rpc} without {named}: {msg}");
            // The path is the one granted, or the holder VM the pool passes it on to.
            let path_named =
                msg.contains(&path) || (path.starts_with("/pool/") && msg.contains("/vms/"));
            assert!(path_named, "{rpc} without {named}: {msg}");
        }
        seen.push(format!("{named}: {rpc} -> {code:?}: {msg}"));
    }
    println!(
        "first RPC failing per missing privilege:\n{}",
        seen.join("\n")
    );
}
