//! anyk's parameter server: owns the parameters, optimizer state and step counter, aggregates
//! each step at the first full cover of the blocks, checkpoints, and answers the operator.

pub mod admission;
pub mod chunks;
pub mod error;
pub mod identity;
pub mod message_limit;
pub mod service;
pub mod serving;
pub mod settings;
pub mod store;
pub mod tensor;
pub mod trainer;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;

pub use identity::Guard;
pub use service::ServerState;
pub use serving::Endpoints;
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
    #[error("failed to read the TLS credentials")]
    Tls(#[from] anyk_proto::tls::TlsError),
    #[error("{0}")]
    Credentials(String),
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

/// Serves both services on one plaintext `listener` until `shutdown` resolves, then writes a
/// final checkpoint: the in-process tests' server. The binary serves [`serve_job`].
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serving::serve_plaintext(listener, state.clone(), max_message_bytes, shutdown).await?;
    final_checkpoint(&state).await;
    Ok(())
}

/// Serves Training, Control and health on their own listeners (mutual TLS on the first two when
/// `endpoints.tls` is set) until `shutdown` resolves, then writes a final checkpoint.
pub async fn serve_job(
    endpoints: Endpoints,
    state: Arc<ServerState>,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serving::serve_endpoints(endpoints, state.clone(), max_message_bytes, shutdown).await?;
    final_checkpoint(&state).await;
    Ok(())
}

async fn final_checkpoint(state: &ServerState) {
    if let Err(status) = state.save_checkpoint().await {
        tracing::warn!(%status, "no checkpoint on shutdown");
    }
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
