//! The desired objects of a TrainingJob, checked without a cluster.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

use anyk_operator::children::{self, Images};
use anyk_operator::crd::TrainingJob;
use anyk_testkit::training_job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicyEgressRule;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

/// The README's example job with GPUs, a node selector and a spread key.
fn job(spec: serde_json::Value) -> TrainingJob {
    training_job("digits")
        .namespace("ml")
        .metadata(json!({ "uid": "7b1c0a3e-0000-4000-8000-000000000001" }))
        .spec(json!({
            "dataset": { "path": "/blocks" },
            "worker": { "resources": { "limits": { "nvidia.com/gpu": "1" } }, "nodeSelector": { "gpu": "h100" } },
            "topologyKey": "topology.kubernetes.io/zone"
        }))
        .spec(spec)
        .build()
}

fn job_default() -> TrainingJob {
    job(json!({}))
}

fn images() -> Images {
    Images {
        server: "anyk/server:0.1.0".into(),
        worker: "anyk/worker:0.1.0".into(),
    }
}

fn args(pod: &Pod) -> Vec<String> {
    pod.spec.as_ref().unwrap().containers[0].args.clone().unwrap()
}

#[test]
fn names_are_deterministic_and_owned_by_the_job() {
    let job = job(json!({}));
    let pod = children::worker_pod(&job, 3, &images());
    assert_eq!(pod.metadata.name.as_deref(), Some("digits-worker-3"));
    assert_eq!(
        children::server_pod(&job, &images()).metadata.name.as_deref(),
        Some("digits-server")
    );
    assert_eq!(
        children::service(&job).metadata.name.as_deref(),
        Some("digits-server")
    );
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("TrainingJob", "digits", Some(true))
    );
    assert_eq!(
        children::worker_pod(&job, 3, &images()),
        pod,
        "building twice gives the same object"
    );
}

#[test]
fn training_pods_mount_no_token_and_meet_the_restricted_standard() {
    let job = job(json!({}));
    for pod in [
        children::server_pod(&job, &images()),
        children::worker_pod(&job, 0, &images()),
    ] {
        let spec = pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let pod_sc = spec.security_context.unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        // The non-root user can write its volumes (a checkpoint claim).
        assert_eq!(pod_sc.fs_group, Some(65532));
        assert_eq!(pod_sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    }
}

#[test]
fn workers_get_their_id_data_gpu_and_spread() {
    let job = job(json!({}));
    let pod = children::worker_pod(&job, 5, &images());
    let a = args(&pod);
    let after = |flag: &str| a[a.iter().position(|x| x == flag).unwrap() + 1].clone();
    assert_eq!(after("--worker"), "5");
    assert_eq!(after("--server"), "https://digits-server:50051");
    assert_eq!(after("--tls-dir"), "/tls");
    assert_eq!(after("--data"), "/data/blocks");
    let spec = pod.spec.unwrap();
    let limits = spec.containers[0].resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    assert_eq!(spec.node_selector.unwrap()["gpu"], "h100");
    let spread = &spec.topology_spread_constraints.unwrap()[0];
    assert_eq!(spread.topology_key, "topology.kubernetes.io/zone");
    let claim = spec.volumes.unwrap()[0].persistent_volume_claim.clone().unwrap();
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("digits-blocks", Some(true))
    );
}

#[test]
fn the_server_gets_the_training_settings() {
    let job = job(json!({ "training": {
        "steps": 500, "batch": 16, "optimizer": "sgd", "learningRate": 0.05, "momentum": 0.8,
        "seed": 9, "checkpointInterval": 25, "checkpointClaim": "ckpt",
        "numerics": "native", "strict": true
    } }));
    let pod = children::server_pod(&job, &images());
    let a = args(&pod).join(" ");
    for expected in [
        "--blocks 24",
        "--steps 500",
        "--batch 16",
        "--optimizer sgd",
        "--lr 0.05",
        "--seed 9",
        "--checkpoint-every 25",
        "--strict true",
        "--checkpoint-dir /checkpoints/7b1c0a3e-0000-4000-8000-000000000001",
        "--job-id 7b1c0a3e-0000-4000-8000-000000000001",
    ] {
        assert!(a.contains(expected), "{a} lacks {expected}");
    }
    let worker = args(&children::worker_pod(&job, 0, &images())).join(" ");
    assert!(worker.contains("--numerics native"), "{worker}");
    let default_server = args(&children::server_pod(&job_default(), &images())).join(" ");
    assert!(
        default_server.contains("--gradient-precision f32"),
        "{default_server}"
    );
    let bf16 = self::job(
        json!({ "training": { "steps": 500, "batch": 16, "optimizer": "adam",
        "learningRate": 0.01, "momentum": 0.9, "seed": 1, "checkpointInterval": 25,
        "gradientPrecision": "bf16" } }),
    );
    let bf16_server = args(&children::server_pod(&bf16, &images())).join(" ");
    assert!(bf16_server.contains("--gradient-precision bf16"), "{bf16_server}");
    let default_worker = args(&children::worker_pod(&job_default(), 0, &images())).join(" ");
    assert!(
        default_worker.contains("--numerics reproducible"),
        "{default_worker}"
    );
    let spec = pod.spec.unwrap();
    let probe = spec.containers[0].readiness_probe.clone().unwrap();
    assert_eq!(
        probe.grpc.map(|g| g.port),
        Some(50053),
        "ready by the gRPC health service, on the plaintext health port"
    );
    let volume = &spec.volumes.unwrap()[0];
    assert_eq!(
        volume.persistent_volume_claim.as_ref().unwrap().claim_name,
        "ckpt"
    );
}

#[test]
fn the_endpoint_annotation_counts_only_when_the_operator_allows_it() {
    let job = job(json!({}));
    let mut annotated = job.clone();
    annotated.metadata.annotations = Some(
        [(
            children::SERVER_ENDPOINT_ANNOTATION.to_string(),
            "http://elsewhere.other-tenant.svc:50051".to_string(),
        )]
        .into(),
    );
    assert_eq!(
        children::external_endpoint(&annotated, false),
        None,
        "off by default"
    );
    assert_eq!(
        children::external_endpoint(&annotated, true).as_deref(),
        Some("http://elsewhere.other-tenant.svc:50051")
    );
    assert_eq!(children::external_endpoint(&job, true), None);
    assert_eq!(
        children::control_endpoint(&annotated),
        "https://digits-server.ml.svc:50052",
        "the job's own Service, its Control port"
    );
}

#[test]
fn the_server_admits_its_workers_and_the_operator_only_from_its_namespace() {
    let job = job(json!({}));
    let policy = children::network_policy(&job, Some("anyk-system"));
    assert_eq!(policy.metadata.name.as_deref(), Some("digits-server"));
    let spec = policy.spec.unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()["anyk.dev/role"],
        "server"
    );
    let rules = spec.ingress.unwrap();
    let port = |i: usize| rules[i].ports.as_ref().unwrap()[0].port.clone();
    let from = |i: usize| rules[i].from.clone().unwrap();
    // Training (50051) from the job's workers only.
    assert_eq!(port(0), Some(IntOrString::Int(50051)));
    assert_eq!(from(0).len(), 1, "{:?}", from(0));
    let workers = from(0)[0].pod_selector.clone().unwrap().match_labels.unwrap();
    assert_eq!(
        (
            workers["anyk.dev/job"].as_str(),
            workers["anyk.dev/role"].as_str()
        ),
        ("digits", "worker")
    );
    assert_eq!(from(0)[0].namespace_selector, None, "the job's own namespace");
    // Control (50052) from the operator only.
    assert_eq!(port(1), Some(IntOrString::Int(50052)));
    assert_eq!(from(1).len(), 1, "{:?}", from(1));
    let operator_ns = from(1)[0]
        .namespace_selector
        .clone()
        .unwrap()
        .match_labels
        .unwrap();
    assert_eq!(operator_ns["kubernetes.io/metadata.name"], "anyk-system");
    let operator = from(1)[0].pod_selector.clone().unwrap().match_labels.unwrap();
    assert_eq!(operator["app.kubernetes.io/name"], "anyk-operator");
}

#[test]
fn an_unknown_operator_namespace_admits_no_operator_at_all() {
    let policy = children::network_policy(&job(json!({})), None);
    let rules = policy.spec.unwrap().ingress.unwrap();
    assert_eq!(
        rules.len(),
        1,
        "no Control rule (an empty `from` would admit all): {rules:?}"
    );
    let from = rules[0].from.clone().unwrap();
    assert_eq!(from.len(), 1, "only the workers: {from:?}");
    assert_eq!(from[0].namespace_selector, None);
}

#[test]
fn workers_may_reach_only_their_server_and_dns() {
    let policy = children::worker_network_policy(&job(json!({})));
    assert_eq!(policy.metadata.name.as_deref(), Some("digits-workers"));
    assert_eq!(policy.metadata.owner_references.unwrap()[0].name, "digits");
    let spec = policy.spec.unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Egress".to_string()]));
    assert_eq!(spec.ingress, None, "ingress is left to other policies");
    let selected = spec.pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(
        (
            selected["anyk.dev/job"].as_str(),
            selected["anyk.dev/role"].as_str()
        ),
        ("digits", "worker")
    );
    assert!(!selected.contains_key("anyk.dev/worker"), "every worker");
    let egress = spec.egress.unwrap();
    assert_eq!(egress.len(), 2, "{egress:?}");
    let server = &egress[0];
    let to = server.to.clone().unwrap();
    assert_eq!(to.len(), 1);
    assert_eq!(to[0].namespace_selector, None, "the job's own namespace");
    let labels = to[0].pod_selector.clone().unwrap().match_labels.unwrap();
    assert_eq!(
        (labels["anyk.dev/job"].as_str(), labels["anyk.dev/role"].as_str()),
        ("digits", "server")
    );
    assert_eq!(ports(server), vec![("TCP".to_string(), IntOrString::Int(50051))]);
    let dns = &egress[1];
    assert_eq!(
        ports(dns),
        vec![
            ("UDP".to_string(), IntOrString::Int(53)),
            ("TCP".to_string(), IntOrString::Int(53))
        ]
    );
    let to = dns.to.clone().unwrap();
    assert_eq!(
        to[0].pod_selector.clone().unwrap().match_labels.unwrap()["k8s-app"],
        "kube-dns"
    );
    assert_eq!(
        to[0].namespace_selector,
        Some(Default::default()),
        "in any namespace"
    );
    let system = to[1].namespace_selector.clone().unwrap().match_labels.unwrap();
    assert_eq!(system["kubernetes.io/metadata.name"], "kube-system");
}

fn ports(rule: &NetworkPolicyEgressRule) -> Vec<(String, IntOrString)> {
    let ports = rule.ports.clone().unwrap().into_iter();
    ports.map(|p| (p.protocol.unwrap(), p.port.unwrap())).collect()
}
