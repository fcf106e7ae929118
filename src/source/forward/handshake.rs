//! The forward protocol's shared-key handshake (HELO, PING, PONG).
//!
//! ```text
//! server → client  ["HELO", {"nonce": n, "auth": salt_or_empty, "keepalive": true}]
//! client → server  ["PING", hostname, key_salt, hex(sha512(key_salt‖hostname‖n‖key)), user, pw]
//! server → client  ["PONG", ok, reason, self_hostname, hex(sha512(key_salt‖self_hostname‖n‖key))]
//! ```
//!
//! `pw` is `hex(sha512(auth_salt‖user‖password))` when users are configured, else empty. Every
//! string is treated as bytes: Fluent Bit sends raw random salts as msgpack `str`.

use sha2::{Digest, Sha512};

use crate::msgpack::{Cursor, Kind};

/// What a server needs to authenticate clients.
#[derive(Debug, Clone)]
pub struct Security {
    pub shared_key: Vec<u8>,
    pub self_hostname: Vec<u8>,
    /// (username, password); empty means no user authentication.
    pub users: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The random values of one handshake.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub nonce: [u8; 16],
    /// User-auth salt; empty when no users are configured.
    pub auth_salt: Vec<u8>,
}

impl Challenge {
    pub fn new(security: &Security) -> Challenge {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        let auth_salt = if security.users.is_empty() {
            Vec::new()
        } else {
            let mut s = vec![0u8; 16];
            rand::fill(&mut s[..]);
            s
        };
        Challenge { nonce, auth_salt }
    }

    /// The HELO message.
    pub fn helo(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        rmp::encode::write_array_len(&mut out, 2).unwrap();
        rmp::encode::write_str(&mut out, "HELO").unwrap();
        rmp::encode::write_map_len(&mut out, 3).unwrap();
        rmp::encode::write_str(&mut out, "nonce").unwrap();
        rmp::encode::write_bin(&mut out, &self.nonce).unwrap();
        rmp::encode::write_str(&mut out, "auth").unwrap();
        rmp::encode::write_bin(&mut out, &self.auth_salt).unwrap();
        rmp::encode::write_str(&mut out, "keepalive").unwrap();
        rmp::encode::write_bool(&mut out, true).unwrap();
        out
    }
}

/// `hex(sha512(a‖b‖c‖d))`, the digest every handshake step uses.
pub fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// Why a PING was refused; the text is the PONG's reason, as Fluentd words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    InvalidPing,
    SharedKeyMismatch,
    UserMismatch,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::InvalidPing => "invalid ping message",
            Refusal::SharedKeyMismatch => "shared_key mismatch",
            Refusal::UserMismatch => "username/password mismatch",
        }
    }
}

/// Checks a PING and builds the PONG to send back, whatever the verdict.
pub fn answer(
    ping: &[u8],
    challenge: &Challenge,
    security: &Security,
) -> (Vec<u8>, Result<(), Refusal>) {
    let verdict = check(ping, challenge, security);
    let mut out = Vec::with_capacity(200);
    rmp::encode::write_array_len(&mut out, 5).unwrap();
    rmp::encode::write_str(&mut out, "PONG").unwrap();
    match verdict {
        Ok(client_salt) => {
            rmp::encode::write_bool(&mut out, true).unwrap();
            rmp::encode::write_str(&mut out, "").unwrap();
            write_bytes_str(&mut out, &security.self_hostname);
            let d = digest(&[
                &client_salt,
                &security.self_hostname,
                &challenge.nonce,
                &security.shared_key,
            ]);
            rmp::encode::write_str(&mut out, &d).unwrap();
            (out, Ok(()))
        }
        Err(refusal) => {
            rmp::encode::write_bool(&mut out, false).unwrap();
            rmp::encode::write_str(&mut out, refusal.reason()).unwrap();
            rmp::encode::write_str(&mut out, "").unwrap();
            rmp::encode::write_str(&mut out, "").unwrap();
            (out, Err(refusal))
        }
    }
}

fn write_bytes_str(out: &mut Vec<u8>, b: &[u8]) {
    rmp::encode::write_str_len(out, b.len() as u32).unwrap();
    out.extend_from_slice(b);
}

/// Returns the client's shared-key salt when the PING is good.
fn check(ping: &[u8], challenge: &Challenge, security: &Security) -> Result<Vec<u8>, Refusal> {
    let mut c = Cursor::new(ping);
    match c.read() {
        Ok((h, _)) if h.kind == Kind::Array && h.children == 6 => {}
        _ => return Err(Refusal::InvalidPing),
    }
    let mut field =
        || -> Result<&[u8], Refusal> { c.bytes().ok().flatten().ok_or(Refusal::InvalidPing) };
    let (kind, host, salt, key_digest, user, pw_digest) =
        (field()?, field()?, field()?, field()?, field()?, field()?);
    if kind != b"PING" {
        return Err(Refusal::InvalidPing);
    }
    let expected = digest(&[salt, host, &challenge.nonce, &security.shared_key]);
    if !same(expected.as_bytes(), key_digest) {
        return Err(Refusal::SharedKeyMismatch);
    }
    if !security.users.is_empty() {
        let ok = security.users.iter().any(|(u, p)| {
            u == user && same(digest(&[&challenge.auth_salt, u, p]).as_bytes(), pw_digest)
        });
        if !ok {
            return Err(Refusal::UserMismatch);
        }
    }
    Ok(salt.to_vec())
}

/// Comparison whose time does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security(users: bool) -> Security {
        Security {
            shared_key: b"secret".to_vec(),
            self_hostname: b"outrigger".to_vec(),
            users: if users {
                vec![(b"alice".to_vec(), b"pw".to_vec())]
            } else {
                vec![]
            },
        }
    }

    fn ping(parts: [&[u8]; 5]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_array_len(&mut out, 6).unwrap();
        write_bytes_str(&mut out, b"PING");
        for p in parts {
            write_bytes_str(&mut out, p);
        }
        out
    }

    #[test]
    fn digest_matches_reference_vector() {
        // Computed with Python's hashlib: salt, hostname, nonce, key.
        assert_eq!(
            digest(&[b"salt", b"client.example", b"nonce", b"secret"]),
            "27441ad535b8a38b64536394ec504dcf0ab04b8f14ea3054425bba8a4d1e5c4cf19cf23070052907d140ab6e05dadbd1199e344a8fac70b8edc1a47d46529b3c"
        );
    }

    #[test]
    fn good_ping_gets_a_pong_that_proves_the_key() {
        let sec = security(false);
        let ch = Challenge::new(&sec);
        // Fluent Bit sends raw (non-UTF-8) salts as str.
        let salt: &[u8] = &[0xff, 0x00, 0x80];
        let d = digest(&[salt, b"client", &ch.nonce, b"secret"]);
        let (pong, verdict) = answer(&ping([b"client", salt, d.as_bytes(), b"", b""]), &ch, &sec);
        assert_eq!(verdict, Ok(()));
        let mut c = Cursor::new(&pong);
        assert_eq!(c.read().unwrap().0.children, 5);
        assert_eq!(c.bytes().unwrap().unwrap(), b"PONG");
        assert_eq!(c.read().unwrap().0.kind, Kind::Bool(true));
        c.skip().unwrap();
        assert_eq!(c.bytes().unwrap().unwrap(), b"outrigger");
        let expected = digest(&[salt, b"outrigger", &ch.nonce, b"secret"]);
        assert_eq!(c.bytes().unwrap().unwrap(), expected.as_bytes());
    }

    #[test]
    fn wrong_key_and_wrong_user_are_refused_with_reason() {
        let sec = security(true);
        let ch = Challenge::new(&sec);
        let bad = digest(&[b"s", b"client", &ch.nonce, b"wrong"]);
        let (pong, verdict) = answer(
            &ping([b"client", b"s", bad.as_bytes(), b"", b""]),
            &ch,
            &sec,
        );
        assert_eq!(verdict, Err(Refusal::SharedKeyMismatch));
        assert!(pong.windows(19).any(|w| w == b"shared_key mismatch"));

        let good = digest(&[b"s", b"client", &ch.nonce, b"secret"]);
        let pw = digest(&[&ch.auth_salt, b"alice", b"nope"]);
        let (_, verdict) = answer(
            &ping([b"client", b"s", good.as_bytes(), b"alice", pw.as_bytes()]),
            &ch,
            &sec,
        );
        assert_eq!(verdict, Err(Refusal::UserMismatch));
        let pw = digest(&[&ch.auth_salt, b"alice", b"pw"]);
        let (_, verdict) = answer(
            &ping([b"client", b"s", good.as_bytes(), b"alice", pw.as_bytes()]),
            &ch,
            &sec,
        );
        assert_eq!(verdict, Ok(()));
    }

    #[test]
    fn malformed_ping_is_invalid() {
        let sec = security(false);
        let ch = Challenge::new(&sec);
        assert_eq!(
            answer(&[0x93, 0xa4, b'P', b'I', b'N', b'G'], &ch, &sec).1,
            Err(Refusal::InvalidPing)
        );
        assert_eq!(answer(&[0xc1], &ch, &sec).1, Err(Refusal::InvalidPing));
    }
}
