//! The admin endpoints over HTTP: `/live` and `/ready` through a backlog and a drain, and
//! `/metrics` parsed by a Prometheus text parser and checked against the README's table.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::{Backend, Fault};
use crate::harness::{Outrigger, wire};

/// `GET path` on the admin listener: the status code and the body.
async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .expect("admin answers within 5 s")
        .unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Polls `path` until `want(status, body)` holds (10 s at most); returns the last answer.
async fn poll_until(
    admin: SocketAddr,
    path: &str,
    want: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(admin, path).await;
        if want(status, &body) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_backlog_and_the_drain_while_live_holds() {
    // A sink that takes 10 ms per event, with room for 100 events: 300 events are a backlog
    // of about three seconds.
    let mut o = Outrigger::with_config(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ngrace_period_secs = 20\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.slow]\ntype = \"blackhole\"\nrate_events_per_sec = 100\nmax_queue_events = 100\n",
    )
    .await;
    let admin = o.running.as_ref().unwrap().admin.expect("admin enabled");
    assert_eq!(get(admin, "/ready").await, (200, "ready\n".into()));
    assert_eq!(get(admin, "/live").await, (200, "live\n".into()));

    // Backlog: not ready, with the sink and the bound named; still live.
    let _conn = o.send_ids(0, 300).await;
    let (status, body) = poll_until(admin, "/ready", |s, _| s == 503).await;
    assert_eq!(status, 503, "never not ready: {body}");
    assert!(
        body.starts_with("not ready: sink slow queue at ") && body.contains("of max_queue_events"),
        "{body}"
    );
    assert_eq!(get(admin, "/live").await.0, 200, "a backlog is not a fault");

    // The sink catches up: ready again.
    let (status, body) = poll_until(admin, "/ready", |s, _| s == 200).await;
    assert_eq!(status, 200, "still not ready: {body}");
    assert_eq!(
        o.wait_metric("outrigger_sink_events_total{component=\"slow\"}", 300.0)
            .await,
        300.0
    );

    // A drain with work left: not ready because draining, live throughout.
    let _conn2 = o.send_ids(0, 200).await;
    poll_until(admin, "/ready", |s, _| s == 503).await;
    let drain = tokio::spawn(o.running.take().unwrap().shutdown());
    let (status, body) = poll_until(admin, "/ready", |_, b| b.contains("draining")).await;
    assert_eq!((status, body.as_str()), (503, "not ready: draining\n"));
    let (status, body) = get(admin, "/live").await;
    assert!(
        !drain.is_finished(),
        "the drain was over before /live was asked"
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "live\n"),
        "sources ending in a drain are expected"
    );
    drain
        .await
        .unwrap()
        .expect("drain finishes within the grace period");
}

/// Metric names in the first column of the README's metric table.
fn documented() -> BTreeSet<String> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Admin endpoints and metrics")
        .nth(1)
        .expect("README has the section")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .flat_map(|l| {
            let first = l.split(" |").next().unwrap_or("");
            first
                .split('`')
                .filter(|t| t.starts_with("outrigger_") || t.starts_with("process_"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_match_the_readme() {
    // One retry (503 first) so retries, batches and latency have samples; a backend that
    // refuses the first request so failed events have one. Families labelled by reason show
    // only once a reason occurred, so the traffic below makes one of each.
    let backend = Backend::start(vec![Fault::Status(503, None, "busy")]).await;
    let refusing = Backend::start(vec![Fault::Status(400, None, "no")]).await;
    // A file source with a line that is not CRI: passed on as text, counted.
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("bad.log"), "not a CRI line\n").unwrap();
    let o = Outrigger::with_config(&format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ngrace_period_secs = 10\n\
         data_dir = \"{f}/data\"\n\
         [sources.files]\ntype = \"file\"\ninclude = [\"{f}/*.log\"]\nformat = \"cri\"\n\
         tag_prefix = \"files\"\npoll_interval_ms = 50\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\ntype = \"file\"\npath = \"{{out}}\"\nmax_queue_bytes = 4194304\n\
         [sinks.net]\ntype = \"http\"\nendpoint = \"{}\"\nflush_interval_ms = 20\n\
         retry_initial_backoff_ms = 10\n\
         [sinks.bad]\ntype = \"http\"\nendpoint = \"{}\"\nflush_interval_ms = 20\n",
        backend.url(),
        refusing.url(),
        f = files.path().display()
    ))
    .await;
    let admin = o.running.as_ref().unwrap().admin.unwrap();
    o.wait_metric(
        "outrigger_source_file_events_total{component=\"files\",reason=\"malformed_cri\"}",
        1.0,
    )
    .await;
    let mut conn = o.send_ids(0, 50).await;
    // A request whose tag is a number: skipped, counted as rejected.
    let mut bad_tag = Vec::new();
    rmp::encode::write_array_len(&mut bad_tag, 3).unwrap();
    rmp::encode::write_uint(&mut bad_tag, 7).unwrap();
    rmp::encode::write_uint(&mut bad_tag, 1_700_000_000).unwrap();
    wire::record(&mut bad_tag, &[("a", "b")]);
    conn.write_all(&bad_tag).await.unwrap();
    // Malformed MessagePack: the connection is closed, counted as a connection error.
    let mut broken = o.connect().await;
    broken.write_all(&[0xc1]).await.unwrap();
    o.wait_metric("outrigger_sink_events_total{component=\"net\"}", 51.0)
        .await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"bad\",reason=\"rejected\"}",
        1.0,
    )
    .await;
    o.wait_metric(
        "outrigger_source_connection_errors_total{component=\"in\",reason=\"malformed\"}",
        1.0,
    )
    .await;
    o.wait_metric(
        "outrigger_source_rejected_total{component=\"in\",reason=\"invalid_tag\"}",
        1.0,
    )
    .await;
    o.wait_lines(51).await;

    let (status, text) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses");

    // Every family Outrigger exposes is in the README, and every README name is exposed.
    // Counters are documented with the `_total` their samples carry.
    let exposed: BTreeSet<String> = scrape.docs.keys().cloned().collect();
    let docs = documented();
    assert!(
        docs.len() >= 25,
        "README table too small to be the real one: {docs:?}"
    );
    for name in &exposed {
        assert!(
            docs.contains(name) || docs.contains(&format!("{name}_total")),
            "{name} is exposed but not in the README table"
        );
    }
    for name in &docs {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            exposed.contains(family) || exposed.contains(name),
            "{name} is in the README but not exposed"
        );
    }

    // Values that the traffic above fixes.
    let value = |metric: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(b) => b.last().map_or(f64::NAN, |b| b.count),
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    };
    let one = |metric: &str, component: &str| value(metric, &[("component", component)]);
    assert_eq!(one("outrigger_source_events_total", "in"), Some(50.0));
    // `conn` is open; the malformed one may not be counted out yet.
    assert!(one("outrigger_source_open_connections", "in").unwrap() >= 1.0);
    assert_eq!(one("outrigger_source_events_total", "files"), Some(1.0));
    // The 50 forward events and the file's line.
    assert_eq!(one("outrigger_sink_events_total", "net"), Some(51.0));
    assert_eq!(one("outrigger_sink_events_total", "out"), Some(51.0));
    assert_eq!(
        one("outrigger_queue_max_bytes", "out"),
        Some(4194304.0),
        "explicit wins"
    );
    assert!(one("outrigger_queue_max_bytes", "net").unwrap() >= (1 << 20) as f64);
    assert_eq!(one("outrigger_queue_max_events", "net"), Some(100_000.0));
    assert_eq!(
        value(
            "outrigger_sink_retries_total",
            &[("component", "net"), ("reason", "server_error")]
        ),
        Some(1.0)
    );
    // Every event went out in some request; 1 retry means at least 2 attempts timed.
    let batches = one("outrigger_sink_batches_total", "net").unwrap();
    assert!(batches >= 1.0);
    assert_eq!(
        one("outrigger_sink_batch_events", "net"),
        Some(batches),
        "one observation per request"
    );
    assert!(one("outrigger_sink_request_seconds", "net").unwrap() >= 2.0);
    // The process, read from /proc.
    let rss = value("process_resident_memory_bytes", &[]).expect("RSS");
    assert!(rss > (1 << 20) as f64, "RSS {rss}");
    assert!(value("process_open_fds", &[]).unwrap() >= 3.0);
    assert!(value("process_max_fds", &[]).unwrap() >= value("process_open_fds", &[]).unwrap());
    assert!(value("process_cpu_seconds_total", &[]).unwrap() >= 0.0);
    let start = value("process_start_time_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "start {start}, now {now}"
    );
}

#[tokio::test]
async fn admin_can_be_turned_off() {
    let o = Outrigger::start("").await;
    assert!(o.running.as_ref().unwrap().admin.is_none());
}

#[tokio::test]
async fn default_queue_bounds_come_from_the_cgroup_limit_and_explicit_ones_win() {
    // A fake cgroup v2 tree: the process's cgroup is limited to 64 MiB.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cgroup"), "0::/pod/ctr\n").unwrap();
    std::fs::create_dir_all(dir.path().join("fs/pod/ctr")).unwrap();
    std::fs::write(dir.path().join("fs/pod/ctr/memory.max"), "67108864\n").unwrap();
    let probe = outrigger::config::memory::Probe {
        proc_self_cgroup: dir.path().join("cgroup"),
        cgroup_root: dir.path().join("fs"),
    };
    let settings = outrigger::config::parse(
        "test.toml",
        "[global]\nadmin_enabled = false\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.a]\ntype = \"blackhole\"\n[sinks.b]\ntype = \"blackhole\"\n\
         [sinks.c]\ntype = \"blackhole\"\nmax_queue_bytes = 12345\n",
        |_| None,
    )
    .unwrap();
    let running = outrigger::topology::start_with(&settings, &probe)
        .await
        .unwrap();
    let text = running.metrics.render();
    let bound = |sink: &str| {
        crate::harness::metric_value(
            &text,
            &format!("outrigger_queue_max_bytes{{component=\"{sink}\"}}"),
        )
    };
    // 25% of 64 MiB, shared by the two sinks without a bound of their own.
    assert_eq!(bound("a"), (8 << 20) as f64);
    assert_eq!(bound("b"), (8 << 20) as f64);
    assert_eq!(bound("c"), 12345.0);
    running.shutdown().await.unwrap();
}
