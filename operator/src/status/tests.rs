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
                ready: live,
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
            ready: &all,
            server: ServerState::NotAsked,
            now: at(0),
        },
    );
    let same = running(
        &job(),
        &first,
        &Facts {
            layout: &layout,
            ready: &all,
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
            ready: &seven,
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
            ready: &all,
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
            ready: &BTreeSet::new(),
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
            ready: &all,
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
