//! The disk buffer as the topology runs it: opened at the start ([`open`]), each sink's
//! cursor kept in step with its progress ([`Keeper`]); and `outrigger buffer dump`, the
//! records as the events they hold. Here, not in [`crate::buffer::disk`], because the buffer
//! knows no source (reading a record's events takes its source's decoder) and no metrics.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;

use crate::buffer::disk::commit::{Committer, Counts, Fsync};
use crate::buffer::disk::cursor::Cursor;
use crate::buffer::disk::log::{Log, Options as LogOptions};
use crate::buffer::disk::payload::{Kind, Payload};
use crate::buffer::disk::progress::Progress;
use crate::buffer::disk::recent::Recent;
use crate::buffer::disk::segment::{self, Reader, Step};
use crate::config::buffer::{Buffer, FsyncMode};
use crate::event::Batch;
use crate::shutdown::Shutdown;
use crate::sink::jsonl::{self, Shape, TimeCache};
use crate::source::forward::decode::{self, Options, Skipped};
use crate::telemetry::metrics::BufferMetrics;

/// How often cursors are moved up to their sinks' progress (each move is a few syncs). What
/// a sink delivered in the last interval before a crash is sent again after it.
pub const CURSOR_EVERY: Duration = Duration::from_millis(250);

/// The disk buffer, open.
pub struct Disk {
    pub dir: PathBuf,
    pub committer: Committer,
    /// The log's next record number at this start.
    pub boot: u64,
    /// Each sink's cursor and progress, in the configuration's order.
    pub sinks: Vec<(String, Cursor, Arc<Progress>)>,
    /// The latest records as decoded, for the readers.
    pub recent: Arc<Recent>,
}

/// Opens the log in `data_dir/buffer` (recovering it after a crash), starts its writer and
/// reads each sink's cursor.
///
/// # Errors
/// The directory cannot be made, read or written, or a segment cannot be repaired.
pub fn open(
    data_dir: &Path,
    buffer: &Buffer,
    sinks: &[&str],
    metrics: &BufferMetrics,
) -> anyhow::Result<Disk> {
    let dir = data_dir.join(crate::buffer::disk::DIR);
    let options = LogOptions {
        segment_bytes: buffer.segment_bytes(),
        max_bytes: buffer.max_bytes,
    };
    let (log, recovered) = Log::open(&dir, options).with_context(|| {
        format!(
            "global.data_dir: opening the disk buffer in {} (it must be writable by this user)",
            dir.display()
        )
    })?;
    if let Some((at, damage)) = &recovered.cut {
        metrics
            .damaged
            .get_or_create(&crate::telemetry::metrics::Reason { reason: "cut" })
            .inc();
        tracing::warn!(
            at_byte = at,
            damage = damage.as_str(),
            "disk buffer: the newest segment ended in a torn or damaged record; cut there (nothing after it was acknowledged)"
        );
    }
    for q in &recovered.quarantined {
        metrics
            .damaged
            .get_or_create(&crate::telemetry::metrics::Reason {
                reason: "quarantined",
            })
            .inc();
        metrics.lost_records.inc_by(q.lost);
        let copy = q.copy.as_ref().map(|c| c.display().to_string());
        tracing::error!(copy = ?copy, damage = q.damage.as_str(), lost_records = q.lost, "disk buffer: an older segment is damaged; its records up to the damage are sent, those after it in that segment are lost");
    }
    let boot = log.next_seq();
    let oldest = log.oldest_seq();
    tracing::info!(dir = %dir.display(), segments = log.segments(), records = boot - oldest, bytes = log.bytes(), "disk buffer opened");
    metrics.max_bytes.set(buffer.max_bytes as i64);
    let fsync = match buffer.fsync {
        FsyncMode::Always => Fsync::Always,
        FsyncMode::Interval => Fsync::Interval(Duration::from_millis(buffer.interval_ms)),
        FsyncMode::Never => Fsync::Never,
    };
    let recent = Arc::new(Recent::new(
        usize::try_from(buffer.recent_bytes).unwrap_or(usize::MAX),
        sinks.len(),
    ));
    let committer = Committer::start_with(
        log,
        fsync,
        metrics.sync_seconds.clone(),
        Some(recent.clone()),
    )
    .context("starting the disk buffer's writer")?;
    let mut places = Vec::new();
    for name in sinks {
        let cursor = Cursor::open(&dir, name)
            .with_context(|| format!("sinks.{name}: reading its disk buffer cursor"))?;
        let progress = Progress::new(cursor.seq().max(oldest));
        places.push((name.to_string(), cursor, progress));
    }
    Ok(Disk {
        dir,
        committer,
        boot,
        sinks: places,
        recent,
    })
}

/// Moves each sink's cursor up to its progress, then trims what every cursor (and every
/// source that keeps records, [`crate::source::Log::keeps`]) is past, and copies the
/// writer's numbers to the metrics.
pub struct Keeper {
    pub committer: Committer,
    pub cursors: Vec<Cursor>,
    pub progress: Vec<Arc<Progress>>,
    /// The first record each source still needs kept.
    pub keeps: Vec<Arc<std::sync::atomic::AtomicU64>>,
    /// Each sink's records not finished with, and the age of the oldest it read.
    pub unsent: Vec<(Gauge, Gauge)>,
    pub metrics: BufferMetrics,
    /// What the writer's counts said at the last step, for the counters' increments.
    last: (u64, u64),
}

impl Keeper {
    pub fn new(
        committer: Committer,
        places: Vec<(Cursor, Arc<Progress>, (Gauge, Gauge))>,
        keeps: Vec<Arc<std::sync::atomic::AtomicU64>>,
        metrics: BufferMetrics,
    ) -> Keeper {
        let mut k = Keeper {
            committer,
            cursors: Vec::new(),
            progress: Vec::new(),
            keeps,
            unsent: Vec::new(),
            metrics,
            last: (0, 0),
        };
        for (c, p, g) in places {
            k.cursors.push(c);
            k.progress.push(p);
            k.unsent.push(g);
        }
        k
    }

    /// Steps every [`CURSOR_EVERY`] until `stop`, then once more.
    pub async fn run(mut self, mut stop: Shutdown) -> Keeper {
        loop {
            tokio::select! {
                () = tokio::time::sleep(CURSOR_EVERY) => {}
                () = stop.started() => break,
            }
            self.step().await;
        }
        self.step().await;
        self
    }

    /// One round: cursors synced first, then the trim that relies on them.
    pub async fn step(&mut self) {
        let done: Vec<u64> = self.progress.iter().map(|p| p.done()).collect();
        let mut cursors = std::mem::take(&mut self.cursors);
        let moved = tokio::task::spawn_blocking(move || {
            let mut result = Ok(());
            for (c, d) in cursors.iter_mut().zip(&done) {
                if *d > c.seq()
                    && let Err(e) = c.advance(*d)
                {
                    result = Err(e);
                }
            }
            (cursors, result)
        })
        .await;
        let Ok((cursors, result)) = moved else {
            return;
        };
        self.cursors = cursors;
        match result {
            Ok(()) => {
                // What sources keep gives way once the log cannot take more: a file source
                // whose checkpoints cannot be saved (or not while it waits on the full log)
                // then reads some lines again after a crash, and nothing waits on it forever.
                let full = self.committer.counts().failing.lock().unwrap().is_some();
                let kept = self
                    .keeps
                    .iter()
                    .map(|k| k.load(Ordering::Acquire))
                    .filter(|_| !full);
                if let Some(low) = self.cursors.iter().map(Cursor::seq).chain(kept).min() {
                    self.committer.trim(low);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "disk buffer: saving a sink's cursor failed; nothing is deleted until it is saved")
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        let c: &Counts = self.committer.counts();
        let durable = c.durable.load(Ordering::Acquire);
        let m = &self.metrics;
        m.bytes.set(c.bytes.load(Ordering::Relaxed) as i64);
        m.segments.set(c.segments.load(Ordering::Relaxed) as i64);
        m.records
            .set(durable.saturating_sub(c.oldest.load(Ordering::Relaxed)) as i64);
        let now = (
            c.syncs.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
        m.syncs.inc_by(now.0 - self.last.0);
        m.write_errors.inc_by(now.1 - self.last.1);
        self.last = now;
        let now = crate::event::Timestamp::now().secs;
        for ((records, oldest), p) in self.unsent.iter().zip(&self.progress) {
            records.set(durable.saturating_sub(p.done()) as i64);
            oldest.set(p.oldest_received().map_or(0, |at| (now - at).max(0)));
        }
    }

    /// Records each sink has not finished with, by cursor: what the next start sends.
    pub fn left(&self) -> Vec<u64> {
        let durable = self.committer.counts().durable.load(Ordering::Acquire);
        self.cursors
            .iter()
            .map(|c| durable.saturating_sub(c.seq()))
            .collect()
    }
}

/// What a dump went through.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dumped {
    pub records: u64,
    pub events: u64,
    /// Records whose payload this version cannot read, and entries their decoder skipped.
    pub unreadable: u64,
}

/// Writes every event of every record the log in `dir` keeps to `out`, one JSON object per
/// line as the `stdout` sink writes them (before enrichment: what the sources accepted).
/// Reads only; damage ends a segment's records as a start would end them.
///
/// # Errors
/// The log cannot be read, or `out` written.
pub fn dump(dir: &Path, out: &mut impl Write) -> io::Result<Dumped> {
    let mut done = Dumped::default();
    let (mut line, mut times, shape) = (Vec::new(), TimeCache::default(), Shape::default());
    for f in segment::inspect(dir)? {
        let mut reader = Reader::open(&f.path, Some(f.first_seq))?;
        while let Step::Record { seq, payload } = reader.step()? {
            if seq >= f.next_seq {
                break;
            }
            done.records += 1;
            let bytes = Bytes::copy_from_slice(payload);
            let Ok(p) = Payload::decode(&bytes) else {
                done.unreadable += 1;
                continue;
            };
            let mut batch = Batch {
                fields: p.fields,
                received: p.received,
                ..Default::default()
            };
            let mut skipped = Skipped::default();
            match p.kind {
                Kind::Forward => {
                    decode::requests(&p.body, &mut batch, &Options::default(), &mut skipped)
                }
                Kind::File => {
                    if crate::source::file::record::events(&p.body, &mut batch).is_err() {
                        done.unreadable += 1;
                    }
                }
            }
            done.unreadable += skipped.total();
            for e in &batch.events {
                line.clear();
                if jsonl::event(&mut line, &mut times, &batch, e, &shape).is_ok() {
                    line.push(b'\n');
                    out.write_all(&line)?;
                    done.events += 1;
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::disk::log::{Log, Options as LogOptions};
    use crate::event::Timestamp;

    #[tokio::test]
    async fn records_a_source_still_keeps_are_not_trimmed_though_every_sink_is_past_them() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 64 << 10,
            max_bytes: 1 << 30,
        };
        let (log, _) = Log::open(dir.path(), options).unwrap();
        let committer = Committer::start(log, Fsync::Never).unwrap();
        let mut last = 0;
        for _ in 0..300 {
            last = committer
                .commit(Bytes::from(vec![7u8; 1000]))
                .await
                .unwrap();
        }
        let progress = Progress::new(0);
        progress.set_floor(last + 1);
        let cursor = Cursor::open(dir.path(), "out").unwrap();
        let keeps = Arc::new(std::sync::atomic::AtomicU64::new(100));
        let places = vec![(cursor, progress, (Gauge::default(), Gauge::default()))];
        let mut keeper = Keeper::new(
            committer.clone(),
            places,
            vec![keeps.clone()],
            BufferMetrics::default(),
        );
        let oldest_after = |keeper: &Keeper| {
            let counts = keeper.committer.counts().clone();
            async move {
                // The trim runs on the writer's thread.
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if counts.segments.load(Ordering::Relaxed) <= 1 {
                        break;
                    }
                }
                counts.oldest.load(Ordering::Relaxed)
            }
        };
        keeper.step().await;
        let kept = oldest_after(&keeper).await;
        assert!(kept > 1 && kept <= 100, "trimmed to the source's {kept}");
        // A full log: what the source keeps gives way (it may read some lines again after
        // a crash; nothing waits on it forever).
        *committer.counts().failing.lock().unwrap() = Some("full".into());
        keeper.step().await;
        let kept = oldest_after(&keeper).await;
        assert!(kept > 100, "then to the sink's cursor: {kept}");
    }

    #[test]
    fn a_dump_prints_each_records_events_with_their_stream_fields() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
        };
        let (mut log, _) = Log::open(dir.path(), options).unwrap();
        // Two Message-mode requests in one read: ["app", 1700000000, {"log": "..."}].
        let mut body = Vec::new();
        for text in ["first", "second"] {
            rmp::encode::write_array_len(&mut body, 3).unwrap();
            rmp::encode::write_str(&mut body, "app").unwrap();
            rmp::encode::write_uint(&mut body, 1_700_000_000).unwrap();
            rmp::encode::write_map_len(&mut body, 1).unwrap();
            rmp::encode::write_str(&mut body, "log").unwrap();
            rmp::encode::write_str(&mut body, text).unwrap();
        }
        let payload = Payload {
            kind: Kind::Forward,
            stream: 1,
            received: Timestamp::default(),
            source: Bytes::from_static(b"in"),
            fields: Arc::from([(Bytes::from_static(b"peer"), Bytes::from_static(b"10.0.0.9"))]),
            body: Bytes::from(body),
        };
        let mut bytes = Vec::new();
        payload.encode(&mut bytes);
        log.append(&[&bytes, b"\x09not a payload"], true).unwrap();
        drop(log);
        let mut out = Vec::new();
        let done = dump(dir.path(), &mut out).unwrap();
        assert_eq!(
            done,
            Dumped {
                records: 2,
                events: 2,
                unreadable: 1
            }
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["tag"], "app");
        assert_eq!(lines[1]["record"]["log"], "second");
        assert_eq!(lines[0]["record"]["peer"], "10.0.0.9");
    }
}
