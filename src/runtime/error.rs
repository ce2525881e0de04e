use std::path::PathBuf;

/// Errors of the agent side of the runtime (`Runtime` implementations).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The pod UID cannot name a directory (empty, `.`/`..`, or contains `/`).
    #[error("pod {pod_uid:?}: the pod UID cannot be used as a directory name")]
    InvalidPodUid { pod_uid: String },
    /// Unix socket paths are limited to 107 bytes; use a shorter state directory.
    #[error("pod {pod_uid}: socket path {path} is longer than 107 bytes; use a shorter --state directory")]
    SocketPathTooLong { pod_uid: String, path: PathBuf },
    /// A sandbox directory for this pod already exists: remove the sandbox first.
    #[error("pod {pod_uid}: a sandbox already exists in {path}")]
    SandboxExists { pod_uid: String, path: PathBuf },
    /// No sandbox is known for this pod.
    #[error("pod {pod_uid}: no sandbox")]
    NoSandbox { pod_uid: String },
    /// Reading or writing the pod directory failed.
    #[error("pod {pod_uid}: {path}: {source}")]
    Io {
        pod_uid: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The `outpost supervise` process could not be started.
    #[error("pod {pod_uid}: cannot run {exe}: {source}")]
    Spawn {
        pod_uid: String,
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The supervisor started but could not set up the sandbox.
    #[error("pod {pod_uid}: sandbox failed: {message}")]
    SandboxFailed { pod_uid: String, message: String },
    /// The supervisor's socket refused the connection.
    #[error("pod {pod_uid}: cannot connect to {path}: {source}")]
    Connect {
        pod_uid: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The supervisor process is gone; remove the sandbox to clean up what it left.
    #[error("pod {pod_uid}: the pod's supervisor is gone")]
    SupervisorGone { pod_uid: String },
    /// A request over the supervisor's line limit, refused before it was sent.
    #[error("pod {pod_uid}: {operation}: the request is {size} bytes, over the runtime's limit of {limit} bytes (a very large environment? check envFrom ConfigMaps/Secrets and the image's env)")]
    RequestTooLarge { pod_uid: String, operation: &'static str, size: usize, limit: usize },
    /// The supervisor refused or failed the operation.
    #[error("pod {pod_uid}: {operation}: {message}")]
    Supervisor { pod_uid: String, operation: &'static str, message: String },
    /// The container was created but could not run (the kubelet's `RunContainerError`).
    #[error("pod {pod_uid}: start container: {message}")]
    RunFailed { pod_uid: String, message: String },
    /// The supervisor sent something this agent does not understand (version skew?).
    #[error("pod {pod_uid}: unexpected answer to {operation} from the supervisor")]
    Protocol { pod_uid: String, operation: &'static str },
    /// The recovery helper (`outpost supervise --gc`) failed; mounts or cgroups may be left.
    #[error("pod {pod_uid}: cleanup after a dead supervisor failed: {message}")]
    Cleanup { pod_uid: String, message: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
