//! The scrape endpoint: `/metrics` in Prometheus text format and `/healthz`, on their
//! own TCP port because the CSI socket is a unix socket that Prometheus cannot reach.

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub fn router() -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                    super::global().render(),
                )
            }),
        )
        // Liveness only: answering at all means the runtime is alive.
        .route("/healthz", get(|| async { "ok\n" }))
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {addr}: {e}"))
}

/// Serve until the task is dropped or the listener fails.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    axum::serve(listener, router()).await?;
    Ok(())
}
