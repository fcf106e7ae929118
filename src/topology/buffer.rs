//! `outrigger buffer dump`: the disk buffer's records as the events they hold. Here, not in
//! [`crate::buffer::disk`], because reading a record's events takes its source's decoder, and
//! the buffer knows no source.

use std::io::{self, Write};
use std::path::Path;

use bytes::Bytes;

use crate::buffer::disk::payload::{Kind, Payload};
use crate::buffer::disk::segment::{self, Reader, Step};
use crate::event::Batch;
use crate::sink::jsonl::{self, Shape, TimeCache};
use crate::source::forward::decode::{self, Options, Skipped};

/// What a dump went through.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dumped {
    pub records: u64,
    pub events: u64,
    /// Records whose payload this version cannot read, and entries their decoder skipped.
    pub unreadable: u64,
}

/// Writes every event of every record the log in `dir` keeps to `out`, one JSON object per
/// line as the `stdout` sink writes them (before enrichment: what the sources accepted).
/// Reads only; damage ends a segment's records as a start would end them.
///
/// # Errors
/// The log cannot be read, or `out` written.
pub fn dump(dir: &Path, out: &mut impl Write) -> io::Result<Dumped> {
    let mut done = Dumped::default();
    let (mut line, mut times, shape) = (Vec::new(), TimeCache::default(), Shape::default());
    for f in segment::inspect(dir)? {
        let mut reader = Reader::open(&f.path, Some(f.first_seq))?;
        while let Step::Record { seq, payload } = reader.step()? {
            if seq >= f.next_seq {
                break;
            }
            done.records += 1;
            let bytes = Bytes::copy_from_slice(payload);
            let Ok(p) = Payload::decode(&bytes) else {
                done.unreadable += 1;
                continue;
            };
            let mut batch = Batch {
                fields: p.fields.into(),
                received: p.received,
                ..Default::default()
            };
            let mut skipped = Skipped::default();
            match p.kind {
                Kind::Forward => {
                    decode::requests(&p.body, &mut batch, &Options::default(), &mut skipped)
                }
            }
            done.unreadable += skipped.total();
            for e in &batch.events {
                line.clear();
                if jsonl::event(&mut line, &mut times, &batch, e, &shape).is_ok() {
                    line.push(b'\n');
                    out.write_all(&line)?;
                    done.events += 1;
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::disk::log::{Log, Options as LogOptions};
    use crate::event::Timestamp;

    #[test]
    fn a_dump_prints_each_records_events_with_their_stream_fields() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
        };
        let (mut log, _) = Log::open(dir.path(), options).unwrap();
        // Two Message-mode requests in one read: ["app", 1700000000, {"log": "..."}].
        let mut body = Vec::new();
        for text in ["first", "second"] {
            rmp::encode::write_array_len(&mut body, 3).unwrap();
            rmp::encode::write_str(&mut body, "app").unwrap();
            rmp::encode::write_uint(&mut body, 1_700_000_000).unwrap();
            rmp::encode::write_map_len(&mut body, 1).unwrap();
            rmp::encode::write_str(&mut body, "log").unwrap();
            rmp::encode::write_str(&mut body, text).unwrap();
        }
        let payload = Payload {
            kind: Kind::Forward,
            stream: 1,
            received: Timestamp::default(),
            source: Bytes::from_static(b"in"),
            fields: vec![(Bytes::from_static(b"peer"), Bytes::from_static(b"10.0.0.9"))],
            body: Bytes::from(body),
        };
        let mut bytes = Vec::new();
        payload.encode(&mut bytes);
        log.append(&[&bytes, b"\x09not a payload"], true).unwrap();
        drop(log);
        let mut out = Vec::new();
        let done = dump(dir.path(), &mut out).unwrap();
        assert_eq!(
            done,
            Dumped {
                records: 2,
                events: 2,
                unreadable: 1
            }
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["tag"], "app");
        assert_eq!(lines[1]["record"]["log"], "second");
        assert_eq!(lines[0]["record"]["peer"], "10.0.0.9");
    }
}
