//! The job's two helper Jobs (batch/v1), each run once: `{job}-stage` splits the data source
//! into blocks on the data volume before any worker starts (`anyk data split`, from the server
//! image), and `{job}-export` writes the trained model as standard files beside the checkpoints
//! once the job succeeded (`anyk-worker export`, from the worker image, which has libtorch).
//! Their pods carry no job label: they are not the job's training pods, and the read step finds
//! them by the Job controller's own label instead.

use std::collections::BTreeMap;

use anyk_proto::launch::ExportLaunch;
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, PodTemplateSpec, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::pods::{
    CHECKPOINT_DIR, DATA_DIR, claim_volume, data_volume, job_uid, model_launch, mount, numerics_env,
    on_data_volume, restricted_spec,
};
use super::{FIELD_MANAGER, Images};
use crate::crd::{DataSource, TrainingJob};

/// The label on a helper Job's pods that names the TrainingJob they work for.
pub const HELPER_OF_LABEL: &str = "anyk.dev/helper-of";
/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// `anyk data split` exits with this code for bad data: no retry can fix it.
pub const BAD_DATA_EXIT: i32 = 2;
/// How long a helper Job may run when the TrainingJob sets no activeDeadlineSeconds.
const HELPER_DEADLINE_SECONDS: i64 = 6 * 3600;
/// Retries of a helper whose failure may pass (a network error, a node lost).
const RETRIES: i32 = 2;
/// The files `{job}-export` writes, in `/<job uid>/model/` on the checkpoint claim.
pub const MODEL_DIR: &str = "model";
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const TORCHSCRIPT_FILE: &str = "model.pt";

/// Which helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    Stage,
    Export,
}

impl Helper {
    pub fn name(self, job: &TrainingJob) -> String {
        match self {
            Helper::Stage => format!("{}-stage", job.name_any()),
            Helper::Export => format!("{}-export", job.name_any()),
        }
    }

    /// The Job, or `None` when the job has nothing for this helper to do (no source to stage,
    /// no checkpoint claim to export to).
    pub fn job(self, job: &TrainingJob, images: &Images) -> Option<Job> {
        match self {
            Helper::Stage => stage_job(job, job.spec.dataset.source.as_ref()?, images),
            Helper::Export => export_job(job, job.spec.training.checkpoint_claim.as_ref()?, images),
        }
    }
}

/// Where the stage Job puts a model given by URI (`model.torchScript: s3://...`), relative to the
/// data volume's root: beside the blocks.
pub fn staged_model_path(job: &TrainingJob) -> Option<String> {
    let script = job.spec.model.torch_script.as_deref()?;
    script.contains("://").then(|| {
        format!(
            "{}/{STAGED_MODEL_FILE}",
            job.spec.dataset.path.trim_end_matches('/')
        )
    })
}

/// The file name of a model the stage Job fetched.
pub const STAGED_MODEL_FILE: &str = "model.pt";

/// Where the export writes, relative to the checkpoint claim's root.
pub fn model_path(job: &TrainingJob, file: &str) -> String {
    format!("{}/{MODEL_DIR}/{file}", job_uid(job))
}

fn stage_job(job: &TrainingJob, source: &DataSource, images: &Images) -> Option<Job> {
    let dataset = &job.spec.dataset;
    let input = if source.uri.contains("://") {
        source.uri.clone()
    } else {
        on_data_volume(&source.uri)
    };
    let mut args = vec![
        "data".to_string(),
        "split".into(),
        "--input".into(),
        input,
        "--blocks".into(),
        dataset.blocks.to_string(),
        "--out".into(),
        on_data_volume(&dataset.path),
        "--labels".into(),
        source.labels.to_string(),
        "--header".into(),
        source.csv_header.clone(),
        "--test-fraction".into(),
        source.test_fraction.to_string(),
        "--seed".into(),
        source.seed.to_string(),
    ];
    if let Some(column) = &source.label_column {
        args.extend(["--label-column".to_string(), column.clone()]);
    }
    let container = Container {
        name: "split".into(),
        image: Some(
            job.spec
                .server
                .image
                .clone()
                .unwrap_or_else(|| images.server.clone()),
        ),
        command: Some(vec!["/usr/local/bin/anyk".into()]),
        args: Some(args),
        env: Some(storage_env(source)),
        volume_mounts: Some(vec![mount("data", DATA_DIR, false)]),
        ..Container::default()
    };
    let mut spec = restricted_spec(container, vec![data_volume(job, false)], &job.spec.server);
    if let (Some(uri), Some(to)) = (&job.spec.model.torch_script, staged_model_path(job)) {
        // The model comes from the same storage, first; the container's restrictions are the same.
        let mut fetch = spec.containers[0].clone();
        fetch.name = "fetch-model".into();
        fetch.args = Some(vec![
            "data".into(),
            "fetch".into(),
            "--input".into(),
            uri.clone(),
            "--out".into(),
            on_data_volume(&to),
        ]);
        spec.init_containers = Some(vec![fetch]);
    }
    Some(helper_job(job, Helper::Stage, spec))
}

/// Where the storage is and who the split is there: the variables the AWS SDKs read.
fn storage_env(source: &DataSource) -> Vec<EnvVar> {
    let value = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    };
    let mut env = vec![value(
        "AWS_REGION",
        source.region.as_deref().unwrap_or("us-east-1"),
    )];
    if let Some(endpoint) = &source.endpoint {
        env.push(value("AWS_ENDPOINT_URL", endpoint));
    }
    if let Some(secret) = &source.credentials_secret {
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            env.push(EnvVar {
                name: key.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.clone(),
                        key: key.into(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    env
}

fn export_job(job: &TrainingJob, claim: &str, images: &Images) -> Option<Job> {
    let on_claim = |path: String| format!("{CHECKPOINT_DIR}/{path}");
    let model = model_launch(job);
    let launch = ExportLaunch {
        // The final step's checkpoint by name: an older one is no result (the Job retries while
        // the server finishes writing it).
        checkpoint: on_claim(format!(
            "{}/ckpt-{:012}.anyk",
            job_uid(job),
            job.spec.training.steps
        ))
        .into(),
        out: on_claim(model_path(job, SAFETENSORS_FILE)).into(),
        torchscript_out: Some(on_claim(model_path(job, TORCHSCRIPT_FILE)).into()),
        // The test metrics come back to the operator as the container's termination message.
        metrics_out: Some("/dev/termination-log".into()),
        model,
    };
    let container = Container {
        name: "export".into(),
        image: Some(
            job.spec
                .worker
                .image
                .clone()
                .unwrap_or_else(|| images.worker.clone()),
        ),
        args: Some(launch.args()),
        env: numerics_env(job.spec.training.numerics),
        volume_mounts: Some(vec![
            mount("checkpoints", CHECKPOINT_DIR, false),
            mount("data", DATA_DIR, true),
        ]),
        ..Container::default()
    };
    let volumes = vec![claim_volume("checkpoints", claim, false), data_volume(job, true)];
    // Not the workers' overrides: those may ask for a GPU, which one evaluation does not need.
    let spec = restricted_spec(container, volumes, &job.spec.server);
    Some(helper_job(job, Helper::Export, spec))
}

fn helper_job(job: &TrainingJob, helper: Helper, mut pod: k8s_openapi::api::core::v1::PodSpec) -> Job {
    let name = helper.name(job);
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            FIELD_MANAGER.to_string(),
        ),
        (HELPER_OF_LABEL.to_string(), job.name_any()),
    ]);
    // A pod that fails is retried by the Job (podFailurePolicy needs restartPolicy Never).
    pod.restart_policy = Some("Never".into());
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: job.namespace(),
            labels: Some(labels.clone()),
            owner_references: job.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(RETRIES),
            // A helper stuck (an image that cannot be pulled, a claim never bound) ends and says so.
            active_deadline_seconds: Some(
                job.spec
                    .active_deadline_seconds
                    .unwrap_or(HELPER_DEADLINE_SECONDS),
            ),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: None,
                        operator: "In".into(),
                        values: vec![BAD_DATA_EXIT],
                    }),
                    on_pod_conditions: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}
