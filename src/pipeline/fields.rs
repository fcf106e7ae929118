//! What enrichment looks for among an event's fields, whatever they are written in: the
//! roles of keys (trace context, level, message, time) and the rules that pick one value per
//! role when several keys offer one.
//!
//! Two walkers feed it: [`super::json`] over a JSON line's simd-json tape, and
//! [`super::record`] over a MessagePack record whose fields are the application's own (what
//! fluent-logger libraries and Fluent Bit send). Both look up each key in one [`KeyTable`],
//! descend only along configured dotted paths, and offer the values they find to a
//! [`Collector`], so a field means the same thing in a JSON line and in a record.

use std::cell::RefCell;
use std::ops::Range;

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

/// What one key means: its roles here, and the keys one level down when a dotted path goes
/// through it.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    roles: Vec<Role>,
    children: Option<Box<KeyTable>>,
}

impl Entry {
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn children(&self) -> Option<&KeyTable> {
        self.children.as_deref()
    }
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

    /// The entry of `key`, when it has a role or leads to one.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        let bucket = self.buckets.get(key.len().min(64))?;
        let f = fingerprint(key);
        bucket
            .iter()
            .find(|(fp, k, _)| *fp == f && &k[..] == key)
            .map(|(_, _, e)| e)
    }
}

/// What a walk found. Ranges are into what was walked (the line, or the record).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    pub trace: Option<TraceContext>,
    /// A trace field was present but its value was not a valid ID.
    pub trace_invalid: bool,
    pub severity: Option<Severity>,
    /// The level string as written, when it needed no unescaping.
    pub severity_text: Option<Range<usize>>,
    /// The message field, as its walker locates it: a JSON string literal with its quotes
    /// in a line, the string itself in a record.
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

/// A field's value, as the walkers see it.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// A string (MessagePack `str` or `bin`, a JSON string once unescaped).
    Str(&'a [u8]),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    /// MessagePack's EventTime extension.
    Time(Timestamp),
    /// Null, or a container.
    Other,
}

/// Where a walker's strings lie in what it walks, for the spans [`Found`] keeps.
pub trait Locate {
    /// The range of string `s` (handed out in a [`Value::Str`]) when its bytes are there as
    /// they are (no escapes were undone).
    fn text(&self, s: &[u8]) -> Option<Range<usize>>;
    /// The range a message field `s` is kept as.
    fn message(&self, s: &[u8]) -> Option<Range<usize>>;
}

/// A walk's per-family findings, kept between walks so that a walk allocates nothing.
#[derive(Debug, Default)]
pub struct Candidates(Vec<Candidate>);

thread_local! {
    /// Candidates of record walks on this thread: walks are synchronous and never nest.
    static CANDIDATES: RefCell<Candidates> = RefCell::default();
}

/// Keeps the best value offered for each role during one walk.
pub struct Collector<'a> {
    families: &'a Families,
    candidates: &'a mut Vec<Candidate>,
    found: Found,
    level_priority: u16,
    message_priority: u16,
}

impl Collector<'_> {
    /// Runs `walk` with a fresh collector, reusing this thread's candidates, and returns what
    /// it found.
    pub fn collect(families: &Families, walk: impl FnOnce(&mut Collector<'_>)) -> Found {
        CANDIDATES.with_borrow_mut(|c| Collector::collect_in(c, families, walk))
    }

    /// [`Collector::collect`] with the caller's candidates (a walker that keeps other
    /// per-thread scratch state already).
    pub fn collect_in(
        candidates: &mut Candidates,
        families: &Families,
        walk: impl FnOnce(&mut Collector<'_>),
    ) -> Found {
        let candidates = &mut candidates.0;
        candidates.clear();
        candidates.resize(families.formats.len(), Candidate::default());
        let mut c = Collector {
            families,
            candidates,
            found: Found::default(),
            level_priority: u16::MAX,
            message_priority: u16::MAX,
        };
        walk(&mut c);
        c.finish()
    }

    /// Offers `value` of a key whose role is `role`; `at` locates its strings.
    #[inline]
    pub fn offer(&mut self, role: Role, value: Value<'_>, at: &impl Locate) {
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
                    Value::Str(s) if names_only => severity::from_name(s),
                    Value::Str(s) => severity::from_text(s),
                    _ if names_only => None,
                    Value::U64(n) => i64::try_from(n).ok().and_then(severity::from_number),
                    Value::I64(n) => severity::from_number(n),
                    _ => None,
                };
                if let Some(sev) = sev {
                    self.level_priority = p;
                    self.found.severity = Some(sev);
                    self.found.severity_text = match value {
                        Value::Str(s) => at.text(s),
                        _ => None,
                    };
                }
            }
            Role::Message(p) if p < self.message_priority => {
                if let Value::Str(s) = value
                    && let Some(r) = at.message(s)
                {
                    self.message_priority = p;
                    self.found.message = Some(r);
                }
            }
            Role::Time if self.found.time.is_none() => {
                self.found.time = match value {
                    Value::Str(s) => {
                        timefmt::parse_rfc3339(s).or_else(|| timefmt::from_epoch_text(s))
                    }
                    Value::U64(n) => i64::try_from(n).ok().and_then(timefmt::from_epoch_int),
                    Value::I64(n) => timefmt::from_epoch_int(n),
                    Value::F64(f) => timefmt::from_epoch_number(f),
                    Value::Time(t) => Some(t),
                    _ => None,
                };
            }
            _ => {}
        }
    }

    /// Picks the best family that produced a trace ID; its own span and flags complete it.
    fn finish(mut self) -> Found {
        for c in self.candidates.iter() {
            if let Some((_, mut ctx)) = c.context {
                if ctx.span_id.is_none() {
                    ctx.span_id = c.span.map(|(_, s)| s);
                }
                if ctx.flags.is_none() {
                    ctx.flags = c.flags.map(|(_, f)| f);
                }
                self.found.trace = Some(ctx);
                break;
            }
        }
        self.found
    }
}

/// A value as the trace module's scalar: strings, integers and booleans; floats (an ID that
/// lost precision), nulls and containers are not IDs.
fn scalar(value: Value<'_>) -> Option<Scalar<'_>> {
    match value {
        Value::Str(s) => Some(Scalar::Str(s)),
        Value::U64(n) => Some(Scalar::U64(n)),
        Value::I64(n) => Some(Scalar::I64(n)),
        Value::Bool(b) => Some(Scalar::Bool(b)),
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
