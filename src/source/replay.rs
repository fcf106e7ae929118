//! A sink's reader of the disk buffer: the log as a source.
//!
//! With `buffer.type = "disk"` the sources put what they accept into the log and nowhere
//! else; each sink has one of these, which reads the log from the sink's cursor in order,
//! decodes each record as its source would have (or, keeping up, takes the batch the source
//! decoded, from [`Recent`]), runs it through the pipeline (one
//! [`Stage`] per stream, so split lines and stack traces join as they arrived) and queues what
//! the sink's patterns match. A start after a crash is nothing special: the reader begins at
//! the cursor, which is before everything the sink had not finished with.
//!
//! What it holds is bounded: one chunk of records read at a time, the stages' held lines,
//! and the sink's queue, which it waits on when full. A sink that is behind (its backend down
//! for an hour) costs disk, not memory; the sources go on acknowledging while the log has
//! room.
//!
//! The reader also says how far the sink has got ([`Progress`]): the first record it has not
//! read, or the oldest whose pieces a stage still holds; each queued batch carries a mark of
//! the record it came from. Held pieces are traced to records by time: a stage says when the
//! oldest thing it holds began ([`Stage::held_since`]), and the reader keeps, per stream, when
//! it began each record since the stage last held nothing.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::buffer::Route;
use crate::buffer::disk::commit::Counts;
use crate::buffer::disk::payload::{Kind, Payload};
use crate::buffer::disk::progress::Progress;
use crate::buffer::disk::recent::Recent;
use crate::buffer::disk::tail::Tail;
use crate::event::Batch;
use crate::pipeline::{self, Release, Stage};
use crate::shutdown::Shutdown;
use crate::source::file;
use crate::source::forward::decode::{self, Skipped};
use crate::source::held::Held;
use crate::telemetry::logging::RateLimit;

/// The most record bytes read from disk in one go (off the runtime's threads).
const CHUNK_BYTES: usize = 1 << 20;

/// At most this many records behind the frontier, the reader reads them on its own thread.
const INLINE_RECORDS: u64 = 16;

/// How often held lines are checked for being due while records keep coming.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// A stream with nothing held and no record for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// How one source's records are read back.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub decode: decode::Options,
    /// Parsing and enrichment, when on.
    pub enrich: Option<(Arc<pipeline::Settings>, pipeline::Metrics)>,
}

/// One sink's reader.
pub struct Replay {
    pub sink: String,
    /// The log's directory.
    pub dir: PathBuf,
    pub counts: Arc<Counts>,
    pub progress: Arc<Progress>,
    /// Where the record to read first is (the sink's cursor).
    pub from: u64,
    /// The first record this start wrote: streams before it ended with the last start (their
    /// connections are gone), so their held lines go on once the reader gets here.
    pub boot: u64,
    /// The latest records as their source decoded them, and this reader's place among
    /// their readers.
    pub recent: Arc<Recent>,
    pub index: usize,
    pub route: Route,
    /// By source name; a record of a source no longer configured is read with the defaults.
    pub sources: HashMap<Bytes, Spec>,
}

/// One stream's stage, and what ties its held lines to records.
struct Stream {
    stage: Stage,
    held: Held,
    last: Instant,
    /// A file's lines, which go on after a restart (its stream number is the file's, not
    /// the start's): what it holds waits for them.
    resumes: bool,
}

/// Whose input has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The earlier starts' connections (at this start's first record).
    Connections,
    /// Everyone's (the reader is stopping).
    All,
}

impl Stream {
    /// The oldest record whose pieces the stage may still hold.
    fn pin(&self) -> Option<u64> {
        self.held.pin()
    }

    /// After the stage took record `seq` (begun at `at`, or `None` after a release): drops
    /// what it no longer holds pieces of.
    fn note(&mut self, record: Option<(Instant, u64)>) {
        self.held.note(&self.stage, record);
    }
}

impl Replay {
    /// Reads until `finish` turns true and the reader is at the durable frontier; then lets
    /// go of what the stages hold and returns, closing the sink's queue.
    pub async fn run(self, mut finish: Shutdown) {
        let Replay {
            sink,
            dir,
            counts,
            progress,
            from,
            boot,
            recent,
            index,
            route,
            sources,
        } = self;
        let mut reader = Reader {
            recent,
            index,
            sink,
            progress,
            route,
            sources,
            default: Spec::default(),
            streams: HashMap::new(),
            pins: BTreeSet::new(),
            next: from,
            warn: RateLimit::new(5),
        };
        let mut tail = Some(Tail::new(&dir, from));
        let mut finishing = false;
        let mut swept = Instant::now();
        loop {
            let moved = counts.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let durable = counts.durable.load(Ordering::Acquire);
            let at = tail.as_ref().map_or(durable, Tail::position);
            if at < durable {
                let t = tail.take().expect("there");
                // A reader keeping up reads what was just written, from the page cache: a
                // copy, cheaper than the hand-off to a blocking thread and back (which costs
                // more than the read when requests come one ack at a time). A backlog is read
                // off the runtime's threads.
                let (t, records) = if durable - at <= INLINE_RECORDS {
                    chunk(t, durable)
                } else {
                    let read = tokio::task::spawn_blocking(move || chunk(t, durable)).await;
                    let Ok(read) = read else {
                        return;
                    };
                    read
                };
                tail = Some(t);
                match records {
                    Ok(records) => {
                        for (seq, bytes) in records {
                            if seq == boot && reader.flush(Ended::Connections).await.is_err() {
                                return;
                            }
                            if reader.record(seq, bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(suppressed) = reader.warn.allow() {
                            tracing::error!(sink = %reader.sink, error = %e, suppressed, "disk buffer: reading the log failed; trying again");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                if swept.elapsed() >= SWEEP_EVERY {
                    swept = Instant::now();
                    if reader.sweep().await.is_err() {
                        return;
                    }
                }
                continue;
            }
            if reader.next < boot
                && durable >= boot
                && reader.flush(Ended::Connections).await.is_err()
            {
                return;
            }
            if finishing {
                break;
            }
            let due = reader.next_due();
            let due = async move {
                match due {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = moved => {}
                _ = due => {
                    swept = Instant::now();
                    if reader.sweep().await.is_err() {
                        return;
                    }
                }
                _ = finish.started() => finishing = true,
                // The writer wakes us; this only bounds a missed wake.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let _ = reader.flush(Ended::All).await;
    }
}

/// Reads records below `durable` from `tail`, up to [`CHUNK_BYTES`] of them.
fn chunk(mut tail: Tail, durable: u64) -> (Tail, std::io::Result<Vec<(u64, Bytes)>>) {
    let mut out = Vec::new();
    let mut bytes = 0;
    let result = loop {
        match tail.next(durable) {
            Ok(Some((seq, payload))) => {
                bytes += payload.len();
                out.push((seq, payload));
                if bytes >= CHUNK_BYTES {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // What was read before an error still goes on; the error is for the next attempt.
    match result {
        Err(e) if out.is_empty() => (tail, Err(e)),
        _ => (tail, Ok(out)),
    }
}

/// The sink's queue is closed: the sink is gone.
struct Gone;

struct Reader {
    recent: Arc<Recent>,
    index: usize,
    sink: String,
    progress: Arc<Progress>,
    route: Route,
    sources: HashMap<Bytes, Spec>,
    /// For a record of a source no longer configured.
    default: Spec,
    streams: HashMap<u64, Stream>,
    /// Each stream's pin, to find the oldest: (record, stream).
    pins: BTreeSet<(u64, u64)>,
    /// The first record not read.
    next: u64,
    warn: RateLimit,
}

impl Reader {
    /// Decodes record `seq`, runs it through its stream's stage, and queues what the sink
    /// takes of it.
    async fn record(&mut self, seq: u64, bytes: Bytes) -> Result<(), Gone> {
        self.next = seq + 1;
        let payload = match Payload::decode(&bytes) {
            Ok(p) => p,
            Err(e) => {
                if let Some(suppressed) = self.warn.allow() {
                    tracing::error!(sink = %self.sink, record = seq, error = %e, suppressed, "disk buffer record cannot be read; skipped");
                }
                self.publish();
                return Ok(());
            }
        };
        let spec = self.sources.get(&payload.source).unwrap_or(&self.default);
        let id = payload.stream;
        let now = Instant::now();
        let stream = self.streams.entry(id).or_insert_with(|| Stream {
            stage: Stage::new(spec.enrich.as_ref(), payload.fields.clone()),
            held: Held::default(),
            last: now,
            resumes: payload.kind == Kind::File,
        });
        stream.last = now;
        if payload.kind == Kind::File
            && let Ok((head, _)) = file::record::head(&payload.body)
        {
            // Joined into stack traces as the file's pod asked when its lines were read.
            stream.stage.set_multiline(head.multiline);
        }
        // Decoded already, as the source did, when it is still in memory.
        let mut batch = match self.recent.take(self.index, seq) {
            Some(b) => b,
            None => {
                let mut batch = stream.stage.batch(bytes.len());
                batch.received = payload.received;
                let mut skipped = Skipped::default();
                match payload.kind {
                    Kind::Forward => {
                        decode::requests(&payload.body, &mut batch, &spec.decode, &mut skipped)
                    }
                    Kind::File => {
                        if let Err(e) = file::record::events(&payload.body, &mut batch)
                            && let Some(suppressed) = self.warn.allow()
                        {
                            tracing::error!(sink = %self.sink, record = seq, error = %e, suppressed, "disk buffer record cannot be read; skipped");
                        }
                    }
                }
                batch
            }
        };
        // The oldest record this batch may hold pieces of.
        let pinned = stream.pin();
        stream.stage.process(&mut batch);
        stream.note(Some((now, seq)));
        self.repin(id, pinned);
        let oldest = pinned.unwrap_or(seq);
        self.send(batch, oldest).await?;
        self.publish();
        Ok(())
    }

    /// Queues `batch` for the sink, marked as holding events of record `oldest` on.
    async fn send(&mut self, mut batch: Batch, oldest: u64) -> Result<(), Gone> {
        let Some((selection, events)) = self.route.select(&batch) else {
            return Ok(());
        };
        batch.size += batch.footprint();
        let mark = self.progress.mark(oldest, batch.received.secs);
        self.route
            .queue
            .push_marked(Arc::new(batch), selection, events, Some(mark))
            .await
            .map_err(|_| Gone)
    }

    /// Lets go of what stream `id`'s stage holds for `why`, and queues it.
    async fn release(&mut self, id: u64, why: Release) -> Result<(), Gone> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        let Some(oldest) = stream.pin() else {
            return Ok(());
        };
        let batch = stream.stage.release(why);
        stream.note(None);
        self.repin(id, Some(oldest));
        if let Some(batch) = batch {
            self.send(batch, oldest).await?;
        }
        self.publish();
        Ok(())
    }

    /// Lets go of everything the streams whose input `ended` hold, and forgets them.
    async fn flush(&mut self, ended: Ended) -> Result<(), Gone> {
        let ids: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| ended == Ended::All || !s.resumes)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.release(id, Release::Flush).await?;
            self.streams.remove(&id);
        }
        Ok(())
    }

    /// Releases what is due in every stream, and forgets streams long idle.
    async fn sweep(&mut self) -> Result<(), Gone> {
        let now = Instant::now();
        let due: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.stage.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.release(id, Release::Due).await?;
        }
        self.streams
            .retain(|_, s| s.pin().is_some() || now.duration_since(s.last) < FORGET_AFTER);
        Ok(())
    }

    fn next_due(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|s| s.stage.deadline())
            .min()
    }

    /// Keeps `pins` in step with stream `id`'s pin, which was `before`.
    fn repin(&mut self, id: u64, before: Option<u64>) {
        let now = self.streams.get(&id).and_then(Stream::pin);
        if now != before {
            if let Some(b) = before {
                self.pins.remove(&(b, id));
            }
            if let Some(n) = now {
                self.pins.insert((n, id));
            }
        }
    }

    /// Tells the sink's progress the first record still needed on the reader's side.
    fn publish(&self) {
        let held = self.pins.first().map_or(self.next, |(seq, _)| *seq);
        self.progress.set_floor(self.next.min(held));
    }
}
