//! The Fluentd forward-protocol source.
//!
//! Owns the listeners (TCP over IPv4 and IPv6, optionally TLS; a Unix socket; the UDP
//! heartbeat), the connection limit, and one task per connection ([`conn`]). Decoding lives in
//! [`decode`], the handshake in [`handshake`]. Batches leave through the [`Router`](crate::buffer::Router), or into the disk buffer's log.
//!
//! Drain: when `shutdown` turns true the listeners stop accepting, each connection finishes and
//! acks the requests already in its buffer, then half-closes; `run` returns when every
//! connection task has ended, dropping the last router handle this source holds.

mod conn;
pub mod decode;
pub mod handshake;
mod resolve;

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config;
use crate::pipeline;
use crate::shutdown::Shutdown;
use crate::source::budget::Budget;
use crate::telemetry::SourceMetrics;
use crate::telemetry::logging::RateLimit;
use conn::{Conn, Context};

/// How a source with these settings decodes requests (also what its disk buffer records
/// are read back with).
pub fn decode_options(cfg: &config::Forward) -> decode::Options {
    decode::Options {
        tag_prefix: cfg.tag_prefix.as_ref().map(|p| Bytes::from(p.clone())),
        max_record_bytes: cfg.max_record_bytes,
        max_decompressed_bytes: cfg.max_decompressed_bytes,
        max_depth: cfg.max_depth,
    }
}

/// The most one connection of a source configured as `cfg` may need to finish one request:
/// its read buffer at the largest, then the payload inflated from it. The input budget keeps
/// this in reserve, so some connection can always move on (see [`crate::source::budget`]).
pub fn reserve(cfg: &config::Forward) -> usize {
    (cfg.max_frame_bytes + conn::MIN_READ).max(conn::MAX_READ) + cfg.max_decompressed_bytes + 1
}

/// A bound forward source, ready to run.
pub struct Forward {
    ctx: Arc<Context>,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    unix: Option<(UnixListener, PathBuf)>,
    tls: Option<TlsAcceptor>,
    /// One permit per open connection; an accept that finds none closes the new socket.
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl Forward {
    /// Loads TLS material and binds every listener, so that configuration and port errors
    /// surface before anything runs.
    ///
    /// # Errors
    /// Unreadable certificates or keys, addresses in use, an existing non-socket file at
    /// `unix_path`.
    pub async fn bind(
        name: &str,
        cfg: &config::Forward,
        output: crate::source::Output,
        budget: Budget,
        metrics: SourceMetrics,
        enrich: Option<(Arc<pipeline::Settings>, pipeline::Metrics)>,
    ) -> anyhow::Result<Forward> {
        let tls = cfg.tls.as_ref().map(tls_acceptor).transpose()?;
        let tcp = match cfg.address {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?,
            ),
            None => None,
        };
        // Fluentd clients send UDP heartbeats to the TCP port.
        let udp = match (&tcp, cfg.heartbeat_enabled) {
            (Some(tcp), true) => {
                let addr = tcp.local_addr()?;
                Some(
                    UdpSocket::bind(addr)
                        .await
                        .with_context(|| format!("binding UDP heartbeat on {addr}"))?,
                )
            }
            _ => None,
        };
        let unix = match &cfg.unix_path {
            Some(path) => Some((bind_unix(path, &cfg.unix_mode)?, path.clone())),
            None => None,
        };
        let security = cfg.security.as_ref().map(|s| handshake::Security {
            shared_key: s.shared_key.clone().into_bytes(),
            self_hostname: s.self_hostname.clone().into_bytes(),
            users: s
                .users
                .iter()
                .map(|u| {
                    (
                        u.username.clone().into_bytes(),
                        u.password.clone().into_bytes(),
                    )
                })
                .collect(),
        });
        let key = |k: &Option<String>| k.as_ref().map(|k| Bytes::from(k.clone()));
        let ctx = Context {
            name: name.to_string(),
            decode: decode_options(cfg),
            max_frame_bytes: cfg.max_frame_bytes,
            idle_timeout: (cfg.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(cfg.idle_timeout_secs)),
            frame_timeout: Duration::from_secs(cfg.frame_timeout_secs.max(1)),
            security,
            output,
            budget,
            metrics,
            enrich,
            source_address_key: key(&cfg.source_address_key),
            source_hostname_key: key(&cfg.source_hostname_key),
            warn: RateLimit::new(10),
        };
        Ok(Forward {
            ctx: Arc::new(ctx),
            tcp,
            udp,
            unix,
            tls,
            connections: Arc::new(Semaphore::new(cfg.max_connections)),
            max_connections: cfg.max_connections,
        })
    }

    /// Where this source listens, for logs and tests: `tcp://…`, `tls://…`, `unix://…`.
    pub fn addresses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(addr) = self.tcp.as_ref().and_then(|l| l.local_addr().ok()) {
            let scheme = if self.tls.is_some() { "tls" } else { "tcp" };
            out.push(format!("{scheme}://{addr}"));
        }
        if let Some((_, path)) = &self.unix {
            out.push(format!("unix://{}", path.display()));
        }
        out
    }

    /// The bound TCP address, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Accepts and serves connections until `shutdown` turns true, then waits for every
    /// connection to finish its drain.
    pub async fn run(self, shutdown: Shutdown) {
        let Forward {
            ctx,
            tcp,
            udp,
            unix,
            tls,
            connections,
            max_connections,
        } = self;
        let mut tasks = JoinSet::new();
        if let Some(udp) = udp {
            let stop = shutdown.clone();
            tokio::spawn(heartbeat(udp, stop));
        }
        let mut stop = shutdown.clone();
        loop {
            let accepted = tokio::select! {
                a = accept_tcp(&tcp) => a.map(Accepted::Tcp),
                a = accept_unix(&unix) => a.map(Accepted::Unix),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                _ = stop.started() => break,
            };
            let accepted = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    ctx.metrics.connection_error("accept_failed");
                    if let Some(suppressed) = ctx.warn.allow() {
                        tracing::warn!(source = %ctx.name, error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                ctx.metrics.connection_error("too_many_connections");
                if let Some(suppressed) = ctx.warn.allow() {
                    tracing::warn!(source = %ctx.name, peer = %accepted.peer(), limit = max_connections, suppressed, "refusing connection: too many open");
                }
                continue;
            };
            ctx.metrics.connections.inc();
            let (ctx, tls, shutdown) = (ctx.clone(), tls.clone(), shutdown.clone());
            tasks.spawn(async move {
                ctx.metrics.open_connections.inc();
                serve(accepted, ctx.clone(), tls, shutdown).await;
                ctx.metrics.open_connections.dec();
                drop(permit);
            });
        }
        drop((tcp, unix.as_ref().map(|(l, _)| l)));
        while tasks.join_next().await.is_some() {}
        if let Some((_, path)) = unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum Accepted {
    Tcp((tokio::net::TcpStream, SocketAddr)),
    Unix(tokio::net::UnixStream),
}

impl Accepted {
    fn peer(&self) -> String {
        match self {
            Accepted::Tcp((_, addr)) => addr.to_string(),
            Accepted::Unix(_) => "unix".into(),
        }
    }
}

async fn accept_tcp(
    l: &Option<TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_unix(
    l: &Option<(UnixListener, PathBuf)>,
) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some((l, _)) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

async fn serve(
    accepted: Accepted,
    ctx: Arc<Context>,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
) {
    let peer = accepted.peer();
    match accepted {
        Accepted::Unix(s) => Conn::new(s, peer, None, ctx).await.run(shutdown).await,
        Accepted::Tcp((s, addr)) => {
            let _ = s.set_nodelay(true);
            let ip = Some(addr.ip());
            match tls {
                None => Conn::new(s, peer, ip, ctx).await.run(shutdown).await,
                Some(tls) => match tokio::time::timeout(ctx.frame_timeout, tls.accept(s)).await {
                    Ok(Ok(s)) => Conn::new(s, peer, ip, ctx).await.run(shutdown).await,
                    Ok(Err(e)) => tls_failed(&ctx, &peer, &e.to_string()),
                    Err(_) => tls_failed(&ctx, &peer, "timed out"),
                },
            }
        }
    }
}

fn tls_failed(ctx: &Context, peer: &str, error: &str) {
    ctx.metrics.connection_error("tls_handshake_failed");
    if let Some(suppressed) = ctx.warn.allow() {
        tracing::warn!(source = %ctx.name, peer, error, suppressed, "TLS handshake failed");
    }
}

/// Answers every UDP heartbeat datagram with a single zero byte, as Fluentd does.
async fn heartbeat(udp: UdpSocket, mut shutdown: Shutdown) {
    let mut buf = [0u8; 128];
    loop {
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                if let Ok((_, from)) = r {
                    let _ = udp.send_to(&[0], from).await;
                }
            }
            _ = shutdown.started() => return,
        }
    }
}

fn bind_unix(path: &PathBuf, mode: &str) -> anyhow::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        // A socket file left by a previous run that did not exit cleanly.
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    let mode = u32::from_str_radix(mode, 8).context("unix_mode")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))?;
    Ok(listener)
}

/// Builds the TLS acceptor from PEM files.
///
/// # Errors
/// Unreadable or invalid certificate or key files.
pub fn tls_acceptor(tls: &config::Tls) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", tls.cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", tls.cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("reading private key from {}", tls.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
