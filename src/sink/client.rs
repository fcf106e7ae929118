//! The HTTP client every HTTP exporter shares: connection reuse, HTTP/1.1 and HTTP/2, TLS
//! with the system's or a given CA and optional client certificates, request compression,
//! timeouts, custom headers and authentication.
//!
//! An exporter hands it a finished body; what the response means is the exporter's business.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::retry::{Verdict, retry_after};
use super::settings::{Auth, Compression, HttpClient};

/// Responses larger than this are not read whole: nothing an exporter classifies needs more.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// A response, read whole (up to [`MAX_RESPONSE_BYTES`]).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why no response came back. All of these are worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("reading the response failed: {0}")]
    Body(String),
    /// The backend answered with more than we read; what it stored is unknown.
    #[error("response larger than {} bytes", MAX_RESPONSE_BYTES)]
    ResponseTooLarge,
}

impl TransportError {
    /// The `reason` label of retry metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TransportError::Timeout(_) => "timeout",
            TransportError::Connect(_) => "connection",
            TransportError::Body(_) => "connection",
            TransportError::ResponseTooLarge => "response_too_large",
        }
    }

    /// What the delivery loop should do: retry, except after an oversized response, where
    /// the backend may have stored the batch and resending would duplicate it (the events go
    /// to the dead-letter file instead, marked with the reason).
    pub fn verdict(&self) -> Verdict {
        match self {
            TransportError::ResponseTooLarge => Verdict::Rejected {
                reason: self.to_string(),
            },
            _ => Verdict::Retry {
                reason: self.reason(),
                after: None,
            },
        }
    }
}

/// A configured client for one endpoint.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Legacy<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Uri,
    headers: HeaderMap,
    compression: Compression,
    timeout: Duration,
}

impl Client {
    /// Builds the client: TLS material is loaded now, so a bad file fails the start.
    ///
    /// # Errors
    /// An invalid endpoint, header, CA file or client certificate.
    pub fn try_new(cfg: &HttpClient) -> anyhow::Result<Client> {
        use anyhow::Context as _;
        let endpoint: Uri = cfg
            .endpoint
            .parse()
            .with_context(|| format!("endpoint `{}`", cfg.endpoint))?;
        if endpoint
            .scheme_str()
            .is_none_or(|s| s != "http" && s != "https")
        {
            anyhow::bail!(
                "endpoint `{}` must start with http:// or https://",
                cfg.endpoint
            );
        }
        let tls = tls_config(cfg)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if cfg.http2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().enable_http2().build()
        };
        let inner = Legacy::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(cfg.http2)
            .build(connector);
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::USER_AGENT,
            HeaderValue::from_static(concat!("outrigger/", env!("CARGO_PKG_VERSION"))),
        );
        for (k, v) in &cfg.headers {
            let name: HeaderName = k.parse().with_context(|| format!("header name `{k}`"))?;
            let value: HeaderValue = v.parse().with_context(|| format!("header `{k}` value"))?;
            headers.insert(name, value);
        }
        if let Some(auth) = &cfg.auth {
            let mut value: HeaderValue =
                authorization(auth).parse().context("auth header value")?;
            value.set_sensitive(true);
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        Ok(Client {
            inner,
            endpoint,
            headers,
            compression: cfg.compression,
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
        })
    }

    /// The endpoint with `path` appended (the endpoint's own path is a prefix, so a proxy
    /// path like `https://gw/loki` works).
    pub fn url(&self, path: &str) -> Uri {
        let base = self.endpoint.to_string();
        let joined = format!("{}{path}", base.trim_end_matches('/'));
        joined.parse().unwrap_or_else(|_| self.endpoint.clone())
    }

    /// Whether bodies are gzip-compressed (exporters that compress otherwise, like Loki's
    /// snappy, may ignore it).
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// POSTs `body` to `path`. `extra` headers (tenant, content type...) are added to the
    /// configured ones. The body is gzip-compressed when configured and `compressible`.
    ///
    /// # Errors
    /// No response within the timeout, or a connection failure.
    pub async fn post(
        &self,
        path: &str,
        extra: &[(HeaderName, HeaderValue)],
        body: Vec<u8>,
        compressible: bool,
    ) -> Result<Response, TransportError> {
        let mut req = Request::builder().method(Method::POST).uri(self.url(path));
        let headers = req.headers_mut().expect("builder without errors");
        headers.extend(self.headers.clone());
        for (k, v) in extra {
            headers.insert(k.clone(), v.clone());
        }
        let body = if compressible && self.compression == Compression::Gzip {
            headers.insert(
                hyper::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
            gzip(&body)
        } else {
            body
        };
        let req = req
            .body(Full::new(Bytes::from(body)))
            .expect("valid request parts");
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| TransportError::Connect(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        TransportError::ResponseTooLarge
                    } else {
                        TransportError::Body(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout(self.timeout)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// gzip at a fast level: the body is already mostly text, and CPU is what we save.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    e.write_all(data).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

/// The `Authorization` value for `auth`; the gRPC exporter sends the same as metadata.
pub fn authorization(auth: &Auth) -> String {
    use base64::Engine;
    match auth {
        Auth::Basic { user, password } => {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        }
        Auth::Bearer { token } => format!("Bearer {token}"),
        Auth::ApiKey { key } => format!("ApiKey {key}"),
    }
}

fn tls_config(cfg: &HttpClient) -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match cfg.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading {}", ca.display()))?
            {
                roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let client_cert = cfg
        .tls
        .as_ref()
        .and_then(|t| t.cert_file.as_ref().zip(t.key_file.as_ref()));
    Ok(match client_cert {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate and key")?
        }
        None => builder.with_no_client_auth(),
    })
}

/// The usual HTTP rule for a response (see [`status_verdict`]).
pub fn classify(resp: &Response) -> Verdict {
    let after = resp
        .headers
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    status_verdict(resp.status.as_u16(), after, &resp.body)
}

/// What an HTTP status says, for the exporters that have no rule of their own for it: 2xx
/// delivered; 408, 429 and 5xx but 501 retried (after `after`, the `Retry-After`); 413 too
/// large (split); everything else refused with the start of `body`.
pub fn status_verdict(status: u16, after: Option<Duration>, body: &[u8]) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 => Verdict::Retry {
            reason: "timeout",
            after,
        },
        429 => Verdict::Retry {
            reason: "throttled",
            after,
        },
        413 => Verdict::TooLarge {
            reason: format!("HTTP 413: {}", snippet(body)),
        },
        501 => Verdict::Rejected {
            reason: format!("HTTP 501: {}", snippet(body)),
        },
        500..=599 => Verdict::Retry {
            reason: "server_error",
            after,
        },
        _ => Verdict::Rejected {
            reason: format!("HTTP {status}: {}", snippet(body)),
        },
    }
}

/// The start of a response body, for logs and dead letters: never the whole thing.
pub fn snippet(body: &[u8]) -> String {
    let cut = &body[..body.len().min(200)];
    String::from_utf8_lossy(cut).trim().to_string()
}
