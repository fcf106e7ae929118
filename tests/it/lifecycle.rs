//! Backpressure, memory bounds and the SIGTERM drain, in-process and with the real binary.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::binary::{bin, http_get, sigterm, spawn, status, wait_exit};
use crate::harness::{Outrigger, metric_value, wire};

/// Sends `{"id": "<client>-<i>"}` messages with chunk ids as fast as acks come back, over one
/// connection, pipelining up to 64 unacked requests. Returns the ids that were acked.
async fn acked_sender(
    addr: std::net::SocketAddr,
    client: usize,
    stop: Arc<AtomicU64>,
) -> Vec<String> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        for i in 0.. {
            if stop.load(Ordering::Relaxed) > 0 {
                break;
            }
            let id = format!("{client}-{i}");
            let frame = wire::message("drain", 1_700_000_000, &[("id", &id)], Some(&id));
            if tx.send(id).await.is_err() || wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut acked = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Some(id) = rx.recv().await {
        let expected = crate::harness::ack_bytes(&id);
        while buf.len() < expected.len() {
            match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => {
                    writer.abort();
                    return acked;
                }
            }
        }
        assert_eq!(buf[..expected.len()], expected[..], "acks arrive in order");
        buf.drain(..expected.len());
        acked.push(id);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_while_data_flows_delivers_every_acked_event() {
    let mut o = Outrigger::start("").await;
    let stop = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..4)
        .map(|c| tokio::spawn(acked_sender(o.addr(), c, stop.clone())))
        .collect();
    // Let data flow, then drain in the middle of it.
    o.wait_lines(200).await;
    o.stop()
        .await
        .expect("drain finishes within the grace period");
    stop.store(1, Ordering::Relaxed);
    let mut acked = Vec::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    let delivered: HashSet<String> = o
        .lines()
        .iter()
        .map(|l| l["record"]["id"].as_str().unwrap().to_string())
        .collect();
    assert!(acked.len() >= 200, "only {} acked", acked.len());
    let lost: Vec<_> = acked.iter().filter(|id| !delivered.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acked events were not delivered, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sink_stops_reading_instead_of_buffering() {
    let config = "[global]\nadmin_enabled = false\n\
        [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
        [sinks.slow]\ntype = \"blackhole\"\nrate_events_per_sec = 50\nmax_queue_bytes = 262144\nmax_queue_events = 100000\n";
    let o = Outrigger::with_config(config).await;
    let s = tokio::net::TcpStream::connect(o.addr()).await.unwrap();
    let (_rd, mut wr) = s.into_split();
    let log = "z".repeat(1000);
    let frame = wire::message("t", 1, &[("log", &log)], None);
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    // Try to push 256 MiB; the client must be blocked long before that.
    let writer = tokio::spawn(async move {
        let mut burst = Vec::new();
        for _ in 0..64 {
            burst.extend_from_slice(&frame);
        }
        for _ in 0..(256 << 20) / burst.len() {
            if wr.write_all(&burst).await.is_err() {
                break;
            }
            w.fetch_add(burst.len() as u64, Ordering::Relaxed);
        }
    });
    // Wait until the client makes no progress for a second.
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = written.load(Ordering::Relaxed);
        if now == last && now > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client was never slowed down"
        );
        last = now;
    }
    assert!(
        !writer.is_finished(),
        "the connection is held open, not closed"
    );
    let queued = o.metric("outrigger_queue_bytes{component=\"slow\"}");
    // The queue holds at most its bound plus one read's batch (a batch larger than the room
    // left waits; one larger than the whole queue goes alone).
    assert!(
        queued <= (262144 + (256 << 10)) as f64,
        "queue grew to {queued} bytes"
    );
    // What the client managed to write is the queue, one read buffer and the kernel's socket
    // buffers: far below what it tried.
    assert!(
        last < 32 << 20,
        "client wrote {last} bytes into a stalled pipeline"
    );
    writer.abort();
}

#[test]
fn memory_stays_bounded_under_sustained_overload() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[global]\nadmin_address = \"127.0.0.1:0\"\ngrace_period_secs = 1\n\
        [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
        [sinks.stuck]\ntype = \"blackhole\"\nrate_events_per_sec = 10\nmax_queue_bytes = 8388608\n";
    let (mut child, forward, admin, logs) = spawn(config, dir.path());
    let baseline = status(child.id(), "VmRSS:");
    // Four clients push as hard as they can for three seconds.
    let log = "q".repeat(300);
    let frame = wire::message("t", 1_700_000_000, &[("log", &log)], None);
    let burst: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 200)
        .collect();
    let sent = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (forward, burst, sent) = (forward.clone(), burst.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(forward).unwrap();
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let end = Instant::now() + Duration::from_secs(3);
                while Instant::now() < end {
                    match s.write(&burst) {
                        Ok(n) => {
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
                s
            })
        })
        .collect();
    let conns: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let peak_kib = status(child.id(), "VmHWM:");
    let metrics = http_get(&admin, "/metrics");
    let queued = metric_value(&metrics, "outrigger_queue_bytes{component=\"stuck\"}");
    eprintln!(
        "overload: clients wrote {} MiB, queue {queued} bytes, RSS baseline {} KiB, peak {peak_kib} KiB",
        sent.load(Ordering::Relaxed) >> 20,
        baseline
    );
    assert!(
        queued <= (8 << 20) as f64 + (256 << 10) as f64,
        "queue {queued}"
    );
    assert!(
        peak_kib < 64 << 10,
        "peak RSS {peak_kib} KiB under overload"
    );
    assert!(
        sent.load(Ordering::Relaxed) < 256 << 20,
        "clients were not slowed down"
    );
    // A drain that cannot finish is cut off at the grace period and says so.
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(1));
    let tail: Vec<String> = logs.try_iter().collect();
    assert!(
        tail.iter().any(|l| l.contains("drain incomplete")),
        "{tail:?}"
    );
    drop(conns);
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let config = format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        out.display()
    );
    let (mut child, forward, admin, _logs) = spawn(&config, dir.path());
    assert!(
        http_get(&admin, "/ready").starts_with("HTTP/1.0 200")
            || http_get(&admin, "/ready").contains(" 200 ")
    );
    let mut s = std::net::TcpStream::connect(&forward).unwrap();
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(wire::message(
            "t",
            1_700_000_000,
            &[("i", &i.to_string())],
            None,
        ));
    }
    let last = wire::message("t", 1_700_000_000, &[("i", "last")], Some("last"));
    batch.extend(&last);
    s.write_all(&batch).unwrap();
    let mut ack = vec![0u8; crate::harness::ack_bytes("last").len()];
    s.read_exact(&mut ack).unwrap();
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), Some(0));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text.lines().count(),
        1001,
        "every acked event was written before exit"
    );
}

#[test]
fn validate_reports_errors_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:1\"\nmax_conections = 5\n[sinks.o]\ntype = \"stdout\"\n").unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4: `sources.in.max_conections`: unknown field `max_conections`"),
        "{err}"
    );

    let out = Command::new(bin()).args(["validate"]).output().unwrap();
    assert!(out.status.success(), "the built-in default is valid");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/config/secure.toml");
    let out = Command::new(bin())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["validate", "--config", examples])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = dir.path().join("tls.toml");
    std::fs::write(&missing, "[sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:1\"\n[sources.in.tls]\ncert_file = \"/nonexistent.crt\"\nkey_file = \"/nonexistent.key\"\n[sinks.o]\ntype = \"stdout\"\n").unwrap();
    let out = Command::new(bin())
        .args(["validate", "--config", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.crt"));
}

#[test]
fn help_and_version() {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "validate", "--config"] {
        assert!(help.contains(word), "{help}");
    }
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("outrigger "));
}

#[test]
fn second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[global]\nadmin_address = \"127.0.0.1:0\"\ngrace_period_secs = 60\n\
        [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
        [sinks.stuck]\ntype = \"blackhole\"\nrate_events_per_sec = 1\n";
    let (mut child, forward, admin, _logs) = spawn(config, dir.path());
    assert!(http_get(&admin, "/ready").contains(" 200 "));
    let mut s = std::net::TcpStream::connect(&forward).unwrap();
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend(wire::message("t", 1, &[("a", "b")], None));
    }
    s.write_all(&batch).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    // The drain cannot finish (the sink takes 100 s); a second signal must not wait for it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), Some(130));
}
