//! Replica agreement (docs/design.md, invariant 7): digests of every copy, disagreements,
//! outvoted and faulty workers, and strict mode, whose result stays bit-identical to a
//! fault-free run (invariant 2).

use std::time::Instant;

use anyk_core::{Layout, plan};
use anyk_proto::v1::WorkerStats;

use super::{BLOCKS, PARAMS, PushOutcome, fractional, ready, ready_with, request, settings, step_params};
use crate::settings::Settings;
use crate::trainer::Trainer;

/// Cyclic on 5 workers with 3 copies of every block (single-block units).
fn cyclic() -> Layout {
    plan(BLOCKS, 3, 5, 3).unwrap()
}

fn strict() -> Settings {
    Settings {
        strict: true,
        ..settings()
    }
}

/// What every holder of `block` computes at `step`.
fn honest(step: u64, block: u32) -> Vec<f32> {
    (0..PARAMS)
        .map(|i| 0.1 * block as f32 + 0.01 * i as f32 + 0.001 * step as f32 + 0.003)
        .collect()
}

/// `values` with one bit flipped, as a bad core would send them. (The worker's `--corrupt-from`
/// flips the lowest bit; a higher one here survives the mean, so a non-strict run shows it.)
fn flipped(values: &[f32]) -> Vec<f32> {
    let mut out = values.to_vec();
    out[0] = f32::from_bits(out[0].to_bits() ^ (1 << 12));
    out
}

fn send(t: &mut Trainer, worker: u32, step: u64, block: u32, values: &[f32]) -> PushOutcome {
    let epoch = t.progress().epoch;
    let req = request(worker, step, epoch, &[block], values);
    t.push(&req, Instant::now()).unwrap()
}

fn stats(t: &Trainer, worker: u32) -> WorkerStats {
    let workers = t.progress().workers;
    workers
        .into_iter()
        .find(|w| w.worker == worker)
        .unwrap_or_default()
}

/// (disagreements, outvoted, faulty) of `worker`.
fn record(t: &Trainer, worker: u32) -> (u64, u64, bool) {
    let s = stats(t, worker);
    (s.disagreements, s.outvoted, s.faulty)
}

/// A block that `faulty` holds, with its two other holders.
fn block_of(layout: &Layout, faulty: u32, nth: usize) -> (u32, [u32; 2]) {
    let (b, holders) = layout
        .holders
        .iter()
        .enumerate()
        .filter(|(_, hs)| hs.contains(&faulty))
        .nth(nth)
        .unwrap();
    let others: Vec<u32> = holders.iter().copied().filter(|&w| w != faulty).collect();
    (b as u32, [others[0], others[1]])
}

/// The two other holders of a block send the honest gradient, `faulty` a flipped one.
fn outvote(t: &mut Trainer, layout: &Layout, faulty: u32, nth: usize) {
    let (b, [x, y]) = block_of(layout, faulty, nth);
    let step = t.step();
    send(t, x, step, b, &honest(step, b));
    send(t, y, step, b, &honest(step, b));
    send(t, faulty, step, b, &flipped(&honest(step, b)));
}

#[test]
fn a_differing_copy_is_a_disagreement_for_both_senders() {
    let layout = fractional();
    let mut t = ready(&layout);
    send(&mut t, 0, 0, 0, &honest(0, 0));
    send(&mut t, 1, 0, 0, &honest(0, 0));
    assert_eq!(t.progress().replica_disagreements, 0, "equal copies agree");
    send(&mut t, 2, 0, 3, &honest(0, 3));
    let out = send(&mut t, 3, 0, 3, &flipped(&honest(0, 3)));
    assert!(!out.response.accepted, "non-strict: the first copy stays");
    // Two copies, two holders: nobody can tell which is wrong, so nobody is outvoted.
    assert_eq!(record(&t, 2), (1, 0, false));
    assert_eq!(record(&t, 3), (1, 0, false));
    assert_eq!(record(&t, 0), (0, 0, false));
    assert_eq!(t.progress().replica_disagreements, 2);
    // A second copy from the same sender is not compared again.
    send(&mut t, 3, 0, 3, &flipped(&honest(0, 3)));
    assert_eq!(t.progress().replica_disagreements, 2);
}

#[test]
fn a_copy_against_two_agreeing_holders_is_outvoted() {
    let layout = cyclic();
    let mut t = ready(&layout);
    let (b, [x, y]) = block_of(&layout, 4, 0);
    outvote(&mut t, &layout, 4, 0);
    assert_eq!(record(&t, 4), (1, 1, false), "block {b}");
    // The agreeing holders' copies differ from the outvoted one's too, but they are not outvoted.
    assert_eq!(record(&t, x), (1, 0, false));
    assert_eq!(record(&t, y), (1, 0, false));
    assert_eq!(t.progress().replica_disagreements, 3);
}

#[test]
fn the_majority_outvotes_an_earlier_copy_too() {
    let layout = cyclic();
    let mut t = ready(&layout);
    let (b, [x, y]) = block_of(&layout, 1, 0);
    send(&mut t, 1, 0, b, &flipped(&honest(0, b)));
    send(&mut t, x, 0, b, &honest(0, b));
    assert_eq!((record(&t, 1), record(&t, x)), ((1, 0, false), (1, 0, false)));
    send(&mut t, y, 0, b, &honest(0, b));
    assert_eq!(record(&t, 1), (1, 1, false));
    assert_eq!(record(&t, y), (1, 0, false));
}

#[test]
fn a_worker_outvoted_often_enough_is_faulty_until_it_joins_again() {
    let layout = cyclic();
    let mut t = ready_with(
        Settings {
            faulty_after: 2,
            ..settings()
        },
        &layout,
    );
    t.join(4).unwrap();
    outvote(&mut t, &layout, 4, 0);
    assert!(!stats(&t, 4).faulty, "outvoted once, threshold 2");
    outvote(&mut t, &layout, 4, 1);
    assert_eq!(record(&t, 4), (2, 2, true));
    assert!(!stats(&t, 0).faulty && t.progress().workers.iter().filter(|w| w.faulty).count() == 1);
    // A replacement joins under the same id: a clean record, and its copies count anew.
    t.join(4).unwrap();
    assert_eq!(record(&t, 4), (0, 0, false));
    assert_eq!(stats(&t, 4).joins, 2);
    let (b, _) = block_of(&layout, 4, 0);
    send(&mut t, 4, 0, b, &flipped(&honest(0, b)));
    assert_eq!(record(&t, 4), (1, 1, false), "its new copy is compared again");
    assert_eq!(
        t.progress().replica_disagreements,
        7,
        "the job total is not reset"
    );
}

#[test]
fn late_copies_of_the_previous_step_are_compared_and_older_ones_are_not() {
    let layout = fractional();
    let mut t = ready(&layout);
    for b in 0..BLOCKS {
        send(&mut t, layout.holders[b as usize][0], 0, b, &honest(0, b));
    }
    assert_eq!(t.step(), 1);
    let late = send(&mut t, layout.holders[2][1], 0, 2, &flipped(&honest(0, 2)));
    assert!(!late.response.accepted && late.response.step_done);
    assert_eq!(record(&t, layout.holders[2][1]), (1, 0, false));
    assert_eq!(t.progress().late_gradients_dropped, 1);
    for b in 0..BLOCKS {
        send(&mut t, layout.holders[b as usize][0], 1, b, &honest(1, b));
    }
    assert_eq!(t.step(), 2);
    // Step 0 is two steps back: its digests are gone.
    send(&mut t, layout.holders[4][1], 0, 4, &flipped(&honest(0, 4)));
    assert_eq!(t.progress().replica_disagreements, 2);
    assert_eq!(t.progress().late_gradients_dropped, 2);
}

#[test]
fn strict_mode_accepts_a_block_once_two_holders_agree() {
    let layout = fractional();
    let mut t = ready_with(strict(), &layout);
    assert!(t.progress().strict);
    let first = send(&mut t, 0, 0, 1, &honest(0, 1));
    assert!(!first.response.accepted && !first.response.step_done);
    assert!(
        first.response.covered.is_empty(),
        "a pending block is not covered"
    );
    send(&mut t, 0, 0, 0, &honest(0, 0));
    let again = send(&mut t, 0, 0, 1, &honest(0, 1));
    assert!(!again.response.accepted, "its own second copy confirms nothing");
    let second = send(&mut t, 1, 0, 1, &honest(0, 1));
    assert!(second.response.accepted);
    assert_eq!(second.response.covered, vec![1]);
    let extra = send(&mut t, 1, 0, 1, &honest(0, 1));
    assert!(!extra.response.accepted);
    assert_eq!(t.progress().redundant_gradients_dropped, 1);
    // The rest of the step, every holder sending.
    for b in (0..BLOCKS).filter(|&b| b != 1) {
        for w in layout.holders[b as usize].clone() {
            send(&mut t, w, 0, b, &honest(0, b));
        }
    }
    assert_eq!(t.step(), 1);
}

#[test]
fn strict_mode_leaves_a_block_unaccepted_while_no_two_copies_agree() {
    let layout = fractional();
    let mut t = ready_with(strict(), &layout);
    send(&mut t, 2, 0, 4, &flipped(&honest(0, 4)));
    let out = send(&mut t, 3, 0, 4, &honest(0, 4));
    assert!(!out.response.accepted && out.response.covered.is_empty());
    assert_eq!((record(&t, 2), record(&t, 3)), ((1, 0, false), (1, 0, false)));
    for b in (0..BLOCKS).filter(|&b| b != 4) {
        for w in layout.holders[b as usize].clone() {
            send(&mut t, w, 0, b, &honest(0, b));
        }
    }
    assert_eq!(
        t.step(),
        0,
        "every holder sent block 4 and none agree: the step waits"
    );
    assert!(!t.covered().contains(&4));
}

#[test]
fn strict_mode_breaks_a_tie_with_a_third_copy() {
    let layout = cyclic();
    let mut t = ready_with(strict(), &layout);
    let (b, [x, y]) = block_of(&layout, 2, 0);
    send(&mut t, 2, 0, b, &flipped(&honest(0, b)));
    send(&mut t, x, 0, b, &honest(0, b));
    assert!(t.covered().is_empty(), "a tie accepts nothing");
    let third = send(&mut t, y, 0, b, &honest(0, b));
    assert!(third.response.accepted);
    assert_eq!(third.response.covered, vec![b]);
    assert_eq!(record(&t, 2), (1, 1, false));
}

/// Runs 3 steps of `layout`: each block's holders send in rank order, except that `faulty`
/// sends first, a flipped copy; every holder sends. Returns the parameters' bits.
fn run(settings: Settings, layout: &Layout, faulty: Option<u32>) -> Vec<u32> {
    let mut t = ready_with(settings, layout);
    for step in 0..3 {
        for b in (0..BLOCKS).rev() {
            let mut holders = layout.holders[b as usize].clone();
            holders.sort_by_key(|&w| Some(w) != faulty);
            for w in holders {
                let good = honest(step, b);
                let values = if Some(w) == faulty { flipped(&good) } else { good };
                send(&mut t, w, step, b, &values);
            }
        }
        assert_eq!(t.step(), step + 1, "step {step} was not released");
    }
    let (_, params) = step_params(&t.current_event().unwrap());
    params.into_iter().map(f32::to_bits).collect()
}

#[test]
fn strict_results_equal_the_fault_free_run_bit_for_bit() {
    let layout = cyclic();
    let fault_free = run(settings(), &layout, None);
    assert_eq!(run(strict(), &layout, None), fault_free, "strict without faults");
    for faulty in 0..5 {
        assert_eq!(
            run(strict(), &layout, Some(faulty)),
            fault_free,
            "strict, worker {faulty} faulty"
        );
    }
    // Non-strict mode takes the first copy: the faulty one, which changes the result.
    assert_ne!(run(settings(), &layout, Some(0)), fault_free);
}

#[test]
fn non_strict_results_do_not_change_with_the_agreement_check() {
    let layout = fractional();
    let mut t = ready(&layout);
    for b in 0..BLOCKS {
        let holders = &layout.holders[b as usize];
        send(&mut t, holders[0], 0, b, &honest(0, b));
        // A differing later copy is counted, never taken.
        send(&mut t, holders[1], 0, b, &flipped(&honest(0, b)));
    }
    let mut clean = ready(&layout);
    for b in 0..BLOCKS {
        send(&mut clean, layout.holders[b as usize][0], 0, b, &honest(0, b));
    }
    assert_eq!(t.current_event(), clean.current_event());
    assert_eq!(t.progress().replica_disagreements, 2 * BLOCKS as u64);
    assert!(!t.progress().strict);
}

#[test]
fn a_pre_summed_unit_is_compared_with_copies_of_the_same_unit() {
    let layout = fractional();
    let mut t = ready_with(strict(), &layout);
    let unit = super::sum_in_order(&[&honest(0, 3), &honest(0, 4), &honest(0, 5)]);
    let epoch = layout.epoch;
    let first = t.push(&request(2, 0, epoch, &[3, 4, 5], &unit), Instant::now());
    assert!(
        first.unwrap().response.covered.is_empty(),
        "pending until confirmed"
    );
    // A single block is another block set: it neither confirms nor contradicts the unit.
    send(&mut t, 3, 0, 3, &flipped(&honest(0, 3)));
    assert_eq!(t.progress().replica_disagreements, 0);
    let second = t.push(&request(3, 0, epoch, &[3, 4, 5], &unit), Instant::now());
    assert_eq!(second.unwrap().response.covered, vec![3, 4, 5]);
}
