//! The operator as users run it: installed by the chart, run with its service account.

use std::path::PathBuf;
use std::process::Command;

use super::support::{Process, metric};
use super::{MINUTE, NODE_GRACE_SECONDS};
use anyk_testkit::{eventually, free_port, run_tool, write_token_kubeconfig};

/// The operator process, run with the chart's service account token.
pub struct Operator {
    /// Killed when the Operator is dropped or restarted.
    process: Option<Process>,
    watched: String,
    dir: PathBuf,
    metrics_port: u16,
    release: String,
    namespace: String,
}

impl Operator {
    pub fn install(release: &str, namespace: &str, watched: &str) -> Self {
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
    pub fn start(&mut self) {
        self.process = None;
        self.process = Some(Process::start(
            "anyk-operator",
            Command::new(env!("CARGO_BIN_EXE_anyk-operator"))
                .env("KUBECONFIG", self.dir.join("operator.kubeconfig"))
                .env("ANYK_WATCH_NAMESPACES", &self.watched)
                .env("ANYK_NODE_GRACE_SECONDS", NODE_GRACE_SECONDS.to_string())
                .env("ANYK_METRICS_ADDR", format!("127.0.0.1:{}", self.metrics_port))
                .env("ANYK_OPERATOR_NAMESPACE", &self.namespace)
                // The live job's server runs outside the cluster, as a process of this test.
                .env("ANYK_ALLOW_SERVER_ENDPOINT_ANNOTATION", "true")
                // The NotReady-node scenario pins its workers to a pool of its own by taint.
                .env("ANYK_ALLOWED_TOLERATION_KEYS", "nvidia.com/gpu,anyk.dev/pool")
                // One identity across restarts: the restarted operator renews its own lease
                // instead of waiting for it to expire.
                .env("HOSTNAME", "anyk-operator-e2e")
                .env("ANYK_LOG", "info,anyk_operator=debug"),
            &self.dir,
        ));
    }

    /// Waits until the (re)started operator has made `n` reconcile passes.
    pub async fn wait_for_passes(&self, n: u64) {
        eventually("the operator reconciling", MINUTE, || async {
            let text = self.try_metrics()?;
            (metric(&text, "anyk_reconciles_total") >= n as f64).then_some(())
        })
        .await;
    }

    pub fn metrics(&self) -> String {
        let text = self.try_metrics().expect("the metrics endpoint answers");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text
    }

    /// `GET /metrics`, or None while the operator is not listening yet.
    pub fn try_metrics(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        Some(text)
    }

    pub fn uninstall(mut self) {
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
pub fn adopt_crd(release: &str, namespace: &str) {
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
