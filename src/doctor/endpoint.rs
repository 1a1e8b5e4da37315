//! Steps 1 and 2: can the endpoint be reached (TLS, HTTP), and are the credentials accepted.

use super::error::DoctorError;
use super::report::Recorder;
use crate::pve::PveClient;
use std::time::Instant;

/// An unauthenticated request first, so a TLS or network problem is never
/// reported as a credentials problem. Returns whether the endpoint answered.
pub(crate) async fn reach(rec: &mut Recorder, client: &PveClient) -> bool {
    let url = client.base_url().to_string();
    let start = Instant::now();
    match client.probe_unauthenticated().await {
        // PVE answers 401 to a request without credentials.
        Ok(401) => {
            rec.pass("endpoint", format!("{url}: {}HTTP 401 in {} ms", transport(&url), start.elapsed().as_millis()));
            true
        }
        // Something in front of PVE that does not ask for credentials; the login step will tell.
        Ok(200) => {
            rec.warn(
                "endpoint",
                format!("{url}: {}HTTP 200 without credentials in {} ms; PVE itself would answer 401", transport(&url), start.elapsed().as_millis()),
            );
            true
        }
        Ok(status) => {
            rec.fail(
                "endpoint",
                format!("{url}/version answered HTTP {status}, not the PVE API; the url must end in /api2/json"),
            );
            false
        }
        Err(e) => {
            let why = DoctorError::from_pve(&e, true);
            rec.fail("endpoint", format!("{url}: {why} (after {} ms)", start.elapsed().as_millis()));
            false
        }
    }
}

fn transport(url: &str) -> &'static str {
    if url.starts_with("https://") {
        "TLS verified, "
    } else {
        "plain HTTP (no TLS), "
    }
}

/// `GET /version` with the configured credentials; reports the PVE version.
pub(crate) async fn authenticate(rec: &mut Recorder, client: &PveClient, who: &str, token_auth: bool) -> bool {
    let start = Instant::now();
    match client.version().await {
        Ok(v) => {
            let ms = start.elapsed().as_millis();
            rec.pass("auth", format!("{who} accepted"));
            let version = v.get("version").and_then(|x| x.as_str()).unwrap_or("unknown");
            rec.pass("version", format!("Proxmox VE {version} ({ms} ms)"));
            true
        }
        Err(e) => {
            let why = DoctorError::from_pve(&e, token_auth);
            rec.fail("auth", format!("{who}: {why}"));
            false
        }
    }
}
