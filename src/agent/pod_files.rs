//! The files the kubelet writes for each pod and bind-mounts into its containers:
//! `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, and the pod's `/dev/shm`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::runtime::spec::PodFiles;
use crate::volume::Mounter;

/// The kubelet's default `/dev/shm` size.
const SHM_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
#[error("pod {pod}: writing {path}: {source}")]
pub struct PodFilesError {
    pub pod: String,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Writes the pod's files under `dir` (after its IP is known) and mounts its shm.
pub fn write(
    dir: &Path,
    pod: &Pod,
    hostname: &str,
    pod_ips: &[String],
    host_resolv: &str,
    mounter: &dyn Mounter,
) -> Result<PodFiles, PodFilesError> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let err = |path: &Path| {
        let (pod, path) = (pod_name.clone(), path.to_path_buf());
        move |source| PodFilesError { pod, path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let hosts = dir.join("etc-hosts");
    let hosts_text = if host_network {
        // Like the kubelet: a hostNetwork pod sees the node's hosts file (plus its aliases).
        std::fs::read_to_string("/etc/hosts").unwrap_or_default() + &aliases(pod)
    } else {
        hosts_file(pod, hostname, pod_ips)
    };
    write_file(&hosts, &hosts_text).map_err(err(&hosts))?;
    let resolv = dir.join("resolv.conf");
    write_file(&resolv, &resolv_conf(pod, host_resolv)).map_err(err(&resolv))?;
    let hostname_file = dir.join("hostname");
    write_file(&hostname_file, &format!("{hostname}\n")).map_err(err(&hostname_file))?;
    let shm = if spec.and_then(|s| s.host_ipc).unwrap_or(false) {
        None
    } else {
        let shm = dir.join("shm");
        std::fs::create_dir_all(&shm).map_err(err(&shm))?;
        if !mounter.mounts_under(&shm).unwrap_or_default().contains(&shm) {
            mounter.mount_tmpfs(&shm, SHM_BYTES).map_err(|e| PodFilesError {
                pod: pod_name.clone(),
                path: shm.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        Some(shm)
    };
    Ok(PodFiles {
        hosts: Some(hosts),
        resolv_conf: Some(resolv),
        hostname: Some(hostname_file),
        shm,
        termination_log: None,
    })
}

/// A container instance's termination message file (created empty, mounted read-write).
pub fn termination_log(dir: &Path, name: &str, attempt: u32) -> std::io::Result<PathBuf> {
    let path = dir.join("termination").join(format!("{name}.{attempt}"));
    std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
    std::fs::write(&path, b"")?;
    Ok(path)
}

fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The kubelet's `managedHostsFileContent`.
pub fn hosts_file(pod: &Pod, hostname: &str, pod_ips: &[String]) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let subdomain = pod.spec.as_ref().and_then(|s| s.subdomain.clone()).filter(|s| !s.is_empty());
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    for ip in pod_ips {
        match &subdomain {
            Some(sub) => s.push_str(&format!(
                "{ip}\t{hostname}.{sub}.{namespace}.svc.cluster.local\t{hostname}\n"
            )),
            None => s.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    s + &aliases(pod)
}

fn aliases(pod: &Pod) -> String {
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref()).filter(|a| !a.is_empty());
    let Some(aliases) = aliases else { return String::new() };
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.clone().unwrap_or_default().join("\t");
        s.push_str(&format!("{}\t{names}\n", a.ip));
    }
    s
}

/// The kubelet's resolv.conf per dnsPolicy. Without cluster DNS, ClusterFirst falls back to
/// Default, as the kubelet does when it has no `clusterDNS`.
pub fn resolv_conf(pod: &Pod, host_resolv: &str) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let (mut servers, mut searches, mut options) =
        if policy == "None" { Default::default() } else { parse_resolv(host_resolv) };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(cfg.nameservers.iter().flatten().cloned());
        for s in cfg.searches.iter().flatten() {
            if !searches.contains(s) {
                searches.push(s.clone());
            }
        }
        for o in cfg.options.iter().flatten() {
            let opt = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = o.name.as_deref().unwrap_or_default();
            options.retain(|x: &String| x.split(':').next() != Some(name));
            options.push(opt);
        }
    }
    // The kubelet's limits: 3 nameservers, 32 search domains.
    servers.truncate(3);
    searches.truncate(32);
    let mut s = String::new();
    for n in &servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !searches.is_empty() {
        s.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}

/// Nameservers, searches and options of a resolv.conf. Loopback nameservers (systemd-resolved's
/// 127.0.0.53 stub) are dropped: inside a pod's network namespace they answer nothing.
fn parse_resolv(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next() {
                    let loopback = ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
                    if !loopback {
                        servers.push(ip.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => searches.extend(words.map(String::from)),
            Some("options") => options.extend(words.map(String::from)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// The host's resolver configuration, as the kubelet's `--resolv-conf` default: the
/// systemd-resolved upstream file when /etc/resolv.conf only points at the local stub.
pub fn host_resolv_conf() -> String {
    let etc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if parse_resolv(&etc).0.is_empty() {
        if let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return upstream;
        }
    }
    etc
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodDNSConfig, PodDNSConfigOption, PodSpec};

    fn pod(f: impl FnOnce(&mut PodSpec)) -> Pod {
        let mut spec = PodSpec::default();
        f(&mut spec);
        let mut p = Pod { spec: Some(spec), ..Default::default() };
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("default".into());
        p
    }

    const HOST: &str =
        "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch lan\noptions edns0 ndots:1\n";

    #[test]
    fn hosts_has_localhost_the_pod_ip_and_aliases() {
        let p = pod(|s| {
            s.host_aliases = Some(vec![HostAlias {
                ip: "192.0.2.7".into(),
                hostnames: Some(vec!["broker".into(), "mqtt.local".into()]),
            }])
        });
        let text = hosts_file(&p, "web", &["10.88.0.5".into()]);
        assert!(
            text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
            "{text}"
        );
        assert!(text.contains("\n10.88.0.5\tweb\n"), "{text}");
        assert!(
            text.ends_with("\n# Entries added by HostAliases.\n192.0.2.7\tbroker\tmqtt.local\n"),
            "{text}"
        );
        let with_sub = pod(|s| s.subdomain = Some("sub".into()));
        assert!(hosts_file(&with_sub, "web", &["10.88.0.5".into()])
            .contains("10.88.0.5\tweb.sub.default.svc.cluster.local\tweb\n"));
    }

    #[test]
    fn default_and_cluster_first_use_the_host_resolvers_without_loopback() {
        let expected = "nameserver 192.0.2.53\nsearch lan\noptions edns0 ndots:1\n";
        assert_eq!(resolv_conf(&pod(|s| s.dns_policy = Some("Default".into())), HOST), expected);
        assert_eq!(
            resolv_conf(&pod(|s| s.dns_policy = Some("ClusterFirst".into())), HOST),
            expected
        );
    }

    #[test]
    fn dns_config_merges_and_none_starts_empty() {
        let cfg = PodDNSConfig {
            nameservers: Some(vec!["192.0.2.1".into()]),
            searches: Some(vec!["svc.example".into(), "lan".into()]),
            options: Some(vec![PodDNSConfigOption {
                name: Some("ndots".into()),
                value: Some("5".into()),
            }]),
        };
        let merged = pod(|s| s.dns_config = Some(cfg.clone()));
        assert_eq!(
            resolv_conf(&merged, HOST),
            "nameserver 192.0.2.53\nnameserver 192.0.2.1\nsearch lan svc.example\noptions edns0 ndots:5\n"
        );
        let none = pod(|s| {
            s.dns_policy = Some("None".into());
            s.dns_config = Some(cfg);
        });
        assert_eq!(
            resolv_conf(&none, HOST),
            "nameserver 192.0.2.1\nsearch svc.example lan\noptions ndots:5\n"
        );
    }
}
