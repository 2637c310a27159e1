//! The operator driving a real anyk-server and real workers through a repair to success.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use anyk_proto::tls::{Credentials, Identity, Role};

use super::MINUTE;
use super::support::{Process, fail_pod, job_json, sibling, wait_status};
use anyk_operator::children::SERVER_ENDPOINT_ANNOTATION;
use anyk_operator::crd::TrainingJob;
use anyk_testkit::{eventually, free_port, run_tool};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

/// Test 6: the operator pushes layouts to a real anyk-server and reports its progress; real
/// workers train through a repair and the job succeeds, then expires (ttlSecondsAfterFinished).
pub async fn the_operator_drives_a_real_server(client: &Client, ns: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("blocks");
    let status = Command::new(sibling("anyk"))
        .args([
            "data",
            "split",
            "--input",
            "data/digits.csv.gz",
            "--blocks",
            "8",
            "--out",
        ])
        .arg(&data)
        .current_dir(anyk_testkit::repo_root())
        .status()
        .unwrap();
    assert!(status.success(), "anyk data split");
    // Enough steps that the repair and the server's restart below land mid-training (150 to 400
    // steps/s here, depending on the load).
    let steps = 5000;
    let (port, control_port) = (free_port(), free_port());
    let checkpoints = dir.path().join("checkpoints");
    let tls = dir.path().join("tls");
    let start_server = |name: &str| {
        Process::start(
            name,
            Command::new(sibling("anyk-server"))
                .args(["--listen", &format!("127.0.0.1:{port}"), "--blocks", "8"])
                .args(["--control-listen", &format!("127.0.0.1:{control_port}")])
                .args(["--steps", &steps.to_string(), "--batch", "16", "--seed", "1"])
                .args(["--optimizer", "adam", "--lr", "0.01", "--checkpoint-every", "50"])
                .arg("--checkpoint-dir")
                .arg(&checkpoints)
                .arg("--tls-dir")
                .arg(tls.join("server")),
            dir.path(),
        )
    };
    let endpoint = format!("https://127.0.0.1:{port}");
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), ns);
    let mut job = job_json(
        "live",
        json!({
            "workers": 4, "replication": 2, "targetWorkers": 3,
            "dataset": { "blocks": 8 },
            "training": { "steps": steps, "batch": 16, "optimizer": "adam", "learningRate": 0.01, "momentum": 0.9,
                          "seed": 1, "checkpointInterval": 50 },
            "ttlSecondsAfterFinished": 5
        }),
    );
    let control_endpoint = format!("https://127.0.0.1:{control_port}");
    job.metadata.annotations =
        Some([(SERVER_ENDPOINT_ANNOTATION.to_string(), control_endpoint.clone())].into());
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    // The server outside the cluster gets its certificate, and each worker its own, from the
    // job's authority, which the operator made with the job's first pods.
    let credentials = job_credentials(client, ns, &created, &tls).await;
    let server = start_server("anyk-server");
    server.wait_for_line("listening on ");
    wait_status(&jobs, "live", "layout 1 pushed to the server", |s| {
        s.progress
            .as_ref()
            .is_some_and(|p| p.server_layout_epoch == 1 && p.total_steps == steps)
    })
    .await;
    let workers = start_workers(&endpoint, &data, dir.path(), "", Some(&tls));
    // Asked directly (status is refreshed every few seconds; this job may take only a few), as
    // the operator asks: with its certificate, on the Control port.
    let mut control = anyk_proto::v1::control_client::ControlClient::new(
        anyk_proto::transport::secure_channel(&control_endpoint, Some(&credentials)).unwrap(),
    );
    let started = eventually("training under way on the real server", MINUTE, || {
        let mut control = control.clone();
        async move {
            let p = server_progress(&mut control).await?;
            (p.step >= 20).then_some(p.step)
        }
    })
    .await;
    println!("e2e: failing worker 3's pod at server step {started}");
    // Mid-training, worker 3's pod fails: the repaired layout reaches the server (the epoch in
    // status comes from the server) and the real workers train on through the change.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    fail_pod(&pods, "live-worker-3").await;
    let repaired = wait_status(
        &jobs,
        "live",
        "the repaired layout (epoch 2, or already 3 with the replacement) pushed to the server",
        |s| s.progress.as_ref().is_some_and(|p| p.server_layout_epoch >= 2),
    )
    .await;
    let at_repair = repaired.progress.unwrap().step;
    assert!(
        at_repair < steps,
        "the repair must land mid-training (step {at_repair} of {steps})"
    );
    let held = server_progress(&mut control).await.expect("the server answers");
    assert!(held.epoch >= 2, "the server holds the repaired layout: {held:?}");
    assert!(
        held.step + 200 < steps,
        "the server must die mid-training (step {} of {steps})",
        held.step
    );

    // The server process dies (SIGKILL: no final checkpoint) and comes back on the same address: it
    // resumes from its newest periodic checkpoint, the workers join it again, and the operator
    // pushes the layout to it if the checkpoint's is older.
    drop(server);
    let server = start_server("anyk-server-restarted");
    let resumed = server.wait_for_line("resuming from checkpoint");
    println!("e2e: server restarted: {resumed}");
    eventually("the restarted server holding the job's layout", MINUTE, || {
        let mut control = control.clone();
        let jobs = jobs.clone();
        async move {
            let held = server_progress(&mut control).await?;
            let epoch = jobs.get("live").await.ok()?.status?.layout_epoch?;
            (held.epoch == epoch).then_some(())
        }
    })
    .await;
    let done = wait_status(&jobs, "live", "the job succeeded", |s| {
        s.phase.as_deref() == Some("Succeeded")
    })
    .await;
    println!(
        "e2e: kubectl get tj live\n{}",
        run_tool("kubectl", &["get", "tj", "live", "-n", ns])
    );
    let progress = done.progress.unwrap();
    assert_eq!(progress.step, steps);
    assert!(progress.server_layout_epoch >= 2, "{progress:?}");
    assert!(done.completion_time.is_some());
    let last = server_progress(&mut control).await.expect("the server answers");
    assert!(last.finished && last.step == steps, "{last:?}");
    // Nothing was lost: a run without any fault ends with the very same parameters.
    let clean = train_undisturbed(&data, dir.path(), steps).await;
    assert_eq!(
        last.param_sha256, clean,
        "a failed worker and a killed server change no bit"
    );
    assert_eq!(
        progress.param_sha256.as_deref(),
        Some(clean.as_str()),
        "the status shows the final parameters' digest"
    );
    assert!(
        last.stragglers_skipped > 0 || last.late_gradients_dropped > 0,
        "{last:?}"
    );
    eventually("the finished job deleted after its TTL", MINUTE, || async {
        jobs.get_opt("live").await.ok()?.is_none().then_some(())
    })
    .await;
    drop(workers);
    drop(server);
}

/// The server's progress, or None while it does not answer.
pub async fn server_progress(control: &mut Control) -> Option<anyk_proto::v1::Progress> {
    let answer = control
        .get_progress(anyk_proto::v1::ProgressRequest {})
        .await
        .ok()?;
    Some(answer.into_inner())
}

pub type Control = anyk_proto::v1::control_client::ControlClient<tonic::transport::Channel>;

/// Four real workers against the server at `endpoint`, with their credentials under `tls`
/// (`worker-ID/`) when given.
pub fn start_workers(endpoint: &str, data: &Path, dir: &Path, tag: &str, tls: Option<&Path>) -> Vec<Process> {
    (0..4)
        .map(|w| {
            let mut command = Command::new(sibling("anyk-worker"));
            command
                .args(["train", "--server", endpoint, "--worker", &w.to_string()])
                .args(["--model", "mlp", "--hidden", "32", "--device", "cpu", "--data"])
                .arg(data);
            if let Some(tls) = tls {
                command.arg("--tls-dir").arg(tls.join(format!("worker-{w}")));
            }
            Process::start(&format!("anyk-worker{tag}-{w}"), &mut command, dir)
        })
        .collect()
}

/// Waits for the job's authority (`{job}-tls-ca`, made by the operator), writes the server's
/// credentials (for 127.0.0.1) and the four workers' under `dir`, and returns the operator's.
async fn job_credentials(client: &Client, ns: &str, job: &TrainingJob, dir: &Path) -> Credentials {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = eventually("the job's certificate authority", MINUTE, || async {
        secrets.get_opt("live-tls-ca").await.ok()?
    })
    .await;
    let ca = anyk_operator::tls::authority_in(&secret).expect("the authority's files");
    let uid = job.metadata.uid.clone().unwrap();
    let issue = |role: Role, ips: &[IpAddr]| ca.issue(&Identity::new(&uid, role), &[], ips).unwrap();
    issue(Role::Server, &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .write_dir(&dir.join("server"))
        .unwrap();
    for w in 0..4 {
        issue(Role::Worker(w), &[])
            .write_dir(&dir.join(format!("worker-{w}")))
            .unwrap();
    }
    issue(Role::Operator, &[])
}

/// The same job with no operator and no fault (the layout pushed by hand): its final parameter
/// digest.
pub async fn train_undisturbed(data: &Path, dir: &Path, steps: u64) -> String {
    let port = free_port();
    let server = Process::start(
        "anyk-server-clean",
        Command::new(sibling("anyk-server"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--blocks", "8"])
            .args(["--control-listen", "127.0.0.1:0"])
            .args(["--steps", &steps.to_string(), "--batch", "16", "--seed", "1"])
            .args(["--optimizer", "adam", "--lr", "0.01"]),
        dir,
    );
    server.wait_for_line("listening on ");
    let endpoint = format!("http://127.0.0.1:{port}");
    let control_line = server.wait_for_line("control on ");
    let control_addr = control_line.rsplit(' ').next().unwrap();
    let mut control = anyk_proto::v1::control_client::ControlClient::new(
        anyk_proto::transport::channel(&format!("http://{control_addr}")).unwrap(),
    );
    let layout = anyk_proto::layout_to_wire(&anyk_core::plan(8, 2, 4, 3).unwrap());
    control
        .set_layout(anyk_proto::v1::SetLayoutRequest { layout: Some(layout) })
        .await
        .unwrap();
    let _workers = start_workers(&endpoint, data, dir, "-clean", None);
    eventually("the undisturbed run finished", 2 * MINUTE, || {
        let mut control = control.clone();
        async move {
            let p = server_progress(&mut control).await?;
            p.finished.then_some(p.param_sha256)
        }
    })
    .await
}
