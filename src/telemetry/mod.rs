//! Outrigger watching itself: its log, its metrics and the admin endpoints that expose them.

pub mod admin;
pub mod logging;
pub mod metrics;

pub use metrics::{Metrics, SinkMetrics, SourceMetrics};
