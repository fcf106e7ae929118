//! One open file, read in whole lines from an offset.
//!
//! Each read takes at most a budget of bytes (so one busy file cannot starve the others) into
//! one buffer, and hands out the whole lines in it as slices of that buffer: no copy per line.
//! A line not yet ended waits for the rest; one longer than the limit is handed out in pieces
//! of the limit, counted. The offset handed out is always just past a line's `\n` (or a
//! piece), so a checkpoint at it resumes at the start of the next line.
//!
//! The file stays open by descriptor: a rotation renames it, and reading goes on to its end
//! (the caller then moves to the new file at the path). A file that shrank below what was
//! read was truncated in place (copy-truncate rotation): [`Tail::truncated`] says so, and the
//! caller starts it again at 0.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::checkpoint::Id;

/// What one read found.
#[derive(Debug, Default)]
pub struct Lines {
    /// Whole lines, without their `\n` (a `\r` before it is kept: formats decide).
    pub lines: Vec<Bytes>,
    /// The offset just past the last line handed out.
    pub end: u64,
    /// Lines handed out as pieces because they passed the limit.
    pub cut: u64,
    /// The read reached the end of the file (nothing more to read now).
    pub eof: bool,
}

/// What [`Tail::look`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Bytes past what was read.
    More,
    /// Everything it holds has been read (a torn line's start included).
    CaughtUp,
    /// Truncated in place: read it again from its beginning.
    Truncated,
}

/// A file being read.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    file: File,
    id: Id,
    /// Where the next read starts (past what `pending` holds).
    read_at: u64,
    /// Read, not yet a whole line; starts at `read_at - pending.len()`.
    pending: BytesMut,
    max_line: usize,
}

impl Tail {
    /// Opens `path` to read from `offset` (past the end: from the end), lines of at most
    /// `max_line` bytes.
    ///
    /// # Errors
    /// The file cannot be opened or its identity read.
    pub fn open(path: &Path, offset: u64, max_line: usize) -> io::Result<Tail> {
        let file = File::open(path)?;
        let id = Id::of(&file)?;
        let len = file.metadata()?.len();
        Ok(Tail {
            path: path.to_path_buf(),
            file,
            id,
            read_at: offset.min(len),
            pending: BytesMut::new(),
            max_line: max_line.max(1),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's identity as taken at open (its checksum grown once more of it was read).
    pub fn id(&self) -> Id {
        self.id
    }

    /// The offset just past the last line handed out: where a restart resumes.
    pub fn offset(&self) -> u64 {
        self.read_at - self.pending.len() as u64
    }

    /// Bytes read and held for a line not yet ended.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Reads at most `budget` bytes (at least one line's worth is not promised: a long line
    /// takes several reads) and returns the whole lines they end.
    ///
    /// # Errors
    /// The read failed; nothing was consumed.
    pub fn read(&mut self, budget: usize) -> io::Result<Lines> {
        let mut out = Lines::default();
        let want = budget.max(1);
        self.pending.reserve(want);
        let start = self.pending.len();
        // Grown with zeros to read into, then cut back to what was read.
        self.pending.resize(start + want, 0);
        let n = loop {
            match self.file.read_at(&mut self.pending[start..], self.read_at) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.pending.truncate(start);
                    return Err(e);
                }
            }
        };
        self.pending.truncate(start + n);
        self.read_at += n as u64;
        out.eof = n < want;
        if self.id.is_short() && n > 0 {
            // The identity covers the first bytes as they were when first seen; take more
            // of them now that the file has them (the same file, checked over more).
            if let Ok(id) = Id::of(&self.file)
                && id.dev == self.id.dev
                && id.ino == self.id.ino
            {
                self.id = id;
            }
        }
        if let Some(last) = memchr::memrchr(b'\n', &self.pending) {
            let whole = self.pending.split_to(last + 1).freeze();
            let mut at = 0;
            for nl in memchr::memchr_iter(b'\n', &whole) {
                self.push(&whole, at, nl, &mut out);
                at = nl + 1;
            }
        }
        while self.pending.len() >= self.max_line {
            let piece = self.pending.split_to(self.max_line).freeze();
            out.lines.push(piece);
            out.cut += 1;
        }
        // The read's buffer now belongs to the lines handed out (it goes when they are
        // delivered); what is held for a line not yet ended moves to one of its own size, so
        // a thousand files waiting on their next line hold their torn lines, not a read's
        // worth each.
        self.pending = BytesMut::from(&self.pending[..]);
        out.end = self.offset();
        Ok(out)
    }

    /// Hands out `whole[at..nl]`, in pieces of the limit when longer.
    fn push(&self, whole: &Bytes, mut at: usize, nl: usize, out: &mut Lines) {
        while nl - at > self.max_line {
            out.lines.push(whole.slice(at..at + self.max_line));
            out.cut += 1;
            at += self.max_line;
        }
        out.lines.push(whole.slice(at..nl));
    }

    /// Hands out what is held for a line that will not end (the file was rotated away and
    /// read to its end, or deleted): a torn last line, as it is.
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pending.split().freeze())
    }

    /// What the file holds beyond what was read, from one look at its size (and its first
    /// bytes).
    ///
    /// # Errors
    /// Its metadata or first bytes cannot be read.
    pub fn look(&self) -> io::Result<Look> {
        let len = self.file.metadata()?.len();
        // Shorter than what was read, or (written again past that length before this
        // looked) no longer beginning as it did: truncated in place.
        Ok(if len < self.read_at || !self.id.matches(&self.file)? {
            Look::Truncated
        } else if len == self.read_at {
            Look::CaughtUp
        } else {
            Look::More
        })
    }

    /// Starts again from the beginning (after a truncation), forgetting what is held.
    ///
    /// # Errors
    /// The new beginning's identity cannot be read.
    pub fn restart(&mut self) -> io::Result<()> {
        self.pending.clear();
        self.read_at = 0;
        self.id = Id::of(&self.file)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    fn strs(l: &Lines) -> Vec<&str> {
        l.lines
            .iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn whole_lines_are_handed_out_and_a_line_not_ended_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        append(&path, b"one\ntwo\nthr");
        let mut t = Tail::open(&path, 0, 1024).unwrap();
        assert_eq!(t.look().unwrap(), Look::More);
        let l = t.read(1 << 16).unwrap();
        assert_eq!(strs(&l), ["one", "two"]);
        assert!(l.eof && l.end == 8 && t.pending() == 3);
        assert_eq!(
            t.look().unwrap(),
            Look::CaughtUp,
            "the torn line is read, held"
        );
        append(&path, b"ee\n\nfour\n");
        assert_eq!(t.look().unwrap(), Look::More);
        let l = t.read(1 << 16).unwrap();
        assert_eq!(strs(&l), ["three", "", "four"]);
        assert_eq!((l.end, t.offset()), (20, 20));
        assert!(t.read(1 << 16).unwrap().lines.is_empty());
    }

    #[test]
    fn a_budget_bounds_each_read_and_an_offset_resumes_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        append(&path, text.as_bytes());
        let mut t = Tail::open(&path, 0, 1024).unwrap();
        let mut got = Vec::new();
        let mut reads = 0;
        let mut resume = 0;
        loop {
            let l = t.read(50).unwrap();
            reads += 1;
            got.extend(strs(&l).iter().map(|s| s.to_string()));
            if reads == 3 {
                resume = l.end;
            }
            if l.eof && l.lines.is_empty() {
                break;
            }
        }
        assert_eq!(got.len(), 100);
        assert!(reads >= text.len() / 50, "{reads} reads");
        // A restart at a handed-out offset begins with the next whole line.
        let mut again = Tail::open(&path, resume, 1024).unwrap();
        let first = again.read(1 << 16).unwrap();
        let n = got
            .iter()
            .position(|l| l.as_str() == strs(&first)[0])
            .unwrap();
        assert_eq!(strs(&first), got[n..]);
    }

    #[test]
    fn long_lines_come_in_pieces_of_the_limit_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        append(
            &path,
            format!("{}\nshort\n{}", "a".repeat(25), "b".repeat(12)).as_bytes(),
        );
        let mut t = Tail::open(&path, 0, 10).unwrap();
        let l = t.read(1 << 16).unwrap();
        assert_eq!(
            strs(&l),
            ["aaaaaaaaaa", "aaaaaaaaaa", "aaaaa", "short", "bbbbbbbbbb"]
        );
        assert_eq!(l.cut, 3);
        assert_eq!(t.rest().unwrap(), "bb");
        assert_eq!(t.offset(), 25 + 1 + 6 + 12);
    }

    #[test]
    fn truncation_in_place_is_seen_and_reading_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        append(&path, b"old one\nold two\n");
        let mut t = Tail::open(&path, 0, 1024).unwrap();
        t.read(1 << 16).unwrap();
        assert_eq!(t.look().unwrap(), Look::CaughtUp);
        // copytruncate: the content copied elsewhere, then the file cut to 0 and written on.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, b"new\n");
        assert_eq!(t.look().unwrap(), Look::Truncated);
        t.restart().unwrap();
        assert_eq!(strs(&t.read(1 << 16).unwrap()), ["new"]);
        // Cut and written again to the same length before anyone looked: its first bytes
        // tell.
        std::fs::write(&path, b"NEW\n").unwrap();
        assert_eq!(t.look().unwrap(), Look::Truncated);
    }

    #[test]
    fn a_renamed_file_is_read_to_its_end_through_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        append(&path, b"before\n");
        let mut t = Tail::open(&path, 0, 1024).unwrap();
        t.read(1 << 16).unwrap();
        // Rotation by rename: the writer adds its last lines, the runtime reopens a new 0.log.
        append(&path, b"last\ntorn");
        std::fs::rename(&path, dir.path().join("0.log.20261204-101500")).unwrap();
        append(&path, b"new file\n");
        assert_eq!(strs(&t.read(1 << 16).unwrap()), ["last"]);
        assert_eq!(t.rest().unwrap(), "torn");
        let new = Tail::open(&path, 0, 1024).unwrap();
        assert_ne!((new.id().dev, new.id().ino), (t.id().dev, t.id().ino));
    }
}
