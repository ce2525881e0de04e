//! CDI device names in Allocate answers (`vendor.com/class=name`), resolved as containerd does
//! from the spec files in `/etc/cdi` and `/var/run/cdi` (the latter wins for a kind both
//! define): the device's and its spec's container edits (env, device nodes, mounts) become one
//! more answer for `oci::apply`. Hooks and the other edits are not supported yet: a device
//! that needs them is refused rather than run half set up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::proto::{ContainerAllocation, DeviceSpec, Mount};
use super::DeviceError;

/// containerd's default spec directories, lowest priority first.
pub const DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    kind: String,
    #[serde(default)]
    devices: Vec<SpecDevice>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecDevice {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Edits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    mounts: Vec<CdiMount>,
    #[serde(default)]
    hooks: Vec<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    host_path: Option<String>,
    permissions: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiMount {
    host_path: String,
    container_path: String,
    #[serde(default)]
    options: Vec<String>,
}

fn fail(name: &str, problem: String) -> DeviceError {
    DeviceError::Cdi { name: name.to_string(), problem }
}

/// Every spec file of `dirs` (`.json`, `.yaml`), by kind; a later directory's spec replaces
/// an earlier one's. Unreadable or invalid files are skipped with a warning, as containerd's
/// registry does.
fn specs(dirs: &[PathBuf]) -> BTreeMap<String, Vec<(PathBuf, Spec)>> {
    let mut by_kind: BTreeMap<String, Vec<(PathBuf, Spec)>> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        let mut here: BTreeMap<String, Vec<(PathBuf, Spec)>> = BTreeMap::new();
        for f in files {
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if !matches!(ext, "json" | "yaml" | "yml") {
                continue;
            }
            // JSON is YAML: one parser for both.
            let parsed = std::fs::read_to_string(&f)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_yaml::from_str::<Spec>(&t).map_err(|e| e.to_string()));
            match parsed {
                Ok(spec) => here.entry(spec.kind.clone()).or_default().push((f, spec)),
                Err(e) => log::warn!("cdi: {} skipped: {e}", f.display()),
            }
        }
        by_kind.extend(here);
    }
    by_kind
}

/// The edits of the devices `names` (fully qualified) as one answer.
pub fn resolve(names: &[String], dirs: &[PathBuf]) -> Result<ContainerAllocation, DeviceError> {
    let mut out = ContainerAllocation::default();
    if names.is_empty() {
        return Ok(out);
    }
    let specs = specs(dirs);
    let mut spec_edits_done = std::collections::BTreeSet::new();
    for name in names {
        let (kind, device) = name
            .split_once('=')
            .filter(|(k, d)| k.contains('/') && !d.is_empty())
            .ok_or_else(|| {
                fail(name, "not a fully qualified CDI device name (vendor.com/class=name)".into())
            })?;
        let found = specs.get(kind).into_iter().flatten().find_map(|(file, s)| {
            s.devices.iter().find(|d| d.name == device).map(|d| (file, s, d))
        });
        let Some((file, spec, dev)) = found else {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(fail(
                name,
                format!("unresolvable CDI device: no spec in {} defines it", dirs.join(", ")),
            ));
        };
        if spec_edits_done.insert(file.clone()) {
            add(&mut out, &spec.container_edits, name, file)?;
        }
        add(&mut out, &dev.container_edits, name, file)?;
    }
    Ok(out)
}

fn add(
    out: &mut ContainerAllocation,
    e: &Edits,
    name: &str,
    file: &Path,
) -> Result<(), DeviceError> {
    if !e.hooks.is_empty() {
        return Err(fail(name, format!("{}: CDI hooks are not supported", file.display())));
    }
    for kv in &e.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        out.envs.insert(k.to_string(), v.to_string());
    }
    for d in &e.device_nodes {
        out.devices.push(DeviceSpec {
            container_path: d.path.clone(),
            host_path: d.host_path.clone().unwrap_or_else(|| d.path.clone()),
            permissions: d.permissions.clone().unwrap_or_default(),
        });
    }
    for m in &e.mounts {
        out.mounts.push(Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            read_only: m.options.iter().any(|o| o == "ro"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_from_the_spec_directories_later_ones_first() {
        let tmp = tempfile::tempdir().unwrap();
        let (etc, run) = (tmp.path().join("etc"), tmp.path().join("run"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(
            etc.join("vendor.yaml"),
            "cdiVersion: 0.6.0\nkind: vendor.com/dev\ndevices:\n- name: a\n  containerEdits:\n    env: [OLD=1]\n",
        )
        .unwrap();
        std::fs::write(
            run.join("vendor.json"),
            r#"{"cdiVersion":"0.6.0","kind":"vendor.com/dev","containerEdits":{"env":["SPEC=1"]},
               "devices":[{"name":"a","containerEdits":{"env":["A=1"],
                 "deviceNodes":[{"path":"/dev/a","hostPath":"/dev/null","permissions":"rw"}],
                 "mounts":[{"hostPath":"/usr/lib","containerPath":"/lib/a","options":["ro","bind"]}]}},
                 {"name":"b","containerEdits":{"env":["B=1"]}}]}"#,
        )
        .unwrap();
        std::fs::write(run.join("broken.yaml"), "kind: [").unwrap();
        let dirs = [etc, run];
        let a = resolve(&["vendor.com/dev=a".into(), "vendor.com/dev=b".into()], &dirs).unwrap();
        let env: Vec<_> = a.envs.keys().map(String::as_str).collect();
        assert_eq!(env, ["A", "B", "SPEC"], "the /var/run/cdi spec replaced /etc/cdi's");
        assert_eq!(a.devices[0].host_path, "/dev/null");
        assert!(a.mounts[0].read_only);
        let err = resolve(&["vendor.com/dev=c".into()], &dirs).unwrap_err().to_string();
        assert!(err.starts_with("CDI device vendor.com/dev=c: unresolvable CDI device"), "{err}");
        let err = resolve(&["c".into()], &dirs).unwrap_err().to_string();
        assert!(err.contains("not a fully qualified CDI device name"), "{err}");
    }
}
