//! The job under test: its namespace, the example applied, its status, the server's own report,
//! an in-cluster evaluation of the final checkpoint, and the undisturbed run it must equal.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyk_operator::crd::{TrainingJob, TrainingJobStatus};
use anyk_proto::launch::{EvaluateLaunch, ModelLaunch};
use anyk_proto::tls::{Credentials, Identity, Role};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::{MINUTE, cluster};

/// The example's job name.
pub const JOB: &str = "digits";
/// Where `hack/real-cluster` installs the operator.
pub const OPERATOR_NAMESPACE: &str = "anyk-system";

/// A namespace of the real-node cluster under the restricted Pod Security Standard.
pub struct Namespace {
    pub client: Client,
    pub name: String,
}

impl Namespace {
    pub async fn create() -> Self {
        let client = anyk_testkit::client_for(cluster::kubeconfig()).await;
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000;
        let name = format!("anyk-real-{unique}");
        let ns: K8sNamespace = serde_json::from_value(json!({ "metadata": {
            "name": name,
            "labels": { "pod-security.kubernetes.io/enforce": "restricted" }
        }}))
        .unwrap();
        Api::<K8sNamespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        Self { client, name }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// `kubectl apply` of `examples/digits.yaml` as written, but for `steps` steps.
    pub fn apply_example(&self, steps: u64) {
        let example =
            std::fs::read_to_string(anyk_testkit::repo_root().join("examples/digits.yaml")).unwrap();
        let written = "    steps: 300\n";
        assert!(example.contains(written), "the example trains 300 steps");
        let path = std::env::temp_dir().join(format!("{}-digits.yaml", self.name));
        std::fs::write(&path, example.replace(written, &format!("    steps: {steps}\n"))).unwrap();
        cluster::tool(
            "kubectl",
            &["apply", "-n", &self.name, "-f", path.to_str().unwrap()],
        );
    }

    /// A supervisor's certificate from the job's authority (`{job}-tls-ca`, the operator's).
    pub async fn operator_credentials(&self) -> Credentials {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.name);
        let secret = secrets.get(&format!("{JOB}-tls-ca")).await.unwrap();
        let ca = anyk_operator::tls::authority_in(&secret).expect("the authority's files");
        let job = Api::<TrainingJob>::namespaced(self.client.clone(), &self.name)
            .get(JOB)
            .await
            .unwrap();
        let uid = job.metadata.uid.unwrap();
        ca.issue(&Identity::new(&uid, Role::Operator), &[], &[]).unwrap()
    }

    pub async fn pod(&self, name: &str) -> Pod {
        self.pods().get(name).await.unwrap()
    }

    pub async fn cleanup(self) {
        let _ = Api::<K8sNamespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}

/// Polls the job's status (every 100 ms) until `done` holds; panics naming `what` after `timeout`.
pub async fn wait_status(
    jobs: &Api<TrainingJob>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&TrainingJobStatus) -> bool,
) -> TrainingJobStatus {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        if let Ok(job) = jobs.get(JOB).await {
            let status = job.status.unwrap_or_default();
            if done(&status) {
                return status;
            }
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {timeout:?}; last status {last:#?}");
}

/// The server's own report, straight from its pod's Control port (the host routes to pod
/// addresses), asked as the operator asks: with a certificate of the job's supervisor.
pub async fn server_progress(ns: &Namespace, pod: &Pod) -> Option<anyk_proto::v1::Progress> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let credentials = ns.operator_credentials().await;
    let tls = credentials.client_config(&format!("{JOB}-server"));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{ip}:50052"))
        .ok()?
        .tls_config(tls)
        .ok()?
        .connect_lazy();
    let mut control = anyk_proto::v1::control_client::ControlClient::new(channel);
    let call = control.get_progress(anyk_proto::v1::ProgressRequest {});
    let reply = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()?
        .ok()?;
    Some(reply.into_inner())
}

/// Whether a caller without the job's certificate gets nothing from the server (plaintext
/// to its Control and Training ports).
pub async fn refuses_plaintext(pod: &Pod) -> bool {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
    for port in [50051, 50052] {
        let channel = anyk_proto::transport::channel(&format!("http://{ip}:{port}")).unwrap();
        let mut control = anyk_proto::v1::control_client::ControlClient::new(channel);
        let call = control.get_progress(anyk_proto::v1::ProgressRequest {});
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), call).await {
            return false;
        }
    }
    true
}

/// Test accuracy of the final checkpoint, evaluated in the cluster by a Job running the worker
/// image the operator uses, on the checkpoint and data claims of the job.
pub async fn evaluate(ns: &Namespace, steps: u64) -> f64 {
    let job_uid = Api::<TrainingJob>::namespaced(ns.client.clone(), &ns.name)
        .get(JOB)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let launch = EvaluateLaunch {
        checkpoint: PathBuf::from(format!("/checkpoints/{job_uid}/ckpt-{steps:012}.anyk")),
        samples: None,
        model: ModelLaunch {
            hidden: 128,
            ..ModelLaunch::new("/data")
        },
    };
    let claim = |name: &str, claim: &str| json!({ "name": name, "persistentVolumeClaim": { "claimName": claim, "readOnly": true } });
    let job: Job = serde_json::from_value(json!({
        "metadata": { "name": "digits-evaluate" },
        "spec": { "backoffLimit": 0, "template": { "spec": {
            "restartPolicy": "Never",
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                 "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "evaluate", "image": worker_image(&ns.client).await, "args": launch.args(),
                "volumeMounts": [
                    { "name": "data", "mountPath": "/data", "readOnly": true },
                    { "name": "checkpoints", "mountPath": "/checkpoints", "readOnly": true }
                ],
                "securityContext": { "allowPrivilegeEscalation": false,
                                     "capabilities": { "drop": ["ALL"] } }
            }],
            "volumes": [claim("data", "digits-blocks"), claim("checkpoints", "digits-checkpoints")]
        }}}
    }))
    .unwrap();
    Api::<Job>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &job)
        .await
        .unwrap();
    let pods = ns.pods();
    let selector = ListParams::default().labels("job-name=digits-evaluate");
    let pod = anyk_testkit::eventually("the evaluation finished", 3 * MINUTE, || {
        let pods = pods.clone();
        let selector = selector.clone();
        async move {
            let pod = pods.list(&selector).await.ok()?.items.into_iter().next()?;
            let phase = pod.status.as_ref()?.phase.clone()?;
            matches!(phase.as_str(), "Succeeded" | "Failed").then_some(pod)
        }
    })
    .await;
    let name = pod.metadata.name.unwrap();
    let log = pods.logs(&name, &LogParams::default()).await.unwrap();
    let line = log
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("evaluation log:\n{log}"));
    let result: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(result["step"].as_u64(), Some(steps), "{result}");
    result["accuracy"].as_f64().unwrap()
}

/// The worker image the operator was installed with (ANYK_WORKER_IMAGE of its Deployment).
async fn worker_image(client: &Client) -> String {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = deployments.list(&ListParams::default()).await.unwrap();
    list.items
        .iter()
        .flat_map(|d| d.spec.iter().flat_map(|s| s.template.spec.iter()))
        .flat_map(|s| s.containers.iter().flat_map(|c| c.env.iter().flatten()))
        .find(|e| e.name == "ANYK_WORKER_IMAGE")
        .and_then(|e| e.value.clone())
        .expect("the operator's Deployment names its worker image")
}

/// The final parameters' digest of `anyk local --no-faults` with the example's settings.
pub fn anyk_local_digest(steps: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    // hack/test builds every binary before the tests, beside the operator's.
    let anyk = std::path::Path::new(env!("CARGO_BIN_EXE_anyk-operator")).with_file_name("anyk");
    let out = Command::new(anyk)
        .args([
            "local",
            "--no-faults",
            "--workers",
            "8",
            "--replication",
            "3",
            "--target",
            "6",
        ])
        .args([
            "--blocks", "24", "--batch", "32", "--lr", "0.01", "--seed", "1", "--hidden", "128",
        ])
        .args(["--steps", &steps.to_string()])
        .arg("--workdir")
        .arg(dir.path().join("run"))
        .arg("--summary")
        .arg(&summary)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "anyk local failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap();
    summary["param_sha256"].as_str().unwrap().to_string()
}
