//! A reader for the text exposition that [`super::Metrics::render`] writes.
//!
//! prometheus-client keeps its families behind the registry and offers no way to walk them;
//! the only view of every metric at once is the text it encodes for `/metrics`. Reading that
//! text back is what lets the OTLP metrics export ([`super::otel_metrics`]) send exactly what
//! a scrape sees, without a second definition of each metric to keep in step.
//!
//! Only what prometheus-client emits is understood: `# HELP`, `# TYPE` and `# UNIT` lines,
//! `name{label="value",...} value` samples (an exemplar or timestamp after the value is
//! ignored), label values escaped with `\\`, `\"` and `\n`, and the closing `# EOF`. It is
//! not a general Prometheus parser and does not need to be: its input is our own output.

use std::fmt;

/// A metric family's type, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Any other type (`unknown`, `info`, `summary`, ...), and samples with no `# TYPE`.
    Other,
}

/// A sample's value, integer when written as one: counters and bucket counts stay exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }
}

/// `(name, value)` pairs, in the order written.
pub type Labels = Vec<(String, String)>;

/// One `name{labels} value` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The full series name, suffix included (`…_total`, `…_bucket`).
    pub name: String,
    pub labels: Labels,
    pub value: Value,
}

/// A `# TYPE` line and the samples that follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: String,
    pub unit: String,
    pub samples: Vec<Sample>,
}

/// A line the reader does not understand; the text came from our own encoder, so this is a
/// bug on one side or the other, reported rather than guessed around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exposition line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for Error {}

/// Reads `text` up to `# EOF` (or its end) into families, in the order they appear.
///
/// # Errors
/// A sample line that is not `name{labels} value`.
pub fn parse(text: &str) -> Result<Vec<Family>, Error> {
    let mut families: Vec<Family> = Vec::new();
    // HELP comes before TYPE; held until the family it describes starts.
    let mut help: Option<(String, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| Error {
            line: i + 1,
            message,
        };
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment == "EOF" {
                break;
            }
            let (keyword, rest) = comment.split_once(' ').unwrap_or((comment, ""));
            let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            match keyword {
                "HELP" => help = Some((name.to_string(), unescape(rest))),
                "TYPE" => {
                    let kind = match rest {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        _ => Kind::Other,
                    };
                    let help = match help.take() {
                        Some((n, h)) if n == name => h,
                        _ => String::new(),
                    };
                    families.push(Family {
                        name: name.to_string(),
                        kind,
                        help,
                        unit: String::new(),
                        samples: Vec::new(),
                    });
                }
                "UNIT" => {
                    if let Some(f) = families.last_mut().filter(|f| f.name == name) {
                        f.unit = rest.to_string();
                    }
                }
                _ => {}
            }
            continue;
        }
        let sample = sample(line).map_err(err)?;
        let belongs = families
            .last()
            .is_some_and(|f| belongs_to(&sample.name, &f.name, f.kind));
        if !belongs {
            families.push(Family {
                name: sample.name.clone(),
                kind: Kind::Other,
                help: String::new(),
                unit: String::new(),
                samples: Vec::new(),
            });
        }
        families
            .last_mut()
            .expect("pushed above when missing")
            .samples
            .push(sample);
    }
    Ok(families)
}

/// Whether series `name` is part of family `family` of type `kind`.
fn belongs_to(name: &str, family: &str, kind: Kind) -> bool {
    let Some(suffix) = name.strip_prefix(family) else {
        return false;
    };
    match kind {
        Kind::Counter => matches!(suffix, "_total" | "_created"),
        Kind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count" | "_created"),
        Kind::Gauge | Kind::Other => suffix.is_empty(),
    }
}

/// `name{k="v",...} value [rest]`.
fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in `{line}`"))?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err(format!("no metric name in `{line}`"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(after)?;
        labels = parsed;
        rest = after;
    }
    let token = rest.split_whitespace().next().ok_or("no value")?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: value(token).ok_or_else(|| format!("`{token}` is not a number"))?,
    })
}

/// The labels after `{`, up to and including `}`; returns what follows.
fn label_set(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = s
            .split_once("=\"")
            .ok_or_else(|| format!("expected `key=\"value\"` at `{s}`"))?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value for `{key}`")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("unterminated label value for `{key}`")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        s = &after[end + 1..];
    }
}

fn value(token: &str) -> Option<Value> {
    if let Ok(i) = token.parse::<i64>() {
        return Some(Value::Int(i));
    }
    Some(Value::Float(match token {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => token.parse().ok()?,
    }))
}

/// HELP text escapes `\\` and `\n` (and, in OpenMetrics, `\"`).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c) => out.push(c),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn counters_and_gauges() {
        let text = "# HELP a_events Events accepted.\n# TYPE a_events counter\n\
                    a_events_total{component=\"in\"} 3\na_events_total{component=\"x\"} 0\n\
                    # HELP a_open Open now.\n# TYPE a_open gauge\na_open -2\n\
                    # HELP a_ratio R.\n# TYPE a_ratio gauge\na_ratio 0.25\n# EOF\n";
        let f = parse(text).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, "a_events");
        assert_eq!(f[0].kind, Kind::Counter);
        assert_eq!(f[0].help, "Events accepted.");
        assert_eq!(f[0].samples.len(), 2);
        assert_eq!(f[0].samples[0].name, "a_events_total");
        assert_eq!(f[0].samples[0].labels, labels(&[("component", "in")]));
        assert_eq!(f[0].samples[0].value, Value::Int(3));
        assert_eq!(f[1].kind, Kind::Gauge);
        assert_eq!(f[1].samples[0].value, Value::Int(-2));
        assert!(f[1].samples[0].labels.is_empty());
        assert_eq!(f[2].samples[0].value, Value::Float(0.25));
    }

    #[test]
    fn histograms_with_inf() {
        let text = "# HELP h_seconds Time.\n# TYPE h_seconds histogram\n# UNIT h_seconds seconds\n\
                    h_seconds_sum{component=\"out\"} 1.5\nh_seconds_count{component=\"out\"} 3\n\
                    h_seconds_bucket{component=\"out\",le=\"0.5\"} 1\n\
                    h_seconds_bucket{component=\"out\",le=\"1.0\"} 2\n\
                    h_seconds_bucket{component=\"out\",le=\"+Inf\"} 3\n# EOF\n";
        let f = parse(text).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, Kind::Histogram);
        assert_eq!(f[0].unit, "seconds");
        let s = &f[0].samples;
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].value, Value::Float(1.5));
        assert_eq!(s[1].value, Value::Int(3));
        assert_eq!(s[4].name, "h_seconds_bucket");
        assert_eq!(s[4].labels, labels(&[("component", "out"), ("le", "+Inf")]));
        assert_eq!(value("+Inf"), Some(Value::Float(f64::INFINITY)));
    }

    #[test]
    fn escaped_label_values() {
        let text = "# TYPE c counter\n\
                    c_total{component=\"a \\\"quoted\\\" \\\\ name\\nline\",reason=\"x,y}\"} 7\n";
        let f = parse(text).unwrap();
        assert_eq!(
            f[0].samples[0].labels,
            labels(&[
                ("component", "a \"quoted\" \\ name\nline"),
                ("reason", "x,y}")
            ])
        );
        assert_eq!(f[0].samples[0].value, Value::Int(7));
    }

    #[test]
    fn exemplars_and_what_follows_eof_are_ignored() {
        let text = "# TYPE h histogram\nh_bucket{le=\"1.0\"} 1 # {trace_id=\"ab\"} 0.5 1\n\
                    # EOF\nnot a sample\n";
        let f = parse(text).unwrap();
        assert_eq!(f[0].samples.len(), 1);
        assert_eq!(f[0].samples[0].value, Value::Int(1));
    }

    #[test]
    fn untyped_samples_get_their_own_family() {
        let f = parse("# TYPE c counter\nc_total 1\nstray 2\n").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].name, "stray");
        assert_eq!(f[1].kind, Kind::Other);
    }

    #[test]
    fn malformed_lines_are_errors_with_their_number() {
        let e = parse("# TYPE c counter\nc_total{a=\"x} 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse("c_total abc\n").unwrap_err();
        assert!(e.message.contains("abc"), "{e}");
        assert!(parse("lonely\n").is_err());
    }

    #[test]
    fn reads_our_own_registry() {
        let m = crate::telemetry::Metrics::new();
        m.source("in").events.inc_by(3);
        m.sink("out").request_seconds.observe(0.003);
        let f = parse(&m.render()).unwrap();
        let family = |name: &str| f.iter().find(|f| f.name == name).unwrap();
        let events = family("outrigger_source_events");
        assert_eq!(events.kind, Kind::Counter);
        assert_eq!(events.samples[0].value, Value::Int(3));
        let h = family("outrigger_sink_request_seconds");
        assert_eq!(h.kind, Kind::Histogram);
        // sum, count, 16 bounds and +Inf.
        assert_eq!(h.samples.len(), 2 + 16 + 1);
    }
}
