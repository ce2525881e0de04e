//! Runtime figures (root): `supervise` → app running, exec round trip, teardown, idle memory.
//! `cargo bench --bench runtime [-- PODS]`; prints medians in ms and smaps_rollup kB.

#[path = "../tests/e2e/runtime_support.rs"]
mod runtime_support;

use std::time::{Duration, Instant};

use outpost::runtime::Runtime;
use runtime_support::*;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<40} median {:7.1}  min {:7.1}  p90 {:7.1}  max {:7.1}",
        at(0.5),
        at(0.0),
        at(0.9),
        at(1.0)
    );
}

/// RSS, PSS and Private_Dirty in kB.
fn memory(pid: i32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "RSS {} / PSS {} / Private_Dirty {} kB",
        field("Rss:"),
        field("Pss:"),
        field("Private_Dirty:")
    )
}

fn main() {
    let pods: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    let env = Env::new();
    let rt = env.runtime();
    let (mut sandbox, mut app, mut total, mut exec_rt, mut down) =
        (vec![], vec![], vec![], vec![], vec![]);
    smol::block_on(async {
        for i in 0..pods {
            let uid = format!("bench-{i}");
            let t0 = Instant::now();
            let info = rt.create_sandbox(env.sandbox(&uid, "bench")).await.expect("sandbox");
            let t1 = Instant::now();
            let status = rt
                .start_container(&uid, container("app", 0, &env.layer, &["sleep", "3600"]))
                .await
                .expect("app");
            let t2 = Instant::now();
            let r = rt
                .exec(&uid, exec("app", &["echo", "hi"], Duration::from_secs(10)))
                .await
                .expect("exec");
            assert_eq!(r.stdout, "hi\n");
            exec_rt.push(ms(t2.elapsed()));
            sandbox.push(ms(t1 - t0));
            app.push(ms(t2 - t1));
            total.push(ms(t2 - t0));
            if i == pods - 1 {
                smol::Timer::after(Duration::from_millis(300)).await;
                println!("idle pod, 1 app (busybox sleep):");
                println!("  supervisor {}", memory(info.supervisor_pid));
                if let Some(pause) = info.pause_pid {
                    println!("  pause      {}", memory(pause));
                }
                println!("  app        {}", memory(status.pid));
            }
            let t3 = Instant::now();
            rt.remove_sandbox(&uid, None).await.expect("remove");
            down.push(ms(t3.elapsed()));
        }
    });
    println!("{pods} pods, ms:");
    summary("create_sandbox (spawn → pause running)", sandbox);
    summary("start_container (overlay, create, start)", app);
    summary("supervise → app running", total);
    summary("exec `echo hi` round trip", exec_rt);
    summary("remove_sandbox (kill, delete, unmount)", down);
}
