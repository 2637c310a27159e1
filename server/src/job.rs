//! The parameter server's state machine, free of gRPC plumbing: who joined, the layout, the
//! parameters and optimizer, and the collection of the current step's gradients. The service
//! layer locks it, calls one method per request, and delivers what the method returns.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyk_core::Layout;
use anyk_core::aggregate::{Offer, StepAggregator};
use anyk_core::checkpoint::Checkpoint;
use anyk_core::digest::param_sha256;
use anyk_core::optimizer::Optimizer;
use anyk_proto::v1::{
    Assignment, Finished, GradientRequest, GradientResponse, Progress, StepReady, WorkerEvent, WorkerStats,
    worker_event::Event,
};

use crate::error::RequestError;
use crate::settings::Settings;
use crate::tensor;

/// The step being collected.
struct Round {
    aggregator: StepAggregator,
    /// False for the first step after start or resume, which also waits for workers to boot.
    timed: bool,
    released: Instant,
    contributors: BTreeSet<u32>,
    losses: BTreeMap<u32, f32>,
}

#[derive(Default, Clone)]
struct WorkerCounters {
    joins: u64,
    accepted: u64,
    latency_total: Duration,
    skipped: u64,
}

#[derive(Default)]
struct Counters {
    stragglers_skipped: u64,
    late_dropped: u64,
    redundant_dropped: u64,
    received: u64,
    step_time_total: Duration,
    steps_timed: u64,
    skipped_last_step: Vec<u32>,
    workers: BTreeMap<u32, WorkerCounters>,
}

pub struct Job {
    settings: Settings,
    params: Option<Vec<f32>>,
    optimizer: Option<Optimizer>,
    /// Completed updates; workers compute step `step` on the current parameters.
    step: u64,
    loss: f32,
    layout: Option<Layout>,
    round: Option<Round>,
    counters: Counters,
    started: Instant,
    /// Whether a step was released since start; the first one is not timed.
    step_opened_before: bool,
}

/// What a push changed beyond its own response.
pub struct PushOutcome {
    pub response: GradientResponse,
    /// Set when this gradient completed the step: the event for every worker.
    pub released: Option<WorkerEvent>,
}

impl Job {
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            params: None,
            optimizer: None,
            step: 0,
            loss: f32::NAN,
            layout: None,
            round: None,
            counters: Counters::default(),
            started: Instant::now(),
            step_opened_before: false,
        }
    }

    /// A job resumed from a checkpoint: parameters, optimizer, step and layout as saved.
    pub fn resume(settings: Settings, ckpt: Checkpoint, now: Instant) -> Self {
        let mut job = Self::new(settings);
        job.step = ckpt.step;
        job.loss = ckpt.loss;
        job.layout = ckpt.layout;
        job.optimizer = Some(ckpt.optimizer);
        job.params = Some(ckpt.params);
        job.open_round(now);
        job
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn is_finished(&self) -> bool {
        self.params.is_some() && self.step >= self.settings.total_steps
    }

    /// Registers a worker; returns the job's parameter count (0 while it needs initial ones).
    pub fn join(&mut self, worker: u32) -> Result<u64, RequestError> {
        self.check_worker(worker)?;
        self.counters.workers.entry(worker).or_default().joins += 1;
        Ok(self.params.as_ref().map_or(0, |p| p.len() as u64))
    }

    /// First initial parameters win; every worker builds the same ones from the seed.
    pub fn initialize(
        &mut self,
        worker: u32,
        params: Option<&anyk_proto::v1::Tensor>,
        now: Instant,
    ) -> Result<Option<WorkerEvent>, RequestError> {
        self.check_worker(worker)?;
        if self.params.is_some() {
            return Ok(None);
        }
        let len = params.ok_or(RequestError::MissingTensor)?.length as usize;
        let values = tensor::decode(params, len)?;
        self.optimizer = Some(Optimizer::new(self.settings.optimizer, values.len()));
        self.params = Some(values);
        self.open_round(now);
        Ok(self.current_event())
    }

    /// Installs a newer layout (or re-installs the current one); returns each member's assignment.
    pub fn set_layout(&mut self, layout: Layout) -> Result<Vec<(u32, Assignment)>, RequestError> {
        self.check_layout(&layout)?;
        match &self.layout {
            Some(current) if layout.epoch < current.epoch => {
                return Err(RequestError::OlderLayout {
                    got: layout.epoch,
                    current: current.epoch,
                });
            }
            Some(current) if layout.epoch == current.epoch && &layout != current => {
                return Err(RequestError::EpochReused(layout.epoch));
            }
            _ => {}
        }
        self.layout = Some(layout);
        let layout = self.layout.as_ref().expect("just set");
        Ok((0..layout.workers).map(|w| (w, assignment(layout, w))).collect())
    }

    pub fn assignment(&self, worker: u32) -> Option<Assignment> {
        self.layout.as_ref().map(|l| assignment(l, worker))
    }

    /// The event a (re)subscribing worker needs now: the step to compute, or the end.
    pub fn current_event(&self) -> Option<WorkerEvent> {
        let params = self.params.as_ref()?;
        let event = if self.is_finished() {
            Event::Finished(Finished {
                step: self.step,
                param_sha256: param_sha256(params),
            })
        } else {
            Event::Step(StepReady {
                step: self.step,
                params: Some(tensor::encode(params)),
            })
        };
        Some(WorkerEvent { event: Some(event) })
    }

    /// Validates and offers one gradient; aggregates and releases the next step at first cover.
    pub fn push(&mut self, req: &GradientRequest, now: Instant) -> Result<PushOutcome, RequestError> {
        self.check_worker(req.worker)?;
        let layout = self.layout.as_ref().ok_or(RequestError::NoLayout)?;
        let params = self.params.as_ref().ok_or(RequestError::NotInitialized)?;
        if req.epoch != layout.epoch {
            return Err(RequestError::WrongEpoch {
                got: req.epoch,
                current: layout.epoch,
            });
        }
        if req.step > self.step {
            return Err(RequestError::FutureStep {
                got: req.step,
                current: self.step,
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
        let gradient = tensor::decode(req.gradient.as_ref(), params.len())?;
        self.counters.received += req.blocks.len() as u64;
        if req.step < self.step || self.is_finished() {
            self.counters.late_dropped += 1;
            return Ok(self.dropped(true));
        }
        let round = self.round.as_mut().expect("a round is open while training");
        match round.aggregator.offer(&req.blocks, gradient)? {
            Offer::Redundant => {
                self.counters.redundant_dropped += 1;
                Ok(self.dropped(false))
            }
            Offer::Accepted { complete } => {
                round.contributors.insert(req.worker);
                for &b in &req.blocks {
                    round.losses.insert(b, req.loss);
                }
                let stats = self.counters.workers.entry(req.worker).or_default();
                stats.accepted += 1;
                stats.latency_total += now - round.released;
                let released = complete.then(|| self.complete_step(now));
                let covered = self
                    .round
                    .as_ref()
                    .map(|r| r.aggregator.covered())
                    .unwrap_or_default();
                Ok(PushOutcome {
                    response: GradientResponse {
                        accepted: true,
                        step_done: complete,
                        covered,
                    },
                    released,
                })
            }
        }
    }

    pub fn progress(&self) -> Progress {
        let c = &self.counters;
        let elapsed = self.started.elapsed().as_secs_f64();
        let mean_step_ms = if c.steps_timed == 0 {
            0.0
        } else {
            c.step_time_total.as_secs_f64() * 1e3 / c.steps_timed as f64
        };
        Progress {
            step: self.step,
            total_steps: self.settings.total_steps,
            loss: self.loss,
            epoch: self.layout.as_ref().map_or(0, |l| l.epoch),
            steps_per_second: if elapsed > 0.0 {
                c.steps_timed as f64 / elapsed
            } else {
                0.0
            },
            mean_step_ms,
            skipped_last_step: c.skipped_last_step.clone(),
            stragglers_skipped: c.stragglers_skipped,
            late_gradients_dropped: c.late_dropped,
            gradients_received: c.received,
            finished: self.is_finished(),
            param_sha256: self.params.as_deref().map(param_sha256).unwrap_or_default(),
            workers: c
                .workers
                .iter()
                .map(|(&worker, w)| WorkerStats {
                    worker,
                    mean_latency_ms: if w.accepted == 0 {
                        0.0
                    } else {
                        w.latency_total.as_secs_f64() * 1e3 / w.accepted as f64
                    },
                    gradients_accepted: w.accepted,
                    steps_skipped: w.skipped,
                    joins: w.joins,
                })
                .collect(),
            redundant_gradients_dropped: c.redundant_dropped,
        }
    }

    pub fn checkpoint(&self) -> Option<Checkpoint> {
        Some(Checkpoint {
            step: self.step,
            layout: self.layout.clone(),
            optimizer: self.optimizer.clone()?,
            params: self.params.clone()?,
            loss: self.loss,
        })
    }

    /// Whether a checkpoint is due after the step that just completed.
    pub fn checkpoint_due(&self) -> bool {
        let every = self.settings.checkpoint_every;
        self.is_finished() || (every > 0 && self.step.is_multiple_of(every))
    }

    fn dropped(&self, step_done: bool) -> PushOutcome {
        let covered = self
            .round
            .as_ref()
            .map(|r| r.aggregator.covered())
            .unwrap_or_default();
        PushOutcome {
            response: GradientResponse {
                accepted: false,
                step_done,
                covered,
            },
            released: None,
        }
    }

    fn complete_step(&mut self, now: Instant) -> WorkerEvent {
        let round = self.round.take().expect("a round is open");
        let gradient = round.aggregator.reduce().expect("complete rounds reduce");
        let params = self.params.as_mut().expect("initialized");
        self.optimizer
            .as_mut()
            .expect("initialized")
            .apply(params, &gradient);
        self.loss = round.losses.values().sum::<f32>() / round.losses.len().max(1) as f32;
        self.step += 1;
        let skipped: Vec<u32> = self
            .layout
            .as_ref()
            .map(|l| {
                l.members
                    .iter()
                    .copied()
                    .filter(|w| !round.contributors.contains(w))
                    .collect()
            })
            .unwrap_or_default();
        for w in &skipped {
            self.counters.workers.entry(*w).or_default().skipped += 1;
        }
        self.counters.stragglers_skipped += skipped.len() as u64;
        self.counters.skipped_last_step = skipped;
        if round.timed {
            self.counters.step_time_total += now - round.released;
            self.counters.steps_timed += 1;
        }
        self.open_round(now);
        self.current_event().expect("initialized")
    }

    fn open_round(&mut self, now: Instant) {
        let Some(params) = &self.params else { return };
        let timed = self.step_opened_before;
        self.step_opened_before = true;
        let units = match &self.layout {
            Some(l) => l.units.clone(),
            None => (0..self.settings.blocks).map(|b| (b, b + 1)).collect(),
        };
        self.round = (!self.is_finished()).then(|| Round {
            aggregator: StepAggregator::new(units, params.len()),
            timed,
            released: now,
            contributors: BTreeSet::new(),
            losses: BTreeMap::new(),
        });
    }

    fn check_worker(&self, worker: u32) -> Result<(), RequestError> {
        let layout = self.layout.as_ref().ok_or(RequestError::NoLayout)?;
        if worker >= layout.workers {
            return Err(RequestError::UnknownWorker {
                worker,
                workers: layout.workers,
            });
        }
        Ok(())
    }

    fn check_layout(&self, layout: &Layout) -> Result<(), RequestError> {
        let invalid = |why: String| Err(RequestError::InvalidLayout(why));
        if layout.blocks != self.settings.blocks || layout.holders.len() != layout.blocks as usize {
            return invalid(format!(
                "it has {} blocks ({} holder lists), the job has {}",
                layout.blocks,
                layout.holders.len(),
                self.settings.blocks
            ));
        }
        for (b, hs) in layout.holders.iter().enumerate() {
            if hs.is_empty() {
                return invalid(format!("block {b} has no holder"));
            }
            if let Some(w) = hs.iter().find(|w| !layout.members.contains(w)) {
                return invalid(format!("block {b} is held by worker {w}, which is not a member"));
            }
            if hs.iter().collect::<BTreeSet<_>>().len() != hs.len() {
                return invalid(format!("block {b} has two copies on one worker"));
            }
        }
        if layout.members.iter().any(|&w| w >= layout.workers) {
            return invalid(format!("a member is outside 0..{}", layout.workers));
        }
        let tiles = layout.units.first().map(|u| u.0) == Some(0)
            && layout
                .units
                .windows(2)
                .all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1)
            && layout.units.last().map(|u| u.1) == Some(layout.blocks);
        if !tiles {
            return invalid("reduction units do not tile the blocks in order".into());
        }
        // Units fix the association of the sum for the life of the job (bit-identical results).
        if self
            .layout
            .as_ref()
            .is_some_and(|current| current.units != layout.units)
        {
            return invalid("reduction units cannot change during a job".into());
        }

        Ok(())
    }
}

fn assignment(layout: &Layout, worker: u32) -> Assignment {
    Assignment {
        epoch: layout.epoch,
        blocks: if layout.members.contains(&worker) {
            layout.queue(worker)
        } else {
            Vec::new()
        },
        unit_bounds: layout.units.iter().flat_map(|&(lo, hi)| [lo, hi]).collect(),
    }
}
