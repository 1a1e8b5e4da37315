//! Accept any HTTP/2 `:authority` on the CSI unix socket.
//!
//! gRPC clients that are not grpc-go put the socket path into `:authority`:
//! Python grpcio (C core ≥ 1.57) sends it percent-encoded (`tmp%2Fx%2Fcsi.sock`),
//! grpc-java and Bazel send it raw (`/tmp/x/csi.sock`). Neither is a valid URI
//! authority, and h2 (the HTTP/2 server under tonic and hyper) resets every such
//! stream with PROTOCOL_ERROR while it decodes the headers, before any service
//! code runs. No h2 release nor server option relaxes this (0.4.20, the newest;
//! hyperium/h2#487 proposes it and is not merged).
//!
//! So each connection's client-to-server bytes pass through [`AuthorityFix`]:
//! it decodes every header block (HPACK, with the client's dynamic table), puts
//! `localhost` in place of an `:authority` that is not a valid authority (what
//! grpc-go sends on unix sockets), and hands h2 the block re-encoded as plain
//! literals without indexing. h2's decoder then never needs a dynamic table
//! entry, so the two HPACK contexts cannot drift apart. On a unix socket the
//! authority carries no information: the socket already names the peer. Every
//! other frame, and the server-to-client direction, pass unchanged. Anything
//! that is not HTTP/2 (no client preface) passes through untouched.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a peer may have: always accepted.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (h2's own header list limit is 16 KiB).
const MAX_BLOCK: usize = 1 << 20;
/// What replaces an authority that is not one.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

enum Mode {
    /// Checking the client preface; holds how many bytes of it matched so far.
    Preface(usize),
    Frames,
    /// Not HTTP/2 with prior knowledge: bytes pass unchanged.
    Passthrough,
}

/// A header block being collected from HEADERS + CONTINUATION frames.
struct Block {
    stream_id: u32,
    end_stream: bool,
    fragment: BytesMut,
}

/// Wraps one accepted connection; see the module documentation.
pub struct AuthorityFix<IO> {
    inner: IO,
    mode: Mode,
    /// Read from `inner`, not yet looked at.
    raw: BytesMut,
    /// Ready for the HTTP/2 server.
    out: BytesMut,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    pub fn new(inner: IO) -> AuthorityFix<IO> {
        let mut decoder = loona_hpack::Decoder::new();
        // The client sizes its table by the server's SETTINGS_HEADER_TABLE_SIZE
        // (4096 unless changed); be lenient so a larger one never breaks decoding.
        decoder.set_max_allowed_table_size(1 << 16);
        AuthorityFix {
            inner,
            mode: Mode::Preface(0),
            raw: BytesMut::new(),
            out: BytesMut::new(),
            block: None,
            decoder,
            eof: false,
        }
    }

    /// Move what can be handled from `raw` to `out`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    let all = self.raw.split();
                    self.out.extend_from_slice(&all);
                    return Ok(());
                }
                Mode::Preface(matched) => {
                    let n = (PREFACE.len() - matched).min(self.raw.len());
                    if n == 0 {
                        return Ok(());
                    }
                    if self.raw[..n] != PREFACE[matched..matched + n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    let part = self.raw.split_to(n);
                    self.out.extend_from_slice(&part);
                    self.mode = if matched + n == PREFACE.len() {
                        Mode::Frames
                    } else {
                        Mode::Preface(matched + n)
                    };
                }
                Mode::Frames => {
                    if self.raw.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len =
                        u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
                    if self.raw.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let mut frame = self.raw.split_to(FRAME_HEADER + len).freeze();
                    let kind = frame[3];
                    let flags = frame[4];
                    let stream_id =
                        u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
                    frame.advance(FRAME_HEADER);
                    match (kind, &mut self.block) {
                        (HEADERS, None) => {
                            let fragment = headers_fragment(frame, flags)?;
                            self.block = Some(Block {
                                stream_id,
                                end_stream: flags & END_STREAM != 0,
                                fragment: BytesMut::from(&fragment[..]),
                            });
                        }
                        (CONTINUATION, Some(b)) if b.stream_id == stream_id => {
                            if b.fragment.len() + frame.len() > MAX_BLOCK {
                                return Err(invalid("HTTP/2 header block too large"));
                            }
                            b.fragment.extend_from_slice(&frame);
                        }
                        // RFC 9113 §6.10: nothing may come between a HEADERS and its CONTINUATIONs.
                        (_, Some(_)) => return Err(invalid("HTTP/2 header block interrupted")),
                        (_, None) => {
                            self.out
                                .put_slice(&frame_header(len, kind, flags, stream_id));
                            self.out.extend_from_slice(&frame);
                            continue;
                        }
                    }
                    if flags & END_HEADERS != 0 {
                        let b = self.block.take().expect("a block is being collected");
                        self.emit_block(b)?;
                    }
                }
            }
        }
    }

    fn emit_block(&mut self, b: Block) -> io::Result<()> {
        let headers = self
            .decoder
            .decode(&b.fragment)
            .map_err(|e| invalid(&format!("HPACK: {e:?}")))?;
        let mut block = Vec::with_capacity(b.fragment.len() * 2);
        for (name, value) in &headers {
            let value: &[u8] = if name == b":authority"
                && http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                LOCAL_AUTHORITY
            } else {
                value
            };
            // Literal header field without indexing, new name (RFC 7541 §6.2.2), no Huffman.
            block.push(0);
            put_string(&mut block, name);
            put_string(&mut block, value);
        }
        let mut chunks = block.chunks(MAX_FRAME).peekable();
        let mut first = true;
        if block.is_empty() {
            let flags = END_HEADERS | if b.end_stream { END_STREAM } else { 0 };
            self.out
                .put_slice(&frame_header(0, HEADERS, flags, b.stream_id));
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let (kind, mut flags) = if first {
                (HEADERS, if b.end_stream { END_STREAM } else { 0 })
            } else {
                (CONTINUATION, 0)
            };
            if last {
                flags |= END_HEADERS;
            }
            self.out
                .put_slice(&frame_header(chunk.len(), kind, flags, b.stream_id));
            self.out.put_slice(chunk);
            first = false;
        }
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame, without padding and priority fields.
fn headers_fragment(mut payload: Bytes, flags: u8) -> io::Result<Bytes> {
    let mut pad = 0;
    if flags & PADDED != 0 {
        if payload.is_empty() {
            return Err(invalid("HTTP/2 HEADERS: missing pad length"));
        }
        pad = payload.get_u8() as usize;
    }
    if flags & PRIORITY != 0 {
        if payload.len() < 5 {
            return Err(invalid("HTTP/2 HEADERS: short priority"));
        }
        payload.advance(5);
    }
    if pad > payload.len() {
        return Err(invalid("HTTP/2 HEADERS: padding longer than the frame"));
    }
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

fn frame_header(len: usize, kind: u8, flags: u8, stream_id: u32) -> [u8; FRAME_HEADER] {
    let l = (len as u32).to_be_bytes();
    let s = stream_id.to_be_bytes();
    [l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]
}

/// An HPACK string literal (RFC 7541 §5.2) without Huffman coding.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_integer(out, s.len(), 7, 0);
    out.extend_from_slice(s);
}

/// An HPACK integer (RFC 7541 §5.1) with an `n`-bit prefix under `high` bits.
fn put_integer(out: &mut Vec<u8>, mut value: usize, n: u8, high: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // An incomplete frame at the end is dropped, as h2 would.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                        if matches!(this.mode, Mode::Preface(_)) {
                            // A short non-HTTP/2 exchange: hand over what came.
                            this.mode = Mode::Passthrough;
                        }
                    } else {
                        this.raw.extend_from_slice(rb.filled());
                    }
                    this.process()?;
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<IO>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn block(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in headers {
            b.push(0);
            put_string(&mut b, n);
            put_string(&mut b, v);
        }
        b
    }

    async fn through(input: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        out
    }

    #[test]
    fn integers() {
        let mut v = Vec::new();
        put_integer(&mut v, 10, 5, 0);
        assert_eq!(v, [10]);
        v.clear();
        put_integer(&mut v, 1337, 5, 0);
        assert_eq!(v, [31, 154, 10]); // RFC 7541 C.1.2
    }

    #[tokio::test]
    async fn bad_authority_becomes_localhost_and_state_is_kept() {
        let mut enc = loona_hpack::Encoder::new();
        // The encoder indexes these, so the second block refers to the dynamic table.
        let h1: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/csi.v1.Identity/Probe"),
            (b":authority", b"tmp%2Fx%2Fcsi.sock"),
            (b"te", b"trailers"),
        ];
        let b1 = enc.encode(h1.iter().map(|(n, v)| (*n, *v)));
        let b2 = enc.encode(h1.iter().map(|(n, v)| (*n, *v)));
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&frame_header(0, 0x4, 0, 0)); // SETTINGS
                                                              // Stream 1: padded, with priority, split over a CONTINUATION.
        let (a, b) = b1.split_at(3);
        let mut payload = vec![2u8];
        payload.extend_from_slice(&[0, 0, 0, 0, 15]);
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0, 0]);
        input.extend_from_slice(&frame_header(payload.len(), HEADERS, PADDED | PRIORITY, 1));
        input.extend_from_slice(&payload);
        input.extend_from_slice(&frame_header(b.len(), CONTINUATION, END_HEADERS, 1));
        input.extend_from_slice(b);
        input.extend_from_slice(&frame_header(
            b2.len(),
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
        ));
        input.extend_from_slice(&b2);
        let out = through(input).await;

        let mut expect = PREFACE.to_vec();
        expect.extend_from_slice(&frame_header(0, 0x4, 0, 0));
        let fixed: Vec<(&[u8], &[u8])> = h1
            .iter()
            .map(|(n, v)| {
                (
                    *n,
                    if *n == b":authority" {
                        LOCAL_AUTHORITY
                    } else {
                        *v
                    },
                )
            })
            .collect();
        let fb = block(&fixed);
        expect.extend_from_slice(&frame_header(fb.len(), HEADERS, END_HEADERS, 1));
        expect.extend_from_slice(&fb);
        expect.extend_from_slice(&frame_header(
            fb.len(),
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
        ));
        expect.extend_from_slice(&fb);
        assert_eq!(out, expect);
    }

    #[tokio::test]
    async fn valid_authority_and_other_frames_are_kept() {
        let hb = block(&[(b":authority", b"localhost:50051"), (b":path", b"/x")]);
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&frame_header(hb.len(), HEADERS, END_HEADERS, 1));
        input.extend_from_slice(&hb);
        input.extend_from_slice(&frame_header(5, 0x0, END_STREAM, 1)); // DATA
        input.extend_from_slice(&[0, 0, 0, 0, 0]);
        assert_eq!(through(input.clone()).await, input);
    }

    #[tokio::test]
    async fn not_http2_passes_unchanged() {
        let input = b"GET / HTTP/1.1\r\nHost: /tmp/x.sock\r\n\r\n".to_vec();
        assert_eq!(through(input.clone()).await, input);
    }

    #[tokio::test]
    async fn big_block_is_split_into_continuations() {
        let long = vec![b'a'; 40_000];
        let hb = block(&[(b":authority", b"/tmp/x.sock"), (b"x-long", &long)]);
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&frame_header(hb.len(), HEADERS, END_HEADERS, 1));
        input.extend_from_slice(&hb);
        let out = through(input).await;
        let mut rest = &out[PREFACE.len()..];
        let mut kinds = Vec::new();
        let mut joined = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            assert!(len <= MAX_FRAME);
            kinds.push((rest[3], rest[4]));
            joined.extend_from_slice(&rest[9..9 + len]);
            rest = &rest[9 + len..];
        }
        assert_eq!(
            kinds,
            [(HEADERS, 0), (CONTINUATION, 0), (CONTINUATION, END_HEADERS)]
        );
        assert_eq!(
            joined,
            block(&[(b":authority", LOCAL_AUTHORITY), (b"x-long", &long)])
        );
    }
}
