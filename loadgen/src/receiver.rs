//! Stand-in backends for the exporters, inside the loadgen process: they read every request
//! whole and answer at once with success, so what is measured is Outrigger's side (encoding,
//! compression, HTTP or gRPC) and nothing waits on a real store. Their CPU is loadgen's, not
//! Outrigger's.
//!
//! | `--sink` | listens for | answers |
//! |---|---|---|
//! | `loki` | HTTP/1.1 `POST /loki/api/v1/push` | 204 |
//! | `elasticsearch` | HTTP/1.1 `POST /_bulk?…` | 200 `{"errors":false,"items":[]}` (with `errors` false the exporter counts the whole request stored without reading items) |
//! | `otlp-http` | HTTP/1.1 `POST /v1/logs` | 200, an empty `ExportLogsServiceResponse` (zero bytes of protobuf) |
//! | `otlp` | gRPC over HTTP/2 (any path; the message is not decoded) | OK, an empty response |
//!
//! The gRPC stand-in is plain HTTP/2 rather than a tonic service: decoding every request into
//! message structs cost it several milliseconds a request, and with both on two cores that,
//! not Outrigger, set the pace. The integration tests decode what Outrigger sends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};

/// Where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Blackhole,
    Loki,
    Elasticsearch,
    Otlp,
    OtlpHttp,
}

impl Kind {
    pub const NAMES: [&'static str; 5] =
        ["blackhole", "loki", "elasticsearch", "otlp", "otlp-http"];

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "blackhole" => Kind::Blackhole,
            "loki" => Kind::Loki,
            "elasticsearch" => Kind::Elasticsearch,
            "otlp" => Kind::Otlp,
            "otlp-http" => Kind::OtlpHttp,
            _ => return None,
        })
    }

    /// The sink's name in the generated config, and so its `component` label.
    pub fn sink_name(self) -> &'static str {
        match self {
            Kind::Blackhole => "null",
            Kind::Loki => "loki",
            Kind::Elasticsearch => "elasticsearch",
            Kind::Otlp => "otlp",
            Kind::OtlpHttp => "otlp_http",
        }
    }

    /// The sink's table body in the generated config (after `[sinks.NAME]`), for a receiver
    /// at `addr`. Delivery keys are left at the exporter's defaults (`max_in_flight` too).
    pub fn sink_config(self, addr: Option<SocketAddr>) -> String {
        let endpoint = |a: Option<SocketAddr>| {
            format!(
                "endpoint = \"http://{}\"\n",
                a.expect("an exporter sink needs its receiver")
            )
        };
        match self {
            Kind::Blackhole => "type = \"blackhole\"\n".into(),
            Kind::Loki => format!("type = \"loki\"\n{}", endpoint(addr)),
            Kind::Elasticsearch => format!("type = \"elasticsearch\"\n{}", endpoint(addr)),
            Kind::Otlp => format!("type = \"otlp\"\n{}", endpoint(addr)),
            Kind::OtlpHttp => format!(
                "type = \"otlp\"\nprotocol = \"http/protobuf\"\n{}",
                endpoint(addr)
            ),
        }
    }
}

/// What a receiver has taken so far.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    /// Request body bytes as they came (compressed when the sink compresses).
    pub bytes: AtomicU64,
}

/// A running receiver; stops (its runtime and every connection) when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Receiver {
    /// Starts the receiver for `kind` on a free 127.0.0.1 port; `None` for the blackhole.
    pub fn start(kind: Kind) -> anyhow::Result<Option<Receiver>> {
        if kind == Kind::Blackhole {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("receiver")
            .enable_all()
            .build()
            .context("receiver runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("receiver listener")?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        runtime.spawn(serve(listener, kind, counts.clone()));
        Ok(Some(Receiver {
            addr,
            counts,
            runtime: Some(runtime),
        }))
    }
}

/// Accepts connections until the runtime stops: HTTP/2 for gRPC, HTTP/1.1 otherwise.
async fn serve(listener: tokio::net::TcpListener, kind: Kind, counts: Arc<Counts>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("loadgen: receiver accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let counts = counts.clone();
        tokio::spawn(async move {
            if kind == Kind::Otlp {
                let service =
                    hyper::service::service_fn(move |req| grpc_answer(req, counts.clone()));
                // Windows that grow with the measured bandwidth-delay product, as gRPC-Go
                // servers (the OpenTelemetry Collector) have; h2's fixed 64 KiB would hold
                // each request back to a window update per 64 KiB.
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .adaptive_window(true)
                        .serve_connection(io, service)
                        .await;
            } else {
                let service =
                    hyper::service::service_fn(move |req| answer(req, kind, counts.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
    }
}

/// Reads the request whole, then answers as the backend would on success.
async fn answer(
    req: Request<hyper::body::Incoming>,
    kind: Kind,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let (status, content_type, body): (StatusCode, &str, &'static [u8]) = match kind {
        Kind::Loki => (StatusCode::NO_CONTENT, "text/plain", b""),
        Kind::Elasticsearch => (
            StatusCode::OK,
            "application/json",
            b"{\"errors\":false,\"items\":[]}",
        ),
        // An empty protobuf message is zero bytes.
        _ => (StatusCode::OK, "application/x-protobuf", b""),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = status;
    if !body.is_empty() || kind != Kind::Loki {
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
    }
    Ok(resp)
}

/// Reads a gRPC call's body whole and answers with an empty message and `grpc-status: 0`
/// in the trailers.
async fn grpc_answer(
    req: Request<hyper::body::Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<GrpcBody>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    counts.requests.fetch_add(1, Ordering::Relaxed);
    // Each message has a five-byte prefix (compressed flag and length); one per call here.
    counts
        .bytes
        .fetch_add(body.len().saturating_sub(5) as u64, Ordering::Relaxed);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    // An empty ExportLogsServiceResponse: not compressed, zero bytes long.
    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
        .with_trailers(std::future::ready(Some(Ok(trailers))));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

type GrpcBody = http_body_util::combinators::WithTrailers<
    Full<Bytes>,
    std::future::Ready<Option<Result<hyper::HeaderMap, std::convert::Infallible>>>,
>;
