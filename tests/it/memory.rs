//! Memory bounds of the real binary under a stalled sink, with traffic shaped like a node's:
//! many connections sending one small request at a time with acks, a few sending large
//! Forward-mode requests as fast as they can, and many large requests arriving at once.
//!
//! The bound is on the process's peak resident memory (VmHWM), not on any counter: a queue
//! that charges less than its events keep alive, or buffers nothing charges, show up here.
//! What a process holds besides its queue is documented in the README (Guarantees, Memory):
//! its idle footprint, measured at start, and a few KiB per connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::binary::{http_get, sigterm, spawn, status, wait_exit};
use crate::harness::{ack_bytes, metric_value, wire};

const MIB: u64 = 1 << 20;
/// What the README documents a connection to cost besides the budget and the queues: its
/// read buffer's first 4 KiB, the task and the socket.
const PER_CONNECTION: u64 = 16 << 10;

/// A record shaped like one from Docker's fluentd driver, with a distinct ~300-byte line.
fn docker_record(client: usize, i: usize) -> Vec<(&'static str, String)> {
    vec![
        ("container_id", format!("{client:064x}")),
        ("container_name", format!("/app-{client}")),
        ("source", "stdout".to_string()),
        (
            "log",
            format!(
                "{{\"level\":\"info\",\"msg\":\"request {i} from client {client} done\",\"pad\":\"{}\"}}",
                "x".repeat(220)
            ),
        ),
    ]
}

fn pairs<'a>(r: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    r.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Starts the binary with a sink that takes one event a second (a stalled backend).
fn start_stalled(queue_bytes: u64, extra_global: &str) -> (Stalled, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ngrace_period_secs = 1\n{extra_global}\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.stuck]\ntype = \"blackhole\"\nrate_events_per_sec = 1\nmax_queue_bytes = {queue_bytes}\n"
    );
    let (child, forward, admin, logs) = spawn(&config, dir.path());
    // Let the runtime settle before reading the idle footprint.
    std::thread::sleep(Duration::from_millis(300));
    let idle_kib = status(child.id(), "VmRSS:");
    (
        Stalled {
            child,
            forward,
            admin,
            _logs: logs,
            idle: idle_kib << 10,
        },
        dir,
    )
}

struct Stalled {
    child: std::process::Child,
    forward: String,
    admin: String,
    _logs: std::sync::mpsc::Receiver<String>,
    /// Resident bytes right after start.
    idle: u64,
}

impl Stalled {
    fn peak(&self) -> u64 {
        status(self.child.id(), "VmHWM:") << 10
    }

    fn metric(&self, series: &str) -> f64 {
        metric_value(&http_get(&self.admin, "/metrics"), series)
    }

    fn stop(mut self) {
        sigterm(&self.child);
        // The stalled queue cannot drain: the grace period cuts it off (exit 1).
        assert!(wait_exit(&mut self.child, Duration::from_secs(10)).is_some());
    }
}

/// Sends one request, waits for its ack; stops at the first ack that does not come within
/// `patience` (the queue is full). Returns how many were acked.
fn acked_one_at_a_time(addr: &str, client: usize, patience: Duration, cap: usize) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(patience)).unwrap();
    let mut acked = 0;
    let mut buf = [0u8; 256];
    for i in 0..cap {
        let chunk = format!("c{client}-{i}");
        let r = docker_record(client, i);
        let frame = wire::message("docker.app", 1_700_000_000, &pairs(&r), Some(&chunk));
        if s.write_all(&frame).is_err() {
            break;
        }
        let want = ack_bytes(&chunk);
        let mut got = 0;
        while got < want.len() {
            match s.read(&mut buf[got..want.len()]) {
                Ok(n) if n > 0 => got += n,
                _ => return acked,
            }
        }
        assert_eq!(&buf[..want.len()], &want[..], "acks echo the chunk");
        acked += 1;
    }
    acked
}

#[test]
fn many_small_acked_requests_stay_within_the_queue_bound() {
    // 200 connections each send 100 Docker-shaped requests, one at a time with acks, into a
    // stalled 16 MiB queue: 20,000 requests offered, more than the queue holds.
    let queue = 16 * MIB;
    let (o, _dir) = start_stalled(queue, "");
    let connections = 200;
    let clients: Vec<_> = (0..connections)
        .map(|c| {
            let addr = o.forward.clone();
            std::thread::spawn(move || acked_one_at_a_time(&addr, c, Duration::from_secs(3), 100))
        })
        .collect();
    let acked: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let peak = o.peak();
    let queued = o.metric("outrigger_queue_bytes{component=\"stuck\"}");
    let bound = o.idle + queue * 5 / 4 + connections as u64 * PER_CONNECTION;
    eprintln!(
        "one request per read with acks: {acked} acked, queue {queued:.0} bytes, \
         idle {} KiB, peak {} KiB, bound {} KiB",
        o.idle >> 10,
        peak >> 10,
        bound >> 10
    );
    // ~420-byte records, each its own batch: a queue that charges what they keep alive
    // (about twice the record) still holds more than 15,000 of them, and it is full.
    assert!(
        acked >= 15_000,
        "only {acked} requests acked into a 16 MiB queue"
    );
    assert!(acked < 20_000, "a stalled 16 MiB queue took all {acked}");
    assert!(
        queued >= (queue * 95 / 100) as f64,
        "queue only {queued} bytes full"
    );
    assert!(queued <= queue as f64, "queue {queued} over its bound");
    assert!(
        peak <= bound,
        "peak RSS {} KiB over {} KiB (idle {} KiB + 1.25 x queue + {} x {} KiB)",
        peak >> 10,
        bound >> 10,
        o.idle >> 10,
        connections,
        PER_CONNECTION >> 10
    );
    o.stop();
}

#[test]
fn forward_mode_bursts_stay_within_the_queue_bound() {
    let queue = 16 * MIB;
    let (o, _dir) = start_stalled(queue, "");
    let sent = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, sent) = (o.forward.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let end = Instant::now() + Duration::from_secs(3);
                let mut i = 0;
                while Instant::now() < end {
                    let records: Vec<_> = (0..100).map(|_| docker_record(c, i)).collect();
                    i += 1;
                    let records: Vec<Vec<(&str, &str)>> =
                        records.iter().map(|r| pairs(r)).collect();
                    let frame = wire::forward("docker.app", &records, None);
                    match s.write_all(&frame) {
                        Ok(()) => {
                            sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                s
            })
        })
        .collect();
    let conns: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let peak = o.peak();
    let queued = o.metric("outrigger_queue_bytes{component=\"stuck\"}");
    let bound = o.idle + queue * 5 / 4 + 4 * PER_CONNECTION;
    eprintln!(
        "forward mode, 4 clients: sent {} MiB, queue {queued:.0} bytes, idle {} KiB, \
         peak {} KiB, bound {} KiB",
        sent.load(Ordering::Relaxed) >> 20,
        o.idle >> 10,
        peak >> 10,
        bound >> 10
    );
    assert!(
        queued >= (queue / 2) as f64,
        "the clients did not fill the queue"
    );
    assert!(
        peak <= bound,
        "peak RSS {} KiB over {} KiB",
        peak >> 10,
        bound >> 10
    );
    drop(conns);
    o.stop();
}

/// A PackedForward request of about `bytes` of entries, gzip-compressed or not.
fn large_request(client: usize, bytes: usize, gzip: bool) -> Vec<u8> {
    let one = docker_record(client, 0);
    let per = 450;
    let records: Vec<Vec<(&str, &str)>> = (0..bytes / per).map(|_| pairs(&one)).collect();
    wire::packed("docker.app", &records, Some(&format!("big-{client}")), gzip)
}

#[test]
fn large_requests_wait_for_the_input_budget_and_all_complete() {
    // 32 clients each send 90% of a 1 MiB request, then stop: without a budget that is
    // 29 MiB of half-read requests. With 1 MiB frames and payloads the reserve is about
    // 2 MiB; the whole budget is 6 MiB.
    let budget = 6 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\nmax_input_buffer_bytes = {budget}\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         max_frame_bytes = 1048576\nmax_decompressed_bytes = 1048576\n\
         [sinks.out]\ntype = \"blackhole\"\n"
    );
    let (mut child, forward, admin, _logs) = spawn(&config, dir.path());
    std::thread::sleep(Duration::from_millis(300));
    let idle = status(child.id(), "VmRSS:") << 10;
    let clients = 32;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let go = Arc::new(std::sync::Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, ready_tx, go) = (forward.clone(), ready_tx.clone(), go.clone());
            std::thread::spawn(move || {
                // Every other client's request is compressed: its payload inflates to the
                // same megabyte, which must fit the budget too.
                let frame = large_request(c, 900 << 10, c % 2 == 1);
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let cut = frame.len() * 9 / 10;
                // The kernel takes what Outrigger does not read yet.
                s.write_all(&frame[..cut]).unwrap();
                ready_tx.send(()).unwrap();
                go.wait();
                s.write_all(&frame[cut..]).unwrap();
                let want = ack_bytes(&format!("big-{c}"));
                let mut got = vec![0u8; want.len()];
                s.read_exact(&mut got)
                    .map(|()| got == want)
                    .unwrap_or(false)
            })
        })
        .collect();
    for _ in 0..clients {
        ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    // Let Outrigger read what it will.
    std::thread::sleep(Duration::from_millis(1500));
    let held = status(child.id(), "VmHWM:") << 10;
    let metrics = http_get(&admin, "/metrics");
    let waits = metric_value(&metrics, "outrigger_input_buffer_waits_total");
    go.wait();
    let acked = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|ok| *ok)
        .count();
    eprintln!(
        "32 large requests at once: idle {} KiB, peak while waiting {} KiB (budget {} KiB), \
         {waits} waits, {acked} acked",
        idle >> 10,
        held >> 10,
        budget >> 10
    );
    assert!(waits > 0.0, "connections never waited for the budget");
    assert!(
        held <= idle + budget + clients as u64 * PER_CONNECTION + 2 * MIB,
        "peak {} KiB with 32 half-read requests; budget {} KiB",
        held >> 10,
        budget >> 10
    );
    assert_eq!(
        acked, clients,
        "every request completes: the budget never deadlocks"
    );
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
}
