//! Gradients: what is refused, what is dropped, when a step is released, and that the result
//! never depends on arrival order (docs/design.md, invariant 2).

use std::time::Instant;

use anyk_core::aggregate::OfferError;

use super::sum_in_order;
use anyk_proto::v1::{DataType, GradientRequest, Tensor};

use super::{BLOCKS, complete_step, fractional, grad, push, ready, request, settings, step_params, tensor};
use crate::error::RequestError;
use crate::trainer::Trainer;

type Expect = fn(&RequestError) -> bool;

/// Gradients for step 0 of `fractional()` (block 0 is held by workers 0 and 1) that are wrong
/// in who sent them, for which epoch and step, or which blocks they name.
fn envelope_refusals() -> Vec<(&'static str, GradientRequest, Expect)> {
    let ok = grad(0);
    use RequestError as E;
    vec![
        ("unknown worker", request(17, 0, 1, &[0], &ok), |e| {
            matches!(
                e,
                E::UnknownWorker {
                    worker: 17,
                    workers: 4
                }
            )
        }),
        ("wrong epoch", request(0, 0, 0, &[0], &ok), |e| {
            matches!(e, E::WrongEpoch { got: 0, current: 1 })
        }),
        ("future step", request(0, 5, 1, &[0], &ok), |e| {
            matches!(e, E::FutureStep { got: 5, current: 0 })
        }),
        ("no blocks", request(0, 0, 1, &[], &ok), |e| {
            matches!(e, E::NoBlocks)
        }),
        ("not holder", request(2, 0, 1, &[0], &ok), |e| {
            matches!(
                e,
                E::NotHolder {
                    worker: 2,
                    block: 0,
                    epoch: 1
                }
            )
        }),
        ("block out of range", request(0, 0, 1, &[99], &ok), |e| {
            matches!(e, E::NotHolder { block: 99, .. })
        }),
        (
            "not a node of the reduction tree",
            request(0, 0, 1, &[1, 2], &ok),
            |e| matches!(e, E::Aggregate(OfferError::NotANode { .. })),
        ),
    ]
}

/// Gradients for step 0 whose tensor is wrong.
fn tensor_refusals() -> Vec<(&'static str, GradientRequest, Expect)> {
    let ok = grad(0);
    let mut nan = grad(0);
    nan[2] = f32::NAN;
    let mut inf = grad(0);
    inf[4] = f32::INFINITY;
    let with = |gradient: Option<Tensor>| GradientRequest {
        gradient,
        ..request(0, 0, 1, &[0], &ok)
    };
    let f64_tensor = Tensor {
        dtype: DataType::F64 as i32,
        ..tensor(&ok)
    };
    use RequestError as E;
    vec![
        ("wrong length", with(Some(tensor(&[1.0, 2.0]))), |e| {
            matches!(e, E::WrongLength { got: 2, want: 5 })
        }),
        (
            "NaN",
            with(Some(tensor(&nan))),
            |e| matches!(e, E::NotFinite { index: 2, value } if value.is_nan()),
        ),
        (
            "Inf",
            with(Some(tensor(&inf))),
            |e| matches!(e, E::NotFinite { index: 4, value } if value.is_infinite()),
        ),
        ("wrong dtype", with(Some(f64_tensor)), |e| {
            matches!(e, E::UnsupportedDtype(_))
        }),
        ("missing tensor", with(None), |e| matches!(e, E::MissingTensor)),
    ]
}

#[test]
fn refused_gradients_get_precise_errors_and_store_nothing() {
    let layout = fractional();
    let mut t = ready(&layout);
    for (name, req, expected) in envelope_refusals().into_iter().chain(tensor_refusals()) {
        let err = t.push(&req, Instant::now()).unwrap_err();
        assert!(expected(&err), "{name}: got {err:?}");
        assert!(t.covered().is_empty(), "{name}: a refused gradient was stored");
        assert_eq!(t.step(), 0, "{name}");
    }
    complete_step(&mut t, &layout);
}

#[test]
fn gradients_wait_for_a_layout_and_parameters() {
    let mut t = Trainer::new(settings());
    let req = request(0, 0, 1, &[0], &grad(0));
    assert!(matches!(
        t.push(&req, Instant::now()),
        Err(RequestError::NoLayout)
    ));
    t.set_layout(fractional()).unwrap();
    assert!(matches!(
        t.push(&req, Instant::now()),
        Err(RequestError::NotInitialized)
    ));
}

#[test]
fn a_gradient_for_a_block_already_covered_is_dropped_and_counted() {
    let layout = fractional();
    let mut t = ready(&layout);
    push(&mut t, layout.holders[0][0], 0, 0).unwrap();
    let dup = push(&mut t, layout.holders[0][1], 0, 0).unwrap();
    assert!(!dup.response.accepted && !dup.response.step_done);
    assert_eq!(dup.response.covered, vec![0]);
    assert!(dup.released.is_none());
    // A pre-summed unit whose blocks are all covered is redundant too.
    for b in 1..3 {
        push(&mut t, 1, 0, b).unwrap();
    }
    let unit = t.push(&request(0, 0, 1, &[0, 1, 2], &grad(0)), Instant::now());
    assert!(!unit.unwrap().response.accepted);
    assert_eq!(t.progress().redundant_gradients_dropped, 2);
    assert_eq!(t.progress().late_gradients_dropped, 0);
}

#[test]
fn a_gradient_for_a_finished_step_is_dropped_and_counted() {
    let layout = fractional();
    let mut t = ready(&layout);
    complete_step(&mut t, &layout);
    let late = push(&mut t, layout.holders[3][1], 0, 3).unwrap();
    assert!(!late.response.accepted && late.response.step_done);
    assert!(late.released.is_none());
    let p = t.progress();
    assert_eq!(
        (p.step, p.late_gradients_dropped, p.redundant_gradients_dropped),
        (1, 1, 0)
    );
    assert_eq!(p.gradients_received, BLOCKS as u64 + 1);
}

#[test]
fn the_step_is_released_exactly_at_first_cover() {
    let layout = fractional();
    let mut t = ready(&layout);
    // Worker 0 covers unit 0..3 and worker 2 unit 3..6: workers 1 and 3 are skipped.
    let senders = [0, 0, 0, 2, 2, 2];
    for b in 0..BLOCKS - 1 {
        let out = push(&mut t, senders[b as usize], 0, b).unwrap();
        assert!(out.response.accepted && !out.response.step_done, "block {b}");
        assert!(out.released.is_none(), "released before block {b} was the last");
        assert_eq!(out.response.covered, (0..=b).collect::<Vec<_>>());
        assert_eq!(t.step(), 0);
    }
    let last = push(&mut t, 2, 0, BLOCKS - 1).unwrap();
    assert!(last.response.accepted && last.response.step_done);
    assert!(last.response.covered.is_empty(), "the next step has nothing yet");
    let (step, _) = step_params(&last.released.unwrap());
    assert_eq!((step, t.step()), (1, 1));
    let p = t.progress();
    assert_eq!(p.skipped_last_step, vec![1, 3]);
    assert_eq!(p.stragglers_skipped, 2);
    assert_eq!(p.loss, 0.5);
    let accepted: Vec<(u32, u64, u64)> = p
        .workers
        .iter()
        .map(|w| (w.worker, w.gradients_accepted, w.steps_skipped))
        .collect();
    assert_eq!(accepted, vec![(0, 3, 0), (1, 0, 1), (2, 3, 0), (3, 0, 1)]);
}

/// Gradients whose f32 sum changes with the order of addition.
fn spiky(block: u32) -> Vec<f32> {
    let b = block as f32;
    // 1e8 + 5 + 5 is 1e8 + 16 in f32, but 5 + 5 + 1e8 is 1e8 + 8.
    let big_first = if block.is_multiple_of(3) { 1e8 } else { 5.0 };
    vec![
        big_first,
        0.1 * b + 1e-7,
        3f32.powi(block as i32) * 1e-3,
        -0.7 * b,
        1.0 / (b + 1.0),
    ]
}

/// Parameters after one step from zero under SGD with lr 1, summing blocks in `order`.
fn expected(order: [&[u32]; 2]) -> Vec<u32> {
    let units: Vec<Vec<f32>> = order
        .iter()
        .map(|unit| {
            let parts: Vec<Vec<f32>> = unit.iter().map(|&b| spiky(b)).collect();
            sum_in_order(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>())
        })
        .collect();
    let total = sum_in_order(&[&units[0], &units[1]]);
    total
        .iter()
        .map(|v| (0.0 - v / BLOCKS as f32).to_bits())
        .collect()
}

/// Every ordering of 0..n, in lexicographic order.
fn permutations(n: u32) -> Vec<Vec<u32>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut all = Vec::new();
    for first in 0..n {
        for rest in permutations(n - 1) {
            let mut p = vec![first];
            p.extend(rest.into_iter().map(|b| if b >= first { b + 1 } else { b }));
            all.push(p);
        }
    }
    all
}

fn bits_after(t: &Trainer) -> Vec<u32> {
    let (_, params) = step_params(&t.current_event().unwrap());
    params.into_iter().map(f32::to_bits).collect()
}

#[test]
fn the_result_is_bit_identical_whatever_the_arrival_order() {
    let layout = fractional();
    let want = expected([&[0, 1, 2], &[3, 4, 5]]);
    assert_ne!(
        want,
        expected([&[2, 1, 0], &[5, 4, 3]]),
        "the data must be order-sensitive"
    );
    for (i, order) in permutations(BLOCKS).into_iter().enumerate() {
        let mut t = ready(&layout);
        for (j, &b) in order.iter().enumerate() {
            // Alternate which copy answers, so senders vary with the order too.
            let holder = layout.holders[b as usize][(i + j) % 2];
            t.push(&request(holder, 0, 1, &[b], &spiky(b)), Instant::now())
                .unwrap();
        }
        assert_eq!(t.step(), 1, "order {order:?}");
        assert_eq!(bits_after(&t), want, "order {order:?}");
    }
}

#[test]
fn a_pre_summed_unit_gives_the_same_bits_as_its_blocks() {
    let layout = fractional();
    let want = expected([&[0, 1, 2], &[3, 4, 5]]);
    let mut t = ready(&layout);
    let unit: Vec<f32> = sum_in_order(&[&spiky(3), &spiky(4), &spiky(5)]);
    let out = t.push(&request(2, 0, 1, &[3, 4, 5], &unit), Instant::now());
    assert_eq!(out.unwrap().response.covered, vec![3, 4, 5]);
    for b in [2, 0, 1] {
        t.push(&request(1, 0, 1, &[b], &spiky(b)), Instant::now())
            .unwrap();
    }
    assert_eq!(t.step(), 1);
    assert_eq!(bits_after(&t), want);
}
