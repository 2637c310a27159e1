//! The layout kept in status, restored as input: status can be edited by anyone with rights on
//! it, so nothing read from it is trusted before it is checked (a worker id out of range would
//! otherwise index past the end of a vector and stop the operator for every job).

use std::collections::BTreeSet;

use anyk_core::Layout;

use crate::crd::LayoutState;

/// The largest epoch accepted from status: far beyond any real job (one epoch per repair or
/// rebalance), small enough that fencing above it never overflows and JSON keeps it exact.
pub const MAX_EPOCH: u64 = 1 << 50;

/// A saved layout that could not be used, and the fresh one that replaces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replanned {
    pub layout: Layout,
    pub reason: String,
}

/// The planned layout carrying the epoch, holders and members saved in status; or, when what was
/// saved is not a valid layout of this job, the planned layout fenced above the saved epoch (the
/// server refuses older epochs, docs/design.md invariant 3).
pub fn restore(mut planned: Layout, saved: Option<&LayoutState>) -> Result<Layout, Box<Replanned>> {
    let Some(saved) = saved else {
        return Ok(planned);
    };
    if let Err(reason) = check(&planned, saved) {
        planned.epoch = saved.epoch.min(MAX_EPOCH - 1) + 1;
        return Err(Box::new(Replanned {
            layout: planned,
            reason,
        }));
    }
    planned.epoch = saved.epoch;
    planned.holders = saved.holders.clone();
    planned.members = saved.members.iter().copied().collect();
    Ok(planned)
}

/// Whether `saved` is a layout of the job `planned` was made for.
fn check(planned: &Layout, saved: &LayoutState) -> Result<(), String> {
    let n = planned.workers;
    if saved.epoch == 0 || saved.epoch > MAX_EPOCH {
        return Err(format!("epoch {} is outside 1..={MAX_EPOCH}", saved.epoch));
    }
    if saved.holders.len() != planned.holders.len() {
        let (got, want) = (saved.holders.len(), planned.holders.len());
        return Err(format!("it has {got} blocks, the job has {want}"));
    }
    let members: BTreeSet<u32> = saved.members.iter().copied().collect();
    if let Some(w) = members.iter().find(|&&w| w >= n) {
        return Err(format!("member {w} is not a worker id (0..{n})"));
    }
    if members.len() != saved.members.len() {
        return Err("a member is listed twice".into());
    }
    for (block, holders) in saved.holders.iter().enumerate() {
        if holders.is_empty() {
            return Err(format!("block {block} has no holder"));
        }
        if let Some(w) = holders.iter().find(|w| !members.contains(w)) {
            return Err(format!("block {block} is held by {w}, which is not a member"));
        }
        if holders.iter().collect::<BTreeSet<_>>().len() != holders.len() {
            return Err(format!("block {block} lists a holder twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned() -> Layout {
        anyk_core::plan(24, 3, 8, 6).unwrap()
    }

    fn saved(edit: impl FnOnce(&mut LayoutState)) -> LayoutState {
        let layout = planned();
        let mut state = LayoutState {
            epoch: 4,
            holders: layout.holders.clone(),
            members: layout.members.iter().copied().collect(),
        };
        edit(&mut state);
        state
    }

    #[test]
    fn a_valid_saved_layout_is_restored() {
        let layout = restore(planned(), Some(&saved(|_| {}))).unwrap();
        assert_eq!(layout.epoch, 4);
        assert_eq!(restore(planned(), None).unwrap(), planned());
    }

    #[test]
    fn a_corrupted_saved_layout_is_replanned_above_its_epoch() {
        type Edit = fn(&mut LayoutState);
        let cases: [(Edit, &str); 7] = [
            (|s| s.holders[3][0] = 99, "not a member"),
            (|s| s.members.push(99), "not a worker id"),
            (|s| s.holders[0] = vec![1, 1, 2], "twice"),
            (|s| s.holders[5].clear(), "no holder"),
            (|s| s.members.push(0), "listed twice"),
            (|s| s.holders.pop().map(|_| ()).unwrap_or(()), "blocks"),
            (|s| s.epoch = u64::MAX, "epoch"),
        ];
        for (edit, why) in cases {
            let saved = saved(edit);
            let replanned = restore(planned(), Some(&saved)).unwrap_err();
            assert!(replanned.reason.contains(why), "{why}: {}", replanned.reason);
            assert_eq!(replanned.layout.holders, planned().holders);
            assert_eq!(replanned.layout.epoch, saved.epoch.min(MAX_EPOCH - 1) + 1);
        }
    }
}
