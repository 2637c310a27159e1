//! A property test of the parameter server's state machine over random request sequences
//! (docs/design.md, invariants 1-3): random layouts, each step's gradients in a random arrival
//! order, as single blocks or pre-summed units from random holders, mixed with redundant copies,
//! late, stale-epoch, future-step and non-holder pushes and epoch bumps. It asserts that nothing
//! panics, that each refusal is the precise one, that a step is released exactly when every block
//! is covered and each accepted gradient covered a new block, and that the final parameters are
//! bit-identical to those of one gradient per block in block order from the primary holders.

// Test helpers: a failed unwrap is a failed case with its line.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Instant;

use anyk_core::Layout;
use anyk_core::ReductionTree;
use anyk_core::aggregate::node_sum;
use anyk_core::optimizer::OptimizerConfig;
use anyk_proto::v1::{GradientRequest, Tensor};
use anyk_server::error::RequestError;
use anyk_server::{Settings, Trainer};
use proptest::prelude::*;

const STEPS: u64 = 3;

/// What one arriving message is; resolved against the trainer's epoch and step when it arrives.
#[derive(Debug, Clone)]
enum Message {
    /// One block's gradient from its holder of rank `rank` (modulo its holder count).
    Block { block: u32, rank: usize },
    /// A whole reduction unit pre-summed, from a member that holds all of it.
    Unit { unit: usize, rank: usize },
    /// The previous step's gradient of a block: dropped as late.
    Late { block: u32 },
    /// The current step under the previous epoch: refused.
    Stale { block: u32 },
    /// The next step: refused.
    Future { block: u32 },
    /// A member that does not hold the block: refused.
    NotHolder { block: u32 },
    /// The same layout under the next epoch (an operator's push); later gradients use it.
    Bump,
}

/// The job: its layout and settings.
#[derive(Debug, Clone)]
struct Job {
    layout: Layout,
    params: usize,
    adam: bool,
}

fn job() -> impl Strategy<Value = Job> {
    (2u32..=6, 1u32..=8, 1usize..=4, any::<bool>())
        .prop_flat_map(|(n, m, params, adam)| {
            (2..=n).prop_flat_map(move |r| (Just((n, m, params, adam, r)), (n - r + 1)..=n))
        })
        .prop_map(|((n, m, params, adam, r), k)| Job {
            layout: anyk_core::plan(m, r, n, k).unwrap(),
            params,
            adam,
        })
}

/// Every step's messages: every block from some holder, some units pre-summed, and extras, in a
/// random order.
fn script(job: &Job) -> impl Strategy<Value = Vec<Vec<Message>>> + use<> {
    let units = job.layout.units.len();
    let blocks = job.layout.blocks;
    let ranks = prop::collection::vec(0usize..8, blocks as usize);
    let presum = prop::collection::vec(prop::option::weighted(0.4, 0usize..8), units);
    let extra = prop::collection::vec(message(blocks, units), 0..12);
    let step = (ranks, presum, extra).prop_map(|(ranks, presum, mut messages)| {
        let blocks = ranks
            .into_iter()
            .zip(0..)
            .map(|(rank, block)| Message::Block { block, rank });
        let units = presum
            .into_iter()
            .zip(0..)
            .filter_map(|(rank, unit)| Some(Message::Unit { unit, rank: rank? }));
        messages.extend(blocks.chain(units));
        messages
    });
    prop::collection::vec(step.prop_shuffle(), STEPS as usize)
}

fn message(blocks: u32, units: usize) -> impl Strategy<Value = Message> {
    prop_oneof![
        4 => (0..blocks, 0usize..8).prop_map(|(block, rank)| Message::Block { block, rank }),
        2 => (0..units, 0usize..8).prop_map(|(unit, rank)| Message::Unit { unit, rank }),
        1 => (0..blocks).prop_map(|block| Message::Late { block }),
        1 => (0..blocks).prop_map(|block| Message::Stale { block }),
        1 => (0..blocks).prop_map(|block| Message::Future { block }),
        1 => (0..blocks).prop_map(|block| Message::NotHolder { block }),
        1 => Just(Message::Bump),
    ]
}

/// The gradient every holder of `block` computes at `step` (invariant 7): values of mixed
/// magnitudes, so that summing them in another order would change bits.
fn grad(step: u64, block: u32, params: usize) -> Vec<f32> {
    (0..params as u64)
        .map(|i| {
            let h = (step * 1_000_003 + u64::from(block) * 7919 + i * 104_729)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mantissa = (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            mantissa * 10f32.powi((h % 7) as i32 - 3)
        })
        .collect()
}

/// A unit's gradient as a worker pre-sums it: along the job's reduction tree.
fn unit_grad(units: &[(u32, u32)], step: u64, (lo, hi): (u32, u32), params: usize) -> Vec<f32> {
    node_sum(&ReductionTree::new(units), lo, hi, |b| grad(step, b, params)).unwrap()
}

fn trainer(job: &Job) -> Trainer {
    let optimizer = if job.adam {
        OptimizerConfig::adam(0.01)
    } else {
        OptimizerConfig::sgd(0.5, 0.9)
    };
    let settings = Settings {
        total_steps: STEPS,
        optimizer,
        ..Settings::predictable(job.layout.blocks)
    };
    let mut t = Trainer::new(settings);
    t.set_layout(job.layout.clone()).unwrap();
    let initial: Vec<f32> = (0..job.params).map(|i| i as f32 * 0.25 - 0.5).collect();
    let taken = t.initialize(0, Some(&Tensor::from_f32(&initial)), Instant::now());
    assert!(taken.unwrap().is_some());
    t
}

fn request(t: &Trainer, worker: u32, step: u64, blocks: Vec<u32>, values: &[f32]) -> GradientRequest {
    GradientRequest {
        worker,
        step,
        epoch: t.progress().epoch,
        blocks,
        gradient: Some(Tensor::from_f32(values)),
        loss: 0.25,
    }
}

/// The final parameters of one gradient per block in block order from the primaries.
fn reference(job: &Job) -> Vec<f32> {
    let mut t = trainer(job);
    for step in 0..STEPS {
        for b in 0..job.layout.blocks {
            let holder = job.layout.holders[b as usize][0];
            let req = request(&t, holder, step, vec![b], &grad(step, b, job.params));
            t.push(&req, Instant::now()).unwrap();
        }
        assert_eq!(t.step(), step + 1);
    }
    params(&t)
}

fn params(t: &Trainer) -> Vec<f32> {
    t.checkpoint().unwrap().params
}

/// The trainer as the test tracks it: the blocks covered in the open step.
struct Run<'a> {
    job: &'a Job,
    t: Trainer,
    covered: BTreeSet<u32>,
}

impl Run<'_> {
    /// Delivers one message of step `step`'s script (the trainer may be past it); checks what it
    /// got.
    fn deliver(&mut self, step: u64, message: &Message) {
        let (layout, params) = (&self.job.layout, self.job.params);
        let holder = |block: u32, rank: usize| {
            let holders = &layout.holders[block as usize];
            holders[rank % holders.len()]
        };
        let req = match *message {
            Message::Block { block, rank } => request(
                &self.t,
                holder(block, rank),
                step,
                vec![block],
                &grad(step, block, params),
            ),
            Message::Unit { unit, rank } => {
                let (lo, hi) = layout.units[unit];
                let whole: Vec<u32> = layout
                    .members
                    .iter()
                    .copied()
                    .filter(|&w| (lo..hi).all(|b| layout.holds(w, b)))
                    .collect();
                let Some(&worker) = whole.get(rank % whole.len().max(1)) else {
                    return;
                };
                request(
                    &self.t,
                    worker,
                    step,
                    (lo..hi).collect(),
                    &unit_grad(&layout.units, step, (lo, hi), params),
                )
            }
            Message::Late { block } if step > 0 => request(
                &self.t,
                holder(block, 0),
                step - 1,
                vec![block],
                &grad(step - 1, block, params),
            ),
            Message::Late { .. } => return,
            Message::Stale { block } => {
                return self.refused(block, |req| req.epoch = req.epoch.wrapping_sub(1));
            }
            Message::Future { block } => return self.refused(block, |req| req.step += 1),
            Message::NotHolder { block } => {
                let Some(&outsider) = layout.members.iter().find(|&&w| !layout.holds(w, block)) else {
                    return;
                };
                return self.refused(block, |req| req.worker = outsider);
            }
            Message::Bump => {
                let bumped = Layout {
                    epoch: self.t.progress().epoch + 1,
                    ..layout.clone()
                };
                self.t.set_layout(bumped).unwrap();
                return;
            }
        };
        self.push(&req);
    }

    /// A push that must be taken or dropped, never refused.
    fn push(&mut self, req: &GradientRequest) {
        let step = self.t.step();
        let outcome = self.t.push(req, Instant::now()).unwrap();
        let response = &outcome.response;
        if req.step != step || self.t.is_finished() && outcome.released.is_none() {
            assert!(!response.accepted && response.step_done, "late: {response:?}");
            assert_eq!(self.t.step(), step);
            return;
        }
        let new = req.blocks.iter().any(|b| !self.covered.contains(b));
        assert_eq!(response.accepted, new, "taken exactly when it covers a new block");
        self.covered.extend(&req.blocks);
        let complete = self.covered.len() == self.job.layout.blocks as usize;
        assert_eq!(
            outcome.released.is_some(),
            complete,
            "released exactly at the first cover"
        );
        if complete {
            assert_eq!(self.t.step(), step + 1);
            self.covered.clear();
        } else {
            assert_eq!(self.t.step(), step);
            assert_eq!(response.covered, self.covered.iter().copied().collect::<Vec<_>>());
        }
    }

    /// A push of `block` at the current step, altered by `alter`, that must be refused precisely.
    fn refused(&mut self, block: u32, alter: impl Fn(&mut GradientRequest)) {
        let step = self.t.step();
        let holder = self.job.layout.holders[block as usize][0];
        let mut req = request(
            &self.t,
            holder,
            step,
            vec![block],
            &grad(step, block, self.job.params),
        );
        alter(&mut req);
        let err = self.t.push(&req, Instant::now()).unwrap_err();
        let precise = match (req.epoch != self.t.progress().epoch, req.step > step) {
            (true, _) => matches!(err, RequestError::WrongEpoch { .. }),
            (false, true) => matches!(err, RequestError::FutureStep { .. }),
            (false, false) => matches!(err, RequestError::NotHolder { .. }),
        };
        assert!(precise, "{req:?}: {err:?}");
        assert_eq!(self.t.step(), step);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_arrival_order_and_mix_of_parts_gives_the_same_bits(
        (job, script) in job().prop_flat_map(|job| (Just(job.clone()), script(&job)))
    ) {
        let mut run = Run { job: &job, t: trainer(&job), covered: BTreeSet::new() };
        for (step, messages) in (0..STEPS).zip(&script) {
            for message in messages {
                run.deliver(step, message);
            }
            prop_assert_eq!(run.t.step(), step + 1, "every block was sent: the step must be done");
        }
        prop_assert!(run.t.is_finished());
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        prop_assert_eq!(bits(params(&run.t)), bits(reference(&job)));
    }
}
