//! A `type = "file"` source: log files on this machine, tailed (see [`crate::source::file`]).

use serde::Deserialize;

/// `[sources.NAME]` with `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Glob patterns of the files to read (`/var/log/pods/*/*/*.log`); at least one.
    pub include: Vec<String>,
    /// Glob patterns of files not to read, though `include` matches them.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub format: Format,
    /// Where to start in a file seen for the first time (one with a checkpoint resumes at
    /// it). Files that appear while Outrigger runs (a rotation's new file, a new pod's) are
    /// always read from their beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How often the globs are matched again and idle files looked at.
    #[serde(default = "File::default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// The most one file is read in one turn, so one busy file cannot hold up the others.
    #[serde(default = "File::default_read_bytes")]
    pub read_bytes: usize,
    /// A longer line is handed on in pieces of this size (counted as `line_cut`).
    #[serde(default = "File::default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Events get the tag `<tag_prefix>.<path with dots for slashes>`: with `kube`, a file
    /// under `/var/log/containers/` gets the tag Kubernetes metadata is read from.
    #[serde(default = "File::default_tag_prefix")]
    pub tag_prefix: String,
    /// How often each file's offset is saved under `data_dir` (and once at shutdown).
    #[serde(default = "File::default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// The most files open at once: beyond it the least recently active idle file is closed
    /// (its offset kept) and opened again when it grows.
    #[serde(default = "File::default_max_open_files")]
    pub max_open_files: usize,
    /// The kubelet's tree (`kubernetes_logs`; not a key of `file`): a file at
    /// `<namespace>_<pod>_<uid>/<container>/<n>.log` is tagged
    /// `<tag_prefix>.<namespace>.<pod>.<container>`, and its lines carry the path's names
    /// as resource attributes.
    #[serde(skip)]
    pub kubernetes: bool,
    /// Pod metadata from the Kubernetes API, for the files of the pods tree
    /// (`kubernetes_logs` with `metadata = "api"`; not a key of `file`).
    #[serde(skip)]
    pub pods: Option<Pods>,
}

/// Where and how a `kubernetes_logs` source watches its node's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pods {
    /// The node whose pods are watched (`spec.nodeName`).
    pub node_name: String,
    /// A kubeconfig file to use instead of the in-cluster service account (or `KUBECONFIG`).
    pub kubeconfig: Option<String>,
    /// Each pod label as `k8s.pod.label.<key>`.
    pub labels: bool,
    /// These annotations as `k8s.pod.annotation.<key>`.
    pub annotations: Vec<String>,
    /// How long lines of a pod the API has not told of yet wait before they go on with
    /// what the path says.
    pub wait_ms: u64,
    /// `/ready` fails while the watch is not listed and running.
    pub ready_requires_api: bool,
}

/// `format`: how each line of a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Decided per file from its first line.
    #[default]
    Auto,
    /// containerd's and CRI-O's `<time> <stream> <P|F> <content>`.
    Cri,
    /// Docker's json-file (`{"log":…,"stream":…,"time":…}`).
    Docker,
    /// Each line as it is.
    Text,
}

/// `read_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

impl File {
    fn default_poll_interval_ms() -> u64 {
        1000
    }
    fn default_read_bytes() -> usize {
        256 << 10
    }
    fn default_max_line_bytes() -> usize {
        256 << 10
    }
    fn default_tag_prefix() -> String {
        "file".into()
    }
    fn default_checkpoint_interval_ms() -> u64 {
        1000
    }
    fn default_max_open_files() -> usize {
        1024
    }

    /// The most bytes one read's disk buffer record may take: the read and a line held from
    /// the one before, a separator per line (a cut piece is a line too, so at most as many
    /// as bytes), and a header with a path and a tag made of it.
    pub fn largest_record(&self) -> usize {
        2 * (self.read_bytes + self.max_line_bytes) + 16 * 1024
    }

    /// What loading can check: the patterns and the bounds. The error is the key and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.include.is_empty() {
            return Err(("include", "needs at least one glob pattern".into()));
        }
        for (key, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
            for p in patterns {
                if let Err(e) = glob::Pattern::new(p) {
                    return Err((key, format!("`{p}` is not a glob pattern: {e}")));
                }
                if key == "include" && !p.starts_with('/') {
                    return Err((key, format!("`{p}`: use an absolute path")));
                }
            }
        }
        for (key, v) in [
            ("poll_interval_ms", self.poll_interval_ms as usize),
            ("read_bytes", self.read_bytes),
            ("max_line_bytes", self.max_line_bytes),
            (
                "checkpoint_interval_ms",
                self.checkpoint_interval_ms as usize,
            ),
            ("max_open_files", self.max_open_files),
        ] {
            if v == 0 {
                return Err((key, "must be greater than 0".into()));
            }
        }
        if self.tag_prefix.is_empty() {
            return Err(("tag_prefix", "must not be empty".into()));
        }
        Ok(())
    }
}

/// `[sources.NAME]` with `type = "kubernetes_logs"`: a file source with the kubelet's layout
/// as its defaults.
///
/// The tailing keys repeat [`File`]'s, defaults included: serde's `flatten` would share them
/// but does not work with `deny_unknown_fields`, and an unknown key must stay an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLogs {
    /// The kubelet's tree: `<namespace>_<pod>_<uid>/<container>/<n>.log` under it.
    #[serde(default = "KubernetesLogs::default_pods_dir")]
    pub pods_dir: String,
    /// More files not to read (glob patterns).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where pod metadata comes from besides the path (namespace, pod, UID, container,
    /// restart count): `api` (labels, owners, annotations, from watching this node's pods)
    /// or `none`.
    #[serde(default)]
    pub metadata: Metadata,
    /// The node whose pods are watched; by default `NODE_NAME` (the Downward API's
    /// `spec.nodeName`).
    #[serde(default)]
    pub node_name: Option<String>,
    /// A kubeconfig file, instead of the in-cluster service account (`KUBECONFIG` too).
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// Pod labels as `k8s.pod.label.<key>`.
    #[serde(default = "yes")]
    pub pod_labels: bool,
    /// Pod annotations to add as `k8s.pod.annotation.<key>`.
    #[serde(default)]
    pub pod_annotations: Vec<String>,
    /// How long a new pod's lines wait for the API to tell of it.
    #[serde(default = "KubernetesLogs::default_metadata_wait_ms")]
    pub metadata_wait_ms: u64,
    /// Not ready (`/ready`) while the API cannot be watched. Off: logs flow either way.
    #[serde(default)]
    pub ready_requires_api: bool,
    /// Leave out the pod Outrigger runs in (found from `POD_NAMESPACE` and `POD_NAME`, which
    /// the DaemonSet sets from the Downward API), so its own log does not loop back.
    #[serde(default = "yes")]
    pub exclude_own_pod: bool,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub read_from: ReadFrom,
    #[serde(default = "File::default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    #[serde(default = "File::default_read_bytes")]
    pub read_bytes: usize,
    #[serde(default = "File::default_max_line_bytes")]
    pub max_line_bytes: usize,
    #[serde(default = "File::default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    #[serde(default = "File::default_max_open_files")]
    pub max_open_files: usize,
}

/// `metadata` of a `kubernetes_logs` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metadata {
    None,
    #[default]
    Api,
}

fn yes() -> bool {
    true
}

impl KubernetesLogs {
    fn default_pods_dir() -> String {
        "/var/log/pods".into()
    }

    fn default_metadata_wait_ms() -> u64 {
        2000
    }

    /// The file source it is: the pods tree's log files, tagged
    /// `kube.<namespace>.<pod>.<container>`, without Outrigger's own pod when `pod`
    /// (`(namespace, name)`) is known.
    /// `node` is `NODE_NAME`, for `metadata = "api"` without `node_name`.
    pub fn file(
        &self,
        pod: Option<(String, String)>,
        node: Option<String>,
    ) -> Result<File, (&'static str, String)> {
        let pods = match self.metadata {
            Metadata::None => None,
            Metadata::Api => {
                let node_name = self.node_name.clone().or(node).filter(|n| !n.is_empty());
                let Some(node_name) = node_name else {
                    return Err((
                        "metadata",
                        "\"api\" watches this node's pods: set NODE_NAME (the Downward API's \
                         spec.nodeName) or node_name, or use \"none\" (metadata from the paths)"
                            .into(),
                    ));
                };
                Some(Pods {
                    node_name,
                    kubeconfig: self.kubeconfig.clone(),
                    labels: self.pod_labels,
                    annotations: self.pod_annotations.clone(),
                    wait_ms: self.metadata_wait_ms,
                    ready_requires_api: self.ready_requires_api,
                })
            }
        };
        let dir = self.pods_dir.trim_end_matches('/');
        let mut exclude = self.exclude.clone();
        if self.exclude_own_pod
            && let Some((ns, name)) = pod
        {
            exclude.push(format!("{dir}/{ns}_{name}_*/*/*"));
        }
        let f = File {
            include: vec![format!("{dir}/*/*/*.log")],
            exclude,
            format: self.format,
            read_from: self.read_from,
            poll_interval_ms: self.poll_interval_ms,
            read_bytes: self.read_bytes,
            max_line_bytes: self.max_line_bytes,
            tag_prefix: "kube".into(),
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            max_open_files: self.max_open_files,
            kubernetes: true,
            pods,
        };
        f.check().map_err(|(key, why)| {
            let key = if key == "include" { "pods_dir" } else { key };
            (key, why)
        })?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k8s(extra: &str) -> KubernetesLogs {
        toml::from_str(extra).unwrap()
    }

    #[test]
    fn kubernetes_logs_is_the_pods_tree_without_its_own_pod() {
        let f = k8s("")
            .file(
                Some(("logging".into(), "outrigger-x1".into())),
                Some("n1".into()),
            )
            .unwrap();
        assert_eq!(
            f.pods.as_ref().unwrap().node_name,
            "n1",
            "metadata from the API"
        );
        assert_eq!(f.include, ["/var/log/pods/*/*/*.log"]);
        assert_eq!(f.exclude, ["/var/log/pods/logging_outrigger-x1_*/*/*"]);
        assert_eq!(f.tag_prefix, "kube");
        let own = glob::Pattern::new(&f.exclude[0]).unwrap();
        assert!(own.matches("/var/log/pods/logging_outrigger-x1_0f3a/outrigger/0.log"));
        assert!(!own.matches("/var/log/pods/logging_other_0f3a/app/0.log"));

        let f = k8s("pods_dir = \"/data/pods/\"\nexclude_own_pod = false\nmetadata = \"none\"")
            .file(Some(("a".into(), "b".into())), None)
            .unwrap();
        assert_eq!(f.include, ["/data/pods/*/*/*.log"]);
        assert!(f.exclude.is_empty());
        assert!(f.pods.is_none());
        let e = k8s("").file(None, None).unwrap_err();
        assert_eq!(e.0, "metadata", "no node to watch");
        let f = k8s("node_name = \"n2\"\npod_annotations = [\"team\"]").file(None, None);
        let pods = f.unwrap().pods.unwrap();
        assert_eq!((pods.node_name.as_str(), pods.wait_ms), ("n2", 2000));
        assert_eq!(pods.annotations, ["team"]);
        let e = k8s("pods_dir = \"relative\"")
            .file(None, Some("n".into()))
            .unwrap_err();
        assert_eq!(e.0, "pods_dir");
    }
}
