//! What can end a worker's run, and which of those a rejoin may cure.

use tonic::Status;

use crate::data::DataError;
use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to reach the parameter server")]
    Connect(#[from] tonic::transport::Error),
    #[error("parameter server refused {action}")]
    Refused { action: &'static str, source: Status },
    #[error("failed to load block data")]
    Data(#[from] DataError),
    #[error("failed to compute a gradient")]
    Model(#[from] ModelError),
    #[error("this worker's model has {local} parameters but the job's has {job}: wrong --model?")]
    ModelMismatch { local: u64, job: u64 },
    #[error("block {0} was assigned but its data is not loaded")]
    BlockNotLoaded(u32),
    #[error("the server's event stream ended before training finished")]
    StreamEnded,
    #[error("the server's event stream failed")]
    Stream(#[from] Status),
}

impl RunError {
    /// The server went away (its pod was replaced, or it restarted): joining again may work.
    pub fn server_gone(&self) -> bool {
        let gone = |status: &Status| {
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            )
        };
        match self {
            RunError::Connect(_) | RunError::StreamEnded => true,
            RunError::Stream(status) | RunError::Refused { source: status, .. } => gone(status),
            RunError::Data(_)
            | RunError::Model(_)
            | RunError::ModelMismatch { .. }
            | RunError::BlockNotLoaded(_) => false,
        }
    }
}
