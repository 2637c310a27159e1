//! The job's status from what the reconcile observed, pure. Conditions keep their
//! lastTransitionTime while their status stays the same, so `kubectl describe` shows when a
//! condition really changed, not when the operator last looked.

use std::collections::BTreeSet;

use anyk_core::{Coverage, Layout, coverage_of};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{LayoutState, Progress, TrainingJob, TrainingJobStatus, WorkerCounts};

/// What the operator knows about the parameter server after this pass.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerState {
    /// Not asked yet in this pass (status is written before the server is asked, so a slow
    /// server never delays a repair showing up).
    NotAsked,
    Reachable {
        progress: Progress,
        finished: bool,
    },
    Unreachable(String),
}

/// Facts of one pass.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub layout: &'a Layout,
    /// Workers whose pods are ready.
    pub ready: &'a BTreeSet<u32>,
    pub server: ServerState,
    pub now: Timestamp,
}

pub mod phase {
    pub const PENDING: &str = "Pending";
    /// The data is being staged (the `{job}-stage` Job runs); no training pod exists yet.
    pub const STAGING: &str = "Staging";
    pub const RUNNING: &str = "Running";
    pub const DEGRADED: &str = "Degraded";
    pub const COVERAGE_LOST: &str = "CoverageLost";
    pub const SUSPENDED: &str = "Suspended";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
}

/// Status of a job that is running (or starting). Counters, the last repair and the completion
/// time carry over from `previous`; the caller updates them.
pub fn running(job: &TrainingJob, previous: &TrainingJobStatus, facts: &Facts) -> TrainingJobStatus {
    let layout = facts.layout;
    let ready = facts.ready;
    let n = job.spec.workers;
    let coverage = coverage_of(layout, ready);
    let progress = match &facts.server {
        ServerState::Reachable { progress, .. } => Some(progress.clone()),
        _ => previous.progress.clone(),
    };
    let finished = matches!(facts.server, ServerState::Reachable { finished: true, .. })
        || previous.phase.as_deref() == Some(phase::SUCCEEDED);
    let all_ready = ready.len() as u32 == n;
    let degraded = coverage.holds && (!all_ready || !coverage.under_replicated.is_empty());
    let phase = if finished {
        phase::SUCCEEDED
    } else if ready.is_empty() {
        phase::PENDING
    } else if !coverage.holds {
        phase::COVERAGE_LOST
    } else if degraded {
        phase::DEGRADED
    } else {
        phase::RUNNING
    };
    // Conditions set elsewhere in the pass (OwnershipConflict, DataStaged) carry over.
    let conditions = with_others(
        &previous.conditions,
        running_conditions(job, previous, facts, &coverage, finished),
    );
    TrainingJobStatus {
        phase: Some(phase.into()),
        conditions: keep_transition_times(&previous.conditions, conditions),
        observed_generation: job.metadata.generation,
        layout_epoch: Some(layout.epoch),
        coverage_margin: Some(coverage.margin),
        under_replicated_blocks: coverage.under_replicated,
        workers_ready: Some(format!("{}/{n}", ready.len())),
        workers: WorkerCounts {
            ready: ready.len() as u32,
            ..previous.workers.clone()
        },
        progress,
        last_repair: previous.last_repair.clone(),
        completion_time: previous
            .completion_time
            .clone()
            .or_else(|| finished.then(|| facts.now.to_string())),
        server_restarts: previous.server_restarts,
        replaced_faulty: previous.replaced_faulty.clone(),
        // Written only while a batched creation is under way.
        pods_created: None,
        start_time: previous.start_time.clone(),
        replacements: previous.replacements.clone(),
        model: previous.model.clone(),
        layout: Some(LayoutState {
            epoch: layout.epoch,
            holders: layout.holders.clone(),
            members: layout.members.iter().copied().collect(),
        }),
    }
}

/// The seven conditions of a running job.
fn running_conditions(
    job: &TrainingJob,
    previous: &TrainingJobStatus,
    facts: &Facts,
    coverage: &Coverage,
    finished: bool,
) -> Vec<Condition> {
    let n = job.spec.workers;
    let ready = facts.ready.len();
    let all_ready = ready as u32 == n;
    let degraded = coverage.holds && (!all_ready || !coverage.under_replicated.is_empty());
    let (progressing, reason, message) = progressing(previous, &facts.server, coverage.holds, finished);
    let c = |type_: &str, ok: bool, reason: &str, message: String| {
        condition(job, type_, ok, reason, &message, facts.now)
    };
    vec![
        c(
            "Ready",
            all_ready && coverage.holds,
            if all_ready {
                "AllWorkersReady"
            } else {
                "WorkersNotReady"
            },
            format!("{ready}/{n} workers ready"),
        ),
        c("Progressing", progressing, reason, message),
        c(
            "CoverageDegraded",
            degraded,
            if degraded { "MarginReduced" } else { "FullMargin" },
            format!(
                "{} more workers may be lost; {} blocks under-replicated",
                coverage.margin,
                coverage.under_replicated.len()
            ),
        ),
        c(
            "CoverageLost",
            !coverage.holds,
            if coverage.holds {
                "Covered"
            } else {
                "TooFewWorkers"
            },
            format!(
                "{} live workers; any {} of the layout's members must cover every block",
                coverage.live, facts.layout.target_workers
            ),
        ),
        replicas_condition(job, previous, facts),
        c(
            "Succeeded",
            finished,
            if finished { "Finished" } else { "NotFinished" },
            String::new(),
        ),
        c("Failed", false, "SpecValid", String::new()),
        c("Suspended", false, "NotSuspended", String::new()),
    ]
}

/// ReplicasDisagree: True once two holders of a block sent different bits for it.
fn replicas_condition(job: &TrainingJob, previous: &TrainingJobStatus, facts: &Facts) -> Condition {
    let progress = match &facts.server {
        ServerState::Reachable { progress, .. } => Some(progress),
        _ => previous.progress.as_ref(),
    };
    let disagreements = progress.map_or(0, |p| p.replica_disagreements);
    let faulty: Vec<u32> =
        progress.map_or_else(Vec::new, |p| p.faulty_workers.iter().map(|f| f.worker).collect());
    let (reason, message) = if disagreements == 0 {
        (
            "ReplicasAgree",
            "every block copy compared so far agreed".to_string(),
        )
    } else {
        let message = format!(
            "{disagreements} block copies differed from another holder's; faulty workers: {faulty:?}"
        );
        ("ReplicasDisagree", message)
    };
    condition(
        job,
        "ReplicasDisagree",
        disagreements > 0,
        reason,
        &message,
        facts.now,
    )
}

/// The Progressing condition's status, reason and message.
fn progressing(
    previous: &TrainingJobStatus,
    server: &ServerState,
    covered: bool,
    finished: bool,
) -> (bool, &'static str, String) {
    match server {
        _ if finished => (
            false,
            "Finished",
            "the server reported the final step".to_string(),
        ),
        ServerState::Reachable { progress, .. } if covered => (
            true,
            "Training",
            format!("step {}/{}", progress.step, progress.total_steps),
        ),
        ServerState::Reachable { .. } => (
            false,
            "WaitingForCoverage",
            "the server waits: it never aggregates a step whose gradients miss a block".to_string(),
        ),
        ServerState::Unreachable(err) => (false, "ServerUnreachable", err.clone()),
        ServerState::NotAsked => previous_condition(previous, "Progressing").map_or(
            (
                false,
                "ServerStarting",
                "the server has not answered yet".to_string(),
            ),
            |c| (c.status == "True", static_reason(&c.reason), c.message.clone()),
        ),
    }
}

/// A suspended job: no pods, the layout and progress kept for the resume.
pub fn suspended(job: &TrainingJob, previous: &TrainingJobStatus, now: Timestamp) -> TrainingJobStatus {
    let mut status = previous.clone();
    status.phase = Some(phase::SUSPENDED.into());
    status.workers.ready = 0;
    status.workers_ready = Some(format!("0/{}", job.spec.workers));
    status.observed_generation = job.metadata.generation;
    let mut conditions = previous.conditions.clone();
    upsert(
        &mut conditions,
        condition(
            job,
            "Suspended",
            true,
            "SuspendedBySpec",
            "pods deleted; the checkpoint is kept",
            now,
        ),
    );
    upsert(
        &mut conditions,
        condition(job, "Ready", false, "Suspended", "the job is suspended", now),
    );
    upsert(
        &mut conditions,
        condition(
            job,
            "Progressing",
            false,
            "Suspended",
            "the job is suspended",
            now,
        ),
    );
    status.conditions = keep_transition_times(&previous.conditions, conditions);
    status
}

/// A spec the apiserver should have refused (an older CRD without the CEL rules).
pub fn invalid(
    job: &TrainingJob,
    previous: &TrainingJobStatus,
    message: String,
    now: Timestamp,
) -> TrainingJobStatus {
    failed(job, previous, "InvalidSpec", &message, now)
}

/// A job that failed for `reason` (a spec the apiserver should have refused, one the operator's
/// policy refuses, too many replacements, the deadline).
pub fn failed(
    job: &TrainingJob,
    previous: &TrainingJobStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> TrainingJobStatus {
    let conditions = vec![
        condition(job, "Ready", false, reason, message, now),
        condition(job, "Progressing", false, reason, message, now),
        condition(job, "Failed", true, reason, message, now),
    ];
    // Conditions about other things (DataStaged, ReplicasDisagree, ...) still say what they said.
    let conditions = with_others(&previous.conditions, conditions);
    TrainingJobStatus {
        phase: Some(phase::FAILED.into()),
        conditions: keep_transition_times(&previous.conditions, conditions),
        observed_generation: job.metadata.generation,
        ..previous.clone()
    }
}

/// `conditions`, and those of `previous` about anything else.
fn with_others(previous: &[Condition], mut conditions: Vec<Condition>) -> Vec<Condition> {
    let others: Vec<Condition> = previous
        .iter()
        .filter(|p| !conditions.iter().any(|c| c.type_ == p.type_))
        .cloned()
        .collect();
    conditions.extend(others);
    conditions
}

pub fn condition(
    job: &TrainingJob,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: job.metadata.generation,
        last_transition_time: Time(now),
    }
}

/// Sets one condition of `status`, keeping its transition time from `previous` while its status
/// is unchanged.
pub fn set_condition(status: &mut TrainingJobStatus, previous: &TrainingJobStatus, new: Condition) {
    let new = keep_transition_times(&previous.conditions, vec![new]);
    for c in new {
        upsert(&mut status.conditions, c);
    }
}

fn upsert(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(slot) => *slot = new,
        None => conditions.push(new),
    }
}

fn previous_condition<'a>(previous: &'a TrainingJobStatus, type_: &str) -> Option<&'a Condition> {
    previous.conditions.iter().find(|c| c.type_ == type_)
}

/// Reasons are a small fixed set; map a stored one back to its static name.
fn static_reason(reason: &str) -> &'static str {
    match reason {
        "Training" => "Training",
        "WaitingForCoverage" => "WaitingForCoverage",
        "ServerUnreachable" => "ServerUnreachable",
        "Finished" => "Finished",
        _ => "ServerStarting",
    }
}

/// A condition whose status did not change keeps the time it last changed.
fn keep_transition_times(previous: &[Condition], mut next: Vec<Condition>) -> Vec<Condition> {
    for c in &mut next {
        if let Some(old) = previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    next
}

#[cfg(test)]
pub(crate) mod tests;
