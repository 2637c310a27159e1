//! Layouts as the server takes them: validated against the job, fenced by epoch
//! (docs/design.md, invariant 3), and turned into each worker's assignment.

use std::collections::BTreeSet;

use anyk_core::Layout;
use anyk_proto::v1::Assignment;

use crate::error::{LayoutError, RequestError};

/// The most workers a layout may have: the CRD's bound on `workers` (operator/src/crd.rs).
pub const MAX_WORKERS: u32 = 4096;
/// The most block copies (sum of the holder lists) a layout may have: the CRD's bound on
/// `dataset.blocks * replication` (operator/src/crd.rs, `MAX_BLOCK_COPIES`).
pub const MAX_BLOCK_COPIES: u32 = 131_072;
/// How far above the current epoch a pushed layout may go. The operator bumps the epoch by one
/// per repair or rebalance; a bound keeps a forged or corrupt epoch (2^64 - 1) from fencing
/// every later push out.
pub const MAX_EPOCH_JUMP: u64 = 1_000_000;
/// The highest epoch of a first layout (the server has none): the operator's own bound on the
/// epochs it keeps in status (operator/src/reconcile/restore.rs, `MAX_EPOCH`), so a replaced
/// server without a checkpoint takes any layout the operator can hold.
pub const MAX_FIRST_EPOCH: u64 = 1 << 50;

/// The current layout, if `worker` is one of its worker ids.
pub(super) fn member(layout: Option<&Layout>, worker: u32) -> Result<&Layout, RequestError> {
    let layout = layout.ok_or(RequestError::NoLayout)?;
    if worker >= layout.workers {
        return Err(RequestError::UnknownWorker {
            worker,
            workers: layout.workers,
        });
    }
    Ok(layout)
}

/// Checks that `layout` fits a job of `job_blocks` blocks whose current layout is `current`.
pub(super) fn validate(
    layout: &Layout,
    job_blocks: u32,
    current: Option<&Layout>,
) -> Result<(), LayoutError> {
    // Bounds first: everything after this, and the assignments, cost time and memory in these.
    if layout.workers > MAX_WORKERS {
        return Err(LayoutError::TooManyWorkers {
            workers: layout.workers,
            max: MAX_WORKERS,
        });
    }
    let copies: u64 = layout.holders.iter().map(|h| h.len() as u64).sum();
    if copies > u64::from(MAX_BLOCK_COPIES) {
        return Err(LayoutError::TooManyCopies {
            copies,
            max: MAX_BLOCK_COPIES,
        });
    }
    if layout.blocks != job_blocks || layout.holders.len() != layout.blocks as usize {
        return Err(LayoutError::BlockCount {
            blocks: layout.blocks,
            holder_lists: layout.holders.len(),
            job_blocks,
        });
    }
    check_holders(layout)?;
    if layout.members.iter().any(|&w| w >= layout.workers) {
        return Err(LayoutError::MemberOutOfRange {
            workers: layout.workers,
        });
    }
    if !units_tile(&layout.units, layout.blocks) {
        return Err(LayoutError::UnitsDoNotTile);
    }
    // Units fix the association of the sum for the life of the job (docs/design.md,
    // invariant 2: bit-identical results).
    if current.is_some_and(|current| current.units != layout.units) {
        return Err(LayoutError::UnitsChanged);
    }
    Ok(())
}

/// Refuses an older epoch, a known epoch with different contents, and a jump of more than
/// [`MAX_EPOCH_JUMP`] (a first layout: above [`MAX_FIRST_EPOCH`]); the same layout again (an
/// operator that restarted) is fine.
pub(super) fn fence(layout: &Layout, current: Option<&Layout>) -> Result<(), RequestError> {
    let (current_epoch, max) = current.map_or((0, MAX_FIRST_EPOCH), |c| (c.epoch, MAX_EPOCH_JUMP));
    if layout.epoch > current_epoch.saturating_add(max) {
        return Err(RequestError::EpochJump {
            got: layout.epoch,
            current: current_epoch,
            max,
        });
    }
    match current {
        Some(current) if layout.epoch < current.epoch => Err(RequestError::OlderLayout {
            got: layout.epoch,
            current: current.epoch,
        }),
        Some(current) if layout.epoch == current.epoch && layout != current => {
            Err(RequestError::EpochReused(layout.epoch))
        }
        _ => Ok(()),
    }
}

/// What `worker` computes under `layout`: its blocks in order (none when it is not a member).
pub(super) fn assignment(layout: &Layout, worker: u32) -> Assignment {
    Assignment {
        epoch: layout.epoch,
        blocks: if layout.members.contains(&worker) {
            layout.queue(worker)
        } else {
            Vec::new()
        },
        unit_bounds: layout.units.iter().flat_map(|&(lo, hi)| [lo, hi]).collect(),
        first_rank: layout
            .holders
            .iter()
            .filter(|hs| hs.first() == Some(&worker))
            .count() as u32,
    }
}

/// Every block has at least one holder, holders are members, and no worker holds a block twice.
fn check_holders(layout: &Layout) -> Result<(), LayoutError> {
    for (block, holders) in (0u32..).zip(&layout.holders) {
        if holders.is_empty() {
            return Err(LayoutError::NoHolder(block));
        }
        if let Some(&worker) = holders.iter().find(|w| !layout.members.contains(w)) {
            return Err(LayoutError::HolderNotMember { block, worker });
        }
        if holders.iter().collect::<BTreeSet<_>>().len() != holders.len() {
            return Err(LayoutError::DuplicateCopy(block));
        }
    }
    Ok(())
}

/// Whether `units` are consecutive, non-empty half-open ranges from 0 to `blocks`, in order.
/// (The last one too: `[(0, 8), (8, 6)]` for 6 blocks once passed, and the step that covered
/// the 6 blocks panicked in the reduction; found by fuzz/fuzz_targets/set_layout.rs.)
fn units_tile(units: &[(u32, u32)], blocks: u32) -> bool {
    units.first().map(|u| u.0) == Some(0)
        && units.iter().all(|&(lo, hi)| lo < hi)
        && units.windows(2).all(|w| w[0].1 == w[1].0)
        && units.last().map(|u| u.1) == Some(blocks)
}
