//! What `bench` measured: per-operation latency percentiles and PVE requests
//! and response bytes per call, wall time, throughput, parallel creates and the
//! clean-up check, as text or JSON.

use pve_sim::Traffic;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The CSI calls of one volume's lifecycle, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    CreateVolume,
    ControllerPublishVolume,
    NodeStageVolume,
    NodePublishVolume,
    ControllerExpandVolume,
    CreateSnapshot,
    NodeUnpublishVolume,
    NodeUnstageVolume,
    ControllerUnpublishVolume,
    DeleteSnapshot,
    DeleteVolume,
    /// One page (see `probes.rs`).
    ListVolumes,
    ListSnapshots,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::CreateVolume => "CreateVolume",
            Op::ControllerPublishVolume => "ControllerPublishVolume",
            Op::NodeStageVolume => "NodeStageVolume",
            Op::NodePublishVolume => "NodePublishVolume",
            Op::ControllerExpandVolume => "ControllerExpandVolume",
            Op::CreateSnapshot => "CreateSnapshot",
            Op::NodeUnpublishVolume => "NodeUnpublishVolume",
            Op::NodeUnstageVolume => "NodeUnstageVolume",
            Op::ControllerUnpublishVolume => "ControllerUnpublishVolume",
            Op::DeleteSnapshot => "DeleteSnapshot",
            Op::DeleteVolume => "DeleteVolume",
            Op::ListVolumes => "ListVolumes",
            Op::ListSnapshots => "ListSnapshots",
        }
    }
}

/// One CSI call: how long it took, what it cost PVE (when counted) and, if it
/// failed, why.
#[derive(Debug, Clone)]
pub struct Sample {
    pub op: Op,
    pub ms: f64,
    pub error: Option<String>,
    pub pve: Option<Traffic>,
}

/// Calls, failures, latencies of successful calls and PVE traffic of counted
/// calls for one operation.
#[derive(Debug, Default, Clone)]
pub struct OpStats {
    pub count: usize,
    pub errors: usize,
    ok_ms: Vec<f64>,
    pve: Vec<Traffic>,
}

impl OpStats {
    /// Nearest-rank percentile of the successful calls, in ms.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.ok_ms.is_empty() {
            return None;
        }
        let mut v = self.ok_ms.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        Some(v[rank.min(v.len()) - 1])
    }

    pub fn max(&self) -> Option<f64> {
        self.percentile(100.0)
    }

    /// Mean PVE requests per counted call.
    pub fn requests_per_call(&self) -> Option<f64> {
        self.mean(|t| t.requests)
    }

    /// Mean response bytes per counted call.
    pub fn bytes_per_call(&self) -> Option<f64> {
        self.mean(|t| t.response_bytes)
    }

    /// Fewest and most PVE requests of one counted call.
    pub fn requests_range(&self) -> Option<(u64, u64)> {
        let it = self.pve.iter().map(|t| t.requests);
        Some((it.clone().min()?, it.max()?))
    }

    fn mean(&self, f: impl Fn(&Traffic) -> u64) -> Option<f64> {
        (!self.pve.is_empty())
            .then(|| self.pve.iter().map(|t| f(t) as f64).sum::<f64>() / self.pve.len() as f64)
    }
}

/// The CreateVolume calls of the parallel-create phase.
#[derive(Debug, Default, Clone)]
pub struct Burst {
    pub creates: usize,
    pub parallel: usize,
    pub stats: OpStats,
    pub wall_seconds: f64,
}

impl Burst {
    pub fn creates_per_second(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            (self.creates - self.stats.errors) as f64 / self.wall_seconds
        } else {
            0.0
        }
    }
}

/// The run's settings, echoed in the report.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub volumes: usize,
    pub parallel: usize,
    pub storage: String,
    /// None in controller-only runs.
    pub fs_type: Option<String>,
    pub size_mib: u64,
    pub sim_task_ms: u64,
    pub snapshots: bool,
    /// Volumes present before the timed phases.
    pub existing: usize,
    /// Worker VMs in the cluster (publishes go round them in controller-only runs).
    pub workers: usize,
    /// The rest of the simulator's latency model.
    pub sim_request_ms: u64,
    pub sim_max_workers: usize,
    pub sim_task_type_ms: BTreeMap<String, u64>,
    /// PVE requests per call are counted (one call at a time).
    pub counted: bool,
}

#[derive(Debug)]
pub struct Report {
    pub info: RunInfo,
    pub ops: BTreeMap<Op, OpStats>,
    pub wall_seconds: f64,
    /// Volumes whose every call succeeded.
    pub volumes_ok: usize,
    /// Distinct error messages, with how often each was seen.
    pub error_messages: BTreeMap<String, usize>,
    /// Ok: nothing was left behind (and how the clean-up got there); Err: what was left.
    pub cleanup: Result<String, String>,
    /// Time to make the existing volumes (latency model off).
    pub populate_seconds: f64,
    pub burst: Burst,
}

impl Report {
    pub fn new(info: RunInfo) -> Self {
        Report {
            info,
            ops: BTreeMap::new(),
            wall_seconds: 0.0,
            volumes_ok: 0,
            error_messages: BTreeMap::new(),
            cleanup: Err("not run".into()),
            populate_seconds: 0.0,
            burst: Burst::default(),
        }
    }

    pub fn add(&mut self, s: &Sample) {
        let st = self.ops.entry(s.op).or_default();
        Self::record(st, &mut self.error_messages, s, "");
    }

    /// A CreateVolume of the parallel-create phase.
    pub fn add_burst(&mut self, s: &Sample) {
        Self::record(
            &mut self.burst.stats,
            &mut self.error_messages,
            s,
            " (parallel creates)",
        );
    }

    fn record(st: &mut OpStats, msgs: &mut BTreeMap<String, usize>, s: &Sample, tag: &str) {
        st.count += 1;
        match &s.error {
            None => st.ok_ms.push(s.ms),
            Some(e) => {
                st.errors += 1;
                *msgs
                    .entry(format!("{}{tag}: {e}", s.op.name()))
                    .or_default() += 1;
            }
        }
        if let Some(t) = s.pve {
            st.pve.push(t);
        }
    }

    pub fn errors(&self) -> usize {
        self.ops.values().map(|s| s.errors).sum::<usize>() + self.burst.stats.errors
    }

    pub fn volumes_per_second(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.info.volumes as f64 / self.wall_seconds
        } else {
            0.0
        }
    }

    /// 1 if any call failed or anything was left behind.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.errors() > 0 || self.cleanup.is_err())
    }

    pub fn to_text(&self) -> String {
        let i = &self.info;
        let fs = i
            .fs_type
            .as_deref()
            .map_or("controller only".to_string(), |f| {
                format!("{f}, {} MiB", i.size_mib)
            });
        let mut out = format!(
            "proxmox-csi bench: {} volumes, {} parallel, storage {} ({fs}), simulated PVE task latency {} ms\n",
            i.volumes, i.parallel, i.storage, i.sim_task_ms
        );
        out += &format!(
            "cluster: {} existing volumes (made in {:.1} s), {} worker VMs; simulated PVE: {}\n\n",
            i.existing,
            self.populate_seconds,
            i.workers,
            i.latency_text()
        );
        out += &format!(
            "{:<26} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}\n",
            "operation",
            "count",
            "errors",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "PVE req",
            "PVE KiB"
        );
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let row = |name: &str, s: &OpStats| {
            format!(
                "{:<26} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}\n",
                name,
                s.count,
                s.errors,
                ms(s.percentile(50.0)),
                ms(s.percentile(95.0)),
                ms(s.percentile(99.0)),
                ms(s.max()),
                ms(s.requests_per_call()),
                ms(s.bytes_per_call().map(|b| b / 1024.0))
            )
        };
        for (op, s) in &self.ops {
            out += &row(op.name(), s);
        }
        out += "(latencies are of the successful calls; PVE req and KiB: mean requests and response KiB per call";
        out += if i.counted {
            ")\n"
        } else {
            ", counted with --parallel 1 only)\n"
        };
        let b = &self.burst;
        if b.creates > 0 {
            out += &format!(
                "\nparallel creates: {} CreateVolume, {} at a time, in {:.2} s: {:.2} creates/s\n",
                b.creates,
                b.parallel,
                b.wall_seconds,
                b.creates_per_second()
            );
            out += &row("CreateVolume", &b.stats);
        }
        out += "\n";
        out += &format!(
            "wall time {:.2} s, {:.2} volumes/s; {} of {} volumes without error, {} failed calls\n",
            self.wall_seconds,
            self.volumes_per_second(),
            self.volumes_ok,
            i.volumes,
            self.errors()
        );
        for (msg, n) in &self.error_messages {
            out += &format!("  {n} x {msg}\n");
        }
        out += &match &self.cleanup {
            Ok(how) => format!("cleanup: {how}\n"),
            Err(e) => format!("cleanup: FAILED: {e}\n"),
        };
        out
    }

    pub fn to_json(&self) -> Value {
        let i = &self.info;
        let ops: Vec<Value> = self
            .ops
            .iter()
            .map(|(op, s)| {
                let mut v = op_json(s);
                v["operation"] = json!(op.name());
                v
            })
            .collect();
        let b = &self.burst;
        json!({
            "config": {
                "volumes": i.volumes,
                "parallel": i.parallel,
                "storage": i.storage,
                "controller_only": i.fs_type.is_none(),
                "fs_type": i.fs_type,
                "size_mib": i.size_mib,
                "sim_task_ms": i.sim_task_ms,
                "snapshots": i.snapshots,
                "existing": i.existing,
                "workers": i.workers,
                "sim_request_ms": i.sim_request_ms,
                "sim_max_workers": i.sim_max_workers,
                "sim_task_type_ms": i.sim_task_type_ms,
                "pve_counted": i.counted,
            },
            "populate_seconds": self.populate_seconds,
            "operations": ops,
            "parallel_creates": {
                "creates": b.creates,
                "parallel": b.parallel,
                "wall_seconds": b.wall_seconds,
                "creates_per_second": b.creates_per_second(),
                "create_volume": op_json(&b.stats),
            },
            "wall_seconds": self.wall_seconds,
            "volumes_per_second": self.volumes_per_second(),
            "volumes_ok": self.volumes_ok,
            "errors": self.errors(),
            "error_messages": self.error_messages.iter().map(|(m, n)| json!({"message": m, "count": n})).collect::<Vec<_>>(),
            "cleanup": match &self.cleanup {
                Ok(how) => json!({ "ok": true, "detail": how }),
                Err(e) => json!({ "ok": false, "detail": e }),
            },
        })
    }
}

impl RunInfo {
    /// The latency model, in words.
    fn latency_text(&self) -> String {
        let workers = match self.sim_max_workers {
            0 => "no API worker limit".to_string(),
            n => format!("{n} API workers"),
        };
        let mut tasks = format!("tasks {} ms", self.sim_task_ms);
        if !self.sim_task_type_ms.is_empty() {
            let per: Vec<String> = self
                .sim_task_type_ms
                .iter()
                .map(|(k, v)| format!("{k} {v} ms"))
                .collect();
            tasks += &format!(" ({})", per.join(", "));
        }
        format!("{} ms a request, {workers}, {tasks}", self.sim_request_ms)
    }
}

fn op_json(s: &OpStats) -> Value {
    let range = s.requests_range();
    json!({
        "count": s.count,
        "errors": s.errors,
        "p50_ms": s.percentile(50.0),
        "p90_ms": s.percentile(90.0),
        "p95_ms": s.percentile(95.0),
        "p99_ms": s.percentile(99.0),
        "max_ms": s.max(),
        "pve_requests_per_call": s.requests_per_call(),
        "pve_requests_min": range.map(|r| r.0),
        "pve_requests_max": range.map(|r| r.1),
        "pve_response_bytes_per_call": s.bytes_per_call(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ms: &[f64]) -> OpStats {
        OpStats {
            count: ms.len(),
            errors: 0,
            ok_ms: ms.to_vec(),
            pve: vec![],
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = stats(&(1..=100).rev().map(f64::from).collect::<Vec<_>>());
        assert_eq!(s.percentile(50.0), Some(50.0));
        assert_eq!(s.percentile(90.0), Some(90.0));
        assert_eq!(s.percentile(99.0), Some(99.0));
        assert_eq!(s.max(), Some(100.0));
        let one = stats(&[7.0]);
        assert_eq!(one.percentile(50.0), Some(7.0));
        assert_eq!(one.percentile(99.0), Some(7.0));
        assert_eq!(stats(&[]).percentile(50.0), None);
    }

    #[test]
    fn failures_count_and_set_the_exit_code() {
        let info = RunInfo {
            volumes: 1,
            parallel: 1,
            storage: "local".into(),
            fs_type: None,
            size_mib: 1,
            sim_task_ms: 0,
            snapshots: false,
            existing: 0,
            workers: 1,
            sim_request_ms: 0,
            sim_max_workers: 0,
            sim_task_type_ms: BTreeMap::new(),
            counted: true,
        };
        let mut r = Report::new(info);
        r.cleanup = Ok("ok".into());
        r.add(&Sample {
            op: Op::CreateVolume,
            ms: 1.0,
            error: None,
            pve: Some(Traffic {
                requests: 7,
                response_bytes: 2048,
            }),
        });
        r.add(&Sample {
            op: Op::CreateVolume,
            ms: 1.0,
            error: None,
            pve: Some(Traffic {
                requests: 9,
                response_bytes: 4096,
            }),
        });
        let c = &r.ops[&Op::CreateVolume];
        assert_eq!(c.requests_per_call(), Some(8.0));
        assert_eq!(c.requests_range(), Some((7, 9)));
        assert_eq!(c.bytes_per_call(), Some(3072.0));
        let row = r.to_text();
        let row = row.lines().find(|l| l.starts_with("CreateVolume")).unwrap();
        assert!(row.ends_with("8.0       3.0"), "{row}");
        assert_eq!(r.exit_code(), 0);
        r.add(&Sample {
            op: Op::DeleteVolume,
            ms: 2.0,
            error: Some("boom".into()),
            pve: None,
        });
        assert_eq!(r.errors(), 1);
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.ops[&Op::DeleteVolume].max(), None);
        assert!(r.to_text().contains("1 x DeleteVolume: boom"));
    }
}
