//! Log levels into OpenTelemetry severity numbers.
//!
//! Applications write their level in many dialects: `"level":"warn"`, `"severity":"WARNING"`,
//! pino's `"level":40`, a syslog `3`, a klog `W1127 …` prefix, nginx's `[warn]`, logfmt's
//! `level=warn`. This module maps each to an OTLP `SeverityNumber` ([`Severity`]), following the
//! OpenTelemetry logs data model, appendix B (condensed in the shared reference `otlp-logs.md`
//! §5; <https://opentelemetry.io/docs/specs/otel/logs/data-model-appendix/>).
//!
//! What comes in: a level value the JSON walker took out of a JSON line ([`from_text`],
//! [`from_name`], [`from_number`]), or a whole plain-text line ([`scan_text`]). What goes out: a
//! [`Severity`], or `None` when the input names no level. Everything here runs once per log line
//! at about a million lines a second: byte slices in, a `Copy` value out, no allocation, no
//! regex, and no input makes it panic.
//!
//! # Names
//!
//! A source level that stands for a whole OTLP range maps to the lowest number of the range.
//! Names are matched without regard to ASCII case, after trimming ASCII whitespace.
//!
//! | names | number |
//! |---|---|
//! | `trace`, `finest` (JUL), `verbose`, `vrb` (Serilog), `trce` (log15) | 1 TRACE |
//! | `debug`, `dbg`, `dbug` (log15), `finer` (JUL) | 5 DEBUG |
//! | `fine` (JUL) | 6 DEBUG2 |
//! | `config` (JUL) | 7 DEBUG3 |
//! | `info`, `inf`, `information`, `informational` | 9 INFO |
//! | `notice` | 10 INFO2 |
//! | `warn`, `warning`, `wrn` | 13 WARN |
//! | `error`, `err`, `eror` (log15), `severe` (JUL) | 17 ERROR |
//! | `crit`, `critical`, `dpanic` (zap) | 18 ERROR2 |
//! | `alert` | 19 ERROR3 |
//! | `fatal`, `ftl` (Serilog), `panic`, `emerg`, `emergency` | 21 FATAL |
//! | OpenTelemetry short names `TRACE2` … `FATAL4` ([`Severity::text`]) | their own number |
//!
//! Where sources disagree, one rule for all, since a bare name does not say which framework
//! wrote it (the original string belongs in the record's `severity_text` anyway):
//!
//! - `critical` is ERROR2, syslog's Critical, although the appendix makes .NET's
//!   `LogLevel.Critical` FATAL.
//! - `panic` is FATAL, as in the appendix's row of usual text levels (logrus and zerolog rank
//!   panic above fatal), not zap's ERROR3. `dpanic` exists only in zap and keeps zap's ERROR2.
//! - Single letters (glog, klog, Android logcat) are accepted by [`from_text`] only, and only
//!   `D`, `I`, `W`, `E`, `F`: loggers agree on those. `V`, `T`, `C`, `N` and `A` are rejected
//!   (`T` is trace or true, `C` critical or config, `A` assert or alert).
//!
//! # Numbers
//!
//! [`from_number`]: 0..=7 are syslog severities (0 Emergency … 7 Debug); 10, 20, 30, 40, 50, 60
//! are bunyan/pino (trace, debug, info, warn, error, fatal); every other value is `None`.
//! Python's `logging` numbers (10 DEBUG … 50 CRITICAL) collide with pino's and are not
//! supported: Python JSON formatters also write `levelname`, which carries the name. logback's
//! `level_value` (10000 …) is not a level either.
//!
//! # Plain-text lines
//!
//! [`scan_text`] documents the forms it recognizes and where it looks.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};

/// An OTLP `SeverityNumber`: 0 unspecified, 1–4 TRACE, 5–8 DEBUG, 9–12 INFO, 13–16 WARN,
/// 17–20 ERROR, 21–24 FATAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Severity(pub u8);

// === impl Severity ===

impl Severity {
    /// No level known (`SEVERITY_NUMBER_UNSPECIFIED`).
    pub const UNSPECIFIED: Severity = Severity(0);
    pub const TRACE: Severity = Severity(1);
    pub const DEBUG: Severity = Severity(5);
    /// JUL `FINE`.
    pub const DEBUG2: Severity = Severity(6);
    /// JUL `CONFIG`.
    pub const DEBUG3: Severity = Severity(7);
    pub const INFO: Severity = Severity(9);
    /// syslog Notice.
    pub const INFO2: Severity = Severity(10);
    pub const WARN: Severity = Severity(13);
    pub const ERROR: Severity = Severity(17);
    /// syslog Critical, zap DPanic.
    pub const ERROR2: Severity = Severity(18);
    /// syslog Alert.
    pub const ERROR3: Severity = Severity(19);
    pub const FATAL: Severity = Severity(21);

    /// The OpenTelemetry short name: `TRACE`, `TRACE2`, … `FATAL4`.
    ///
    /// 0 (unspecified) and numbers above 24 (not valid OTLP) give the empty string, which is what
    /// an OTLP record carries in `severity_text` when no level is known.
    pub fn text(self) -> &'static str {
        SHORT_NAMES.get(usize::from(self.0)).copied().unwrap_or("")
    }
}

const SHORT_NAMES: [&str; 25] = [
    "", "TRACE", "TRACE2", "TRACE3", "TRACE4", "DEBUG", "DEBUG2", "DEBUG3", "DEBUG4", "INFO",
    "INFO2", "INFO3", "INFO4", "WARN", "WARN2", "WARN3", "WARN4", "ERROR", "ERROR2", "ERROR3",
    "ERROR4", "FATAL", "FATAL2", "FATAL3", "FATAL4",
];

/// The longest name [`from_name`] knows: `informational`.
const MAX_NAME: usize = 13;

// === level values ===

/// The severity of a level value taken from a dedicated level field (a JSON `"level"` string, a
/// logfmt `level=` value).
///
/// Accepts everything [`from_name`] does, the single letters `D`, `I`, `W`, `E`, `F` (any case),
/// and decimal strings of up to three digits, which go through [`from_number`] (`"3"` is syslog
/// Error, `"30"` pino info). Surrounding ASCII whitespace is ignored.
pub fn from_text(v: &[u8]) -> Option<Severity> {
    let v = v.trim_ascii();
    match v {
        [letter] if !letter.is_ascii_digit() => match letter.to_ascii_uppercase() {
            b'D' => Some(Severity::DEBUG),
            b'I' => Some(Severity::INFO),
            b'W' => Some(Severity::WARN),
            b'E' => Some(Severity::ERROR),
            b'F' => Some(Severity::FATAL),
            _ => None,
        },
        [_, ..] if v.iter().all(u8::is_ascii_digit) => {
            if v.len() > 3 {
                return None;
            }
            let n = v.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
            from_number(n)
        }
        _ => from_name(v),
    }
}

/// The severity of a level *name* (the table in the module docs); no single letters, no
/// numbers.
///
/// For fields that are levels only sometimes (Datadog's `status`, a bracketed word in a text
/// line), where `"E"` or `"3"` more likely mean something else.
pub fn from_name(v: &[u8]) -> Option<Severity> {
    let v = v.trim_ascii();
    let mut buf = [0u8; MAX_NAME];
    let lower = buf.get_mut(..v.len())?;
    for (l, b) in lower.iter_mut().zip(v) {
        *l = b.to_ascii_lowercase();
    }
    let severity = match &*lower {
        b"trace" | b"finest" | b"verbose" | b"vrb" | b"trce" => Severity::TRACE,
        b"debug" | b"dbg" | b"dbug" | b"finer" => Severity::DEBUG,
        b"fine" => Severity::DEBUG2,
        b"config" => Severity::DEBUG3,
        b"info" | b"inf" | b"information" | b"informational" => Severity::INFO,
        b"notice" => Severity::INFO2,
        b"warn" | b"warning" | b"wrn" => Severity::WARN,
        b"error" | b"err" | b"eror" | b"severe" => Severity::ERROR,
        b"crit" | b"critical" | b"dpanic" => Severity::ERROR2,
        b"alert" => Severity::ERROR3,
        b"fatal" | b"ftl" | b"panic" | b"emerg" | b"emergency" => Severity::FATAL,
        _ => return short_name(lower),
    };
    Some(severity)
}

/// `trace2` … `fatal4` (already lowercase): the OpenTelemetry short names with a number, so that
/// `from_name(s.text())` gives `s` back.
fn short_name(lower: &[u8]) -> Option<Severity> {
    let (&digit, base) = lower.split_last()?;
    if !(b'2'..=b'4').contains(&digit) {
        return None;
    }
    let first = match base {
        b"trace" => 1,
        b"debug" => 5,
        b"info" => 9,
        b"warn" => 13,
        b"error" => 17,
        b"fatal" => 21,
        _ => return None,
    };
    Some(Severity(first + (digit - b'1')))
}

/// The severity of a numeric level: syslog 0..=7, or bunyan/pino 10, 20, …, 60.
///
/// The two scales do not overlap, so the value alone decides: 0 Emergency → FATAL, 1 Alert →
/// ERROR3, 2 Critical → ERROR2, 3 Error → ERROR, 4 Warning → WARN, 5 Notice → INFO2,
/// 6 Informational → INFO, 7 Debug → DEBUG; 10 trace, 20 debug, 30 info, 40 warn, 50 error,
/// 60 fatal. Anything else (negative, 8, 35, 100, Python's and logback's scales) is `None`.
pub fn from_number(n: i64) -> Option<Severity> {
    let severity = match n {
        0 => Severity::FATAL,
        1 => Severity::ERROR3,
        2 => Severity::ERROR2,
        3 => Severity::ERROR,
        4 => Severity::WARN,
        5 => Severity::INFO2,
        6 => Severity::INFO,
        7 => Severity::DEBUG,
        10 => Severity::TRACE,
        20 => Severity::DEBUG,
        30 => Severity::INFO,
        40 => Severity::WARN,
        50 => Severity::ERROR,
        60 => Severity::FATAL,
        _ => return None,
    };
    Some(severity)
}

// === plain-text lines ===

/// How far into a line [`scan_text`] looks. Loggers put the level in the prefix (timestamp,
/// level, logger, message); looking further would mostly find words inside messages, and
/// bounds the cost of lines that carry no level at all.
pub const SCAN_LIMIT: usize = 128;

/// The longest logfmt level value considered (quotes excluded).
const MAX_VALUE: usize = 16;

/// The longest `module` in an Apache-style `[module:level]`.
const MAX_BRACKET: usize = 24;

/// What a pattern found by the scanner is.
#[derive(Debug, Clone, Copy)]
enum Token {
    /// An uppercase level word; counts only as a whole word.
    Word(Severity),
    /// `[`: perhaps `[warn]` or `[core:warn]`.
    Bracket,
    /// A logfmt key with its `=`; its value decides.
    Key,
}

const TOKENS: &[(&str, Token)] = &[
    ("TRACE", Token::Word(Severity::TRACE)),
    ("TRCE", Token::Word(Severity::TRACE)),
    ("VRB", Token::Word(Severity::TRACE)),
    ("DEBUG", Token::Word(Severity::DEBUG)),
    ("DBUG", Token::Word(Severity::DEBUG)),
    ("DBG", Token::Word(Severity::DEBUG)),
    ("INFO", Token::Word(Severity::INFO)),
    ("INF", Token::Word(Severity::INFO)),
    ("NOTICE", Token::Word(Severity::INFO2)),
    ("WARN", Token::Word(Severity::WARN)),
    ("WARNING", Token::Word(Severity::WARN)),
    ("WRN", Token::Word(Severity::WARN)),
    ("ERROR", Token::Word(Severity::ERROR)),
    ("ERR", Token::Word(Severity::ERROR)),
    ("EROR", Token::Word(Severity::ERROR)),
    ("SEVERE", Token::Word(Severity::ERROR)),
    ("CRIT", Token::Word(Severity::ERROR2)),
    ("CRITICAL", Token::Word(Severity::ERROR2)),
    ("FATAL", Token::Word(Severity::FATAL)),
    ("FTL", Token::Word(Severity::FATAL)),
    ("PANIC", Token::Word(Severity::FATAL)),
    ("[", Token::Bracket),
    ("level=", Token::Key),
    ("lvl=", Token::Key),
    ("severity=", Token::Key),
    ("log.level=", Token::Key),
];

/// One automaton for every token, so a line is scanned once. Leftmost-longest: `WARNING` wins
/// over `WARN`, and `log.level=` over the `level=` inside it.
static SCANNER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(TOKENS.iter().map(|&(pattern, _)| pattern))
        .expect("the level patterns are a small fixed set")
});

/// Finds the level of a plain-text (non-JSON) log line.
///
/// A klog/glog header at the very start wins: `I`, `W`, `E` or `F`, four digits forming a
/// plausible month and day, then a space (`E1127 12:00:00.000000 1 reflector.go:138] …`).
/// Otherwise the earliest of these tokens in the first [`SCAN_LIMIT`] bytes decides:
///
/// - an uppercase level word — `TRACE`, `DEBUG`, `INFO`, `NOTICE`, `WARN`, `WARNING`, `ERROR`,
///   `ERR`, `SEVERE`, `CRIT`, `CRITICAL`, `FATAL`, `PANIC`, Serilog's `VRB` `DBG` `INF` `WRN`
///   `FTL`, log15's `TRCE` `DBUG` `EROR` — standing alone: the bytes on either side are not
///   ASCII letters, digits, `_` or non-ASCII, and the next byte is not `=` (so
///   `ERRORS_TOTAL`, `INFORMATION_SCHEMA`, `NO_ERROR` and an environment dump's `DEBUG=false`
///   do not count). Lowercase and capitalized words (`error`, `Error:`) never count: in
///   messages they are prose;
/// - a level name in brackets, any case: `[error]` (nginx, structlog), `[WARN]`, and Apache's
///   `[module:level]` (`[proxy_fcgi:error]`), read with [`from_name`];
/// - a logfmt key `level=`, `lvl=`, `severity=` or `log.level=` (lowercase keys, not preceded
///   by a key character such as `.` or `_`), whose value, bare or double-quoted, is read with
///   [`from_text`]: `level=warning`, `lvl=eror`, `severity=ERROR`, `level="info"`.
///
/// A token must lie within the first [`SCAN_LIMIT`] bytes (a bracketed name or a logfmt value
/// may run past it). A token that does not name a level (`[main]`, `level=high`) is skipped and
/// the scan goes on. The first token wins, so `INFO request failed: ERROR 502` is INFO.
pub fn scan_text(line: &[u8]) -> Option<Severity> {
    if let Some(severity) = klog_header(line) {
        return Some(severity);
    }
    let window = &line[..line.len().min(SCAN_LIMIT)];
    SCANNER.find_iter(window).find_map(|m| {
        let (start, end) = (m.start(), m.end());
        match TOKENS[m.pattern().as_usize()].1 {
            Token::Word(severity) => {
                let before = start.checked_sub(1).map(|i| line[i]);
                let alone = !before.is_some_and(is_word_byte)
                    && !line.get(end).is_some_and(|&b| is_word_byte(b) || b == b'=');
                alone.then_some(severity)
            }
            Token::Bracket => bracketed(&line[end..]),
            Token::Key => {
                let before = start.checked_sub(1).map(|i| line[i]);
                if before.is_some_and(|b| is_word_byte(b) || b == b'.' || b == b'-') {
                    return None;
                }
                logfmt_value(&line[end..])
            }
        }
    })
}

/// Bytes that continue a word: a level word next to one of them is part of an identifier.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || !b.is_ascii()
}

/// klog/glog: `Lmmdd ` at the start of the line.
fn klog_header(line: &[u8]) -> Option<Severity> {
    let &[letter, m1, m0, d1, d0, b' ', ..] = line else {
        return None;
    };
    let severity = match letter {
        b'I' => Severity::INFO,
        b'W' => Severity::WARN,
        b'E' => Severity::ERROR,
        b'F' => Severity::FATAL,
        _ => return None,
    };
    let month = two_digits(m1, m0)?;
    let day = two_digits(d1, d0)?;
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(severity)
}

fn two_digits(tens: u8, ones: u8) -> Option<u8> {
    if tens.is_ascii_digit() && ones.is_ascii_digit() {
        Some((tens - b'0') * 10 + (ones - b'0'))
    } else {
        None
    }
}

/// What follows a `[`: `name]` or `module:name]`.
fn bracketed(rest: &[u8]) -> Option<Severity> {
    let is_name = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let len = rest
        .iter()
        .take(MAX_BRACKET + 1)
        .position(|b| !is_name(b))?;
    let (name, tail) = rest.split_at(len);
    match tail {
        [b']', ..] => from_name(name),
        [b':', tail @ ..] if !name.is_empty() => {
            let len = tail.iter().take(MAX_NAME + 1).position(|b| !is_name(b))?;
            match tail.get(len) {
                Some(b']') => from_name(&tail[..len]),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A logfmt value after `key=`: bare (up to whitespace, `,` or `;`) or double-quoted.
fn logfmt_value(rest: &[u8]) -> Option<Severity> {
    let value = if let Some(quoted) = rest.strip_prefix(b"\"") {
        let end = memchr::memchr(b'"', &quoted[..quoted.len().min(MAX_VALUE + 1)])?;
        &quoted[..end]
    } else {
        let bounded = &rest[..rest.len().min(MAX_VALUE + 1)];
        match bounded
            .iter()
            .position(|b| b.is_ascii_whitespace() || matches!(b, b',' | b';'))
        {
            Some(end) => &bounded[..end],
            None if rest.len() <= MAX_VALUE => rest,
            None => return None,
        }
    };
    from_text(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sev(n: u8) -> Option<Severity> {
        Some(Severity(n))
    }

    #[test]
    fn short_names() {
        assert_eq!(Severity(0).text(), "");
        assert_eq!(Severity(1).text(), "TRACE");
        assert_eq!(Severity(4).text(), "TRACE4");
        assert_eq!(Severity(9).text(), "INFO");
        assert_eq!(Severity(10).text(), "INFO2");
        assert_eq!(Severity(17).text(), "ERROR");
        assert_eq!(Severity(24).text(), "FATAL4");
        assert_eq!(Severity(25).text(), "");
        assert_eq!(Severity(255).text(), "");
    }

    #[test]
    fn short_names_read_back() {
        for n in 1..=24 {
            let s = Severity(n);
            assert_eq!(from_name(s.text().as_bytes()), Some(s), "{}", s.text());
            assert_eq!(from_text(s.text().to_lowercase().as_bytes()), Some(s));
        }
        for bad in ["trace1", "trace5", "info0", "notice2", "warn22", "2"] {
            assert_eq!(from_name(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn names() {
        let cases: &[(&str, u8)] = &[
            ("trace", 1),
            ("TRACE", 1),
            ("finest", 1),
            ("Verbose", 1),
            ("VRB", 1),
            ("trce", 1),
            ("debug", 5),
            ("DBG", 5),
            ("dbug", 5),
            ("FINER", 5),
            ("fine", 6),
            ("CONFIG", 7),
            ("info", 9),
            ("Information", 9),
            ("informational", 9),
            ("INF", 9),
            ("notice", 10),
            ("NOTICE", 10),
            ("warn", 13),
            ("Warning", 13),
            ("WRN", 13),
            ("error", 17),
            ("err", 17),
            ("EROR", 17),
            ("SEVERE", 17),
            ("crit", 18),
            ("Critical", 18),
            ("dpanic", 18),
            ("alert", 19),
            ("fatal", 21),
            ("FTL", 21),
            ("panic", 21),
            ("emerg", 21),
            ("EMERGENCY", 21),
            (" info ", 9),
            ("\twarn\n", 13),
        ];
        for &(name, n) in cases {
            assert_eq!(from_name(name.as_bytes()), sev(n), "from_name({name:?})");
            assert_eq!(from_text(name.as_bytes()), sev(n), "from_text({name:?})");
        }
    }

    #[test]
    fn not_names() {
        for bad in [
            "",
            " ",
            "information_schema",
            "informationalx",
            "errors",
            "warnings",
            "infos",
            "off",
            "all",
            "ok",
            "success",
            "high",
            "in fo",
            "verbose-ish",
            "ＩＮＦＯ",
            "info\0",
            "a-very-long-level-name-indeed",
        ] {
            assert_eq!(from_name(bad.as_bytes()), None, "from_name({bad:?})");
            assert_eq!(from_text(bad.as_bytes()), None, "from_text({bad:?})");
        }
        assert_eq!(from_name(&[0xff, 0xfe]), None);
        assert_eq!(from_text(&[0xff]), None);
    }

    #[test]
    fn single_letters_only_in_level_fields() {
        for (letter, n) in [
            ("D", 5),
            ("i", 9),
            ("I", 9),
            ("W", 13),
            ("e", 17),
            ("F", 21),
        ] {
            assert_eq!(from_text(letter.as_bytes()), sev(n), "{letter}");
            assert_eq!(from_name(letter.as_bytes()), None, "{letter}");
        }
        for bad in ["V", "T", "C", "N", "A", "x", "-", " "] {
            assert_eq!(from_text(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers() {
        let cases: &[(i64, u8)] = &[
            (0, 21),
            (1, 19),
            (2, 18),
            (3, 17),
            (4, 13),
            (5, 10),
            (6, 9),
            (7, 5),
            (10, 1),
            (20, 5),
            (30, 9),
            (40, 13),
            (50, 17),
            (60, 21),
        ];
        for &(number, n) in cases {
            assert_eq!(from_number(number), sev(n), "from_number({number})");
            let text = number.to_string();
            assert_eq!(from_text(text.as_bytes()), sev(n), "from_text({text:?})");
            assert_eq!(from_name(text.as_bytes()), None, "from_name({text:?})");
        }
        for bad in [
            -1,
            8,
            9,
            11,
            15,
            35,
            70,
            100,
            20000,
            30000,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(from_number(bad), None, "{bad}");
        }
        assert_eq!(from_text(b"03"), sev(17));
        assert_eq!(from_text(b" 30 "), sev(9));
        for bad in ["-1", "+3", "3.0", "30000", "99999999999999999999999", "3a"] {
            assert_eq!(from_text(bad.as_bytes()), None, "{bad:?}");
        }
    }

    /// Plain-text lines and the level each carries (0: none).
    const TEXT_LINES: &[(&str, u8)] = &[
        // Uppercase words.
        (
            "2023-11-14T22:13:20.050Z INFO [checkout] auth/jwt.go:57: ok",
            9,
        ),
        (
            "2023-11-14 22:13:20.050  WARN 1 --- [exec-7] c.e.Orders : slow",
            13,
        ),
        ("WARNING:root:disk almost full", 13),
        ("ERROR: relation \"users\" does not exist", 17),
        (
            "2023-11-14 22:13:20 UTC [42] FATAL:  password authentication failed",
            21,
        ),
        ("2023-11-14 22:13:20 UTC [42] PANIC:  could not write", 21),
        ("2023-11-14 22:13:20 UTC [42] NOTICE:  table created", 10),
        ("SEVERE: Servlet.service() threw exception", 17),
        ("npm ERR! code ELIFECYCLE", 17),
        ("E, [2023-11-14T22:13:20.123456 #1] ERROR -- : boom", 17),
        ("[22:13:20 WRN] Retrying request", 13),
        ("[22:13:20 DBG] cache hit", 5),
        ("[22:13:20 FTL] host terminated", 21),
        ("INFO [11-14|22:13:20.123] Imported new chain segment", 9),
        ("EROR[11-14|22:13:20.123] Snapshot extension failed", 17),
        (
            "2023-11-14 22:13:20,123 - app - CRITICAL - out of memory",
            18,
        ),
        ("2023-11-14 22:13:20,123 - app - CRIT - out of memory", 18),
        ("TRACE entering handler", 1),
        ("|DEBUG| retry 1", 5),
        ("2023-11-14 INFO request failed with ERROR 502", 9),
        // Brackets.
        ("2023/11/14 22:13:20 [error] 29#29: *1 connect() failed", 17),
        (
            "2023/11/14 22:13:20 [notice] 1#1: start worker processes",
            10,
        ),
        ("2023/11/14 22:13:20 [emerg] 1#1: bind() failed", 21),
        ("2023-11-14T22:13:20.050Z [info] app.worker: task done", 9),
        (
            "[Tue Nov 14 22:13:20 2023] [proxy_fcgi:error] [pid 12] AH01071",
            17,
        ),
        (
            "[Tue Nov 14 22:13:20 2023] [mpm_event:notice] [pid 1] resuming",
            10,
        ),
        ("[ERROR] 2023-11-14 something broke", 17),
        ("[Warning] disk almost full", 13),
        ("[main] [crit] worker died", 18),
        // logfmt.
        (
            "time=\"2023-11-14T22:13:20Z\" level=warning msg=\"retrying\"",
            13,
        ),
        ("time=2023-11-14T22:13:20.123Z level=INFO msg=hello", 9),
        ("t=2023-11-14T22:13:20+0000 lvl=eror msg=\"db down\"", 17),
        ("severity=ERROR component=db", 17),
        ("log.level=debug service=cart", 5),
        ("ts=1 level=\"info\" msg=x", 9),
        ("ts=1 caller=main.go:12 level=error", 17),
        ("level=30 msg=pino-ish", 9),
        ("level=E msg=letter", 17),
        ("level=warn, msg=comma", 13),
        ("level=high msg=\"then INFO\"", 9),
        // klog / glog.
        (
            "E1127 12:00:00.000000       1 reflector.go:138] failed to watch",
            17,
        ),
        ("I0101 00:00:00.000000       1 main.go:1] started", 9),
        ("W1231 23:59:59.999999       1 main.go:1] slow", 13),
        ("F0615 08:00:00.000000       1 main.go:1] dying", 21),
        ("E1327 12:00:00.000000 bad month ERROR", 17),
        // No level.
        ("", 0),
        ("Listening on :8080", 0),
        ("connection error: reset by peer", 0),
        ("Error: Cannot find module 'express'", 0),
        ("SELECT * FROM INFORMATION_SCHEMA.TABLES", 0),
        ("ERRORS_TOTAL 5", 0),
        ("NO_ERROR returned", 0),
        ("XERROR MYWARN INFO2 DEBUGGER WARNINGS", 0),
        ("DEBUG=false LOG_LEVEL=info", 0),
        ("GET /api/v1/WARNINGS 200", 0),
        ("tree.level=3 depth=2", 0),
        ("sublevel=error", 0),
        ("x-level=error", 0),
        ("level=", 0),
        ("level=\"info", 0),
        ("level=informationalandmore", 0),
        ("level=\"a-very-long-quoted\"", 0),
        ("[main] started", 0),
        ("[] [:] [x:] [:error] [error", 0),
        ("I2345 is a ticket number", 0),
        ("E1127x12:00:00", 0),
        ("V1127 12:00:00.000000 1 main.go:1] verbose", 0),
        ("Information about INFOrmation", 0),
        ("ÉERROR ERRORÉ", 0),
        ("{\"level\":\"error\"}", 0),
    ];

    #[test]
    fn text_lines() {
        for &(line, n) in TEXT_LINES {
            let want = (n != 0).then_some(Severity(n));
            assert_eq!(scan_text(line.as_bytes()), want, "{line:?}");
        }
    }

    #[test]
    fn scan_looks_only_at_the_prefix() {
        let pad = "x".repeat(SCAN_LIMIT - 6);
        assert_eq!(
            scan_text(format!("{pad} ERROR").as_bytes()),
            Some(Severity::ERROR)
        );
        assert_eq!(scan_text(format!("{pad}  ERROR").as_bytes()), None);
        // The word fits the window but its neighbour outside it still counts.
        assert_eq!(scan_text(format!("{pad} ERRORS").as_bytes()), None);
        // A bracketed name or logfmt value may run past the window.
        let pad = "x".repeat(SCAN_LIMIT - 2);
        assert_eq!(
            scan_text(format!("{pad} [error]").as_bytes()),
            Some(Severity::ERROR)
        );
        let pad = "x".repeat(SCAN_LIMIT - 7);
        assert_eq!(
            scan_text(format!("{pad} level=warn").as_bytes()),
            Some(Severity::WARN)
        );
    }

    #[test]
    fn scan_survives_any_prefix_of_any_line() {
        for &(line, _) in TEXT_LINES {
            let line = line.as_bytes();
            for end in 0..=line.len() {
                let _ = scan_text(&line[..end]);
                let _ = scan_text(&line[end..]);
            }
        }
        let noise: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        for start in 0..256 {
            let _ = scan_text(&noise[start..]);
            let _ = from_text(&noise[start..start + 20]);
        }
    }
}
