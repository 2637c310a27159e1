//! What the job's pods and their nodes look like, pure: `observe` classifies pods that the read
//! step fetched (`classify`, `node_lost`) at the time it passes in; nothing here fetches or reads
//! the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyk_core::heal::WorkerState;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::children::{self, ROLE_LABEL, WORKER_LABEL};
use crate::crd::TrainingJob;
use crate::expectations::Unshown;

/// The job's pods as the reconcile saw them.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// `workers[w]`: worker w's pod.
    pub workers: Vec<WorkerState>,
    pub server: WorkerState,
    /// The soonest a NotReady node's grace runs out: look again then.
    pub recheck: Option<Duration>,
    /// Names of the job's pods that exist (terminating ones included).
    pub existing: BTreeSet<String>,
    /// Names of those that are terminating.
    pub terminating: BTreeSet<String>,
    /// The first line of what a failed pod's container said as it ended (its termination
    /// message, or the end of its log), by pod name.
    pub errors: BTreeMap<String, String>,
}

/// The state of a node, as far as its pods' fate goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NodeHealth {
    Ready,
    /// NotReady (or Unknown) since this time.
    NotReadySince(Timestamp),
    /// The node object is gone.
    Gone,
}

/// The resolution of a condition's lastTransitionTime.
const TIME_RESOLUTION: Duration = Duration::from_secs(1);

/// Whether pods on a node in `health` are lost at `now`, and if not yet, how long until they are.
/// Kubernetes itself waits minutes (tolerationSeconds 300) before evicting; a training step waits
/// for nobody, so anyk gives a node only `grace` to come back.
pub fn node_lost(health: NodeHealth, now: Timestamp, grace: Duration) -> Result<bool, Duration> {
    match health {
        NodeHealth::Ready => Ok(false),
        NodeHealth::Gone => Ok(true),
        NodeHealth::NotReadySince(since) => {
            // Condition times have whole seconds: the node went NotReady up to a second after
            // `since`. Counting from the end of that second, the grace never ends early.
            let waited = now
                .duration_since(since)
                .unsigned_abs()
                .saturating_sub(TIME_RESOLUTION);
            if waited >= grace {
                Ok(true)
            } else {
                Err(grace - waited)
            }
        }
    }
}

/// One pod's state; `node_lost` is the verdict on its node.
pub fn classify(pod: &Pod, node_lost: bool) -> WorkerState {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() {
        WorkerState::Missing
    } else if phase == Some("Failed") || node_lost {
        WorkerState::Failed
    } else if phase == Some("Succeeded") {
        WorkerState::Exited
    } else if is_ready(pod) {
        WorkerState::Ready
    } else {
        WorkerState::Starting
    }
}

/// The first non-empty line of the termination message of the pod's first container that
/// ended with an error.
pub fn first_error_line(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .filter_map(|s| s.state.as_ref()?.terminated.as_ref())
        .filter(|t| t.exit_code != 0)
        .find_map(|t| {
            t.message
                .as_deref()?
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(String::from)
        })
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A node's health from its Ready condition; a NotReady condition without a transition time
/// counts from `now`.
pub fn node_health(node: Option<&Node>, now: Timestamp) -> NodeHealth {
    let Some(node) = node else { return NodeHealth::Gone };
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => NodeHealth::Ready,
        Some(c) => NodeHealth::NotReadySince(c.last_transition_time.as_ref().map_or(now, |t| t.0)),
        // A node that never reported is not yet a loss.
        None => NodeHealth::Ready,
    }
}

/// Classifies the job's pods (listed by its label) given the health of the nodes they run on, at
/// `now`: which worker ids and which server pod are in which state, and when a NotReady node's
/// grace runs out.
pub fn observe(
    workers: u32,
    pods: &[Arc<Pod>],
    nodes: &BTreeMap<String, NodeHealth>,
    now: Timestamp,
    grace: Duration,
) -> Observed {
    let mut observed = Observed {
        workers: vec![WorkerState::Missing; workers as usize],
        server: WorkerState::Missing,
        recheck: None,
        existing: pods.iter().map(|p| p.name_any()).collect(),
        terminating: pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .map(|p| p.name_any())
            .collect(),
        errors: pods
            .iter()
            .filter_map(|p| Some((p.name_any(), first_error_line(p)?)))
            .collect(),
    };
    for pod in pods {
        let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_ref());
        // A node missing from `nodes` was not read: treat it as healthy rather than lost.
        let health = on_node.map(|n| nodes.get(n).copied().unwrap_or(NodeHealth::Ready));
        let lost = match health.map(|h| node_lost(h, now, grace)) {
            Some(Ok(lost)) => lost,
            Some(Err(wait)) => {
                observed.recheck = Some(observed.recheck.map_or(wait, |r| r.min(wait)));
                false
            }
            None => false,
        };
        let state = classify(pod, lost);
        match pod.labels().get(ROLE_LABEL).map(String::as_str) {
            Some("server") => observed.server = state,
            Some("worker") => {
                let slot = pod
                    .labels()
                    .get(WORKER_LABEL)
                    .and_then(|w| w.parse::<usize>().ok())
                    .and_then(|w| observed.workers.get_mut(w));
                if let Some(slot) = slot {
                    *slot = state;
                }
            }
            _ => {}
        }
    }
    observed
}

/// Lays the operator's own pod changes that the watch cache does not show yet over what it does
/// show: a pod it created is there (starting), a pod it deleted is going.
pub fn overlay(observed: &mut Observed, job: &TrainingJob, unshown: &Unshown, pods: &[Arc<Pod>]) {
    for uid in &unshown.deleted {
        if let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
        {
            let name = pod.name_any();
            set_state(observed, job, &name, WorkerState::Missing);
            observed.terminating.insert(name);
        }
    }
    for name in &unshown.created {
        set_state(observed, job, name, WorkerState::Starting);
        observed.terminating.remove(name);
        observed.existing.insert(name.clone());
    }
}

fn set_state(observed: &mut Observed, job: &TrainingJob, name: &str, state: WorkerState) {
    if name == children::server_name(job) {
        observed.server = state;
        return;
    }
    let prefix = format!("{}-worker-", job.name_any());
    let worker = name.strip_prefix(&prefix).and_then(|w| w.parse::<usize>().ok());
    if let Some(slot) = worker.and_then(|w| observed.workers.get_mut(w)) {
        *slot = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_not_ready_node_is_lost_only_after_the_grace() {
        let grace = Duration::from_secs(30);
        let since = NodeHealth::NotReadySince(at(0));
        assert_eq!(node_lost(since, at(10), grace), Err(Duration::from_secs(21)));
        assert_eq!(
            node_lost(since, at(30), grace),
            Err(Duration::from_secs(1)),
            "not early"
        );
        assert_eq!(node_lost(since, at(31), grace), Ok(true));
        assert_eq!(node_lost(NodeHealth::Ready, at(99), grace), Ok(false));
        assert_eq!(node_lost(NodeHealth::Gone, at(0), grace), Ok(true));
    }

    #[test]
    fn pods_are_classified_by_phase_readiness_and_node() {
        let pod = |phase: &str, ready: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "p" },
                "status": { "phase": phase, "conditions": [{ "type": "Ready", "status": ready }] }
            }))
            .unwrap()
        };
        assert_eq!(classify(&pod("Running", "True"), false), WorkerState::Ready);
        assert_eq!(classify(&pod("Running", "True"), true), WorkerState::Failed);
        assert_eq!(classify(&pod("Pending", "False"), false), WorkerState::Starting);
        assert_eq!(classify(&pod("Failed", "False"), false), WorkerState::Failed);
        assert_eq!(classify(&pod("Succeeded", "False"), false), WorkerState::Exited);
        let mut deleting = pod("Running", "True");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)));
        assert_eq!(classify(&deleting, false), WorkerState::Missing);
    }

    #[test]
    fn node_health_reads_the_ready_condition() {
        let node = |status: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "n" },
                "status": { "conditions": [{ "type": "Ready", "status": status, "lastTransitionTime": "2027-01-15T08:00:00Z" }] }
            }))
            .unwrap()
        };
        assert_eq!(node_health(Some(&node("True")), at(0)), NodeHealth::Ready);
        assert!(matches!(
            node_health(Some(&node("Unknown")), at(0)),
            NodeHealth::NotReadySince(_)
        ));
        assert_eq!(node_health(None, at(0)), NodeHealth::Gone);
    }
}
