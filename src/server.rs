//! Serve the CSI services on a unix socket (what kubelet and the sidecars use).

use crate::controller::service::ControllerService;
use crate::csi::controller_server::ControllerServer;
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::{Node, NodeServer};
use crate::identity::IdentityService;
use futures::TryStreamExt;
use std::path::PathBuf;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// `unix:///csi/csi.sock`, `unix:/csi/csi.sock` or a bare path.
pub fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if path.is_empty() || !path.starts_with('/') {
        anyhow::bail!("endpoint {endpoint:?}: expected unix:///absolute/path.sock");
    }
    Ok(PathBuf::from(path))
}

/// Bind the socket, replacing a stale one left by a previous process.
pub fn bind(endpoint: &str) -> anyhow::Result<UnixListener> {
    let path = socket_path(endpoint)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot remove stale socket {}: {e}", path.display()),
    }
    UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))
}

/// Run Identity plus whichever of Controller and Node this process serves,
/// until `shutdown` resolves.
pub async fn serve<N: Node>(
    listener: UnixListener,
    identity: IdentityService,
    controller: Option<ControllerService>,
    node: Option<N>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let router = tonic::transport::Server::builder()
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .layer(crate::metrics::grpc::GrpcMetricsLayer)
        .add_service(IdentityServer::new(identity))
        .add_optional_service(controller.map(ControllerServer::new))
        .add_optional_service(node.map(NodeServer::new));
    // Clients other than grpc-go send the socket path as :authority, which h2 refuses.
    let incoming =
        UnixListenerStream::new(listener).map_ok(crate::uds_authority::AuthorityFix::new);
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix:/csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
        assert!(socket_path("unix://").is_err());
    }
}
