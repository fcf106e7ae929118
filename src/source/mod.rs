//! Sources: where events enter. Each turns client bytes into [`Batch`](crate::event::Batch)es,
//! runs them through its [`Stage`](crate::pipeline::Stage) (one per stream of input) and
//! hands them to the [`Router`]. What they hold before that is bounded by one
//! [`budget::Budget`] for all of them.
//!
//! [`Source`] is the one place that knows which kinds exist: the topology binds, runs and
//! sizes every source through it. Adding a kind means its own module here and one variant.

pub mod budget;
pub mod forward;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::buffer::Router;
use crate::config::SourceKind;
use crate::pipeline;
use crate::shutdown::Shutdown;
use crate::telemetry::SourceMetrics;
use budget::Budget;

/// A source bound to its inputs, ready to run.
pub enum Source {
    Forward(forward::Forward),
}

impl Source {
    /// Checks what loading the configuration cannot (TLS material), without binding.
    ///
    /// # Errors
    /// Unreadable or invalid certificate or key files.
    pub fn check(kind: &SourceKind) -> anyhow::Result<()> {
        match kind {
            SourceKind::Forward(f) => {
                if let Some(tls) = &f.tls {
                    forward::tls_acceptor(tls).context("tls")?;
                }
                Ok(())
            }
        }
    }

    /// The most one stream of this source may need at once to move on, which the input
    /// budget keeps in reserve (see [`budget`]).
    pub fn reserve(kind: &SourceKind) -> usize {
        match kind {
            SourceKind::Forward(f) => forward::reserve(f),
        }
    }

    /// Binds the source's inputs, so that configuration and port errors surface before
    /// anything runs. `enrich` is the pipeline's settings and this source's counters, when
    /// enrichment is on.
    ///
    /// # Errors
    /// What the kind's own `bind` reports: addresses in use, unreadable TLS material.
    pub async fn bind(
        name: &str,
        kind: &SourceKind,
        router: Router,
        budget: Budget,
        metrics: SourceMetrics,
        enrich: Option<(Arc<pipeline::Settings>, pipeline::Metrics)>,
    ) -> anyhow::Result<Source> {
        Ok(match kind {
            SourceKind::Forward(f) => Source::Forward(
                forward::Forward::bind(name, f, router, budget, metrics, enrich).await?,
            ),
        })
    }

    /// The kind, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Forward(_) => "forward",
        }
    }

    /// Where the source reads, for logs and tests (`tcp://…`, `unix://…`).
    pub fn addresses(&self) -> Vec<String> {
        match self {
            Source::Forward(f) => f.addresses(),
        }
    }

    /// The bound TCP address, if the source listens on one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Source::Forward(f) => f.tcp_addr(),
        }
    }

    /// Runs until `shutdown` turns true, then drains: returns once everything the source
    /// accepted has been handed to the router, dropping its router handle.
    pub async fn run(self, shutdown: Shutdown) {
        match self {
            Source::Forward(f) => f.run(shutdown).await,
        }
    }
}
