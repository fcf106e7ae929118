//! Where each tailed file was read up to, kept under `data_dir` across restarts.
//!
//! A file is known by its device and inode and by a checksum of its first bytes ([`Id`]):
//! inodes are reused after rotation, so the inode alone would resume a new file at an old
//! file's offset. The checksum covers up to [`PREFIX`] bytes, as many as the file had when it
//! was first seen; a file that has grown since is checked over the same length.
//!
//! The store is one text file per source, replaced whole and atomically (written beside, synced,
//! renamed over, the directory synced), so a crash leaves the old or the new one, never a mix:
//!
//! ```text
//! outrigger-checkpoints 1
//! log <record number>          (with the disk buffer only)
//! <dev> <ino> <prefix length> <prefix crc32c, hex> <offset> <path>
//! ```
//!
//! With the disk buffer, a file's offset is committed in the log with its lines
//! ([`super::record`]), and this file is a summary of the log up to the record it names: the
//! offsets in the log's records from that one on are newer, and a start reads them there.
//!
//! The path comes last and runs to the end of the line (it may hold spaces; a newline in a
//! path is written escaped as `\n`, a backslash as `\\`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The most bytes a file's identity checksum covers.
pub const PREFIX: usize = 256;

const HEADER: &str = "outrigger-checkpoints 1";

/// A file's identity: which inode on which device, and what it began with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id {
    pub dev: u64,
    pub ino: u64,
    /// Bytes the checksum covers (fewer than [`PREFIX`] only while the file was shorter).
    pub prefix_len: u32,
    pub prefix_crc: u32,
}

impl Id {
    /// The identity of the open file `file`, from its first bytes as they are now.
    ///
    /// # Errors
    /// Its metadata or first bytes cannot be read.
    pub fn of(file: &File) -> io::Result<Id> {
        let meta = file.metadata()?;
        let mut head = [0; PREFIX];
        let n = read_prefix(file, &mut head)?;
        Ok(Id {
            dev: meta.dev(),
            ino: meta.ino(),
            prefix_len: n as u32,
            prefix_crc: crc32c::crc32c(&head[..n]),
        })
    }

    /// Whether `file` is the file this identity was taken of: the same inode, beginning with
    /// the same bytes (over this identity's length).
    ///
    /// # Errors
    /// Its metadata or first bytes cannot be read.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != (self.dev, self.ino) {
            return Ok(false);
        }
        let mut head = [0; PREFIX];
        let want = self.prefix_len as usize;
        let n = read_prefix(file, &mut head[..want.min(PREFIX)])?;
        Ok(n == want && crc32c::crc32c(&head[..n]) == self.prefix_crc)
    }

    /// Whether the checksum can still grow (the file was shorter than [`PREFIX`]).
    pub fn is_short(&self) -> bool {
        (self.prefix_len as usize) < PREFIX
    }
}

/// Reads as much of the start of `file` as `buf` holds, or the whole file if shorter.
fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One file's place: read (and handed over) up to `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub id: Id,
    pub offset: u64,
}

/// What a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub checkpoints: Vec<Checkpoint>,
    /// With the disk buffer: the checkpoints hold every offset the source's records before
    /// this one committed.
    pub log: Option<u64>,
}

/// A source's checkpoint file.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The store of source `source` under `dir` (`<dir>/<source>.checkpoints`).
    pub fn new(dir: &Path, source: &str) -> Store {
        Store {
            path: dir.join(format!("{source}.checkpoints")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What was saved last; none when nothing was.
    ///
    /// # Errors
    /// The file cannot be read, or is not a checkpoint file this version writes (the line
    /// that is not says where).
    pub fn load(&self) -> io::Result<Saved> {
        let mut text = String::new();
        match File::open(&self.path) {
            Ok(mut f) => f.read_to_string(&mut text)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Saved::default()),
            Err(e) => return Err(e),
        };
        let bad = |n: usize, why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} line {n}: {why}", self.path.display()),
            )
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad(1, &format!("expected `{HEADER}`")));
        }
        let mut out = Saved::default();
        for (i, line) in lines.enumerate() {
            if i == 0
                && let Some(seq) = line.strip_prefix("log ")
            {
                out.log = Some(seq.parse().map_err(|_| bad(2, "expected `log <number>`"))?);
                continue;
            }
            let mut f = line.splitn(6, ' ');
            let mut num = |radix: u32| {
                f.next()
                    .and_then(|v| u64::from_str_radix(v, radix).ok())
                    .ok_or_else(|| bad(i + 2, "expected six fields"))
            };
            let (dev, ino, prefix_len, prefix_crc, offset) =
                (num(10)?, num(10)?, num(10)?, num(16)?, num(10)?);
            let path = f.next().ok_or_else(|| bad(i + 2, "no path"))?;
            if prefix_len > PREFIX as u64 || prefix_crc > u64::from(u32::MAX) {
                return Err(bad(i + 2, "prefix out of range"));
            }
            out.checkpoints.push(Checkpoint {
                path: PathBuf::from(unescape(path)),
                id: Id {
                    dev,
                    ino,
                    prefix_len: prefix_len as u32,
                    prefix_crc: prefix_crc as u32,
                },
                offset,
            });
        }
        Ok(out)
    }

    /// Replaces what is saved with `checkpoints` (and, with the disk buffer, the record
    /// they hold the offsets before), atomically and durably.
    ///
    /// # Errors
    /// Writing, syncing or renaming failed: what was saved before is still there.
    pub fn save(&self, checkpoints: &[Checkpoint], log: Option<u64>) -> io::Result<()> {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(32 + checkpoints.len() * 96);
        text.push_str(HEADER);
        text.push('\n');
        if let Some(seq) = log {
            let _ = writeln!(text, "log {seq}");
        }
        for c in checkpoints {
            let Some(path) = c.path.to_str() else {
                // Paths come from globs the configuration wrote; one that is not UTF-8 is
                // kept in memory only.
                continue;
            };
            let _ = writeln!(
                text,
                "{} {} {} {:x} {} {}",
                c.id.dev,
                c.id.ino,
                c.id.prefix_len,
                c.id.prefix_crc,
                c.offset,
                escape(path)
            );
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("checkpoints.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()
    }
}

fn escape(path: &str) -> String {
    path.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_replace_each_other_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("checkpoints"), "pods");
        assert_eq!(store.load().unwrap(), Saved::default(), "nothing saved yet");
        let one = |path: &str, offset| Checkpoint {
            path: PathBuf::from(path),
            id: Id {
                dev: 2049,
                ino: 1234,
                prefix_len: 200,
                prefix_crc: 0xdead_beef,
            },
            offset,
        };
        let saved = vec![
            one("/var/log/pods/shop_web-1_u1/app/0.log", 4096),
            one("/tmp/with space and \\ back\nslash", 7),
        ];
        store.save(&saved, None).unwrap();
        assert_eq!(store.load().unwrap().checkpoints, saved);
        assert_eq!(store.load().unwrap().log, None);
        store.save(&saved[..1], Some(70)).unwrap();
        let back = store.load().unwrap();
        assert_eq!((&back.checkpoints[..], back.log), (&saved[..1], Some(70)));
        assert!(!store.path().with_extension("checkpoints.tmp").exists());
    }

    #[test]
    fn a_damaged_store_is_an_error_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path(), "pods");
        std::fs::write(store.path(), format!("{HEADER}\n1 2 3 ff 9 /a\n1 2 x\n")).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        std::fs::write(store.path(), format!("{HEADER}\nlog x\n")).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("line 2"));
        std::fs::write(store.path(), "something else\n").unwrap();
        assert!(store.load().unwrap_err().to_string().contains("line 1"));
    }

    #[test]
    fn identity_tells_a_reused_inode_from_the_same_file_grown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"first line\n").unwrap();
        let id = Id::of(&File::open(&path).unwrap()).unwrap();
        assert!(id.is_short() && id.prefix_len == 11);

        // The same file, grown past the prefix: still the same.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[b'x'; 1000]).unwrap();
        assert!(id.matches(&File::open(&path).unwrap()).unwrap());

        // Truncated and rewritten in place (the inode kept, other bytes): another file.
        std::fs::write(&path, b"other line\n").unwrap();
        assert!(!id.matches(&File::open(&path).unwrap()).unwrap());

        // Another inode: another file, whatever it holds.
        let other = dir.path().join("1.log");
        std::fs::write(&other, b"first line\n").unwrap();
        assert!(!id.matches(&File::open(&other).unwrap()).unwrap());
    }
}
