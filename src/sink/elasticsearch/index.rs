//! Index names: templates with `%Y %m %d %H`, checked against Elasticsearch's rules when
//! the config is read, and the data stream fields a fixed `logs-*-*` name implies.

use serde::Deserialize;

use crate::event::Timestamp;
use crate::sink::jsonl;

pub(super) const DEFAULT_INDEX: &str = "logs-outrigger-default";

/// An index name template, checked when the config is read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IndexTemplate {
    pub(super) parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Text(String),
    Year,
    Month,
    Day,
    Hour,
}

impl Default for IndexTemplate {
    fn default() -> Self {
        IndexTemplate::try_from(DEFAULT_INDEX.to_string()).expect("the default index is valid")
    }
}

impl TryFrom<String> for IndexTemplate {
    type Error = String;

    /// Parses `%` patterns and applies Elasticsearch's index name rules (lowercase; none of
    /// `\ / * ? " < > | , # :`, space or control characters; not starting with `-`, `_`, `+`
    /// or `.`; at most 255 bytes).
    fn try_from(text: String) -> Result<IndexTemplate, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut len = 0;
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some('Y') => (Part::Year, 4),
                Some('m') => (Part::Month, 2),
                Some('d') => (Part::Day, 2),
                Some('H') => (Part::Hour, 2),
                Some(other) => {
                    return Err(format!(
                        "index `{text}`: unknown pattern `%{other}`, expected %Y, %m, %d, %H or %%"
                    ));
                }
                None => return Err(format!("index `{text}`: `%` at the end")),
            };
            if !lit.is_empty() {
                len += lit.len();
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            len += part.1;
            parts.push(part.0);
        }
        if !lit.is_empty() {
            len += lit.len();
            parts.push(Part::Text(lit));
        }
        let literal: String = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                _ => "0",
            })
            .collect();
        let bad = |why: &str| Err(format!("index `{text}`: {why}"));
        if literal.is_empty() {
            return bad("must not be empty");
        }
        if len > 255 {
            return bad("longer than 255 bytes");
        }
        if literal.starts_with(['-', '_', '+', '.']) {
            return bad("must not start with `-`, `_`, `+` or `.`");
        }
        if literal.chars().any(char::is_uppercase) {
            return bad("must be lowercase");
        }
        if let Some(c) = literal.chars().find(|c| {
            matches!(
                c,
                '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ',' | '#' | ':' | ' '
            ) || c.is_control()
        }) {
            return bad(&format!("must not contain {c:?}"));
        }
        Ok(IndexTemplate { parts })
    }
}

impl IndexTemplate {
    /// The name when it has no date patterns.
    pub(super) fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// How many seconds one rendered name lasts: an hour with `%H`, a day with only dates.
    pub(super) fn period(&self) -> i64 {
        if self.parts.contains(&Part::Hour) {
            3600
        } else if self.parts.iter().any(|p| !matches!(p, Part::Text(_))) {
            86_400
        } else {
            i64::MAX
        }
    }

    /// Appends the name for an event at `secs` (UTC).
    pub(super) fn render(&self, out: &mut Vec<u8>, secs: i64) {
        let mut stamp = Vec::with_capacity(32);
        jsonl::TimeCache::default().write(&mut stamp, Timestamp { secs, nanos: 0 });
        // RFC 3339: YYYY-MM-DDTHH…
        for p in &self.parts {
            out.extend_from_slice(match p {
                Part::Text(t) => t.as_bytes(),
                Part::Year => &stamp[0..4],
                Part::Month => &stamp[5..7],
                Part::Day => &stamp[8..10],
                Part::Hour => &stamp[11..13],
            });
        }
    }
}

/// `,"data_stream.type":"logs","data_stream.dataset":…,"data_stream.namespace":…` when
/// `index` is a fixed name in the `logs-<dataset>-<namespace>` scheme: the built-in template
/// maps these as `constant_keyword`, and ECS wants them to match the name. Empty otherwise.
pub(super) fn data_stream_fields(index: &IndexTemplate) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(name) = index.fixed() else {
        return out;
    };
    let parts: Vec<&str> = name.split('-').collect();
    let ["logs", dataset, namespace] = parts.as_slice() else {
        return out;
    };
    if !dataset.is_empty() && !namespace.is_empty() {
        for (k, v) in [
            ("data_stream.type", "logs"),
            ("data_stream.dataset", dataset),
            ("data_stream.namespace", namespace),
        ] {
            out.push(b',');
            jsonl::string(&mut out, k.as_bytes());
            out.push(b':');
            jsonl::string(&mut out, v.as_bytes());
        }
    }
    out
}
