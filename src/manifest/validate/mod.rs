//! The Kubernetes validation rules a user hits in practice, with messages that say the fix.
//!
//! Rules and wording follow the API server's `ValidatePod` (pkg/apis/core/validation) where it
//! matters to a static pod; rules about scheduling, PVCs or service accounts do not apply here.

mod configmap_secret;

pub use configmap_secret::registry_credentials_key;
mod container;
mod env;
mod handlers;
mod names;
mod security;
mod volumes;

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;

use super::locate::FieldPath;
use super::Object;
pub(crate) use names::{is_label_value, is_qualified_name};
use security::is_sysctl_name;
pub use security::LINUX_CAPABILITIES;

pub(super) type Findings = Vec<(FieldPath, String)>;

pub(super) fn object(object: &Object) -> Findings {
    let mut c = Checker::default();
    let root = FieldPath::root();
    match object {
        Object::Pod(pod) => c.pod(pod, &root),
        Object::ConfigMap(cm) => c.config_map(cm, &root),
        Object::Secret(s) => c.secret(s, &root),
    }
    c.findings
}

#[derive(Default)]
struct Checker {
    findings: Findings,
}

impl Checker {
    fn fail(&mut self, path: FieldPath, message: impl Into<String>) {
        self.findings.push((path, message.into()));
    }

    fn metadata(
        &mut self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        at: &FieldPath,
    ) {
        let at = at.key("metadata");
        match meta.name.as_deref() {
            None | Some("") => {
                self.fail(at.key("name"), "required: give the object a name, e.g. `name: my-app`")
            }
            Some(name) => self.dns_subdomain(at.key("name"), name),
        }
        if let Some(ns) = meta.namespace.as_deref() {
            self.dns_label(at.key("namespace"), ns);
        }
        if meta.generate_name.is_some() {
            self.fail(at.key("generateName"), "not supported for manifests: set `metadata.name`");
        }
        // The AppArmor annotations that came before `appArmorProfile` (the kubelet still
        // honours them): refused like the field, unless they ask for nothing.
        for (key, value) in meta.annotations.iter().flatten() {
            if key.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && value != "unconfined"
            {
                self.fail(
                    at.key("annotations").key(key),
                    format!("AppArmor profile {value:?} cannot be enforced: outpost does not apply AppArmor profiles; remove the annotation or set it to `unconfined`"),
                );
            }
        }
    }

    /// Safe updates' annotations (`engine::rollout`): a typo must not silently fall back to
    /// the defaults.
    fn rollout_annotations(
        &mut self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        at: &FieldPath,
    ) {
        let at = at.key("metadata").key("annotations");
        for (key, value) in meta.annotations.iter().flatten() {
            match key.as_str() {
                "outpost.dev/rollback" if value != "true" && value != "false" => self.fail(
                    at.key(key),
                    format!("{value:?} is not a boolean: use \"true\" (the default) or \"false\" (replace the pod as the kubelet does)"),
                ),
                "outpost.dev/rollout-deadline-seconds"
                    if !value.parse::<u32>().is_ok_and(|s| s > 0) =>
                {
                    self.fail(
                        at.key(key),
                        format!("{value:?} is not a number of seconds: use a whole number above 0, quoted (e.g. \"120\")"),
                    )
                }
                _ => {}
            }
        }
    }

    fn pod(&mut self, pod: &Pod, at: &FieldPath) {
        self.metadata(&pod.metadata, at);
        self.rollout_annotations(&pod.metadata, at);
        if pod.status.is_some() {
            self.fail(
                at.key("status"),
                "status is written by outpost, not by manifests: remove it",
            );
        }
        let at = at.key("spec");
        let Some(spec) = &pod.spec else {
            self.fail(at, "required: a Pod needs a `spec` with at least one container");
            return;
        };
        if let Some(p) = spec.restart_policy.as_deref() {
            self.one_of(at.key("restartPolicy"), p, &["Always", "OnFailure", "Never"]);
        }
        if let Some(p) = spec.dns_policy.as_deref() {
            self.one_of(
                at.key("dnsPolicy"),
                p,
                &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
            );
            let has_ns = spec
                .dns_config
                .as_ref()
                .and_then(|d| d.nameservers.as_ref())
                .is_some_and(|n| !n.is_empty());
            if p == "None" && !has_ns {
                self.fail(
                    at.key("dnsConfig"),
                    "dnsPolicy None needs at least one `dnsConfig.nameservers` entry",
                );
            }
        }
        if spec.host_users == Some(false) {
            // Accepting it without a user namespace would run the pod as host root while its
            // author believes otherwise.
            self.fail(
                at.key("hostUsers"),
                "user namespaces are not supported by outpost yet: remove hostUsers (the pod then runs in the host's user namespace, as with hostUsers: true)",
            );
            // The API server's rule: a pod in its own user namespace has no power over the
            // host's other namespaces.
            for (field, set) in [
                ("hostNetwork", spec.host_network),
                ("hostPID", spec.host_pid),
                ("hostIPC", spec.host_ipc),
            ] {
                if set == Some(true) {
                    self.fail(
                        at.key(field),
                        format!(
                            "forbidden when `hostUsers` is false: remove {field}, or hostUsers"
                        ),
                    );
                }
            }
        }
        if let Some(h) = spec.hostname.as_deref() {
            self.dns_label(at.key("hostname"), h);
        }
        if let Some(s) = spec.subdomain.as_deref() {
            self.dns_label(at.key("subdomain"), s);
        }
        if let Some(g) = spec.termination_grace_period_seconds {
            if g < 0 {
                self.fail(at.key("terminationGracePeriodSeconds"), "must be 0 or more (seconds)");
            }
        }
        if let Some(d) = spec.active_deadline_seconds {
            if !(1..=i64::from(i32::MAX)).contains(&d) {
                self.fail(
                    at.key("activeDeadlineSeconds"),
                    format!("{d}: must be between 1 and 2147483647, inclusive (seconds)"),
                );
            }
        }
        if let Some(n) = spec.node_name.as_deref() {
            self.dns_subdomain(at.key("nodeName"), n);
        }
        if let Some(os) = &spec.os {
            if os.name != "linux" {
                self.fail(
                    at.key("os").key("name"),
                    format!(
                        "unsupported value {:?}: outpost runs Linux containers only; set `linux` or remove `os`",
                        os.name
                    ),
                );
            }
        }
        self.dns_config(spec, &at);
        for (i, a) in spec.host_aliases.iter().flatten().enumerate() {
            let aat = at.key("hostAliases").index(i);
            self.ip(aat.key("ip"), &a.ip);
            for (j, h) in a.hostnames.iter().flatten().enumerate() {
                self.dns_subdomain(aat.key("hostnames").index(j), h);
            }
        }
        for (name, q) in spec.overhead.iter().flatten() {
            let qat = at.key("overhead").key(name);
            self.resource_name(qat.clone(), name);
            self.quantity(qat, &q.0);
        }
        if let Some(r) = &spec.resources {
            self.resources(r, &at.key("resources"));
        }
        if let Some(sc) = &spec.security_context {
            let sat = at.key("securityContext");
            for (field, id) in [
                ("runAsUser", sc.run_as_user),
                ("runAsGroup", sc.run_as_group),
                ("fsGroup", sc.fs_group),
            ] {
                self.id(sat.key(field), id);
            }
            for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
                self.id(sat.key("supplementalGroups").index(i), Some(*g));
            }
            self.shared_security(
                &sat,
                sc.seccomp_profile.as_ref(),
                sc.se_linux_options.is_some(),
                sc.app_armor_profile.as_ref().map(|p| p.type_.as_str()),
                sc.windows_options.is_some(),
            );
            let mut seen = HashSet::new();
            for (i, s) in sc.sysctls.iter().flatten().enumerate() {
                let nat = at.key("securityContext").key("sysctls").index(i).key("name");
                if !is_sysctl_name(&s.name) {
                    self.fail(nat, format!("invalid sysctl name {:?}: must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$, e.g. net.ipv4.ip_local_port_range", s.name));
                } else if !seen.insert(s.name.replace('/', ".")) {
                    self.fail(nat, format!("duplicate value {:?}: set each sysctl once", s.name));
                }
            }
        }
        if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
            self.fail(
                at.key("ephemeralContainers"),
                "ephemeral containers cannot be declared in a manifest: remove them",
            );
        }

        let volumes = self.volumes(spec.volumes.as_deref().unwrap_or_default(), &at.key("volumes"));
        if spec.containers.is_empty() {
            self.fail(at.key("containers"), "required: a Pod needs at least one container");
        }
        let mut names = HashMap::new();
        let mut host_ports = HashMap::new();
        let groups = [
            ("initContainers", spec.init_containers.as_deref().unwrap_or_default()),
            ("containers", &spec.containers),
        ];
        for (group, containers) in groups {
            for (i, c) in containers.iter().enumerate() {
                let cat = at.key(group).index(i);
                if let Some(first) = names.insert(c.name.clone(), cat.clone()) {
                    if !c.name.is_empty() {
                        self.fail(cat.key("name"), format!("duplicate container name {:?} (also at {first}): container names must be unique across initContainers and containers", c.name));
                    }
                }
                let own_userns = spec.host_users == Some(false);
                self.container(c, &cat, group == "initContainers", &volumes, own_userns);
                for (j, p) in c.ports.iter().flatten().enumerate() {
                    let hp = p.host_port.unwrap_or(0);
                    if hp > 0 {
                        let key = (hp, p.protocol.clone().unwrap_or_else(|| "TCP".into()));
                        let pat = cat.key("ports").index(j).key("hostPort");
                        if let Some(first) = host_ports.insert(key, pat.clone()) {
                            self.fail(pat, format!("hostPort {hp} is already used at {first}: each hostPort/protocol pair can be used once per pod"));
                        }
                    }
                }
            }
        }
    }
}
