use std::time::Duration;

use super::policy::{eight_units, unit};
use super::*;

async fn admitted_within(ms: u64, slot: tokio::task::JoinHandle<Slot>) -> Option<Slot> {
    tokio::time::timeout(Duration::from_millis(ms), slot)
        .await
        .ok()
        .map(Result::unwrap)
}

#[tokio::test]
async fn a_slot_given_to_a_waiter_that_left_passes_to_the_next() {
    let admission = Admission::new(1);
    let first = admission.clone().enter(None).await;
    let gone = tokio::spawn(admission.clone().enter(unit(1)));
    let next = tokio::spawn(admission.clone().enter(unit(5)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    gone.abort();
    let _ = gone.await;
    drop(first);
    let slot = admitted_within(5000, next)
        .await
        .expect("the next waiter got the slot");
    drop(slot);
    let again = tokio::spawn(admission.enter(None));
    assert!(
        admitted_within(5000, again).await.is_some(),
        "and the slot is free again"
    );
}

#[tokio::test]
async fn a_held_back_part_is_read_when_its_sibling_arrives_or_after_the_hold_limit() {
    let admission = Admission::new(1);
    admission.publish(eight_units(&[(0, 2), (4, 5), (6, 7)]));
    let held = tokio::spawn(admission.clone().enter(unit(2)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !held.is_finished(),
        "unit 2 would wait beyond the limit: held back"
    );
    // Its sibling arrives: unit 2 goes first (lowest), unit 3 next.
    let sibling = tokio::spawn(admission.clone().enter(unit(3)));
    let slot = admitted_within(100, held)
        .await
        .expect("read once its sibling waits too");
    // As the trainer does: what it holds is published before the slot is handed on.
    admission.publish(eight_units(&[(0, 2), (2, 3), (4, 5), (6, 7)]));
    drop(slot);
    drop(admitted_within(100, sibling).await.expect("then its sibling"));

    // Alone and never completed, a held part is still read after the hold limit.
    admission.publish(eight_units(&[(0, 2), (4, 5), (6, 7)]));
    let alone = tokio::spawn(admission.clone().enter(unit(2)));
    let started = std::time::Instant::now();
    drop(
        admitted_within(5000, alone)
            .await
            .expect("read after the hold limit"),
    );
    assert!(started.elapsed() >= HOLD_LIMIT - Duration::from_millis(10));
}
