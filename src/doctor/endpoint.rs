//! Steps 1 and 2: can the endpoint be reached (TLS, HTTP), and are the credentials accepted.

use super::error::DoctorError;
use super::report::Recorder;
use crate::pve::{PveClient, PveEndpoint};
use std::time::Instant;

/// A WARN line when the connection is not protected as it should be: TLS
/// without certificate verification (`insecure: true`), or no TLS at all
/// (`allow_http: true`). Nothing when TLS is verified; `endpoint` says so.
pub(crate) fn transport_security(rec: &mut Recorder, region: &str, ep: &PveEndpoint) {
    if ep.url.starts_with("http://") {
        rec.warn(
            "tls",
            format!(
                "cluster {region}: plain HTTP in use (allow_http: true): the credentials and every API answer cross the network unencrypted; use https:// outside local tests"
            ),
        );
    } else if ep.insecure {
        rec.warn(
            "tls",
            format!(
                "cluster {region}: TLS certificate NOT verified (insecure: true): anyone on the path can pose as PVE and take the credentials; put the CA in ca_file instead"
            ),
        );
    }
}

/// An unauthenticated request first, so a TLS or network problem is never
/// reported as a credentials problem. Returns whether the endpoint answered.
pub(crate) async fn reach(rec: &mut Recorder, client: &PveClient, insecure: bool) -> bool {
    let url = client.base_url().to_string();
    let start = Instant::now();
    match client.probe_unauthenticated().await {
        // PVE answers 401 to a request without credentials.
        Ok(401) => {
            rec.pass(
                "endpoint",
                format!(
                    "{url}: {}HTTP 401 in {} ms",
                    transport(&url, insecure),
                    start.elapsed().as_millis()
                ),
            );
            true
        }
        // Something in front of PVE that does not ask for credentials; the login step will tell.
        Ok(200) => {
            rec.warn(
                "endpoint",
                format!(
                    "{url}: {}HTTP 200 without credentials in {} ms; PVE itself would answer 401",
                    transport(&url, insecure),
                    start.elapsed().as_millis()
                ),
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
            rec.fail(
                "endpoint",
                format!("{url}: {why} (after {} ms)", start.elapsed().as_millis()),
            );
            false
        }
    }
}

fn transport(url: &str, insecure: bool) -> &'static str {
    if url.starts_with("https://") && insecure {
        "TLS NOT verified (insecure: true), "
    } else if url.starts_with("https://") {
        "TLS verified, "
    } else {
        "plain HTTP (no TLS), "
    }
}

/// `GET /version` with the configured credentials; reports the PVE version.
pub(crate) async fn authenticate(
    rec: &mut Recorder,
    client: &PveClient,
    who: &str,
    token_auth: bool,
) -> bool {
    let start = Instant::now();
    match client.version().await {
        Ok(v) => {
            let ms = start.elapsed().as_millis();
            rec.pass("auth", format!("{who} accepted"));
            let version = v
                .get("version")
                .and_then(|x| x.as_str())
                .unwrap_or("unknown");
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
