//! A finished container's termination message, as the kubelet reads it.

use k8s_openapi::api::core::v1::Pod;

use super::deps::Deps;

/// Its `terminationMessagePath` file, or with `FallbackToLogsOnError` the end of its log when
/// the file is empty and the container failed (kubelet limits: 4 KiB of file, 80 lines or
/// 2 KiB of log).
pub fn message<R>(
    deps: &Deps<R>,
    pod: &Pod,
    uid: &str,
    name: &str,
    attempt: u32,
    exit_code: i32,
) -> Option<String> {
    let path = deps.pod_data(uid).join("termination").join(format!("{name}.{attempt}"));
    let mut text = std::fs::read(&path).ok().map(|mut b| {
        b.truncate(4096);
        String::from_utf8_lossy(&b).into_owned()
    });
    let fallback = pod
        .spec
        .as_ref()
        .and_then(|s| {
            s.init_containers.iter().flatten().chain(&s.containers).find(|c| c.name == name)
        })
        .is_some_and(|c| c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError"));
    if fallback && exit_code != 0 && text.as_deref().is_none_or(str::is_empty) {
        text = std::fs::read_to_string(deps.runtime_log(uid, name, attempt))
            .ok()
            .map(|l| log_tail(&l, 80, 2048));
    }
    text.filter(|t| !t.is_empty())
}

/// The last `lines` lines (at most `bytes`) of a CRI log, without the CRI prefixes.
pub fn log_tail(cri: &str, lines: usize, bytes: usize) -> String {
    let msgs: Vec<&str> =
        cri.lines().map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default()).collect();
    let start = msgs.len().saturating_sub(lines);
    let mut text = msgs[start..].join("\n");
    if text.len() > bytes {
        let cut = text.len() - bytes;
        let cut = crate::format::ceil_char_boundary(&text, cut);
        text = text[cut..].to_string();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_tail_strips_cri_prefixes_and_bounds() {
        let log = "2026-01-01T00:00:00Z stdout F one\n2026-01-01T00:00:01Z stderr F two words\n";
        assert_eq!(super::log_tail(log, 80, 2048), "one\ntwo words");
        assert_eq!(super::log_tail(log, 1, 2048), "two words");
        assert_eq!(super::log_tail(log, 80, 5), "words");
    }
}
