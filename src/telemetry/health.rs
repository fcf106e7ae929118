//! Liveness and readiness: what `/live` and `/ready` answer, and why.
//!
//! **Live** means restarting would not help. It fails when a pipeline task (a sink's loop, a
//! source's accept loop) is
//! - *dead*: it returned or panicked while Outrigger was not draining, or
//! - *stuck*: the runtime has not polled it for `stuck_after`. Each watched task carries its
//!   own one-second timer ([`Health::watch`]), so a task that is merely waiting (for events,
//!   for queue room, for a backend that is down, for a retry backoff) is woken and polled
//!   every second and stays live. Only a task that blocks a worker thread (a synchronous call
//!   that hangs, a loop that never yields) or a runtime that no longer schedules anything
//!   goes stale.
//!
//! A backend that is down is backpressure, not a fault of this process: restarting would
//! lose the queue and change nothing. That shows in readiness instead.
//!
//! **Ready** means send me traffic. It fails while starting (sources not bound yet), while
//! draining, and while any sink's queue holds at least `high_water` of its byte or event
//! bound: the clients would soon be slowed down, so a load balancer should prefer another
//! instance. It turns back as soon as the queue drains below the mark.
//!
//! Every failure comes with a sentence naming the task or sink, for the probe's body.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::buffer::QueueGauges;
use crate::buffer::disk::commit::Counts;

/// How often a waiting task is woken to show it is still scheduled. `stuck_after` must be
/// several of these, so a late tick never reads as stuck.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// The process's health, shared by the topology (which registers tasks and queues and flips
/// the lifecycle flags) and the admin server (which asks).
#[derive(Debug)]
pub struct Health {
    /// Heartbeat times are milliseconds since this instant.
    base: Instant,
    stuck_after: Duration,
    high_water: f64,
    /// True once every source is bound.
    serving: AtomicBool,
    /// True from the start of the drain on; task exits are expected from then.
    draining: AtomicBool,
    tasks: Mutex<Vec<Arc<Beat>>>,
    queues: Mutex<Vec<Watched>>,
    /// The disk buffer's writer and `buffer.max_bytes`, when there is one.
    buffer: Mutex<Option<(Arc<Counts>, u64)>>,
    /// Conditions a source asked readiness to wait on: what is not ready while the flag is
    /// false.
    flags: Mutex<Vec<(String, Arc<AtomicBool>)>>,
}

/// One watched task's heartbeat.
#[derive(Debug)]
struct Beat {
    /// "sink out", "source in".
    name: String,
    last_ms: AtomicU64,
    exited: AtomicBool,
}

/// A sink queue whose fill level decides readiness.
#[derive(Debug)]
struct Watched {
    sink: String,
    gauges: QueueGauges,
    max_bytes: u64,
    max_events: u64,
}

impl Health {
    /// `high_water` is a fraction in (0, 1].
    pub fn new(stuck_after: Duration, high_water: f64) -> Health {
        Health {
            base: Instant::now(),
            stuck_after,
            high_water,
            serving: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            queues: Mutex::new(Vec::new()),
            buffer: Mutex::new(None),
            flags: Mutex::new(Vec::new()),
        }
    }

    /// Not ready while `ok` is false, saying `why` (a source's own condition, such as its
    /// watch of the Kubernetes API when `ready_requires_api` asks for it).
    pub fn watch_flag(&self, why: String, ok: Arc<AtomicBool>) {
        self.flags.lock().unwrap().push((why, ok));
    }

    /// Every source is bound: ready unless a queue is too full.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Relaxed);
    }

    /// The drain began: not ready any more; tasks may now end.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Counts sink `sink`'s queue in readiness.
    pub fn watch_queue(&self, sink: &str, gauges: QueueGauges, max_bytes: u64, max_events: u64) {
        self.queues.lock().unwrap().push(Watched {
            sink: sink.to_string(),
            gauges,
            max_bytes: max_bytes.max(1),
            max_events: max_events.max(1),
        });
    }

    /// Counts the disk buffer in readiness: not ready while it cannot write, or holds at
    /// least `high_water` of `max_bytes`.
    pub fn watch_buffer(&self, counts: Arc<Counts>, max_bytes: u64) {
        *self.buffer.lock().unwrap() = Some((counts, max_bytes.max(1)));
    }

    /// Wraps a pipeline task so that liveness sees it: its heartbeat is refreshed whenever the
    /// runtime polls it, and its own timer makes the runtime poll it every [`BEAT_EVERY`]
    /// even while it waits. The heartbeat is marked exited when the future completes or is
    /// dropped (which includes a panic unwinding through it).
    ///
    /// Must be called inside a Tokio runtime (the timer needs one).
    pub fn watch<F: Future>(&self, name: String, task: F) -> WatchedTask<F> {
        let beat = Arc::new(Beat {
            name,
            last_ms: AtomicU64::new(self.now_ms()),
            exited: AtomicBool::new(false),
        });
        self.tasks.lock().unwrap().push(beat.clone());
        let mut tick = tokio::time::interval(BEAT_EVERY);
        // After a late tick, the next one comes a full period later: one wake per period, and
        // a poll of `tick` right after a ready tick is pending (see `poll`).
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        WatchedTask {
            task: Box::pin(task),
            tick,
            beat: Guard {
                beat,
                base: self.base,
            },
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// `Ok` when live, else why not.
    pub fn live(&self) -> Result<(), String> {
        let draining = self.draining.load(Ordering::Relaxed);
        let now = self.now_ms();
        let mut why = String::new();
        for beat in self.tasks.lock().unwrap().iter() {
            if beat.exited.load(Ordering::Relaxed) {
                if !draining {
                    sep(&mut why);
                    let _ = write!(why, "{} exited", beat.name);
                }
                continue;
            }
            let age =
                Duration::from_millis(now.saturating_sub(beat.last_ms.load(Ordering::Relaxed)));
            if age >= self.stuck_after {
                sep(&mut why);
                let _ = write!(
                    why,
                    "{} not scheduled for {}s (stuck_after_secs = {})",
                    beat.name,
                    age.as_secs(),
                    self.stuck_after.as_secs()
                );
            }
        }
        if why.is_empty() { Ok(()) } else { Err(why) }
    }

    /// `Ok` when ready, else why not.
    pub fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining".into());
        }
        if !self.serving.load(Ordering::Relaxed) {
            return Err("starting: sources not bound yet".into());
        }
        let mut why = String::new();
        for q in self.queues.lock().unwrap().iter() {
            let bytes = q.gauges.bytes.get().max(0) as u64;
            let events = q.gauges.events.get().max(0) as u64;
            for (held, max, key, unit) in [
                (bytes, q.max_bytes, "max_queue_bytes", "bytes"),
                (events, q.max_events, "max_queue_events", "events"),
            ] {
                let fill = held as f64 / max as f64;
                if fill >= self.high_water {
                    sep(&mut why);
                    let _ = write!(
                        why,
                        "sink {} queue at {:.0}% of {key} ({held} of {max} {unit})",
                        q.sink,
                        fill * 100.0
                    );
                }
            }
        }
        if let Some((counts, max)) = &*self.buffer.lock().unwrap() {
            if let Some(e) = &*counts.failing.lock().unwrap() {
                sep(&mut why);
                let _ = write!(why, "disk buffer cannot write: {e}");
            }
            let bytes = counts.bytes.load(Ordering::Relaxed);
            let fill = bytes as f64 / *max as f64;
            if fill >= self.high_water {
                sep(&mut why);
                let _ = write!(
                    why,
                    "disk buffer at {:.0}% of buffer.max_bytes ({bytes} of {max} bytes)",
                    fill * 100.0
                );
            }
        }
        for (what, ok) in self.flags.lock().unwrap().iter() {
            if !ok.load(Ordering::Acquire) {
                sep(&mut why);
                why.push_str(what);
            }
        }
        if why.is_empty() { Ok(()) } else { Err(why) }
    }
}

fn sep(s: &mut String) {
    if !s.is_empty() {
        s.push_str("; ");
    }
}

/// A task's end of its heartbeat; dropping it marks the task exited.
#[derive(Debug)]
struct Guard {
    beat: Arc<Beat>,
    base: Instant,
}

impl Guard {
    fn beat(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.beat.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.beat.exited.store(true, Ordering::Relaxed);
    }
}

/// A pipeline task with its heartbeat ([`Health::watch`]).
#[derive(Debug)]
pub struct WatchedTask<F> {
    task: Pin<Box<F>>,
    /// Wakes the task every [`BEAT_EVERY`]; the task's own future sees a spurious poll, which
    /// every future must tolerate.
    tick: Interval,
    beat: Guard,
}

impl<F: Future> Future for WatchedTask<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Every field is Unpin (the task is boxed), so this is plain `&mut`.
        let this = self.get_mut();
        this.beat.beat();
        // Consume a due tick, then poll again to arm the timer for the next one; with
        // `MissedTickBehavior::Delay` that second poll is pending. Bounded in any case.
        for _ in 0..2 {
            if this.tick.poll_tick(cx).is_pending() {
                break;
            }
        }
        let out = this.task.as_mut().poll(cx);
        if out.is_ready() {
            this.beat.beat.exited.store(true, Ordering::Relaxed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(Duration::from_secs(60), 0.9)
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_task_stays_live() {
        let h = health();
        let task = tokio::spawn(h.watch("sink out".into(), std::future::pending::<()>()));
        // Five stuck_after periods pass while the task waits for something that never comes.
        for _ in 0..300 {
            tokio::time::advance(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
        }
        assert_eq!(h.live(), Ok(()));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_never_polled_is_stuck() {
        let h = health();
        // Created but never run: what a task looks like when the runtime stops polling it.
        let never = h.watch("source in".into(), std::future::pending::<()>());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(h.live(), Ok(()));
        tokio::time::advance(Duration::from_secs(2)).await;
        let why = h.live().unwrap_err();
        assert!(
            why.contains("source in not scheduled for 61s (stuck_after_secs = 60)"),
            "{why}"
        );
        drop(never);
    }

    #[tokio::test]
    async fn exit_or_panic_is_dead_unless_draining() {
        let h = health();
        tokio::spawn(h.watch("sink a".into(), async {}))
            .await
            .unwrap();
        let panicked = tokio::spawn(h.watch("sink b".into(), async { panic!("boom") })).await;
        assert!(panicked.is_err());
        let why = h.live().unwrap_err();
        assert_eq!(why, "sink a exited; sink b exited");
        h.set_draining();
        assert_eq!(h.live(), Ok(()), "tasks end during a drain");
    }

    #[test]
    fn ready_after_start_until_a_queue_passes_high_water_or_the_drain() {
        let h = health();
        let q = QueueGauges::default();
        h.watch_queue("loki", q.clone(), 1000, 100);
        assert_eq!(h.ready().unwrap_err(), "starting: sources not bound yet");
        h.set_serving();
        assert_eq!(h.ready(), Ok(()));
        q.bytes.set(950);
        assert_eq!(
            h.ready().unwrap_err(),
            "sink loki queue at 95% of max_queue_bytes (950 of 1000 bytes)"
        );
        q.bytes.set(100);
        q.events.set(90);
        assert!(h.ready().unwrap_err().contains("90% of max_queue_events"));
        q.events.set(89);
        assert_eq!(h.ready(), Ok(()), "ready again below the mark");
        h.set_draining();
        assert_eq!(h.ready().unwrap_err(), "draining");
    }
}
