//! Outrigger's own metrics over OTLP/gRPC: what `/metrics` shows, pushed to the collector.
//!
//! Every `export_interval_ms` a task renders the Prometheus registry ([`Metrics::render`]),
//! reads the text back ([`super::exposition`]) and sends it as one `ExportMetricsServiceRequest`
//! to the traces' collector. Going through the rendered text keeps one definition of each
//! metric (prometheus-client families cannot be walked), and the names are the series names
//! a scrape sees, `_total` included, so dashboards and queries carry over unchanged.
//!
//! Mapping: counters become cumulative monotonic Sums, gauges Gauges, histograms cumulative
//! Histograms (bounds from `le`, bucket counts de-cumulated); labels become attributes. The
//! cumulative start time is the process's start, as the counters start at 0 with it.
//!
//! The task runs beside the pipeline, never in it: an export is bounded by `timeout_ms`, a
//! failure is logged at most once a minute, and nothing waits on it but the final export
//! when Outrigger stops, itself bounded by `timeout_ms`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::Metrics;
use super::exposition::{self, Family, Kind, Value};
use crate::config::telemetry::{Otlp, Protocol};

/// How often a failing export is logged: a collector that is down for an hour costs 60 lines.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The running export task.
#[derive(Debug)]
pub struct MetricsExport {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl MetricsExport {
    /// Starts the export task on the current runtime. The gRPC channel connects lazily, so a
    /// collector that is down does not stop the start.
    ///
    /// # Errors
    /// An endpoint, header or TLS setting the client cannot use.
    pub fn start(
        cfg: &Otlp,
        resource: Vec<(String, String)>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<MetricsExport> {
        let client = client(cfg)?;
        let metadata = super::otel::metadata(cfg)?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let start_ns = super::process::Sample::read(Path::new("/proc"))
            .start_time_seconds
            .map(|s| (s * 1e9) as u64)
            .unwrap_or_else(now_ns);
        let exporter = Exporter {
            client,
            metadata,
            metrics,
            resource: Resource {
                attributes: resource.into_iter().map(|(k, v)| attribute(k, v)).collect(),
                ..Default::default()
            },
            start_ns,
            timeout,
        };
        let (stop, stopped) = oneshot::channel();
        let interval = Duration::from_millis(cfg.export_interval_ms);
        let task = tokio::spawn(exporter.run(interval, stopped));
        tracing::info!(endpoint = %cfg.endpoint(), interval_ms = cfg.export_interval_ms, "exporting own metrics over OTLP");
        Ok(MetricsExport {
            stop,
            task,
            timeout,
        })
    }

    /// Sends the metrics one last time and stops, waiting at most `timeout_ms`: should an
    /// interval's export still be running, the wait covers it and the final one together.
    pub async fn shutdown(self) {
        let MetricsExport {
            stop,
            mut task,
            timeout,
        } = self;
        let _ = stop.send(());
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(_) => tracing::debug!("own metrics flushed"),
            Err(_) => {
                task.abort();
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    "own metrics not flushed: the collector did not answer in time"
                );
            }
        }
    }
}

/// The gRPC client of the metrics service at the configured endpoint; built, not connected.
///
/// # Errors
/// See [`MetricsExport::start`].
pub fn client(cfg: &Otlp) -> anyhow::Result<MetricsServiceClient<Channel>> {
    if cfg.protocol != Protocol::Grpc {
        anyhow::bail!("telemetry.otlp.protocol: only `grpc` exports metrics");
    }
    let endpoint = cfg.endpoint();
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut ep = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .context("telemetry.otlp.endpoint")?
        .timeout(timeout)
        .connect_timeout(timeout);
    if endpoint.starts_with("https:") {
        // The system's roots, like the traces and the sinks.
        ep = ep
            .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
            .context("telemetry.otlp")?;
    }
    Ok(MetricsServiceClient::new(ep.connect_lazy()))
}

struct Exporter {
    client: MetricsServiceClient<Channel>,
    metadata: tonic::metadata::MetadataMap,
    metrics: Arc<Metrics>,
    resource: Resource,
    start_ns: u64,
    timeout: Duration,
}

impl Exporter {
    async fn run(mut self, interval: Duration, mut stopped: oneshot::Receiver<()>) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        // A slow collector delays the next export rather than causing a burst of them.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_warned: Option<Instant> = None;
        let mut failed_since_warned = 0u64;
        loop {
            let last = tokio::select! {
                _ = ticks.tick() => false,
                _ = &mut stopped => true,
            };
            match self.export_once().await {
                Ok(()) => {}
                Err(e) => {
                    failed_since_warned += 1;
                    if last || last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(error = %e, failed_exports = failed_since_warned, "own metrics not exported");
                        last_warned = Some(Instant::now());
                        failed_since_warned = 0;
                    }
                }
            }
            if last {
                return;
            }
        }
    }

    async fn export_once(&mut self) -> anyhow::Result<()> {
        let families = exposition::parse(&self.metrics.render())?;
        let request = request(&families, &self.resource, self.start_ns, now_ns());
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        let response = tokio::time::timeout(self.timeout, self.client.export(request))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.timeout))??;
        if let Some(p) = response.into_inner().partial_success
            && p.rejected_data_points > 0
        {
            anyhow::bail!(
                "collector rejected {} data points: {}",
                p.rejected_data_points,
                p.error_message
            );
        }
        Ok(())
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn attribute(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| attribute(k.clone(), v.clone()))
        .collect()
}

/// One request holding every family; `start_ns` starts the cumulative series, `now_ns`
/// stamps every point.
pub fn request(
    families: &[Family],
    resource: &Resource,
    start_ns: u64,
    now_ns: u64,
) -> ExportMetricsServiceRequest {
    let metrics = families
        .iter()
        .filter_map(|f| metric(f, start_ns, now_ns))
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "outrigger".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn number(value: Value) -> number_data_point::Value {
    match value {
        Value::Int(i) => number_data_point::Value::AsInt(i),
        Value::Float(f) => number_data_point::Value::AsDouble(f),
    }
}

/// UCUM for the units prometheus-client can declare; others pass through.
fn unit(u: &str) -> String {
    match u {
        "seconds" => "s".into(),
        "bytes" => "By".into(),
        other => other.into(),
    }
}

/// One family as one OTLP metric; `None` for families of other types and empty ones.
fn metric(f: &Family, start_ns: u64, now_ns: u64) -> Option<Metric> {
    let point = |labels: &[(String, String)], value, start| NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now_ns,
        value: Some(number(value)),
        ..Default::default()
    };
    let (name, data) = match f.kind {
        Kind::Counter => {
            let total = format!("{}_total", f.name);
            let points: Vec<_> = f
                .samples
                .iter()
                .filter(|s| s.name == total)
                .map(|s| point(&s.labels, s.value, start_ns))
                .collect();
            (
                total,
                metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
            )
        }
        Kind::Gauge => (
            f.name.clone(),
            metric::Data::Gauge(Gauge {
                data_points: f
                    .samples
                    .iter()
                    .map(|s| point(&s.labels, s.value, 0))
                    .collect(),
            }),
        ),
        Kind::Histogram => (
            f.name.clone(),
            metric::Data::Histogram(Histogram {
                data_points: histogram_points(f, start_ns, now_ns),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        ),
        Kind::Other => return None,
    };
    let empty = match &data {
        metric::Data::Sum(s) => s.data_points.is_empty(),
        metric::Data::Gauge(g) => g.data_points.is_empty(),
        metric::Data::Histogram(h) => h.data_points.is_empty(),
        _ => false,
    };
    (!empty).then(|| Metric {
        name,
        description: f.help.clone(),
        unit: unit(&f.unit),
        data: Some(data),
        ..Default::default()
    })
}

/// One label set's `_sum`, `_count` and cumulative `_bucket`s, gathered.
#[derive(Default)]
struct Gathered {
    labels: Vec<(String, String)>,
    sum: Option<f64>,
    count: Option<u64>,
    /// `(le, cumulative count)`.
    buckets: Vec<(f64, u64)>,
}

fn histogram_points(f: &Family, start_ns: u64, now_ns: u64) -> Vec<HistogramDataPoint> {
    let mut series: Vec<Gathered> = Vec::new();
    for s in &f.samples {
        let Some(suffix) = s.name.strip_prefix(&f.name) else {
            continue;
        };
        let mut le = None;
        let labels: Vec<_> = s
            .labels
            .iter()
            .filter(|(k, v)| {
                let is_le = k == "le";
                if is_le {
                    le = Some(v.as_str());
                }
                !is_le
            })
            .cloned()
            .collect();
        // Few series per family: a linear search keeps them in exposition order.
        let g = match series.iter().position(|g| g.labels == labels) {
            Some(i) => &mut series[i],
            None => {
                series.push(Gathered {
                    labels,
                    ..Default::default()
                });
                series.last_mut().expect("just pushed")
            }
        };
        let count = s.value.as_f64().max(0.0) as u64;
        match suffix {
            "_sum" => g.sum = Some(s.value.as_f64()),
            "_count" => g.count = Some(count),
            "_bucket" => {
                let bound = match le {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(b) => b,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                g.buckets.push((bound, count));
            }
            _ => {}
        }
    }
    series
        .into_iter()
        .map(|mut g| {
            g.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let finite: Vec<_> = g.buckets.iter().filter(|b| b.0.is_finite()).collect();
            let inf = g.buckets.iter().find(|b| b.0.is_infinite()).map(|b| b.1);
            let count = g
                .count
                .or(inf)
                .unwrap_or_else(|| finite.last().map_or(0, |b| b.1));
            let mut bucket_counts = Vec::with_capacity(finite.len() + 1);
            let mut below = 0;
            for &&(_, cumulative) in &finite {
                bucket_counts.push(cumulative.saturating_sub(below));
                below = below.max(cumulative);
            }
            bucket_counts.push(count.saturating_sub(below));
            HistogramDataPoint {
                attributes: attributes(&g.labels),
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                count,
                sum: g.sum,
                bucket_counts,
                explicit_bounds: finite.iter().map(|b| b.0).collect(),
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(text: &str) -> Metric {
        let families = exposition::parse(text).unwrap();
        let r = request(&families, &Resource::default(), 10, 20);
        let mut m = r.resource_metrics[0].scope_metrics[0].metrics.clone();
        assert_eq!(m.len(), 1, "{m:?}");
        m.remove(0)
    }

    #[test]
    fn counters_are_cumulative_monotonic_sums() {
        let m = only(
            "# HELP c_events Events.\n# TYPE c_events counter\nc_events_total{component=\"in\"} 3\n",
        );
        assert_eq!(m.name, "c_events_total");
        assert_eq!(m.description, "Events.");
        let Some(metric::Data::Sum(s)) = m.data else {
            panic!("{m:?}")
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &s.data_points[0];
        assert_eq!(p.value, Some(number_data_point::Value::AsInt(3)));
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10, 20));
        assert_eq!(p.attributes, vec![attribute("component", "in")]);
    }

    #[test]
    fn gauges_keep_float_values() {
        let m = only("# TYPE g gauge\ng 1.5\n");
        let Some(metric::Data::Gauge(g)) = m.data else {
            panic!("{m:?}")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(1.5))
        );
    }

    #[test]
    fn histograms_are_de_cumulated_per_label_set() {
        let m = only(
            "# TYPE h histogram\n\
             h_sum{component=\"a\"} 4.5\nh_count{component=\"a\"} 5\n\
             h_bucket{component=\"a\",le=\"1.0\"} 1\nh_bucket{component=\"a\",le=\"2.0\"} 3\n\
             h_bucket{component=\"a\",le=\"+Inf\"} 5\n\
             h_sum{component=\"b\"} 0\nh_count{component=\"b\"} 0\n\
             h_bucket{component=\"b\",le=\"1.0\"} 0\nh_bucket{component=\"b\",le=\"2.0\"} 0\n\
             h_bucket{component=\"b\",le=\"+Inf\"} 0\n",
        );
        let Some(metric::Data::Histogram(h)) = m.data else {
            panic!("{m:?}")
        };
        assert_eq!(h.data_points.len(), 2);
        let a = &h.data_points[0];
        assert_eq!(a.attributes, vec![attribute("component", "a")]);
        assert_eq!(a.explicit_bounds, vec![1.0, 2.0]);
        assert_eq!(a.bucket_counts, vec![1, 2, 2]);
        assert_eq!((a.count, a.sum), (5, Some(4.5)));
        assert_eq!(h.data_points[1].bucket_counts, vec![0, 0, 0]);
    }

    #[test]
    fn other_types_and_empty_families_are_left_out() {
        let families = exposition::parse("# TYPE i info\ni_info 1\n# TYPE c counter\n").unwrap();
        let r = request(&families, &Resource::default(), 0, 0);
        assert!(r.resource_metrics[0].scope_metrics[0].metrics.is_empty());
    }
}
