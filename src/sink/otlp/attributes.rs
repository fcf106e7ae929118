//! A JSON line's fields as OTLP values: attributes, or a `KeyValueList` body, written from
//! the members enrichment found ([`crate::event::Batch::members`]). Scalars are written from
//! their text; only a member that needs it (an object, an array, an escaped string, a number
//! that is not an integer) is parsed, and only its own text, so a retry parses nothing again.

use std::borrow::Cow;

use simd_json::{Node, StaticNode};

use super::MAX_DEPTH;
use super::encode::{
    ANY_ARRAY, ANY_BOOL, ANY_INT, ANY_KVLIST, ANY_STRING, KV_KEY, KV_VALUE, Keys, LIST_VALUES,
    RECORD_ATTRIBUTES, float, string_kv,
};
use super::wire::Writer;
use crate::event::{Event, JsonKind, Member, Span};

/// The top-level member among `fields` whose value is the string literal `at` (the message
/// enrichment found): its index and its text. `None` when the literal is not a top-level
/// member's value (a nested message), its key has escapes, or an earlier member has the same
/// key (a repeated key's first value is the one that counts).
pub(super) fn message_member<'a>(
    e: &'a Event,
    fields: &[Member],
    at: Span,
    json: &mut JsonScratch,
) -> Option<(usize, Cow<'a, [u8]>)> {
    let i = fields
        .iter()
        .position(|f| f.value.start == at.start && f.kind == JsonKind::String)?;
    let f = &fields[i];
    let key = e.slice(f.key);
    if f.escaped_key || fields[..i].iter().any(|g| e.slice(g.key) == key) {
        return None;
    }
    Some((i, string_text(e, f, json)?))
}

/// The text of string member `f`: its bytes between the quotes, or unescaped when it has
/// escapes (rare, and only then parsed).
fn string_text<'a>(e: &'a Event, f: &Member, json: &mut JsonScratch) -> Option<Cow<'a, [u8]>> {
    let literal = e.slice(f.value);
    if !f.escaped_value {
        return Some(Cow::Borrowed(&literal[1..literal.len() - 1]));
    }
    json.with_value(literal, |tape| match tape.first() {
        Some(Node::String(s)) => Some(Cow::Owned(s.as_bytes().to_vec())),
        _ => None,
    })
}

/// The name of member `f`: its key as written, or unescaped when it has escapes.
fn key_text<'a>(e: &'a Event, f: &Member, json: &mut JsonScratch) -> Option<Cow<'a, [u8]>> {
    if !f.escaped_key {
        return Some(Cow::Borrowed(e.slice(f.key)));
    }
    let literal = Span {
        start: f.key.start - 1,
        len: f.key.len + 2,
    };
    // The key's literal, as a string member with escapes: unescaped by a parse.
    let key = Member {
        value: literal,
        kind: JsonKind::String,
        escaped_value: true,
        ..*f
    };
    string_text(e, &key, json).or(Some(Cow::Borrowed(e.slice(f.key))))
}

/// The top-level fields of a JSON line as attributes, but for those under the key `skip` (the
/// message that became the body).
pub(super) fn json_attrs(
    w: &mut Writer,
    keys: &mut Keys,
    e: &Event,
    fields: &[Member],
    skip: Option<Span>,
    json: &mut JsonScratch,
) {
    let skip = skip.map(|s| e.slice(s));
    for f in fields {
        let Some(k) = key_text(e, f, json) else {
            continue;
        };
        if skip == Some(&k[..]) || !keys.admit(&k) {
            continue;
        }
        if f.kind == JsonKind::String
            && !f.escaped_value
            && let Some(v) = string_text(e, f, json)
        {
            string_kv(w, RECORD_ATTRIBUTES, &k, &v);
            continue;
        }
        let kv = w.begin(RECORD_ATTRIBUTES);
        w.str(KV_KEY, &k);
        let value = w.begin(KV_VALUE);
        member_value(w, e, f, json, 1);
        w.end(value);
        w.end(kv);
    }
}

/// A JSON line's members as a `KeyValueList` (every member, repeated keys too).
pub(super) fn json_object(
    w: &mut Writer,
    e: &Event,
    fields: &[Member],
    json: &mut JsonScratch,
    depth: usize,
) {
    let list = w.begin(ANY_KVLIST);
    for f in fields {
        let k = key_text(e, f, json).unwrap_or_default();
        let kv = w.begin(LIST_VALUES);
        w.str(KV_KEY, &k);
        let value = w.begin(KV_VALUE);
        member_value(w, e, f, json, depth + 1);
        w.end(value);
        w.end(kv);
    }
    w.end(list);
}

/// Member `f`'s value as an `AnyValue`'s fields. Scalars are read from their text; only an
/// object, an array, an escaped string or a non-integer number is parsed, and only its own
/// text.
fn member_value(w: &mut Writer, e: &Event, f: &Member, json: &mut JsonScratch, depth: usize) {
    let text = e.slice(f.value);
    match f.kind {
        JsonKind::Null => {}
        JsonKind::Bool => w.bool_always(ANY_BOOL, text == b"true"),
        JsonKind::String if !f.escaped_value => {
            w.bytes_always(ANY_STRING, &text[1..text.len() - 1]);
        }
        JsonKind::Number
            if !text.starts_with(b"-0")
                && let Some(n) = std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok()) =>
        {
            w.int_always(ANY_INT, n);
        }
        _ => json.with_value(text, |tape| json_value(w, tape, &mut 0, depth)),
    }
}

/// How many tape nodes the value at `i` takes.
fn nodes(tape: &[Node<'_>], i: usize) -> usize {
    match tape.get(i) {
        Some(Node::Object { count, .. } | Node::Array { count, .. }) => count + 1,
        _ => 1,
    }
}

/// The value at `tape[*i]` as an `AnyValue`'s fields; `*i` moves past it.
fn json_value(w: &mut Writer, tape: &[Node<'_>], i: &mut usize, depth: usize) {
    let Some(node) = tape.get(*i) else { return };
    if depth > MAX_DEPTH {
        *i += nodes(tape, *i);
        return;
    }
    *i += 1;
    match *node {
        Node::String(s) => w.bytes_always(ANY_STRING, s.as_bytes()),
        Node::Static(StaticNode::Null) => {}
        Node::Static(StaticNode::Bool(b)) => w.bool_always(ANY_BOOL, b),
        Node::Static(StaticNode::I64(n)) => w.int_always(ANY_INT, n),
        Node::Static(StaticNode::U64(n)) => match i64::try_from(n) {
            Ok(n) => w.int_always(ANY_INT, n),
            Err(_) => w.str_always(ANY_STRING, n.to_string().as_bytes()),
        },
        Node::Static(StaticNode::F64(f)) => float(w, f),
        Node::Object { len, .. } => {
            let list = w.begin(ANY_KVLIST);
            for _ in 0..len {
                let Some(Node::String(k)) = tape.get(*i) else {
                    break;
                };
                *i += 1;
                let kv = w.begin(LIST_VALUES);
                w.str(KV_KEY, k.as_bytes());
                let value = w.begin(KV_VALUE);
                json_value(w, tape, i, depth + 1);
                w.end(value);
                w.end(kv);
            }
            w.end(list);
        }
        Node::Array { len, .. } => {
            let list = w.begin(ANY_ARRAY);
            for _ in 0..len {
                let value = w.begin(LIST_VALUES);
                json_value(w, tape, i, depth + 1);
                w.end(value);
            }
            w.end(list);
        }
    }
}

/// simd-json's buffers and tape for the member values that need a parse, reused across the
/// lines of one request.
pub(super) struct JsonScratch {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
}

impl Default for JsonScratch {
    fn default() -> Self {
        JsonScratch {
            input: Vec::new(),
            buffers: simd_json::Buffers::new(1024),
            tape: Some(simd_json::Tape::null().reset()),
        }
    }
}

impl JsonScratch {
    /// Calls `f` with the tape of the JSON value `text` (one member's value: valid, as the
    /// line it is part of parsed); an empty tape if it does not parse, which only a bug gets
    /// to.
    fn with_value<R>(&mut self, text: &[u8], f: impl FnOnce(&[Node<'_>]) -> R) -> R {
        self.input.clear();
        self.input.extend_from_slice(text);
        let mut tape = self
            .tape
            .take()
            .unwrap_or_else(simd_json::Tape::null)
            .reset();
        let out = match simd_json::fill_tape(&mut self.input, &mut self.buffers, &mut tape) {
            Ok(()) => f(&tape.0),
            Err(_) => f(&[]),
        };
        self.tape = Some(tape.reset());
        out
    }
}
