//! The tonic services: each handler validates through [`Job`], then delivers what it returned
//! (assignments and released steps to subscribed workers, progress to watchers, checkpoints).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyk_proto::v1::{
    CheckpointRequest, CheckpointResponse, GradientRequest, GradientResponse, InitializeRequest,
    InitializeResponse, JoinRequest, JoinResponse, Progress, ProgressRequest, SetLayoutRequest,
    SetLayoutResponse, SubscribeRequest, TrainingSettings, WorkerEvent, control_server::Control,
    training_server::Training, worker_event::Event,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::job::Job;
use crate::store::CheckpointStore;

type EventSender = mpsc::Sender<Result<WorkerEvent, Status>>;

/// State shared by both services.
pub struct Shared {
    job: Mutex<Job>,
    subscribers: Mutex<HashMap<u32, EventSender>>,
    watchers: Mutex<Vec<mpsc::Sender<Result<Progress, Status>>>>,
    store: Option<CheckpointStore>,
}

impl Shared {
    pub fn new(job: Job, store: Option<CheckpointStore>) -> Arc<Self> {
        Arc::new(Self {
            job: Mutex::new(job),
            subscribers: Mutex::new(HashMap::new()),
            watchers: Mutex::new(Vec::new()),
            store,
        })
    }

    fn job(&self) -> std::sync::MutexGuard<'_, Job> {
        self.job.lock().expect("job lock poisoned")
    }

    /// Sends `event` to every subscribed worker; a worker whose stream is gone is forgotten.
    fn broadcast(&self, event: &WorkerEvent) {
        self.subscribers
            .lock()
            .expect("subscribers lock")
            .retain(|_, tx| match tx.try_send(Ok(event.clone())) {
                Ok(()) => true,
                // A full queue means the worker is far behind; it resynchronises from the newest
                // StepReady it gets, so dropping this one loses nothing.
                Err(mpsc::error::TrySendError::Full(_)) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }

    fn send_to(&self, worker: u32, event: WorkerEvent) {
        if let Some(tx) = self.subscribers.lock().expect("subscribers lock").get(&worker) {
            let _ = tx.try_send(Ok(event));
        }
    }

    fn publish_progress(&self) {
        let progress = self.job().progress();
        // A watcher that falls behind misses intermediate reports, never the stream.
        self.watchers.lock().expect("watchers lock").retain(|tx| {
            !matches!(
                tx.try_send(Ok(progress.clone())),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }

    /// Ends every worker and progress stream, so a graceful shutdown does not wait on them.
    pub fn close_streams(&self) {
        self.subscribers.lock().expect("subscribers lock").clear();
        self.watchers.lock().expect("watchers lock").clear();
    }

    /// Writes a checkpoint now (off the async threads); returns its step and path.
    pub async fn save_checkpoint(&self) -> Result<(u64, String), Status> {
        let store = self
            .store
            .clone()
            .ok_or_else(|| Status::failed_precondition("no checkpoint directory configured"))?;
        let ckpt = self
            .job()
            .checkpoint()
            .ok_or_else(|| Status::unavailable("parameters are not initialized yet"))?;
        let step = ckpt.step;
        let path = tokio::task::spawn_blocking(move || store.save(&ckpt))
            .await
            .map_err(|e| Status::internal(format!("checkpoint task failed: {e}")))?
            .map_err(|e| {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "checkpoint failed");
                Status::internal(e.to_string())
            })?;
        tracing::info!(step, path = %path.display(), "checkpoint written");
        Ok((step, path.display().to_string()))
    }
}

pub struct TrainingService(pub Arc<Shared>);
pub struct ControlService(pub Arc<Shared>);

type EventStream = Pin<Box<dyn Stream<Item = Result<WorkerEvent, Status>> + Send>>;
type ProgressStream = Pin<Box<dyn Stream<Item = Result<Progress, Status>> + Send>>;

#[tonic::async_trait]
impl Training for TrainingService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = req.into_inner();
        let mut job = self.0.job();
        let param_count = job.join(req.worker)?;
        let needs_init = param_count == 0;
        let s = job.settings();
        let settings = TrainingSettings {
            seed: s.seed,
            batch_size: s.batch_size,
            total_steps: s.total_steps,
            blocks: s.blocks,
        };
        tracing::info!(worker = req.worker, needs_init, "worker joined");
        Ok(Response::new(JoinResponse {
            needs_init,
            settings: Some(settings),
            param_count,
        }))
    }

    async fn initialize(
        &self,
        req: Request<InitializeRequest>,
    ) -> Result<Response<InitializeResponse>, Status> {
        let req = req.into_inner();
        let released = self
            .0
            .job()
            .initialize(req.worker, req.params.as_ref(), Instant::now())?;
        let accepted = released.is_some();
        if let Some(event) = released {
            tracing::info!(worker = req.worker, "parameters initialized");
            self.0.broadcast(&event);
            self.0.publish_progress();
        }
        Ok(Response::new(InitializeResponse { accepted }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Result<Response<EventStream>, Status> {
        let worker = req.into_inner().worker;
        let (tx, rx) = mpsc::channel(64);
        {
            let job = self.0.job();
            if let Some(assignment) = job.assignment(worker) {
                let _ = tx.try_send(Ok(WorkerEvent {
                    event: Some(Event::Assignment(assignment)),
                }));
            } else {
                return Err(crate::error::RequestError::NoLayout.into());
            }
            if let Some(event) = job.current_event() {
                let _ = tx.try_send(Ok(event));
            }
            // Registered under the job lock, so no released step falls between the snapshot
            // above and the registration.
            self.0
                .subscribers
                .lock()
                .expect("subscribers lock")
                .insert(worker, tx);
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn push_gradient(
        &self,
        req: Request<GradientRequest>,
    ) -> Result<Response<GradientResponse>, Status> {
        let req = req.into_inner();
        let (outcome, checkpoint_due) = {
            let mut job = self.0.job();
            let outcome = job.push(&req, Instant::now()).inspect_err(
                |e| tracing::debug!(worker = req.worker, step = req.step, error = %e, "gradient rejected"),
            )?;
            if let Some(event) = &outcome.released {
                // Delivered under the job lock so workers see steps in order.
                self.0.broadcast(event);
            }
            (outcome, job.checkpoint_due())
        };
        if outcome.released.is_some() {
            self.0.publish_progress();
            if checkpoint_due && self.0.store.is_some() {
                let shared = self.0.clone();
                tokio::spawn(async move {
                    let _ = shared.save_checkpoint().await;
                });
            }
        }
        Ok(Response::new(outcome.response))
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn set_layout(
        &self,
        req: Request<SetLayoutRequest>,
    ) -> Result<Response<SetLayoutResponse>, Status> {
        let wire = req
            .into_inner()
            .layout
            .ok_or_else(|| Status::invalid_argument("layout is missing"))?;
        let layout =
            anyk_proto::layout_from_wire(&wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let epoch = layout.epoch;
        let assignments = {
            let mut job = self.0.job();
            let assignments = job.set_layout(layout)?;
            for (worker, assignment) in assignments.iter().cloned() {
                self.0.send_to(
                    worker,
                    WorkerEvent {
                        event: Some(Event::Assignment(assignment)),
                    },
                );
            }
            assignments
        };
        tracing::info!(epoch, workers = assignments.len(), "layout installed");
        self.0.publish_progress();
        Ok(Response::new(SetLayoutResponse { epoch }))
    }

    async fn get_progress(&self, _: Request<ProgressRequest>) -> Result<Response<Progress>, Status> {
        Ok(Response::new(self.0.job().progress()))
    }

    type WatchProgressStream = ProgressStream;

    async fn watch_progress(&self, _: Request<ProgressRequest>) -> Result<Response<ProgressStream>, Status> {
        let (tx, rx) = mpsc::channel(1024);
        let _ = tx.try_send(Ok(self.0.job().progress()));
        self.0.watchers.lock().expect("watchers lock").push(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn checkpoint(
        &self,
        _: Request<CheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        let (step, path) = self.0.save_checkpoint().await?;
        Ok(Response::new(CheckpointResponse { step, path }))
    }
}
