//! The `elasticsearch` sink against an in-test `_bulk` endpoint that computes per-item
//! statuses from the documents it receives, with injected faults. Requests go one at a time
//! (`max_in_flight = 1`), so the script of answers can be replayed afterwards to know exactly
//! which documents the "cluster" stored; every test checks that each event sent was stored
//! once or dead-lettered, never lost.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::backend::{Backend, Fault, free_addr};
use crate::harness::{Outrigger, wire};

const BULK_PATH: &str =
    "/_bulk?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// Outrigger with one `elasticsearch` sink named `out` pointed at `url`; `extra` lines go into
/// the sink's table.
pub(crate) async fn outrigger(url: &str, extra: &str) -> Outrigger {
    Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ngrace_period_secs = 10\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\ntype = \"elasticsearch\"\nendpoint = \"{url}\"\nmax_in_flight = 1\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\nflush_interval_ms = 50\n\
         dead_letter_path = \"{{dir}}/dead.ndjson\"\n{extra}\n"
    ))
    .await
}

// === the in-test cluster ===

/// Answers a bulk request: one item per action, with the status `status` gives its document.
fn bulk(body: &[u8], status: fn(&Value) -> u16) -> (u16, String) {
    let text = std::str::from_utf8(body).expect("UTF-8 body");
    assert!(text.ends_with('\n'), "the body ends with a newline");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() % 2, 0, "action and document lines pair up");
    let mut errors = false;
    let items: Vec<Value> = lines
        .chunks(2)
        .map(|pair| {
            let action: Value = serde_json::from_str(pair[0]).unwrap();
            let doc: Value = serde_json::from_str(pair[1]).unwrap();
            let name = action.as_object().unwrap().keys().next().unwrap().clone();
            let s = status(&doc);
            let mut item = json!({ "status": s });
            if !(200..300).contains(&s) {
                errors = true;
                let kind = match s {
                    409 => "version_conflict_engine_exception",
                    429 => "es_rejected_execution_exception",
                    400 => "mapper_parsing_exception",
                    _ => "exception",
                };
                item["error"] = json!({ "type": kind, "reason": format!("doc {}", doc["i"]) });
            }
            json!({ name: item })
        })
        .collect();
    (200, json!({ "errors": errors, "items": items }).to_string())
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

/// Everything stored.
pub(crate) fn ok(body: &[u8]) -> (u16, String) {
    bulk(body, |_| 201)
}

/// A first answer with every kind of item failure.
fn first_try(body: &[u8]) -> (u16, String) {
    bulk(body, |d| match kind(d) {
        "busy" => 429,
        "down" => 503,
        "bad" => 400,
        "dup" => 409,
        _ => 201,
    })
}

/// Later answers: no more throttling; mapping errors and conflicts stay.
fn later_tries(body: &[u8]) -> (u16, String) {
    bulk(body, |d| match kind(d) {
        "bad" => 400,
        "dup" => 409,
        _ => 201,
    })
}

/// A proxy that refuses bodies of more than 4 documents, and any body with a "huge" one.
fn small_bodies_only(body: &[u8]) -> (u16, String) {
    let docs = body.iter().filter(|b| **b == b'\n').count() / 2;
    let huge = String::from_utf8_lossy(body).contains("\"kind\":\"huge\"");
    if docs > 4 || huge {
        return (413, "<html>413 Request Entity Too Large</html>".into());
    }
    ok(body)
}

/// `script` followed by `then` for every later request.
pub(crate) fn script(first: &[Fault], then: Fault) -> Vec<Fault> {
    let mut s = first.to_vec();
    s.extend(std::iter::repeat_n(then, 500));
    s
}

/// One request as the cluster handled it: its actions and documents, and each item's status
/// (`None` when the whole request failed).
struct Handled {
    path: String,
    headers: hyper::HeaderMap,
    actions: Vec<Value>,
    docs: Vec<Value>,
    statuses: Vec<Option<u16>>,
}

/// Replays `script` over the requests the backend received, in order.
fn handled(b: &Backend, script: &[Fault]) -> Vec<Handled> {
    let received = b.state.received.lock().unwrap().clone();
    received
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let text = String::from_utf8(r.body.to_vec()).unwrap();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let (actions, docs): (Vec<_>, Vec<_>) = lines
                .chunks(2)
                .map(|p| (p[0].clone(), p[1].clone()))
                .unzip();
            let statuses = match &script[k] {
                Fault::Custom(f) => {
                    let (status, resp) = f(&r.body);
                    if status == 200 {
                        let resp: Value = serde_json::from_str(&resp).unwrap();
                        resp["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|i| {
                                let item = i.as_object().unwrap().values().next().unwrap();
                                Some(item["status"].as_u64().unwrap() as u16)
                            })
                            .collect()
                    } else {
                        vec![None; docs.len()]
                    }
                }
                _ => vec![None; docs.len()],
            };
            Handled {
                path: r.path.clone(),
                headers: r.headers.clone(),
                actions,
                docs,
                statuses,
            }
        })
        .collect()
}

/// The documents the cluster holds: stored (2xx) items. A 409 on `create` means an earlier
/// copy is stored, so it adds nothing.
fn stored(b: &Backend, script: &[Fault]) -> Vec<Value> {
    handled(b, script)
        .into_iter()
        .flat_map(|h| {
            h.docs
                .into_iter()
                .zip(h.statuses)
                .filter(|(_, s)| s.is_some_and(|s| (200..300).contains(&s)))
                .map(|(d, _)| d)
        })
        .collect()
}

/// The `i` of each document, as a number.
fn ids(docs: &[Value]) -> Vec<usize> {
    let mut v: Vec<usize> = docs
        .iter()
        .map(|d| d["i"].as_str().unwrap().parse().unwrap())
        .collect();
    v.sort_unstable();
    v
}

/// Waits until `n` documents are stored (20 s at most) and returns them.
pub(crate) async fn wait_stored(b: &Backend, script: &[Fault], n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stored(b, script);
        if s.len() >= n || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The dead letters: `(reason, i)` per line.
fn dead_letters(o: &Outrigger) -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(o.dir.path().join("dead.ndjson")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["sink"], "out");
            (
                v["reason"].as_str().unwrap().to_string(),
                v["event"]["record"]["i"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// Sends one Forward-mode message of records `{"i": "<i>", "kind": <kinds[i]>}` (one frame,
/// so one batch, so one request).
async fn send_kinds(o: &Outrigger, kinds: &[&str]) {
    let is: Vec<String> = (0..kinds.len()).map(|i| i.to_string()).collect();
    let records: Vec<Vec<(&str, &str)>> = kinds
        .iter()
        .zip(&is)
        .map(|(k, i)| vec![("i", i.as_str()), ("kind", *k)])
        .collect();
    let mut s = o.connect().await;
    s.write_all(&wire::forward("app", &records, None))
        .await
        .unwrap();
    s.flush().await.unwrap();
}

/// Sends `n` plain events `{"i": "<i>"}`, ids from `from`, as Message-mode frames.
async fn send(o: &Outrigger, from: usize, n: usize) {
    let mut s = o.connect().await;
    let mut buf = Vec::new();
    for i in from..from + n {
        buf.extend(wire::message(
            "app",
            1_700_000_000,
            &[("i", &i.to_string())],
            None,
        ));
    }
    s.write_all(&buf).await.unwrap();
    s.flush().await.unwrap();
}

fn metric(o: &Outrigger, name: &str, labels: &str) -> f64 {
    o.metric(&format!(
        "outrigger_sink_{name}{{component=\"out\"{labels}}}"
    ))
}

// === tests ===

#[tokio::test]
async fn documents_are_ecs_with_the_application_fields_spliced() {
    let faults = script(&[], Fault::Custom(ok));
    let b = Backend::start(faults.clone()).await;
    let o = outrigger(
        &b.url(),
        "auth = { api_key = { key = \"aWQ6a2V5\" } }\ncompression = \"gzip\"",
    )
    .await;
    let cid = "c0ffee".repeat(10) + "abcd";
    let json_line = r#"{"level":"error","msg":"payment failed","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","order":{"id":42,"items":["a","b"]}}"#;
    let docker = |line: &'static str, source: &'static str| {
        vec![
            ("container_id", cid.as_str()),
            ("container_name", "/payments-1"),
            ("source", source),
            ("log", line),
            ("com.example.team", "payments"),
        ]
    };
    let k8s_id = "a".repeat(64);
    let k8s_tag = format!("kube.var.log.containers.web-7d9f_shop_app-{k8s_id}.log");
    let mut s = o.connect().await;
    let mut frames = wire::forward(
        "docker.payments",
        &[
            docker(json_line, "stderr"),
            docker("GET /health 200", "stdout"),
        ],
        None,
    );
    frames.extend(wire::forward(
        &k8s_tag,
        &[vec![("log", "WARN cache cold"), ("stream", "stdout")]],
        None,
    ));
    s.write_all(&frames).await.unwrap();
    let got = wait_stored(&b, &faults, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");

    let ds = json!({"data_stream.type": "logs", "data_stream.dataset": "outrigger", "data_stream.namespace": "default"});
    let with_ds = |mut v: Value| {
        v.as_object_mut()
            .unwrap()
            .extend(ds.as_object().unwrap().clone());
        v
    };
    assert_eq!(
        got[0],
        with_ds(json!({
            "@timestamp": "2023-11-14T22:13:20.000000000Z",
            "message": "payment failed",
            "log.level": "error",
            "log.iostream": "stderr",
            "trace.id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span.id": "00f067aa0ba902b7",
            "container.id": cid,
            "container.name": "payments-1",
            "fluent.tag": "docker.payments",
            "level": "error",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "order": {"id": 42, "items": ["a", "b"]},
            "com.example.team": "payments",
            "log.sequence": 1_700_000_000_000_000_000u64,
        }))
    );
    assert_eq!(
        got[1],
        with_ds(json!({
            "@timestamp": "2023-11-14T22:13:20.000000001Z",
            "message": "GET /health 200",
            "log.iostream": "stdout",
            "container.id": cid,
            "container.name": "payments-1",
            "fluent.tag": "docker.payments",
            "com.example.team": "payments",
            "log.sequence": 1_700_000_000_000_000_001u64,
        }))
    );
    assert_eq!(
        got[2],
        with_ds(json!({
            "@timestamp": "2023-11-14T22:13:20.000000000Z",
            "message": "WARN cache cold",
            "log.level": "WARN",
            "container.id": k8s_id,
            "kubernetes.pod.name": "web-7d9f",
            "kubernetes.namespace": "shop",
            "kubernetes.container.name": "app",
            "orchestrator.type": "kubernetes",
            "fluent.tag": k8s_tag,
            "stream": "stdout",
            "log.sequence": 1_700_000_000_000_000_000u64,
        }))
    );

    let h = handled(&b, &faults);
    assert_eq!(h[0].path, BULK_PATH);
    let headers = &h[0].headers;
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["authorization"], "ApiKey aWQ6a2V5");
    for r in &h {
        for a in &r.actions {
            assert_eq!(a, &json!({"create": {"_index": "logs-outrigger-default"}}));
        }
    }
    o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 3.0)
        .await;
    assert_eq!(metric(&o, "events_total", ""), 3.0);
}

#[tokio::test]
async fn dated_indices_hash_ids_and_the_same_ids_on_retry() {
    let faults = script(&[Fault::Status(503, None, "busy")], Fault::Custom(ok));
    let b = Backend::start(faults.clone()).await;
    let o = outrigger(
        &b.url(),
        "index = \"app-%Y.%m.%d\"\naction = \"index\"\nid = \"hash\"\ncompression = \"none\"",
    )
    .await;
    let mut s = o.connect().await;
    let mut buf = Vec::new();
    for (i, t) in [(0, 1_700_000_000), (1, 1_700_086_400), (2, 1_700_000_000)] {
        // Event 2 repeats event 0's time with another record: another ID.
        buf.extend(wire::message("app", t, &[("i", &i.to_string())], None));
    }
    s.write_all(&buf).await.unwrap();
    let got = wait_stored(&b, &faults, 3).await;
    assert_eq!(ids(&got), vec![0, 1, 2]);
    let h = handled(&b, &faults);
    assert!(h.len() >= 2, "the 503 was retried");
    assert!(h[0].headers.get("content-encoding").is_none());
    let actions = |r: &Handled| {
        r.docs
            .iter()
            .zip(&r.actions)
            .map(|(d, a)| (d["i"].as_str().unwrap().to_string(), a.clone()))
            .collect::<Vec<_>>()
    };
    // The retry carries the same documents with the same IDs.
    assert_eq!(actions(&h[0]), actions(&h[1]));
    let mut seen = std::collections::HashSet::new();
    for (i, a) in h.iter().flat_map(actions).take(3) {
        let index = a["index"]["_index"].as_str().unwrap();
        let want = if i == "1" {
            "app-2023.11.15"
        } else {
            "app-2023.11.14"
        };
        assert_eq!(index, want);
        let id = a["index"]["_id"].as_str().unwrap();
        assert_eq!(id.len(), 22, "{id}");
        assert!(seen.insert(id.to_string()), "IDs differ between events");
    }
    o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 3.0)
        .await;
    assert_eq!(metric(&o, "retries_total", ",reason=\"server_error\""), 1.0);
}

#[tokio::test]
async fn item_failures_resend_only_the_throttled_and_dead_letter_the_refused() {
    let faults = script(&[Fault::Custom(first_try)], Fault::Custom(later_tries));
    let b = Backend::start(faults.clone()).await;
    let o = outrigger(&b.url(), "").await;
    let kinds: Vec<&str> = (0..30)
        .map(|i| ["busy", "bad", "dup", "fine", "down", "fine"][i % 6])
        .collect();
    send_kinds(&o, &kinds).await;
    let of = |k: &str| -> Vec<usize> { (0..30).filter(|i| kinds[*i] == k).collect() };
    let bad = of("bad");
    let dups = of("dup");
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        bad.len() as f64,
    )
    .await;
    let good: Vec<usize> = (0..30)
        .filter(|i| !bad.contains(i) && !dups.contains(i))
        .collect();
    let got = wait_stored(&b, &faults, good.len()).await;
    o.wait_metric(
        "outrigger_sink_events_total{component=\"out\"}",
        (30 - bad.len()) as f64,
    )
    .await;

    let h = handled(&b, &faults);
    assert_eq!(h.len(), 2, "one request, then one retry");
    assert_eq!(ids(&h[0].docs), (0..30).collect::<Vec<_>>());
    // Only the throttled (429) and unavailable (503) items went again.
    let mut resent = [of("busy"), of("down")].concat();
    resent.sort_unstable();
    assert_eq!(ids(&h[1].docs), resent);
    // Stored once each; the 409s were stored before ("already exists"), counted delivered.
    assert_eq!(ids(&got), good);
    assert_eq!(
        metric(&o, "events_total", ""),
        (30 - bad.len()) as f64,
        "stored + conflicts"
    );
    let dead = dead_letters(&o);
    let mut dead_ids: Vec<usize> = dead.iter().map(|d| d.1).collect();
    dead_ids.sort_unstable();
    assert_eq!(dead_ids, bad);
    for (reason, i) in &dead {
        assert_eq!(
            reason,
            &format!("item 400 mapper_parsing_exception: doc \"{i}\"")
        );
    }
    let mut all = [ids(&got), dups.clone(), dead_ids].concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..30).collect::<Vec<_>>(),
        "every event accounted for"
    );
    assert_eq!(metric(&o, "retries_total", ",reason=\"partial\""), 1.0);
}

#[tokio::test]
async fn throttled_request_waits_for_retry_after() {
    let faults = script(
        &[Fault::Status(
            429,
            Some(1),
            r#"{"error":{"type":"es_rejected_execution_exception"},"status":429}"#,
        )],
        Fault::Custom(ok),
    );
    let b = Backend::start(faults.clone()).await;
    let o = outrigger(&b.url(), "").await;
    let started = Instant::now();
    send(&o, 0, 50).await;
    let got = wait_stored(&b, &faults, 50).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    assert_eq!(ids(&got), (0..50).collect::<Vec<_>>());
    o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 50.0)
        .await;
    assert_eq!(metric(&o, "events_total", ""), 50.0);
    assert_eq!(metric(&o, "retries_total", ",reason=\"throttled\""), 1.0);
}

#[tokio::test]
async fn server_error_bursts_and_resets_lose_nothing() {
    let faults = script(
        &[
            Fault::Status(503, None, "unavailable"),
            Fault::Status(503, None, "unavailable"),
            Fault::Status(503, None, "unavailable"),
            Fault::Reset,
            Fault::Status(502, None, "bad gateway"),
        ],
        Fault::Custom(ok),
    );
    let b = Backend::start(faults.clone()).await;
    let o = outrigger(&b.url(), "").await;
    send(&o, 0, 200).await;
    let got = wait_stored(&b, &faults, 200).await;
    assert_eq!(ids(&got), (0..200).collect::<Vec<_>>(), "each stored once");
    o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 200.0)
        .await;
    let retries = metric(&o, "retries_total", ",reason=\"server_error\"")
        + metric(&o, "retries_total", ",reason=\"connection\"");
    assert!(retries >= 5.0, "{retries} retries");
    assert!(dead_letters(&o).is_empty());
}

#[tokio::test]
async fn backend_down_at_start_then_up_loses_nothing() {
    let addr = free_addr().await;
    let o = outrigger(&format!("http://{addr}"), "").await;
    send(&o, 0, 300).await;
    o.wait_metric(
        "outrigger_sink_retries_total{component=\"out\",reason=\"connection\"}",
        1.0,
    )
    .await;
    let faults = script(&[], Fault::Custom(ok));
    let b = Backend::start_on(addr, 200, faults.clone()).await;
    let got = wait_stored(&b, &faults, 300).await;
    assert_eq!(ids(&got), (0..300).collect::<Vec<_>>());
    o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 300.0)
        .await;
    assert_eq!(metric(&o, "events_total", ""), 300.0);
}

#[tokio::test]
async fn too_large_requests_are_split_and_a_too_large_document_dead_lettered() {
    let faults = script(&[], Fault::Custom(small_bodies_only));
    let b = Backend::start(faults.clone()).await;
    let o = outrigger(&b.url(), "").await;
    let mut kinds = vec!["fine"; 20];
    kinds[13] = "huge";
    send_kinds(&o, &kinds).await;
    let got = wait_stored(&b, &faults, 19).await;
    let mut want: Vec<usize> = (0..20).collect();
    want.remove(13);
    assert_eq!(ids(&got), want, "each stored once");
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        1.0,
    )
    .await;
    let dead = dead_letters(&o);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, 13);
    assert!(
        dead[0].0.contains("HTTP 413") && dead[0].0.contains("single event"),
        "{}",
        dead[0].0
    );
    assert_eq!(metric(&o, "events_total", ""), 19.0);
    assert_eq!(metric(&o, "retries_total", ",reason=\"partial\""), 0.0);
    // 20 → 10 + 10 → 5 × 4 → 2 + 3 …: refused bodies were split, accepted ones were small.
    let h = handled(&b, &faults);
    assert_eq!(h[0].docs.len(), 20);
    assert!(h[0].statuses[0].is_none(), "the first body was refused");
    for r in &h {
        let accepted = r.statuses.iter().all(Option::is_some);
        let huge = r.docs.iter().any(|d| kind(d) == "huge");
        assert_eq!(accepted, r.docs.len() <= 4 && !huge);
    }
}

#[tokio::test]
async fn a_half_that_fails_whole_holds_back_the_halves_after_it() {
    // 413, then the first half answered 503: the second half must not be stored before the
    // first (they are one stream), so it waits for the retry instead of going alone.
    let faults = script(
        &[
            Fault::Status(413, None, "too large"),
            Fault::Status(503, None, "busy"),
        ],
        Fault::Custom(ok),
    );
    let b = Backend::start(faults.clone()).await;
    let o = outrigger(&b.url(), "").await;
    send(&o, 0, 10).await;
    let got = wait_stored(&b, &faults, 10).await;
    let order: Vec<usize> = got
        .iter()
        .map(|d| d["i"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>(), "stored once, in order");
    let h = handled(&b, &faults);
    let sizes: Vec<usize> = h.iter().map(|r| r.docs.len()).collect();
    assert_eq!(
        sizes,
        [10, 5, 10],
        "the half after the failed one was never sent alone"
    );
}

#[tokio::test]
async fn opensearch_raw_mapping_and_pipeline() {
    let faults = script(&[], Fault::Custom(ok));
    let b = Backend::start(faults.clone()).await;
    let o = outrigger(
        &b.url(),
        "api_version = \"opensearch\"\nmapping = \"raw\"\npipeline = \"logs parse\"\n\
         index = \"outrigger-%Y\"\nauth = { basic = { user = \"admin\", password = \"pw\" } }",
    )
    .await;
    send(&o, 0, 5).await;
    let got = wait_stored(&b, &faults, 5).await;
    let h = handled(&b, &faults);
    assert_eq!(h[0].path, format!("{BULK_PATH}&pipeline=logs%20parse"));
    assert_eq!(
        h[0].actions[0],
        json!({"create": {"_index": "outrigger-2023"}})
    );
    assert_eq!(
        got[0],
        json!({
            "@timestamp": "2023-11-14T22:13:20.000000000Z",
            "tag": "app",
            "time": "2023-11-14T22:13:20.000000000Z",
            "record": {"i": "0"},
            "log.sequence": 1_700_000_000_000_000_000u64,
        })
    );
    let i: Vec<usize> = got
        .iter()
        .map(|d| d["record"]["i"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(i, (0..5).collect::<Vec<_>>());
    o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 5.0)
        .await;
}

#[tokio::test]
async fn invalid_settings_are_refused_at_start() {
    let config = |extra: &str| {
        format!(
            "[sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
             [sinks.out]\ntype = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:9\"\n{extra}\n"
        )
    };
    let e = outrigger::config::parse("test.toml", &config("index = \"Logs-%Y\""), |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sinks.out.index") && e.contains("lowercase"),
        "{e}"
    );
    let e = outrigger::config::parse("test.toml", &config("api_version = 6"), |_| None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sinks.out.api_version"), "{e}");
    let settings = outrigger::config::parse(
        "test.toml",
        &config("api_version = \"opensearch\"\nauth = { api_key = { key = \"k\" } }"),
        |_| None,
    )
    .unwrap();
    let e = match outrigger::topology::start(&settings).await {
        Ok(_) => panic!("started with an API key for OpenSearch"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("sinks.out") && e.contains("API keys"), "{e}");
}
