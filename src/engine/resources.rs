//! Resource arithmetic for admission and eviction: the kubelet's effective pod request and
//! limit (`resourcehelper.PodRequests` / `PodLimits`), resource lists as `--system-reserved`
//! takes them, and `resource.Quantity.String()` for the amounts quoted in messages.

use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::status::is_sidecar;
pub use crate::quantity::Format;
use crate::quantity::Quantity;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

/// cpu in millicores, memory and ephemeral storage in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceList {
    pub cpu_milli: i128,
    pub memory: i128,
    pub ephemeral_storage: i128,
}

impl ResourceList {
    pub fn get(&self, name: &str) -> i128 {
        match name {
            CPU => self.cpu_milli,
            MEMORY => self.memory,
            _ => self.ephemeral_storage,
        }
    }

    fn get_mut(&mut self, name: &str) -> &mut i128 {
        match name {
            CPU => &mut self.cpu_milli,
            MEMORY => &mut self.memory,
            _ => &mut self.ephemeral_storage,
        }
    }

    pub fn saturating_sub(&self, o: &ResourceList) -> ResourceList {
        ResourceList {
            cpu_milli: (self.cpu_milli - o.cpu_milli).max(0),
            memory: (self.memory - o.memory).max(0),
            ephemeral_storage: (self.ephemeral_storage - o.ephemeral_storage).max(0),
        }
    }
}

impl std::str::FromStr for ResourceList {
    type Err = ResourceListError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_resource_list(s)
    }
}

/// Why a resource list flag does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResourceListError {
    #[error("{item:?}: expected NAME=QUANTITY, e.g. cpu=200m,memory=256Mi")]
    Syntax { item: String },
    #[error("{name:?}: only cpu, memory and ephemeral-storage can be reserved")]
    Unknown { name: String },
    #[error("{name}={value:?}: not a non-negative quantity")]
    Quantity { name: String, value: String },
}

/// `cpu=200m,memory=256Mi,ephemeral-storage=1Gi`, as the kubelet's `--system-reserved` and
/// `--kube-reserved` take them; an empty string reserves nothing.
pub fn parse_resource_list(s: &str) -> Result<ResourceList, ResourceListError> {
    let mut out = ResourceList::default();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(ResourceListError::Syntax { item: item.into() });
        };
        let (name, value) = (name.trim(), value.trim());
        if ![CPU, MEMORY, EPHEMERAL_STORAGE].contains(&name) {
            return Err(ResourceListError::Unknown { name: name.into() });
        }
        let bad = || ResourceListError::Quantity { name: name.into(), value: value.into() };
        let q = value.parse::<Quantity>().ok().filter(|q| !q.is_negative()).ok_or_else(bad)?;
        *out.get_mut(name) = if name == CPU { q.millis() } else { q.value().into() };
    }
    Ok(out)
}

/// Whole units from milli-units, rounded up like `Quantity.Value()`.
pub(crate) fn units(milli: i128) -> i128 {
    milli.div_euclid(1000) + i128::from(milli.rem_euclid(1000) != 0)
}

/// A container's amount of `name` in the resource's unit (millicores for cpu).
fn amount(q: &ApiQuantity, name: &str) -> Option<i128> {
    let q = Quantity::parse(q).ok()?;
    Some(if name == CPU { q.millis() } else { q.value().into() })
}

/// A container's request, or its limit when it has no request (the API server's defaulting,
/// which the manifest module applies too).
pub(crate) fn container_request(c: &Container, name: &str) -> Option<i128> {
    let r = c.resources.as_ref()?;
    let q = r.requests.as_ref().and_then(|m| m.get(name));
    q.or_else(|| r.limits.as_ref().and_then(|m| m.get(name))).and_then(|q| amount(q, name))
}

pub(crate) fn container_limit(c: &Container, name: &str) -> Option<i128> {
    let r = c.resources.as_ref()?;
    r.limits.as_ref().and_then(|m| m.get(name)).and_then(|q| amount(q, name))
}

/// `AggregateContainerRequests`/`Limits` plus overhead: app containers and sidecars add up;
/// each init container runs beside the sidecars started before it; the larger of the two
/// wins. `None` when no container sets the resource (and there is no overhead).
fn aggregate(
    spec: &PodSpec,
    name: &str,
    of: impl Fn(&Container, &str) -> Option<i128>,
) -> Option<i128> {
    let mut any = false;
    let mut get = |c: &Container| {
        let v = of(c, name);
        any |= v.is_some();
        v.unwrap_or(0)
    };
    let mut sum: i128 = spec.containers.iter().map(&mut get).sum();
    let (mut sidecars, mut init_max) = (0i128, 0i128);
    for c in spec.init_containers.iter().flatten() {
        let v = get(c);
        let during = if is_sidecar(c) {
            sum += v;
            sidecars += v;
            sidecars
        } else {
            v + sidecars
        };
        init_max = init_max.max(during);
    }
    let overhead = spec.overhead.as_ref().and_then(|o| o.get(name)).and_then(|q| amount(q, name));
    (any || overhead.is_some()).then(|| sum.max(init_max) + overhead.unwrap_or(0))
}

/// The kubelet's effective pod request (`resourcehelper.PodRequests`), 0 when unset.
pub fn pod_request(spec: &PodSpec, name: &str) -> i128 {
    aggregate(spec, name, container_request).unwrap_or(0)
}

pub fn pod_requests(spec: &PodSpec) -> ResourceList {
    ResourceList {
        cpu_milli: pod_request(spec, CPU),
        memory: pod_request(spec, MEMORY),
        ephemeral_storage: pod_request(spec, EPHEMERAL_STORAGE),
    }
}

/// `resourcehelper.PodLimits` for one resource: `None` when no container limits it (overhead
/// only adds to a limit that exists).
pub fn pod_limit(spec: &PodSpec, name: &str) -> Option<i128> {
    let with_overhead = aggregate(spec, name, container_limit)?;
    let any = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    any.into_iter().any(|c| container_limit(c, name).is_some()).then_some(with_overhead)
}

/// An amount in milli-units with its format, printed like `Quantity.String()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amount {
    pub milli: i128,
    pub format: Format,
}

impl Amount {
    pub fn bytes(n: i128) -> Self {
        Self { milli: n * 1000, format: Format::BinarySI }
    }

    pub fn count(n: i128) -> Self {
        Self { milli: n * 1000, format: Format::DecimalSI }
    }

    /// A quantity as written in a manifest or flag; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Self> {
        Some(Self { milli: s.parse::<Quantity>().ok()?.millis(), format: Format::of(s) })
    }

    /// Whole units, rounded up.
    pub fn value(&self) -> i128 {
        units(self.milli)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Quantity::from_nanos(self.milli * 1_000_000).canonical(self.format).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("test spec")
    }

    /// The cases of resourcehelper's TestPodRequests / TestPodResourceRequests (cpu only;
    /// memory works the same): sums, init maxima, sidecars, overhead.
    #[test]
    fn pod_request_like_the_kubelets_pod_requests() {
        let table = [
            ("containers: [{name: a}]", 0),
            ("containers: [{name: a, resources: {requests: {cpu: 100m}}}, {name: b, resources: {requests: {cpu: '1'}}}]", 1100),
            // Limits stand in for missing requests (API defaulting).
            ("containers: [{name: a, resources: {limits: {cpu: 300m}}}]", 300),
            // An init container bigger than the app containers sets the request.
            ("containers: [{name: a, resources: {requests: {cpu: 100m}}}]\ninitContainers: [{name: i, resources: {requests: {cpu: '2'}}}]", 2000),
            ("containers: [{name: a, resources: {requests: {cpu: '3'}}}]\ninitContainers: [{name: i, resources: {requests: {cpu: '2'}}}]", 3000),
            // Sidecars add to the app containers, and run beside later init containers.
            ("containers: [{name: a, resources: {requests: {cpu: '1'}}}]\ninitContainers: [{name: s, restartPolicy: Always, resources: {requests: {cpu: '1'}}}]", 2000),
            ("containers: [{name: a, resources: {requests: {cpu: '1'}}}]\ninitContainers: [{name: s, restartPolicy: Always, resources: {requests: {cpu: '1'}}}, {name: i, resources: {requests: {cpu: '5'}}}]", 6000),
            // An init container before the sidecar does not run beside it.
            ("containers: [{name: a, resources: {requests: {cpu: '1'}}}]\ninitContainers: [{name: i, resources: {requests: {cpu: '5'}}}, {name: s, restartPolicy: Always, resources: {requests: {cpu: '1'}}}]", 5000),
            // Overhead is added on top.
            ("containers: [{name: a, resources: {requests: {cpu: '1'}}}]\noverhead: {cpu: 250m}", 1250),
        ];
        for (yaml, want) in table {
            assert_eq!(pod_request(&spec(yaml), CPU), want, "{yaml}");
        }
        let s = spec("containers: [{name: a, resources: {requests: {memory: 64Mi, ephemeral-storage: 1Gi}}}]");
        assert_eq!(
            pod_requests(&s),
            ResourceList { cpu_milli: 0, memory: 64 << 20, ephemeral_storage: 1 << 30 }
        );
    }

    #[test]
    fn pod_limit_only_when_a_container_sets_it() {
        let none = spec("containers: [{name: a}]\noverhead: {ephemeral-storage: 1Mi}");
        assert_eq!(pod_limit(&none, EPHEMERAL_STORAGE), None);
        let two = spec("containers: [{name: a, resources: {limits: {ephemeral-storage: 1Mi}}}, {name: b}]\noverhead: {ephemeral-storage: 1Mi}");
        assert_eq!(pod_limit(&two, EPHEMERAL_STORAGE), Some(2 << 20));
    }

    #[test]
    fn resource_lists_parse_like_system_reserved() {
        assert_eq!(
            parse_resource_list("cpu=200m, memory=256Mi,ephemeral-storage=1Gi"),
            Ok(ResourceList { cpu_milli: 200, memory: 256 << 20, ephemeral_storage: 1 << 30 })
        );
        assert_eq!(parse_resource_list(""), Ok(ResourceList::default()));
        assert_eq!(
            parse_resource_list("pid=100"),
            Err(ResourceListError::Unknown { name: "pid".into() })
        );
        assert_eq!(
            parse_resource_list("cpu"),
            Err(ResourceListError::Syntax { item: "cpu".into() })
        );
        assert_eq!(
            parse_resource_list("memory=-1"),
            Err(ResourceListError::Quantity { name: "memory".into(), value: "-1".into() })
        );
    }

    /// Validation and admission read quantities with one parser: whatever validation accepts,
    /// admission and the runtime compute (before, `1e-1000` passed validation and admission
    /// dropped it, and `1e30` passed validation and failed the container's spec).
    #[test]
    fn validation_and_admission_agree_on_quantities() {
        use crate::manifest::{parse_str, Object};
        let values = [
            "0",
            "-0",
            "1",
            "1.",
            ".5",
            "100m",
            "0.1",
            "1.5Gi",
            "2Ki",
            "1e3",
            "1E-3",
            "1e-1000",
            "0.0000000001",
            "250u",
            "1n",
            "7Ei",
            "9223372036854775807",
            "9223372036854775808",
            "8Ei",
            "1e19",
            "1e30",
            "99999999999999999999999999999999Ei",
            "-1",
            "-1m",
            "1.5.5",
            "Mi",
            ".",
            "",
            "1KB",
            "1e",
            "1e99999999999999999999",
        ];
        for v in values {
            let yaml = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {{requests: {{cpu: '{v}', memory: '{v}', ephemeral-storage: '{v}'}}, limits: {{cpu: '{v}', memory: '{v}'}}}}\n"
            );
            let accepted = match parse_str(std::path::Path::new("p.yaml"), &yaml) {
                Ok(docs) => match &docs[0].object {
                    Object::Pod(p) => Some(p.clone()),
                    _ => panic!("not a pod"),
                },
                Err(_) => None,
            };
            let Some(pod) = accepted else {
                assert!(
                    v.parse::<Quantity>().map_or(true, |q| q.is_negative()),
                    "{v:?}: validation refused a quantity admission takes"
                );
                continue;
            };
            let spec = pod.spec.as_ref().unwrap();
            let c = &spec.containers[0];
            for name in [CPU, MEMORY, EPHEMERAL_STORAGE] {
                let r = container_request(c, name);
                assert!(r.is_some_and(|r| r >= 0), "{v:?}: admission cannot compute {name}");
            }
            assert!(super::super::qos::pod_qos(spec).is_ok(), "{v:?}: no QoS class");
            assert!(
                crate::runtime::spec::linux_resources(c).is_ok(),
                "{v:?}: no container resources"
            );
        }
    }

    /// What `resource.NewQuantity(n, BinarySI).String()` and `MustParse(s).String()` print.
    #[test]
    fn amounts_print_like_go_quantities() {
        let table = [
            (Amount::bytes(80 << 20), "80Mi"),
            (Amount::bytes((80 << 20) + 1), "83886081"),
            (Amount::bytes(2048), "2Ki"),
            (Amount::bytes(1536), "1536"),
            (Amount::bytes(1000), "1k"),
            (Amount::bytes(0), "0"),
            (Amount::bytes(512), "512"),
            (Amount::count(1_000_000), "1M"),
            (Amount::parse("2048Ki").unwrap(), "2Mi"),
            (Amount::parse("1.5Gi").unwrap(), "1536Mi"),
            (Amount::parse("100Mi").unwrap(), "100Mi"),
            (Amount::parse("100M").unwrap(), "100M"),
            (Amount::parse("100m").unwrap(), "100m"),
            (Amount::parse("1.5").unwrap(), "1500m"),
        ];
        for (a, want) in table {
            assert_eq!(a.to_string(), want, "{a:?}");
        }
    }
}
