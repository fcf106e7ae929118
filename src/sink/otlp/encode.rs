//! Events to an OTLP `ExportLogsServiceRequest`, written as protobuf directly (see
//! [`super::wire`] for why). The mapping is the table in the [`super`] module docs; field
//! numbers are those of `opentelemetry-proto`'s `.proto` files, named in the constants below.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::attributes::{JsonScratch, json_attrs, json_object, message_member};
use super::wire::{Writer, delimited_len};
use super::{Body, MAX_DEPTH};
use crate::event::{Event, Member, Span, Timestamp};
use crate::msgpack::{self, Cursor, Kind};
use crate::pipeline::severity::Severity;
use crate::sink::export::Ref;
use crate::sink::jsonl::{Shape, TimeCache};

// ExportLogsServiceRequest
const REQUEST_RESOURCE_LOGS: u32 = 1;
// ResourceLogs
const RESOURCE_LOGS_RESOURCE: u32 = 1;
const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
// Resource
const RESOURCE_ATTRIBUTES: u32 = 1;
// ScopeLogs
const SCOPE_LOGS_SCOPE: u32 = 1;
const SCOPE_LOGS_LOG_RECORDS: u32 = 2;
// InstrumentationScope
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
// LogRecord
const RECORD_TIME: u32 = 1;
const RECORD_SEVERITY_NUMBER: u32 = 2;
const RECORD_SEVERITY_TEXT: u32 = 3;
const RECORD_BODY: u32 = 5;
pub(super) const RECORD_ATTRIBUTES: u32 = 6;
const RECORD_FLAGS: u32 = 8;
const RECORD_TRACE_ID: u32 = 9;
const RECORD_SPAN_ID: u32 = 10;
const RECORD_OBSERVED_TIME: u32 = 11;
// KeyValue
pub(super) const KV_KEY: u32 = 1;
pub(super) const KV_VALUE: u32 = 2;
// AnyValue (a oneof: members are written even when they hold their type's default)
pub(super) const ANY_STRING: u32 = 1;
pub(super) const ANY_BOOL: u32 = 2;
pub(super) const ANY_INT: u32 = 3;
pub(super) const ANY_DOUBLE: u32 = 4;
pub(super) const ANY_ARRAY: u32 = 5;
pub(super) const ANY_KVLIST: u32 = 6;
pub(super) const ANY_BYTES: u32 = 7;
// ArrayValue and KeyValueList
pub(super) const LIST_VALUES: u32 = 1;

/// Requests with more resources than this find an event's group with a hash map.
const LINEAR_GROUPS: usize = 32;

/// Attribute lists longer than this check for repeated keys with a hash set (a JSON line
/// has a dozen or two fields; comparing short keys is cheaper than hashing them).
const LINEAR_KEYS: usize = 32;

/// Turns events into an export request.
#[derive(Debug)]
pub struct Encoder {
    pub body: Body,
    pub shape: Shape,
}

/// Resource attributes as borrowed bytes, the grouping key.
type ResourceKey<'a> = Vec<(&'a [u8], &'a [u8])>;

impl Encoder {
    /// The protobuf-encoded request for `events`, in a buffer of at least `capacity` bytes.
    /// `observed` (Unix ns) stands in for the receive time of events that have none.
    pub fn request(&self, events: &[Ref<'_>], observed: u64, capacity: usize) -> Vec<u8> {
        // Records are grouped under their resource, so the groups are found first.
        let mut groups: Vec<(ResourceKey<'_>, Vec<u32>)> = Vec::new();
        let mut index: HashMap<ResourceKey<'_>, usize> = HashMap::new();
        let mut key = Vec::new();
        let mut last = usize::MAX;
        for (i, r) in events.iter().enumerate() {
            resource_of(r, &mut key);
            // Consecutive events mostly share their resource, and a request holds a few
            // dozen resources at most: compare before hashing.
            let g = if groups.get(last).is_some_and(|(k, _)| *k == key) {
                last
            } else if groups.len() <= LINEAR_GROUPS
                && let Some(g) = groups.iter().position(|(k, _)| *k == key)
            {
                g
            } else if let Some(g) = index.get(&key) {
                *g
            } else {
                groups.push((key.clone(), Vec::new()));
                if groups.len() == LINEAR_GROUPS + 1 {
                    for (i, (k, _)) in groups.iter().enumerate() {
                        index.insert(k.clone(), i);
                    }
                } else if groups.len() > LINEAR_GROUPS {
                    index.insert(key.clone(), groups.len() - 1);
                }
                groups.len() - 1
            };
            last = g;
            groups[g].1.push(i as u32);
        }

        let mut w = Writer::with_capacity(capacity);
        let mut scratch = Scratch::default();
        for (key, members) in &groups {
            // Length widths: a group up to 2 MiB, a record up to 16 KiB (the usual sizes).
            let resource_logs = w.begin_sized(REQUEST_RESOURCE_LOGS, 3);
            let resource = w.begin(RESOURCE_LOGS_RESOURCE);
            for (k, v) in key {
                string_kv(&mut w, RESOURCE_ATTRIBUTES, k, v);
            }
            w.end(resource);
            let scope_logs = w.begin_sized(RESOURCE_LOGS_SCOPE_LOGS, 3);
            let scope = w.begin(SCOPE_LOGS_SCOPE);
            w.str(SCOPE_NAME, b"outrigger");
            w.str(SCOPE_VERSION, env!("CARGO_PKG_VERSION").as_bytes());
            w.end(scope);
            for &i in members {
                let record = w.begin_sized(SCOPE_LOGS_LOG_RECORDS, 2);
                self.record(&mut w, &events[i as usize], observed, &mut scratch);
                w.end(record);
            }
            w.end(scope_logs);
            w.end(resource_logs);
        }
        w.buf
    }

    /// One `LogRecord`'s fields.
    fn record(&self, w: &mut Writer, r: &Ref<'_>, observed: u64, scratch: &mut Scratch) {
        let (batch, e) = (r.batch, r.event);
        let m = &e.meta;
        let found = if m.line.is_none() || m.stream.is_none() {
            find_line_and_stream(e, &self.shape.line_key)
        } else {
            Found::default()
        };
        let line = m.line.map(|s| e.slice(s)).or(found.line);
        let stream = m.stream.map(|s| e.slice(s)).or(found.stream);

        w.fixed64(RECORD_TIME, unix_nanos(r.time));
        w.int(RECORD_SEVERITY_NUMBER, i64::from(m.severity));
        match m.severity_text {
            Some(s) => w.str(RECORD_SEVERITY_TEXT, e.slice(s)),
            None => w.str(RECORD_SEVERITY_TEXT, Severity(m.severity).text().as_bytes()),
        }

        // A record without a line carries the application's fields itself: its message
        // field is the body and its other fields are attributes (without a message field,
        // there is no body); with `body = "map"` the whole record is the body.
        let record_body = line.is_none() && self.body == Body::Map;
        let record_message = m
            .message
            .filter(|_| line.is_none() && m.message_in_record && !record_body);
        let Scratch { json, keys, found } = scratch;
        keys.clear();
        // A JSON line's members, as enrichment found them: no parsing here.
        // (A line that cannot be walked after all, which only a bug makes, goes as text.)
        let fields = line
            .filter(|_| m.json)
            .and_then(|_| crate::pipeline::json::members_of(batch, e, found));
        // With `body = "message"`, the top-level member holding the message enrichment
        // found, and its text.
        let message = match (fields, self.body, m.message) {
            (Some(fields), Body::Message, Some(msg)) => message_member(e, fields, msg, json),
            _ => None,
        };
        match (fields, self.body, &message) {
            (Some(fields), Body::Map, _) => {
                let body = w.begin_sized(RECORD_BODY, 2);
                json_object(w, e, fields, json, 0);
                w.end(body);
            }
            (_, _, Some((_, text))) => {
                let body = w.begin_exact(RECORD_BODY, delimited_len(text.len()));
                w.bytes_always(ANY_STRING, text);
                w.end(body);
            }
            _ => {
                if let Some(line) = line {
                    let body = w.begin_sized(RECORD_BODY, 2);
                    w.str_always(ANY_STRING, line);
                    w.end(body);
                } else if let Some(s) = record_message {
                    let body = w.begin_sized(RECORD_BODY, 2);
                    w.str_always(ANY_STRING, e.slice(s));
                    w.end(body);
                } else if record_body {
                    let mark = w.mark();
                    let body = w.begin_sized(RECORD_BODY, 2);
                    if msgpack_value(w, &mut Cursor::new(e.map()), 1).is_ok() {
                        w.end(body);
                    } else {
                        w.truncate(mark);
                    }
                }
            }
        }
        if let Some(s) = stream {
            string_attr(w, keys, b"log.iostream", s);
        }
        string_attr(w, keys, b"fluent.tag", batch.tag(e));
        if let Some(fields) = fields {
            if self.shape.keep_line
                && (self.body == Body::Map || message.is_some())
                && let Some(line) = line
            {
                string_attr(w, keys, b"log.record.original", line);
            }
            match (self.body, &self.shape.nest_key) {
                (Body::Map, _) => {}
                (_, Some(nest)) => {
                    let nest = String::from_utf8_lossy(nest);
                    if keys.admit(nest.as_bytes()) {
                        let kv = w.begin(RECORD_ATTRIBUTES);
                        w.str(KV_KEY, nest.as_bytes());
                        let value = w.begin(KV_VALUE);
                        json_object(w, e, fields, json, 0);
                        w.end(value);
                        w.end(kv);
                    }
                }
                (_, None) => {
                    let skip = message.as_ref().map(|(i, _)| fields[*i].key);
                    json_attrs(w, keys, e, fields, skip, json);
                }
            }
        }
        if !record_body {
            let message = record_message.map(|s| s.start as usize);
            record_attrs(w, keys, e, &self.shape.line_key, message);
        }
        for (k, v) in batch.fields.iter() {
            string_attr(w, keys, k, v);
        }
        if m.incomplete && keys.admit(b"outrigger.incomplete") {
            let kv = w.begin(RECORD_ATTRIBUTES);
            w.str(KV_KEY, b"outrigger.incomplete");
            let value = w.begin(KV_VALUE);
            w.bool_always(ANY_BOOL, true);
            w.end(value);
            w.end(kv);
        }

        if let Some(t) = m.trace_id.filter(|t| t.iter().any(|b| *b != 0)) {
            w.fixed32(RECORD_FLAGS, m.trace_flags.map_or(0, u32::from));
            w.bytes(RECORD_TRACE_ID, &t);
            if let Some(s) = m.span_id.filter(|s| s.iter().any(|b| *b != 0)) {
                w.bytes(RECORD_SPAN_ID, &s);
            }
        }
        w.fixed64(
            RECORD_OBSERVED_TIME,
            match unix_nanos(batch.received) {
                0 => observed,
                received => received,
            },
        );
    }
}

/// Per-request reusable state.
#[derive(Default)]
struct Scratch {
    json: JsonScratch,
    keys: Keys,
    /// Members scanned from a line enrichment did not record them for.
    found: Vec<Member>,
}

/// The attribute keys of the record being written: attribute keys MUST be unique, and the
/// first of a repeated key wins.
#[derive(Default)]
pub(super) struct Keys {
    bytes: Vec<u8>,
    /// Each key's length and first eight bytes (cheap to compare, and enough to tell most
    /// keys apart), and where it starts in `bytes`.
    spans: Vec<(u32, u64, u32)>,
    /// Hashes of every key, once there are more than [`LINEAR_KEYS`].
    hashes: HashSet<u64>,
    state: std::hash::RandomState,
}

impl Keys {
    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.hashes.clear();
    }

    fn seen(&self, key: &[u8]) -> bool {
        let (len, prefix) = (key.len() as u32, prefix(key));
        self.spans.iter().any(|&(l, p, start)| {
            l == len && p == prefix && &self.bytes[start as usize..][..len as usize] == key
        })
    }

    /// Records `key` and says whether it is new.
    pub(super) fn admit(&mut self, key: &[u8]) -> bool {
        use std::hash::BuildHasher as _;
        let n = self.spans.len();
        if n < LINEAR_KEYS {
            if self.seen(key) {
                return false;
            }
        } else {
            if n == LINEAR_KEYS {
                for &(len, _, start) in &self.spans {
                    let k = &self.bytes[start as usize..][..len as usize];
                    self.hashes.insert(self.state.hash_one(k));
                }
            }
            // A hash seen before is confirmed (or not) by comparing the keys themselves.
            if !self.hashes.insert(self.state.hash_one(key)) && self.seen(key) {
                return false;
            }
        }
        self.spans
            .push((key.len() as u32, prefix(key), self.bytes.len() as u32));
        self.bytes.extend_from_slice(key);
        true
    }
}

/// The first eight bytes of `key`, zero-padded, as a number.
fn prefix(key: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    let n = key.len().min(8);
    p[..n].copy_from_slice(&key[..n]);
    u64::from_le_bytes(p)
}

/// A `KeyValue` with a string value in `field`. Lengths are known up front, so nothing moves
/// (unless invalid UTF-8 is replaced).
pub(super) fn string_kv(w: &mut Writer, field: u32, k: &[u8], v: &[u8]) {
    let any = delimited_len(v.len());
    let key = if k.is_empty() {
        0
    } else {
        delimited_len(k.len())
    };
    let kv = w.begin_exact(field, key + delimited_len(any));
    w.str(KV_KEY, k);
    let value = w.begin_exact(KV_VALUE, any);
    w.str_always(ANY_STRING, v);
    w.end(value);
    w.end(kv);
}

/// A string attribute, unless its key is taken.
fn string_attr(w: &mut Writer, keys: &mut Keys, k: &[u8], v: &[u8]) {
    let k = String::from_utf8_lossy(k);
    if keys.admit(k.as_bytes()) {
        string_kv(w, RECORD_ATTRIBUTES, k.as_bytes(), v);
    }
}

/// The resource attributes of one event, in a fixed order, without empty values or
/// repeated keys.
fn resource_of<'a>(r: &Ref<'a>, out: &mut ResourceKey<'a>) {
    let (batch, e): (&'a _, &'a Event) = (r.batch, r.event);
    let m = &e.meta;
    out.clear();
    let k8s = batch.k8s.get(e.tag as usize).copied().flatten();
    let tag: &'a [u8] = batch.tag(e);
    let in_tag = |s: Span| {
        tag.get(s.start as usize..(s.start + s.len) as usize)
            .unwrap_or_default()
    };
    let mut push = |k: &'a [u8], v: &'a [u8]| {
        if !v.is_empty() && !out.iter().any(|(have, _)| *have == k) {
            out.push((k, v));
        }
    };
    match (m.container_id, k8s) {
        (Some(s), _) => push(b"container.id", e.slice(s)),
        (None, Some(k)) => push(b"container.id", in_tag(k.container_id)),
        (None, None) => {}
    }
    if let Some(s) = m.container_name {
        push(b"container.name", e.slice(s));
    }
    if let Some(k) = k8s {
        push(b"k8s.pod.name", in_tag(k.pod));
        push(b"k8s.namespace.name", in_tag(k.namespace));
        push(b"k8s.container.name", in_tag(k.container));
        push(b"k8s.pod.uid", in_tag(k.pod_uid));
        push(b"k8s.container.restart_count", in_tag(k.restart_count));
    }
    for (k, v) in batch.resource.iter() {
        push(k, v);
    }
}

/// The line and stream fields of a record, when enrichment did not say where they are.
#[derive(Debug, Default)]
struct Found<'a> {
    /// The string under the line key.
    line: Option<&'a [u8]>,
    /// A `stream` field holding `stdout` or `stderr` (Fluent Bit, CRI logs).
    stream: Option<&'a [u8]>,
}

/// Walks the record map for [`Found`]'s fields.
fn find_line_and_stream<'a>(e: &'a Event, line_key: &[u8]) -> Found<'a> {
    let mut found = Found::default();
    let mut c = Cursor::new(e.map());
    let Ok((h, _)) = c.read() else { return found };
    if h.kind != Kind::Map {
        return found;
    }
    for _ in 0..h.children / 2 {
        let key = match c.bytes() {
            Ok(Some(k)) => Some(k),
            Ok(None) => c.skip().ok().map(|_| &b""[..]),
            Err(_) => None,
        };
        let Some(key) = key else { return found };
        let is_str = matches!(c.peek().map(|h| h.kind), Ok(Kind::Str | Kind::Bin));
        if is_str && (key == line_key || key == b"stream") {
            let Ok(Some(v)) = c.bytes() else {
                return found;
            };
            if key == line_key {
                found.line = Some(v);
            } else if v == b"stdout" || v == b"stderr" {
                found.stream = Some(v);
            }
        } else if c.skip().is_err() {
            return found;
        }
    }
    found
}

/// The record's fields as attributes, typed. Keys that became resource attributes, the
/// body (the line, or the field whose value starts at `message`) or `log.iostream` are left
/// out. A malformed record yields what came before the damage.
fn record_attrs(
    w: &mut Writer,
    keys: &mut Keys,
    e: &Event,
    line_key: &[u8],
    message: Option<usize>,
) {
    let m = &e.meta;
    let mut c = Cursor::new(e.map());
    let Ok((h, _)) = c.read() else { return };
    if h.kind != Kind::Map {
        return;
    }
    for _ in 0..h.children / 2 {
        let Ok(key) = map_key(&mut c) else { return };
        let Some(key) = key else {
            if c.skip().is_err() {
                return;
            }
            continue;
        };
        let Ok(next) = c.peek() else { return };
        let is_str = matches!(next.kind, Kind::Str | Kind::Bin);
        let key: Cow<'_, [u8]> = match key {
            KeyBytes::Raw(k) => {
                let skip = match k {
                    b"container_id" => m.container_id.is_some(),
                    b"container_name" => m.container_name.is_some(),
                    b"source" => m.stream.is_some(),
                    _ => message == Some(c.pos() + next.head_len),
                };
                if skip {
                    if c.skip().is_err() {
                        return;
                    }
                    continue;
                }
                if is_str && (k == line_key || (k == b"stream" && m.stream.is_none())) {
                    let Ok(Some(v)) = c.bytes() else { return };
                    if k != line_key && v != b"stdout" && v != b"stderr" {
                        string_attr(w, keys, k, v);
                    }
                    continue;
                }
                match String::from_utf8_lossy(k) {
                    Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                    Cow::Owned(s) => Cow::Owned(s.into_bytes()),
                }
            }
            KeyBytes::Text(k) => Cow::Owned(k.into_bytes()),
        };
        if !keys.admit(&key) {
            if c.skip().is_err() {
                return;
            }
            continue;
        }
        let mark = w.mark();
        let kv = w.begin(RECORD_ATTRIBUTES);
        w.str(KV_KEY, &key);
        let value = w.begin(KV_VALUE);
        if msgpack_value(w, &mut c, 1).is_err() {
            w.truncate(mark);
            return;
        }
        w.end(value);
        w.end(kv);
    }
}

/// A map key: a string's bytes, or a scalar's text.
enum KeyBytes<'a> {
    Raw(&'a [u8]),
    Text(String),
}

/// Reads a map key. `None` (the key consumed) for a map or array used as a key, which has
/// no sensible text: the caller skips its value.
fn map_key<'a>(c: &mut Cursor<'a>) -> Result<Option<KeyBytes<'a>>, msgpack::Error> {
    if let Some(k) = c.bytes()? {
        return Ok(Some(KeyBytes::Raw(k)));
    }
    if matches!(c.peek()?.kind, Kind::Map | Kind::Array) {
        c.skip()?;
        return Ok(None);
    }
    let (h, payload) = c.read()?;
    let text = match h.kind {
        Kind::Nil => "null".to_string(),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(v) => v.to_string(),
        Kind::UInt(v) => v.to_string(),
        Kind::Float(f) => f.to_string(),
        _ => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(c.slice(payload))
        }
    };
    Ok(Some(KeyBytes::Text(text)))
}

/// One MessagePack value as an `AnyValue`'s fields.
fn msgpack_value(w: &mut Writer, c: &mut Cursor<'_>, depth: usize) -> Result<(), msgpack::Error> {
    let h = c.peek()?;
    if depth > MAX_DEPTH {
        return c.skip().map(|_| ());
    }
    match h.kind {
        Kind::Map => {
            c.read()?;
            let list = w.begin(ANY_KVLIST);
            for _ in 0..h.children / 2 {
                let key = match map_key(c)? {
                    Some(KeyBytes::Raw(k)) => String::from_utf8_lossy(k),
                    Some(KeyBytes::Text(k)) => Cow::Owned(k),
                    None => {
                        c.skip()?;
                        continue;
                    }
                };
                let kv = w.begin(LIST_VALUES);
                w.str(KV_KEY, key.as_bytes());
                let value = w.begin(KV_VALUE);
                msgpack_value(w, c, depth + 1)?;
                w.end(value);
                w.end(kv);
            }
            w.end(list);
        }
        Kind::Array => {
            c.read()?;
            let list = w.begin(ANY_ARRAY);
            for _ in 0..h.children {
                let value = w.begin(LIST_VALUES);
                msgpack_value(w, c, depth + 1)?;
                w.end(value);
            }
            w.end(list);
        }
        _ => {
            let (h, payload) = c.read()?;
            match h.kind {
                Kind::Nil => {}
                Kind::Bool(b) => w.bool_always(ANY_BOOL, b),
                Kind::Int(v) => w.int_always(ANY_INT, v),
                Kind::UInt(v) => w.str_always(ANY_STRING, v.to_string().as_bytes()),
                Kind::Float(f) => float(w, f),
                Kind::Str => w.str_always(ANY_STRING, c.slice(payload)),
                Kind::Ext(0) if payload.len() == 8 => {
                    let b = c.slice(payload);
                    let t = Timestamp {
                        secs: i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                        nanos: u32::from_be_bytes([b[4], b[5], b[6], b[7]]).min(999_999_999),
                    };
                    let mut out = Vec::with_capacity(30);
                    TimeCache::default().write(&mut out, t);
                    w.str_always(ANY_STRING, &out);
                }
                Kind::Bin | Kind::Ext(_) => w.bytes_always(ANY_BYTES, c.slice(payload)),
                Kind::Map | Kind::Array => unreachable!("handled above"),
            }
        }
    }
    Ok(())
}

/// A float; non-finite ones as text (OTLP/JSON has no NaN, and backends choke on them).
pub(super) fn float(w: &mut Writer, f: f64) {
    if f.is_finite() {
        w.double_always(ANY_DOUBLE, f);
    } else if f.is_nan() {
        w.str_always(ANY_STRING, b"NaN");
    } else if f > 0.0 {
        w.str_always(ANY_STRING, b"Infinity");
    } else {
        w.str_always(ANY_STRING, b"-Infinity");
    }
}

/// Nanoseconds since the epoch; 0 (unknown) before it.
pub fn unix_nanos(t: Timestamp) -> u64 {
    u64::try_from(t.secs)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|n| n.checked_add(u64::from(t.nanos)))
        .unwrap_or(0)
}
