//! Who covers a late worker's blocks at once (sans-IO).
//!
//! A worker that contributed nothing to the last step is likely late again. Each of its primary
//! blocks gets one designated backup: the holder that computes it right after its own share,
//! while the block's other holders wait until the step is overdue (worker/src/run/pacing.rs).
//! Before designation every other holder computed every late block at once: with r = 3 each late
//! block was computed twice, and where workers share cores those copies slowed everyone (8.5M
//! parameters, 2 cores: a job with 2 stragglers took 2x the step time of one without).

use std::collections::BTreeMap;

use anyk_core::Layout;

/// The blocks whose first holder was late last step, and for each its designated backup.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LateBlocks {
    pub blocks: Vec<u32>,
    /// `backups[i]` computes `blocks[i]` at once (same length as `blocks`).
    pub backups: Vec<u32>,
}

impl LateBlocks {
    /// Each late block goes to its least-loaded holder that was not late, counting every worker's
    /// own share as its load (ties: the holder of lower rank, then the lower id). Blocks in id
    /// order, so the choice is the same on every server that sees the same layout and lateness.
    pub fn assign(layout: Option<&Layout>, late: &[u32]) -> Self {
        let Some(layout) = layout.filter(|_| !late.is_empty()) else {
            return Self::default();
        };
        let mut load: BTreeMap<u32, usize> = BTreeMap::new();
        for holders in &layout.holders {
            if let Some(&first) = holders.first() {
                *load.entry(first).or_default() += 1;
            }
        }
        let mut out = Self::default();
        for (block, holders) in (0u32..).zip(&layout.holders) {
            if !holders.first().is_some_and(|w| late.contains(w)) {
                continue;
            }
            let candidates = holders.iter().enumerate().skip(1);
            let on_time = candidates.filter(|(_, w)| !late.contains(w));
            let best = on_time.min_by_key(|&(rank, &w)| (load.get(&w).copied().unwrap_or(0), rank, w));
            if let Some((_, &w)) = best {
                *load.entry(w).or_default() += 1;
                out.blocks.push(block);
                out.backups.push(w);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyk_core::plan;

    fn layout(holders: Vec<Vec<u32>>) -> Layout {
        let mut l = plan(6, 3, 4, 2).unwrap();
        l.holders = holders;
        l
    }

    #[test]
    fn no_late_worker_no_late_block() {
        let l = layout(vec![vec![0, 1, 2], vec![1, 2, 3]]);
        assert_eq!(LateBlocks::assign(Some(&l), &[]), LateBlocks::default());
        assert_eq!(LateBlocks::assign(None, &[1]), LateBlocks::default());
    }

    #[test]
    fn a_late_workers_blocks_are_spread_over_its_other_holders_by_load() {
        // Worker 0 holds blocks 0-2 first; 1 and 2 hold them next. Each on-time worker has one
        // block of its own, so the three late blocks go 1, 2, 1 (ties to the lower rank).
        let l = layout(vec![
            vec![0, 1, 2],
            vec![0, 2, 1],
            vec![0, 1, 2],
            vec![1, 2, 0],
            vec![2, 0, 1],
            vec![3, 1, 2],
        ]);
        let late = LateBlocks::assign(Some(&l), &[0]);
        assert_eq!(late.blocks, vec![0, 1, 2]);
        assert_eq!(late.backups, vec![1, 2, 1]);
    }

    #[test]
    fn a_block_whose_other_holders_are_late_too_goes_to_the_next_on_time_one() {
        let l = layout(vec![vec![0, 1, 2], vec![1, 0, 3]]);
        let late = LateBlocks::assign(Some(&l), &[0, 1]);
        assert_eq!(late.blocks, vec![0, 1]);
        assert_eq!(late.backups, vec![2, 3]);
        // No on-time holder: nobody is designated.
        let late = LateBlocks::assign(Some(&l), &[0, 1, 2]);
        assert_eq!((late.blocks, late.backups), (vec![1], vec![3]));
    }
}
