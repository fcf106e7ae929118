//! Arbitrary bytes as the disk buffer's log would hold them after a crash or damage: every
//! record read from them must be one that writing its sequence number and payload again gives
//! back byte for byte, and reading must end (at zeros or damage) without a panic or a read
//! past the bytes.
//!
//! ```text
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run disk_record corpus/disk_record
//! ```

#![no_main]

use libfuzzer_sys::fuzz_target;

use outrigger::buffer::disk::record::{self, Decoded};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    let mut again = Vec::new();
    while at <= data.len() {
        match record::decode(&data[at..]) {
            Decoded::Record { seq, payload, len } => {
                assert!(len >= record::HEADER && at + len <= data.len());
                again.clear();
                record::encode(seq, &data[at..][payload], &mut again);
                assert_eq!(&again[..], &data[at..at + len], "a record is what encoding it writes");
                at += len;
            }
            Decoded::End | Decoded::Bad(_) => break,
        }
    }
});
