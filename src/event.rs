//! The data that flows from sources to sinks.
//!
//! A [`Batch`] is everything one source decoded from one read of one connection. Events in it
//! are views (`Bytes` slices) into the buffer the bytes arrived in, so moving a batch copies
//! nothing, and fanning it out to several sinks shares it behind an `Arc`.
//!
//! Records stay in their wire form (a MessagePack map). Stages that need a field read it from
//! those bytes; nothing builds a value tree per event.

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

/// One log event.
#[derive(Debug, Clone)]
pub struct Event {
    pub time: Timestamp,
    /// Index into [`Batch::tags`].
    pub tag: u32,
    /// The record: one complete MessagePack map.
    pub record: Bytes,
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
    /// Bytes of input this batch keeps alive; what the bounded queues account.
    pub size: usize,
    /// Resolved when the stage that owns durability has taken the batch. Present only when the
    /// sender asked for acknowledgements.
    pub ack: Option<Ack>,
}

impl Batch {
    /// Index of `tag` in [`Batch::tags`], adding it if it is new. Batches rarely hold more than
    /// a handful of tags, so a linear scan beats hashing.
    pub fn tag_index(&mut self, tag: &[u8], make: impl FnOnce() -> Bytes) -> u32 {
        if let Some(i) = self.tags.iter().position(|t| t.as_ref() == tag) {
            return i as u32;
        }
        self.tags.push(make());
        (self.tags.len() - 1) as u32
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
