//! The file source with the real binary: files written as a container runtime writes them
//! (CRI lines, long lines split into `P` pieces, stdout and stderr interleaved), rotated by
//! rename, with `kill -9` between rounds and restarts. Every line must come out, whole and
//! exactly as written; lines that come out twice (read again after the kill, because the
//! kill came before their delivery was checkpointed) are counted and printed.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::harness::binary::{Reaped, sigterm, spawn, wait_exit};

const TIME: &str = "2026-12-04T10:00:00.000000001Z";

/// Appends lines `from..to` to `path` as a runtime writes them: every 5th split into two
/// pieces (`P` then `F`), every 3rd on stderr, each `tok-<n> payload <n>`.
fn write_lines(path: &Path, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for n in from..to {
        let stream = if n % 3 == 0 { "stderr" } else { "stdout" };
        if n % 5 == 0 {
            text.push_str(&format!("{TIME} {stream} P tok-{n} pay\n"));
            text.push_str(&format!("{TIME} {stream} F load {n}\n"));
        } else {
            text.push_str(&format!("{TIME} {stream} F tok-{n} payload {n}\n"));
        }
    }
    f.write_all(text.as_bytes()).unwrap();
}

/// Rotation by rename, as the kubelet does it: the file moves aside, a new one takes its name.
fn rotate(path: &Path, suffix: &str) {
    let aside = path.with_file_name(format!(
        "{}.{suffix}",
        path.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::rename(path, aside).unwrap();
}

/// Every `tok-<n>` in the output, with how often; panics on a line not as written.
fn tokens(out: &Path) -> HashMap<usize, usize> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    // The sink may be writing the last line as this reads: whole lines only.
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut seen = HashMap::new();
    for line in whole.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("the sink writes JSON lines");
        let msg = v["record"]["log"]
            .as_str()
            .unwrap_or_else(|| panic!("no line in {line}"));
        let n: usize = msg
            .strip_prefix("tok-")
            .and_then(|m| m.split(' ').next())
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("not a line as written: {msg:?}"));
        assert_eq!(
            msg,
            format!("tok-{n} payload {n}"),
            "joined whole, as written"
        );
        *seen.entry(n).or_insert(0) += 1;
    }
    seen
}

fn config(dir: &Path) -> String {
    format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ngrace_period_secs = 5\ndata_dir = \"{d}/data\"\n\
         [sources.probe]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sources.pods]\ntype = \"file\"\ninclude = [\"{d}/pods/*/*.log\"]\n\
         poll_interval_ms = 100\ncheckpoint_interval_ms = 100\nread_bytes = 4096\n\
         [sinks.out]\ntype = \"file\"\npath = \"{d}/out.jsonl\"\n",
        d = dir.display()
    )
}

fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.wait();
}

/// Waits until the output holds at least `n` distinct lines; returns what it holds.
fn wait_for(out: &Path, n: usize, within: Duration) -> HashMap<usize, usize> {
    let deadline = Instant::now() + within;
    loop {
        let seen = tokens(out);
        if seen.len() >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rotated_and_killed_files_lose_no_line_and_join_their_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pods/shop_web-1_u1");
    std::fs::create_dir_all(&pod).unwrap();
    let log = pod.join("0.log");
    let out = dir.path().join("out.jsonl");
    let cfg = config(dir.path());

    // Round 1: lines waiting before the start, a rotation while it reads, a kill -9 mid-way.
    write_lines(&log, 0, 2000);
    let (child, _, _, _logs) = spawn(&cfg, dir.path());
    let mut child = Reaped(child);
    wait_for(&out, 300, Duration::from_secs(20));
    rotate(&log, "20261204-100000");
    // The runtime writes on into the renamed file until it reopens.
    write_lines(&pod.join("0.log.20261204-100000"), 5000, 5010);
    write_lines(&log, 2000, 3000);
    wait_for(&out, 2200, Duration::from_secs(20));
    kill9(&mut child.0);

    // Round 2: written while it was down, rotated again while down, then a restart.
    write_lines(&log, 3000, 3500);
    rotate(&log, "20261204-100500");
    write_lines(&log, 3500, 4000);
    let (child, _, _, _logs) = spawn(&cfg, dir.path());
    let mut child = Reaped(child);
    write_lines(&log, 4000, 5000);
    wait_for(&out, 5010, Duration::from_secs(30));
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
    let seen = tokens(&out);

    let missing: Vec<usize> = (0..5010).filter(|n| !seen.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice = seen.values().filter(|c| **c > 1).count();
    println!("file source: 5010 lines, {twice} delivered twice (read again after the kill)");
    assert!(
        twice < 5010 / 2,
        "repeats only for what was in flight at the kill"
    );

    // Round 3: nothing new; a start resumes at the checkpoints and repeats nothing.
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    let (child, _, _, _logs) = spawn(&cfg, dir.path());
    let mut child = Reaped(child);
    std::thread::sleep(Duration::from_millis(800));
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
    let after = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(after, before, "a clean stop saved every checkpoint");
}

#[test]
fn copy_truncate_deletion_exclude_and_read_from_end() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods/app");
    std::fs::create_dir_all(&pods).unwrap();
    let (kept, gone, skipped, old) = (
        pods.join("kept.log"),
        pods.join("gone.log"),
        pods.join("skipped.log"),
        pods.join("old.log"),
    );
    let out = dir.path().join("out.jsonl");
    // There before the start: with read_from = "end", not read.
    write_lines(&old, 0, 10);
    let cfg = config(dir.path()).replace(
        "read_bytes = 4096\n",
        &format!(
            "read_bytes = 4096\nread_from = \"end\"\nexclude = [\"{}\"]\n",
            skipped.display()
        ),
    );
    let (child, _, _, _logs) = spawn(&cfg, dir.path());
    let mut child = Reaped(child);
    // Files that appear while it runs are read from their beginning, whatever read_from.
    write_lines(&kept, 100, 200);
    write_lines(&gone, 200, 300);
    write_lines(&skipped, 900, 910);
    write_lines(&old, 10, 20);
    wait_for(&out, 210, Duration::from_secs(20));
    // copytruncate: the file cut to 0 in place and written on.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&kept)
        .unwrap()
        .set_len(0)
        .unwrap();
    write_lines(&kept, 300, 400);
    // Deleted while open: what it held was read already, or is read through the descriptor.
    write_lines(&gone, 400, 450);
    std::fs::remove_file(&gone).unwrap();
    let seen = wait_for(&out, 360, Duration::from_secs(20));
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));

    let want: Vec<usize> = (10..20).chain(100..450).collect();
    let missing: Vec<&usize> = want.iter().filter(|n| !seen.contains_key(n)).collect();
    assert!(missing.is_empty(), "lost {missing:?}");
    assert!(
        !(0..10).any(|n| seen.contains_key(&n)),
        "read_from = end skips what was there at the first start"
    );
    assert!(
        !(900..910).any(|n| seen.contains_key(&n)),
        "excluded files are not read"
    );
}

#[test]
fn kubernetes_logs_names_each_line_from_its_path_and_skips_its_own_pod() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    let uid = "0f3a9c2e-5b7d-4e1a-9c3b-2d4e6f8a0b1c";
    let app = pods.join(format!("shop_web-7d9f-x2kq_{uid}/app"));
    let own = pods.join("logging_outrigger-abcde_1111/outrigger");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::create_dir_all(&own).unwrap();
    // A restarted container writes its next number.
    write_lines(&app.join("0.log"), 0, 5);
    write_lines(&app.join("1.log"), 5, 10);
    write_lines(&own.join("0.log"), 100, 110);
    let out = dir.path().join("out.jsonl");
    let cfg = format!(
        "[global]\nadmin_address = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\n\
         [sources.probe]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sources.pods]\ntype = \"kubernetes_logs\"\nmetadata = \"none\"\npods_dir = \"{d}/pods\"\npoll_interval_ms = 100\n\
         [sinks.out]\ntype = \"file\"\npath = \"{d}/out.jsonl\"\nmatch = \"kube.**\"\n",
        d = dir.path().display()
    );
    let env = [
        ("POD_NAMESPACE", "logging"),
        ("POD_NAME", "outrigger-abcde"),
    ];
    let (child, _, _, _logs) = crate::harness::binary::spawn_env(&cfg, dir.path(), &env);
    let mut child = Reaped(child);
    let seen = wait_for(&out, 10, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
    assert!((0..10).all(|n| seen.contains_key(&n)), "{seen:?}");
    assert!(
        !(100..110).any(|n| tokens(&out).contains_key(&n)),
        "its own pod is left out"
    );

    let text = std::fs::read_to_string(&out).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let r = &v["resource"];
        let n: usize = v["record"]["log"].as_str().unwrap()[4..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(v["tag"], "kube.shop.web-7d9f-x2kq.app", "{line}");
        assert_eq!(r["k8s.namespace.name"], "shop", "{line}");
        assert_eq!(r["k8s.pod.name"], "web-7d9f-x2kq");
        assert_eq!(r["k8s.pod.uid"], uid);
        assert_eq!(r["k8s.container.name"], "app");
        let restarts = if n < 5 { "0" } else { "1" };
        assert_eq!(r["k8s.container.restart_count"], restarts);
        assert!(
            r.get("container.id").is_none(),
            "the pods tree carries no container ID"
        );
    }
}

/// Every line piece in `outrigger buffer dump`'s output for `data`, with how often: `tok-<n>`
/// (a whole line, or a `P` piece) as `n`, its `F` piece `load <n>` as `n + 1_000_000`.
fn dumped(data: &Path) -> HashMap<usize, usize> {
    let out = std::process::Command::new(crate::harness::binary::bin())
        .args(["buffer", "dump", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let mut seen = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("dump writes JSON lines");
        let msg = v["record"]["log"].as_str().unwrap_or_default();
        let n = if let Some(rest) = msg.strip_prefix("tok-") {
            rest.split(' ').next().and_then(|d| d.parse().ok())
        } else {
            msg.strip_prefix("load ")
                .and_then(|d| d.parse::<usize>().ok())
                .map(|n| n + 1_000_000)
        };
        let n = n.unwrap_or_else(|| panic!("not a piece as written: {line}"));
        *seen.entry(n).or_insert(0) += 1;
    }
    seen
}

/// What `write_lines(from, to)` puts in a file, as [`dumped`] counts it.
fn pieces(from: usize, to: usize) -> Vec<usize> {
    (from..to)
        .flat_map(|n| [Some(n), (n % 5 == 0).then_some(n + 1_000_000)])
        .flatten()
        .collect()
}

#[test]
fn with_the_disk_buffer_offsets_commit_with_lines_so_kills_read_no_line_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pods: Vec<_> = (0..3)
        .map(|i| d.join(format!("pods/shop_web-{i}_u{i}")))
        .collect();
    for p in &pods {
        std::fs::create_dir_all(p).unwrap();
    }
    // The checkpoint file is saved only at a clean stop: after a kill the offsets are only
    // in the log. The sink takes one event a second, so the log keeps everything.
    let cfg = |sink: &str| {
        format!(
            "[global]\nadmin_address = \"127.0.0.1:0\"\ngrace_period_secs = 1\ndata_dir = \"{d}/data\"\n\
             [buffer]\ntype = \"disk\"\nmax_bytes = 67108864\n\
             [sources.probe]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
             [sources.pods]\ntype = \"file\"\ninclude = [\"{d}/pods/*/*.log\"]\n\
             poll_interval_ms = 50\ncheckpoint_interval_ms = 3600000\nread_bytes = 2048\nmax_line_bytes = 4096\n\
             {sink}",
            d = d.display()
        )
    };
    let slow = cfg("[sinks.slow]\ntype = \"blackhole\"\nrate_events_per_sec = 1\n");
    // A writer per pod, 600 lines per round, rotated by rename in round 2; a kill -9 at a
    // different point of each round, while they write.
    let mut written = Vec::new();
    for round in 0..4usize {
        let (child, _, _, _logs) = spawn(&slow, d);
        let mut child = Reaped(child);
        let writers: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let log = p.join("0.log");
                let base = i * 100_000 + round * 1000;
                std::thread::spawn(move || {
                    for k in 0..6 {
                        write_lines(&log, base + k * 100, base + k * 100 + 100);
                        if round == 2 && k == 2 {
                            rotate(&log, &format!("2026120{round}-10000{i}"));
                        }
                        std::thread::sleep(Duration::from_millis(15));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis([40, 150, 90, 260][round]));
        kill9(&mut child.0);
        for w in writers {
            w.join().unwrap();
        }
        for i in 0..3 {
            let base = i * 100_000 + round * 1000;
            written.extend(pieces(base, base + 600));
        }
    }
    // A last start reads what is left, and stops cleanly (the slow sink's drain is cut
    // short: what it has not taken stays in the log).
    let (child, _, _, _logs) = spawn(&slow, d);
    let mut child = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dumped(&d.join("data")).len() < written.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm(&child.0);
    wait_exit(&mut child.0, Duration::from_secs(10));

    let seen = dumped(&d.join("data"));
    let missing: Vec<&usize> = written.iter().filter(|n| !seen.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} pieces not in the log, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let twice: Vec<(&usize, &usize)> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "read twice from their files: {} pieces, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    assert_eq!(seen.len(), written.len(), "nothing but what was written");

    // Now a sink that delivers: every line once, whole (the pieces joined by the sink's
    // reader, per file and stream), through one kill -9 while it delivers. Lines delivered
    // twice are those in flight at that kill.
    let out = d.join("out.jsonl");
    let fast = cfg(&format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        out.display()
    ));
    let lines: usize = written.iter().filter(|n| **n < 1_000_000).count();
    let (child, _, _, _logs) = spawn(&fast, d);
    let mut child = Reaped(child);
    wait_for(&out, 1, Duration::from_secs(30));
    kill9(&mut child.0);
    let (child, _, _, _logs) = spawn(&fast, d);
    let mut child = Reaped(child);
    wait_for(&out, lines, Duration::from_secs(30));
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
    // Counted once it stopped: what is sent again may come after every line has come once.
    let seen = tokens(&out);
    let lost = written
        .iter()
        .filter(|n| **n < 1_000_000 && !seen.contains_key(n))
        .count();
    assert_eq!(lost, 0, "every line delivered");
    let again = seen.values().filter(|c| **c > 1).count();
    println!(
        "file source, disk buffer: {lines} lines over 4 kills, none read twice from its file; \
         {again} delivered twice (delivered after the sink's cursor last moved, before a kill \
         during delivery)"
    );
    assert!(
        seen.values().all(|c| *c <= 2),
        "one kill during delivery sends a line again at most once"
    );

    // A clean stop saved the cursor: a start sends nothing again.
    let before = std::fs::read_to_string(&out).unwrap().lines().count();
    let (child, _, _, _logs) = spawn(&fast, d);
    let mut child = Reaped(child);
    std::thread::sleep(Duration::from_millis(800));
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
    let after = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(after, before, "nothing sent again after a clean stop");
}

/// Files of the process open under `dir`, from `/proc`.
fn open_under(pid: u32, dir: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn more_files_than_may_be_open_are_all_read_idle_ones_closed_and_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    let out = dir.path().join("out.jsonl");
    let cfg = config(dir.path()).replace(
        "read_bytes = 4096\n",
        "read_bytes = 4096\nmax_open_files = 4\n",
    );
    let (child, _, admin, _logs) = spawn(&cfg, dir.path());
    let mut child = Reaped(child);
    let file = |i: usize| pods.join(format!("p{i}/0.log"));
    for i in 0..12 {
        std::fs::create_dir_all(file(i).parent().unwrap()).unwrap();
        write_lines(&file(i), i * 1000, i * 1000 + 10);
    }
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokens(&out).len() < 120 && Instant::now() < deadline {
        most = most.max(open_under(child.0.id(), &pods));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every file grows again: each is opened again where it was closed.
    for i in 0..12 {
        write_lines(&file(i), i * 1000 + 10, i * 1000 + 20);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokens(&out).len() < 240 && Instant::now() < deadline {
        most = most.max(open_under(child.0.id(), &pods));
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = crate::harness::binary::http_get(&admin, "/metrics");
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(10)), Some(0));
    let seen = tokens(&out);
    let missing: Vec<usize> = (0..12)
        .flat_map(|i| i * 1000..i * 1000 + 20)
        .filter(|n| !seen.contains_key(n))
        .collect();
    assert!(missing.is_empty(), "lost {missing:?}");
    assert!(seen.values().all(|c| *c == 1), "none read twice");
    // A read runs on a blocking thread, with its file open: one more than the bound at most.
    assert!(most <= 5, "{most} files open, max_open_files = 4");
    let closed = crate::harness::metric_value(
        &metrics,
        "outrigger_source_file_events_total{component=\"pods\",reason=\"closed_idle\"}",
    );
    assert!(closed >= 16.0, "closed {closed} times");
}

#[test]
fn a_chatty_file_among_a_thousand_does_not_hold_the_others_up() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods");
    let out = dir.path().join("out.jsonl");
    let file = |i: usize| pods.join(format!("p{i}/0.log"));
    for i in 0..1000 {
        std::fs::create_dir_all(file(i).parent().unwrap()).unwrap();
    }
    // A backlog of 100,000 lines in one file; one line in each of the 999 others.
    const CHATTY: usize = 100_000;
    write_lines(&file(0), 1_000_000, 1_000_000 + CHATTY);
    for i in 1..1000 {
        write_lines(&file(i), i, i + 1);
    }
    let (child, _, _, _logs) = spawn(&config(dir.path()), dir.path());
    let mut child = Reaped(child);
    let quiet = |seen: &HashMap<usize, usize>, from: usize| {
        (1..1000).filter(|i| seen.contains_key(&(from + i))).count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while quiet(&tokens(&out), 0) < 999 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // While the backlog is read, each quiet file gets another line: they come out within
    // a few polls, long before the backlog is through.
    for i in 1..1000 {
        write_lines(&file(i), 5000 + i, 5000 + i + 1);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = tokens(&out);
    while quiet(&seen, 5000) < 999 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        seen = tokens(&out);
    }
    let chatty_then = seen.keys().filter(|n| **n >= 1_000_000).count();
    let seen = wait_for(&out, CHATTY + 2 * 999, Duration::from_secs(120));
    sigterm(&child.0);
    assert_eq!(wait_exit(&mut child.0, Duration::from_secs(20)), Some(0));
    assert_eq!(seen.len(), CHATTY + 2 * 999, "every line");
    println!(
        "fairness: the 999 quiet files' second lines were out with {chatty_then} of the \
         chatty file's {CHATTY} lines"
    );
    assert!(
        chatty_then < CHATTY,
        "the quiet files waited for the whole backlog"
    );
}
