//! What an action task answers with.

use nix::sys::signal::Signal as NixSignal;

use crate::engine::{ContainerRef, Observed};
use crate::runtime::InstanceId;

use super::deps::PodContext;

/// One action's answer: the fact for the engine and what the agent must remember.
pub struct Outcome {
    pub fact: Option<Observed>,
    pub update: Option<ContextUpdate>,
}

/// What the agent must remember of a task's work: each pod's context.
pub enum ContextUpdate {
    Sandbox { uid: String, context: Box<PodContext> },
    StopSignal { uid: String, container: String, signal: NixSignal },
    SandboxGone { uid: String },
}

impl Outcome {
    pub fn fact(fact: Observed) -> Self {
        Self { fact: Some(fact), update: None }
    }
}

/// The runtime's name for the engine's container instance.
pub fn instance(c: &ContainerRef) -> InstanceId {
    InstanceId::new(c.name.clone(), c.attempt)
}
