//! Staging and export, decided without a cluster: no training pod before the data is there, bad
//! data fails the job naming the problem, and a succeeded job gets its model files once.

use anyk_core::heal::WorkerState::*;
use anyk_testkit::training_job;
use serde_json::json;

use super::decide::{Next, Then, decide};
use super::decide_tests::seen;
use super::helpers::{DATA_STAGED, HelperState, MODEL_EXPORTED};
use crate::children::Helper;
use crate::crd::{TrainingJob, TrainingJobStatus};
use crate::status::phase;

fn staged_job() -> TrainingJob {
    let mut job: TrainingJob = training_job("digits")
        .namespace("ml")
        .spec(json!({
            "dataset": { "source": { "uri": "s3://data/digits.csv", "credentialsSecret": "s3" } }
        }))
        .build();
    job.spec.training.checkpoint_claim = Some("ckpt".into());
    job
}

fn condition<'a>(
    status: &'a TrainingJobStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[test]
fn a_job_with_a_source_stages_its_data_before_any_pod() {
    let job = staged_job();
    let first = decide(&job, &seen(&TrainingJobStatus::default(), [Missing; 8], Missing));
    assert_eq!(first.actions.create_helpers, vec![Helper::Stage]);
    assert!(first.actions.create_pods.is_empty() && !first.actions.apply_children);
    let status = first.actions.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some(phase::STAGING));
    let staged = condition(&status, DATA_STAGED).unwrap();
    assert_eq!(
        (staged.status.as_str(), staged.reason.as_str()),
        ("False", "Staging")
    );
    assert!(
        matches!(first.then, Then::Done(Next::After(_))),
        "looks again while the Job runs"
    );

    let mut running = seen(&status, [Missing; 8], Missing);
    running.helpers.stage = Some(HelperState::Running {
        failed: 1,
        progress: Some("anyk data split: writing block 17 of 24".into()),
    });
    let second = decide(&job, &running);
    assert!(second.actions.create_helpers.is_empty() && second.actions.create_pods.is_empty());
    let message = &condition(second.actions.status.as_ref().unwrap(), DATA_STAGED)
        .unwrap()
        .message;
    assert!(
        message.contains("attempt 2: anyk data split: writing block 17 of 24"),
        "{message}"
    );
}

#[test]
fn staged_data_lets_the_pods_be_created_in_the_same_pass() {
    let job = staged_job();
    let mut done = seen(&TrainingJobStatus::default(), [Missing; 8], Missing);
    done.helpers.stage = Some(HelperState::Succeeded {
        message: String::new(),
    });
    let decision = decide(&job, &done);
    assert_eq!(decision.actions.create_pods.len(), 9, "the server and 8 workers");
    let status = decision.actions.status.unwrap();
    assert_eq!(condition(&status, DATA_STAGED).unwrap().status, "True");
    assert_ne!(status.phase.as_deref(), Some(phase::STAGING));
    // Once staged, the Job is never looked at or made again.
    let mut later = seen(&status, [Ready; 8], Ready);
    later.helpers.stage = None;
    let next = decide(&job, &later);
    assert!(next.actions.create_helpers.is_empty());
    assert_eq!(super::helpers::to_read(&job, &status), (false, false));
}

#[test]
fn bad_data_fails_the_job_with_the_splits_words() {
    let job = staged_job();
    let mut failed = seen(&TrainingJobStatus::default(), [Missing; 8], Missing);
    let said = "error: digits.csv, line 7, column \"p3\": feature inf is not a finite f32";
    failed.helpers.stage = Some(HelperState::Failed { message: said.into() });
    let decision = decide(&job, &failed);
    let status = decision.actions.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some(phase::FAILED));
    let staged = condition(&status, DATA_STAGED).unwrap();
    assert_eq!(staged.reason, "StagingFailed");
    assert!(
        staged.message.contains("line 7") && staged.message.contains("p3"),
        "{}",
        staged.message
    );
    assert!(decision.actions.create_pods.is_empty());
    assert!(
        decision
            .actions
            .notes
            .iter()
            .any(|n| n.reason == "StagingFailed" && n.message.contains("line 7"))
    );
}

#[test]
fn staging_counts_toward_the_jobs_deadline() {
    let mut job = staged_job();
    job.spec.active_deadline_seconds = Some(60);
    let status = TrainingJobStatus {
        start_time: Some(super::decide_tests::at(0).to_string()),
        ..TrainingJobStatus::default()
    };
    let mut stuck = seen(&status, [Missing; 8], Missing);
    stuck.helpers.stage = Some(HelperState::Running {
        failed: 0,
        progress: None,
    });
    let decision = decide(&job, &stuck);
    let status = decision.actions.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some(phase::FAILED));
    let staged = condition(&status, DATA_STAGED).unwrap();
    assert!(
        staged.message.contains("activeDeadlineSeconds 60"),
        "{}",
        staged.message
    );
}

#[test]
fn a_foreign_job_of_that_name_is_not_taken_over() {
    let job = staged_job();
    let mut foreign = seen(&TrainingJobStatus::default(), [Missing; 8], Missing);
    foreign.helpers.stage = Some(HelperState::Foreign);
    let decision = decide(&job, &foreign);
    assert!(decision.actions.create_helpers.is_empty() && decision.actions.create_pods.is_empty());
    assert!(
        decision
            .actions
            .notes
            .iter()
            .any(|n| n.reason == "OwnershipConflict")
    );
}

fn succeeded() -> TrainingJobStatus {
    TrainingJobStatus {
        phase: Some(phase::SUCCEEDED.into()),
        progress: Some(crate::crd::Progress {
            step: 300,
            total_steps: 300,
            ..Default::default()
        }),
        ..TrainingJobStatus::default()
    }
}

#[test]
fn a_succeeded_job_exports_its_model_once_and_names_the_files() {
    let job = staged_job();
    let status = succeeded();
    assert_eq!(super::helpers::to_read(&job, &status), (false, true));
    // The server holds the checkpoint claim and writes a last checkpoint as it stops: first it
    // goes, gracefully; the export comes once it is gone.
    let mut first = seen(&status, [Exited; 8], Exited);
    first.helpers.export = Some(HelperState::Absent);
    let decision = decide(&job, &first);
    assert!(decision.actions.create_helpers.is_empty(), "{decision:#?}");
    let server = crate::children::server_name(&job);
    assert_eq!(
        decision.actions.delete_pods,
        vec![(server, super::decide::Deletion::Graceful)]
    );
    let stopping = decision.actions.status.unwrap();
    let mut first = seen(&stopping, [Exited; 8], Missing);
    first.helpers.export = Some(HelperState::Absent);
    let decision = decide(&job, &first);
    assert_eq!(
        decision.actions.create_helpers,
        vec![Helper::Export],
        "{decision:#?}"
    );
    assert!(decision.actions.delete_pods.is_empty());
    let exporting = decision.actions.status.unwrap();
    assert_eq!(condition(&exporting, MODEL_EXPORTED).unwrap().reason, "Exporting");

    let mut done = seen(&exporting, [Exited; 8], Exited);
    done.helpers.export = Some(HelperState::Succeeded {
        message: r#"{"accuracy":0.97,"loss":0.1,"samples":359,"step":300,"feature_scale":16.0}"#.into(),
    });
    let decision = decide(&job, &done);
    let status = decision.actions.status.unwrap();
    let model = status.model.clone().unwrap();
    assert_eq!(model.feature_scale, Some(16.0));
    assert_eq!(
        (model.claim.as_str(), model.step, model.test_accuracy),
        ("ckpt", 300, Some(0.97))
    );
    assert!(
        model.safetensors.ends_with("/model/model.safetensors"),
        "{}",
        model.safetensors
    );
    let script = model.torch_script.clone().unwrap();
    assert!(
        script.ends_with("/model/model.pt"),
        "the built-in mlp, traced: {script}"
    );
    assert_eq!(condition(&status, MODEL_EXPORTED).unwrap().status, "True");
    assert_eq!(
        super::helpers::to_read(&job, &status),
        (false, false),
        "never again"
    );
}

#[test]
fn a_job_without_a_checkpoint_claim_exports_nothing() {
    let job = training_job("digits").namespace("ml").build();
    let status = succeeded();
    assert_eq!(super::helpers::to_read(&job, &status), (false, false));
    let decision = decide(&job, &seen(&status, [Exited; 8], Exited));
    assert!(decision.actions.create_helpers.is_empty() && decision.actions.status.is_none());
}
