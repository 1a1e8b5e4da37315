//! A CSI gRPC client over a unix socket, for the sandbox and the tests:
//! they go through the same socket and codecs a CO does.

use crate::csi::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint, Uri};

pub struct CsiClients {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

pub async fn connect(socket: &Path) -> anyhow::Result<CsiClients> {
    let socket: PathBuf = socket.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://[::1]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    Ok(CsiClients {
        identity: IdentityClient::new(channel.clone()),
        controller: ControllerClient::new(channel.clone()),
        node: NodeClient::new(channel),
    })
}
