//! Outrigger watching itself: its log, its metrics and the admin endpoints that expose them,
//! and optionally its own traces over OTLP.

pub mod admin;
pub mod logging;
pub mod metrics;
pub mod otel;

pub use metrics::{Metrics, SinkMetrics, SourceMetrics};
