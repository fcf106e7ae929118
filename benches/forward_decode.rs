//! Forward-protocol decoding throughput, per mode, over the Docker-shaped corpus.
//!
//! ```text
//! cargo bench --bench forward_decode
//! ```
//!
//! The corpus (`testdata/docker-corpus.jsonl`, see `loadgen/src/corpus.rs`) is encoded as
//! requests of each mode (Message: one record each, as Docker sends; Forward, PackedForward and
//! CompressedPackedForward with gzip and with zstd: 256 records each), concatenated as they
//! would arrive on a socket and cut into "reads" of at most 256 KiB at request boundaries. One
//! iteration does what a connection does with them: find each request's end with a
//! [`Scanner`], then decode every request of a read into one [`Batch`] with `decode::request`.
//! Throughput is reported both in wire bytes and in events.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use outrigger::event::Batch;
use outrigger::msgpack::Scanner;
use outrigger::source::forward::decode::{self, Options, Skipped};

#[allow(dead_code, unused_imports)]
#[path = "../loadgen/src/corpus.rs"]
mod corpus;
#[allow(dead_code, unused_imports)]
#[path = "../loadgen/src/frames.rs"]
mod frames;

use frames::{Frames, Mode};

/// The connection's largest read.
const READ: usize = 256 << 10;
const MAX_FRAME: usize = 16 << 20;
const PER_FRAME: usize = 256;

fn options() -> Options {
    Options::default()
}

/// The encoded corpus cut into reads that end at request boundaries.
fn reads(frames: &Frames) -> Vec<Bytes> {
    let all = Bytes::from(frames.bytes.clone());
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev = 0;
    for &end in &frames.ends {
        if end - start > READ && prev > start {
            out.push(all.slice(start..prev));
            start = prev;
        }
        prev = end;
    }
    out.push(all.slice(start..));
    out
}

/// What a connection does with its reads: scan, then decode into one batch per read.
/// Returns the events decoded.
fn decode_reads(reads: &[Bytes], opts: &Options, ends: &mut Vec<usize>) -> usize {
    let mut scanner = Scanner::default();
    let mut events = 0;
    for read in reads {
        ends.clear();
        let mut end = 0;
        while let Ok(Some(n)) = scanner.scan(&read[end..], MAX_FRAME, opts.max_depth) {
            end += n;
            ends.push(end);
        }
        let mut batch = Batch {
            size: read.len(),
            ..Default::default()
        };
        let mut skipped = Skipped::default();
        let mut start = 0;
        for &end in ends.iter() {
            let request = read.slice(start..end);
            start = end;
            black_box(decode::request(&request, &mut batch, opts, &mut skipped));
        }
        events += batch.events.len();
        black_box(&batch);
    }
    events
}

fn bench(c: &mut Criterion) {
    let corpus =
        corpus::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(corpus::DEFAULT_PATH))
            .expect("corpus");
    let opts = options();
    let mut group = c.benchmark_group("forward_decode");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for mode in Mode::ALL {
        let frames = Frames::cycle(&corpus, mode, PER_FRAME);
        let reads = reads(&frames);
        let mut ends = Vec::new();
        // Check once that everything decodes, and nothing is skipped.
        let events = decode_reads(&reads, &opts, &mut ends);
        assert_eq!(events, frames.events(), "{}: events decoded", mode.name());
        group.throughput(Throughput::ElementsAndBytes {
            elements: events as u64,
            bytes: frames.bytes.len() as u64,
        });
        group.bench_function(mode.name(), |b| {
            b.iter(|| decode_reads(black_box(&reads), &opts, &mut ends))
        });
    }
    // Finding request ends alone, for Message mode: the part of the work done per read.
    let frames = Frames::cycle(&corpus, Mode::Message, 1);
    let reads = reads(&frames);
    group.throughput(Throughput::ElementsAndBytes {
        elements: frames.events() as u64,
        bytes: frames.bytes.len() as u64,
    });
    group.bench_function("message_scan_only", |b| {
        b.iter(|| {
            let mut scanner = Scanner::default();
            let mut n = 0;
            for read in &reads {
                let mut end = 0;
                while let Ok(Some(len)) = scanner.scan(&read[end..], MAX_FRAME, 64) {
                    end += len;
                    n += 1;
                }
            }
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
