//! The records just written, as their source decoded them, for the sinks' readers that keep
//! up: a reader that finds its record here takes the decoded batch instead of decoding the
//! record's bytes again.
//!
//! The writer puts each record's batch here before it moves the durable frontier, so a
//! reader that reaches the record finds it; each of the `readers` takes it once, the last one
//! without a copy. A record is kept only while the slowest reader is close behind
//! ([`MAX_LAG`] records): when a sink falls behind (its backend down), its reader reads from
//! disk, and this holds nothing for it. What is held is bounded by `max_bytes` too, oldest
//! first out; a reader that misses a record decodes it from its bytes, which hold the same
//! requests. It only saves work; the log is what holds the data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::event::Batch;

/// How far behind the newest record the slowest reader may be for records to be kept.
pub const MAX_LAG: u64 = 1024;

/// Batches of the latest records, bounded in bytes.
#[derive(Debug)]
pub struct Recent {
    state: Mutex<State>,
    max_bytes: usize,
    /// The record each reader asked for last.
    asked: Vec<AtomicU64>,
}

#[derive(Debug, Default)]
struct State {
    batches: BTreeMap<u64, Held>,
    bytes: usize,
}

#[derive(Debug)]
struct Held {
    batch: Arc<Batch>,
    /// Readers that have not taken it yet.
    left: usize,
}

impl Recent {
    /// Holds up to `max_bytes` of batches (as their `size` counts) for `readers` readers.
    pub fn new(max_bytes: usize, readers: usize) -> Recent {
        Recent {
            state: Mutex::new(State::default()),
            max_bytes,
            asked: (0..readers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Keeps record `seq`'s batch (before enrichment, with no ack) for the readers, when
    /// they are close behind.
    pub fn put(&self, seq: u64, batch: Batch) {
        let Some(slowest) = self.asked.iter().map(|a| a.load(Ordering::Acquire)).min() else {
            return;
        };
        let cost = cost(&batch);
        let mut s = self.state.lock().expect("not poisoned");
        // What the slowest reader is past, no reader takes any more.
        while let Some(entry) = s.batches.first_entry() {
            if *entry.key() >= slowest {
                break;
            }
            s.bytes -= cost_of(&entry.remove());
        }
        if seq > slowest + MAX_LAG || cost > self.max_bytes {
            return;
        }
        s.bytes += cost;
        s.batches.insert(
            seq,
            Held {
                batch: Arc::new(batch),
                left: self.asked.len(),
            },
        );
        while s.bytes > self.max_bytes {
            let Some((_, gone)) = s.batches.pop_first() else {
                break;
            };
            s.bytes -= cost_of(&gone);
        }
    }

    /// Record `seq`'s batch, for reader `reader`, if it is still held. Every record a
    /// reader reads is asked for, in order: that is how far behind it is.
    pub fn take(&self, reader: usize, seq: u64) -> Option<Batch> {
        if let Some(a) = self.asked.get(reader) {
            a.fetch_max(seq, Ordering::AcqRel);
        }
        let mut s = self.state.lock().expect("not poisoned");
        let held = s.batches.get_mut(&seq)?;
        held.left -= 1;
        if held.left > 0 {
            return Some(copy(&held.batch));
        }
        let held = s.batches.remove(&seq).expect("there");
        s.bytes -= cost_of(&held);
        drop(s);
        Some(Arc::try_unwrap(held.batch).unwrap_or_else(|shared| copy(&shared)))
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.state.lock().expect("not poisoned").bytes
    }
}

/// What a batch held here costs: what it keeps alive and its own tables.
fn cost(b: &Batch) -> usize {
    b.size + b.footprint()
}

fn cost_of(h: &Held) -> usize {
    cost(&h.batch)
}

/// A reader's own copy of a batch: its events and tables are copied, its bytes shared.
fn copy(b: &Batch) -> Batch {
    Batch {
        tags: b.tags.clone(),
        events: b.events.clone(),
        fields: b.fields.clone(),
        size: b.size,
        ack: None,
        k8s: b.k8s.clone(),
        members: b.members.clone(),
        resource: b.resource.clone(),
        received: b.received,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Timestamp};
    use bytes::Bytes;

    fn batch(size: usize) -> Batch {
        let mut b = Batch {
            size,
            ..Default::default()
        };
        let tag = b.tag_index(b"t", || Bytes::from_static(b"t"));
        b.events.push(Event::new(
            Timestamp::default(),
            tag,
            Bytes::from_static(&[0x80]),
        ));
        b
    }

    #[test]
    fn each_reader_takes_a_record_once_and_the_last_one_frees_it() {
        let r = Recent::new(10_000, 2);
        let one = cost(&batch(100));
        r.put(1, batch(100));
        let first = r.take(0, 1).unwrap();
        assert_eq!((first.events.len(), r.bytes()), (1, one));
        assert_eq!(r.take(1, 1).unwrap().events.len(), 1);
        assert_eq!(r.bytes(), 0);
        assert!(r.take(0, 1).is_none(), "both took it");
    }

    #[test]
    fn what_no_reader_takes_goes_oldest_first_past_the_bound() {
        let one = cost(&batch(100));
        let r = Recent::new(2 * one + one / 2, 1);
        for seq in 1..=5 {
            r.put(seq, batch(100));
        }
        assert_eq!(r.bytes(), 2 * one);
        assert!(r.take(0, 3).is_none(), "evicted: read from disk instead");
        assert!(r.take(0, 4).is_some() && r.take(0, 5).is_some());
        // Too large to hold at all.
        r.put(6, batch(3 * one));
        assert!(r.take(0, 6).is_none());
        // No readers (every sink without one): nothing kept.
        let none = Recent::new(10_000, 0);
        none.put(1, batch(1));
        assert!(none.take(0, 1).is_none());
    }

    #[test]
    fn a_reader_far_behind_gets_nothing_kept_and_what_it_passed_goes() {
        let r = Recent::new(1 << 30, 2);
        r.take(0, 10);
        r.take(1, 10);
        r.put(10, batch(100));
        r.put(11, batch(100));
        // Reader 1 falls behind (its sink is down): past MAX_LAG nothing more is kept.
        r.take(0, 11);
        r.put(10 + MAX_LAG + 1, batch(100));
        assert!(r.take(0, 10 + MAX_LAG + 1).is_none());
        // Reader 1 reads on from disk past 10 and 11: they go.
        r.take(1, 12);
        r.put(13, batch(100));
        assert_eq!(r.bytes(), cost(&batch(100)), "only 13 is left");
    }
}
