//! Forward-protocol requests into events.
//!
//! Input is one complete request (the connection found its end with a
//! [`Scanner`](crate::msgpack::Scanner)); output is events appended to a [`Batch`], the
//! request's `chunk` id, and a count of what was skipped and why.
//!
//! The mode is chosen with one look at the type of the second element, as the
//! [spec](https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1) intends:
//! array = Forward, integer/float/ext = Message, str/bin = PackedForward (compressed when the
//! option says `gzip` or `zstd`, or the payload starts with either's magic bytes; Fluentd sends
//! both, Fluent Bit gzip).
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
    /// The payload is marked compressed but does not decompress.
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

impl Default for Options {
    /// A `forward` source's defaults, as the configuration documents them.
    fn default() -> Self {
        use crate::config::Forward;
        Options {
            tag_prefix: None,
            max_record_bytes: Forward::default_max_record_bytes(),
            max_decompressed_bytes: Forward::default_max_decompressed_bytes(),
            max_depth: Forward::default_max_depth(),
        }
    }
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
    /// The payload could not get room to inflate: nothing of the request was added to the
    /// batch (and nothing counted as skipped); decode it again once there is room.
    pub needs_room: bool,
    /// Bytes of the frame the request took, once its shape was read (0 when it was not):
    /// where the next request starts, without scanning for it.
    pub len: usize,
}

/// Decodes one complete request `frame` (a msgpack array) into `batch`.
pub fn request(frame: &Bytes, batch: &mut Batch, opts: &Options, skipped: &mut Skipped) -> Outcome {
    request_within(frame, batch, opts, skipped, &mut |_| true)
}

/// Decodes every whole request in `requests` (several, back to back, as a connection read
/// them) into `batch`: what replay does with a disk-buffer record of a forward source. Each
/// request's decoding says where the next starts (one walk over the bytes, not a scan and
/// then a decode); only a request refused before its end was found is scanned. A request
/// that is not one (the log's records hold only what a connection decoded, so only damage
/// the checksum missed gets here) ends the decoding; what came before it stays.
pub fn requests(requests: &Bytes, batch: &mut Batch, opts: &Options, skipped: &mut Skipped) {
    let mut at = 0;
    while at < requests.len() {
        // nil: a heartbeat.
        if requests[at] == 0xc0 {
            at += 1;
            continue;
        }
        let rest = requests.slice(at..);
        let n = match request_within(&rest, batch, opts, skipped, &mut |_| true).len {
            0 => match crate::msgpack::Scanner::default().scan(&rest, rest.len(), opts.max_depth) {
                Ok(Some(n)) => n,
                _ => {
                    skipped.add(Reason::InvalidRequest, 1);
                    return;
                }
            },
            n => n,
        };
        at += n;
    }
}

/// [`request`], asking `room` for every step of memory a compressed payload inflates into
/// (`room(n)` takes `n` bytes of a budget, or says there are none).
pub fn request_within(
    frame: &Bytes,
    batch: &mut Batch,
    opts: &Options,
    skipped: &mut Skipped,
    room: &mut dyn FnMut(usize) -> bool,
) -> Outcome {
    let mut out = Outcome::default();
    let before = skipped.total();
    match decode(frame, batch, opts, skipped, &mut out, room) {
        Ok(()) => {}
        Err(Inflate::NoRoom) => {
            out.needs_room = true;
            return out;
        }
        Err(Inflate::Reason(reason)) => skipped.add(reason, 1),
    }
    // Entries skipped one by one also make the request incomplete.
    out.complete = skipped.total() == before;
    out
}

/// Why decoding a request stopped.
enum Inflate {
    Reason(Reason),
    /// No room in the budget for the decompressed payload.
    NoRoom,
}

impl From<Reason> for Inflate {
    fn from(r: Reason) -> Inflate {
        Inflate::Reason(r)
    }
}

fn decode(
    frame: &Bytes,
    batch: &mut Batch,
    opts: &Options,
    skipped: &mut Skipped,
    out: &mut Outcome,
    room: &mut dyn FnMut(usize) -> bool,
) -> Result<(), Inflate> {
    use Reason::*;
    let mut c = Cursor::new(frame);
    let (h, _) = c.read().map_err(|_| InvalidRequest)?;
    if h.kind != Kind::Array || !(2..=4).contains(&h.children) {
        return Err(InvalidRequest.into());
    }
    if c.peek().map_err(|_| InvalidRequest)?.kind != Kind::Str {
        return Err(InvalidTag.into());
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
    let mut ranges = [0..0, 0..0];
    for r in ranges.iter_mut().take(body_items as usize) {
        *r = c.skip().map_err(|_| InvalidRequest)?;
    }
    let opt = match h.children - 1 - body_items {
        0 => Opt::default(),
        1 => options(&mut c, frame)?,
        _ => return Err(InvalidRequest.into()),
    };
    out.len = c.pos();
    out.chunk = opt.chunk;
    if opt.signal != 0 {
        return Err(UnsupportedSignal.into());
    }

    let tag = batch.tag_index(tag, || match &opts.tag_prefix {
        None => frame.slice(tag_range),
        Some(p) => Bytes::from([p.as_ref(), b".", tag].concat()),
    });
    let mut body = body;
    match second {
        Kind::Array => {
            let (h, _) = body.read().map_err(|_| InvalidRequest)?;
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
            let codec = match opt.codec {
                Some(c) => Some(c),
                None if payload.starts_with(&GZIP_MAGIC) => Some(Codec::Gzip),
                None if payload.starts_with(&ZSTD_MAGIC) => Some(Codec::Zstd),
                None => None,
            };
            let stream = match codec {
                Some(codec) => {
                    let data = decompress(codec, &payload, opts.max_decompressed_bytes, room)?;
                    batch.size += data.len();
                    data
                }
                None => payload,
            };
            packed(&stream, tag, batch, opts, skipped, out)?;
        }
        _ => {
            // Both were walked once already, to reach the options: reuse their ranges.
            let [t, r] = ranges;
            let time = time(&mut Cursor::new(&frame[t]))?;
            if crate::msgpack::head(&frame[r.clone()])
                .ok()
                .flatten()
                .map(|h| h.kind)
                != Some(Kind::Map)
            {
                return Err(InvalidRecord.into());
            }
            if r.len() > opts.max_record_bytes {
                return Err(RecordTooLarge.into());
            }
            let record = frame.slice(r);
            if let Some(time) = time {
                batch.events.push(Event::new(time, tag, record));
                out.events += 1;
            }
        }
    }
    Ok(())
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Gzip,
    Zstd,
}

/// The range `part` occupies inside `whole`; `part` must be a subslice of it.
fn offset(whole: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

#[derive(Default)]
struct Opt {
    chunk: Option<Bytes>,
    codec: Option<Codec>,
    signal: i64,
}

fn options(c: &mut Cursor<'_>, frame: &Bytes) -> Result<Opt, Reason> {
    use Reason::*;
    let mut opt = Opt::default();
    let (h, _) = c.read().map_err(|_| InvalidOption)?;
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
                    Some(b"gzip") => opt.codec = Some(Codec::Gzip),
                    Some(b"zstd") => opt.codec = Some(Codec::Zstd),
                    Some(b"text") | None => {}
                    Some(_) => return Err(UnsupportedCompression),
                }
            }
            Some(b"fluent_signal") => {
                if let Ok((h, _)) = Cursor::new(c.slice(value)).read()
                    && let Kind::Int(n) = h.kind
                {
                    opt.signal = n;
                }
            }
            // `size` is only a hint, and unknown keys are ignored, as the spec asks.
            _ => {}
        }
    }
    Ok(opt)
}

/// The first step of output, taken from the budget before it is allocated; later steps double
/// what is there, so inflating costs a few reallocations, and a budget nearly full still lets
/// small payloads through.
const INFLATE_STEP: usize = 64 << 10;

/// Decompresses every gzip member or zstd frame of `data`, refusing to produce more than
/// `limit` bytes: a bomb costs at most `limit` of memory and the time to inflate it. Each
/// step of output is asked of `room` before it is allocated.
fn decompress(
    codec: Codec,
    data: &[u8],
    limit: usize,
    room: &mut dyn FnMut(usize) -> bool,
) -> Result<Bytes, Inflate> {
    let mut reader: Box<dyn Read> = match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        Codec::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(data).map_err(|_| Reason::BadCompression)?,
        ),
    };
    let mut out = Vec::new();
    loop {
        // One byte past the limit tells a payload of exactly `limit` from a bigger one.
        let step = INFLATE_STEP.max(out.len()).min(limit + 1 - out.len());
        if !room(step) {
            return Err(Inflate::NoRoom);
        }
        out.reserve_exact(step);
        let n = (&mut reader)
            .take(step as u64)
            .read_to_end(&mut out)
            .map_err(|_| Reason::BadCompression)?;
        if out.len() > limit {
            return Err(Reason::DecompressedTooLarge.into());
        }
        if n < step {
            break;
        }
    }
    // The queues account `len`; spare capacity would be memory they do not see.
    if out.capacity() - out.len() > out.len() / 8 {
        out.shrink_to_fit();
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
    let decoded = match c.read() {
        Ok((h, _)) if h.kind == Kind::Array && h.children == 2 => {
            time(&mut c).and_then(|t| Ok((t, record(&mut c, entry, opts)?)))
        }
        _ => Err(Reason::InvalidEntry),
    };
    match decoded {
        Ok((Some(time), record)) => {
            batch.events.push(Event::new(time, tag, record));
            out.events += 1;
        }
        // A Fluent Bit group marker: framing, not a log event.
        Ok((None, _)) => {}
        Err(reason) => skipped.add(reason, 1),
    }
}

/// Reads an entry's time. `None` means a Fluent Bit group marker.
fn time(c: &mut Cursor<'_>) -> Result<Option<Timestamp>, Reason> {
    let (h, payload) = c.read().map_err(|_| Reason::InvalidTime)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            tag_prefix: None,
            max_record_bytes: 1 << 20,
            max_decompressed_bytes: 1 << 20,
            max_depth: 16,
        }
    }

    /// Decodes `frame`; returns the batch, the outcome and the skip counts.
    fn run(frame: &[u8], opts: &Options) -> (Batch, Outcome, Skipped) {
        let mut batch = Batch::default();
        let mut skipped = Skipped::default();
        let out = request(
            &Bytes::copy_from_slice(frame),
            &mut batch,
            opts,
            &mut skipped,
        );
        (batch, out, skipped)
    }

    fn reasons(s: &Skipped) -> Vec<(&'static str, u64)> {
        s.iter().map(|(r, n)| (r.as_str(), n)).collect()
    }

    // {"message": "bar"}
    const REC: &[u8] = &[
        0x81, 0xa7, b'm', b'e', b's', b's', b'a', b'g', b'e', 0xa3, b'b', b'a', b'r',
    ];
    // "app.log"
    const TAG: &[u8] = &[0xa7, b'a', b'p', b'p', b'.', b'l', b'o', b'g'];

    fn msg(time: &[u8], tail: &[u8]) -> Vec<u8> {
        let n = if tail.is_empty() { 0x93 } else { 0x94 };
        [&[n][..], TAG, time, REC, tail].concat()
    }

    #[test]
    fn message_mode_integer_time() {
        // ["app.log", 1441588984, {"message": "bar"}] from the spec examples.
        let (b, out, s) = run(&msg(&[0xce, 0x55, 0xec, 0xe6, 0xf8], &[]), &opts());
        assert!(out.complete && out.chunk.is_none() && s.total() == 0);
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.tag(&b.events[0]), b"app.log");
        assert_eq!(
            b.events[0].time,
            Timestamp {
                secs: 1441588984,
                nanos: 0
            }
        );
        assert_eq!(&b.events[0].record[..], REC);
    }

    #[test]
    fn message_mode_event_time_both_encodings() {
        let fixext = [0xd7, 0x00, 0x55, 0xec, 0xe6, 0xf8, 0x07, 0x5b, 0xcd, 0x15];
        let ext8 = [
            0xc7, 0x08, 0x00, 0x55, 0xec, 0xe6, 0xf8, 0x07, 0x5b, 0xcd, 0x15,
        ];
        for time in [&fixext[..], &ext8[..]] {
            let (b, _, _) = run(&msg(time, &[]), &opts());
            assert_eq!(
                b.events[0].time,
                Timestamp {
                    secs: 1441588984,
                    nanos: 123456789
                }
            );
        }
    }

    #[test]
    fn message_mode_as_docker_sends_it() {
        // Go's msgp writes the epoch as int32 (d2) and always adds an option map.
        let (b, out, _) = run(&msg(&[0xd2, 0x55, 0xec, 0xe6, 0xf8], &[0x80]), &opts());
        assert!(out.complete);
        assert_eq!(b.events[0].time.secs, 1441588984);
        // Old Docker versions sent nil for the options.
        let (b, out, _) = run(&msg(&[0xd2, 0x55, 0xec, 0xe6, 0xf8], &[0xc0]), &opts());
        assert!(out.complete && b.events.len() == 1);
    }

    #[test]
    fn float_time_from_python_fluent_logger() {
        // 1441588984.5 as float64
        let f = 1441588984.5f64.to_bits().to_be_bytes();
        let (b, _, _) = run(&msg(&[&[0xcb][..], &f].concat(), &[]), &opts());
        assert_eq!(
            b.events[0].time,
            Timestamp {
                secs: 1441588984,
                nanos: 500_000_000
            }
        );
    }

    #[test]
    fn zero_time_means_now() {
        let (b, _, _) = run(&msg(&[0x00], &[]), &opts());
        assert!(b.events[0].time.secs > 1_700_000_000);
    }

    #[test]
    fn chunk_is_echoed_byte_for_byte() {
        // Fluentd's chunk ids end in "\n"; keep it, and keep the msgpack type.
        let chunk = [0xa5, b'a', b'b', b'c', b'=', b'\n'];
        let opt = [&[0x81, 0xa5, b'c', b'h', b'u', b'n', b'k'][..], &chunk].concat();
        let (_, out, _) = run(&msg(&[0x01], &opt), &opts());
        assert_eq!(out.chunk.as_deref(), Some(&chunk[..]));
    }

    #[test]
    fn forward_mode() {
        // ["app", [[1441588984, {"a":1}], [1441588985, {"a":2}]]]
        let frame = [
            0x92, 0xa3, 0x61, 0x70, 0x70, 0x92, 0x92, 0xce, 0x55, 0xec, 0xe6, 0xf8, 0x81, 0xa1,
            0x61, 0x01, 0x92, 0xce, 0x55, 0xec, 0xe6, 0xf9, 0x81, 0xa1, 0x61, 0x02,
        ];
        let (b, out, _) = run(&frame, &opts());
        assert!(out.complete);
        assert_eq!(b.events.len(), 2);
        assert_eq!(&b.events[1].record[..], &[0x81, 0xa1, 0x61, 0x02]);
        assert_eq!(b.tags.len(), 1, "one tag shared by both events");
    }

    const ENTRIES: [u8; 20] = [
        0x92, 0xce, 0x55, 0xec, 0xe6, 0xf8, 0x81, 0xa1, 0x61, 0x01, 0x92, 0xce, 0x55, 0xec, 0xe6,
        0xf9, 0x81, 0xa1, 0x61, 0x02,
    ];

    #[test]
    fn packed_forward_bin_and_str() {
        // bin, with {"size": 2}
        let bin = [
            &[0x93, 0xa3, 0x61, 0x70, 0x70, 0xc4, 0x14][..],
            &ENTRIES,
            &[0x81, 0xa4, b's', b'i', b'z', b'e', 0x02],
        ]
        .concat();
        // Fluentd's str32 form, with no options
        let str32 = [
            &[0x92, 0xa3, 0x61, 0x70, 0x70, 0xdb, 0, 0, 0, 0x14][..],
            &ENTRIES,
        ]
        .concat();
        for frame in [bin, str32] {
            let (b, out, _) = run(&frame, &opts());
            assert!(out.complete);
            assert_eq!(b.events.len(), 2);
            assert_eq!(b.events[1].time.secs, 1441588985);
        }
    }

    fn compressed(payload: &[u8], codec: &str) -> Vec<u8> {
        let mut f = vec![0x93, 0xa3, 0x61, 0x70, 0x70];
        rmp::encode::write_bin(&mut f, payload).unwrap();
        f.extend_from_slice(&[0x81, 0xaa]);
        f.extend_from_slice(b"compressed");
        rmp::encode::write_str(&mut f, codec).unwrap();
        f
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn compressed_packed_forward_with_several_gzip_members() {
        let payload = [gzip(&ENTRIES[..10]), gzip(&ENTRIES[10..])].concat();
        let (b, out, _) = run(&compressed(&payload, "gzip"), &opts());
        assert!(out.complete);
        assert_eq!(b.events.len(), 2);
        assert!(b.size >= ENTRIES.len(), "decompressed bytes are accounted");
    }

    #[test]
    fn bad_compression_is_rejected_whole() {
        let (b, out, s) = run(&compressed(&ENTRIES, "gzip"), &opts());
        assert!(!out.complete && b.events.is_empty());
        assert_eq!(reasons(&s), [("bad_compression", 1)]);
        let (_, _, s) = run(&compressed(&ENTRIES, "zstd"), &opts());
        assert_eq!(reasons(&s), [("bad_compression", 1)]);
        let (_, _, s) = run(&compressed(&ENTRIES, "lz4"), &opts());
        assert_eq!(reasons(&s), [("unsupported_compression", 1)]);
    }

    #[test]
    fn zstd_frames_as_fluentd_sends_them() {
        let payload = [
            zstd::encode_all(&ENTRIES[..10], 3).unwrap(),
            zstd::encode_all(&ENTRIES[10..], 3).unwrap(),
        ]
        .concat();
        let (b, out, s) = run(&compressed(&payload, "zstd"), &opts());
        assert!(out.complete, "{:?}", reasons(&s));
        assert_eq!(b.events.len(), 2);
        let zeros = zstd::encode_all(&vec![0u8; 8 << 20][..], 3).unwrap();
        let (_, _, s) = run(&compressed(&zeros, "zstd"), &opts());
        assert_eq!(reasons(&s), [("decompressed_too_large", 1)]);
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 64 << 10);
        let (b, out, s) = run(&compressed(&bomb, "gzip"), &opts());
        assert!(!out.complete && b.events.is_empty());
        assert_eq!(reasons(&s), [("decompressed_too_large", 1)]);
    }

    #[test]
    fn fluent_bit_v2_entries_and_group_markers() {
        // [[EventTime(1441588984,0), {}], {"log": "hi"}], then a group-start marker entry.
        let v2 = [
            0x92, 0x92, 0xd7, 0x00, 0x55, 0xec, 0xe6, 0xf8, 0, 0, 0, 0, 0x80, 0x81, 0xa3, b'l',
            b'o', b'g', 0xa2, b'h', b'i',
        ];
        let marker = [
            0x92, 0x92, 0xd7, 0x00, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0x80,
        ];
        let frame = [&[0x92, 0xa3, 0x61, 0x70, 0x70, 0x92][..], &marker, &v2].concat();
        let (b, out, s) = run(&frame, &opts());
        assert!(out.complete && s.total() == 0);
        assert_eq!(b.events.len(), 1, "the marker is not an event");
        assert_eq!(b.events[0].time.secs, 1441588984);
    }

    #[test]
    fn unknown_options_ignored_and_signal_rejected() {
        let opt = [
            &[0x82, 0xa3, b'f', b'o', b'o', 0x01, 0xad][..],
            b"fluent_signal",
            &[0x00],
        ]
        .concat();
        let (b, out, _) = run(&msg(&[0x01], &opt), &opts());
        assert!(out.complete && b.events.len() == 1);
        let opt = [&[0x81, 0xad][..], b"fluent_signal", &[0x02]].concat();
        let (b, out, s) = run(&msg(&[0x01], &opt), &opts());
        assert!(!out.complete && b.events.is_empty());
        assert_eq!(reasons(&s), [("unsupported_signal", 1)]);
    }

    #[test]
    fn requests_back_to_back_are_each_decoded_past_heartbeats_and_refused_ones() {
        // What a disk-buffer record holds: a connection's read of several requests.
        let signal = [&[0x81, 0xad][..], b"fluent_signal", &[0x02]].concat();
        let body = [
            msg(&[0x01], &[]),
            vec![0xc0],
            // Refused once its options were read: its end is known.
            msg(&[0x02], &signal),
            // Refused at its tag, before its end was found: scanned past.
            vec![0x93, 0x01, 0x01, 0x80],
            msg(&[0x03], &[0x80]),
        ]
        .concat();
        let mut batch = Batch::default();
        let mut skipped = Skipped::default();
        requests(&Bytes::from(body), &mut batch, &opts(), &mut skipped);
        let secs: Vec<i64> = batch.events.iter().map(|e| e.time.secs).collect();
        assert_eq!(secs, [1, 3]);
        assert_eq!(
            reasons(&skipped),
            [("invalid_tag", 1), ("unsupported_signal", 1)]
        );
        // Damage that is no request at all ends the decoding, keeping what came before.
        let body = [msg(&[0x01], &[]), vec![0x93, 0x01]].concat();
        let mut batch = Batch::default();
        let mut skipped = Skipped::default();
        requests(&Bytes::from(body), &mut batch, &opts(), &mut skipped);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(
            reasons(&skipped),
            [("invalid_request", 1), ("invalid_tag", 1)]
        );
    }

    #[test]
    fn wrong_types_are_skipped_with_reasons() {
        // tag not a string
        let (_, out, s) = run(&[0x93, 0x01, 0x01, 0x80], &opts());
        assert!(!out.complete);
        assert_eq!(reasons(&s), [("invalid_tag", 1)]);
        // record not a map
        let (_, _, s) = run(
            &[&[0x93][..], TAG, &[0x01, 0x92, 0x01, 0x02]].concat(),
            &opts(),
        );
        assert_eq!(reasons(&s), [("invalid_record", 1)]);
        // time a string in Forward mode entries
        let bad_entry = [0x92, 0xa1, b'x', 0x80];
        let good_entry = [0x92, 0x01, 0x80];
        let frame = [&[0x92][..], TAG, &[0x92], &bad_entry, &good_entry].concat();
        let (b, out, s) = run(&frame, &opts());
        assert_eq!(b.events.len(), 1, "the good entry is kept");
        assert!(!out.complete, "but the request is not acknowledged");
        assert_eq!(reasons(&s), [("invalid_time", 1)]);
        // not an array of 2..4
        let (_, _, s) = run(&[0x91, 0xa1, b'x'], &opts());
        assert_eq!(reasons(&s), [("invalid_request", 1)]);
        // negative and out-of-range EventTime nanos
        let (_, _, s) = run(&msg(&[0xff], &[]), &opts());
        assert_eq!(reasons(&s), [("invalid_time", 1)]);
        let (_, _, s) = run(
            &msg(&[0xd7, 0x00, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff], &[]),
            &opts(),
        );
        assert_eq!(reasons(&s), [("invalid_time", 1)]);
    }

    #[test]
    fn record_over_the_limit_is_skipped() {
        let o = Options {
            max_record_bytes: 8,
            ..opts()
        };
        let (b, out, s) = run(&msg(&[0x01], &[]), &o);
        assert!(b.events.is_empty() && !out.complete);
        assert_eq!(reasons(&s), [("record_too_large", 1)]);
    }

    #[test]
    fn packed_payload_with_garbage_tail() {
        let payload = [&ENTRIES[..], &[0x92, 0x01]].concat();
        let mut f = vec![0x92, 0xa3, 0x61, 0x70, 0x70];
        rmp::encode::write_bin(&mut f, &payload).unwrap();
        let (b, out, s) = run(&f, &opts());
        assert_eq!(b.events.len(), 2);
        assert!(!out.complete);
        assert_eq!(reasons(&s), [("invalid_entry", 1)]);
    }

    #[test]
    fn tag_prefix_is_dot_joined() {
        let o = Options {
            tag_prefix: Some(Bytes::from_static(b"docker")),
            ..opts()
        };
        let (b, _, _) = run(&msg(&[0x01], &[]), &o);
        assert_eq!(b.tag(&b.events[0]), b"docker.app.log");
    }

    #[test]
    fn invalid_utf8_values_pass_through_as_bytes() {
        let rec = [0x81, 0xa3, b'l', b'o', b'g', 0xa2, 0xff, 0xfe];
        let (b, out, _) = run(&[&[0x93][..], TAG, &[0x01], &rec].concat(), &opts());
        assert!(out.complete);
        assert_eq!(&b.events[0].record[..], &rec);
    }
}

/// Mutated and random input through the whole receive path: scanner, decoder and the JSON
/// encoder a sink would run. Nothing may panic, whatever the bytes. (A coverage-guided fuzz
/// target goes further; this keeps a fast deterministic check in every test run.)
#[cfg(test)]
mod robustness {
    use super::*;
    use crate::msgpack::Scanner;
    use rand::{RngExt, SeedableRng};

    fn seeds() -> Vec<Vec<u8>> {
        let rec = [
            0x82, 0xa3, b'l', b'o', b'g', 0xa2, b'h', b'i', 0xa1, b'n', 0x92, 0x01, 0xc4, 0x01,
            0xff,
        ];
        let entry = [
            &[0x92, 0xd7, 0x00, 0x55, 0xec, 0xe6, 0xf8, 0, 0, 0, 1][..],
            &rec,
        ]
        .concat();
        let mut packed = vec![0x93, 0xa1, b't'];
        rmp::encode::write_bin(&mut packed, &[entry.clone(), entry.clone()].concat()).unwrap();
        packed.push(0x80);
        vec![
            [
                &[0x94, 0xa1, b't', 0x01][..],
                &rec,
                &[0x81, 0xa5],
                b"chunk",
                &[0xa1, b'c'],
            ]
            .concat(),
            [&[0x92, 0xa1, b't', 0x92][..], &entry, &entry].concat(),
            packed,
        ]
    }

    #[test]
    fn random_mutations_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let opts = Options {
            tag_prefix: None,
            max_record_bytes: 1 << 16,
            max_decompressed_bytes: 1 << 16,
            max_depth: 16,
        };
        let seeds = seeds();
        for i in 0..20_000 {
            let mut input = seeds[i % seeds.len()].clone();
            for _ in 0..rng.random_range(1..4) {
                match rng.random_range(0..3) {
                    0 if !input.is_empty() => {
                        let at = rng.random_range(0..input.len());
                        input[at] = rng.random();
                    }
                    1 if !input.is_empty() => input.truncate(rng.random_range(0..input.len())),
                    _ => input.push(rng.random()),
                }
            }
            let input = Bytes::from(input);
            let mut scanner = Scanner::default();
            let mut pos = 0;
            while let Ok(Some(n)) = scanner.scan(&input[pos..], 1 << 16, 16) {
                let frame = input.slice(pos..pos + n);
                pos += n;
                let mut batch = Batch::default();
                let mut skipped = Skipped::default();
                request(&frame, &mut batch, &opts, &mut skipped);
                let mut out = Vec::new();
                let mut times = crate::sink::jsonl::TimeCache::default();
                let shape = crate::sink::jsonl::Shape::default();
                for e in &batch.events {
                    let _ = crate::sink::jsonl::event(&mut out, &mut times, &batch, e, &shape);
                }
            }
        }
    }
}
