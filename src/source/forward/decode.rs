//! Forward-protocol requests into events.
//!
//! Input is one complete request (the connection found its end with a
//! [`Scanner`](crate::msgpack::Scanner)); output is events appended to a [`Batch`], the
//! request's `chunk` id, and a count of what was skipped and why.
//!
//! The mode is chosen with one look at the type of the second element, as the
//! [spec](https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1) intends:
//! array = Forward, integer/float/ext = Message, str/bin = PackedForward (compressed when the
//! option says `gzip` or the payload starts with the gzip magic).
//!
//! A request whose shape is wrong is skipped whole; inside a good request a bad entry is skipped
//! alone. Either way the request is not complete, so it is not acknowledged and a client that
//! asked for acks sends it again.

use std::io::Read;

use bytes::Bytes;

use crate::event::{Batch, Event, Timestamp};
use crate::msgpack::{Cursor, Kind, Scanner};

/// Why input was skipped. The names are the `reason` label of
/// `outrigger_source_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The request is not a 2- to 4-element array with a string tag.
    InvalidRequest,
    InvalidTag,
    /// The time is not an integer, float, EventTime or `[time, metadata]`.
    InvalidTime,
    /// The record is not a map.
    InvalidRecord,
    /// An entry is not `[time, record]`, or a packed stream is not MessagePack.
    InvalidEntry,
    RecordTooLarge,
    /// The option map is not a map.
    InvalidOption,
    /// `compressed` names a codec we do not have.
    UnsupportedCompression,
    /// The payload is marked gzip but is not valid gzip.
    BadCompression,
    DecompressedTooLarge,
    /// `fluent_signal` says metrics or traces, not logs.
    UnsupportedSignal,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::InvalidRequest,
        Reason::InvalidTag,
        Reason::InvalidTime,
        Reason::InvalidRecord,
        Reason::InvalidEntry,
        Reason::RecordTooLarge,
        Reason::InvalidOption,
        Reason::UnsupportedCompression,
        Reason::BadCompression,
        Reason::DecompressedTooLarge,
        Reason::UnsupportedSignal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidRequest => "invalid_request",
            Reason::InvalidTag => "invalid_tag",
            Reason::InvalidTime => "invalid_time",
            Reason::InvalidRecord => "invalid_record",
            Reason::InvalidEntry => "invalid_entry",
            Reason::RecordTooLarge => "record_too_large",
            Reason::InvalidOption => "invalid_option",
            Reason::UnsupportedCompression => "unsupported_compression",
            Reason::BadCompression => "bad_compression",
            Reason::DecompressedTooLarge => "decompressed_too_large",
            Reason::UnsupportedSignal => "unsupported_signal",
        }
    }
}

/// Counts of skipped items by reason, kept per read so metrics are touched once per batch.
#[derive(Debug, Default, Clone)]
pub struct Skipped([u64; Reason::ALL.len()]);

impl Skipped {
    pub fn add(&mut self, reason: Reason, n: u64) {
        self.0[reason as usize] += n;
    }

    pub fn iter(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|r| (*r, self.0[*r as usize]))
            .filter(|(_, n)| *n > 0)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Per-source decoding settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Prepended to every tag with a `.` (Fluentd's `add_tag_prefix`).
    pub tag_prefix: Option<Bytes>,
    pub max_record_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_depth: usize,
}

/// What the connection needs to know about one request after decoding it.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The raw MessagePack of the `chunk` option, echoed byte for byte in the ack.
    pub chunk: Option<Bytes>,
    /// Events appended to the batch.
    pub events: usize,
    /// False when anything in the request was skipped: such a request is never acked.
    pub complete: bool,
}

/// Decodes one complete request `frame` (a msgpack array) into `batch`.
pub fn request(frame: &Bytes, batch: &mut Batch, opts: &Options, skipped: &mut Skipped) -> Outcome {
    let mut out = Outcome::default();
    let before = skipped.total();
    if let Err(reason) = decode(frame, batch, opts, skipped, &mut out) {
        skipped.add(reason, 1);
    }
    // Entries skipped one by one also make the request incomplete.
    out.complete = skipped.total() == before;
    out
}

fn decode(
    frame: &Bytes,
    batch: &mut Batch,
    opts: &Options,
    skipped: &mut Skipped,
    out: &mut Outcome,
) -> Result<(), Reason> {
    use Reason::*;
    let mut c = Cursor::new(frame);
    let (h, _) = c.next().map_err(|_| InvalidRequest)?;
    if h.kind != Kind::Array || !(2..=4).contains(&h.children) {
        return Err(InvalidRequest);
    }
    if c.peek().map_err(|_| InvalidRequest)?.kind != Kind::Str {
        return Err(InvalidTag);
    }
    let tag = c.bytes().map_err(|_| InvalidTag)?.unwrap_or_default();
    let tag_range = offset(frame, tag);
    let second = c.peek().map_err(|_| InvalidRequest)?.kind;

    // The option map comes last but says how to read the entries: read it first.
    let body = c.clone();
    let body_items = match second {
        Kind::Array | Kind::Str | Kind::Bin => 1,
        _ => 2,
    };
    for _ in 0..body_items {
        c.skip().map_err(|_| InvalidRequest)?;
    }
    let opt = match h.children - 1 - body_items {
        0 => Opt::default(),
        1 => options(&mut c, frame)?,
        _ => return Err(InvalidRequest),
    };
    out.chunk = opt.chunk;
    if opt.signal != 0 {
        return Err(UnsupportedSignal);
    }

    let tag = batch.tag_index(tag, || match &opts.tag_prefix {
        None => frame.slice(tag_range),
        Some(p) => Bytes::from([p.as_ref(), b".", tag].concat()),
    });
    let mut body = body;
    match second {
        Kind::Array => {
            let (h, _) = body.next().map_err(|_| InvalidRequest)?;
            for _ in 0..h.children {
                let r = body.skip().map_err(|_| InvalidEntry)?;
                push_entry(&frame.slice(r), tag, batch, opts, skipped, out);
            }
        }
        Kind::Str | Kind::Bin => {
            let payload = body
                .bytes()
                .map_err(|_| InvalidRequest)?
                .unwrap_or_default();
            let payload = frame.slice(offset(frame, payload));
            let stream = if opt.gzip || payload.starts_with(&GZIP_MAGIC) {
                let data = gunzip(&payload, opts.max_decompressed_bytes)?;
                batch.size += data.len();
                data
            } else {
                payload
            };
            packed(&stream, tag, batch, opts, skipped, out)?;
        }
        _ => {
            let time = time(&mut body)?;
            let record = record(&mut body, frame, opts)?;
            if let Some(time) = time {
                batch.events.push(Event { time, tag, record });
                out.events += 1;
            }
        }
    }
    Ok(())
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The range `part` occupies inside `whole`; `part` must be a subslice of it.
fn offset(whole: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

#[derive(Default)]
struct Opt {
    chunk: Option<Bytes>,
    gzip: bool,
    signal: i64,
}

fn options(c: &mut Cursor<'_>, frame: &Bytes) -> Result<Opt, Reason> {
    use Reason::*;
    let mut opt = Opt::default();
    let (h, _) = c.next().map_err(|_| InvalidOption)?;
    match h.kind {
        // Old Docker versions send nil for "no options".
        Kind::Nil => return Ok(opt),
        Kind::Map => {}
        _ => return Err(InvalidOption),
    }
    for _ in 0..h.children / 2 {
        let key = c.bytes().map_err(|_| InvalidOption)?;
        let value = c.skip().map_err(|_| InvalidOption)?;
        match key {
            Some(b"chunk") => opt.chunk = Some(frame.slice(value)),
            Some(b"compressed") => {
                let v = Cursor::new(c.slice(value)).bytes().ok().flatten();
                match v {
                    Some(b"gzip") => opt.gzip = true,
                    Some(b"text") | None => {}
                    Some(_) => return Err(UnsupportedCompression),
                }
            }
            Some(b"fluent_signal") => {
                if let Ok((h, _)) = Cursor::new(c.slice(value)).next() {
                    if let Kind::Int(n) = h.kind {
                        opt.signal = n;
                    }
                }
            }
            // `size` is only a hint, and unknown keys are ignored, as the spec asks.
            _ => {}
        }
    }
    Ok(opt)
}

/// Decompresses every gzip member of `data`, refusing to produce more than `limit` bytes.
fn gunzip(data: &[u8], limit: usize) -> Result<Bytes, Reason> {
    let mut out = Vec::with_capacity((data.len() * 4).min(limit));
    let decoder = flate2::read::MultiGzDecoder::new(data);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Reason::BadCompression)?;
    if out.len() > limit {
        return Err(Reason::DecompressedTooLarge);
    }
    Ok(Bytes::from(out))
}

/// Entries of a PackedForward stream: concatenated `[time, record]` arrays. Each is checked
/// with a scanner first, so a lying length or deep nesting inside a (decompressed) payload
/// meets the same limits as on the socket.
fn packed(
    stream: &Bytes,
    tag: u32,
    batch: &mut Batch,
    opts: &Options,
    skipped: &mut Skipped,
    out: &mut Outcome,
) -> Result<(), Reason> {
    let mut scanner = Scanner::default();
    let mut pos = 0;
    while pos < stream.len() {
        let len = match scanner.scan(&stream[pos..], stream.len() - pos, opts.max_depth) {
            Ok(Some(len)) => len,
            // A broken stream cannot be resynchronised: the rest of the payload is lost.
            _ => return Err(Reason::InvalidEntry),
        };
        push_entry(
            &stream.slice(pos..pos + len),
            tag,
            batch,
            opts,
            skipped,
            out,
        );
        pos += len;
    }
    Ok(())
}

/// Decodes one `[time, record]` entry, or counts why not.
fn push_entry(
    entry: &Bytes,
    tag: u32,
    batch: &mut Batch,
    opts: &Options,
    skipped: &mut Skipped,
    out: &mut Outcome,
) {
    let mut c = Cursor::new(entry);
    let decoded = match c.next() {
        Ok((h, _)) if h.kind == Kind::Array && h.children == 2 => {
            time(&mut c).and_then(|t| Ok((t, record(&mut c, entry, opts)?)))
        }
        _ => Err(Reason::InvalidEntry),
    };
    match decoded {
        Ok((Some(time), record)) => {
            batch.events.push(Event { time, tag, record });
            out.events += 1;
        }
        // A Fluent Bit group marker: framing, not a log event.
        Ok((None, _)) => {}
        Err(reason) => skipped.add(reason, 1),
    }
}

/// Reads an entry's time. `None` means a Fluent Bit group marker.
fn time(c: &mut Cursor<'_>) -> Result<Option<Timestamp>, Reason> {
    let (h, payload) = c.next().map_err(|_| Reason::InvalidTime)?;
    let t = match h.kind {
        Kind::Int(secs) if secs >= 0 => Timestamp { secs, nanos: 0 },
        Kind::Float(f) if f.is_finite() && f >= 0.0 && f < i64::MAX as f64 => Timestamp {
            secs: f.trunc() as i64,
            nanos: ((f.fract() * 1e9) as u32).min(999_999_999),
        },
        Kind::Ext(0) if payload.len() == 8 => {
            let b = c.slice(payload);
            let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            let nanos = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            if nanos >= 1_000_000_000 {
                return Err(Reason::InvalidTime);
            }
            // 0xFFFFFFFF and 0xFFFFFFFE with zero nanos open and close a Fluent Bit group.
            if secs >= 0xFFFF_FFFE && nanos == 0 {
                return Ok(None);
            }
            Timestamp {
                secs: i64::from(secs),
                nanos,
            }
        }
        // Fluent Bit's v2 entry shape: [[time, metadata], record].
        Kind::Array if h.children == 2 => {
            let t = time(c)?;
            if c.peek().map_err(|_| Reason::InvalidTime)?.kind != Kind::Map {
                return Err(Reason::InvalidTime);
            }
            c.skip().map_err(|_| Reason::InvalidTime)?;
            return Ok(t);
        }
        _ => return Err(Reason::InvalidTime),
    };
    // Fluentd replaces a zero time with the time of arrival.
    Ok(Some(if t.secs == 0 && t.nanos == 0 {
        Timestamp::now()
    } else {
        t
    }))
}

fn record(c: &mut Cursor<'_>, frame: &Bytes, opts: &Options) -> Result<Bytes, Reason> {
    if c.peek().map_err(|_| Reason::InvalidRecord)?.kind != Kind::Map {
        return Err(Reason::InvalidRecord);
    }
    let r = c.skip().map_err(|_| Reason::InvalidRecord)?;
    if r.len() > opts.max_record_bytes {
        return Err(Reason::RecordTooLarge);
    }
    Ok(frame.slice(r))
}
