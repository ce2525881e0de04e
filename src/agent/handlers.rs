//! Probes and lifecycle hooks run against a container: exec in it, or connect to it.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, LifecycleHandler, Probe};

use crate::engine::ContainerRef;
use crate::probe::{self, target};
use crate::runtime::{ExecRequest, Runtime};

use super::deps::{Deps, PodContext};
use super::outcome::instance;

/// Bytes of exec output kept for probe and hook messages (the kubelet keeps 10 KiB).
const EXEC_OUTPUT: usize = 10 * 1024;

/// Runs one probe; the result is the kubelet's success (with its warning, if any) or its failure
/// message (for exec probes the command's output, as `Liveness probe failed: <output>` shows it).
pub async fn run_probe<R: Runtime>(
    deps: &Deps<R>,
    c: &ContainerRef,
    probe: &Probe,
    timeout: Duration,
    ports: &[ContainerPort],
    context: &PodContext,
) -> Result<Option<String>, String> {
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        return match run_exec(deps, c, argv, timeout).await? {
            Exec::Exited { code: 0, .. } => Ok(None),
            Exec::Exited { output, .. } => Err(output),
            Exec::TimedOut { what } => Err(what),
        };
    }
    if let Some(get) = &probe.http_get {
        let target = target::http_get(get, ports, &context.address()).await?;
        return probe::http_get(&target, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = target::resolve_port(&tcp.port, ports)?;
        let ip = target::ip(tcp.host.as_deref(), &context.address()).await?;
        let netns = context.address().netns_for_loopback(tcp.host.as_deref());
        let addr = SocketAddr::new(ip, port);
        return probe::tcp_socket(addr, netns.as_deref(), timeout).await.map(|()| None);
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| format!("invalid port {}", grpc.port))?;
        let ip = target::ip(None, &context.address()).await?;
        let service = grpc.service.clone().unwrap_or_default();
        let netns = context.address().netns_for_loopback(None);
        let addr = SocketAddr::new(ip, port);
        return probe::grpc(addr, &service, netns.as_deref(), timeout).await.map(|()| None);
    }
    Err("unknown probe handler".into())
}

/// Runs one lifecycle hook. The error is the kubelet's message (`Exec lifecycle hook ([cmd])
/// for Container "c" in Pod "name_ns(uid)" failed - error: ..., message: "output"`), shown in
/// the container's status for postStart and logged; events carry no output, as in the kubelet.
#[allow(clippy::too_many_arguments)]
pub async fn run_hook<R: Runtime>(
    deps: &Deps<R>,
    c: &ContainerRef,
    pod: &str,
    handler: &LifecycleHandler,
    timeout: Option<Duration>,
    ports: &[ContainerPort],
    context: &PodContext,
) -> Result<(), String> {
    // preStop is bounded by the grace period, postStart by nothing (as in the kubelet); keep a
    // cap so a stuck hook cannot hold a task forever.
    let timeout = timeout.unwrap_or(Duration::from_secs(3600));
    let container = &c.name;
    if let Some(exec) = &handler.exec {
        let argv = exec.command.clone().unwrap_or_default();
        let error = match run_exec(deps, c, argv.clone(), timeout).await {
            Ok(Exec::Exited { code: 0, .. }) => return Ok(()),
            Ok(Exec::Exited { code, stderr, output }) => {
                let (cmd, output) =
                    (argv.join(" "), crate::runtime::spec::downward::go_quote(&output));
                format!("command '{cmd}' exited with {code}: {stderr}, message: {output}")
            }
            Ok(Exec::TimedOut { what }) => format!("{what}, message: \"\""),
            Err(e) => format!("{e}, message: \"\""),
        };
        let argv = format!("[{}]", argv.join(" "));
        return Err(format!(
            "Exec lifecycle hook ({argv}) for Container \"{container}\" in Pod \"{pod}\" failed - error: {error}"
        ));
    }
    if let Some(get) = &handler.http_get {
        let path = get.path.clone().unwrap_or_default();
        let result = match target::http_get(get, ports, &context.address()).await {
            // Any answer will do: the kubelet fails HTTP hooks only on transport errors.
            Ok(target) => probe::http_get_any(&target, timeout).await,
            Err(e) => Err(e),
        };
        return result.map_err(|e| {
            format!(
                "HTTP lifecycle hook ({path}) for Container \"{container}\" in Pod \"{pod}\" failed - error: {e}"
            )
        });
    }
    if let Some(sleep) = &handler.sleep {
        smol::Timer::after(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    // tcpSocket is accepted by validation for compatibility but never run by the kubelet.
    Err("Cannot run handler: invalid handler: tcpSocket is not supported as a lifecycle handler"
        .into())
}

/// How an exec ended, in the terms probes and hooks report.
enum Exec {
    /// `output` is stdout then stderr, as the kubelet's `RunInContainer` returns them.
    Exited { code: i32, stderr: String, output: String },
    /// The kubelet's timeout message, `command "a b" timed out`.
    TimedOut { what: String },
}

/// How long past an exec's own timeout the agent waits for the supervisor's answer.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(5);

async fn run_exec<R: Runtime>(
    deps: &Deps<R>,
    c: &ContainerRef,
    argv: Vec<String>,
    timeout: Duration,
) -> Result<Exec, String> {
    let what = format!("command \"{}\" timed out", argv.join(" "));
    let request = ExecRequest { id: instance(c), argv, timeout, output_limit: EXEC_OUTPUT };
    // The supervisor enforces the timeout; this deadline only covers a supervisor that does
    // not answer, so a stuck exec cannot hold the probe (never re-run while in flight) forever.
    let answer = async { deps.runtime.exec(&c.pod_uid, request).await.map_err(|e| e.to_string()) };
    let deadline = async {
        crate::tasks::sleep(timeout + SUPERVISOR_GRACE).await;
        Err(format!(
            "the pod supervisor did not answer within {}s",
            (timeout + SUPERVISOR_GRACE).as_secs()
        ))
    };
    let result = smol::future::or(answer, deadline).await?;
    if result.timed_out {
        return Ok(Exec::TimedOut { what });
    }
    let mut output = result.stdout;
    output.push_str(&result.stderr);
    output.truncate(crate::format::floor_char_boundary(&output, EXEC_OUTPUT));
    Ok(Exec::Exited { code: result.exit_code.unwrap_or(-1), stderr: result.stderr, output })
}
