//! The fields of a forward record that enrichment needs, found in one walk over its map.
//!
//! Docker's `fluentd` driver sends `container_id`, `container_name`, `source`, `log` and, for
//! lines longer than 16 KiB, `partial_message`, `partial_id`, `partial_ordinal` and
//! `partial_last` (all strings). Everything here is a byte range into the record; nothing is
//! copied.

use std::ops::Range;

use super::fields::{Collector, Families, Found, KeyTable, Locate, Value};
use crate::event::Timestamp;
use crate::msgpack::{self, Cursor, Kind};

/// Where the interesting values of one record are.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The log line: the string value of the configured key.
    pub line: Option<Range<usize>>,
    pub container_id: Option<Range<usize>>,
    pub container_name: Option<Range<usize>>,
    pub source: Option<Range<usize>>,
    /// Set when `partial_message` is `"true"`.
    pub partial: Option<Partial>,
}

/// One fragment of a line Docker split.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Partial {
    pub id: Range<usize>,
    /// 1-based; 0 when absent or not a number.
    pub ordinal: u32,
    pub last: bool,
}

/// Keys whose values enrichment reads from every record, besides the log line.
const CONTAINER_ID: &[u8] = b"container_id";
const CONTAINER_NAME: &[u8] = b"container_name";
const SOURCE: &[u8] = b"source";
const PARTIAL_MESSAGE: &[u8] = b"partial_message";
const PARTIAL_ID: &[u8] = b"partial_id";
const PARTIAL_ORDINAL: &[u8] = b"partial_ordinal";
const PARTIAL_LAST: &[u8] = b"partial_last";

/// Reads `record` (a msgpack map) once. `line_key` names the log line's key. Malformed input
/// yields whatever was found before the damage.
pub fn fields(record: &[u8], line_key: &[u8]) -> Fields {
    let mut f = Fields::default();
    let mut c = Cursor::new(record);
    let Ok((h, _)) = c.read() else { return f };
    if h.kind != Kind::Map {
        return f;
    }
    let mut partial = false;
    let mut id = None;
    let mut ordinal = 0;
    let mut last = false;
    for _ in 0..h.children / 2 {
        let Ok(Some(key)) = c.bytes() else { return f };
        // One header decode per value; a container's children are skipped after it.
        let value = match c.read() {
            Ok((h, r)) if matches!(h.kind, Kind::Str | Kind::Bin) => r,
            Ok((h, _)) => {
                if (0..h.children).any(|_| c.skip().is_err()) {
                    return f;
                }
                continue;
            }
            Err(_) => return f,
        };
        let v = &record[value.clone()];
        match key {
            k if k == line_key => f.line = Some(value),
            CONTAINER_ID => f.container_id = Some(value),
            CONTAINER_NAME => f.container_name = Some(value),
            SOURCE => f.source = Some(value),
            PARTIAL_MESSAGE => partial = v == b"true",
            PARTIAL_ID => id = Some(value),
            PARTIAL_ORDINAL => {
                ordinal = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            }
            PARTIAL_LAST => last = v == b"true",
            _ => {}
        }
    }
    if partial {
        f.partial = id.map(|id| Partial { id, ordinal, last });
    }
    f
}

/// The record's own fields walked for enrichment's roles (trace context, level, message,
/// time), the way [`super::json`] walks a JSON line: for records that carry the application's
/// fields themselves, as fluent-logger libraries and Fluent Bit send them. Every top-level key
/// but the line (a string under `line_key`) is looked up in `keys`; maps are entered only along configured dotted paths
/// (`dd.trace_id`) and into the usual context containers. Ranges in the result are into the
/// record, and the message is the string itself. A malformed record yields what came before
/// the damage.
pub fn found(record: &[u8], line_key: &[u8], keys: &KeyTable, families: &Families) -> Found {
    let at = InRecord(record);
    Collector::collect(families, |collector| {
        let mut c = Cursor::new(record);
        if let Ok((h, _)) = c.read()
            && h.kind == Kind::Map
        {
            let _ = walk(&mut c, h.children / 2, keys, Some(line_key), collector, &at);
        }
    })
}

/// Strings of a record are its bytes as they are: a span is where they lie.
struct InRecord<'a>(&'a [u8]);

impl Locate for InRecord<'_> {
    fn text(&self, s: &[u8]) -> Option<Range<usize>> {
        let start = (s.as_ptr() as usize).checked_sub(self.0.as_ptr() as usize)?;
        (start + s.len() <= self.0.len()).then_some(start..start + s.len())
    }

    fn message(&self, s: &[u8]) -> Option<Range<usize>> {
        self.text(s)
    }
}

/// Offers the values of `pairs` key/value pairs at `c` whose keys have roles, and descends
/// into maps that lead to some; everything else is skipped.
fn walk(
    c: &mut Cursor<'_>,
    pairs: u64,
    keys: &KeyTable,
    skip: Option<&[u8]>,
    collector: &mut Collector<'_>,
    at: &InRecord<'_>,
) -> Result<(), msgpack::Error> {
    for _ in 0..pairs {
        let entry = match c.bytes()? {
            // The line is the line; a map under the same key (ECS's `log.level`) is fields.
            Some(k) if Some(k) == skip && matches!(c.peek()?.kind, Kind::Str | Kind::Bin) => None,
            Some(k) => keys.get(k),
            None => {
                // A non-string key names nothing enrichment looks for.
                c.skip()?;
                None
            }
        };
        let Some(entry) = entry else {
            c.skip()?;
            continue;
        };
        let (h, payload) = c.read()?;
        let value = match h.kind {
            Kind::Str | Kind::Bin => Value::Str(c.slice(payload)),
            Kind::Int(n) => Value::I64(n),
            Kind::UInt(n) => Value::U64(n),
            Kind::Float(f) => Value::F64(f),
            Kind::Bool(b) => Value::Bool(b),
            Kind::Ext(0) if payload.len() == 8 => {
                let b = c.slice(payload);
                Value::Time(Timestamp {
                    secs: i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                    nanos: u32::from_be_bytes([b[4], b[5], b[6], b[7]]).min(999_999_999),
                })
            }
            _ => Value::Other,
        };
        for role in entry.roles() {
            collector.offer(*role, value, at);
        }
        match (h.kind, entry.children()) {
            (Kind::Map, Some(children)) => walk(c, h.children / 2, children, None, collector, at)?,
            _ => {
                for _ in 0..h.children {
                    c.skip()?;
                }
            }
        }
    }
    Ok(())
}

/// Writes `record` again with `line_key` set to `line` and the `partial_*` keys removed: the
/// record of a reassembled line.
pub fn rewrite(record: &[u8], line_key: &[u8], line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + line.len());
    let mut kept: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    let mut c = Cursor::new(record);
    if let Ok((h, _)) = c.read() {
        for _ in 0..h.children / 2 {
            let start = c.pos();
            let Ok(Some(key)) = c.bytes() else { break };
            let key_range = start..c.pos();
            let Ok(value) = c.skip() else { break };
            let drop = key == line_key
                || matches!(
                    key,
                    PARTIAL_MESSAGE | PARTIAL_ID | PARTIAL_ORDINAL | PARTIAL_LAST
                );
            if !drop {
                kept.push((key_range, value));
            }
        }
    }
    rmp::encode::write_map_len(&mut out, kept.len() as u32 + 1).expect("Vec writes cannot fail");
    for (k, v) in kept {
        out.extend_from_slice(&record[k]);
        out.extend_from_slice(&record[v]);
    }
    rmp::encode::write_str_len(&mut out, line_key.len() as u32).expect("Vec writes cannot fail");
    out.extend_from_slice(line_key);
    rmp::encode::write_str_len(&mut out, line.len() as u32).expect("Vec writes cannot fail");
    out.extend_from_slice(line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, pairs.len() as u32).unwrap();
        for (k, v) in pairs {
            rmp::encode::write_str(&mut out, k).unwrap();
            rmp::encode::write_str(&mut out, v).unwrap();
        }
        out
    }

    #[test]
    fn finds_docker_fields() {
        let r = record(&[
            ("container_id", "abc"),
            ("container_name", "/web"),
            ("source", "stderr"),
            ("log", "hello"),
            ("com.example.team", "payments"),
        ]);
        let f = fields(&r, b"log");
        assert_eq!(&r[f.line.unwrap()], b"hello");
        assert_eq!(&r[f.container_name.unwrap()], b"/web");
        assert_eq!(&r[f.source.unwrap()], b"stderr");
        assert!(f.partial.is_none());
        assert_eq!(
            &r[fields(&r, b"com.example.team").line.unwrap()],
            b"payments"
        );
    }

    #[test]
    fn finds_partial_fragments() {
        let r = record(&[
            ("log", "part"),
            ("partial_message", "true"),
            ("partial_id", "p1"),
            ("partial_ordinal", "3"),
            ("partial_last", "false"),
        ]);
        let p = fields(&r, b"log").partial.unwrap();
        assert_eq!(&r[p.id], b"p1");
        assert_eq!((p.ordinal, p.last), (3, false));
    }

    #[test]
    fn non_string_values_are_skipped() {
        // {"log": 5, "source": "stdout"}
        let r = [
            0x82, 0xa3, b'l', b'o', b'g', 0x05, 0xa6, b's', b'o', b'u', b'r', b'c', b'e', 0xa6,
            b's', b't', b'd', b'o', b'u', b't',
        ];
        let f = fields(&r, b"log");
        assert!(f.line.is_none());
        assert_eq!(&r[f.source.unwrap()], b"stdout");
    }

    #[test]
    fn rewrite_replaces_line_and_drops_partial_keys() {
        let r = record(&[
            ("container_id", "abc"),
            ("log", "a"),
            ("partial_message", "true"),
            ("partial_id", "x"),
        ]);
        let out = rewrite(&r, b"log", b"joined line");
        let f = fields(&out, b"log");
        assert_eq!(&out[f.line.unwrap()], b"joined line");
        assert_eq!(&out[f.container_id.unwrap()], b"abc");
        assert!(f.partial.is_none());
        assert_eq!(out[0], 0x82, "two keys left");
    }
}
