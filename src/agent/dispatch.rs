//! Engine actions become tasks; each answers on the outcome channel.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::engine::{Action, EventType, Observed};
use crate::image::pull::keyring::Keyring;
use crate::manifest::DesiredState;
use crate::runtime::Runtime;

use super::outcome::Outcome;
use super::state::Agent;
use super::{container, handlers, sandbox};

type Task = Pin<Box<dyn Future<Output = Outcome> + Send>>;

impl<R: Runtime + 'static> Agent<R> {
    pub(super) fn dispatch(&mut self, action: Action) {
        let deps = self.deps.clone();
        let tx = self.outcomes.clone();
        let desired = self.effective_desired();
        let task = |fut: Task| async move {
            let outcome = fut.await;
            let _ = tx.send(outcome).await;
        };
        let fut: Task = match action {
            Action::Event { pod_uid, container, type_, reason, message } => {
                self.record_event(pod_uid, container, type_, reason, message);
                return;
            }
            Action::CreateSandbox { pod } => {
                Box::pin(async move { sandbox::create(&deps, &pod, &desired).await })
            }
            Action::PullImage { c, image, policy } => {
                let credentials = self.pull_secrets(&c.pod_uid);
                let published = self.published.clone();
                let early = self.outcomes.clone();
                Box::pin(async move {
                    let outcome =
                        container::pull_image(&deps, c, &image, &policy, credentials, &early).await;
                    let pulled = matches!(outcome.fact, Some(Observed::ImagePulled { .. }));
                    published.metrics.image_pull(pulled);
                    outcome
                })
            }
            Action::StartContainer { c, spec } => {
                let Some(pod) = self.pod(&c.pod_uid) else { return };
                self.tags.insert((c.pod_uid.clone(), c.name.clone(), c.attempt), c.sandbox);
                let context = self.contexts.get(&c.pod_uid).cloned().unwrap_or_default();
                Box::pin(async move {
                    container::start(&deps, c, &pod, &spec, &desired, &context).await
                })
            }
            Action::RunProbe { c, kind, seq, probe, timeout } => {
                let context = self.contexts.get(&c.pod_uid).cloned().unwrap_or_default();
                // Only a port name needs the container's ports (copied from the spec).
                let port = |p: Option<&IntOrString>| matches!(p, Some(IntOrString::String(_)));
                let named = port(probe.http_get.as_ref().map(|h| &h.port))
                    || port(probe.tcp_socket.as_ref().map(|t| &t.port));
                let ports = if named { self.ports(&c) } else { Vec::new() };
                let published = self.published.clone();
                Box::pin(async move {
                    let started = std::time::Instant::now();
                    let result =
                        handlers::run_probe(&deps, &c, &probe, timeout, &ports, &context).await;
                    published.metrics.probe(kind, result.is_ok(), started.elapsed());
                    Outcome {
                        fact: Some(Observed::ProbeResult { c, kind, seq, result }),
                        update: None,
                    }
                })
            }
            Action::RunHook { c, kind, handler, timeout } => {
                let context = self.contexts.get(&c.pod_uid).cloned().unwrap_or_default();
                let ports = self.ports(&c);
                let (namespace, name) = self.names.get(&c.pod_uid).cloned().unwrap_or_default();
                let pod = format!("{name}_{namespace}({})", c.pod_uid);
                Box::pin(async move {
                    let result =
                        handlers::run_hook(&deps, &c, &pod, &handler, timeout, &ports, &context)
                            .await;
                    if let Err(e) = &result {
                        // The event leaves the output out (it may hold secrets); the log has it.
                        log::warn!(
                            "pod {namespace}/{name}: container {}: {kind:?} hook: {e}",
                            c.name
                        );
                    }
                    Outcome { fact: Some(Observed::HookResult { c, kind, result }), update: None }
                })
            }
            Action::KillContainer { c, signal } => {
                let stop = self
                    .contexts
                    .get(&c.pod_uid)
                    .and_then(|ctx| ctx.stop_signals.get(&c.name).copied());
                Box::pin(async move { container::kill(&deps, c, signal, stop).await })
            }
            Action::RemoveContainer { c } => {
                self.tags.remove(&(c.pod_uid.clone(), c.name.clone(), c.attempt));
                Box::pin(async move { container::remove(&deps, c).await })
            }
            Action::UpdateVolumes { pod } => {
                let deps = self.deps.clone();
                self.ex
                    .spawn(async move { sandbox::update_volumes(&deps, &pod, &desired).await })
                    .detach();
                return;
            }
            Action::RemoveLogs { pod_uid } => {
                // At once, before any task of this pass: a pod of the same UID may start anew.
                self.deps.remove_logs(&pod_uid);
                if let Some(devices) = &self.deps.devices {
                    devices.release(&pod_uid);
                }
                if let Some(userns) = &self.deps.userns {
                    userns.release(&pod_uid);
                }
                return;
            }
            Action::RemoveSandbox { pod_uid } => {
                self.tags.retain(|(uid, _, _), _| *uid != pod_uid);
                Box::pin(async move { sandbox::remove(&deps, &pod_uid).await })
            }
        };
        self.ex.spawn(task(fut)).detach();
    }

    /// What actions render from: the engine's view (a rolled-back pod's ConfigMaps and Secrets
    /// as they were), else the directory's.
    fn effective_desired(&self) -> Arc<DesiredState> {
        self.engine.effective_desired().unwrap_or(&self.desired).clone()
    }

    /// The pod's image pull secrets, with the kubelet's warning for those it cannot use.
    fn pull_secrets(&mut self, uid: &str) -> Keyring {
        let namespace = self.names.get(uid).map(|(ns, _)| ns.clone()).unwrap_or_default();
        let Some(spec) = self.engine.spec(uid) else { return Keyring::default() };
        let desired = self.engine.effective_desired().unwrap_or(&self.desired);
        let (ring, unusable) = container::pull_secrets(spec, &namespace, desired);
        if !unusable.is_empty() {
            let message = format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                unusable.join(", ")
            );
            let reason = "FailedToRetrieveImagePullSecret".to_string();
            self.record_event(uid.to_string(), None, EventType::Warning, reason, message);
        }
        ring
    }
}
