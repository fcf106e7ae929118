//! Joining multi-line stack traces that arrive as one record per line (off by default).
//!
//! Containers print a Java, Python, Go or Node stack trace as many lines, and Docker sends each
//! as its own record. When enabled, each (container, stream) holds its last line for a short
//! while: lines that continue it are appended, the first line that does not closes it. A held
//! block is emitted after `timeout` even if nothing follows, and is bounded in lines and bytes.
//!
//! A line continues a block when it is indented (Java `\tat …`, Node `    at …`, Python
//! frames), starts with `Caused by:` or `Suppressed:` (Java), follows a Python `Traceback`
//! (up to and including the exception line that ends it), or follows a Go `panic:` or
//! `goroutine N [...]:` header (function lines, `created by`, blank lines between goroutines).
//! JSON lines are never joined.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::Event;

/// Bounds on joining.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    pub max_lines: usize,
    pub max_bytes: usize,
    pub line_key: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    /// After `Traceback (most recent call last):`; the first unindented line ends it.
    Python,
    /// After `panic:` / `goroutine N [..]:` / `fatal error:`.
    Go,
}

#[derive(Debug)]
struct Block {
    key: Vec<u8>,
    tag: Bytes,
    first: Event,
    text: Vec<u8>,
    lines: usize,
    kind: Kind,
    /// A Python traceback's final line arrived: nothing more joins.
    closed: bool,
    since: Instant,
}

/// Held blocks of one connection.
#[derive(Debug)]
pub struct Joiner {
    settings: Settings,
    blocks: Vec<Block>,
}

impl Joiner {
    pub fn new(settings: Settings) -> Joiner {
        Joiner {
            settings,
            blocks: Vec::new(),
        }
    }

    /// When the oldest held block began.
    pub fn oldest(&self) -> Option<Instant> {
        self.blocks.iter().map(|b| b.since).min()
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.blocks
            .iter()
            .map(|b| b.since + self.settings.timeout)
            .min()
    }

    /// Takes an enriched event, whose content has been held since `since` (now, or when the
    /// first piece of a split line arrived); returns what is ready.
    pub fn push(&mut self, e: Event, tag: Bytes, since: Instant) -> Vec<Ready> {
        let mut out = Vec::new();
        let line = e.meta.line.map(|s| e.slice(s).to_vec());
        let key = key(&e, &tag);
        let at = self.blocks.iter().position(|b| b.key == key);
        let Some(line) = line.filter(|_| !e.meta.json) else {
            // No text line to join: close whatever this stream held, pass the event on.
            if let Some(i) = at {
                let b = self.blocks.swap_remove(i);
                out.push(self.finish(b));
            }
            out.push(Ready {
                tag,
                event: e,
                built: false,
            });
            return out;
        };
        if let Some(i) = at {
            let b = &mut self.blocks[i];
            let fits = b.lines < self.settings.max_lines
                && b.text.len() + 1 + line.len() <= self.settings.max_bytes;
            if !b.closed && fits && continues(b.kind, &line) {
                b.text.push(b'\n');
                b.text.extend_from_slice(&line);
                b.lines += 1;
                if b.kind == Kind::Python && !starts_indented(&line) {
                    b.closed = true;
                }
                return out;
            }
            let b = self.blocks.swap_remove(i);
            out.push(self.finish(b));
        }
        self.blocks.push(Block {
            key,
            tag,
            kind: opens(&line),
            text: line,
            first: e,
            lines: 1,
            closed: false,
            since,
        });
        out
    }

    pub fn expire(&mut self, now: Instant) -> Vec<Ready> {
        let timeout = self.settings.timeout;
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.blocks)
            .into_iter()
            .partition(|b| now >= b.since + timeout);
        self.blocks = keep;
        old.into_iter().map(|b| self.finish(b)).collect()
    }

    /// The lines held as they arrived (the first of each block): what stays of their
    /// enrichment must stay valid while they wait.
    pub fn held_mut(&mut self) -> impl Iterator<Item = &mut Event> {
        self.blocks.iter_mut().map(|b| &mut b.first)
    }

    pub fn flush(&mut self) -> Vec<Ready> {
        std::mem::take(&mut self.blocks)
            .into_iter()
            .map(|b| self.finish(b))
            .collect()
    }

    fn finish(&self, b: Block) -> Ready {
        if b.lines == 1 {
            return Ready {
                tag: b.tag,
                event: b.first,
                built: false,
            };
        }
        Ready {
            tag: b.tag,
            event: super::rejoin(&b.first, &self.settings.line_key, &b.text),
            built: true,
        }
    }
}

/// An event the joiner lets go of, with its tag.
#[derive(Debug)]
pub struct Ready {
    pub tag: Bytes,
    pub event: Event,
    /// The joiner built this event from several lines: its record is new and needs
    /// enriching. Otherwise it is the event as it was pushed, enriched already (perhaps a
    /// split line joined before, which keeps its marks).
    pub built: bool,
}

/// Blocks are per container and stream (or per tag and stream without a container ID).
fn key(e: &Event, tag: &Bytes) -> Vec<u8> {
    let mut k = match e.meta.container_id {
        Some(s) => e.slice(s).to_vec(),
        None => tag.to_vec(),
    };
    k.push(0);
    if let Some(s) = e.meta.stream {
        k.extend_from_slice(e.slice(s));
    }
    k
}

fn starts_indented(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

fn opens(line: &[u8]) -> Kind {
    if line.starts_with(b"Traceback (most recent call last)") {
        Kind::Python
    } else if line.starts_with(b"panic: ")
        || line.starts_with(b"fatal error: ")
        || is_goroutine_header(line)
    {
        Kind::Go
    } else {
        Kind::Plain
    }
}

fn is_goroutine_header(line: &[u8]) -> bool {
    line.starts_with(b"goroutine ") && line.ends_with(b":")
}

fn continues(kind: Kind, line: &[u8]) -> bool {
    if starts_indented(line)
        || line.starts_with(b"Caused by: ")
        || line.starts_with(b"Suppressed: ")
    {
        return true;
    }
    match kind {
        Kind::Plain => false,
        // The exception line that ends the traceback, or the text between chained ones.
        Kind::Python => !line.is_empty(),
        Kind::Go => {
            line.is_empty()
                || is_goroutine_header(line)
                || line.starts_with(b"created by ")
                || line.ends_with(b")")
                || line.starts_with(b"[signal ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Span, Timestamp};
    use crate::pipeline::record;

    fn settings() -> Settings {
        Settings {
            timeout: Duration::from_millis(500),
            max_lines: 100,
            max_bytes: 1 << 16,
            line_key: Bytes::from_static(b"log"),
        }
    }

    fn event(line: &str) -> Event {
        let mut r = Vec::new();
        rmp::encode::write_map_len(&mut r, 2).unwrap();
        rmp::encode::write_str(&mut r, "source").unwrap();
        rmp::encode::write_str(&mut r, "stderr").unwrap();
        rmp::encode::write_str(&mut r, "log").unwrap();
        rmp::encode::write_str(&mut r, line).unwrap();
        let f = record::fields(&r, b"log");
        let mut e = Event::new(Timestamp::default(), 0, Bytes::from(r));
        e.meta.line = f.line.map(Span::new);
        e.meta.stream = f.source.map(Span::new);
        e
    }

    /// Feeds `lines`, flushes, and returns the emitted lines.
    fn join(lines: &[&str]) -> Vec<String> {
        let mut j = Joiner::new(settings());
        let mut out = Vec::new();
        for l in lines {
            out.extend(j.push(event(l), Bytes::from_static(b"t"), Instant::now()));
        }
        out.extend(j.flush());
        out.into_iter()
            .map(|Ready { event: e, .. }| {
                let f = record::fields(&e.record, b"log");
                String::from_utf8(e.record[f.line.unwrap()].to_vec()).unwrap()
            })
            .collect()
    }

    #[test]
    fn java_stack_trace() {
        let got = join(&[
            "Exception in thread \"main\" java.lang.IllegalStateException: boom",
            "\tat com.example.App.run(App.java:10)",
            "\tat com.example.App.main(App.java:5)",
            "Caused by: java.io.IOException: disk",
            "\t... 2 more",
            "next line",
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].lines().count(), 5);
        assert_eq!(got[1], "next line");
    }

    #[test]
    fn python_traceback_ends_at_the_exception_line() {
        let got = join(&[
            "Traceback (most recent call last):",
            "  File \"app.py\", line 3, in <module>",
            "    main()",
            "ValueError: bad",
            "INFO after",
        ]);
        assert_eq!(
            got,
            [
                "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>\n    main()\nValueError: bad",
                "INFO after"
            ]
        );
    }

    #[test]
    fn go_panic_and_node_error() {
        let got = join(&[
            "panic: runtime error: index out of range",
            "",
            "goroutine 1 [running]:",
            "main.main()",
            "\t/app/main.go:5 +0x1d",
            "Error: not found",
            "    at Object.<anonymous> (/app/index.js:1:7)",
        ]);
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with("panic:") && got[0].ends_with("+0x1d"));
        assert!(got[1].starts_with("Error: not found\n    at"));
    }

    #[test]
    fn plain_lines_pass_one_by_one_and_time_out() {
        assert_eq!(join(&["a", "b", "c"]), ["a", "b", "c"]);
        let mut j = Joiner::new(settings());
        assert!(
            j.push(event("held"), Bytes::from_static(b"t"), Instant::now())
                .is_empty()
        );
        let out = j.expire(Instant::now() + Duration::from_secs(1));
        assert_eq!(out.len(), 1);
        assert!(!out[0].event.meta.joined);
    }
}
