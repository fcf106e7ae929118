//! Settings shared by the exporters: how one reaches its backend over HTTP ([`Http`], resolved
//! into [`HttpClient`]) and how any of them paces its requests ([`Pacing`], resolved into
//! [`Delivery`]): batching, concurrency, order, retries and the dead-letter file.
//!
//! They live with the sinks, not in `config`, so that the sinks depend on nothing upstream:
//! `config` reads [`Http`] and [`Pacing`] from a sink's table (the keys a sink's kind takes, see
//! [`super::Kind`]) and resolves them with the kind's [`Defaults`]; the sinks only see the
//! resolved forms.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Keys of a sink that speaks HTTP: how it reaches its backend. The parser splits them (and
/// [`DELIVERY_KEYS`]) off the sink's table, so each exporter's own struct stays small and
/// strict.
pub const HTTP_KEYS: [&str; 7] = [
    "endpoint",
    "headers",
    "auth",
    "tls",
    "compression",
    "timeout_ms",
    "http2",
];

/// Keys of every sink that delivers in requests (an HTTP exporter, or one over another
/// transport): batching, concurrency, order, retries, dead letters.
pub const DELIVERY_KEYS: [&str; 9] = [
    "max_batch_events",
    "max_batch_bytes",
    "flush_interval_ms",
    "max_in_flight",
    "ordering",
    "retry_initial_backoff_ms",
    "retry_max_backoff_ms",
    "max_retries",
    "dead_letter_path",
];

/// How an HTTP exporter reaches its backend, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub endpoint: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub tls: Option<ClientTls>,
    #[serde(default)]
    pub compression: Option<Compression>,
    /// One request, from connect to the end of the response.
    #[serde(default = "Http::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Speak HTTP/2 only (including cleartext h2c); otherwise HTTP/1.1, or HTTP/2 when TLS
    /// negotiates it.
    #[serde(default)]
    pub http2: bool,
}

impl Http {
    fn default_timeout_ms() -> u64 {
        30_000
    }

    /// With the exporter's default compression applied.
    pub fn resolve(self, compression: Compression) -> HttpClient {
        HttpClient {
            endpoint: self.endpoint,
            headers: self.headers,
            auth: self.auth,
            tls: self.tls,
            compression: self.compression.unwrap_or(compression),
            timeout_ms: self.timeout_ms,
            http2: self.http2,
        }
    }
}

/// How a sink paces its requests, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pacing {
    #[serde(default)]
    pub max_batch_events: Option<usize>,
    #[serde(default)]
    pub max_batch_bytes: Option<usize>,
    #[serde(default)]
    pub flush_interval_ms: Option<u64>,
    /// Requests in flight at once; more batches wait in the queue (and the queue, when full,
    /// stops the sources).
    #[serde(default = "Pacing::default_max_in_flight")]
    pub max_in_flight: usize,
    /// Whether a stream (a container's stdout, a Loki label set) keeps its order across the
    /// requests in flight.
    #[serde(default)]
    pub ordering: Ordering,
    #[serde(default = "Pacing::default_initial_backoff_ms")]
    pub retry_initial_backoff_ms: u64,
    #[serde(default = "Pacing::default_max_backoff_ms")]
    pub retry_max_backoff_ms: u64,
    /// Attempts after the first for a retryable failure; 0 retries until the backend takes
    /// the events or Outrigger is stopped.
    #[serde(default)]
    pub max_retries: u32,
    /// Events the backend refused for good (or that ran out of retries) are appended here as
    /// JSON lines with the reason, so nothing disappears silently.
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
}

impl Pacing {
    fn default_max_in_flight() -> usize {
        4
    }
    fn default_initial_backoff_ms() -> u64 {
        200
    }
    fn default_max_backoff_ms() -> u64 {
        30_000
    }

    /// With the sink's defaults applied.
    pub fn resolve(self, d: Defaults) -> Delivery {
        Delivery {
            max_batch_events: self.max_batch_events.unwrap_or(d.max_batch_events).max(1),
            max_batch_bytes: self.max_batch_bytes.unwrap_or(d.max_batch_bytes).max(1),
            flush_interval_ms: self.flush_interval_ms.unwrap_or(d.flush_interval_ms),
            max_in_flight: self.max_in_flight.max(1),
            ordering: self.ordering,
            retry_initial_backoff_ms: self.retry_initial_backoff_ms.max(1),
            retry_max_backoff_ms: self.retry_max_backoff_ms.max(self.retry_initial_backoff_ms),
            max_retries: self.max_retries,
            dead_letter_path: self.dead_letter_path,
        }
    }
}

/// How requests treat the streams of their events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// A stream's events are stored in the order they arrived: one request per stream at a
    /// time.
    #[default]
    Stream,
    /// Any free request slot takes the oldest events: the most throughput for one busy
    /// stream, in exchange for lines of a stream being stored out of order when requests
    /// overlap or are retried (sending times still sort them).
    None,
}

/// Authentication sent with every request; secrets usually come from `${ENV}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Auth {
    /// `auth = { basic = { user = "…", password = "…" } }`
    Basic { user: String, password: String },
    /// `auth = { bearer = { token = "…" } }`
    Bearer { token: String },
    /// Elasticsearch API keys: `auth = { api_key = { key = "…" } }` (the base64 form).
    ApiKey { key: String },
}

/// TLS toward the backend.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA bundle to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Gzip,
}

/// What the HTTP client needs, with each exporter's defaults applied.
#[derive(Debug, Clone)]
pub struct HttpClient {
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub auth: Option<Auth>,
    pub tls: Option<ClientTls>,
    pub compression: Compression,
    pub timeout_ms: u64,
    pub http2: bool,
}

/// Batching and retry settings, with each exporter's defaults applied.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
    pub flush_interval_ms: u64,
    pub max_in_flight: usize,
    pub ordering: Ordering,
    pub retry_initial_backoff_ms: u64,
    pub retry_max_backoff_ms: u64,
    pub max_retries: u32,
    pub dead_letter_path: Option<PathBuf>,
}

/// An exporter's defaults for the keys users may leave out.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
    pub flush_interval_ms: u64,
    pub compression: Compression,
}
