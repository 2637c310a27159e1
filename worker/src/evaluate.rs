//! Test accuracy of saved parameters.

use tch::Tensor;

use crate::data::Samples;
use crate::model::{Model, ModelError};

/// Fraction of `samples` whose arg-max logit is the label.
pub fn accuracy(model: &Model, samples: &Samples) -> Result<f64, ModelError> {
    let correct = tch::no_grad(|| -> Result<Tensor, ModelError> {
        Ok(model
            .forward(&samples.x)?
            .argmax(-1, false)
            .eq_tensor(&samples.y)
            .sum(tch::Kind::Int64))
    })?;
    Ok(correct.int64_value(&[]) as f64 / samples.len().max(1) as f64)
}
