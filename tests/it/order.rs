//! Per-stream order through the network exporters, with requests in flight at once.
//!
//! Ten Docker-shaped containers, each on its own connection, write numbered lines to stdout
//! and stderr with whole-second times (Docker's default), so times tie and only arrival
//! order tells the lines apart. The backend answers after a random delay and fails some
//! requests with a 503 (retried whole); it records a request when it answers it, as a
//! backend that takes a random time to store a request stores them. Every stream must be
//! stored complete and in order, with sending times (Loki and OTLP) or sequence numbers
//! (Elasticsearch) increasing along it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use outrigger::sink::loki::proto::PushRequest;
use prost::Message as _;
use serde_json::Value as Json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::backend::{Backend, Chaos, Fault};
use crate::harness::Outrigger;

const CONTAINERS: usize = 10;

/// A line as stored: its stream, its number within its container, and what orders it at the
/// backend (the entry's time, or `log.sequence`).
#[derive(Debug)]
struct Stored {
    stream: String,
    n: usize,
    key: i128,
}

/// The container and number in `c3 n17`.
fn parse_line(line: &str) -> (usize, usize) {
    let (c, n) = line.split_once(' ').expect("a test line");
    (
        c.trim_start_matches('c').parse().unwrap(),
        n.trim_start_matches('n').parse().unwrap(),
    )
}

/// Forward mode with integer (whole-second) times, as Docker sends by default.
fn forward(tag: &str, events: &[(u32, Vec<(&str, String)>)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 2).unwrap();
    rmp::encode::write_str(&mut out, tag).unwrap();
    rmp::encode::write_array_len(&mut out, events.len() as u32).unwrap();
    for (secs, fields) in events {
        rmp::encode::write_array_len(&mut out, 2).unwrap();
        rmp::encode::write_uint(&mut out, u64::from(*secs)).unwrap();
        rmp::encode::write_map_len(&mut out, fields.len() as u32).unwrap();
        for (k, v) in fields {
            rmp::encode::write_str(&mut out, k).unwrap();
            rmp::encode::write_str(&mut out, v).unwrap();
        }
    }
    out
}

/// `containers` containers write `lines` lines each, every third to stderr, ten lines per
/// message, a new second every 100 lines; all connections at once. The connections stay
/// open (closing is not part of the traffic).
async fn send(o: &Outrigger, containers: usize, lines: usize) -> Vec<TcpStream> {
    let mut writers = Vec::new();
    for c in 0..containers {
        let mut s = o.connect().await;
        writers.push(tokio::spawn(async move {
            let id = format!("{c:x}").repeat(64)[..64].to_string();
            for chunk in (0..lines).collect::<Vec<_>>().chunks(10) {
                let events: Vec<_> = chunk
                    .iter()
                    .map(|&n| {
                        let stream = if n % 3 == 2 { "stderr" } else { "stdout" };
                        (
                            1_700_000_000 + (n / 100) as u32,
                            vec![
                                ("container_id", id.clone()),
                                ("container_name", format!("/c{c}")),
                                ("source", stream.to_string()),
                                ("log", format!("c{c} n{n}")),
                            ],
                        )
                    })
                    .collect();
                s.write_all(&forward(&format!("docker.c{c}"), &events))
                    .await
                    .unwrap();
            }
            s.flush().await.unwrap();
            s
        }));
    }
    let mut open = Vec::new();
    for w in writers {
        open.push(w.await.unwrap());
    }
    open
}

async fn start(sink: &str, url: &str, extra: &str) -> Outrigger {
    Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ngrace_period_secs = 10\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\n{sink}\nendpoint = \"{url}\"\n\
         retry_initial_backoff_ms = 5\nretry_max_backoff_ms = 20\n{extra}\n"
    ))
    .await
}

fn loki_stored(b: &Backend) -> Vec<Stored> {
    let mut out = Vec::new();
    for r in b.accepted() {
        let raw = snap::raw::Decoder::new().decompress_vec(&r.body).unwrap();
        for s in PushRequest::decode(&raw[..]).unwrap().streams {
            for e in s.entries {
                let t = e.timestamp.unwrap();
                out.push(Stored {
                    stream: s.labels.clone(),
                    n: parse_line(&e.line).1,
                    key: i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos),
                });
            }
        }
    }
    out
}

fn elasticsearch_stored(b: &Backend) -> Vec<Stored> {
    let mut out = Vec::new();
    for r in b.accepted() {
        let text = std::str::from_utf8(&r.body).unwrap();
        for doc in text.lines().skip(1).step_by(2) {
            let d: Json = serde_json::from_str(doc).unwrap();
            out.push(Stored {
                stream: format!("{} {}", d["container.name"], d["log.iostream"]),
                n: parse_line(d["message"].as_str().unwrap()).1,
                key: i128::from(d["log.sequence"].as_i64().expect("a sequence number")),
            });
        }
    }
    out
}

fn otlp_stored(b: &Backend) -> Vec<Stored> {
    let mut out = Vec::new();
    for r in b.accepted() {
        let req = ExportLogsServiceRequest::decode(&r.body[..]).unwrap();
        for rl in req.resource_logs {
            let resource = rl.resource.unwrap_or_default();
            let name = crate::otlp::attr(&resource.attributes, "container.name").cloned();
            for sl in rl.scope_logs {
                for rec in sl.log_records {
                    let Some(Value::StringValue(line)) =
                        rec.body.as_ref().and_then(|b| b.value.clone())
                    else {
                        panic!("a string body");
                    };
                    let stream = crate::otlp::attr(&rec.attributes, "log.iostream").cloned();
                    out.push(Stored {
                        stream: format!("{name:?} {stream:?}"),
                        n: parse_line(&line).1,
                        key: i128::from(rec.time_unix_nano),
                    });
                }
            }
        }
    }
    out
}

/// Waits until `want` lines are stored.
async fn wait(b: &Backend, stored: fn(&Backend) -> Vec<Stored>, want: usize) -> Vec<Stored> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = stored(b);
        if s.len() >= want || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each stream's lines, in the order stored.
fn by_stream(stored: &[Stored]) -> BTreeMap<&str, Vec<&Stored>> {
    let mut out: BTreeMap<&str, Vec<&Stored>> = BTreeMap::new();
    for s in stored {
        out.entry(&s.stream).or_default().push(s);
    }
    out
}

/// Lines stored after a later line of their stream, and neighbours along a stream whose
/// ordering key did not increase; every line must be there once.
fn disorder(stored: &[Stored], streams: usize, lines: usize) -> (usize, usize) {
    let by_stream = by_stream(stored);
    assert_eq!(by_stream.len(), streams, "{:?}", by_stream.keys());
    let total: usize = by_stream.values().map(Vec::len).sum();
    assert_eq!(total, CONTAINERS * lines, "every line stored once");
    let (mut late, mut keys) = (0, 0);
    for lines in by_stream.values() {
        let mut highest = None;
        for s in lines {
            if highest.is_some_and(|h| s.n < h) {
                late += 1;
            }
            highest = highest.max(Some(s.n));
        }
        keys += lines.windows(2).filter(|w| w[1].key <= w[0].key).count();
    }
    (late, keys)
}

const LINES: usize = 300;

fn chaos(ok: fn(&[u8]) -> (u16, String)) -> Chaos {
    Chaos {
        delay: (Duration::ZERO, Duration::from_millis(25)),
        fail_percent: 10,
        ok,
    }
}

/// Small requests, four at once: plenty of overlap.
const BUSY: &str = "max_in_flight = 4\nmax_batch_events = 40\nflush_interval_ms = 5";

#[tokio::test]
async fn loki_streams_stay_in_order() {
    let b = Backend::start_chaotic(vec![], chaos(|_| (204, String::new()))).await;
    let o = start("type = \"loki\"", &b.url(), BUSY).await;
    let _open = send(&o, CONTAINERS, LINES).await;
    let got = wait(&b, loki_stored, CONTAINERS * LINES).await;
    // Loki's stream is the label set: one per container, stdout and stderr together.
    assert_eq!(disorder(&got, CONTAINERS, LINES), (0, 0));
    assert!(
        b.requests() > b.accepted().len(),
        "some requests were retried"
    );
}

#[tokio::test]
async fn without_ordering_the_same_traffic_is_shuffled() {
    // What the tests above guard against: the same load with `ordering = "none"`.
    let b = Backend::start_chaotic(vec![], chaos(|_| (204, String::new()))).await;
    let o = start(
        "type = \"loki\"",
        &b.url(),
        &format!("{BUSY}\nordering = \"none\""),
    )
    .await;
    let _open = send(&o, CONTAINERS, LINES).await;
    let got = wait(&b, loki_stored, CONTAINERS * LINES).await;
    let (late, _) = disorder(&got, CONTAINERS, LINES);
    eprintln!(
        "ordering = \"none\": {late} of {} lines stored after a later line of their stream",
        got.len()
    );
    assert!(late > 0, "lines stored after later lines of their stream");
    for lines in by_stream(&got).values_mut() {
        lines.sort_by_key(|s| s.key);
        let n: Vec<usize> = lines.iter().map(|s| s.n).collect();
        assert!(n.is_sorted(), "sending times still sort them: {n:?}");
    }
}

#[tokio::test]
async fn elasticsearch_streams_stay_in_order_through_413_halves() {
    let b = Backend::start_chaotic(
        vec![
            Fault::Status(413, None, "too large"),
            Fault::Status(413, None, "too large"),
        ],
        chaos(crate::elasticsearch::ok),
    )
    .await;
    let o = start("type = \"elasticsearch\"", &b.url(), BUSY).await;
    let _open = send(&o, CONTAINERS, LINES).await;
    let got = wait(&b, elasticsearch_stored, CONTAINERS * LINES).await;
    // Container and stdout/stderr.
    assert_eq!(disorder(&got, 2 * CONTAINERS, LINES), (0, 0));
}

#[tokio::test]
async fn otlp_streams_stay_in_order() {
    let b = Backend::start_chaotic(vec![], chaos(|_| (200, String::new()))).await;
    let o = start(
        "type = \"otlp\"\nprotocol = \"http/protobuf\"",
        &b.url(),
        BUSY,
    )
    .await;
    let _open = send(&o, CONTAINERS, LINES).await;
    let got = wait(&b, otlp_stored, CONTAINERS * LINES).await;
    assert_eq!(disorder(&got, 2 * CONTAINERS, LINES), (0, 0));
}

/// How long `containers` × `lines` take to reach a Loki that answers after 50 ms.
async fn delivery_time(containers: usize, lines: usize, extra: &str) -> Duration {
    let b = Backend::start_chaotic(
        vec![],
        Chaos {
            delay: (Duration::from_millis(50), Duration::from_millis(50)),
            fail_percent: 0,
            ok: |_| (204, String::new()),
        },
    )
    .await;
    let o = start(
        "type = \"loki\"",
        &b.url(),
        &format!("max_batch_events = 100\nflush_interval_ms = 5\n{extra}"),
    )
    .await;
    let started = Instant::now();
    let _open = send(&o, containers, lines).await;
    let got = wait(&b, loki_stored, containers * lines).await;
    assert_eq!(got.len(), containers * lines);
    let took = started.elapsed();
    eprintln!(
        "{containers}x{lines} {extra:?}: {took:?}, {} requests",
        b.requests()
    );
    took
}

#[tokio::test]
async fn ten_streams_go_out_in_parallel() {
    let one = delivery_time(CONTAINERS, 500, "max_in_flight = 1").await;
    let four = delivery_time(CONTAINERS, 500, "max_in_flight = 4").await;
    let ratio = one.as_secs_f64() / four.as_secs_f64();
    eprintln!(
        "10 streams x 500 lines, 100 per request, 50 ms latency: max_in_flight = 1 {one:?}, 4 (ordered) {four:?}: {ratio:.2}x"
    );
    // Four requests in flight would be 4x at best; about 3.5x here when the machine is idle
    // and 2.9x while it builds. One at a time would be 1x.
    assert!(ratio >= 2.5, "{ratio:.2}x");
    // A single stream has one request in flight; ordering = "none" gives it all four.
    let ordered = delivery_time(1, 2000, "max_in_flight = 4").await;
    let free = delivery_time(1, 2000, "max_in_flight = 4\nordering = \"none\"").await;
    eprintln!("1 stream x 2000 lines: ordered {ordered:?}, ordering = \"none\" {free:?}");
    assert!(
        ordered > free,
        "one stream waits for its request; unordered it does not"
    );
}
