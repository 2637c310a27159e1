//! Every way a request can be refused, and the gRPC status each maps to (the codes are listed in
//! the README: clients retry on UNAVAILABLE and give up on the others).

use std::error::Error;
use std::fmt::Write;

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
    #[error("invalid layout")]
    InvalidLayout(#[source] LayoutError),
    #[error("gradient does not fit the step being collected")]
    Aggregate(#[from] anyk_core::aggregate::OfferError),
    #[error("tensor is missing")]
    MissingTensor,
    #[error("initial parameters are empty: the model must have at least one parameter")]
    EmptyModel,
    #[error("layout epoch {got} jumps more than {max} above the current epoch {current}")]
    EpochJump { got: u64, current: u64, max: u64 },
    #[error("training failed at step {}: {}; the server keeps the parameters of step {}", .0.step, .0.reason, .0.step)]
    TrainingFailed(crate::trainer::Failure),
}

/// Why a pushed layout cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("it has {blocks} blocks ({holder_lists} holder lists), the job has {job_blocks}")]
    BlockCount {
        blocks: u32,
        holder_lists: usize,
        job_blocks: u32,
    },
    #[error("block {0} has no holder")]
    NoHolder(u32),
    #[error("block {block} is held by worker {worker}, which is not a member")]
    HolderNotMember { block: u32, worker: u32 },
    #[error("block {0} has two copies on one worker")]
    DuplicateCopy(u32),
    #[error("a member is outside 0..{workers}")]
    MemberOutOfRange { workers: u32 },
    #[error("reduction units do not tile the blocks in order")]
    UnitsDoNotTile,
    #[error("reduction units cannot change during a job")]
    UnitsChanged,
    #[error("it has {workers} workers, at most {max} are allowed")]
    TooManyWorkers { workers: u32, max: u32 },
    #[error("it has {copies} block copies, at most {max} are allowed")]
    TooManyCopies { copies: u64, max: u32 },
}

impl From<LayoutError> for RequestError {
    fn from(err: LayoutError) -> Self {
        Self::InvalidLayout(err)
    }
}

impl RequestError {
    pub fn code(&self) -> Code {
        use RequestError::*;
        match self {
            UnknownWorker { .. } => Code::NotFound,
            NoLayout | NotInitialized => Code::Unavailable,
            WrongEpoch { .. } | OlderLayout { .. } | EpochReused(_) | TrainingFailed(_) => {
                Code::FailedPrecondition
            }
            FutureStep { .. } => Code::OutOfRange,
            NotHolder { .. } => Code::PermissionDenied,
            NoBlocks
            | UnsupportedDtype(_)
            | RaggedTensor { .. }
            | WrongLength { .. }
            | NotFinite { .. }
            | InvalidLayout(_)
            | Aggregate(_)
            | MissingTensor
            | EmptyModel
            | EpochJump { .. } => Code::InvalidArgument,
        }
    }
}

impl From<RequestError> for Status {
    fn from(err: RequestError) -> Self {
        Status::new(err.code(), chain(&err))
    }
}

/// `err` and its causes, outermost first, joined by ": " (the client sees only this text).
pub fn chain(err: &dyn Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
