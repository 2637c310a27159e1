//! The history a trainer records and carries through its checkpoints.

use std::time::Instant;

use anyk_core::checkpoint::Checkpoint;
use anyk_core::history::ChangeKind;
use anyk_core::repair;

use super::{BLOCKS, complete_step, fractional, push, ready, settings};
use crate::trainer::Trainer;

#[test]
fn steps_and_layout_changes_are_recorded_and_survive_a_resume() {
    let layout = fractional();
    let mut t = ready(&layout);
    complete_step(&mut t, &layout);
    // Workers 0 and 2 alone cover step 2: 1 and 3 are skipped.
    for b in 0..BLOCKS {
        push(&mut t, if b < 3 { 0 } else { 2 }, 1, b).unwrap();
    }
    let (repaired, _) = repair(&layout, &[3]).unwrap();
    t.set_layout(repaired.clone()).unwrap();
    t.set_layout(repaired.clone()).unwrap();
    complete_step(&mut t, &repaired);

    let history = t.history().clone();
    let steps: Vec<(u64, u64, i64)> = history
        .steps
        .iter()
        .map(|p| (p.step, p.skipped, p.margin))
        .collect();
    assert_eq!(steps, [(1, 0, 1), (2, 2, 1), (3, 0, 1)]);
    assert!(history.steps.iter().all(|p| p.loss == Some(0.5)));
    assert_eq!(
        history.steps[0].step_ms, None,
        "the first step waits for boots: untimed"
    );
    assert!(history.steps[1].step_ms.is_some());
    let changes: Vec<(u64, u64, ChangeKind, &[u32])> = history
        .changes
        .iter()
        .map(|c| (c.epoch, c.step, c.kind, c.lost.as_slice()))
        .collect();
    assert_eq!(
        changes,
        [
            (1, 0, ChangeKind::First, &[][..]),
            (2, 2, ChangeKind::Repair, &[3][..])
        ],
        "the same layout twice is one change"
    );

    let ckpt = Checkpoint::decode(&t.checkpoint().unwrap().encode()).unwrap();
    assert_eq!(ckpt.history, history, "a checkpoint carries the history exactly");
    let mut resumed = Trainer::resume(settings(), ckpt, Instant::now());
    complete_step(&mut resumed, &repaired);
    let again = resumed.history();
    assert_eq!(again.steps[..3], history.steps[..]);
    assert_eq!((again.steps[3].step, again.steps[3].step_ms), (4, None));
    assert!(again.steps[3].elapsed_ms >= history.steps[2].elapsed_ms);
    assert_eq!(again.changes, history.changes);
}
