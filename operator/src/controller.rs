//! The reconcile: read -> validate -> build -> apply -> status -> push the layout to the server
//! and read its progress -> status.
//!
//! Worker pods that fail, vanish, are evicted or sit on a node NotReady beyond the grace are
//! lost: the layout is repaired (only their copies move), the repair written to status and
//! recorded as an Event, replacement pods created, and the replacements rebalanced in once
//! ready. A failed server pod is replaced and resumes from its checkpoint; the layout is pushed
//! to whichever server holds an older epoch. Suspend deletes the pods and keeps the rest; a
//! finished job is deleted after ttlSecondsAfterFinished.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyk_core::{Layout, plan};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::build::{self, FIELD_MANAGER, Images, JOB_LABEL, SERVER_ENDPOINT_ANNOTATION};
use crate::crd::{LayoutState, Repair, TrainingJob, TrainingJobStatus};
use crate::heal::{Healing, WorkerPod, heal, live};
use crate::metrics::Metrics;
use crate::observe::observe;
use crate::server_link::{self, Channels};
use crate::status::{self, Facts, ServerState, phase};

/// How the operator runs; the same for every job.
#[derive(Debug, Clone)]
pub struct Settings {
    pub images: Images,
    /// How long a worker's node may be NotReady before its pods count as lost.
    pub node_grace: Duration,
    /// Create one NetworkPolicy per job that admits only its workers and the operator.
    pub network_policies: bool,
    /// The namespace the operator runs in (for the NetworkPolicy's operator rule).
    pub operator_namespace: Option<String>,
}

impl Settings {
    /// The defaults of `anyk-operator`'s flags, with these images.
    pub fn new(images: Images) -> Self {
        Self {
            images,
            node_grace: Duration::from_secs(30),
            network_policies: true,
            operator_namespace: None,
        }
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub channels: Channels,
    /// One recorder for all Events, so that repeated ones are counted rather than duplicated.
    pub recorder: Recorder,
    /// Consecutive failed passes per job, for the backoff.
    pub failures: Mutex<HashMap<String, u32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to apply {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("failed to delete {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("failed to observe the job's pods and nodes: {0}")]
    Observe(#[source] kube::Error),
    #[error("failed to write status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("failed to read status: {0}")]
    ReadStatus(#[source] kube::Error),
    #[error("the job has no namespace")]
    NoNamespace,
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::Observe(_) => "observe",
            Error::WriteStatus(_) => "write_status",
            Error::ReadStatus(_) => "read_status",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// One pass over a job.
pub async fn reconcile(job: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let action = reconcile_once(&job, &ctx).await?;
    let key = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
    ctx.failures.lock().expect("failures lock").remove(&key);
    Ok(action)
}

async fn reconcile_once(job: &Arc<TrainingJob>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let job = job.clone();
    let ctx = ctx.clone();
    ctx.metrics.reconciled();
    if job.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes the pods; they are not lost workers.
        return Ok(Action::await_change());
    }
    let ns = job.namespace().ok_or(Error::NoNamespace)?;
    let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &ns);
    let name = job.name_any();
    let now = Timestamp::now();
    // Status from the apiserver, not the watch cache: the cache may not have seen our own last
    // write yet, and the layout there must never step back to an older epoch.
    let fresh = jobs.get_status(&name).await.map_err(Error::ReadStatus)?;
    if fresh.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let previous = fresh.status.unwrap_or_default();
    let was = previous.phase.as_deref();
    let spec = &job.spec;
    // The CRD's CEL rules reject impossible jobs; this catches one that slipped past (an older
    // CRD), says so in status and an Event, and waits for a change instead of retrying.
    let planned = match plan(
        spec.dataset.blocks,
        spec.replication,
        spec.workers,
        spec.target_workers,
    ) {
        Ok(layout) => layout,
        Err(err) => {
            tracing::warn!(job = %name, %err, "invalid TrainingJob");
            if was != Some(phase::FAILED) {
                ctx.event(
                    &job,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    err.to_string(),
                )
                .await;
            }
            write_status(
                &jobs,
                &job,
                &status::invalid(&job, &previous, err.to_string(), now),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    if was == Some(phase::SUCCEEDED) {
        return after_success(&job, &jobs, &previous, &ctx, now).await;
    }
    if spec.suspend {
        return suspend(&job, &ns, &jobs, &previous, &ctx, now).await;
    }
    let layout = restore(planned, previous.layout.as_ref());
    let started = Instant::now();
    let observed = observe(&job, &ns, &ctx.client, ctx.settings.node_grace)
        .await
        .map_err(Error::Observe)?;
    let resuming = was == Some(phase::SUSPENDED);
    if resuming && observed.terminating > 0 {
        // The pods suspend deleted are still going: they are not losses, and their replacements
        // (same names) cannot be created before they are gone.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // After a resume every pod is missing because suspend deleted them, not because they were lost.
    let healing = heal(&layout, &observed.workers, previous.layout.is_some() && !resuming);
    let server_failed = observed.server == WorkerPod::Failed;
    let live = live(&observed.workers);
    let facts = |layout, server| Facts {
        layout,
        live: &live,
        server,
        now,
    };
    let mut status = status::running(&job, &previous, &facts(&healing.layout, ServerState::NotAsked));
    let lost = healing.lost.len() as u32;
    status.workers.failed += lost;
    status.workers.replaced += lost;
    status.server_restarts += u32::from(server_failed);
    if lost > 0 && !healing.coverage_lost {
        status.last_repair = Some(Repair {
            epoch: healing.layout.epoch,
            lost_workers: healing.lost.clone(),
            moved_blocks: healing.repair_moves.len() as u32,
            time: now.to_string(),
        });
    }
    // The repaired layout is written before anything is acted on: should a later step fail, the
    // next pass starts from it and never counts the same loss twice. And before the server is
    // asked: a slow or missing server must not delay the repair showing up.
    write_status(&jobs, &job, &status).await?;
    if lost > 0 && !healing.coverage_lost {
        ctx.metrics.repaired(lost as usize, started.elapsed());
    }
    announce(&job, &ctx, &healing).await;
    let mut deleted = Vec::new();
    // Lost workers, and replacements that failed before they were rebalanced in (no longer
    // members, so not lost again, but their pods must be replaced all the same).
    let failed_spares = (0..spec.workers).filter(|w| {
        !healing.layout.members.contains(w)
            && !healing.lost.contains(w)
            && observed.workers[*w as usize] == WorkerPod::Failed
    });
    for w in healing.lost.iter().copied().chain(failed_spares) {
        deleted.push(build::worker_name(&job, w));
    }
    if server_failed {
        ctx.metrics.server_restarted();
        let note = if spec.training.checkpoint_claim.is_some() {
            "the parameter-server pod failed; replaced, it resumes from its newest checkpoint"
        } else {
            "the parameter-server pod failed; replaced, it starts over (no training.checkpointClaim)"
        };
        ctx.event(&job, EventType::Warning, "ServerReplaced", "Heal", note.into())
            .await;
        deleted.push(build::server_name(&job));
    }
    for pod in &deleted {
        delete_pod(&ctx.client, &ns, pod, Deletion::Now).await?;
    }
    // Pods are created when absent, never updated: a running pod's spec cannot change, and an
    // edited job or a new default image applies to the pods created from then on.
    let absent: BTreeSet<String> = std::iter::once(build::server_name(&job))
        .chain((0..spec.workers).map(|w| build::worker_name(&job, w)))
        .filter(|pod| !observed.existing.contains(pod) || deleted.contains(pod))
        .collect();
    apply_children(&job, &ns, &ctx, &absent).await?;
    let mut layout = healing.layout.clone();
    let server = match observed.server {
        WorkerPod::Ready => ask_server(&job, &ctx, &mut layout).await,
        _ if job.annotations().contains_key(SERVER_ENDPOINT_ANNOTATION) => {
            ask_server(&job, &ctx, &mut layout).await
        }
        _ => ServerState::NotAsked,
    };
    let reachable = matches!(server, ServerState::Reachable { .. });
    let mut with_progress = status::running(&job, &status, &facts(&layout, server));
    with_progress.server_restarts = status.server_restarts;
    if with_progress != status {
        write_status(&jobs, &job, &with_progress).await?;
    }
    if with_progress.phase.as_deref() == Some(phase::SUCCEEDED) {
        ctx.event(
            &job,
            EventType::Normal,
            "Succeeded",
            "Train",
            "the server reported the final step".into(),
        )
        .await;
        return after_success(&job, &jobs, &with_progress, &ctx, now).await;
    }
    // Come back soon while pods are being replaced; a running job is polled for progress.
    let mut again = if lost > 0 || server_failed || live.len() < spec.workers as usize {
        Duration::from_secs(2)
    } else if reachable {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(10)
    };
    if let Some(recheck) = observed.recheck {
        again = again.min(recheck + Duration::from_millis(100));
    }
    Ok(Action::requeue(again))
}

impl Context {
    /// Records an Event on the job; a failure to record is logged, never fatal.
    async fn event(&self, job: &TrainingJob, type_: EventType, reason: &str, action: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &job.object_ref(&())).await {
            tracing::warn!(job = %job.name_any(), %err, reason, "failed to record an Event");
        }
    }
}

/// Logs and records Events for a healing pass.
async fn announce(job: &TrainingJob, ctx: &Context, healing: &Healing) {
    if !healing.lost.is_empty() {
        tracing::info!(job = %job.name_any(), lost = ?healing.lost, epoch = healing.layout.epoch,
            moved = healing.repair_moves.len(), coverage_lost = healing.coverage_lost, "workers lost");
        let note = if healing.coverage_lost {
            format!(
                "workers {:?} lost: fewer than targetWorkers remain, so the server waits until replacements are ready",
                healing.lost
            )
        } else {
            format!(
                "workers {:?} lost: layout repaired to epoch {}, {} block copies moved; replacement pods created",
                healing.lost,
                healing.layout.epoch,
                healing.repair_moves.len()
            )
        };
        let reason = if healing.coverage_lost {
            "CoverageLost"
        } else {
            "LayoutRepaired"
        };
        ctx.event(job, EventType::Warning, reason, "Heal", note).await;
    }
    if !healing.joined.is_empty() {
        tracing::info!(job = %job.name_any(), joined = ?healing.joined, epoch = healing.layout.epoch, "replacements rebalanced in");
        let note = format!(
            "replacement workers {:?} ready: rebalanced in at epoch {}",
            healing.joined, healing.layout.epoch
        );
        ctx.event(job, EventType::Normal, "WorkersRejoined", "Heal", note)
            .await;
    }
}

/// Pushes the layout when the server holds an older one and reads its progress. Should the server
/// hold a newer epoch, the layout was pushed stamped above it, and `layout` says so.
async fn ask_server(job: &TrainingJob, ctx: &Context, layout: &mut Layout) -> ServerState {
    let endpoint = build::control_endpoint(job);
    match server_link::sync(&ctx.channels, &endpoint, layout).await {
        Ok(report) => {
            if report.epoch != layout.epoch {
                tracing::warn!(job = %job.name_any(), ours = layout.epoch, now = report.epoch,
                    "the server held a newer layout epoch than the job's status; ours was pushed above it");
                layout.epoch = report.epoch;
            }
            if report.pushed {
                tracing::info!(job = %job.name_any(), epoch = layout.epoch, "layout pushed to the server");
            }
            ServerState::Reachable {
                progress: report.progress,
                finished: report.finished,
            }
        }
        Err(err) => {
            tracing::debug!(job = %job.name_any(), %endpoint, %err, "server not reachable");
            ServerState::Unreachable(format!("{endpoint}: {err}"))
        }
    }
}

/// A finished job: nothing to heal; delete it once ttlSecondsAfterFinished has passed.
async fn after_success(
    job: &TrainingJob,
    jobs: &Api<TrainingJob>,
    status: &TrainingJobStatus,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, Error> {
    let Some(ttl) = job.spec.ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let finished_at = status
        .completion_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .unwrap_or(now);
    let left = i64::from(ttl) - now.duration_since(finished_at).as_secs();
    if left > 0 {
        return Ok(Action::requeue(Duration::from_secs(left as u64)));
    }
    tracing::info!(job = %job.name_any(), ttl, "deleting the finished job (ttlSecondsAfterFinished)");
    ctx.event(
        job,
        EventType::Normal,
        "Expired",
        "Delete",
        format!("finished {ttl}s ago; deleting"),
    )
    .await;
    match jobs.delete(&job.name_any(), &DeleteParams::background()).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Action::await_change()),
        Err(source) => Err(Error::Delete {
            kind: "TrainingJob",
            name: job.name_any(),
            source,
        }),
    }
}

/// A suspended job: its pods go, its status (layout, progress) and checkpoint volume stay.
async fn suspend(
    job: &TrainingJob,
    ns: &str,
    jobs: &Api<TrainingJob>,
    previous: &TrainingJobStatus,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{JOB_LABEL}={}", job.name_any());
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::Observe)?;
    for pod in list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        delete_pod(&ctx.client, ns, &pod.name_any(), Deletion::Graceful).await?;
    }
    if previous.phase.as_deref() != Some(phase::SUSPENDED) {
        ctx.event(
            job,
            EventType::Normal,
            "Suspended",
            "Suspend",
            "pods deleted; the layout and the checkpoint are kept for the resume".into(),
        )
        .await;
    }
    write_status(jobs, job, &status::suspended(job, previous, now)).await?;
    Ok(Action::await_change())
}

/// How a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Deletion {
    /// SIGTERM and the pod's grace period: a suspended server writes its final checkpoint.
    Graceful,
    /// At once: a lost pod's node may never confirm a graceful deletion, and its replacement has
    /// the same name. Should the old process still run somewhere, it is fenced off anyway: the
    /// server rejects gradients for blocks a worker does not hold in the current layout epoch.
    Now,
}

async fn delete_pod(client: &Client, ns: &str, name: &str, how: Deletion) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = match how {
        Deletion::Graceful => DeleteParams::default(),
        Deletion::Now => DeleteParams::default().grace_period(0),
    };
    match pods.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(Error::Delete {
            kind: "Pod",
            name: name.to_string(),
            source,
        }),
    }
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

/// Transient API errors: retry with exponential backoff (1 s doubling to 5 min), per job.
pub fn error_policy(job: Arc<TrainingJob>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(err.metric_label());
    let key = format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any());
    let mut failures = ctx.failures.lock().expect("failures lock");
    let n = failures.entry(key).or_default();
    *n = (*n + 1).min(16);
    let delay = Duration::from_secs(1 << (*n - 1).min(8)).min(Duration::from_secs(300));
    tracing::warn!(job = %job.name_any(), error = %err, kind = err.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply_children(
    job: &TrainingJob,
    ns: &str,
    ctx: &Context,
    absent: &BTreeSet<String>,
) -> Result<(), Error> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    if ctx.settings.network_policies {
        let policies: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
        let policy = build::network_policy(job, ctx.settings.operator_namespace.as_deref());
        policies
            .patch(&policy.name_any(), &apply, &Patch::Apply(&policy))
            .await
            .map_err(|source| Error::Apply {
                kind: "NetworkPolicy",
                name: policy.name_any(),
                source,
            })?;
    }
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
    let images = &ctx.settings.images;
    let wanted = std::iter::once(build::server_pod(job, images))
        .chain((0..job.spec.workers).map(|w| build::worker_pod(job, w, images)));
    for pod in wanted.filter(|pod| absent.contains(&pod.name_any())) {
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

/// Runs the controller until a shutdown signal: watches TrainingJobs in `namespaces` (all when
/// empty), the pods they own (a pod change wakes its job) and the nodes.
pub async fn run(client: Client, settings: Settings, namespaces: Vec<String>, metrics: Arc<Metrics>) {
    use futures::StreamExt;
    let ctx = Arc::new(Context {
        client: client.clone(),
        settings,
        metrics,
        channels: Channels::default(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        ),
        failures: Default::default(),
    });
    let scopes: Vec<(Api<TrainingJob>, Api<Pod>)> = if namespaces.is_empty() {
        vec![(Api::all(client.clone()), Api::all(client.clone()))]
    } else {
        namespaces
            .iter()
            .map(|ns| {
                (
                    Api::namespaced(client.clone(), ns),
                    Api::namespaced(client.clone(), ns),
                )
            })
            .collect()
    };
    let controllers = scopes.into_iter().map(|(jobs, pods)| {
        let controller = kube::runtime::Controller::new(jobs, Default::default());
        // A node changing (going NotReady) wakes every job, so the grace starts counting at once
        // rather than at the job's next periodic pass.
        let known_jobs = controller.store();
        let nodes: Api<Node> = Api::all(client.clone());
        controller
            .owns(pods, Default::default())
            .watches(nodes, Default::default(), move |_: Node| {
                known_jobs
                    .state()
                    .iter()
                    .map(|job| ObjectRef::from_obj(&**job))
                    .collect::<Vec<_>>()
            })
            .shutdown_on_signal()
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "reconcile stream");
                }
            })
    });
    futures::future::join_all(controllers).await;
}
