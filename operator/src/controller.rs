//! The controller: what every pass shares ([`Context`]), the retry policy, and the wiring of the
//! kube-runtime Controller that calls [`crate::reconcile::reconcile`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyk_core::Layout;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};

use crate::children::FIELD_MANAGER;
use crate::crd::TrainingJob;
use crate::metrics::Metrics;
use crate::reconcile::decide::Note;
use crate::reconcile::{Error, reconcile};
use crate::server_link::{self, Channels};
use crate::settings::Settings;
use crate::status::ServerState;

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub channels: Channels,
    /// One recorder for all Events, so that repeated ones are counted rather than duplicated.
    pub recorder: Recorder,
    pub backoff: Backoff,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            metrics,
            channels: Channels::default(),
            backoff: Backoff::default(),
        }
    }

    /// Records an Event on the job; a failure to record is logged, never fatal.
    pub async fn publish(&self, job: &TrainingJob, note: &Note) {
        tracing::info!(job = %job.name_any(), reason = note.reason, message = %note.message, "event");
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.clone()),
            action: note.action.into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &job.object_ref(&())).await {
            tracing::warn!(job = %job.name_any(), %err, reason = note.reason, "failed to record an Event");
        }
    }

    /// Pushes the layout when the server holds an older one and reads its progress. Should the
    /// server hold a newer epoch, the layout was pushed stamped above it, and `layout` says so.
    pub async fn ask_server(&self, job: &TrainingJob, endpoint: &str, layout: &mut Layout) -> ServerState {
        match server_link::sync(&self.channels, endpoint, layout).await {
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
                let cause = server_link::error_chain(&err);
                tracing::info!(job = %job.name_any(), %endpoint, %cause, "server not reachable");
                // Status gets no transport error text: it is readable by the job's users, and an
                // error from a foreign address would leak what lives there.
                ServerState::Unreachable(format!(
                    "the server at {endpoint} did not answer; the operator's log has the cause"
                ))
            }
        }
    }
}

/// Consecutive failed passes per job: the retry delay doubles from 1 s up to 256 s.
#[derive(Default)]
pub struct Backoff(Mutex<HashMap<String, u32>>);

impl Backoff {
    fn key(job: &TrainingJob) -> String {
        format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
    }

    /// A failed pass: how long to wait before the next.
    pub fn failed(&self, job: &TrainingJob) -> Duration {
        let mut failures = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(Self::key(job)).or_default();
        *n = (*n + 1).min(16);
        Duration::from_secs(1 << (*n - 1).min(8)).min(Duration::from_secs(300))
    }

    pub fn succeeded(&self, job: &TrainingJob) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&Self::key(job));
    }
}

/// Transient API errors: retry with exponential backoff, per job.
pub fn error_policy(job: Arc<TrainingJob>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(err.metric_label());
    let delay = ctx.backoff.failed(&job);
    tracing::warn!(job = %job.name_any(), error = %err, kind = err.metric_label(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the controller until a shutdown signal: watches TrainingJobs in `namespaces` (all when
/// empty), the pods they own (a pod change wakes its job) and the nodes.
pub async fn run(client: Client, settings: Settings, namespaces: Vec<String>, metrics: Arc<Metrics>) {
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics));
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
