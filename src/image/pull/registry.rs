//! One registry session: the endpoint of one repository, its authentication state
//! (basic, or a bearer token from the realm the registry names), manifests and blobs.

use hyper::header::{self, HeaderName};
use serde::Deserialize;

use super::auth::{self, Challenge, Credentials};
use super::error::PullFailure;
use super::PullOptions;
use crate::http_client::{Client, Response, Target};

/// Redirects followed per request (blob downloads are usually redirected once, to a CDN).
const MAX_REDIRECTS: usize = 5;
const MAX_TOKEN: u64 = 1 << 20;

pub struct Registry {
    client: Client,
    /// `host[:port]` as written in the reference (`docker.io`): for messages and credentials.
    name: String,
    base: Target,
    repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that worked (or is being tried); sent to `base` only.
    authorization: Option<String>,
}

/// Whether a registry is spoken to over plain http: loopback, or listed as insecure.
pub fn is_insecure(name: &str, options: &PullOptions) -> bool {
    let host = match name.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => name,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(host, "localhost" | "127.0.0.1" | "::1")
        || options.insecure_registries.iter().any(|r| r == name || r == host)
}

impl Registry {
    /// `name` is the reference's registry (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    pub fn new(
        name: &str,
        repository: &str,
        options: &PullOptions,
        credentials: Option<Credentials>,
    ) -> Result<Registry, PullFailure> {
        // Docker Hub's API lives on another host than its name.
        let api = if name == "docker.io" { "registry-1.docker.io" } else { name };
        let scheme = if is_insecure(name, options) { "http" } else { "https" };
        let base = Target::parse(&format!("{scheme}://{api}/v2/")).map_err(|reason| {
            PullFailure::Url { registry: name.to_string(), url: api.to_string(), reason }
        })?;
        Ok(Registry {
            client: Client::new(&options.ca_files, options.timeout)?,
            name: name.to_string(),
            base,
            repository: repository.to_string(),
            credentials,
            authorization: None,
        })
    }

    /// GETs a manifest (or index) by tag or digest: (body, Content-Type, Docker-Content-Digest).
    pub async fn manifest(
        &mut self,
        reference: &str,
        accept: &str,
        limit: u64,
        what: &str,
    ) -> Result<(Vec<u8>, Option<String>, Option<String>), PullFailure> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let response = self.get(&path, Some(accept), what).await?;
        let content_type = response.header("content-type").map(String::from);
        let digest = response.header("docker-content-digest").map(String::from);
        let body = response.bytes(limit, what).await?;
        Ok((body, content_type, digest))
    }

    /// GETs a blob; the body is left to the caller to stream.
    pub async fn blob(&mut self, digest: &str, what: &str) -> Result<Response, PullFailure> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        self.get(&path, None, what).await
    }

    /// A GET on the registry that authenticates when challenged (once) and follows
    /// redirects, sending credentials to the registry's own origin only.
    async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, PullFailure> {
        let start = Target { path: path.to_string(), ..self.base.clone() };
        let mut target = start.clone();
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            let mut headers: Vec<(HeaderName, String)> = Vec::new();
            if let Some(a) = accept {
                headers.push((header::ACCEPT, a.to_string()));
            }
            let origin = target.same_origin(&self.base);
            if let (true, Some(a)) = (origin, &self.authorization) {
                headers.push((header::AUTHORIZATION, a.clone()));
            }
            let response = self.client.get(&target, &headers).await?;
            match response.status {
                200 => return Ok(response),
                301 | 302 | 303 | 307 | 308 if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    let location = response.header("location").unwrap_or_default().to_string();
                    let next = target.join(&location).map_err(|reason| PullFailure::Url {
                        registry: self.name.clone(),
                        url: location.split('?').next().unwrap_or_default().to_string(),
                        reason,
                    })?;
                    if target.https && !next.https {
                        return Err(PullFailure::Url {
                            registry: self.name.clone(),
                            url: next.url(),
                            reason: "redirect from https to plain http",
                        });
                    }
                    log::debug!(
                        "registry {}: {what} redirected to {}",
                        self.name,
                        next.authority()
                    );
                    target = next;
                }
                401 if origin && !challenged => {
                    challenged = true;
                    let challenge = response.header("www-authenticate").map(String::from);
                    drop(response);
                    self.authenticate(challenge.as_deref()).await?;
                    target = start.clone();
                }
                401 | 403 if origin => {
                    let message = error_message(response).await;
                    return Err(self.unauthorized(message));
                }
                404 => return Err(PullFailure::NotFound { what: what.to_string() }),
                status => {
                    let url = response.url().to_string();
                    let message = error_message(response).await;
                    return Err(PullFailure::Status { method: "GET", url, status, message });
                }
            }
        }
    }

    fn unauthorized(&self, message: String) -> PullFailure {
        PullFailure::Unauthorized {
            registry: self.name.clone(),
            repository: self.repository.clone(),
            who: if self.credentials.is_some() {
                "the configured credentials"
            } else {
                "anonymous"
            },
            message,
        }
    }

    /// Answers a `WWW-Authenticate` challenge: basic with the credentials, or a bearer
    /// token from the realm (anonymous, or with the credentials).
    async fn authenticate(&mut self, header: Option<&str>) -> Result<(), PullFailure> {
        let challenge = header.and_then(auth::parse_challenge).ok_or_else(|| {
            // A 401 without a challenge: nothing to answer.
            self.unauthorized(String::new())
        })?;
        match challenge.scheme.as_str() {
            "basic" => match &self.credentials {
                Some(c) => {
                    self.authorization = Some(c.basic());
                    Ok(())
                }
                None => Err(self.unauthorized("authentication required".into())),
            },
            "bearer" => {
                let token = self.token(&challenge).await?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            _ => Err(PullFailure::Challenge {
                registry: self.name.clone(),
                challenge: header.unwrap_or_default().to_string(),
            }),
        }
    }

    /// The token dance of the distribution spec: GET realm?service=..&scope=.., with basic
    /// credentials when we have them.
    async fn token(&self, challenge: &Challenge) -> Result<String, PullFailure> {
        let realm = challenge.params.get("realm").cloned().unwrap_or_default();
        let bad_realm =
            |reason| PullFailure::Url { registry: self.name.clone(), url: realm.clone(), reason };
        let mut target = Target::parse(&realm).map_err(bad_realm)?;
        if self.base.https && !target.https {
            return Err(bad_realm("token realm over plain http for an https registry"));
        }
        let scope = challenge
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut query = vec![format!("scope={}", auth::query_escape(&scope))];
        if let Some(service) = challenge.params.get("service") {
            query.insert(0, format!("service={}", auth::query_escape(service)));
        }
        let sep = if target.path.contains('?') { '&' } else { '?' };
        target.path = format!("{}{sep}{}", target.path, query.join("&"));
        let mut headers = vec![];
        if let Some(c) = &self.credentials {
            headers.push((header::AUTHORIZATION, c.basic()));
        }
        let response = self.client.get(&target, &headers).await?;
        match response.status {
            200 => {}
            401 | 403 => {
                let message = error_message(response).await;
                return Err(self.unauthorized(message));
            }
            status => {
                let url = response.url().to_string();
                let message = error_message(response).await;
                return Err(PullFailure::Status { method: "GET", url, status, message });
            }
        }
        let body = response.bytes(MAX_TOKEN, "token").await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| PullFailure::Token {
                realm: realm.clone(),
                reason: format!("not a token response: {e}"),
            })?;
        let token = if parsed.token.is_empty() { parsed.access_token } else { parsed.token };
        if token.is_empty() {
            return Err(PullFailure::Token { realm, reason: "no token in the answer".into() });
        }
        Ok(token)
    }
}

/// The registry's error text (`{"errors":[{"code":..,"message":..}]}`), short, for
/// error messages; empty when there is none.
async fn error_message(response: Response) -> String {
    let Ok(body) = response.bytes(64 * 1024, "error body").await else { return String::new() };
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(&body) {
        Ok(e) => e
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (true, _) => e.message.clone(),
                (false, true) => e.code.clone(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => {
            let text = String::from_utf8_lossy(&body);
            text.trim().chars().take(200).collect()
        }
    }
}
