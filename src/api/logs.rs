//! `GET .../pods/{name}/log`: the container's CRI log files turned back into its output, with
//! the kubelet's parameters (container, follow, tailLines, sinceSeconds/sinceTime, timestamps,
//! previous, limitBytes).
//!
//! Files are `<state>/pods/<uid>/logs/<container>/<attempt>.log`, rotated by size to
//! `.log.1` (newest) … `.log.K`; lines are `<rfc3339 nanos> <stream> <F|P> <content>`. The
//! timestamps have a fixed width, so comparing them as text compares times.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;

use super::query::Query;
use super::{Published, Snapshot};

/// Bytes read from a file at a time.
const CHUNK: usize = 64 * 1024;
/// A line longer than this (the writer cuts at 16 KiB) is cut: bounds memory on a bad file.
const MAX_LINE: usize = 64 * 1024;
/// How often a followed file is checked for growth.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The query parameters of a log request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogParams {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    /// Lines older than this are skipped (from sinceSeconds or sinceTime).
    pub since: Option<Timestamp>,
    pub limit_bytes: Option<u64>,
}

impl LogParams {
    /// Parses the query; the error is the message of a 400 answer.
    pub fn parse(q: &Query, now: Timestamp) -> Result<Self, String> {
        let num = |key: &str| -> Result<Option<i64>, String> {
            q.get(key)
                .map(|v| v.parse::<i64>().map_err(|_| format!("{key}: invalid value {v:?}")))
                .transpose()
        };
        let tail_lines = num("tailLines")?;
        let since_seconds = num("sinceSeconds")?;
        let limit_bytes = num("limitBytes")?;
        if tail_lines.is_some_and(|n| n < 0) {
            return Err("tailLines: must be greater than or equal to 0".into());
        }
        if since_seconds.is_some_and(|n| n < 1) {
            return Err("sinceSeconds: must be greater than 0".into());
        }
        if limit_bytes.is_some_and(|n| n < 1) {
            return Err("limitBytes: must be greater than 0".into());
        }
        let since_time = q
            .get("sinceTime")
            .map(|v| v.parse::<Timestamp>().map_err(|_| format!("sinceTime: invalid time {v:?}")))
            .transpose()?;
        if since_seconds.is_some() && since_time.is_some() {
            return Err("at most one of sinceTime or sinceSeconds may be specified".into());
        }
        let since = since_time.or_else(|| {
            since_seconds.map(|s| {
                Timestamp::from_second(now.as_second() - s).unwrap_or(Timestamp::UNIX_EPOCH)
            })
        });
        Ok(Self {
            container: q.get("container").filter(|c| !c.is_empty()).map(Into::into),
            follow: q.flag("follow"),
            previous: q.flag("previous"),
            timestamps: q.flag("timestamps"),
            tail_lines: tail_lines.map(|n| n as usize),
            since,
            limit_bytes: limit_bytes.map(|n| n as u64),
        })
    }
}

/// One container instance's log, resolved against the snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSource {
    pub pod_uid: String,
    pub container: String,
    pub attempt: i32,
    /// The current file, `<attempt>.log`.
    pub path: PathBuf,
    pub params: LogParams,
}

/// Picks the container and instance the way the API server and kubelet do; the error is the
/// message of a 400 answer.
pub fn resolve(pod: &Pod, params: LogParams, state_dir: &Path) -> Result<LogSource, String> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let inits: Vec<String> =
        spec.init_containers.iter().flatten().map(|c| c.name.clone()).collect();
    let mains: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let container = match params.container.clone() {
        Some(c) => c,
        None if mains.len() == 1 => mains[0].clone(),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                mains.join(" ")
            );
            if !inits.is_empty() {
                msg += &format!(" or one of the init containers: [{}]", inits.join(" "));
            }
            return Err(msg);
        }
    };
    if !mains.contains(&container) && !inits.contains(&container) {
        return Err(format!("container {container} is not valid for pod {pod_name}"));
    }
    let status = pod.status.clone().unwrap_or_default();
    let cs: Option<ContainerStatus> = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|s| s.name == container)
        .cloned();
    let waiting_msg = |reason: &str| {
        format!("container {container:?} in pod {pod_name:?} is waiting to start: {reason}")
    };
    let Some(cs) = cs else {
        return Err(waiting_msg("ContainerCreating"));
    };
    let state = cs.state.clone().unwrap_or_default();
    let last_terminated = cs.last_state.as_ref().is_some_and(|s| s.terminated.is_some());
    // The instance of attempt `restartCount` is the newest; while it waits for a restart
    // (CrashLoopBackOff) it is also the "last terminated" one `--previous` means.
    let attempt = if params.previous {
        if !last_terminated {
            return Err(format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found"
            ));
        }
        if state.waiting.is_some() {
            cs.restart_count
        } else {
            cs.restart_count - 1
        }
    } else if state.running.is_some() || state.terminated.is_some() || last_terminated {
        cs.restart_count
    } else {
        let reason = state.waiting.and_then(|w| w.reason).unwrap_or_default();
        return Err(match reason.as_str() {
            "ErrImagePull" => waiting_msg("image can't be pulled"),
            "ImagePullBackOff" => waiting_msg("trying and failing to pull image"),
            "" => format!(
                "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
            ),
            r => waiting_msg(r),
        });
    };
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let path = crate::runtime::log_path(state_dir, &pod_uid, &container, attempt.max(0) as u32);
    Ok(LogSource { pod_uid, container, attempt, path, params })
}

impl LogSource {
    /// The instance can still write: it is the pod's current one and running.
    fn live(&self, snapshot: &Snapshot) -> bool {
        let Some(pod) =
            snapshot.pods.iter().find(|p| p.metadata.uid.as_deref() == Some(&self.pod_uid))
        else {
            return false;
        };
        let status = pod.status.as_ref();
        status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .chain(status.and_then(|s| s.init_container_statuses.as_ref()).into_iter().flatten())
            .find(|s| s.name == self.container)
            .is_some_and(|s| {
                s.restart_count == self.attempt
                    && s.state.as_ref().is_some_and(|st| st.running.is_some())
            })
    }

    /// The rotated files, oldest first, then the current one.
    fn files(&self) -> Vec<PathBuf> {
        let rotated = |n: u32| {
            let mut p = self.path.as_os_str().to_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let mut n = 1;
        while rotated(n).exists() {
            n += 1;
        }
        let mut files: Vec<PathBuf> = (1..n).rev().map(rotated).collect();
        files.push(self.path.clone());
        files
    }

    /// The output without following, read on this thread (blocking): the status page's tail.
    pub fn read_backlog(&self) -> Vec<u8> {
        let mut filter = Filter::new(&self.params);
        let mut out = Vec::new();
        let mut buf = vec![0; CHUNK];
        for path in self.files() {
            let Ok(mut file) = std::fs::File::open(&path) else { continue };
            while let Ok(n @ 1..) = file.read(&mut buf) {
                out.extend(filter.feed(&buf[..n]));
                if filter.done() {
                    return out;
                }
            }
        }
        out.extend(filter.end_of_backlog());
        out
    }

    /// Writes the output to `out` until done (or, following, until the instance exited and its
    /// file is drained); stops early when `out` is closed (the client went away).
    pub async fn stream(
        self,
        published: std::sync::Arc<Published>,
        out: smol::channel::Sender<Vec<u8>>,
    ) {
        let mut filter = Filter::new(&self.params);
        let files = self.files();
        let mut current = None;
        for (i, path) in files.iter().enumerate() {
            let Ok(file) = std::fs::File::open(path) else { continue };
            let mut file = Some(file);
            loop {
                let (f, chunk) = read_chunk(file.take()).await;
                file = f;
                let Some(chunk) = chunk.filter(|c| !c.is_empty()) else { break };
                let bytes = filter.feed(&chunk);
                if !send(&out, bytes).await || filter.done() {
                    return;
                }
            }
            if i + 1 == files.len() {
                current = file;
            }
        }
        if !send(&out, filter.end_of_backlog()).await || filter.done() || !self.params.follow {
            return;
        }
        // Following: the current file from where the backlog ended.
        let mut file = current;
        loop {
            let (f, chunk) = read_chunk(file.take()).await;
            file = f;
            match chunk.filter(|c| !c.is_empty()) {
                Some(chunk) => {
                    if !send(&out, filter.feed(&chunk)).await || filter.done() {
                        return;
                    }
                }
                None => {
                    // Drained: a rotated file continues in a new one at the same path.
                    let rotated = match (&file, std::fs::metadata(&self.path)) {
                        (Some(f), Ok(m)) => f.metadata().is_ok_and(|fm| fm.ino() != m.ino()),
                        (None, Ok(_)) => true,
                        (_, Err(_)) => false,
                    };
                    if rotated {
                        file = std::fs::File::open(&self.path).ok();
                        continue;
                    }
                    if !self.live(&published.current()) {
                        // One last read: output written just before the exit was observed.
                        let (_, chunk) = read_chunk(file.take()).await;
                        if let Some(chunk) = chunk {
                            let _ = send(&out, filter.feed(&chunk)).await;
                        }
                        return;
                    }
                    if out.is_closed() {
                        return;
                    }
                    smol::Timer::after(FOLLOW_POLL).await;
                }
            }
        }
    }
}

async fn send(out: &smol::channel::Sender<Vec<u8>>, bytes: Vec<u8>) -> bool {
    bytes.is_empty() || out.send(bytes).await.is_ok()
}

/// Reads up to [`CHUNK`] bytes on the blocking pool, handing the file back.
async fn read_chunk(file: Option<std::fs::File>) -> (Option<std::fs::File>, Option<Vec<u8>>) {
    let Some(mut file) = file else { return (None, None) };
    smol::unblock(move || {
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                (Some(file), Some(buf))
            }
            Err(_) => (Some(file), None),
        }
    })
    .await
}

/// CRI lines in, container output out: applies since, timestamps, tail and limit.
pub struct Filter {
    since: Option<String>,
    timestamps: bool,
    /// While reading the backlog with tailLines: the last lines, formatted.
    tail: Option<(usize, VecDeque<Vec<u8>>)>,
    remaining: Option<u64>,
    line: Vec<u8>,
}

impl Filter {
    pub fn new(p: &LogParams) -> Self {
        Self {
            since: p.since.map(|t| {
                let st = std::time::UNIX_EPOCH
                    + Duration::new(
                        t.as_second().max(0) as u64,
                        t.subsec_nanosecond().max(0) as u32,
                    );
                crate::runtime::rfc3339_nanos(st)
            }),
            timestamps: p.timestamps,
            tail: p.tail_lines.map(|n| (n, VecDeque::new())),
            remaining: p.limit_bytes,
            line: Vec::new(),
        }
    }

    /// The limit is reached: nothing more will be output.
    pub fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Consumes file bytes; returns what to output now.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.line.len() < MAX_LINE {
                let room = MAX_LINE - self.line.len();
                self.line.extend_from_slice(&rest[..i.min(room)]);
            }
            let line = std::mem::take(&mut self.line);
            self.record(&line, &mut out);
            rest = &rest[i + 1..];
        }
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&rest[..rest.len().min(room)]);
        self.limit(out)
    }

    /// The backlog is read: flush what tailLines kept; later lines go out directly.
    pub fn end_of_backlog(&mut self) -> Vec<u8> {
        match self.tail.take() {
            Some((_, lines)) => self.limit(lines.into_iter().flatten().collect()),
            None => Vec::new(),
        }
    }

    fn record(&mut self, line: &[u8], out: &mut Vec<u8>) {
        // <timestamp> <stream> <tag> <content>; the tag may carry more after ':' (CRI).
        let mut parts = line.splitn(4, |&b| b == b' ');
        let (Some(ts), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let content = parts.next().unwrap_or_default();
        if let Some(since) = &self.since {
            if ts < since.as_bytes() {
                return;
            }
        }
        let mut formatted = Vec::with_capacity(content.len() + 40);
        if self.timestamps {
            formatted.extend_from_slice(ts);
            formatted.push(b' ');
        }
        formatted.extend_from_slice(content);
        if tag.first() != Some(&b'P') {
            formatted.push(b'\n');
        }
        match &mut self.tail {
            Some((n, lines)) => {
                lines.push_back(formatted);
                if lines.len() > *n {
                    lines.pop_front();
                }
            }
            None => out.extend_from_slice(&formatted),
        }
    }

    fn limit(&mut self, mut out: Vec<u8>) -> Vec<u8> {
        if let Some(rem) = self.remaining.as_mut() {
            out.truncate((*rem).min(out.len() as u64) as usize);
            *rem -= out.len() as u64;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-01-01T00:00:01.000000000Z stdout F one\n\
                       2024-01-01T00:00:02.000000000Z stderr F two\n\
                       2024-01-01T00:00:03.000000000Z stdout P thr\n\
                       2024-01-01T00:00:03.000000001Z stdout F ee\n\
                       2024-01-01T00:00:04.000000000Z stdout F four\n";

    fn run(params: LogParams, chunks: &[&[u8]]) -> String {
        let mut f = Filter::new(&params);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.feed(c));
        }
        out.extend(f.end_of_backlog());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn joins_partial_lines_and_splits_anywhere() {
        let (a, b) = LOG.as_bytes().split_at(50);
        assert_eq!(run(LogParams::default(), &[a, b]), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn tail_since_timestamps_and_limit() {
        let tail = LogParams { tail_lines: Some(2), ..Default::default() };
        assert_eq!(run(tail, &[LOG.as_bytes()]), "ee\nfour\n");
        let zero = LogParams { tail_lines: Some(0), ..Default::default() };
        assert_eq!(run(zero, &[LOG.as_bytes()]), "");
        let since = LogParams {
            since: Some("2024-01-01T00:00:02Z".parse().unwrap()),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            run(since, &[LOG.as_bytes()]),
            "2024-01-01T00:00:02.000000000Z two\n2024-01-01T00:00:03.000000000Z thr\
             2024-01-01T00:00:03.000000001Z ee\n2024-01-01T00:00:04.000000000Z four\n"
        );
        let limit = LogParams { limit_bytes: Some(6), ..Default::default() };
        assert_eq!(run(limit, &[LOG.as_bytes()]), "one\ntw");
    }

    #[test]
    fn parses_query_parameters() {
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let q = Query::parse(
            "container=app&follow=true&tailLines=5&sinceSeconds=30&timestamps=true&previous=true",
        );
        let p = LogParams::parse(&q, now).unwrap();
        assert_eq!(
            p,
            LogParams {
                container: Some("app".into()),
                follow: true,
                previous: true,
                timestamps: true,
                tail_lines: Some(5),
                since: Some("2024-01-01T00:00:30Z".parse().unwrap()),
                limit_bytes: None,
            }
        );
        assert_eq!(
            LogParams::parse(&Query::parse("tailLines=x"), now),
            Err("tailLines: invalid value \"x\"".to_string())
        );
    }
}
