//! How far a sink has got through the log: the first record it still needs, which is what
//! its cursor stores.
//!
//! A record is still needed while its sink's reader has not read it, while enrichment holds
//! a piece of it (a split line's first part waits for the rest), and while a batch made from
//! it waits in the sink's queue or is being delivered. The reader says the first two
//! ([`Progress::set_floor`]); each batch carries a [`Mark`] for the third, which finishes
//! when the sink drops the batch: delivered, dead-lettered, or given up on as the sink's
//! retry policy says. Nothing else drops a batch, except aborting the sink at the end of a
//! drain that ran out of time: [`Progress::freeze`] comes first, so those count as unsent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One sink's place in the log.
#[derive(Debug)]
pub struct Progress {
    state: Mutex<State>,
    /// Woken whenever [`Progress::done`] may have moved.
    pub moved: Notify,
    frozen: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// The first record the reader has not read, or the oldest whose pieces enrichment
    /// still holds.
    floor: u64,
    /// Records with batches in the sink's hands: how many batches each, and when the
    /// oldest of them was received (Unix seconds).
    outstanding: BTreeMap<u64, (u32, i64)>,
}

impl Progress {
    /// A sink that has finished with every record before `from`.
    pub fn new(from: u64) -> Arc<Progress> {
        Arc::new(Progress {
            state: Mutex::new(State {
                floor: from,
                outstanding: BTreeMap::new(),
            }),
            moved: Notify::new(),
            frozen: AtomicBool::new(false),
        })
    }

    /// The first record the sink still needs: every record before it is finished with.
    pub fn done(&self) -> u64 {
        let s = self.state.lock().expect("not poisoned");
        s.outstanding
            .first_key_value()
            .map_or(s.floor, |(seq, _)| s.floor.min(*seq))
    }

    /// The reader's part: the first record not read, or the oldest still held, if older.
    pub fn set_floor(&self, seq: u64) {
        let moved = {
            let mut s = self.state.lock().expect("not poisoned");
            let moved = s.floor != seq;
            s.floor = seq;
            moved
        };
        if moved {
            self.moved.notify_waiters();
        }
    }

    /// A batch holding events of record `seq` (or of pieces held since it), received at
    /// `received` (Unix seconds), goes to the sink: the record stays needed until the mark
    /// is dropped.
    pub fn mark(self: &Arc<Self>, seq: u64, received: i64) -> Mark {
        let mut s = self.state.lock().expect("not poisoned");
        let e = s.outstanding.entry(seq).or_insert((0, received));
        e.0 += 1;
        e.1 = e.1.min(received);
        drop(s);
        Mark {
            progress: self.clone(),
            seq,
        }
    }

    /// When the oldest record the sink has read and not finished with was received (Unix
    /// seconds), if there is one: how far behind the sink is.
    pub fn oldest_received(&self) -> Option<i64> {
        let s = self.state.lock().expect("not poisoned");
        s.outstanding.first_key_value().map(|(_, (_, at))| *at)
    }

    /// From now on nothing finishes: the sink's tasks are about to be aborted, and what they
    /// drop was not delivered.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Release);
    }
}

/// Keeps a record needed by one sink while a batch made from it is in the sink's hands.
#[derive(Debug)]
pub struct Mark {
    progress: Arc<Progress>,
    seq: u64,
}

impl Drop for Mark {
    fn drop(&mut self) {
        let p = &self.progress;
        if p.frozen.load(Ordering::Acquire) {
            return;
        }
        {
            let mut s = p.state.lock().expect("not poisoned");
            if let Some((n, _)) = s.outstanding.get_mut(&self.seq) {
                *n -= 1;
                if *n == 0 {
                    s.outstanding.remove(&self.seq);
                }
            }
        }
        p.moved.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_needed_record_is_the_oldest_of_unread_held_and_unfinished() {
        let p = Progress::new(1);
        assert_eq!(p.done(), 1);
        p.set_floor(4);
        assert_eq!(p.done(), 4, "1..=3 read, nothing in the sink's hands");
        let two = p.mark(2, 100);
        let three = p.mark(3, 90);
        let three_again = p.mark(3, 95);
        p.set_floor(10);
        assert_eq!(p.done(), 2);
        assert_eq!(p.oldest_received(), Some(100), "record 2's");
        drop(three);
        drop(two);
        assert_eq!(p.oldest_received(), Some(90), "record 3's oldest batch");
        assert_eq!(p.done(), 3, "a second batch of record 3 is still out");
        drop(three_again);
        assert_eq!(p.done(), 10);
        assert_eq!(p.oldest_received(), None);
        p.set_floor(7);
        assert_eq!(p.done(), 7, "a piece of record 7 is held");
    }

    #[test]
    fn after_a_freeze_dropped_batches_stay_unfinished() {
        let p = Progress::new(1);
        let m = p.mark(5, 0);
        p.set_floor(9);
        p.freeze();
        drop(m);
        assert_eq!(p.done(), 5);
    }
}
