//! `outrigger health`, the built binary, against a real admin listener and against listeners
//! that must make it fail: nothing there, a 503, a peer that accepts and never answers.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::backend::{Backend, free_addr};
use crate::clients::run_blocking;
use crate::harness::Outrigger;

/// An Outrigger with its admin listener on a free loopback port.
async fn with_admin() -> (Outrigger, std::net::SocketAddr) {
    let o = Outrigger::with_config(
        "[global]\nadmin_address = \"127.0.0.1:0\"\n\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\n\
         [sinks.out]\ntype = \"file\"\npath = \"{out}\"\n",
    )
    .await;
    let admin = o.running.as_ref().unwrap().admin.expect("admin enabled");
    (o, admin)
}

/// Runs `outrigger health <args>` (20 s at most).
async fn health(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outrigger"));
    cmd.arg("health").args(args).env_remove("OUTRIGGER_CONFIG");
    run_blocking(cmd, Duration::from_secs(20)).await
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_and_live_exit_zero() {
    let (mut o, admin) = with_admin().await;
    for args in [
        vec!["--url".to_string(), format!("http://{admin}/ready")],
        vec!["--address".into(), admin.to_string()],
        vec![
            "--address".into(),
            admin.to_string(),
            "--path".into(),
            "/live".into(),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = health(&args).await;
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains(" 200 "), "{args:?} printed {stdout:?}");
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    }
    o.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn address_comes_from_the_config_file() {
    let (mut o, admin) = with_admin().await;
    let path = o.dir.path().join("probe.toml");
    let config = |admin: &str| {
        format!(
            "[global]\nadmin_address = \"{admin}\"\n\n\
             [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:24224\"\n\n\
             [sinks.out]\ntype = \"blackhole\"\n"
        )
    };
    std::fs::write(&path, config(&admin.to_string())).unwrap();
    let out = health(&["--config", path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(text(&out).0.contains(&format!("http://{admin}/ready")));

    // The file, not the built-in default, decides: pointed elsewhere, the probe fails there.
    let elsewhere = free_addr().await;
    std::fs::write(&path, config(&elsewhere.to_string())).unwrap();
    let out = health(&["--config", path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(
        text(&out).1.contains(&elsewhere.to_string()),
        "{:?}",
        text(&out)
    );

    std::fs::write(
        &path,
        config(&admin.to_string()).replace("[global]\n", "[global]\nadmin_enabled = false\n"),
    )
    .unwrap();
    let out = health(&["--config", path.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("disabled"), "{:?}", text(&out));
    o.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_listening_exits_one() {
    let addr = free_addr().await;
    let out = health(&["--address", &addr.to_string()]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout:?}");
    assert!(stderr.contains("cannot connect"), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unavailable_exits_one() {
    let backend = Backend::start_on("127.0.0.1:0".parse().unwrap(), 503, vec![]).await;
    let out = health(&["--url", &format!("{}/ready", backend.url())]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("503"), "{stderr:?}");
    // It asked what it was told to, once.
    let received = backend.state.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_listener_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts, reads the request, never answers.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let started = Instant::now();
    let out = health(&["--address", &addr.to_string(), "--timeout-ms", "500"]).await;
    let took = started.elapsed();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("no answer within"), "{stderr:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    holder.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn not_http_exits_one() {
    let out = health(&["--url", "https://127.0.0.1:2020/ready"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("invalid URL"), "{:?}", text(&out));
}
