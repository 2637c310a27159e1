//! The decide step without a cluster: each case the reconcile handles, from what a pass saw to
//! what it does.

use std::collections::BTreeSet;
use std::time::Duration;

use anyk_core::heal::WorkerState::{self, *};
use anyk_testkit::training_job;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::decide::{Actions, Decision, Deletion, Next, Seen, Then, Training, after_server, decide};
use crate::crd::{TrainingJob, TrainingJobStatus};
use crate::observe::Observed;
use crate::status::tests::server_at;
use crate::status::{ServerState, phase};

pub(super) fn job() -> TrainingJob {
    training_job("digits").namespace("ml").build()
}

pub(super) fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// What a pass sees: these pod states (Missing: no pod), and the status left by earlier passes.
pub(super) fn seen(status: &TrainingJobStatus, workers: [WorkerState; 8], server: WorkerState) -> Seen {
    let job = job();
    let mut existing: BTreeSet<String> = (0..8u32)
        .filter(|&w| workers[w as usize] != Missing)
        .map(|w| crate::children::worker_name(&job, w))
        .collect();
    if server != Missing {
        existing.insert(crate::children::server_name(&job));
    }
    Seen {
        status: status.clone(),
        observed: Observed {
            workers: workers.to_vec(),
            server,
            recheck: None,
            existing,
            terminating: BTreeSet::new(),
            errors: Default::default(),
        },
        external_server: None,
        policy_violation: None,
        foreign: BTreeSet::new(),
        current: BTreeSet::new(),
        resource_version: None,
        helpers: Default::default(),
        now: at(100),
    }
}

/// The status a healthy running job has after its pods were created.
pub(super) fn running_status() -> TrainingJobStatus {
    let first = decide(
        &job(),
        &seen(&TrainingJobStatus::default(), [Missing; 8], Missing),
    );
    let healthy = decide(&job(), &seen(&first.actions.status.unwrap(), [Ready; 8], Ready));
    healthy.actions.status.unwrap()
}

pub(super) fn training(decision: &Decision) -> &Training {
    match &decision.then {
        Then::AskServer(training) => training.as_ref(),
        Then::Done(next) => panic!("expected a pass that asks the server, got {next:?}"),
    }
}

pub(super) fn reasons(actions: &Actions) -> Vec<&'static str> {
    actions.notes.iter().map(|n| n.reason).collect()
}

fn with_one(state: WorkerState, worker: usize) -> [WorkerState; 8] {
    let mut workers = [Ready; 8];
    workers[worker] = state;
    workers
}

#[test]
fn a_new_job_gets_every_pod_and_its_first_layout() {
    let d = decide(
        &job(),
        &seen(&TrainingJobStatus::default(), [Missing; 8], Missing),
    );
    assert_eq!(d.actions.create_pods.len(), 9, "the server and eight workers");
    assert!(d.actions.apply_children && d.actions.delete_pods.is_empty());
    assert!(
        d.actions.notes.is_empty(),
        "missing pods of a new job are not losses"
    );
    let status = d.actions.status.as_ref().unwrap();
    assert_eq!(status.layout.as_ref().unwrap().epoch, 1);
    assert_eq!(status.phase.as_deref(), Some(phase::PENDING));
    let t = training(&d);
    assert!(t.hurry && !t.ask_server, "no server pod to ask yet");
}

#[test]
fn a_restarted_operator_creates_nothing_and_keeps_the_epoch() {
    let status = running_status();
    let d = decide(&job(), &seen(&status, [Ready; 8], Ready));
    assert!(d.actions.create_pods.is_empty(), "no duplicates");
    assert!(d.actions.delete_pods.is_empty() && d.actions.notes.is_empty());
    assert_eq!(d.actions.status.as_ref().unwrap().layout, status.layout);
    let t = training(&d);
    assert!(t.ask_server && !t.hurry);
}

#[test]
fn a_lost_worker_is_repaired_replaced_and_recorded_before_acting() {
    for lost_as in [Failed, Missing] {
        let d = decide(&job(), &seen(&running_status(), with_one(lost_as, 3), Ready));
        let status = d.actions.status.as_ref().unwrap();
        let repair = status.last_repair.as_ref().unwrap();
        assert_eq!(
            (repair.epoch, repair.lost_workers.clone(), repair.moved_blocks),
            (2, vec![3], 9)
        );
        assert_eq!(repair.time, at(100).to_string());
        assert_eq!((status.workers.failed, status.workers.replaced), (1, 1));
        assert_eq!(reasons(&d.actions), ["LayoutRepaired"]);
        assert!(d.actions.notes[0].warning);
        assert_eq!(
            d.actions.delete_pods,
            [("digits-worker-3".to_string(), Deletion::Now)]
        );
        assert_eq!(
            d.actions.create_pods,
            BTreeSet::from(["digits-worker-3".to_string()])
        );
        assert_eq!(d.actions.repaired, 1);
        assert!(training(&d).hurry);
    }
}

#[test]
fn a_ready_replacement_is_rebalanced_in() {
    let repaired = decide(&job(), &seen(&running_status(), with_one(Failed, 3), Ready));
    let repaired = repaired.actions.status.unwrap();
    // The replacement starts: nothing changes until it is ready.
    let starting = decide(&job(), &seen(&repaired, with_one(Starting, 3), Ready));
    assert_eq!(starting.actions.status.as_ref().unwrap().layout, repaired.layout);
    assert!(starting.actions.notes.is_empty() && starting.actions.delete_pods.is_empty());
    let ready = decide(&job(), &seen(&repaired, [Ready; 8], Ready));
    assert_eq!(reasons(&ready.actions), ["WorkersRejoined"]);
    let layout = ready.actions.status.unwrap().layout.unwrap();
    assert_eq!(layout.epoch, 3);
    assert!(layout.members.contains(&3));
}

#[test]
fn a_replacement_that_fails_before_joining_is_replaced_without_a_second_loss() {
    let repaired = decide(&job(), &seen(&running_status(), with_one(Failed, 3), Ready));
    let repaired = repaired.actions.status.unwrap();
    let d = decide(&job(), &seen(&repaired, with_one(Failed, 3), Ready));
    assert_eq!(
        d.actions.delete_pods,
        [("digits-worker-3".to_string(), Deletion::Now)]
    );
    // Its second replacement in the window backs off (1 s) before the pod is created again.
    assert!(d.actions.create_pods.is_empty());
    assert_eq!(training(&d).recheck, Some(Duration::from_secs(1)));
    let status = d.actions.status.unwrap();
    assert_eq!(status.workers.failed, 1, "not counted again");
    assert_eq!(status.layout, repaired.layout);
    assert!(d.actions.notes.is_empty() && d.actions.repaired == 0);
}

#[test]
fn a_failed_server_is_replaced_and_counted() {
    let claim = job();
    let mut with_claim = claim.clone();
    with_claim.spec.training.checkpoint_claim = Some("ckpt".into());
    for (job, resumes) in [(claim, false), (with_claim, true)] {
        let d = decide(&job, &seen(&running_status(), [Ready; 8], Failed));
        assert_eq!(
            d.actions.delete_pods,
            [("digits-server".to_string(), Deletion::Now)]
        );
        assert_eq!(
            d.actions.create_pods,
            BTreeSet::from(["digits-server".to_string()])
        );
        assert_eq!(reasons(&d.actions), ["ServerReplaced"]);
        assert_eq!(d.actions.notes[0].message.contains("resumes"), resumes);
        assert!(d.actions.server_replaced);
        assert_eq!(d.actions.status.as_ref().unwrap().server_restarts, 1);
        assert!(!training(&d).ask_server, "the failed server is not asked");
    }
}

#[test]
fn losses_beyond_tolerance_keep_the_layout_and_say_coverage_lost() {
    let status = running_status();
    let mut workers = [Ready; 8];
    workers[..3].copy_from_slice(&[Failed, Missing, Failed]);
    let d = decide(&job(), &seen(&status, workers, Ready));
    assert_eq!(reasons(&d.actions), ["CoverageLost"]);
    assert_eq!(d.actions.repaired, 0);
    let after = d.actions.status.unwrap();
    assert_eq!(after.layout, status.layout, "kept for the replacements");
    assert_eq!(after.phase.as_deref(), Some(phase::COVERAGE_LOST));
    assert!(after.last_repair.is_none());
    assert_eq!(d.actions.create_pods.len(), 3);
}

#[test]
fn workers_that_exited_after_training_are_not_lost() {
    let d = decide(&job(), &seen(&running_status(), [Exited; 8], Ready));
    assert!(d.actions.notes.is_empty() && d.actions.delete_pods.is_empty());
}

#[test]
fn suspend_deletes_the_pods_gracefully_once_and_keeps_the_layout() {
    let mut job = job();
    job.spec.suspend = true;
    let status = running_status();
    let mut seen_now = seen(&status, [Ready; 8], Ready);
    seen_now.observed.terminating.insert("digits-worker-0".into());
    let d = decide(&job, &seen_now);
    assert_eq!(d.actions.delete_pods.len(), 8, "all but the one already going");
    assert!(
        d.actions
            .delete_pods
            .iter()
            .all(|(_, how)| *how == Deletion::Graceful)
    );
    assert_eq!(reasons(&d.actions), ["Suspended"]);
    assert_eq!(d.then, Then::Done(Next::AwaitChange));
    let suspended = d.actions.status.unwrap();
    assert_eq!(suspended.phase.as_deref(), Some(phase::SUSPENDED));
    assert_eq!(suspended.layout, status.layout);
    let again = decide(&job, &seen(&suspended, [Missing; 8], Missing));
    assert!(again.actions.notes.is_empty(), "the Event is recorded once");
}

#[test]
fn a_resume_waits_for_terminating_pods_then_recreates_them_at_the_same_epoch() {
    let mut suspended_job = job();
    suspended_job.spec.suspend = true;
    let status = running_status();
    let suspended = decide(&suspended_job, &seen(&status, [Ready; 8], Ready));
    let suspended = suspended.actions.status.unwrap();
    let mut going = seen(&suspended, [Missing; 8], Missing);
    going.observed.existing.insert("digits-server".into());
    going.observed.terminating.insert("digits-server".into());
    let wait = decide(&job(), &going);
    assert_eq!(wait.actions, Actions::default());
    assert_eq!(wait.then, Then::Done(Next::After(Duration::from_secs(1))));
    let resumed = decide(&job(), &seen(&suspended, [Missing; 8], Missing));
    assert!(
        resumed.actions.notes.is_empty(),
        "pods deleted by suspend are not losses"
    );
    assert_eq!(resumed.actions.create_pods.len(), 9);
    assert_eq!(resumed.actions.status.unwrap().layout, status.layout);
}

#[test]
fn a_finished_job_is_deleted_after_its_ttl() {
    let mut status = running_status();
    status.phase = Some(phase::SUCCEEDED.into());
    status.completion_time = Some(at(40).to_string());
    status.progress = Some(crate::crd::Progress {
        step: 300,
        total_steps: 300,
        ..Default::default()
    });
    let cases = [
        (None, Next::AwaitChange, false),
        (Some(100), Next::After(Duration::from_secs(40)), false),
        (Some(60), Next::AwaitChange, true),
    ];
    for (ttl, next, deleted) in cases {
        let mut job = job();
        job.spec.ttl_seconds_after_finished = ttl;
        let d = decide(&job, &seen(&status, [Exited; 8], Exited));
        assert_eq!(d.then, Then::Done(next), "ttl {ttl:?}");
        assert_eq!(d.actions.delete_job, deleted);
        assert_eq!(
            reasons(&d.actions),
            if deleted { vec!["Expired"] } else { vec![] }
        );
        assert!(d.actions.create_pods.is_empty(), "a finished job is not healed");
    }
}

#[test]
fn an_impossible_spec_fails_once_and_waits_for_a_change() {
    let job: TrainingJob = training_job("digits").spec(json!({ "replication": 2 })).build();
    let d = decide(&job, &seen(&TrainingJobStatus::default(), [Missing; 8], Missing));
    assert_eq!(reasons(&d.actions), ["InvalidSpec"]);
    assert_eq!(d.then, Then::Done(Next::AwaitChange));
    let failed = d.actions.status.unwrap();
    assert_eq!(failed.phase.as_deref(), Some(phase::FAILED));
    assert!(d.actions.create_pods.is_empty());
    let again = decide(&job, &seen(&failed, [Missing; 8], Missing));
    assert!(again.actions.notes.is_empty());
}

#[test]
fn the_final_step_makes_the_job_succeed_and_starts_its_ttl() {
    let mut job = job();
    job.spec.ttl_seconds_after_finished = Some(30);
    let d = decide(&job, &seen(&running_status(), [Ready; 8], Ready));
    let (actions, next) = after_server(&job, training(&d), server_at(300, true), at(100));
    assert_eq!(reasons(&actions), ["Succeeded"]);
    let status = actions.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some(phase::SUCCEEDED));
    assert_eq!(status.completion_time, Some(at(100).to_string()));
    assert_eq!(next, Next::After(Duration::from_secs(30)));
}

#[test]
fn requeue_follows_urgency_progress_and_node_grace() {
    let healthy = decide(&job(), &seen(&running_status(), [Ready; 8], Ready));
    let replacing = decide(&job(), &seen(&running_status(), with_one(Failed, 2), Ready));
    let progress = server_at(0, false);
    let unreachable = ServerState::Unreachable("no route".into());
    let after = |d: &Decision, server: ServerState| after_server(&job(), training(d), server, at(100)).1;
    assert_eq!(
        after(&replacing, progress.clone()),
        Next::After(Duration::from_secs(2))
    );
    assert_eq!(
        after(&healthy, progress.clone()),
        Next::After(Duration::from_secs(5))
    );
    assert_eq!(
        after(&healthy, unreachable.clone()),
        Next::After(Duration::from_secs(10))
    );
    let mut grace = training(&healthy).clone();
    grace.recheck = Some(Duration::from_millis(700));
    let next = after_server(&job(), &grace, unreachable, at(100)).1;
    assert_eq!(
        next,
        Next::After(Duration::from_millis(800)),
        "just after the grace runs out"
    );
}

#[test]
fn progress_is_written_only_when_it_changed() {
    let d = decide(&job(), &seen(&running_status(), [Ready; 8], Ready));
    let t = training(&d);
    let (quiet, _) = after_server(&job(), t, ServerState::NotAsked, at(100));
    assert_eq!(quiet.status, None);
    let (moved, _) = after_server(&job(), t, server_at(7, false), at(100));
    assert_eq!(moved.status.unwrap().progress.unwrap().step, 7);
}

#[test]
fn a_non_finite_step_fails_the_job_at_once_and_replaces_nothing() {
    let d = decide(&job(), &seen(&running_status(), [Ready; 8], Ready));
    let progress = crate::crd::Progress {
        step: 41,
        failure: Some(crate::crd::TrainingFailure {
            step: 41,
            reason: "the reduced gradient is not finite at index 0 (inf)".into(),
        }),
        ..Default::default()
    };
    let server = ServerState::Reachable {
        progress,
        finished: false,
    };
    let (actions, next) = after_server(&job(), training(&d), server, at(100));
    assert_eq!(next, Next::After(Duration::ZERO), "failed at the next pass");
    let reported = actions.status.unwrap();
    // A worker that failed meanwhile is not replaced: the job fails, and every pod goes.
    let failed = decide(&job(), &seen(&reported, with_one(Failed, 2), Ready));
    assert_eq!(reasons(&failed.actions), ["NonFinite"]);
    assert!(failed.actions.create_pods.is_empty());
    assert_eq!(failed.actions.delete_pods.len(), 9);
    let status = failed.actions.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some(phase::FAILED));
    let condition = status.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(condition.reason, "NonFinite");
    let said = "training failed at step 41: the reduced gradient is not finite";
    assert!(condition.message.starts_with(said), "{}", condition.message);
    let again = decide(&job(), &seen(&status, [Missing; 8], Missing));
    assert!(again.actions.notes.is_empty(), "said once");
    assert!(again.actions.create_pods.is_empty(), "failed for good");
}
