//! Each sink's place in the log: the number of the first record it has not finished with.
//!
//! A cursor is a small file of its own (`<name>.cursor` in the log's directory), replaced
//! whole: written to a temporary file, synced, renamed over the old one, and the directory
//! synced, so after a crash it holds either the old place or the new one, never a torn mix.
//! It carries a CRC32C; a cursor that fails it (or is missing) reads as "from the oldest
//! record kept", which can only send records again, never skip one.
//!
//! Segments wholly before every sink's cursor are deleted only after those cursors are
//! synced ([`super::log::Log::trim`]), so a crash between the two finds cursors that point
//! at or past what is left; a cursor before the oldest segment kept starts from that segment.

use std::io;
use std::path::{Path, PathBuf};

use super::segment::sync_dir;

/// Bytes of a cursor file: the number, then the CRC32C of its bytes.
const LEN: usize = 12;

/// A sink's cursor in the log's directory.
#[derive(Debug)]
pub struct Cursor {
    dir: PathBuf,
    name: String,
    /// The first record not finished with.
    seq: u64,
}

impl Cursor {
    /// The cursor of sink `name` in `dir`: as stored, or at 1 (the start of the log) when
    /// there is none or it is damaged. Sink names are the configuration's, letters, digits,
    /// `_` and `-`, so they make safe file names.
    ///
    /// # Errors
    /// The file exists but cannot be read.
    pub fn open(dir: &Path, name: &str) -> io::Result<Cursor> {
        let path = dir.join(format!("{name}.cursor"));
        let seq = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::warn!(cursor = %path.display(), "disk buffer cursor damaged; reading from the oldest record kept");
                1
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e),
        };
        Ok(Cursor {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            seq,
        })
    }

    /// The first record the sink has not finished with.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Moves the cursor to `seq` (every record before it is finished with) and makes that
    /// durable. A cursor never moves back.
    ///
    /// # Errors
    /// Writing, syncing or renaming failed; the stored cursor is the old one.
    pub fn advance(&mut self, seq: u64) -> io::Result<()> {
        if seq <= self.seq {
            return Ok(());
        }
        let path = self.dir.join(format!("{}.cursor", self.name));
        let tmp = self.dir.join(format!("{}.cursor.tmp", self.name));
        let mut bytes = Vec::with_capacity(LEN);
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&seq.to_le_bytes()).to_le_bytes());
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.seq = seq;
        Ok(())
    }
}

/// The highest cursor in `dir` (1 when there is none): the log numbers on from at least it.
///
/// # Errors
/// The directory or a cursor cannot be read.
pub fn highest(dir: &Path) -> io::Result<u64> {
    let mut high = 1;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(sink) = name.to_str().and_then(|n| n.strip_suffix(".cursor")) {
            high = high.max(Cursor::open(dir, sink)?.seq());
        }
    }
    Ok(high)
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let bytes: &[u8; LEN] = bytes.try_into().ok()?;
    let seq: [u8; 8] = bytes[..8].try_into().ok()?;
    let crc = u32::from_le_bytes(bytes[8..].try_into().ok()?);
    (crc32c::crc32c(&seq) == crc).then(|| u64::from_le_bytes(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_a_reopen_never_moves_back_and_reads_damage_as_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cursor::open(dir.path(), "es").unwrap();
        assert_eq!(c.seq(), 1, "no file: the start of the log");
        c.advance(42).unwrap();
        c.advance(7).unwrap();
        assert_eq!(Cursor::open(dir.path(), "es").unwrap().seq(), 42);
        assert_eq!(
            Cursor::open(dir.path(), "loki").unwrap().seq(),
            1,
            "one per sink"
        );
        let path = dir.path().join("es.cursor");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            Cursor::open(dir.path(), "es").unwrap().seq(),
            1,
            "damaged: sent again, never skipped"
        );
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(Cursor::open(dir.path(), "es").unwrap().seq(), 1);
    }
}
