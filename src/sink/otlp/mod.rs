//! The `otlp` sink: events as OpenTelemetry log records, sent over OTLP/gRPC (the default),
//! OTLP/HTTP with protobuf, or OTLP/HTTP with JSON.
//!
//! Spec: <https://opentelemetry.io/docs/specs/otlp/> and the messages of
//! `opentelemetry-proto` (`logs/v1/logs.proto`, `collector/logs/v1/logs_service.proto`),
//! condensed in the shared reference `otlp-logs.md`. The request is written as protobuf
//! directly from the records ([`encode`], [`wire`]; a JSON line's fields from the members
//! enrichment found, [`attributes`]); `opentelemetry-proto`'s generated types decode
//! responses and are what the tests check requests against. gRPC goes through tonic with a
//! codec that sends the encoded bytes as they are.
//!
//! What comes in: the events of one request ([`Ref`]s). What goes out: one
//! `ExportLogsServiceRequest` and, from the response, a [`Verdict`]. gRPC calls the unary
//! `/opentelemetry.proto.collector.logs.v1.LogsService/Export` on the endpoint's host (a path
//! in the endpoint is ignored); HTTP POSTs to the endpoint with `path` appended. Batching,
//! retries and dead letters belong to the shared loop (`export.rs`).
//!
//! # Mapping
//!
//! One `ResourceLogs` per distinct resource, in order of first appearance, each with one
//! `ScopeLogs` (scope `outrigger`, the crate version).
//!
//! | OTLP | from |
//! |---|---|
//! | resource `container.id` | Docker's `container_id`, else the id in a Kubernetes tag |
//! | resource `container.name` | Docker's `container_name` (without the `/`) |
//! | resource `k8s.pod.name`, `k8s.namespace.name`, `k8s.container.name` | the Kubernetes tag |
//! | resource, more attributes | `[enrich.resource]` (static node and cluster names) |
//! | `time_unix_nano` | the event time (a JSON line's own time when enrichment found one), one nanosecond past the previous record of its stream when the two tie ([`super::order`]) |
//! | `observed_time_unix_nano` | when the source read the event from its client |
//! | `severity_number` | the level enrichment found; 0 when none |
//! | `severity_text` | the level as written, else the OTel short name (`WARN`), else empty |
//! | `body` | a parsed JSON line's message field (`msg`, `message`, ... as enrichment found it; `body = "message"`, the default), else the log line as a string; with `body = "string"` always the line, with `body = "map"` a parsed JSON line is a kvlist. A record without a line (an application's own fields, from a fluent-logger library): its message field, with `"message"` and `"string"`; the whole record as a kvlist with `"map"` |
//! | attribute `log.iostream` | Docker's `source`, or a `stream` field holding `stdout`/`stderr` |
//! | attribute `fluent.tag` | the forward tag |
//! | attributes | a parsed JSON line's top-level fields but the one that became the body (`body = "message"` or `"string"`; under the nest key as one kvlist when `merge = "nested"`), then the record's other fields (Docker labels and env, Fluent Bit's keys), then per-connection fields (`source_address_key`) |
//! | attribute `log.record.original` | the line, when `keep_line` and the body is not the line |
//! | attribute `outrigger.incomplete` | `true` for a split line or stack trace that never finished |
//! | `trace_id`, `span_id`, `flags` | the trace context enrichment found: 16 and 8 raw bytes, trace flags in the low 8 bits; all-zero IDs are left out, and a span ID only goes with a trace ID |
//!
//! Values keep their types: JSON and MessagePack integers are `int_value`, floats
//! `double_value`, booleans `bool_value`, nested objects `kvlist_value`, arrays
//! `array_value`, null an empty value. Integers above `i64::MAX` and non-finite floats become
//! strings (no OTLP type holds them), `bin` values bytes, EventTime values RFC 3339 strings.
//! Attribute keys are unique: the first of a repeated key wins, in the order above.
//! A record without a line (an application's own map) carries its fields as attributes,
//! but the one that became the body; without a message field it has no body (with
//! `body = "map"` the record is the body and no field is repeated as an attribute).
//!
//! # Responses
//!
//! | response | verdict |
//! |---|---|
//! | gRPC OK, HTTP 2xx | delivered; with `partial_success.rejected_log_records > 0`, accepted with that many rejected (never resent) |
//! | gRPC CANCELLED, DEADLINE_EXCEEDED | retry (`timeout`) |
//! | gRPC UNAVAILABLE | retry (`unavailable`), after the status's `RetryInfo` delay if any; also what tonic reports when it cannot connect |
//! | gRPC ABORTED, OUT_OF_RANGE, DATA_LOSS | retry (`server_error`) |
//! | gRPC RESOURCE_EXHAUSTED with `google.rpc.RetryInfo` in the details | retry (`throttled`) after `retry_delay` |
//! | gRPC UNKNOWN "Service was not ready" (tonic's own, no server involved) | retry (`connection`) |
//! | gRPC RESOURCE_EXHAUSTED without it, and every other code | refused (dead letter) |
//! | HTTP 429 | retry (`throttled`) after `Retry-After` (or, in a protobuf body, the status's `RetryInfo`) |
//! | HTTP 502, 503, 504 | retry (`server_error`), same |
//! | HTTP 413 | sent again in halves, down to single records (a single record still too large is refused) |
//! | any other HTTP status (500 included) | refused, with the `google.rpc.Status` message |
//! | no answer within `timeout_ms`, connection failure | retry |
//!
//! The gRPC channel connects lazily (on the first request) and reconnects by itself; a
//! backend that is down at start costs retries, not a failed start.

mod attributes;
mod encode;
mod settings;
mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut as _, Bytes};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message as _;
use serde::Deserialize;
use tonic::Code;
use tonic::codec::{Codec, CompressionEncoding, EncodeBuf};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};

use self::encode::{Encoder, unix_nanos};
pub use self::settings::{Body, Config, DEFAULTS, Protocol};
use super::client::snippet;
use super::client::{Client, Response};
use super::export::{Attempt, Deliver, Ref};
use super::jsonl::Shape;
use super::kind::HttpBuild;
use super::order::Gate;
use super::retry::{Verdict, retry_after};
use crate::event::Timestamp;
use crate::sink::settings::{Compression, HttpClient};
use crate::telemetry::logging::RateLimit;

/// Nesting beyond this becomes an empty value. The source's and the JSON parser's depth
/// limits normally stop such input earlier; this bounds the recursion whatever comes in.
const MAX_DEPTH: usize = 128;

/// The exporter.
#[derive(Debug)]
pub struct Exporter {
    transport: Transport,
    encoder: Encoder,
    /// The size of the last request, to size the next one's buffer.
    last_size: AtomicUsize,
    /// Backend warnings (a partial success that rejected nothing but says something).
    warn: RateLimit,
}

// Built once per sink and never moved on a hot path: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Transport {
    Grpc(Grpc),
    Http {
        client: Client,
        path: String,
        json: bool,
    },
}

/// The gRPC side: a lazily connecting channel and what every call carries.
#[derive(Debug)]
struct Grpc {
    /// Cloned per call (a clone shares the channel and its connection).
    client: tonic::client::Grpc<Channel>,
    /// Configured headers and authentication, as request metadata.
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    timeout: Duration,
}

// === impl Exporter ===

impl Exporter {
    /// Builds the exporter. For gRPC the channel is created now but connects on first use;
    /// TLS material (`tls.ca_file`, client certificate) is read now, so a bad file fails the
    /// start.
    ///
    /// # Errors
    /// An invalid endpoint, header or TLS file.
    ///
    /// # Panics
    /// For gRPC, when called outside a Tokio runtime (the channel spawns its worker).
    pub fn try_new(
        client: &HttpClient,
        config: &Config,
        shape: &Shape,
    ) -> anyhow::Result<Exporter> {
        let transport = match config.protocol {
            Protocol::Grpc => Transport::Grpc(Grpc::try_new(client)?),
            Protocol::HttpProtobuf | Protocol::HttpJson => Transport::Http {
                client: Client::try_new(client)?,
                path: config.path.clone(),
                json: config.protocol == Protocol::HttpJson,
            },
        };
        Ok(Exporter {
            transport,
            encoder: Encoder {
                body: config.body,
                shape: shape.clone(),
            },
            warn: RateLimit::new(1),
            last_size: AtomicUsize::new(0),
        })
    }

    /// Sends `events` as one export request and says what became of them.
    pub async fn attempt(&self, events: &[Ref<'_>], gate: &Gate) -> Verdict {
        let request = self.request(events);
        match &self.transport {
            Transport::Grpc(g) => {
                gate.open().await;
                match g.export(request).await {
                    Ok(resp) => self.accepted(resp.partial_success),
                    Err(GrpcError::Status(status)) => classify_status(&status),
                    Err(GrpcError::Timeout) => Verdict::Retry {
                        reason: "timeout",
                        after: None,
                    },
                }
            }
            Transport::Http { client, path, json } => {
                let (body, content_type) = if *json {
                    // The rare JSON protocol goes through the message types: one mapping,
                    // whatever the encoding.
                    let decoded = ExportLogsServiceRequest::decode(&request[..])
                        .map_err(|e| e.to_string())
                        .and_then(|r| simd_json::to_vec(&r).map_err(|e| e.to_string()));
                    match decoded {
                        Ok(b) => (b, "application/json"),
                        Err(e) => {
                            return Verdict::Rejected {
                                reason: format!("OTLP/JSON encoding failed: {e}"),
                            };
                        }
                    }
                } else {
                    (request, "application/x-protobuf")
                };
                let headers = [(CONTENT_TYPE, HeaderValue::from_static(content_type))];
                gate.open().await;
                match client.post(path, &headers, body, true).await {
                    Ok(resp) if resp.status.is_success() => {
                        self.accepted(partial_of(&resp.body, *json))
                    }
                    Ok(resp) => classify_http(&resp, *json),
                    Err(e) => e.verdict(),
                }
            }
        }
    }

    /// The protobuf `ExportLogsServiceRequest` [`Exporter::attempt`] sends for `events`
    /// (observed now), before compression. Public for `benches/encode.rs`.
    pub fn request(&self, events: &[Ref<'_>]) -> Vec<u8> {
        let hint = self.last_size.load(Ordering::Relaxed);
        let request = self
            .encoder
            .request(events, unix_nanos(Timestamp::now()), hint + hint / 8);
        self.last_size.store(request.len(), Ordering::Relaxed);
        request
    }

    /// A successful answer, with its partial success if any.
    fn accepted(&self, partial: Option<ExportLogsPartialSuccess>) -> Verdict {
        let p = partial.unwrap_or_default();
        if p.rejected_log_records <= 0
            && !p.error_message.is_empty()
            && let Some(suppressed) = self.warn.allow()
        {
            tracing::warn!(warning = %p.error_message, suppressed, "OTLP backend accepted every record with a warning");
        }
        partial_success(&p)
    }
}

impl Deliver for Exporter {
    fn attempt<'a>(&'a self, events: &'a [Ref<'a>], gate: &'a Gate) -> Attempt<'a> {
        Box::pin(Exporter::attempt(self, events, gate))
    }
}

impl HttpBuild for Config {
    fn exporter(&self, client: &HttpClient, shape: &Shape) -> anyhow::Result<Box<dyn Deliver>> {
        Ok(Box::new(Exporter::try_new(client, self, shape)?))
    }
}

/// Accepted with some rejected when the backend says so; otherwise delivered.
fn partial_success(p: &ExportLogsPartialSuccess) -> Verdict {
    if p.rejected_log_records > 0 {
        Verdict::Accepted {
            rejected: p.rejected_log_records as u64,
            reason: if p.error_message.is_empty() {
                "partial success".into()
            } else {
                format!("partial success: {}", p.error_message)
            },
        }
    } else {
        Verdict::Delivered
    }
}

// === impl Grpc ===

/// Why a gRPC call brought no response.
#[derive(Debug)]
enum GrpcError {
    Status(tonic::Status),
    Timeout,
}

impl Grpc {
    fn try_new(cfg: &HttpClient) -> anyhow::Result<Grpc> {
        use anyhow::Context as _;
        let uri: hyper::Uri = cfg
            .endpoint
            .parse()
            .with_context(|| format!("endpoint `{}`", cfg.endpoint))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => anyhow::bail!(
                "endpoint `{}` must start with http:// or https://",
                cfg.endpoint
            ),
        };
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let mut endpoint = Endpoint::from(uri)
            .user_agent(concat!("outrigger/", env!("CARGO_PKG_VERSION")))
            .context("user agent")?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        if https {
            endpoint = endpoint
                .tls_config(grpc_tls(cfg)?)
                .context("TLS settings")?;
        }
        let mut client = tonic::client::Grpc::new(endpoint.connect_lazy())
            .accept_compressed(CompressionEncoding::Gzip);
        if cfg.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        let mut metadata = Vec::new();
        for (k, v) in &cfg.headers {
            let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .with_context(|| format!("header name `{k}` (gRPC metadata)"))?;
            let value: AsciiMetadataValue =
                v.parse().with_context(|| format!("header `{k}` value"))?;
            metadata.push((key, value));
        }
        if let Some(auth) = &cfg.auth {
            let mut value: AsciiMetadataValue = super::client::authorization(auth)
                .parse()
                .context("auth header value")?;
            value.set_sensitive(true);
            metadata.push((AsciiMetadataKey::from_static("authorization"), value));
        }
        Ok(Grpc {
            client,
            metadata,
            timeout,
        })
    }

    async fn export(&self, request: Vec<u8>) -> Result<ExportLogsServiceResponse, GrpcError> {
        let mut req = tonic::Request::new(Bytes::from(request));
        // Tells the server our deadline (`grpc-timeout`); the channel enforces it too.
        req.set_timeout(self.timeout);
        for (k, v) in &self.metadata {
            req.metadata_mut().insert(k.clone(), v.clone());
        }
        let mut client = self.client.clone();
        let call = async move {
            client.ready().await.map_err(|e| {
                // What tonic's generated client says here; `classify_status` knows it.
                tonic::Status::unknown(format!("Service was not ready: {e}"))
            })?;
            let path = hyper::http::uri::PathAndQuery::from_static(EXPORT_PATH);
            client.unary(req, path, Encoded).await
        };
        // The channel's own timeout covers the call once it is queued; this one also covers
        // waiting for a connection that never comes.
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(GrpcError::Status(status)),
            Err(_) => Err(GrpcError::Timeout),
        }
    }
}

/// The unary method every export calls.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// A gRPC codec that sends a request already encoded (by [`encode`]) and decodes the
/// response with prost, as the generated client would.
#[derive(Debug, Clone, Copy)]
struct Encoded;

impl Codec for Encoded {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = Encoded;
    type Decoder = tonic_prost::ProstDecoder<ExportLogsServiceResponse>;

    fn encoder(&mut self) -> Encoded {
        Encoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(Default::default())
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// TLS for the gRPC channel from the shared `tls` settings: the given CA instead of the
/// system's, and a client certificate for mutual TLS. tonic negotiates `h2` by ALPN.
fn grpc_tls(cfg: &HttpClient) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use anyhow::Context as _;
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut tls = ClientTlsConfig::new();
    let settings = cfg.tls.clone().unwrap_or_default();
    match &settings.ca_file {
        Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => {
            // tonic's own native-roots feature is off; the HTTP client loads the same store.
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            tls = tls.trust_anchors(roots.roots);
        }
    }
    if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

// === classification ===

/// A gRPC status, by the OTLP spec's table (see the module docs).
fn classify_status(status: &tonic::Status) -> Verdict {
    let retry = |reason| Verdict::Retry {
        reason,
        after: retry_delay(status.details()),
    };
    match status.code() {
        Code::Cancelled | Code::DeadlineExceeded => retry("timeout"),
        Code::Unavailable => retry("unavailable"),
        Code::Aborted | Code::OutOfRange | Code::DataLoss => retry("server_error"),
        // Throttling only when the server says when to come back; otherwise the request is
        // too large or the server is out of something a retry will not bring back.
        Code::ResourceExhausted => match retry_delay(status.details()) {
            Some(after) => Verdict::Retry {
                reason: "throttled",
                after: Some(after),
            },
            None => rejected_status(status),
        },
        // The generated client's own error when the channel's worker is gone: no server
        // said anything.
        Code::Unknown if status.message().starts_with("Service was not ready") => {
            retry("connection")
        }
        _ => rejected_status(status),
    }
}

fn rejected_status(status: &tonic::Status) -> Verdict {
    let message: String = status.message().chars().take(200).collect();
    Verdict::Rejected {
        reason: format!("gRPC {:?}: {message}", status.code()),
    }
}

/// An HTTP error answer: 429, 502, 503 and 504 are retried, nothing else.
fn classify_http(resp: &Response, json: bool) -> Verdict {
    let status = resp.status.as_u16();
    let after = || {
        resp.headers
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after)
            .or_else(|| (!json).then(|| retry_delay(&resp.body)).flatten())
    };
    match status {
        429 => Verdict::Retry {
            reason: "throttled",
            after: after(),
        },
        502..=504 => Verdict::Retry {
            reason: "server_error",
            after: after(),
        },
        413 => Verdict::TooLarge {
            reason: format!("HTTP 413: {}", status_message(&resp.body, json)),
        },
        _ => Verdict::Rejected {
            reason: format!("HTTP {status}: {}", status_message(&resp.body, json)),
        },
    }
}

/// The partial success of a 2xx body; `None` when the body is empty or not a response.
fn partial_of(body: &[u8], json: bool) -> Option<ExportLogsPartialSuccess> {
    if body.is_empty() {
        return None;
    }
    if !json {
        return ExportLogsServiceResponse::decode(body)
            .ok()?
            .partial_success;
    }
    // Parsed by hand rather than with the generated serde impl: the JSON mapping writes
    // int64 as a string, which that impl does not read for `rejectedLogRecords`.
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct JsonResponse {
        partial_success: Option<JsonPartial>,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct JsonPartial {
        rejected_log_records: Option<Int64>,
        error_message: String,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Number(i64),
        Text(String),
    }
    let mut copy = body.to_vec();
    let r: JsonResponse = simd_json::from_slice(&mut copy).ok()?;
    let p = r.partial_success?;
    let rejected = match p.rejected_log_records {
        Some(Int64::Number(n)) => n,
        Some(Int64::Text(s)) => s.trim().parse().unwrap_or(0),
        None => 0,
    };
    Some(ExportLogsPartialSuccess {
        rejected_log_records: rejected,
        error_message: p.error_message,
    })
}

/// The message of an error body (a `google.rpc.Status`), or the start of the body.
fn status_message(body: &[u8], json: bool) -> String {
    let message = if json {
        #[derive(Deserialize)]
        struct JsonStatus {
            message: String,
        }
        let mut copy = body.to_vec();
        simd_json::from_slice::<JsonStatus>(&mut copy)
            .ok()
            .map(|s| s.message)
    } else {
        RpcStatus::decode(body).ok().map(|s| s.message)
    };
    match message {
        Some(m) if !m.is_empty() => m.chars().take(200).collect(),
        _ => snippet(body),
    }
}

/// `google.rpc.Status`, as gRPC carries it in `grpc-status-details-bin` and OTLP/HTTP in
/// error bodies.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// The `RetryInfo.retry_delay` inside an encoded `google.rpc.Status`, if any.
fn retry_delay(status_details: &[u8]) -> Option<Duration> {
    let status = RpcStatus::decode(status_details).ok()?;
    let info = status
        .details
        .iter()
        .find(|d| d.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let d = RetryInfo::decode(&info.value[..]).ok()?.retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).unwrap_or(0).min(999_999_999);
    Some(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Batch, Event, K8sTag, Meta, Span};
    use bytes::Bytes;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};

    const T: Timestamp = Timestamp {
        secs: 1_700_000_000,
        nanos: 123_456_789,
    };

    /// A msgpack map of string pairs.
    fn record(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, fields.len() as u32).unwrap();
        for (k, v) in fields {
            rmp::encode::write_str(&mut out, k).unwrap();
            rmp::encode::write_str(&mut out, v).unwrap();
        }
        out
    }

    /// The span of string value `v` in `rec`.
    fn span_of(rec: &[u8], v: &str) -> Span {
        let at = rec
            .windows(v.len())
            .position(|w| w == v.as_bytes())
            .unwrap();
        Span::new(at..at + v.len())
    }

    fn encoder(body: Body) -> Encoder {
        Encoder {
            body,
            shape: Shape::default(),
        }
    }

    fn encode(enc: &Encoder, batch: &Batch) -> ExportLogsServiceRequest {
        let refs: Vec<Ref<'_>> = batch
            .events
            .iter()
            .map(|event| Ref::new(batch, event))
            .collect();
        let bytes = enc.request(&refs, 42, 0);
        let req = ExportLogsServiceRequest::decode(&bytes[..]).expect("a valid request");
        // Byte for byte what prost writes for the same message: fields in number order,
        // lengths in their shortest form, defaults left out.
        assert_eq!(req.encode_to_vec(), bytes, "canonical encoding");
        req
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    const LINE: &str = r#"{"level":"warn","msg":"slow","ms":1200,"ok":true,"f":1.5,"n":null,"tags":["a",2],"ctx":{"user":"u1"}}"#;

    /// A Docker record with a JSON line, enriched the way the pipeline does it.
    fn docker_json(batch: &mut Batch, container: &str) {
        let tag = batch.tag_index(b"docker.api", || Bytes::from_static(b"docker.api"));
        let id = container.repeat(64 / container.len());
        let rec = record(&[
            ("container_id", &id),
            ("container_name", &format!("/{container}")),
            ("source", "stderr"),
            ("log", LINE),
            ("com.example.team", "payments"),
        ]);
        let mut e = Event::new(T, tag, Bytes::from(rec.clone()));
        e.meta = Meta {
            line: Some(span_of(&rec, LINE)),
            json: true,
            container_id: Some(span_of(&rec, &id)),
            container_name: Some(span_of(&rec, container)),
            stream: Some(span_of(&rec, "stderr")),
            severity: 13,
            severity_text: Some(span_of(&rec, "warn")),
            trace_id: Some([0x4b; 16]),
            span_id: Some([0x07; 8]),
            trace_flags: Some(1),
            ..Meta::default()
        };
        batch.events.push(e);
        // The members of its line, as enrichment leaves them.
        crate::pipeline::json::index(batch);
    }

    #[test]
    fn docker_json_line_maps_to_a_log_record() {
        let mut b = Batch {
            resource: vec![(
                Bytes::from_static(b"k8s.node.name"),
                Bytes::from_static(b"n1"),
            )]
            .into(),
            ..Batch::default()
        };
        docker_json(&mut b, "api");
        let req = encode(&encoder(Body::String), &b);
        assert_eq!(req.resource_logs.len(), 1);
        let rl = &req.resource_logs[0];
        let res = &rl.resource.as_ref().unwrap().attributes;
        let keys: Vec<&str> = res.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            ["container.id", "container.name", "k8s.node.name"],
            "log.iostream is a record attribute, not a resource one"
        );
        assert_eq!(attr(res, "container.name"), Some(&s("api")));
        let scope = rl.scope_logs[0].scope.as_ref().unwrap();
        assert_eq!(scope.name, "outrigger");
        assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(r.observed_time_unix_nano, 42);
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.severity_text, "warn");
        assert_eq!(r.body.as_ref().unwrap().value, Some(s(LINE)));
        assert_eq!(r.trace_id, vec![0x4b; 16]);
        assert_eq!(r.span_id, vec![0x07; 8]);
        assert_eq!(r.flags, 1);
        let a = &r.attributes;
        let keys: Vec<&str> = a.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "log.iostream",
                "fluent.tag",
                "level",
                "msg",
                "ms",
                "ok",
                "f",
                "n",
                "tags",
                "ctx",
                "com.example.team"
            ]
        );
        assert_eq!(attr(a, "log.iostream"), Some(&s("stderr")));
        assert_eq!(attr(a, "fluent.tag"), Some(&s("docker.api")));
        assert_eq!(attr(a, "ms"), Some(&Value::IntValue(1200)));
        assert_eq!(attr(a, "ok"), Some(&Value::BoolValue(true)));
        assert_eq!(attr(a, "f"), Some(&Value::DoubleValue(1.5)));
        assert_eq!(attr(a, "n"), None, "null is an empty value");
        assert!(a.iter().any(|kv| kv.key == "n"));
        let Some(Value::ArrayValue(tags)) = attr(a, "tags") else {
            panic!("tags is an array")
        };
        assert_eq!(tags.values[1].value, Some(Value::IntValue(2)));
        let Some(Value::KvlistValue(ctx)) = attr(a, "ctx") else {
            panic!("ctx is a kvlist")
        };
        assert_eq!(ctx.values[0].key, "user");
        assert_eq!(attr(a, "com.example.team"), Some(&s("payments")));
    }

    #[test]
    fn map_body_moves_json_fields_into_the_body() {
        let mut b = Batch::default();
        docker_json(&mut b, "api");
        let enc = Encoder {
            body: Body::Map,
            shape: Shape {
                keep_line: true,
                ..Shape::default()
            },
        };
        let req = encode(&enc, &b);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        let Some(Value::KvlistValue(body)) = &r.body.as_ref().unwrap().value else {
            panic!("kvlist body")
        };
        assert_eq!(body.values.len(), 8);
        assert_eq!(attr(&body.values, "msg"), Some(&s("slow")));
        assert_eq!(attr(&r.attributes, "msg"), None);
        assert_eq!(attr(&r.attributes, "log.record.original"), Some(&s(LINE)));
    }

    /// One Docker record whose JSON line is `line`, with the message enrichment found at
    /// the literal `message` (quotes included) when given.
    fn docker_line(batch: &mut Batch, line: &str, message: Option<&str>) {
        let tag = batch.tag_index(b"docker.api", || Bytes::from_static(b"docker.api"));
        let rec = record(&[("log", line), ("source", "stdout")]);
        let mut e = Event::new(T, tag, Bytes::from(rec.clone()));
        let at = span_of(&rec, line);
        e.meta = Meta {
            line: Some(at),
            json: true,
            message: message.map(|m| {
                let start = at.start as usize + line.find(m).expect("message in line");
                Span::new(start..start + m.len())
            }),
            ..Meta::default()
        };
        batch.events.push(e);
        crate::pipeline::json::index(batch);
    }

    #[test]
    fn message_body_takes_the_message_member_and_leaves_the_rest_as_attributes() {
        let mut b = Batch::default();
        docker_line(
            &mut b,
            r#"{"level":"warn", "msg" : "disk \"full\"","ms":3}"#,
            Some(r#""disk \"full\"""#),
        );
        // A message nested in an object is not a member of the line: the line is the body.
        let nested = r#"{"ctx":{"msg":"inner"},"msg2":"x"}"#;
        docker_line(&mut b, nested, Some(r#""inner""#));
        // No message found: the line is the body.
        docker_line(&mut b, r#"{"a":1}"#, None);
        let enc = Encoder {
            body: Body::Message,
            shape: Shape {
                keep_line: true,
                ..Shape::default()
            },
        };
        let req = encode(&enc, &b);
        let r = &req.resource_logs[0].scope_logs[0].log_records;
        let body = |i: usize| r[i].body.as_ref().unwrap().value.clone();
        assert_eq!(body(0), Some(s("disk \"full\"")));
        assert_eq!(
            attr(&r[0].attributes, "msg"),
            None,
            "the body is not repeated"
        );
        assert_eq!(attr(&r[0].attributes, "ms"), Some(&Value::IntValue(3)));
        assert_eq!(attr(&r[0].attributes, "level"), Some(&s("warn")));
        assert!(attr(&r[0].attributes, "log.record.original").is_some());
        assert_eq!(body(1), Some(s(nested)));
        assert!(matches!(
            attr(&r[1].attributes, "ctx"),
            Some(Value::KvlistValue(_))
        ));
        assert_eq!(attr(&r[1].attributes, "log.record.original"), None);
        assert_eq!(body(2), Some(s(r#"{"a":1}"#)));
        assert_eq!(attr(&r[2].attributes, "a"), Some(&Value::IntValue(1)));
    }

    #[test]
    fn json_members_keep_their_types_escapes_and_large_numbers() {
        // Read from the members enrichment found: each scalar from its text, escapes and
        // what an i64 cannot hold through a parse of the value alone.
        let mut b = Batch::default();
        let line = r#"{"k\u00e9y":"a\nb","q\"k":1,"caf\u00e9":"x","r":1,"\u0072":2,"i":-5,"u":18446744073709551615,"big":12345678901234567890123,"f":2.5,"e":1e3,"t":true,"z":null,"s":"plain","a":[1,"x",{"n":false}],"dup":1,"dup":2}"#;
        docker_line(&mut b, line, None);
        let req = encode(&encoder(Body::String), &b);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        let a = |k: &str| attr(&r.attributes, k).cloned();
        assert_eq!(a("k\u{e9}y"), Some(s("a\nb")));
        // Escaped keys with plain values: the keys unescaped, a repeat of one left out.
        assert_eq!(a("q\"k"), Some(Value::IntValue(1)));
        assert_eq!(a("caf\u{e9}"), Some(s("x")));
        assert_eq!(a("r"), Some(Value::IntValue(1)));
        assert_eq!(r.attributes.iter().filter(|kv| kv.key == "r").count(), 1);
        assert_eq!(a("i"), Some(Value::IntValue(-5)));
        assert_eq!(
            a("u"),
            Some(s("18446744073709551615")),
            "beyond int64: text"
        );
        assert_eq!(a("big"), Some(Value::DoubleValue(1.2345678901234568e22)));
        assert_eq!(a("f"), Some(Value::DoubleValue(2.5)));
        assert_eq!(a("e"), Some(Value::DoubleValue(1000.0)));
        assert_eq!(a("t"), Some(Value::BoolValue(true)));
        assert!(
            r.attributes
                .iter()
                .any(|kv| kv.key == "z" && kv.value.as_ref().unwrap().value.is_none())
        );
        assert_eq!(a("s"), Some(s("plain")));
        let Some(Value::ArrayValue(ArrayValue { values })) = a("a") else {
            panic!("an array");
        };
        assert_eq!(values.len(), 3);
        assert_eq!(values[1].value, Some(s("x")));
        assert!(matches!(values[2].value, Some(Value::KvlistValue(_))));
        assert_eq!(
            a("dup"),
            Some(Value::IntValue(1)),
            "the first of a repeated key"
        );
        assert_eq!(r.attributes.iter().filter(|kv| kv.key == "dup").count(), 1);
    }

    #[test]
    fn nested_merge_puts_json_fields_under_one_attribute() {
        let mut b = Batch::default();
        docker_json(&mut b, "api");
        let enc = Encoder {
            body: Body::String,
            shape: Shape {
                nest_key: Some(b"app".to_vec()),
                ..Shape::default()
            },
        };
        let req = encode(&enc, &b);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        let Some(Value::KvlistValue(app)) = attr(&r.attributes, "app") else {
            panic!("app is a kvlist")
        };
        assert_eq!(attr(&app.values, "ms"), Some(&Value::IntValue(1200)));
        assert_eq!(attr(&r.attributes, "ms"), None);
    }

    #[test]
    fn one_resource_logs_per_container_in_first_seen_order() {
        let mut b = Batch::default();
        docker_json(&mut b, "api");
        docker_json(&mut b, "web");
        docker_json(&mut b, "api");
        let req = encode(&encoder(Body::String), &b);
        let names: Vec<(&Value, usize)> = req
            .resource_logs
            .iter()
            .map(|rl| {
                (
                    attr(&rl.resource.as_ref().unwrap().attributes, "container.name").unwrap(),
                    rl.scope_logs[0].log_records.len(),
                )
            })
            .collect();
        assert_eq!(names, [(&s("api"), 2), (&s("web"), 1)]);
    }

    #[test]
    fn many_interleaved_resources_group_past_the_linear_search() {
        let names: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
        let mut b = Batch::default();
        for _ in 0..3 {
            for n in &names {
                docker_json(&mut b, n);
            }
        }
        let req = encode(&encoder(Body::String), &b);
        let got: Vec<(&Value, usize)> = req
            .resource_logs
            .iter()
            .map(|rl| {
                (
                    attr(&rl.resource.as_ref().unwrap().attributes, "container.name").unwrap(),
                    rl.scope_logs[0].log_records.len(),
                )
            })
            .collect();
        let want: Vec<Value> = names.iter().map(|n| s(n)).collect();
        let want: Vec<(&Value, usize)> = want.iter().map(|v| (v, 3)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn kubernetes_tag_and_plain_record_without_enrichment() {
        let mut b = Batch::default();
        let id = "b".repeat(64);
        let tag = format!("kube.var.log.containers.web-5d8f_shop_nginx-{id}.log");
        let t = b.tag_index(tag.as_bytes(), || Bytes::from(tag.clone()));
        let at = |s: &str| {
            let i = tag.find(s).unwrap();
            Span::new(i..i + s.len())
        };
        b.k8s = vec![Some(K8sTag {
            pod: at("web-5d8f"),
            namespace: at("shop"),
            container: at("nginx"),
            pod_uid: Span::default(),
            restart_count: Span::default(),
            container_id: at(&id),
        })];
        // Meta left at its default: what an event looks like with enrichment off.
        let rec = record(&[("log", "GET / 200"), ("stream", "stdout"), ("log", "again")]);
        b.events.push(Event::new(
            Timestamp { secs: -5, nanos: 0 },
            t,
            Bytes::from(rec),
        ));
        let req = encode(&encoder(Body::String), &b);
        let rl = &req.resource_logs[0];
        let res = &rl.resource.as_ref().unwrap().attributes;
        assert_eq!(attr(res, "container.id"), Some(&s(&id)));
        assert_eq!(attr(res, "k8s.pod.name"), Some(&s("web-5d8f")));
        assert_eq!(attr(res, "k8s.namespace.name"), Some(&s("shop")));
        assert_eq!(attr(res, "k8s.container.name"), Some(&s("nginx")));
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.time_unix_nano, 0, "before the epoch is unknown");
        assert_eq!(r.severity_number, 0);
        assert_eq!(r.severity_text, "");
        assert!(r.trace_id.is_empty() && r.span_id.is_empty() && r.flags == 0);
        assert_eq!(r.body.as_ref().unwrap().value, Some(s("again")));
        assert_eq!(attr(&r.attributes, "log.iostream"), Some(&s("stdout")));
        assert_eq!(attr(&r.attributes, "stream"), None);
        assert_eq!(attr(&r.attributes, "log"), None);
    }

    #[test]
    fn a_line_event_is_a_body_and_its_stream_with_no_record_attributes() {
        // A CRI line a file source read: no MessagePack anywhere in it.
        let mut b = Batch::default();
        let id = "e".repeat(64);
        let tag = format!("kube.var.log.containers.web-1_shop_app-{id}.log");
        let t = b.tag_index(tag.as_bytes(), || Bytes::from(tag.clone()));
        let text = "2026-12-04T10:00:00Z stderr F disk full";
        let (line, stream) = (span_of(text.as_bytes(), "disk full"), Span::new(21..27));
        let e = Event::line(T, t, Bytes::from(text), line, Some(stream));
        b.events.push(e);
        crate::pipeline::kubernetes::annotate(&mut b);
        for body in [Body::String, Body::Map, Body::Message] {
            let req = encode(&encoder(body), &b);
            let rl = &req.resource_logs[0];
            let res = &rl.resource.as_ref().unwrap().attributes;
            assert_eq!(attr(res, "k8s.namespace.name"), Some(&s("shop")));
            assert_eq!(attr(res, "container.id"), Some(&s(&id)));
            let r = &rl.scope_logs[0].log_records[0];
            assert_eq!(r.body.as_ref().unwrap().value, Some(s("disk full")));
            let keys: Vec<_> = r.attributes.iter().map(|a| a.key.as_str()).collect();
            assert_eq!(keys, ["log.iostream", "fluent.tag"], "{body:?}");
            assert_eq!(attr(&r.attributes, "log.iostream"), Some(&s("stderr")));
        }
    }

    #[test]
    fn typed_msgpack_fields_and_unique_keys() {
        // {"i": -3, "u": u64::MAX, "b": bin[1,2], "nan": NaN, "m": {"x": [nil]}, 7: "seven",
        //  "fluent.tag": "mine", "t": EventTime}
        let mut rec = Vec::new();
        rmp::encode::write_map_len(&mut rec, 8).unwrap();
        rmp::encode::write_str(&mut rec, "i").unwrap();
        rmp::encode::write_sint(&mut rec, -3).unwrap();
        rmp::encode::write_str(&mut rec, "u").unwrap();
        rmp::encode::write_u64(&mut rec, u64::MAX).unwrap();
        rmp::encode::write_str(&mut rec, "b").unwrap();
        rmp::encode::write_bin(&mut rec, &[1, 2]).unwrap();
        rmp::encode::write_str(&mut rec, "nan").unwrap();
        rmp::encode::write_f64(&mut rec, f64::NAN).unwrap();
        rmp::encode::write_str(&mut rec, "m").unwrap();
        rmp::encode::write_map_len(&mut rec, 1).unwrap();
        rmp::encode::write_str(&mut rec, "x").unwrap();
        rmp::encode::write_array_len(&mut rec, 1).unwrap();
        rmp::encode::write_nil(&mut rec).unwrap();
        rmp::encode::write_uint(&mut rec, 7).unwrap();
        rmp::encode::write_str(&mut rec, "seven").unwrap();
        rmp::encode::write_str(&mut rec, "fluent.tag").unwrap();
        rmp::encode::write_str(&mut rec, "mine").unwrap();
        rmp::encode::write_str(&mut rec, "t").unwrap();
        rec.extend_from_slice(&[0xd7, 0x00]);
        rec.extend_from_slice(&1_441_588_984u32.to_be_bytes());
        rec.extend_from_slice(&5u32.to_be_bytes());
        let mut b = Batch::default();
        let t = b.tag_index(b"app", || Bytes::from_static(b"app"));
        b.events.push(Event::new(T, t, Bytes::from(rec)));
        b.fields = vec![(Bytes::from_static(b"peer"), Bytes::from_static(b"10.0.0.1"))].into();
        let req = encode(&encoder(Body::String), &b);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        let a = &r.attributes;
        assert!(r.body.is_none(), "no line, no body");
        assert_eq!(attr(a, "i"), Some(&Value::IntValue(-3)));
        assert_eq!(attr(a, "u"), Some(&s("18446744073709551615")));
        assert_eq!(attr(a, "b"), Some(&Value::BytesValue(vec![1, 2])));
        assert_eq!(attr(a, "nan"), Some(&s("NaN")));
        let Some(Value::KvlistValue(m)) = attr(a, "m") else {
            panic!("kvlist")
        };
        assert_eq!(
            m.values[0].value.as_ref().unwrap().value,
            Some(Value::ArrayValue(ArrayValue {
                values: vec![AnyValue::default()]
            }))
        );
        assert_eq!(attr(a, "7"), Some(&s("seven")));
        assert_eq!(attr(a, "fluent.tag"), Some(&s("app")), "ours comes first");
        assert_eq!(a.iter().filter(|kv| kv.key == "fluent.tag").count(), 1);
        assert_eq!(attr(a, "t"), Some(&s("2015-09-07T01:23:04.000000005Z")));
        assert_eq!(attr(a, "peer"), Some(&s("10.0.0.1")));
    }

    #[test]
    fn invalid_ids_are_left_out_and_severity_falls_back_to_the_short_name() {
        let mut b = Batch::default();
        let t = b.tag_index(b"app", || Bytes::from_static(b"app"));
        let mut e = Event::new(T, t, Bytes::from(record(&[("log", "boom")])));
        e.meta.trace_id = Some([0; 16]);
        e.meta.span_id = Some([1; 8]);
        e.meta.severity = 17;
        e.meta.incomplete = true;
        b.events.push(e);
        let req = encode(&encoder(Body::String), &b);
        let r = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert!(r.trace_id.is_empty() && r.span_id.is_empty());
        assert_eq!(r.severity_text, "ERROR");
        assert_eq!(
            attr(&r.attributes, "outrigger.incomplete"),
            Some(&Value::BoolValue(true))
        );
    }

    #[test]
    fn repeated_keys_keep_the_first_beyond_the_linear_threshold() {
        // 40 distinct keys, each twice: past the linear threshold, into the hash set.
        let fields: Vec<(String, String)> = (0..80)
            .map(|i| (format!("k{}", i % 40), i.to_string()))
            .collect();
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut b = Batch::default();
        let tag = b.tag_index(b"app", || Bytes::from_static(b"app"));
        b.events
            .push(Event::new(T, tag, Bytes::from(record(&fields))));
        let req = encode(&encoder(Body::String), &b);
        let attrs = &req.resource_logs[0].scope_logs[0].log_records[0].attributes;
        assert_eq!(attrs.len(), 41, "fluent.tag and k0..k39");
        assert_eq!(attr(attrs, "k3"), Some(&s("3")));
        assert_eq!(attr(attrs, "k39"), Some(&s("39")));
    }

    #[test]
    fn otlp_json_uses_hex_ids_string_int64_and_camel_case() {
        let mut b = Batch::default();
        docker_json(&mut b, "api");
        let req = encode(&encoder(Body::String), &b);
        let text = String::from_utf8(simd_json::to_vec(&req).unwrap()).unwrap();
        for want in [
            r#""traceId":"4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b""#,
            r#""spanId":"0707070707070707""#,
            r#""timeUnixNano":"1700000000123456789""#,
            r#""observedTimeUnixNano":"42""#,
            r#""severityNumber":13"#,
            r#""resourceLogs":["#,
            r#""scopeLogs":["#,
            r#""logRecords":["#,
            r#"{"key":"ms","value":{"intValue":"1200"}}"#,
            r#"{"key":"f","value":{"doubleValue":1.5}}"#,
            r#""body":{"stringValue":"#,
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
        assert!(!text.contains("resource_logs") && !text.contains("SEVERITY_NUMBER"));
    }

    fn rpc_status(code: i32, retry: Option<Duration>) -> Vec<u8> {
        let details = retry
            .map(|d| ProtoAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: RetryInfo {
                    retry_delay: Some(ProtoDuration {
                        seconds: d.as_secs() as i64,
                        nanos: d.subsec_nanos() as i32,
                    }),
                }
                .encode_to_vec(),
            })
            .into_iter()
            .collect();
        RpcStatus {
            code,
            message: "busy".into(),
            details,
        }
        .encode_to_vec()
    }

    #[test]
    fn grpc_codes_follow_the_spec_table() {
        let verdict = |code: Code| classify_status(&tonic::Status::new(code, "m"));
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert!(
                matches!(verdict(code), Verdict::Retry { after: None, .. }),
                "{code:?}"
            );
        }
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::ResourceExhausted,
        ] {
            assert!(
                matches!(verdict(code), Verdict::Rejected { .. }),
                "{code:?}"
            );
        }
        assert_eq!(
            verdict(Code::InvalidArgument),
            Verdict::Rejected {
                reason: "gRPC InvalidArgument: m".into()
            }
        );
        let throttled = tonic::Status::with_details(
            Code::ResourceExhausted,
            "slow down",
            rpc_status(8, Some(Duration::from_millis(1500))).into(),
        );
        assert_eq!(
            classify_status(&throttled),
            Verdict::Retry {
                reason: "throttled",
                after: Some(Duration::from_millis(1500))
            }
        );
        let unavailable = tonic::Status::with_details(
            Code::Unavailable,
            "later",
            rpc_status(14, Some(Duration::from_secs(2))).into(),
        );
        assert_eq!(
            classify_status(&unavailable),
            Verdict::Retry {
                reason: "unavailable",
                after: Some(Duration::from_secs(2))
            }
        );
        let exhausted_without_info = tonic::Status::with_details(
            Code::ResourceExhausted,
            "too big",
            rpc_status(8, None).into(),
        );
        assert!(matches!(
            classify_status(&exhausted_without_info),
            Verdict::Rejected { .. }
        ));
        assert_eq!(retry_delay(b"\xff\xff garbage"), None);
    }

    fn response(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> Response {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        Response {
            status: hyper::StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn http_statuses_retry_only_429_502_503_504() {
        for (code, reason) in [
            (429, "throttled"),
            (502, "server_error"),
            (503, "server_error"),
            (504, "server_error"),
        ] {
            assert_eq!(
                classify_http(&response(code, &[("retry-after", "3")], b""), false),
                Verdict::Retry {
                    reason,
                    after: Some(Duration::from_secs(3))
                }
            );
        }
        assert!(matches!(
            classify_http(&response(413, &[], b""), false),
            Verdict::TooLarge { .. }
        ));
        for code in [400, 401, 403, 404, 408, 500, 501] {
            assert!(
                matches!(
                    classify_http(&response(code, &[], b""), false),
                    Verdict::Rejected { .. }
                ),
                "{code}"
            );
        }
        let body = RpcStatus {
            code: 3,
            message: "bad attribute".into(),
            details: vec![],
        }
        .encode_to_vec();
        assert_eq!(
            classify_http(&response(400, &[], &body), false),
            Verdict::Rejected {
                reason: "HTTP 400: bad attribute".into()
            }
        );
        assert_eq!(
            classify_http(
                &response(400, &[], br#"{"code":3,"message":"bad json"}"#),
                true
            ),
            Verdict::Rejected {
                reason: "HTTP 400: bad json".into()
            }
        );
        assert_eq!(
            classify_http(&response(500, &[], b"plain text"), false),
            Verdict::Rejected {
                reason: "HTTP 500: plain text".into()
            }
        );
        // No Retry-After header: the RetryInfo of the body.
        assert_eq!(
            classify_http(
                &response(503, &[], &rpc_status(14, Some(Duration::from_secs(4)))),
                false
            ),
            Verdict::Retry {
                reason: "server_error",
                after: Some(Duration::from_secs(4))
            }
        );
    }

    #[test]
    fn partial_success_in_protobuf_and_json_bodies() {
        let pb = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        let p = partial_of(&pb, false).unwrap();
        assert_eq!(
            partial_success(&p),
            Verdict::Accepted {
                rejected: 3,
                reason: "partial success: too old".into()
            }
        );
        for json in [
            &br#"{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"too old"}}"#[..],
            br#"{"partialSuccess":{"rejectedLogRecords":3,"errorMessage":"too old"}}"#,
        ] {
            assert_eq!(partial_of(json, true), Some(p.clone()));
        }
        assert_eq!(partial_of(b"", false), None);
        assert_eq!(partial_of(b"{}", true), None);
        assert_eq!(partial_of(b"not json", true), None);
        let warning = ExportLogsPartialSuccess {
            rejected_log_records: 0,
            error_message: "deprecated field".into(),
        };
        assert_eq!(partial_success(&warning), Verdict::Delivered);
        assert_eq!(
            partial_success(&ExportLogsPartialSuccess::default()),
            Verdict::Delivered
        );
    }

    #[test]
    fn config_names_and_defaults() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(
            (c.protocol, c.body, c.path.as_str()),
            (Protocol::Grpc, Body::Message, "/v1/logs")
        );
        let c: Config = toml::from_str("body = \"string\"").unwrap();
        assert_eq!(c.body, Body::String);
        let c: Config = toml::from_str("protocol = \"http/json\"\nbody = \"map\"").unwrap();
        assert_eq!((c.protocol, c.body), (Protocol::HttpJson, Body::Map));
        let c: Config = toml::from_str("protocol = \"http/protobuf\"").unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert!(toml::from_str::<Config>("protocol = \"http\"").is_err());
        assert!(toml::from_str::<Config>("bodyy = \"map\"").is_err());
    }

    fn client(endpoint: &str) -> HttpClient {
        HttpClient {
            endpoint: endpoint.into(),
            headers: [("X-Scope-OrgID".to_string(), "t1".to_string())].into(),
            auth: Some(crate::sink::settings::Auth::Bearer {
                token: "tok".into(),
            }),
            tls: None,
            compression: Compression::Gzip,
            timeout_ms: 1000,
            http2: false,
        }
    }

    #[tokio::test]
    async fn try_new_checks_the_endpoint_and_builds_metadata() {
        let c: Config = toml::from_str("").unwrap();
        let e = Exporter::try_new(&client("http://127.0.0.1:4317"), &c, &Shape::default()).unwrap();
        let Transport::Grpc(g) = &e.transport else {
            panic!("grpc by default")
        };
        let keys: Vec<&str> = g.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["x-scope-orgid", "authorization"]);
        assert_eq!(g.metadata[1].1, "Bearer tok");
        assert!(Exporter::try_new(&client("ftp://x"), &c, &Shape::default()).is_err());
        let mut bad = client("https://127.0.0.1:4317");
        bad.tls = Some(crate::sink::settings::ClientTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        let err = Exporter::try_new(&bad, &c, &Shape::default()).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/ca.pem"),
            "{err:#}"
        );
        // https with the system's roots builds too.
        Exporter::try_new(&client("https://127.0.0.1:4317"), &c, &Shape::default()).unwrap();
    }
}
