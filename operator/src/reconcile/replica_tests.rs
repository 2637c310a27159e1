//! Replica agreement through the operator: faulty workers replaced once per incarnation, and
//! disagreements in status, a condition and an Event.

use anyk_core::heal::WorkerState::*;

use super::decide::{Deletion, after_server, decide};
use super::decide_tests::{at, job, reasons, running_status, seen, training};
use crate::crd::{Progress, TrainingJobStatus, WorkerIncarnation};
use crate::status::ServerState;

fn reporting(faulty: &[(u32, u64)], disagreements: u64) -> Progress {
    Progress {
        step: 10,
        total_steps: 300,
        replica_disagreements: disagreements,
        faulty_workers: faulty
            .iter()
            .map(|&(worker, joins)| WorkerIncarnation { worker, joins })
            .collect(),
        ..Progress::default()
    }
}

fn with_progress(progress: Progress) -> TrainingJobStatus {
    TrainingJobStatus {
        progress: Some(progress),
        ..running_status()
    }
}

#[test]
fn a_faulty_worker_is_replaced_like_a_lost_one_once_per_incarnation() {
    let status = with_progress(reporting(&[(5, 1)], 4));
    let d = decide(&job(), &seen(&status, [Ready; 8], Ready));
    assert_eq!(reasons(&d.actions), ["FaultyWorkerReplaced", "LayoutRepaired"]);
    assert_eq!(
        d.actions.delete_pods,
        [("digits-worker-5".to_string(), Deletion::Now)]
    );
    let after = d.actions.status.unwrap();
    assert_eq!(after.last_repair.as_ref().unwrap().lost_workers, [5]);
    assert_eq!(after.replaced_faulty, [WorkerIncarnation { worker: 5, joins: 1 }]);
    // The same report again (the replacement has not joined yet): nothing more happens.
    let mut again = seen(&after, [Ready; 8], Ready);
    again.observed.workers[5] = Starting;
    let d = decide(&job(), &again);
    assert!(d.actions.notes.is_empty() && d.actions.delete_pods.is_empty());
    // The replacement (join 2) turns faulty too: it is replaced again.
    let mut later = d.actions.status.unwrap();
    later.progress = Some(reporting(&[(5, 2)], 9));
    let d = decide(&job(), &seen(&later, [Ready; 8], Ready));
    assert_eq!(reasons(&d.actions)[0], "FaultyWorkerReplaced");
}

#[test]
fn disagreements_raise_an_event_and_a_condition() {
    let d = decide(&job(), &seen(&running_status(), [Ready; 8], Ready));
    let server = ServerState::Reachable {
        progress: reporting(&[], 3),
        finished: false,
    };
    let (actions, _) = after_server(&job(), training(&d), server, at(100));
    assert_eq!(reasons(&actions), ["ReplicasDisagree"]);
    let status = actions.status.unwrap();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ReplicasDisagree")
        .unwrap();
    assert_eq!(condition.status, "True");
    assert!(condition.message.contains('3'), "{}", condition.message);
    // No new disagreements: no new Event.
    let d = decide(&job(), &seen(&status, [Ready; 8], Ready));
    let server = ServerState::Reachable {
        progress: reporting(&[], 3),
        finished: false,
    };
    let (quiet, _) = after_server(&job(), training(&d), server, at(101));
    assert!(quiet.notes.is_empty());
}

#[test]
fn a_corrupted_status_is_repaired_with_an_event() {
    let mut status = running_status();
    if let Some(layout) = status.layout.as_mut() {
        layout.holders[0][0] = 42;
    }
    let d = decide(&job(), &seen(&status, [Ready; 8], Ready));
    assert_eq!(reasons(&d.actions), ["InvalidStatus"]);
    let layout = d.actions.status.unwrap().layout.unwrap();
    assert_eq!(layout.epoch, 2, "fenced above the saved epoch");
    assert!(layout.holders[0].iter().all(|&w| w < 8));
    // A phase edited to Succeeded does not stop management.
    let mut edited = running_status();
    edited.phase = Some("Succeeded".into());
    let mut lost_one = seen(&edited, [Ready; 8], Ready);
    lost_one.observed.workers[2] = Failed;
    let d = decide(&job(), &lost_one);
    assert_eq!(reasons(&d.actions), ["InvalidStatus", "LayoutRepaired"]);
    assert_ne!(d.actions.status.unwrap().phase.as_deref(), Some("Succeeded"));
}

#[test]
fn with_native_numerics_faulty_reports_replace_nobody() {
    let mut native = job();
    native.spec.training.numerics = anyk_core::Numerics::Native;
    let status = with_progress(reporting(&[(5, 1)], 4));
    let d = decide(&native, &seen(&status, [Ready; 8], Ready));
    assert!(d.actions.delete_pods.is_empty() && d.actions.notes.is_empty());
}
