//! What the status reports from the parameter server, and the replacement history.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Progress from the parameter server.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Completed steps.
    pub step: u64,
    /// Steps the job trains for.
    #[serde(default)]
    pub total_steps: u64,
    /// Mean training loss of the last step (absent before the first step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Recent steps per second.
    pub steps_per_second: f64,
    /// The layout epoch the server holds (equal to layoutEpoch once the push went through).
    #[serde(default)]
    pub server_layout_epoch: u64,
    /// Worker gradients a step did not wait for, summed over steps.
    #[serde(default)]
    pub stragglers_skipped: u64,
    /// Gradients that arrived after their step was aggregated.
    #[serde(default)]
    pub late_gradients_dropped: u64,
    /// Block copies whose gradient differed from another holder's copy of the same block and
    /// step (a bad core or GPU, or workers on different node types with `numerics: native`).
    #[serde(default)]
    pub replica_disagreements: u64,
    /// SHA-256 of the parameters after the last completed step (little-endian f32 bytes), the
    /// same digest `anyk local` prints: equal digests mean bit-identical models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_sha256: Option<String>,
    /// Workers the server reports faulty (outvoted repeatedly by the other holders of their
    /// blocks since they joined), with the join count the report is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faulty_workers: Vec<WorkerIncarnation>,
    /// Set when training failed: a step would have made the parameters non-finite (for example
    /// gradients whose sum overflows), so the server did not apply it and takes no more
    /// gradients. The job is then Failed with reason NonFinite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<TrainingFailure>,
}

/// A step the server did not apply, and why.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrainingFailure {
    /// The step that was not applied; the parameters are those after the step before.
    pub step: u64,
    /// What was not finite, as the server said.
    pub reason: String,
}

/// A pod deleted to be replaced, and when.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodReplacement {
    pub pod: String,
    /// RFC 3339.
    pub time: String,
}

/// One incarnation of a worker id: its n-th join to the server.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerIncarnation {
    pub worker: u32,
    pub joins: u64,
}
