//! A file source's disk buffer record: the lines of one read of one file, and where the read
//! ended, in one record, so the offset is in the same group commit as the lines read up to
//! it. A `kill -9` then loses none of them (they are in the log) and reads none again (the
//! next start resumes at the newest record's offset, [`super::FileSource::bind`]).
//!
//! The body of a [`Kind::File`](crate::buffer::disk::payload::Kind) payload:
//!
//! ```text
//! format: u8 (1 CRI, 2 Docker json-file, 3 text) | lines: u32 LE count
//! end: u64 LE (offset just past the last line) | dev: u64 LE | ino: u64 LE
//! prefix length: u32 LE | prefix crc32c: u32 LE (the file's identity, checkpoint::Id)
//! tag: u16 LE length, bytes | path: u16 LE length, bytes
//! resource: u16 LE count, then each key (u16 LE length, bytes) and value (u32 LE length,
//!           bytes): the pod's attributes from the Kubernetes API, as read with the lines
//! multiline: u8 (0 as configured, 1 on, 2 off: as the pod's annotation said)
//! the lines, each but the last followed by `\n` (a line never holds one)
//! ```

use std::path::PathBuf;

use bytes::Bytes;

use super::checkpoint::{Checkpoint, Id};
use super::format::Format;
use crate::event::Batch;

/// What a record says about its file, besides the lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub format: Format,
    pub lines: u32,
    pub tag: Bytes,
    /// The file's place once these lines are read.
    pub checkpoint: Checkpoint,
    /// Resource attributes the lines were read with (a pod's, from the Kubernetes API).
    pub resource: std::sync::Arc<[(Bytes, Bytes)]>,
    /// Stack-trace joining as the pod asked (`None`: as configured).
    pub multiline: Option<bool>,
}

/// Why a body is not a file record this version reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("file record ends inside its header")]
    Truncated,
    #[error("file record format {0} is unknown")]
    Format(u8),
    #[error("file record holds {found} lines, its header says {said}")]
    Lines { said: u32, found: u32 },
    #[error("file record path is not UTF-8")]
    Path,
}

/// Appends the body of a record of `lines` to `out`.
///
/// # Panics
/// When the tag or path is longer than 65,535 bytes (a path is at most 4,096) or there are
/// more than 4 G lines.
pub fn encode(head: &Head, lines: &[Bytes], out: &mut Vec<u8>) {
    let short = |n: usize| u16::try_from(n).expect("a path is short");
    let c = &head.checkpoint;
    let path = c.path.as_os_str().as_encoded_bytes();
    let resource: usize = head
        .resource
        .iter()
        .map(|(k, v)| 6 + k.len() + v.len())
        .sum();
    let lines_bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    out.reserve(64 + head.tag.len() + path.len() + resource + lines_bytes);
    out.push(match head.format {
        Format::Cri => 1,
        Format::Docker => 2,
        Format::Text | Format::Auto => 3,
    });
    let count = u32::try_from(lines.len()).expect("a read holds fewer lines");
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&c.offset.to_le_bytes());
    out.extend_from_slice(&c.id.dev.to_le_bytes());
    out.extend_from_slice(&c.id.ino.to_le_bytes());
    out.extend_from_slice(&c.id.prefix_len.to_le_bytes());
    out.extend_from_slice(&c.id.prefix_crc.to_le_bytes());
    out.extend_from_slice(&short(head.tag.len()).to_le_bytes());
    out.extend_from_slice(&head.tag);
    out.extend_from_slice(&short(path.len()).to_le_bytes());
    out.extend_from_slice(path);
    out.extend_from_slice(&short(head.resource.len()).to_le_bytes());
    for (k, v) in head.resource.iter() {
        out.extend_from_slice(&short(k.len()).to_le_bytes());
        out.extend_from_slice(k);
        let v_len = u32::try_from(v.len()).expect("an attribute is small");
        out.extend_from_slice(&v_len.to_le_bytes());
        out.extend_from_slice(v);
    }
    out.push(match head.multiline {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    });
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(line);
    }
}

/// Reads a record's header; the rest of `body` after the returned offset is its lines.
///
/// # Errors
/// A header cut short, an unknown format or a path that is not UTF-8.
pub fn head(body: &Bytes) -> Result<(Head, usize), Error> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        let part = body.get(at..at + n).ok_or(Error::Truncated)?;
        at += n;
        Ok(part)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().expect("four bytes"));
    let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("eight bytes"));
    let format = match take(1)?[0] {
        1 => Format::Cri,
        2 => Format::Docker,
        3 => Format::Text,
        f => return Err(Error::Format(f)),
    };
    let lines = u32_of(take(4)?);
    let offset = u64_of(take(8)?);
    let dev = u64_of(take(8)?);
    let ino = u64_of(take(8)?);
    let prefix_len = u32_of(take(4)?);
    let prefix_crc = u32_of(take(4)?);
    let n = u16::from_le_bytes(take(2)?.try_into().expect("two bytes")) as usize;
    let tag = take(n)?.to_vec();
    let n = u16::from_le_bytes(take(2)?.try_into().expect("two bytes")) as usize;
    let path = std::str::from_utf8(take(n)?).map_err(|_| Error::Path)?;
    let path = PathBuf::from(path);
    let count = u16::from_le_bytes(take(2)?.try_into().expect("two bytes")) as usize;
    let mut resource = Vec::with_capacity(count);
    for _ in 0..count {
        let n = u16::from_le_bytes(take(2)?.try_into().expect("two bytes")) as usize;
        let k = Bytes::copy_from_slice(take(n)?);
        let n = u32_of(take(4)?) as usize;
        resource.push((k, Bytes::copy_from_slice(take(n)?)));
    }
    let multiline = match take(1)?[0] {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    };
    let head = Head {
        format,
        lines,
        tag: Bytes::from(tag),
        checkpoint: Checkpoint {
            path,
            id: Id {
                dev,
                ino,
                prefix_len,
                prefix_crc,
            },
            offset,
        },
        resource: resource.into(),
        multiline,
    };
    Ok((head, at))
}

/// Adds the lines of the record whose body is `body` to `batch` as events, as the source
/// made them when it read them (at `batch.received`); their bytes stay in `body`'s buffer.
///
/// # Errors
/// What [`head`] refuses, or fewer or more lines than the header says (nothing is added).
pub fn events(body: &Bytes, batch: &mut Batch) -> Result<Head, Error> {
    let (head, at) = head(body)?;
    let rest = body.slice(at..);
    let found = if head.lines == 0 {
        0
    } else {
        memchr::memchr_iter(b'\n', &rest).count() as u32 + 1
    };
    if found != head.lines {
        return Err(Error::Lines {
            said: head.lines,
            found,
        });
    }
    let tag = batch.tag_index(&head.tag, || head.tag.clone());
    batch.resource = head.resource.clone();
    let now = batch.received;
    batch.events.reserve(head.lines as usize);
    if head.lines > 0 {
        let mut from = 0;
        let ends = memchr::memchr_iter(b'\n', &rest).chain(std::iter::once(rest.len()));
        for end in ends {
            let (e, _) = head.format.event(rest.slice(from..end), tag, now);
            batch.events.push(e);
            from = end + 1;
        }
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Timestamp;

    fn head(lines: u32) -> Head {
        Head {
            format: Format::Cri,
            lines,
            tag: Bytes::from_static(b"kube.shop.web.app"),
            checkpoint: Checkpoint {
                path: PathBuf::from("/var/log/pods/shop_web_u1/app/0.log"),
                id: Id {
                    dev: 2049,
                    ino: 77,
                    prefix_len: 256,
                    prefix_crc: 0xdead_beef,
                },
                offset: 123_456,
            },
            resource: std::sync::Arc::from([(
                Bytes::from_static(b"k8s.deployment.name"),
                Bytes::from_static(b"web"),
            )]),
            multiline: Some(false),
        }
    }

    #[test]
    fn a_record_reads_back_as_the_lines_and_place_it_was_made_of() {
        let lines = [
            Bytes::from_static(b"2026-12-04T10:00:00.000000001Z stdout F first"),
            Bytes::new(),
            Bytes::from_static(b"2026-12-04T10:00:00.000000002Z stderr P sec"),
        ];
        let mut out = Vec::new();
        encode(&head(3), &lines, &mut out);
        let body = Bytes::from(out);
        let mut batch = Batch {
            received: Timestamp { secs: 5, nanos: 0 },
            ..Default::default()
        };
        let h = events(&body, &mut batch).unwrap();
        assert_eq!(h, head(3));
        assert_eq!(
            batch.resource,
            head(3).resource,
            "read with the pod's attributes"
        );
        assert_eq!(batch.tags, vec![Bytes::from_static(b"kube.shop.web.app")]);
        let raw: Vec<&[u8]> = batch.events.iter().map(|e| &e.record[..]).collect();
        assert_eq!(raw, lines.iter().map(|l| &l[..]).collect::<Vec<_>>());
        assert!(
            batch.events[2].meta.continued,
            "a P line as the source made it"
        );
        assert!(
            body.as_ptr_range()
                .contains(&batch.events[0].record.as_ptr()),
            "the lines stay in the record's buffer"
        );

        let mut empty = Vec::new();
        encode(&head(0), &[], &mut empty);
        let mut batch = Batch::default();
        assert_eq!(events(&Bytes::from(empty), &mut batch).unwrap().lines, 0);
        assert!(batch.events.is_empty());
    }

    #[test]
    fn cut_or_miscounted_records_are_refused_whole() {
        let lines = [Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        let mut out = Vec::new();
        encode(&head(2), &lines, &mut out);
        let header = out.len() - 3;
        for cut in 0..header {
            let mut batch = Batch::default();
            let r = events(&Bytes::copy_from_slice(&out[..cut]), &mut batch);
            assert_eq!(r, Err(Error::Truncated), "cut at {cut}");
            assert!(batch.events.is_empty());
        }
        let mut batch = Batch::default();
        let r = events(&Bytes::copy_from_slice(&out[..out.len() - 2]), &mut batch);
        assert_eq!(r, Err(Error::Lines { said: 2, found: 1 }));
        assert!(batch.events.is_empty());
        out[0] = 9;
        assert_eq!(
            events(&Bytes::from(out), &mut Batch::default()),
            Err(Error::Format(9))
        );
    }
}
