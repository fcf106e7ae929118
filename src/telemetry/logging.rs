//! Outrigger's own log: structured lines on stderr, JSON by default.
//!
//! Stderr, never stdout: the `stdout` sink owns stdout, and a container runtime that collects
//! our stderr must not feed it back into our own pipeline by accident.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `OUTRIGGER_LOG` (a tracing filter) overrides `level`.
///
/// # Errors
/// A filter that does not parse.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = match std::env::var("OUTRIGGER_LOG") {
        Ok(f) if !f.is_empty() => f,
        _ => level.to_string(),
    };
    let filter = EnvFilter::try_new(&filter).map_err(|e| format!("log level `{filter}`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already installed (tests start several topologies in one process): keep the first.
    let _ = result;
    Ok(())
}

/// Lets a few warnings per second through and counts the rest, so a flood of bad input
/// cannot turn into a flood of log lines.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u64,
    /// The second the counts below belong to.
    second: AtomicU64,
    used: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub const fn new(per_second: u64) -> RateLimit {
        RateLimit {
            per_second,
            second: AtomicU64::new(0),
            used: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this line may be logged, `n` being how many were suppressed before it.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.allow_at(now)
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_suppresses() {
        let r = RateLimit::new(2);
        assert_eq!(r.allow_at(10), Some(0));
        assert_eq!(r.allow_at(10), Some(0));
        assert_eq!(r.allow_at(10), None);
        assert_eq!(r.allow_at(10), None);
        assert_eq!(r.allow_at(11), Some(2));
        assert_eq!(r.allow_at(11), Some(0));
    }
}
