//! Steps that would make the model non-finite are not applied: the job fails cleanly, keeps
//! its last good state and refuses further gradients. Clipping by global norm.

use std::time::Instant;

use anyk_core::Layout;
use anyk_core::optimizer::OptimizerConfig;

use super::{BLOCKS, PARAMS, fractional, ready, ready_with, request, settings};
use crate::error::RequestError;
use crate::settings::Settings;
use crate::trainer::{NonFinite, Trainer};

/// Pushes `values` for every block of the current step from its primary holder.
fn push_all(t: &mut Trainer, layout: &Layout, values: &[f32]) -> Vec<bool> {
    let step = t.step();
    (0..BLOCKS)
        .map(|b| {
            let req = request(layout.holders[b as usize][0], step, layout.epoch, &[b], values);
            t.push(&req, Instant::now()).unwrap().failed
        })
        .collect()
}

#[test]
fn finite_gradients_that_overflow_the_sum_fail_the_job_cleanly() {
    let layout = fractional();
    let mut t = ready(&layout);
    super::complete_step(&mut t, &layout);
    let good = t.checkpoint().unwrap();
    let failed = push_all(&mut t, &layout, &[3e38; PARAMS]);
    assert_eq!(
        failed,
        [false, false, false, false, false, true],
        "the last block fails the step"
    );
    assert_eq!(t.step(), 1, "the step was not applied");
    let failure = t.failure().unwrap();
    assert_eq!(failure.step, 1);
    assert!(matches!(failure.reason, NonFinite::Gradient { index: 0, .. }));
    let progress = t.progress();
    assert_eq!(progress.failed_step, 1);
    assert!(
        progress.failed_reason.contains("reduced gradient is not finite"),
        "{}",
        progress.failed_reason
    );
    assert_eq!(t.checkpoint().unwrap(), good, "the last good state is kept");
    let again = t.push(&request(0, 1, 1, &[0], &[0.1; PARAMS]), Instant::now());
    let Err(err) = again else {
        panic!("a gradient after the failure was taken: {again:?}")
    };
    assert!(matches!(err, RequestError::TrainingFailed(_)));
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.to_string().starts_with("training failed at step 1: "),
        "{err}"
    );
}

#[test]
fn an_update_that_overflows_the_parameters_is_not_applied() {
    // Plain SGD with a huge rate: a finite gradient, non-finite parameters.
    let settings = Settings {
        optimizer: OptimizerConfig::sgd(1e38, 0.0),
        ..settings()
    };
    let layout = fractional();
    let mut t = ready_with(settings, &layout);
    let before = t.checkpoint().unwrap();
    push_all(&mut t, &layout, &[1e3; PARAMS]);
    assert!(matches!(
        t.failure().unwrap().reason,
        NonFinite::Params { index: 0, .. }
    ));
    assert_eq!(t.checkpoint().unwrap().params, before.params);
    assert_eq!(t.step(), 0);
}

#[test]
fn adam_moments_that_overflow_fail_the_step() {
    let settings = Settings {
        optimizer: OptimizerConfig::adam(1e-3),
        ..settings()
    };
    let layout = fractional();
    let mut t = ready_with(settings, &layout);
    // (1 - beta2) * g * g = 1e19 * 1e22 overflows f32 in the second moment; the parameters
    // would stay finite (m / sqrt(inf) is 0) and silently stop learning.
    push_all(&mut t, &layout, &[1e22; PARAMS]);
    assert!(matches!(t.failure().unwrap().reason, NonFinite::Moments { .. }));
}

#[test]
fn clipping_bounds_the_step_and_is_deterministic() {
    let layout = fractional();
    let clipped = |norm: Option<f32>| {
        let mut t = ready_with(
            Settings {
                clip_norm: norm,
                ..settings()
            },
            &layout,
        );
        push_all(&mut t, &layout, &[3.0; PARAMS]);
        t.checkpoint().unwrap().params
    };
    // SGD with rate 1: params = -mean gradient = -3 each, norm 3 * sqrt(5).
    assert_eq!(clipped(None), vec![-3.0; PARAMS]);
    let params = clipped(Some(1.0));
    let norm = params.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-6, "norm {norm}");
    assert_eq!(params, clipped(Some(1.0)), "same bits every time");
    assert_eq!(
        clipped(Some(100.0)),
        vec![-3.0; PARAMS],
        "a short gradient is left alone"
    );
    // Clipping also turns an overflowing-but-finite update into a finite one.
    let mut t = ready_with(
        Settings {
            clip_norm: Some(1.0),
            ..settings()
        },
        &layout,
    );
    push_all(&mut t, &layout, &[1e37; PARAMS]);
    assert!(t.failure().is_none());
    assert_eq!(t.step(), 1);
}
