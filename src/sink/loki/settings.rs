//! The `loki` sink's own settings: labels, structured metadata, tenant, line and encoding,
//! with their defaults and checks.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::sink::settings::{Compression, Defaults};

/// Loki's tenant IDs: at most this long, from [`tenant_char`]s.
const MAX_TENANT_BYTES: usize = 150;

/// The `loki` sink's own keys (besides the shared HTTP and delivery keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Label name → template. Replaces the default set as a whole.
    #[serde(default = "Config::default_labels")]
    pub labels: BTreeMap<String, String>,
    /// Structured metadata name → template. Replaces the default set as a whole.
    #[serde(default = "Config::default_structured_metadata")]
    pub structured_metadata: BTreeMap<String, String>,
    /// Sent as `X-Scope-OrgID`; empty sends none (Loki with `auth_enabled: false`).
    #[serde(default)]
    pub tenant_id: String,
    /// What an entry's line is.
    #[serde(default)]
    pub line: Line,
    #[serde(default)]
    pub encoding: Encoding,
}

impl Config {
    fn default_labels() -> BTreeMap<String, String> {
        [
            ("job", "outrigger"),
            ("cluster", "{k8s.cluster.name}"),
            ("namespace", "{k8s.namespace.name}"),
            ("container", "{k8s.container.name|container.name}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn default_structured_metadata() -> BTreeMap<String, String> {
        [
            ("trace_id", "{trace_id}"),
            ("span_id", "{span_id}"),
            ("pod", "{k8s.pod.name}"),
            ("stream", "{log.iostream}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// An entry's line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// The log line as the application wrote it (the record's line key, `log` by default);
    /// for a record without one, the record as JSON.
    #[default]
    Original,
    /// The whole event as the `stdout` sink writes it (tag, time, severity, trace, resource,
    /// record).
    Json,
}

/// The request body's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// `PushRequest` protobuf, snappy block-compressed: what promtail and Alloy send.
    #[default]
    Protobuf,
    /// The JSON form; gzip when `compression` says so.
    Json,
}

/// Batching and compression defaults when the config leaves them out: 1 MiB or 1 s, as
/// promtail and Alloy batch. The event bound is only a backstop; bytes decide. Compression
/// applies to `encoding = "json"` only: protobuf bodies are always snappy.
pub const DEFAULTS: Defaults = Defaults {
    max_batch_events: 100_000,
    max_batch_bytes: 1 << 20,
    flush_interval_ms: 1000,
    compression: Compression::Gzip,
};

/// Loki's tenant ID rules (`dskit/tenant`): one tenant, at most 150 bytes of
/// [`tenant_char`]s, not `.` or `..`.
pub(super) fn check_tenant(t: &str) -> Result<(), String> {
    if t.contains('|') {
        return Err("a push goes to exactly one tenant (`|` joins several)".into());
    }
    if t.len() > MAX_TENANT_BYTES {
        return Err(format!("longer than {MAX_TENANT_BYTES} bytes"));
    }
    if t == "." || t == ".." {
        return Err("`.` and `..` are not tenant IDs".into());
    }
    match t.chars().find(|c| !tenant_char(*c)) {
        Some(c) => Err(format!(
            "`{c}` is not allowed (letters, digits and !-_.*'() are)"
        )),
        None => Ok(()),
    }
}

fn tenant_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!-_.*'()".contains(c)
}
