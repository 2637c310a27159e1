//! Checkpoints on disk through a real restart: the newest complete one is resumed.

use anyk_server::CheckpointStore;

use crate::{PARAMS, layout, one_step_in, start};

#[tokio::test]
async fn resumes_from_the_newest_complete_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout();
    let mut s = one_step_in(dir.path(), &layout, 1.0).await;
    s.complete_step(&layout).await;
    let saved = s.checkpoint().await;
    assert_eq!(saved.step, 2);
    let before = s.progress().await;
    s.stop().await;
    // A torn newer file (a crash mid-write that bypassed the rename) must be skipped.
    std::fs::write(dir.path().join("ckpt-000000000099.anyk"), b"ANYKCKPT1\ntorn").unwrap();

    let mut s = start(Some(CheckpointStore::new(dir.path())), 1 << 20).await;
    let after = s.progress().await;
    assert_eq!((after.step, after.epoch), (2, layout.epoch));
    assert_eq!(after.param_sha256, before.param_sha256);
    // Resumed parameters are there: a join needs no initialization and training continues.
    let join = s.join(1).await;
    assert!(!join.needs_init);
    assert_eq!(join.param_count, PARAMS as u64);
    s.set_layout(&layout).await.unwrap();
    s.complete_step(&layout).await;
    s.stop().await;
}
