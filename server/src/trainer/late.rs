//! Who covers a late worker's blocks at once (sans-IO).
//!
//! A worker that contributed nothing to the last step is likely late again. Each of its primary
//! blocks gets one designated backup: the holder that computes it right after its own share,
//! while the block's other holders wait until the step is overdue (worker/src/run/pacing.rs).
//! The whole unit goes to one holder where one holds it all, so its sum costs the server one
//! message, not one per block (at large models the server's intake is what a step waits for).
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
    /// A late worker's primary blocks (its reduction unit, a subtree) go whole to the
    /// least-loaded on-time worker that holds them all, which sends their sum as one message;
    /// where no one holds them all, each block goes to its least-loaded on-time holder. A
    /// worker's load counts the blocks it computes: its own share and what it was given here
    /// (ties: the lower rank, then the lower id). Late workers and blocks in id order, so the
    /// choice is the same on every server that sees the same layout and lateness.
    pub fn assign(layout: Option<&Layout>, late: &[u32]) -> Self {
        let Some(layout) = layout.filter(|_| !late.is_empty()) else {
            return Self::default();
        };
        let mut load: BTreeMap<u32, usize> = BTreeMap::new();
        let mut units: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (block, holders) in (0u32..).zip(&layout.holders) {
            if let Some(&first) = holders.first() {
                *load.entry(first).or_default() += 1;
                if late.contains(&first) {
                    units.entry(first).or_default().push(block);
                }
            }
        }
        let mut out = Self::default();
        for blocks in units.values() {
            let whole = on_time_holders_of_all(layout, blocks, late)
                .into_iter()
                .min_by_key(|&w| (load.get(&w).copied().unwrap_or(0), w));
            for &block in blocks {
                let holders = &layout.holders[block as usize];
                let backup = whole.or_else(|| {
                    let on_time = holders
                        .iter()
                        .enumerate()
                        .skip(1)
                        .filter(|(_, w)| !late.contains(w));
                    on_time
                        .min_by_key(|&(rank, &w)| (load.get(&w).copied().unwrap_or(0), rank, w))
                        .map(|(_, &w)| w)
                });
                if let Some(w) = backup {
                    *load.entry(w).or_default() += 1;
                    out.blocks.push(block);
                    out.backups.push(w);
                }
            }
        }
        out
    }
}

/// The workers, not late, that hold every one of `blocks`.
fn on_time_holders_of_all(layout: &Layout, blocks: &[u32], late: &[u32]) -> Vec<u32> {
    let Some(&first) = blocks.first() else {
        return Vec::new();
    };
    layout.holders[first as usize]
        .iter()
        .copied()
        .filter(|w| !late.contains(w))
        .filter(|&w| blocks.iter().all(|&b| layout.holders[b as usize].contains(&w)))
        .collect()
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
    fn a_late_workers_unit_goes_whole_to_the_least_loaded_holder_of_all_of_it() {
        // Worker 0 holds blocks 0-2 first; 1 and 2 hold all three next, each with one block of
        // its own: the tie goes to the lower id, and the unit is one message from worker 1.
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
        assert_eq!(late.backups, vec![1, 1, 1]);
        // Worker 1 already covering another unit is the heavier one: 2 gets the next.
        let late = LateBlocks::assign(Some(&l), &[0, 3]);
        assert_eq!(late.blocks, vec![0, 1, 2, 5]);
        assert_eq!(late.backups, vec![1, 1, 1, 2]);
    }

    #[test]
    fn a_unit_nobody_holds_whole_is_spread_block_by_block_by_load() {
        // Nobody on time holds all of blocks 0-2 (1: 0 and 2; 2: 0 and 1; 3: 1 and 2).
        let l = layout(vec![
            vec![0, 1, 2],
            vec![0, 2, 3],
            vec![0, 1, 3],
            vec![1, 2, 0],
            vec![2, 0, 1],
            vec![3, 1, 2],
        ]);
        let late = LateBlocks::assign(Some(&l), &[0]);
        assert_eq!(late.blocks, vec![0, 1, 2]);
        assert_eq!(late.backups, vec![1, 2, 3]);
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
