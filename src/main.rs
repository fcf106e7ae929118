//! The `outrigger` command: parse arguments, load the configuration, run the topology until a
//! stop signal, drain, and turn the outcome into an exit code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use outrigger::config::{self, LogFormat, Settings};
use outrigger::telemetry::{logging, probe};
use outrigger::topology;

/// Receives container logs over the Fluentd forward protocol and ships them on.
///
/// With no subcommand, runs. With no --config, runs the built-in default: a forward listener
/// on 127.0.0.1:24224 printing every event as a JSON line on stdout.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). `${VAR}` and `${VAR:-default}` are read from the environment.
    #[arg(short, long, global = true, env = "OUTRIGGER_CONFIG")]
    config: Option<PathBuf>,
    /// Format of Outrigger's own log on stderr; overrides `global.log_format`.
    #[arg(long, global = true, value_parser = ["json", "text"])]
    log_format: Option<String>,
    /// Log level or tracing filter; overrides `global.log_level`.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run until SIGTERM or SIGINT, then drain (the default).
    Run,
    /// Check a configuration (syntax, keys, types, values, TLS files) and exit: 0 when valid,
    /// 1 with the error otherwise.
    Validate,
    /// Ask a running Outrigger's admin endpoint (default: /ready at the configuration's
    /// admin address) and exit 0 on HTTP 200, 1 otherwise. For container health checks.
    Health(HealthArgs),
    /// Operate on the disk buffer's files (with Outrigger stopped).
    #[command(subcommand)]
    Buffer(BufferCommand),
}

#[derive(Subcommand)]
enum BufferCommand {
    /// Read the log under DATA_DIR/buffer through without changing it: each segment's
    /// records, any damage and what the next start does about it, each sink's cursor. Exit 0
    /// when nothing is damaged, 1 otherwise.
    Verify {
        /// The data directory (`global.data_dir`).
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print the events of every record the log under DATA_DIR/buffer keeps, one JSON object
    /// per line as the `stdout` sink writes them (as the sources accepted them, before
    /// enrichment); a summary on stderr.
    Dump {
        /// The data directory (`global.data_dir`).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct HealthArgs {
    /// The whole URL to GET (http only); overrides --address and --path.
    #[arg(long)]
    url: Option<String>,
    /// Admin address as HOST:PORT [default: `global.admin_address` of --config, with
    /// 0.0.0.0 or [::] probed on loopback; 127.0.0.1:2020 without --config]
    #[arg(long)]
    address: Option<String>,
    /// Path to GET: /ready (accepting traffic) or /live (worth keeping alive).
    #[arg(long, default_value = "/ready")]
    path: String,
    /// Give up after this long in all (connect, send, first line of the answer).
    #[arg(long, default_value_t = probe::DEFAULT_TIMEOUT.as_millis() as u64)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health(args)) = &cli.command {
        return health(args, cli.config.as_ref());
    }
    if let Some(Command::Buffer(command)) = &cli.command {
        return buffer(command);
    }
    let settings = match load(cli.config.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("outrigger: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::Validate => match check(&settings) {
            Ok(()) => {
                let name = cli
                    .config
                    .map_or("built-in default".into(), |p| p.display().to_string());
                println!(
                    "{name}: valid ({} sources, {} sinks)",
                    settings.sources.len(),
                    settings.sinks.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("outrigger: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Health(_) | Command::Buffer(_) => {
            unreachable!("handled before loading the configuration")
        }
        Command::Run => {
            let format = match cli.log_format.as_deref() {
                Some("text") => LogFormat::Text,
                Some(_) => LogFormat::Json,
                None => settings.global.log_format,
            };
            let level = cli
                .log_level
                .as_deref()
                .unwrap_or(&settings.global.log_level);
            if let Err(e) = logging::init(format, level) {
                eprintln!("outrigger: {e}");
                return ExitCode::from(1);
            }
            run(settings)
        }
    }
}

/// `outrigger buffer verify|dump`: the disk buffer's files, without loading a configuration.
fn buffer(command: &BufferCommand) -> ExitCode {
    use outrigger::buffer::disk;
    let (BufferCommand::Verify { data_dir } | BufferCommand::Dump { data_dir }) = command;
    let dir = data_dir.join(disk::DIR);
    let mut stdout = std::io::stdout().lock();
    let result = match command {
        BufferCommand::Verify { .. } => disk::verify(&dir, &mut stdout),
        BufferCommand::Dump { .. } => topology::buffer::dump(&dir, &mut stdout).map(|d| {
            eprintln!(
                "{}: {} records, {} events, {} unreadable",
                dir.display(),
                d.records,
                d.events,
                d.unreadable
            );
            d.unreadable == 0
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("outrigger: {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}

/// `outrigger health`: one line on stdout and exit 0 when the endpoint answers 200, one line on
/// stderr and exit 1 otherwise. The configuration is read only when it is where the address
/// comes from, so an explicit --url works whatever the file holds.
fn health(args: &HealthArgs, config: Option<&PathBuf>) -> ExitCode {
    let url = match (&args.url, &args.address) {
        (Some(url), _) => Ok(url.clone()),
        (None, Some(address)) => Ok(format!("http://{address}{}", args.path)),
        (None, None) => match load(config) {
            Ok(settings) => {
                probe::admin_url(&settings.global, &args.path).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
    };
    let result = url.and_then(|url| {
        probe::check(&url, Duration::from_millis(args.timeout_ms))
            .map(|status| format!("{url}: {status}"))
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("outrigger health: {why}");
            ExitCode::from(1)
        }
    }
}

/// Runs [`topology::check`] on a small runtime of its own (gRPC channels need one).
fn check(settings: &Settings) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(topology::check(settings))
}

fn load(path: Option<&PathBuf>) -> Result<Settings, config::Error> {
    match path {
        Some(p) => config::load(p),
        None => config::parse("built-in default", config::DEFAULT, |v| {
            std::env::var(v).ok()
        }),
    }
}

fn run(settings: Settings) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("outrigger: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        // Before anything starts: a SIGTERM during start-up must drain, not kill.
        let mut signals = match topology::Signals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("outrigger: installing signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
        let running = match topology::start(&settings).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "start failed");
                return ExitCode::from(1);
            }
        };
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "started");
        let signal = signals.recv().await;
        tracing::info!(
            signal,
            grace_period_secs = settings.global.grace_period_secs,
            "draining"
        );
        tokio::spawn(async move {
            let signal = signals.recv().await;
            tracing::warn!(signal, "second signal: exiting without finishing the drain");
            std::process::exit(130);
        });
        match running.shutdown().await {
            Ok(()) => {
                tracing::info!("drained, exiting");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "exiting with events undelivered");
                ExitCode::from(1)
            }
        }
    })
}
