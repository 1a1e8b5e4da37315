//! What `bench` measured: per-operation latency percentiles, wall time,
//! throughput and the clean-up check, as text or JSON.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The CSI calls of one volume's lifecycle, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    CreateVolume,
    ControllerPublishVolume,
    NodeStageVolume,
    NodePublishVolume,
    CreateSnapshot,
    NodeUnpublishVolume,
    NodeUnstageVolume,
    ControllerUnpublishVolume,
    DeleteSnapshot,
    DeleteVolume,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::CreateVolume => "CreateVolume",
            Op::ControllerPublishVolume => "ControllerPublishVolume",
            Op::NodeStageVolume => "NodeStageVolume",
            Op::NodePublishVolume => "NodePublishVolume",
            Op::CreateSnapshot => "CreateSnapshot",
            Op::NodeUnpublishVolume => "NodeUnpublishVolume",
            Op::NodeUnstageVolume => "NodeUnstageVolume",
            Op::ControllerUnpublishVolume => "ControllerUnpublishVolume",
            Op::DeleteSnapshot => "DeleteSnapshot",
            Op::DeleteVolume => "DeleteVolume",
        }
    }
}

/// One CSI call: how long it took and, if it failed, why.
#[derive(Debug, Clone)]
pub struct Sample {
    pub op: Op,
    pub ms: f64,
    pub error: Option<String>,
}

/// Calls, failures and latencies of successful calls for one operation.
#[derive(Debug, Default, Clone)]
pub struct OpStats {
    pub count: usize,
    pub errors: usize,
    ok_ms: Vec<f64>,
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
        }
    }

    pub fn add(&mut self, s: &Sample) {
        let st = self.ops.entry(s.op).or_default();
        st.count += 1;
        match &s.error {
            None => st.ok_ms.push(s.ms),
            Some(e) => {
                st.errors += 1;
                *self
                    .error_messages
                    .entry(format!("{}: {e}", s.op.name()))
                    .or_default() += 1;
            }
        }
    }

    pub fn errors(&self) -> usize {
        self.ops.values().map(|s| s.errors).sum()
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
            "proxmox-csi bench: {} volumes, {} parallel, storage {} ({fs}), simulated PVE task latency {} ms\n\n",
            i.volumes, i.parallel, i.storage, i.sim_task_ms
        );
        out += &format!(
            "{:<26} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}\n",
            "operation", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        for (op, s) in &self.ops {
            out += &format!(
                "{:<26} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9}\n",
                op.name(),
                s.count,
                s.errors,
                ms(s.percentile(50.0)),
                ms(s.percentile(90.0)),
                ms(s.percentile(99.0)),
                ms(s.max())
            );
        }
        out += "(latencies are of the successful calls)\n\n";
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
                json!({
                    "operation": op.name(),
                    "count": s.count,
                    "errors": s.errors,
                    "p50_ms": s.percentile(50.0),
                    "p90_ms": s.percentile(90.0),
                    "p99_ms": s.percentile(99.0),
                    "max_ms": s.max(),
                })
            })
            .collect();
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
            },
            "operations": ops,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ms: &[f64]) -> OpStats {
        OpStats {
            count: ms.len(),
            errors: 0,
            ok_ms: ms.to_vec(),
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
        };
        let mut r = Report::new(info);
        r.cleanup = Ok("ok".into());
        r.add(&Sample {
            op: Op::CreateVolume,
            ms: 1.0,
            error: None,
        });
        assert_eq!(r.exit_code(), 0);
        r.add(&Sample {
            op: Op::DeleteVolume,
            ms: 2.0,
            error: Some("boom".into()),
        });
        assert_eq!(r.errors(), 1);
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.ops[&Op::DeleteVolume].max(), None);
        assert!(r.to_text().contains("1 x DeleteVolume: boom"));
    }
}
