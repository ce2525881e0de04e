//! Probes and lifecycle handlers (exec, httpGet, tcpSocket, grpc, sleep).

use k8s_openapi::api::core::v1::{ContainerPort, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Checker;
use crate::manifest::locate::FieldPath;

impl Checker {
    pub(super) fn probe(
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

    pub(super) fn handler(
        &mut self,
        h: &LifecycleHandler,
        at: &FieldPath,
        ports: &[ContainerPort],
    ) {
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

    pub(super) fn exactly_one_handler(&mut self, set: &[bool], at: &FieldPath, choices: &str) {
        match set.iter().filter(|s| **s).count() {
            0 => self.fail(at.clone(), format!("no handler: set exactly one of {choices}")),
            1 => {}
            _ => self
                .fail(at.clone(), format!("more than one handler: set exactly one of {choices}")),
        }
    }

    /// A probe or hook port: a number in range, or the name of one of the container's ports.
    pub(super) fn port_ref(&mut self, port: &IntOrString, at: &FieldPath, ports: &[ContainerPort]) {
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
}
