//! From a user's data to a usable model on real pods, with no manual step: CSV files with a
//! header in a real S3-compatible store (versitygw, `hack/s3`), staged into blocks by the
//! operator's staging Job, trained, and exported as files that plain PyTorch loads and that give
//! the very test metrics anyk reported. A classifier (built-in mlp) and a `forward(x, y) -> loss`
//! regression model fetched from the same store; and data with a non-finite feature fails its
//! job naming the line, with nothing written on the claim.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyk_operator::crd::{TrainingJob, TrainingJobStatus};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::MINUTE;
use super::training::Namespace;

const BUCKET: &str = "anyk-staging";
/// The store as pods see it: the host's address on the node bridge (`hack/real-cluster`).
const ENDPOINT: &str = "http://10.250.0.1:10390";

#[tokio::test]
async fn data_in_s3_becomes_a_model_that_pytorch_loads() {
    let _alone = super::REAL_NODE.lock().await;
    let ns = Namespace::create().await;
    let files = tempfile::tempdir().unwrap();
    upload_inputs(&ns.name, files.path());
    create::<Secret>(&ns, secret()).await;
    for claim in ["data", "models"] {
        create::<PersistentVolumeClaim>(&ns, claim_of(claim)).await;
    }
    let digits = job(
        &ns.name,
        "digits",
        "digits.csv",
        json!({ "builtin": "mlp" }),
        "class",
    );
    let regression = job(
        &ns.name,
        "regression",
        "regression.csv",
        json!({ "torchScript": format!("s3://{BUCKET}/{}/regression.pt", ns.name), "contract": "loss" }),
        "value",
    );
    let bad = job(&ns.name, "bad", "bad.csv", json!({ "builtin": "mlp" }), "class");
    // As a user would: kubectl apply, the apiserver filling in the defaults.
    let manifest = files.path().join("jobs.json");
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": [digits, regression, bad] });
    std::fs::write(&manifest, list.to_string()).unwrap();
    super::cluster::tool(
        "kubectl",
        &["apply", "-n", &ns.name, "-f", manifest.to_str().unwrap()],
    );
    let jobs: Api<TrainingJob> = Api::namespaced(ns.client.clone(), &ns.name);

    let failed = wait(&jobs, "bad", |s| s.phase.as_deref() == Some("Failed")).await;
    let staged = condition(&failed, "DataStaged");
    assert_eq!(staged["reason"], "StagingFailed", "{failed:#?}");
    let message = staged["message"].as_str().unwrap();
    assert!(
        message.contains("line 3") && message.contains("not a finite"),
        "{message}"
    );

    let digits = wait(&jobs, "digits", exported).await;
    let model = digits.model.clone().unwrap();
    let accuracy = model.test_accuracy.unwrap();
    assert!(accuracy >= 0.9, "{model:?}");
    // The digits' pixels go up to 16: the model saw them divided by that.
    assert_eq!(model.feature_scale, Some(16.0), "{model:?}");
    let (data, models) = (volume_dir(&ns, "data").await, volume_dir(&ns, "models").await);
    let python = check_export(&[
        "--safetensors",
        models.join(&model.safetensors).to_str().unwrap(),
        "--torchscript",
        models
            .join(model.torch_script.as_deref().unwrap())
            .to_str()
            .unwrap(),
        "--test",
        data.join("digits/test.safetensors").to_str().unwrap(),
    ]);
    for file in ["safetensors", "torchscript"] {
        assert_eq!(
            python[file]["accuracy"].as_f64(),
            Some(accuracy),
            "{file}: {python}"
        );
    }

    let regression = wait(&jobs, "regression", exported).await;
    let model = regression.model.clone().unwrap();
    let loss = model.test_loss.unwrap();
    assert!(model.test_accuracy.is_none() && loss < 0.2, "{model:?}");
    let python = check_export(&[
        "--safetensors",
        models.join(&model.safetensors).to_str().unwrap(),
        "--module",
        data.join("regression/model.pt").to_str().unwrap(),
        "--torchscript",
        models
            .join(model.torch_script.as_deref().unwrap())
            .to_str()
            .unwrap(),
        "--contract",
        "loss",
        "--test",
        data.join("regression/test.safetensors").to_str().unwrap(),
    ]);
    for file in ["safetensors", "torchscript"] {
        let got = python[file]["loss"].as_f64().unwrap();
        assert!(
            (got - loss).abs() <= 1e-6 * loss.abs().max(1.0),
            "{file}: {got} vs {loss}"
        );
    }
    // The failed split left nothing on the claim: no manifest, no block.
    let leftovers: Vec<_> = std::fs::read_dir(data.join("bad")).map_or(Vec::new(), |d| d.flatten().collect());
    assert!(leftovers.is_empty(), "{leftovers:?}");
    println!(
        "staging figures: digits from S3 (CSV with a header) test accuracy {accuracy:.4}, the same \
         in PyTorch from model.safetensors and model.pt; regression test loss {loss:.5}, the same from \
         model.safetensors and model.pt"
    );
    ns.cleanup().await;
}

fn exported(status: &TrainingJobStatus) -> bool {
    status.model.is_some()
}

/// The CSV files (with headers) and the regression model, in the store under `prefix/`.
fn upload_inputs(prefix: &str, dir: &Path) {
    let python = |args: &[&str]| {
        let out = Command::new("python3").args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let root = anyk_testkit::repo_root();
    python(&[
        "-W",
        "ignore",
        root.join("examples/models/make.py").to_str().unwrap(),
        dir.to_str().unwrap(),
    ]);
    let with_header = format!(
        "import gzip\nrows = gzip.open({:?}, 'rt').read().split()\n\
         header = ','.join([f'pixel{{i}}' for i in range(64)] + ['digit'])\n\
         open({:?}, 'w').write(header + '\\n' + '\\n'.join(rows) + '\\n')\n",
        root.join("data/digits.csv.gz"),
        dir.join("digits.csv")
    );
    python(&["-c", &with_header]);
    std::fs::write(dir.join("bad.csv"), "a,b,label\n1,2,0\n3,inf,1\n4,5,1\n").unwrap();
    for file in ["digits.csv", "regression.csv", "regression.pt", "bad.csv"] {
        let out = Command::new(root.join("hack/s3"))
            .args(["put", BUCKET, &format!("{prefix}/{file}")])
            .arg(dir.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hack/s3 put (hack/test starts the store: hack/s3 up): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn secret() -> Value {
    json!({
        "metadata": { "name": "s3-credentials" },
        "stringData": { "AWS_ACCESS_KEY_ID": "anyk-test", "AWS_SECRET_ACCESS_KEY": "anyk-test-secret-key" }
    })
}

fn claim_of(name: &str) -> Value {
    json!({
        "metadata": { "name": name },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } }
    })
}

/// A small job (4 workers, any 3 cover) on `file` of this namespace's folder in the store.
fn job(prefix: &str, name: &str, file: &str, model: Value, labels: &str) -> Value {
    json!({
        "apiVersion": "anyk.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": { "name": name },
        "spec": {
            "dataset": {
                "persistentVolumeClaim": "data", "path": format!("/{name}"), "blocks": 8,
                "source": {
                    "uri": format!("s3://{BUCKET}/{prefix}/{file}"), "endpoint": ENDPOINT,
                    "credentialsSecret": "s3-credentials", "labels": labels
                }
            },
            "replication": 2, "workers": 4, "targetWorkers": 3,
            "model": model,
            "training": {
                "steps": 300, "batch": 32, "optimizer": "adam", "learningRate": 0.01, "momentum": 0.9,
                "seed": 1, "checkpointInterval": 100, "checkpointClaim": "models"
            },
            "worker": { "resources": { "requests": { "cpu": "100m" } } },
            "server": { "resources": { "requests": { "cpu": "100m" } } }
        }
    })
}

async fn create<K>(ns: &Namespace, object: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

async fn wait(
    jobs: &Api<TrainingJob>,
    name: &str,
    done: fn(&TrainingJobStatus) -> bool,
) -> TrainingJobStatus {
    let what = format!("TrainingJob {name}");
    anyk_testkit::eventually(&what, 8 * MINUTE, || {
        let (jobs, name) = (jobs.clone(), name.to_string());
        async move {
            let status = jobs.get(&name).await.ok()?.status?;
            if status.phase.as_deref() == Some("Failed") && !done(&status) {
                panic!("{name} failed: {status:#?}");
            }
            done(&status).then_some(status)
        }
    })
    .await
}

fn condition(status: &TrainingJobStatus, type_: &str) -> Value {
    let found = status.conditions.iter().find(|c| c.type_ == type_);
    serde_json::to_value(found).unwrap()
}

/// The host directory of the local volume bound to `claim`.
async fn volume_dir(ns: &Namespace, claim: &str) -> PathBuf {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let volume = claims
        .get(claim)
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();
    let pv = Api::<PersistentVolume>::all(ns.client.clone())
        .get(&volume)
        .await
        .unwrap();
    PathBuf::from(pv.spec.unwrap().local.unwrap().path)
}

/// `examples/models/check_export.py`: what plain PyTorch makes of the exported files.
fn check_export(args: &[&str]) -> Value {
    let script = anyk_testkit::repo_root().join("examples/models/check_export.py");
    let out = Command::new("python3")
        .args(["-W", "ignore", script.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
