//! The node's conditions as the kubelet reports them: MemoryPressure, DiskPressure and
//! PIDPressure following the eviction manager's (the engine's), Ready since the agent
//! started, each with the kubelet's reason and message (`nodestatus` setters) and a node
//! event (`NodeHasInsufficientMemory`, ...) at each transition.

use k8s_openapi::api::core::v1::NodeCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// A pressure condition's type with the kubelet's (reason, message, event) when false and
/// when true.
type Wording = (&'static str, [(&'static str, &'static str, &'static str); 2]);

const PRESSURE: [Wording; 3] = [
    (
        "MemoryPressure",
        [
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                "NodeHasSufficientMemory",
            ),
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                "NodeHasInsufficientMemory",
            ),
        ],
    ),
    (
        "DiskPressure",
        [
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure", "NodeHasNoDiskPressure"),
            ("KubeletHasDiskPressure", "kubelet has disk pressure", "NodeHasDiskPressure"),
        ],
    ),
    (
        "PIDPressure",
        [
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                "NodeHasSufficientPID",
            ),
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
                "NodeHasInsufficientPID",
            ),
        ],
    ),
];

/// A node event: `(type, reason, message)`.
pub type NodeEvent = (&'static str, &'static str, String);

/// The node's conditions over time: each pressure condition's status and when it last
/// changed, Ready since the agent started.
#[derive(Debug)]
pub struct Conditions {
    name: String,
    started: Timestamp,
    /// Per [`PRESSURE`] entry: (status, last transition).
    pressure: [(bool, Timestamp); 3],
}

impl Conditions {
    /// At the agent's start: the kubelet's `Starting` event, then each condition's first
    /// status and `NodeReady`, as a kubelet registering its node records them.
    pub fn start(name: &str, now: Timestamp) -> (Self, Vec<NodeEvent>) {
        let c = Self { name: name.into(), started: now, pressure: [(false, now); 3] };
        let mut events = vec![("Normal", "Starting", "Starting kubelet.".to_string())];
        for (_, [(_, _, event), _]) in PRESSURE {
            events.push(("Normal", event, c.status_is(event)));
        }
        events.push(("Normal", "NodeReady", c.status_is("NodeReady")));
        (c, events)
    }

    fn status_is(&self, event: &str) -> String {
        format!("Node {} status is now: {event}", self.name)
    }

    /// Follows the engine's pressure conditions; returns the events of the transitions.
    pub fn update(&mut self, active: &[&str], now: Timestamp) -> Vec<NodeEvent> {
        let mut events = Vec::new();
        for ((type_, wording), state) in PRESSURE.iter().zip(self.pressure.iter_mut()) {
            let on = active.contains(type_);
            if on != state.0 {
                *state = (on, now);
                let (_, _, event) = wording[usize::from(on)];
                let kind = if on { "Warning" } else { "Normal" };
                events.push((kind, event, format!("Node {} status is now: {event}", self.name)));
            }
        }
        events
    }

    /// The conditions as the kubelet orders them, heartbeat `now`.
    pub fn to_conditions(&self, now: Timestamp) -> Vec<NodeCondition> {
        let condition =
            |type_: &str, on: bool, since: Timestamp, reason: &str, message: &str| NodeCondition {
                type_: type_.into(),
                status: if on { "True" } else { "False" }.into(),
                last_heartbeat_time: Some(Time(now)),
                last_transition_time: Some(Time(since)),
                reason: Some(reason.into()),
                message: Some(message.into()),
            };
        let mut out: Vec<NodeCondition> = PRESSURE
            .iter()
            .zip(&self.pressure)
            .map(|((type_, wording), &(on, since))| {
                let (reason, message, _) = wording[usize::from(on)];
                condition(type_, on, since, reason, message)
            })
            .collect();
        out.push(condition(
            "Ready",
            true,
            self.started,
            "KubeletReady",
            "kubelet is posting ready status",
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn conditions_follow_pressure_with_the_kubelets_wording_and_events() {
        let (mut c, events) = Conditions::start("edge-1", ts(100));
        let reasons: Vec<&str> = events.iter().map(|e| e.1).collect();
        assert_eq!(
            reasons,
            [
                "Starting",
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID",
                "NodeReady"
            ]
        );
        assert_eq!(events[4].2, "Node edge-1 status is now: NodeReady");
        assert_eq!(c.update(&[], ts(110)), []);
        let events = c.update(&["MemoryPressure"], ts(120));
        assert_eq!(
            events,
            [(
                "Warning",
                "NodeHasInsufficientMemory",
                "Node edge-1 status is now: NodeHasInsufficientMemory".to_string()
            )]
        );
        let now = c.to_conditions(ts(130));
        let row = |i: usize| {
            let n = &now[i];
            (
                n.type_.as_str(),
                n.status.as_str(),
                n.reason.as_deref().unwrap(),
                n.message.as_deref().unwrap(),
                n.last_transition_time.as_ref().unwrap().0.as_second(),
            )
        };
        assert_eq!(
            row(0),
            (
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                120
            )
        );
        assert_eq!(
            row(1),
            (
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                100
            )
        );
        assert_eq!(
            row(2),
            (
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                100
            )
        );
        assert_eq!(
            row(3),
            ("Ready", "True", "KubeletReady", "kubelet is posting ready status", 100)
        );
        assert_eq!(now[3].last_heartbeat_time.as_ref().unwrap().0, ts(130));
        let events = c.update(&["DiskPressure"], ts(140));
        let reasons: Vec<(&str, &str)> = events.iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(
            reasons,
            [("Normal", "NodeHasSufficientMemory"), ("Warning", "NodeHasDiskPressure")]
        );
        assert_eq!(c.to_conditions(ts(150))[0].last_transition_time.as_ref().unwrap().0, ts(140));
    }
}
