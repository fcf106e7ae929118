//! JSON log lines: parsed with simd-json's tape, walked only along the keys enrichment wants.
//!
//! simd-json parses in place and overwrites its input, so each line is copied into a scratch
//! buffer first; the original bytes stay untouched in the record for the encoders to splice.
//! The scratch buffer, simd-json's buffers and the tape are reused per thread, so a parse
//! allocates nothing once warm. No value tree is built: the walk looks up each top-level key
//! in a [`KeyTable`] (a bucket per key length, then a byte compare), descends only into
//! objects a configured dotted path names (`trace.id`, `dd.trace_id`, `log.level`), and hands
//! what it finds to a [`Collector`] (see [`super::fields`]).
//!
//! The same parse also says where the line's top-level members are (key, value, JSON type):
//! the keys' places come from the tape, and each value lies between its key's colon and the
//! next key. They go into the batch's side table, so the encoders read the line's fields from
//! there on every attempt instead of parsing it again, and all read it the same way.
//! [`members_of`] finds the same members by scanning the text, for events that come without
//! them (enrichment recorded none because no sink reads them).

use std::cell::RefCell;
use std::ops::Range;

use simd_json::{Node, StaticNode};

#[cfg(test)]
use crate::event::Members;
use crate::event::{Batch, Event, JsonKind, Member, Span};

use super::fields::{Candidates, Collector, Families, Found, KeyTable, Locate, Value};

/// Bounds on what is parsed; a line beyond them stays text.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line_bytes: usize,
    pub max_depth: usize,
    pub max_fields: usize,
}

/// Why a line that looked like JSON was left as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Invalid,
    TooLarge,
    TooDeep,
    TooManyFields,
}

impl Rejected {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Invalid => "invalid_json",
            Rejected::TooLarge => "line_too_large",
            Rejected::TooDeep => "too_deep",
            Rejected::TooManyFields => "too_many_fields",
        }
    }
}

struct Scratch {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
    candidates: Candidates,
    /// [`check`]'s stack of open containers.
    open: Vec<usize>,
}

thread_local! {
    /// One per thread: parsing is synchronous, so a batch never holds it across an await.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        input: Vec::with_capacity(4096),
        buffers: simd_json::Buffers::new(4096),
        tape: Some(simd_json::Tape::null().reset()),
        candidates: Candidates::default(),
        open: Vec::new(),
    });
}

/// Whether `line` should be parsed: its first non-blank byte opens an object.
pub fn looks_like_object(line: &[u8]) -> bool {
    line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Parses `line` (which [`looks_like_object`]) and walks it; its top-level members are
/// appended to `members` when given, as spans of the line.
///
/// # Errors
/// The line is not valid JSON, or breaks a limit; the caller keeps it as text, and nothing is
/// appended.
pub fn parse(
    line: &[u8],
    keys: &KeyTable,
    families: &Families,
    limits: &Limits,
    members: Option<&mut Vec<Member>>,
) -> Result<Found, Rejected> {
    if line.len() > limits.max_line_bytes {
        return Err(Rejected::TooLarge);
    }
    // simd-json 0.15 accepts a scalar followed by a raw NUL (`{"a":1\0}`); a NUL is never
    // valid JSON, so such a line is text.
    if memchr::memchr(0, line).is_some() {
        return Err(Rejected::Invalid);
    }
    SCRATCH.with_borrow_mut(|s| {
        let Scratch {
            input,
            buffers,
            tape,
            candidates,
            open,
        } = s;
        input.clear();
        input.extend_from_slice(line);
        let base = input.as_ptr() as usize;
        let mut t = tape
            .take()
            .expect("scratch tape is always returned")
            .reset();
        let parsed = simd_json::fill_tape(input, buffers, &mut t);
        let result = parsed
            .map_err(|_| Rejected::Invalid)
            .and_then(|()| check(&t.0, limits, open))
            .and_then(|long_numbers| {
                // simd-json 0.15 also accepts a number of 18 or more digits followed by a
                // stray byte; such numbers are rare, so only their lines are checked again.
                if long_numbers && !numbers_end_cleanly(line) {
                    Err(Rejected::Invalid)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| {
                let walk = Walk { line, base };
                let found =
                    Collector::collect_in(candidates, families, |c| walk.object(&t.0, keys, c));
                let Some(members) = members else {
                    return Ok(found);
                };
                let from = members.len();
                if !walk.members(&t.0, members) {
                    // Only an input the tape's places cannot be matched with gets here (an
                    // empty key simd-json did not place in the line): scan the text instead.
                    members.truncate(from);
                    let mut one = Vec::new();
                    if !self::members(
                        line.trim_ascii(),
                        line.len() - line.trim_ascii_start().len(),
                        &mut one,
                    ) {
                        return Err(Rejected::Invalid);
                    }
                    members.extend(one);
                }
                Ok(found)
            });
        *tape = Some(t.reset());
        result
    })
}

/// Enforces depth and field-count limits over the whole tape, and that it is an object.
/// Returns whether the tape holds a float or an integer of 17 digits or more (see
/// [`numbers_end_cleanly`]).
fn check(tape: &[Node<'_>], limits: &Limits, open: &mut Vec<usize>) -> Result<bool, Rejected> {
    if !matches!(tape.first(), Some(Node::Object { .. })) {
        return Err(Rejected::Invalid);
    }
    // Ends (exclusive tape index) of the containers open at each depth.
    open.clear();
    let mut fields = 0;
    let mut long_numbers = false;
    for (i, node) in tape.iter().enumerate() {
        while open.last().is_some_and(|end| *end <= i) {
            open.pop();
        }
        match node {
            Node::Object { len, count } | Node::Array { len, count } => {
                if matches!(node, Node::Object { .. }) {
                    fields += len;
                    if fields > limits.max_fields {
                        return Err(Rejected::TooManyFields);
                    }
                }
                open.push(i + count + 1);
                if open.len() > limits.max_depth {
                    return Err(Rejected::TooDeep);
                }
            }
            Node::Static(StaticNode::F64(_)) => long_numbers = true,
            Node::Static(StaticNode::U64(n)) => long_numbers |= *n >= 10u64.pow(16),
            Node::Static(StaticNode::I64(n)) => long_numbers |= n.unsigned_abs() >= 10u64.pow(16),
            _ => {}
        }
    }
    Ok(long_numbers)
}

/// Whether every number outside strings ends where JSON says one may: at `,`, `}`, `]`,
/// whitespace or the end.
fn numbers_end_cleanly(line: &[u8]) -> bool {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'"' => {
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    i += if line[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                // -? digits (. digits)? ([eE] [+-]? digits)?
                let digits = |i: &mut usize| {
                    while *i < line.len() && line[*i].is_ascii_digit() {
                        *i += 1;
                    }
                };
                i += usize::from(line[i] == b'-');
                digits(&mut i);
                if line.get(i) == Some(&b'.') {
                    i += 1;
                    digits(&mut i);
                }
                if matches!(line.get(i), Some(b'e' | b'E')) {
                    i += 1;
                    i += usize::from(matches!(line.get(i), Some(b'+' | b'-')));
                    digits(&mut i);
                }
                if i < line.len()
                    && !matches!(line[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

/// Nodes a value occupies on the tape, itself included.
fn width(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

struct Walk<'a> {
    line: &'a [u8],
    /// Address of the scratch copy: string offsets from it are offsets in `line`.
    base: usize,
}

impl Walk<'_> {
    /// The top-level members of the object on `tape` into `out`, as spans of the line. A
    /// key's place is its tape string's offset in the scratch copy (the same in the line);
    /// its value runs from after the colon that follows it to before the comma that precedes
    /// the next key (or the closing brace). One pass, a few bytes looked at per member: this
    /// runs on every JSON line. False when a place does not check out.
    fn members(&self, tape: &[Node<'_>], out: &mut Vec<Member>) -> bool {
        let Some(Node::Object { len, .. }) = tape.first() else {
            return false;
        };
        let line = self.line;
        let is_ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        let skip_ws = |mut i: usize| {
            while i < line.len() && is_ws(line[i]) {
                i += 1;
            }
            i
        };
        let back_ws = |mut i: usize| {
            while i > 0 && is_ws(line[i - 1]) {
                i -= 1;
            }
            i
        };
        // Without a backslash anywhere, no key or string has escapes: a key's text ends
        // where the tape's does.
        let plain = memchr::memchr(b'\\', line).is_none();
        // Ends the value of the last member placed at `end` (exclusive, trailing blanks
        // already left out), once what follows it is known.
        let close = |m: &mut Member, end: usize| -> bool {
            let start = m.value.start as usize;
            if end <= start {
                return false;
            }
            // A string whose text is shorter than its literal, quotes aside, had escapes.
            m.escaped_value = m.kind == JsonKind::String && end - start != m.value.len as usize + 2;
            m.value = Span::new(start..end);
            true
        };
        let from = out.len();
        out.reserve(*len);
        let mut i = 1;
        for _ in 0..*len {
            let Some(Node::String(key)) = tape.get(i) else {
                return false;
            };
            let Some(start) = (key.as_ptr() as usize).checked_sub(self.base) else {
                return false;
            };
            if start == 0 || start + key.len() >= line.len() || line[start - 1] != b'"' {
                return false;
            }
            if out.len() > from {
                // The member before ends at the comma before this key.
                let comma = back_ws(start - 1);
                if comma == 0 || line[comma - 1] != b',' {
                    return false;
                }
                let end = back_ws(comma - 1);
                if !close(out.last_mut().expect("placed"), end) {
                    return false;
                }
            }
            let (key_end, escaped_key) = if line[start + key.len()] == b'"'
                && (plain || !line[start..start + key.len()].contains(&b'\\'))
            {
                (start + key.len(), false)
            } else {
                match string_end(line, start - 1) {
                    Some(e) => (e - 1, true),
                    None => return false,
                }
            };
            let colon = skip_ws(key_end + 1);
            if line.get(colon) != Some(&b':') {
                return false;
            }
            i += 1;
            let Some(value) = tape.get(i) else {
                return false;
            };
            let (kind, text_len) = match value {
                Node::String(v) => (JsonKind::String, v.len()),
                Node::Object { .. } => (JsonKind::Object, 0),
                Node::Array { .. } => (JsonKind::Array, 0),
                Node::Static(StaticNode::Null) => (JsonKind::Null, 0),
                Node::Static(StaticNode::Bool(_)) => (JsonKind::Bool, 0),
                Node::Static(_) => (JsonKind::Number, 0),
            };
            i += width(value);
            out.push(Member {
                key: Span::new(start..key_end),
                // The value's start, and its string's unescaped length, until `close`.
                value: Span {
                    start: skip_ws(colon + 1) as u32,
                    len: text_len as u32,
                },
                kind,
                escaped_key,
                escaped_value: false,
            });
        }
        let brace = back_ws(line.len());
        if brace == 0 || line[brace - 1] != b'}' {
            return false;
        }
        // The last member ends before the closing brace.
        out.len() == from || close(out.last_mut().expect("placed"), back_ws(brace - 1))
    }

    fn object(&self, tape: &[Node<'_>], keys: &KeyTable, c: &mut Collector<'_>) {
        let Some(Node::Object { len, .. }) = tape.first() else {
            return;
        };
        let mut i = 1;
        for _ in 0..*len {
            let Some(Node::String(key)) = tape.get(i) else {
                return;
            };
            i += 1;
            let Some(value) = tape.get(i) else { return };
            let w = width(value);
            if let Some(entry) = keys.get(key.as_bytes()) {
                for role in entry.roles() {
                    c.offer(*role, self::value(value), self);
                }
                if let (Some(children), Node::Object { .. }) = (entry.children(), value) {
                    self.object(&tape[i..i + w], children, c);
                }
            }
            i += w;
        }
    }
}

impl Locate for Walk<'_> {
    /// The range of a tape string (inside the scratch copy) in the line, when its bytes there
    /// are the same (no escapes were undone).
    fn text(&self, s: &[u8]) -> Option<Range<usize>> {
        let start = (s.as_ptr() as usize).checked_sub(self.base)?;
        let r = start..start + s.len();
        (self.line.get(r.clone()) == Some(s)).then_some(r)
    }

    /// The raw JSON string literal (quotes included) whose content starts where `s` does.
    fn message(&self, s: &[u8]) -> Option<Range<usize>> {
        let start = (s.as_ptr() as usize)
            .checked_sub(self.base)?
            .checked_sub(1)?;
        if self.line.get(start) != Some(&b'"') {
            return None;
        }
        let mut i = start + 1;
        while i < self.line.len() {
            match self.line[i] {
                b'\\' => i += 2,
                b'"' => return Some(start..i + 1),
                _ => i += 1,
            }
        }
        None
    }
}

/// A tape node as a field value.
fn value<'a>(node: &Node<'a>) -> Value<'a> {
    match node {
        Node::String(s) => Value::Str(s.as_bytes()),
        Node::Static(StaticNode::U64(n)) => Value::U64(*n),
        Node::Static(StaticNode::I64(n)) => Value::I64(*n),
        Node::Static(StaticNode::F64(f)) => Value::F64(*f),
        Node::Static(StaticNode::Bool(b)) => Value::Bool(*b),
        _ => Value::Other,
    }
}

/// Fills `batch.members` with the top-level members of every event's JSON line (`meta.json`)
/// and points each event at its own, as enrichment leaves them: for tests that build
/// enriched events by hand. A line the scanner cannot walk goes on as text.
#[cfg(test)]
pub fn index(batch: &mut Batch) {
    let (mut all, mut one) = (Vec::new(), Vec::new());
    for e in &mut batch.events {
        e.meta.members = Members::default();
        let Some(line) = e.meta.line.filter(|_| e.meta.json) else {
            continue;
        };
        let text = e.slice(line);
        let lead = text.len() - text.trim_ascii_start().len();
        if members(text.trim_ascii(), line.start as usize + lead, &mut one) {
            e.meta.members = Members {
                start: all.len() as u32,
                len: one.len() as u32,
            };
            all.extend_from_slice(&one);
        } else {
            e.meta.json = false;
        }
    }
    // Exactly its size, as enrichment makes it: the queues charge the capacity.
    batch.members = all.as_slice().to_vec();
}

/// The members of `event`'s JSON line: from its batch's side table, or, when enrichment did
/// not record them (no sink it knew of reads them), scanned
/// from the line into `scratch`. Empty for an event without a JSON line; `None` when its line
/// cannot be walked after all (only a bug gets there): the caller writes it as text.
pub fn members_of<'a>(
    batch: &'a Batch,
    event: &Event,
    scratch: &'a mut Vec<Member>,
) -> Option<&'a [Member]> {
    let found = batch.members(event);
    if !found.is_empty() || !event.meta.json {
        return Some(found);
    }
    let Some(line) = event.meta.line else {
        return Some(found);
    };
    let text = event.slice(line);
    let lead = text.len() - text.trim_ascii_start().len();
    members(text.trim_ascii(), line.start as usize + lead, scratch).then_some(&scratch[..])
}

/// The members of the JSON object `obj` (valid JSON, braces included) into `out`, as spans
/// offset by `base`; false when `obj` is not an object this scanner can walk.
pub fn members(obj: &[u8], base: usize, out: &mut Vec<Member>) -> bool {
    out.clear();
    let ws = |b: &[u8], mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let span = |r: Range<usize>| Span::new(base + r.start..base + r.end);
    if obj.first() != Some(&b'{') {
        return false;
    }
    let mut i = ws(obj, 1);
    if obj.get(i) == Some(&b'}') {
        return i + 1 == obj.len();
    }
    loop {
        if obj.get(i) != Some(&b'"') {
            return false;
        }
        let Some(key_end) = string_end(obj, i) else {
            return false;
        };
        let key = i + 1..key_end - 1;
        i = ws(obj, key_end);
        if obj.get(i) != Some(&b':') {
            return false;
        }
        let start = ws(obj, i + 1);
        let Some(end) = value_end(obj, start) else {
            return false;
        };
        let kind = match obj[start] {
            b'"' => JsonKind::String,
            b'{' => JsonKind::Object,
            b'[' => JsonKind::Array,
            b't' | b'f' => JsonKind::Bool,
            b'n' => JsonKind::Null,
            _ => JsonKind::Number,
        };
        out.push(Member {
            escaped_key: obj[key.clone()].contains(&b'\\'),
            escaped_value: kind == JsonKind::String && obj[start..end].contains(&b'\\'),
            key: span(key),
            value: span(start..end),
            kind,
        });
        i = ws(obj, end);
        match obj.get(i) {
            Some(b',') => i = ws(obj, i + 1),
            Some(b'}') => return i + 1 == obj.len(),
            _ => return false,
        }
    }
}

/// The index just past the string that opens at `b[i]` (a `"`).
pub fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[j] == b'\\' {
            j += 2;
        } else {
            return Some(j + 1);
        }
    }
}

/// The index just past the value that starts at `b[i]`.
pub fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let len = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace())
                .unwrap_or(b.len() - i);
            (len > 0).then_some(i + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(line: &[u8]) -> Result<Found, Rejected> {
        let limits = Limits {
            max_line_bytes: 1 << 20,
            max_depth: 64,
            max_fields: 1024,
        };
        parse(
            line,
            &KeyTable::default(),
            &Families { formats: vec![] },
            &limits,
            Some(&mut Vec::new()),
        )
    }

    #[test]
    fn lines_simd_json_would_wrongly_accept_are_text() {
        // Found by fuzzing: a raw NUL after a scalar, and long numbers followed by garbage.
        for line in [
            &b"{\"a\":1\0}"[..],
            b"{\"a\":111111111111111111x}",
            b"{\"ts\":1700000000.123456000000000.5}",
        ] {
            assert_eq!(parse_default(line), Err(Rejected::Invalid), "{line:?}");
        }
        // Long numbers that end properly are fine.
        for line in [
            &b"{\"a\":111111111111111111}"[..],
            b"{\"a\": 1700000000.123456, \"b\":[1e300 ,2]}",
            b"{\"s\":\"123456789012345678x\",\"n\":-1234567890123456789}",
        ] {
            assert!(
                parse_default(line).is_ok(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn member_scanner() {
        let mut m = Vec::new();
        let obj = br#"{ "a" : "x\"}" , "b\\":{"c":[1,"]"]}, "d":-1.5e3 ,"e":null, "f":true}"#;
        assert!(members(obj, 100, &mut m));
        let at = |s: Span| &obj[s.start as usize - 100..(s.start + s.len) as usize - 100];
        let got: Vec<_> = m
            .iter()
            .map(|mb| {
                (
                    at(mb.key),
                    at(mb.value),
                    mb.kind,
                    mb.escaped_key,
                    mb.escaped_value,
                )
            })
            .collect();
        use JsonKind::*;
        assert_eq!(
            got,
            vec![
                (&b"a"[..], &br#""x\"}""#[..], String, false, true),
                (br#"b\\"#, br#"{"c":[1,"]"]}"#, Object, true, false),
                (b"d", b"-1.5e3", Number, false, false),
                (b"e", b"null", Null, false, false),
                (b"f", b"true", Bool, false, false),
            ]
        );
        assert!(members(b"{}", 0, &mut m) && m.is_empty());
        assert!(members(b"{ }", 0, &mut m) && m.is_empty());
        for bad in [
            &b"[1]"[..],
            b"{\"a\":1",
            b"{\"a\" 1}",
            b"{\"a\":\"x}",
            b"{\"a\":{\"b\":1}",
            b"{\"a\":1}x",
            b"{\"a\":}",
        ] {
            assert!(
                !members(bad, 0, &mut m),
                "{}",
                std::string::String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn index_points_each_json_event_at_its_members() {
        use crate::event::Event;
        let mut b = Batch::default();
        for (line, json) in [
            (r#" {"a":1,"b":"x"}"#, true),
            ("text", false),
            (r#"{"c":[]}"#, true),
            (r#"{"d":"#, true),
        ] {
            let bytes = bytes::Bytes::from(format!("prefix {line}"));
            let span = Span::new(7..bytes.len());
            let mut e = Event::line(Default::default(), 0, bytes, span, None);
            e.meta.json = json;
            b.events.push(e);
        }
        index(&mut b);
        let keys = |i: usize| -> Vec<Vec<u8>> {
            let e = &b.events[i];
            b.members(e)
                .iter()
                .map(|m| e.slice(m.key).to_vec())
                .collect()
        };
        assert_eq!(keys(0), [b"a".to_vec(), b"b".to_vec()]);
        assert!(keys(1).is_empty());
        assert_eq!(keys(2), [b"c".to_vec()]);
        let e = &b.events[0];
        assert_eq!(e.slice(b.members(e)[1].value), br#""x""#);
        assert!(
            !b.events[3].meta.json,
            "what the scanner cannot walk is text"
        );
        assert_eq!(b.members.capacity(), 3);

        // Without a side table, `members_of` scans; a line it cannot walk is `None`.
        let mut bare = Batch {
            events: b.events.clone(),
            ..Default::default()
        };
        bare.events[3].meta.json = true;
        let mut scratch = Vec::new();
        let e = &bare.events[0];
        let keys: Vec<_> = members_of(&bare, e, &mut scratch)
            .unwrap()
            .iter()
            .map(|m| e.slice(m.key).to_vec())
            .collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            members_of(&bare, &bare.events[1], &mut scratch),
            Some(&[][..])
        );
        assert_eq!(members_of(&bare, &bare.events[3], &mut scratch), None);
    }

    /// The members `parse` places from the tape, and the ones [`members`] scans the text
    /// for: the same, on every JSON line of the corpus and on lines made to be awkward.
    #[test]
    fn the_tape_and_the_scanner_find_the_same_members() {
        let settings =
            crate::pipeline::Settings::new(&crate::config::Enrich::default().options()).unwrap();
        let corpus = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/docker-corpus.jsonl"
        ))
        .unwrap();
        let mut lines: Vec<String> = corpus
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(v["log"].as_str()?.to_string())
            })
            .collect();
        lines.extend(
            [
                r#"{}"#,
                r#"  { }  "#,
                r#"{"":1,"a":""}"#,
                r#"{ "k\"ey" :"v\u00e9" , "n":-1.5e3,"o":{"a":[1,{"b":"}"}]},"t":true,"z":null }"#,
                "{\"a\":\t1\r\n,\n\"b\" : [ ] }\n",
                r#"{"dup":1,"dup":"two","s":"with \\ backslash","u":"\ud83d\ude00"}"#,
            ]
            .map(String::from),
        );
        let (mut json, mut tape_placed) = (0, 0);
        for line in &lines {
            if !looks_like_object(line.as_bytes()) {
                continue;
            }
            let mut placed = Vec::new();
            let parsed = parse(
                line.as_bytes(),
                &settings.keys,
                &settings.families,
                &settings.limits,
                Some(&mut placed),
            );
            if parsed.is_err() {
                assert!(placed.is_empty(), "{line}");
                continue;
            }
            json += 1;
            let text = line.as_bytes();
            let lead = text.len() - text.trim_ascii_start().len();
            let mut scanned = Vec::new();
            assert!(members(text.trim_ascii(), lead, &mut scanned), "{line}");
            assert_eq!(placed, scanned, "{line}");
            // And from the tape itself, not its fallback to the scanner.
            let mut copy = text.to_vec();
            let mut buffers = simd_json::Buffers::new(copy.len());
            let mut tape = simd_json::Tape::null().reset();
            let base = copy.as_ptr() as usize;
            simd_json::fill_tape(&mut copy, &mut buffers, &mut tape).unwrap();
            let mut from_tape = Vec::new();
            let walk = Walk { line: text, base };
            if walk.members(&tape.0, &mut from_tape) {
                tape_placed += 1;
                assert_eq!(from_tape, scanned, "{line}");
            }
        }
        assert!(json > 3_000, "{json} JSON lines");
        assert!(
            tape_placed >= json - 1,
            "{tape_placed} of {json} placed from the tape"
        );
    }
}
