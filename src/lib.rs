//! Outrigger: a log-forwarding sidecar.
//!
//! # Layout
//!
//! The modules follow the data, left to right:
//!
//! ```text
//! source ──Batch──▶ pipeline::Stage ──▶ buffer::Router ──Entry──▶ buffer::Queue ──▶ sink
//!  (forward: sockets,  (one per stream:    (fan-out by tag)          (bounded)        (stdout, file, blackhole,
//!   decode, acks;       enrich, join)                                                  http, loki, elasticsearch, otlp)
//!   file: log files
//!   tailed)
//! ```
//!
//! With the disk buffer, sources write into [`buffer::disk`]'s log instead of the router, and
//! each sink's [`source::replay`] reader runs the stage and fills the sink's queue from it.
//!
//! - [`event`]: the event and batch types everything else passes around (a forward record or
//!   a line read from a file; a batch's side table of JSON members); depends on nothing.
//! - [`msgpack`]: reading MessagePack in place, resumably.
//! - [`source`]: listeners and connections; the forward protocol; log files tailed
//!   ([`source::file`]: formats, rotation, checkpoints, each read's disk buffer record, pod
//!   metadata from the Kubernetes API); the input budget; the one
//!   [`source::Source`] enum the topology binds and runs; the disk buffer's readers.
//! - [`pipeline`]: enrichment (JSON lines and structured records, trace context, severity,
//!   split and multi-line reassembly), which each source drives through one
//!   [`pipeline::Stage`] per stream before it queues.
//! - [`buffer`]: bounded queues and tag routing; the only place that decides to wait. Its
//!   [`buffer::disk`] is the write-ahead log of `buffer.type = "disk"` (segments, group
//!   commit, cursors, each sink's progress): sources write into it, and each sink's reader
//!   ([`source::replay`]) runs the pipeline over it from the sink's cursor.
//! - [`sink`]: where events leave: stdout, file, blackhole, and the network exporters with
//!   their shared delivery loop (`sink::export`), which keeps each stream's order
//!   (`sink::order`); the exporters' kinds (`sink::KINDS`) and shared settings
//!   (`sink::settings`).
//! - [`config`]: the TOML file into validated settings, sinks read through `sink::KINDS`;
//!   default queue bounds from the container's memory limit.
//! - [`telemetry`]: our own logs, metrics, liveness and readiness, the admin endpoints and
//!   (optional) OTLP traces.
//! - [`topology`]: builds it all, runs it, drains it; [`shutdown`] carries its stop signal.
//!
//! Errors are precise enums where callers act on them (decoding, configuration) and `anyhow`
//! at start-up edges, where the only action is to report and exit.

pub mod buffer;
pub mod config;
pub mod event;
pub mod msgpack;
pub mod pipeline;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod topology;
