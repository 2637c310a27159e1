//! The job's status from what the reconcile observed, pure. Conditions keep their
//! lastTransitionTime while their status stays the same, so `kubectl describe` shows when a
//! condition really changed, not when the operator last looked.

use std::collections::BTreeSet;

use anyk_core::{Layout, verify};
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
    pub live: &'a BTreeSet<u32>,
    pub server: ServerState,
    pub now: Timestamp,
}

pub mod phase {
    pub const PENDING: &str = "Pending";
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
    let live = facts.live;
    let n = job.spec.workers;
    let coverage = verify(layout, live);
    let all_ready = live.len() as u32 == n;
    let progress = match &facts.server {
        ServerState::Reachable { progress, .. } => Some(progress.clone()),
        _ => previous.progress.clone(),
    };
    let finished = matches!(facts.server, ServerState::Reachable { finished: true, .. })
        || previous.phase.as_deref() == Some(phase::SUCCEEDED);
    let degraded = coverage.holds && (!all_ready || !coverage.under_replicated.is_empty());
    let phase = if finished {
        phase::SUCCEEDED
    } else if live.is_empty() {
        phase::PENDING
    } else if !coverage.holds {
        phase::COVERAGE_LOST
    } else if degraded {
        phase::DEGRADED
    } else {
        phase::RUNNING
    };
    let (progressing, progressing_reason, progressing_message) = match &facts.server {
        _ if finished => (
            false,
            "Finished",
            "the server reported the final step".to_string(),
        ),
        ServerState::Reachable { progress, .. } if coverage.holds => (
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
    };
    let generation = job.metadata.generation;
    let c = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(facts.now),
    };
    let conditions = vec![
        c(
            "Ready",
            all_ready && coverage.holds,
            if all_ready {
                "AllWorkersReady"
            } else {
                "WorkersNotReady"
            },
            format!("{}/{n} workers ready", live.len()),
        ),
        c(
            "Progressing",
            progressing,
            progressing_reason,
            progressing_message,
        ),
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
                coverage.live, layout.target
            ),
        ),
        c(
            "Succeeded",
            finished,
            if finished { "Finished" } else { "NotFinished" },
            String::new(),
        ),
        c("Failed", false, "SpecValid", String::new()),
        c("Suspended", false, "NotSuspended", String::new()),
    ];
    TrainingJobStatus {
        phase: Some(phase.into()),
        conditions: keep_transition_times(&previous.conditions, conditions),
        observed_generation: generation,
        layout_epoch: Some(layout.epoch),
        coverage_margin: Some(coverage.margin),
        under_replicated_blocks: coverage.under_replicated,
        workers_ready: Some(format!("{}/{n}", live.len())),
        workers: WorkerCounts {
            ready: live.len() as u32,
            ..previous.workers.clone()
        },
        progress,
        last_repair: previous.last_repair.clone(),
        completion_time: previous
            .completion_time
            .clone()
            .or_else(|| finished.then(|| facts.now.to_string())),
        server_restarts: previous.server_restarts,
        layout: Some(LayoutState {
            epoch: layout.epoch,
            holders: layout.holders.clone(),
            members: layout.members.iter().copied().collect(),
        }),
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
    let conditions = vec![
        condition(job, "Ready", false, "InvalidSpec", &message, now),
        condition(job, "Failed", true, "InvalidSpec", &message, now),
    ];
    TrainingJobStatus {
        phase: Some(phase::FAILED.into()),
        conditions: keep_transition_times(&previous.conditions, conditions),
        observed_generation: job.metadata.generation,
        ..previous.clone()
    }
}

fn condition(
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
mod tests {
    use super::*;

    fn job() -> TrainingJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "anyk.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": { "name": "j", "namespace": "ns", "generation": 3 },
            "spec": {
                "dataset": { "hostPath": "/d", "blocks": 24 },
                "replication": 3, "workers": 8, "targetWorkers": 6,
                "model": { "builtin": "mlp" }
            }
        }))
        .unwrap()
    }

    fn cond<'a>(s: &'a TrainingJobStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn phases_follow_coverage() {
        let layout = anyk_core::plan(24, 3, 8, 6).unwrap();
        let all: BTreeSet<u32> = (0..8).collect();
        let seven: BTreeSet<u32> = (1..8).collect();
        let five: BTreeSet<u32> = (3..8).collect();
        let prev = TrainingJobStatus::default();
        let s = |live| {
            running(
                &job(),
                &prev,
                &Facts {
                    layout: &layout,
                    live,
                    server: ServerState::NotAsked,
                    now: at(0),
                },
            )
        };
        assert_eq!(s(&all).phase.as_deref(), Some(phase::RUNNING));
        assert_eq!(s(&seven).phase.as_deref(), Some(phase::DEGRADED));
        assert_eq!(cond(&s(&seven), "CoverageDegraded").status, "True");
        let lost = s(&five);
        assert_eq!(lost.phase.as_deref(), Some(phase::COVERAGE_LOST));
        assert_eq!(cond(&lost, "CoverageLost").status, "True");
        assert_eq!(cond(&lost, "Ready").status, "False");
        assert_eq!(lost.observed_generation, Some(3));
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let layout = anyk_core::plan(24, 3, 8, 6).unwrap();
        let all: BTreeSet<u32> = (0..8).collect();
        let seven: BTreeSet<u32> = (1..8).collect();
        let first = running(
            &job(),
            &TrainingJobStatus::default(),
            &Facts {
                layout: &layout,
                live: &all,
                server: ServerState::NotAsked,
                now: at(0),
            },
        );
        let same = running(
            &job(),
            &first,
            &Facts {
                layout: &layout,
                live: &all,
                server: ServerState::NotAsked,
                now: at(10),
            },
        );
        assert_eq!(cond(&same, "Ready").last_transition_time, Time(at(0)));
        let changed = running(
            &job(),
            &same,
            &Facts {
                layout: &layout,
                live: &seven,
                server: ServerState::NotAsked,
                now: at(20),
            },
        );
        assert_eq!(cond(&changed, "Ready").last_transition_time, Time(at(20)));
        assert_eq!(cond(&changed, "CoverageLost").last_transition_time, Time(at(0)));
    }

    #[test]
    fn the_final_step_makes_the_job_succeed_once() {
        let layout = anyk_core::plan(24, 3, 8, 6).unwrap();
        let all: BTreeSet<u32> = (0..8).collect();
        let progress = Progress {
            step: 300,
            total_steps: 300,
            ..Progress::default()
        };
        let done = running(
            &job(),
            &TrainingJobStatus::default(),
            &Facts {
                layout: &layout,
                live: &all,
                server: ServerState::Reachable {
                    progress,
                    finished: true,
                },
                now: at(5),
            },
        );
        assert_eq!(done.phase.as_deref(), Some(phase::SUCCEEDED));
        assert_eq!(done.completion_time, Some(at(5).to_string()));
        assert_eq!(cond(&done, "Succeeded").status, "True");
        // Later passes keep the completion time and the phase even when the server is gone.
        let later = running(
            &job(),
            &done,
            &Facts {
                layout: &layout,
                live: &BTreeSet::new(),
                server: ServerState::Unreachable("gone".into()),
                now: at(50),
            },
        );
        assert_eq!(later.phase.as_deref(), Some(phase::SUCCEEDED));
        assert_eq!(later.completion_time, Some(at(5).to_string()));
        assert_eq!(later.progress.unwrap().step, 300);
    }

    #[test]
    fn suspension_keeps_layout_and_progress() {
        let layout = anyk_core::plan(24, 3, 8, 6).unwrap();
        let all: BTreeSet<u32> = (0..8).collect();
        let progress = Progress {
            step: 40,
            total_steps: 300,
            ..Progress::default()
        };
        let running = running(
            &job(),
            &TrainingJobStatus::default(),
            &Facts {
                layout: &layout,
                live: &all,
                server: ServerState::Reachable {
                    progress,
                    finished: false,
                },
                now: at(0),
            },
        );
        let s = suspended(&job(), &running, at(9));
        assert_eq!(s.phase.as_deref(), Some(phase::SUSPENDED));
        assert_eq!(s.layout, running.layout);
        assert_eq!(s.progress.as_ref().unwrap().step, 40);
        assert_eq!(cond(&s, "Suspended").status, "True");
        assert_eq!(s.workers_ready.as_deref(), Some("0/8"));
    }
}
