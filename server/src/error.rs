//! Every way a request can be refused, and the gRPC status each maps to.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("unknown worker {worker}: the layout has workers 0..{workers}")]
    UnknownWorker { worker: u32, workers: u32 },
    #[error("no layout yet: the operator has not pushed one")]
    NoLayout,
    #[error("parameters are not initialized yet")]
    NotInitialized,
    #[error("stale layout epoch {got}: the current epoch is {current}")]
    WrongEpoch { got: u64, current: u64 },
    #[error("layout epoch {got} is older than the current epoch {current}")]
    OlderLayout { got: u64, current: u64 },
    #[error("layout epoch {0} is already installed with different contents; use a newer epoch")]
    EpochReused(u64),
    #[error("step {got} is not current: the server is at step {current}")]
    FutureStep { got: u64, current: u64 },
    #[error("worker {worker} does not hold block {block} in layout epoch {epoch}")]
    NotHolder { worker: u32, block: u32, epoch: u64 },
    #[error("gradient names no block")]
    NoBlocks,
    #[error("unsupported dtype {0}: only DATA_TYPE_F32 is accepted")]
    UnsupportedDtype(i32),
    #[error("wrong shape: tensor says {length} values but carries {bytes} bytes (4 per f32)")]
    RaggedTensor { length: u64, bytes: usize },
    #[error("wrong shape: {got} values, the model has {want} parameters")]
    WrongLength { got: u64, want: u64 },
    #[error("gradient value at index {index} is not finite ({value})")]
    NotFinite { index: usize, value: f32 },
    #[error("invalid layout: {0}")]
    InvalidLayout(String),
    #[error("{0}")]
    Aggregate(#[from] anyk_core::aggregate::OfferError),
    #[error("tensor is missing")]
    MissingTensor,
}

impl From<RequestError> for Status {
    fn from(err: RequestError) -> Self {
        use RequestError::*;
        let code = match &err {
            UnknownWorker { .. } => Code::NotFound,
            NoLayout | NotInitialized => Code::Unavailable,
            WrongEpoch { .. } | OlderLayout { .. } | EpochReused(_) => Code::FailedPrecondition,
            FutureStep { .. } => Code::OutOfRange,
            NotHolder { .. } => Code::PermissionDenied,
            NoBlocks
            | UnsupportedDtype(_)
            | RaggedTensor { .. }
            | WrongLength { .. }
            | NotFinite { .. }
            | InvalidLayout(_)
            | Aggregate(_)
            | MissingTensor => Code::InvalidArgument,
        };
        Status::new(code, err.to_string())
    }
}
