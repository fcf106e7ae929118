//! Per-stream order across concurrent requests: which events go in the next request, and
//! when it may send.
//!
//! A backend stores a request's events when it handles the request, so two requests in flight
//! at once may be stored in either order. The lines of one stream (a container's stdout, a
//! Loki label set) must not be: Docker's times are whole seconds, and a stack trace or a
//! request's log lines shuffled by the network cannot be put back together by the reader.
//!
//! So, with `ordering = "stream"` (the default), a request is made from streams that have
//! nothing in flight, longest waiting first, several streams sharing a request; the events a
//! stream receives meanwhile wait for it to finish, retries and 413 halves included.
//! Different streams go out in parallel, up to `max_in_flight` requests. When a full
//! request's worth waits only in streams that are in flight (one busy container, or a
//! request that took every stream), a request may still be made of them, and encoded, but
//! it sends only once the earlier requests of its streams are finished (its [`Gate`]): the
//! CPU work overlaps, the stores stay in order. With `ordering = "none"` any free slot takes
//! the oldest waiting events whatever their stream.
//!
//! Arrival order is not all a reader sees: Grafana and Kibana sort by time, and lines of one
//! second tie. So every event also gets a sending time ([`Ref::time`](super::export::Ref)):
//! its own time, or one nanosecond past the previous event of its stream when the two tie or
//! the time stepped back by less than a second. It is fixed when the event is scheduled, so
//! a retry sends the same value (Loki drops a retried entry it already stored because time
//! and line are equal). Loki and OTLP send it as the entry's time; Elasticsearch as a
//! sequence number, the event's time being `@timestamp` as it was.
//!
//! What the scheduler holds is bounded by the sink's queue: entries keep their permits until
//! delivered, and the queue charges [`SLOT_BYTES`] per event for the scheduler's lists.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as Atomic};
use std::time::Duration;

use tokio::sync::{Notify, OnceCell, OwnedSemaphorePermit, Semaphore};
// The runtime's clock, so the loop's flushes follow tokio's (paused, in tests) time.
use tokio::time::Instant;

use super::export::Ref;
use super::settings::Ordering;
use crate::buffer::{Entry, SLOT_BYTES};
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
    /// Arrival order (wrapping): a request goes out in it, reading its records in the order
    /// they were stored.
    arrived: u32,
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

/// Set when a request is finished (delivered, refused or given up), for the requests that
/// wait on it.
#[derive(Debug, Default)]
struct Done {
    flag: AtomicBool,
    notify: Notify,
}

impl Done {
    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.flag.load(Atomic::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Held by a request while it runs; dropping it (the request finished, or its task ended
/// any other way) releases the requests waiting on it.
#[derive(Debug)]
pub struct Finish(Arc<Done>);

impl Drop for Finish {
    fn drop(&mut self) {
        self.0.flag.store(true, Atomic::Release);
        self.0.notify.notify_waiters();
    }
}

/// What a request waits for before it sends: the earlier requests that hold events of its
/// streams, then one of the `max_in_flight` sending slots, which it keeps until it is
/// finished.
#[derive(Debug)]
pub struct Gate {
    after: Vec<Arc<Done>>,
    slots: Arc<Semaphore>,
    slot: OnceCell<OwnedSemaphorePermit>,
}

impl Gate {
    /// Waits for the earlier requests of these streams and for a sending slot; at once
    /// after the first time.
    pub async fn open(&self) {
        if self.slot.initialized() {
            return;
        }
        for d in &self.after {
            d.wait().await;
        }
        self.slot
            .get_or_init(|| async {
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the sending slots are never closed")
            })
            .await;
    }
}

/// A request: its events, the streams to release when it is finished, what it waits for.
#[derive(Debug)]
pub struct Request {
    pub items: Vec<Item>,
    pub id: u64,
    pub streams: Vec<u64>,
    pub gate: Gate,
    pub finish: Finish,
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
    /// The latest request holding events of this stream, while it runs.
    holder: Option<(u64, Arc<Done>)>,
    /// In `Scheduler::ready` (nothing in flight), or in `Scheduler::behind` (in flight).
    listed: bool,
    /// When it last received an event.
    used: Instant,
}

/// Events and record bytes waiting in a set of streams.
#[derive(Debug, Default, Clone, Copy)]
struct Sum {
    events: usize,
    bytes: usize,
}

impl Sum {
    fn full(self, max_events: usize, max_bytes: usize) -> bool {
        self.events >= max_events || self.bytes >= max_bytes
    }
}

/// Events waiting for a request, per stream.
#[derive(Debug)]
pub struct Scheduler {
    streams: HashMap<u64, Stream, foldhash::fast::RandomState>,
    /// Streams with events waiting and nothing in flight, longest waiting first.
    ready: VecDeque<u64>,
    ready_sum: Sum,
    /// When the oldest waiting event of a ready stream arrived.
    oldest: Option<Instant>,
    /// Streams with events waiting behind a request in flight (may hold stale keys: a stream
    /// is in it while `listed` and it holds a request).
    behind: VecDeque<u64>,
    behind_sum: Sum,
    /// Events waiting in all streams.
    held_events: usize,
    exclusive: bool,
    max_events: usize,
    max_bytes: usize,
    swept: Instant,
    /// Events taken so far (wrapping).
    arrived: u32,
    /// Requests made so far.
    requests: u64,
    /// The request made behind others, while it runs: one at a time, enough to overlap
    /// encoding with sending. It does not count against the sending slots until it sends.
    queued: Option<u64>,
    /// `max_in_flight` requests sending at once.
    slots: Arc<Semaphore>,
}

impl Scheduler {
    pub fn new(
        ordering: Ordering,
        max_events: usize,
        max_bytes: usize,
        max_in_flight: usize,
    ) -> Scheduler {
        Scheduler {
            streams: HashMap::default(),
            ready: VecDeque::new(),
            ready_sum: Sum::default(),
            oldest: None,
            behind: VecDeque::new(),
            behind_sum: Sum::default(),
            held_events: 0,
            exclusive: ordering == Ordering::Stream,
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            swept: Instant::now(),
            arrived: 0,
            requests: 0,
            queued: None,
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
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
                holder: None,
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
                arrived: self.arrived,
            });
            self.arrived = self.arrived.wrapping_add(1);
            s.bytes += len;
            s.since.get_or_insert(now);
            self.held_events += 1;
            let sum = if s.holder.is_some() {
                &mut self.behind_sum
            } else {
                &mut self.ready_sum
            };
            sum.events += 1;
            sum.bytes += len;
            if !s.listed {
                s.listed = true;
                if s.holder.is_some() {
                    self.behind.push_back(key);
                } else {
                    self.ready.push_back(key);
                    self.oldest = self.oldest.min(s.since).or(s.since);
                }
            }
        }
        if now.duration_since(self.swept) >= FORGET_AFTER / 2 {
            self.swept = now;
            self.streams.retain(|_, s| {
                s.holder.is_some()
                    || !s.pending.is_empty()
                    || now.duration_since(s.used) < FORGET_AFTER
            });
        }
    }

    /// Whether a full request waits in streams with nothing in flight. (Events behind
    /// requests in flight do not count: taking more entries is how other streams' events
    /// are found, up to the queue's bound.)
    pub fn full(&self) -> bool {
        self.ready_sum.full(self.max_events, self.max_bytes)
    }

    /// When the oldest ready event will have waited `flush`.
    pub fn deadline(&self, flush: Duration) -> Option<Instant> {
        self.oldest
            .filter(|_| self.ready_sum.events > 0)
            .map(|o| o + flush)
    }

    pub fn is_empty(&self) -> bool {
        self.held_events == 0
    }

    /// Requests running that do not count against the sending slots yet: the one made
    /// behind others, if any.
    pub fn queued(&self) -> usize {
        usize::from(self.queued.is_some())
    }

    /// The next request, if one is due: with `free` (a sending slot is free), a full one,
    /// one whose oldest event has waited `flush`, or anything ready when `closing`, made of
    /// ready streams; else, when no stream is ready, a full one of streams behind requests
    /// in flight, if none such runs yet. Up to `max_events` events and about `max_bytes`
    /// (at least one event), taken from the streams in turn, each stream's events in order,
    /// the whole in arrival order.
    pub fn take(
        &mut self,
        now: Instant,
        flush: Duration,
        closing: bool,
        free: bool,
    ) -> Option<Request> {
        let ready = free
            && self.ready_sum.events > 0
            && (closing
                || self.ready_sum.full(self.max_events, self.max_bytes)
                || self.oldest.is_some_and(|o| now >= o + flush));
        // Behind requests in flight only while no stream is ready, and one at a time: a
        // request waiting for its gate holds a slot that a ready stream could use.
        let behind = self.ready_sum.events == 0
            && self.queued.is_none()
            && self.behind_sum.full(self.max_events, self.max_bytes);
        if !ready && !behind {
            return None;
        }
        self.requests += 1;
        let id = self.requests;
        if behind {
            self.queued = Some(id);
        }
        let done = Arc::new(Done::default());
        let waiting = if behind {
            self.behind_sum
        } else {
            self.ready_sum
        };
        let mut items = Vec::with_capacity(waiting.events.min(self.max_events));
        let mut streams = Vec::new();
        let mut gate = Vec::new();
        let (mut events, mut bytes) = (0usize, 0usize);
        while events < self.max_events && bytes < self.max_bytes {
            let list = if behind {
                &mut self.behind
            } else {
                &mut self.ready
            };
            let Some(key) = list.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            if !s.listed || s.holder.is_some() != behind {
                continue; // stale: the stream moved to the other list since
            }
            s.listed = false;
            let sum = if behind {
                &mut self.behind_sum
            } else {
                &mut self.ready_sum
            };
            sum.events -= s.pending.len();
            sum.bytes -= s.bytes;
            while events < self.max_events && bytes < self.max_bytes {
                let Some(item) = s.pending.pop_front() else {
                    break;
                };
                let len = item.len();
                s.bytes -= len;
                self.held_events -= 1;
                events += 1;
                bytes += len;
                items.push(item);
            }
            if s.pending.is_empty() {
                s.since = None;
            }
            if self.exclusive {
                if let Some((_, earlier)) = s.holder.replace((id, done.clone())) {
                    gate.push(earlier);
                }
                streams.push(key);
                if !s.pending.is_empty() {
                    // The request is full: the rest waits behind it.
                    s.listed = true;
                    self.behind.push_front(key);
                    self.behind_sum.events += s.pending.len();
                    self.behind_sum.bytes += s.bytes;
                }
            } else if !s.pending.is_empty() {
                // The request is full: the rest of this stream goes first next time.
                s.listed = true;
                self.ready.push_front(key);
                self.ready_sum.events += s.pending.len();
                self.ready_sum.bytes += s.bytes;
            }
        }
        self.oldest = self
            .ready
            .iter()
            .filter_map(|k| {
                self.streams
                    .get(k)
                    .filter(|s| s.listed)
                    .and_then(|s| s.since)
            })
            .min();
        if streams.len() > 1 || !self.exclusive {
            // Back into arrival order (each stream's run already is: the stable sort merges
            // them). Distances from the first item, so the wrapping counter sorts right.
            let first = items.first().map_or(0, |i| i.arrived);
            items.sort_by_key(|i| i.arrived.wrapping_sub(first) as i32);
        }
        gate.sort_by_key(|d| Arc::as_ptr(d) as usize);
        gate.dedup_by_key(|d| Arc::as_ptr(d) as usize);
        Some(Request {
            items,
            id,
            streams,
            gate: Gate {
                after: gate,
                slots: self.slots.clone(),
                slot: OnceCell::new(),
            },
            finish: Finish(done),
        })
    }

    /// Request `id`, which held `streams`, is finished: what waits behind it may go.
    pub fn done(&mut self, id: u64, streams: &[u64]) {
        if self.queued == Some(id) {
            self.queued = None;
        }
        for key in streams {
            let Some(s) = self.streams.get_mut(key) else {
                continue;
            };
            if s.holder.as_ref().is_none_or(|(h, _)| *h != id) {
                continue; // a later request holds it
            }
            s.holder = None;
            if s.pending.is_empty() {
                continue;
            }
            if s.listed {
                // Behind: move to ready (its key in `behind` is now stale).
                self.behind_sum.events -= s.pending.len();
                self.behind_sum.bytes -= s.bytes;
            }
            s.listed = true;
            self.ready.push_back(*key);
            self.ready_sum.events += s.pending.len();
            self.ready_sum.bytes += s.bytes;
            self.oldest = self.oldest.min(s.since).or(s.since);
        }
    }
}

/// How far to move an event at `t` whose stream last sent `last`: not at all, unless it
/// ties with `last` or is less than a second before it (whole-second clocks, small clock
/// steps): then to one nanosecond past `last`. A larger step back keeps `t` (a replay of old
/// lines is sorted by its own times).
fn after(last: Timestamp, t: Timestamp) -> u32 {
    let (l, n) = (nanos(last), nanos(t));
    if n > l || l.saturating_sub(n) >= NS {
        return 0;
    }
    (l - n + 1) as u32
}

const NS: i64 = 1_000_000_000;

/// Nanoseconds since the epoch, saturating (years past 2262 are not log times).
fn nanos(t: Timestamp) -> i64 {
    t.secs.saturating_mul(NS).saturating_add(i64::from(t.nanos))
}

/// `t` moved on by `moved` nanoseconds.
fn plus(t: Timestamp, moved: u32) -> Timestamp {
    if moved == 0 {
        return t;
    }
    let n = i64::from(t.nanos) + i64::from(moved);
    Timestamp {
        secs: t.secs.saturating_add(n / NS),
        nanos: (n % NS) as u32,
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
        assert_eq!(sent(t(i64::MAX, 0), t(i64::MIN, 0)), t(i64::MIN, 0));
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
        let mut s = Scheduler::new(ordering, max_events, 1 << 20, 4);
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

    const HOUR: Duration = Duration::from_secs(3600);

    fn take(s: &mut Scheduler, closing: bool) -> Option<Request> {
        s.take(Instant::now(), HOUR, closing, true)
    }

    #[tokio::test]
    async fn a_busy_stream_waits_while_others_go() {
        let mut s = scheduler_with(Ordering::Stream, 3, &[(&[1, 1, 2, 1, 3, 3], 5)]).await;
        let first = take(&mut s, false).expect("six events, three fit");
        assert_eq!(
            streams_of(&first),
            vec![(1, t(5, 0)), (1, t(5, 1)), (1, t(5, 2))]
        );
        assert_eq!(first.streams, vec![1]);
        assert!(first.gate.after.is_empty());
        // Stream 1 is in flight: the next request takes 2 and 3 only, in arrival order.
        let second = take(&mut s, true).expect("closing sends what is ready");
        assert_eq!(
            streams_of(&second),
            vec![(2, t(5, 0)), (3, t(5, 0)), (3, t(5, 1))]
        );
        assert!(s.is_empty());
        assert!(take(&mut s, true).is_none(), "nothing ready");
        // More of stream 1 arrives: it waits for the first request, whatever the time.
        s.add(entry(&[1, 2], 5).await, by_first_byte);
        s.done(second.id, &second.streams);
        let third = take(&mut s, true).unwrap();
        assert_eq!(streams_of(&third), vec![(2, t(5, 1))]);
        assert!(take(&mut s, true).is_none(), "stream 1 is behind a request");
        s.done(first.id, &first.streams);
        assert_eq!(streams_of(&take(&mut s, true).unwrap()), vec![(1, t(5, 3))]);
        assert!(s.is_empty());
    }

    #[tokio::test]
    async fn a_full_request_behind_one_in_flight_waits_for_it_to_send() {
        let mut s = scheduler_with(Ordering::Stream, 2, &[(&[1, 1, 1, 1, 1], 7)]).await;
        let a = take(&mut s, false).unwrap();
        let b = take(&mut s, false).expect("a full request's worth waits behind the first");
        assert_eq!(streams_of(&a), vec![(1, t(7, 0)), (1, t(7, 1))]);
        assert_eq!(streams_of(&b), vec![(1, t(7, 2)), (1, t(7, 3))]);
        assert!(take(&mut s, false).is_none(), "one event left: not full");
        let mut open = std::pin::pin!(b.gate.open());
        assert!(futures_poll(&mut open).is_pending(), "b waits for a");
        drop(a.finish);
        assert!(futures_poll(&mut open).is_ready(), "a finished: b may send");
        // a done: the stream is still b's.
        s.done(a.id, &a.streams);
        assert!(take(&mut s, true).is_none());
        s.done(b.id, &b.streams);
        assert_eq!(streams_of(&take(&mut s, true).unwrap()), vec![(1, t(7, 4))]);
    }

    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::noop();
        std::pin::Pin::new(f).poll(&mut std::task::Context::from_waker(waker))
    }

    #[tokio::test]
    async fn without_ordering_a_stream_fills_every_slot() {
        let mut s = scheduler_with(Ordering::None, 2, &[(&[1, 1, 1, 1, 1], 7)]).await;
        let a = take(&mut s, false).unwrap();
        let b = take(&mut s, false).unwrap();
        assert_eq!(streams_of(&a), vec![(1, t(7, 0)), (1, t(7, 1))]);
        assert_eq!(streams_of(&b), vec![(1, t(7, 2)), (1, t(7, 3))]);
        assert!(a.streams.is_empty() && b.gate.after.is_empty());
        assert!(take(&mut s, false).is_none());
        assert!(!s.is_empty());
    }

    #[tokio::test]
    async fn the_flush_deadline_is_the_oldest_ready_event() {
        let mut s = scheduler_with(Ordering::Stream, 100, &[(&[1, 2], 1)]).await;
        let flush = Duration::from_millis(50);
        let now = Instant::now();
        assert!(
            s.take(now, flush, false, true).is_none(),
            "not full, not old"
        );
        let d = s.deadline(flush).expect("events wait");
        assert!(s.take(d, flush, false, false).is_none(), "no free slot");
        let r = s.take(d, flush, false, true).expect("old enough");
        assert_eq!(r.items.len(), 2);
    }
}
