//! What one record of the log holds: what a source accepted from one read of one stream, as
//! it arrived, before enrichment.
//!
//! The log holds input, not enriched events, so that what enrichment holds back between
//! reads (the first pieces of a split line, a stack trace still growing: acknowledged when
//! they arrived) is in the log too, and replay rebuilds it by running the same pipeline again
//! over the same stream's records in order. The stream number tells replay which records
//! were one connection's, so their pieces join as they did.
//!
//! ```text
//! version: u8 (1) | kind: u8 (1 = forward requests, 2 = a file's lines) | stream: u64 LE
//! received: secs i64 LE, nanos u32 LE | source: u16 LE length, bytes
//! fields: u16 LE count, then each key (u16 LE length, bytes) and value (u32 LE length, bytes)
//! body: the rest (for forward requests: the whole requests, as read; for a file: its
//!       lines and where they end, `source::file::record`)
//! ```

use std::sync::Arc;

use bytes::Bytes;

use crate::event::Timestamp;

const VERSION: u8 = 1;

/// What a record's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Whole Fluentd forward requests, as a connection read them (compressed ones still
    /// compressed).
    Forward,
    /// Lines of one read of one file, with the file's offset after them (so the offset
    /// commits with the lines).
    File,
}

/// One record's payload, its bytes shared with the buffer it was read into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub kind: Kind,
    /// The stream (connection, or file) it came from, unique in the log.
    pub stream: u64,
    pub received: Timestamp,
    /// The source's name in the configuration.
    pub source: Bytes,
    /// Fields every event of the stream gets (the peer's address under
    /// `source_address_key`).
    pub fields: Arc<[(Bytes, Bytes)]>,
    pub body: Bytes,
}

/// Why bytes are not a payload this version reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("payload version {0}, expected {VERSION}")]
    Version(u8),
    #[error("payload kind {0} is unknown")]
    Kind(u8),
    #[error("payload ends inside its header")]
    Truncated,
}

impl Payload {
    /// Appends the payload's bytes to `out`.
    ///
    /// # Panics
    /// When the source name or a key is longer than 65,535 bytes, a value longer than
    /// 4 GiB, or there are more than 65,535 fields: configuration names and keys, and one
    /// peer's address or name, never are.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_head(out);
        out.extend_from_slice(&self.body);
    }

    /// Appends the payload's bytes before its body to `out`: what [`Payload::encode`]
    /// writes is these, then the body.
    ///
    /// # Panics
    /// As [`Payload::encode`].
    pub fn encode_head(&self, out: &mut Vec<u8>) {
        let short = |n: usize| u16::try_from(n).expect("bounded by the configuration");
        out.push(VERSION);
        out.push(match self.kind {
            Kind::Forward => 1,
            Kind::File => 2,
        });
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.extend_from_slice(&self.received.secs.to_le_bytes());
        out.extend_from_slice(&self.received.nanos.to_le_bytes());
        out.extend_from_slice(&short(self.source.len()).to_le_bytes());
        out.extend_from_slice(&self.source);
        out.extend_from_slice(&short(self.fields.len()).to_le_bytes());
        for (k, v) in self.fields.iter() {
            out.extend_from_slice(&short(k.len()).to_le_bytes());
            out.extend_from_slice(k);
            let v_len = u32::try_from(v.len()).expect("a field value is small");
            out.extend_from_slice(&v_len.to_le_bytes());
            out.extend_from_slice(v);
        }
    }

    /// Reads the payload in `bytes` (a record's payload, whose checksum held); the parts
    /// share `bytes`' buffer.
    ///
    /// # Errors
    /// Another version or kind, or a header cut short.
    pub fn decode(bytes: &Bytes) -> Result<Payload, Error> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<Bytes, Error> {
            let part = bytes.get(at..at + n).ok_or(Error::Truncated)?;
            let part = bytes.slice_ref(part);
            at += n;
            Ok(part)
        };
        let version = take(1)?[0];
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let kind = match take(1)?[0] {
            1 => Kind::Forward,
            2 => Kind::File,
            k => return Err(Error::Kind(k)),
        };
        let u16_at = |b: Bytes| u16::from_le_bytes([b[0], b[1]]) as usize;
        let stream = u64::from_le_bytes(take(8)?[..].try_into().expect("eight bytes"));
        let secs = i64::from_le_bytes(take(8)?[..].try_into().expect("eight bytes"));
        let nanos = u32::from_le_bytes(take(4)?[..].try_into().expect("four bytes"));
        let n = u16_at(take(2)?);
        let source = take(n)?;
        let count = u16_at(take(2)?);
        let mut fields = Vec::with_capacity(count);
        for _ in 0..count {
            let n = u16_at(take(2)?);
            let k = take(n)?;
            let n = u32::from_le_bytes(take(4)?[..].try_into().expect("four bytes")) as usize;
            fields.push((k, take(n)?));
        }
        let body = bytes.slice(at..);
        Ok(Payload {
            kind,
            stream,
            received: Timestamp { secs, nanos },
            source,
            fields: fields.into(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload {
            kind: Kind::Forward,
            stream: 7 << 32 | 3,
            received: Timestamp {
                secs: 1_780_000_000,
                nanos: 5,
            },
            source: Bytes::from_static(b"forward"),
            fields: Arc::from([(Bytes::from_static(b"peer"), Bytes::from_static(b"10.0.0.1"))]),
            body: Bytes::from_static(b"\x93\xa3app\x01\x80"),
        }
    }

    #[test]
    fn a_payload_reads_back_as_written_sharing_its_buffer() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        let bytes = Bytes::from(out);
        let p = Payload::decode(&bytes).unwrap();
        assert_eq!(p, sample());
        assert_eq!(
            p.body.as_ptr(),
            bytes[bytes.len() - p.body.len()..].as_ptr(),
            "no copy"
        );
    }

    #[test]
    fn other_versions_and_cut_headers_are_refused() {
        let mut out = Vec::new();
        sample().encode(&mut out);
        let header = out.len() - sample().body.len();
        for cut in 0..header {
            assert_eq!(
                Payload::decode(&Bytes::copy_from_slice(&out[..cut])),
                Err(Error::Truncated),
                "cut at {cut}"
            );
        }
        out[0] = 2;
        assert_eq!(
            Payload::decode(&Bytes::from(out.clone())),
            Err(Error::Version(2))
        );
        out[0] = 1;
        out[1] = 9;
        assert_eq!(Payload::decode(&Bytes::from(out)), Err(Error::Kind(9)));
    }
}
