//! Sources: where events enter. Each turns client bytes into [`Batch`](crate::event::Batch)es,
//! runs them through its [`Stage`](crate::pipeline::Stage) (one per stream of input) and
//! hands them to the [`Router`]. What they hold before that is bounded by one
//! [`budget::Budget`] for all of them.
//!
//! [`Source`] is the one place that knows which kinds exist: the topology binds, runs and
//! sizes every source through it. Adding a kind means its own module here and one variant.

pub mod budget;
pub mod file;
pub mod forward;
pub mod held;
pub mod replay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use bytes::Bytes;

use crate::buffer::disk::commit::Committer;
use crate::buffer::disk::progress::Progress;
use crate::buffer::{Pattern, Router};
use crate::config::SourceKind;
use crate::config::buffer::Ack;
use crate::pipeline;
use crate::shutdown::Shutdown;
use crate::telemetry::SourceMetrics;
use budget::Budget;

/// Where a source hands over what it accepted.
#[derive(Debug, Clone)]
pub enum Output {
    /// The sinks' queues (the memory buffer): acknowledged once every matching queue took it.
    Queues(Router),
    /// The disk buffer's log, which the sinks read ([`replay`]).
    Log(Log),
}

/// A source's side of the disk buffer.
#[derive(Debug, Clone)]
pub struct Log {
    pub committer: Committer,
    /// `durable` or `delivered`.
    pub ack: Ack,
    /// Every sink's progress, for `ack = "delivered"`.
    pub sinks: Arc<[Arc<Progress>]>,
    /// Every sink's patterns, to count what no sink matches (written to the log all the
    /// same: it is what the client sent).
    pub patterns: Arc<[Pattern]>,
    /// The source's name, as each of its records carries it.
    pub source: Bytes,
    /// Stream numbers: this start's in the high half, a count in the low (see [`Log::new`]).
    streams: Arc<AtomicU64>,
    /// The log's directory, which a file source reads its newest offsets back from at start.
    pub dir: std::path::PathBuf,
    /// The first record the source still needs the log to keep, whoever has delivered it: a
    /// file source's saved checkpoints hold the offsets of its records before it, and those
    /// after it are read at start ([`file`]). `u64::MAX` for a source that needs none.
    pub keeps: Arc<AtomicU64>,
}

impl Log {
    /// `boot` tells this start's streams from the earlier starts' in the log: the log's next
    /// record number at the start (any start that wrote a record moved it on). `dir` is the
    /// log's directory.
    pub fn new(
        source: &str,
        committer: Committer,
        ack: Ack,
        sinks: Arc<[Arc<Progress>]>,
        patterns: Arc<[Pattern]>,
        boot: u64,
        dir: std::path::PathBuf,
    ) -> Log {
        Log {
            source: Bytes::from(source.to_string()),
            committer,
            ack,
            sinks,
            patterns,
            streams: Arc::new(AtomicU64::new(boot << 32)),
            dir,
            keeps: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// Events of `batch` whose tag no sink matches.
    pub fn unrouted(&self, batch: &crate::event::Batch) -> usize {
        let wanted: Vec<bool> = batch
            .tags
            .iter()
            .map(|t| self.patterns.iter().any(|p| p.matches(t)))
            .collect();
        if wanted.iter().all(|w| *w) {
            return 0;
        }
        batch
            .events
            .iter()
            .filter(|e| !wanted[e.tag as usize])
            .count()
    }

    /// A number for a new stream (connection), unique in the log.
    pub fn stream(&self) -> u64 {
        self.streams.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until every sink has finished with record `seq`.
    pub async fn delivered(&self, seq: u64) {
        for p in self.sinks.iter() {
            loop {
                let moved = p.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if p.done() > seq {
                    break;
                }
                moved.await;
            }
        }
    }
}

/// What the process gives every source besides its own settings.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Where state is kept (a file source's checkpoints).
    pub data_dir: std::path::PathBuf,
    /// Set just before the topology aborts what a drain did not finish: from then on what
    /// the sinks drop was not delivered, and a file source saves no checkpoint.
    pub halted: Arc<std::sync::atomic::AtomicBool>,
    /// Readiness, for what a source adds to it (a watch of the Kubernetes API, when its
    /// configuration asks).
    pub health: Arc<crate::telemetry::health::Health>,
}

/// A source bound to its inputs, ready to run.
pub enum Source {
    Forward(forward::Forward),
    File(Box<file::FileSource>),
}

impl Source {
    /// Checks what loading the configuration cannot (TLS material), without binding.
    ///
    /// # Errors
    /// Unreadable or invalid certificate or key files.
    pub fn check(kind: &SourceKind) -> anyhow::Result<()> {
        match kind {
            SourceKind::Forward(f) => {
                if let Some(tls) = &f.tls {
                    forward::tls_acceptor(tls).context("tls")?;
                }
                Ok(())
            }
            SourceKind::File(_) => Ok(()),
        }
    }

    /// The most one stream of this source may need at once to move on, which the input
    /// budget keeps in reserve (see [`budget`]).
    pub fn reserve(kind: &SourceKind) -> usize {
        match kind {
            SourceKind::Forward(f) => forward::reserve(f),
            // Its reads are bounded by `read_bytes` and wait for nothing but queue room.
            SourceKind::File(_) => 0,
        }
    }

    /// Binds the source's inputs, so that configuration and port errors surface before
    /// anything runs. `enrich` is the pipeline's settings and this source's counters, when
    /// enrichment is on.
    ///
    /// # Errors
    /// What the kind's own `bind` reports: addresses in use, unreadable TLS material, a data
    /// directory that cannot be made.
    pub async fn bind(
        name: &str,
        kind: &SourceKind,
        output: Output,
        budget: Budget,
        metrics: SourceMetrics,
        enrich: Option<(Arc<pipeline::Settings>, pipeline::Metrics)>,
        shared: &Shared,
    ) -> anyhow::Result<Source> {
        Ok(match kind {
            SourceKind::Forward(f) => Source::Forward(
                forward::Forward::bind(name, f, output, budget, metrics, enrich).await?,
            ),
            SourceKind::File(f) => Source::File(Box::new(file::FileSource::bind(
                name, f, output, metrics, enrich, shared,
            )?)),
        })
    }

    /// How the disk buffer's records of a source of this kind are read back.
    pub fn replay_spec(
        kind: &SourceKind,
        enrich: Option<(Arc<pipeline::Settings>, pipeline::Metrics)>,
    ) -> replay::Spec {
        match kind {
            SourceKind::Forward(f) => replay::Spec {
                decode: forward::decode_options(f),
                enrich,
            },
            SourceKind::File(_) => replay::Spec {
                decode: Default::default(),
                enrich,
            },
        }
    }

    /// The kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Forward(_) => "forward",
            Source::File(_) => "file",
        }
    }

    /// Where the source reads, for logs and tests (`tcp://…`, `unix://…`).
    pub fn addresses(&self) -> Vec<String> {
        match self {
            Source::Forward(f) => f.addresses(),
            Source::File(f) => f.addresses(),
        }
    }

    /// The bound TCP address, if the source listens on one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Source::Forward(f) => f.tcp_addr(),
            Source::File(_) => None,
        }
    }

    /// Runs until `shutdown` turns true, then drains: returns once everything the source
    /// accepted has been handed over, dropping its router handle.
    pub async fn run(self, shutdown: Shutdown) {
        match self {
            Source::Forward(f) => f.run(shutdown).await,
            Source::File(f) => f.run(shutdown).await,
        }
    }
}
