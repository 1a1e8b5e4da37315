//! The CSI socket answers HTTP/2 requests whatever their `:authority`: Python grpcio
//! sends the socket path percent-encoded, grpc-java and Bazel send it raw, and h2 on
//! its own resets such streams with PROTOCOL_ERROR. Spoken here as raw HTTP/2 frames,
//! because no Rust client (h2, hyper) can send an authority that is not a valid URI one.

use proxmox_csi::identity::{IdentityService, DRIVER_NAME};
use proxmox_csi::node::NodeService;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let l = (payload.len() as u32).to_be_bytes();
    let mut f = vec![l[1], l[2], l[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK literals without indexing or Huffman (every value here is shorter than 127 bytes).
fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in headers {
        assert!(n.len() < 127 && v.len() < 127);
        b.push(0);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

#[derive(Debug, Default)]
struct Answer {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One unary GetPluginInfo with this `:authority`; Err with what the server did instead.
async fn get_plugin_info(socket: &Path, authority: &str) -> Result<Answer, String> {
    let mut conn = UnixStream::connect(socket).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    let block = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/csi.v1.Identity/GetPluginInfo"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    out.extend(frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // DATA: an empty message, END_STREAM
    conn.write_all(&out).await.unwrap();

    let mut decoder = loona_hpack::Decoder::new();
    let mut answer = Answer::default();
    let read = async {
        loop {
            let mut head = [0u8; 9];
            conn.read_exact(&mut head)
                .await
                .map_err(|e| format!("connection ended: {e}"))?;
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            conn.read_exact(&mut payload)
                .await
                .map_err(|e| format!("connection ended: {e}"))?;
            match kind {
                0x4 if flags & 0x1 == 0 => conn.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap(), // SETTINGS ACK
                0x3 if stream == 1 => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    return Err(format!("RST_STREAM with error code {code}"));
                }
                0x7 => return Err(format!("GOAWAY {payload:?}")),
                0x1 if stream == 1 => {
                    assert!(flags & 0x4 != 0, "a CONTINUATION for such a small answer");
                    let mut p = &payload[..];
                    if flags & 0x8 != 0 {
                        let pad = p[0] as usize;
                        p = &p[1..p.len() - pad];
                    }
                    if flags & 0x20 != 0 {
                        p = &p[5..];
                    }
                    for (n, v) in decoder.decode(p).map_err(|e| format!("HPACK: {e:?}"))? {
                        answer.headers.push((
                            String::from_utf8_lossy(&n).into(),
                            String::from_utf8_lossy(&v).into(),
                        ));
                    }
                }
                0x0 if stream == 1 => answer.body.extend_from_slice(&payload),
                _ => {}
            }
            if stream == 1 && flags & 0x1 != 0 && (kind == 0x0 || kind == 0x1) {
                return Ok::<(), String>(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "no answer in 5 s".to_string())??;
    Ok(answer)
}

#[tokio::test]
async fn socket_path_as_authority_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let listener = proxmox_csi::server::bind(&socket.to_string_lossy()).unwrap();
    let identity = IdentityService {
        driver_name: DRIVER_NAME.into(),
        controller: None,
    };
    let server = tokio::spawn(proxmox_csi::server::serve(
        listener,
        identity,
        None,
        None::<NodeService>,
        std::future::pending(),
    ));

    let path = socket.to_string_lossy().to_string();
    // grpc-java / Bazel: the raw path. Python grpcio >= 1.57: the path percent-encoded, without the first '/'.
    let encoded = path.trim_start_matches('/').replace('/', "%2F");
    for authority in [
        path.as_str(),
        encoded.as_str(),
        "localhost",
        "unix:/weird path",
    ] {
        let answer = get_plugin_info(&socket, authority)
            .await
            .unwrap_or_else(|e| panic!("authority {authority:?}: {e}"));
        assert_eq!(
            answer.get(":status"),
            Some("200"),
            "authority {authority:?}: {answer:?}"
        );
        assert_eq!(
            answer.get("grpc-status"),
            Some("0"),
            "authority {authority:?}: {answer:?}"
        );
        let body = String::from_utf8_lossy(&answer.body);
        assert!(
            body.contains(DRIVER_NAME),
            "authority {authority:?}: {body:?}"
        );
    }
    server.abort();
}
