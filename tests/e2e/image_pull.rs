//! Pulling from registries on loopback: Debian's `docker-registry` (the CNCF distribution
//! registry, plain http, htpasswd basic auth, TLS with a test CA) and a small fake registry
//! on a std TcpListener for what the real one cannot do (token auth, tampered blobs).
//! Images are pushed by a test-only client speaking the registry API.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::image_support::*;
use base64::Engine as _;
use outpost::image::platform;
use outpost::image::pull::{self, ensure, DOCKER_LIST, OCI_INDEX};
use serde_json::json;

use crate::registry_support::*;

#[test]
fn pulls_by_tag_and_digest_and_skips_blobs_already_stored() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let registry = LocalRegistry::plain(dir.path());
    let bb = busybox();
    registry.pusher().image(REPO, "latest", &bb);
    let host = registry.host();
    let opts = options(dir.path());

    let a = store(&dir.path().join("a"));
    let image = smol::block_on(pull::pull(&a, &format!("{host}/{REPO}"), &opts)).unwrap();
    assert_eq!(image.reference, format!("{host}/{REPO}:latest"));
    assert_eq!(image.digest, bb.digest);
    check_busybox_layer(&image);
    let found = a.resolve(&format!("{host}/{REPO}:latest")).unwrap().expect("resolved");
    assert_eq!(found.digest, bb.digest);
    for (digest, data) in &bb.blobs {
        assert_eq!(&std::fs::read(blob_path(&a, digest)).unwrap(), data);
    }

    let b = store(&dir.path().join("b"));
    let by_digest = format!("{host}/{REPO}@{}", bb.digest);
    let image = smol::block_on(pull::pull(&b, &by_digest, &opts)).unwrap();
    assert_eq!(image.digest, bb.digest);
    check_busybox_layer(&image);
    assert_eq!(b.resolve(&by_digest).unwrap().expect("by digest").digest, bb.digest);
    // A digest pull records no tag.
    assert!(b.resolve(&format!("{host}/{REPO}:latest")).unwrap().is_none());

    // Delete the layer from the registry: a fresh store cannot pull any more, the store
    // that has the layer still can (only manifest and nothing else is fetched).
    let layer = &bb.blobs[1].0;
    let r = http(registry.port, "DELETE", &format!("/v2/{REPO}/blobs/{layer}"), &[], b"");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let c = store(&dir.path().join("c"));
    let err = smol::block_on(pull::pull(&c, &format!("{host}/{REPO}"), &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to pull image \"{host}/{REPO}\": blob {layer}: not found")
    );
    assert!(!blob_path(&c, layer).exists());
    let again = smol::block_on(pull::pull(&a, &format!("{host}/{REPO}"), &opts)).unwrap();
    assert_eq!(again.digest, bb.digest);
}

#[test]
fn picks_the_host_platform_from_oci_indexes_and_docker_lists() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let registry = LocalRegistry::plain(dir.path());
    let push = registry.pusher();
    let host = registry.host();
    let bb = busybox();
    let docker_bb = busybox_variant(&bb, true);
    let other = other_platform_image();
    let arch = platform::host().0;
    for image in [&bb, &docker_bb, &other] {
        push.image(REPO, &image.digest, image);
    }
    let oci_index = index_of(&[(&other, other_arch()), (&bb, arch)], OCI_INDEX);
    push.manifest(REPO, "multi-oci", OCI_INDEX, &oci_index);
    let list = index_of(&[(&other, other_arch()), (&docker_bb, arch)], DOCKER_LIST);
    push.manifest(REPO, "multi-docker", DOCKER_LIST, &list);
    let only_other = index_of(&[(&other, other_arch())], OCI_INDEX);
    push.manifest(REPO, "other-only", OCI_INDEX, &only_other);
    let opts = options(dir.path());
    let s = store(&dir.path().join("store"));

    let image = smol::block_on(pull::pull(&s, &format!("{host}/{REPO}:multi-oci"), &opts)).unwrap();
    assert_eq!(image.digest, bb.digest);
    check_busybox_layer(&image);
    let image =
        smol::block_on(pull::pull(&s, &format!("{host}/{REPO}:multi-docker"), &opts)).unwrap();
    assert_eq!(image.digest, docker_bb.digest);
    assert_eq!(
        image.config.config().as_ref().unwrap().cmd().as_deref(),
        Some(&["sh".to_string()][..])
    );
    check_busybox_layer(&image);
    // The other platform's layer was never fetched.
    assert!(!blob_path(&s, &other.blobs[1].0).exists());

    // By index digest: resolvable by that digest afterwards.
    let by_index = format!("{host}/{REPO}@{}", sha256(&oci_index));
    let image = smol::block_on(pull::pull(&s, &by_index, &opts)).unwrap();
    assert_eq!(image.digest, bb.digest);
    assert_eq!(s.resolve(&by_index).unwrap().expect("by index digest").digest, bb.digest);

    let err =
        smol::block_on(pull::pull(&s, &format!("{host}/{REPO}:other-only"), &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull image \"{host}/{REPO}:other-only\": no image for {} in the index (it has: linux/{})",
            platform::host_name(),
            other_arch()
        )
    );
}

#[test]
fn missing_images_refused_connections_and_bad_names_fail_clearly() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let registry = LocalRegistry::plain(dir.path());
    registry.pusher().image(REPO, "latest", &busybox());
    let host = registry.host();
    let opts = options(dir.path());
    let s = store(&dir.path().join("store"));

    let missing = format!("{host}/{REPO}:nope");
    let err = smol::block_on(pull::pull(&s, &missing, &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to pull image \"{missing}\": {missing}: not found")
    );
    assert_eq!(err.reason(), "ErrImagePull");
    assert!(!err.is_unreachable());
    let missing_repo = format!("{host}/test/none:1");
    let err = smol::block_on(pull::pull(&s, &missing_repo, &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to pull image \"{missing_repo}\": {missing_repo}: not found")
    );

    let closed = free_port("127.0.0.1");
    let err = smol::block_on(pull::pull(&s, &format!("127.0.0.1:{closed}/x"), &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull image \"127.0.0.1:{closed}/x\": dial tcp 127.0.0.1:{closed}: Connection refused (os error 111)"
        )
    );
    assert!(err.is_unreachable());

    let err = smol::block_on(pull::pull(&s, "Busybox", &opts)).unwrap_err();
    assert_eq!(err.reason(), "InvalidImageName");
    assert!(s.list().unwrap().is_empty());
}

#[test]
fn basic_auth_needs_the_credentials_of_the_config_json() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let registry =
        LocalRegistry::start(dir.path(), &storage, "127.0.0.1", Some(("edge", "pw-9d1c")), None);
    let basic = base64::engine::general_purpose::STANDARD.encode("edge:pw-9d1c");
    let push =
        Pusher { port: registry.port, auth: vec![("Authorization", format!("Basic {basic}"))] };
    let bb = busybox();
    push.image(REPO, "latest", &bb);
    let host = registry.host();
    let reference = format!("{host}/{REPO}");
    let opts = options(dir.path());
    let s = store(&dir.path().join("store"));

    let err = smol::block_on(pull::pull(&s, &reference, &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull image \"{reference}\": unauthorized: {host} refused anonymous access to {REPO}: authentication required"
        )
    );
    write_auth(dir.path(), &host, "edge", "wrong-password");
    let err = smol::block_on(pull::pull(&s, &reference, &opts)).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "failed to pull image \"{reference}\": unauthorized: {host} refused the configured credentials access to {REPO}"
        )),
        "{message}"
    );
    assert!(!message.contains("wrong-password"), "{message}");

    // Docker's key form (scheme and path) finds them too.
    write_auth(dir.path(), &format!("http://{host}/v2/"), "edge", "pw-9d1c");
    let image = smol::block_on(pull::pull(&s, &reference, &opts)).unwrap();
    assert_eq!(image.digest, bb.digest);
    check_busybox_layer(&image);
}

#[test]
fn bearer_tokens_anonymous_and_with_credentials() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let bb = busybox();
    let opts = options(dir.path());

    let fake = fake_registry(&bb, FakeAuth::AnonymousToken, false, false);
    let reference = format!("127.0.0.1:{}/{REPO}", fake.port);
    let s = store(&dir.path().join("a"));
    let image = smol::block_on(pull::pull(&s, &reference, &opts)).unwrap();
    assert_eq!(image.digest, bb.digest);
    let requests = fake.requests.lock().unwrap().clone();
    let token_requests: Vec<_> = requests.iter().filter(|(p, _)| p.starts_with("/token")).collect();
    assert_eq!(
        token_requests,
        vec![&(format!("/token?service=fake&scope=repository:{REPO}:pull"), String::new())]
    );
    // Everything after the challenge carried the token: manifest, config, layer.
    let authorized: Vec<_> =
        requests.iter().filter(|(_, a)| *a == format!("Bearer {TOKEN}")).map(|(p, _)| p).collect();
    assert_eq!(authorized.len(), 3, "{requests:?}");

    let fake = fake_registry(&bb, FakeAuth::TokenWithCredentials, false, false);
    let host = format!("127.0.0.1:{}", fake.port);
    let reference = format!("{host}/{REPO}");
    let s = store(&dir.path().join("b"));
    let err = smol::block_on(pull::pull(&s, &reference, &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to pull image \"{reference}\": unauthorized: {host} refused anonymous access to {REPO}: {{\"details\":\"bad credentials\"}}")
    );
    write_auth(dir.path(), &host, "user", "pw");
    let image = smol::block_on(pull::pull(&s, &reference, &opts)).unwrap();
    assert_eq!(image.digest, bb.digest);
    check_busybox_layer(&image);
}

#[test]
fn tampered_blobs_are_refused_and_not_stored() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let bb = busybox();
    let fake = fake_registry(&bb, FakeAuth::None, true, false);
    let reference = format!("127.0.0.1:{}/{REPO}", fake.port);
    let s = store(&dir.path().join("store"));
    let err = smol::block_on(pull::pull(&s, &reference, &options(dir.path()))).unwrap_err();
    let layer = &bb.blobs[1].0;
    let mut tampered = bb.blobs[1].1.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull image \"{reference}\": digest mismatch for {layer}: expected {layer}, got {}",
            sha256(&tampered)
        )
    );
    assert!(!blob_path(&s, layer).exists());
    assert!(s.resolve(&reference).unwrap().is_none());
}

#[test]
fn pull_policies_follow_the_kubelet_with_an_offline_fallback_for_always() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let registry = LocalRegistry::plain(dir.path());
    let push = registry.pusher();
    let bb = busybox();
    push.image(REPO, "latest", &bb);
    let host = registry.host();
    let reference = format!("{host}/{REPO}:latest");
    let opts = options(dir.path());
    let s = store(&dir.path().join("store"));
    // (digest, whether the registry was asked, whether a pull is reported), as the agent's
    // Pulling and Pulled events see them.
    let with_policy = |policy: &str| {
        let asked = std::cell::Cell::new(false);
        let ensured = smol::block_on(ensure(&s, &reference, policy, &opts, || asked.set(true)));
        ensured.map(|e| (e.image.digest, asked.get(), e.pulled.is_some()))
    };

    let err = with_policy("Never").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Container image \"{reference}\" is not present with pull policy of Never")
    );
    assert_eq!(err.reason(), "ErrImageNeverPull");
    assert_eq!(with_policy("IfNotPresent").unwrap(), (bb.digest.clone(), true, true));
    assert_eq!(with_policy("Never").unwrap(), (bb.digest.clone(), false, false));
    let size: usize = bb.blobs.iter().map(|b| b.1.len()).sum();
    assert_eq!(s.resolve(&reference).unwrap().unwrap().size, size as u64);

    // The tag moves: IfNotPresent keeps the local image, Always (and "" for :latest) pulls.
    let moved = busybox_variant(&bb, false);
    push.image(REPO, "latest", &moved);
    assert_eq!(with_policy("IfNotPresent").unwrap(), (bb.digest.clone(), false, false));
    assert_eq!(with_policy("Always").unwrap(), (moved.digest.clone(), true, true));
    push.image(REPO, "latest", &bb);
    assert_eq!(with_policy("").unwrap(), (bb.digest.clone(), true, true));
    let err = with_policy("Sometimes").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("image \"{reference}\": unknown imagePullPolicy \"Sometimes\" (use Always, IfNotPresent or Never)")
    );

    // Offline: Always falls back to the local copy (deviation from the kubelet), reported as
    // no pull; an image not stored still fails with the network error.
    drop(registry);
    assert_eq!(with_policy("Always").unwrap(), (bb.digest.clone(), true, false));
    assert_eq!(with_policy("IfNotPresent").unwrap(), (bb.digest.clone(), false, false));
    let absent = format!("{host}/test/other:1");
    let err = smol::block_on(pull::ensure(&s, &absent, "Always", &opts, || {})).unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("failed to pull image \"{absent}\": dial tcp {host}: ")),
        "{err}"
    );
}

#[test]
fn https_registries_need_a_trusted_certificate() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let bb = busybox();
    {
        let plain = LocalRegistry::start(dir.path(), &storage, "127.0.0.1", None, None);
        plain.pusher().image(REPO, "latest", &bb);
    }
    // The same storage served over TLS on 127.0.0.2: loopback, but not a name outpost
    // treats as plain http, with a certificate for that address.
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.2".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let tls = LocalRegistry::start(
        dir.path(),
        &storage,
        "127.0.0.2",
        None,
        Some((&cert_file, &key_file)),
    );
    let reference = format!("127.0.0.2:{}/{REPO}", tls.port);
    let mut opts = options(dir.path());
    let s = store(&dir.path().join("store"));

    let err = smol::block_on(pull::pull(&s, &reference, &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to pull image \"{reference}\": tls handshake with 127.0.0.2: invalid peer certificate: UnknownIssuer")
    );
    assert!(!err.is_unreachable());
    opts.ca_files = vec![cert_file];
    let image = smol::block_on(pull::pull(&s, &reference, &opts)).unwrap();
    assert_eq!(image.digest, bb.digest);
    check_busybox_layer(&image);
}

#[test]
fn a_registry_that_never_answers_times_out() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections (the kernel does) but never reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut opts = options(dir.path());
    opts.timeout = Duration::from_millis(300);
    let s = store(&dir.path().join("store"));
    let err = smol::block_on(pull::pull(&s, &format!("127.0.0.1:{port}/x"), &opts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed to pull image \"127.0.0.1:{port}/x\": GET http://127.0.0.1:{port}/v2/x/manifests/latest: no answer within 300ms"
        )
    );
    assert!(err.is_unreachable());
    drop(silent);
}

#[test]
fn redirected_blobs_get_no_credentials() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let bb = busybox();
    let fake = fake_registry(&bb, FakeAuth::TokenWithCredentials, false, true);
    let host = format!("127.0.0.1:{}", fake.port);
    write_auth(dir.path(), &host, "user", "pw");
    let s = store(&dir.path().join("store"));
    let image =
        smol::block_on(pull::pull(&s, &format!("{host}/{REPO}"), &options(dir.path()))).unwrap();
    assert_eq!(image.digest, bb.digest);
    let requests = fake.requests.lock().unwrap().clone();
    let cdn: Vec<_> = requests.iter().filter(|(p, _)| p.starts_with("/cdn/")).collect();
    let expected: Vec<(String, String)> =
        bb.blobs.iter().map(|(d, _)| (format!("/cdn/{d}?sig=s3cr3t"), String::new())).collect();
    assert_eq!(cdn, expected.iter().collect::<Vec<_>>());
}

/// A `kubernetes.io/dockerconfigjson` Secret for `host`.
fn pull_secret(name: &str, host: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = json!({"auths": {host: {"auth": auth}}}).to_string();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: kubernetes.io/dockerconfigjson\nstringData:\n  .dockerconfigjson: '{config}'\n"
    )
}

/// imagePullSecrets, as the kubelet reads them: a pod pulls from two registries that each
/// want their own credentials, one Secret for each; a wrong Secret first does not stop the
/// right one after it; a missing one is a warning; a pod without them gets the registry's
/// refusal in its status and events, even with the image stored (`Always`).
#[test]
fn image_pull_secrets_let_a_pod_pull_from_registries_that_need_them() {
    let _guard = crate::support::shared();
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = LocalRegistry::start(
        &dir_a,
        &dir_a.join("storage"),
        "127.0.0.1",
        Some(("edge", "pw-a")),
        None,
    );
    let b = LocalRegistry::start(
        &dir_b,
        &dir_b.join("storage"),
        "127.0.0.1",
        Some(("robot", "pw-b")),
        None,
    );
    let bb = busybox();
    for (registry, user, password) in [(&a, "edge", "pw-a"), (&b, "robot", "pw-b")] {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let push =
            Pusher { port: registry.port, auth: vec![("Authorization", format!("Basic {basic}"))] };
        push.image(REPO, "latest", &bb);
    }
    let (host_a, host_b) = (a.host(), b.host());
    let agent = crate::support::Agent::start();
    agent.apply(
        "secrets.yaml",
        &format!(
            "{}---\n{}---\n{}",
            pull_secret("cred-a", &host_a, "edge", "pw-a"),
            pull_secret("cred-b", &host_b, "robot", "pw-b"),
            pull_secret("stale-a", &host_a, "edge", "old-password"),
        ),
    );
    let container = |name: &str, host: &str| {
        format!("  - name: {name}\n    image: {host}/{REPO}:latest\n    imagePullPolicy: Always\n    command: [\"sh\", \"-c\", \"echo up; sleep 3600\"]\n")
    };
    let pulled = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pulled\nspec:\n  terminationGracePeriodSeconds: 2\n  imagePullSecrets: [{{name: stale-a}}, {{name: cred-a}}, {{name: cred-b}}, {{name: gone}}]\n  containers:\n{}{}",
        container("from-a", &host_a),
        container("from-b", &host_b)
    );
    agent.apply("pulled.yaml", &pulled);
    let denied = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: denied\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n{}",
        container("from-a", &host_a)
    );
    let timeout = Duration::from_secs(60);
    agent.wait_logs("pulled", "from-a", "up", timeout);
    agent.wait_logs("pulled", "from-b", "up", timeout);
    // The image is stored now: a refusal (401) is still a failed pull under `Always`; only an
    // unreachable registry falls back to the stored copy.
    agent.apply("denied.yaml", &denied);
    let p = agent.wait_pod("denied", timeout, |p| {
        let reason = &crate::support::container_status(p, "from-a")["state"]["waiting"]["reason"];
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
    // Events are published with the next step after the status: wait for them.
    let deadline = Instant::now() + timeout;
    let events = loop {
        let (_, events) = agent.get("/api/v1/namespaces/default/events");
        let events = events["items"].as_array().cloned().unwrap_or_default();
        let failed = |e: &&serde_json::Value| {
            e["involvedObject"]["name"] == "denied" && e["reason"] == "Failed"
        };
        if events.iter().any(|e| failed(&e)) || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let of = |pod: &str, reason: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let failed = of("denied", "Failed");
    assert!(
        failed.iter().any(|m| m.contains(&format!("{host_a} refused anonymous access to {REPO}"))),
        "{failed:?} ({p})"
    );
    let warning = of("pulled", "FailedToRetrieveImagePullSecret");
    assert!(
        warning.iter().any(|m| m == "Unable to retrieve some image pull secrets (gone); attempting to pull the image may not succeed."),
        "{warning:?}"
    );
    let all = serde_json::to_string(&events).unwrap();
    for secret in ["pw-a", "pw-b", "old-password"] {
        assert!(!all.contains(secret), "a credential in the events");
    }
    assert!(!agent.agent_log().iter().any(|l| l.contains("pw-a") || l.contains("old-password")));
}
