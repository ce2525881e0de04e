//! After a step: the API's snapshot and the store's records.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{HostIP, Pod, PodIP};

use crate::engine::{HistoryChange, Revision, RevisionResult};
use crate::runtime::Runtime;
use crate::store::{EventRecord, HistoryRecord, PodRecord, RevisionRecord};

use super::events::RECENT_EVENTS;
use super::state::Agent;

impl<R: Runtime + 'static> Agent<R> {
    /// The API's view: the engine's pods with the network facts only the agent knows.
    pub(super) fn publish(&self) {
        let host_ip = self.deps.node.host_ips.first().cloned();
        let pods: Vec<Pod> = self
            .engine
            .pods()
            .map(|mut pod| {
                self.engine.decorate(&mut pod);
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                // The kubelet's static pod source sets every pod's nodeName to its node's,
                // whatever the file says (config/common.go applyDefaults).
                if let Some(spec) = pod.spec.as_mut() {
                    spec.node_name = Some(self.deps.node.name.clone());
                }
                if let Some(status) = pod.status.as_mut() {
                    status.host_ip.clone_from(&host_ip);
                    status.host_ips = host_ip.clone().map(|ip| vec![HostIP { ip }]);
                    if let Some(ctx) = self.contexts.get(&uid) {
                        status.pod_ip = ctx.pod_ips.first().cloned();
                        status.pod_ips =
                            Some(ctx.pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect());
                    }
                }
                pod
            })
            .collect();
        self.published.publish(pods, self.recent_events.clone(), self.desired.clone());
    }

    /// Writes what changed since the last step, in one transaction: engine snapshots of the
    /// pods (so a restarted agent resumes them) and new events.
    pub(super) fn commit(&mut self) {
        let mut changed = Vec::new();
        let mut live = HashSet::new();
        for snapshot in self.engine.persist() {
            let uid = snapshot.uid().to_string();
            let json = serde_json::to_string(&snapshot).unwrap_or_default();
            live.insert(uid.clone());
            if self.persisted.get(&uid) != Some(&json) {
                changed.push((uid, json));
            }
        }
        let removed: Vec<String> =
            self.persisted.keys().filter(|u| !live.contains(*u)).cloned().collect();
        let revisions: Vec<HistoryRecord> =
            self.engine.take_revisions().iter().map(history_record).collect();
        if !revisions.is_empty() {
            self.published.metrics.set_rollbacks(self.engine.rollout_failures());
        }
        if changed.is_empty()
            && removed.is_empty()
            && self.pending_events.is_empty()
            && revisions.is_empty()
        {
            return;
        }
        let pods: HashMap<String, Pod> = if changed.is_empty() {
            HashMap::new()
        } else {
            self.engine.pods().filter_map(|p| Some((p.metadata.uid.clone()?, p))).collect()
        };
        let records: Vec<PodRecord> = changed
            .iter()
            .filter_map(|(uid, json)| {
                let mut pod = pods.get(uid)?.clone();
                pod.status = None;
                Some(PodRecord {
                    uid: uid.clone(),
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    pod: serde_json::to_string(&pod).unwrap_or_default(),
                    engine_state: json.clone(),
                })
            })
            .collect();
        let events = std::mem::take(&mut self.pending_events);
        if !events.is_empty() {
            let mut recent = (*self.recent_events).clone();
            for e in &events {
                // Repeats fold into a count, as in the store and the API server.
                let same = |r: &EventRecord| {
                    r.pod_uid == e.pod_uid
                        && r.container == e.container
                        && r.reason == e.reason
                        && r.message == e.message
                };
                match recent.iter_mut().rev().find(|r| same(r)) {
                    Some(r) => {
                        r.count += e.count;
                        r.last_seen = e.last_seen;
                    }
                    None => recent.push(e.clone()),
                }
            }
            let excess = recent.len().saturating_sub(RECENT_EVENTS);
            recent.drain(..excess);
            self.recent_events = Arc::new(recent);
        }
        match self.store.commit_with_revisions(&records, &removed, &events, &revisions) {
            Ok(()) => {
                for (uid, json) in changed {
                    self.persisted.insert(uid, json);
                }
                for uid in removed {
                    self.persisted.remove(&uid);
                }
            }
            Err(e) => log::warn!("{e}"),
        }
    }
}

fn history_record(change: &HistoryChange) -> HistoryRecord {
    match change {
        HistoryChange::Recorded(r) => HistoryRecord::Revision(revision_record(r)),
        HistoryChange::Forgotten(key) => {
            HistoryRecord::Forget { namespace: key.namespace.clone(), name: key.name.clone() }
        }
    }
}

fn revision_record(r: &Revision) -> RevisionRecord {
    let (result, reason) = match &r.result {
        RevisionResult::Pending => ("Pending", None),
        RevisionResult::Ready => ("Ready", None),
        RevisionResult::Failed(why) => ("Failed", Some(why.clone())),
        RevisionResult::Superseded => ("Superseded", None),
    };
    RevisionRecord {
        namespace: r.key.namespace.clone(),
        name: r.key.name.clone(),
        hash: r.hash.clone(),
        pod: serde_json::to_string(&*r.pod).unwrap_or_default(),
        config: serde_json::json!({
            "configMaps": r.config.config_maps.values().collect::<Vec<_>>(),
            "secrets": r.config.secrets.values().collect::<Vec<_>>(),
        })
        .to_string(),
        at: r.at.as_second(),
        result: result.into(),
        reason,
    }
}

/// The store's row back as the engine's revision; `None` for a pod that no longer decodes.
pub(super) fn revision_from_record(r: RevisionRecord) -> Option<Revision> {
    let pod = match crate::manifest::pod_from_json(&r.pod) {
        Ok(pod) => pod,
        Err(e) => {
            log::warn!("rollout history of {}/{}: revision {}: {e}", r.namespace, r.name, r.hash);
            return None;
        }
    };
    let result = match (r.result.as_str(), r.reason) {
        ("Ready", _) => RevisionResult::Ready,
        ("Failed", why) => RevisionResult::Failed(why.unwrap_or_default()),
        ("Superseded", _) => RevisionResult::Superseded,
        _ => RevisionResult::Pending,
    };
    let config = match config_from_json(&r.config) {
        Ok(config) => config,
        Err(e) => {
            log::warn!(
                "rollout history of {}/{}: revision {}: its ConfigMaps and Secrets: {e}",
                r.namespace,
                r.name,
                r.hash
            );
            return None;
        }
    };
    Some(Revision {
        key: crate::manifest::ObjectKey::new(r.namespace, r.name),
        hash: r.hash,
        pod: std::sync::Arc::new(pod),
        config: std::sync::Arc::new(config),
        at: crate::engine::Timestamp::from_second(r.at).unwrap_or_default(),
        result,
    })
}

/// The `config` column back as a desired state of ConfigMaps and Secrets only.
fn config_from_json(text: &str) -> Result<crate::manifest::DesiredState, serde_json::Error> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Config {
        #[serde(default)]
        config_maps: Vec<ConfigMap>,
        #[serde(default)]
        secrets: Vec<Secret>,
    }
    let c: Config = serde_json::from_str(text)?;
    let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        crate::manifest::ObjectKey::new(
            m.namespace.clone().unwrap_or_else(|| "default".into()),
            m.name.clone().unwrap_or_default(),
        )
    };
    Ok(crate::manifest::DesiredState {
        pods: Default::default(),
        config_maps: c.config_maps.into_iter().map(|m| (key(&m.metadata), m)).collect(),
        secrets: c.secrets.into_iter().map(|s| (key(&s.metadata), s)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every result comes back from the store as it went in (an unknown one would restore as
    /// an interrupted gate).
    #[test]
    fn every_revision_result_survives_the_store() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.uid = Some("rev1-uid".into());
        for result in [
            RevisionResult::Pending,
            RevisionResult::Ready,
            RevisionResult::Failed("CrashLoopBackOff".into()),
            RevisionResult::Superseded,
        ] {
            let r = Revision {
                key: crate::manifest::ObjectKey::new("default", "web"),
                hash: "rev1-uid".into(),
                pod: Arc::new(pod.clone()),
                config: Default::default(),
                at: crate::engine::Timestamp::from_second(5).unwrap(),
                result: result.clone(),
            };
            let back = revision_from_record(revision_record(&r)).expect("decodes");
            assert_eq!(back.result, result);
            assert_eq!(back.hash, "rev1-uid");
        }
    }
}
