//! Split long lines, joined again, whatever the source marks them with.
//!
//! Runtimes cut long lines into pieces. Docker's log copier cuts lines longer than 16 KiB
//! into fragments marked `partial_message`, sharing a `partial_id`, numbered by
//! `partial_ordinal` from 1, the last one `partial_last`; the CRI log format (Kubernetes node
//! files) flags each piece `P` and the last one `F`, with no id or number. A source maps its
//! marks onto one [`Split`], and the joining here knows nothing of either. Pieces of one line
//! arrive in order, but pieces of other lines (stdout and stderr, other containers) may
//! interleave, so several lines can be pending at once.
//!
//! Every pending line is bounded: by bytes (`max_bytes`; beyond it, what was collected goes on
//! marked incomplete and collection starts again), by age (`timeout`; a container that exits
//! in the middle of a line never sends the last fragment), and in number per connection.
//! Nothing is dropped: whatever cannot be completed is emitted, marked, and counted.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::Event;

/// Bounds on reassembly.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// Lines pending at once on one connection; the oldest is flushed to make room.
    pub max_pending: usize,
}

/// Where one piece belongs.
#[derive(Debug, Clone)]
pub struct Split {
    /// Pieces of one line share it: Docker's `partial_id`; for CRI, the file and stream.
    pub id: Bytes,
    /// The piece's position from 1, checked for gaps; 0 when the source does not number its
    /// pieces (CRI).
    pub ordinal: u32,
    /// The line's last piece.
    pub last: bool,
}

/// A line ready to go on.
#[derive(Debug)]
pub struct Done {
    pub tag: Bytes,
    /// The first piece's event as it arrived, for its time and what it carries besides its
    /// piece of the line (a record's other fields). Its `tag` index is of the batch it came
    /// in; `tag` is the tag.
    pub first: Event,
    /// The pieces, joined.
    pub line: Vec<u8>,
    /// `None` when complete; else why it was emitted early.
    pub cut: Option<Cut>,
    /// When its first piece arrived: what the line holds has been held since.
    pub since: Instant,
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
    /// The first piece's event, for its time and other fields.
    first: Event,
    line: Vec<u8>,
    next_ordinal: u32,
    since: Instant,
}

/// Pending lines of one stream of input (a connection, a file).
#[derive(Debug)]
pub struct Reassembler {
    limits: Limits,
    pending: Vec<Pending>,
}

impl Reassembler {
    pub fn new(limits: Limits) -> Reassembler {
        Reassembler {
            limits,
            pending: Vec::new(),
        }
    }

    /// Bytes held in pending lines (for accounting).
    pub fn held_bytes(&self) -> usize {
        self.pending
            .iter()
            .map(|p| p.line.len() + p.first.record.len())
            .sum()
    }

    /// When the oldest pending line began.
    pub fn oldest(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.since).min()
    }

    /// When the oldest pending line times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|p| p.since + self.limits.timeout)
            .min()
    }

    /// Whether a line with this id is being joined: a source whose last piece looks like
    /// any whole line (CRI's `F`) asks before it hands one over.
    pub fn is_pending(&self, id: &[u8]) -> bool {
        self.pending.iter().any(|p| p.id == id)
    }

    /// Takes `piece`, one piece of a line, which arrived in `event` (kept if it is the first
    /// piece); completed or cut lines go to `out`.
    pub fn push(
        &mut self,
        tag: &Bytes,
        event: &Event,
        piece: &[u8],
        split: Split,
        out: &mut Vec<Done>,
    ) {
        let at = self.pending.iter().position(|p| p.id == split.id);
        let at = match at {
            Some(i) if self.pending[i].next_ordinal == split.ordinal || split.ordinal == 0 => i,
            Some(i) => {
                let p = self.pending.swap_remove(i);
                out.push(finish(p, Some(Cut::Gap)));
                self.start(tag, event, split.id, out)
            }
            None => self.start(tag, event, split.id, out),
        };
        let p = &mut self.pending[at];
        if p.line.len() + piece.len() > self.limits.max_bytes && !p.line.is_empty() {
            out.push(Done {
                tag: p.tag.clone(),
                first: p.first.clone(),
                line: std::mem::take(&mut p.line),
                cut: Some(Cut::Overflow),
                since: p.since,
            });
        }
        p.line.extend_from_slice(piece);
        p.next_ordinal = split.ordinal.max(p.next_ordinal) + 1;
        if split.last {
            let p = self.pending.swap_remove(at);
            out.push(finish(p, None));
        }
    }

    fn start(&mut self, tag: &Bytes, event: &Event, id: Bytes, out: &mut Vec<Done>) -> usize {
        if self.pending.len() >= self.limits.max_pending {
            let oldest = (0..self.pending.len())
                .min_by_key(|i| self.pending[*i].since)
                .expect("not empty");
            let p = self.pending.swap_remove(oldest);
            out.push(finish(p, Some(Cut::Overflow)));
        }
        self.pending.push(Pending {
            id,
            tag: tag.clone(),
            first: event.clone(),
            line: Vec::new(),
            next_ordinal: 1,
            since: Instant::now(),
        });
        self.pending.len() - 1
    }

    /// Emits lines older than the timeout.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Done>) {
        let timeout = self.limits.timeout;
        let mut i = 0;
        while i < self.pending.len() {
            if now >= self.pending[i].since + timeout {
                let p = self.pending.swap_remove(i);
                out.push(finish(p, Some(Cut::Timeout)));
            } else {
                i += 1;
            }
        }
    }

    /// Emits everything pending as overflowed: the memory to hold it is not there.
    pub fn shed(&mut self, out: &mut Vec<Done>) {
        for p in std::mem::take(&mut self.pending) {
            out.push(finish(p, Some(Cut::Overflow)));
        }
    }

    /// Emits everything pending (end of connection, drain).
    pub fn flush(&mut self, out: &mut Vec<Done>) {
        for p in std::mem::take(&mut self.pending) {
            out.push(finish(p, Some(Cut::Flush)));
        }
    }
}

fn finish(p: Pending, cut: Option<Cut>) -> Done {
    Done {
        tag: p.tag,
        first: p.first,
        line: p.line,
        cut,
        since: p.since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;

    fn limits() -> Limits {
        Limits {
            max_bytes: 100,
            timeout: Duration::from_secs(5),
            max_pending: 4,
        }
    }

    fn line(d: &Done) -> Vec<u8> {
        d.line.clone()
    }

    fn push(
        r: &mut Reassembler,
        id: &str,
        ordinal: u32,
        last: bool,
        log: &str,
        out: &mut Vec<Done>,
    ) {
        // The event a piece arrived in: the joined line keeps the first one's.
        let time = Timestamp {
            secs: ordinal as i64,
            nanos: 0,
        };
        let event = Event::new(time, 0, Bytes::from(format!("{id}#{ordinal}")));
        let split = Split {
            id: Bytes::copy_from_slice(id.as_bytes()),
            ordinal,
            last,
        };
        r.push(
            &Bytes::from_static(b"t"),
            &event,
            log.as_bytes(),
            split,
            out,
        );
    }

    #[test]
    fn joins_fragments_in_order_with_interleaving() {
        let mut r = Reassembler::new(limits());
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
        assert_eq!(out[1].first.time.secs, 1, "the first piece's time");
        assert_eq!(
            &out[1].first.record[..],
            b"a#1",
            "and the first piece's event"
        );
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn overflow_emits_what_was_collected_and_loses_nothing() {
        let mut r = Reassembler::new(limits());
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
        let mut r = Reassembler::new(limits());
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
    fn unnumbered_pieces_join_until_the_last() {
        // CRI's `P`/`F`: no ordinal, the stream is the id; stdout and stderr interleave.
        let mut r = Reassembler::new(limits());
        let mut out = Vec::new();
        push(&mut r, "stdout", 0, false, "a", &mut out);
        push(&mut r, "stderr", 0, false, "x", &mut out);
        push(&mut r, "stdout", 0, false, "b", &mut out);
        push(&mut r, "stderr", 0, true, "y", &mut out);
        push(&mut r, "stdout", 0, true, "c", &mut out);
        let lines: Vec<_> = out.iter().map(line).collect();
        assert_eq!(lines, [b"xy".to_vec(), b"abc".to_vec()]);
        assert!(out.iter().all(|d| d.cut.is_none()));
    }

    #[test]
    fn too_many_pending_lines_flush_the_oldest() {
        let mut r = Reassembler::new(limits());
        let mut out = Vec::new();
        for id in ["a", "b", "c", "d", "e"] {
            push(&mut r, id, 1, false, id, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(line(&out[0]), b"a");
    }
}
