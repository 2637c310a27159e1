//! The TrainingJob resource: what users `kubectl apply`. Validation lives on the types, so the
//! apiserver itself rejects a job whose coverage bound cannot hold.

use anyk_core::{GradientPrecision, Numerics, OptimizerKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

mod data;
mod progress;
pub use data::{DataSource, ExportedModel, SOURCE_CSV_HEADERS};
pub use progress::{PodReplacement, Progress, TrainingFailure, WorkerIncarnation};

/// A straggler-proof, self-healing training job: a data set in m blocks, r copies of each block on
/// n workers so that any k of them hold every block, and a parameter server that aggregates each
/// step as soon as the gradients it has cover every block.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "anyk.dev",
    version = "v1alpha1",
    kind = "TrainingJob",
    namespaced,
    shortname = "tj",
    doc = "A straggler-proof, self-healing training job: a data set in m blocks, r copies of each block on n workers so that any k of them hold every block, and a parameter server that aggregates each step as soon as the gradients it has cover every block.",
    status = "TrainingJobStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Workers","type":"string","jsonPath":".status.workersReady"}"#,
    printcolumn = r#"{"name":"Margin","type":"integer","jsonPath":".status.coverageMargin"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.progress.step"}"#,
    printcolumn = r#"{"name":"Loss","type":"number","jsonPath":".status.progress.loss"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.targetWorkers <= self.workers").message("targetWorkers must not exceed workers"),
    validation = Rule::new("self.replication <= self.workers").message("replication must not exceed workers: each copy of a block needs its own worker"),
    validation = Rule::new("self.replication >= self.workers - self.targetWorkers + 1").message("replication must be at least workers - targetWorkers + 1, so that any targetWorkers workers hold every block"),
    validation = status_fits_in_etcd(),
    validation = Rule::new("!has(self.model.torchScript) || !self.model.torchScript.contains('://') || has(self.dataset.source)").message("a model.torchScript URI is fetched by the staging of dataset.source: set dataset.source too"),
    validation = Rule::new("!has(self.dataset.source) || !has(self.dataset.source.labels) || self.dataset.source.labels != 'value' || (has(self.model.contract) && self.model.contract == 'loss')").message("labels value (real-valued targets) need a model with contract loss: cross-entropy takes class ids")
)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobSpec {
    /// Where the block files live and how many blocks there are. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("dataset is immutable once the job exists"))]
    pub dataset: Dataset,
    /// r: identical copies of every block, each on a different worker (at least 2). Immutable.
    #[schemars(range(min = 2, max = 4096))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replication is immutable once the job exists"))]
    pub replication: u32,
    /// n: number of worker pods. Immutable (the layout's reduction units depend on it).
    #[schemars(range(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("workers is immutable once the job exists"))]
    pub workers: u32,
    /// k: any targetWorkers workers together hold every block, so each step waits for the fastest
    /// k and the job tolerates workers - targetWorkers stragglers or failures. Immutable.
    #[schemars(range(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("targetWorkers is immutable once the job exists"))]
    pub target_workers: u32,
    /// The model to train. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("model is immutable once the job exists"))]
    pub model: Model,
    /// Optimization settings.
    #[serde(default)]
    pub training: Training,
    /// Overrides for the parameter-server pod.
    #[serde(default)]
    pub server: PodOverrides,
    /// Overrides for the worker pods (for example `nvidia.com/gpu` limits).
    #[serde(default)]
    pub worker: PodOverrides,
    /// Spread workers across this node label (for example `topology.kubernetes.io/zone`) so that
    /// one failure domain holds as few copies of a block as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_key: Option<String>,
    /// Delete the pods but keep the checkpoint; set back to false to resume from it.
    #[serde(default)]
    pub suspend: bool,
    /// Pod replacements (failed or lost workers, a failed server) allowed within any 10 minutes;
    /// one more and the job fails (BackoffLimitExceeded). Replacements of one pod also back off
    /// exponentially (1 s doubling to 60 s), so a pod that can never start does not loop.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 1000))]
    pub backoff_limit: u32,
    /// Fail the job (DeadlineExceeded) when it has run longer than this, from its first pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Delete the job this many seconds after it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// The most block copies (`dataset.blocks * replication`) a job may have, so that its status fits
/// in etcd's 1.5 MiB per object. The status grows with m and r through `layout.holders` (per block
/// r worker ids, each at most 4 digits and a comma as n <= 4096, and brackets: 5r + 2 bytes of
/// JSON) and `underReplicatedBlocks` (5 digits and a comma per block): 5mr + 8m <= 9mr bytes as
/// r >= 2, 1.125 MiB at this bound, which leaves 384 KiB for what n and the conditions bound
/// (`layout.members` and `lastRepair.lostWorkers` at most 5n bytes each, 40 KiB at n = 4096).
pub const MAX_BLOCK_COPIES: u32 = 131_072;

fn status_fits_in_etcd() -> kube::core::Rule {
    let message = format!(
        "dataset.blocks * replication must be at most {MAX_BLOCK_COPIES} so that the job's status fits in etcd (1.5 MiB per object)"
    );
    kube::core::Rule::new(format!(
        "self.dataset.blocks * self.replication <= {MAX_BLOCK_COPIES}"
    ))
    .message(message.as_str())
}

/// The data set, split by `anyk data split` into `block-NNNNN.safetensors` files.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.persistentVolumeClaim) != has(self.hostPath)").message("set exactly one of persistentVolumeClaim and hostPath"))]
#[serde(rename_all = "camelCase")]
pub struct Dataset {
    /// Name of a PersistentVolumeClaim in the job's namespace that holds the blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<String>,
    /// A directory on every node that holds the blocks (tests and single-node clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Directory of the block files inside the volume.
    #[serde(default = "default_path")]
    pub path: String,
    /// m: number of blocks.
    #[schemars(range(min = 1, max = 65536))]
    pub blocks: u32,
    /// Where the data comes from, when the operator is to stage it: it then runs `anyk data
    /// split` as a Job into `path` on the volume above before any worker starts (skipped when
    /// the blocks there already match). Without it the blocks must already be there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataSource>,
}

fn default_backoff_limit() -> u32 {
    6
}

fn default_path() -> String {
    "/".into()
}

/// A built-in model, or a TorchScript file on the data volume.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.builtin) != has(self.torchScript)").message("set exactly one of builtin and torchScript"),
    validation = Rule::new("!has(self.builtin) || !has(self.contract) || self.contract == 'logits'").message("the built-in mlp returns logits: contract loss needs a torchScript model"))]
#[serde(rename_all = "camelCase")]
pub struct Model {
    /// Name of a built-in model: `mlp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == 'mlp'").message("the only built-in model is mlp"))]
    pub builtin: Option<String>,
    /// A TorchScript file (what its forward takes: `contract`): a path on the data volume, or an
    /// `s3://` or `http(s)://` URI, fetched beside the blocks (`model.pt`) by the staging of
    /// `dataset.source` (same storage and credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_script: Option<String>,
    /// `logits`: forward(x) returns logits, trained with cross-entropy against class ids (the
    /// built-in mlp); `loss`: forward(x, y) returns the scalar loss itself (TorchScript only:
    /// regression, sequence models, anything).
    #[serde(default)]
    pub contract: anyk_core::ModelContract,
    /// Hidden units of the built-in MLP.
    #[serde(default = "default_hidden")]
    #[schemars(range(min = 1, max = 65536))]
    pub hidden: u32,
}

fn default_hidden() -> u32 {
    128
}

/// Optimization settings. Only `steps` (which may only grow) and `checkpointInterval` change once
/// the job exists: a resumed job must compute what the uninterrupted one would have.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.checkpointClaim) == has(oldSelf.checkpointClaim) && (!has(self.checkpointClaim) || self.checkpointClaim == oldSelf.checkpointClaim)").message("training.checkpointClaim is immutable: the server resumes from the checkpoint in that claim"),
    validation = Rule::new("has(self.clipNorm) == has(oldSelf.clipNorm) && (!has(self.clipNorm) || self.clipNorm == oldSelf.clipNorm)").message("training.clipNorm is immutable: a changed clip would silently break bit-identical resumes"),
    validation = Rule::new("!(self.strict && self.gradientPrecision == 'bf16')").message("training.gradientPrecision bf16 cannot be combined with strict: strict mode compares each block's f32 bits from two holders"))]
#[serde(rename_all = "camelCase")]
pub struct Training {
    /// Total training steps.
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("training.steps may only grow: the job may already be past a smaller value"))]
    pub steps: u64,
    /// Minibatch size drawn from each block per step.
    #[schemars(range(min = 1, max = 1048576))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("training.batch is immutable: a changed batch would silently break bit-identical resumes"))]
    pub batch: u32,
    /// `adam` or `sgd` (with momentum).
    #[x_kube(validation = Rule::new("self == oldSelf").message("training.optimizer is immutable: the checkpoint holds the optimizer's state"))]
    pub optimizer: OptimizerKind,
    /// Learning rate.
    #[x_kube(validation = Rule::new("self > 0.0").message("learningRate must be positive"), validation = Rule::new("self == oldSelf").message("training.learningRate is immutable: a changed rate would silently break bit-identical resumes"))]
    pub learning_rate: f64,
    /// Momentum for sgd.
    #[x_kube(validation = Rule::new("self >= 0.0 && self < 1.0").message("momentum must be in [0, 1)"), validation = Rule::new("self == oldSelf").message("training.momentum is immutable: a changed momentum would silently break bit-identical resumes"))]
    pub momentum: f64,
    /// Seed of initialization and minibatch sampling (equal seeds give bit-identical jobs on CPU).
    #[x_kube(validation = Rule::new("self == oldSelf").message("training.seed is immutable: a changed seed would silently break bit-identical resumes"))]
    pub seed: u64,
    /// Write a checkpoint every this many steps.
    #[schemars(range(min = 1))]
    pub checkpoint_interval: u64,
    /// PersistentVolumeClaim for checkpoints; without it a server restart starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_claim: Option<String>,
    /// `reproducible` (default): workers pin the library settings that change a gradient's bits
    /// between node types (CPU kernel capability, BLAS code path, threads; on CUDA deterministic
    /// algorithms without TF32), so every holder of a block computes the same bits and results
    /// do not depend on which worker was fastest. `native`: each node's fastest kernels; copies of
    /// a block may then differ between node types (the server counts such disagreements).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("training.numerics is immutable: changed kernels would silently break bit-identical resumes"))]
    pub numerics: Numerics,
    /// Accept a block's gradient only once two of its holders sent the same bits: every step is
    /// verified, at the cost of computing most blocks twice.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("training.strict is immutable once the job exists"))]
    pub strict: bool,
    /// Clip each step's gradient (the mean over all blocks) to this L2 norm when it is longer;
    /// deterministic, so resumes stay bit-identical. No clipping when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0.0").message("clipNorm must be positive"))]
    pub clip_norm: Option<f64>,
    /// What workers send a whole reduction unit's gradient sum in: `f32` (default), or `bf16`:
    /// each unit's sum rounded to nearest even, half the bytes per push. Deterministic (the same
    /// bits under any arrival order and failure), but not the bits of an f32 job. Not with strict.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("training.gradientPrecision is immutable: changed rounding would silently break bit-identical resumes"))]
    pub gradient_precision: GradientPrecision,
}

impl Default for Training {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch: 32,
            optimizer: OptimizerKind::Adam,
            learning_rate: 0.01,
            momentum: 0.9,
            seed: 1,
            checkpoint_interval: 100,
            checkpoint_claim: None,
            numerics: Numerics::Reproducible,
            strict: false,
            clip_norm: None,
            gradient_precision: GradientPrecision::F32,
        }
    }
}

/// Pod settings for the server or the workers.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Container image (defaults to the operator's configured image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource requests and limits, for example `{"limits": {"nvidia.com/gpu": "1"}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<std::collections::BTreeMap<String, String>>,
    /// Tolerations added to the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<k8s_openapi::api::core::v1::Toleration>>,
}

/// What the operator observed; written by the operator only.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// Pending, Running, Degraded, CoverageLost, Suspended, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Ready, Progressing, CoverageDegraded, CoverageLost, ReplicasDisagree, Succeeded, Failed and
    /// Suspended.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Epoch of the block layout the server holds; it grows with every repair or rebalance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout_epoch: Option<u64>,
    /// How many more workers may be lost before some block has no live holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage_margin: Option<i64>,
    /// Blocks with fewer live copies than the replication asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub under_replicated_blocks: Vec<u32>,
    /// Ready workers out of n, as shown by `kubectl get tj` (for example `7/8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_ready: Option<String>,
    /// While the operator creates a big job's pods in batches: how many exist so far (for
    /// example `512/1001`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_created: Option<String>,
    /// Worker counts.
    #[serde(default)]
    pub workers: WorkerCounts,
    /// Training progress reported by the parameter server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The most recent repair of the layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair: Option<Repair>,
    /// When the server reported the final step (RFC 3339); ttlSecondsAfterFinished counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Times the parameter-server pod was replaced after failing or vanishing.
    #[serde(default)]
    pub server_restarts: u32,
    /// When the operator first saw the job (RFC 3339); activeDeadlineSeconds counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// Pod replacements in the last 10 minutes (the backoff window), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replacements: Vec<PodReplacement>,
    /// Faulty worker incarnations already replaced (a report about one is acted on once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced_faulty: Vec<WorkerIncarnation>,
    /// The trained model's files, once the job succeeded and they were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ExportedModel>,
    /// The current block layout, kept here so that an operator restart continues from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutState>,
}

/// Where the block copies are.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LayoutState {
    /// Grows with every repair or rebalance; the server rejects older epochs.
    pub epoch: u64,
    /// For each block, its holders (worker ids), primary first.
    pub holders: Vec<Vec<u32>>,
    /// Workers that are part of the layout (not lost).
    pub members: Vec<u32>,
}

/// Worker pod counts.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerCounts {
    /// Worker pods that are ready.
    pub ready: u32,
    /// Worker pods lost so far (failed, deleted, evicted, or on a lost node).
    pub failed: u32,
    /// Replacement pods created so far.
    pub replaced: u32,
}

/// One repair of the layout after lost workers.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    /// The layout epoch the repair produced.
    pub epoch: u64,
    /// Workers that were lost.
    pub lost_workers: Vec<u32>,
    /// Block copies that moved.
    pub moved_blocks: u32,
    /// When the operator wrote the repair to status, before acting on it (RFC 3339).
    pub time: String,
}

/// Where the generated CRD is committed: for `kubectl apply`, and inside the Helm chart (which
/// installs and upgrades it as a template, since Helm never upgrades its `crds/` folder).
pub const CRD_PATHS: [&str; 2] = ["crds/trainingjob.yaml", "charts/anyk/files/trainingjob.yaml"];

/// The CRD as YAML, exactly what the files in [`CRD_PATHS`] must contain.
pub fn crd_yaml() -> String {
    let header = "# Generated by `cargo run -p anyk-operator --bin anyk-crdgen`; do not edit by hand.\n";
    let mut crd = TrainingJob::crd();
    // `helm uninstall` must not take every TrainingJob in the cluster with it.
    crd.metadata.annotations = Some([("helm.sh/resource-policy".to_string(), "keep".to_string())].into());
    format!("{header}{}", serde_yaml::to_string(&crd).expect("CRD serializes"))
}
