//! Smoke tests that prove the test cluster is a real control plane: scheduling onto fake GPU
//! nodes, pod and node failure, RBAC, and apiserver validation.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyk_testkit::{TestNamespace, admin_client, eventually, merge_json, token_client};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn pod(name: &str, extra: serde_json::Value) -> Pod {
    let mut pod = json!({
        "metadata": { "name": name },
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "main",
                "image": "anyk/worker:test",
                "resources": { "limits": { "nvidia.com/gpu": "1" } }
            }],
            "nodeSelector": { "type": "kwok" }
        }
    });
    merge_json(&mut pod, extra);
    serde_json::from_value(pod).unwrap()
}

async fn phase(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name).await.ok().flatten()?.status?.phase
}

#[tokio::test]
async fn a_pod_lands_on_a_fake_gpu_node_and_runs() {
    let ns = TestNamespace::create("run", &[]).await;
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pod("gpu", json!({})))
        .await
        .unwrap();
    eventually("pod Running", WAIT, || async {
        (phase(&pods, "gpu").await.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let node = pods.get("gpu").await.unwrap().spec.unwrap().node_name.unwrap();
    let gpus = Api::<Node>::all(ns.client.clone())
        .get(&node)
        .await
        .unwrap()
        .status
        .unwrap()
        .capacity
        .unwrap();
    assert_eq!(
        gpus["nvidia.com/gpu"].0, "8",
        "scheduled on {node}, which has no GPUs"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn a_pod_marked_to_fail_fails() {
    let ns = TestNamespace::create("fail", &[]).await;
    let pods: Api<Pod> = ns.api();
    let doomed = pod(
        "doomed",
        json!({ "metadata": { "annotations": { "anyk.dev/fail": "true" } } }),
    );
    pods.create(&PostParams::default(), &doomed).await.unwrap();
    eventually("pod Failed", WAIT, || async {
        (phase(&pods, "doomed").await.as_deref() == Some("Failed")).then_some(())
    })
    .await;
    ns.cleanup().await;
}

/// A node of its own, so marking it NotReady disturbs no other test.
#[tokio::test]
async fn a_not_ready_node_gets_its_pods_evicted() {
    let ns = TestNamespace::create("evict", &[]).await;
    let nodes = Api::<Node>::all(ns.client.clone());
    let node_name = format!("kwok-{}", ns.name);
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": node_name,
            "annotations": { "kwok.x-k8s.io/node": "fake" },
            "labels": { "type": "kwok-evict", "anyk.dev/test-node": ns.name }
        },
        "status": {
            "allocatable": { "cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "1" },
            "capacity": { "cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "1" }
        }
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let pods: Api<Pod> = ns.api();
    let tolerate = |key: &str| json!({ "key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2 });
    let mut victim = pod(
        "victim",
        json!({ "spec": {
            "tolerations": [tolerate("node.kubernetes.io/not-ready"), tolerate("node.kubernetes.io/unreachable")]
        } }),
    );
    let only_this_node = [("anyk.dev/test-node".to_string(), ns.name.clone())];
    victim.spec.as_mut().unwrap().node_selector = Some(only_this_node.into());
    pods.create(&PostParams::default(), &victim).await.unwrap();
    eventually("pod Running", WAIT, || async {
        (phase(&pods, "victim").await.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let mark = json!({ "metadata": { "annotations": { "anyk.dev/not-ready": "true" } } });
    nodes
        .patch(&node_name, &PatchParams::default(), &Patch::Merge(&mark))
        .await
        .unwrap();
    eventually("node NotReady", WAIT, || async {
        let node = nodes.get(&node_name).await.ok()?;
        let ready = node
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status != "True").then_some(())
    })
    .await;
    eventually("pod evicted", WAIT, || async {
        pods.get_opt("victim").await.ok()?.is_none().then_some(())
    })
    .await;
    nodes.delete(&node_name, &DeleteParams::default()).await.unwrap();
    ns.cleanup().await;
}

#[tokio::test]
async fn a_service_account_without_permission_is_forbidden() {
    let ns = TestNamespace::create("rbac", &[]).await;
    let accounts: Api<ServiceAccount> = ns.api();
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "nobody" } })).unwrap();
    accounts.create(&PostParams::default(), &sa).await.unwrap();
    let request: TokenRequest =
        serde_json::from_value(json!({ "spec": { "audiences": [], "expirationSeconds": 600 } })).unwrap();
    let token = accounts
        .create_subresource::<TokenRequest, TokenRequest>("token", "nobody", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("the apiserver issued a token");
    let as_nobody: Api<Pod> = Api::namespaced(token_client(&token).await, &ns.name);
    match as_nobody.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
    // The same request as admin works, so it is RBAC that said no.
    assert!(
        Api::<Pod>::namespaced(admin_client().await, &ns.name)
            .list(&Default::default())
            .await
            .is_ok()
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn an_invalid_object_is_rejected_by_the_apiserver() {
    let ns = TestNamespace::create("invalid", &[]).await;
    let pods: Api<Pod> = ns.api();
    let bad = pod(
        "bad",
        json!({ "spec": { "containers": [{ "name": "Not_A_DNS_Label", "image": "x" }] } }),
    );
    match pods.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec.containers[0].name"),
                "{}",
                status.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
    ns.cleanup().await;
}

#[tokio::test]
async fn the_apiserver_reports_its_real_version() {
    let version = admin_client().await.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.36.3", "{version:?}");
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "36"));
}
