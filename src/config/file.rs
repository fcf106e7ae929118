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
