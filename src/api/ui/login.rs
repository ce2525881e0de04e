//! The way in for a browser on the secure listener: a form that takes a bearer token (as
//! `outpost kubeconfig` prints it) and keeps it in an HttpOnly, Secure, SameSite=Strict
//! cookie, never in a URL. The cookie stands for the token on the UI's GET pages only
//! ([`super::accepts_cookie`]): never for the API, exec, port-forward or anything that writes,
//! so a page on another site can neither use it (SameSite) nor reach anything it could change.

use std::fmt::Write;

use super::html::{esc, page};
use crate::api::Query;

/// `__Host-`: the browser keeps it only if Secure, for `/` and this host alone.
pub const COOKIE: &str = "__Host-outpost-token";

/// How long a browser keeps the login (the token itself may expire sooner).
const MAX_AGE_SECONDS: u32 = 12 * 3600;

/// A form body bigger than this is refused unread.
pub const MAX_FORM: usize = 8 * 1024;

pub fn form(error: Option<&str>) -> String {
    let mut b = String::from("<main><h1>outpost: log in</h1>");
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"why\" role=\"alert\">{}</p>", esc(e));
    }
    b.push_str(
        "<form class=\"login\" method=\"post\" action=\"/ui/login\">\
         <label for=\"token\">Access token (the <code>token:</code> of a kubeconfig from \
         <code>outpost kubeconfig --role view</code>)</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required>\
         <button type=\"submit\">Log in</button></form></main>",
    );
    page("Log in", None, &b, false)
}

/// The token the UI cookie carries, from the request's `Cookie` headers.
pub fn cookie_token<'a>(headers: impl Iterator<Item = &'a str>) -> Option<String> {
    headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that logs in.
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/; Max-Age={MAX_AGE_SECONDS}; HttpOnly; Secure; SameSite=Strict"
    )
}

/// The `Set-Cookie` value that logs out.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// The token a login form posts, if it is one a cookie can carry unchanged (tokens are
/// URL-safe base64 after `outpost-`).
pub fn form_token(body: &[u8]) -> Option<String> {
    let q = Query::parse(std::str::from_utf8(body).ok()?);
    let token = q.get("token")?.trim();
    let cookie_safe = |c: char| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '"' | '\\');
    (!token.is_empty() && token.chars().all(cookie_safe)).then(|| token.to_string())
}

/// A form posted by a page of this origin (or by a client that sends no `Origin`, which no
/// browser omits on a form POST): login CSRF refused.
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            rest == Some(host)
        }
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_http_only_secure_strict_and_read_back() {
        let set = set_cookie("outpost-abc_DEF");
        for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attr), "{set}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
        let headers = ["a=1; __Host-outpost-token=outpost-abc_DEF; b=2"];
        assert_eq!(cookie_token(headers.into_iter()), Some("outpost-abc_DEF".into()));
        assert_eq!(cookie_token(["outpost-token=x"].into_iter()), None);
        assert_eq!(cookie_token(["__Host-outpost-token="].into_iter()), None);
    }

    #[test]
    fn the_form_token_is_decoded_and_must_fit_a_cookie() {
        assert_eq!(form_token(b"token=outpost-abc%2D_x"), Some("outpost-abc-_x".into()));
        assert_eq!(form_token(b"token=a%3Bb"), None, "a ';' would end the cookie");
        assert_eq!(form_token(b"token="), None);
        assert_eq!(form_token(b"other=1"), None);
    }

    #[test]
    fn a_form_from_another_origin_is_refused() {
        assert!(same_origin(Some("https://dev:6443"), Some("dev:6443")));
        assert!(same_origin(None, Some("dev:6443")));
        assert!(!same_origin(Some("https://evil.example"), Some("dev:6443")));
        assert!(!same_origin(Some("null"), Some("dev:6443")));
    }

    #[test]
    fn the_form_escapes_its_message() {
        let page = form(Some("<b>bad</b>"));
        assert!(page.contains("&lt;b&gt;bad&lt;/b&gt;") && !page.contains("<b>bad"));
        assert!(page.contains("method=\"post\"") && page.contains("type=\"password\""));
    }
}
