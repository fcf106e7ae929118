//! Outrigger watching itself: its log, its metrics and the admin endpoints that expose them,
//! the probe (`outrigger health`) that asks those endpoints from outside the process, and
//! optionally its own traces and metrics over OTLP.

pub mod admin;
pub mod exposition;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod otel_metrics;
pub mod probe;
pub mod process;

pub use metrics::{Metrics, SinkMetrics, SourceMetrics};
