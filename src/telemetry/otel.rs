//! Outrigger's own traces over OTLP: a span per exported batch, a child span per attempt.
//!
//! In: the `[telemetry.otlp]` settings, once at start ([`SelfTelemetry::start`]); out: spans
//! sent by the OpenTelemetry SDK's batch processor, on its own thread, through its own gRPC
//! channel straight to the collector. They never pass through Outrigger's queues or sinks,
//! and Outrigger's log on stderr is untouched (this is the `opentelemetry` API used directly,
//! not a `tracing` layer), so nothing we emit can loop back into our own pipeline.
//!
//! No global provider is installed: the topology owns the provider and hands each exporter
//! sink a [`SinkTracer`], or `None` when telemetry is off. With `None` the delivery loop
//! builds no span, no attribute and no string, so "off" costs one branch per batch.
//!
//! With `metrics = true` (the default) it also runs the metrics export
//! ([`super::otel_metrics`]) to the same collector, with the same resource.
//!
//! Shutdown ([`SelfTelemetry::shutdown`]) flushes what is queued, bounded by `timeout_ms`:
//! a collector that is down delays exit by at most that, never indefinitely.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

use super::Metrics;
use super::otel_metrics::MetricsExport;
use crate::config::telemetry::{Otlp, Protocol};
use crate::sink::retry::Verdict;

/// Attribute keys. Our own namespace where OpenTelemetry's semantic conventions have no
/// name for the thing; `error.type` and `http.response.status_code` where they do.
pub mod key {
    pub const SINK_NAME: &str = "outrigger.sink.name";
    pub const SINK_KIND: &str = "outrigger.sink.kind";
    /// Events in the batch when it was sealed.
    pub const EVENTS: &str = "outrigger.batch.events";
    /// Their record bytes (what `outrigger_sink_bytes_total` counts).
    pub const BYTES: &str = "outrigger.batch.bytes";
    /// See [`super::ExportSpan`] for the values.
    pub const OUTCOME: &str = "outrigger.outcome";
    pub const RETRIES: &str = "outrigger.retries";
    pub const DELIVERED: &str = "outrigger.events.delivered";
    pub const REJECTED: &str = "outrigger.events.rejected";
    /// On an attempt span: 1 for the first try.
    pub const ATTEMPT: &str = "outrigger.attempt";
    /// On an attempt span: `delivered`, `retry`, `partial`, `rejected` or `accepted`.
    pub const VERDICT: &str = "outrigger.verdict";
    pub const ERROR_TYPE: &str = "error.type";
    pub const HTTP_STATUS: &str = "http.response.status_code";
}

/// The running tracer provider and metrics export; shut down once, when Outrigger stops.
#[derive(Debug)]
pub struct SelfTelemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    metrics: Option<MetricsExport>,
    timeout: Duration,
}

impl SelfTelemetry {
    /// Builds the exporter and provider when `cfg.enabled`; `None` otherwise. Must run inside
    /// a Tokio runtime: the gRPC channel's connection task is spawned on it (lazily: nothing
    /// connects until the first export, so a collector that is down does not stop the start).
    ///
    /// `metrics` is the registry the metrics export reads (when `cfg.metrics`).
    ///
    /// # Errors
    /// An endpoint, header or TLS setting the exporter cannot use.
    pub fn start(cfg: &Otlp, metrics: Arc<Metrics>) -> anyhow::Result<Option<SelfTelemetry>> {
        if !cfg.enabled {
            return Ok(None);
        }
        let exporter = exporter(cfg)?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(cfg.export_interval_ms))
            .with_max_queue_size(cfg.max_queue_spans)
            .with_max_export_batch_size(cfg.max_queue_spans.min(512))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = Resource::builder_empty()
            .with_attributes(
                resource_attributes(cfg)
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v)),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            // Attempts follow their batch's decision, so a sampled batch is traced whole.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sampling_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer_with_scope(
            &provider,
            opentelemetry::InstrumentationScope::builder("outrigger")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(endpoint = %cfg.endpoint(), sampling_ratio = cfg.sampling_ratio, "exporting own traces over OTLP");
        let metrics = if cfg.metrics {
            Some(MetricsExport::start(
                cfg,
                resource_attributes(cfg),
                metrics,
            )?)
        } else {
            None
        };
        Ok(Some(SelfTelemetry {
            provider,
            tracer,
            metrics,
            timeout: Duration::from_millis(cfg.timeout_ms),
        }))
    }

    /// Whether the metrics are exported too (`metrics = true`).
    pub fn exports_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    /// The handle one exporter sink records its batches with.
    pub fn sink(&self, name: &str, kind: &'static str) -> SinkTracer {
        SinkTracer {
            tracer: self.tracer.clone(),
            attributes: [
                KeyValue::new(key::SINK_NAME, name.to_string()),
                KeyValue::new(key::SINK_KIND, kind),
            ],
        }
    }

    /// Sends the spans still queued and the metrics one last time, and stops both exports,
    /// waiting at most `timeout_ms` (the two run side by side, not one after the other).
    ///
    /// The SDK's shutdown blocks its caller until the export thread answers; it runs on
    /// Tokio's blocking pool so the runtime stays free to drive the gRPC channel that the
    /// export thread is waiting on (on a single-threaded runtime it would otherwise wait for
    /// itself until the timeout).
    pub async fn shutdown(self) {
        let SelfTelemetry {
            provider,
            timeout,
            metrics,
            ..
        } = self;
        let metrics = async {
            if let Some(m) = metrics {
                m.shutdown().await;
            }
        };
        let traces = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout));
        let (done, ()) = tokio::join!(traces, metrics);
        match done {
            Ok(Ok(())) => tracing::debug!("own traces flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "own traces not flushed"),
            Err(e) => tracing::warn!(error = %e, "own traces not flushed"),
        }
    }
}

/// Builds the span exporter alone: what `outrigger validate` checks.
///
/// # Errors
/// See [`SelfTelemetry::start`].
pub fn exporter(cfg: &Otlp) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let endpoint = cfg.endpoint();
    let timeout = Duration::from_millis(cfg.timeout_ms);
    match cfg.protocol {
        Protocol::Grpc => {
            let metadata = metadata(cfg)?;
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(timeout)
                .with_metadata(metadata);
            if endpoint.starts_with("https:") {
                // The system's roots, like the sinks; tonic has none of its own.
                builder = builder
                    .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
            }
            builder.build().context("telemetry.otlp")
        }
        // Refused when the configuration is loaded (see `Protocol::Http`).
        Protocol::Http => anyhow::bail!("telemetry.otlp.protocol: `http` is not supported yet"),
    }
}

/// `headers` as gRPC metadata, for the traces and the metrics.
///
/// # Errors
/// A header name or value gRPC metadata cannot carry.
pub(super) fn metadata(cfg: &Otlp) -> anyhow::Result<tonic::metadata::MetadataMap> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    for (k, v) in &cfg.headers {
        let name = tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes())
            .with_context(|| format!("telemetry.otlp.headers: `{k}`"))?;
        let value = v
            .parse()
            .with_context(|| format!("telemetry.otlp.headers.{k}"))?;
        metadata.insert(name, value);
    }
    Ok(metadata)
}

/// The resource both exports describe Outrigger with: `service.name`, `service.version`, then
/// `[telemetry.otlp.resource]`, whose keys win over the first two.
pub(super) fn resource_attributes(cfg: &Otlp) -> Vec<(String, String)> {
    let mut all = std::collections::BTreeMap::new();
    all.insert("service.name".to_string(), cfg.service_name.clone());
    all.insert(
        "service.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    all.extend(cfg.resource.clone());
    all.into_iter().collect()
}

/// One exporter sink's tracer, with its name and kind ready to attach.
#[derive(Debug, Clone)]
pub struct SinkTracer {
    tracer: SdkTracer,
    attributes: [KeyValue; 2],
}

impl SinkTracer {
    /// Starts the span of one batch of `events` events and `bytes` record bytes.
    pub fn batch(&self, events: usize, bytes: u64, dead_letter: bool) -> ExportSpan {
        let mut attributes = Vec::with_capacity(10);
        attributes.extend(self.attributes.iter().cloned());
        attributes.push(KeyValue::new(key::EVENTS, events as i64));
        attributes.push(KeyValue::new(key::BYTES, bytes as i64));
        let span = self
            .tracer
            .span_builder("export batch")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::new());
        ExportSpan {
            cx: Context::new().with_span(span),
            tracer: self.tracer.clone(),
            events: events as u64,
            delivered: 0,
            rejected: 0,
            retries: 0,
            dead_letter,
            reason: None,
        }
    }
}

/// The span of one batch, from the time it is handed to the exporter until its last event
/// is delivered, refused or given up on. It tallies what became of the events and sets
/// `outrigger.outcome` when dropped, so every return path of the delivery loop (and a task
/// aborted when the drain runs out of time) ends it:
///
/// | outcome | meaning |
/// |---|---|
/// | `delivered` | every event stored on the first attempt |
/// | `retried_then_delivered` | every event stored, after `outrigger.retries` retries |
/// | `partial` | some stored, the rest refused (see `outrigger.events.rejected`) |
/// | `dead_lettered` | none stored, all refused and written to the dead-letter file |
/// | `failed` | none stored, all refused, no dead-letter file (`error.type` says why) |
/// | `aborted` | Outrigger stopped before the batch was finished |
#[derive(Debug)]
pub struct ExportSpan {
    /// Holds the batch span, as the parent of the attempt spans.
    cx: Context,
    tracer: SdkTracer,
    events: u64,
    delivered: u64,
    rejected: u64,
    retries: u32,
    dead_letter: bool,
    /// The last failure: a retry reason or a refusal.
    reason: Option<Cow<'static, str>>,
}

impl ExportSpan {
    /// Starts the span of attempt `n` (1 for the first) carrying `events` events.
    pub fn attempt(&self, n: u32, events: usize) -> AttemptSpan {
        let span = self
            .tracer
            .span_builder("export attempt")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new(key::ATTEMPT, i64::from(n)),
                KeyValue::new(key::EVENTS, events as i64),
            ])
            .start_with_context(&self.tracer, &self.cx);
        AttemptSpan(span)
    }

    pub fn delivered(&mut self, events: u64) {
        self.delivered += events;
    }

    pub fn rejected(&mut self, events: u64, reason: &str) {
        self.rejected += events;
        self.reason = Some(Cow::Owned(reason.to_string()));
    }

    pub fn retrying(&mut self, reason: &'static str) {
        self.retries += 1;
        self.reason = Some(Cow::Borrowed(reason));
    }

    fn outcome(&self) -> &'static str {
        if self.delivered + self.rejected < self.events {
            "aborted"
        } else if self.rejected == 0 && self.retries == 0 {
            "delivered"
        } else if self.rejected == 0 {
            "retried_then_delivered"
        } else if self.delivered > 0 {
            "partial"
        } else if self.dead_letter {
            "dead_lettered"
        } else {
            "failed"
        }
    }
}

impl Drop for ExportSpan {
    fn drop(&mut self) {
        let outcome = self.outcome();
        let span = self.cx.span();
        span.set_attributes([
            KeyValue::new(key::OUTCOME, outcome),
            KeyValue::new(key::RETRIES, i64::from(self.retries)),
            KeyValue::new(key::DELIVERED, self.delivered as i64),
            KeyValue::new(key::REJECTED, self.rejected as i64),
        ]);
        if matches!(outcome, "delivered" | "retried_then_delivered") {
            span.set_status(Status::Ok);
        } else {
            let reason = self.reason.take().unwrap_or(Cow::Borrowed(outcome));
            if let Some(code) = http_status(&reason) {
                span.set_attribute(KeyValue::new(key::HTTP_STATUS, code));
            }
            span.set_attribute(KeyValue::new(key::ERROR_TYPE, reason.clone()));
            span.set_status(Status::error(reason));
        }
        span.end();
    }
}

/// One attempt's span; [`AttemptSpan::end`] records the exporter's verdict.
#[derive(Debug)]
pub struct AttemptSpan(opentelemetry_sdk::trace::Span);

impl AttemptSpan {
    pub fn end(mut self, verdict: &Verdict) {
        let (name, reason): (&'static str, Option<Cow<'static, str>>) = match verdict {
            Verdict::Delivered => ("delivered", None),
            Verdict::Retry { reason, .. } => ("retry", Some(Cow::Borrowed(*reason))),
            Verdict::Partial { .. } => ("partial", Some(Cow::Borrowed("partial"))),
            Verdict::Rejected { reason } => ("rejected", Some(Cow::Owned(reason.clone()))),
            Verdict::TooLarge { reason } => ("too_large", Some(Cow::Owned(reason.clone()))),
            Verdict::Accepted { reason, .. } => ("accepted", Some(Cow::Owned(reason.clone()))),
        };
        self.0.set_attribute(KeyValue::new(key::VERDICT, name));
        match reason {
            None => self.0.set_status(Status::Ok),
            Some(reason) => {
                if let Some(code) = http_status(&reason) {
                    self.0.set_attribute(KeyValue::new(key::HTTP_STATUS, code));
                }
                self.0
                    .set_attribute(KeyValue::new(key::ERROR_TYPE, reason.clone()));
                self.0.set_status(Status::error(reason));
            }
        }
        self.0.end();
    }
}

/// The status in an exporter's refusal reason (`HTTP 400: …`), the only place a verdict
/// carries one.
fn http_status(reason: &str) -> Option<i64> {
    let code = reason.strip_prefix("HTTP ")?.get(..3)?;
    code.parse().ok().filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_reason() {
        assert_eq!(http_status("HTTP 400: bad labels"), Some(400));
        assert_eq!(http_status("HTTP 5"), None);
        assert_eq!(http_status("gRPC InvalidArgument: x"), None);
        assert_eq!(http_status("server_error"), None);
    }

    #[test]
    fn off_builds_nothing() {
        let metrics = Arc::new(Metrics::new());
        assert!(
            SelfTelemetry::start(&Otlp::default(), metrics)
                .unwrap()
                .is_none()
        );
    }
}
