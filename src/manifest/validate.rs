//! The Kubernetes validation rules a user hits in practice, with messages that say the fix.
//!
//! Rules and wording follow the API server's `ValidatePod` (pkg/apis/core/validation) where it
//! matters to a static pod; rules about scheduling, PVCs or service accounts do not apply here.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvFromSource, EnvVar, KeyToPath, LifecycleHandler, Pod,
    PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::locate::FieldPath;
use super::Object;
use crate::quantity::{Quantity, QuantityError};

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

/// The volume sources outpost can provide on a device without a cluster.
pub(super) const SUPPORTED_VOLUMES: &[&str] =
    &["emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected"];

const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];

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

    fn pod(&mut self, pod: &Pod, at: &FieldPath) {
        self.metadata(&pod.metadata, at);
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
                self.container(c, &cat, group == "initContainers", &volumes);
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

    /// Returns the names of the declared volumes.
    fn volumes(&mut self, volumes: &[Volume], at: &FieldPath) -> HashSet<String> {
        let mut names = HashSet::new();
        for (i, v) in volumes.iter().enumerate() {
            let vat = at.index(i);
            if v.name.is_empty() {
                self.fail(
                    vat.key("name"),
                    "required: name the volume so volumeMounts can refer to it",
                );
            } else {
                self.dns_label(vat.key("name"), &v.name);
                if !names.insert(v.name.clone()) {
                    self.fail(
                        vat.key("name"),
                        format!("duplicate volume name {:?}: volume names must be unique", v.name),
                    );
                }
            }
            // Counting the serialized keys catches every source type, present and future.
            let json = serde_json::to_value(v).unwrap_or_default();
            let sources: Vec<&String> = json
                .as_object()
                .map(|m| m.keys().filter(|k| *k != "name").collect())
                .unwrap_or_default();
            if sources.len() > 1 {
                let list = sources.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
                self.fail(
                    vat.clone(),
                    format!("more than one volume type ({list}): pick exactly one"),
                );
            }
            for s in &sources {
                if !SUPPORTED_VOLUMES.contains(&s.as_str()) {
                    self.fail(
                        vat.key(s),
                        format!(
                            "volume type {s:?} is not available on outpost: use one of {}",
                            SUPPORTED_VOLUMES.join(", ")
                        ),
                    );
                }
            }
            if let Some(hp) = &v.host_path {
                let hat = vat.key("hostPath");
                if !hp.path.starts_with('/') {
                    self.fail(
                        hat.key("path"),
                        format!("must be an absolute path, got {:?}", hp.path),
                    );
                }
                if let Some(t) = hp.type_.as_deref() {
                    self.one_of(hat.key("type"), t, HOST_PATH_TYPES);
                }
            }
            if let Some(cm) = &v.config_map {
                let cat = vat.key("configMap");
                self.reference(cat.key("name"), &cm.name, "ConfigMap");
                self.items(cm.items.as_deref(), &cat.key("items"));
                self.mode(cm.default_mode, cat.key("defaultMode"));
            }
            if let Some(s) = &v.secret {
                let sat = vat.key("secret");
                self.reference(
                    sat.key("secretName"),
                    s.secret_name.as_deref().unwrap_or_default(),
                    "Secret",
                );
                self.items(s.items.as_deref(), &sat.key("items"));
                self.mode(s.default_mode, sat.key("defaultMode"));
            }
            if let Some(d) = &v.downward_api {
                let dat = vat.key("downwardAPI");
                for (j, f) in d.items.iter().flatten().enumerate() {
                    let fat = dat.key("items").index(j);
                    self.relative_path(fat.key("path"), &f.path);
                    self.mode(f.mode, fat.key("mode"));
                    if f.field_ref.is_some() == f.resource_field_ref.is_some() {
                        self.fail(fat, "set exactly one of fieldRef or resourceFieldRef");
                    }
                }
            }
            if let Some(p) = &v.projected {
                let mut paths = HashMap::new();
                for (j, src) in p.sources.iter().flatten().enumerate() {
                    let sat = vat.key("projected").key("sources").index(j);
                    let mut item_paths = Vec::new();
                    if let Some(cm) = &src.config_map {
                        self.reference(sat.key("configMap").key("name"), &cm.name, "ConfigMap");
                        self.items(cm.items.as_deref(), &sat.key("configMap").key("items"));
                        for (k, item) in cm.items.iter().flatten().enumerate() {
                            item_paths
                                .push((sat.key("configMap").key("items").index(k), &item.path));
                        }
                    }
                    if let Some(s) = &src.secret {
                        self.reference(sat.key("secret").key("name"), &s.name, "Secret");
                        self.items(s.items.as_deref(), &sat.key("secret").key("items"));
                        for (k, item) in s.items.iter().flatten().enumerate() {
                            item_paths.push((sat.key("secret").key("items").index(k), &item.path));
                        }
                    }
                    if let Some(d) = &src.downward_api {
                        for (k, f) in d.items.iter().flatten().enumerate() {
                            let fat = sat.key("downwardAPI").key("items").index(k);
                            self.relative_path(fat.key("path"), &f.path);
                            self.mode(f.mode, fat.key("mode"));
                            item_paths.push((fat, &f.path));
                        }
                    }
                    for (iat, path) in item_paths {
                        let normal = path.trim_start_matches("./").trim_end_matches('/');
                        if let Some(first) = paths.insert(normal.to_string(), iat.clone()) {
                            self.fail(iat.key("path"), format!("conflicting duplicate paths: {path:?} is also written by {first}; give each item its own path"));
                        }
                    }
                    if src.service_account_token.is_some()
                        || src.cluster_trust_bundle.is_some()
                        || src.pod_certificate.is_some()
                    {
                        self.fail(sat, "only configMap, secret and downwardAPI projections are available without a cluster");
                    }
                }
            }
        }
        names
    }

    fn container(&mut self, c: &Container, at: &FieldPath, init: bool, volumes: &HashSet<String>) {
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
                // The API server's rule; outpost has no user namespaces (hostUsers: false).
                Some("Unmasked") => self.fail(
                    sat.key("procMount"),
                    "`hostUsers` must be false to use `Unmasked`, and outpost does not support user namespaces yet: remove procMount",
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

    fn ports(&mut self, ports: &[ContainerPort], at: &FieldPath) {
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

    fn probe(
        &mut self,
        p: &Probe,
        at: &FieldPath,
        success_must_be_one: bool,
        ports: &[ContainerPort],
    ) {
        let handlers =
            [p.exec.is_some(), p.http_get.is_some(), p.tcp_socket.is_some(), p.grpc.is_some()];
        self.exactly_one_handler(&handlers, at, "exec, httpGet, tcpSocket or grpc");
        for (field, value, min) in [
            ("initialDelaySeconds", p.initial_delay_seconds, 0),
            ("timeoutSeconds", p.timeout_seconds, 1),
            ("periodSeconds", p.period_seconds, 1),
            ("successThreshold", p.success_threshold, 1),
            ("failureThreshold", p.failure_threshold, 1),
        ] {
            if let Some(v) = value {
                if v < min {
                    self.fail(at.key(field), format!("must be at least {min}, got {v}"));
                }
            }
        }
        if success_must_be_one && p.success_threshold.is_some_and(|s| s != 1) {
            self.fail(at.key("successThreshold"), "must be 1 for liveness and startup probes");
        }
        if let Some(g) = p.termination_grace_period_seconds {
            if g < 1 {
                self.fail(at.key("terminationGracePeriodSeconds"), "must be at least 1 (seconds)");
            }
        }
        if let Some(h) = &p.http_get {
            self.port_ref(&h.port, &at.key("httpGet").key("port"), ports);
            if let Some(s) = h.scheme.as_deref() {
                self.one_of(at.key("httpGet").key("scheme"), s, &["HTTP", "HTTPS"]);
            }
        }
        if let Some(t) = &p.tcp_socket {
            self.port_ref(&t.port, &at.key("tcpSocket").key("port"), ports);
        }
        if let Some(g) = &p.grpc {
            if !(1..=65535).contains(&g.port) {
                self.fail(
                    at.key("grpc").key("port"),
                    format!("{} is not a valid port: use 1-65535", g.port),
                );
            }
        }
        if let Some(e) = &p.exec {
            if e.command.as_ref().is_none_or(|c| c.is_empty()) {
                self.fail(
                    at.key("exec").key("command"),
                    "required: the command to run, e.g. [\"cat\", \"/tmp/healthy\"]",
                );
            }
        }
    }

    fn handler(&mut self, h: &LifecycleHandler, at: &FieldPath, ports: &[ContainerPort]) {
        let handlers =
            [h.exec.is_some(), h.http_get.is_some(), h.tcp_socket.is_some(), h.sleep.is_some()];
        self.exactly_one_handler(&handlers, at, "exec, httpGet or sleep");
        if let Some(g) = &h.http_get {
            self.port_ref(&g.port, &at.key("httpGet").key("port"), ports);
        }
        if let Some(t) = &h.tcp_socket {
            self.port_ref(&t.port, &at.key("tcpSocket").key("port"), ports);
        }
        if let Some(s) = &h.sleep {
            if s.seconds < 0 {
                self.fail(at.key("sleep").key("seconds"), "must be 0 or more");
            }
        }
        if let Some(e) = &h.exec {
            if e.command.as_ref().is_none_or(|c| c.is_empty()) {
                self.fail(at.key("exec").key("command"), "required: the command to run");
            }
        }
    }

    fn exactly_one_handler(&mut self, set: &[bool], at: &FieldPath, choices: &str) {
        match set.iter().filter(|s| **s).count() {
            0 => self.fail(at.clone(), format!("no handler: set exactly one of {choices}")),
            1 => {}
            _ => self
                .fail(at.clone(), format!("more than one handler: set exactly one of {choices}")),
        }
    }

    /// A probe or hook port: a number in range, or the name of one of the container's ports.
    fn port_ref(&mut self, port: &IntOrString, at: &FieldPath, ports: &[ContainerPort]) {
        match port {
            IntOrString::Int(n) if !(1..=65535).contains(n) => {
                self.fail(at.clone(), format!("{n} is not a valid port: use 1-65535"))
            }
            IntOrString::Int(_) => {}
            IntOrString::String(name) => {
                if !ports.iter().any(|p| p.name.as_deref() == Some(name.as_str())) {
                    self.fail(at.clone(), format!("no port named {name:?} in this container's ports: add `- name: {name}` with its containerPort, or use the number"));
                }
            }
        }
    }

    fn env(&mut self, e: &EnvVar, at: &FieldPath) {
        // Since 1.34 any printable ASCII except '=' is allowed in names.
        if e.name.is_empty()
            || e.name.contains('=')
            || !e.name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            self.fail(
                at.key("name"),
                format!(
                    "invalid environment variable name {:?}: use printable characters without '='",
                    e.name
                ),
            );
        }
        let Some(from) = &e.value_from else { return };
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            self.fail(at.key("valueFrom"), "set either value or valueFrom, not both");
        }
        let vat = at.key("valueFrom");
        let set = [
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.file_key_ref.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            self.fail(
                vat.clone(),
                "set exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
            );
        }
        if let Some(r) = &from.config_map_key_ref {
            self.reference(vat.key("configMapKeyRef").key("name"), &r.name, "ConfigMap");
            self.config_key(vat.key("configMapKeyRef").key("key"), &r.key);
        }
        if let Some(r) = &from.secret_key_ref {
            self.reference(vat.key("secretKeyRef").key("name"), &r.name, "Secret");
            self.config_key(vat.key("secretKeyRef").key("key"), &r.key);
        }
        if let Some(f) = &from.field_ref {
            const FIELDS: &[&str] = &[
                "metadata.name",
                "metadata.namespace",
                "metadata.uid",
                "spec.nodeName",
                "spec.serviceAccountName",
                "status.hostIP",
                "status.hostIPs",
                "status.podIP",
                "status.podIPs",
            ];
            let p = f.field_path.as_str();
            let label_ref = (p.starts_with("metadata.labels['")
                || p.starts_with("metadata.annotations['"))
                && p.ends_with("']");
            if !FIELDS.contains(&p) && !label_ref {
                self.fail(vat.key("fieldRef").key("fieldPath"), format!("unsupported fieldPath {p:?}: use one of {}, metadata.labels['KEY'] or metadata.annotations['KEY']", FIELDS.join(", ")));
            }
        }
        if from.file_key_ref.is_some() {
            self.fail(
                vat.key("fileKeyRef"),
                "fileKeyRef is not supported yet: use configMapKeyRef or secretKeyRef",
            );
        }
    }

    fn env_from(&mut self, e: &EnvFromSource, at: &FieldPath) {
        match (&e.config_map_ref, &e.secret_ref) {
            (Some(r), None) => {
                self.reference(at.key("configMapRef").key("name"), &r.name, "ConfigMap")
            }
            (None, Some(r)) => self.reference(at.key("secretRef").key("name"), &r.name, "Secret"),
            _ => self.fail(at.clone(), "set exactly one of configMapRef or secretRef"),
        }
    }

    fn items(&mut self, items: Option<&[KeyToPath]>, at: &FieldPath) {
        for (i, item) in items.unwrap_or_default().iter().enumerate() {
            let iat = at.index(i);
            self.config_key(iat.key("key"), &item.key);
            self.relative_path(iat.key("path"), &item.path);
            self.mode(item.mode, iat.key("mode"));
        }
    }

    fn resources(&mut self, r: &ResourceRequirements, at: &FieldPath) {
        for (field, list) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, q) in list.iter().flatten() {
                self.resource_name(at.key(field).key(name), name);
                self.quantity(at.key(field).key(name), &q.0);
            }
        }
    }

    fn quantity(&mut self, at: FieldPath, q: &str) {
        match q.parse::<Quantity>() {
            Err(QuantityError::Format(_)) => self.fail(at, format!("{q:?} is not a quantity: write e.g. `100m` or `0.5` for cpu, `64Mi` or `1Gi` for memory")),
            Err(QuantityError::Overflow(_)) => self.fail(at, format!("{q:?}: too large: a quantity holds at most 9223372036854775807 (2^63-1) units")),
            Ok(v) if v.is_negative() => self.fail(at, format!("{q:?}: must be greater than or equal to 0")),
            Ok(_) => {}
        }
    }

    /// The API's container resource names: a standard one, or an extended resource named with
    /// a domain outside kubernetes.io.
    fn resource_name(&mut self, at: FieldPath, name: &str) {
        let standard = matches!(name, "cpu" | "memory" | "ephemeral-storage")
            || name.strip_prefix("hugepages-").is_some_and(is_quantity);
        let extended = is_qualified_name(name)
            && name.contains('/')
            && !name.contains("kubernetes.io/")
            && !name.starts_with("requests.");
        if !standard && !extended {
            self.fail(at, format!("invalid resource name {name:?}: must be a standard resource for containers (cpu, memory, ephemeral-storage, hugepages-<size>) or fully qualified (an extended resource such as example.com/device)"));
        }
    }

    /// A user or group id, as the API bounds them.
    fn id(&mut self, at: FieldPath, id: Option<i64>) {
        if let Some(id) = id {
            if !(0..=i64::from(i32::MAX)).contains(&id) {
                self.fail(at, format!("{id}: must be between 0 and 2147483647, inclusive"));
            }
        }
    }

    fn seccomp(&mut self, p: &SeccompProfile, at: &FieldPath) {
        self.one_of(at.key("type"), &p.type_, &["RuntimeDefault", "Unconfined", "Localhost"]);
        match (p.type_.as_str(), p.localhost_profile.as_deref()) {
            ("Localhost", None | Some("")) => self.fail(
                at.key("localhostProfile"),
                "must be set when seccomp type is Localhost: the profile's path, relative to the kubelet's seccomp directory",
            ),
            ("Localhost", Some(path)) => self.descending_path(at.key("localhostProfile"), path),
            (_, Some(_)) => self.fail(
                at.key("localhostProfile"),
                "can only be set when seccomp type is Localhost: remove it or set `type: Localhost`",
            ),
            (_, None) => {}
        }
    }

    /// The fields pod and container security contexts share. Those outpost cannot apply are
    /// refused, never silently ignored (the kubelet too rejects an AppArmor pod on a host
    /// without AppArmor).
    fn shared_security(
        &mut self,
        at: &FieldPath,
        seccomp: Option<&SeccompProfile>,
        se_linux: bool,
        app_armor: Option<&str>,
        windows: bool,
    ) {
        if let Some(p) = seccomp {
            self.seccomp(p, &at.key("seccompProfile"));
        }
        if se_linux {
            self.fail(
                at.key("seLinuxOptions"),
                "outpost does not apply SELinux labels: remove seLinuxOptions",
            );
        }
        if let Some(t) = app_armor.filter(|t| *t != "Unconfined") {
            self.fail(
                at.key("appArmorProfile").key("type"),
                format!("AppArmor profile {t:?} cannot be enforced: outpost does not apply AppArmor profiles; remove appArmorProfile or use `type: Unconfined`"),
            );
        }
        if windows {
            self.fail(
                at.key("windowsOptions"),
                "outpost runs Linux pods only: remove windowsOptions",
            );
        }
    }

    fn capability(&mut self, at: FieldPath, name: &str) {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if bare != "ALL" && !LINUX_CAPABILITIES.contains(&bare) {
            self.fail(at, format!("unknown capability {name:?}: use ALL or a Linux capability name with or without CAP_ ({})", LINUX_CAPABILITIES.join(", ")));
        }
    }

    fn dns_config(&mut self, spec: &PodSpec, at: &FieldPath) {
        let Some(d) = &spec.dns_config else { return };
        let dat = at.key("dnsConfig");
        let nameservers = d.nameservers.as_deref().unwrap_or_default();
        if nameservers.len() > 3 {
            self.fail(
                dat.key("nameservers"),
                format!("must not have more than 3 nameservers, found {}", nameservers.len()),
            );
        }
        for (i, ns) in nameservers.iter().enumerate() {
            self.ip(dat.key("nameservers").index(i), ns);
        }
        let searches = d.searches.as_deref().unwrap_or_default();
        if searches.len() > 32 {
            self.fail(
                dat.key("searches"),
                format!("must not have more than 32 search paths, found {}", searches.len()),
            );
        }
        for (i, s) in searches.iter().enumerate() {
            // A trailing dot (fully qualified) is allowed.
            let name = s.strip_suffix('.').unwrap_or(s);
            self.dns_subdomain(dat.key("searches").index(i), name);
        }
    }

    fn ip(&mut self, at: FieldPath, ip: &str) {
        if ip.parse::<std::net::IpAddr>().is_err() {
            self.fail(
                at,
                format!("{ip:?} must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
            );
        }
    }

    fn config_map(&mut self, cm: &ConfigMap, at: &FieldPath) {
        self.metadata(&cm.metadata, at);
        for k in cm.data.iter().flat_map(BTreeMap::keys) {
            self.config_key(at.key("data").key(k), k);
        }
        for k in cm.binary_data.iter().flat_map(BTreeMap::keys) {
            self.config_key(at.key("binaryData").key(k), k);
            if cm.data.as_ref().is_some_and(|d| d.contains_key(k)) {
                self.fail(
                    at.key("binaryData").key(k),
                    format!(
                        "key {k:?} is also in data: a key can be in data or binaryData, not both"
                    ),
                );
            }
        }
    }

    fn secret(&mut self, s: &Secret, at: &FieldPath) {
        self.metadata(&s.metadata, at);
        for k in s.data.iter().flat_map(BTreeMap::keys) {
            self.config_key(at.key("data").key(k), k);
        }
        for k in s.string_data.iter().flat_map(BTreeMap::keys) {
            self.config_key(at.key("stringData").key(k), k);
        }
    }

    /// The name of a referenced ConfigMap or Secret.
    fn reference(&mut self, at: FieldPath, name: &str, kind: &str) {
        if name.is_empty() {
            self.fail(at, format!("required: the name of the {kind} to use"));
        } else {
            self.dns_subdomain(at, name);
        }
    }

    fn config_key(&mut self, at: FieldPath, key: &str) {
        let ok = !key.is_empty()
            && key.len() <= 253
            && key != "."
            && key != ".."
            && !key.starts_with("..")
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        if !ok {
            self.fail(at, format!("invalid key {key:?}: use letters, digits, '-', '_' and '.'"));
        }
    }

    /// A file a volume writes (items of configMap, secret, downwardAPI, projected).
    fn relative_path(&mut self, at: FieldPath, path: &str) {
        if path.is_empty() {
            self.fail(at, "required: a relative file path, e.g. `config.yaml`");
        } else if !path.starts_with('/')
            && !path.split('/').any(|p| p == "..")
            && path.starts_with("..")
        {
            // `..data` and such are the kubelet's own (atomic writer).
            self.fail(at, format!("{path:?} must not start with '..': rename the file"));
        } else {
            self.descending_path(at, path);
        }
    }

    /// A path that stays below the directory it is relative to.
    fn descending_path(&mut self, at: FieldPath, path: &str) {
        if path.starts_with('/') {
            self.fail(at, format!("{path:?} must be a relative path: remove the leading '/'"));
        } else if path.split('/').any(|p| p == "..") {
            self.fail(
                at,
                format!("{path:?} must not contain '..': name a path below the directory"),
            );
        }
    }

    fn mode(&mut self, mode: Option<i32>, at: FieldPath) {
        if let Some(m) = mode {
            if !(0..=0o777).contains(&m) {
                self.fail(at, format!("{m} is not a file mode: use a value between 0 and 0777 (octal) / 511 (decimal)"));
            }
        }
    }

    fn one_of(&mut self, at: FieldPath, value: &str, allowed: &[&str]) {
        if !allowed.contains(&value) {
            let list =
                allowed.iter().filter(|a| !a.is_empty()).copied().collect::<Vec<_>>().join(", ");
            self.fail(at, format!("unsupported value {value:?}: use one of {list}"));
        }
    }

    fn dns_label(&mut self, at: FieldPath, s: &str) {
        if !is_dns_label(s) {
            self.fail(at, format!("invalid name {s:?}: must be a lowercase RFC 1123 label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit), e.g. \"my-app\""));
        }
    }

    fn dns_subdomain(&mut self, at: FieldPath, s: &str) {
        if s.len() > 253 || !s.split('.').all(is_dns_label) {
            self.fail(at, format!("invalid name {s:?}: must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit), e.g. \"my-app\""));
        }
    }

    /// IANA service name, as Kubernetes requires for port names.
    fn port_name(&mut self, at: FieldPath, s: &str) {
        let ok = !s.is_empty()
            && s.len() <= 15
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && s.chars().any(|c| c.is_ascii_lowercase())
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--");
        if !ok {
            self.fail(at, format!("invalid port name {s:?}: at most 15 lowercase letters, digits and single '-', with at least one letter, e.g. \"http\""));
        }
    }
}

/// Linux's capability names without `CAP_` (also what `ALL` and `privileged` grant).
pub const LINUX_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The API's sysctl name: `^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`,
/// at most 253 characters.
fn is_sysctl_name(s: &str) -> bool {
    let segment = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
    };
    s.len() <= 253 && s.split(['.', '/']).all(segment)
}

/// The API's qualified name: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// letters, digits, '-', '_' or '.', starting and ending with a letter or digit.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let b = name.as_bytes();
    let name_ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns_label));
    name_ok && prefix_ok
}

pub(super) fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Kubernetes quantity syntax, within the range a quantity holds.
pub(super) fn is_quantity(s: &str) -> bool {
    s.parse::<Quantity>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("a-1"));
        assert!(!is_dns_label("A"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
