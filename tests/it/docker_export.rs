//! End to end with a real client: a container logging through the Docker engine's `fluentd`
//! driver to an Outrigger running in this process, exported to each in-test backend (Loki,
//! Elasticsearch, an OTLP/gRPC collector), trace IDs intact.
//!
//! Every container prints the same [`lines`]: JSON lines with `trace_id`/`span_id`, one with
//! a `traceparent`, plain-text lines with `trace_id=…` and `traceparent=…`, a stderr line,
//! a line without level or trace, and a JSON line of about 40 KiB that Docker splits into
//! 16 KiB fragments, its trace ID in the last one. Each test checks that the backend
//! received every line exactly once, with the trace and span IDs where its protocol keeps
//! them, the container's name and ID (from `--cidfile`), the severity where the line had a
//! level, and that the sink counted as many events as the container printed lines.
//!
//! Skipped like `docker.rs` (a `SKIPPED` message on stderr without a Docker engine; a failure
//! instead with `OUTRIGGER_REQUIRE_DOCKER=1`).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use serde_json::Value;

use crate::backend::{Backend, Fault};
use crate::clients::{now_secs, rfc3339};
use crate::docker::{IMAGE, docker_ready, run_container, unique_name};
use crate::harness::{Outrigger, metric_value};
use crate::{elasticsearch, loki, otlp};

/// Numbered JSON lines printed around the special ones.
const TICKS: usize = 40;
/// Padding of the long line: more than two of Docker's 16 KiB fragments.
const PAD: usize = 40_000;

/// One line the container prints, and what every exporter must make of it.
#[derive(Debug, Clone)]
struct Line {
    /// `stdout` or `stderr`.
    stream: &'static str,
    /// The line as printed (without its newline): Loki's line.
    text: String,
    /// Elasticsearch's `message` and the OTLP body: a text line itself, a JSON line's
    /// message field.
    message: String,
    /// Trace and span ID, lowercase hex.
    trace: Option<(String, String)>,
    /// W3C trace flags (only a `traceparent` states them).
    flags: u32,
    /// OpenTelemetry severity number; 0 when the line has no level.
    severity: i32,
    /// The level as written (Elasticsearch's `log.level`, OTLP's `severity_text`).
    level: &'static str,
    /// The shell printing it.
    sh: String,
}

impl Line {
    fn new(stream: &'static str, text: String, message: &str) -> Line {
        let redirect = if stream == "stderr" { " >&2" } else { "" };
        Line {
            stream,
            sh: format!("printf '%s\\n' '{text}'{redirect}"),
            text,
            message: message.to_string(),
            trace: None,
            flags: 0,
            severity: 0,
            level: "",
        }
    }

    fn trace(mut self, trace: &str, span: &str, flags: u32) -> Line {
        self.trace = Some((trace.to_string(), span.to_string()));
        self.flags = flags;
        self
    }

    fn level(mut self, severity: i32, level: &'static str) -> Line {
        self.severity = severity;
        self.level = level;
        self
    }

    /// The OpenTelemetry short name of the severity (Loki's `{severity}`).
    fn short_name(&self) -> &'static str {
        match self.severity {
            0 => "",
            5 => "DEBUG",
            9 => "INFO",
            13 => "WARN",
            17 => "ERROR",
            n => panic!("no short name for severity {n} in this test"),
        }
    }
}

/// Every line the container prints, in order.
fn lines() -> Vec<Line> {
    let tick = |i: usize| {
        let trace = format!("4bf92f3577b34da6a3ce{i:012}");
        let span = format!("00f067aa{i:08}");
        Line::new(
            "stdout",
            format!(
                r#"{{"level":"debug","msg":"tick {i}","trace_id":"{trace}","span_id":"{span}"}}"#
            ),
            &format!("tick {i}"),
        )
        .trace(&trace, &span, 0)
        .level(5, "debug")
    };

    let mut v = vec![
        Line::new(
            "stdout",
            r#"{"level":"info","msg":"order created","order":42,"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331"}"#.into(),
            "order created",
        )
        .trace("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 0)
        .level(9, "info"),
        Line::new(
            "stdout",
            r#"{"severity":"ERROR","message":"checkout failed","traceparent":"00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01"}"#.into(),
            "checkout failed",
        )
        .trace("5b8aa5a2d2c872e8321cf37308d69df2", "051581bf3cb55c13", 1)
        .level(17, "ERROR"),
    ];
    v.extend((1..=TICKS / 2).map(tick));

    // Docker cuts this one into 16 KiB fragments; the IDs are in the last.
    let (trace, span) = ("d4cda95b652f4a1592b449d5929fda1b", "6e0c63257de34c92");
    let head = r#"{"level":"error","msg":"huge payload","pad":""#;
    let tail = format!(r#"","trace_id":"{trace}","span_id":"{span}"}}"#);
    let mut long = Line::new(
        "stdout",
        format!("{head}{}{tail}", "p".repeat(PAD)),
        "huge payload",
    )
    .trace(trace, span, 0)
    .level(17, "error");
    long.sh = format!(
        "printf '%s' '{head}'; head -c {PAD} /dev/zero | tr '\\0' p; printf '%s\\n' '{tail}'"
    );
    v.push(long);

    v.push(
        Line::new(
            "stderr",
            "ERROR upstream failed traceparent=00-a3ce929d0e0e47364bf92f3577b34da6-53995c3f42cd8ad8-01"
                .into(),
            "ERROR upstream failed traceparent=00-a3ce929d0e0e47364bf92f3577b34da6-53995c3f42cd8ad8-01",
        )
        .trace("a3ce929d0e0e47364bf92f3577b34da6", "53995c3f42cd8ad8", 1)
        .level(17, "ERROR"),
    );
    v.extend((TICKS / 2 + 1..=TICKS).map(tick));
    let text = "WARN cache miss trace_id=1f4b3c6d8e9fa0b1c2d3e4f5a6b7c8d9 span_id=0123456789abcdef";
    v.push(
        Line::new("stdout", text.into(), text)
            .trace("1f4b3c6d8e9fa0b1c2d3e4f5a6b7c8d9", "0123456789abcdef", 0)
            .level(13, "WARN"),
    );
    let text = "plain line without context";
    v.push(Line::new("stdout", text.into(), text));
    v
}

/// The container's script: every line of [`lines`].
fn container_script(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| l.sh.as_str())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The line printed as `text`; panics naming it when there is none.
fn want<'a>(lines: &'a [Line], text: &str) -> &'a Line {
    lines
        .iter()
        .find(|l| l.text == text)
        .unwrap_or_else(|| panic!("unexpected line {:?}", short(text)))
}

/// At most the first 80 characters of `s`, for messages.
fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// How many times each key occurs.
fn count(keys: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// Asserts that `got` (one key per delivered event) is `expected` exactly: each once.
fn exactly_once(got: &[String], expected: impl Iterator<Item = String>, what: &str) {
    let got = count(got.iter().cloned());
    let expected = count(expected);
    if got != expected {
        let missing: Vec<_> = expected
            .keys()
            .filter(|k| !got.contains_key(*k))
            .map(|k| short(k))
            .collect();
        let twice: Vec<_> = got
            .iter()
            .filter(|(k, n)| **n > 1 || !expected.contains_key(*k))
            .map(|(k, n)| (short(k), *n))
            .collect();
        panic!("{what}: missing {missing:?}; duplicated or unexpected {twice:?}");
    }
}

/// A finished container run.
struct Run {
    name: String,
    id: String,
    /// The run's bounds, in seconds, on this host's clock (the daemon's too).
    start: i64,
    end: i64,
}

impl Run {
    fn check_time(&self, secs: i64, what: &str) {
        assert!(
            (self.start - 1..=self.end + 1).contains(&secs),
            "time {secs} of {what} outside the run [{}, {}]",
            self.start,
            self.end
        );
    }
}

/// Runs the container printing `lines` with the `fluentd` driver pointed at `o`.
async fn run(o: &Outrigger, case: &str, lines: &[Line]) -> Run {
    let name = unique_name(case);
    let cidfile = o.dir.path().join("cid");
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--name", &name, "--cidfile"])
        .arg(&cidfile)
        .args(["--log-driver", "fluentd", "--log-opt"])
        .arg(format!("fluentd-address=tcp://{}", o.addr()))
        .args(["--log-opt", "tag=docker.{{.Name}}"])
        .args([IMAGE, "sh", "-c", &container_script(lines)]);
    let start = now_secs();
    let out = run_container(cmd, &name).await;
    let end = now_secs();
    assert!(
        out.status.success(),
        "docker run {name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let id = std::fs::read_to_string(&cidfile).unwrap();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "container id {id:?}"
    );
    Run {
        name,
        id,
        start,
        end,
    }
}

/// The counts once the sink has delivered: delivered == printed, the long line joined from
/// its fragments, nothing refused or failed. Then drains and stops Outrigger.
async fn check_counts_and_stop(o: &mut Outrigger, lines: &[Line]) {
    let n = lines.len() as f64;
    let delivered = o
        .wait_metric(r#"outrigger_sink_events_total{component="out"}"#, n)
        .await;
    assert_eq!(delivered, n, "delivered == printed");
    let m = o.running.as_ref().unwrap().metrics.render();
    // The source counts events once fragments are joined.
    assert_eq!(
        metric_value(&m, r#"outrigger_source_events_total{component="in"}"#),
        n,
        "events read == lines printed"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"outrigger_enrich_partial_lines_total{component="in",outcome="complete"}"#
        ),
        1.0,
        "the long line was joined"
    );
    let traced = lines.iter().filter(|l| l.trace.is_some()).count() as f64;
    assert_eq!(
        metric_value(&m, r#"outrigger_enrich_trace_ids_total{component="in"}"#),
        traced,
        "events given a trace ID"
    );
    for l in m.lines() {
        if l.starts_with("outrigger_source_rejected_total{")
            || l.starts_with("outrigger_sink_failed_events_total{")
            || (l.starts_with("outrigger_enrich_partial_lines_total{")
                && !l.contains("outcome=\"complete\""))
            || l.starts_with("outrigger_enrich_invalid_trace_ids_total{")
            || l.starts_with("outrigger_enrich_parse_errors_total{")
        {
            assert!(l.ends_with(" 0"), "nothing refused, cut or failed: {l}");
        }
    }
    o.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_receives_every_line_with_trace_metadata() {
    if !docker_ready("docker_export::loki_receives_every_line_with_trace_metadata").await {
        return;
    }
    let lines = lines();
    let b = Backend::start(vec![]).await;
    // The default structured metadata, plus the container ID and the severity.
    let mut o = loki::outrigger(
        &b.url(),
        "structured_metadata = { trace_id = \"{trace_id}\", span_id = \"{span_id}\", \
         pod = \"{k8s.pod.name}\", stream = \"{log.iostream}\", \
         container_id = \"{container.id}\", level = \"{severity}\" }",
        "",
    )
    .await;
    let r = run(&o, "loki", &lines).await;
    loki::wait_entries(&b, lines.len()).await;
    check_counts_and_stop(&mut o, &lines).await;

    // After the drain: nothing more arrived.
    let got = loki::entries(&b);
    let texts: Vec<String> = got.iter().map(|(_, e)| e.line.clone()).collect();
    exactly_once(&texts, lines.iter().map(|l| l.text.clone()), "Loki lines");
    assert_eq!(got.len(), lines.len(), "entries == lines printed");
    let labels = format!(r#"{{container="{}", job="outrigger"}}"#, r.name);
    for (l, e) in &got {
        let w = want(&lines, &e.line);
        let what = &short(&w.text);
        assert_eq!(l, &labels, "stream of {what}");
        let mut md = BTreeMap::from([("stream", w.stream), ("container_id", r.id.as_str())]);
        if let Some((trace, span)) = &w.trace {
            md.insert("trace_id", trace.as_str());
            md.insert("span_id", span.as_str());
        }
        if w.severity > 0 {
            md.insert("level", w.short_name());
        }
        assert_eq!(loki::metadata(e), md, "structured metadata of {what}");
        r.check_time(e.timestamp.unwrap().seconds, what);
    }
    let long = got.iter().find(|(_, e)| e.line.len() > PAD).unwrap();
    assert!(long.1.line.ends_with(r#""span_id":"6e0c63257de34c92"}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_receives_every_line_as_an_ecs_document() {
    let test = "docker_export::elasticsearch_receives_every_line_as_an_ecs_document";
    if !docker_ready(test).await {
        return;
    }
    let lines = lines();
    let faults = elasticsearch::script(&[], Fault::Custom(elasticsearch::ok));
    let b = Backend::start(faults.clone()).await;
    let mut o = elasticsearch::outrigger(&b.url(), "").await;
    let r = run(&o, "es", &lines).await;
    elasticsearch::wait_stored(&b, &faults, lines.len()).await;
    check_counts_and_stop(&mut o, &lines).await;

    let docs = elasticsearch::wait_stored(&b, &faults, lines.len()).await;
    let messages: Vec<String> = docs
        .iter()
        .map(|d| d["message"].as_str().expect("a message").to_string())
        .collect();
    exactly_once(
        &messages,
        lines.iter().map(|l| l.message.clone()),
        "Elasticsearch messages",
    );
    assert_eq!(docs.len(), lines.len(), "documents == lines printed");
    for d in &docs {
        let w = lines
            .iter()
            .find(|l| d["message"] == l.message.as_str())
            .unwrap();
        let what = &w.message;
        let (trace, span) = match &w.trace {
            Some((t, s)) => (Value::from(t.as_str()), Value::from(s.as_str())),
            None => (Value::Null, Value::Null),
        };
        assert_eq!(d["trace.id"], trace, "trace.id of {what}");
        assert_eq!(d["span.id"], span, "span.id of {what}");
        let level = Some(w.level).filter(|l| !l.is_empty());
        assert_eq!(d["log.level"].as_str(), level, "log.level of {what}");
        assert_eq!(d["log.iostream"], w.stream, "log.iostream of {what}");
        assert_eq!(d["container.id"], r.id.as_str(), "container.id of {what}");
        assert_eq!(
            d["container.name"],
            r.name.as_str(),
            "container.name of {what}"
        );
        assert_eq!(
            d["fluent.tag"],
            format!("docker.{}", r.name),
            "tag of {what}"
        );
        assert!(d.get("log.flags").is_none(), "complete: {what}");
        for driver in ["container_id", "container_name", "source", "log"] {
            assert!(d.get(driver).is_none(), "{driver} in {what}");
        }
        r.check_time(rfc3339(d["@timestamp"].as_str().unwrap()).0, what);
    }
    // The application's fields, spliced: the long line's whole padding among them.
    let find = |m: &str| docs.iter().find(|d| d["message"] == m).unwrap();
    assert_eq!(find("order created")["order"], 42);
    assert_eq!(find("huge payload")["pad"].as_str().unwrap().len(), PAD);
    assert_eq!(
        find("checkout failed")["traceparent"],
        "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01"
    );
    let dead = std::fs::read_to_string(o.dir.path().join("dead.ndjson")).unwrap_or_default();
    assert!(dead.is_empty(), "no dead letters: {dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_receives_every_line_with_trace_bytes() {
    if !docker_ready("docker_export::otlp_grpc_receives_every_line_with_trace_bytes").await {
        return;
    }
    let lines = lines();
    let c = otlp::Collector::start(vec![]).await;
    let mut o = otlp::outrigger(&c.url(), "").await;
    let r = run(&o, "otlp", &lines).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while otlp::records(&c.accepted()).len() < lines.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check_counts_and_stop(&mut o, &lines).await;

    let reqs = c.accepted();
    let str_of = |v: Option<&Any>| match v {
        Some(Any::StringValue(s)) => s.clone(),
        other => panic!("not a string: {other:?}"),
    };
    for rl in reqs.iter().flat_map(|r| &r.resource_logs) {
        let attrs: Vec<(String, String)> = rl
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    str_of(kv.value.as_ref().unwrap().value.as_ref()),
                )
            })
            .collect();
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            attrs,
            [
                kv("container.id", &r.id),
                kv("container.name", &r.name),
                kv("k8s.node.name", "node-7"),
            ],
            "the container's resource"
        );
    }
    let records = otlp::records(&reqs);
    let bodies: Vec<String> = records
        .iter()
        .map(|rec| str_of(rec.body.as_ref().and_then(|b| b.value.as_ref())))
        .collect();
    exactly_once(
        &bodies,
        lines.iter().map(|l| l.message.clone()),
        "OTLP bodies",
    );
    assert_eq!(records.len(), lines.len(), "records == lines printed");
    for (rec, body) in records.iter().zip(&bodies) {
        let w = lines
            .iter()
            .find(|l| l.message == *body)
            .unwrap_or_else(|| panic!("unexpected body {:?}", short(body)));
        let what = &short(&w.text);
        let (trace, span) = match &w.trace {
            Some((t, s)) => (hex::decode(t).unwrap(), hex::decode(s).unwrap()),
            None => (vec![], vec![]),
        };
        assert_eq!(rec.trace_id, trace, "trace_id of {what}");
        assert_eq!(rec.span_id, span, "span_id of {what}");
        assert_eq!(rec.flags, w.flags, "flags of {what}");
        assert_eq!(rec.severity_number, w.severity, "severity of {what}");
        assert_eq!(rec.severity_text, w.level, "severity_text of {what}");
        let attr = |k| otlp::attr(&rec.attributes, k);
        assert_eq!(
            attr("log.iostream"),
            Some(&Any::StringValue(w.stream.into())),
            "log.iostream of {what}"
        );
        assert_eq!(
            attr("fluent.tag"),
            Some(&Any::StringValue(format!("docker.{}", r.name))),
            "fluent.tag of {what}"
        );
        assert!(attr("outrigger.incomplete").is_none(), "complete: {what}");
        r.check_time((rec.time_unix_nano / 1_000_000_000) as i64, what);
    }
    // The message is the body, the JSON line's other fields typed attributes.
    let order = records
        .iter()
        .zip(&bodies)
        .find(|(_, body)| *body == "order created")
        .map(|(rec, _)| rec)
        .expect("the order line");
    assert_eq!(otlp::attr(&order.attributes, "msg"), None);
    assert_eq!(
        otlp::attr(&order.attributes, "order"),
        Some(&Any::IntValue(42))
    );
}
