//! End to end on the real control plane, as users run anyk: `helm install` the chart, run the
//! operator built from this repository as a process with the identity of the chart's service
//! account (so the chart's RBAC is what is tested), `kubectl apply` the example TrainingJob,
//! and break things: a failed worker, a NotReady node, a failed server, suspend and resume, and a
//! real parameter server and real workers that the operator pushes layouts to.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyk_operator::build::{JOB_LABEL, SERVER_ENDPOINT_ANNOTATION};
use anyk_operator::crd::{TrainingJob, TrainingJobStatus};
use anyk_testkit::{TestNamespace, eventually, free_port, run_tool, write_token_kubeconfig};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

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
    data_volume(&client, &jobs_ns.name, &release).await;

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

/// Tests 1, 2, 5, 7 of the operator issue on the shipped example, plus a failed server and
/// suspend/resume.
async fn the_example_job_heals(client: &Client, ns: &str) {
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

async fn a_restart_changes_nothing_and_deletion_collects_the_pods(
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

/// Test 3: a node goes NotReady; its workers count as lost after the operator's grace, long
/// before Kubernetes would evict them, and the layout is repaired around them.
async fn a_not_ready_node_loses_its_workers_within_the_grace(client: &Client, ns: &str) {
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

/// Test 6: the operator pushes layouts to a real anyk-server and reports its progress; real
/// workers train through a repair and the job succeeds, then expires (ttlSecondsAfterFinished).
async fn the_operator_drives_a_real_server(client: &Client, ns: &str) {
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
    // Enough steps that the repair below lands mid-training (about 150 steps/s here).
    let steps = 1500;
    let port = free_port();
    let checkpoints = dir.path().join("checkpoints");
    let start_server = |name: &str| {
        Process::start(
            name,
            Command::new(sibling("anyk-server"))
                .args(["--listen", &format!("127.0.0.1:{port}"), "--blocks", "8"])
                .args(["--steps", &steps.to_string(), "--batch", "16", "--seed", "1"])
                .args(["--optimizer", "adam", "--lr", "0.01", "--checkpoint-every", "50"])
                .arg("--checkpoint-dir")
                .arg(&checkpoints),
            dir.path(),
        )
    };
    let server = start_server("anyk-server");
    server.wait_for_line("listening on ");
    let endpoint = format!("http://127.0.0.1:{port}");
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
    job.metadata.annotations = Some([(SERVER_ENDPOINT_ANNOTATION.to_string(), endpoint.clone())].into());
    jobs.create(&PostParams::default(), &job).await.unwrap();
    wait_status(&jobs, "live", "layout 1 pushed to the server", |s| {
        s.progress
            .as_ref()
            .is_some_and(|p| p.server_layout_epoch == 1 && p.total_steps == steps)
    })
    .await;
    let workers = start_workers(&endpoint, &data, dir.path(), "");
    // Asked directly (status is refreshed every few seconds; this job may take only a few).
    let mut control = anyk_proto::v1::control_client::ControlClient::new(
        anyk_proto::transport::channel(&endpoint).unwrap(),
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
async fn server_progress(control: &mut Control) -> Option<anyk_proto::v1::Progress> {
    let answer = control
        .get_progress(anyk_proto::v1::ProgressRequest {})
        .await
        .ok()?;
    Some(answer.into_inner())
}

type Control = anyk_proto::v1::control_client::ControlClient<tonic::transport::Channel>;

/// Four real workers against the server at `endpoint`.
fn start_workers(endpoint: &str, data: &Path, dir: &Path, tag: &str) -> Vec<Process> {
    (0..4)
        .map(|w| {
            Process::start(
                &format!("anyk-worker{tag}-{w}"),
                Command::new(sibling("anyk-worker"))
                    .args(["train", "--server", endpoint, "--worker", &w.to_string()])
                    .args(["--model", "mlp", "--hidden", "32", "--device", "cpu", "--data"])
                    .arg(data),
                dir,
            )
        })
        .collect()
}

/// The same job with no operator and no fault (the layout pushed by hand): its final parameter
/// digest.
async fn train_undisturbed(data: &Path, dir: &Path, steps: u64) -> String {
    let port = free_port();
    let server = Process::start(
        "anyk-server-clean",
        Command::new(sibling("anyk-server"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--blocks", "8"])
            .args(["--steps", &steps.to_string(), "--batch", "16", "--seed", "1"])
            .args(["--optimizer", "adam", "--lr", "0.01"]),
        dir,
    );
    server.wait_for_line("listening on ");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut control = anyk_proto::v1::control_client::ControlClient::new(
        anyk_proto::transport::channel(&endpoint).unwrap(),
    );
    let layout = anyk_proto::layout_to_wire(&anyk_core::plan(8, 2, 4, 3).unwrap());
    control
        .set_layout(anyk_proto::v1::SetLayoutRequest { layout: Some(layout) })
        .await
        .unwrap();
    let _workers = start_workers(&endpoint, data, dir, "-clean");
    eventually("the undisturbed run finished", 2 * MINUTE, || {
        let mut control = control.clone();
        async move {
            let p = server_progress(&mut control).await?;
            p.finished.then_some(p.param_sha256)
        }
    })
    .await
}

/// The operator process, run with the chart's service account token.
struct Operator {
    /// Killed when the Operator is dropped or restarted.
    process: Option<Process>,
    watched: String,
    dir: PathBuf,
    metrics_port: u16,
    release: String,
    namespace: String,
}

impl Operator {
    fn install(release: &str, namespace: &str, watched: &str) -> Self {
        adopt_crd(release, namespace);
        // replicaCount=0: the Deployment's pod would only be a kwok stand-in; the operator under
        // test is this repository's binary, run below with the same identity.
        run_tool(
            "helm",
            &[
                "install",
                release,
                "charts/anyk",
                "--namespace",
                namespace,
                // Adopting the CRD takes its fields over from the tests' field manager.
                "--force-conflicts",
                "--set",
                "replicaCount=0",
                "--set",
                &format!("watchNamespaces={{{watched}}}"),
            ],
        );
        let account = format!("{release}-operator");
        let token = run_tool(
            "kubectl",
            &["create", "token", &account, "-n", namespace, "--duration", "1h"],
        );
        let dir = tempfile::tempdir().unwrap().keep();
        let kubeconfig = dir.join("operator.kubeconfig");
        write_token_kubeconfig(token.trim(), &kubeconfig);
        let mut operator = Self {
            process: None,
            metrics_port: free_port(),
            release: release.into(),
            namespace: namespace.into(),
            watched: watched.into(),
            dir,
        };
        operator.start();
        operator
    }

    /// Starts the operator binary with the service account's kubeconfig (killing a running one).
    fn start(&mut self) {
        self.process = None;
        self.process = Some(Process::start(
            "anyk-operator",
            Command::new(env!("CARGO_BIN_EXE_anyk-operator"))
                .env("KUBECONFIG", self.dir.join("operator.kubeconfig"))
                .env("ANYK_WATCH_NAMESPACES", &self.watched)
                .env("ANYK_NODE_GRACE_SECONDS", NODE_GRACE_SECONDS.to_string())
                .env("ANYK_METRICS_ADDR", format!("127.0.0.1:{}", self.metrics_port))
                .env("ANYK_OPERATOR_NAMESPACE", &self.namespace)
                .env("ANYK_LOG", "info,anyk_operator=debug"),
            &self.dir,
        ));
    }

    /// Waits until the (re)started operator has made `n` reconcile passes.
    async fn wait_for_passes(&self, n: u64) {
        eventually("the operator reconciling", MINUTE, || async {
            let text = self.try_metrics()?;
            (metric(&text, "anyk_reconciles_total") >= n as f64).then_some(())
        })
        .await;
    }

    fn metrics(&self) -> String {
        let text = self.try_metrics().expect("the metrics endpoint answers");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text
    }

    /// `GET /metrics`, or None while the operator is not listening yet.
    fn try_metrics(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    }

    fn uninstall(mut self) {
        run_tool(
            "helm",
            &["uninstall", &self.release, "--namespace", &self.namespace],
        );
        self.release.clear();
    }
}

impl Drop for Operator {
    /// A failing test still uninstalls (the release's cluster roles would otherwise stay).
    fn drop(&mut self) {
        if !self.release.is_empty() {
            let _ = Command::new(anyk_testkit::tool("helm"))
                .arg("--kubeconfig")
                .arg(anyk_testkit::kubeconfig())
                .args(["uninstall", &self.release, "--namespace", &self.namespace])
                .output();
        }
    }
}

/// Lets this release adopt the TrainingJob CRD that other tests (or an earlier release) applied,
/// as `helm install` on a cluster that already has it needs.
fn adopt_crd(release: &str, namespace: &str) {
    let crd = "customresourcedefinitions/trainingjobs.anyk.dev";
    if run_tool("kubectl", &["get", crd, "--ignore-not-found", "-o", "name"])
        .trim()
        .is_empty()
    {
        return;
    }
    run_tool(
        "kubectl",
        &["label", "--overwrite", crd, "app.kubernetes.io/managed-by=Helm"],
    );
    run_tool(
        "kubectl",
        &[
            "annotate",
            "--overwrite",
            crd,
            &format!("meta.helm.sh/release-name={release}"),
            &format!("meta.helm.sh/release-namespace={namespace}"),
        ],
    );
}

/// A child process whose output goes to a log file, killed on drop (its log printed when the
/// test is failing).
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &str, command: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .current_dir(anyk_testkit::repo_root())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Self {
            name: name.into(),
            child,
            log,
        }
    }

    /// The first line of output containing `needle` (waits up to a minute).
    fn wait_for_line(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                start.elapsed() < MINUTE,
                "{} never printed {needle:?}:\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A binary built next to this test's operator binary (hack/test builds them all).
fn sibling(name: &str) -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_anyk-operator"));
    let path = exe.parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{name} is not built: run `cargo build --release --workspace --bins` (hack/test does)"
    );
    path
}

fn job_json(name: &str, spec: serde_json::Value) -> TrainingJob {
    let mut value = json!({
        "apiVersion": "anyk.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": { "name": name },
        "spec": {
            "dataset": { "persistentVolumeClaim": "digits-blocks", "blocks": 24 },
            "model": { "builtin": "mlp", "hidden": 32 }
        }
    });
    anyk_testkit::merge_json(&mut value["spec"], spec);
    serde_json::from_value(value).unwrap()
}

async fn wait_status(
    jobs: &Api<TrainingJob>,
    name: &str,
    what: &str,
    check: impl Fn(&TrainingJobStatus) -> bool,
) -> TrainingJobStatus {
    eventually(&format!("{name}: {what}"), 2 * MINUTE, || async {
        let status = jobs.get(name).await.ok()?.status?;
        check(&status).then_some(status)
    })
    .await
}

async fn fail_pod(pods: &Api<Pod>, name: &str) {
    let mark = json!({ "metadata": { "annotations": { "anyk.dev/fail": "true" } } });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&mark))
        .await
        .unwrap();
}

async fn set_suspend(jobs: &Api<TrainingJob>, name: &str, suspend: bool) {
    let patch = json!({ "spec": { "suspend": suspend } });
    jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// (worker id, node) of a job's live worker pods.
async fn worker_nodes(pods: &Api<Pod>, job: &str) -> Vec<(u32, String)> {
    let list = pods
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={job},anyk.dev/role=worker")))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let w = p.metadata.labels.as_ref().unwrap()["anyk.dev/worker"]
                .parse()
                .unwrap();
            (w, p.spec.as_ref().unwrap().node_name.clone().unwrap_or_default())
        })
        .collect()
}

/// A fake GPU node of this test's own (kwok runs it), so marking it NotReady disturbs no other test.
async fn add_node(client: &Client, name: &str, pool: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
            "labels": { "type": "kwok", "anyk.dev/pool": pool, "kubernetes.io/hostname": name, "anyk.dev/e2e-node": "true" }
        },
        "spec": { "taints": [{ "key": "anyk.dev/pool", "value": pool, "effect": "NoSchedule" }] },
        "status": {
            "allocatable": { "cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "2" },
            "capacity": { "cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "2" }
        }
    }))
    .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&PostParams::default(), &node).await.unwrap();
    eventually(&format!("node {name} Ready"), MINUTE, || async {
        let node = nodes.get(name).await.ok()?;
        let ready = node
            .status?
            .conditions?
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
}

/// Nodes an earlier, failed run of this test left behind.
async fn remove_leftover_nodes(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes
        .list(&ListParams::default().labels("anyk.dev/e2e-node=true"))
        .await
        .unwrap();
    for node in list.items {
        let _ = nodes
            .delete(&node.metadata.name.unwrap(), &DeleteParams::default())
            .await;
    }
}

/// The example's claim `digits-blocks`, bound to a host-path volume of its own.
async fn data_volume(client: &Client, ns: &str, release: &str) {
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": { "name": format!("{release}-digits") },
        "spec": {
            "capacity": { "storage": "1Gi" }, "accessModes": ["ReadOnlyMany"],
            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
            "hostPath": { "path": "/var/lib/anyk/digits" },
            "claimRef": { "namespace": ns, "name": "digits-blocks" }
        }
    });
    let pvc = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": "digits-blocks" },
        "spec": { "accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": format!("{release}-digits"),
                  "resources": { "requests": { "storage": "1Gi" } } }
    });
    let apply = PatchParams::apply("anyk-tests");
    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client.clone());
    pvs.patch(&format!("{release}-digits"), &apply, &Patch::Apply(&pv))
        .await
        .unwrap();
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    pvcs.patch("digits-blocks", &apply, &Patch::Apply(&pvc))
        .await
        .unwrap();
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics:\n{text}"))
}
