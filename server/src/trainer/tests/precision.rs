//! bf16 gradients through the trainer: whole units may come as bf16, everything else as f32,
//! and each unit's sum is rounded once, however it arrived.

use std::time::Instant;

use anyk_core::GradientPrecision;
use anyk_core::aggregate::OfferError;
use anyk_core::precision::{bf16_le_from_f32_le, round_in_place};
use anyk_proto::v1::{DataType, GradientRequest, Tensor};

use super::{fractional, grad, ready_with, request, settings, step_params};
use crate::error::RequestError;
use crate::settings::Settings;

fn bf16_settings() -> Settings {
    Settings {
        gradients: GradientPrecision::Bf16,
        ..settings()
    }
}

/// `values` as a worker sends a whole unit's sum in a bf16 job.
fn bf16_request(worker: u32, blocks: &[u32], values: &[f32]) -> GradientRequest {
    let data = bf16_le_from_f32_le(&anyk_core::tensor_bytes::to_bytes(values));
    GradientRequest {
        gradient: Some(Tensor {
            dtype: DataType::Bf16 as i32,
            length: values.len() as u64,
            data: data.into(),
        }),
        ..request(worker, 0, 1, blocks, values)
    }
}

fn sum(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

fn rounded(mut v: Vec<f32>) -> Vec<f32> {
    round_in_place(&mut v);
    v
}

#[test]
fn units_whole_in_bf16_or_in_f32_blocks_are_rounded_once() {
    let layout = fractional();
    let mut t = ready_with(bf16_settings(), &layout);
    let now = Instant::now();
    // Units 0..2 | 2..3 | 3..5 | 5..6: the first whole in bf16, the second a single f32 block,
    // the third in two f32 blocks, the last whole in bf16.
    t.push(&bf16_request(0, &[0, 1], &sum(&grad(0), &grad(1))), now)
        .unwrap();
    t.push(&request(1, 0, 1, &[2], &grad(2)), now).unwrap();
    t.push(&request(2, 0, 1, &[4], &grad(4)), now).unwrap();
    t.push(&request(2, 0, 1, &[3], &grad(3)), now).unwrap();
    let released = t.push(&bf16_request(3, &[5], &grad(5)), now).unwrap().released;
    let (step, params) = step_params(&released.expect("the step is complete"));
    assert_eq!(step, 1);
    let a = rounded(sum(&grad(0), &grad(1)));
    let b = rounded(grad(2));
    let c = rounded(sum(&grad(3), &grad(4)));
    let d = rounded(grad(5));
    // Predictable settings: SGD with rate 1 from zero, so the parameters are minus the mean.
    let want: Vec<u32> = sum(&sum(&a, &b), &sum(&c, &d))
        .iter()
        .map(|s| (0.0 - s / 6.0).to_bits())
        .collect();
    assert_eq!(params.iter().map(|p| p.to_bits()).collect::<Vec<_>>(), want);
}

#[test]
fn bf16_parts_that_are_not_whole_units_or_not_expected_are_refused() {
    let layout = fractional();
    let mut t = ready_with(bf16_settings(), &layout);
    let now = Instant::now();
    let above = request(0, 0, 1, &[0, 1, 2], &grad(0));
    assert!(matches!(
        t.push(&above, now),
        Err(RequestError::Aggregate(OfferError::AboveUnit { lo: 0, hi: 3 }))
    ));
    let piece = bf16_request(0, &[0], &grad(0));
    assert!(matches!(
        t.push(&piece, now),
        Err(RequestError::Aggregate(OfferError::Bf16NotAUnit { lo: 0, hi: 1 }))
    ));
    let mut f32_job = ready_with(settings(), &layout);
    let unit = bf16_request(0, &[0, 1], &grad(0));
    assert!(matches!(
        f32_job.push(&unit, now),
        Err(RequestError::Aggregate(OfferError::Bf16NotExpected))
    ));
    let ragged = GradientRequest {
        gradient: Some(Tensor {
            dtype: DataType::Bf16 as i32,
            length: 5,
            data: vec![0u8; 9].into(),
        }),
        ..unit
    };
    assert!(matches!(
        t.push(&ragged, now),
        Err(RequestError::RaggedTensor { length: 5, bytes: 9 })
    ));
    assert!(t.holding().present.is_empty(), "nothing refused was kept");
}

#[test]
fn strict_mode_refuses_bf16() {
    let strict = Settings {
        strict: true,
        ..bf16_settings()
    };
    assert!(strict.check().unwrap_err().contains("strict"));
    assert!(bf16_settings().check().is_ok());
}
