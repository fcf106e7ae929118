//! The write-ahead log of `buffer.type = "disk"`: what the sources accepted, on disk before
//! it is acknowledged, read by each sink from its own cursor (the readers are
//! [`crate::source::replay`]; the topology opens the log and keeps the cursors).
//!
//! - [`record`]: one record's framing (length, CRC32C, sequence number), as pure functions
//!   over bytes.
//! - [`segment`]: segment files, allocated whole when made, appended to and read back in
//!   order with a bounded buffer; what a start keeps of them after a crash.
//! - [`log`]: the segments as one numbered log, appended to in groups made durable by one
//!   sync each, bounded by `max_bytes`, rolling to a new segment when one fills or fails.
//! - [`commit`]: the log's writer thread, which gathers what every connection handed over
//!   while it synced into the next group (group commit), and answers each once durable.
//! - [`cursor`]: each sink's place in the log, replaced atomically; segments behind every
//!   cursor are deleted ([`log::Log::trim`]) only once the cursors are synced.
//! - [`tail`]: reading the log in order from a cursor, across segments, below the durable
//!   frontier, on into the segment being written: what replay and a sink reading from disk
//!   use.
//! - [`progress`]: how far each sink has got: the first record its reader has not read,
//!   enrichment still holds, or its queue has not finished with; what its cursor stores.
//! - [`recent`]: the latest records as their source decoded them, so readers that keep up
//!   do not decode them again.
//! - [`payload`]: what a record holds: what a source accepted from one read of one stream,
//!   before enrichment, so replay rebuilds what enrichment held back by running it again.
//!
//! Why it is built this way, against what the peers do, is in the project's notes on disk
//! buffers: an acknowledgement must mean the data is on disk (fsync before the ack, one sync
//! per group of requests), a buffer of any size from 1 MiB, and a start that never stops on a
//! damaged file.

pub mod commit;
pub mod cursor;
pub mod log;
pub mod payload;
pub mod progress;
pub mod recent;
pub mod record;
pub mod segment;
pub mod tail;

use std::io::{self, Write};
use std::path::Path;

/// The log's directory inside `global.data_dir`.
pub const DIR: &str = "buffer";

/// `outrigger buffer verify`: reads the log in `dir` through without changing it and writes
/// what it found to `out`, one line per segment and cursor. True when nothing is damaged;
/// otherwise the lines say what the next start will keep and set aside.
///
/// # Errors
/// The directory or a file cannot be read, or `out` cannot be written.
pub fn verify(dir: &Path, out: &mut impl Write) -> io::Result<bool> {
    let findings = segment::inspect(dir)?;
    let mut clean = true;
    let mut records = 0;
    for f in &findings {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let kept = match f.next_seq - f.first_seq {
            0 => "no records".to_string(),
            n => {
                records += n;
                format!("records {}..={} ({n})", f.first_seq, f.next_seq - 1)
            }
        };
        let size = std::fs::metadata(&f.path)?.len();
        write!(out, "{name}: {kept}, {} of {size} bytes used", f.end)?;
        match f.damage {
            None if let Some((from, to)) = f.gap => {
                clean = false;
                writeln!(out, "; records {from}..{to} are missing after it")?;
            }
            None => writeln!(out)?,
            Some((at, damage)) => {
                clean = false;
                let then = if f.newest {
                    "a start cuts the segment there (nothing after it was acknowledged)"
                } else {
                    "a start keeps its records up to there, skips the rest of it, and keeps a copy as .quarantined"
                };
                writeln!(out, "; damaged at byte {at} ({}): {then}", damage.as_str())?;
            }
        }
    }
    let mut others: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cursor") || n.ends_with(".quarantined"))
        .collect();
    others.sort();
    for name in others {
        if let Some(sink) = name.strip_suffix(".cursor") {
            let c = cursor::Cursor::open(dir, sink)?;
            writeln!(out, "cursor {sink}: next record {}", c.seq())?;
        } else {
            writeln!(
                out,
                "{name}: a damaged segment as an earlier start found it (a copy, not read)"
            )?;
        }
    }
    writeln!(
        out,
        "{}: {} segments, {records} records, {}",
        dir.display(),
        findings.len(),
        if clean { "no damage" } else { "damage found" }
    )?;
    Ok(clean)
}
