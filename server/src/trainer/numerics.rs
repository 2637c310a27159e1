//! The numeric checks around an optimizer step: the reduced gradient and everything the step
//! would write (parameters, optimizer moments) must be finite, or the step is not applied.
//! Optional clipping of the reduced gradient by its global L2 norm, deterministic.

use anyk_core::optimizer::{NonFiniteUpdate, Optimizer};
use anyk_core::tensor_bytes::first_non_finite;

/// Why a step was not applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NonFinite {
    /// Finite gradients can still sum past f32's range (four of 3e38 do).
    #[error("the reduced gradient is not finite at index {index} ({value})")]
    Gradient { index: usize, value: f32 },
    #[error("the update would make parameter {index} non-finite ({value})")]
    Params { index: usize, value: f32 },
    #[error("the update would make the optimizer state non-finite at index {index} ({value})")]
    Moments { index: usize, value: f32 },
}

/// Scales `gradient` so its L2 norm is at most `max_norm`; returns the norm before clipping.
/// The norm is summed in f64 in index order (the same bits on every machine and run), and the
/// factor is applied in f32, so a clipped step is as reproducible as an unclipped one.
pub(super) fn clip(gradient: &mut [f32], max_norm: f32) -> f64 {
    let norm = gradient
        .iter()
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt();
    if norm > f64::from(max_norm) {
        let scale = (f64::from(max_norm) / norm) as f32;
        for g in gradient.iter_mut() {
            *g *= scale;
        }
    }
    norm
}

/// Why one update with `gradient` would not be finite, if it would not: the gradient, then what
/// the update would write, computed without writing ([`Optimizer::first_non_finite_update`]), so
/// that the step is then applied in place and a refused one leaves the last good state intact.
pub(super) fn check(params: &[f32], optimizer: &Optimizer, gradient: &[f32]) -> Result<(), NonFinite> {
    if let Some((index, value)) = first_non_finite(gradient) {
        return Err(NonFinite::Gradient { index, value });
    }
    match optimizer.first_non_finite_update(params, gradient) {
        None => Ok(()),
        Some(NonFiniteUpdate::Params { index, value }) => Err(NonFinite::Params { index, value }),
        // Adam's second moment squares the gradient: it overflows before the parameters do, and
        // an infinite moment would silently freeze the parameter from then on.
        Some(NonFiniteUpdate::Moments { index, value }) => Err(NonFinite::Moments { index, value }),
    }
}
