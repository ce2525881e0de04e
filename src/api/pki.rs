//! The secure listener's certificates, in `<state>/pki/`: a CA made on first use and kept
//! (kubeconfigs embed it; it signs client certificates), and a serving certificate it signs
//! for the device's names and addresses, made again when they change or it nears its end.
//! Keys are ECDSA P-256, written 0600.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::x509;
use super::Access;

pub const DIR: &str = "pki";
pub const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
/// The serving certificate's end (unix seconds) and names, one per line: compared at start.
const SERVER_NAMES: &str = "server.names";

const DAY: i64 = 86_400;
const CA_DAYS: i64 = 3650;
const SERVING_DAYS: i64 = 365;
/// A serving certificate this close to its end is made again.
const RENEW_DAYS: i64 = 30;
/// Client certificates `outpost kubeconfig --client-certificate` issues.
pub const CLIENT_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot make the {what}: {source}")]
    Generate { what: &'static str, source: rcgen::Error },
    #[error("{path}: not a valid {what}; move it away and a new one is made")]
    Invalid { path: PathBuf, what: &'static str },
}

type Result<T> = std::result::Result<T, PkiError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

/// The directory of `state`'s certificates.
pub fn dir(state: &Path) -> PathBuf {
    state.join(DIR)
}

/// The device's CA, loaded or made.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
    /// Rebuilt from the certificate: what signed certificates name as their issuer.
    params: CertificateParams,
}

impl Ca {
    /// Loads `dir`'s CA, making it (and `dir`, 0700) the first time. Serialised by a lock
    /// file: the agent and `outpost kubeconfig` may both get here first.
    pub fn ensure(dir: &Path, now: i64) -> Result<Self> {
        create_private_dir(dir)?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !cert_path.exists() || !key_path.exists() {
            let key = generate_key("CA key")?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            let name = format!("outpost-ca@{}-{now}", hostname());
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params, now, CA_DAYS);
            let cert = params
                .self_signed(&key)
                .map_err(|source| PkiError::Generate { what: "CA certificate", source })?;
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
            log::info!("api: made a new CA in {}", cert_path.display());
        }
        Self::load(&cert_path, &key_path)
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert_pem = std::fs::read_to_string(cert_path).map_err(io(cert_path))?;
        let invalid = |path: &Path, what| PkiError::Invalid { path: path.to_path_buf(), what };
        let cert_der = pem_der(&cert_pem, "CERTIFICATE")
            .ok_or_else(|| invalid(cert_path, "PEM certificate"))?;
        let subject = x509::subject(&cert_der).ok_or_else(|| invalid(cert_path, "certificate"))?;
        let key_pem = std::fs::read_to_string(key_path).map_err(io(key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| invalid(key_path, "PEM private key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let cn = subject.common_name.ok_or_else(|| invalid(cert_path, "CA certificate (no CN)"))?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self { cert_pem, cert_der, key, params })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    fn sign(
        &self,
        params: &CertificateParams,
        key: &KeyPair,
        what: &'static str,
    ) -> Result<String> {
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert =
            params.signed_by(key, &issuer).map_err(|source| PkiError::Generate { what, source })?;
        Ok(cert.pem())
    }

    /// A client certificate for `user` with `role` (CN = user, O = role, as the API server
    /// reads them): (certificate PEM, key PEM).
    pub fn issue_client(&self, user: &str, role: Access, now: i64) -> Result<(String, String)> {
        let key = generate_key("client key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, role.role());
        params.distinguished_name.push(DnType::CommonName, user);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, CLIENT_DAYS);
        let cert = self.sign(&params, &key, "client certificate")?;
        Ok((cert, key.serialize_pem()))
    }

    /// The serving certificate and key (PEM) for `names`: the one on disk if it was made for
    /// them and is not near its end, else a new one.
    pub fn serving(&self, dir: &Path, names: &[String], now: i64) -> Result<(String, String)> {
        let (cert_path, key_path, names_path) =
            (dir.join(SERVER_CERT), dir.join(SERVER_KEY), dir.join(SERVER_NAMES));
        let wanted = names.join("\n");
        if let Ok(recorded) = std::fs::read_to_string(&names_path) {
            let (end, recorded) = recorded.split_once('\n').unwrap_or((&recorded, ""));
            let fresh = end.parse::<i64>().is_ok_and(|end| end - now > RENEW_DAYS * DAY);
            if fresh && recorded == wanted {
                if let (Ok(cert), Ok(key)) =
                    (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path))
                {
                    return Ok((cert, key));
                }
            }
            log::info!(
                "api: the serving certificate is for other names or near its end: making a new one"
            );
        }
        let key = generate_key("serving key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("{}@outpost", hostname()));
        params.subject_alt_names = names.iter().filter_map(|n| san(n)).collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let end = validity(&mut params, now, SERVING_DAYS);
        let cert = self.sign(&params, &key, "serving certificate")?;
        let key = key.serialize_pem();
        write_file(&key_path, key.as_bytes(), 0o600)?;
        write_file(&cert_path, cert.as_bytes(), 0o644)?;
        write_file(&names_path, format!("{end}\n{wanted}").as_bytes(), 0o644)?;
        log::info!("api: made a serving certificate for {}", names.join(", "));
        Ok((cert, key))
    }
}

/// The names of the serving certificate made last, if one was.
pub fn serving_names(dir: &Path) -> Option<Vec<String>> {
    let recorded = std::fs::read_to_string(dir.join(SERVER_NAMES)).ok()?;
    Some(recorded.lines().skip(1).map(str::to_string).collect())
}

fn san(name: &str) -> Option<SanType> {
    match name.parse::<IpAddr>() {
        Ok(ip) => Some(SanType::IpAddress(ip)),
        Err(_) => name.to_string().try_into().ok().map(SanType::DnsName),
    }
}

fn generate_key(what: &'static str) -> Result<KeyPair> {
    KeyPair::generate().map_err(|source| PkiError::Generate { what, source })
}

/// From an hour ago (clocks differ) for `days`; returns the end.
fn validity(params: &mut CertificateParams, now: i64, days: i64) -> i64 {
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    let end = now + days * DAY;
    params.not_before = at(now - 3600);
    params.not_after = at(end);
    end
}

/// The names a serving certificate carries: the hostname, `localhost`, what the operator
/// adds (`--tls-san`), then the loopback and host addresses (IPv6 link-local ones need a
/// zone, which a certificate cannot name).
pub fn names(
    hostname: &str,
    addrs: impl IntoIterator<Item = IpAddr>,
    extra: &[String],
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    add(hostname.to_string());
    add("localhost".into());
    extra.iter().for_each(|n| add(n.clone()));
    let mut ips: Vec<IpAddr> = addrs
        .into_iter()
        .chain([IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)])
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect();
    ips.sort();
    ips.into_iter().for_each(|ip| add(ip.to_string()));
    names
}

/// This device's names now (see [`names`]).
pub fn device_names(extra: &[String]) -> Vec<String> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map(|ifs| {
            ifs.filter_map(|i| i.address)
                .filter_map(|a| {
                    a.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    names(&hostname(), addrs, extra)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The first PEM block labelled `label`, decoded.
pub fn pem_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Written beside and renamed into place, so a reader never sees half a key; created with its
/// final mode, so a key is never readable by others, not even for a moment.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_hold_the_hostname_localhost_extras_and_addresses_without_link_local() {
        let addrs: Vec<IpAddr> = ["192.168.1.20", "fe80::1", "2001:db8::5", "127.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            names("edge-7", addrs, &["edge.example.com".into(), "localhost".into()]),
            [
                "edge-7",
                "localhost",
                "edge.example.com",
                "127.0.0.1",
                "192.168.1.20",
                "::1",
                "2001:db8::5"
            ]
        );
    }

    #[test]
    fn the_ca_is_kept_and_the_serving_certificate_made_again_when_names_change_or_it_ages() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let now = 1_800_000_000;
        let ca = Ca::ensure(&pki, now).unwrap();
        let mode = |f: &str| std::fs::metadata(pki.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(CA_KEY), mode(".")), (0o600, 0o700));
        let again = Ca::ensure(&pki, now + 10).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem(), "the CA is made once");

        let names = vec!["edge".to_string(), "127.0.0.1".to_string()];
        let (first, _) = ca.serving(&pki, &names, now).unwrap();
        assert_eq!(mode(SERVER_KEY), 0o600);
        assert_eq!(again.serving(&pki, &names, now + DAY).unwrap().0, first, "kept");
        let moved = vec!["edge".to_string(), "10.0.0.9".to_string()];
        let (second, _) = again.serving(&pki, &moved, now + DAY).unwrap();
        assert_ne!(second, first, "new names, new certificate");
        let late = now + (SERVING_DAYS - RENEW_DAYS + 1) * DAY;
        assert_ne!(again.serving(&pki, &moved, late).unwrap().0, second, "near its end");
    }

    #[test]
    fn certificates_verify_against_the_ca_with_rustls() {
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let dir = tempfile::tempdir().unwrap();
        let now = crate::format::now().as_second();
        let ca = Ca::ensure(dir.path(), now).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert_der().to_vec())).unwrap();
        let roots = std::sync::Arc::new(roots);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let (server, _) = ca.serving(dir.path(), &["edge".into(), "10.1.2.3".into()], now).unwrap();
        let server = CertificateDer::from(pem_der(&server, "CERTIFICATE").unwrap());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now as u64));
        for name in ["edge", "10.1.2.3"] {
            let name = ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&server, &[], &name, &[], at).unwrap();
        }
        let other = ServerName::try_from("elsewhere").unwrap();
        assert!(verifier.verify_server_cert(&server, &[], &other, &[], at).is_err());

        let (client, _) = ca.issue_client("alice", Access::Admin, now).unwrap();
        let client = CertificateDer::from(pem_der(&client, "CERTIFICATE").unwrap());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        verifier.verify_client_cert(&client, &[], at).unwrap();
        let subject = x509::subject(&client).unwrap();
        assert_eq!(subject.common_name.as_deref(), Some("alice"));
        assert_eq!(subject.organizations, ["admin"]);
    }
}
