//! A protobuf writer for the few OTLP messages the exporter sends.
//!
//! Building `opentelemetry-proto`'s message structs and encoding them with prost cost more
//! than everything else on an event's path together: each record became a tree of owned
//! `String`s and `Vec`s, allocated, measured (`encoded_len`) and freed again. The exporter
//! instead writes the wire format straight from the record's bytes into one buffer per
//! request. The message definitions stay the reference: tests decode what this writes with
//! the prost types.
//!
//! A nested message's length comes before its body, and is not known until the body is
//! written. [`Writer::begin`] reserves room for it, as many bytes as the caller expects the
//! length to take (one for a small value, two for a log record, three for a resource's
//! group); [`Writer::end`] fills it in, moving the body only when the guess was wrong.
//! Lengths are always written in their shortest form, as every protobuf encoder does.

/// Wire types (protobuf encoding spec).
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// An output buffer with protobuf field writers. Scalar writers skip default values, as
/// proto3 encoders do; `oneof` members are written whatever their value (the caller uses
/// the `_always` forms).
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

/// Where a nested message's body starts and how many bytes were reserved for its length;
/// given back to [`Writer::end`].
#[must_use = "a begun message must be ended"]
pub struct Open {
    start: usize,
    reserved: usize,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    #[inline]
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field << 3 | u32::from(wire)));
    }

    /// A length-delimited field (string, bytes), written even when empty.
    #[inline]
    pub fn bytes_always(&mut self, field: u32, b: &[u8]) {
        self.key(field, LEN);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// A `string` field from bytes: as they are when valid UTF-8 (protobuf strings must
    /// be), else with U+FFFD for each invalid sequence.
    #[inline]
    pub fn str_always(&mut self, field: u32, b: &[u8]) {
        match simdutf8::basic::from_utf8(b) {
            Ok(_) => self.bytes_always(field, b),
            Err(_) => self.bytes_always(field, String::from_utf8_lossy(b).as_bytes()),
        }
    }

    /// A `string` field, left out when empty.
    #[inline]
    pub fn str(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.str_always(field, b);
        }
    }

    /// A `bytes` field, left out when empty.
    #[inline]
    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.bytes_always(field, b);
        }
    }

    /// An `int32`/`int64`/enum field (negative numbers take ten bytes, as the spec says).
    #[inline]
    pub fn int_always(&mut self, field: u32, v: i64) {
        self.key(field, VARINT);
        self.varint(v as u64);
    }

    #[inline]
    pub fn int(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.int_always(field, v);
        }
    }

    #[inline]
    pub fn bool_always(&mut self, field: u32, v: bool) {
        self.key(field, VARINT);
        self.buf.push(u8::from(v));
    }

    #[inline]
    pub fn double_always(&mut self, field: u32, v: f64) {
        self.key(field, FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    #[inline]
    pub fn fixed64(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, FIXED64);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    #[inline]
    pub fn fixed32(&mut self, field: u32, v: u32) {
        if v != 0 {
            self.key(field, FIXED32);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Starts a nested message in `field` whose length is expected to fit in one byte
    /// (under 128 bytes).
    #[inline]
    pub fn begin(&mut self, field: u32) -> Open {
        self.begin_sized(field, 1)
    }

    /// Starts a nested message in `field`, reserving `width` bytes (1 to 10) for its length:
    /// 2 for up to 16 KiB, 3 for up to 2 MiB.
    #[inline]
    pub fn begin_sized(&mut self, field: u32, width: usize) -> Open {
        self.key(field, LEN);
        self.buf.resize(self.buf.len() + width, 0);
        Open {
            start: self.buf.len(),
            reserved: width,
        }
    }

    /// Ends the message `open` started: writes its length before it.
    #[inline]
    pub fn end(&mut self, open: Open) {
        let Open { start, reserved } = open;
        let len = self.buf.len() - start;
        let mut prefix = [0u8; 10];
        let mut n = 0;
        let mut v = len as u64;
        while v >= 0x80 {
            prefix[n] = v as u8 | 0x80;
            v >>= 7;
            n += 1;
        }
        prefix[n] = v as u8;
        n += 1;
        let at = start - reserved;
        if n != reserved {
            // A wrong guess: move the body to just after the length's real width.
            if n > reserved {
                self.buf.resize(self.buf.len() + (n - reserved), 0);
            }
            self.buf.copy_within(start..start + len, at + n);
            self.buf.truncate(at + n + len);
        }
        self.buf[at..at + n].copy_from_slice(&prefix[..n]);
    }

    /// A position to come back to with [`Writer::truncate`].
    pub fn mark(&self) -> usize {
        self.buf.len()
    }

    /// Discards everything written since `mark` (a value that turned out malformed halfway).
    pub fn truncate(&mut self, mark: usize) {
        self.buf.truncate(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList};
    use prost::Message as _;

    /// What the writer makes decodes, with prost, to what prost would have made, for
    /// lengths on both sides of each varint width boundary.
    #[test]
    fn nested_lengths_across_varint_widths() {
        for (n, width) in [0, 1, 126, 127, 128, 129, 16_383, 16_384, 70_000]
            .into_iter()
            .flat_map(|n| [(n, 1), (n, 2), (n, 3)])
        {
            let text = "x".repeat(n);
            let mut w = Writer::default();
            let kv = w.begin_sized(1, width);
            w.str_always(1, b"k");
            let v = w.begin(2);
            let list = w.begin(6);
            let inner = w.begin(1);
            w.str_always(1, b"s");
            let av = w.begin_sized(2, width);
            w.str_always(1, text.as_bytes());
            w.end(av);
            w.end(inner);
            w.end(list);
            w.end(v);
            w.end(kv);
            let expected = KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList {
                            values: vec![KeyValue {
                                key: "s".into(),
                                value: Some(AnyValue {
                                    value: Some(Value::StringValue(text.clone())),
                                }),
                                ..Default::default()
                            }],
                        })),
                    }),
                    ..Default::default()
                }],
            };
            assert_eq!(
                w.buf,
                expected.encode_to_vec(),
                "length {n}, reserved {width}"
            );
            assert_eq!(KeyValueList::decode(&w.buf[..]).unwrap(), expected);
        }
    }

    #[test]
    fn scalars_match_prost() {
        let mut w = Writer::default();
        w.int_always(3, -5);
        w.bool_always(2, true);
        w.double_always(4, 1.5);
        let mut expected = Vec::new();
        AnyValue {
            value: Some(Value::IntValue(-5)),
        }
        .encode(&mut expected)
        .unwrap();
        AnyValue {
            value: Some(Value::BoolValue(true)),
        }
        .encode(&mut expected)
        .unwrap();
        AnyValue {
            value: Some(Value::DoubleValue(1.5)),
        }
        .encode(&mut expected)
        .unwrap();
        assert_eq!(w.buf, expected);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let mut w = Writer::default();
        w.str_always(1, b"a\xffb");
        let v = AnyValue::decode(&w.buf[..]).unwrap();
        assert_eq!(v.value, Some(Value::StringValue("a\u{fffd}b".into())));
    }
}
