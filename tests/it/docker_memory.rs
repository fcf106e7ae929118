//! Outrigger's own hardened container under a memory limit, with its backend down: the case
//! that used to end in an OOM kill with every acknowledged line in it lost.
//!
//! `outrigger-local:latest` runs with `--memory 128m` (so its queue is sized to 32 MiB from
//! the cgroup limit) and a Loki sink whose endpoint has nothing listening. Eight application
//! containers log through Docker's `fluentd` driver with `fluentd-request-ack`, far more than
//! the queue holds. For 60 seconds the backend stays down: Outrigger must stay alive, keep
//! its resident memory near its queue bound, and say on `/ready` that the queue is full.
//! Then the backend comes up, and every line the applications printed must reach it (the
//! driver resends what was not acknowledged, so a line may arrive twice, never zero times).
//!
//! The applications stay alive after their last line: Docker closes a container's log
//! driver 10 s after the container exits, dropping what it had not sent yet (its log says
//! "Logger didn't exit in time: logs may be truncated"), and lines Docker drops were never
//! acknowledged, so they are not Outrigger's to deliver. The README warns about it.
//!
//! Skipped like the other Docker tests without an engine or the image (a failure with
//! `OUTRIGGER_REQUIRE_DOCKER=1`).

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::backend::{Backend, free_addr};
use crate::clients::run_blocking;
use crate::docker::{IMAGE as APP_IMAGE, unique_name};
use crate::docker_image::{
    Containers, IMAGE, diagnose, image_ready, inspect, run_hardened, wait_for,
};
use crate::loki::entries;

const APPS: usize = 8;
/// Lines per application: 8 × 12,000 lines of ~420 bytes is about 40 MB, more than the
/// queue a 128 MiB limit gives (32 MiB).
const LINES: usize = 12_000;
const STALL: Duration = Duration::from_secs(60);

/// Resident-memory figures of a process on this host, in bytes.
fn vm(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix(" kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kib| kib << 10)
}

/// `GET path` on `addr` over HTTP/1.0: the status line's code and the body.
async fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    Some((code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn own_container_stays_within_128_mib_with_its_backend_down() {
    let test = "docker_memory::own_container_stays_within_128_mib_with_its_backend_down";
    if !image_ready(test).await {
        return;
    }
    let down = free_addr().await;
    let (forward, admin) = (free_addr().await.port(), free_addr().await.port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outrigger.toml");
    std::fs::write(
        &config,
        format!(
            "[global]\nadmin_address = \"0.0.0.0:{admin}\"\n\n\
             [sources.forward]\ntype = \"forward\"\naddress = \"0.0.0.0:{forward}\"\n\n\
             [sinks.loki]\ntype = \"loki\"\nendpoint = \"http://localhost:{}\"\n\
             timeout_ms = 2000\nretry_max_backoff_ms = 1000\n",
            down.port()
        ),
    )
    .unwrap();
    let outrigger = unique_name("mem");
    let apps: Vec<String> = (0..APPS)
        .map(|i| unique_name(&format!("mem-app{i}")))
        .collect();
    let mut all = vec![outrigger.clone()];
    all.extend(apps.iter().cloned());
    let _cleanup = Containers(all);

    let out = run_hardened(
        &outrigger,
        &config,
        &["--memory", "128m", "--memory-swap", "128m"],
    )
    .await;
    assert!(
        out.status.success(),
        "docker run {IMAGE}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin_addr = format!("127.0.0.1:{admin}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&admin_addr, "/ready").await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "never ready: {}",
            diagnose(&outrigger).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = inspect(&outrigger, "{{.State.Pid}}").await;
    let idle = vm(&pid, "VmRSS:");

    let pad = "m".repeat(380);
    for (k, app) in apps.iter().enumerate() {
        let script = format!(
            "i=1; while [ $i -le {LINES} ]; do echo \"mem {k} $i {pad}\"; i=$((i + 1)); done; \
             exec sleep 600"
        );
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--name", app, "--log-driver", "fluentd"])
            .args([
                "--log-opt",
                &format!("fluentd-address=tcp://127.0.0.1:{forward}"),
            ])
            .args(["--log-opt", "fluentd-request-ack=true"])
            .args(["--log-opt", "fluentd-retry-wait=500ms"])
            .args(["--log-opt", "tag=docker.mem"])
            .args([APP_IMAGE, "sh", "-c", &script]);
        let out = run_blocking(cmd, Duration::from_secs(60)).await;
        assert!(
            out.status.success(),
            "docker run {app}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The backend stays down for a minute, the applications keep pushing.
    let stalled = Instant::now();
    let mut full = None;
    while stalled.elapsed() < STALL {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            inspect(&outrigger, "{{.State.Running}} {{.State.OOMKilled}}").await,
            "true false",
            "Outrigger stopped while its backend was down: {}",
            diagnose(&outrigger).await
        );
        if let Some((503, body)) = get(&admin_addr, "/ready").await {
            full.get_or_insert(body);
        }
    }
    let peak = vm(&pid, "VmHWM:");
    let queued = get(&admin_addr, "/metrics")
        .await
        .map(|(_, m)| {
            crate::harness::metric_value(&m, r#"outrigger_queue_bytes{component="loki"}"#)
        })
        .unwrap_or_default();
    let max_queue = 32u64 << 20;
    eprintln!(
        "128 MiB container, backend down {STALL:?}: idle {} KiB, peak {} KiB, queue {queued:.0} \
         bytes; /ready said {full:?}",
        idle >> 10,
        peak >> 10
    );
    let body = full.expect("/ready never failed with the queue full");
    assert!(
        body.contains("loki") && body.contains("queue"),
        "/ready names the full queue: {body}"
    );
    assert!(
        queued >= (max_queue * 9 / 10) as f64,
        "queue only {queued} bytes"
    );
    // The README's bound: idle footprint + 1.25 x the queue + 16 KiB per connection (a few
    // dozen connections here, as the driver reconnects).
    assert!(
        peak <= idle + max_queue * 5 / 4 + (4 << 20),
        "peak RSS {} KiB over idle {} KiB + 1.25 x 32 MiB + 4 MiB",
        peak >> 10,
        idle >> 10
    );

    // The backend comes up: every line printed is delivered.
    let backend = Backend::start_on(down, 204, vec![]).await;
    let want = APPS * LINES;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut counts: HashMap<String, usize> = HashMap::new();
    loop {
        counts.clear();
        for (_, e) in entries(&backend) {
            let key: String = e.line.split(' ').take(3).collect::<Vec<_>>().join(" ");
            *counts.entry(key).or_default() += 1;
        }
        if counts.len() >= want || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let missing: Vec<String> = (0..APPS)
        .flat_map(|k| (1..=LINES).map(move |i| format!("mem {k} {i}")))
        .filter(|l| !counts.contains_key(l))
        .collect();
    let twice = counts.values().filter(|n| **n > 1).count();
    eprintln!(
        "after the backend returned: {} of {want} lines delivered, {twice} more than once",
        counts.len()
    );
    if !missing.is_empty() {
        let mut states = Vec::new();
        for app in &apps {
            states.push(inspect(app, "{{.State.Status}} {{.State.ExitCode}}").await);
        }
        panic!(
            "{} lines never delivered (first {:?}, last {:?}); applications {states:?}: {}",
            missing.len(),
            &missing[..missing.len().min(5)],
            missing.last(),
            diagnose(&outrigger).await
        );
    }
    assert!(
        wait_for(
            &outrigger,
            "{{.State.OOMKilled}}",
            "false",
            Duration::from_secs(1)
        )
        .await,
        "OOM-killed"
    );
}
