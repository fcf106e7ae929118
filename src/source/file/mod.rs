//! The file source: log files on this machine, tailed (`type = "file"`).
//!
//! Files are found by matching the `include` globs again every `poll_interval_ms` (polling
//! is the source of truth: nothing is missed when events would have overflowed a queue).
//! Each file is read in turns of at most `read_bytes` ([`tail`]), each line becomes an event
//! in its format ([`format`]), and each file's lines go through a [`Stage`] of their own, so
//! split lines join per file and stream as Docker's do per connection.
//!
//! **The files are the buffer.** A file's checkpoint ([`checkpoint`]) moves only past lines
//! every matching sink has finished with (delivered, or dead-lettered or given up on as its
//! retry policy says): each read is numbered, its batches carry a mark of it
//! ([`Router::send_marked`]), and the checkpoint is the end of the last read before the
//! first unfinished one (or before the oldest whose pieces the stage still holds). A crash
//! or `kill -9` therefore loses nothing; what was in flight is read again (a sink may see
//! it twice). Full queues stop the reading, never drop.
//!
//! Rotation: a file renamed away or deleted is read on through its open descriptor for 5 s
//! (`LINGER`: a runtime writes into it until told to reopen), then to its end (a torn last
//! line goes on as it is), and let go once finished; the new file at the path
//! is read from its beginning. A file truncated in place is read again from 0. A file is
//! known by device, inode and a checksum of its first bytes, so a reused inode is a new file.
//! At start, a checkpoint whose file was renamed while Outrigger was down (`0.log` to
//! `0.log.<suffix>` beside it) resumes in the renamed file.
//!
//! At most `max_open_files` are open: beyond it the least recently active idle file is
//! closed, its place kept with the checkpoints, and opened again once it grows.
//!
//! `kubernetes_logs` files (the kubelet's tree) are tagged `kube.<namespace>.<pod>.<container>`
//! and carry their path's names as resource attributes, with their pod's from the API
//! ([`pods`]) when `metadata = "api"`.
//!
//! **With the disk buffer** each read is one record of the log ([`record`]): its lines and
//! the file's offset after them, in the same group commit. A read counts as finished once
//! its record is durable, so the checkpoint is the newest committed offset: a `kill -9`
//! loses nothing (the lines are in the log, and the sinks' readers send them) and reads
//! nothing from its file twice (a start resumes at the offset of the newest record, found in
//! the log after what the checkpoint file holds). A log that cannot take a read (its disk or
//! `max_bytes` full) stops the reading until it can. The pipeline stage then runs in the
//! sinks' readers, one per file as here.

pub mod checkpoint;
pub mod format;
pub mod pods;
pub mod record;
pub mod tail;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;

use crate::buffer::disk::payload::{self, Payload};
use crate::buffer::disk::progress::Progress;
use crate::config::file::{File as Config, Format as ConfigFormat, ReadFrom};
use crate::event::Timestamp;
use crate::pipeline::{self, Release, Stage};
use crate::shutdown::Shutdown;
use crate::source::Output;
use crate::source::held::Held;
use crate::telemetry::SourceMetrics;
use crate::telemetry::logging::RateLimit;
use checkpoint::{Checkpoint, Saved, Store};
use format::Format;
use tail::{Look, Tail};

/// Resource attributes of a batch (see [`crate::event::Batch::resource`]).
type Attributes = Arc<[(Bytes, Bytes)]>;

/// How long a file renamed away or deleted is still read before what it holds is final.
const LINGER: Duration = Duration::from_secs(5);

/// A bound file source, ready to run.
pub struct FileSource {
    name: String,
    cfg: Config,
    output: Output,
    metrics: SourceMetrics,
    enrich: Option<(Arc<pipeline::Settings>, pipeline::Metrics)>,
    store: Store,
    /// What the last run saved, until each is matched to a file.
    saved: Vec<Checkpoint>,
    exclude: Vec<glob::Pattern>,
    warn: RateLimit,
    /// The drain is being cut short: what the sinks drop now was not delivered.
    halted: Arc<AtomicBool>,
    /// Opened at bind, read once it runs.
    files: Vec<Watched>,
    /// Pod metadata from the Kubernetes API (`kubernetes_logs` with `metadata = "api"`).
    pods: Option<Arc<pods::Pods>>,
}

/// One file being read.
struct Watched {
    /// `None` only while a read runs on a blocking thread.
    tail: Option<Tail>,
    /// `Auto` until its first line says which.
    format: Format,
    tag: Bytes,
    stage: Stage,
    held: Held,
    /// Its reads' finishing, by read number (from 1).
    progress: Arc<Progress>,
    /// The offset after each read not yet finished with, and the last one that is (the
    /// checkpoint); 0 is where the file was opened.
    offsets: BTreeMap<u64, u64>,
    next: u64,
    /// Renamed away or deleted (since when): read to its end, then let go once finished.
    gone: Option<Instant>,
    /// A read since the last turn found more than it could take.
    busy: bool,
    /// Its stream in the disk buffer's log.
    stream: u64,
    /// The UID and container of its pod, when its path is in the pods tree.
    pod: Option<(String, String)>,
    /// What its path says of its pod (`kubernetes_logs`), as resource attributes; and
    /// those with what the API said last (the metadata they were made with).
    attrs: Attributes,
    resource: (Option<Arc<pods::Meta>>, Attributes),
    /// When it was opened: how long its lines have waited for their pod's metadata.
    since: Instant,
    /// Its lines went on without the API's metadata (counted once).
    unknown: bool,
    /// When a read last found lines in it (or it was opened): the least recently active
    /// idle file is closed first when too many are open.
    active: Instant,
    /// Stack-trace joining as its pod asks (`None`: as configured).
    multiline: Option<bool>,
}

impl Watched {
    fn new(tail: Tail, format: Format, tag: Bytes, stage: Stage, stream: u64) -> Watched {
        let offsets = BTreeMap::from([(0, tail.offset())]);
        let pod = PodPath::of(tail.path()).map(|p| (p.uid, p.container));
        Watched {
            tail: Some(tail),
            format,
            tag,
            stage,
            held: Held::default(),
            progress: Progress::new(1),
            offsets,
            next: 1,
            gone: None,
            busy: false,
            stream,
            pod,
            attrs: Arc::new([]),
            resource: (None, Arc::new([])),
            since: Instant::now(),
            unknown: false,
            active: Instant::now(),
            multiline: None,
        }
    }

    /// Nothing of it is in flight or held and it is not being finished after a rotation: it
    /// can be closed, its offset kept, and opened again later with nothing lost.
    fn closable(&self) -> bool {
        self.gone.is_none()
            && !self.busy
            && self.settled()
            && self.tail.as_ref().is_some_and(|t| t.pending() == 0)
            && self.stage.deadline().is_none()
    }

    /// The resource attributes of its next batch: its path's, then the API's `meta`.
    fn resource(&mut self, meta: Option<Arc<pods::Meta>>) -> Attributes {
        let same = match (&meta, &self.resource.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let api = meta.as_ref().map(|m| &m.resource[..]).unwrap_or_default();
            let both = self.attrs.iter().chain(api.iter()).cloned().collect();
            self.resource = (meta, both);
        }
        self.resource.1.clone()
    }

    fn tail(&self) -> &Tail {
        self.tail.as_ref().expect("there between reads")
    }

    fn tail_mut(&mut self) -> &mut Tail {
        self.tail.as_mut().expect("there between reads")
    }

    /// Where a restart resumes: past every line every sink has finished with.
    fn finished(&mut self) -> u64 {
        let done = self.progress.done();
        let (&at, &offset) = self
            .offsets
            .range(..done)
            .next_back()
            .expect("read 0 is always finished");
        // What is older than the checkpoint is no longer needed.
        self.offsets = self.offsets.split_off(&at);
        offset
    }

    /// Gone long enough that its writer has moved to the new file: a runtime writes on into
    /// a renamed file until it is told to reopen.
    fn lingered(&self) -> bool {
        self.gone.is_some_and(|at| at.elapsed() >= LINGER)
    }

    /// Every read handed over has been finished with, and nothing is held.
    fn settled(&self) -> bool {
        self.progress.done() >= self.next
    }

    fn checkpoint(&mut self) -> Checkpoint {
        let (path, id) = (self.tail().path().to_path_buf(), self.tail().id());
        Checkpoint {
            path,
            id,
            offset: self.finished(),
        }
    }

    /// Tells the progress the first read still needed on this side: the next, or the
    /// oldest whose pieces the stage holds.
    fn publish(&self) {
        self.progress
            .set_floor(self.held.pin().unwrap_or(self.next).min(self.next));
    }
}

impl FileSource {
    /// Checks the data directory and loads the checkpoints (with the disk buffer, brought up
    /// to the newest offsets its log holds).
    ///
    /// # Errors
    /// The checkpoint directory cannot be made, or a pattern does not compile.
    pub fn bind(
        name: &str,
        cfg: &Config,
        output: Output,
        metrics: SourceMetrics,
        enrich: Option<(Arc<pipeline::Settings>, pipeline::Metrics)>,
        shared: &crate::source::Shared,
    ) -> anyhow::Result<FileSource> {
        let dir = shared.data_dir.join("checkpoints");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {} (global.data_dir)", dir.display()))?;
        let store = Store::new(&dir, name);
        let mut saved = match store.load() {
            Ok(s) => s,
            Err(e) => {
                // Never a crash loop: start as if new (files are read again, not lost).
                tracing::error!(source = name, error = %e, "file checkpoints unreadable; reading files as if seen the first time");
                Saved::default()
            }
        };
        if let Output::Log(log) = &output {
            let from = saved.log.unwrap_or(0);
            // Until the first save, the records from here on are where the offsets are.
            log.keeps.store(from, Ordering::Release);
            match newest(log, from, &mut saved.checkpoints) {
                Ok(n) if n > 0 => {
                    tracing::info!(
                        source = name,
                        records = n,
                        "file offsets read back from the disk buffer"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    // Files whose offsets were in what could not be read are read again from
                    // the checkpoint file's offsets: repeats, never a loss.
                    tracing::error!(source = name, error = %e, "reading file offsets back from the disk buffer failed; resuming at the saved checkpoints")
                }
            }
        }
        raise_open_files(name, cfg.max_open_files);
        let exclude = cfg
            .exclude
            .iter()
            .map(|p| glob::Pattern::new(p).with_context(|| format!("exclude `{p}`")))
            .collect::<anyhow::Result<_>>()?;
        let mut source = FileSource {
            name: name.to_string(),
            cfg: cfg.clone(),
            output,
            metrics,
            enrich,
            store,
            saved: saved.checkpoints,
            exclude,
            warn: RateLimit::new(5),
            halted: shared.halted.clone(),
            files: Vec::new(),
            pods: cfg.pods.clone().map(pods::Pods::new),
        };
        if let (Some(p), Some(c)) = (&source.pods, &cfg.pods)
            && c.ready_requires_api
        {
            let why = format!("source {name}: not watching the Kubernetes API's pods");
            shared.health.watch_flag(why, p.up.clone());
        }
        // The files there now are the ones `read_from` is for: found before the start is
        // reported, so a file made after it is always read from its beginning.
        let mut files = Vec::new();
        source.discover(&mut files, true);
        source.files = files;
        Ok(source)
    }

    /// The patterns, for logs.
    pub fn addresses(&self) -> Vec<String> {
        self.cfg
            .include
            .iter()
            .map(|p| format!("file://{p}"))
            .collect()
    }

    /// Reads until `shutdown`; then hands over what the stages hold, waits for the sinks to
    /// finish with what was read (as long as the drain lets it), and saves the checkpoints.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut files = std::mem::take(&mut self.files);
        // Stopped with the source: dropping the handle would leave it running.
        let watch = self.pods.clone().map(|p| {
            let task = p.watch(self.name.clone(), self.metrics.clone());
            AbortOnDrop(tokio::spawn(task))
        });
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let save_every = Duration::from_millis(self.cfg.checkpoint_interval_ms);
        let mut next_poll = Instant::now() + poll;
        let mut next_save = Instant::now() + save_every;
        // The files there at the start were opened by `bind`; read them at once.
        let mut polled_once = false;
        loop {
            if shutdown.is_started() {
                break;
            }
            let now = Instant::now();
            let polled = now >= next_poll || !polled_once;
            if polled && polled_once {
                self.discover(&mut files, false);
                next_poll = now + poll;
            }
            polled_once = true;
            let mut busy = false;
            // A file that had more than a turn's worth goes again at once; the others wait
            // for the next poll, so a thousand idle files cost a look each per poll, not
            // one per turn of a busy one.
            for w in files.iter_mut().filter(|w| polled || w.busy) {
                if !shutdown.is_started() {
                    self.turn(w, &mut shutdown).await;
                }
                busy |= w.busy;
            }
            self.let_go(&mut files).await;
            if Instant::now() >= next_save {
                self.save(&mut files);
                next_save = Instant::now() + save_every;
            }
            // Held pieces that are due go on, busy or not.
            for w in files.iter_mut() {
                if w.stage.deadline().is_some_and(|d| d <= Instant::now()) {
                    self.release(w, Release::Due).await;
                }
            }
            if busy {
                tokio::task::yield_now().await;
                continue;
            }
            let due = files.iter().filter_map(|w| w.stage.deadline()).min();
            let wake = [Some(next_poll), Some(next_save), due]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_poll);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                () = shutdown.started() => {}
            }
        }
        for w in files.iter_mut() {
            self.release(w, Release::Flush).await;
        }
        // The sinks are still running: wait for them to finish with what was read, saving
        // as they go, until done or the drain is cut short.
        loop {
            self.save(&mut files);
            if files.iter().all(Watched::settled) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(watch);
        tracing::info!(source = %self.name, files = files.len(), "file source stopped; checkpoints saved");
    }

    /// Matches the globs: opens files not yet read, marks those renamed away or deleted.
    fn discover(&mut self, files: &mut Vec<Watched>, first: bool) {
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut set = HashSet::new();
        for pattern in &self.cfg.include {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                if self.exclude.iter().any(|p| p.matches_path(&path))
                    || !path.is_file()
                    || !set.insert(path.clone())
                {
                    continue;
                }
                seen.push(path);
            }
        }
        for w in files.iter_mut().filter(|w| w.gone.is_none()) {
            let same = std::fs::metadata(w.tail().path()).ok().is_some_and(|m| {
                use std::os::unix::fs::MetadataExt;
                let id = w.tail().id();
                (m.dev(), m.ino()) == (id.dev, id.ino)
            });
            if !same || !set.contains(w.tail().path()) {
                w.gone = Some(Instant::now());
                self.metrics.file_event("rotated", 1);
                tracing::debug!(source = %self.name, path = %w.tail().path().display(), "file renamed away or deleted; reading it to its end");
            }
        }
        let open: HashSet<PathBuf> = files
            .iter()
            .filter(|w| w.gone.is_none())
            .map(|w| w.tail().path().to_path_buf())
            .collect();
        // Files closed to stay under max_open_files, by inode: opened again once they grow.
        let closed: std::collections::HashMap<(u64, u64), u64> = self
            .saved
            .iter()
            .map(|c| ((c.id.dev, c.id.ino), c.offset))
            .collect();
        let mut deferred = 0;
        for path in seen {
            if open.contains(&path) {
                continue;
            }
            let grown = std::fs::metadata(&path).map(|m| {
                use std::os::unix::fs::MetadataExt;
                closed.get(&(m.dev(), m.ino())) != Some(&m.len())
            });
            if !first && matches!(grown, Ok(false)) {
                continue;
            }
            // At the start every file is opened only now: none is closed to make room.
            if files.len() >= self.cfg.max_open_files && (first || !self.close_one(files)) {
                deferred += 1;
                if first && self.cfg.read_from == ReadFrom::End {
                    // Seen at the start: its end is where it is read from, once there is room.
                    if let Ok(t) = Tail::open(&path, u64::MAX, self.cfg.max_line_bytes) {
                        let (path, id, offset) = (t.path().to_path_buf(), t.id(), t.offset());
                        self.saved.push(Checkpoint { path, id, offset });
                    }
                }
                continue;
            }
            match self.open(&path, first) {
                Ok(w) => files.push(w),
                Err(e) => {
                    self.metrics.file_event("read_error", 1);
                    if let Some(suppressed) = self.warn.allow() {
                        tracing::warn!(source = %self.name, path = %path.display(), error = %e, suppressed, "cannot open file; trying again at the next poll");
                    }
                }
            }
        }
        if deferred > 0
            && let Some(suppressed) = self.warn.allow()
        {
            tracing::warn!(source = %self.name, files = deferred, max_open_files = self.cfg.max_open_files, suppressed, "more files to read than may be open, and none idle to close: they wait (raise max_open_files)");
        }
        // Places of files no longer at their path: renamed while Outrigger was down, or while
        // closed for room. Their rest is in the renamed file beside them; the others are gone.
        let (kept, moved): (Vec<_>, Vec<_>) = std::mem::take(&mut self.saved)
            .into_iter()
            .partition(at_its_path);
        self.saved = kept;
        for c in moved {
            if let Some(w) = self.renamed(&c) {
                files.push(w);
            }
        }
    }

    /// Closes the least recently active file that can be closed, keeping its place for when
    /// it grows; false when none can.
    fn close_one(&mut self, files: &mut Vec<Watched>) -> bool {
        let Some(i) = (0..files.len())
            .filter(|i| files[*i].closable())
            .min_by_key(|i| files[*i].active)
        else {
            return false;
        };
        let mut w = files.swap_remove(i);
        self.saved.push(w.checkpoint());
        self.metrics.file_event("closed_idle", 1);
        true
    }

    /// Opens `path` where its checkpoint says, or as `read_from` says for a file seen for
    /// the first time at start (a file that appears later is read from its beginning).
    fn open(&mut self, path: &Path, first: bool) -> std::io::Result<Watched> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let saved = self
            .saved
            .iter()
            .position(|c| c.id.matches(&file).unwrap_or(false));
        let offset = match saved {
            Some(i) => {
                let c = &self.saved[i];
                if c.offset > len {
                    // Truncated while Outrigger was down.
                    self.metrics.file_event("truncated", 1);
                    0
                } else {
                    c.offset
                }
            }
            None if first && self.cfg.read_from == ReadFrom::End => len,
            None => 0,
        };
        drop(file);
        let tail = Tail::open(path, offset, self.cfg.max_line_bytes)?;
        // Its place is the open file's now (kept until here: an open that failed tries
        // again from it).
        if let Some(i) = saved {
            self.saved.swap_remove(i);
        }
        Ok(self.watch(tail))
    }

    fn watch(&self, tail: Tail) -> Watched {
        let pod = PodPath::of(tail.path()).filter(|_| self.cfg.kubernetes);
        let tag = match &pod {
            Some(p) => Bytes::from(format!(
                "{}.{}.{}.{}",
                self.cfg.tag_prefix, p.namespace, p.pod, p.container
            )),
            None => pipeline::kubernetes::path_tag(
                self.cfg.tag_prefix.as_bytes(),
                tail.path().as_os_str().as_encoded_bytes(),
            ),
        };
        let format = match self.cfg.format {
            ConfigFormat::Auto => Format::Auto,
            ConfigFormat::Cri => Format::Cri,
            ConfigFormat::Docker => Format::Docker,
            ConfigFormat::Text => Format::Text,
        };
        let stage = Stage::new(self.enrich.as_ref(), Arc::new([]));
        let stream = stream(&self.name, tail.id());
        let mut w = Watched::new(tail, format, tag, stage, stream);
        if let Some(p) = pod {
            w.attrs = p.attributes();
            w.resource = (None, w.attrs.clone());
        }
        w
    }

    /// The file checkpoint `c` was saved for, renamed beside its old path since, if it is.
    fn renamed(&self, c: &Checkpoint) -> Option<Watched> {
        let dir = c.path.parent()?;
        let name = c.path.file_name()?.to_str()?;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let Some(other) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !other.starts_with(&format!("{name}.")) || other.ends_with(".gz") {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            if c.id.matches(&file).unwrap_or(false) {
                let tail = Tail::open(&path, c.offset, self.cfg.max_line_bytes).ok()?;
                let mut w = self.watch(tail);
                w.gone = Some(Instant::now());
                return Some(w);
            }
        }
        None
    }

    /// One turn of one file: read at most `read_bytes`, hand the lines over.
    async fn turn(&mut self, w: &mut Watched, shutdown: &mut Shutdown) {
        w.busy = false;
        let look = w.tail().look();
        if let Ok(Look::Truncated) = look {
            self.metrics.file_event("truncated", 1);
            tracing::info!(source = %self.name, path = %w.tail().path().display(), "file truncated in place; reading it again from its beginning");
            self.release(w, Release::Flush).await;
            if w.tail_mut().restart().is_err() {
                return;
            }
            w.offsets.insert(w.next, 0);
            w.next += 1;
            w.publish();
        }
        if w.gone.is_none() && matches!(look, Ok(Look::CaughtUp)) {
            // Nothing new: no read (and no trip to a blocking thread).
            return;
        }
        let Some(meta) = self.meta(w) else {
            // Its pod is not known yet: the file holds its lines a while longer.
            return;
        };
        let budget = self.cfg.read_bytes;
        // Regular files do not block for long, but they are not sockets: read off the
        // runtime's threads.
        let mut tail = w.tail.take().expect("there between reads");
        let (tail, read) = tokio::task::spawn_blocking(move || {
            let read = tail.read(budget);
            (tail, read)
        })
        .await
        .expect("reading a file does not panic");
        w.tail = Some(tail);
        let mut read = match read {
            Ok(r) => r,
            Err(e) => {
                self.metrics.file_event("read_error", 1);
                if let Some(suppressed) = self.warn.allow() {
                    tracing::warn!(source = %self.name, path = %w.tail().path().display(), error = %e, suppressed, "reading file failed; trying again");
                }
                return;
            }
        };
        w.busy = !read.eof;
        if read.cut > 0 {
            self.metrics.file_event("line_cut", read.cut);
        }
        if read.eof && w.lingered() {
            // Read to its end: a line it did not finish will not be.
            read.lines.extend(w.tail_mut().rest());
            read.end = w.tail().offset();
        }
        if !read.lines.is_empty() {
            self.hand_over(w, read.lines, read.end, meta, shutdown)
                .await;
        }
    }

    /// What the API says of `w`'s pod: `Some(None)` when nothing is to be had (no API, not a
    /// pod's file, or its wait is over), `None` while its lines should wait for it.
    fn meta(&self, w: &mut Watched) -> Option<Option<Arc<pods::Meta>>> {
        let (Some(pods), Some((uid, _))) = (&self.pods, &w.pod) else {
            return Some(None);
        };
        match pods.get(uid) {
            pods::Lookup::Known(m) => Some(Some(m)),
            pods::Lookup::Unknown if w.gone.is_none() && w.since.elapsed() < pods.wait() => None,
            pods::Lookup::Unknown => {
                if !w.unknown {
                    w.unknown = true;
                    self.metrics.file_event("metadata_missing", 1);
                }
                Some(None)
            }
        }
    }

    /// Turns `lines` (ending at `end`) into one batch, and commits it to the log or (through
    /// the file's stage) queues it.
    async fn hand_over(
        &mut self,
        w: &mut Watched,
        lines: Vec<Bytes>,
        end: u64,
        meta: Option<Arc<pods::Meta>>,
        shutdown: &mut Shutdown,
    ) {
        let now = Timestamp::now();
        let bytes: usize = lines.iter().map(Bytes::len).sum();
        self.metrics.bytes.inc_by(bytes as u64);
        w.active = Instant::now();
        if let (Some(m), Some((_, container))) = (&meta, &w.pod)
            && m.excludes(container)
        {
            // Opted out by annotation: read past, counted, sent nowhere. With the disk buffer
            // an empty record commits the offset, so a restart does not read them again.
            self.metrics.file_event("excluded", lines.len() as u64);
            if let Output::Log(log) = &self.output {
                let log = log.clone();
                let batch = w.stage.batch(0);
                if !self.commit(&log, w, &[], end, batch, shutdown).await {
                    return;
                }
            }
            w.offsets.insert(w.next, end);
            w.next += 1;
            w.publish();
            return;
        }
        w.multiline = match (&meta, &w.pod) {
            (Some(m), Some((_, container))) => m.multiline(container),
            _ => None,
        };
        let mut batch = w.stage.batch(bytes);
        batch.received = now;
        batch.resource = w.resource(meta);
        let tag = batch.tag_index(&w.tag, || w.tag.clone());
        batch.events.reserve(lines.len());
        for line in &lines {
            if w.format == Format::Auto {
                w.format = Format::Auto.detect(line);
            }
            let (e, bad) = w.format.event(line.clone(), tag, now);
            if let Some(bad) = bad {
                self.metrics.file_event(bad.as_str(), 1);
            }
            batch.events.push(e);
        }
        if let Output::Log(log) = &self.output {
            let log = log.clone();
            if self.commit(&log, w, &lines, end, batch, shutdown).await {
                // Finished as far as this side goes: the log has it.
                w.offsets.insert(w.next, end);
                w.next += 1;
                w.publish();
            }
            return;
        }
        drop(lines);
        let seq = w.next;
        w.next += 1;
        w.offsets.insert(seq, end);
        let pinned = w.held.pin();
        w.stage.set_multiline(w.multiline);
        w.stage.process(&mut batch);
        w.held.note(&w.stage, Some((Instant::now(), seq)));
        self.send(w, batch, pinned.unwrap_or(seq)).await;
    }

    /// Lets go of what the file's stage holds for `why`, and queues it.
    async fn release(&mut self, w: &mut Watched, why: Release) {
        let Some(oldest) = w.held.pin() else {
            return;
        };
        let batch = w.stage.release(why);
        w.held.note(&w.stage, None);
        match batch {
            Some(batch) => self.send(w, batch, oldest).await,
            None => w.publish(),
        }
    }

    async fn send(&mut self, w: &mut Watched, batch: crate::event::Batch, oldest: u64) {
        let Output::Queues(router) = &self.output else {
            unreachable!("with the disk buffer the stages run in the sinks' readers");
        };
        self.metrics.events.inc_by(batch.events.len() as u64);
        // Marked before the floor moves past `oldest`, so it never looks finished early.
        router.send_marked(batch, Some((&w.progress, oldest))).await;
        w.publish();
    }

    /// Puts one read of `w` in the log: `lines`, the offset `end` after them, and `batch`
    /// made of them (for the readers that keep up). While the log cannot take it this waits
    /// and tries again, reading nothing meanwhile (the file holds the rest). False when
    /// shutdown came first: then the read is not in the log, and not counted as read.
    async fn commit(
        &mut self,
        log: &crate::source::Log,
        w: &Watched,
        lines: &[Bytes],
        end: u64,
        batch: crate::event::Batch,
        shutdown: &mut Shutdown,
    ) -> bool {
        let mut head = record::Head {
            format: w.format,
            lines: u32::try_from(lines.len()).expect("a read holds fewer lines"),
            tag: w.tag.clone(),
            checkpoint: Checkpoint {
                path: w.tail().path().to_path_buf(),
                id: w.tail().id(),
                offset: end,
            },
            resource: batch.resource.clone(),
            multiline: w.multiline,
        };
        let received = batch.received;
        let encode = |head: &record::Head| {
            let mut body = Vec::new();
            record::encode(head, lines, &mut body);
            let payload = Payload {
                kind: payload::Kind::File,
                stream: w.stream,
                received,
                source: log.source.clone(),
                fields: Arc::new([]),
                body: Bytes::from(body),
            };
            let mut first = Vec::with_capacity(64);
            payload.encode_head(&mut first);
            [Bytes::from(first), payload.body]
        };
        let mut parts = encode(&head);
        let events = batch.events.len() as u64;
        let unrouted = log.unrouted(&batch) as u64;
        let mut batch = Some(batch);
        let mut backoff = Duration::from_millis(50);
        loop {
            match log
                .committer
                .commit_decoded(parts.clone(), batch.take())
                .await
            {
                Ok(_) => {
                    self.metrics.events.inc_by(events);
                    self.metrics.unrouted.inc_by(unrouted);
                    return true;
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::InvalidInput
                        && !head.resource.is_empty() =>
                {
                    // The lines fit a record (checked at load); the pod's labels and
                    // annotations made it too large: the lines go without them.
                    if let Some(suppressed) = self.warn.allow() {
                        tracing::warn!(source = %self.name, path = %w.tail().path().display(), error = %e, suppressed, "the pod's metadata makes the record too large for the disk buffer; these lines go without it");
                    }
                    head.resource = Arc::new([]);
                    parts = encode(&head);
                    batch = None;
                }
                Err(e) => {
                    self.metrics.buffer_waits.inc();
                    if let Some(suppressed) = self.warn.allow() {
                        tracing::warn!(source = %self.name, path = %w.tail().path().display(), error = %e, suppressed, "disk buffer cannot take the file's lines; reading nothing until it can");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.started() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Forgets files read to their end after a rotation, once every sink finished with them.
    async fn let_go(&mut self, files: &mut Vec<Watched>) {
        for w in files.iter_mut().filter(|w| w.lingered() && !w.busy) {
            if w.tail().pending() == 0 {
                self.release(w, Release::Flush).await;
            }
        }
        files.retain(|w| !(w.lingered() && !w.busy && w.tail().pending() == 0 && w.settled()));
    }

    fn save(&self, files: &mut [Watched]) {
        let mut checkpoints: Vec<Checkpoint> = files.iter_mut().map(Watched::checkpoint).collect();
        // Those of files not opened again yet (one that could not be opened at the start
        // resumes when it can), while their path is there.
        checkpoints.extend(self.saved.iter().filter(|c| c.path.exists()).cloned());
        let log = match &self.output {
            Output::Log(log) => Some(log),
            Output::Queues(_) => None,
        };
        // Looked at after the offsets were taken: a mark the aborted sinks dropped (which
        // would look finished) was dropped after the flag was set, so it is seen here. (With
        // the disk buffer the offsets are of what the log holds, whatever the sinks do.)
        if log.is_none() && self.halted.load(Ordering::SeqCst) {
            return;
        }
        // No commit of this source is waiting now, so every one of its records below the
        // frontier is in these offsets.
        let through = log.map(|l| l.committer.counts().durable.load(Ordering::Acquire));
        match self.store.save(&checkpoints, through) {
            Ok(()) => {
                if let (Some(log), Some(n)) = (log, through) {
                    log.keeps.store(n, Ordering::Release);
                }
            }
            Err(e) => {
                if let Some(suppressed) = self.warn.allow() {
                    tracing::warn!(source = %self.name, path = %self.store.path().display(), error = %e, suppressed, "saving file checkpoints failed; trying again");
                }
            }
        }
    }
}

/// Raises the process's soft limit on open files to leave room for `max_open_files` (and
/// the sockets and the log's segments besides, 256), as far as the hard limit allows: a
/// container's soft limit is often 1024. Warns when it cannot.
fn raise_open_files(source: &str, max_open_files: usize) {
    let want = max_open_files as u64 + 256;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= want {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 && raised.rlim_cur >= want {
            return;
        }
    }
    tracing::warn!(
        source,
        max_open_files,
        limit = lim.rlim_max,
        "the process may not open max_open_files files besides its sockets (RLIMIT_NOFILE): lower max_open_files or raise the limit"
    );
}

/// Whether the file checkpoint `c` was taken of is still at its path (the same inode there).
fn at_its_path(c: &Checkpoint) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(&c.path).is_ok_and(|m| (m.dev(), m.ino()) == (c.id.dev, c.id.ino))
}

/// What a path in the kubelet's tree says of its pod:
/// `…/<namespace>_<pod>_<uid>/<container>/<restart count>.log`.
#[derive(Debug, PartialEq, Eq)]
struct PodPath {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
    restarts: String,
}

impl PodPath {
    /// `None` for a path not in the tree's layout (namespaces and pod names hold no `_`).
    fn of(path: &Path) -> Option<PodPath> {
        // `<n>.log`, or a rotated `<n>.log.<time>` (found renamed at a start).
        let (restarts, rotated) = path.file_name()?.to_str()?.split_once(".log")?;
        if !(rotated.is_empty() || rotated.starts_with('.')) {
            return None;
        }
        let container = path.parent()?;
        let dir = container.parent()?.file_name()?.to_str()?;
        let (namespace, rest) = dir.split_once('_')?;
        let (pod, uid) = rest.rsplit_once('_')?;
        let container = container.file_name()?.to_str()?;
        // Namespaces and container names are DNS labels: never a dot, which would split
        // the tag's parts differently.
        let label = |s: &str| !s.is_empty() && !s.contains('.');
        let number = !restarts.is_empty() && restarts.bytes().all(|b| b.is_ascii_digit());
        if !label(namespace) || !label(container) || pod.is_empty() || uid.is_empty() || !number {
            return None;
        }
        Some(PodPath {
            namespace: namespace.into(),
            pod: pod.into(),
            uid: uid.into(),
            container: container.into(),
            restarts: restarts.into(),
        })
    }

    /// The OpenTelemetry resource attributes it gives.
    fn attributes(&self) -> Attributes {
        let kv = |k: &'static str, v: &str| {
            (Bytes::from_static(k.as_bytes()), Bytes::from(v.to_string()))
        };
        Arc::new([
            kv("k8s.namespace.name", &self.namespace),
            kv("k8s.pod.name", &self.pod),
            kv("k8s.pod.uid", &self.uid),
            kv("k8s.container.name", &self.container),
            kv("k8s.container.restart_count", &self.restarts),
        ])
    }
}

/// The stream number of the file `id` of source `source` in the disk buffer's log: the
/// same across restarts (unlike a connection's), so a line split across a `kill -9` (its
/// `P` piece read before, its `F` after) is joined by the sinks' readers as if read in one
/// go. The top bit keeps it apart from connections' numbers; the rest is a 64-bit FNV-1a of
/// the source's name and the file's device and inode (its first bytes grow as it does, so
/// they are left out: a reused inode shares the number, and joins at most a piece the old
/// file left torn).
fn stream(source: &str, id: checkpoint::Id) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = source
        .bytes()
        .chain(id.dev.to_le_bytes())
        .chain(id.ino.to_le_bytes());
    for b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 1 << 63
}

/// Brings `checkpoints` up to the offsets committed in the log's records of this source
/// from record `from` on (the newest per file wins); returns how many records it read.
///
/// # Errors
/// The log cannot be read.
fn newest(
    log: &crate::source::Log,
    from: u64,
    checkpoints: &mut Vec<Checkpoint>,
) -> std::io::Result<u64> {
    let durable = log.committer.counts().durable.load(Ordering::Acquire);
    let mut tail = crate::buffer::disk::tail::Tail::new(&log.dir, from);
    let mut n = 0;
    while let Some((_, bytes)) = tail.next(durable)? {
        let Ok(p) = Payload::decode(&bytes) else {
            continue;
        };
        if p.kind != payload::Kind::File || p.source != log.source {
            continue;
        }
        let Ok((head, _)) = record::head(&p.body) else {
            continue;
        };
        n += 1;
        let c = head.checkpoint;
        let same = |k: &&mut Checkpoint| (k.id.dev, k.id.ino) == (c.id.dev, c.id.ino);
        match checkpoints.iter_mut().find(same) {
            Some(k) => *k = c,
            None => checkpoints.push(c),
        }
    }
    Ok(n)
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_in_the_kubelets_tree_names_its_pod() {
        let p = PodPath::of(Path::new(
            "/var/log/pods/shop_web-7d9f-x2kq_0f3a9c2e-5b7d/app/3.log",
        ))
        .unwrap();
        assert_eq!(
            p,
            PodPath {
                namespace: "shop".into(),
                pod: "web-7d9f-x2kq".into(),
                uid: "0f3a9c2e-5b7d".into(),
                container: "app".into(),
                restarts: "3".into(),
            }
        );
        assert_eq!(p.attributes().len(), 5);
        let rotated = Path::new("/var/log/pods/shop_web_u1/app/0.log.20261204-100000");
        assert_eq!(PodPath::of(rotated).unwrap().restarts, "0");
        for other in [
            "/var/log/pods/shop_web_u1/app/0.logs",
            "/var/log/pods/shop_u1/app/0.log",
            "/var/log/app.log",
            "/var/log/pods/sh.op_web_u1/app/0.log",
        ] {
            assert_eq!(PodPath::of(Path::new(other)), None, "{other}");
        }
    }
}
