//! (Being written.)

use serde::Deserialize;

use super::export::Ref;
use super::retry::Verdict;
use crate::config::export::{Compression, Defaults, HttpClient};

/// The `otlp` sink's own keys (besides the shared delivery keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// Batching and compression defaults when the config leaves them out.
pub const DEFAULTS: Defaults = Defaults {
    max_batch_events: 1000,
    max_batch_bytes: 1 << 20,
    flush_interval_ms: 1000,
    compression: Compression::Gzip,
};

/// The exporter.
#[derive(Debug)]
pub struct Exporter {}

impl Exporter {
    /// Builds the exporter (client, TLS material, templates).
    ///
    /// # Errors
    /// Invalid settings or TLS files.
    pub fn try_new(
        _client: &HttpClient,
        _config: &Config,
        _shape: &super::json::Shape,
    ) -> anyhow::Result<Exporter> {
        anyhow::bail!("not implemented yet")
    }

    pub async fn attempt(&self, _events: &[Ref<'_>]) -> Verdict {
        Verdict::Rejected {
            reason: "not implemented".into(),
        }
    }
}
