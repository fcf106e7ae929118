//! Parse and enrich: turning raw container output into searchable, trace-correlated events.
//!
//! Each source drives it through a [`Stage`] (one per connection or file) on the batch it just
//! read, before routing: CPU only, no awaits. Per event it reads the record's Docker fields
//! ([`record`]), joins split long lines ([`partial`]) and stack traces ([`multiline`]), parses
//! a JSON line ([`json`]) or, for a record that carries the application's fields itself, walks
//! the record ([`record::found`]), then scans a text line; and writes what it found into
//! [`Meta`] as spans of the record: trace context ([`trace`]), severity ([`severity`]), time
//! ([`timefmt`]), container and Kubernetes names. Keys mean the same in a line and in a record ([`fields`]).
//! The line itself is never rewritten; encoders splice its fields.
//!
//! Enrichment never breaks an event: a line that does not parse, breaks a limit or carries a
//! malformed ID goes on as it is, and a counter says why.

pub mod fields;
pub mod json;
pub mod kubernetes;
pub mod multiline;
pub mod partial;
pub mod record;
pub mod severity;
pub mod stage;
pub mod timefmt;
pub mod trace;

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;

use crate::event::{Batch, Event, Form, Member, Members, Meta, Span};
use fields::{KeyTable, Role};
use partial::Reassembler;
pub use stage::{Release, Stage};

/// Members an enricher's buffer keeps room for between batches (20 bytes each).
const MEMBERS_KEPT: usize = 4096;

/// Objects that loggers put context fields in (MDC, Log4j2's `contextMap`, logrus/zap field
/// groups, an `otel` map of OpenTelemetry's ids): trace keys are also looked for one level
/// inside them.
const TRACE_CONTAINERS: &[&str] = &[
    "otel",
    "context",
    "ctx",
    "mdc",
    "contextMap",
    "labels",
    "attributes",
    "fields",
];

/// Enrichment settings, built once from the configuration and shared by every connection.
#[derive(Debug)]
pub struct Settings {
    pub line_key: Bytes,
    pub parse_json: bool,
    pub keys: KeyTable,
    pub families: fields::Families,
    pub limits: json::Limits,
    pub trace_from_text: Option<trace::TextScanner>,
    pub severity_from_text: bool,
    /// Attributes added to every event (node name, cluster...).
    pub resource: Arc<[(Bytes, Bytes)]>,
    pub partial: partial::Limits,
    /// Stack-trace joining for streams that do not say otherwise (`None`: off).
    pub multiline: Option<multiline::Settings>,
    /// Its bounds, for a stream that turns it on (a pod's annotation).
    pub multiline_limits: multiline::Settings,
    /// Record each JSON line's members ([`Batch::members`]) for the exporters that read
    /// them. On unless the topology finds no sink that does: recording them costs about a
    /// fifth of a JSON line's enrichment.
    pub members: bool,
}

/// What a config file says about enrichment, before it is compiled into [`Settings`].
#[derive(Debug, Clone)]
pub struct Options {
    pub enabled: bool,
    pub line_key: String,
    pub parse_json: bool,
    pub limits: json::Limits,
    pub trace: Vec<trace::Family>,
    pub trace_from_text: bool,
    pub severity_from_text: bool,
    pub level_keys: Vec<String>,
    pub level_name_keys: Vec<String>,
    pub message_keys: Vec<String>,
    pub time_key: Option<String>,
    pub resource: Vec<(String, String)>,
    pub partial: partial::Limits,
    pub multiline: Option<multiline::Settings>,
    pub multiline_limits: multiline::Settings,
}

impl Settings {
    /// Compiles `options`; `None` when enrichment is off.
    pub fn new(o: &Options) -> Option<Settings> {
        if !o.enabled {
            return None;
        }
        let mut keys = KeyTable::default();
        let mut formats = Vec::new();
        for (i, family) in o.trace.iter().enumerate() {
            let i = i as u16;
            formats.push(family.format);
            // Top level first, then the objects loggers group context fields in; within each,
            // the family's own key order.
            for (loc, prefix) in [""].iter().chain(TRACE_CONTAINERS).enumerate() {
                let path = |k: &String| {
                    if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    }
                };
                let p = |j: usize| (loc * 64 + j.min(63)) as u16;
                for (j, k) in family.trace.iter().enumerate() {
                    keys.insert(&path(k), Role::Trace(i, p(j)));
                }
                for (j, k) in family.span.iter().enumerate() {
                    keys.insert(&path(k), Role::Span(i, p(j)));
                }
                for (j, k) in family.flags.iter().enumerate() {
                    keys.insert(&path(k), Role::Flags(i, p(j)));
                }
            }
        }
        for (i, k) in o.level_keys.iter().enumerate() {
            keys.insert(k, Role::Level(i as u16));
        }
        for (i, k) in o.level_name_keys.iter().enumerate() {
            keys.insert(k, Role::LevelName((o.level_keys.len() + i) as u16));
        }
        for (i, k) in o.message_keys.iter().enumerate() {
            keys.insert(k, Role::Message(i as u16));
        }
        if let Some(k) = &o.time_key {
            keys.insert(k, Role::Time);
        }
        Some(Settings {
            line_key: Bytes::from(o.line_key.clone()),
            parse_json: o.parse_json,
            keys,
            families: fields::Families { formats },
            limits: o.limits,
            trace_from_text: o.trace_from_text.then(trace::TextScanner::new),
            severity_from_text: o.severity_from_text,
            resource: o
                .resource
                .iter()
                .map(|(k, v)| (Bytes::from(k.clone()), Bytes::from(v.clone())))
                .collect(),
            partial: o.partial,
            multiline: o.multiline.clone(),
            multiline_limits: o.multiline_limits.clone(),
            members: true,
        })
    }
}

/// Enrichment counters of one source, bumped once per batch.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Lines that looked like JSON but stayed text, by reason.
    pub parse_errors: [Counter; 4],
    pub trace_ids: Counter,
    pub invalid_trace_ids: Counter,
    /// Split lines joined, by outcome: complete, timeout, overflow, gap, flush.
    pub partial: [Counter; 5],
    pub multiline: Counter,
}

/// Counts for one batch, added to [`Metrics`] at its end.
#[derive(Debug, Default)]
struct Tally {
    parse_errors: [u64; 4],
    trace_ids: u64,
    invalid_trace_ids: u64,
    partial: [u64; 5],
    multiline: u64,
}

/// One stream's enrichment state: pending split lines and stack traces. Sources reach it
/// through [`Stage`], which also owns when held lines are released.
#[derive(Debug)]
pub struct Enricher {
    settings: Arc<Settings>,
    partial: Reassembler,
    multiline: Option<multiline::Joiner>,
    metrics: Metrics,
    done: Vec<partial::Done>,
    /// Members of the JSON lines enriched since the last batch was finished, and of the
    /// lines the stack-trace joiner still holds; events point into it until their batch is
    /// finished, which copies theirs into the batch.
    members: Vec<Member>,
    /// What the stream's batches carry as resource attributes: the static ones, then those
    /// its source gave its last batch (a pod's, from the Kubernetes API), kept for the lines
    /// it releases later.
    resource: Arc<[(Bytes, Bytes)]>,
    /// The source's own part of `resource`.
    extra: Arc<[(Bytes, Bytes)]>,
}

impl Enricher {
    pub fn new(settings: Arc<Settings>, metrics: Metrics) -> Enricher {
        Enricher {
            partial: Reassembler::new(settings.partial),
            multiline: settings.multiline.clone().map(multiline::Joiner::new),
            resource: settings.resource.clone(),
            extra: Arc::new([]),
            settings,
            metrics,
            done: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Turns stack-trace joining on or off for this stream (`None`: as configured), once
    /// nothing is held in it: a block being joined is finished first.
    fn set_multiline(&mut self, on: Option<bool>) {
        let on = on.unwrap_or(self.settings.multiline.is_some());
        match (&self.multiline, on) {
            (None, true) => {
                let limits = self.settings.multiline_limits.clone();
                self.multiline = Some(multiline::Joiner::new(limits));
            }
            (Some(j), false) if j.oldest().is_none() => self.multiline = None,
            _ => {}
        }
    }

    /// Takes the resource attributes the source gave `batch` (none, for most sources) as the
    /// stream's, after the static ones.
    fn adopt(&mut self, batch: &mut Batch) {
        if batch.resource[..] != self.extra[..] {
            self.extra = std::mem::replace(&mut batch.resource, Arc::new([]));
            self.resource = if self.extra.is_empty() {
                self.settings.resource.clone()
            } else {
                let both = self.settings.resource.iter().chain(self.extra.iter());
                both.cloned().collect()
            };
        }
        batch.resource = self.resource.clone();
    }

    /// When held lines must be flushed even if no more input arrives.
    /// When the oldest line held began.
    fn oldest(&self) -> Option<Instant> {
        let m = self.multiline.as_ref().and_then(|m| m.oldest());
        match (self.partial.oldest(), m) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let m = self.multiline.as_ref().and_then(|m| m.deadline());
        match (self.partial.deadline(), m) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Enriches every event of `batch` in place. Fragments of split lines are taken out and
    /// come back, joined, in the batch that completes them.
    pub fn process(&mut self, batch: &mut Batch) {
        let mut tally = Tally::default();
        // A vector of exactly the events' size: the queues charge its capacity, so one grown
        // by doubling (or reused from a larger batch) would make them look fuller than they are.
        let n = batch.events.len();
        let events = std::mem::replace(&mut batch.events, Vec::with_capacity(n));
        self.adopt(batch);
        for e in events {
            let fields = fields_of(&e, &self.settings.line_key);
            if let Some(split) = self.split(&e, &fields) {
                let piece = fields
                    .line
                    .clone()
                    .map(|r| &e.record[r])
                    .unwrap_or_default();
                let tag = batch.tags[e.tag as usize].clone();
                self.partial.push(&tag, &e, piece, split, &mut self.done);
                self.take_done(batch, &mut tally);
                continue;
            }
            let mut e = e;
            enrich(
                &self.settings,
                &mut e,
                &fields,
                &mut self.members,
                &mut tally,
            );
            self.push(batch, e, &mut tally, Instant::now());
        }
        self.finish(batch);
        self.count(&tally);
    }

    /// Emits lines whose time is up, into `batch`.
    fn expire(&mut self, batch: &mut Batch) {
        let mut tally = Tally::default();
        let now = Instant::now();
        self.partial.expire(now, &mut self.done);
        self.take_done(batch, &mut tally);
        if let Some(ready) = self.multiline.as_mut().map(|m| m.expire(now)) {
            self.add_joined(batch, ready, &mut tally);
        }
        batch.resource = self.resource.clone();
        self.finish(batch);
        self.count(&tally);
    }

    /// Bytes held in split lines being joined.
    fn held_bytes(&self) -> usize {
        self.partial.held_bytes()
    }

    /// Emits the split lines being joined as they are, marked incomplete (there is no memory
    /// to hold them), into `batch`.
    fn shed(&mut self, batch: &mut Batch) {
        let mut tally = Tally::default();
        self.partial.shed(&mut self.done);
        self.take_done(batch, &mut tally);
        batch.resource = self.resource.clone();
        self.finish(batch);
        self.count(&tally);
    }

    /// Emits everything held (the connection is ending), into `batch`.
    fn flush(&mut self, batch: &mut Batch) {
        let mut tally = Tally::default();
        self.partial.flush(&mut self.done);
        self.take_done(batch, &mut tally);
        if let Some(ready) = self.multiline.as_mut().map(|m| m.flush()) {
            self.add_joined(batch, ready, &mut tally);
        }
        batch.resource = self.resource.clone();
        self.finish(batch);
        self.count(&tally);
    }

    /// Where `e` belongs when it is a piece of a split line, in the pipeline's one notion
    /// of them ([`partial::Split`]): Docker's `partial_*` fields of a record, or a line's
    /// `continued` flag (CRI's `P`; the `F` after it ends the line its stream is joining).
    fn split(&self, e: &Event, fields: &record::Fields) -> Option<partial::Split> {
        match e.form {
            Form::Record => fields.partial.as_ref().map(|p| partial::Split {
                id: e.record.slice(p.id.clone()),
                ordinal: p.ordinal,
                last: p.last,
            }),
            Form::Line => {
                // One stage reads one file: its stream tells its lines apart.
                let id = fields
                    .source
                    .clone()
                    .map_or_else(Bytes::new, |r| e.record.slice(r));
                (e.meta.continued || self.partial.is_pending(&id)).then(|| partial::Split {
                    id,
                    ordinal: 0,
                    last: !e.meta.continued,
                })
            }
        }
    }

    /// Enriches joined lines and adds them to `batch`.
    fn take_done(&mut self, batch: &mut Batch, tally: &mut Tally) {
        for d in std::mem::take(&mut self.done) {
            let outcome = d.cut.map_or(0, |c| 1 + c as usize);
            tally.partial[outcome] += 1;
            let mut e = rejoin(&d.first, &self.settings.line_key, &d.line);
            e.tag = batch.tag_index(&d.tag, || d.tag.clone());
            batch.size += e.record.len();
            let fields = fields_of(&e, &self.settings.line_key);
            enrich(&self.settings, &mut e, &fields, &mut self.members, tally);
            e.meta.joined = true;
            e.meta.incomplete = d.cut.is_some();
            self.push(batch, e, tally, d.since);
        }
    }

    /// Hands `e` (what it holds held since `since`) to the stack-trace joiner when it is
    /// on, else to the batch.
    fn push(&mut self, batch: &mut Batch, e: Event, tally: &mut Tally, since: Instant) {
        match &mut self.multiline {
            None => batch.events.push(e),
            Some(m) => {
                let tag = batch.tags[e.tag as usize].clone();
                let ready = m.push(e, tag, since);
                self.add_joined(batch, ready, tally);
            }
        }
    }

    /// Adds what the joiner released to `batch`, enriching the blocks it built (their record
    /// is new; an event it passes on as it came keeps its enrichment and marks).
    fn add_joined(&mut self, batch: &mut Batch, ready: Vec<multiline::Ready>, tally: &mut Tally) {
        for multiline::Ready { tag, event, built } in ready {
            let mut e = event;
            e.tag = batch.tag_index(&tag, || tag.clone());
            if built {
                tally.multiline += 1;
                batch.size += e.record.len();
                let fields = fields_of(&e, &self.settings.line_key);
                enrich(&self.settings, &mut e, &fields, &mut self.members, tally);
                e.meta.joined = true;
            }
            batch.events.push(e);
        }
    }

    /// What every enriched batch gets once its events are final (joined lines included): the
    /// side table of its JSON lines' members and the Kubernetes names of its tags.
    fn finish(&mut self, batch: &mut Batch) {
        let n = batch
            .events
            .iter()
            .map(|e| e.meta.members.len as usize)
            .sum();
        // Exactly its size: the queues charge the capacity.
        let mut table = Vec::with_capacity(n);
        for e in &mut batch.events {
            e.meta.members = take(&self.members, e.meta.members, &mut table);
        }
        batch.members = table;
        // Only the lines the joiner holds still point here.
        match &mut self.multiline {
            None => {
                self.members.clear();
                // What one huge batch needed is not kept for the connection's life: this
                // buffer is outside the budget's count.
                self.members.shrink_to(MEMBERS_KEPT);
            }
            Some(m) => {
                let old = std::mem::take(&mut self.members);
                for e in m.held_mut() {
                    e.meta.members = take(&old, e.meta.members, &mut self.members);
                }
            }
        }
        kubernetes::annotate(batch);
    }

    fn count(&self, t: &Tally) {
        for (c, n) in self.metrics.parse_errors.iter().zip(t.parse_errors) {
            if n > 0 {
                c.inc_by(n);
            }
        }
        for (c, n) in self.metrics.partial.iter().zip(t.partial) {
            if n > 0 {
                c.inc_by(n);
            }
        }
        if t.trace_ids > 0 {
            self.metrics.trace_ids.inc_by(t.trace_ids);
        }
        if t.invalid_trace_ids > 0 {
            self.metrics.invalid_trace_ids.inc_by(t.invalid_trace_ids);
        }
        if t.multiline > 0 {
            self.metrics.multiline.inc_by(t.multiline);
        }
    }
}

/// Copies the members `range` names in `from` to the end of `to`; their range there.
fn take(from: &[Member], range: Members, to: &mut Vec<Member>) -> Members {
    let Some(found) = from.get(range.start as usize..(range.start + range.len) as usize) else {
        return Members::default();
    };
    let start = to.len() as u32;
    to.extend_from_slice(found);
    Members {
        start,
        len: range.len,
    }
}

/// The fields enrichment reads first: a record's Docker fields, or what a line's source found.
fn fields_of(e: &Event, line_key: &[u8]) -> record::Fields {
    let range = |s: Span| s.start as usize..(s.start + s.len) as usize;
    match e.form {
        Form::Record => record::fields(&e.record, line_key),
        Form::Line => record::Fields {
            line: e.meta.line.map(range),
            source: e.meta.stream.map(range),
            ..Default::default()
        },
    }
}

/// The event of a joined line: `first` (the first piece or line of it) with `line` as its
/// line. A record is written again with `line` under the line key and without `partial_*`;
/// a line gets `line` in place of its own and keeps the rest of what was read (the CRI
/// prefix with its stream).
fn rejoin(first: &Event, line_key: &[u8], line: &[u8]) -> Event {
    let mut e = match (first.form, first.meta.line) {
        (Form::Line, Some(at)) => {
            let (start, end) = (at.start as usize, (at.start + at.len) as usize);
            let mut bytes = Vec::with_capacity(first.record.len() - at.len as usize + line.len());
            bytes.extend_from_slice(&first.record[..start]);
            bytes.extend_from_slice(line);
            bytes.extend_from_slice(&first.record[end..]);
            // A stream after the line would have moved; sources put theirs before it.
            let stream = first.meta.stream.filter(|s| s.start + s.len <= at.start);
            let at = Span::new(start..start + line.len());
            Event::line(first.time, first.tag, Bytes::from(bytes), at, stream)
        }
        _ => {
            let record = record::rewrite(&first.record, line_key, line);
            Event::new(first.time, first.tag, Bytes::from(record))
        }
    };
    e.meta.joined = true;
    e
}

/// Fills `e.meta` from the record's fields and its line; a JSON line's members go to
/// `members`, which `e.meta.members` then points into.
///
/// A JSON line is the application's own structure and is all that is read. Otherwise the
/// record's fields are (the application sent them as the record itself, with no line or
/// beside a text line), then a text line is scanned for what they did not give.
fn enrich(
    s: &Settings,
    e: &mut Event,
    fields: &record::Fields,
    members: &mut Vec<Member>,
    tally: &mut Tally,
) {
    let mut meta = Meta {
        container_id: fields.container_id.clone().map(Span::new),
        stream: fields.source.clone().map(Span::new),
        ..Meta::default()
    };
    if let Some(name) = fields.container_name.clone() {
        // Docker sends the name with a leading slash.
        let skip = usize::from(e.record.get(name.start) == Some(&b'/'));
        meta.container_name = Some(Span::new(name.start + skip..name.end));
    }
    let line = fields.line.clone();
    if let Some(range) = line.clone() {
        meta.line = Some(Span::new(range.clone()));
        let text = &e.record[range.clone()];
        if s.parse_json && json::looks_like_object(text) {
            let first = members.len();
            let wanted = s.members.then_some(&mut *members);
            match json::parse(text, &s.keys, &s.families, &s.limits, wanted) {
                Ok(found) => {
                    meta.json = true;
                    for m in &mut members[first..] {
                        m.key.start += range.start as u32;
                        m.value.start += range.start as u32;
                    }
                    meta.members = Members {
                        start: first as u32,
                        len: (members.len() - first) as u32,
                    };
                    let at = |r: Range<usize>| range.start + r.start..range.start + r.end;
                    adopt(&mut meta, &mut e.time, found, at, tally);
                }
                Err(r) => tally.parse_errors[r as usize] += 1,
            }
        }
    }
    if !meta.json {
        let mut found = match e.form {
            Form::Record => record::found(&e.record, &s.line_key, &s.keys, &s.families),
            // A line has no fields of its own.
            Form::Line => fields::Found::default(),
        };
        if line.is_some() {
            // A line is the event's text; a message field beside it stays a field.
            found.message = None;
        } else {
            meta.message_in_record = found.message.is_some();
        }
        adopt(&mut meta, &mut e.time, found, |r| r, tally);
    }
    if let (Some(range), false) = (line, meta.json) {
        let text = &e.record[range];
        if meta.trace_id.is_none()
            && let Some(t) = s.trace_from_text.as_ref().and_then(|t| t.scan(text))
        {
            meta.trace_id = Some(t.trace_id);
            meta.span_id = t.span_id;
            meta.trace_flags = t.flags;
        }
        if s.severity_from_text && meta.severity == 0 {
            meta.severity = severity::scan_text(text).map_or(0, |s| s.0);
        }
    }
    if meta.trace_id.is_some() {
        tally.trace_ids += 1;
    }
    e.meta = meta;
}

/// Takes what a walk found into `meta` (and the event's `time`); `at` turns the walk's
/// ranges into ranges of the record.
fn adopt(
    meta: &mut Meta,
    time: &mut crate::event::Timestamp,
    found: fields::Found,
    at: impl Fn(Range<usize>) -> Range<usize>,
    tally: &mut Tally,
) {
    if let Some(t) = found.trace {
        meta.trace_id = Some(t.trace_id);
        meta.span_id = t.span_id;
        meta.trace_flags = t.flags;
    } else if found.trace_invalid {
        tally.invalid_trace_ids += 1;
    }
    if let Some(sev) = found.severity {
        meta.severity = sev.0;
        meta.severity_text = found.severity_text.map(|r| Span::new(at(r)));
    }
    meta.message = found.message.map(|r| Span::new(at(r)));
    if let Some(t) = found.time {
        *time = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;

    fn settings(edit: impl FnOnce(&mut crate::config::Enrich)) -> Arc<Settings> {
        let mut e = crate::config::Enrich::default();
        edit(&mut e);
        Arc::new(Settings::new(&e.options()).unwrap())
    }

    fn docker_record(line: &[u8]) -> Bytes {
        let mut r = Vec::new();
        rmp::encode::write_map_len(&mut r, 4).unwrap();
        for (k, v) in [
            ("container_id", &b"c0ffee"[..]),
            ("container_name", b"/web-1"),
            ("source", b"stdout"),
            ("log", line),
        ] {
            rmp::encode::write_str(&mut r, k).unwrap();
            rmp::encode::write_str_len(&mut r, v.len() as u32).unwrap();
            r.extend_from_slice(v);
        }
        Bytes::from(r)
    }

    /// Runs one line through a fresh enricher; returns the batch and the metrics.
    fn run(settings: &Arc<Settings>, line: &[u8]) -> (Batch, Metrics) {
        run_record(settings, docker_record(line))
    }

    /// Runs one record through a fresh enricher.
    fn run_record(settings: &Arc<Settings>, record: Bytes) -> (Batch, Metrics) {
        let metrics = Metrics::default();
        let mut en = Enricher::new(settings.clone(), metrics.clone());
        let mut batch = Batch::default();
        let tag = batch.tag_index(b"docker.web", || Bytes::from_static(b"docker.web"));
        batch.events.push(Event::new(
            Timestamp {
                secs: 1_700_000_000,
                nanos: 0,
            },
            tag,
            record,
        ));
        en.process(&mut batch);
        (batch, metrics)
    }

    /// `v` as MessagePack, the way a fluent-logger library would send the same fields.
    fn msgpack(v: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value as V;
        match v {
            V::Null => rmp::encode::write_nil(out).unwrap(),
            V::Bool(b) => rmp::encode::write_bool(out, *b).unwrap(),
            V::Number(n) => {
                if let Some(u) = n.as_u64() {
                    rmp::encode::write_uint(out, u).unwrap();
                } else if let Some(i) = n.as_i64() {
                    rmp::encode::write_sint(out, i).unwrap();
                } else {
                    rmp::encode::write_f64(out, n.as_f64().unwrap()).unwrap();
                }
            }
            V::String(s) => rmp::encode::write_str(out, s).unwrap(),
            V::Array(a) => {
                rmp::encode::write_array_len(out, a.len() as u32).unwrap();
                a.iter().for_each(|v| msgpack(v, out));
            }
            V::Object(o) => {
                rmp::encode::write_map_len(out, o.len() as u32).unwrap();
                for (k, v) in o {
                    rmp::encode::write_str(out, k).unwrap();
                    msgpack(v, out);
                }
            }
        }
    }

    /// The corpus cases whose line is a JSON object, as records carrying its fields.
    fn as_records(cases: &[serde_json::Value]) -> Vec<(&serde_json::Value, Bytes)> {
        cases
            .iter()
            .filter_map(|c| {
                let v: serde_json::Value = serde_json::from_str(c["line"].as_str()?).ok()?;
                v.is_object().then(|| {
                    let mut out = Vec::new();
                    msgpack(&v, &mut out);
                    (c, Bytes::from(out))
                })
            })
            .collect()
    }

    fn cases(file: &str) -> Vec<serde_json::Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/enrich")
            .join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn trace_corpus() {
        let s = settings(|_| {});
        let cases = cases("trace-cases.jsonl");
        assert!(cases.len() >= 40, "{} cases", cases.len());
        let mut failures = Vec::new();
        for c in &cases {
            let (b, _) = run(&s, c["line"].as_str().unwrap().as_bytes());
            let m = b.events[0].meta;
            let got = (
                m.trace_id.map(hex::encode),
                m.trace_id.and(m.span_id).map(hex::encode),
                m.trace_id.and(m.trace_flags).map(u64::from),
            );
            let want = (
                c["trace_id"].as_str().map(String::from),
                c["span_id"].as_str().map(String::from),
                c["flags"].as_u64(),
            );
            if got != want {
                failures.push(format!("{}: got {got:?}, want {want:?}", c["name"]));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn severity_corpus() {
        let s = settings(|_| {});
        let cases = cases("severity-cases.jsonl");
        assert!(cases.len() >= 40, "{} cases", cases.len());
        let mut failures = Vec::new();
        for c in &cases {
            let (b, _) = run(&s, c["line"].as_str().unwrap().as_bytes());
            let got = b.events[0].meta.severity;
            if u64::from(got) != c["severity_number"].as_u64().unwrap() {
                failures.push(format!(
                    "{}: got {got}, want {}",
                    c["name"], c["severity_number"]
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn records_carrying_the_fields_are_enriched_like_json_lines() {
        // Every JSON-object case of both corpora, sent as the record itself (no line), as
        // fluent-logger libraries send fields: the same trace context and severity.
        let s = settings(|_| {});
        let mut failures = Vec::new();
        let traces = cases("trace-cases.jsonl");
        let records = as_records(&traces);
        assert!(records.len() >= 40, "{} JSON cases", records.len());
        for (c, record) in records {
            let (b, _) = run_record(&s, record);
            let m = b.events[0].meta;
            let got = (
                m.trace_id.map(hex::encode),
                m.trace_id.and(m.span_id).map(hex::encode),
                m.trace_id.and(m.trace_flags).map(u64::from),
            );
            let want = (
                c["trace_id"].as_str().map(String::from),
                c["span_id"].as_str().map(String::from),
                c["flags"].as_u64(),
            );
            if got != want {
                failures.push(format!("trace {}: got {got:?}, want {want:?}", c["name"]));
            }
        }
        let severities = cases("severity-cases.jsonl");
        let records = as_records(&severities);
        assert!(records.len() >= 30, "{} JSON cases", records.len());
        for (c, record) in records {
            let (b, _) = run_record(&s, record);
            let got = b.events[0].meta.severity;
            if u64::from(got) != c["severity_number"].as_u64().unwrap() {
                failures.push(format!(
                    "severity {}: got {got}, want {}",
                    c["name"], c["severity_number"]
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_record_without_a_line_gives_its_message_level_and_time() {
        let s = settings(|e| e.time_key = "ts".into());
        // {"message": "disk \"full\"", "severity": 50, "ts": EventTime, "dd": {"trace_id":
        //  1234 (u64), "span_id": 5678}}, a bin value and an integer key in between.
        let mut r = Vec::new();
        rmp::encode::write_map_len(&mut r, 6).unwrap();
        rmp::encode::write_str(&mut r, "message").unwrap();
        rmp::encode::write_str(&mut r, "disk \"full\"").unwrap();
        rmp::encode::write_uint(&mut r, 7).unwrap();
        rmp::encode::write_bin(&mut r, &[0xff, 0]).unwrap();
        rmp::encode::write_str(&mut r, "blob").unwrap();
        rmp::encode::write_bin(&mut r, &[1, 2, 3]).unwrap();
        rmp::encode::write_str(&mut r, "severity").unwrap();
        rmp::encode::write_uint(&mut r, 50).unwrap();
        rmp::encode::write_str(&mut r, "ts").unwrap();
        r.extend_from_slice(&[0xd7, 0x00]);
        r.extend_from_slice(&1_600_000_000u32.to_be_bytes());
        r.extend_from_slice(&42u32.to_be_bytes());
        rmp::encode::write_str(&mut r, "dd").unwrap();
        rmp::encode::write_map_len(&mut r, 2).unwrap();
        rmp::encode::write_str(&mut r, "trace_id").unwrap();
        rmp::encode::write_uint(&mut r, 1234).unwrap();
        rmp::encode::write_str(&mut r, "span_id").unwrap();
        rmp::encode::write_uint(&mut r, 5678).unwrap();
        let (b, m) = run_record(&s, Bytes::from(r));
        let e = &b.events[0];
        assert!(e.meta.line.is_none() && !e.meta.json);
        assert!(e.meta.message_in_record);
        assert_eq!(
            e.slice(e.meta.message.unwrap()),
            br#"disk "full""#,
            "the string itself"
        );
        assert_eq!(e.meta.severity, 17, "pino's 50 is an error");
        assert!(
            e.meta.severity_text.is_none(),
            "a number is not a level text"
        );
        assert_eq!((e.time.secs, e.time.nanos), (1_600_000_000, 42));
        assert_eq!(
            hex::encode(e.meta.trace_id.unwrap()),
            format!("{:032x}", 1234)
        );
        assert_eq!(
            hex::encode(e.meta.span_id.unwrap()),
            format!("{:016x}", 5678)
        );
        assert_eq!(m.trace_ids.get(), 1);
    }

    #[test]
    fn a_text_line_takes_the_record_fields_first_then_scans_the_text() {
        let s = settings(|_| {});
        // {"log": "ERROR something traceparent=…", "level": "info", "message": "x"}: the
        // record's level wins over the text's; its trace is missing, so the text's is used;
        // the line stays the message.
        let mut r = Vec::new();
        rmp::encode::write_map_len(&mut r, 3).unwrap();
        for (k, v) in [
            (
                "log",
                "ERROR failed traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("level", "info"),
            ("message", "x"),
        ] {
            rmp::encode::write_str(&mut r, k).unwrap();
            rmp::encode::write_str(&mut r, v).unwrap();
        }
        let (b, _) = run_record(&s, Bytes::from(r));
        let m = b.events[0].meta;
        assert_eq!(m.severity, 9);
        assert_eq!(
            hex::encode(m.trace_id.unwrap()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(m.message.is_none() && !m.message_in_record);
        // An invalid ID in a record is counted like one in a line.
        let mut r = Vec::new();
        rmp::encode::write_map_len(&mut r, 1).unwrap();
        rmp::encode::write_str(&mut r, "trace_id").unwrap();
        rmp::encode::write_str(&mut r, "not-a-trace").unwrap();
        let (b, metrics) = run_record(&s, Bytes::from(r));
        assert!(b.events[0].meta.trace_id.is_none());
        assert_eq!(metrics.invalid_trace_ids.get(), 1);
    }

    #[test]
    fn json_line_meta_and_spans() {
        let s = settings(|_| {});
        let line = br#"{"level":"warn","msg":"disk \"full\"","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}"#;
        let (b, m) = run(&s, line);
        let e = &b.events[0];
        assert!(e.meta.json);
        assert_eq!(e.slice(e.meta.line.unwrap()), line);
        assert_eq!(e.slice(e.meta.severity_text.unwrap()), b"warn");
        assert_eq!(e.meta.severity, 13);
        assert_eq!(e.slice(e.meta.message.unwrap()), br#""disk \"full\"""#);
        assert_eq!(e.slice(e.meta.container_name.unwrap()), b"web-1");
        assert_eq!(e.slice(e.meta.stream.unwrap()), b"stdout");
        assert_eq!(hex::encode(e.meta.span_id.unwrap()), "00f067aa0ba902b7");
        assert_eq!(m.trace_ids.get(), 1);
    }

    #[test]
    fn edge_cases_pass_through_as_text_and_are_counted() {
        let s = settings(|e| {
            e.max_depth = 8;
            e.max_fields = 16;
            e.max_line_bytes = 4096;
        });
        let reason = |m: &Metrics, r: json::Rejected| m.parse_errors[r as usize].get();
        // Not JSON at all: text, no parse error.
        let (b, m) = run(&s, b"plain text ERROR here");
        assert!(!b.events[0].meta.json && b.events[0].meta.severity == 17);
        assert_eq!(m.parse_errors.iter().map(Counter::get).sum::<u64>(), 0);
        // Broken JSON.
        let (b, m) = run(&s, br#"{"level":"info","msg":"cut"#);
        assert!(!b.events[0].meta.json);
        assert_eq!(reason(&m, json::Rejected::Invalid), 1);
        // Invalid UTF-8 inside a JSON string: not JSON (simd-json validates), kept as text.
        let (b, m) = run(&s, b"{\"msg\":\"\xff\xfe\"}");
        assert!(!b.events[0].meta.json);
        assert_eq!(reason(&m, json::Rejected::Invalid), 1);
        // Deeper than the limit.
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20));
        let (b, m) = run(&s, deep.as_bytes());
        assert!(!b.events[0].meta.json);
        assert_eq!(reason(&m, json::Rejected::TooDeep), 1);
        // More fields than the limit.
        let wide = format!(
            "{{{}}}",
            (0..20)
                .map(|i| format!("\"k{i}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let (_, m) = run(&s, wide.as_bytes());
        assert_eq!(reason(&m, json::Rejected::TooManyFields), 1);
        // Longer than the limit.
        let long = format!("{{\"msg\":\"{}\"}}", "x".repeat(5000));
        let (_, m) = run(&s, long.as_bytes());
        assert_eq!(reason(&m, json::Rejected::TooLarge), 1);
        // Huge numbers parse (as floats or big integers) without breaking anything.
        let (b, _) = run(
            &s,
            br#"{"n":123456789012345678901234567890,"f":1e308,"level":"info"}"#,
        );
        assert!(b.events[0].meta.json && b.events[0].meta.severity == 9);
        // Duplicate keys: the first trace ID wins.
        let dup = br#"{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","trace_id":"11111111111111111111111111111111"}"#;
        let (b, _) = run(&s, dup);
        assert_eq!(
            hex::encode(b.events[0].meta.trace_id.unwrap()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // A malformed ID is not extracted, and counted.
        let (b, m) = run(&s, br#"{"trace_id":"not-a-trace-id-at-all-0000000000"}"#);
        assert!(b.events[0].meta.trace_id.is_none());
        assert_eq!(m.invalid_trace_ids.get(), 1);
        // All zeros is "no trace", not an error.
        let (b, m) = run(&s, br#"{"trace_id":"00000000000000000000000000000000"}"#);
        assert!(b.events[0].meta.trace_id.is_none());
        assert_eq!(m.invalid_trace_ids.get(), 0);
    }

    #[test]
    fn time_from_a_configured_key() {
        let s = settings(|e| e.time_key = "ts".into());
        let (b, _) = run(&s, br#"{"ts":"2024-05-01T10:00:00.5Z"}"#);
        assert_eq!(
            b.events[0].time,
            Timestamp {
                secs: 1_714_557_600,
                nanos: 500_000_000
            }
        );
        let (b, _) = run(&s, br#"{"ts":1714557600123}"#);
        assert_eq!(
            b.events[0].time,
            Timestamp {
                secs: 1_714_557_600,
                nanos: 123_000_000
            }
        );
        // Absent or invalid: the forward time stays.
        let (b, _) = run(&s, br#"{"ts":"yesterday"}"#);
        assert_eq!(b.events[0].time.secs, 1_700_000_000);
    }

    #[test]
    fn disabled_and_static_resource() {
        assert!(
            Settings::new(
                &crate::config::Enrich {
                    enabled: false,
                    ..Default::default()
                }
                .options()
            )
            .is_none()
        );
        let s = settings(|e| {
            e.resource.insert("k8s.node.name".into(), "node-1".into());
        });
        let (b, _) = run(&s, b"x");
        assert_eq!(
            &b.resource[..],
            &[(
                Bytes::from_static(b"k8s.node.name"),
                Bytes::from_static(b"node-1")
            )]
        );
    }

    #[test]
    fn split_lines_are_joined_across_batches() {
        let s = settings(|_| {});
        let metrics = Metrics::default();
        let mut en = Enricher::new(s, metrics.clone());
        let fragment = |ordinal: u32, last: bool, log: &str| {
            let mut r = Vec::new();
            rmp::encode::write_map_len(&mut r, 6).unwrap();
            for (k, v) in [
                ("container_id", "c1"),
                ("source", "stdout"),
                ("log", log),
                ("partial_message", "true"),
                ("partial_id", "p"),
                ("partial_ordinal", &ordinal.to_string()),
            ] {
                rmp::encode::write_str(&mut r, k).unwrap();
                rmp::encode::write_str(&mut r, v).unwrap();
            }
            let _ = last;
            let mut b = Batch::default();
            let tag = b.tag_index(b"t", || Bytes::from_static(b"t"));
            let mut rec = r;
            // partial_last as a 7th pair
            rec[0] = 0x87;
            rmp::encode::write_str(&mut rec, "partial_last").unwrap();
            rmp::encode::write_str(&mut rec, if last { "true" } else { "false" }).unwrap();
            b.events
                .push(Event::new(Timestamp::default(), tag, Bytes::from(rec)));
            b
        };
        let mut b1 = fragment(1, false, r#"{"level":"error","msg":"#);
        en.process(&mut b1);
        assert!(b1.events.is_empty(), "a fragment is held");
        let mut b2 = fragment(
            2,
            true,
            r#""long","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
        );
        en.process(&mut b2);
        assert_eq!(b2.events.len(), 1);
        let e = &b2.events[0];
        assert!(e.meta.json && e.meta.joined && !e.meta.incomplete);
        assert_eq!(e.meta.severity, 17);
        assert!(
            e.meta.trace_id.is_some(),
            "the trace ID in the tail fragment is found"
        );
        assert_eq!(metrics.partial[0].get(), 1);
    }
}
