//! `runAsNonRoot`, checked as the kubelet's `verifyRunAsNonRoot` does before it creates a
//! container: the effective `runAsUser` (container over pod) decides when set; else the
//! image's `USER` as containerd reports it (the part before `:`, numeric or a name). A name
//! cannot be verified without the image's files, so it is refused, as by the kubelet.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::SpecError;

/// What the image says about its user: containerd's `getUserFromImage`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ImageUser {
    Uid(i64),
    Name(String),
}

fn image_user(user: Option<&str>) -> ImageUser {
    let user = user.unwrap_or_default();
    // No USER runs as root (the kubelet's getImageUser treats "neither set" as uid 0).
    if user.is_empty() {
        return ImageUser::Uid(0);
    }
    let user = user.split(':').next().unwrap_or_default();
    match user.parse::<i64>() {
        Ok(uid) => ImageUser::Uid(uid),
        Err(_) => ImageUser::Name(user.to_string()),
    }
}

/// The kubelet's `format.Pod`: `name_namespace(uid)`.
fn pod_fmt(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// `Err` when `runAsNonRoot` is true and the container would (or might) run as root.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_user_field: Option<&str>,
) -> Result<(), SpecError> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let non_root = sc.and_then(|s| s.run_as_non_root).or(pod_sc.and_then(|s| s.run_as_non_root));
    if non_root != Some(true) {
        return Ok(());
    }
    let err = |problem| SpecError::RunAsNonRoot {
        pod: pod_fmt(pod),
        container: container.name.clone(),
        problem,
    };
    if let Some(uid) = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user)) {
        return if uid == 0 { Err(err(NonRootProblem::RunAsUserRoot)) } else { Ok(()) };
    }
    match image_user(image_user_field) {
        ImageUser::Uid(0) => Err(err(NonRootProblem::ImageRoot)),
        ImageUser::Uid(uid) if !(1..=i64::from(i32::MAX)).contains(&uid) => {
            Err(err(NonRootProblem::ImageInvalidUid(uid)))
        }
        ImageUser::Uid(_) => Ok(()),
        ImageUser::Name(name) => Err(err(NonRootProblem::ImageUserName(name))),
    }
}

/// How a container breaks `runAsNonRoot`; the start of the kubelet's message.
#[derive(Debug, thiserror::Error)]
pub enum NonRootProblem {
    #[error("container's runAsUser breaks non-root policy")]
    RunAsUserRoot,
    #[error("container has runAsNonRoot and image will run as root")]
    ImageRoot,
    #[error("container has runAsNonRoot and image has non-numeric user ({0}), cannot verify user is non-root")]
    ImageUserName(String),
    #[error("container has runAsNonRoot and image has an invalid user id ({0}). (Must be 1-(2147483647)): must be between 0 and 2147483647, inclusive")]
    ImageInvalidUid(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        let mut p: Pod = serde_yaml::from_str(yaml).expect("test pod");
        p.metadata.uid = Some("u-1".into());
        p
    }

    fn check(yaml: &str, image: Option<&str>) -> Result<(), String> {
        let p = pod(yaml);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        verify_run_as_non_root(&p, &c, image).map_err(|e| {
            assert_eq!(e.reason(), "CreateContainerConfigError");
            e.to_string()
        })
    }

    const POD_NON_ROOT: &str = "
metadata: {name: web, namespace: default}
spec:
  securityContext: {runAsNonRoot: true}
  containers: [{name: app, image: busybox}]
";

    /// The kubelet's messages verbatim, with `format.Pod` quoted by `%q`.
    #[test]
    fn image_running_as_root_is_refused_with_the_kubelets_message() {
        let want = Err("container has runAsNonRoot and image will run as root (pod: \"web_default(u-1)\", container: app)".to_string());
        assert_eq!(check(POD_NON_ROOT, None), want);
        assert_eq!(check(POD_NON_ROOT, Some("")), want);
        assert_eq!(check(POD_NON_ROOT, Some("0")), want);
        assert_eq!(check(POD_NON_ROOT, Some("0:1000")), want);
        assert_eq!(check(POD_NON_ROOT, Some("1000")), Ok(()));
        // Only the user part counts: a named group does not need resolving.
        assert_eq!(check(POD_NON_ROOT, Some("1000:staff")), Ok(()));
    }

    #[test]
    fn a_named_image_user_cannot_be_verified() {
        assert_eq!(
            check(POD_NON_ROOT, Some("nobody:nogroup")),
            Err("container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: \"web_default(u-1)\", container: app)".into())
        );
    }

    #[test]
    fn run_as_user_decides_container_over_pod() {
        let root = "
metadata: {name: web, namespace: ns}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000}
  containers: [{name: app, securityContext: {runAsUser: 0}}]
";
        assert_eq!(
            check(root, Some("1000")),
            Err("container's runAsUser breaks non-root policy (pod: \"web_ns(u-1)\", container: app)".into())
        );
        // The pod's runAsUser covers an image that would run as root or by name.
        let pod_user = "
metadata: {name: web, namespace: ns}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000}
  containers: [{name: app}]
";
        assert_eq!(check(pod_user, None), Ok(()));
        assert_eq!(check(pod_user, Some("nobody")), Ok(()));
    }

    #[test]
    fn run_as_non_root_container_over_pod_and_unset_allows_root() {
        let off = "
metadata: {name: web, namespace: ns}
spec:
  securityContext: {runAsNonRoot: true}
  containers: [{name: app, securityContext: {runAsNonRoot: false}}]
";
        assert_eq!(check(off, None), Ok(()));
        let on = "
metadata: {name: web, namespace: ns}
spec:
  containers: [{name: app, securityContext: {runAsNonRoot: true}}]
";
        assert!(check(on, None).is_err());
        let unset = "
metadata: {name: web, namespace: ns}
spec:
  containers: [{name: app}]
";
        assert_eq!(check(unset, None), Ok(()));
    }

    #[test]
    fn an_out_of_range_image_uid_is_refused() {
        let e = check(POD_NON_ROOT, Some("4294967296")).unwrap_err();
        assert!(
            e.starts_with(
                "container has runAsNonRoot and image has an invalid user id (4294967296)"
            ),
            "{e}"
        );
    }
}
