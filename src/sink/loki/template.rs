//! Label and structured-metadata templates: `{container.name}`, `{a|b}`, static text, and
//! the checks Loki would otherwise make at ingestion.

use std::collections::BTreeMap;

use crate::event::Span;
use crate::pipeline::severity::Severity;
use crate::sink::export::Ref;

/// A label or structured-metadata entry: its name and how its value is made.
#[derive(Debug, Clone)]
pub(super) struct Field {
    pub(super) name: String,
    pub(super) template: Template,
}

/// Parses each template of `map`; names must be valid Loki label names.
pub(super) fn fields(what: &str, map: &BTreeMap<String, String>) -> anyhow::Result<Vec<Field>> {
    map.iter()
        .map(|(name, template)| {
            check_name(name).map_err(|e| anyhow::anyhow!("{what}.{name}: {e}"))?;
            let template = Template::parse(template)
                .map_err(|e| anyhow::anyhow!("{what}.{name}: template `{template}`: {e}"))?;
            Ok(Field {
                name: name.clone(),
                template,
            })
        })
        .collect()
}

/// Loki's (Prometheus's) label names: `[a-zA-Z_][a-zA-Z0-9_]*`, `__` reserved.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!(
            "`{name}` is not a valid Loki label name ([a-zA-Z_][a-zA-Z0-9_]*; write `k8s.pod.name` as `k8s_pod_name`)"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "`{name}`: names starting with `__` are reserved by Loki"
        ));
    }
    Ok(())
}

/// An event attribute a template can name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attr {
    TraceId,
    SpanId,
    TraceFlags,
    Severity,
    SeverityText,
    SeverityNumber,
    ContainerId,
    ContainerName,
    LogIostream,
    K8sPod,
    K8sNamespace,
    K8sContainer,
    Tag,
    /// A static resource attribute (`[enrich.resource]`).
    Resource(Box<[u8]>),
}

impl Attr {
    pub(super) fn from_name(name: &str) -> Attr {
        match name {
            "trace_id" => Attr::TraceId,
            "span_id" => Attr::SpanId,
            "trace_flags" => Attr::TraceFlags,
            "severity" => Attr::Severity,
            "severity_text" => Attr::SeverityText,
            "severity_number" => Attr::SeverityNumber,
            "container.id" => Attr::ContainerId,
            "container.name" => Attr::ContainerName,
            "log.iostream" => Attr::LogIostream,
            "k8s.pod.name" => Attr::K8sPod,
            "k8s.namespace.name" => Attr::K8sNamespace,
            "k8s.container.name" => Attr::K8sContainer,
            "tag" => Attr::Tag,
            other => Attr::Resource(other.as_bytes().into()),
        }
    }

    /// Appends the attribute's value for `r` (nothing when it has none).
    pub(super) fn render(&self, out: &mut Vec<u8>, r: Ref<'_>) {
        let (b, e) = (r.batch, r.event);
        let m = &e.meta;
        let tag = b.tag(e);
        let k8s = b.k8s.get(e.tag as usize).copied().flatten();
        let in_tag = |s: Span| {
            tag.get(s.start as usize..(s.start + s.len) as usize)
                .unwrap_or_default()
        };
        match self {
            Attr::TraceId => {
                if let Some(t) = m.trace_id {
                    hex(out, &t);
                }
            }
            Attr::SpanId => {
                if let Some(s) = m.span_id {
                    hex(out, &s);
                }
            }
            Attr::TraceFlags => {
                if let Some(f) = m.trace_flags {
                    out.extend_from_slice(itoa::Buffer::new().format(f).as_bytes());
                }
            }
            Attr::Severity => out.extend_from_slice(Severity(m.severity).text().as_bytes()),
            Attr::SeverityText => match m.severity_text {
                Some(s) => out.extend_from_slice(e.slice(s)),
                None => out.extend_from_slice(Severity(m.severity).text().as_bytes()),
            },
            Attr::SeverityNumber => {
                if m.severity > 0 {
                    out.extend_from_slice(itoa::Buffer::new().format(m.severity).as_bytes());
                }
            }
            Attr::ContainerId => match (m.container_id, k8s) {
                (Some(s), _) => out.extend_from_slice(e.slice(s)),
                (None, Some(k)) => out.extend_from_slice(in_tag(k.container_id)),
                (None, None) => {}
            },
            Attr::ContainerName => {
                if let Some(s) = m.container_name {
                    out.extend_from_slice(e.slice(s));
                }
            }
            Attr::LogIostream => {
                if let Some(s) = m.stream {
                    out.extend_from_slice(e.slice(s));
                }
            }
            // From the tag (Fluent Bit's and the kubelet's file names), or as the source gave
            // them (the kubernetes_logs source, from the path).
            Attr::K8sPod => match k8s {
                Some(k) => out.extend_from_slice(in_tag(k.pod)),
                None => resource(out, b, b"k8s.pod.name"),
            },
            Attr::K8sNamespace => match k8s {
                Some(k) => out.extend_from_slice(in_tag(k.namespace)),
                None => resource(out, b, b"k8s.namespace.name"),
            },
            Attr::K8sContainer => match k8s {
                Some(k) => out.extend_from_slice(in_tag(k.container)),
                None => resource(out, b, b"k8s.container.name"),
            },
            Attr::Tag => out.extend_from_slice(tag),
            Attr::Resource(name) => resource(out, b, name),
        }
    }
}

/// Appends the value of resource attribute `name` of batch `b`, if it has one.
fn resource(out: &mut Vec<u8>, b: &crate::event::Batch, name: &[u8]) {
    if let Some((_, v)) = b.resource.iter().find(|(k, _)| k[..] == name[..]) {
        out.extend_from_slice(v);
    }
}

pub(super) fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
}

/// A label or metadata value: literal text and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    Text(String),
    /// The first of these that has a value.
    Attr(Vec<Attr>),
}

// === impl Template ===

impl Template {
    /// Parses `text`: `{name}` or `{a|b}` for attributes, `{{` and `}}` for braces.
    pub(super) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let (brace, after) = (&rest[i..i + 1], &rest[i + 1..]);
            if let Some(after) = after.strip_prefix(brace) {
                literal.push_str(brace);
                rest = after;
                continue;
            }
            if brace == "}" {
                return Err("unmatched `}` (write `}}` for a literal brace)".into());
            }
            let end = after
                .find(['{', '}'])
                .filter(|e| after.as_bytes()[*e] == b'}')
                .ok_or("unclosed `{` (write `{{` for a literal brace)")?;
            let alternatives = after[..end]
                .split('|')
                .map(|name| match name.trim() {
                    "" => Err("empty attribute name".to_string()),
                    name => Ok(Attr::from_name(name)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Part::Attr(alternatives));
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Appends the value for `r`.
    pub(super) fn render(&self, out: &mut Vec<u8>, r: Ref<'_>) {
        for p in &self.parts {
            match p {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Attr(alternatives) => {
                    let start = out.len();
                    for a in alternatives {
                        a.render(out, r);
                        if out.len() > start {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// The name of an attribute used here that is different for nearly every request.
    pub(super) fn unbounded(&self) -> Option<&'static str> {
        self.parts.iter().find_map(|p| match p {
            Part::Attr(a) if a.contains(&Attr::TraceId) => Some("trace_id"),
            Part::Attr(a) if a.contains(&Attr::SpanId) => Some("span_id"),
            _ => None,
        })
    }
}
