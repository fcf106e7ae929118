//! `kill -9` with the disk buffer: the real binary, clients sending with acks, a random
//! SIGKILL, a restart, round after round, with the backend up, down and slow. Every acked
//! event must reach the backend in the end; what arrives twice is counted and printed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Chaos, free_addr};
use crate::harness::binary::{sigterm, spawn, wait_exit};
use crate::harness::{ack_bytes, wire};

/// A small deterministic generator, so a failing round can be run again as it was.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// How a client sends: one event a request, three, or one line in three Docker pieces
/// (each piece its own acked request, joined by enrichment: the first pieces are held
/// after their acks).
#[derive(Clone, Copy, Debug)]
enum Mode {
    Message,
    Forward,
    Split,
}

/// The requests of item `n` of client `c`, with the tokens they carry.
fn requests(mode: Mode, c: usize, n: usize) -> Vec<(Vec<u8>, String, Vec<String>)> {
    let token = |k: usize| format!("tok-{c}-{n}-{k}");
    match mode {
        Mode::Message => {
            let t = token(0);
            let chunk = format!("{c}-{n}");
            let m = wire::message("app", 1_700_000_000, &[("log", &t)], Some(&chunk));
            vec![(m, chunk, vec![t])]
        }
        Mode::Forward => {
            let ts: Vec<String> = (0..3).map(token).collect();
            let records: Vec<Vec<(&str, &str)>> =
                ts.iter().map(|t| vec![("log", t.as_str())]).collect();
            let chunk = format!("{c}-{n}");
            vec![(wire::forward("app", &records, Some(&chunk)), chunk, ts)]
        }
        Mode::Split => (0..3)
            .map(|k| {
                let t = token(k);
                let chunk = format!("{c}-{n}-{k}");
                let id = format!("p{c}x{n}");
                let ord = (k + 1).to_string();
                let last = if k == 2 { "true" } else { "false" };
                let fields = [
                    ("log", t.as_str()),
                    ("partial_message", "true"),
                    ("partial_id", id.as_str()),
                    ("partial_ordinal", ord.as_str()),
                    ("partial_last", last),
                ];
                let m = wire::message("app", 1_700_000_000, &fields, Some(&chunk));
                (m, chunk, vec![t])
            })
            .collect(),
    }
}

/// Sends until `stop` or the connection dies, one request at a time, each after the last
/// one's ack; returns the tokens acked.
fn client(addr: String, mode: Mode, c: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acked = Vec::new();
    let Ok(mut s) = TcpStream::connect(&addr) else {
        return acked;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        for (bytes, chunk, tokens) in requests(mode, c, n) {
            if s.write_all(&bytes).is_err() {
                return acked;
            }
            let want = ack_bytes(&chunk);
            let mut got = vec![0; want.len()];
            if s.read_exact(&mut got).is_err() {
                return acked;
            }
            assert_eq!(got, want, "acks arrive in order");
            acked.extend(tokens);
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    acked
}

/// Every token in what the backend stored, with how often.
fn tokens(b: &Backend, into: &mut HashMap<String, usize>) {
    for r in b.accepted() {
        let text = String::from_utf8_lossy(&r.body);
        // A joined line runs its pieces together: "tok-0-1-0tok-0-1-1".
        for (at, _) in text.match_indices("tok-") {
            let rest: String = text[at + 4..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '-')
                .collect();
            *into.entry(format!("tok-{rest}")).or_default() += 1;
        }
    }
}

fn config(data: &std::path::Path, backend: std::net::SocketAddr) -> String {
    format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ngrace_period_secs = 5\ndata_dir = \"{}\"\n\
         [buffer]\ntype = \"disk\"\nmax_bytes = 67108864\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.backend]\ntype = \"http\"\nendpoint = \"http://{backend}\"\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\nflush_interval_ms = 50\n",
        data.display()
    )
}

fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
}

/// A backend on `addr`, once the last one there has let go of the port.
async fn backend_on(addr: std::net::SocketAddr) -> Backend {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} stays in use");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Backend::start_on(addr, 200, vec![]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_rounds_lose_nothing_that_was_acked() {
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr().await;
    let mut rng = Lcg(0x5eed);
    let mut acked: Vec<String> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let modes = [Mode::Message, Mode::Forward, Mode::Split];
    let backends = ["up", "down", "slow", "up", "down"];
    for (round, state) in backends.iter().enumerate() {
        let backend = match *state {
            "down" => None,
            "slow" => {
                let b = backend_on(addr).await;
                *b.state.chaos.lock().unwrap() = Some(Chaos {
                    delay: (Duration::from_millis(50), Duration::from_millis(300)),
                    fail_percent: 20,
                    ok: |_| (200, String::new()),
                });
                Some(b)
            }
            _ => Some(backend_on(addr).await),
        };
        let (mut child, forward, _admin, _logs) = spawn(&config(data.path(), addr), data.path());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = modes
            .iter()
            .enumerate()
            .map(|(c, mode)| {
                let (forward, stop, mode) = (forward.clone(), stop.clone(), *mode);
                // Each round's clients are new ones: their tokens differ by round.
                std::thread::spawn(move || client(forward, mode, round * 10 + c, stop))
            })
            .collect();
        let after = Duration::from_millis(300 + rng.next(1200));
        std::thread::sleep(after);
        kill9(&mut child);
        stop.store(true, Ordering::Relaxed);
        let mut n = 0;
        for c in clients {
            let got = c.join().unwrap();
            n += got.len();
            acked.extend(got);
        }
        eprintln!("round {round} (backend {state}): killed after {after:?}, {n} tokens acked");
        assert!(n > 0, "round {round}: the clients got acks");
        if let Some(b) = backend {
            tokens(&b, &mut seen);
            drop(b);
        }
    }
    // Up for good: a last start delivers what the rounds left.
    let b = backend_on(addr).await;
    let (mut child, _, _, _) = spawn(&config(data.path(), addr), data.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let mut now = seen.clone();
        tokens(&b, &mut now);
        let missing: Vec<&String> = acked.iter().filter(|t| !now.contains_key(*t)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
    tokens(&b, &mut seen);
    let twice = seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "{} tokens acked, {} stored, {twice} stored more than once",
        acked.len(),
        seen.len()
    );
    assert!(
        missing.is_empty(),
        "{} acked tokens never delivered, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}
