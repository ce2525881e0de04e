//! Pod networking end to end: the built-in CNI network with Debian's
//! containernetworking-plugins and iptables, through a real `outpost run`, as root.
//!
//! Traffic stays on this machine: loopback, the `outpost0` bridge and the pods' namespaces.
//! Other agents (other tests) may share the bridge and host-local's store at the same time,
//! so leak checks look only at what this test's pods were given (their CNI container IDs,
//! veths and IPs, read from the agent's result cache while they ran).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{container_status, phase, pod, Agent, T};
use serde_json::Value;

const LEASES: &str = "/var/lib/cni/networks/outpost";

/// `sleep` and `httpd` as PID 1 ignore SIGTERM: a short grace keeps teardown quick.
const GRACE: &str = "  terminationGracePeriodSeconds: 1\n";

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET / on `addr`, retried until it answers; the body.
#[track_caller]
fn http_body(addr: SocketAddr) -> String {
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
fn interface_ip(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())))
}

fn pod_ip(p: &Value) -> String {
    p["status"]["podIP"].as_str().unwrap_or_default().to_string()
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().unwrap_or_default().to_string()
}

fn running_with_ip(p: &Value) -> bool {
    phase(p) == "Running" && p["status"]["podIP"].is_string()
}

/// A busybox httpd pod serving `body` as its index on `port`.
fn web_pod(name: &str, body: &str, port: u16, extra_container: &str, extra_spec: &str) -> String {
    let script = format!(
        "mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www"
    );
    pod(name, &script, extra_container, extra_spec)
}

/// What one attachment was given, from the agent's CNI result cache.
#[derive(Clone, Debug)]
struct Given {
    container_id: String,
    pod_uid: String,
    ips: Vec<String>,
    veths: Vec<String>,
}

fn cache_dir(agent: &Agent) -> PathBuf {
    agent.state.join("cni").join("results")
}

fn given(agent: &Agent) -> Vec<Given> {
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
                .filter(|n| n.starts_with("veth"))
                .map(String::from)
                .collect(),
        });
    }
    out
}

/// The attachments of these pods, waiting until each has a cached result.
#[track_caller]
fn given_for(agent: &Agent, uids: &[String]) -> Vec<Given> {
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

fn iptables_save() -> String {
    let out = std::process::Command::new("iptables-save")
        .output()
        .expect("iptables-save not found: install iptables (tests/prereqs.sh does)");
    assert!(out.status.success(), "iptables-save: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Container IDs of host-local's current leases (each lease file holds `id\r\nifname`).
fn leased_ids() -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(LEASES).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(id) = text.lines().next() {
            ids.insert(id.trim().to_string());
        }
    }
    ids
}

fn leased_ips() -> BTreeSet<String> {
    std::fs::read_dir(LEASES)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The firewall plugin's rules for `ip` (they carry no container ID).
fn firewall_rules(iptables: &str, ip: &str) -> Vec<String> {
    let needle = format!(" {ip}/32 ");
    iptables
        .lines()
        .filter(|l| l.starts_with("-A CNI-FORWARD") && l.contains(&needle))
        .map(String::from)
        .collect()
}

/// Everything of `given` still on the host: leases, veths, iptables rules, pins, cache.
/// `baseline` is `iptables-save` from before the pods were created.
fn leftovers(agent: &Agent, given: &[Given], baseline: &str) -> Vec<String> {
    let mut left = Vec::new();
    let leases = leased_ids();
    let rules = iptables_save();
    let leased_ips = leased_ips();
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
            left.push(format!("iptables: {line}"));
        }
        // The firewall plugin's rules name only the IP (another agent may hold it again, or
        // have left rules for it before): no more of them than before the pods existed.
        for ip in g.ips.iter().filter(|ip| !leased_ips.contains(*ip)) {
            let now = firewall_rules(&rules, ip);
            let before = firewall_rules(baseline, ip);
            if now.len() > before.len() {
                left.push(format!("firewall rules for {ip}: {now:?} (before: {before:?})"));
            }
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
fn assert_no_leftovers(agent: &Agent, given: &[Given], baseline: &str) {
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

#[test]
fn egress_reaches_a_listener_on_the_bridge_gateway() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    // The first pod brings the bridge up (or finds it already there).
    agent.apply("first.yaml", &pod("first", "sleep 3600", "", GRACE));
    let first = agent.wait_pod("first", T, running_with_ip);
    let gateway = interface_ip("outpost0").expect("outpost0 has an IPv4 address");
    let listener = TcpListener::bind((gateway, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script =
        format!("until echo hello-from-pod | nc {gateway} {port}; do sleep 0.2; done; sleep 3600");
    agent.apply("client.yaml", &pod("client", &script, "", GRACE));
    let client = agent.wait_pod("client", T, running_with_ip);
    listener.set_nonblocking(false).unwrap();
    let (mut conn, peer) = accept_within(&listener, T);
    let mut got = String::new();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello-from-pod\n");
    // Inside the pod subnet there is no masquerading: the host sees the pod's own address.
    assert_eq!(peer.ip().to_string(), pod_ip(&client));
    assert_ne!(pod_ip(&client), pod_ip(&first));
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
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

#[test]
fn host_port_is_reachable_on_loopback_and_the_host_ip() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let port = free_port();
    let ports = format!("    ports:\n    - containerPort: 8080\n      hostPort: {port}\n");
    agent.apply("web.yaml", &web_pod("web", "served-by-pod", 8080, &ports, GRACE));
    let p = agent.wait_pod("web", T, running_with_ip);
    let host_ip = p["status"]["hostIP"].as_str().expect("status.hostIP").to_string();
    assert_eq!(p["status"]["hostIPs"][0]["ip"], host_ip.as_str());
    assert_host_address(&host_ip);
    assert_eq!(http_body(format!("{host_ip}:{port}").parse().unwrap()), "served-by-pod\n");
    assert_eq!(http_body(format!("127.0.0.1:{port}").parse().unwrap()), "served-by-pod\n");
    // The pod's own address works too, without the hostPort.
    assert_eq!(http_body(format!("{}:8080", pod_ip(&p)).parse().unwrap()), "served-by-pod\n");
}

/// Pids whose network namespace has inode `ino`.
fn processes_in_netns(ino: u64) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino)
        })
        .collect()
}

#[test]
fn pods_reach_each_other_on_the_bridge() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("server.yaml", &web_pod("server", "pod-to-pod-ok", 8080, "", GRACE));
    let server = agent.wait_pod("server", T, running_with_ip);
    // The agent made and pinned the namespace (CNI ADD ran while the pause was being made);
    // the pod's processes live in that very namespace.
    let g = given_for(&agent, &[uid(&server)]);
    let pin = agent.state.join("cni").join("netns").join(&g[0].container_id);
    let pinned = std::fs::metadata(&pin).map(|m| m.ino()).expect("pinned netns");
    // Running is reported once the container is started, which can be just before its init
    // has exec'd httpd (more so on a loaded machine): wait for the exec.
    let httpds = || {
        processes_in_netns(pinned)
            .into_iter()
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmd).starts_with("httpd\0")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while httpds() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(httpds(), 1, "the server's httpd runs in the pinned namespace {}", pin.display());
    let sandbox = agent.state.join("pods").join(uid(&server)).join("sandbox.json");
    let sandbox: Value = serde_json::from_slice(&std::fs::read(&sandbox).unwrap()).unwrap();
    assert_eq!(sandbox["netns"], pin.to_str().unwrap(), "the pause joined the agent's namespace");
    let script = format!(
        "until wget -q -O - http://{}:8080/; do sleep 0.2; done; sleep 3600",
        pod_ip(&server)
    );
    agent.apply("client.yaml", &pod("client", &script, "", GRACE));
    let logs = agent.wait_logs("client", "app", "pod-to-pod-ok", T);
    assert_eq!(logs, "pod-to-pod-ok");
}

#[test]
fn host_network_pods_use_the_host_network_and_ip() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let port = free_port();
    let env = "    env:\n    - name: POD_IP\n      valueFrom:\n        fieldRef: {fieldPath: status.podIP}\n";
    let script = format!(
        "echo POD_IP=$POD_IP; ip -4 -o addr; echo END; mkdir -p /www && echo on-host > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    agent.apply("hn.yaml", &pod("hn", &script, env, &format!("  hostNetwork: true\n{GRACE}")));
    let p = agent.wait_pod("hn", T, |p| phase(p) == "Running");
    let host_ip = p["status"]["hostIP"].as_str().expect("status.hostIP").to_string();
    assert_host_address(&host_ip);
    assert_eq!(p["status"]["podIP"], host_ip.as_str());
    assert_eq!(p["status"]["podIPs"][0]["ip"], host_ip.as_str());
    let logs = agent.wait_logs("hn", "app", "END", T);
    assert!(logs.starts_with(&format!("POD_IP={host_ip}\n")), "{logs}");
    // The host's addresses are the pod's.
    assert!(logs.contains(&format!(" inet {host_ip}/")), "{logs}");
    assert_eq!(http_body(format!("127.0.0.1:{port}").parse().unwrap()), "on-host\n");
    assert!(given(&agent).is_empty(), "a hostNetwork pod ran CNI: {:?}", given(&agent));
}

/// `ip` is one of this host's own addresses, not loopback and not the pod bridge's.
#[track_caller]
fn assert_host_address(ip: &str) {
    let addr: Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("hostIP {ip:?} is not IPv4"));
    assert!(!addr.is_loopback(), "hostIP {ip} is loopback");
    assert_ne!(interface_ip("outpost0"), Some(addr), "hostIP is the bridge's address");
    TcpListener::bind((addr, 0)).unwrap_or_else(|e| panic!("hostIP {ip} is not local: {e}"));
}

/// The host's resolvers as the kubelet passes them on: loopback nameservers dropped.
fn host_resolv() -> (Vec<String>, Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (mut ns, mut search, mut opts) = (vec![], vec![], vec![]);
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.first() {
            Some(&"nameserver") if !w[1].starts_with("127.") && w[1] != "::1" => {
                ns.push(w[1].to_string())
            }
            Some(&"search") | Some(&"domain") => {
                search.extend(w[1..].iter().map(|s| s.to_string()))
            }
            Some(&"options") => opts.extend(w[1..].iter().map(|s| s.to_string())),
            _ => {}
        }
    }
    (ns, search, opts)
}

#[test]
fn resolv_conf_and_hosts_follow_dns_policy_dns_config_and_host_aliases() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let show = "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; cat /etc/hostname; echo END; sleep 3600";
    let aliases = "  hostAliases:\n  - ip: 192.0.2.7\n    hostnames: [broker, mqtt.local]\n";
    let dns_config = "  dnsConfig:\n    nameservers: [192.0.2.53]\n    searches: [example.internal]\n    options:\n    - {name: ndots, value: \"2\"}\n    - {name: edns0}\n";
    agent.apply(
        "none.yaml",
        &pod("none", show, "", &format!("  dnsPolicy: None\n{GRACE}{dns_config}{aliases}")),
    );
    agent.apply(
        "default.yaml",
        &pod("default", show, "", &format!("  dnsPolicy: Default\n{GRACE}{dns_config}")),
    );
    agent.apply("cf.yaml", &pod("cf", show, "", &format!("  dnsPolicy: ClusterFirst\n{GRACE}")));

    let none = agent.wait_pod("none", T, running_with_ip);
    let logs = agent.wait_logs("none", "app", "END", T);
    let parts: Vec<&str> = logs.split("---\n").collect();
    assert_eq!(parts[0], "nameserver 192.0.2.53\nsearch example.internal\noptions ndots:2 edns0\n");
    let ip = pod_ip(&none);
    assert_eq!(
        parts[1],
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n\
             {ip}\tnone\n\n# Entries added by HostAliases.\n192.0.2.7\tbroker\tmqtt.local\n"
        )
    );
    assert_eq!(parts[2], "none\nEND");

    // Default: the host's resolvers (no loopback stub), then dnsConfig merged in.
    let (mut ns, mut search, mut opts) = host_resolv();
    let cluster_first = render(&ns, &search, &opts);
    ns.push("192.0.2.53".into());
    ns.truncate(3);
    search.push("example.internal".into());
    opts.retain(|o| o.split(':').next() != Some("ndots") && o != "edns0");
    opts.extend(["ndots:2".to_string(), "edns0".to_string()]);
    agent.wait_pod("default", T, running_with_ip);
    let logs = agent.wait_logs("default", "app", "END", T);
    assert_eq!(logs.split("---\n").next().unwrap(), render(&ns, &search, &opts));
    // ClusterFirst without a cluster DNS is Default (the kubelet without --cluster-dns).
    agent.wait_pod("cf", T, running_with_ip);
    let logs = agent.wait_logs("cf", "app", "END", T);
    assert_eq!(logs.split("---\n").next().unwrap(), cluster_first);
}

fn render(ns: &[String], search: &[String], opts: &[String]) -> String {
    let mut s = String::new();
    for n in ns {
        s += &format!("nameserver {n}\n");
    }
    if !search.is_empty() {
        s += &format!("search {}\n", search.join(" "));
    }
    if !opts.is_empty() {
        s += &format!("options {}\n", opts.join(" "));
    }
    s
}

#[test]
fn fifty_pods_created_and_deleted_leak_nothing() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let baseline = iptables_save();
    let mut uids = Vec::new();
    let mut ports = Vec::new();
    for i in 0..50 {
        // Every tenth pod has a hostPort, so portmap's chains are part of the count.
        let extra = if i % 10 == 0 {
            let port = free_port();
            ports.push(port);
            format!("    ports:\n    - containerPort: 80\n      hostPort: {port}\n")
        } else {
            String::new()
        };
        agent.apply(&format!("p{i}.yaml"), &pod(&format!("p{i}"), "sleep 3600", &extra, GRACE));
    }
    let long = Duration::from_secs(180);
    let mut ips = BTreeSet::new();
    for i in 0..50 {
        let p = agent.wait_pod(&format!("p{i}"), long, running_with_ip);
        uids.push(uid(&p));
        ips.insert(pod_ip(&p));
    }
    assert_eq!(ips.len(), 50, "pod IPs are not unique: {ips:?}");
    let given = given_for(&agent, &uids);
    assert_eq!(given.len(), 50, "one attachment per pod: {given:#?}");
    let rules = iptables_save();
    for port in &ports {
        assert!(rules.contains(&format!("--dport {port} ")), "no DNAT rule for hostPort {port}");
    }
    for i in 0..50 {
        agent.delete(&format!("p{i}.yaml"));
    }
    for i in 0..50 {
        agent.wait_gone(&format!("p{i}"), long);
    }
    assert_no_leftovers(&agent, &given, &baseline);
    let rules = iptables_save();
    for port in &ports {
        assert!(!rules.contains(&format!("--dport {port} ")), "DNAT rule for {port} left");
    }
}

#[test]
fn kill_9_of_the_agent_then_deleting_pods_leaks_nothing() {
    let _guard = crate::support::shared();
    let mut agent = Agent::start();
    let baseline = iptables_save();
    let port = free_port();
    let ports = format!("    ports:\n    - containerPort: 80\n      hostPort: {port}\n");
    agent.apply("a.yaml", &pod("a", "sleep 3600", &ports, GRACE));
    agent.apply("b.yaml", &pod("b", "sleep 3600", "", GRACE));
    agent.apply("c.yaml", &pod("c", "sleep 3600", "", GRACE));
    let uids: Vec<String> =
        ["a", "b", "c"].iter().map(|n| uid(&agent.wait_pod(n, T, running_with_ip))).collect();
    let before: Vec<(String, String)> =
        ["a", "b", "c"].iter().map(|n| (n.to_string(), pod_ip(&agent.pod(n).unwrap()))).collect();
    let given = given_for(&agent, &uids);

    agent.kill();
    // One pod is deleted while the agent is down: the new agent must DEL it from the cache.
    agent.delete("c.yaml");
    agent.spawn();
    for (name, ip) in &before[..2] {
        let p = agent.wait_pod(name, T, running_with_ip);
        assert_eq!(&pod_ip(&p), ip, "pod {name} lost its IP across the agent restart");
    }
    agent.wait_gone("c", T);
    assert_no_leftovers_of(&agent, &given, &uids[2], &baseline);
    agent.delete("a.yaml");
    agent.delete("b.yaml");
    agent.wait_gone("a", T);
    agent.wait_gone("b", T);
    assert_no_leftovers(&agent, &given, &baseline);
}

#[track_caller]
fn assert_no_leftovers_of(agent: &Agent, given: &[Given], pod_uid: &str, baseline: &str) {
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

#[test]
fn a_dead_sandbox_is_torn_down_and_recreated_without_leaks() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    let baseline = iptables_save();
    agent.apply("d.yaml", &pod("d", "sleep 3600", "", GRACE));
    let p = agent.wait_pod("d", T, running_with_ip);
    let pod_uid = uid(&p);
    let old = given_for(&agent, std::slice::from_ref(&pod_uid));
    let sup: Value = serde_json::from_slice(
        &std::fs::read(agent.state.join("pods").join(&pod_uid).join("supervisor.json")).unwrap(),
    )
    .unwrap();
    let pause = sup["sandbox"]["pause_pid"].as_i64().expect("pause_pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pause), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    // The kubelet's answer to a dead sandbox: a new one, with a new attachment.
    let start = Instant::now();
    let new = loop {
        let now = given(&agent);
        if let Some(g) = now.iter().find(|g| {
            g.pod_uid == pod_uid && g.container_id != old[0].container_id && !g.ips.is_empty()
        }) {
            break g.clone();
        }
        assert!(start.elapsed() < T, "no new attachment after the sandbox died: {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let p = agent.wait_pod("d", T, |p| {
        running_with_ip(p)
            && container_status(p, "app")["state"]["running"].is_object()
            && pod_ip(p) == new.ips[0]
    });
    assert_eq!(pod_ip(&p), new.ips[0]);
    assert_no_leftovers_of(&agent, &old, &pod_uid, &baseline);
    agent.delete("d.yaml");
    agent.wait_gone("d", T);
    assert_no_leftovers(&agent, &[old[0].clone(), new], &baseline);
}

#[test]
fn a_broken_cni_config_fails_pod_sandboxes_with_the_reason_and_the_agent_goes_on() {
    let _guard = crate::support::shared();
    let conf = tempfile::tempdir().unwrap();
    let broken = conf.path().join("10-broken.conflist");
    std::fs::write(&broken, "{ this is not json").unwrap();
    let conf_dir = conf.path().to_str().unwrap().to_string();
    let agent = Agent::start_with(&["--cni-conf-dir", &conf_dir]);
    agent.apply("net.yaml", &pod("net", "sleep 3600", "", GRACE));
    agent.apply(
        "hn.yaml",
        &pod("hn", "echo host-ok; sleep 3600", "", &format!("  hostNetwork: true\n{GRACE}")),
    );
    agent.wait_pod("hn", T, |p| phase(p) == "Running");
    agent.wait_logs("hn", "app", "host-ok", T);
    let expected = format!(
        "pod default/net: FailedCreatePodSandBox: Failed to create pod sandbox: failed to set up network for sandbox: CNI config {}: invalid JSON: ",
        broken.display()
    );
    wait_log_line(&agent, &expected);
    let p = agent.pod("net").unwrap();
    assert_eq!(phase(&p), "Pending");
    let cond = p["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodReadyToStartContainers"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(cond["status"], "False", "{cond}");
    assert!(p["status"]["podIP"].is_null());

    // A config naming a plugin that is not installed: the plugin and where it was looked for.
    std::fs::write(
        &broken,
        r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"no-such-plugin"}]}"#,
    )
    .unwrap();
    wait_log_line(
        &agent,
        "pod default/net: FailedCreatePodSandBox: Failed to create pod sandbox: failed to set up network for sandbox: CNI plugin \"no-such-plugin\" not found in /opt/cni/bin, /usr/lib/cni: install it (Debian: containernetworking-plugins)",
    );
    // Fixing the config is enough: the next retry uses the built-in network.
    std::fs::remove_file(&broken).unwrap();
    let long = Duration::from_secs(60);
    agent.wait_pod("net", long, running_with_ip);
    assert!(agent.pod("hn").is_some_and(|p| phase(&p) == "Running"));
}

#[track_caller]
fn wait_log_line(agent: &Agent, prefix: &str) {
    let start = Instant::now();
    let long = Duration::from_secs(60);
    while !agent.agent_log().iter().any(|l| l.contains(prefix)) {
        if start.elapsed() > long {
            let log = agent.agent_log();
            let tail = log[log.len().saturating_sub(30)..].join("\n");
            panic!("no log line with {prefix:?} within {long:?}; the log ends with:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes a bridge this test made (down, then `SIOCBRDELBR`), like `ip link delete`.
fn delete_bridge(name: &str) {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: ifreq is plain data; the ioctls read and write only it and the name.
    unsafe {
        use std::os::fd::AsRawFd;
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in cname.as_bytes_with_nul().iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
            libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr);
        }
        const SIOCBRDELBR: libc::c_ulong = 0x89a1;
        assert_eq!(
            libc::ioctl(sock.as_raw_fd(), SIOCBRDELBR as _, cname.as_ptr()),
            0,
            "delete {name}"
        );
    }
}

/// An `outpost0` serving another subnet (an earlier `--pod-subnet`, another agent) made the
/// bridge plugin refuse every pod, for ever. Another `--pod-subnet` now gets a bridge of its
/// own beside it (deleted by the test afterwards), and both agents' pods run.
#[test]
fn another_pod_subnet_gets_its_own_bridge_beside_outpost0() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("first.yaml", &pod("first", "sleep 3600", "", GRACE));
    agent.wait_pod("first", T, running_with_ip);
    let served = interface_ip("outpost0").expect("outpost0 has an IPv4 address");
    assert_ne!(served.octets()[..3], [10, 123, 77], "outpost0 already serves the test's subnet");
    let other = Agent::start_with(&["--pod-subnet", "10.123.77.0/24"]);
    other.apply("second.yaml", &pod("second", "sleep 3600", "", GRACE));
    let second = other.wait_pod("second", T, running_with_ip);
    assert!(pod_ip(&second).starts_with("10.123.77."), "{}", pod_ip(&second));
    assert_eq!(interface_ip("outpost0a7b4d00"), Some(Ipv4Addr::new(10, 123, 77, 1)));
    assert_eq!(interface_ip("outpost0"), Some(served), "outpost0 untouched");
    other.delete("second.yaml");
    other.wait_gone("second", T);
    drop(other);
    delete_bridge("outpost0a7b4d00");
    assert_eq!(interface_ip("outpost0a7b4d00"), None);
}
