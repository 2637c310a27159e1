//! How well saved parameters do on held-out samples.

use anyk_core::ModelContract;
use serde::Serialize;

use crate::data::Samples;
use crate::model::{Model, ModelError};

/// The test metrics of a model: its mean loss, and for a classifier its accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    /// Fraction of samples whose arg-max logit is the label (`logits` models only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The model's loss over all samples at once (cross-entropy for `logits` models).
    pub loss: f64,
    pub samples: usize,
}

pub fn evaluate(model: &Model, samples: &Samples) -> Result<Evaluation, ModelError> {
    tch::no_grad(|| {
        let (loss, accuracy) = match model.contract() {
            ModelContract::Loss => (model.loss(&samples.x, &samples.y)?, None),
            // One forward pass for both: the loss is the logits' cross-entropy (`Model::loss`).
            ModelContract::Logits => {
                let logits = model.forward(&samples.x)?;
                let correct = logits
                    .argmax(-1, false)
                    .eq_tensor(&samples.y)
                    .sum(tch::Kind::Int64)
                    .int64_value(&[]);
                let accuracy = correct as f64 / samples.len().max(1) as f64;
                (logits.cross_entropy_for_logits(&samples.y), Some(accuracy))
            }
        };
        let loss = loss.double_value(&[]);
        Ok(Evaluation {
            accuracy,
            loss,
            samples: samples.len(),
        })
    })
}
