//! Data staging and model export in the TrainingJob resource: where a job's data comes from, and
//! the files its trained model was written to.

use anyk_core::dataset::LabelKind;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The values of `source.csvHeader`, as `anyk data split --header` takes them.
pub const SOURCE_CSV_HEADERS: [&str; 3] = ["auto", "yes", "no"];

/// A data set to stage: a CSV (with or without a header; label in the last column unless
/// `labelColumn` says otherwise; optionally gzip'd) or safetensors file, or a directory or S3
/// prefix of them.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.uri.startsWith('s3://') || self.uri.matches('^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+')").message("an s3 source is s3://BUCKET/KEY (a KEY ending in / means every data file under it)"))]
#[serde(rename_all = "camelCase")]
pub struct DataSource {
    /// `s3://BUCKET/KEY`, `http(s)://...`, or a path on the job's data volume.
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// S3-compatible storage other than AWS (MinIO, Ceph, ...): its URL, e.g.
    /// `http://minio.storage:9000`. With `region` and `credentialsSecret`, for the `s3://` URIs
    /// of this source and of `model.torchScript`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The bucket's region (default us-east-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Secret in the job's namespace with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// `class` (class ids 0..C, for `logits` models) or `value` (real-valued targets).
    #[serde(default)]
    pub labels: LabelKind,
    /// Whether CSV files start with a header row: `auto` (when a first-row field is not a
    /// number), `yes` or `no`.
    #[serde(default = "default_header")]
    #[x_kube(validation = Rule::new("self in ['auto', 'yes', 'no']").message("csvHeader must be auto, yes or no"))]
    pub csv_header: String,
    /// The CSV label column, by header name or 0-based index (default: the last column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Fraction of samples held out for testing.
    #[serde(default = "default_test_fraction")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub test_fraction: f64,
    /// Seed of the shuffle that assigns samples to blocks.
    #[serde(default)]
    pub seed: u64,
}

fn default_header() -> String {
    "auto".into()
}

fn default_test_fraction() -> f64 {
    0.2
}

/// Where the trained model was written (paths on the checkpoint claim) and how it did on the
/// held-out test split.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExportedModel {
    /// The claim the files are on.
    pub claim: String,
    /// The parameters under the model's own names (safetensors).
    pub safetensors: String,
    /// The model as TorchScript with the trained weights (`torch.jit.load`): the user's module, or
    /// the built-in mlp traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_script: Option<String>,
    /// Test accuracy (classifiers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// The model's mean loss on the test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    /// The step the files were written from.
    pub step: u64,
    /// The model was trained on features divided by this (the largest magnitude in the training
    /// split, `manifest.json`'s `scale`): divide inputs by it before calling the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_scale: Option<f64>,
}
