//! The write-ahead log on disk that `buffer.type = "disk"` is built on (in progress: the
//! record format and the segment files, with their recovery, come first; the writer thread
//! with group commit, the per-sink cursors and the wiring into the topology follow).
//!
//! - [`record`]: one record's framing (length, CRC32C, sequence number), as pure functions
//!   over bytes.
//! - [`segment`]: segment files, allocated whole when made, appended to and read back in
//!   order with a bounded buffer; what a start keeps of them after a crash.
//!
//! Why it is built this way, against what the peers do, is in the project's notes on disk
//! buffers: an acknowledgement must mean the data is on disk (fsync before the ack, one sync
//! per group of requests), a buffer of any size from 1 MiB, and a start that never stops on a
//! damaged file.

pub mod record;
pub mod segment;
