//! The `http` sink: events as JSON lines (the `stdout` sink's format) POSTed to any endpoint.
//!
//! A generic target for collectors and webhooks that take NDJSON (Vector's and Fluent Bit's
//! `http` sources, a log gateway). 2xx is success; 408, 429 and 5xx other than 501 are retried;
//! everything else is refused.

use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::client::{Client, classify};
use super::export::{Attempt, Deliver, Ref};
use super::jsonl;
use super::kind::HttpBuild;
use super::order::Gate;
use super::retry::Verdict;
use super::settings::{Compression, Defaults, HttpClient};

/// The `http` sink's own keys: none (it has the shared HTTP and delivery keys only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

/// Batching and compression defaults when the config leaves them out: 1000 events, 1 MiB or
/// 1 s, gzipped.
pub const DEFAULTS: Defaults = Defaults {
    max_batch_events: 1000,
    max_batch_bytes: 1 << 20,
    flush_interval_ms: 1000,
    compression: Compression::Gzip,
};

impl HttpBuild for Config {
    fn exporter(
        &self,
        client: &HttpClient,
        shape: &jsonl::Shape,
    ) -> anyhow::Result<Box<dyn Deliver>> {
        Ok(Box::new(Exporter {
            client: Client::try_new(client)?,
            shape: shape.clone(),
        }))
    }
}

/// The `http` exporter.
#[derive(Debug)]
pub struct Exporter {
    pub client: Client,
    pub shape: jsonl::Shape,
}

impl Exporter {
    pub async fn attempt(&self, events: &[Ref<'_>], gate: &Gate) -> Verdict {
        let mut body = Vec::with_capacity(events.len() * 512);
        let mut times = jsonl::TimeCache::default();
        for r in events {
            if jsonl::event(&mut body, &mut times, r.batch, r.event, &self.shape).is_ok() {
                body.push(b'\n');
            }
        }
        let headers = [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )];
        gate.open().await;
        match self.client.post("", &headers, body, true).await {
            Ok(resp) => classify(&resp),
            Err(e) => e.verdict(),
        }
    }
}

impl Deliver for Exporter {
    fn attempt<'a>(&'a self, events: &'a [Ref<'a>], gate: &'a Gate) -> Attempt<'a> {
        Box::pin(Exporter::attempt(self, events, gate))
    }
}
