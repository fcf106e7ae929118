//! Outrigger's own traces and metrics: a `loki` sink delivers to the in-test Loki backend while
//! an in-test OTLP collector (tonic `TraceService` and `MetricsService` servers on
//! `opentelemetry-proto`'s generated traits) receives the spans of those deliveries and the
//! metrics they moved. Off, nothing reaches the collector; with the collector down, stopping
//! still ends promptly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::backend::{Backend, Fault, free_addr};
use crate::harness::{Outrigger, wire};
use crate::loki::wait_entries;

// === the collector ===

#[derive(Default)]
struct Received(
    Mutex<Vec<ExportTraceServiceRequest>>,
    Mutex<Vec<ExportMetricsServiceRequest>>,
);

struct Service(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.1.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

struct Collector {
    addr: SocketAddr,
    received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Received::default());
        let service = TraceServiceServer::new(Service(received.clone()));
        let metrics = MetricsServiceServer::new(Service(received.clone()));
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(metrics)
                .serve_with_incoming(incoming)
                .await;
        });
        Collector {
            addr,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.received.0.lock().unwrap().clone()
    }

    fn metric_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.received.1.lock().unwrap().clone()
    }

    /// The metric `name` in metrics request `request`, with its resource's attributes.
    fn metric(
        request: &ExportMetricsServiceRequest,
        name: &str,
    ) -> Option<(Vec<KeyValue>, Metric)> {
        request.resource_metrics.iter().find_map(|rm| {
            let m = rm
                .scope_metrics
                .iter()
                .flat_map(|sm| &sm.metrics)
                .find(|m| m.name == name)?;
            let resource = rm
                .resource
                .clone()
                .map(|r| r.attributes)
                .unwrap_or_default();
            Some((resource, m.clone()))
        })
    }

    /// Waits (10 s at most) for a metrics request in which `outrigger_source_events_total`
    /// of source `in` has reached `events`, and returns that request.
    async fn wait_events(&self, events: i64) -> Option<ExportMetricsServiceRequest> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let found = self
                .metric_requests()
                .into_iter()
                .find(|r| source_events(r) == Some(events));
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Every span received so far, with its resource's attributes.
    fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        self.requests()
            .into_iter()
            .flat_map(|r| r.resource_spans)
            .flat_map(|rs| {
                let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
                rs.scope_spans
                    .into_iter()
                    .flat_map(|ss| ss.spans)
                    .map(move |s| (resource.clone(), s))
            })
            .collect()
    }
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> String {
    match attr(attributes, key) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("`{key}` is not a string: {other:?}"),
    }
}

fn int(attributes: &[KeyValue], key: &str) -> i64 {
    match attr(attributes, key) {
        Some(Value::IntValue(i)) => *i,
        other => panic!("`{key}` is not an integer: {other:?}"),
    }
}

/// `outrigger_source_events_total{component="in"}` in `request`, when there.
fn source_events(request: &ExportMetricsServiceRequest) -> Option<i64> {
    let (_, m) = Collector::metric(request, "outrigger_source_events_total")?;
    let Some(metric::Data::Sum(sum)) = m.data else {
        panic!("not a sum: {m:?}")
    };
    assert!(sum.is_monotonic);
    let point = sum
        .data_points
        .iter()
        .find(|p| string(&p.attributes, "component") == "in")?;
    match point.value {
        Some(number_data_point::Value::AsInt(v)) => Some(v),
        other => panic!("not an integer: {other:?}"),
    }
}

// === the tests ===

/// Outrigger with a `loki` sink named `out` at `loki`, and `telemetry` as its
/// `[telemetry.otlp]` table.
async fn outrigger(loki: &str, telemetry: &str) -> Outrigger {
    crate::loki::outrigger(loki, "", &format!("[telemetry.otlp]\n{telemetry}\n")).await
}

/// Sends `n` events in one Forward message, so they make one batch.
async fn send(o: &Outrigger, n: usize) {
    let records: Vec<Vec<(&str, &str)>> = (0..n)
        .map(|_| vec![("log", "hello"), ("source", "stdout")])
        .collect();
    let mut s = o.connect().await;
    s.write_all(&wire::forward("docker.api", &records, None))
        .await
        .unwrap();
    s.flush().await.unwrap();
}

#[tokio::test]
async fn a_retried_batch_arrives_as_a_span_with_its_outcome_and_attempts() {
    let collector = Collector::start().await;
    let loki = Backend::start(vec![Fault::Status(503, None, "ingester unavailable")]).await;
    let mut o = outrigger(
        &loki.url(),
        &format!(
            "enabled = true\nendpoint = \"{}\"\nexport_interval_ms = 50\n\
             service_name = \"outrigger-test\"\n[telemetry.otlp.resource]\n\"k8s.node.name\" = \"n1\"\n",
            collector.url()
        ),
    )
    .await;
    assert!(o.running.as_ref().unwrap().traces_exported());
    send(&o, 3).await;
    assert_eq!(wait_entries(&loki, 3).await.len(), 3);
    assert_eq!(loki.requests(), 2, "one 503, then the retry that succeeded");
    // Stopping flushes the spans still queued.
    o.stop().await.unwrap();

    let spans = collector.spans();
    let batches: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.name == "export batch")
        .collect();
    assert_eq!(batches.len(), 1, "one batch, one span: {spans:#?}");
    let (resource, batch) = batches[0];
    assert_eq!(string(resource, "service.name"), "outrigger-test");
    assert_eq!(string(resource, "k8s.node.name"), "n1");
    let a = &batch.attributes;
    assert_eq!(string(a, "outrigger.sink.name"), "out");
    assert_eq!(string(a, "outrigger.sink.kind"), "loki");
    assert_eq!(int(a, "outrigger.batch.events"), 3);
    assert!(int(a, "outrigger.batch.bytes") > 0);
    assert_eq!(string(a, "outrigger.outcome"), "retried_then_delivered");
    assert_eq!(int(a, "outrigger.retries"), 1);
    assert_eq!(int(a, "outrigger.events.delivered"), 3);
    assert_eq!(int(a, "outrigger.events.rejected"), 0);

    // Two attempts, children of the batch: the 503 (retryable), then the success.
    let mut attempts: Vec<_> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "export attempt")
        .collect();
    attempts.sort_by_key(|s| int(&s.attributes, "outrigger.attempt"));
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for s in &attempts {
        assert_eq!(s.trace_id, batch.trace_id);
        assert_eq!(s.parent_span_id, batch.span_id);
    }
    assert_eq!(
        string(&attempts[0].attributes, "outrigger.verdict"),
        "retry"
    );
    assert_eq!(
        string(&attempts[0].attributes, "error.type"),
        "server_error"
    );
    assert_eq!(
        string(&attempts[1].attributes, "outrigger.verdict"),
        "delivered"
    );
}

#[tokio::test]
async fn a_refused_batch_is_dead_lettered_with_the_status() {
    let collector = Collector::start().await;
    let loki = Backend::start(vec![Fault::Status(401, None, "no org id")]).await;
    let mut o = Outrigger::with_config(&format!(
        "[global]\nadmin_enabled = false\ngrace_period_secs = 10\n\
         [sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\ntype = \"loki\"\nendpoint = \"{}\"\nflush_interval_ms = 50\n\
         dead_letter_path = \"{{dir}}/dead.jsonl\"\n\
         [telemetry.otlp]\nenabled = true\nendpoint = \"{}\"\nexport_interval_ms = 50\n",
        loki.url(),
        collector.url()
    ))
    .await;
    send(&o, 2).await;
    o.wait_metric(
        "outrigger_sink_failed_events_total{component=\"out\",reason=\"rejected\"}",
        2.0,
    )
    .await;
    o.stop().await.unwrap();
    let spans = collector.spans();
    let (_, batch) = spans
        .iter()
        .find(|(_, s)| s.name == "export batch")
        .unwrap_or_else(|| panic!("no batch span: {spans:#?}"));
    let a = &batch.attributes;
    assert_eq!(string(a, "outrigger.outcome"), "dead_lettered");
    assert_eq!(int(a, "outrigger.retries"), 0);
    assert_eq!(int(a, "outrigger.events.rejected"), 2);
    assert_eq!(int(a, "http.response.status_code"), 401);
    assert!(string(a, "error.type").starts_with("HTTP 401"));
}

#[tokio::test]
async fn off_nothing_is_sent() {
    let collector = Collector::start().await;
    let loki = Backend::start(vec![Fault::Status(503, None, "ingester unavailable")]).await;
    // The endpoint is the live collector: only `enabled` stands between it and the spans.
    let mut o = outrigger(
        &loki.url(),
        &format!(
            "enabled = false\nendpoint = \"{}\"\nexport_interval_ms = 50\n",
            collector.url()
        ),
    )
    .await;
    assert!(!o.running.as_ref().unwrap().traces_exported());
    send(&o, 3).await;
    assert_eq!(wait_entries(&loki, 3).await.len(), 3);
    o.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(collector.requests().is_empty());
    assert!(collector.metric_requests().is_empty());
}

#[tokio::test]
async fn a_collector_that_is_down_does_not_hold_up_the_stop() {
    let nowhere = free_addr().await;
    let loki = Backend::start(vec![]).await;
    let mut o = outrigger(
        &loki.url(),
        &format!("enabled = true\nendpoint = \"http://{nowhere}\"\ntimeout_ms = 500\nexport_interval_ms = 60000\n"),
    )
    .await;
    send(&o, 2).await;
    assert_eq!(wait_entries(&loki, 2).await.len(), 2);
    let started = Instant::now();
    o.stop().await.unwrap();
    // The flush gives up after `timeout_ms`; the test allows for a slow machine.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn own_metrics_arrive_as_sums_histograms_and_gauges() {
    let collector = Collector::start().await;
    let loki = Backend::start(vec![]).await;
    let mut o = outrigger(
        &loki.url(),
        &format!(
            "enabled = true\nendpoint = \"{}\"\nexport_interval_ms = 50\n\
             service_name = \"outrigger-test\"\n",
            collector.url()
        ),
    )
    .await;
    assert!(o.running.as_ref().unwrap().metrics_exported());
    send(&o, 3).await;
    assert_eq!(wait_entries(&loki, 3).await.len(), 3);
    // The batch is delivered before its histogram is observed: wait for that too.
    o.wait_metric("outrigger_sink_batch_events_count{component=\"out\"}", 1.0)
        .await;
    let request = collector.wait_events(3).await.unwrap_or_else(|| {
        panic!(
            "no export with 3 events: {:#?}",
            collector.metric_requests()
        )
    });
    // The family exists (empty) from the start; wait for an export made after the batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (resource, p) = loop {
        let found = collector.metric_requests().iter().rev().find_map(|r| {
            let (resource, m) = Collector::metric(r, "outrigger_sink_batch_events")?;
            let Some(metric::Data::Histogram(h)) = m.data else {
                panic!("not a histogram: {m:?}")
            };
            let p = h
                .data_points
                .into_iter()
                .find(|p| string(&p.attributes, "component") == "out")?;
            (p.count > 0).then_some((resource, p))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no batch in the batch-size histogram"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(string(&resource, "service.name"), "outrigger-test");
    assert_eq!(p.count, 1, "{p:?}");
    assert_eq!(p.sum, Some(3.0));
    // Bounds 1, 4, 16, ...: the one batch of 3 is in the second bucket, and only there.
    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
    assert_eq!(&p.explicit_bounds[..3], &[1.0, 4.0, 16.0]);
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
    assert_eq!(p.bucket_counts[1], 1, "{p:?}");
    assert!(p.start_time_unix_nano > 0 && p.start_time_unix_nano <= p.time_unix_nano);

    let (_, rss) = Collector::metric(&request, "process_resident_memory_bytes")
        .expect("process_resident_memory_bytes");
    let Some(metric::Data::Gauge(g)) = rss.data else {
        panic!("not a gauge: {rss:?}")
    };
    match g.data_points[0].value {
        Some(number_data_point::Value::AsInt(v)) => assert!(v > 1 << 20, "{v}"),
        Some(number_data_point::Value::AsDouble(v)) => assert!(v > 1048576.0, "{v}"),
        None => panic!("no value"),
    }
    o.stop().await.unwrap();
}

#[tokio::test]
async fn stopping_sends_the_metrics_one_last_time() {
    let collector = Collector::start().await;
    let loki = Backend::start(vec![]).await;
    // An interval far longer than the test: only the final export can deliver anything.
    let mut o = outrigger(
        &loki.url(),
        &format!(
            "enabled = true\nendpoint = \"{}\"\nexport_interval_ms = 600000\n",
            collector.url()
        ),
    )
    .await;
    send(&o, 2).await;
    assert_eq!(wait_entries(&loki, 2).await.len(), 2);
    assert!(collector.metric_requests().is_empty());
    o.stop().await.unwrap();
    let requests = collector.metric_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(source_events(&requests[0]), Some(2));
}

#[tokio::test]
async fn metrics_false_sends_only_traces() {
    let collector = Collector::start().await;
    let loki = Backend::start(vec![]).await;
    let mut o = outrigger(
        &loki.url(),
        &format!(
            "enabled = true\nmetrics = false\nendpoint = \"{}\"\nexport_interval_ms = 50\n",
            collector.url()
        ),
    )
    .await;
    assert!(!o.running.as_ref().unwrap().metrics_exported());
    send(&o, 2).await;
    assert_eq!(wait_entries(&loki, 2).await.len(), 2);
    o.stop().await.unwrap();
    assert!(!collector.spans().is_empty(), "the traces still go");
    assert!(collector.metric_requests().is_empty());
}
