//! The TrainingJob CRD on a real kube-apiserver: valid jobs are accepted; invalid ones (the
//! coverage bound, ranges, immutable fields) are rejected with a message naming the problem.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]
// A table of cases reads best as one function.
#![allow(clippy::too_many_lines)]

mod common;

use anyk_operator::crd::TrainingJob;
use anyk_testkit::{TestNamespace, merge_json, training_job};
use common::install_crd;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The example job with its data on a host path, `spec_patch` merged in, as JSON (invalid specs
/// cannot be typed).
fn job(name: &str, spec_patch: Value) -> Value {
    training_job(name)
        .spec(json!({ "dataset": { "persistentVolumeClaim": null, "hostPath": "/data/digits" } }))
        .spec(spec_patch)
        .json()
}

/// Creates the job from raw JSON: invalid values (an unknown optimizer) must reach the apiserver
/// rather than fail to parse here.
async fn create(ns: &TestNamespace, job: Value) -> Result<TrainingJob, kube::Error> {
    let resource = ApiResource::erase::<TrainingJob>(&());
    let raw: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
    let created = raw
        .create(&PostParams::default(), &serde_json::from_value(job).unwrap())
        .await?;
    Ok(serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap())
}

fn rejection(result: Result<TrainingJob, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        other => panic!("expected the apiserver to reject the job, got {other:?}"),
    }
}

#[tokio::test]
async fn the_apiserver_enforces_the_coverage_bound_ranges_and_immutability() {
    let ns = TestNamespace::create("crd", &[]).await;
    install_crd(ns.client.clone()).await;
    let jobs: Api<TrainingJob> = ns.api();

    let created = create(&ns, job("valid", json!({})))
        .await
        .expect("a valid job is accepted");
    assert_eq!(created.spec.training.steps, 1000, "defaults are applied");

    let invalid = [
        (
            json!({ "replication": 2 }),
            "replication must be at least workers - targetWorkers + 1",
        ),
        (
            json!({ "targetWorkers": 9 }),
            "targetWorkers must not exceed workers",
        ),
        (json!({ "replication": 9 }), "replication must not exceed workers"),
        (
            json!({ "replication": 1, "targetWorkers": 8 }),
            "spec.replication",
        ),
        (json!({ "workers": 0, "targetWorkers": 0 }), "spec.workers"),
        (json!({ "dataset": { "blocks": 0 } }), "spec.dataset.blocks"),
        (
            json!({ "dataset": { "persistentVolumeClaim": "data" } }),
            "set exactly one of persistentVolumeClaim and hostPath",
        ),
        (
            json!({ "model": { "builtin": "resnet" } }),
            "the only built-in model is mlp",
        ),
        (
            json!({ "training": { "optimizer": "rmsprop" } }),
            r#"supported values: "adam", "sgd""#,
        ),
        (
            json!({ "training": { "learningRate": 0.0 } }),
            "learningRate must be positive",
        ),
    ];
    for (i, (patch, text)) in invalid.into_iter().enumerate() {
        let mut body = job(&format!("invalid-{i}"), patch.clone());
        if patch.get("training").is_some() {
            let mut training = serde_json::to_value(anyk_operator::crd::Training::default()).unwrap();
            merge_json(&mut training, patch["training"].clone());
            body["spec"]["training"] = training;
        }
        let message = rejection(create(&ns, body).await);
        assert!(
            message.contains(text),
            "{patch}: {message:?} does not name {text:?}"
        );
    }

    let immutable = [
        (json!({ "dataset": { "blocks": 12 } }), "dataset is immutable"),
        (
            json!({ "model": { "builtin": "mlp", "hidden": 64 } }),
            "model is immutable",
        ),
        (json!({ "workers": 9 }), "workers is immutable"),
        (json!({ "replication": 4 }), "replication is immutable"),
    ];
    for (patch, text) in immutable {
        let result = jobs
            .patch(
                "valid",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": patch })),
            )
            .await;
        let message = rejection(result);
        assert!(message.contains(text), "{message:?} does not name {text:?}");
    }
    ns.cleanup().await;
}
