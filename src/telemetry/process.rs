//! The process's own resource use, read from `/proc/self` at each scrape.
//!
//! Names and meanings follow the Prometheus client libraries' standard process metrics
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`, ...), so existing dashboards
//! and alerts work unchanged. They are computed when scraped rather than updated in the
//! background: a scrape every few seconds costs a few small file reads, and nothing runs when
//! nobody looks. A value that cannot be read (not Linux, `/proc` not mounted) is left out of
//! the exposition rather than reported as 0.

use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Collects the `process_*` metrics.
#[derive(Debug)]
pub struct Process;

/// One reading of `/proc/self`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl Sample {
    /// Reads the calling process under `proc` (normally `/proc`).
    pub fn read(proc: &Path) -> Sample {
        Sample::read_process(proc, "self")
    }

    /// Reads process `pid` under `proc`: how `loadgen` measures the CPU time of the
    /// Outrigger it drives. What cannot be read (another user's `fd/`) is `None`, as here.
    pub fn read_pid(proc: &Path, pid: u32) -> Sample {
        Sample::read_process(proc, &pid.to_string())
    }

    /// Reads `proc/<process>/`, where `process` is `self` or a PID.
    fn read_process(proc: &Path, process: &str) -> Sample {
        let dir = proc.join(process);
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (ticks, page) = (ticks.max(1) as f64, page.max(1) as u64);
        let mut s = Sample::default();
        if let Ok(stat) = std::fs::read_to_string(dir.join("stat")) {
            // The command name (field 2) may hold spaces and parentheses: split after the
            // last ')'. What follows starts at field 3 (state).
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
                if let (Some(utime), Some(stime)) = (field(14), field(15)) {
                    s.cpu_seconds = Some((utime + stime) as f64 / ticks);
                }
                let boot = std::fs::read_to_string(proc.join("stat"))
                    .ok()
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
                    });
                if let (Some(start), Some(boot)) = (field(22), boot) {
                    s.start_time_seconds = Some(boot as f64 + start as f64 / ticks);
                }
            }
        }
        if let Ok(statm) = std::fs::read_to_string(dir.join("statm")) {
            let mut f = statm.split_whitespace().map(|v| v.parse::<u64>().ok());
            s.virtual_bytes = f.next().flatten().map(|p| p * page);
            s.resident_bytes = f.next().flatten().map(|p| p * page);
        }
        if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            // Bounded by the open-file limit; the directory handle itself is counted out.
            s.open_fds = Some((fds.count() as u64).saturating_sub(1));
        }
        if let Ok(limits) = std::fs::read_to_string(dir.join("limits")) {
            s.max_fds = limits.lines().find_map(|l| {
                l.strip_prefix("Max open files")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
        }
        s
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = Sample::read(Path::new("/proc"));
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                s.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                s.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                s.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Limit on open file descriptors",
                s.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                s.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("self/fd")).unwrap();
        for fd in ["0", "1", "2"] {
            std::fs::write(p.join("self/fd").join(fd), "").unwrap();
        }
        // Field 14 utime = 250, 15 stime = 50, 22 starttime = 1000 ticks; the name has a
        // space and a parenthesis.
        let mut fields = vec!["0"; 50];
        (fields[14 - 3], fields[15 - 3], fields[22 - 3]) = ("250", "50", "1000");
        std::fs::write(
            p.join("self/stat"),
            format!("42 (out rig)ger) {}", fields.join(" ")),
        )
        .unwrap();
        std::fs::write(p.join("stat"), "cpu 1 2 3\nbtime 1700000000\n").unwrap();
        std::fs::write(p.join("self/statm"), "1000 200 30 1 0 100 0\n").unwrap();
        std::fs::write(
            p.join("self/limits"),
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max open files            1024                 4096                 files\n",
        )
        .unwrap();
        let s = Sample::read(p);
        // SAFETY: as in `Sample::read`.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK) as f64,
                libc::sysconf(libc::_SC_PAGESIZE) as u64,
            )
        };
        assert_eq!(s.cpu_seconds, Some(300.0 / ticks));
        assert_eq!(s.start_time_seconds, Some(1_700_000_000.0 + 1000.0 / ticks));
        assert_eq!(s.virtual_bytes, Some(1000 * page));
        assert_eq!(s.resident_bytes, Some(200 * page));
        assert_eq!(s.max_fds, Some(1024));
        // read_dir on the fake lists the three entries, less the one counted for the handle.
        assert_eq!(s.open_fds, Some(2));
    }

    #[test]
    fn reads_a_process_by_pid() {
        let me = Sample::read_pid(Path::new("/proc"), std::process::id());
        assert!(me.cpu_seconds.is_some(), "{me:?}");
        assert!(me.resident_bytes.unwrap() > 0);
        // A process that is not there reads as nothing at all.
        assert_eq!(
            Sample::read_pid(Path::new("/proc"), u32::MAX),
            Sample::default()
        );
    }

    #[test]
    fn the_real_process_has_memory_and_files() {
        let s = Sample::read(Path::new("/proc"));
        assert!(s.resident_bytes.unwrap() > 0);
        assert!(s.open_fds.unwrap() >= 2, "{s:?}");
        assert!(s.start_time_seconds.unwrap() > 1_600_000_000.0);
    }
}
