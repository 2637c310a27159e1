//! `anyk-operator`: wiring only (arguments, tracing, metrics endpoint, the controller).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyk_operator::metrics::{self, Metrics};
use anyk_operator::settings::{
    DEFAULT_ALLOW_SERVER_ENDPOINT_ANNOTATION, DEFAULT_NETWORK_POLICIES, DEFAULT_NODE_GRACE_SECONDS,
    DEFAULT_SERVER_IMAGE, DEFAULT_WORKER_IMAGE, Images, Settings,
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
    let settings = Settings {
        images: Images {
            server: args.server_image,
            worker: args.worker_image,
        },
        node_grace: Duration::from_secs(args.node_grace_seconds),
        network_policies: args.network_policies,
        operator_namespace: args.operator_namespace.filter(|ns| !ns.is_empty()),
        allow_server_endpoint_annotation: args.allow_server_endpoint_annotation,
    };
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
    anyk_operator::controller::run(client, settings, namespaces, metrics).await;
    Ok(())
}
