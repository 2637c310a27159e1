//! Watch caches of the jobs' pods and of the nodes. A pass reads them instead of listing pods
//! and getting nodes from the apiserver: at 1,000 workers a list was 4.4 MB and most of a
//! repair's time. The same watches wake the controller: a pod change wakes its job, and a node's
//! readiness change wakes only the jobs with pods on it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Node, NodeStatus, Pod, PodSpec};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::children::JOB_LABEL;
use crate::crd::TrainingJob;
use crate::expectations::Expectations;

/// The caches of one watch scope (all namespaces, or one).
#[derive(Clone)]
pub struct Caches {
    pub namespace: Option<String>,
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
}

/// The watch streams that fill a scope's caches; the controller polls them.
pub struct Watches {
    pub pods: BoxStream<'static, Result<Pod, watcher::Error>>,
    pub nodes: BoxStream<'static, Result<Node, watcher::Error>>,
}

/// Starts the caches of a scope: the pods carrying the job label (trimmed to what a pass reads,
/// so a cached pod costs a few hundred bytes) and every node (trimmed to its conditions).
pub fn start(
    client: Client,
    namespace: Option<String>,
    expectations: Arc<Expectations>,
) -> (Caches, Watches) {
    let pods_api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (pods, pods_writer) = reflector::store();
    let pod_watch = watcher(pods_api, watcher::Config::default().labels(JOB_LABEL))
        .default_backoff()
        .modify(trim_pod)
        .reflect(pods_writer)
        .touched_objects()
        .predicate_filter(pod_state, Default::default())
        // The echo of the operator's own creation or deletion wakes nobody: the pass that made
        // it already decided with it in mind.
        .filter(move |pod| std::future::ready(!pod.as_ref().is_ok_and(|p| expectations.echoes(p))));
    let (nodes, nodes_writer) = reflector::store();
    let node_watch = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(trim_node)
        .reflect(nodes_writer)
        .touched_objects()
        .predicate_filter(node_readiness, Default::default());
    let caches = Caches {
        namespace,
        pods,
        nodes,
    };
    let watches = Watches {
        pods: pod_watch.boxed(),
        nodes: node_watch.boxed(),
    };
    (caches, watches)
}

impl Caches {
    /// The cached pods labelled as `job`'s (ownership is checked by the caller).
    pub fn pods_of(&self, job: &TrainingJob) -> Vec<Arc<Pod>> {
        let (name, ns) = (job.name_any(), job.namespace());
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.namespace() == ns && p.labels().get(JOB_LABEL) == Some(&name))
            .collect()
    }

    /// The newest resourceVersion among the cached pods: how far the pod watch has come.
    pub fn pods_progress(&self) -> Option<u64> {
        let versions = self.pods.state().into_iter();
        versions
            .filter_map(|p| p.metadata.resource_version.as_deref()?.parse().ok())
            .max()
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectRef::new(name))
    }

    /// The jobs with pods on `node`: who a readiness change of that node concerns.
    pub fn jobs_on(&self, node: &Node) -> Vec<ObjectRef<TrainingJob>> {
        let name = node.name_any();
        let mut jobs: Vec<ObjectRef<TrainingJob>> = self
            .pods
            .state()
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
            .filter_map(|p| {
                let job = p.labels().get(JOB_LABEL)?;
                Some(ObjectRef::new(job).within(&p.namespace()?))
            })
            .collect();
        jobs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        jobs.dedup();
        jobs
    }

    pub async fn ready(&self) {
        // Errors only when a writer is dropped, which ends the operator anyway.
        let _ = self.pods.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }
}

/// What a pass reads of a pod: identity, labels, owners, deletion, node, phase, conditions and
/// container states (for the first error line).
fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    let node_name = pod.spec.as_mut().and_then(|s| s.node_name.take());
    pod.spec = Some(PodSpec {
        node_name,
        ..PodSpec::default()
    });
}

fn trim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.metadata.labels = None;
    node.spec = None;
    let conditions = node.status.take().and_then(|s| s.conditions);
    node.status = Some(NodeStatus {
        conditions: conditions.map(|cs| cs.into_iter().filter(|c| c.type_ == "Ready").collect()),
        ..NodeStatus::default()
    });
}

/// A pod wakes its job only when what a pass decides on changes.
fn pod_state(pod: &Pod) -> Option<u64> {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    let key = (
        status.and_then(|s| s.phase.clone()),
        ready,
        pod.metadata.deletion_timestamp.is_some(),
        pod.metadata.uid.clone(),
    );
    Some(hash(&key))
}

/// A node wakes jobs only when its readiness changes (not on every heartbeat).
fn node_readiness(node: &Node) -> Option<u64> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            (
                c.status.clone(),
                c.last_transition_time.as_ref().map(|t| t.0.to_string()),
            )
        });
    Some(hash(&ready))
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
