//! Group commit: one thread writes the log, and every request that arrived while it was
//! syncing the last group goes into the next one, so many connections cost about one
//! `fdatasync` per group, not one per request.
//!
//! Sources hand a payload over with [`Committer::commit`] and await the answer before they
//! acknowledge: the record's number once it is durable, or why it is not (then they must
//! not acknowledge). Blocking file I/O stays on this thread, off the async runtime; the
//! hand-off is a `crossbeam-channel`, the answer a oneshot.
//!
//! The thread ends when every [`Committer`] is gone, after writing what was handed over.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use super::log::Log;
use super::record;

/// The most payload bytes one group gathers before it is written: a bound on the write
/// (and on the memory a group holds), far above what a sync's worth of requests usually is.
pub const GROUP_BYTES: usize = 8 << 20;

/// A commit's answer: the record's number, or the error that kept it from being durable.
pub type Committed = Result<u64, Arc<io::Error>>;

struct Job {
    payload: Bytes,
    done: oneshot::Sender<Committed>,
}

/// What the thread has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct Counts {
    /// The number after the last durable record: readers read only below it (a record
    /// above may still be rewritten after a failed sync).
    pub durable: AtomicU64,
    pub groups: AtomicU64,
    pub records: AtomicU64,
    pub syncs: AtomicU64,
    pub failed: AtomicU64,
}

/// A handle on the log's writer thread; clone it for each source.
#[derive(Clone)]
pub struct Committer {
    tx: Sender<Job>,
    counts: Arc<Counts>,
}

impl Committer {
    /// Starts the writer thread over `log`.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(log: Log) -> io::Result<Committer> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let counts = Arc::new(Counts::default());
        counts.durable.store(log.next_seq(), Ordering::Release);
        let c = counts.clone();
        std::thread::Builder::new()
            .name("outrigger-log".into())
            .spawn(move || run(log, &rx, &c))?;
        Ok(Committer { tx, counts })
    }

    /// Hands `payload` to the log; the answer comes once it is durable, or could not be.
    pub fn commit(&self, payload: Bytes) -> impl Future<Output = Committed> + use<> {
        let (done, answer) = oneshot::channel();
        let sent = self.tx.send(Job { payload, done });
        async move {
            if sent.is_err() {
                return Err(Arc::new(io::Error::other(
                    "the disk buffer's writer has stopped",
                )));
            }
            answer.await.unwrap_or_else(|_| {
                Err(Arc::new(io::Error::other(
                    "the disk buffer's writer stopped before answering",
                )))
            })
        }
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

/// The writer thread: takes what is waiting (at least one job, at most [`GROUP_BYTES`]),
/// appends it as one group, answers every job in it, and again, until every sender is gone.
fn run(mut log: Log, rx: &Receiver<Job>, counts: &Counts) {
    let mut group: Vec<Job> = Vec::new();
    // A payload no record can hold is answered at once, and goes in no group.
    let admit = |job: Job, group: &mut Vec<Job>| {
        if job.payload.len() > record::MAX_PAYLOAD {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} bytes is more than a disk buffer record holds",
                    job.payload.len()
                ),
            );
            let _ = job.done.send(Err(Arc::new(e)));
            return 0;
        }
        let n = job.payload.len();
        group.push(job);
        n
    };
    while let Ok(first) = rx.recv() {
        let mut bytes = admit(first, &mut group);
        while bytes < GROUP_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            bytes += admit(next, &mut group);
        }
        if group.is_empty() {
            continue;
        }
        let payloads: Vec<&[u8]> = group.iter().map(|j| &j.payload[..]).collect();
        let before = log.stats().syncs;
        let result = log.append(&payloads);
        counts
            .syncs
            .fetch_add(log.stats().syncs - before, Ordering::Relaxed);
        match result {
            Ok(first) => {
                counts
                    .durable
                    .store(first + group.len() as u64, Ordering::Release);
                counts.groups.fetch_add(1, Ordering::Relaxed);
                counts
                    .records
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                for (i, job) in group.drain(..).enumerate() {
                    // A source that stopped waiting (its connection closed) needs no answer.
                    let _ = job.done.send(Ok(first + i as u64));
                }
            }
            Err(e) => {
                counts
                    .failed
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                let e = Arc::new(e);
                for job in group.drain(..) {
                    let _ = job.done.send(Err(e.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::disk::log::Options;
    use crate::buffer::disk::segment::{self, Reader, Step};

    fn options() -> Options {
        Options {
            segment_bytes: 1 << 20,
            max_bytes: 64 << 20,
        }
    }

    #[test]
    fn what_waits_while_a_group_is_written_goes_in_one_group() {
        // Every job is in the channel before the thread looks: one group, one sync.
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), options()).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut answers = Vec::new();
        for i in 0..100 {
            let (done, answer) = oneshot::channel();
            tx.send(Job {
                payload: Bytes::from(format!("request {i}")),
                done,
            })
            .unwrap();
            answers.push(answer);
        }
        drop(tx);
        let counts = Counts::default();
        run(log, &rx, &counts);
        assert_eq!(counts.syncs.load(Ordering::Relaxed), 1);
        assert_eq!(counts.groups.load(Ordering::Relaxed), 1);
        let seqs: Vec<u64> = answers
            .into_iter()
            .map(|mut a| a.try_recv().unwrap().unwrap())
            .collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_writers_share_syncs_and_every_answer_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), options()).unwrap();
        let committer = Committer::start(log).unwrap();
        // Eight connections, each waiting for its answer before its next request, as a
        // client waiting for acks does.
        let mut tasks = Vec::new();
        for c in 0..8 {
            let committer = committer.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..50 {
                    let p = Bytes::from(format!("connection {c} request {i}"));
                    seqs.push((committer.commit(p).await.unwrap(), c, i));
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let counts = committer.counts();
        let syncs = counts.syncs.load(Ordering::Relaxed);
        assert_eq!(counts.records.load(Ordering::Relaxed), 400);
        // One sync per group (how many groups form depends on how fast this disk syncs; that
        // what waits goes into one group is the test above).
        assert_eq!(syncs, counts.groups.load(Ordering::Relaxed));
        eprintln!("{syncs} syncs for 400 requests from 8 writers");
        drop(committer);
        // Each answered number holds that request, as a start after a kill reads it.
        all.sort();
        let r = segment::recover(dir.path()).unwrap();
        let mut reader = Reader::open(&r.segments[0].path, Some(1)).unwrap();
        for (seq, c, i) in all {
            let Step::Record { seq: s, payload } = reader.step().unwrap() else {
                panic!("record {seq}");
            };
            assert_eq!(
                (s, payload),
                (seq, format!("connection {c} request {i}").as_bytes())
            );
        }
    }

    #[tokio::test]
    async fn a_full_log_answers_with_the_error_and_acks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            segment_bytes: 4 << 10,
            max_bytes: 4 << 10,
        };
        let (log, _) = Log::open(dir.path(), opts).unwrap();
        let committer = Committer::start(log).unwrap();
        let p = Bytes::from(vec![b'x'; 1000]);
        let mut ok = 0;
        let err = loop {
            match committer.commit(p.clone()).await {
                Ok(_) => ok += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(ok, 4);
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(committer.counts().failed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_payload_too_large_for_a_record_is_refused_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), options()).unwrap();
        let committer = Committer::start(log).unwrap();
        let huge = Bytes::from(vec![0u8; record::MAX_PAYLOAD + 1]);
        let err = committer.commit(huge).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            committer.commit(Bytes::from_static(b"next")).await.unwrap(),
            1
        );
    }
}
