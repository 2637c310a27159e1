//! How the operator runs, the same for every job, and the one home of its defaults (the
//! `anyk-operator` flags and the tests both start from these).

use std::time::Duration;

pub use crate::policy::PodPolicy;

pub const DEFAULT_SERVER_IMAGE: &str = "ghcr.io/anyk-dev/anyk-server:0.1.0";
pub const DEFAULT_WORKER_IMAGE: &str = "ghcr.io/anyk-dev/anyk-worker:0.1.0";
/// Kubernetes itself waits 5 minutes before evicting pods from a NotReady node; a training step
/// waits for nobody, so anyk gives a node this long to come back.
pub const DEFAULT_NODE_GRACE_SECONDS: u64 = 30;
pub const DEFAULT_NETWORK_POLICIES: bool = true;
/// Off: a TrainingJob's annotation must not send the operator's calls anywhere a user likes.
pub const DEFAULT_ALLOW_SERVER_ENDPOINT_ANNOTATION: bool = false;
/// Replicas elect a leader on a Lease; only the leader reconciles, the others stand by.
pub const DEFAULT_LEADER_ELECTION: bool = true;
/// The Lease the replicas elect their leader on (the chart names it after the release).
pub const DEFAULT_LEASE_NAME: &str = "anyk-operator";
/// client-go's default: a standby takes over at most this long after the leader last renewed.
pub const DEFAULT_LEASE_DURATION_SECONDS: u64 = 15;

/// Default images, from the operator's configuration; a job's overrides win.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    pub server: String,
    pub worker: String,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            server: DEFAULT_SERVER_IMAGE.into(),
            worker: DEFAULT_WORKER_IMAGE.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub images: Images,
    /// How long a worker's node may be NotReady before its pods count as lost.
    pub node_grace: Duration,
    /// Create one NetworkPolicy per job that admits only its workers and the operator.
    pub network_policies: bool,
    /// The namespace the operator runs in (for the NetworkPolicy's operator rule).
    pub operator_namespace: Option<String>,
    /// Honour the `anyk.dev/server-endpoint` annotation (a server outside the cluster: tests and
    /// special setups). Off by default: with it, anyone who may annotate a job directs the
    /// operator's gRPC calls (layout pushes included) to an address of their choosing.
    pub allow_server_endpoint_annotation: bool,
    /// What jobs may put into their pods beyond the defaults.
    pub pod_policy: PodPolicy,
}

impl Settings {
    /// The defaults, with these images.
    pub fn new(images: Images) -> Self {
        Self {
            images,
            node_grace: Duration::from_secs(DEFAULT_NODE_GRACE_SECONDS),
            network_policies: DEFAULT_NETWORK_POLICIES,
            operator_namespace: None,
            allow_server_endpoint_annotation: DEFAULT_ALLOW_SERVER_ENDPOINT_ANNOTATION,
            pod_policy: PodPolicy::default(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::new(Images::default())
    }
}
