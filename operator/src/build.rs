//! The pure middle of the reconcile: the objects a TrainingJob should have, as plain values.
//! Names are deterministic (`{job}-server`, `{job}-worker-{i}`), so applying them twice (an
//! operator restart) changes nothing and never duplicates a pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::crd::{PodOverrides, TrainingJob};

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "anyk-operator";
/// The parameter server's gRPC port.
pub const SERVER_PORT: u16 = 50051;
pub const JOB_LABEL: &str = "anyk.dev/job";
pub const ROLE_LABEL: &str = "anyk.dev/role";
pub const WORKER_LABEL: &str = "anyk.dev/worker";
/// The `app.kubernetes.io/name` of the operator's own pods (set by the Helm chart).
pub const OPERATOR_APP: &str = "anyk-operator";
/// Annotation on a TrainingJob naming the server's gRPC endpoint, for a server the operator
/// cannot reach through the Service (run outside the cluster, as in the end-to-end test).
pub const SERVER_ENDPOINT_ANNOTATION: &str = "anyk.dev/server-endpoint";

/// Default images, from the operator's configuration; a job's overrides win.
#[derive(Debug, Clone)]
pub struct Images {
    pub server: String,
    pub worker: String,
}

pub fn server_name(job: &TrainingJob) -> String {
    format!("{}-server", job.name_any())
}

pub fn worker_name(job: &TrainingJob, worker: u32) -> String {
    format!("{}-worker-{worker}", job.name_any())
}

/// The URL workers use to reach the server (the Service's DNS name).
pub fn server_url(job: &TrainingJob) -> String {
    format!("http://{}:{SERVER_PORT}", server_name(job))
}

/// The endpoint the operator calls: the annotation's, or the Service's cluster DNS name.
pub fn control_endpoint(job: &TrainingJob) -> String {
    match job.annotations().get(SERVER_ENDPOINT_ANNOTATION) {
        Some(endpoint) => endpoint.clone(),
        None => format!(
            "http://{}.{}.svc:{SERVER_PORT}",
            server_name(job),
            job.namespace().unwrap_or_default()
        ),
    }
}

/// The Service in front of the parameter server.
pub fn service(job: &TrainingJob) -> Service {
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(job, server_name(job), labels(job, "server", None)),
        "spec": {
            "selector": labels(job, "server", None),
            "ports": [{ "name": "grpc", "port": SERVER_PORT, "targetPort": SERVER_PORT, "appProtocol": "grpc" }]
        }
    }))
}

/// Lets only the job's own workers and the operator reach its server's port: gradients and
/// layouts are the job's business alone. `operator_namespace` narrows the operator rule to the
/// namespace it runs in (unknown when it runs outside the cluster: then any namespace).
pub fn network_policy(job: &TrainingJob, operator_namespace: Option<&str>) -> NetworkPolicy {
    let operator_namespaces = match operator_namespace {
        Some(ns) => json!({ "matchLabels": { "kubernetes.io/metadata.name": ns } }),
        None => json!({}),
    };
    from_json(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(job, server_name(job), labels(job, "server", None)),
        "spec": {
            "podSelector": { "matchLabels": labels(job, "server", None) },
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [
                    { "podSelector": { "matchLabels": labels(job, "worker", None) } },
                    {
                        "namespaceSelector": operator_namespaces,
                        "podSelector": { "matchLabels": { "app.kubernetes.io/name": OPERATOR_APP } }
                    }
                ],
                "ports": [{ "protocol": "TCP", "port": SERVER_PORT }]
            }]
        }
    }))
}

/// The parameter-server pod.
pub fn server_pod(job: &TrainingJob, images: &Images) -> Pod {
    let spec = &job.spec;
    let t = &spec.training;
    let args: Vec<String> = [
        ("--listen", format!("0.0.0.0:{SERVER_PORT}")),
        ("--blocks", spec.dataset.blocks.to_string()),
        ("--steps", t.steps.to_string()),
        ("--batch", t.batch.to_string()),
        ("--seed", t.seed.to_string()),
        ("--optimizer", t.optimizer.clone()),
        ("--lr", t.learning_rate.to_string()),
        ("--momentum", t.momentum.to_string()),
        ("--checkpoint-dir", "/checkpoints".into()),
        ("--checkpoint-every", t.checkpoint_interval.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    let checkpoints = match &t.checkpoint_claim {
        Some(claim) => json!({ "name": "checkpoints", "persistentVolumeClaim": { "claimName": claim } }),
        None => json!({ "name": "checkpoints", "emptyDir": {} }),
    };
    let container = json!({
        "name": "server",
        "image": spec.server.image.clone().unwrap_or_else(|| images.server.clone()),
        "args": args,
        "ports": [{ "name": "grpc", "containerPort": SERVER_PORT }],
        // Ready once it listens, so the operator's first layout push finds it.
        "readinessProbe": { "tcpSocket": { "port": SERVER_PORT }, "periodSeconds": 2 },
        "volumeMounts": [{ "name": "checkpoints", "mountPath": "/checkpoints" }],
    });
    pod(
        job,
        server_name(job),
        labels(job, "server", None),
        container,
        vec![checkpoints],
        &spec.server,
    )
}

/// Worker pod `worker` (0..n).
pub fn worker_pod(job: &TrainingJob, worker: u32, images: &Images) -> Pod {
    let spec = &job.spec;
    let data_dir = format!("/data/{}", spec.dataset.path.trim_start_matches('/'));
    let model = match (&spec.model.builtin, &spec.model.torch_script) {
        (_, Some(path)) => format!("/data/{}", path.trim_start_matches('/')),
        (Some(name), None) => name.clone(),
        (None, None) => "mlp".into(),
    };
    let args = vec![
        "train".to_string(),
        "--server".into(),
        server_url(job),
        "--worker".into(),
        worker.to_string(),
        "--data".into(),
        data_dir,
        "--model".into(),
        model,
        "--hidden".into(),
        spec.model.hidden.to_string(),
        "--device".into(),
        "auto".into(),
    ];
    let data = match (&spec.dataset.persistent_volume_claim, &spec.dataset.host_path) {
        (Some(claim), _) => {
            json!({ "name": "data", "persistentVolumeClaim": { "claimName": claim, "readOnly": true } })
        }
        (None, Some(path)) => json!({ "name": "data", "hostPath": { "path": path, "type": "Directory" } }),
        (None, None) => json!({ "name": "data", "emptyDir": {} }),
    };
    let container = json!({
        "name": "worker",
        "image": spec.worker.image.clone().unwrap_or_else(|| images.worker.clone()),
        "args": args,
        "volumeMounts": [{ "name": "data", "mountPath": "/data", "readOnly": true }],
    });
    let mut pod = pod(
        job,
        worker_name(job, worker),
        labels(job, "worker", Some(worker)),
        container,
        vec![data],
        &spec.worker,
    );
    if let Some(key) = &spec.topology_key {
        // Spread workers over failure domains, so one domain holds as few copies of a block as can be.
        let spread = json!([{
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": { "matchLabels": labels(job, "worker", None) }
        }]);
        pod.spec.as_mut().expect("pod spec").topology_spread_constraints = Some(from_json(spread));
    }
    pod
}

fn labels(job: &TrainingJob, role: &str, worker: Option<u32>) -> BTreeMap<String, String> {
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

fn metadata(job: &TrainingJob, name: String, labels: BTreeMap<String, String>) -> Value {
    json!({
        "name": name,
        "namespace": job.namespace(),
        "labels": labels,
        // Kubernetes garbage collection removes the children when the job is deleted.
        "ownerReferences": job.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
    })
}

/// A pod that satisfies the "restricted" Pod Security Standard and mounts no API token:
/// training pods never talk to the Kubernetes API (design invariant 5).
fn pod(
    job: &TrainingJob,
    name: String,
    labels: BTreeMap<String, String>,
    mut container: Value,
    volumes: Vec<Value>,
    overrides: &PodOverrides,
) -> Pod {
    container["securityContext"] = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" }
    });
    if let Some(resources) = &overrides.resources {
        container["resources"] = serde_json::to_value(resources).expect("resources serialize");
    }
    from_json(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata(job, name, labels),
        "spec": {
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            // The operator replaces failed pods itself, after repairing the layout.
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": { "type": "RuntimeDefault" }
            },
            "containers": [container],
            "volumes": volumes,
            "nodeSelector": overrides.node_selector,
            "tolerations": overrides.tolerations,
        }
    }))
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("built objects are valid")
}
