//! The pipeline as a source drives it: batches in, enriched batches and held-line deadlines
//! out.
//!
//! Every source reads its input in its own way (a socket, a file) and hands each batch it
//! made to its [`Stage`] before routing. Enrichment may hold lines back across batches (the
//! pieces of a split line, a stack trace still growing), so the stage also tells its source
//! when they are due ([`Stage::due`], a future to race against the next read) and gives them
//! back ([`Stage::release`]) when they are, when memory runs short, or when the input ends.
//! A source therefore owns no enrichment state of its own and knows none of its timers.
//!
//! One stage serves one stream of input (a connection, a file): held lines never cross
//! streams, and a stream's events keep their order.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::{Enricher, Metrics, Settings};
use crate::event::{Batch, Timestamp};

/// Why held lines are released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Their time is up ([`Stage::due`] resolved).
    Due,
    /// The source has no memory to hold them: split lines go on as they are, marked
    /// incomplete. They were acknowledged, so waiting for room could wait on ourselves.
    Shed,
    /// The input ended (the client left, Outrigger is draining): everything goes on.
    Flush,
}

/// One stream's pipeline state.
#[derive(Debug)]
pub struct Stage {
    /// `None` when enrichment is off: batches pass as they are and nothing is held.
    enricher: Option<Enricher>,
    /// Fields every event of the stream gets besides its own (the peer's address), shared by
    /// all its batches.
    fields: Arc<[(Bytes, Bytes)]>,
}

impl Stage {
    /// A stage for one stream; `enrich` is the source's enrichment settings and counters,
    /// when enrichment is on.
    pub fn new(enrich: Option<&(Arc<Settings>, Metrics)>, fields: Arc<[(Bytes, Bytes)]>) -> Stage {
        Stage {
            enricher: enrich.map(|(s, m)| Enricher::new(s.clone(), m.clone())),
            fields,
        }
    }

    /// An empty batch of this stream, received now, keeping `size` bytes of input alive.
    pub fn batch(&self, size: usize) -> Batch {
        Batch {
            fields: self.fields.clone(),
            size,
            received: Timestamp::now(),
            ..Default::default()
        }
    }

    /// The fields every event of the stream gets besides its own.
    pub fn fields(&self) -> &Arc<[(Bytes, Bytes)]> {
        &self.fields
    }

    /// Turns stack-trace joining on or off for the stream (`None`: as `[enrich.multiline]`
    /// says), as a pod's annotation asks; a block already being joined is finished first.
    pub fn set_multiline(&mut self, on: Option<bool>) {
        if let Some(e) = &mut self.enricher {
            e.set_multiline(on);
        }
    }

    /// Enriches `batch` in place. Pieces of split lines are taken out and come back, joined,
    /// in the batch that completes them (or in a [`release`](Stage::release)).
    pub fn process(&mut self, batch: &mut Batch) {
        if let Some(e) = &mut self.enricher {
            e.process(batch);
        }
    }

    /// Resolves when held lines are due; never, while nothing is held. The deadline is taken
    /// now, so the future borrows nothing and can be raced against a read of the same
    /// source: ask again after each batch.
    pub fn due(&self) -> impl Future<Output = ()> + use<> {
        let deadline = self.enricher.as_ref().and_then(Enricher::deadline);
        async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        }
    }

    /// The held lines `why` lets go of, in a batch of their own; `None` when there are none.
    /// Their input was acknowledged when it arrived, so the batch carries no ack.
    pub fn release(&mut self, why: Release) -> Option<Batch> {
        // Nothing is held without enrichment.
        self.enricher.as_ref()?;
        let mut batch = self.batch(0);
        let enricher = self.enricher.as_mut()?;
        match why {
            Release::Due => enricher.expire(&mut batch),
            Release::Shed => enricher.shed(&mut batch),
            Release::Flush => enricher.flush(&mut batch),
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// When held lines are due, if any are held.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.enricher.as_ref().and_then(Enricher::deadline)
    }

    /// When the oldest line held began to be held: everything the stage holds arrived since.
    pub fn held_since(&self) -> Option<std::time::Instant> {
        self.enricher.as_ref().and_then(Enricher::oldest)
    }

    /// Bytes held in split lines being joined: the source charges them to its memory.
    pub fn held_bytes(&self) -> usize {
        self.enricher.as_ref().map_or(0, Enricher::held_bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::Event;

    fn settings() -> (Arc<Settings>, Metrics) {
        let options = crate::config::Enrich {
            partial: crate::config::PartialLines {
                timeout_ms: 2_000,
                ..Default::default()
            },
            ..Default::default()
        }
        .options();
        (
            Arc::new(Settings::new(&options).unwrap()),
            Metrics::default(),
        )
    }

    /// A Docker record: `log`, and the `partial_*` fields when `part` is given.
    fn record(log: &str, part: Option<(&str, u32, bool)>) -> Bytes {
        let mut r = Vec::new();
        let mut kv = vec![("log", log.to_string())];
        if let Some((id, ordinal, last)) = part {
            kv.extend([
                ("partial_message", "true".to_string()),
                ("partial_id", id.to_string()),
                ("partial_ordinal", ordinal.to_string()),
                ("partial_last", last.to_string()),
            ]);
        }
        rmp::encode::write_map_len(&mut r, kv.len() as u32).unwrap();
        for (k, v) in kv {
            rmp::encode::write_str(&mut r, k).unwrap();
            rmp::encode::write_str(&mut r, &v).unwrap();
        }
        Bytes::from(r)
    }

    fn batch_of(stage: &Stage, records: &[Bytes]) -> Batch {
        let mut b = stage.batch(0);
        let tag = b.tag_index(b"app", || Bytes::from_static(b"app"));
        for r in records {
            b.events
                .push(Event::new(Timestamp::default(), tag, r.clone()));
        }
        b
    }

    fn lines(b: &Batch) -> Vec<String> {
        b.events
            .iter()
            .map(|e| String::from_utf8(e.slice(e.meta.line.unwrap()).to_vec()).unwrap())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn held_pieces_are_due_after_the_timeout_and_released_marked() {
        let s = settings();
        let fields: Arc<[(Bytes, Bytes)]> = vec![(
            Bytes::from_static(b"source"),
            Bytes::from_static(b"10.0.0.1"),
        )]
        .into();
        let mut stage = Stage::new(Some(&s), fields);
        let mut b = batch_of(
            &stage,
            &[record("one", None), record("he", Some(("p", 1, false)))],
        );
        stage.process(&mut b);
        assert_eq!(lines(&b), ["one"], "the piece is held back");
        assert!(stage.held_bytes() > 0);
        assert!(stage.release(Release::Due).is_none(), "not yet due");

        let due = stage.due();
        tokio::pin!(due);
        assert!(
            tokio::time::timeout(Duration::from_millis(1_900), &mut due)
                .await
                .is_err(),
            "due only after the timeout"
        );
        tokio::time::timeout(Duration::from_millis(200), &mut due)
            .await
            .expect("due at the timeout");
        // The paused clock does not move the reassembler's own (std's): flush what is held.
        let released = stage.release(Release::Flush).expect("the held piece");
        assert_eq!(lines(&released), ["he"]);
        assert!(released.events[0].meta.incomplete);
        assert_eq!(
            &released.fields[0].1[..],
            b"10.0.0.1",
            "the stream's fields"
        );
        assert!(released.ack.is_none());
        assert_eq!(stage.held_bytes(), 0);
        assert!(stage.release(Release::Flush).is_none());
    }

    /// Settings with the stack-trace joiner on.
    fn multiline() -> (Arc<Settings>, Metrics) {
        let options = crate::config::Enrich {
            multiline: crate::config::Multiline {
                enabled: true,
                ..Default::default()
            },
            ..Default::default()
        }
        .options();
        (
            Arc::new(Settings::new(&options).unwrap()),
            Metrics::default(),
        )
    }

    #[tokio::test]
    async fn a_cut_split_line_keeps_its_mark_through_the_stack_trace_joiner() {
        let s = multiline();
        let mut stage = Stage::new(Some(&s), Arc::new([]));
        let mut b = batch_of(&stage, &[record("he", Some(("p", 1, false)))]);
        stage.process(&mut b);
        let released = stage.release(Release::Flush).expect("the held piece");
        assert_eq!(lines(&released), ["he"]);
        let e = &released.events[0];
        assert!(e.meta.joined && e.meta.incomplete, "{:?}", e.meta);
        assert_eq!(released.size, e.record.len(), "its bytes counted once");
    }

    #[tokio::test]
    async fn a_joined_line_the_stack_trace_joiner_holds_is_held_since_its_first_piece() {
        // The disk buffer's readers tie what a stage holds to records by this time: a split
        // line completed by a later batch and then held as a possible stack trace's first
        // line still holds the first batch's piece.
        let s = multiline();
        let mut stage = Stage::new(Some(&s), Arc::new([]));
        let before_first = std::time::Instant::now();
        let mut b = batch_of(&stage, &[record("Exception in ", Some(("p", 1, false)))]);
        stage.process(&mut b);
        std::thread::sleep(Duration::from_millis(5));
        let before_last = std::time::Instant::now();
        let mut b = batch_of(&stage, &[record("main", Some(("p", 2, true)))]);
        stage.process(&mut b);
        assert!(b.events.is_empty(), "held by the stack-trace joiner");
        let since = stage.held_since().expect("something held");
        assert!(
            since >= before_first && since < before_last,
            "held since its first piece"
        );
    }

    #[tokio::test]
    async fn pieces_join_across_batches_and_shed_lets_go_of_them() {
        let s = settings();
        let mut stage = Stage::new(Some(&s), Arc::new([]));
        let mut b = batch_of(&stage, &[record("a", Some(("p", 1, false)))]);
        stage.process(&mut b);
        assert!(b.is_empty());
        let mut b = batch_of(&stage, &[record("b", Some(("p", 2, true)))]);
        stage.process(&mut b);
        assert_eq!(lines(&b), ["ab"]);
        assert!(b.events[0].meta.joined && !b.events[0].meta.incomplete);

        let mut b = batch_of(&stage, &[record("c", Some(("q", 1, false)))]);
        stage.process(&mut b);
        let shed = stage.release(Release::Shed).expect("the held piece");
        assert_eq!(lines(&shed), ["c"]);
        assert!(shed.events[0].meta.incomplete);
    }

    /// A line of a CRI log file as a file source hands it over: the whole line, its message
    /// and stream as spans, `P` as `continued`.
    fn cri(line: &str) -> Event {
        let mut parts = line.splitn(4, ' ');
        let (time, stream, flag) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let at = time.len() + 1;
        let msg = at + stream.len() + flag.len() + 2;
        let mut e = Event::line(
            Timestamp {
                secs: 1_780_000_000,
                nanos: 0,
            },
            0,
            Bytes::copy_from_slice(line.as_bytes()),
            crate::event::Span::new(msg..line.len()),
            Some(crate::event::Span::new(at..at + stream.len())),
        );
        e.meta.continued = flag == "P";
        e
    }

    #[tokio::test]
    async fn lines_join_per_stream_and_are_enriched_without_a_record() {
        let s = settings();
        let mut stage = Stage::new(Some(&s), Arc::new([]));
        let id = "c".repeat(64);
        let tag = crate::pipeline::kubernetes::file_tag(
            format!("/var/log/containers/web-1_shop_app-{id}.log").as_bytes(),
        );
        let t = "2026-12-04T10:00:00.000000001Z";
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut b = stage.batch(0);
        let i = b.tag_index(&tag, || tag.clone());
        assert_eq!(i, 0);
        for l in [
            format!("{t} stdout P {{\"level\":\"error\",\"msg\":\"hel"),
            format!("{t} stderr F plain text"),
            format!("{t} stdout P lo\",\"trace_id\":"),
            format!("{t} stdout F \"{trace}\"}}"),
            format!("{t} stdout F next"),
        ] {
            b.events.push(cri(&l));
        }
        stage.process(&mut b);
        assert_eq!(
            lines(&b),
            [
                "plain text",
                &format!("{{\"level\":\"error\",\"msg\":\"hello\",\"trace_id\":\"{trace}\"}}"),
                "next"
            ]
        );
        let stream = |e: &Event| e.slice(e.meta.stream.unwrap()).to_vec();
        assert_eq!(stream(&b.events[0]), b"stderr");
        let joined = &b.events[1];
        assert_eq!(
            joined.form,
            crate::event::Form::Line,
            "still a line, no record built"
        );
        assert!(joined.meta.joined && !joined.meta.incomplete);
        assert_eq!(stream(joined), b"stdout");
        assert!(joined.meta.json, "the joined line parsed as JSON");
        assert_eq!(joined.meta.severity, 17, "error");
        assert_eq!(hex::encode(joined.meta.trace_id.unwrap()), trace);
        assert!(
            !b.events[2].meta.joined,
            "an F line with nothing pending is a whole line"
        );
        let k = b.k8s[0].expect("the file's names, from its tag");
        assert_eq!(
            &tag[k.namespace.start as usize..][..k.namespace.len as usize],
            b"shop"
        );
        assert_eq!(stage.held_bytes(), 0);
    }

    #[tokio::test]
    async fn without_enrichment_batches_pass_and_nothing_is_due() {
        let mut stage = Stage::new(None, Arc::new([]));
        let mut b = batch_of(&stage, &[record("x", Some(("p", 1, false)))]);
        stage.process(&mut b);
        assert_eq!(b.events.len(), 1, "not enriched, not held");
        assert!(stage.release(Release::Flush).is_none());
        let due = stage.due();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), due)
                .await
                .is_err()
        );
    }
}
