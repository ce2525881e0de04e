//! `outpost exec`: run a command in a running container, like `kubectl exec`.
//!
//! It talks to the pod's supervisor directly (as the agent does), so it works even while the
//! agent is restarting. The supervisor hands over the process's stdout and stderr pipes (and
//! its stdin with `-i`); they are copied here as the process writes (no TTY yet). The exit code
//! is the command's (128 + signal when killed).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::runtime::{ExecStreamRequest, Runtime, SandboxConfig, SupervisorRuntime};

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The pod's name.
    pub pod: String,
    /// The container (default: the pod's first container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// outpost's state directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/outpost", env = "OUTPOST_STATE")]
    pub state: PathBuf,
    /// Pass stdin to the command (like `kubectl exec -i`); without it, the command's stdin is
    /// /dev/null.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Kill the command after this many seconds (default: no limit, like kubectl).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("pod {namespace}/{name} is not running on this device")]
    NoPod { namespace: String, name: String },
    #[error("container {container:?} is not running in pod {pod} (running: {running})")]
    NoContainer { pod: String, container: String, running: String },
    #[error("{0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("state directory {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
}

pub fn run(args: &ExecArgs) -> ExitCode {
    match smol::block_on(exec(args)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn exec(args: &ExecArgs) -> Result<i32, ExecError> {
    let key = format!("{}/{}", args.namespace, args.pod);
    let uid = find_pod(&args.state, &key)?.ok_or_else(|| ExecError::NoPod {
        namespace: args.namespace.clone(),
        name: args.pod.clone(),
    })?;
    let runtime = SupervisorRuntime::new(&args.state);
    let state = runtime.status(&uid).await?;
    let running: Vec<_> = state.containers.iter().filter(|c| c.exit.is_none()).collect();
    let wanted = args.container.clone().or_else(|| first_container(&args.state, &uid));
    let instance = running
        .iter()
        .filter(|c| wanted.as_ref().is_none_or(|w| &c.id.name == w))
        .max_by_key(|c| c.id.attempt)
        .ok_or_else(|| ExecError::NoContainer {
            pod: key.clone(),
            container: wanted.clone().unwrap_or_default(),
            running: running.iter().map(|c| c.id.name.clone()).collect::<Vec<_>>().join(", "),
        })?;
    let request = ExecStreamRequest {
        id: instance.id.clone(),
        argv: args.command.clone(),
        stdin: args.stdin,
        timeout: args.timeout.map(Duration::from_secs),
        tty: false,
    };
    let mut stream = runtime.exec_stream(&uid, request)?;
    let stdout = copy_thread(stream.stdout.try_clone(), std::io::stdout());
    let stderr = stream.stderr.as_ref().map(|e| copy_thread(e.try_clone(), std::io::stderr()));
    if let Some(stdin) = stream.stdin.take() {
        // Not joined: it may wait on a terminal forever; it ends when the process closes its
        // stdin (EPIPE) or ours ends (EOF closes the process's).
        let _ = copy_thread(Ok(std::io::stdin()), stdin);
    }
    let exit = stream.wait()?;
    // The output ends when the process (and whatever inherited its pipes) closed them.
    drop(stream);
    for t in std::iter::once(stdout).chain(stderr) {
        let _ = t.join();
    }
    if exit.timed_out {
        eprintln!("error: command timed out after {} s", args.timeout.unwrap_or_default());
        return Ok(124);
    }
    Ok(exit.exit_code.unwrap_or(1))
}

/// Copies `from` to `to` chunk by chunk, flushing each, until EOF or an error.
fn copy_thread(
    from: std::io::Result<impl Read + Send + 'static>,
    mut to: impl Write + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut from) = from else { return };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// The UID of the sandbox running `namespace/name`, from the runtime's pod directories.
fn find_pod(state: &Path, key: &str) -> Result<Option<String>, ExecError> {
    let pods = state.join("pods");
    let entries = match std::fs::read_dir(&pods) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ExecError::State { path: pods, source }),
    };
    for e in entries.flatten() {
        let Ok(bytes) = std::fs::read(e.path().join("sandbox.json")) else { continue };
        if let Ok(config) = serde_json::from_slice::<SandboxConfig>(&bytes) {
            if config.pod_name == key {
                return Ok(Some(config.pod_uid));
            }
        }
    }
    Ok(None)
}

/// The pod's first container per its spec, as kubectl picks it (from the agent's store).
fn first_container(state: &Path, uid: &str) -> Option<String> {
    let store = crate::store::Store::open(&state.join(crate::store::DATABASE)).ok()?;
    let record = store.pods().ok()?.into_iter().find(|r| r.uid == uid)?;
    let pod = crate::manifest::pod_from_json(&record.pod).ok()?;
    pod.spec?.containers.first().map(|c| c.name.clone())
}
