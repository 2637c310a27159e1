//! The state machine driven directly, without gRPC: joining and initial parameters here,
//! layouts in `layouts.rs`, gradients in `push.rs`, the end of a job and resuming in `resume.rs`,
//! replica agreement and strict mode in `agreement.rs`, refused input in `bounds.rs`, failed
//! and clipped steps in `numerics.rs`, the recorded history in `history.rs`, bf16 gradients in
//! `precision.rs`.

mod agreement;
mod bounds;
mod history;
mod layouts;
mod numerics;
mod precision;
mod push;
mod resume;

use std::time::Instant;

use anyk_core::{Layout, plan, tensor_bytes};
use anyk_proto::v1::{GradientRequest, Tensor, WorkerEvent, worker_event::Event};

use super::{PushOutcome, Trainer};
use crate::error::RequestError;
use crate::settings::Settings;

const PARAMS: usize = 5;
const BLOCKS: u32 = 6;

fn settings() -> Settings {
    Settings::predictable(BLOCKS)
}

/// Fractional repetition on 4 workers: blocks 0..3 on workers 0 and 1, 3..6 on 2 and 3; each
/// worker's unit is its primaries (0..2, 2..3, 3..5, 5..6).
fn fractional() -> Layout {
    plan(BLOCKS, 2, 4, 3).unwrap()
}

/// A left fold of equal-length vectors: the association of the reduction tree of `fractional`
/// within each 3-block group (((a + b) + c), its units being 0..2 | 2..3 and 3..5 | 5..6).
fn sum_in_order(parts: &[&[f32]]) -> Vec<f32> {
    let mut acc = parts[0].to_vec();
    for part in &parts[1..] {
        anyk_core::aggregate::add_into(&mut acc, part);
    }
    acc
}

fn tensor(values: &[f32]) -> Tensor {
    Tensor::from_f32(values)
}

fn grad(block: u32) -> Vec<f32> {
    (0..PARAMS)
        .map(|i| 0.1 * block as f32 + 0.01 * i as f32 + 0.003)
        .collect()
}

fn request(worker: u32, step: u64, epoch: u64, blocks: &[u32], values: &[f32]) -> GradientRequest {
    GradientRequest {
        worker,
        step,
        epoch,
        blocks: blocks.to_vec(),
        gradient: Some(tensor(values)),
        loss: 0.5,
    }
}

/// Pushes `grad(block)` for one block.
fn push(t: &mut Trainer, worker: u32, step: u64, block: u32) -> Result<PushOutcome, RequestError> {
    let epoch = t.progress().epoch;
    t.push(
        &request(worker, step, epoch, &[block], &grad(block)),
        Instant::now(),
    )
}

/// A trainer with `layout` installed and zero parameters.
fn ready_with(settings: Settings, layout: &Layout) -> Trainer {
    let mut t = Trainer::new(settings);
    t.set_layout(layout.clone()).unwrap();
    let first = t.initialize(0, Some(&tensor(&[0.0; PARAMS])), Instant::now());
    assert!(first.unwrap().is_some(), "initial parameters refused");
    t
}

fn ready(layout: &Layout) -> Trainer {
    ready_with(settings(), layout)
}

/// Pushes every block of the current step from its primary holder; returns the release.
fn complete_step(t: &mut Trainer, layout: &Layout) -> WorkerEvent {
    let step = t.step();
    let mut released = None;
    for b in 0..BLOCKS {
        released = push(t, layout.holders[b as usize][0], step, b).unwrap().released;
    }
    assert_eq!(t.step(), step + 1, "the step was not released");
    released.unwrap()
}

/// The parameters a StepReady event carries, with its step.
fn step_params(event: &WorkerEvent) -> (u64, Vec<f32>) {
    match &event.event {
        Some(Event::Step(ready)) => {
            let data = &ready.params.as_ref().unwrap().data;
            (ready.step, tensor_bytes::from_bytes(data).unwrap())
        }
        other => panic!("not a step: {other:?}"),
    }
}

#[test]
fn joining_needs_a_layout_and_a_known_worker() {
    let mut t = Trainer::new(settings());
    assert!(matches!(t.join(0), Err(RequestError::NoLayout)));
    t.set_layout(fractional()).unwrap();
    assert!(matches!(
        t.join(17),
        Err(RequestError::UnknownWorker {
            worker: 17,
            workers: 4
        })
    ));
    assert_eq!(
        t.join(0).unwrap(),
        0,
        "no parameters yet: the worker must initialize"
    );
    t.initialize(0, Some(&tensor(&[0.0; PARAMS])), Instant::now())
        .unwrap();
    assert_eq!(t.join(3).unwrap(), PARAMS as u64);
    let joins: Vec<(u32, u64)> = t.progress().workers.iter().map(|w| (w.worker, w.joins)).collect();
    assert_eq!(joins, vec![(0, 1), (3, 1)]);
}

#[test]
fn the_first_initial_parameters_win_and_later_ones_are_ignored() {
    let mut t = Trainer::new(settings());
    t.set_layout(fractional()).unwrap();
    let now = Instant::now();
    let first = t.initialize(1, Some(&tensor(&[1.0; PARAMS])), now).unwrap();
    assert_eq!(step_params(&first.unwrap()), (0, vec![1.0; PARAMS]));
    let later = t.initialize(2, Some(&tensor(&[2.0; PARAMS])), now).unwrap();
    assert!(later.is_none(), "a later initialization must be ignored");
    // Ignored even when malformed: the parameters already exist.
    assert!(t.initialize(3, None, now).unwrap().is_none());
    let current = t.current_event().unwrap();
    assert_eq!(step_params(&current), (0, vec![1.0; PARAMS]));
}

#[test]
fn initialization_is_refused_from_unknown_workers_and_with_bad_tensors() {
    let mut t = Trainer::new(settings());
    let now = Instant::now();
    let ones = tensor(&[1.0; PARAMS]);
    assert!(matches!(
        t.initialize(0, Some(&ones), now),
        Err(RequestError::NoLayout)
    ));
    t.set_layout(fractional()).unwrap();
    assert!(matches!(
        t.initialize(4, Some(&ones), now),
        Err(RequestError::UnknownWorker {
            worker: 4,
            workers: 4
        })
    ));
    assert!(matches!(
        t.initialize(0, None, now),
        Err(RequestError::MissingTensor)
    ));
    let nan = tensor(&[1.0, f32::NAN]);
    assert!(matches!(
        t.initialize(0, Some(&nan), now),
        Err(RequestError::NotFinite { index: 1, .. })
    ));
    assert!(
        t.current_event().is_none(),
        "a refused initialization must leave no parameters"
    );
    assert!(t.checkpoint().is_none());
    assert!(t.initialize(0, Some(&ones), now).unwrap().is_some());
}
