//! Kubernetes containers to OCI runtime specs, without root: command and env, resources and
//! their cgroup files (libcontainer's v2 writers on a fake cgroupfs), security and mounts.

mod support;

mod cgroup_v2_mapping;
mod command_env;
mod resources;
mod security_mounts;
