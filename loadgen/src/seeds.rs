//! Seed inputs for the fuzz targets in `fuzz/`, from the corpus and `testdata/enrich/`.
//!
//! ```text
//! cargo run --release --bin loadgen -- fuzz-seeds --out fuzz/seeds
//! ```
//!
//! - `forward_decode/`: whole forward-protocol inputs: one request of each mode built from the
//!   corpus (three Message-mode requests back to back, so the scanner loop goes round), and
//!   hand-made ones for the less common shapes (a `chunk` option, a float time with `nil`
//!   options, Fluent Bit's `[[time, metadata], record]` entries and group markers, Docker's
//!   split-line fragments).
//! - `enrich/`: a control byte (see `fuzz/fuzz_targets/enrich.rs`) and a log line: every line
//!   of `testdata/enrich/*.jsonl`, a sample of corpus lines, bare ID and time values, and a few
//!   lines with the control bits that reach split lines, stack traces and the tight limits.
//! - `disk_record/`: bytes as a disk-buffer segment holds them: the forward seeds as records
//!   one after another, then zeros (a segment's preallocated end); the same cut inside its
//!   last record (a torn tail); and one record with a byte of its payload flipped.
//!
//! Deterministic: the same files every time. Existing files of the same name are replaced.

use std::path::Path;

use anyhow::Context as _;

use crate::corpus::{self, Record};
use crate::frames::{self, Frames, Mode};

/// Corpus lines taken as enrich seeds: every `STRIDE`th record.
const STRIDE: usize = 100;

pub fn write(out: &Path, records: &[Record], enrich_cases: &Path) -> anyhow::Result<()> {
    let forward = forward_seeds(records);
    let enrich = enrich_seeds(records, enrich_cases)?;
    let disk = disk_seeds(&forward);
    for (dir, seeds) in [
        ("forward_decode", &forward),
        ("enrich", &enrich),
        ("disk_record", &disk),
    ] {
        let dir = out.join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, bytes) in seeds {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        let total: usize = seeds.iter().map(|(_, b)| b.len()).sum();
        eprintln!(
            "wrote {} seeds ({total} bytes) to {}",
            seeds.len(),
            dir.display()
        );
    }
    Ok(())
}

fn forward_seeds(records: &[Record]) -> Vec<(String, Vec<u8>)> {
    let mut seeds = vec![(
        "message-x3".to_string(),
        Frames::build(records, Mode::Message, 1, 0, 3).bytes,
    )];
    for mode in [Mode::Forward, Mode::Packed, Mode::Compressed, Mode::Zstd] {
        seeds.push((
            format!("{}-x4", mode.name()),
            Frames::build(records, mode, 4, 10, 1).bytes,
        ));
    }
    seeds.extend(hand_made());
    seeds
}

/// A msgpack map of string pairs.
fn string_map(out: &mut Vec<u8>, pairs: &[(&str, &str)]) {
    rmp::encode::write_map_len(out, pairs.len() as u32).expect("writing to a Vec");
    for (k, v) in pairs {
        rmp::encode::write_str(out, k).expect("writing to a Vec");
        rmp::encode::write_str(out, v).expect("writing to a Vec");
    }
}

fn hand_made() -> Vec<(String, Vec<u8>)> {
    let w = "writing to a Vec";
    let record = [
        ("container_id", "c0ffee"),
        ("container_name", "/web-1"),
        ("source", "stdout"),
        (
            "log",
            r#"{"level":"warn","msg":"slow","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7"}"#,
        ),
    ];
    let mut seeds = Vec::new();

    // ["web", EventTime, record, {"chunk": "…"}]: a client that wants an ack.
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 4).expect(w);
    rmp::encode::write_str(&mut f, "web").expect(w);
    frames::event_time(&mut f, 1_700_000_000, 123_456_789).expect(w);
    string_map(&mut f, &record);
    string_map(&mut f, &[("chunk", "p8n9gmxTQVC8/nh2wlKKeQ==")]);
    seeds.push(("message-chunk".to_string(), f));

    // ["web", 1700000000.5, record, nil]: a Python client's float, old Docker's nil options.
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 4).expect(w);
    rmp::encode::write_str(&mut f, "web").expect(w);
    rmp::encode::write_f64(&mut f, 1_700_000_000.5).expect(w);
    string_map(&mut f, &record);
    rmp::encode::write_nil(&mut f).expect(w);
    seeds.push(("message-float-nil".to_string(), f));

    // Fluent Bit: a group-start marker, then a [[time, metadata], record] entry.
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 2).expect(w);
    rmp::encode::write_str(&mut f, "web").expect(w);
    rmp::encode::write_array_len(&mut f, 2).expect(w);
    for (secs, rec) in [(0xffff_ffff, &[][..]), (1_700_000_000, &record[..])] {
        rmp::encode::write_array_len(&mut f, 2).expect(w);
        rmp::encode::write_array_len(&mut f, 2).expect(w);
        frames::event_time(&mut f, secs, 0).expect(w);
        string_map(&mut f, &[("otlp", "x")]);
        string_map(&mut f, rec);
    }
    seeds.push(("forward-fluent-bit-v2".to_string(), f));

    // Docker's split long line: three fragments in one Forward-mode request.
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).expect(w);
    rmp::encode::write_str(&mut f, "web").expect(w);
    rmp::encode::write_array_len(&mut f, 3).expect(w);
    let pieces = [
        r#"{"level":"error","msg":"a long "#,
        r#"line, cut by Docker at 16 KiB","#,
        r#""trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
    ];
    for (i, piece) in pieces.iter().enumerate() {
        let ordinal = (i + 1).to_string();
        rmp::encode::write_array_len(&mut f, 2).expect(w);
        rmp::encode::write_uint(&mut f, 1_700_000_000).expect(w);
        string_map(
            &mut f,
            &[
                ("container_id", "c0ffee"),
                ("source", "stdout"),
                ("log", piece),
                ("partial_message", "true"),
                ("partial_id", "p1"),
                ("partial_ordinal", &ordinal),
                ("partial_last", if i == 2 { "true" } else { "false" }),
            ],
        );
    }
    string_map(&mut f, &[]);
    seeds.push(("forward-partial".to_string(), f));
    seeds
}

/// Segment-shaped inputs: each forward seed as one record's payload, as a connection's read
/// is logged.
fn disk_seeds(forward: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    use outrigger::buffer::disk::payload::{Kind, Payload};
    use outrigger::buffer::disk::record;
    use outrigger::event::Timestamp;

    let fields: std::sync::Arc<[(bytes::Bytes, bytes::Bytes)]> = vec![(
        bytes::Bytes::from_static(b"source_addr"),
        bytes::Bytes::from_static(b"10.0.0.7:5170"),
    )]
    .into();
    let mut segment = Vec::new();
    let mut payload = Vec::new();
    for (i, (_, body)) in forward.iter().enumerate() {
        payload.clear();
        Payload {
            kind: Kind::Forward,
            stream: 1 + i as u64 % 3,
            received: Timestamp {
                secs: 1_700_000_000 + i as i64,
                nanos: 250_000_000,
            },
            source: bytes::Bytes::from_static(b"forward"),
            fields: if i % 2 == 0 {
                fields.clone()
            } else {
                Vec::new().into()
            },
            body: bytes::Bytes::copy_from_slice(body),
        }
        .encode(&mut payload);
        record::encode(100 + i as u64, &payload, &mut segment);
    }
    let whole = segment.len();
    let mut seeds = Vec::new();
    let mut zeros = segment.clone();
    zeros.resize(whole + 4096, 0);
    seeds.push(("segment".to_string(), zeros));
    seeds.push(("torn-tail".to_string(), segment[..whole - 7].to_vec()));
    let mut flipped = segment.clone();
    flipped[record::HEADER + 40] ^= 0x20;
    seeds.push(("flipped".to_string(), flipped));
    seeds
}

fn enrich_seeds(records: &[Record], cases: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let seed = |control: u8, line: &str| [&[control][..], line.as_bytes()].concat();
    let mut seeds = Vec::new();
    for file in ["trace-cases.jsonl", "severity-cases.jsonl"] {
        let path = cases.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let stem = file.trim_end_matches("-cases.jsonl");
        for (i, l) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let line = corpus::string_field(l, "line")
                .with_context(|| format!("{}: line {}: no `line`", path.display(), i + 1))?;
            seeds.push((format!("{stem}-{i:03}"), seed(0, &line)));
        }
    }
    for (i, r) in records.iter().step_by(STRIDE).enumerate() {
        seeds.push((format!("corpus-{i:03}"), seed(0, &r.log)));
    }
    // Bare values, for the value parsers that run on the whole line.
    let values = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "b3",
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90",
        ),
        (
            "xray",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        ),
        (
            "xray-segment",
            "1-5759e988-bd862e3fe1be46a994272793@53995c3f42cd8ad8",
        ),
        (
            "gcp",
            "projects/my-project/traces/4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        (
            "jaeger",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        ),
        ("datadog", "-1234567890123456789"),
        ("rfc3339", "2024-05-01T10:00:00.123456789+02:00"),
        ("rfc3339-leap", "2016-12-31 23:59:60,5-0000"),
        ("epoch", "1700000000123.456"),
        ("klog", "W1127 10:00:00.000000       1 main.go:42] low disk"),
        (
            "k8s-tag",
            "kube.var.log.containers.web-7d9f_shop_app-4f787032226ab1e7a80e716c582f89c0b7a026bf5c9bf45422047a321223d01c.log",
        ),
    ];
    for (name, v) in values {
        seeds.push((format!("value-{name}"), seed(0, v)));
    }
    // The stateful parts: split lines, stack traces, tight limits, nesting, a Kubernetes tag,
    // two batches, a bin line.
    let json = records
        .iter()
        .find(|r| r.log.starts_with('{') && corpus::has_trace_id(&r.log))
        .map_or("{}", |r| r.log.as_str());
    let stack = "2024-05-01 10:00:00.000 ERROR 1 --- [main] c.e.App : request failed\n\
                 java.lang.IllegalStateException: boom\n\
                 \tat com.example.App.handle(App.java:42)\n\
                 \tat com.example.App.main(App.java:7)\n\
                 Caused by: java.io.IOException: reset\n\
                 \t... 2 more\n\
                 2024-05-01 10:00:01.000 INFO 1 --- [main] c.e.App : next";
    let timed = r#"{"ts":"2024-05-01T10:00:00.5Z","level":"info","msg":"timed","dd":{"trace_id":"1234567890","span_id":"987654321"}}"#;
    for (name, control, line) in [
        ("partial", 0x01, json),
        ("partial-gap", 0x02, json),
        ("stack", 0x07, stack),
        ("stack-tight", 0x0f, stack),
        ("tight-time", 0x08, timed),
        ("nested", 0x10, json),
        ("k8s", 0x20, json),
        ("two-batches", 0x41, json),
        ("bin", 0x80, json),
    ] {
        seeds.push((format!("control-{name}"), seed(control, line)));
    }
    Ok(seeds)
}
