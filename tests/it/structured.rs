//! Records that carry the application's fields themselves, as fluent-logger libraries send
//! them (no `log` line): trace context, level, message and typed fields must reach every
//! exporter exactly as they do for a JSON line.
//!
//! Real clients: PyPI's `fluent-logger` (sync sender with int, float and EventTime times, the
//! async sender, and the camelCase, `traceparent`, Datadog, nested `context` and `otel`
//! forms; `tests/docker/fluent_logger_structured.py`) and the Go fluent-logger, the library
//! inside Docker's driver, posting a map with acks (`tests/docker/fluent_logger_go/`, built
//! with Debian's `golang-go` and `golang-github-fluent-fluent-logger-golang-dev`). One
//! Outrigger exports to an in-test Loki, Elasticsearch and OTLP/gRPC collector at once.
//!
//! Skipped with a `SKIPPED` message when a client cannot run; `OUTRIGGER_REQUIRE_CLIENTS=1`
//! makes that a failure (CI sets it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use serde_json::Value;

use crate::backend::{Backend, Fault};
use crate::clients::{python_has, require, run_blocking, run_script, script};
use crate::harness::Outrigger;
use crate::otlp::{Collector, attr, records};
use crate::{elasticsearch, loki};

const T0: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;
const S0: u64 = 0x00f0_67aa_0ba9_02b7;
/// Events of each Python form, and from the Go client.
const N: usize = 20;
const GO_N: usize = 50;

/// What one event must become.
#[derive(Debug, Clone)]
struct Want {
    tag: String,
    message: String,
    /// The record key the message came from (not repeated as a field or attribute).
    message_key: &'static str,
    /// OpenTelemetry severity number and the level as written.
    severity: i32,
    level: &'static str,
    trace: String,
    span: String,
    /// W3C flags, when the form states them.
    flags: u32,
    i: i64,
    /// Nanoseconds since the epoch, when the client set the time.
    time: Option<u64>,
}

fn wants() -> Vec<Want> {
    let mut out = Vec::new();
    let forms: [(&str, &'static str, i32, &'static str); 9] = [
        ("snake", "message", 13, "warning"),
        ("float", "message", 13, "warning"),
        ("eventtime", "message", 13, "warning"),
        ("async", "message", 13, "warning"),
        ("camel", "msg", 17, "ERROR"),
        ("traceparent", "message", 9, "info"),
        ("datadog", "message", 17, "error"),
        ("nested", "message", 5, "debug"),
        ("otel", "message", 9, "info"),
    ];
    for (form, key, severity, level) in forms {
        for i in 0..N {
            let trace = match form {
                // Datadog IDs are 64-bit: the low half, left-padded.
                "datadog" => format!("{:032x}", (T0 + i as u128) & u128::from(u64::MAX)),
                _ => format!("{:032x}", T0 + i as u128),
            };
            let base = 1_700_000_000 + i as u64;
            out.push(Want {
                tag: format!("py.{form}"),
                message: format!("{form} message {i}"),
                message_key: key,
                severity,
                level,
                trace,
                span: format!("{:016x}", S0 + i as u64),
                flags: u32::from(form == "traceparent"),
                i: i as i64,
                time: match form {
                    "snake" => Some(base * 1_000_000_000),
                    "float" => Some(base * 1_000_000_000 + 250_000_000),
                    "eventtime" => Some(1_700_000_000_123_456_789 + i as u64),
                    _ => None,
                },
            });
        }
    }
    out
}

fn go_wants() -> Vec<Want> {
    (0..GO_N)
        .map(|i| Want {
            tag: "go.map".into(),
            message: format!("go message {i}"),
            message_key: "message",
            severity: 17,
            level: "error",
            trace: format!("{:032x}", T0 + i as u128),
            span: format!("{:016x}", S0 + i as u64),
            flags: 0,
            i: i as i64,
            time: None,
        })
        .collect()
}

/// The Go client, built once into the target directory with Debian's Go toolchain and
/// library (GOPATH mode: the library is a Debian package, not a module download).
fn go_client() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fluent_logger_go");
            let src = script("fluent_logger_go").join("main.go");
            let build = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(&src)
                .env("GO111MODULE", "off")
                .env("GOPATH", "/usr/share/gocode")
                .env(
                    "GOCACHE",
                    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gocache"),
                )
                .output()
                .map_err(|e| {
                    format!("no Go toolchain (go build: {e}); apt-get install golang-go")
                })?;
            if build.status.success() {
                Ok(out)
            } else {
                Err(format!(
                    "cannot build the Go fluent-logger client (apt-get install \
                     golang-github-fluent-fluent-logger-golang-dev): {}",
                    String::from_utf8_lossy(&build.stderr).trim()
                ))
            }
        })
        .clone()
}

/// Outrigger exporting to the three backends at once.
async fn outrigger(loki: &Backend, es: &Backend, otlp: &Collector) -> Outrigger {
    Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ngrace_period_secs = 10\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.loki]\ntype = \"loki\"\nendpoint = \"{}\"\nflush_interval_ms = 50\n\
         structured_metadata = {{ trace_id = \"{{trace_id}}\", span_id = \"{{span_id}}\", \
         level = \"{{severity_text}}\" }}\n\
         [sinks.es]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\nflush_interval_ms = 50\n\
         [sinks.otlp]\ntype = \"otlp\"\nendpoint = \"{}\"\nflush_interval_ms = 50\n",
        loki.url(),
        es.url(),
        otlp.url()
    ))
    .await
}

/// Checks every backend against `wants`: each event once, with its trace, level, message
/// and typed fields.
async fn check(
    o: &mut Outrigger,
    loki: &Backend,
    es: &Backend,
    es_script: &[Fault],
    otlp: &Collector,
    wants: &[Want],
) {
    let n = wants.len();
    let by_message: BTreeMap<&str, &Want> = wants.iter().map(|w| (w.message.as_str(), w)).collect();
    for sink in ["loki", "es", "otlp"] {
        let series = format!("outrigger_sink_events_total{{component=\"{sink}\"}}");
        assert_eq!(
            o.wait_metric(&series, n as f64).await,
            n as f64,
            "{sink} delivered"
        );
    }
    o.stop().await.unwrap();

    // Loki: the record as JSON is the line; trace, span and level in structured metadata.
    let entries = loki::wait_entries(loki, n).await;
    assert_eq!(entries.len(), n, "Loki entries");
    for (_, e) in &entries {
        let line: Value = serde_json::from_str(&e.line).expect("the line is the record as JSON");
        let w = by_message[line[w_key(&line)].as_str().unwrap()];
        assert_eq!(line["i"], w.i, "the record's own fields stay in the line");
        let md = loki::metadata(e);
        assert_eq!(
            md.get("trace_id"),
            Some(&w.trace.as_str()),
            "trace_id of {}",
            w.message
        );
        assert_eq!(
            md.get("span_id"),
            Some(&w.span.as_str()),
            "span_id of {}",
            w.message
        );
        assert_eq!(md.get("level"), Some(&w.level), "level of {}", w.message);
    }

    // Elasticsearch: ECS fields lifted out, the record's fields typed as they were sent.
    let docs = elasticsearch::wait_stored(es, es_script, n).await;
    assert_eq!(docs.len(), n, "Elasticsearch documents");
    for d in &docs {
        let w = by_message[d["message"].as_str().expect("a message")];
        let what = &w.message;
        assert_eq!(d["trace.id"], w.trace.as_str(), "trace.id of {what}");
        assert_eq!(d["span.id"], w.span.as_str(), "span.id of {what}");
        assert_eq!(d["log.level"], w.level, "log.level of {what}");
        assert_eq!(d["fluent.tag"], w.tag.as_str(), "fluent.tag of {what}");
        assert_eq!(d["count"], w.i * 3, "count of {what}");
        assert_eq!(d["ratio"], w.i as f64 + 0.5, "ratio of {what}");
        assert_eq!(d["ok"], w.i % 2 == 0, "ok of {what}");
        if w.message_key != "message" {
            assert!(
                d.get(w.message_key).is_none(),
                "{} repeated in {what}",
                w.message_key
            );
        }
    }

    // OTLP: the message is the body, the rest typed attributes, IDs as bytes.
    let reqs = otlp.accepted();
    let recs = records(&reqs);
    assert_eq!(recs.len(), n, "OTLP records");
    for r in recs {
        let Some(Any::StringValue(body)) = r.body.as_ref().and_then(|b| b.value.as_ref()) else {
            panic!("a string body: {r:?}")
        };
        let w = by_message[body.as_str()];
        let what = &w.message;
        assert_eq!(hex::encode(&r.trace_id), w.trace, "trace_id of {what}");
        assert_eq!(hex::encode(&r.span_id), w.span, "span_id of {what}");
        assert_eq!(r.flags, w.flags, "flags of {what}");
        assert_eq!(r.severity_number, w.severity, "severity of {what}");
        assert_eq!(r.severity_text, w.level, "severity_text of {what}");
        if let Some(t) = w.time {
            assert_eq!(r.time_unix_nano, t, "time of {what}");
        }
        let a = &r.attributes;
        assert_eq!(
            attr(a, "count"),
            Some(&Any::IntValue(w.i * 3)),
            "count of {what}"
        );
        assert_eq!(
            attr(a, "ratio"),
            Some(&Any::DoubleValue(w.i as f64 + 0.5)),
            "ratio of {what}"
        );
        assert_eq!(
            attr(a, "ok"),
            Some(&Any::BoolValue(w.i % 2 == 0)),
            "ok of {what}"
        );
        assert_eq!(
            attr(a, "fluent.tag"),
            Some(&Any::StringValue(w.tag.clone()))
        );
        assert!(
            attr(a, w.message_key).is_none(),
            "the body is not repeated: {what}"
        );
    }
}

/// The key holding the message in a record as JSON.
fn w_key(line: &Value) -> &'static str {
    if line.get("msg").is_some() {
        "msg"
    } else {
        "message"
    }
}

async fn backends() -> (Backend, Backend, Vec<Fault>, Collector) {
    let es_script = elasticsearch::script(&[], Fault::Custom(elasticsearch::ok));
    (
        Backend::start(vec![]).await,
        Backend::start(es_script.clone()).await,
        es_script,
        Collector::start(vec![]).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_fluent_logger_records_are_enriched_for_every_exporter() {
    let test = "structured::python_fluent_logger_records_are_enriched_for_every_exporter";
    if !python_has(test, "fluent").await {
        return;
    }
    let (l, e, es_script, c) = backends().await;
    let mut o = outrigger(&l, &e, &c).await;
    run_script(&o, "fluent_logger_structured.py", N).await;
    let wants = wants();
    check(&mut o, &l, &e, &es_script, &c, &wants).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_fluent_logger_maps_are_enriched_for_every_exporter() {
    let test = "structured::go_fluent_logger_maps_are_enriched_for_every_exporter";
    let client = tokio::task::spawn_blocking(go_client).await.unwrap();
    if !require(
        test,
        "OUTRIGGER_REQUIRE_CLIENTS",
        &client.clone().map(|_| ()),
    ) {
        return;
    }
    let (l, e, es_script, c) = backends().await;
    let mut o = outrigger(&l, &e, &c).await;
    let mut cmd = Command::new(client.unwrap());
    cmd.arg("127.0.0.1")
        .arg(o.addr().port().to_string())
        .arg(GO_N.to_string());
    let out = run_blocking(cmd, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "the Go client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&mut o, &l, &e, &es_script, &c, &go_wants()).await;
}
