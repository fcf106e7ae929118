//! The `http` sink: events as JSON lines (the `stdout` sink's format) POSTed to any endpoint.
//!
//! A generic target for collectors and webhooks that take NDJSON (Vector's and Fluent Bit's
//! `http` sources, a log gateway). 2xx is success; 408, 429 and 5xx other than 501 are retried;
//! everything else is refused.

use hyper::header::{CONTENT_TYPE, HeaderValue};

use super::client::{Client, classify};
use super::export::{Attempt, Deliver, Ref};
use super::jsonl;
use super::order::Gate;
use super::retry::Verdict;

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
