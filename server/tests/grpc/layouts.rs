//! Layouts pushed over the Control service: epoch fencing and validation as status codes.

use anyk_core::plan;
use tonic::Code;

use crate::{BLOCKS, grad, layout, ready};

#[tokio::test]
async fn layouts_are_epoch_fenced_and_validated() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let (next, _) = anyk_core::repair(&layout, &[3]).unwrap();
    s.set_layout(&next).await.unwrap();
    // Re-pushing the same epoch is idempotent (an operator restart); an older one is refused.
    s.set_layout(&next).await.unwrap();
    let older = s.set_layout(&layout).await.unwrap_err();
    assert_eq!(older.code(), Code::FailedPrecondition);
    assert!(
        older.message().contains("older than the current epoch 2"),
        "{}",
        older.message()
    );
    let mut bad = next.clone();
    bad.epoch = 9;
    bad.holders[2].clear();
    let invalid = s.set_layout(&bad).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("block 2 has no holder"),
        "{}",
        invalid.message()
    );
    let mut wrong_size = plan(BLOCKS + 1, 2, 4, 3).unwrap();
    wrong_size.epoch = 10;
    let status = s.set_layout(&wrong_size).await.unwrap_err();
    assert!(status.message().contains("the job has 6"), "{}", status.message());
    // Gradients under the old epoch are fenced off; the new epoch trains on.
    let status = s.push(layout.holders[0][0], 0, 1, 0, &grad(0)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    s.complete_step(&next).await;
    s.stop().await;
}
