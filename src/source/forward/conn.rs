//! One client connection: read, find whole requests, decode, hand over, acknowledge.
//!
//! Bytes are read into a `BytesMut`. After each read a resumable [`Scanner`] finds how many
//! whole requests the buffer holds; that prefix is split off and frozen, and every event of
//! every request in it becomes a slice of those bytes in one [`Batch`]. The partial request at
//! the end stays in the buffer and the scanner remembers how far it got.
//!
//! The batch goes to the [`Router`], which waits while a sink's queue is full. Nothing is read
//! while it waits, so TCP pushes back on the client. Acks (`{"ack": chunk}`) are written only
//! after the router has taken the whole batch, and only for requests decoded without loss.
//!
//! A connection is closed when the byte stream cannot be trusted any more (malformed or
//! oversized request, non-forward data, a timeout); a well-formed request with bad content is
//! skipped and the connection goes on. See [`Close`].

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::decode::{self, Skipped};
use super::handshake::{self, Challenge, Security};
use crate::buffer::Router;
use crate::event::{Ack, AckStatus, Batch, Timestamp};
use crate::msgpack::{self, Scanner};
use crate::pipeline::{self, Enricher};
use crate::shutdown::Shutdown;
use crate::telemetry::SourceMetrics;
use crate::telemetry::logging::RateLimit;

/// Reads start at this size and double while they fill the buffer, so busy connections make
/// few large reads and idle ones hold little memory.
const MIN_READ: usize = 4 << 10;
const MAX_READ: usize = 256 << 10;

/// What every connection of one source shares.
#[derive(Debug)]
pub struct Context {
    pub name: String,
    pub decode: decode::Options,
    pub max_frame_bytes: usize,
    pub idle_timeout: Option<Duration>,
    pub frame_timeout: Duration,
    pub security: Option<Security>,
    pub router: Router,
    pub metrics: SourceMetrics,
    /// Parsing and enrichment, when on; each connection keeps its own [`Enricher`] state.
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
    scanner: Scanner,
    read_size: usize,
    /// When the request now at the front of `buf` began to arrive.
    partial_since: Option<Instant>,
    /// End offsets of the whole requests found in `buf`.
    ends: Vec<usize>,
    fields: Arc<[(Bytes, Bytes)]>,
    /// Split lines and stack traces held across reads.
    enricher: Option<Enricher>,
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
        let enricher = ctx
            .enrich
            .as_ref()
            .map(|(s, m)| Enricher::new(s.clone(), m.clone()));
        Conn {
            stream,
            peer,
            ctx,
            buf: BytesMut::new(),
            scanner: Scanner::default(),
            read_size: MIN_READ,
            partial_since: None,
            ends: Vec::new(),
            fields: fields.into(),
            enricher,
        }
    }

    /// Serves the connection until the client leaves, an error closes it, or `shutdown` turns
    /// true; then acks what was accepted and half-closes.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let ctx = self.ctx.clone();
        let result = self.serve(&mut shutdown).await;
        // Lines still being joined were accepted (and maybe acked): they go on, marked.
        self.release(Enricher::flush).await;
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
            self.process().await?;
            if shutdown.is_started() {
                return Err(Close::Shutdown);
            }
            if self.fill(shutdown).await? == Filled::Expired {
                self.release(Enricher::expire).await;
            }
        }
    }

    /// Routes what `take` releases from the enricher (timed-out or flushed lines). These
    /// requests were acked when their fragments arrived, so there is nothing to ack now.
    async fn release(&mut self, take: fn(&mut Enricher, &mut Batch)) {
        let Some(enricher) = &mut self.enricher else {
            return;
        };
        let mut batch = Batch {
            fields: self.fields.clone(),
            received: Timestamp::now(),
            ..Default::default()
        };
        take(enricher, &mut batch);
        if !batch.is_empty() {
            self.ctx.metrics.events.inc_by(batch.events.len() as u64);
            self.ctx.router.send(batch).await;
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
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(self.read_size);
        }
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
        let held = self.enricher.as_ref().and_then(Enricher::deadline);
        let held_due = async {
            match held {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let room = self.buf.capacity() - self.buf.len();
        let n = tokio::select! {
            r = self.stream.read_buf(&mut self.buf) => r.map_err(|e| Close::error("io_error", e.to_string()))?,
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

    /// Decodes and hands over every whole request in the buffer.
    async fn process(&mut self) -> Result<(), Close> {
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
            let requests = self.buf.split_to(end).freeze();
            self.dispatch(requests).await?;
            // Time spent waiting on a full queue is not the client's slowness.
            self.partial_since = None;
        }
        if self.buf.is_empty() {
            self.partial_since = None;
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

    /// Decodes the whole requests in `requests` into one batch, routes it, and acks.
    async fn dispatch(&mut self, requests: Bytes) -> Result<(), Close> {
        let ctx = self.ctx.clone();
        let mut batch = Batch {
            fields: self.fields.clone(),
            size: requests.len(),
            received: Timestamp::now(),
            ..Default::default()
        };
        let mut skipped = Skipped::default();
        let mut acks = Vec::new();
        let mut not_forward = None;
        let mut start = 0;
        for &end in &self.ends {
            let request = requests.slice(start..end);
            start = end;
            match request[0] {
                // nil: a heartbeat.
                0xc0 => continue,
                // fixarray, array16, array32: a request.
                0x90..=0x9f | 0xdc | 0xdd => {}
                first => {
                    // Not the forward protocol (JSON, HTTP, garbage): nothing after this can
                    // be trusted either.
                    not_forward = Some(first);
                    break;
                }
            }
            let outcome = decode::request(&request, &mut batch, &ctx.decode, &mut skipped);
            if let (true, Some(chunk)) = (outcome.complete, outcome.chunk) {
                acks.push(chunk);
            }
        }
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
        if let Some(enricher) = &mut self.enricher {
            enricher.process(&mut batch);
        }
        if !batch.is_empty() {
            ctx.metrics.events.inc_by(batch.events.len() as u64);
            let wait = (!acks.is_empty()).then(|| {
                let (ack, wait) = Ack::new();
                batch.ack = Some(ack);
                wait
            });
            ctx.router.send(batch).await;
            if let Some(wait) = wait
                && wait.wait().await == AckStatus::Rejected
            {
                acks.clear();
            }
        }
        if !acks.is_empty() {
            let mut out = Vec::with_capacity(acks.iter().map(|a| a.len() + 5).sum());
            for chunk in &acks {
                // {"ack": <chunk exactly as received>}
                out.extend_from_slice(&[0x81, 0xa3, b'a', b'c', b'k']);
                out.extend_from_slice(chunk);
            }
            self.write(&out).await?;
            ctx.metrics.acks.inc_by(acks.len() as u64);
        }
        match not_forward {
            None => Ok(()),
            Some(b) => Err(Close::error(
                "not_forward",
                format!("request starts with byte 0x{b:02x}, not an array"),
            )),
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
