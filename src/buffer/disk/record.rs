//! One record of the log on disk, framed so that a reader can tell a whole record from a torn
//! or damaged one without trusting anything else in the file.
//!
//! ```text
//! length: u32 LE | crc: u32 LE | seq: u64 LE | payload (length bytes)
//! ```
//!
//! `crc` is the CRC32C (Castagnoli) of `length`, `seq` and the payload, so a flipped bit in
//! any of them, or a length that points into another record, is caught. `seq` numbers the
//! log's records from 1 with no gaps; a reader that finds a record out of sequence has found
//! damage too. Segments are preallocated with zeros, and a zero `length` and `crc` is where
//! the written part ends: a record of an empty payload still has a non-zero CRC.
//!
//! Pure functions over bytes, so the reader can be fuzzed and tested without files.

/// Bytes of a record's header.
pub const HEADER: usize = 16;

/// The largest payload a record may carry. A length beyond it is damage, not a reason to read
/// (or allocate) gigabytes.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// What the bytes at a position hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole record: its sequence number, where its payload is, and its length on disk.
    Record {
        seq: u64,
        payload: std::ops::Range<usize>,
        len: usize,
    },
    /// Zeros (or nothing) where a header would be: the end of what was written.
    End,
    /// Not a whole, valid record: the end of what can be trusted.
    Bad(Damage),
}

/// Why the bytes at a position are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The header or payload runs past the bytes there are (a write cut short).
    Torn,
    /// The length is beyond [`MAX_PAYLOAD`].
    Length,
    /// The checksum does not match.
    Checksum,
    /// A whole record, but not the one that should come next (a stale or misplaced one).
    Sequence,
}

impl Damage {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Damage::Torn => "torn",
            Damage::Length => "bad_length",
            Damage::Checksum => "bad_checksum",
            Damage::Sequence => "out_of_sequence",
        }
    }
}

/// Appends the record of `payload` numbered `seq` to `out`.
///
/// # Panics
/// When `payload` is larger than [`MAX_PAYLOAD`]: callers split or refuse such input first.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&header(seq, &[payload]));
    out.extend_from_slice(payload);
}

/// The header of the record numbered `seq` whose payload is `parts`, one after another
/// (so a payload need not be copied together to be written).
///
/// # Panics
/// When the parts together are larger than [`MAX_PAYLOAD`].
pub fn header(seq: u64, parts: &[&[u8]]) -> [u8; HEADER] {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    assert!(n <= MAX_PAYLOAD, "a record's payload is bounded");
    let len = (n as u32).to_le_bytes();
    let seq = seq.to_le_bytes();
    let crc = parts.iter().fold(
        crc32c::crc32c_append(crc32c::crc32c(&len), &seq),
        |crc, p| crc32c::crc32c_append(crc, p),
    );
    let mut h = [0; HEADER];
    h[0..4].copy_from_slice(&len);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h[8..16].copy_from_slice(&seq);
    h
}

/// What `buf` starts with.
pub fn decode(buf: &[u8]) -> Decoded {
    let Some(header) = buf.get(..HEADER) else {
        // A partial header of zeros is the preallocated end, anything else a torn write.
        return if buf.iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Bad(Damage::Torn)
        };
    };
    let len: [u8; 4] = header[0..4].try_into().expect("four bytes");
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("four bytes"));
    let seq: [u8; 8] = header[8..16].try_into().expect("eight bytes");
    if len == [0; 4] && crc == 0 {
        // Written records never look like this; zeros after it mean nothing else was written.
        return if header[8..].iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Bad(Damage::Checksum)
        };
    }
    let n = u32::from_le_bytes(len) as usize;
    if n > MAX_PAYLOAD {
        return Decoded::Bad(Damage::Length);
    }
    let Some(payload) = buf.get(HEADER..HEADER + n) else {
        return Decoded::Bad(Damage::Torn);
    };
    if checksum(&len, &seq, payload) != crc {
        return Decoded::Bad(Damage::Checksum);
    }
    Decoded::Record {
        seq: u64::from_le_bytes(seq),
        payload: HEADER..HEADER + n,
        len: HEADER + n,
    }
}

fn checksum(len: &[u8; 4], seq: &[u8; 8], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(len);
    let crc = crc32c::crc32c_append(crc, seq);
    crc32c::crc32c_append(crc, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_over_parts_is_the_header_of_them_together() {
        let mut whole = Vec::new();
        encode(7, b"header and body", &mut whole);
        assert_eq!(
            header(7, &[b"header", b" and", b"", b" body"]),
            whole[..HEADER]
        );
        assert_ne!(header(7, &[b"header and bod"]), whole[..HEADER]);
    }

    #[test]
    fn records_round_trip_and_end_at_zeros() {
        let mut buf = Vec::new();
        encode(1, b"hello", &mut buf);
        encode(2, b"", &mut buf);
        buf.extend_from_slice(&[0; 64]);
        let Decoded::Record { seq, payload, len } = decode(&buf) else {
            panic!("a record");
        };
        assert_eq!((seq, &buf[payload], len), (1, &b"hello"[..], HEADER + 5));
        let rest = &buf[len..];
        assert_eq!(
            decode(rest),
            Decoded::Record {
                seq: 2,
                payload: HEADER..HEADER,
                len: HEADER
            },
            "an empty payload is still a record"
        );
        assert_eq!(decode(&rest[HEADER..]), Decoded::End);
        assert_eq!(decode(&[]), Decoded::End);
        assert_eq!(decode(&[0; 7]), Decoded::End);
    }

    #[test]
    fn every_cut_and_every_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(7, b"a payload of some length", &mut buf);
        for cut in 1..buf.len() {
            assert_eq!(
                decode(&buf[..cut]),
                Decoded::Bad(Damage::Torn),
                "cut at {cut}"
            );
        }
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode(&b), Decoded::Bad(_)),
                "bit {bit}: {:?}",
                decode(&b)
            );
        }
        let mut long = buf.clone();
        long[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&long), Decoded::Bad(Damage::Length));
    }
}
