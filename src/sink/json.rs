//! Events as JSON lines: `{"tag":…,"time":…,"record":{…}}`.
//!
//! The record is walked once from its MessagePack bytes straight into the output buffer; no
//! value tree is built. The record sits under its own key so that fields named `tag` or `time`
//! are never lost or duplicated. Strings that are not UTF-8 are written with U+FFFD in place of
//! the bad bytes; `bin` values and unknown extensions become base64 strings; EventTime values
//! become RFC 3339 strings; non-finite floats become `null`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::event::Timestamp;
use crate::msgpack::{self, Cursor, Kind};

/// Nesting beyond this is written as `null`. The source's `max_depth` normally stops such
/// records earlier; this keeps the encoder's recursion bounded whatever it is given.
const MAX_DEPTH: usize = 256;

/// Writes one event as a JSON object (no newline). On malformed MessagePack, `out` is left as
/// it was and the error returned.
pub fn event(
    out: &mut Vec<u8>,
    times: &mut TimeCache,
    tag: &[u8],
    time: Timestamp,
    record: &[u8],
    fields: &[(bytes::Bytes, bytes::Bytes)],
) -> Result<(), msgpack::Error> {
    let start = out.len();
    out.extend_from_slice(b"{\"tag\":");
    string(out, tag);
    out.extend_from_slice(b",\"time\":\"");
    times.write(out, time);
    out.extend_from_slice(b"\",\"record\":");
    let mut c = Cursor::new(record);
    let r = map(out, &mut c, 0, fields);
    if r.is_err() {
        out.truncate(start);
    }
    r?;
    out.push(b'}');
    Ok(())
}

fn map(
    out: &mut Vec<u8>,
    c: &mut Cursor<'_>,
    depth: usize,
    extra: &[(bytes::Bytes, bytes::Bytes)],
) -> Result<(), msgpack::Error> {
    let (h, _) = c.read()?;
    out.push(b'{');
    let mut first = true;
    for _ in 0..h.children / 2 {
        if !first {
            out.push(b',');
        }
        first = false;
        match c.bytes()? {
            Some(k) => string(out, k),
            None => {
                // A non-string key: its JSON text becomes the key.
                let mut key = Vec::new();
                value(&mut key, c, depth + 1)?;
                string(out, &key);
            }
        }
        out.push(b':');
        value(out, c, depth + 1)?;
    }
    for (k, v) in extra {
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.push(b'}');
    Ok(())
}

fn value(out: &mut Vec<u8>, c: &mut Cursor<'_>, depth: usize) -> Result<(), msgpack::Error> {
    let h = c.peek()?;
    if depth > MAX_DEPTH {
        c.skip()?;
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match h.kind {
        Kind::Map => return map(out, c, depth, &[]),
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

    fn line(record: &[u8]) -> String {
        let mut out = Vec::new();
        let t = Timestamp {
            secs: 1441588984,
            nanos: 123456789,
        };
        event(&mut out, &mut TimeCache::default(), b"app", t, record, &[]).unwrap();
        String::from_utf8(out).unwrap()
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
        let r = event(
            &mut out,
            &mut TimeCache::default(),
            b"t",
            Timestamp::default(),
            &[0x81, 0xa1],
            &[],
        );
        assert!(r.is_err());
        assert_eq!(out, b"keep");
    }

    #[test]
    fn dates_across_eras() {
        assert_eq!(&format_secs(0), b"1970-01-01T00:00:00");
        assert_eq!(&format_secs(951_782_400), b"2000-02-29T00:00:00");
        assert_eq!(&format_secs(4_102_444_799), b"2099-12-31T23:59:59");
    }
}
