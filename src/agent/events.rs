//! Kubernetes events: logged, kept for the API and the store.

use crate::runtime::Runtime;
use crate::store::EventRecord;

use super::state::Agent;

/// Events kept in memory for the API.
pub(super) const RECENT_EVENTS: usize = 1000;

/// The reason of the node's Warning event when a damaged state database was replaced, or
/// running pods were found without records.
const DATABASE_RECOVERED: &str = "StateDatabaseRecovered";

/// The reason of the node's Warning event when a manifest URL serves an invalid body.
const MANIFEST_SOURCE_INVALID: &str = "ManifestSourceInvalid";

impl<R: Runtime + 'static> Agent<R> {
    /// A Warning event on the node (as the kubelet reports node problems) when the state
    /// database was replaced or had no record of running pods (deleted, or behind the
    /// runtime): what it knew of them (events, back-offs) is gone.
    pub(super) fn database_recovered(
        &mut self,
        r: Option<&crate::store::Recovery>,
        adopted: &[String],
    ) {
        let adopted = match adopted.len() {
            0 => String::new(),
            _ => format!(" (adopted without records: {})", adopted.join(", ")),
        };
        let message = match r {
            Some(r) => format!(
                "The state database was damaged ({}): kept aside as {}; started a fresh one and took over the running pods from the runtime{adopted}",
                r.damage,
                r.kept.display()
            ),
            None if adopted.is_empty() => return,
            None => format!(
                "The state database had no record of running pods (lost, or behind the runtime): took them over from the runtime{adopted}"
            ),
        };
        self.node_warning(DATABASE_RECOVERED, message);
    }

    /// A Warning event on the node.
    fn node_warning(&mut self, reason: &str, message: String) {
        let now = crate::format::now().as_second();
        self.pending_events.push(EventRecord {
            pod_uid: String::new(),
            namespace: "default".into(),
            pod_name: self.deps.node.name.clone(),
            container: None,
            type_: "Warning".into(),
            reason: reason.into(),
            message,
            count: 1,
            first_seen: now,
            last_seen: now,
        });
    }

    /// A Warning event on the node for each manifest URL whose new body failed validation
    /// (its last valid version stays in force); a file's errors are only logged, as the
    /// operator who edits it is at the device.
    pub(super) fn manifest_sources_invalid(&mut self, errors: &[crate::manifest::ManifestError]) {
        let mut seen = std::collections::BTreeSet::new();
        for e in errors {
            let source = e.path.to_string_lossy();
            let url = source.starts_with("http://") || source.starts_with("https://");
            // A duplicate definition is not an invalid body (and is logged).
            if !url || e.message.contains("is already defined in") {
                continue;
            }
            if !seen.insert(source.to_string()) {
                continue;
            }
            let count = errors.iter().filter(|x| x.path == e.path).count();
            let more = match count {
                1 => String::new(),
                n => format!(" ({} more errors)", n - 1),
            };
            self.node_warning(
                MANIFEST_SOURCE_INVALID,
                format!(
                    "The manifest from {source} is invalid; its last valid version stays in force: {e}{more}"
                ),
            );
        }
    }

    pub(super) fn record_event(
        &mut self,
        pod_uid: String,
        container: Option<String>,
        type_: crate::engine::EventType,
        reason: String,
        message: String,
    ) {
        // A rolled-back revision may be known only to the engine (after a restart).
        let (namespace, pod_name) = match self.names.get(&pod_uid) {
            Some(n) => n.clone(),
            None => self.engine.pod(&pod_uid).map_or_else(Default::default, |p| {
                let meta = p.metadata;
                let n = (
                    meta.namespace.unwrap_or_else(|| "default".into()),
                    meta.name.unwrap_or_default(),
                );
                self.names.insert(pod_uid.clone(), n.clone());
                n
            }),
        };
        let type_ = format!("{type_:?}");
        let line = format!(
            "pod {namespace}/{pod_name}: {}{reason}: {message}",
            container.as_ref().map(|c| format!("container {c}: ")).unwrap_or_default()
        );
        if type_ == "Warning" {
            log::warn!("{line}");
        } else {
            log::info!("{line}");
        }
        let now = crate::format::now().as_second();
        self.pending_events.push(EventRecord {
            pod_uid,
            namespace,
            pod_name,
            container,
            type_,
            reason,
            message,
            count: 1,
            first_seen: now,
            last_seen: now,
        });
    }
}
