//! The reconcile: read -> validate -> build -> apply -> observe -> status.
//!
//! What it does today: creates the server pod, its Service and n worker pods by server-side apply
//! (deterministic names, owner references); when worker pods fail or disappear it repairs the
//! layout (only lost copies move), replaces the pods and rebalances onto them once ready; and it
//! reports the layout, coverage margin and worker counts. Not yet: pushing the layout to the
//! server over gRPC, server progress, the NotReady-node grace, suspend and TTL.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyk_core::{Layout, plan, verify};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::build::{self, FIELD_MANAGER, Images, JOB_LABEL, ROLE_LABEL, WORKER_LABEL};
use crate::crd::{LayoutState, Repair, TrainingJob, TrainingJobStatus, WorkerCounts};
use crate::heal::{WorkerPod, heal, live};

pub struct Context {
    pub client: Client,
    pub images: Images,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to apply {kind} {name}")]
    Apply {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("failed to list the job's pods")]
    ListPods(#[source] kube::Error),
    #[error("failed to write status")]
    WriteStatus(#[source] kube::Error),
    #[error("failed to read status")]
    ReadStatus(#[source] kube::Error),
    #[error("the job has no namespace")]
    NoNamespace,
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::ListPods(_) => "list_pods",
            Error::WriteStatus(_) => "write_status",
            Error::ReadStatus(_) => "read_status",
            Error::NoNamespace => "no_namespace",
        }
    }
}

pub async fn reconcile(job: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = &job.spec;
    // The CRD's CEL rules reject impossible jobs; this catches one that slipped past (an older
    // CRD), says so in status, and waits for a change instead of retrying.
    let planned = match plan(
        spec.dataset.blocks,
        spec.replication,
        spec.workers,
        spec.target_workers,
    ) {
        Ok(layout) => layout,
        Err(err) => {
            tracing::warn!(job = %job.name_any(), %err, "invalid TrainingJob");
            let status = invalid_status(&job, err.to_string());
            write_status(&jobs, &job, &status).await?;
            return Ok(Action::await_change());
        }
    };
    // Status from the apiserver, not the watch cache: the cache may not have seen our own last
    // write yet, and the layout there must never step back to an older epoch.
    let previous = match jobs.get_status(&job.name_any()).await {
        Ok(fresh) => fresh.status.unwrap_or_default(),
        Err(source) => return Err(Error::ReadStatus(source)),
    };
    let layout = restore(planned, previous.layout.as_ref());
    let pods = observe_workers(&job, &ns, &ctx.client).await?;
    let healing = heal(&layout, &pods, previous.layout.is_some());
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for &w in &healing.lost {
        // Deleted now and re-created by the apply below (or the next pass while it terminates).
        match pod_api
            .delete(&build::worker_name(&job, w), &DeleteParams::default())
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(source) => {
                return Err(Error::Apply {
                    kind: "Pod",
                    name: build::worker_name(&job, w),
                    source,
                });
            }
        }
    }
    if !healing.lost.is_empty() {
        tracing::info!(job = %job.name_any(), lost = ?healing.lost, epoch = healing.layout.epoch,
            moved = healing.repair_moves.len(), coverage_lost = healing.coverage_lost, "workers lost; layout repaired");
    }
    if !healing.joined.is_empty() {
        tracing::info!(job = %job.name_any(), joined = ?healing.joined, epoch = healing.layout.epoch, "replacements rebalanced in");
    }
    apply_children(&job, &ns, &ctx).await?;
    let mut status = running_status(&job, &healing.layout, &live(&pods));
    let lost = healing.lost.len() as u32;
    status.workers.failed = previous.workers.failed + lost;
    status.workers.replaced = previous.workers.replaced + lost;
    status.last_repair = previous.last_repair;
    if lost > 0 && !healing.coverage_lost {
        status.last_repair = Some(Repair {
            epoch: healing.layout.epoch,
            lost_workers: healing.lost.clone(),
            moved_blocks: healing.repair_moves.len() as u32,
            time: k8s_openapi::jiff::Timestamp::now().to_string(),
        });
    }
    write_status(&jobs, &job, &status).await?;
    // Come back soon while pods are being replaced; otherwise pod changes wake the job anyway.
    let again = if lost > 0 || status.workers.ready < spec.workers {
        2
    } else {
        30
    };
    Ok(Action::requeue(Duration::from_secs(again)))
}

/// The planned layout, carrying the epoch, holders and members saved in status.
fn restore(mut planned: Layout, saved: Option<&LayoutState>) -> Layout {
    if let Some(saved) = saved.filter(|s| s.holders.len() == planned.holders.len()) {
        planned.epoch = saved.epoch;
        planned.holders = saved.holders.clone();
        planned.members = saved.members.iter().copied().collect();
    }
    planned
}

/// Transient API errors: retry with a short backoff.
pub fn error_policy(job: Arc<TrainingJob>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(job = %job.name_any(), error = %err, kind = err.metric_label(), "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn apply_children(job: &TrainingJob, ns: &str, ctx: &Context) -> Result<(), Error> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    let service = build::service(job);
    services
        .patch(&service.name_any(), &apply, &Patch::Apply(&service))
        .await
        .map_err(|source| Error::Apply {
            kind: "Service",
            name: service.name_any(),
            source,
        })?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let wanted = std::iter::once(build::server_pod(job, &ctx.images))
        .chain((0..job.spec.workers).map(|w| build::worker_pod(job, w, &ctx.images)));
    for pod in wanted {
        pods.patch(&pod.name_any(), &apply, &Patch::Apply(&pod))
            .await
            .map_err(|source| Error::Apply {
                kind: "Pod",
                name: pod.name_any(),
                source,
            })?;
    }
    Ok(())
}

/// The state of each worker id's pod.
async fn observe_workers(job: &TrainingJob, ns: &str, client: &Client) -> Result<Vec<WorkerPod>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("{JOB_LABEL}={},{ROLE_LABEL}=worker", job.name_any());
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::ListPods)?;
    let mut observed = vec![WorkerPod::Missing; job.spec.workers as usize];
    for pod in &list.items {
        let Some(w) = pod
            .labels()
            .get(WORKER_LABEL)
            .and_then(|w| w.parse::<usize>().ok())
        else {
            continue;
        };
        let Some(slot) = observed.get_mut(w) else { continue };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        *slot = if pod.metadata.deletion_timestamp.is_some() {
            WorkerPod::Missing
        } else if phase == Some("Failed") {
            WorkerPod::Failed
        } else if is_ready(pod) {
            WorkerPod::Ready
        } else {
            WorkerPod::Starting
        };
    }
    Ok(observed)
}

fn is_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Status from the layout and the workers that are ready (pure).
pub fn running_status(job: &TrainingJob, layout: &Layout, live: &BTreeSet<u32>) -> TrainingJobStatus {
    let coverage = verify(layout, live);
    let n = job.spec.workers;
    let all_ready = live.len() as u32 == n;
    let phase = match (all_ready, coverage.holds) {
        (true, _) => "Running",
        (false, true) if live.is_empty() => "Pending",
        (false, true) => "Degraded",
        (false, false) => "Pending",
    };
    let generation = job.metadata.generation;
    let condition = |type_: &str, ok: bool, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    };
    TrainingJobStatus {
        phase: Some(phase.into()),
        conditions: vec![
            condition(
                "Ready",
                all_ready,
                if all_ready {
                    "AllWorkersReady"
                } else {
                    "WorkersStarting"
                },
                format!("{}/{n} workers ready", live.len()),
            ),
            condition(
                "CoverageLost",
                !coverage.holds,
                if coverage.holds {
                    "Covered"
                } else {
                    "TooFewWorkers"
                },
                format!(
                    "{} live workers; any {} must cover every block",
                    coverage.live, layout.target
                ),
            ),
        ],
        observed_generation: generation,
        layout_epoch: Some(layout.epoch),
        coverage_margin: Some(coverage.margin),
        under_replicated_blocks: coverage.under_replicated,
        workers_ready: Some(format!("{}/{n}", live.len())),
        workers: WorkerCounts {
            ready: live.len() as u32,
            failed: 0,
            replaced: 0,
        },
        progress: None,
        last_repair: None,
        layout: Some(LayoutState {
            epoch: layout.epoch,
            holders: layout.holders.clone(),
            members: layout.members.iter().copied().collect(),
        }),
    }
}

fn invalid_status(job: &TrainingJob, message: String) -> TrainingJobStatus {
    TrainingJobStatus {
        phase: Some("Failed".into()),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "InvalidSpec".into(),
            message,
            observed_generation: job.metadata.generation,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        }],
        observed_generation: job.metadata.generation,
        ..TrainingJobStatus::default()
    }
}

async fn write_status(
    jobs: &Api<TrainingJob>,
    job: &TrainingJob,
    status: &TrainingJobStatus,
) -> Result<(), Error> {
    let patch = json!({ "apiVersion": "anyk.dev/v1alpha1", "kind": "TrainingJob", "status": status });
    jobs.patch_status(
        &job.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::WriteStatus)?;
    Ok(())
}

/// Runs the controller until the stream ends: watches TrainingJobs (in `namespace`, or all) and the
/// pods they own, so a pod change wakes its job.
pub async fn run(client: Client, images: Images, namespace: Option<String>) {
    use futures::StreamExt;
    let (jobs, pods): (Api<TrainingJob>, Api<Pod>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let ctx = Arc::new(Context { client, images });
    kube::runtime::Controller::new(jobs, Default::default())
        .owns(pods, Default::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "reconcile stream");
            }
        })
        .await;
}
