//! Bad input: each case gets a clear outcome (connection closed, or the bad part skipped and
//! not acknowledged), a metric by reason, and never disturbs another connection.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::{Outrigger, ack_bytes, closed_by_peer, read_some, send_and_read_ack, wire};

const WAIT: Duration = Duration::from_secs(5);

fn errors(reason: &str) -> String {
    format!("outrigger_source_connection_errors_total{{component=\"in\",reason=\"{reason}\"}}")
}

fn rejected(reason: &str) -> String {
    format!("outrigger_source_rejected_total{{component=\"in\",reason=\"{reason}\"}}")
}

/// A healthy client next to the bad one must still get its events through and acked.
async fn healthy_client_still_works(o: &Outrigger, bystander: &mut TcpStream, n: usize) {
    let chunk = format!("healthy-{n}");
    let ack = send_and_read_ack(
        bystander,
        &wire::message("ok", 1, &[("n", &n.to_string())], Some(&chunk)),
        WAIT,
    )
    .await;
    assert_eq!(
        ack,
        Some(ack_bytes(&chunk)),
        "bystander connection must keep working"
    );
    let lines = o.wait_lines(n).await;
    assert!(
        lines
            .iter()
            .any(|l| l["record"]["n"] == n.to_string().as_str())
    );
}

#[tokio::test]
async fn huge_declared_length_closes_without_waiting_for_data() {
    let o = Outrigger::start("max_frame_bytes = 1048576").await;
    let mut bystander = o.connect().await;
    let mut s = o.connect().await;
    // ["t", str32 claiming 4 GiB...
    s.write_all(&[0x92, 0xa1, b't', 0xdb, 0xff, 0xff, 0xff, 0xff, b'x'])
        .await
        .unwrap();
    assert!(
        closed_by_peer(&mut s, WAIT).await,
        "closed at once, not after 4 GiB"
    );
    assert_eq!(o.wait_metric(&errors("frame_too_large"), 1.0).await, 1.0);
    // An array claiming 4 billion entries, and a map claiming as many pairs.
    for lie in [
        [0xdd, 0xff, 0xff, 0xff, 0xff],
        [0xdf, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut s = o.connect().await;
        s.write_all(&lie).await.unwrap();
        assert!(closed_by_peer(&mut s, WAIT).await);
    }
    assert_eq!(o.wait_metric(&errors("frame_too_large"), 3.0).await, 3.0);
    healthy_client_still_works(&o, &mut bystander, 1).await;
}

#[tokio::test]
async fn request_over_max_frame_bytes_is_refused_and_not_acked() {
    let o = Outrigger::start("max_frame_bytes = 4096").await;
    let mut bystander = o.connect().await;
    let mut s = o.connect().await;
    let big = "x".repeat(8192);
    let _ = s
        .write_all(&wire::message("t", 1, &[("log", &big)], Some("big")))
        .await;
    assert!(closed_by_peer(&mut s, WAIT).await);
    assert_eq!(o.wait_metric(&errors("frame_too_large"), 1.0).await, 1.0);
    healthy_client_still_works(&o, &mut bystander, 1).await;
}

#[tokio::test]
async fn deep_nesting_is_refused() {
    let o = Outrigger::start("max_depth = 16").await;
    let mut bystander = o.connect().await;
    let mut s = o.connect().await;
    // ["t", 1, {"a": [[[[...]]]]}] nested 1000 deep
    let mut frame = vec![0x93, 0xa1, b't', 0x01, 0x81, 0xa1, b'a'];
    frame.extend(std::iter::repeat_n(0x91, 1000));
    frame.push(0xc0);
    s.write_all(&frame).await.unwrap();
    assert!(closed_by_peer(&mut s, WAIT).await);
    assert_eq!(o.wait_metric(&errors("too_deep"), 1.0).await, 1.0);
    healthy_client_still_works(&o, &mut bystander, 1).await;
}

#[tokio::test]
async fn truncated_request_then_disconnect_is_counted_not_delivered() {
    let o = Outrigger::start("").await;
    let mut bystander = o.connect().await;
    let mut s = o.connect().await;
    let frame = wire::message("t", 1, &[("log", "half")], Some("h"));
    s.write_all(&frame[..frame.len() / 2]).await.unwrap();
    drop(s);
    assert_eq!(o.wait_metric(&errors("truncated"), 1.0).await, 1.0);
    healthy_client_still_works(&o, &mut bystander, 1).await;
    assert_eq!(o.lines().len(), 1, "the half request was not delivered");
}

#[tokio::test]
async fn malformed_msgpack_closes_the_connection() {
    let o = Outrigger::start("").await;
    let mut bystander = o.connect().await;
    let mut s = o.connect().await;
    // 0xc1 is never valid MessagePack.
    s.write_all(&[0x93, 0xa1, b't', 0xc1]).await.unwrap();
    assert!(closed_by_peer(&mut s, WAIT).await);
    assert_eq!(o.wait_metric(&errors("malformed"), 1.0).await, 1.0);
    // JSON sent to the forward port (Fluentd's JSON transport is not supported).
    let mut s = o.connect().await;
    s.write_all(b"[\"t\", 1, {\"a\": 1}]\n").await.unwrap();
    assert!(closed_by_peer(&mut s, WAIT).await);
    assert_eq!(o.wait_metric(&errors("not_forward"), 1.0).await, 1.0);
    healthy_client_still_works(&o, &mut bystander, 1).await;
}

#[tokio::test]
async fn wrong_types_are_skipped_without_ack_and_the_connection_continues() {
    let o = Outrigger::start("").await;
    let mut s = o.connect().await;
    // Tag not a string: [1, 1, {}, {"chunk": "a"}]
    let mut bad_tag = vec![0x94, 0x01, 0x01, 0x80];
    wire::options(&mut bad_tag, Some("a"), &[]);
    // Record not a map: ["t", 1, [1], {"chunk": "b"}]
    let mut bad_record = vec![0x94, 0xa1, b't', 0x01, 0x91, 0x01];
    wire::options(&mut bad_record, Some("b"), &[]);
    // Time a string in a Forward entry: ["t", [["now", {}]], {"chunk": "c"}]
    let mut bad_time = vec![0x93, 0xa1, b't', 0x91, 0x92, 0xa3, b'n', b'o', b'w', 0x80];
    wire::options(&mut bad_time, Some("c"), &[]);
    for frame in [bad_tag, bad_record, bad_time] {
        assert_eq!(
            send_and_read_ack(&mut s, &frame, Duration::from_millis(300)).await,
            None,
            "no ack for rejected input"
        );
    }
    for reason in ["invalid_tag", "invalid_record", "invalid_time"] {
        assert_eq!(o.wait_metric(&rejected(reason), 1.0).await, 1.0, "{reason}");
    }
    // The same connection still works.
    healthy_client_still_works(&o, &mut s, 1).await;
}

#[tokio::test]
async fn invalid_utf8_is_delivered_with_replacement_characters() {
    let o = Outrigger::start("").await;
    let mut s = o.connect().await;
    // ["t", 1, {"log": "ok\xff\xfe"}, {"chunk": "u"}] with the raw bytes in a str.
    let mut frame = vec![
        0x94, 0xa1, b't', 0x01, 0x81, 0xa3, b'l', b'o', b'g', 0xa4, b'o', b'k', 0xff, 0xfe,
    ];
    wire::options(&mut frame, Some("u"), &[]);
    assert_eq!(
        send_and_read_ack(&mut s, &frame, WAIT).await,
        Some(ack_bytes("u"))
    );
    assert_eq!(
        o.wait_lines(1).await[0]["record"]["log"],
        "ok\u{fffd}\u{fffd}"
    );
}

#[tokio::test]
async fn oversized_record_and_bad_compression_are_skipped() {
    let o = Outrigger::start("max_record_bytes = 1024\nmax_decompressed_bytes = 65536").await;
    let mut s = o.connect().await;
    let big = "y".repeat(2000);
    let frame = wire::message("t", 1, &[("log", &big)], Some("r"));
    assert_eq!(
        send_and_read_ack(&mut s, &frame, Duration::from_millis(300)).await,
        None
    );
    assert_eq!(o.wait_metric(&rejected("record_too_large"), 1.0).await, 1.0);

    // Marked gzip, but not gzip.
    let mut frame = vec![0x93, 0xa1, b't'];
    rmp::encode::write_bin(&mut frame, b"definitely not gzip").unwrap();
    wire::options(&mut frame, Some("g"), &[("compressed", "gzip")]);
    assert_eq!(
        send_and_read_ack(&mut s, &frame, Duration::from_millis(300)).await,
        None
    );
    assert_eq!(o.wait_metric(&rejected("bad_compression"), 1.0).await, 1.0);

    // A gzip bomb: 16 MiB of zeros in well under 1 MiB.
    let bomb = wire::gzip_members(&vec![0u8; 16 << 20]);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let mut frame = vec![0x93, 0xa1, b't'];
    rmp::encode::write_bin(&mut frame, &bomb).unwrap();
    wire::options(&mut frame, Some("b"), &[("compressed", "gzip")]);
    assert_eq!(
        send_and_read_ack(&mut s, &frame, Duration::from_millis(500)).await,
        None
    );
    assert_eq!(
        o.wait_metric(&rejected("decompressed_too_large"), 1.0)
            .await,
        1.0
    );

    healthy_client_still_works(&o, &mut s, 1).await;
}

#[tokio::test]
async fn slow_client_is_cut_off_by_the_frame_timeout() {
    let o = Outrigger::start("frame_timeout_secs = 1").await;
    let mut bystander = o.connect().await;
    let mut s = o.connect().await;
    let frame = wire::message("t", 1, &[("log", "slowly")], Some("s"));
    // One byte every 300 ms: the request would take seconds to arrive.
    let mut closed = false;
    for b in &frame {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        if closed_by_peer(&mut s, Duration::from_millis(300)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow client must be disconnected");
    assert_eq!(o.wait_metric(&errors("frame_timeout"), 1.0).await, 1.0);
    healthy_client_still_works(&o, &mut bystander, 1).await;
}

#[tokio::test]
async fn idle_timeout_when_configured() {
    let o = Outrigger::start("idle_timeout_secs = 1").await;
    let mut s = o.connect().await;
    assert!(closed_by_peer(&mut s, Duration::from_secs(5)).await);
    assert_eq!(o.wait_metric(&errors("idle_timeout"), 1.0).await, 1.0);
}

#[tokio::test]
async fn thousands_of_idle_connections_and_the_connection_limit() {
    let o = Outrigger::start("max_connections = 1500").await;
    let mut idle = Vec::new();
    for _ in 0..1500 {
        idle.push(o.connect().await);
    }
    o.wait_metric(
        "outrigger_source_open_connections{component=\"in\"}",
        1500.0,
    )
    .await;
    // One more is refused at once and counted.
    let mut extra = o.connect().await;
    assert!(closed_by_peer(&mut extra, WAIT).await);
    assert_eq!(
        o.wait_metric(&errors("too_many_connections"), 1.0).await,
        1.0
    );
    // Idle connections are not closed by default, and each still works.
    let mut first = idle.swap_remove(0);
    healthy_client_still_works(&o, &mut first, 1).await;
    // Closing some frees their slots.
    idle.truncate(1000);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if o.metric("outrigger_source_open_connections{component=\"in\"}") <= 1001.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots were not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut late = o.connect().await;
    assert_eq!(read_some(&mut late, Duration::from_millis(100)).await, None);
    healthy_client_still_works(&o, &mut late, 2).await;
}
