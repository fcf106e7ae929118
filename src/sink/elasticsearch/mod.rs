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

mod document;
mod index;
mod response;
mod settings;

use hyper::header::{CONTENT_TYPE, HeaderValue};

use super::client::Client;
use super::export::{Attempt, Deliver, Ref};
use super::jsonl::{self, Shape};
use super::kind::HttpBuild;
use super::order::Gate;
use super::retry::{Verdict, retry_after};
use crate::event::Timestamp;
use crate::msgpack;
use crate::sink::settings::{Auth, HttpClient};
use document::Encoder;
pub use index::IndexTemplate;
use index::data_stream_fields;
use response::{Answer, Outcome, Sent, classify};
pub use settings::{Action, ApiVersion, Config, DEFAULTS, IdMode, Mapping};

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

impl Deliver for Exporter {
    fn attempt<'a>(&'a self, events: &'a [Ref<'a>], gate: &'a Gate) -> Attempt<'a> {
        Box::pin(Exporter::attempt(self, events, gate))
    }
}

impl HttpBuild for Config {
    fn exporter(&self, client: &HttpClient, shape: &Shape) -> anyhow::Result<Box<dyn Deliver>> {
        Ok(Box::new(Exporter::try_new(client, self, shape)?))
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use std::time::Duration;

    use super::document::{ecs_labels, ecs_name, level_name};
    use super::*;
    use crate::event::{Batch, Event, Span};
    use crate::sink::settings::Compression;

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
        enriched_with(
            tag,
            records,
            crate::pipeline::Settings::new(&cfg.options()).unwrap(),
        )
    }

    /// A batch of one event per record, run through enrichment with `settings`.
    fn enriched_with(tag: &str, records: &[Bytes], settings: crate::pipeline::Settings) -> Batch {
        let settings = Arc::new(settings);
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
    fn a_line_event_is_a_document_of_its_line_and_file() {
        // A CRI line a file source read, enriched: a JSON line, no record.
        let id = "f".repeat(64);
        let tag = format!("kube.var.log.containers.web-7d9f_shop_app-{id}.log");
        let text = r#"2026-12-04T10:00:00Z stdout F {"level":"warn","msg":"slow","ms":12}"#;
        let at = text.find('{').unwrap();
        let mut cfg = crate::config::Enrich::default();
        cfg.resource.insert("k8s.node.name".into(), "node-1".into());
        let settings = Arc::new(crate::pipeline::Settings::new(&cfg.options()).unwrap());
        let mut stage = crate::pipeline::Stage::new(
            Some(&(settings, crate::pipeline::Metrics::default())),
            Arc::new([]),
        );
        let mut b = stage.batch(0);
        let t = b.tag_index(tag.as_bytes(), || Bytes::from(tag.clone()));
        let time = Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        };
        let (line, stream) = (Span::new(at..text.len()), Span::new(21..27));
        b.events
            .push(Event::line(time, t, Bytes::from(text), line, Some(stream)));
        stage.process(&mut b);
        let d = docs(&body(&exporter("index = \"app\"", Shape::default()), &b)).remove(0);
        assert_eq!(
            d,
            format!(
                r#"{{"@timestamp":"2023-11-14T22:13:20.000000000Z","message":"slow","log.level":"warn","log.iostream":"stdout","container.id":"{id}","kubernetes.pod.name":"web-7d9f","kubernetes.namespace":"shop","kubernetes.container.name":"app","orchestrator.type":"kubernetes","fluent.tag":"{tag}","level":"warn","ms":12,"kubernetes.node.name":"node-1"}}"#
            )
        );
    }

    #[test]
    fn lines_enriched_without_their_members_make_the_same_documents() {
        // No sink that enrichment knew of read members: the encoder scans the line itself.
        let lines = [
            docker(r#"{"level":"warn","msg":"slow","ms":12,"ctx":{"a":[1,2]}}"#),
            docker(r#"{ "k\"ey" : "v\n" }"#),
            docker("plain text"),
        ];
        let with = enriched("docker.web", &lines, |_| {});
        let cfg = crate::config::Enrich::default();
        let settings = crate::pipeline::Settings {
            members: false,
            ..crate::pipeline::Settings::new(&cfg.options()).unwrap()
        };
        let without = enriched_with("docker.web", &lines, settings);
        assert!(!with.members.is_empty() && without.members.is_empty());
        let x = exporter("index = \"app\"", Shape::default());
        assert_eq!(body(&x, &with), body(&x, &without));
        assert!(body(&x, &without).contains(r#""ms":12,"ctx":{"a":[1,2]}"#));
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
        let mut out = Vec::new();
        assert!(ecs_labels(
            b"k8s.pod.label.app.kubernetes.io/name",
            &mut out
        ));
        assert_eq!(out, b"kubernetes.labels.app_kubernetes_io_name");
        assert!(ecs_labels(b"k8s.pod.annotation.team", &mut out));
        assert_eq!(out, b"kubernetes.annotations.team");
        assert!(!ecs_labels(b"k8s.pod.name", &mut out));
        assert_eq!(ecs_name(b"team"), b"team");
    }
}
