//! The parameter-server pod and the worker pods. Their command lines come from
//! `anyk_proto::launch`, the same definition the binaries parse.

use std::path::PathBuf;

use anyk_core::Numerics;
use anyk_core::numerics::REPRODUCIBLE_ENV;
use anyk_proto::launch::{ModelLaunch, ServerLaunch, WorkerLaunch};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, GRPCAction, HostPathVolumeSource,
    KeyToPath, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{
    CONTROL_PORT, HEALTH_PORT, Images, Role, SERVER_PORT, labels, metadata, server_name, server_url,
    tls_secret_name, worker_name,
};
use crate::crd::{PodOverrides, TrainingJob};

/// Where the volumes are mounted in the containers.
pub(super) const CHECKPOINT_DIR: &str = "/checkpoints";
pub(super) const DATA_DIR: &str = "/data";
const TLS_DIR: &str = "/tls";
/// The unprivileged user the images run as (distroless "nonroot").
const NON_ROOT: i64 = 65532;

/// The parameter-server pod.
pub fn server_pod(job: &TrainingJob, images: &Images) -> Pod {
    let spec = &job.spec;
    let t = &spec.training;
    let launch = ServerLaunch {
        listen: ([0, 0, 0, 0], SERVER_PORT).into(),
        steps: t.steps,
        batch: t.batch,
        seed: t.seed,
        optimizer: t.optimizer,
        // The server computes in f32; the CRD keeps the user's number as written.
        lr: t.learning_rate as f32,
        momentum: t.momentum as f32,
        // Checkpoints belong to their job: a recreated job of the same name, or another job on
        // the same claim, never resumes them (the server also checks the job id in each one).
        checkpoint_dir: Some(format!("{CHECKPOINT_DIR}/{}", job_uid(job)).into()),
        job_id: Some(job_uid(job)),
        checkpoint_every: t.checkpoint_interval,
        strict: t.strict,
        clip_norm: t.clip_norm.map(|c| c as f32),
        gradient_precision: t.gradient_precision,
        control_listen: Some(([0, 0, 0, 0], CONTROL_PORT).into()),
        health_listen: Some(([0, 0, 0, 0], HEALTH_PORT).into()),
        tls_dir: Some(TLS_DIR.into()),
        ..ServerLaunch::new(spec.dataset.blocks)
    };
    let checkpoints = match &t.checkpoint_claim {
        Some(claim) => claim_volume("checkpoints", claim, false),
        None => empty_volume("checkpoints"),
    };
    let container = Container {
        name: "server".into(),
        image: Some(spec.server.image.clone().unwrap_or_else(|| images.server.clone())),
        args: Some(launch.args()),
        ports: Some(vec![
            container_port("grpc", SERVER_PORT),
            container_port("control", CONTROL_PORT),
            container_port("health", HEALTH_PORT),
        ]),
        // Ready once its gRPC health service answers SERVING (Kubernetes' native gRPC probe, on
        // the plaintext health port: the kubelet has no certificate of the job), so the
        // operator's first layout push finds it.
        readiness_probe: Some(Probe {
            grpc: Some(GRPCAction {
                port: HEALTH_PORT.into(),
                service: None,
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![
            mount("checkpoints", CHECKPOINT_DIR, false),
            mount("tls", TLS_DIR, true),
        ]),
        ..Container::default()
    };
    let name = server_name(job);
    let tls = tls_volume(&name);
    restricted_pod(
        job,
        name,
        Role::Server,
        container,
        vec![checkpoints, tls],
        &spec.server,
    )
}

/// The model the workers train (and the export evaluates), with the data it reads.
pub(super) fn model_launch(job: &TrainingJob) -> ModelLaunch {
    let spec = &job.spec;
    let model = match (&spec.model.builtin, &spec.model.torch_script) {
        (_, Some(path)) => {
            on_data_volume(&super::helpers::staged_model_path(job).unwrap_or_else(|| path.clone()))
        }
        (Some(name), None) => name.clone(),
        (None, None) => "mlp".into(),
    };
    let mut launch = ModelLaunch::new(PathBuf::from(on_data_volume(&spec.dataset.path)));
    launch.model = model;
    launch.contract = spec.model.contract;
    launch.hidden = spec.model.hidden.into();
    launch.numerics = spec.training.numerics;
    launch
}

/// Where `path` (on the data volume) is in a container.
pub(super) fn on_data_volume(path: &str) -> String {
    format!("{DATA_DIR}/{}", path.trim_start_matches('/'))
}

/// The job's data volume, named `data`: its claim, its host directory, or (neither given) an
/// empty directory.
pub(super) fn data_volume(job: &TrainingJob, read_only: bool) -> Volume {
    let dataset = &job.spec.dataset;
    match (&dataset.persistent_volume_claim, &dataset.host_path) {
        (Some(claim), _) => claim_volume("data", claim, read_only),
        (None, Some(path)) => Volume {
            name: "data".into(),
            host_path: Some(HostPathVolumeSource {
                path: path.clone(),
                type_: Some("Directory".into()),
            }),
            ..Volume::default()
        },
        (None, None) => empty_volume("data"),
    }
}

/// Worker pod `worker` (0..n).
pub fn worker_pod(job: &TrainingJob, worker: u32, images: &Images) -> Pod {
    let spec = &job.spec;
    let launch = WorkerLaunch {
        tls_dir: Some(TLS_DIR.into()),
        ..WorkerLaunch::new(server_url(job), worker, model_launch(job))
    };
    let data = data_volume(job, true);
    let container = Container {
        name: "worker".into(),
        env: numerics_env(spec.training.numerics),
        image: Some(spec.worker.image.clone().unwrap_or_else(|| images.worker.clone())),
        args: Some(launch.args()),
        volume_mounts: Some(vec![mount("data", DATA_DIR, true), mount("tls", TLS_DIR, true)]),
        ..Container::default()
    };
    let name = worker_name(job, worker);
    let tls = tls_volume(&name);
    let mut pod = restricted_pod(
        job,
        name,
        Role::Worker(Some(worker)),
        container,
        vec![data, tls],
        &spec.worker,
    );
    if let (Some(key), Some(pod_spec)) = (&spec.topology_key, pod.spec.as_mut()) {
        // Spread workers over failure domains, so one domain holds as few copies of a block as can be.
        pod_spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.clone(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(labels(job, Role::Worker(None))),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]);
    }
    pod
}

/// The reproducible profile in the pod's environment: it spares the worker its re-exec (which
/// loads libtorch twice) and shows in `kubectl describe` what a worker computes under.
pub(super) fn numerics_env(numerics: Numerics) -> Option<Vec<EnvVar>> {
    (numerics == Numerics::Reproducible).then(|| {
        REPRODUCIBLE_ENV
            .iter()
            .map(|(name, value)| EnvVar {
                name: (*name).into(),
                value: Some((*value).into()),
                ..EnvVar::default()
            })
            .collect()
    })
}

/// The job's UID ("unknown" before the apiserver gave it one: never for a job read from it).
pub(super) fn job_uid(job: &TrainingJob) -> String {
    job.metadata.uid.clone().unwrap_or_else(|| "unknown".into())
}

/// A pod that satisfies the "restricted" Pod Security Standard and mounts no API token:
/// training pods never talk to the Kubernetes API (docs/design.md, invariant 5).
fn restricted_pod(
    job: &TrainingJob,
    name: String,
    role: Role,
    container: Container,
    volumes: Vec<Volume>,
    overrides: &PodOverrides,
) -> Pod {
    Pod {
        metadata: metadata(job, name, role),
        spec: Some(restricted_spec(container, volumes, overrides)),
        ..Pod::default()
    }
}

/// The spec of a [`restricted_pod`] (also the template of the job's helper Jobs).
pub(super) fn restricted_spec(
    mut container: Container,
    volumes: Vec<Volume>,
    overrides: &PodOverrides,
) -> PodSpec {
    container.security_context = Some(SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    });
    container.resources = overrides.resources.clone();
    // A container that fails at start leaves the end of its log as its termination message: the
    // operator puts its first line in an Event (PodFailed).
    container.termination_message_policy = Some("FallbackToLogsOnError".into());
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // The operator replaces failed pods itself, after repairing the layout.
        restart_policy: Some("Never".into()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NON_ROOT),
            run_as_group: Some(NON_ROOT),
            // Volumes (a checkpoint claim above all) belong to this group, so the non-root
            // user can write them; only when the root's group differs, not on every start.
            fs_group: Some(NON_ROOT),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        node_selector: overrides.node_selector.clone(),
        tolerations: overrides.tolerations.clone(),
        ..PodSpec::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

pub(super) fn claim_volume(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: read_only.then_some(true),
        }),
        ..Volume::default()
    }
}

/// The pod's TLS credentials (`{pod}-tls`, made by the operator with the pod: docs/design.md,
/// invariant 11; workers created many at once mount a shared Secret instead, [`with_tls_items`]),
/// readable by the pod's user only.
fn tls_volume(pod: &str) -> Volume {
    Volume {
        name: "tls".into(),
        secret: Some(tls_source(&tls_secret_name(pod))),
        ..Volume::default()
    }
}

fn tls_source(secret: &str) -> SecretVolumeSource {
    SecretVolumeSource {
        secret_name: Some(secret.into()),
        default_mode: Some(0o440),
        ..SecretVolumeSource::default()
    }
}

/// `pod` with its TLS volume taken from `secret`, projecting only `items` (key, file name): a
/// Secret shared by several workers, of which each pod sees its own keys only.
pub fn with_tls_items(
    mut pod: Pod,
    secret: &str,
    items: impl IntoIterator<Item = (String, &'static str)>,
) -> Pod {
    let items: Vec<KeyToPath> = items
        .into_iter()
        .map(|(key, path)| KeyToPath {
            key,
            path: path.into(),
            mode: None,
        })
        .collect();
    let volumes = pod.spec.as_mut().and_then(|s| s.volumes.as_mut());
    for volume in volumes.into_iter().flatten().filter(|v| v.name == "tls") {
        volume.secret = Some(SecretVolumeSource {
            items: Some(items.clone()),
            ..tls_source(secret)
        });
    }
    pod
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        ..ContainerPort::default()
    }
}

fn empty_volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

pub(super) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}
