//! Parse-and-enrich and JSON-encoding throughput over the Docker-shaped corpus.
//!
//! ```text
//! cargo bench --bench enrich
//! ```
//!
//! The corpus (`testdata/docker-corpus.jsonl`, see `loadgen/src/corpus.rs`) is encoded as
//! Forward-mode requests of 256 records (the records cycled to fill the last one: 4,096 events
//! for the 4,000 records) and decoded with `decode::request`, outside the measurement, into one
//! [`Batch`] per request: exactly what a connection hands the pipeline. Then:
//!
//! - `enrich/all`: [`Enricher::process`] on every batch, default settings (JSON parsing,
//!   trace context from JSON and text, severity, Kubernetes tags, and the JSON lines' members
//!   for the exporters that read them). `enrich/json_lines` and `enrich/text_lines` do the
//!   same on only the records whose line is a JSON object (3,626 of 4,000, as 3,840 events)
//!   or is not (374, as 512 events), so the two paths can be told apart.
//!   `enrich/all_without_members` is `all` when no sink reads members (Loki, stdout).
//! - `sink_json/enriched`: [`jsonl::event`] for every enriched event, into a buffer reused per
//!   batch (what the `stdout` and `file` sinks do); `sink_json/plain` the same for events that
//!   were not enriched (`[enrich] enabled = false`), where the line stays a string.
//!
//! Throughput is in events and in bytes of MessagePack record (the `log` line is most of it).
//! Processing a batch again is the same work as the first time: enrichment rewrites each
//! event's `meta` whole and the corpus has no split lines, so the batches are reused across
//! iterations instead of being cloned inside the measurement.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use outrigger::event::Batch;
use outrigger::pipeline::{Enricher, Metrics, Settings};
use outrigger::sink::jsonl::{self, Shape, TimeCache};
use outrigger::source::forward::decode::{self, Options, Skipped};

#[allow(dead_code, unused_imports)]
#[path = "../loadgen/src/corpus.rs"]
mod corpus;
#[allow(dead_code, unused_imports)]
#[path = "../loadgen/src/frames.rs"]
mod frames;

use corpus::Record;
use frames::{Frames, Mode};

/// Events per request, and so per batch: what Fluent Bit's and Fluentd's forward outputs send.
const PER_BATCH: usize = 256;

fn options() -> Options {
    Options::default()
}

/// `records` as batches of up to [`PER_BATCH`] decoded events.
fn batches(records: &[Record]) -> Vec<Batch> {
    let frames = Frames::build(
        records,
        Mode::Forward,
        PER_BATCH,
        0,
        records.len().div_ceil(PER_BATCH),
    );
    let all = Bytes::from(frames.bytes);
    let mut out = Vec::new();
    let mut start = 0;
    for &end in &frames.ends {
        let mut batch = Batch::default();
        let mut skipped = Skipped::default();
        let o = decode::request(&all.slice(start..end), &mut batch, &options(), &mut skipped);
        assert!(o.complete && skipped.total() == 0, "the corpus decodes");
        out.push(batch);
        start = end;
    }
    out
}

fn counts(batches: &[Batch]) -> Throughput {
    Throughput::ElementsAndBytes {
        elements: batches.iter().map(|b| b.events.len() as u64).sum(),
        bytes: batches
            .iter()
            .flat_map(|b| &b.events)
            .map(|e| e.record.len() as u64)
            .sum(),
    }
}

fn settings() -> Arc<Settings> {
    Arc::new(
        Settings::new(&outrigger::config::Enrich::default().options())
            .expect("enrichment is on by default"),
    )
}

fn process(enricher: &mut Enricher, batches: &mut [Batch]) -> usize {
    let mut n = 0;
    for b in batches.iter_mut() {
        enricher.process(b);
        n += b.events.len();
    }
    n
}

fn encode(batches: &[Batch], out: &mut Vec<u8>, shape: &Shape) -> usize {
    let mut times = TimeCache::default();
    let mut bytes = 0;
    for b in batches {
        out.clear();
        for e in &b.events {
            jsonl::event(out, &mut times, b, e, shape).expect("the corpus encodes");
            out.push(b'\n');
        }
        bytes += out.len();
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let records =
        corpus::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(corpus::DEFAULT_PATH))
            .expect("corpus");
    let (json_records, text_records): (Vec<Record>, Vec<Record>) = records
        .iter()
        .cloned()
        .partition(|r| r.log.trim_start().starts_with('{'));
    let settings = settings();

    let mut group = c.benchmark_group("enrich");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    // Without the JSON lines' members: what enrichment does when no sink reads them.
    let no_members = Arc::new(Settings {
        members: false,
        ..Settings::new(&outrigger::config::Enrich::default().options()).expect("on")
    });
    for (name, subset, settings) in [
        ("all", &records, &settings),
        ("json_lines", &json_records, &settings),
        ("text_lines", &text_records, &settings),
        ("all_without_members", &records, &no_members),
    ] {
        let mut batches = batches(subset);
        let mut enricher = Enricher::new(settings.clone(), Metrics::default());
        // Check once that nothing is held back or lost.
        let before: usize = batches.iter().map(|b| b.events.len()).sum();
        assert_eq!(process(&mut enricher, &mut batches), before, "{name}");
        group.throughput(counts(&batches));
        group.bench_function(name, |b| {
            b.iter(|| process(&mut enricher, black_box(&mut batches)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sink_json");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let shape = Shape::default();
    let plain = batches(&records);
    let mut enriched = batches(&records);
    process(
        &mut Enricher::new(settings.clone(), Metrics::default()),
        &mut enriched,
    );
    let mut out = Vec::with_capacity(1 << 20);
    for (name, batches) in [("enriched", &enriched), ("plain", &plain)] {
        group.throughput(counts(batches));
        group.bench_function(name, |b| {
            b.iter(|| encode(black_box(batches), &mut out, &shape))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
