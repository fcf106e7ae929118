//! Bounded queues between sources and sinks, and the fan-out that fills them.
//!
//! Every sink owns one [`Queue`], bounded in bytes and in events. A batch takes permits from
//! both semaphores before it is enqueued and gives them back when the sink drops it, so the
//! bound covers batches the sink is still working on, not just those waiting.
//!
//! When a queue is full, [`Router::send`] waits. The source that called it is then not reading
//! its socket, the kernel's receive buffer fills, and TCP slows the client: that is the whole
//! backpressure mechanism, and the only place Outrigger chooses between waiting and dropping.
//! It always waits; nothing is dropped for lack of room.
//!
//! A batch shared by several sinks is one `Arc`; each sink gets a [`Selection`] of the tags it
//! matched, computed once per distinct tag, not per event.
//!
//! [`disk`] is the write-ahead log `buffer.type = "disk"` puts under these queues: the
//! sources write into it instead of a router, and each sink's reader fills its queue from it
//! (waiting when the queue is full, which then costs disk, not memory).

pub mod disk;
mod pattern;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::event::{Batch, Event};
pub use pattern::Pattern;

/// Which events of a shared batch one sink takes: all, or those whose tag index is `true`.
pub type Selection = Option<Arc<[bool]>>;

/// What an [`Entry`] itself costs while it waits in the channel's blocks (charged besides
/// its batch).
const ENTRY_BYTES: usize = std::mem::size_of::<Entry>() + 16;

/// What a sink may keep per event while the event waits to go out (an exporter's place for
/// it in its stream's list, `sink::order`), charged with each entry.
pub const SLOT_BYTES: usize = 24;

/// One batch (or part of one) in a sink's queue. Dropping it frees its queue space.
#[derive(Debug)]
pub struct Entry {
    pub batch: Arc<Batch>,
    pub selection: Selection,
    /// Selected events.
    pub events: usize,
    _bytes: OwnedSemaphorePermit,
    _events: OwnedSemaphorePermit,
    /// With the disk buffer: keeps the log record the batch came from needed by this sink
    /// until the sink is finished with the batch.
    _mark: Option<disk::progress::Mark>,
    queue: Arc<Shared>,
    bytes: usize,
}

impl Entry {
    /// The events this sink takes from the batch.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.batch.events.iter().filter(|e| self.selects(e))
    }

    /// Whether `event` (of this entry's batch) is one this sink takes.
    pub fn selects(&self, event: &Event) -> bool {
        self.selection
            .as_deref()
            .is_none_or(|s| s[event.tag as usize])
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.queue.depth_events.dec_by(self.events as i64);
        self.queue.depth_bytes.dec_by(self.bytes as i64);
    }
}

#[derive(Debug)]
struct Shared {
    /// Free bytes. Permits travel inside each [`Entry`] and return when the sink drops it.
    bytes: Arc<Semaphore>,
    /// Free event slots, likewise.
    events: Arc<Semaphore>,
    max_bytes: u32,
    max_events: u32,
    depth_bytes: Gauge,
    depth_events: Gauge,
}

/// Queue depth gauges of one sink.
#[derive(Debug, Clone, Default)]
pub struct QueueGauges {
    pub bytes: Gauge,
    pub events: Gauge,
}

/// A sink's bounded queue.
pub struct Queue;

impl Queue {
    /// Creates a queue; `max_bytes` and `max_events` are clamped to what a semaphore holds.
    pub fn bounded(
        max_bytes: u64,
        max_events: u64,
        gauges: QueueGauges,
    ) -> (QueueSender, QueueReceiver) {
        let clamp = |v: u64| v.clamp(1, u64::from(u32::MAX)) as u32;
        let (max_bytes, max_events) = (clamp(max_bytes), clamp(max_events));
        let shared = Arc::new(Shared {
            bytes: Arc::new(Semaphore::new(max_bytes as usize)),
            events: Arc::new(Semaphore::new(max_events as usize)),
            max_bytes,
            max_events,
            depth_bytes: gauges.bytes,
            depth_events: gauges.events,
        });
        // Unbounded as a channel, bounded by the semaphores: a channel's own bound counts
        // batches, which says nothing about memory.
        let (tx, rx) = mpsc::unbounded_channel();
        (QueueSender { tx, shared }, QueueReceiver { rx })
    }
}

/// The sink is gone; the batch was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Producer end, held by the router (one clone per source connection).
#[derive(Debug, Clone)]
pub struct QueueSender {
    tx: mpsc::UnboundedSender<Entry>,
    shared: Arc<Shared>,
}

impl QueueSender {
    /// Waits for room, then enqueues. A batch larger than the whole queue waits until the
    /// queue is empty, then goes alone.
    ///
    /// # Cancel safety
    /// Cancelling while waiting enqueues nothing and keeps no permits.
    pub async fn push(
        &self,
        batch: Arc<Batch>,
        selection: Selection,
        events: usize,
    ) -> Result<(), Closed> {
        self.push_marked(batch, selection, events, None).await
    }

    /// [`QueueSender::push`] of a batch read from the disk buffer, with its `mark`.
    ///
    /// # Cancel safety
    /// As `push`.
    pub async fn push_marked(
        &self,
        batch: Arc<Batch>,
        selection: Selection,
        events: usize,
        mark: Option<disk::progress::Mark>,
    ) -> Result<(), Closed> {
        let s = &self.shared;
        let bytes = batch.size + ENTRY_BYTES + events * SLOT_BYTES;
        let want_bytes = (bytes as u64).clamp(1, u64::from(s.max_bytes)) as u32;
        let want_events = (events as u64).clamp(1, u64::from(s.max_events)) as u32;
        let b = s
            .bytes
            .clone()
            .acquire_many_owned(want_bytes)
            .await
            .map_err(|_| Closed)?;
        let e = s
            .events
            .clone()
            .acquire_many_owned(want_events)
            .await
            .map_err(|_| Closed)?;
        s.depth_bytes.inc_by(bytes as i64);
        s.depth_events.inc_by(events as i64);
        let entry = Entry {
            batch,
            selection,
            events,
            _bytes: b,
            _events: e,
            _mark: mark,
            queue: self.shared.clone(),
            bytes,
        };
        self.tx.send(entry).map_err(|_| Closed)
    }
}

/// Consumer end, held by the sink. `recv` returns `None` once every sender is dropped and the
/// queue is empty: that is how a sink learns the drain reached it.
#[derive(Debug)]
pub struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<Entry>,
}

impl QueueReceiver {
    pub async fn recv(&mut self) -> Option<Entry> {
        self.rx.recv().await
    }

    /// An entry already waiting, without blocking.
    pub fn try_recv(&mut self) -> Option<Entry> {
        self.rx.try_recv().ok()
    }
}

/// A sink's place in the fan-out.
#[derive(Debug)]
pub struct Route {
    pub patterns: Vec<Pattern>,
    pub queue: QueueSender,
}

impl Route {
    /// Which of `batch`'s tags this sink matches, one flag per tag.
    fn mask(&self, batch: &Batch) -> Vec<bool> {
        batch
            .tags
            .iter()
            .map(|t| self.patterns.iter().any(|p| p.matches(t)))
            .collect()
    }

    /// What this sink takes of `batch`: its selection and how many events, or `None`.
    pub fn select(&self, batch: &Batch) -> Option<(Selection, usize)> {
        plan(self.mask(batch), batch)
    }
}

/// The selection a tag mask makes of `batch`, and its events; `None` when it takes none.
fn plan(mask: Vec<bool>, batch: &Batch) -> Option<(Selection, usize)> {
    if mask.iter().all(|m| *m) {
        Some((None, batch.events.len()))
    } else if mask.iter().any(|m| *m) {
        let n = batch.events.iter().filter(|e| mask[e.tag as usize]).count();
        Some((Some(Arc::from(mask)), n))
    } else {
        None
    }
}

/// Sends each batch to every sink whose patterns match some of its tags.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Arc<[Route]>,
    /// Events no sink wanted (counted, then discarded, like Fluentd's "no patterns matched").
    unrouted: Counter,
}

impl Router {
    /// `routes` is shared by every source; `unrouted` is the calling source's counter.
    pub fn new(routes: Arc<[Route]>, unrouted: Counter) -> Router {
        Router { routes, unrouted }
    }

    /// Hands `batch` to every matching sink, waiting for queue room. Its [`Ack`] share is
    /// dropped here once every sink has taken it (rejected if any queue is closed): in-memory
    /// admission is what an ack means today.
    ///
    /// [`Ack`]: crate::event::Ack
    pub async fn send(&self, batch: Batch) {
        self.send_marked(batch, None).await;
    }

    /// [`Router::send`], each queue's entry carrying a mark of record `seq` of `progress`
    /// (`Some((progress, seq))`): the record stays unfinished until every sink that took the
    /// batch has dropped it (delivered, dead-lettered or given up on). A source whose input
    /// is its own buffer (a file) moves its checkpoint by this.
    pub async fn send_marked(
        &self,
        mut batch: Batch,
        marks: Option<(&Arc<disk::progress::Progress>, u64)>,
    ) {
        let ack = batch.ack.take();
        if batch.events.is_empty() {
            return;
        }
        // The queues bound memory, so they count the batch's own structures (the event
        // structs with what enrichment found, its tags) besides the input bytes.
        batch.size += batch.footprint();
        let mut wanted = vec![false; batch.tags.len()];
        let mut plans = Vec::with_capacity(self.routes.len());
        for (i, route) in self.routes.iter().enumerate() {
            let mask = route.mask(&batch);
            for (w, m) in wanted.iter_mut().zip(&mask) {
                *w |= m;
            }
            if let Some((selection, events)) = plan(mask, &batch) {
                plans.push((i, selection, events));
            }
        }
        if !wanted.iter().all(|w| *w) {
            let lost = batch
                .events
                .iter()
                .filter(|e| !wanted[e.tag as usize])
                .count();
            self.unrouted.inc_by(lost as u64);
        }
        let received = batch.received.secs;
        let batch = Arc::new(batch);
        for (i, selection, events) in plans {
            let mark = marks.map(|(p, seq)| p.mark(seq, received));
            let pushed = self.routes[i]
                .queue
                .push_marked(batch.clone(), selection, events, mark)
                .await;
            if pushed.is_err()
                && let Some(ack) = &ack
            {
                ack.reject();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Ack, AckStatus, Timestamp};
    use bytes::Bytes;
    use std::time::Duration;

    fn batch(tags: &[&'static str], events_per_tag: usize, size: usize) -> Batch {
        let mut b = Batch {
            size,
            ..Default::default()
        };
        for t in tags {
            let idx = b.tag_index(t.as_bytes(), || Bytes::from_static(t.as_bytes()));
            for _ in 0..events_per_tag {
                b.events.push(Event::new(
                    Timestamp::default(),
                    idx,
                    Bytes::from_static(&[0x80]),
                ));
            }
        }
        b
    }

    fn route(pattern: &str, max_bytes: u64) -> (Route, QueueReceiver, QueueGauges) {
        let gauges = QueueGauges::default();
        let (tx, rx) = Queue::bounded(max_bytes, 1000, gauges.clone());
        let r = Route {
            patterns: vec![Pattern::parse(pattern).unwrap()],
            queue: tx,
        };
        (r, rx, gauges)
    }

    #[tokio::test]
    async fn fan_out_selects_by_tag() {
        let (a, mut ra, _) = route("docker.*", 1 << 20);
        let (b, mut rb, _) = route("**", 1 << 20);
        let unrouted = Counter::default();
        let router = Router::new(vec![a, b].into(), unrouted.clone());
        router.send(batch(&["docker.web", "app"], 2, 10)).await;
        let ea = ra.recv().await.unwrap();
        assert_eq!(ea.events, 2);
        assert!(ea.events().all(|e| ea.batch.tag(e) == b"docker.web"));
        let eb = rb.recv().await.unwrap();
        assert_eq!((eb.events, eb.events().count()), (4, 4));
        assert!(
            Arc::ptr_eq(&ea.batch, &eb.batch),
            "fan-out shares, not copies"
        );
        assert_eq!(unrouted.get(), 0);
    }

    #[tokio::test]
    async fn unmatched_events_are_counted_and_acked() {
        let (a, mut ra, _) = route("docker.*", 1 << 20);
        let unrouted = Counter::default();
        let router = Router::new(vec![a].into(), unrouted.clone());
        let mut b = batch(&["other"], 3, 10);
        let (ack, wait) = Ack::new();
        b.ack = Some(ack);
        router.send(b).await;
        assert_eq!(wait.wait().await, AckStatus::Accepted);
        assert_eq!(unrouted.get(), 3);
        assert!(ra.try_recv().is_none());
    }

    #[tokio::test]
    async fn full_queue_waits_until_sink_frees_room() {
        /// What a batch holds once routed: its input, its own structures, its entry.
        fn held(b: &Batch) -> i64 {
            (b.size + b.footprint() + ENTRY_BYTES + b.events.len() * SLOT_BYTES) as i64
        }
        let one = held(&batch(&["t"], 1, 60));
        // Room for one batch and a half.
        let (a, mut ra, gauges) = route("**", (one + one / 2) as u64);
        let router = Router::new(vec![a].into(), Counter::default());
        router.send(batch(&["t"], 1, 60)).await;
        assert_eq!(gauges.bytes.get(), one);
        let r2 = router.clone();
        let second = tokio::spawn(async move { r2.send(batch(&["t"], 1, 60)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "second batch should wait for room");
        let first = ra.recv().await.unwrap();
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gauges.bytes.get(), one);
    }

    #[tokio::test]
    async fn oversized_batch_goes_alone() {
        let (a, mut ra, _) = route("**", 10);
        let router = Router::new(vec![a].into(), Counter::default());
        router.send(batch(&["t"], 1, 1000)).await;
        assert!(ra.recv().await.unwrap().batch.size >= 1000);
    }

    #[tokio::test]
    async fn closed_sink_rejects_the_ack() {
        let (a, ra, _) = route("**", 100);
        drop(ra);
        let router = Router::new(vec![a].into(), Counter::default());
        let mut b = batch(&["t"], 1, 10);
        let (ack, wait) = Ack::new();
        b.ack = Some(ack);
        router.send(b).await;
        assert_eq!(wait.wait().await, AckStatus::Rejected);
    }
}
