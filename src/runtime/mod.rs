//! Runs pods: the only module that touches libcontainer, cgroups, mounts and namespaces.
pub mod spec;
