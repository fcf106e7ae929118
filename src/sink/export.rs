//! Delivery to network backends: batching, bounded concurrency, per-stream order, retries,
//! dead letters.
//!
//! Every network exporter runs this same loop; an exporter only turns events into a request
//! and a response into a [`Verdict`] ([`Deliver::attempt`]), and names each event's stream
//! ([`Deliver::stream`]).
//!
//! The loop takes queue entries into a [`Scheduler`], which holds them per stream and makes
//! a request once enough events wait (`max_batch_events`, `max_batch_bytes`) or the oldest
//! has waited `flush_interval_ms`, keeping at most `max_in_flight` requests going and, by
//! default, each stream in at most one of them (see [`super::order`]). While every slot is
//! busy and a full request waits, it takes no more entries: the queue fills and the sources
//! stop reading, which is how a slow or failing backend slows the senders instead of growing
//! memory. Events of busy streams do not count as waiting, so the loop goes on taking
//! entries for the other streams, up to the queue's bound. Entries keep their queue permits
//! until the last request carrying their events is finished, so the bound covers events
//! waiting here, in flight and in retry too.
//!
//! A retryable failure is retried with exponential backoff and jitter, honouring
//! `Retry-After`, until it succeeds, `max_retries` runs out, or Outrigger stops. Events a
//! backend refuses for good are logged, counted by reason and appended to the dead-letter
//! file, never dropped silently.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::dead_letter::DeadLetter;
use super::order::{Finish, Gate, Item, Request, Scheduler};
use super::retry::{Backoff, Verdict};
use super::settings::Delivery;
use super::split;
use crate::buffer::QueueReceiver;
use crate::event::{Batch, Event, Timestamp};
use crate::telemetry::SinkMetrics;
use crate::telemetry::logging::RateLimit;
use crate::telemetry::otel::{ExportSpan, SinkTracer};

/// One event of a request, with the batch it belongs to (for its tag, resource and fields).
#[derive(Debug, Clone, Copy)]
pub struct Ref<'a> {
    pub batch: &'a Batch,
    pub event: &'a Event,
    /// The time to send: the event's own, or just past the previous event of its stream when
    /// they tie (see [`super::order`]), so a backend sorting by time keeps the order.
    pub time: Timestamp,
}

impl<'a> Ref<'a> {
    /// `event` sent with its own time.
    pub fn new(batch: &'a Batch, event: &'a Event) -> Ref<'a> {
        Ref {
            batch,
            event,
            time: event.time,
        }
    }
}

/// What the delivery loop needs of an exporter: one attempt at a request, and each event's
/// stream. Every sink kind's exporter implements it (and is built, boxed, from the kind's
/// settings: [`super::Build`]); the loop's tests drive it with a stand-in.
pub trait Deliver: Send + Sync + 'static {
    /// Sends `events` once and says what became of them. An exporter encodes first and opens
    /// `gate` just before it sends, so a request queued behind another of its streams gets
    /// its encoding done while it waits.
    fn attempt<'a>(&'a self, events: &'a [Ref<'a>], gate: &'a Gate) -> Attempt<'a>;

    /// The stream `event` belongs to, as a hash: what must stay in order. By default the
    /// container and its stdout or stderr, or the tag for events without a container (Loki
    /// uses the label set instead). Two streams that collide only share their turn.
    fn stream(&self, r: Ref<'_>) -> u64 {
        origin(r)
    }
}

/// One attempt in flight. Boxed so that an exporter of any kind is a `Box<dyn Deliver>` and a
/// new kind needs no variant here: one allocation per request (not per event), which next to
/// encoding a whole request does not show in a profile.
pub type Attempt<'a> = Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;

impl<D: Deliver + ?Sized> Deliver for Box<D> {
    fn attempt<'a>(&'a self, events: &'a [Ref<'a>], gate: &'a Gate) -> Attempt<'a> {
        (**self).attempt(events, gate)
    }

    fn stream(&self, r: Ref<'_>) -> u64 {
        (**self).stream(r)
    }
}

/// What every request of one sink shares.
struct Shared<E> {
    name: String,
    exporter: E,
    backoff: Backoff,
    max_retries: u32,
    dead_letter: Option<DeadLetter>,
    metrics: SinkMetrics,
    warn: RateLimit,
    /// `None` when self-telemetry is off: then no span is built at all.
    tracer: Option<SinkTracer>,
}

/// The container (or tag) and stdout/stderr of an event, hashed.
fn origin(r: Ref<'_>) -> u64 {
    let e = r.event;
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    match e.meta.container_id.map(|id| e.slice(id)) {
        // Docker's IDs are 64 random hex digits: their ends tell containers apart as well as
        // the whole (and a collision only makes two streams share their turn).
        Some(id) if id.len() > 32 => {
            h.write(&id[..16]);
            h.write(&id[id.len() - 16..]);
        }
        Some(id) => h.write(id),
        None => h.write(r.batch.tag(e)),
    }
    h.write_u8(0xff);
    if let Some(s) = e.meta.stream {
        h.write(e.slice(s));
    }
    h.finish()
}

/// Drains `queue` into `exporter` until the queue closes and every request has finished.
pub async fn run<E: Deliver>(
    name: String,
    exporter: E,
    delivery: Delivery,
    dead_letter: Option<DeadLetter>,
    mut queue: QueueReceiver,
    metrics: SinkMetrics,
    tracer: Option<SinkTracer>,
) {
    let shared = Arc::new(Shared {
        name,
        exporter,
        backoff: Backoff {
            initial: Duration::from_millis(delivery.retry_initial_backoff_ms),
            max: Duration::from_millis(delivery.retry_max_backoff_ms),
        },
        max_retries: delivery.max_retries,
        dead_letter,
        metrics,
        warn: RateLimit::new(5),
        tracer,
    });
    let flush_every = Duration::from_millis(delivery.flush_interval_ms);
    let slots = delivery.max_in_flight;
    let mut scheduler = Scheduler::new(
        delivery.ordering,
        delivery.max_batch_events,
        delivery.max_batch_bytes,
        slots,
    );
    let mut inflight = JoinSet::new();
    // The streams each request holds, by task, so a request that panicked still frees them.
    let mut holding: HashMap<tokio::task::Id, (u64, Vec<u64>)> = HashMap::new();
    let mut open = true;
    loop {
        let now = Instant::now();
        loop {
            let free = inflight.len() - scheduler.queued() < slots;
            let Some(request) = scheduler.take(now, flush_every, !open, free) else {
                break;
            };
            let Request {
                items,
                id,
                streams,
                gate,
                finish,
            } = request;
            let task = inflight.spawn(deliver(shared.clone(), items, gate, finish));
            holding.insert(task.id(), (id, streams));
        }
        if !open && scheduler.is_empty() && inflight.is_empty() {
            break;
        }
        let due = scheduler
            .deadline(flush_every)
            .filter(|_| inflight.len() - scheduler.queued() < slots);
        let wait_due = async {
            match due {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        // Every slot busy and a full request waiting: take nothing more, so the queue fills
        // and the sources stop reading (and read more at once when they go on).
        let waiting = inflight.len() - scheduler.queued() >= slots && scheduler.full();
        tokio::select! {
            entry = queue.recv(), if open && !waiting => match entry {
                Some(e) => scheduler.add(e, |r| shared.exporter.stream(r)),
                None => open = false,
            },
            Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                if let Some((request, streams)) = holding.remove(&id) {
                    scheduler.done(request, &streams);
                }
            }
            _ = wait_due => {}
        }
    }
    tracing::debug!(sink = %shared.name, "sink drained");
}

/// Sends one request's events until they are delivered, refused, or out of retries.
///
/// With self-telemetry on, the request gets a span (see [`ExportSpan`]) and each attempt a
/// child span; with it off, `span` is `None` and nothing is built.
async fn deliver<E: Deliver>(s: Arc<Shared<E>>, work: Vec<Item>, gate: Gate, finish: Finish) {
    // Finished, whatever way this ends: the requests behind this one may send.
    let _finish = finish;
    let refs: Vec<Ref<'_>> = work.iter().map(Item::event).collect();
    let mut span = s
        .tracer
        .as_ref()
        .map(|t| t.batch(refs.len(), record_bytes(&refs), s.dead_letter.is_some()));
    let mut todo: Vec<usize> = (0..refs.len()).collect();
    let mut failures = 0u32;
    s.metrics.batches.inc();
    s.metrics.batch_events.observe(refs.len() as f64);
    loop {
        let attempt: Vec<Ref<'_>> = todo.iter().map(|i| refs[*i]).collect();
        let attempt_span = span
            .as_ref()
            .map(|b| b.attempt(failures + 1, attempt.len()));
        let started = Instant::now();
        let verdict = split::send(
            attempt.len(),
            |part| s.exporter.attempt(&attempt[part], &gate),
            |events| {
                if let Some(suppressed) = s.warn.allow() {
                    tracing::warn!(sink = %s.name, events, suppressed, "request too large for the backend (413), sending it in halves: lower max_batch_bytes or raise the backend's limit");
                }
            },
        )
        .await;
        s.metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Some(a) = attempt_span {
            a.end(&verdict);
        }
        let (retry, after, reason) = match verdict {
            Verdict::Delivered => {
                s.metrics.events.inc_by(attempt.len() as u64);
                s.metrics.bytes.inc_by(record_bytes(&attempt));
                if let Some(b) = &mut span {
                    b.delivered(attempt.len() as u64);
                }
                return;
            }
            Verdict::Accepted { rejected, reason } => {
                let rejected = rejected.min(attempt.len() as u64);
                s.metrics.events.inc_by(attempt.len() as u64 - rejected);
                s.metrics.failed("partially_rejected", rejected);
                if let Some(b) = &mut span {
                    b.delivered(attempt.len() as u64 - rejected);
                    b.rejected(rejected, &reason);
                }
                if let Some(suppressed) = s.warn.allow() {
                    tracing::error!(sink = %s.name, rejected, reason, suppressed, "backend rejected part of a batch without saying which, events lost");
                }
                return;
            }
            Verdict::Rejected { reason } | Verdict::TooLarge { reason } => {
                refuse(&s, &mut span, &attempt, &reason).await;
                return;
            }
            Verdict::Retry { reason, after } => (todo.clone(), after, reason),
            Verdict::Partial {
                retry,
                rejected,
                after,
            } => {
                let done = attempt.len().saturating_sub(retry.len() + rejected.len());
                s.metrics.events.inc_by(done as u64);
                if let Some(b) = &mut span {
                    b.delivered(done as u64);
                }
                for (i, reason) in &rejected {
                    refuse(&s, &mut span, &attempt[*i..*i + 1], reason).await;
                }
                (retry.iter().map(|i| todo[*i]).collect(), after, "partial")
            }
        };
        todo = retry;
        if todo.is_empty() {
            return;
        }
        failures += 1;
        if s.max_retries > 0 && failures > s.max_retries {
            let left: Vec<Ref<'_>> = todo.iter().map(|i| refs[*i]).collect();
            refuse(
                &s,
                &mut span,
                &left,
                &format!("retries exhausted ({reason})"),
            )
            .await;
            return;
        }
        s.metrics.retry(reason);
        if let Some(b) = &mut span {
            b.retrying(reason);
        }
        let wait = s.backoff.delay(failures, after);
        if let Some(suppressed) = s.warn.allow() {
            tracing::warn!(sink = %s.name, reason, events = todo.len(), attempt = failures, wait_ms = wait.as_millis() as u64, suppressed, "delivery failed, retrying");
        }
        tokio::time::sleep(wait).await;
    }
}

/// The record bytes of `events`: what `outrigger_sink_bytes_total` counts for exporters (the
/// encoded request differs per protocol and compression; the input it carries does not).
fn record_bytes(events: &[Ref<'_>]) -> u64 {
    events.iter().map(|r| r.event.record.len() as u64).sum()
}

/// Events the backend will never take: counted, logged, dead-lettered.
async fn refuse<E>(s: &Shared<E>, span: &mut Option<ExportSpan>, events: &[Ref<'_>], reason: &str) {
    if let Some(d) = &s.dead_letter {
        d.write(&s.name, reason, events).await;
    }
    s.metrics.failed("rejected", events.len() as u64);
    if let Some(b) = span {
        b.rejected(events.len() as u64, reason);
    }
    if let Some(suppressed) = s.warn.allow() {
        tracing::error!(sink = %s.name, events = events.len(), reason, dead_letter = s.dead_letter.is_some(), suppressed, "backend refused events");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering as Atomic};

    use bytes::Bytes;

    use super::*;
    use crate::buffer::{Queue, QueueGauges};
    use crate::event::Event;
    use crate::sink::settings::Ordering;

    /// One attempt as the stand-in saw it: when it sent (after its gate), and the ids.
    #[derive(Debug, Clone)]
    struct Seen {
        at: Duration,
        ids: Vec<u8>,
    }

    /// A stand-in backend: answers from `script` (then `Delivered`) after `latency`, and
    /// `TooLarge` for more than `max_events`.
    struct Fake {
        start: Instant,
        latency: Duration,
        max_events: usize,
        script: Mutex<VecDeque<Verdict>>,
        seen: Mutex<Vec<Seen>>,
        active: AtomicUsize,
        most: AtomicUsize,
    }

    impl Fake {
        fn new(latency: Duration, max_events: usize, script: Vec<Verdict>) -> Arc<Fake> {
            Arc::new(Fake {
                start: Instant::now(),
                latency,
                max_events,
                script: Mutex::new(script.into()),
                seen: Mutex::new(Vec::new()),
                active: AtomicUsize::new(0),
                most: AtomicUsize::new(0),
            })
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }

        fn sizes(&self) -> Vec<usize> {
            self.seen().iter().map(|s| s.ids.len()).collect()
        }

        /// One attempt: `TooLarge` above `max_events`, else the script's next answer.
        async fn answer(&self, events: &[Ref<'_>], gate: &Gate) -> Verdict {
            gate.open().await;
            let ids = events.iter().map(|r| r.event.record[0]).collect();
            self.seen.lock().unwrap().push(Seen {
                at: self.start.elapsed(),
                ids,
            });
            let now = self.active.fetch_add(1, Atomic::SeqCst) + 1;
            self.most.fetch_max(now, Atomic::SeqCst);
            tokio::time::sleep(self.latency).await;
            self.active.fetch_sub(1, Atomic::SeqCst);
            if events.len() > self.max_events {
                return Verdict::TooLarge {
                    reason: "HTTP 413".into(),
                };
            }
            self.script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Verdict::Delivered)
        }
    }

    impl Deliver for Arc<Fake> {
        fn attempt<'a>(&'a self, events: &'a [Ref<'a>], gate: &'a Gate) -> Attempt<'a> {
            Box::pin(self.answer(events, gate))
        }

        /// The record's second byte.
        fn stream(&self, r: Ref<'_>) -> u64 {
            u64::from(r.event.record[1])
        }
    }

    fn delivery(max_events: usize, max_in_flight: usize, flush_ms: u64) -> Delivery {
        Delivery {
            max_batch_events: max_events,
            max_batch_bytes: 1 << 20,
            flush_interval_ms: flush_ms,
            max_in_flight,
            ordering: Ordering::Stream,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 1000,
            max_retries: 0,
            dead_letter_path: None,
        }
    }

    /// Runs the loop over batches of `(id, stream)` events (records of 10 bytes), closing the
    /// queue `close_after` after the last one is queued; returns the sink's metrics.
    async fn run_loop(
        fake: &Arc<Fake>,
        delivery: Delivery,
        batches: &[&[(u8, u8)]],
        close_after: Duration,
    ) -> SinkMetrics {
        let metrics = crate::telemetry::Metrics::new().sink("out");
        let (tx, rx) = Queue::bounded(1 << 20, 1 << 20, QueueGauges::default());
        let task = tokio::spawn(run(
            "out".into(),
            fake.clone(),
            delivery,
            None,
            rx,
            metrics.clone(),
            None,
        ));
        for events in batches {
            let mut b = Batch {
                tags: vec![Bytes::from_static(b"t")],
                size: 100,
                ..Default::default()
            };
            for (id, stream) in *events {
                let mut record = vec![*id, *stream];
                record.resize(10, 0);
                b.events
                    .push(Event::new(Timestamp::default(), 0, Bytes::from(record)));
            }
            tx.push(Arc::new(b), None, events.len()).await.unwrap();
        }
        tokio::time::sleep(close_after).await;
        drop(tx);
        task.await.unwrap();
        metrics
    }

    fn distinct(n: u8) -> Vec<(u8, u8)> {
        (0..n).map(|i| (i, i)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_leave_full_or_when_their_oldest_event_is_old() {
        let fake = Fake::new(Duration::ZERO, usize::MAX, vec![]);
        let events = distinct(7);
        let m = run_loop(
            &fake,
            delivery(3, 4, 1000),
            &[&events],
            Duration::from_secs(5),
        )
        .await;
        let seen = fake.seen();
        assert_eq!(fake.sizes(), [3, 3, 1]);
        assert!(seen[0].at < Duration::from_millis(1) && seen[1].at < Duration::from_millis(1));
        assert!(
            seen[2].at >= Duration::from_millis(1000) && seen[2].at < Duration::from_millis(1100),
            "the last one waited for flush_interval_ms: {:?}",
            seen[2].at
        );
        assert_eq!(m.events.get(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_stop_at_max_batch_bytes() {
        let fake = Fake::new(Duration::ZERO, usize::MAX, vec![]);
        let mut d = delivery(100, 4, 10);
        d.max_batch_bytes = 25;
        let events = distinct(7);
        run_loop(&fake, d, &[&events], Duration::from_secs(1)).await;
        // 10-byte records: the third reaches 25 bytes.
        assert_eq!(fake.sizes(), [3, 3, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_in_flight_requests_send_at_once() {
        let fake = Fake::new(Duration::from_millis(100), usize::MAX, vec![]);
        let events = distinct(10);
        run_loop(
            &fake,
            delivery(1, 2, 10),
            &[&events],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(fake.sizes(), [1; 10]);
        assert_eq!(fake.most.load(Atomic::SeqCst), 2);
        let last = fake.seen().last().unwrap().at;
        assert!(
            last >= Duration::from_millis(400) && last < Duration::from_millis(500),
            "five rounds of two: {last:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_for_retry_after_then_back_off() {
        let fake = Fake::new(
            Duration::ZERO,
            usize::MAX,
            vec![
                Verdict::Retry {
                    reason: "throttled",
                    after: Some(Duration::from_secs(3)),
                },
                Verdict::Retry {
                    reason: "server_error",
                    after: None,
                },
            ],
        );
        let m = run_loop(
            &fake,
            delivery(10, 4, 10),
            &[&[(1, 1)]],
            Duration::from_secs(10),
        )
        .await;
        let at: Vec<Duration> = fake.seen().iter().map(|s| s.at).collect();
        assert_eq!(at.len(), 3, "{at:?}");
        assert!(
            at[1] - at[0] >= Duration::from_secs(3),
            "Retry-After: {at:?}"
        );
        // Second failure: 100 ms × 2, with jitter in [0.5, 1).
        let backoff = at[2] - at[1];
        assert!(
            backoff >= Duration::from_millis(100) && backoff < Duration::from_millis(200),
            "{backoff:?}"
        );
        assert_eq!(m.events.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_too_large_goes_in_halves_and_every_event_is_counted_once() {
        let fake = Fake::new(Duration::ZERO, 2, vec![]);
        let events: Vec<(u8, u8)> = (0..5).map(|i| (i, 0)).collect();
        let m = run_loop(
            &fake,
            delivery(5, 4, 10),
            &[&events],
            Duration::from_secs(1),
        )
        .await;
        let seen = fake.seen();
        let ids: Vec<Vec<u8>> = seen.iter().map(|s| s.ids.clone()).collect();
        assert_eq!(
            ids,
            [
                vec![0, 1, 2, 3, 4],
                vec![0, 1],
                vec![2, 3, 4],
                vec![2],
                vec![3, 4]
            ]
        );
        assert_eq!(m.events.get(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waits_for_its_request_while_another_goes() {
        // Stream 1's second event waits for its first request (200 ms); stream 2 does not.
        let fake = Fake::new(Duration::from_millis(200), usize::MAX, vec![]);
        run_loop(
            &fake,
            delivery(1, 4, 10),
            &[&[(10, 1), (11, 1), (20, 2)]],
            Duration::from_secs(2),
        )
        .await;
        let seen = fake.seen();
        let at = |id: u8| seen.iter().find(|s| s.ids == [id]).unwrap().at;
        assert!(at(10) < Duration::from_millis(1) && at(20) < Duration::from_millis(1));
        assert!(at(11) >= Duration::from_millis(200), "{:?}", at(11));
    }
}
