//! Segment files: the log on disk, one file after another.
//!
//! A segment is named after the sequence number of its first record (`00000000000000000001.log`,
//! twenty digits so names sort as numbers do) and is allocated at its full size when created,
//! so a full disk shows when a segment is made, not in the middle of a write. Records are
//! appended ([`Writer`]) and read back in order with positioned reads into one reused buffer
//! ([`Reader`]), so reading a backlog costs the largest record's memory, not the backlog's.
//!
//! [`recover`] decides, at start, what of the files can be trusted: the newest segment (the
//! one being written when the process stopped) ends at its first torn or damaged record, since
//! nothing after it was acknowledged; an older segment with damage is read up to it, the
//! records after it in that segment are skipped (counted: the next segment says where they
//! end), and a copy of the damaged file is kept as `*.quarantined` for an operator. Neither
//! stops the start.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Damage, Decoded, HEADER};

/// What a reader reads at once when it can: most records are far smaller.
const READ: usize = 64 << 10;

/// The file name of the segment whose first record is `first_seq`.
pub fn name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The first sequence number a segment's file name says, if it is a segment's name.
pub fn first_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Syncs a directory, so a file created, renamed or removed in it stays so after a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Appends records to one segment.
#[derive(Debug)]
pub struct Writer {
    file: File,
    path: PathBuf,
    /// Where the next record goes: the end of what is written.
    end: u64,
    capacity: u64,
}

impl Writer {
    /// Creates the segment for records from `first_seq` on in `dir`, `capacity` bytes, all
    /// allocated now.
    ///
    /// # Errors
    /// The file exists, the disk has no room for it (`ENOSPC` here, not later), or another
    /// I/O error.
    pub fn create(dir: &Path, first_seq: u64, capacity: u64) -> io::Result<Writer> {
        let path = dir.join(name(first_seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let made = allocate(&file, capacity).and_then(|()| file.sync_all());
        if let Err(e) = made {
            // Leave no half-made segment behind for the next start to puzzle over.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        sync_dir(dir)?;
        Ok(Writer {
            file,
            path,
            end: 0,
            capacity,
        })
    }

    /// Goes on writing the segment at `path` (as [`recover`] left it) from `end`.
    ///
    /// # Errors
    /// The file cannot be opened for writing.
    pub fn resume(path: &Path, end: u64) -> io::Result<Writer> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let capacity = file.metadata()?.len().max(end);
        Ok(Writer {
            file,
            path: path.to_path_buf(),
            end,
            capacity,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end == 0
    }

    /// Bytes left before the segment is full.
    pub fn room(&self) -> u64 {
        self.capacity.saturating_sub(self.end)
    }

    /// Writes `records` (whole, encoded records) after the last ones. Not durable until
    /// [`Writer::sync`].
    ///
    /// # Errors
    /// The segment has no room for them (nothing is written), or the write failed: then the
    /// segment must not be written again (its state is unknown), only sealed where it was.
    pub fn append(&mut self, records: &[u8]) -> io::Result<()> {
        self.append_vectored(&[io::IoSlice::new(records)])
    }

    /// [`Writer::append`] of the records `pieces` make one after another, written with
    /// `pwritev` from where they are (no copy into one buffer first).
    ///
    /// # Errors
    /// As [`Writer::append`].
    pub fn append_vectored(&mut self, pieces: &[io::IoSlice<'_>]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        if total > self.room() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "segment full: roll to a new one",
            ));
        }
        let mut left: Vec<io::IoSlice<'_>> = pieces.to_vec();
        let mut left = &mut left[..];
        let mut at = self.end;
        while !left.is_empty() {
            // A call takes at most IOV_MAX (1,024 on Linux) pieces; the loop sends the rest.
            let count = left.len().min(1024) as libc::c_int;
            // SAFETY: `left` holds `count` valid `IoSlice`s (laid out as `iovec`s) that live
            // across the call, and the descriptor is the open segment's.
            let n = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    left.as_ptr().cast::<libc::iovec>(),
                    count,
                    at as libc::off_t,
                )
            };
            match n {
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => {
                    at += n as u64;
                    io::IoSlice::advance_slices(&mut left, n as usize);
                }
            }
        }
        self.end += total;
        Ok(())
    }

    /// Forgets what was appended after `end` (a write or sync that failed): the segment
    /// ends there again.
    pub fn rewind(&mut self, end: u64) {
        self.end = self.end.min(end);
    }

    /// Makes everything appended so far durable (`fdatasync`: the size was allocated and
    /// synced at creation, so the data is all there is to sync).
    ///
    /// # Errors
    /// The sync failed. The kernel may have dropped the pages it could not write, so a
    /// retry on this file proves nothing: what was appended since the last good sync must
    /// be written again, to a new segment.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Reserves `len` bytes for `file`, so later writes within them cannot fail for space.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    // SAFETY: `file` is an open descriptor for the duration of the call.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => {
            // A file system without it: zeros written by hand reserve the space as well.
            let zeros = vec![0u8; READ];
            let mut at = 0u64;
            while at < len as u64 {
                let n = (len as u64 - at).min(READ as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            Ok(())
        }
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// What a [`Reader`] found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Record {
        seq: u64,
        payload: &'a [u8],
    },
    /// Nothing more was written; the next record would go at `at`.
    End {
        at: u64,
    },
    /// The bytes at `at` are not the record that should be there.
    Bad {
        at: u64,
        damage: Damage,
    },
}

/// Reads one segment's records in order.
#[derive(Debug)]
pub struct Reader {
    file: File,
    /// File offset of `buf[0]`.
    base: u64,
    /// The next record starts at `buf[start]`.
    start: usize,
    /// What was read is `buf[..len]`; the rest is room, zeroed once when it was made (so
    /// reading again does not clear it again).
    buf: Vec<u8>,
    len: usize,
    /// The file holds nothing past what `buf` holds.
    eof: bool,
    /// The sequence number the next record must have, once known.
    expect: Option<u64>,
}

impl Reader {
    /// A reader of the segment at `path`, whose first record must be `first_seq` (the name's).
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path, first_seq: Option<u64>) -> io::Result<Reader> {
        Ok(Reader {
            file: File::open(path)?,
            base: 0,
            start: 0,
            buf: Vec::new(),
            len: 0,
            eof: false,
            expect: first_seq,
        })
    }

    /// Where the next record starts in the file.
    pub fn position(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The next record, or where the records end and why.
    ///
    /// # Errors
    /// A read failed.
    pub fn step(&mut self) -> io::Result<Step<'_>> {
        loop {
            let rest = &self.buf[self.start..self.len];
            // The bytes the record here needs, as far as its header tells.
            let need = if rest.len() < HEADER {
                HEADER
            } else {
                let len = u32::from_le_bytes(rest[..4].try_into().expect("four bytes")) as usize;
                HEADER + len.min(record::MAX_PAYLOAD + 1)
            };
            if rest.len() < need && !self.eof {
                self.fill(need)?;
                continue;
            }
            let at = self.base + self.start as u64;
            return Ok(match record::decode(rest) {
                Decoded::Record { seq, payload, len } => {
                    if self.expect.is_some_and(|e| e != seq) {
                        Step::Bad {
                            at,
                            damage: Damage::Sequence,
                        }
                    } else {
                        self.expect = Some(seq + 1);
                        let (from, to) = (self.start + payload.start, self.start + payload.end);
                        self.start += len;
                        Step::Record {
                            seq,
                            payload: &self.buf[from..to],
                        }
                    }
                }
                Decoded::End => {
                    // A segment being written may grow into what was read here as zeros:
                    // read it again next time.
                    self.forget_rest();
                    Step::End { at }
                }
                Decoded::Bad(damage) => {
                    // Or be in the middle of writing the record here.
                    self.forget_rest();
                    Step::Bad { at, damage }
                }
            });
        }
    }

    /// Drops what was read past the next record's start, so the next step reads the file
    /// again from there.
    fn forget_rest(&mut self) {
        self.len = self.start;
        self.eof = false;
    }

    /// Reads on until the buffer holds `need` bytes from the next record, or the file ends.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        // Drop what was read already, keeping the record in progress.
        self.buf.copy_within(self.start..self.len, 0);
        self.len -= self.start;
        self.base += self.start as u64;
        self.start = 0;
        let want = need.max(READ);
        while self.len < need {
            let have = self.len;
            if self.buf.len() < have + want {
                self.buf.resize(have + want, 0);
            }
            let n = self
                .file
                .read_at(&mut self.buf[have..have + want], self.base + have as u64)?;
            self.len = have + n;
            if n == 0 {
                self.eof = true;
                break;
            }
        }
        Ok(())
    }
}

/// One segment that [`recover`] kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub path: PathBuf,
    pub first_seq: u64,
    /// The sequence number after its last record (`first_seq` when it has none).
    pub next_seq: u64,
    /// Where its records end.
    pub end: u64,
}

/// What [`recover`] found in a log directory.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The segments to read, oldest first; the last one is written on.
    pub segments: Vec<Kept>,
    /// Older segments with damage, now ending where it began.
    pub quarantined: Vec<Quarantined>,
    /// Where the newest segment was cut, and why, when it ended in a torn or damaged record.
    pub cut: Option<(u64, Damage)>,
}

/// An older segment that [`recover`] found damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The copy of it as it was found (`None` when it could not be made: no room).
    pub copy: Option<PathBuf>,
    pub damage: Damage,
    /// Records skipped after the damage (the next segment's first number tells).
    pub lost: u64,
}

/// What reading one segment through found, before anything is repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    pub first_seq: u64,
    /// The number after its last record kept (`first_seq` when none).
    pub next_seq: u64,
    /// Where its kept records end.
    pub end: u64,
    /// Where damage begins, and what it is, unless what follows `end` is the allocated
    /// zeros or records the next segment shadows.
    pub damage: Option<(u64, Damage)>,
    /// Records missing between this segment and the next (from, to exclusive).
    pub gap: Option<(u64, u64)>,
    /// Where the next segment begins, when one does.
    pub limit: Option<u64>,
    /// The newest segment: the one written on when the process stopped.
    pub newest: bool,
}

/// Reads every segment in `dir` through, oldest first, and says what it found; changes
/// nothing (`outrigger buffer verify`, and [`recover`] before it repairs).
///
/// # Errors
/// The directory or a file cannot be read.
pub fn inspect(dir: &Path) -> io::Result<Vec<Finding>> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    // Where quarantined segments began: they still end the segment before them.
    let mut starts: Vec<u64> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(first) = first_seq(&path) {
            starts.push(first);
            found.push((first, path));
        } else if let Some(first) = path
            .to_str()
            .and_then(|p| p.strip_suffix(".quarantined"))
            .and_then(|p| first_seq(Path::new(p)))
        {
            starts.push(first);
        }
    }
    found.sort();
    starts.sort_unstable();
    // A segment ends where the next one begins: records a failed write left in a segment
    // were written again at the start of the next, which shadows them.
    let limits: Vec<Option<u64>> = found
        .iter()
        .map(|(f, _)| starts.iter().copied().find(|s| s > f))
        .collect();
    let newest = found.len().checked_sub(1);
    let mut out = Vec::with_capacity(found.len());
    for (i, (first, path)) in found.into_iter().enumerate() {
        let mut reader = Reader::open(&path, Some(first))?;
        let mut next = first;
        let limit = limits[i];
        let (end, damage) = loop {
            let at = reader.position();
            match reader.step()? {
                Step::Record { seq, .. } if limit.is_some_and(|l| seq >= l) => break (at, None),
                Step::Record { seq, .. } => next = seq + 1,
                Step::End { at } => break (at, None),
                // Damage past where the next segment begins is in what it shadows.
                Step::Bad { at, .. } if limit == Some(next) => break (at, None),
                Step::Bad { at, damage } => break (at, Some((at, damage))),
            }
        };
        // Records between this segment's last and the next one's first are missing (a
        // segment set aside or deleted by hand).
        let gap = limit
            .filter(|l| damage.is_none() && next < *l)
            .map(|l| (next, l));
        out.push(Finding {
            path,
            first_seq: first,
            next_seq: next,
            end,
            damage,
            gap,
            limit,
            newest: Some(i) == newest,
        });
    }
    Ok(out)
}

/// Reads every segment in `dir` and decides what to keep (see the module docs). The newest
/// segment's damaged tail is zeroed on disk, so what is appended next follows its last good
/// record.
///
/// # Errors
/// The directory or a file cannot be read, or the newest segment cannot be repaired.
pub fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut out = Recovered::default();
    for f in inspect(dir)? {
        match f.damage {
            Some((at, damage)) if !f.newest => {
                let mut aside = f.path.clone().into_os_string();
                aside.push(".quarantined");
                let aside = PathBuf::from(aside);
                // Evidence for an operator, as best the disk allows: the log goes on without.
                let copy = match std::fs::copy(&f.path, &aside).and_then(|_| sync_dir(dir)) {
                    Ok(()) => Some(aside),
                    Err(e) => {
                        tracing::warn!(segment = %f.path.display(), error = %e, "could not keep a copy of a damaged disk buffer segment");
                        let _ = std::fs::remove_file(&aside);
                        None
                    }
                };
                // It ends at the damage from now on: the records after it are a gap.
                zero_from(&f.path, at)?;
                let lost = f.limit.map_or(0, |l| l.saturating_sub(f.next_seq));
                out.quarantined.push(Quarantined { copy, damage, lost });
            }
            Some((at, damage)) => {
                zero_from(&f.path, at)?;
                out.cut = Some((at, damage));
            }
            None => {}
        }
        out.segments.push(Kept {
            path: f.path,
            first_seq: f.first_seq,
            next_seq: f.next_seq,
            end: f.end,
        });
    }
    Ok(out)
}

/// Overwrites `path` with zeros from `from` to its end, and syncs it.
pub fn zero_from(path: &Path, from: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let zeros = vec![0u8; READ];
    let mut at = from;
    while at < len {
        let n = (len - at).min(READ as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(range: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in range {
            record::encode(
                seq,
                format!("event {seq}")
                    .repeat(seq as usize % 7 + 1)
                    .as_bytes(),
                &mut out,
            );
        }
        out
    }

    fn read_all(path: &Path, first: u64) -> (Vec<u64>, Step<'static>) {
        let mut r = Reader::open(path, Some(first)).unwrap();
        let mut seqs = Vec::new();
        loop {
            match r.step().unwrap() {
                Step::Record { seq, payload } => {
                    assert_eq!(
                        payload,
                        format!("event {seq}")
                            .repeat(seq as usize % 7 + 1)
                            .as_bytes()
                    );
                    seqs.push(seq);
                }
                Step::End { at } => return (seqs, Step::End { at }),
                Step::Bad { at, damage } => return (seqs, Step::Bad { at, damage }),
            }
        }
    }

    #[test]
    fn names_sort_as_numbers() {
        assert_eq!(name(42), "00000000000000000042.log");
        assert_eq!(
            first_seq(Path::new("/d/00000000000000000042.log")),
            Some(42)
        );
        for other in [
            "42.log",
            "00000000000000000042.log.quarantined",
            "x0000000000000000042.log",
        ] {
            assert_eq!(first_seq(Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn appended_records_read_back_across_reads_and_end_at_the_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path(), 1, 1 << 20).unwrap();
        assert_eq!(
            std::fs::metadata(w.path()).unwrap().len(),
            1 << 20,
            "allocated whole"
        );
        // Larger than one read, so records straddle the reader's refills.
        let mut big = Vec::new();
        record::encode(1, &vec![b'x'; 100_000], &mut big);
        w.append(&big).unwrap();
        let rest = records(2..2000);
        w.append(&rest).unwrap();
        w.sync().unwrap();
        let mut r = Reader::open(w.path(), Some(1)).unwrap();
        assert!(
            matches!(r.step().unwrap(), Step::Record { seq: 1, payload } if payload.len() == 100_000)
        );
        let mut n = 1;
        let end = loop {
            match r.step().unwrap() {
                Step::Record { seq, .. } => {
                    n += 1;
                    assert_eq!(seq, n);
                }
                Step::End { at } => break at,
                bad => panic!("{bad:?}"),
            }
        };
        assert_eq!((n, end), (1999, w.len()));
        let full = w.append(&vec![0; 1 << 20]).unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        assert_eq!(w.len(), end, "nothing written");
    }

    #[test]
    fn recovery_cuts_the_newest_segment_and_quarantines_a_damaged_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Writer::create(dir.path(), 1, 64 << 10).unwrap();
        a.append(&records(1..100)).unwrap();
        let mut b = Writer::create(dir.path(), 100, 64 << 10).unwrap();
        b.append(&records(100..200)).unwrap();
        let mut c = Writer::create(dir.path(), 200, 64 << 10).unwrap();
        let whole = records(200..300);
        c.append(&whole).unwrap();
        // A torn write at the end of the newest, and a flipped bit in the middle one.
        let torn = c.len() - 3;
        std::fs::OpenOptions::new()
            .write(true)
            .open(c.path())
            .unwrap()
            .write_all_at(&[0; 3], torn)
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(b.path())
            .unwrap()
            .write_all_at(&[0xff], 500)
            .unwrap();
        let (a, b, c) = (
            a.path().to_path_buf(),
            b.path().to_path_buf(),
            c.path().to_path_buf(),
        );

        let r = recover(dir.path()).unwrap();
        assert_eq!(r.quarantined.len(), 1);
        let q = &r.quarantined[0];
        assert_eq!(q.damage, Damage::Checksum);
        let copy = q.copy.clone().expect("a copy");
        assert!(
            b.exists() && copy.exists(),
            "read up to the damage, and copied"
        );
        let kept: Vec<_> = r
            .segments
            .iter()
            .map(|k| (k.first_seq, k.next_seq))
            .collect();
        // Byte 500 is in the middle one's records: those before it are kept.
        let upto = kept[1].1;
        assert!((101..110).contains(&upto), "{kept:?}");
        assert_eq!(q.lost, 200 - upto, "the rest of the middle one");
        assert_eq!(
            kept,
            [(1, 100), (100, upto), (200, 299)],
            "the torn last record is gone"
        );
        let (cut, damage) = r.cut.unwrap();
        // In an allocated file a write cut short leaves zeros, not a short file: its
        // checksum is what fails.
        assert_eq!(damage, Damage::Checksum);
        assert_eq!(cut, r.segments[2].end);
        // The tail was zeroed: the newest now ends cleanly, and writing resumes there.
        assert_eq!(
            read_all(&c, 200),
            ((200..299).collect(), Step::End { at: cut })
        );
        let mut w = Writer::resume(&c, cut).unwrap();
        w.append(&records(299..300)).unwrap();
        assert_eq!(read_all(&c, 200).0, (200..300).collect::<Vec<_>>());
        assert_eq!(read_all(&a, 1).0.len(), 99);
        // The records skipped are missing, and that is said, not hidden.
        let gaps: Vec<_> = inspect(dir.path()).unwrap().iter().map(|f| f.gap).collect();
        assert_eq!(gaps, [None, Some((upto, 200)), None]);
        // A second start finds nothing more to do.
        let again = recover(dir.path()).unwrap();
        assert!(again.quarantined.is_empty() && again.cut.is_none());
    }

    /// A full disk shows when a segment is made, and leaves no file behind. Needs root, for
    /// a small tmpfs of its own.
    #[test]
    fn a_full_disk_refuses_the_segment_not_a_later_write() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!(
                "SKIPPED a_full_disk_refuses_the_segment_not_a_later_write: needs root to mount a tmpfs"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a 1 MiB tmpfs");
        let result = std::panic::catch_unwind(|| {
            let err = Writer::create(dir.path(), 1, 4 << 20).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "nothing left"
            );
            let mut w = Writer::create(dir.path(), 1, 512 << 10).unwrap();
            w.append(&records(1..100)).unwrap();
            w.sync().unwrap();
            assert_eq!(read_all(w.path(), 1).0.len(), 99);
        });
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn verify_reports_damage_without_repairing_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path(), 1, 64 << 10).unwrap();
        w.append(&records(1..50)).unwrap();
        let mut c = crate::buffer::disk::cursor::Cursor::open(dir.path(), "es").unwrap();
        c.advance(10).unwrap();
        let mut out = Vec::new();
        assert!(crate::buffer::disk::verify(dir.path(), &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("records 1..=49 (49)"), "{text}");
        assert!(text.contains("cursor es: next record 10"), "{text}");
        let at = w.len() / 2;
        std::fs::OpenOptions::new()
            .write(true)
            .open(w.path())
            .unwrap()
            .write_all_at(&[0xff; 4], at)
            .unwrap();
        let before = std::fs::read(w.path()).unwrap();
        let mut out = Vec::new();
        assert!(!crate::buffer::disk::verify(dir.path(), &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("damaged at byte") && text.contains("damage found"),
            "{text}"
        );
        assert_eq!(
            std::fs::read(w.path()).unwrap(),
            before,
            "verify changes nothing"
        );
    }

    /// Seeded damage at random places of a real segment: recovery always succeeds, keeps
    /// exactly the records before the damage, and never returns one that was not written.
    #[test]
    fn random_cuts_and_flips_lose_only_what_follows_them() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let written = records(1..400);
        // Where each record starts, to know which one a damaged byte belongs to.
        let mut starts = vec![0u64];
        let mut at = 0usize;
        while let Decoded::Record { len, .. } = record::decode(&written[at..]) {
            at += len;
            starts.push(at as u64);
        }
        for round in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let mut w = Writer::create(dir.path(), 1, 64 << 10).unwrap();
            w.append(&written).unwrap();
            let path = w.path().to_path_buf();
            drop(w);
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let offset = rand() % written.len() as u64;
            if round % 2 == 0 {
                // A write cut short: zeros from `offset` on.
                zero_from(&path, offset).unwrap();
            } else {
                let mut byte = [0u8];
                File::open(&path)
                    .unwrap()
                    .read_at(&mut byte, offset)
                    .unwrap();
                file.write_all_at(&[byte[0] ^ (1 << (rand() % 8))], offset)
                    .unwrap();
            }
            let r = recover(dir.path()).unwrap();
            let kept = &r.segments[0];
            // The record the damage hit, and every one after it, is gone; all before it stay.
            let hit = starts.iter().rposition(|s| *s <= offset).unwrap() as u64;
            assert_eq!(kept.next_seq, hit + 1, "round {round}, offset {offset}");
            assert_eq!(read_all(&path, 1).0, (1..=hit).collect::<Vec<_>>());
        }
    }
}
