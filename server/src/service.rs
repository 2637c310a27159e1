//! The tonic services: each handler validates through [`Trainer`], then delivers what it returned
//! (assignments and released steps to subscribed workers, progress to watchers, checkpoints).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use anyk_core::GradientPrecision;
use anyk_proto::v1::{
    DataType, GradientRequest, GradientResponse, InitializeRequest, InitializeResponse, JoinRequest,
    JoinResponse, Progress, SubscribeRequest, TrainingSettings, WorkerEvent, training_server::Training,
    worker_event::Event,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::admission::{Admission, MODEL_SIZED_IN_FLIGHT};
use crate::chunks;
use crate::error::chain;
use crate::identity::Guard;
use crate::message_limit::MessageLimit;
use crate::store::CheckpointStore;
use crate::trainer::{Prepared, Trainer};

mod control;

type EventSender = mpsc::Sender<Result<WorkerEvent, Status>>;

/// Events queued per subscriber; the last slot is kept for the status that closes it. Two
/// steps' parameters at the default largest message (256 MiB, 64 slices of
/// [`chunks::CHUNK_BYTES`]); queued slices share one buffer, so a full queue costs no copy.
const SUBSCRIBER_QUEUE: usize = 128;
/// Progress streams open at once (the operator and `anyk local` each hold one).
pub const MAX_WATCHERS: usize = 16;

/// The server's state behind both services: the trainer, and the streams it feeds.
pub struct ServerState {
    trainer: Mutex<Trainer>,
    /// At most one per worker id of the layout (`Trainer::snapshot` refuses other ids).
    subscribers: Mutex<HashMap<u32, EventSender>>,
    watchers: Mutex<Vec<mpsc::Sender<Result<Progress, Status>>>>,
    store: Option<CheckpointStore>,
    /// Held while a checkpoint is written, so only one is in flight; it holds the step, epoch
    /// and path of the last one written, which a caller that waited gets when nothing changed.
    checkpoints: tokio::sync::Mutex<Option<Written>>,
    /// Whose certificates are accepted; None: plaintext, every caller trusted (tests only).
    guard: Option<Guard>,
    /// The largest Training message, fitted to the model once it has parameters.
    message_limit: MessageLimit,
    /// Strict mode (fixed for the job), known without the lock.
    strict: bool,
    /// Which model-sized request is read next; told what the trainer holds after every change.
    admission: Arc<Admission>,
}

#[derive(Clone, PartialEq)]
struct Written {
    step: u64,
    epoch: u64,
    path: String,
}

impl ServerState {
    pub fn new(trainer: Trainer, store: Option<CheckpointStore>) -> Arc<Self> {
        Self::guarded(trainer, store, None)
    }

    /// A server that checks every caller's certificate with `guard` (mutual TLS).
    pub fn guarded(trainer: Trainer, store: Option<CheckpointStore>, guard: Option<Guard>) -> Arc<Self> {
        let message_limit = MessageLimit::new(usize::MAX);
        fit_limit(&message_limit, &trainer);
        let strict = trainer.settings().strict;
        Arc::new(Self {
            trainer: Mutex::new(trainer),
            subscribers: Mutex::new(HashMap::new()),
            watchers: Mutex::new(Vec::new()),
            store,
            checkpoints: tokio::sync::Mutex::new(None),
            guard,
            message_limit,
            strict,
            admission: Admission::new(MODEL_SIZED_IN_FLIGHT),
        })
    }

    /// The Training services' reading order (see [`crate::admission`]).
    pub fn admission(&self) -> Arc<Admission> {
        self.admission.clone()
    }

    /// Tells the admission what `trainer` holds now; callers hold the trainer lock.
    fn publish_holding(&self, trainer: &Trainer) {
        self.admission.publish(trainer.holding());
    }

    /// The Training services' message limit (see [`crate::message_limit`]).
    pub fn message_limit(&self) -> MessageLimit {
        self.message_limit.clone()
    }

    /// A Training call for `worker` (with mutual TLS: from that worker's certificate only).
    fn authorize_worker<T>(&self, request: &Request<T>, worker: u32) -> Result<(), Status> {
        self.guard.as_ref().map_or(Ok(()), |g| g.worker(request, worker))
    }

    /// A Control call (with mutual TLS: from the supervisor's certificate only).
    fn authorize_operator<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.guard.as_ref().map_or(Ok(()), |g| g.operator(request))
    }

    fn trainer(&self) -> MutexGuard<'_, Trainer> {
        lock(&self.trainer)
    }

    /// Sends `event` to every subscribed worker; a worker whose stream is gone, or that fell
    /// behind, is forgotten (see [`deliver`]). Callers hold the trainer lock, so every
    /// subscriber gets the events in the order the trainer made them.
    fn broadcast(&self, event: &WorkerEvent) {
        let parts = chunks::split(event, chunks::CHUNK_BYTES);
        lock(&self.subscribers).retain(|&worker, tx| parts.iter().all(|p| deliver(worker, tx, p.clone())));
    }

    fn send_to(&self, worker: u32, event: WorkerEvent) {
        let mut subscribers = lock(&self.subscribers);
        if let Some(tx) = subscribers.get(&worker)
            && !deliver(worker, tx, event)
        {
            subscribers.remove(&worker);
        }
    }

    /// The progress report, its parameter digest computed after the job lock is let go (it
    /// costs 0.1-0.3 s at 16M parameters; once per step, however many ask).
    fn progress(&self) -> Progress {
        self.progress_hashed(true)
    }

    /// With `hash` false the digest is left out unless already known: watchers get a report
    /// every step, and hashing the model every step costs more than the step's aggregation.
    fn progress_hashed(&self, hash: bool) -> Progress {
        let (mut progress, params) = self.trainer().progress_unhashed();
        if let Some(params) = params.filter(|_| hash || progress.finished) {
            progress.param_sha256 = params.digest().to_string();
        }
        progress
    }

    /// Sends watchers the progress; the parameter digest only once training is over.
    fn publish_progress(&self) {
        let progress = self.progress_hashed(false);
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

    /// Writes a checkpoint now (off the async threads); returns its step and path. One is
    /// written at a time: a caller waits for the one in flight, then gets it if the state has
    /// not changed since (same step and epoch), or writes a newer one.
    pub async fn save_checkpoint(&self) -> Result<(u64, String), Status> {
        let mut last = self.checkpoints.lock().await;
        self.write_checkpoint(&mut last).await
    }

    /// A periodic checkpoint, skipped while another is in flight (the next one, or the one on
    /// shutdown, covers its step; queueing one per step could outgrow a slow disk).
    async fn checkpoint_unless_busy(&self) {
        match self.checkpoints.try_lock() {
            Ok(mut last) => {
                let _ = self.write_checkpoint(&mut last).await;
            }
            Err(_) => tracing::debug!("periodic checkpoint skipped: one is being written"),
        }
    }

    async fn write_checkpoint(&self, last: &mut Option<Written>) -> Result<(u64, String), Status> {
        let store = self
            .store
            .clone()
            .ok_or_else(|| Status::failed_precondition("no checkpoint directory configured"))?;
        let ckpt = {
            let trainer = self.trainer();
            let now = (trainer.step(), trainer.epoch());
            if let Some(written) = last.as_ref().filter(|w| (w.step, w.epoch) == now) {
                return Ok((written.step, written.path.clone()));
            }
            trainer
                .checkpoint()
                .ok_or_else(|| Status::unavailable("parameters are not initialized yet"))?
        };
        let (step, epoch) = (ckpt.step, ckpt.layout.as_ref().map_or(0, |l| l.epoch));
        let path = tokio::task::spawn_blocking(move || store.save(&ckpt))
            .await
            .map_err(|e| Status::internal(format!("checkpoint task failed: {e}")))?
            .map_err(|e| {
                let error = chain(&e);
                tracing::error!(%error, "checkpoint failed");
                Status::internal(error)
            })?;
        tracing::info!(step, path = %path.display(), "checkpoint written");
        let path = path.display().to_string();
        *last = Some(Written {
            step,
            epoch,
            path: path.clone(),
        });
        Ok((step, path))
    }
}

/// Once the trainer has parameters, its Training messages are limited to the model's size.
fn fit_limit(limit: &MessageLimit, trainer: &Trainer) {
    if trainer.param_count() > 0 {
        limit.fit_model(trainer.param_count(), trainer.settings().blocks);
    }
}

pub struct TrainingService(pub Arc<ServerState>);
pub struct ControlService(pub Arc<ServerState>);

type EventStream = Pin<Box<dyn Stream<Item = Result<WorkerEvent, Status>> + Send>>;
type ProgressStream = Pin<Box<dyn Stream<Item = Result<Progress, Status>> + Send>>;

#[tonic::async_trait]
impl Training for TrainingService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.0.authorize_worker(&req, req.get_ref().worker)?;
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
            strict: s.strict,
            gradient_dtype: match s.gradients {
                GradientPrecision::F32 => DataType::F32,
                GradientPrecision::Bf16 => DataType::Bf16,
            } as i32,
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
        self.0.authorize_worker(&req, req.get_ref().worker)?;
        let req = req.into_inner();
        let accepted = {
            let mut trainer = self.0.trainer();
            let released = trainer.initialize(req.worker, req.params.as_ref(), Instant::now())?;
            // Delivered under the trainer lock, like every released step: step 0 cannot then
            // reach a worker after step 1.
            if let Some(event) = &released {
                self.0.broadcast(event);
                fit_limit(&self.0.message_limit, &trainer);
                self.0.publish_holding(&trainer);
            }
            released.is_some()
        };
        if accepted {
            tracing::info!(worker = req.worker, "parameters initialized");
            self.0.publish_progress();
        }
        Ok(Response::new(InitializeResponse { accepted }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Result<Response<EventStream>, Status> {
        self.0.authorize_worker(&req, req.get_ref().worker)?;
        let worker = req.into_inner().worker;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        {
            let trainer = self.0.trainer();
            let (assignment, current) = trainer.snapshot(worker)?;
            let _ = tx.try_send(Ok(WorkerEvent {
                event: Some(Event::Assignment(assignment)),
            }));
            for part in current.iter().flat_map(|e| chunks::split(e, chunks::CHUNK_BYTES)) {
                let _ = tx.try_send(Ok(part));
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
        self.0.authorize_worker(&req, req.get_ref().worker)?;
        let req = req.into_inner();
        // Decoding and hashing a large gradient happen here, before the lock, in parallel with
        // other pushes.
        let prepared = Prepared::new(&req, self.0.strict);
        let (outcome, checkpoint_due) = {
            let mut trainer = self.0.trainer();
            let outcome = trainer.push_prepared(&req, prepared, Instant::now()).inspect_err(
                |e| tracing::debug!(worker = req.worker, step = req.step, error = %e, "gradient rejected"),
            )?;
            if let Some(event) = &outcome.released {
                // Delivered under the trainer lock so workers see steps in order.
                self.0.broadcast(event);
            }
            self.0.publish_holding(&trainer);
            (outcome, trainer.checkpoint_due().then(|| trainer.is_finished()))
        };
        if outcome.failed {
            // The trainer logged why; watchers (the operator, `anyk local`) learn it now.
            self.0.publish_progress();
        }
        if outcome.released.is_some() {
            self.0.publish_progress();
            if let (Some(last), true) = (checkpoint_due, self.0.store.is_some()) {
                let state = self.0.clone();
                // The final step's checkpoint waits for one in flight instead of being skipped:
                // it is the job's result (the operator's export reads exactly that file).
                tokio::spawn(async move {
                    if last {
                        let _ = state.save_checkpoint().await;
                    } else {
                        state.checkpoint_unless_busy().await;
                    }
                });
            }
        }
        Ok(Response::new(outcome.response))
    }
}

/// Queues `event` for `worker`'s stream; false when the stream is gone or was just closed for
/// falling behind. The queue's last slot is kept for the status that closes a slow subscriber:
/// a worker never silently misses an assignment or a step; its stream ends with ABORTED and it
/// subscribes again, getting its current assignment and step (worker/src/run/, `subscribe`).
fn deliver(worker: u32, tx: &EventSender, event: WorkerEvent) -> bool {
    if tx.is_closed() {
        return false;
    }
    // Only this server sends, under the subscribers lock: the capacity can only grow between
    // the check and the send.
    if tx.capacity() > 1 {
        return tx.try_send(Ok(event)).is_ok();
    }
    tracing::warn!(
        worker,
        "subscriber fell behind: closing its stream so that it subscribes again"
    );
    let _ = tx.try_send(Err(Status::aborted(format!(
        "worker {worker} fell {} events behind: subscribe again for the current assignment and step",
        SUBSCRIBER_QUEUE - 1
    ))));
    false
}

/// Locks `mutex`, also after a panic elsewhere: no [`Trainer`] method panics on a request, and the
/// stream registries hold no invariant that a panic could break half-way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
