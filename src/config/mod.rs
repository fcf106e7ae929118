//! Configuration: TOML text in, validated [`Settings`] out.
//!
//! Loading happens in two steps. [`load`] reads the file, replaces `${VAR}` references from the
//! environment, and deserializes every section into plain structs that reject unknown keys;
//! every error names the file, the line, the key and what was expected. [`Settings`] is then
//! checked as a whole (names, addresses, patterns). Nothing here opens sockets or spawns tasks:
//! that is the topology's job, so `outrigger validate` can run the same code safely.
//!
//! Sinks are read in three parts: the keys every sink has (`match`, the queue bounds), then by
//! `type`. `stdout`, `file` and `blackhole` are read here. Every other type is a kind in
//! [`sink::KINDS`]: the shared keys it takes are read into [`sink::settings`]'s structs with the
//! kind's defaults, and the rest of the table goes to the kind's own reader, which gets the keys
//! one at a time from here so its errors are located like every other ([`sink::OwnKeys`]).
//! `config` depends on `sink` for this; no sink depends on `config`.
//!
//! The built-in default ([`DEFAULT`]) is also `config/default.toml`, so what runs with no
//! arguments is an example a user can copy.

pub mod buffer;
pub mod file;
mod interpolate;
pub mod memory;
mod spanned;
pub mod telemetry;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::sink::{self, settings};
pub use interpolate::interpolate;
use spanned::Table;

/// The configuration used when no file is given: forward on 127.0.0.1:24224 to stdout.
pub const DEFAULT: &str = include_str!("../../config/default.toml");

/// A configuration error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted path of the key, like `sources.docker.max_frame_bytes`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {}

/// Everything Outrigger needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub global: Global,
    pub buffer: buffer::Buffer,
    pub enrich: crate::pipeline::Options,
    /// How JSON lines appear in records the sinks write.
    pub shape: crate::sink::jsonl::Shape,
    pub sources: Vec<Source>,
    pub sinks: Vec<Sink>,
    /// Outrigger's own traces (`[telemetry.otlp]`); off unless `enabled`.
    pub telemetry: telemetry::Telemetry,
}

/// The `[enrich]` section: parsing and enrichment, on by default for Docker JSON logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Enrich {
    pub enabled: bool,
    /// The record key holding the log line (`log` for Docker, `message` for some loggers).
    pub line_key: String,
    /// Parse lines that are JSON objects.
    pub parse_json: bool,
    /// `top`: a JSON line's fields join the record's; `nested`: they go under `nest_key`.
    pub merge: Merge,
    pub nest_key: String,
    /// Keep the original line next to its parsed fields.
    pub keep_line: bool,
    /// Longer lines are not parsed (they pass as text).
    pub max_line_bytes: usize,
    pub max_depth: usize,
    /// Fields in a JSON line, all levels counted.
    pub max_fields: usize,
    /// Look for `trace_id=…`, `traceparent=…` and similar tokens in plain-text lines.
    pub trace_from_text: bool,
    /// Look for `ERROR`, `[warn]`, `level=info` and similar in plain-text lines.
    pub severity_from_text: bool,
    /// JSON keys holding the level, by priority (dotted paths match flat or nested keys). A
    /// string is a level name, a single letter (`I`, `W`...) or a number; a number is a
    /// syslog (0–7) or pino/bunyan (10–60) level.
    pub level_keys: Vec<String>,
    /// Keys that hold a level only when their value is a level name (Datadog's `status`, which
    /// may also be an HTTP code); tried after `level_keys`.
    pub level_name_keys: Vec<String>,
    /// JSON keys holding the message, by priority.
    pub message_keys: Vec<String>,
    /// A JSON key holding the event time (RFC 3339 or epoch s/ms/µs/ns); empty keeps the time
    /// the client sent.
    pub time_key: String,
    /// Where trace and span IDs are looked for, by priority. Replaces the default list.
    pub trace: Option<Vec<crate::pipeline::trace::Family>>,
    /// Attributes added to every event, e.g. `"k8s.node.name" = "${NODE_NAME}"`.
    pub resource: BTreeMap<String, String>,
    pub partial: PartialLines,
    pub multiline: Multiline,
}

impl Default for Enrich {
    fn default() -> Self {
        Enrich {
            enabled: true,
            line_key: "log".into(),
            parse_json: true,
            merge: Merge::Top,
            nest_key: "json".into(),
            keep_line: false,
            max_line_bytes: 256 << 10,
            max_depth: 64,
            max_fields: 1024,
            trace_from_text: true,
            severity_from_text: true,
            level_keys: [
                "level",
                "severity",
                "lvl",
                "log.level",
                "levelname",
                "@l",
                "Level",
                "LogLevel",
            ]
            .map(String::from)
            .to_vec(),
            level_name_keys: vec!["status".into()],
            message_keys: ["msg", "message", "@m", "@mt"].map(String::from).to_vec(),
            time_key: String::new(),
            trace: None,
            resource: BTreeMap::new(),
            partial: PartialLines::default(),
            multiline: Multiline::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    Top,
    Nested,
}

/// `[enrich.partial]`: Docker's split long lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartialLines {
    /// A joined line longer than this goes on in pieces, marked incomplete.
    pub max_bytes: usize,
    /// A line whose last fragment has not come after this goes on, marked incomplete.
    pub timeout_ms: u64,
    /// Lines being joined at once on one connection.
    pub max_pending: usize,
}

impl Default for PartialLines {
    fn default() -> Self {
        PartialLines {
            max_bytes: 4 << 20,
            timeout_ms: 5000,
            max_pending: 64,
        }
    }
}

/// `[enrich.multiline]`: stack traces printed over several lines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Multiline {
    pub enabled: bool,
    /// How long a line waits for its continuation.
    pub timeout_ms: u64,
    pub max_lines: usize,
    pub max_bytes: usize,
}

impl Default for Multiline {
    fn default() -> Self {
        Multiline {
            enabled: false,
            timeout_ms: 1000,
            max_lines: 500,
            max_bytes: 1 << 20,
        }
    }
}

impl Enrich {
    /// The compiled form the pipeline takes.
    pub fn options(&self) -> crate::pipeline::Options {
        use crate::pipeline::{json, multiline, partial, trace};
        use std::time::Duration;
        let multiline = multiline::Settings {
            timeout: Duration::from_millis(self.multiline.timeout_ms),
            max_lines: self.multiline.max_lines.max(1),
            max_bytes: self.multiline.max_bytes,
            line_key: bytes::Bytes::from(self.line_key.clone()),
        };
        crate::pipeline::Options {
            enabled: self.enabled,
            line_key: self.line_key.clone(),
            parse_json: self.parse_json,
            limits: json::Limits {
                max_line_bytes: self.max_line_bytes,
                max_depth: self.max_depth,
                max_fields: self.max_fields,
            },
            trace: self.trace.clone().unwrap_or_else(trace::default_families),
            trace_from_text: self.trace_from_text,
            severity_from_text: self.severity_from_text,
            level_keys: self.level_keys.clone(),
            level_name_keys: self.level_name_keys.clone(),
            message_keys: self.message_keys.clone(),
            time_key: (!self.time_key.is_empty()).then(|| self.time_key.clone()),
            resource: self.resource.clone().into_iter().collect(),
            partial: partial::Limits {
                max_bytes: self.partial.max_bytes,
                timeout: Duration::from_millis(self.partial.timeout_ms),
                max_pending: self.partial.max_pending.max(1),
            },
            multiline: self.multiline.enabled.then(|| multiline.clone()),
            multiline_limits: multiline,
        }
    }

    fn shape(&self) -> crate::sink::jsonl::Shape {
        crate::sink::jsonl::Shape {
            nest_key: (self.merge == Merge::Nested).then(|| self.nest_key.clone().into_bytes()),
            keep_line: self.keep_line,
            line_key: self.line_key.clone().into_bytes(),
        }
    }
}

/// The `[global]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Global {
    /// `json` (default) or `text`, for Outrigger's own log lines on stderr.
    pub log_format: LogFormat,
    /// A level (`info`) or a tracing filter (`info,outrigger::source=debug`).
    pub log_level: String,
    /// Serve `/metrics`, `/live` and `/ready`; off, nothing listens on `admin_address`.
    pub admin_enabled: bool,
    pub admin_address: SocketAddr,
    /// `/live` fails when a pipeline task's heartbeat is older than this (see
    /// [`crate::telemetry::health`]).
    pub stuck_after_secs: u64,
    /// `/ready` fails while a sink's queue holds at least this fraction of its
    /// `max_queue_bytes` or `max_queue_events`.
    pub ready_queue_high_water: f64,
    /// How long a SIGTERM drain may take before Outrigger gives up and exits.
    pub grace_period_secs: u64,
    /// Default byte bound of every sink's queue; unset, it is sized from the container's
    /// memory limit at start ([`memory`]).
    pub max_queue_bytes: Option<u64>,
    /// The share of the memory limit, in percent, that the queues of sinks without an explicit
    /// byte bound may hold together.
    pub queue_memory_percent: f64,
    pub max_queue_events: u64,
    /// Where Outrigger keeps its state: the disk buffer (under `buffer/`).
    pub data_dir: PathBuf,
    /// What every source together may hold before its data is queued (read buffers beyond
    /// 4 KiB per connection, requests arriving, inflated payloads, batches waiting for queue
    /// room, split lines); unset, sized from the memory limit ([`memory`]).
    pub max_input_buffer_bytes: Option<u64>,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            admin_enabled: true,
            admin_address: ([127, 0, 0, 1], 2020).into(),
            // Long enough that no scheduling hiccup or GC-like pause of the host restarts us;
            // short next to how long a wedged pipeline would go unnoticed otherwise.
            stuck_after_secs: 60,
            // Readiness fails a little before the queue is full, so a load balancer moves
            // traffic away while the clients still get through.
            ready_queue_high_water: 0.9,
            // Kubernetes sends SIGKILL 30 s after SIGTERM by default; leave room.
            grace_period_secs: 20,
            max_queue_bytes: None,
            // Queues are most of the memory; the rest is read buffers, partial frames and the
            // runtime. A JVM's MaxRAMPercentage defaults to 25 as well.
            queue_memory_percent: 25.0,
            max_queue_events: 100_000,
            max_input_buffer_bytes: None,
            data_dir: PathBuf::from("/var/lib/outrigger"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Text,
}

/// A named source.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    Forward(Box<Forward>),
    File(file::File),
}

/// A `type = "forward"` source: the Fluentd forward protocol.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// TCP listen address, IPv4 or IPv6 (`"0.0.0.0:24224"`, `"[::]:24224"`).
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Unix socket path; a stale socket file there is removed at start.
    #[serde(default)]
    pub unix_path: Option<PathBuf>,
    /// Permissions of the Unix socket file, octal.
    #[serde(default = "Forward::default_unix_mode")]
    pub unix_mode: String,
    /// Answer Fluentd's UDP heartbeat on the TCP port.
    #[serde(default = "yes")]
    pub heartbeat_enabled: bool,
    /// Prepended to every tag with a dot: `docker` turns `web` into `docker.web`.
    #[serde(default)]
    pub tag_prefix: Option<String>,
    /// Record key that receives the client's IP address.
    #[serde(default)]
    pub source_address_key: Option<String>,
    /// Record key that receives the client's host name (reverse DNS, once per connection).
    #[serde(default)]
    pub source_hostname_key: Option<String>,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub security: Option<Security>,
    /// Largest request (one msgpack object on the wire) accepted; larger closes the connection.
    #[serde(default = "Forward::default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Largest single record; a larger entry is skipped.
    #[serde(default = "Forward::default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Largest decompressed payload of one CompressedPackedForward request.
    #[serde(default = "Forward::default_max_decompressed_bytes")]
    pub max_decompressed_bytes: usize,
    /// Deepest msgpack nesting accepted.
    #[serde(default = "Forward::default_max_depth")]
    pub max_depth: usize,
    /// Connections beyond this are closed at once.
    #[serde(default = "Forward::default_max_connections")]
    pub max_connections: usize,
    /// Close a connection that sends nothing for this long; 0 keeps idle connections open.
    #[serde(default)]
    pub idle_timeout_secs: u64,
    /// Close a connection whose request takes longer than this to arrive in full.
    #[serde(default = "Forward::default_frame_timeout_secs")]
    pub frame_timeout_secs: u64,
    /// When a request is acknowledged (see [`buffer::Ack`]); unset, what the buffer can
    /// promise: `queued` with the memory buffer, `durable` with the disk buffer. Always set
    /// once the configuration is read.
    #[serde(default)]
    pub ack: Option<buffer::Ack>,
}

impl Forward {
    fn default_unix_mode() -> String {
        "0660".into()
    }
    fn default_max_frame_bytes() -> usize {
        16 << 20
    }
    pub(crate) fn default_max_record_bytes() -> usize {
        1 << 20
    }
    pub(crate) fn default_max_decompressed_bytes() -> usize {
        // As large as the largest request: Fluent Bit's and Fluentd's chunks are a few MiB
        // before compression. Both limits size the input budget's reserve, so together
        // they cost memory on every node (see `memory::input_reserve`).
        16 << 20
    }
    pub(crate) fn default_max_depth() -> usize {
        64
    }
    fn default_max_connections() -> usize {
        4096
    }
    fn default_frame_timeout_secs() -> u64 {
        60
    }
}

fn yes() -> bool {
    true
}

/// TLS on a forward listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The forward protocol's shared-key handshake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    pub shared_key: String,
    /// Our name in the handshake. Must differ from the client's own `self_hostname`.
    #[serde(default = "Security::default_self_hostname")]
    pub self_hostname: String,
    /// When non-empty, clients must also send one of these users.
    #[serde(default)]
    pub users: Vec<User>,
}

impl Security {
    fn default_self_hostname() -> String {
        "outrigger".into()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    pub password: String,
}

/// A named sink.
#[derive(Debug, Clone)]
pub struct Sink {
    pub name: String,
    /// Fluentd-style tag patterns; an event goes to this sink when any matches.
    pub patterns: Vec<String>,
    /// Set in the sink's table or in `[global]`; `None` is sized at start from the memory
    /// limit ([`memory::default_queue_bytes`]).
    pub max_queue_bytes: Option<u64>,
    pub max_queue_events: u64,
    pub kind: SinkKind,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    /// One JSON object per line on standard output.
    Stdout,
    /// One JSON object per line appended to a file.
    File { path: PathBuf },
    /// Counts and discards; `rate_events_per_sec` makes it slow on purpose.
    Blackhole { rate_events_per_sec: Option<u64> },
    /// A network exporter, of a kind in [`sink::KINDS`].
    Export(Box<ExportSink>),
}

/// A network exporter's settings: how it paces its requests, and what builds it.
#[derive(Debug, Clone)]
pub struct ExportSink {
    /// Its `type`, as registered.
    pub kind: &'static str,
    pub delivery: settings::Delivery,
    /// The kind's own settings (with the HTTP client's, for a kind over HTTP): they build
    /// the exporter.
    pub own: Arc<dyn sink::Build>,
}

/// The sink types that are not in [`sink::KINDS`]: they write locally, with no delivery
/// loop. Listed first when a `type` is unknown.
const LOCAL_SINKS: [&str; 3] = ["stdout", "file", "blackhole"];

/// Keys every sink has, whatever its type.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SinkCommon {
    #[serde(default, rename = "match")]
    patterns: Option<OneOrMany>,
    #[serde(default)]
    max_queue_bytes: Option<u64>,
    #[serde(default)]
    max_queue_events: Option<u64>,
}
const SINK_COMMON_KEYS: [&str; 3] = ["match", "max_queue_bytes", "max_queue_events"];

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSink {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlackholeSink {
    #[serde(default)]
    rate_events_per_sec: Option<u64>,
}

/// The file as written: sections whose values still know where they stand.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    global: Option<Spanned<Table>>,
    #[serde(default)]
    enrich: Option<Spanned<Table>>,
    #[serde(default)]
    telemetry: Option<Spanned<Table>>,
    #[serde(default)]
    buffer: Option<Spanned<Table>>,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<Table>>,
    #[serde(default)]
    sinks: BTreeMap<String, Spanned<Table>>,
}

/// The keys of `table` named in `keys`, taken out of it.
fn take(table: &mut Table, keys: &[&str]) -> Table {
    keys.iter().filter_map(|k| table.remove_entry(*k)).collect()
}

/// `` `a`, `b` or `c` ``.
fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Settings, Error> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        file: name.clone(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&name, &text, |v| std::env::var(v).ok())
}

/// Parses config `text`; `file` names it in errors and `env` looks up `${VAR}`s.
pub fn parse(
    file: &str,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, Error> {
    let text = interpolate(text, env).map_err(|e| Error {
        file: file.into(),
        line: Some(e.line),
        key: None,
        message: e.message,
    })?;
    Parser {
        file,
        text: &text,
        kinds: sink::KINDS,
    }
    .settings()
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    /// The sink kinds a `type` may name: [`sink::KINDS`], or the tests' own.
    kinds: &'a [sink::Kind],
}

impl Parser<'_> {
    fn error(&self, at: Option<usize>, key: Option<String>, message: impl Into<String>) -> Error {
        let line = at.map(|at| self.text[..at.min(self.text.len())].matches('\n').count() + 1);
        Error {
            file: self.file.into(),
            line,
            key,
            message: message.into(),
        }
    }

    /// Deserializes `T` from `table` (at `span`, known as `path`), naming the failing key.
    fn typed<T: DeserializeOwned>(
        &self,
        path: &str,
        span: usize,
        table: Table,
    ) -> Result<T, Error> {
        spanned::typed(table).map_err(|e| self.located(path, span, e))
    }

    /// [`Parser::typed`] for a sink kind's own reader (see [`sink::OwnKeys`]).
    fn own<R>(
        &self,
        path: &str,
        span: usize,
        table: Table,
        read: impl FnOnce(sink::OwnKeys<'_>) -> Result<R, toml::de::Error>,
    ) -> Result<R, Error> {
        spanned::read(table, read).map_err(|e| self.located(path, span, e))
    }

    /// A typed read's error at its key, or at the table (`span`, `path`) when no key was in
    /// hand.
    fn located(&self, path: &str, span: usize, e: spanned::KeyError) -> Error {
        match e.key {
            Some((key, at)) => self.error(Some(at.start), Some(format!("{path}.{key}")), e.message),
            None => self.error(Some(span), Some(path.into()), e.message),
        }
    }

    fn settings(&self) -> Result<Settings, Error> {
        let doc: Document = toml::from_str(self.text).map_err(|e| {
            let message = e.message().to_string();
            self.error(e.span().map(|s| s.start), None, message)
        })?;
        let global = match doc.global {
            Some(g) => {
                let at = g.span().start;
                let global = self.typed("global", at, g.into_inner())?;
                self.check_global(at, &global)?;
                global
            }
            None => Global::default(),
        };
        let enrich: Enrich = match doc.enrich {
            Some(e) => {
                let at = e.span().start;
                self.typed("enrich", at, e.into_inner())?
            }
            None => Enrich::default(),
        };
        if enrich.line_key.is_empty() {
            return Err(self.error(None, Some("enrich.line_key".into()), "must not be empty"));
        }
        let telemetry: telemetry::Telemetry = match doc.telemetry {
            Some(t) => {
                let at = t.span().start;
                let t: telemetry::Telemetry = self.typed("telemetry", at, t.into_inner())?;
                if let Err((key, message)) = t.otlp.check() {
                    let key = format!("telemetry.otlp.{key}");
                    return Err(self.error(Some(at), Some(key), message));
                }
                t
            }
            None => telemetry::Telemetry::default(),
        };
        let buffer: buffer::Buffer = match doc.buffer {
            Some(b) => {
                let at = b.span().start;
                let b: buffer::Buffer = self.typed("buffer", at, b.into_inner())?;
                if let Err((key, message)) = b.check() {
                    return Err(self.error(Some(at), Some(format!("buffer.{key}")), message));
                }
                b
            }
            None => buffer::Buffer::default(),
        };
        let mut sources = Vec::new();
        for (name, table) in doc.sources {
            sources.push(self.source(name, table, &buffer)?);
        }
        let mut sinks = Vec::new();
        for (name, table) in doc.sinks {
            sinks.push(self.sink(name, table, &global)?);
        }
        if sources.is_empty() {
            return Err(self.error(None, None, "no [sources.NAME] section: nothing to receive"));
        }
        if sinks.is_empty() {
            return Err(self.error(None, None, "no [sinks.NAME] section: nowhere to send"));
        }
        Ok(Settings {
            global,
            buffer,
            shape: enrich.shape(),
            enrich: enrich.options(),
            sources,
            sinks,
            telemetry,
        })
    }

    /// Splits off and checks the `type` key of a component table.
    fn kind(&self, path: &str, at: usize, table: &mut Table) -> Result<(String, usize), Error> {
        let Some(kind) = table.remove("type") else {
            return Err(self.error(Some(at), Some(format!("{path}.type")), "missing `type`"));
        };
        let kind_at = kind.span().start;
        match kind.into_inner() {
            toml::Value::String(s) => Ok((s, kind_at)),
            other => Err(self.error(
                Some(kind_at),
                Some(format!("{path}.type")),
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn check_name(&self, section: &str, name: &str, at: usize) -> Result<String, Error> {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(self.error(
                Some(at),
                Some(format!("{section}.{name}")),
                "component names may contain only letters, digits, `_` and `-`",
            ));
        }
        Ok(format!("{section}.{name}"))
    }

    fn source(
        &self,
        name: String,
        table: Spanned<Table>,
        buffer: &buffer::Buffer,
    ) -> Result<Source, Error> {
        let at = table.span().start;
        let path = self.check_name("sources", &name, at)?;
        let mut table = table.into_inner();
        let (kind, kind_at) = self.kind(&path, at, &mut table)?;
        let kind = match kind.as_str() {
            "forward" => {
                let mut f: Forward = self.typed(&path, at, table)?;
                self.check_forward(&path, at, &f)?;
                let ack = *f.ack.get_or_insert(buffer::Ack::default_for(buffer));
                if let Err(message) = ack.check(buffer) {
                    return Err(self.error(Some(at), Some(format!("{path}.ack")), message));
                }
                SourceKind::Forward(Box::new(f))
            }
            "file" | "kubernetes_logs" => {
                let f = if kind == "file" {
                    let f: file::File = self.typed(&path, at, table)?;
                    f.check().map(|()| f)
                } else {
                    let k: file::KubernetesLogs = self.typed(&path, at, table)?;
                    let pod = std::env::var("POD_NAMESPACE")
                        .ok()
                        .zip(std::env::var("POD_NAME").ok());
                    k.file(pod, std::env::var("NODE_NAME").ok())
                };
                let f = match f {
                    Ok(f) => f,
                    Err((key, message)) => {
                        return Err(self.error(Some(at), Some(format!("{path}.{key}")), message));
                    }
                };
                let largest = crate::buffer::disk::commit::largest_payload(buffer.max_bytes);
                if buffer.is_disk() && f.largest_record() > largest {
                    return Err(self.error(
                        Some(at),
                        Some(format!("{path}.read_bytes")),
                        format!(
                            "with buffer.type = \"disk\" one read must fit in one disk buffer record: \
                             2 × (read_bytes + max_line_bytes) + 16 KiB is {} bytes, a record of \
                             buffer.max_bytes = {} holds at most {largest}; lower read_bytes and \
                             max_line_bytes or raise buffer.max_bytes",
                            f.largest_record(),
                            buffer.max_bytes
                        ),
                    ));
                }
                SourceKind::File(f)
            }
            other => {
                return Err(self.error(
                    Some(kind_at),
                    Some(format!("{path}.type")),
                    format!(
                        "unknown source type `{other}`, expected `forward`, `file` or `kubernetes_logs`"
                    ),
                ));
            }
        };
        Ok(Source { name, kind })
    }

    fn check_global(&self, at: usize, g: &Global) -> Result<(), Error> {
        let err =
            |key: &str, msg: &str| Err(self.error(Some(at), Some(format!("global.{key}")), msg));
        if g.stuck_after_secs < 5 {
            // Waiting tasks show they are scheduled once a second; leave room for late ticks.
            return err("stuck_after_secs", "must be at least 5");
        }
        if !(g.ready_queue_high_water > 0.0 && g.ready_queue_high_water <= 1.0) {
            return err("ready_queue_high_water", "must be a fraction in (0, 1]");
        }
        if !(g.queue_memory_percent > 0.0 && g.queue_memory_percent <= 100.0) {
            return err("queue_memory_percent", "must be a percentage in (0, 100]");
        }
        Ok(())
    }

    fn check_forward(&self, path: &str, at: usize, f: &Forward) -> Result<(), Error> {
        let err =
            |key: &str, msg: &str| Err(self.error(Some(at), Some(format!("{path}.{key}")), msg));
        if f.address.is_none() && f.unix_path.is_none() {
            return err(
                "address",
                "a forward source needs `address`, `unix_path`, or both",
            );
        }
        if u32::from_str_radix(&f.unix_mode, 8).map_or(true, |m| m > 0o777) {
            return err("unix_mode", "expected an octal file mode such as \"0660\"");
        }
        for (key, v) in [
            ("max_frame_bytes", f.max_frame_bytes),
            ("max_record_bytes", f.max_record_bytes),
            ("max_decompressed_bytes", f.max_decompressed_bytes),
            ("max_depth", f.max_depth),
            ("max_connections", f.max_connections),
        ] {
            if v == 0 {
                return err(key, "must be greater than 0");
            }
        }
        if f.max_depth < 3 {
            // [tag, [[time, record]]] already nests three deep.
            return err(
                "max_depth",
                "must be at least 3 to hold a Forward-mode request",
            );
        }
        if let Some(s) = &f.security
            && s.self_hostname.is_empty()
        {
            return err("security.self_hostname", "must not be empty");
        }
        Ok(())
    }

    /// A sink of a registered `kind`: splits the shared keys it takes
    /// ([`settings::HTTP_KEYS`], [`settings::DELIVERY_KEYS`]) off its table, reads them with
    /// the kind's defaults, and gives the rest to the kind's own reader.
    fn export(
        &self,
        path: &str,
        at: usize,
        kind: &sink::Kind,
        mut rest: Table,
    ) -> Result<SinkKind, Error> {
        // Without the delivery keys the table is read as empty: their own defaults.
        let delivery_keys: &[&str] = if kind.delivery_keys {
            &settings::DELIVERY_KEYS
        } else {
            &[]
        };
        let (delivery, own) = match kind.own {
            sink::Own::Http(read) => {
                let http: settings::Http =
                    self.typed(path, at, take(&mut rest, &settings::HTTP_KEYS))?;
                let pacing: settings::Pacing =
                    self.typed(path, at, take(&mut rest, delivery_keys))?;
                let client = http.resolve(kind.defaults.compression);
                (pacing, self.own(path, at, rest, |keys| read(client, keys))?)
            }
            sink::Own::Other(read) => {
                let pacing: settings::Pacing =
                    self.typed(path, at, take(&mut rest, delivery_keys))?;
                (pacing, self.own(path, at, rest, read)?)
            }
        };
        Ok(SinkKind::Export(Box::new(ExportSink {
            kind: kind.name,
            delivery: delivery.resolve(kind.defaults),
            own,
        })))
    }

    fn sink(&self, name: String, table: Spanned<Table>, global: &Global) -> Result<Sink, Error> {
        let at = table.span().start;
        let path = self.check_name("sinks", &name, at)?;
        let mut rest = table.into_inner();
        let (kind, kind_at) = self.kind(&path, at, &mut rest)?;
        let common: SinkCommon = self.typed(&path, at, take(&mut rest, &SINK_COMMON_KEYS))?;
        let kind = match kind.as_str() {
            "stdout" => {
                self.typed::<Empty>(&path, at, rest)?;
                SinkKind::Stdout
            }
            "file" => {
                let f: FileSink = self.typed(&path, at, rest)?;
                SinkKind::File { path: f.path }
            }
            "blackhole" => {
                let b: BlackholeSink = self.typed(&path, at, rest)?;
                SinkKind::Blackhole {
                    rate_events_per_sec: b.rate_events_per_sec.filter(|r| *r > 0),
                }
            }
            other => match self.kinds.iter().find(|k| k.name == other) {
                Some(k) => self.export(&path, at, k, rest)?,
                None => {
                    let names = LOCAL_SINKS
                        .into_iter()
                        .chain(self.kinds.iter().map(|k| k.name));
                    return Err(self.error(
                        Some(kind_at),
                        Some(format!("{path}.type")),
                        format!("unknown sink type `{other}`, expected {}", one_of(names)),
                    ));
                }
            },
        };
        let patterns = match common.patterns {
            None => vec!["**".to_string()],
            Some(OneOrMany::One(p)) => vec![p],
            Some(OneOrMany::Many(p)) => p,
        };
        for p in &patterns {
            if let Err(e) = crate::buffer::Pattern::parse(p) {
                return Err(self.error(Some(at), Some(format!("{path}.match")), e));
            }
        }
        let sink = Sink {
            name,
            patterns,
            max_queue_bytes: common.max_queue_bytes.or(global.max_queue_bytes),
            max_queue_events: common.max_queue_events.unwrap_or(global.max_queue_events),
            kind,
        };
        if sink.max_queue_bytes == Some(0) || sink.max_queue_events == 0 {
            return Err(self.error(
                Some(at),
                Some(format!("{path}.max_queue_bytes")),
                "queue bounds must be greater than 0",
            ));
        }
        Ok(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Settings, Error> {
        parse("test.toml", text, |v| {
            (v == "PORT").then(|| "5170".to_string())
        })
    }

    const MINIMAL: &str = "[sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:${PORT}\"\n\n[sinks.out]\ntype = \"stdout\"\n";

    #[test]
    fn default_config_is_valid() {
        let s = parse("default", DEFAULT, |_| None).unwrap();
        assert_eq!(s.sources.len(), 1);
        assert!(matches!(s.sinks[0].kind, SinkKind::Stdout));
    }

    #[test]
    fn minimal_config_with_env() {
        let s = parse_str(MINIMAL).unwrap();
        let SourceKind::Forward(f) = &s.sources[0].kind else {
            panic!("a forward source");
        };
        assert_eq!(f.address, Some("127.0.0.1:5170".parse().unwrap()));
        assert_eq!(f.max_frame_bytes, 16 << 20);
        assert_eq!(s.sinks[0].patterns, vec!["**"]);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = MINIMAL.replace("[sinks.out]", "max_frame_byte = 5\n[sinks.out]");
        let e = parse_str(&text).unwrap_err();
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key.as_deref(), Some("sources.in.max_frame_byte"));
        assert!(e.message.contains("expected one of"), "{e}");
        assert!(
            e.to_string()
                .starts_with("test.toml:5: `sources.in.max_frame_byte`"),
            "{e}"
        );
    }

    #[test]
    fn delivery_ordering_is_parsed_and_checked() {
        let loki = |extra: &str| {
            MINIMAL.replace(
                "type = \"stdout\"",
                &format!("type = \"loki\"\nendpoint = \"http://127.0.0.1:3100\"\n{extra}"),
            )
        };
        let ordering = |s: &Settings| match &s.sinks[0].kind {
            SinkKind::Export(e) => e.delivery.ordering,
            _ => panic!("a loki sink"),
        };
        assert_eq!(
            ordering(&parse_str(&loki("")).unwrap()),
            settings::Ordering::Stream
        );
        let none = parse_str(&loki("ordering = \"none\"")).unwrap();
        assert_eq!(ordering(&none), settings::Ordering::None);
        let e = parse_str(&loki("ordering = \"sorted\"")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sinks.out.ordering"), "{e}");
        assert!(e.message.contains("expected `stream` or `none`"), "{e}");
    }

    /// A kind over another transport, for the registry's tests: its own key is `topic`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Queue {
        #[allow(dead_code)]
        topic: String,
    }

    impl sink::Build for Queue {
        fn exporter(
            &self,
            _: &crate::sink::jsonl::Shape,
        ) -> anyhow::Result<Box<dyn crate::sink::export::Deliver>> {
            anyhow::bail!("not built in these tests")
        }
    }

    const QUEUE_DEFAULTS: settings::Defaults = settings::Defaults {
        max_batch_events: 10,
        max_batch_bytes: 100,
        flush_interval_ms: 5,
        compression: settings::Compression::None,
    };

    /// `MINIMAL` with its sink of type `queue` and `extra` keys, parsed with `kinds` only.
    fn parse_kinds(kinds: &[sink::Kind], extra: &str) -> Result<Settings, Error> {
        let text = MINIMAL
            .replace("${PORT}", "5170")
            .replace("type = \"stdout\"", &format!("type = \"queue\"\n{extra}"));
        let parser = Parser {
            file: "test.toml",
            text: &text,
            kinds,
        };
        parser.settings()
    }

    #[test]
    fn a_kind_without_http_takes_the_delivery_keys_alone() {
        let queue = [sink::Kind::other::<Queue>("queue", QUEUE_DEFAULTS)];
        let s = parse_kinds(&queue, "topic = \"logs\"\nmax_in_flight = 2\n").unwrap();
        let SinkKind::Export(e) = &s.sinks[0].kind else {
            panic!("an exporter")
        };
        assert_eq!(e.kind, "queue");
        assert_eq!(e.delivery.max_in_flight, 2);
        assert_eq!(e.delivery.max_batch_events, 10, "the kind's default");
        let e = parse_kinds(&queue, "topic = \"logs\"\nendpoint = \"http://x\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sinks.out.endpoint"), "{e}");
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.message.contains("expected `topic`"), "{e}");
        let e = parse_kinds(&queue, "").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sinks.out"), "{e}");
        assert!(e.message.contains("missing field `topic`"), "{e}");
    }

    #[test]
    fn a_kind_without_delivery_keys_is_paced_by_its_defaults() {
        let queue = [sink::Kind {
            delivery_keys: false,
            ..sink::Kind::other::<Queue>("queue", QUEUE_DEFAULTS)
        }];
        let s = parse_kinds(&queue, "topic = \"logs\"\n").unwrap();
        let SinkKind::Export(e) = &s.sinks[0].kind else {
            panic!("an exporter")
        };
        assert_eq!(e.delivery.max_batch_bytes, 100);
        assert_eq!(e.delivery.max_in_flight, 4, "the key's own default");
        let e = parse_kinds(&queue, "topic = \"logs\"\nmax_in_flight = 2\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sinks.out.max_in_flight"), "{e}");
    }

    #[test]
    fn unknown_sink_types_list_the_local_and_registered_ones() {
        let queue = [sink::Kind::other::<Queue>("queue", QUEUE_DEFAULTS)];
        let text = MINIMAL.replace("\"stdout\"", "\"kafka\"");
        let e = Parser {
            file: "test.toml",
            text: &text.replace("${PORT}", "5170"),
            kinds: &queue,
        }
        .settings()
        .unwrap_err();
        assert_eq!(
            e.message,
            "unknown sink type `kafka`, expected `stdout`, `file`, `blackhole` or `queue`"
        );
        let e = parse_str(&text).unwrap_err();
        assert_eq!(
            e.message,
            "unknown sink type `kafka`, expected `stdout`, `file`, `blackhole`, `http`, `loki`, `elasticsearch` or `otlp`"
        );
    }

    #[test]
    fn wrong_type_names_key_and_expectation() {
        let text = MINIMAL.replace("[sinks.out]", "max_connections = \"many\"\n[sinks.out]");
        let e = parse_str(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sources.in.max_connections"));
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("expected usize"), "{e}");
    }

    #[test]
    fn unknown_type_and_bad_values() {
        let e = parse_str(&MINIMAL.replace("\"stdout\"", "\"kafka\"")).unwrap_err();
        assert!(e.message.contains("unknown sink type `kafka`"), "{e}");
        assert_eq!(e.line, Some(6));
        let e = parse_str(&MINIMAL.replace("127.0.0.1:${PORT}", "nowhere")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sources.in.address"));
        let e = parse_str(&format!("{MINIMAL}match = \"a.{{b\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sinks.out.match"));
        let e = parse_str("[global]\nlog_format = \"xml\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("global.log_format"));
    }

    #[test]
    fn queue_bytes_explicit_global_or_left_to_memory_sizing() {
        let s = parse_str(MINIMAL).unwrap();
        assert_eq!(s.sinks[0].max_queue_bytes, None, "sized at start");
        let s = parse_str(&format!("[global]\nmax_queue_bytes = 1000\n{MINIMAL}")).unwrap();
        assert_eq!(s.sinks[0].max_queue_bytes, Some(1000));
        let s = parse_str(&format!(
            "[global]\nmax_queue_bytes = 1000\n{MINIMAL}max_queue_bytes = 7\n"
        ))
        .unwrap();
        assert_eq!(s.sinks[0].max_queue_bytes, Some(7), "the sink's own wins");
        for (key, value) in [
            ("stuck_after_secs", "0"),
            ("ready_queue_high_water", "1.5"),
            ("queue_memory_percent", "0.0"),
        ] {
            let e = parse_str(&format!("[global]\n{key} = {value}\n{MINIMAL}")).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(&*format!("global.{key}")), "{e}");
        }
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = parse_str("[sources.in\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = parse_str("[bogus]\n").unwrap_err();
        assert!(e.message.contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn the_disk_buffer_makes_acks_durable_and_refuses_what_it_cannot_promise() {
        let with = |buffer: &str, ack: &str| {
            parse_str(&format!(
                "{buffer}\n[sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n{ack}\n\
                 [sinks.out]\ntype = \"stdout\"\n"
            ))
        };
        let ack = |s: &Settings| match &s.sources[0].kind {
            SourceKind::Forward(f) => f.ack,
            SourceKind::File(_) => None,
        };
        let memory = with("", "").unwrap();
        assert!(!memory.buffer.is_disk());
        assert_eq!(ack(&memory), Some(buffer::Ack::Queued));
        let disk = "[buffer]\ntype = \"disk\"\nmax_bytes = 1048576\nfsync = \"interval\"";
        let d = with(disk, "").unwrap();
        assert!(d.buffer.is_disk());
        assert_eq!(d.buffer.fsync, buffer::FsyncMode::Interval);
        assert_eq!(d.buffer.segment_bytes(), 128 << 10);
        assert_eq!(ack(&d), Some(buffer::Ack::Durable));
        assert_eq!(
            ack(&with(disk, "ack = \"delivered\"").unwrap()),
            Some(buffer::Ack::Delivered)
        );
        let e = with(disk, "ack = \"queued\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sources.in.ack"));
        let e = with("", "ack = \"durable\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sources.in.ack"));
        assert!(e.message.contains("buffer.type"), "{}", e.message);
        let e = with("[buffer]\ntype = \"disk\"\nmax_bytes = 1000", "").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("buffer.max_bytes"));
        assert_eq!(e.line, Some(1));
        let e = with("[buffer]\ntype = \"tape\"", "").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("buffer.type"), "{e}");
    }

    #[test]
    fn a_file_source_on_the_disk_buffer_must_fit_a_read_in_one_record() {
        let with = |max_bytes: u64, read: &str| {
            parse_str(&format!(
                "[buffer]\ntype = \"disk\"\nmax_bytes = {max_bytes}\n\
                 [sources.pods]\ntype = \"kubernetes_logs\"\nmetadata = \"none\"\n{read}\n\
                 [sinks.out]\ntype = \"stdout\"\n"
            ))
        };
        // The defaults (256 KiB reads and lines) fit the default 1 GiB log.
        assert!(with(1 << 30, "").is_ok());
        let e = with(1 << 20, "").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("sources.pods.read_bytes"));
        assert!(e.message.contains("buffer.max_bytes"), "{}", e.message);
        assert!(with(1 << 20, "read_bytes = 65536\nmax_line_bytes = 65536").is_ok());
    }

    #[test]
    fn sources_and_sinks_are_required() {
        assert!(parse_str("[sinks.out]\ntype = \"stdout\"\n").is_err());
        let no_listener = "[sources.in]\ntype = \"forward\"\n[sinks.out]\ntype = \"stdout\"\n";
        assert!(
            parse_str(no_listener)
                .unwrap_err()
                .message
                .contains("unix_path")
        );
    }

    #[test]
    fn enrich_section_with_custom_trace_families() {
        let text = format!(
            "{MINIMAL}\n[enrich]\nline_key = \"message\"\nmerge = \"nested\"\n\
             [[enrich.trace]]\nname = \"mine\"\ntrace = [\"req.trace\"]\nspan = [\"req.span\"]\nformat = \"hex\"\n\
             [enrich.partial]\ntimeout_ms = 100\n[enrich.multiline]\nenabled = true\n"
        );
        let s = parse_str(&text).unwrap();
        assert_eq!(s.enrich.line_key, "message");
        assert_eq!(
            s.enrich.trace.len(),
            1,
            "a configured list replaces the defaults"
        );
        assert_eq!(s.enrich.trace[0].trace, ["req.trace"]);
        assert_eq!(
            s.enrich.partial.timeout,
            std::time::Duration::from_millis(100)
        );
        assert!(s.enrich.multiline.is_some());
        assert_eq!(s.shape.nest_key.as_deref(), Some(&b"json"[..]));
        // Defaults: the built-in families, no multiline.
        let d = parse_str(MINIMAL).unwrap();
        assert!(d.enrich.trace.len() > 10);
        assert!(d.enrich.multiline.is_none());
    }

    #[test]
    fn enrich_errors_name_the_key() {
        let e = parse_str(&format!("{MINIMAL}\n[enrich]\nmerge = \"sideways\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("enrich.merge"));
        assert_eq!(e.line, Some(9));
        let e = parse_str(&format!(
            "{MINIMAL}\n[[enrich.trace]]\nname = \"x\"\ntrace = [\"t\"]\nformat = \"base64\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("enrich.trace"));
        assert!(e.message.contains("base64"), "{e}");
        let e = parse_str(&format!("{MINIMAL}\n[enrich.partial]\ntimeout = 5\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("enrich.partial"));
        assert!(e.message.contains("unknown field `timeout`"), "{e}");
    }

    #[test]
    fn every_example_config_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Examples must run as they are: every variable they use has a default.
                parse(&path.display().to_string(), &text, |_| None)
                    .unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 3, "expected the example configs, found {n}");
    }
}
