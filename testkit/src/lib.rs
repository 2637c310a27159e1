//! A real control plane for tests. `hack/cluster up` (etcd, kube-apiserver, controller-manager,
//! scheduler and kwok, built from the Go module proxy) is started once per test run; each test
//! gets a `kube::Client` and a namespace of its own, deleted when the test ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub mod fixtures;

pub use fixtures::{JobFixture, training_job};

/// The repository root (this crate lives in `testkit/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// Brings the cluster up once per process (idempotent: reuses a running one) and returns the
/// kubeconfig path. Panics with the script's output when the cluster cannot start: cluster tests
/// never skip silently.
pub fn kubeconfig() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = repo_root().join("hack/cluster");
        let out = Command::new(&script)
            .arg("up")
            .output()
            .expect("hack/cluster runs");
        assert!(
            out.status.success(),
            "hack/cluster up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(&script)
            .arg("kubeconfig")
            .output()
            .expect("hack/cluster runs");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// An admin client for the test cluster.
pub async fn admin_client() -> Client {
    client_for(kubeconfig()).await
}

/// A client for the cluster of `path` (a kubeconfig).
pub async fn client_for(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client builds")
}

/// A client that authenticates with a bearer token instead (for service-account identities).
pub async fn token_client(token: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).expect("kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).expect("client builds")
}

/// A namespace for one test, deleted (with everything in it) by [`TestNamespace::cleanup`], or
/// when dropped (a failing test), so that a failed test leaves no pods holding fake GPUs.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
    cleaned: bool,
}

impl TestNamespace {
    /// Creates `anyk-<prefix>-<unique>` with the given labels.
    pub async fn create(prefix: &str, labels: &[(&str, &str)]) -> Self {
        let client = admin_client().await;
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos()
            % 1_000_000_000;
        let name = format!("anyk-{prefix}-{unique}");
        let labels: serde_json::Map<String, serde_json::Value> =
            labels.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": labels }
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        Self {
            client,
            name,
            cleaned: false,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn cleanup(mut self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await;
        self.cleaned = true;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.cleaned {
            let _ = Command::new(tool("kubectl"))
                .arg("--kubeconfig")
                .arg(kubeconfig())
                .args([
                    "delete",
                    "namespace",
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .output();
        }
    }
}

/// Polls `check` until it returns Some or `timeout` passes (then panics naming `what`).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deep-merges JSON object `patch` into `base` (a value in `patch` replaces a non-object one):
/// tests write one valid object and vary a field or two.
pub fn merge_json(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (k, v) in patch {
                merge_json(base.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// A command-line tool of the test cluster (kubectl, helm, ...), from `hack/k8s-tools`' cache.
pub fn tool(name: &str) -> PathBuf {
    let out = Command::new(repo_root().join("hack/k8s-tools"))
        .arg("--bin-dir")
        .output()
        .expect("hack/k8s-tools runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name)
}

/// Runs kubectl or helm against the test cluster and returns its stdout; panics with its output
/// when it fails.
pub fn run_tool(name: &str, args: &[&str]) -> String {
    run_tool_on(kubeconfig(), name, args)
}

/// [`run_tool`] against the cluster of another kubeconfig (the real-node cluster).
pub fn run_tool_on(kubeconfig: &Path, name: &str, args: &[&str]) -> String {
    let out = Command::new(tool(name))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a kubeconfig for the test cluster that authenticates with `token` (a service account's,
/// from the TokenRequest API), for a process that must act with exactly that identity.
pub fn write_token_kubeconfig(token: &str, path: &Path) {
    let mut config = Kubeconfig::read_from(kubeconfig()).expect("kubeconfig parses");
    for named in &mut config.auth_infos {
        named.auth_info = Some(kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        });
    }
    let yaml = serde_yaml::to_string(&config).expect("kubeconfig serializes");
    std::fs::write(path, yaml).expect("kubeconfig written");
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The example's claims (`examples/digits.yaml`: `digits-blocks` and `digits-checkpoints`) in
/// `ns`, each pre-bound to a host-path volume of its own named `{volume}-<claim>` (a hostPath in
/// the pods themselves would break the restricted standard, and the kwok test cluster has no
/// volume provisioner). The claims are as the example writes them, so applying it changes none.
pub async fn data_claim(client: &Client, ns: &str, volume: &str) {
    let apply = PatchParams::apply("anyk-tests");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    for claim in ["digits-blocks", "digits-checkpoints"] {
        let pv_name = format!("{volume}-{claim}");
        let pv = serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": { "name": pv_name },
            "spec": {
                "capacity": { "storage": "1Gi" }, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                "hostPath": { "path": format!("/var/lib/anyk/{claim}") },
                "claimRef": { "namespace": ns, "name": claim }
            }
        });
        let pvc = serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": { "name": claim },
            "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
        });
        pvs.patch(&pv_name, &apply, &Patch::Apply(&pv))
            .await
            .expect("the example's volume is applied");
        pvcs.patch(claim, &apply, &Patch::Apply(&pvc))
            .await
            .expect("the example's claim is applied");
    }
}
