//! `outpost top pod`: what `kubectl top pod` prints, from the agent's `metrics.k8s.io` API.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{enc, get_json, no_resources, pods_path, ClientError, Result, ServerArgs, TabWriter};
use crate::quantity::Quantity;

/// How long kubectl lets a pod go without metrics before naming it (`metricsCreationDelay`).
const METRICS_CREATION_DELAY_NS: i128 = 120_000_000_000;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// What to show (only pods; the default).
    #[arg(value_parser = ["pod", "pods", "po"])]
    pub resource: Option<String>,
    /// Only this pod.
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. app=web.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// One line per container.
    #[arg(long)]
    pub containers: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// One container's usage: CPU in nanocores, memory in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerMetrics {
    pub nano_cores: i128,
    pub bytes: i128,
}

impl ContainerMetrics {
    /// kubectl's cells: millicores rounded up, MiB rounded down.
    pub fn cpu_cell(&self) -> String {
        format!("{}m", (self.nano_cores + 999_999).div_euclid(1_000_000))
    }
    pub fn memory_cell(&self) -> String {
        format!("{}Mi", self.bytes.div_euclid(1 << 20))
    }
}

/// The containers of a `PodMetrics` object, by name.
pub fn container_usage(metrics: &Value) -> BTreeMap<String, ContainerMetrics> {
    let nanos = |v: &Value| -> i128 {
        v.as_str().and_then(|s| s.parse::<Quantity>().ok()).map_or(0, |q| q.nano_value())
    };
    metrics["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let usage = ContainerMetrics {
                nano_cores: nanos(&c["usage"]["cpu"]),
                bytes: nanos(&c["usage"]["memory"]) / 1_000_000_000,
            };
            (name, usage)
        })
        .collect()
}

/// `outpost top pod`.
pub fn top(args: &TopArgs, out: &mut dyn Write) -> Result<()> {
    let server = args.server.connect()?;
    let base = pods_path("/apis/metrics.k8s.io/v1beta1", args.all_namespaces, &args.namespace);
    let items = match &args.name {
        Some(name) => vec![get_json(&server, &format!("{base}/{}", enc(name)), "")?],
        None => {
            let query = args
                .selector
                .as_ref()
                .map(|l| format!("?labelSelector={}", enc(l)))
                .unwrap_or_default();
            let list = get_json(&server, &format!("{base}{query}"), "")?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    if items.is_empty() {
        // kubectl's check: pods without metrics yet, or no pods at all.
        let pods_path = pods_path("/api/v1", args.all_namespaces, &args.namespace);
        let query = args
            .selector
            .as_ref()
            .map(|l| format!("?labelSelector={}", enc(l)))
            .unwrap_or_default();
        let pods = get_json(&server, &format!("{pods_path}{query}"), "application/json")?;
        let pods = pods["items"].as_array().cloned().unwrap_or_default();
        if !pods.is_empty() {
            return Err(no_metrics(&pods, crate::format::now()));
        }
        eprintln!("{}", no_resources(args.all_namespaces, &args.namespace));
        return Ok(());
    }
    let text = print(&items, args.containers, args.all_namespaces);
    out.write_all(text.as_bytes()).map_err(|e| ClientError::Output { source: e })
}

/// kubectl's `verifyEmptyMetrics`: the first pod created over two minutes ago is named.
fn no_metrics(pods: &[Value], now: Timestamp) -> ClientError {
    for pod in pods {
        let created = pod["metadata"]["creationTimestamp"].as_str().and_then(|t| t.parse().ok());
        let Some(created) = created.map(|t: Timestamp| t.as_nanosecond()) else { continue };
        let age = now.as_nanosecond() - created;
        if age > METRICS_CREATION_DELAY_NS {
            let meta = &pod["metadata"];
            return ClientError::NoMetricsFor {
                pod: format!(
                    "{}/{}",
                    meta["namespace"].as_str().unwrap_or_default(),
                    meta["name"].as_str().unwrap_or_default()
                ),
                age: crate::format::go_duration(std::time::Duration::from_nanos(age as u64)),
            };
        }
    }
    ClientError::NoMetrics
}

/// kubectl's top printer: every cell ends with a tab, the last one too.
pub fn print(items: &[Value], containers: bool, namespaces: bool) -> String {
    let mut w = TabWriter::new(6, 3);
    let mut header = String::new();
    if namespaces {
        header.push_str("NAMESPACE\t");
    }
    if containers {
        header.push_str("POD\t");
    }
    header.push_str("NAME\tCPU(cores)\tMEMORY(bytes)\t\n");
    w.write(&header);
    for item in items {
        let mut prefix = String::new();
        if namespaces {
            prefix.push_str(item["metadata"]["namespace"].as_str().unwrap_or_default());
            prefix.push('\t');
        }
        let pod = item["metadata"]["name"].as_str().unwrap_or_default();
        let usage = container_usage(item);
        if containers {
            for (name, u) in &usage {
                w.write(&format!(
                    "{prefix}{pod}\t{name}\t{}\t{}\t\n",
                    u.cpu_cell(),
                    u.memory_cell()
                ));
            }
        } else {
            let sum = usage.values().fold(ContainerMetrics::default(), |a, u| ContainerMetrics {
                nano_cores: a.nano_cores + u.nano_cores,
                bytes: a.bytes + u.bytes,
            });
            w.write(&format!("{prefix}{pod}\t{}\t{}\t\n", sum.cpu_cell(), sum.memory_cell()));
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn metrics(ns: &str, name: &str, containers: &[(&str, &str, &str)]) -> Value {
        let c: Vec<Value> = containers
            .iter()
            .map(|(n, cpu, mem)| json!({"name": n, "usage": {"cpu": cpu, "memory": mem}}))
            .collect();
        json!({"metadata": {"name": name, "namespace": ns}, "containers": c})
    }

    #[test]
    fn cells_round_like_kubectl() {
        let u = container_usage(&metrics("d", "p", &[("a", "1234567n", "12345Ki")]));
        assert_eq!(u["a"], ContainerMetrics { nano_cores: 1_234_567, bytes: 12_641_280 });
        assert_eq!((u["a"].cpu_cell(), u["a"].memory_cell()), ("2m".into(), "12Mi".into()));
        let u = container_usage(&metrics("d", "p", &[("a", "0", "0"), ("b", "3m", "20Mi")]));
        assert_eq!((u["a"].cpu_cell(), u["a"].memory_cell()), ("0m".into(), "0Mi".into()));
        assert_eq!((u["b"].cpu_cell(), u["b"].memory_cell()), ("3m".into(), "20Mi".into()));
    }

    #[test]
    fn pods_sum_their_containers_and_containers_are_sorted() {
        let items = [
            metrics("default", "web", &[("z", "1500000n", "10Mi"), ("a", "600000n", "2Mi")]),
            metrics("edge", "mqtt-broker", &[("m", "1", "1Gi")]),
        ];
        assert_eq!(
            print(&items, false, false),
            "NAME          CPU(cores)   MEMORY(bytes)   \n\
             web           3m           12Mi            \n\
             mqtt-broker   1000m        1024Mi          \n"
        );
        assert_eq!(
            print(&items, true, true),
            "NAMESPACE   POD           NAME   CPU(cores)   MEMORY(bytes)   \n\
             default     web           a      1m           2Mi             \n\
             default     web           z      2m           10Mi            \n\
             edge        mqtt-broker   m      1000m        1024Mi          \n"
        );
    }
}
