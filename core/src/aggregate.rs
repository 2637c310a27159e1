//! Exact aggregation of one step (docs/design.md, invariant 2): the target gradient uses exactly
//! one gradient per block, reduced in the association of the job's reduction tree
//! ([`crate::reduction`]), never in arrival order. Which replica answered first, and whether it
//! sent single blocks or a subtree's sum, cannot change a single bit.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::part::Part;
use crate::precision::GradientPrecision;
use crate::reduction::{NodeId, ReductionTree};

/// What happened to one offered gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Taken; `complete` tells whether every block of the step now has a gradient.
    Accepted { complete: bool },
    /// Every offered block already had a gradient this step; dropped.
    Redundant,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("block {block} is out of range (the job has {blocks} blocks)")]
    BlockOutOfRange { block: u32, blocks: u32 },
    #[error(
        "blocks {blocks:?} are not one node of the job's reduction tree (one block, a unit, or a part of one)"
    )]
    NotANode { blocks: Vec<u32> },
    #[error("gradient has {got} values, the model has {want} parameters")]
    WrongLength { got: usize, want: usize },
    #[error(
        "blocks {lo}..{hi} span several reduction units: with bf16 gradients each unit is rounded on its own, so a part is at most one unit"
    )]
    AboveUnit { lo: u32, hi: u32 },
    #[error(
        "a bf16 gradient for blocks {lo}..{hi}, which are not one reduction unit (only whole units are rounded to bf16)"
    )]
    Bf16NotAUnit { lo: u32, hi: u32 },
    #[error("a bf16 gradient in a job whose gradients are f32")]
    Bf16NotExpected,
}

/// Collects one step's gradients as sums of reduction-tree nodes, combining a node with its
/// sibling as soon as both are there: it holds a few partial sums, never one per block.
#[derive(Debug, Clone)]
pub struct StepAggregator {
    tree: Arc<ReductionTree>,
    blocks: u32,
    params: usize,
    /// In bf16, every unit's sum is rounded once it is complete ([`crate::precision`]).
    precision: GradientPrecision,
    /// The nodes whose sums are here, none inside another; a node that arrived and has not met
    /// its sibling yet is still the bytes it arrived in.
    present: BTreeMap<NodeId, Part>,
}

impl StepAggregator {
    pub fn new(tree: Arc<ReductionTree>, params: usize) -> Self {
        let blocks = tree.root().map_or(0, |r| tree.range(r).1);
        Self {
            tree,
            blocks,
            params,
            precision: GradientPrecision::F32,
            present: BTreeMap::new(),
        }
    }

    /// The same aggregator for gradients of `precision`.
    pub fn with_precision(self, precision: GradientPrecision) -> Self {
        Self { precision, ..self }
    }

    /// Whether `block` already has a gradient (its own, or within a node's sum).
    pub fn is_covered(&self, block: u32) -> bool {
        self.present.keys().any(|&n| {
            let (lo, hi) = self.tree.range(n);
            (lo..hi).contains(&block)
        })
    }

    /// Blocks that have a gradient, in id order.
    pub fn covered(&self) -> Vec<u32> {
        self.present().into_iter().flat_map(|(lo, hi)| lo..hi).collect()
    }

    pub fn is_complete(&self) -> bool {
        self.tree.root().is_some_and(|r| self.present.contains_key(&r))
    }

    /// The tree it combines parts in.
    pub fn tree(&self) -> &Arc<ReductionTree> {
        &self.tree
    }

    /// The block ranges of the parts here, in id order.
    pub fn present(&self) -> Vec<(u32, u32)> {
        let mut ranges: Vec<(u32, u32)> = self.present.keys().map(|&n| self.tree.range(n)).collect();
        ranges.sort_unstable();
        ranges
    }

    /// Partial sums held now (what bounds the aggregator's memory).
    pub fn held(&self) -> usize {
        self.present.len()
    }

    /// Offers the summed gradient of `blocks`: consecutive ids that are one node of the tree
    /// (a single block is a leaf). A node inside one already here is redundant; nodes inside
    /// this one are replaced by it (its sum has their bits combined in the same association).
    pub fn offer(&mut self, blocks: &[u32], gradient: impl Into<Part>) -> Result<Offer, OfferError> {
        let gradient = gradient.into();
        if gradient.len() != self.params {
            return Err(OfferError::WrongLength {
                got: gradient.len(),
                want: self.params,
            });
        }
        if let Some(&block) = blocks.iter().find(|&&b| b >= self.blocks) {
            return Err(OfferError::BlockOutOfRange {
                block,
                blocks: self.blocks,
            });
        }
        let node = self.node_of(blocks).ok_or_else(|| OfferError::NotANode {
            blocks: blocks.to_vec(),
        })?;
        self.check_precision(node, &gradient)?;
        if self.present.keys().any(|&p| self.tree.contains(p, node)) {
            return Ok(Offer::Redundant);
        }
        let tree = &self.tree;
        self.present.retain(|&p, _| !tree.contains(node, p));
        self.insert(node, gradient);
        Ok(Offer::Accepted {
            complete: self.is_complete(),
        })
    }

    /// The mean gradient over all m blocks, or None while some block is missing.
    pub fn reduce(&self) -> Option<Vec<f32>> {
        let sum = self.present.get(&self.tree.root()?)?.clone();
        Some(self.mean_of(sum.into_values()))
    }

    /// [`StepAggregator::reduce`] without a copy: the root's sum is taken out and divided in
    /// place (the aggregator then no longer holds it). None while some block is missing.
    pub fn take_mean(&mut self) -> Option<Vec<f32>> {
        let sum = self.present.remove(&self.tree.root()?)?;
        Some(self.mean_of(sum.into_values()))
    }

    /// The root's sum divided by m, in place.
    fn mean_of(&self, mut sum: Vec<f32>) -> Vec<f32> {
        let m = self.blocks as f32;
        sum.iter_mut().for_each(|v| *v /= m);
        sum
    }

    /// Whether `blocks` are consecutive ids forming one node of the tree.
    pub fn is_node(&self, blocks: &[u32]) -> bool {
        self.node_of(blocks).is_some()
    }

    fn node_of(&self, blocks: &[u32]) -> Option<NodeId> {
        let (&lo, &last) = (blocks.first()?, blocks.last()?);
        let consecutive = blocks.iter().copied().eq(lo..=last);
        consecutive.then(|| self.tree.node(lo, last + 1)).flatten()
    }

    /// Whether a part of `node` in `gradient`'s form fits the job's precision: in bf16 a part is
    /// at most one unit (the server rounds each unit itself), and only a whole unit comes as bf16.
    fn check_precision(&self, node: NodeId, gradient: &Part) -> Result<(), OfferError> {
        let (lo, hi) = self.tree.range(node);
        match self.precision {
            GradientPrecision::F32 if gradient.is_bf16() => Err(OfferError::Bf16NotExpected),
            GradientPrecision::F32 => Ok(()),
            GradientPrecision::Bf16 if !self.tree.within_unit(node) => Err(OfferError::AboveUnit { lo, hi }),
            GradientPrecision::Bf16 if gradient.is_bf16() && !self.tree.is_unit(node) => {
                Err(OfferError::Bf16NotAUnit { lo, hi })
            }
            GradientPrecision::Bf16 => Ok(()),
        }
    }

    /// Stores `node`'s sum, then joins it with its sibling while the sibling is here. In bf16, a
    /// unit's sum is rounded when it is complete, whoever sent it and in however many parts.
    fn insert(&mut self, mut node: NodeId, mut sum: Part) {
        loop {
            if self.precision == GradientPrecision::Bf16 && self.tree.is_unit(node) {
                sum = sum.rounded_to_bf16();
            }
            let Some(other) = self.tree.sibling(node).and_then(|s| self.present.remove(&s)) else {
                break;
            };
            sum = sum.join(other);
            node = self.tree.parent(node).unwrap_or(node);
        }
        self.present.insert(node, sum);
    }
}

/// The sum of the node whose leaves are blocks lo..hi, in the tree's association, from each
/// block's gradient: what a worker holding those blocks sends (tests and fuzzing use it too).
pub fn node_sum(
    tree: &ReductionTree,
    lo: u32,
    hi: u32,
    gradient: impl Fn(u32) -> Vec<f32>,
) -> Option<Vec<f32>> {
    let node = tree.node(lo, hi)?;
    let sum: Result<Vec<f32>, std::convert::Infallible> =
        tree.fold(node, &mut |b| Ok(gradient(b)), &mut |mut l, r| {
            add_into(&mut l, &r);
            Ok(l)
        });
    sum.ok()
}

/// `acc += other`, element by element in f32. IEEE addition of two values is commutative, so
/// which child is the accumulator does not change a bit; only the association (the tree) does.
/// Workers that pre-sum a subtree add the same way (libtorch's element-wise add rounds the same).
pub fn add_into(acc: &mut [f32], other: &[f32]) {
    acc.iter_mut().zip(other).for_each(|(a, v)| *a += v);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grad(seed: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((seed * 7919 + i as u32 * 104729) % 1000) as f32 * 1e-3 + 0.1)
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn aggregator(units: &[(u32, u32)], params: usize) -> StepAggregator {
        StepAggregator::new(Arc::new(ReductionTree::new(units)), params)
    }

    /// The sum of node lo..hi computed as a worker would: the tree's fold over per-block values.
    fn subtree_sum(units: &[(u32, u32)], lo: u32, hi: u32, len: usize) -> Vec<f32> {
        node_sum(&ReductionTree::new(units), lo, hi, |b| grad(b, len)).unwrap()
    }

    #[test]
    fn arrival_order_does_not_change_a_bit() {
        let units = [(0, 3), (3, 6)];
        let mut forward = aggregator(&units, 5);
        let mut backward = aggregator(&units, 5);
        for b in 0..6 {
            forward.offer(&[b], grad(b, 5)).unwrap();
            backward.offer(&[5 - b], grad(5 - b, 5)).unwrap();
        }
        let (f, r) = (forward.reduce().unwrap(), backward.reduce().unwrap());
        assert_eq!(bits(&f), bits(&r));
    }

    #[test]
    fn parts_in_wire_form_sum_to_the_same_bits() {
        let units = [(0, 3), (3, 6)];
        let wire = |b: u32| Part::wire(crate::tensor_bytes::to_bytes(&grad(b, 5)).into()).unwrap();
        let mut values = aggregator(&units, 5);
        let mut mixed = aggregator(&units, 5);
        for b in [4, 0, 5, 2, 1, 3] {
            values.offer(&[b], grad(b, 5)).unwrap();
            // Every other block arrives as bytes: wire with wire, wire with values, both orders.
            match b % 2 {
                0 => mixed.offer(&[b], wire(b)).unwrap(),
                _ => mixed.offer(&[b], grad(b, 5)).unwrap(),
            };
        }
        assert_eq!(
            bits(&values.take_mean().unwrap()),
            bits(&mixed.take_mean().unwrap())
        );
        let mut whole = aggregator(&units, 5);
        whole.offer(&[0, 1, 2, 3, 4, 5], wire(0)).unwrap();
        let mean = whole.take_mean().unwrap();
        assert_eq!(
            bits(&mean),
            bits(&grad(0, 5).iter().map(|v| v / 6.0).collect::<Vec<_>>())
        );
    }

    #[test]
    fn subtree_sums_equal_per_block_bits_and_are_combined_at_once() {
        let units = [(0, 3), (3, 6), (6, 9)];
        let mut per_block = aggregator(&units, 7);
        for b in 0..9 {
            per_block.offer(&[b], grad(b, 7)).unwrap();
        }
        let mut mixed = aggregator(&units, 7);
        mixed.offer(&[6, 7, 8], subtree_sum(&units, 6, 9, 7)).unwrap();
        mixed.offer(&[4, 5], subtree_sum(&units, 4, 6, 7)).unwrap();
        mixed.offer(&[3], grad(3, 7)).unwrap();
        // 3 joins 4..6 into unit 3..6, which joins unit 6..9 (its sibling) at once.
        assert_eq!(mixed.held(), 1);
        assert_eq!(mixed.covered(), (3..9).collect::<Vec<_>>());
        for b in 0..3 {
            mixed.offer(&[b], grad(b, 7)).unwrap();
        }
        assert!(mixed.is_complete());
        assert_eq!(mixed.held(), 1);
        assert_eq!(bits(&per_block.reduce().unwrap()), bits(&mixed.reduce().unwrap()));
    }

    #[test]
    fn a_node_replaces_the_parts_of_it_already_here() {
        let units = [(0, 4)];
        let mut agg = aggregator(&units, 3);
        agg.offer(&[1], grad(1, 3)).unwrap();
        agg.offer(&[3], grad(3, 3)).unwrap();
        assert_eq!(agg.covered(), vec![1, 3]);
        agg.offer(&[0, 1], subtree_sum(&units, 0, 2, 3)).unwrap();
        assert_eq!(agg.covered(), vec![0, 1, 3]);
        assert_eq!(agg.offer(&[0], grad(0, 3)), Ok(Offer::Redundant));
        assert_eq!(
            agg.offer(&[2], grad(2, 3)),
            Ok(Offer::Accepted { complete: true })
        );
        let mut reference = aggregator(&units, 3);
        for b in 0..4 {
            reference.offer(&[b], grad(b, 3)).unwrap();
        }
        assert_eq!(bits(&agg.reduce().unwrap()), bits(&reference.reduce().unwrap()));
        let mean = agg.reduce().unwrap();
        assert_eq!(agg.take_mean(), Some(mean));
        assert!(agg.take_mean().is_none() && !agg.is_complete());
    }

    #[test]
    fn completes_at_first_cover_and_drops_duplicates() {
        let mut agg = aggregator(&[(0, 1), (1, 2)], 2);
        assert_eq!(
            agg.offer(&[1], vec![1.0, 2.0]),
            Ok(Offer::Accepted { complete: false })
        );
        assert_eq!(agg.offer(&[1], vec![9.0, 9.0]), Ok(Offer::Redundant));
        assert!(agg.reduce().is_none());
        assert_eq!(
            agg.offer(&[0], vec![3.0, 4.0]),
            Ok(Offer::Accepted { complete: true })
        );
        assert_eq!(agg.reduce().unwrap(), vec![2.0, 3.0]);
    }

    #[test]
    fn rejects_bad_shapes_and_non_nodes() {
        let mut agg = aggregator(&[(0, 2), (2, 4)], 3);
        assert!(matches!(
            agg.offer(&[0], vec![1.0]),
            Err(OfferError::WrongLength { got: 1, want: 3 })
        ));
        assert!(matches!(
            agg.offer(&[9], vec![0.0; 3]),
            Err(OfferError::BlockOutOfRange { block: 9, .. })
        ));
        // 1..3 straddles two units; 0,2 is not consecutive; nothing is no node.
        for blocks in [&[1, 2][..], &[0, 2], &[]] {
            assert!(
                matches!(agg.offer(blocks, vec![0.0; 3]), Err(OfferError::NotANode { .. })),
                "{blocks:?}"
            );
        }
        assert!(agg.covered().is_empty());
    }
}

#[cfg(test)]
#[path = "aggregate_bf16_tests.rs"]
mod bf16_tests;
