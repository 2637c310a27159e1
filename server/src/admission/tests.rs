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
async fn waiting_parts_are_read_joining_ones_first() {
    let admission = Admission::new(1);
    admission.publish(eight_units(&[(4, 5)]));
    let first = admission.clone().enter(None).await;
    let low = tokio::spawn(admission.clone().enter(unit(0)));
    let joins = tokio::spawn(admission.clone().enter(unit(5)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(first);
    let slot = admitted_within(5000, joins)
        .await
        .expect("unit 5 joins unit 4: read first");
    assert!(!low.is_finished(), "unit 0 waits while unit 5 is read");
    drop(slot);
    drop(admitted_within(5000, low).await.expect("then unit 0"));
}
