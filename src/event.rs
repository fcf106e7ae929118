//! The data that flows from sources to sinks.
//!
//! A [`Batch`] is everything one source decoded from one read of one connection. Events in it
//! are views (`Bytes` slices) into the buffer the bytes arrived in, so moving a batch copies
//! nothing, and fanning it out to several sinks shares it behind an `Arc`.
//!
//! Records stay in their wire form (a MessagePack map), and a line read from a file stays the
//! line it was ([`Form`]). Stages that need a field read it from those bytes; nothing builds a
//! value tree per event.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;

/// Seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }
}

/// What an event's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// One complete MessagePack map: a forward client's record, with Docker's fields or the
    /// application's own.
    #[default]
    Record,
    /// A line of text as the source read it (a line of a node's container log file), with
    /// no fields of its own: the source's spans in [`Meta`] say where its message and its
    /// stream are, and its tag names where it came from. Encoders see an empty record
    /// ([`Event::map`]) and the line under the line key.
    Line,
}

/// One log event.
#[derive(Debug, Clone)]
pub struct Event {
    pub time: Timestamp,
    /// Index into [`Batch::tags`].
    pub tag: u32,
    /// The event's bytes, as [`form`](Event::form) says: a MessagePack map, or a line.
    pub record: Bytes,
    pub form: Form,
    /// What enrichment learned; all default until the pipeline has seen the event, except
    /// for a line, whose source sets `line`, `stream` and `continued`.
    pub meta: Meta,
}

impl Event {
    /// A record event: `record` is one MessagePack map.
    pub fn new(time: Timestamp, tag: u32, record: Bytes) -> Event {
        Event {
            time,
            tag,
            record,
            form: Form::Record,
            meta: Meta::default(),
        }
    }

    /// A line event: `bytes` is what the source read, `line` the message inside it and
    /// `stream` its `stdout` or `stderr`, as spans of `bytes`.
    pub fn line(
        time: Timestamp,
        tag: u32,
        bytes: Bytes,
        line: Span,
        stream: Option<Span>,
    ) -> Event {
        Event {
            time,
            tag,
            record: bytes,
            form: Form::Line,
            meta: Meta {
                line: Some(line),
                stream,
                ..Meta::default()
            },
        }
    }

    /// The MessagePack map of the event's own fields, for encoders that walk it: the record,
    /// or for a line (which has none) an empty map.
    pub fn map(&self) -> &[u8] {
        match self.form {
            Form::Record => &self.record,
            Form::Line => &[0x80],
        }
    }

    /// The bytes of `span` inside the record.
    pub fn slice(&self, span: Span) -> &[u8] {
        self.record
            .get(span.start as usize..(span.start + span.len) as usize)
            .unwrap_or_default()
    }
}

/// A byte range inside [`Event::record`]. Enrichment points at what it found instead of copying
/// it, so an event stays one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    pub fn new(range: std::ops::Range<usize>) -> Span {
        Span {
            start: range.start as u32,
            len: (range.end - range.start) as u32,
        }
    }
}

/// What the pipeline found in an event, in its JSON line or, for records that carry the
/// application's fields themselves, in the record. Spans point into the record; the log
/// line's own fields (inside a JSON line) are found again by the encoders that splice them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// The log line (the record's `log` value by default).
    pub line: Option<Span>,
    /// The line is a JSON object that parsed within the limits: encoders splice its fields.
    pub json: bool,
    /// The message field (`msg`, `message`): inside a JSON line, as a JSON string literal
    /// with its quotes; in a record without a line, the string itself (see
    /// `message_in_record`).
    pub message: Option<Span>,
    /// `message` is a string value of the record (the application sent its fields as the
    /// record), not a literal inside the line.
    pub message_in_record: bool,
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
    pub trace_flags: Option<u8>,
    /// OTLP SeverityNumber; 0 when unknown.
    pub severity: u8,
    /// The level as the application wrote it (inside the JSON line), when it needs no
    /// unescaping.
    pub severity_text: Option<Span>,
    pub container_id: Option<Span>,
    /// Without Docker's leading `/`.
    pub container_name: Option<Span>,
    /// `stdout` or `stderr`.
    pub stream: Option<Span>,
    /// This event is a long line or a stack trace that could not be completed (timeout,
    /// overflow, end of stream): what was collected, marked.
    pub incomplete: bool,
    /// This event joins several records (split long line or multi-line stack trace).
    pub joined: bool,
    /// A line that goes on in the next line of its stream (CRI's `P` flag), set by the
    /// source; the pipeline joins the pieces.
    pub continued: bool,
    /// Where this event's JSON line members are in [`Batch::members`] (empty unless `json`).
    pub members: Members,
}

/// A range of [`Batch::members`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Members {
    pub start: u32,
    pub len: u32,
}

/// The JSON type of a member's value, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    String,
    Number,
    Bool,
    Null,
    Object,
    Array,
}

/// One top-level member of a JSON line, as enrichment found it: spans of the event's bytes,
/// so every encoder reads the line's fields from this instead of parsing the line again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The key's text between its quotes, as written.
    pub key: Span,
    /// The value as written: a string with its quotes, a number, an object with its braces.
    pub value: Span,
    pub kind: JsonKind,
    /// The key holds a `\` escape: its text is not its name until unescaped.
    pub escaped_key: bool,
    /// A string value holds a `\` escape.
    pub escaped_value: bool,
}

/// Events decoded together, with what they share.
#[derive(Debug, Default)]
pub struct Batch {
    /// Distinct tags of this batch; events refer to them by index, so a tag that repeats on
    /// every message of a connection is stored once and routed once.
    pub tags: Vec<Bytes>,
    pub events: Vec<Event>,
    /// Fields every event of the batch gets in addition to its record (for example the peer
    /// address under `source_address_key`). Shared by all batches of a connection.
    pub fields: Arc<[(Bytes, Bytes)]>,
    /// Bytes this batch keeps alive: its input (plus decompressed or rejoined data), and,
    /// once routed, its event structs. What the bounded queues account.
    pub size: usize,
    /// Resolved when the stage that owns durability has taken the batch. Present only when the
    /// sender asked for acknowledgements.
    pub ack: Option<Ack>,
    /// Kubernetes names found in each tag (parallel to `tags`; empty until enriched, and when
    /// no tag names a Kubernetes log file).
    pub k8s: Vec<Option<K8sTag>>,
    /// The top-level members of the events' JSON lines, found once by enrichment; each event
    /// names its range ([`Meta::members`]). Charged with the batch ([`Batch::footprint`]).
    /// Empty when no sink reads it; encoders then scan the line
    /// ([`crate::pipeline::json::members_of`]).
    pub members: Vec<Member>,
    /// Attributes every event of the batch carries (static node or cluster names).
    pub resource: Arc<[(Bytes, Bytes)]>,
    /// When the source read the batch's data (zero when unknown): OTLP's observed time.
    pub received: Timestamp,
}

/// Kubernetes names inside a tag, as spans of the tag's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct K8sTag {
    pub pod: Span,
    pub namespace: Span,
    pub container: Span,
    /// Empty when the tag does not carry it (the `/var/log/pods` layout).
    pub container_id: Span,
    /// Empty when the tag does not carry it (the `/var/log/containers` layout).
    pub pod_uid: Span,
    /// The container's restart count (the file's number in the `/var/log/pods` layout), or
    /// empty.
    pub restart_count: Span,
}

impl Batch {
    /// Index of `tag` in [`Batch::tags`], adding it if it is new. Batches rarely hold more than
    /// a handful of tags, so a linear scan beats hashing.
    pub fn tag_index(&mut self, tag: &[u8], make: impl FnOnce() -> Bytes) -> u32 {
        if let Some(i) = self.tags.iter().position(|t| t.as_ref() == tag) {
            return i as u32;
        }
        if self.tags.is_empty() {
            // Most batches carry one tag; `push` would make room for four.
            self.tags.reserve_exact(1);
        }
        self.tags.push(make());
        (self.tags.len() - 1) as u32
    }

    /// Bytes the batch's own structures take on the heap once it is queued, besides the
    /// input its events point into: what the queues add to [`Batch::size`]. For a batch of one
    /// small event (one request per read, the usual case on a node) this is more than the
    /// event's line, so leaving it out would let a queue hold twice what it is charged.
    pub fn footprint(&self) -> usize {
        /// What the allocator adds to each allocation (glibc: a header, and rounding to 16).
        const PER_ALLOCATION: usize = 16;
        /// The reference counts of `Arc<Batch>` and the `Bytes` header each input allocation
        /// gets once its events slice it.
        const SHARED: usize = 16 + 32 + PER_ALLOCATION;
        let vec = |cap: usize, size: usize| {
            if cap == 0 {
                0
            } else {
                cap * size + PER_ALLOCATION
            }
        };
        std::mem::size_of::<Batch>()
            + PER_ALLOCATION
            + SHARED
            + vec(self.events.capacity(), std::mem::size_of::<Event>())
            + vec(self.tags.capacity(), std::mem::size_of::<Bytes>())
            + vec(self.k8s.capacity(), std::mem::size_of::<Option<K8sTag>>())
            + vec(self.members.capacity(), std::mem::size_of::<Member>())
    }

    /// The members of `event`'s JSON line (empty when it has none).
    pub fn members(&self, event: &Event) -> &[Member] {
        let Members { start, len } = event.meta.members;
        self.members
            .get(start as usize..(start + len) as usize)
            .unwrap_or_default()
    }

    pub fn tag(&self, event: &Event) -> &[u8] {
        &self.tags[event.tag as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// How an acknowledgement resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Every event is owned by a stage that will deliver it or say why not.
    Accepted,
    /// At least one holder gave up on the batch (for example the pipeline was shutting down):
    /// the sender must not be told its data is safe.
    Rejected,
}

/// The acknowledgement handle that travels with a batch.
///
/// Cloning it hands a share to another holder (one per sink in a fan-out). It resolves once,
/// when the last share is dropped: `Accepted` unless some holder called [`Ack::reject`]. The
/// source awaits the matching [`AckWait`] before it answers the client. Which stage drops the
/// last share decides what an ack means: today the buffer drops it on admission; a durable
/// buffer would drop it after its write, an ack-on-delivery mode in the sinks.
#[derive(Debug, Clone)]
pub struct Ack(Arc<AckShared>);

#[derive(Debug)]
struct AckShared {
    tx: Mutex<Option<oneshot::Sender<AckStatus>>>,
    rejected: std::sync::atomic::AtomicBool,
}

/// The source's end of an [`Ack`].
#[derive(Debug)]
pub struct AckWait(oneshot::Receiver<AckStatus>);

impl Ack {
    pub fn new() -> (Ack, AckWait) {
        let (tx, rx) = oneshot::channel();
        let shared = AckShared {
            tx: Mutex::new(Some(tx)),
            rejected: Default::default(),
        };
        (Ack(Arc::new(shared)), AckWait(rx))
    }

    /// Marks the batch as not safely taken; the source will withhold its acks.
    pub fn reject(&self) {
        self.0
            .rejected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for AckShared {
    fn drop(&mut self) {
        let status = if *self.rejected.get_mut() {
            AckStatus::Rejected
        } else {
            AckStatus::Accepted
        };
        if let Some(tx) = self.tx.get_mut().ok().and_then(Option::take) {
            let _ = tx.send(status);
        }
    }
}

impl AckWait {
    /// Waits for the last share to be dropped. A dropped handle that was never resolved counts
    /// as rejected.
    pub async fn wait(self) -> AckStatus {
        self.0.await.unwrap_or(AckStatus::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ack_resolves_when_last_share_drops() {
        let (ack, wait) = Ack::new();
        let other = ack.clone();
        drop(ack);
        drop(other);
        assert_eq!(wait.wait().await, AckStatus::Accepted);
    }

    #[tokio::test]
    async fn one_rejection_rejects_the_batch() {
        let (ack, wait) = Ack::new();
        let other = ack.clone();
        other.reject();
        drop(other);
        drop(ack);
        assert_eq!(wait.wait().await, AckStatus::Rejected);
    }

    #[test]
    fn tags_are_interned() {
        let mut b = Batch::default();
        assert_eq!(b.tag_index(b"a", || Bytes::from_static(b"a")), 0);
        assert_eq!(b.tag_index(b"b", || Bytes::from_static(b"b")), 1);
        assert_eq!(b.tag_index(b"a", || unreachable!()), 0);
    }
}
