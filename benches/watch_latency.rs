//! Manifest written → Update received: the latency `outpost run` logs a change with.
//! Target: under 100 ms. Run: `cargo bench --bench watch_latency`.

use std::time::{Duration, Instant};

use outpost::watch::{WatchOptions, Watcher};

const ROUNDS: usize = 50;

fn pod(i: usize, image: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\nspec:\n  containers:\n  - name: app\n    image: {image}\n")
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_watcher, updates) = Watcher::start(dir.path(), WatchOptions::default()).expect("watch");
    smol::block_on(updates.recv()).expect("initial update");
    let mut samples = Vec::with_capacity(ROUNDS * 2);
    for i in 0..ROUNDS {
        let path = dir.path().join(format!("p{i}.yaml"));
        for image in ["busybox:1", "busybox:2"] {
            let start = Instant::now();
            std::fs::write(&path, pod(i, image)).expect("write");
            let update =
                smol::block_on(smol::future::or(async { updates.recv().await.ok() }, async {
                    smol::Timer::after(Duration::from_secs(5)).await;
                    None
                }))
                .expect("an update within 5 s");
            assert!(!update.changes.is_empty());
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    let pct = |p: usize| samples[(samples.len() - 1) * p / 100].as_secs_f64() * 1000.0;
    println!(
        "manifest change -> update: n={} median {:.1} ms, p90 {:.1} ms, max {:.1} ms (target < 100 ms)",
        samples.len(),
        pct(50),
        pct(90),
        pct(100)
    );
}
