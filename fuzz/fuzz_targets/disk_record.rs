//! Arbitrary bytes as the disk buffer's log would hold them after a crash or damage: every
//! record read from them must be one that writing its sequence number and payload again gives
//! back byte for byte, and reading must end (at zeros or damage) without a panic or a read
//! past the bytes. A record's payload (whose checksum held, so written by some version) is
//! read as replay reads it: it decodes or is refused, and one that decodes encodes back to
//! the same bytes.
//!
//! ```text
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run disk_record corpus/disk_record
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

use bytes::Bytes;
use outrigger::buffer::disk::payload::Payload;
use outrigger::buffer::disk::record::{self, Decoded};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    let mut again = Vec::new();
    while at <= data.len() {
        match record::decode(&data[at..]) {
            Decoded::Record { seq, payload, len } => {
                assert!(len >= record::HEADER && at + len <= data.len());
                let bytes = Bytes::copy_from_slice(&data[at..][payload]);
                again.clear();
                record::encode(seq, &bytes, &mut again);
                assert_eq!(&again[..], &data[at..at + len], "a record is what encoding it writes");
                if let Ok(decoded) = Payload::decode(&bytes) {
                    again.clear();
                    decoded.encode(&mut again);
                    assert_eq!(&again[..], &bytes[..], "a payload is what encoding it writes");
                }
                at += len;
            }
            Decoded::End | Decoded::Bad(_) => break,
        }
    }
});
