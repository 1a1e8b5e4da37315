//! The node service over a real gRPC connection on a Unix socket, the way
//! the kubelet talks to it: checks the server wiring and that NodeError
//! codes survive the wire.

use hyper_util::rt::TokioIo;
use proxmox_csi::csi;
use proxmox_csi::csi::node_client::NodeClient;
use proxmox_csi::csi::node_server::NodeServer;
use proxmox_csi::node::{NodeConfig, NodeService};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic::Code;

#[tokio::test]
async fn node_service_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut cfg = NodeConfig::new("grpc-node");
    cfg.kubelet_dir = dir.path().to_path_buf();
    let svc = NodeService::new(cfg);
    let server = tokio::spawn(
        Server::builder()
            .add_service(NodeServer::new(svc))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );

    let path = sock.clone();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .unwrap();
    let mut client = NodeClient::new(channel);

    let info = client
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "grpc-node");

    let err = client
        .node_stage_volume(csi::NodeStageVolumeRequest {
            volume_id: "r/z/s/v".into(),
            staging_target_path: dir.path().join("never").to_string_lossy().into_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("volume_capability"), "{err:?}");

    let err = client
        .node_get_volume_stats(csi::NodeGetVolumeStatsRequest {
            volume_id: "r/z/s/v".into(),
            volume_path: "some/path".into(),
            staging_target_path: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    server.abort();
}
