//! The layout math against brute force and under random failure/join sequences.

// A failed unwrap in a test is a failed test with a line number.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use anyk_core::{Layout, PlanError, RepairError, Scheme, coverage_of, plan, rebalance, repair};
use proptest::prelude::*;

/// Every k-subset of `live`, enumerated the slow way.
fn subsets(live: &[u32], k: usize) -> Vec<Vec<u32>> {
    if k == 0 {
        return vec![vec![]];
    }
    if live.len() < k {
        return vec![];
    }
    let (first, rest) = (live[0], &live[1..]);
    let mut with: Vec<Vec<u32>> = subsets(rest, k - 1);
    with.iter_mut().for_each(|s| s.insert(0, first));
    with.extend(subsets(rest, k));
    with
}

/// Brute force: does every k-subset of the live members hold every block?
fn any_k_cover(layout: &Layout, live: &BTreeSet<u32>, k: u32) -> bool {
    let live: Vec<u32> = layout.members.intersection(live).copied().collect();
    subsets(&live, k as usize).iter().all(|subset| {
        layout
            .holders
            .iter()
            .all(|hs| hs.iter().any(|w| subset.contains(w)))
    })
}

fn assert_well_formed(layout: &Layout) {
    assert_eq!(layout.holders.len(), layout.blocks as usize);
    for (b, hs) in layout.holders.iter().enumerate() {
        let distinct: BTreeSet<u32> = hs.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            hs.len(),
            "block {b} has two copies on one worker: {hs:?}"
        );
        assert!(
            hs.iter().all(|w| layout.members.contains(w)),
            "block {b} held by a non-member"
        );
        let want = (layout.replication as usize).min(layout.members.len());
        assert_eq!(hs.len(), want, "block {b} has {} holders, want {want}", hs.len());
    }
}

fn assert_balanced(layout: &Layout) {
    let loads = layout.loads();
    let member_loads: Vec<usize> = layout.members.iter().map(|&w| loads[w as usize]).collect();
    let (lo, hi) = (
        member_loads.iter().min().unwrap(),
        member_loads.iter().max().unwrap(),
    );
    assert!(hi - lo <= 1, "loads differ by more than 1: {member_loads:?}");
}

fn all(n: u32) -> BTreeSet<u32> {
    (0..n).collect()
}

#[test]
fn plan_matches_brute_force_for_every_small_job() {
    for n in 2..=9 {
        for k in 1..=n {
            for r in (n - k + 1).max(2)..=n {
                for m in 1..=2 * n + 3 {
                    let layout = plan(m, r, n, k).unwrap();
                    assert_well_formed(&layout);
                    assert_balanced(&layout);
                    assert!(any_k_cover(&layout, &all(n), k), "n={n} k={k} r={r} m={m}");
                    // One worker fewer than tolerated breaks some k-subset: the bound is tight
                    // because coverage is exactly "n-k+1 holders per block".
                    let cov = coverage_of(&layout, &all(n));
                    assert!(cov.holds);
                    assert_eq!(cov.margin, i64::from(r) - 1);
                    // The primaries alone (rank 0 of every worker) cover the set: the straggler-
                    // free step needs only the first ~m/n blocks of each queue.
                    let firsts: BTreeSet<u32> = (0..n)
                        .flat_map(|w| {
                            let q = layout.queue(w);
                            let primaries = layout.holders.iter().filter(|hs| hs[0] == w).count();
                            q.into_iter().take(primaries)
                        })
                        .collect();
                    assert_eq!(
                        firsts.len(),
                        m as usize,
                        "primaries do not cover n={n} k={k} r={r} m={m}"
                    );
                    // Each worker's primaries are exactly its unit, so on time it sends one sum;
                    // a worker without primaries has no unit.
                    let mut units = layout.units.iter();
                    for w in 0..n {
                        let primaries: Vec<u32> =
                            (0..m).filter(|&b| layout.holders[b as usize][0] == w).collect();
                        if primaries.is_empty() {
                            continue;
                        }
                        let &(lo, hi) = units.next().unwrap();
                        let want: Vec<u32> = (lo..hi).collect();
                        assert_eq!(primaries, want, "n={n} k={k} r={r} m={m} w={w}");
                    }
                    assert!(units.next().is_none(), "an empty unit: n={n} k={k} r={r} m={m}");
                    let sync = anyk_core::uncoded(&layout);
                    assert_eq!(sync.units, layout.units);
                    assert!(sync.holders.iter().all(|hs| hs.len() == 1));
                }
            }
        }
    }
}

#[test]
fn verify_agrees_with_brute_force_after_failures() {
    for n in 3..=8 {
        for k in 2..=n {
            let r = (n - k + 1).max(2);
            if r > n {
                continue;
            }
            let layout = plan(2 * n + 1, r, n, k).unwrap();
            for dead in 0..n {
                let live: BTreeSet<u32> = all(n).into_iter().filter(|&w| w != dead).collect();
                let cov = coverage_of(&layout, &live);
                assert_eq!(
                    cov.holds,
                    any_k_cover(&layout, &live, k) && live.len() as u32 >= k
                );
            }
        }
    }
}

#[test]
fn rejects_impossible_parameters_naming_the_bound() {
    assert_eq!(plan(0, 2, 4, 3), Err(PlanError::NoBlocks(0)));
    assert!(matches!(
        plan(8, 2, 4, 0),
        Err(PlanError::TargetOutOfRange { .. })
    ));
    assert!(matches!(
        plan(8, 2, 4, 5),
        Err(PlanError::TargetOutOfRange { .. })
    ));
    assert!(matches!(
        plan(8, 1, 4, 4),
        Err(PlanError::ReplicationOutOfRange { .. })
    ));
    assert!(matches!(
        plan(8, 5, 4, 4),
        Err(PlanError::ReplicationOutOfRange { .. })
    ));
    let err = plan(24, 2, 8, 6).unwrap_err();
    assert_eq!(
        err,
        PlanError::CoverageBound {
            replication: 2,
            workers: 8,
            target: 6,
            needed: 3
        }
    );
    assert!(err.to_string().contains("r >= n-k+1"), "{err}");
}

#[test]
fn fractional_when_r_divides_n_cyclic_otherwise() {
    let fr = plan(12, 3, 6, 4).unwrap();
    assert_eq!(fr.scheme, Scheme::Fractional);
    // One unit per worker: its primaries.
    assert_eq!(fr.units, vec![(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]);
    // Members of a group hold identical block sets.
    let set = |w| fr.queue(w).into_iter().collect::<BTreeSet<u32>>();
    assert_eq!(set(0), set(1));
    assert_eq!(set(1), set(2));
    assert_ne!(set(0), set(3));
    let cy = plan(24, 3, 8, 6).unwrap();
    assert_eq!(cy.scheme, Scheme::Cyclic);
    // Worker w starts with its unit, blocks 3w..3w+3, its primaries.
    for w in 0..8 {
        assert_eq!(cy.units[w as usize], (3 * w, 3 * w + 3));
        assert_eq!(cy.queue(w)[..3], [3 * w, 3 * w + 1, 3 * w + 2]);
    }
}

#[test]
fn backups_of_one_workers_primaries_are_spread() {
    let layout = plan(24, 3, 8, 6).unwrap();
    for w in 0..8 {
        let seconds: BTreeSet<u32> = layout
            .holders
            .iter()
            .filter(|hs| hs[0] == w)
            .map(|hs| hs[1])
            .collect();
        assert_eq!(
            seconds.len(),
            3,
            "worker {w}'s primaries all back up on {seconds:?}"
        );
    }
}

#[test]
fn repair_reports_coverage_lost_instead_of_pretending() {
    let layout = plan(24, 3, 8, 6).unwrap();
    let err = repair(&layout, &[0, 1, 2]).unwrap_err();
    assert_eq!(err, RepairError::CoverageLost { live: 5, target: 6 });
    assert_eq!(repair(&layout, &[9]).unwrap_err(), RepairError::UnknownWorker(9));
}

#[test]
fn the_last_epoch_is_not_wrapped_to_the_oldest() {
    let last = Layout {
        epoch: u64::MAX,
        ..plan(24, 3, 8, 6).unwrap()
    };
    let exhausted = RepairError::EpochExhausted(u64::MAX);
    assert_eq!(repair(&last, &[1]).unwrap_err(), exhausted);
    assert_eq!(rebalance(&last, &[]).unwrap_err(), exhausted);
}

#[derive(Debug, Clone)]
enum Event {
    Fail(Vec<u32>),
    Join,
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(0u32..9, 1..3).prop_map(Event::Fail),
            Just(Event::Join),
        ],
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn coverage_survives_failures_and_joins(
        n in 3u32..=9, extra in 0u32..3, m in 1u32..30, script in events()
    ) {
        let k = n.saturating_sub(extra + 1).max(1);
        let r = (n - k + 1).max(2).min(n);
        let mut layout = plan(m, r, n, k).unwrap();
        for event in script {
            match event {
                Event::Fail(ws) => {
                    let lost: Vec<u32> = ws.into_iter().map(|w| w % n)
                        .filter(|w| layout.members.contains(w)).collect::<BTreeSet<_>>().into_iter().collect();
                    match repair(&layout, &lost) {
                        Ok((next, moves)) => {
                            prop_assert_eq!(next.epoch, layout.epoch + 1);
                            // Only blocks that lost a holder move, one copy per lost copy at most.
                            for mv in &moves {
                                prop_assert!(layout.holders[mv.block as usize].iter().any(|w| lost.contains(w)));
                                prop_assert!(lost.contains(&mv.from.unwrap()));
                            }
                            let lost_copies: usize = layout.holders.iter()
                                .map(|hs| hs.iter().filter(|w| lost.contains(w)).count()).sum();
                            prop_assert!(moves.len() <= lost_copies);
                            // Untouched blocks keep their holders and order.
                            for (b, hs) in layout.holders.iter().enumerate() {
                                if !hs.iter().any(|w| lost.contains(w)) {
                                    prop_assert_eq!(hs, &next.holders[b]);
                                }
                            }
                            assert_well_formed(&next);
                            let live = next.members.clone();
                            let cov = coverage_of(&next, &live);
                            prop_assert!(cov.holds && cov.under_replicated.is_empty());
                            if live.len() <= 7 {
                                prop_assert!(any_k_cover(&next, &live, k));
                            }
                            layout = next;
                        }
                        Err(RepairError::CoverageLost { live, .. }) => prop_assert!(live < k),
                        Err(e) => prop_assert!(false, "unexpected {}", e),
                    }
                }
                Event::Join => {
                    let joined: Vec<u32> = (0..n).filter(|w| !layout.members.contains(w)).take(1).collect();
                    let (next, moves) = rebalance(&layout, &joined).unwrap();
                    assert_well_formed(&next);
                    assert_balanced(&next);
                    // Minimal: exactly what the larger of excess and deficit requires.
                    let total: usize = next.loads().iter().sum();
                    let members = next.members.len();
                    let (floor, ceil) = (total / members, total.div_ceil(members));
                    let loads = layout.loads();
                    let old_total: usize = loads.iter().sum();
                    let excess: usize = next.members.iter().map(|&w| loads[w as usize].saturating_sub(ceil)).sum();
                    let deficit: usize = next.members.iter().map(|&w| floor.saturating_sub(loads[w as usize])).sum();
                    let added = total - old_total;
                    prop_assert!(moves.len() <= excess.max(deficit) + added,
                        "{} moves, excess {} deficit {} added {}", moves.len(), excess, deficit, added);
                    prop_assert!(coverage_of(&next, &next.members.clone()).holds);
                    layout = next;
                }
            }
        }
    }
}
