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
    for d in &a.devices {
        let fail = |problem: String| DeviceError::DeviceNode {
            host_path: d.host_path.clone(),
            container_path: d.container_path.clone(),
            problem,
        };
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
