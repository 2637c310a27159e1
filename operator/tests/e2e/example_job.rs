//! The shipped example job healing: a failed worker, a failed server, suspend and resume, and
//! an operator restart.

use std::time::Instant;

use super::MINUTE;
use super::support::{fail_pod, set_suspend, wait_status};
use anyk_operator::children::JOB_LABEL;
use anyk_operator::crd::{TrainingJob, TrainingJobStatus};
use anyk_testkit::{eventually, run_tool};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};

/// Tests 1, 2, 5, 7 of the operator issue on the shipped example, plus a failed server and
/// suspend/resume.
pub async fn the_example_job_heals(client: &Client, ns: &str) {
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    run_tool("kubectl", &["apply", "-n", ns, "-f", "examples/digits.yaml"]);
    let status = wait_status(&jobs, "digits", "all 8 workers ready", |s| {
        s.workers_ready.as_deref() == Some("8/8")
    })
    .await;
    assert_eq!(
        (
            status.phase.as_deref(),
            status.layout_epoch,
            status.coverage_margin
        ),
        (Some("Running"), Some(1), Some(2))
    );
    let listed = pods
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}=digits")))
        .await
        .unwrap();
    assert_eq!(
        listed.items.len(),
        9,
        "a server and eight workers, admitted under restricted PSS"
    );
    for pod in &listed.items {
        let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap_or_default();
        assert!(
            node.starts_with("kwok-node-"),
            "{:?} on {node:?}",
            pod.metadata.name
        );
    }
    assert!(
        Api::<Service>::namespaced(client.clone(), ns)
            .get("digits-server")
            .await
            .is_ok()
    );
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .get("digits-server")
        .await
        .unwrap();
    let from = serde_json::to_value(&policy.spec.unwrap().ingress.unwrap()[0].from).unwrap();
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["anyk.dev/role"], "worker",
        "{from}"
    );

    // Test 2: fail one worker pod.
    let failed_at = Instant::now();
    fail_pod(&pods, "digits-worker-2").await;
    let repaired = wait_status(&jobs, "digits", "the repair", |s| s.last_repair.is_some()).await;
    println!(
        "e2e: worker failure to repaired status: {:?}",
        failed_at.elapsed()
    );
    let repair = repaired.last_repair.clone().unwrap();
    assert_eq!(
        (repair.epoch, repair.lost_workers.clone(), repair.moved_blocks),
        (2, vec![2], 9)
    );
    assert!(repaired.coverage_margin.unwrap() >= 1);
    let healed = wait_status(&jobs, "digits", "the replacement rebalanced in", |s| {
        s.layout_epoch == Some(3) && s.workers_ready.as_deref() == Some("8/8")
    })
    .await;
    assert_eq!((healed.coverage_margin, healed.workers.replaced), (Some(2), 1));
    eventually("a LayoutRepaired Event", MINUTE, || async {
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("LayoutRepaired"))
            .then_some(())
    })
    .await;
    println!(
        "e2e: kubectl get tj\n{}",
        run_tool("kubectl", &["get", "tj", "-n", ns])
    );
    println!(
        "e2e: kubectl get events\n{}",
        run_tool(
            "kubectl",
            &[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                "involvedObject.name=digits"
            ]
        )
    );

    // The server pod fails: it is replaced (it would resume from its checkpoint claim).
    fail_pod(&pods, "digits-server").await;
    wait_status(&jobs, "digits", "the server replaced", |s| s.server_restarts == 1).await;
    eventually("a new server pod running", MINUTE, || async {
        let pod = pods.get("digits-server").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;

    // Suspend deletes the pods and keeps the layout; resuming brings them back at the same epoch.
    set_suspend(&jobs, "digits", true).await;
    wait_status(&jobs, "digits", "suspended", |s| {
        s.phase.as_deref() == Some("Suspended")
    })
    .await;
    eventually("pods deleted while suspended", MINUTE, || async {
        let left = pods
            .list(&ListParams::default().labels(&format!("{JOB_LABEL}=digits")))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    set_suspend(&jobs, "digits", false).await;
    let resumed = wait_status(&jobs, "digits", "resumed with all workers", |s| {
        s.phase.as_deref() == Some("Running") && s.workers_ready.as_deref() == Some("8/8")
    })
    .await;
    assert_eq!(
        resumed.layout_epoch,
        Some(3),
        "suspend and resume keep the layout"
    );
    assert_eq!(resumed.workers.failed, 1, "a resume is not a loss");
}

pub async fn a_restart_changes_nothing_and_deletion_collects_the_pods(
    client: &Client,
    ns: &str,
    before: TrainingJobStatus,
    restarted_at: k8s_openapi::jiff::Timestamp,
) {
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{JOB_LABEL}=digits");
    let after = jobs.get("digits").await.unwrap().status.unwrap();
    assert_eq!(
        after.layout_epoch, before.layout_epoch,
        "a restart keeps the layout epoch"
    );
    assert_eq!(
        after.workers.failed, before.workers.failed,
        "a restart loses nobody"
    );
    let listed = pods.list(&ListParams::default().labels(&selector)).await.unwrap();
    assert_eq!(listed.items.len(), 9, "no pod lost or added after a restart");
    let recreated = listed.items.iter().filter(|p| {
        p.metadata
            .creation_timestamp
            .as_ref()
            .is_none_or(|t| t.0 > restarted_at)
    });
    assert_eq!(recreated.count(), 0, "the restarted operator replaced no pod");
    jobs.delete("digits", &DeleteParams::foreground()).await.unwrap();
    eventually("the job's pods garbage-collected", MINUTE, || async {
        let left = pods.list(&ListParams::default().labels(&selector)).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
}
