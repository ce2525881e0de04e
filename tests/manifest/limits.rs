//! Hostile and oversized input: refused with a clear error, fast, whatever its shape;
//! realistic big files still accepted.

use std::path::Path;

use crate::validate::errors;
use outpost::manifest::{parse_bytes, parse_str};

#[test]
fn hostile_input_is_refused_with_a_clear_error() {
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let e = errors(bomb);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].ends_with(
            "YAML aliases expand too much (an alias bomb?): write the values out instead"
        ),
        "{e:?}"
    );

    let deep = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let e = errors(&deep);
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("nesting is too deep"), "{e:?}");

    let err = parse_bytes(Path::new("bin.yaml"), b"kind: Pod\nname: \xff\xfe\n").unwrap_err();
    assert_eq!(
        err[0].to_string(),
        "bin.yaml:2:7: not valid UTF-8 (byte 0xff): save the file as UTF-8"
    );
}

/// 1 MiB files up to 1M levels deep (as deep as each style fits), are refused before any parser
/// runs (parsers spend depth × size on them: minutes). The time this takes is measured in
/// benches/manifest_hostile.rs, not here.
#[test]
fn deeply_nested_files_are_refused_in_every_style() {
    const MIB: usize = 1024 * 1024;
    let fill = |prefix: &str, unit: &str| {
        prefix.to_string() + &unit.repeat((MIB - prefix.len()) / unit.len())
    };
    let styles = [
        ("flow sequence", fill("", "["), (1, 100)),
        ("flow mapping", fill("", "{a:"), (1, 298)),
        ("flow mapping, complex keys", fill("", "{"), (1, 100)),
        ("json", fill("", r#"{"":"#), (1, 397)),
        ("compact sequence", fill("", "- "), (1, 201)),
        ("explicit keys", fill("", "? "), (1, 201)),
        ("anchors and tags", fill("", "&a !t ["), (1, 700)),
        ("under a key", fill("apiVersion: v1\nkind: Pod\nspec: ", "["), (3, 106)),
    ];
    for (style, text, (line, column)) in styles {
        assert!(text.len() > MIB - 8 && text.len() <= MIB, "{style}: {} bytes", text.len());
        let e = errors(&text);
        assert_eq!(e, vec![format!("pod.yaml:{line}:{column}: nesting is too deep (more than 100 levels of mappings and lists, aliases expanded): a manifest never needs more than a few dozen levels")], "{style}");
    }
    // Block indentation cannot reach 500k levels in 1 MiB; 101 is enough to be refused.
    let stairs: String = (0..101).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    assert_eq!(errors(&stairs), vec!["pod.yaml:101:101: nesting is too deep (more than 100 levels of mappings and lists, aliases expanded): a manifest never needs more than a few dozen levels".to_string()]);
    // Nesting built from aliases is only visible once they are expanded: serde_yaml's limit.
    let mut chain = "a0: &a0 [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n".to_string();
    for i in 1..5 {
        chain += &format!("a{i}: &a{i} [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[*a{}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n", i - 1);
    }
    let e = errors(&chain);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains(": nesting is too deep (more than 100 levels"), "{e:?}");
}

#[test]
fn oversized_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, format!("# {}\n", "x".repeat(1024 * 1024))).unwrap();
    let err = outpost::manifest::parse_file(&path).unwrap_err();
    assert!(
        err[0]
            .to_string()
            .ends_with(": file is larger than 1024 KiB: split it into several manifests"),
        "{err:?}"
    );
}

/// Past the depth limit, parse and validation cost grows with nodes and documents: the pre-scan
/// caps both, before any parser runs (benches/manifest_hostile.rs times the files at the caps).
#[test]
fn files_past_the_node_and_document_limits_are_refused() {
    // 11 nodes before `data`'s keys, then 2 per key: node 30001 is key 14994's value.
    let keys: String = (0..15_000).map(|i| format!("  k{i:05}: v\n")).collect();
    let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n{keys}");
    assert_eq!(errors(&text), vec!["pod.yaml:15000:11: more than 30000 values (mappings, lists, keys and scalars) in one file: split it into several files (a pod with 100 containers, 30 env vars each, has about 22000)".to_string()]);
    let flow = format!("a: [{}]\n", "1,".repeat(30_000));
    assert_eq!(errors(&flow), vec!["pod.yaml:1:59999: more than 30000 values (mappings, lists, keys and scalars) in one file: split it into several files (a pod with 100 containers, 30 env vars each, has about 22000)".to_string()]);
    // The 1000th `---` opens document 1001.
    let docs = format!("{}x: 1\n", "x: 1\n---\n".repeat(1000));
    assert_eq!(
        errors(&docs),
        vec!["pod.yaml:2000:1: more than 1000 documents in one file: split it into several files"
            .to_string()]
    );
}

#[test]
fn at_most_100_errors_are_reported_per_file() {
    let containers = "  - {name: a, image: b}\n".repeat(150);
    let e = errors(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n{containers}"
    ));
    assert_eq!(e.len(), 101);
    assert!(e[99].starts_with("pod.yaml:107:6: spec.containers[100].name: duplicate"), "{}", e[99]);
    assert_eq!(e[100], "pod.yaml:1:1: 49 more errors not shown: fix the first 100 and check again");
}

/// Large files real users write stay well inside the limits.
#[test]
fn realistic_big_files_are_accepted() {
    let accepted = |what: &str, text: &str, objects: usize| {
        assert!(text.len() <= 1024 * 1024, "{what}: {} bytes", text.len());
        match parse_str(Path::new("big.yaml"), text) {
            Ok(docs) => assert_eq!(docs.len(), objects, "{what}"),
            Err(e) => panic!("{what}: {:?}", &e[..e.len().min(3)]),
        }
    };
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n";
    // ~1 MiB: 900 keys of 1 KB values.
    let values: String =
        (0..900).map(|i| format!("  file-{i}.conf: {}\n", "x".repeat(1024))).collect();
    accepted("900 keys of 1 KB", &format!("{cm}{values}"), 1);
    let short: String = (0..5000).map(|i| format!("  KEY_{i}: \"value {i}\"\n")).collect();
    accepted("5000 short keys", &format!("{cm}{short}"), 1);
    let secret: String = (0..3000).map(|i| format!("  key{i}: dmFsdWU=\n")).collect();
    accepted(
        "a Secret with 3000 keys",
        &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n{secret}"),
        1,
    );
    // 100 containers with 30 env vars, ports, mounts, resources and a probe each.
    let env: String =
        (0..30).map(|i| format!("    - name: VAR_{i}\n      value: \"v{i}\"\n")).collect();
    let containers: String = (0..100)
        .map(|c| {
            format!(
                "  - name: c{c}\n    image: busybox:1.36\n    command: [sh, -c, \"sleep 3600\"]\n    \
                 ports:\n    - name: http\n      containerPort: {}\n    - name: metrics\n      \
                 containerPort: {}\n    env:\n{env}    envFrom:\n    - configMapRef: {{name: big}}\n    \
                 volumeMounts:\n    - {{name: data, mountPath: /data}}\n    - {{name: tmp, mountPath: /tmp}}\n    \
                 resources:\n      requests: {{cpu: 10m, memory: 16Mi}}\n      limits: {{cpu: 100m, memory: 64Mi}}\n    \
                 readinessProbe:\n      httpGet: {{path: /healthz, port: http}}\n      periodSeconds: 5\n",
                8000 + 2 * c,
                8001 + 2 * c
            )
        })
        .collect();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: many\n  labels: {{app: many}}\nspec:\n  \
         volumes:\n  - {{name: data, emptyDir: {{}}}}\n  - {{name: tmp, emptyDir: {{medium: Memory}}}}\n  \
         containers:\n{containers}"
    );
    accepted("100 containers with env", &pod, 1);
    let many: String = (0..300)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\ndata:\n  k: v\n"
            )
        })
        .collect();
    accepted("300 documents", &many, 300);
}
