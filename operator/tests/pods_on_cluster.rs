//! The built objects on a real apiserver: admitted in a namespace that enforces the "restricted"
//! Pod Security Standard, and applied twice (an operator restart) without duplicates.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

mod common;

use anyk_operator::children::{self, FIELD_MANAGER, Images, JOB_LABEL};
use anyk_operator::crd::TrainingJob;
use anyk_testkit::{TestNamespace, training_job};
use common::install_crd;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test]
async fn training_pods_are_admitted_under_the_restricted_standard_and_apply_idempotently() {
    let ns = TestNamespace::create("pss", &[("pod-security.kubernetes.io/enforce", "restricted")]).await;
    install_crd(ns.client.clone()).await;
    let jobs: Api<TrainingJob> = ns.api();
    let job: TrainingJob = training_job("digits")
        .spec(json!({ "worker": { "resources": { "limits": { "nvidia.com/gpu": "1" } } } }))
        .build();
    let job = jobs.create(&PostParams::default(), &job).await.unwrap();
    let images = Images {
        server: "anyk/server:test".into(),
        worker: "anyk/worker:test".into(),
    };
    let pods: Api<Pod> = ns.api();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for _ in 0..2 {
        let service = children::service(&job);
        let services: Api<Service> = ns.api();
        services
            .patch(&service.name_any(), &apply, &Patch::Apply(&service))
            .await
            .unwrap();
        let server = children::server_pod(&job, &images);
        pods.patch(&server.name_any(), &apply, &Patch::Apply(&server))
            .await
            .expect("server pod admitted");
        for w in 0..job.spec.workers {
            let pod = children::worker_pod(&job, w, &images);
            pods.patch(&pod.name_any(), &apply, &Patch::Apply(&pod))
                .await
                .expect("worker pod admitted");
        }
    }
    let listed = pods
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}=digits")))
        .await
        .unwrap();
    assert_eq!(
        listed.items.len(),
        9,
        "one server and eight workers, no duplicates"
    );
    // Enforcement is really on: a pod that mounts a token and may escalate is refused.
    let careless: Pod = serde_json::from_value(json!({
        "metadata": { "name": "careless" },
        "spec": { "containers": [{ "name": "c", "image": "x" }] }
    }))
    .unwrap();
    match pods.create(&PostParams::default(), &careless).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(status.message.contains("restricted"), "{}", status.message);
        }
        other => panic!("the restricted standard was not enforced: {other:?}"),
    }
    ns.cleanup().await;
}
