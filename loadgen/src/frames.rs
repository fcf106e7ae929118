//! Corpus records as forward-protocol requests, in each of the four modes.
//!
//! - Message: `[tag, time, record, {}]`, exactly as Docker's fluentd driver writes it
//!   (fluent-logger-golang): tag = the 12-hex short container ID, time = integer seconds as
//!   msgp's smallest signed encoding (`d2` int32 for current epochs), options `{}`.
//! - Forward: `[tag, [[time, record], ...], {}]` with EventTime stamps.
//! - PackedForward: `[tag, bin(entries), {"size": n}]`, as Fluent Bit's out_forward sends it.
//! - CompressedPackedForward: the same with the entries gzipped and `"compressed": "gzip"`.
//! - The same with zstd and `"compressed": "zstd"`, as Fluentd's out_forward can send it.
//!
//! Also compiled into the root package's benches (by `#[path]`).

use std::io::Write as _;

use crate::corpus::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Message,
    Forward,
    Packed,
    Compressed,
    Zstd,
}

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::Message,
        Mode::Forward,
        Mode::Packed,
        Mode::Compressed,
        Mode::Zstd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Message => "message",
            Mode::Forward => "forward",
            Mode::Packed => "packed",
            Mode::Compressed => "compressed",
            Mode::Zstd => "zstd",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// Unix seconds of the first event; each event is 25 ms after the one before.
const EPOCH: u32 = 1_700_000_000;

fn array(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=15 => out.push(0x90 | n as u8),
        16..=0xffff => {
            out.push(0xdc);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdd);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn map(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=15 => out.push(0x80 | n as u8),
        16..=0xffff => {
            out.push(0xde);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdf);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn str(out: &mut Vec<u8>, s: &[u8]) {
    match s.len() {
        0..=31 => out.push(0xa0 | s.len() as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, s.len() as u8]),
        256..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(s);
}

fn bin(out: &mut Vec<u8>, b: &[u8]) {
    match b.len() {
        0..=0xff => out.extend_from_slice(&[0xc4, b.len() as u8]),
        256..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc6);
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(b);
}

fn uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        _ => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
    }
}

/// Integer seconds the way Go's msgp `AppendInt64` writes a current epoch: `d2` int32.
fn int_time(out: &mut Vec<u8>, secs: u32) {
    out.push(0xd2);
    out.extend_from_slice(&(secs as i32).to_be_bytes());
}

/// EventTime: fixext8 type 0, big-endian seconds and nanoseconds.
fn event_time(out: &mut Vec<u8>, secs: u32, nanos: u32) {
    out.extend_from_slice(&[0xd7, 0x00]);
    out.extend_from_slice(&secs.to_be_bytes());
    out.extend_from_slice(&nanos.to_be_bytes());
}

fn record(out: &mut Vec<u8>, r: &Record) {
    map(out, 4);
    str(out, b"container_id");
    str(out, r.container_id.as_bytes());
    str(out, b"container_name");
    str(out, r.container_name.as_bytes());
    str(out, b"source");
    str(out, r.source.as_bytes());
    str(out, b"log");
    str(out, r.log.as_bytes());
}

/// Docker's default tag, `{{.ID}}`: the short container ID.
fn tag(r: &Record) -> &[u8] {
    &r.container_id.as_bytes()[..12.min(r.container_id.len())]
}

fn stamp(seq: u64) -> (u32, u32) {
    let ms = seq * 25;
    (EPOCH + (ms / 1000) as u32, (ms % 1000) as u32 * 1_000_000)
}

/// Appends one request carrying `records` (`seq` numbers the first, for its timestamp).
/// Message mode takes exactly one record.
pub fn encode(out: &mut Vec<u8>, mode: Mode, records: &[&Record], seq: u64) {
    let first = records
        .first()
        .expect("a request carries at least one record");
    match mode {
        Mode::Message => {
            assert_eq!(records.len(), 1, "a Message-mode request has one record");
            array(out, 4);
            str(out, tag(first));
            int_time(out, stamp(seq).0);
            record(out, first);
            map(out, 0);
        }
        Mode::Forward => {
            array(out, 3);
            str(out, tag(first));
            array(out, records.len());
            for (i, r) in records.iter().enumerate() {
                let (s, n) = stamp(seq + i as u64);
                array(out, 2);
                event_time(out, s, n);
                record(out, r);
            }
            map(out, 0);
        }
        Mode::Packed | Mode::Compressed | Mode::Zstd => {
            let mut entries = Vec::with_capacity(records.len() * 450);
            for (i, r) in records.iter().enumerate() {
                let (s, n) = stamp(seq + i as u64);
                array(&mut entries, 2);
                event_time(&mut entries, s, n);
                record(&mut entries, r);
            }
            if mode == Mode::Zstd {
                entries = zstd::stream::encode_all(&entries[..], 3).expect("reading from a slice");
            }
            if mode == Mode::Compressed {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(entries.len() / 4),
                    flate2::Compression::default(),
                );
                gz.write_all(&entries).expect("writing to a Vec");
                entries = gz.finish().expect("writing to a Vec");
            }
            array(out, 3);
            str(out, tag(first));
            bin(out, &entries);
            let codec: Option<&[u8]> = match mode {
                Mode::Compressed => Some(b"gzip"),
                Mode::Zstd => Some(b"zstd"),
                _ => None,
            };
            map(out, 1 + usize::from(codec.is_some()));
            str(out, b"size");
            uint(out, records.len() as u64);
            if let Some(codec) = codec {
                str(out, b"compressed");
                str(out, codec);
            }
        }
    }
}

/// Requests that carry `per_frame` records each (1 in Message mode), cycling through the
/// corpus, concatenated; with the end offset of every request.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
    /// Events in each request.
    pub per_frame: usize,
}

impl Frames {
    /// `frames` requests of `per_frame` records starting at record `start` (wrapping).
    pub fn build(
        corpus: &[Record],
        mode: Mode,
        per_frame: usize,
        start: usize,
        frames: usize,
    ) -> Frames {
        let per_frame = if mode == Mode::Message {
            1
        } else {
            per_frame.max(1)
        };
        let mut f = Frames {
            per_frame,
            ..Default::default()
        };
        let mut next = start;
        let mut batch = Vec::with_capacity(per_frame);
        for _ in 0..frames {
            batch.clear();
            for _ in 0..per_frame {
                batch.push(&corpus[next % corpus.len()]);
                next += 1;
            }
            encode(&mut f.bytes, mode, &batch, (next - per_frame) as u64);
            f.ends.push(f.bytes.len());
        }
        f
    }

    /// Enough requests to carry every corpus record at least once.
    pub fn cycle(corpus: &[Record], mode: Mode, per_frame: usize) -> Frames {
        let per = if mode == Mode::Message {
            1
        } else {
            per_frame.max(1)
        };
        Frames::build(corpus, mode, per, 0, corpus.len().div_ceil(per))
    }

    pub fn events(&self) -> usize {
        self.ends.len() * self.per_frame
    }
}
