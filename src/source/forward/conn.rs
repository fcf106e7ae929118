//! One client connection: read, find whole requests, decode, hand over, acknowledge.
//!
//! Bytes are read into a `BytesMut`. After each read a resumable [`Scanner`] finds how many
//! whole requests the buffer holds; every event of every request in that prefix becomes a
//! slice of its bytes in one [`Batch`]. The partial request at the end stays in the buffer and
//! the scanner remembers how far it got.
//!
//! # Memory
//!
//! A batch keeps alive the allocation its bytes live in, and the queues charge a batch for
//! what it keeps alive, so that allocation must be the batch's own. When the whole requests
//! fill most of the read buffer (a busy connection), the buffer itself goes with the batch
//! and the partial request moves to a fresh one; when they fill little of it (one small
//! request per read, the common case on a node), they are copied out into an allocation of
//! their exact size and the buffer is reused. Either way a queued event costs what it is
//! charged, instead of pinning a 4 KiB buffer for a 400-byte line. Buffers are always
//! allocated here at an exact size, never grown by `BytesMut`, so their size is known.
//!
//! Read buffers, batches on their way to the queues, inflated payloads and split lines being
//! joined are charged to the sources' shared [`Budget`]; without room, the connection waits
//! before reading.
//!
//! The batch goes to the [`Router`](crate::buffer::Router), which waits while a sink's queue
//! is full. Nothing is read while it waits, so TCP pushes back on the client. Acks
//! (`{"ack": chunk}`) are written only after the router has taken the whole batch, and only
//! for requests decoded without loss. With the disk buffer the batch's requests, as read, go
//! into the log instead (one record per batch), and acks wait until the record is durable
//! (or, with `ack = "delivered"`, delivered); while the log cannot take it, nothing is read.
//!
//! A connection is closed when the byte stream cannot be trusted any more (malformed or
//! oversized request, non-forward data, a timeout); a well-formed request with bad content is
//! skipped and the connection goes on. See [`Close`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::decode::{self, Skipped};
use super::handshake::{self, Challenge, Security};
use crate::buffer::disk::payload::{self, Payload};
use crate::config::buffer::Ack as AckWhen;
use crate::event::{Ack, AckStatus, Batch};
use crate::msgpack::{self, Scanner};
use crate::pipeline::{self, Release, Stage};
use crate::shutdown::Shutdown;
use crate::source::Output;
use crate::source::budget::{Budget, Held, charge};
use crate::telemetry::SourceMetrics;
use crate::telemetry::logging::RateLimit;

/// Reads start at this size and double while they fill the buffer, so busy connections make
/// few large reads and idle ones hold little memory.
pub const MIN_READ: usize = 4 << 10;
pub const MAX_READ: usize = 256 << 10;

/// What every connection of one source shares.
#[derive(Debug)]
pub struct Context {
    pub name: String,
    pub decode: decode::Options,
    pub max_frame_bytes: usize,
    pub idle_timeout: Option<Duration>,
    pub frame_timeout: Duration,
    pub security: Option<Security>,
    pub output: Output,
    /// Memory shared with every connection of every source (see [`crate::source::budget`]).
    pub budget: Budget,
    pub metrics: SourceMetrics,
    /// Parsing and enrichment, when on; each connection runs its own [`Stage`].
    pub enrich: Option<(Arc<pipeline::Settings>, pipeline::Metrics)>,
    pub source_address_key: Option<Bytes>,
    pub source_hostname_key: Option<Bytes>,
    /// Warnings about bad input, a few per second per source.
    pub warn: RateLimit,
}

/// Why a connection ended.
#[derive(Debug)]
pub enum Close {
    /// The client closed between requests.
    Eof,
    /// Outrigger is draining.
    Shutdown,
    /// Outrigger closed the connection; `reason` is the metric label.
    Error {
        reason: &'static str,
        detail: String,
    },
}

impl Close {
    fn error(reason: &'static str, detail: impl Into<String>) -> Close {
        Close::Error {
            reason,
            detail: detail.into(),
        }
    }
}

/// What a [`Conn::fill`] produced.
#[derive(Debug, PartialEq, Eq)]
enum Filled {
    Data,
    /// Held lines are due; nothing was read.
    Expired,
}

/// A connection being served.
pub struct Conn<S> {
    stream: S,
    /// For logs: the peer address, or the socket path.
    peer: String,
    ctx: Arc<Context>,
    buf: BytesMut,
    /// Capacity of the allocation `buf` lives in (exact: allocated here, never grown by
    /// `BytesMut`).
    alloc: usize,
    /// `buf` is the tail of an allocation a batch took: move it to a fresh one before reading,
    /// so the batch's charge covers everything in that allocation.
    shared: bool,
    /// This connection's share of the budget: its buffer, the batch it is handing over and
    /// the split lines it holds, less the free [`ALLOWANCE`](crate::source::budget::ALLOWANCE).
    held: Held,
    scanner: Scanner,
    read_size: usize,
    /// When the request now at the front of `buf` began to arrive.
    partial_since: Option<Instant>,
    /// End offsets of the whole requests found in `buf`.
    ends: Vec<usize>,
    /// Enrichment, and the split lines and stack traces it holds across reads (with the
    /// disk buffer, none: the sinks' readers enrich, and this only makes batches).
    stage: Stage,
    /// This connection's number in the disk buffer's log.
    stream_id: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// `ip` is the client address for `source_address_key` and `source_hostname_key`.
    pub async fn new(
        stream: S,
        peer: String,
        ip: Option<std::net::IpAddr>,
        ctx: Arc<Context>,
    ) -> Self {
        let mut fields = Vec::new();
        if let (Some(key), Some(ip)) = (&ctx.source_address_key, ip) {
            fields.push((key.clone(), Bytes::from(ip.to_string())));
        }
        if let (Some(key), Some(ip)) = (&ctx.source_hostname_key, ip) {
            let name = tokio::task::spawn_blocking(move || super::resolve::reverse(ip))
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| ip.to_string());
            fields.push((key.clone(), Bytes::from(name)));
        }
        // With the disk buffer the sinks' readers enrich: this stage only makes batches.
        let (stream_id, enrich) = match &ctx.output {
            Output::Log(log) => (log.stream(), None),
            Output::Queues(_) => (0, ctx.enrich.as_ref()),
        };
        let stage = Stage::new(enrich, fields.into());
        Conn {
            stream_id,
            stream,
            peer,
            held: ctx.budget.held(),
            ctx,
            buf: BytesMut::new(),
            alloc: 0,
            shared: false,
            scanner: Scanner::default(),
            read_size: MIN_READ,
            partial_since: None,
            ends: Vec::new(),
            stage,
        }
    }

    /// Serves the connection until the client leaves, an error closes it, or `shutdown` turns
    /// true; then acks what was accepted and half-closes.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let ctx = self.ctx.clone();
        let result = self.serve(&mut shutdown).await;
        // Lines still being joined were accepted (and maybe acked): they go on, marked.
        self.release(Release::Flush).await;
        match result {
            Ok(()) | Err(Close::Eof) | Err(Close::Shutdown) => {}
            Err(Close::Error { reason, detail }) => {
                ctx.metrics.connection_error(reason);
                if let Some(suppressed) = ctx.warn.allow() {
                    tracing::warn!(source = %ctx.name, peer = %self.peer, reason, detail, suppressed, "closing connection");
                }
            }
        }
        let _ = self.stream.shutdown().await;
    }

    async fn serve(&mut self, shutdown: &mut Shutdown) -> Result<(), Close> {
        if let Some(security) = self.ctx.security.clone() {
            self.handshake(&security, shutdown).await?;
        }
        loop {
            self.process(shutdown).await?;
            if shutdown.is_started() {
                return Err(Close::Shutdown);
            }
            if self.fill(shutdown).await? == Filled::Expired {
                self.release(Release::Due).await;
            }
        }
    }

    /// Routes the held lines the stage lets go of for `why`. Their requests were acked when
    /// their fragments arrived, so there is nothing to ack now.
    async fn release(&mut self, why: Release) {
        let Output::Queues(router) = &self.ctx.output else {
            // The log's readers hold and release lines; nothing is held here.
            return;
        };
        if let Some(batch) = self.stage.release(why) {
            self.ctx.metrics.events.inc_by(batch.events.len() as u64);
            router.send(batch).await;
        }
    }

    /// HELO, then one PING, then PONG; a refused client is told why and closed.
    async fn handshake(
        &mut self,
        security: &Security,
        shutdown: &mut Shutdown,
    ) -> Result<(), Close> {
        let challenge = Challenge::new(security);
        self.write(&challenge.helo()).await?;
        self.partial_since = Some(Instant::now());
        let ping = loop {
            match self.scanner.scan(
                &self.buf,
                self.ctx.max_frame_bytes,
                self.ctx.decode.max_depth,
            ) {
                Ok(Some(n)) => break self.buf.split_to(n).freeze(),
                Ok(None) => {
                    self.fill(shutdown).await?;
                }
                Err(e) => return Err(Close::error("handshake_failed", e.to_string())),
            }
        };
        self.partial_since = None;
        let (pong, verdict) = handshake::answer(&ping, &challenge, security);
        self.write(&pong).await?;
        verdict.map_err(|r| Close::error("handshake_failed", r.reason()))
    }

    /// Reads once into the buffer, or returns [`Filled::Expired`] when held lines are due.
    ///
    /// # Errors
    /// End of stream, an I/O error, a timeout, or shutdown.
    async fn fill(&mut self, shutdown: &mut Shutdown) -> Result<Filled, Close> {
        let (deadline, timeout_reason) = match self.partial_since {
            Some(since) => (Some(since + self.ctx.frame_timeout), "frame_timeout"),
            None => (
                self.ctx.idle_timeout.map(|t| Instant::now() + t),
                "idle_timeout",
            ),
        };
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let held_due = self.stage.due();
        let (n, room) = tokio::select! {
            r = self.read() => r?,
            _ = expired => return Err(Close::error(timeout_reason, format!("{} bytes pending", self.buf.len()))),
            _ = held_due => return Ok(Filled::Expired),
            _ = shutdown.started() => return Err(Close::Shutdown),
        };
        if n == 0 {
            return if self.buf.is_empty() {
                Err(Close::Eof)
            } else {
                Err(Close::error(
                    "truncated",
                    format!(
                        "closed with {} bytes of an unfinished request",
                        self.buf.len()
                    ),
                ))
            };
        }
        self.ctx.metrics.bytes.inc_by(n as u64);
        self.read_size = if n == room {
            (self.read_size * 2).min(MAX_READ)
        } else if n < self.read_size / 4 {
            (self.read_size / 2).max(MIN_READ)
        } else {
            self.read_size
        };
        Ok(Filled::Data)
    }

    /// Makes room for a read, waiting for the budget when it has none, then reads once.
    /// Returns the bytes read and the room there was.
    ///
    /// # Cancel safety
    /// Cancel safe: the budget wait keeps what it took, a new buffer holds the same bytes,
    /// and `read_buf` reads nothing when cancelled.
    async fn read(&mut self) -> Result<(usize, usize), Close> {
        if self.shared || self.buf.capacity() - self.buf.len() < MIN_READ {
            let len = self.buf.len();
            // The unfinished request's size when its headers tell it (a large `bin`), else
            // twice what is there, so a large request costs a few copies, not one per read.
            let need = self.scanner.need().max(len);
            let grow = if need > len { need } else { 2 * len };
            let want = (grow.min(self.ctx.max_frame_bytes) + MIN_READ).max(self.read_size);
            self.held.grow_to(self.target(want, 0)).await;
            let mut fresh = BytesMut::with_capacity(want);
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
            (self.alloc, self.shared) = (want, false);
            // A smaller buffer than before (the traffic calmed down) gives room back.
            self.held.shrink_to(self.target(want, 0));
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| Close::error("io_error", e.to_string()))?;
        Ok((n, room))
    }

    /// What this connection must hold of the budget with a read buffer of `buffer` bytes and
    /// `transit` bytes of batches not yet queued.
    fn target(&self, buffer: usize, transit: usize) -> usize {
        charge(buffer + transit + self.stage.held_bytes())
    }

    /// The read buffer's share of the connection's memory (none while a batch owns it).
    fn buffer(&self) -> usize {
        if self.shared { 0 } else { self.alloc }
    }

    /// Splits the first `end` bytes (whole requests) off the buffer for a batch, with the
    /// bytes the batch keeps alive. See the module docs for why some are copied.
    fn take(&mut self, end: usize) -> (Bytes, usize) {
        // Copy when the requests fill less than three quarters of the allocation (copying
        // then costs less than the memory a shared allocation would pin), and only when the
        // budget has room for the copy right now; otherwise the allocation goes with the
        // batch, which needs no new room at all.
        let copy = end * 4 < self.alloc * 3 && !self.held.has_reserve();
        if copy && self.held.try_grow_to(self.target(self.alloc, end)) {
            let requests = Bytes::copy_from_slice(&self.buf[..end]);
            self.buf.advance(end);
            (requests, end)
        } else {
            let rest = self.buf.split_off(end);
            let requests = std::mem::replace(&mut self.buf, rest).freeze();
            self.shared = true;
            (requests, self.alloc)
        }
    }

    /// Decodes and hands over every whole request in the buffer.
    async fn process(&mut self, shutdown: &mut Shutdown) -> Result<(), Close> {
        let (max_frame, max_depth) = (self.ctx.max_frame_bytes, self.ctx.decode.max_depth);
        let mut end = 0;
        let mut broken = None;
        self.ends.clear();
        loop {
            match self.scanner.scan(&self.buf[end..], max_frame, max_depth) {
                Ok(Some(n)) => {
                    end += n;
                    self.ends.push(end);
                }
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        if end > 0 {
            let (requests, size) = self.take(end);
            self.dispatch(requests, size, shutdown).await?;
            // Time spent waiting on a full queue is not the client's slowness.
            self.partial_since = None;
            // The batch is queued: its memory is the queue's to count now. Split lines the
            // budget has no room for go on as they are (marked incomplete) rather than wait:
            // they were acknowledged, and waiting here could wait on ourselves.
            if !self.held.try_grow_to(self.target(self.buffer(), 0)) {
                self.release(Release::Shed).await;
            }
            self.held.shrink_to(self.target(self.buffer(), 0));
        }
        if self.buf.is_empty() {
            self.partial_since = None;
            // An idle connection keeps a small buffer, not the largest it ever needed.
            if self.alloc > 2 * self.read_size.max(MIN_READ) && !self.shared {
                (self.buf, self.alloc) = (BytesMut::new(), 0);
                self.held.shrink_to(self.target(0, 0));
            }
        } else if self.partial_since.is_none() {
            self.partial_since = Some(Instant::now());
        }
        match broken {
            None => Ok(()),
            Some(e) => {
                let reason = match e {
                    msgpack::Error::TooLarge { .. } => "frame_too_large",
                    msgpack::Error::TooDeep { .. } => "too_deep",
                    msgpack::Error::Reserved | msgpack::Error::Truncated => "malformed",
                };
                Err(Close::error(reason, e.to_string()))
            }
        }
    }

    /// Decodes the whole requests in `requests` (which keep `size` bytes alive) into one
    /// batch, routes it, and acks.
    ///
    /// A compressed request whose payload cannot get room to inflate ends the batch early:
    /// what came before it is handed over, and the request is decoded again once this
    /// connection holds the budget's reserve (see [`crate::source::budget`]).
    async fn dispatch(
        &mut self,
        requests: Bytes,
        size: usize,
        shutdown: &mut Shutdown,
    ) -> Result<(), Close> {
        let ctx = self.ctx.clone();
        let mut batch = self.stage.batch(size);
        let mut skipped = Skipped::default();
        let mut acks = Vec::new();
        let mut not_forward = None;
        let ends = std::mem::take(&mut self.ends);
        let mut start = 0;
        // Where the requests of the batch being made begin.
        let mut from = 0;
        let mut i = 0;
        // The request decoded again with the reserve, if any.
        let mut retried = None;
        while i < ends.len() {
            let request = requests.slice(start..ends[i]);
            match request[0] {
                // nil: a heartbeat.
                0xc0 => {}
                // fixarray, array16, array32: a request.
                0x90..=0x9f | 0xdc | 0xdd => {
                    let held = &mut self.held;
                    let outcome = decode::request_within(
                        &request,
                        &mut batch,
                        &ctx.decode,
                        &mut skipped,
                        &mut |n| held.try_grow(n),
                    );
                    if outcome.needs_room && retried != Some(i) {
                        // What came before goes on (and so does its memory, to the queues);
                        // what the failed attempt took goes back. The rest of the requests
                        // stay behind this one, in order.
                        let body = requests.slice(from..start);
                        self.hand_over(batch, body, &mut acks, &skipped, shutdown)
                            .await?;
                        from = start;
                        self.held.shrink_to(self.target(self.buffer(), size));
                        // The rest shares the requests' allocation: it is charged for it
                        // too (twice, while both are queued: the safe side).
                        (batch, skipped) = (self.stage.batch(size), Skipped::default());
                        self.held.take_reserve().await;
                        retried = Some(i);
                        continue;
                    }
                    if outcome.needs_room {
                        // Not even the reserve holds it: only limits that do not match the
                        // reserve's sizing can get here. Refuse it rather than loop.
                        skipped.add(decode::Reason::DecompressedTooLarge, 1);
                    }
                    if let (true, Some(chunk)) = (outcome.complete, outcome.chunk) {
                        acks.push(chunk);
                    }
                }
                first => {
                    // Not the forward protocol (JSON, HTTP, garbage): nothing after this can
                    // be trusted either.
                    not_forward = Some(first);
                    break;
                }
            }
            start = ends[i];
            i += 1;
        }
        self.ends = ends;
        let body = requests.slice(from..start);
        self.hand_over(batch, body, &mut acks, &skipped, shutdown)
            .await?;
        match not_forward {
            None => Ok(()),
            Some(b) => Err(Close::error(
                "not_forward",
                format!("request starts with byte 0x{b:02x}, not an array"),
            )),
        }
    }

    /// Reports what was skipped, hands `batch` over (its requests, `body`, to the disk
    /// buffer; or the batch, enriched, to the queues), then writes `acks` (unless it could
    /// not be handed over).
    async fn hand_over(
        &mut self,
        mut batch: Batch,
        body: Bytes,
        acks: &mut Vec<Bytes>,
        skipped: &Skipped,
        shutdown: &mut Shutdown,
    ) -> Result<(), Close> {
        let ctx = self.ctx.clone();
        if skipped.total() > 0 {
            for (reason, n) in skipped.iter() {
                ctx.metrics.rejected(reason.as_str(), n);
            }
            if let Some(suppressed) = ctx.warn.allow() {
                let reasons: Vec<_> = skipped
                    .iter()
                    .map(|(r, n)| format!("{}={n}", r.as_str()))
                    .collect();
                tracing::warn!(source = %ctx.name, peer = %self.peer, skipped = %reasons.join(","), suppressed, "skipped invalid input, not acknowledged");
            }
        }
        match &ctx.output {
            Output::Queues(router) => {
                self.stage.process(&mut batch);
                if !batch.is_empty() {
                    ctx.metrics.events.inc_by(batch.events.len() as u64);
                    let wait = (!acks.is_empty()).then(|| {
                        let (ack, wait) = Ack::new();
                        batch.ack = Some(ack);
                        wait
                    });
                    router.send(batch).await;
                    if let Some(wait) = wait
                        && wait.wait().await == AckStatus::Rejected
                    {
                        acks.clear();
                    }
                }
            }
            Output::Log(log) if !batch.is_empty() => {
                let payload = Payload {
                    kind: payload::Kind::Forward,
                    stream: self.stream_id,
                    received: batch.received,
                    source: log.source.clone(),
                    fields: self.stage.fields().clone(),
                    body,
                };
                // The body is logged from the buffer it was read into.
                let mut head = Vec::with_capacity(64);
                payload.encode_head(&mut head);
                let events = batch.events.len() as u64;
                let unrouted = log.unrouted(&batch) as u64;
                let parts = [Bytes::from(head), payload.body];
                let Some(seq) = self.commit(parts, batch, shutdown).await? else {
                    acks.clear();
                    return Ok(());
                };
                ctx.metrics.events.inc_by(events);
                ctx.metrics.unrouted.inc_by(unrouted);
                if log.ack == AckWhen::Delivered && !acks.is_empty() {
                    tokio::select! {
                        () = log.delivered(seq) => {}
                        () = shutdown.started() => {
                            // Durable, not delivered: the client sends it again (a duplicate
                            // at worst, never a loss).
                            acks.clear();
                            return Err(Close::Shutdown);
                        }
                    }
                }
            }
            Output::Log(_) => {}
        }
        if !acks.is_empty() {
            let mut out = Vec::with_capacity(acks.iter().map(|a| a.len() + 5).sum());
            for chunk in acks.iter() {
                // {"ack": <chunk exactly as received>}
                out.extend_from_slice(&[0x81, 0xa3, b'a', b'c', b'k']);
                out.extend_from_slice(chunk);
            }
            self.write(&out).await?;
            ctx.metrics.acks.inc_by(acks.len() as u64);
            acks.clear();
        }
        Ok(())
    }

    /// Puts `payload` (`batch`'s requests) in the disk buffer's log and returns its record's
    /// number; `None` when no record can hold it (counted and logged: it is not
    /// acknowledged).
    ///
    /// While the log cannot take it (its disk or `max_bytes` full, an I/O error) this waits
    /// and tries again: nothing is read meanwhile, so the client is pushed back on, and
    /// nothing is acknowledged that is not in the log. Shutdown ends the wait.
    async fn commit(
        &mut self,
        payload: [Bytes; 2],
        batch: Batch,
        shutdown: &mut Shutdown,
    ) -> Result<Option<u64>, Close> {
        let ctx = self.ctx.clone();
        let Output::Log(log) = &ctx.output else {
            unreachable!("called for the log only");
        };
        let mut backoff = Duration::from_millis(50);
        // The decoded events go along the first time (the readers then need not decode
        // them again); a retry sends the bytes alone.
        let mut batch = Some(batch);
        loop {
            match log
                .committer
                .commit_decoded(payload.clone(), batch.take())
                .await
            {
                Ok(seq) => return Ok(Some(seq)),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    ctx.metrics.rejected("too_large_for_buffer", 1);
                    if let Some(suppressed) = ctx.warn.allow() {
                        tracing::warn!(source = %ctx.name, peer = %self.peer, error = %e, suppressed, "request not acknowledged");
                    }
                    return Ok(None);
                }
                Err(e) => {
                    ctx.metrics.buffer_waits.inc();
                    if let Some(suppressed) = ctx.warn.allow() {
                        tracing::warn!(source = %ctx.name, peer = %self.peer, error = %e, suppressed, "disk buffer cannot take the request; holding it (not acknowledged) and trying again");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.started() => return Err(Close::Shutdown),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Close> {
        let w = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        w.await.map_err(|e| Close::error("io_error", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{Pattern, Queue, QueueGauges, Route};
    use crate::source::budget::BudgetMetrics;
    use prometheus_client::metrics::counter::Counter;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    /// A PackedForward request whose gzip payload inflates to about `bytes`.
    fn gzip_request(bytes: usize, chunk: &str) -> Vec<u8> {
        let mut entries = Vec::new();
        while entries.len() < bytes {
            rmp::encode::write_array_len(&mut entries, 2).unwrap();
            rmp::encode::write_uint(&mut entries, 1_700_000_000).unwrap();
            rmp::encode::write_map_len(&mut entries, 1).unwrap();
            rmp::encode::write_str(&mut entries, "log").unwrap();
            rmp::encode::write_str(&mut entries, &"z".repeat(1000)).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&entries).unwrap();
        let payload = gz.finish().unwrap();
        let mut out = Vec::new();
        rmp::encode::write_array_len(&mut out, 3).unwrap();
        rmp::encode::write_str(&mut out, "t").unwrap();
        rmp::encode::write_bin(&mut out, &payload).unwrap();
        rmp::encode::write_map_len(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "chunk").unwrap();
        rmp::encode::write_str(&mut out, chunk).unwrap();
        rmp::encode::write_str(&mut out, "compressed").unwrap();
        rmp::encode::write_str(&mut out, "gzip").unwrap();
        out
    }

    #[tokio::test]
    async fn a_payload_with_no_room_is_inflated_again_with_the_reserve() {
        // The pool is held by someone else (as if by other connections' half-read
        // requests); the reserve is free. Two compressed requests arrive in one read: the
        // first inflates into the reserve on a second attempt, after which it goes back
        // and the second takes it in turn. Both are delivered and acked, in order.
        let inflated = 300 << 10;
        let waits = BudgetMetrics::default();
        let budget = Budget::new((1 << 20) + inflated * 2, inflated * 2, waits.clone());
        let mut others = budget.held();
        assert!(others.try_grow(1 << 20), "the whole pool");
        let (tx, mut rx) = Queue::bounded(64 << 20, 1 << 20, QueueGauges::default());
        let routes = vec![Route {
            patterns: vec![Pattern::parse("**").unwrap()],
            queue: tx,
        }];
        let metrics = crate::telemetry::Metrics::new();
        let ctx = Arc::new(Context {
            name: "in".into(),
            decode: decode::Options::default(),
            max_frame_bytes: 16 << 20,
            idle_timeout: None,
            frame_timeout: Duration::from_secs(10),
            security: None,
            output: Output::Queues(crate::buffer::Router::new(
                routes.into(),
                Counter::default(),
            )),
            budget: budget.clone(),
            metrics: metrics.source("in"),
            enrich: None,
            source_address_key: None,
            source_hostname_key: None,
            warn: RateLimit::new(10),
        });
        let (client, server) = tokio::io::duplex(1 << 20);
        let conn = Conn::new(server, "test".into(), None, ctx).await;
        let (stop, shutdown) = crate::shutdown::channel();
        let task = tokio::spawn(conn.run(shutdown));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut both = gzip_request(inflated, "a");
        both.extend(gzip_request(inflated, "b"));
        // Small enough for a connection's free first 4 KiB: no buffer growth takes the
        // reserve before the payloads need it.
        assert!(both.len() < 4 << 10, "{} bytes", both.len());
        wr.write_all(&both).await.unwrap();
        let mut acks = vec![0u8; 2 * 7];
        tokio::time::timeout(Duration::from_secs(5), rd.read_exact(&mut acks))
            .await
            .expect("both requests acked")
            .unwrap();
        assert_eq!(
            acks,
            [&b"\x81\xa3ack\xa1a"[..], b"\x81\xa3ack\xa1b"].concat()
        );
        let mut events = 0;
        while let Some(e) = rx.try_recv() {
            events += e.events;
        }
        // Entries of 1,014 bytes each.
        assert_eq!(events, 2 * inflated.div_ceil(1014));
        assert_eq!(
            waits.waits.get(),
            2,
            "each inflation waited for the reserve"
        );
        stop.pull();
        task.await.unwrap();
        drop(others);
        assert_eq!(budget.held().bytes(), 0);
    }
}
