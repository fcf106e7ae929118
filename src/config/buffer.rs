//! The `[buffer]` section: where accepted input waits for the sinks, and so what a source's
//! acknowledgement can promise.
//!
//! `memory` (the default) is the sinks' bounded queues alone: an ack means the data was
//! queued, and a crash loses what was queued. `disk` puts a write-ahead log under them
//! ([`crate::buffer::disk`]): a source acknowledges once what it accepted is in the log, and
//! what the sinks had not delivered is sent after a restart.

use serde::Deserialize;

/// `[buffer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Buffer {
    #[serde(rename = "type")]
    pub kind: BufferKind,
    /// The log's segments together, on disk. From 1 MiB: a small node must not need a
    /// quarter of a gigabyte of disk to be safe.
    pub max_bytes: u64,
    /// When a group of writes is synced.
    pub fsync: FsyncMode,
    /// With `fsync = "interval"`: the longest a written group waits for its sync.
    pub interval_ms: u64,
    /// Memory for the latest records as their source decoded them, so the sinks' readers
    /// that keep up do not decode them again (0: they always decode). Not a bound on what
    /// is kept: the log holds that.
    pub recent_bytes: u64,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            kind: BufferKind::Memory,
            max_bytes: 1 << 30,
            fsync: FsyncMode::Always,
            interval_ms: 1000,
            recent_bytes: 4 << 20,
        }
    }
}

/// The smallest `max_bytes` accepted.
pub const MIN_BYTES: u64 = 1 << 20;

impl Buffer {
    /// Each segment's size: an eighth of the log (so the oldest can be deleted while the
    /// rest fill), from 64 KiB to 64 MiB.
    pub fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(64 << 10, 64 << 20)
    }

    pub fn is_disk(&self) -> bool {
        self.kind == BufferKind::Disk
    }

    /// The key at fault and why, when the section is not valid.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_bytes < MIN_BYTES {
            return Err((
                "max_bytes",
                format!(
                    "must be at least {MIN_BYTES} (1 MiB), found {}",
                    self.max_bytes
                ),
            ));
        }
        if self.fsync == FsyncMode::Interval && self.interval_ms == 0 {
            return Err(("interval_ms", "must be greater than 0".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    Memory,
    Disk,
}

/// `buffer.fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// Synced before anything in it is acknowledged (one sync per group of requests).
    Always,
    /// Acknowledged once written, synced at most `interval_ms` later: a crash of the machine
    /// (not of Outrigger) may lose what was acknowledged in that time.
    Interval,
    /// Never synced by Outrigger: survives a crash of Outrigger, not of the machine.
    Never,
}

/// A source's `ack`: when it acknowledges what it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    /// Once every matching sink's queue has taken it (memory buffer).
    Queued,
    /// Once it is in the disk buffer, as `buffer.fsync` says.
    Durable,
    /// Once every sink has finished with it: delivered (or dead-lettered, or given up on as
    /// the sink's retry policy says). Disk buffer only.
    Delivered,
}

impl Ack {
    /// The default: what the buffer can promise.
    pub fn default_for(buffer: &Buffer) -> Ack {
        if buffer.is_disk() {
            Ack::Durable
        } else {
            Ack::Queued
        }
    }

    /// Why `self` does not go with `buffer`, if it does not.
    pub fn check(self, buffer: &Buffer) -> Result<(), &'static str> {
        match (self, buffer.is_disk()) {
            (Ack::Queued, false) | (Ack::Durable | Ack::Delivered, true) => Ok(()),
            (Ack::Queued, true) => Err(
                "with buffer.type = \"disk\" an ack means the data is in the buffer: use \
                 \"durable\" (with buffer.fsync = \"never\" for the cheapest) or \"delivered\"",
            ),
            (Ack::Durable | Ack::Delivered, false) => Err(
                "needs buffer.type = \"disk\": with the memory buffer an ack means the data \
                 was queued (\"queued\")",
            ),
        }
    }
}
