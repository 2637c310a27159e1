//! Self-healing decisions, pure: given the layout and what each worker looks like to its
//! supervisor (the operator, or `anyk local`), which workers are lost, the repaired layout, and
//! which replacements have joined. The one home of the healing policy.

use std::collections::BTreeSet;

use crate::layout::Layout;
use crate::repair::{Move, RepairError, rebalance, repair};

/// What a supervisor (the operator, or `anyk local`) saw of one worker id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// No worker (never created, deleted, or evicted).
    Missing,
    /// The worker failed (its process died) or sits on a node that is gone.
    Failed,
    /// Exists but is not ready yet.
    Starting,
    /// Ready to train. For the operator: the worker pod is Ready. For `anyk local`: the process
    /// is running and has joined the parameter server, i.e. the server's join counter for that
    /// id grew since the process was started.
    Ready,
    /// Exited successfully: a worker does that only once training is over.
    Exited,
}

/// The outcome of one healing pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Healing {
    pub layout: Layout,
    /// Members found lost in this pass (they are to be replaced).
    pub lost: Vec<u32>,
    /// Copies moved by the repair.
    pub repair_moves: Vec<Move>,
    /// Non-members whose replacements are ready and were rebalanced in.
    pub joined: Vec<u32>,
    /// Set when fewer than k workers are left: the server must not aggregate until they are back.
    pub coverage_lost: bool,
}

/// One healing pass. `workers[w]` is what the supervisor saw of worker w (an id beyond the slice
/// counts as [`WorkerState::Missing`]). `created` says whether workers were created before (a
/// missing worker then means deleted or evicted, not "not created yet").
///
/// Lost members are repaired away; when fewer than k would be left the layout is kept (the lost
/// still count as members, so their blocks wait for the replacements) and `coverage_lost` is set.
/// Ready non-members are then rebalanced in. A malformed layout (a member id not below
/// `layout.workers`) is left as it is rather than repaired.
pub fn heal(layout: &Layout, workers: &[WorkerState], created: bool) -> Healing {
    let state = |w: u32| {
        usize::try_from(w)
            .ok()
            .and_then(|i| workers.get(i).copied())
            .unwrap_or(WorkerState::Missing)
    };
    let lost: Vec<u32> = layout
        .members
        .iter()
        .copied()
        .filter(|&w| match state(w) {
            WorkerState::Failed => true,
            WorkerState::Missing => created,
            WorkerState::Starting | WorkerState::Ready | WorkerState::Exited => false,
        })
        .collect();
    let mut healing = Healing {
        layout: layout.clone(),
        lost: lost.clone(),
        repair_moves: Vec::new(),
        joined: Vec::new(),
        coverage_lost: false,
    };
    if !lost.is_empty() {
        match repair(layout, &lost) {
            Ok((next, moves)) => {
                healing.layout = next;
                healing.repair_moves = moves;
            }
            Err(RepairError::CoverageLost { .. }) => healing.coverage_lost = true,
            // Only a malformed layout has members out of range, or the last epoch there is:
            // nothing sensible to repair.
            Err(RepairError::UnknownWorker(_) | RepairError::EpochExhausted(_)) => {}
        }
    }
    let joined: Vec<u32> = (0..layout.workers)
        .filter(|w| !healing.layout.members.contains(w) && !lost.contains(w))
        .filter(|&w| state(w) == WorkerState::Ready)
        .collect();
    // The joined ids are below `layout.workers`, so rebalance accepts them.
    if !joined.is_empty()
        && let Ok((next, _)) = rebalance(&healing.layout, &joined)
    {
        healing.layout = next;
        healing.joined = joined;
    }
    healing
}

/// The worker ids that are ready right now.
pub fn ready_workers(workers: &[WorkerState]) -> BTreeSet<u32> {
    (0u32..)
        .zip(workers)
        .filter(|&(_, &state)| state == WorkerState::Ready)
        .map(|(w, _)| w)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::WorkerState::{Exited, Failed, Missing, Ready, Starting};
    use super::*;

    fn layout() -> Layout {
        crate::plan(24, 3, 8, 6).unwrap()
    }

    #[test]
    fn nothing_lost_nothing_changes() {
        let h = heal(&layout(), &[Ready; 8], true);
        assert_eq!(h.layout, layout());
        assert!(h.lost.is_empty() && h.joined.is_empty());
    }

    #[test]
    fn workers_that_exited_after_training_are_not_lost() {
        let h = heal(&layout(), &[Exited; 8], true);
        assert!(h.lost.is_empty() && !h.coverage_lost);
        assert!(ready_workers(&[Exited; 8]).is_empty());
    }

    #[test]
    fn missing_workers_before_creation_are_not_lost() {
        assert!(heal(&layout(), &[Missing; 8], false).lost.is_empty());
    }

    #[test]
    fn a_failed_worker_is_repaired_and_its_replacement_rebalanced_in() {
        let mut workers = [Ready; 8];
        workers[3] = Failed;
        let repaired = heal(&layout(), &workers, true);
        assert_eq!(repaired.lost, vec![3]);
        assert_eq!(repaired.layout.epoch, 2);
        assert_eq!(repaired.repair_moves.len(), 9, "exactly worker 3's copies move");
        assert!(!repaired.layout.members.contains(&3));
        // The replacement starts: nothing changes until it is ready.
        workers[3] = Starting;
        assert_eq!(heal(&repaired.layout, &workers, true).layout, repaired.layout);
        workers[3] = Ready;
        let rejoined = heal(&repaired.layout, &workers, true);
        assert_eq!(rejoined.joined, vec![3]);
        assert_eq!(rejoined.layout.epoch, 3);
        assert!(rejoined.layout.members.contains(&3));
    }

    #[test]
    fn losses_beyond_tolerance_report_coverage_lost() {
        let mut workers = [Ready; 8];
        workers[0] = Failed;
        workers[1] = Missing;
        workers[2] = Failed;
        let h = heal(&layout(), &workers, true);
        assert!(h.coverage_lost);
        assert_eq!(h.layout, layout(), "the layout is kept for the replacements");
    }

    #[test]
    fn ids_beyond_the_states_count_as_missing() {
        assert_eq!(heal(&layout(), &[Ready; 5], true).lost, vec![5, 6, 7]);
        assert!(heal(&layout(), &[Ready; 5], false).lost.is_empty());
    }

    #[test]
    fn states_beyond_the_layout_and_malformed_layouts_do_not_panic() {
        let h = heal(&layout(), &[Ready; 12], true);
        assert_eq!(h.layout, layout(), "ids beyond n are not workers of this job");
        let mut bad = layout();
        bad.members.insert(40);
        let h = heal(&bad, &[Ready; 8], true);
        assert_eq!(h.lost, vec![40]);
        assert_eq!(h.layout, bad, "a malformed layout is left alone");
        assert_eq!(ready_workers(&[Ready, Starting, Ready]), BTreeSet::from([0, 2]));
    }
}
