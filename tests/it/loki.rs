//! The `loki` sink against an in-test Loki: Docker-shaped events in through the forward
//! source, pushes decoded with the exporter's own `push.proto` messages (snappy block, then
//! protobuf). Every test checks that the events sent are the events delivered, or accounted
//! for as refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use outrigger::sink::loki::proto::{EntryAdapter, PushRequest};
use prost::Message as _;
use tokio::io::AsyncWriteExt;

use crate::backend::{Backend, Fault, Received, free_addr};
use crate::harness::{Outrigger, wire};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID: &str = "00f067aa0ba902b7";

/// Outrigger with one `loki` sink named `out` pointed at `url`; `extra` lines go into the
/// sink's table, `sections` after it.
pub(crate) async fn outrigger(url: &str, extra: &str, sections: &str) -> Outrigger {
    Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ngrace_period_secs = 10\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\ntype = \"loki\"\nendpoint = \"{url}\"\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\nflush_interval_ms = 50\n{extra}\n\
         {sections}\n"
    ))
    .await
}

/// A record's fields.
type Record = Vec<(&'static str, String)>;

/// A Docker `fluentd` log-driver record.
fn docker(name: &str, stream: &str, log: &str) -> Record {
    vec![
        ("container_id", "f".repeat(64)),
        ("container_name", format!("/{name}")),
        ("source", stream.to_string()),
        ("log", log.to_string()),
    ]
}

/// One Forward-mode message: `[tag, [[EventTime(secs, nanos), record]...]]`, so every event
/// arrives in one batch (and one request) with nanosecond times.
fn forward(tag: &str, events: &[(u32, u32, Record)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 2).unwrap();
    rmp::encode::write_str(&mut out, tag).unwrap();
    rmp::encode::write_array_len(&mut out, events.len() as u32).unwrap();
    for (secs, nanos, fields) in events {
        rmp::encode::write_array_len(&mut out, 2).unwrap();
        wire::event_time(&mut out, *secs, *nanos);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        wire::record(&mut out, &fields);
    }
    out
}

/// Writes `bytes` on a new connection.
async fn write(o: &Outrigger, bytes: &[u8]) {
    let mut s = o.connect().await;
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
}

/// Sends `n` Docker events from container `api`, lines `line <i>` for i from `from`, in one
/// message.
async fn send(o: &Outrigger, from: usize, n: usize) {
    let events: Vec<_> = (from..from + n)
        .map(|i| {
            (
                1_700_000_000,
                i as u32,
                docker("api", "stdout", &format!("line {i}")),
            )
        })
        .collect();
    write(o, &forward("docker.api", &events)).await;
}

fn decode(r: &Received) -> PushRequest {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&r.body)
        .expect("a snappy block body");
    PushRequest::decode(&raw[..]).expect("a PushRequest")
}

/// Every entry of every accepted push, with its stream's labels, in order.
pub(crate) fn entries(b: &Backend) -> Vec<(String, EntryAdapter)> {
    b.accepted()
        .iter()
        .flat_map(|r| {
            decode(r)
                .streams
                .into_iter()
                .flat_map(|s| {
                    let labels = s.labels;
                    s.entries.into_iter().map(move |e| (labels.clone(), e))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The ids of `line <i>` entries delivered, sorted.
fn ids(b: &Backend) -> Vec<usize> {
    let mut ids: Vec<usize> = entries(b)
        .iter()
        .map(|(_, e)| e.line.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

pub(crate) async fn wait_entries(b: &Backend, n: usize) -> Vec<(String, EntryAdapter)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = entries(b);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn metadata(e: &EntryAdapter) -> BTreeMap<&str, &str> {
    e.structured_metadata
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect()
}

/// The sink's delivered count once it reaches `want` (10 s at most): the backend records a
/// request before Outrigger has read the answer and counted it.
async fn events_total(o: &Outrigger, want: f64) -> f64 {
    o.wait_metric("outrigger_sink_events_total{component=\"out\"}", want)
        .await
}

fn failed(o: &Outrigger, reason: &str) -> f64 {
    o.metric(&format!(
        "outrigger_sink_failed_events_total{{component=\"out\",reason=\"{reason}\"}}"
    ))
}

fn upto(n: usize) -> Vec<usize> {
    (0..n).collect()
}

#[tokio::test]
async fn docker_events_arrive_as_labelled_streams_sorted_with_metadata() {
    let b = Backend::start(vec![]).await;
    let o = outrigger(&b.url(), "tenant_id = \"team-a\"", "").await;
    let json =
        format!(r#"{{"level":"warn","msg":"slow","traceparent":"00-{TRACE_ID}-{SPAN_ID}-01"}}"#);
    let events = vec![
        (1_700_000_002, 7, docker("api", "stdout", &json)),
        (
            1_700_000_000,
            999_999_999,
            docker("web", "stdout", "GET / 200"),
        ),
        (
            1_700_000_001,
            5,
            docker("api", "stderr", "warning: \"disk\" low"),
        ),
        (
            1_700_000_001,
            5,
            docker("api", "stdout", "same time, later"),
        ),
        (1_700_000_000, 1, docker("api", "stdout", "first")),
    ];
    write(&o, &forward("docker.api", &events)).await;
    let got = wait_entries(&b, 5).await;
    assert_eq!(got.len(), 5, "delivered what was sent");

    let reqs = b.accepted();
    assert_eq!(reqs.len(), 1, "one forward message, one push");
    let r = &reqs[0];
    assert_eq!(r.path, "/loki/api/v1/push");
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    assert_eq!(r.headers["x-scope-orgid"], "team-a");
    assert!(
        r.headers.get("content-encoding").is_none(),
        "snappy is implied"
    );
    assert!(
        r.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("outrigger/")
    );

    let req = decode(r);
    let labels: Vec<&str> = req.streams.iter().map(|s| s.labels.as_str()).collect();
    assert_eq!(
        labels,
        [
            r#"{container="api", job="outrigger"}"#,
            r#"{container="web", job="outrigger"}"#
        ],
        "one stream per container, stdout and stderr together"
    );
    let api = &req.streams[0].entries;
    let lines: Vec<&str> = api.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "first",
            "warning: \"disk\" low",
            "same time, later",
            json.as_str()
        ],
        "sorted by time, ties in arrival order"
    );
    let times: Vec<(i64, i32)> = api
        .iter()
        .map(|e| {
            let t = e.timestamp.unwrap();
            (t.seconds, t.nanos)
        })
        .collect();
    assert_eq!(
        times,
        [
            (1_700_000_000, 1),
            (1_700_000_001, 5),
            (1_700_000_001, 6),
            (1_700_000_002, 7)
        ],
        "a time that ties with the stream's previous entry moves one nanosecond on"
    );
    assert_eq!(
        metadata(&api[3]),
        BTreeMap::from([
            ("span_id", SPAN_ID),
            ("stream", "stdout"),
            ("trace_id", TRACE_ID)
        ])
    );
    assert_eq!(metadata(&api[1]), BTreeMap::from([("stream", "stderr")]));
    let web = &req.streams[1].entries;
    assert_eq!(web.len(), 1);
    assert_eq!(web[0].line, "GET / 200");
    let t = web[0].timestamp.unwrap();
    assert_eq!((t.seconds, t.nanos), (1_700_000_000, 999_999_999));
    assert_eq!(events_total(&o, 5.0).await, 5.0);
}

#[tokio::test]
async fn kubernetes_tags_and_static_attributes_fill_labels() {
    let b = Backend::start(vec![]).await;
    let o = outrigger(
        &b.url(),
        "",
        "[enrich.resource]\n\"k8s.cluster.name\" = \"prod-eu\"",
    )
    .await;
    let id = "a".repeat(64);
    let tag = format!("kube.var.log.containers.web-7d9f_shop_app-{id}.log");
    let events: Vec<_> = (0..3)
        .map(|i| {
            (
                1_700_000_000,
                i,
                vec![
                    ("log", format!("line {i}")),
                    ("stream", "stdout".to_string()),
                ],
            )
        })
        .collect();
    write(&o, &forward(&tag, &events)).await;
    let got = wait_entries(&b, 3).await;
    assert_eq!(got.len(), 3);
    for (labels, e) in &got {
        assert_eq!(
            labels,
            r#"{cluster="prod-eu", container="app", job="outrigger", namespace="shop"}"#
        );
        assert_eq!(metadata(e), BTreeMap::from([("pod", "web-7d9f")]));
    }
    assert_eq!(ids(&b), upto(3));
}

#[tokio::test]
async fn custom_labels_and_the_whole_event_as_line() {
    let b = Backend::start(vec![]).await;
    let o = outrigger(
        &b.url(),
        "labels = { app = \"svc-{container.name}\", stream = \"{log.iostream}\" }\n\
         structured_metadata = { level = \"{severity}\", container_id = \"{container.id}\" }\n\
         line = \"json\"",
        "",
    )
    .await;
    let events = vec![
        (1_700_000_000, 0, docker("api", "stdout", "INFO started")),
        (1_700_000_000, 1, docker("api", "stderr", "ERROR failed")),
    ];
    write(&o, &forward("docker.api", &events)).await;
    let got = wait_entries(&b, 2).await;
    assert_eq!(got.len(), 2);
    let (labels, e) = &got[0];
    assert_eq!(labels, r#"{app="svc-api", stream="stdout"}"#);
    let v: serde_json::Value = serde_json::from_str(&e.line).unwrap();
    assert_eq!(v["record"]["log"], "INFO started");
    assert_eq!(v["resource"]["container.name"], "api");
    assert_eq!(
        metadata(e),
        BTreeMap::from([("container_id", "f".repeat(64).as_str()), ("level", "INFO")])
    );
    let (labels, e) = &got[1];
    assert_eq!(labels, r#"{app="svc-api", stream="stderr"}"#);
    assert_eq!(metadata(e)["level"], "ERROR");
    assert_eq!(events_total(&o, 2.0).await, 2.0);
}

#[tokio::test]
async fn the_json_encoding_is_gzipped_with_nanosecond_strings() {
    let b = Backend::start(vec![]).await;
    let o = outrigger(&b.url(), "encoding = \"json\"", "").await;
    let json = format!(r#"{{"msg":"hi","trace_id":"{TRACE_ID}"}}"#);
    let events = vec![
        (1_700_000_001, 2, docker("api", "stdout", &json)),
        (1_700_000_000, 1, docker("api", "stdout", "plain")),
    ];
    write(&o, &forward("docker.api", &events)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.accepted().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reqs = b.accepted();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["content-encoding"], "gzip");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"streams": [{
            "stream": {"container": "api", "job": "outrigger"},
            "values": [
                ["1700000000000000001", "plain", {"stream": "stdout"}],
                ["1700000001000000002", json, {"stream": "stdout", "trace_id": TRACE_ID}],
            ],
        }]})
    );
    assert_eq!(events_total(&o, 2.0).await, 2.0);
}

#[tokio::test]
async fn throttling_honours_retry_after_then_delivers_everything() {
    let b = Backend::start(vec![Fault::Status(429, Some(1), "rate limited")]).await;
    let o = outrigger(&b.url(), "", "").await;
    let started = Instant::now();
    send(&o, 0, 50).await;
    wait_entries(&b, 50).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    assert_eq!(ids(&b), upto(50));
    // One throttled request and its retry; under load the 50 events may span two batches.
    assert!(b.requests() >= 2);
    assert_eq!(
        o.metric("outrigger_sink_retries_total{component=\"out\",reason=\"throttled\"}"),
        1.0
    );
    assert_eq!(events_total(&o, 50.0).await, 50.0);
}

#[tokio::test]
async fn server_error_bursts_and_resets_are_retried_without_loss() {
    let b = Backend::start(vec![
        Fault::Status(500, None, "internal"),
        Fault::Status(503, None, "circuit breaker open"),
        Fault::Status(503, None, "circuit breaker open"),
        Fault::Reset,
        Fault::Status(502, None, "bad gateway"),
        Fault::Status(504, None, "timeout"),
    ])
    .await;
    let o = outrigger(&b.url(), "max_in_flight = 1", "").await;
    send(&o, 0, 100).await;
    send(&o, 100, 100).await;
    wait_entries(&b, 200).await;
    assert_eq!(ids(&b), upto(200), "every event once, none lost");
    let retries: f64 = ["server_error", "connection"]
        .iter()
        .map(|r| {
            o.metric(&format!(
                "outrigger_sink_retries_total{{component=\"out\",reason=\"{r}\"}}"
            ))
        })
        .sum();
    assert!(retries >= 6.0, "{retries} retries");
    assert_eq!(events_total(&o, 200.0).await, 200.0);
}

#[tokio::test]
async fn a_partial_rejection_is_counted_and_never_resent() {
    // What Loki's ingester answers when entries fall behind the stream's window: the valid
    // entries of the push are stored.
    const BODY: &str = "entry with timestamp 2023-11-14 22:13:20.000000001 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2023-11-14T22:13:20Z, oldest acceptable timestamp is: 2023-11-14T23:13:20Z',\n\
                        entry with timestamp 2023-11-14 22:13:20.000000002 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2023-11-14T22:13:20Z, oldest acceptable timestamp is: 2023-11-14T23:13:20Z',\n\
                        user 'fake', total ignored: 2 out of 10 for stream: {container=\"api\", job=\"outrigger\"}\n";
    let b = Backend::start(vec![Fault::Status(400, None, BODY)]).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let o = outrigger(
        &b.url(),
        &format!("dead_letter_path = \"{}\"", dead.display()),
        "",
    )
    .await;
    send(&o, 0, 10).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"partially_rejected\"}",
        2.0,
    )
    .await;
    assert_eq!(failed(&o, "partially_rejected"), 2.0);
    assert_eq!(events_total(&o, 8.0).await, 8.0, "the rest Loki stored");
    // Time for a retry, had there been one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.requests(), 1, "a 400 is never resent");
    send(&o, 10, 10).await;
    wait_entries(&b, 10).await;
    assert_eq!(ids(&b), (10..20).collect::<Vec<_>>());
    assert!(b.requests() >= 2);
    assert_eq!(
        events_total(&o, 18.0).await + failed(&o, "partially_rejected"),
        20.0
    );
    assert!(
        !dead.exists() || std::fs::read_to_string(&dead).unwrap().is_empty(),
        "entries Loki chose not to store are not dead letters: their request was stored"
    );
}

#[tokio::test]
async fn refusals_go_to_the_dead_letter_file() {
    let b = Backend::start(vec![
        Fault::Status(401, None, "no org id"),
        Fault::Status(400, None, "loghttp: unexpected end of JSON input"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let o = outrigger(
        &b.url(),
        &format!(
            "dead_letter_path = \"{}\"\nmax_in_flight = 1",
            dead.display()
        ),
        "",
    )
    .await;
    send(&o, 0, 10).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        10.0,
    )
    .await;
    send(&o, 10, 10).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        20.0,
    )
    .await;
    send(&o, 20, 10).await;
    wait_entries(&b, 10).await;
    assert_eq!(ids(&b), (20..30).collect::<Vec<_>>());
    let text = std::fs::read_to_string(&dead).unwrap();
    let mut reasons = BTreeMap::<String, Vec<usize>>::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["sink"], "out");
        let id = v["event"]["record"]["log"]
            .as_str()
            .unwrap()
            .strip_prefix("line ")
            .unwrap()
            .parse()
            .unwrap();
        reasons
            .entry(v["reason"].as_str().unwrap().to_string())
            .or_default()
            .push(id);
    }
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("HTTP 401: no org id".to_string(), upto(10)),
            (
                "HTTP 400: loghttp: unexpected end of JSON input".to_string(),
                (10..20).collect()
            ),
        ])
    );
    assert_eq!(failed(&o, "rejected") + events_total(&o, 10.0).await, 30.0);
    assert_eq!(b.requests(), 3, "refusals are not retried");
}

#[tokio::test]
async fn a_request_too_large_is_split_in_halves() {
    let b = Backend::start(vec![
        Fault::Status(413, None, "request body too large"),
        Fault::Status(413, None, "request body too large"),
    ])
    .await;
    let o = outrigger(&b.url(), "", "").await;
    send(&o, 0, 8).await;
    wait_entries(&b, 8).await;
    assert_eq!(ids(&b), upto(8), "every event once");
    let sizes: Vec<usize> = b
        .state
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| decode(r).streams.iter().map(|s| s.entries.len()).sum())
        .collect();
    assert_eq!(sizes, [8, 4, 2, 2, 4], "halved until it fits, in order");
    assert_eq!(events_total(&o, 8.0).await, 8.0);
}

#[tokio::test]
async fn backend_down_at_start_then_up_loses_nothing() {
    let addr = free_addr().await;
    let o = outrigger(&format!("http://{addr}"), "", "").await;
    send(&o, 0, 300).await;
    o.wait_metric(
        "outrigger_sink_retries_total{component=\"out\",reason=\"connection\"}",
        1.0,
    )
    .await;
    let b = Backend::start_on(addr, 204, vec![]).await;
    wait_entries(&b, 300).await;
    assert_eq!(ids(&b), upto(300));
    assert_eq!(events_total(&o, 300.0).await, 300.0);
}
