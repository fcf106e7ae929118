//! The file source: container log files on the node, tailed.
//!
//! Built in steps; what exists so far: [`format`] (a line of a CRI, Docker json-file or text
//! log file into an event), [`tail`] (one open file read in whole lines, within a budget per
//! read, through rotation by rename and truncation) and [`checkpoint`] (each file's identity
//! and offset, saved under `data_dir`). Next: discovery by globs, the source itself (its
//! stages, the checkpoints advanced on delivery or committed with the data in the disk
//! buffer), `kubernetes_logs` and pod metadata.

pub mod checkpoint;
pub mod format;
pub mod tail;
