//! Arbitrary log lines through parse and enrich, and through each value parser on its own.
//!
//! Input: one control byte, then the line. The line goes, as the `log` value of a record
//! shaped like the ones Docker's `fluentd` driver sends, through [`Enricher::process`] (and
//! [`Enricher::flush`], as at the end of a connection), and every event that comes out is
//! written by the JSON sink. The whole line also goes straight into the value parsers the
//! walker and the text scanner call: [`trace::context`], [`trace::trace_id`] and
//! [`trace::span_id`] for every [`Format`], [`trace::flags`], the [`Scalar`] forms
//! ([`trace::scalar_context`], [`trace::scalar_span`], [`trace::scalar_flags`]) with the
//! line as a string and its first 8 bytes as an integer, [`TextScanner::scan`],
//! [`severity::scan_text`], [`severity::from_text`], [`severity::from_name`],
//! [`timefmt::parse_rfc3339`], [`timefmt::from_epoch_text`] and [`kubernetes::parse`].
//!
//! Control byte, so one corpus reaches the stateful parts too:
//!
//! | bits | meaning |
//! |---|---|
//! | 0–1 | 0: one record; 1: the line cut into three `partial_message` fragments, in order, the last marked; 2: the first and third fragments only (ordinals 1 and 3: a gap), the last not marked (flushed at the end); 3: one record per `\n`-separated line (at most 64), for stack-trace joining |
//! | 2 | stack-trace joining (`[enrich.multiline]`) on |
//! | 3 | tight limits: `time_key = "ts"`, 512-byte lines, depth 8, 32 fields, split lines of at most 64 bytes, one pending; multiline 3 lines or 256 bytes |
//! | 4 | the sink nests parsed lines under `json` and keeps the line |
//! | 5 | a Kubernetes-shaped tag (`kube.var.log.containers.<pod>_<ns>_<container>-<id>.log`) |
//! | 6 | the records come in two batches instead of one |
//! | 7 | the line is a msgpack `bin`, not a `str` |
//!
//! Checked beyond "nothing panics": the invariants the modules document (a trace or span ID is
//! never all zeros; a time has `secs >= 0` and `nanos < 1e9`; a severity is 1–24), every span
//! in an event's [`Meta`](outrigger::event::Meta) lies inside its record, and every event the
//! JSON sink writes is one valid JSON object.
//!
//! ```text
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run enrich corpus/enrich seeds/enrich
//! ```

#![no_main]

mod common;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

use outrigger::event::{Batch, Event, Span, Timestamp};
use outrigger::pipeline::trace::{self, Format, Scalar, TextScanner, TraceContext};
use outrigger::pipeline::{Enricher, Metrics, Settings, kubernetes, severity, timefmt};
use outrigger::sink::jsonl::Shape;

const FORMATS: [Format; 7] = [
    Format::Hex,
    Format::Datadog,
    Format::Traceparent,
    Format::B3,
    Format::Xray,
    Format::Gcp,
    Format::Jaeger,
];

/// Built once: compiling settings builds Aho-Corasick automatons.
struct Fixture {
    /// Indexed by control bits 2 (multiline) and 3 (tight limits).
    settings: [Arc<Settings>; 4],
    scanner: TextScanner,
    shapes: [Shape; 2],
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let build = |multiline: bool, tight: bool| {
            let mut e = outrigger::config::Enrich::default();
            e.multiline.enabled = multiline;
            if tight {
                e.time_key = "ts".into();
                e.max_line_bytes = 512;
                e.max_depth = 8;
                e.max_fields = 32;
                e.partial.max_bytes = 64;
                e.partial.max_pending = 1;
                e.multiline.max_lines = 3;
                e.multiline.max_bytes = 256;
            }
            Arc::new(Settings::new(&e.options()).expect("enrichment is on"))
        };
        Fixture {
            settings: [
                build(false, false),
                build(true, false),
                build(false, true),
                build(true, true),
            ],
            scanner: TextScanner::new(),
            shapes: [
                Shape::default(),
                Shape {
                    nest_key: Some(b"json".to_vec()),
                    keep_line: true,
                    line_key: b"log".to_vec(),
                },
            ],
        }
    })
}

fn check_context(c: Option<TraceContext>, what: &str) {
    if let Some(c) = c {
        assert_ne!(c.trace_id, [0; 16], "{what}: an all-zero trace ID");
        assert_ne!(c.span_id, Some([0; 8]), "{what}: an all-zero span ID");
    }
}

fn check_time(t: Option<Timestamp>, what: &str) {
    if let Some(t) = t {
        assert!(t.secs >= 0 && t.nanos < 1_000_000_000, "{what}: {t:?}");
    }
}

fn check_severity(s: Option<severity::Severity>, what: &str) {
    if let Some(s) = s {
        assert!((1..=24).contains(&s.0), "{what}: severity {}", s.0);
    }
}

/// The value parsers, each on the whole line.
fn values(line: &[u8], scanner: &TextScanner) {
    // The line's first 8 bytes as the integer a JSON number would be.
    let n = line
        .first_chunk::<8>()
        .map_or(line.len() as u64, |b| u64::from_le_bytes(*b));
    let scalars = [
        Scalar::Str(line),
        Scalar::U64(n),
        Scalar::I64(n as i64),
        Scalar::Bool(n & 1 == 1),
    ];
    for format in FORMATS {
        check_context(trace::context(line, format), "context");
        assert_ne!(trace::trace_id(line, format), Some([0; 16]), "trace_id");
        assert_ne!(trace::span_id(line, format), Some([0; 8]), "span_id");
        for v in scalars {
            check_context(trace::scalar_context(v, format), "scalar_context");
            assert_ne!(trace::scalar_span(v, format), Some([0; 8]), "scalar_span");
        }
    }
    let _ = trace::flags(line);
    for v in scalars {
        let _ = trace::scalar_flags(v);
    }
    check_context(scanner.scan(line), "TextScanner::scan");
    check_severity(severity::scan_text(line), "scan_text");
    check_severity(severity::from_text(line), "from_text");
    check_severity(severity::from_name(line), "from_name");
    check_time(timefmt::parse_rfc3339(line), "parse_rfc3339");
    check_time(timefmt::from_epoch_text(line), "from_epoch_text");
    if let Some(k) = kubernetes::parse(line) {
        for s in [k.pod, k.namespace, k.container, k.container_id] {
            assert!(s.start as usize + s.len as usize <= line.len());
        }
    }
}

fn str_or_bin(out: &mut Vec<u8>, s: &[u8], bin: bool) {
    let n = s.len() as u32;
    if bin {
        out.push(0xc6);
    } else {
        out.push(0xdb);
    }
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(s);
}

/// A record as Docker's `fluentd` driver writes it; `partial` is `(ordinal, last)`.
fn record(line: &[u8], bin: bool, partial: Option<(u32, bool)>) -> Bytes {
    let mut r = Vec::with_capacity(line.len() + 200);
    r.push(0x80 | if partial.is_some() { 8 } else { 4 });
    let mut pair = |k: &[u8], v: &[u8], bin: bool| {
        str_or_bin(&mut r, k, false);
        str_or_bin(&mut r, v, bin);
    };
    pair(
        b"container_id",
        b"4f787032226ab1e7a80e716c582f89c0b7a026bf5c9bf45422047a321223d01c",
        false,
    );
    pair(b"container_name", b"/shop-payments-2", false);
    pair(b"source", b"stdout", false);
    pair(b"log", line, bin);
    if let Some((ordinal, last)) = partial {
        pair(b"partial_message", b"true", false);
        pair(b"partial_id", b"p1", false);
        pair(b"partial_ordinal", ordinal.to_string().as_bytes(), false);
        pair(
            b"partial_last",
            if last { b"true" } else { b"false" },
            false,
        );
    }
    Bytes::from(r)
}

/// The records the control byte asks for.
fn records(line: &[u8], layout: u8, bin: bool) -> Vec<Bytes> {
    if layout == 0 {
        return vec![record(line, bin, None)];
    }
    // Fragment boundaries may cut a UTF-8 sequence, as Docker's 16 KiB cuts do.
    let (a, b) = (line.len() / 3, line.len() * 2 / 3);
    let pieces = [&line[..a], &line[a..b], &line[b..]];
    match layout {
        1 => (0..3)
            .map(|i| record(pieces[i], bin, Some((i as u32 + 1, i == 2))))
            .collect(),
        2 => vec![
            record(pieces[0], bin, Some((1, false))),
            record(pieces[2], bin, Some((3, false))),
        ],
        _ => line
            .split(|b| *b == b'\n')
            .take(64)
            .map(|l| record(l, bin, None))
            .collect(),
    }
}

fn check_event(e: &Event) {
    let m = &e.meta;
    let spans = [
        m.line,
        m.message,
        m.severity_text,
        m.container_id,
        m.container_name,
        m.stream,
    ];
    for s in spans.into_iter().flatten() {
        let Span { start, len } = s;
        assert!(
            start as usize + len as usize <= e.record.len(),
            "span {s:?} outside a record of {} bytes",
            e.record.len()
        );
    }
    assert_ne!(m.trace_id, Some([0; 16]), "an all-zero trace ID");
    assert_ne!(m.span_id, Some([0; 8]), "an all-zero span ID");
    assert!(m.severity <= 24, "severity {}", m.severity);
}

fn check_all(batch: &Batch, shape: &Shape, out: &mut Vec<u8>) {
    for e in &batch.events {
        check_event(e);
    }
    common::encode_all(batch, shape, out);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, line)) = data.split_first() else {
        return;
    };
    let f = fixture();
    values(line, &f.scanner);

    let settings = &f.settings[usize::from((control >> 2) & 3)];
    let shape = &f.shapes[usize::from((control >> 4) & 1)];
    let tag: &'static [u8] = if control & 0x20 != 0 {
        b"kube.var.log.containers.web-7d9f_shop_app-4f787032226ab1e7a80e716c582f89c0b7a026bf5c9bf45422047a321223d01c.log"
    } else {
        b"4f787032226a"
    };
    let records = records(line, control & 3, control & 0x80 != 0);
    let split = if control & 0x40 != 0 {
        records.len() / 2
    } else {
        records.len()
    };
    let mut enricher = Enricher::new(settings.clone(), Metrics::default());
    let mut out = Vec::new();
    for part in [&records[..split], &records[split..]] {
        if part.is_empty() {
            continue;
        }
        let mut batch = Batch::default();
        let t = batch.tag_index(tag, || Bytes::from_static(tag));
        for (i, r) in part.iter().enumerate() {
            let time = Timestamp {
                secs: 1_700_000_000 + i as i64,
                nanos: 0,
            };
            batch.size += r.len();
            batch.events.push(Event::new(time, t, r.clone()));
        }
        enricher.process(&mut batch);
        check_all(&batch, shape, &mut out);
    }
    let mut rest = Batch::default();
    enricher.flush(&mut rest);
    check_all(&rest, shape, &mut out);
});
