//! The parameter server's state machine, free of gRPC plumbing: who joined, the layout, the
//! parameters and optimizer, and the collection of the current step's gradients. The service
//! layer locks it, calls one method per request, and delivers what the method returns.

mod agreement;
mod counters;
mod history;
mod holding;
mod late;
mod layouts;
mod model;
mod numerics;
mod prepared;
mod progress;
mod replicas;
#[cfg(test)]
mod tests;

use std::time::Instant;

use agreement::Agreement;
use anyk_core::Layout;
use anyk_core::aggregate::{Offer, OfferError};
use anyk_core::checkpoint::Checkpoint;
use anyk_core::job::JobIdentity;
use anyk_core::optimizer::Optimizer;
use anyk_core::part::Part;
use anyk_proto::v1::{Assignment, GradientRequest, GradientResponse, WorkerEvent};

use crate::error::RequestError;
use crate::settings::Settings;
use crate::tensor;
use counters::Counters;
use history::Recorder;
use late::LateBlocks;
pub use layouts::{MAX_BLOCK_COPIES, MAX_EPOCH_JUMP, MAX_FIRST_EPOCH, MAX_WORKERS};
use model::Model;
pub use model::Params;
pub use numerics::NonFinite;
pub use prepared::Prepared;

/// One training job as the server sees it.
pub struct Trainer {
    settings: Settings,
    layout: Option<Layout>,
    /// Absent until a worker sends the initial parameters (or a checkpoint is resumed): the
    /// parameters, optimizer, step counter and the step being collected exist together.
    model: Option<Model>,
    counters: Counters,
    /// Digests of the copies of the current and the previous step (docs/design.md, invariant 7).
    agreement: Agreement,
    /// The steps and layout changes so far, carried in checkpoints.
    history: Recorder,
    started: Instant,
    /// Set once a step would have made the parameters non-finite: that step was not applied,
    /// and no gradient is taken from then on (the job has failed; the operator reports it).
    failure: Option<Failure>,
}

/// A step that was not applied, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub step: u64,
    pub reason: NonFinite,
}

/// What a push changed beyond its own response.
#[derive(Debug)]
pub struct PushOutcome {
    pub response: GradientResponse,
    /// Set when this gradient completed the step: the event for every worker.
    pub released: Option<WorkerEvent>,
    /// Set when this gradient completed a step that failed the numeric checks: the job has
    /// failed (see [`Trainer::failure`]).
    pub failed: bool,
}

impl Trainer {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            layout: None,
            model: None,
            counters: Counters::default(),
            agreement: Agreement::default(),
            history: Recorder::new(Default::default()),
            started: Instant::now(),
            failure: None,
        }
    }

    /// A job resumed from a checkpoint: parameters, optimizer, step and layout as saved. A
    /// checkpoint without parameters (written before empty models were refused) resumes only
    /// the layout: the job asks its workers for initial parameters again.
    pub fn resume(settings: Settings, ckpt: Checkpoint, now: Instant) -> Self {
        let mut trainer = Self::new(settings);
        trainer.layout = ckpt.layout;
        trainer.history = Recorder::new(ckpt.history);
        if ckpt.params.is_empty() {
            tracing::warn!(
                step = ckpt.step,
                "checkpoint holds no parameters: asking for initial ones"
            );
            return trainer;
        }
        trainer.install(Model::new(ckpt.params, ckpt.optimizer, ckpt.step, ckpt.loss), now);
        trainer
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The model's parameter count (0 while it needs initial parameters).
    pub fn param_count(&self) -> usize {
        self.model.as_ref().map_or(0, |m| m.params.len())
    }

    /// Completed updates; workers compute step `step` on the current parameters.
    pub fn step(&self) -> u64 {
        self.model.as_ref().map_or(0, |m| m.step)
    }

    pub fn is_finished(&self) -> bool {
        self.model.as_ref().is_some_and(Model::is_finished)
    }

    /// The epoch of the current layout (0 without one).
    pub fn epoch(&self) -> u64 {
        self.layout.as_ref().map_or(0, |l| l.epoch)
    }

    /// The step that was not applied because it would have made the model non-finite.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Registers a worker; returns the job's parameter count (0 while it needs initial ones).
    /// A worker id that joins again (a replacement) starts with a clean agreement record.
    pub fn join(&mut self, worker: u32) -> Result<u64, RequestError> {
        layouts::member(self.layout.as_ref(), worker)?;
        self.counters.joined(worker);
        self.agreement.forget(worker);
        Ok(self.model.as_ref().map_or(0, |m| m.params.len() as u64))
    }

    /// First initial parameters win; every worker builds the same ones from the seed. Returns
    /// the first step's event when these parameters were taken, `None` when they were ignored.
    pub fn initialize(
        &mut self,
        worker: u32,
        params: Option<&anyk_proto::v1::Tensor>,
        now: Instant,
    ) -> Result<Option<WorkerEvent>, RequestError> {
        layouts::member(self.layout.as_ref(), worker)?;
        if self.model.is_some() {
            return Ok(None);
        }
        let len = params.ok_or(RequestError::MissingTensor)?.length;
        // An empty model would leave the job waiting for parameters for good.
        if len == 0 {
            return Err(RequestError::EmptyModel);
        }
        let values = tensor::decode(params, len as usize)?;
        let optimizer = Optimizer::new(self.settings.optimizer, values.len());
        let model = self.install(Model::new(values, optimizer, 0, f32::NAN), now);
        Ok(Some(model.event()))
    }

    /// Installs a newer layout (or re-installs the current one); returns each worker's
    /// assignment (docs/design.md, invariant 3: a layout is never replaced by an older epoch).
    pub fn set_layout(&mut self, layout: Layout) -> Result<Vec<(u32, Assignment)>, RequestError> {
        layouts::validate(&layout, self.settings.blocks, self.layout.as_ref())?;
        layouts::fence(&layout, self.layout.as_ref())?;
        let assignments = (0..layout.workers)
            .map(|w| (w, layouts::assignment(&layout, w)))
            .collect();
        self.record_layout(&layout);
        self.layout = Some(layout);
        Ok(assignments)
    }

    pub fn assignment(&self, worker: u32) -> Option<Assignment> {
        self.layout.as_ref().map(|l| layouts::assignment(l, worker))
    }

    /// What a worker that (re)subscribes needs: its assignment and the current event. Only a
    /// worker id of the layout subscribes, which bounds the subscribers to the layout's workers.
    pub fn snapshot(&self, worker: u32) -> Result<(Assignment, Option<WorkerEvent>), RequestError> {
        let layout = layouts::member(self.layout.as_ref(), worker)?;
        Ok((layouts::assignment(layout, worker), self.current_event()))
    }

    /// The event a (re)subscribing worker needs now: the step to compute, or the end.
    pub fn current_event(&self) -> Option<WorkerEvent> {
        self.model.as_ref().map(Model::event)
    }

    /// Validates, compares with the other holders' copies and offers one gradient; aggregates
    /// and releases the next step at first cover (in strict mode, of agreed gradients).
    pub fn push(&mut self, req: &GradientRequest, now: Instant) -> Result<PushOutcome, RequestError> {
        self.push_prepared(req, Prepared::new(req, self.settings.strict), now)
    }

    /// [`Trainer::push`] with the O(model) work (decoding, the digest) done beforehand, outside
    /// the job lock, so that concurrent pushes do it in parallel.
    pub fn push_prepared(
        &mut self,
        req: &GradientRequest,
        prepared: Prepared,
        now: Instant,
    ) -> Result<PushOutcome, RequestError> {
        let Prepared { values, digest } = prepared;
        let gradient = self.check_push(req, values)?;
        self.counters.received += req.blocks.len() as u64;
        let digest = match digest {
            None if self.settings.strict => Some(Prepared::digest(req)),
            digest => digest,
        };
        let verdict = digest.and_then(|digest| self.compare(req, digest));
        // `check_push` refused future steps: an older one, or any after the end, is late.
        if req.step != self.step() || self.is_finished() {
            self.counters.late_dropped += 1;
            return Ok(self.dropped(true));
        }
        let Some(digest) = digest.filter(|_| self.settings.strict) else {
            return self.offer(req, gradient, &[], now);
        };
        match self.confirm(req, gradient, digest, verdict.as_ref()) {
            Some(gradient) => {
                let agreeing = verdict.map(|v| v.agreeing).unwrap_or_default();
                self.offer(req, gradient, &agreeing, now)
            }
            None => Ok(self.dropped(false)),
        }
    }

    /// Offers a gradient to the open step, whose `confirmed_by` (strict mode) contributed too.
    fn offer(
        &mut self,
        req: &GradientRequest,
        gradient: Part,
        confirmed_by: &[u32],
        now: Instant,
    ) -> Result<PushOutcome, RequestError> {
        let Some(round) = self.model.as_mut().and_then(|m| m.round.as_mut()) else {
            return Err(RequestError::NotInitialized);
        };
        match round.aggregator.offer(&req.blocks, gradient)? {
            Offer::Redundant => {
                self.counters.redundant_dropped += 1;
                Ok(self.dropped(false))
            }
            Offer::Accepted { complete } => {
                let latency = round.accept(req, now);
                round.contributors.extend(confirmed_by);
                self.counters.accepted(req.worker, latency);
                self.agreement.accepted(req.step, &req.blocks);
                let released = if complete { self.release_step(now) } else { None };
                Ok(PushOutcome {
                    response: GradientResponse {
                        accepted: true,
                        step_done: released.is_some(),
                        covered: self.covered(),
                    },
                    released,
                    failed: complete && self.failure.is_some(),
                })
            }
        }
    }

    /// Everything needed to resume, once parameters exist, and the job it belongs to.
    /// After a failed step it is the last good step's state (the failed one was not applied).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let model = self.model.as_ref().filter(|m| !m.params.is_empty())?;
        let job = JobIdentity {
            config: self.settings.job_config(),
            units: self.layout.as_ref().map(|l| l.units.clone()).unwrap_or_default(),
            params: model.params.len() as u64,
        };
        Some(Checkpoint {
            job: Some(job),
            step: model.step,
            layout: self.layout.clone(),
            optimizer: model.optimizer.clone(),
            params: model.params.to_vec(),
            loss: model.loss,
            history: self.history().clone(),
        })
    }

    /// Whether a checkpoint is due after the step that just completed.
    pub fn checkpoint_due(&self) -> bool {
        let every = self.settings.checkpoint_every;
        self.is_finished() || (every > 0 && self.step().is_multiple_of(every))
    }

    /// Everything about a gradient that can be refused before it is offered, in the order the
    /// client is told: who sent it, for which epoch and step, which blocks, then the tensor.
    fn check_push(
        &self,
        req: &GradientRequest,
        values: Result<Part, RequestError>,
    ) -> Result<Part, RequestError> {
        let layout = layouts::member(self.layout.as_ref(), req.worker)?;
        let model = self.model.as_ref().ok_or(RequestError::NotInitialized)?;
        if let Some(failure) = &self.failure {
            return Err(RequestError::TrainingFailed(failure.clone()));
        }
        // docs/design.md, invariant 3: gradients of another epoch are refused.
        if req.epoch != layout.epoch {
            return Err(RequestError::WrongEpoch {
                got: req.epoch,
                current: layout.epoch,
            });
        }
        if req.step > model.step {
            return Err(RequestError::FutureStep {
                got: req.step,
                current: model.step,
            });
        }
        if req.blocks.is_empty() {
            return Err(RequestError::NoBlocks);
        }
        if let Some(&block) = req.blocks.iter().find(|&&b| !layout.holds(req.worker, b)) {
            return Err(RequestError::NotHolder {
                worker: req.worker,
                block,
                epoch: layout.epoch,
            });
        }
        // One node of the reduction tree, checked before the copy is compared with others.
        if let Some(round) = &model.round
            && !round.aggregator.is_node(&req.blocks)
        {
            return Err(OfferError::NotANode {
                blocks: req.blocks.clone(),
            }
            .into());
        }
        tensor::check_length(values?, model.params.len())
    }

    /// Applies the step just covered, records who was skipped, and opens the next one; `None`
    /// when it was not applied (it would have made the model non-finite: the job failed).
    fn release_step(&mut self, now: Instant) -> Option<WorkerEvent> {
        let model = self.model.as_mut()?;
        let done = match model.apply_round(self.settings.clip_norm) {
            Ok(done) => done?,
            Err(reason) => {
                tracing::error!(step = model.step, %reason, "step not applied: training failed");
                self.failure = Some(Failure {
                    step: model.step,
                    reason,
                });
                return None;
            }
        };
        self.counters.step_done(&done, self.layout.as_ref(), now);
        model.late = LateBlocks::assign(self.layout.as_ref(), self.counters.skipped_last_step());
        model.open_round(self.layout.as_ref(), &self.settings, true, now);
        self.agreement.release_before(model.step);
        let event = model.event();
        self.record_step(&done, now);
        Some(event)
    }

    /// Takes the job's first parameters (initial or resumed) and opens their first step, which
    /// is not timed: it also waits for workers to boot.
    fn install(&mut self, mut model: Model, now: Instant) -> &Model {
        model.open_round(self.layout.as_ref(), &self.settings, false, now);
        self.model.insert(model)
    }

    /// Blocks of the open step that already have a gradient.
    fn covered(&self) -> Vec<u32> {
        self.model
            .as_ref()
            .and_then(|m| m.round.as_ref())
            .map(|r| r.aggregator.covered())
            .unwrap_or_default()
    }

    fn dropped(&self, step_done: bool) -> PushOutcome {
        PushOutcome {
            response: GradientResponse {
                accepted: false,
                step_done,
                covered: self.covered(),
            },
            released: None,
            failed: false,
        }
    }
}
