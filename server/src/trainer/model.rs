//! What exists once the job has parameters: the parameters themselves, the optimizer, the step
//! counter, and the step being collected.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyk_core::aggregate::StepAggregator;
use anyk_core::digest::param_sha256;
use anyk_core::optimizer::Optimizer;
use anyk_core::tensor_bytes;
use anyk_core::{Layout, ReductionTree};
use anyk_proto::v1::{Finished, GradientRequest, StepReady, Tensor, WorkerEvent, worker_event::Event};

use super::late::LateBlocks;
use super::numerics::{self, NonFinite};
use crate::settings::Settings;

pub(super) struct Model {
    /// Shared, so that a progress report can hash them outside the job lock.
    pub params: Arc<Params>,
    pub optimizer: Optimizer,
    /// Completed updates; workers compute step `step` on the current parameters.
    pub step: u64,
    /// Mean loss of the last aggregated step (NaN before the first).
    pub loss: f32,
    /// The step being collected; `None` once the last step is done.
    pub round: Option<Round>,
    /// Blocks whose first holder was late last step and who covers each (sent with the step).
    pub late: LateBlocks,
    /// The reduction tree of the units it was built for (they are fixed for the job's life, so
    /// it is built once, not every step).
    tree: Option<BuiltTree>,
}

/// A reduction tree and the units it was built for.
type BuiltTree = (Vec<(u32, u32)>, Arc<ReductionTree>);

/// The parameters of one step, their SHA-256 once someone asked for it, and their wire form
/// once a worker needed it.
#[derive(Default)]
pub struct Params {
    /// Shared with the wire form, which is a view of them, not a copy.
    values: Arc<Vec<f32>>,
    digest: OnceLock<String>,
    /// Made once per step and shared (`Bytes`) by every event that carries them: a worker
    /// subscribing or resubscribing gets the same buffer, not a copy of its own (at start, 8
    /// workers subscribing at once each held an encoded model).
    wire: OnceLock<Tensor>,
}

impl Params {
    fn new(values: Vec<f32>) -> Self {
        Self {
            values: Arc::new(values),
            digest: OnceLock::new(),
            wire: OnceLock::new(),
        }
    }

    /// The parameters as a wire tensor whose bytes are a view of the values (a cheap clone).
    pub fn wire(&self) -> Tensor {
        let wire = || Tensor::from_f32_bytes(tensor_bytes::shared_le_bytes(self.values.clone()));
        self.wire.get_or_init(wire).clone()
    }

    /// The values to update in place, or a copy while anyone (a digest or checkpoint being
    /// made, an event not yet sent to a slow worker) still reads them.
    fn into_values(self) -> Vec<f32> {
        let Self { values, wire, .. } = self;
        drop(wire);
        Arc::try_unwrap(values).unwrap_or_else(|shared| shared.as_ref().clone())
    }

    /// Computed once however many ask (at 16M parameters it takes 0.1-0.3 s).
    pub fn digest(&self) -> &str {
        self.digest.get_or_init(|| param_sha256(&self.values))
    }

    /// The digest if it was computed already.
    pub fn known_digest(&self) -> Option<&str> {
        self.digest.get().map(String::as_str)
    }
}

impl Deref for Params {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.values
    }
}

/// The step being collected.
pub(super) struct Round {
    /// docs/design.md, invariant 2: exactly one gradient per block, summed in the fixed
    /// reduction order whatever the arrival order.
    pub aggregator: StepAggregator,
    /// False for the first step after start or resume, which also waits for workers to boot.
    pub timed: bool,
    pub released: Instant,
    pub contributors: BTreeSet<u32>,
    losses: BTreeMap<u32, f32>,
}

impl Model {
    /// Parameters after `step` completed steps with `loss`; no step is open until
    /// [`Model::open_round`].
    pub fn new(params: Vec<f32>, optimizer: Optimizer, step: u64, loss: f32) -> Self {
        Self {
            params: Arc::new(Params::new(params)),
            optimizer,
            step,
            loss,
            round: None,
            late: LateBlocks::default(),
            tree: None,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.round.is_none()
    }

    /// Opens the collection of step `self.step` in the reduction units of `layout`, unless the
    /// job has done all its steps.
    pub fn open_round(&mut self, layout: Option<&Layout>, settings: &Settings, timed: bool, now: Instant) {
        let units = units(layout, settings.blocks);
        let tree = match &self.tree {
            Some((built_for, tree)) if *built_for == units => tree.clone(),
            _ => {
                let tree = Arc::new(ReductionTree::new(&units));
                self.tree = Some((units, tree.clone()));
                tree
            }
        };
        self.round = (self.step < settings.total_steps).then(|| Round {
            aggregator: StepAggregator::new(tree, self.params.len()).with_precision(settings.gradients),
            timed,
            released: now,
            contributors: BTreeSet::new(),
            losses: BTreeMap::new(),
        });
    }

    /// Applies the mean gradient of a complete round (clipped to `clip_norm` when set) and
    /// advances the step; returns the closed round, `Ok(None)` (changing nothing) while some
    /// block still lacks a gradient, or why the step would not be finite (the parameters and
    /// optimizer stay those of the last good step; the round's sum is gone, and the job has
    /// failed: the trainer takes no gradient after that).
    pub fn apply_round(&mut self, clip_norm: Option<f32>) -> Result<Option<Round>, NonFinite> {
        let Some(mut gradient) = self.round.as_mut().and_then(|r| r.aggregator.take_mean()) else {
            return Ok(None);
        };
        if let Some(max_norm) = clip_norm {
            numerics::clip(&mut gradient, max_norm);
        }
        numerics::check(&self.params, &self.optimizer, &gradient)?;
        let Some(round) = self.round.take() else {
            return Ok(None);
        };
        // In place unless someone still reads these values.
        let mut params = match Arc::try_unwrap(std::mem::take(&mut self.params)) {
            Ok(params) => params.into_values(),
            Err(shared) => shared.values.as_ref().clone(),
        };
        self.optimizer.apply(&mut params, &gradient);
        self.params = Arc::new(Params::new(params));
        self.loss = round.losses.values().sum::<f32>() / round.losses.len().max(1) as f32;
        self.step += 1;
        Ok(Some(round))
    }

    /// What workers do next: compute the current step, or stop.
    pub fn event(&self) -> WorkerEvent {
        let event = if self.is_finished() {
            Event::Finished(Finished {
                step: self.step,
                param_sha256: self.params.digest().to_string(),
            })
        } else {
            Event::Step(StepReady {
                step: self.step,
                params: Some(self.params.wire()),
                late_blocks: self.late.blocks.clone(),
                late_backups: self.late.backups.clone(),
                params_offset: 0,
                params_total: 0,
            })
        };
        WorkerEvent { event: Some(event) }
    }
}

impl Round {
    /// Records an accepted gradient's sender and loss; returns its latency since the release.
    pub fn accept(&mut self, req: &GradientRequest, now: Instant) -> Duration {
        self.contributors.insert(req.worker);
        for &b in &req.blocks {
            self.losses.insert(b, req.loss);
        }
        now - self.released
    }
}

/// The reduction units of the layout, or single blocks while there is none.
fn units(layout: Option<&Layout>, blocks: u32) -> Vec<(u32, u32)> {
    match layout {
        Some(l) => l.units.clone(),
        None => (0..blocks).map(|b| (b, b + 1)).collect(),
    }
}
