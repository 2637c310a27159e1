//! What the operator does with what it did not make: policy, foreign objects, and the failure
//! policy that stops a job from looping.

use anyk_core::heal::WorkerState::*;

use super::decide::{Deletion, Next, Then, decide};
use super::decide_tests::{at, job, reasons, running_status, seen};
use crate::crd::{PodReplacement, TrainingJobStatus};
use crate::status::phase;

#[test]
fn a_job_the_pod_policy_refuses_fails_once_and_gets_no_pods() {
    let mut s = seen(&TrainingJobStatus::default(), [Missing; 8], Missing);
    s.policy_violation = Some("dataset.hostPath is not allowed".into());
    let d = decide(&job(), &s);
    assert_eq!(reasons(&d.actions), ["PolicyViolation"]);
    assert!(d.actions.create_pods.is_empty() && !d.actions.apply_children);
    let failed = d.actions.status.unwrap();
    assert_eq!(failed.phase.as_deref(), Some(phase::FAILED));
    let again = seen(&failed, [Missing; 8], Missing);
    let mut again_refused = again.clone();
    again_refused.policy_violation = s.policy_violation.clone();
    assert!(
        decide(&job(), &again_refused).actions.notes.is_empty(),
        "one Event"
    );
}

#[test]
fn foreign_objects_are_left_alone_and_reported() {
    let mut s = seen(&running_status(), [Ready; 8], Ready);
    s.observed.existing.remove("digits-worker-2");
    s.observed.workers[2] = Missing;
    s.foreign.insert("Pod digits-worker-2".into());
    s.foreign.insert("Service digits-server".into());
    let d = decide(&job(), &s);
    assert!(
        !d.actions.create_pods.contains("digits-worker-2"),
        "never taken over"
    );
    assert!(d.actions.foreign.contains("Service digits-server"));
    assert!(reasons(&d.actions).contains(&"OwnershipConflict"));
    let status = d.actions.status.unwrap();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "OwnershipConflict")
        .unwrap();
    assert_eq!(condition.status, "True");
    assert!(
        condition.message.contains("Service digits-server"),
        "{}",
        condition.message
    );
}

#[test]
fn too_many_replacements_fail_the_job_and_its_pods_go() {
    let mut status = running_status();
    status.replacements = (0..6)
        .map(|i| PodReplacement {
            pod: format!("digits-worker-{}", i % 2),
            time: at(40 + i).to_string(),
        })
        .collect();
    let mut s = seen(&status, [Ready; 8], Ready);
    s.observed.workers[4] = Failed;
    s.observed
        .errors
        .insert("digits-worker-4".into(), "failed to load model.pt".into());
    let d = decide(&job(), &s);
    assert_eq!(
        reasons(&d.actions)[..2],
        ["BackoffLimitExceeded", "LayoutRepaired"]
    );
    assert!(reasons(&d.actions).contains(&"PodFailed"));
    let failed = d.actions.status.clone().unwrap();
    assert_eq!(failed.phase.as_deref(), Some(phase::FAILED));
    assert_eq!(d.actions.delete_pods.len(), 9, "every pod goes");
    assert!(
        d.actions
            .delete_pods
            .iter()
            .all(|(_, how)| *how == Deletion::Graceful)
    );
    assert!(d.actions.create_pods.is_empty());
    // Later passes keep it failed and heal nothing.
    let later = decide(&job(), &seen(&failed, [Missing; 8], Missing));
    assert!(later.actions.create_pods.is_empty() && later.actions.notes.is_empty());
    assert_eq!(later.then, Then::Done(Next::AwaitChange));
}

#[test]
fn a_job_past_its_deadline_fails() {
    let mut job = job();
    job.spec.active_deadline_seconds = Some(60);
    let mut status = running_status();
    status.start_time = Some(at(0).to_string());
    let d = decide(&job, &seen(&status, [Ready; 8], Ready));
    assert_eq!(reasons(&d.actions)[0], "DeadlineExceeded");
    job.spec.active_deadline_seconds = Some(600);
    let d = decide(&job, &seen(&status, [Ready; 8], Ready));
    assert!(d.actions.notes.is_empty());
    assert!(matches!(d.then, Then::AskServer(_)));
}
