//! Docker's split long lines, joined again.
//!
//! Docker's log copier cuts lines longer than 16 KiB into fragments marked `partial_message`,
//! sharing a `partial_id`, numbered by `partial_ordinal` from 1, the last one `partial_last`.
//! Fragments of one container arrive in order on its connection, but stdout and stderr
//! fragments may interleave, so several lines can be pending at once.
//!
//! Every pending line is bounded: by bytes (`max_bytes`; beyond it, what was collected goes on
//! marked incomplete and collection starts again), by age (`timeout`; a container that exits
//! in the middle of a line never sends the last fragment), and in number per connection.
//! Nothing is dropped: whatever cannot be completed is emitted, marked, and counted.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::record::{self, Fields};
use crate::event::Timestamp;

/// Bounds on reassembly.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// Lines pending at once on one connection; the oldest is flushed to make room.
    pub max_pending: usize,
}

/// A line ready to go on.
#[derive(Debug)]
pub struct Done {
    pub tag: Bytes,
    pub time: Timestamp,
    /// A new record: the first fragment's fields with the joined line.
    pub record: Bytes,
    /// `None` when complete; else why it was emitted early.
    pub cut: Option<Cut>,
}

/// Why a line was emitted before its last fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Timeout,
    Overflow,
    /// A fragment arrived out of order (a lost fragment, or a restarted container).
    Gap,
    /// The connection ended or Outrigger is draining.
    Flush,
}

impl Cut {
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::Timeout => "timeout",
            Cut::Overflow => "overflow",
            Cut::Gap => "gap",
            Cut::Flush => "flush",
        }
    }
}

#[derive(Debug)]
struct Pending {
    id: Bytes,
    tag: Bytes,
    time: Timestamp,
    /// The first fragment's record, for its other fields.
    first: Bytes,
    line: Vec<u8>,
    next_ordinal: u32,
    since: Instant,
}

/// Pending lines of one connection.
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    line_key: Bytes,
    pending: Vec<Pending>,
}

impl Reassembler {
    pub fn new(limits: Limits, line_key: Bytes) -> Reassembler {
        Reassembler {
            limits,
            line_key,
            pending: Vec::new(),
        }
    }

    /// Bytes held in pending lines (for accounting).
    pub fn held_bytes(&self) -> usize {
        self.pending
            .iter()
            .map(|p| p.line.len() + p.first.len())
            .sum()
    }

    /// When the oldest pending line times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|p| p.since + self.limits.timeout)
            .min()
    }

    /// Takes one fragment (`fields.partial` is set); completed or cut lines go to `out`.
    pub fn push(
        &mut self,
        tag: &Bytes,
        time: Timestamp,
        record: &Bytes,
        fields: &Fields,
        out: &mut Vec<Done>,
    ) {
        let Some(partial) = &fields.partial else {
            return;
        };
        let id = &record[partial.id.clone()];
        let piece = fields.line.clone().map(|r| &record[r]).unwrap_or_default();
        let at = self.pending.iter().position(|p| p.id.as_ref() == id);
        let at = match at {
            Some(i) if self.pending[i].next_ordinal == partial.ordinal || partial.ordinal == 0 => i,
            Some(i) => {
                let p = self.pending.swap_remove(i);
                out.push(self.finish(p, Some(Cut::Gap)));
                self.start(tag, time, record, partial.id.clone(), out)
            }
            None => self.start(tag, time, record, partial.id.clone(), out),
        };
        if self.pending[at].line.len() + piece.len() > self.limits.max_bytes
            && !self.pending[at].line.is_empty()
        {
            let p = &mut self.pending[at];
            let collected = std::mem::take(&mut p.line);
            let done = Done {
                tag: p.tag.clone(),
                time: p.time,
                record: Bytes::from(record::rewrite(&p.first, &self.line_key, &collected)),
                cut: Some(Cut::Overflow),
            };
            out.push(done);
        }
        let p = &mut self.pending[at];
        p.line.extend_from_slice(piece);
        p.next_ordinal = partial.ordinal.max(p.next_ordinal) + 1;
        if partial.last {
            let p = self.pending.swap_remove(at);
            out.push(self.finish(p, None));
        }
    }

    fn start(
        &mut self,
        tag: &Bytes,
        time: Timestamp,
        record: &Bytes,
        id: std::ops::Range<usize>,
        out: &mut Vec<Done>,
    ) -> usize {
        if self.pending.len() >= self.limits.max_pending {
            let oldest = (0..self.pending.len())
                .min_by_key(|i| self.pending[*i].since)
                .expect("not empty");
            let p = self.pending.swap_remove(oldest);
            out.push(self.finish(p, Some(Cut::Overflow)));
        }
        self.pending.push(Pending {
            id: record.slice(id),
            tag: tag.clone(),
            time,
            first: record.clone(),
            line: Vec::new(),
            next_ordinal: 1,
            since: Instant::now(),
        });
        self.pending.len() - 1
    }

    fn finish(&self, p: Pending, cut: Option<Cut>) -> Done {
        Done {
            tag: p.tag,
            time: p.time,
            record: Bytes::from(record::rewrite(&p.first, &self.line_key, &p.line)),
            cut,
        }
    }

    /// Emits lines older than the timeout.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Done>) {
        let timeout = self.limits.timeout;
        let mut i = 0;
        while i < self.pending.len() {
            if now >= self.pending[i].since + timeout {
                let p = self.pending.swap_remove(i);
                out.push(self.finish(p, Some(Cut::Timeout)));
            } else {
                i += 1;
            }
        }
    }

    /// Emits everything pending as overflowed: the memory to hold it is not there.
    pub fn shed(&mut self, out: &mut Vec<Done>) {
        for p in std::mem::take(&mut self.pending) {
            out.push(self.finish(p, Some(Cut::Overflow)));
        }
    }

    /// Emits everything pending (end of connection, drain).
    pub fn flush(&mut self, out: &mut Vec<Done>) {
        for p in std::mem::take(&mut self.pending) {
            out.push(self.finish(p, Some(Cut::Flush)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(id: &str, ordinal: u32, last: bool, log: &str) -> (Bytes, Fields) {
        let mut r = Vec::new();
        rmp::encode::write_map_len(&mut r, 6).unwrap();
        for (k, v) in [
            ("container_id", "c1"),
            ("log", log),
            ("partial_message", "true"),
            ("partial_id", id),
            ("partial_ordinal", &ordinal.to_string()),
            ("partial_last", if last { "true" } else { "false" }),
        ] {
            rmp::encode::write_str(&mut r, k).unwrap();
            rmp::encode::write_str(&mut r, v).unwrap();
        }
        let f = record::fields(&r, b"log");
        (Bytes::from(r), f)
    }

    fn limits() -> Limits {
        Limits {
            max_bytes: 100,
            timeout: Duration::from_secs(5),
            max_pending: 4,
        }
    }

    fn line(d: &Done) -> Vec<u8> {
        let f = record::fields(&d.record, b"log");
        assert!(f.partial.is_none(), "partial keys are removed");
        d.record[f.line.unwrap()].to_vec()
    }

    fn push(
        r: &mut Reassembler,
        id: &str,
        ordinal: u32,
        last: bool,
        log: &str,
        out: &mut Vec<Done>,
    ) {
        let (rec, f) = fragment(id, ordinal, last, log);
        r.push(
            &Bytes::from_static(b"t"),
            Timestamp {
                secs: ordinal as i64,
                nanos: 0,
            },
            &rec,
            &f,
            out,
        );
    }

    #[test]
    fn joins_fragments_in_order_with_interleaving() {
        let mut r = Reassembler::new(limits(), Bytes::from_static(b"log"));
        let mut out = Vec::new();
        push(&mut r, "a", 1, false, "he", &mut out);
        push(&mut r, "b", 1, false, "wo", &mut out);
        push(&mut r, "a", 2, false, "ll", &mut out);
        push(&mut r, "b", 2, true, "rld", &mut out);
        push(&mut r, "a", 3, true, "o", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(line(&out[0]), b"world");
        assert_eq!(line(&out[1]), b"hello");
        assert!(out.iter().all(|d| d.cut.is_none()));
        assert_eq!(out[1].time.secs, 1, "the first fragment's time");
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn overflow_emits_what_was_collected_and_loses_nothing() {
        let mut r = Reassembler::new(limits(), Bytes::from_static(b"log"));
        let mut out = Vec::new();
        let chunk = "x".repeat(60);
        push(&mut r, "a", 1, false, &chunk, &mut out);
        push(&mut r, "a", 2, false, &chunk, &mut out);
        push(&mut r, "a", 3, true, "end", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].cut, Some(Cut::Overflow));
        let total: usize = out.iter().map(|d| line(d).len()).sum();
        assert_eq!(total, 123);
    }

    #[test]
    fn timeout_gap_and_flush_mark_incomplete_lines() {
        let mut r = Reassembler::new(limits(), Bytes::from_static(b"log"));
        let mut out = Vec::new();
        push(&mut r, "a", 1, false, "one", &mut out);
        assert!(r.deadline().is_some());
        r.expire(Instant::now() + Duration::from_secs(6), &mut out);
        assert_eq!(out.pop().unwrap().cut, Some(Cut::Timeout));
        push(&mut r, "b", 1, false, "x", &mut out);
        push(&mut r, "b", 3, false, "z", &mut out);
        assert_eq!(out.pop().unwrap().cut, Some(Cut::Gap));
        r.flush(&mut out);
        let d = out.pop().unwrap();
        assert_eq!((d.cut, line(&d)), (Some(Cut::Flush), b"z".to_vec()));
        assert!(r.deadline().is_none());
    }

    #[test]
    fn too_many_pending_lines_flush_the_oldest() {
        let mut r = Reassembler::new(limits(), Bytes::from_static(b"log"));
        let mut out = Vec::new();
        for id in ["a", "b", "c", "d", "e"] {
            push(&mut r, id, 1, false, id, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(line(&out[0]), b"a");
    }
}
