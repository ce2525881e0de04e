//! The API through real clients — raw HTTP, the real kubectl and the outpost CLI — against an
//! in-process server with synthetic pods, events and log files. Ages are whole days so the
//! outputs of two clients run a moment apart are the same.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::api_support::*;
use crate::runner::outpost;
use k8s_openapi::api::core::v1::{
    ConfigMapKeySelector, ContainerPort, EnvVar, EnvVarSource, ExecAction, Probe, Secret,
    SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use outpost::api::ApiConfig;
use outpost::manifest::{DesiredState, ObjectKey};

const DAY: i64 = 86_400;

fn both(s: &Server, kubectl_args: &[&str], outpost_args: &[&str]) -> (String, String) {
    let (kc, kout, kerr) = kubectl(&s.url(), kubectl_args);
    assert_eq!(kc, 0, "kubectl {kubectl_args:?}: {kerr}");
    let mut args = outpost_args.to_vec();
    let url = s.url();
    args.extend(["--server", &url]);
    let (oc, oout, oerr) = outpost(&args);
    assert_eq!(oc, 0, "outpost {args:?}: {oerr}");
    (kout, oout)
}

fn three_pods(s: &Server) {
    let mut job = exited(running_pod("job", 2 * DAY, 0, DAY));
    job.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let mut mqtt = running_pod("mqtt", DAY, 0, DAY);
    mqtt.metadata.namespace = Some("edge".into());
    s.publish(
        vec![running_pod("web", 10 * DAY, 3, 3 * DAY), job, mqtt],
        vec![],
        Default::default(),
    );
}

#[test]
fn get_pods_kubectl_and_outpost_print_the_same_table() {
    let s = Server::start(|_| {});
    three_pods(&s);
    let (k, o) = both(&s, &["get", "pods"], &["get", "pods"]);
    assert_eq!(
        k,
        "NAME   READY   STATUS      RESTARTS     AGE\n\
         job    0/1     Completed   0            2d\n\
         web    1/1     Running     3 (3d ago)   10d\n"
    );
    assert_eq!(o, k);
    let (k, o) = both(&s, &["get", "pods", "-o", "wide"], &["get", "pods", "-o", "wide"]);
    assert_eq!(
        k.lines().next().unwrap(),
        "NAME   READY   STATUS      RESTARTS     AGE   IP          NODE     NOMINATED NODE   READINESS GATES"
    );
    assert_eq!(o, k);
    let (k, o) = both(&s, &["get", "pods", "-A"], &["get", "pods", "-A"]);
    assert!(k.starts_with("NAMESPACE   NAME   READY"), "{k}");
    assert!(k.contains("\nedge        mqtt   1/1     Running"), "{k}");
    assert_eq!(o, k);
    let (k, o) = both(
        &s,
        &["get", "pods", "-l", "app in (web,job)"],
        &["get", "pods", "-l", "app in (web,job)"],
    );
    assert_eq!(k.lines().count(), 3);
    assert_eq!(o, k);
    let (_, o) = both(&s, &["get", "pods", "web"], &["get", "pods", "web", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!((v["kind"].as_str(), v["metadata"]["name"].as_str()), (Some("Pod"), Some("web")));
    let (code, _, err) = outpost(&["get", "pods", "nope", "--server", &s.url()]);
    assert_eq!(
        (code, err.as_str()),
        (1, "Error from server (NotFound): pods \"nope\" not found\n")
    );
    let (_, _, kerr) = kubectl(&s.url(), &["get", "pods", "-n", "empty"]);
    let (_, _, oerr) = outpost(&["get", "pods", "-n", "empty", "--server", &s.url()]);
    assert_eq!(
        (kerr.as_str(), oerr.as_str()),
        ("No resources found in empty namespace.\n", "No resources found in empty namespace.\n")
    );
}

fn rich_pod() -> k8s_openapi::api::core::v1::Pod {
    let mut pod = running_pod("web", 10 * DAY, 2, 3 * DAY);
    pod.metadata.annotations = Some([("note".to_string(), "hello".to_string())].into());
    let status = pod.status.as_mut().unwrap();
    status.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP { ip: "10.88.0.7".into() }]);
    status.qos_class = Some("BestEffort".into());
    let c = &mut pod.spec.as_mut().unwrap().containers[0];
    c.command = Some(vec!["sh".into(), "-c".into(), "echo hi; sleep 3600".into()]);
    c.ports = Some(vec![ContainerPort {
        container_port: 8080,
        protocol: Some("TCP".into()),
        ..Default::default()
    }]);
    c.env = Some(vec![
        EnvVar { name: "MODE".into(), value: Some("fast".into()), ..Default::default() },
        EnvVar {
            name: "PASSWORD".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "db".into(),
                    key: "password".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        EnvVar {
            name: "LEVEL".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "settings".into(),
                    key: "level".into(),
                    optional: Some(true),
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]);
    c.liveness_probe = Some(Probe {
        exec: Some(ExecAction { command: Some(vec!["true".into()]) }),
        period_seconds: Some(5),
        ..Default::default()
    });
    c.volume_mounts = Some(vec![VolumeMount {
        name: "data".into(),
        mount_path: "/data".into(),
        ..Default::default()
    }]);
    pod.spec.as_mut().unwrap().volumes = Some(vec![Volume {
        name: "data".into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    }]);
    pod
}

#[test]
fn describe_pod_kubectl_and_outpost_print_the_same() {
    let s = Server::start(|_| {});
    let events = vec![
        event(
            "web",
            "Normal",
            "Pulled",
            "Container image \"busybox\" already present on machine",
            4 * DAY,
            1,
        ),
        event(
            "web",
            "Warning",
            "BackOff",
            "Back-off restarting failed container app in pod web_default(uid-web)",
            3 * DAY,
            5,
        ),
        event("other", "Normal", "Started", "not about web", DAY, 1),
    ];
    s.publish(vec![rich_pod()], events, Default::default());
    let (k, o) = both(&s, &["describe", "pod", "web"], &["describe", "pod", "web"]);
    for line in [
        "Name:         web\nNamespace:    default\nNode:         edge-1/192.0.2.1\n",
        "IPs:\n  IP:  10.88.0.7\nContainers:\n",
        "    Port:          8080/TCP\n",
        "      PASSWORD:  <set to the key 'password' in secret 'db'>         Optional: false\n",
        "    Liveness:       exec [true] delay=0s timeout=0s period=5s #success=0 #failure=0\n",
        "    Last State:     Terminated\n      Reason:       Error\n      Exit Code:    1\n",
        "    Mounts:\n      /data from data (rw)\n",
        "    Type:        EmptyDir (a temporary directory that shares a pod's lifetime)\n",
        "  Type     Reason   Age              From     Message\n  ----     ------   ----             ----     -------\n  Normal   Pulled   4d               kubelet  Container image \"busybox\" already present on machine\n  Warning  BackOff  3d (x5 over 3d)  kubelet  Back-off",
    ] {
        assert!(k.contains(line), "kubectl describe lacks {line:?}:\n{k}");
    }
    assert!(!k.contains("not about web"), "{k}");
    assert_eq!(o, k, "outpost describe differs from kubectl describe");
}

#[test]
fn logs_through_kubectl_and_outpost() {
    let s = Server::start(|_| {});
    s.publish(vec![running_pod("web", DAY, 1, DAY)], vec![], Default::default());
    s.write_log(
        "uid-web",
        "app",
        0,
        "",
        &["2024-01-01T00:00:00.000000000Z stdout F previous instance"],
    );
    s.write_log("uid-web", "app", 1, ".1", &["2024-01-01T00:01:00.000000000Z stdout F rotated"]);
    s.write_log(
        "uid-web",
        "app",
        1,
        "",
        &[
            "2024-01-01T00:02:00.000000000Z stdout F one",
            "2024-01-01T00:02:01.000000000Z stderr P tw",
            "2024-01-01T00:02:01.000000001Z stderr F o",
            "2024-01-01T00:02:02.000000000Z stdout F three",
        ],
    );
    let (k, o) = both(&s, &["logs", "web"], &["logs", "web"]);
    assert_eq!(k, "rotated\none\ntwo\nthree\n");
    assert_eq!(o, k);
    let (k, o) = both(
        &s,
        &["logs", "web", "--tail", "2", "--timestamps"],
        &["logs", "web", "--tail", "2", "--timestamps"],
    );
    assert_eq!(k, "2024-01-01T00:02:01.000000001Z o\n2024-01-01T00:02:02.000000000Z three\n");
    assert_eq!(o, k);
    let (k, o) =
        both(&s, &["logs", "web", "--previous", "-c", "app"], &["logs", "web", "-p", "-c", "app"]);
    assert_eq!((k.as_str(), o.as_str()), ("previous instance\n", "previous instance\n"));
    // sinceSeconds against 2024 timestamps: nothing is that recent.
    let (k, o) = both(&s, &["logs", "web", "--since", "1h"], &["logs", "web", "--since", "1h"]);
    assert_eq!((k.as_str(), o.as_str()), ("", ""));
    let (code, _, err) = kubectl(&s.url(), &["logs", "web", "-c", "nope"]);
    assert_eq!((code, err.trim()), (1, "error: container nope is not valid for pod web"));
    let (code, _, err) = outpost(&["logs", "web", "-c", "nope", "--server", &s.url()]);
    assert_eq!(
        (code, err.trim()),
        (1, "Error from server (BadRequest): container nope is not valid for pod web")
    );
}

#[test]
fn logs_follow_streams_appends_across_rotation_until_the_instance_exits() {
    let s = Server::start(|_| {});
    let pod = running_pod("web", DAY, 0, DAY);
    s.publish(vec![pod.clone()], vec![], Default::default());
    let path =
        s.write_log("uid-web", "app", 0, "", &["2024-01-01T00:00:00.000000000Z stdout F first"]);
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", "/dev/null")
        .args(["--server", &s.url(), "logs", "-f", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    let append = |line: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(f, "{line}").unwrap();
    };
    append("2024-01-01T00:00:01.000000000Z stdout F second");
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    // Rotation as the writer does it: rename to .1, start a new file.
    std::fs::rename(&path, path.with_extension("log.1")).unwrap();
    std::fs::write(&path, "2024-01-01T00:00:02.000000000Z stdout F after rotation\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "after rotation");
    append("2024-01-01T00:00:03.000000000Z stdout F last words");
    s.publish(vec![exited(pod)], vec![], Default::default());
    assert_eq!(lines.next().unwrap().unwrap(), "last words");
    assert!(lines.next().is_none(), "the stream ends once the instance exited");
    assert!(child.wait().unwrap().success());
}

#[test]
fn follow_over_raw_http_is_chunked() {
    let s = Server::start(|_| {});
    let pod = running_pod("web", DAY, 0, DAY);
    s.publish(vec![exited(pod)], vec![], Default::default());
    s.write_log("uid-web", "app", 0, "", &["2024-01-01T00:00:00.000000000Z stdout F done"]);
    let (code, head, body) =
        http(s.addr, "GET", "/api/v1/namespaces/default/pods/web/log?follow=true", &[]);
    assert_eq!(code, 200);
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, "done\n");
}

#[test]
fn events_kubectl_and_outpost() {
    let s = Server::start(|_| {});
    let events = vec![
        event(
            "web",
            "Normal",
            "Pulled",
            "Container image \"busybox\" already present on machine",
            2 * DAY,
            1,
        ),
        event("web", "Warning", "Unhealthy", "Liveness probe failed: boom", DAY, 4),
    ];
    s.publish(vec![running_pod("web", 10 * DAY, 0, DAY)], events, Default::default());
    let (k, o) = both(&s, &["get", "events"], &["events"]);
    assert_eq!(
        k,
        "LAST SEEN   TYPE      REASON      OBJECT    MESSAGE\n\
         2d          Normal    Pulled      pod/web   Container image \"busybox\" already present on machine\n\
         24h         Warning   Unhealthy   pod/web   Liveness probe failed: boom\n"
    );
    assert_eq!(o, k);
    let (_, json) =
        get_json(s.addr, "/api/v1/namespaces/default/events?fieldSelector=reason%3DUnhealthy");
    assert_eq!(json["items"][0]["count"], 4);
    assert_eq!(json["items"][0]["involvedObject"]["fieldPath"], "spec.containers{app}");
}

#[test]
fn writes_are_refused_with_a_status() {
    let s = Server::start(|_| {});
    three_pods(&s);
    let (code, _, body) = http(s.addr, "DELETE", "/api/v1/namespaces/default/pods/web", &[]);
    assert_eq!(code, 405);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["kind"].as_str(), v["code"].as_i64()), (Some("Status"), Some(405)));
    let (code, _, err) = kubectl(&s.url(), &["delete", "pod", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("the manifest directory is the source of truth"), "{err}");
}

#[test]
fn bearer_token_guards_tcp_but_not_health_or_the_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let sock = socket.clone();
    let s = Server::start(move |c| {
        c.token = Some("s3cret".into());
        c.socket = Some(sock);
    });
    three_pods(&s);
    let (code, _, body) = http(s.addr, "GET", "/api/v1/pods", &[]);
    assert_eq!(code, 401);
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
    assert_eq!(http(s.addr, "GET", "/api/v1/pods", &[("Authorization", "Bearer wrong")]).0, 401);
    assert_eq!(http(s.addr, "GET", "/api/v1/pods", &[("Authorization", "Bearer s3cret")]).0, 200);
    assert_eq!(
        http(s.addr, "GET", "/healthz", &[]),
        (200, http(s.addr, "GET", "/healthz", &[]).1, "ok".into())
    );
    // kubectl (client-go) sends bearer tokens only over TLS, so even with --token it is
    // refused on plain HTTP: kubectl users of a token-protected agent go through the socket.
    let (code, _, err) = kubectl(&s.url(), &["--token", "s3cret", "get", "pods"]);
    assert_eq!(code, 1);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    let tf = token_file.to_str().unwrap();
    let (code, out, err) = outpost(&["get", "pods", "--server", &s.url(), "--token-file", tf]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\nweb "), "{out}");
    let unix = format!("unix:{}", socket.display());
    let (code, out, err) = outpost(&["get", "pods", "--server", &unix]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\nweb "), "{out}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn metrics_and_kubelet_endpoints() {
    let s = Server::start(|_| {});
    three_pods(&s);
    s.published.metrics.image_pull(true);
    let (code, head, text) = http(s.addr, "GET", "/metrics", &[]);
    assert_eq!(code, 200);
    assert!(head.contains("text/plain"), "{head}");
    for line in [
        "outpost_pods{phase=\"Running\"} 2",
        "outpost_pods{phase=\"Succeeded\"} 1",
        "outpost_container_restarts_total{namespace=\"default\",pod=\"web\",container=\"app\"} 3",
        "outpost_image_pulls_total{result=\"success\"} 1",
        "# TYPE outpost_probe_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?}:\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("process_cpu_seconds_total ")), "{text}");
    let (code, pods) = get_json(s.addr, "/pods");
    assert_eq!(
        (code, pods["kind"].as_str(), pods["items"].as_array().map(Vec::len)),
        (200, Some("PodList"), Some(3))
    );
    assert_eq!(http(s.addr, "GET", "/readyz", &[]).2, "ok");
}

#[test]
fn secrets_are_redacted_through_kubectl() {
    let s = Server::start(|_| {});
    let mut desired = DesiredState::default();
    desired.secrets.insert(
        ObjectKey { namespace: "default".into(), name: "db".into() },
        Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
            ..Default::default()
        },
    );
    s.publish(vec![], vec![], desired);
    for args in [&["get", "secret", "db", "-o", "json"][..], &["get", "secrets", "-o", "yaml"]] {
        let (code, out, err) = kubectl(&s.url(), args);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("password") && !out.contains("aHVudGVyMg") && !out.contains("hunter2"),
            "{out}"
        );
    }
    let mut raw = String::new();
    std::net::TcpStream::connect(s.addr)
        .and_then(|mut c| {
            c.write_all(b"GET /api/v1/secrets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            c.read_to_string(&mut raw)
        })
        .unwrap();
    assert!(
        raw.contains("\"outpost.dev/redacted\":\"true\"") && !raw.contains("aHVudGVyMg"),
        "{raw}"
    );
    let _ = Duration::ZERO;
}

#[test]
fn the_plain_listener_is_anonymous_read_only_and_never_serves_exec() {
    let s = Server::start(|_| {});
    three_pods(&s);
    for sub in ["exec", "attach", "portforward"] {
        let path = format!("/api/v1/namespaces/default/pods/web/{sub}?command=true");
        let (code, _, body) = http(s.addr, "POST", &path, &[]);
        assert_eq!(code, 403, "{sub}: {body}");
        assert!(body.contains("User \\\"system:anonymous\\\" cannot create resource"), "{body}");
    }
    let (code, out, err) = kubectl(&s.url(), &["auth", "can-i", "create", "pods/exec"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.starts_with("no"), "{out}");
    let (code, out, err) = kubectl(&s.url(), &["auth", "can-i", "list", "pods"]);
    assert_eq!((code, out.trim()), (0, "yes"), "{err}");
    let (code, out, err) = kubectl(&s.url(), &["auth", "whoami"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("system:anonymous"), "{out}");
}

#[test]
fn plain_http_on_a_non_loopback_address_needs_the_operators_say_so() {
    let state = tempfile::tempdir().unwrap();
    let config = ApiConfig::new("0.0.0.0:0".parse().unwrap(), state.path().into());
    let published = std::sync::Arc::new(outpost::api::Published::default());
    let err = smol::block_on(outpost::api::serve(config, published, |_| {})).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("--secure-listen 0.0.0.0:0") && message.contains("--listen-allow-remote"),
        "{message}"
    );
    let s = Server::start(|c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.listen_allow_remote = true;
    });
    let port = s.addr.port();
    assert_eq!(http(([127, 0, 0, 1], port).into(), "GET", "/healthz", &[]).0, 200);
}

#[test]
fn get_sources_lists_the_manifest_urls_or_says_there_are_none() {
    let s = Server::start(|_| {});
    let url = s.url();
    let (code, out, err) = outpost(&["get", "sources", "--server", &url]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("No manifest URLs"), "{err}");

    let status = outpost::watch::SourceStatus {
        url: "https://fleet.example/depot-7.yaml".into(),
        last_success: Some(now_secs() - 3 * DAY),
        etag: Some("\"v9\"".into()),
        objects: 4,
        errors_total: 1,
        last_error: Some("status 503".into()),
        last_error_time: Some(now_secs() - 2 * DAY),
        ..Default::default()
    };
    s.published.metrics.set_sources(std::sync::Arc::new(std::sync::Mutex::new(vec![status])));
    let (code, out, err) = outpost(&["get", "sources", "--server", &url]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "URL                                  OBJECTS   LAST SUCCESS   ERRORS   ETAG   LAST ERROR\n\
         https://fleet.example/depot-7.yaml   4         3d ago         1        \"v9\"   2d ago (status 503)\n"
    );
    let (code, json, err) = outpost(&["get", "sources", "-o", "json", "--server", &url]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["kind"], "SourceList");
    assert_eq!(list["items"][0]["etag"], "\"v9\"");
    assert_eq!(list["items"][0]["lastError"], "status 503");
}
