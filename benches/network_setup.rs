//! Pod network figures (root, containernetworking-plugins):
//!
//! 1. CNI ADD and DEL of the built-in chain (bridge + host-local, portmap, firewall) through
//!    `Network::attach`/`detach`, on a thread with a private network namespace, so the
//!    bridge, veths and iptables rules it makes vanish with it.
//! 2. Manifest → Running through a real `outpost run`, one pod at a time, with the sandbox
//!    network setup time the agent logs for each pod, and its share of the total.
//!
//! `cargo bench --profile dev --bench network_setup [-- PODS]` (default 20 pods); prints
//! medians in ms.

#[path = "../tests/e2e/support.rs"]
mod e2e_support;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use outpost::network::{default, Network, NetworkPaths};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<44} median {:7.1}  min {:7.1}  p90 {:7.1}  max {:7.1}",
        at(0.5),
        at(0.0),
        at(0.9),
        at(1.0)
    );
}

/// A process in a fresh network namespace, standing in for a pause container.
struct Sandbox(Child);

impl Sandbox {
    fn new() -> Self {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        // SAFETY: unshare is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        Sandbox(cmd.spawn().expect("spawn sleep"))
    }
    fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.0.id()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench_pod(i: usize) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some(format!("bench-{i}"));
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
    p
}

/// Part 1: ADD and DEL in a private network namespace.
fn cni_direct(pods: usize) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare: run as root");
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("net.d");
        std::fs::create_dir_all(&conf).unwrap();
        // The built-in list, with host-local's store in the temp dir.
        let mut list =
            default::network("10.250.0.0/24".parse().unwrap(), default::BRIDGE).to_json();
        list["plugins"][0]["ipam"]["dataDir"] =
            tmp.path().join("ipam").display().to_string().into();
        std::fs::write(conf.join("10-bench.conflist"), list.to_string()).unwrap();
        let paths = NetworkPaths {
            conf_dir: conf,
            cache_dir: tmp.path().join("cache"),
            netns_dir: tmp.path().join("netns"),
            ..NetworkPaths::standard(tmp.path())
        };
        let net = Network::load(&paths);
        let (mut add, mut del) = (vec![], vec![]);
        smol::block_on(async {
            for i in 0..pods {
                let sandbox = Sandbox::new();
                let pod = bench_pod(i);
                let t0 = Instant::now();
                net.attach(&pod, &sandbox.netns()).await.expect("ADD");
                let t1 = Instant::now();
                net.detach(pod.metadata.uid.as_deref().unwrap()).await.expect("DEL");
                let t2 = Instant::now();
                add.push(ms(t1 - t0));
                del.push(ms(t2 - t1));
            }
        });
        println!("CNI, built-in chain, private netns (n={pods}):");
        summary("  ADD (pin netns + bridge/portmap/firewall)", add);
        summary("  DEL", del);
    })
    .join()
    .expect("bench thread");
}

/// Part 2: manifest → Running through the agent.
fn end_to_end(pods: usize) {
    let agent = e2e_support::Agent::start();
    let (mut total, mut network, mut share) = (vec![], vec![], vec![]);
    for i in 0..pods {
        let name = format!("e2e-{i}");
        let yaml =
            e2e_support::pod(&name, "sleep 3600", "", "  terminationGracePeriodSeconds: 1\n");
        let t0 = Instant::now();
        agent.apply(&format!("{name}.yaml"), &yaml);
        loop {
            if agent.pod(&name).is_some_and(|p| e2e_support::phase(&p) == "Running") {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "{name} not Running within 60 s");
            std::thread::sleep(Duration::from_millis(2));
        }
        let t = ms(t0.elapsed());
        let needle = format!("pod {name}: network ");
        let net = agent
            .agent_log()
            .iter()
            .filter(|l| l.contains(&needle))
            .find_map(|l| l.rsplit(" in ").next()?.strip_suffix(" ms")?.parse::<f64>().ok())
            .expect("the agent logs the network setup time");
        total.push(t);
        network.push(net);
        share.push(net / t * 100.0);
        agent.delete(&format!("{name}.yaml"));
        agent.wait_gone(&name, Duration::from_secs(60));
    }
    println!("Agent, one pod at a time (n={pods}):");
    summary("  manifest -> Running (API poll, 2 ms)", total);
    summary("  sandbox network setup (agent log)", network);
    println!("  network share of manifest -> Running       median {:7.1} %", median(share));
}

fn main() {
    let pods: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(20);
    cni_direct(pods);
    end_to_end(pods);
}
