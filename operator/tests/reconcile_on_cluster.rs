//! The controller against the real control plane: a TrainingJob becomes a server pod, a Service
//! and n worker pods on fake GPU nodes, and its status shows the layout epoch and margin.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]
// A scenario reads best top to bottom.
#![allow(clippy::too_many_lines)]

mod common;

use std::time::Duration;

use anyk_operator::children::JOB_LABEL;
use anyk_operator::crd::TrainingJob;
use anyk_operator::settings::{Images, Settings};
use anyk_testkit::{TestNamespace, eventually, training_job};
use common::install_crd;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn a_job_gets_its_pods_on_gpu_nodes_and_reports_coverage() {
    let ns = TestNamespace::create("reconcile", &[]).await;
    install_crd(ns.client.clone()).await;
    let controller = tokio::spawn(anyk_operator::controller::run(
        ns.client.clone(),
        settings(),
        vec![ns.name.clone()],
        Default::default(),
    ));
    let jobs: Api<TrainingJob> = ns.api();
    let job: TrainingJob = training_job("digits")
        .spec(json!({
            "dataset": { "persistentVolumeClaim": null, "hostPath": "/var/lib/anyk/digits" },
            "workers": 4, "targetWorkers": 2,
            "worker": { "resources": { "limits": { "nvidia.com/gpu": "1" } }, "nodeSelector": { "type": "kwok" } },
            "server": { "nodeSelector": { "type": "kwok" } }
        }))
        .build();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let pods: Api<Pod> = ns.api();
    let status = eventually("all workers ready in status", Duration::from_secs(90), || async {
        let status = jobs.get("digits").await.ok()?.status?;
        (status.workers_ready.as_deref() == Some("4/4")).then_some(status)
    })
    .await;
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.layout_epoch, Some(1));
    assert_eq!(status.coverage_margin, Some(2));
    let listed = pods
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}=digits")))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 5, "a server and four workers");
    for pod in &listed.items {
        let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap_or_default();
        assert!(
            node.starts_with("kwok-node-"),
            "{:?} is on {node:?}",
            pod.metadata.name
        );
    }
    assert!(
        Api::<Service>::namespaced(ns.client.clone(), &ns.name)
            .get("digits-server")
            .await
            .is_ok()
    );
    // Fail worker 1: the layout is repaired (new epoch, only its copies move), the pod replaced,
    // and the replacement rebalanced in once it is ready.
    let failed_at = std::time::Instant::now();
    let mark = json!({ "metadata": { "annotations": { "anyk.dev/fail": "true" } } });
    pods.patch("digits-worker-1", &PatchParams::default(), &Patch::Merge(&mark))
        .await
        .unwrap();
    let repaired = eventually("repair in status", Duration::from_secs(60), || async {
        let status = jobs.get("digits").await.ok()?.status?;
        status.last_repair.is_some().then_some(status)
    })
    .await;
    println!("failure to repaired status: {:?}", failed_at.elapsed());
    let repair = repaired.last_repair.unwrap();
    assert_eq!((repair.epoch, repair.lost_workers.clone()), (2, vec![1]));
    assert_eq!(repair.moved_blocks, 18, "worker 1 held 24*3/4 = 18 copies");
    assert_eq!(repaired.workers.failed, 1);
    let healed = eventually("replacement rebalanced in", Duration::from_secs(60), || async {
        let status = jobs.get("digits").await.ok()?.status?;
        (status.layout_epoch == Some(3) && status.workers_ready.as_deref() == Some("4/4")).then_some(status)
    })
    .await;
    assert_eq!((healed.coverage_margin, healed.workers.replaced), (Some(2), 1));
    let members = healed.layout.as_ref().unwrap().members.clone();
    assert_eq!(members, vec![0, 1, 2, 3]);

    // An operator restart (no duplicates, same epoch) and the garbage collection of the pods
    // are covered, with the chart's identity, by e2e.rs; the decisions by the unit tests in
    // src/reconcile/decide_tests.rs.
    controller.abort();
    ns.cleanup().await;
}

/// The defaults, and a data set on the nodes (hostPath: no volume provisioner here), which the
/// operator's pod policy must allow explicitly.
fn settings() -> Settings {
    let mut settings = Settings::new(images());
    settings.pod_policy.allow_host_path = true;
    settings
}

fn images() -> Images {
    Images {
        server: "anyk/server:test".into(),
        worker: "anyk/worker:test".into(),
    }
}
