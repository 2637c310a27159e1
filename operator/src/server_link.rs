//! The operator's side of the server's Control service: push the layout (epoch-fenced) when the
//! server holds an older one, and read its progress for the job's status.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyk_core::Layout;
use anyk_proto::v1::{ProgressRequest, SetLayoutRequest, control_client::ControlClient};
use tonic::transport::Channel;

use crate::crd::{Progress, TrainingFailure, WorkerIncarnation};
use crate::tls::JobTls;

/// Each call gives up after this long: an unreachable server must not hold up healing.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("server endpoint {0:?} is not a valid URL")]
    Endpoint(String),
    #[error("failed to call the server")]
    Call(#[from] tonic::Status),
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the server holds layout epoch {0}, the last there is: no layout can be stamped above it")]
    EpochExhausted(u64),
}

/// One lazily connecting channel per server endpoint and job, reused across reconciles (a job
/// recreated under the same name has another authority, so another channel).
#[derive(Default)]
pub struct Channels(Mutex<HashMap<(String, String), Channel>>);

impl Channels {
    fn get(&self, endpoint: &str, tls: &JobTls) -> Result<Channel, LinkError> {
        let mut channels = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (endpoint.to_string(), tls.job.clone());
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        // Mutual TLS with the operator's certificate of this job (docs/design.md, invariant 11).
        let channel = anyk_proto::transport::secure_channel(endpoint, Some(&tls.operator))
            .map_err(|_| LinkError::Endpoint(endpoint.to_string()))?;
        channels.insert(key, channel.clone());
        Ok(channel)
    }
}

/// What one sync with the server found.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerReport {
    pub progress: Progress,
    /// The epoch of the layout the server holds now. Above the operator's own when the server
    /// already held a newer epoch: the operator's layout was then pushed stamped above it.
    pub epoch: u64,
    /// A layout was pushed in this sync.
    pub pushed: bool,
    pub finished: bool,
}

/// Pushes `layout` unless the server already holds its epoch, then reads progress.
pub async fn sync(
    channels: &Channels,
    endpoint: &str,
    tls: &JobTls,
    layout: &Layout,
) -> Result<ServerReport, LinkError> {
    let mut control = ControlClient::new(channels.get(endpoint, tls)?);
    let mut progress = timed(control.get_progress(ProgressRequest {})).await?;
    let mut wanted = layout.clone();
    if progress.epoch > wanted.epoch {
        // The server is ahead of the job's status (the status was lost, or the server resumed a
        // checkpoint another job left on the same claim). The operator's layout describes the
        // pods that exist, so it wins, stamped above the server's epoch (which the fence needs).
        // Checked: a server at the last epoch there is cannot be stamped above (the server also
        // refuses an epoch that jumps, so it cannot be pushed there).
        wanted.epoch = progress
            .epoch
            .checked_add(1)
            .ok_or(LinkError::EpochExhausted(progress.epoch))?;
    }
    let pushed = progress.epoch < wanted.epoch;
    if pushed {
        // The server fences by epoch: an older epoch than its own is refused (FAILED_PRECONDITION),
        // so a slow operator replica can never roll a layout back.
        let wire = anyk_proto::layout_to_wire(&wanted);
        timed(control.set_layout(SetLayoutRequest { layout: Some(wire) })).await?;
        progress.epoch = wanted.epoch;
    }
    Ok(ServerReport {
        finished: progress.finished,
        epoch: wanted.epoch,
        pushed,
        progress: Progress {
            step: progress.step,
            total_steps: progress.total_steps,
            // NaN before the first step; JSON has no NaN.
            loss: progress.loss.is_finite().then_some(f64::from(progress.loss)),
            steps_per_second: progress.steps_per_second,
            server_layout_epoch: progress.epoch,
            stragglers_skipped: progress.stragglers_skipped,
            late_gradients_dropped: progress.late_gradients_dropped,
            replica_disagreements: progress.replica_disagreements,
            param_sha256: (!progress.param_sha256.is_empty()).then(|| progress.param_sha256.clone()),
            faulty_workers: progress
                .workers
                .iter()
                .filter(|w| w.faulty)
                .map(|w| WorkerIncarnation {
                    worker: w.worker,
                    joins: w.joins,
                })
                .collect(),
            failure: (!progress.failed_reason.is_empty()).then(|| TrainingFailure {
                step: progress.failed_step,
                reason: progress.failed_reason.clone(),
            }),
        },
    })
}

async fn timed<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, LinkError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => Ok(answer?.into_inner()),
        Err(_) => Err(LinkError::Timeout(CALL_TIMEOUT)),
    }
}

/// An error and its causes, one after the other ("a: b: c"), for a status message.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
