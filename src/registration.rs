//! kubelet plugin registration served by the node plugin itself, so a node
//! needs no node-driver-registrar sidecar (`proxmox-csi node --kubelet-registration`).
//!
//! kubelet watches `<kubelet dir>/plugins_registry/` for sockets. On a new one
//! it calls `GetInfo`; for type `CSIPlugin` it then dials the reported
//! endpoint (the CSI socket *as kubelet sees it*), calls NodeGetInfo, writes
//! the driver into the CSINode object, and reports the outcome through
//! `NotifyRegistrationStatus`. Removing the socket makes kubelet deregister
//! the driver, so the socket is removed on shutdown.

use crate::pluginregistration::registration_server::{Registration, RegistrationServer};
use crate::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use futures::TryStreamExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// The plugin type kubelet's CSI handler registers.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// CSI spec versions the driver speaks, as kubelet expects them (semver).
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

/// Where kubelet looks for registration sockets.
pub fn registry_dir(kubelet_dir: &Path) -> PathBuf {
    kubelet_dir.join("plugins_registry")
}

/// The driver's registration socket: `<kubelet dir>/plugins_registry/<driver>-reg.sock`
/// (the name node-driver-registrar uses, so switching between the two leaves no stray socket).
pub fn socket_path(kubelet_dir: &Path, driver_name: &str) -> PathBuf {
    registry_dir(kubelet_dir).join(format!("{driver_name}-reg.sock"))
}

/// kubelet's last verdict, `None` before it has spoken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Registered,
    Failed(String),
}

#[derive(Clone)]
pub struct RegistrationService {
    driver_name: String,
    /// The CSI socket path as kubelet sees it on the host.
    endpoint: String,
    outcome: Arc<Mutex<Option<Outcome>>>,
}

impl RegistrationService {
    /// Fails when the endpoint is not an absolute path: kubelet would dial
    /// it relative to its own working directory.
    pub fn new(driver_name: &str, endpoint: &str) -> Result<Self, String> {
        if driver_name.is_empty() {
            return Err("driver name is empty".into());
        }
        if !endpoint.starts_with('/') {
            return Err(format!(
                "kubelet registration path {endpoint:?} must be an absolute path of the CSI socket on the host"
            ));
        }
        Ok(RegistrationService {
            driver_name: driver_name.into(),
            endpoint: endpoint.into(),
            outcome: Arc::new(Mutex::new(None)),
        })
    }

    /// What kubelet answered last (shared with clones of this service).
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome.lock().expect("outcome lock").clone()
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _r: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: CSI_PLUGIN_TYPE.into(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }

    /// Idempotent: records the latest verdict. A refusal is logged as an
    /// error; kubelet retries by itself when the socket is recreated, which
    /// happens when the plugin restarts (the liveness probe's business).
    async fn notify_registration_status(
        &self,
        r: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let s = r.into_inner();
        let outcome = if s.plugin_registered {
            tracing::info!(driver = %self.driver_name, "registered with kubelet");
            Outcome::Registered
        } else {
            tracing::error!(driver = %self.driver_name, error = %s.error, "kubelet refused the registration");
            Outcome::Failed(s.error)
        };
        *self.outcome.lock().expect("outcome lock") = Some(outcome);
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// The bound registration socket; removes the socket file when dropped.
pub struct Registrar {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl Registrar {
    /// Binds `path`, replacing a stale socket left by an earlier process.
    /// The directory must exist: it is kubelet's, created by kubelet.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot remove stale socket {}: {e}", path.display()),
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {} (is kubelet's plugins_registry directory mounted?): {e}",
                path.display()
            )
        })?;
        Ok(Registrar {
            path: path.to_path_buf(),
            listener: Some(listener),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves `service` until `shutdown` resolves, then removes the socket.
    /// Connections still open then get [`SHUTDOWN_GRACE`] to finish.
    pub async fn serve(
        mut self,
        service: RegistrationService,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let listener = self.listener.take().expect("bound listener");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let incoming =
            UnixListenerStream::new(listener).map_ok(crate::uds_authority::AuthorityFix::new);
        let server = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(service))
            // kubelet's grpc-go sends the socket path as :authority, which h2 refuses.
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            });
        tokio::pin!(server);
        tokio::select! {
            r = &mut server => return Ok(r?),
            _ = shutdown => {}
        }
        let _ = stop_tx.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(r) => r?,
            Err(_) => tracing::warn!("a registration connection was still open at shutdown"),
        }
        Ok(())
        // `self` drops here and removes the socket.
    }
}

/// How long open registration connections may take to finish at shutdown.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for Registrar {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => tracing::info!(socket = %self.path.display(), "registration socket removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %self.path.display(), "cannot remove registration socket: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_is_named_after_the_driver() {
        assert_eq!(
            socket_path(Path::new("/var/lib/kubelet"), "csi.proxmox-csi.dev"),
            PathBuf::from("/var/lib/kubelet/plugins_registry/csi.proxmox-csi.dev-reg.sock")
        );
    }

    #[test]
    fn endpoint_must_be_absolute() {
        assert!(RegistrationService::new("d", "csi.sock").is_err());
        assert!(RegistrationService::new("", "/x/csi.sock").is_err());
        assert!(RegistrationService::new("d", "/x/csi.sock").is_ok());
    }
}
