//! Events as JSON lines:
//! `{"tag":…,"time":…,"severity":…,"trace_id":…,"resource":{…},"record":{…}}`.
//!
//! The record is walked once from its MessagePack bytes straight into the output buffer; no
//! value tree is built. When the log line is a JSON object that enrichment parsed, its fields
//! are spliced into the record as the application wrote them (or under a nest key), not
//! re-serialized. Container and Kubernetes names move from the record into `resource`, under
//! OpenTelemetry names. The record sits under its own key so that fields named `tag` or `time`
//! are never lost. Strings that are not UTF-8 are written with U+FFFD in place of the bad
//! bytes; `bin` values and unknown extensions become base64 strings; EventTime values become
//! RFC 3339 strings; non-finite floats become `null`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::event::{Batch, Event, Form, Span, Timestamp};
use crate::msgpack::{self, Cursor, Kind};

/// Nesting beyond this is written as `null`. The source's `max_depth` normally stops such
/// records earlier; this keeps the encoder's recursion bounded whatever it is given.
const MAX_DEPTH: usize = 256;

/// How a parsed JSON line appears in the record.
#[derive(Debug, Clone)]
pub struct Shape {
    /// `None`: the line's fields join the record's; `Some(key)`: the line goes under `key`.
    pub nest_key: Option<Vec<u8>>,
    /// Keep the line's original text under `line_key` too.
    pub keep_line: bool,
    pub line_key: Vec<u8>,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            nest_key: None,
            keep_line: false,
            line_key: b"log".to_vec(),
        }
    }
}

/// Writes event `e` of `batch` as one JSON object (no newline). On malformed MessagePack,
/// `out` is left as it was and the error returned.
pub fn event(
    out: &mut Vec<u8>,
    times: &mut TimeCache,
    batch: &Batch,
    e: &Event,
    shape: &Shape,
) -> Result<(), msgpack::Error> {
    let start = out.len();
    let r = write_event(out, times, batch, e, shape);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn write_event(
    out: &mut Vec<u8>,
    times: &mut TimeCache,
    batch: &Batch,
    e: &Event,
    shape: &Shape,
) -> Result<(), msgpack::Error> {
    let m = &e.meta;
    out.extend_from_slice(b"{\"tag\":");
    string(out, batch.tag(e));
    out.extend_from_slice(b",\"time\":\"");
    times.write(out, e.time);
    out.push(b'"');
    if m.severity > 0 {
        out.extend_from_slice(b",\"severity\":");
        match m.severity_text {
            Some(s) => string(out, e.slice(s)),
            None => string(
                out,
                crate::pipeline::severity::Severity(m.severity)
                    .text()
                    .as_bytes(),
            ),
        }
        out.extend_from_slice(b",\"severity_number\":");
        out.extend_from_slice(itoa::Buffer::new().format(m.severity).as_bytes());
    }
    if let Some(t) = m.trace_id {
        out.extend_from_slice(b",\"trace_id\":");
        hex(out, &t);
        if let Some(s) = m.span_id {
            out.extend_from_slice(b",\"span_id\":");
            hex(out, &s);
        }
        if let Some(f) = m.trace_flags {
            out.extend_from_slice(b",\"trace_flags\":");
            out.extend_from_slice(itoa::Buffer::new().format(f).as_bytes());
        }
    }
    resource(out, batch, e);
    out.extend_from_slice(b",\"record\":");
    let skip = |k: &[u8]| match k {
        b"container_id" => m.container_id.is_some(),
        b"container_name" => m.container_name.is_some(),
        b"source" => m.stream.is_some(),
        k => m.json && !shape.keep_line && k == shape.line_key.as_slice(),
    };
    let line = m.line.filter(|_| m.json).map(|s| e.slice(s));
    // A line event has no record to carry its line: it goes under the line key, where a
    // record would have had it.
    let own = match (e.form, m.line) {
        (Form::Line, Some(s)) if !m.json || shape.keep_line => Some(e.slice(s)),
        _ => None,
    };
    let mut c = Cursor::new(e.map());
    record(out, &mut c, &skip, own, &batch.fields, line, shape)?;
    if m.incomplete {
        out.extend_from_slice(b",\"incomplete\":true");
    }
    out.push(b'}');
    Ok(())
}

/// `"resource":{…}` with the container, Kubernetes and static attributes, when there are any.
fn resource(out: &mut Vec<u8>, batch: &Batch, e: &Event) {
    let m = &e.meta;
    let k8s = batch.k8s.get(e.tag as usize).copied().flatten();
    let tag = batch.tag(e);
    let tag_slice = |s: Span| &tag[s.start as usize..(s.start + s.len) as usize];
    let mut attrs: Vec<(&[u8], &[u8])> = Vec::new();
    if let Some(s) = m.container_id {
        attrs.push((b"container.id", e.slice(s)));
    } else if let Some(k) = k8s
        && k.container_id.len > 0
    {
        attrs.push((b"container.id", tag_slice(k.container_id)));
    }
    if let Some(s) = m.container_name {
        attrs.push((b"container.name", e.slice(s)));
    }
    if let Some(s) = m.stream {
        attrs.push((b"log.iostream", e.slice(s)));
    }
    if let Some(k) = k8s {
        attrs.push((b"k8s.pod.name", tag_slice(k.pod)));
        attrs.push((b"k8s.namespace.name", tag_slice(k.namespace)));
        attrs.push((b"k8s.container.name", tag_slice(k.container)));
        for (key, at) in [
            (&b"k8s.pod.uid"[..], k.pod_uid),
            (b"k8s.container.restart_count", k.restart_count),
        ] {
            if at.len > 0 {
                attrs.push((key, tag_slice(at)));
            }
        }
    }
    for (k, v) in batch.resource.iter() {
        attrs.push((k, v));
    }
    if attrs.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"resource\":{");
    for (i, (k, v)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.push(b'}');
}

fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out.push(b'"');
}

/// The record map, without skipped keys, plus a line event's `own` line, `extra` fields and a
/// parsed JSON `line`.
fn record(
    out: &mut Vec<u8>,
    c: &mut Cursor<'_>,
    skip: &dyn Fn(&[u8]) -> bool,
    own: Option<&[u8]>,
    extra: &[(bytes::Bytes, bytes::Bytes)],
    line: Option<&[u8]>,
    shape: &Shape,
) -> Result<(), msgpack::Error> {
    let (h, _) = c.read()?;
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    if let Some(own) = own {
        sep(out);
        string(out, &shape.line_key);
        out.push(b':');
        string(out, own);
    }
    for _ in 0..h.children / 2 {
        match c.bytes()? {
            Some(k) if skip(k) => {
                c.skip()?;
            }
            Some(k) => {
                sep(out);
                string(out, k);
                out.push(b':');
                value(out, c, 1)?;
            }
            None => {
                sep(out);
                other_key(out, c)?;
                out.push(b':');
                value(out, c, 1)?;
            }
        }
    }
    for (k, v) in extra {
        sep(out);
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    if let Some(line) = line {
        match &shape.nest_key {
            Some(key) => {
                sep(out);
                string(out, key);
                out.push(b':');
                splice(out, trim(line));
            }
            None => {
                // The members between the object's braces, as the application wrote them.
                let body = trim(line);
                let inner = trim(&body[1..body.len() - 1]);
                if !inner.is_empty() {
                    sep(out);
                    splice(out, inner);
                }
            }
        }
    }
    out.push(b'}');
    Ok(())
}

/// Copies JSON text as written. A raw line break can only stand between tokens (JSON strings
/// cannot hold one), so it becomes a space: one event stays one line.
fn splice(out: &mut Vec<u8>, json: &[u8]) {
    if memchr::memchr2(b'\n', b'\r', json).is_none() {
        out.extend_from_slice(json);
    } else {
        out.extend(
            json.iter()
                .map(|b| if matches!(b, b'\n' | b'\r') { b' ' } else { *b }),
        );
    }
}

/// A map key that is not a string. A scalar's JSON text becomes the key; a container (or
/// binary) key becomes the base64 of its MessagePack bytes. Writing a container's JSON text
/// would escape it into a string, and a key nested inside that key would be escaped again:
/// output doubling with every level, from a request of a few dozen bytes.
fn other_key(out: &mut Vec<u8>, c: &mut Cursor<'_>) -> Result<(), msgpack::Error> {
    match c.peek()?.kind {
        Kind::Map | Kind::Array | Kind::Bin | Kind::Ext(_) => {
            let raw = c.skip()?;
            out.push(b'"');
            out.extend_from_slice(BASE64.encode(c.slice(raw)).as_bytes());
            out.push(b'"');
        }
        _ => {
            let mut key = Vec::new();
            value(&mut key, c, 0)?;
            string(out, &key);
        }
    }
    Ok(())
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn map(out: &mut Vec<u8>, c: &mut Cursor<'_>, depth: usize) -> Result<(), msgpack::Error> {
    let (h, _) = c.read()?;
    out.push(b'{');
    for i in 0..h.children / 2 {
        if i > 0 {
            out.push(b',');
        }
        match c.bytes()? {
            Some(k) => string(out, k),
            None => other_key(out, c)?,
        }
        out.push(b':');
        value(out, c, depth + 1)?;
    }
    out.push(b'}');
    Ok(())
}

/// Writes the MessagePack value at `c` as JSON; `depth` counts the containers around it.
pub fn value(out: &mut Vec<u8>, c: &mut Cursor<'_>, depth: usize) -> Result<(), msgpack::Error> {
    let h = c.peek()?;
    if depth > MAX_DEPTH {
        c.skip()?;
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match h.kind {
        Kind::Map => return map(out, c, depth),
        Kind::Array => {
            c.read()?;
            out.push(b'[');
            for i in 0..h.children {
                if i > 0 {
                    out.push(b',');
                }
                value(out, c, depth + 1)?;
            }
            out.push(b']');
            return Ok(());
        }
        _ => {}
    }
    let (h, payload) = c.read()?;
    match h.kind {
        Kind::Nil => out.extend_from_slice(b"null"),
        Kind::Bool(true) => out.extend_from_slice(b"true"),
        Kind::Bool(false) => out.extend_from_slice(b"false"),
        Kind::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        Kind::UInt(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        Kind::Float(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes())
        }
        Kind::Float(_) => out.extend_from_slice(b"null"),
        Kind::Str => string(out, c.slice(payload)),
        Kind::Ext(0) if payload.len() == 8 => {
            let b = c.slice(payload);
            let t = Timestamp {
                secs: i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                nanos: u32::from_be_bytes([b[4], b[5], b[6], b[7]]).min(999_999_999),
            };
            out.push(b'"');
            TimeCache::default().write(out, t);
            out.push(b'"');
        }
        Kind::Bin | Kind::Ext(_) => {
            out.push(b'"');
            let encoded = BASE64.encode(c.slice(payload));
            out.extend_from_slice(encoded.as_bytes());
            out.push(b'"');
        }
        Kind::Map | Kind::Array => unreachable!("handled above"),
    }
    Ok(())
}

/// Writes `bytes` as a JSON string, replacing invalid UTF-8.
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => escape(out, s),
        Err(_) => escape(out, &String::from_utf8_lossy(bytes)),
    }
}

fn escape(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// RFC 3339 UTC with nanoseconds. Consecutive events share their second, so the formatted
/// date and time of day are kept and only the fraction is written per event.
#[derive(Debug, Default)]
pub struct TimeCache {
    secs: Option<i64>,
    text: [u8; 19],
}

impl TimeCache {
    pub fn write(&mut self, out: &mut Vec<u8>, t: Timestamp) {
        if self.secs != Some(t.secs) {
            self.secs = Some(t.secs);
            self.text = format_secs(t.secs);
        }
        out.extend_from_slice(&self.text);
        out.push(b'.');
        let mut frac = [b'0'; 9];
        let mut n = t.nanos;
        for d in frac.iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&frac);
        out.push(b'Z');
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the epoch (proleptic Gregorian, years 0–9999).
fn format_secs(secs: i64) -> [u8; 19] {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999);
    let mut b = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, rem / 3600, 2);
    put(14, rem % 3600 / 60, 2);
    put(17, rem % 60, 2);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(record: &[u8]) -> Batch {
        let mut b = Batch::default();
        let tag = b.tag_index(b"app", || bytes::Bytes::from_static(b"app"));
        let t = Timestamp {
            secs: 1441588984,
            nanos: 123456789,
        };
        b.events
            .push(Event::new(t, tag, bytes::Bytes::copy_from_slice(record)));
        b
    }

    fn line(record: &[u8]) -> String {
        let b = batch(record);
        let mut out = Vec::new();
        event(
            &mut out,
            &mut TimeCache::default(),
            &b,
            &b.events[0],
            &Shape::default(),
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A line event as a file source makes it: a CRI line, with spans of its message and
    /// stream, under a Kubernetes file tag.
    fn line_event(text: &str, json: bool) -> Batch {
        let prefix = "2026-12-04T10:00:00Z stdout F ";
        let bytes = bytes::Bytes::from(format!("{prefix}{text}"));
        let mut b = Batch::default();
        let id = "d".repeat(64);
        let tag = format!("kube.var.log.containers.web-1_shop_app-{id}.log");
        let tag = b.tag_index(tag.as_bytes(), || bytes::Bytes::from(tag.clone()));
        let (line, stream) = (Span::new(prefix.len()..bytes.len()), Span::new(21..27));
        let mut e = Event::line(Timestamp::default(), tag, bytes, line, Some(stream));
        e.meta.json = json;
        b.events.push(e);
        crate::pipeline::kubernetes::annotate(&mut b);
        b
    }

    #[test]
    fn a_line_event_has_its_line_under_the_line_key_and_no_record_walk() {
        for (text, json, keep_line, want) in [
            (
                "plain \"text\"",
                false,
                false,
                r#"{"log":"plain \"text\""}"#,
            ),
            (r#"{"a":1}"#, true, false, r#"{"a":1}"#),
            (r#"{"a":1}"#, true, true, r#"{"log":"{\"a\":1}","a":1}"#),
        ] {
            let b = line_event(text, json);
            let shape = Shape {
                keep_line,
                ..Shape::default()
            };
            let mut out = Vec::new();
            event(
                &mut out,
                &mut TimeCache::default(),
                &b,
                &b.events[0],
                &shape,
            )
            .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let want: serde_json::Value = serde_json::from_str(want).unwrap();
            assert_eq!(v["record"], want, "{text}");
            assert_eq!(v["resource"]["log.iostream"], "stdout");
            assert_eq!(v["resource"]["k8s.namespace.name"], "shop");
            assert_eq!(v["resource"]["k8s.pod.name"], "web-1");
        }
    }

    #[test]
    fn formats_time_and_record() {
        // {"message": "bar", "n": -1, "ok": true, "x": nil, "f": 1.5}
        let rec = [
            0x85, 0xa7, b'm', b'e', b's', b's', b'a', b'g', b'e', 0xa3, b'b', b'a', b'r', 0xa1,
            b'n', 0xff, 0xa2, b'o', b'k', 0xc3, 0xa1, b'x', 0xc0, 0xa1, b'f', 0xcb, 0x3f, 0xf8, 0,
            0, 0, 0, 0, 0,
        ];
        assert_eq!(
            line(&rec),
            r#"{"tag":"app","time":"2015-09-07T01:23:04.123456789Z","record":{"message":"bar","n":-1,"ok":true,"x":null,"f":1.5}}"#
        );
    }

    #[test]
    fn escapes_and_replaces_invalid_utf8() {
        // {"log": "a\"b\n\x01\xff"} and {"b": bin [1,2,3]}
        let rec = [
            0x81, 0xa3, b'l', b'o', b'g', 0xa6, b'a', b'"', b'b', b'\n', 0x01, 0xff,
        ];
        assert!(
            line(&rec).contains(r#""log":"a\"b\n\u0001�""#),
            "{}",
            line(&rec)
        );
        let rec = [0x81, 0xa1, b'b', 0xc4, 0x03, 1, 2, 3];
        assert!(line(&rec).contains(r#""b":"AQID""#));
    }

    #[test]
    fn nested_arrays_and_maps() {
        // {"a": [1, {"b": []}]}
        let rec = [0x81, 0xa1, b'a', 0x92, 0x01, 0x81, 0xa1, b'b', 0x90];
        assert!(line(&rec).ends_with(r#""record":{"a":[1,{"b":[]}]}}"#));
    }

    #[test]
    fn truncated_record_leaves_output_untouched() {
        let mut out = b"keep".to_vec();
        let b = batch(&[0x81, 0xa1]);
        let r = event(
            &mut out,
            &mut TimeCache::default(),
            &b,
            &b.events[0],
            &Shape::default(),
        );
        assert!(r.is_err());
        assert_eq!(out, b"keep");
    }

    #[test]
    fn nested_container_keys_stay_linear() {
        // {"k": {{{...{"a": 1}: 1}...: 1}: 1}} nested 40 deep, as map keys.
        let mut rec = vec![0x81, 0xa1, b'k'];
        rec.extend(std::iter::repeat_n(0x81, 40));
        rec.extend([0xa1, b'a']);
        rec.extend(std::iter::repeat_n(0x01, 41));
        let out = line(&rec);
        assert!(
            out.len() < 4096,
            "{} bytes from a {}-byte record",
            out.len(),
            rec.len()
        );
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        // Scalar keys keep their text.
        let rec = [0x81, 0x05, 0xa1, b'x'];
        assert!(
            line(&rec).contains(r#""record":{"5":"x"}"#),
            "{}",
            line(&rec)
        );
    }

    #[test]
    fn dates_across_eras() {
        assert_eq!(&format_secs(0), b"1970-01-01T00:00:00");
        assert_eq!(&format_secs(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&format_secs(4_102_444_799), b"2099-12-31T23:59:59");
    }
}
