//! A plugin's Allocate answer applied to a container's OCI spec, as containerd's CRI does
//! (`WithDevices`, `WithMounts`, env, annotations): each device node as the host's (type,
//! numbers, mode, owner) at the container path, allowed in the device cgroup with the
//! plugin's permissions; bind mounts; envs the container does not set itself.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Mount, Spec,
};

use super::{ContainerAllocation, DeviceError};

pub fn apply(spec: &mut Spec, a: &ContainerAllocation) -> Result<(), DeviceError> {
    let mut devices = Vec::new();
    let mut rules = Vec::new();
    let volumes: Vec<PathBuf> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("bind"))
        .map(|m| m.destination().clone())
        .collect();
    for d in &a.devices {
        let fail = |problem: String| DeviceError::DeviceNode {
            host_path: d.host_path.clone(),
            container_path: d.container_path.clone(),
            problem,
        };
        check_container_path(&d.container_path, &volumes).map_err(fail)?;
        let meta = std::fs::metadata(&d.host_path).map_err(|e| fail(e.to_string()))?;
        let typ = match meta.file_type() {
            t if t.is_char_device() => LinuxDeviceType::C,
            t if t.is_block_device() => LinuxDeviceType::B,
            _ => return Err(fail("not a device node".into())),
        };
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
        let device = LinuxDeviceBuilder::default()
            .path(PathBuf::from(&d.container_path))
            .typ(typ)
            .major(major)
            .minor(minor)
            .file_mode(meta.permissions().mode() & 0o777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build()
            .map_err(|e| fail(e.to_string()))?;
        devices.push(device);
        let mut rule = LinuxDeviceCgroup::default();
        rule.set_allow(true);
        rule.set_typ(Some(typ));
        rule.set_major(Some(major));
        rule.set_minor(Some(minor));
        let access = if d.permissions.is_empty() { "rwm" } else { &d.permissions };
        rule.set_access(Some(access.to_string()));
        rules.push(rule);
    }
    if let Some(linux) = spec.linux_mut() {
        let mut all = linux.devices().clone().unwrap_or_default();
        all.extend(devices);
        linux.set_devices(Some(all));
        let mut resources = linux.resources().clone().unwrap_or_else(LinuxResources::default);
        let mut cgroup = resources.devices().clone().unwrap_or_default();
        cgroup.extend(rules);
        resources.set_devices(Some(cgroup));
        linux.set_resources(Some(resources));
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &a.mounts {
        let mut mount = Mount::default();
        mount.set_destination(PathBuf::from(&m.container_path));
        mount.set_typ(Some("bind".into()));
        mount.set_source(Some(PathBuf::from(&m.host_path)));
        let ro = if m.read_only { "ro" } else { "rw" };
        mount.set_options(Some(vec!["rbind".into(), "rprivate".into(), ro.into()]));
        mounts.push(mount);
    }
    spec.set_mounts(Some(mounts));
    if let Some(process) = spec.process_mut() {
        let mut env = process.env().clone().unwrap_or_default();
        for (k, v) in &a.envs {
            // The kubelet puts the plugin's envs before the container's: the container's win.
            if !env.iter().any(|e| e.split_once('=').is_some_and(|(n, _)| n == k)) {
                env.push(format!("{k}={v}"));
            }
        }
        process.set_env(Some(env));
    }
    if !a.annotations.is_empty() {
        let mut annotations = spec.annotations().clone().unwrap_or_default();
        annotations.extend(a.annotations.iter().map(|(k, v)| (k.clone(), v.clone())));
        spec.set_annotations(Some(annotations));
    }
    Ok(())
}

/// A device node is made by path before the container starts, in its mount namespace but still
/// under the host's root: a path through a volume the pod can write (a sibling may be turning a
/// directory of it into a symlink meanwhile, as in runc's CVE-2021-30465) could put the node on
/// the host's filesystem. So the path is a plain one under `/dev` (libcontainer's own tmpfs) and
/// never inside a volume mounted there.
fn check_container_path(path: &str, volumes: &[PathBuf]) -> Result<(), String> {
    use std::path::Component;
    let p = std::path::Path::new(path);
    let plain = p.components().skip(1).all(|c| matches!(c, Component::Normal(_)));
    if !p.starts_with("/dev") || p == std::path::Path::new("/dev") || !plain {
        return Err("the container path must be a plain path under /dev".into());
    }
    match volumes.iter().find(|v| p.starts_with(v)) {
        Some(v) => Err(format!(
            "the container path is inside the volume mounted at {}, where the pod's containers could redirect it to the host: mount the volume elsewhere",
            v.display()
        )),
        None => Ok(()),
    }
}
