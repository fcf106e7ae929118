//! The forward protocol over real sockets: every mode, acks, the handshake, TLS, Unix sockets,
//! heartbeats and routing.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};

use crate::harness::{Outrigger, ack_bytes, read_some, send_and_read_ack, wire};

const WAIT: Duration = Duration::from_secs(5);

fn docker_record(i: usize) -> Vec<(&'static str, String)> {
    vec![
        ("container_id", "a".repeat(64)),
        ("container_name", "/web-1".into()),
        ("source", "stdout".into()),
        ("log", format!("{{\"level\":\"info\",\"n\":{i}}}")),
    ]
}

fn refs<'a>(r: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    r.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn all_four_modes_arrive_and_are_acked() {
    let o = Outrigger::start("").await;
    let mut s = o.connect().await;
    let recs: Vec<_> = (0..3).map(docker_record).collect();
    let recs: Vec<Vec<_>> = recs.iter().map(|r| refs(r)).collect();

    let ack = send_and_read_ack(
        &mut s,
        &wire::message("m", 1_700_000_000, &recs[0], Some("c1")),
        WAIT,
    )
    .await;
    assert_eq!(ack, Some(ack_bytes("c1")));
    let ack = send_and_read_ack(&mut s, &wire::forward("f", &recs, Some("c2")), WAIT).await;
    assert_eq!(ack, Some(ack_bytes("c2")));
    let ack = send_and_read_ack(&mut s, &wire::packed("p", &recs, Some("c3"), false), WAIT).await;
    assert_eq!(ack, Some(ack_bytes("c3")));
    let ack = send_and_read_ack(&mut s, &wire::packed("z", &recs, Some("c4"), true), WAIT).await;
    assert_eq!(ack, Some(ack_bytes("c4")));

    let lines = o.wait_lines(10).await;
    assert_eq!(lines.len(), 10);
    let tags: Vec<_> = lines.iter().map(|l| l["tag"].as_str().unwrap()).collect();
    assert_eq!(tags, ["m", "f", "f", "f", "p", "p", "p", "z", "z", "z"]);
    assert_eq!(lines[0]["time"], "2023-11-14T22:13:20.000000000Z");
    assert_eq!(lines[2]["time"], "2023-11-14T22:13:20.000000001Z");
    // The JSON line was parsed into the record; Docker's fields became resource attributes.
    assert_eq!(lines[9]["record"]["n"], 2);
    assert_eq!(lines[9]["record"]["level"], "info");
    assert_eq!(lines[9]["severity_number"], 9);
    assert_eq!(lines[9]["resource"]["container.name"], "web-1");
    assert_eq!(lines[9]["resource"]["log.iostream"], "stdout");
    assert_eq!(
        o.metric("outrigger_source_acks_total{component=\"in\"}"),
        4.0
    );
}

#[tokio::test]
async fn pipelined_requests_in_one_write_are_all_acked() {
    let o = Outrigger::start("").await;
    let mut s = o.connect().await;
    let mut all = Vec::new();
    let mut expected = Vec::new();
    for i in 0..50 {
        let chunk = format!("chunk-{i}");
        all.extend(wire::message(
            "t",
            1_700_000_000,
            &[("n", &i.to_string())],
            Some(&chunk),
        ));
        expected.extend(ack_bytes(&chunk));
    }
    s.write_all(&all).await.unwrap();
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, expected, "one ack per request, in order");
    assert_eq!(o.wait_lines(50).await.len(), 50);
}

#[tokio::test]
async fn requests_split_across_many_writes_are_reassembled() {
    let o = Outrigger::start("").await;
    let mut s = o.connect().await;
    let recs: Vec<_> = (0..20).map(docker_record).collect();
    let recs: Vec<Vec<_>> = recs.iter().map(|r| refs(r)).collect();
    let frame = wire::forward("split", &recs, Some("x"));
    for piece in frame.chunks(7) {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(read_some(&mut s, WAIT).await, Some(ack_bytes("x")));
    assert_eq!(o.wait_lines(20).await.len(), 20);
}

#[tokio::test]
async fn heartbeats_nil_and_udp_are_answered_or_ignored() {
    let o = Outrigger::start("").await;
    // A nil on the stream is a heartbeat, not an event and not an error.
    let mut s = o.connect().await;
    s.write_all(&[0xc0, 0xc0]).await.unwrap();
    let ack = send_and_read_ack(
        &mut s,
        &wire::message("t", 1, &[("a", "b")], Some("k")),
        WAIT,
    )
    .await;
    assert_eq!(ack, Some(ack_bytes("k")));
    // UDP heartbeat on the same port gets a single zero byte back.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&[0], o.addr()).await.unwrap();
    let mut buf = [9u8; 8];
    let (n, _) = tokio::time::timeout(WAIT, udp.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], &[0]);
    // Fluentd's transport heartbeat: connect and close without data.
    drop(TcpStream::connect(o.addr()).await.unwrap());
    assert_eq!(o.wait_lines(1).await.len(), 1);
}

#[tokio::test]
async fn unix_socket_listener() {
    let o = Outrigger::start("unix_path = \"{dir}/forward.sock\"\nunix_mode = \"0600\"").await;
    let path = o.dir.path().join("forward.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let mut s = UnixStream::connect(&path).await.unwrap();
    s.write_all(&wire::message(
        "u",
        1_700_000_000,
        &[("log", "over unix")],
        Some("u1"),
    ))
    .await
    .unwrap();
    let mut buf = vec![0u8; ack_bytes("u1").len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, ack_bytes("u1"));
    assert_eq!(o.wait_lines(1).await[0]["record"]["log"], "over unix");
}

#[tokio::test]
async fn stale_unix_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // Leave a socket file behind, as a crashed process would.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let config = format!("unix_path = \"{}\"", path.display());
    let o = Outrigger::start(&config).await;
    let mut s = UnixStream::connect(&path).await.unwrap();
    s.write_all(&wire::message("u", 1, &[("a", "b")], None))
        .await
        .unwrap();
    assert_eq!(o.wait_lines(1).await.len(), 1);
}

#[tokio::test]
async fn ipv6_listener() {
    let config = "[sources.in]\ntype = \"forward\"\naddress = \"[::1]:0\"\n[sinks.out]\ntype = \"file\"\npath = \"{out}\"\n[global]\nadmin_enabled = false\n";
    let o = Outrigger::with_config(config).await;
    assert!(o.addr().is_ipv6());
    let mut s = TcpStream::connect(o.addr()).await.unwrap();
    let ack = send_and_read_ack(
        &mut s,
        &wire::message("v6", 1, &[("a", "b")], Some("6")),
        WAIT,
    )
    .await;
    assert_eq!(ack, Some(ack_bytes("6")));
}

#[tokio::test]
async fn source_address_and_tag_prefix() {
    let o = Outrigger::start("tag_prefix = \"docker\"\nsource_address_key = \"source_address\"\nsource_hostname_key = \"source_host\"").await;
    let mut s = o.connect().await;
    s.write_all(&wire::message("web", 1, &[("log", "x")], None))
        .await
        .unwrap();
    let line = &o.wait_lines(1).await[0];
    assert_eq!(line["tag"], "docker.web");
    assert_eq!(line["record"]["source_address"], "127.0.0.1");
    assert!(
        line["record"]["source_host"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
}

#[tokio::test]
async fn routing_by_tag_pattern() {
    let config = "[global]\nadmin_enabled = false\n\
        [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
        [sinks.docker]\ntype = \"file\"\npath = \"{dir}/docker.jsonl\"\nmatch = \"docker.*\"\n\
        [sinks.apps]\ntype = \"file\"\npath = \"{out}\"\nmatch = [\"{app,svc}.**\"]\n";
    let mut o = Outrigger::with_config(config).await;
    let mut s = o.connect().await;
    for tag in ["docker.web", "app", "svc.a.b", "docker.a.b", "other"] {
        s.write_all(&wire::message(tag, 1, &[("t", tag)], None))
            .await
            .unwrap();
    }
    let apps = o.wait_lines(2).await;
    let tags: Vec<_> = apps
        .iter()
        .map(|l| l["tag"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tags, ["app", "svc.a.b"]);
    o.wait_metric("outrigger_unrouted_events_total{component=\"in\"}", 2.0)
        .await;
    o.stop().await.unwrap();
    let docker = std::fs::read_to_string(o.dir.path().join("docker.jsonl")).unwrap();
    assert_eq!(docker.lines().count(), 1);
    assert!(docker.contains("\"docker.web\""));
}

/// The handshake as Fluentd's out_forward performs it.
async fn handshake(s: &mut TcpStream, key: &str, user: Option<(&str, &str)>) -> Vec<u8> {
    let helo = read_some(s, WAIT).await.expect("HELO");
    let mut c = outrigger::msgpack::Cursor::new(&helo);
    c.read().unwrap();
    assert_eq!(c.bytes().unwrap().unwrap(), b"HELO");
    c.read().unwrap();
    let mut nonce = Vec::new();
    let mut auth = Vec::new();
    for _ in 0..3 {
        let k = c.bytes().unwrap().unwrap().to_vec();
        match &k[..] {
            b"nonce" => nonce = c.bytes().unwrap().unwrap().to_vec(),
            b"auth" => auth = c.bytes().unwrap().unwrap().to_vec(),
            _ => {
                c.skip().unwrap();
            }
        }
    }
    use outrigger::source::forward::handshake::digest;
    let salt = b"0123456789abcdef0123456789abcdef";
    let d = digest(&[salt, b"client-host", &nonce, key.as_bytes()]);
    let (u, pw) = match user {
        Some((u, p)) => (u.to_string(), digest(&[&auth, u.as_bytes(), p.as_bytes()])),
        None => (String::new(), String::new()),
    };
    let mut ping = Vec::new();
    rmp::encode::write_array_len(&mut ping, 6).unwrap();
    for part in [
        "PING",
        "client-host",
        std::str::from_utf8(salt).unwrap(),
        &d,
        &u,
        &pw,
    ] {
        rmp::encode::write_str(&mut ping, part).unwrap();
    }
    s.write_all(&ping).await.unwrap();
    let pong = read_some(s, WAIT).await.expect("PONG");
    let expected = digest(&[salt, b"outrigger", &nonce, key.as_bytes()]);
    if pong
        .windows(expected.len())
        .any(|w| w == expected.as_bytes())
    {
        assert!(pong.contains(&0xc3), "a PONG proving the key says true");
    }
    pong
}

#[tokio::test]
async fn shared_key_handshake_accepts_and_refuses() {
    let o = Outrigger::start(
        "[sources.in.security]\nshared_key = \"s3cret\"\nusers = [{ username = \"alice\", password = \"pw\" }]",
    )
    .await;
    // Right key and user: PONG true, then events flow.
    let mut s = o.connect().await;
    let pong = handshake(&mut s, "s3cret", Some(("alice", "pw"))).await;
    assert_eq!(pong[..6], [0x95, 0xa4, b'P', b'O', b'N', b'G']);
    assert_eq!(pong[6], 0xc3, "auth_result true");
    let ack = send_and_read_ack(
        &mut s,
        &wire::message("t", 1, &[("a", "b")], Some("ok")),
        WAIT,
    )
    .await;
    assert_eq!(ack, Some(ack_bytes("ok")));

    // Wrong key: PONG false with the reason, then closed; nothing it sends is accepted.
    let mut s = o.connect().await;
    let pong = handshake(&mut s, "wrong", Some(("alice", "pw"))).await;
    assert_eq!(pong[6], 0xc2, "auth_result false");
    assert!(pong.windows(19).any(|w| w == b"shared_key mismatch"));
    let _ = s
        .write_all(&wire::message("t", 1, &[("a", "evil")], Some("no")))
        .await;
    assert!(crate::harness::closed_by_peer(&mut s, WAIT).await);

    // Right key, wrong password.
    let mut s = o.connect().await;
    let pong = handshake(&mut s, "s3cret", Some(("alice", "nope"))).await;
    assert!(pong.windows(26).any(|w| w == b"username/password mismatch"));

    assert_eq!(o.wait_lines(1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(o.lines().len(), 1, "refused clients delivered nothing");
    assert_eq!(
        o.metric(
            "outrigger_source_connection_errors_total{component=\"in\",reason=\"handshake_failed\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn tls_listener() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let o = Outrigger::start(&format!(
        "[sources.in.tls]\ncert_file = \"{dir}/config/tls/example.crt\"\nkey_file = \"{dir}/config/tls/example.key\""
    ))
    .await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in
        rustls::pki_types::CertificateDer::pem_file_iter(format!("{dir}/config/tls/example-ca.crt"))
            .unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = o.connect().await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(&wire::message("tls", 1, &[("log", "secret")], Some("t1")))
        .await
        .unwrap();
    let mut buf = vec![0u8; ack_bytes("t1").len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf, ack_bytes("t1"));
    assert_eq!(o.wait_lines(1).await[0]["record"]["log"], "secret");

    // A plaintext client on the TLS port is refused and counted.
    let mut plain = o.connect().await;
    let _ = plain
        .write_all(&wire::message("tls", 1, &[("log", "plain")], None))
        .await;
    assert!(crate::harness::closed_by_peer(&mut plain, WAIT).await);
    o.wait_metric("outrigger_source_connection_errors_total{component=\"in\",reason=\"tls_handshake_failed\"}", 1.0).await;
    assert_eq!(o.lines().len(), 1);
}
