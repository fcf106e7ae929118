//! Retry policy: exponential backoff with jitter, and the server's own `Retry-After`.
//!
//! Which responses are retryable is each exporter's call ([`Verdict`]); how long to wait is
//! decided here, once for all of them.

use std::time::{Duration, SystemTime};

/// What an exporter made of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event was stored.
    Delivered,
    /// Nothing was stored, and trying again may work (connection error, timeout, 429, some
    /// 5xx). `after` is the server's `Retry-After`, when it gave one.
    Retry {
        reason: &'static str,
        after: Option<Duration>,
    },
    /// Some events were stored; those at `retry` (indices into the attempt's events) may be
    /// sent again; those in `rejected` never will be.
    Partial {
        retry: Vec<usize>,
        rejected: Vec<(usize, String)>,
        after: Option<Duration>,
    },
    /// The backend refused everything for good (400, 401...). The events go to the
    /// dead-letter file.
    Rejected { reason: String },
    /// The request is larger than the backend takes (413): the delivery loop sends it again
    /// in halves ([`super::split`]); a single event still too large is refused.
    TooLarge { reason: String },
    /// The backend stored some and refused the rest without saying which (OTLP partial
    /// success, a Loki 400 after storing the valid entries): nothing is resent.
    Accepted { rejected: u64, reason: String },
}

/// Exponential backoff with jitter, bounded.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `n + 1` (n ≥ 1 failures so far): `initial × 2^(n-1)`, capped at
    /// `max`, then scaled by a random factor in [0.5, 1.0) so that many senders that failed
    /// together do not retry together. A server's `Retry-After` is a floor.
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let jitter = 0.5 + rand::random::<f64>() / 2.0;
        let d = capped.mul_f64(jitter);
        match retry_after {
            Some(floor) => d.max(floor.min(Duration::from_secs(3600))),
            None => d,
        }
    }
}

/// Parses a `Retry-After` value: delta seconds or an HTTP date.
pub fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for _ in 0..100 {
            let d1 = b.delay(1, None);
            assert!(d1 >= Duration::from_millis(50) && d1 < Duration::from_millis(100));
            let d3 = b.delay(3, None);
            assert!(d3 >= Duration::from_millis(200) && d3 < Duration::from_millis(400));
            let d30 = b.delay(30, None);
            assert!(d30 >= Duration::from_secs(1) && d30 < Duration::from_secs(2));
        }
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
