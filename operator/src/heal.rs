//! Self-healing decisions, pure: given the layout and what the worker pods look like, which
//! workers are lost, the repaired layout, and which replacements have joined.

use std::collections::BTreeSet;

use anyk_core::{Layout, Move, RepairError, rebalance, repair};

/// What the reconcile saw of each worker id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerPod {
    /// No pod (never created, deleted, or evicted).
    Missing,
    /// The pod failed (its process died) or sits on a node that is gone.
    Failed,
    /// Exists but is not ready yet.
    Starting,
    Ready,
    /// Exited successfully: a worker or server does that only once training is over.
    Exited,
}

/// The outcome of one healing pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Healing {
    pub layout: Layout,
    /// Members found lost in this pass (their pods are to be replaced).
    pub lost: Vec<u32>,
    /// Copies moved by the repair.
    pub repair_moves: Vec<Move>,
    /// Non-members whose replacement pods are ready and were rebalanced in.
    pub joined: Vec<u32>,
    /// Set when fewer than k workers are left: the server must not aggregate until they are back.
    pub coverage_lost: bool,
}

/// `pods[w]` is worker w's pod. `created` says whether pods were created before (a missing pod
/// then means deleted or evicted, not "not created yet").
pub fn heal(layout: &Layout, pods: &[WorkerPod], created: bool) -> Healing {
    let lost: Vec<u32> = layout
        .members
        .iter()
        .copied()
        .filter(
            |&w| match pods.get(w as usize).copied().unwrap_or(WorkerPod::Missing) {
                WorkerPod::Failed => true,
                WorkerPod::Missing => created,
                WorkerPod::Starting | WorkerPod::Ready | WorkerPod::Exited => false,
            },
        )
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
            // Too few left to cover: keep the layout (the lost still count as members so their
            // blocks wait for the replacements) and say so.
            Err(RepairError::CoverageLost { .. }) => healing.coverage_lost = true,
            Err(RepairError::UnknownWorker(_)) => unreachable!("members are worker ids"),
        }
    }
    let joined: Vec<u32> = (0..layout.workers)
        .filter(|w| !healing.layout.members.contains(w) && !lost.contains(w))
        .filter(|&w| pods.get(w as usize) == Some(&WorkerPod::Ready))
        .collect();
    if !joined.is_empty() {
        let (next, _) = rebalance(&healing.layout, &joined).expect("worker ids are in range");
        healing.layout = next;
        healing.joined = joined;
    }
    healing
}

/// Members that are ready right now.
pub fn live(pods: &[WorkerPod]) -> BTreeSet<u32> {
    (0..pods.len() as u32)
        .filter(|&w| pods[w as usize] == WorkerPod::Ready)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkerPod::*;

    fn layout() -> Layout {
        anyk_core::plan(24, 3, 8, 6).unwrap()
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
        assert!(live(&[Exited; 8]).is_empty());
    }

    #[test]
    fn missing_pods_before_creation_are_not_lost() {
        assert!(heal(&layout(), &[Missing; 8], false).lost.is_empty());
    }

    #[test]
    fn a_failed_worker_is_repaired_and_its_replacement_rebalanced_in() {
        let mut pods = [Ready; 8];
        pods[3] = Failed;
        let repaired = heal(&layout(), &pods, true);
        assert_eq!(repaired.lost, vec![3]);
        assert_eq!(repaired.layout.epoch, 2);
        assert_eq!(repaired.repair_moves.len(), 9, "exactly worker 3's copies move");
        assert!(!repaired.layout.members.contains(&3));
        // The replacement starts: nothing changes until it is ready.
        pods[3] = Starting;
        assert_eq!(heal(&repaired.layout, &pods, true).layout, repaired.layout);
        pods[3] = Ready;
        let rejoined = heal(&repaired.layout, &pods, true);
        assert_eq!(rejoined.joined, vec![3]);
        assert_eq!(rejoined.layout.epoch, 3);
        assert!(rejoined.layout.members.contains(&3));
    }

    #[test]
    fn losses_beyond_tolerance_report_coverage_lost() {
        let mut pods = [Ready; 8];
        pods[0] = Failed;
        pods[1] = Missing;
        pods[2] = Failed;
        let h = heal(&layout(), &pods, true);
        assert!(h.coverage_lost);
        assert_eq!(h.layout, layout(), "the layout is kept for the replacements");
    }
}
