//! Decide, for the job's helper Jobs (`children::Helper`): stage the data before anything else
//! runs, and export the model once the job succeeded. Pure, like the rest of decide.

use std::time::Duration;

use super::actions::{Actions, Decision, Next, Seen, Then};
use super::halt::fail;
use super::notes::note;
use crate::children::{Helper, SAFETENSORS_FILE, TORCHSCRIPT_FILE, model_path};
use crate::crd::{ExportedModel, TrainingJob, TrainingJobStatus};
use crate::status::{self, phase};

/// The condition that says the data is staged, and the one that says the model is exported.
pub const DATA_STAGED: &str = "DataStaged";
pub const MODEL_EXPORTED: &str = "ModelExported";
/// A helper Job is looked at this often while it runs (its pods carry no job label, so their
/// changes do not wake the job).
const WHILE_RUNNING: Duration = Duration::from_secs(2);

/// A helper Job as the read step found it.
#[derive(Debug, Clone, PartialEq)]
pub enum HelperState {
    Absent,
    /// Running, after `failed` failed attempts; `progress` is the last line its pod wrote.
    Running {
        failed: i32,
        progress: Option<String>,
    },
    /// Done; `message` is what its last pod said as it ended.
    Succeeded {
        message: String,
    },
    Failed {
        message: String,
    },
    /// A Job of that name that is not the job's: never taken over.
    Foreign,
}

/// What the read step found of the helpers it needed to look at (`None`: not looked at).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Helpers {
    pub stage: Option<HelperState>,
    pub export: Option<HelperState>,
}

/// Which helpers the read step must look at for this job and status.
pub fn to_read(job: &TrainingJob, status: &TrainingJobStatus) -> (bool, bool) {
    let over = matches!(status.phase.as_deref(), Some(phase::SUCCEEDED | phase::FAILED));
    let stage = job.spec.dataset.source.is_some() && !is_true(status, DATA_STAGED) && !over;
    let export = status.phase.as_deref() == Some(phase::SUCCEEDED)
        && job.spec.training.checkpoint_claim.is_some()
        && status.model.is_none()
        && !has(status, MODEL_EXPORTED);
    (stage, export)
}

/// Staging: `Err` holds the pass of a job whose data is not there yet (or cannot be); `Ok`
/// lets training go on, with the status to carry on from (the DataStaged condition set now).
pub fn stage(job: &TrainingJob, seen: &Seen) -> Result<Option<TrainingJobStatus>, Box<Decision>> {
    let Some(source) = &job.spec.dataset.source else {
        return Ok(None);
    };
    if is_true(&seen.status, DATA_STAGED) {
        return Ok(None);
    }
    let mut state = seen.helpers.stage.clone().unwrap_or(HelperState::Absent);
    let target = format!("{} into {}", source.uri, job.spec.dataset.path);
    // The job's deadline counts from its start, staging included.
    if let Some((_, message)) = super::failure::verdict(job, &seen.status, &[], seen.now) {
        state = HelperState::Failed { message };
    }
    staging_decision(job, seen, state, &target)
}

/// What the stage Job's `state` means for the pass.
fn staging_decision(
    job: &TrainingJob,
    seen: &Seen,
    state: HelperState,
    target: &str,
) -> Result<Option<TrainingJobStatus>, Box<Decision>> {
    let name = Helper::Stage.name(job);
    let with = |ok: bool, reason: &str, message: &str| {
        let mut status = seen.status.clone();
        if !ok {
            status.phase = Some(phase::STAGING.into());
            status.start_time = status.start_time.or_else(|| Some(seen.now.to_string()));
        }
        let condition = status::condition(job, DATA_STAGED, ok, reason, message, seen.now);
        status::set_condition(&mut status, &seen.status, condition);
        status
    };
    match state {
        HelperState::Absent => {
            let message = format!("staging {target}: Job {name} created");
            Err(Box::new(hold(
                with(false, "Staging", &message),
                true,
                Next::After(WHILE_RUNNING),
            )))
        }
        HelperState::Running { failed, progress } => {
            let said = progress.map(|line| format!(": {line}")).unwrap_or_default();
            let message = format!(
                "staging {target}: Job {name} running, attempt {}{said}",
                failed + 1
            );
            Err(Box::new(hold(
                with(false, "Staging", &message),
                false,
                Next::After(WHILE_RUNNING),
            )))
        }
        HelperState::Succeeded { .. } => Ok(Some(with(true, "Staged", &format!("staged {target}")))),
        HelperState::Failed { message } => {
            let message = format!("staging {target} failed: {message}");
            let status = with(false, "StagingFailed", &message);
            Err(Box::new(fail(
                job,
                seen,
                &status,
                "StagingFailed",
                &message,
                Vec::new(),
            )))
        }
        HelperState::Foreign => {
            let message =
                format!("a Job named {name} exists and is not this job's: staging waits for it to go");
            let mut decision = hold(
                with(false, "OwnershipConflict", &message),
                false,
                Next::After(WHILE_RUNNING * 5),
            );
            decision
                .actions
                .notes
                .push(note(true, "OwnershipConflict", "Stage", &message));
            Err(Box::new(decision))
        }
    }
}

/// A pass that writes `status`, creates the stage Job if `create`, and looks again after `next`.
fn hold(status: TrainingJobStatus, create: bool, next: Next) -> Decision {
    Decision {
        actions: Actions {
            status: Some(status),
            create_helpers: if create { vec![Helper::Stage] } else { Vec::new() },
            ..Actions::default()
        },
        then: Then::Done(next),
    }
}

/// Export, once the job succeeded: adds to a finished job's `actions` what the export needs.
pub fn export(job: &TrainingJob, seen: &Seen, actions: &mut Actions, next: &mut Next) {
    let Some(claim) = &job.spec.training.checkpoint_claim else {
        return;
    };
    let Some(state) = seen.helpers.export.clone() else {
        return;
    };
    let name = Helper::Export.name(job);
    let mut status = seen.status.clone();
    let server = crate::children::server_name(job);
    let (ok, reason, message) = match state {
        // The server holds the checkpoint claim (a ReadWriteOnce claim admits no second node)
        // and writes a last checkpoint as it stops: it goes first, gracefully.
        HelperState::Absent if seen.observed.existing.contains(&server) => {
            if !seen.observed.terminating.contains(&server) {
                actions
                    .delete_pods
                    .push((server.clone(), super::actions::Deletion::Graceful));
            }
            let message = format!("stopping {server} before the export (it holds the claim)");
            (false, "Exporting", message)
        }
        HelperState::Absent => {
            actions.create_helpers.push(Helper::Export);
            (
                false,
                "Exporting",
                format!("writing the model files: Job {name} created"),
            )
        }
        HelperState::Running { failed, .. } => (
            false,
            "Exporting",
            format!("Job {name} running, attempt {}", failed + 1),
        ),
        HelperState::Succeeded { message } => match exported(job, claim, &message) {
            Some(model) => {
                let what = format!("model files written on claim {claim}: {}", model.safetensors);
                status.model = Some(model);
                (true, "Exported", what)
            }
            None => (
                false,
                "ExportFailed",
                format!("Job {name} said {message:?}, not its metrics"),
            ),
        },
        HelperState::Failed { message } => (false, "ExportFailed", message),
        HelperState::Foreign => (
            false,
            "OwnershipConflict",
            format!("a Job named {name} exists and is not this job's"),
        ),
    };
    if reason == "Exporting" {
        *next = Next::After(WHILE_RUNNING);
    }
    let condition = status::condition(job, MODEL_EXPORTED, ok, reason, &message, seen.now);
    status::set_condition(&mut status, &seen.status, condition);
    if status != seen.status {
        actions.status = Some(status);
    }
}

/// The model files and test metrics of a finished export (its termination message is the JSON
/// that `anyk-worker export --metrics-out` wrote).
fn exported(job: &TrainingJob, claim: &str, message: &str) -> Option<ExportedModel> {
    let metrics: serde_json::Value = serde_json::from_str(message.trim()).ok()?;
    Some(ExportedModel {
        claim: claim.to_string(),
        safetensors: model_path(job, SAFETENSORS_FILE),
        torch_script: Some(model_path(job, TORCHSCRIPT_FILE)),
        test_accuracy: metrics["accuracy"].as_f64(),
        test_loss: metrics["loss"].as_f64(),
        feature_scale: metrics["feature_scale"].as_f64(),
        step: metrics["step"].as_u64()?,
    })
}

fn is_true(status: &TrainingJobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the condition is there with a final answer (exported, or failed for good).
fn has(status: &TrainingJobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && matches!(c.reason.as_str(), "Exported" | "ExportFailed"))
}
