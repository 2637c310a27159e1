//! Installing layouts: validation, epoch fencing (docs/design.md, invariant 3), assignments.

use anyk_core::{Layout, plan, repair};

use super::{BLOCKS, fractional, push, ready, settings};
use crate::error::{LayoutError, RequestError};
use crate::trainer::Trainer;

fn installed(layout: &Layout) -> Trainer {
    let mut t = Trainer::new(settings());
    t.set_layout(layout.clone()).unwrap();
    t
}

/// The reason `layout` is refused as invalid.
fn invalid(t: &mut Trainer, layout: Layout) -> LayoutError {
    match t.set_layout(layout) {
        Err(RequestError::InvalidLayout(why)) => why,
        other => panic!("expected an invalid layout, got {other:?}"),
    }
}

#[test]
fn every_worker_gets_its_assignment() {
    let layout = fractional();
    let mut t = Trainer::new(settings());
    let assignments = t.set_layout(layout.clone()).unwrap();
    assert_eq!(assignments.len(), 4);
    for (worker, a) in &assignments {
        assert_eq!(a.epoch, 1);
        assert_eq!(a.blocks, layout.queue(*worker));
        assert_eq!(a.unit_bounds, vec![0, 2, 2, 3, 3, 5, 5, 6]);
        let primaries = layout.holders.iter().filter(|hs| hs[0] == *worker).count();
        assert_eq!(a.first_rank as usize, primaries);
        assert_eq!(t.assignment(*worker).as_ref(), Some(a));
    }
    // A lost worker is no member of the repaired layout: it is told it holds nothing.
    let (next, _) = repair(&layout, &[3]).unwrap();
    let assignments = t.set_layout(next).unwrap();
    assert_eq!(assignments.len(), 4, "assignments go to every worker id");
    assert!(assignments[3].1.blocks.is_empty());
    assert_eq!(assignments[3].1.epoch, 2);
}

#[test]
fn an_older_epoch_is_refused() {
    let layout = fractional();
    let mut t = installed(&layout);
    let (next, _) = repair(&layout, &[3]).unwrap();
    t.set_layout(next).unwrap();
    assert!(matches!(
        t.set_layout(layout),
        Err(RequestError::OlderLayout { got: 1, current: 2 })
    ));
    assert_eq!(t.progress().epoch, 2);
}

#[test]
fn an_epoch_reused_with_a_different_layout_is_refused() {
    let layout = fractional();
    let mut t = installed(&layout);
    let (mut other, _) = repair(&layout, &[3]).unwrap();
    other.epoch = layout.epoch;
    assert!(matches!(t.set_layout(other), Err(RequestError::EpochReused(1))));
    assert_eq!(t.assignment(0).unwrap().blocks, layout.queue(0));
}

#[test]
fn the_same_layout_can_be_installed_again() {
    // An operator that restarted pushes what the server already holds.
    let layout = fractional();
    let mut t = ready(&layout);
    push(&mut t, 0, 0, 0).unwrap();
    let again = t.set_layout(layout.clone()).unwrap();
    assert_eq!(again.len(), 4);
    assert_eq!(
        t.covered(),
        vec![0],
        "re-installing keeps the step being collected"
    );
}

/// `fractional()` at epoch 2 with `change` applied.
fn changed(change: fn(&mut Layout)) -> Layout {
    let mut layout = fractional();
    layout.epoch = 2;
    change(&mut layout);
    layout
}

/// Checks that each layout is refused for its reason and leaves epoch 1 installed.
fn assert_refused(cases: Vec<(Layout, LayoutError)>) {
    let mut t = installed(&fractional());
    for (layout, want) in cases {
        assert_eq!(invalid(&mut t, layout), want);
        assert_eq!(t.progress().epoch, 1, "{want}: nothing may be installed");
    }
}

#[test]
fn invalid_layouts_are_refused_with_precise_errors() {
    let mut wrong_size = plan(BLOCKS + 1, 2, 4, 3).unwrap();
    wrong_size.epoch = 2;
    let block_count = |blocks, holder_lists| LayoutError::BlockCount {
        blocks,
        holder_lists,
        job_blocks: 6,
    };
    assert_refused(vec![
        (wrong_size, block_count(7, 7)),
        (changed(|l| l.holders.truncate(5)), block_count(6, 5)),
        (changed(|l| l.holders[2].clear()), LayoutError::NoHolder(2)),
        (
            changed(|l| {
                l.members.remove(&3);
            }),
            LayoutError::HolderNotMember { block: 3, worker: 3 },
        ),
        (
            changed(|l| l.holders[1] = vec![0, 0]),
            LayoutError::DuplicateCopy(1),
        ),
        (
            changed(|l| {
                l.members.insert(9);
            }),
            LayoutError::MemberOutOfRange { workers: 4 },
        ),
    ]);
}

#[test]
fn units_that_do_not_tile_the_blocks_are_refused() {
    let tiling = |units: [(u32, u32); 2]| -> Layout {
        let mut layout = changed(|_| {});
        layout.units = units.to_vec();
        layout
    };
    assert_refused(
        [
            [(0, 3), (4, 6)],
            [(0, 3), (3, 5)],
            [(1, 3), (3, 6)],
            [(0, 0), (0, 6)],
            // An empty or reversed last unit (found by fuzzing: the first once panicked in the
            // reduction of the step that covered every block).
            [(0, 8), (8, 6)],
            [(0, 6), (6, 6)],
        ]
        .into_iter()
        .map(|units| (tiling(units), LayoutError::UnitsDoNotTile))
        .collect(),
    );
}

#[test]
fn reduction_units_cannot_change_during_a_job() {
    let layout = fractional();
    let mut t = installed(&layout);
    let mut single_blocks = layout.clone();
    single_blocks.epoch = 2;
    single_blocks.units = (0..BLOCKS).map(|b| (b, b + 1)).collect();
    assert_eq!(invalid(&mut t, single_blocks), LayoutError::UnitsChanged);
    // The first layout may fix any valid units: single blocks, say.
    let mut single = plan(BLOCKS, 2, 3, 2).unwrap();
    single.units = (0..BLOCKS).map(|b| (b, b + 1)).collect();
    installed(&single);
}

#[test]
fn a_gradient_of_a_replaced_epoch_is_refused() {
    let layout = fractional();
    let mut t = ready(&layout);
    let (next, _) = repair(&layout, &[3]).unwrap();
    t.set_layout(next.clone()).unwrap();
    let old = super::request(0, 0, 1, &[0], &super::grad(0));
    assert!(matches!(
        t.push(&old, std::time::Instant::now()),
        Err(RequestError::WrongEpoch { got: 1, current: 2 })
    ));
    // The new epoch trains on.
    super::complete_step(&mut t, &next);
}
