//! The worker's loop: join, learn the assignment, and for every released step compute the
//! gradients of its blocks in assignment order, streaming each as soon as it is ready. Blocks the
//! server already has are skipped, and the rest abandoned once the step is aggregated.

use anyk_proto::tls::Credentials;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyk_core::ReductionTree;
use anyk_proto::transport::MAX_MESSAGE_BYTES;
use anyk_proto::v1::{
    Assignment, InitializeRequest, JoinRequest, JoinResponse, Tensor, TrainingSettings, WorkerEvent,
    training_client::TrainingClient, worker_event::Event,
};
use tch::Device;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod error;
mod events;
mod pacing;
mod slices;
mod step;

pub use error::RunError;
use events::subscribe;
use pacing::Pacing;
use slices::Slices;
use step::StepEnd;

use crate::corrupt::Corruption;
use crate::data::BlockCache;
use crate::model::{Model, ModelSpec};
use crate::straggle::Straggle;

pub struct WorkerConfig {
    pub server: String,
    pub worker: u32,
    pub data: PathBuf,
    pub model: ModelSpec,
    pub device: Device,
    pub straggle: Straggle,
    /// Fault injection: wrong bits from a given step on.
    pub corruption: Corruption,
    /// Mutual TLS: this worker's certificate and the job's authority (None: plaintext).
    pub tls: Option<Credentials>,
}

/// What the worker did, for its exit log.
#[derive(Debug, Default)]
pub struct RunStats {
    pub steps: u64,
    pub gradients_sent: u64,
    pub blocks_skipped: u64,
    pub steps_abandoned: u64,
    pub final_sha256: String,
}

struct Step {
    number: u64,
    /// The parameters as wire bytes, copied once, straight into the model.
    params: tonic::codegen::Bytes,
    /// Blocks whose first holder was late last step that this worker covers at once.
    late: BTreeSet<u32>,
}

/// [`run`], joining again while the server is gone, for up to `window` at a time: a replaced
/// server pod (which resumes from its checkpoint) then costs the workers a rejoin, not a restart.
pub async fn run_rejoining(config: &WorkerConfig, window: Duration) -> Result<RunStats, RunError> {
    let mut gone_since: Option<Instant> = None;
    loop {
        let attempt = Instant::now();
        match run(config).await {
            Ok(stats) => return Ok(stats),
            Err(err) if err.server_gone() => {
                if attempt.elapsed() > Duration::from_secs(5) {
                    // That attempt got going: a new outage starts now.
                    gone_since = None;
                }
                let since = *gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= window {
                    return Err(err);
                }
                tracing::warn!(%err, "parameter server gone; joining again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

pub async fn run(config: &WorkerConfig) -> Result<RunStats, RunError> {
    let channel = anyk_proto::transport::secure_channel(&config.server, config.tls.as_ref())?;
    let mut client = TrainingClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let joined = join(&mut client, config.worker).await?;
    let settings = joined.settings.unwrap_or_default();
    let mut model = Model::build(&config.model, settings.seed, config.device)?;
    let param_count = model.param_count() as u64;
    if !joined.needs_init && joined.param_count != param_count {
        return Err(RunError::ModelMismatch {
            local: param_count,
            job: joined.param_count,
        });
    }
    if joined.needs_init {
        initialize(&mut client, config.worker, &model).await?;
    }
    let mut events = subscribe(&mut client, config.worker).await?;
    let mut worker = Worker {
        config,
        settings,
        client,
        cache: BlockCache::default(),
        assignment: Assignment::default(),
        pending: None,
        send_time: Duration::ZERO,
        stats: RunStats::default(),
        slices: Slices::new(config.worker),
        tree: None,
        pacing: Pacing::default(),
    };
    loop {
        // Wait for a step (or the end), applying assignments as they come.
        while worker.pending.is_none() {
            let event = events.recv().await.ok_or(RunError::StreamEnded)?;
            if worker.apply(event?)? {
                return Ok(worker.stats);
            }
        }
        let step = worker.pending.take().expect("checked above");
        model.set_params_from_bytes(&step.params)?;
        let began = Instant::now();
        worker.pacing.started(step.number, began);
        loop {
            match worker
                .compute_step(&mut model, step.number, &step.late, began, &mut events)
                .await?
            {
                StepEnd::Finished => return Ok(worker.stats),
                StepEnd::Redo => continue,
                StepEnd::Over => break,
            }
        }
    }
}

struct Worker<'a> {
    config: &'a WorkerConfig,
    settings: TrainingSettings,
    client: TrainingClient<Channel>,
    cache: BlockCache,
    assignment: Assignment,
    /// A released step not yet started (the newest one wins).
    pending: Option<Step>,
    /// Recent round-trip time of a gradient send.
    send_time: Duration,
    stats: RunStats,
    /// A step whose parameters are arriving in slices.
    slices: Slices,
    /// The reduction tree, and the unit bounds it was built for.
    tree: Option<(Vec<u32>, Arc<ReductionTree>)>,
    /// The step period seen, which backups wait beyond.
    pacing: Pacing,
}

type Events = mpsc::Receiver<Result<WorkerEvent, Status>>;

impl Worker<'_> {
    /// Applies one server event; true when training is over.
    fn apply(&mut self, event: WorkerEvent) -> Result<bool, RunError> {
        match event.event {
            Some(Event::Assignment(a)) => {
                let loaded = self
                    .cache
                    .ensure(&self.config.data, &a.blocks, self.config.device)?;
                tracing::info!(epoch = a.epoch, blocks = ?a.blocks, loaded, "assignment");
                self.assignment = a;
            }
            Some(Event::Step(s)) => self.pending = self.slices.add(s).or(self.pending.take()),
            Some(Event::Finished(f)) => {
                tracing::info!(step = f.step, sha256 = %f.param_sha256, "training finished");
                self.stats.final_sha256 = f.param_sha256;
                return Ok(true);
            }
            None => {}
        }
        Ok(false)
    }

    /// Applies every event already queued; true when training is over.
    fn drain(&mut self, events: &mut Events) -> Result<bool, RunError> {
        while let Ok(event) = events.try_recv() {
            if self.apply(event?)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A newer step arrived: this one is abandoned (and counted).
    fn abandoned(&mut self) -> bool {
        let abandoned = self.pending.is_some();
        self.stats.steps_abandoned += u64::from(abandoned);
        abandoned
    }

    /// Sleeps for `delay` unless an event arrives first; true when training is over.
    async fn wait_interruptibly(&mut self, delay: Duration, events: &mut Events) -> Result<bool, RunError> {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(false),
                event = events.recv() => {
                    let event = event.ok_or(RunError::StreamEnded)?;
                    if self.apply(event?)? {
                        return Ok(true);
                    }
                    if self.pending.is_some() {
                        return Ok(false);
                    }
                }
            }
        }
    }
}

/// Offers this worker's initial parameters (every worker builds the same from the seed).
async fn initialize(
    client: &mut TrainingClient<Channel>,
    worker: u32,
    model: &Model,
) -> Result<(), RunError> {
    let params = model.flat_params()?;
    client
        .initialize(InitializeRequest {
            worker,
            params: Some(Tensor::from_f32(&params)),
        })
        .await
        .map_err(|source| RunError::Refused {
            action: "initial parameters",
            source,
        })?;
    Ok(())
}

/// Joins, retrying while the server has no layout yet (the operator may not have pushed one).
async fn join(client: &mut TrainingClient<Channel>, worker: u32) -> Result<JoinResponse, RunError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match client.join(JoinRequest { worker }).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(status) if status.code() == Code::Unavailable => {
                tracing::info!(%status, "server not ready, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(source) => {
                return Err(RunError::Refused {
                    action: "the join",
                    source,
                });
            }
        }
    }
}
