//! `loadgen`: end-to-end load against a real Outrigger process, and the test corpus.
//!
//! ```text
//! cargo build --release --bins
//! target/release/loadgen --mode message --events 1000000 --connections 1 --runs 3
//! target/release/loadgen --mode message --events 1000000 --enrich off   # decode only
//! target/release/loadgen --mode message --events 1000000 --runs 3 --sink elasticsearch
//! target/release/loadgen --mode message --events 1000000 --buffer disk --sink elasticsearch
//! target/release/loadgen --mode message --events 40000 --connections 8 --acks --buffer disk
//! target/release/loadgen --files 50 --events 1000000 --runs 3        # the file source
//! target/release/loadgen --files 50 --idle-files 950 --events 1000000 --sink elasticsearch
//! target/release/loadgen corpus --out testdata/docker-corpus.jsonl   # regenerate the corpus
//! target/release/loadgen fuzz-seeds --out fuzz/seeds                 # seeds for fuzz/
//! ```
//!
//! By default it starts `outrigger` (found next to its own executable, or `--outrigger PATH`)
//! with a generated config: a forward source on a free 127.0.0.1 port, a `blackhole` sink named
//! `null`, the admin listener on another free port, `log_level = "warn"`, and enrichment as
//! configured by default (`--enrich off` writes `[enrich] enabled = false`). `--sink loki`,
//! `elasticsearch`, `otlp` (gRPC) or `otlp-http` replaces the blackhole with that exporter,
//! default settings, sending to a stand-in backend loadgen runs on 127.0.0.1 that reads each
//! request whole and answers success at once (`receiver.rs`); the sink is named after
//! it, and its CPU is loadgen's, not Outrigger's. It waits for
//! `GET /ready`, connects, pre-encodes the requests, and then, on blocking sockets with one
//! thread per connection, sends `--events` events as fast as the server takes them.
//!
//! The events come from a corpus of `--corpus-records` (default 1,000,000) distinct
//! Docker-shaped records, generated deterministically the first time into
//! `target/loadgen/` and read back from there afterwards (`--corpus FILE` replays a file
//! instead). Each connection starts at its own place in it, so a run of up to that many
//! events sends every line once. It stops the clock when `outrigger_sink_events_total{component="<sink>"}`
//! reaches the number sent, and reports wall time, throughput, Outrigger's own CPU time
//! (utime + stime from `/proc/<pid>/stat`) over that interval, and its peak RSS (`VmHWM`).
//! Then it sends SIGTERM and waits for the child to exit.
//!
//! With `--files N` it measures the file source instead: before each start it writes the
//! events as CRI lines (`<time> <stream> F <log>`) into N files of a fresh directory (and one
//! line into each of `--idle-files` more), starts Outrigger with a `file` source on them, and
//! stops the clock when the sink has counted every line; the CPU time is the whole
//! process's, start-up included.
//!
//! With `--target HOST:PORT` it drives an Outrigger that is already running instead; `--pid`
//! adds its CPU and memory, `--metrics-url` and `--sink-name` say where to watch the count.
//!
//! Every wait is bounded: readiness, the count (`--timeout-secs`), each connection's drain, and
//! the child's exit.
//!
//! From Outrigger's library it takes the readiness check `outrigger health` makes
//! (`telemetry::probe`), the reader of its own metrics text (`telemetry::exposition`) and of
//! its process's CPU time (`telemetry::process`); the tests check the generated config with
//! `config::parse` and the requests with `msgpack::Scanner`.

mod corpus;
mod frames;
mod receiver;
mod seeds;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use outrigger::telemetry::exposition::{self, Family};
use outrigger::telemetry::probe;
use outrigger::telemetry::process::Sample;

use corpus::Record;
use frames::{Frames, Mode};
use receiver::{Kind, Receiver};

#[derive(Parser)]
#[command(about = "Load Outrigger over the forward protocol and measure its cost")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the deterministic Docker-shaped corpus as JSON lines, and print its statistics.
    Corpus {
        /// Output file; `-` for stdout.
        #[arg(long, default_value_os_t = repository().join(corpus::DEFAULT_PATH))]
        out: PathBuf,
        #[arg(long, default_value_t = corpus::DEFAULT_RECORDS)]
        records: usize,
    },
    /// Write seed inputs for the fuzz targets in `fuzz/` (see `fuzz/README.md`).
    FuzzSeeds {
        /// Directory that gets `forward_decode/` and `enrich/`.
        #[arg(long, default_value_os_t = repository().join("fuzz/seeds"))]
        out: PathBuf,
        /// Corpus file (JSON lines); when missing, the same records are generated in memory.
        #[arg(long, default_value_os_t = repository().join(corpus::DEFAULT_PATH))]
        corpus: PathBuf,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Events to send in each run.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Client connections, one sending thread each; events are split evenly.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// message | forward | packed | compressed (gzip) | zstd
    #[arg(long, default_value = "message", value_parser = ["message", "forward", "packed", "compressed", "zstd"])]
    mode: String,
    /// Parse and enrich in the started Outrigger (`[enrich] enabled`); `off` measures
    /// decoding and delivery alone. Not used with --target.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    enrich: String,
    /// Events per request in the modes other than message.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Repeat the whole measurement (with a fresh Outrigger each time) and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Corpus file (JSON lines) to replay instead of the generated one.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Records of the generated corpus (kept in `target/loadgen/` once written).
    #[arg(long, default_value_t = corpus::RUN_RECORDS)]
    corpus_records: usize,
    /// The outrigger binary; default: `outrigger` next to this executable.
    #[arg(long)]
    outrigger: Option<PathBuf>,
    /// Give up when the sink has not counted every event this long after sending began.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Drive an Outrigger that is already running, at this forward address.
    #[arg(long, requires = "metrics_url")]
    target: Option<String>,
    /// With --target: its process ID, to measure its CPU time and peak RSS.
    #[arg(long, requires = "target")]
    pid: Option<i32>,
    /// With --target: its metrics endpoint, like http://127.0.0.1:2020/metrics.
    #[arg(long)]
    metrics_url: Option<String>,
    /// Where the started Outrigger delivers: `blackhole` (counts and discards), or an
    /// exporter (`loki`, `elasticsearch`, `otlp` over gRPC, `otlp-http` with protobuf) with
    /// its default settings, sending to a stand-in backend that loadgen runs on 127.0.0.1.
    #[arg(long, default_value = "blackhole", value_parser = Kind::NAMES)]
    sink: String,
    /// Where the started Outrigger buffers: `memory` (the queues), or `disk` (`[buffer]
    /// type = "disk"`, fsync always, its log in the run's temporary directory).
    #[arg(long, default_value = "memory", value_parser = ["memory", "disk"])]
    buffer: String,
    /// With `--buffer disk`: `buffer.fsync`.
    #[arg(long, default_value = "always", value_parser = ["always", "interval", "never"])]
    fsync: String,
    /// Every request asks for an ack (a `chunk` option) and the next is sent only once it
    /// came, as Docker's `fluentd-request-ack` does; message and forward modes.
    #[arg(long)]
    acks: bool,
    /// Measure the file source: the events as CRI lines in this many files, written before
    /// the start (no forward traffic).
    #[arg(long, default_value_t = 0, conflicts_with = "target")]
    files: usize,
    /// With --files: this many more files of one line each (mostly idle files).
    #[arg(long, default_value_t = 0, requires = "files")]
    idle_files: usize,
    /// Where this run's files are (set per run).
    #[arg(skip)]
    files_dir: Option<PathBuf>,
    /// The sink whose `outrigger_sink_events_total` counts delivered events; default: the
    /// name loadgen gives the `--sink` it configures (`null` for the blackhole, else the
    /// exporter's name, `otlp_http` for `otlp-http`). For --target.
    #[arg(long)]
    sink_name: Option<String>,
}

impl RunArgs {
    fn kind(&self) -> Kind {
        Kind::parse(&self.sink).expect("clap checked the sink")
    }

    fn sink_name(&self) -> String {
        self.sink_name
            .clone()
            .unwrap_or_else(|| self.kind().sink_name().to_string())
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Corpus { out, records }) => write_corpus(&out, records),
        Some(Cmd::FuzzSeeds { out, corpus }) => corpus::load(&corpus)
            .map_err(|e| anyhow!(e))
            .and_then(|records| {
                let cases = repository().join("testdata/enrich");
                seeds::write(&out, &records, &cases)
            }),
        None => run(&cli.run),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The repository loadgen was built in (its package is `loadgen/` there): the committed
/// corpus, `testdata/enrich/`, `fuzz/seeds/` and the generated corpora in `target/loadgen/`
/// are found from here.
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadgen/ is a directory of the repository")
}

fn write_corpus(out: &Path, n: usize) -> anyhow::Result<()> {
    let records = corpus::generate(n);
    let text = corpus::to_jsonl(&records);
    if out == Path::new("-") {
        std::io::stdout().write_all(text.as_bytes())?;
    } else {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {} ({} bytes)", out.display(), text.len());
    }
    print_stats(&records);
    Ok(())
}

/// What the corpus looks like, so its claims can be checked.
fn print_stats(records: &[Record]) {
    let n = records.len().max(1) as f64;
    let lens: Vec<usize> = records.iter().map(|r| r.log.len()).collect();
    let json: Vec<&Record> = records.iter().filter(|r| r.log.starts_with('{')).collect();
    let traced = json.iter().filter(|r| corpus::has_trace_id(&r.log)).count();
    let stderr = records.iter().filter(|r| r.source == "stderr").count();
    let mut frame = Vec::new();
    for r in records {
        frames::encode(&mut frame, Mode::Message, &[r], 0);
    }
    eprintln!(
        "records {}: log bytes mean {:.1} min {} max {}; JSON {:.1}% (with trace/span IDs {:.1}% of JSON); text {:.1}%; stderr {:.1}%; Message-mode frame mean {:.1} bytes",
        records.len(),
        lens.iter().sum::<usize>() as f64 / n,
        lens.iter().min().unwrap_or(&0),
        lens.iter().max().unwrap_or(&0),
        json.len() as f64 * 100.0 / n,
        traced as f64 * 100.0 / json.len().max(1) as f64,
        (records.len() - json.len()) as f64 * 100.0 / n,
        stderr as f64 * 100.0 / n,
        frame.len() as f64 / n,
    );
}

/// The Outrigger being measured.
struct Target {
    forward: SocketAddr,
    metrics: HttpUrl,
    pid: Option<i32>,
    /// Set when we started it: stopped and cleaned up by [`Target::stop`].
    child: Option<(Child, PathBuf)>,
}

/// Results of one run.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    events: u64,
    bytes: u64,
    wall_s: f64,
    cpu_s: Option<f64>,
    peak_rss_mib: Option<f64>,
    /// Disk buffer syncs during the run (none with the memory buffer).
    syncs: u64,
}

impl Measured {
    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.wall_s
    }
    fn cpu_per_million(&self) -> Option<f64> {
        self.cpu_s.map(|c| c * 1e6 / self.events as f64)
    }
    fn events_per_cpu_s(&self) -> Option<f64> {
        self.cpu_s
            .filter(|c| *c > 0.0)
            .map(|c| self.events as f64 / c)
    }
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let mode = Mode::parse(&args.mode).expect("clap checked the mode");
    if args.acks && !matches!(mode, Mode::Message | Mode::Forward) {
        bail!("--acks works with --mode message or forward");
    }
    if args.events == 0 || args.connections == 0 || args.runs == 0 {
        bail!("--events, --connections and --runs must be at least 1");
    }
    let loading = Instant::now();
    let (path, records) = match &args.corpus {
        Some(p) => (p.clone(), corpus::load(p).map_err(|e| anyhow!(e))?),
        None => corpus::cached(repository(), args.corpus_records).map_err(|e| anyhow!(e))?,
    };
    eprintln!(
        "loadgen: corpus {} ({} records, {:.1} s to load)",
        path.display(),
        records.len(),
        loading.elapsed().as_secs_f64()
    );
    let corpus = Arc::new(records);
    if corpus.is_empty() {
        bail!("the corpus is empty");
    }
    let per_frame = if mode == Mode::Message {
        1
    } else {
        args.batch.max(1)
    };
    let frames = Arc::new(Frames::cycle(&corpus, mode, per_frame));
    eprintln!(
        "loadgen: mode {} ({} events per request), enrich {}, {} events over {} connection(s), {} run(s); {} distinct requests, {:.1} bytes per event on the wire",
        mode.name(),
        per_frame,
        if args.target.is_some() {
            "as configured"
        } else {
            &args.enrich
        },
        args.events,
        args.connections,
        args.runs,
        frames.ends.len(),
        frames.bytes.len() as f64 / frames.events() as f64,
    );
    // The stand-in backend, for the Outriggers started here; it outlives every run.
    let receiver = match args.target {
        Some(_) => None,
        None => Receiver::start(args.kind())?,
    };
    if let Some(r) = &receiver {
        eprintln!(
            "loadgen: sink {} ({}) delivering to a stand-in backend at {}",
            args.sink,
            args.sink_name(),
            r.addr
        );
    }
    let mut results = Vec::new();
    for i in 0..args.runs {
        let (requests0, bytes0) = receiver.as_ref().map_or((0, 0), received);
        let mut run_args = args.clone();
        let t0 = Instant::now();
        if args.files > 0 {
            let dir = std::env::temp_dir().join(format!(
                "outrigger-loadgen-files-{}-{i}",
                std::process::id()
            ));
            write_files(&dir, &corpus, args)?;
            eprintln!(
                "loadgen: {} lines in {} files and {} idle files under {} ({:.1} s to write)",
                args.events,
                args.files,
                args.idle_files,
                dir.display(),
                t0.elapsed().as_secs_f64()
            );
            run_args.files_dir = Some(dir);
        }
        let args = &run_args;
        let t0 = Instant::now();
        let mut target = match &args.target {
            Some(addr) => external(args, addr)?,
            None => spawn(args, receiver.as_ref().map(|r| r.addr))?,
        };
        let r = if args.files > 0 {
            measure_files(args, &target, t0)
        } else {
            measure(args, mode, &target, &corpus, &frames)
        };
        if let Some(dir) = &args.files_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let stopped = target.stop();
        let r = r?;
        stopped?;
        println!(
            "{}",
            line(&format!("run {}/{}", i + 1, args.runs), args, mode, &r)
        );
        if let Some(rcv) = &receiver {
            let (requests, bytes) = received(rcv);
            let (requests, bytes) = (requests - requests0, bytes - bytes0);
            println!(
                "  backend: {requests} requests, {:.0} events per request, {:.1} body bytes per event",
                r.events as f64 / requests.max(1) as f64,
                bytes as f64 / r.events as f64
            );
        }
        results.push(r);
    }
    if results.len() > 1 {
        let med =
            |f: &dyn Fn(&Measured) -> Option<f64>| median(results.iter().filter_map(f).collect());
        println!(
            "median of {} (mode={} enrich={} sink={}): events/s {:.0}  cpu-s/1M {}  events/cpu-s {}  peak RSS MiB {}  wall s {:.3}",
            results.len(),
            if args.files > 0 {
                format!("file({}+{} idle)", args.files, args.idle_files)
            } else {
                mode.name().to_string()
            },
            if args.target.is_some() {
                "as-configured"
            } else {
                &args.enrich
            },
            args.sink_name(),
            med(&|r| Some(r.events_per_s())).unwrap_or(0.0),
            fmt_opt(med(&|r| r.cpu_per_million()), 3),
            fmt_opt(med(&|r| r.events_per_cpu_s()), 0),
            fmt_opt(med(&|r| r.peak_rss_mib), 1),
            med(&|r| Some(r.wall_s)).unwrap_or(0.0),
        );
    }
    Ok(())
}

/// Requests and body bytes the stand-in backend has taken so far.
fn received(r: &Receiver) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    (
        r.counts.requests.load(Relaxed),
        r.counts.bytes.load(Relaxed),
    )
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.decimals$}"))
}

fn line(label: &str, args: &RunArgs, mode: Mode, r: &Measured) -> String {
    format!(
        "{label}: mode={} buffer={} acks={} enrich={} sink={} connections={} events={} bytes={} wall_s={:.3} events_per_s={:.0} cpu_s={} cpu_s_per_1M={} events_per_cpu_s={} peak_rss_mib={} syncs_per_s={:.0}",
        if args.files > 0 {
            format!("file({}+{} idle)", args.files, args.idle_files)
        } else {
            mode.name().to_string()
        },
        if args.buffer == "disk" {
            format!("disk/{}", args.fsync)
        } else {
            args.buffer.clone()
        },
        args.acks,
        if args.target.is_some() {
            "as-configured"
        } else {
            &args.enrich
        },
        args.sink_name(),
        args.connections,
        r.events,
        r.bytes,
        r.wall_s,
        r.events_per_s(),
        fmt_opt(r.cpu_s, 2),
        fmt_opt(r.cpu_per_million(), 3),
        fmt_opt(r.events_per_cpu_s(), 0),
        fmt_opt(r.peak_rss_mib, 1),
        r.syncs as f64 / r.wall_s,
    )
}

/// Sends, waits for the count, and measures.
fn measure(
    args: &RunArgs,
    mode: Mode,
    target: &Target,
    corpus: &Arc<Vec<Record>>,
    frames: &Arc<Frames>,
) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let sink = args.sink_name();
    let before = scrape(&target.metrics)?;
    let base = metric(&before, "outrigger_sink_events_total", Some(&sink)).unwrap_or(0);
    let base_source = metric(&before, "outrigger_source_events_total", None).unwrap_or(0);
    let base_rejected = metric(&before, "outrigger_source_rejected_total", None).unwrap_or(0);
    let base_errors =
        metric(&before, "outrigger_source_connection_errors_total", None).unwrap_or(0);
    let base_syncs = metric(&before, "outrigger_buffer_syncs_total", None).unwrap_or(0);

    // Connect everything and split the events before the clock starts.
    let n = args.connections;
    let start = Arc::new(Barrier::new(n + 1));
    let mut threads = Vec::with_capacity(n);
    let mut first = 0;
    for i in 0..n {
        let events = args.events / n + usize::from(i < args.events % n);
        // Where in the corpus this connection starts: after the events of the ones before.
        let from = first;
        first += events;
        let stream = TcpStream::connect_timeout(&target.forward, Duration::from_secs(5))
            .with_context(|| format!("connecting to {}", target.forward))?;
        let (frames, corpus, start) = (frames.clone(), corpus.clone(), start.clone());
        let acks = args.acks;
        threads.push(std::thread::spawn(move || {
            send(
                stream, &frames, &corpus, mode, from, events, &start, deadline, acks,
            )
        }));
    }
    // Give the accept loop a moment so connection setup is not in the measured CPU time.
    std::thread::sleep(Duration::from_millis(100));

    let cpu0 = target.pid.map(cpu_seconds).transpose()?;
    let t0 = Instant::now();
    start.wait();
    let mut bytes = 0;
    let mut failed = None;
    for t in threads {
        match t.join() {
            Ok(Ok(b)) => bytes += b,
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(anyhow!("a sending thread panicked")),
        }
    }
    if let Some(e) = failed {
        return Err(e.context("sending"));
    }

    // Every connection was drained by the server; wait for the sink to count it all.
    let want = base + args.events as u64;
    let (done, last) = wait_count(target, &sink, want, deadline, |got, text| {
        anyhow!(
            "timed out: sink `{sink}` counted {} of {} events ({})",
            got - base,
            args.events,
            summary(text)
        )
    })?;
    let cpu1 = target.pid.map(cpu_seconds).transpose()?;
    let peak = target.pid.map(peak_rss_mib).transpose()?;

    let got = metric(&last, "outrigger_sink_events_total", Some(&sink)).unwrap_or(0) - base;
    let source = metric(&last, "outrigger_source_events_total", None).unwrap_or(0) - base_source;
    let rejected =
        metric(&last, "outrigger_source_rejected_total", None).unwrap_or(0) - base_rejected;
    let errors =
        metric(&last, "outrigger_source_connection_errors_total", None).unwrap_or(0) - base_errors;
    if got != args.events as u64 || source != args.events as u64 || rejected != 0 || errors != 0 {
        bail!(
            "counts do not match: sent {} events, source counted {source}, sink {got}, rejected {rejected}, connection errors {errors}",
            args.events
        );
    }
    // The cursor keeper copies the writer's count every 250 ms.
    std::thread::sleep(Duration::from_millis(300));
    let syncs = metric(
        &scrape(&target.metrics)?,
        "outrigger_buffer_syncs_total",
        None,
    )
    .unwrap_or(0)
        - base_syncs;
    Ok(Measured {
        syncs,
        events: args.events as u64,
        bytes,
        wall_s: done.duration_since(t0).as_secs_f64(),
        cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        peak_rss_mib: peak,
    })
}

/// Writes `args.events` corpus lines as CRI lines, split evenly over `args.files` files,
/// and one line into each of `args.idle_files` more, under `dir` (made afresh).
fn write_files(dir: &Path, corpus: &[Record], args: &RunArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut times = outrigger::sink::jsonl::TimeCache::default();
    let mut line = |out: &mut Vec<u8>, n: usize| {
        let r = &corpus[n % corpus.len()];
        let stream = if r.source == "stderr" {
            "stderr"
        } else {
            "stdout"
        };
        // A distinct time per line, as a runtime writes them (RFC 3339, as the sinks do).
        let time = outrigger::event::Timestamp {
            secs: 1_780_000_000 + (n / 1_000_000) as i64,
            nanos: (n % 1_000_000 * 1000) as u32,
        };
        times.write(out, time);
        let _ = write!(out, " {stream} F ");
        out.extend(
            r.log
                .trim_end_matches('\n')
                .bytes()
                .map(|b| if b == b'\n' { b' ' } else { b }),
        );
        out.push(b'\n');
    };
    let n = args.files;
    let mut first = 0;
    for f in 0..n {
        let lines = args.events / n + usize::from(f < args.events % n);
        let mut out = Vec::with_capacity(lines * 200);
        for k in first..first + lines {
            line(&mut out, k);
        }
        first += lines;
        std::fs::write(dir.join(format!("busy-{f}.log")), &out)?;
    }
    for f in 0..args.idle_files {
        let mut out = Vec::new();
        line(&mut out, args.events + f);
        std::fs::write(dir.join(format!("idle-{f}.log")), &out)?;
    }
    Ok(())
}

/// Polls the metrics until sink `sink` has counted `want` events: when, and the metrics
/// then. Past `deadline`, the error `timed_out` makes of its count and the metrics.
fn wait_count(
    target: &Target,
    sink: &str,
    want: u64,
    deadline: Instant,
    timed_out: impl Fn(u64, &[Family]) -> anyhow::Error,
) -> anyhow::Result<(Instant, Vec<Family>)> {
    loop {
        let text = scrape(&target.metrics)?;
        let got = metric(&text, "outrigger_sink_events_total", Some(sink)).unwrap_or(0);
        if got >= want {
            return Ok((Instant::now(), text));
        }
        if Instant::now() > deadline {
            return Err(timed_out(got, &text));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for the sink to count every line the files hold, from `t0` (just before the
/// start: the source reads from its first moment), and measures.
fn measure_files(args: &RunArgs, target: &Target, t0: Instant) -> anyhow::Result<Measured> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let sink = args.sink_name();
    let want = (args.events + args.idle_files) as u64;
    let (done, last) = wait_count(target, &sink, want, deadline, |got, text| {
        anyhow!(
            "timed out: sink `{sink}` counted {got} of {want} lines ({})",
            summary(text)
        )
    })?;
    let cpu = target.pid.map(cpu_seconds).transpose()?;
    let peak = target.pid.map(peak_rss_mib).transpose()?;
    let got = metric(&last, "outrigger_sink_events_total", Some(&sink)).unwrap_or(0);
    if got != want {
        bail!("counts do not match: {want} lines written, sink counted {got}");
    }
    Ok(Measured {
        events: want,
        bytes: 0,
        wall_s: done.duration_since(t0).as_secs_f64(),
        cpu_s: cpu,
        peak_rss_mib: peak,
        syncs: 0,
    })
}

/// One connection's work: `events` events as requests cycled from `frames`, starting at
/// the request that holds event `from`, then a half-close, then the server's own close,
/// which says it has handed everything on.
#[allow(clippy::too_many_arguments)]
fn send(
    mut stream: TcpStream,
    frames: &Frames,
    corpus: &[Record],
    mode: Mode,
    from: usize,
    events: usize,
    start: &Barrier,
    deadline: Instant,
    acks: bool,
) -> anyhow::Result<u64> {
    let per = frames.per_frame;
    let whole = events / per;
    let first = from / per;
    // A last, shorter request for what does not fill a whole one.
    let rest = match events % per {
        0 => Frames::default(),
        k => Frames::build(corpus, mode, k, (first + whole) * per, 1),
    };
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    start.wait();
    let mut sent = if acks {
        stream.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))?;
        let sent = write_acked(&mut stream, frames, first, whole)?;
        sent + write_acked(&mut stream, &rest, 0, rest.ends.len())?
    } else {
        write_frames(&mut stream, frames, first, whole)?
    };
    if !acks {
        stream.write_all(&rest.bytes)?;
        sent += rest.bytes.len() as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    // Bounded: each read waits at most until the run's deadline.
    let mut sink = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the server did not close the connection before the deadline");
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("waiting for the server to close"),
        }
    }
    Ok(sent)
}

/// Writes `count` requests of `frames` from request `first` on, going round as often as
/// needed; says how many bytes.
fn write_frames(
    stream: &mut TcpStream,
    frames: &Frames,
    first: usize,
    count: usize,
) -> std::io::Result<u64> {
    let n = frames.ends.len();
    let (mut at, mut left, mut sent) = (first % n, count, 0u64);
    while left > 0 {
        let take = left.min(n - at);
        let bytes = &frames.bytes[frames.start(at)..frames.ends[at + take - 1]];
        stream.write_all(bytes)?;
        sent += bytes.len() as u64;
        left -= take;
        at = (at + take) % n;
    }
    Ok(sent)
}

/// [`write_frames`], each request asking for an ack (its empty options map replaced by
/// `{"chunk": …}`) and the next written only once the ack came.
fn write_acked(
    stream: &mut TcpStream,
    frames: &Frames,
    first: usize,
    count: usize,
) -> std::io::Result<u64> {
    let n = frames.ends.len();
    let (mut sent, mut request, mut ack) = (0u64, Vec::new(), Vec::new());
    for k in 0..count {
        let i = (first + k) % n;
        let bytes = &frames.bytes[frames.start(i)..frames.ends[i]];
        // Message and Forward requests end with their options: an empty map.
        assert_eq!(
            bytes.last(),
            Some(&0x80),
            "a request ending in empty options"
        );
        let chunk = format!("{k:016x}");
        request.clear();
        request.extend_from_slice(&bytes[..bytes.len() - 1]);
        request.extend_from_slice(b"\x81\xa5chunk\xb0");
        request.extend_from_slice(chunk.as_bytes());
        stream.write_all(&request)?;
        sent += request.len() as u64;
        // {"ack": "<chunk>"}
        ack.resize(5 + 1 + 16, 0);
        stream.read_exact(&mut ack)?;
        if &ack[6..] != chunk.as_bytes() {
            return Err(std::io::Error::other("an ack for another request"));
        }
    }
    Ok(sent)
}

fn summary(metrics: &[Family]) -> String {
    [
        "outrigger_source_events_total",
        "outrigger_source_rejected_total",
        "outrigger_source_connection_errors_total",
        "outrigger_queue_events",
    ]
    .iter()
    .map(|m| format!("{m}={}", metric(metrics, m, None).unwrap_or(0)))
    .collect::<Vec<_>>()
    .join(" ")
}

/// Sum of the series called `name` (with `component="…"` when given) in a scrape.
fn metric(metrics: &[Family], name: &str, component: Option<&str>) -> Option<u64> {
    let mut found = None;
    let samples = metrics.iter().flat_map(|f| &f.samples);
    for sample in samples.filter(|s| s.name == name) {
        if let Some(c) = component
            && !sample
                .labels
                .iter()
                .any(|(k, v)| k == "component" && v == c)
        {
            continue;
        }
        *found.get_or_insert(0) += sample.value.as_f64() as u64;
    }
    found
}

// ---- Outrigger as a child process --------------------------------------------------------

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(args: &RunArgs, backend: Option<SocketAddr>) -> anyhow::Result<Target> {
    let bin = match &args.outrigger {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this executable has no directory")?
            .join("outrigger"),
    };
    if !bin.is_file() {
        bail!(
            "no outrigger binary at {} (build it with `cargo build --release --bins`, or pass --outrigger)",
            bin.display()
        );
    }
    let (forward, admin) = (free_port()?, free_port()?);
    let dir = std::env::temp_dir().join(format!(
        "outrigger-loadgen-{}-{forward}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("outrigger.toml");
    std::fs::write(&config, config_text(args, forward, admin, backend, &dir))?;
    let stderr = std::fs::File::create(dir.join("stderr.log"))?;
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id() as i32;
    let mut target = Target {
        forward: ([127, 0, 0, 1], forward).into(),
        metrics: HttpUrl {
            addr: ([127, 0, 0, 1], admin).into(),
            path: "/metrics".into(),
        },
        pid: Some(pid),
        child: Some((child, dir)),
    };
    // Asked as `outrigger health` asks it.
    let ready = format!("http://{}/ready", target.metrics.addr);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((child, dir)) = &mut target.child
            && let Some(status) = child.try_wait()?
        {
            let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            target.stop()?;
            bail!("outrigger exited at start ({status}):\n{log}");
        }
        if probe::check(&ready, probe::DEFAULT_TIMEOUT).is_ok() {
            return Ok(target);
        }
        if Instant::now() > deadline {
            let _ = target.stop();
            bail!("outrigger was not ready within 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The configuration of an Outrigger that loadgen starts itself; `backend` is the stand-in
/// receiver of an exporter sink.
fn config_text(
    args: &RunArgs,
    forward: u16,
    admin: u16,
    backend: Option<SocketAddr>,
    dir: &Path,
) -> String {
    let mut text = format!(
        "[global]\nlog_level = \"warn\"\nadmin_address = \"127.0.0.1:{admin}\"\ngrace_period_secs = 10\n\
         data_dir = \"{}\"\n\n\
         [sources.forward]\ntype = \"forward\"\naddress = \"127.0.0.1:{forward}\"\nheartbeat_enabled = false\n\n\
         [sinks.{}]\n{}",
        dir.join("data").display(),
        args.sink_name(),
        args.kind().sink_config(backend)
    );
    if args.buffer == "disk" {
        text.push_str(&format!(
            "\n[buffer]\ntype = \"disk\"\nmax_bytes = 8589934592\nfsync = \"{}\"\n",
            args.fsync
        ));
    }
    if args.enrich == "off" {
        text.push_str("\n[enrich]\nenabled = false\n");
    }
    if let Some(files) = &args.files_dir {
        text.push_str(&format!(
            "\n[sources.files]\ntype = \"file\"\ninclude = [\"{}/*.log\"]\nformat = \"cri\"\n",
            files.display()
        ));
    }
    text
}

fn external(args: &RunArgs, addr: &str) -> anyhow::Result<Target> {
    let forward = addr
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let url = args
        .metrics_url
        .as_deref()
        .context("--target needs --metrics-url")?;
    Ok(Target {
        forward,
        metrics: HttpUrl::parse(url)?,
        pid: args.pid,
        child: None,
    })
}

impl Target {
    /// SIGTERM, then wait (at most 30 s, then SIGKILL); removes the temporary directory.
    fn stop(&mut self) -> anyhow::Result<()> {
        let Some((mut child, dir)) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        match status {
            Some(s) if s.success() => {
                if !log.trim().is_empty() {
                    eprintln!("outrigger stderr:\n{log}");
                }
                Ok(())
            }
            Some(s) => bail!("outrigger exited with {s}:\n{log}"),
            None => bail!("outrigger did not exit within 30 s of SIGTERM; killed"),
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

// ---- /proc ---------------------------------------------------------------------------------

/// utime + stime of `pid`, in seconds: read as Outrigger reads its own for
/// `process_cpu_seconds_total`.
fn cpu_seconds(pid: i32) -> anyhow::Result<f64> {
    let pid = u32::try_from(pid).with_context(|| format!("{pid} is not a process ID"))?;
    Sample::read_pid(Path::new("/proc"), pid)
        .cpu_seconds
        .with_context(|| format!("no CPU time in /proc/{pid}/stat"))
}

/// VmHWM of `pid`, in MiB: the peak RSS, which Outrigger's own metrics do not report.
fn peak_rss_mib(pid: i32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/<pid>/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib as f64 / 1024.0)
}

// ---- minimal HTTP/1.0 client, for the metrics (the readiness probe reads no body) --------

struct HttpUrl {
    addr: SocketAddr,
    path: String,
}

impl HttpUrl {
    fn parse(url: &str) -> anyhow::Result<HttpUrl> {
        let rest = url
            .strip_prefix("http://")
            .context("only http:// URLs are supported")?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr = host
            .to_socket_addrs()?
            .next()
            .with_context(|| format!("{host} resolves to nothing"))?;
        Ok(HttpUrl {
            addr,
            path: if path.is_empty() { "/" } else { path }.into(),
        })
    }
}

fn http_get(url: &HttpUrl) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&url.addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", url.path, url.addr)?;
    let mut body = Vec::new();
    s.take(16 << 20).read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Outrigger's metrics, read with the reader its OTLP metrics export uses.
fn scrape(url: &HttpUrl) -> anyhow::Result<Vec<Family>> {
    match http_get(url)? {
        (200, body) => exposition::parse(&body).with_context(|| format!("GET {}", url.path)),
        (status, _) => bail!("GET {} answered {status}", url.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_sends_its_own_stretch_of_the_corpus_going_round() {
        let corpus = corpus::generate(10);
        let frames = Frames::cycle(&corpus, Mode::Message, 1);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut out = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut got, _) = listener.accept().unwrap();
        let sent = write_frames(&mut out, &frames, 7, 25).unwrap();
        drop(out);
        let mut bytes = Vec::new();
        got.read_to_end(&mut bytes).unwrap();
        let mut want = Vec::new();
        for i in 7..32 {
            frames::encode(
                &mut want,
                Mode::Message,
                &[&corpus[i % 10]],
                (i % 10) as u64,
            );
        }
        assert_eq!(sent, want.len() as u64);
        assert_eq!(bytes, want, "requests 7, 8, 9, then 0.. round again");
    }

    #[test]
    fn reads_labelled_counters() {
        let text = "# HELP outrigger_sink_events Events delivered.\n\
                    # TYPE outrigger_sink_events counter\n\
                    outrigger_sink_events_total{component=\"null\"} 42\n\
                    outrigger_sink_events_total{component=\"other\"} 1\n\
                    outrigger_sink_events_created{component=\"null\"} 5\n\
                    # EOF\n";
        let metrics = exposition::parse(text).unwrap();
        assert_eq!(
            metric(&metrics, "outrigger_sink_events_total", Some("null")),
            Some(42)
        );
        assert_eq!(
            metric(&metrics, "outrigger_sink_events_total", None),
            Some(43)
        );
        assert_eq!(
            metric(&metrics, "outrigger_source_events_total", None),
            None
        );
    }

    #[test]
    fn generated_config_is_valid_and_switches_enrichment() {
        for (flag, enabled) in [("on", true), ("off", false)] {
            let args = Cli::try_parse_from(["loadgen", "--enrich", flag])
                .unwrap()
                .run;
            let text = config_text(&args, 24224, 2020, None, Path::new("/tmp/x"));
            let settings = outrigger::config::parse("loadgen.toml", &text, |_| None)
                .unwrap_or_else(|e| panic!("--enrich {flag}: {e}\n{text}"));
            assert_eq!(settings.enrich.enabled, enabled, "--enrich {flag}");
        }
        assert!(Cli::try_parse_from(["loadgen", "--enrich", "maybe"]).is_err());
    }

    #[test]
    fn generated_config_names_each_sink() {
        let backend: SocketAddr = ([127, 0, 0, 1], 9).into();
        for kind in Kind::NAMES {
            let args = Cli::try_parse_from(["loadgen", "--sink", kind])
                .unwrap()
                .run;
            let text = config_text(&args, 24224, 2020, Some(backend), Path::new("/tmp/x"));
            let settings = outrigger::config::parse("loadgen.toml", &text, |_| None)
                .unwrap_or_else(|e| panic!("--sink {kind}: {e}\n{text}"));
            assert_eq!(settings.sinks.len(), 1, "--sink {kind}");
            assert!(
                text.contains(&format!("[sinks.{}]", args.sink_name())),
                "{text}"
            );
        }
        assert!(Cli::try_parse_from(["loadgen", "--sink", "kafka"]).is_err());
    }

    #[test]
    fn every_mode_decodes_as_outrigger_reads_it() {
        let corpus = corpus::generate(50);
        for mode in Mode::ALL {
            let f = Frames::build(&corpus, mode, 7, 3, 4);
            let mut scanner = outrigger::msgpack::Scanner::default();
            let mut pos = 0;
            for &end in &f.ends {
                assert_eq!(
                    scanner.scan(&f.bytes[pos..], 1 << 24, 64),
                    Ok(Some(end - pos))
                );
                pos = end;
            }
        }
    }
}
