//! The `http` sink: events as JSON lines (the `stdout` sink's format) POSTed to any endpoint.
//!
//! A generic target for collectors and webhooks that take NDJSON (Vector's and Fluent Bit's
//! `http` sources, a log gateway). 2xx is success; 408, 429 and 5xx other than 501 are retried;
//! everything else is refused.

use hyper::header::{CONTENT_TYPE, HeaderValue};

use super::export::Ref;
use super::http::{Client, Response};
use super::json;
use super::retry::{Verdict, retry_after};

/// The `http` exporter.
#[derive(Debug)]
pub struct Ndjson {
    pub client: Client,
    pub shape: json::Shape,
}

impl Ndjson {
    pub async fn attempt(&self, events: &[Ref<'_>]) -> Verdict {
        let mut body = Vec::with_capacity(events.len() * 512);
        let mut times = json::TimeCache::default();
        for r in events {
            if json::event(&mut body, &mut times, r.batch, r.event, &self.shape).is_ok() {
                body.push(b'\n');
            }
        }
        let headers = [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )];
        match self.client.post("", &headers, body, true).await {
            Ok(resp) => classify(&resp),
            Err(e) => Verdict::Retry {
                reason: e.reason(),
                after: None,
            },
        }
    }
}

/// The usual HTTP rule: 2xx done; 408, 429 and 5xx (but 501) retried; the rest refused.
pub fn classify(resp: &Response) -> Verdict {
    let status = resp.status.as_u16();
    let after = resp
        .headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    match status {
        200..=299 => Verdict::Delivered,
        408 => Verdict::Retry {
            reason: "timeout",
            after,
        },
        429 => Verdict::Retry {
            reason: "throttled",
            after,
        },
        501 => Verdict::Rejected {
            reason: format!("HTTP 501: {}", snippet(&resp.body)),
        },
        500..=599 => Verdict::Retry {
            reason: "server_error",
            after,
        },
        _ => Verdict::Rejected {
            reason: format!("HTTP {status}: {}", snippet(&resp.body)),
        },
    }
}

/// The start of a response body, for logs and dead letters: never the whole thing.
pub fn snippet(body: &[u8]) -> String {
    let cut = &body[..body.len().min(200)];
    String::from_utf8_lossy(cut).trim().to_string()
}
