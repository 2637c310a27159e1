//! The Service in front of the parameter server and the NetworkPolicy that guards it.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{OPERATOR_APP, Role, SERVER_PORT, labels, metadata, server_name};
use crate::crd::TrainingJob;

/// The Service in front of the parameter server.
pub fn service(job: &TrainingJob) -> Service {
    Service {
        metadata: metadata(job, server_name(job), Role::Server),
        spec: Some(ServiceSpec {
            selector: Some(labels(job, Role::Server)),
            ports: Some(vec![ServicePort {
                name: Some("grpc".into()),
                port: SERVER_PORT.into(),
                target_port: Some(IntOrString::Int(SERVER_PORT.into())),
                app_protocol: Some("grpc".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Lets only the job's own workers and the operator reach its server's port: gradients and
/// layouts are the job's business alone. `operator_namespace` narrows the operator rule to the
/// namespace it runs in (unknown when it runs outside the cluster: then any namespace).
pub fn network_policy(job: &TrainingJob, operator_namespace: Option<&str>) -> NetworkPolicy {
    let operator_namespaces = LabelSelector {
        match_labels: operator_namespace
            .map(|ns| [("kubernetes.io/metadata.name".to_string(), ns.to_string())].into()),
        ..LabelSelector::default()
    };
    let workers = NetworkPolicyPeer {
        pod_selector: Some(selector(labels(job, Role::Worker(None)))),
        ..NetworkPolicyPeer::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(operator_namespaces),
        pod_selector: Some(selector(
            [("app.kubernetes.io/name".to_string(), OPERATOR_APP.to_string())].into(),
        )),
        ..NetworkPolicyPeer::default()
    };
    let ingress = NetworkPolicyIngressRule {
        from: Some(vec![workers, operator]),
        ports: Some(vec![NetworkPolicyPort {
            protocol: Some("TCP".into()),
            port: Some(IntOrString::Int(SERVER_PORT.into())),
            ..NetworkPolicyPort::default()
        }]),
    };
    NetworkPolicy {
        metadata: metadata(job, server_name(job), Role::Server),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(labels(job, Role::Server))),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![ingress]),
            ..NetworkPolicySpec::default()
        }),
    }
}

fn selector(labels: std::collections::BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}
