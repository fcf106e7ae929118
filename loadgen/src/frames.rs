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

use rmp::encode::{self as mp, ValueWriteError};

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

/// What the writers return: rmp's, which picks the smallest encoding of every length and
/// integer, as fluent-logger-golang's msgp and Fluent Bit do. Writing to a `Vec` cannot fail.
type Written = Result<(), ValueWriteError>;

/// Integer seconds the way Go's msgp `AppendInt64` writes a current epoch: `d2` int32.
fn int_time(out: &mut Vec<u8>, secs: u32) -> Written {
    mp::write_i32(out, secs as i32)
}

/// EventTime: fixext8 type 0, big-endian seconds and nanoseconds.
pub fn event_time(out: &mut Vec<u8>, secs: u32, nanos: u32) -> Written {
    mp::write_ext_meta(out, 8, 0)?;
    out.extend_from_slice(&secs.to_be_bytes());
    out.extend_from_slice(&nanos.to_be_bytes());
    Ok(())
}

fn record(out: &mut Vec<u8>, r: &Record) -> Written {
    mp::write_map_len(out, 4)?;
    for (key, value) in [
        ("container_id", &r.container_id),
        ("container_name", &r.container_name),
        ("source", &r.source),
        ("log", &r.log),
    ] {
        mp::write_str(out, key)?;
        mp::write_str(out, value)?;
    }
    Ok(())
}

/// Docker's default tag, `{{.ID}}`: the short container ID.
fn tag(out: &mut Vec<u8>, r: &Record) -> Written {
    let id = r.container_id.as_bytes();
    let tag = &id[..12.min(id.len())];
    mp::write_str_len(out, tag.len() as u32)?;
    out.extend_from_slice(tag);
    Ok(())
}

fn stamp(seq: u64) -> (u32, u32) {
    let ms = seq * 25;
    (EPOCH + (ms / 1000) as u32, (ms % 1000) as u32 * 1_000_000)
}

/// Appends one request carrying `records` (`seq` numbers the first, for its timestamp).
/// Message mode takes exactly one record.
pub fn encode(out: &mut Vec<u8>, mode: Mode, records: &[&Record], seq: u64) {
    request(out, mode, records, seq).expect("writing to a Vec");
}

fn request(out: &mut Vec<u8>, mode: Mode, records: &[&Record], seq: u64) -> Written {
    let first = records
        .first()
        .expect("a request carries at least one record");
    match mode {
        Mode::Message => {
            assert_eq!(records.len(), 1, "a Message-mode request has one record");
            mp::write_array_len(out, 4)?;
            tag(out, first)?;
            int_time(out, stamp(seq).0)?;
            record(out, first)?;
            mp::write_map_len(out, 0)?;
        }
        Mode::Forward => {
            mp::write_array_len(out, 3)?;
            tag(out, first)?;
            mp::write_array_len(out, records.len() as u32)?;
            for (i, r) in records.iter().enumerate() {
                let (s, n) = stamp(seq + i as u64);
                mp::write_array_len(out, 2)?;
                event_time(out, s, n)?;
                record(out, r)?;
            }
            mp::write_map_len(out, 0)?;
        }
        Mode::Packed | Mode::Compressed | Mode::Zstd => {
            let mut entries = Vec::with_capacity(records.len() * 450);
            for (i, r) in records.iter().enumerate() {
                let (s, n) = stamp(seq + i as u64);
                mp::write_array_len(&mut entries, 2)?;
                event_time(&mut entries, s, n)?;
                record(&mut entries, r)?;
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
            mp::write_array_len(out, 3)?;
            tag(out, first)?;
            mp::write_bin(out, &entries)?;
            let codec = match mode {
                Mode::Compressed => Some("gzip"),
                Mode::Zstd => Some("zstd"),
                _ => None,
            };
            mp::write_map_len(out, 1 + u32::from(codec.is_some()))?;
            mp::write_str(out, "size")?;
            mp::write_uint(out, records.len() as u64)?;
            if let Some(codec) = codec {
                mp::write_str(out, "compressed")?;
                mp::write_str(out, codec)?;
            }
        }
    }
    Ok(())
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
    /// Where request `i` begins in `bytes` (it ends at `ends[i]`).
    pub fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_mode_request_is_what_dockers_driver_writes() {
        let r = Record {
            container_id: "0123456789abcdef".into(),
            container_name: "/web".into(),
            source: "stdout".into(),
            log: "hi".into(),
        };
        let mut out = Vec::new();
        encode(&mut out, Mode::Message, &[&r], 0);
        // ["0123456789ab", 1700000000, {"container_id": "0123456789abcdef",
        //  "container_name": "/web", "source": "stdout", "log": "hi"}, {}]
        let want = [
            &[0x94, 0xac][..],
            b"0123456789ab",
            &[0xd2, 0x65, 0x53, 0xf1, 0x00, 0x84, 0xac],
            b"container_id",
            &[0xb0],
            b"0123456789abcdef",
            &[0xae],
            b"container_name",
            &[0xa4],
            b"/web",
            &[0xa6],
            b"source",
            &[0xa6],
            b"stdout",
            &[0xa3],
            b"log",
            &[0xa2],
            b"hi",
            &[0x80],
        ]
        .concat();
        assert_eq!(out, want);
    }
}
