//! Aggregation with bf16 gradients: each unit rounded once, whoever sent it and in how many
//! parts, so arrival order and backups still change no bit.

use super::*;
use crate::precision::{self, bf16_le_from_f32_le};
use crate::tensor_bytes::to_bytes;

const UNITS: [(u32, u32); 3] = [(0, 3), (3, 6), (6, 8)];
const LEN: usize = 6;

fn grad(block: u32) -> Vec<f32> {
    // Values with bits below bf16's precision, so a missed or doubled rounding shows.
    (0..LEN)
        .map(|i| 0.1 + block as f32 * 0.0137 + i as f32 * 1.0e-5)
        .collect()
}

fn bf16_aggregator() -> StepAggregator {
    StepAggregator::new(Arc::new(ReductionTree::new(&UNITS)), LEN).with_precision(GradientPrecision::Bf16)
}

fn unit_sum(lo: u32, hi: u32) -> Vec<f32> {
    node_sum(&ReductionTree::new(&UNITS), lo, hi, grad).unwrap()
}

/// A unit's sum as its worker sends it: rounded, in two bytes per value.
fn unit_bf16(lo: u32, hi: u32) -> Part {
    Part::wire_bf16(bf16_le_from_f32_le(&to_bytes(&unit_sum(lo, hi))).into()).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The mean as defined: each unit's f32 sum rounded, the rounded units summed in the tree.
fn expected_mean() -> Vec<f32> {
    let rounded = |lo, hi| {
        let mut s = unit_sum(lo, hi);
        precision::round_in_place(&mut s);
        s
    };
    let (a, b, c) = (rounded(0, 3), rounded(3, 6), rounded(6, 8));
    // Tree over three units: (0..3) + ((3..6) + (6..8)).
    (0..LEN).map(|i| (a[i] + (b[i] + c[i])) / 8.0).collect()
}

#[test]
fn units_sent_whole_or_in_blocks_round_to_the_same_bits() {
    let mut whole = bf16_aggregator();
    for (lo, hi) in UNITS {
        whole
            .offer(&(lo..hi).collect::<Vec<_>>(), unit_bf16(lo, hi))
            .unwrap();
    }
    let mut blocks = bf16_aggregator();
    for b in [7, 2, 4, 0, 6, 5, 1, 3] {
        blocks.offer(&[b], grad(b)).unwrap();
    }
    let mut mixed = bf16_aggregator();
    mixed.offer(&[3, 4, 5], unit_bf16(3, 6)).unwrap();
    mixed.offer(&[1, 2], unit_sum(1, 3)).unwrap();
    mixed.offer(&[6, 7], unit_sum(6, 8)).unwrap();
    mixed.offer(&[0], grad(0)).unwrap();
    let want = bits(&expected_mean());
    assert_eq!(bits(&whole.take_mean().unwrap()), want);
    assert_eq!(bits(&blocks.take_mean().unwrap()), want);
    assert_eq!(bits(&mixed.take_mean().unwrap()), want);
    let mut f32_job = StepAggregator::new(Arc::new(ReductionTree::new(&UNITS)), LEN);
    for b in 0..8 {
        f32_job.offer(&[b], grad(b)).unwrap();
    }
    assert_ne!(bits(&f32_job.take_mean().unwrap()), want, "bf16 is not f32");
}

#[test]
fn parts_that_would_skip_or_misplace_the_rounding_are_refused() {
    let mut agg = bf16_aggregator();
    let above = agg.offer(&[3, 4, 5, 6, 7], unit_sum(3, 8));
    assert_eq!(above, Err(OfferError::AboveUnit { lo: 3, hi: 8 }));
    let piece = Part::wire_bf16(bf16_le_from_f32_le(&to_bytes(&unit_sum(1, 3))).into()).unwrap();
    assert_eq!(
        agg.offer(&[1, 2], piece),
        Err(OfferError::Bf16NotAUnit { lo: 1, hi: 3 })
    );
    let mut f32_job = StepAggregator::new(Arc::new(ReductionTree::new(&UNITS)), LEN);
    assert_eq!(
        f32_job.offer(&[0, 1, 2], unit_bf16(0, 3)),
        Err(OfferError::Bf16NotExpected)
    );
    assert!(
        OfferError::AboveUnit { lo: 3, hi: 8 }
            .to_string()
            .contains("blocks 3..8 span several reduction units")
    );
    assert_eq!(agg.held(), 0, "nothing refused was kept");
}
