//! The three faults, each timed: a worker's process killed, the server's process killed, the
//! operator's pod deleted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyk_operator::children::JOB_LABEL;
use anyk_operator::crd::TrainingJob;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams};

use super::training::{JOB, Namespace, OPERATOR_NAMESPACE, server_progress, wait_status};
use super::{MINUTE, cluster};
use anyk_testkit::eventually;

pub struct WorkerFault {
    /// Process killed to a status with the repaired layout.
    pub repaired: Duration,
    /// Process killed to the replacement pod's gradients reaching the server.
    pub training: Duration,
    /// Completed steps that had to be computed again (the step counter never goes back).
    pub steps_lost: u64,
}

pub struct ServerFault {
    /// Process killed to the replacement server completing a step beyond the one it resumed.
    pub training: Duration,
    pub killed_at: u64,
    pub resumed_from: u64,
}

/// Kills worker `id`'s process in its container: its pod fails for real, the operator moves its
/// blocks and replaces the pod, and the replacement rejoins.
pub async fn kill_a_worker(ns: &Namespace, id: u32) -> WorkerFault {
    let jobs: Api<TrainingJob> = Api::namespaced(ns.client.clone(), &ns.name);
    let name = format!("{JOB}-worker-{id}");
    let before = wait_status(&jobs, "some training before the worker fault", MINUTE, |s| {
        s.progress.as_ref().is_some_and(|p| p.step >= 50)
    })
    .await;
    let epoch = before.layout_epoch.unwrap();
    let pod = ns.pod(&name).await;
    let uid = pod.metadata.uid.clone().unwrap();
    let server = ns.pod(&format!("{JOB}-server")).await;
    let step_before = server_progress(ns, &server)
        .await
        .expect("the server answers")
        .step;
    let pid = cluster::container_process(&uid, "anyk-worker").expect("the worker's process on this host");
    let killed = Instant::now();
    cluster::kill(pid);
    wait_status(&jobs, "the layout repaired", MINUTE, |s| {
        s.layout_epoch.is_some_and(|e| e > epoch)
    })
    .await;
    let repaired = killed.elapsed();
    let failed = ns.pods().get_opt(&name).await.unwrap();
    if let Some(old) = failed.filter(|p| p.metadata.uid.as_deref() == Some(uid.as_str())) {
        let phase = old.status.and_then(|s| s.phase);
        assert_eq!(
            phase.as_deref(),
            Some("Failed"),
            "the killed worker's pod failed for real"
        );
    }
    // The replacement: a new pod of the same name whose gradients the server accepts.
    let accepted = |p: &anyk_proto::v1::Progress| {
        p.workers
            .iter()
            .find(|w| w.worker == id)
            .filter(|w| w.joins >= 2)
            .map(|w| w.gradients_accepted)
    };
    let joined_with = eventually("the replacement joined", 2 * MINUTE, || async {
        accepted(&server_progress(ns, &server).await?)
    })
    .await;
    eventually("the replacement trains", MINUTE, || async {
        (accepted(&server_progress(ns, &server).await?)? > joined_with).then_some(())
    })
    .await;
    let training = killed.elapsed();
    let step_after = server_progress(ns, &server)
        .await
        .expect("the server answers")
        .step;
    assert!(
        step_after > step_before,
        "training went on through the worker fault"
    );
    WorkerFault {
        repaired,
        training,
        steps_lost: 0,
    }
}

/// Kills the server's process: its pod fails, the operator replaces it, and the new server
/// resumes from the newest checkpoint on the checkpoint claim.
pub async fn kill_the_server(ns: &Namespace) -> ServerFault {
    let name = format!("{JOB}-server");
    let pod = ns.pod(&name).await;
    let uid = pod.metadata.uid.clone().unwrap();
    let pid = cluster::container_process(&uid, "anyk-server").expect("the server's process on this host");
    let killed_at = server_progress(ns, &pod).await.expect("the server answers").step;
    let killed = Instant::now();
    cluster::kill(pid);
    let pods = ns.pods();
    let replacement = eventually("a replacement server answers", 2 * MINUTE, || async {
        let pod = pods.get_opt(&name).await.ok()??;
        (pod.metadata.uid.as_deref() != Some(uid.as_str())).then_some(())?;
        server_progress(ns, &pod).await.map(|_| pod)
    })
    .await;
    let log = pods.logs(&name, &LogParams::default()).await.unwrap();
    let resumed_from = resumed_step(&log).unwrap_or_else(|| panic!("the new server resumed:\n{log}"));
    eventually("the new server trains", 2 * MINUTE, || async {
        (server_progress(ns, &replacement).await?.step > resumed_from).then_some(())
    })
    .await;
    ServerFault {
        training: killed.elapsed(),
        killed_at,
        resumed_from,
    }
}

/// The step of the server log's "resuming from checkpoint" line (`step=N`).
fn resumed_step(log: &str) -> Option<u64> {
    let log = without_colours(log);
    let line = log.lines().find(|l| l.contains("resuming from checkpoint"))?;
    let after = line.split("step=").nth(1)?;
    after.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// `text` without ANSI colour sequences (ESC [ ... m), which the log may carry.
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Deletes the operator's pod: the Deployment starts another, which takes the lease and goes
/// on with the same layout and the same pods. Returns the time to the new leader.
pub async fn delete_the_operator_pod(ns: &Namespace) -> Duration {
    let jobs: Api<TrainingJob> = Api::namespaced(ns.client.clone(), &ns.name);
    let operators: Api<Pod> = Api::namespaced(ns.client.clone(), OPERATOR_NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), OPERATOR_NAMESPACE);
    let selector = ListParams::default().labels("app.kubernetes.io/name=anyk-operator");
    let old = operators.list(&selector).await.unwrap().items;
    assert_eq!(old.len(), 1, "one operator pod");
    let old_name = old[0].metadata.name.clone().unwrap();
    let epoch = jobs.get(JOB).await.unwrap().status.unwrap().layout_epoch;
    let pods_before = training_pods(ns).await;
    let deleted = Instant::now();
    operators
        .delete(&old_name, &DeleteParams::default())
        .await
        .unwrap();
    let leader = eventually("a new operator pod leads", 2 * MINUTE, || async {
        let holders = leases.list(&ListParams::default()).await.ok()?.items;
        holders
            .into_iter()
            .filter_map(|l| l.spec?.holder_identity)
            .find(|h| *h != old_name && !h.is_empty())
    })
    .await;
    let to_leader = deleted.elapsed();
    eventually("the new operator pod is Ready", MINUTE, || async {
        let conditions = operators.get(&leader).await.ok()?.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;
    // Give the new leader a few passes to (not) act.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(training_pods(ns).await, pods_before, "no pod created or deleted");
    let status = jobs.get(JOB).await.unwrap().status.unwrap();
    assert_eq!(status.layout_epoch, epoch, "the same layout epoch");
    to_leader
}

/// The job's pods by name, with their UIDs.
async fn training_pods(ns: &Namespace) -> BTreeMap<String, String> {
    let selector = ListParams::default().labels(&format!("{JOB_LABEL}={JOB}"));
    ns.pods()
        .list(&selector)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.name.unwrap(), p.metadata.uid.unwrap()))
        .collect()
}

#[test]
fn the_resumed_step_is_read_from_the_server_log() {
    let log = "2026-11-27T14:00:00Z  INFO anyk_server: resuming from checkpoint path=/c/ckpt-000000000450.anyk step=450\n";
    assert_eq!(resumed_step(log), Some(450));
    assert_eq!(resumed_step("listening"), None);
    let coloured =
        "\u{1b}[32m INFO\u{1b}[0m resuming from checkpoint \u{1b}[3mstep\u{1b}[0m\u{1b}[2m=\u{1b}[0m50";
    assert_eq!(resumed_step(coloured), Some(50));
}
