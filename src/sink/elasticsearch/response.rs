//! What a bulk answer means: the whole request's status, then each item's.

use std::time::Duration;

use super::settings::Action;
use crate::sink::retry::Verdict;

/// What became of the events of one request (or of several, after a split), by index.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) retry: Vec<usize>,
    pub(super) rejected: Vec<(usize, String)>,
    pub(super) after: Option<Duration>,
    /// Set when a whole request failed in a retryable way (for the retry metric's reason).
    pub(super) retry_reason: Option<&'static str>,
}

pub(super) enum Sent {
    Done(Outcome),
    /// 413: the request must be split.
    TooLarge(String),
}

impl Outcome {
    pub(super) fn into_verdict(self, n: usize) -> Verdict {
        let Outcome {
            mut retry,
            mut rejected,
            after,
            retry_reason,
        } = self;
        if retry.is_empty() && rejected.is_empty() {
            return Verdict::Delivered;
        }
        if let (Some(reason), true) = (retry_reason, rejected.is_empty() && retry.len() == n) {
            return Verdict::Retry { reason, after };
        }
        if retry.is_empty() && rejected.len() == n && rejected.iter().all(|r| r.1 == rejected[0].1)
        {
            return Verdict::Rejected {
                reason: rejected.swap_remove(0).1,
            };
        }
        retry.sort_unstable();
        rejected.sort_by_key(|r| r.0);
        Verdict::Partial {
            retry,
            rejected,
            after,
        }
    }
}

/// What one bulk response says about its `items` documents (indices in request order).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Stored,
    Items {
        retry: Vec<usize>,
        rejected: Vec<(usize, String)>,
    },
    Retry {
        reason: &'static str,
        after: Option<Duration>,
    },
    Rejected(String),
    TooLarge(String),
}

/// Classifies a response to a request of `items` documents (see the module documentation).
pub(super) fn classify(
    status: u16,
    after: Option<Duration>,
    body: &[u8],
    items: usize,
    action: Action,
) -> Answer {
    use crate::sink::client::snippet;
    match status {
        200..=299 => match errors_flag(body) {
            Some(false) => Answer::Stored,
            Some(true) => match item_results(body, items, action) {
                Ok((retry, rejected)) if retry.is_empty() && rejected.is_empty() => Answer::Stored,
                Ok((retry, rejected)) => Answer::Items { retry, rejected },
                // Some documents may be stored, but which is unknown: resending could
                // duplicate, so they go to the dead letters, which lose nothing.
                Err(why) => Answer::Rejected(why),
            },
            None => Answer::Rejected(format!(
                "HTTP {status} without a bulk response (is the endpoint Elasticsearch?): {}",
                snippet(body)
            )),
        },
        413 => Answer::TooLarge(format!(
            "HTTP 413, request larger than the server accepts (http.max_content_length, or a \
             proxy's body limit): {}",
            snippet(body)
        )),
        // The rules every HTTP exporter shares.
        _ => match crate::sink::client::status_verdict(status, after, body) {
            Verdict::Retry { reason, after } => Answer::Retry { reason, after },
            Verdict::TooLarge { reason } => Answer::TooLarge(reason),
            other => Answer::Rejected(match other {
                Verdict::Rejected { reason } => reason,
                _ => format!("HTTP {status}: {}", snippet(body)),
            }),
        },
    }
}

/// The top-level `errors` flag; it precedes `items` in every bulk response.
pub(super) fn errors_flag(body: &[u8]) -> Option<bool> {
    let at = memchr::memmem::find(body, b"\"errors\"")?;
    let rest = body[at + 8..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    if rest.starts_with(b"true") {
        Some(true)
    } else if rest.starts_with(b"false") {
        Some(false)
    } else {
        None
    }
}

pub(super) type ItemResults = (Vec<usize>, Vec<(usize, String)>);

/// The items to resend and those refused for good, from a response with `"errors":true`.
pub(super) fn item_results(
    body: &[u8],
    expected: usize,
    action: Action,
) -> Result<ItemResults, String> {
    use simd_json::prelude::*;
    let mut copy = body.to_vec();
    let v = simd_json::to_borrowed_value(&mut copy).map_err(|e| {
        format!(
            "unreadable bulk response ({e}): {}",
            crate::sink::client::snippet(body)
        )
    })?;
    let items = v
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| "bulk response without items".to_string())?;
    if items.len() != expected {
        return Err(format!(
            "bulk response has {} items for {expected} documents",
            items.len()
        ));
    }
    let mut retry = Vec::new();
    let mut rejected = Vec::new();
    for (i, item) in items.iter().enumerate() {
        // `{"create": {"status": …, "error": {…}}}`
        let result = item.as_object().and_then(|o| o.values().next());
        let status = result
            .and_then(|r| r.get("status"))
            .and_then(|s| s.as_u64());
        match status {
            Some(200..=299) => {}
            Some(409) if action == Action::Create => {}
            Some(408 | 429 | 500..=599) => retry.push(i),
            Some(s) => {
                let error = result.and_then(|r| r.get("error"));
                let kind = error
                    .and_then(|e| e.get("type"))
                    .and_then(|t| t.as_str())
                    .or_else(|| error.and_then(|e| e.as_str()))
                    .unwrap_or("error");
                let why = error
                    .and_then(|e| e.get("reason"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                let mut reason = format!("item {s} {kind}: {why}");
                if reason.len() > 400 {
                    let mut cut = 400;
                    while !reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason.truncate(cut);
                }
                rejected.push((i, reason.trim_end().to_string()));
            }
            None => rejected.push((i, "bulk item without a status".to_string())),
        }
    }
    Ok((retry, rejected))
}
