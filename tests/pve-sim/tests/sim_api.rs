//! End-to-end tests of the PVE API simulator over HTTP.

mod support;

use pve_sim::{Fault, FaultAction, HotplugMode, Sim, SimConfig, TokenConfig};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::*;

const WWN: &str = "0x5000c500deadbeef";

#[tokio::test]
async fn rejects_malformed_parameters_with_named_errors() {
    let h = start(|_| {}).await;
    let (s, b) = h
        .post(
            "/nodes/pve1/storage/local/content",
            &[
                ("vmid", "abc"),
                ("filename", "x"),
                ("size", "1X"),
                ("bogus", "1"),
            ],
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["message"], "Parameter verification failed.\n");
    let e = &b["errors"];
    assert_eq!(e["vmid"], "type check ('integer') failed - got 'abc'");
    assert_eq!(e["size"], "value does not match the regex pattern");
    assert_eq!(
        e["bogus"],
        "property is not defined in schema and the schema does not allow additional properties"
    );

    let (s, b) = h
        .post(
            "/nodes/pve1/storage/local/content",
            &[("vmid", "101"), ("filename", "vm-101-a.raw")],
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"]["size"],
        "property is missing and it is not optional"
    );

    let (s, b) = h
        .post(
            "/nodes/pve1/storage/local/content",
            &[("vmid", "99"), ("filename", "vm-99-a.raw"), ("size", "1M")],
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"]["vmid"],
        "value must have a minimum value of 100"
    );

    // Property strings are checked key by key against the drive format.
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", "local:101/vm-101-a.raw,cache=bogus")],
        )
        .await;
    assert_eq!(s, 400);
    let msg = b["errors"]["scsi1"].as_str().unwrap();
    assert!(
        msg.contains("value 'bogus' does not have a value in the enumeration 'none, writethrough"),
        "{msg}"
    );
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", "local:101/vm-101-a.raw,nosuchkey=1")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(b["errors"]["scsi1"]
        .as_str()
        .unwrap()
        .contains("invalid key in comma-separated list property: nosuchkey"));
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", "local:101/vm-101-a.raw,wwn=5000")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(b["errors"]["scsi1"]
        .as_str()
        .unwrap()
        .contains("scsi1.wwn: value does not match the regex pattern"));
    // scsi31 is beyond the scsi[n] family.
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi31", "local:101/vm-101-a.raw")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(b["errors"]["scsi31"]
        .as_str()
        .unwrap()
        .contains("not defined in schema"));
    let (s, b) = h
        .get("/nodes/pve1/qemu/101/config", &[("current", "true")])
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"]["current"],
        "type check ('boolean') failed - got 'true'"
    );
    let (s, b) = h
        .post(
            "/nodes/pve1/storage/local%2Fx/content",
            &[
                ("vmid", "101"),
                ("filename", "vm-101-a.raw"),
                ("size", "1M"),
            ],
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"]["storage"],
        "invalid format - storage ID 'local/x' contains illegal characters\n"
    );
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/resize",
            &[("disk", "scsi99"), ("size", "1G")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(b["errors"]["disk"]
        .as_str()
        .unwrap()
        .starts_with("value 'scsi99' does not have a value in the enumeration 'ide0, ide1"));

    let (s, b) = h.get("/nodes/pve1/nosuch", &[]).await;
    assert_eq!(s, 501);
    assert_eq!(
        b["message"],
        "Method 'GET /nodes/pve1/nosuch' not implemented\n"
    );
}

#[tokio::test]
async fn authentication_and_permissions() {
    let mut h = start(|c| {
        c.tokens.push(TokenConfig {
            id: "ro@pve!ro".into(),
            secret: "ro".into(),
            privs: Some(vec!["VM.Audit".into()]),
            acl: Default::default(),
            privsep: true,
        });
        c.tokens.push(TokenConfig {
            id: "scoped@pve!csi".into(),
            secret: "s".into(),
            privs: None,
            acl: [
                (
                    "/storage/shared".to_string(),
                    vec!["Datastore.AllocateSpace".to_string()],
                ),
                ("/vms/101".to_string(), vec!["VM.Audit".to_string()]),
            ]
            .into(),
            privsep: true,
        });
    })
    .await;
    // pveproxy's texts; authentication comes before routing, so unknown paths say the same.
    h.auth = Some(String::new());
    let (s, b) = h.get("/version", &[]).await;
    assert_eq!((s, b["message"].as_str()), (401, Some("No ticket\n")));
    assert_eq!(h.get("/no/such/path", &[]).await.0, 401);
    h.auth = Some("PVEAPIToken=csi@pve!csi=wrong".into());
    let (s, b) = h.get("/version", &[]).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (401, Some("invalid token value!\n"))
    );
    h.auth = Some("PVEAPIToken=csi@pve!other=sim-secret".into());
    let (s, b) = h.get("/version", &[]).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (401, Some("no such token 'other' for user 'csi@pve'\n"))
    );
    // A space may replace the first '='.
    h.auth = Some("PVEAPIToken csi@pve!csi=sim-secret".into());
    assert_eq!(h.get("/version", &[]).await.0, 200);
    let (s, b) = h
        .put(
            "/access/password",
            &[("userid", "csi@pve"), ("password", "x12345")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (403, Some("Permission check failed (URI '/access/password' not available with API token, need proper ticket.\n)\n"))
    );
    let (s, b) = h
        .get("/nodes/pve1/qemu/101/config", &[("node", "pve2")])
        .await;
    assert_eq!(
        (s, b["errors"]["node"].as_str()),
        (
            400,
            Some("duplicate parameter (already defined in URI) with conflicting values!")
        )
    );

    h.auth = Some("PVEAPIToken=ro@pve!ro=ro".into());
    assert_eq!(h.get("/nodes/pve1/qemu/101/config", &[]).await.0, 200);
    let (s, b) = h.alloc("pve1", "local", "101", "vm-101-x.raw", "1M").await;
    assert_eq!(s, 403);
    assert_eq!(
        b["message"],
        "Permission check failed (/storage/local, Datastore.AllocateSpace)\n"
    );
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi1")])
        .await;
    assert_eq!(s, 403);
    assert_eq!(
        b["message"],
        "Permission check failed (/vms/101, VM.Config.Disk)\n"
    );

    // ACL-scoped token: privileges only on the listed paths and below.
    h.auth = Some("PVEAPIToken=scoped@pve!csi=s".into());
    assert_eq!(
        h.alloc("pve1", "shared", "101", "vm-101-s.raw", "1M")
            .await
            .0,
        200
    );
    let (s, b) = h.alloc("pve1", "local", "101", "vm-101-s.raw", "1M").await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            403,
            Some("Permission check failed (/storage/local, Datastore.AllocateSpace)\n")
        )
    );
    assert_eq!(h.get("/nodes/pve1/qemu/101/config", &[]).await.0, 200);
    assert_eq!(h.get("/nodes/pve2/qemu/102/config", &[]).await.0, 403);
    let (_, b) = h.get("/access/permissions", &[]).await;
    assert!(b["data"]["/storage/shared"]["Datastore.AllocateSpace"] == 1);
    assert!(b["data"]["/"].as_object().unwrap().is_empty());
    h.auth = Some("PVEAPIToken=ro@pve!ro=ro".into());

    // Ticket login: writes need the CSRF token.
    let r = h
        .client
        .post(format!("{}/access/ticket", h.base))
        .form(&[("username", "root@pam"), ("password", "sim")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let b: Value = r.json().await.unwrap();
    let ticket = b["data"]["ticket"].as_str().unwrap().to_string();
    let csrf = b["data"]["CSRFPreventionToken"]
        .as_str()
        .unwrap()
        .to_string();
    let cookie = format!("PVEAuthCookie={}", urlencode(&ticket));
    let url = format!("{}/nodes/pve1/storage/local/content", h.base);
    let form = [
        ("vmid", "101"),
        ("filename", "vm-101-t.raw"),
        ("size", "1M"),
    ];
    let r = h
        .client
        .post(&url)
        .header("Cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = h
        .client
        .post(&url)
        .header("Cookie", &cookie)
        .header("CSRFPreventionToken", &csrf)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = h
        .client
        .get(format!("{}/nodes", h.base))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bad = h
        .client
        .post(format!("{}/access/ticket", h.base))
        .form(&[("username", "root@pam"), ("password", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
}

#[tokio::test]
async fn allocation_rules_follow_dir_storage() {
    let h = start(thin_storage).await;
    let (s, b) = h
        .alloc("pve1", "local", "101", "vm-101-a.raw", "1024")
        .await;
    assert_eq!(
        (s, b["data"].as_str()),
        (200, Some("local:101/vm-101-a.raw"))
    );
    let (s, b) = h
        .alloc("pve1", "local", "101", "vm-101-a.raw", "1024")
        .await;
    assert_eq!(s, 500);
    assert!(
        b["message"].as_str().unwrap().contains("already exists"),
        "{b}"
    );
    // The dir plugin accepts any file name; LVM-thin wants the owner prefix.
    let (s, b) = h.alloc("pve1", "local", "101", "pvc-1.raw", "1M").await;
    assert_eq!((s, b["data"].as_str()), (200, Some("local:101/pvc-1.raw")));
    let (s, b) = h.alloc("pve1", "thin", "101", "vm-102-a", "1M").await;
    assert_eq!(s, 500);
    assert_eq!(
        b["message"],
        "illegal name 'vm-102-a' - should be 'vm-101-*'\n"
    );
    let (s, b) = h.alloc("pve1", "local", "101", "vm-101-noext", "1M").await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("unable to parse volume filename 'vm-101-noext'\n")
        )
    );
    let (s, b) = h.alloc("pve1", "nosuch", "101", "vm-101-a.raw", "1M").await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("storage 'nosuch' does not exist\n"))
    );
    let (s, b) = h
        .alloc("pve1", "local", "101", "vm-101-q.qcow2", "2M")
        .await;
    assert_eq!(
        (s, b["data"].as_str()),
        (200, Some("local:101/vm-101-q.qcow2"))
    );
    let (s, b) = h
        .post(
            "/nodes/pve1/storage/local/content",
            &[
                ("vmid", "101"),
                ("filename", "vm-101-f.raw"),
                ("size", "1M"),
                ("format", "qcow2"),
            ],
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["errors"]["format"],
        "different storage formats (qcow2 != raw)"
    );

    let (_, b) = h
        .get("/nodes/pve1/storage/local/content", &[("vmid", "101")])
        .await;
    let list = b["data"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{b}");
    let a = list
        .iter()
        .find(|e| e["volid"] == "local:101/vm-101-a.raw")
        .unwrap();
    assert_eq!(a["size"], 1024 * 1024);
    assert_eq!(a["format"], "raw");
    let q = list
        .iter()
        .find(|e| e["volid"] == "local:101/vm-101-q.qcow2")
        .unwrap();
    assert_eq!(q["size"], 2 * 1024 * 1024);
    // local is per node: pve2 does not see pve1's images; shared is seen from both.
    let (_, b) = h.get("/nodes/pve2/storage/local/content", &[]).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 0);
    h.alloc("pve1", "shared", "555", "vm-555-s.raw", "1M").await;
    let (_, b) = h.get("/nodes/pve2/storage/shared/content", &[]).await;
    assert_eq!(b["data"][0]["volid"], "shared:555/vm-555-s.raw");

    let (s, b) = h
        .get(
            &format!(
                "/nodes/pve1/storage/local/content/{}",
                urlencode("local:101/vm-101-a.raw")
            ),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["size"], 1024 * 1024);
    let (s, b) = h
        .get(
            &format!(
                "/nodes/pve1/storage/local/content/{}",
                urlencode("local:101/vm-101-zz.raw")
            ),
            &[],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("volume_size_info on 'local:101/vm-101-zz.raw' failed - no format\n")
        )
    );

    // Freeing an unknown image only warns, like PVE.
    let (_, b) = h
        .delete(&format!(
            "/nodes/pve1/storage/local/content/{}",
            urlencode("local:101/vm-101-zz.raw")
        ))
        .await;
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "WARNINGS: 1"
    );

    let (_, st) = h.get("/nodes/pve1/storage/local/status", &[]).await;
    assert_eq!(st["data"]["total"], 100u64 << 30);
    assert_eq!(st["data"]["used"], 4 * 1024 * 1024);
}

#[tokio::test]
async fn volume_lifecycle_with_hotplug() {
    let h = start(|_| {}).await;
    let (s, b) = h
        .alloc("pve1", "local", "101", "vm-101-pvc.raw", "4M")
        .await;
    assert_eq!(s, 200, "{b}");
    let volid = b["data"].as_str().unwrap().to_string();

    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", &format!("{volid},wwn={WWN},serial=pvc1,backup=0"))],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let conf = h.config("pve1", 101, true).await;
    assert_eq!(
        conf["scsi1"],
        format!("{volid},backup=0,serial=pvc1,size=4M,wwn={WWN}")
    );
    let link = h.sim.guest_by_id_dir(101).join(format!("wwn-{WWN}"));
    if is_root() {
        assert!(
            is_block_device(&link),
            "{} is not a block device",
            link.display()
        );
        assert!(h
            .sim
            .guest_by_id_dir(101)
            .join("scsi-0QEMU_QEMU_HARDDISK_pvc1")
            .exists());
    }

    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/resize",
            &[("disk", "scsi1"), ("size", "+4M")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (_, info) = h
        .get(
            &format!("/nodes/pve1/storage/local/content/{}", urlencode(&volid)),
            &[],
        )
        .await;
    assert_eq!(info["data"]["size"], 8 * 1024 * 1024);
    assert!(h.config("pve1", 101, true).await["scsi1"]
        .as_str()
        .unwrap()
        .contains("size=8M"));
    if is_root() {
        let dev = std::fs::read_link(&link).unwrap();
        let name = dev.file_name().unwrap().to_string_lossy().to_string();
        let sectors = std::fs::read_to_string(format!("/sys/class/block/{name}/size")).unwrap();
        assert_eq!(sectors.trim(), (8 * 1024 * 1024 / 512).to_string());
    }
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/resize",
            &[("disk", "scsi1"), ("size", "1M")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("shrinking disks is not supported\n"))
    );
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/resize",
            &[("disk", "scsi5"), ("size", "+1M")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("disk 'scsi5' does not exist\n"))
    );

    let (s, b) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi1")])
        .await;
    assert_eq!((s, &b["data"]), (200, &Value::Null), "{b}");
    let conf = h.config("pve1", 101, true).await;
    assert!(conf.get("scsi1").is_none());
    // Owned by this VM and unlinked without force: kept as unused, like PVE.
    assert_eq!(conf["unused0"], volid);
    assert!(!link.exists() && std::fs::symlink_metadata(&link).is_err());
    if is_root() {
        let out = std::process::Command::new("losetup")
            .arg("-j")
            .arg(
                h.sim
                    .config()
                    .data_dir
                    .join("storage/pve1/local/images/101/vm-101-pvc.raw"),
            )
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "loop still attached: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let (_, b) = h
        .delete(&format!(
            "/nodes/pve1/storage/local/content/{}",
            urlencode(&volid)
        ))
        .await;
    assert!(b["data"].as_str().unwrap().contains(":imgdel:101@local:"));
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    assert!(!h
        .sim
        .config()
        .data_dir
        .join("storage/pve1/local/images/101/vm-101-pvc.raw")
        .exists());
}

#[tokio::test]
async fn foreign_volume_unlink_keeps_it_and_force_frees_owned() {
    let h = start(|_| {}).await;
    let (_, b) = h
        .alloc("pve1", "shared", "9000", "vm-9000-v.raw", "1M")
        .await;
    let foreign = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .alloc("pve1", "local", "101", "vm-101-own.raw", "1M")
        .await;
    let owned = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", foreign.as_str()), ("scsi2", owned.as_str())],
        )
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (s, _) = h
        .put(
            "/nodes/pve1/qemu/101/unlink",
            &[("idlist", "scsi1,scsi2"), ("force", "1")],
        )
        .await;
    assert_eq!(s, 200);
    let conf = h.config("pve1", 101, true).await;
    assert!(
        conf.get("scsi1").is_none() && conf.get("scsi2").is_none() && conf.get("unused0").is_none(),
        "{conf}"
    );
    let dd = &h.sim.config().data_dir;
    assert!(dd.join("storage/shared/images/9000/vm-9000-v.raw").exists());
    assert!(!dd
        .join("storage/pve1/local/images/101/vm-101-own.raw")
        .exists());
}

#[tokio::test]
async fn attach_checks_volume_and_storage() {
    let h = start(|c| c.storages[1].nodes = Some(vec!["pve1".into()])).await;
    // Synchronous (PUT) updates fail the call itself ...
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", "local:101/vm-101-missing.raw")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("volume local:101/vm-101-missing.raw does not exist\n")
        )
    );
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", "nosuch:101/vm-101-a.raw")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("storage 'nosuch' does not exist\n"))
    );
    h.alloc("pve1", "shared", "102", "vm-102-a.raw", "1M").await;
    let (s, b) = h
        .put(
            "/nodes/pve2/qemu/102/config",
            &[("scsi1", "shared:102/vm-102-a.raw")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("storage 'shared' is not available on node 'pve2'\n")
        )
    );
    // ... while the asynchronous POST accepts the call and its qmconfig task fails, as in PVE
    // where the pending section is written by the worker.
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", "local:101/vm-101-missing.raw")],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "volume local:101/vm-101-missing.raw does not exist"
    );
    assert!(h.config("pve1", 101, false).await.get("scsi1").is_none());
    let (s, b) = h
        .post(
            "/nodes/pve2/qemu/101/config",
            &[("scsi1", "local:101/vm-101-a.raw")],
        )
        .await;
    assert_eq!(s, 500);
    assert_eq!(
        b["message"],
        "Configuration file 'nodes/pve2/qemu-server/101.conf' does not exist\n"
    );
}

#[tokio::test]
async fn digest_mismatch_and_vm_lock() {
    let h = start(|_| {}).await;
    let digest = h.config("pve1", 101, false).await["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(digest.len(), 40);
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("description", "x"), ("digest", &"0".repeat(40))],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("checksum mismatch (file change by other user?)\n")
        )
    );
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("description", "x"), ("digest", &digest)],
        )
        .await;
    assert_eq!(s, 200);
    h.wait("pve1", b["data"].as_str().unwrap()).await;
    let d2 = h.config("pve1", 101, false).await["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(digest, d2);

    h.sim
        .faults()
        .add(Fault {
            method: None,
            path_regex: "/qemu/101/".into(),
            action: FaultAction::LockVm("backup".into()),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let (s, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("description", "y")])
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("VM is locked (backup)\n"))
    );
}

#[tokio::test]
async fn concurrent_writer_times_out_on_config_lock() {
    let h = start(|c| {
        c.task_ms = 1500;
        c.lock_timeout_ms = 300;
    })
    .await;
    let (s, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("description", "a")])
        .await;
    assert_eq!(s, 200);
    let upid = b["data"].as_str().unwrap().to_string();
    // The flock is the worker's (lock_config inside fork_worker): POST answers with a UPID and
    // that task fails; PUT (synchronous) fails the request itself.
    let (s, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("description", "b")])
        .await;
    assert_eq!(s, 200, "{b}");
    let second = b["data"].as_str().unwrap().to_string();
    assert_eq!(
        h.wait("pve1", &second).await,
        "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"
    );
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("description", "b")])
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout\n")
        )
    );
    // Other VMs are not blocked.
    assert_eq!(
        h.post("/nodes/pve2/qemu/102/config", &[("description", "c")])
            .await
            .0,
        200
    );
    assert_eq!(h.wait("pve1", &upid).await, "OK");
    assert_eq!(
        h.post("/nodes/pve1/qemu/101/config", &[("description", "d")])
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn disk_stays_pending_without_disk_hotplug() {
    let h = start(|c| {
        c.vms[0]
            .config
            .insert("hotplug".into(), "network,usb".into());
    })
    .await;
    let (_, b) = h.alloc("pve1", "local", "101", "vm-101-p.raw", "1M").await;
    let volid = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", &format!("{volid},wwn={WWN}"))],
        )
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_none());
    assert!(h.config("pve1", 101, false).await["scsi1"]
        .as_str()
        .unwrap()
        .starts_with(&volid));
    let (_, p) = h.get("/nodes/pve1/qemu/101/pending", &[]).await;
    let entry = p["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "scsi1")
        .unwrap()
        .clone();
    assert!(entry.get("pending").is_some() && entry.get("value").is_none());
    assert!(!h
        .sim
        .guest_by_id_dir(101)
        .join(format!("wwn-{WWN}"))
        .exists());
    // Dropping a pending-only drive just forgets the pending change.
    assert_eq!(
        h.put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi1")])
            .await
            .0,
        200
    );
    assert!(h.config("pve1", 101, false).await.get("scsi1").is_none());
}

#[tokio::test]
async fn faults_inject_errors_delays_and_task_failures() {
    let h = start(|_| {}).await;
    h.sim
        .faults()
        .add(Fault {
            method: Some("GET".into()),
            path_regex: "^/nodes$".into(),
            action: FaultAction::Error {
                status: 503,
                message: "injected".into(),
            },
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let (s, b) = h.get("/nodes", &[]).await;
    assert_eq!((s, b["message"].as_str()), (503, Some("injected\n")));
    assert_eq!(h.get("/nodes", &[]).await.0, 200);

    // Over HTTP too.
    let r = h
        .client
        .post(format!("{}/_sim/faults", h.base.trim_end_matches("/api2/json")))
        .json(&serde_json::json!({"method": "POST", "path_regex": "/qemu/101/config", "action": {"task_error": "hotplug problem - boom"}, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("description", "x")])
        .await;
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "hotplug problem - boom"
    );

    h.sim
        .faults()
        .add(Fault {
            method: None,
            path_regex: "/version".into(),
            action: FaultAction::DelayMs(300),
            count: None,
            skip: None,
        })
        .unwrap();
    let t = std::time::Instant::now();
    assert_eq!(h.get("/version", &[]).await.0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let r = h
        .client
        .delete(format!(
            "{}/_sim/faults",
            h.base.trim_end_matches("/api2/json")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(h.sim.faults().list().is_empty());
}

#[tokio::test]
async fn cluster_views() {
    let h = start(|_| {}).await;
    let (_, b) = h.get("/cluster/resources", &[("type", "vm")]).await;
    let vms = b["data"].as_array().unwrap();
    assert_eq!(vms.len(), 2);
    let w1 = vms.iter().find(|v| v["vmid"] == 101).unwrap();
    assert_eq!(
        (w1["id"].as_str(), w1["node"].as_str(), w1["name"].as_str()),
        (Some("qemu/101"), Some("pve1"), Some("worker-1"))
    );
    let (_, b) = h.get("/cluster/status", &[]).await;
    assert_eq!(b["data"][0]["name"], "sim");
    let (_, b) = h.get("/nodes", &[]).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    let (_, b) = h.get("/nodes/pve1/storage", &[]).await;
    assert_eq!(
        b["data"].as_array().unwrap().len(),
        3,
        "local, shared, local-lvm"
    );
    let (s, _) = h.get("/nodes/pve9/storage", &[]).await;
    assert_eq!(s, 500);
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_at(dir.path(), |_| {}).await;
    let (_, b) = h.alloc("pve1", "local", "101", "vm-101-r.raw", "1M").await;
    let volid = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi3", &format!("{volid},wwn={WWN}"))],
        )
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    drop(h);
    assert!(dir.path().join("state.json").exists());

    let h2 = start_at(dir.path(), |_| {}).await;
    let conf = h2.config("pve1", 101, true).await;
    assert!(
        conf["scsi3"].as_str().unwrap().starts_with(&volid),
        "{conf}"
    );
    if is_root() {
        assert!(is_block_device(
            &h2.sim.guest_by_id_dir(101).join(format!("wwn-{WWN}"))
        ));
    }
    let (_, b) = h2.get("/nodes/pve1/storage/local/content", &[]).await;
    assert_eq!(b["data"][0]["volid"], volid.as_str());
}

#[tokio::test]
async fn power_cycle_applies_pending_and_replugs() {
    let h = start(|c| {
        c.vms[0].config.insert("hotplug".into(), "network".into());
    })
    .await;
    let (_, b) = h.alloc("pve1", "local", "101", "vm-101-pw.raw", "1M").await;
    let volid = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", &format!("{volid},wwn={WWN}"))],
        )
        .await;
    h.wait("pve1", b["data"].as_str().unwrap()).await;
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_none());
    let (_, b) = h.post("/nodes/pve1/qemu/101/status/start", &[]).await;
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "VM 101 already running"
    );
    let (_, b) = h.post("/nodes/pve1/qemu/101/status/stop", &[]).await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (_, b) = h.post("/nodes/pve1/qemu/101/status/start", &[]).await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    assert!(h.config("pve1", 101, true).await["scsi1"]
        .as_str()
        .unwrap()
        .starts_with(&volid));
    if is_root() {
        assert!(is_block_device(
            &h.sim.guest_by_id_dir(101).join(format!("wwn-{WWN}"))
        ));
    }
    let (_, b) = h.get("/nodes/pve1/qemu/101/status/current", &[]).await;
    assert_eq!(b["data"]["status"], "running");
}

#[tokio::test]
async fn deleting_unused_entry_frees_the_volume() {
    let h = start(|_| {}).await;
    let (_, b) = h.alloc("pve1", "local", "101", "vm-101-u.raw", "1M").await;
    let volid = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi4", volid.as_str()), ("background_delay", "5")],
        )
        .await;
    // background_delay: a worker done in time answers null (qemu-server $update_vm_api).
    assert_eq!(b["data"], Value::Null, "{b}");
    assert_eq!(
        h.config("pve1", 101, true).await["scsi4"]
            .as_str()
            .map(|d| d.starts_with(&volid)),
        Some(true)
    );
    h.put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi4")])
        .await;
    assert_eq!(h.config("pve1", 101, true).await["unused0"], volid.as_str());
    let file = h
        .sim
        .config()
        .data_dir
        .join("storage/pve1/local/images/101/vm-101-u.raw");
    assert!(file.exists());
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("delete", "unused0")])
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(!file.exists());
    let (s, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("delete", "nosuchopt")])
        .await;
    assert_eq!(
        (s, b["errors"]["delete"].as_str()),
        (400, Some("unknown option 'nosuchopt'"))
    );
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("description", "x"), ("skiplock", "1")],
        )
        .await;
    assert_eq!(
        (s, b["errors"]["skiplock"].as_str()),
        (400, Some("Only root may use this option."))
    );
}

#[tokio::test]
async fn yaml_config_overrides_layout_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"
cluster_name: lab
nodes: [a1]
storages:
  - id: fast
    capacity: 1048576
vms:
  - vmid: 200
    name: only
    node: a1
    config: { scsihw: virtio-scsi-single, hotplug: "disk" }
tokens:
  - id: audit@pve!ro
    secret: s3
    privs: [VM.Audit, Datastore.Audit]
hotplug: none
task_ms: 5
"#;
    let mut cfg = SimConfig::from_yaml(yaml).unwrap();
    cfg.data_dir = dir.path().to_path_buf();
    assert!(SimConfig::from_yaml("nodes: [a]\nbogus: 1\n").is_err());
    let sim = Sim::new(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api2/json", listener.local_addr().unwrap());
    tokio::spawn(sim.clone().serve(listener));
    let c = reqwest::Client::new();
    let get = |p: &str| {
        c.get(format!("{base}{p}"))
            .header("Authorization", "PVEAPIToken=audit@pve!ro=s3")
            .send()
    };
    let b: Value = get("/cluster/resources")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = b["data"].as_array().unwrap();
    assert!(items.iter().any(|i| i["id"] == "qemu/200"));
    assert!(items
        .iter()
        .any(|i| i["id"] == "storage/a1/fast" && i["maxdisk"] == 1048576));
    let r = c
        .post(format!("{base}/nodes/a1/storage/fast/content"))
        .header("Authorization", "PVEAPIToken=audit@pve!ro=s3")
        .form(&[("vmid", "200"), ("filename", "vm-200-a.raw"), ("size", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        b["message"],
        "Permission check failed (/storage/fast, Datastore.AllocateSpace)\n"
    );
}

#[test]
fn example_config_parses() {
    let text = include_str!("../sim.example.yaml");
    let cfg = SimConfig::from_yaml(text).unwrap();
    assert_eq!(cfg.vms.len(), 2);
    assert_eq!(cfg.tokens[1].privs.as_ref().unwrap().len(), 3);
    assert_eq!(cfg.hotplug, HotplugMode::Loop);
}

fn thin_storage(c: &mut SimConfig) {
    c.storages.push(pve_sim::StorageConfig {
        id: "thin".into(),
        kind: "lvmthin".into(),
        ..Default::default()
    });
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_at(data, offset)
        .unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_at(&mut buf, offset)
        .unwrap();
    buf
}

#[tokio::test]
async fn vm_create_destroy_and_nextid() {
    let h = start(|_| {}).await;
    let (_, b) = h.get("/cluster/nextid", &[]).await;
    assert_eq!(b["data"], "100");
    let (s, b) = h.get("/cluster/nextid", &[("vmid", "101")]).await;
    assert_eq!(
        (s, b["errors"]["vmid"].as_str()),
        (400, Some("VM 101 already exists"))
    );

    let (s, b) = h
        .post(
            "/nodes/pve1/qemu",
            &[
                ("vmid", "300"),
                ("name", "holder"),
                ("scsi0", "local:1,wwn=0x5000c50000000300"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let conf = h.config("pve1", 300, true).await;
    assert_eq!(
        conf["scsi0"],
        "local:300/vm-300-disk-0.raw,size=1G,wwn=0x5000c50000000300"
    );
    assert_eq!(conf["name"], "holder");
    let (s, b) = h.post("/nodes/pve1/qemu", &[("vmid", "300")]).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("unable to create VM 300: config file already exists\n")
        )
    );

    // A foreign volume attached to the holder survives its destruction; its own disk does not.
    let (_, b) = h
        .alloc("pve1", "local", "777", "vm-777-keep.raw", "1M")
        .await;
    let keep = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .post("/nodes/pve1/qemu/300/config", &[("scsi1", keep.as_str())])
        .await;
    h.wait("pve1", b["data"].as_str().unwrap()).await;
    let (s, b) = h.delete("/nodes/pve1/qemu/101").await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("VM 101 is running - destroy failed\n"))
    );
    let (s, b) = h.delete("/nodes/pve1/qemu/300").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let dd = &h.sim.config().data_dir;
    assert!(!dd
        .join("storage/pve1/local/images/300/vm-300-disk-0.raw")
        .exists());
    assert!(dd
        .join("storage/pve1/local/images/777/vm-777-keep.raw")
        .exists());
    let (s, _) = h.get("/nodes/pve1/qemu/300/config", &[]).await;
    assert_eq!(s, 500);
}

#[tokio::test]
async fn snapshots_rollback_and_clone_on_thin_storage() {
    let h = start(thin_storage).await;
    let (s, b) = h.alloc("pve1", "thin", "400", "vm-400-disk-0", "1M").await;
    assert_eq!(
        (s, b["data"].as_str()),
        (200, Some("thin:vm-400-disk-0")),
        "{b}"
    );
    let (s, b) = h.alloc("pve1", "thin", "400", "vm-400-q.qcow2", "1M").await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("unsupported format 'qcow2'\n"))
    );
    let (_, b) = h
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", "400"), ("scsi0", "thin:vm-400-disk-0")],
        )
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (_, info) = h
        .get("/nodes/pve1/storage/thin/content/thin%3Avm-400-disk-0", &[])
        .await;
    let img = std::path::PathBuf::from(info["data"]["path"].as_str().unwrap());
    write_at(&img, 4096, b"before");

    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/400/snapshot",
            &[("snapname", "s1"), ("description", "first")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    // snapshot_prepare runs in the worker: a name in use is a failed task.
    let (s, b) = h
        .post("/nodes/pve1/qemu/400/snapshot", &[("snapname", "s1")])
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "snapshot name 's1' already used"
    );
    write_at(&img, 4096, b"after!");
    let (_, b) = h.get("/nodes/pve1/qemu/400/snapshot", &[]).await;
    let names: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["s1", "current"]);
    assert_eq!(b["data"][0]["description"], "first");
    assert_eq!(b["data"][1]["parent"], "s1");
    // Snapshot files are not volumes.
    let (_, b) = h.get("/nodes/pve1/storage/thin/content", &[]).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 1);

    // Clone from the snapshot: a new VM with a full copy of the snapshot's data.
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/400/clone",
            &[("newid", "401"), ("snapname", "s1"), ("name", "restored")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let conf = h.config("pve1", 401, true).await;
    // LVM rounded the 1 MiB allocation up to one 4 MiB extent.
    assert_eq!(conf["scsi0"], "thin:vm-401-disk-0,size=4M");
    let (_, info) = h
        .get("/nodes/pve1/storage/thin/content/thin%3Avm-401-disk-0", &[])
        .await;
    let copy = std::path::PathBuf::from(info["data"]["path"].as_str().unwrap());
    assert_eq!(read_at(&copy, 4096, 6), b"before");
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/400/clone",
            &[("newid", "402"), ("snapname", "nope")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("snapshot 'nope' does not exist\n"))
    );

    let (_, b) = h
        .post("/nodes/pve1/qemu/400/snapshot/s1/rollback", &[])
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    assert_eq!(read_at(&img, 4096, 6), b"before");
    let (_, b) = h.delete("/nodes/pve1/qemu/400/snapshot/s1").await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (_, b) = h.get("/nodes/pve1/qemu/400/snapshot", &[]).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    assert!(h.config("pve1", 400, true).await.get("parent").is_none());
    let (s, b) = h.delete("/nodes/pve1/qemu/400/snapshot/s1").await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("snapshot 's1' does not exist\n"))
    );

    // Growing by 1 MiB takes another whole extent; the config records the requested size.
    let (_, b) = h
        .put(
            "/nodes/pve1/qemu/400/resize",
            &[("disk", "scsi0"), ("size", "+1M")],
        )
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 8 << 20);
    assert_eq!(
        h.config("pve1", 400, true).await["scsi0"],
        "thin:vm-400-disk-0,size=5M"
    );
}

#[tokio::test]
async fn snapshots_need_a_capable_format() {
    let h = start(|_| {}).await;
    let (_, b) = h
        .post("/nodes/pve1/qemu", &[("vmid", "500"), ("scsi0", "local:1")])
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    // Snapshot names are config ids: at least two characters.
    let (s, b) = h
        .post("/nodes/pve1/qemu/500/snapshot", &[("snapname", "s")])
        .await;
    assert_eq!(
        (s, b["errors"]["snapname"].as_str()),
        (400, Some("invalid format - invalid configuration ID 's'\n"))
    );
    let (_, b) = h
        .post("/nodes/pve1/qemu/500/snapshot", &[("snapname", "snap1")])
        .await;
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "snapshot feature is not available"
    );
    assert!(h.config("pve1", 500, true).await.get("lock").is_none());
    // qcow2 on a dir storage can be snapshotted and cloned as of the snapshot.
    let (_, b) = h
        .alloc("pve1", "local", "501", "vm-501-disk-0.qcow2", "1M")
        .await;
    let volid = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", "501"), ("scsi0", volid.as_str())],
        )
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (_, b) = h
        .post("/nodes/pve1/qemu/501/snapshot", &[("snapname", "snap1")])
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/501/clone",
            &[
                ("newid", "502"),
                ("snapname", "snap1"),
                ("storage", "shared"),
                ("format", "raw"),
                ("full", "1"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    assert_eq!(
        h.config("pve1", 502, true).await["scsi0"],
        "shared:502/vm-502-disk-0.raw,size=1M"
    );
}

#[tokio::test]
async fn hotplug_failures_leave_changes_pending() {
    let h = start(|_| {}).await;
    let (_, b) = h.alloc("pve1", "local", "101", "vm-101-hp.raw", "1M").await;
    let volid = b["data"].as_str().unwrap().to_string();
    let fault = |msg: &str| Fault {
        method: None,
        path_regex: "/qemu/101/(config|unlink)$".into(),
        action: FaultAction::HotplugError(msg.into()),
        count: Some(1),
        skip: None,
    };
    h.sim.faults().add(fault("plug timeout")).unwrap();
    let drive = format!("{volid},wwn={WWN}");
    let (_, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("scsi1", drive.as_str())])
        .await;
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "400 Parameter verification failed. scsi1: hotplug problem - plug timeout"
    );
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_none());
    assert!(h.config("pve1", 101, false).await.get("scsi1").is_some());

    // Re-sending the same drive applies it.
    let (_, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("scsi1", drive.as_str())])
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let link = h.sim.guest_by_id_dir(101).join(format!("wwn-{WWN}"));
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_some());

    h.sim.faults().add(fault("unplug timeout")).unwrap();
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi1")])
        .await;
    assert_eq!(
        (s, b["errors"]["scsi1"].as_str()),
        (400, Some("hotplug problem - unplug timeout\n"))
    );
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_some());
    assert!(h.config("pve1", 101, false).await.get("scsi1").is_none());
    if is_root() {
        assert!(is_block_device(&link));
    }
    assert_eq!(
        h.put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi1")])
            .await
            .0,
        200
    );
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_none());
    assert!(std::fs::symlink_metadata(&link).is_err());
}

#[tokio::test]
async fn error_text_is_also_the_http_reason_phrase() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start(|_| {}).await;
    let addr = h
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api2/json")
        .to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /api2/json/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 401 No ticket\r\n"), "{out}");
}

#[tokio::test]
async fn control_api_moves_and_stops_vms() {
    let h = start(|_| {}).await;
    let (_, b) = h.alloc("pve1", "shared", "101", "vm-101-m.raw", "1M").await;
    let volid = b["data"].as_str().unwrap().to_string();
    let (_, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", &format!("{volid},wwn={WWN}"))],
        )
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    h.sim.move_vm(101, "pve2").unwrap();
    assert_eq!(h.get("/nodes/pve1/qemu/101/config", &[]).await.0, 500);
    assert!(h.config("pve2", 101, true).await.get("scsi1").is_some());
    let (_, b) = h.get("/cluster/resources", &[("type", "vm")]).await;
    let w1 = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vmid"] == 101)
        .unwrap()
        .clone();
    assert_eq!(w1["node"], "pve2");

    let sim_url = h.base.trim_end_matches("/api2/json").to_string();
    let r = h
        .client
        .post(format!("{sim_url}/_sim/vms/101"))
        .json(&serde_json::json!({ "running": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let link = h.sim.guest_by_id_dir(101).join(format!("wwn-{WWN}"));
    assert!(std::fs::symlink_metadata(&link).is_err());
    let (_, b) = h.get("/nodes/pve2/qemu/101/status/current", &[]).await;
    assert_eq!(b["data"]["status"], "stopped");
    h.sim.set_vm_running(101, true).unwrap();
    if is_root() {
        assert!(is_block_device(&link));
    }
    let r = h
        .client
        .post(format!("{sim_url}/_sim/vms/101"))
        .json(&serde_json::json!({ "node": "nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}
