//! `anyk-operator`: wiring only (arguments, tracing, metrics endpoint, the controller).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyk_operator::leader::{self, Elector, LeaseConfig};
use anyk_operator::metrics::{self, Metrics};
use anyk_operator::settings::{
    DEFAULT_ALLOW_SERVER_ENDPOINT_ANNOTATION, DEFAULT_LEADER_ELECTION, DEFAULT_LEASE_DURATION_SECONDS,
    DEFAULT_LEASE_NAME, DEFAULT_NETWORK_POLICIES, DEFAULT_NODE_GRACE_SECONDS, DEFAULT_SERVER_IMAGE,
    DEFAULT_WORKER_IMAGE, Images, PodPolicy, Settings,
};
use clap::Parser;

/// The anyk Kubernetes operator.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Image of the parameter-server pods (a job's spec.server.image overrides it).
    #[arg(long, env = "ANYK_SERVER_IMAGE", default_value = DEFAULT_SERVER_IMAGE)]
    server_image: String,
    /// Image of the worker pods (a job's spec.worker.image overrides it).
    #[arg(long, env = "ANYK_WORKER_IMAGE", default_value = DEFAULT_WORKER_IMAGE)]
    worker_image: String,
    /// Watch only these namespaces (comma-separated; default: all).
    #[arg(long, env = "ANYK_WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Serve Prometheus metrics and /healthz here (e.g. 0.0.0.0:8080).
    #[arg(long, env = "ANYK_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Seconds a worker's node may be NotReady before its pods count as lost.
    #[arg(long, env = "ANYK_NODE_GRACE_SECONDS", default_value_t = DEFAULT_NODE_GRACE_SECONDS)]
    node_grace_seconds: u64,
    /// Create one NetworkPolicy per job that lets only its workers and the operator reach its server.
    #[arg(long, env = "ANYK_NETWORK_POLICIES", default_value_t = DEFAULT_NETWORK_POLICIES, action = clap::ArgAction::Set)]
    network_policies: bool,
    /// The namespace the operator runs in (the chart sets it from the downward API).
    #[arg(long, env = "ANYK_OPERATOR_NAMESPACE")]
    operator_namespace: Option<String>,
    /// Honour the anyk.dev/server-endpoint annotation on TrainingJobs (a server outside the
    /// cluster). Off by default: whoever may annotate a job would choose where the operator calls.
    #[arg(long, env = "ANYK_ALLOW_SERVER_ENDPOINT_ANNOTATION", default_value_t = DEFAULT_ALLOW_SERVER_ENDPOINT_ANNOTATION, action = clap::ArgAction::Set)]
    allow_server_endpoint_annotation: bool,
    /// Let jobs read their data set from a node's directory (dataset.hostPath). Off by default: a
    /// hostPath volume breaks the restricted Pod Security Standard and reads any node directory.
    #[arg(long, env = "ANYK_ALLOW_HOST_PATH", default_value_t = false, action = clap::ArgAction::Set)]
    allow_host_path: bool,
    /// Image prefixes a job's server.image or worker.image may start with (comma-separated;
    /// default: none, so jobs run the operator's images).
    #[arg(long, env = "ANYK_ALLOWED_IMAGE_PREFIXES", value_delimiter = ',')]
    allowed_image_prefixes: Vec<String>,
    /// Toleration keys jobs may add to their pods (comma-separated; `*` allows any).
    #[arg(
        long,
        env = "ANYK_ALLOWED_TOLERATION_KEYS",
        value_delimiter = ',',
        default_value = "nvidia.com/gpu"
    )]
    allowed_toleration_keys: Vec<String>,
    /// Elect a leader on a Lease and reconcile only while leading, so that replicas stand by.
    #[arg(long, env = "ANYK_LEADER_ELECTION", default_value_t = DEFAULT_LEADER_ELECTION, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the coordination.k8s.io Lease the replicas elect their leader on.
    #[arg(long, env = "ANYK_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    lease_name: String,
    /// Namespace of the Lease (default: the operator's namespace, else the service account's,
    /// else "default").
    #[arg(long, env = "ANYK_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a lease lasts unrenewed: a standby takes over this long after the leader stops.
    #[arg(long, env = "ANYK_LEASE_DURATION_SECONDS", default_value_t = DEFAULT_LEASE_DURATION_SECONDS,
        value_parser = clap::value_parser!(u64).range(1..=86_400))]
    lease_duration_seconds: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANYK_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let settings = settings(&args);
    let lease = args.leader_election.then(|| LeaseConfig {
        namespace: leader::lease_namespace(args.lease_namespace, args.operator_namespace.clone()),
        name: args.lease_name,
        identity: leader::identity(),
        duration: Duration::from_secs(args.lease_duration_seconds),
    });
    let namespaces: Vec<String> = args.namespaces.into_iter().filter(|ns| !ns.is_empty()).collect();
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = args.metrics_addr {
        let metrics = metrics.clone();
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tokio::spawn(async move {
            if let Err(err) = metrics::serve(listener, metrics).await {
                tracing::error!(%err, "metrics endpoint stopped");
            }
        });
    }
    tracing::info!(?namespaces, "anyk operator starting");
    let controller = anyk_operator::controller::run(client.clone(), settings, namespaces, metrics);
    match lease {
        Some(lease) => {
            if let Err(err) = Elector::new(client, lease).lead(controller).await {
                // Leadership lost: the controller was dropped mid-pass; exit non-zero rather than
                // try to lead again, so that Kubernetes restarts this replica and it comes back
                // as a standby with nothing left of the old leader's state.
                tracing::error!(error = %err, "no longer the leader; exiting");
                std::process::exit(1);
            }
        }
        None => controller.await,
    }
    Ok(())
}

/// The operator's settings from its arguments.
fn settings(args: &Args) -> Settings {
    Settings {
        images: Images {
            server: args.server_image.clone(),
            worker: args.worker_image.clone(),
        },
        node_grace: Duration::from_secs(args.node_grace_seconds),
        network_policies: args.network_policies,
        // Unknown outside a pod: the NetworkPolicies then admit no operator at all (fail closed).
        operator_namespace: args
            .operator_namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .or_else(leader::mounted_namespace),
        allow_server_endpoint_annotation: args.allow_server_endpoint_annotation,
        pod_policy: PodPolicy {
            allow_host_path: args.allow_host_path,
            allowed_image_prefixes: args
                .allowed_image_prefixes
                .iter()
                .filter(|p| !p.is_empty())
                .cloned()
                .collect(),
            allowed_toleration_keys: args
                .allowed_toleration_keys
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
        },
    }
}
