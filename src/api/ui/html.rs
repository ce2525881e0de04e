//! HTML out: the escaping every text from manifests, events and logs goes through, and the
//! page around the content (inline CSS, no external asset, one constant script).

use std::fmt::Write;

/// `s` safe in element text and in double- or single-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment or query value: everything but unreserved characters
/// percent-encoded (so the result needs no HTML escaping either).
pub fn url_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A path segment [`url_part`] made (browsers send what they were given), decoded.
pub fn decode_part(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pod page's address.
pub fn pod_href(ns: &str, name: &str) -> String {
    format!("/ui/pods/{}/{}", url_part(ns), url_part(name))
}

/// Follow mode: streams the log address in `data-src` into the `<pre>` named by `data-log`,
/// as text nodes (never parsed as HTML); a page opened at `#follow` (a kiosk's bookmark)
/// follows at once. Allowed by its hash in the page's CSP, the only
/// script a page may run.
pub const FOLLOW_SCRIPT: &str = "for(const b of document.querySelectorAll('button[data-log]')){b.hidden=false;b.onclick=async()=>{b.disabled=true;b.textContent='Following\u{2026}';const pre=document.getElementById(b.dataset.log);try{const r=await fetch(b.dataset.src,{credentials:'same-origin'});const rd=r.body.getReader();const d=new TextDecoder();pre.textContent='';for(;;){const{value,done}=await rd.read();if(done)break;pre.append(d.decode(value,{stream:true}));pre.scrollTop=pre.scrollHeight;}b.textContent='Ended';}catch(e){b.textContent='Follow failed';}};if(location.hash==='#follow')b.click();}";

const CSS: &str = "\
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--fg:#1f2328;--mute:#59636e;--line:#d1d9e0}\
*{box-sizing:border-box}\
body{font:15px/1.4 system-ui,sans-serif;color:var(--fg);margin:0 auto;padding:.8rem;max-width:75rem}\
h1{font-size:1.3rem;margin:.2rem 0 .6rem}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}\
a{color:#0969da}nav{display:flex;gap:1rem;align-items:center;flex-wrap:wrap;font-size:.9rem}\
nav form{margin-left:auto}\
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;margin:.4rem 0}\
dt{color:var(--mute)}dd{margin:0;overflow-wrap:anywhere}\
.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;vertical-align:top;padding:.3rem .5rem;border-bottom:1px solid var(--line)}\
th{background:#f6f8fa}td.msg{overflow-wrap:anywhere;min-width:12rem}\
tr.problem{background:#ffebe9}tr.starting{background:#fff8c5}\
.badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;color:#fff;font-weight:600;font-size:.8rem;white-space:nowrap}\
.badge.ok{background:var(--ok)}.badge.starting{background:var(--warn)}.badge.problem{background:var(--bad)}\
.why{color:var(--bad);font-size:.85rem}.mute{color:var(--mute)}\
ul.conds{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4rem}\
pre{background:#0d1117;color:#e6edf3;padding:.5rem;max-height:30rem;overflow:auto;font-size:.8rem;white-space:pre-wrap;overflow-wrap:anywhere}\
form.login{display:grid;gap:.5rem;max-width:24rem}input{font:inherit;padding:.3rem}button{font:inherit}\
@media(max-width:40rem){.wide{display:none}body{padding:.4rem}}";

/// A whole page; `body` is HTML already escaped where needed.
pub fn page(title: &str, refresh_seconds: Option<u32>, body: &str, script: bool) -> String {
    let mut out = String::with_capacity(body.len() + CSS.len() + 600);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if let Some(s) = refresh_seconds {
        let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{s}\">");
    }
    let _ = write!(out, "<title>{} · outpost</title><style>{CSS}</style></head><body>", esc(title));
    out.push_str(body);
    if script {
        let _ = write!(out, "<script>{FOLLOW_SCRIPT}</script>");
    }
    out.push_str("</body></html>\n");
    out
}

/// The Content-Security-Policy of every page: nothing from elsewhere, inline styles, and only
/// [`FOLLOW_SCRIPT`] as script (by its hash).
pub fn content_security_policy() -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(FOLLOW_SCRIPT));
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{hash}'; \
         connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; \
         base-uri 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(url_part("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert_eq!(decode_part(&url_part("a b/<c>%")), "a b/<c>%");
        assert_eq!(decode_part("100%"), "100%");
        assert_eq!(pod_href("default", "web-1"), "/ui/pods/default/web-1");
    }

    #[test]
    fn the_page_is_small_and_self_contained() {
        let p = page("t<", Some(5), "<p>x</p>", true);
        assert!(p.contains("<title>t&lt; · outpost</title>"), "{p}");
        assert!(p.contains("http-equiv=\"refresh\" content=\"5\""));
        assert!(!p.contains("http://") && !p.contains("https://"), "no external asset");
        assert!(p.len() < 8 * 1024, "{} bytes", p.len());
        assert!(content_security_policy().contains("script-src 'sha256-"));
    }
}
