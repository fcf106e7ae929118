//! Fluentd-style tag patterns, as in `<match>` directives.
//!
//! A tag is a dot-separated list of parts. In a pattern, `*` matches within one part
//! (`docker.*` matches `docker.web` but not `docker.web.1`), `**` matches zero or more whole
//! parts (`app.**` matches `app`, `app.a` and `app.a.b`), and `{a,b}` matches either
//! alternative (`{docker,k8s}.**`). Braces are expanded when the pattern is parsed, so matching
//! is a walk over parts.

/// A compiled pattern: one or more brace-free alternatives.
#[derive(Debug, Clone)]
pub struct Pattern {
    alternatives: Vec<Vec<Part>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// `**`: any number of whole parts.
    Any,
    /// A literal part, possibly with `*` globs inside.
    Glob(Vec<u8>),
}

impl Pattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// Unbalanced braces, an empty pattern or an empty part.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let mut alternatives = Vec::new();
        for alt in expand(text)? {
            if alt.is_empty() {
                return Err(format!("pattern `{text}` has an empty alternative"));
            }
            let mut parts = Vec::new();
            for part in alt.split('.') {
                match part {
                    "" => return Err(format!("pattern `{text}` has an empty part")),
                    "**" => parts.push(Part::Any),
                    p => parts.push(Part::Glob(p.as_bytes().to_vec())),
                }
            }
            alternatives.push(parts);
        }
        Ok(Pattern { alternatives })
    }

    /// Routing calls this once per distinct tag of a batch, not per event.
    pub fn matches(&self, tag: &[u8]) -> bool {
        let parts: Vec<&[u8]> = tag.split(|b| *b == b'.').collect();
        self.alternatives.iter().any(|alt| match_parts(alt, &parts))
    }
}

fn match_parts(pattern: &[Part], tag: &[&[u8]]) -> bool {
    match pattern.split_first() {
        None => tag.is_empty(),
        Some((Part::Any, rest)) => (0..=tag.len()).any(|skip| match_parts(rest, &tag[skip..])),
        Some((Part::Glob(g), rest)) => {
            !tag.is_empty() && glob(g, tag[0]) && match_parts(rest, &tag[1..])
        }
    }
}

/// `*` matches any run of bytes within one part.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.iter().position(|b| *b == b'*') {
        None => pattern == text,
        Some(star) => {
            let (head, tail) = (&pattern[..star], &pattern[star + 1..]);
            text.starts_with(head) && (head.len()..=text.len()).any(|i| glob(tail, &text[i..]))
        }
    }
}

/// Expands `{a,b}` groups (nesting allowed) into plain alternatives.
fn expand(text: &str) -> Result<Vec<String>, String> {
    let Some(open) = text.find('{') else {
        if text.contains('}') {
            return Err(format!("pattern `{text}` has `}}` without `{{`"));
        }
        return Ok(vec![text.to_string()]);
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let close = close.ok_or_else(|| format!("pattern `{text}` has `{{` without `}}`"))?;
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let (head, tail) = (&text[..open], &text[close + 1..]);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let choice = &text[w[0] + 1..w[1]];
        out.extend(expand(&format!("{head}{choice}{tail}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, tag: &str) -> bool {
        Pattern::parse(p).unwrap().matches(tag.as_bytes())
    }

    #[test]
    fn star_matches_one_part() {
        assert!(m("docker.*", "docker.web"));
        assert!(!m("docker.*", "docker.web.1"));
        assert!(!m("docker.*", "docker"));
        assert!(m("docker.w*b", "docker.web"));
        assert!(!m("docker.w*b", "docker.wax"));
    }

    #[test]
    fn double_star_matches_zero_or_more_parts() {
        assert!(m("app.**", "app"));
        assert!(m("app.**", "app.a"));
        assert!(m("app.**", "app.a.b"));
        assert!(!m("app.**", "apps.a"));
        assert!(m("**", "anything.at.all"));
        assert!(m("a.**.z", "a.z"));
        assert!(m("a.**.z", "a.b.c.z"));
        // A namespace's pods, by the kubernetes_logs source's tags.
        assert!(m("kube.shop.**", "kube.shop.web-1.app"));
        assert!(!m("kube.shop.**", "kube.shopping.web-1.app"));
        assert!(m("kube.*.*.istio-proxy", "kube.shop.web-1.istio-proxy"));
    }

    #[test]
    fn braces_are_alternatives() {
        assert!(m("{a,b}.**", "a.x"));
        assert!(m("{a,b}.**", "b"));
        assert!(!m("{a,b}.**", "c.x"));
        assert!(m("{docker.*,k8s.**}", "k8s.x.y"));
        assert!(m("x.{a,{b,c}}", "x.c"));
    }

    #[test]
    fn exact_and_invalid() {
        assert!(m("web", "web"));
        assert!(!m("web", "web2"));
        assert!(Pattern::parse("a.{b").is_err());
        assert!(Pattern::parse("a..b").is_err());
        assert!(Pattern::parse("a}").is_err());
        assert!(Pattern::parse("").is_err());
    }
}
