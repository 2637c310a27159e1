//! What the job's pods and their nodes look like. The classification is pure (`classify`,
//! `node_lost`); `observe` only fetches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::build::{JOB_LABEL, ROLE_LABEL, WORKER_LABEL};
use crate::crd::TrainingJob;
use crate::heal::WorkerPod;

/// The job's pods as the reconcile saw them.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// `workers[w]`: worker w's pod.
    pub workers: Vec<WorkerPod>,
    pub server: WorkerPod,
    /// The soonest a NotReady node's grace runs out: look again then.
    pub recheck: Option<Duration>,
    /// Names of the job's pods that exist (terminating ones included).
    pub existing: BTreeSet<String>,
    /// How many of them are terminating.
    pub terminating: usize,
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

/// Whether pods on a node in `health` are lost at `now`, and if not yet, how long until they are.
/// Kubernetes itself waits minutes (tolerationSeconds 300) before evicting; a training step waits
/// for nobody, so anyk gives a node only `grace` to come back.
pub fn node_lost(health: NodeHealth, now: Timestamp, grace: Duration) -> Result<bool, Duration> {
    match health {
        NodeHealth::Ready => Ok(false),
        NodeHealth::Gone => Ok(true),
        NodeHealth::NotReadySince(since) => {
            let waited = now.duration_since(since).unsigned_abs();
            if waited >= grace {
                Ok(true)
            } else {
                Err(grace - waited)
            }
        }
    }
}

/// One pod's state; `node_lost` is the verdict on its node.
pub fn classify(pod: &Pod, node_lost: bool) -> WorkerPod {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() {
        WorkerPod::Missing
    } else if phase == Some("Failed") || node_lost {
        WorkerPod::Failed
    } else if phase == Some("Succeeded") {
        WorkerPod::Exited
    } else if is_ready(pod) {
        WorkerPod::Ready
    } else {
        WorkerPod::Starting
    }
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn node_health(node: Option<&Node>) -> NodeHealth {
    let Some(node) = node else { return NodeHealth::Gone };
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status == "True" => NodeHealth::Ready,
        Some(c) => NodeHealth::NotReadySince(
            c.last_transition_time
                .as_ref()
                .map_or_else(Timestamp::now, |t| t.0),
        ),
        // A node that never reported is not yet a loss.
        None => NodeHealth::Ready,
    }
}

/// Lists the job's pods and reads the nodes they run on.
pub async fn observe(
    job: &TrainingJob,
    ns: &str,
    client: &Client,
    grace: Duration,
) -> Result<Observed, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={}", job.name_any())))
        .await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut health: BTreeMap<String, NodeHealth> = BTreeMap::new();
    for name in list
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
    {
        if let std::collections::btree_map::Entry::Vacant(slot) = health.entry(name) {
            let node = nodes.get_opt(slot.key()).await?;
            slot.insert(node_health(node.as_ref()));
        }
    }
    let now = Timestamp::now();
    let mut observed = Observed {
        workers: vec![WorkerPod::Missing; job.spec.workers as usize],
        server: WorkerPod::Missing,
        recheck: None,
        existing: list.items.iter().map(|p| p.name_any()).collect(),
        terminating: list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .count(),
    };
    for pod in &list.items {
        let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_ref());
        let lost = match on_node.map(|n| node_lost(health[n], now, grace)) {
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
    Ok(observed)
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
        assert_eq!(node_lost(since, at(10), grace), Err(Duration::from_secs(20)));
        assert_eq!(node_lost(since, at(30), grace), Ok(true));
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
        assert_eq!(classify(&pod("Running", "True"), false), WorkerPod::Ready);
        assert_eq!(classify(&pod("Running", "True"), true), WorkerPod::Failed);
        assert_eq!(classify(&pod("Pending", "False"), false), WorkerPod::Starting);
        assert_eq!(classify(&pod("Failed", "False"), false), WorkerPod::Failed);
        assert_eq!(classify(&pod("Succeeded", "False"), false), WorkerPod::Exited);
        let mut deleting = pod("Running", "True");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)));
        assert_eq!(classify(&deleting, false), WorkerPod::Missing);
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
        assert_eq!(node_health(Some(&node("True"))), NodeHealth::Ready);
        assert!(matches!(
            node_health(Some(&node("Unknown"))),
            NodeHealth::NotReadySince(_)
        ));
        assert_eq!(node_health(None), NodeHealth::Gone);
    }
}
