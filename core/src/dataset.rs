//! A data set's layout on disk, as `anyk data split` writes it and workers read it: one
//! `block-NNNNN.safetensors` per block and a held-out `test.safetensors` (each with tensors
//! [`FEATURES_TENSOR`], f32 [N, F], and [`LABELS_TENSOR`]: i64 [N] class ids, or f32 [N] values
//! for regression, as [`Manifest::labels`] says), and `manifest.json` ([`Manifest`]). Names and
//! types only; reading and writing live with the callers.

use serde::{Deserialize, Serialize};

/// The manifest's file name in a data directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The held-out test split's file name.
pub const TEST_FILE: &str = "test.safetensors";
/// The features tensor in every sample file: f32, [samples, features].
pub const FEATURES_TENSOR: &str = "x";
/// The labels tensor in every sample file: i64 [samples] (classes) or f32 [samples] (values).
pub const LABELS_TENSOR: &str = "y";
/// The most classes a data set may have: a label beyond it is far more likely a regression
/// target or a wrong column than a class id, and a classifier's last layer would be huge.
pub const MAX_CLASSES: u64 = 100_000;

/// What a sample's label is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum LabelKind {
    /// A class id in 0..classes (i64 on disk): for classifiers (`forward(x) -> logits`).
    #[default]
    Class,
    /// A real-valued target (f32 on disk): for models that compute their own loss.
    Value,
}

impl std::fmt::Display for LabelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LabelKind::Class => "class",
            LabelKind::Value => "value",
        })
    }
}

impl std::str::FromStr for LabelKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "class" => Ok(LabelKind::Class),
            "value" => Ok(LabelKind::Value),
            other => Err(format!("labels must be class or value, got {other:?}")),
        }
    }
}

/// The file name of block `block`: `block-NNNNN.safetensors`, zero-padded so names sort by id.
pub fn block_file(block: u32) -> String {
    format!("block-{block:05}.safetensors")
}

/// `manifest.json`: the shape of the data set. Readers need only `blocks`, `features` and
/// `classes`; the rest records how the split was made and defaults when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Number of blocks m.
    pub blocks: u32,
    /// Features per sample.
    pub features: u64,
    /// Classes: labels are 0..classes (0 when labels are values).
    pub classes: u64,
    /// Whether labels are class ids or values; absent in manifests from before values.
    #[serde(default)]
    pub labels: LabelKind,
    #[serde(default)]
    pub train_samples: u64,
    #[serde(default)]
    pub test_samples: u64,
    /// Features were divided by this (the largest magnitude in the training split).
    #[serde(default)]
    pub scale: f32,
    /// Seed of the shuffle.
    #[serde(default)]
    pub seed: u64,
    /// The file the split was made from.
    #[serde(default)]
    pub source: String,
    /// SHA-256 of the input's bytes (files in name order): with the other fields, it tells a
    /// re-run of the same split, which is skipped, from a changed input.
    #[serde(default)]
    pub input_sha256: String,
    /// Fraction held out for testing.
    #[serde(default)]
    pub test_fraction: f64,
}

impl Manifest {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_kinds_parse_and_print_alike() {
        for kind in [LabelKind::Class, LabelKind::Value] {
            assert_eq!(kind.to_string().parse::<LabelKind>(), Ok(kind));
        }
        assert!(
            "regression"
                .parse::<LabelKind>()
                .unwrap_err()
                .contains("class or value")
        );
    }

    #[test]
    fn block_files_sort_by_id() {
        assert_eq!(block_file(7), "block-00007.safetensors");
        assert!(block_file(9) < block_file(10));
    }

    #[test]
    fn manifests_round_trip_and_need_only_the_shape() {
        let m = Manifest {
            blocks: 24,
            features: 64,
            classes: 10,
            train_samples: 1438,
            test_samples: 359,
            scale: 16.0,
            seed: 0,
            source: "digits.csv.gz".into(),
            labels: LabelKind::Class,
            input_sha256: "00".into(),
            test_fraction: 0.2,
        };
        assert_eq!(Manifest::from_json(&m.to_json().unwrap()).unwrap(), m);
        let short = Manifest::from_json(r#"{"blocks": 2, "features": 3, "classes": 4}"#).unwrap();
        assert_eq!((short.blocks, short.features, short.classes), (2, 3, 4));
        assert_eq!(
            short.labels,
            LabelKind::Class,
            "manifests from before values hold classes"
        );
        assert!(Manifest::from_json(r#"{"blocks": 2}"#).is_err());
    }
}
