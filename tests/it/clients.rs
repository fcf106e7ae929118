//! Real clients written by others, run as separate processes against an Outrigger running in
//! this process: PyPI's `fluent-logger` (`from fluent import sender`) and, through PyPI's
//! `msgpack`, every forward-protocol request mode with acks. The scripts are in
//! `tests/docker/`.
//!
//! When python3 cannot import them, the tests install both packages with pip into
//! `target/tmp/pydeps` first. A test is skipped, with a `SKIPPED` message on stderr, when that
//! fails too (no python3, no PyPI); `OUTRIGGER_REQUIRE_CLIENTS=1` makes that a failure instead
//! (CI sets it).
//!
//! Also home of the helpers the Docker tests share: [`require`] and [`rfc3339`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::Outrigger;

/// Whether a prerequisite is met: `Ok`, or why not. Returns `true` when the test may run;
/// otherwise prints `SKIPPED <test>: <why>` and returns `false`, or panics when the
/// environment variable `require_var` is `1`.
pub fn require(test: &str, require_var: &str, state: &Result<(), String>) -> bool {
    match state {
        Ok(()) => true,
        Err(why) if std::env::var(require_var).is_ok_and(|v| v == "1") => {
            panic!("{test}: {why}; {require_var}=1 forbids skipping")
        }
        Err(why) => {
            // Not `eprintln!`: the test harness captures that for passing tests, and a skip
            // must be seen. Writing to the stream itself bypasses the capture.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            false
        }
    }
}

/// Seconds and nanoseconds of an output `time` (`2023-11-14T22:13:20.123456789Z`).
pub fn rfc3339(s: &str) -> (i64, u32) {
    let bad = || format!("not an RFC 3339 UTC time with 9 fractional digits: {s:?}");
    let b = s.as_bytes();
    assert!(
        b.len() == 30 && b[10] == b'T' && b[19] == b'.' && b[29] == b'Z',
        "{}",
        bad()
    );
    let num = |from: usize, to: usize| -> i64 {
        s.get(from..to)
            .filter(|d| d.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("{}", bad()))
    };
    let (y, m, d) = (num(0, 4), num(5, 7), num(8, 10));
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(11, 13) * 3600 + num(14, 16) * 60 + num(17, 19);
    (secs, num(20, 29) as u32)
}

/// The time of an output line.
pub fn time_of(line: &Value) -> (i64, u32) {
    rfc3339(line["time"].as_str().expect("line has a string `time`"))
}

/// Seconds since the epoch now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Runs a blocking command off the runtime's workers (Outrigger shares them), failing the
/// test when it takes longer than `limit`.
pub async fn run_blocking(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let task = tokio::task::spawn_blocking(move || cmd.output());
    match tokio::time::timeout(limit, task).await {
        Ok(r) => r
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}")),
        Err(_) => panic!("{what} took longer than {limit:?}"),
    }
}

/// `tests/docker/<name>`.
pub fn script(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests", "docker", name]
        .iter()
        .collect()
}

/// Where the tests install the Python client packages when the system lacks them, so that
/// `cargo test` alone sets everything up (needs PyPI; offline it skips with the reason).
fn pydeps() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pydeps")
}

pub(crate) fn python() -> Command {
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", pydeps());
    cmd
}

/// Whether `python3` can import `module`, installing `fluent-logger` and `msgpack` into
/// [`pydeps`] once if it cannot. Checked once per process.
pub(crate) async fn python_has(test: &str, module: &'static str) -> bool {
    static FLUENT: OnceLock<Result<(), String>> = OnceLock::new();
    static MSGPACK: OnceLock<Result<(), String>> = OnceLock::new();
    static INSTALL: OnceLock<()> = OnceLock::new();
    let cell = match module {
        "fluent" => &FLUENT,
        "msgpack" => &MSGPACK,
        _ => unreachable!("unknown module {module}"),
    };
    let state = tokio::task::spawn_blocking(move || {
        cell.get_or_init(|| {
            let import = format!("import {module}");
            let importable = || python().args(["-c", &import]).output();
            if !importable().is_ok_and(|o| o.status.success()) {
                INSTALL.get_or_init(|| {
                    let _ = python()
                        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                        .arg("--target")
                        .arg(pydeps())
                        .args(["fluent-logger", "msgpack"])
                        .status();
                });
            }
            match importable() {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(format!(
                    "python3 cannot import {module}, even after pip install --target {} (python3 -c \"{import}\" failed: {})",
                    pydeps().display(),
                    String::from_utf8_lossy(&o.stderr)
                        .trim()
                        .lines()
                        .last()
                        .unwrap_or("")
                )),
                Err(e) => Err(format!("no python3 ({e})")),
            }
        })
        .clone()
    })
    .await
    .unwrap();
    require(test, "OUTRIGGER_REQUIRE_CLIENTS", &state)
}

/// Runs `tests/docker/<name> 127.0.0.1 PORT n`, asserting it succeeds.
pub(crate) async fn run_script(o: &Outrigger, name: &str, n: usize) {
    let mut cmd = python();
    cmd.arg(script(name))
        .arg("127.0.0.1")
        .arg(o.addr().port().to_string())
        .arg(n.to_string());
    let out = run_blocking(cmd, Duration::from_secs(60)).await;
    assert!(
        out.status.success(),
        "{name} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The lines grouped by tag, each group in arrival order.
fn by_tag(lines: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut tags: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for l in lines {
        let tag = l["tag"].as_str().expect("line has a string `tag`");
        tags.entry(tag.to_string()).or_default().push(l.clone());
    }
    tags
}

/// Asserts `tags[tag]` holds exactly the records `expected(i)` for i in 0..n, in order, and
/// returns their times.
fn check_records(
    tags: &BTreeMap<String, Vec<Value>>,
    tag: &str,
    n: usize,
    expected: impl Fn(usize) -> Value,
) -> Vec<(i64, u32)> {
    let got = tags
        .get(tag)
        .unwrap_or_else(|| panic!("no events with tag {tag}"));
    let records: Vec<&Value> = got.iter().map(|l| &l["record"]).collect();
    let want: Vec<Value> = (0..n).map(expected).collect();
    let want: Vec<&Value> = want.iter().collect();
    assert_eq!(records, want, "records of tag {tag}");
    got.iter().map(time_of).collect()
}

/// Asserts every time lies within [from, to] (whole seconds) and returns how many have
/// non-zero nanoseconds.
fn within(tag: &str, times: &[(i64, u32)], from: i64, to: i64) -> usize {
    for &(s, _) in times {
        assert!(
            (from..=to).contains(&s),
            "{tag}: time {s} outside the test's run [{from}, {to}]"
        );
    }
    times.iter().filter(|(_, ns)| *ns != 0).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluent_logger_python_sender_and_logging_handler() {
    let test = "clients::fluent_logger_python_sender_and_logging_handler";
    if !python_has(test, "fluent").await {
        return;
    }
    const N: usize = 25;
    let mut o = Outrigger::start("").await;
    let start = now_secs();
    run_script(&o, "fluent_logger_client.py", N).await;
    let end = now_secs();
    let total = N * 9; // seven tags of N, and py.logging with 2 N
    let lines = o.wait_lines(total).await;
    assert_eq!(lines.len(), total, "events that arrived");
    let events = o.metric(r#"outrigger_source_events_total{component="in"}"#);
    assert_eq!(events, total as f64);
    o.stop().await.unwrap();
    let lines = o.lines();
    assert_eq!(lines.len(), total, "events after the drain");
    let tags = by_tag(&lines);
    let names: Vec<&str> = tags.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "py.emit",
            "py.eventtime",
            "py.float",
            "py.int",
            "py.logging",
            "py.nano",
            "py.nanofloat",
            "py.now"
        ]
    );

    // emit(): integer seconds of now, and msgpack's value types as JSON (bin as base64).
    let t = check_records(&tags, "py.emit", N, |i| {
        json!({
            "i": i, "msg": "héllo \"world\" ✓", "ok": true, "none": null, "f": 1.5,
            "neg": -7, "big": 1u64 << 40, "list": [1, "two", {"three": 3}], "bin": "AAH/",
        })
    });
    assert_eq!(within("py.emit", &t, start, end), 0, "integer times");

    // emit_with_time() with an int, and with a float: exactly the seconds (and fraction) given.
    let t = check_records(&tags, "py.int", N, |i| json!({ "i": i }));
    let want: Vec<_> = (0..N).map(|i| (1_700_000_000 + i as i64, 0)).collect();
    assert_eq!(t, want, "py.int times");
    let t = check_records(&tags, "py.float", N, |i| json!({ "i": i }));
    let want: Vec<_> = (0..N)
        .map(|i| (1_700_000_000 + i as i64, 250_000_000))
        .collect();
    assert_eq!(t, want, "py.float times");
    assert_eq!(
        lines
            .iter()
            .find(|l| l["tag"] == "py.float")
            .map(|l| &l["time"]),
        Some(&json!("2023-11-14T22:13:20.250000000Z"))
    );

    // time.time() as a float: now, with a fraction.
    let t = check_records(&tags, "py.now", N, |i| json!({ "i": i }));
    assert!(
        within("py.now", &t, start, end) > 0,
        "float times of now have sub-second parts: {t:?}"
    );
    assert!(t.is_sorted(), "py.now times do not go backwards: {t:?}");

    // nanosecond_precision=True: EventTime.
    let t = check_records(&tags, "py.nano", N, |i| json!({ "i": i }));
    assert!(
        within("py.nano", &t, start, end) > 0,
        "EventTimes of now have nanoseconds: {t:?}"
    );
    assert!(t.is_sorted(), "py.nano times do not go backwards: {t:?}");
    let t = check_records(&tags, "py.eventtime", N, |i| json!({ "i": i }));
    let want: Vec<_> = (0..N)
        .map(|i| (1_700_000_000, 123_456_789 + i as u32))
        .collect();
    assert_eq!(t, want, "py.eventtime times");
    let t = check_records(&tags, "py.nanofloat", N, |i| json!({ "i": i }));
    let want: Vec<_> = (0..N)
        .map(|i| (1_700_000_000 + i as i64, 500_000_000))
        .collect();
    assert_eq!(t, want, "py.nanofloat times");

    // The logging handler: a dict message merges into the record, a text one is `message`.
    let t = check_records(&tags, "py.logging", 2 * N, |j| {
        let i = j / 2;
        if j % 2 == 0 {
            json!({"level": "INFO", "logger": "outrigger-test", "i": i, "msg": "a dict message"})
        } else {
            json!({"level": "WARNING", "logger": "outrigger-test", "message": format!("text {i}")})
        }
    });
    assert_eq!(within("py.logging", &t, start, end), 0, "integer times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_msgpack_every_request_mode_with_acks() {
    let test = "clients::python_msgpack_every_request_mode_with_acks";
    if !python_has(test, "msgpack").await {
        return;
    }
    const N: usize = 30;
    const T: i64 = 1_700_000_000;
    let mut o = Outrigger::start("").await;
    // The script fails unless every request is acknowledged with its own chunk.
    run_script(&o, "msgpack_client.py", N).await;
    let total = N * 5;
    let lines = o.wait_lines(total).await;
    assert_eq!(lines.len(), total, "events that arrived");
    let acks = o.metric(r#"outrigger_source_acks_total{component="in"}"#);
    assert_eq!(acks, (N + 4) as f64, "one ack per request");
    o.stop().await.unwrap();
    let lines = o.lines();
    assert_eq!(lines.len(), total, "events after the drain");
    let tags = by_tag(&lines);
    assert_eq!(
        tags.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "raw.compressed",
            "raw.forward",
            "raw.message",
            "raw.packed",
            "raw.packedstr"
        ]
    );
    let t = check_records(&tags, "raw.message", N, |i| json!({ "i": i }));
    assert_eq!(t, (0..N).map(|i| (T + i as i64, 0)).collect::<Vec<_>>());
    let t = check_records(&tags, "raw.forward", N, |i| json!({ "i": i }));
    let want: Vec<_> = (0..N)
        .map(|i| {
            let nanos = [0, 750_000_000, i as u32][i % 3];
            (T + i as i64, nanos)
        })
        .collect();
    assert_eq!(t, want, "raw.forward: int, float and EventTime times");
    for tag in ["raw.packed", "raw.packedstr", "raw.compressed"] {
        let t = check_records(&tags, tag, N, |i| json!({ "i": i }));
        let want: Vec<_> = (0..N).map(|i| (T, i as u32)).collect();
        assert_eq!(t, want, "{tag} times");
    }
}

#[test]
fn rfc3339_parses_output_times() {
    assert_eq!(rfc3339("1970-01-01T00:00:00.000000000Z"), (0, 0));
    assert_eq!(
        rfc3339("2023-11-14T22:13:20.250000000Z"),
        (1_700_000_000, 250_000_000)
    );
    assert_eq!(
        rfc3339("2000-02-29T23:59:59.999999999Z"),
        (951_868_799, 999_999_999)
    );
}
