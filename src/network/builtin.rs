//! The built-in network, in-process: a bridge, a veth pair per pod, leases in the state
//! database and one nftables table, all over netlink. No plugin process and no iptables run
//! when a pod starts (the CNI chain it replaces, [`super::default`], ran three plugins and
//! ~16 iptables execs: 45–80 ms per pod).
//!
//! It plugs into the CNI machinery as an in-process plugin ([`PLUGIN`]): attachments are cached
//! and replayed for DEL exactly as for executables, so crashes, adoption and upgrades from the
//! executable chain work the same way.
//!
//! Ownership: the bridge carries an alias naming this agent's state directory, so a second
//! agent on the host never takes another's bridge; the nftables table is named after the
//! bridge; host veths are `op-` and 12 hex digits of the attachment's ID. Bridge and table
//! exist only while a lease does: no route of ours outlives our pods. Subnet and bridge change
//! only while no lease exists, so every lease lives on the bridge and table in force.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};

use super::cni::{Attachment, CachedAttachment, CniError, NetworkList, PortMapping};
use super::default::NETWORK_NAME;
use super::nft::{self, HostPort, NftError, Proto, Table};
use super::rtnl::Rtnl;
use super::subnet::{self, Subnet, Taken};
use crate::store::Leases;

/// The plugin type of the built-in network in configuration lists and cache entries.
pub const PLUGIN: &str = "outpost-bridge";
/// The bridge's name when no other agent has it.
pub const BRIDGE: &str = "outpost0";
/// Host-wide: agents choosing subnets and creating bridges take turns.
const LOCK: &str = "/run/outpost/network.lock";

/// The host end of an attachment's veth pair.
pub fn veth_name(container_id: &str) -> String {
    format!("op-{}", container_id.get(..12).unwrap_or(container_id))
}

/// The built-in network's configuration list: one in-process plugin.
pub fn list() -> NetworkList {
    let text =
        json!({ "cniVersion": "1.0.0", "name": NETWORK_NAME, "plugins": [{ "type": PLUGIN }] });
    NetworkList::parse(None, &text.to_string()).expect("the built-in network list is valid")
}

/// Whether a cached list is the in-process network's.
pub fn is_builtin(list: &NetworkList) -> bool {
    list.plugins.iter().any(|p| p.get("type").and_then(Value::as_str) == Some(PLUGIN))
}

#[derive(Clone, Debug, PartialEq)]
struct Current {
    subnet: Subnet,
    bridge: String,
    /// The bridge's interface index once it and the table exist (this agent made or found
    /// them); `None` before and after.
    index: Option<u32>,
}

pub struct Builtin {
    leases: Leases,
    /// The bridge's alias: which agent owns it.
    owner: String,
    /// `<state>/cni/builtin`: "SUBNET BRIDGE", kept so leases stay valid across restarts.
    record: PathBuf,
    /// `--pod-subnet`.
    requested: Option<Subnet>,
    current: Mutex<Current>,
    /// The overlaps last logged, so each is logged once.
    overlaps: Mutex<Vec<String>>,
}

fn err(step: &'static str, detail: impl std::fmt::Display) -> CniError {
    CniError::Builtin { step, detail: detail.to_string() }
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin").field("current", &*self.lock()).finish_non_exhaustive()
    }
}

impl Builtin {
    /// The in-process network, or why it cannot run here: nf_tables missing, netlink refused,
    /// the state database unreadable.
    pub fn open(paths: &super::NetworkPaths) -> Result<Self, CniError> {
        probe_nftables().map_err(|e| err("nf_tables", e))?;
        let leases = Leases::open(&paths.state_dir.join(crate::store::DATABASE))
            .map_err(|e| err("leases", e))?;
        Self::new(leases, &paths.state_dir, paths.subnet)
    }

    /// The network this agent will use; nothing on the host changes until the first pod.
    pub fn new(
        leases: Leases,
        state_dir: &Path,
        requested: Option<Subnet>,
    ) -> Result<Self, CniError> {
        let record = state_dir.join("cni").join("builtin");
        let saved = std::fs::read_to_string(&record).ok().and_then(|s| {
            let (subnet, bridge) = s.trim().split_once(' ')?;
            Some(Current { subnet: subnet.parse().ok()?, bridge: bridge.to_string(), index: None })
        });
        let b = Self {
            leases,
            owner: format!("outpost:{}", state_dir.display()),
            record,
            requested,
            overlaps: Mutex::new(Vec::new()),
            current: Mutex::new(Current {
                subnet: "10.2.0.0/24".parse().expect("valid"),
                bridge: BRIDGE.into(),
                index: None,
            }),
        };
        let cur = match saved {
            Some(saved) if requested.is_none_or(|r| r == saved.subnet) => saved,
            _ => b.choose(None)?,
        };
        *b.lock() = cur;
        Ok(b)
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bridge and subnet in force, for the log.
    pub fn describe(&self) -> (String, Subnet) {
        let cur = self.lock();
        (cur.bridge.clone(), cur.subnet)
    }

    /// Every prefix on the host (addresses, and routes of every table) except our bridge's.
    fn host_taken(&self, ours: Option<&str>) -> Result<Vec<Taken>, CniError> {
        let rtnl = Rtnl::open().map_err(|e| err("reading the host's routes", e))?;
        let mut taken = Vec::new();
        for r in rtnl.routes().map_err(|e| err("reading the host's routes", e))? {
            let dev = r.device.unwrap_or_else(|| "none".into());
            if r.dst.len == 0 || Some(dev.as_str()) == ours {
                continue;
            }
            taken.push(Taken { prefix: r.dst, by: format!("route dev {dev} table {}", r.table) });
        }
        for a in rtnl.addresses().map_err(|e| err("reading the host's addresses", e))? {
            if Some(a.device.as_str()) == ours {
                continue;
            }
            let prefix = Subnet { addr: a.address, len: a.prefix_len };
            taken.push(Taken { prefix, by: format!("address of {}", a.device) });
        }
        Ok(taken)
    }

    /// A subnet and bridge name clear of everything on the host; `ours` is our own bridge,
    /// which does not count.
    fn choose(&self, ours: Option<&str>) -> Result<Current, CniError> {
        let taken = self.host_taken(ours)?;
        let subnet = match self.requested {
            Some(s) => {
                for t in subnet::conflicts(&s, &taken) {
                    log::warn!("network: --pod-subnet {s} overlaps {t}");
                }
                s
            }
            None => subnet::pick(&taken).ok_or_else(|| {
                err("choosing a subnet", "no free /24 in 10.2.0.0-10.31.255.255 or 172.16.0.0/16: set --pod-subnet or add a .conflist")
            })?,
        };
        let exists = |name: &str| Path::new("/sys/class/net").join(name).exists();
        let bridge = if !exists(BRIDGE)
            || ours == Some(BRIDGE)
            || alias(BRIDGE).as_deref() == Some(&self.owner)
        {
            BRIDGE.to_string()
        } else {
            format!("outpost{:08x}", u32::from(subnet.addr))
        };
        Ok(Current { subnet, bridge, index: None })
    }

    /// The bridge and table, made if missing, checked for a conflict when made. The caller
    /// holds `cur` (the lock that orders leases against teardown).
    fn ensure(&self, cur: &mut Current, leased: bool) -> Result<(), CniError> {
        if cur.index.is_some() && alias(&cur.bridge).as_deref() == Some(&self.owner) {
            return Ok(());
        }
        let _host = HostLock::take()?;
        let mine = alias(&cur.bridge).as_deref() == Some(&self.owner);
        if !leased {
            // Free to move: away from whatever appeared since, and from another agent's bridge.
            let taken = self.host_taken(mine.then_some(cur.bridge.as_str()))?;
            let clash =
                !subnet::conflicts(&cur.subnet, &taken).is_empty() && self.requested.is_none();
            let foreign = !mine && Path::new("/sys/class/net").join(&cur.bridge).exists();
            if clash || foreign {
                let next = self.choose(mine.then_some(cur.bridge.as_str()))?;
                log::info!(
                    "network: built-in bridge {} on {} instead of {} on {} (taken since)",
                    next.bridge,
                    next.subnet,
                    cur.bridge,
                    cur.subnet
                );
                *cur = next;
            }
        } else if !mine && Path::new("/sys/class/net").join(&cur.bridge).exists() {
            return Err(err(
                "bridge",
                format!(
                    "{} belongs to another agent ({})",
                    cur.bridge,
                    alias(&cur.bridge).unwrap_or_default()
                ),
            ));
        }
        let rtnl = Rtnl::open().map_err(|e| err("bridge", e))?;
        let index = rtnl
            .ensure_bridge(&cur.bridge, cur.subnet.gateway(), cur.subnet.len)
            .map_err(|e| err("bridge", e))?;
        set_alias(&cur.bridge, &self.owner).map_err(|e| err("bridge alias", e))?;
        // 127.0.0.1:hostPort is DNATed to the pod: the kernel drops that unless the bridge
        // routes localnet; the table's input guard keeps pods off the host's 127.0.0.1.
        sysctl(&format!("net/ipv4/conf/{}/route_localnet", cur.bridge), "1")?;
        // Egress needs forwarding; the kubelet leaves it to the admin, podman and k3s set it.
        sysctl("net/ipv4/ip_forward", "1")?;
        Table(cur.bridge.clone()).install(cur.subnet, &[]).map_err(|e| err("nftables", e))?;
        allow_forwarding(cur);
        let saved = format!("{} {}\n", cur.subnet, cur.bridge);
        if let Err(e) = std::fs::create_dir_all(self.record.parent().unwrap_or(Path::new("/")))
            .and_then(|()| std::fs::write(&self.record, saved))
        {
            log::warn!("network: cannot record the subnet in {}: {e}", self.record.display());
        }
        cur.index = Some(index);
        Ok(())
    }

    /// Logs, once each, what has come to overlap the subnet while the bridge is up (a VPN, a
    /// runtime started later): traffic to those addresses would now be ambiguous.
    pub fn check_overlaps(&self) {
        let cur = self.lock().clone();
        let taken =
            if cur.index.is_some() { self.host_taken(Some(&cur.bridge)) } else { Ok(Vec::new()) };
        let Ok(taken) = taken else { return };
        let now: Vec<String> =
            taken.iter().filter(|t| t.prefix.overlaps(&cur.subnet)).map(Taken::to_string).collect();
        let mut logged = self.overlaps.lock().unwrap_or_else(|p| p.into_inner());
        for t in now.iter().filter(|t| !logged.contains(t)) {
            log::warn!(
                "network: the pods' subnet {} (bridge {}) now overlaps {t}: set --pod-subnet to a free range, or move the other network",
                cur.subnet,
                cur.bridge
            );
        }
        *logged = now;
    }

    /// ADD: a lease (committed first), the bridge, the veth pair with the pod's end in its
    /// namespace, its address and default route, and its hostPorts. Returns a CNI result.
    pub fn add(&self, att: &Attachment) -> Result<Value, CniError> {
        let pod_uid = att.pod_uid().unwrap_or_default();
        let (cur, ip) = {
            let mut cur = self.lock();
            let leased = !self.leases.all().map_err(|e| err("lease", e))?.is_empty();
            if !leased {
                // Before the first lease: subnet and bridge may still move.
                self.ensure(&mut cur, false)?;
            }
            let ip = self
                .leases
                .grant(cur.subnet, &att.container_id, pod_uid)
                .map_err(|e| err("lease", e))?;
            self.ensure(&mut cur, true)?;
            (cur.clone(), ip)
        };
        let host = veth_name(&att.container_id);
        let netns =
            File::open(&att.netns).map_err(|e| err("opening the pod's network namespace", e))?;
        let bridge = cur.index.ok_or_else(|| err("bridge", "not set up"))?;
        let rtnl = Rtnl::open().map_err(|e| err("veth", e))?;
        rtnl.add_veth(&host, &att.ifname, netns.as_fd(), bridge).map_err(|e| err("veth", e))?;
        Rtnl::open_in(&att.netns)
            .and_then(|pod| {
                pod.configure_pod_interface(&att.ifname, ip, cur.subnet.len, cur.subnet.gateway())
            })
            .map_err(|e| err("pod interface", e))?;
        let ports = host_ports(att, ip);
        if !ports.is_empty() {
            Table(cur.bridge.clone())
                .add_hostports(&ports)
                .map_err(|e| err("hostPort rules", e))?;
            flush_stale_udp(att, &ports);
        }
        Ok(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{ "name": host }, { "name": att.ifname, "sandbox": att.netns }],
            "ips": [{ "address": format!("{ip}/{}", cur.subnet.len), "gateway": cur.subnet.gateway().to_string(), "interface": 1 }],
            "routes": [{ "dst": "0.0.0.0/0", "gw": cur.subnet.gateway().to_string() }],
        }))
    }

    /// DEL: hostPort rules, the veth (gone already if the namespace is), then the lease; the
    /// bridge and table go with the last lease. Idempotent.
    pub fn del(&self, att: &Attachment) -> Result<(), CniError> {
        let bridge = self.lock().bridge.clone();
        Table(bridge).remove_hostports(&att.container_id).map_err(|e| err("hostPort rules", e))?;
        let rtnl = Rtnl::open().map_err(|e| err("veth", e))?;
        rtnl.delete_link(&veth_name(&att.container_id)).map_err(|e| err("veth", e))?;
        self.leases.release(&att.container_id).map_err(|e| err("lease", e))?;
        self.teardown_if_idle()
    }

    /// Removes the bridge and table once no lease is left.
    fn teardown_if_idle(&self) -> Result<(), CniError> {
        let mut cur = self.lock();
        if !self.leases.all().map_err(|e| err("lease", e))?.is_empty() {
            return Ok(());
        }
        let _host = HostLock::take()?;
        Table(cur.bridge.clone()).remove().map_err(|e| err("nftables", e))?;
        match nft::remove_forwarding(&cur.bridge) {
            Ok(0) => {}
            Ok(_) => log::info!("network: FORWARD accept rules of {} removed", cur.bridge),
            Err(e) => {
                log::warn!("network: removing the FORWARD accept rules of {}: {e}", cur.bridge)
            }
        }
        if alias(&cur.bridge).as_deref() == Some(&self.owner) {
            let rtnl = Rtnl::open().map_err(|e| err("bridge", e))?;
            rtnl.delete_link(&cur.bridge).map_err(|e| err("bridge", e))?;
            log::info!("network: no pod left: bridge {} and its routes removed", cur.bridge);
        }
        cur.index = None;
        Ok(())
    }

    /// At agent start, with the network's cache entries: leases nothing uses are released
    /// (with their veth and rules), leases lost with a damaged database come back from the
    /// cache, the table is rewritten with the running pods' hostPorts, and with no pod left
    /// the bridge goes. A bridge an older outpost left in another runtime's range goes too.
    pub fn reconcile(&self, cached: &[CachedAttachment]) {
        let attached = |id: &str| cached.iter().any(|c| c.attachment.container_id == id);
        let leases = self.leases.all().unwrap_or_else(|e| {
            log::warn!("network: reading leases: {e}");
            Vec::new()
        });
        for l in leases.iter().filter(|l| !attached(&l.container_id)) {
            let att = Attachment {
                container_id: l.container_id.clone(),
                netns: PathBuf::new(),
                ifname: "eth0".into(),
                args: Vec::new(),
                port_mappings: Vec::new(),
            };
            match self.del(&att) {
                Ok(()) => log::info!("network: released {} of a sandbox no longer attached", l.ip),
                Err(e) => log::warn!("network: releasing {}: {e}", l.ip),
            }
        }
        let cur = self.lock().clone();
        let mut ports = Vec::new();
        for c in cached {
            let Some(ip) = c.result.pod_ips().first().and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            ports.extend(host_ports(&c.attachment, ip));
            if !leases.iter().any(|l| l.container_id == c.attachment.container_id) {
                let uid = c.attachment.pod_uid().unwrap_or_default();
                match self.leases.restore(cur.subnet, ip, &c.attachment.container_id, uid) {
                    Ok(true) => {
                        log::info!("network: lease of {ip} restored from the attachment cache")
                    }
                    Ok(false) => log::warn!(
                        "network: {ip} of {} is leased to another sandbox",
                        c.attachment.container_id
                    ),
                    Err(e) => log::warn!("network: restoring the lease of {ip}: {e}"),
                }
            }
        }
        if !cached.is_empty() && alias(&cur.bridge).as_deref() == Some(&self.owner) {
            let index = Rtnl::open()
                .and_then(|r| r.ensure_bridge(&cur.bridge, cur.subnet.gateway(), cur.subnet.len))
                .map_err(|e| err("bridge", e));
            match index.and_then(|index| {
                Table(cur.bridge.clone())
                    .install(cur.subnet, &ports)
                    .map(|()| index)
                    .map_err(|e| err("nftables", e))
            }) {
                Ok(index) => {
                    allow_forwarding(&cur);
                    self.lock().index = Some(index)
                }
                Err(e) => log::warn!("network: rewriting table {}: {e}", cur.bridge),
            }
        }
        if let Err(e) = self.teardown_if_idle() {
            log::warn!("network: {e}");
        }
        remove_old_bridges();
    }
}

/// The hostPorts of an attachment, as nftables rules for `ip`.
fn host_ports(att: &Attachment, ip: Ipv4Addr) -> Vec<HostPort> {
    att.port_mappings
        .iter()
        .filter_map(|p: &PortMapping| {
            Some(HostPort {
                id: att.container_id.clone(),
                host_ip: p.host_ip.parse().ok(),
                host_port: p.host_port,
                protocol: p.protocol.parse().ok()?,
                pod_ip: ip,
                container_port: p.container_port,
            })
        })
        .collect()
}

/// Deletes the conntrack entries of UDP flows to the attachment's UDP hostPorts, as the CNI
/// portmap plugin does: a flow that reached the host's port before the DNAT rule existed keeps
/// its entry, and bypasses the rule, for as long as its client keeps sending. A failure only
/// leaves such flows where they were: logged, the pod still starts.
fn flush_stale_udp(att: &Attachment, ports: &[HostPort]) {
    for port in udp_ports(ports) {
        match nft::conntrack::delete_udp_to_port(port) {
            Ok(0) => {}
            Ok(n) => log::debug!(
                "network: {n} UDP conntrack entries to hostPort {port} deleted for attachment {}",
                att.container_id
            ),
            Err(e) => log::warn!(
                "network: attachment {} (pod {}): UDP flows to hostPort {port} that predate its rule keep bypassing it (conntrack entries not deleted: {e})",
                att.container_id,
                att.pod_uid().unwrap_or("?")
            ),
        }
    }
}

/// The distinct UDP hostPorts (one per port, whatever its host IPs).
fn udp_ports(ports: &[HostPort]) -> Vec<u16> {
    let mut udp: Vec<u16> =
        ports.iter().filter(|p| p.protocol == Proto::Udp).map(|p| p.host_port).collect();
    udp.sort_unstable();
    udp.dedup();
    udp
}

/// Bridges an older outpost made in podman's range (10.88.0.0/24 and on) without a port left:
/// they shadowed podman's network.
fn remove_old_bridges() {
    let Ok(rtnl) = Rtnl::open() else { return };
    let Ok(addresses) = rtnl.addresses() else { return };
    let reserved = subnet::reserved();
    for a in addresses.iter().filter(|a| a.device.starts_with("outpost")) {
        let dev = Path::new("/sys/class/net").join(&a.device);
        let ports = std::fs::read_dir(dev.join("brif")).map(|d| d.count()).unwrap_or(1);
        let prefix = Subnet { addr: a.address, len: a.prefix_len };
        if ports > 0
            || alias(&a.device).is_some()
            || !reserved.iter().any(|r| r.prefix.overlaps(&prefix))
        {
            continue;
        }
        match rtnl.delete_link(&a.device) {
            Ok(_) => log::info!(
                "network: removed bridge {} ({prefix}), left by an older outpost in {}",
                a.device,
                reserved.iter().find(|r| r.prefix.overlaps(&prefix)).map_or("", |r| r.by.as_str())
            ),
            Err(e) => log::warn!("network: removing the old bridge {}: {e}", a.device),
        }
    }
}

/// Where iptables' FORWARD chain drops by policy (docker sets that), our accept rules for the
/// subnet, as the CNI firewall plugin adds them; our own table cannot override another
/// table's drop. A failure only costs egress: logged, the pods still start.
fn allow_forwarding(cur: &Current) {
    match nft::allow_forwarding(cur.subnet, &cur.bridge) {
        Ok(true) => log::info!(
            "network: the FORWARD chain drops by policy: accept rules for {} added (comment outpost:{})",
            cur.subnet,
            cur.bridge
        ),
        Ok(false) => {}
        Err(e) => log::warn!(
            "network: the FORWARD chain's policy could not be checked or our accept rules added ({e}): if it drops, pods have no egress"
        ),
    }
}

/// Whether the kernel runs our table (nf_tables with its nat, masq, fib and ct expressions):
/// a scratch table installed and removed.
fn probe_nftables() -> Result<(), NftError> {
    let probe = Table(format!("outpost-probe-{}", std::process::id()));
    let installed = probe.install("10.255.255.0/24".parse().expect("valid"), &[]);
    let removed = probe.remove();
    installed.and(removed)
}

/// A link's alias (`ip link set … alias`), `None` when unset or absent.
fn alias(link: &str) -> Option<String> {
    let s = std::fs::read_to_string(Path::new("/sys/class/net").join(link).join("ifalias")).ok()?;
    Some(s.trim_end().to_string()).filter(|s| !s.is_empty())
}

fn set_alias(link: &str, alias: &str) -> std::io::Result<()> {
    std::fs::write(Path::new("/sys/class/net").join(link).join("ifalias"), alias)
}

fn sysctl(key: &str, value: &str) -> Result<(), CniError> {
    std::fs::write(Path::new("/proc/sys").join(key), value)
        .map_err(|e| err("sysctl", format!("{key}: {e}")))
}

/// The host-wide lock, held while an agent chooses, makes or removes its bridge.
struct HostLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

impl HostLock {
    fn take() -> Result<Self, CniError> {
        let path = Path::new(LOCK);
        let open = std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))
            .and_then(|()| File::options().create(true).truncate(false).write(true).open(path))
            .map_err(|e| err("lock", format!("{LOCK}: {e}")))?;
        nix::fcntl::Flock::lock(open, nix::fcntl::FlockArg::LockExclusive)
            .map(HostLock)
            .map_err(|(_, e)| err("lock", format!("{LOCK}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_udp_flows_are_flushed_once_per_udp_hostport() {
        let port = |host_port, protocol, host_ip: Option<[u8; 4]>| HostPort {
            id: "a".into(),
            host_ip: host_ip.map(Ipv4Addr::from),
            host_port,
            protocol,
            pod_ip: Ipv4Addr::new(10, 2, 0, 2),
            container_port: 53,
        };
        let ports = [
            port(5353, Proto::Udp, None),
            port(53, Proto::Udp, Some([127, 0, 0, 1])),
            port(53, Proto::Udp, Some([192, 0, 2, 1])),
            port(53, Proto::Tcp, None),
            port(514, Proto::Sctp, None),
        ];
        assert_eq!(udp_ports(&ports), [53, 5353]);
        assert_eq!(udp_ports(&ports[3..]), Vec::<u16>::new());
    }
}
