//! The TrainingJob CRD on a real kube-apiserver: valid jobs are accepted; invalid ones (the
//! coverage bound, ranges, immutable fields) are rejected with a message naming the problem.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]
// A table of cases reads best as one function.
#![allow(clippy::too_many_lines)]

mod common;

use anyk_operator::crd::{
    LayoutState, MAX_BLOCK_COPIES, PodReplacement, Repair, TrainingJob, TrainingJobStatus,
};
use anyk_testkit::{TestNamespace, merge_json, training_job};
use common::install_crd;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const BOUND_MESSAGE: &str =
    "dataset.blocks * replication must be at most 131072 so that the job's status fits in etcd";

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
        (
            json!({ "training": { "clipNorm": 0.0 } }),
            "clipNorm must be positive",
        ),
        (
            json!({ "training": { "gradientPrecision": "fp8" } }),
            r#"supported values: "f32", "bf16""#,
        ),
        (
            json!({ "training": { "gradientPrecision": "bf16", "strict": true } }),
            "training.gradientPrecision bf16 cannot be combined with strict",
        ),
        // Accepted by every other rule until the status bound (m = 65536, r = 8 once was).
        (
            json!({ "dataset": { "blocks": 65536 }, "replication": 8 }),
            BOUND_MESSAGE,
        ),
        (
            json!({ "dataset": { "blocks": 16385 }, "replication": 8 }),
            BOUND_MESSAGE,
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
        (
            json!({ "training": { "seed": 2 } }),
            "training.seed is immutable: a changed seed would silently break bit-identical resumes",
        ),
        (
            json!({ "training": { "batch": 64 } }),
            "training.batch is immutable",
        ),
        (
            json!({ "training": { "optimizer": "sgd" } }),
            "training.optimizer is immutable",
        ),
        (
            json!({ "training": { "learningRate": 0.02 } }),
            "training.learningRate is immutable",
        ),
        (
            json!({ "training": { "momentum": 0.5 } }),
            "training.momentum is immutable",
        ),
        (
            json!({ "training": { "numerics": "native" } }),
            "training.numerics is immutable",
        ),
        (
            json!({ "training": { "strict": true } }),
            "training.strict is immutable",
        ),
        (
            json!({ "training": { "checkpointClaim": "ckpt" } }),
            "training.checkpointClaim is immutable",
        ),
        (
            json!({ "training": { "clipNorm": 1.0 } }),
            "training.clipNorm is immutable",
        ),
        (
            json!({ "training": { "gradientPrecision": "bf16" } }),
            "training.gradientPrecision is immutable",
        ),
        (
            json!({ "training": { "steps": 999 } }),
            "training.steps may only grow",
        ),
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
    let grown = json!({ "spec": { "training": { "steps": 2000, "checkpointInterval": 50 } } });
    let patched = jobs
        .patch("valid", &PatchParams::default(), &Patch::Merge(&grown))
        .await
        .expect("steps may grow and checkpointInterval change");
    let training = patched.spec.training;
    assert_eq!((training.steps, training.checkpoint_interval), (2000, 50));
    ns.cleanup().await;
}

/// Data sources and model contracts as the apiserver checks them: the examples' jobs are
/// accepted (with the apiserver's defaults filled in), impossible combinations refused by name.
#[tokio::test]
async fn the_apiserver_checks_data_sources_and_model_contracts() {
    let ns = TestNamespace::create("crd-source", &[]).await;
    install_crd(ns.client.clone()).await;
    let example = std::fs::read_to_string(anyk_testkit::repo_root().join("examples/from-s3.yaml")).unwrap();
    let mut accepted = 0;
    for doc in example.split("\n---\n") {
        let value: Value = serde_yaml::from_str(doc).unwrap();
        if value["kind"] == "TrainingJob" {
            let created = create(&ns, value).await.expect("the example's jobs are valid");
            let source = created.spec.dataset.source.unwrap();
            assert_eq!(
                (source.csv_header.as_str(), source.test_fraction),
                ("auto", 0.2),
                "defaults"
            );
            accepted += 1;
        }
    }
    assert_eq!(
        accepted, 2,
        "examples/from-s3.yaml has a classifier and a regression job"
    );
    let s3 = json!({ "uri": "s3://bucket/data.csv" });
    let cases = [
        (
            json!({ "dataset": { "source": { "uri": "s3://x/data.csv" } } }),
            "an s3 source is s3://BUCKET/KEY",
        ),
        (
            json!({ "dataset": { "source": { "uri": "s3://bucket/d.csv", "labels": "value" } } }),
            "labels value (real-valued targets) need a model with contract loss",
        ),
        (
            json!({ "dataset": { "source": { "uri": "s3://bucket/d.csv", "csvHeader": "maybe" } } }),
            "csvHeader must be auto, yes or no",
        ),
        (
            json!({ "dataset": { "source": s3 }, "model": { "builtin": "mlp", "contract": "loss" } }),
            "contract loss needs a torchScript model",
        ),
        (
            json!({ "model": { "builtin": null, "torchScript": "s3://bucket/model.pt" } }),
            "set dataset.source too",
        ),
        (
            json!({ "dataset": { "source": { "uri": "s3://bucket/d.csv", "labels": "ordinal" } } }),
            "labels",
        ),
    ];
    for (i, (patch, text)) in cases.into_iter().enumerate() {
        let message = rejection(create(&ns, job(&format!("bad-{i}"), patch)).await);
        assert!(message.contains(text), "{message:?} does not name {text:?}");
    }
    ns.cleanup().await;
}

/// The largest jobs the CRD allows are accepted, and the largest status such a job can have (every
/// holder id 4 digits, every block under-replicated) is written; a status with twice the copies
/// is refused by etcd, so the bound is what keeps status writable.
#[tokio::test]
async fn the_largest_allowed_job_is_accepted_and_its_worst_status_fits_in_etcd() {
    let ns = TestNamespace::create("crd-bound", &[]).await;
    install_crd(ns.client.clone()).await;
    let jobs: Api<TrainingJob> = ns.api();
    assert_eq!(MAX_BLOCK_COPIES, 131_072, "BOUND_MESSAGE names it");
    let deep = json!({ "dataset": { "blocks": 16384 }, "replication": 8 });
    create(&ns, job("deep", deep))
        .await
        .expect("16384 blocks x 8 copies");
    let wide =
        json!({ "dataset": { "blocks": 65536 }, "replication": 2, "workers": 4096, "targetWorkers": 4095 });
    create(&ns, job("wide", wide))
        .await
        .expect("65536 blocks x 2 copies on 4096 workers");

    let params = PatchParams::default();
    let status = worst_status(65536, 2);
    let body = json!({ "status": status });
    println!("worst status at the bound: {} bytes", body.to_string().len());
    let written = jobs
        .patch_status("wide", &params, &Patch::Merge(&body))
        .await
        .unwrap();
    assert_eq!(written.status.unwrap().layout.unwrap().holders.len(), 65536);

    let over = json!({ "status": worst_status(65536, 4) });
    match jobs.patch_status("wide", &params, &Patch::Merge(&over)).await {
        Err(kube::Error::Api(status)) => {
            println!("a status of twice the bound: {} {}", status.code, status.message);
            assert!(status.message.contains("too large"), "{status:?}");
        }
        other => panic!("expected etcd to refuse a status of twice the bound, got {other:?}"),
    }
    ns.cleanup().await;
}

/// A status for m blocks of r copies as large as n <= 4096 workers can make it, with the longest
/// replacement history the largest backoffLimit (1000) allows.
fn worst_status(blocks: u32, replication: u32) -> TrainingJobStatus {
    let holders = (0..blocks)
        .map(|_| (4096 - replication..4096).collect())
        .collect();
    let replacements = (0..1001)
        .map(|i| PodReplacement {
            pod: format!(
                "a-job-name-of-sixty-three-characters-is-rare-but-allowed-worker-{}",
                4095 - i
            ),
            time: "2026-01-01T00:00:00Z".into(),
        })
        .collect();
    let condition = |type_: &str| Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: "Worst".into(),
        message: "m".repeat(1024),
        last_transition_time: Time(Default::default()),
        observed_generation: Some(1),
    };
    TrainingJobStatus {
        phase: Some("Degraded".into()),
        conditions: ["Ready", "Progressing", "CoverageDegraded", "ReplicasDisagree"]
            .map(condition)
            .into(),
        under_replicated_blocks: (0..blocks).collect(),
        last_repair: Some(Repair {
            epoch: 1_000_000,
            lost_workers: (0..4096).collect(),
            moved_blocks: blocks * replication,
            time: "2026-01-01T00:00:00Z".into(),
        }),
        layout: Some(LayoutState {
            epoch: 1_000_000,
            holders,
            members: (0..4096).collect(),
        }),
        replacements,
        ..TrainingJobStatus::default()
    }
}
