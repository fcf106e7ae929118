//! Group commit: one thread writes the log, and every request that arrived while it was
//! syncing the last group goes into the next one, so many connections cost about one
//! `fdatasync` per group, not one per request.
//!
//! Sources hand a payload over with [`Committer::commit`] and await the answer before they
//! acknowledge: the record's number once it is durable, or why it is not (then they must
//! not acknowledge). Blocking file I/O stays on this thread, off the async runtime; the
//! hand-off is a `crossbeam-channel`, the answer a oneshot.
//!
//! How much "durable" means is the configuration's ([`Fsync`]): synced before the answer
//! (the default), synced on a timer after it, or left to the kernel.
//!
//! The same thread deletes the segments every sink is past ([`Committer::trim`]): the log
//! has one writer.
//!
//! The thread ends when every [`Committer`] is gone, after writing what was handed over.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{Notify, oneshot};

use super::log::Log;
use super::recent::Recent;
use super::record;
use crate::event::Batch;

/// The most payload bytes one group gathers before it is written: a bound on the write
/// (and on the memory a group holds), far above what a sync's worth of requests usually is.
pub const GROUP_BYTES: usize = 8 << 20;

/// The largest payload one record may hold in a log of `max_bytes` (`buffer.max_bytes`):
/// one group's worth (at most half the log, so a group always fits once the sinks are past
/// what the log holds), less the record's framing. A larger one is refused at once.
pub fn largest_payload(max_bytes: u64) -> usize {
    let group = usize::try_from(max_bytes / 2).unwrap_or(usize::MAX);
    GROUP_BYTES.min(group).min(record::MAX_PAYLOAD) - record::HEADER
}

/// The longest a group waits for writers that are likely to come (see [`run`]): below a
/// sync's time, so a group costs at most about two syncs' time.
pub const GROUP_WAIT: Duration = Duration::from_micros(200);

/// A commit's answer: the record's number, or the error that kept it from being durable.
pub type Committed = Result<u64, Arc<io::Error>>;

/// When a group is synced (`buffer.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before its requests are answered: an acknowledgement means the data is on disk.
    Always,
    /// At most this long after it was written, answered once written: a crash of the
    /// machine (not of the process) may lose what was acknowledged in that time.
    Interval(Duration),
    /// Never by us; the kernel writes back when it will.
    Never,
}

// Nearly every job is a commit, moved once through the channel: boxing it would cost an
// allocation per request to save the rare trim some bytes.
#[allow(clippy::large_enum_variant)]
enum Job {
    Commit {
        /// The record's payload, in parts written one after another.
        payload: [Bytes; 2],
        /// The payload's events as the source decoded them, for [`Recent`].
        batch: Option<Batch>,
        done: oneshot::Sender<Committed>,
    },
    /// Delete the segments wholly before this record.
    Trim(u64),
}

/// What the thread has done, for metrics and tests.
#[derive(Debug)]
pub struct Counts {
    /// The number after the last durable record: readers read only below it (a record
    /// above may still be rewritten after a failed sync).
    pub durable: AtomicU64,
    /// Woken whenever `durable` moves, for readers waiting at the frontier.
    pub moved: Notify,
    pub groups: AtomicU64,
    pub records: AtomicU64,
    pub syncs: AtomicU64,
    /// How long each sync took, in seconds.
    pub sync_seconds: Histogram,
    pub failed: AtomicU64,
    /// The log's size on disk (segments as allocated), and its segments.
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    /// The oldest record the log keeps.
    pub oldest: AtomicU64,
    /// Why the last group could not be written, until one is: for readiness.
    pub failing: std::sync::Mutex<Option<String>>,
}

impl Default for Counts {
    fn default() -> Counts {
        Counts::new(sync_histogram())
    }
}

/// Buckets for sync times: 50 µs to about 0.8 s.
pub fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

impl Counts {
    /// Counts that observe each sync's time into `sync_seconds` (a metric's histogram).
    pub fn new(sync_seconds: Histogram) -> Counts {
        Counts {
            durable: AtomicU64::new(0),
            moved: Notify::new(),
            groups: AtomicU64::new(0),
            records: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_seconds,
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            oldest: AtomicU64::new(0),
            failing: std::sync::Mutex::new(None),
        }
    }

    fn publish(&self, log: &Log) {
        self.bytes.store(log.bytes(), Ordering::Relaxed);
        self.segments
            .store(log.segments() as u64, Ordering::Relaxed);
        self.oldest.store(log.oldest_seq(), Ordering::Relaxed);
    }
}

/// A handle on the log's writer thread; clone it for each source.
#[derive(Clone)]
pub struct Committer {
    tx: Sender<Job>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the writer thread over `log`.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(log: Log, fsync: Fsync) -> io::Result<Committer> {
        Committer::start_with(log, fsync, sync_histogram(), None)
    }

    /// [`Committer::start`], observing each sync's time into `sync_seconds`.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start_with(
        log: Log,
        fsync: Fsync,
        sync_seconds: Histogram,
        recent: Option<Arc<Recent>>,
    ) -> io::Result<Committer> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let counts = Arc::new(Counts::new(sync_seconds));
        counts.durable.store(log.next_seq(), Ordering::Release);
        counts.publish(&log);
        let c = counts.clone();
        std::thread::Builder::new()
            .name("outrigger-log".into())
            .spawn(move || run(log, fsync, &rx, &c, recent.as_deref()))?;
        Ok(Committer { tx, counts })
    }

    /// Hands `payload` to the log; the answer comes once it is durable, or could not be.
    pub fn commit(&self, payload: Bytes) -> impl Future<Output = Committed> + use<> {
        self.commit_decoded([payload, Bytes::new()], None)
    }

    /// [`Committer::commit`] of a payload in two parts (a header and a body as received, so
    /// the body is written from where it is), with its events as the source decoded them
    /// (before enrichment), which the readers that keep up take instead of decoding it again.
    pub fn commit_decoded(
        &self,
        payload: [Bytes; 2],
        batch: Option<Batch>,
    ) -> impl Future<Output = Committed> + use<> {
        let (done, answer) = oneshot::channel();
        let sent = self.tx.send(Job::Commit {
            payload,
            batch,
            done,
        });
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

    /// Deletes, on the writer thread, the segments wholly before record `seq`: the caller
    /// has synced every sink's cursor to `seq` or past it.
    pub fn trim(&self, seq: u64) {
        let _ = self.tx.send(Job::Trim(seq));
    }

    pub fn counts(&self) -> &Arc<Counts> {
        &self.counts
    }
}

/// The writer thread: takes what is waiting (at least one job, at most [`GROUP_BYTES`]),
/// appends it as one group, answers every job in it, and again, until every sender is gone.
fn run(mut log: Log, fsync: Fsync, rx: &Receiver<Job>, counts: &Counts, recent: Option<&Recent>) {
    let mut group: Vec<Pending> = Vec::new();
    // Written since the last sync, under `Fsync::Interval`.
    let mut unsynced: Option<Instant> = None;
    let group_bytes = largest_payload(log.max_bytes()) + record::HEADER;
    // A job that did not fit the last group: the first of the next.
    let mut carry: Option<Job> = None;
    // Jobs in the last group: as many writers as that are likely to come back at once.
    let mut last_jobs = 0usize;
    loop {
        let first = match (carry.take(), fsync, unsynced) {
            (Some(job), _, _) => job,
            (None, Fsync::Interval(every), Some(since)) => {
                match rx.recv_timeout(every.saturating_sub(since.elapsed())) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        sync(&mut log, counts);
                        unsynced = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            (None, _, _) => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let mut bytes = 0;
        let mut trim = None;
        let mut next = Some(first);
        // Writers that each wait for their answer (a client waiting for every ack) come back
        // one after another once a sync answers them: a group made of the first to come
        // would sync again for each of the others. So, while the last group had several, this
        // one waits a little for as many, at most GROUP_WAIT.
        let wait_until =
            (fsync == Fsync::Always && last_jobs > 1).then(|| Instant::now() + GROUP_WAIT);
        while let Some(job) = next.take() {
            // A group stays within what one segment can be made for.
            if let Job::Commit { payload, .. } = &job
                && !group.is_empty()
                && bytes + size(payload) + record::HEADER > group_bytes
            {
                carry = Some(job);
                break;
            }
            match job {
                Job::Trim(seq) => trim = trim.max(Some(seq)),
                Job::Commit {
                    payload,
                    batch,
                    done,
                } => {
                    if size(&payload) + record::HEADER > group_bytes {
                        // No record the log can hold: answered at once, in no group.
                        let e = io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "{} bytes is more than one disk buffer record may hold ({group_bytes}); raise buffer.max_bytes",
                                size(&payload)
                            ),
                        );
                        let _ = done.send(Err(Arc::new(e)));
                    } else {
                        bytes += size(&payload) + record::HEADER;
                        group.push((payload, batch, done));
                    }
                }
            }
            if bytes < group_bytes {
                next = rx.try_recv().ok();
                if next.is_none()
                    && group.len() < last_jobs
                    && let Some(until) = wait_until
                {
                    let left = until.saturating_duration_since(Instant::now());
                    if !left.is_zero() {
                        next = rx.recv_timeout(left).ok();
                    }
                }
            }
        }
        if let Some(seq) = trim {
            match log.trim(seq) {
                Ok(n) if n > 0 => {
                    tracing::debug!(segments = n, before = seq, "disk buffer trimmed")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "disk buffer: deleting delivered segments failed; trying again later")
                }
            }
        }
        if !group.is_empty() {
            last_jobs = group.len();
            append(&mut log, fsync, &mut group, counts, recent);
            if let Fsync::Interval(every) = fsync {
                let since = *unsynced.get_or_insert_with(Instant::now);
                // Groups that keep coming must not put the sync off.
                if since.elapsed() >= every {
                    sync(&mut log, counts);
                    unsynced = None;
                }
            }
        }
        counts.publish(&log);
    }
    if unsynced.is_some() {
        sync(&mut log, counts);
    }
}

/// A job in the group being made: its payload, its decoded batch, its answer.
type Pending = ([Bytes; 2], Option<Batch>, oneshot::Sender<Committed>);

fn size(payload: &[Bytes; 2]) -> usize {
    payload[0].len() + payload[1].len()
}

/// Appends `group` as one group and answers each of its jobs; the batches go to `recent`
/// before the frontier moves past them.
fn append(
    log: &mut Log,
    fsync: Fsync,
    group: &mut Vec<Pending>,
    counts: &Counts,
    recent: Option<&Recent>,
) {
    let parts: Vec<[&[u8]; 2]> = group
        .iter()
        .map(|(p, _, _)| [&p[0][..], &p[1][..]])
        .collect();
    let payloads: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
    let before = log.stats().syncs;
    let started = Instant::now();
    let result = log.append_parts(&payloads, fsync == Fsync::Always);
    let synced = log.stats().syncs - before;
    counts.syncs.fetch_add(synced, Ordering::Relaxed);
    if synced > 0 {
        // The write and the sync: what the answer waited for.
        counts
            .sync_seconds
            .observe(started.elapsed().as_secs_f64() / synced as f64);
    }
    *counts.failing.lock().expect("not poisoned") = result.as_ref().err().map(|e| e.to_string());
    match result {
        Ok(first) => {
            if let Some(recent) = recent {
                for (i, (_, batch, _)) in group.iter_mut().enumerate() {
                    if let Some(b) = batch.take() {
                        recent.put(first + i as u64, b);
                    }
                }
            }
            counts
                .durable
                .store(first + group.len() as u64, Ordering::Release);
            counts.moved.notify_waiters();
            counts.groups.fetch_add(1, Ordering::Relaxed);
            counts
                .records
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            for (i, (_, _, done)) in group.drain(..).enumerate() {
                // A source that stopped waiting (its connection closed) needs no answer.
                let _ = done.send(Ok(first + i as u64));
            }
        }
        Err(e) => {
            counts
                .failed
                .fetch_add(group.len() as u64, Ordering::Relaxed);
            let e = Arc::new(e);
            for (_, _, done) in group.drain(..) {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}

/// The timer's sync under [`Fsync::Interval`]. A failure is only logged: what it covered
/// was already answered, which is what that setting accepts.
fn sync(log: &mut Log, counts: &Counts) {
    let started = Instant::now();
    match log.sync() {
        Ok(()) => {
            counts.syncs.fetch_add(1, Ordering::Relaxed);
            counts.sync_seconds.observe(started.elapsed().as_secs_f64());
        }
        Err(e) => {
            tracing::error!(error = %e, "disk buffer sync failed; data acknowledged in the last interval may not survive a crash of the machine")
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
        let payloads = (0..100).map(|i| Bytes::from(format!("request {i}")));
        let (counts, seqs) = run_waiting(log, payloads);
        assert_eq!(counts.syncs.load(Ordering::Relaxed), 1);
        assert_eq!(counts.groups.load(Ordering::Relaxed), 1);
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    }

    /// Runs the writer over `log` with `payloads` all waiting before it looks, to the end;
    /// returns its counts and the number each payload got.
    fn run_waiting(log: Log, payloads: impl Iterator<Item = Bytes>) -> (Counts, Vec<u64>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut answers = Vec::new();
        for payload in payloads {
            let (done, answer) = oneshot::channel();
            let job = Job::Commit {
                payload: [payload, Bytes::new()],
                batch: None,
                done,
            };
            tx.send(job).unwrap();
            answers.push(answer);
        }
        drop(tx);
        let counts = Counts::default();
        run(log, Fsync::Always, &rx, &counts, None);
        let seqs = answers
            .into_iter()
            .map(|mut a| a.try_recv().unwrap().unwrap())
            .collect();
        (counts, seqs)
    }

    #[test]
    fn a_group_stays_within_what_a_segment_can_be_made_for() {
        // A 512 KiB log takes groups of at most 256 KiB: six 50 KiB payloads waiting at
        // once go in two groups, not one of 300 KiB.
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            segment_bytes: 64 << 10,
            max_bytes: 512 << 10,
        };
        let (log, _) = Log::open(dir.path(), opts).unwrap();
        let payloads = (0..6).map(|_| Bytes::from(vec![b'g'; 50 << 10]));
        let (counts, seqs) = run_waiting(log, payloads);
        assert_eq!(counts.groups.load(Ordering::Relaxed), 2);
        assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_writers_share_syncs_and_every_answer_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), options()).unwrap();
        let committer = Committer::start(log, Fsync::Always).unwrap();
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
    async fn with_an_interval_answers_come_before_syncs_which_steady_writes_do_not_put_off() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = Log::open(dir.path(), options()).unwrap();
        let every = std::time::Duration::from_millis(20);
        let committer = Committer::start(log, Fsync::Interval(every)).unwrap();
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            committer
                .commit(Bytes::from_static(b"steady"))
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let syncs = committer.counts().syncs.load(Ordering::Relaxed);
        // About one sync per interval, however busy: not one per group, not none.
        assert!(
            (4..=15).contains(&syncs),
            "{syncs} syncs for {n} groups in 200 ms"
        );
        assert!(n > 2 * syncs);
    }

    #[tokio::test]
    async fn a_full_log_answers_with_the_error_and_acks_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            segment_bytes: 4 << 10,
            max_bytes: 4 << 10,
        };
        let (log, _) = Log::open(dir.path(), opts).unwrap();
        let committer = Committer::start(log, Fsync::Always).unwrap();
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
        let committer = Committer::start(log, Fsync::Always).unwrap();
        let huge = Bytes::from(vec![0u8; record::MAX_PAYLOAD + 1]);
        let err = committer.commit(huge).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            committer.commit(Bytes::from_static(b"next")).await.unwrap(),
            1
        );
    }
}
