//! `runtime::spec`: command/args against the image, `$(VAR)` expansion, env sources.

use crate::support::*;
use outpost::runtime::spec::{expand, SpecWarning};
use serde_json::{json, Value};

/// (pod command, pod args, image Entrypoint, image Cmd) → argv, as containerd's WithProcessArgs.
fn check_args(container: Value, image_config: Value, expected: &[&str]) {
    let spec = Case::new(pod_with(container)).image(image_config).build().unwrap();
    assert_eq!(args(&spec), expected);
}

#[test]
fn command_and_args_follow_the_four_kubernetes_rules() {
    let img = json!({"Entrypoint": ["/entry"], "Cmd": ["cmd-arg"]});
    check_args(json!({}), img.clone(), &["/entry", "cmd-arg"]);
    check_args(json!({"command": ["/bin/true"]}), img.clone(), &["/bin/true"]);
    check_args(json!({"args": ["a", "b"]}), img.clone(), &["/entry", "a", "b"]);
    check_args(json!({"command": ["/bin/echo"], "args": ["x"]}), img, &["/bin/echo", "x"]);
}

#[test]
fn image_without_entrypoint_runs_cmd_and_empty_string_entrypoint_counts_as_none() {
    check_args(json!({}), json!({"Cmd": ["/bin/sh"]}), &["/bin/sh"]);
    check_args(json!({}), json!({"Entrypoint": [""], "Cmd": ["/bin/sh"]}), &["/bin/sh"]);
    check_args(json!({"args": ["/bin/ls"]}), json!({"Entrypoint": [""]}), &["/bin/ls"]);
}

#[test]
fn nothing_to_run_is_create_container_error() {
    let err = Case::new(pod_with(json!({}))).image(json!({})).build().unwrap_err();
    assert_eq!(err.to_string(), "no command specified");
    assert_eq!(err.reason(), "CreateContainerError");
}

#[test]
fn command_and_args_are_expanded_with_container_env_only() {
    let c = json!({
        "command": ["/bin/$(CMD)"],
        "args": ["$(GREETING)", "$$(GREETING)", "$(PATH)", "$(NOPE)"],
        "env": [{"name": "CMD", "value": "echo"}, {"name": "GREETING", "value": "hi"}]
    });
    // PATH comes from the image, which the kubelet does not know: it stays literal.
    let img = json!({"Env": ["PATH=/img/bin"]});
    check_args(c, img, &["/bin/echo", "hi", "$(GREETING)", "$(PATH)", "$(NOPE)"]);
}

/// The kubelet's expansion test table (third_party/forked/golang/expansion/expand_test.go).
#[test]
fn expansion_matches_the_kubelet_table() {
    let vars = [
        ("VAR_A", "A"),
        ("VAR_B", "B"),
        ("VAR_C", "C"),
        ("VAR_REF", "$(VAR_A)"),
        ("VAR_EMPTY", ""),
    ];
    let map = |n: &str| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string());
    let cases = [
        ("$(VAR_A)", "A"),
        ("___$(VAR_B)___", "___B___"),
        ("$(VAR_A)-$(VAR_A)", "A-A"),
        ("$(VAR_A)-1", "A-1"),
        ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
        ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
        ("$$(VAR_A)$$(VAR_B)", "$(VAR_A)$(VAR_B)"),
        ("f000-$$VAR_A", "f000-$VAR_A"),
        ("foo\\$(VAR_C)bar", "foo\\Cbar"),
        ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
        ("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))"),
        ("$(VAR_A$(VAR_B)", "$(VAR_A$(VAR_B)"),
        ("$(VAR_REF)", "$(VAR_A)"),
        ("foo$(VAR_EMPTY)bar", "foobar"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),
        ("$(VAR_A", "$(VAR_A"),
        ("$(", "$("),
        ("$()", "$()"),
        ("$", "$"),
        ("$$", "$"),
        ("$$$", "$$"),
        ("$VAR_A", "$VAR_A"),
        ("$(VAR_A)$", "A$"),
        ("$(VAR_A)$$", "A$"),
        ("€$(VAR_A)$€", "€A$€"),
        ("", ""),
    ];
    for (input, expected) in cases {
        assert_eq!(expand(input, map), expected, "expanding {input:?}");
    }
}

#[test]
fn env_order_image_then_container_with_replacement_in_place() {
    let c = json!({"env": [
        {"name": "B", "value": "from-pod"},
        {"name": "C", "value": "$(B)-$(A)-$(D)"},
        {"name": "D", "value": "late"}
    ]});
    let spec = Case::new(pod_with(c))
        .image(json!({"Cmd": ["x"], "Env": ["A=1", "B=img", "PATH=/bin"]}))
        .build()
        .unwrap();
    // A is the image's (unknown to the kubelet's expansion), D is defined after C.
    assert_eq!(
        env(&spec),
        ["PATH=/bin", "HOSTNAME=web", "A=1", "B=from-pod", "C=from-pod-$(A)-$(D)", "D=late"]
    );
}

#[test]
fn default_path_when_the_image_has_none() {
    let spec = Case::new(pod_with(json!({}))).image(json!({"Cmd": ["x"]})).build().unwrap();
    assert_eq!(
        env(&spec),
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=web"]
    );
}

#[test]
fn hostname_env_is_spec_hostname_or_node_name_under_host_network() {
    let mut p = pod_with(json!({}));
    p.spec.as_mut().unwrap().hostname = Some("custom".into());
    assert_eq!(env_var(&Case::new(p).build().unwrap(), "HOSTNAME").as_deref(), Some("custom"));
    let mut p = pod_with(json!({}));
    p.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(env_var(&Case::new(p).build().unwrap(), "HOSTNAME").as_deref(), Some("edge-1"));
}

fn with_sources(container: Value) -> Case {
    let mut case = Case::new(pod_with(container));
    let (k, v) = config_map("cfg", &[("mode", "fast"), ("1bad", "x"), ("level", "3")]);
    case.desired.config_maps.insert(k, v);
    let (k, v) = secret("creds", &[("password", "s3cret"), ("user", "admin")]);
    case.desired.secrets.insert(k, v);
    case
}

fn env_error(container: Value) -> (String, &'static str) {
    let err = with_sources(container).build().unwrap_err();
    (err.to_string(), err.reason())
}

#[test]
fn value_from_config_map_and_secret() {
    let spec = with_sources(json!({"env": [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
        {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nokey", "optional": true}}},
        {"name": "Z", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}}
    ]}))
    .build()
    .unwrap();
    assert_eq!(env_var(&spec, "MODE").as_deref(), Some("fast"));
    assert_eq!(env_var(&spec, "PW").as_deref(), Some("s3cret"));
    assert_eq!(env_var(&spec, "X"), None);
    assert_eq!(env_var(&spec, "Y"), None);
    assert_eq!(env_var(&spec, "Z"), None);
}

#[test]
fn missing_non_optional_refs_have_the_kubelet_messages() {
    let cases = [
        (json!({"configMapKeyRef": {"name": "gone", "key": "k"}}), "configmap \"gone\" not found"),
        (
            json!({"configMapKeyRef": {"name": "cfg", "key": "k"}}),
            "couldn't find key k in ConfigMap default/cfg",
        ),
        (json!({"secretKeyRef": {"name": "gone", "key": "k"}}), "secret \"gone\" not found"),
        (
            json!({"secretKeyRef": {"name": "creds", "key": "k"}}),
            "couldn't find key k in Secret default/creds",
        ),
    ];
    for (value_from, message) in cases {
        let got = env_error(json!({"env": [{"name": "V", "valueFrom": value_from}]}));
        assert_eq!(got, (message.to_string(), "CreateContainerConfigError"));
    }
    let got = env_error(json!({"envFrom": [{"configMapRef": {"name": "gone"}}]}));
    assert_eq!(got.0, "configmap \"gone\" not found");
    let got = env_error(json!({"envFrom": [{"secretRef": {"name": "gone"}}]}));
    assert_eq!(got.0, "secret \"gone\" not found");
}

#[test]
fn env_from_with_prefix_skips_invalid_names_and_env_overrides_it() {
    let spec = with_sources(json!({
        "envFrom": [
            {"configMapRef": {"name": "cfg"}},
            {"prefix": "S_", "secretRef": {"name": "creds"}},
            {"configMapRef": {"name": "gone", "optional": true}}
        ],
        "env": [{"name": "level", "value": "9 ($(mode))"}]
    }))
    .build()
    .unwrap();
    let kube: Vec<String> = env(&spec).into_iter().skip(2).collect();
    assert_eq!(kube, ["level=9 (fast)", "mode=fast", "S_password=s3cret", "S_user=admin"]);
    assert_eq!(
        spec.warnings,
        [SpecWarning::InvalidEnvFromKeys {
            kind: "configMap",
            namespace: "default".into(),
            name: "cfg".into(),
            keys: vec!["1bad".into()],
        }]
    );
    assert_eq!(
        spec.warnings[0].to_string(),
        "Keys [1bad] from the EnvFrom configMap default/cfg were skipped since they are considered invalid environment variable names."
    );
}

#[test]
fn env_var_names_follow_is_env_var_name() {
    use outpost::runtime::spec::is_env_var_name;
    for ok in ["A", "my.env-name", "MY_ENV.NAME", "MyEnvName1", "_x", "-x", ".x"] {
        assert!(is_env_var_name(ok), "{ok} should be valid");
    }
    for bad in ["", "1bad", "a b", "a=b", ".", "..", "..x", "é"] {
        assert!(!is_env_var_name(bad), "{bad} should be invalid");
    }
}

fn field(path: &str) -> Option<String> {
    let c = json!({"env": [{"name": "V", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}]});
    let mut p = pod_with(c);
    p.spec.as_mut().unwrap().service_account_name = Some("robot".into());
    let mut case = Case::new(p);
    case.pod_ips = vec!["10.88.0.5".into(), "fd00:88::5".into()];
    env_var(&case.build().unwrap(), "V")
}

#[test]
fn field_refs_resolve_like_the_kubelet() {
    let cases = [
        ("metadata.name", "web"),
        ("metadata.namespace", "default"),
        ("metadata.uid", "0f1e2d3c"),
        ("metadata.labels['tier']", "front"),
        ("metadata.labels['none']", ""),
        ("metadata.annotations['note']", "say \"hi\"\n"),
        ("metadata.labels", "app=\"web\"\ntier=\"front\""),
        ("metadata.annotations", "note=\"say \\\"hi\\\"\\n\""),
        ("spec.nodeName", "edge-1"),
        ("spec.serviceAccountName", "robot"),
        ("status.podIP", "10.88.0.5"),
        ("status.podIPs", "10.88.0.5,fd00:88::5"),
        ("status.hostIP", "192.168.1.10"),
        ("status.hostIPs", "192.168.1.10,fd00::10"),
    ];
    for (path, expected) in cases {
        assert_eq!(field(path).as_deref(), Some(expected), "fieldPath {path}");
    }
}

#[test]
fn unsupported_field_path_is_a_config_error() {
    let c = json!({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": "spec.restartPolicy"}}}]});
    let err = Case::new(pod_with(c)).build().unwrap_err();
    assert_eq!(err.to_string(), "unsupported fieldPath: spec.restartPolicy");
    assert_eq!(err.reason(), "CreateContainerConfigError");
}

fn resource(resources: Value, resource: &str, divisor: Option<&str>) -> String {
    let mut sel = json!({"resource": resource});
    if let Some(d) = divisor {
        sel["divisor"] = json!(d);
    }
    let c = json!({"resources": resources, "env": [{"name": "R", "valueFrom": {"resourceFieldRef": sel}}]});
    env_var(&Case::new(pod_with(c)).build().unwrap(), "R").unwrap()
}

#[test]
fn resource_field_refs_round_up_like_the_kubelet() {
    let r = json!({"limits": {"cpu": "250m", "memory": "1500k"}, "requests": {"cpu": "125m", "memory": "64Mi"}});
    assert_eq!(resource(r.clone(), "limits.cpu", None), "1");
    assert_eq!(resource(r.clone(), "limits.cpu", Some("1m")), "250");
    assert_eq!(resource(r.clone(), "requests.cpu", Some("100m")), "2");
    assert_eq!(resource(r.clone(), "limits.memory", None), "1500000");
    assert_eq!(resource(r.clone(), "limits.memory", Some("1Mi")), "2");
    assert_eq!(resource(r.clone(), "requests.memory", Some("1Mi")), "64");
    assert_eq!(resource(r, "requests.memory", Some("1k")), "67109");
    // No limit: the node's allocatable (4 cpus, 8Gi); no request: 0.
    assert_eq!(resource(json!({}), "limits.cpu", None), "4");
    assert_eq!(resource(json!({}), "limits.memory", Some("1Gi")), "8");
    assert_eq!(resource(json!({}), "requests.cpu", None), "0");
}
