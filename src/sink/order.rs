//! Per-stream order across concurrent requests: which events go in the next request.
//!
//! A backend stores a request's events when it handles the request, so two requests in flight
//! at once may be stored in either order. The lines of one stream (a container's stdout, a
//! Loki label set) must not be: Docker's times are whole seconds, and a stack trace or a
//! request's log lines shuffled by the network cannot be put back together by the reader.
//!
//! So, with `ordering = "stream"` (the default), a stream is in at most one request at a
//! time. A request is made from streams that have nothing in flight, oldest waiting first;
//! the events a stream receives meanwhile wait until its request is finished, retries and
//! 413 halves included. Different streams still go out in parallel, up to `max_in_flight`
//! requests, and share requests, so a node's many quiet containers cost no more requests
//! than before. A single stream gets one request in flight. With `ordering = "none"` any
//! free slot takes the oldest waiting events whatever their stream.
//!
//! Arrival order is not all a reader sees: Grafana and Kibana sort by time, and lines of one
//! second tie. So every event also gets a sending time ([`Ref::time`](super::export::Ref)):
//! its own time, or one nanosecond past the previous event of its stream when the two tie or
//! the time stepped back by less than a second. It is fixed when the event is scheduled, so
//! a retry sends the same value (Loki drops a retried entry it already stored because time
//! and line are equal). Loki and OTLP send it as the entry's time; Elasticsearch as
//! `event.sequence`, the event's time being `@timestamp` as it was.
//!
//! What the scheduler holds is bounded by the sink's queue: entries keep their permits until
//! delivered, and the queue charges [`SLOT_BYTES`] per event for the scheduler's lists.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::export::Ref;
use crate::buffer::{Entry, SLOT_BYTES};
use crate::config::export::Ordering;
use crate::event::Timestamp;

/// How long a stream with nothing waiting keeps its last sending time. Past that a new event
/// of the stream starts from its own time again (a second of lines later than a minute of
/// silence cannot tie with them).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// One event waiting for a request. The queue charges [`SLOT_BYTES`] per event for it.
#[derive(Debug)]
pub struct Item {
    entry: Arc<Entry>,
    /// Index into the entry's `batch.events`.
    index: u32,
    /// Nanoseconds from the event's time to its sending time (see the module docs).
    moved: u32,
}

const _: () = assert!(std::mem::size_of::<Item>() <= SLOT_BYTES);

impl Item {
    pub fn event(&self) -> Ref<'_> {
        let batch = &*self.entry.batch;
        let event = &batch.events[self.index as usize];
        Ref {
            batch,
            event,
            time: plus(event.time, self.moved),
        }
    }

    /// The record's length: what `max_batch_bytes` counts.
    fn len(&self) -> usize {
        self.entry.batch.events[self.index as usize].record.len()
    }
}

/// A request: its events, and the streams to release when it is finished.
#[derive(Debug)]
pub struct Request {
    pub items: Vec<Item>,
    pub streams: Vec<u64>,
}

#[derive(Debug)]
struct Stream {
    pending: VecDeque<Item>,
    /// Record bytes of `pending`.
    bytes: usize,
    /// When the oldest of `pending` arrived.
    since: Option<Instant>,
    /// The sending time of its last event.
    last: Option<Timestamp>,
    /// A request holds events of this stream.
    busy: bool,
    /// In `Scheduler::ready`.
    listed: bool,
    /// When it last received an event.
    used: Instant,
}

/// Events waiting for a request, per stream.
#[derive(Debug)]
pub struct Scheduler {
    streams: HashMap<u64, Stream>,
    /// Streams with events waiting and nothing in flight, longest waiting first.
    ready: VecDeque<u64>,
    /// Events and record bytes waiting in `ready` streams.
    ready_events: usize,
    ready_bytes: usize,
    /// When the oldest waiting event of a ready stream arrived.
    oldest: Option<Instant>,
    /// Events and record bytes waiting in all streams.
    held_events: usize,
    held_bytes: usize,
    exclusive: bool,
    max_events: usize,
    max_bytes: usize,
    swept: Instant,
}

impl Scheduler {
    pub fn new(ordering: Ordering, max_events: usize, max_bytes: usize) -> Scheduler {
        Scheduler {
            streams: HashMap::new(),
            ready: VecDeque::new(),
            ready_events: 0,
            ready_bytes: 0,
            oldest: None,
            held_events: 0,
            held_bytes: 0,
            exclusive: ordering == Ordering::Stream,
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            swept: Instant::now(),
        }
    }

    /// Takes the events `entry` selects; `stream` names each event's stream.
    pub fn add(&mut self, entry: Entry, stream: impl Fn(Ref<'_>) -> u64) {
        let now = Instant::now();
        let entry = Arc::new(entry);
        let batch = &*entry.batch;
        for (index, event) in batch.events.iter().enumerate() {
            if !entry.selects(event) {
                continue;
            }
            let key = stream(Ref {
                batch,
                event,
                time: event.time,
            });
            let s = self.streams.entry(key).or_insert_with(|| Stream {
                pending: VecDeque::new(),
                bytes: 0,
                since: None,
                last: None,
                busy: false,
                listed: false,
                used: now,
            });
            let moved = s.last.map_or(0, |last| after(last, event.time));
            s.last = Some(plus(event.time, moved));
            s.used = now;
            let len = event.record.len();
            s.pending.push_back(Item {
                entry: entry.clone(),
                index: index as u32,
                moved,
            });
            s.bytes += len;
            s.since.get_or_insert(now);
            self.held_events += 1;
            self.held_bytes += len;
            if s.listed {
                self.ready_events += 1;
                self.ready_bytes += len;
            } else if !s.busy {
                s.listed = true;
                self.ready.push_back(key);
                self.ready_events += 1;
                self.ready_bytes += len;
                self.oldest = self.oldest.min(s.since).or(s.since);
            }
        }
        if now.duration_since(self.swept) >= FORGET_AFTER / 2 {
            self.swept = now;
            self.streams.retain(|_, s| {
                s.busy || !s.pending.is_empty() || now.duration_since(s.used) < FORGET_AFTER
            });
        }
    }

    /// Whether a request should go now: a full one is waiting, or the oldest waiting event
    /// has waited `flush` (or, when `closing`, anything waits).
    pub fn due(&self, now: Instant, flush: Duration, closing: bool) -> bool {
        self.ready_events > 0
            && (closing
                || self.ready_events >= self.max_events
                || self.ready_bytes >= self.max_bytes
                || self.oldest.is_some_and(|o| now >= o + flush))
    }

    /// When the oldest waiting event will have waited `flush`.
    pub fn deadline(&self, flush: Duration) -> Option<Instant> {
        self.oldest
            .filter(|_| self.ready_events > 0)
            .map(|o| o + flush)
    }

    /// Events and record bytes waiting for a request.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        (self.held_events, self.held_bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.held_events == 0
    }

    /// The next request: up to `max_events` events and about `max_bytes` bytes (at least
    /// one event), taken from the ready streams in turn, each stream's events in order.
    pub fn take(&mut self) -> Request {
        let mut items = Vec::new();
        let mut streams = Vec::new();
        let (mut events, mut bytes) = (0usize, 0usize);
        while events < self.max_events && bytes < self.max_bytes {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            s.listed = false;
            self.ready_events -= s.pending.len();
            self.ready_bytes -= s.bytes;
            while events < self.max_events && bytes < self.max_bytes {
                let Some(item) = s.pending.pop_front() else {
                    break;
                };
                let len = item.len();
                s.bytes -= len;
                self.held_events -= 1;
                self.held_bytes -= len;
                events += 1;
                bytes += len;
                items.push(item);
            }
            if s.pending.is_empty() {
                s.since = None;
            }
            if self.exclusive {
                s.busy = true;
                streams.push(key);
            } else if !s.pending.is_empty() {
                // The request is full; the rest of this stream goes first next time.
                s.listed = true;
                self.ready.push_front(key);
                self.ready_events += s.pending.len();
                self.ready_bytes += s.bytes;
            }
        }
        self.oldest = self
            .ready
            .iter()
            .filter_map(|k| self.streams.get(k).and_then(|s| s.since))
            .min();
        Request { items, streams }
    }

    /// A request of `streams` is finished: their waiting events may go.
    pub fn done(&mut self, streams: &[u64]) {
        for key in streams {
            let Some(s) = self.streams.get_mut(key) else {
                continue;
            };
            s.busy = false;
            if !s.pending.is_empty() && !s.listed {
                s.listed = true;
                self.ready.push_back(*key);
                self.ready_events += s.pending.len();
                self.ready_bytes += s.bytes;
                self.oldest = self.oldest.min(s.since).or(s.since);
            }
        }
    }
}

/// How far to move an event at `t` whose stream last sent `last`: not at all, unless it
/// ties with `last` or is less than a second before it (whole-second clocks, small clock
/// steps): then to one nanosecond past `last`. A larger step back keeps `t` (a replay of old
/// lines is sorted by its own times).
fn after(last: Timestamp, t: Timestamp) -> u32 {
    let (l, n) = (nanos(last), nanos(t));
    if n > l || l - n >= NS {
        return 0;
    }
    (l + 1 - n) as u32
}

const NS: i128 = 1_000_000_000;

fn nanos(t: Timestamp) -> i128 {
    i128::from(t.secs) * NS + i128::from(t.nanos)
}

/// `t` moved on by `moved` nanoseconds.
fn plus(t: Timestamp, moved: u32) -> Timestamp {
    if moved == 0 {
        return t;
    }
    let n = nanos(t) + i128::from(moved);
    Timestamp {
        secs: n.div_euclid(NS) as i64,
        nanos: n.rem_euclid(NS) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{Queue, QueueGauges};
    use crate::event::{Batch, Event};
    use bytes::Bytes;

    fn t(secs: i64, nanos: u32) -> Timestamp {
        Timestamp { secs, nanos }
    }

    #[test]
    fn ties_and_small_steps_back_move_one_nanosecond_on() {
        let sent = |last, at| plus(at, after(last, at));
        assert_eq!(sent(t(10, 0), t(11, 0)), t(11, 0));
        assert_eq!(sent(t(10, 0), t(10, 0)), t(10, 1));
        assert_eq!(sent(t(10, 999_999_999), t(10, 5)), t(11, 0));
        assert_eq!(sent(t(10, 5), t(9, 500)), t(10, 6));
        assert_eq!(sent(t(10, 5), t(9, 5)), t(9, 5), "a second back is kept");
        assert_eq!(sent(t(-1, 999_999_999), t(-1, 0)), t(0, 0));
    }

    /// An entry whose events carry their stream (a byte) as the record and `secs` as time.
    async fn entry(streams: &[u8], secs: i64) -> Entry {
        let mut b = Batch {
            tags: vec![Bytes::from_static(b"t")],
            size: 100,
            ..Default::default()
        };
        for s in streams {
            b.events
                .push(Event::new(t(secs, 0), 0, Bytes::from(vec![*s; 10])));
        }
        let (tx, mut rx) = Queue::bounded(1 << 20, 1 << 20, QueueGauges::default());
        tx.push(Arc::new(b), None, streams.len()).await.unwrap();
        rx.recv().await.unwrap()
    }

    fn by_first_byte(r: Ref<'_>) -> u64 {
        u64::from(r.event.record[0])
    }

    async fn scheduler_with(
        ordering: Ordering,
        max_events: usize,
        batches: &[(&[u8], i64)],
    ) -> Scheduler {
        let mut s = Scheduler::new(ordering, max_events, 1 << 20);
        for (streams, secs) in batches {
            s.add(entry(streams, *secs).await, by_first_byte);
        }
        s
    }

    fn streams_of(r: &Request) -> Vec<(u8, Timestamp)> {
        r.items
            .iter()
            .map(|i| (i.event().event.record[0], i.event().time))
            .collect()
    }

    #[tokio::test]
    async fn a_busy_stream_waits_while_others_go() {
        let mut s = scheduler_with(Ordering::Stream, 3, &[(&[1, 1, 2, 1, 3, 3], 5)]).await;
        let flush = Duration::from_secs(3600);
        assert!(s.due(Instant::now(), flush, false), "six events, three fit");
        let first = s.take();
        assert_eq!(
            streams_of(&first),
            vec![(1, t(5, 0)), (1, t(5, 1)), (1, t(5, 2))]
        );
        assert_eq!(first.streams, vec![1]);
        // Stream 1 is in flight: the next request takes 2 and 3 only.
        let second = s.take();
        assert_eq!(
            streams_of(&second),
            vec![(2, t(5, 0)), (3, t(5, 0)), (3, t(5, 1))]
        );
        assert!(s.is_empty());
        assert!(!s.due(Instant::now(), flush, true), "nothing ready");
        // More of stream 1 arrives: it waits for the first request, whatever the time.
        s.add(entry(&[1, 2], 5).await, by_first_byte);
        s.done(&second.streams);
        let third = s.take();
        assert_eq!(streams_of(&third), vec![(2, t(5, 1))]);
        assert_eq!(s.held(), (1, 10));
        s.done(&first.streams);
        assert!(s.due(Instant::now(), flush, true));
        assert_eq!(streams_of(&s.take()), vec![(1, t(5, 3))]);
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn without_ordering_a_stream_fills_every_slot() {
        let mut s = scheduler_with(Ordering::None, 2, &[(&[1, 1, 1, 1, 1], 7)]).await;
        let a = s.take();
        let b = s.take();
        assert_eq!(streams_of(&a), vec![(1, t(7, 0)), (1, t(7, 1))]);
        assert_eq!(streams_of(&b), vec![(1, t(7, 2)), (1, t(7, 3))]);
        assert!(a.streams.is_empty() && b.streams.is_empty());
        assert_eq!(s.held(), (1, 10));
    }

    #[tokio::test]
    async fn the_flush_deadline_is_the_oldest_ready_event() {
        let s = scheduler_with(Ordering::Stream, 100, &[(&[1, 2], 1)]).await;
        let flush = Duration::from_millis(50);
        let now = Instant::now();
        assert!(!s.due(now, flush, false), "not full, not old");
        let d = s.deadline(flush).expect("events wait");
        assert!(s.due(d, flush, false));
        assert!(s.due(now, flush, true), "closing sends what waits");
    }
}
