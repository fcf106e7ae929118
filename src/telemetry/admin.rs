//! The admin HTTP listener.
//!
//! Routes (status 200 when the answer is yes, 503 when no; the body says why):
//! - `GET /metrics`: Prometheus text exposition of [`Metrics`].
//! - `GET /live`: no pipeline task dead or stuck ([`Health::live`]). Failing it means
//!   "restart me".
//! - `GET /ready`: sources bound, not draining, every sink queue below its high-water mark
//!   ([`Health::ready`]). Failing it means "send me no new traffic", not "restart me".

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::health::Health;
use super::metrics::Metrics;

/// Serves admin requests on `listener` until the task is aborted. It keeps answering during
/// a drain, so probes see `/ready` fail and `/live` pass instead of a refused connection.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `200 <what>` or `503 not <what>: <why>`.
fn probe(what: &str, outcome: Result<(), String>) -> (StatusCode, &'static str, String) {
    match outcome {
        Ok(()) => (StatusCode::OK, "text/plain", format!("{what}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("not {what}: {why}\n"),
        ),
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET, "/live") => probe("live", health.live()),
        (&Method::GET, "/ready") => probe("ready", health.ready()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}
