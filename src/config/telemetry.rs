//! The `[telemetry]` section: Outrigger's own traces and metrics, sent over OTLP to a
//! collector.
//!
//! Off by default. This is about Outrigger watching itself (a span per exported batch, the
//! metrics `/metrics` shows), not about the events it forwards: these go straight to
//! `endpoint` through their own client, never through Outrigger's sinks, so a sink that is
//! failing cannot swallow the telemetry that would explain why.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[telemetry]`: one subsection per way of exporting our own telemetry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    pub otlp: Otlp,
}

/// The OTLP transport for our own traces and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC, by default on port 4317.
    Grpc,
    /// OTLP/HTTP with protobuf bodies, by default on port 4318 at `/v1/traces`. Named so
    /// configs can say it, but refused for now: opentelemetry-otlp's HTTP clients are reqwest
    /// (which would bring a second TLS stack and HTTP/3 into the build) or a hyper client that
    /// cannot run on the SDK's export thread; an adapter over our own client is still to do.
    Http,
}

/// `[telemetry.otlp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Otlp {
    /// Off by default: a sidecar must not start talking to a collector nobody asked for.
    pub enabled: bool,
    /// The collector; empty picks the protocol's default on 127.0.0.1 (see
    /// [`Otlp::endpoint`]). For `http`, the full URL including `/v1/traces`.
    pub endpoint: String,
    pub protocol: Protocol,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// More resource attributes, e.g. `"k8s.node.name" = "${NODE_NAME}"`.
    pub resource: BTreeMap<String, String>,
    /// Sent with every export (gRPC metadata or HTTP headers), e.g. an API key.
    pub headers: BTreeMap<String, String>,
    /// Also export the metrics (what `/metrics` shows) to the same collector. On by default
    /// once `enabled`: they cost one small request per interval.
    pub metrics: bool,
    /// The share of batches traced, 0.0 to 1.0; 0.0 leaves only the metrics.
    pub sampling_ratio: f64,
    /// How long finished spans wait to be sent together; also the metrics' export period.
    pub export_interval_ms: u64,
    /// One export's time limit; also bounds the final flush when Outrigger stops.
    pub timeout_ms: u64,
    /// Finished spans held while the collector is slow or down; beyond it new spans are
    /// dropped, so an unreachable collector costs bounded memory.
    pub max_queue_spans: usize,
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp {
            enabled: false,
            endpoint: String::new(),
            protocol: Protocol::Grpc,
            service_name: "outrigger".into(),
            resource: BTreeMap::new(),
            headers: BTreeMap::new(),
            metrics: true,
            sampling_ratio: 1.0,
            export_interval_ms: 5000,
            timeout_ms: 5000,
            max_queue_spans: 2048,
        }
    }
}

impl Otlp {
    /// The configured endpoint, or the protocol's default (the OTLP exporter spec's).
    pub fn endpoint(&self) -> String {
        match (self.endpoint.is_empty(), self.protocol) {
            (false, _) => self.endpoint.clone(),
            (true, Protocol::Grpc) => "http://127.0.0.1:4317".into(),
            (true, Protocol::Http) => "http://127.0.0.1:4318/v1/traces".into(),
        }
    }

    /// What deserializing cannot check: `(key, message)` of the first problem.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.protocol == Protocol::Http {
            return Err((
                "protocol",
                "`http` is not supported yet; use `grpc` (a collector's port 4317)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err((
                "sampling_ratio",
                format!("must be between 0.0 and 1.0, not {}", self.sampling_ratio),
            ));
        }
        for (key, v) in [
            ("export_interval_ms", self.export_interval_ms),
            ("timeout_ms", self.timeout_ms),
            ("max_queue_spans", self.max_queue_spans as u64),
        ] {
            if v == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        if self.service_name.is_empty() {
            return Err(("service_name", "must not be empty".into()));
        }
        let endpoint = self.endpoint();
        match endpoint.parse::<hyper::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => {
                return Err((
                    "endpoint",
                    format!("`{endpoint}` is not an http:// or https:// URL"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Error, Settings, parse};

    const MINIMAL: &str = "[sources.in]\ntype = \"forward\"\naddress = \"127.0.0.1:5170\"\n\n\
                           [sinks.out]\ntype = \"stdout\"\n";

    fn with(section: &str) -> Result<Settings, Error> {
        let env = |v: &str| (v == "COLLECTOR").then(|| "http://collector:4317".to_string());
        parse("test.toml", &format!("{MINIMAL}\n{section}"), env)
    }

    #[test]
    fn off_by_default() {
        let s = with("").unwrap();
        assert!(!s.telemetry.otlp.enabled);
        // A section that does not say `enabled = true` turns nothing on either.
        let s = with("[telemetry.otlp]\nendpoint = \"http://x:4317\"\n").unwrap();
        assert!(!s.telemetry.otlp.enabled);
    }

    #[test]
    fn defaults() {
        let o = with("[telemetry.otlp]\nenabled = true\n")
            .unwrap()
            .telemetry
            .otlp;
        assert_eq!(o.protocol, Protocol::Grpc);
        assert_eq!(o.endpoint(), "http://127.0.0.1:4317");
        assert_eq!(o.service_name, "outrigger");
        assert_eq!(o.sampling_ratio, 1.0);
        assert!(o.metrics);
        assert_eq!(o.export_interval_ms, 5000);
        assert_eq!(o.timeout_ms, 5000);
        let http = Otlp {
            protocol: Protocol::Http,
            ..Otlp::default()
        };
        assert_eq!(http.endpoint(), "http://127.0.0.1:4318/v1/traces");
    }

    #[test]
    fn every_key() {
        let o = with(
            "[telemetry.otlp]\nenabled = true\nendpoint = \"${COLLECTOR:-http://127.0.0.1:4317}\"\n\
             protocol = \"grpc\"\nservice_name = \"edge\"\nsampling_ratio = 0.25\nmetrics = false\n\
             export_interval_ms = 1000\ntimeout_ms = 2000\nmax_queue_spans = 10\n\
             [telemetry.otlp.resource]\n\"k8s.node.name\" = \"n1\"\n\
             [telemetry.otlp.headers]\nauthorization = \"Bearer t\"\n",
        )
        .unwrap()
        .telemetry
        .otlp;
        assert_eq!(o.endpoint(), "http://collector:4317");
        assert_eq!(o.service_name, "edge");
        assert_eq!(o.sampling_ratio, 0.25);
        assert_eq!(o.resource["k8s.node.name"], "n1");
        assert_eq!(o.headers["authorization"], "Bearer t");
        assert_eq!(o.max_queue_spans, 10);
        assert!(!o.metrics);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = with("[telemetry.otlp]\nenabled = true\nendpoints = \"x\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("telemetry.otlp"));
        assert!(e.message.contains("unknown field `endpoints`"), "{e}");
        let e = with("[telemetry.jaeger]\n").unwrap_err();
        assert!(e.message.contains("unknown field `jaeger`"), "{e}");
        let e = with("[telemetry.otlp]\nprotocol = \"thrift\"\n").unwrap_err();
        assert!(e.to_string().contains("thrift"), "{e}");
        let e = with("[telemetry.otlp]\nprotocol = \"http\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("telemetry.otlp.protocol"));
        let e = with("[telemetry.otlp]\nsampling_ratio = 1.5\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("telemetry.otlp.sampling_ratio"));
        let e = with("[telemetry.otlp]\ntimeout_ms = 0\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("telemetry.otlp.timeout_ms"));
        let e = with("[telemetry.otlp]\nendpoint = \"collector:4317\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("telemetry.otlp.endpoint"));
    }
}
