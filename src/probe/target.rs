//! Where an httpGet or tcpSocket handler connects: the port by number or name, the host or
//! the pod's address, and the pod's network namespace when only its loopback is reachable.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// How the pod is reached from the host.
#[derive(Clone, Copy, Debug)]
pub struct PodAddress<'a> {
    pub pod_ips: &'a [String],
    /// The sandbox's network namespace; `None` for hostNetwork pods.
    pub netns: Option<&'a Path>,
    pub host_network: bool,
}

/// The request an httpGet handler makes.
pub async fn http_get(
    get: &HTTPGetAction,
    ports: &[ContainerPort],
    pod: &PodAddress<'_>,
) -> Result<super::HttpGet, String> {
    let port = resolve_port(&get.port, ports)?;
    let ip = ip(get.host.as_deref(), pod).await?;
    let addr = SocketAddr::new(ip, port);
    let mut headers: Vec<(String, String)> =
        get.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
    // A Host header sets the request's host, as Go's `req.Host`.
    let host_header = headers
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|i| headers.remove(i).1);
    let url_host = get.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| ip.to_string());
    Ok(super::HttpGet {
        addr,
        url_host,
        host_header,
        path: get.path.clone().unwrap_or_default(),
        scheme: get.scheme.clone().unwrap_or_else(|| "HTTP".into()),
        headers,
        netns: pod.netns_for_loopback(get.host.as_deref()),
    })
}

/// A number, or the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port as u16)
            .ok_or_else(|| format!("port {name:?} not found in the container's ports")),
    }
}

/// Where probes connect: the handler's host (an IP or a name resolved on the host), else the
/// pod IP; hostNetwork pods and pods without a network are reached on their loopback.
pub async fn ip(host: Option<&str>, pod: &PodAddress<'_>) -> Result<IpAddr, String> {
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        if let Ok(ip) = h.parse() {
            return Ok(ip);
        }
        let addrs = smol::net::resolve((h, 0)).await.map_err(|e| format!("lookup {h}: {e}"))?;
        return addrs
            .first()
            .map(SocketAddr::ip)
            .ok_or_else(|| format!("lookup {h}: no such host"));
    }
    if pod.host_network {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    match pod.pod_ips.first().and_then(|ip| ip.parse().ok()) {
        Some(ip) => Ok(ip),
        None if pod.netns.is_some() => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        None => Err("the pod has no IP address and no network namespace".to_string()),
    }
}

impl PodAddress<'_> {
    /// The pod's network namespace when the probe must connect to its loopback from inside
    /// it (no CNI network: the pod has no IP the host can reach).
    pub fn netns_for_loopback(&self, host: Option<&str>) -> Option<PathBuf> {
        let no_host = host.is_none_or(str::is_empty);
        (no_host && !self.host_network && self.pod_ips.is_empty())
            .then(|| self.netns.map(Path::to_path_buf))
            .flatten()
    }
}
