//! anyk's parameter server: owns the parameters, optimizer state and step counter, aggregates
//! each step at the first full cover of the blocks, checkpoints, and answers the operator.

pub mod error;
pub mod service;
pub mod settings;
pub mod store;
pub mod tensor;
pub mod trainer;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyk_proto::transport::{CONNECTION_WINDOW_BYTES, STREAM_WINDOW_BYTES};
use anyk_proto::v1::{control_server::ControlServer, training_server::TrainingServer};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

pub use service::ServerState;
pub use settings::Settings;
pub use store::CheckpointStore;
pub use trainer::Trainer;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to read checkpoints")]
    Resume(#[from] store::StoreError),
    #[error("failed to resume from checkpoint {path}")]
    ForeignCheckpoint {
        path: PathBuf,
        source: anyk_core::job::JobMismatch,
    },
    #[error("failed to serve gRPC")]
    Transport(#[from] tonic::transport::Error),
}

/// Where Kubernetes reads a container's termination message (shown in the pod's status).
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// Builds the trainer, resuming from the newest checkpoint in `store` when there is one.
/// Refuses one written by another job or with other settings (a checkpoint from before job
/// digests is resumed with a warning: it cannot say whose it is).
pub fn load_trainer(settings: Settings, store: Option<&CheckpointStore>) -> Result<Trainer, ServeError> {
    if let Some((path, ckpt)) = store.map(CheckpointStore::latest).transpose()?.flatten() {
        match &ckpt.job {
            Some(job) => {
                job.config
                    .check(&settings.job_config())
                    .map_err(|source| ServeError::ForeignCheckpoint {
                        path: path.clone(),
                        source,
                    })?
            }
            None => tracing::warn!(
                path = %path.display(),
                "checkpoint has no job digest (written before they existed): resuming it unchecked"
            ),
        }
        tracing::info!(path = %path.display(), step = ckpt.step, "resuming from checkpoint");
        return Ok(Trainer::resume(settings, ckpt, Instant::now()));
    }
    Ok(Trainer::new(settings))
}

/// Serves both services on `listener` until `shutdown` resolves, then writes a final checkpoint.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let training = TrainingServer::new(service::TrainingService(state.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let control = ControlServer::new(service::ControlService(state.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    // The standard gRPC health service: Kubernetes' native gRPC probe (and any gRPC client) asks
    // it. The server as a whole ("") and each service are SERVING from the moment it listens.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<TrainingServer<service::TrainingService>>()
        .await;
    health
        .set_serving::<ControlServer<service::ControlService>>()
        .await;
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .add_service(health_service)
        .add_service(training)
        .add_service(control)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async {
            shutdown.await;
            state.close_streams();
        })
        .await?;
    if let Err(status) = state.save_checkpoint().await {
        tracing::warn!(%status, "no checkpoint on shutdown");
    }
    Ok(())
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Says why the server cannot run: on stderr, and in `termination_log` when that file exists
/// (Kubernetes shows it in the pod's status; elsewhere there is none, and writing is best
/// effort). Returns the message.
pub fn report_fatal(err: &dyn std::error::Error, termination_log: &Path) -> String {
    let message = error::chain(err);
    eprintln!("anyk-server: {message}");
    if termination_log.exists() {
        let _ = std::fs::write(termination_log, &message);
    }
    message
}
