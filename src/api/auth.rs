//! Who is calling and what they may do: bearer tokens (`outpost kubeconfig`, stored hashed)
//! and client certificates signed by the device's CA (CN = user, O = role) on the secure
//! listener; the role is the request's [`Access`]. Failures are rate-limited per address and
//! logged, one line, never the token.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::ratelimit::FailureLimiter;
use super::routes::{self, Reply};
use super::x509::Subject;
use super::{Access, ApiConfig};
use crate::store::Tokens;

/// Who is at the other end of a connection: how each of its requests is authenticated.
#[derive(Clone)]
pub enum Peer {
    /// `--listen`: anyone, read-only (with `--api-token-file`, who sends that token).
    Plain,
    /// `--api-socket`: root.
    Unix,
    /// `--secure-listen`: a bearer token per request, else the connection's verified client
    /// certificate.
    Secure { auth: Arc<Authenticator>, ip: IpAddr, certificate: Option<Identity> },
}

impl Peer {
    /// The caller of one request with this `Authorization` header.
    pub fn identify(
        &self,
        authorization: Option<&str>,
        config: &ApiConfig,
    ) -> Result<Identity, Reply> {
        match self {
            // Only root can open the unix socket (mode 0600).
            Peer::Unix => Ok(Identity::local_root()),
            Peer::Plain => match &config.token {
                // `Authorization: Bearer <token>`, compared without an early exit.
                Some(token)
                    if !authorization
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .is_some_and(|given| constant_time_eq(given, token)) =>
                {
                    Err(routes::status(
                        401,
                        "Unauthorized",
                        "Unauthorized: a valid bearer token is required",
                    ))
                }
                _ => Ok(Identity::anonymous()),
            },
            Peer::Secure { auth, ip, certificate } => {
                auth.authenticate(*ip, authorization, certificate.as_ref(), Instant::now())
            }
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    pub access: Access,
}

impl Identity {
    fn new(user: &str, access: Access) -> Self {
        Self {
            user: user.to_string(),
            groups: vec![access.role().to_string(), "system:authenticated".into()],
            access,
        }
    }

    /// The plain listener's caller: anyone who can reach it, read-only.
    pub fn anonymous() -> Self {
        Self {
            user: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            access: Access::View,
        }
    }

    /// Root on the unix socket (mode 0600).
    pub fn local_root() -> Self {
        Self::new("root", Access::Admin)
    }

    /// A verified client certificate's caller: its CN with the strongest role its O's name;
    /// `None` when it names no role.
    pub fn from_certificate(subject: &Subject) -> Option<Self> {
        let user = subject.common_name.as_deref().filter(|u| !u.is_empty())?;
        let roles = || subject.organizations.iter().filter_map(|o| Access::from_role(o));
        let access =
            if roles().any(|a| a == Access::Admin) { Access::Admin } else { roles().next()? };
        let mut identity = Self::new(user, access);
        identity.groups =
            subject.organizations.iter().cloned().chain(["system:authenticated".into()]).collect();
        Some(identity)
    }
}

/// The secure listener's credential check.
pub struct Authenticator {
    tokens: Tokens,
    /// `--api-token-file`'s token, accepted with the view role.
    token_file: Option<String>,
    failures: Mutex<FailureLimiter>,
}

impl Authenticator {
    pub fn new(tokens: Tokens, token_file: Option<String>) -> Self {
        Self { tokens, token_file, failures: Mutex::default() }
    }

    /// The caller of one request from `peer`: its bearer token (the `Authorization` header's
    /// value) if it sends one, else its verified client certificate's identity.
    pub fn authenticate(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        certificate: Option<&Identity>,
        now: Instant,
    ) -> Result<Identity, Reply> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(wait) = failures.check(peer, now) {
            let message = format!(
                "too many failed authentication attempts from {peer}: try again in {} s",
                wait.as_secs() + 1
            );
            return Err(routes::status(429, "TooManyRequests", &message));
        }
        let Some(header) = authorization else {
            return certificate.cloned().ok_or_else(|| {
                log::debug!("api: no credentials from {peer}");
                unauthorized()
            });
        };
        let found = match header.strip_prefix("Bearer ").map(str::trim) {
            Some(token) if !token.is_empty() => self.lookup(token),
            _ => Err("the Authorization header is not a bearer token"),
        };
        found
            .inspect_err(|why| {
                failures.failed(peer, now);
                log::warn!("api: authentication failed from {peer}: {why}");
            })
            .map_err(|why| match why {
                EXPIRED => routes::status(
                    401,
                    "Unauthorized",
                    "Unauthorized: the token has expired; ask the device's operator for a new \
                     kubeconfig (`outpost kubeconfig`)",
                ),
                _ => unauthorized(),
            })
    }

    fn lookup(&self, token: &str) -> Result<Identity, &'static str> {
        if self.token_file.as_deref().is_some_and(|t| constant_time_eq(t, token)) {
            return Ok(Identity::new("api-token-file", Access::View));
        }
        match self.tokens.find(token) {
            Ok(Some(record))
                if record.expires.is_some_and(|e| e <= crate::format::now().as_second()) =>
            {
                log::info!("api: the token of {} expired", record.name);
                Err(EXPIRED)
            }
            Ok(Some(record)) => match Access::from_role(&record.role) {
                Some(access) => Ok(Identity::new(&record.name, access)),
                None => Err("the token's role is unknown"),
            },
            Ok(None) => Err("unknown or revoked token"),
            Err(e) => {
                log::error!("api: cannot check a token: {e}");
                Err("the token database cannot be read")
            }
        }
    }
}

/// Why a known token is refused once its time is up (`outpost kubeconfig --expires-in`).
const EXPIRED: &str = "the token has expired";

/// What kubectl prints as `error: You must be logged in to the server (Unauthorized)`.
fn unauthorized() -> Reply {
    routes::status(401, "Unauthorized", "Unauthorized")
}

/// `a == b` in time that depends only on the lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token: 32 bytes, URL-safe base64.
pub fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    // ring's system random (getrandom); it does not fail on Linux.
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system's random source");
    format!("outpost-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Subresources that run code in a pod or move its bytes: the admin role's alone.
pub const ADMIN_SUBRESOURCES: [&str; 3] = ["exec", "attach", "portforward"];

/// Refuses what `identity` may not do (403, worded as the API server's RBAC refusal), before
/// routing: whatever serves exec, attach or port-forward, a view caller never reaches it. The
/// kubelet's own paths for them (`/exec/NS/POD/C`, `/attach`, `/portForward`, `/run`) too.
pub fn authorize(identity: &Identity, method: &str, path: &str) -> Result<(), Reply> {
    if identity.access == Access::Admin {
        return Ok(());
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (ns, name, sub) = match segments[..] {
        ["api", "v1", "namespaces", ns, "pods", name, sub] if ADMIN_SUBRESOURCES.contains(&sub) => {
            (ns, name, sub)
        }
        [kubelet @ ("exec" | "attach" | "portForward" | "run"), ns, name, ..] => {
            let sub = if kubelet == "portForward" { "portforward" } else { kubelet };
            (ns, name, if sub == "run" { "exec" } else { sub })
        }
        _ => return Ok(()),
    };
    let verb = if method == "GET" { "get" } else { "create" };
    Err(routes::status(
        403,
        "Forbidden",
        &format!(
            "pods \"{name}\" is forbidden: User \"{}\" cannot {verb} resource \"pods/{sub}\" in API group \"\" in the namespace \"{ns}\": the view role reads only; {sub} needs the admin role",
            identity.user
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> (tempfile::TempDir, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(&dir.path().join("outpost.db")).unwrap();
        tokens.add("alice", "admin", "tok-alice", 1, None).unwrap();
        tokens.add("bob", "view", "tok-bob", 1, None).unwrap();
        (dir, Authenticator::new(tokens, Some("file-token".into())))
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn tokens_and_certificates_give_their_role_and_the_rest_is_401() {
        let (_dir, auth) = authenticator();
        let now = Instant::now();
        let who = |header: Option<&str>, cert: Option<&Identity>| {
            auth.authenticate(PEER, header, cert, now).map(|i| (i.user, i.access))
        };
        assert_eq!(who(Some("Bearer tok-alice"), None), Ok(("alice".into(), Access::Admin)));
        assert_eq!(who(Some("Bearer tok-bob"), None), Ok(("bob".into(), Access::View)));
        assert_eq!(
            who(Some("Bearer file-token"), None),
            Ok(("api-token-file".into(), Access::View))
        );
        let carol = Identity::new("carol", Access::Admin);
        assert_eq!(who(None, Some(&carol)), Ok(("carol".into(), Access::Admin)));
        // A token sent beside a certificate is the credential checked.
        assert_eq!(who(Some("Bearer tok-bob"), Some(&carol)), Ok(("bob".into(), Access::View)));
        for (header, cert) in [
            (None, None),
            (Some("Bearer nope"), None),
            (Some("Bearer nope"), Some(&carol)),
            (Some("Basic dXNlcjpwdw=="), None),
            (Some("Bearer "), None),
        ] {
            let reply = auth.authenticate(PEER, header, cert, now).unwrap_err();
            assert_eq!(reply.status, 401, "{header:?}");
            assert_eq!(reply.json()["reason"], "Unauthorized");
        }
    }

    #[test]
    fn an_expired_token_is_refused_with_a_message_that_says_so() {
        let (dir, auth) = authenticator();
        let tokens = Tokens::open(&dir.path().join("outpost.db")).unwrap();
        let now = crate::format::now().as_second();
        tokens.add("old", "admin", "tok-old", 1, Some(now - 1)).unwrap();
        tokens.add("fresh", "admin", "tok-fresh", 1, Some(now + 3600)).unwrap();
        let at = Instant::now();
        let fresh = auth.authenticate(PEER, Some("Bearer tok-fresh"), None, at).unwrap();
        assert_eq!((fresh.user.as_str(), fresh.access), ("fresh", Access::Admin));
        let reply = auth.authenticate(PEER, Some("Bearer tok-old"), None, at).unwrap_err();
        assert_eq!(reply.status, 401);
        let message = reply.json()["message"].as_str().unwrap();
        assert!(message.contains("expired") && message.contains("outpost kubeconfig"), "{message}");
    }

    #[test]
    fn a_revoked_token_is_refused_at_once() {
        let (dir, auth) = authenticator();
        let now = Instant::now();
        assert!(auth.authenticate(PEER, Some("Bearer tok-bob"), None, now).is_ok());
        // `outpost kubeconfig --revoke`, from another connection.
        Tokens::open(&dir.path().join("outpost.db")).unwrap().revoke("bob").unwrap();
        let reply = auth.authenticate(PEER, Some("Bearer tok-bob"), None, now).unwrap_err();
        assert_eq!(reply.status, 401);
    }

    #[test]
    fn failed_guesses_are_limited_per_address_and_then_nothing_is_checked() {
        let (_dir, auth) = authenticator();
        let now = Instant::now();
        for _ in 0..super::super::ratelimit::BURST as usize {
            let reply = auth.authenticate(PEER, Some("Bearer guess"), None, now).unwrap_err();
            assert_eq!(reply.status, 401);
        }
        let reply = auth.authenticate(PEER, Some("Bearer tok-alice"), None, now).unwrap_err();
        assert_eq!(reply.status, 429, "even a valid token waits: no oracle");
        assert!(reply.json()["message"].as_str().unwrap().contains("try again in"));
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(auth.authenticate(other, Some("Bearer tok-alice"), None, now).is_ok());
        // Requests without credentials (kubectl's first try) cost nothing.
        let fresh: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..50 {
            assert_eq!(auth.authenticate(fresh, None, None, now).unwrap_err().status, 401);
        }
    }

    #[test]
    fn a_certificate_names_its_user_and_strongest_role() {
        let subject = |cn: &str, o: &[&str]| Subject {
            common_name: Some(cn.into()),
            organizations: o.iter().map(|s| s.to_string()).collect(),
        };
        let id = Identity::from_certificate(&subject("dave", &["view", "admin"])).unwrap();
        assert_eq!((id.user.as_str(), id.access), ("dave", Access::Admin));
        assert_eq!(id.groups, ["view", "admin", "system:authenticated"]);
        let id = Identity::from_certificate(&subject("erin", &["ops", "view"])).unwrap();
        assert_eq!(id.access, Access::View);
        assert_eq!(Identity::from_certificate(&subject("frank", &["ops"])), None);
        assert_eq!(Identity::from_certificate(&subject("", &["admin"])), None);
    }

    #[test]
    fn exec_attach_and_port_forward_are_the_admins_alone() {
        let view = Identity::new("bob", Access::View);
        let admin = Identity::new("alice", Access::Admin);
        for sub in ADMIN_SUBRESOURCES {
            let path = format!("/api/v1/namespaces/default/pods/web/{sub}");
            let reply = authorize(&view, "POST", &path).unwrap_err();
            assert_eq!((reply.status, reply.json()["reason"].as_str()), (403, Some("Forbidden")));
            let message = reply.json()["message"].as_str().unwrap().to_string();
            assert!(
                message.contains(&format!("User \"bob\" cannot create resource \"pods/{sub}\"")),
                "{message}"
            );
            assert!(authorize(&admin, "POST", &path).is_ok());
        }
        for path in [
            "/exec/default/web/app",
            "/attach/default/web/app",
            "/portForward/default/web",
            "/run/default/web/app",
        ] {
            assert_eq!(authorize(&view, "POST", path).unwrap_err().status, 403, "{path}");
            assert!(authorize(&admin, "POST", path).is_ok());
        }
        for path in ["/api/v1/namespaces/default/pods/web/log", "/api/v1/pods", "/healthz", "/exec"]
        {
            assert!(authorize(&view, "GET", path).is_ok(), "{path}");
        }
    }

    #[test]
    fn tokens_are_random_and_url_safe() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), "outpost-".len() + 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'), "{a}");
    }
}
