//! `status.qosClass`: the kubelet's `ComputePodQOS`, with just enough of `resource.Quantity`
//! to add and compare cpu and memory amounts exactly.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A quantity in thousandths of its unit (`100m` → 100, `1Ki` → 1_024_000), rounded up like
/// `Quantity.MilliValue`. `None` when it is not a quantity or does not fit.
pub(crate) fn milli(s: &str) -> Option<i128> {
    let (num, suffix) =
        s.split_at(s.find(|c: char| !"+-.0123456789".contains(c)).unwrap_or(s.len()));
    let (neg, num) = match num.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = format!("{int}{frac}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    let mut mantissa: i128 = digits.parse().ok()?;
    // value = mantissa × 10^exp10 × 1024^exp1024, in milli-units.
    let mut exp10 = 3 - frac.len() as i32;
    let mut exp1024 = 0;
    match suffix {
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            exp1024 = 1 + "KMGTPE".find(&suffix[..1]).expect("matched") as u32;
        }
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "" => {}
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        e => {
            let e = e.strip_prefix(['e', 'E'])?;
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            exp10 += e.parse::<i32>().ok()?;
        }
    }
    mantissa = mantissa.checked_mul(1024i128.checked_pow(exp1024)?)?;
    if exp10 >= 0 {
        mantissa = mantissa.checked_mul(10i128.checked_pow(exp10 as u32)?)?;
    } else {
        let div = 10i128.checked_pow(exp10.unsigned_abs()).unwrap_or(i128::MAX);
        mantissa = mantissa / div + i128::from(mantissa % div != 0);
    }
    Some(if neg { -mantissa } else { mantissa })
}

const QOS_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// Positive cpu/memory amounts of one container (requests default to limits, as the API does).
fn amounts(c: &Container) -> (BTreeMap<&'static str, i128>, BTreeMap<&'static str, i128>) {
    let r = c.resources.clone().unwrap_or_default();
    let positive = |q: &Quantity| milli(&q.0).filter(|v| *v > 0);
    let (mut requests, mut limits) = (BTreeMap::new(), BTreeMap::new());
    for name in QOS_RESOURCES {
        let limit = r.limits.as_ref().and_then(|l| l.get(name)).and_then(positive);
        let request = match r.requests.as_ref().and_then(|l| l.get(name)) {
            Some(q) => positive(q),
            None => limit,
        };
        if let Some(v) = request {
            requests.insert(name, v);
        }
        if let Some(v) = limit {
            limits.insert(name, v);
        }
    }
    (requests, limits)
}

/// `ComputePodQOS`: sums over init and app containers; Guaranteed when every container has
/// cpu and memory limits and the summed requests equal the summed limits, BestEffort when
/// nothing is requested or limited, Burstable otherwise.
pub(crate) fn class(spec: &PodSpec) -> &'static str {
    let (mut requests, mut limits) = (BTreeMap::new(), BTreeMap::new());
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let (r, l) = amounts(c);
        for (name, v) in r {
            *requests.entry(name).or_insert(0) += v;
        }
        guaranteed &= QOS_RESOURCES.iter().all(|n| l.contains_key(n));
        for (name, v) in l {
            *limits.entry(name).or_insert(0) += v;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests == limits {
        return "Guaranteed";
    }
    "Burstable"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_milli_units() {
        let table: &[(&str, Option<i128>)] = &[
            ("100m", Some(100)),
            ("0.5", Some(500)),
            ("1", Some(1000)),
            ("1.5", Some(1500)),
            ("+2", Some(2000)),
            ("-1", Some(-1000)),
            ("64Mi", Some(64 * 1024 * 1024 * 1000)),
            ("1Gi", Some(1024 * 1024 * 1024 * 1000)),
            ("0.5Gi", Some(512 * 1024 * 1024 * 1000)),
            ("1e3", Some(1_000_000)),
            ("1E3", Some(1_000_000)),
            ("1e-3", Some(1)),
            ("1k", Some(1_000_000)),
            ("128M", Some(128_000_000_000)),
            ("1G", Some(1_000_000_000_000)),
            ("1Ei", Some(1000 * (1i128 << 60))),
            ("250u", Some(1)), // rounded up, like MilliValue
            ("1n", Some(1)),
            ("0", Some(0)),
            (".5", Some(500)),
            ("", None),
            ("m", None),
            ("1KB", None),
            ("1ki", None),
            ("1.2.3", None),
            ("1e", None),
            ("one", None),
            ("99999999999999999999999999999999Ei", None),
        ];
        for (s, want) in table {
            assert_eq!(milli(s), *want, "{s:?}");
        }
    }

    fn spec(yaml: &str) -> PodSpec {
        serde_yaml::from_str(yaml).expect("test spec")
    }

    /// The cases of the kubelet's qos_test.go (TestComputePodQOS), cpu and memory only.
    #[test]
    fn qos_class_like_compute_pod_qos() {
        let table = [
            ("containers: [{name: a}]", "BestEffort"),
            ("containers: [{name: a}, {name: b}]", "BestEffort"),
            (
                "containers: [{name: a, resources: {limits: {cpu: 100m, memory: 100Mi}}}]",
                "Guaranteed",
            ),
            (
                "containers: [{name: a, resources: {requests: {cpu: 100m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi}}}, {name: b, resources: {limits: {cpu: '0.1', memory: 104857600}}}]",
                "Guaranteed",
            ),
            (
                "containers: [{name: a, resources: {requests: {cpu: 100m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi}}}, {name: b}]",
                "Burstable",
            ),
            (
                "containers: [{name: a, resources: {limits: {cpu: 100m}}}]",
                "Burstable",
            ),
            (
                "containers: [{name: a, resources: {requests: {cpu: 50m, memory: 100Mi}, limits: {cpu: 100m, memory: 100Mi}}}]",
                "Burstable",
            ),
            (
                "containers: [{name: a, resources: {requests: {memory: 100Mi}}}]",
                "Burstable",
            ),
            // Init containers count too.
            (
                "containers: [{name: a, resources: {limits: {cpu: 100m, memory: 100Mi}}}]\ninitContainers: [{name: i}]",
                "Burstable",
            ),
            (
                "containers: [{name: a}]\ninitContainers: [{name: i, resources: {requests: {cpu: 10m}}}]",
                "Burstable",
            ),
            // Zero amounts and other resources do not count.
            (
                "containers: [{name: a, resources: {requests: {cpu: '0', memory: '0'}, limits: {ephemeral-storage: 1Gi}}}]",
                "BestEffort",
            ),
            (
                "containers: [{name: a, resources: {limits: {cpu: 100m, memory: 100Mi, nvidia.com/gpu: '1'}}}]",
                "Guaranteed",
            ),
        ];
        for (yaml, want) in table {
            assert_eq!(class(&spec(yaml)), want, "{yaml}");
        }
    }
}
