//! `outrigger health`: asks a running Outrigger's admin listener whether it is ready (or
//! live), for container health checks in images that have no shell and no curl.
//!
//! In: a URL (`http://host:port/path`), or the admin address from the configuration and a
//! path. Out: `Ok` with the status line on HTTP 200, an [`Error`] saying why otherwise. The
//! caller turns that into exit code 0 or 1.
//!
//! The request is one plain HTTP/1.1 `GET` over a blocking `std` socket: a probe runs every
//! few seconds, once, in a fresh process, so a runtime and an HTTP client library would cost
//! start-up time and buy nothing. Every step is bounded by one deadline, so a listener that
//! accepts and never answers fails the probe instead of hanging it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::Global;

/// The timeout a probe gets unless told otherwise. The admin listener answers in
/// microseconds; two seconds without an answer means a stuck process, and stays under
/// Docker's default `HEALTHCHECK --timeout` (30 s) so the probe, not Docker, reports why.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest status line read. The admin listener's is about 30 bytes; anything longer
/// than this without a line end is not an HTTP server worth waiting for.
const MAX_STATUS_LINE: usize = 1024;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid URL {0:?}: expected http://host:port/path")]
    InvalidUrl(String),
    #[error("the admin listener is disabled in the configuration (global.admin_enabled)")]
    AdminDisabled,
    #[error("{url}: cannot resolve {authority}: {reason}")]
    Resolve {
        url: String,
        authority: String,
        reason: String,
    },
    #[error("{url}: cannot connect: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url}: not an HTTP response: {line:?}")]
    BadResponse { url: String, line: String },
    #[error("{url}: {status}")]
    NotOk { url: String, status: String },
}

/// The URL of `path` on the admin listener `global` configures. An unspecified listen
/// address (`0.0.0.0`, `[::]`, as containers use) is probed on loopback, which it includes.
///
/// # Errors
///
/// [`Error::AdminDisabled`] when the configuration turns the admin listener off: there is
/// nothing to ask, and a health check that always passed would hide that.
pub fn admin_url(global: &Global, path: &str) -> Result<String, Error> {
    if !global.admin_enabled {
        return Err(Error::AdminDisabled);
    }
    Ok(format!(
        "http://{}{path}",
        loopback_if_unspecified(global.admin_address)
    ))
}

fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Sends `GET` for `url` and waits at most `timeout` in all for the status line.
///
/// # Errors
///
/// Every outcome but status 200: no listener, no answer in time, not HTTP, another status.
pub fn check(url: &str, timeout: Duration) -> Result<String, Error> {
    let (authority, path) = split_url(url)?;
    let deadline = Instant::now() + timeout;
    let timed_out = || Error::Timeout {
        url: url.to_string(),
        timeout,
    };
    let io = |source: std::io::Error| {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            timed_out()
        } else {
            Error::Io {
                url: url.to_string(),
                source,
            }
        }
    };

    let mut stream = connect(url, authority, deadline, timeout)?;
    stream
        .set_write_timeout(Some(left(deadline).ok_or_else(timed_out)?))
        .map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: outrigger-health\r\n\
         Connection: close\r\n\r\n"
    )
    .map_err(io)?;

    // Read until the first line end; the rest of the response does not matter.
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    let line_end = loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            break i;
        }
        if buf.len() > MAX_STATUS_LINE {
            return Err(bad_response(url, &buf));
        }
        // Re-armed before each read: a peer trickling bytes must not extend the deadline.
        stream
            .set_read_timeout(Some(left(deadline).ok_or_else(timed_out)?))
            .map_err(io)?;
        match stream.read(&mut chunk).map_err(io)? {
            0 => return Err(bad_response(url, &buf)),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
    match status_code(&line) {
        Some(200) => Ok(line),
        Some(_) => Err(Error::NotOk {
            url: url.to_string(),
            status: line,
        }),
        None => Err(bad_response(url, &buf)),
    }
}

/// Connects to the first address of `authority` that accepts before the deadline.
fn connect(
    url: &str,
    authority: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, Error> {
    // Numeric addresses (the usual case) are parsed without asking the resolver at all.
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            url: url.to_string(),
            authority: authority.to_string(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        let Some(wait) = left(deadline) else { break };
        match TcpStream::connect_timeout(&addr, wait) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::TimedOut => Error::Timeout {
            url: url.to_string(),
            timeout,
        },
        Some(source) => Error::Connect {
            url: url.to_string(),
            source,
        },
        None => Error::Timeout {
            url: url.to_string(),
            timeout,
        },
    })
}

/// Time left before `deadline`, `None` when none is (a zero timeout would mean "forever" to
/// the socket calls).
fn left(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

/// `http://authority/path` into its authority and path (`/` when absent).
fn split_url(url: &str) -> Result<(&str, &str), Error> {
    let invalid = || Error::InvalidUrl(url.to_string());
    let rest = url.strip_prefix("http://").ok_or_else(invalid)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    // A port is required: the admin listener has no standard one to assume.
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(invalid());
    }
    Ok((authority, path))
}

/// The status code of `HTTP/1.x NNN reason`.
fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn bad_response(url: &str, buf: &[u8]) -> Error {
    let shown = &buf[..buf.len().min(80)];
    Error::BadResponse {
        url: url.to_string(),
        line: String::from_utf8_lossy(shown).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:2020/ready").unwrap(),
            ("127.0.0.1:2020", "/ready")
        );
        assert_eq!(split_url("http://[::1]:2020").unwrap(), ("[::1]:2020", "/"));
        assert_eq!(
            split_url("http://outrigger:2020/live").unwrap(),
            ("outrigger:2020", "/live")
        );
        for bad in [
            "https://127.0.0.1:2020/ready",
            "127.0.0.1:2020/ready",
            "http://127.0.0.1/ready",
            "http://:2020/ready",
            "http://127.0.0.1:99999/ready",
            "http://127.0.0.1:2020/re ady",
        ] {
            assert!(split_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("HTTP/1.1 204"), Some(204));
        assert_eq!(status_code("SSH-2.0-OpenSSH_9.2"), None);
        assert_eq!(status_code("HTTP/1.1 2000 OK"), None);
    }

    #[test]
    fn unspecified_listen_addresses_are_probed_on_loopback() {
        let at = |addr: &str| Global {
            admin_address: addr.parse().unwrap(),
            ..Global::default()
        };
        assert_eq!(
            admin_url(&at("0.0.0.0:2020"), "/ready").unwrap(),
            "http://127.0.0.1:2020/ready"
        );
        assert_eq!(
            admin_url(&at("[::]:9000"), "/live").unwrap(),
            "http://[::1]:9000/live"
        );
        assert_eq!(
            admin_url(&at("10.1.2.3:2020"), "/ready").unwrap(),
            "http://10.1.2.3:2020/ready"
        );
        let mut g = at("127.0.0.1:2020");
        g.admin_enabled = false;
        assert!(matches!(admin_url(&g, "/ready"), Err(Error::AdminDisabled)));
    }
}
