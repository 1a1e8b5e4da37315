//! How the PVE client tells the rest of the driver what it did — each HTTP exchange and
//! each waited-for task — without depending on the metrics layer above it. The controller
//! hands its clients the Prometheus recorder (`metrics::PveMetrics`); `doctor` and the unit
//! tests keep the silent default.

use std::time::Duration;

pub trait Observer: Send + Sync {
    /// One HTTP exchange; `status` is `None` when no response came.
    fn request(&self, method: &str, path: &str, status: Option<u16>, elapsed: Duration);
    /// One waited-for worker task: `task_type` from its UPID, `result` one of ok, failed,
    /// timeout, error.
    fn task(&self, task_type: &str, result: &str, elapsed: Duration);
}

/// Records nothing.
pub struct Silent;

impl Observer for Silent {
    fn request(&self, _: &str, _: &str, _: Option<u16>, _: Duration) {}
    fn task(&self, _: &str, _: &str, _: Duration) {}
}
