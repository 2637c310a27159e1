//! Changing a layout while training runs: `repair` after losses, `rebalance` after joins.
//! Both bump the epoch and move as few copies as possible, so workers reload little data.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::Layout;

/// One copy of `block` handed from one worker to another (`from` is None for a new copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub block: u32,
    pub from: Option<u32>,
    pub to: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepairError {
    #[error("coverage lost: {live} live workers, but any {target} must cover every block")]
    CoverageLost { live: u32, target: u32 },
    #[error("worker {0} is not a worker id of this layout")]
    UnknownWorker(u32),
    #[error("layout epoch {0} is the last there is: no newer layout can be made")]
    EpochExhausted(u64),
}

/// The epoch after `layout`'s, checked: a wrapped epoch would read as the oldest there is, and
/// every server would refuse it (docs/design.md, invariant 3).
fn next_epoch(layout: &Layout) -> Result<u64, RepairError> {
    layout
        .epoch
        .checked_add(1)
        .ok_or(RepairError::EpochExhausted(layout.epoch))
}

/// The layout for the surviving members after `lost` workers are gone: every block that lost a
/// holder gets a new one (the least-loaded member that does not hold it yet) until it has
/// min(r, live) holders again. Blocks that lost nothing do not move. Survivors keep their rank
/// order, the new holder goes last, so every block that had a primary still has one first in line.
pub fn repair(layout: &Layout, lost: &[u32]) -> Result<(Layout, Vec<Move>), RepairError> {
    check_ids(layout, lost)?;
    let mut next = layout.clone();
    next.epoch = next_epoch(layout)?;
    for w in lost {
        next.members.remove(w);
    }
    let live = next.members.len() as u32;
    if live < layout.target_workers {
        return Err(RepairError::CoverageLost {
            live,
            target: layout.target_workers,
        });
    }
    let gone: Vec<Vec<u32>> = next
        .holders
        .iter_mut()
        .map(|hs| {
            let (gone, kept): (Vec<u32>, Vec<u32>) = hs.iter().partition(|w| lost.contains(w));
            *hs = kept;
            gone
        })
        .collect();
    let mut loads = next.loads();
    let mut moves = Vec::new();
    for (b, gone) in gone.into_iter().enumerate() {
        let mut gone = gone.into_iter();
        top_up(&mut next, b, &mut loads, &BTreeSet::new(), |to| {
            moves.push(Move {
                block: b as u32,
                from: gone.next(),
                to,
            })
        });
    }
    Ok((next, moves))
}

/// Brings `joined` workers (new or replacements) into the layout: first restores any block below
/// min(r, members), then moves copies from the most to the least loaded member until loads differ
/// by at most 1. Each move lowers the excess above or the deficit below the balanced range, so
/// the number of moves is the minimum any balancing needs.
pub fn rebalance(layout: &Layout, joined: &[u32]) -> Result<(Layout, Vec<Move>), RepairError> {
    check_ids(layout, joined)?;
    let mut next = layout.clone();
    next.epoch = next_epoch(layout)?;
    next.members.extend(joined.iter().copied());
    let prefer: BTreeSet<u32> = joined.iter().copied().collect();
    let mut loads = next.loads();
    let mut moves = Vec::new();
    for b in 0..next.blocks as usize {
        top_up(&mut next, b, &mut loads, &prefer, |to| {
            moves.push(Move {
                block: b as u32,
                from: None,
                to,
            })
        });
    }
    while let Some((from, to)) = most_and_least_loaded(&next, &loads) {
        // The giver holds at least two blocks the taker lacks; hand over its best-ranked one,
        // so a newcomer also gets primaries and takes its share of a straggler-free step.
        let (b, rank) = next
            .holders
            .iter()
            .enumerate()
            .filter(|(_, hs)| !hs.contains(&to))
            .filter_map(|(b, hs)| hs.iter().position(|&w| w == from).map(|rank| (b, rank)))
            .min_by_key(|&(b, rank)| (rank, b))
            .expect("a worker with 2 more blocks holds one the other lacks");
        next.holders[b][rank] = to;
        loads[from as usize] -= 1;
        loads[to as usize] += 1;
        moves.push(Move {
            block: b as u32,
            from: Some(from),
            to,
        });
    }
    Ok((next, moves))
}

fn check_ids(layout: &Layout, ids: &[u32]) -> Result<(), RepairError> {
    match ids.iter().find(|&&w| w >= layout.workers) {
        Some(&w) => Err(RepairError::UnknownWorker(w)),
        None => Ok(()),
    }
}

/// Adds holders to block `b` until it has min(r, members): least loaded first, then workers in
/// `prefer`, then by distance from the block's position on the ring (spreads backups).
fn top_up(
    layout: &mut Layout,
    b: usize,
    loads: &mut [usize],
    prefer: &BTreeSet<u32>,
    mut on_add: impl FnMut(u32),
) {
    let want = (layout.replication as usize).min(layout.members.len());
    let n = layout.workers;
    while layout.holders[b].len() < want {
        let to = *layout
            .members
            .iter()
            .filter(|w| !layout.holders[b].contains(w))
            .min_by_key(|&&w| {
                (
                    loads[w as usize],
                    !prefer.contains(&w),
                    (w + n - b as u32 % n) % n,
                )
            })
            .expect("fewer holders than members leaves an eligible member");
        layout.holders[b].push(to);
        loads[to as usize] += 1;
        on_add(to);
    }
}

/// The (most, least) loaded members when their loads differ by more than 1.
fn most_and_least_loaded(layout: &Layout, loads: &[usize]) -> Option<(u32, u32)> {
    let most = *layout
        .members
        .iter()
        .max_by_key(|&&w| (loads[w as usize], std::cmp::Reverse(w)))?;
    let least = *layout.members.iter().min_by_key(|&&w| (loads[w as usize], w))?;
    (loads[most as usize] > loads[least as usize] + 1).then_some((most, least))
}
