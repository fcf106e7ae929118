//! MessagePack reading without a value tree.
//!
//! Two readers share one header decoder ([`head`]):
//!
//! - [`Scanner`] answers "is a whole object in this buffer yet?" and can be *resumed*: when a
//!   read ends in the middle of an object it remembers how far it got, so a large frame that
//!   arrives in many reads is walked once, not once per read. It allocates nothing but its
//!   nesting stack and enforces the size and depth limits before any payload is buffered.
//! - [`Cursor`] walks an object already known to be complete and hands out byte ranges, so
//!   callers can slice the receive buffer instead of copying strings out of it.
//!
//! Strings are treated as bytes everywhere: the forward protocol carries non-UTF-8 `str`
//! values (packed payloads, handshake salts, application output).
//! Markers come from `rmp`; the walking is ours because it is on the hot path and must be
//! resumable.

use rmp::Marker;

/// What a value is, as far as a forwarder cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Nil,
    Bool(bool),
    /// Any integer that fits in `i64`.
    Int(i64),
    /// Unsigned integers above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str,
    Bin,
    /// Extension with its type byte.
    Ext(i8),
    Array,
    Map,
}

/// A decoded value header.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub kind: Kind,
    /// Bytes of marker and length fields.
    pub head_len: usize,
    /// Bytes of inline payload after the header (strings, bins, ext data).
    pub payload_len: usize,
    /// Number of child values that follow (array elements, or twice the map pairs).
    pub children: u64,
}

/// Why bytes are not acceptable MessagePack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("reserved marker 0xc1")]
    Reserved,
    #[error("object larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("nesting deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("truncated object")]
    Truncated,
}

fn be(buf: &[u8]) -> u64 {
    buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Decodes the header at the start of `buf`. `Ok(None)` means more bytes are needed for the
/// header itself; the payload may still be incomplete when `Some` is returned.
pub fn head(buf: &[u8]) -> Result<Option<Head>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // Fast path: the markers a Docker request is made of, without rmp's round trip.
    let h = |kind, head_len, payload_len, children| {
        Ok(Some(Head {
            kind,
            head_len,
            payload_len,
            children,
        }))
    };
    match first {
        0x00..=0x7f => return h(Kind::Int(i64::from(first)), 1, 0, 0),
        0x80..=0x8f => return h(Kind::Map, 1, 0, 2 * u64::from(first & 0x0f)),
        0x90..=0x9f => return h(Kind::Array, 1, 0, u64::from(first & 0x0f)),
        0xa0..=0xbf => return h(Kind::Str, 1, usize::from(first & 0x1f), 0),
        0xd9 => {
            if let Some(&n) = buf.get(1) {
                return h(Kind::Str, 2, usize::from(n), 0);
            }
        }
        0xda => {
            if let Some(b) = buf.get(1..3) {
                return h(
                    Kind::Str,
                    3,
                    usize::from(u16::from_be_bytes([b[0], b[1]])),
                    0,
                );
            }
        }
        0xd2 => {
            if let Some(b) = buf.get(1..5) {
                return h(
                    Kind::Int(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))),
                    5,
                    0,
                    0,
                );
            }
        }
        _ => {}
    }
    // (kind, bytes of length/value field after the marker, is the field a length?)
    let leaf = |kind| Head {
        kind,
        head_len: 1,
        payload_len: 0,
        children: 0,
    };
    let fixed = |n: usize| -> Option<&[u8]> { buf.get(1..1 + n) };
    macro_rules! need {
        ($n:expr) => {
            match fixed($n) {
                Some(b) => b,
                None => return Ok(None),
            }
        };
    }
    let h = match Marker::from_u8(first) {
        Marker::FixPos(v) => leaf(Kind::Int(i64::from(v))),
        Marker::FixNeg(v) => leaf(Kind::Int(i64::from(v))),
        Marker::Null => leaf(Kind::Nil),
        Marker::True => leaf(Kind::Bool(true)),
        Marker::False => leaf(Kind::Bool(false)),
        Marker::Reserved => return Err(Error::Reserved),
        Marker::FixMap(n) => Head {
            kind: Kind::Map,
            head_len: 1,
            payload_len: 0,
            children: 2 * u64::from(n),
        },
        Marker::FixArray(n) => Head {
            kind: Kind::Array,
            head_len: 1,
            payload_len: 0,
            children: u64::from(n),
        },
        Marker::FixStr(n) => Head {
            kind: Kind::Str,
            head_len: 1,
            payload_len: usize::from(n),
            children: 0,
        },
        m @ (Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64) => {
            let n = match m {
                Marker::U8 => 1,
                Marker::U16 => 2,
                Marker::U32 => 4,
                _ => 8,
            };
            let v = be(need!(n));
            let kind = i64::try_from(v).map_or(Kind::UInt(v), Kind::Int);
            Head {
                kind,
                head_len: 1 + n,
                payload_len: 0,
                children: 0,
            }
        }
        m @ (Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64) => {
            let b = match m {
                Marker::I8 => need!(1),
                Marker::I16 => need!(2),
                Marker::I32 => need!(4),
                _ => need!(8),
            };
            let v = match b.len() {
                1 => i64::from(b[0] as i8),
                2 => i64::from(i16::from_be_bytes([b[0], b[1]])),
                4 => i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                _ => be(b) as i64,
            };
            Head {
                kind: Kind::Int(v),
                head_len: 1 + b.len(),
                payload_len: 0,
                children: 0,
            }
        }
        Marker::F32 => {
            let b = need!(4);
            Head {
                kind: Kind::Float(f64::from(f32::from_bits(be(b) as u32))),
                head_len: 5,
                payload_len: 0,
                children: 0,
            }
        }
        Marker::F64 => Head {
            kind: Kind::Float(f64::from_bits(be(need!(8)))),
            head_len: 9,
            payload_len: 0,
            children: 0,
        },
        m @ (Marker::Str8 | Marker::Str16 | Marker::Str32) => {
            let n = match m {
                Marker::Str8 => 1,
                Marker::Str16 => 2,
                _ => 4,
            };
            Head {
                kind: Kind::Str,
                head_len: 1 + n,
                payload_len: be(need!(n)) as usize,
                children: 0,
            }
        }
        m @ (Marker::Bin8 | Marker::Bin16 | Marker::Bin32) => {
            let n = match m {
                Marker::Bin8 => 1,
                Marker::Bin16 => 2,
                _ => 4,
            };
            Head {
                kind: Kind::Bin,
                head_len: 1 + n,
                payload_len: be(need!(n)) as usize,
                children: 0,
            }
        }
        m @ (Marker::Array16 | Marker::Array32 | Marker::Map16 | Marker::Map32) => {
            let n = if matches!(m, Marker::Array16 | Marker::Map16) {
                2
            } else {
                4
            };
            let len = be(need!(n));
            let is_map = matches!(m, Marker::Map16 | Marker::Map32);
            Head {
                kind: if is_map { Kind::Map } else { Kind::Array },
                head_len: 1 + n,
                payload_len: 0,
                children: if is_map { 2 * len } else { len },
            }
        }
        m @ (Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16) => {
            let len = match m {
                Marker::FixExt1 => 1,
                Marker::FixExt2 => 2,
                Marker::FixExt4 => 4,
                Marker::FixExt8 => 8,
                _ => 16,
            };
            Head {
                kind: Kind::Ext(need!(1)[0] as i8),
                head_len: 2,
                payload_len: len,
                children: 0,
            }
        }
        m @ (Marker::Ext8 | Marker::Ext16 | Marker::Ext32) => {
            let n = match m {
                Marker::Ext8 => 1,
                Marker::Ext16 => 2,
                _ => 4,
            };
            let b = need!(n + 1);
            Head {
                kind: Kind::Ext(b[n] as i8),
                head_len: 2 + n,
                payload_len: be(&b[..n]) as usize,
                children: 0,
            }
        }
    };
    Ok(Some(h))
}

/// Resumable check that a whole MessagePack object has arrived.
///
/// Feed it the same growing buffer (starting at the object's first byte) after every read.
/// It remembers the offset it reached and the element counts still open at each depth.
#[derive(Debug, Default)]
pub struct Scanner {
    pos: usize,
    /// Children still expected at each open nesting level, innermost last.
    open: Vec<u64>,
    /// Bytes the object is known to need so far (at least `pos` + 1 while incomplete).
    need: usize,
}

impl Scanner {
    /// Returns `Ok(Some(len))` when `buf[..len]` is one complete object, `Ok(None)` when more
    /// bytes are needed, or an error when the object breaks a limit or is malformed. After
    /// `Some` or an error, the scanner is reset for the next object.
    ///
    /// `max_len` bounds the object's total size *as declared*, so a header that claims 4 GiB
    /// fails at once instead of making the caller buffer toward it.
    pub fn scan(
        &mut self,
        buf: &[u8],
        max_len: usize,
        max_depth: usize,
    ) -> Result<Option<usize>, Error> {
        let r = self.scan_inner(buf, max_len, max_depth);
        if !matches!(r, Ok(None)) {
            self.pos = 0;
            self.need = 0;
            self.open.clear();
        }
        r
    }

    /// After `Ok(None)`: how many bytes the unfinished object needs at least, as far as its
    /// headers tell (a 2 MiB `bin` header says 2 MiB at once), so a reader can size its
    /// buffer once instead of growing it step by step.
    pub fn need(&self) -> usize {
        self.need
    }

    fn scan_inner(
        &mut self,
        buf: &[u8],
        max_len: usize,
        max_depth: usize,
    ) -> Result<Option<usize>, Error> {
        loop {
            let Some(h) = head(&buf[self.pos.min(buf.len())..])? else {
                self.need = self.pos + 1;
                return Ok(None);
            };
            let end = self.pos as u64 + h.head_len as u64 + h.payload_len as u64;
            if end > max_len as u64 {
                return Err(Error::TooLarge { limit: max_len });
            }
            if end > buf.len() as u64 {
                self.need = end as usize;
                return Ok(None);
            }
            self.pos = end as usize;
            if h.children > 0 {
                // Every child takes at least one byte, so a count beyond the limit is a lie.
                if self.pos as u64 + h.children > max_len as u64 {
                    return Err(Error::TooLarge { limit: max_len });
                }
                if self.open.len() >= max_depth {
                    return Err(Error::TooDeep { limit: max_depth });
                }
                self.open.push(h.children);
                continue;
            }
            // A leaf finished: close every container it completes.
            loop {
                match self.open.last_mut() {
                    None => return Ok(Some(self.pos)),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// Forward-only reader over a complete object. Every method checks bounds and returns
/// [`Error::Truncated`] instead of panicking, because "complete" was decided by a scanner with
/// possibly different limits, and fuzzers will call it on anything.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Offset of the next value.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The header of the next value, without consuming it.
    pub fn peek(&self) -> Result<Head, Error> {
        head(&self.buf[self.pos.min(self.buf.len())..])?.ok_or(Error::Truncated)
    }

    /// Consumes the next header; for strings, bins and exts also their payload, whose range
    /// (relative to the cursor's buffer) is returned.
    pub fn read(&mut self) -> Result<(Head, std::ops::Range<usize>), Error> {
        let h = self.peek()?;
        let start = self.pos + h.head_len;
        let end = start
            .checked_add(h.payload_len)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Error::Truncated)?;
        self.pos = end;
        Ok((h, start..end))
    }

    /// Skips one whole value, children included; returns its byte range.
    pub fn skip(&mut self) -> Result<std::ops::Range<usize>, Error> {
        let start = self.pos;
        let mut pending: u64 = 1;
        while pending > 0 {
            let (h, _) = self.read()?;
            pending = pending - 1 + h.children;
            if pending > (self.buf.len() - self.pos) as u64 {
                return Err(Error::Truncated);
            }
        }
        Ok(start..self.pos)
    }

    /// Bytes of a `str` or `bin`; `None` (and nothing consumed) for any other kind. The header
    /// is decoded once: this runs for every key of every record.
    pub fn bytes(&mut self) -> Result<Option<&'a [u8]>, Error> {
        let at = self.pos;
        let (h, r) = self.read()?;
        match h.kind {
            Kind::Str | Kind::Bin => Ok(Some(&self.buf[r])),
            _ => {
                self.pos = at;
                Ok(None)
            }
        }
    }

    pub fn slice(&self, r: std::ops::Range<usize>) -> &'a [u8] {
        &self.buf[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ["app", [[1441588984, {"a":1}], [1441588985, {"a":2}]]]
    const FORWARD: &[u8] = &[
        0x92, 0xa3, 0x61, 0x70, 0x70, 0x92, 0x92, 0xce, 0x55, 0xec, 0xe6, 0xf8, 0x81, 0xa1, 0x61,
        0x01, 0x92, 0xce, 0x55, 0xec, 0xe6, 0xf9, 0x81, 0xa1, 0x61, 0x02,
    ];

    #[test]
    fn scanner_finds_whole_object() {
        let mut s = Scanner::default();
        assert_eq!(s.scan(FORWARD, 1 << 20, 8), Ok(Some(FORWARD.len())));
    }

    #[test]
    fn scanner_resumes_byte_by_byte() {
        let mut s = Scanner::default();
        for n in 0..FORWARD.len() {
            assert_eq!(s.scan(&FORWARD[..n], 1 << 20, 8), Ok(None), "prefix {n}");
        }
        assert_eq!(s.scan(FORWARD, 1 << 20, 8), Ok(Some(FORWARD.len())));
    }

    #[test]
    fn scanner_stops_at_first_object() {
        let mut two = FORWARD.to_vec();
        two.extend_from_slice(FORWARD);
        let mut s = Scanner::default();
        assert_eq!(s.scan(&two, 1 << 20, 8), Ok(Some(FORWARD.len())));
    }

    #[test]
    fn huge_declared_lengths_fail_without_data() {
        // str32 claiming 4 GiB, array32 claiming 4 billion elements, map32 likewise.
        for frame in [
            &[0xdb, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xdf, 0xff, 0xff, 0xff, 0xff],
            &[0xc6, 0x10, 0, 0, 0],
        ] {
            let mut s = Scanner::default();
            assert_eq!(
                s.scan(frame, 1 << 20, 8),
                Err(Error::TooLarge { limit: 1 << 20 })
            );
        }
    }

    #[test]
    fn nesting_is_limited() {
        let deep = vec![0x91u8; 100];
        let mut s = Scanner::default();
        assert_eq!(
            s.scan(&deep, 1 << 20, 32),
            Err(Error::TooDeep { limit: 32 })
        );
    }

    #[test]
    fn reserved_marker_is_an_error() {
        let mut s = Scanner::default();
        assert_eq!(s.scan(&[0x92, 0xc1], 1 << 20, 8), Err(Error::Reserved));
    }

    #[test]
    fn cursor_reads_ints_of_every_width() {
        // i32 (Go's msgp writes current epochs as d2), u32, u64 above i64::MAX, negative fixint.
        let buf = [
            0xd2, 0x55, 0xec, 0xe6, 0xf8, 0xce, 0x55, 0xec, 0xe6, 0xf8, 0xcf, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        let mut c = Cursor::new(&buf);
        assert_eq!(c.read().unwrap().0.kind, Kind::Int(1441588984));
        assert_eq!(c.read().unwrap().0.kind, Kind::Int(1441588984));
        assert_eq!(c.read().unwrap().0.kind, Kind::UInt(u64::MAX));
        assert_eq!(c.read().unwrap().0.kind, Kind::Int(-1));
        assert!(c.is_empty());
    }

    #[test]
    fn cursor_skip_is_bounded_on_lies() {
        // An array claiming 2^32-1 elements followed by one byte.
        let mut c = Cursor::new(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(c.skip(), Err(Error::Truncated));
        let mut c = Cursor::new(&[0xa5, b'a']);
        assert_eq!(c.read().map(|_| ()), Err(Error::Truncated));
    }
}
