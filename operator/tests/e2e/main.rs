//! End to end on the real control plane, as users run anyk: `helm install` the chart, run the
//! operator built from this repository as a process with the identity of the chart's service
//! account (so the chart's RBAC is what is tested), `kubectl apply` the example TrainingJob,
//! and break things: a failed worker, a NotReady node, a failed server, suspend and resume, and a
//! real parameter server and real workers that the operator pushes layouts to.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]
// A scenario reads best top to bottom.
#![allow(clippy::too_many_lines)]

use std::time::Duration;

use anyk_operator::crd::TrainingJob;
use anyk_testkit::TestNamespace;
use kube::Api;

mod example_job;
mod live_server;
mod not_ready_node;
mod operator;
mod support;

use example_job::{a_restart_changes_nothing_and_deletion_collects_the_pods, the_example_job_heals};
use live_server::the_operator_drives_a_real_server;
use not_ready_node::a_not_ready_node_loses_its_workers_within_the_grace;
use operator::Operator;
use support::metric;

const MINUTE: Duration = Duration::from_secs(60);
/// The operator's NotReady-node grace in this test (the chart's default is 30 s).
const NODE_GRACE_SECONDS: u64 = 3;

#[tokio::test]
async fn helm_installed_operator_heals_jobs_and_drives_a_real_server() {
    let jobs_ns = TestNamespace::create("e2e", &[("pod-security.kubernetes.io/enforce", "restricted")]).await;
    let system_ns = TestNamespace::create("e2e-system", &[]).await;
    let release = format!("anyk-{}", &jobs_ns.name["anyk-e2e-".len()..]);
    let mut operator = Operator::install(&release, &system_ns.name, &jobs_ns.name);
    let client = jobs_ns.client.clone();
    // The example reads its blocks from a claim; bind it to a host-path volume (a hostPath in the
    // pod itself would break the restricted standard). Every job here uses that claim.
    anyk_testkit::data_claim(&client, &jobs_ns.name, &release).await;

    // The three scenarios share the operator and run side by side.
    tokio::join!(
        the_example_job_heals(&client, &jobs_ns.name),
        a_not_ready_node_loses_its_workers_within_the_grace(&client, &jobs_ns.name),
        the_operator_drives_a_real_server(&client, &jobs_ns.name),
    );

    let metrics = operator.metrics();
    let repairs = metric(&metrics, "anyk_repairs_total");
    assert!(repairs >= 3.0, "repairs counted: {metrics}");
    assert_eq!(metric(&metrics, "anyk_server_restarts_total"), 1.0, "{metrics}");
    assert!(metric(&metrics, "anyk_repair_duration_seconds_count") >= 3.0);
    // Test 5: a restarted operator creates no duplicate pods and keeps the layout epoch; deleting
    // the job removes its pods (owner references and the garbage collector).
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), &jobs_ns.name);
    let before = jobs.get("digits").await.unwrap().status.unwrap();
    let restarted_at = k8s_openapi::jiff::Timestamp::now();
    operator.start();
    operator.wait_for_passes(5).await;
    a_restart_changes_nothing_and_deletion_collects_the_pods(&client, &jobs_ns.name, before, restarted_at)
        .await;
    operator.uninstall();
    jobs_ns.cleanup().await;
    system_ns.cleanup().await;
}
