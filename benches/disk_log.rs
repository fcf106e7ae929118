//! The disk buffer's log: what a durable commit costs, and how group commit shares syncs.
//!
//! ```text
//! cargo bench --bench disk_log
//! ```
//!
//! Each iteration commits 1,024 requests of 424 bytes (a Docker Message-mode request) to a
//! log in `target/` (a real file system: tmpfs would make `fdatasync` free), from one writer
//! or from eight, each waiting for its answer before its next request, as a client waiting
//! for acks does. Throughput is in requests; with group commit the eight writers should reach
//! several times one writer's rate on the same disk. The syncs per request of the last run
//! are printed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use outrigger::buffer::disk::commit::{Committer, Fsync};
use outrigger::buffer::disk::log::{Log, Options};

const REQUESTS: usize = 1024;

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-disk-log");
    let _ = std::fs::remove_dir_all(&root);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let payload = Bytes::from(vec![b'x'; 424]);
    let mut group = c.benchmark_group("disk_log");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(REQUESTS as u64));
    for writers in [1usize, 8] {
        let dir = root.join(format!("writers-{writers}"));
        let options = Options {
            segment_bytes: 64 << 20,
            max_bytes: 1 << 40,
        };
        let (log, _) = Log::open(&dir, options).unwrap();
        let committer = Committer::start(log, Fsync::Always).unwrap();
        group.bench_function(format!("commit/{writers}_writers"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut tasks = Vec::new();
                    for _ in 0..writers {
                        let (committer, payload) = (committer.clone(), payload.clone());
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..REQUESTS / writers {
                                committer.commit(payload.clone()).await.unwrap();
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                })
            })
        });
        let counts = committer.counts();
        let (syncs, records) = (
            counts.syncs.load(Ordering::Relaxed),
            counts.records.load(Ordering::Relaxed),
        );
        println!(
            "disk_log/{writers}_writers: {records} requests in {syncs} syncs ({:.1} per sync)",
            records as f64 / syncs.max(1) as f64
        );
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
