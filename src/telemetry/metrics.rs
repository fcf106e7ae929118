//! Prometheus metrics: created once at start, handed to components as ready handles.
//!
//! Components never look metrics up by name on the hot path. A source or sink asks for its
//! handles once ([`Metrics::source`], [`Metrics::sink`]) and bumps plain atomic counters,
//! once per batch rather than per event. Labels are bounded: the component's configured name
//! and a reason from a fixed list; never a tag, a tenant or a peer address.
//!
//! The process itself (memory, CPU, file descriptors, start time) is read from `/proc/self`
//! at each scrape ([`super::process`]) and exposed under the standard `process_*` names that
//! dashboards and the other Prometheus client libraries use, without the `outrigger_` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::buffer::QueueGauges;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Component {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentReason {
    component: String,
    reason: &'static str,
}

type Counters = Family<Component, Counter>;
type Gauges = Family<Component, Gauge>;
type ReasonCounters = Family<ComponentReason, Counter>;

/// Every metric Outrigger exports, under the `outrigger_` prefix.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The unprefixed `process_*` metrics, read at each scrape.
    process: Registry,
    source_events: Counters,
    source_bytes: Counters,
    source_connections: Counters,
    source_open_connections: Gauges,
    source_acks: Counters,
    source_rejected: ReasonCounters,
    source_connection_errors: ReasonCounters,
    source_file_events: ReasonCounters,
    unrouted: Counters,
    queue_bytes: Gauges,
    queue_events: Gauges,
    queue_max_bytes: Gauges,
    queue_max_events: Gauges,
    sink_events: Counters,
    sink_bytes: Counters,
    sink_batches: Counters,
    sink_retries: ReasonCounters,
    sink_failed: ReasonCounters,
    sink_request_seconds: Family<Component, Histogram, fn() -> Histogram>,
    sink_batch_events: Family<Component, Histogram, fn() -> Histogram>,
    enrich_parse_errors: ReasonCounters,
    enrich_trace_ids: Counters,
    enrich_invalid_trace_ids: Counters,
    enrich_partial: Family<ComponentOutcome, Counter>,
    enrich_multiline: Counters,
    input: crate::source::budget::BudgetMetrics,
    source_buffer_waits: Counters,
    buffer: BufferMetrics,
    sink_buffer_records: Gauges,
    sink_buffer_oldest: Gauges,
}

/// The disk buffer's own numbers, copied from the log's writer by the cursor keeper (the
/// sync times are observed by the writer itself).
#[derive(Debug, Clone)]
pub struct BufferMetrics {
    pub bytes: Gauge,
    pub max_bytes: Gauge,
    pub segments: Gauge,
    pub records: Gauge,
    pub syncs: Counter,
    pub sync_seconds: Histogram,
    pub write_errors: Counter,
    pub damaged: Family<Reason, Counter>,
    pub lost_records: Counter,
}

impl Default for BufferMetrics {
    fn default() -> BufferMetrics {
        BufferMetrics {
            bytes: Gauge::default(),
            max_bytes: Gauge::default(),
            segments: Gauge::default(),
            records: Gauge::default(),
            syncs: Counter::default(),
            sync_seconds: crate::buffer::disk::commit::sync_histogram(),
            write_errors: Counter::default(),
            damaged: Family::default(),
            lost_records: Counter::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentOutcome {
    component: String,
    outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("outrigger");
        let m = Metrics {
            registry: Registry::default(),
            process: Registry::default(),
            source_events: Default::default(),
            source_bytes: Default::default(),
            source_connections: Default::default(),
            source_open_connections: Default::default(),
            source_acks: Default::default(),
            source_rejected: Default::default(),
            source_connection_errors: Default::default(),
            source_file_events: Default::default(),
            unrouted: Default::default(),
            queue_bytes: Default::default(),
            queue_events: Default::default(),
            queue_max_bytes: Default::default(),
            queue_max_events: Default::default(),
            sink_events: Default::default(),
            sink_bytes: Default::default(),
            sink_batches: Default::default(),
            sink_retries: Default::default(),
            sink_failed: Default::default(),
            sink_request_seconds: Family::new_with_constructor(|| {
                // 1 ms to about 33 s.
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.001, 2.0, 16,
                ))
            }),
            sink_batch_events: Family::new_with_constructor(|| {
                // 1 to 65 536 events, by fours: from a lone event to far past any batch limit.
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    1.0, 4.0, 9,
                ))
            }),
            enrich_parse_errors: Default::default(),
            enrich_trace_ids: Default::default(),
            enrich_invalid_trace_ids: Default::default(),
            enrich_partial: Default::default(),
            enrich_multiline: Default::default(),
            input: Default::default(),
            source_buffer_waits: Default::default(),
            buffer: Default::default(),
            sink_buffer_records: Default::default(),
            sink_buffer_oldest: Default::default(),
        };
        // Counters get `_total` appended by the encoder.
        registry.register(
            "source_events",
            "Events accepted from clients",
            m.source_events.clone(),
        );
        registry.register(
            "source_bytes",
            "Bytes read from client connections",
            m.source_bytes.clone(),
        );
        registry.register(
            "source_connections",
            "Client connections accepted",
            m.source_connections.clone(),
        );
        registry.register(
            "source_open_connections",
            "Client connections open now",
            m.source_open_connections.clone(),
        );
        registry.register(
            "source_acks",
            "Acknowledgements sent to clients",
            m.source_acks.clone(),
        );
        registry.register(
            "source_rejected",
            "Requests or entries skipped as invalid, by reason (never acknowledged)",
            m.source_rejected.clone(),
        );
        registry.register(
            "source_connection_errors",
            "Client connections closed by Outrigger, by reason",
            m.source_connection_errors.clone(),
        );
        registry.register(
            "source_file_events",
            "What file sources met, by reason: a rotation or truncation followed, a line \
             passed on as text (malformed_cri, malformed_docker) or cut (line_cut), a file \
             that could not be read (read_error)",
            m.source_file_events.clone(),
        );
        registry.register(
            "unrouted_events",
            "Events that matched no sink, by source",
            m.unrouted.clone(),
        );
        registry.register(
            "queue_bytes",
            "Bytes held in a sink's queue (waiting or in progress)",
            m.queue_bytes.clone(),
        );
        registry.register(
            "queue_events",
            "Events held in a sink's queue",
            m.queue_events.clone(),
        );
        registry.register(
            "queue_max_bytes",
            "A sink's queue bound in bytes (configured, or sized from the memory limit)",
            m.queue_max_bytes.clone(),
        );
        registry.register(
            "queue_max_events",
            "A sink's queue bound in events",
            m.queue_max_events.clone(),
        );
        registry.register(
            "sink_events",
            "Events a sink delivered",
            m.sink_events.clone(),
        );
        registry.register("sink_bytes", "Bytes a sink wrote", m.sink_bytes.clone());
        registry.register(
            "sink_batches",
            "Requests (batches) a sink started",
            m.sink_batches.clone(),
        );
        registry.register(
            "sink_retries",
            "Request retries, by reason",
            m.sink_retries.clone(),
        );
        registry.register(
            "sink_failed_events",
            "Events a sink will never deliver, by reason (see the dead-letter file)",
            m.sink_failed.clone(),
        );
        registry.register(
            "sink_request_seconds",
            "Time per request attempt",
            m.sink_request_seconds.clone(),
        );
        registry.register(
            "sink_batch_events",
            "Events per request an exporter sent",
            m.sink_batch_events.clone(),
        );
        registry.register(
            "enrich_parse_errors",
            "Lines that looked like JSON but were kept as text, by reason",
            m.enrich_parse_errors.clone(),
        );
        registry.register(
            "enrich_trace_ids",
            "Events given a trace ID",
            m.enrich_trace_ids.clone(),
        );
        registry.register(
            "enrich_invalid_trace_ids",
            "Events whose trace fields held no valid ID (left without one)",
            m.enrich_invalid_trace_ids.clone(),
        );
        registry.register(
            "enrich_partial_lines",
            "Split long lines joined, by outcome (complete, or cut by timeout, overflow, gap, flush)",
            m.enrich_partial.clone(),
        );
        registry.register(
            "enrich_multiline",
            "Multi-line stack traces joined into one event",
            m.enrich_multiline.clone(),
        );
        registry.register(
            "input_buffer_bytes",
            "Bytes the sources hold before queueing (read buffers past 4 KiB a connection, \
             requests arriving, inflated payloads, split lines)",
            m.input.held.clone(),
        );
        registry.register(
            "input_buffer_max_bytes",
            "The sources' input budget (configured, or sized from the memory limit)",
            m.input.max.clone(),
        );
        registry.register(
            "input_buffer_waits",
            "Times a connection waited for room in the input budget before reading",
            m.input.waits.clone(),
        );
        registry.register(
            "source_buffer_waits",
            "Times a connection held a request because the disk buffer could not take it \
             (full, or failing to write)",
            m.source_buffer_waits.clone(),
        );
        let b = &m.buffer;
        // Both series exist from the start, at 0: an alert can watch them.
        for reason in ["cut", "quarantined"] {
            let _ = b.damaged.get_or_create(&Reason { reason });
        }
        registry.register(
            "buffer_bytes",
            "Disk buffer: bytes its segments take",
            b.bytes.clone(),
        );
        registry.register(
            "buffer_max_bytes",
            "Disk buffer: buffer.max_bytes",
            b.max_bytes.clone(),
        );
        registry.register(
            "buffer_segments",
            "Disk buffer: segment files",
            b.segments.clone(),
        );
        registry.register(
            "buffer_records",
            "Disk buffer: records it keeps",
            b.records.clone(),
        );
        registry.register("buffer_syncs", "Disk buffer: syncs", b.syncs.clone());
        registry.register(
            "buffer_sync_seconds",
            "Disk buffer: time of each group's write and sync",
            b.sync_seconds.clone(),
        );
        registry.register(
            "buffer_write_errors",
            "Disk buffer: requests a write or sync failed for (held and retried, never acknowledged)",
            b.write_errors.clone(),
        );
        registry.register(
            "buffer_damaged_segments",
            "Disk buffer: damaged segments found at start, by what was done (cut: the newest, \
             at its first bad record; quarantined: an older one, set aside)",
            b.damaged.clone(),
        );
        registry.register(
            "buffer_lost_records",
            "Disk buffer: records skipped after damage in an older segment, found at start",
            b.lost_records.clone(),
        );
        registry.register(
            "sink_buffer_oldest_seconds",
            "Age of the oldest disk buffer record a sink has read and not finished with (0: none)",
            m.sink_buffer_oldest.clone(),
        );
        registry.register(
            "sink_buffer_records",
            "Disk buffer records a sink has not finished with",
            m.sink_buffer_records.clone(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(super::process::Process));
        Metrics {
            registry,
            process,
            ..m
        }
    }

    /// Handles for the source called `name`.
    pub fn source(&self, name: &str) -> SourceMetrics {
        let c = Component {
            component: name.to_string(),
        };
        SourceMetrics {
            name: name.to_string(),
            events: self.source_events.get_or_create_owned(&c),
            bytes: self.source_bytes.get_or_create_owned(&c),
            connections: self.source_connections.get_or_create_owned(&c),
            open_connections: self.source_open_connections.get_or_create_owned(&c),
            acks: self.source_acks.get_or_create_owned(&c),
            unrouted: self.unrouted.get_or_create_owned(&c),
            buffer_waits: self.source_buffer_waits.get_or_create_owned(&c),
            rejected: self.source_rejected.clone(),
            connection_errors: self.source_connection_errors.clone(),
            file_events: self.source_file_events.clone(),
        }
    }

    /// The disk buffer's metrics.
    pub fn buffer(&self) -> &BufferMetrics {
        &self.buffer
    }

    /// Records of the disk buffer sink `name` has not finished with, and the age of the
    /// oldest it has read.
    pub fn sink_buffer(&self, name: &str) -> (Gauge, Gauge) {
        let c = Component {
            component: name.to_string(),
        };
        (
            self.sink_buffer_records.get_or_create_owned(&c),
            self.sink_buffer_oldest.get_or_create_owned(&c),
        )
    }

    /// The sources' input budget's gauges and counter.
    pub fn input(&self) -> crate::source::budget::BudgetMetrics {
        self.input.clone()
    }

    /// Handles for the sink called `name`.
    pub fn sink(&self, name: &str) -> SinkMetrics {
        let c = Component {
            component: name.to_string(),
        };
        // At 0 without the disk buffer, so every sink has the series.
        let _ = self.sink_buffer_records.get_or_create(&c);
        let _ = self.sink_buffer_oldest.get_or_create(&c);
        SinkMetrics {
            events: self.sink_events.get_or_create_owned(&c),
            bytes: self.sink_bytes.get_or_create_owned(&c),
            queue: QueueGauges {
                bytes: self.queue_bytes.get_or_create_owned(&c),
                events: self.queue_events.get_or_create_owned(&c),
            },
            queue_max_bytes: self.queue_max_bytes.get_or_create_owned(&c),
            queue_max_events: self.queue_max_events.get_or_create_owned(&c),
            batches: self.sink_batches.get_or_create_owned(&c),
            request_seconds: self.sink_request_seconds.get_or_create_owned(&c),
            batch_events: self.sink_batch_events.get_or_create_owned(&c),
            name: name.to_string(),
            retries: self.sink_retries.clone(),
            failed: self.sink_failed.clone(),
        }
    }

    /// Enrichment handles for the source called `name`.
    pub fn enrich(&self, name: &str) -> crate::pipeline::Metrics {
        let c = Component {
            component: name.to_string(),
        };
        let reason = |reason| {
            self.enrich_parse_errors
                .get_or_create_owned(&ComponentReason {
                    component: name.to_string(),
                    reason,
                })
        };
        let outcome = |outcome| {
            self.enrich_partial.get_or_create_owned(&ComponentOutcome {
                component: name.to_string(),
                outcome,
            })
        };
        use crate::pipeline::json::Rejected;
        use crate::pipeline::partial::Cut;
        crate::pipeline::Metrics {
            parse_errors: [
                Rejected::Invalid,
                Rejected::TooLarge,
                Rejected::TooDeep,
                Rejected::TooManyFields,
            ]
            .map(|r| reason(r.as_str())),
            trace_ids: self.enrich_trace_ids.get_or_create_owned(&c),
            invalid_trace_ids: self.enrich_invalid_trace_ids.get_or_create_owned(&c),
            partial: [
                outcome("complete"),
                outcome(Cut::Timeout.as_str()),
                outcome(Cut::Overflow.as_str()),
                outcome(Cut::Gap.as_str()),
                outcome(Cut::Flush.as_str()),
            ],
            multiline: self.enrich_multiline.get_or_create_owned(&c),
        }
    }

    /// The Prometheus text exposition of every metric, the process's included.
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out))
            .expect("writing to a String cannot fail");
        out
    }
}

/// A source's metric handles.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    name: String,
    pub events: Counter,
    pub bytes: Counter,
    pub connections: Counter,
    pub open_connections: Gauge,
    pub acks: Counter,
    pub unrouted: Counter,
    pub buffer_waits: Counter,
    rejected: ReasonCounters,
    connection_errors: ReasonCounters,
    file_events: ReasonCounters,
}

impl SourceMetrics {
    /// Counts `n` requests or entries skipped for `reason`.
    pub fn rejected(&self, reason: &'static str, n: u64) {
        self.rejected
            .get_or_create(&ComponentReason {
                component: self.name.clone(),
                reason,
            })
            .inc_by(n);
    }

    /// Counts `n` times a file source met `reason` (see `source_file_events`).
    pub fn file_event(&self, reason: &'static str, n: u64) {
        self.file_events
            .get_or_create(&ComponentReason {
                component: self.name.clone(),
                reason,
            })
            .inc_by(n);
    }

    /// Counts a connection closed for `reason`.
    pub fn connection_error(&self, reason: &'static str) {
        self.connection_errors
            .get_or_create(&ComponentReason {
                component: self.name.clone(),
                reason,
            })
            .inc();
    }
}

/// A sink's metric handles.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    pub events: Counter,
    pub bytes: Counter,
    pub queue: QueueGauges,
    /// The queue's bounds, set once at start.
    pub queue_max_bytes: Gauge,
    pub queue_max_events: Gauge,
    /// Requests (batches) started.
    pub batches: Counter,
    /// Seconds per request attempt.
    pub request_seconds: Histogram,
    /// Events per request an exporter started.
    pub batch_events: Histogram,
    name: String,
    retries: ReasonCounters,
    failed: ReasonCounters,
}

impl SinkMetrics {
    /// Counts a retry for `reason` (`connection`, `timeout`, `throttled`, `server_error`,
    /// `partial`).
    pub fn retry(&self, reason: &'static str) {
        self.retries
            .get_or_create(&ComponentReason {
                component: self.name.clone(),
                reason,
            })
            .inc();
    }

    /// Counts `n` events that will never be delivered, by `reason`.
    pub fn failed(&self, reason: &'static str, n: u64) {
        self.failed
            .get_or_create(&ComponentReason {
                component: self.name.clone(),
                reason,
            })
            .inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_with_bounded_labels() {
        let m = Metrics::new();
        let s = m.source("docker");
        s.events.inc_by(3);
        s.rejected("invalid_time", 2);
        let k = m.sink("out");
        k.queue.bytes.set(10);
        let text = m.render();
        assert!(
            text.contains("outrigger_source_events_total{component=\"docker\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "outrigger_source_rejected_total{component=\"docker\",reason=\"invalid_time\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("outrigger_queue_bytes{component=\"out\"} 10"),
            "{text}"
        );
    }
}
