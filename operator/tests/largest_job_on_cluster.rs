//! The largest job the CRD allows (`dataset.blocks * replication` at its bound) on the real
//! control plane: its layout is planned, its status, which holds that layout, is written, and its
//! pods are created.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use anyk_operator::children::JOB_LABEL;
use anyk_operator::crd::{MAX_BLOCK_COPIES, TrainingJob};
use anyk_operator::settings::{Images, Settings};
use anyk_testkit::{TestNamespace, eventually, training_job};
use common::install_crd;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn the_largest_allowed_job_reconciles_and_its_status_is_written() {
    let ns = TestNamespace::create("largest", &[]).await;
    install_crd(ns.client.clone()).await;
    let controller = tokio::spawn(anyk_operator::controller::run(
        ns.client.clone(),
        Settings::new(images()),
        vec![ns.name.clone()],
        Default::default(),
    ));
    // The most blocks (65536, the CRD's maximum) at the fewest copies: the longest holders list.
    // Three workers fit the test cluster's three fake nodes.
    let (blocks, replication) = (65536, 2);
    assert_eq!(blocks * replication, MAX_BLOCK_COPIES, "at the bound");
    let jobs: Api<TrainingJob> = ns.api();
    let job: TrainingJob = training_job("largest")
        .spec(json!({
            "dataset": { "blocks": blocks },
            "replication": replication, "workers": 3, "targetWorkers": 2,
            "worker": { "nodeSelector": { "type": "kwok" } },
            "server": { "nodeSelector": { "type": "kwok" } }
        }))
        .build();
    let start = Instant::now();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let layout = eventually("the layout in status", Duration::from_secs(120), || async {
        jobs.get("largest").await.ok()?.status?.layout
    })
    .await;
    println!("job created to layout in status: {:?}", start.elapsed());
    assert_eq!(layout.epoch, 1);
    assert_eq!(layout.holders.len(), blocks as usize);
    assert!(
        layout.holders.iter().all(|h| h.len() == replication as usize),
        "every block has its copies"
    );
    assert_eq!(layout.members, vec![0, 1, 2]);
    let pods: Api<Pod> = ns.api();
    let labels = ListParams::default().labels(&format!("{JOB_LABEL}=largest"));
    eventually("a server and three workers", Duration::from_secs(60), || async {
        (pods.list(&labels).await.ok()?.items.len() == 4).then_some(())
    })
    .await;
    controller.abort();
    ns.cleanup().await;
}

fn images() -> Images {
    Images {
        server: "anyk/server:test".into(),
        worker: "anyk/worker:test".into(),
    }
}
