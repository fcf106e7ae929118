//! What Loki's answers mean (the table in the module docs).

use crate::sink::client::{Response, snippet};
use crate::sink::retry::Verdict;

/// The verdict for `sent` events from Loki's answer (the table in the module docs).
pub(super) fn classify(resp: &Response, sent: usize) -> Verdict {
    let status = resp.status.as_u16();
    let reason = || format!("HTTP {status}: {}", snippet(&resp.body));
    match status {
        260 => Verdict::Accepted {
            rejected: sent as u64,
            reason: "HTTP 260: Loki blocks ingestion for this tenant".into(),
        },
        400 => match rejected_count(&resp.body) {
            Some(n) => Verdict::Accepted {
                rejected: n.min(sent as u64),
                reason: reason(),
            },
            None => Verdict::Rejected { reason: reason() },
        },
        _ => crate::sink::client::classify(resp),
    }
}

/// How many entries a 400 says Loki refused, when the body is one of Loki's per-entry forms;
/// `None` for anything else (a body Loki could not read at all: nothing was stored).
///
/// The forms (Loki 2.x–3.x):
/// - the ingester's, for entries behind the stream's window or out of order: up to ten
///   `entry with timestamp … ignored, reason: '…',` lines, then `user '…', total ignored: N
///   out of M for stream: {…}`. N is exact for that stream; only one stream is reported.
/// - the distributor's validation errors, grouped by message: `N errors like: <msg>; M errors
///   like: <msg>`, or a lone message when there was exactly one error (`entry for stream
///   '{…}' has timestamp too old: …`, `Max entry size '…' bytes exceeded …`). A stream-level
///   error (`stream '{…}' has label value too long`) counts once although it drops every
///   entry of that stream, so the count is a lower bound there; our own label checks keep
///   those errors from happening.
fn rejected_count(body: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let number_after = |s: &str| -> Option<u64> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        s[..digits].parse().ok()
    };
    let ignored: Vec<u64> = text
        .match_indices("total ignored: ")
        .filter_map(|(i, m)| number_after(&text[i + m.len()..]))
        .collect();
    if !ignored.is_empty() {
        return Some(ignored.iter().sum());
    }
    let grouped: Vec<u64> = text
        .match_indices(" errors like: ")
        .filter_map(|(i, _)| {
            let before = &text[..i];
            let start = before
                .rfind(|c: char| !c.is_ascii_digit())
                .map_or(0, |p| p + 1);
            let at_group_start = start == 0 || before[..start].ends_with("; ");
            at_group_start
                .then(|| before[start..].parse().ok())
                .flatten()
        })
        .collect();
    if !grouped.is_empty() {
        return Some(grouped.iter().sum());
    }
    const ONE_ERROR: [&str; 6] = [
        "entry ",
        "Max entry size",
        "stream '",
        "Error parsing labels",
        "error at least one label pair",
        "missing required labels",
    ];
    ONE_ERROR.iter().any(|p| text.starts_with(p)).then_some(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn response(status: u16, retry_after: Option<&str>, body: &str) -> Response {
        let mut headers = hyper::HeaderMap::new();
        if let Some(a) = retry_after {
            headers.insert(hyper::header::RETRY_AFTER, a.parse().unwrap());
        }
        Response {
            status: hyper::StatusCode::from_u16(status).unwrap(),
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn classification() {
        let v = |status, after, body| classify(&response(status, after, body), 10);
        assert_eq!(v(204, None, ""), Verdict::Delivered);
        assert_eq!(v(200, None, ""), Verdict::Delivered);
        assert_eq!(
            v(429, Some("3"), "Ingestion rate limit exceeded"),
            Verdict::Retry {
                reason: "throttled",
                after: Some(Duration::from_secs(3))
            }
        );
        for s in [500, 502, 503, 504] {
            assert!(matches!(
                v(s, None, "x"),
                Verdict::Retry {
                    reason: "server_error",
                    ..
                }
            ));
        }
        assert!(matches!(v(408, None, ""), Verdict::Retry { .. }));
        for (s, body) in [
            (401, "no org id"),
            (403, "denied"),
            (404, "404 page not found"),
            (501, ""),
        ] {
            assert_eq!(
                v(s, None, body),
                Verdict::Rejected {
                    reason: format!("HTTP {s}: {body}")
                }
            );
        }
        assert_eq!(
            classify(&response(413, None, "request body too large"), 10),
            Verdict::TooLarge {
                reason: "HTTP 413: request body too large".into()
            }
        );
        let partial = "entry with timestamp 2023-11-14 22:13:20 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2023-11-14T22:13:20Z, oldest acceptable timestamp is: 2023-11-14T23:13:20Z',\nuser 'fake', total ignored: 3 out of 10 for stream: {job=\"x\"}\n";
        assert_eq!(
            v(400, None, partial),
            Verdict::Accepted {
                rejected: 3,
                reason: format!("HTTP 400: {}", snippet(partial.as_bytes()))
            }
        );
        assert!(matches!(
            v(400, None, "Content-Encoding \"br\" not supported"),
            Verdict::Rejected { .. }
        ));
        assert_eq!(
            v(260, None, ""),
            Verdict::Accepted {
                rejected: 10,
                reason: "HTTP 260: Loki blocks ingestion for this tenant".into()
            }
        );
    }

    #[test]
    fn rejected_counts_from_loki_bodies() {
        assert_eq!(
            rejected_count(b"entry for stream '{job=\"x\"}' has timestamp too old: 2023-01-01, oldest acceptable timestamp is: 2023-11-07\n"),
            Some(1)
        );
        assert_eq!(
            rejected_count(b"Max entry size '262144' bytes exceeded for stream '{job=\"x\"}' while adding an entry with length '300000' bytes"),
            Some(1)
        );
        assert_eq!(
            rejected_count(b"4 errors like: entry for stream '{a=\"b\"}' has timestamp too new: x; 2 errors like: Max entry size '1' bytes exceeded; 12 x"),
            Some(6)
        );
        assert_eq!(
            rejected_count(b"user 'a', total ignored: 7 out of 9 for stream: {a=\"b\"}"),
            Some(7)
        );
        assert_eq!(
            rejected_count(b"stream '{a=\"b\"}' has label value too long: 'x'"),
            Some(1)
        );
        assert_eq!(rejected_count(b""), None);
        assert_eq!(rejected_count(b"loghttp: cannot parse"), None);
        assert_eq!(rejected_count(b"<html>400 Bad Request</html>"), None);
        assert_eq!(rejected_count(b"x5 errors like: y"), None);
    }
}
