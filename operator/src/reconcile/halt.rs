//! Passes that stop or hold a job rather than train it: refused, failed, finished, suspended.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::actions::{Actions, Decision, Deletion, Next, Note, Seen, Then};
use super::notes::note;
use crate::crd::{TrainingJob, TrainingJobStatus};
use crate::status::{self, phase};

/// A job the operator will not run as it is: a spec the apiserver should have refused, or one
/// its pod policy refuses. Failed, with one Event, until the spec changes.
pub fn refuse(job: &TrainingJob, seen: &Seen, reason: &'static str, message: &str) -> Decision {
    let mut notes = Vec::new();
    if !seen
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Failed" && c.reason == reason)
    {
        notes.push(note(true, reason, "Validate", message));
    }
    Decision {
        actions: Actions {
            status: Some(status::failed(job, &seen.status, reason, message, seen.now)),
            notes,
            ..Actions::default()
        },
        then: Then::Done(Next::AwaitChange),
    }
}

/// A job that failed for good now (`reason`): its pods go, and the TTL starts.
pub fn fail(
    job: &TrainingJob,
    seen: &Seen,
    status: &TrainingJobStatus,
    reason: &'static str,
    message: &str,
    mut notes: Vec<Note>,
) -> Decision {
    let mut failed = status::failed(job, status, reason, message, seen.now);
    failed.completion_time = Some(seen.now.to_string());
    let (mut actions, next) = finished(job, &failed, seen.now);
    notes.insert(0, note(true, reason, "Fail", message));
    actions.notes = notes;
    actions.delete_pods = remaining_pods(seen);
    actions.status = Some(failed);
    Decision {
        actions,
        then: Then::Done(next),
    }
}

/// A job that failed earlier for good: pods still around go; the TTL runs.
pub fn given_up(job: &TrainingJob, seen: &Seen) -> Decision {
    let (mut actions, next) = finished(job, &seen.status, seen.now);
    actions.delete_pods = remaining_pods(seen);
    Decision {
        actions,
        then: Then::Done(next),
    }
}

fn remaining_pods(seen: &Seen) -> Vec<(String, Deletion)> {
    let observed = &seen.observed;
    observed
        .existing
        .difference(&observed.terminating)
        .map(|pod| (pod.clone(), Deletion::Graceful))
        .collect()
}

/// A finished job: nothing to heal; deleted once ttlSecondsAfterFinished has passed.
pub fn finished(job: &TrainingJob, status: &TrainingJobStatus, now: Timestamp) -> (Actions, Next) {
    let Some(ttl) = job.spec.ttl_seconds_after_finished else {
        return (Actions::default(), Next::AwaitChange);
    };
    let finished_at = status
        .completion_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or(now);
    let left = i64::from(ttl) - now.duration_since(finished_at).as_secs();
    if left > 0 {
        return (
            Actions::default(),
            Next::After(Duration::from_secs(left.unsigned_abs())),
        );
    }
    let actions = Actions {
        notes: vec![note(
            false,
            "Expired",
            "Delete",
            &format!("finished {ttl}s ago; deleting"),
        )],
        delete_job: true,
        ..Actions::default()
    };
    (actions, Next::AwaitChange)
}

/// A suspended job: its pods go (gracefully, so the server writes a final checkpoint); its status
/// (layout, progress) and checkpoint volume stay for the resume.
pub fn suspend(job: &TrainingJob, seen: &Seen) -> Decision {
    let mut notes = Vec::new();
    if seen.status.phase.as_deref() != Some(phase::SUSPENDED) {
        let message = "pods deleted; the layout and the checkpoint are kept for the resume";
        notes.push(note(false, "Suspended", "Suspend", message));
    }
    Decision {
        actions: Actions {
            status: Some(status::suspended(job, &seen.status, seen.now)),
            notes,
            delete_pods: remaining_pods(seen),
            ..Actions::default()
        },
        then: Then::Done(Next::AwaitChange),
    }
}
