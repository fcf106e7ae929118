//! Outrigger's own container image, end to end: `outrigger-local:latest` (built by
//! `tests/docker/build-runtime-image.sh`, the Dockerfile's runtime stage FROM scratch) run
//! hardened as in production (read-only root, no capabilities, no-new-privileges, UID 65532,
//! 256 MiB), an application container logging to it through Docker's `fluentd` driver with
//! acks, export to an in-test HTTP backend, Docker's health check, and `docker stop`.
//!
//! The point of the stop: the application's lines are acknowledged (queued) by Outrigger
//! while its sink still holds them (a long flush interval), so only the SIGTERM drain can
//! deliver them. Each must reach the backend exactly once, and the container must exit 0.
//!
//! The containers use the host's network (as the driver does: it dials from the engine), so
//! the backend listens on 127.0.0.1 and Outrigger reaches it as `localhost`, which also
//! checks that the static binary resolves names in an image with no NSS libraries.
//!
//! Skipped like `docker.rs` without an engine (a failure with `OUTRIGGER_REQUIRE_DOCKER=1`),
//! and likewise when the image has not been built.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::backend::{Backend, free_addr};
use crate::clients::{require, run_blocking};
use crate::docker::{IMAGE as APP_IMAGE, docker_ready, run_container, unique_name};

pub(crate) const IMAGE: &str = "outrigger-local:latest";
/// Lines the application prints.
const LINES: usize = 300;
/// Longer than the test could take before `docker stop`: what is queued stays queued until
/// the drain flushes it.
const FLUSH_MS: u64 = 120_000;

/// Removes the containers it names, on every path out of the test.
pub(crate) struct Containers(pub(crate) Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v", name])
                .output();
        }
    }
}

/// Whether the runtime image exists (checked once per process).
pub(crate) async fn image_ready(test: &str) -> bool {
    if !docker_ready(test).await {
        return false;
    }
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    let state = tokio::task::spawn_blocking(|| {
        STATE
            .get_or_init(|| {
                let out = Command::new("docker")
                    .args(["image", "inspect", "--format", "{{.Size}}", IMAGE])
                    .output()
                    .map_err(|e| e.to_string())?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "no image {IMAGE}: run tests/docker/build-runtime-image.sh first"
                    ))
                }
            })
            .clone()
    })
    .await
    .unwrap();
    require(test, "OUTRIGGER_REQUIRE_DOCKER", &state)
}

pub(crate) async fn docker(args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run_blocking(cmd, Duration::from_secs(60)).await
}

pub(crate) async fn inspect(name: &str, format: &str) -> String {
    let out = docker(&["inspect", "--format", format, name]).await;
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What went wrong, for assertion messages: the container's log and its health checks.
pub(crate) async fn diagnose(name: &str) -> String {
    let logs = docker(&["logs", "--tail", "30", name]).await;
    format!(
        "state {}; health log {}; last log lines:\n{}{}",
        inspect(name, "{{json .State}}").await,
        inspect(name, "{{json .State.Health}}").await,
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    )
}

/// Polls `docker inspect` until `format` renders `want` (at most `limit`).
pub(crate) async fn wait_for(name: &str, format: &str, want: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if inspect(name, format).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn hardened_image_exports_and_drains_on_docker_stop() {
    let test = "docker_image::hardened_image_exports_and_drains_on_docker_stop";
    if !image_ready(test).await {
        return;
    }
    let backend = Backend::start(vec![]).await;
    let (forward, admin) = (free_addr().await.port(), free_addr().await.port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outrigger.toml");
    std::fs::write(
        &config,
        format!(
            "[global]\nadmin_address = \"0.0.0.0:{admin}\"\ngrace_period_secs = 20\n\n\
             [sources.forward]\ntype = \"forward\"\naddress = \"0.0.0.0:{forward}\"\n\n\
             [sinks.backend]\ntype = \"http\"\nendpoint = \"http://localhost:{}\"\n\
             flush_interval_ms = {FLUSH_MS}\nmax_batch_events = 100000\n\
             max_batch_bytes = 67108864\n",
            backend.addr.port()
        ),
    )
    .unwrap();
    let outrigger = unique_name("image");
    let app = unique_name("image-app");
    let _cleanup = Containers(vec![outrigger.clone(), app.clone()]);

    let out = run_hardened(
        &outrigger,
        &config,
        &[
            "--memory",
            "256m",
            "--health-interval",
            "1s",
            "--health-timeout",
            "3s",
            "--health-retries",
            "3",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "docker run {IMAGE}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inspect(&outrigger, "{{.Config.User}}").await, "65532:65532");

    // The image's own HEALTHCHECK (`/outrigger health`, reading the mounted config's admin
    // address) must pass.
    assert!(
        wait_for(
            &outrigger,
            "{{.State.Health.Status}}",
            "healthy",
            Duration::from_secs(60)
        )
        .await,
        "never healthy: {}",
        diagnose(&outrigger).await
    );

    log_with_acks(&app, forward, "image e2e").await;
    // Every line was acknowledged before `docker run` returned, and the sink holds them all
    // (its flush interval has not passed): from here on only the drain can deliver them.
    let before_stop = delivered(&backend).len();
    assert_eq!(
        before_stop, 0,
        "delivered before the stop: the drain is not what's tested"
    );

    let stopped = Instant::now();
    let out = docker(&["stop", "-t", "30", &outrigger]).await;
    assert!(
        out.status.success(),
        "docker stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exit = inspect(&outrigger, "{{.State.ExitCode}}").await;
    assert_eq!(
        exit,
        "0",
        "exit code after docker stop: {}",
        diagnose(&outrigger).await
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(25),
        "the drain took {:?}: SIGTERM not handled?",
        stopped.elapsed()
    );
    assert_eq!(inspect(&outrigger, "{{.State.OOMKilled}}").await, "false");

    let got = delivered(&backend);
    for (line, container) in &got {
        assert_eq!(container, &app, "container.name of {line:?}");
    }
    let (missing, twice) = tally(&got, "image e2e");
    assert!(
        missing.is_empty(),
        "{} of {LINES} acked lines never delivered (first {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(got.len(), LINES, "unexpected extra lines");
}

/// Runs container `app` on the fluentd driver with `fluentd-request-ack`, printing
/// "`prefix` line 1" to "`prefix` line LINES" on stdout (one stream only: Docker's driver
/// mixes up acks when a container writes both, see the README); returns once every line was
/// acknowledged.
async fn log_with_acks(app: &str, forward: u16, prefix: &str) {
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--name", app, "--log-driver", "fluentd"])
        .args([
            "--log-opt",
            &format!("fluentd-address=tcp://127.0.0.1:{forward}"),
        ])
        .args(["--log-opt", "fluentd-request-ack=true"])
        .args(["--log-opt", "tag=docker.{{.Name}}"])
        .args([
            APP_IMAGE,
            "sh",
            "-c",
            &format!(
                "i=1; while [ $i -le {LINES} ]; do echo \"{prefix} line $i\"; i=$((i + 1)); done"
            ),
        ]);
    let out = run_container(cmd, app).await;
    assert!(
        out.status.success(),
        "docker run {app}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Of the lines `log_with_acks(.., prefix)` printed: the numbers never delivered, and the
/// lines delivered more than once.
fn tally(got: &[(String, String)], prefix: &str) -> (Vec<usize>, Vec<(String, usize)>) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (line, _) in got {
        *counts.entry(line.clone()).or_default() += 1;
    }
    let missing = (1..=LINES)
        .filter(|i| !counts.contains_key(&format!("{prefix} line {i}")))
        .collect();
    let twice = counts.into_iter().filter(|(_, n)| *n > 1).collect();
    (missing, twice)
}

/// Each delivered event's line and container name, from the backend's NDJSON bodies.
fn delivered(b: &Backend) -> Vec<(String, String)> {
    b.accepted()
        .iter()
        .flat_map(|r| {
            String::from_utf8_lossy(&r.body)
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}"));
                    (
                        v["record"]["log"].as_str().unwrap_or_default().to_string(),
                        v["resource"]["container.name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The disk buffer in Outrigger's own container, arranged as the DaemonSet does it: the data
/// directory is made root-owned 0755 on the host (as a hostPath `DirectoryOrCreate` is), an
/// init container (root) hands it to UID 65532, and the hardened container writes its log
/// there. An application logs through Docker's driver with acks while the backend is down;
/// then `docker kill -s KILL`, the backend comes up, and `docker start`: every acked line
/// arrives, once.
#[tokio::test(flavor = "multi_thread")]
async fn hardened_image_keeps_acked_lines_across_docker_kill() {
    let test = "docker_image::hardened_image_keeps_acked_lines_across_docker_kill";
    if !image_ready(test).await {
        return;
    }
    let backend_addr = free_addr().await;
    let (forward, admin) = (free_addr().await.port(), free_addr().await.port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outrigger.toml");
    std::fs::write(
        &config,
        format!(
            "[global]\nadmin_address = \"0.0.0.0:{admin}\"\ngrace_period_secs = 5\n\
             data_dir = \"/var/lib/outrigger\"\n\n\
             [buffer]\ntype = \"disk\"\nmax_bytes = 16777216\n\n\
             [sources.forward]\ntype = \"forward\"\naddress = \"0.0.0.0:{forward}\"\n\n\
             [sinks.backend]\ntype = \"http\"\nendpoint = \"http://localhost:{}\"\n\
             flush_interval_ms = 100\nretry_initial_backoff_ms = 50\nretry_max_backoff_ms = 500\n",
            backend_addr.port()
        ),
    )
    .unwrap();
    // Root-owned 0755, as the kubelet makes a missing hostPath directory.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let outrigger = unique_name("kill");
    let init = unique_name("kill-init");
    let app = unique_name("kill-app");
    let _cleanup = Containers(vec![outrigger.clone(), init.clone(), app.clone()]);
    let volume = format!("{}:/var/lib/outrigger", data.display());

    let out = docker(&[
        "run",
        "--name",
        &init,
        "-v",
        &volume,
        APP_IMAGE,
        "chown",
        "65532:65532",
        "/var/lib/outrigger",
    ])
    .await;
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run_hardened(&outrigger, &config, &["--memory", "256m", "-v", &volume]).await;
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin_addr = format!("127.0.0.1:{admin}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(&admin_addr) {
        assert!(
            Instant::now() < deadline,
            "never ready: {}",
            diagnose(&outrigger).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    log_with_acks(&app, forward, "kill e2e").await;
    // Every line is acked, none delivered (the backend is down): all of them are on disk.
    let out = docker(&["kill", "-s", "KILL", &outrigger]).await;
    assert!(
        out.status.success(),
        "docker kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inspect(&outrigger, "{{.State.Running}}").await, "false");

    let backend = Backend::start_on(backend_addr, 200, vec![]).await;
    let out = docker(&["start", &outrigger]).await;
    assert!(
        out.status.success(),
        "docker start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered(&backend).len() < LINES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = delivered(&backend);
    let (missing, twice) = tally(&got, "kill e2e");
    assert!(
        missing.is_empty(),
        "{} of {LINES} acked lines lost across docker kill (first {:?}): {}",
        missing.len(),
        &missing[..missing.len().min(10)],
        diagnose(&outrigger).await
    );
    eprintln!(
        "{LINES} lines acked before docker kill, {} delivered after docker start",
        got.len()
    );
    assert!(
        twice.is_empty(),
        "nothing was in flight at the kill: {twice:?} twice"
    );
    let out = docker(&["stop", "-t", "20", &outrigger]).await;
    assert!(out.status.success());
    assert_eq!(inspect(&outrigger, "{{.State.ExitCode}}").await, "0");
}

/// Starts Outrigger's image as container `name`, detached, hardened as in production
/// (the host's network, read-only root, no capabilities, no new privileges, UID 65532) with
/// `config` as its configuration and `extra` options (memory limit, volumes).
pub(crate) async fn run_hardened(name: &str, config: &std::path::Path, extra: &[&str]) -> Output {
    let mount = format!("{}:/etc/outrigger/outrigger.toml:ro", config.display());
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "65532:65532",
        "-v",
        &mount,
    ];
    args.extend_from_slice(extra);
    args.push(IMAGE);
    docker(&args).await
}

/// Whether `/ready` at `addr` answers 200 now.
fn ready(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = write!(s, "GET /ready HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
}
