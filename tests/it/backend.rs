//! An in-test HTTP backend with injectable faults, for the network exporters.
//!
//! It records every request it accepts (path, headers, decompressed body) and answers from a
//! script of [`Fault`]s, one per request, then with 2xx. It can start late (the backend is
//! down when Outrigger starts) and can stall (never answer).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds, when given) and body.
    Status(u16, Option<u64>, &'static str),
    /// Wait this long before answering 2xx.
    Delay(Duration),
    /// Close the connection without answering.
    Reset,
    /// Answer with this status and a body computed from the request body (the Elasticsearch
    /// bulk response, for one).
    Custom(fn(&[u8]) -> (u16, String)),
}

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub version: hyper::Version,
    pub path: String,
    pub headers: hyper::HeaderMap,
    /// The body, gzip removed (snappy and protobuf are the test's business).
    pub body: Bytes,
    /// Whether the backend answered 2xx.
    pub ok: bool,
}

/// How to answer requests with no fault scripted, when set: after a random delay, some
/// with a 503, the others as `ok` says. Stored (recorded) when answered, as a backend that
/// takes a random time to store a request stores them.
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    pub delay: (Duration, Duration),
    /// Requests in a hundred answered 503 (to be retried whole).
    pub fail_percent: u32,
    pub ok: fn(&[u8]) -> (u16, String),
}

/// The backend's shared state.
#[derive(Debug, Default)]
pub struct State {
    pub script: Mutex<VecDeque<Fault>>,
    pub received: Mutex<Vec<Received>>,
    /// The status for a request with no fault scripted.
    pub ok_status: Mutex<u16>,
    pub chaos: Mutex<Option<Chaos>>,
}

/// A running backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free port on 127.0.0.1 with nothing listening (yet).
pub async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

impl Backend {
    /// Starts on `addr` (`127.0.0.1:0` for any port), answering 2xx with `ok_status`.
    pub async fn start_on(addr: SocketAddr, ok_status: u16, faults: Vec<Fault>) -> Backend {
        Self::serve(addr, ok_status, faults, None).await
    }

    async fn serve(
        addr: SocketAddr,
        ok_status: u16,
        faults: Vec<Fault>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            script: Mutex::new(faults.into()),
            received: Mutex::new(Vec::new()),
            ok_status: Mutex::new(ok_status),
            chaos: Mutex::new(None),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(s.clone(), req));
                    let server = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    match tls {
                        None => {
                            let _ = server.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ =
                                    server.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    }
                });
            }
        });
        Backend { addr, state, task }
    }

    /// Like [`Backend::start_tls`], and demanding a client certificate signed by the example
    /// CA (mutual TLS).
    pub async fn start_mtls(faults: Vec<Fault>) -> Backend {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = env!("CARGO_MANIFEST_DIR");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(format!("{dir}/config/tls/example-ca.crt")).unwrap()
        {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(format!("{dir}/config/tls/example.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/config/tls/example.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve("127.0.0.1:0".parse().unwrap(), 200, faults, Some(tls)).await
    }

    /// Like [`Backend::start`], over TLS with the example certificate for `localhost`
    /// (`config/tls/`), trusted through `config/tls/example-ca.crt`.
    pub async fn start_tls(faults: Vec<Fault>) -> Backend {
        let dir = env!("CARGO_MANIFEST_DIR");
        let tls = outrigger::source::forward::tls_acceptor(&outrigger::config::Tls {
            cert_file: format!("{dir}/config/tls/example.crt").into(),
            key_file: format!("{dir}/config/tls/example.key").into(),
        })
        .unwrap();
        Self::serve("127.0.0.1:0".parse().unwrap(), 200, faults, Some(tls)).await
    }

    pub async fn start(faults: Vec<Fault>) -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), 200, faults).await
    }

    /// Answers what `faults` does not script as `chaos` says.
    pub async fn start_chaotic(faults: Vec<Fault>, chaos: Chaos) -> Backend {
        let b = Self::start(faults).await;
        *b.state.chaos.lock().unwrap() = Some(chaos);
        b
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request answered 2xx, in order.
    pub fn accepted(&self) -> Vec<Received> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.ok)
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }
}

async fn answer(
    s: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let version = req.version();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req.headers().clone();
    let raw = req
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let body = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out)?;
        Bytes::from(out)
    } else {
        raw
    };
    let fault = s.script.lock().unwrap().pop_front();
    let ok_status = *s.ok_status.lock().unwrap();
    let chaos = *s.chaos.lock().unwrap();
    let (status, retry_after, text) = match fault {
        None => match chaos {
            None => (ok_status, None, String::new()),
            Some(c) => {
                use rand::RngExt;
                let (delay, fail) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_range(c.delay.0..=c.delay.1),
                        rng.random_range(0..100) < c.fail_percent,
                    )
                };
                tokio::time::sleep(delay).await;
                if fail {
                    (503, None, "busy".to_string())
                } else {
                    let (code, text) = (c.ok)(&body);
                    (code, None, text)
                }
            }
        },
        Some(Fault::Status(code, after, text)) => (code, after, text.to_string()),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            (ok_status, None, String::new())
        }
        Some(Fault::Reset) => {
            s.received.lock().unwrap().push(Received {
                version,
                path,
                headers,
                body,
                ok: false,
            });
            return Err(std::io::Error::other("reset by the test backend"));
        }
        Some(Fault::Custom(f)) => {
            let (code, text) = f(&body);
            (code, None, text)
        }
    };
    let ok = (200..300).contains(&status);
    s.received.lock().unwrap().push(Received {
        version,
        path,
        headers,
        body,
        ok,
    });
    let mut resp = Response::builder().status(StatusCode::from_u16(status).unwrap());
    if let Some(secs) = retry_after {
        resp = resp.header("retry-after", secs.to_string());
    }
    Ok::<_, std::io::Error>(resp.body(Full::new(Bytes::from(text))).unwrap())
}

/// `Infallible` is what hyper wants from services that never fail; kept for exporters' tests
/// that build their own.
pub type Never = Infallible;
