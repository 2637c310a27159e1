//! One TrainingJob fixture for every test (unit, cluster and end-to-end): the example job of the
//! README (24 blocks, r=3, n=8, k=6, the built-in MLP, blocks on the claim `digits-blocks`), with
//! the changes a test makes merged into it. JSON here, typed by the test (`build::<TrainingJob>()`),
//! since the operator's own unit tests use this crate too.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::merge_json;

/// The example job, named `name`, in no namespace; see [`JobFixture`] to change it.
pub fn training_job(name: &str) -> JobFixture {
    JobFixture(json!({
        "apiVersion": "anyk.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": { "name": name },
        "spec": {
            "dataset": { "persistentVolumeClaim": "digits-blocks", "blocks": 24 },
            "replication": 3, "workers": 8, "targetWorkers": 6,
            "model": { "builtin": "mlp" }
        }
    }))
}

/// A TrainingJob as JSON, changed step by step.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFixture(Value);

impl JobFixture {
    pub fn namespace(self, namespace: &str) -> Self {
        self.metadata(json!({ "namespace": namespace }))
    }

    /// Merges `patch` into the metadata (objects key by key, everything else replaced).
    pub fn metadata(mut self, patch: Value) -> Self {
        merge_json(&mut self.0["metadata"], patch);
        self
    }

    /// Merges `patch` into the spec (objects key by key, everything else replaced).
    pub fn spec(mut self, patch: Value) -> Self {
        merge_json(&mut self.0["spec"], patch);
        self
    }

    /// The job as JSON (for requests the typed object cannot express, such as invalid specs).
    pub fn json(&self) -> Value {
        self.0.clone()
    }

    /// The typed job. Panics when the fixture was changed into something that does not parse.
    pub fn build<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.0.clone()).expect("the fixture parses as a TrainingJob")
    }
}
