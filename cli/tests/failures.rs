//! `anyk local` gives up on a job that cannot run, and never deletes what it did not create.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{anyk, stderr, stdout};

fn logs(workdir: &Path) -> Vec<String> {
    std::fs::read_dir(workdir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("worker-"))
        .collect()
}

/// Every worker fails to load its model: replaced after a backoff, until the limit fails the
/// job with the reason and the worker's own error, every process stopped.
#[test]
fn a_worker_that_can_never_start_fails_the_job_at_the_backoff_limit() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let started = Instant::now();
    let out = anyk(&[
        "local",
        "--model",
        "/nonexistent/model.pt",
        "--no-faults",
        "--workdir",
        work.to_str().unwrap(),
    ]);
    let elapsed = started.elapsed();
    let err = stderr(&out);
    assert!(!out.status.success(), "{}\n{err}", stdout(&out));
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    assert!(err.contains("failed to run the job to its end"), "{err}");
    assert!(
        err.contains("backoff limit reached") && err.contains("--backoff-limit 6"),
        "{err}"
    );
    assert!(err.contains("/nonexistent/model.pt"), "the worker's error: {err}");
    let logs = logs(&work);
    assert!(logs.len() <= 6 + 8, "{logs:?}");
}

#[test]
fn a_job_past_its_deadline_fails() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = anyk(&[
        "local",
        "--deadline-seconds",
        "0",
        "--no-faults",
        "--workdir",
        work.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("deadline exceeded: the job ran longer than --deadline-seconds 0"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_workdir_it_did_not_make_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir(work.join("logs")).unwrap();
    std::fs::write(work.join("logs/precious.log"), "mine").unwrap();
    std::fs::write(work.join("notes.txt"), "mine").unwrap();
    let out = anyk(&["local", "--steps", "5", "--workdir", work.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not empty and was not made by `anyk local`"),
        "{}",
        stderr(&out)
    );
    // Not even --force deletes what another program made.
    let out = anyk(&["local", "--force", "--workdir", work.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read_to_string(work.join("logs/precious.log")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_to_string(work.join("notes.txt")).unwrap(), "mine");
    assert_eq!(
        std::fs::read_dir(work).unwrap().count(),
        2,
        "nothing added either"
    );
}

#[test]
fn an_earlier_runs_workdir_is_reused_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let work = work.to_str().unwrap();
    let run = ["local", "--steps", "5", "--no-faults", "--workdir", work];
    let first = anyk(&run);
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::write(dir.path().join("work/summary.json"), "kept").unwrap();
    let again = anyk(&run);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("pass --force"), "{}", stderr(&again));
    let forced = anyk(&[&run[..], &["--force"]].concat());
    assert!(forced.status.success(), "{}", stderr(&forced));
    let summary = dir.path().join("work/summary.json");
    assert_eq!(std::fs::read_to_string(summary).unwrap(), "kept");
}

/// A learning rate past f32's range (1e39 parses to infinity) makes the first update
/// non-finite: the server does not apply it, and the run ends at once naming the step, instead
/// of replacing workers until the backoff limit.
#[test]
fn a_non_finite_step_fails_the_run_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let started = Instant::now();
    let out = anyk(&[
        "local",
        "--lr",
        "1e39",
        "--steps",
        "5",
        "--no-faults",
        "--workdir",
        work.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{}\n{err}", stdout(&out));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("training failed at step 0: the update would make parameter 0 non-finite"),
        "{err}"
    );
    assert!(!err.contains("backoff limit"), "{err}");
}
