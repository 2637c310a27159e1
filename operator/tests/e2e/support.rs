//! Processes, fixtures and cluster helpers shared by the scenarios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyk_operator::children::JOB_LABEL;
use anyk_operator::crd::{TrainingJob, TrainingJobStatus};
use anyk_testkit::{eventually, training_job};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::MINUTE;

/// A child process whose output goes to a log file, killed on drop (its log printed when the
/// test is failing).
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn start(name: &str, command: &mut Command, dir: &Path) -> Self {
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
    pub fn wait_for_line(&self, needle: &str) -> String {
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
pub fn sibling(name: &str) -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_anyk-operator"));
    let path = exe.parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{name} is not built: run `cargo build --release --workspace --bins` (hack/test does)"
    );
    path
}

/// The example job at a smaller width, with `spec` merged in.
pub fn job_json(name: &str, spec: serde_json::Value) -> TrainingJob {
    training_job(name)
        .spec(json!({ "model": { "hidden": 32 } }))
        .spec(spec)
        .build()
}

pub async fn wait_status(
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

pub async fn fail_pod(pods: &Api<Pod>, name: &str) {
    let mark = json!({ "metadata": { "annotations": { "anyk.dev/fail": "true" } } });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&mark))
        .await
        .unwrap();
}

pub async fn set_suspend(jobs: &Api<TrainingJob>, name: &str, suspend: bool) {
    let patch = json!({ "spec": { "suspend": suspend } });
    jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// (worker id, node) of a job's live worker pods.
pub async fn worker_nodes(pods: &Api<Pod>, job: &str) -> Vec<(u32, String)> {
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
pub async fn add_node(client: &Client, name: &str, pool: &str) {
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
pub async fn remove_leftover_nodes(client: &Client) {
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

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in metrics:\n{text}"))
}
