//! The cluster's `pool`: it must exist before the controller can create holders in it (PVE's
//! create refuses an unknown pool: "Permission check failed (pool '<pool>' does not exist)").

use super::error::DoctorError;
use super::report::Recorder;
use crate::pve::PveClient;
use serde::Deserialize;

#[derive(Deserialize)]
struct PoolEntry {
    #[serde(default)]
    members: Vec<serde_json::Value>,
}

pub(crate) async fn check(rec: &mut Recorder, client: &PveClient, pool: &str) {
    let name = format!("pool {pool}");
    let p = vec![("poolid".to_string(), pool.to_string())];
    match client.get::<Vec<PoolEntry>>("/pools", &p).await {
        Ok(found) => {
            let members = found.first().map(|e| e.members.len()).unwrap_or(0);
            rec.pass(name, format!("exists, {members} members visible"));
        }
        Err(e) if e.message().contains("does not exist") => rec.fail(
            name,
            format!("does not exist; create it (pveum pool add {pool}) or fix clusters[].pool"),
        ),
        Err(e) => rec.fail(
            name,
            format!("cannot read it: {}", DoctorError::from_pve(&e, true)),
        ),
    }
}
