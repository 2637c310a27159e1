//! Block layouts: which workers hold which of the m blocks.
//!
//! The coverage condition (docs/design.md, invariant 1): any k of n workers hold every block iff
//! every block has at least n-k+1 distinct holders. `plan` places r >= n-k+1 copies of each block
//! on distinct workers, balanced, and orders each block's holders by *rank*: rank 0 is the
//! primary. Workers process their blocks rank by rank, so the primaries of all workers (about m/n
//! blocks each) already cover the whole set and a straggler-free step costs what uncoded training
//! costs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// How the copies were placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Workers form groups of r; every member of a group holds the same contiguous block range,
    /// so a member may send one pre-summed gradient for the whole range (a reduction unit).
    Fractional,
    /// Every block on r workers at rotating offsets; each block is its own reduction unit.
    Cyclic,
    /// No redundancy: each block on exactly one worker and every worker needed (the baseline
    /// that plain synchronous data-parallel training is).
    Uncoded,
}

/// A placement of block copies on workers, versioned by `epoch` for fencing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Increases with every change; the server rejects anything older than what it holds.
    pub epoch: u64,
    /// n: worker ids are 0..n.
    pub workers: u32,
    /// m: number of blocks.
    pub blocks: u32,
    /// r: copies of each block the layout aims for.
    pub replication: u32,
    /// k: any k live workers must cover every block.
    #[serde(alias = "target")] // checkpoints written before the rename
    pub target_workers: u32,
    pub scheme: Scheme,
    /// For each block, its holders in rank order (primary first). Never two equal entries.
    pub holders: Vec<Vec<u32>>,
    /// Workers that are part of this layout (not lost). Holders are always members.
    pub members: BTreeSet<u32>,
    /// Reduction units as half-open block ranges in block order, fixed for the life of a job:
    /// the aggregate sums blocks within a unit in id order, then units in order, so a pre-summed
    /// unit and its per-block gradients give bit-identical results (docs/design.md, invariant 2).
    pub units: Vec<(u32, u32)>,
}

/// Parameters that no layout can satisfy, each naming the violated bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("blocks must be at least 1 (got m={0})")]
    NoBlocks(u32),
    #[error("target workers must satisfy 1 <= k <= n (got k={target}, n={workers})")]
    TargetOutOfRange { target: u32, workers: u32 },
    #[error("replication must satisfy 2 <= r <= n (got r={replication}, n={workers})")]
    ReplicationOutOfRange { replication: u32, workers: u32 },
    #[error(
        "replication must satisfy r >= n-k+1 so that any k workers cover every block \
         (got r={replication}, n={workers}, k={target}: need r >= {needed})"
    )]
    CoverageBound {
        replication: u32,
        workers: u32,
        target: u32,
        needed: u32,
    },
}

impl Layout {
    /// Blocks held by `worker` in processing order: by rank, then block id.
    pub fn queue(&self, worker: u32) -> Vec<u32> {
        let mut held: Vec<(usize, u32)> = self
            .holders
            .iter()
            .enumerate()
            .filter_map(|(b, hs)| hs.iter().position(|&w| w == worker).map(|rank| (rank, b as u32)))
            .collect();
        held.sort_unstable();
        held.into_iter().map(|(_, b)| b).collect()
    }

    /// Number of block copies on each worker id (0..n).
    pub fn loads(&self) -> Vec<usize> {
        let mut loads = vec![0; self.workers as usize];
        for hs in &self.holders {
            for &w in hs {
                loads[w as usize] += 1;
            }
        }
        loads
    }

    /// The reduction unit that holds `block`.
    pub fn unit_of(&self, block: u32) -> Option<(u32, u32)> {
        self.units
            .iter()
            .copied()
            .find(|&(lo, hi)| (lo..hi).contains(&block))
    }

    pub fn holds(&self, worker: u32, block: u32) -> bool {
        self.holders
            .get(block as usize)
            .is_some_and(|hs| hs.contains(&worker))
    }
}

/// Checks the bounds of docs/design.md: m >= 1, 1 <= k <= n, 2 <= r <= n, r >= n-k+1.
pub fn validate(blocks: u32, replication: u32, workers: u32, target: u32) -> Result<(), PlanError> {
    if blocks == 0 {
        return Err(PlanError::NoBlocks(blocks));
    }
    if target == 0 || target > workers {
        return Err(PlanError::TargetOutOfRange { target, workers });
    }
    if replication < 2 || replication > workers {
        return Err(PlanError::ReplicationOutOfRange { replication, workers });
    }
    let needed = workers - target + 1;
    if replication < needed {
        return Err(PlanError::CoverageBound {
            replication,
            workers,
            target,
            needed,
        });
    }
    Ok(())
}

/// Places r copies of each of m blocks on n workers so that any k workers cover every block.
///
/// Fractional repetition when r divides n and every group gets a block; cyclic otherwise. Either
/// way each worker's first-rank blocks are one contiguous range, which is also its reduction
/// unit: on time, a worker sends one sum per step.
pub fn plan(blocks: u32, replication: u32, workers: u32, target: u32) -> Result<Layout, PlanError> {
    validate(blocks, replication, workers, target)?;
    let groups = workers / replication;
    let (scheme, units, holders) = if workers.is_multiple_of(replication) && blocks >= groups {
        // Extra blocks go to the groups in turn, so group loads stay within one.
        let units = primary_ranges(blocks, workers, |w| (w % replication) * groups + w / replication);
        let holders = fractional(&units, replication);
        (Scheme::Fractional, units, holders)
    } else {
        // Extra blocks go to workers 0..q, the partial chunk of the ring.
        let units = primary_ranges(blocks, workers, |w| w);
        let holders = cyclic(&units, replication, workers);
        (Scheme::Cyclic, units, holders)
    };
    Ok(Layout {
        epoch: 1,
        workers,
        blocks,
        replication,
        target_workers: target,
        scheme,
        holders,
        members: (0..workers).collect(),
        // With fewer blocks than workers some have no primaries: no unit either.
        units: units.into_iter().filter(|(lo, hi)| lo < hi).collect(),
    })
}

/// The synchronous baseline of a plan: each block on its primary only, so the server waits for
/// everyone. Same units, hence the same reduction tree and the same bits as the coded job.
pub fn uncoded(coded: &Layout) -> Layout {
    Layout {
        epoch: 1,
        replication: 1,
        target_workers: coded.workers,
        scheme: Scheme::Uncoded,
        holders: coded
            .holders
            .iter()
            .map(|hs| hs[..1.min(hs.len())].to_vec())
            .collect(),
        members: (0..coded.workers).collect(),
        ..coded.clone()
    }
}

/// Each worker's first-rank blocks as consecutive ranges in worker order: m/n each, and one more
/// for the m mod n workers that come first in `extra_order` (a rank per worker id).
fn primary_ranges(blocks: u32, workers: u32, extra_order: impl Fn(u32) -> u32) -> Vec<(u32, u32)> {
    let (each, extra) = (blocks / workers, blocks % workers);
    let mut lo = 0;
    (0..workers)
        .map(|w| {
            let hi = lo + each + u32::from(extra_order(w) < extra);
            let range = (lo, hi);
            lo = hi;
            range
        })
        .collect()
}

/// Group g (workers g*r .. g*r+r-1) holds the union of its members' primary ranges; a block's
/// backups are the group's other members in rotation, so each member's blocks are its own
/// primaries plus every other member's.
fn fractional(units: &[(u32, u32)], r: u32) -> Vec<Vec<u32>> {
    let mut holders = Vec::new();
    for (w, &(lo, hi)) in units.iter().enumerate() {
        let (w, group) = (w as u32, w as u32 / r * r);
        for _ in lo..hi {
            holders.push((0..r).map(|j| group + (w - group + j) % r).collect());
        }
    }
    holders
}

/// Worker p's c-th primary sits where block c*n + p sits in a round-robin ring (chunk c,
/// position p). In full chunks rank j sits at p + j*d_c (mod n) with a step d_c that changes per
/// chunk, so the r-1 backups of one worker's primaries are spread over different workers and a
/// straggler's load does not fall on a single neighbour. The last, partial chunk (q = m mod n
/// blocks) uses rank offsets whose windows tile the ring, keeping loads within 1. Blocks are then
/// numbered by primary, so each worker's primaries are its range of `units`.
fn cyclic(units: &[(u32, u32)], r: u32, n: u32) -> Vec<Vec<u32>> {
    let blocks = units.last().map_or(0, |u| u.1);
    let (full, q) = (blocks / n, blocks % n);
    // Steps d with j*d distinct mod n for j < r, so a block's holders are distinct.
    let steps: Vec<u32> = (1..n).filter(|&d| n / gcd(d, n) >= r).collect();
    let offsets = tiling_offsets(q.max(1), r, n);
    let mut holders = Vec::with_capacity(blocks as usize);
    for (p, &(lo, hi)) in units.iter().enumerate() {
        let p = p as u32;
        for c in 0..hi - lo {
            let ring: Vec<u32> = if c < full {
                let d = steps[c as usize % steps.len()];
                (0..r).map(|j| (p + j * d) % n).collect()
            } else {
                offsets.iter().map(|s| (p + s) % n).collect()
            };
            holders.push(ring);
        }
    }
    holders
}

/// r distinct offsets; each starts where the previous window of q ended, bumped past used ones.
fn tiling_offsets(q: u32, r: u32, n: u32) -> Vec<u32> {
    let mut offsets: Vec<u32> = vec![0];
    while offsets.len() < r as usize {
        let mut s = (offsets[offsets.len() - 1] + q) % n;
        while offsets.contains(&s) {
            s = (s + 1) % n;
        }
        offsets.push(s);
    }
    offsets
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}
