//! Helpers of the pod networking tests: agents' attachments (from their result caches),
//! bridges, leases and rules, and what is left of them after pods are gone.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{phase, pod, Agent, T};
use serde_json::Value;

/// `sleep` and `httpd` as PID 1 ignore SIGTERM: a short grace keeps teardown quick.
pub(crate) const GRACE: &str = "  terminationGracePeriodSeconds: 1\n";

/// A TCP port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET / on `addr`, retried until it answers; the body.
#[track_caller]
pub(crate) fn http_body(addr: SocketAddr) -> String {
    let start = Instant::now();
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            Ok(resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
        })();
        match attempt {
            Ok(body) if !body.is_empty() => return body,
            other => assert!(
                start.elapsed() < T,
                "GET http://{addr}/ did not answer within {T:?}: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The IPv4 address of a host interface.
pub(crate) fn interface_ip(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())))
}

pub(crate) fn pod_ip(p: &Value) -> String {
    p["status"]["podIP"].as_str().unwrap_or_default().to_string()
}

pub(crate) fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

pub(crate) fn running_with_ip(p: &Value) -> bool {
    phase(p) == "Running" && p["status"]["podIP"].is_string()
}

/// A busybox httpd pod serving `body` as its index on `port`.
pub(crate) fn web_pod(
    name: &str,
    body: &str,
    port: u16,
    extra_container: &str,
    extra_spec: &str,
) -> String {
    let script = format!(
        "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www"
    );
    pod(name, &script, extra_container, extra_spec)
}

/// What one attachment was given, from the agent's CNI result cache.
#[derive(Clone, Debug)]
pub(crate) struct Given {
    pub(crate) container_id: String,
    pub(crate) pod_uid: String,
    pub(crate) ips: Vec<String>,
    pub(crate) veths: Vec<String>,
}

pub(crate) fn cache_dir(agent: &Agent) -> PathBuf {
    agent.state.join("cni").join("results")
}

pub(crate) fn given(agent: &Agent) -> Vec<Given> {
    let Ok(entries) = std::fs::read_dir(cache_dir(agent)) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Ok(v) = serde_json::from_slice::<Value>(&std::fs::read(e.path()).unwrap_or_default())
        else {
            continue;
        };
        let args = v["cniArgs"].as_array().cloned().unwrap_or_default();
        let pod_uid = args
            .iter()
            .find(|a| a[0] == "K8S_POD_UID")
            .and_then(|a| a[1].as_str())
            .unwrap_or_default()
            .to_string();
        let result = &v["result"];
        out.push(Given {
            container_id: v["containerId"].as_str().unwrap_or_default().to_string(),
            pod_uid,
            ips: result["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["address"].as_str())
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect(),
            veths: result["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["sandbox"].is_null())
                .filter_map(|i| i["name"].as_str())
                .filter(|n| n.starts_with("op-") || n.starts_with("veth"))
                .map(String::from)
                .collect(),
        });
    }
    out
}

/// The attachments of these pods, waiting until each has a cached result.
#[track_caller]
pub(crate) fn given_for(agent: &Agent, uids: &[String]) -> Vec<Given> {
    let start = Instant::now();
    loop {
        let all: Vec<Given> = given(agent)
            .into_iter()
            .filter(|g| uids.contains(&g.pod_uid) && !g.ips.is_empty())
            .collect();
        let have: BTreeSet<&String> = all.iter().map(|g| &g.pod_uid).collect();
        if have.len() == uids.len() {
            return all;
        }
        assert!(start.elapsed() < T, "cached CNI results for {uids:?}: only {have:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn iptables_save() -> String {
    let out = std::process::Command::new("iptables-save")
        .output()
        .expect("iptables-save not found: install iptables (tests/prereqs.sh does)");
    assert!(out.status.success(), "iptables-save: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Container IDs of the agent's leases, from its state database.
pub(crate) fn leased_ids(agent: &Agent) -> BTreeSet<String> {
    let leases = outpost::store::Leases::open(&agent.state.join("outpost.db")).expect("leases");
    leases.all().expect("leases").into_iter().map(|l| l.container_id).collect()
}

/// The agent's built-in bridge and subnet, as it recorded them (`SUBNET BRIDGE`).
pub(crate) fn bridge_of(agent: &Agent) -> (String, outpost::network::subnet::Subnet) {
    let text = std::fs::read_to_string(agent.state.join("cni").join("builtin"))
        .expect("the agent recorded its bridge in state/cni/builtin");
    let (subnet, bridge) = text.trim().split_once(' ').expect("SUBNET BRIDGE");
    (bridge.to_string(), subnet.parse().expect("a subnet"))
}

/// `nft list table ip NAME`, empty when the table does not exist.
pub(crate) fn nft_table(name: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", name])
        .output()
        .expect("nft not found: install nftables (tests/prereqs.sh does)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything of `given` still on the host: leases, veths, iptables and nftables rules, pins,
/// cache. `baseline` is `iptables-save` from before the pods were created.
pub(crate) fn leftovers(agent: &Agent, given: &[Given], baseline: &str) -> Vec<String> {
    let mut left = Vec::new();
    let leases = leased_ids(agent);
    let rules = iptables_save();
    let nft = std::process::Command::new("nft").args(["list", "ruleset"]).output();
    let nft = String::from_utf8_lossy(&nft.expect("nft: install nftables").stdout).into_owned();
    for g in given {
        if leases.contains(&g.container_id) {
            left.push(format!("lease of {} ({:?})", g.container_id, g.ips));
        }
        for v in &g.veths {
            if Path::new("/sys/class/net").join(v).exists() {
                left.push(format!("veth {v} of {}", g.container_id));
            }
        }
        for line in rules.lines().filter(|l| l.contains(&g.container_id)) {
            if !baseline.contains(line) {
                left.push(format!("iptables: {line}"));
            }
        }
        for line in nft.lines().filter(|l| l.contains(&g.container_id)) {
            left.push(format!("nftables: {}", line.trim()));
        }
        if agent.state.join("cni").join("netns").join(&g.container_id).exists() {
            left.push(format!("pinned netns of {}", g.container_id));
        }
    }
    for e in std::fs::read_dir(cache_dir(agent)).into_iter().flatten().flatten() {
        left.push(format!("cache entry {}", e.path().display()));
    }
    left
}

#[track_caller]
pub(crate) fn assert_no_leftovers(agent: &Agent, given: &[Given], baseline: &str) {
    // DEL runs as part of the pod's removal; the pod leaves the API after it.
    let start = Instant::now();
    loop {
        let left = leftovers(agent, given, baseline);
        if left.is_empty() {
            return;
        }
        assert!(start.elapsed() < T, "leaked after the pods were deleted:\n{}", left.join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn accept_within(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, a)) => {
                s.set_nonblocking(false).unwrap();
                return (s, a);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(start.elapsed() < timeout, "no connection from the pod within {timeout:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Pids whose network namespace has inode `ino`.
pub(crate) fn processes_in_netns(ino: u64) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino)
        })
        .collect()
}

#[track_caller]
pub(crate) fn assert_no_leftovers_of(
    agent: &Agent,
    given: &[Given],
    pod_uid: &str,
    baseline: &str,
) {
    let mine: Vec<Given> = given.iter().filter(|g| g.pod_uid == pod_uid).cloned().collect();
    let start = Instant::now();
    loop {
        let left: Vec<String> = leftovers(agent, &mine, baseline)
            .into_iter()
            .filter(|l| !l.starts_with("cache entry"))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(start.elapsed() < T, "leaked:\n{}", left.join("\n"));
        std::thread::sleep(Duration::from_millis(200));
    }
}
