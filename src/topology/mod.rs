//! Wiring: builds every component from [`Settings`], spawns their tasks, and shuts them down
//! in order. The only module that knows all the others.
//!
//! Start: default queue bounds are sized from the container's memory limit
//! ([`config::memory`]); sinks first (so queues have consumers), then sources are bound (so
//! port and TLS errors stop the start before anything is accepted), then the admin listener;
//! readiness turns on last. Every sink and source task is wrapped by [`Health::watch`], so
//! `/live` sees it die or stop being scheduled.
//!
//! Drain ([`Running::shutdown`]): readiness off; `stop` turns true; sources stop accepting,
//! finish and ack the requests they hold, and drop their routers; each sink sees its queue
//! close once the last router is gone, writes what is left and returns. All of it must end
//! within the grace period, or the drain is reported as incomplete with what was left.

pub mod buffer;
mod signal;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::task::JoinSet;

use crate::buffer::disk::progress::Progress;
use crate::buffer::{Pattern, Queue, QueueGauges, Route, Router};
use crate::config::{self, ExportSink, Settings, SinkKind, SourceKind};
use crate::shutdown::{self, Trigger};
use crate::sink::{Sink, jsonl};
use crate::source::budget::Budget;
use crate::source::replay::Replay;
use crate::source::{Output, Source};
use crate::telemetry::Metrics;
use crate::telemetry::admin;
use crate::telemetry::health::Health;
use crate::telemetry::otel::SelfTelemetry;

pub use signal::Signals;

/// A started Outrigger.
pub struct Running {
    /// Each source's listen addresses (`tcp://…`, `tls://…`, `unix://…`).
    pub addresses: BTreeMap<String, Vec<String>>,
    tcp: BTreeMap<String, SocketAddr>,
    /// Where the admin listener is bound, when enabled.
    pub admin: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Begins the drain; every source and connection listens for it.
    stop: Trigger,
    sources: JoinSet<()>,
    /// With the disk buffer: each sink's reader of the log.
    readers: JoinSet<()>,
    /// Tells the readers the sources are done: read to the end of the log, then stop.
    finish: Trigger,
    /// With the disk buffer: the cursor keeper, its stop, and each sink's progress.
    keeper: Option<(Trigger, tokio::task::JoinHandle<buffer::Keeper>)>,
    progress: Vec<Arc<Progress>>,
    /// Set before an unfinished drain is aborted (see [`crate::source::Shared::halted`]).
    halted: Arc<std::sync::atomic::AtomicBool>,
    sink_names: Vec<String>,
    sinks: JoinSet<()>,
    /// Aborted once the drain is over: probes must get answers while it runs.
    admin_task: Option<tokio::task::JoinHandle<()>>,
    /// Each sink's queue depth, to report what a drain that timed out left behind.
    queues: Vec<QueueGauges>,
    grace: Duration,
    /// Our own traces' provider and metrics export, when `[telemetry.otlp]` is on; flushed
    /// after the sinks.
    telemetry: Option<SelfTelemetry>,
}

/// The drain did not finish within the grace period.
#[derive(Debug, thiserror::Error)]
#[error("drain incomplete after {grace:?}: {queued_events} events still queued")]
pub struct DrainTimeout {
    pub grace: Duration,
    pub queued_events: i64,
}

/// Checks what loading the configuration cannot: TLS material, exporter endpoints, headers
/// and templates, by building (not starting) what uses them. Used by `outrigger validate`;
/// needs a runtime, as gRPC channels are created inside one.
///
/// # Errors
/// Unreadable or invalid certificate or key files, invalid endpoints or exporter settings.
pub async fn check(settings: &Settings) -> anyhow::Result<()> {
    for source in &settings.sources {
        Source::check(&source.kind).with_context(|| format!("sources.{}", source.name))?;
    }
    input_budget(settings, &config::memory::Limit::Unknown)?;
    for sink in &settings.sinks {
        if let SinkKind::Export(e) = &sink.kind {
            e.own
                .exporter(&settings.shape)
                .with_context(|| format!("sinks.{}", sink.name))?;
        }
    }
    if settings.telemetry.otlp.enabled {
        crate::telemetry::otel::exporter(&settings.telemetry.otlp)?;
        if settings.telemetry.otlp.metrics {
            crate::telemetry::otel_metrics::client(&settings.telemetry.otlp)?;
        }
    }
    Ok(())
}

/// The sources' input budget and its reserve (see [`crate::source::budget`]): the configured
/// bound, or one sized from the memory limit.
///
/// # Errors
/// A configured bound too small to let the largest request through.
fn input_budget(settings: &Settings, limit: &config::memory::Limit) -> anyhow::Result<(u64, u64)> {
    let reserve = settings
        .sources
        .iter()
        .map(|s| Source::reserve(&s.kind) as u64)
        .max()
        .unwrap_or(0);
    let min = reserve + crate::source::budget::ALLOWANCE as u64;
    match settings.global.max_input_buffer_bytes {
        Some(max) if max < min => anyhow::bail!(
            "global.max_input_buffer_bytes: {max} is below {min}, what the largest request a \
             source accepts needs to be read and inflated (max_frame_bytes + \
             max_decompressed_bytes + 4 KiB); raise it or lower those limits"
        ),
        Some(max) => Ok((max, reserve)),
        None => Ok((config::memory::default_input_bytes(limit, reserve), reserve)),
    }
}

/// Whether some sink's encoder reads JSON lines' members, so enrichment must record them.
fn reads_members(settings: &Settings) -> bool {
    settings.sinks.iter().any(|s| match &s.kind {
        SinkKind::Export(e) => crate::sink::KINDS
            .iter()
            .any(|k| k.name == e.kind && k.reads_members),
        _ => false,
    })
}

/// A network exporter sink: its exporter built from its kind's settings, its dead-letter
/// file opened.
fn export_sink(
    name: &str,
    e: &ExportSink,
    shape: &jsonl::Shape,
    telemetry: Option<&SelfTelemetry>,
) -> anyhow::Result<Sink> {
    let exporter = e
        .own
        .exporter(shape)
        .with_context(|| format!("sinks.{name}"))?;
    let delivery = &e.delivery;
    let dead_letter = match &delivery.dead_letter_path {
        Some(p) => Some(
            crate::sink::dead_letter::DeadLetter::open(p, shape.clone()).with_context(|| {
                format!("sinks.{name}.dead_letter_path: opening {}", p.display())
            })?,
        ),
        None => None,
    };
    let tracer = telemetry.map(|t| t.sink(name, e.kind));
    Ok(Sink::Export(Box::new(crate::sink::Export {
        exporter,
        delivery: delivery.clone(),
        dead_letter,
        tracer,
    })))
}

/// Builds and starts everything in `settings`.
///
/// # Errors
/// A sink's file cannot be opened, a listener cannot be bound, TLS material is invalid.
pub async fn start(settings: &Settings) -> anyhow::Result<Running> {
    start_with(settings, &config::memory::Probe::system()).await
}

/// [`start`], reading the memory limit through `probe`.
///
/// # Errors
/// As [`start`].
pub async fn start_with(
    settings: &Settings,
    probe: &config::memory::Probe,
) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let (stop, stop_rx) = shutdown::channel();
    let global = &settings.global;
    let health = Arc::new(Health::new(
        Duration::from_secs(global.stuck_after_secs),
        global.ready_queue_high_water,
    ));
    let sized = settings
        .sinks
        .iter()
        .filter(|s| s.max_queue_bytes.is_none())
        .count();
    let limit = probe.limit();
    let default_queue_bytes =
        config::memory::default_queue_bytes(&limit, global.queue_memory_percent, sized);
    tracing::info!(
        memory_limit = %limit,
        queue_memory_percent = global.queue_memory_percent,
        sinks_sized = sized,
        default_queue_bytes,
        "queue bounds sized"
    );
    let telemetry = SelfTelemetry::start(&settings.telemetry.otlp, metrics.clone())?;

    let sink_names: Vec<String> = settings.sinks.iter().map(|s| s.name.clone()).collect();
    let disk = if settings.buffer.is_disk() {
        let names: Vec<&str> = sink_names.iter().map(String::as_str).collect();
        let d = buffer::open(&global.data_dir, &settings.buffer, &names, metrics.buffer())?;
        health.watch_buffer(d.committer.counts().clone(), settings.buffer.max_bytes);
        Some(d)
    } else {
        None
    };
    let enrich = crate::pipeline::Settings::new(&settings.enrich).map(|mut s| {
        s.members = reads_members(settings);
        Arc::new(s)
    });
    let enrich_of = |source: &str| enrich.as_ref().map(|s| (s.clone(), metrics.enrich(source)));
    // How each source's records in the disk buffer are read back.
    let specs: HashMap<Bytes, crate::source::replay::Spec> = settings
        .sources
        .iter()
        .map(|s| {
            let spec = Source::replay_spec(&s.kind, enrich_of(&s.name));
            (Bytes::from(s.name.clone()), spec)
        })
        .collect();
    let (finish, finish_rx) = shutdown::channel();
    let mut readers = JoinSet::new();

    let mut sinks = JoinSet::new();
    let mut routes = Vec::new();
    let mut all_patterns: Vec<Pattern> = Vec::new();
    let mut queues = Vec::new();
    for cfg in &settings.sinks {
        let sink = match &cfg.kind {
            SinkKind::Stdout => Sink::Lines {
                writer: Box::new(tokio::io::stdout()),
                shape: settings.shape.clone(),
            },
            SinkKind::File { path } => {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .with_context(|| format!("sinks.{}: opening {}", cfg.name, path.display()))?;
                Sink::Lines {
                    writer: Box::new(file),
                    shape: settings.shape.clone(),
                }
            }
            SinkKind::Blackhole {
                rate_events_per_sec,
            } => Sink::Blackhole {
                rate_events_per_sec: *rate_events_per_sec,
            },
            SinkKind::Export(e) => export_sink(&cfg.name, e, &settings.shape, telemetry.as_ref())?,
        };
        let m = metrics.sink(&cfg.name);
        let max_bytes = cfg.max_queue_bytes.unwrap_or(default_queue_bytes);
        let (tx, rx) = Queue::bounded(max_bytes, cfg.max_queue_events, m.queue.clone());
        m.queue_max_bytes.set(max_bytes as i64);
        m.queue_max_events.set(cfg.max_queue_events as i64);
        let patterns: Vec<Pattern> = cfg
            .patterns
            .iter()
            .map(|p| Pattern::parse(p).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?;
        all_patterns.extend(patterns.iter().cloned());
        let route = Route {
            patterns,
            queue: tx,
        };
        match &disk {
            // A full queue is the disk's to absorb: readiness watches the buffer instead.
            Some(d) => {
                let (_, _, progress) = &d.sinks[queues.len()];
                let replay = Replay {
                    sink: cfg.name.clone(),
                    dir: d.dir.clone(),
                    counts: d.committer.counts().clone(),
                    progress: progress.clone(),
                    from: progress.done(),
                    boot: d.boot,
                    recent: d.recent.clone(),
                    index: queues.len(),
                    route,
                    sources: specs.clone(),
                };
                let task = replay.run(finish_rx.clone());
                readers.spawn(health.watch(format!("buffer reader {}", cfg.name), task));
            }
            None => {
                health.watch_queue(&cfg.name, m.queue.clone(), max_bytes, cfg.max_queue_events);
                routes.push(route);
            }
        }
        queues.push(m.queue.clone());
        let task = sink.run(cfg.name.clone(), rx, m);
        sinks.spawn(health.watch(format!("sink {}", cfg.name), task));
    }
    let routes: Arc<[Route]> = routes.into();

    let (max_input, reserve) = input_budget(settings, &limit)?;
    tracing::info!(
        max_input_buffer_bytes = max_input,
        reserve_bytes = reserve,
        "input budget sized"
    );
    let budget = Budget::new(max_input as usize, reserve as usize, metrics.input());
    let progress: Vec<Arc<Progress>> = disk
        .iter()
        .flat_map(|d| d.sinks.iter().map(|(_, _, p)| p.clone()))
        .collect();
    let shared = crate::source::Shared {
        data_dir: settings.global.data_dir.clone(),
        halted: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        health: health.clone(),
    };
    let mut bound = Vec::new();
    let mut keeps = Vec::new();
    for cfg in &settings.sources {
        let m = metrics.source(&cfg.name);
        let output = match &disk {
            Some(d) => {
                let ack = match &cfg.kind {
                    SourceKind::Forward(f) => f.ack.unwrap_or(config::buffer::Ack::Durable),
                    // A file is not told: its lines are durable once committed.
                    SourceKind::File(_) => config::buffer::Ack::Durable,
                };
                let log = crate::source::Log::new(
                    &cfg.name,
                    d.committer.clone(),
                    ack,
                    progress.clone().into(),
                    all_patterns.clone().into(),
                    d.boot,
                    d.dir.clone(),
                );
                keeps.push(log.keeps.clone());
                Output::Log(log)
            }
            None => Output::Queues(Router::new(routes.clone(), m.unrouted.clone())),
        };
        let source = Source::bind(
            &cfg.name,
            &cfg.kind,
            output,
            budget.clone(),
            m,
            enrich_of(&cfg.name),
            &shared,
        )
        .await
        .with_context(|| format!("sources.{}", cfg.name))?;
        bound.push((cfg.name.clone(), source));
    }
    // From here on only the sources' routers (or the readers) hold the queues' senders.
    drop(routes);
    let keeper = disk.map(|d| {
        let places = d
            .sinks
            .into_iter()
            .map(|(name, cursor, p)| (cursor, p, metrics.sink_buffer(&name)))
            .collect();
        let keeper = buffer::Keeper::new(d.committer, places, keeps, metrics.buffer().clone());
        let (stop, stop_rx) = shutdown::channel();
        (stop, tokio::spawn(keeper.run(stop_rx)))
    });

    let admin = if settings.global.admin_enabled {
        let addr = settings.global.admin_address;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("global.admin_address: binding {addr}"))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(admin::serve(listener, metrics.clone(), health.clone()));
        tracing::info!(address = %addr, "admin listening");
        Some((addr, task))
    } else {
        None
    };
    let (admin, admin_task) = admin.unzip();

    let mut addresses = BTreeMap::new();
    let mut tcp = BTreeMap::new();
    let mut sources = JoinSet::new();
    for (name, source) in bound {
        let addrs = source.addresses();
        tracing::info!(source = %name, kind = source.kind(), addresses = ?addrs, "source listening");
        if let Some(a) = source.tcp_addr() {
            tcp.insert(name.clone(), a);
        }
        addresses.insert(name.clone(), addrs);
        let task = source.run(stop_rx.clone());
        sources.spawn(health.watch(format!("source {name}"), task));
    }
    health.set_serving();
    Ok(Running {
        addresses,
        tcp,
        admin,
        metrics,
        health,
        stop,
        sources,
        readers,
        finish,
        keeper,
        progress,
        halted: shared.halted.clone(),
        sink_names,
        sinks,
        admin_task,
        queues,
        grace: Duration::from_secs(settings.global.grace_period_secs),
        telemetry,
    })
}

impl Running {
    /// The TCP address of source `name`.
    pub fn tcp_addr(&self, name: &str) -> Option<SocketAddr> {
        self.tcp.get(name).copied()
    }

    /// Whether Outrigger's own traces are being exported (`[telemetry.otlp]` enabled).
    pub fn traces_exported(&self) -> bool {
        self.telemetry.is_some()
    }

    /// Whether Outrigger's own metrics are being exported over OTLP.
    pub fn metrics_exported(&self) -> bool {
        self.telemetry
            .as_ref()
            .is_some_and(SelfTelemetry::exports_metrics)
    }

    /// Drains and stops everything.
    ///
    /// # Errors
    /// The drain did not finish within the grace period; what was still queued is lost.
    pub async fn shutdown(mut self) -> Result<(), DrainTimeout> {
        self.health.set_draining();
        self.stop.pull();
        let drained = tokio::time::timeout(self.grace, async {
            while self.sources.join_next().await.is_some() {}
            // Everything accepted is in the log now: the readers read it to its end.
            self.finish.pull();
            while self.readers.join_next().await.is_some() {}
            while self.sinks.join_next().await.is_some() {}
        })
        .await;
        if let Some(task) = self.admin_task.take() {
            task.abort();
        }
        // Counted before aborting: the aborted sinks release what they held.
        let queued_events: i64 = self.queues.iter().map(|q| q.events.get()).sum();
        if drained.is_err() {
            // What the aborted sinks drop was not delivered: their cursors stay before it.
            for p in &self.progress {
                p.freeze();
            }
            self.halted.store(true, std::sync::atomic::Ordering::SeqCst);
            self.sources.abort_all();
            self.readers.abort_all();
            self.sinks.abort_all();
            // Aborted deliveries end their spans (as `aborted`) before the final flush.
            while self.sinks.join_next().await.is_some() {}
            while self.readers.join_next().await.is_some() {}
        }
        let disk = self.keeper.is_some();
        if let Some((stop, task)) = self.keeper.take() {
            stop.pull();
            if let Ok(keeper) = task.await {
                for (sink, left) in self.sink_names.iter().zip(keeper.left()) {
                    if left > 0 {
                        tracing::warn!(sink = %sink, records = left, "left in the disk buffer: the next start sends them");
                    }
                }
            }
        }
        // After the sinks, so the last batches' spans go too; bounded by its own timeout.
        if let Some(t) = self.telemetry.take() {
            t.shutdown().await;
        }
        match drained {
            Ok(()) => Ok(()),
            // Nothing is lost: what was not delivered is on disk.
            Err(_) if disk => {
                tracing::warn!(grace = ?self.grace, "drain incomplete; what was not delivered stays in the disk buffer");
                Ok(())
            }
            Err(_) => Err(DrainTimeout {
                grace: self.grace,
                queued_events,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    #[test]
    fn members_are_recorded_only_for_sinks_that_read_them() {
        let with = |sinks: &str| {
            let text =
                format!("[sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n{sinks}");
            reads_members(&config::parse("t.toml", &text, |_| None).unwrap())
        };
        let loki = "[sinks.l]\ntype = \"loki\"\nendpoint = \"http://127.0.0.1:1\"\n";
        let es = "[sinks.e]\ntype = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:1\"\n";
        let otlp = "[sinks.o]\ntype = \"otlp\"\nendpoint = \"http://127.0.0.1:1\"\n";
        assert!(!with("[sinks.b]\ntype = \"blackhole\"\n"));
        assert!(!with(loki));
        assert!(with(&format!("{loki}{es}")));
        assert!(with(otlp));
    }

    /// What `outrigger validate` runs, over every example: each exporter builds from what
    /// its kind read.
    #[tokio::test]
    async fn every_example_config_passes_check() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut kinds = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let settings = config::parse(&name, &text, |_| None).unwrap();
            check(&settings)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            for sink in &settings.sinks {
                if let SinkKind::Export(e) = &sink.kind {
                    kinds.insert(e.kind);
                }
            }
        }
        assert_eq!(
            kinds,
            BTreeSet::from(["elasticsearch", "loki", "otlp"]),
            "the examples' exporters"
        );
    }
}
