//! Arbitrary bytes through the whole receive path, as a connection would run it: find each
//! request's end with a [`Scanner`], decode the request into a [`Batch`], write every event as
//! a sink would ([`json::event`]), then enrich the batch and write it again.
//!
//! This is the coverage-guided form of the deterministic `robustness` test at the bottom of
//! `src/source/forward/decode.rs`. Beyond "nothing panics", it checks what the JSON sink
//! promises: whatever the record holds, an event it writes is one valid JSON object.
//!
//! ```text
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run forward_decode corpus/forward_decode seeds/forward_decode
//! ```

#![no_main]

mod common;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

use outrigger::event::Batch;
use outrigger::msgpack::Scanner;
use outrigger::pipeline::{Enricher, Metrics, Settings};
use outrigger::sink::jsonl::Shape;
use outrigger::source::forward::decode::{self, Options, Skipped};

/// Bounds a little tighter than a `forward` source's defaults (1 MiB records, 64 MiB
/// decompressed, depth 64), so a compression bomb costs milliseconds, not seconds; the depth
/// is the default one, so deep nesting reaches the encoder.
const MAX_FRAME: usize = 1 << 20;
const MAX_DEPTH: usize = 64;

fn options() -> Options {
    Options {
        tag_prefix: None,
        max_record_bytes: MAX_FRAME,
        max_decompressed_bytes: 1 << 20,
        max_depth: MAX_DEPTH,
    }
}

/// Default enrichment settings, compiled once (the text scanner's automaton is not cheap).
fn settings() -> &'static Arc<Settings> {
    static SETTINGS: OnceLock<Arc<Settings>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        Arc::new(
            Settings::new(&outrigger::config::Enrich::default().options())
                .expect("enrichment is on by default"),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    let opts = options();
    let mut scanner = Scanner::default();
    let mut enricher = Enricher::new(settings().clone(), Metrics::default());
    let shape = Shape::default();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(Some(n)) = scanner.scan(&input[pos..], MAX_FRAME, MAX_DEPTH) {
        let frame = input.slice(pos..pos + n);
        pos += n;
        let mut batch = Batch::default();
        let mut skipped = Skipped::default();
        let outcome = decode::request(&frame, &mut batch, &opts, &mut skipped);
        assert_eq!(outcome.events, batch.events.len());
        assert_eq!(outcome.complete, skipped.total() == 0);
        common::encode_all(&batch, &shape, &mut out);
        enricher.process(&mut batch);
        common::encode_all(&batch, &shape, &mut out);
    }
    // Lines still held (split-line fragments) come out when the connection ends.
    let mut rest = Batch::default();
    enricher.flush(&mut rest);
    common::encode_all(&rest, &shape, &mut out);
});
