//! What both targets check on the events they produce.

use outrigger::event::{Batch, Event};
use outrigger::msgpack::{Cursor, Kind};
use outrigger::sink::json::{self, Shape, TimeCache};

/// Output bytes the JSON sink may write per input byte. The worst honest cases: a control
/// character in a string inside a non-string key (`\\u001f`, 7 bytes), `nil`s in an array
/// (`null,`, 5), a JSON line written escaped and spliced with `keep_line` (7).
const MAX_GROWTH: usize = 10;

/// Writes every event of `batch` with the JSON sink and checks that each one written is valid
/// JSON (`serde_json` is the referee) of a size linear in its input; a failed event must leave
/// `out` as it was.
pub fn encode_all(batch: &Batch, shape: &Shape, out: &mut Vec<u8>) {
    let strict = std::env::var_os("OUTRIGGER_FUZZ_STRICT").is_some();
    let mut times = TimeCache::default();
    for e in &batch.events {
        if !strict && nested_container_keys(&e.record) {
            continue;
        }
        out.clear();
        if json::event(out, &mut times, batch, e, shape).is_err() {
            assert!(out.is_empty(), "a failed event leaves the output as it was");
            continue;
        }
        let tag = batch.tag(e).len();
        let fields: usize = batch.fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        let bound = MAX_GROWTH * (e.record.len() + fields) + 2 * MAX_GROWTH * tag + 1024;
        assert!(
            out.len() <= bound,
            "the JSON sink wrote {} bytes for a record of {} bytes (tag {tag} bytes): {:02x?}",
            out.len(),
            e.record.len(),
            &e.record[..]
        );
        let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(out) else {
            continue;
        };
        if !strict && known_simd_json_leniency(e) {
            continue;
        }
        panic!(
            "the JSON sink wrote invalid JSON ({err}):\n{}\nrecord: {:02x?}\nmeta: {:?}",
            String::from_utf8_lossy(out),
            &e.record[..],
            e.meta
        );
    }
}

/// Known finding, reported, not yet fixed in `src/sink/json.rs`: a map or array used as a map
/// key is written as its JSON text, escaped into a string; a key inside such a key is escaped
/// twice, and so on, so the output doubles with every level (a 53-byte Message-mode request
/// with keys nested 22 deep writes 8 MiB; 40 deep would be terabytes). Records with a
/// container key inside a container key are not encoded here (unless `OUTRIGGER_FUZZ_STRICT`
/// is set, when the size check above catches them); delete this once the sink is linear.
fn nested_container_keys(record: &[u8]) -> bool {
    let mut deepest = 0;
    // A malformed record still counts what was walked before the damage: the sink writes
    // that much before it gives up.
    let _ = key_depth(&mut Cursor::new(record), 0, &mut deepest);
    deepest >= 2
}

/// Walks the value at `c`, which sits `keys` container keys deep, recording in `deepest` the
/// most container keys any of its parts sits inside. `None` when the value is malformed.
fn key_depth(c: &mut Cursor<'_>, keys: usize, deepest: &mut usize) -> Option<()> {
    *deepest = (*deepest).max(keys);
    let (h, _) = c.read().ok()?;
    match h.kind {
        Kind::Map => {
            for _ in 0..h.children / 2 {
                let container_key = matches!(c.peek().ok()?.kind, Kind::Map | Kind::Array);
                key_depth(c, keys + usize::from(container_key), deepest)?;
                key_depth(c, keys, deepest)?;
            }
        }
        Kind::Array => {
            for _ in 0..h.children {
                key_depth(c, keys, deepest)?;
            }
        }
        _ => {}
    }
    Some(())
}

/// Known finding, reported, not yet fixed in `src/pipeline/json.rs`: simd-json 0.15.1 accepts
/// a scalar followed by a NUL byte (`{"a":1\0}`), and a number with 18 or more mantissa digits
/// followed by any non-structural byte (`{"a":1111111111111111111x}`,
/// `{"ts":1700000000.1234560000000.5}`), so such a line is marked JSON and spliced into the
/// output as it is. Skipped here (unless `OUTRIGGER_FUZZ_STRICT` is set) so that fuzzing goes
/// on finding other things; delete this once the pipeline rejects such lines.
fn known_simd_json_leniency(e: &Event) -> bool {
    let Some(line) = e.meta.line.filter(|_| e.meta.json).map(|s| e.slice(s)) else {
        return false;
    };
    // Digits of one number's mantissa: a run of digits and dots.
    let mut digits = 0;
    for &b in line {
        match b {
            0 => return true,
            b'0'..=b'9' => {
                digits += 1;
                if digits >= 18 {
                    return true;
                }
            }
            b'.' => {}
            _ => digits = 0,
        }
    }
    false
}
