//! The dead-letter file: events a backend refused for good (or that ran out of retries),
//! appended as JSON lines with the reason, so nothing disappears silently.
//!
//! The file is written by a thread of its own: a slow or full disk holds up the request
//! whose events are being written (it waits for the write, so the events are counted as
//! refused only once they are in the file), never an async worker thread and the
//! connections and requests it runs.

use std::io::Write as _;

use tokio::sync::{mpsc, oneshot};

use super::export::Ref;
use super::jsonl;

/// Writes waiting for the thread; more make the requests that refuse events wait.
const PENDING_WRITES: usize = 16;

/// One write: the lines, and where to say how it went.
type Write = (Vec<u8>, oneshot::Sender<std::io::Result<()>>);

/// Appends refused events, with the reason, to a file of JSON lines.
#[derive(Debug)]
pub struct DeadLetter {
    writes: mpsc::Sender<Write>,
    /// How events are written: the sink's own shape, so a dead letter reads like the events
    /// the user configured.
    shape: jsonl::Shape,
}

impl DeadLetter {
    /// Opens (appending) the dead-letter file and starts its writer thread, which ends when
    /// the `DeadLetter` is dropped.
    ///
    /// # Errors
    /// The file cannot be opened for appending, or the thread cannot be started.
    pub fn open(path: &std::path::Path, shape: jsonl::Shape) -> std::io::Result<DeadLetter> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (writes, mut rx) = mpsc::channel::<Write>(PENDING_WRITES);
        std::thread::Builder::new()
            .name("dead-letter".into())
            .spawn(move || {
                while let Some((lines, done)) = rx.blocking_recv() {
                    let _ = done.send(file.write_all(&lines));
                }
            })?;
        Ok(DeadLetter { writes, shape })
    }

    /// Writes `{"sink":…,"reason":…,"event":{…}}` per event, and waits until it is written.
    pub async fn write(&self, sink: &str, reason: &str, events: &[Ref<'_>]) {
        let mut out = Vec::new();
        let mut times = jsonl::TimeCache::default();
        for r in events {
            let start = out.len();
            out.extend_from_slice(b"{\"sink\":");
            jsonl::string(&mut out, sink.as_bytes());
            out.extend_from_slice(b",\"reason\":");
            jsonl::string(&mut out, reason.as_bytes());
            out.extend_from_slice(b",\"event\":");
            if jsonl::event(&mut out, &mut times, r.batch, r.event, &self.shape).is_err() {
                out.truncate(start);
                continue;
            }
            out.extend_from_slice(b"}\n");
        }
        let (done, written) = oneshot::channel();
        let result = match self.writes.send((out, done)).await {
            Ok(()) => written
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the writer thread ended"))),
            Err(_) => Err(std::io::Error::other("the writer thread ended")),
        };
        if let Err(e) = result {
            tracing::error!(sink, error = %e, events = events.len(), "dead-letter write failed, events lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Batch, Event, Timestamp};
    use bytes::Bytes;

    #[tokio::test]
    async fn lines_are_appended_before_write_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.ndjson");
        std::fs::write(&path, "earlier\n").unwrap();
        let d = DeadLetter::open(&path, jsonl::Shape::default()).unwrap();
        let mut b = Batch {
            tags: vec![Bytes::from_static(b"app")],
            ..Default::default()
        };
        // {"i":"7"}
        let record = Bytes::from_static(&[0x81, 0xa1, b'i', 0xa1, b'7']);
        b.events.push(Event::new(Timestamp::default(), 0, record));
        d.write("out", "HTTP 400: bad", &[Ref::new(&b, &b.events[0])])
            .await;
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("earlier"), "appended");
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(v["sink"], "out");
        assert_eq!(v["reason"], "HTTP 400: bad");
        assert_eq!(v["event"]["record"]["i"], "7");
        assert_eq!(lines.next(), None);
    }
}
