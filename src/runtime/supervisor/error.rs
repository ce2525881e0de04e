use std::path::PathBuf;

use libcontainer::error::LibcontainerError;

/// Errors inside the supervisor; sent to the agent as messages.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A file or directory of the pod could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The pod's namespaces could not be made in its user namespace.
    #[error("{0}")]
    Userns(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    /// libcontainer failed an operation on a container; `detail` is its whole error chain
    /// (its top-level message alone is often just "failed syscall").
    #[error("{operation} {container}: {detail}")]
    Libcontainer {
        operation: &'static str,
        container: String,
        detail: String,
        source: Box<LibcontainerError>,
    },
    /// The container's working directory cannot be used or created.
    #[error("container {container}: chdir to cwd ({path:?}) set in config.json failed: {detail}")]
    WorkingDir { container: String, path: PathBuf, detail: String },
    /// The container's command cannot be executed (runc's wording).
    #[error("container {container}: exec: {command:?}: {reason}")]
    Command { container: String, command: String, reason: String },
    /// Mounting the container's overlay root filesystem failed.
    #[error("mount overlay on {target}: {source}")]
    Overlay {
        target: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    /// Overlayfs mount options cannot carry this layer path.
    #[error("layer path {path} contains ',' or ':' or makes the mount options too long")]
    LayerPath { path: PathBuf },
    /// An image with no layers has no root filesystem.
    #[error("container {container}: capabilities {caps} are not in outpost's own bounding set, so no container can have them: remove them from securityContext.capabilities.add")]
    CapabilitiesUnavailable { container: String, caps: String },
    #[error("container {container}: no image layers")]
    NoLayers { container: String },
    /// The spec lacks a part the runtime needs.
    #[error("container {container}: the OCI spec has no {part}")]
    SpecIncomplete { container: String, part: &'static str },
    /// The OCI spec could not be saved as the bundle's config.json.
    #[error("container {container}: cannot save config.json: {source}")]
    SpecSave {
        container: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// The spec's seccomp profile does not compile.
    #[error("container {container}: seccomp profile: {source}")]
    Seccomp {
        container: String,
        #[source]
        source: crate::runtime::spec::seccomp::FilterError,
    },
    /// The signal number is not a valid signal.
    #[error("invalid signal {signal}")]
    InvalidSignal { signal: i32 },
    /// An instance with this name and attempt exists already.
    #[error("container {container} exists")]
    ContainerExists { container: String },
    /// The instance is running; kill it first.
    #[error("container {container} is running")]
    ContainerRunning { container: String },
    /// No such instance in this pod.
    #[error("no container {container}")]
    NoContainer { container: String },
    /// The instance has exited; nothing can run in it.
    #[error("container {container} is not running")]
    ContainerNotRunning { container: String },
    /// Attach -i to a container whose stdin is not kept open (or was closed by `stdinOnce`).
    #[error("container {container}: {why}")]
    NoStdin { container: String, why: &'static str },
    /// The pause process is gone; the sandbox must be recreated.
    #[error(transparent)]
    Pin(#[from] crate::network::netns::NetnsError),
    #[error("cannot set the pod's sysctl {sysctl} ({path:?}): {source}: check that it is a sysctl of this kernel and its value is valid")]
    Sysctl { sysctl: String, path: PathBuf, source: std::io::Error },
    #[error("the sandbox is not running")]
    SandboxNotRunning,
    /// The pod is being shut down.
    #[error("the pod is shutting down")]
    ShuttingDown,
    /// An exec command needs at least the program name.
    #[error("exec in {container}: empty command")]
    EmptyCommand { container: String },
    /// The command is not in the container's `$PATH` (or the path does not exist).
    #[error("exec in {container}: exec: {command:?}: executable file not found in $PATH")]
    NotFound { container: String, command: String },
    /// Entering the container failed at `step` (a process setting the container's spec asks for
    /// cannot be applied, or the container is going away).
    #[error("exec in {container}: cannot {step}: {source}")]
    ExecSetup {
        container: String,
        step: &'static str,
        #[source]
        source: nix::errno::Errno,
    },
    /// outpost cannot start processes in this container (its spec uses a feature exec lacks).
    #[error("exec in {container}: {reason}")]
    ExecUnsupported { container: String, reason: &'static str },
    /// A request line was not valid JSON for this protocol.
    #[error("bad request: {source}")]
    BadRequest {
        #[source]
        source: serde_json::Error,
    },
}

impl SupervisorError {
    /// A container that failed this way was created but could not run (its process, working
    /// directory, ...): CRI runtimes fail it at StartContainer, the kubelet's
    /// `RunContainerError`. Other start errors are `CreateContainerError`.
    pub(crate) fn is_run_failure(&self) -> bool {
        matches!(self, Self::Libcontainer { operation: "create" | "start", .. })
            || matches!(self, Self::Command { .. } | Self::WorkingDir { .. })
    }

    /// A `map_err` adapter for a libcontainer call on `container`.
    pub(crate) fn lc(
        operation: &'static str,
        container: impl std::fmt::Display,
    ) -> impl FnOnce(LibcontainerError) -> Self {
        let container = container.to_string();
        move |source| {
            let mut detail = source.to_string();
            let mut next = std::error::Error::source(&source);
            while let Some(e) = next {
                let message = e.to_string();
                // thiserror's `transparent` repeats the inner message.
                if !detail.ends_with(&message) {
                    detail = format!("{detail}: {message}");
                }
                next = e.source();
            }
            Self::Libcontainer { operation, container, detail, source: Box::new(source) }
        }
    }
}

pub type Result<T, E = SupervisorError> = std::result::Result<T, E>;

/// Adds the path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn io(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, what: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| SupervisorError::Io { what, path: path.into(), source })
    }
}
