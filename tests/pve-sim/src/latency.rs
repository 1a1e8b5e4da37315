//! The latency model, so that the simulator can answer like a real cluster instead of at
//! loopback speed, and the traffic counters that show what a client asked of it.
//!
//! What is modelled, all off by default (tests stay fast), set by `SimConfig` fields and
//! `pve-sim` flags, and replaceable at run time (`Sim::set_latency`, `POST /_sim/latency`) so
//! that `bench` can populate a cluster fast and then measure it slow:
//! - API workers: pveproxy and pvedaemon each run a fixed pool of worker processes
//!   (pve-manager PVE/Service/pveproxy.pm and PVE/Service/pvedaemon.pm: `max_workers => 3`,
//!   overridable with MAX_WORKERS in /etc/default/pveproxy, read by
//!   PVE::APIServer::Utils::read_proxy_config), and a worker runs one API handler at a time
//!   (the handlers are synchronous Perl). So at most `max_workers` requests are in service at
//!   once; the rest wait for a free worker, first come first served.
//! - Per-request latency: every request spends `request_ms` in service (network round trip,
//!   TLS, pveproxy -> pvedaemon proxying, pmxcfs reads), holding its worker.
//! - Task durations: a worker task runs for `task_ms`, or `task_type_ms[type]` for its type
//!   (`qmcreate`, `qmclone`, `qmdestroy`, `qmconfig`, `qmsnapshot`, `resize`, ...), and reports
//!   `status: running` for all of it.

use super::Sim;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// The latency model's settings; the default models nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatencyModel {
    /// Time every API request spends in service, in ms.
    pub request_ms: u64,
    /// At most this many requests in service at once (PVE: 3); 0 = no limit.
    pub max_workers: usize,
    /// Duration of every worker task, in ms, unless `task_type_ms` names its type.
    pub task_ms: u64,
    /// Duration per task type (`qmcreate`, `qmconfig`, ...), in ms.
    pub task_type_ms: BTreeMap<String, u64>,
}

/// Parses a command line's `TYPE=MS` task duration (`qmclone=900`).
pub fn parse_task_type_ms(s: &str) -> Result<(String, u64), String> {
    let (kind, ms) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not TYPE=MS"))?;
    let ms = ms
        .parse()
        .map_err(|_| format!("'{ms}' in '{s}' is not a number of milliseconds"))?;
    if kind.is_empty() {
        return Err(format!("'{s}' names no task type"));
    }
    Ok((kind.to_string(), ms))
}

impl LatencyModel {
    /// How long a task of type `kind` runs.
    pub fn task_ms(&self, kind: &str) -> u64 {
        self.task_type_ms.get(kind).copied().unwrap_or(self.task_ms)
    }
}

/// Requests answered and response bytes sent since the simulator started: the cost of a
/// client's calls as the cluster sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// API requests answered (errors included; `/_sim/` control requests are not counted).
    pub requests: u64,
    /// Bytes of the response bodies of those requests.
    pub response_bytes: u64,
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;
    fn sub(self, earlier: Traffic) -> Traffic {
        Traffic {
            requests: self.requests.saturating_sub(earlier.requests),
            response_bytes: self.response_bytes.saturating_sub(earlier.response_bytes),
        }
    }
}

/// The model in force: its settings and, when limited, the worker pool.
struct Active {
    model: LatencyModel,
    workers: Option<Arc<Semaphore>>,
}

impl Active {
    fn new(model: LatencyModel) -> Arc<Active> {
        let workers = (model.max_workers > 0).then(|| Arc::new(Semaphore::new(model.max_workers)));
        Arc::new(Active { model, workers })
    }
}

/// The latency model in force and the traffic counters, shared by every request.
pub(crate) struct Load {
    active: RwLock<Arc<Active>>,
    requests: AtomicU64,
    response_bytes: AtomicU64,
}

impl Load {
    pub(crate) fn new(model: LatencyModel) -> Load {
        Load {
            active: RwLock::new(Active::new(model)),
            requests: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
        }
    }

    fn active(&self) -> Arc<Active> {
        self.active.read().unwrap().clone()
    }

    /// Runs one request's handling `f` as a PVE API worker would: waits for a free worker,
    /// spends the request latency holding it, then handles the request.
    pub(crate) async fn serve<F: Future>(&self, f: F) -> F::Output {
        let active = self.active();
        // The semaphore is never closed, so acquiring only fails if it were.
        let _worker = match &active.workers {
            Some(w) => w.clone().acquire_owned().await.ok(),
            None => None,
        };
        if active.model.request_ms > 0 {
            tokio::time::sleep(Duration::from_millis(active.model.request_ms)).await;
        }
        f.await
    }

    /// One answered request with a body of `bytes`.
    pub(crate) fn count(&self, bytes: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.response_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Sim {
    /// The latency model in force.
    pub fn latency(&self) -> LatencyModel {
        self.inner.load.active().model.clone()
    }

    /// Replaces the latency model. Requests already in service finish under the old one;
    /// later requests and tasks use the new one (a new worker pool of the new size).
    pub fn set_latency(&self, model: LatencyModel) {
        *self.inner.load.active.write().unwrap() = Active::new(model);
    }

    /// How long a worker task of type `kind` started now runs, in ms.
    pub(crate) fn task_ms(&self, kind: &str) -> u64 {
        self.inner.load.active().model.task_ms(kind)
    }

    /// Requests answered and response bytes sent so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            requests: self.inner.load.requests.load(Ordering::Relaxed),
            response_bytes: self.inner.load.response_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_type_overrides_the_default() {
        let m = LatencyModel {
            task_ms: 200,
            task_type_ms: BTreeMap::from([("qmclone".to_string(), 900)]),
            ..Default::default()
        };
        assert_eq!(m.task_ms("qmclone"), 900);
        assert_eq!(m.task_ms("qmcreate"), 200);
        assert_eq!(LatencyModel::default().task_ms("qmcreate"), 0);
    }

    #[test]
    fn traffic_differences() {
        let a = Traffic {
            requests: 3,
            response_bytes: 100,
        };
        let b = Traffic {
            requests: 10,
            response_bytes: 450,
        };
        assert_eq!(
            b - a,
            Traffic {
                requests: 7,
                response_bytes: 350
            }
        );
    }
}
