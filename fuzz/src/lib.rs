//! What the fuzz targets share: the server's request handlers as `server/src/service.rs` calls the
//! state machine (decode, convert, one `Trainer` method), and a [`Checked`] trainer that asserts
//! the state machine's invariants after every request:
//! - the step never decreases, and only a push that reports the release advances it, by one;
//! - a step is released only when every block is covered, and each accepted gradient covered at
//!   least one block that had none (docs/design.md, invariants 1 and 2);
//! - the epoch never decreases (invariant 3); an accepted layout's assignments are its holders'.

use std::collections::BTreeSet;
use std::time::Instant;

use anyk_core::Layout;
use anyk_proto::v1::{GradientRequest, InitializeRequest, SetLayoutRequest, Tensor};
use anyk_server::error::RequestError;
use anyk_server::trainer::PushOutcome;
use anyk_server::{Settings, Trainer};

/// Why a set_layout request was refused before or by the trainer.
#[derive(Debug)]
pub enum LayoutRefused {
    Missing,
    Wire,
    Trainer(RequestError),
}

/// The Control service's `set_layout` handler without the transport: the wire layout, converted
/// by `anyk_proto::layout_from_wire`, then `Trainer::set_layout`.
pub fn set_layout(trainer: &mut Trainer, req: &SetLayoutRequest) -> Result<Layout, LayoutRefused> {
    let wire = req.layout.as_ref().ok_or(LayoutRefused::Missing)?;
    let layout = anyk_proto::layout_from_wire(wire).map_err(|_| LayoutRefused::Wire)?;
    let assignments = trainer
        .set_layout(layout.clone())
        .map_err(LayoutRefused::Trainer)?;
    assert_eq!(
        assignments.len(),
        layout.workers as usize,
        "one assignment per worker id"
    );
    for (worker, assignment) in assignments {
        assert_eq!(assignment.epoch, layout.epoch);
        for &block in &assignment.blocks {
            assert!(
                layout.holds(worker, block),
                "w{worker} assigned b{block} it does not hold"
            );
        }
    }
    Ok(layout)
}

/// Predictable settings (SGD with learning rate 1, 100 steps) for a job of `blocks` blocks.
pub fn settings(blocks: u32, total_steps: u64, strict: bool) -> Settings {
    Settings {
        total_steps,
        strict,
        ..Settings::predictable(blocks)
    }
}

/// A gradient (or parameters) of `len` values derived from `seed`, all finite.
pub fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

/// A trainer with the invariants asserted around each request, and what they need: the blocks
/// covered in the open step (as the responses showed them) and the layout installed.
pub struct Checked {
    pub trainer: Trainer,
    pub layout: Option<Layout>,
    pub covered: BTreeSet<u32>,
    /// False after a refusal this harness cannot place (a check added later may refuse after the
    /// gradient was offered): `covered` is then taken from the next response.
    known: bool,
    blocks: u32,
}

impl Checked {
    pub fn new(settings: Settings) -> Self {
        let blocks = settings.blocks;
        Self {
            trainer: Trainer::new(settings),
            layout: None,
            covered: BTreeSet::new(),
            known: true,
            blocks,
        }
    }

    pub fn join(&mut self, worker: u32) {
        let step = self.trainer.step();
        let params = self.trainer.join(worker);
        let initialized = self.trainer.current_event().is_some();
        if let (Ok(params), false) = (params, initialized) {
            assert_eq!(params, 0, "no parameters yet");
        }
        assert_eq!(self.trainer.step(), step);
    }

    /// Initial parameters: taken once, never replaced.
    pub fn initialize(&mut self, req: &InitializeRequest) {
        let before = self.trainer.current_event();
        let step = self.trainer.step();
        match self
            .trainer
            .initialize(req.worker, req.params.as_ref(), Instant::now())
        {
            Ok(Some(event)) => {
                assert!(before.is_none(), "parameters replaced");
                assert_eq!(Some(event), self.trainer.current_event());
                assert_eq!(self.trainer.step(), 0);
                self.covered.clear();
                self.known = true;
            }
            Ok(None) => assert!(before.is_some(), "first parameters ignored"),
            Err(_) => assert_eq!(before, self.trainer.current_event(), "refused but changed"),
        }
        assert!(self.trainer.step() >= step);
    }

    /// A layout: the epoch never decreases; an accepted one is installed as sent.
    pub fn set_layout(&mut self, req: &SetLayoutRequest) -> bool {
        let (epoch, step) = (self.trainer.progress().epoch, self.trainer.step());
        let result = set_layout(&mut self.trainer, req);
        let now = self.trainer.progress().epoch;
        assert_eq!(self.trainer.step(), step, "a layout changed the step");
        match result {
            Ok(layout) => {
                assert!(
                    layout.epoch >= epoch,
                    "epoch went back from {epoch} to {}",
                    layout.epoch
                );
                assert_eq!(now, layout.epoch);
                self.layout = Some(layout);
                true
            }
            Err(_) => {
                assert_eq!(now, epoch, "a refused layout changed the epoch");
                false
            }
        }
    }

    /// A gradient: released exactly when the open step becomes covered.
    pub fn push(&mut self, req: &GradientRequest) -> Result<PushOutcome, RequestError> {
        let step = self.trainer.step();
        let result = self.trainer.push(req, Instant::now());
        let after = self.trainer.step();
        match &result {
            Ok(outcome) => self.check_outcome(req, outcome, step, after),
            Err(err) => {
                assert_eq!(after, step, "a refused gradient changed the step");
                self.known &= refused_before_offer(err);
            }
        }
        result
    }

    fn check_outcome(&mut self, req: &GradientRequest, outcome: &PushOutcome, step: u64, after: u64) {
        let response = &outcome.response;
        let strict = self.trainer.settings().strict;
        if outcome.released.is_some() {
            assert!(response.accepted && response.step_done);
            assert_eq!(after, step + 1, "a release advances the step by one");
            if self.known {
                assert!(
                    req.blocks.iter().any(|b| !self.covered.contains(b)),
                    "released by a gradient whose blocks were all covered"
                );
                let mut covered = self.covered.clone();
                covered.extend(&req.blocks);
                assert_eq!(
                    covered.len(),
                    self.blocks as usize,
                    "released with blocks missing"
                );
            }
            self.covered.clear();
            self.known = true;
            assert!(response.covered.is_empty(), "a new step starts uncovered");
            return;
        }
        assert_eq!(after, step, "the step changed without a release");
        if outcome.failed {
            // The step would have made the model non-finite: not applied, the trainer stops.
            let mut covered = self.covered.clone();
            covered.extend(&req.blocks);
            assert!(
                response.accepted,
                "a failed step is failed by the gradient that covered it"
            );
            assert_eq!(
                covered.len(),
                self.blocks as usize,
                "failed before every block was covered"
            );
            self.known = false;
            return;
        }
        let late = req.step != step || self.trainer.is_finished();
        if response.accepted {
            if self.known {
                assert!(
                    req.blocks.iter().any(|b| !self.covered.contains(b)),
                    "accepted a gradient whose blocks were all covered"
                );
            }
            self.covered.extend(&req.blocks);
        } else if !late && !strict && self.known {
            assert!(
                req.blocks.iter().all(|b| self.covered.contains(b)),
                "dropped a gradient with an uncovered block"
            );
        }
        if !late {
            let covered: BTreeSet<u32> = response.covered.iter().copied().collect();
            if self.known {
                assert_eq!(
                    covered, self.covered,
                    "coverage differs from the accepted gradients"
                );
            }
            assert!(
                covered.len() < self.blocks as usize,
                "every block covered, not released"
            );
            self.covered = covered;
            self.known = true;
        }
    }

    /// The current epoch, and the step being collected.
    pub fn position(&self) -> (u64, u64) {
        (self.trainer.progress().epoch, self.trainer.step())
    }
}

/// Refusals that `Trainer::push` makes before it offers the gradient (the open step unchanged).
fn refused_before_offer(err: &RequestError) -> bool {
    matches!(
        err,
        RequestError::UnknownWorker { .. }
            | RequestError::NoLayout
            | RequestError::NotInitialized
            | RequestError::WrongEpoch { .. }
            | RequestError::FutureStep { .. }
            | RequestError::NotHolder { .. }
            | RequestError::NoBlocks
            | RequestError::UnsupportedDtype(_)
            | RequestError::RaggedTensor { .. }
            | RequestError::WrongLength { .. }
            | RequestError::NotFinite { .. }
            | RequestError::MissingTensor
            | RequestError::Aggregate(_)
    )
}

/// A gradient request for `blocks` at the trainer's current step and epoch.
pub fn gradient(worker: u32, position: (u64, u64), blocks: &[u32], values: &[f32]) -> GradientRequest {
    GradientRequest {
        worker,
        step: position.1,
        epoch: position.0,
        blocks: blocks.to_vec(),
        gradient: Some(Tensor::from_f32(values)),
        loss: 0.5,
    }
}

/// Who sends what of unit lo..hi, among its `missing` blocks: the whole unit pre-summed by a
/// member that holds it all, where `presum`, it has more than one block and all are missing;
/// otherwise each missing block from its first holder. (A unit past the last block, in a layout
/// that should have been refused, is the server's to notice: no block is sent for that part.)
pub fn unit_parts(
    layout: &Layout,
    (lo, hi): (u32, u32),
    presum: bool,
    missing: impl Fn(u32) -> bool,
) -> Vec<(u32, Vec<u32>)> {
    let whole = (presum && hi - lo > 1 && (lo..hi).all(&missing))
        .then(|| {
            layout
                .members
                .iter()
                .copied()
                .find(|&w| (lo..hi).all(|b| layout.holds(w, b)))
        })
        .flatten();
    match whole {
        Some(worker) => vec![(worker, (lo..hi).collect())],
        None => (lo..hi.min(layout.blocks))
            .filter(|&b| missing(b))
            .map(|b| (layout.holders[b as usize][0], vec![b]))
            .collect(),
    }
}

impl Checked {
    /// Covers the open step with one gradient per block from its first holder, or per unit
    /// pre-summed where `presum` and one member holds the whole unit; the step must be released
    /// by the last of them and by no other.
    pub fn complete_step(&mut self, presum: bool) {
        let layout = self.layout.clone().expect("a layout is installed");
        let len = self.trainer.join(0).expect("worker 0 joins") as usize;
        let (step, mut released) = (self.trainer.step(), false);
        for &(lo, hi) in &layout.units {
            let parts = unit_parts(&layout, (lo, hi), presum, |_| true);
            for (worker, blocks) in parts {
                assert!(!released, "released before every block was covered");
                let req = gradient(worker, self.position(), &blocks, &values(len, lo));
                let outcome = self.push(&req).expect("a holder's gradient is taken");
                assert!(
                    outcome.response.accepted,
                    "a holder's gradient for an uncovered block was dropped"
                );
                released = outcome.released.is_some();
            }
        }
        assert!(released, "every block covered, step not released");
        assert_eq!(self.trainer.step(), step + 1);
    }
}

/// Writes `seeds` into the directory `$ANYK_FUZZ_SEEDS` names, when it is set (`hack/fuzz` sets
/// it to the corpus): valid requests to start from, made by the code they are for.
pub fn write_seeds(seeds: impl FnOnce() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os("ANYK_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("seed directory");
    for (i, seed) in seeds().into_iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("seed written");
    }
}

/// Layouts as the operator pushes them: planned (fractional, cyclic, uncoded), repaired, rebalanced.
pub fn seed_layouts() -> Vec<Layout> {
    let mut layouts: Vec<Layout> = [
        (6, 2, 4, 3),
        (6, 2, 3, 2),
        (24, 3, 8, 6),
        (5, 3, 6, 4),
        (1, 2, 2, 1),
    ]
    .into_iter()
    .filter_map(|(m, r, n, k)| anyk_core::plan(m, r, n, k).ok())
    .collect();
    layouts.extend(anyk_core::plan(6, 2, 3, 2).map(|l| anyk_core::uncoded(&l)));
    let base = layouts[0].clone();
    if let Ok((repaired, _)) = anyk_core::repair(&base, &[1]) {
        layouts.extend(anyk_core::rebalance(&repaired, &[1]).ok().map(|(l, _)| l));
        layouts.push(repaired);
    }
    layouts
}
