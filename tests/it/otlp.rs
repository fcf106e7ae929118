//! The `otlp` sink against an in-test OTLP collector: a tonic `LogsService` server built on
//! `opentelemetry-proto`'s generated trait, and the HTTP backend of `backend.rs` with the
//! bodies decoded by the same types. Faults are scripted per request. Every test checks that
//! the records delivered (plus those dead-lettered or reported rejected) are the records sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::codec::CompressionEncoding;

use crate::backend::{Backend, Fault, free_addr};
use crate::harness::{Outrigger, wire};

// === the collector ===

/// How the collector answers one request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// This status; with `RetryInfo { retry_delay }` in its details when a delay is given.
    Status(Code, Option<Duration>),
    /// Success with `partial_success { rejected_log_records, error_message }`.
    Partial(i64, &'static str),
    /// Wait, then succeed (the request counts as stored).
    Delay(Duration),
}

/// One request as the collector saw it.
#[derive(Debug, Clone)]
struct Received {
    request: ExportLogsServiceRequest,
    metadata: tonic::metadata::MetadataMap,
    /// Whether it was answered with success (partial or whole).
    ok: bool,
}

#[derive(Debug, Default)]
struct State {
    script: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Received>>,
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl LogsService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        let answer = self.0.script.lock().unwrap().pop_front();
        let record = |ok| {
            self.0.received.lock().unwrap().push(Received {
                request: request.clone(),
                metadata: metadata.clone(),
                ok,
            })
        };
        let partial_success = match answer {
            None => None,
            Some(Answer::Delay(d)) => {
                tokio::time::sleep(d).await;
                None
            }
            Some(Answer::Partial(rejected, message)) => Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message.into(),
            }),
            Some(Answer::Status(code, delay)) => {
                record(false);
                let details = rpc_status(code, delay);
                return Err(tonic::Status::with_details(
                    code,
                    "scripted",
                    details.into(),
                ));
            }
        };
        record(true);
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success,
        }))
    }
}

/// `google.rpc.Status`, `google.protobuf.Any`, `google.rpc.RetryInfo` and
/// `google.protobuf.Duration`, as a server puts them in `grpc-status-details-bin`.
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

fn rpc_status(code: Code, delay: Option<Duration>) -> Vec<u8> {
    let details = delay
        .map(|d| rpc::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: rpc::RetryInfo {
                retry_delay: Some(rpc::Duration {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                }),
            }
            .encode_to_vec(),
        })
        .into_iter()
        .collect();
    rpc::Status {
        code: code as i32,
        message: "scripted".into(),
        details,
    }
    .encode_to_vec()
}

/// A running collector.
pub(crate) struct Collector {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start_on(addr: SocketAddr, script: Vec<Answer>) -> Collector {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            script: Mutex::new(script.into()),
            received: Mutex::new(Vec::new()),
        });
        let service = LogsServiceServer::new(Service(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Collector { addr, state, task }
    }

    pub(crate) async fn start(script: Vec<Answer>) -> Collector {
        Self::start_on("127.0.0.1:0".parse().unwrap(), script).await
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered with success, in order.
    pub(crate) fn accepted(&self) -> Vec<ExportLogsServiceRequest> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.ok)
            .map(|r| r.request.clone())
            .collect()
    }

    fn requests(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }
}

// === helpers ===

/// Outrigger with one `otlp` sink named `out`; `extra` lines go into the sink's table
/// (`flush_interval_ms` is 50 unless `extra` sets it).
pub(crate) async fn outrigger(url: &str, extra: &str) -> Outrigger {
    let flush = if extra.contains("flush_interval_ms") {
        ""
    } else {
        "flush_interval_ms = 50"
    };
    Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ngrace_period_secs = 10\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [enrich.resource]\n\"k8s.node.name\" = \"node-7\"\n\
         [sinks.out]\ntype = \"otlp\"\nendpoint = \"{url}\"\n\
         retry_initial_backoff_ms = 20\nretry_max_backoff_ms = 200\n{flush}\n{extra}\n"
    ))
    .await
}

pub(crate) fn records(reqs: &[ExportLogsServiceRequest]) -> Vec<&LogRecord> {
    reqs.iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .collect()
}

pub(crate) fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn string(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// The ids (attribute `i`) of every record of `reqs`, in order.
fn ids(reqs: &[ExportLogsServiceRequest]) -> Vec<usize> {
    records(reqs)
        .iter()
        .map(|r| match attr(&r.attributes, "i") {
            Some(Value::StringValue(s)) => s.parse().unwrap(),
            other => panic!("attribute i: {other:?}"),
        })
        .collect()
}

/// Waits (20 s at most) until `get` returns at least `n` ids.
async fn wait_ids(get: impl Fn() -> Vec<usize>, n: usize) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = get();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

fn unique(v: Vec<usize>) -> Vec<usize> {
    let mut v = sorted(v);
    v.dedup();
    v
}

/// The ids of the dead-letter file, each checked to carry `reason`.
fn dead_ids(path: &std::path::Path, reason: &str) -> Vec<usize> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["sink"], "out");
            assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
            v["event"]["record"]["i"].as_str().unwrap().parse().unwrap()
        })
        .collect()
}

fn metric(o: &Outrigger, name: &str, reason: Option<&str>) -> f64 {
    match reason {
        Some(r) => o.metric(&format!("{name}{{component=\"out\",reason=\"{r}\"}}")),
        None => o.metric(&format!("{name}{{component=\"out\"}}")),
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Message mode with an EventTime: `[tag, EventTime(secs, nanos), record]`.
fn message_at(tag: &str, secs: u32, nanos: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 3).unwrap();
    rmp::encode::write_str(&mut out, tag).unwrap();
    wire::event_time(&mut out, secs, nanos);
    wire::record(&mut out, fields);
    out
}

const JSON_LINE: &str = r#"{"level":"warn","msg":"slow query","ms":1200,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#;

/// Two Docker containers (a JSON line twice from `api`, a text line from `web`) and one
/// Kubernetes tag, in one write so that they travel in one request.
async fn send_mixed(o: &Outrigger) -> (String, String) {
    let api = "a".repeat(64);
    let web = "c".repeat(64);
    let pod_id = "b".repeat(64);
    let k8s_tag = format!("kube.var.log.containers.web-5d8f_shop_nginx-{pod_id}.log");
    let docker = |id: &str, name: &str, source: &str, log: &str| {
        vec![
            ("container_id", id.to_string()),
            ("container_name", name.to_string()),
            ("source", source.to_string()),
            ("log", log.to_string()),
            ("com.example.team", "payments".to_string()),
        ]
    };
    let events = [
        ("docker.api", docker(&api, "/api", "stderr", JSON_LINE)),
        (
            "docker.web",
            docker(&web, "/web", "stdout", "plain ERROR disk full"),
        ),
        ("docker.api", docker(&api, "/api", "stderr", JSON_LINE)),
        (
            k8s_tag.as_str(),
            vec![
                ("log", "GET / 200".to_string()),
                ("stream", "stdout".to_string()),
            ],
        ),
    ];
    let mut buf = Vec::new();
    for (tag, fields) in &events {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        buf.extend(message_at(tag, 1_700_000_000, 123_456_789, &fields));
    }
    let mut s = o.connect().await;
    s.write_all(&buf).await.unwrap();
    s.flush().await.unwrap();
    (k8s_tag, pod_id)
}

/// Checks the exact records of [`send_mixed`], whatever the transport.
fn check_mixed(req: &ExportLogsServiceRequest, k8s_tag: &str, pod_id: &str, sent_after: u64) {
    let resources: Vec<Vec<(String, Value)>> = req
        .resource_logs
        .iter()
        .map(|rl| {
            rl.resource
                .as_ref()
                .unwrap()
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
                .collect()
        })
        .collect();
    let kv = |k: &str, v: &str| (k.to_string(), string(v));
    assert_eq!(
        resources,
        vec![
            vec![
                kv("container.id", &"a".repeat(64)),
                kv("container.name", "api"),
                kv("k8s.node.name", "node-7"),
            ],
            vec![
                kv("container.id", &"c".repeat(64)),
                kv("container.name", "web"),
                kv("k8s.node.name", "node-7"),
            ],
            vec![
                kv("container.id", pod_id),
                kv("k8s.pod.name", "web-5d8f"),
                kv("k8s.namespace.name", "shop"),
                kv("k8s.container.name", "nginx"),
                kv("k8s.node.name", "node-7"),
            ],
        ],
        "one ResourceLogs per container, in order of first appearance"
    );
    let counts: Vec<usize> = req
        .resource_logs
        .iter()
        .map(|rl| {
            assert_eq!(rl.scope_logs.len(), 1);
            let scope = rl.scope_logs[0].scope.as_ref().unwrap();
            assert_eq!(scope.name, "outrigger");
            assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
            rl.scope_logs[0].log_records.len()
        })
        .collect();
    assert_eq!(counts, [2, 1, 1]);

    let all = records(std::slice::from_ref(req));
    let t = 1_700_000_000_123_456_789;
    let times: Vec<u64> = all.iter().map(|r| r.time_unix_nano).collect();
    assert_eq!(
        times,
        [t, t + 1, t, t],
        "a time that ties with the stream's previous record moves one nanosecond on"
    );
    for r in &all {
        assert!(
            r.observed_time_unix_nano >= sent_after && r.observed_time_unix_nano <= now_nanos(),
            "observed {}",
            r.observed_time_unix_nano
        );
        assert_eq!(r.observed_time_unix_nano, all[0].observed_time_unix_nano);
    }
    let attrs = |r: &LogRecord| -> Vec<(String, Value)> {
        r.attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
            .collect()
    };

    let api = all[0];
    // `body = "message"` (the default): the line's message is the body, its other fields
    // attributes.
    assert_eq!(api.body.as_ref().unwrap().value, Some(string("slow query")));
    assert_eq!(api.severity_number, 13);
    assert_eq!(api.severity_text, "warn");
    assert_eq!(
        api.trace_id,
        hex::decode("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(api.span_id, hex::decode("00f067aa0ba902b7").unwrap());
    assert_eq!(api.flags, 1);
    assert_eq!(
        attrs(api),
        vec![
            kv("log.iostream", "stderr"),
            kv("fluent.tag", "docker.api"),
            kv("level", "warn"),
            ("ms".to_string(), Value::IntValue(1200)),
            kv(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            ),
            kv("com.example.team", "payments"),
        ]
    );
    let mut second = api.clone();
    second.time_unix_nano += 1;
    assert_eq!(
        all[1], &second,
        "the second api record is the same, one nanosecond on"
    );

    let web = all[2];
    assert_eq!(
        web.body.as_ref().unwrap().value,
        Some(string("plain ERROR disk full"))
    );
    assert_eq!(web.severity_number, 17);
    assert_eq!(web.severity_text, "ERROR", "the OTel short name");
    assert!(web.trace_id.is_empty() && web.span_id.is_empty() && web.flags == 0);
    assert_eq!(
        attrs(web),
        vec![
            kv("log.iostream", "stdout"),
            kv("fluent.tag", "docker.web"),
            kv("com.example.team", "payments"),
        ]
    );

    let pod = all[3];
    assert_eq!(pod.body.as_ref().unwrap().value, Some(string("GET / 200")));
    assert_eq!((pod.severity_number, pod.severity_text.as_str()), (0, ""));
    assert_eq!(
        attrs(pod),
        vec![kv("log.iostream", "stdout"), kv("fluent.tag", k8s_tag)]
    );
}

// === gRPC ===

#[tokio::test]
async fn grpc_maps_containers_to_resources_and_lines_to_records() {
    let c = Collector::start(vec![]).await;
    let o = outrigger(
        &c.url(),
        "flush_interval_ms = 300\ncompression = \"gzip\"\nheaders = { \"X-Scope-OrgID\" = \"tenant-1\" }\n\
         auth = { bearer = { token = \"s3cret\" } }",
    )
    .await;
    let sent_after = now_nanos();
    let (k8s_tag, pod_id) = send_mixed(&o).await;
    let got = wait_ids(|| vec![0; records(&c.accepted()).len()], 4).await;
    assert_eq!(got.len(), 4, "delivered = sent");
    let reqs = c.accepted();
    assert_eq!(reqs.len(), 1, "one request");
    check_mixed(&reqs[0], &k8s_tag, &pod_id, sent_after);

    let md = c.state.received.lock().unwrap()[0].metadata.clone();
    assert_eq!(md.get("grpc-encoding").unwrap(), "gzip");
    assert_eq!(md.get("x-scope-orgid").unwrap(), "tenant-1");
    assert_eq!(md.get("authorization").unwrap(), "Bearer s3cret");
    assert!(md.get("grpc-timeout").is_some());
    assert!(
        md.get("user-agent")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("outrigger/")
    );
    assert_eq!(
        o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 4.0)
            .await,
        4.0
    );
}

#[tokio::test]
async fn grpc_unavailable_burst_is_retried_without_loss() {
    let c = Collector::start(vec![Answer::Status(Code::Unavailable, None); 3]).await;
    let o = outrigger(
        &c.url(),
        "max_in_flight = 1\nmax_batch_events = 50\ncompression = \"none\"",
    )
    .await;
    o.send_ids(0, 200).await;
    let got = wait_ids(|| ids(&c.accepted()), 200).await;
    assert_eq!(sorted(got), (0..200).collect::<Vec<_>>(), "each once");
    assert_eq!(
        metric(&o, "outrigger_sink_retries_total", Some("unavailable")),
        3.0
    );
    let md = c.state.received.lock().unwrap()[0].metadata.clone();
    assert!(md.get("grpc-encoding").is_none(), "compression = none");
}

#[tokio::test]
async fn grpc_resource_exhausted_is_retried_only_with_retry_info() {
    let c = Collector::start(vec![
        Answer::Status(Code::ResourceExhausted, Some(Duration::from_secs(1))),
        Answer::Status(Code::ResourceExhausted, None),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let o = outrigger(
        &c.url(),
        &format!(
            "max_in_flight = 1\ndead_letter_path = \"{}\"",
            dead.display()
        ),
    )
    .await;
    let started = Instant::now();
    o.send_ids(0, 10).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        10.0,
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for RetryInfo's delay"
    );
    o.send_ids(10, 10).await;
    let got = wait_ids(|| ids(&c.accepted()), 10).await;
    let dead_ids = dead_ids(&dead, "gRPC ResourceExhausted");
    assert_eq!(sorted(dead_ids.clone()), (0..10).collect::<Vec<_>>());
    assert_eq!(
        sorted([got, dead_ids].concat()),
        (0..20).collect::<Vec<_>>(),
        "delivered + dead-lettered = sent"
    );
    assert_eq!(
        metric(&o, "outrigger_sink_retries_total", Some("throttled")),
        1.0
    );
    assert_eq!(c.requests(), 3);
}

#[tokio::test]
async fn grpc_invalid_argument_goes_to_the_dead_letter_file() {
    let c = Collector::start(vec![Answer::Status(Code::InvalidArgument, None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let o = outrigger(
        &c.url(),
        &format!(
            "max_in_flight = 1\ndead_letter_path = \"{}\"",
            dead.display()
        ),
    )
    .await;
    o.send_ids(0, 10).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        10.0,
    )
    .await;
    o.send_ids(10, 10).await;
    let got = wait_ids(|| ids(&c.accepted()), 10).await;
    let dead_ids = dead_ids(&dead, "gRPC InvalidArgument: scripted");
    assert_eq!(
        sorted([got.clone(), dead_ids].concat()),
        (0..20).collect::<Vec<_>>(),
        "delivered + dead-lettered = sent"
    );
    assert_eq!(sorted(got), (10..20).collect::<Vec<_>>());
    assert_eq!(c.requests(), 2, "not retried");
    assert_eq!(
        o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 10.0)
            .await,
        10.0
    );
}

#[tokio::test]
async fn grpc_partial_success_is_counted_and_not_retried() {
    let c = Collector::start(vec![Answer::Partial(3, "3 records too old")]).await;
    let o = outrigger(&c.url(), "max_in_flight = 1").await;
    o.send_ids(0, 10).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"partially_rejected\"}",
        3.0,
    )
    .await;
    o.send_ids(10, 10).await;
    let got = wait_ids(|| ids(&c.accepted()), 20).await;
    assert_eq!(sorted(got), (0..20).collect::<Vec<_>>(), "each once");
    assert_eq!(c.requests(), 2, "the partial success was not retried");
    assert_eq!(
        o.wait_metric("outrigger_sink_events_total{component=\"out\"}", 17.0)
            .await,
        17.0
    );
    assert_eq!(
        metric(
            &o,
            "outrigger_sink_failed_events_total",
            Some("partially_rejected")
        ),
        3.0,
        "accepted + rejected = sent"
    );
}

#[tokio::test]
async fn grpc_slow_answer_times_out_and_is_retried() {
    let c = Collector::start(vec![Answer::Delay(Duration::from_millis(1500))]).await;
    let o = outrigger(&c.url(), "max_in_flight = 1\ntimeout_ms = 400").await;
    o.send_ids(0, 20).await;
    let got = wait_ids(|| unique(ids(&c.accepted())), 20).await;
    assert_eq!(got, (0..20).collect::<Vec<_>>(), "nothing lost");
    assert!(metric(&o, "outrigger_sink_retries_total", Some("timeout")) >= 1.0);
    // The server may have stored the slow request after we gave up on it: the one
    // ambiguous case, and the only duplicates allowed.
    assert!(ids(&c.accepted()).len() <= 40);
}

#[tokio::test]
async fn grpc_collector_down_at_start_then_up_loses_nothing() {
    let addr = free_addr().await;
    let o = outrigger(&format!("http://{addr}"), "timeout_ms = 500").await;
    o.send_ids(0, 100).await;
    o.wait_metric(
        "outrigger_sink_retries_total{component=\"out\",reason=\"unavailable\"}",
        1.0,
    )
    .await;
    let c = Collector::start_on(addr, vec![]).await;
    let got = wait_ids(|| ids(&c.accepted()), 100).await;
    assert_eq!(sorted(got), (0..100).collect::<Vec<_>>());
}

// === HTTP ===

fn decode(b: &Backend) -> Vec<ExportLogsServiceRequest> {
    b.accepted()
        .iter()
        .map(|r| ExportLogsServiceRequest::decode(&r.body[..]).unwrap())
        .collect()
}

#[tokio::test]
async fn http_protobuf_maps_the_same_and_honours_retry_after() {
    let b = Backend::start(vec![
        Fault::Status(429, Some(1), "slow down"),
        Fault::Status(503, None, "busy"),
    ])
    .await;
    let o = outrigger(
        &b.url(),
        "protocol = \"http/protobuf\"\ncompression = \"gzip\"\nflush_interval_ms = 300\nmax_in_flight = 1",
    )
    .await;
    let started = Instant::now();
    let sent_after = now_nanos();
    let (k8s_tag, pod_id) = send_mixed(&o).await;
    let got = wait_ids(|| vec![0; records(&decode(&b)).len()], 4).await;
    assert_eq!(got.len(), 4, "delivered = sent");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    assert_eq!(b.requests(), 3, "429 and 503 retried");
    let reqs = decode(&b);
    assert_eq!(reqs.len(), 1);
    check_mixed(&reqs[0], &k8s_tag, &pod_id, sent_after);
    let r = &b.accepted()[0];
    assert_eq!(r.path, "/v1/logs");
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    assert_eq!(r.headers["content-encoding"], "gzip");
    assert_eq!(
        metric(&o, "outrigger_sink_retries_total", Some("throttled")),
        1.0
    );
    assert_eq!(
        metric(&o, "outrigger_sink_retries_total", Some("server_error")),
        1.0
    );
}

#[tokio::test]
async fn http_500_is_not_retried_and_goes_to_the_dead_letter_file() {
    let b = Backend::start(vec![Fault::Status(500, None, "oops")]).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.ndjson");
    let o = outrigger(
        &b.url(),
        &format!(
            "protocol = \"http/protobuf\"\nmax_in_flight = 1\ndead_letter_path = \"{}\"",
            dead.display()
        ),
    )
    .await;
    o.send_ids(0, 10).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        10.0,
    )
    .await;
    o.send_ids(10, 10).await;
    let got = wait_ids(|| ids(&decode(&b)), 10).await;
    let dead_ids = dead_ids(&dead, "HTTP 500: oops");
    assert_eq!(
        sorted([got.clone(), dead_ids].concat()),
        (0..20).collect::<Vec<_>>(),
        "delivered + dead-lettered = sent"
    );
    assert_eq!(sorted(got), (10..20).collect::<Vec<_>>());
    assert_eq!(b.requests(), 2, "500 not retried");
}

#[tokio::test]
async fn http_json_is_the_otlp_json_mapping_and_reads_partial_success() {
    fn partial(_: &[u8]) -> (u16, String) {
        (
            200,
            r#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"2 too old"}}"#.into(),
        )
    }
    let b = Backend::start(vec![Fault::Custom(partial)]).await;
    let o = outrigger(
        &b.url(),
        "protocol = \"http/json\"\nflush_interval_ms = 300\nmax_in_flight = 1\n\
         path = \"/otlp/v1/logs\"\ncompression = \"none\"",
    )
    .await;
    let sent_after = now_nanos();
    let (k8s_tag, pod_id) = send_mixed(&o).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"partially_rejected\"}",
        2.0,
    )
    .await;
    let r = &b.accepted()[0];
    assert_eq!(r.path, "/otlp/v1/logs");
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(r.headers.get("content-encoding").is_none());
    let text = std::str::from_utf8(&r.body).unwrap();
    for want in [
        r#""traceId":"4bf92f3577b34da6a3ce929d0e0e4736""#,
        r#""spanId":"00f067aa0ba902b7""#,
        r#""timeUnixNano":"1700000000123456789""#,
        r#""severityNumber":13"#,
        r#"{"key":"ms","value":{"intValue":"1200"}}"#,
        r#""resourceLogs":[{"resource":{"attributes":[{"key":"container.id""#,
    ] {
        assert!(text.contains(want), "{want} missing in {text}");
    }
    // The generated serde impl reads it back into the same records.
    let req: ExportLogsServiceRequest = serde_json::from_str(text).unwrap();
    check_mixed(&req, &k8s_tag, &pod_id, sent_after);
    assert_eq!(b.requests(), 1, "partial success not retried");
    assert_eq!(
        metric(&o, "outrigger_sink_events_total", None) + 2.0,
        4.0,
        "accepted + rejected = sent"
    );
}
