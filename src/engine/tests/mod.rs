//! Scenario tests: a fake runtime and clock drive the engine through scripts of events and
//! times; each asserts exact actions, timings, statuses, reasons and messages.

mod sim;

mod admission;
mod adopt;
mod affinity;
mod basics;
mod errors;
mod eviction;
mod hooks;
mod init;
mod probes;
mod prop;
mod restarts;
mod rollout;
mod sandbox;
mod termination;
