//! The disk buffer's files as operators see them: `outrigger buffer verify` and `dump` on a
//! log written by the library, clean and then damaged.

use std::os::unix::fs::FileExt;
use std::process::Command;

use outrigger::buffer::disk::{cursor::Cursor, record, segment::Writer};

use crate::harness::binary::bin;

#[test]
fn buffer_verify_reports_segments_cursors_and_damage() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join(outrigger::buffer::disk::DIR);
    std::fs::create_dir(&dir).unwrap();
    let mut w = Writer::create(&dir, 1, 64 << 10).unwrap();
    let mut records = Vec::new();
    for seq in 1..=100 {
        record::encode(seq, format!("request {seq}").as_bytes(), &mut records);
    }
    w.append(&records).unwrap();
    w.sync().unwrap();
    Cursor::open(&dir, "es").unwrap().advance(40).unwrap();

    let verify = || {
        Command::new(bin())
            .args(["buffer", "verify", "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("00000000000000000001.log: records 1..=100 (100)"),
        "{text}"
    );
    assert!(text.contains("cursor es: next record 40"), "{text}");

    // These records are not what a source writes: dump says so and exits 1.
    let out = Command::new(bin())
        .args(["buffer", "dump", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("100 records, 0 events, 100 unreadable"),
        "{err}"
    );

    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(w.path())
        .unwrap();
    file.write_all_at(b"\xde\xad", 1000).unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("damage found") && text.contains("a start cuts the segment there"),
        "{text}"
    );
}
