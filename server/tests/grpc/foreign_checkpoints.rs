//! A checkpoint belongs to the job that wrote it: a server with other settings or another job
//! id refuses to resume it, at start, saying what differs.

use std::process::Command;

use anyk_core::checkpoint::Checkpoint;
use anyk_core::job::JobIdentity;
use anyk_core::optimizer::Optimizer;
use anyk_server::{CheckpointStore, ServeError, Settings, load_trainer, report_fatal};

use crate::{BLOCKS, PARAMS, settings};

/// A checkpoint at step 3 written by a job with `settings`, in a new directory.
fn saved_by(settings: &Settings) -> (tempfile::TempDir, CheckpointStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path());
    let job = JobIdentity {
        config: settings.job_config(),
        units: vec![(0, BLOCKS)],
        params: PARAMS as u64,
    };
    store.save(&checkpoint(Some(job))).unwrap();
    (dir, store)
}

fn checkpoint(job: Option<JobIdentity>) -> Checkpoint {
    Checkpoint {
        step: 3,
        layout: None,
        optimizer: Optimizer::new(settings().optimizer, PARAMS),
        params: vec![0.5; PARAMS],
        loss: 1.0,
        job,
        history: Default::default(),
    }
}

fn refusal(saved: &Settings, ours: Settings) -> String {
    let (_dir, store) = saved_by(saved);
    match load_trainer(ours, Some(&store)) {
        Err(err @ ServeError::ForeignCheckpoint { .. }) => anyk_server::error::chain(&err),
        Err(err) => panic!("refused for another reason: {err}"),
        Ok(_) => panic!("resumed another job's checkpoint"),
    }
}

#[test]
fn the_same_job_resumes() {
    let ours = Settings {
        job_id: Some("uid-1".into()),
        ..settings()
    };
    let (_dir, store) = saved_by(&ours);
    let trainer = load_trainer(ours, Some(&store)).unwrap();
    assert_eq!(trainer.step(), 3);
    // Total steps and the checkpoint cadence do not change a step's result: a job may extend.
    let longer = Settings {
        total_steps: 1000,
        checkpoint_every: 10,
        ..trainer.settings().clone()
    };
    assert_eq!(load_trainer(longer, Some(&store)).unwrap().step(), 3);
}

#[test]
fn another_seed_or_job_id_is_refused_with_what_differs() {
    let saved = Settings {
        job_id: Some("uid-1".into()),
        ..settings()
    };
    let text = refusal(
        &saved,
        Settings {
            seed: 8,
            ..saved.clone()
        },
    );
    assert!(text.starts_with("failed to resume from checkpoint "), "{text}");
    assert!(
        text.ends_with("it was written by another job (seed 7; this server has seed 8)"),
        "{text}"
    );
    let other = Settings {
        job_id: Some("uid-2".into()),
        ..saved.clone()
    };
    assert!(
        refusal(&saved, other).ends_with("(job id \"uid-1\"; this server has job id \"uid-2\")"),
        "equal settings, another job"
    );
    let unnamed = Settings {
        job_id: None,
        ..saved.clone()
    };
    assert!(refusal(&saved, unnamed).contains("this server has no job id"));
    let batch = Settings {
        batch_size: 5,
        ..saved.clone()
    };
    assert!(refusal(&saved, batch).contains("batch 4; this server has batch 5"));
}

#[test]
fn a_checkpoint_from_before_job_digests_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path());
    store.save(&checkpoint(None)).unwrap();
    let ours = Settings {
        job_id: Some("uid-1".into()),
        ..settings()
    };
    assert_eq!(load_trainer(ours, Some(&store)).unwrap().step(), 3);
}

#[test]
fn the_server_process_exits_at_start_with_the_reason() {
    let (dir, _store) = saved_by(&Settings {
        job_id: Some("uid-1".into()),
        ..settings()
    });
    let out = Command::new(env!("CARGO_BIN_EXE_anyk-server"))
        .args(["--listen", "127.0.0.1:0", "--blocks", &BLOCKS.to_string()])
        .args([
            "--seed",
            "7",
            "--batch",
            "4",
            "--optimizer",
            "sgd",
            "--lr",
            "1",
            "--momentum",
            "0",
        ])
        .args([
            "--job-id",
            "uid-2",
            "--checkpoint-dir",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "it never listened");
    assert!(
        stderr.contains("anyk-server: failed to resume from checkpoint")
            && stderr.contains("(job id \"uid-1\"; this server has job id \"uid-2\")"),
        "{stderr}"
    );
}

#[test]
fn the_reason_goes_to_the_termination_log_only_where_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("termination-log");
    let err = std::io::Error::other("boom");
    assert_eq!(report_fatal(&err, &log), "boom");
    assert!(!log.exists(), "not created where Kubernetes made none");
    std::fs::write(&log, "").unwrap();
    report_fatal(&err, &log);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "boom");
}
