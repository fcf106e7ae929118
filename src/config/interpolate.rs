//! `${VAR}` and `${VAR:-default}` in config text, so endpoints and secrets come from the
//! environment. `$$` writes a literal `$`. Lines whose first non-blank character is `#` are
//! comments and left alone, so examples may mention `${VAR}` in prose.

/// A reference to an unset variable without a default, or a `${` that never closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub line: usize,
    pub message: String,
}

/// Replaces variables in `text` using `lookup`.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Error> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let err = |message: String| Error {
            line: i + 1,
            message,
        };
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body
                    .find('}')
                    .ok_or_else(|| err("`${` without a closing `}`".into()))?;
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(err(format!("`${{{expr}}}` is not a variable name")));
                }
                match (lookup(name).filter(|v| !v.is_empty()), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => {
                        return Err(err(format!(
                            "environment variable `{name}` is not set \
                             (write `${{{name}:-default}}` to give a default)"
                        )));
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("loki.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let t = "a = \"${HOST}:${PORT:-3100}\"\nb = \"$$HOME ${EMPTY:-x}\"\n";
        assert_eq!(
            interpolate(t, env).unwrap(),
            "a = \"loki.local:3100\"\nb = \"$HOME x\"\n"
        );
    }

    #[test]
    fn unset_variable_names_line_and_variable() {
        let e = interpolate("a = 1\nb = \"${NOPE}\"\n", env).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`NOPE` is not set"), "{}", e.message);
    }

    #[test]
    fn comments_are_not_interpolated() {
        assert_eq!(
            interpolate("# use ${NOPE}\n", env).unwrap(),
            "# use ${NOPE}\n"
        );
    }

    #[test]
    fn unclosed_and_bad_names_are_errors() {
        assert!(interpolate("a = \"${HOST\"", env).is_err());
        assert!(interpolate("a = \"${A B}\"", env).is_err());
    }
}
