//! Kubernetes names from tags.
//!
//! A node agent that tails `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` tags
//! events with the path, dots for slashes (`kube.var.log.containers.web-7d9_shop_app-<id>.log`).
//! Pod names, namespaces and container names are DNS labels without `_`, so the file name
//! splits on `_`, and the container ID follows the last `-`. Outrigger's own file source tags
//! its lines the same way ([`file_tag`]), so `match` patterns, Loki labels and index templates
//! treat a line read from a file like one a Fluent Bit agent forwarded.
//!
//! The kubelet's own tree, `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<n>.log`, is read
//! too (`kube.var.log.pods.shop_web-7d9_<uid>.app.0.log`): it gives the pod's UID and the
//! container's restart count (`n`) instead of the container ID. A pod name may hold dots
//! (it is a DNS subdomain) but no `_`; a namespace, a container name and a UID hold neither
//! dots nor `_`; so the names are found from the end.

use bytes::Bytes;

use crate::event::{Batch, K8sTag, Span};

/// The tag of lines read from the file at `path`: `kube`, then the path with dots for
/// slashes (`/var/log/containers/web_shop_app-<id>.log` becomes
/// `kube.var.log.containers.web_shop_app-<id>.log`), as Fluent Bit's `Tag kube.*` makes it.
pub fn file_tag(path: &[u8]) -> Bytes {
    path_tag(b"kube", path)
}

/// `<prefix>.<path with dots for slashes>`: the tag of lines read from the file at `path`.
pub fn path_tag(prefix: &[u8], path: &[u8]) -> Bytes {
    let mut tag = Vec::with_capacity(prefix.len() + 1 + path.len());
    tag.extend_from_slice(prefix);
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
    containers(tag).or_else(|| pods(tag))
}

/// `….<namespace>_<pod>_<uid>.<container>.<n>.log` (the kubelet's `/var/log/pods` tree).
fn pods(tag: &[u8]) -> Option<K8sTag> {
    let body = tag.strip_suffix(b".log")?;
    let dot = memchr::memrchr(b'.', body)?;
    let n = &body[dot + 1..];
    if n.is_empty() || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let c_start = memchr::memrchr(b'.', &body[..dot])? + 1;
    let container = c_start..dot;
    // `<namespace>_<pod>_<uid>` ends at the dot before the container.
    let dir_end = c_start - 1;
    let uid_sep = memchr::memrchr(b'_', &body[..dir_end])?;
    let uid = uid_sep + 1..dir_end;
    let ns_sep = memchr::memrchr(b'_', &body[..uid_sep])?;
    let pod = ns_sep + 1..uid_sep;
    let ns_start = memchr::memrchr(b'.', &body[..ns_sep]).map_or(0, |i| i + 1);
    let namespace = ns_start..ns_sep;
    let label = |r: &std::ops::Range<usize>| {
        !r.is_empty()
            && body[r.clone()]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    if !label(&namespace) || !label(&container) || !label(&uid) || pod.is_empty() {
        return None;
    }
    Some(K8sTag {
        pod: Span::new(pod),
        namespace: Span::new(namespace),
        container: Span::new(container),
        container_id: Span::default(),
        pod_uid: Span::new(uid),
        restart_count: Span::new(dot + 1..body.len()),
    })
}

/// `….<pod>_<namespace>_<container>-<id>.log` (`/var/log/containers`).
fn containers(tag: &[u8]) -> Option<K8sTag> {
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
        pod_uid: Span::default(),
        restart_count: Span::default(),
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
    fn parses_the_kubelet_pods_tree() {
        let uid = "0f3a9c2e-5b7d-4e1a-9c3b-2d4e6f8a0b1c";
        let tag = format!("kube.var.log.pods.shop_web.v2-7d9f_{uid}.app-server.3.log");
        let k = parse(tag.as_bytes()).unwrap();
        let s = |sp: Span| &tag[sp.start as usize..(sp.start + sp.len) as usize];
        assert_eq!(
            (
                s(k.namespace),
                s(k.pod),
                s(k.container),
                s(k.pod_uid),
                s(k.restart_count)
            ),
            ("shop", "web.v2-7d9f", "app-server", uid, "3")
        );
        assert_eq!(k.container_id.len, 0);
        for bad in [
            format!("kube.var.log.pods.shop_web_{uid}.app.x.log"),
            format!("kube.var.log.pods.shop_web_{uid}.app.3.txt"),
            format!("kube.var.log.pods.web_{uid}.app.3.log"),
            "kube.var.log.pods.shop_web_.app.3.log".to_string(),
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad}");
        }
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
