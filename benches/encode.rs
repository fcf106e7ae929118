//! Exporter encoding cost per event, over the enriched Docker-shaped corpus.
//!
//! ```text
//! cargo bench --bench encode
//! ```
//!
//! The corpus (`testdata/docker-corpus.jsonl`) is decoded into batches of 256 events as in
//! `benches/enrich.rs` and enriched once with the default [`Enricher`], outside the
//! measurement. The 4,096 events are then cut into requests of [`PER_REQUEST`] events (each
//! spanning several batches, as the delivery loop builds them) and every request is encoded
//! the way its exporter does before handing the body to the HTTP or gRPC client:
//!
//! - `loki/protobuf_snappy`: labels and structured metadata rendered, streams grouped and
//!   sorted, `PushRequest` encoded and snappy-compressed ([`loki::Exporter::encode`], default
//!   config: `line = "original"`, `encoding = "protobuf"`).
//! - `elasticsearch/ndjson`: action line and ECS document per event
//!   ([`elasticsearch::Exporter::encode`], default config); `elasticsearch/ndjson_gzip` adds the
//!   HTTP client's gzip (on by default).
//! - `otlp/protobuf`: the `ExportLogsServiceRequest` written as protobuf
//!   ([`otlp::Exporter::request`]; the OTLP/HTTP body and the gRPC message, default
//!   `compression = "none"`); `otlp/protobuf_gzip` adds gzip at the HTTP client's level.
//! - `stdout/json`: [`jsonl::event`] plus newline per event (the `stdout`/`file`/`http` body).
//!
//! Throughput is in events: criterion's `elem/s` gives ns/event as 1e9 / rate.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message as _;

use outrigger::event::Batch;
use outrigger::pipeline::{Enricher, Metrics, Settings};
use outrigger::sink::export::Ref;
use outrigger::sink::jsonl::{self, Shape, TimeCache};
use outrigger::sink::settings::{Compression, HttpClient};
use outrigger::sink::{client, elasticsearch, loki, otlp};
use outrigger::source::forward::decode::{self, Options, Skipped};

#[allow(dead_code, unused_imports)]
#[path = "../loadgen/src/corpus.rs"]
mod corpus;
#[allow(dead_code, unused_imports)]
#[path = "../loadgen/src/frames.rs"]
mod frames;

use frames::{Frames, Mode};

/// Events per decoded batch (one Forward-mode request).
const PER_BATCH: usize = 256;
/// Events per exporter request: the order of the exporters' `max_batch_events` defaults.
const PER_REQUEST: usize = 1024;

fn options() -> Options {
    Options::default()
}

/// The corpus as enriched batches of up to [`PER_BATCH`] events.
fn enriched() -> Vec<Batch> {
    let records =
        corpus::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(corpus::DEFAULT_PATH))
            .expect("corpus");
    let frames = Frames::build(
        &records,
        Mode::Forward,
        PER_BATCH,
        0,
        records.len().div_ceil(PER_BATCH),
    );
    let all = Bytes::from(frames.bytes);
    let settings = Arc::new(
        Settings::new(&outrigger::config::Enrich::default().options())
            .expect("enrichment is on by default"),
    );
    let mut enricher = Enricher::new(settings, Metrics::default());
    let mut out = Vec::new();
    let mut start = 0;
    for &end in &frames.ends {
        let mut batch = Batch::default();
        let mut skipped = Skipped::default();
        let o = decode::request(&all.slice(start..end), &mut batch, &options(), &mut skipped);
        assert!(o.complete && skipped.total() == 0, "the corpus decodes");
        let n = batch.events.len();
        enricher.process(&mut batch);
        assert_eq!(batch.events.len(), n, "enrichment holds nothing back");
        out.push(batch);
        start = end;
    }
    out
}

/// Every event of `batches`, cut into requests of [`PER_REQUEST`].
fn requests(batches: &[Batch]) -> Vec<Vec<Ref<'_>>> {
    let all: Vec<Ref<'_>> = batches
        .iter()
        .flat_map(|batch| batch.events.iter().map(move |event| Ref::new(batch, event)))
        .collect();
    all.chunks(PER_REQUEST).map(<[_]>::to_vec).collect()
}

fn client(endpoint: &str, compression: Compression) -> HttpClient {
    HttpClient {
        endpoint: endpoint.into(),
        headers: Default::default(),
        auth: None,
        tls: None,
        compression,
        timeout_ms: 30_000,
        http2: false,
    }
}

fn bench(c: &mut Criterion) {
    let batches = enriched();
    let requests = requests(&batches);
    let events: usize = requests.iter().map(Vec::len).sum();
    let shape = Shape::default();

    let loki = loki::Exporter::try_new(
        &client("http://127.0.0.1:3100", Compression::Gzip),
        &toml::from_str::<loki::Config>("").expect("loki defaults"),
        &shape,
    )
    .expect("loki exporter");
    let es = elasticsearch::Exporter::try_new(
        &client("http://127.0.0.1:9200", Compression::Gzip),
        &toml::from_str::<elasticsearch::Config>("").expect("elasticsearch defaults"),
        &shape,
    )
    .expect("elasticsearch exporter");
    let otlp = otlp::Exporter::try_new(
        &client("http://127.0.0.1:4318", Compression::None),
        &toml::from_str::<otlp::Config>("protocol = \"http/protobuf\"").expect("otlp config"),
        &shape,
    )
    .expect("otlp exporter");

    // Check once that every event is encoded.
    let ndjson: usize = requests
        .iter()
        .map(|r| bytecount(&es.encode(r), b'\n'))
        .sum();
    assert_eq!(
        ndjson,
        2 * events,
        "an action line and a document per event"
    );
    let records: usize = requests
        .iter()
        .map(|r| {
            let bytes = otlp.request(r);
            let req = ExportLogsServiceRequest::decode(&bytes[..]).expect("valid protobuf");
            assert_eq!(req.encode_to_vec(), bytes, "what prost would write");
            req
        })
        .flat_map(|req| req.resource_logs)
        .flat_map(|rl| rl.scope_logs)
        .map(|sl| sl.log_records.len())
        .sum();
    assert_eq!(records, events, "a log record per event");

    let mut group = c.benchmark_group("encode");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(events as u64));

    group.bench_function("loki/protobuf_snappy", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for r in &requests {
                bytes += loki.encode(black_box(r)).expect("snappy").0.len();
            }
            bytes
        })
    });
    group.bench_function("elasticsearch/ndjson", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for r in &requests {
                bytes += es.encode(black_box(r)).len();
            }
            bytes
        })
    });
    group.bench_function("elasticsearch/ndjson_gzip", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for r in &requests {
                bytes += client::gzip(&es.encode(black_box(r))).len();
            }
            bytes
        })
    });
    group.bench_function("otlp/protobuf", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for r in &requests {
                bytes += otlp.request(black_box(r)).len();
            }
            bytes
        })
    });
    group.bench_function("otlp/protobuf_gzip", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for r in &requests {
                bytes += client::gzip(&otlp.request(black_box(r))).len();
            }
            bytes
        })
    });
    let mut out = Vec::with_capacity(1 << 20);
    group.bench_function("stdout/json", |b| {
        b.iter(|| {
            let mut times = TimeCache::default();
            let mut bytes = 0;
            for r in &requests {
                out.clear();
                for e in black_box(r) {
                    jsonl::event(&mut out, &mut times, e.batch, e.event, &shape)
                        .expect("the corpus encodes");
                    out.push(b'\n');
                }
                bytes += out.len();
            }
            bytes
        })
    });
    group.finish();

    // Body sizes, for the record.
    let sizes = [
        (
            "loki protobuf+snappy",
            requests
                .iter()
                .map(|r| loki.encode(r).expect("snappy").0.len())
                .sum::<usize>(),
        ),
        (
            "elasticsearch ndjson",
            requests.iter().map(|r| es.encode(r).len()).sum(),
        ),
        (
            "otlp protobuf",
            requests.iter().map(|r| otlp.request(r).len()).sum(),
        ),
    ];
    for (name, bytes) in sizes {
        eprintln!(
            "{name}: {:.1} bytes per event",
            bytes as f64 / events as f64
        );
    }
}

fn bytecount(body: &[u8], b: u8) -> usize {
    memchr::memchr_iter(b, body).count()
}

criterion_group!(benches, bench);
criterion_main!(benches);
