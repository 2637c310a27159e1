//! What a model's `forward` takes and returns, which decides how a worker gets a loss from it.

use std::fmt;
use std::str::FromStr;

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

impl ModelContract {
    pub const ALL: [Self; 2] = [Self::Logits, Self::Loss];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logits => "logits",
            Self::Loss => "loss",
        }
    }
}

impl fmt::Display for ModelContract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model contract {0:?} (expected logits or loss)")]
pub struct UnknownContract(pub String);

impl FromStr for ModelContract {
    type Err = UnknownContract;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| UnknownContract(name.to_string()))
    }
}

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
