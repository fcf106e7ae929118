//! The Docker engine's `fluentd` log driver as a real client: containers run with
//! `docker run --log-driver fluentd` against an Outrigger running in this process.
//!
//! Needs a Docker engine that shares this host's network namespace (the driver dials
//! 127.0.0.1) and file system (the Unix socket case), and builds the image
//! `outrigger-test-busybox:latest` with `tests/docker/build-image.sh` (no registry needed).
//! Each test is skipped, with a `SKIPPED` message on stderr, when `docker info` fails;
//! `OUTRIGGER_REQUIRE_DOCKER=1` makes that a failure instead (CI sets it).
//!
//! Every container prints the same [`LINES`] lines (stdout and stderr, JSON-looking text,
//! tabs, UTF-8 and one invalid byte); each test asserts that every line arrived exactly once,
//! in order per stream, with the record the driver builds.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::clients::{now_secs, require, run_blocking, script, time_of};
use crate::harness::{Outrigger, metric_value};

/// Enrichment is on (the default); keeping the line lets every case compare it.
const KEEP_LINE: &str = "[enrich]\nkeep_line = true";
pub(crate) const IMAGE: &str = "outrigger-test-busybox:latest";
/// Lines each container prints.
const LINES: usize = 200;
/// The longest a `docker run` may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// What line `i` (1-based) is: its stream and its `log` as Outrigger writes it (the invalid
/// byte replaced by U+FFFD). Must agree with [`container_script`]. `stdout_only` when the
/// script's stderr goes to stdout.
fn expected(i: usize, stdout_only: bool) -> (&'static str, String) {
    if i == 7 {
        ("stdout", format!("bad utf8 {i} \u{fffd} end"))
    } else if i.is_multiple_of(5) {
        let stream = if stdout_only { "stdout" } else { "stderr" };
        (stream, format!("stderr line {i}"))
    } else if i % 5 == 1 {
        (
            "stdout",
            format!(r#"{{"i":{i},"level":"info","msg":"say \"hi\""}}"#),
        )
    } else {
        ("stdout", format!("stdout line {i} \u{fc}\ttab"))
    }
}

/// The busybox `sh` script printing [`expected`]'s lines, then `tail`.
fn container_script(stdout_only: bool, tail: &str) -> String {
    let head = if stdout_only { "exec 2>&1\n" } else { "" };
    format!(
        r#"{head}i=1
while [ "$i" -le {LINES} ]; do
  if [ "$i" -eq 7 ]; then printf 'bad utf8 %d \377 end\n' "$i"
  elif [ $((i % 5)) -eq 0 ]; then printf 'stderr line %d\n' "$i" >&2
  elif [ $((i % 5)) -eq 1 ]; then printf '{{"i":%d,"level":"info","msg":"say \\"hi\\""}}\n' "$i"
  else printf 'stdout line %d \303\274\ttab\n' "$i"
  fi
  i=$((i + 1))
done
{tail}"#
    )
}

/// Whether Docker tests can run here: the engine answers and the image exists (built once per
/// process). Prints the skip message or panics, see [`require`].
pub(crate) async fn docker_ready(test: &str) -> bool {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    let state = tokio::task::spawn_blocking(|| STATE.get_or_init(prepare).clone())
        .await
        .unwrap();
    require(test, "OUTRIGGER_REQUIRE_DOCKER", &state)
}

fn prepare() -> Result<(), String> {
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).trim().to_string();
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "no Docker engine (docker info failed: {})",
                stderr(&o)
            ));
        }
        Err(e) => return Err(format!("no Docker engine (docker info failed: {e})")),
    }
    let build = script("build-image.sh");
    match Command::new("bash").arg(&build).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "cannot build {IMAGE} ({} failed: {})",
            build.display(),
            stderr(&o)
        )),
        Err(e) => Err(format!("cannot run {}: {e}", build.display())),
    }
}

/// A container name unique to this process and call.
pub(crate) fn unique_name(case: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("outrigger-it-{}-{n}-{case}", std::process::id())
}

/// How a case runs its container.
struct Case {
    test: &'static str,
    /// Extra `--log-opt` values.
    log_opts: &'static [&'static str],
    /// Listen on `{dir}/f.sock` and point the driver there instead of at TCP.
    unix: bool,
    /// Wait for one ack per line before stopping Outrigger.
    acks: bool,
    /// Send the script's stderr to its stdout, so the container writes one stream.
    stdout_only: bool,
    /// Shell run after the lines are printed.
    tail: &'static str,
}

/// What a case saw: every output line after a drain, and the metrics just before it.
struct Seen {
    lines: Vec<Value>,
    metrics: String,
}

/// Runs the case's container against a fresh Outrigger and checks what every case must hold;
/// `None` when the test is skipped.
async fn run(case: Case) -> Option<Seen> {
    if !docker_ready(case.test).await {
        return None;
    }
    let mut o = if case.unix {
        Outrigger::start_with(
            "unix_path = \"{dir}/f.sock\"\nunix_mode = \"0666\"",
            KEEP_LINE,
        )
        .await
    } else {
        Outrigger::start_with("", KEEP_LINE).await
    };
    let address = if case.unix {
        format!("unix://{}", o.dir.path().join("f.sock").display())
    } else {
        format!("tcp://{}", o.addr())
    };
    let name = unique_name(case.test.rsplit("::").next().unwrap());
    let cidfile = o.dir.path().join("cid");
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm", "--name", &name, "--cidfile"])
        .arg(&cidfile)
        .args(["--log-driver", "fluentd", "--log-opt"])
        .arg(format!("fluentd-address={address}"))
        .args(["--log-opt", "tag=docker.{{.Name}}"]);
    for opt in case.log_opts {
        cmd.args(["--log-opt", opt]);
    }
    cmd.args([
        IMAGE,
        "sh",
        "-c",
        &container_script(case.stdout_only, case.tail),
    ]);

    let start = now_secs();
    let out = run_container(cmd, &name).await;
    let end = now_secs();
    assert!(
        out.status.success(),
        "docker run {name} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let container_id = std::fs::read_to_string(&cidfile).unwrap();
    assert!(
        container_id.len() == 64 && container_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "container id {container_id:?}"
    );

    // Fewer lines than expected after 10 s: `check` below says which are missing.
    o.wait_lines(LINES).await;
    if case.acks {
        o.wait_metric(
            r#"outrigger_source_acks_total{component="in"}"#,
            LINES as f64,
        )
        .await;
    }
    let metrics = o.running.as_ref().unwrap().metrics.render();
    o.stop().await.unwrap();
    let lines = o.lines();

    check(&lines, &name, &container_id, case.stdout_only, start, end);
    let events = metric_value(&metrics, r#"outrigger_source_events_total{component="in"}"#);
    assert_eq!(events, LINES as f64, "events counted");
    for l in metrics.lines() {
        if l.starts_with("outrigger_source_rejected_total{") {
            assert!(l.ends_with(" 0"), "nothing rejected: {l}");
        }
    }
    Some(Seen { lines, metrics })
}

/// Runs `docker run ...`; on timeout removes the container and fails.
pub(crate) async fn run_container(cmd: Command, name: &str) -> Output {
    let task = tokio::spawn(run_blocking(cmd, RUN_LIMIT));
    match task.await {
        Ok(out) => out,
        Err(e) => {
            let mut rm = Command::new("docker");
            rm.args(["rm", "-f", name]);
            run_blocking(rm, Duration::from_secs(30)).await;
            std::panic::resume_unwind(e.into_panic())
        }
    }
}

/// Every line exactly once, in order per stream, with the driver's record.
fn check(lines: &[Value], name: &str, container_id: &str, stdout_only: bool, start: i64, end: i64) {
    let tag = format!("docker.{name}");
    let driver_keys: BTreeSet<&str> = ["container_id", "container_name", "source"].into();
    let mut got: [Vec<String>; 2] = Default::default();
    let mut times: [Vec<(i64, u32)>; 2] = Default::default();
    for l in lines {
        assert_eq!(l["tag"], tag.as_str(), "tag of {l}");
        let r = l["record"].as_object().expect("record is an object");
        // The driver's fields became resource attributes under OpenTelemetry names; the
        // record keeps the line (and a JSON line's parsed fields).
        assert!(
            r.keys().all(|k| !driver_keys.contains(k.as_str())),
            "record keys of {l}"
        );
        let res = &l["resource"];
        assert_eq!(res["container.id"], container_id, "container.id of {l}");
        assert_eq!(
            res["container.name"], name,
            "Docker's leading slash is removed: {l}"
        );
        let stream = match res["log.iostream"].as_str() {
            Some("stdout") => 0,
            Some("stderr") => 1,
            _ => panic!("source of {l}"),
        };
        got[stream].push(r["log"].as_str().expect("log is a string").to_string());
        let t = time_of(l);
        // Both clocks are this host's; allow for the second boundaries.
        assert!(
            (start - 1..=end + 1).contains(&t.0),
            "time of {l} outside the run [{start}, {end}]"
        );
        times[stream].push(t);
    }
    for (stream, s) in ["stdout", "stderr"].into_iter().enumerate() {
        let want: Vec<String> = (1..=LINES)
            .map(|i| expected(i, stdout_only))
            .filter(|(x, _)| *x == s)
            .map(|(_, log)| log)
            .collect();
        if got[stream] != want {
            let missing: Vec<_> = want.iter().filter(|w| !got[stream].contains(w)).collect();
            let strangers: Vec<_> = got[stream].iter().filter(|g| !want.contains(g)).collect();
            let at = got[stream]
                .iter()
                .zip(&want)
                .position(|(g, w)| g != w)
                .unwrap_or(want.len().min(got[stream].len()));
            panic!(
                "{s} of {name}: {} lines, expected {}; {} missing {:?}; {} unexpected {:?}; \
                 first difference at index {at}: got {:?}, expected {:?}",
                got[stream].len(),
                want.len(),
                missing.len(),
                &missing[..missing.len().min(5)],
                strangers.len(),
                &strangers[..strangers.len().min(5)],
                &got[stream][at..got[stream].len().min(at + 5)],
                &want[at..want.len().min(at + 5)],
            );
        }
        assert!(
            times[stream].is_sorted(),
            "{s} times go backwards: {:?}",
            times[stream]
        );
    }
    assert_eq!(lines.len(), LINES);
}

fn nanos(seen: &Seen) -> Vec<u32> {
    seen.lines.iter().map(|l| time_of(l).1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_by_default() {
    let Some(seen) = run(Case {
        test: "docker::sync_by_default",
        log_opts: &[],
        unix: false,
        acks: false,
        stdout_only: false,
        tail: "",
    })
    .await
    else {
        return;
    };
    // Without sub-second precision the driver sends integer seconds; nothing is invented.
    assert!(nanos(&seen).iter().all(|&n| n == 0), "{:?}", nanos(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mode() {
    // The driver discards what it has not sent yet when the container stops
    // (`ForceStopAsyncSend`), so the container lingers for a moment: a loss there would be
    // Docker's, not ours.
    let Some(seen) = run(Case {
        test: "docker::async_mode",
        log_opts: &["fluentd-async=true"],
        unix: false,
        acks: false,
        stdout_only: false,
        tail: "sleep 1",
    })
    .await
    else {
        return;
    };
    assert!(nanos(&seen).iter().all(|&n| n == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_second_precision() {
    let Some(seen) = run(Case {
        test: "docker::sub_second_precision",
        log_opts: &["fluentd-sub-second-precision=true"],
        unix: false,
        acks: false,
        stdout_only: false,
        tail: "",
    })
    .await
    else {
        return;
    };
    // EventTime: the daemon's read time with nanoseconds, kept to the output.
    let nanos = nanos(&seen);
    let with_fraction = nanos.iter().filter(|&&n| n != 0).count();
    assert!(
        with_fraction * 2 > nanos.len(),
        "most times have sub-second parts: {nanos:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ack() {
    let Some(seen) = run(Case {
        test: "docker::request_ack",
        log_opts: &["fluentd-request-ack=true"],
        unix: false,
        acks: true,
        // Docker's driver (fluent-logger-golang `write`) reads each ack without holding its
        // connection lock, and stdout and stderr are logged by two goroutines sharing one
        // connection: with both streams busy they read each other's acks, reconnect and
        // resend in a loop, and can crash dockerd (nil connection, SIGSEGV; seen with Docker
        // 20.10.24). So this container writes one stream.
        stdout_only: true,
        tail: "",
    })
    .await
    else {
        return;
    };
    // The driver sends one message per line, each with a chunk, and waits for its ack.
    let acks = metric_value(
        &seen.metrics,
        r#"outrigger_source_acks_total{component="in"}"#,
    );
    assert_eq!(acks, LINES as f64, "one ack per line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket() {
    let Some(seen) = run(Case {
        test: "docker::unix_socket",
        log_opts: &[],
        unix: true,
        acks: false,
        stdout_only: false,
        tail: "",
    })
    .await
    else {
        return;
    };
    // The driver's one connection, made to the socket (it was given no TCP address).
    let conns = metric_value(
        &seen.metrics,
        r#"outrigger_source_connections_total{component="in"}"#,
    );
    assert_eq!(conns, 1.0, "the driver's single connection");
}

/// Docker cuts lines longer than 16 KiB into fragments; Outrigger joins them again. A
/// 100 KiB JSON line carries its trace ID in its last fragment, and a 1 MiB text line spans
/// 64 fragments; interleaved stderr lines must not disturb either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_reassembled() {
    if !docker_ready("long_lines_are_reassembled").await {
        return;
    }
    let mut o = Outrigger::start("").await;
    let name = unique_name("long_lines");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    // busybox sh: a JSON line padded to ~100 KiB with the trace ID at its end, a 1 MiB line
    // of 'a', and short stderr lines around them.
    let script = format!(
        r#"echo before >&2
printf '{{"level":"error","pad":"'; head -c 102400 /dev/zero | tr '\0' 'p'; printf '","trace_id":"{trace}"}}\n'
echo middle >&2
head -c 1048576 /dev/zero | tr '\0' 'a'; echo
echo after >&2
"#
    );
    let mut cmd = Command::new("docker");
    cmd.args([
        "run",
        "--rm",
        "--name",
        &name,
        "--log-driver",
        "fluentd",
        "--log-opt",
    ])
    .arg(format!("fluentd-address=tcp://{}", o.addr()))
    .args([
        "--log-opt",
        "tag=docker.{{.Name}}",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    let out = run_container(cmd, &name).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    o.wait_lines(5).await;
    let metrics = o.running.as_ref().unwrap().metrics.render();
    o.stop().await.unwrap();
    let lines = o.lines();
    assert_eq!(lines.len(), 5, "two long lines and three short ones");
    let json = lines
        .iter()
        .find(|l| l["severity_number"] == 17)
        .expect("the JSON line");
    assert_eq!(json["record"]["pad"].as_str().unwrap().len(), 102400);
    assert_eq!(json["trace_id"], trace, "found in the last fragment");
    assert!(json.get("incomplete").is_none());
    let long = lines
        .iter()
        .find(|l| l["record"]["log"].as_str().is_some_and(|s| s.len() > 1000))
        .expect("the 1 MiB line");
    let text = long["record"]["log"].as_str().unwrap();
    assert_eq!(text.len(), 1 << 20);
    assert!(text.bytes().all(|b| b == b'a'));
    let short: Vec<_> = lines
        .iter()
        .filter_map(|l| l["record"]["log"].as_str().filter(|s| s.len() < 10))
        .collect();
    assert_eq!(short, ["before", "middle", "after"]);
    assert_eq!(
        metric_value(
            &metrics,
            r#"outrigger_enrich_partial_lines_total{component="in",outcome="complete"}"#
        ),
        2.0
    );
    // 7 fragments of the JSON line, 65 of the long one, 3 short lines.
    assert!(metric_value(&metrics, r#"outrigger_source_events_total{component="in"}"#) >= 5.0);
}
