//! Reading the log in order from a place in it (a sink's cursor, or the lowest of them at a
//! start): across segments, only below the durable frontier, and on into the segment being
//! written as it grows.
//!
//! The frontier ([`super::commit::Counts::durable`]) matters: a record past it may be written
//! again under the same number after a failed sync, so reading it early could send what the
//! log later replaces. Segments are found by listing the directory when one ends, so a tail
//! needs nothing from the writer but the frontier; a segment trimmed while a tail reads it
//! stays readable through the open file.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::segment::{self, Reader, Step};

/// A reader of the log from a given record on.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    /// The next record to return.
    next: u64,
    /// The segment being read: its first number, where the next one begins (when one does),
    /// and its reader.
    current: Option<(u64, Option<u64>, Reader)>,
}

impl Tail {
    /// A tail of the log in `dir` that starts at record `from` (or at the oldest record kept,
    /// when `from` is older).
    pub fn new(dir: &Path, from: u64) -> Tail {
        Tail {
            dir: dir.to_path_buf(),
            next: from.max(1),
            current: None,
        }
    }

    /// The number of the record the next call returns, once there is one.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next record below `durable`, with its number; `None` when there is none yet.
    ///
    /// # Errors
    /// A file cannot be read, or a record below the frontier is damaged in the segment being
    /// written (the disk lost what it said it kept).
    pub fn next(&mut self, durable: u64) -> io::Result<Option<(u64, Bytes)>> {
        // Whether the segment being written was read again since it last seemed to end: the
        // reader's buffer may hold what was there before the record now below the frontier
        // was written (zeros, or a record half written), and forgets it at an end.
        let mut reread = false;
        loop {
            if self.next >= durable {
                return Ok(None);
            }
            if self.current.is_none() && !self.open()? {
                return Ok(None);
            }
            let (first, limit, reader) = self.current.as_mut().expect("opened");
            let (first, limit) = (*first, *limit);
            match reader.step()? {
                Step::Record { seq, .. } if limit.is_some_and(|l| seq >= l) => {
                    // Shadowed by the next segment, which starts at `limit`.
                    self.current = None;
                }
                Step::Record { seq, .. } if seq < self.next => {}
                Step::Record { seq, payload } => {
                    // Its own allocation, of its size: the events made from it keep it.
                    let payload = Bytes::copy_from_slice(payload);
                    self.next = seq + 1;
                    return Ok(Some((seq, payload)));
                }
                Step::End { .. } | Step::Bad { .. } if limit.is_some() => {
                    // A sealed segment ends here: on to the next (a gap, if records are
                    // missing between them, is skipped: they are gone).
                    self.next = self.next.max(limit.expect("checked"));
                    self.current = None;
                }
                Step::End { .. } | Step::Bad { .. } if !reread => reread = true,
                Step::End { .. } => {
                    // The newest segment, or it was when it was opened: a newer one may have
                    // begun since.
                    if !self.newer(first)? {
                        return Ok(None);
                    }
                }
                Step::Bad { at, damage } => {
                    if !self.newer(first)? {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "record {} of the segment being written is damaged at byte {at} ({})",
                                self.next,
                                damage.as_str()
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Whether a segment newer than the one starting at `first` exists; if so the current
    /// one is read on up to where it begins.
    fn newer(&mut self, first: u64) -> io::Result<bool> {
        let starts = self.starts()?;
        let Some(next) = starts.iter().copied().find(|s| *s > first) else {
            return Ok(false);
        };
        if let Some((_, limit, _)) = &mut self.current {
            *limit = Some(next);
        }
        Ok(true)
    }

    /// Opens the segment that holds record `next` (or the oldest after it); false when
    /// there is none.
    fn open(&mut self) -> io::Result<bool> {
        let starts = self.starts()?;
        let at = match starts.iter().rposition(|s| *s <= self.next) {
            Some(i) => i,
            None => match starts.first() {
                // What `next` needs was trimmed or lost: the oldest kept comes next.
                Some(oldest) => {
                    self.next = *oldest;
                    0
                }
                None => return Ok(false),
            },
        };
        let first = starts[at];
        let reader = Reader::open(&self.dir.join(segment::name(first)), Some(first))?;
        self.current = Some((first, starts.get(at + 1).copied(), reader));
        Ok(true)
    }

    /// The first numbers of the segments in the directory, in order.
    fn starts(&self) -> io::Result<Vec<u64>> {
        let mut starts: Vec<u64> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| segment::first_seq(&e.ok()?.path()))
            .collect();
        starts.sort_unstable();
        Ok(starts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::disk::commit::{Committer, Fsync};
    use crate::buffer::disk::log::{Log, Options};
    use std::sync::atomic::Ordering;

    fn options() -> Options {
        Options {
            segment_bytes: 4 << 10,
            max_bytes: 1 << 20,
        }
    }

    fn drain(tail: &mut Tail, durable: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((seq, p)) = tail.next(durable).unwrap() {
            out.push((seq, p.to_vec()));
        }
        out
    }

    #[test]
    fn a_tail_reads_across_segments_from_its_place_and_stops_at_the_frontier() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), options()).unwrap();
        let payload = |i: u64| format!("{i:>500}").into_bytes();
        for i in 1..=40 {
            log.append(&[&payload(i)], true).unwrap();
        }
        assert!(log.segments() > 3);
        let mut tail = Tail::new(dir.path(), 10);
        let got = drain(&mut tail, 31);
        assert_eq!(
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            (10..=30).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|(i, p)| *p == payload(*i)));
        // The frontier moves: the rest comes.
        let rest = drain(&mut tail, log.next_seq());
        assert_eq!(rest.first().map(|r| r.0), Some(31));
        assert_eq!(rest.last().map(|r| r.0), Some(40));
        // Trimmed from under it: a new tail starts at the oldest kept.
        log.trim(25).unwrap();
        let mut late = Tail::new(dir.path(), 2);
        let first = late.next(log.next_seq()).unwrap().unwrap().0;
        assert!(first > 2 && first <= 25, "{first}");
    }

    #[test]
    fn a_record_written_after_the_tail_read_up_to_it_is_read_at_once() {
        // The tail's buffer holds what followed record 1 when it was read (the segment's
        // zeros); record 2 is written there next, and must not read as the end.
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), options()).unwrap();
        let mut tail = Tail::new(dir.path(), 1);
        for i in 1..=20u64 {
            let p = format!("record {i}").into_bytes();
            log.append(&[&p], true).unwrap();
            let got = tail
                .next(log.next_seq())
                .unwrap()
                .map(|(s, p)| (s, p.to_vec()));
            assert_eq!(got, Some((i, p)), "record {i}");
        }
    }

    #[tokio::test]
    async fn a_tail_follows_the_segment_being_written_as_commits_land() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), options()).unwrap();
        let committer = Committer::start(log, Fsync::Always).unwrap();
        let durable = || committer.counts().durable.load(Ordering::Acquire);
        let mut tail = Tail::new(dir.path(), 1);
        assert!(tail.next(durable()).unwrap().is_none(), "nothing yet");
        let mut seen = Vec::new();
        for round in 0..20u64 {
            for i in 0..5 {
                let p = Bytes::from(format!("{:>300}", round * 5 + i));
                committer.commit(p).await.unwrap();
            }
            // Read what is durable so far, between commits, into the growing segment and
            // across the rolls to new ones.
            seen.extend(drain(&mut tail, durable()).into_iter().map(|r| r.0));
        }
        assert_eq!(seen, (1..=100).collect::<Vec<_>>());
    }
}
