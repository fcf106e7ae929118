//! The shared delivery machinery, through the `http` (NDJSON) sink against an in-test backend
//! with injected faults. Every test checks that the events delivered are the events sent.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::backend::{Backend, Fault, free_addr};
use crate::harness::{Outrigger, wire};

/// Outrigger with one `http` sink named `out` pointed at `url`; `extra` lines go into the
/// sink's table.
async fn outrigger(url: &str, extra: &str) -> Outrigger {
    Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ngrace_period_secs = 10\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\ntype = \"http\"\nendpoint = \"{url}\"\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\nflush_interval_ms = 50\n{extra}\n"
    ))
    .await
}

/// The ids delivered (every line of every accepted request), in order.
pub(crate) fn delivered(b: &Backend) -> Vec<usize> {
    b.accepted()
        .iter()
        .flat_map(|r| {
            String::from_utf8(r.body.to_vec())
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["record"]["i"].as_str().unwrap().parse().unwrap()
                })
                .collect::<Vec<usize>>()
        })
        .collect()
}

pub(crate) async fn wait_delivered(b: &Backend, n: usize) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = delivered(b);
        if d.len() >= n || Instant::now() > deadline {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn batches_are_delivered_gzipped_with_headers_and_auth() {
    let b = Backend::start(vec![]).await;
    let o = outrigger(
        &b.url(),
        "max_batch_events = 100\nheaders = { \"X-Team\" = \"payments\" }\nauth = { bearer = { token = \"s3cret\" } }",
    )
    .await;
    o.send_ids(0, 1000).await;
    let got = wait_delivered(&b, 1000).await;
    assert_eq!(sorted(got), (0..1000).collect::<Vec<_>>());
    let reqs = b.accepted();
    assert!(
        reqs.len() >= 10,
        "batched by max_batch_events: {} requests",
        reqs.len()
    );
    let h = &reqs[0].headers;
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(h["content-type"], "application/x-ndjson");
    assert_eq!(h["x-team"], "payments");
    assert_eq!(h["authorization"], "Bearer s3cret");
    assert!(h["user-agent"].to_str().unwrap().starts_with("outrigger/"));
    // Counted once the request returns, just after the backend has the events.
    assert_eq!(
        o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 1000.0)
            .await,
        1000.0
    );
}

#[tokio::test]
async fn throttling_honours_retry_after_then_delivers_everything() {
    let b = Backend::start(vec![Fault::Status(429, Some(1), "slow down")]).await;
    let o = outrigger(&b.url(), "").await;
    let started = Instant::now();
    o.send_ids(0, 50).await;
    let got = wait_delivered(&b, 50).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    assert_eq!(sorted(got), (0..50).collect::<Vec<_>>());
    assert_eq!(
        o.metric("outrigger_sink_retries_total{component=\"out\",reason=\"throttled\"}"),
        1.0
    );
}

#[tokio::test]
async fn server_errors_resets_and_slow_answers_are_retried_without_loss() {
    let b = Backend::start(vec![
        Fault::Status(503, None, "busy"),
        Fault::Status(502, None, "bad gateway"),
        Fault::Reset,
        Fault::Delay(Duration::from_millis(1500)),
        Fault::Status(500, None, "oops"),
    ])
    .await;
    let o = outrigger(&b.url(), "timeout_ms = 500\nmax_in_flight = 1").await;
    o.send_ids(0, 200).await;
    let got = wait_delivered(&b, 200).await;
    let unique = {
        let mut u = got.clone();
        u.sort_unstable();
        u.dedup();
        u
    };
    assert_eq!(unique, (0..200).collect::<Vec<_>>(), "nothing lost");
    // The slow answer timed out on our side but the backend stored it: the one ambiguous
    // case, and the only duplicates allowed.
    let dups = got.len() - unique.len();
    assert!(dups <= 200, "duplicates {dups}");
    let retries = ["server_error", "connection", "timeout"]
        .iter()
        .map(|r| {
            o.metric(&format!(
                "outrigger_sink_retries_total{{component=\"out\",reason=\"{r}\"}}"
            ))
        })
        .sum::<f64>();
    assert!(retries >= 5.0, "{retries} retries");
}

#[tokio::test]
async fn permanent_refusal_goes_to_the_dead_letter_file() {
    let b = Backend::start(vec![Fault::Status(400, None, "mapping error")]).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let o = outrigger(
        &b.url(),
        &format!(
            "dead_letter_path = \"{}\"\nmax_in_flight = 1",
            dead.display()
        ),
    )
    .await;
    o.send_ids(0, 10).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        1.0,
    )
    .await;
    o.send_ids(10, 10).await;
    let got = wait_delivered(&b, 10).await;
    let text = std::fs::read_to_string(&dead).unwrap();
    let dead_ids: Vec<usize> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["sink"], "out");
            assert!(
                v["reason"]
                    .as_str()
                    .unwrap()
                    .contains("HTTP 400: mapping error"),
                "{v}"
            );
            v["event"]["record"]["i"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    // Every event either delivered or dead-lettered, none twice.
    let mut all = [got.clone(), dead_ids.clone()].concat();
    all.sort_unstable();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    assert!(!dead_ids.is_empty());
    assert_eq!(
        o.metric("outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}"),
        dead_ids.len() as f64
    );
}

#[tokio::test]
async fn backend_down_at_start_then_up_loses_nothing() {
    let addr = free_addr().await;
    let o = outrigger(&format!("http://{addr}"), "").await;
    o.send_ids(0, 300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        o.metric("outrigger_sink_retries_total{component=\"out\",reason=\"connection\"}") >= 1.0
    );
    let b = Backend::start_on(addr, 200, vec![]).await;
    let got = wait_delivered(&b, 300).await;
    assert_eq!(sorted(got), (0..300).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_stalled_backend_fills_the_queue_and_stops_the_source() {
    let b = Backend::start(vec![Fault::Delay(Duration::from_secs(3600)); 4]).await;
    let o = outrigger(
        &b.url(),
        "max_in_flight = 4\nmax_batch_events = 100\nmax_queue_bytes = 262144\ntimeout_ms = 3600000",
    )
    .await;
    let s = o.connect().await;
    let (_r, mut w) = s.into_split();
    let log = "x".repeat(500);
    let frame = wire::message("t", 1, &[("log", &log)], None);
    let burst: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 100)
        .collect();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w2 = written.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..20_000 {
            if w.write_all(&burst).await.is_err() {
                break;
            }
            w2.fetch_add(burst.len(), std::sync::atomic::Ordering::Relaxed);
        }
    });
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
        assert!(last < 64 << 20, "the source never stopped reading");
    }
    let queued = o.metric("outrigger_queue_bytes{component=\"out\"}");
    assert!(queued <= (262144 + (256 << 10)) as f64, "queue {queued}");
    assert!(!writer.is_finished());
    writer.abort();
}

#[tokio::test]
async fn https_with_a_configured_ca() {
    let b = Backend::start_tls(vec![]).await;
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tls/example-ca.crt");
    let url = format!("https://localhost:{}", b.addr.port());
    let o = outrigger(&url, &format!("tls = {{ ca_file = \"{ca}\" }}")).await;
    o.send_ids(0, 20).await;
    assert_eq!(
        sorted(wait_delivered(&b, 20).await),
        (0..20).collect::<Vec<_>>()
    );
    o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 20.0)
        .await;
    assert!(o.metric("outrigger_sink_bytes_total{component=\"out\"}") > 0.0);

    // Without the CA the certificate is not trusted: nothing is delivered, all is retried.
    let untrusted = Backend::start_tls(vec![]).await;
    let url = format!("https://localhost:{}", untrusted.addr.port());
    let o = outrigger(&url, "").await;
    o.send_ids(0, 5).await;
    o.wait_metric(
        "outrigger_sink_retries_total{component=\"out\",reason=\"connection\"}",
        2.0,
    )
    .await;
    assert_eq!(untrusted.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_under_steady_input_then_back_loses_nothing() {
    let addr = free_addr().await;
    // A small queue: while the backend is down the source must stop reading, not buffer.
    let o = outrigger(
        &format!("http://{addr}"),
        "max_queue_events = 500\nmax_batch_events = 100",
    )
    .await;
    let mut s = o.connect().await;
    let sender = tokio::spawn(async move {
        // 3,000 events in steady chunks over about 1.5 s.
        for chunk in 0..30 {
            let mut buf = Vec::new();
            for i in chunk * 100..(chunk + 1) * 100 {
                buf.extend(wire::message(
                    "t",
                    1_700_000_000,
                    &[("i", &i.to_string())],
                    None,
                ));
            }
            s.write_all(&buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let queued = o.metric("outrigger_queue_events{component=\"out\"}");
    assert!(
        queued <= 600.0,
        "queue held {queued} events while the backend was down"
    );
    let b = Backend::start_on(addr, 200, vec![]).await;
    let _s = sender.await.unwrap();
    let got = wait_delivered(&b, 3000).await;
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique, (0..3000).collect::<Vec<_>>(), "nothing lost");
    // Connection refusals are unambiguous: nothing was stored, so nothing is duplicated.
    assert_eq!(got.len(), 3000, "no duplicates");
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let b = Backend::start_mtls(vec![]).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tls");
    let url = format!("https://localhost:{}", b.addr.port());
    let tls = format!(
        "tls = {{ ca_file = \"{dir}/example-ca.crt\", cert_file = \"{dir}/example-client.crt\", key_file = \"{dir}/example-client.key\" }}"
    );
    let o = outrigger(&url, &tls).await;
    o.send_ids(0, 10).await;
    assert_eq!(
        sorted(wait_delivered(&b, 10).await),
        (0..10).collect::<Vec<_>>()
    );

    // The same server refuses a client without a certificate.
    let o = outrigger(
        &url,
        &format!("tls = {{ ca_file = \"{dir}/example-ca.crt\" }}"),
    )
    .await;
    o.send_ids(100, 5).await;
    o.wait_metric(
        "outrigger_sink_retries_total{component=\"out\",reason=\"connection\"}",
        2.0,
    )
    .await;
    assert!(
        delivered(&b).iter().all(|i| *i < 100),
        "nothing from the client without a certificate"
    );
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let b = Backend::start(vec![]).await;
    let o = outrigger(&b.url(), "http2 = true").await;
    o.send_ids(0, 10).await;
    assert_eq!(
        sorted(wait_delivered(&b, 10).await),
        (0..10).collect::<Vec<_>>()
    );
    assert!(
        b.accepted()
            .iter()
            .all(|r| r.version == hyper::Version::HTTP_2)
    );
    // Without the option, plain HTTP/1.1.
    let b = Backend::start(vec![]).await;
    let o = outrigger(&b.url(), "").await;
    o.send_ids(0, 3).await;
    wait_delivered(&b, 3).await;
    assert!(
        b.accepted()
            .iter()
            .all(|r| r.version == hyper::Version::HTTP_11)
    );
}

/// 413 for a body of more than four lines, else stored.
fn four_lines_at_most(body: &[u8]) -> (u16, String) {
    let lines = body.iter().filter(|b| **b == b'\n').count();
    if lines > 4 {
        (413, "request entity too large".into())
    } else {
        (200, String::new())
    }
}

#[tokio::test]
async fn a_request_too_large_goes_again_in_halves_in_order() {
    let b = Backend::start(vec![Fault::Custom(four_lines_at_most); 40]).await;
    let o = outrigger(&b.url(), "max_batch_events = 20\ncompression = \"none\"").await;
    o.send_ids(0, 20).await;
    let got = wait_delivered(&b, 20).await;
    assert_eq!(
        got,
        (0..20).collect::<Vec<_>>(),
        "every line once, in order"
    );
    // 20 → 10 → 5 → 2 + 3 … : every refused body was larger than four lines.
    let refused: Vec<usize> = b
        .state
        .received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.body.iter().filter(|b| **b == b'\n').count())
        .collect();
    assert!(
        !refused.is_empty() && refused.iter().all(|n| *n > 4),
        "{refused:?}"
    );
    assert_eq!(
        o.metric("outrigger_sink_events_total{component=\"out\"}"),
        20.0
    );
}
