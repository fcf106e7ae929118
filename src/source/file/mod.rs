//! The file source: container log files on the node, tailed.
//!
//! Built in steps; what exists so far: [`format`] (a line of a CRI, Docker json-file or text
//! log file into an event) and [`checkpoint`] (each file's identity and offset, saved under
//! `data_dir`).

pub mod checkpoint;
pub mod format;
