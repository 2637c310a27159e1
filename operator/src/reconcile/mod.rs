//! One reconcile pass over a TrainingJob, as named steps:
//!
//! read (I/O: fresh status, pods, nodes) -> decide (pure: validate, restore the layout, heal, the
//! status, Events, pods to delete and create) -> apply (status first, then Events, deletions,
//! children) -> ask the server (push the layout, read progress) -> decide and apply again (status
//! if changed, success, TTL) -> requeue.
//!
//! Worker pods that fail, vanish, are evicted or sit on a node NotReady beyond the grace are lost:
//! the layout is repaired (only their copies move), the repair written to status and recorded as
//! an Event, replacement pods created, and the replacements rebalanced in once ready. A failed
//! server pod is replaced and resumes from its checkpoint. Suspend deletes the pods and keeps the
//! rest; a finished job is deleted after ttlSecondsAfterFinished. See docs/design.md.

mod actions;
mod apply;
mod create;
pub mod decide;
#[cfg(test)]
mod decide_tests;
mod failure;
mod foreign;
mod halt;
pub mod helpers;
#[cfg(test)]
mod helpers_tests;
mod notes;
mod read;
mod read_helpers;
#[cfg(test)]
mod replica_tests;
mod restore;
#[cfg(test)]
mod trust_tests;

use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;

use crate::controller::Context;
use crate::crd::TrainingJob;
use crate::status::ServerState;
use decide::{Next, Then};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to apply {kind} {name}")]
    Apply {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("failed to delete {kind} {name}")]
    Delete {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("failed to observe the job's pods and nodes")]
    Observe(#[source] kube::Error),
    #[error("failed to write status")]
    WriteStatus(#[source] kube::Error),
    #[error("failed to read status")]
    ReadStatus(#[source] kube::Error),
    #[error("the job has no namespace")]
    NoNamespace,
    #[error("failed to make the TLS credentials of the job's pods")]
    Tls(#[from] crate::tls::TlsSetupError),
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Observe(_) => "observe",
            Error::WriteStatus(_) => "write_status",
            Error::ReadStatus(_) => "read_status",
            Error::NoNamespace => "no_namespace",
            Error::Tls(_) => "tls",
        }
    }
}

/// One pass over a job.
pub async fn reconcile(job: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled();
    let started = Instant::now();
    let seen = match read::read(&job, &ctx).await? {
        read::Read::Seen(seen) => seen,
        read::Read::Gone => return Ok(Action::await_change()),
    };
    let decision = decide::decide(&job, &seen);
    let mut version = seen.resource_version.clone();
    apply::apply(&job, &ctx, &decision.actions, started, &mut version).await?;
    let next = match decision.then {
        Then::Done(next) => next,
        Then::AskServer(mut training) => {
            let server = if training.ask_server {
                ctx.ask_server(&job, &training.endpoint, &mut training.layout)
                    .await
            } else {
                ServerState::NotAsked
            };
            let (actions, next) = decide::after_server(&job, &training, server, seen.now);
            apply::apply(&job, &ctx, &actions, started, &mut version).await?;
            next
        }
    };
    ctx.backoff.succeeded(&job);
    Ok(match next {
        Next::AwaitChange => Action::await_change(),
        Next::After(delay) => Action::requeue(delay),
    })
}
