//! The `elasticsearch` sink: events as documents in Elasticsearch (7.x, 8.x, 9.x) or
//! OpenSearch (1.x–3.x), through the bulk API
//! (<https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk>,
//! <https://docs.opensearch.org/latest/api-reference/document-apis/bulk/>).
//!
//! # Requests
//!
//! One `POST /_bulk?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason`
//! (plus `&pipeline=…` when configured) per batch, `Content-Type: application/x-ndjson`,
//! gzip unless `compression = "none"`. Per event an action line and the document, each ending
//! with `\n`:
//!
//! ```text
//! {"create":{"_index":"logs-outrigger-default","_id":"Yk3…"}}
//! {"@timestamp":"2023-11-14T22:13:20.000000001Z","message":"hello",…}
//! ```
//!
//! `action = "create"` (the default) is the only one data streams take; `"index"` suits
//! classic indices. `index` is a name template: `%Y`, `%m`, `%d` and `%H` become the event's
//! UTC year, month, day and hour (`app-%Y.%m.%d`), `%%` is `%`; the name is checked against
//! Elasticsearch's rules when the config is read. With `id = "hash"` each document gets a
//! deterministic `_id` (SHA-256 of tag, time and record, 16 bytes, base64url), so a request
//! that is retried after it was stored (a timeout) does not store its documents twice: with
//! `create` the copies come back as 409, counted as stored. Identical records with the same tag
//! and timestamp then become one document: fine with Docker's nanosecond times, lossy for
//! clients that send whole seconds, which is why it is off by default (own IDs also cost
//! indexing speed). `filter_path` keeps the response to a few bytes per item.
//!
//! `api_version` (`"auto"`, `7`, `8`, `9` or `"opensearch"`) changes nothing on the wire:
//! no mapping type is ever sent and the `_bulk` format above is the same for all of them, so
//! `"auto"` detects nothing and needs nothing detected. `"opensearch"` only adds start-time
//! checks (OpenSearch has no API keys). OpenSearch has no built-in `logs-*-*` data stream
//! template: without an index template of your own, the default index is created as a plain
//! index on first write.
//!
//! # Documents (`mapping = "ecs"`, the default)
//!
//! Elastic Common Schema names, written as dotted keys (`"trace.id":…`), which both servers
//! expand into objects; a key is written once, the first of these sources to have it winning:
//!
//! | field | from |
//! |---|---|
//! | `@timestamp` | the event time, RFC 3339 UTC with nanoseconds (an `@timestamp` of the application's is dropped: use `[enrich] time_key = "@timestamp"` to make it the event time) |
//! | `message` | a text line; for a JSON line, the application's `message` as written, else its message field (`msg`, `@m`… per `message_keys`) renamed `message`; none when the line has neither; for a record without a line (an application's own fields, from a fluent-logger library) its message field, likewise renamed |
//! | `log.level` | the level as the application wrote it, or the severity's name (`INFO`, `WARN`…) |
//! | `log.iostream` | `stdout` / `stderr` (Docker's `source`) |
//! | `log.flags` | `["truncated"]` for a long line or stack trace that could not be completed |
//! | `trace.id`, `span.id` | the trace context found in the line, lowercase hex |
//! | `container.id`, `container.name` | Docker's fields, or the ID in a Kubernetes log file name |
//! | `kubernetes.pod.name`, `kubernetes.namespace`, `kubernetes.container.name`, `orchestrator.type` | from a `/var/log/containers/…` tag |
//! | `fluent.tag` | the forward tag |
//! | `data_stream.type`, `.dataset`, `.namespace` | the parts of a fixed `index` named `logs-<dataset>-<namespace>` |
//! | the application's fields | a JSON line's members, spliced as written (under `nest_key` with `[enrich] merge = "nested"`) |
//! | `[enrich.resource]` | static attributes; OpenTelemetry names with an ECS equivalent are renamed (`k8s.node.name` → `kubernetes.node.name`, `k8s.cluster.name` → `orchestrator.cluster.name`…) |
//! | other record fields | at the top level, as the record has them (Docker labels and env, a shipper's fields) |
//! | source fields | `source_address_key` and the like |
//! | `event.original` | the JSON line's text, with `[enrich] keep_line = true` |
//! | `log.sequence` (`sequence_key`) | last: the event's sending time in nanoseconds, increasing along its stream ([`super::order`]); left out when the document already has the key or a field its path would make an object (`log`) |
//!
//! No `event.*` field is written by default because many loggers (structlog) write a string
//! `event`, and an object and a string under one name are a permanent mapping conflict: that
//! is also why the sequence is not ECS's `event.sequence` unless configured so.
//!
//! `mapping = "raw"` writes the `stdout` sink's JSON shape with `@timestamp` in front.
//!
//! # Responses
//!
//! | response | verdict |
//! |---|---|
//! | 2xx, `"errors":false` | delivered (items not parsed) |
//! | 2xx, `"errors":true` | per item: 2xx, and 409 with `create`, stored; 408, 429, 5xx resent alone; other statuses dead-lettered with their error type and reason |
//! | 2xx without `errors` | refused: not a bulk response (a proxy, a wrong path) |
//! | 408, 429, 5xx but 501, no answer | the whole request retried (`Retry-After` honoured) |
//! | 413 | split in halves, sent one after the other, down to single documents (a half that fails as a whole is retried with the halves after it, unsent); a single document refused with 413 is dead-lettered |
//! | other statuses (400, 401, 403, 404, 501…) | refused with the start of the body |

use std::time::Duration;

use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::client::Client;
use super::export::Ref;
use super::jsonl::{self, Shape};
use super::order::Gate;
use super::retry::{Verdict, retry_after};
use crate::config::export::{Auth, Compression, Defaults, HttpClient};
use crate::event::Timestamp;
use crate::msgpack::{self, Cursor};

/// The `elasticsearch` sink's own keys (besides the shared delivery keys).
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
    fn default_sequence_key() -> String {
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
enum VersionValue {
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

const DEFAULT_INDEX: &str = "logs-outrigger-default";

/// Only what the classification reads: the status, and the error of a failed item.
const FILTER_PATH: &str =
    "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// The exporter.
#[derive(Debug)]
pub struct Exporter {
    client: Client,
    /// `/_bulk?…`
    path: String,
    action: Action,
    index: IndexTemplate,
    hash_ids: bool,
    mapping: Mapping,
    shape: Shape,
    /// `,"data_stream.type":"logs",…` when the index is a fixed data stream name; else empty.
    data_stream: Vec<u8>,
    /// `sequence_key`, as bytes; empty for none.
    sequence_key: Vec<u8>,
    /// `,"log.sequence":`
    sequence_head: Vec<u8>,
}

impl Exporter {
    /// Builds the exporter (client, TLS material, templates).
    ///
    /// # Errors
    /// Invalid settings or TLS files.
    pub fn try_new(
        client: &HttpClient,
        config: &Config,
        shape: &Shape,
    ) -> anyhow::Result<Exporter> {
        if config.api_version == ApiVersion::OpenSearch
            && matches!(client.auth, Some(Auth::ApiKey { .. }))
        {
            anyhow::bail!(
                "OpenSearch has no API keys: use `auth = {{ basic = … }}` or `{{ bearer = … }}`"
            );
        }
        let nest_key = shape.nest_key.as_deref().unwrap_or_default();
        if config.mapping == Mapping::Ecs && (nest_key == b"@timestamp" || nest_key == b"message") {
            anyhow::bail!(
                "[enrich] nest_key `{}` is a field of the Elasticsearch document; pick another",
                String::from_utf8_lossy(nest_key)
            );
        }
        let mut path = format!("/_bulk?{FILTER_PATH}");
        if let Some(p) = &config.pipeline {
            if p.is_empty() {
                anyhow::bail!("`pipeline` must not be empty");
            }
            path.push_str("&pipeline=");
            percent_encode(&mut path, p);
        }
        let mut data_stream = data_stream_fields(&config.index);
        if config.action == Action::Index && !data_stream.is_empty() {
            tracing::warn!(
                index = config.index.fixed(),
                "the index is named like a data stream, and data streams only take action = \"create\": every document will be refused if it is one"
            );
        }
        if config.mapping == Mapping::Raw {
            data_stream.clear();
        }
        Ok(Exporter {
            client: Client::try_new(client)?,
            path,
            action: config.action,
            index: config.index.clone(),
            hash_ids: config.id == IdMode::Hash,
            mapping: config.mapping,
            shape: shape.clone(),
            data_stream,
            sequence_key: config.sequence_key.clone().into_bytes(),
            sequence_head: {
                let mut head = b",".to_vec();
                jsonl::string(&mut head, config.sequence_key.as_bytes());
                head.push(b':');
                head
            },
        })
    }

    /// Sends `events` as one bulk request and says what became of them (a 413 is
    /// [`Verdict::TooLarge`]: the delivery loop sends the halves).
    pub async fn attempt(&self, events: &[Ref<'_>], gate: &Gate) -> Verdict {
        match self.send(events, gate).await {
            Sent::Done(o) => o.into_verdict(events.len()),
            Sent::TooLarge(reason) => Verdict::TooLarge { reason },
        }
    }

    /// One request with `events`; the outcome's indices are into `events`.
    async fn send(&self, events: &[Ref<'_>], gate: &Gate) -> Sent {
        let mut body = Vec::with_capacity(events.len() * 768);
        let mut enc = Encoder::default();
        // Indices of the events that made it into the body, in item order.
        let mut sent = Vec::with_capacity(events.len());
        let mut outcome = Outcome::default();
        for (i, r) in events.iter().enumerate() {
            match self.write(&mut body, &mut enc, *r) {
                Ok(()) => sent.push(i),
                Err(e) => outcome
                    .rejected
                    .push((i, format!("record is not valid MessagePack: {e}"))),
            }
        }
        if sent.is_empty() {
            return Sent::Done(outcome);
        }
        let headers = [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )];
        gate.open().await;
        let answer = match self.client.post(&self.path, &headers, body, true).await {
            Ok(resp) => {
                let after = resp
                    .headers
                    .get(hyper::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry_after);
                classify(
                    resp.status.as_u16(),
                    after,
                    &resp.body,
                    sent.len(),
                    self.action,
                )
            }
            Err(e) => match e.verdict() {
                Verdict::Retry { reason, after } => Answer::Retry { reason, after },
                _ => Answer::Rejected(e.to_string()),
            },
        };
        match answer {
            Answer::Stored => {}
            Answer::TooLarge(reason) => return Sent::TooLarge(reason),
            Answer::Retry { reason, after } => {
                outcome.retry.extend_from_slice(&sent);
                outcome.retry_reason = Some(reason);
                outcome.after = after;
            }
            Answer::Rejected(reason) => outcome
                .rejected
                .extend(sent.iter().map(|i| (*i, reason.clone()))),
            Answer::Items { retry, rejected } => {
                outcome.retry.extend(retry.iter().map(|i| sent[*i]));
                outcome
                    .rejected
                    .extend(rejected.into_iter().map(|(i, r)| (sent[i], r)));
            }
        }
        Sent::Done(outcome)
    }

    /// The `_bulk` body for `events` as [`Exporter::attempt`] builds it, before the HTTP
    /// client gzips it (`compression`); events whose record is not valid MessagePack are left
    /// out. Public for `benches/encode.rs`.
    pub fn encode(&self, events: &[Ref<'_>]) -> Vec<u8> {
        let mut body = Vec::with_capacity(events.len() * 768);
        let mut enc = Encoder::default();
        for r in events {
            let _ = self.write(&mut body, &mut enc, *r);
        }
        body
    }

    /// Appends one event's action line and document; on error `body` is as it was.
    fn write(
        &self,
        body: &mut Vec<u8>,
        enc: &mut Encoder,
        r: Ref<'_>,
    ) -> Result<(), msgpack::Error> {
        let start = body.len();
        enc.action_line(body, self.action, &self.index, r, self.hash_ids);
        let doc = body.len();
        let written = match self.mapping {
            Mapping::Ecs => enc.ecs(body, r, &self.shape, &self.data_stream),
            Mapping::Raw => enc.raw(body, r, &self.shape),
        };
        if let Err(e) = written {
            body.truncate(start);
            return Err(e);
        }
        if !self.sequence_key.is_empty() && enc.key_free(&self.sequence_key) {
            // `…}` → `…,"log.sequence":1700000000000000001}`
            body.pop();
            body.extend_from_slice(&self.sequence_head);
            body.extend_from_slice(itoa::Buffer::new().format(sequence(r.time)).as_bytes());
            body.push(b'}');
        }
        // A JSON line is spliced as written, and JSON may have line breaks between its tokens
        // (a pretty-printed object that multi-line joining put together). Everything else is
        // escaped, so any raw line break here is such whitespace: make it a space, or it would
        // cut the NDJSON document in two.
        let mut at = doc;
        while let Some(i) = memchr::memchr2(b'\n', b'\r', &body[at..]) {
            body[at + i] = b' ';
            at += i + 1;
        }
        body.push(b'\n');
        Ok(())
    }
}

/// The sequence number of an event sent at `t`: its nanoseconds since the epoch, unique and
/// increasing within its stream (see [`super::order`]).
fn sequence(t: Timestamp) -> i64 {
    t.secs
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.nanos))
        .max(0)
}

/// `value` with everything but unreserved characters percent-encoded, for a query string.
fn percent_encode(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

// === index names ===

/// An index name template, checked when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IndexTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Year,
    Month,
    Day,
    Hour,
}

impl Default for IndexTemplate {
    fn default() -> Self {
        IndexTemplate::try_from(DEFAULT_INDEX.to_string()).expect("the default index is valid")
    }
}

impl TryFrom<String> for IndexTemplate {
    type Error = String;

    /// Parses `%` patterns and applies Elasticsearch's index name rules (lowercase; none of
    /// `\ / * ? " < > | , # :`, space or control characters; not starting with `-`, `_`, `+`
    /// or `.`; at most 255 bytes).
    fn try_from(text: String) -> Result<IndexTemplate, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut len = 0;
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some('Y') => (Part::Year, 4),
                Some('m') => (Part::Month, 2),
                Some('d') => (Part::Day, 2),
                Some('H') => (Part::Hour, 2),
                Some(other) => {
                    return Err(format!(
                        "index `{text}`: unknown pattern `%{other}`, expected %Y, %m, %d, %H or %%"
                    ));
                }
                None => return Err(format!("index `{text}`: `%` at the end")),
            };
            if !lit.is_empty() {
                len += lit.len();
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            len += part.1;
            parts.push(part.0);
        }
        if !lit.is_empty() {
            len += lit.len();
            parts.push(Part::Text(lit));
        }
        let literal: String = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                _ => "0",
            })
            .collect();
        let bad = |why: &str| Err(format!("index `{text}`: {why}"));
        if literal.is_empty() {
            return bad("must not be empty");
        }
        if len > 255 {
            return bad("longer than 255 bytes");
        }
        if literal.starts_with(['-', '_', '+', '.']) {
            return bad("must not start with `-`, `_`, `+` or `.`");
        }
        if literal.chars().any(char::is_uppercase) {
            return bad("must be lowercase");
        }
        if let Some(c) = literal.chars().find(|c| {
            matches!(
                c,
                '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ',' | '#' | ':' | ' '
            ) || c.is_control()
        }) {
            return bad(&format!("must not contain {c:?}"));
        }
        Ok(IndexTemplate { parts })
    }
}

impl IndexTemplate {
    /// The name when it has no date patterns.
    fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// How many seconds one rendered name lasts: an hour with `%H`, a day with only dates.
    fn period(&self) -> i64 {
        if self.parts.contains(&Part::Hour) {
            3600
        } else if self.parts.iter().any(|p| !matches!(p, Part::Text(_))) {
            86_400
        } else {
            i64::MAX
        }
    }

    /// Appends the name for an event at `secs` (UTC).
    fn render(&self, out: &mut Vec<u8>, secs: i64) {
        let mut stamp = Vec::with_capacity(32);
        jsonl::TimeCache::default().write(&mut stamp, Timestamp { secs, nanos: 0 });
        // RFC 3339: YYYY-MM-DDTHH…
        for p in &self.parts {
            out.extend_from_slice(match p {
                Part::Text(t) => t.as_bytes(),
                Part::Year => &stamp[0..4],
                Part::Month => &stamp[5..7],
                Part::Day => &stamp[8..10],
                Part::Hour => &stamp[11..13],
            });
        }
    }
}

/// `,"data_stream.type":"logs","data_stream.dataset":…,"data_stream.namespace":…` when
/// `index` is a fixed name in the `logs-<dataset>-<namespace>` scheme: the built-in template
/// maps these as `constant_keyword`, and ECS wants them to match the name. Empty otherwise.
fn data_stream_fields(index: &IndexTemplate) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(name) = index.fixed() else {
        return out;
    };
    let parts: Vec<&str> = name.split('-').collect();
    let ["logs", dataset, namespace] = parts.as_slice() else {
        return out;
    };
    if !dataset.is_empty() && !namespace.is_empty() {
        for (k, v) in [
            ("data_stream.type", "logs"),
            ("data_stream.dataset", dataset),
            ("data_stream.namespace", namespace),
        ] {
            out.push(b',');
            jsonl::string(&mut out, k.as_bytes());
            out.push(b':');
            jsonl::string(&mut out, v.as_bytes());
        }
    }
    out
}

// === documents ===

/// Encoding state of one request, reused from event to event.
#[derive(Default)]
struct Encoder {
    times: jsonl::TimeCache,
    /// The action line up to the index name's closing quote, for names from `start` on.
    action: Option<(i64, Vec<u8>)>,
    members: Vec<Member>,
    seen: Seen,
    scratch: Vec<u8>,
}

/// Top-level keys already in the document: Elasticsearch refuses a document that has one key
/// twice (`json_parse_exception`), so each source of fields skips what an earlier one wrote.
/// Documents have a few dozen keys, so a list beats hashing.
#[derive(Default)]
struct Seen {
    arena: Vec<u8>,
    ends: Vec<usize>,
}

impl Seen {
    fn clear(&mut self) {
        self.arena.clear();
        self.ends.clear();
    }

    fn contains(&self, key: &[u8]) -> bool {
        let mut start = 0;
        self.ends.iter().any(|&end| {
            let hit = &self.arena[start..end] == key;
            start = end;
            hit
        })
    }

    /// Whether some key satisfies `f`.
    fn any(&self, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        let mut start = 0;
        self.ends.iter().any(|&end| {
            let hit = f(&self.arena[start..end]);
            start = end;
            hit
        })
    }

    fn insert(&mut self, key: &[u8]) {
        self.arena.extend_from_slice(key);
        self.ends.push(self.arena.len());
    }
}

/// One member of a JSON object, as ranges of its text: the key between its quotes (still
/// escaped), and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

/// What the log line contributes to the document.
#[derive(Clone, Copy)]
enum Line<'a> {
    None,
    Text(&'a [u8]),
    /// A JSON object kept whole under the nest key.
    Nested(&'a [u8]),
    /// A JSON object whose members are in [`Encoder::members`].
    Top(&'a [u8]),
}

impl Encoder {
    fn action_line(
        &mut self,
        out: &mut Vec<u8>,
        action: Action,
        index: &IndexTemplate,
        r: Ref<'_>,
        hash_ids: bool,
    ) {
        let period = index.period();
        let start = r.event.time.secs.div_euclid(period);
        if self.action.as_ref().is_none_or(|(s, _)| *s != start) {
            let mut line = Vec::with_capacity(64);
            line.extend_from_slice(match action {
                Action::Create => b"{\"create\":{\"_index\":\"",
                Action::Index => b"{\"index\":{\"_index\":\"",
            });
            index.render(&mut line, r.event.time.secs);
            line.push(b'"');
            self.action = Some((start, line));
        }
        if let Some((_, line)) = &self.action {
            out.extend_from_slice(line);
        }
        if hash_ids {
            out.extend_from_slice(b",\"_id\":\"");
            out.extend_from_slice(&doc_id(r));
            out.push(b'"');
        }
        out.extend_from_slice(b"}}\n");
    }

    /// The `stdout` shape with `@timestamp` in front.
    fn raw(&mut self, out: &mut Vec<u8>, r: Ref<'_>, shape: &Shape) -> Result<(), msgpack::Error> {
        self.seen.clear();
        out.extend_from_slice(b"{\"@timestamp\":\"");
        self.times.write(out, r.event.time);
        out.push(b'"');
        let at = out.len();
        jsonl::event(out, &mut self.times, r.batch, r.event, shape)?;
        // `{"@timestamp":"…"` + `{"tag":…}` → `{"@timestamp":"…","tag":…}`
        out[at] = b',';
        Ok(())
    }

    /// Whether the document just written has no field `key` and no field that `key`'s
    /// dotted path would turn into an object (`log` for `log.sequence`). The raw mapping
    /// writes only its own top-level keys, none of them dotted.
    fn key_free(&self, key: &[u8]) -> bool {
        // One pass over the keys written: `key` itself, or a key that is one of its dotted
        // prefixes.
        !self.seen.any(|k| {
            k.len() <= key.len()
                && k.first() == key.first()
                && key.starts_with(k)
                && (k.len() == key.len() || key[k.len()] == b'.')
        })
    }

    /// Writes `,"key":` unless `key` is already in the document; says whether it wrote.
    fn key(&mut self, out: &mut Vec<u8>, key: &[u8]) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        self.seen.insert(key);
        out.push(b',');
        jsonl::string(out, key);
        out.push(b':');
        true
    }

    /// `,"key":` for one of Outrigger's own keys, which come first and are all different, so
    /// need no check.
    fn own_key(&mut self, out: &mut Vec<u8>, key: &'static [u8]) {
        self.seen.insert(key);
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
    }

    /// `,"key":"value"` for one of Outrigger's own keys.
    fn own(&mut self, out: &mut Vec<u8>, key: &'static [u8], value: &[u8]) {
        self.own_key(out, key);
        jsonl::string(out, value);
    }

    /// `,"key":"value"`, unless `key` is already in the document.
    fn pair(&mut self, out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        if self.key(out, key) {
            jsonl::string(out, value);
        }
    }

    /// The ECS document (see the module documentation for the fields and their order).
    fn ecs(
        &mut self,
        out: &mut Vec<u8>,
        r: Ref<'_>,
        shape: &Shape,
        data_stream: &[u8],
    ) -> Result<(), msgpack::Error> {
        let (batch, e) = (r.batch, r.event);
        let m = &e.meta;
        self.seen.clear();
        out.extend_from_slice(b"{\"@timestamp\":\"");
        self.times.write(out, e.time);
        out.push(b'"');
        self.seen.insert(b"@timestamp");

        let line = match m.line.map(|s| e.slice(s)) {
            None => Line::None,
            Some(l) if !m.json => Line::Text(l),
            Some(l) if shape.nest_key.is_some() => Line::Nested(l.trim_ascii()),
            Some(l) => {
                let obj = l.trim_ascii();
                if members(obj, &mut self.members) {
                    Line::Top(obj)
                } else {
                    // Cannot happen for a line the pipeline parsed; if it does, keep the text.
                    Line::Text(l)
                }
            }
        };

        // The member of a top-level JSON line that became `message`.
        let mut renamed = None;
        // Where the value of the record field that became `message` starts, for a record
        // that carries the application's fields itself.
        let mut renamed_field = None;
        match line {
            Line::None => {
                if let Some(s) = m.message.filter(|_| m.message_in_record) {
                    self.own(out, b"message", e.slice(s));
                    renamed_field = Some(s.start as usize);
                }
            }
            Line::Text(t) => self.own(out, b"message", t),
            Line::Nested(_) => {
                if let Some(s) = m.message {
                    self.own_key(out, b"message");
                    out.extend_from_slice(e.slice(s));
                }
            }
            Line::Top(obj) => {
                let has_message = self
                    .members
                    .iter()
                    .any(|mb| &obj[mb.key.clone()] == b"message");
                if let Some(s) = m.message.filter(|_| !has_message) {
                    let base = obj.as_ptr() as usize - e.record.as_ptr() as usize;
                    renamed = self.members.iter().position(|mb| {
                        mb.value.start + base == s.start as usize
                            && mb.value.len() == s.len as usize
                    });
                    self.own_key(out, b"message");
                    out.extend_from_slice(e.slice(s));
                }
            }
        }

        if m.severity > 0 {
            match m.severity_text {
                Some(s) => self.own(out, b"log.level", e.slice(s)),
                None => self.own(out, b"log.level", level_name(m.severity).as_bytes()),
            }
        }
        if let Some(s) = m.stream {
            self.own(out, b"log.iostream", e.slice(s));
        }
        if m.incomplete {
            self.own_key(out, b"log.flags");
            out.extend_from_slice(b"[\"truncated\"]");
        }
        if let Some(t) = m.trace_id {
            let mut buf = [0u8; 32];
            self.own(out, b"trace.id", hex_str(&t, &mut buf));
            if let Some(s) = m.span_id {
                self.own(out, b"span.id", hex_str(&s, &mut buf));
            }
        }
        let tag = batch.tag(e);
        let k8s = batch.k8s.get(e.tag as usize).copied().flatten();
        let in_tag = |s: crate::event::Span| &tag[s.start as usize..(s.start + s.len) as usize];
        if let Some(s) = m.container_id {
            self.own(out, b"container.id", e.slice(s));
        } else if let Some(k) = k8s {
            self.own(out, b"container.id", in_tag(k.container_id));
        }
        if let Some(s) = m.container_name {
            self.own(out, b"container.name", e.slice(s));
        }
        if let Some(k) = k8s {
            self.own(out, b"kubernetes.pod.name", in_tag(k.pod));
            self.own(out, b"kubernetes.namespace", in_tag(k.namespace));
            self.own(out, b"kubernetes.container.name", in_tag(k.container));
            self.own(out, b"orchestrator.type", b"kubernetes");
        }
        self.own(out, b"fluent.tag", tag);
        if !data_stream.is_empty() {
            out.extend_from_slice(data_stream);
            for k in [
                "data_stream.type",
                "data_stream.dataset",
                "data_stream.namespace",
            ] {
                self.seen.insert(k.as_bytes());
            }
        }

        // The application's fields.
        match line {
            Line::Nested(obj) => {
                let key = shape.nest_key.as_deref().unwrap_or_default();
                if self.key(out, key) {
                    out.extend_from_slice(obj);
                }
            }
            Line::Top(obj) => {
                for i in 0..self.members.len() {
                    if Some(i) == renamed {
                        continue;
                    }
                    let Member { key, value } = self.members[i].clone();
                    let raw = &obj[key.clone()];
                    if raw == b"@timestamp" {
                        continue;
                    }
                    let fresh = if raw.contains(&b'\\') {
                        unescape(&obj[key.start - 1..key.end + 1], &mut self.scratch)
                            && !self.seen.contains(&self.scratch)
                            && {
                                let k = std::mem::take(&mut self.scratch);
                                self.seen.insert(&k);
                                self.scratch = k;
                                true
                            }
                    } else if self.seen.contains(raw) {
                        false
                    } else {
                        self.seen.insert(raw);
                        true
                    };
                    if fresh {
                        out.push(b',');
                        out.extend_from_slice(&obj[key.start - 1..value.end]);
                    }
                }
            }
            Line::None | Line::Text(_) => {}
        }

        for (k, v) in batch.resource.iter() {
            self.pair(out, ecs_name(k), v);
        }

        // The rest of the record.
        let skip = |k: &[u8]| match k {
            b"container_id" => m.container_id.is_some(),
            b"container_name" => m.container_name.is_some(),
            b"source" => m.stream.is_some(),
            k => m.line.is_some() && k == shape.line_key.as_slice(),
        };
        let mut c = Cursor::new(&e.record);
        let (h, _) = c.read()?;
        if h.kind != msgpack::Kind::Map {
            return Err(msgpack::Error::Truncated);
        }
        for _ in 0..h.children / 2 {
            let key = match c.bytes()? {
                Some(k) if skip(k) || renamed_field == Some(value_start(&c)?) => {
                    c.skip()?;
                    continue;
                }
                Some(k) => k,
                None => {
                    // A non-string key: its JSON text becomes the key.
                    self.scratch.clear();
                    jsonl::value(&mut self.scratch, &mut c, 1)?;
                    let k = std::mem::take(&mut self.scratch);
                    let fresh = self.key(out, &k);
                    self.scratch = k;
                    if fresh {
                        jsonl::value(out, &mut c, 1)?;
                    } else {
                        c.skip()?;
                    }
                    continue;
                }
            };
            if self.key(out, key) {
                jsonl::value(out, &mut c, 1)?;
            } else {
                c.skip()?;
            }
        }
        for (k, v) in batch.fields.iter() {
            self.pair(out, k, v);
        }
        if let (Line::Top(obj) | Line::Nested(obj), true) = (line, shape.keep_line) {
            self.pair(out, b"event.original", obj);
        }
        out.push(b'}');
        Ok(())
    }
}

/// Where the payload of the value at `c` starts (after its header).
fn value_start(c: &Cursor<'_>) -> Result<usize, msgpack::Error> {
    Ok(c.pos() + c.peek()?.head_len)
}

/// `bytes` as lowercase hex, in `buf`.
fn hex_str<'a>(bytes: &[u8], buf: &'a mut [u8; 32]) -> &'a [u8] {
    let out = &mut buf[..bytes.len() * 2];
    hex::encode_to_slice(bytes, out).expect("buffer sized for 16 bytes");
    out
}

/// The severity's OpenTelemetry short name without its step digit (`WARN2` → `WARN`): a
/// level name that Kibana and people recognise.
fn level_name(severity: u8) -> &'static str {
    crate::pipeline::severity::Severity(severity)
        .text()
        .trim_end_matches(|c: char| c.is_ascii_digit())
}

/// The ECS name of an OpenTelemetry resource attribute, when ECS has one.
fn ecs_name(key: &[u8]) -> &[u8] {
    match key {
        b"k8s.node.name" => b"kubernetes.node.name",
        b"k8s.namespace.name" => b"kubernetes.namespace",
        b"k8s.pod.name" => b"kubernetes.pod.name",
        b"k8s.pod.uid" => b"kubernetes.pod.uid",
        b"k8s.container.name" => b"kubernetes.container.name",
        b"k8s.deployment.name" => b"kubernetes.deployment.name",
        b"k8s.statefulset.name" => b"kubernetes.statefulset.name",
        b"k8s.daemonset.name" => b"kubernetes.daemonset.name",
        b"k8s.cluster.name" => b"orchestrator.cluster.name",
        b"deployment.environment" | b"deployment.environment.name" => b"service.environment",
        k => k,
    }
}

/// `key` (a JSON string literal, quotes included) decoded into `out`. Rare: only keys with
/// escapes need it.
fn unescape(key: &[u8], out: &mut Vec<u8>) -> bool {
    use simd_json::prelude::*;
    let mut copy = key.to_vec();
    out.clear();
    match simd_json::to_borrowed_value(&mut copy) {
        Ok(v) => match v.as_str() {
            Some(s) => {
                out.extend_from_slice(s.as_bytes());
                true
            }
            None => false,
        },
        Err(_) => false,
    }
}

/// The members of the JSON object `obj` (valid JSON, braces included) into `out`; false when
/// `obj` is not an object this scanner can walk.
fn members(obj: &[u8], out: &mut Vec<Member>) -> bool {
    out.clear();
    let ws = |b: &[u8], mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    if obj.first() != Some(&b'{') {
        return false;
    }
    let mut i = ws(obj, 1);
    if obj.get(i) == Some(&b'}') {
        return i + 1 == obj.len();
    }
    loop {
        if obj.get(i) != Some(&b'"') {
            return false;
        }
        let Some(key_end) = string_end(obj, i) else {
            return false;
        };
        let key = i + 1..key_end - 1;
        i = ws(obj, key_end);
        if obj.get(i) != Some(&b':') {
            return false;
        }
        let start = ws(obj, i + 1);
        let Some(end) = value_end(obj, start) else {
            return false;
        };
        out.push(Member {
            key,
            value: start..end,
        });
        i = ws(obj, end);
        match obj.get(i) {
            Some(b',') => i = ws(obj, i + 1),
            Some(b'}') => return i + 1 == obj.len(),
            _ => return false,
        }
    }
}

/// The index just past the string that opens at `b[i]` (a `"`).
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[j] == b'\\' {
            j += 2;
        } else {
            return Some(j + 1);
        }
    }
}

/// The index just past the value that starts at `b[i]`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let len = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace())
                .unwrap_or(b.len() - i);
            (len > 0).then_some(i + len)
        }
    }
}

/// The `_id` for `id = "hash"`: SHA-256 of tag, time and record, first 16 bytes, base64url
/// (22 characters). The same event always gets the same ID, whichever request carries it.
fn doc_id(r: Ref<'_>) -> [u8; 22] {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let tag = r.batch.tag(r.event);
    let mut h = Sha256::new();
    h.update((tag.len() as u64).to_le_bytes());
    h.update(tag);
    h.update(r.event.time.secs.to_le_bytes());
    h.update(r.event.time.nanos.to_le_bytes());
    h.update(&r.event.record);
    let digest = h.finalize();
    let mut id = [0u8; 22];
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(&digest[..16], &mut id)
        .expect("16 bytes are 22 base64 characters");
    id
}

// === responses ===

/// What became of the events of one request (or of several, after a split), by index.
#[derive(Debug, Default)]
struct Outcome {
    retry: Vec<usize>,
    rejected: Vec<(usize, String)>,
    after: Option<Duration>,
    /// Set when a whole request failed in a retryable way (for the retry metric's reason).
    retry_reason: Option<&'static str>,
}

enum Sent {
    Done(Outcome),
    /// 413: the request must be split.
    TooLarge(String),
}

impl Outcome {
    fn into_verdict(self, n: usize) -> Verdict {
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
enum Answer {
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
fn classify(
    status: u16,
    after: Option<Duration>,
    body: &[u8],
    items: usize,
    action: Action,
) -> Answer {
    use super::client::snippet;
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
        _ => match super::client::status_verdict(status, after, body) {
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
fn errors_flag(body: &[u8]) -> Option<bool> {
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

type ItemResults = (Vec<usize>, Vec<(usize, String)>);

/// The items to resend and those refused for good, from a response with `"errors":true`.
fn item_results(body: &[u8], expected: usize, action: Action) -> Result<ItemResults, String> {
    use simd_json::prelude::*;
    let mut copy = body.to_vec();
    let v = simd_json::to_borrowed_value(&mut copy).map_err(|e| {
        format!(
            "unreadable bulk response ({e}): {}",
            super::client::snippet(body)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::event::{Batch, Event};

    // --- fixtures ---

    /// A msgpack map of string pairs.
    fn record(fields: &[(&str, &str)]) -> Bytes {
        let mut r = Vec::new();
        rmp::encode::write_map_len(&mut r, fields.len() as u32).unwrap();
        for (k, v) in fields {
            rmp::encode::write_str(&mut r, k).unwrap();
            rmp::encode::write_str(&mut r, v).unwrap();
        }
        Bytes::from(r)
    }

    /// A batch of one event per record, run through the default enrichment (plus `edit`).
    fn enriched(
        tag: &str,
        records: &[Bytes],
        edit: impl FnOnce(&mut crate::config::Enrich),
    ) -> Batch {
        let mut cfg = crate::config::Enrich::default();
        edit(&mut cfg);
        let settings = Arc::new(crate::pipeline::Settings::new(&cfg.options()).unwrap());
        let mut en = crate::pipeline::Enricher::new(settings, crate::pipeline::Metrics::default());
        let mut b = Batch::default();
        let t = b.tag_index(tag.as_bytes(), || Bytes::copy_from_slice(tag.as_bytes()));
        for (i, r) in records.iter().enumerate() {
            let time = Timestamp {
                secs: 1_700_000_000,
                nanos: i as u32,
            };
            b.events.push(Event::new(time, t, r.clone()));
        }
        en.process(&mut b);
        b
    }

    fn docker(line: &str) -> Bytes {
        record(&[
            ("container_id", "c0ffee"),
            ("container_name", "/web-1"),
            ("source", "stdout"),
            ("log", line),
        ])
    }

    fn exporter(config: &str, shape: Shape) -> Exporter {
        let config: Config = toml::from_str(config).unwrap();
        let client = HttpClient {
            endpoint: "http://127.0.0.1:9".into(),
            headers: Default::default(),
            auth: None,
            tls: None,
            compression: Compression::None,
            timeout_ms: 1000,
            http2: false,
        };
        Exporter::try_new(&client, &config, &shape).unwrap()
    }

    /// The bulk body for every event of `b`.
    fn body(x: &Exporter, b: &Batch) -> String {
        let mut out = Vec::new();
        let mut enc = Encoder::default();
        for e in &b.events {
            x.write(&mut out, &mut enc, Ref::new(b, e)).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    /// The documents of a bulk body (every second line).
    /// The documents of `body`, without the sequence number at their end (checked in
    /// `documents_carry_their_stream_sequence`).
    fn docs(body: &str) -> Vec<String> {
        body.lines()
            .skip(1)
            .step_by(2)
            .map(|d| match d.rfind(r#","log.sequence":"#) {
                Some(at) => format!("{}}}", &d[..at]),
                None => d.to_string(),
            })
            .collect()
    }

    #[test]
    fn documents_carry_their_stream_sequence() {
        let b = enriched(
            "docker.web",
            &[
                docker("a"),
                docker(r#"{"log":"own","msg":"b"}"#),
                docker("c"),
            ],
            |_| {},
        );
        let x = exporter("", Shape::default());
        let mut out = Vec::new();
        let mut enc = Encoder::default();
        for (i, e) in b.events.iter().enumerate() {
            let mut r = Ref::new(&b, e);
            r.time.nanos = i as u32;
            x.write(&mut out, &mut enc, r).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        let d: Vec<&str> = text.lines().skip(1).step_by(2).collect();
        assert!(
            d[0].ends_with(r#","log.sequence":1700000000000000000}"#),
            "{}",
            d[0]
        );
        assert!(
            !d[1].contains("log.sequence"),
            "an application's `log` would clash with a `log` object: {}",
            d[1]
        );
        assert!(
            d[2].ends_with(r#","log.sequence":1700000000000000002}"#),
            "{}",
            d[2]
        );
        let raw = exporter(
            "mapping = \"raw\"\nsequence_key = \"seq\"",
            Shape::default(),
        );
        let mut out = Vec::new();
        raw.write(&mut out, &mut enc, Ref::new(&b, &b.events[0]))
            .unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with(",\"seq\":1700000000000000000}\n")
        );
        let none = exporter("sequence_key = \"\"", Shape::default());
        let mut out = Vec::new();
        none.write(&mut out, &mut enc, Ref::new(&b, &b.events[0]))
            .unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("sequence"));
    }

    fn doc(line: &str) -> String {
        let b = enriched("docker.web", &[docker(line)], |_| {});
        docs(&body(&exporter("", Shape::default()), &b)).remove(0)
    }

    // --- documents ---

    #[test]
    fn text_line_document() {
        assert_eq!(
            doc("GET /health 200"),
            r#"{"@timestamp":"2023-11-14T22:13:20.000000000Z","message":"GET /health 200","log.iostream":"stdout","container.id":"c0ffee","container.name":"web-1","fluent.tag":"docker.web","data_stream.type":"logs","data_stream.dataset":"outrigger","data_stream.namespace":"default"}"#
        );
        assert_eq!(
            doc("ERROR something broke"),
            r#"{"@timestamp":"2023-11-14T22:13:20.000000000Z","message":"ERROR something broke","log.level":"ERROR","log.iostream":"stdout","container.id":"c0ffee","container.name":"web-1","fluent.tag":"docker.web","data_stream.type":"logs","data_stream.dataset":"outrigger","data_stream.namespace":"default"}"#
        );
    }

    #[test]
    fn json_line_is_spliced_and_its_message_field_renamed() {
        let line = r#"{"level":"warn","msg":"disk \"full\"","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","user":{"id":7,"tags":["a","}"]},"ok":true}"#;
        assert_eq!(
            doc(line),
            r#"{"@timestamp":"2023-11-14T22:13:20.000000000Z","message":"disk \"full\"","log.level":"warn","log.iostream":"stdout","trace.id":"4bf92f3577b34da6a3ce929d0e0e4736","span.id":"00f067aa0ba902b7","container.id":"c0ffee","container.name":"web-1","fluent.tag":"docker.web","data_stream.type":"logs","data_stream.dataset":"outrigger","data_stream.namespace":"default","level":"warn","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","user":{"id":7,"tags":["a","}"]},"ok":true}"#
        );
    }

    #[test]
    fn an_application_message_stays_and_no_key_is_written_twice() {
        // ecs-logging style: its own @timestamp, message, log.level and trace.id.
        let line = r#"{"@timestamp":"2023-11-14T22:13:20.5Z","log.level":"info","message":"hi","msg":"other","trace.id":"4bf92f3577b34da6a3ce929d0e0e4736","fluent.tag":"x","mess\u0061ge":"escaped dup","n":1}"#;
        let d = doc(line);
        let v: serde_json::Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["message"], "hi");
        assert_eq!(v["msg"], "other", "{d}");
        assert_eq!(v["@timestamp"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(v["fluent.tag"], "docker.web");
        assert_eq!(v["n"], 1);
        for key in [
            "\"@timestamp\"",
            "\"message\"",
            "\"log.level\"",
            "\"trace.id\"",
            "\"fluent.tag\"",
        ] {
            assert_eq!(d.matches(key).count(), 1, "{key} once in {d}");
        }
        assert!(!d.contains("escaped dup"), "{d}");
    }

    #[test]
    fn nested_merge_and_keep_line() {
        let line = r#"{"msg":"hi",  "a":1}"#;
        let b = enriched("docker.web", &[docker(line)], |_| {});
        let shape = Shape {
            nest_key: Some(b"app".to_vec()),
            keep_line: true,
            line_key: b"log".to_vec(),
        };
        let d = docs(&body(&exporter("", shape), &b)).remove(0);
        assert!(
            d.contains(r#""message":"hi","#)
                && d.contains(r#","app":{"msg":"hi",  "a":1}"#)
                && d.ends_with(r#","event.original":"{\"msg\":\"hi\",  \"a\":1}"}"#),
            "{d}"
        );
    }

    #[test]
    fn line_breaks_between_json_tokens_do_not_split_the_document() {
        let line = "{\"msg\":\"a\\nb\",\r\n  \"x\": [1,\n2]}";
        let b = enriched("docker.web", &[docker(line)], |_| {});
        let text = body(&exporter("", Shape::default()), &b);
        assert_eq!(text.lines().count(), 2, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(v["message"], "a\nb");
        assert_eq!(v["x"], serde_json::json!([1, 2]));
    }

    #[test]
    fn kubernetes_tag_resource_record_fields_and_incomplete() {
        let id = "a".repeat(64);
        let tag = format!("kube.var.log.containers.web-7d9f_shop_app-{id}.log");
        let rec = record(&[
            ("log", "plain"),
            ("stream", "stderr"),
            ("com.example.team", "payments"),
        ]);
        let mut b = enriched(&tag, &[rec], |e| {
            e.resource.insert("k8s.node.name".into(), "node-1".into());
            e.resource.insert("region".into(), "eu".into());
        });
        b.fields = Arc::from(vec![(Bytes::from("peer"), Bytes::from("10.0.0.1"))]);
        b.events[0].meta.incomplete = true;
        let d = docs(&body(&exporter("index = \"app\"", Shape::default()), &b)).remove(0);
        assert_eq!(
            d,
            format!(
                r#"{{"@timestamp":"2023-11-14T22:13:20.000000000Z","message":"plain","log.flags":["truncated"],"container.id":"{id}","kubernetes.pod.name":"web-7d9f","kubernetes.namespace":"shop","kubernetes.container.name":"app","orchestrator.type":"kubernetes","fluent.tag":"{tag}","kubernetes.node.name":"node-1","region":"eu","stream":"stderr","com.example.team":"payments","peer":"10.0.0.1"}}"#
            )
        );
    }

    #[test]
    fn records_without_a_line_and_with_odd_values() {
        // {"a": [1, {"b": nil}], 7: "seven", "bin": bin[1,2,3]}
        let mut r = Vec::new();
        rmp::encode::write_map_len(&mut r, 3).unwrap();
        rmp::encode::write_str(&mut r, "a").unwrap();
        r.extend_from_slice(&[0x92, 0x01, 0x81, 0xa1, b'b', 0xc0]);
        rmp::encode::write_uint(&mut r, 7).unwrap();
        rmp::encode::write_str(&mut r, "seven").unwrap();
        rmp::encode::write_str(&mut r, "bin").unwrap();
        rmp::encode::write_bin(&mut r, &[1, 2, 3]).unwrap();
        let b = enriched("app", &[Bytes::from(r)], |_| {});
        let d = docs(&body(&exporter("index = \"x\"", Shape::default()), &b)).remove(0);
        assert_eq!(
            d,
            r#"{"@timestamp":"2023-11-14T22:13:20.000000000Z","fluent.tag":"app","a":[1,{"b":null}],"7":"seven","bin":"AQID"}"#
        );
    }

    #[test]
    fn malformed_record_is_left_out() {
        let mut b = enriched("app", &[record(&[("a", "b")])], |_| {});
        b.events[0].record = Bytes::from_static(&[0x81, 0xa1]);
        let x = exporter("", Shape::default());
        let mut out = b"keep".to_vec();
        let r = Ref::new(&b, &b.events[0]);
        assert!(x.write(&mut out, &mut Encoder::default(), r).is_err());
        assert_eq!(out, b"keep");
    }

    #[test]
    fn raw_mapping_is_the_stdout_shape_with_timestamp() {
        let b = enriched("docker.web", &[docker(r#"{"msg":"hi"}"#)], |_| {});
        let d = docs(&body(&exporter("mapping = \"raw\"", Shape::default()), &b)).remove(0);
        assert!(
            d.starts_with(
                r#"{"@timestamp":"2023-11-14T22:13:20.000000000Z","tag":"docker.web","time":"2023-11-14T22:13:20.000000000Z","#
            ) && d.ends_with(r#""record":{"msg":"hi"}}"#),
            "{d}"
        );
        assert!(!d.contains("data_stream"));
    }

    #[test]
    fn member_scanner() {
        let mut m = Vec::new();
        let obj = br#"{ "a" : "x\"}" , "b\\":{"c":[1,"]"]}, "d":-1.5e3 ,"e":null}"#;
        assert!(members(obj, &mut m));
        let got: Vec<(&[u8], &[u8])> = m
            .iter()
            .map(|mb| (&obj[mb.key.clone()], &obj[mb.value.clone()]))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"a"[..], &br#""x\"}""#[..]),
                (br#"b\\"#, br#"{"c":[1,"]"]}"#),
                (b"d", b"-1.5e3"),
                (b"e", b"null"),
            ]
        );
        assert!(members(b"{}", &mut m) && m.is_empty());
        assert!(members(b"{ }", &mut m) && m.is_empty());
        for bad in [
            &b"[1]"[..],
            b"{\"a\":1",
            b"{\"a\" 1}",
            b"{\"a\":\"x}",
            b"{\"a\":{\"b\":1}",
            b"{\"a\":1}x",
            b"{\"a\":}",
        ] {
            assert!(!members(bad, &mut m), "{}", String::from_utf8_lossy(bad));
        }
    }

    // --- action lines, index names, ids ---

    #[test]
    fn action_lines() {
        let b = enriched("docker.web", &[docker("a"), docker("a")], |_| {});
        let text = body(&exporter("", Shape::default()), &b);
        assert!(text.starts_with("{\"create\":{\"_index\":\"logs-outrigger-default\"}}\n{"));
        assert!(text.ends_with("}\n"));
        let text = body(
            &exporter(
                "action = \"index\"\nindex = \"app-%Y.%m.%d-%H%%\"\nid = \"hash\"",
                Shape::default(),
            ),
            &b,
        );
        let actions: Vec<serde_json::Value> = text
            .lines()
            .step_by(2)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(actions[0]["index"]["_index"], "app-2023.11.14-22%");
        let ids: Vec<&str> = actions
            .iter()
            .map(|a| a["index"]["_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids[0].len(), 22);
        assert!(
            ids[0]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(ids[0], ids[1], "same record, different nanoseconds");
        // Deterministic: the same events give the same IDs again.
        assert_eq!(
            body(
                &exporter(
                    "id = \"hash\"\naction = \"index\"\nindex = \"app-%Y.%m.%d-%H%%\"",
                    Shape::default()
                ),
                &b
            ),
            text
        );
    }

    #[test]
    fn index_names_follow_event_time() {
        let t = IndexTemplate::try_from("app-%Y.%m.%d".to_string()).unwrap();
        let name = |secs| {
            let mut out = Vec::new();
            t.render(&mut out, secs);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(name(1_700_000_000), "app-2023.11.14");
        assert_eq!(name(0), "app-1970.01.01");
        assert_eq!(name(951_782_400), "app-2000.02.29");
        assert_eq!(t.period(), 86_400);
        assert_eq!(
            IndexTemplate::default().fixed(),
            Some("logs-outrigger-default")
        );
        assert_eq!(
            IndexTemplate::try_from("x-%H".to_string())
                .unwrap()
                .period(),
            3600
        );
    }

    #[test]
    fn invalid_index_names_are_refused() {
        for (name, why) in [
            ("", "empty"),
            ("Logs", "lowercase"),
            ("a b", "contain"),
            ("a:b", "contain"),
            ("a,b", "contain"),
            ("a\u{1}", "contain"),
            ("_x", "start"),
            ("-x", "start"),
            (".x", "start"),
            ("x-%y", "unknown pattern"),
            ("x-%", "at the end"),
        ] {
            let e = IndexTemplate::try_from(name.to_string()).unwrap_err();
            assert!(e.contains(why), "{name:?}: {e}");
        }
        assert!(IndexTemplate::try_from("a".repeat(256)).is_err());
        assert!(IndexTemplate::try_from(format!("{}-%Y", "a".repeat(250))).is_ok());
        assert!(IndexTemplate::try_from(format!("{}-%Y", "a".repeat(251))).is_err());
    }

    #[test]
    fn data_stream_fields_only_for_fixed_logs_names() {
        let f = |n: &str| {
            String::from_utf8(data_stream_fields(
                &IndexTemplate::try_from(n.to_string()).unwrap(),
            ))
            .unwrap()
        };
        assert_eq!(
            f("logs-app-prod"),
            r#","data_stream.type":"logs","data_stream.dataset":"app","data_stream.namespace":"prod""#
        );
        for n in ["logs-a-b-c", "metrics-a-b", "logs-app-%Y", "app", "logs--x"] {
            assert_eq!(f(n), "", "{n}");
        }
    }

    #[test]
    fn config_values() {
        let c: Config = toml::from_str("api_version = 8").unwrap();
        assert_eq!(c.api_version, ApiVersion::Elasticsearch(8));
        let c: Config = toml::from_str("api_version = \"opensearch\"").unwrap();
        assert_eq!(c.api_version, ApiVersion::OpenSearch);
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(
            (c.api_version, c.action, c.id, c.mapping),
            (ApiVersion::Auto, Action::Create, IdMode::None, Mapping::Ecs)
        );
        for bad in [
            "api_version = 6",
            "index = \"A\"",
            "action = \"upsert\"",
            "x = 1",
        ] {
            assert!(toml::from_str::<Config>(bad).is_err(), "{bad}");
        }
        let mut path = String::new();
        percent_encode(&mut path, "logs pipe/1");
        assert_eq!(path, "logs%20pipe%2F1");
    }

    // --- responses ---

    const C: Action = Action::Create;

    #[test]
    fn whole_responses() {
        let ok = br#"{"errors":false,"items":[{"create":{"status":201}}]}"#;
        assert_eq!(classify(200, None, ok, 1, C), Answer::Stored);
        assert_eq!(
            classify(200, None, b"{\"took\":3, \"errors\" : false}", 1, C),
            Answer::Stored
        );
        assert!(
            matches!(classify(200, None, b"OK", 1, C), Answer::Rejected(r) if r.contains("without a bulk response"))
        );
        let after = Some(Duration::from_secs(2));
        assert_eq!(
            classify(429, after, b"", 1, C),
            Answer::Retry {
                reason: "throttled",
                after
            }
        );
        for s in [500, 502, 503, 504] {
            assert_eq!(
                classify(s, None, b"", 1, C),
                Answer::Retry {
                    reason: "server_error",
                    after: None
                }
            );
        }
        assert!(matches!(
            classify(408, None, b"", 1, C),
            Answer::Retry {
                reason: "timeout",
                ..
            }
        ));
        assert!(
            matches!(classify(413, None, b"", 1, C), Answer::TooLarge(r) if r.contains("max_content_length"))
        );
        assert!(
            matches!(classify(501, None, b"no", 1, C), Answer::Rejected(r) if r == "HTTP 501: no")
        );
        for s in [400, 401, 403, 404] {
            let body = br#"{"error":{"type":"security_exception"}}"#;
            assert!(
                matches!(classify(s, None, body, 1, C), Answer::Rejected(r) if r.starts_with(&format!("HTTP {s}: {{\"error\"")) )
            );
        }
    }

    #[test]
    fn item_statuses() {
        let body = br#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"[x]: version conflict"}}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"status":400,"error":{"type":"document_parsing_exception","reason":"[1:15] failed to parse field [n] of type [long]"}}},
            {"create":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
            {"create":{"status":404,"error":{"type":"index_not_found_exception","reason":"no such index [x]"}}},
            {"create":{}}
        ]}"#;
        assert_eq!(
            classify(200, None, body, 7, C),
            Answer::Items {
                retry: vec![2, 4],
                rejected: vec![
                    (
                        3,
                        "item 400 document_parsing_exception: [1:15] failed to parse field [n] of type [long]".into()
                    ),
                    (5, "item 404 index_not_found_exception: no such index [x]".into()),
                    (6, "bulk item without a status".into()),
                ]
            }
        );
        // With `index`, a 409 is a real conflict.
        let body = br#"{"errors":true,"items":[{"index":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"r"}}}]}"#;
        assert_eq!(
            classify(200, None, body, 1, Action::Index),
            Answer::Items {
                retry: vec![],
                rejected: vec![(0, "item 409 version_conflict_engine_exception: r".into())]
            }
        );
        // Only "already stored" errors: delivered.
        let body =
            br#"{"errors":true,"items":[{"create":{"status":409}},{"create":{"status":201}}]}"#;
        assert_eq!(classify(200, None, body, 2, C), Answer::Stored);
        // A response that does not match the request cannot be trusted.
        assert!(
            matches!(classify(200, None, body, 3, C), Answer::Rejected(r) if r.contains("2 items for 3"))
        );
        assert!(
            matches!(classify(200, None, b"{\"errors\":true,", 1, C), Answer::Rejected(r) if r.contains("unreadable"))
        );
    }

    #[test]
    fn outcomes_become_verdicts() {
        let o = |retry: Vec<usize>, rejected: Vec<(usize, &str)>, reason| Outcome {
            retry,
            rejected: rejected
                .into_iter()
                .map(|(i, r)| (i, r.to_string()))
                .collect(),
            after: None,
            retry_reason: reason,
        };
        assert_eq!(o(vec![], vec![], None).into_verdict(3), Verdict::Delivered);
        assert_eq!(
            o(vec![0, 1, 2], vec![], Some("throttled")).into_verdict(3),
            Verdict::Retry {
                reason: "throttled",
                after: None
            }
        );
        assert_eq!(
            o(vec![], vec![(0, "x"), (1, "x")], None).into_verdict(2),
            Verdict::Rejected { reason: "x".into() }
        );
        assert_eq!(
            o(vec![2, 0], vec![(1, "y")], None).into_verdict(3),
            Verdict::Partial {
                retry: vec![0, 2],
                rejected: vec![(1, "y".into())],
                after: None
            }
        );
    }

    #[test]
    fn level_names() {
        assert_eq!(level_name(9), "INFO");
        assert_eq!(level_name(14), "WARN");
        assert_eq!(level_name(24), "FATAL");
        assert_eq!(ecs_name(b"k8s.cluster.name"), b"orchestrator.cluster.name");
        assert_eq!(ecs_name(b"team"), b"team");
    }
}
