//! The `elasticsearch` sink's own settings: index, action, IDs, mapping, API version,
//! pipeline, sequence key, with their defaults.

use serde::Deserialize;

use super::index::IndexTemplate;
use crate::sink::settings::{Compression, Defaults};

/// The `elasticsearch` sink's own keys (besides the shared HTTP and delivery keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Index, data stream or alias to write to; a template with `%Y %m %d %H`.
    #[serde(default)]
    pub index: IndexTemplate,
    #[serde(default)]
    pub action: Action,
    /// `_id` of the documents.
    #[serde(default)]
    pub id: IdMode,
    /// Shape of the documents.
    #[serde(default)]
    pub mapping: Mapping,
    #[serde(default)]
    pub api_version: ApiVersion,
    /// Ingest pipeline to run on every document (`?pipeline=`).
    #[serde(default)]
    pub pipeline: Option<String>,
    /// The field that orders the documents of one stream (see the module docs); empty for
    /// none.
    #[serde(default = "Config::default_sequence_key")]
    pub sequence_key: String,
}

impl Config {
    pub(super) fn default_sequence_key() -> String {
        "log.sequence".to_string()
    }
}

/// The bulk action of every document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Add; a document with the same `_id` is a 409. The only action data streams accept.
    #[default]
    Create,
    /// Add or replace.
    Index,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdMode {
    /// The server picks IDs (fastest indexing).
    #[default]
    None,
    /// A hash of tag, time and record: retries cannot duplicate documents.
    Hash,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    /// Elastic Common Schema fields (see the module documentation).
    #[default]
    Ecs,
    /// The `stdout` sink's JSON shape, with `@timestamp`.
    Raw,
}

/// Which server the sink talks to: `"auto"`, `7`, `8`, `9` or `"opensearch"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "VersionValue")]
pub enum ApiVersion {
    /// Any of them: the requests are the same.
    #[default]
    Auto,
    Elasticsearch(u8),
    OpenSearch,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum VersionValue {
    Number(i64),
    Name(String),
}

impl TryFrom<VersionValue> for ApiVersion {
    type Error = String;

    fn try_from(v: VersionValue) -> Result<ApiVersion, String> {
        let name = match v {
            VersionValue::Number(n) => n.to_string(),
            VersionValue::Name(s) => s,
        };
        match name.as_str() {
            "auto" => Ok(ApiVersion::Auto),
            "7" => Ok(ApiVersion::Elasticsearch(7)),
            "8" => Ok(ApiVersion::Elasticsearch(8)),
            "9" => Ok(ApiVersion::Elasticsearch(9)),
            "opensearch" => Ok(ApiVersion::OpenSearch),
            other => Err(format!(
                "unsupported api_version `{other}`, expected \"auto\", 7, 8, 9 or \"opensearch\" \
                 (6.x and older need mapping types)"
            )),
        }
    }
}

/// Batching and compression defaults when the config leaves them out. Elastic's advice is a
/// few MB per request and to err on the small side (reference §5); 5 MiB of records, 2000
/// documents or 1 s, whichever comes first, stays far below `http.max_content_length`
/// (100 MB) and a `filter_path` response of 2000 items is about 50 kB. No compression by
/// default, as Vector's and Fluent Bit's Elasticsearch outputs: gzip costs about as much CPU
/// per event as encoding the document (measured: 0.9 µs against 0.6 µs), which is the wrong
/// trade inside a cluster network; `compression = "gzip"` for slow or metered links.
pub const DEFAULTS: Defaults = Defaults {
    max_batch_events: 2000,
    max_batch_bytes: 5 << 20,
    flush_interval_ms: 1000,
    compression: Compression::None,
};
