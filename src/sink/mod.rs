//! Sinks: the last stage, each draining its own queue.
//!
//! A sink runs until its queue reports that every sender is gone (the drain reached it), then
//! flushes and returns. The local ones write JSON lines ([`jsonl`]) to stdout or a file, or
//! only count (the blackhole, for benchmarks and, with a rate limit, backpressure tests).
//! The network exporters ([`http`], [`loki`], [`elasticsearch`], [`otlp`]) turn events into
//! requests and answers into [`retry::Verdict`]s; the rest is theirs in common: the delivery
//! loop ([`export`]) with per-stream order ([`order`]), 413 halves ([`split`]), backoff
//! ([`retry`]) and dead letters ([`dead_letter`]), the HTTP client ([`client`]), and the
//! settings of the client and the loop ([`settings`]).
//!
//! Each exporter is a kind ([`Kind`]), listed in [`KINDS`]: its name, its defaults, the shared
//! keys it takes, and how it reads its own keys into settings that build its exporter
//! ([`Build`]). `config` and the topology know the exporters only through that list. A new
//! kind adds its folder (its settings, with `Deserialize` and [`HttpBuild`] or [`Build`], and
//! an exporter implementing [`export::Deliver`]), its `mod` line here and its line in
//! [`KINDS`].

pub mod client;
pub mod dead_letter;
pub mod elasticsearch;
pub mod export;
pub mod http;
pub mod jsonl;
mod kind;
pub mod loki;
pub mod order;
pub mod otlp;
pub mod retry;
pub mod settings;
pub mod split;

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::buffer::{Entry, QueueReceiver};
use crate::telemetry::SinkMetrics;
use crate::telemetry::logging::RateLimit;
pub use kind::{Build, HttpBuild, Kind, Own, OwnKeys};

/// Every sink kind that delivers through [`export`], by its `type`, in the order an unknown
/// `type` lists them. `config` reads a sink's table and the topology builds its exporter from
/// this list alone, so nothing outside a kind's folder names it but its line here. `stdout`,
/// `file` and `blackhole` are not here: they have no delivery loop, and `config` and the
/// topology know them by name.
pub static KINDS: &[Kind] = &[
    Kind::http::<http::Config>("http", http::DEFAULTS),
    Kind::http::<loki::Config>("loki", loki::DEFAULTS),
    Kind {
        reads_members: true,
        ..Kind::http::<elasticsearch::Config>("elasticsearch", elasticsearch::DEFAULTS)
    },
    Kind {
        reads_members: true,
        ..Kind::http::<otlp::Config>("otlp", otlp::DEFAULTS)
    },
];

/// A network exporter with what its delivery loop needs.
pub struct Export {
    pub exporter: Box<dyn export::Deliver>,
    pub delivery: settings::Delivery,
    pub dead_letter: Option<dead_letter::DeadLetter>,
    /// Where each batch's span goes; `None` when `[telemetry.otlp]` is off.
    pub tracer: Option<crate::telemetry::otel::SinkTracer>,
}

/// A ready-to-run sink.
pub enum Sink {
    /// JSON lines to any writer (stdout, a file).
    Lines {
        writer: Box<dyn AsyncWrite + Send + Unpin>,
        shape: jsonl::Shape,
    },
    /// Counts and discards; with a rate, takes `1/rate` seconds per event.
    Blackhole { rate_events_per_sec: Option<u64> },
    /// A network exporter, driven by [`export::run`].
    Export(Box<Export>),
}

impl Sink {
    /// Drains `queue` until it closes.
    pub async fn run(self, name: String, mut queue: QueueReceiver, metrics: SinkMetrics) {
        match self {
            Sink::Lines {
                writer: mut w,
                shape,
            } => {
                let mut out = Vec::with_capacity(64 << 10);
                let mut times = jsonl::TimeCache::default();
                static WARN: RateLimit = RateLimit::new(5);
                while let Some(first) = queue.recv().await {
                    // Take what else is waiting, so a burst becomes one large write. Entries
                    // are held until written: the queue bound covers work in progress.
                    encode(&mut out, &mut times, &first, &shape, &name, &metrics);
                    let mut events = first.events;
                    let mut held = vec![first];
                    while out.len() < (1 << 20) {
                        let Some(e) = queue.try_recv() else { break };
                        encode(&mut out, &mut times, &e, &shape, &name, &metrics);
                        events += e.events;
                        held.push(e);
                    }
                    let written = async {
                        w.write_all(&out).await?;
                        w.flush().await
                    };
                    match written.await {
                        Ok(()) => {
                            metrics.events.inc_by(events as u64);
                            metrics.bytes.inc_by(out.len() as u64);
                        }
                        Err(e) => {
                            metrics.failed("write_failed", events as u64);
                            if let Some(suppressed) = WARN.allow() {
                                tracing::error!(sink = %name, error = %e, events, suppressed, "write failed, events lost");
                            }
                        }
                    }
                    out.clear();
                    drop(held);
                }
                let _ = w.flush().await;
            }
            Sink::Export(e) => {
                let Export {
                    exporter,
                    delivery,
                    dead_letter,
                    tracer,
                } = *e;
                return export::run(
                    name,
                    exporter,
                    delivery,
                    dead_letter,
                    queue,
                    metrics,
                    tracer,
                )
                .await;
            }
            Sink::Blackhole {
                rate_events_per_sec,
            } => {
                while let Some(entry) = queue.recv().await {
                    if let Some(rate) = rate_events_per_sec {
                        let secs = entry.events as f64 / rate as f64;
                        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    }
                    metrics.events.inc_by(entry.events as u64);
                    metrics.bytes.inc_by(entry.batch.size as u64);
                }
            }
        }
        tracing::debug!(sink = %name, "sink drained");
    }
}

fn encode(
    out: &mut Vec<u8>,
    times: &mut jsonl::TimeCache,
    entry: &Entry,
    shape: &jsonl::Shape,
    name: &str,
    metrics: &SinkMetrics,
) {
    static WARN: RateLimit = RateLimit::new(5);
    let batch = &entry.batch;
    for e in entry.events() {
        match jsonl::event(out, times, batch, e, shape) {
            Ok(()) => out.push(b'\n'),
            Err(err) => {
                metrics.failed("encode_failed", 1);
                if let Some(suppressed) = WARN.allow() {
                    tracing::error!(sink = %name, error = %err, suppressed, "record could not be encoded, event lost");
                }
            }
        }
    }
}
