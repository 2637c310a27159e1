//! The Service in front of the parameter server, and the NetworkPolicies that fence the job: who
//! may reach its server, and where its workers may connect.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{CONTROL_PORT, OPERATOR_APP, Role, SERVER_PORT, labels, metadata, server_name};
use crate::crd::TrainingJob;

/// The label every namespace carries with its own name (set by the apiserver).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The Service in front of the parameter server.
pub fn service(job: &TrainingJob) -> Service {
    Service {
        metadata: metadata(job, server_name(job), Role::Server),
        spec: Some(ServiceSpec {
            selector: Some(labels(job, Role::Server)),
            ports: Some(vec![
                service_port("grpc", SERVER_PORT),
                service_port("control", CONTROL_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn service_port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: port.into(),
        target_port: Some(IntOrString::Int(port.into())),
        app_protocol: Some("grpc".into()),
        ..ServicePort::default()
    }
}

/// Lets only the job's own workers reach its server's Training port and only the operator its
/// Control port: gradients and layouts are the job's business alone. The operator is admitted only from
/// `operator_namespace`; when that is unknown, not at all (fail closed: a pod labelled like the
/// operator in any other namespace is anyone's to create).
pub fn network_policy(job: &TrainingJob, operator_namespace: Option<&str>) -> NetworkPolicy {
    let workers = NetworkPolicyPeer {
        pod_selector: Some(selector(labels(job, Role::Worker(None)))),
        ..NetworkPolicyPeer::default()
    };
    let operator = operator_namespace.map(|ns| NetworkPolicyPeer {
        namespace_selector: Some(selector(
            [(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())].into(),
        )),
        pod_selector: Some(selector(
            [("app.kubernetes.io/name".to_string(), OPERATOR_APP.to_string())].into(),
        )),
        ..NetworkPolicyPeer::default()
    });
    // Training from the workers; Control only from the operator (the server also checks each
    // caller's certificate: docs/design.md, invariant 11). The health port is left to the
    // kubelet's probe, which comes from the node, not from a pod.
    let training = NetworkPolicyIngressRule {
        from: Some(vec![workers]),
        ports: Some(vec![port("TCP", SERVER_PORT)]),
    };
    // No operator namespace, no Control rule at all: a rule with an empty `from` would admit
    // every source.
    let control = operator.map(|operator| NetworkPolicyIngressRule {
        from: Some(vec![operator]),
        ports: Some(vec![port("TCP", CONTROL_PORT)]),
    });
    NetworkPolicy {
        metadata: metadata(job, server_name(job), Role::Server),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(labels(job, Role::Server))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(std::iter::once(training).chain(control).collect()),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// `{job}-workers`.
fn worker_network_policy_name(job: &TrainingJob) -> String {
    format!("{}-workers", job.name_any())
}

/// Lets the job's workers connect only to their own server's port and to cluster DNS: they read
/// their blocks from a volume and need nothing else, so a compromised or misconfigured worker
/// cannot reach other tenants, the apiserver, or the internet.
pub fn worker_network_policy(job: &TrainingJob) -> NetworkPolicy {
    // Pod selectors also match traffic sent to the Service's ClusterIP: policies apply after the
    // Service address is translated to the pod's.
    let server = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(selector(labels(job, Role::Server))),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![port("TCP", SERVER_PORT)]),
    };
    NetworkPolicy {
        metadata: metadata(job, worker_network_policy_name(job), Role::Worker(None)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(labels(job, Role::Worker(None)))),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(vec![server, dns()]),
            ..NetworkPolicySpec::default()
        }),
    }
}

/// Name lookups (the server's Service name): port 53 over UDP and TCP (large answers), to the
/// cluster DNS pods wherever they run (the conventional `k8s-app: kube-dns` label, kept by
/// CoreDNS) and to kube-system, where most distributions run it under other labels.
fn dns() -> NetworkPolicyEgressRule {
    let kube_dns = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(selector([("k8s-app".to_string(), "kube-dns".to_string())].into())),
        ..NetworkPolicyPeer::default()
    };
    let kube_system = NetworkPolicyPeer {
        namespace_selector: Some(selector(
            [(NAMESPACE_NAME_LABEL.to_string(), "kube-system".to_string())].into(),
        )),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicyEgressRule {
        to: Some(vec![kube_dns, kube_system]),
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    }
}

fn port(protocol: &str, port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(port.into())),
        ..NetworkPolicyPort::default()
    }
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// Whether `existing` is `wanted` as far as the operator sets it (the apiserver adds defaults:
/// clusterIP, protocol, session affinity and more).
pub fn same_service(existing: &Service, wanted: &Service) -> bool {
    let ports = |s: &Service| {
        let spec = s.spec.as_ref();
        let ports = spec.and_then(|s| s.ports.as_ref());
        let ports: Vec<_> = ports
            .iter()
            .flat_map(|ps| ps.iter())
            .map(|p| {
                (
                    p.name.clone(),
                    p.port,
                    p.target_port.clone(),
                    p.app_protocol.clone(),
                )
            })
            .collect();
        (spec.and_then(|s| s.selector.clone()), ports)
    };
    ports(existing) == ports(wanted)
}
