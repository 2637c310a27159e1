//! The worker's loop: join, learn the assignment, and for every released step compute the
//! gradients of its blocks in assignment order, streaming each as soon as it is ready. Blocks the
//! server already has are skipped, and the rest abandoned once the step is aggregated.

use anyk_proto::tls::Credentials;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyk_core::minibatch::minibatch;
use anyk_core::tensor_bytes;
use anyk_proto::transport::MAX_MESSAGE_BYTES;
use anyk_proto::v1::{
    Assignment, GradientRequest, GradientResponse, InitializeRequest, JoinRequest, JoinResponse, Tensor,
    TrainingSettings, WorkerEvent, training_client::TrainingClient, worker_event::Event,
};
use tch::Device;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod error;
mod events;

pub use error::RunError;
use events::subscribe;

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
    params: Vec<f32>,
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
        let params = model.flat_params()?;
        client
            .initialize(InitializeRequest {
                worker: config.worker,
                params: Some(Tensor::from_f32(&params)),
            })
            .await
            .map_err(|source| RunError::Refused {
                action: "initial parameters",
                source,
            })?;
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
        model.set_flat_params(&step.params)?;
        if worker.compute_step(&mut model, step.number, &mut events).await? {
            return Ok(worker.stats);
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
            Some(Event::Step(s)) => {
                let params = s.params.map(|t| tensor_bytes::from_bytes(&t.data)).transpose();
                let params = params.map_err(|_| RunError::StreamEnded)?.unwrap_or_default();
                self.pending = Some(Step {
                    number: s.step,
                    params,
                });
            }
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

    /// Computes and sends block gradients for `step` until the server has them all.
    /// Returns true when training is over.
    async fn compute_step(
        &mut self,
        model: &mut Model,
        step: u64,
        events: &mut Events,
    ) -> Result<bool, RunError> {
        let mut done: BTreeSet<u32> = BTreeSet::new();
        let mut covered: BTreeSet<u32> = BTreeSet::new();
        loop {
            if self.drain(events)? {
                return Ok(true);
            }
            if self.abandoned() {
                return Ok(false);
            }
            let Some(block) = self.next_block(&done, &covered) else {
                self.stats.steps += 1;
                return Ok(false);
            };
            done.insert(block);
            let started = Instant::now();
            let (mut gradient, loss) = self.block_gradient(model, step, block)?;
            self.config.corruption.apply(step, &mut gradient);
            let compute = started.elapsed();
            let delay = self.config.straggle.delay(compute, self.send_time);
            if !delay.is_zero() && self.wait_interruptibly(delay, events).await? {
                return Ok(true);
            }
            if self.abandoned() {
                return Ok(false);
            }
            match self.push(step, block, &gradient, loss, compute).await {
                Ok(response) => {
                    covered.extend(response.covered);
                    if response.step_done {
                        self.stats.steps += 1;
                        return Ok(false);
                    }
                }
                // The layout moved on; its assignment is on the way. Compute the block again
                // under the new epoch if this worker still holds it and nobody sent it. (Or
                // training failed on a non-finite step: nothing more comes, and the worker
                // waits, not crashing, until its supervisor ends the job.)
                Err(status) if status.code() == Code::FailedPrecondition => {
                    tracing::info!(%status, "gradient refused; waiting for the next event");
                    done.remove(&block);
                    if let Some(event) = events.recv().await
                        && self.apply(event?)?
                    {
                        return Ok(true);
                    }
                }
                Err(status) if status.code() == Code::PermissionDenied => {
                    tracing::debug!(%status, "block moved away");
                }
                Err(source) => {
                    return Err(RunError::Refused {
                        action: "a gradient",
                        source,
                    });
                }
            }
            self.stats.blocks_skipped = self.stats.blocks_skipped.max(covered.len() as u64);
        }
    }

    /// The first assigned block neither computed yet nor covered by others.
    fn next_block(&self, done: &BTreeSet<u32>, covered: &BTreeSet<u32>) -> Option<u32> {
        self.assignment
            .blocks
            .iter()
            .copied()
            .find(|b| !done.contains(b) && !covered.contains(b))
    }

    /// A newer step arrived: this one is abandoned (and counted).
    fn abandoned(&mut self) -> bool {
        let abandoned = self.pending.is_some();
        self.stats.steps_abandoned += u64::from(abandoned);
        abandoned
    }

    /// Sends one block's gradient, timing the round trip.
    async fn push(
        &mut self,
        step: u64,
        block: u32,
        gradient: &[f32],
        loss: f32,
        compute: Duration,
    ) -> Result<GradientResponse, Status> {
        let request = GradientRequest {
            worker: self.config.worker,
            step,
            epoch: self.assignment.epoch,
            blocks: vec![block],
            gradient: Some(Tensor::from_f32(gradient)),
            loss,
        };
        self.stats.gradients_sent += 1;
        let pushed = Instant::now();
        let result = self.client.push_gradient(request).await;
        let send = pushed.elapsed();
        // Exponential average, so one slow round trip does not dominate the straggle delay.
        self.send_time = (self.send_time * 3 + send) / 4;
        tracing::debug!(
            step,
            block,
            compute_us = compute.as_micros() as u64,
            send_us = send.as_micros() as u64,
            "block"
        );
        result.map(tonic::Response::into_inner)
    }

    fn block_gradient(
        &mut self,
        model: &mut Model,
        step: u64,
        block: u32,
    ) -> Result<(Vec<f32>, f32), RunError> {
        let samples = self.cache.get(block).expect("assigned blocks are loaded");
        let rows = minibatch(
            self.settings.seed,
            step,
            block,
            samples.len(),
            self.settings.batch_size as usize,
        );
        let (x, y) = samples.select(&rows);
        Ok(tokio::task::block_in_place(|| model.gradient(&x, &y))?)
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
