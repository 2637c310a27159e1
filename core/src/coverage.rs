//! How safe a layout is right now, given which workers are alive.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::Layout;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Live members of the layout.
    pub live: u32,
    /// How many more workers may be lost before some block has no live holder:
    /// min over blocks of (live holders - 1); -1 when a block already has none.
    pub margin: i64,
    /// Blocks with fewer live holders than min(r, live): they lost a copy and await repair.
    pub under_replicated: Vec<u32>,
    /// Whether any k live workers still cover every block: live >= k and every block has at
    /// least live-k+1 distinct live holders (docs/design.md, invariant 1).
    pub holds: bool,
}

/// The coverage of `layout` when only `live` workers answer.
pub fn coverage_of(layout: &Layout, live: &BTreeSet<u32>) -> Coverage {
    let live_members: BTreeSet<u32> = layout.members.intersection(live).copied().collect();
    let n_live = live_members.len() as u32;
    let want = layout.replication.min(n_live) as usize;
    let counts: Vec<usize> = layout
        .holders
        .iter()
        .map(|hs| hs.iter().filter(|w| live_members.contains(w)).count())
        .collect();
    let min_holders = counts.iter().copied().min().unwrap_or(0);
    let needed = (n_live + 1).saturating_sub(layout.target_workers) as usize;
    Coverage {
        live: n_live,
        margin: min_holders as i64 - 1,
        under_replicated: (0..layout.blocks)
            .filter(|&b| counts[b as usize] < want)
            .collect(),
        holds: n_live >= layout.target_workers && min_holders >= needed.max(1),
    }
}
