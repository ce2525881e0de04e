//! A container: its fields, ports and resource requirements.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Container, ContainerPort, ResourceRequirements};

use super::names::is_qualified_name;
use super::Checker;
use crate::manifest::locate::FieldPath;
use crate::quantity::{Quantity, QuantityError};

impl Checker {
    pub(super) fn container(
        &mut self,
        c: &Container,
        at: &FieldPath,
        init: bool,
        volumes: &HashSet<String>,
        in_own_userns: bool,
    ) {
        if c.name.is_empty() {
            self.fail(at.key("name"), "required: name the container, e.g. `name: app`");
        } else {
            self.dns_label(at.key("name"), &c.name);
        }
        match c.image.as_deref() {
            None | Some("") => self
                .fail(at.key("image"), "required: set the container image, e.g. `image: busybox`"),
            Some(img) if img.trim() != img => {
                self.fail(at.key("image"), "must not start or end with whitespace")
            }
            Some(_) => {}
        }
        if let Some(p) = c.image_pull_policy.as_deref() {
            self.one_of(at.key("imagePullPolicy"), p, &["Always", "IfNotPresent", "Never"]);
        }
        if let Some(p) = c.termination_message_policy.as_deref() {
            self.one_of(at.key("terminationMessagePolicy"), p, &["File", "FallbackToLogsOnError"]);
        }
        let sidecar = init && c.restart_policy.as_deref() == Some("Always");
        if let Some(p) = c.restart_policy.as_deref() {
            if !init {
                self.fail(at.key("restartPolicy"), "only init containers take a restartPolicy (Always, for sidecars); set spec.restartPolicy for the pod");
            } else if p != "Always" {
                self.fail(at.key("restartPolicy"), format!("unsupported value {p:?}: an init container's restartPolicy can only be Always (a sidecar)"));
            }
        }
        if init && !sidecar {
            for (field, set) in [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ] {
                if set {
                    self.fail(at.key(field), "init containers run to completion and take no probes or lifecycle hooks (add `restartPolicy: Always` to make it a sidecar)");
                }
            }
        }
        let ports = c.ports.as_deref().unwrap_or_default();
        self.ports(ports, &at.key("ports"));
        for (field, probe) in [
            ("livenessProbe", &c.liveness_probe),
            ("readinessProbe", &c.readiness_probe),
            ("startupProbe", &c.startup_probe),
        ] {
            if let Some(p) = probe {
                self.probe(p, &at.key(field), field != "readinessProbe", ports);
            }
        }
        if let Some(l) = &c.lifecycle {
            if let Some(h) = &l.post_start {
                self.handler(h, &at.key("lifecycle").key("postStart"), ports);
            }
            if let Some(h) = &l.pre_stop {
                self.handler(h, &at.key("lifecycle").key("preStop"), ports);
            }
        }
        let mut env_names = HashSet::new();
        for (i, e) in c.env.iter().flatten().enumerate() {
            self.env(e, &at.key("env").index(i));
            let _ = env_names.insert(e.name.as_str());
        }
        for (i, e) in c.env_from.iter().flatten().enumerate() {
            self.env_from(e, &at.key("envFrom").index(i));
        }
        let mut mount_paths = HashMap::new();
        for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
            let mat = at.key("volumeMounts").index(i);
            if !volumes.contains(&m.name) {
                let known = if volumes.is_empty() {
                    "the pod declares no volumes: add one under spec.volumes".to_string()
                } else {
                    let mut v: Vec<_> = volumes.iter().map(String::as_str).collect();
                    v.sort_unstable();
                    format!("declared volumes: {}", v.join(", "))
                };
                self.fail(
                    mat.key("name"),
                    format!("no volume named {:?} in spec.volumes ({known})", m.name),
                );
            }
            if !m.mount_path.starts_with('/') {
                self.fail(
                    mat.key("mountPath"),
                    format!("must be an absolute path, got {:?}", m.mount_path),
                );
            } else if let Some(first) =
                mount_paths.insert(m.mount_path.trim_end_matches('/').to_string(), mat.clone())
            {
                self.fail(
                    mat.key("mountPath"),
                    format!(
                        "{:?} is already mounted at {first}: mount paths must be unique",
                        m.mount_path
                    ),
                );
            }
            if let Some(sp) = m.sub_path.as_deref() {
                if !sp.is_empty() {
                    self.descending_path(mat.key("subPath"), sp);
                }
            }
            if let Some(p) = m.mount_propagation.as_deref() {
                self.one_of(
                    mat.key("mountPropagation"),
                    p,
                    &["None", "HostToContainer", "Bidirectional"],
                );
            }
        }
        if let Some(r) = &c.resources {
            self.resources(r, &at.key("resources"));
        }
        if let Some(sc) = &c.security_context {
            let sat = at.key("securityContext");
            self.id(sat.key("runAsUser"), sc.run_as_user);
            self.id(sat.key("runAsGroup"), sc.run_as_group);
            self.shared_security(
                &sat,
                sc.seccomp_profile.as_ref(),
                sc.se_linux_options.is_some(),
                sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
                sc.windows_options.is_some(),
            );
            match sc.proc_mount.as_deref() {
                None | Some("Default") => {}
                // The API server's rule first; then what outpost does not do yet.
                Some("Unmasked") if !in_own_userns => self.fail(
                    sat.key("procMount"),
                    "`hostUsers` must be false to use `Unmasked`: remove procMount, or set hostUsers: false",
                ),
                Some("Unmasked") => self.fail(
                    sat.key("procMount"),
                    "outpost always masks /proc paths (procMount Unmasked is not supported): remove procMount",
                ),
                Some(other) => self.one_of(sat.key("procMount"), other, &["Default", "Unmasked"]),
            }
            if let Some(caps) = &sc.capabilities {
                for (field, list) in [("add", &caps.add), ("drop", &caps.drop)] {
                    for (i, name) in list.iter().flatten().enumerate() {
                        self.capability(sat.key("capabilities").key(field).index(i), name);
                    }
                }
            }
        }
    }

    pub(super) fn ports(&mut self, ports: &[ContainerPort], at: &FieldPath) {
        let mut names = HashMap::new();
        let mut numbers = HashMap::new();
        for (i, p) in ports.iter().enumerate() {
            let pat = at.index(i);
            if !(1..=65535).contains(&p.container_port) {
                self.fail(
                    pat.key("containerPort"),
                    format!("{} is not a valid port: use 1-65535", p.container_port),
                );
            }
            if let Some(hp) = p.host_port {
                if !(0..=65535).contains(&hp) {
                    self.fail(
                        pat.key("hostPort"),
                        format!("{hp} is not a valid port: use 1-65535"),
                    );
                }
            }
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            self.one_of(pat.key("protocol"), &proto, &["TCP", "UDP", "SCTP"]);
            if let Some(n) = p.name.as_deref() {
                self.port_name(pat.key("name"), n);
                if let Some(first) = names.insert(n.to_string(), pat.clone()) {
                    self.fail(
                        pat.key("name"),
                        format!("duplicate port name {n:?} (also at {first})"),
                    );
                }
            }
            if let Some(first) = numbers.insert((p.container_port, proto.clone()), pat.clone()) {
                self.fail(
                    pat.key("containerPort"),
                    format!("duplicate port {}/{proto} (also at {first})", p.container_port),
                );
            }
        }
    }

    pub(super) fn resources(&mut self, r: &ResourceRequirements, at: &FieldPath) {
        for (field, list) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, q) in list.iter().flatten() {
                self.resource_name(at.key(field).key(name), name);
                self.quantity(at.key(field).key(name), &q.0);
            }
        }
        self.extended_resources(r, at);
    }

    /// The API server's rules for resources that cannot be overcommitted (extended ones,
    /// handed out as whole devices): whole numbers, and a request equal to the limit.
    fn extended_resources(&mut self, r: &ResourceRequirements, at: &FieldPath) {
        let extended = |list: &Option<std::collections::BTreeMap<String, _>>| {
            let all = list.iter().flatten();
            all.filter(|(n, _)| is_extended(n))
                .map(
                    |(n, q): (
                        &String,
                        &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                    )| {
                        (n.clone(), q.0.clone(), q.0.parse::<Quantity>().ok())
                    },
                )
                .collect::<Vec<_>>()
        };
        let limits = extended(&r.limits);
        for (field, list) in [("requests", extended(&r.requests)), ("limits", limits.clone())] {
            for (name, text, q) in &list {
                if q.as_ref().is_some_and(|q| q.millis() % 1000 != 0) {
                    let fix = "extended resources are whole devices";
                    self.fail(
                        at.key(field).key(name),
                        format!("{text:?}: must be an integer: {fix}"),
                    );
                }
            }
        }
        for (name, text, q) in extended(&r.requests) {
            match limits.iter().find(|(n, _, _)| *n == name) {
                None => self.fail(
                    at.key("limits").key(&name),
                    format!("Limit must be set for non overcommitable resources: set limits[{name:?}] to the request ({text})"),
                ),
                Some((_, limit, l)) if l.as_ref().map(Quantity::millis) != q.as_ref().map(Quantity::millis) => self.fail(
                    at.key("requests").key(&name),
                    format!("{text:?}: must be equal to {name} limit of {limit}"),
                ),
                Some(_) => {}
            }
        }
    }

    pub(super) fn quantity(&mut self, at: FieldPath, q: &str) {
        match q.parse::<Quantity>() {
            Err(QuantityError::Format(_)) => self.fail(at, format!("{q:?} is not a quantity: write e.g. `100m` or `0.5` for cpu, `64Mi` or `1Gi` for memory")),
            Err(QuantityError::Overflow(_)) => self.fail(at, format!("{q:?}: too large: a quantity holds at most 9223372036854775807 (2^63-1) units")),
            Ok(v) if v.is_negative() => self.fail(at, format!("{q:?}: must be greater than or equal to 0")),
            Ok(_) => {}
        }
    }

    /// The API's container resource names: a standard one, or an extended resource named with
    /// a domain outside kubernetes.io.
    pub(super) fn resource_name(&mut self, at: FieldPath, name: &str) {
        let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage")
            || name.strip_prefix("hugepages-").is_some_and(|size| size.parse::<Quantity>().is_ok());
        let extended = is_qualified_name(name) && is_extended(name);
        if !standard && !extended {
            self.fail(at, format!("invalid resource name {name:?}: must be a standard resource for containers (cpu, memory, ephemeral-storage, hugepages-<size>) or fully qualified (an extended resource such as example.com/device)"));
        }
    }
}

/// `IsExtendedResourceName` (the engine's admission has the same rule).
fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}
