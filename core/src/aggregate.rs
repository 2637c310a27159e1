//! Exact aggregation of one step (docs/design.md, invariant 2): the target gradient uses exactly
//! one gradient per block, reduced in a fixed association (blocks in id order within a reduction
//! unit, then units in order), never in arrival order. Which replica answered first cannot change
//! a single bit.

/// What happened to one offered gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Stored; `complete` tells whether every block of the step now has a gradient.
    Accepted { complete: bool },
    /// Every offered block already had a gradient this step; dropped.
    Redundant,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("block {block} is out of range (the job has {blocks} blocks)")]
    BlockOutOfRange { block: u32, blocks: u32 },
    #[error("blocks {blocks:?} are not one block nor exactly one reduction unit")]
    NotAUnit { blocks: Vec<u32> },
    #[error("gradient has {got} values, the model has {want} parameters")]
    WrongLength { got: usize, want: usize },
}

/// Collects per-block (or per-unit pre-summed) gradients for one step.
#[derive(Debug, Clone)]
pub struct StepAggregator {
    units: Vec<(u32, u32)>,
    params: usize,
    blocks: Vec<Option<Vec<f32>>>,
    presummed: Vec<Option<Vec<f32>>>,
}

impl StepAggregator {
    pub fn new(units: Vec<(u32, u32)>, params: usize) -> Self {
        let blocks = units.last().map_or(0, |u| u.1) as usize;
        let presummed = vec![None; units.len()];
        Self {
            units,
            params,
            blocks: vec![None; blocks],
            presummed,
        }
    }

    /// Whether `block` already has a gradient (its own or within a pre-summed unit).
    pub fn is_covered(&self, block: u32) -> bool {
        self.blocks.get(block as usize).is_some_and(Option::is_some)
            || self
                .unit_index(block)
                .is_some_and(|u| self.presummed[u].is_some())
    }

    /// Blocks that have a gradient.
    pub fn covered(&self) -> Vec<u32> {
        (0..self.blocks.len() as u32)
            .filter(|&b| self.is_covered(b))
            .collect()
    }

    pub fn is_complete(&self) -> bool {
        (0..self.blocks.len() as u32).all(|b| self.is_covered(b))
    }

    /// Offers the gradient of `blocks` (one block, or one whole unit pre-summed in id order).
    pub fn offer(&mut self, blocks: &[u32], gradient: Vec<f32>) -> Result<Offer, OfferError> {
        if gradient.len() != self.params {
            return Err(OfferError::WrongLength {
                got: gradient.len(),
                want: self.params,
            });
        }
        let total = self.blocks.len() as u32;
        if let Some(&block) = blocks.iter().find(|&&b| b >= total) {
            return Err(OfferError::BlockOutOfRange { block, blocks: total });
        }
        match blocks {
            [block] => {
                if self.is_covered(*block) {
                    return Ok(Offer::Redundant);
                }
                self.blocks[*block as usize] = Some(gradient);
            }
            _ => {
                let unit = self
                    .unit_index(blocks.first().copied().unwrap_or(total))
                    .filter(|&u| {
                        let (lo, hi) = self.units[u];
                        blocks.iter().copied().eq(lo..hi)
                    })
                    .ok_or_else(|| OfferError::NotAUnit {
                        blocks: blocks.to_vec(),
                    })?;
                if blocks.iter().all(|&b| self.is_covered(b)) {
                    return Ok(Offer::Redundant);
                }
                self.presummed[unit] = Some(gradient);
            }
        }
        Ok(Offer::Accepted {
            complete: self.is_complete(),
        })
    }

    /// The mean gradient over all m blocks, or None while some block is missing.
    pub fn reduce(&self) -> Option<Vec<f32>> {
        let mut unit_sums = Vec::with_capacity(self.units.len());
        for (u, &(lo, hi)) in self.units.iter().enumerate() {
            let sum = match &self.presummed[u] {
                Some(sum) => sum.clone(),
                None => {
                    let parts: Option<Vec<&[f32]>> =
                        (lo..hi).map(|b| self.blocks[b as usize].as_deref()).collect();
                    sum_in_order(&parts?)
                }
            };
            unit_sums.push(sum);
        }
        let parts: Vec<&[f32]> = unit_sums.iter().map(Vec::as_slice).collect();
        let mut mean = sum_in_order(&parts);
        let m = self.blocks.len() as f32;
        mean.iter_mut().for_each(|v| *v /= m);
        Some(mean)
    }

    fn unit_index(&self, block: u32) -> Option<usize> {
        self.units.iter().position(|&(lo, hi)| (lo..hi).contains(&block))
    }
}

/// Left fold of equal-length vectors in the given order, in f32. Workers that pre-sum a unit call
/// this same function, which is what makes their result bit-identical to the server's.
pub fn sum_in_order(parts: &[&[f32]]) -> Vec<f32> {
    let mut parts = parts.iter();
    let mut acc = parts.next().map(|p| p.to_vec()).unwrap_or_default();
    for part in parts {
        acc.iter_mut().zip(part.iter()).for_each(|(a, v)| *a += v);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grad(seed: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((seed * 7919 + i as u32 * 104729) % 1000) as f32 * 1e-3 + 0.1)
            .collect()
    }

    #[test]
    fn arrival_order_does_not_change_a_bit() {
        let units: Vec<(u32, u32)> = (0..6).map(|b| (b, b + 1)).collect();
        let mut forward = StepAggregator::new(units.clone(), 5);
        let mut backward = StepAggregator::new(units, 5);
        for b in 0..6 {
            forward.offer(&[b], grad(b, 5)).unwrap();
            backward.offer(&[5 - b], grad(5 - b, 5)).unwrap();
        }
        let (f, r) = (forward.reduce().unwrap(), backward.reduce().unwrap());
        assert_eq!(
            f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            r.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn presummed_unit_equals_per_block_bits() {
        let units = vec![(0, 3), (3, 6)];
        let grads: Vec<Vec<f32>> = (0..6).map(|b| grad(b, 7)).collect();
        let mut per_block = StepAggregator::new(units.clone(), 7);
        for (b, g) in grads.iter().enumerate() {
            per_block.offer(&[b as u32], g.clone()).unwrap();
        }
        let mut presummed = StepAggregator::new(units, 7);
        let first: Vec<&[f32]> = grads[0..3].iter().map(Vec::as_slice).collect();
        presummed.offer(&[0, 1, 2], sum_in_order(&first)).unwrap();
        for b in 3..6 {
            presummed.offer(&[b], grads[b as usize].clone()).unwrap();
        }
        assert_eq!(per_block.reduce().unwrap(), presummed.reduce().unwrap());
    }

    #[test]
    fn completes_at_first_cover_and_drops_duplicates() {
        let mut agg = StepAggregator::new(vec![(0, 1), (1, 2)], 2);
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
    fn rejects_bad_shapes_and_non_units() {
        let mut agg = StepAggregator::new(vec![(0, 2), (2, 4)], 3);
        assert!(matches!(
            agg.offer(&[0], vec![1.0]),
            Err(OfferError::WrongLength { got: 1, want: 3 })
        ));
        assert!(matches!(
            agg.offer(&[9], vec![0.0; 3]),
            Err(OfferError::BlockOutOfRange { block: 9, .. })
        ));
        assert!(matches!(
            agg.offer(&[1, 2], vec![0.0; 3]),
            Err(OfferError::NotAUnit { .. })
        ));
        assert!(agg.covered().is_empty());
    }
}
