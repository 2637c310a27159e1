//! `anyk-operator`: wiring only (arguments, tracing, the controller).

use anyk_operator::build::Images;
use clap::Parser;

/// The anyk Kubernetes operator.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Image of the parameter-server pods (a job's spec.server.image overrides it).
    #[arg(
        long,
        env = "ANYK_SERVER_IMAGE",
        default_value = "ghcr.io/anyk-dev/anyk-server:0.1.0"
    )]
    server_image: String,
    /// Image of the worker pods (a job's spec.worker.image overrides it).
    #[arg(
        long,
        env = "ANYK_WORKER_IMAGE",
        default_value = "ghcr.io/anyk-dev/anyk-worker:0.1.0"
    )]
    worker_image: String,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "ANYK_WATCH_NAMESPACE")]
    namespace: Option<String>,
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
    let images = Images {
        server: args.server_image,
        worker: args.worker_image,
    };
    tracing::info!(namespace = ?args.namespace, "anyk operator starting");
    anyk_operator::controller::run(client, images, args.namespace).await;
    Ok(())
}
