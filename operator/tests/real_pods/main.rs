//! anyk on real pods: the operator installed by the chart (its real Deployment and image), the
//! example job applied with `kubectl`, and a real parameter server and real workers (the images
//! built from this checkout) training on a real kubelet node (`hack/real-cluster`). Mid-training
//! a worker's process and the server's process are killed and the operator's pod deleted; the
//! job must still end with the very parameters of an undisturbed `anyk local` run. Mutual TLS is
//! on throughout (the operator's per-job authority). Prints the figures the README quotes.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]
// A scenario reads best top to bottom.
#![allow(clippy::too_many_lines)]

mod cluster;
mod faults;
mod staging;
mod training;

use std::time::{Duration, Instant};

use anyk_operator::crd::TrainingJob;
use kube::Api;

use faults::{delete_the_operator_pod, kill_a_worker, kill_the_server};
use training::{Namespace, anyk_local_digest, evaluate, refuses_plaintext, wait_status};

const MINUTE: Duration = Duration::from_secs(60);
/// One scenario at a time on the one real node: the figures are timings, and two jobs of 9 pods
/// each would share 2 cores.
static REAL_NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Long enough for three faults and their repairs mid-training (about a minute of training).
const STEPS: u64 = 3000;

#[tokio::test]
async fn a_job_on_real_pods_trains_heals_and_ends_bit_identical() {
    let _alone = REAL_NODE.lock().await;
    let ns = Namespace::create().await;
    let jobs: Api<TrainingJob> = Api::namespaced(ns.client.clone(), &ns.name);
    let applied = Instant::now();
    ns.apply_example(STEPS);
    let first = wait_status(&jobs, "the first training step", 5 * MINUTE, |s| {
        s.progress.as_ref().is_some_and(|p| p.step >= 1)
    })
    .await;
    let to_first_step = applied.elapsed();
    assert_eq!(first.workers_ready.as_deref(), Some("8/8"), "{first:?}");
    let server = ns.pod("digits-server").await;
    assert!(
        refuses_plaintext(&server).await,
        "mutual TLS: a caller without a certificate gets nothing"
    );

    let worker = kill_a_worker(&ns, 3).await;
    let server = kill_the_server(&ns).await;
    let operator = delete_the_operator_pod(&ns).await;

    let done = wait_status(&jobs, "Succeeded", 10 * MINUTE, |s| {
        s.phase.as_deref() == Some("Succeeded")
    })
    .await;
    let total = applied.elapsed();
    let progress = done.progress.clone().unwrap();
    assert_eq!(progress.step, STEPS);
    let accuracy = evaluate(&ns, STEPS).await;
    assert!(accuracy >= 0.95, "test accuracy {accuracy}");
    let undisturbed = anyk_local_digest(STEPS);
    assert_eq!(
        progress.param_sha256.as_deref(),
        Some(undisturbed.as_str()),
        "a killed worker, a killed server and a deleted operator pod change no bit"
    );
    println!(
        "real-pods figures ({STEPS} steps, 8 CPU workers, r=3, k=6, one real node):\n\
         kubectl apply to first training step  {:.1} s\n\
         worker process killed to repaired status  {:.2} s\n\
         worker process killed to its replacement training  {:.1} s\n\
         steps lost to the worker kill  {}\n\
         server process killed to training again  {:.1} s (resumed from step {}, killed at {})\n\
         steps lost to the server kill  {}\n\
         operator pod deleted to a new leader  {:.1} s; pods recreated 0, layout epoch unchanged\n\
         steps lost to the operator restart  0\n\
         apply to Succeeded  {:.1} s; test accuracy {:.3}; param sha256 {}",
        to_first_step.as_secs_f64(),
        worker.repaired.as_secs_f64(),
        worker.training.as_secs_f64(),
        worker.steps_lost,
        server.training.as_secs_f64(),
        server.resumed_from,
        server.killed_at,
        server.killed_at.saturating_sub(server.resumed_from),
        operator.as_secs_f64(),
        total.as_secs_f64(),
        accuracy,
        undisturbed,
    );
    ns.cleanup().await;
}
