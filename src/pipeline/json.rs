//! JSON log lines: parsed with simd-json's tape, walked only along the keys enrichment wants.
//!
//! simd-json parses in place and overwrites its input, so each line is copied into a scratch
//! buffer first; the original bytes stay untouched in the record for the encoders to splice.
//! The scratch buffer, simd-json's buffers and the tape are reused per thread, so a parse
//! allocates nothing once warm. No value tree is built: the walk looks up each top-level key
//! in a [`KeyTable`] (a bucket per key length, then a byte compare) and descends only into
//! objects a configured dotted path names (`trace.id`, `dd.trace_id`, `log.level`).

use std::cell::RefCell;
use std::ops::Range;

use simd_json::{Node, StaticNode};

use super::severity::{self, Severity};
use super::timefmt;
use super::trace::{self, Format, Scalar, TraceContext};
use crate::event::Timestamp;

/// What a key means to enrichment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The trace ID (or a whole context) of trace family `.0`; `.1` orders the family's keys
    /// (lower wins: the family's list order, top level before containers).
    Trace(u16, u16),
    Span(u16, u16),
    Flags(u16, u16),
    /// A level key; lower priority numbers win.
    Level(u16),
    /// A key that is a level only when it holds a level name.
    LevelName(u16),
    Message(u16),
    Time,
}

/// Keys by length, each with its roles and, for dotted paths, the keys one level down.
#[derive(Debug, Default, Clone)]
pub struct KeyTable {
    buckets: Vec<Vec<Slot>>,
}

/// One key of a bucket: its [`fingerprint`], its bytes, what it means.
type Slot = (u64, Box<[u8]>, Entry);

/// A cheap summary of a key (its first and last eight bytes) compared before the bytes:
/// with every trace family's keys also listed under each context container, a length bucket
/// can hold dozens of keys, and most lookups are misses.
fn fingerprint(k: &[u8]) -> u64 {
    let n = k.len().min(8);
    let mut a = [0u8; 8];
    a[..n].copy_from_slice(&k[..n]);
    let mut b = [0u8; 8];
    b[8 - n..].copy_from_slice(&k[k.len() - n..]);
    u64::from_le_bytes(a) ^ u64::from_le_bytes(b).rotate_left(29)
}

#[derive(Debug, Default, Clone)]
struct Entry {
    roles: Vec<Role>,
    children: Option<Box<KeyTable>>,
}

impl KeyTable {
    /// Adds `path` with `role`. A dotted path matches both the flat key (`"dd.trace_id": …`, as
    /// Java MDC writes it) and the nested objects (`"dd": {"trace_id": …}`).
    pub fn insert(&mut self, path: &str, role: Role) {
        self.entry(path.as_bytes()).roles.push(role);
        if let Some((head, rest)) = path.split_once('.') {
            self.entry(head.as_bytes())
                .children
                .get_or_insert_with(Default::default)
                .insert(rest, role);
        }
    }

    fn entry(&mut self, key: &[u8]) -> &mut Entry {
        let b = key.len().min(64);
        if self.buckets.len() <= b {
            self.buckets.resize_with(b + 1, Vec::new);
        }
        let bucket = &mut self.buckets[b];
        match bucket.iter().position(|(_, k, _)| &k[..] == key) {
            Some(i) => &mut bucket[i].2,
            None => {
                bucket.push((fingerprint(key), key.into(), Entry::default()));
                &mut bucket.last_mut().expect("just pushed").2
            }
        }
    }

    fn get(&self, key: &[u8]) -> Option<&Entry> {
        let bucket = self.buckets.get(key.len().min(64))?;
        let f = fingerprint(key);
        bucket
            .iter()
            .find(|(fp, k, _)| *fp == f && &k[..] == key)
            .map(|(_, _, e)| e)
    }
}

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

/// What the walk found in one line. Ranges are into the line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub trace: Option<TraceContext>,
    /// A trace field was present but its value was not a valid ID.
    pub trace_invalid: bool,
    pub severity: Option<Severity>,
    /// The level string as written, when it needed no unescaping.
    pub severity_text: Option<Range<usize>>,
    /// The message field as a raw JSON string literal, quotes included.
    pub message: Option<Range<usize>>,
    pub time: Option<Timestamp>,
}

/// The trace families, in priority order, as the walk uses them.
#[derive(Debug, Clone)]
pub struct Families {
    pub formats: Vec<Format>,
}

/// Per-family findings during one walk, each with the priority of the key it came from.
#[derive(Debug, Clone, Copy, Default)]
struct Candidate {
    context: Option<(u16, TraceContext)>,
    span: Option<(u16, [u8; 8])>,
    flags: Option<(u16, u8)>,
}

/// Keeps `new` when nothing is there yet or it comes from a better key.
fn better<T>(slot: &mut Option<(u16, T)>, priority: u16, new: Option<T>) {
    if let Some(v) = new
        && slot.as_ref().is_none_or(|(p, _)| priority < *p)
    {
        *slot = Some((priority, v));
    }
}

struct Scratch {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
    candidates: Vec<Candidate>,
    /// [`check`]'s stack of open containers.
    open: Vec<usize>,
}

thread_local! {
    /// One per thread: parsing is synchronous, so a batch never holds it across an await.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        input: Vec::with_capacity(4096),
        buffers: simd_json::Buffers::new(4096),
        tape: Some(simd_json::Tape::null().reset()),
        candidates: Vec::new(),
        open: Vec::new(),
    });
}

/// Whether `line` should be parsed: its first non-blank byte opens an object.
pub fn looks_like_object(line: &[u8]) -> bool {
    line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Parses `line` (which [`looks_like_object`]) and walks it.
///
/// # Errors
/// The line is not valid JSON, or breaks a limit; the caller keeps it as text.
pub fn parse(
    line: &[u8],
    keys: &KeyTable,
    families: &Families,
    limits: &Limits,
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
            .map(|()| {
                candidates.clear();
                candidates.resize(families.formats.len(), Candidate::default());
                let mut found = Found::default();
                let mut walk = Walk {
                    line,
                    base,
                    families,
                    candidates,
                    found: &mut found,
                    level_priority: u16::MAX,
                    message_priority: u16::MAX,
                };
                walk.object(&t.0, keys);
                walk.finish();
                found
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
    families: &'a Families,
    candidates: &'a mut Vec<Candidate>,
    found: &'a mut Found,
    level_priority: u16,
    message_priority: u16,
}

impl Walk<'_> {
    fn object(&mut self, tape: &[Node<'_>], keys: &KeyTable) {
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
                for role in &entry.roles {
                    self.offer(*role, value);
                }
                if let (Some(children), Node::Object { .. }) = (&entry.children, value) {
                    self.object(&tape[i..i + w], children);
                }
            }
            i += w;
        }
    }

    /// The range of string `s` (a tape string inside the scratch copy) in the line, when its
    /// bytes there are the same (no escapes were undone).
    fn range_of(&self, s: &str) -> Option<Range<usize>> {
        let start = (s.as_ptr() as usize).checked_sub(self.base)?;
        let r = start..start + s.len();
        (self.line.get(r.clone()) == Some(s.as_bytes())).then_some(r)
    }

    /// The raw JSON string literal (quotes included) whose content starts where `s` does.
    fn literal_of(&self, s: &str) -> Option<Range<usize>> {
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

    fn offer(&mut self, role: Role, value: &Node<'_>) {
        let scalar = scalar(value);
        match role {
            Role::Trace(f, p) => {
                let format = self.families.formats[usize::from(f)];
                let ctx = scalar.and_then(|v| trace::scalar_context(v, format));
                if ctx.is_none() {
                    self.found.trace_invalid |= !is_empty_id(scalar);
                }
                // The first valid occurrence of the best key wins; invalid values are passed
                // over, so a later key can still supply the trace.
                better(&mut self.candidates[usize::from(f)].context, p, ctx);
            }
            Role::Span(f, p) => {
                let format = self.families.formats[usize::from(f)];
                let span = scalar.and_then(|v| trace::scalar_span(v, format));
                better(&mut self.candidates[usize::from(f)].span, p, span);
            }
            Role::Flags(f, p) => {
                let flags = scalar.and_then(trace::scalar_flags);
                better(&mut self.candidates[usize::from(f)].flags, p, flags);
            }
            Role::Level(p) | Role::LevelName(p) if p < self.level_priority => {
                let names_only = matches!(role, Role::LevelName(_));
                let sev = match value {
                    Node::String(s) if names_only => severity::from_name(s.as_bytes()),
                    Node::String(s) => severity::from_text(s.as_bytes()),
                    _ if names_only => None,
                    Node::Static(StaticNode::U64(n)) => {
                        i64::try_from(*n).ok().and_then(severity::from_number)
                    }
                    Node::Static(StaticNode::I64(n)) => severity::from_number(*n),
                    _ => None,
                };
                if let Some(sev) = sev {
                    self.level_priority = p;
                    self.found.severity = Some(sev);
                    self.found.severity_text = match value {
                        Node::String(s) => self.range_of(s),
                        _ => None,
                    };
                }
            }
            Role::Message(p) if p < self.message_priority => {
                if let Node::String(s) = value
                    && let Some(r) = self.literal_of(s)
                {
                    self.message_priority = p;
                    self.found.message = Some(r);
                }
            }
            Role::Time if self.found.time.is_none() => {
                self.found.time = match value {
                    Node::String(s) => timefmt::parse_rfc3339(s.as_bytes())
                        .or_else(|| timefmt::from_epoch_text(s.as_bytes())),
                    Node::Static(StaticNode::U64(n)) => {
                        i64::try_from(*n).ok().and_then(timefmt::from_epoch_int)
                    }
                    Node::Static(StaticNode::I64(n)) => timefmt::from_epoch_int(*n),
                    Node::Static(StaticNode::F64(f)) => timefmt::from_epoch_number(*f),
                    _ => None,
                };
            }
            _ => {}
        }
    }

    /// Picks the best family that produced a trace ID; its own span and flags complete it.
    fn finish(&mut self) {
        for c in self.candidates.iter() {
            if let Some((_, mut ctx)) = c.context {
                if ctx.span_id.is_none() {
                    ctx.span_id = c.span.map(|(_, s)| s);
                }
                if ctx.flags.is_none() {
                    ctx.flags = c.flags.map(|(_, f)| f);
                }
                self.found.trace = Some(ctx);
                return;
            }
        }
    }
}

/// A tape value as the trace module's scalar: strings, integers and booleans; floats (an ID
/// that lost precision), nulls and containers are not IDs.
fn scalar<'a>(value: &Node<'a>) -> Option<Scalar<'a>> {
    match value {
        Node::String(s) => Some(Scalar::Str(s.as_bytes())),
        Node::Static(StaticNode::U64(n)) => Some(Scalar::U64(*n)),
        Node::Static(StaticNode::I64(n)) => Some(Scalar::I64(*n)),
        Node::Static(StaticNode::Bool(b)) => Some(Scalar::Bool(*b)),
        _ => None,
    }
}

/// Values that mean "no trace" rather than "a broken one": absent, empty, `0`, all zeros.
fn is_empty_id(v: Option<Scalar<'_>>) -> bool {
    match v {
        None | Some(Scalar::U64(0) | Scalar::I64(0) | Scalar::Bool(_)) => true,
        Some(Scalar::Str(s)) => s.iter().all(|b| *b == b'0' || *b == b'-'),
        Some(_) => false,
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
}
