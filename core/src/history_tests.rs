use proptest::prelude::*;

use super::*;
use crate::{plan, rebalance, repair};

fn record(step: u64, loss: f32) -> StepRecord {
    StepRecord {
        step,
        loss,
        step_ms: Some(10.0),
        skipped: 1,
        margin: 2,
        elapsed_ms: step * 10,
    }
}

fn filled(steps: u64) -> History {
    let mut h = History::default();
    for s in 1..=steps {
        h.record_step(record(s, 1.0 / s as f32));
    }
    h
}

#[test]
fn every_step_has_its_point_until_the_bound() {
    let h = filled(1000);
    assert_eq!(h.steps.len(), 1000);
    assert_eq!(h.span, 1);
    assert_eq!(h.steps[9].step, 10);
    assert_eq!(h.steps[9].loss, Some(0.1));
    assert_eq!(h.check(), Ok(()));
}

#[test]
fn past_the_bound_points_merge_and_totals_stay_exact() {
    let steps = MAX_POINTS as u64 * 2 + 7;
    let h = filled(steps);
    assert!(h.steps.len() <= MAX_POINTS, "{}", h.steps.len());
    assert_eq!(h.span, 4);
    assert_eq!(h.skipped(), steps, "one straggler per step, summed exactly");
    assert_eq!(h.steps.iter().map(|p| p.steps).sum::<u64>(), steps);
    assert_eq!(h.steps.last().map(|p| p.step), Some(steps));
    assert_eq!(h.steps[0].steps, 4);
    // The mean of 1, 1/2, 1/3, 1/4.
    let first = h.steps[0].loss.unwrap();
    assert!((first - 25.0 / 48.0).abs() < 1e-6, "{first}");
    assert_eq!(h.check(), Ok(()));
}

#[test]
fn non_finite_losses_are_kept_as_none_and_not_averaged_in() {
    let mut h = History::default();
    h.record_step(record(1, f32::NAN));
    h.record_step(StepRecord {
        step_ms: None,
        ..record(2, f32::INFINITY)
    });
    assert_eq!((h.steps[0].loss, h.steps[1].loss), (None, None));
    assert_eq!(h.steps[1].step_ms, None);
    assert_eq!(mean(None, 3, Some(2.0), 1), Some(2.0));
    assert_eq!(mean(Some(1.0), 3, Some(3.0), 1), Some(1.5));
}

#[test]
fn a_redone_step_replaces_what_followed_it() {
    let mut h = filled(10);
    h.record_step(record(6, 9.0));
    assert_eq!(h.steps.len(), 6);
    assert_eq!(h.steps[5].loss, Some(9.0));
}

#[test]
fn layout_changes_say_what_happened() {
    let first = plan(24, 3, 8, 6).unwrap();
    let (repaired, moves) = repair(&first, &[4]).unwrap();
    let (rebalanced, _) = rebalance(&repaired, &[4]).unwrap();
    let mut h = History::default();
    h.record_change(None, &first, 0, 0);
    h.record_change(Some(&first), &repaired, 100, 900);
    h.record_change(Some(&repaired), &repaired, 101, 910);
    h.record_change(Some(&repaired), &rebalanced, 117, 1100);
    let kinds: Vec<ChangeKind> = h.changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [ChangeKind::First, ChangeKind::Repair, ChangeKind::Rebalance],
        "the same epoch again is no change"
    );
    let repair = &h.changes[1];
    assert_eq!((repair.epoch, repair.step, repair.elapsed_ms), (2, 100, 900));
    assert_eq!(
        (repair.lost.as_slice(), repair.joined.as_slice()),
        (&[4][..], &[][..])
    );
    assert_eq!(repair.copies_moved, moves.len() as u64);
    assert_eq!(repair.margin, 2);
    assert_eq!(h.changes[2].joined, [4]);
    assert_eq!(h.elapsed_ms(), 1100);
}

#[test]
fn layout_changes_are_bounded_newest_kept() {
    let mut layout = plan(6, 2, 4, 3).unwrap();
    let mut h = History::default();
    for step in 0..MAX_CHANGES as u64 + 5 {
        let next = Layout {
            epoch: layout.epoch + 1,
            ..layout.clone()
        };
        h.record_change(Some(&layout), &next, step, step);
        layout = next;
    }
    assert_eq!(h.changes.len(), MAX_CHANGES);
    assert_eq!(h.changes[0].step, 5);
    assert_eq!(h.changes[0].kind, ChangeKind::Relayout);
}

#[test]
fn check_refuses_what_recording_never_makes() {
    let good = filled(3);
    let mut bad = good.clone();
    bad.steps.swap(0, 1);
    assert_eq!(bad.check(), Err(HistoryError::Order));
    let mut bad = good.clone();
    bad.span = 0;
    assert_eq!(bad.check(), Err(HistoryError::Span));
    let mut bad = good.clone();
    bad.steps[0].loss = Some(f32::INFINITY);
    assert_eq!(bad.check(), Err(HistoryError::NotFinite));
    let mut bad = good;
    bad.changes = vec![bad_change(); MAX_CHANGES + 1];
    assert_eq!(bad.check(), Err(HistoryError::TooLong));
}

fn bad_change() -> LayoutChange {
    LayoutChange {
        epoch: 1,
        step: 0,
        elapsed_ms: 0,
        kind: ChangeKind::First,
        lost: vec![],
        joined: vec![],
        copies_moved: 0,
        margin: 0,
    }
}

proptest! {
    /// JSON carries every finite f32 exactly (serde_json's `float_roundtrip`): a history read
    /// back from a checkpoint is the history written.
    #[test]
    fn any_history_round_trips_through_json(
        points in prop::collection::vec((any::<f32>(), any::<f32>(), 0u64..9, -1i64..4), 0..40),
    ) {
        let mut h = History::default();
        for (i, &(loss, ms, skipped, margin)) in points.iter().enumerate() {
            let step = i as u64 + 1;
            h.record_step(StepRecord { step, loss, step_ms: Some(ms), skipped, margin, elapsed_ms: step });
        }
        let json = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, h);
    }
}
