//! Sink kinds: what a `type = "…"` of a sink delivering through [`super::export`] stands for.
//!
//! [`super::KINDS`] lists them, one [`Kind`] each. `config` looks a sink's `type` up there,
//! splits the shared keys the kind takes off the sink's table ([`HTTP_KEYS`] for a kind over
//! HTTP, [`DELIVERY_KEYS`] unless the kind paces itself by its defaults alone), reads them
//! with the kind's [`Defaults`], and hands the rest to the kind's own reader ([`OwnKeys`]).
//! What that returns, a [`Build`], is kept in the settings and builds the exporter when the
//! sink starts (or when `outrigger validate` checks it).
//!
//! So a kind knows nothing of `config`, and `config` knows a kind only by its entry in
//! [`super::KINDS`].
//!
//! [`HTTP_KEYS`]: super::settings::HTTP_KEYS
//! [`DELIVERY_KEYS`]: super::settings::DELIVERY_KEYS

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::de::value::MapDeserializer;

use super::export::Deliver;
use super::jsonl::Shape;
use super::settings::{Defaults, HttpClient};

/// One sink kind: its name, the shared keys it takes, and how it reads its own.
#[derive(Clone, Copy)]
pub struct Kind {
    /// The sink's `type`.
    pub name: &'static str,
    /// Batching and compression when the table leaves them out.
    pub defaults: Defaults,
    /// Whether the table takes [`DELIVERY_KEYS`](super::settings::DELIVERY_KEYS) (batching,
    /// concurrency, order, retries, dead letters). Without them the kind is paced by
    /// [`Kind::defaults`] and those keys' own defaults.
    pub delivery_keys: bool,
    /// How the kind reads its own keys, and whether it takes
    /// [`HTTP_KEYS`](super::settings::HTTP_KEYS).
    pub own: Own,
    /// Whether its encoder reads JSON lines' members ([`crate::event::Batch::members`]):
    /// enrichment records them only when some sink does.
    pub reads_members: bool,
}

/// A kind's reader of its own keys: whatever the table holds besides `type`, the keys every
/// sink has (`match`, the queue bounds) and the shared keys the kind takes.
#[derive(Clone, Copy)]
pub enum Own {
    /// A kind over HTTP: the table takes `HTTP_KEYS` too, and their settings, resolved, go to
    /// the reader with the rest.
    Http(fn(HttpClient, OwnKeys<'_>) -> Result<Arc<dyn Build>, toml::de::Error>),
    /// A kind over another transport: its own keys are all it reads.
    Other(fn(OwnKeys<'_>) -> Result<Arc<dyn Build>, toml::de::Error>),
}

// === impl Kind ===

impl Kind {
    /// A kind over HTTP whose own keys are `C`: its table takes `HTTP_KEYS` and
    /// `DELIVERY_KEYS` besides.
    pub const fn http<C: HttpBuild>(name: &'static str, defaults: Defaults) -> Kind {
        Kind {
            name,
            defaults,
            delivery_keys: true,
            own: Own::Http(read_http::<C>),
            reads_members: false,
        }
    }

    /// A kind over another transport (a Kafka producer, a forward client) whose own keys are
    /// `C`: its table takes `DELIVERY_KEYS` besides, not `HTTP_KEYS`.
    pub const fn other<C: Build + DeserializeOwned>(
        name: &'static str,
        defaults: Defaults,
    ) -> Kind {
        Kind {
            name,
            defaults,
            delivery_keys: true,
            own: Own::Other(read_other::<C>),
            reads_members: false,
        }
    }
}

/// A kind's settings, read: they build its exporter.
pub trait Build: fmt::Debug + Send + Sync + 'static {
    /// The exporter, with its client and templates ready (a gRPC channel connects later, on
    /// first use).
    ///
    /// # Errors
    /// What reading the keys cannot check: endpoints, headers, TLS files, templates.
    fn exporter(&self, shape: &Shape) -> anyhow::Result<Box<dyn Deliver>>;
}

/// The own settings of a kind over HTTP: they build its exporter with the client's.
pub trait HttpBuild: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// As [`Build::exporter`], over `client`.
    ///
    /// # Errors
    /// As [`Build::exporter`].
    fn exporter(&self, client: &HttpClient, shape: &Shape) -> anyhow::Result<Box<dyn Deliver>>;
}

/// A kind's own keys, as `config` hands them over; [`OwnKeys::read`] deserializes them.
///
/// `config` feeds the pairs one at a time and remembers the key in hand, so a failed read is
/// reported at its file, line and key. They come boxed because a kind is a plain value in a
/// static list: its reader is a function pointer and cannot be generic over `config`'s
/// iterator.
pub struct OwnKeys<'a> {
    pairs: Box<dyn Iterator<Item = (String, toml::Value)> + 'a>,
}

impl<'a> OwnKeys<'a> {
    /// The keys `pairs` yields.
    pub fn new(pairs: impl Iterator<Item = (String, toml::Value)> + 'a) -> OwnKeys<'a> {
        OwnKeys {
            pairs: Box::new(pairs),
        }
    }

    /// Deserializes `T` from the keys.
    ///
    /// # Errors
    /// serde's, for the first key that does not fit `T` (or a missing one).
    pub fn read<T: DeserializeOwned>(self) -> Result<T, toml::de::Error> {
        T::deserialize(MapDeserializer::<_, toml::de::Error>::new(self.pairs))
    }
}

/// A kind over HTTP, read: the client's settings and the kind's own.
#[derive(Debug)]
struct OverHttp<C> {
    client: HttpClient,
    own: C,
}

impl<C: HttpBuild> Build for OverHttp<C> {
    fn exporter(&self, shape: &Shape) -> anyhow::Result<Box<dyn Deliver>> {
        self.own.exporter(&self.client, shape)
    }
}

fn read_http<C: HttpBuild>(
    client: HttpClient,
    keys: OwnKeys<'_>,
) -> Result<Arc<dyn Build>, toml::de::Error> {
    let own: C = keys.read()?;
    Ok(Arc::new(OverHttp { client, own }))
}

fn read_other<C: Build + DeserializeOwned>(
    keys: OwnKeys<'_>,
) -> Result<Arc<dyn Build>, toml::de::Error> {
    let own: C = keys.read()?;
    Ok(Arc::new(own))
}
