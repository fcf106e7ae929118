//! Outrigger watching itself: its log, its metrics and the admin endpoints that expose them.

pub mod admin;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod process;

pub use metrics::{Metrics, SinkMetrics, SourceMetrics};
