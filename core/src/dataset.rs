//! A data set's layout on disk, as `anyk data split` writes it and workers read it: one
//! `block-NNNNN.safetensors` per block and a held-out `test.safetensors` (each with tensors
//! [`FEATURES_TENSOR`], f32 [N, F], and [`LABELS_TENSOR`], i64 [N]), and `manifest.json`
//! ([`Manifest`]). Names and types only; reading and writing live with the callers.

use serde::{Deserialize, Serialize};

/// The manifest's file name in a data directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The held-out test split's file name.
pub const TEST_FILE: &str = "test.safetensors";
/// The features tensor in every sample file: f32, [samples, features].
pub const FEATURES_TENSOR: &str = "x";
/// The labels tensor in every sample file: i64, [samples].
pub const LABELS_TENSOR: &str = "y";

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
    /// Classes: labels are 0..classes.
    pub classes: u64,
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
        };
        assert_eq!(Manifest::from_json(&m.to_json().unwrap()).unwrap(), m);
        let short = Manifest::from_json(r#"{"blocks": 2, "features": 3, "classes": 4}"#).unwrap();
        assert_eq!((short.blocks, short.features, short.classes), (2, 3, 4));
        assert!(Manifest::from_json(r#"{"blocks": 2}"#).is_err());
    }
}
