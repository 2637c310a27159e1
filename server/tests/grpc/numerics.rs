//! A step that would make the model non-finite, over the wire: not applied, reported in
//! Progress, further gradients refused, the server up and its last good state kept.

use tonic::Code;

use crate::{BLOCKS, PARAMS, grad, layout, one_step_in};

#[tokio::test]
async fn finite_gradients_that_overflow_fail_the_job_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout();
    let mut s = one_step_in(dir.path(), &layout, 0.0).await;
    let good = s.progress().await;
    for b in 0..BLOCKS {
        let response = s.push(layout.holders[b as usize][0], 1, layout.epoch, b, &[3e38; PARAMS]);
        response.await.unwrap();
    }
    let failed = s.progress().await;
    assert_eq!(
        (failed.step, failed.failed_step),
        (1, 1),
        "the step was not applied"
    );
    assert!(
        failed
            .failed_reason
            .contains("the reduced gradient is not finite at index 0 (inf)"),
        "{}",
        failed.failed_reason
    );
    assert_eq!(
        failed.param_sha256, good.param_sha256,
        "the parameters are the last good ones"
    );
    let status = s
        .push(layout.holders[0][0], 1, layout.epoch, 0, &grad(0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().starts_with("training failed at step 1: "),
        "{}",
        status.message()
    );
    let saved = s.checkpoint().await;
    assert_eq!(saved.step, 1, "the checkpoint holds the last good step");
    s.stop().await;
}

#[tokio::test]
async fn a_nan_gradient_is_refused_alone_and_training_goes_on() {
    let layout = layout();
    let mut s = crate::ready(&layout).await;
    let mut nan = grad(0);
    nan[2] = f32::NAN;
    let status = s
        .push(layout.holders[0][0], 0, layout.epoch, 0, &nan)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(s.progress().await.failed_reason.is_empty());
    s.complete_step(&layout).await;
    s.stop().await;
}
