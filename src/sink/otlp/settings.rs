//! The `otlp` sink's own settings: protocol, body and path, with their defaults.

use serde::Deserialize;

use crate::sink::settings::{Compression, Defaults};

/// The `otlp` sink's own keys (besides the shared HTTP and delivery keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `grpc` (default), `http/protobuf` or `http/json`: the values of
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    #[serde(default)]
    pub protocol: Protocol,
    /// How a parsed JSON line is sent: `message` (default; its message field is the body,
    /// the other fields attributes), `string` (the line is the body, its fields attributes
    /// too) or `map` (the fields are the body, as a kvlist).
    #[serde(default)]
    pub body: Body,
    /// Path appended to the endpoint for the HTTP protocols. `""` when the endpoint is
    /// already the whole URL. Unused by gRPC.
    #[serde(default = "Config::default_path")]
    pub path: String,
}

impl Config {
    fn default_path() -> String {
        "/v1/logs".into()
    }
}

/// The transport and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

/// What a parsed JSON line becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// The line's message field (the one enrichment found: `msg`, `message`, ...) is the
    /// body, its other top-level fields are attributes. A line without one is sent as
    /// `string` would.
    #[default]
    Message,
    /// The line as written is the body; its top-level fields are attributes too.
    String,
    /// The line's fields are the body (a kvlist); nothing is duplicated into attributes.
    Map,
}

/// Batching and compression defaults when the config leaves them out. A megabyte of
/// records stays well under the 4 MiB a gRPC receiver takes by default, even with JSON
/// fields sent twice (line and attributes). No compression by default, as the OTLP exporter
/// specification's `OTEL_EXPORTER_OTLP_COMPRESSION` default: a sidecar usually talks to a
/// collector on the node, and tonic's gzip (fixed at level 6) was most of the CPU when on;
/// `compression = "gzip"` for remote collectors.
pub const DEFAULTS: Defaults = Defaults {
    max_batch_events: 1000,
    max_batch_bytes: 1 << 20,
    flush_interval_ms: 1000,
    compression: Compression::None,
};
