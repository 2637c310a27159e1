//! Aggregation seen from a subscribed worker: the event stream and the progress counters.

use anyk_core::tensor_bytes;
use anyk_proto::v1::{SubscribeRequest, worker_event::Event};

use crate::{BLOCKS, grad, layout, ready};

#[tokio::test]
async fn aggregates_at_first_cover_exactly_and_releases_the_next_step() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let mut events = s
        .training
        .subscribe(SubscribeRequest { worker: 1 })
        .await
        .unwrap()
        .into_inner();
    // Assignment first, then step 0.
    assert!(matches!(
        events.message().await.unwrap().unwrap().event,
        Some(Event::Assignment(_))
    ));
    assert!(
        matches!(events.message().await.unwrap().unwrap().event, Some(Event::Step(ref st)) if st.step == 0)
    );
    // Blocks arrive in reverse order, from their last-ranked holders.
    for b in (0..BLOCKS).rev() {
        let holder = *layout.holders[b as usize].last().unwrap();
        let r = s.push(holder, 0, layout.epoch, b, &grad(b)).await.unwrap();
        assert!(r.accepted);
        assert_eq!(r.step_done, b == 0);
    }
    let Some(Event::Step(next)) = events.message().await.unwrap().unwrap().event else {
        panic!("no step 1")
    };
    assert_eq!(next.step, 1);
    let params = tensor_bytes::from_bytes(&next.params.unwrap().data).unwrap();
    // params = 0 - mean(grad), summed along the reduction tree whatever the arrival order: this
    // layout's units are 0..2, 2..3, 3..5, 5..6, so the tree is ((0+1)+2) + ((3+4)+5).
    assert_eq!(layout.units, vec![(0, 2), (2, 3), (3, 5), (5, 6)]);
    let unit = |lo: u32, hi: u32| {
        let mut acc = grad(lo);
        for b in lo + 1..hi {
            acc.iter_mut().zip(grad(b)).for_each(|(a, g)| *a += g);
        }
        acc
    };
    let (first, second) = (unit(0, 3), unit(3, 6));
    let expected: Vec<f32> = first
        .iter()
        .zip(&second)
        .map(|(a, b)| 0.0 - (a + b) / BLOCKS as f32)
        .collect();
    assert_eq!(params, expected);
    s.stop().await;
}

#[tokio::test]
async fn late_and_redundant_gradients_are_dropped_and_counted() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let second = layout.holders[0][1];
    s.push(layout.holders[0][0], 0, 1, 0, &grad(0)).await.unwrap();
    let dup = s.push(second, 0, 1, 0, &grad(0)).await.unwrap();
    assert!(!dup.accepted && !dup.step_done && dup.covered.contains(&0));
    for b in 1..BLOCKS {
        s.push(layout.holders[b as usize][0], 0, 1, b, &grad(b))
            .await
            .unwrap();
    }
    let late = s.push(layout.holders[3][1], 0, 1, 3, &grad(3)).await.unwrap();
    assert!(!late.accepted && late.step_done);
    let p = s.progress().await;
    assert_eq!(
        (p.step, p.late_gradients_dropped, p.redundant_gradients_dropped),
        (1, 1, 1)
    );
    s.stop().await;
}
