//! Asynchronous worker tasks identified by UPIDs, with PVE's status/exitstatus reporting.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a task body reports: Ok(number of warnings) or the error text.
pub type TaskOutcome = Result<u32, String>;

#[derive(Debug, Clone)]
struct TaskInfo {
    upid: String,
    node: String,
    pid: u32,
    pstart: u32,
    starttime: u64,
    kind: String,
    id: String,
    user: String,
    exitstatus: Option<String>,
    endtime: Option<u64>,
    log: Vec<String>,
}

#[derive(Default)]
pub struct Tasks {
    map: Mutex<HashMap<String, TaskInfo>>,
    next_pid: AtomicU32,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parsed UPID fields; None if it does not have PVE's shape.
pub fn parse_upid(upid: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = upid.split(':').collect();
    if parts.len() < 9 || parts[0] != "UPID" {
        return None;
    }
    Some((parts[1].to_string(), parts[5].to_string()))
}

/// Shared log sink the task body can append to.
#[derive(Clone)]
pub struct TaskLog(Arc<Mutex<Vec<String>>>);

impl TaskLog {
    pub fn line(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
}

/// Identity and run conditions of a new task.
pub struct TaskSpec<'a> {
    pub node: &'a str,
    /// Worker type (`qmconfig`, `imgdel`, ...).
    pub kind: &'a str,
    pub id: &'a str,
    pub user: &'a str,
    pub delay: Duration,
    /// Fault injection: fail with this text instead of running the body.
    pub forced_error: Option<String>,
}

impl Tasks {
    /// Registers a task and runs `body` in the background after the spec's delay.
    pub fn spawn<F>(
        self: &Arc<Self>,
        spec: TaskSpec<'_>,
        body: impl FnOnce(TaskLog) -> F + Send + 'static,
    ) -> String
    where
        F: Future<Output = TaskOutcome> + Send + 'static,
    {
        let TaskSpec {
            node,
            kind,
            id,
            user,
            delay,
            forced_error,
        } = spec;
        let pid = 100_000 + self.next_pid.fetch_add(1, Ordering::SeqCst);
        let pstart = (pid * 7) % 0x0fff_ffff;
        let starttime = now();
        let upid =
            format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:");
        let info = TaskInfo {
            upid: upid.clone(),
            node: node.into(),
            pid,
            pstart,
            starttime,
            kind: kind.into(),
            id: id.into(),
            user: user.into(),
            exitstatus: None,
            endtime: None,
            log: vec![],
        };
        self.map.lock().unwrap().insert(upid.clone(), info);
        let tasks = self.clone();
        let key = upid.clone();
        let log = TaskLog(Arc::new(Mutex::new(Vec::new())));
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let outcome = match forced_error {
                Some(e) => Err(e),
                None => body(log.clone()).await,
            };
            let mut lines = log.0.lock().unwrap().clone();
            let exit = match outcome {
                Ok(0) => {
                    lines.push("TASK OK".into());
                    "OK".to_string()
                }
                Ok(n) => {
                    lines.push(format!("TASK WARNINGS: {n}"));
                    format!("WARNINGS: {n}")
                }
                Err(e) => {
                    // PVE flattens multi-line errors into the single last log line.
                    let e = e.trim_end().replace('\n', " ");
                    lines.push(format!("TASK ERROR: {e}"));
                    e
                }
            };
            let mut map = tasks.map.lock().unwrap();
            if let Some(t) = map.get_mut(&key) {
                t.log = lines;
                t.exitstatus = Some(exit);
                t.endtime = Some(now());
            }
        });
        upid
    }

    pub fn status(&self, upid: &str) -> Option<Value> {
        let map = self.map.lock().unwrap();
        let t = map.get(upid)?;
        let mut v = json!({
            "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
            "starttime": t.starttime, "type": t.kind, "id": t.id, "user": t.user,
            "status": if t.exitstatus.is_some() { "stopped" } else { "running" },
        });
        if let Some(e) = &t.exitstatus {
            v["exitstatus"] = json!(e);
        }
        Some(v)
    }

    pub fn log(&self, upid: &str) -> Option<Value> {
        let map = self.map.lock().unwrap();
        let t = map.get(upid)?;
        Some(Value::Array(
            t.log
                .iter()
                .enumerate()
                .map(|(i, l)| json!({"n": i + 1, "t": l}))
                .collect(),
        ))
    }

    pub fn list(&self, node: &str) -> Value {
        let map = self.map.lock().unwrap();
        let mut v: Vec<&TaskInfo> = map.values().filter(|t| t.node == node).collect();
        v.sort_by(|a, b| b.starttime.cmp(&a.starttime).then(b.pid.cmp(&a.pid)));
        Value::Array(
            v.into_iter()
                .map(|t| {
                    let mut e = json!({
                        "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
                        "starttime": t.starttime, "type": t.kind, "id": t.id, "user": t.user,
                    });
                    if let Some(s) = &t.exitstatus {
                        e["status"] = json!(s);
                        e["endtime"] = json!(t.endtime);
                    }
                    e
                })
                .collect(),
        )
    }
}
