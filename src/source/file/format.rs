//! The line formats of container log files, each line into one [`Event::line`].
//!
//! - CRI (containerd, CRI-O): `<RFC 3339 time> <stdout|stderr> <P|F>[:more] <content>`. The
//!   event is the line itself, with spans for its content and stream: nothing is copied. `P`
//!   (the runtime split a long line) marks the event `continued`; the pipeline joins it with
//!   what follows on the same stream, up to the `F`.
//! - Docker's json-file: `{"log":"<text>\n","stream":"stdout","time":"…"}`. The text is
//!   unescaped into a buffer of its own (after its stream, so both are spans of one buffer,
//!   the stream first as the pipeline's join expects). A `log` that does not end with `\n` is a piece of a longer line: `continued`.
//! - Text: the line is the message, read now.
//!
//! A line that is not what its format says (a torn last line, garbage, an unreadable time)
//! goes on as text, read now, with the reason: the caller counts it. Nothing here fails or
//! drops a line.

use std::ops::Range;

use bytes::Bytes;

use crate::event::{Event, Span, Timestamp};
use crate::pipeline::{json, timefmt};

/// `format` of a file source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decided per file from its first line: CRI, Docker's json-file, or text.
    Auto,
    Cri,
    Docker,
    Text,
}

/// Why a line did not parse as its format: it is passed on as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not `<time> <stream> <flag> <content>`, or a time that is not RFC 3339.
    Cri,
    /// Not a JSON object with a string `log`, or an escape that does not decode.
    Docker,
}

impl Malformed {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::Cri => "malformed_cri",
            Malformed::Docker => "malformed_docker",
        }
    }
}

impl Format {
    /// The format a file whose first line is `line` is in (for [`Format::Auto`]; the others
    /// are what they say).
    pub fn detect(self, line: &[u8]) -> Format {
        match self {
            Format::Auto if cri(line).is_some() => Format::Cri,
            Format::Auto if line.starts_with(b"{\"log\":") && docker(line).is_some() => {
                Format::Docker
            }
            Format::Auto => Format::Text,
            f => f,
        }
    }

    /// `line` (without its `\n`) as an event with tag `tag`, and why it went on as text if
    /// it did. `now` is the time of lines that carry none. `self` must not be `Auto`
    /// ([`Format::detect`] first): an undetected file reads as text.
    pub fn event(self, line: Bytes, tag: u32, now: Timestamp) -> (Event, Option<Malformed>) {
        match self {
            Format::Cri => match cri(&line) {
                Some(p) => {
                    let mut e = Event::line(
                        p.time,
                        tag,
                        line,
                        Span::new(p.content),
                        Some(Span::new(p.stream)),
                    );
                    e.meta.continued = p.partial;
                    (e, None)
                }
                None => (text(line, tag, now), Some(Malformed::Cri)),
            },
            Format::Docker => match docker(&line) {
                Some(d) => {
                    let time = d.time.unwrap_or(now);
                    let (n, at) = (d.buf.len(), d.stream_len);
                    let stream = (at > 0).then(|| Span::new(0..at));
                    let mut e =
                        Event::line(time, tag, Bytes::from(d.buf), Span::new(at..n), stream);
                    e.meta.continued = d.partial;
                    (e, None)
                }
                None => (text(line, tag, now), Some(Malformed::Docker)),
            },
            Format::Text | Format::Auto => (text(line, tag, now), None),
        }
    }
}

/// The whole line as the message, at `now`.
fn text(line: Bytes, tag: u32, now: Timestamp) -> Event {
    let n = line.len();
    Event::line(now, tag, line, Span::new(0..n), None)
}

/// A CRI line's parts.
#[derive(Debug, PartialEq, Eq)]
struct Cri {
    time: Timestamp,
    stream: Range<usize>,
    content: Range<usize>,
    partial: bool,
}

fn cri(line: &[u8]) -> Option<Cri> {
    let t_end = memchr::memchr(b' ', line)?;
    let time = timefmt::parse_rfc3339(&line[..t_end])?;
    let s_start = t_end + 1;
    let s_end = s_start + memchr::memchr(b' ', &line[s_start..])?;
    let stream = &line[s_start..s_end];
    if stream != b"stdout" && stream != b"stderr" {
        return None;
    }
    let f_start = s_end + 1;
    // The tag runs to the next space, or to the end of a line with empty content.
    let f_end = memchr::memchr(b' ', &line[f_start..]).map_or(line.len(), |i| f_start + i);
    let flags = &line[f_start..f_end];
    // More tag fields may follow after ':' (`F:x`); the first letter is the one that counts.
    let partial = match flags.split(|b| *b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return None,
    };
    let c_start = (f_end + 1).min(line.len());
    Some(Cri {
        time,
        stream: s_start..s_end,
        content: c_start..line.len(),
        partial,
    })
}

/// A json-file line, decoded: `buf` is the stream followed by the log text (its `\n` gone).
struct Docker {
    buf: Vec<u8>,
    stream_len: usize,
    time: Option<Timestamp>,
    partial: bool,
}

fn docker(line: &[u8]) -> Option<Docker> {
    let line = line.trim_ascii_end();
    let mut members = Vec::with_capacity(3);
    if !json::members(line, 0, &mut members) {
        return None;
    }
    let value = |name: &[u8]| {
        members
            .iter()
            .find(|m| &line[m.key.start as usize..(m.key.start + m.key.len) as usize] == name)
            .filter(|m| m.kind == crate::event::JsonKind::String)
            .map(|m| &line[m.value.start as usize + 1..(m.value.start + m.value.len) as usize - 1])
    };
    let log = value(b"log")?;
    let stream = value(b"stream").unwrap_or_default();
    let stream_len = if stream.contains(&b'\\') {
        0
    } else {
        stream.len()
    };
    let mut buf = Vec::with_capacity(stream_len + log.len());
    buf.extend_from_slice(&stream[..stream_len]);
    unescape(log, &mut buf)?;
    let partial = buf.len() == stream_len || buf.last() != Some(&b'\n');
    if !partial {
        buf.pop();
        if buf.len() > stream_len && buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    let time = value(b"time").and_then(timefmt::parse_rfc3339);
    Some(Docker {
        buf,
        stream_len,
        time,
        partial,
    })
}

/// Appends the JSON string body `s` (between its quotes) unescaped to `out`; `None` when an
/// escape does not decode.
fn unescape(s: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &s[i..]) {
        out.extend_from_slice(&s[i..i + at]);
        i += at + 1;
        let c = *s.get(i)?;
        i += 1;
        let b = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hex = |at: usize| -> Option<u32> {
                    let h = std::str::from_utf8(s.get(at..at + 4)?).ok()?;
                    u32::from_str_radix(h, 16).ok()
                };
                let mut code = hex(i)?;
                i += 4;
                if (0xd800..0xdc00).contains(&code) {
                    // A high surrogate: its low half must follow as another \u escape.
                    if s.get(i..i + 2) != Some(b"\\u") {
                        return None;
                    }
                    let low = hex(i + 2)?;
                    if !(0xdc00..0xe000).contains(&low) {
                        return None;
                    }
                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                    i += 6;
                }
                let ch = char::from_u32(code)?;
                let mut utf8 = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
            _ => return None,
        };
        out.push(b);
    }
    out.extend_from_slice(&s[i..]);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp {
        secs: 1_800_000_000,
        nanos: 0,
    };

    fn parse(format: Format, line: &str) -> (Event, Option<Malformed>) {
        format.event(Bytes::copy_from_slice(line.as_bytes()), 0, NOW)
    }

    fn message(e: &Event) -> &[u8] {
        e.slice(e.meta.line.unwrap())
    }

    fn stream(e: &Event) -> Option<&[u8]> {
        e.meta.stream.map(|s| e.slice(s))
    }

    #[test]
    fn cri_lines_are_spans_of_themselves() {
        let (e, bad) = parse(
            Format::Cri,
            "2026-12-02T17:40:01.123456789Z stdout F {\"level\":\"info\",\"msg\":\"ready\"}",
        );
        assert_eq!(bad, None);
        assert_eq!(message(&e), br#"{"level":"info","msg":"ready"}"#);
        assert_eq!(stream(&e), Some(&b"stdout"[..]));
        assert_eq!(e.time.nanos, 123_456_789);
        assert!(!e.meta.continued);

        let (e, _) = parse(Format::Cri, "2026-12-02T17:40:01Z stderr P first piece ");
        assert!(e.meta.continued);
        assert_eq!(message(&e), b"first piece ");
        assert_eq!(stream(&e), Some(&b"stderr"[..]));

        // More tag fields after ':'; empty content with and without its space.
        let (e, bad) = parse(Format::Cri, "2026-12-02T17:40:01Z stdout F:x tail");
        assert!(bad.is_none() && !e.meta.continued && message(&e) == b"tail");
        for line in [
            "2026-12-02T17:40:01Z stdout F ",
            "2026-12-02T17:40:01Z stdout F",
        ] {
            let (e, bad) = parse(Format::Cri, line);
            assert!(bad.is_none() && message(&e).is_empty(), "{line:?}");
        }
    }

    #[test]
    fn a_line_that_is_not_its_format_goes_on_as_text() {
        for (format, line, why) in [
            (Format::Cri, "2026-12-02T17:40:01Z stdout", Malformed::Cri),
            (Format::Cri, "yesterday stdout F hi", Malformed::Cri),
            (
                Format::Cri,
                "2026-12-02T17:40:01Z stdin F hi",
                Malformed::Cri,
            ),
            (
                Format::Cri,
                "2026-12-02T17:40:01Z stdout X hi",
                Malformed::Cri,
            ),
            (Format::Docker, "{\"log\":\"torn", Malformed::Docker),
            (Format::Docker, "{\"log\":1}", Malformed::Docker),
            (
                Format::Docker,
                "{\"log\":\"bad \\x escape\"}",
                Malformed::Docker,
            ),
            (
                Format::Docker,
                "{\"log\":\"\\ud800 lone\"}",
                Malformed::Docker,
            ),
        ] {
            let (e, bad) = parse(format, line);
            assert_eq!(bad, Some(why), "{line:?}");
            assert_eq!(message(&e), line.as_bytes(), "the whole line as text");
            assert_eq!(e.time, NOW);
        }
    }

    #[test]
    fn docker_lines_are_unescaped_with_their_stream_and_time() {
        let (e, bad) = parse(
            Format::Docker,
            r#"{"log":"say \"hi\"\t\u00e9\ud83d\ude00\n","stream":"stderr","time":"2026-12-02T17:40:01.5Z"}"#,
        );
        assert_eq!(bad, None);
        assert_eq!(message(&e), "say \"hi\"\té😀".as_bytes());
        assert_eq!(stream(&e), Some(&b"stderr"[..]));
        assert_eq!(e.time.nanos, 500_000_000);
        assert!(!e.meta.continued);

        // A piece of a longer line: no newline yet. Missing time and stream: now, none.
        let (e, _) = parse(Format::Docker, r#"{"log":"first 16 KiB"}"#);
        assert!(e.meta.continued && e.time == NOW && stream(&e).is_none());
        assert_eq!(message(&e), b"first 16 KiB");
        let (e, _) = parse(
            Format::Docker,
            "{\"log\":\"crlf\\r\\n\",\"stream\":\"stdout\"}\r",
        );
        assert_eq!(message(&e), b"crlf");
    }

    /// An event as the sinks see it: message, stream, JSON or not, severity.
    type Seen = (Vec<u8>, Option<Vec<u8>>, bool, u8);

    #[tokio::test]
    async fn split_lines_of_both_formats_join_into_the_same_event() {
        use crate::pipeline::{Metrics, Settings, Stage};
        use std::sync::Arc;
        let options = crate::config::Enrich::default().options();
        let settings = (
            Arc::new(Settings::new(&options).unwrap()),
            Metrics::default(),
        );
        let cri = [
            "2026-12-02T17:40:01Z stdout P {\"level\":\"warn\",",
            "2026-12-02T17:40:01Z stderr F other stream",
            "2026-12-02T17:40:01Z stdout F \"msg\":\"slow\"}",
        ];
        let docker = [
            r#"{"log":"{\"level\":\"warn\",","stream":"stdout","time":"2026-12-02T17:40:01Z"}"#,
            r#"{"log":"other stream\n","stream":"stderr","time":"2026-12-02T17:40:01Z"}"#,
            r#"{"log":"\"msg\":\"slow\"}\n","stream":"stdout","time":"2026-12-02T17:40:01Z"}"#,
        ];
        let mut out = Vec::new();
        for (format, lines) in [(Format::Cri, cri), (Format::Docker, docker)] {
            let mut stage = Stage::new(Some(&settings), Arc::new([]));
            let mut b = stage.batch(0);
            let tag = b.tag_index(b"file", || Bytes::from_static(b"file"));
            for l in lines {
                let (e, bad) = format.event(Bytes::copy_from_slice(l.as_bytes()), tag, NOW);
                assert!(bad.is_none(), "{l}");
                b.events.push(e);
            }
            stage.process(&mut b);
            let got: Vec<Seen> = b
                .events
                .iter()
                .map(|e| {
                    let m = e.meta;
                    (
                        message(e).to_vec(),
                        stream(e).map(<[u8]>::to_vec),
                        m.json,
                        m.severity,
                    )
                })
                .collect();
            out.push(got);
        }
        assert_eq!(out[0], out[1], "CRI and json-file give the same events");
        assert_eq!(out[0].len(), 2);
        assert_eq!(out[0][1].0, br#"{"level":"warn","msg":"slow"}"#);
        assert!(out[0][1].2, "the joined line is JSON");
        assert_eq!(out[0][1].3, 13, "warn");
    }

    #[test]
    fn auto_detects_from_the_first_line() {
        let cases = [
            ("2026-12-02T17:40:01Z stdout F x", Format::Cri),
            (
                r#"{"log":"x\n","stream":"stdout","time":"2026-12-02T17:40:01Z"}"#,
                Format::Docker,
            ),
            (r#"{"level":"info"}"#, Format::Text),
            ("plain", Format::Text),
        ];
        for (line, want) in cases {
            assert_eq!(Format::Auto.detect(line.as_bytes()), want, "{line}");
            assert_eq!(Format::Text.detect(line.as_bytes()), Format::Text);
        }
        let (e, bad) = parse(Format::Text, "plain words");
        assert!(bad.is_none() && message(&e) == b"plain words" && e.time == NOW);
    }
}
