//! Shared harness of the PVE-rule and client-conformance tests: a simulator on an ephemeral
//! port and a small HTTP client speaking PVE's API the way real clients do (form or JSON
//! bodies, token or ticket auth).
#![allow(dead_code)]

use pve_sim::{HotplugMode, Sim, SimConfig};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub const TOKEN: &str = "PVEAPIToken=csi@pve!csi=sim-secret";

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A simulator on an ephemeral port; detaches its loop devices even when a test panics.
pub struct Harness {
    pub sim: Sim,
    pub base: String,
    pub client: reqwest::Client,
    /// Authorization header (token) or None with `cookie`/`csrf` set (ticket).
    pub auth: Option<String>,
    pub cookie: Option<(String, String)>,
    /// The data directory when the harness made it (`start`); None with `start_at`.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.sim.detach_all();
    }
}

pub async fn start(tweak: impl FnOnce(&mut SimConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_at(dir.path(), tweak).await;
    h._dir = Some(dir);
    h
}

/// A simulator on data directory `dir`, which the caller keeps (to start another on it).
pub async fn start_at(dir: &Path, tweak: impl FnOnce(&mut SimConfig)) -> Harness {
    let mut cfg = SimConfig::default_for(dir.to_path_buf());
    cfg.hotplug = if is_root() {
        HotplugMode::Loop
    } else {
        HotplugMode::None
    };
    tweak(&mut cfg);
    let sim = Sim::new(cfg).expect("sim starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api2/json", listener.local_addr().unwrap());
    tokio::spawn(sim.clone().serve(listener));
    Harness {
        sim,
        base,
        client: reqwest::Client::new(),
        auth: Some(TOKEN.into()),
        cookie: None,
        _dir: None,
    }
}

/// (status, body) of a request.
pub type Resp = (u16, Value);

pub enum Body<'a> {
    Form(&'a [(&'a str, &'a str)]),
    Json(Value),
}

impl Harness {
    /// Sends `path` as written (no re-encoding: a raw `/` stays a raw `/`).
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Body<'_>) -> Resp {
        let url = format!("{}{}", self.base, path);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        if let Some((ticket, csrf)) = &self.cookie {
            req = req
                .header("Cookie", format!("PVEAuthCookie={ticket}"))
                .header("CSRFPreventionToken", csrf);
        }
        let bodyless = method == reqwest::Method::GET || method == reqwest::Method::DELETE;
        req = match body {
            Body::Form(f) if bodyless => req.query(f),
            Body::Form(f) => req.form(f),
            Body::Json(v) => req.json(&v),
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    pub async fn get(&self, path: &str, q: &[(&str, &str)]) -> Resp {
        self.send(reqwest::Method::GET, path, Body::Form(q)).await
    }
    pub async fn post(&self, path: &str, f: &[(&str, &str)]) -> Resp {
        self.send(reqwest::Method::POST, path, Body::Form(f)).await
    }
    pub async fn put(&self, path: &str, f: &[(&str, &str)]) -> Resp {
        self.send(reqwest::Method::PUT, path, Body::Form(f)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(reqwest::Method::DELETE, path, Body::Form(&[]))
            .await
    }

    /// Logs in as `user` (POST /access/ticket) and uses the ticket from then on.
    pub async fn login(&mut self, user: &str, password: &str) {
        let (s, b) = self
            .post(
                "/access/ticket",
                &[("username", user), ("password", password)],
            )
            .await;
        assert_eq!(s, 200, "login: {b}");
        self.auth = None;
        self.cookie = Some((
            b["data"]["ticket"].as_str().unwrap().to_string(),
            b["data"]["CSRFPreventionToken"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }

    /// Waits for a task and returns its exitstatus.
    pub async fn wait(&self, node: &str, upid: &str) -> String {
        let path = format!("/nodes/{node}/tasks/{}/status", urlencode(upid));
        for _ in 0..400 {
            let (s, b) = self.get(&path, &[]).await;
            assert_eq!(s, 200, "task status: {b}");
            if b["data"]["status"] == "stopped" {
                return b["data"]["exitstatus"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("task {upid} did not finish");
    }

    pub async fn task_log(&self, node: &str, upid: &str) -> Vec<String> {
        let path = format!("/nodes/{node}/tasks/{}/log", urlencode(upid));
        let (s, b) = self.get(&path, &[]).await;
        assert_eq!(s, 200, "task log: {b}");
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["t"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub async fn alloc(
        &self,
        node: &str,
        storage: &str,
        vmid: &str,
        name: &str,
        size: &str,
    ) -> Resp {
        self.post(
            &format!("/nodes/{node}/storage/{storage}/content"),
            &[("vmid", vmid), ("filename", name), ("size", size)],
        )
        .await
    }

    pub async fn config(&self, node: &str, vmid: u32, current: bool) -> Value {
        let (s, b) = self
            .get(
                &format!("/nodes/{node}/qemu/{vmid}/config"),
                &[("current", if current { "1" } else { "0" })],
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["data"].clone()
    }

    /// The pending view entry of one config key (GET .../pending).
    pub async fn pending_entry(&self, node: &str, vmid: u32, key: &str) -> Value {
        let (s, b) = self
            .get(&format!("/nodes/{node}/qemu/{vmid}/pending"), &[])
            .await;
        assert_eq!(s, 200, "{b}");
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn is_block_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}
