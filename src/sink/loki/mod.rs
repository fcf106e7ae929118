//! The `loki` sink: events pushed to Grafana Loki's push API, `POST /loki/api/v1/push`
//! (<https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs>, schema in
//! Loki's `pkg/push/push.proto`, mirrored in [`proto`]).
//!
//! What comes in: the events of one request ([`Ref`]s). What goes out: one `PushRequest` with a
//! stream per distinct label set, entries sorted by sending time within each stream (the
//! event's time, moved one nanosecond past the stream's previous entry when they tie, see
//! [`super::order`]; so Loki neither reorders nor merges equal lines of one second), encoded
//! as protobuf and snappy block-compressed (or, with `encoding = "json"`, the JSON form,
//! gzipped per the shared `compression` key). Nothing here retries or waits: the shared loop
//! ([`super::export`]) does, from the [`Verdict`] this module makes of the answer.
//!
//! # Labels and structured metadata
//!
//! Both are maps of a name to a template. A template is text with attributes in braces,
//! named as OpenTelemetry names them: `{container.name}`, `{container.id}`, `{log.iostream}`,
//! `{k8s.pod.name}`, `{k8s.namespace.name}`, `{k8s.container.name}`, plus `{trace_id}`,
//! `{span_id}`, `{trace_flags}`, `{severity}` (the OpenTelemetry short name, `WARN`),
//! `{severity_text}` (the level as the application wrote it), `{severity_number}`, `{tag}`,
//! and any other name is a static resource attribute (`[enrich.resource]`, e.g.
//! `{k8s.cluster.name}`). `{a|b}` takes the first of `a`, `b` that is not empty; `{{` and `}}`
//! are literal braces. A value that renders empty is left out.
//!
//! The default labels follow Loki's label guidance (few, bounded, static): `job="outrigger"`
//! (a static label, so no stream is ever label-less), `cluster`, `namespace` and `container`
//! (the Kubernetes container name, else Docker's). Loki derives `service_name` from
//! `container`. Values that change with every rollout, restart or request (pod names,
//! container IDs, trace and span IDs) would multiply streams, so they are structured
//! metadata instead: by default `trace_id`, `span_id`, `pod` and `stream` (stdout/stderr).
//! `{trace_id}` and `{span_id}` are refused in labels outright. Structured metadata needs
//! Loki 3 with schema v13; set `structured_metadata = {}` for older stores, which would
//! refuse every entry that carries some.
//!
//! # Responses
//!
//! | answer | verdict | why |
//! |---|---|---|
//! | 2xx (204) | delivered | |
//! | 260 | accepted, all counted lost | Loki's default status for a tenant whose ingestion is blocked: nothing stored, on purpose |
//! | 400 naming entries | accepted, the named count lost | Loki stored the valid entries and lists the others; resending would duplicate the stored ones |
//! | other 400 | refused: dead letter | a request Loki could not read; nothing stored |
//! | 413 | split in halves and sent again now; one entry still too large is refused | the body limit of Loki or a proxy |
//! | 408, 429, 5xx but 501 | retry, honouring `Retry-After` | nothing stored (a 429 `stream_limit` may have stored some streams; Loki drops exact duplicates) |
//! | 401, 403, 404, other 4xx, 501 | refused: dead letter, with the body's start | configuration errors |
//! | no answer | retry | |

pub mod proto;
mod response;
mod settings;
mod template;

use std::collections::HashMap;
use std::ops::Range;

use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use super::client::Client;
use super::export::{Attempt, Deliver, Ref};
use super::jsonl;
use super::kind::HttpBuild;
use super::order::Gate;
use super::retry::Verdict;
use crate::event::Span;
use crate::sink::settings::HttpClient;
use response::classify;
use settings::check_tenant;
pub use settings::{Config, DEFAULTS, Encoding, Line};
use template::{Field, fields};

/// Where Loki's distributor takes pushes, appended to the endpoint (unless it already ends
/// with it).
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// Loki's default `max_label_value_length`: a longer value makes Loki drop the whole stream,
/// so values are cut to it instead.
const MAX_LABEL_VALUE_BYTES: usize = 2048;

/// Loki's default `max_label_names_per_series`; more configured labels earn a warning.
const MAX_LABEL_NAMES: usize = 15;

/// The label set of an event whose labels all render empty (Loki refuses a stream without
/// labels); `unknown_service` is what Loki itself calls a service it cannot name.
const FALLBACK_LABEL: (&str, &str) = ("service_name", "unknown_service");

/// The exporter.
#[derive(Debug)]
pub struct Exporter {
    client: Client,
    /// [`PUSH_PATH`], or empty when the endpoint already names it.
    path: &'static str,
    labels: Vec<Field>,
    metadata: Vec<Field>,
    tenant: Option<HeaderValue>,
    line: Line,
    encoding: Encoding,
    shape: jsonl::Shape,
}

// === impl Exporter ===

impl Exporter {
    /// Builds the exporter (client, TLS material, templates).
    ///
    /// # Errors
    /// Invalid settings or TLS files: a label or metadata name Loki would refuse, a template
    /// that does not parse, a trace or span ID in a label, an invalid tenant ID.
    pub fn try_new(
        client: &HttpClient,
        config: &Config,
        shape: &super::jsonl::Shape,
    ) -> anyhow::Result<Exporter> {
        let labels = fields("labels", &config.labels)?;
        for f in &labels {
            if let Some(a) = f.template.unbounded() {
                anyhow::bail!(
                    "labels.{}: `{{{a}}}` is unique per request and would make every request a stream of its own; put it in `structured_metadata`",
                    f.name
                );
            }
        }
        if labels.len() > MAX_LABEL_NAMES {
            tracing::warn!(
                labels = labels.len(),
                "more labels than Loki's default max_label_names_per_series (15): Loki will refuse the streams unless the limit was raised"
            );
        }
        let metadata = fields("structured_metadata", &config.structured_metadata)?;
        let tenant = match config.tenant_id.as_str() {
            "" => None,
            t => {
                check_tenant(t).map_err(|e| anyhow::anyhow!("tenant_id `{t}`: {e}"))?;
                Some(HeaderValue::from_str(t)?)
            }
        };
        let path = if client.endpoint.trim_end_matches('/').ends_with(PUSH_PATH) {
            ""
        } else {
            PUSH_PATH
        };
        Ok(Exporter {
            client: Client::try_new(client)?,
            path,
            labels,
            metadata,
            tenant,
            line: config.line,
            encoding: config.encoding,
            shape: shape.clone(),
        })
    }

    /// Pushes `events` and says what became of them (a 413 is [`Verdict::TooLarge`]: the
    /// delivery loop sends the halves).
    pub async fn attempt(&self, events: &[Ref<'_>], gate: &Gate) -> Verdict {
        self.push(events, gate).await
    }

    /// The request body for `events` (protobuf + snappy, or JSON not yet gzipped), its
    /// content type, and whether the HTTP client may gzip it. Public for `benches/encode.rs`.
    ///
    /// # Errors
    /// Snappy could not compress the body.
    pub fn encode(&self, events: &[Ref<'_>]) -> Result<(Vec<u8>, &'static str, bool), String> {
        let streams = self.streams(events);
        Ok(match self.encoding {
            Encoding::Protobuf => {
                let raw = prost::Message::encode_to_vec(&self.request(events, &streams));
                match snap::raw::Encoder::new().compress_vec(&raw) {
                    Ok(body) => (body, "application/x-protobuf", false),
                    Err(e) => return Err(format!("snappy: {e}")),
                }
            }
            Encoding::Json => (self.json(events, &streams), "application/json", true),
        })
    }

    /// One request for `events`.
    async fn push(&self, events: &[Ref<'_>], gate: &Gate) -> Verdict {
        let (body, content_type, compressible) = match self.encode(events) {
            Ok(encoded) => encoded,
            Err(reason) => return Verdict::Rejected { reason },
        };
        let mut headers: Vec<(HeaderName, HeaderValue)> =
            vec![(CONTENT_TYPE, HeaderValue::from_static(content_type))];
        if let Some(t) = &self.tenant {
            headers.push((HeaderName::from_static("x-scope-orgid"), t.clone()));
        }
        gate.open().await;
        match self
            .client
            .post(self.path, &headers, body, compressible)
            .await
        {
            Ok(resp) => classify(&resp, events.len()),
            Err(e) => e.verdict(),
        }
    }

    /// The label set of `r`, hashed: the stream whose order the delivery loop keeps.
    pub fn stream(&self, r: Ref<'_>) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            let mut h = foldhash::fast::FixedState::default().build_hasher();
            self.each_label(r, buf, |name, value| {
                h.write(name.as_bytes());
                h.write_u8(0xff);
                h.write(value.as_bytes());
                h.write_u8(0xff);
            });
            h.finish()
        })
    }

    /// Calls `f` with each label of `r` that renders to a value (cut to Loki's limit), in
    /// name order; `buf` is scratch.
    fn each_label(&self, r: Ref<'_>, buf: &mut Vec<u8>, mut f: impl FnMut(&str, &str)) {
        for l in &self.labels {
            buf.clear();
            l.template.render(buf, r);
            let value = String::from_utf8_lossy(buf);
            let value = truncate(&value, MAX_LABEL_VALUE_BYTES);
            if !value.is_empty() {
                f(&l.name, value);
            }
        }
    }

    /// Groups `events` by label set, in order of first appearance; each stream's events
    /// sorted by sending time (the event's own, unless it tied with the one before: see
    /// [`super::order`]), equal times kept in arrival order.
    fn streams(&self, events: &[Ref<'_>]) -> Vec<Stream> {
        let mut streams: Vec<Stream> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut key = String::new();
        let mut buf = Vec::new();
        for (i, r) in events.iter().enumerate() {
            key.clear();
            self.selector(*r, &mut buf, &mut key, None);
            if let Some(&s) = index.get(key.as_str()) {
                streams[s].events.push(i);
                continue;
            }
            let mut pairs = Vec::new();
            self.selector(*r, &mut buf, &mut String::new(), Some(&mut pairs));
            index.insert(key.clone(), streams.len());
            streams.push(Stream {
                labels: key.clone(),
                pairs,
                events: vec![i],
            });
        }
        for s in &mut streams {
            s.events.sort_by_key(|&i| events[i].time);
        }
        streams
    }

    /// Writes `r`'s label set as a selector, `{a="b", c="d"}` (names sorted, values escaped),
    /// into `key`, and the raw pairs into `pairs` when asked.
    fn selector(
        &self,
        r: Ref<'_>,
        buf: &mut Vec<u8>,
        key: &mut String,
        mut pairs: Option<&mut Vec<(String, String)>>,
    ) {
        let mut add = |key: &mut String, name: &str, value: &str| {
            key.push_str(if key.is_empty() { "{" } else { ", " });
            key.push_str(name);
            key.push_str("=\"");
            escape_label_value(key, value);
            key.push('"');
            if let Some(p) = pairs.as_deref_mut() {
                p.push((name.to_string(), value.to_string()));
            }
        };
        self.each_label(r, buf, |name, value| add(key, name, value));
        if key.is_empty() {
            add(key, FALLBACK_LABEL.0, FALLBACK_LABEL.1);
        }
        key.push('}');
    }

    /// The entry's line, as bytes (not yet checked for UTF-8).
    fn line(&self, out: &mut Vec<u8>, times: &mut jsonl::TimeCache, r: Ref<'_>) {
        out.clear();
        match self.line {
            Line::Json => {
                let _ = jsonl::event(out, times, r.batch, r.event, &self.shape);
            }
            Line::Original => {
                let e = r.event;
                let span = e.meta.line.or_else(|| {
                    // Enrichment off: find the line ourselves.
                    crate::pipeline::record::fields(e.map(), &self.shape.line_key)
                        .line
                        .map(Span::new)
                });
                match span {
                    Some(s) => out.extend_from_slice(e.slice(s)),
                    None => record_json(out, times, r, &self.shape),
                }
            }
        }
    }

    /// Renders the structured metadata of `r` into `buf`: (field index, value range) for each
    /// value that is not empty.
    fn metadata(&self, r: Ref<'_>, buf: &mut Vec<u8>, found: &mut Vec<(usize, Range<usize>)>) {
        buf.clear();
        found.clear();
        for (i, f) in self.metadata.iter().enumerate() {
            let start = buf.len();
            f.template.render(buf, r);
            if buf.len() > start {
                found.push((i, start..buf.len()));
            }
        }
    }

    /// The protobuf request.
    fn request(&self, events: &[Ref<'_>], streams: &[Stream]) -> proto::PushRequest {
        let mut times = jsonl::TimeCache::default();
        let (mut line, mut buf, mut found) = (Vec::new(), Vec::new(), Vec::new());
        let streams = streams
            .iter()
            .map(|s| proto::StreamAdapter {
                labels: s.labels.clone(),
                entries: s
                    .events
                    .iter()
                    .map(|&i| {
                        let r = events[i];
                        self.line(&mut line, &mut times, r);
                        self.metadata(r, &mut buf, &mut found);
                        let t = r.time;
                        proto::EntryAdapter {
                            timestamp: Some(proto::Timestamp {
                                seconds: t.secs,
                                nanos: t.nanos.min(999_999_999) as i32,
                            }),
                            line: String::from_utf8_lossy(&line).into_owned(),
                            structured_metadata: found
                                .iter()
                                .map(|(f, range)| proto::LabelPairAdapter {
                                    name: self.metadata[*f].name.clone(),
                                    value: String::from_utf8_lossy(&buf[range.clone()])
                                        .into_owned(),
                                })
                                .collect(),
                        }
                    })
                    .collect(),
            })
            .collect();
        proto::PushRequest { streams }
    }

    /// The JSON request: `{"streams":[{"stream":{…},"values":[["<ns>","<line>",{…}]]}]}`.
    fn json(&self, events: &[Ref<'_>], streams: &[Stream]) -> Vec<u8> {
        let mut out = Vec::with_capacity(events.len() * 256);
        let mut times = jsonl::TimeCache::default();
        let (mut line, mut buf, mut found) = (Vec::new(), Vec::new(), Vec::new());
        out.extend_from_slice(b"{\"streams\":[");
        for (n, s) in streams.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"stream\":{");
            for (i, (k, v)) in s.pairs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                jsonl::string(&mut out, k.as_bytes());
                out.push(b':');
                jsonl::string(&mut out, v.as_bytes());
            }
            out.extend_from_slice(b"},\"values\":[");
            for (j, &i) in s.events.iter().enumerate() {
                let r = events[i];
                if j > 0 {
                    out.push(b',');
                }
                let t = r.time;
                let ns = i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos);
                out.extend_from_slice(b"[\"");
                out.extend_from_slice(ns.to_string().as_bytes());
                out.extend_from_slice(b"\",");
                self.line(&mut line, &mut times, r);
                jsonl::string(&mut out, &line);
                self.metadata(r, &mut buf, &mut found);
                if !found.is_empty() {
                    out.extend_from_slice(b",{");
                    for (m, (f, range)) in found.iter().enumerate() {
                        if m > 0 {
                            out.push(b',');
                        }
                        jsonl::string(&mut out, self.metadata[*f].name.as_bytes());
                        out.push(b':');
                        jsonl::string(&mut out, &buf[range.clone()]);
                    }
                    out.push(b'}');
                }
                out.push(b']');
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
        out
    }
}

impl Deliver for Exporter {
    fn attempt<'a>(&'a self, events: &'a [Ref<'a>], gate: &'a Gate) -> Attempt<'a> {
        Box::pin(Exporter::attempt(self, events, gate))
    }

    fn stream(&self, r: Ref<'_>) -> u64 {
        Exporter::stream(self, r)
    }
}

impl HttpBuild for Config {
    fn exporter(
        &self,
        client: &HttpClient,
        shape: &jsonl::Shape,
    ) -> anyhow::Result<Box<dyn Deliver>> {
        Ok(Box::new(Exporter::try_new(client, self, shape)?))
    }
}

/// One stream of a request.
#[derive(Debug)]
struct Stream {
    /// The selector: `{a="b", c="d"}`.
    labels: String,
    /// The same labels, unescaped, for the JSON encoding.
    pairs: Vec<(String, String)>,
    /// Indices into the request's events, sorted by time.
    events: Vec<usize>,
}

/// The record of `r` as JSON (`{…}`), as the `stdout` sink writes it under `"record"`.
fn record_json(out: &mut Vec<u8>, times: &mut jsonl::TimeCache, r: Ref<'_>, shape: &jsonl::Shape) {
    // jsonl::event writes `{"tag":…,…,"record":{…}}` (then `,"incomplete":true` when marked).
    // Every value before the record is a string (escaped quotes) or a number, so the first
    // `,"record":{` is the record's key.
    const KEY: &[u8] = b",\"record\":{";
    const INCOMPLETE: &[u8] = b",\"incomplete\":true}";
    let start = out.len();
    if jsonl::event(out, times, r.batch, r.event, shape).is_err() {
        return;
    }
    let Some(at) = memchr::memmem::find(&out[start..], KEY) else {
        out.truncate(start);
        return;
    };
    let from = start + at + KEY.len() - 1;
    let to = out.len()
        - if r.event.meta.incomplete {
            INCOMPLETE.len()
        } else {
            1
        };
    out.copy_within(from..to, start);
    out.truncate(start + (to - from));
}

/// `value` cut to at most `max` bytes, at a character boundary.
fn truncate(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// Escapes `value` for a double-quoted label value in a selector (Go/PromQL string escapes).
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use prost::Message as _;

    use super::template::{Template, check_name};
    use super::*;
    use crate::event::{Batch, Event, Meta, Timestamp};
    use crate::sink::settings::Compression;

    const K8S_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// A msgpack map of string pairs, and the span of each value.
    fn record(fields: &[(&str, &str)]) -> (Bytes, Vec<Span>) {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        rmp::encode::write_map_len(&mut out, fields.len() as u32).unwrap();
        for (k, v) in fields {
            rmp::encode::write_str(&mut out, k).unwrap();
            rmp::encode::write_str(&mut out, v).unwrap();
            spans.push(Span::new(out.len() - v.len()..out.len()));
        }
        (Bytes::from(out), spans)
    }

    /// A Docker event from container `name`, as enrichment leaves it.
    fn docker(batch: &mut Batch, secs: i64, name: &str, stream: &str, log: &str) {
        let tag = batch.tag_index(b"docker.app", || Bytes::from_static(b"docker.app"));
        let (rec, s) = record(&[
            ("container_id", "c0ffee"),
            ("container_name", &format!("/{name}")),
            ("source", stream),
            ("log", log),
        ]);
        let mut e = Event::new(Timestamp { secs, nanos: 5 }, tag, rec);
        e.meta = Meta {
            line: Some(s[3]),
            container_id: Some(s[0]),
            container_name: Some(Span::new(
                s[1].start as usize + 1..(s[1].start + s[1].len) as usize,
            )),
            stream: Some(s[2]),
            ..Meta::default()
        };
        batch.events.push(e);
    }

    fn refs(b: &Batch) -> Vec<Ref<'_>> {
        b.events.iter().map(|event| Ref::new(b, event)).collect()
    }

    fn exporter(extra: &str) -> Exporter {
        let config: Config = toml::from_str(extra).unwrap();
        try_new(&config).unwrap()
    }

    fn try_new(config: &Config) -> anyhow::Result<Exporter> {
        let client = HttpClient {
            endpoint: "http://127.0.0.1:9/".into(),
            headers: Default::default(),
            auth: None,
            tls: None,
            compression: Compression::Gzip,
            timeout_ms: 1000,
            http2: false,
        };
        Exporter::try_new(&client, config, &jsonl::Shape::default())
    }

    fn render(t: &str, r: Ref<'_>) -> String {
        let mut out = Vec::new();
        Template::parse(t).unwrap().render(&mut out, r);
        String::from_utf8(out).unwrap()
    }

    fn decode(body: &[u8]) -> proto::PushRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        proto::PushRequest::decode(&raw[..]).unwrap()
    }

    #[test]
    fn templates_render_attributes_alternatives_and_braces() {
        let mut b = Batch::default();
        docker(&mut b, 1, "api", "stderr", "hello");
        let tag = format!("kube.var.log.containers.web-7d9f_shop_app-{K8S_ID}.log");
        let t = b.tag_index(tag.as_bytes(), || Bytes::from(tag.clone()));
        b.k8s = vec![None, crate::pipeline::kubernetes::parse(tag.as_bytes())];
        b.resource = Arc::from(vec![(
            Bytes::from_static(b"k8s.cluster.name"),
            Bytes::from_static(b"prod-eu"),
        )]);
        let (rec, s) = record(&[("log", "x")]);
        let mut e = Event::new(Timestamp::default(), t, rec);
        e.meta.line = Some(s[0]);
        e.meta.trace_id = Some([0xab; 16]);
        e.meta.span_id = Some([0x01; 8]);
        e.meta.trace_flags = Some(1);
        e.meta.severity = 13;
        b.events.push(e);
        let r = refs(&b);
        let (docker, k8s) = (r[0], r[1]);
        assert_eq!(render("{container.name}", docker), "api");
        assert_eq!(
            render("{container.id}/{log.iostream}", docker),
            "c0ffee/stderr"
        );
        assert_eq!(render("{k8s.container.name|container.name}", docker), "api");
        assert_eq!(render("{k8s.container.name|container.name}", k8s), "app");
        assert_eq!(
            render("{k8s.pod.name}.{k8s.namespace.name}", k8s),
            "web-7d9f.shop"
        );
        assert_eq!(render("{container.id}", k8s), K8S_ID);
        assert_eq!(render("{ k8s.cluster.name }", k8s), "prod-eu");
        assert_eq!(render("{k8s.cluster.name}", docker), "prod-eu");
        assert_eq!(render("{no.such}", k8s), "");
        assert_eq!(render("{trace_id}", k8s), "ab".repeat(16));
        assert_eq!(render("{span_id}:{trace_flags}", k8s), "0101010101010101:1");
        assert_eq!(render("{trace_id}{span_id}", docker), "");
        assert_eq!(
            render("{severity}/{severity_text}/{severity_number}", k8s),
            "WARN/WARN/13"
        );
        assert_eq!(render("{severity}{severity_number}", docker), "");
        assert_eq!(render("{tag}", docker), "docker.app");
        assert_eq!(render("app-{{x}}-{container.name}", docker), "app-{x}-api");
        assert_eq!(render("static", docker), "static");
    }

    #[test]
    fn bad_templates_and_names_are_refused_naming_the_key() {
        for bad in ["{", "{container.name", "}", "a}b", "{}", "{a|}", "{a{b}}"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
        let err = |toml: &str| {
            try_new(&toml::from_str(toml).unwrap())
                .unwrap_err()
                .to_string()
        };
        let e = err("labels = { \"k8s.pod\" = \"x\" }");
        assert!(
            e.contains("labels.k8s.pod") && e.contains("not a valid Loki label name"),
            "{e}"
        );
        let e = err("labels = { \"__name__\" = \"x\" }");
        assert!(
            e.contains("labels.__name__") && e.contains("reserved"),
            "{e}"
        );
        for bad in ["1abc", "", "a-b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "_a", "A_1", "job"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        let e = err("labels = { app = \"{container.name\" }");
        assert!(e.contains("labels.app") && e.contains("unclosed"), "{e}");
        let e = err("labels = { t = \"{trace_id}\" }");
        assert!(
            e.contains("labels.t") && e.contains("structured_metadata"),
            "{e}"
        );
        let e = err("structured_metadata = { \"trace.id\" = \"{trace_id}\" }");
        assert!(e.contains("structured_metadata.trace.id"), "{e}");
        let e = err("tenant_id = \"a|b\"");
        assert!(e.contains("exactly one tenant"), "{e}");
        let e = err("tenant_id = \"team a\"");
        assert!(e.contains("not allowed"), "{e}");
        assert!(check_tenant(&"a".repeat(151)).is_err());
        assert!(check_tenant("..").is_err());
        assert!(check_tenant("team-a_1.(x)*'!").is_ok());
        assert!(toml::from_str::<Config>("lines = \"json\"").is_err());
        assert!(toml::from_str::<Config>("encoding = \"xml\"").is_err());
    }

    #[test]
    fn label_values_are_escaped_truncated_and_empty_ones_left_out() {
        let mut b = Batch::default();
        docker(&mut b, 1, "we\"ird\\na\nme\tx", "stdout", "l");
        let long = "é".repeat(1500);
        docker(&mut b, 1, &long, "stdout", "l");
        b.events[1].meta.container_name = Some(Span::new(0..0));
        let e = exporter("labels = { job = \"{no.such}\", c = \"{container.name}\" }");
        let r = refs(&b);
        let streams = e.streams(&r);
        assert_eq!(streams[0].labels, r#"{c="we\"ird\\na\nme\tx"}"#);
        assert_eq!(
            streams[0].pairs,
            [("c".into(), "we\"ird\\na\nme\tx".into())]
        );
        // Every label empty: Loki would refuse the stream, so it gets a name.
        assert_eq!(streams[1].labels, r#"{service_name="unknown_service"}"#);
        let mut b = Batch::default();
        docker(&mut b, 1, &long, "stdout", "l");
        let e = exporter("labels = { c = \"{container.name}\" }");
        let streams = e.streams(&refs(&b));
        let value = &streams[0].pairs[0].1;
        assert_eq!(value.len(), 2048, "cut at a character boundary");
        assert!(long.starts_with(value.as_str()));
        // {"container_name": "x\xffy"}
        let mut raw = vec![0x81, 0xae];
        raw.extend_from_slice(b"container_name");
        raw.extend_from_slice(&[0xa3, b'x', 0xff, b'y']);
        let mut b = Batch::default();
        let mut ev = Event::new(Timestamp::default(), 0, Bytes::from(raw));
        ev.meta.container_name = Some(Span::new(17..20));
        b.tag_index(b"t", || Bytes::from_static(b"t"));
        b.events.push(ev);
        let streams = e.streams(&refs(&b));
        assert_eq!(streams[0].labels, "{c=\"x\u{fffd}y\"}");
    }

    #[test]
    fn default_labels_are_bounded_and_metadata_carries_the_rest() {
        let e = exporter("");
        let names = |f: &[Field]| f.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&e.labels),
            ["cluster", "container", "job", "namespace"]
        );
        assert_eq!(names(&e.metadata), ["pod", "span_id", "stream", "trace_id"]);
        assert_eq!(e.path, PUSH_PATH);
        assert!(e.tenant.is_none());
        assert_eq!((e.line, e.encoding), (Line::Original, Encoding::Protobuf));
    }

    #[test]
    fn an_endpoint_naming_the_push_path_is_used_as_it_is() {
        let client = HttpClient {
            endpoint: "https://gw.example/loki/api/v1/push".into(),
            headers: Default::default(),
            auth: None,
            tls: None,
            compression: Compression::Gzip,
            timeout_ms: 1000,
            http2: false,
        };
        let e =
            Exporter::try_new(&client, &toml::from_str("").unwrap(), &Default::default()).unwrap();
        assert_eq!(e.path, "");
    }

    #[test]
    fn requests_group_streams_sort_entries_and_carry_metadata() {
        let mut b = Batch::default();
        docker(&mut b, 30, "api", "stdout", "api third");
        docker(&mut b, 10, "web", "stderr", "web only");
        docker(&mut b, 20, "api", "stdout", "api second");
        docker(&mut b, 20, "api", "stdout", "api second, same time");
        docker(&mut b, 10, "api", "stdout", "api first");
        docker(&mut b, 10, "api", "stderr", "api stderr");
        b.events[0].meta.trace_id = Some([0x4b; 16]);
        b.events[0].meta.span_id = Some([0x0f; 8]);
        let e = exporter("");
        let r = refs(&b);
        let req = e.request(&r, &e.streams(&r));
        let labels: Vec<&str> = req.streams.iter().map(|s| s.labels.as_str()).collect();
        assert_eq!(
            labels,
            [
                r#"{container="api", job="outrigger"}"#,
                r#"{container="web", job="outrigger"}"#
            ]
        );
        let api = &req.streams[0].entries;
        let lines: Vec<&str> = api.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "api first",
                "api stderr",
                "api second",
                "api second, same time",
                "api third"
            ]
        );
        let ts: Vec<(i64, i32)> = api
            .iter()
            .map(|e| e.timestamp.map(|t| (t.seconds, t.nanos)).unwrap())
            .collect();
        assert_eq!(ts, [(10, 5), (10, 5), (20, 5), (20, 5), (30, 5)]);
        let md = |e: &proto::EntryAdapter| {
            e.structured_metadata
                .iter()
                .map(|p| format!("{}={}", p.name, p.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            md(&api[4]),
            [
                "span_id=0f0f0f0f0f0f0f0f",
                "stream=stdout",
                &format!("trace_id={}", "4b".repeat(16))
            ]
        );
        assert_eq!(md(&api[1]), ["stream=stderr"]);
        // The snappy-compressed body decodes to the same request.
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap();
        assert_eq!(decode(&body), req);
    }

    #[test]
    fn a_line_event_gets_the_labels_and_line_of_a_forwarded_one() {
        // The same line, forwarded by an agent as a record and read from its file as a
        // line, under the same Kubernetes tag: same stream labels, same line.
        let mut b = Batch::default();
        let tag = format!("kube.var.log.containers.web-7d9f_shop_app-{K8S_ID}.log");
        let t = b.tag_index(tag.as_bytes(), || Bytes::from(tag.clone()));
        let (rec, s) = record(&[("stream", "stderr"), ("log", "disk full")]);
        let mut e = Event::new(Timestamp { secs: 1, nanos: 0 }, t, rec);
        (e.meta.stream, e.meta.line) = (Some(s[0]), Some(s[1]));
        b.events.push(e);
        let text = "2026-12-04T10:00:00Z stderr F disk full";
        let (line, stream) = (Span::new(30..text.len()), Span::new(21..27));
        let e = Event::line(
            Timestamp { secs: 2, nanos: 0 },
            t,
            Bytes::from(text),
            line,
            Some(stream),
        );
        b.events.push(e);
        crate::pipeline::kubernetes::annotate(&mut b);
        let e = exporter(
            "labels = { namespace = \"{k8s.namespace.name}\", pod = \"{k8s.pod.name}\", stream = \"{log.iostream}\" }",
        );
        let r = refs(&b);
        let req = e.request(&r, &e.streams(&r));
        assert_eq!(req.streams.len(), 1, "one stream for both");
        assert_eq!(
            req.streams[0].labels,
            r#"{namespace="shop", pod="web-7d9f", stream="stderr"}"#
        );
        let lines: Vec<&str> = req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(lines, ["disk full", "disk full"]);
    }

    #[test]
    fn lines_original_fallbacks_and_json() {
        let mut b = Batch::default();
        docker(&mut b, 1, "api", "stdout", "a \u{1F600} line\n");
        // Enrichment off: no meta at all, the line is found in the record.
        let (rec, _) = record(&[("source", "stdout"), ("log", "found")]);
        b.events
            .push(Event::new(Timestamp { secs: 2, nanos: 0 }, 0, rec));
        // No line key: the record as JSON, without what moved to the resource.
        let (rec, s) = record(&[("msg", "hi \"there\""), ("container_name", "/api")]);
        let mut e = Event::new(Timestamp { secs: 3, nanos: 0 }, 0, rec);
        e.meta.container_name = Some(s[1]);
        e.meta.incomplete = true;
        b.events.push(e);
        // Invalid UTF-8 in the line.
        docker(&mut b, 4, "api", "stdout", "ab");
        let last = b.events.last_mut().unwrap();
        let mut raw = last.record.to_vec();
        let at = (last.meta.line.unwrap().start + 1) as usize;
        raw[at] = 0xff;
        last.record = Bytes::from(raw);
        b.fields = Arc::from(vec![(
            Bytes::from_static(b"host"),
            Bytes::from_static(b"h1"),
        )]);
        let e = exporter("labels = { job = \"x\" }\nstructured_metadata = {}");
        let r = refs(&b);
        let req = e.request(&r, &e.streams(&r));
        let lines: Vec<&str> = req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.as_str())
            .collect();
        assert_eq!(
            lines,
            [
                "a \u{1F600} line\n",
                "found",
                r#"{"msg":"hi \"there\"","host":"h1"}"#,
                "a\u{fffd}"
            ]
        );
        let e = exporter("labels = { job = \"x\" }\nline = \"json\"");
        let req = e.request(&r, &e.streams(&r));
        let first: serde_json::Value =
            serde_json::from_str(&req.streams[0].entries[0].line).unwrap();
        assert_eq!(first["record"]["log"], "a \u{1F600} line\n");
        assert_eq!(first["resource"]["container.name"], "api");
        assert_eq!(first["time"], "1970-01-01T00:00:01.000000005Z");
    }

    #[test]
    fn the_json_encoding() {
        let mut b = Batch::default();
        docker(&mut b, 1_700_000_000, "api", "stdout", "second");
        docker(&mut b, 1_699_999_999, "api", "stdout", "first \"quoted\"");
        docker(&mut b, 1_700_000_000, "w\"eb", "stdout", "web");
        b.events[0].meta.trace_id = Some([0x11; 16]);
        let e = exporter(
            "encoding = \"json\"\nlabels = { job = \"o\", c = \"{container.name}\" }\nstructured_metadata = { trace_id = \"{trace_id}\" }",
        );
        let r = refs(&b);
        let body = e.json(&r, &e.streams(&r));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"streams": [
                {"stream": {"c": "api", "job": "o"}, "values": [
                    ["1699999999000000005", "first \"quoted\""],
                    ["1700000000000000005", "second", {"trace_id": "11".repeat(16)}],
                ]},
                {"stream": {"c": "w\"eb", "job": "o"}, "values": [
                    ["1700000000000000005", "web"],
                ]},
            ]})
        );
    }

    #[test]
    fn k8s_tags_fill_namespace_and_container() {
        let mut b = Batch::default();
        let tag = format!("kube.var.log.containers.web-7d9f_shop_app-{K8S_ID}.log");
        let t = b.tag_index(tag.as_bytes(), || Bytes::from(tag.clone()));
        b.k8s = vec![crate::pipeline::kubernetes::parse(tag.as_bytes())];
        let (rec, s) = record(&[("log", "x"), ("stream", "stdout")]);
        let mut e = Event::new(Timestamp::default(), t, rec);
        e.meta.line = Some(s[0]);
        b.events.push(e);
        let e = exporter("");
        let r = refs(&b);
        let req = e.request(&r, &e.streams(&r));
        assert_eq!(
            req.streams[0].labels,
            r#"{container="app", job="outrigger", namespace="shop"}"#
        );
        assert_eq!(
            req.streams[0].entries[0].structured_metadata,
            [proto::LabelPairAdapter {
                name: "pod".into(),
                value: "web-7d9f".into()
            }]
        );
    }
}
