//! What both targets check on the events they produce.

use outrigger::event::Batch;
use outrigger::sink::jsonl::{self, Shape, TimeCache};

/// Output bytes the JSON sink may write per input byte. The worst honest cases: a control
/// character in a string inside a non-string key (`\\u001f`, 7 bytes), `nil`s in an array
/// (`null,`, 5), a JSON line written escaped and spliced with `keep_line` (7).
const MAX_GROWTH: usize = 10;

/// Writes every event of `batch` with the JSON sink and checks that each one written is valid
/// JSON (`serde_json` is the referee) of a size linear in its input; a failed event must leave
/// `out` as it was.
pub fn encode_all(batch: &Batch, shape: &Shape, out: &mut Vec<u8>) {
    let mut times = TimeCache::default();
    for e in &batch.events {
        out.clear();
        if jsonl::event(out, &mut times, batch, e, shape).is_err() {
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
        panic!(
            "the JSON sink wrote invalid JSON ({err}):\n{}\nrecord: {:02x?}\nmeta: {:?}",
            String::from_utf8_lossy(out),
            &e.record[..],
            e.meta
        );
    }
}
