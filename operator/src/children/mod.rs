//! The objects a TrainingJob owns, as plain typed values (pure): the server pod, its Service and
//! NetworkPolicy, and the worker pods. Names are deterministic (`{job}-server`,
//! `{job}-worker-{i}`), so applying them twice (an operator restart) changes nothing and never
//! duplicates a pod.

mod helpers;
mod network;
mod pods;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::crd::TrainingJob;
pub use crate::settings::Images;
pub use helpers::{
    BAD_DATA_EXIT, HELPER_OF_LABEL, Helper, JOB_NAME_LABEL, SAFETENSORS_FILE, TORCHSCRIPT_FILE, model_path,
};
pub use network::{network_policy, same_service, service, worker_network_policy};
pub use pods::{server_pod, with_tls_items, worker_pod};

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "anyk-operator";
/// The parameter server's Training port (workers), mutual TLS.
pub const SERVER_PORT: u16 = 50051;
/// The parameter server's Control port (the operator only), mutual TLS.
pub const CONTROL_PORT: u16 = 50052;
/// The parameter server's plaintext port with only the gRPC health service (the kubelet's probe).
pub const HEALTH_PORT: u16 = 50053;
pub const JOB_LABEL: &str = "anyk.dev/job";
pub const ROLE_LABEL: &str = "anyk.dev/role";
pub const WORKER_LABEL: &str = "anyk.dev/worker";
/// The `app.kubernetes.io/name` of the operator's own pods (set by the Helm chart).
pub const OPERATOR_APP: &str = "anyk-operator";
/// Annotation on a TrainingJob naming the server's gRPC endpoint, for a server the operator
/// cannot reach through the Service (run outside the cluster, as in the end-to-end test).
pub const SERVER_ENDPOINT_ANNOTATION: &str = "anyk.dev/server-endpoint";

/// What a pod of the job does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Server,
    /// Every worker, or one of them.
    Worker(Option<u32>),
}

pub fn server_name(job: &TrainingJob) -> String {
    format!("{}-server", job.name_any())
}

pub fn worker_name(job: &TrainingJob, worker: u32) -> String {
    format!("{}-worker-{worker}", job.name_any())
}

/// The names of every pod the job should have: the server's, then the workers' in id order.
pub fn pod_names(job: &TrainingJob) -> impl Iterator<Item = String> + '_ {
    std::iter::once(server_name(job)).chain((0..job.spec.workers).map(|w| worker_name(job, w)))
}

/// The URL workers use to reach the server (the Service's DNS name).
pub fn server_url(job: &TrainingJob) -> String {
    format!("https://{}:{SERVER_PORT}", server_name(job))
}

/// The endpoint the operator calls: the Service's cluster DNS name, the Control port.
pub fn control_endpoint(job: &TrainingJob) -> String {
    format!(
        "https://{}.{}.svc:{CONTROL_PORT}",
        server_name(job),
        job.namespace().unwrap_or_default()
    )
}

/// The names the server's certificate is valid for: the Service's, as workers (same namespace)
/// and the operator (`.ns.svc`) call it, and its fully qualified form.
pub fn server_dns_names(job: &TrainingJob) -> Vec<String> {
    let name = server_name(job);
    let ns = job.namespace().unwrap_or_default();
    vec![
        name.clone(),
        format!("{name}.{ns}"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}.svc.cluster.local"),
    ]
}

/// The Secret with the TLS credentials of the pod `pod` (`{pod}-tls`).
pub fn tls_secret_name(pod: &str) -> String {
    format!("{pod}-tls")
}

/// The annotation's endpoint of a server outside the cluster, when the operator allows it.
pub fn external_endpoint(job: &TrainingJob, allowed: bool) -> Option<String> {
    allowed
        .then(|| job.annotations().get(SERVER_ENDPOINT_ANNOTATION).cloned())
        .flatten()
}

fn labels(job: &TrainingJob, role: Role) -> BTreeMap<String, String> {
    let (role, worker) = match role {
        Role::Server => ("server", None),
        Role::Worker(worker) => ("worker", worker),
    };
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            FIELD_MANAGER.to_string(),
        ),
        (JOB_LABEL.to_string(), job.name_any()),
        (ROLE_LABEL.to_string(), role.to_string()),
    ]);
    if let Some(w) = worker {
        labels.insert(WORKER_LABEL.to_string(), w.to_string());
    }
    labels
}

fn metadata(job: &TrainingJob, name: String, role: Role) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: job.namespace(),
        labels: Some(labels(job, role)),
        // Kubernetes garbage collection removes the children when the job is deleted.
        owner_references: job.controller_owner_ref(&()).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}
