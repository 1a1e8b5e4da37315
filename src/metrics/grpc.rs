//! A tower layer for the tonic server that counts and times every CSI call.
//!
//! The status code is read where gRPC puts it: in the response headers for a
//! "trailers-only" answer (how tonic sends most unary errors: HTTP 200, no body,
//! `grpc-status` in the headers), otherwise in the trailers after the body. The call
//! is recorded when the code is known, so the duration includes sending the body.

use super::labels::{grpc_code_name, grpc_method};
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

#[derive(Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let call = PendingCall {
            method: grpc_method(req.uri().path()).to_string(),
            start: Instant::now(),
        };
        // The clone is the one that was not polled ready: keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            match inner.call(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let pending = match parts.headers.get("grpc-status") {
                        Some(code) => {
                            call.finish(&grpc_code_name(code.as_bytes()));
                            None
                        }
                        None => Some(call),
                    };
                    Ok(Response::from_parts(
                        parts,
                        MetricsBody {
                            inner: body,
                            pending,
                        },
                    ))
                }
                Err(e) => {
                    // No gRPC answer at all; tonic's router does not fail, but a layer below could.
                    call.finish("Internal");
                    Err(e)
                }
            }
        })
    }
}

struct PendingCall {
    method: String,
    start: Instant,
}

impl PendingCall {
    fn finish(self, code: &str) {
        super::record_grpc(&self.method, code, self.start.elapsed());
    }
}

/// The response body, watched for the trailers that carry `grpc-status`.
pub struct MetricsBody<B> {
    inner: B,
    /// Still to be recorded: the code was not in the headers.
    pending: Option<PendingCall>,
}

impl<B> MetricsBody<B> {
    fn finish_from(&mut self, trailers: Option<&HeaderMap>) {
        if let Some(call) = self.pending.take() {
            let code = trailers
                .and_then(|t| t.get("grpc-status"))
                .map(|v| grpc_code_name(v.as_bytes()))
                // A stream that ends without a status is a broken answer for the client.
                .unwrap_or_else(|| "Unknown".into());
            call.finish(&code);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for MetricsBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish_from(Some(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.pending.take() {
                    call.finish("Internal");
                }
            }
            Poll::Ready(None) => this.finish_from(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MetricsBody<B> {
    fn drop(&mut self) {
        // Dropped before the status went out: the client went away (or cancelled).
        if let Some(call) = self.pending.take() {
            call.finish("Cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn count(method: &str, code: &str) -> u64 {
        super::super::global()
            .grpc_requests
            .with_label_values(&[method, code])
            .get()
    }

    async fn answer(
        resp: Response<http_body_util::Full<Bytes>>,
        trailers: Option<HeaderMap>,
        method: &str,
    ) {
        let svc = tower::service_fn(move |_req: Request<()>| {
            let mut resp = resp.clone();
            let trailers = trailers.clone();
            async move {
                let body = std::mem::take(resp.body_mut());
                let body = match trailers {
                    Some(t) => body
                        .with_trailers(async move { Some(Ok(t)) })
                        .boxed_unsync(),
                    None => body.boxed_unsync(),
                };
                Ok::<_, std::convert::Infallible>(resp.map(|_| body))
            }
        });
        let mut svc = GrpcMetricsLayer.layer(svc);
        let req = Request::builder()
            .uri(format!("/csi.v1.Test/{method}"))
            .body(())
            .unwrap();
        let resp = svc.call(req).await.unwrap();
        let _ = resp.into_body().collect().await.unwrap();
    }

    #[tokio::test]
    async fn code_from_headers_of_a_trailers_only_answer() {
        let resp = Response::builder()
            .header("grpc-status", "3")
            .body(http_body_util::Full::default())
            .unwrap();
        answer(resp, None, "HeadersOnly").await;
        assert_eq!(count("HeadersOnly", "InvalidArgument"), 1);
    }

    #[tokio::test]
    async fn code_from_trailers() {
        let resp = Response::builder()
            .body(http_body_util::Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        answer(resp.clone(), Some(t), "WithTrailers").await;
        assert_eq!(count("WithTrailers", "Ok"), 1);
        answer(resp, None, "NoStatus").await;
        assert_eq!(count("NoStatus", "Unknown"), 1);
    }
}
