//! Pod networking end to end: the built-in network (in-process: bridge, veths, leases and an
//! nftables table over netlink) through a real `outpost run`, as root.
//!
//! Traffic stays on this machine: loopback, the agents' bridges and the pods' namespaces.
//! Every agent has a bridge, subnet and table of its own (other tests' agents run at the same
//! time), and leak checks look at what this test's pods were given (their attachment IDs,
//! veths and IPs, read from the agent's result cache while they ran).

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::network_support::*;
use crate::support::{container_status, phase, pod, Agent, T};
use serde_json::Value;

#[test]
fn egress_reaches_a_listener_on_the_bridge_gateway() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    // The first pod brings the bridge up (or finds it already there).
    agent.apply("first.yaml", &pod("first", "sleep 3600", "", GRACE));
    let first = agent.wait_pod("first", T, running_with_ip);
    let (bridge, subnet) = bridge_of(&agent);
    let gateway = interface_ip(&bridge).expect("the bridge has an IPv4 address");
    assert_eq!(gateway, subnet.gateway());
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

#[test]
fn pods_reach_each_other_on_the_bridge() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("server.yaml", &web_pod("server", "pod-to-pod-ok", 8080, "", GRACE));
    let server = agent.wait_pod("server", T, running_with_ip);
    // The agent made and pinned the namespace (CNI ADD ran while the sandbox was being made);
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
    assert_eq!(sandbox["netns"], pin.to_str().unwrap(), "the sandbox joined the agent's namespace");
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
    let bridges =
        nix::ifaddrs::getifaddrs().unwrap().filter(|a| a.interface_name.starts_with("outpost"));
    for b in bridges {
        let ip = b.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip()));
        assert_ne!(ip, Some(addr), "hostIP is the address of bridge {}", b.interface_name);
    }
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
    let (bridge, subnet) = bridge_of(&agent);
    let table = nft_table(&bridge);
    for port in &ports {
        assert!(
            table.contains(&format!("dport {port} ")),
            "no DNAT rule for hostPort {port}:\n{table}"
        );
    }
    for ip in &ips {
        assert!(subnet.contains(ip.parse().unwrap()), "{ip} is outside {subnet}");
    }
    for i in 0..50 {
        agent.delete(&format!("p{i}.yaml"));
    }
    for i in 0..50 {
        agent.wait_gone(&format!("p{i}"), long);
    }
    assert_no_leftovers(&agent, &given, &baseline);
    // No pod left: the bridge (and its route) and the table go with the last one, right
    // after its teardown (the API may show the pod gone a moment before).
    crate::support::eventually(Duration::from_secs(20), || {
        match (interface_ip(&bridge), nft_table(&bridge)) {
            (None, table) if table.is_empty() => Ok(()),
            (ip, table) => {
                Err(format!("bridge {bridge} ({ip:?}) or its table outlived its pods:\n{table}"))
            }
        }
    });
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

#[test]
fn a_dead_sandbox_is_torn_down_and_recreated_without_leaks() {
    let _guard = crate::support::shared();
    // Without a pause the sandbox lives as long as its supervisor.
    dead_sandbox("", "pid");
}

#[test]
fn a_dead_pause_of_a_shared_pid_namespace_recreates_the_pod_without_leaks() {
    let _guard = crate::support::shared();
    dead_sandbox("  shareProcessNamespace: true\n", "pause_pid");
}

/// Kills the process `supervisor.json` names at `sandbox.<which>` (or the supervisor itself for
/// `pid`) of a running pod and expects a new sandbox with a new attachment and no leftovers.
fn dead_sandbox(spec: &str, which: &str) {
    let agent = Agent::start();
    let baseline = iptables_save();
    agent.apply("d.yaml", &pod("d", "sleep 3600", "", &format!("{spec}{GRACE}")));
    let p = agent.wait_pod("d", T, running_with_ip);
    let pod_uid = uid(&p);
    let old = given_for(&agent, std::slice::from_ref(&pod_uid));
    let sup: Value = serde_json::from_slice(
        &std::fs::read(agent.state.join("pods").join(&pod_uid).join("supervisor.json")).unwrap(),
    )
    .unwrap();
    let pid = if which == "pid" { &sup["pid"] } else { &sup["sandbox"][which] };
    let pid = pid.as_i64().filter(|&p| p > 0).unwrap_or_else(|| panic!("{which} in {sup}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
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

/// Two agents on one host (an earlier `--pod-subnet`, a second instance, these tests): each
/// gets a bridge, subnet and table of its own, never the other's, and each removes only its
/// own when its last pod goes.
#[test]
fn two_agents_get_bridges_of_their_own_and_remove_only_their_own() {
    let _guard = crate::support::shared();
    let agent = Agent::start();
    agent.apply("first.yaml", &pod("first", "sleep 3600", "", GRACE));
    agent.wait_pod("first", T, running_with_ip);
    let (bridge, subnet) = bridge_of(&agent);
    let other = Agent::start_with(&["--pod-subnet", "10.123.77.0/24"]);
    other.apply("second.yaml", &pod("second", "sleep 3600", "", GRACE));
    let second = other.wait_pod("second", T, running_with_ip);
    assert!(pod_ip(&second).starts_with("10.123.77."), "{}", pod_ip(&second));
    let (other_bridge, _) = bridge_of(&other);
    assert_ne!(other_bridge, bridge);
    assert_eq!(interface_ip(&other_bridge), Some(Ipv4Addr::new(10, 123, 77, 1)));
    assert_eq!(interface_ip(&bridge), Some(subnet.gateway()), "the first bridge untouched");
    other.delete("second.yaml");
    other.wait_gone("second", T);
    let start = Instant::now();
    while interface_ip(&other_bridge).is_some() {
        assert!(start.elapsed() < T, "{other_bridge} outlived its last pod");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(interface_ip(&bridge), Some(subnet.gateway()), "the first bridge untouched");
    let p = agent.pod("first").unwrap();
    assert!(running_with_ip(&p));
}

/// Where nf_tables is missing, or the operator asks for it, the built-in network runs as CNI
/// plugins (bridge, host-local, portmap, firewall): the same network, nothing left after.
#[test]
fn the_built_in_network_also_runs_as_cni_plugins() {
    let _guard = crate::support::shared();
    let agent = Agent::start_with(&["--builtin-network", "cni-plugins"]);
    let baseline = iptables_save();
    let port = free_port();
    let ports = format!("    ports:\n    - containerPort: 8080\n      hostPort: {port}\n");
    agent.apply("web.yaml", &web_pod("web", "via-plugins", 8080, &ports, GRACE));
    let p = agent.wait_pod("web", T, running_with_ip);
    assert_eq!(http_body(format!("127.0.0.1:{port}").parse().unwrap()), "via-plugins\n");
    wait_log_line(&agent, "using the CNI plugins bridge, portmap and firewall on bridge ");
    let given = given_for(&agent, &[uid(&p)]);
    let entry = std::fs::read_dir(cache_dir(&agent)).unwrap().flatten().next().unwrap();
    let entry: Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
    let types: Vec<&str> = entry["networkList"]["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert_eq!(types, ["bridge", "portmap", "firewall"]);
    agent.delete("web.yaml");
    agent.wait_gone("web", T);
    assert_no_leftovers(&agent, &given, &baseline);
    // The bridge plugin leaves its bridge: this test's goes (other agents' stay).
    let log = agent.agent_log();
    let line = log.iter().find(|l| l.contains("portmap and firewall on bridge ")).unwrap();
    let bridge = line.split("on bridge ").nth(1).unwrap().split(',').next().unwrap();
    let ports = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif")).map(|d| d.count());
    if ports.is_ok_and(|n| n == 0) {
        let _ = outpost::network::rtnl::Rtnl::open().unwrap().delete_link(bridge);
    }
}
