//! The log: segment files in one directory, appended to in groups, each group made durable
//! by one sync before anyone is told it is.
//!
//! Records are numbered from 1 across segments; a segment's name is its first number. A
//! group that does not fit the segment being written starts a new one (as large as the
//! group needs, at least `segment_bytes`); the log's segments together stay within
//! `max_bytes`, and a group that would pass it is refused: the caller waits or refuses its
//! input, it never loses what the log holds.
//!
//! A failed write or sync leaves the segment in an unknown state (the kernel may have dropped
//! the pages it could not write), so the log never retries on that file: it seals it where the
//! last good sync left it and writes the group again into a new segment. Records of the group
//! that did reach the old file are shadowed by the new segment, which starts at the same
//! number: a segment ends where the next one begins ([`segment::recover`]).

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use super::record;
use super::segment::{self, Kept, Recovered, Writer};

/// Sizes of the log.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Each segment's size, allocated when it is made (a larger group gets a larger one).
    pub segment_bytes: u64,
    /// All segments together.
    pub max_bytes: u64,
}

/// Counts for the metrics, since the log was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub groups: u64,
    pub records: u64,
    pub syncs: u64,
    /// Segments made after a failed write or sync.
    pub rewrites: u64,
}

/// Parts at least this large are written from where they are; smaller ones are copied
/// beside their record's header (a piece of its own would cost the kernel more than the copy).
const COPY_BELOW: usize = 16 << 10;

/// A piece of a group as it is written: bytes of the group's own buffer, or a part in place.
enum Piece<'a> {
    Own(std::ops::Range<usize>),
    InPlace(&'a [u8]),
}

/// An open log, written by one thread.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    options: Options,
    /// Segments before the one being written, oldest first.
    sealed: VecDeque<Kept>,
    active: Option<Writer>,
    /// The number the next record gets.
    next_seq: u64,
    /// What the segments take on disk (their allocated sizes).
    bytes: u64,
    scratch: Vec<u8>,
    stats: Stats,
    /// Written to the segment being written since its last sync (`append` without `sync`).
    unsynced: bool,
    /// The group being appended reached a file before it failed: a reader may have read
    /// those bytes, so their numbers are not given again.
    burned: bool,
    /// Syncs still to fail, for the tests of what a failed sync leaves.
    #[cfg(test)]
    fail_syncs: u32,
}

impl Log {
    /// Opens the log in `dir` (made if missing), after [`segment::recover`] has decided what of
    /// it to keep; returns what that found, for the logs and metrics.
    ///
    /// # Errors
    /// The directory cannot be made or read, or a segment cannot be repaired.
    pub fn open(dir: &Path, options: Options) -> io::Result<(Log, Recovered)> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                segment::sync_dir(parent)?;
            }
        }
        let recovered = segment::recover(dir)?;
        let mut sealed: VecDeque<Kept> = recovered.segments.iter().cloned().collect();
        let mut bytes = 0;
        for k in &sealed {
            bytes += std::fs::metadata(&k.path)?.len();
        }
        // Numbers are never given again below a cursor, even when the segments that held
        // them are gone (trimmed, removed, cut): a sink would take new records for old ones.
        let next_seq = sealed
            .back()
            .map_or(1, |k| k.next_seq)
            .max(super::cursor::highest(dir)?);
        // The newest segment is written on where its records end; the others are sealed. Not
        // when a cursor is past its last record (the log lost what a sink had been sent: a
        // crash of the machine without syncs, a cut tail): the next record's number would
        // not follow its last one, so the next group starts a segment of its own.
        let resumable = sealed.back().is_some_and(|k| k.next_seq == next_seq);
        let active = if resumable {
            let last = sealed.pop_back().expect("checked");
            Some(Writer::resume(&last.path, last.end)?)
        } else {
            None
        };
        let log = Log {
            dir: dir.to_path_buf(),
            options,
            sealed,
            active,
            next_seq,
            bytes,
            scratch: Vec::new(),
            stats: Stats::default(),
            unsynced: false,
            burned: false,
            #[cfg(test)]
            fail_syncs: 0,
        };
        Ok((log, recovered))
    }

    /// The number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// What the segments take on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Segments on disk, the one being written included.
    pub fn segments(&self) -> usize {
        self.sealed.len() + usize::from(self.active.is_some())
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The number of the oldest record the log keeps (the next one's, when it keeps none).
    pub fn oldest_seq(&self) -> u64 {
        match (self.sealed.front(), &self.active) {
            (Some(k), _) => k.first_seq,
            (None, Some(w)) => segment::first_seq(w.path()).unwrap_or(self.next_seq),
            (None, None) => self.next_seq,
        }
    }

    /// Deletes the sealed segments whose records all come before `seq`, and returns how many
    /// went. The caller passes the lowest of the sinks' cursors, synced first
    /// ([`super::cursor`]): a crash between the two then finds cursors at or past what is
    /// left.
    ///
    /// # Errors
    /// A segment cannot be deleted, or the directory synced.
    pub fn trim(&mut self, seq: u64) -> io::Result<usize> {
        let mut gone = 0;
        while let Some(k) = self.sealed.front().filter(|k| k.next_seq <= seq) {
            // Forgotten only once gone: a deletion that fails is tried again next time.
            let len = std::fs::metadata(&k.path)?.len();
            std::fs::remove_file(&k.path)?;
            self.sealed.pop_front();
            self.bytes -= len;
            gone += 1;
        }
        if gone > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(gone)
    }

    /// The most bytes the log may take on disk (`buffer.max_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.options.max_bytes
    }

    /// Syncs what was appended without a sync. When that fails, the segment is retired as
    /// after a failed write, and the next group goes to a new one.
    ///
    /// # Errors
    /// The sync failed: what was written since the last one may be lost in a crash of the
    /// machine.
    pub fn sync(&mut self) -> io::Result<()> {
        let Some(w) = &self.active else {
            return Ok(());
        };
        self.stats.syncs += 1;
        let result = w.sync();
        self.unsynced = false;
        if result.is_err() {
            self.retire(self.next_seq, true)?;
        }
        result
    }

    /// Appends one record per payload, and returns once they are durable (synced when
    /// `sync`, else written), with the number of the first (the others follow it).
    ///
    /// # Errors
    /// - `StorageFull`: the log is at `max_bytes`, or the disk has no room for a new segment;
    ///   nothing was written that anyone will read.
    /// - Any other I/O error: writing the group again into a new segment failed too.
    ///
    /// Either way the records are not durable. Their numbers are given again when nothing of
    /// them reached a file; otherwise not (a reader may have read those bytes).
    pub fn append(&mut self, payloads: &[&[u8]], sync: bool) -> io::Result<u64> {
        let parts: Vec<&[&[u8]]> = payloads.iter().map(std::slice::from_ref).collect();
        self.append_parts(&parts, sync)
    }

    /// [`Log::append`] of payloads each made of parts, one after another (a header and a
    /// body, say): large parts are written from where they are, not copied into the group.
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn append_parts(&mut self, payloads: &[&[&[u8]]], sync: bool) -> io::Result<u64> {
        let first = self.next_seq;
        // Headers and small parts are copied into one buffer (fewer, larger pieces for the
        // kernel); the rest is written in place. `pieces` says which, in order.
        let mut own = std::mem::take(&mut self.scratch);
        own.clear();
        let mut pieces: Vec<Piece<'_>> = Vec::new();
        let mut run = 0;
        for (i, parts) in payloads.iter().enumerate() {
            own.extend_from_slice(&record::header(first + i as u64, parts));
            for part in parts.iter() {
                if part.len() < COPY_BELOW {
                    own.extend_from_slice(part);
                    continue;
                }
                if own.len() > run {
                    pieces.push(Piece::Own(run..own.len()));
                    run = own.len();
                }
                pieces.push(Piece::InPlace(part));
            }
        }
        if own.len() > run {
            pieces.push(Piece::Own(run..own.len()));
        }
        let slices: Vec<io::IoSlice<'_>> = pieces
            .iter()
            .map(|p| match p {
                Piece::Own(r) => io::IoSlice::new(&own[r.clone()]),
                Piece::InPlace(b) => io::IoSlice::new(b),
            })
            .collect();
        self.burned = false;
        let result = self.write(first, &slices, sync);
        drop(slices);
        self.scratch = own;
        if result.is_err() && self.burned {
            self.next_seq += payloads.len() as u64;
        }
        result?;
        self.next_seq += payloads.len() as u64;
        self.stats.groups += 1;
        self.stats.records += payloads.len() as u64;
        Ok(first)
    }

    /// Writes and syncs `group` (records from `first` on), rolling to a new segment when the
    /// one being written has no room or fails.
    fn write(&mut self, first: u64, group: &[io::IoSlice<'_>], sync: bool) -> io::Result<()> {
        let need: u64 = group.iter().map(|p| p.len() as u64).sum();
        if self.active.as_ref().is_none_or(|w| w.room() < need) {
            self.roll(first, need)?;
        }
        let Err(failed) = self.attempt(group, sync) else {
            return Ok(());
        };
        tracing::warn!(error = %failed, "disk buffer write failed; writing the group again in a new segment");
        self.burned = true;
        self.stats.rewrites += 1;
        self.retire(first, true)?;
        self.roll(first, need)?;
        if let Err(e) = self.attempt(group, sync) {
            // Durable nowhere: the next group starts in a fresh segment, never after this.
            let _ = self.retire(first, true);
            return Err(e);
        }
        Ok(())
    }

    /// Appends and syncs `group` to the segment being written. When that fails, the
    /// segment's end goes back to where its last good sync left it.
    fn attempt(&mut self, group: &[io::IoSlice<'_>], sync: bool) -> io::Result<()> {
        let w = self.active.as_mut().expect("a segment to write");
        let good = w.len();
        let result = w.append_vectored(group).and_then(|()| {
            if !sync {
                return Ok(());
            }
            #[cfg(test)]
            if self.fail_syncs > 0 {
                self.fail_syncs -= 1;
                return Err(io::Error::other("injected sync failure"));
            }
            w.sync()
        });
        self.stats.syncs += u64::from(sync);
        match &result {
            Ok(()) => self.unsynced = !sync,
            Err(_) => w.rewind(good),
        }
        result
    }

    /// Takes the segment being written out of use, for records from `first` on to go
    /// elsewhere. One that holds no record before `first` (made for them) is removed; any
    /// other is sealed where its records end. After a `failed` write, what it may have left
    /// past that end is zeroed (through a new descriptor, as best it can: the next segment
    /// shadows it anyway, see [`segment::inspect`]).
    fn retire(&mut self, first: u64, failed: bool) -> io::Result<()> {
        let Some(w) = self.active.take() else {
            return Ok(());
        };
        // A segment left behind is synced first (`fsync = "interval"` would otherwise leave
        // its last groups to the kernel's writeback).
        if !failed && std::mem::take(&mut self.unsynced) {
            self.stats.syncs += 1;
            if let Err(e) = w.sync() {
                tracing::error!(segment = %w.path().display(), error = %e, "disk buffer sync failed; data acknowledged in the last interval may not survive a crash of the machine");
            }
        }
        if segment::first_seq(w.path()) == Some(first) {
            let len = std::fs::metadata(w.path()).map_or(0, |m| m.len());
            std::fs::remove_file(w.path())?;
            self.bytes -= len.min(self.bytes);
            return segment::sync_dir(&self.dir);
        }
        if failed && let Err(e) = segment::zero_from(w.path(), w.len()) {
            tracing::warn!(segment = %w.path().display(), error = %e, "could not clear a failed write's tail; the next segment shadows it");
        }
        self.sealed.push_back(Kept {
            path: w.path().to_path_buf(),
            first_seq: segment::first_seq(w.path()).unwrap_or(first),
            next_seq: first,
            end: w.len(),
        });
        Ok(())
    }

    /// Seals the segment being written and makes the next, for records from `first` on, with
    /// room for at least `need` bytes.
    fn roll(&mut self, first: u64, need: u64) -> io::Result<()> {
        self.retire(first, false)?;
        let size = self.options.segment_bytes.max(need);
        if self.bytes + size > self.options.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "disk buffer full: {} of {} bytes in segments",
                    self.bytes, self.options.max_bytes
                ),
            ));
        }
        let w = Writer::create(&self.dir, first, size)?;
        self.bytes += size;
        self.active = Some(w);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::disk::segment::{Reader, Step};

    fn options() -> Options {
        Options {
            segment_bytes: 8 << 10,
            max_bytes: 1 << 20,
        }
    }

    /// Room for three segments of four 1,000-byte records.
    fn three_small_segments() -> Options {
        Options {
            segment_bytes: 4 << 10,
            max_bytes: 12 << 10,
        }
    }

    /// Every record in `dir`, in order, as a fresh start would find them.
    fn read_back(dir: &Path) -> Vec<(u64, Vec<u8>)> {
        let r = segment::recover(dir).unwrap();
        let mut out = Vec::new();
        for k in &r.segments {
            let mut reader = Reader::open(&k.path, Some(k.first_seq)).unwrap();
            while let Step::Record { seq, payload } = reader.step().unwrap() {
                if seq >= k.next_seq {
                    break;
                }
                out.push((seq, payload.to_vec()));
            }
        }
        out
    }

    #[test]
    fn payloads_in_parts_read_back_whole_whichever_parts_are_copied() {
        // Small and large parts (copied beside their header, or written in place), and more
        // pieces than one pwritev call takes.
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(
            dir.path(),
            Options {
                max_bytes: 64 << 20,
                segment_bytes: 16 << 20,
            },
        )
        .unwrap();
        let large = |i: usize| vec![b'a' + (i % 26) as u8; COPY_BELOW + i];
        let owned: Vec<[Vec<u8>; 2]> = (0..1500)
            .map(|i| match i % 3 {
                0 => [format!("head {i}").into_bytes(), large(i)],
                1 => [large(i), format!("tail {i}").into_bytes()],
                _ => [format!("small {i}").into_bytes(), Vec::new()],
            })
            .collect();
        let parts: Vec<[&[u8]; 2]> = owned.iter().map(|[a, b]| [&a[..], &b[..]]).collect();
        let payloads: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
        let first = log.append_parts(&payloads, true).unwrap();
        drop(log);
        let back = read_back(dir.path());
        assert_eq!(back.len(), owned.len());
        for (i, ((seq, payload), [a, b])) in back.iter().zip(&owned).enumerate() {
            assert_eq!(*seq, first + i as u64);
            assert!(*payload == [&a[..], &b[..]].concat(), "record {i}");
        }
    }

    #[test]
    fn groups_are_durable_across_segments_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), options()).unwrap();
        let mut want = Vec::new();
        for g in 0..50u64 {
            let payloads: Vec<Vec<u8>> = (0..g % 5 + 1)
                .map(|i| format!("group {g} record {i} ").repeat(10).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
            let first = log.append(&refs, true).unwrap();
            for (i, p) in payloads.into_iter().enumerate() {
                want.push((first + i as u64, p));
            }
        }
        // A group larger than a segment gets a segment of its own size.
        let big = vec![b'b'; 20 << 10];
        let first = log.append(&[&big], true).unwrap();
        want.push((first, big));
        let stats = log.stats();
        assert_eq!((stats.groups, stats.syncs, stats.rewrites), (51, 51, 0));
        assert!(log.segments() > 3, "{} segments", log.segments());
        assert_eq!(
            want.iter().map(|w| w.0).collect::<Vec<_>>(),
            (1..=want.len() as u64).collect::<Vec<_>>()
        );
        // No clean shutdown: what a kill leaves is what a start finds.
        drop(log);
        assert_eq!(read_back(dir.path()), want);
        let (mut log, recovered) = Log::open(dir.path(), options()).unwrap();
        assert!(recovered.cut.is_none() && recovered.quarantined.is_empty());
        assert_eq!(log.next_seq(), want.len() as u64 + 1, "numbering goes on");
        log.append(&[b"after"], true).unwrap();
        let all = read_back(dir.path());
        assert_eq!(
            all.last().unwrap(),
            &(want.len() as u64 + 1, b"after".to_vec())
        );
    }

    #[test]
    fn a_full_log_refuses_the_group_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let opts = three_small_segments();
        let (mut log, _) = Log::open(dir.path(), opts).unwrap();
        let p = vec![b'x'; 1000];
        let mut n = 0;
        let err = loop {
            match log.append(&[&p], true) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert_eq!(n, 12, "three segments of four records");
        assert!(log.bytes() <= opts.max_bytes);
        assert_eq!(read_back(dir.path()).len(), n);
        assert_eq!(
            log.next_seq(),
            n as u64 + 1,
            "the refused record's number is given again"
        );
    }

    #[test]
    fn trimming_frees_room_for_new_groups_and_keeps_what_cursors_still_need() {
        let dir = tempfile::tempdir().unwrap();
        let opts = three_small_segments();
        let (mut log, _) = Log::open(dir.path(), opts).unwrap();
        let p = vec![b'x'; 1000];
        while log.append(&[&p], true).is_ok() {}
        assert_eq!((log.oldest_seq(), log.next_seq()), (1, 13));
        // Cursors at 6: the first segment (1..=4) is behind them all, the second (5..=8) not.
        let mut es = super::super::cursor::Cursor::open(dir.path(), "es").unwrap();
        es.advance(6).unwrap();
        assert_eq!(log.trim(es.seq()).unwrap(), 1);
        assert_eq!(log.oldest_seq(), 5);
        assert_eq!(log.trim(6).unwrap(), 0, "nothing more is wholly behind");
        log.append(&[&p], true).unwrap();
        drop(log);
        let seqs: Vec<u64> = read_back(dir.path()).iter().map(|r| r.0).collect();
        assert_eq!(seqs, (5..=13).collect::<Vec<_>>());
        let (log, _) = Log::open(dir.path(), opts).unwrap();
        assert_eq!((log.oldest_seq(), log.next_seq()), (5, 14));
    }

    /// Groups of three records, 100 bytes each, from `from` on, answered as `log` answers.
    fn groups(log: &mut Log, from: u64, n: u64) -> Vec<io::Result<u64>> {
        (0..n)
            .map(|g| {
                let p: Vec<Vec<u8>> = (0..3)
                    .map(|i| format!("{:>100}", from + g * 3 + i).into_bytes())
                    .collect();
                log.append(&p.iter().map(|p| &p[..]).collect::<Vec<_>>(), true)
            })
            .collect()
    }

    #[test]
    fn a_failed_sync_writes_the_group_again_elsewhere_and_loses_nothing_acked() {
        for (before, failures) in [(0, 1), (4, 1), (4, 2), (0, 2)] {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = Log::open(dir.path(), options()).unwrap();
            let mut acked: Vec<u64> = Vec::new();
            for r in groups(&mut log, 1, before) {
                let first = r.unwrap();
                acked.extend(first..first + 3);
            }
            // The group is written, then its sync fails (`failures` times in a row).
            log.fail_syncs = failures;
            let r = groups(&mut log, 0, 1).pop().unwrap();
            match failures {
                1 => {
                    let first = r.unwrap();
                    acked.extend(first..first + 3);
                    assert_eq!(log.stats().rewrites, 1);
                }
                _ => assert!(r.is_err(), "durable nowhere: refused"),
            }
            // What comes next is written and read once, numbered on from the last durable.
            for r in groups(&mut log, 0, 3) {
                let first = r.unwrap();
                acked.extend(first..first + 3);
            }
            drop(log);
            let seqs: Vec<u64> = read_back(dir.path()).iter().map(|r| r.0).collect();
            assert_eq!(seqs, acked, "{before} groups before, {failures} failures");
            // A group refused after its bytes reached a file leaves its numbers unused: a
            // reader may have read those bytes, and must not take others for them.
            let burned = if failures == 1 { 0 } else { 3 };
            let want: Vec<u64> = (1..=acked.len() as u64 + burned)
                .filter(|n| !(before * 3 + 1..=before * 3 + burned).contains(n))
                .collect();
            assert_eq!(acked, want);
            let r = segment::recover(dir.path()).unwrap();
            assert!(r.quarantined.is_empty() && r.cut.is_none(), "{r:?}");
        }
    }

    #[test]
    fn numbers_never_go_back_below_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), options()).unwrap();
        groups(&mut log, 1, 10);
        super::super::cursor::Cursor::open(dir.path(), "es")
            .unwrap()
            .advance(31)
            .unwrap();
        drop(log);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if segment::first_seq(&path).is_some() {
                std::fs::remove_file(path).unwrap();
            }
        }
        let (log, _) = Log::open(dir.path(), options()).unwrap();
        assert_eq!(log.next_seq(), 31);
    }

    #[test]
    fn a_cursor_past_the_newest_record_starts_a_new_segment_not_a_gap_in_the_old_one() {
        // The segments kept records 1..=30, a cursor says 40 (the log lost what it had sent:
        // a crash of the machine without syncs). Record 40 must not follow record 30 in the
        // same segment, where it would read as damage.
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), options()).unwrap();
        groups(&mut log, 1, 10);
        super::super::cursor::Cursor::open(dir.path(), "es")
            .unwrap()
            .advance(40)
            .unwrap();
        drop(log);
        let (mut log, _) = Log::open(dir.path(), options()).unwrap();
        assert_eq!(log.append(&[b"after"], true).unwrap(), 40);
        drop(log);
        let r = segment::recover(dir.path()).unwrap();
        assert!(r.cut.is_none() && r.quarantined.is_empty(), "{r:?}");
        let seqs: Vec<u64> = read_back(dir.path()).iter().map(|r| r.0).collect();
        assert_eq!(seqs, (1..=30).chain([40]).collect::<Vec<_>>());
    }

    #[test]
    fn records_shadowed_by_the_next_segment_are_not_read_twice() {
        // What a failed write leaves: part of a group in the old segment, all of it again in
        // a new one that starts at the same number.
        let dir = tempfile::tempdir().unwrap();
        let mut a = Writer::create(dir.path(), 1, 4096).unwrap();
        let mut rec = Vec::new();
        for seq in 1..=4 {
            record::encode(seq, format!("r{seq}").as_bytes(), &mut rec);
        }
        // The write failed in the middle of the fourth record.
        a.append(&rec[..rec.len() - 2]).unwrap();
        let mut b = Writer::create(dir.path(), 3, 4096).unwrap();
        let mut rec = Vec::new();
        for seq in 3..=4 {
            record::encode(seq, format!("r{seq}").as_bytes(), &mut rec);
        }
        b.append(&rec).unwrap();
        let seqs: Vec<u64> = read_back(dir.path()).iter().map(|r| r.0).collect();
        assert_eq!(seqs, [1, 2, 3, 4]);
        let r = segment::recover(dir.path()).unwrap();
        assert!(
            r.quarantined.is_empty(),
            "the torn tail is shadowed, not damage"
        );
    }
}
