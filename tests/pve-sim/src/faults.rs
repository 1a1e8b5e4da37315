//! Fault injection: rules matched against incoming requests that delay them, fail them, make
//! their task fail, or lock the VM they address.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Sleep before handling the request.
    DelayMs(u64),
    /// Answer with this error instead of handling the request.
    Error { status: u16, message: String },
    /// Handle the request, but the task it starts fails with this text.
    TaskError(String),
    /// Hot-plug/unplug triggered by this request fails with `hotplug problem - <text>`; the
    /// change stays pending (as when QEMU times out unplugging a disk).
    HotplugError(String),
    /// Set `lock: <value>` on the VM in the path before handling the request (empty: unlock).
    LockVm(String),
    /// Never answer and never handle the request: the connection stays open
    /// until the client goes away. With `skip`, it models a driver that dies
    /// (or is cancelled) right after its previous request was answered.
    Hang,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    /// HTTP method to match; unset matches any.
    #[serde(default)]
    pub method: Option<String>,
    /// Regex searched in the request path below `/api2/json`.
    pub path_regex: String,
    pub action: FaultAction,
    /// How many requests it fires for; unset = until cleared.
    #[serde(default)]
    pub count: Option<u32>,
    /// How many matching requests pass untouched before it fires.
    #[serde(default)]
    pub skip: Option<u32>,
}

#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<Fault>>,
    /// API requests seen so far (every request, matched or not).
    seen: std::sync::atomic::AtomicU64,
}

impl Faults {
    pub fn add(&self, f: Fault) -> anyhow::Result<()> {
        regex::Regex::new(&f.path_regex)?;
        self.rules.lock().unwrap().push(f);
        Ok(())
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    pub fn list(&self) -> Vec<Fault> {
        self.rules.lock().unwrap().clone()
    }

    /// How many API requests the simulator has received.
    pub fn seen(&self) -> u64 {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Actions that fire for this request; consumes one use of each counted rule.
    pub fn take(&self, method: &str, path: &str) -> Vec<FaultAction> {
        let mut rules = self.rules.lock().unwrap();
        self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut out = Vec::new();
        for r in rules.iter_mut() {
            if r.method
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(method))
            {
                continue;
            }
            let Ok(re) = regex::Regex::new(&r.path_regex) else {
                continue;
            };
            if !re.is_match(path) {
                continue;
            }
            if let Some(s) = r.skip.as_mut() {
                if *s > 0 {
                    *s -= 1;
                    continue;
                }
            }
            if let Some(c) = r.count.as_mut() {
                if *c == 0 {
                    continue;
                }
                *c -= 1;
            }
            out.push(r.action.clone());
        }
        rules.retain(|r| r.count != Some(0));
        out
    }
}
