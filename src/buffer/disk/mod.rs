//! The write-ahead log on disk that `buffer.type = "disk"` is built on (in progress: the
//! record format, the segment files with their recovery, the log over them, its
//! group-commit writer and the per-sink cursors come first; what a record holds, replay,
//! and the wiring into the configuration, the sources' acks and the sinks follow).
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
//!
//! Why it is built this way, against what the peers do, is in the project's notes on disk
//! buffers: an acknowledgement must mean the data is on disk (fsync before the ack, one sync
//! per group of requests), a buffer of any size from 1 MiB, and a start that never stops on a
//! damaged file.

pub mod commit;
pub mod cursor;
pub mod log;
pub mod record;
pub mod segment;
