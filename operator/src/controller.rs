//! The controller: what every pass shares ([`Context`]), the retry policy, and the wiring of the
//! kube-runtime Controller that calls [`crate::reconcile::reconcile`].

use crate::tls::Authorities;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyk_core::Layout;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::caches::{self, Caches};
use crate::children::FIELD_MANAGER;
use crate::crd::TrainingJob;
use crate::expectations::Expectations;
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
    /// The jobs' certificate authorities (docs/design.md, invariant 11).
    pub authorities: Authorities,
    /// One recorder for all Events, so that repeated ones are counted rather than duplicated.
    pub recorder: Recorder,
    pub backoff: Backoff,
    /// The watch caches of pods and nodes, one per watched scope.
    pub caches: Vec<Caches>,
    /// Pod changes of this operator that the caches do not show yet.
    pub expectations: Arc<Expectations>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        caches: Vec<Caches>,
        expectations: Arc<Expectations>,
    ) -> Self {
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
            authorities: Authorities::default(),
            backoff: Backoff::default(),
            caches,
            expectations,
        }
    }

    /// The caches of the scope `job` is in.
    pub fn caches_of(&self, job: &TrainingJob) -> Option<&Caches> {
        let ns = job.namespace();
        self.caches
            .iter()
            .find(|c| c.namespace.is_none() || c.namespace == ns)
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
        let tls = match self.authorities.for_job(&self.client, job).await {
            Ok(tls) => tls,
            Err(err) => {
                tracing::warn!(job = %job.name_any(), error = %crate::server_link::error_chain(&err), "no TLS credentials for the server");
                return ServerState::Unreachable(format!("no TLS credentials for the job's server: {err}"));
            }
        };
        match server_link::sync(&self.channels, endpoint, &tls, layout).await {
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

/// Coalesces the events of one change (a pod failing, its deletion, its replacement appearing)
/// into one pass, at the cost of this much latency.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Runs the controller until a shutdown signal: watches TrainingJobs in `namespaces` (all when
/// empty), the pods they own (a pod change wakes its job) and the nodes (a readiness change wakes
/// the jobs with pods there), keeping the pods and nodes in watch caches the passes read.
pub async fn run(client: Client, settings: Settings, namespaces: Vec<String>, metrics: Arc<Metrics>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let expectations = Arc::new(Expectations::default());
    let (caches, watches): (Vec<Caches>, Vec<_>) = scopes
        .into_iter()
        .map(|ns| caches::start(client.clone(), ns, expectations.clone()))
        .unzip();
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        caches.clone(),
        expectations,
    ));
    let controllers = caches.into_iter().zip(watches).map(|(cache, watches)| {
        let jobs: Api<TrainingJob> = match &cache.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        // Spec changes (a new generation) wake a job; its own status writes do not: the pass that
        // wrote them already acted, and waking again for each would double the passes.
        let (jobs_cache, jobs_writer) = reflector::store();
        let job_changes = watcher(jobs, watcher::Config::default())
            .default_backoff()
            .reflect(jobs_writer)
            .applied_objects()
            .predicate_filter(predicates::generation, Default::default());
        Controller::for_stream(job_changes, jobs_cache)
            .with_config(ControllerConfig::default().debounce(DEBOUNCE))
            .owns_stream(watches.pods)
            .watches_stream(watches.nodes, move |node: Node| cache.jobs_on(&node))
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
