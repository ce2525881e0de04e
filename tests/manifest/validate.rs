//! Table-driven validation tests: each rule with an invalid manifest and the exact error,
//! location included, that a user sees.

use std::path::Path;

use outpost::manifest::{parse_str, Object};

/// Parses `yaml` as `pod.yaml` and returns the rendered errors.
pub(crate) fn errors(yaml: &str) -> Vec<String> {
    match parse_str(Path::new("pod.yaml"), yaml) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `yaml` fails with exactly one error, equal to `expected`.
#[track_caller]
pub(crate) fn check(yaml: &str, expected: &str) {
    assert_eq!(errors(yaml), vec![expected.to_string()], "manifest:\n{yaml}");
}

/// A valid pod with `extra` spliced into the first container (indented 4) and `spec_extra`
/// into the spec (indented 2).
pub(crate) fn pod(container_extra: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox\n{container_extra}{spec_extra}"
    )
}

#[test]
fn a_valid_pod_has_no_errors_and_gets_defaults() {
    let docs = parse_str(Path::new("p.yaml"), &pod("", "")).expect("valid");
    let Object::Pod(p) = &docs[0].object else { panic!("not a pod") };
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    let c = &spec.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"), "untagged image pulls Always");
    assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));
    assert_eq!(docs[0].line, 1);
}

#[test]
fn probe_defaults_are_the_api_servers() {
    let yaml = pod("    livenessProbe:\n      tcpSocket:\n        port: 80\n", "");
    let docs = parse_str(Path::new("p.yaml"), &yaml).unwrap();
    let Object::Pod(p) = &docs[0].object else { panic!() };
    let probe = p.spec.as_ref().unwrap().containers[0].liveness_probe.as_ref().unwrap();
    assert_eq!(
        (
            probe.period_seconds,
            probe.timeout_seconds,
            probe.success_threshold,
            probe.failure_threshold
        ),
        (Some(10), Some(1), Some(1), Some(3))
    );
}

#[test]
fn malformed_yaml_is_located() {
    check(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [web\n",
        "pod.yaml:5:1: invalid YAML: did not find expected ',' or ']'",
    );
}

#[test]
fn unknown_kind_and_api_version() {
    check(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
        "pod.yaml:2:1: kind: unsupported kind \"Deployment\" (apiVersion \"apps/v1\"): outpost reads v1 Pod, ConfigMap and Secret; for a Deployment, put its pod template in a Pod manifest",
    );
    check(
        "apiVersion: v2\nkind: Pod\nmetadata:\n  name: x\n",
        "pod.yaml:1:1: apiVersion: unknown apiVersion \"v2\" for kind Pod: use `apiVersion: v1`",
    );
    check("kind: Pod\n", "pod.yaml:1:1: apiVersion: required: add `apiVersion: v1`");
    check("- a\n- b\n", "pod.yaml:1:1: a manifest document must be a mapping with apiVersion and kind, found a list");
}

#[test]
fn unknown_fields_are_rejected_like_kubectl_strict() {
    let yaml = pod("", "  volumes:\n  - name: data\n    emptuDir: {}\n");
    check(
        &yaml,
        "pod.yaml:11:5: spec.volumes[0].emptuDir: unknown field \"emptuDir\": check its spelling and indentation (outpost rejects fields the Kubernetes API does not define)",
    );
    let yaml = pod("    imagePullPolicy: Always\n    comand: [sh]\n", "");
    check(
        &yaml,
        "pod.yaml:10:5: spec.containers[0].comand: unknown field \"comand\": check its spelling and indentation (outpost rejects fields the Kubernetes API does not define)",
    );
}

#[test]
fn wrong_types_are_located() {
    let yaml = pod("    ports:\n    - containerPort: eighty\n", "");
    check(
        &yaml,
        "pod.yaml:10:7: spec.containers[0].ports[0].containerPort: wrong type: invalid type: string \"eighty\", expected an integer",
    );
}

#[test]
fn names_must_be_dns_1123() {
    check(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Web_1\nspec:\n  containers:\n  - name: app\n    image: busybox\n",
        "pod.yaml:4:3: metadata.name: invalid name \"Web_1\": must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit), e.g. \"my-app\"",
    );
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: App\n    image: busybox\n";
    check(yaml, "pod.yaml:7:5: spec.containers[0].name: invalid name \"App\": must be a lowercase RFC 1123 label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit), e.g. \"my-app\"");
    check(
        "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec:\n  containers:\n  - name: a\n    image: b\n",
        "pod.yaml:3:1: metadata.name: required: give the object a name, e.g. `name: my-app`",
    );
}

#[test]
fn container_names_are_unique_across_init_and_app_containers() {
    let yaml = pod("", "  initContainers:\n  - name: app\n    image: busybox\n");
    check(
        &yaml,
        "pod.yaml:7:5: spec.containers[0].name: duplicate container name \"app\" (also at spec.initContainers[0]): container names must be unique across initContainers and containers",
    );
}

#[test]
fn image_is_required() {
    check(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n",
        "pod.yaml:7:5: spec.containers[0].image: required: set the container image, e.g. `image: busybox`",
    );
}

#[test]
fn a_pod_needs_containers() {
    // A missing field is reported where its parent is written.
    check(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  restartPolicy: Never\n",
        "pod.yaml:5:1: spec.containers: required: a Pod needs at least one container",
    );
}

#[test]
fn probes_need_exactly_one_handler() {
    let both = pod("    livenessProbe:\n      exec:\n        command: [\"true\"]\n      tcpSocket:\n        port: 80\n", "");
    check(&both, "pod.yaml:9:5: spec.containers[0].livenessProbe: more than one handler: set exactly one of exec, httpGet, tcpSocket or grpc");
    let none = pod("    readinessProbe:\n      periodSeconds: 5\n", "");
    check(&none, "pod.yaml:9:5: spec.containers[0].readinessProbe: no handler: set exactly one of exec, httpGet, tcpSocket or grpc");
}

#[test]
fn probe_thresholds_are_at_least_one() {
    let yaml = pod(
        "    readinessProbe:\n      tcpSocket:\n        port: 80\n      failureThreshold: 0\n",
        "",
    );
    check(&yaml, "pod.yaml:12:7: spec.containers[0].readinessProbe.failureThreshold: must be at least 1, got 0");
    let yaml = pod(
        "    livenessProbe:\n      tcpSocket:\n        port: 80\n      successThreshold: 2\n",
        "",
    );
    check(&yaml, "pod.yaml:12:7: spec.containers[0].livenessProbe.successThreshold: must be 1 for liveness and startup probes");
}

#[test]
fn hooks_need_exactly_one_handler() {
    let yaml = pod("    lifecycle:\n      preStop: {}\n", "");
    check(&yaml, "pod.yaml:10:7: spec.containers[0].lifecycle.preStop: no handler: set exactly one of exec, httpGet or sleep");
}

#[test]
fn restart_policy_values() {
    let yaml = pod("", "  restartPolicy: Sometimes\n");
    check(&yaml, "pod.yaml:9:3: spec.restartPolicy: unsupported value \"Sometimes\": use one of Always, OnFailure, Never");
}

#[test]
fn volume_mounts_name_existing_volumes() {
    let yaml = pod(
        "    volumeMounts:\n    - name: data\n      mountPath: /data\n",
        "  volumes:\n  - name: cache\n    emptyDir: {}\n",
    );
    check(&yaml, "pod.yaml:10:7: spec.containers[0].volumeMounts[0].name: no volume named \"data\" in spec.volumes (declared volumes: cache)");
}

#[test]
fn ports_in_range_and_unique() {
    let yaml = pod("    ports:\n    - containerPort: 70000\n", "");
    check(&yaml, "pod.yaml:10:7: spec.containers[0].ports[0].containerPort: 70000 is not a valid port: use 1-65535");
    let yaml = pod("    ports:\n    - containerPort: 80\n      name: http\n    - containerPort: 80\n      name: http\n", "");
    assert_eq!(
        errors(&yaml),
        vec![
            "pod.yaml:13:7: spec.containers[0].ports[1].name: duplicate port name \"http\" (also at spec.containers[0].ports[0])",
            "pod.yaml:12:7: spec.containers[0].ports[1].containerPort: duplicate port 80/TCP (also at spec.containers[0].ports[0])",
        ]
    );
}

#[test]
fn probe_named_port_must_exist() {
    let yaml = pod("    livenessProbe:\n      httpGet:\n        port: web\n", "");
    check(&yaml, "pod.yaml:11:9: spec.containers[0].livenessProbe.httpGet.port: no port named \"web\" in this container's ports: add `- name: web` with its containerPort, or use the number");
}

#[test]
fn malformed_config_references() {
    let yaml = pod("    env:\n    - name: A\n      valueFrom:\n        configMapKeyRef:\n          name: Bad_Name\n          key: k\n", "");
    check(&yaml, "pod.yaml:13:11: spec.containers[0].env[0].valueFrom.configMapKeyRef.name: invalid name \"Bad_Name\": must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit), e.g. \"my-app\"");
    let yaml = pod("    envFrom:\n    - prefix: X_\n", "");
    check(&yaml, "pod.yaml:10:7: spec.containers[0].envFrom[0]: set exactly one of configMapRef or secretRef");
    let yaml = pod("", "  volumes:\n  - name: cfg\n    configMap:\n      name: app\n      items:\n      - key: a\n        path: ../etc/passwd\n");
    check(&yaml, "pod.yaml:15:9: spec.volumes[0].configMap.items[0].path: \"../etc/passwd\" must not contain '..': name a path below the directory");
}

#[test]
fn unsupported_volume_types_name_the_alternatives() {
    let yaml =
        pod("", "  volumes:\n  - name: data\n    persistentVolumeClaim:\n      claimName: x\n");
    check(&yaml, "pod.yaml:11:5: spec.volumes[0].persistentVolumeClaim: volume type \"persistentVolumeClaim\" is not available on outpost: use one of emptyDir, hostPath, configMap, secret, downwardAPI, projected");
}

#[test]
fn malformed_quantities() {
    let yaml = pod("    resources:\n      limits:\n        memory: 64MB\n", "");
    check(&yaml, "pod.yaml:11:9: spec.containers[0].resources.limits.memory: \"64MB\" is not a quantity: write e.g. `100m` or `0.5` for cpu, `64Mi` or `1Gi` for memory");
}

#[test]
fn octal_modes_are_read_as_kubectl_reads_them() {
    let yaml = pod(
        "",
        "  volumes:\n  - name: s\n    secret:\n      secretName: s\n      defaultMode: 0400\n",
    );
    let docs = parse_str(Path::new("p.yaml"), &yaml).unwrap();
    let Object::Pod(p) = &docs[0].object else { panic!() };
    let mode =
        p.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0].secret.as_ref().unwrap().default_mode;
    assert_eq!(mode, Some(0o400));
}

#[test]
fn errors_in_later_documents_point_at_their_lines() {
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  \"a b\": x\n";
    check(
        yaml,
        "pod.yaml:11:3: data[\"a b\"]: invalid key \"a b\": use letters, digits, '-', '_' and '.'",
    );
}

#[test]
fn a_tab_after_a_colon_does_not_lose_positions() {
    // libyaml accepts the tab; the locator's parser did not, which put errors at 0:0.
    let yaml = "apiVersion:\tv1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image:\tbusybox\n    i command: [sh]\n";
    check(
        yaml,
        "pod.yaml:9:5: spec.containers[0][\"i command\"]: unknown field \"i command\": check its spelling and indentation (outpost rejects fields the Kubernetes API does not define)",
    );
}

#[test]
fn secrets_fold_string_data_into_data() {
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  token: abc\n";
    let docs = parse_str(Path::new("s.yaml"), yaml).unwrap();
    let Object::Secret(s) = &docs[0].object else { panic!() };
    assert_eq!(s.data.as_ref().unwrap()["token"].0, b"abc");
    assert!(s.string_data.is_none());
}

#[test]
fn uid_is_stable_for_same_content_and_changes_with_it() {
    let uid = |yaml: &str| {
        let docs = parse_str(Path::new("p.yaml"), yaml).unwrap();
        let Object::Pod(p) = &docs[0].object else { panic!() };
        p.metadata.uid.clone().unwrap()
    };
    let a = uid(&pod("", ""));
    assert_eq!(a, uid(&pod("", "")));
    assert_eq!(a.len(), 36);
    assert_ne!(a, uid(&pod("    command: [sleep, \"1\"]\n", "")));
    // Formatting and comments are not content.
    assert_eq!(a, uid(&format!("# comment\n{}", pod("", "").replace("name: web", "name: 'web'"))));
}

#[test]
fn every_static_manifest_validates() {
    let report = outpost::cli::validate(&[std::path::PathBuf::from("static-manifests")]);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert!(report.pods >= 8, "expected the example pods, found {}", report.pods);
    assert_eq!((report.config_maps, report.secrets), (1, 1));
}

#[test]
fn duplicates_across_files_keep_the_first_and_name_both() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), pod("", "")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), format!("# again\n{}", pod("", ""))).unwrap();
    let report = outpost::cli::validate(&[dir.path().to_path_buf()]);
    assert_eq!(report.pods, 1);
    let b = dir.path().join("b.yaml");
    let a = dir.path().join("a.yaml");
    assert_eq!(
        report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![format!(
            "{}:2:1: metadata.name: Pod default/web is already defined in {}:1, which wins: rename or remove one of them",
            b.display(),
            a.display()
        )]
    );
}

#[test]
fn secret_values_never_appear_in_errors() {
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  pin: 987654\n";
    check(yaml, "pod.yaml:6:3: stringData.pin: invalid value (not shown: it is secret): `stringData` values must be strings (quote them)");
    let yaml = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  token: \"not base64 s3cr3t!\"\n";
    let e = errors(yaml);
    assert_eq!(e.len(), 1);
    assert!(!e[0].contains("s3cr3t"), "{e:?}");
    assert!(e[0].starts_with("pod.yaml:6:3: data.token: invalid value (not shown"), "{e:?}");
}

/// Rules the API server enforces that are easy to miss: the manifest fragment and the exact
/// error.
#[test]
fn api_server_rules_outpost_used_to_miss() {
    let cases: &[(&str, &str, &str)] = &[
        // Negative quantities, in every place a quantity is written.
        ("    resources:\n      requests:\n        ephemeral-storage: -1Gi\n", "", "pod.yaml:11:9: spec.containers[0].resources.requests[\"ephemeral-storage\"]: \"-1Gi\": must be greater than or equal to 0"),
        ("    resources:\n      limits:\n        cpu: \"-100m\"\n", "", "pod.yaml:11:9: spec.containers[0].resources.limits.cpu: \"-100m\": must be greater than or equal to 0"),
        ("", "  overhead:\n    memory: -64Mi\n", "pod.yaml:10:5: spec.overhead.memory: \"-64Mi\": must be greater than or equal to 0"),
        // Past what a quantity holds: no other module could compute it.
        ("    resources:\n      limits:\n        memory: \"1e30\"\n", "", "pod.yaml:11:9: spec.containers[0].resources.limits.memory: \"1e30\": too large: a quantity holds at most 9223372036854775807 (2^63-1) units"),
        // Resource names.
        ("    resources:\n      limits:\n        ../x: 1\n", "", "pod.yaml:11:9: spec.containers[0].resources.limits[\"../x\"]: invalid resource name \"../x\": must be a standard resource for containers (cpu, memory, ephemeral-storage, hugepages-<size>) or fully qualified (an extended resource such as example.com/device)"),
        ("", "  overhead:\n    gpu: 1\n", "pod.yaml:10:5: spec.overhead.gpu: invalid resource name \"gpu\": must be a standard resource for containers (cpu, memory, ephemeral-storage, hugepages-<size>) or fully qualified (an extended resource such as example.com/device)"),
        // Extended resources: whole devices, requests equal to limits.
        ("    resources:\n      limits:\n        example.com/dev: 500m\n", "", "pod.yaml:11:9: spec.containers[0].resources.limits[\"example.com/dev\"]: \"500m\": must be an integer: extended resources are whole devices"),
        ("    resources:\n      requests:\n        example.com/dev: 1\n", "", "pod.yaml:9:5: spec.containers[0].resources.limits[\"example.com/dev\"]: Limit must be set for non overcommitable resources: set limits[\"example.com/dev\"] to the request (1)"),
        ("    resources:\n      requests:\n        example.com/dev: 1\n      limits:\n        example.com/dev: 2\n", "", "pod.yaml:11:9: spec.containers[0].resources.requests[\"example.com/dev\"]: \"1\": must be equal to example.com/dev limit of 2"),
        // activeDeadlineSeconds.
        ("", "  activeDeadlineSeconds: 2147483648\n", "pod.yaml:9:3: spec.activeDeadlineSeconds: 2147483648: must be between 1 and 2147483647, inclusive (seconds)"),
        ("", "  activeDeadlineSeconds: 0\n", "pod.yaml:9:3: spec.activeDeadlineSeconds: 0: must be between 1 and 2147483647, inclusive (seconds)"),
        // DNS and host aliases.
        ("", "  dnsConfig:\n    nameservers: [\"8.8.8.8; rm\"]\n", "pod.yaml:10:19: spec.dnsConfig.nameservers[0]: \"8.8.8.8; rm\" must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
        ("", "  dnsConfig:\n    searches: [\"ok.local\\nnameserver 6.6.6.6\"]\n", "pod.yaml:10:16: spec.dnsConfig.searches[0]: invalid name \"ok.local\\nnameserver 6.6.6.6\": must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit), e.g. \"my-app\""),
        ("", "  hostAliases:\n  - ip: db\n    hostnames: [db.local]\n", "pod.yaml:10:5: spec.hostAliases[0].ip: \"db\" must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
        ("", "  hostAliases:\n  - ip: 10.0.0.1\n    hostnames: [\"a\\n10.0.0.2 b\"]\n", "pod.yaml:11:17: spec.hostAliases[0].hostnames[0]: invalid name \"a\\n10.0.0.2 b\": must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit), e.g. \"my-app\""),
        // nodeName and os.
        ("", "  nodeName: ../x\n", "pod.yaml:9:3: spec.nodeName: invalid name \"../x\": must be a lowercase RFC 1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit), e.g. \"my-app\""),
        ("", "  os:\n    name: windows\n", "pod.yaml:10:5: spec.os.name: unsupported value \"windows\": outpost runs Linux containers only; set `linux` or remove `os`"),
        // Volume item paths.
        ("", "  volumes:\n  - name: v\n    projected:\n      sources:\n      - configMap: {name: a, items: [{key: k, path: f}]}\n      - secret: {name: b, items: [{key: k, path: f}]}\n", "pod.yaml:14:44: spec.volumes[0].projected.sources[1].secret.items[0].path: conflicting duplicate paths: \"f\" is also written by spec.volumes[0].projected.sources[0].configMap.items[0]; give each item its own path"),
        ("", "  volumes:\n  - name: v\n    configMap:\n      name: a\n      items: [{key: k, path: a/../../x}]\n", "pod.yaml:13:24: spec.volumes[0].configMap.items[0].path: \"a/../../x\" must not contain '..': name a path below the directory"),
        ("", "  volumes:\n  - name: v\n    secret:\n      secretName: a\n      items: [{key: k, path: ..data}]\n", "pod.yaml:13:24: spec.volumes[0].secret.items[0].path: \"..data\" must not start with '..': rename the file"),
        ("", "  volumes:\n  - name: v\n    downwardAPI:\n      items: [{path: /etc/x, fieldRef: {fieldPath: metadata.name}}]\n", "pod.yaml:12:16: spec.volumes[0].downwardAPI.items[0].path: \"/etc/x\" must be a relative path: remove the leading '/'"),
        ("", "  volumes:\n  - name: v\n    projected:\n      sources:\n      - downwardAPI: {items: [{path: ../x, fieldRef: {fieldPath: metadata.name}}]}\n", "pod.yaml:13:32: spec.volumes[0].projected.sources[0].downwardAPI.items[0].path: \"../x\" must not contain '..': name a path below the directory"),
        // Capabilities.
        ("    securityContext:\n      capabilities:\n        add: [NET_ADMIN, CAP_SYS_TIME, net_raw, ALL]\n        drop: [\"../x\"]\n", "", "pod.yaml:12:16: spec.containers[0].securityContext.capabilities.drop[0]: unknown capability \"../x\": use ALL or a Linux capability name with or without CAP_ (CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, LINUX_IMMUTABLE, NET_BIND_SERVICE, NET_BROADCAST, NET_ADMIN, NET_RAW, IPC_LOCK, IPC_OWNER, SYS_MODULE, SYS_RAWIO, SYS_CHROOT, SYS_PTRACE, SYS_PACCT, SYS_ADMIN, SYS_BOOT, SYS_NICE, SYS_RESOURCE, SYS_TIME, SYS_TTY_CONFIG, MKNOD, LEASE, AUDIT_WRITE, AUDIT_CONTROL, SETFCAP, MAC_OVERRIDE, MAC_ADMIN, SYSLOG, WAKE_ALARM, BLOCK_SUSPEND, AUDIT_READ, PERFMON, BPF, CHECKPOINT_RESTORE)"),
        // User and group ids.
        ("    securityContext:\n      runAsUser: -1\n", "", "pod.yaml:10:7: spec.containers[0].securityContext.runAsUser: -1: must be between 0 and 2147483647, inclusive"),
        ("", "  securityContext:\n    fsGroup: -5\n", "pod.yaml:10:5: spec.securityContext.fsGroup: -5: must be between 0 and 2147483647, inclusive"),
        ("", "  securityContext:\n    supplementalGroups: [1, -2]\n", "pod.yaml:10:29: spec.securityContext.supplementalGroups[1]: -2: must be between 0 and 2147483647, inclusive"),
        ("", "  securityContext:\n    runAsGroup: 2147483648\n", "pod.yaml:10:5: spec.securityContext.runAsGroup: 2147483648: must be between 0 and 2147483647, inclusive"),
        // Seccomp.
        ("    securityContext:\n      seccompProfile:\n        type: Localhost\n        localhostProfile: ../../../../etc/shadow\n", "", "pod.yaml:12:9: spec.containers[0].securityContext.seccompProfile.localhostProfile: \"../../../../etc/shadow\" must not contain '..': name a path below the directory"),
        ("", "  securityContext:\n    seccompProfile:\n      type: Localhost\n      localhostProfile: /etc/x.json\n", "pod.yaml:12:7: spec.securityContext.seccompProfile.localhostProfile: \"/etc/x.json\" must be a relative path: remove the leading '/'"),
        ("", "  securityContext:\n    seccompProfile:\n      type: Localhost\n", "pod.yaml:10:5: spec.securityContext.seccompProfile.localhostProfile: must be set when seccomp type is Localhost: the profile's path, relative to the kubelet's seccomp directory"),
        ("", "  securityContext:\n    seccompProfile:\n      type: RuntimeDefault\n      localhostProfile: x.json\n", "pod.yaml:12:7: spec.securityContext.seccompProfile.localhostProfile: can only be set when seccomp type is Localhost: remove it or set `type: Localhost`"),
        ("", "  securityContext:\n    seccompProfile:\n      type: Strict\n", "pod.yaml:11:7: spec.securityContext.seccompProfile.type: unsupported value \"Strict\": use one of RuntimeDefault, Unconfined, Localhost"),
        // Sysctls.
        ("", "  securityContext:\n    sysctls:\n    - {name: ../x, value: \"1\"}\n", "pod.yaml:11:8: spec.securityContext.sysctls[0].name: invalid sysctl name \"../x\": must have at most 253 characters and match regex ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$, e.g. net.ipv4.ip_local_port_range"),
        ("", "  securityContext:\n    sysctls:\n    - {name: net.ipv4.ip_forward, value: \"1\"}\n    - {name: net/ipv4/ip_forward, value: \"0\"}\n", "pod.yaml:12:8: spec.securityContext.sysctls[1].name: duplicate value \"net/ipv4/ip_forward\": set each sysctl once"),
        // Security settings outpost cannot apply: refused, never ignored.
        ("    securityContext:\n      seLinuxOptions: {level: \"s0:c1\"}\n", "", "pod.yaml:10:7: spec.containers[0].securityContext.seLinuxOptions: outpost does not apply SELinux labels: remove seLinuxOptions"),
        ("", "  securityContext:\n    appArmorProfile: {type: RuntimeDefault}\n", "pod.yaml:10:23: spec.securityContext.appArmorProfile.type: AppArmor profile \"RuntimeDefault\" cannot be enforced: outpost does not apply AppArmor profiles; remove appArmorProfile or use `type: Unconfined`"),
        ("    securityContext:\n      windowsOptions: {hostProcess: true}\n", "", "pod.yaml:10:7: spec.containers[0].securityContext.windowsOptions: outpost runs Linux pods only: remove windowsOptions"),
        ("    securityContext:\n      procMount: Unmasked\n", "", "pod.yaml:10:7: spec.containers[0].securityContext.procMount: `hostUsers` must be false to use `Unmasked`: remove procMount, or set hostUsers: false"),
        ("", "  hostUsers: false\n", "pod.yaml:9:3: spec.hostUsers: user namespaces are not supported by outpost yet: remove hostUsers (the pod then runs in the host's user namespace, as with hostUsers: true)"),
    ];
    let mut wrong = Vec::new();
    for (container, spec, expected) in cases {
        let got = errors(&pod(container, spec));
        if got != vec![expected.to_string()] {
            wrong.push(format!("expected {expected}\n     got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The API server's rule: a pod in its own user namespace shares none of the host's other
/// namespaces; each such field is named.
#[test]
fn host_users_false_refuses_host_namespaces() {
    let got = errors(&pod(
        "",
        "  hostUsers: false\n  hostNetwork: true\n  hostPID: true\n  hostIPC: false\n",
    ));
    let host = |line, field| {
        format!("pod.yaml:{line}:3: spec.{field}: forbidden when `hostUsers` is false: remove {field}, or hostUsers")
    };
    assert!(got.contains(&host(10, "hostNetwork")), "{got:?}");
    assert!(got.contains(&host(11, "hostPID")), "{got:?}");
    assert!(!got.iter().any(|e| e.contains("spec.hostIPC")), "{got:?}");
    // With hostUsers left as it is, the host's namespaces are the pod's to use.
    check_ok(&pod(
        "",
        "  hostUsers: true\n  hostNetwork: true\n  hostPID: true\n  hostIPC: true\n",
    ));
}

/// What the rules above must not refuse.
#[test]
fn api_server_rules_accept_valid_values() {
    let container = "    resources:\n      requests: {cpu: \"0\", memory: -0, example.com/dev: 1, hugepages-2Mi: 1Gi}\n      limits: {example.com/dev: 1}\n    securityContext:\n      runAsUser: 0\n      appArmorProfile: {type: Unconfined}\n      capabilities: {add: [cap_net_admin, NET_RAW], drop: [all]}\n      seccompProfile: {type: Localhost, localhostProfile: profiles/audit.json}\n";
    let spec = "  activeDeadlineSeconds: 2147483647\n  nodeName: edge-1.local\n  os: {name: linux}\n  dnsConfig: {nameservers: [10.0.0.1, \"2001:db8::1\"], searches: [svc.local.]}\n  hostAliases: [{ip: \"::1\", hostnames: [db.local]}]\n  securityContext:\n    supplementalGroups: [0, 2147483647]\n    sysctls: [{name: net.ipv4.ip_local_port_range, value: \"1024 2048\"}, {name: kernel.shm_rmid_forced, value: \"1\"}]\n  volumes:\n  - name: v\n    projected:\n      sources:\n      - configMap: {name: a, items: [{key: k, path: a/f..g}]}\n      - secret: {name: b, items: [{key: k, path: b/f}]}\n";
    check_ok(&pod(container, spec));
}

#[track_caller]
fn check_ok(yaml: &str) {
    assert_eq!(errors(yaml), Vec::<String>::new(), "manifest:\n{yaml}");
}

/// The AppArmor annotations the kubelet still honours are refused like the field.
#[test]
fn app_armor_annotations_are_refused_unless_unconfined() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: aa\n  annotations:\n    container.apparmor.security.beta.kubernetes.io/app: runtime/default\n    container.apparmor.security.beta.kubernetes.io/side: unconfined\nspec:\n  containers:\n  - {name: app, image: busybox}\n  - {name: side, image: busybox}\n";
    let got = errors(yaml);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].contains("metadata.annotations")
            && got[0].contains("\"runtime/default\" cannot be enforced"),
        "{got:?}"
    );
}

/// The API server's rule for image pull secrets: the type's key is there and holds JSON; the
/// message names the place and never the content.
#[test]
fn image_pull_secrets_hold_their_docker_config() {
    let secret = |body: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\ntype: kubernetes.io/dockerconfigjson\n{body}")
    };
    let e = errors(&secret("stringData:\n  other: x\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("pod.yaml:1:1: data: required: a Secret of type kubernetes.io/dockerconfigjson holds its credentials under key \".dockerconfigjson\""),
        "{e:?}"
    );
    let e = errors(&secret("stringData:\n  .dockerconfigjson: '{\"auths\": s3cr3t'\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("pod.yaml:7:3: stringData[\".dockerconfigjson\"]: invalid value (not shown: it is secret): not JSON"), "{e:?}");
    assert!(!e[0].contains("s3cr3t"), "{e:?}");
    let ok = secret("stringData:\n  .dockerconfigjson: '{\"auths\": {\"reg.example\": {\"auth\": \"YTpi\"}}}'\n");
    assert_eq!(errors(&ok), Vec::<String>::new());
    let legacy = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: old\ntype: kubernetes.io/dockercfg\ndata:\n  .dockercfg: WzFd\n";
    let e = errors(legacy);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains(
            "data[\".dockercfg\"]: invalid value (not shown: it is secret): expected a JSON object"
        ),
        "{e:?}"
    );
}

/// Safe updates' annotations: a typo is an error, not a silent default.
#[test]
fn rollout_annotations_are_checked() {
    let with = |key: &str, value: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations:\n    {key}: {value}\nspec:\n  containers:\n  - {{name: app, image: busybox}}\n")
    };
    assert!(errors(&with("outpost.dev/rollback", "\"false\"")).is_empty());
    assert!(errors(&with("outpost.dev/rollout-deadline-seconds", "\"120\"")).is_empty());
    let e = errors(&with("outpost.dev/rollback", "\"no\""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("metadata.annotations") && e[0].contains("\"no\" is not a boolean"),
        "{e:?}"
    );
    let e = errors(&with("outpost.dev/rollout-deadline-seconds", "\"5m\""));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("\"5m\" is not a number of seconds"), "{e:?}");
}
