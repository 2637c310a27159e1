//! The tonic services: each handler validates through [`Trainer`], then delivers what it returned
//! (assignments and released steps to subscribed workers, progress to watchers, checkpoints).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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

use crate::error::{RequestError, chain};
use crate::store::CheckpointStore;
use crate::trainer::Trainer;

type EventSender = mpsc::Sender<Result<WorkerEvent, Status>>;

/// The server's state behind both services: the trainer, and the streams it feeds.
pub struct ServerState {
    trainer: Mutex<Trainer>,
    subscribers: Mutex<HashMap<u32, EventSender>>,
    watchers: Mutex<Vec<mpsc::Sender<Result<Progress, Status>>>>,
    store: Option<CheckpointStore>,
}

impl ServerState {
    pub fn new(trainer: Trainer, store: Option<CheckpointStore>) -> Arc<Self> {
        Arc::new(Self {
            trainer: Mutex::new(trainer),
            subscribers: Mutex::new(HashMap::new()),
            watchers: Mutex::new(Vec::new()),
            store,
        })
    }

    fn trainer(&self) -> MutexGuard<'_, Trainer> {
        lock(&self.trainer)
    }

    /// Sends `event` to every subscribed worker; a worker whose stream is gone is forgotten.
    fn broadcast(&self, event: &WorkerEvent) {
        lock(&self.subscribers).retain(|_, tx| match tx.try_send(Ok(event.clone())) {
            Ok(()) => true,
            // A full queue means the worker is far behind; it resynchronises from the newest
            // StepReady it gets, so dropping this one loses nothing.
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    fn send_to(&self, worker: u32, event: WorkerEvent) {
        if let Some(tx) = lock(&self.subscribers).get(&worker) {
            let _ = tx.try_send(Ok(event));
        }
    }

    fn publish_progress(&self) {
        let progress = self.trainer().progress();
        // A watcher that falls behind misses intermediate reports, never the stream.
        lock(&self.watchers).retain(|tx| {
            !matches!(
                tx.try_send(Ok(progress.clone())),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        });
    }

    /// Ends every worker and progress stream, so a graceful shutdown does not wait on them.
    pub fn close_streams(&self) {
        lock(&self.subscribers).clear();
        lock(&self.watchers).clear();
    }

    /// Writes a checkpoint now (off the async threads); returns its step and path.
    pub async fn save_checkpoint(&self) -> Result<(u64, String), Status> {
        let store = self
            .store
            .clone()
            .ok_or_else(|| Status::failed_precondition("no checkpoint directory configured"))?;
        let ckpt = self
            .trainer()
            .checkpoint()
            .ok_or_else(|| Status::unavailable("parameters are not initialized yet"))?;
        let step = ckpt.step;
        let path = tokio::task::spawn_blocking(move || store.save(&ckpt))
            .await
            .map_err(|e| Status::internal(format!("checkpoint task failed: {e}")))?
            .map_err(|e| {
                let error = chain(&e);
                tracing::error!(%error, "checkpoint failed");
                Status::internal(error)
            })?;
        tracing::info!(step, path = %path.display(), "checkpoint written");
        Ok((step, path.display().to_string()))
    }
}

pub struct TrainingService(pub Arc<ServerState>);
pub struct ControlService(pub Arc<ServerState>);

type EventStream = Pin<Box<dyn Stream<Item = Result<WorkerEvent, Status>> + Send>>;
type ProgressStream = Pin<Box<dyn Stream<Item = Result<Progress, Status>> + Send>>;

#[tonic::async_trait]
impl Training for TrainingService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = req.into_inner();
        let mut trainer = self.0.trainer();
        let param_count = trainer.join(req.worker)?;
        let needs_init = param_count == 0;
        let s = trainer.settings();
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
            .trainer()
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
            let trainer = self.0.trainer();
            let assignment = trainer.assignment(worker).ok_or(RequestError::NoLayout)?;
            let _ = tx.try_send(Ok(WorkerEvent {
                event: Some(Event::Assignment(assignment)),
            }));
            if let Some(event) = trainer.current_event() {
                let _ = tx.try_send(Ok(event));
            }
            // Registered under the trainer lock, so no released step falls between the
            // snapshot above and the registration.
            lock(&self.0.subscribers).insert(worker, tx);
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn push_gradient(
        &self,
        req: Request<GradientRequest>,
    ) -> Result<Response<GradientResponse>, Status> {
        let req = req.into_inner();
        let (outcome, checkpoint_due) = {
            let mut trainer = self.0.trainer();
            let outcome = trainer.push(&req, Instant::now()).inspect_err(
                |e| tracing::debug!(worker = req.worker, step = req.step, error = %e, "gradient rejected"),
            )?;
            if let Some(event) = &outcome.released {
                // Delivered under the trainer lock so workers see steps in order.
                self.0.broadcast(event);
            }
            (outcome, trainer.checkpoint_due())
        };
        if outcome.released.is_some() {
            self.0.publish_progress();
            if checkpoint_due && self.0.store.is_some() {
                let state = self.0.clone();
                tokio::spawn(async move {
                    let _ = state.save_checkpoint().await;
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
            let mut trainer = self.0.trainer();
            let assignments = trainer.set_layout(layout)?;
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
        Ok(Response::new(self.0.trainer().progress()))
    }

    type WatchProgressStream = ProgressStream;

    async fn watch_progress(&self, _: Request<ProgressRequest>) -> Result<Response<ProgressStream>, Status> {
        let (tx, rx) = mpsc::channel(1024);
        let _ = tx.try_send(Ok(self.0.trainer().progress()));
        lock(&self.0.watchers).push(tx);
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

/// Locks `mutex`, also after a panic elsewhere: no [`Trainer`] method panics on a request, and the
/// stream registries hold no invariant that a panic could break half-way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
