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
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
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
    // The workers, created together, share one Secret and each mounts only its own keys; the
    // server has a Secret of its own.
    assert_eq!(
        tls_of(&pods, "digits-server").await,
        ("digits-server-tls".into(), vec![])
    );
    for w in 0..4 {
        let keys = [
            "ca.crt".to_string(),
            format!("worker-{w}.crt"),
            format!("worker-{w}.key"),
        ];
        let mounted = tls_of(&pods, &format!("digits-worker-{w}")).await;
        assert_eq!(mounted, ("digits-workers-0-3-tls".into(), keys.to_vec()));
    }
    let secrets: Api<Secret> = ns.api();
    let shared = secrets.get("digits-workers-0-3-tls").await.unwrap();
    let owner = &shared.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("TrainingJob", "digits")
    );
    assert_eq!(
        shared.data.as_ref().unwrap().len(),
        9,
        "the authority and 4 certificates and keys"
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
    // The replacement has a fresh certificate in a Secret of its own; the shared one is as it was.
    let replaced = tls_of(&pods, "digits-worker-1").await;
    assert_eq!(replaced, ("digits-worker-1-tls".into(), vec![]));
    assert!(secrets.get("digits-worker-1-tls").await.is_ok());
    let after = secrets.get("digits-workers-0-3-tls").await.unwrap();
    assert_eq!(after.data, shared.data, "the other workers' keys stay");

    // An operator restart (no duplicates, same epoch) and the garbage collection of the pods
    // are covered, with the chart's identity, by e2e.rs; the decisions by the unit tests in
    // src/reconcile/decide_tests.rs.
    controller.abort();
    ns.cleanup().await;
}

/// The Secret a pod's TLS volume comes from, and the keys it projects (none listed: all).
async fn tls_of(pods: &Api<Pod>, name: &str) -> (String, Vec<String>) {
    let pod = pods.get(name).await.unwrap();
    let volumes = pod.spec.unwrap().volumes.unwrap();
    let tls = volumes.into_iter().find(|v| v.name == "tls").unwrap();
    let source = tls.secret.unwrap();
    let keys = source
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.key)
        .collect();
    (source.secret_name.unwrap(), keys)
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
