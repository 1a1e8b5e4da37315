//! The `pve-sim` binary: starts from the CLI with a config file, serves, exits on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pve-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--hotplug",
            "none",
            "--task-ms",
            "10",
            "--task-type-ms",
            "qmclone=900",
            "--task-type-ms",
            "qmcreate=300",
            "--request-ms",
            "2",
            "--max-workers",
            "3",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/sim.example.yaml"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the child even if an assertion fails.
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _reap = Reap(child.id());
    let stdout = child.stdout.take().unwrap();
    let base = tokio::task::spawn_blocking(move || {
        let re = regex::Regex::new(r"http://127\.0\.0\.1:\d+/api2/json").unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(m) = re.find(&line) {
                return m.as_str().to_string();
            }
        }
        panic!("pve-sim never reported its address");
    })
    .await
    .unwrap();

    let c = reqwest::Client::new();
    let v: serde_json::Value = c
        .get(format!("{base}/version"))
        .header("Authorization", "PVEAPIToken=csi@pve!csi=sim-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["version"], "8.4.1");
    // The example config's read-only token sees only its privileges.
    let p: serde_json::Value = c
        .get(format!("{base}/access/permissions"))
        .header("Authorization", "PVEAPIToken=audit@pve!ro=ro-secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let privs = p["data"]["/"].as_object().unwrap();
    assert!(privs.contains_key("VM.Audit") && !privs.contains_key("VM.Config.Disk"));
    // The latency model flags.
    let l: serde_json::Value = c
        .get(format!(
            "{}/_sim/latency",
            base.trim_end_matches("/api2/json")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        l["data"],
        serde_json::json!({"request_ms": 2, "max_workers": 3, "task_ms": 10,
            "task_type_ms": {"qmclone": 900, "qmcreate": 300}})
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.expect("pve-sim exits on SIGTERM").success());
    assert!(dir.path().join("state.json").exists());
}

#[test]
fn bad_task_type_ms_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (arg, says) in [
        ("qmclone", "is not TYPE=MS"),
        ("qmclone=fast", "is not a number of milliseconds"),
        ("=5", "names no task type"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pve-sim"))
            .args(["--listen", "127.0.0.1:0", "--task-type-ms", arg])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{arg}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--task-type-ms") && err.contains(says),
            "{arg}: {err}"
        );
    }
}
