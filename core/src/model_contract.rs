//! What a model's `forward` takes and returns, which decides how a worker gets a loss from it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ModelContract {
    /// `forward(x) -> logits`: a classifier; the worker takes the cross-entropy against the
    /// class ids, and evaluation reports accuracy.
    #[default]
    Logits,
    /// `forward(x, y) -> loss`: the model computes its own scalar loss (regression, sequence
    /// models, anything); evaluation reports the mean test loss.
    Loss,
}

crate::names::named_values!(ModelContract, UnknownContract, "model contract", {
    Logits => "logits",
    Loss => "loss",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contracts_parse_what_they_print() {
        for contract in ModelContract::ALL {
            assert_eq!(contract.to_string().parse::<ModelContract>(), Ok(contract));
        }
        assert!(
            "mse"
                .parse::<ModelContract>()
                .unwrap_err()
                .to_string()
                .contains("logits or loss")
        );
    }
}
