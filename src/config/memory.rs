//! Default queue bounds that fit the container Outrigger runs in.
//!
//! A sidecar's memory limit is set by whoever deploys it, often far below the node's RAM, and
//! exceeding it gets the process killed (OOM) with every queued event in it. A fixed default
//! queue bound is either too small for a generous limit or large enough to kill a tight one,
//! so, as a JVM does with `MaxRAMPercentage`, the default is a share of the limit:
//! `queue_memory_percent` of the cgroup's memory limit is split evenly among the sinks that
//! set no `max_queue_bytes` of their own, clamped to [`MIN_QUEUE_BYTES`, `MAX_QUEUE_BYTES`].
//! Without a limit (a process on a host, or an unlimited cgroup) the default stays
//! [`UNLIMITED_QUEUE_BYTES`]: taking a share of a whole node's RAM would be a surprise. A bound
//! in the configuration, global or per sink, always wins.
//!
//! The sources' input budget (what connections hold before their data is queued, see
//! `source::budget`) is sized the same way: [`INPUT_MEMORY_PERCENT`] of the limit, but never
//! less than its reserve (the largest request a source accepts, inflated) plus
//! [`MIN_INPUT_POOL_BYTES`] for everyone else.
//!
//! The forward source's frame and decompression limits stay fixed: they decide which requests
//! are accepted at all, and a limit that changed with the container would make the same
//! client work in one pod and fail in another.
//!
//! The limit is read from the cgroup the process belongs to (`/proc/self/cgroup`): cgroup v2's
//! `memory.max`, else cgroup v1's `memory/memory.limit_in_bytes`. Every ancestor up to the
//! mount point is read too, and the smallest limit wins, as the kernel enforces them all. The
//! paths are injectable ([`Probe`]) so tests can point them at a fake directory tree.

use std::path::{Path, PathBuf};

/// The default bound of one sink's queue when no cgroup limit is found.
pub const UNLIMITED_QUEUE_BYTES: u64 = 16 << 20;
/// Below this a queue holds too few batches to keep an exporter busy.
pub const MIN_QUEUE_BYTES: u64 = 1 << 20;
/// Above this a queue mostly adds what a crash loses and what a drain must write out.
pub const MAX_QUEUE_BYTES: u64 = 256 << 20;
/// The share of the memory limit, in percent, for the input budget by default.
pub const INPUT_MEMORY_PERCENT: f64 = 10.0;
/// The input budget's shared part is at least this, beyond its reserve: room for many small
/// connections while one large request holds the reserve.
pub const MIN_INPUT_POOL_BYTES: u64 = 8 << 20;
/// Without a memory limit, the shared part of the input budget.
pub const UNLIMITED_INPUT_POOL_BYTES: u64 = 16 << 20;
/// cgroup v1 reports "no limit" as a page-aligned `i64::MAX`; anything past 1 EiB is that.
const V1_UNLIMITED_ABOVE: u64 = 1 << 60;

/// Where to look for the cgroup files.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The process's cgroup membership, normally `/proc/self/cgroup`.
    pub proc_self_cgroup: PathBuf,
    /// Where cgroup file systems are mounted, normally `/sys/fs/cgroup` (v1 controllers in
    /// subdirectories such as `memory/`, v2 at the top).
    pub cgroup_root: PathBuf,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// A limit of `bytes`, the smallest in the file `file` (cgroup `version` 1 or 2).
    Bytes {
        bytes: u64,
        version: u8,
        file: PathBuf,
    },
    /// A cgroup memory file was found and says "no limit".
    Unlimited { version: u8 },
    /// No cgroup memory file could be read (not Linux, not mounted, no memory controller).
    Unknown,
}

impl Limit {
    pub fn bytes(&self) -> Option<u64> {
        match self {
            Limit::Bytes { bytes, .. } => Some(*bytes),
            _ => None,
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Bytes {
                bytes,
                version,
                file,
            } => write!(f, "{bytes} bytes (cgroup v{version}, {})", file.display()),
            Limit::Unlimited { version } => write!(f, "unlimited (cgroup v{version})"),
            Limit::Unknown => write!(f, "unknown (no cgroup memory file)"),
        }
    }
}

impl Probe {
    /// The real system's paths.
    pub fn system() -> Probe {
        Probe {
            proc_self_cgroup: "/proc/self/cgroup".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
        }
    }

    /// Reads the memory limit. Never fails: anything unreadable counts as not found, because
    /// a missing limit only means the fixed default is used.
    pub fn limit(&self) -> Limit {
        let membership = std::fs::read_to_string(&self.proc_self_cgroup).unwrap_or_default();
        // "hierarchy-ID:controller-list:path"; v2 is "0::path", v1 lists its controllers.
        let mut v2 = None;
        let mut v1 = None;
        for line in membership.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                v2 = Some(path);
            } else if controllers.split(',').any(|c| c == "memory") {
                v1 = Some(path);
            }
        }
        // Hybrid hosts list a v2 path too, but without the memory controller there is no
        // `memory.max` on it; then v1 answers.
        if let Some(path) = v2
            && let Some(found) = smallest(&self.cgroup_root, path, "memory.max", 2)
        {
            return found;
        }
        if let Some(path) = v1
            && let Some(found) = smallest(
                &self.cgroup_root.join("memory"),
                path,
                "memory.limit_in_bytes",
                1,
            )
        {
            return found;
        }
        Limit::Unknown
    }
}

/// The smallest limit in `file` from the cgroup at `path` (under `mount`) up to the mount
/// point; `None` when no such file exists anywhere on the way.
///
/// A container whose cgroup namespace is the host's sees its full path (`/kubepods/…`) in
/// `/proc/self/cgroup` while its own cgroup is mounted at the mount point; when the path does
/// not exist under the mount, the mount point alone is read.
fn smallest(mount: &Path, path: &str, file: &str, version: u8) -> Option<Limit> {
    let relative = path.trim_start_matches('/');
    let leaf = mount.join(relative);
    let start = if relative.is_empty() || !leaf.is_dir() {
        mount.to_path_buf()
    } else {
        leaf
    };
    let mut best: Option<Limit> = None;
    // Bounded by the depth of `start` below `mount`.
    for dir in start.ancestors().take_while(|d| d.starts_with(mount)) {
        let at = dir.join(file);
        let Ok(text) = std::fs::read_to_string(&at) else {
            continue;
        };
        let text = text.trim();
        let bytes = match (version, text) {
            (2, "max") => None,
            _ => match text.parse::<u64>() {
                Ok(b) if version == 1 && b >= V1_UNLIMITED_ABOVE => None,
                Ok(b) => Some(b),
                Err(_) => continue,
            },
        };
        best = Some(match (best, bytes) {
            (Some(l @ Limit::Bytes { bytes: old, .. }), Some(b)) if old <= b => l,
            (_, Some(b)) => Limit::Bytes {
                bytes: b,
                version,
                file: at,
            },
            (Some(l), None) => l,
            (None, None) => Limit::Unlimited { version },
        });
    }
    best
}

/// The default `max_queue_bytes` for each of `sinks` sinks that set none: `percent` of `limit`
/// shared evenly, clamped; [`UNLIMITED_QUEUE_BYTES`] without a limit.
pub fn default_queue_bytes(limit: &Limit, percent: f64, sinks: usize) -> u64 {
    match limit.bytes() {
        None => UNLIMITED_QUEUE_BYTES,
        Some(bytes) => {
            let share = bytes as f64 * percent / 100.0 / sinks.max(1) as f64;
            (share as u64).clamp(MIN_QUEUE_BYTES, MAX_QUEUE_BYTES)
        }
    }
}

/// The default input budget under `limit`, for sources whose largest request needs
/// `reserve` bytes to finish.
pub fn default_input_bytes(limit: &Limit, reserve: u64) -> u64 {
    match limit.bytes() {
        None => reserve + UNLIMITED_INPUT_POOL_BYTES,
        Some(bytes) => ((bytes as f64 * INPUT_MEMORY_PERCENT / 100.0) as u64)
            .max(reserve + MIN_INPUT_POOL_BYTES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_budget_is_a_share_of_the_limit_but_covers_the_reserve() {
        let limit = |bytes| Limit::Bytes {
            bytes,
            version: 2,
            file: "memory.max".into(),
        };
        let reserve = 32 << 20;
        assert_eq!(
            default_input_bytes(&limit(4 << 30), reserve),
            (4u64 << 30) / 10
        );
        assert_eq!(
            default_input_bytes(&limit(128 << 20), reserve),
            reserve + MIN_INPUT_POOL_BYTES
        );
        assert_eq!(
            default_input_bytes(&Limit::Unknown, reserve),
            reserve + UNLIMITED_INPUT_POOL_BYTES
        );
    }

    /// A fake `/proc/self/cgroup` and cgroup mount in a temporary directory.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new(membership: &str) -> Fake {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("cgroup"), membership).unwrap();
            std::fs::create_dir(dir.path().join("fs")).unwrap();
            Fake { dir }
        }

        /// Writes `text` to `fs/<rel>`, creating directories.
        fn file(&self, rel: &str, text: &str) -> &Fake {
            let p = self.dir.path().join("fs").join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }

        fn limit(&self) -> Limit {
            Probe {
                proc_self_cgroup: self.dir.path().join("cgroup"),
                cgroup_root: self.dir.path().join("fs"),
            }
            .limit()
        }
    }

    #[test]
    fn v2_limit_of_the_process_cgroup() {
        let f = Fake::new("0::/kubepods/pod1/ctr\n");
        f.file("kubepods/pod1/ctr/memory.max", "268435456\n");
        assert_eq!(f.limit().bytes(), Some(256 << 20));
        assert!(matches!(f.limit(), Limit::Bytes { version: 2, .. }));
    }

    #[test]
    fn v2_max_is_unlimited() {
        let f = Fake::new("0::/\n");
        f.file("memory.max", "max\n");
        assert_eq!(f.limit(), Limit::Unlimited { version: 2 });
    }

    #[test]
    fn nested_v2_takes_the_smallest_ancestor() {
        let f = Fake::new("0::/kubepods/pod1/ctr\n");
        f.file("kubepods/pod1/ctr/memory.max", "max\n")
            .file("kubepods/pod1/memory.max", "104857600\n")
            .file("kubepods/memory.max", "1073741824\n");
        let l = f.limit();
        assert_eq!(l.bytes(), Some(100 << 20));
        let Limit::Bytes { file, .. } = l else {
            unreachable!()
        };
        assert!(file.ends_with("kubepods/pod1/memory.max"), "{file:?}");
    }

    #[test]
    fn host_namespace_path_missing_under_mount_reads_the_mount() {
        // The container sees its own cgroup at the mount point, but its full host path in
        // /proc/self/cgroup.
        let f = Fake::new("0::/system.slice/docker-abc.scope\n");
        f.file("memory.max", "52428800\n");
        assert_eq!(f.limit().bytes(), Some(50 << 20));
    }

    #[test]
    fn v1_limit_and_its_huge_unlimited_value() {
        let f = Fake::new("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n");
        f.file("memory/docker/abc/memory.limit_in_bytes", "536870912\n");
        assert_eq!(f.limit().bytes(), Some(512 << 20));
        assert!(matches!(f.limit(), Limit::Bytes { version: 1, .. }));

        let f = Fake::new("4:memory:/\n");
        f.file("memory/memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(f.limit(), Limit::Unlimited { version: 1 });
    }

    #[test]
    fn hybrid_host_falls_back_to_v1_when_v2_has_no_memory_controller() {
        let f = Fake::new("4:memory:/job\n0::/\n");
        f.file("unified/cgroup.controllers", "")
            .file("memory/job/memory.limit_in_bytes", "33554432\n");
        assert_eq!(f.limit().bytes(), Some(32 << 20));
    }

    #[test]
    fn missing_or_garbled_files_are_unknown() {
        let f = Fake::new("0::/a\n");
        assert_eq!(f.limit(), Limit::Unknown);
        f.file("a/memory.max", "lots\n");
        assert_eq!(f.limit(), Limit::Unknown);
        let none = Probe {
            proc_self_cgroup: "/nonexistent/cgroup".into(),
            cgroup_root: "/nonexistent/fs".into(),
        };
        assert_eq!(none.limit(), Limit::Unknown);
    }

    #[test]
    fn default_queue_bytes_is_a_clamped_share_of_the_limit() {
        let gib = Limit::Bytes {
            bytes: 1 << 30,
            version: 2,
            file: "memory.max".into(),
        };
        // 25% of 1 GiB over two sinks.
        assert_eq!(default_queue_bytes(&gib, 25.0, 2), 128 << 20);
        assert_eq!(default_queue_bytes(&gib, 25.0, 0), MAX_QUEUE_BYTES);
        let tiny = Limit::Bytes {
            bytes: 2 << 20,
            version: 1,
            file: "x".into(),
        };
        assert_eq!(default_queue_bytes(&tiny, 25.0, 1), MIN_QUEUE_BYTES);
        assert_eq!(
            default_queue_bytes(&Limit::Unlimited { version: 2 }, 25.0, 1),
            UNLIMITED_QUEUE_BYTES
        );
        assert_eq!(
            default_queue_bytes(&Limit::Unknown, 90.0, 1),
            UNLIMITED_QUEUE_BYTES
        );
    }
}
