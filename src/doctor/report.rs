//! The doctor's result: a flat list of checks, rendered as text lines or JSON.

use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Region of the cluster, as in the config file.
    pub cluster: String,
    pub name: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

impl Report {
    pub fn summary(&self) -> Summary {
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        Summary {
            pass: count(Status::Pass),
            warn: count(Status::Warn),
            fail: count(Status::Fail),
        }
    }

    /// Warnings do not block an install; only failures do.
    pub fn exit_code(&self) -> i32 {
        if self.summary().fail == 0 {
            0
        } else {
            1
        }
    }

    pub fn find(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }

    pub fn to_text(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.cluster.len() + c.name.len() + 1)
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let what = format!("{}/{}", c.cluster, c.name);
            let _ = writeln!(out, "{}  {what:<width$}  {}", c.status.label(), c.detail);
        }
        let s = self.summary();
        let verdict = if s.fail == 0 { "ready" } else { "not ready" };
        let _ = writeln!(
            out,
            "{} passed, {} warnings, {} failed: {verdict}",
            s.pass, s.warn, s.fail
        );
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "checks": self.checks,
            "summary": self.summary(),
            "ok": self.exit_code() == 0,
        })
    }
}

/// Collects the checks of one cluster so callers need not repeat its name.
pub(crate) struct Recorder {
    cluster: String,
    pub(crate) checks: Vec<Check>,
}

impl Recorder {
    pub(crate) fn new(cluster: &str) -> Recorder {
        Recorder {
            cluster: cluster.to_string(),
            checks: Vec::new(),
        }
    }

    pub(crate) fn add(
        &mut self,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
    ) {
        // One line per check: error texts from PVE or a web server can carry newlines.
        let detail = detail
            .into()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        self.checks.push(Check {
            cluster: self.cluster.clone(),
            name: name.into(),
            status,
            detail,
        });
    }

    pub(crate) fn pass(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Pass, detail);
    }

    pub(crate) fn warn(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Warn, detail);
    }

    pub(crate) fn fail(&mut self, name: impl Into<String>, detail: impl Into<String>) {
        self.add(name, Status::Fail, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Status) -> Check {
        Check {
            cluster: "a".into(),
            name: "n".into(),
            status,
            detail: "d".into(),
        }
    }

    #[test]
    fn warnings_keep_exit_code_zero() {
        let r = Report {
            checks: vec![check(Status::Pass), check(Status::Warn)],
        };
        assert_eq!(r.exit_code(), 0);
        assert!(r
            .to_text()
            .ends_with("1 passed, 1 warnings, 0 failed: ready\n"));
        let r = Report {
            checks: vec![check(Status::Pass), check(Status::Fail)],
        };
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.to_json()["summary"]["fail"], 1);
        assert_eq!(r.to_json()["checks"][1]["status"], "FAIL");
    }
}
