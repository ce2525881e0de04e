//! Containers: images pulled, started from their spec, signalled and removed.

use std::path::PathBuf;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use nix::sys::signal::Signal as NixSignal;

use crate::engine::{
    ContainerRef, ImageFailure, KillSignal, Observed, PullStats, StartFailure, Timestamp,
};
use crate::image::pull::keyring::Keyring;
use crate::image::pull::{PullError, PullOptions};
use crate::manifest::{registry_credentials_key, DesiredState, ObjectKey};
use crate::runtime::spec::{self, ContainerInput};
use crate::runtime::{ContainerConfig, ContainerStdio, LogOptions, Runtime, RuntimeError};
use crate::volume;

use super::deps::{Deps, PodContext};
use super::outcome::{instance, ContextUpdate, Outcome};
use super::pod_files;

/// Makes the image available per its pull policy: from the store, else from its registry.
/// Sends `ImagePulling` on `early` when a registry pull begins, ahead of the answer.
pub async fn pull_image<R>(
    deps: &Deps<R>,
    c: ContainerRef,
    image: &str,
    policy: &str,
    pod_credentials: Keyring,
    early: &smol::channel::Sender<Outcome>,
) -> Outcome {
    let start = Instant::now();
    let pulling = || {
        // Unbounded, so never full.
        let _ = early.try_send(Outcome::fact(Observed::ImagePulling { c: c.clone() }));
    };
    let options = PullOptions { pod_credentials, ..deps.pull_options.clone() };
    let result = crate::image::pull::ensure(&deps.images, image, policy, &options, pulling).await;
    Outcome::fact(match result {
        Ok(done) => {
            let size = done.image.size;
            let pull = done.pulled.map(|took| PullStats { took, total: start.elapsed(), size });
            Observed::ImagePulled { c, pull }
        }
        Err(e) => {
            let reason = match e {
                PullError::NeverPull { .. } => ImageFailure::NeverPull,
                _ => ImageFailure::Pull,
            };
            Observed::ImagePullFailed { c, reason, message: e.to_string() }
        }
    })
}

/// The pod's `imagePullSecrets` as a keyring, and the names of those that could not be used
/// (missing, of another type than `kubernetes.io/dockerconfigjson` or `dockercfg`, or
/// unreadable), as the kubelet's `getPullSecretsForPod` and `MakeDockerKeyring`.
pub fn pull_secrets(
    spec: &PodSpec,
    namespace: &str,
    desired: &DesiredState,
) -> (Keyring, Vec<String>) {
    let mut ring = Keyring::default();
    let mut unusable = Vec::new();
    for name in spec.image_pull_secrets.iter().flatten().map(|r| r.name.as_str()) {
        if name.is_empty() {
            continue;
        }
        let secret = desired.secrets.get(&ObjectKey::new(namespace, name));
        let Some((secret, key)) = secret.and_then(|s| Some((s, registry_credentials_key(s)?)))
        else {
            unusable.push(name.to_string());
            continue;
        };
        let data = secret.data.as_ref().and_then(|d| d.get(key));
        match data.map(|d| ring.add_docker_config(&d.0)) {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                log::warn!("{namespace}/{name}: image pull secret not used: {e}");
                unusable.push(name.to_string());
            }
            None => unusable.push(name.to_string()),
        }
    }
    (ring, unusable)
}

pub async fn start<R: Runtime>(
    deps: &Deps<R>,
    c: ContainerRef,
    pod: &Pod,
    container: &Container,
    desired: &DesiredState,
    context: &PodContext,
) -> Outcome {
    match try_start(deps, &c, pod, container, desired, context).await {
        Ok((at, signal)) => Outcome {
            fact: Some(Observed::ContainerStarted { c: c.clone(), at }),
            update: Some(ContextUpdate::StopSignal {
                uid: c.pod_uid.clone(),
                container: c.name.clone(),
                signal,
            }),
        },
        Err((reason, message)) => Outcome::fact(Observed::StartFailed { c, reason, message }),
    }
}

async fn try_start<R: Runtime>(
    deps: &Deps<R>,
    c: &ContainerRef,
    pod: &Pod,
    container: &Container,
    desired: &DesiredState,
    context: &PodContext,
) -> Result<(Timestamp, NixSignal), (StartFailure, String)> {
    let create = |m: String| (StartFailure::Create, m);
    let reference = container.image.clone().unwrap_or_default();
    let images = deps.images.clone();
    let image = smol::unblock(move || images.resolve(&reference))
        .await
        .map_err(|e| create(e.to_string()))?
        .ok_or_else(|| {
            create(format!("image {:?} is no longer in the image store", container.image))
        })?;
    let image_config = image.config.config().clone().unwrap_or_default();
    let mut files = context.files.clone();
    let log = pod_files::termination_log(&deps.pod_data(&c.pod_uid), &c.name, c.attempt)
        .map_err(|e| create(format!("termination log: {e}")))?;
    // In its own user namespace, the container's root writes it as the pod's first host id.
    if pod.spec.as_ref().and_then(|s| s.host_users) == Some(false) {
        let ids =
            deps.userns.as_ref().ok_or_else(|| create("user namespaces are unavailable".into()))?;
        let first = ids.grant(&c.pod_uid).map_err(create)?;
        std::os::unix::fs::chown(&log, Some(first), Some(first))
            .map_err(|e| create(format!("termination log {}: {e}", log.display())))?;
    }
    files.termination_log = Some(log);
    let init = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.init_containers.iter().flatten().any(|i| i.name == c.name));
    // Not held across an await: the mounter is shared with other tasks.
    let mut built = {
        let sub_paths = volume::subpath::BindSubPaths {
            dir: deps.pod_data(&c.pod_uid).join("volume-subpaths"),
            mounter: deps.mounter.as_ref(),
        };
        let input = ContainerInput {
            pod,
            container,
            init,
            image: &image_config,
            desired,
            volumes: &context.volumes,
            files: &files,
            pod_ips: &context.pod_ips,
            node: &deps.node,
            sub_paths: &sub_paths,
        };
        spec::container_spec(&input).map_err(|e| {
            if let spec::SpecError::SubPath { mount, problem, .. } = &e {
                // The user sees the kubelet's terse message; the cause goes to the log.
                log::warn!(
                    "pod {}: container {}: subPath of {mount}: {problem}",
                    c.pod_uid,
                    c.name
                );
            }
            spec_failure(e)
        })?
    };
    for w in &built.warnings {
        log::warn!(
            "pod {}: container {}: {w}",
            pod.metadata.name.as_deref().unwrap_or_default(),
            c.name
        );
    }
    let passwd = read_from_layers(&image.layers, "etc/passwd");
    let group = read_from_layers(&image.layers, "etc/group");
    built.resolve_user(passwd.as_deref(), group.as_deref()).map_err(spec_failure)?;
    let wanted = crate::device::container_requests(container);
    if !wanted.is_empty() {
        // Without a manager (its directory could not be served) admission rejected the pod.
        if let Some(devices) = &deps.devices {
            // Init containers (not sidecars, which keep running) are done when a later
            // container starts: their devices can be its.
            let spec = pod.spec.as_ref();
            let reusable: Vec<String> = spec
                .and_then(|s| s.init_containers.as_ref())
                .into_iter()
                .flatten()
                .filter(|i| i.name != c.name && i.restart_policy.as_deref() != Some("Always"))
                .map(|i| i.name.clone())
                .collect();
            let answers = devices.allocate(&c.pod_uid, &c.name, &reusable, &wanted);
            let answers = answers.await.map_err(|e| {
                log::warn!("pod {}: container {}: {e}", c.pod_uid, c.name);
                create(e.to_string())
            })?;
            for a in &answers {
                let cdi = devices.cdi_edits(a).map_err(|e| create(e.to_string()))?;
                for a in [a, &cdi] {
                    crate::device::apply(&mut built.spec, a).map_err(|e| create(e.to_string()))?;
                }
            }
        }
    }
    let config = ContainerConfig {
        id: instance(c),
        spec: built.spec,
        lower_dirs: image.layers,
        log: LogOptions::default(),
        stdio: ContainerStdio {
            stdin: container.stdin == Some(true),
            stdin_once: container.stdin_once == Some(true),
            tty: container.tty == Some(true),
        },
    };
    let status = deps.runtime.start_container(&c.pod_uid, config).await.map_err(|e| match e {
        RuntimeError::RunFailed { .. } => (StartFailure::Run, e.to_string()),
        e => (StartFailure::Create, e.to_string()),
    })?;
    let at = crate::format::timestamp(status.started_at);
    Ok((at, built.stop_signal))
}

/// A spec error as the kubelet reports it: its config errors (`runAsNonRoot`, volumes, ...)
/// as `CreateContainerConfigError`, the runtime's (no command, unknown user) as
/// `CreateContainerError`.
fn spec_failure(e: spec::SpecError) -> (StartFailure, String) {
    let reason = match e.reason() {
        "CreateContainerConfigError" => StartFailure::Config,
        _ => StartFailure::Create,
    };
    (reason, e.to_string())
}

/// A file of the image, from the topmost layer that has it (a whiteout hides it below).
fn read_from_layers(layers: &[PathBuf], rel: &str) -> Option<String> {
    for layer in layers.iter().rev() {
        let path = layer.join(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => return std::fs::read_to_string(&path).ok(),
            // A char device is an overlay whiteout: the file was deleted in this layer.
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

pub async fn kill<R: Runtime>(
    deps: &Deps<R>,
    c: ContainerRef,
    signal: KillSignal,
    stop: Option<NixSignal>,
) -> Outcome {
    let sig = match signal {
        KillSignal::Term => stop.unwrap_or(NixSignal::SIGTERM),
        KillSignal::Kill => NixSignal::SIGKILL,
    };
    if let Err(e) = deps.runtime.kill_container(&c.pod_uid, &instance(&c), sig).await {
        // An instance that already exited answers with its exit event; nothing else to do.
        log::debug!("pod {}: kill {} with {sig}: {e}", c.pod_uid, c.name);
    }
    Outcome { fact: None, update: None }
}

pub async fn remove<R: Runtime>(deps: &Deps<R>, c: ContainerRef) -> Outcome {
    if let Err(e) = deps.runtime.remove_container(&c.pod_uid, &instance(&c)).await {
        log::debug!("pod {}: remove {}#{}: {e}", c.pod_uid, c.name, c.attempt);
    }
    Outcome { fact: None, update: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::NonRootProblem;

    /// runAsNonRoot is the kubelet's CreateContainerConfigError; an unknown user is the
    /// runtime's CreateContainerError.
    #[test]
    fn spec_errors_keep_the_kubelets_reason() {
        let e = spec::SpecError::RunAsNonRoot {
            pod: "web_default(u)".into(),
            container: "app".into(),
            problem: NonRootProblem::ImageRoot,
        };
        assert_eq!(
            spec_failure(e),
            (
                StartFailure::Config,
                "container has runAsNonRoot and image will run as root (pod: \"web_default(u)\", container: app)".into()
            )
        );
        let e = spec::SpecError::UserNotFound { user: "www".into() };
        assert_eq!(spec_failure(e).0, StartFailure::Create);
    }
}
