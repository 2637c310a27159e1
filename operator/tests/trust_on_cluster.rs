//! The operator trusts nothing it did not make, on the real control plane: its pod policy, a
//! status edited by hand, pods and Services that carry a job's names or labels but belong to
//! someone else, the endpoint annotation, jobs that keep failing, and checkpoints of a recreated
//! job. The controller runs in this process with the operator's default settings.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use anyk_operator::children::JOB_LABEL;
use anyk_operator::crd::{TrainingJob, TrainingJobStatus};
use anyk_operator::settings::{Images, Settings};
use anyk_testkit::{TestNamespace, eventually, training_job};
use common::install_crd;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn job(name: &str, spec: serde_json::Value) -> TrainingJob {
    training_job(name)
        .spec(json!({ "workers": 4, "targetWorkers": 2 }))
        .spec(spec)
        .build()
}

async fn status_where(
    jobs: &Api<TrainingJob>,
    name: &str,
    what: &str,
    ok: impl Fn(&TrainingJobStatus) -> bool,
) -> TrainingJobStatus {
    eventually(what, WAIT, || async {
        let status = jobs.get(name).await.ok()?.status?;
        ok(&status).then_some(status)
    })
    .await
}

async fn event_reasons(ns: &TestNamespace, job: &str) -> Vec<String> {
    let events: Api<Event> = ns.api();
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(job))
        .filter_map(|e| e.reason)
        .collect()
}

fn failed_reason(status: &TrainingJobStatus) -> Option<&str> {
    let failed = status.conditions.iter().find(|c| c.type_ == "Failed")?;
    (failed.status == "True").then_some(failed.reason.as_str())
}

#[tokio::test]
async fn the_operator_trusts_nothing_it_did_not_make() {
    let ns = TestNamespace::create("trust", &[]).await;
    install_crd(ns.client.clone()).await;
    anyk_testkit::data_claim(&ns.client, &ns.name, &ns.name).await;
    let images = Images::default();
    let controller = tokio::spawn(anyk_operator::controller::run(
        ns.client.clone(),
        Settings::new(images),
        vec![ns.name.clone()],
        Default::default(),
    ));
    let jobs: Api<TrainingJob> = ns.api();
    tokio::join!(
        policy_and_annotation(&ns, &jobs),
        a_corrupted_status_is_repaired(&ns, &jobs),
        foreign_objects_change_nothing(&ns, &jobs),
        a_job_that_keeps_failing_fails(&ns, &jobs),
    );
    a_recreated_job_gets_checkpoints_of_its_own(&ns, &jobs).await;
    assert!(!controller.is_finished(), "the operator never stopped");
    controller.abort();
    ns.cleanup().await;
}

/// A hostPath data set is refused by default; the endpoint annotation is ignored by default.
async fn policy_and_annotation(ns: &TestNamespace, jobs: &Api<TrainingJob>) {
    let host = job(
        "host",
        json!({ "dataset": { "persistentVolumeClaim": null, "hostPath": "/etc" } }),
    );
    jobs.create(&PostParams::default(), &host).await.unwrap();
    let refused = status_where(jobs, "host", "hostPath refused", |s| failed_reason(s).is_some()).await;
    assert_eq!(failed_reason(&refused), Some("PolicyViolation"));
    let pods: Api<Pod> = ns.api();
    let of_host = ListParams::default().labels(&format!("{JOB_LABEL}=host"));
    assert!(
        pods.list(&of_host).await.unwrap().items.is_empty(),
        "no pods for it"
    );

    let mut annotated = job("annotated", json!({}));
    let elsewhere = "http://127.0.0.1:9/other-tenant";
    annotated.metadata.annotations =
        Some([("anyk.dev/server-endpoint".to_string(), elsewhere.to_string())].into());
    jobs.create(&PostParams::default(), &annotated).await.unwrap();
    let status = status_where(jobs, "annotated", "the server asked", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason == "ServerUnreachable")
    })
    .await;
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert!(
        progressing.message.contains("annotated-server."),
        "{}",
        progressing.message
    );
    assert!(
        !progressing.message.contains("127.0.0.1:9"),
        "{}",
        progressing.message
    );
}

/// An out-of-range holder, a duplicate holder, a huge epoch, a phase edited to Succeeded: each
/// repaired with an Event, and the operator keeps running.
async fn a_corrupted_status_is_repaired(ns: &TestNamespace, jobs: &Api<TrainingJob>) {
    jobs.create(&PostParams::default(), &job("edited", json!({})))
        .await
        .unwrap();
    let good = status_where(jobs, "edited", "a layout", |s| s.layout.is_some()).await;
    let corruptions: [fn(&mut TrainingJobStatus); 4] = [
        |s| s.layout.as_mut().unwrap().holders[0][0] = 999,
        |s| {
            let holders = &mut s.layout.as_mut().unwrap().holders[1];
            holders[1] = holders[0];
        },
        // The largest the apiserver stores (int64); it refuses 2^64-1 itself.
        |s| s.layout.as_mut().unwrap().epoch = i64::MAX.unsigned_abs(),
        |s| s.phase = Some("Succeeded".into()),
    ];
    for corrupt in corruptions {
        let mut status = jobs
            .get("edited")
            .await
            .unwrap()
            .status
            .unwrap_or_else(|| good.clone());
        corrupt(&mut status);
        let patch = json!({ "status": status });
        jobs.patch_status("edited", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        status_where(jobs, "edited", "the status repaired", |s| {
            let layout = s.layout.as_ref().unwrap();
            let valid = layout.holders.iter().flatten().all(|&w| w < 4)
                && layout.holders.iter().all(|h| h[0] != h[1])
                && layout.epoch <= 1 << 50;
            valid && s.phase.as_deref() != Some("Succeeded")
        })
        .await;
    }
    let reasons = event_reasons(ns, "edited").await;
    assert!(reasons.iter().any(|r| r == "InvalidStatus"), "{reasons:?}");
}

/// A pod with the job's server labels that fails is not the job's server; a Service that
/// exists under the job's server name, and a Secret under the name its workers would share, are
/// not taken over.
async fn foreign_objects_change_nothing(ns: &TestNamespace, jobs: &Api<TrainingJob>) {
    let services: Api<Service> = ns.api();
    let theirs: Service = serde_json::from_value(json!({
        "metadata": { "name": "owned-server", "labels": { "team": "someone-else" } },
        "spec": { "selector": { "app": "theirs" }, "ports": [{ "port": 80 }] }
    }))
    .unwrap();
    services.create(&PostParams::default(), &theirs).await.unwrap();
    let their_secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "owned-workers-0-3-tls" },
        "stringData": { "theirs": "yes" }
    }))
    .unwrap();
    let secrets: Api<Secret> = ns.api();
    secrets
        .create(&PostParams::default(), &their_secret)
        .await
        .unwrap();
    jobs.create(&PostParams::default(), &job("owned", json!({})))
        .await
        .unwrap();
    status_where(jobs, "owned", "workers ready", |s| {
        s.workers_ready.as_deref() == Some("4/4")
    })
    .await;
    let pods: Api<Pod> = ns.api();
    let impostor: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "impostor",
            "labels": { JOB_LABEL: "owned", "anyk.dev/role": "server" },
            "annotations": { "anyk.dev/fail": "true" }
        },
        "spec": { "containers": [{ "name": "c", "image": "x" }] }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &impostor).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = jobs.get("owned").await.unwrap().status.unwrap();
    assert_eq!(
        status.server_restarts, 0,
        "the impostor's failure is not the server's"
    );
    let service = services.get("owned-server").await.unwrap();
    assert_eq!(service.metadata.owner_references, None, "not taken over");
    assert_eq!(
        service
            .spec
            .unwrap()
            .selector
            .unwrap()
            .get("app")
            .map(String::as_str),
        Some("theirs")
    );
    a_foreign_shared_secret_is_left_alone(ns).await;
    let reasons = event_reasons(ns, "owned").await;
    assert!(reasons.iter().any(|r| r == "OwnershipConflict"), "{reasons:?}");
}

/// A Secret under the name the workers of "owned" would share is not taken over: each worker
/// gets a Secret of its own instead.
async fn a_foreign_shared_secret_is_left_alone(ns: &TestNamespace) {
    let secrets: Api<Secret> = ns.api();
    let pods: Api<Pod> = ns.api();
    let secret = secrets.get("owned-workers-0-3-tls").await.unwrap();
    assert_eq!(secret.metadata.owner_references, None, "not taken over");
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["theirs"]);
    for w in 0..4 {
        let pod = pods.get(&format!("owned-worker-{w}")).await.unwrap();
        let volumes = pod.spec.unwrap().volumes.unwrap();
        let tls = volumes
            .into_iter()
            .find(|v| v.name == "tls")
            .unwrap()
            .secret
            .unwrap();
        assert_eq!(tls.secret_name, Some(format!("owned-worker-{w}-tls")));
        assert!(secrets.get(&format!("owned-worker-{w}-tls")).await.is_ok());
    }
}

/// A worker whose every incarnation fails: replaced with backoff, then the job fails with the
/// reason, and its pods go.
async fn a_job_that_keeps_failing_fails(ns: &TestNamespace, jobs: &Api<TrainingJob>) {
    jobs.create(
        &PostParams::default(),
        &job("doomed", json!({ "backoffLimit": 1 })),
    )
    .await
    .unwrap();
    status_where(jobs, "doomed", "workers ready", |s| {
        s.workers_ready.as_deref() == Some("4/4")
    })
    .await;
    let pods: Api<Pod> = ns.api();
    let fail = json!({ "metadata": { "annotations": { "anyk.dev/fail": "true" } } });
    let failed = eventually("the job failed", Duration::from_secs(90), || async {
        // Fail whichever incarnation of worker 0 is there now.
        let _ = pods
            .patch("doomed-worker-0", &PatchParams::default(), &Patch::Merge(&fail))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let status = jobs.get("doomed").await.ok()?.status?;
        failed_reason(&status).is_some().then_some(status)
    })
    .await;
    assert_eq!(failed_reason(&failed), Some("BackoffLimitExceeded"));
    assert_eq!(failed.phase.as_deref(), Some("Failed"));
    eventually("its pods deleted", WAIT, || async {
        let left = pods
            .list(&ListParams::default().labels(&format!("{JOB_LABEL}=doomed")))
            .await
            .ok()?;
        left.items
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

/// A job deleted and created again under the same name is another job: its server resumes only
/// checkpoints of its own (a directory and a job id of its UID).
async fn a_recreated_job_gets_checkpoints_of_its_own(ns: &TestNamespace, jobs: &Api<TrainingJob>) {
    let pods: Api<Pod> = ns.api();
    let server_args = || async {
        eventually("the server pod", WAIT, || async {
            let pod = pods.get("again-server").await.ok()?;
            (pod.metadata.deletion_timestamp.is_none()).then_some(())?;
            pod.spec?.containers[0].args.clone()
        })
        .await
    };
    let first = jobs
        .create(&PostParams::default(), &job("again", json!({})))
        .await
        .unwrap();
    let first_args = server_args().await;
    jobs.delete("again", &DeleteParams::foreground()).await.unwrap();
    eventually("the job gone", WAIT, || async {
        jobs.get_opt("again").await.ok()?.is_none().then_some(())
    })
    .await;
    let second = jobs
        .create(&PostParams::default(), &job("again", json!({})))
        .await
        .unwrap();
    let second_args = server_args().await;
    for (created, args) in [(&first, &first_args), (&second, &second_args)] {
        let uid = created.metadata.uid.clone().unwrap();
        let line = args.join(" ");
        assert!(
            line.contains(&format!("--checkpoint-dir /checkpoints/{uid}")),
            "{line}"
        );
        assert!(line.contains(&format!("--job-id {uid}")), "{line}");
    }
    assert_ne!(first_args, second_args);
}
