//! The built objects on a real apiserver: admitted in a namespace that enforces the "restricted"
//! Pod Security Standard, and applied twice (an operator restart) without duplicates.

mod common;

use anyk_operator::build::{self, FIELD_MANAGER, Images, JOB_LABEL};
use anyk_operator::crd::TrainingJob;
use anyk_testkit::TestNamespace;
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
    let job: TrainingJob = serde_json::from_value(json!({
        "apiVersion": "anyk.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": { "name": "digits" },
        "spec": {
            "dataset": { "persistentVolumeClaim": "digits-blocks", "blocks": 24 },
            "replication": 3, "workers": 8, "targetWorkers": 6,
            "model": { "builtin": "mlp" },
            "worker": { "resources": { "limits": { "nvidia.com/gpu": "1" } } }
        }
    }))
    .unwrap();
    let job = jobs.create(&PostParams::default(), &job).await.unwrap();
    let images = Images {
        server: "anyk/server:test".into(),
        worker: "anyk/worker:test".into(),
    };
    let pods: Api<Pod> = ns.api();
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for _ in 0..2 {
        let service = build::service(&job);
        let services: Api<Service> = ns.api();
        services
            .patch(&service.name_any(), &apply, &Patch::Apply(&service))
            .await
            .unwrap();
        let server = build::server_pod(&job, &images);
        pods.patch(&server.name_any(), &apply, &Patch::Apply(&server))
            .await
            .expect("server pod admitted");
        for w in 0..job.spec.workers {
            let pod = build::worker_pod(&job, w, &images);
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
