use anyk_testkit::training_job;
use serde_json::json;

use super::*;

fn job() -> TrainingJob {
    training_job("j")
        .namespace("ns")
        .metadata(json!({ "generation": 3 }))
        .build()
}

fn cond<'a>(s: &'a TrainingJobStatus, t: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// The status after a pass at `now` over the planned layout with these workers ready.
fn pass(
    previous: &TrainingJobStatus,
    ready: std::ops::Range<u32>,
    server: ServerState,
    now: i64,
) -> TrainingJobStatus {
    let layout = anyk_core::plan(24, 3, 8, 6).unwrap();
    let ready: BTreeSet<u32> = ready.collect();
    let facts = Facts {
        layout: &layout,
        ready: &ready,
        server,
        now: at(now),
    };
    running(&job(), previous, &facts)
}

/// A server that answered: at `step` of 300.
pub(crate) fn server_at(step: u64, finished: bool) -> ServerState {
    let progress = Progress {
        step,
        total_steps: 300,
        ..Progress::default()
    };
    ServerState::Reachable { progress, finished }
}

#[test]
fn phases_follow_coverage() {
    let none = TrainingJobStatus::default();
    let s = |ready| pass(&none, ready, ServerState::NotAsked, 0);
    assert_eq!(s(0..8).phase.as_deref(), Some(phase::RUNNING));
    assert_eq!(s(1..8).phase.as_deref(), Some(phase::DEGRADED));
    assert_eq!(cond(&s(1..8), "CoverageDegraded").status, "True");
    let lost = s(3..8);
    assert_eq!(lost.phase.as_deref(), Some(phase::COVERAGE_LOST));
    assert_eq!(cond(&lost, "CoverageLost").status, "True");
    assert_eq!(cond(&lost, "Ready").status, "False");
    assert_eq!(lost.observed_generation, Some(3));
}

#[test]
fn transition_times_move_only_on_change() {
    let first = pass(&TrainingJobStatus::default(), 0..8, ServerState::NotAsked, 0);
    let same = pass(&first, 0..8, ServerState::NotAsked, 10);
    assert_eq!(cond(&same, "Ready").last_transition_time, Time(at(0)));
    let changed = pass(&same, 1..8, ServerState::NotAsked, 20);
    assert_eq!(cond(&changed, "Ready").last_transition_time, Time(at(20)));
    assert_eq!(cond(&changed, "CoverageLost").last_transition_time, Time(at(0)));
}

#[test]
fn the_final_step_makes_the_job_succeed_once() {
    let done = pass(&TrainingJobStatus::default(), 0..8, server_at(300, true), 5);
    assert_eq!(done.phase.as_deref(), Some(phase::SUCCEEDED));
    assert_eq!(done.completion_time, Some(at(5).to_string()));
    assert_eq!(cond(&done, "Succeeded").status, "True");
    // Later passes keep the completion time and the phase even when the server is gone.
    let later = pass(&done, 0..0, ServerState::Unreachable("gone".into()), 50);
    assert_eq!(later.phase.as_deref(), Some(phase::SUCCEEDED));
    assert_eq!(later.completion_time, Some(at(5).to_string()));
    assert_eq!(later.progress.unwrap().step, 300);
}

#[test]
fn suspension_keeps_layout_and_progress() {
    let running = pass(&TrainingJobStatus::default(), 0..8, server_at(40, false), 0);
    let s = suspended(&job(), &running, at(9));
    assert_eq!(s.phase.as_deref(), Some(phase::SUSPENDED));
    assert_eq!(s.layout, running.layout);
    assert_eq!(s.progress.as_ref().unwrap().step, 40);
    assert_eq!(cond(&s, "Suspended").status, "True");
    assert_eq!(s.workers_ready.as_deref(), Some("0/8"));
}
