//! `outpost kubeconfig`: on the device, a kubeconfig for kubectl elsewhere (the CA, a new
//! token or client certificate with a role), and token revocation. Works on the state
//! directory while the agent runs: the agent reads tokens from the database per request.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine;
use serde_json::json;

use crate::api::pki::{self, Ca};
use crate::api::Access;
use crate::store::{StoreError, Tokens};

#[derive(Debug, clap::Args)]
pub struct KubeconfigArgs {
    /// The URL kubectl will use: https://HOST:PORT of `outpost run --secure-listen`. HOST must
    /// be one of the serving certificate's names (the hostname, the host's addresses, --tls-san).
    #[arg(long, value_name = "URL", required_unless_present_any = ["revoke", "list"])]
    pub server: Option<String>,
    /// `view` (every read, watch and log) or `admin` (also exec, attach, cp, port-forward).
    #[arg(long, value_name = "ROLE", value_parser = ["view", "admin"], required_unless_present_any = ["revoke", "list"])]
    pub role: Option<String>,
    /// The user's name, as the agent logs it and `kubectl auth whoami` shows it (default:
    /// the role and a random suffix).
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Authenticate with a client certificate (CN = user, O = role, valid 365 days) instead of
    /// a token. Certificates cannot be revoked before they expire; tokens can.
    #[arg(long)]
    pub client_certificate: bool,
    /// The token is refused after this long (Go duration syntax, as `kubectl create token
    /// --duration`: `30m`, `24h`, `720h`); default: until revoked.
    #[arg(long, value_name = "DURATION", value_parser = parse_expiry, conflicts_with = "client_certificate")]
    pub expires_in: Option<std::time::Duration>,
    /// Embed this CA certificate (PEM) instead of the device's: when `outpost run
    /// --tls-cert-file` serves a certificate another CA signed.
    #[arg(long, value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
    /// Revoke NAME's token: refused from the next request on.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["server", "role", "user", "list"])]
    pub revoke: Option<String>,
    /// List the tokens (names, roles, ages; never the tokens).
    #[arg(long, conflicts_with_all = ["server", "role", "user"])]
    pub list: bool,
    /// outpost's state directory (the agent's --state).
    #[arg(
        long,
        visible_alias = "state-dir",
        value_name = "DIR",
        default_value = "/var/lib/outpost",
        env = "OUTPOST_STATE"
    )]
    pub state: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Pki(#[from] pki::PkiError),
    #[error("{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    #[error("state directory {0} does not exist: give the agent's --state")]
    NoState(PathBuf),
    #[error("--certificate-authority {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("no token named {0:?} (`outpost kubeconfig --list` shows them; client certificates cannot be revoked, they expire)")]
    NoSuchToken(String),
}

/// `--expires-in`: a positive Go duration.
fn parse_expiry(s: &str) -> Result<std::time::Duration, String> {
    match crate::format::parse_go_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than 0, e.g. 24h".into()),
        Err(_) => Err(format!("{s:?}: expected a duration such as 30m, 24h or 720h")),
    }
}

pub fn run(args: &KubeconfigArgs) -> ExitCode {
    match execute(args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Does what `args` ask, printing to `out`.
pub fn execute(args: &KubeconfigArgs, out: &mut dyn std::io::Write) -> Result<(), KubeconfigError> {
    if !args.state.is_dir() {
        return Err(KubeconfigError::NoState(args.state.clone()));
    }
    let db = args.state.join(crate::store::DATABASE);
    let now = crate::format::now().as_second();
    if let Some(name) = &args.revoke {
        if !Tokens::open(&db)?.revoke(name)? {
            return Err(KubeconfigError::NoSuchToken(name.clone()));
        }
        eprintln!("revoked the token of {name}");
        return Ok(());
    }
    if args.list {
        let _ = writeln!(out, "{:<24} {:<6} {:<8} EXPIRES", "NAME", "ROLE", "AGE");
        let human = |secs: i64| {
            crate::format::human_duration(std::time::Duration::from_secs(secs.max(0) as u64), false)
        };
        for t in Tokens::open(&db)?.list()? {
            let expires = match t.expires {
                None => "never".to_string(),
                Some(e) if e <= now => "expired".to_string(),
                Some(e) => format!("in {}", human(e - now)),
            };
            let _ = writeln!(
                out,
                "{:<24} {:<6} {:<8} {expires}",
                t.name,
                t.role,
                human(now - t.created)
            );
        }
        return Ok(());
    }
    let server = args.server.as_deref().unwrap_or_default();
    let host = server_host(server)?;
    let access = args.role.as_deref().and_then(Access::from_role).unwrap_or(Access::View);
    let user = match &args.user {
        Some(user) => valid_user(user)?,
        None => format!("{}-{}", access.role(), &crate::api::new_token()[8..14].to_lowercase()),
    };
    let dir = pki::dir(&args.state);
    let ca = Ca::ensure(&dir, now)?;
    let ca_pem = match &args.certificate_authority {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| KubeconfigError::CaFile { path: path.clone(), message: e.to_string() })?,
        None => {
            warn_unless_named(&dir, &host);
            ca.cert_pem().to_string()
        }
    };
    let credentials = if args.client_certificate {
        let (cert, key) = ca.issue_client(&user, access, now)?;
        json!({"client-certificate-data": b64(&cert), "client-key-data": b64(&key)})
    } else {
        let token = crate::api::new_token();
        let expires = args.expires_in.map(|d| now.saturating_add(d.as_secs() as i64));
        Tokens::open(&db)?.add(&user, access.role(), &token, now, expires)?;
        json!({"token": token})
    };
    let cluster = format!("outpost-{}", hostname());
    let context = format!("{user}@{cluster}");
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(&ca_pem)}}],
        "users": [{"name": context, "user": credentials}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": context, "namespace": "default"}}],
        "current-context": context,
    });
    let yaml = serde_yaml::to_string(&config).unwrap_or_default();
    let _ = out.write_all(yaml.as_bytes());
    eprintln!(
        "made {} credentials for {user} with the {} role",
        if args.client_certificate { "client certificate" } else { "token" },
        access.role()
    );
    Ok(())
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// HOST of `https://HOST[:PORT][/]`.
fn server_host(server: &str) -> Result<String, KubeconfigError> {
    let invalid = |message: String| KubeconfigError::Invalid { flag: "--server", message };
    let Some(rest) = server.strip_prefix("https://") else {
        return Err(invalid(format!(
            "{server:?} is not https://HOST:PORT: kubectl sends credentials over HTTPS only (the address of `outpost run --secure-listen`)"
        )));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err(invalid(format!("{server:?} names no host")));
    }
    Ok(host.to_string())
}

fn valid_user(user: &str) -> Result<String, KubeconfigError> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && user.bytes().all(|c| c.is_ascii_alphanumeric() || b"._@-".contains(&c));
    if !ok {
        return Err(KubeconfigError::Invalid {
            flag: "--user",
            message: format!("{user:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"),
        });
    }
    Ok(user.to_string())
}

/// kubectl refuses a certificate that does not name the host it dialled: say so now.
fn warn_unless_named(dir: &Path, host: &str) {
    let Some(names) = pki::serving_names(dir) else { return };
    if !names.iter().any(|n| n == host) {
        eprintln!(
            "warning: {host} is not among the serving certificate's names ({}): kubectl will refuse it; restart the agent with --tls-san {host}",
            names.join(", ")
        );
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_must_be_https_and_name_a_host() {
        assert_eq!(server_host("https://edge:10250").unwrap(), "edge");
        assert_eq!(server_host("https://192.168.1.5:10250/").unwrap(), "192.168.1.5");
        assert_eq!(server_host("https://[fd00::5]:10250").unwrap(), "fd00::5");
        assert_eq!(server_host("https://edge").unwrap(), "edge");
        let e = server_host("http://edge:10250").unwrap_err().to_string();
        assert!(e.starts_with("--server") && e.contains("HTTPS only"), "{e}");
        assert!(server_host("https://:1").is_err());
    }

    #[test]
    fn user_names_are_plain() {
        assert!(valid_user("alice@laptop").is_ok());
        for bad in ["", "a b", "x\ny", &"a".repeat(65)] {
            assert!(valid_user(bad).unwrap_err().to_string().starts_with("--user"), "{bad:?}");
        }
    }
}
