//! Parsing and enrichment end to end: what the sinks write for JSON and text lines, split
//! lines that never finish, stack traces, Kubernetes tags and static attributes.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::harness::{Outrigger, wire};

fn docker(log: &str) -> Vec<(&'static str, String)> {
    vec![
        ("container_id", "f".repeat(64)),
        ("container_name", "/api".into()),
        ("source", "stderr".into()),
        ("log", log.into()),
    ]
}

/// Sends `logs` as Docker records; the connection is returned, since held lines would
/// flush when it closes.
async fn send(o: &Outrigger, tag: &str, logs: &[&str]) -> tokio::net::TcpStream {
    let mut s = o.connect().await;
    for log in logs {
        let rec = docker(log);
        let rec: Vec<(&str, &str)> = rec.iter().map(|(k, v)| (*k, v.as_str())).collect();
        s.write_all(&wire::message(tag, 1_700_000_000, &rec, None))
            .await
            .unwrap();
    }
    s.flush().await.unwrap();
    s
}

const LINE: &str = r#"{"level":"warn","msg":"slow query","ms":1200,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#;

#[tokio::test]
async fn json_fields_merge_into_the_record_by_default() {
    let o = Outrigger::start("").await;
    let _s = send(
        &o,
        "docker.api",
        &[
            LINE,
            "plain ERROR with trace_id=0af7651916cd43dd8448eb211c80319c",
        ],
    )
    .await;
    let lines = o.wait_lines(2).await;
    let j = &lines[0];
    assert_eq!(j["record"]["msg"], "slow query");
    assert_eq!(j["record"]["ms"], 1200);
    assert!(
        j["record"].get("log").is_none(),
        "the parsed line is not kept by default"
    );
    assert_eq!(j["severity"], "warn");
    assert_eq!(j["severity_number"], 13);
    assert_eq!(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(j["resource"]["container.id"], "f".repeat(64));
    assert_eq!(j["resource"]["container.name"], "api");
    assert_eq!(j["resource"]["log.iostream"], "stderr");
    let t = &lines[1];
    assert_eq!(
        t["record"]["log"],
        "plain ERROR with trace_id=0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(t["severity_number"], 17);
}

#[tokio::test]
async fn nested_merge_and_kept_line() {
    let o = Outrigger::start_with(
        "",
        "[enrich]\nmerge = \"nested\"\nnest_key = \"app\"\nkeep_line = true",
    )
    .await;
    let _s = send(&o, "docker.api", &[LINE]).await;
    let l = &o.wait_lines(1).await[0];
    assert_eq!(l["record"]["app"]["msg"], "slow query");
    assert_eq!(l["record"]["log"], LINE);
}

#[tokio::test]
async fn enrichment_can_be_turned_off() {
    let o = Outrigger::start_with("", "[enrich]\nenabled = false").await;
    let _s = send(&o, "docker.api", &[LINE]).await;
    let l = &o.wait_lines(1).await[0];
    assert_eq!(l["record"]["log"], LINE);
    assert_eq!(l["record"]["container_name"], "/api");
    assert!(l.get("trace_id").is_none() && l.get("resource").is_none());
}

#[tokio::test]
async fn an_unfinished_split_line_is_emitted_marked_after_the_timeout() {
    let o = Outrigger::start_with("", "[enrich.partial]\ntimeout_ms = 200").await;
    let mut s = o.connect().await;
    let mut rec = docker("first half of a long line ");
    rec.extend([
        ("partial_message", "true".to_string()),
        ("partial_id", "a".repeat(64)),
        ("partial_ordinal", "1".into()),
        ("partial_last", "false".into()),
    ]);
    let rec: Vec<(&str, &str)> = rec.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.write_all(&wire::message("docker.api", 1_700_000_000, &rec, None))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        o.lines().is_empty(),
        "held while the line may still complete"
    );
    let l = &o.wait_lines(1).await[0];
    assert_eq!(l["incomplete"], true);
    assert_eq!(l["record"]["log"], "first half of a long line ");
    assert!(l["record"].get("partial_id").is_none());
    assert_eq!(
        o.metric(r#"outrigger_enrich_partial_lines_total{component="in",outcome="timeout"}"#),
        1.0
    );
}

#[tokio::test]
async fn stack_traces_are_joined_when_enabled() {
    let o = Outrigger::start_with("", "[enrich.multiline]\nenabled = true\ntimeout_ms = 300").await;
    let _s = send(
        &o,
        "docker.api",
        &[
            "2024-05-01 10:00:00 ERROR request failed",
            "java.lang.IllegalStateException: boom",
            "\tat com.example.App.run(App.java:10)",
            "\tat com.example.App.main(App.java:5)",
            "Caused by: java.io.IOException: disk",
            "\t... 2 more",
            "2024-05-01 10:00:01 INFO recovered",
        ],
    )
    .await;
    let lines = o.wait_lines(3).await;
    let logs: Vec<&str> = lines
        .iter()
        .map(|l| l["record"]["log"].as_str().unwrap())
        .collect();
    assert_eq!(logs.len(), 3, "{logs:?}");
    assert_eq!(logs[0], "2024-05-01 10:00:00 ERROR request failed");
    assert!(logs[1].starts_with("java.lang.IllegalStateException: boom\n\tat com.example.App.run"));
    assert_eq!(logs[1].lines().count(), 5);
    assert_eq!(
        logs[2], "2024-05-01 10:00:01 INFO recovered",
        "the last line leaves after the timeout"
    );
    assert_eq!(
        o.metric(r#"outrigger_enrich_multiline_total{component="in"}"#),
        1.0
    );
}

#[tokio::test]
async fn kubernetes_tags_and_static_resource() {
    let o = Outrigger::start_with(
        "",
        "[enrich.resource]\n\"k8s.node.name\" = \"node-7\"\n\"k8s.cluster.name\" = \"prod\"",
    )
    .await;
    let id = "b".repeat(64);
    let tag = format!("kube.var.log.containers.web-5d8f_shop_nginx-{id}.log");
    let mut s = o.connect().await;
    s.write_all(&wire::message(
        &tag,
        1,
        &[("log", "GET / 200"), ("stream", "stdout")],
        None,
    ))
    .await
    .unwrap();
    let l = &o.wait_lines(1).await[0];
    let r = &l["resource"];
    assert_eq!(r["k8s.pod.name"], "web-5d8f");
    assert_eq!(r["k8s.namespace.name"], "shop");
    assert_eq!(r["k8s.container.name"], "nginx");
    assert_eq!(r["container.id"], id);
    assert_eq!(r["k8s.node.name"], "node-7");
    assert_eq!(r["k8s.cluster.name"], "prod");
}
