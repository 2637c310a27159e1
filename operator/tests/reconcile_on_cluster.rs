//! The controller against the real control plane: a TrainingJob becomes a server pod, a Service
//! and n worker pods on fake GPU nodes, and its status shows the layout epoch and margin.

mod common;

use std::time::Duration;

use anyk_operator::build::{Images, JOB_LABEL};
use anyk_operator::crd::TrainingJob;
use anyk_testkit::{TestNamespace, eventually};
use common::install_crd;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn a_job_gets_its_pods_on_gpu_nodes_and_reports_coverage() {
    let ns = TestNamespace::create("reconcile", &[]).await;
    install_crd(ns.client.clone()).await;
    let images = Images {
        server: "anyk/server:test".into(),
        worker: "anyk/worker:test".into(),
    };
    let controller = tokio::spawn(anyk_operator::controller::run(
        ns.client.clone(),
        images,
        Some(ns.name.clone()),
    ));
    let jobs: Api<TrainingJob> = ns.api();
    let job: TrainingJob = serde_json::from_value(json!({
        "apiVersion": "anyk.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": { "name": "digits" },
        "spec": {
            "dataset": { "hostPath": "/var/lib/anyk/digits", "blocks": 24 },
            "replication": 3, "workers": 4, "targetWorkers": 2,
            "model": { "builtin": "mlp" },
            "worker": { "resources": { "limits": { "nvidia.com/gpu": "1" } }, "nodeSelector": { "type": "kwok" } },
            "server": { "nodeSelector": { "type": "kwok" } }
        }
    }))
    .unwrap();
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
    // Deleting the job removes its pods: owner references and the garbage collector.
    jobs.delete("digits", &DeleteParams::foreground()).await.unwrap();
    eventually("pods garbage-collected", Duration::from_secs(60), || async {
        let left = pods
            .list(&ListParams::default().labels(&format!("{JOB_LABEL}=digits")))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    controller.abort();
    ns.cleanup().await;
}
