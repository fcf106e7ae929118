//! Starting Outrigger for a test, speaking the forward protocol to it, reading what it wrote.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use outrigger::topology::{self, DrainTimeout, Running};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An Outrigger running in this process, writing JSON lines to `out`.
pub struct Outrigger {
    pub running: Option<Running>,
    pub dir: TempDir,
    pub out: PathBuf,
}

impl Outrigger {
    /// Starts with a forward source named `in` on 127.0.0.1:0 (plus `source_extra` TOML lines
    /// in its table) and a `file` sink named `out`.
    pub async fn start(source_extra: &str) -> Outrigger {
        Self::start_with(source_extra, "").await
    }

    /// Like [`Outrigger::start`], with more top-level sections (`[enrich]`...) after it.
    pub async fn start_with(source_extra: &str, sections: &str) -> Outrigger {
        Self::with_config(&format!(
            "[global]\nadmin_enabled = false\ngrace_period_secs = 10\n\n\
             [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n{source_extra}\n\n\
             [sinks.out]\ntype = \"file\"\npath = \"{{out}}\"\n\n{sections}\n"
        ))
        .await
    }

    /// Starts from a whole config; `{out}` and `{dir}` are replaced by the output file and the
    /// test's temporary directory.
    pub async fn with_config(config: &str) -> Outrigger {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.jsonl");
        let text = config
            .replace("{out}", out.to_str().unwrap())
            .replace("{dir}", dir.path().to_str().unwrap());
        let settings = outrigger::config::parse("test.toml", &text, |_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let running = topology::start(&settings).await.unwrap();
        Outrigger {
            running: Some(running),
            dir,
            out,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .unwrap()
            .tcp_addr("in")
            .expect("source `in` has a TCP address")
    }

    /// Sends `n` one-event messages `{"i": "<i>"}` (ids from `from`, tag `t`) on a new
    /// connection, and returns it (open, so no close reaches Outrigger until it is dropped).
    pub async fn send_ids(&self, from: usize, n: usize) -> TcpStream {
        let mut s = self.connect().await;
        let mut buf = Vec::new();
        for i in from..from + n {
            buf.extend(wire::message(
                "t",
                1_700_000_000,
                &[("i", &i.to_string())],
                None,
            ));
        }
        s.write_all(&buf).await.unwrap();
        s.flush().await.unwrap();
        s
    }

    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr()).await.unwrap()
    }

    /// Every line written so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Waits until at least `n` lines are written (10 s at most) and returns them all.
    pub async fn wait_lines(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.lines();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of one metric series, like `outrigger_source_rejected_total{component="in",reason="invalid_time"}`;
    /// 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.running.as_ref().unwrap().metrics.render(), series)
    }

    /// Waits until `series` reaches at least `value` (10 s at most) and returns it.
    pub async fn wait_metric(&self, series: &str, value: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(series);
            if v >= value || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Drains and stops.
    pub async fn stop(&mut self) -> Result<(), DrainTimeout> {
        self.running.take().unwrap().shutdown().await
    }
}

/// Reads one series from a Prometheus text exposition.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Writes `bytes`, then reads one ack (`{"ack": chunk}`) with a timeout; `None` when none
/// arrives within `wait`.
pub async fn send_and_read_ack(s: &mut TcpStream, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    s.write_all(bytes).await.unwrap();
    read_some(s, wait).await
}

/// Whatever the peer sends within `wait` (after the first byte, 100 ms more), or `None`.
pub async fn read_some(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.truncate(n);
            Some(buf)
        }
        _ => None,
    }
}

/// True when the peer has closed the connection (EOF or reset) within `wait`.
pub async fn closed_by_peer(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// The bytes of `{"ack": <chunk as str>}`.
pub fn ack_bytes(chunk: &str) -> Vec<u8> {
    let mut out = vec![0x81, 0xa3, b'a', b'c', b'k'];
    rmp::encode::write_str(&mut out, chunk).unwrap();
    out
}

/// Forward-protocol messages, encoded with rmp the way clients do.
pub mod wire {
    /// A record of string pairs.
    pub fn record(out: &mut Vec<u8>, fields: &[(&str, &str)]) {
        rmp::encode::write_map_len(out, fields.len() as u32).unwrap();
        for (k, v) in fields {
            rmp::encode::write_str(out, k).unwrap();
            rmp::encode::write_str(out, v).unwrap();
        }
    }

    /// EventTime ext (fixext8, type 0).
    pub fn event_time(out: &mut Vec<u8>, secs: u32, nanos: u32) {
        out.extend_from_slice(&[0xd7, 0x00]);
        out.extend_from_slice(&secs.to_be_bytes());
        out.extend_from_slice(&nanos.to_be_bytes());
    }

    pub fn options(out: &mut Vec<u8>, chunk: Option<&str>, extra: &[(&str, &str)]) {
        let n = chunk.is_some() as u32 + extra.len() as u32;
        rmp::encode::write_map_len(out, n).unwrap();
        if let Some(c) = chunk {
            rmp::encode::write_str(out, "chunk").unwrap();
            rmp::encode::write_str(out, c).unwrap();
        }
        for (k, v) in extra {
            rmp::encode::write_str(out, k).unwrap();
            rmp::encode::write_str(out, v).unwrap();
        }
    }

    /// Message mode: `[tag, time, record, {chunk}?]` with integer time.
    pub fn message(tag: &str, time: u32, fields: &[(&str, &str)], chunk: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_array_len(&mut out, if chunk.is_some() { 4 } else { 3 }).unwrap();
        rmp::encode::write_str(&mut out, tag).unwrap();
        rmp::encode::write_uint(&mut out, u64::from(time)).unwrap();
        record(&mut out, fields);
        if chunk.is_some() {
            options(&mut out, chunk, &[]);
        }
        out
    }

    /// The entries `[EventTime, record]` concatenated, as PackedForward carries them.
    pub fn entries(records: &[Vec<(&str, &str)>], secs: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, r) in records.iter().enumerate() {
            rmp::encode::write_array_len(&mut out, 2).unwrap();
            event_time(&mut out, secs, i as u32);
            record(&mut out, r);
        }
        out
    }

    /// Forward mode: `[tag, [entries...], {chunk}?]`.
    pub fn forward(tag: &str, records: &[Vec<(&str, &str)>], chunk: Option<&str>) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_array_len(&mut out, if chunk.is_some() { 3 } else { 2 }).unwrap();
        rmp::encode::write_str(&mut out, tag).unwrap();
        rmp::encode::write_array_len(&mut out, records.len() as u32).unwrap();
        let mut e = entries(records, 1_700_000_000);
        out.append(&mut e);
        if chunk.is_some() {
            options(&mut out, chunk, &[]);
        }
        out
    }

    /// PackedForward: `[tag, bin(entries), {chunk, compressed}?]`; `gzip` compresses the
    /// entries (as one member per half, to exercise multi-member streams).
    pub fn packed(
        tag: &str,
        records: &[Vec<(&str, &str)>],
        chunk: Option<&str>,
        gzip: bool,
    ) -> Vec<u8> {
        let entries = entries(records, 1_700_000_000);
        let payload = if gzip {
            gzip_members(&entries)
        } else {
            entries
        };
        let mut out = Vec::new();
        rmp::encode::write_array_len(&mut out, 3).unwrap();
        rmp::encode::write_str(&mut out, tag).unwrap();
        rmp::encode::write_bin(&mut out, &payload).unwrap();
        let extra: &[(&str, &str)] = if gzip { &[("compressed", "gzip")] } else { &[] };
        options(&mut out, chunk, extra);
        out
    }

    /// `data` as two concatenated gzip members.
    pub fn gzip_members(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mid = data.len() / 2;
        let mut out = Vec::new();
        for part in [&data[..mid], &data[mid..]] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            out.extend(e.finish().unwrap());
        }
        out
    }
}

/// The real binary as a child process: started on a config file, probed over HTTP, signalled.
pub mod binary {
    use std::io::{BufRead, Read, Write};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_outrigger")
    }

    /// Starts the binary on `config` and returns it with its forward and admin addresses, read
    /// from its JSON log.
    pub fn spawn(
        config: &str,
        dir: &std::path::Path,
    ) -> (Child, String, String, std::sync::mpsc::Receiver<String>) {
        spawn_env(config, dir, &[])
    }

    /// [`spawn`] with `env` added to the environment.
    pub fn spawn_env(
        config: &str,
        dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> (Child, String, String, std::sync::mpsc::Receiver<String>) {
        let path = dir.join("outrigger.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(bin())
            .envs(env.iter().copied())
            .args(["--config", path.to_str().unwrap(), "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let (mut forward, mut admin, mut started) = (None, None, false);
        let deadline = Instant::now() + Duration::from_secs(20);
        // "started" comes after readiness is set, so /ready answers 200 from then on.
        while forward.is_none() || admin.is_none() || !started {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("start-up log lines");
            let v: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
            if v["message"] == "source listening" && v["kind"] == "forward" {
                let a = v["addresses"].as_str().unwrap();
                forward = Some(
                    a.split("tcp://")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                        .to_string(),
                );
            }
            started |= v["message"] == "started";
            if v["message"] == "admin listening" {
                admin = Some(v["address"].as_str().unwrap().to_string());
            }
        }
        (child, forward.unwrap(), admin.unwrap(), rx)
    }

    pub fn http_get(addr: &str, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    pub fn status(pid: u32, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix(" kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap()
    }

    /// A child killed (SIGKILL) and reaped when dropped, so a failing test leaves none
    /// behind.
    pub struct Reaped(pub Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    pub fn sigterm(child: &Child) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }

    pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        None
    }
}
