//! A NotReady node: its workers are lost after the operator's grace.

use std::time::{Duration, Instant};

use super::NODE_GRACE_SECONDS;
use super::support::{add_node, job_json, remove_leftover_nodes, wait_status, worker_nodes};
use anyk_operator::crd::TrainingJob;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// Test 3: a node goes NotReady; its workers count as lost after the operator's grace, long
/// before Kubernetes would evict them, and the layout is repaired around them.
pub async fn a_not_ready_node_loses_its_workers_within_the_grace(client: &Client, ns: &str) {
    // Nodes of the test's own, tainted so no other job lands there, with two GPUs each so that
    // four one-GPU workers split two and two.
    let pool = format!("{ns}-pool");
    let nodes = [format!("{ns}-a"), format!("{ns}-b"), format!("{ns}-c")];
    remove_leftover_nodes(client).await;
    for node in &nodes[..2] {
        add_node(client, node, &pool).await;
    }
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), ns);
    let job = job_json(
        "spread",
        json!({
            "workers": 4, "replication": 3, "targetWorkers": 2,
            "worker": {
                "nodeSelector": { "anyk.dev/pool": pool },
                "tolerations": [{ "key": "anyk.dev/pool", "operator": "Equal", "value": pool, "effect": "NoSchedule" }],
                "resources": { "limits": { "nvidia.com/gpu": "1" } }
            }
        }),
    );
    jobs.create(&PostParams::default(), &job).await.unwrap();
    wait_status(&jobs, "spread", "4 workers ready", |s| {
        s.workers_ready.as_deref() == Some("4/4")
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let on_a: Vec<u32> = worker_nodes(&pods, "spread")
        .await
        .into_iter()
        .filter(|(_, n)| n == &nodes[0])
        .map(|(w, _)| w)
        .collect();
    assert_eq!(on_a.len(), 2, "two GPUs per node: two workers each");
    // Room for the replacements.
    add_node(client, &nodes[2], &pool).await;

    let marked_at = Instant::now();
    let not_ready = json!({ "metadata": { "annotations": { "anyk.dev/not-ready": "true" } } });
    Api::<Node>::all(client.clone())
        .patch(&nodes[0], &PatchParams::default(), &Patch::Merge(&not_ready))
        .await
        .unwrap();
    let repaired = wait_status(&jobs, "spread", "the node's workers repaired", |s| {
        s.last_repair.is_some()
    })
    .await;
    let took = marked_at.elapsed();
    println!("e2e: node NotReady to repaired status: {took:?} (grace {NODE_GRACE_SECONDS}s)");
    let repair = repaired.last_repair.unwrap();
    assert_eq!(repair.lost_workers, on_a);
    // Condition times have whole-second resolution, so the grace may end up to 1 s early.
    assert!(
        took + Duration::from_secs(1) >= Duration::from_secs(NODE_GRACE_SECONDS),
        "not before the grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(25),
        "well before Kubernetes' own eviction: {took:?}"
    );
    assert_eq!(repair.epoch, 2);
    assert_eq!(
        repair.moved_blocks, 12,
        "both live workers (18 of 24 blocks each) gain the 6 they lacked"
    );
    wait_status(
        &jobs,
        "spread",
        "replacements on the ready node rebalanced in",
        // Both at once (epoch 3) or one pass each (epoch 4), as their pods become ready.
        |s| {
            s.workers_ready.as_deref() == Some("4/4")
                && s.layout.as_ref().is_some_and(|l| l.members.len() == 4)
                && s.layout_epoch.is_some_and(|e| e >= 3)
        },
    )
    .await;
    for (w, node) in worker_nodes(&pods, "spread").await {
        let expected = if on_a.contains(&w) { &nodes[2] } else { &nodes[1] };
        assert_eq!(&node, expected, "worker {w}: replacements go to a ready node");
    }
    jobs.delete("spread", &DeleteParams::foreground()).await.unwrap();
    for node in &nodes {
        let _ = Api::<Node>::all(client.clone())
            .delete(node, &DeleteParams::default())
            .await;
    }
}
