//! Tenancy as PVE does it: resource pools (pve-manager API2/Pool.pm), privileges inherited
//! through /pool/<pool> (pve-access-control RPCEnvironment::compile_acl_path), privilege-
//! separated tokens (RPCEnvironment::permissions) and access to a disk owned by another VM
//! (pve-storage Storage.pm check_volume_access via qemu-server $check_storage_access).

mod support;

use pve_sim::{TokenConfig, UserConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use support::{start, urlencode, Harness, TOKEN};

const TENANT: &str = "PVEAPIToken=tenant@pve!csi=t";
const NOSEP: &str = "PVEAPIToken=tenant@pve!nosep=n";
const NOAUDIT: &str = "PVEAPIToken=tenant@pve!noaudit=a";

fn acl(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries
        .iter()
        .map(|(p, ps)| (p.to_string(), ps.iter().map(|s| s.to_string()).collect()))
        .collect()
}

const POOL_PRIVS: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Clone",
    "VM.Config.Disk",
    "VM.Config.Options",
    "VM.Snapshot",
    "Pool.Audit",
];
const STORAGE_PRIVS: &[&str] = &["Datastore.AllocateSpace", "Datastore.Audit"];
const WORKER_PRIVS: &[&str] = &["VM.Audit", "VM.Config.Disk"];

async fn tenant_sim() -> Harness {
    start(|c| {
        let user = acl(&[
            ("/pool/t1", POOL_PRIVS),
            ("/storage/local-lvm", STORAGE_PRIVS),
            ("/vms/101", WORKER_PRIVS),
        ]);
        c.users.push(UserConfig {
            userid: "tenant@pve".into(),
            password: "pw".into(),
            privs: Some(vec![]),
            acl: user.clone(),
        });
        // The token also names Datastore.Allocate, which its user lacks: privsep drops it.
        let mut own = user.clone();
        own.get_mut("/storage/local-lvm")
            .unwrap()
            .push("Datastore.Allocate".into());
        c.tokens.push(TokenConfig {
            id: "tenant@pve!csi".into(),
            secret: "t".into(),
            privs: Some(vec![]),
            acl: own,
            privsep: true,
        });
        // Without privsep a token is its user, whatever it lists itself.
        c.tokens.push(TokenConfig {
            id: "tenant@pve!nosep".into(),
            secret: "n".into(),
            privs: Some(vec![]),
            acl: BTreeMap::new(),
            privsep: false,
        });
        let mut no_audit = user;
        no_audit.insert(
            "/storage/local-lvm".into(),
            vec!["Datastore.AllocateSpace".into()],
        );
        c.tokens.push(TokenConfig {
            id: "tenant@pve!noaudit".into(),
            secret: "a".into(),
            privs: Some(vec![]),
            acl: no_audit,
            privsep: true,
        });
    })
    .await
}

fn msg(b: &Value) -> &str {
    b["message"].as_str().unwrap_or("")
}

async fn as_token<'a>(h: &'a mut Harness, token: &str) -> &'a mut Harness {
    h.auth = Some(token.into());
    h
}

async fn upid_ok(h: &Harness, node: &str, r: (u16, Value)) {
    assert_eq!(r.0, 200, "{}", r.1);
    let upid = r.1["data"].as_str().unwrap().to_string();
    assert_eq!(h.wait(node, &upid).await, "OK");
}

async fn pool_vmids(h: &Harness, pool: &str) -> Vec<u64> {
    let (s, b) = h.get("/pools", &[("poolid", pool)]).await;
    assert_eq!(s, 200, "{b}");
    b["data"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["vmid"].as_u64())
        .collect()
}

#[tokio::test]
async fn pools_api_and_membership() {
    let mut h = tenant_sim().await;
    let (s, _) = h
        .post("/pools", &[("poolid", "t1"), ("comment", "tenant 1")])
        .await;
    assert_eq!(s, 200);
    let (s, b) = h.post("/pools", &[("poolid", "t1")]).await;
    assert_eq!(
        (s, msg(&b)),
        (500, "create pool failed: pool 't1' already exists\n")
    );
    let (s, b) = h.post("/pools", &[("poolid", "1bad")]).await;
    assert_eq!(
        (s, msg(&b)),
        (
            500,
            "create pool failed: pool name must start with a letter\n"
        )
    );
    let (_, b) = h.get("/pools", &[]).await;
    assert_eq!(
        b["data"],
        serde_json::json!([{"poolid": "t1", "comment": "tenant 1"}])
    );

    // Storage membership through PUT /pools.
    let (s, _) = h
        .put("/pools", &[("poolid", "t1"), ("storage", "local-lvm")])
        .await;
    assert_eq!(s, 200);
    let (s, b) = h
        .put("/pools", &[("poolid", "t1"), ("storage", "local-lvm")])
        .await;
    assert_eq!(
        (s, msg(&b)),
        (
            500,
            "update pools failed: Storage 'local-lvm' is already a pool member\n"
        )
    );

    // A tenant creates into its pool; without `pool` it has no VM.Allocate anywhere.
    as_token(&mut h, TENANT).await;
    let (s, b) = h
        .post("/nodes/pve1/qemu", &[("vmid", "200"), ("name", "h1")])
        .await;
    assert_eq!((s, msg(&b)), (403, "Permission check failed\n"));
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", "200"), ("name", "h1"), ("pool", "nope")],
        )
        .await;
    assert_eq!(
        (s, msg(&b)),
        (
            403,
            "Permission check failed (pool 'nope' does not exist)\n"
        )
    );
    let r = h
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", "200"), ("name", "h1"), ("pool", "t1")],
        )
        .await;
    upid_ok(&h, "pve1", r).await;
    assert_eq!(pool_vmids(&h, "t1").await, vec![200]);

    // Listings show what VM.Audit (pool-inherited or direct) allows, with the pool.
    let (_, b) = h.get("/cluster/resources", &[("type", "vm")]).await;
    let seen: Vec<(u64, Value)> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["vmid"].as_u64().unwrap(), v["pool"].clone()))
        .collect();
    assert_eq!(seen, vec![(101, Value::Null), (200, "t1".into())]);
    let (_, b) = h.get("/cluster/resources", &[("type", "storage")]).await;
    let storages: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["storage"].as_str().unwrap())
        .collect();
    assert_eq!(storages, vec!["local-lvm", "local-lvm"]);

    // Clone into the pool; a clone outside it needs VM.Allocate on /vms/<newid>.
    let (s, b) = h
        .post("/nodes/pve1/qemu/200/clone", &[("newid", "201")])
        .await;
    assert_eq!((s, msg(&b)), (403, "Permission check failed\n"));
    let r = h
        .post(
            "/nodes/pve1/qemu/200/clone",
            &[("newid", "201"), ("pool", "t1")],
        )
        .await;
    upid_ok(&h, "pve1", r).await;
    assert_eq!(pool_vmids(&h, "t1").await, vec![200, 201]);

    // A non-empty pool stays; destroy takes the VM out of it.
    as_token(&mut h, TOKEN).await;
    let (s, b) = h.delete("/pools?poolid=t1").await;
    assert_eq!(
        (s, msg(&b)),
        (
            500,
            "delete pool failed: pool 't1' is not empty (contains VM 200)\n"
        )
    );
    as_token(&mut h, TENANT).await;
    for vmid in ["200", "201"] {
        let r = h.delete(&format!("/nodes/pve1/qemu/{vmid}")).await;
        upid_ok(&h, "pve1", r).await;
    }
    assert!(pool_vmids(&h, "t1").await.is_empty());
    as_token(&mut h, TOKEN).await;
    let (s, b) = h.delete("/pools?poolid=t1").await;
    assert_eq!(
        (s, msg(&b)),
        (
            500,
            "delete pool failed: pool 't1' is not empty (contains storage 'local-lvm')\n"
        )
    );
    let (s, _) = h
        .put(
            "/pools",
            &[("poolid", "t1"), ("storage", "local-lvm"), ("delete", "1")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h.delete("/pools?poolid=t1").await.0, 200);
    let (_, b) = h.get("/pools", &[]).await;
    assert_eq!(b["data"], serde_json::json!([]));
}

/// A holder in the pool, its disk on local-lvm, attached to worker 101.
#[tokio::test]
async fn foreign_disk_access_and_privsep() {
    let mut h = tenant_sim().await;
    assert_eq!(h.post("/pools", &[("poolid", "t1")]).await.0, 200);
    as_token(&mut h, TENANT).await;
    let r = h
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", "200"), ("name", "h1"), ("pool", "t1")],
        )
        .await;
    upid_ok(&h, "pve1", r).await;
    let (s, b) = h
        .alloc("pve1", "local-lvm", "200", "vm-200-disk-0", "64M")
        .await;
    assert_eq!(s, 200, "{b}");
    let volid = b["data"].as_str().unwrap().to_string();
    // The owner puts its own disk in its config: no check beyond VM.Config.Disk.
    let (s, b) = h
        .put("/nodes/pve1/qemu/200/config", &[("scsi0", &volid)])
        .await;
    assert_eq!(s, 200, "{b}");
    // A worker takes the holder's disk: Datastore.Audit + VM.Config.Disk on the owner.
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("scsi5", &volid)])
        .await;
    assert_eq!(s, 200, "{b}");
    // A VM outside the tenant's ACLs: the schema's `any` check of update_vm names them all.
    let (s, b) = h
        .put("/nodes/pve2/qemu/102/config", &[("scsi5", &volid)])
        .await;
    assert_eq!(
        (s, msg(&b)),
        (403, "Permission check failed (/vms/102, VM.Config.Disk|VM.Config.CDROM|VM.Config.CPU|VM.Config.Memory|VM.Config.Network|VM.Config.HWType|VM.Config.Options|VM.Config.Cloudinit)\n")
    );
    // Without Datastore.Audit on the storage the foreign disk is refused.
    as_token(&mut h, NOAUDIT).await;
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("scsi6", &volid)])
        .await;
    assert_eq!(
        (s, msg(&b)),
        (
            403,
            "Permission check failed (/storage/local-lvm, Datastore.Audit)\n"
        )
    );
    // The tenant token names Datastore.Allocate, its user does not: privsep intersects.
    as_token(&mut h, TENANT).await;
    let path = format!(
        "/nodes/pve1/storage/local-lvm/content/{}",
        urlencode(&volid)
    );
    let (s, b) = h.delete(&path).await;
    assert_eq!(
        (s, msg(&b)),
        (
            403,
            "Permission check failed (/storage/local-lvm, Datastore.Allocate)\n"
        )
    );
    let (s, b) = h.get("/access/permissions", &[("path", "/vms/200")]).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["/vms/200"]["VM.Config.Disk"], 1, "{b}");
    assert!(b["data"]["/vms/200"].get("Sys.Audit").is_none(), "{b}");
    // Without privsep the token is its user: same privileges, same refusals.
    as_token(&mut h, NOSEP).await;
    let (s, b) = h.get("/nodes/pve1/qemu/200/config", &[]).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = h.delete(&path).await;
    assert_eq!(
        (s, msg(&b)),
        (
            403,
            "Permission check failed (/storage/local-lvm, Datastore.Allocate)\n"
        )
    );
    // A member storage inherits the pool's roles too (compile_acl_path's "/storage/$storeid").
    as_token(&mut h, TENANT).await;
    let (_, b) = h
        .get("/access/permissions", &[("path", "/storage/local")])
        .await;
    assert!(b["data"]["/storage/local"].get("VM.Audit").is_none(), "{b}");
    as_token(&mut h, TOKEN).await;
    let (s, _) = h
        .put("/pools", &[("poolid", "t1"), ("storage", "local")])
        .await;
    assert_eq!(s, 200);
    as_token(&mut h, TENANT).await;
    let (_, b) = h
        .get("/access/permissions", &[("path", "/storage/local")])
        .await;
    assert_eq!(b["data"]["/storage/local"]["VM.Audit"], 1, "{b}");
    // Outside the pool, nothing of the holder is visible once it leaves the pool.
    as_token(&mut h, TOKEN).await;
    let (s, _) = h
        .put(
            "/pools",
            &[("poolid", "t1"), ("vms", "200"), ("delete", "1")],
        )
        .await;
    assert_eq!(s, 200);
    as_token(&mut h, TENANT).await;
    let (s, b) = h.get("/nodes/pve1/qemu/200/config", &[]).await;
    assert_eq!(
        (s, msg(&b)),
        (403, "Permission check failed (/vms/200, VM.Audit)\n")
    );
}

/// pve-manager API2/Tasks.pm node_tasks: without Sys.Audit on the node a token sees only its
/// own tasks; `source=active` lists running ones, `vmid` filters by task id.
#[tokio::test]
async fn task_list_shows_a_token_only_its_own_tasks() {
    let mut h = tenant_sim().await;
    assert_eq!(h.post("/pools", &[("poolid", "t1")]).await.0, 200);
    let r = h
        .post("/nodes/pve1/qemu", &[("vmid", "300"), ("name", "admin")])
        .await;
    upid_ok(&h, "pve1", r).await;
    as_token(&mut h, TENANT).await;
    let r = h
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", "200"), ("name", "h1"), ("pool", "t1")],
        )
        .await;
    upid_ok(&h, "pve1", r).await;
    let users = |b: &Value| -> Vec<String> {
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["user"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, b) = h.get("/nodes/pve1/tasks", &[("source", "all")]).await;
    assert_eq!(s, 200);
    assert_eq!(users(&b), vec!["tenant@pve!csi"]);
    // Finished tasks are not active.
    let (_, b) = h.get("/nodes/pve1/tasks", &[("source", "active")]).await;
    assert!(users(&b).is_empty(), "{b}");
    as_token(&mut h, TOKEN).await;
    let (_, b) = h
        .get("/nodes/pve1/tasks", &[("source", "all"), ("vmid", "300")])
        .await;
    assert_eq!(users(&b), vec!["csi@pve!csi"]);
    let (_, b) = h.get("/nodes/pve1/tasks", &[]).await;
    assert_eq!(users(&b).len(), 2, "{b}");
}
