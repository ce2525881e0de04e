//! The client side of the API: `outpost get pods`, `describe pod`, `logs`, `events`, `top pod`,
//! talking to a running agent and printing what kubectl prints.

mod describe;
mod http;
mod print;
mod rollout;
mod tabwriter;
mod top;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

pub use describe::{describe_pod, describe_pod_with_usage};
pub use http::Server;
pub use print::print_table;
pub use rollout::{rollout, RolloutArgs};
pub use tabwriter::TabWriter;
pub use top::{top, TopArgs};

/// What kubectl asks for to get server-side printing.
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` must be `http://HOST:PORT` or `unix:PATH`.
    #[error("--server {url}: expected http://HOST:PORT or unix:/path/to/socket")]
    BadServer { url: String },
    /// The agent is not running or listens elsewhere.
    #[error("cannot connect to the outpost agent at {url}: {source} (is `outpost run` running? see --server)")]
    Connect { url: String, source: std::io::Error },
    #[error("talking to {url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("cannot build the request for {path}: {message}")]
    Request { path: String, message: String },
    #[error("cannot read the token file {path}: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
    /// The agent answered with an error (a Kubernetes Status).
    #[error("Error from server ({reason}): {message}")]
    Server { reason: String, message: String },
    /// The answer is not what the API serves.
    #[error("unexpected answer from {path}: {message}")]
    Decode { path: String, message: String },
    #[error("writing output: {source}")]
    Output { source: std::io::Error },
    /// kubectl's wording for a missing named object.
    #[error("Error from server (NotFound): {kind} \"{name}\" not found")]
    NotFound { kind: String, name: String },
    #[error("--since {value}: expected a duration like 30s, 5m or 2h")]
    BadDuration { value: String },
    /// Pods exist but none has usage yet (just started, or not running): kubectl's wording.
    #[error("error: metrics not available yet")]
    NoMetrics,
    /// A pod older than two minutes has no usage: it does not run (kubectl's wording).
    #[error("error: Metrics not available for pod {pod}, age: {age}")]
    NoMetricsFor { pod: String, age: String },
    #[error("state database {path} not found: give the agent's --state")]
    NoState { path: PathBuf },
    #[error("{message}")]
    Store { message: String },
    /// The pod never had a revision recorded (it was never Ready, or safe updates are off).
    #[error("no rollout history for pod {pod}")]
    NoRevisions { pod: String },
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The agent's API: http://HOST:PORT (as `outpost run --listen`) or unix:PATH
    /// (as `--api-socket`).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:10250",
        env = "OUTPOST_SERVER"
    )]
    pub server: String,
    /// A file holding the bearer token the agent requires (`outpost run --api-token-file`).
    #[arg(long, value_name = "FILE", env = "OUTPOST_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl ServerArgs {
    pub fn connect(&self) -> Result<Server> {
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ClientError::TokenFile { path: path.clone(), source })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Server::new(&self.server, token)
    }
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// What to list: pods, or sources (the manifest URLs: last success, last error, ETag).
    #[arg(value_parser = ["pods", "pod", "po", "sources", "source"])]
    pub resource: String,
    /// Only this pod.
    pub name: Option<String>,
    /// Output format: wide, yaml or json (default: the table).
    #[arg(short = 'o', long, value_parser = ["wide", "yaml", "json"])]
    pub output: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. app=web.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    #[arg(value_parser = ["pod", "pods", "po"])]
    pub resource: String,
    pub name: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    pub pod: String,
    /// The container (default: the pod's only or first container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming until the container exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The previous instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(long)]
    pub timestamps: bool,
    /// Only lines newer than this, e.g. 30s, 5m, 2h.
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Runs a client command, printing errors like kubectl (to stderr, exit code 1).
pub fn run(f: impl FnOnce(&mut dyn Write) -> Result<()>) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match f(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// GET a JSON document; an error answer becomes [`ClientError::Server`].
fn get_json(server: &Server, path: &str, accept: &str) -> Result<Value> {
    let (code, body) = server.get(path, accept)?;
    let decode = |message: String| ClientError::Decode { path: path.to_string(), message };
    if !(200..300).contains(&code) {
        return Err(status_error(code, &body));
    }
    serde_json::from_slice(&body).map_err(|e| decode(e.to_string()))
}

fn status_error(code: u16, body: &[u8]) -> ClientError {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    ClientError::Server {
        reason: v["reason"].as_str().map_or_else(|| code.to_string(), String::from),
        message: v["message"]
            .as_str()
            .map_or_else(|| String::from_utf8_lossy(body).into_owned(), String::from),
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The pods collection of an API group version (`/api/v1`, `/apis/metrics.k8s.io/v1beta1`):
/// across namespaces or in one.
fn pods_path(group_version: &str, all_namespaces: bool, namespace: &str) -> String {
    if all_namespaces {
        format!("{group_version}/pods")
    } else {
        format!("{group_version}/namespaces/{}/pods", enc(namespace))
    }
}

/// `outpost get pods` or `outpost get sources`.
pub fn get(args: &GetArgs, out: &mut dyn Write) -> Result<()> {
    match args.resource.as_str() {
        "sources" | "source" => get_sources(args, out),
        _ => get_pods(args, out),
    }
}

/// `outpost get sources`: the manifest URLs and how their polling goes. `-o json|yaml` prints
/// the API's list.
pub fn get_sources(args: &GetArgs, out: &mut dyn Write) -> Result<()> {
    let server = args.server.connect()?;
    let list = get_json(&server, "/outpost/v1/sources", "application/json")?;
    let items: Vec<crate::watch::SourceStatus> = serde_json::from_value(list["items"].clone())
        .map_err(|e| ClientError::Decode {
            path: "/outpost/v1/sources".into(),
            message: e.to_string(),
        })?;
    let write = |e| ClientError::Output { source: e };
    let text = match args.output.as_deref() {
        Some("json") => to_json_4(&list) + "\n",
        Some("yaml") => serde_yaml::to_string(&list).unwrap_or_default(),
        _ if items.is_empty() => {
            eprintln!("No manifest URLs (see outpost run --manifest-url).");
            return Ok(());
        }
        _ => sources_table(&items, crate::format::now().as_second()),
    };
    out.write_all(text.as_bytes()).map_err(write)
}

/// One line per source: ages like kubectl's, `<none>` for what never happened.
pub fn sources_table(items: &[crate::watch::SourceStatus], now: i64) -> String {
    let age = |t: Option<i64>| match t {
        Some(t) => {
            crate::format::human_duration(
                std::time::Duration::from_secs((now - t).max(0) as u64),
                false,
            ) + " ago"
        }
        None => "<none>".into(),
    };
    let mut tw = TabWriter::new(0, 3);
    tw.write("URL\tOBJECTS\tLAST SUCCESS\tERRORS\tETAG\tLAST ERROR\n");
    for s in items {
        let error = match (&s.last_error, s.last_error_time) {
            (Some(e), t) => format!("{} ({e})", age(t)),
            _ => "<none>".into(),
        };
        let objects =
            if s.from_cache { format!("{} (cached)", s.objects) } else { s.objects.to_string() };
        tw.write(&format!(
            "{}\t{objects}\t{}\t{}\t{}\t{}\n",
            s.url,
            age(s.last_success),
            s.errors_total,
            s.etag.as_deref().unwrap_or("<none>"),
            error.replace('\t', " "),
        ));
    }
    tw.finish()
}

/// `outpost get pods`.
pub fn get_pods(args: &GetArgs, out: &mut dyn Write) -> Result<()> {
    let server = args.server.connect()?;
    let base = pods_path("/api/v1", args.all_namespaces, &args.namespace);
    let mut query = Vec::new();
    if let Some(l) = &args.selector {
        query.push(format!("labelSelector={}", enc(l)));
    }
    if let Some(n) = &args.name {
        query.push(format!("fieldSelector={}", enc(&format!("metadata.name={n}"))));
    }
    let path = format!("{base}?{}", query.join("&"));
    let write = |e| ClientError::Output { source: e };
    match args.output.as_deref() {
        Some(fmt @ ("json" | "yaml")) => {
            let list = get_json(&server, &path, "application/json")?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let doc = match (&args.name, items.as_slice()) {
                (Some(n), []) => {
                    return Err(ClientError::NotFound { kind: "pods".into(), name: n.clone() })
                }
                (Some(_), [one]) => one.clone(),
                _ => {
                    serde_json::json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}})
                }
            };
            let text = if fmt == "json" {
                to_json_4(&doc) + "\n"
            } else {
                serde_yaml::to_string(&doc).unwrap_or_default()
            };
            out.write_all(text.as_bytes()).map_err(write)
        }
        wide => {
            let table = get_json(&server, &path, ACCEPT_TABLE)?;
            if table["rows"].as_array().is_none_or(|r| r.is_empty()) {
                if let Some(n) = &args.name {
                    return Err(ClientError::NotFound { kind: "pods".into(), name: n.clone() });
                }
                eprintln!("{}", no_resources(args.all_namespaces, &args.namespace));
                return Ok(());
            }
            let text = print_table(&table, wide == Some("wide"), args.all_namespaces);
            out.write_all(text.as_bytes()).map_err(write)
        }
    }
}

fn no_resources(all: bool, ns: &str) -> String {
    if all {
        "No resources found".into()
    } else {
        format!("No resources found in {ns} namespace.")
    }
}

/// kubectl's JSON printer indents by 4 spaces.
fn to_json_4(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8(buf).unwrap_or_default()
}

/// `outpost describe pod`.
pub fn describe(args: &DescribeArgs, out: &mut dyn Write) -> Result<()> {
    let server = args.server.connect()?;
    let ns = enc(&args.namespace);
    let pod_path = format!("/api/v1/namespaces/{ns}/pods/{}", enc(&args.name));
    let (code, body) = server.get(&pod_path, "application/json")?;
    if !(200..300).contains(&code) {
        return Err(status_error(code, &body));
    }
    // Decoded as the agent decodes its stored pods: the binary holds one Pod decoder.
    let pod = std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(crate::manifest::pod_from_json)
        .map_err(|message| ClientError::Decode { path: pod_path.clone(), message })?;
    let decode = |e: serde_json::Error| ClientError::Decode {
        path: args.name.clone(),
        message: e.to_string(),
    };
    let selector = format!(
        "involvedObject.name={},involvedObject.namespace={},involvedObject.uid={}",
        args.name,
        args.namespace,
        pod.metadata.uid.clone().unwrap_or_default()
    );
    let events = get_json(
        &server,
        &format!("/api/v1/namespaces/{ns}/events?fieldSelector={}", enc(&selector)),
        "application/json",
    )?;
    let events: Vec<k8s_openapi::api::core::v1::Event> =
        serde_json::from_value(events["items"].clone()).map_err(decode)?;
    // Usage where the pod has any (running containers); describe works without it.
    let usage = server
        .get(&format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{}", enc(&args.name)), "")
        .ok()
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_slice::<Value>(&body).ok())
        .map(|m| top::container_usage(&m))
        .unwrap_or_default();
    let text = describe_pod_with_usage(&pod, &events, &usage, crate::format::now());
    out.write_all(text.as_bytes()).map_err(|e| ClientError::Output { source: e })
}

/// `outpost logs`.
pub fn logs(args: &LogsArgs, out: &mut dyn Write) -> Result<()> {
    let server = args.server.connect()?;
    let ns = enc(&args.namespace);
    let container = match &args.container {
        Some(c) => c.clone(),
        None => {
            // kubectl's default container: the annotation, else the first one.
            let pod = get_json(
                &server,
                &format!("/api/v1/namespaces/{ns}/pods/{}", enc(&args.pod)),
                "application/json",
            )?;
            let names: Vec<String> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect();
            let default =
                pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"].as_str();
            let chosen =
                default.map(String::from).or_else(|| names.first().cloned()).unwrap_or_default();
            if names.len() > 1 && default.is_none() {
                eprintln!("Defaulted container {chosen:?} out of: {}", names.join(", "));
            }
            chosen
        }
    };
    let mut query = vec![format!("container={}", enc(&container))];
    if args.follow {
        query.push("follow=true".into());
    }
    if args.previous {
        query.push("previous=true".into());
    }
    if args.tail >= 0 {
        query.push(format!("tailLines={}", args.tail));
    }
    if args.timestamps {
        query.push("timestamps=true".into());
    }
    if let Some(s) = &args.since {
        query.push(format!("sinceSeconds={}", parse_duration(s)?));
    }
    let path = format!("/api/v1/namespaces/{ns}/pods/{}/log?{}", enc(&args.pod), query.join("&"));
    let (code, err) = server.get_to(&path, "", out)?;
    if !(200..300).contains(&code) {
        return Err(status_error(code, &err));
    }
    Ok(())
}

/// `30s`, `5m`, `2h`, `1h30m` → seconds (at least 1, as the API requires).
fn parse_duration(s: &str) -> Result<i64> {
    let d = crate::format::parse_go_duration(s)
        .map_err(|_| ClientError::BadDuration { value: s.to_string() })?;
    Ok(i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1))
}

/// `outpost events`: `kubectl get events`.
pub fn events(args: &EventsArgs, out: &mut dyn Write) -> Result<()> {
    let server = args.server.connect()?;
    let path = if args.all_namespaces {
        "/api/v1/events".to_string()
    } else {
        format!("/api/v1/namespaces/{}/events", enc(&args.namespace))
    };
    let table = get_json(&server, &path, ACCEPT_TABLE)?;
    if table["rows"].as_array().is_none_or(|r| r.is_empty()) {
        eprintln!("{}", no_resources(args.all_namespaces, &args.namespace));
        return Ok(());
    }
    let text = print_table(&table, false, args.all_namespaces);
    out.write_all(text.as_bytes()).map_err(|e| ClientError::Output { source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_table_shows_ages_errors_and_etags() {
        let ok = crate::watch::SourceStatus {
            url: "https://fleet/a.yaml".into(),
            last_success: Some(1000 - 5),
            etag: Some("\"v7\"".into()),
            objects: 2,
            fetches_total: 4,
            ..Default::default()
        };
        let down = crate::watch::SourceStatus {
            url: "http://10.0.0.9/b.yaml".into(),
            last_error: Some("dial tcp 10.0.0.9:80: refused".into()),
            last_error_time: Some(1000 - 120),
            errors_total: 6,
            objects: 1,
            from_cache: true,
            ..Default::default()
        };
        let table = sources_table(&[ok, down], 1000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "URL                      OBJECTS      LAST SUCCESS   ERRORS   ETAG     LAST ERROR",
                "https://fleet/a.yaml     2            5s ago         0        \"v7\"     <none>",
                "http://10.0.0.9/b.yaml   1 (cached)   <none>         6        <none>   2m ago (dial tcp 10.0.0.9:80: refused)",
            ],
            "{table}"
        );
    }

    #[test]
    fn durations_and_encoding() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
        assert_eq!(enc("app in (a,b)"), "app%20in%20%28a%2Cb%29");
    }
}
