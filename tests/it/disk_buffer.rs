//! The disk buffer's files as operators see them: `outrigger buffer verify` and `dump` on a
//! log written by the library, clean and then damaged.

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use outrigger::buffer::disk::{cursor::Cursor, record, segment::Writer};

use crate::export::{delivered as stored, wait_delivered as wait_stored};
use crate::harness::binary::bin;

#[test]
fn buffer_verify_reports_segments_cursors_and_damage() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join(outrigger::buffer::disk::DIR);
    std::fs::create_dir(&dir).unwrap();
    let mut w = Writer::create(&dir, 1, 64 << 10).unwrap();
    let mut records = Vec::new();
    for seq in 1..=100 {
        record::encode(seq, format!("request {seq}").as_bytes(), &mut records);
    }
    w.append(&records).unwrap();
    w.sync().unwrap();
    Cursor::open(&dir, "es").unwrap().advance(40).unwrap();

    let verify = || {
        Command::new(bin())
            .args(["buffer", "verify", "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("00000000000000000001.log: records 1..=100 (100)"),
        "{text}"
    );
    assert!(text.contains("cursor es: next record 40"), "{text}");

    // These records are not what a source writes: dump says so and exits 1.
    let out = Command::new(bin())
        .args(["buffer", "dump", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("100 records, 0 events, 100 unreadable"),
        "{err}"
    );

    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(w.path())
        .unwrap();
    file.write_all_at(b"\xde\xad", 1000).unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("damage found") && text.contains("a start cuts the segment there"),
        "{text}"
    );
}

/// Outrigger with the disk buffer in `data` and one `http` sink to `url`.
async fn buffered(data: &std::path::Path, url: &str, extra: &str) -> crate::harness::Outrigger {
    crate::harness::Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ngrace_period_secs = 1\ndata_dir = \"{}\"\n\
         [buffer]\ntype = \"disk\"\nmax_bytes = 8388608\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n{extra}\n\
         [sinks.out]\ntype = \"http\"\nendpoint = \"{url}\"\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\nflush_interval_ms = 50\n",
        data.display()
    ))
    .await
}

/// Sends messages `{"i": i}` for `ids` on one connection, each with a chunk, waiting for each
/// ack before the next (as Docker's driver with `fluentd-request-ack` does); returns the ids
/// acknowledged.
async fn send_acked(o: &crate::harness::Outrigger, ids: std::ops::Range<usize>) -> Vec<usize> {
    use crate::harness::{ack_bytes, send_and_read_ack, wire};
    let mut s = o.connect().await;
    let mut acked = Vec::new();
    for i in ids {
        let chunk = format!("c{i}");
        let m = wire::message("t", 1_700_000_000, &[("i", &i.to_string())], Some(&chunk));
        match send_and_read_ack(&mut s, &m, std::time::Duration::from_secs(5)).await {
            Some(a) if a == ack_bytes(&chunk) => acked.push(i),
            other => panic!("request {i}: {other:?}"),
        }
    }
    acked
}

#[tokio::test]
async fn what_was_acked_while_the_backend_was_down_is_delivered_after_a_restart() {
    use crate::backend::{Backend, free_addr};
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr().await;
    let url = format!("http://{addr}");
    // The backend is down: every request is acknowledged once it is on disk.
    let mut o = buffered(data.path(), &url, "").await;
    let acked = send_acked(&o, 0..300).await;
    assert_eq!(acked.len(), 300);
    // The drain cannot deliver; it leaves the rest on disk and still ends well.
    o.stop().await.expect("nothing is lost: the drain succeeds");

    let b = Backend::start_on(addr, 200, vec![]).await;
    let mut o = buffered(data.path(), &url, "").await;
    let got = wait_stored(&b, 300).await;
    assert_eq!(got, (0..300).collect::<Vec<_>>(), "all of them, in order");
    // New input goes on behind what was replayed.
    send_acked(&o, 300..310).await;
    let got = wait_stored(&b, 310).await;
    assert_eq!(got, (0..310).collect::<Vec<_>>());
    o.stop().await.unwrap();

    // Once delivered, the cursor says so: a third start sends nothing again.
    let o = buffered(data.path(), &url, "").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(stored(&b).len(), 310, "nothing sent twice");
    drop(o);
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped: a disk that fills.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `Err` with why when it cannot be mounted (not root, no mount(8)).
    fn mount(size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_stops_acks_fails_ready_and_recovers_when_space_returns() {
    use crate::backend::{Backend, free_addr};
    use crate::harness::binary::{http_get, sigterm, spawn, wait_exit};
    use crate::harness::{ack_bytes, read_some, wire};
    use tokio::io::AsyncWriteExt;
    let test = "disk_buffer::a_full_disk_stops_acks_fails_ready_and_recovers_when_space_returns";
    let disk = Tmpfs::mount("3m");
    let Ok(disk) = disk.map_err(|e| {
        crate::clients::require(test, "OUTRIGGER_REQUIRE_ROOT", &Err(e));
    }) else {
        return;
    };
    let data = disk.dir.path();
    // 2 MiB of the 3 taken by something else: room for two of the buffer's 512 KiB segments
    // (max_bytes = 4 MiB would allow eight).
    let filler = data.join("filler");
    std::fs::write(&filler, vec![0u8; 2 << 20]).unwrap();
    let addr = free_addr().await;
    let config = format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
         [buffer]\ntype = \"disk\"\nmax_bytes = 4194304\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.backend]\ntype = \"http\"\nendpoint = \"http://{addr}\"\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\nflush_interval_ms = 50\n",
        data.display()
    );
    let conf = tempfile::tempdir().unwrap();
    let (child, forward, admin, _logs) = spawn(&config, conf.path());
    // Killed if the test fails, so the tmpfs can be unmounted.
    let mut child = crate::harness::binary::Reaped(child);
    let mut s = tokio::net::TcpStream::connect(&forward).await.unwrap();
    let line = "x".repeat(8 << 10);
    let mut acked = 0usize;
    let stalled = loop {
        assert!(acked < 1000, "the disk never filled");
        let chunk = format!("c{acked}");
        let i = acked.to_string();
        let m = wire::message(
            "t",
            1_700_000_000,
            &[("i", &i), ("log", &line)],
            Some(&chunk),
        );
        s.write_all(&m).await.unwrap();
        match read_some(&mut s, Duration::from_secs(2)).await {
            Some(a) => {
                assert_eq!(a, ack_bytes(&chunk));
                acked += 1;
            }
            None => break chunk,
        }
    };
    // Two segments' worth went in, then nothing more is acknowledged.
    assert!(
        (64..=128).contains(&acked),
        "{acked} acked before the disk was full"
    );
    let ready = http_get(&admin, "/ready");
    assert!(ready.starts_with("HTTP/1.0 503"), "{ready}");
    assert!(ready.contains("disk buffer cannot write"), "{ready}");

    // Space returns: the request held all along is acknowledged, and more go in.
    std::fs::remove_file(&filler).unwrap();
    let a = read_some(&mut s, Duration::from_secs(10)).await;
    assert_eq!(a, Some(ack_bytes(&stalled)), "the held request is acked");
    acked += 1;
    let ready = http_get(&admin, "/ready");
    assert!(ready.starts_with("HTTP/1.0 200"), "{ready}");
    for i in acked..acked + 10 {
        let chunk = format!("c{i}");
        let m = wire::message(
            "t",
            1_700_000_000,
            &[("i", &i.to_string()), ("log", "after")],
            Some(&chunk),
        );
        s.write_all(&m).await.unwrap();
        assert_eq!(
            read_some(&mut s, Duration::from_secs(5)).await,
            Some(ack_bytes(&chunk))
        );
    }
    acked += 10;

    // The backend comes up: every acknowledged request is delivered, in order.
    let b = Backend::start_on(addr, 200, vec![]).await;
    let got = wait_stored(&b, acked).await;
    assert_eq!(got, (0..acked).collect::<Vec<_>>());
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_goes_to_disk_with_memory_flat_and_is_delivered_in_order() {
    use crate::backend::{Backend, free_addr};
    use crate::harness::binary::{Reaped, sigterm, spawn, status, wait_exit};
    use crate::harness::{ack_bytes, wire};
    use std::io::{Read, Write};
    const CLIENTS: usize = 8;
    const EACH: usize = 2_500;
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr().await;
    // A 1 MiB queue: the 10 MB sent below is ten times what memory may hold.
    let config = format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nmax_queue_bytes = 1048576\n\
         [buffer]\ntype = \"disk\"\nmax_bytes = 268435456\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.backend]\ntype = \"http\"\nendpoint = \"http://{addr}\"\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\nflush_interval_ms = 50\n",
        data.path().display()
    );
    let (child, forward, _admin, _logs) = spawn(&config, data.path());
    let child = Reaped(child);
    let pid = child.0.id();
    let line = "o".repeat(480);
    // Clients send `i` = client * EACH + n, one request after another's ack, the first
    // `first` of them, then the rest.
    let send = |range: std::ops::Range<usize>| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (forward, line, range) = (forward.clone(), line.clone(), range.clone());
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(&forward).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    for n in range {
                        let i = (c * EACH + n).to_string();
                        let tag = format!("app{c}");
                        let m = wire::message(
                            &tag,
                            1_700_000_000,
                            &[("i", &i), ("log", &line)],
                            Some(&i),
                        );
                        s.write_all(&m).unwrap();
                        let want = ack_bytes(&i);
                        let mut got = vec![0; want.len()];
                        s.read_exact(&mut got)
                            .expect("acked while the backend is down");
                        assert_eq!(got, want);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    };
    send(0..EACH / 5);
    let early = status(pid, "VmHWM:");
    send(EACH / 5..EACH);
    let late = status(pid, "VmHWM:");
    eprintln!("VmHWM after 1/5 of the outage: {early} kB; after all of it: {late} kB");
    assert!(
        late < early + 6 * 1024,
        "memory grew from {early} kB to {late} kB while the backend was down"
    );
    let b = Backend::start_on(addr, 200, vec![]).await;
    let got = wait_stored(&b, CLIENTS * EACH).await;
    assert_eq!(got.len(), CLIENTS * EACH);
    for c in 0..CLIENTS {
        let mine: Vec<usize> = got.iter().copied().filter(|i| i / EACH == c).collect();
        assert_eq!(
            mine,
            (c * EACH..(c + 1) * EACH).collect::<Vec<_>>(),
            "client {c}"
        );
    }
    let mut child = child;
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn damaged_segments_lose_only_their_damaged_records_and_every_start_succeeds() {
    use crate::backend::{Backend, free_addr};
    use outrigger::buffer::disk::segment;
    const SENT: usize = 600;
    let pristine = tempfile::tempdir().unwrap();
    let down = format!("http://{}", free_addr().await);
    // Small segments (a 1 MiB log has 128 KiB ones): 600 requests of 1 KiB span several.
    let extra = "";
    let config = |data: &std::path::Path, url: &str| {
        format!(
            "[global]\nadmin_enabled = false\ngrace_period_secs = 1\ndata_dir = \"{}\"\n\
             [buffer]\ntype = \"disk\"\nmax_bytes = 1048576\n\
             [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n{extra}\n\
             [sinks.out]\ntype = \"http\"\nendpoint = \"{url}\"\n\
             retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\nflush_interval_ms = 50\n",
            data.display()
        )
    };
    let mut o = crate::harness::Outrigger::with_config(&config(pristine.path(), &down)).await;
    let line = "d".repeat(1000);
    {
        use crate::harness::{ack_bytes, send_and_read_ack, wire};
        let mut s = o.connect().await;
        for i in 0..SENT {
            let chunk = format!("c{i}");
            let m = wire::message(
                "t",
                1_700_000_000,
                &[("i", &i.to_string()), ("log", &line)],
                Some(&chunk),
            );
            let a = send_and_read_ack(&mut s, &m, Duration::from_secs(5)).await;
            assert_eq!(a, Some(ack_bytes(&chunk)));
        }
    }
    o.stop().await.unwrap();
    let log = pristine.path().join(outrigger::buffer::disk::DIR);
    let findings = segment::inspect(&log).unwrap();
    assert!(findings.len() >= 4, "{} segments", findings.len());
    // Record numbers are request ids + the first record's number.
    let base = findings[0].first_seq;

    let mut rng = 0x0dd_ba11_u64;
    let mut next = |below: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % below
    };
    for round in 0..10 {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join(outrigger::buffer::disk::DIR);
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(&log).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let f = &findings[next(findings.len() as u64) as usize];
        let path = dir.join(f.path.file_name().unwrap());
        let at = next(f.end);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let how = if next(2) == 0 {
            file.set_len(at).unwrap();
            "truncated"
        } else {
            let mut b = [0u8; 1];
            std::os::unix::fs::FileExt::read_at(&file, &mut b, at).unwrap();
            file.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
            "flipped"
        };
        drop(file);
        let b = Backend::start(vec![]).await;
        // The start always succeeds.
        let mut o = crate::harness::Outrigger::with_config(&config(data.path(), &b.url())).await;
        let damaged = o
            .wait_metric(
                "outrigger_buffer_damaged_segments_total{reason=\"cut\"}",
                0.0,
            )
            .await
            + o.metric("outrigger_buffer_damaged_segments_total{reason=\"quarantined\"}");
        let lost = o.metric("outrigger_buffer_lost_records_total");
        let quarantined =
            o.metric("outrigger_buffer_damaged_segments_total{reason=\"quarantined\"}");
        // What is left arrives; wait until it stops growing.
        let mut got = stored(&b);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = stored(&b);
            if now.len() == got.len() && !now.is_empty() {
                break;
            }
            got = now;
        }
        o.stop().await.unwrap();
        let missing: Vec<usize> = (0..SENT).filter(|i| !got.contains(i)).collect();
        let in_segment = |i: &usize| {
            let seq = (*i as u64) + base;
            seq >= f.first_seq && f.limit.is_none_or(|l| seq < l)
        };
        eprintln!(
            "round {round}: {how} {} at byte {at}: {} records lost, {damaged} damaged segments counted",
            f.path.file_name().unwrap().to_string_lossy(),
            missing.len()
        );
        let mut sorted = got.clone();
        sorted.dedup();
        assert_eq!(got, sorted, "round {round}: in order, once each");
        // Only records of the damaged segment, from the damage to its end, are lost.
        assert!(missing.iter().all(in_segment), "round {round}: {missing:?}");
        if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
            assert_eq!(last - first + 1, missing.len(), "round {round}: one run");
            assert_eq!(damaged, 1.0, "round {round}: the damage is counted");
            if quarantined > 0.0 {
                assert_eq!(lost as usize, missing.len(), "round {round}: lost, counted");
            }
            let seg_end = f.limit.map_or(SENT as u64 + base, |l| l) - base;
            assert_eq!(
                *last as u64 + 1,
                seg_end,
                "round {round}: to the segment's end"
            );
        }
    }
}

#[tokio::test]
async fn with_ack_delivered_an_ack_waits_for_the_backend() {
    use crate::backend::{Backend, free_addr};
    use crate::harness::{ack_bytes, read_some, wire};
    use tokio::io::AsyncWriteExt;
    let data = tempfile::tempdir().unwrap();
    let addr = free_addr().await;
    let mut o = buffered(
        data.path(),
        &format!("http://{addr}"),
        "ack = \"delivered\"",
    )
    .await;
    let mut s = o.connect().await;
    let m = wire::message("t", 1_700_000_000, &[("i", "0")], Some("c0"));
    s.write_all(&m).await.unwrap();
    // On disk, but the backend is down: no ack yet.
    assert_eq!(read_some(&mut s, Duration::from_secs(1)).await, None);
    let b = Backend::start_on(addr, 200, vec![]).await;
    assert_eq!(
        read_some(&mut s, Duration::from_secs(10)).await,
        Some(ack_bytes("c0")),
        "acked once delivered"
    );
    assert_eq!(stored(&b), [0]);
    o.stop().await.unwrap();
}

#[tokio::test]
async fn what_no_sink_matches_is_counted_as_unrouted_and_still_acked() {
    use crate::harness::{Outrigger, ack_bytes, send_and_read_ack, wire};
    let data = tempfile::tempdir().unwrap();
    let o = Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ndata_dir = \"{}\"\n[buffer]\ntype = \"disk\"\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\ntype = \"file\"\npath = \"{{out}}\"\nmatch = [\"app.*\"]\n",
        data.path().display()
    ))
    .await;
    let mut s = o.connect().await;
    for (tag, chunk) in [("app.web", "a"), ("other", "b")] {
        let m = wire::message(tag, 1_700_000_000, &[("log", tag)], Some(chunk));
        let a = send_and_read_ack(&mut s, &m, Duration::from_secs(5)).await;
        assert_eq!(a, Some(ack_bytes(chunk)));
    }
    let lines = o.wait_lines(1).await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["tag"], "app.web");
    assert_eq!(
        o.wait_metric("outrigger_unrouted_events_total{component=\"in\"}", 1.0)
            .await,
        1.0
    );
}
