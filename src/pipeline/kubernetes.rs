//! Kubernetes names from tags.
//!
//! A node agent that tails `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` tags
//! events with the path, dots for slashes (`kube.var.log.containers.web-7d9_shop_app-<id>.log`).
//! Pod names, namespaces and container names are DNS labels without `_`, so the file name
//! splits on `_`, and the container ID follows the last `-`. Outrigger's own file source tags
//! its lines the same way ([`file_tag`]), so `match` patterns, Loki labels and index templates
//! treat a line read from a file like one a Fluent Bit agent forwarded.

use bytes::Bytes;

use crate::event::{Batch, K8sTag, Span};

/// The tag of lines read from the file at `path`: `kube`, then the path with dots for
/// slashes (`/var/log/containers/web_shop_app-<id>.log` becomes
/// `kube.var.log.containers.web_shop_app-<id>.log`), as Fluent Bit's `Tag kube.*` makes it.
pub fn file_tag(path: &[u8]) -> Bytes {
    let mut tag = Vec::with_capacity(5 + path.len());
    tag.extend_from_slice(b"kube");
    if path.first() != Some(&b'/') {
        tag.push(b'.');
    }
    tag.extend(path.iter().map(|&b| if b == b'/' { b'.' } else { b }));
    Bytes::from(tag)
}

/// Fills `batch.k8s` for every tag, once per tag, when any tag names a Kubernetes log file.
pub fn annotate(batch: &mut Batch) {
    batch.k8s.clear();
    // Left empty (no allocation) when no tag names a Kubernetes log file: readers treat a
    // missing entry as `None`.
    if let Some(first) = batch.tags.iter().position(|t| parse(t).is_some()) {
        batch.k8s.reserve_exact(batch.tags.len());
        batch.k8s.resize(first, None);
        batch
            .k8s
            .extend(batch.tags[first..].iter().map(|t| parse(t)));
    }
}

/// The Kubernetes names in `tag`, as ranges of it.
pub fn parse(tag: &[u8]) -> Option<K8sTag> {
    // The file name: after the last "containers." (or '/'), before the ".log" suffix.
    let name_start = memchr::memmem::rfind(tag, b"containers.")
        .map(|i| i + 11)
        .or_else(|| memchr::memrchr(b'/', tag).map(|i| i + 1))?;
    let name_end = tag
        .len()
        .checked_sub(4)
        .filter(|e| tag[*e..] == *b".log" && *e > name_start)?;
    let name = &tag[name_start..name_end];
    let first = memchr::memchr(b'_', name)?;
    let second = first + 1 + memchr::memchr(b'_', &name[first + 1..])?;
    let dash = second + 1 + memchr::memrchr(b'-', &name[second + 1..])?;
    let id = &name[dash + 1..];
    if first == 0
        || second == first + 1
        || dash == second + 1
        || id.len() != 64
        || !id.iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    let span = |a: usize, b: usize| Span::new(name_start + a..name_start + b);
    Some(K8sTag {
        pod: span(0, first),
        namespace: span(first + 1, second),
        container: span(second + 1, dash),
        container_id: span(dash + 1, name.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_container_log_file_name() {
        let id = "a".repeat(64);
        let tag = format!("kube.var.log.containers.web-7d9f_shop_app-server-{id}.log");
        let k = parse(tag.as_bytes()).unwrap();
        let s = |sp: Span| &tag[sp.start as usize..(sp.start + sp.len) as usize];
        assert_eq!(
            (s(k.pod), s(k.namespace), s(k.container), s(k.container_id)),
            ("web-7d9f", "shop", "app-server", id.as_str())
        );
        let path = format!("/var/log/containers/web_default_nginx-{id}.log");
        assert!(parse(path.as_bytes()).is_some());
    }

    #[test]
    fn a_file_tag_carries_the_names_of_its_file() {
        let id = "b".repeat(64);
        let path = format!("/var/log/containers/web-7d9f_shop_app-{id}.log");
        let tag = file_tag(path.as_bytes());
        assert_eq!(
            &tag[..],
            format!("kube.var.log.containers.web-7d9f_shop_app-{id}.log").as_bytes()
        );
        let k = parse(&tag).unwrap();
        let s = |sp: Span| &tag[sp.start as usize..(sp.start + sp.len) as usize];
        assert_eq!(
            (s(k.pod), s(k.namespace), s(k.container)),
            (&b"web-7d9f"[..], &b"shop"[..], &b"app"[..])
        );
        assert_eq!(&file_tag(b"x/y.log")[..], b"kube.x.y.log");
    }

    #[test]
    fn other_tags_have_none() {
        for tag in [
            "docker.web",
            "kube.var.log.containers.x.log",
            "containers.a_b_c-123.log",
            "",
        ] {
            assert!(parse(tag.as_bytes()).is_none(), "{tag}");
        }
    }
}
